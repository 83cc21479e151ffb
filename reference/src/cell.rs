//! The cells the recurrence of [`crate::forward`] can run: each is a gate
//! count, a recurrent product and a pointwise step with its backward; the
//! layers, directions, lengths, states and weight gradients are written once
//! in `lstm.rs`.

use crate::RefDirWeights;
use crate::linalg::{add_assign, matvec_acc, matvec_t_acc, outer_acc, sigmoid};

/// The recurrent cell of every layer, with PyTorch's semantics and weight
/// layout where PyTorch has the cell. `G` is the gate count, `H` the hidden
/// size, `S` the size of `h` ([`RefCellKind::state_size`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RefCellKind {
    /// `nn.LSTM`: gates `i, f, g, o` (`G = 4`), `c_t = f c + i g`,
    /// `h_t = o tanh(c_t)`.
    #[default]
    Lstm,
    /// `nn.LSTM(proj_size = P)`, `0 < P < H`: `h_t = W_hr (o tanh(c_t))`
    /// with `weight_hr_l{k}[_reverse]: [P, H]`; `W_hh: [4H, P]`, `S = P`,
    /// `c` stays `H` wide.
    LstmProj {
        /// `P`.
        proj_size: usize,
    },
    /// `nn.GRU`: gates `r, z, n` (`G = 3`), `r = σ(W_ir x + b_ir + W_hr h +
    /// b_hr)`, `z` likewise, `n = tanh(W_in x + b_in + r (W_hn h + b_hn))`,
    /// `h_t = (1 − z) n + z h`. No `c`.
    Gru,
    /// IndRNN (Li et al. 2018): `h_t = act(W_ih x + b_ih + u h + b_hh)`
    /// (`G = 1`), the recurrent weight `weight_hh_l{k}` being the vector
    /// `u: [H]`. No `c`.
    IndRnn {
        /// The activation.
        act: RefActivation,
    },
}

/// IndRNN's activation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RefActivation {
    /// `max(0, x)`; its derivative at 0 is taken as 0.
    #[default]
    Relu,
    /// `tanh(x)`.
    Tanh,
}

/// What one step of a cell keeps for its backward.
pub(crate) struct Cache {
    /// `h_{t−1}`, `[S]`.
    pub h_prev: Vec<f64>,
    /// `c_{t−1}` (empty without `c`).
    pub c_prev: Vec<f64>,
    /// Pre-activation of every gate, `[G*H]` (GRU's `n`: its whole argument).
    pub pre: Vec<f64>,
    /// Recurrent part `W_hh h + b_hh`, `[G*H]` (GRU's `n` needs it).
    pub gh: Vec<f64>,
    /// Activated gates, `[G*H]`.
    pub act: Vec<f64>,
    /// `tanh(c_t)` (LSTM cells), `[H]`.
    pub tanh_c: Vec<f64>,
    /// `o tanh(c_t)`, the input of the projection (projected LSTM), `[H]`.
    pub m: Vec<f64>,
}

/// Gradients of one step w.r.t. what the recurrence owns.
pub(crate) struct StepGrads {
    /// w.r.t. the input part `W_ih x + b_ih`, `[G*H]`.
    pub gi: Vec<f64>,
    /// w.r.t. the recurrent part `W_hh h + b_hh`, `[G*H]`.
    pub gh: Vec<f64>,
    /// w.r.t. `h_{t−1}` through paths other than `gh` (GRU's `z h`), `[S]`.
    pub h_prev: Vec<f64>,
    /// w.r.t. `c_{t−1}` (empty without `c`).
    pub c_prev: Vec<f64>,
}

impl RefCellKind {
    /// Gate count `G`.
    pub fn gates(self) -> usize {
        match self {
            RefCellKind::Lstm | RefCellKind::LstmProj { .. } => 4,
            RefCellKind::Gru => 3,
            RefCellKind::IndRnn { .. } => 1,
        }
    }

    /// Whether the cell carries a `c` state (`c0`, `c_n`, `grad_c_n`).
    pub fn has_c(self) -> bool {
        matches!(self, RefCellKind::Lstm | RefCellKind::LstmProj { .. })
    }

    /// Size `S` of `h` for hidden size `hidden`: `P` with a projection.
    pub fn state_size(self, hidden: usize) -> usize {
        match self {
            RefCellKind::LstmProj { proj_size } => proj_size,
            _ => hidden,
        }
    }

