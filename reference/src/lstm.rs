//! f64 CPU reference implementation of a stacked PyTorch `nn.LSTM`
//! (forward and backward through time), used by tests to judge the GPU kernels.
//!
//! Semantics follow PyTorch exactly: gate order `i, f, g, o`; layer `k > 0`
//! consumes the previous layer's output (forward hidden then reverse hidden per
//! position); variable lengths behave like
//! `pack_padded_sequence(..., enforce_sorted=False)` followed by
//! `pad_packed_sequence`: only `t < len_b` is processed, outputs are zero at
//! padded positions, the reverse direction starts at `t = len_b - 1`, and
//! `h_n`/`c_n` are the states after each direction's last processed step.
//!
//! All tensors are flat row-major, time-major `Vec<f64>`:
//! `x: [T, B, I]`, `output: [T, B, D*H]`, `h0/c0/h_n/c_n: [L*D, B, H]`
//! (index `layer * D + dir`), `w_ih: [4H, I_k]`, `w_hh: [4H, H]`,
//! `b_ih/b_hh: [4H]`.

use crate::Rng;
use crate::linalg::{add_assign, dot, matvec_acc, matvec_t_acc, outer_acc, sigmoid};

/// Shape hyper-parameters of the LSTM (mirrors `nn.LSTM` constructor arguments).
#[derive(Clone, Debug)]
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
}

impl RefConfig {
    /// Number of directions `D` (1 or 2).
    pub fn dirs(&self) -> usize {
        if self.bidirectional { 2 } else { 1 }
    }

