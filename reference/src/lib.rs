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
//!
//! Only `std` is used so the file can be tested standalone.

pub mod norm;
pub mod philox;

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

/// Deterministic seeded PRNG (SplitMix64) for test data; no external crates.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Creates a generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// Next raw 64-bit value (SplitMix64).
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform sample in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        lo + (hi - lo) * unit
    }

    /// `n` uniform samples in `[lo, hi)`.
    pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
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
    let mut grad_cells: Vec<RefDirWeights> = w
        .cells
        .iter()
        .map(|c| RefDirWeights {
            w_ih: vec![0.0; c.w_ih.len()],
            w_hh: vec![0.0; c.w_hh.len()],
            b_ih: c.b_ih.as_ref().map(|b| vec![0.0; b.len()]),
            b_hh: c.b_hh.as_ref().map(|b| vec![0.0; b.len()]),
        })
        .collect();

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

fn validate(cfg: &RefConfig, w: &RefWeights, inp: &RefInputs) -> Vec<usize> {
    let h = cfg.hidden_size;
    assert!(h > 0, "hidden_size must be positive");
    assert!(cfg.num_layers > 0, "num_layers must be positive");
    assert_eq!(w.cells.len(), cfg.cells(), "number of weight cells");
    for (idx, c) in w.cells.iter().enumerate() {
        let in_size = cfg.layer_input_size(idx / cfg.dirs());
        assert_eq!(c.w_ih.len(), 4 * h * in_size, "w_ih shape of cell {idx}");
        assert_eq!(c.w_hh.len(), 4 * h * h, "w_hh shape of cell {idx}");
        for b in [&c.b_ih, &c.b_hh] {
            assert_eq!(b.is_some(), cfg.bias, "bias presence of cell {idx}");
            if let Some(b) = b {
                assert_eq!(b.len(), 4 * h, "bias shape of cell {idx}");
            }
        }
    }
    let (t_len, b_len) = (inp.seq_len, inp.batch);
    assert_eq!(inp.x.len(), t_len * b_len * cfg.input_size, "x shape");
    let state_len = cfg.cells() * b_len * h;
    for s in [&inp.h0, &inp.c0].into_iter().flatten() {
        assert_eq!(s.len(), state_len, "h0/c0 shape");
    }
    match &inp.lengths {
        Some(l) => {
            assert_eq!(
                l.len(),
                b_len,
                "lengths must have one entry per batch element"
            );
            for &len in l {
                assert!(
                    (1..=t_len).contains(&len),
                    "length {len} outside 1..={t_len}"
                );
            }
            l.clone()
        }
        None => vec![t_len; b_len],
    }
}