    /// Number of values of `W_hh` for hidden size `hidden`.
    pub fn w_hh_len(self, hidden: usize) -> usize {
        match self {
            RefCellKind::IndRnn { .. } => hidden,
            _ => self.gates() * hidden * self.state_size(hidden),
        }
    }

    /// Number of values of `W_hr` (0: the cell has none).
    pub fn w_hr_len(self, hidden: usize) -> usize {
        match self {
            RefCellKind::LstmProj { proj_size } => proj_size * hidden,
            _ => 0,
        }
    }

    /// `gh += W_hh h`.
    pub(crate) fn recurrent(self, gh: &mut [f64], w_hh: &[f64], h: &[f64]) {
        match self {
            RefCellKind::IndRnn { .. } => {
                for ((g, u), hj) in gh.iter_mut().zip(w_hh).zip(h) {
                    *g += u * hj;
                }
            }
            _ => matvec_acc(gh, w_hh, h),
        }
    }

    /// Backward of [`RefCellKind::recurrent`]: `dW += d hᵀ`, `dh += W_hhᵀ d`.
    pub(crate) fn recurrent_backward(
        self,
        w_hh: &[f64],
        h: &[f64],
        d: &[f64],
        dw: &mut [f64],
        dh: &mut [f64],
    ) {
        match self {
            RefCellKind::IndRnn { .. } => {
                for j in 0..d.len() {
                    dw[j] += d[j] * h[j];
                    dh[j] += d[j] * w_hh[j];
                }
            }
            _ => {
                outer_acc(dw, d, h);
                matvec_t_acc(dh, w_hh, d);
            }
        }
    }

    /// The pointwise step from the input part `gi` and the recurrent part
    /// `gh` of the gates: the cache and the new `(h, c)` (`c` empty without
    /// one).
    pub(crate) fn step(
        self,
        cw: &RefDirWeights,
        gi: &[f64],
        gh: Vec<f64>,
        h_prev: Vec<f64>,
        c_prev: Vec<f64>,
    ) -> (Cache, Vec<f64>, Vec<f64>) {
        let n = gi.len() / self.gates();
        let mut pre = gi.to_vec();
        let mut cache = Cache {
            h_prev,
            c_prev,
            pre: Vec::new(),
            gh: Vec::new(),
            act: Vec::new(),
            tanh_c: Vec::new(),
            m: Vec::new(),
        };
        let (h_new, c_new) = match self {
            RefCellKind::Lstm | RefCellKind::LstmProj { .. } => {
                add_assign(&mut pre, &gh);
                let act = activate(&pre, n);
                let [i, f, g, o] = split4(&act, n);
                let c: Vec<f64> = (0..n)
                    .map(|j| f[j] * cache.c_prev[j] + i[j] * g[j])
                    .collect();
                let tanh_c: Vec<f64> = c.iter().map(|v| v.tanh()).collect();
                let m: Vec<f64> = (0..n).map(|j| o[j] * tanh_c[j]).collect();
                let h_new = match &cw.w_hr {
                    Some(w_hr) => {
                        let mut hp = vec![0.0; w_hr.len() / n];
                        matvec_acc(&mut hp, w_hr, &m);
                        hp
                    }
                    None => m.clone(),
                };
                (cache.act, cache.tanh_c, cache.m) = (act, tanh_c, m);
                (h_new, c)
            }
            RefCellKind::Gru => {
                for r in 0..2 * n {
                    pre[r] += gh[r];
                }
                for j in 0..n {
                    let r = sigmoid(pre[j]);
                    pre[2 * n + j] += r * gh[2 * n + j];
                }
                let act = activate(&pre, n);
                let (z, nn) = (&act[n..2 * n], &act[2 * n..]);
                let h_new = (0..n).map(|j| (1.0 - z[j]) * nn[j] + z[j] * cache.h_prev[j]);
                let h_new = h_new.collect();
                cache.act = act;
                (h_new, Vec::new())
            }
            RefCellKind::IndRnn { act } => {
                add_assign(&mut pre, &gh);
                let h_new: Vec<f64> = match act {
                    RefActivation::Relu => pre.iter().map(|v| v.max(0.0)).collect(),
                    RefActivation::Tanh => pre.iter().map(|v| v.tanh()).collect(),
                };
                cache.act = h_new.clone();
                (h_new, Vec::new())
            }
        };
        cache.pre = pre;
        cache.gh = gh;
        (cache, h_new, c_new)
    }

