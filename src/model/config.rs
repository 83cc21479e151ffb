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
            self.dirs() * self.hidden_size
        }
    }

    /// Checks that every size is positive.
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
        Ok(())
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
                v.push((format!("weight_hh_l{l}{sfx}"), self.cell.whh_shape(h)));
                if self.bias {
                    v.push((format!("bias_ih_l{l}{sfx}"), vec![gh]));
                    v.push((format!("bias_hh_l{l}{sfx}"), vec![gh]));
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
        let ih = get("weight_ih_l0")?;
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
        })
    }
}

/// Name suffix of direction `d`.
pub fn dir_suffix(d: usize) -> &'static str {
    if d == 1 { "_reverse" } else { "" }
}
