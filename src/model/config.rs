//! The shape of a stacked LSTM (`nn.LSTM`'s constructor arguments) and
//! the naming of its directions: the leaf the rest of `model` builds on.

use crate::error::{Error, Result};
use crate::kernels::cell::Cell;
use std::collections::BTreeMap;

/// Shape of a stacked recurrent network, with `nn.LSTM`'s (or `nn.GRU`'s)
/// meaning of each field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LstmConfig {
    /// Features per input step (I).
    pub input_size: usize,
    /// Hidden units per direction (H).
    pub hidden_size: usize,
    /// Stacked layers (L).
    pub num_layers: usize,
    /// Two directions per layer.
    pub bidirectional: bool,
    /// `bias_ih`/`bias_hh` present.
    pub bias: bool,
    /// The recurrent cell (`nn.LSTM`'s by default).
    pub cell: Cell,
    /// `nn.LSTM`'s `proj_size` P: 0 for none, else `0 < P < H` and an LSTM
    /// cell. With it `h_t = W_hr (o ⊙ tanh(c_t))` is P wide: W_hh is
    /// [4H, P], layer k > 0 reads D·P features, the output is [.., D·P],
    /// h0 and h_n [L·D, B, P] (c0 and c_n stay [L·D, B, H]), and each
    /// (layer, direction) has `weight_hr_l{k}` [P, H].
    pub proj_size: usize,
}

impl LstmConfig {
    /// Directions per layer (D).
    pub fn dirs(&self) -> usize {
        if self.bidirectional { 2 } else { 1 }
    }

    /// Input features of layer `l`.
    pub fn layer_input(&self, l: usize) -> usize {
        if l == 0 {
            self.input_size
        } else {
            self.out_width()
        }
    }

    /// The projection size P, when the LSTM projects its h.
    pub fn proj(&self) -> Option<usize> {
        (self.proj_size > 0).then_some(self.proj_size)
    }

    /// Width S of h per direction: P with a projection, else H (the width
    /// of h0, h_n and a direction's share of the output).
    pub fn state_size(&self) -> usize {
        self.proj().unwrap_or(self.hidden_size)
    }

    /// Features of a layer's output: D·S.
    pub fn out_width(&self) -> usize {
        self.dirs() * self.state_size()
    }

    /// Checks that every size is positive, and a projection's size and
    /// cell.
    pub fn validate(&self) -> Result<()> {
        for (what, v) in [
            ("input_size", self.input_size),
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
        ] {
            if v == 0 {
                return Err(Error::Invalid(format!("{what} must be at least 1")));
            }
        }
        check_proj(self.proj_size, self.hidden_size, self.cell)
    }

    /// The recurrent cell.
    pub fn cell(&self) -> Cell {
        self.cell
    }

    /// Parameter names and shapes in `nn.LSTM.state_dict()` order.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let gh = self.cell().gates() * self.hidden_size;
        let h = self.hidden_size;
        let mut v = Vec::new();
        for l in 0..self.num_layers {
            for d in 0..self.dirs() {
                let sfx = if d == 1 { "_reverse" } else { "" };
                v.push((
                    format!("weight_ih_l{l}{sfx}"),
                    vec![gh, self.layer_input(l)],
                ));
                let whh = match self.proj() {
                    Some(p) => vec![gh, p],
                    None => self.cell.whh_shape(h),
                };
                v.push((format!("weight_hh_l{l}{sfx}"), whh));
                if self.bias {
                    v.push((format!("bias_ih_l{l}{sfx}"), vec![gh]));
                    v.push((format!("bias_hh_l{l}{sfx}"), vec![gh]));
                }
                if let Some(p) = self.proj() {
                    v.push((format!("weight_hr_l{l}{sfx}"), vec![p, h]));
                }
            }
        }
        v
    }

    /// Reads the configuration of a `cell` network (`nn.LSTM`, `nn.GRU`)
    /// from its state_dict names and shapes.
    pub fn infer(shapes: &BTreeMap<String, Vec<usize>>, cell: Cell) -> Result<Self> {
        let module = cell.module();
        let get = |name: &str| {
            shapes.get(name).ok_or_else(|| {
                Error::tensor(name, format!("missing: an {module} state_dict needs it"))
            })
        };
        let hh = get("weight_hh_l0")?;
        let g = cell.gates();
        if let Some(hr) = shapes.get("weight_hr_l0") {
            return Self::infer_proj(shapes, cell, hh, hr);
        }
        let h = match (cell.diag(), hh.as_slice()) {
            (true, &[h]) if h > 0 => h,
            (true, _) => {
                return Err(Error::tensor(
                    "weight_hh_l0",
                    format!("shape {hh:?}, expected [H] with H >= 1 for {module}"),
                ));
            }
            (false, &[gh, h]) if gh == g * h && h > 0 => h,
            (false, _) => {
                return Err(Error::tensor(
                    "weight_hh_l0",
                    format!("shape {hh:?}, expected [{g}*H, H] with H >= 1 for {module}"),
                ));
            }
        };
        Self::infer_rest(shapes, cell, h, 0)
    }

    /// [`LstmConfig::infer`] of a state_dict with `weight_hr_l0` (shape
    /// `hr`): an `nn.LSTM(proj_size = P)`, `weight_hr_l0` [P, H] and
    /// `weight_hh_l0` (shape `hh`) [4H, P].
    fn infer_proj(
        shapes: &BTreeMap<String, Vec<usize>>,
        cell: Cell,
        hh: &[usize],
        hr: &[usize],
    ) -> Result<Self> {
        if cell != Cell::Lstm {
            return Err(Error::tensor(
                "weight_hr_l0",
                format!(
                    "a projection (nn.LSTM's proj_size) serves the LSTM cell; the {} has none",
                    cell.module()
                ),
            ));
        }
        let (p, h) = match *hr {
            [p, h] if p >= 1 && h > p => (p, h),
            _ => {
                return Err(Error::tensor(
                    "weight_hr_l0",
                    format!("shape {hr:?}, expected [P, H] with 0 < P < H (proj_size P)"),
                ));
            }
        };
        let g = cell.gates();
        if hh != [g * h, p] {
            return Err(Error::tensor(
                "weight_hh_l0",
                format!(
                    "shape {hh:?}, expected [{}, {p}] ([4*H, P] beside weight_hr_l0 [{p}, {h}])",
                    g * h
                ),
            ));
        }
        Self::infer_rest(shapes, cell, h, p)
    }

    /// The rest of [`LstmConfig::infer`], once H (and P) are known.
    fn infer_rest(
        shapes: &BTreeMap<String, Vec<usize>>,
        cell: Cell,
        h: usize,
        proj_size: usize,
    ) -> Result<Self> {
        let g = cell.gates();
        let ih = shapes.get("weight_ih_l0").ok_or_else(|| {
            Error::tensor(
                "weight_ih_l0",
                format!("missing: an {} state_dict needs it", cell.module()),
            )
        })?;
        if ih.len() != 2 || ih[0] != g * h || ih[1] == 0 {
            return Err(Error::tensor(
                "weight_ih_l0",
                format!("shape {ih:?}, expected [{}, I] with I >= 1", g * h),
            ));
        }
        let mut num_layers = 1;
        while shapes.contains_key(&format!("weight_ih_l{num_layers}"))
            || shapes.contains_key(&format!("weight_hh_l{num_layers}"))
        {
            num_layers += 1;
        }
        Ok(Self {
            input_size: ih[1],
            hidden_size: h,
            num_layers,
            bidirectional: shapes.contains_key("weight_ih_l0_reverse")
                || shapes.contains_key("weight_hh_l0_reverse"),
            bias: shapes.contains_key("bias_ih_l0") || shapes.contains_key("bias_hh_l0"),
            cell,
            proj_size,
        })
    }
}