    /// Backward of [`RefCellKind::step`] from the gradients `dh`, `dc` of
    /// its new `(h, c)`; the projection's gradient goes to `gw.w_hr`.
    pub(crate) fn step_backward(
        self,
        cw: &RefDirWeights,
        gw: &mut RefDirWeights,
        s: &Cache,
        dh: &[f64],
        dc: &[f64],
    ) -> StepGrads {
        let n = s.act.len() / self.gates();
        let mut dg = vec![0.0; s.act.len()];
        let mut dh_prev = vec![0.0; s.h_prev.len()];
        let mut dc_prev = Vec::new();
        let mut dgh = None;
        match self {
            RefCellKind::Lstm | RefCellKind::LstmProj { .. } => {
                let dm = match (&cw.w_hr, gw.w_hr.as_mut()) {
                    (Some(w_hr), Some(g_hr)) => {
                        outer_acc(g_hr, dh, &s.m);
                        let mut dm = vec![0.0; n];
                        matvec_t_acc(&mut dm, w_hr, dh);
                        dm
                    }
                    _ => dh.to_vec(),
                };
                let [i, f, g, o] = split4(&s.act, n);
                dc_prev = vec![0.0; n];
                for j in 0..n {
                    let tc = s.tanh_c[j];
                    let dct = dc[j] + dm[j] * o[j] * (1.0 - tc * tc);
                    dg[j] = dct * g[j] * i[j] * (1.0 - i[j]);
                    dg[n + j] = dct * s.c_prev[j] * f[j] * (1.0 - f[j]);
                    dg[2 * n + j] = dct * i[j] * (1.0 - g[j] * g[j]);
                    dg[3 * n + j] = dm[j] * tc * o[j] * (1.0 - o[j]);
                    dc_prev[j] = dct * f[j];
                }
            }
            RefCellKind::Gru => {
                let (r, z, nn) = (&s.act[..n], &s.act[n..2 * n], &s.act[2 * n..]);
                let mut d_gh = vec![0.0; 3 * n];
                for j in 0..n {
                    let d_n = dh[j] * (1.0 - z[j]) * (1.0 - nn[j] * nn[j]);
                    let d_r = d_n * s.gh[2 * n + j];
                    dg[j] = d_r * r[j] * (1.0 - r[j]);
                    dg[n + j] = dh[j] * (s.h_prev[j] - nn[j]) * z[j] * (1.0 - z[j]);
                    dg[2 * n + j] = d_n;
                    dh_prev[j] = dh[j] * z[j];
                    d_gh[j] = dg[j];
                    d_gh[n + j] = dg[n + j];
                    d_gh[2 * n + j] = d_n * r[j];
                }
                dgh = Some(d_gh);
            }
            RefCellKind::IndRnn { act } => {
                for j in 0..n {
                    let y = s.act[j];
                    dg[j] = dh[j]
                        * match act {
                            RefActivation::Relu => f64::from(s.pre[j] > 0.0),
                            RefActivation::Tanh => 1.0 - y * y,
                        };
                }
            }
        }
        StepGrads {
            gh: dgh.unwrap_or_else(|| dg.clone()),
            gi: dg,
            h_prev: dh_prev,
            c_prev: dc_prev,
        }
    }
}

/// Gate activations of LSTM and GRU: gate 2 (`g`, `n`) tanh, the others σ.
fn activate(pre: &[f64], n: usize) -> Vec<f64> {
    let f = |(r, &v): (usize, &f64)| if r / n == 2 { v.tanh() } else { sigmoid(v) };
    pre.iter().enumerate().map(f).collect()
}

fn split4(v: &[f64], n: usize) -> [&[f64]; 4] {
    [&v[..n], &v[n..2 * n], &v[2 * n..3 * n], &v[3 * n..4 * n]]
}

/// Smallest `|pre-activation|` in a cache (for ReLU kink checks).
pub(crate) fn min_abs_pre(c: &Cache) -> f64 {
    c.pre.iter().fold(f64::INFINITY, |a, v| a.min(v.abs()))
}
