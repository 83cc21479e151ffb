//! f64 CPU reference implementation of a stacked PyTorch `nn.LSTM` (and of
//! the other cells of [`RefCellKind`]), forward and backward through time,
//! used by tests to judge the GPU kernels. The recurrence is written once
//! here; a cell only brings its pointwise step (`cell.rs`).
//!
//! Semantics follow PyTorch exactly: gate order `i, f, g, o` (GRU: `r, z,
//! n`); layer `k > 0` consumes the previous layer's output (forward hidden
//! then reverse hidden per position); variable lengths behave like
//! `pack_padded_sequence(..., enforce_sorted=False)` followed by
//! `pad_packed_sequence`: only `t < len_b` is processed, outputs are zero at
//! padded positions, the reverse direction starts at `t = len_b - 1`, and
//! `h_n`/`c_n` are the states after each direction's last processed step.
//!
//! All tensors are flat row-major, time-major `Vec<f64>`, with `G` the
//! cell's gate count and `S` the width of `h` (`H`, or `P` with a
//! projection): `x: [T, B, I]`, `output: [T, B, D*S]`, `h0/h_n: [L*D, B, S]`,
//! `c0/c_n: [L*D, B, H]` (index `layer * D + dir`; empty for cells without
//! `c`), `w_ih: [G*H, I_k]`, `w_hh: [G*H, S]` (IndRNN: `[H]`),
//! `b_ih/b_hh: [G*H]`, `w_hr: [P, H]`.

use crate::cell::{Cache, min_abs_pre};
use crate::linalg::{add_assign, dot, matvec_acc, matvec_t_acc, outer_acc};
use crate::{RefCellKind, RefRecurrentReg, Rng};

/// Shape hyper-parameters of the network (mirrors the `nn.LSTM` / `nn.GRU`
/// constructor arguments). `Default` is all zeros and the plain LSTM cell,
/// for `..Default::default()`.
#[derive(Clone, Debug, Default)]
pub struct RefConfig {
    /// Feature size `I` of the input `x`.
    pub input_size: usize,
    /// Hidden size `H`.
    pub hidden_size: usize,
    /// Number of stacked layers `L`.
    pub num_layers: usize,
    /// Whether each layer also has a reverse direction (`D = 2`).
    pub bidirectional: bool,
    /// Whether the `b_ih`/`b_hh` biases exist.
    pub bias: bool,
    /// The cell of every layer.
    pub cell: RefCellKind,
}

impl RefConfig {
    /// Number of directions `D` (1 or 2).
    pub fn dirs(&self) -> usize {
        if self.bidirectional { 2 } else { 1 }
    }

    /// Width `S` of `h`: `P` with a projection, else `H`.
    pub fn state_size(&self) -> usize {
        self.cell.state_size(self.hidden_size)
    }

    /// Input feature size of `layer`: `I` for layer 0, `D*S` for the others.
    pub fn layer_input_size(&self, layer: usize) -> usize {
        if layer == 0 {
            self.input_size
        } else {
            self.dirs() * self.state_size()
        }
    }

    /// Number of (layer, direction) cells, `L * D`.
    pub fn cells(&self) -> usize {
        self.num_layers * self.dirs()
    }
}

/// Parameters of one (layer, direction) cell, laid out as in PyTorch.
#[derive(Clone, Debug)]
pub struct RefDirWeights {
    /// `weight_ih_l{k}[_reverse]`: `[G*H, I_k]`.
    pub w_ih: Vec<f64>,
    /// `weight_hh_l{k}[_reverse]`: `[G*H, S]` (IndRNN: `[H]`).
    pub w_hh: Vec<f64>,
    /// `bias_ih_l{k}[_reverse]`: `[G*H]`, `None` when `bias = false`.
    pub b_ih: Option<Vec<f64>>,
    /// `bias_hh_l{k}[_reverse]`: `[G*H]`, `None` when `bias = false`.
    pub b_hh: Option<Vec<f64>>,
    /// `weight_hr_l{k}[_reverse]`: `[P, H]`, present iff the cell projects.
    pub w_hr: Option<Vec<f64>>,
}