/// Checks a projection size P for hidden size `h` and `cell` (0: none):
/// `0 < P < H`, and an LSTM cell; the errors name `proj_size`.
pub fn check_proj(p: usize, h: usize, cell: Cell) -> Result<()> {
    if p == 0 {
        return Ok(());
    }
    if cell != Cell::Lstm {
        return Err(Error::Invalid(format!(
            "proj_size {p}: a projection (nn.LSTM's proj_size) serves the LSTM cell; the {} \
             has none",
            cell.module()
        )));
    }
    if p >= h {
        return Err(Error::Invalid(format!(
            "proj_size {p} must be below hidden_size {h} (0 < P < H, as nn.LSTM)"
        )));
    }
    Ok(())
}

/// Name suffix of direction `d`.
pub fn dir_suffix(d: usize) -> &'static str {
    if d == 1 { "_reverse" } else { "" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proj_cfg(bidirectional: bool) -> LstmConfig {
        LstmConfig {
            input_size: 5,
            hidden_size: 7,
            num_layers: 2,
            bidirectional,
            bias: true,
            cell: Cell::Lstm,
            proj_size: 3,
        }
    }

    /// `nn.LSTM(5, 7, 2, proj_size=3)`'s state_dict, in its order, and
    /// read back from those shapes.
    #[test]
    fn projected_shapes_are_pytorch_s() {
        let cfg = proj_cfg(true);
        let shapes = cfg.param_shapes();
        let names: Vec<&str> = shapes.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            &names[..6],
            [
                "weight_ih_l0",
                "weight_hh_l0",
                "bias_ih_l0",
                "bias_hh_l0",
                "weight_hr_l0",
                "weight_ih_l0_reverse"
            ]
        );
        let map: BTreeMap<String, Vec<usize>> = shapes.into_iter().collect();
        assert_eq!(map["weight_hh_l0"], [28, 3]);
        assert_eq!(map["weight_hr_l1_reverse"], [3, 7]);
        assert_eq!(map["weight_ih_l1"], [28, 6]);
        assert_eq!((cfg.state_size(), cfg.out_width()), (3, 6));
        assert_eq!(LstmConfig::infer(&map, Cell::Lstm).ok(), Some(cfg));
    }

    /// P outside 0 < P < H, another cell, or a W_hh not [4H, P] beside
    /// W_hr, refused by name.
    #[test]
    fn bad_projections_are_named() {
        let map: BTreeMap<String, Vec<usize>> =
            proj_cfg(false).param_shapes().into_iter().collect();
        let err = |m: &BTreeMap<String, Vec<usize>>, cell| match LstmConfig::infer(m, cell) {
            Ok(c) => panic!("accepted {c:?}"),
            Err(e) => e.to_string(),
        };
        assert!(err(&map, Cell::Gru).contains("weight_hr_l0"));
        let mut m = map.clone();
        m.insert("weight_hr_l0".into(), vec![7, 7]);
        assert!(err(&m, Cell::Lstm).contains("weight_hr_l0"));
        let mut m = map.clone();
        m.insert("weight_hh_l0".into(), vec![28, 7]);
        assert!(err(&m, Cell::Lstm).contains("weight_hh_l0"));
        let mut c = proj_cfg(false);
        c.proj_size = 7;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("proj_size 7")
        );
        c.proj_size = 3;
        c.cell = Cell::Gru;
        assert!(c.validate().unwrap_err().to_string().contains("nn.GRU"));
    }
}