fn run_forward(cfg: &RefConfig, w: &RefWeights, inp: &RefInputs, links: &RefLinks) -> Trace {
    let lengths = validate(cfg, w, inp);
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

fn state_slice(s: &Option<Vec<f64>>, off: usize, h: usize) -> Vec<f64> {
    match s {
        Some(v) => v[off..off + h].to_vec(),
        None => vec![0.0; h],
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
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

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn add_assign(y: &mut [f64], x: &[f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += xi;
    }
}

/// `y += W x` with `W: [y.len(), x.len()]`.
fn matvec_acc(y: &mut [f64], w: &[f64], x: &[f64]) {
    debug_assert_eq!(w.len(), y.len() * x.len());
    for (yi, row) in y.iter_mut().zip(w.chunks_exact(x.len())) {
        *yi += dot(row, x);
    }
}

/// `y += Wᵀ g` with `W: [g.len(), y.len()]`.
fn matvec_t_acc(y: &mut [f64], w: &[f64], g: &[f64]) {
    debug_assert_eq!(w.len(), y.len() * g.len());
    for (row, &gr) in w.chunks_exact(y.len()).zip(g) {
        for (yj, wj) in y.iter_mut().zip(row) {
            *yj += wj * gr;
        }
    }
}

/// `W += g xᵀ` with `W: [g.len(), x.len()]`.
fn outer_acc(w: &mut [f64], g: &[f64], x: &[f64]) {
    debug_assert_eq!(w.len(), g.len() * x.len());
    for (row, &gr) in w.chunks_exact_mut(x.len()).zip(g) {
        for (wj, xj) in row.iter_mut().zip(x) {
            *wj += gr * xj;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(i: usize, h: usize, l: usize, bidir: bool, bias: bool) -> RefConfig {
        RefConfig {
            input_size: i,
            hidden_size: h,
            num_layers: l,
            bidirectional: bidir,
            bias,
        }
    }

    fn state_len(c: &RefConfig, b: usize) -> usize {
        c.cells() * b * c.hidden_size
    }

    fn make_inputs(
        c: &RefConfig,
        rng: &mut Rng,
        t: usize,
        b: usize,
        with_state: bool,
        lengths: Option<Vec<usize>>,
    ) -> RefInputs {
        let sl = state_len(c, b);
        RefInputs {
            seq_len: t,
            batch: b,
            x: rng.vec(t * b * c.input_size, -1.0, 1.0),
            h0: with_state.then(|| rng.vec(sl, -1.0, 1.0)),
            c0: with_state.then(|| rng.vec(sl, -1.0, 1.0)),
            lengths,
        }
    }

    fn make_upstream(c: &RefConfig, rng: &mut Rng, t: usize, b: usize) -> RefUpstream {
        let sl = state_len(c, b);
        RefUpstream {
            grad_output: rng.vec(t * b * c.dirs() * c.hidden_size, -1.0, 1.0),
            grad_h_n: rng.vec(sl, -1.0, 1.0),
            grad_c_n: rng.vec(sl, -1.0, 1.0),
        }
    }

    /// Tracks the worst mixed relative error seen.
    struct Checker {
        worst: f64,
        count: usize,
    }

    impl Checker {
        fn check(&mut self, what: &str, analytic: f64, numeric: f64) {
            let err = (analytic - numeric).abs() / analytic.abs().max(numeric.abs()).max(1e-2);
            assert!(
                err < 1e-6,
                "{what}: analytic {analytic:e} vs numeric {numeric:e} (rel err {err:e})"
            );
            self.worst = self.worst.max(err);
            self.count += 1;
        }
    }

    const EPS: f64 = 1e-6;

    /// Central difference of the loss w.r.t. the parameter `get(state)[k]`.
    fn fd<S: Clone>(
        base: &S,
        k: usize,
        get: impl Fn(&mut S) -> &mut Vec<f64>,
        eval: impl Fn(&S) -> f64,
    ) -> f64 {
        let mut s = base.clone();
        let v = get(&mut s)[k];
        get(&mut s)[k] = v + EPS;
        let lp = eval(&s);
        get(&mut s)[k] = v - EPS;
        let lm = eval(&s);
        (lp - lm) / (2.0 * EPS)
    }

    fn fd_check(
        c: &RefConfig,
        t: usize,
        b: usize,
        with_state: bool,
        lengths: Option<Vec<usize>>,
        seed: u64,
        chk: &mut Checker,
    ) {
        let links = RefLinks::default();
        fd_check_links(c, t, b, with_state, lengths, seed, &links, chk);
    }

    #[allow(clippy::too_many_arguments)]
    fn fd_check_links(
        c: &RefConfig,
        t: usize,
        b: usize,
        with_state: bool,
        lengths: Option<Vec<usize>>,
        seed: u64,
        links: &RefLinks,
        chk: &mut Checker,
    ) {
        let forward =
            |c: &RefConfig, w: &RefWeights, inp: &RefInputs| forward_links(c, w, inp, links);
        let mut rng = Rng::new(seed);
        let w = random_weights(c, &mut rng);
        let inp = make_inputs(c, &mut rng, t, b, with_state, lengths.clone());
        let up = make_upstream(c, &mut rng, t, b);
        let (out, g) = backward_links(c, &w, &inp, &up, links);
        let fwd = forward(c, &w, &inp);
        assert_eq!(out.output, fwd.output);
        assert_eq!(out.h_n, fwd.h_n);
        assert_eq!(out.c_n, fwd.c_n);
        let tag = format!(
            "L={} D={} bias={} state={} T={t} B={b} lengths={lengths:?} links={}/{}",
            c.num_layers,
            c.dirs(),
            c.bias,
            with_state,
            links.keep.len(),
            links.residual
        );

        // Input gradient; exactly zero at padded positions.
        let lens = lengths.clone().unwrap_or(vec![t; b]);
        assert_eq!(g.input.len(), inp.x.len());
        let eval_in = |s: &RefInputs| loss(&forward(c, &w, s), &up);
        for k in 0..inp.x.len() {
            let (tt, bb) = (k / (b * c.input_size), (k / c.input_size) % b);
            let num = fd(&inp, k, |s| &mut s.x, eval_in);
            if tt >= lens[bb] {
                assert_eq!(g.input[k], 0.0, "{tag}: padded input grad {k}");
                assert_eq!(num, 0.0, "{tag}: padded input numeric grad {k}");
            } else {
                chk.check(&format!("{tag}: input[{k}]"), g.input[k], num);
            }
        }

        // Initial state gradients (w.r.t. zeros when h0/c0 are absent).
        let sl = state_len(c, b);
        let mut inp_s = inp.clone();
        inp_s.h0.get_or_insert_with(|| vec![0.0; sl]);
        inp_s.c0.get_or_insert_with(|| vec![0.0; sl]);
        assert_eq!(g.h0.len(), sl);
        assert_eq!(g.c0.len(), sl);
        for k in 0..sl {
            let nh = fd(&inp_s, k, |s| s.h0.as_mut().unwrap(), eval_in);
            chk.check(&format!("{tag}: h0[{k}]"), g.h0[k], nh);
            let nc = fd(&inp_s, k, |s| s.c0.as_mut().unwrap(), eval_in);
            chk.check(&format!("{tag}: c0[{k}]"), g.c0[k], nc);
        }

        // Parameter gradients.
        let eval_w = |s: &RefWeights| loss(&forward(c, s, &inp), &up);
        assert_eq!(g.weights.cells.len(), w.cells.len());
        for (ci, gc) in g.weights.cells.iter().enumerate() {
            assert_eq!(gc.b_ih.is_some(), c.bias);
            assert_eq!(gc.b_hh.is_some(), c.bias);
            for k in 0..gc.w_ih.len() {
                let n = fd(&w, k, |s| &mut s.cells[ci].w_ih, eval_w);
                chk.check(&format!("{tag}: cell {ci} w_ih[{k}]"), gc.w_ih[k], n);
            }
            for k in 0..gc.w_hh.len() {
                let n = fd(&w, k, |s| &mut s.cells[ci].w_hh, eval_w);
                chk.check(&format!("{tag}: cell {ci} w_hh[{k}]"), gc.w_hh[k], n);
            }
            if let (Some(gbi), Some(gbh)) = (&gc.b_ih, &gc.b_hh) {
                assert_eq!(gbi, gbh, "{tag}: b_ih and b_hh grads must match");
                for k in 0..gbi.len() {
                    let n = fd(&w, k, |s| s.cells[ci].b_ih.as_mut().unwrap(), eval_w);
                    chk.check(&format!("{tag}: cell {ci} b_ih[{k}]"), gbi[k], n);
                    let n = fd(&w, k, |s| s.cells[ci].b_hh.as_mut().unwrap(), eval_w);
                    chk.check(&format!("{tag}: cell {ci} b_hh[{k}]"), gbh[k], n);
                }
            }
        }
    }

    /// Dropout (random masks, p = 0.4) and residual links on the plain
    /// stack, alone and together, uni- and bidirectional, unequal lengths.
    #[test]
    fn finite_difference_links() {
        let mut chk = Checker {
            worst: 0.0,
            count: 0,
        };
        let mut rng = Rng::new(77);
        for (q, (layers, bidir, drop, residual)) in [
            (3, false, true, true),
            (3, true, true, false),
            (2, true, false, true),
            (4, false, true, true),
        ]
        .into_iter()
        .enumerate()
        {
            let c = cfg(2, 3, layers, bidir, q % 2 == 0);
            let (t, b) = (4, 3);
            let n = t * b * c.dirs() * c.hidden_size;
            let keep = if drop {
                (0..layers - 1)
                    .map(|_| (0..n).map(|_| rng.uniform(0.0, 1.0) >= 0.4).collect())
                    .collect()
            } else {
                Vec::new()
            };
            let links = RefLinks {
                dropout: 0.4,
                residual,
                keep,
            };
            let lengths = (q % 2 == 0).then(|| vec![4, 1, 3]);
            fd_check_links(&c, t, b, q != 1, lengths, 500 + q as u64, &links, &mut chk);
        }
        eprintln!(
            "finite differences with links: {} entries, worst relative error {:e}",
            chk.count, chk.worst
        );
    }

    #[test]
    fn finite_difference_grid() {
        let mut chk = Checker {
            worst: 0.0,
            count: 0,
        };
        let mut seed = 1;
        for layers in 1..=3 {
            for bidir in [false, true] {
                for bias in [false, true] {
                    for with_state in [false, true] {
                        let c = cfg(2, 3, layers, bidir, bias);
                        let cases: [(usize, usize, Option<Vec<usize>>); 4] = [
                            (5, 3, None),
                            (5, 3, Some(vec![5, 2, 4])),
                            (4, 3, Some(vec![1, 4, 3])),
                            (1, 2, None),
                        ];
                        for (t, b, lengths) in cases {
                            seed += 1;
                            fd_check(&c, t, b, with_state, lengths, seed, &mut chk);
                        }
                    }
                }
            }
        }
        // T = 1 with explicit lengths, and a larger odd input size.
        fd_check(
            &cfg(2, 3, 2, true, true),
            1,
            2,
            true,
            Some(vec![1, 1]),
            99,
            &mut chk,
        );
        fd_check(
            &cfg(5, 1, 2, true, true),
            3,
            2,
            true,
            Some(vec![2, 3]),
            100,
            &mut chk,
        );
        eprintln!(
            "finite differences: {} entries, worst relative error {:e}",
            chk.count, chk.worst
        );
    }

    #[test]
    fn padded_outputs_are_exactly_zero() {
        for bidir in [false, true] {
            let c = cfg(2, 3, 2, bidir, true);
            let mut rng = Rng::new(7);
            let w = random_weights(&c, &mut rng);
            let lengths = vec![5, 2, 4, 1];
            let inp = make_inputs(&c, &mut rng, 5, 4, true, Some(lengths.clone()));
            let out = forward(&c, &w, &inp).output;
            let ow = c.dirs() * c.hidden_size;
            for t in 0..5 {
                for (b, &len) in lengths.iter().enumerate() {
                    let row = &out[(t * 4 + b) * ow..(t * 4 + b + 1) * ow];
                    if t >= len {
                        assert!(row.iter().all(|&v| v == 0.0), "t={t} b={b}: {row:?}");
                    } else {
                        assert!(
                            row.iter().any(|&v| v != 0.0),
                            "t={t} b={b} unexpectedly zero"
                        );
                    }
                }
            }
        }
    }

    /// Slices `[L*D, B, H]` state of batch element `b` into a `[L*D, 1, H]` state.
    fn state_of(s: &[f64], cells: usize, batch: usize, b: usize, h: usize) -> Vec<f64> {
        (0..cells)
            .flat_map(|cell| s[(cell * batch + b) * h..(cell * batch + b + 1) * h].to_vec())
            .collect()
    }

    fn assert_close(a: &[f64], b: &[f64], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: length");
        for (k, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-12, "{what}[{k}]: {x} vs {y}");
        }
    }

    #[test]
    fn lengths_match_truncated_single_sequences() {
        for bidir in [false, true] {
            for layers in [1, 3] {
                let c = cfg(2, 3, layers, bidir, true);
                let (t_len, b_len) = (5, 4);
                let mut rng = Rng::new(11 + layers as u64);
                let w = random_weights(&c, &mut rng);
                let lengths = vec![5, 2, 4, 1];
                let inp = make_inputs(&c, &mut rng, t_len, b_len, true, Some(lengths.clone()));
                let out = forward(&c, &w, &inp);
                let (i_sz, h, ow, cells) = (c.input_size, c.hidden_size, c.dirs() * 3, c.cells());
                for (b, &len) in lengths.iter().enumerate() {
                    let x: Vec<f64> = (0..len)
                        .flat_map(|t| {
                            inp.x[(t * b_len + b) * i_sz..(t * b_len + b + 1) * i_sz].to_vec()
                        })
                        .collect();
                    let alone = RefInputs {
                        seq_len: len,
                        batch: 1,
                        x,
                        h0: Some(state_of(inp.h0.as_ref().unwrap(), cells, b_len, b, h)),
                        c0: Some(state_of(inp.c0.as_ref().unwrap(), cells, b_len, b, h)),
                        lengths: None,
                    };
                    let single = forward(&c, &w, &alone);
                    let tag = format!("L={layers} D={} b={b}", c.dirs());
                    for t in 0..len {
                        let got = &out.output[(t * b_len + b) * ow..(t * b_len + b + 1) * ow];
                        assert_close(
                            got,
                            &single.output[t * ow..(t + 1) * ow],
                            &format!("{tag} out t={t}"),
                        );
                    }
                    assert_close(
                        &state_of(&out.h_n, cells, b_len, b, h),
                        &single.h_n,
                        &format!("{tag} h_n"),
                    );
                    assert_close(
                        &state_of(&out.c_n, cells, b_len, b, h),
                        &single.c_n,
                        &format!("{tag} c_n"),
                    );
                    // Forward-direction h_n of the last layer is the output at len-1.
                    let last = (c.num_layers - 1) * c.dirs();
                    let hn = &out.h_n[(last * b_len + b) * h..(last * b_len + b + 1) * h];
                    let o =
                        &out.output[((len - 1) * b_len + b) * ow..((len - 1) * b_len + b) * ow + h];
                    assert_close(hn, o, &format!("{tag} h_n vs last output"));
                    if bidir {
                        // Reverse-direction h_n of the last layer is its output at t = 0.
                        let hn = &out.h_n
                            [((last + 1) * b_len + b) * h..((last + 1) * b_len + b + 1) * h];
                        let o = &out.output[b * ow + h..(b + 1) * ow];
                        assert_close(hn, o, &format!("{tag} reverse h_n vs output at t=0"));
                    }
                }
            }
        }
    }

    #[test]
    fn reverse_direction_is_reversed_truncated_sequence() {
        let c = cfg(2, 3, 1, true, true);
        let uni = cfg(2, 3, 1, false, true);
        let (t_len, b_len, h) = (5, 3, 3);
        let mut rng = Rng::new(21);
        let w = random_weights(&c, &mut rng);
        let lengths = vec![5, 2, 4];
        let inp = make_inputs(&c, &mut rng, t_len, b_len, true, Some(lengths.clone()));
        let out = forward(&c, &w, &inp);
        let rev_w = RefWeights {
            cells: vec![w.cells[1].clone()],
        };
        let h0 = inp.h0.as_ref().unwrap();
        let c0 = inp.c0.as_ref().unwrap();
        for (b, &len) in lengths.iter().enumerate() {
            let x: Vec<f64> = (0..len)
                .rev()
                .flat_map(|t| inp.x[(t * b_len + b) * 2..(t * b_len + b + 1) * 2].to_vec())
                .collect();
            let s_off = (b_len + b) * h; // cell 1 (reverse) of layer 0
            let single = forward(
                &uni,
                &rev_w,
                &RefInputs {
                    seq_len: len,
                    batch: 1,
                    x,
                    h0: Some(h0[s_off..s_off + h].to_vec()),
                    c0: Some(c0[s_off..s_off + h].to_vec()),
                    lengths: None,
                },
            );
            for t in 0..len {
                let got = &out.output[(t * b_len + b) * 2 * h + h..(t * b_len + b + 1) * 2 * h];
                let s = len - 1 - t;
                assert_close(
                    got,
                    &single.output[s * h..(s + 1) * h],
                    &format!("b={b} t={t}"),
                );
            }
            assert_close(
                &out.h_n[s_off..s_off + h],
                &single.h_n,
                &format!("b={b} h_n"),
            );
            assert_close(
                &out.c_n[s_off..s_off + h],
                &single.c_n,
                &format!("b={b} c_n"),
            );
        }
    }

    #[test]
    fn full_lengths_equal_no_lengths() {
        let c = cfg(2, 3, 2, true, true);
        let mut rng = Rng::new(5);
        let w = random_weights(&c, &mut rng);
        let inp = make_inputs(&c, &mut rng, 4, 3, true, None);
        let mut with_len = inp.clone();
        with_len.lengths = Some(vec![4, 4, 4]);
        let a = forward(&c, &w, &inp);
        let b = forward(&c, &w, &with_len);
        assert_eq!(a.output, b.output);
        assert_eq!(a.h_n, b.h_n);
        assert_eq!(a.c_n, b.c_n);
    }

    /// Closed-form single step checking the gate order i, f, g, o.
    #[test]
    fn gate_order_closed_form() {
        let c = cfg(1, 1, 1, false, true);
        let (bi, bf, bg, bo) = (0.3, -0.7, 1.1, 0.5);
        let w = RefWeights {
            cells: vec![RefDirWeights {
                w_ih: vec![0.0; 4],
                w_hh: vec![0.0; 4],
                b_ih: Some(vec![bi, bf, bg, bo]),
                b_hh: Some(vec![0.0; 4]),
            }],
        };
        let c0 = 0.8;
        let inp = RefInputs {
            seq_len: 1,
            batch: 1,
            x: vec![0.25],
            h0: Some(vec![-0.4]),
            c0: Some(vec![c0]),
            lengths: None,
        };
        let out = forward(&c, &w, &inp);
        let s = |v: f64| 1.0 / (1.0 + (-v).exp());
        let c1 = s(bf) * c0 + s(bi) * f64::tanh(bg);
        let h1 = s(bo) * c1.tanh();
        assert!((out.c_n[0] - c1).abs() < 1e-15);
        assert!((out.h_n[0] - h1).abs() < 1e-15);
        assert!((out.output[0] - h1).abs() < 1e-15);
    }

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        let va = a.vec(1000, -0.5, 0.25);
        assert_eq!(va, b.vec(1000, -0.5, 0.25));
        assert!(va.iter().all(|&v| (-0.5..0.25).contains(&v)));
        let c = cfg(2, 4, 2, true, true);
        let w = random_weights(&c, &mut Rng::new(1));
        assert_eq!(w.cells.len(), 4);
        assert!(
            w.cells
                .iter()
                .all(|cell| cell.w_ih.iter().all(|v| v.abs() <= 0.5))
        );
        assert_eq!(w.cells[2].w_ih.len(), 16 * 8);
    }
}