/// All parameters. One entry per (layer, dir), index `layer * D + dir`.
#[derive(Clone, Debug)]
pub struct RefWeights {
    /// Cells in PyTorch order (`layer * D + dir`).
    pub cells: Vec<RefDirWeights>,
}

/// Inputs of one forward pass.
#[derive(Clone, Debug)]
pub struct RefInputs {
    /// Padded sequence length `T`.
    pub seq_len: usize,
    /// Batch size `B`.
    pub batch: usize,
    /// Input `[T, B, I]`.
    pub x: Vec<f64>,
    /// Initial hidden state `[L*D, B, S]`; zeros when `None`.
    pub h0: Option<Vec<f64>>,
    /// Initial cell state `[L*D, B, H]`; zeros when `None`; must be `None`
    /// for cells without `c`.
    pub c0: Option<Vec<f64>>,
    /// Per-sequence lengths (each in `1..=T`, any order); all `T` when `None`.
    pub lengths: Option<Vec<usize>>,
}

/// Results of a forward pass.
#[derive(Clone, Debug)]
pub struct RefOutputs {
    /// Last layer's output `[T, B, D*S]`, zero at padded positions.
    pub output: Vec<f64>,
    /// Final hidden states `[L*D, B, S]`.
    pub h_n: Vec<f64>,
    /// Final cell states `[L*D, B, H]`; empty for cells without `c`.
    pub c_n: Vec<f64>,
}

/// Upstream gradients of loss = Σ output·grad_output + Σ h_n·grad_h_n + Σ c_n·grad_c_n.
#[derive(Clone, Debug)]
pub struct RefUpstream {
    /// Gradient w.r.t. `output`, `[T, B, D*S]`.
    pub grad_output: Vec<f64>,
    /// Gradient w.r.t. `h_n`, `[L*D, B, S]`.
    pub grad_h_n: Vec<f64>,
    /// Gradient w.r.t. `c_n`, `[L*D, B, H]`; empty for cells without `c`.
    pub grad_c_n: Vec<f64>,
}

/// Gradients of the loss defined by [`RefUpstream`].
#[derive(Clone, Debug)]
pub struct RefGrads {
    /// Gradient w.r.t. `x`, `[T, B, I]` (zero at padded positions).
    pub input: Vec<f64>,
    /// Gradient w.r.t. the initial hidden state, `[L*D, B, S]` (always present).
    pub h0: Vec<f64>,
    /// Gradient w.r.t. the initial cell state, `[L*D, B, H]` (always
    /// present; empty for cells without `c`).
    pub c0: Vec<f64>,
    /// Gradients w.r.t. all parameters; bias gradients present iff `bias = true`
    /// (`b_ih` and `b_hh` receive the same gradient).
    pub weights: RefWeights,
}

/// Dropout and residual connections between stacked layers. With `a_l`
/// layer l's (normalized) output and `y_l` its input (`y_0 = x`):
/// `b_l = a_l ⊙ keep_l / (1 − p)` for `l < keep.len()`, else `a_l`;
/// `y_{l+1} = b_l + y_l` for `l ≥ 1` with `residual`, else `b_l`.
/// The default is no dropout and no residual (plain `nn.LSTM`).
#[derive(Clone, Debug, Default)]
pub struct RefLinks {
    /// Drop probability `p` in [0, 1).
    pub dropout: f64,
    /// Residual connections around layers `1..L`.
    pub residual: bool,
    /// `keep[l][i]`: whether element `i` of layer `l`'s `[T, B, D*S]` output
    /// survives dropout; `L − 1` masks (never after the last layer), or none
    /// for no dropout (eval mode).
    pub keep: Vec<Vec<bool>>,
}