    /// Input feature size of `layer`: `I` for layer 0, `D*H` for the others.
    pub fn layer_input_size(&self, layer: usize) -> usize {
        if layer == 0 {
            self.input_size
        } else {
            self.dirs() * self.hidden_size
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
    /// `weight_ih_l{k}[_reverse]`: `[4H, I_k]`.
    pub w_ih: Vec<f64>,
    /// `weight_hh_l{k}[_reverse]`: `[4H, H]`.
    pub w_hh: Vec<f64>,
    /// `bias_ih_l{k}[_reverse]`: `[4H]`, `None` when `bias = false`.
    pub b_ih: Option<Vec<f64>>,
    /// `bias_hh_l{k}[_reverse]`: `[4H]`, `None` when `bias = false`.
    pub b_hh: Option<Vec<f64>>,
}

/// All LSTM parameters. One entry per (layer, dir), index `layer * D + dir`.
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
    /// Initial hidden state `[L*D, B, H]`; zeros when `None`.
    pub h0: Option<Vec<f64>>,
    /// Initial cell state `[L*D, B, H]`; zeros when `None`.
    pub c0: Option<Vec<f64>>,
    /// Per-sequence lengths (each in `1..=T`, any order); all `T` when `None`.
    pub lengths: Option<Vec<usize>>,
}

/// Results of a forward pass.
#[derive(Clone, Debug)]
pub struct RefOutputs {
    /// Last layer's output `[T, B, D*H]`, zero at padded positions.
    pub output: Vec<f64>,
    /// Final hidden states `[L*D, B, H]`.
    pub h_n: Vec<f64>,
    /// Final cell states `[L*D, B, H]`.
    pub c_n: Vec<f64>,
}

/// Upstream gradients of loss = Σ output·grad_output + Σ h_n·grad_h_n + Σ c_n·grad_c_n.
#[derive(Clone, Debug)]
pub struct RefUpstream {
    /// Gradient w.r.t. `output`, `[T, B, D*H]`.
    pub grad_output: Vec<f64>,
    /// Gradient w.r.t. `h_n`, `[L*D, B, H]`.
    pub grad_h_n: Vec<f64>,
    /// Gradient w.r.t. `c_n`, `[L*D, B, H]`.
    pub grad_c_n: Vec<f64>,
}

/// Gradients of the loss defined by [`RefUpstream`].
#[derive(Clone, Debug)]
pub struct RefGrads {
    /// Gradient w.r.t. `x`, `[T, B, I]` (zero at padded positions).
    pub input: Vec<f64>,
    /// Gradient w.r.t. the initial hidden state, `[L*D, B, H]` (always present).
    pub h0: Vec<f64>,
    /// Gradient w.r.t. the initial cell state, `[L*D, B, H]` (always present).
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
    /// `keep[l][i]`: whether element `i` of layer `l`'s `[T, B, D*H]` output
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
        let n = seq_len * batch * cfg.dirs() * cfg.hidden_size;
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

/// Random parameters drawn from `U(-1/√H, 1/√H)`, like PyTorch's default init.
pub fn random_weights(cfg: &RefConfig, rng: &mut Rng) -> RefWeights {
    let h = cfg.hidden_size;
    let k = 1.0 / (h as f64).sqrt();
    let mut cells = Vec::with_capacity(cfg.cells());
    for layer in 0..cfg.num_layers {
        let in_size = cfg.layer_input_size(layer);
        for _dir in 0..cfg.dirs() {
            let w_ih = rng.vec(4 * h * in_size, -k, k);
            let w_hh = rng.vec(4 * h * h, -k, k);
            let (b_ih, b_hh) = if cfg.bias {
                (Some(rng.vec(4 * h, -k, k)), Some(rng.vec(4 * h, -k, k)))
            } else {
                (None, None)
            };
            cells.push(RefDirWeights {
                w_ih,
                w_hh,
                b_ih,
                b_hh,
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

/// Forward pass of the stacked LSTM.
pub fn forward(cfg: &RefConfig, w: &RefWeights, inp: &RefInputs) -> RefOutputs {
    forward_links(cfg, w, inp, &RefLinks::default())
}

/// Forward pass of the stacked LSTM with dropout / residual links between
/// layers.
pub fn forward_links(
    cfg: &RefConfig,
    w: &RefWeights,
    inp: &RefInputs,
    links: &RefLinks,
) -> RefOutputs {
    run_forward(cfg, w, inp, links).out
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
    let trace = run_forward(cfg, w, inp, links);
    let (t_len, b_len) = (inp.seq_len, inp.batch);
    let h = cfg.hidden_size;
    let d_n = cfg.dirs();
    let state_len = cfg.cells() * b_len * h;
    assert_eq!(
        up.grad_output.len(),
        trace.out.output.len(),
        "grad_output shape"
    );
    assert_eq!(up.grad_h_n.len(), state_len, "grad_h_n shape");
    assert_eq!(up.grad_c_n.len(), state_len, "grad_c_n shape");

    let mut grad_h0 = vec![0.0; state_len];
    let mut grad_c0 = vec![0.0; state_len];
    let mut grad_cells = zero_grads(w);

    // Gradient w.r.t. the current layer's output [T, B, D*H]. Padded positions
    // of the output are constant zero, so their upstream gradient is dropped.
    let out_w = d_n * h;
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
            let mut dgates = vec![0.0; 4 * h];
            for b in 0..b_len {
                let s_off = (cell_idx * b_len + b) * h;
                let mut dh = up.grad_h_n[s_off..s_off + h].to_vec();
                let mut dc = up.grad_c_n[s_off..s_off + h].to_vec();
                for step in trace.steps[cell_idx][b].iter().rev() {
                    let t = step.t;
                    let o_off = (t * b_len + b) * out_w + dir * h;
                    for (dhj, go) in dh.iter_mut().zip(&d_out[o_off..o_off + h]) {
                        *dhj += go;
                    }
                    cell_backward(step, &dh, &mut dc, &mut dgates, h);
                    let x_off = (t * b_len + b) * in_size;
                    let x_t = &x[x_off..x_off + in_size];
                    outer_acc(&mut gw.w_ih, &dgates, x_t);
                    outer_acc(&mut gw.w_hh, &dgates, &step.h_prev);
                    if let Some(gb) = gw.b_ih.as_mut() {
                        add_assign(gb, &dgates);
                    }
                    if let Some(gb) = gw.b_hh.as_mut() {
                        add_assign(gb, &dgates);
                    }
                    matvec_t_acc(&mut d_in[x_off..x_off + in_size], &cw.w_ih, &dgates);
                    dh.fill(0.0);
                    matvec_t_acc(&mut dh, &cw.w_hh, &dgates);
                }
                grad_h0[s_off..s_off + h].copy_from_slice(&dh);
                grad_c0[s_off..s_off + h].copy_from_slice(&dc);
            }
        }
        if links.skips(layer) {
            add_assign(&mut d_in, &d_next);
        }
        if layer > 0 {
            d_out = std::mem::take(&mut d_in);
        }
    }

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
    h_prev: Vec<f64>,
    c_prev: Vec<f64>,
    /// Activated gates `[i, f, g, o]`, `4H`.
    act: Vec<f64>,
    /// `tanh(c_t)`.
    tanh_c: Vec<f64>,
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
    let h = cfg.hidden_size;
    if h == 0 || cfg.num_layers == 0 {
        return Err("hidden_size and num_layers must be positive".into());
    }
    if w.cells.len() != cfg.cells() {
        return Err(format!(
            "{} weight cells, expected {}",
            w.cells.len(),
            cfg.cells()
        ));
    }
    for (idx, c) in w.cells.iter().enumerate() {
        let in_size = cfg.layer_input_size(idx / cfg.dirs());
        if c.w_ih.len() != 4 * h * in_size || c.w_hh.len() != 4 * h * h {
            return Err(format!("weight shape of cell {idx}"));
        }
        for b in [&c.b_ih, &c.b_hh] {
            if b.is_some() != cfg.bias || b.as_ref().is_some_and(|b| b.len() != 4 * h) {
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
    let state_len = cfg.cells() * b_len * h;
    for s in [&inp.h0, &inp.c0].into_iter().flatten() {
        if s.len() != state_len {
            return Err(format!(
                "h0/c0 has {} values, expected {state_len}",
                s.len()
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

fn run_forward(cfg: &RefConfig, w: &RefWeights, inp: &RefInputs, links: &RefLinks) -> Trace {
    let lengths = check_inputs(cfg, w, inp).unwrap_or_else(|e| panic!("{e}"));
    if let Err(e) = links.check(cfg, inp.seq_len, inp.batch) {
        panic!("{e}");
    }
    let (t_len, b_len) = (inp.seq_len, inp.batch);
    let h = cfg.hidden_size;
    let d_n = cfg.dirs();
    let out_w = d_n * h;
    let state_len = cfg.cells() * b_len * h;
    let mut h_n = vec![0.0; state_len];
    let mut c_n = vec![0.0; state_len];
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
                let s_off = (cell_idx * b_len + b) * h;
                let mut h_cur = state_slice(&inp.h0, s_off, h);
                let mut c_cur = state_slice(&inp.c0, s_off, h);
                let order: Vec<usize> = if dir == 0 {
                    (0..len).collect()
                } else {
                    (0..len).rev().collect()
                };
                let mut seq_steps = Vec::with_capacity(len);
                for t in order {
                    let x_off = (t * b_len + b) * in_size;
                    let x_t = &cur[x_off..x_off + in_size];
                    let step = cell_forward(cw, x_t, h_cur, c_cur, t, h);
                    let (h_new, c_new) = step_state(&step);
                    let o_off = (t * b_len + b) * out_w + dir * h;
                    out[o_off..o_off + h].copy_from_slice(&h_new);
                    h_cur = h_new;
                    c_cur = c_new;
                    seq_steps.push(step);
                }
                h_n[s_off..s_off + h].copy_from_slice(&h_cur);
                c_n[s_off..s_off + h].copy_from_slice(&c_cur);
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

/// `h` values of an optional initial state at `off`; zeros when absent.
pub(crate) fn state_slice(s: &Option<Vec<f64>>, off: usize, h: usize) -> Vec<f64> {
    match s {
        Some(v) => v[off..off + h].to_vec(),
        None => vec![0.0; h],
    }
}

/// One LSTM cell step; returns the cache (from which `h_t`, `c_t` follow).
fn cell_forward(
    cw: &RefDirWeights,
    x_t: &[f64],
    h_prev: Vec<f64>,
    c_prev: Vec<f64>,
    t: usize,
    h: usize,
) -> Step {
    let mut pre = vec![0.0; 4 * h];
    if let Some(b) = &cw.b_ih {
        add_assign(&mut pre, b);
    }
    if let Some(b) = &cw.b_hh {
        add_assign(&mut pre, b);
    }
    matvec_acc(&mut pre, &cw.w_ih, x_t);
    matvec_acc(&mut pre, &cw.w_hh, &h_prev);
    let act: Vec<f64> = pre
        .iter()
        .enumerate()
        .map(|(r, &v)| if r / h == 2 { v.tanh() } else { sigmoid(v) })
        .collect();
    let (i, rest) = act.split_at(h);
    let (f, rest) = rest.split_at(h);
    let g = &rest[..h];
    let tanh_c = (0..h)
        .map(|j| (f[j] * c_prev[j] + i[j] * g[j]).tanh())
        .collect();
    Step {
        t,
        h_prev,
        c_prev,
        act,
        tanh_c,
    }
}

/// Recomputes `(h_t, c_t)` of a cached step.
fn step_state(s: &Step) -> (Vec<f64>, Vec<f64>) {
    let h = s.c_prev.len();
    let (i, f, g, o) = gates(&s.act, h);
    let c: Vec<f64> = (0..h).map(|j| f[j] * s.c_prev[j] + i[j] * g[j]).collect();
    let hv = (0..h).map(|j| o[j] * s.tanh_c[j]).collect();
    (hv, c)
}

fn gates(act: &[f64], h: usize) -> (&[f64], &[f64], &[f64], &[f64]) {
    (
        &act[..h],
        &act[h..2 * h],
        &act[2 * h..3 * h],
        &act[3 * h..4 * h],
    )
}

/// Backward through one cell step. `dh` is the total gradient w.r.t. `h_t`,
/// `dc` the gradient w.r.t. `c_t` coming from step `t+1`; on return `dc`
/// holds the gradient w.r.t. `c_{t-1}` and `dgates` the gradient w.r.t. the
/// pre-activation gates.
fn cell_backward(s: &Step, dh: &[f64], dc: &mut [f64], dgates: &mut [f64], h: usize) {
    let (i, f, g, o) = gates(&s.act, h);
    for j in 0..h {
        let tc = s.tanh_c[j];
        let d_o = dh[j] * tc;
        let dct = dc[j] + dh[j] * o[j] * (1.0 - tc * tc);
        let d_i = dct * g[j];
        let d_f = dct * s.c_prev[j];
        let d_g = dct * i[j];
        dgates[j] = d_i * i[j] * (1.0 - i[j]);
        dgates[h + j] = d_f * f[j] * (1.0 - f[j]);
        dgates[2 * h + j] = d_g * (1.0 - g[j] * g[j]);
        dgates[3 * h + j] = d_o * o[j] * (1.0 - o[j]);
        dc[j] = dct * f[j];
    }
}

/// Zero gradients shaped like `w`.
pub(crate) fn zero_grads(w: &RefWeights) -> Vec<RefDirWeights> {
    w.cells
        .iter()
        .map(|c| RefDirWeights {
            w_ih: vec![0.0; c.w_ih.len()],
            w_hh: vec![0.0; c.w_hh.len()],
            b_ih: c.b_ih.as_ref().map(|b| vec![0.0; b.len()]),
            b_hh: c.b_hh.as_ref().map(|b| vec![0.0; b.len()]),
        })
        .collect()
}