impl RefLinks {
    /// Checks the mask count and sizes; `Err` names the problem.
    pub fn check(&self, cfg: &RefConfig, seq_len: usize, batch: usize) -> Result<(), String> {
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout {} outside [0, 1)", self.dropout));
        }
        if !self.keep.is_empty() && self.keep.len() + 1 != cfg.num_layers {
            return Err(format!(
                "{} dropout masks, expected {} (one per layer but the last) or none",
                self.keep.len(),
                cfg.num_layers.saturating_sub(1)
            ));
        }
        let n = seq_len * batch * cfg.dirs() * cfg.state_size();
        if let Some((l, m)) = self.keep.iter().enumerate().find(|(_, m)| m.len() != n) {
            return Err(format!(
                "dropout mask {l} has {} entries, expected {n}",
                m.len()
            ));
        }
        Ok(())
    }

    /// Whether layer `l`'s input is added to its output.
    pub fn skips(&self, l: usize) -> bool {
        self.residual && l >= 1
    }

    /// `y_{l+1}` from `a_l` and `y_l`.
    pub fn forward(&self, l: usize, a: Vec<f64>, y: &[f64]) -> Vec<f64> {
        let mut b = self.dropout_of(l, a);
        if self.skips(l) {
            add_assign(&mut b, y);
        }
        b
    }

    /// Gradient w.r.t. `a_l` from the gradient `d` of `y_{l+1}` (the skip
    /// path passes `d` itself on to `y_l` when [`RefLinks::skips`]).
    pub fn backward(&self, l: usize, d: &[f64]) -> Vec<f64> {
        self.dropout_of(l, d.to_vec())
    }

    fn dropout_of(&self, l: usize, mut v: Vec<f64>) -> Vec<f64> {
        if let Some(keep) = self.keep.get(l) {
            let s = 1.0 / (1.0 - self.dropout);
            for (x, &k) in v.iter_mut().zip(keep) {
                *x = if k { *x * s } else { 0.0 };
            }
        }
        v
    }
}

/// Random parameters drawn from `U(-1/√H, 1/√H)`, like PyTorch's default init
/// (in the order `w_ih, w_hh, b_ih, b_hh, w_hr` per cell).
pub fn random_weights(cfg: &RefConfig, rng: &mut Rng) -> RefWeights {
    let (h, kind) = (cfg.hidden_size, cfg.cell);
    let gh = kind.gates() * h;
    let k = 1.0 / (h as f64).sqrt();
    let mut cells = Vec::with_capacity(cfg.cells());
    for layer in 0..cfg.num_layers {
        let in_size = cfg.layer_input_size(layer);
        for _dir in 0..cfg.dirs() {
            let w_ih = rng.vec(gh * in_size, -k, k);
            let w_hh = rng.vec(kind.w_hh_len(h), -k, k);
            let (b_ih, b_hh) = if cfg.bias {
                (Some(rng.vec(gh, -k, k)), Some(rng.vec(gh, -k, k)))
            } else {
                (None, None)
            };
            let n_hr = kind.w_hr_len(h);
            let w_hr = (n_hr > 0).then(|| rng.vec(n_hr, -k, k));
            cells.push(RefDirWeights {
                w_ih,
                w_hh,
                b_ih,
                b_hh,
                w_hr,
            });
        }
    }
    RefWeights { cells }
}
/// The scalar loss Σ output·grad_output + Σ h_n·grad_h_n + Σ c_n·grad_c_n
/// (for finite-difference checks).
pub fn loss(out: &RefOutputs, up: &RefUpstream) -> f64 {
    assert_eq!(out.output.len(), up.grad_output.len(), "grad_output shape");
    assert_eq!(out.h_n.len(), up.grad_h_n.len(), "grad_h_n shape");
    assert_eq!(out.c_n.len(), up.grad_c_n.len(), "grad_c_n shape");
    dot(&out.output, &up.grad_output) + dot(&out.h_n, &up.grad_h_n) + dot(&out.c_n, &up.grad_c_n)
}

/// Forward pass of the stacked network.
pub fn forward(cfg: &RefConfig, w: &RefWeights, inp: &RefInputs) -> RefOutputs {
    forward_links(cfg, w, inp, &RefLinks::default())
}

/// Forward pass with dropout / residual links between layers.
pub fn forward_links(
    cfg: &RefConfig,
    w: &RefWeights,
    inp: &RefInputs,
    links: &RefLinks,
) -> RefOutputs {
    forward_reg(cfg, w, inp, links, &RefRecurrentReg::default())
}

/// Forward pass with links between layers and zoneout / weight-drop
/// inside the recurrence.
pub fn forward_reg(
    cfg: &RefConfig,
    w: &RefWeights,
    inp: &RefInputs,
    links: &RefLinks,
    reg: &RefRecurrentReg,
) -> RefOutputs {
    run_forward(cfg, w, inp, links, reg).out
}

/// Smallest `|pre-activation|` of any gate at any processed step. A
/// finite-difference test of a ReLU cell is only valid when this is well
/// above the perturbation it makes.
pub fn min_abs_preactivation(
    cfg: &RefConfig,
    w: &RefWeights,
    inp: &RefInputs,
    links: &RefLinks,
    reg: &RefRecurrentReg,
) -> f64 {
    let trace = run_forward(cfg, w, inp, links, reg);
    let steps = trace.steps.iter().flatten().flatten();
    steps.fold(f64::INFINITY, |a, s| a.min(min_abs_pre(&s.cache)))
}

/// Forward pass followed by backpropagation through time of the loss defined
/// by `up`. Returns the forward outputs and the exact gradients.
pub fn backward(
    cfg: &RefConfig,
    w: &RefWeights,
    inp: &RefInputs,
    up: &RefUpstream,
) -> (RefOutputs, RefGrads) {
    backward_links(cfg, w, inp, up, &RefLinks::default())
}

/// [`backward`] with dropout / residual links between layers.
pub fn backward_links(
    cfg: &RefConfig,
    w: &RefWeights,
    inp: &RefInputs,
    up: &RefUpstream,
    links: &RefLinks,
) -> (RefOutputs, RefGrads) {
    backward_reg(cfg, w, inp, up, links, &RefRecurrentReg::default())
}

/// [`backward`] with links between layers and zoneout / weight-drop inside
/// the recurrence (weight gradients w.r.t. the raw `W_hh`).
pub fn backward_reg(
    cfg: &RefConfig,
    w: &RefWeights,
    inp: &RefInputs,
    up: &RefUpstream,
    links: &RefLinks,
    reg: &RefRecurrentReg,
) -> (RefOutputs, RefGrads) {
    let trace = run_forward(cfg, w, inp, links, reg);
    let w = reg.step_weights(w);
    let (t_len, b_len) = (inp.seq_len, inp.batch);
    let (h, s_w, kind) = (cfg.hidden_size, cfg.state_size(), cfg.cell);
    let c_w = if kind.has_c() { h } else { 0 };
    let d_n = cfg.dirs();
    assert_eq!(
        up.grad_output.len(),
        trace.out.output.len(),
        "grad_output shape"
    );
    assert_eq!(up.grad_h_n.len(), trace.out.h_n.len(), "grad_h_n shape");
    assert_eq!(up.grad_c_n.len(), trace.out.c_n.len(), "grad_c_n shape");

    let mut grad_h0 = vec![0.0; up.grad_h_n.len()];
    let mut grad_c0 = vec![0.0; up.grad_c_n.len()];
    let mut grad_cells = zero_grads(&w);

    // Gradient w.r.t. the current layer's output [T, B, D*S]. Padded positions
    // of the output are constant zero, so their upstream gradient is dropped.
    let out_w = d_n * s_w;
    let mut d_out = up.grad_output.clone();

    let mut d_in = Vec::new();
    for layer in (0..cfg.num_layers).rev() {
        // d_next: gradient of y_{layer+1}; d_out: of this layer's output.
        let d_next = std::mem::take(&mut d_out);
        d_out = links.backward(layer, &d_next);
        let in_size = cfg.layer_input_size(layer);
        let x = &trace.layer_inputs[layer];
        d_in = vec![0.0; t_len * b_len * in_size];
        for dir in 0..d_n {
            let cell_idx = layer * d_n + dir;
            let cw = &w.cells[cell_idx];
            let gw = &mut grad_cells[cell_idx];
            for b in 0..b_len {
                let (hs, cs) = ((cell_idx * b_len + b) * s_w, (cell_idx * b_len + b) * c_w);
                let mut dh = up.grad_h_n[hs..hs + s_w].to_vec();
                let mut dc = up.grad_c_n[cs..cs + c_w].to_vec();
                for step in trace.steps[cell_idx][b].iter().rev() {
                    let t = step.t;
                    let o_off = (t * b_len + b) * out_w + dir * s_w;
                    add_assign(&mut dh, &d_out[o_off..o_off + s_w]);
                    // Zoneout: the previous state gets m d, the cell (1 − m) d.
                    let zone = (cell_idx * t_len + t) * b_len + b;
                    let dh_prev = zone_backward(&reg.zoneout_h, zone, &mut dh);
                    let dc_prev = zone_backward(&reg.zoneout_c, zone, &mut dc);
                    let g = kind.step_backward(cw, gw, &step.cache, &dh, &dc);
                    let x_off = (t * b_len + b) * in_size;
                    let x_t = &x[x_off..x_off + in_size];
                    outer_acc(&mut gw.w_ih, &g.gi, x_t);
                    if let Some(gb) = gw.b_ih.as_mut() {
                        add_assign(gb, &g.gi);
                    }
                    if let Some(gb) = gw.b_hh.as_mut() {
                        add_assign(gb, &g.gh);
                    }
                    matvec_t_acc(&mut d_in[x_off..x_off + in_size], &cw.w_ih, &g.gi);
                    dh = g.h_prev;
                    kind.recurrent_backward(
                        &cw.w_hh,
                        &step.cache.h_prev,
                        &g.gh,
                        &mut gw.w_hh,
                        &mut dh,
                    );
                    dc = g.c_prev;
                    for (d, p) in [(&mut dh, dh_prev), (&mut dc, dc_prev)] {
                        if let Some(p) = p {
                            add_assign(d, &p);
                        }
                    }
                }
                grad_h0[hs..hs + s_w].copy_from_slice(&dh);
                grad_c0[cs..cs + c_w].copy_from_slice(&dc);
            }
        }
        if links.skips(layer) {
            add_assign(&mut d_in, &d_next);
        }
        if layer > 0 {
            d_out = std::mem::take(&mut d_in);
        }
    }
    reg.raw_grads(&mut grad_cells);

    let grads = RefGrads {
        input: d_in,
        h0: grad_h0,
        c0: grad_c0,
        weights: RefWeights { cells: grad_cells },
    };
    (trace.out, grads)
}

// ---------------------------------------------------------------------------
// Internals
// ---------------------------------------------------------------------------

/// Everything one processed time step needs for backpropagation.
struct Step {
    /// Time index this step processed.
    t: usize,
    cache: Cache,
}

struct Trace {
    /// Input of each layer, `[T, B, I_k]` (zeros at padded positions for k > 0).
    layer_inputs: Vec<Vec<f64>>,
    /// `steps[layer * D + dir][b]`, in processing order.
    steps: Vec<Vec<Vec<Step>>>,
    out: RefOutputs,
}

/// Validates config, weights and inputs; returns the per-sequence lengths.
/// (Shared with the norm reference, which reports instead of panicking.)
pub(crate) fn check_inputs(
    cfg: &RefConfig,
    w: &RefWeights,
    inp: &RefInputs,
) -> Result<Vec<usize>, String> {
    let (h, kind) = (cfg.hidden_size, cfg.cell);
    if h == 0 || cfg.num_layers == 0 {
        return Err("hidden_size and num_layers must be positive".into());
    }
    if let RefCellKind::LstmProj { proj_size } = kind
        && !(1..h).contains(&proj_size)
    {
        return Err(format!("proj_size {proj_size} outside 1..{h}"));
    }
    if w.cells.len() != cfg.cells() {
        return Err(format!(
            "{} weight cells, expected {}",
            w.cells.len(),
            cfg.cells()
        ));
    }
    let gh = kind.gates() * h;
    for (idx, c) in w.cells.iter().enumerate() {
        let in_size = cfg.layer_input_size(idx / cfg.dirs());
        let hr_len = c.w_hr.as_ref().map_or(0, Vec::len);
        if c.w_ih.len() != gh * in_size
            || c.w_hh.len() != kind.w_hh_len(h)
            || c.w_hr.is_some() != (kind.w_hr_len(h) > 0)
            || hr_len != kind.w_hr_len(h)
        {
            return Err(format!("weight shape of cell {idx}"));
        }
        for b in [&c.b_ih, &c.b_hh] {
            if b.is_some() != cfg.bias || b.as_ref().is_some_and(|b| b.len() != gh) {
                return Err(format!("bias presence/shape of cell {idx}"));
            }
        }
    }
    let (t_len, b_len) = (inp.seq_len, inp.batch);
    if inp.x.len() != t_len * b_len * cfg.input_size {
        return Err(format!(
            "x has {} values, expected [{t_len}, {b_len}, {}]",
            inp.x.len(),
            cfg.input_size
        ));
    }
    let states = cfg.cells() * b_len;
    for (name, s, n) in [("h0", &inp.h0, cfg.state_size()), ("c0", &inp.c0, h)] {
        if !kind.has_c() && name == "c0" && s.is_some() {
            return Err(format!("{kind:?} has no c state, but c0 is given"));
        }
        if let Some(s) = s.as_ref().filter(|s| s.len() != states * n) {
            return Err(format!(
                "{name} has {} values, expected {}",
                s.len(),
                states * n
            ));
        }
    }
    match &inp.lengths {
        Some(l) => {
            if l.len() != b_len {
                return Err(format!("{} lengths for batch {b_len}", l.len()));
            }
            if let Some(bad) = l.iter().find(|&&len| !(1..=t_len).contains(&len)) {
                return Err(format!("length {bad} outside 1..={t_len}"));
            }
            Ok(l.clone())
        }
        None => Ok(vec![t_len; b_len]),
    }
}

fn run_forward(
    cfg: &RefConfig,
    w: &RefWeights,
    inp: &RefInputs,
    links: &RefLinks,
    reg: &RefRecurrentReg,
) -> Trace {
    let lengths = check_inputs(cfg, w, inp).unwrap_or_else(|e| panic!("{e}"));
    let (t_len, b_len) = (inp.seq_len, inp.batch);
    for r in [
        links.check(cfg, t_len, b_len),
        reg.check(cfg, w, t_len, b_len),
    ] {
        r.unwrap_or_else(|e| panic!("{e}"));
    }
    let w = reg.step_weights(w);
    let (h, s_w, kind) = (cfg.hidden_size, cfg.state_size(), cfg.cell);
    let c_w = if kind.has_c() { h } else { 0 };
    let gates = kind.gates() * h;
    let d_n = cfg.dirs();
    let out_w = d_n * s_w;
    let mut h_n = vec![0.0; cfg.cells() * b_len * s_w];
    let mut c_n = vec![0.0; cfg.cells() * b_len * c_w];
    let mut layer_inputs = Vec::with_capacity(cfg.num_layers);
    let mut steps = Vec::with_capacity(cfg.cells());
    let mut cur = inp.x.clone();

    for layer in 0..cfg.num_layers {
        let in_size = cfg.layer_input_size(layer);
        let mut out = vec![0.0; t_len * b_len * out_w];
        for dir in 0..d_n {
            let cell_idx = layer * d_n + dir;
            let cw = &w.cells[cell_idx];
            let mut cell_steps = Vec::with_capacity(b_len);
            for (b, &len) in lengths.iter().enumerate() {
                let (hs, cs) = ((cell_idx * b_len + b) * s_w, (cell_idx * b_len + b) * c_w);
                let mut h_cur = state_slice(&inp.h0, hs, s_w);
                let mut c_cur = state_slice(&inp.c0, cs, c_w);
                let order: Vec<usize> = if dir == 0 {
                    (0..len).collect()
                } else {
                    (0..len).rev().collect()
                };
                let mut seq_steps = Vec::with_capacity(len);
                for t in order {
                    let x_off = (t * b_len + b) * in_size;
                    let x_t = &cur[x_off..x_off + in_size];
                    let bias = |b: &Option<Vec<f64>>| b.clone().unwrap_or(vec![0.0; gates]);
                    let mut gi = bias(&cw.b_ih);
                    matvec_acc(&mut gi, &cw.w_ih, x_t);
                    let mut gh = bias(&cw.b_hh);
                    kind.recurrent(&mut gh, &cw.w_hh, &h_cur);
                    let (cache, mut h_new, mut c_new) = kind.step(cw, &gi, gh, h_cur, c_cur);
                    let zone = (cell_idx * t_len + t) * b_len + b;
                    zone_forward(&reg.zoneout_h, zone, &cache.h_prev, &mut h_new);
                    zone_forward(&reg.zoneout_c, zone, &cache.c_prev, &mut c_new);
                    let o_off = (t * b_len + b) * out_w + dir * s_w;
                    out[o_off..o_off + s_w].copy_from_slice(&h_new);
                    (h_cur, c_cur) = (h_new, c_new);
                    seq_steps.push(Step { t, cache });
                }
                h_n[hs..hs + s_w].copy_from_slice(&h_cur);
                c_n[cs..cs + c_w].copy_from_slice(&c_cur);
                cell_steps.push(seq_steps);
            }
            steps.push(cell_steps);
        }
        let next = links.forward(layer, out, &cur);
        layer_inputs.push(std::mem::replace(&mut cur, next));
    }

    Trace {
        layer_inputs,
        steps,
        out: RefOutputs {
            output: cur,
            h_n,
            c_n,
        },
    }
}

/// `new = m prev + (1 − m) new` at zoneout position `zone` (a no-op when
/// off or the state is empty).
fn zone_forward(z: &crate::RefZoneout, zone: usize, prev: &[f64], new: &mut [f64]) {
    let n = new.len();
    if let Some(m) = z.at(zone * n, n).filter(|_| n > 0) {
        for j in 0..n {
            new[j] = m[j] * prev[j] + (1.0 - m[j]) * new[j];
        }
    }
}

/// Backward of [`zone_forward`]: scales `d` to the cell's share `(1 − m) d`
/// and returns the previous state's share `m d` (`None` when off).
fn zone_backward(z: &crate::RefZoneout, zone: usize, d: &mut [f64]) -> Option<Vec<f64>> {
    let n = d.len();
    let m = z.at(zone * n, n).filter(|_| n > 0)?;
    let prev = (0..n).map(|j| m[j] * d[j]).collect();
    for j in 0..n {
        d[j] *= 1.0 - m[j];
    }
    Some(prev)
}

/// `h` values of an optional initial state at `off`; zeros when absent.
pub(crate) fn state_slice(s: &Option<Vec<f64>>, off: usize, h: usize) -> Vec<f64> {
    match s {
        Some(v) => v[off..off + h].to_vec(),
        None => vec![0.0; h],
    }
}

/// Zero gradients shaped like `w`.
pub(crate) fn zero_grads(w: &RefWeights) -> Vec<RefDirWeights> {
    let zeros = |v: &Vec<f64>| vec![0.0; v.len()];
    w.cells
        .iter()
        .map(|c| RefDirWeights {
            w_ih: zeros(&c.w_ih),
            w_hh: zeros(&c.w_hh),
            b_ih: c.b_ih.as_ref().map(zeros),
            b_hh: c.b_hh.as_ref().map(zeros),
            w_hr: c.w_hr.as_ref().map(zeros),
        })
        .collect()
}
