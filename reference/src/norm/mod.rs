//! f64 CPU reference of the normalization variants and gradient clipping
//! (issue 3), built on the plain `nn.LSTM` reference in [`crate`].
//!
//! Five variants (see the shared spec; `eps = 1e-5` inside the square root,
//! BatchNorm momentum `0.1`):
//!
//! 1. [`RefNorm::Layer`]: LayerNorm over the `D*H` features of every valid
//!    position of a layer's output, before the next layer reads it
//!    (`layer_norms.{k}.*`).
//! 2. [`RefNorm::LayerCell`]: LayerNorm LSTM cell (Ba et al. 2016),
//!    `gates = LN_ih(W_ih x) + LN_hh(W_hh h) + b_ih + b_hh`,
//!    `h = o * tanh(LN_c(c))` (`ln_{ih,hh,c}_l{k}{sfx}.*`).
//! 3. [`RefNorm::Batch`]: `BatchNorm1d(D*H)` over all valid `(t, b)` positions
//!    of a layer's output (`batch_norms.{k}.*`).
//! 4. [`RefNorm::StepBatch`]: BatchNorm per time step `t` over the sequences
//!    valid at `t`, with running-stat row `t` (`step_norms.{k}.*`).
//! 5. [`RefNorm::RecurrentBatch`]: recurrent BatchNorm cell (Cooijmans et al.
//!    2016), statistics per step `s` of each direction over the sequences
//!    active at `s` (`bn_{ih,hh,c}_l{k}{sfx}.*`).
//!
//! Variants 1, 3 and 4 run every layer through the plain reference
//! ([`crate::forward`] / [`crate::backward`] on a one-layer
//! configuration) and normalize between layers; variants 2 and 5 have their own
//! cell, processed step by step over the whole batch with explicit caches.
//!
//! Conventions beyond the spec (documented here because the spec is silent):
//! * A time step (variant 4) with no valid sequence (`t >= max(lengths)`) is
//!   skipped: it produces nothing, updates no running-stat row and is not an
//!   error (PyTorch would never see it in a packed sequence).
//! * `batch_norms.{k}.num_batches_tracked` (variant 3 only) is accepted as an
//!   optional one-value tensor; in train mode it is incremented by 1 and
//!   returned with the running statistics. It has no gradient and is not
//!   listed by [`norm_tensor_shapes`].
//! * Any tensor that the variant does not define is an error, as is a tensor
//!   with the wrong number of values, and `t_max = 0`.
//!
//! Dropout and residual links between layers ([`RefLinks`]) follow each
//! layer's between-layer norm; [`ref_links`] builds them with the GPU's
//! dropout mask ([`dropout_keep`]).
//!
//! Only `std`, `crate::reference` and the CPU mirror of the dropout mask are
//! used.

use crate::philox::{DropoutStep, dropout_keep};
use crate::{
    self as plain, RefConfig, RefDirWeights, RefGrads, RefInputs, RefLinks, RefOutputs,
    RefUpstream, RefWeights, Rng,
};
use std::collections::BTreeMap;

/// `eps` of every LayerNorm / BatchNorm (inside the square root).
pub const NORM_EPS: f64 = 1e-5;
/// BatchNorm running-statistics momentum (PyTorch default).
pub const BN_MOMENTUM: f64 = 0.1;

/// The normalization variant of a model (a model uses exactly one, or none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefNorm {
    /// Variant 1: LayerNorm between layers; `last` also normalizes the final output.
    Layer {
        /// Whether `layer_norms.{L-1}` exists (normalizes the final `output`).
        last: bool,
    },
    /// Variant 2: LayerNorm LSTM cell.
    LayerCell,
    /// Variant 3: sequence-wise BatchNorm between layers.
    Batch {
        /// Whether `batch_norms.{L-1}` exists (normalizes the final `output`).
        last: bool,
    },
    /// Variant 4: per-time-step BatchNorm between layers.
    StepBatch {
        /// Whether `step_norms.{L-1}` exists (normalizes the final `output`).
        last: bool,
        /// Number of running-stat rows `T_max`.
        t_max: usize,
    },
    /// Variant 5: recurrent BatchNorm cell.
    RecurrentBatch {
        /// Number of running-stat rows `T_max`.
        t_max: usize,
    },
}

impl RefNorm {
    /// Whether the variant uses batch statistics (variants 3, 4, 5), i.e.
    /// whether train and eval mode differ and running stats exist.
    pub fn has_batch_stats(&self) -> bool {
        matches!(
            self,
            RefNorm::Batch { .. } | RefNorm::StepBatch { .. } | RefNorm::RecurrentBatch { .. }
        )
    }

    /// Whether the variant normalizes between layers (variants 1, 3, 4).
    pub fn is_between_layers(&self) -> bool {
        matches!(
            self,
            RefNorm::Layer { .. } | RefNorm::Batch { .. } | RefNorm::StepBatch { .. }
        )
    }

    /// Name prefix of the between-layer variants (`layer_norms`, `batch_norms`,
    /// `step_norms`); `None` for the cell variants.
    pub fn between_prefix(&self) -> Option<&'static str> {
        match self {
            RefNorm::Layer { .. } => Some("layer_norms"),
            RefNorm::Batch { .. } => Some("batch_norms"),
            RefNorm::StepBatch { .. } => Some("step_norms"),
            RefNorm::LayerCell | RefNorm::RecurrentBatch { .. } => None,
        }
    }

    /// Whether layer `k`'s output is normalized by a between-layer variant
    /// (`k < L-1`, or `k = L-1` with `last`). Always `false` for cell variants.
    pub fn normalizes_layer_output(&self, cfg: &RefConfig, k: usize) -> bool {
        match *self {
            RefNorm::Layer { last } | RefNorm::Batch { last } | RefNorm::StepBatch { last, .. } => {
                k + 1 < cfg.num_layers || (last && k + 1 == cfg.num_layers)
            }
            RefNorm::LayerCell | RefNorm::RecurrentBatch { .. } => false,
        }
    }
}

/// Whether a norm tensor is trained (has a gradient) or a running statistic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorKind {
    /// Trainable weight or bias: receives `grad.<name>`.
    Param,
    /// BatchNorm running mean / variance: no gradient, updated in train mode.
    RunningStat,
}

/// Norm tensors by PyTorch name (flat row-major values).
pub type NormTensors = BTreeMap<String, Vec<f64>>;

/// Direction suffix of PyTorch names: `""` or `"_reverse"`.
pub fn dir_suffix(dir: usize) -> &'static str {
    if dir == 0 { "" } else { "_reverse" }
}

/// `(PyTorch name, shape, kind)` of every norm tensor of the variant, in this
/// fixed order:
///
/// * variants 1/3/4: for each normalized layer `k` ascending,
///   `{prefix}.{k}.weight [D*H]`, `.bias [D*H]`, then for 3
///   `.running_mean [D*H]`, `.running_var [D*H]`, for 4
///   `.running_mean [T_max, D*H]`, `.running_var [T_max, D*H]`;
/// * variant 2: for each layer `k`, then direction:
///   `ln_ih_l{k}{sfx}.weight [4H]`, `.bias [4H]`, `ln_hh_l{k}{sfx}.weight [4H]`,
///   `.bias [4H]`, `ln_c_l{k}{sfx}.weight [H]`, `.bias [H]`;
/// * variant 5: for each layer `k`, then direction:
///   `bn_ih_l{k}{sfx}.weight [4H]`, `.running_mean [T_max, 4H]`,
///   `.running_var [T_max, 4H]`, `bn_hh_l{k}{sfx}` (same three),
///   `bn_c_l{k}{sfx}.weight [H]`, `.bias [H]`, `.running_mean [T_max, H]`,
///   `.running_var [T_max, H]`.
///
/// The optional `batch_norms.{k}.num_batches_tracked` is not listed.
pub fn norm_tensor_shapes(cfg: &RefConfig, norm: RefNorm) -> Vec<(String, Vec<usize>, TensorKind)> {
    use TensorKind::{Param, RunningStat};
    let h = cfg.hidden_size;
    let dh = cfg.dirs() * h;
    let mut v = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, kind: TensorKind| v.push((name, shape, kind));
    match norm {
        RefNorm::Layer { .. } | RefNorm::Batch { .. } | RefNorm::StepBatch { .. } => {
            let prefix = norm.between_prefix().expect("between-layer variant");
            for k in 0..cfg.num_layers {
                if !norm.normalizes_layer_output(cfg, k) {
                    continue;
                }
                let p = format!("{prefix}.{k}");
                push(format!("{p}.weight"), vec![dh], Param);
                push(format!("{p}.bias"), vec![dh], Param);
                match norm {
                    RefNorm::Batch { .. } => {
                        push(format!("{p}.running_mean"), vec![dh], RunningStat);
                        push(format!("{p}.running_var"), vec![dh], RunningStat);
                    }
                    RefNorm::StepBatch { t_max, .. } => {
                        push(format!("{p}.running_mean"), vec![t_max, dh], RunningStat);
                        push(format!("{p}.running_var"), vec![t_max, dh], RunningStat);
                    }
                    _ => {}
                }
            }
        }
        RefNorm::LayerCell => {
            for k in 0..cfg.num_layers {
                for dir in 0..cfg.dirs() {
                    let s = dir_suffix(dir);
                    for (nm, f) in [("ln_ih", 4 * h), ("ln_hh", 4 * h), ("ln_c", h)] {
                        push(format!("{nm}_l{k}{s}.weight"), vec![f], Param);
                        push(format!("{nm}_l{k}{s}.bias"), vec![f], Param);
                    }
                }
            }
        }
        RefNorm::RecurrentBatch { t_max } => {
            for k in 0..cfg.num_layers {
                for dir in 0..cfg.dirs() {
                    let s = dir_suffix(dir);
                    for nm in ["bn_ih", "bn_hh"] {
                        push(format!("{nm}_l{k}{s}.weight"), vec![4 * h], Param);
                        push(
                            format!("{nm}_l{k}{s}.running_mean"),
                            vec![t_max, 4 * h],
                            RunningStat,
                        );
                        push(
                            format!("{nm}_l{k}{s}.running_var"),
                            vec![t_max, 4 * h],
                            RunningStat,
                        );
                    }
                    push(format!("bn_c_l{k}{s}.weight"), vec![h], Param);
                    push(format!("bn_c_l{k}{s}.bias"), vec![h], Param);
                    push(
                        format!("bn_c_l{k}{s}.running_mean"),
                        vec![t_max, h],
                        RunningStat,
                    );
                    push(
                        format!("bn_c_l{k}{s}.running_var"),
                        vec![t_max, h],
                        RunningStat,
                    );
                }
            }
        }
    }
    v
}

/// Random but sensible norm tensors: weights `U(0.5, 1.5)` (all weights of
/// variant 5: `U(0.05, 0.2)`), biases `U(-0.5, 0.5)`, running means
/// `U(-0.2, 0.2)`, running vars `U(0.5, 1.5)`; drawn in
/// [`norm_tensor_shapes`] order.
pub fn random_norm_tensors(cfg: &RefConfig, norm: RefNorm, rng: &mut Rng) -> NormTensors {
    let recurrent = matches!(norm, RefNorm::RecurrentBatch { .. });
    norm_tensor_shapes(cfg, norm)
        .into_iter()
        .map(|(name, shape, _)| {
            let n = shape.iter().product();
            let (lo, hi) = if name.ends_with(".weight") {
                if recurrent { (0.05, 0.2) } else { (0.5, 1.5) }
            } else if name.ends_with(".bias") {
                (-0.5, 0.5)
            } else if name.ends_with(".running_mean") {
                (-0.2, 0.2)
            } else {
                (0.5, 1.5)
            };
            let v = rng.vec(n, lo, hi);
            (name, v)
        })
        .collect()
}

/// Result of a forward pass with normalization.
#[derive(Clone, Debug)]
pub struct NormRun {
    /// Output, `h_n`, `c_n` (as in the plain reference; `h_n`/`c_n` are never normalized).
    pub out: RefOutputs,
    /// Every running-stat tensor of the variant (plus `num_batches_tracked`
    /// when given): updated in train mode, unchanged copies in eval mode;
    /// empty for variants 1 and 2.
    pub running: NormTensors,
}

/// Gradients of the loss with normalization.
#[derive(Clone, Debug)]
pub struct NormGrads {
    /// Gradients of input, `h0`, `c0` and the LSTM weights.
    pub grads: RefGrads,
    /// Gradient of every [`TensorKind::Param`] norm tensor, keyed by its name.
    pub norm: NormTensors,
}

/// Forward pass of the stacked LSTM with the normalization variant `norm`.
///
/// `train` selects BatchNorm train mode (batch statistics, running-stat
/// update) or eval mode (running statistics); variants 1 and 2 ignore it.
/// Errors: invalid shapes/lengths, missing/unexpected/mis-sized norm tensors,
/// `T > T_max` in train mode (variants 4, 5), a BatchNorm over a single value
/// per channel in train mode.
pub fn forward_norm(
    cfg: &RefConfig,
    w: &RefWeights,
    norm: RefNorm,
    nt: &NormTensors,
    inp: &RefInputs,
    train: bool,
) -> Result<NormRun, String> {
    forward_norm_links(cfg, w, norm, nt, inp, train, &RefLinks::default())
}

/// [`forward_norm`] with dropout / residual links between layers (after the
/// between-layer norm of each layer, see [`RefLinks`]). `links` is used as
/// given: pass no masks for eval mode.
pub fn forward_norm_links(
    cfg: &RefConfig,
    w: &RefWeights,
    norm: RefNorm,
    nt: &NormTensors,
    inp: &RefInputs,
    train: bool,
    links: &RefLinks,
) -> Result<NormRun, String> {
    let tr = run_forward(cfg, w, norm, nt, inp, train, links)?;
    Ok(NormRun {
        out: tr.out,
        running: tr.running,
    })
}

/// Forward pass followed by exact backpropagation through time of
/// `loss = Σ output·grad_output + Σ h_n·grad_h_n + Σ c_n·grad_c_n`
/// (train mode: through the batch statistics; eval mode: through the affine
/// maps). Errors as [`forward_norm`], plus mis-shaped upstream gradients.
pub fn backward_norm(
    cfg: &RefConfig,
    w: &RefWeights,
    norm: RefNorm,
    nt: &NormTensors,
    inp: &RefInputs,
    up: &RefUpstream,
    train: bool,
) -> Result<(NormRun, NormGrads), String> {
    backward_norm_links(cfg, w, norm, nt, inp, up, train, &RefLinks::default())
}

/// [`backward_norm`] with dropout / residual links between layers.
#[allow(clippy::too_many_arguments)]
pub fn backward_norm_links(
    cfg: &RefConfig,
    w: &RefWeights,
    norm: RefNorm,
    nt: &NormTensors,
    inp: &RefInputs,
    up: &RefUpstream,
    train: bool,
    links: &RefLinks,
) -> Result<(NormRun, NormGrads), String> {
    let tr = run_forward(cfg, w, norm, nt, inp, train, links)?;
    let state_len = cfg.cells() * inp.batch * cfg.hidden_size;
    if up.grad_output.len() != tr.out.output.len() {
        return Err(format!(
            "grad_output has {} values, expected {}",
            up.grad_output.len(),
            tr.out.output.len()
        ));
    }
    for (what, g) in [("grad_h_n", &up.grad_h_n), ("grad_c_n", &up.grad_c_n)] {
        if g.len() != state_len {
            return Err(format!(
                "{what} has {} values, expected {state_len}",
                g.len()
            ));
        }
    }
    let mut ng: NormTensors = norm_tensor_shapes(cfg, norm)
        .into_iter()
        .filter(|(_, _, kind)| *kind == TensorKind::Param)
        .map(|(name, shape, _)| (name, vec![0.0; shape.iter().product()]))
        .collect();
    let grads = match &tr.layers {
        Layers::Between(layers) => {
            backward_between(cfg, w, norm, nt, inp, up, &tr, layers, &mut ng, links)
        }
        Layers::Cell(layers) => backward_cells(cfg, w, norm, nt, inp, up, layers, &mut ng, links),
    };
    Ok((
        NormRun {
            out: tr.out,
            running: tr.running,
        },
        NormGrads { grads, norm: ng },
    ))
}

/// Links with drop probability `p` and the GPU's mask: element `i` of layer
/// `l`'s output is kept iff `dropout_keep(step, l, i, p)`. `step = None` is
/// eval mode (no dropout).
pub fn ref_links(
    cfg: &RefConfig,
    seq_len: usize,
    batch: usize,
    p: f32,
    residual: bool,
    step: Option<&DropoutStep>,
) -> Result<RefLinks, String> {
    let n = seq_len * batch * cfg.dirs() * cfg.hidden_size;
    let mut keep = Vec::new();
    if let Some(step) = step.filter(|_| p != 0.0) {
        for l in 0..cfg.num_layers.saturating_sub(1) {
            let mask = (0..n)
                .map(|i| dropout_keep(step, l as u32, i as u32, p).map_err(|e| e.to_string()))
                .collect::<Result<Vec<bool>, String>>()?;
            keep.push(mask);
        }
    }
    Ok(RefLinks {
        dropout: p as f64,
        residual,
        keep,
    })
}

/// Euclidean norm of one gradient tensor (per-tensor norms for monitoring).
pub fn grad_norm(g: &[f64]) -> f64 {
    g.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// `torch.nn.utils.clip_grad_norm_(params, max_norm)` (norm type 2) over every
/// listed gradient: `total = sqrt(Σ g²)`, `scale = min(1, max_norm / (total + 1e-6))`,
/// every gradient `*= scale`. Returns `total` (before clipping).
///
/// When `total` is not finite (NaN/Inf gradients) the gradients are left
/// untouched and the non-finite total is returned for the caller to report.
pub fn clip_grad_norm(grads: &mut [&mut [f64]], max_norm: f64) -> f64 {
    let total = grads
        .iter()
        .flat_map(|g| g.iter())
        .map(|v| v * v)
        .sum::<f64>()
        .sqrt();
    if !total.is_finite() {
        return total;
    }
    let scale = max_norm / (total + 1e-6);
    if scale < 1.0 {
        for g in grads.iter_mut() {
            for v in g.iter_mut() {
                *v *= scale;
            }
        }
    }
    total
}

/// `torch.nn.utils.clip_grad_value_`: clamps every gradient to `[-v, v]`
/// (NaN stays NaN).
pub fn clip_grad_value(grads: &mut [&mut [f64]], v: f64) {
    for g in grads.iter_mut() {
        for x in g.iter_mut() {
            *x = x.clamp(-v, v);
        }
    }
}

// ---------------------------------------------------------------------------
// Internals: normalization primitives
// ---------------------------------------------------------------------------

/// How a `[n, f]` block was normalized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Axis {
    /// LayerNorm: statistics per row (over the `f` features).
    Row,
    /// BatchNorm train mode: statistics per feature (over the `n` rows).
    BatchTrain,
    /// BatchNorm eval mode: fixed affine map per feature.
    BatchEval,
}

/// Cache of one normalization of a `[n, f]` block.
struct Normed {
    n: usize,
    f: usize,
    axis: Axis,
    /// Output `[n, f]`.
    y: Vec<f64>,
    /// Normalized values before the affine map, `[n, f]`.
    xhat: Vec<f64>,
    /// `1/sqrt(var + eps)`: per row (`Row`) or per feature (batch).
    inv_std: Vec<f64>,
}

/// LayerNorm of every row of `x: [n, f]` with weight `w` and bias `b`.
fn layer_norm_rows(x: &[f64], n: usize, f: usize, w: &[f64], b: Option<&[f64]>) -> Normed {
    let mut xhat = vec![0.0; n * f];
    let mut inv_std = vec![0.0; n];
    for r in 0..n {
        let row = &x[r * f..(r + 1) * f];
        let mu = row.iter().sum::<f64>() / f as f64;
        let var = row.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / f as f64;
        let is = 1.0 / (var + NORM_EPS).sqrt();
        inv_std[r] = is;
        for j in 0..f {
            xhat[r * f + j] = (row[j] - mu) * is;
        }
    }
    let y = affine(&xhat, n, f, w, b);
    Normed {
        n,
        f,
        axis: Axis::Row,
        y,
        xhat,
        inv_std,
    }
}

/// BatchNorm of `x: [n, f]` over its rows. Train mode computes the batch
/// statistics and updates the running rows `rm`, `rv` (`[f]` each); eval mode
/// uses them. `what` names the norm in the error for `n < 2` in train mode.
#[allow(clippy::too_many_arguments)]
fn batch_norm(
    x: &[f64],
    n: usize,
    f: usize,
    gamma: &[f64],
    beta: Option<&[f64]>,
    train: bool,
    rm: &mut [f64],
    rv: &mut [f64],
    what: &dyn Fn() -> String,
) -> Result<Normed, String> {
    let mut xhat = vec![0.0; n * f];
    let mut inv_std = vec![0.0; f];
    if train {
        if n < 2 {
            return Err(format!(
                "Expected more than 1 value per channel when training, got input size [{n}, {f}] ({})",
                what()
            ));
        }
        for j in 0..f {
            let mu = (0..n).map(|r| x[r * f + j]).sum::<f64>() / n as f64;
            let var = (0..n)
                .map(|r| (x[r * f + j] - mu) * (x[r * f + j] - mu))
                .sum::<f64>()
                / n as f64;
            let is = 1.0 / (var + NORM_EPS).sqrt();
            inv_std[j] = is;
            for r in 0..n {
                xhat[r * f + j] = (x[r * f + j] - mu) * is;
            }
            rm[j] = (1.0 - BN_MOMENTUM) * rm[j] + BN_MOMENTUM * mu;
            rv[j] = (1.0 - BN_MOMENTUM) * rv[j] + BN_MOMENTUM * var * n as f64 / (n - 1) as f64;
        }
    } else {
        for j in 0..f {
            let is = 1.0 / (rv[j] + NORM_EPS).sqrt();
            inv_std[j] = is;
            for r in 0..n {
                xhat[r * f + j] = (x[r * f + j] - rm[j]) * is;
            }
        }
    }
    let y = affine(&xhat, n, f, gamma, beta);
    Ok(Normed {
        n,
        f,
        axis: if train {
            Axis::BatchTrain
        } else {
            Axis::BatchEval
        },
        y,
        xhat,
        inv_std,
    })
}

/// `y = xhat * w + b` per feature.
fn affine(xhat: &[f64], n: usize, f: usize, w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
    let mut y = vec![0.0; n * f];
    for r in 0..n {
        for j in 0..f {
            y[r * f + j] = xhat[r * f + j] * w[j] + b.map_or(0.0, |b| b[j]);
        }
    }
    y
}

/// Backward of a normalization given `dy: [n, f]` and the weight `gamma`.
/// Returns `(dx, dgamma, dbeta)`.
fn norm_backward(nm: &Normed, dy: &[f64], gamma: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (n, f) = (nm.n, nm.f);
    assert_eq!(dy.len(), n * f);
    let mut dgamma = vec![0.0; f];
    let mut dbeta = vec![0.0; f];
    let mut dxhat = vec![0.0; n * f];
    for r in 0..n {
        for j in 0..f {
            let q = r * f + j;
            dgamma[j] += dy[q] * nm.xhat[q];
            dbeta[j] += dy[q];
            dxhat[q] = dy[q] * gamma[j];
        }
    }
    let mut dx = vec![0.0; n * f];
    match nm.axis {
        Axis::Row => {
            for r in 0..n {
                let idx = || (0..f).map(|j| r * f + j);
                let m1 = idx().map(|q| dxhat[q]).sum::<f64>() / f as f64;
                let m2 = idx().map(|q| dxhat[q] * nm.xhat[q]).sum::<f64>() / f as f64;
                for q in idx() {
                    dx[q] = nm.inv_std[r] * (dxhat[q] - m1 - nm.xhat[q] * m2);
                }
            }
        }
        Axis::BatchTrain => {
            for j in 0..f {
                let idx = || (0..n).map(|r| r * f + j);
                let m1 = idx().map(|q| dxhat[q]).sum::<f64>() / n as f64;
                let m2 = idx().map(|q| dxhat[q] * nm.xhat[q]).sum::<f64>() / n as f64;
                for q in idx() {
                    dx[q] = nm.inv_std[j] * (dxhat[q] - m1 - nm.xhat[q] * m2);
                }
            }
        }
        Axis::BatchEval => {
            for r in 0..n {
                for j in 0..f {
                    dx[r * f + j] = dxhat[r * f + j] * nm.inv_std[j];
                }
            }
        }
    }
    (dx, dgamma, dbeta)
}

/// BatchNorm using running-stat row `row` of `{base}.running_mean|running_var`
/// (`[T_max or 1, f]`) from `running`.
#[allow(clippy::too_many_arguments)]
fn batch_norm_running(
    running: &mut NormTensors,
    base: &str,
    row: usize,
    x: &[f64],
    n: usize,
    f: usize,
    gamma: &[f64],
    beta: Option<&[f64]>,
    train: bool,
    what: &dyn Fn() -> String,
) -> Result<Normed, String> {
    let (mk, vk) = (
        format!("{base}.running_mean"),
        format!("{base}.running_var"),
    );
    let mut rm = running.remove(&mk).expect("validated running_mean");
    let mut rv = running.remove(&vk).expect("validated running_var");
    let res = batch_norm(
        x,
        n,
        f,
        gamma,
        beta,
        train,
        &mut rm[row * f..(row + 1) * f],
        &mut rv[row * f..(row + 1) * f],
        what,
    );
    running.insert(mk, rm);
    running.insert(vk, rv);
    res
}

fn acc(map: &mut NormTensors, name: &str, g: &[f64]) {
    let dst = map.get_mut(name).expect("gradient slot of a Param tensor");
    add_assign(dst, g);
}

// ---------------------------------------------------------------------------
// Internals: validation
// ---------------------------------------------------------------------------

/// Validates config, weights and inputs; returns the per-sequence lengths.
fn validate(cfg: &RefConfig, w: &RefWeights, inp: &RefInputs) -> Result<Vec<usize>, String> {
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

/// `batch_norms.{k}.num_batches_tracked` for a normalized layer `k` of variant 3.
fn is_counter(cfg: &RefConfig, norm: RefNorm, key: &str) -> bool {
    matches!(norm, RefNorm::Batch { .. })
        && (0..cfg.num_layers).any(|k| {
            norm.normalizes_layer_output(cfg, k)
                && key == format!("batch_norms.{k}.num_batches_tracked")
        })
}

fn check_norm_tensors(cfg: &RefConfig, norm: RefNorm, nt: &NormTensors) -> Result<(), String> {
    if let RefNorm::StepBatch { t_max: 0, .. } | RefNorm::RecurrentBatch { t_max: 0 } = norm {
        return Err("t_max must be positive".into());
    }
    let shapes = norm_tensor_shapes(cfg, norm);
    for (name, shape, _) in &shapes {
        let n: usize = shape.iter().product();
        match nt.get(name) {
            None => return Err(format!("missing norm tensor `{name}` (shape {shape:?})")),
            Some(v) if v.len() != n => {
                return Err(format!(
                    "norm tensor `{name}` has {} values, expected shape {shape:?}",
                    v.len()
                ));
            }
            Some(_) => {}
        }
    }
    for (key, v) in nt {
        if shapes.iter().any(|(name, _, _)| name == key) {
            continue;
        }
        if is_counter(cfg, norm, key) {
            if v.len() != 1 {
                return Err(format!("`{key}` must be a scalar"));
            }
            continue;
        }
        return Err(format!("unexpected norm tensor `{key}` for {norm:?}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Internals: forward
// ---------------------------------------------------------------------------

/// A set of rows `(t, b)` of a layer output normalized together.
struct Group {
    rows: Vec<(usize, usize)>,
    nm: Normed,
}

/// One layer of a between-layer variant.
struct BetweenLayer {
    /// Input of the layer `[T, B, I_k]`.
    input: Vec<f64>,
    /// Normalization of its output, `None` when not normalized.
    groups: Option<Vec<Group>>,
}

/// One step `s` of one (layer, direction) of a cell variant, over the active
/// sequences `bs` (ascending) at times `ts`.
struct CellStep {
    bs: Vec<usize>,
    ts: Vec<usize>,
    /// Inputs `[n, I_k]`, previous states `[n, H]`.
    x: Vec<f64>,
    h_prev: Vec<f64>,
    /// Activated gates `[n, 4H]`.
    act: Vec<f64>,
    c_prev: Vec<f64>,
    /// Norms of `W_ih x` and `W_hh h` (`[n, 4H]`) and of `c` (`[n, H]`).
    n_ih: Normed,
    n_hh: Normed,
    n_c: Normed,
    /// `tanh(norm_c(c))`, `[n, H]`.
    tanh_n: Vec<f64>,
}

enum Layers {
    Between(Vec<BetweenLayer>),
    /// `[layer][dir][step]`.
    Cell(Vec<Vec<Vec<CellStep>>>),
}

struct Trace {
    lengths: Vec<usize>,
    out: RefOutputs,
    running: NormTensors,
    layers: Layers,
}

fn run_forward(
    cfg: &RefConfig,
    w: &RefWeights,
    norm: RefNorm,
    nt: &NormTensors,
    inp: &RefInputs,
    train: bool,
    links: &RefLinks,
) -> Result<Trace, String> {
    let lengths = validate(cfg, w, inp)?;
    check_norm_tensors(cfg, norm, nt)?;
    links.check(cfg, inp.seq_len, inp.batch)?;
    let train = train && norm.has_batch_stats();
    if train {
        let t_max = match norm {
            RefNorm::StepBatch { t_max, .. } | RefNorm::RecurrentBatch { t_max } => t_max,
            _ => usize::MAX,
        };
        // (A between-layer variant normalizing no layer has no T_max.)
        let first_stat = norm_tensor_shapes(cfg, norm)
            .into_iter()
            .map(|(name, _, _)| name)
            .find(|name| name.ends_with(".running_mean"));
        if let Some(name) = first_stat.filter(|_| inp.seq_len > t_max) {
            return Err(format!(
                "sequence length {} exceeds T_max = {t_max} of `{name}` (train mode)",
                inp.seq_len
            ));
        }
    }
    let running: NormTensors = nt
        .iter()
        .filter(|(k, _)| {
            k.ends_with(".running_mean") || k.ends_with(".running_var") || is_counter(cfg, norm, k)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if norm.is_between_layers() {
        forward_between(cfg, w, norm, nt, inp, train, lengths, running, links)
    } else {
        forward_cells(cfg, w, norm, nt, inp, train, lengths, running, links)
    }
}

/// One-layer configuration, weights and inputs of layer `k` reading `x`.
fn sub_layer(
    cfg: &RefConfig,
    w: &RefWeights,
    inp: &RefInputs,
    k: usize,
    x: Vec<f64>,
    lengths: &[usize],
) -> (RefConfig, RefWeights, RefInputs) {
    let d = cfg.dirs();
    let sl = d * inp.batch * cfg.hidden_size;
    let c1 = RefConfig {
        input_size: cfg.layer_input_size(k),
        hidden_size: cfg.hidden_size,
        num_layers: 1,
        bidirectional: cfg.bidirectional,
        bias: cfg.bias,
    };
    let w1 = RefWeights {
        cells: w.cells[k * d..(k + 1) * d].to_vec(),
    };
    let slice = |s: &Option<Vec<f64>>| s.as_ref().map(|v| v[k * sl..(k + 1) * sl].to_vec());
    let i1 = RefInputs {
        seq_len: inp.seq_len,
        batch: inp.batch,
        x,
        h0: slice(&inp.h0),
        c0: slice(&inp.c0),
        lengths: Some(lengths.to_vec()),
    };
    (c1, w1, i1)
}

/// Gathers rows `(t, b)` of a `[T, B, f]` tensor into `[n, f]`.
fn gather(src: &[f64], rows: &[(usize, usize)], b_len: usize, f: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(rows.len() * f);
    for &(t, b) in rows {
        let o = (t * b_len + b) * f;
        out.extend_from_slice(&src[o..o + f]);
    }
    out
}

/// Scatters `[n, f]` rows back to `(t, b)` positions of a `[T, B, f]` tensor.
fn scatter(dst: &mut [f64], rows: &[(usize, usize)], vals: &[f64], b_len: usize, f: usize) {
    for (r, &(t, b)) in rows.iter().enumerate() {
        let o = (t * b_len + b) * f;
        dst[o..o + f].copy_from_slice(&vals[r * f..(r + 1) * f]);
    }
}

/// Normalization of layer `k`'s raw output `o: [T, B, D*H]` (variants 1, 3, 4).
#[allow(clippy::too_many_arguments)]
fn normalize_between(
    cfg: &RefConfig,
    norm: RefNorm,
    k: usize,
    o: &[f64],
    inp: &RefInputs,
    lengths: &[usize],
    nt: &NormTensors,
    running: &mut NormTensors,
    train: bool,
) -> Result<Vec<Group>, String> {
    let (t_len, b_len) = (inp.seq_len, inp.batch);
    let dh = cfg.dirs() * cfg.hidden_size;
    let p = format!(
        "{}.{k}",
        norm.between_prefix().expect("between-layer variant")
    );
    let gamma = &nt[format!("{p}.weight").as_str()];
    let beta = Some(nt[format!("{p}.bias").as_str()].as_slice());
    let valid_at = |t: usize| -> Vec<(usize, usize)> {
        (0..b_len)
            .filter(|&b| t < lengths[b])
            .map(|b| (t, b))
            .collect()
    };
    let mut groups = Vec::new();
    match norm {
        RefNorm::Layer { .. } => {
            let rows: Vec<_> = (0..t_len).flat_map(valid_at).collect();
            let x = gather(o, &rows, b_len, dh);
            let nm = layer_norm_rows(&x, rows.len(), dh, gamma, beta);
            groups.push(Group { rows, nm });
        }
        RefNorm::Batch { .. } => {
            let rows: Vec<_> = (0..t_len).flat_map(valid_at).collect();
            let x = gather(o, &rows, b_len, dh);
            let what = || format!("{p} over all valid positions");
            let nm = batch_norm_running(
                running,
                &p,
                0,
                &x,
                rows.len(),
                dh,
                gamma,
                beta,
                train,
                &what,
            )?;
            if train && let Some(c) = running.get_mut(&format!("{p}.num_batches_tracked")) {
                c[0] += 1.0;
            }
            groups.push(Group { rows, nm });
        }
        RefNorm::StepBatch { t_max, .. } => {
            for t in 0..t_len {
                let rows = valid_at(t);
                if rows.is_empty() {
                    continue;
                }
                let x = gather(o, &rows, b_len, dh);
                let row = if train { t } else { t.min(t_max - 1) };
                let what = || format!("{p} at time step {t}");
                let nm = batch_norm_running(
                    running,
                    &p,
                    row,
                    &x,
                    rows.len(),
                    dh,
                    gamma,
                    beta,
                    train,
                    &what,
                )?;
                groups.push(Group { rows, nm });
            }
        }
        RefNorm::LayerCell | RefNorm::RecurrentBatch { .. } => unreachable!("cell variant"),
    }
    Ok(groups)
}

#[allow(clippy::too_many_arguments)]
fn forward_between(
    cfg: &RefConfig,
    w: &RefWeights,
    norm: RefNorm,
    nt: &NormTensors,
    inp: &RefInputs,
    train: bool,
    lengths: Vec<usize>,
    mut running: NormTensors,
    links: &RefLinks,
) -> Result<Trace, String> {
    let b_len = inp.batch;
    let dh = cfg.dirs() * cfg.hidden_size;
    let sl = cfg.dirs() * b_len * cfg.hidden_size;
    let mut h_n = vec![0.0; cfg.num_layers * sl];
    let mut c_n = vec![0.0; cfg.num_layers * sl];
    let mut layers = Vec::with_capacity(cfg.num_layers);
    let mut cur = inp.x.clone();
    for k in 0..cfg.num_layers {
        let (c1, w1, i1) = sub_layer(cfg, w, inp, k, cur.clone(), &lengths);
        let o = plain::forward(&c1, &w1, &i1);
        h_n[k * sl..(k + 1) * sl].copy_from_slice(&o.h_n);
        c_n[k * sl..(k + 1) * sl].copy_from_slice(&o.c_n);
        let (next, groups) = if norm.normalizes_layer_output(cfg, k) {
            let groups = normalize_between(
                cfg,
                norm,
                k,
                &o.output,
                inp,
                &lengths,
                nt,
                &mut running,
                train,
            )?;
            // Padded positions stay 0.
            let mut next = vec![0.0; o.output.len()];
            for g in &groups {
                scatter(&mut next, &g.rows, &g.nm.y, b_len, dh);
            }
            (next, Some(groups))
        } else {
            (o.output, None)
        };
        let next = links.forward(k, next, &cur);
        layers.push(BetweenLayer { input: cur, groups });
        cur = next;
    }
    Ok(Trace {
        lengths,
        out: RefOutputs {
            output: cur,
            h_n,
            c_n,
        },
        running,
        layers: Layers::Between(layers),
    })
}

/// Base names (`{base}.weight` ...) of the three norms of cell (k, dir) and
/// whether the `ih`/`hh` norms have a bias.
fn cell_bases(norm: RefNorm, k: usize, dir: usize) -> ([String; 3], bool) {
    let s = dir_suffix(dir);
    let p = if norm == RefNorm::LayerCell {
        "ln"
    } else {
        "bn"
    };
    (
        [
            format!("{p}_ih_l{k}{s}"),
            format!("{p}_hh_l{k}{s}"),
            format!("{p}_c_l{k}{s}"),
        ],
        norm == RefNorm::LayerCell,
    )
}

/// One in-cell normalization of `x: [n, f]` at step `s` (variants 2, 5).
#[allow(clippy::too_many_arguments)]
fn cell_norm(
    norm: RefNorm,
    base: &str,
    has_bias: bool,
    x: &[f64],
    n: usize,
    f: usize,
    s: usize,
    nt: &NormTensors,
    running: &mut NormTensors,
    train: bool,
) -> Result<Normed, String> {
    let gamma = &nt[format!("{base}.weight").as_str()];
    let beta = has_bias.then(|| nt[format!("{base}.bias").as_str()].as_slice());
    match norm {
        RefNorm::LayerCell => Ok(layer_norm_rows(x, n, f, gamma, beta)),
        RefNorm::RecurrentBatch { t_max } => {
            let row = if train { s } else { s.min(t_max - 1) };
            let what = || format!("{base} at step {s}");
            batch_norm_running(running, base, row, x, n, f, gamma, beta, train, &what)
        }
        _ => unreachable!("between-layer variant"),
    }
}

fn state_slice(s: &Option<Vec<f64>>, off: usize, h: usize) -> Vec<f64> {
    match s {
        Some(v) => v[off..off + h].to_vec(),
        None => vec![0.0; h],
    }
}

#[allow(clippy::too_many_arguments)]
fn forward_cells(
    cfg: &RefConfig,
    w: &RefWeights,
    norm: RefNorm,
    nt: &NormTensors,
    inp: &RefInputs,
    train: bool,
    lengths: Vec<usize>,
    mut running: NormTensors,
    links: &RefLinks,
) -> Result<Trace, String> {
    let (t_len, b_len) = (inp.seq_len, inp.batch);
    let h = cfg.hidden_size;
    let d_n = cfg.dirs();
    let dh = d_n * h;
    let state_len = cfg.cells() * b_len * h;
    let max_len = lengths.iter().copied().max().unwrap_or(0);
    let mut h_n = vec![0.0; state_len];
    let mut c_n = vec![0.0; state_len];
    let mut layers = Vec::with_capacity(cfg.num_layers);
    let mut cur = inp.x.clone();
    for k in 0..cfg.num_layers {
        let in_size = cfg.layer_input_size(k);
        let mut out = vec![0.0; t_len * b_len * dh];
        let mut dirs = Vec::with_capacity(d_n);
        for dir in 0..d_n {
            let ci = k * d_n + dir;
            let cw = &w.cells[ci];
            let ([b_ih_n, b_hh_n, b_c_n], gate_bias) = cell_bases(norm, k, dir);
            let mut hs: Vec<Vec<f64>> = (0..b_len)
                .map(|b| state_slice(&inp.h0, (ci * b_len + b) * h, h))
                .collect();
            let mut cs: Vec<Vec<f64>> = (0..b_len)
                .map(|b| state_slice(&inp.c0, (ci * b_len + b) * h, h))
                .collect();
            let mut steps = Vec::with_capacity(max_len);
            for s in 0..max_len {
                let bs: Vec<usize> = (0..b_len).filter(|&b| s < lengths[b]).collect();
                let ts: Vec<usize> = bs
                    .iter()
                    .map(|&b| if dir == 0 { s } else { lengths[b] - 1 - s })
                    .collect();
                let n = bs.len();
                let mut x = Vec::with_capacity(n * in_size);
                let mut h_prev = Vec::with_capacity(n * h);
                let mut c_prev = Vec::with_capacity(n * h);
                for (&b, &t) in bs.iter().zip(&ts) {
                    let o = (t * b_len + b) * in_size;
                    x.extend_from_slice(&cur[o..o + in_size]);
                    h_prev.extend_from_slice(&hs[b]);
                    c_prev.extend_from_slice(&cs[b]);
                }
                let mut a = vec![0.0; n * 4 * h];
                let mut r = vec![0.0; n * 4 * h];
                for row in 0..n {
                    matvec_acc(
                        &mut a[row * 4 * h..(row + 1) * 4 * h],
                        &cw.w_ih,
                        &x[row * in_size..(row + 1) * in_size],
                    );
                    matvec_acc(
                        &mut r[row * 4 * h..(row + 1) * 4 * h],
                        &cw.w_hh,
                        &h_prev[row * h..(row + 1) * h],
                    );
                }
                let n_ih = cell_norm(
                    norm,
                    &b_ih_n,
                    gate_bias,
                    &a,
                    n,
                    4 * h,
                    s,
                    nt,
                    &mut running,
                    train,
                )?;
                let n_hh = cell_norm(
                    norm,
                    &b_hh_n,
                    gate_bias,
                    &r,
                    n,
                    4 * h,
                    s,
                    nt,
                    &mut running,
                    train,
                )?;
                let mut act = vec![0.0; n * 4 * h];
                for row in 0..n {
                    for q in 0..4 * h {
                        let idx = row * 4 * h + q;
                        let mut v = n_ih.y[idx] + n_hh.y[idx];
                        if let Some(b) = &cw.b_ih {
                            v += b[q];
                        }
                        if let Some(b) = &cw.b_hh {
                            v += b[q];
                        }
                        act[idx] = if q / h == 2 { v.tanh() } else { sigmoid(v) };
                    }
                }
                let mut c = vec![0.0; n * h];
                for row in 0..n {
                    let g = &act[row * 4 * h..(row + 1) * 4 * h];
                    for j in 0..h {
                        c[row * h + j] = g[h + j] * c_prev[row * h + j] + g[j] * g[2 * h + j];
                    }
                }
                let n_c = cell_norm(norm, &b_c_n, true, &c, n, h, s, nt, &mut running, train)?;
                let tanh_n: Vec<f64> = n_c.y.iter().map(|v| v.tanh()).collect();
                for (row, (&b, &t)) in bs.iter().zip(&ts).enumerate() {
                    let hv: Vec<f64> = (0..h)
                        .map(|j| act[row * 4 * h + 3 * h + j] * tanh_n[row * h + j])
                        .collect();
                    let o = (t * b_len + b) * dh + dir * h;
                    out[o..o + h].copy_from_slice(&hv);
                    hs[b] = hv;
                    cs[b] = c[row * h..(row + 1) * h].to_vec();
                }
                steps.push(CellStep {
                    bs,
                    ts,
                    x,
                    h_prev,
                    act,
                    c_prev,
                    n_ih,
                    n_hh,
                    n_c,
                    tanh_n,
                });
            }
            for b in 0..b_len {
                let o = (ci * b_len + b) * h;
                h_n[o..o + h].copy_from_slice(&hs[b]);
                c_n[o..o + h].copy_from_slice(&cs[b]);
            }
            dirs.push(steps);
        }
        layers.push(dirs);
        cur = links.forward(k, out, &cur);
    }
    Ok(Trace {
        lengths,
        out: RefOutputs {
            output: cur,
            h_n,
            c_n,
        },
        running,
        layers: Layers::Cell(layers),
    })
}

// ---------------------------------------------------------------------------
// Internals: backward
// ---------------------------------------------------------------------------

fn zero_grads(w: &RefWeights) -> Vec<RefDirWeights> {
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

#[allow(clippy::too_many_arguments)]
fn backward_between(
    cfg: &RefConfig,
    w: &RefWeights,
    norm: RefNorm,
    nt: &NormTensors,
    inp: &RefInputs,
    up: &RefUpstream,
    tr: &Trace,
    layers: &[BetweenLayer],
    ng: &mut NormTensors,
    links: &RefLinks,
) -> RefGrads {
    let b_len = inp.batch;
    let d_n = cfg.dirs();
    let dh = d_n * cfg.hidden_size;
    let sl = d_n * b_len * cfg.hidden_size;
    let mut gh0 = vec![0.0; cfg.num_layers * sl];
    let mut gc0 = vec![0.0; cfg.num_layers * sl];
    let mut cells = zero_grads(w);
    let mut d = up.grad_output.clone();
    for k in (0..cfg.num_layers).rev() {
        // d_next: gradient of y_{k+1}; d: of layer k's (normalized) output.
        let d_next = d;
        d = links.backward(k, &d_next);
        if let Some(groups) = &layers[k].groups {
            let p = format!(
                "{}.{k}",
                norm.between_prefix().expect("between-layer variant")
            );
            let gamma = &nt[format!("{p}.weight").as_str()];
            // Padded positions of a normalized output are constant 0.
            let mut nd = vec![0.0; d.len()];
            for g in groups {
                let dy = gather(&d, &g.rows, b_len, dh);
                let (dx, dgamma, dbeta) = norm_backward(&g.nm, &dy, gamma);
                scatter(&mut nd, &g.rows, &dx, b_len, dh);
                acc(ng, &format!("{p}.weight"), &dgamma);
                acc(ng, &format!("{p}.bias"), &dbeta);
            }
            d = nd;
        }
        let (c1, w1, i1) = sub_layer(cfg, w, inp, k, layers[k].input.clone(), &tr.lengths);
        let up1 = RefUpstream {
            grad_output: d,
            grad_h_n: up.grad_h_n[k * sl..(k + 1) * sl].to_vec(),
            grad_c_n: up.grad_c_n[k * sl..(k + 1) * sl].to_vec(),
        };
        let (_, g1) = plain::backward(&c1, &w1, &i1, &up1);
        gh0[k * sl..(k + 1) * sl].copy_from_slice(&g1.h0);
        gc0[k * sl..(k + 1) * sl].copy_from_slice(&g1.c0);
        for (dir, gc) in g1.weights.cells.into_iter().enumerate() {
            cells[k * d_n + dir] = gc;
        }
        d = g1.input;
        if links.skips(k) {
            add_assign(&mut d, &d_next);
        }
    }
    RefGrads {
        input: d,
        h0: gh0,
        c0: gc0,
        weights: RefWeights { cells },
    }
}

#[allow(clippy::too_many_arguments)]
fn backward_cells(
    cfg: &RefConfig,
    w: &RefWeights,
    norm: RefNorm,
    nt: &NormTensors,
    inp: &RefInputs,
    up: &RefUpstream,
    layers: &[Vec<Vec<CellStep>>],
    ng: &mut NormTensors,
    links: &RefLinks,
) -> RefGrads {
    let (t_len, b_len) = (inp.seq_len, inp.batch);
    let h = cfg.hidden_size;
    let d_n = cfg.dirs();
    let dh_w = d_n * h;
    let state_len = cfg.cells() * b_len * h;
    let mut gh0 = vec![0.0; state_len];
    let mut gc0 = vec![0.0; state_len];
    let mut cells = zero_grads(w);
    // Gradient w.r.t. the current layer's output [T, B, D*H].
    let mut d_out = up.grad_output.clone();
    let mut d_in = Vec::new();
    for k in (0..cfg.num_layers).rev() {
        let d_next = std::mem::take(&mut d_out);
        d_out = links.backward(k, &d_next);
        let in_size = cfg.layer_input_size(k);
        d_in = vec![0.0; t_len * b_len * in_size];
        for (dir, steps) in layers[k].iter().enumerate() {
            let ci = k * d_n + dir;
            let cw = &w.cells[ci];
            let gw = &mut cells[ci];
            let ([b_ih_n, b_hh_n, b_c_n], gate_bias) = cell_bases(norm, k, dir);
            let gamma = |base: &str| &nt[format!("{base}.weight").as_str()];
            let mut dh: Vec<Vec<f64>> = (0..b_len)
                .map(|b| up.grad_h_n[(ci * b_len + b) * h..(ci * b_len + b + 1) * h].to_vec())
                .collect();
            let mut dc: Vec<Vec<f64>> = (0..b_len)
                .map(|b| up.grad_c_n[(ci * b_len + b) * h..(ci * b_len + b + 1) * h].to_vec())
                .collect();
            for st in steps.iter().rev() {
                let n = st.bs.len();
                // Total gradient w.r.t. h_t: recurrent + this step's output.
                let mut dh_rows = vec![0.0; n * h];
                let mut dc_rows = vec![0.0; n * h];
                for (row, (&b, &t)) in st.bs.iter().zip(&st.ts).enumerate() {
                    let o = (t * b_len + b) * dh_w + dir * h;
                    for j in 0..h {
                        dh_rows[row * h + j] = dh[b][j] + d_out[o + j];
                        dc_rows[row * h + j] = dc[b][j];
                    }
                }
                // h = o * tanh(n), n = norm_c(c).
                let mut d_n_c = vec![0.0; n * h];
                let mut d_o = vec![0.0; n * h];
                for row in 0..n {
                    for j in 0..h {
                        let q = row * h + j;
                        let tn = st.tanh_n[q];
                        let o = st.act[row * 4 * h + 3 * h + j];
                        d_o[q] = dh_rows[q] * tn;
                        d_n_c[q] = dh_rows[q] * o * (1.0 - tn * tn);
                    }
                }
                let (dcx, dgc, dbc) = norm_backward(&st.n_c, &d_n_c, gamma(&b_c_n));
                acc(ng, &format!("{b_c_n}.weight"), &dgc);
                acc(ng, &format!("{b_c_n}.bias"), &dbc);
                // c = f * c_prev + i * g.
                let mut dgates = vec![0.0; n * 4 * h];
                let mut dc_prev = vec![0.0; n * h];
                for row in 0..n {
                    let a = &st.act[row * 4 * h..(row + 1) * 4 * h];
                    let dg = &mut dgates[row * 4 * h..(row + 1) * 4 * h];
                    for j in 0..h {
                        let q = row * h + j;
                        let (i, f, g, o) = (a[j], a[h + j], a[2 * h + j], a[3 * h + j]);
                        let dct = dc_rows[q] + dcx[q];
                        dg[j] = dct * g * i * (1.0 - i);
                        dg[h + j] = dct * st.c_prev[q] * f * (1.0 - f);
                        dg[2 * h + j] = dct * i * (1.0 - g * g);
                        dg[3 * h + j] = d_o[q] * o * (1.0 - o);
                        dc_prev[q] = dct * f;
                    }
                }
                for row in 0..n {
                    let dg = &dgates[row * 4 * h..(row + 1) * 4 * h];
                    if let Some(gb) = gw.b_ih.as_mut() {
                        add_assign(gb, dg);
                    }
                    if let Some(gb) = gw.b_hh.as_mut() {
                        add_assign(gb, dg);
                    }
                }
                let (da, dgi, dbi) = norm_backward(&st.n_ih, &dgates, gamma(&b_ih_n));
                acc(ng, &format!("{b_ih_n}.weight"), &dgi);
                let (dr, dgh, dbh) = norm_backward(&st.n_hh, &dgates, gamma(&b_hh_n));
                acc(ng, &format!("{b_hh_n}.weight"), &dgh);
                if gate_bias {
                    acc(ng, &format!("{b_ih_n}.bias"), &dbi);
                    acc(ng, &format!("{b_hh_n}.bias"), &dbh);
                }
                for (row, (&b, &t)) in st.bs.iter().zip(&st.ts).enumerate() {
                    let da_r = &da[row * 4 * h..(row + 1) * 4 * h];
                    let dr_r = &dr[row * 4 * h..(row + 1) * 4 * h];
                    outer_acc(
                        &mut gw.w_ih,
                        da_r,
                        &st.x[row * in_size..(row + 1) * in_size],
                    );
                    outer_acc(&mut gw.w_hh, dr_r, &st.h_prev[row * h..(row + 1) * h]);
                    let o = (t * b_len + b) * in_size;
                    matvec_t_acc(&mut d_in[o..o + in_size], &cw.w_ih, da_r);
                    dh[b].fill(0.0);
                    matvec_t_acc(&mut dh[b], &cw.w_hh, dr_r);
                    dc[b].copy_from_slice(&dc_prev[row * h..(row + 1) * h]);
                }
            }
            for b in 0..b_len {
                let o = (ci * b_len + b) * h;
                gh0[o..o + h].copy_from_slice(&dh[b]);
                gc0[o..o + h].copy_from_slice(&dc[b]);
            }
        }
        if links.skips(k) {
            add_assign(&mut d_in, &d_next);
        }
        if k > 0 {
            d_out = std::mem::take(&mut d_in);
        }
    }
    RefGrads {
        input: d_in,
        h0: gh0,
        c0: gc0,
        weights: RefWeights { cells },
    }
}

// ---------------------------------------------------------------------------
// Internals: small linear algebra (private copies of the plain reference's)
// ---------------------------------------------------------------------------

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
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
    use crate::{backward, forward, loss, random_weights};

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
        worst_what: String,
        count: usize,
        /// Entries that needed the Richardson extrapolation.
        extrapolated: usize,
    }

    const TOL: f64 = 1e-6;

    impl Checker {
        fn new() -> Self {
            Checker {
                worst: 0.0,
                worst_what: String::new(),
                count: 0,
                extrapolated: 0,
            }
        }

        /// Mixed relative error (absolute below 1e-2).
        fn rel(analytic: f64, numeric: f64) -> f64 {
            (analytic - numeric).abs() / analytic.abs().max(numeric.abs()).max(1e-2)
        }

        fn check(&mut self, what: &dyn Fn() -> String, analytic: f64, numeric: f64) {
            let err = Self::rel(analytic, numeric);
            assert!(
                err < TOL,
                "{}: analytic {analytic:e} vs numeric {numeric:e} (rel err {err:e})",
                what()
            );
            if err > self.worst {
                self.worst = err;
                self.worst_what = what();
            }
            self.count += 1;
        }
    }

    const EPS: f64 = 1e-6;

    /// Central difference with step `h` of the loss w.r.t. `get(state)[k]`.
    fn central<S: Clone>(
        base: &S,
        k: usize,
        h: f64,
        get: &impl Fn(&mut S) -> &mut Vec<f64>,
        eval: &impl Fn(&S) -> f64,
    ) -> f64 {
        let mut s = base.clone();
        let v = get(&mut s)[k];
        get(&mut s)[k] = v + h;
        let lp = eval(&s);
        get(&mut s)[k] = v - h;
        let lm = eval(&s);
        (lp - lm) / (2.0 * h)
    }

    /// Central difference of the loss w.r.t. `get(state)[k]` (step `EPS`).
    fn fd<S: Clone>(
        base: &S,
        k: usize,
        get: impl Fn(&mut S) -> &mut Vec<f64>,
        eval: impl Fn(&S) -> f64,
    ) -> f64 {
        central(base, k, EPS, &get, &eval)
    }

    /// Checks `analytic` against the central difference with step `EPS`; where
    /// they differ by more than `TOL/10`, also against the Richardson
    /// extrapolation of the steps `EPS/2` and `EPS/4` (truncation error O(EPS⁴)
    /// instead of O(EPS²)) and keeps the closer of the two. This matters
    /// where a norm sees a constant vector, e.g. `LN(W_hh · 0)` at the first
    /// step without `h0`: the gradient carries a `1/sqrt(eps)` factor and the
    /// plain central difference is off by ~1e-4 relative (converging as EPS²).
    #[allow(clippy::too_many_arguments)]
    fn fd_cmp<S: Clone>(
        chk: &mut Checker,
        what: &dyn Fn() -> String,
        analytic: f64,
        base: &S,
        k: usize,
        get: impl Fn(&mut S) -> &mut Vec<f64>,
        eval: impl Fn(&S) -> f64,
    ) {
        let d1 = central(base, k, EPS, &get, &eval);
        if Checker::rel(analytic, d1) < 0.1 * TOL {
            chk.check(what, analytic, d1);
            return;
        }
        let d2 = central(base, k, 0.5 * EPS, &get, &eval);
        let d4 = central(base, k, 0.25 * EPS, &get, &eval);
        let extrapolated = (4.0 * d4 - d2) / 3.0;
        // Rounding noise grows as the step shrinks, truncation error falls:
        // keep whichever estimate is closer (both must be far off to fail).
        if Checker::rel(analytic, extrapolated) < Checker::rel(analytic, d1) {
            chk.extrapolated += 1;
            chk.check(what, analytic, extrapolated);
        } else {
            chk.check(what, analytic, d1);
        }
    }

    struct Case {
        c: RefConfig,
        norm: RefNorm,
        train: bool,
        t: usize,
        b: usize,
        with_state: bool,
        lengths: Option<Vec<usize>>,
        seed: u64,
        links: RefLinks,
    }

    /// Finite differences of every gradient of one case.
    fn fd_check(case: &Case, chk: &mut Checker) {
        let Case {
            ref c,
            norm,
            train,
            t,
            b,
            with_state,
            ref lengths,
            seed,
            ref links,
        } = *case;
        let mut rng = Rng::new(seed);
        let w = random_weights(c, &mut rng);
        let nt = random_norm_tensors(c, norm, &mut rng);
        let inp = make_inputs(c, &mut rng, t, b, with_state, lengths.clone());
        let up = make_upstream(c, &mut rng, t, b);
        let (run, g) = backward_norm_links(c, &w, norm, &nt, &inp, &up, train, links).unwrap();
        let fwd = forward_norm_links(c, &w, norm, &nt, &inp, train, links).unwrap();
        assert_eq!(run.out.output, fwd.out.output);
        assert_eq!(run.out.h_n, fwd.out.h_n);
        assert_eq!(run.out.c_n, fwd.out.c_n);
        assert_eq!(run.running, fwd.running);
        let tag = format!(
            "{norm:?} train={train} L={} D={} bias={} state={with_state} T={t} B={b} lengths={lengths:?} \
             dropout={} ({} masks) residual={}",
            c.num_layers,
            c.dirs(),
            c.bias,
            links.dropout,
            links.keep.len(),
            links.residual
        );

        // Padded outputs are exactly zero.
        let lens = lengths.clone().unwrap_or(vec![t; b]);
        let ow = c.dirs() * c.hidden_size;
        for tt in 0..t {
            for (bb, &len) in lens.iter().enumerate() {
                let row = &run.out.output[(tt * b + bb) * ow..(tt * b + bb + 1) * ow];
                if tt >= len {
                    assert!(
                        row.iter().all(|&v| v == 0.0),
                        "{tag}: padded output t={tt} b={bb}"
                    );
                }
            }
        }

        // Input gradient; exactly zero at padded positions.
        let fwd_out = |w: &RefWeights, nt: &NormTensors, inp: &RefInputs| {
            forward_norm_links(c, w, norm, nt, inp, train, links)
                .unwrap()
                .out
        };
        let eval_in = |s: &RefInputs| loss(&fwd_out(&w, &nt, s), &up);
        assert_eq!(g.grads.input.len(), inp.x.len());
        for k in 0..inp.x.len() {
            let (tt, bb) = (k / (b * c.input_size), (k / c.input_size) % b);
            if tt >= lens[bb] {
                let num = fd(&inp, k, |s| &mut s.x, eval_in);
                assert_eq!(g.grads.input[k], 0.0, "{tag}: padded input grad {k}");
                assert_eq!(num, 0.0, "{tag}: padded input numeric grad {k}");
            } else {
                let what = || format!("{tag}: input[{k}]");
                fd_cmp(chk, &what, g.grads.input[k], &inp, k, |s| &mut s.x, eval_in);
            }
        }

        // Initial states (w.r.t. zeros when h0/c0 are absent).
        let sl = state_len(c, b);
        let mut inp_s = inp.clone();
        inp_s.h0.get_or_insert_with(|| vec![0.0; sl]);
        inp_s.c0.get_or_insert_with(|| vec![0.0; sl]);
        assert_eq!(g.grads.h0.len(), sl);
        assert_eq!(g.grads.c0.len(), sl);
        for k in 0..sl {
            let what = || format!("{tag}: h0[{k}]");
            fd_cmp(
                chk,
                &what,
                g.grads.h0[k],
                &inp_s,
                k,
                |s| s.h0.as_mut().unwrap(),
                eval_in,
            );
            let what = || format!("{tag}: c0[{k}]");
            fd_cmp(
                chk,
                &what,
                g.grads.c0[k],
                &inp_s,
                k,
                |s| s.c0.as_mut().unwrap(),
                eval_in,
            );
        }

        // LSTM weights.
        let eval_w = |s: &RefWeights| loss(&fwd_out(s, &nt, &inp), &up);
        assert_eq!(g.grads.weights.cells.len(), w.cells.len());
        for (ci, gc) in g.grads.weights.cells.iter().enumerate() {
            assert_eq!(gc.b_ih.is_some(), c.bias);
            assert_eq!(gc.b_hh.is_some(), c.bias);
            for k in 0..gc.w_ih.len() {
                let what = || format!("{tag}: cell {ci} w_ih[{k}]");
                fd_cmp(
                    chk,
                    &what,
                    gc.w_ih[k],
                    &w,
                    k,
                    |s| &mut s.cells[ci].w_ih,
                    eval_w,
                );
            }
            for k in 0..gc.w_hh.len() {
                let what = || format!("{tag}: cell {ci} w_hh[{k}]");
                fd_cmp(
                    chk,
                    &what,
                    gc.w_hh[k],
                    &w,
                    k,
                    |s| &mut s.cells[ci].w_hh,
                    eval_w,
                );
            }
            if let (Some(gbi), Some(gbh)) = (&gc.b_ih, &gc.b_hh) {
                assert_eq!(gbi, gbh, "{tag}: b_ih and b_hh grads must match");
                for k in 0..gbi.len() {
                    let what = || format!("{tag}: cell {ci} b_ih[{k}]");
                    fd_cmp(
                        chk,
                        &what,
                        gbi[k],
                        &w,
                        k,
                        |s| s.cells[ci].b_ih.as_mut().unwrap(),
                        eval_w,
                    );
                    let what = || format!("{tag}: cell {ci} b_hh[{k}]");
                    fd_cmp(
                        chk,
                        &what,
                        gbh[k],
                        &w,
                        k,
                        |s| s.cells[ci].b_hh.as_mut().unwrap(),
                        eval_w,
                    );
                }
            }
        }

        // Norm tensors: every Param has a gradient, running stats have none.
        let eval_nt = |s: &NormTensors| loss(&fwd_out(&w, s, &inp), &up);
        let shapes = norm_tensor_shapes(c, norm);
        let params: Vec<_> = shapes
            .iter()
            .filter(|(_, _, kind)| *kind == TensorKind::Param)
            .collect();
        assert_eq!(g.norm.len(), params.len(), "{tag}: norm grad count");
        for (name, shape, _) in params {
            let gv = &g.norm[name];
            assert_eq!(gv.len(), shape.iter().product::<usize>());
            for (k, &gk) in gv.iter().enumerate() {
                let what = || format!("{tag}: {name}[{k}]");
                fd_cmp(
                    chk,
                    &what,
                    gk,
                    &nt,
                    k,
                    |s| s.get_mut(name).unwrap(),
                    eval_nt,
                );
            }
        }
    }

    /// Grid of finite-difference cases for one variant/mode; `mk(last, train)`
    /// builds the variant.
    fn grid(mk: impl Fn(bool, bool) -> RefNorm, train: bool, seed0: u64) {
        let probe = mk(true, train);
        let bn_train = train && probe.has_batch_stats();
        // Every time step / step has >= 2 valid sequences (or none) in BN train mode.
        let length_sets: Vec<Option<Vec<usize>>> = if bn_train {
            vec![Some(vec![5, 3, 5]), None, Some(vec![4, 4, 2])]
        } else {
            vec![
                Some(vec![5, 2, 4]),
                None,
                Some(vec![1, 5, 3]),
                Some(vec![4, 2, 4]),
            ]
        };
        // (bias, state, last)
        let combos = [
            (true, true, true),
            (false, false, false),
            (true, false, false),
            (false, true, true),
        ];
        let mut chk = Checker::new();
        let mut q = 0;
        let mut cases = Vec::new();
        for layers in [1, 2] {
            for bidir in [false, true] {
                let j = 2 * (layers - 1) + bidir as usize;
                for &(bias, with_state, last) in &combos[2 * (j % 2)..2 * (j % 2) + 2] {
                    cases.push(Case {
                        c: cfg(2, 3, layers, bidir, bias),
                        norm: mk(last, train),
                        train,
                        t: 5,
                        b: 3,
                        with_state,
                        lengths: length_sets[q % length_sets.len()].clone(),
                        seed: seed0 + q as u64,
                        links: RefLinks::default(),
                    });
                    q += 1;
                }
            }
        }
        cases.push(Case {
            c: cfg(2, 3, 3, true, true),
            norm: mk(true, train),
            train,
            t: 5,
            b: 3,
            with_state: true,
            lengths: length_sets[0].clone(),
            seed: seed0 + 100,
            links: RefLinks::default(),
        });
        for case in &cases {
            fd_check(case, &mut chk);
        }
        eprintln!(
            "{probe:?} train={train}: {} cases, {} entries ({} extrapolated), worst relative error {:e} at {}",
            cases.len(),
            chk.count,
            chk.extrapolated,
            chk.worst,
            chk.worst_what
        );
    }

    /// Dropout and residual links: with LayerNorm between layers (the last
    /// included), with the LayerNorm cell, with BatchNorm in train mode, and
    /// with eval-mode links (residual only). Masks are the GPU's.
    #[test]
    fn fd_links() {
        let step = DropoutStep {
            seed: 0x1234_5678_9abc,
            counter: 7,
        };
        let mut chk = Checker::new();
        let mut cases = Vec::new();
        // (layers, bidir, norm, train, p, residual, lengths)
        type Spec = (usize, bool, RefNorm, bool, f32, bool, Option<Vec<usize>>);
        let specs: [Spec; 6] = [
            (
                3,
                true,
                RefNorm::Layer { last: true },
                true,
                0.3,
                true,
                Some(vec![5, 2, 4]),
            ),
            (
                3,
                false,
                RefNorm::Layer { last: false },
                true,
                0.5,
                false,
                None,
            ),
            (
                2,
                false,
                RefNorm::Layer { last: true },
                false,
                0.4,
                true,
                Some(vec![1, 5, 3]),
            ),
            (
                3,
                true,
                RefNorm::LayerCell,
                true,
                0.25,
                true,
                Some(vec![4, 2, 4]),
            ),
            (
                2,
                true,
                RefNorm::Batch { last: true },
                true,
                0.3,
                true,
                Some(vec![5, 3, 5]),
            ),
            (
                3,
                false,
                RefNorm::StepBatch {
                    last: false,
                    t_max: 6,
                },
                true,
                0.2,
                true,
                None,
            ),
        ];
        for (q, (layers, bidir, norm, drop_on, p, residual, lengths)) in
            specs.into_iter().enumerate()
        {
            let c = cfg(2, 3, layers, bidir, q % 2 == 0);
            let links = ref_links(&c, 5, 3, p, residual, drop_on.then_some(&step)).unwrap();
            assert_eq!(links.keep.len(), if drop_on { layers - 1 } else { 0 });
            cases.push(Case {
                c,
                norm,
                train: true,
                t: 5,
                b: 3,
                with_state: q % 3 != 1,
                lengths,
                seed: 7000 + q as u64,
                links,
            });
        }
        for case in &cases {
            fd_check(case, &mut chk);
        }
        eprintln!(
            "links: {} cases, {} entries ({} extrapolated), worst relative error {:e} at {}",
            cases.len(),
            chk.count,
            chk.extrapolated,
            chk.worst,
            chk.worst_what
        );
    }

    /// The masks drop about p of the elements and differ between layers
    /// and steps; links change the output exactly where they should.
    #[test]
    fn links_masks_and_effect() {
        let c = cfg(2, 4, 3, true, true);
        let step = DropoutStep {
            seed: 99,
            counter: 3,
        };
        let links = ref_links(&c, 6, 5, 0.5, false, Some(&step)).unwrap();
        let n = 6 * 5 * 8;
        for m in &links.keep {
            let kept = m.iter().filter(|&&k| k).count();
            assert!((n * 3 / 10..n * 7 / 10).contains(&kept), "{kept} of {n}");
        }
        assert_ne!(links.keep[0], links.keep[1], "streams differ per layer");
        let other = DropoutStep { counter: 4, ..step };
        let l2 = ref_links(&c, 6, 5, 0.5, false, Some(&other)).unwrap();
        assert_ne!(links.keep[0], l2.keep[0], "counters differ");
        assert!(ref_links(&c, 6, 5, 1.0, false, Some(&step)).is_err());
        let bad = RefLinks {
            keep: vec![vec![true; n]],
            ..links.clone()
        };
        assert!(bad.check(&c, 6, 5).is_err(), "one mask for 3 layers");
        // Residual with identity links: y_{l+1} = h_l + y_l.
        let mut rng = Rng::new(5);
        let w = random_weights(&c, &mut rng);
        let norm = RefNorm::Layer { last: false };
        let nt = random_norm_tensors(&c, norm, &mut rng);
        let inp = make_inputs(&c, &mut rng, 6, 5, true, Some(vec![6, 2, 4, 1, 5]));
        let plain = forward_norm(&c, &w, norm, &nt, &inp, true).unwrap();
        let eval = ref_links(&c, 6, 5, 0.5, false, None).unwrap();
        let same = forward_norm_links(&c, &w, norm, &nt, &inp, true, &eval).unwrap();
        assert_eq!(
            plain.out.output, same.out.output,
            "eval-mode dropout is identity"
        );
        let dropped = forward_norm_links(&c, &w, norm, &nt, &inp, true, &links).unwrap();
        assert_ne!(plain.out.output, dropped.out.output);
        // Layer 0's states do not see any link.
        let sl = 2 * 5 * 4;
        assert_eq!(plain.out.h_n[..sl], dropped.out.h_n[..sl]);
        assert_ne!(plain.out.h_n[sl..], dropped.out.h_n[sl..]);
    }

    #[test]
    fn fd_layer() {
        grid(|last, _| RefNorm::Layer { last }, true, 1000);
    }

    #[test]
    fn fd_layer_cell() {
        grid(|_, _| RefNorm::LayerCell, true, 2000);
    }

    #[test]
    fn fd_batch_train() {
        grid(|last, _| RefNorm::Batch { last }, true, 3000);
    }

    #[test]
    fn fd_batch_eval() {
        grid(|last, _| RefNorm::Batch { last }, false, 4000);
    }

    #[test]
    fn fd_step_batch_train() {
        grid(|last, _| RefNorm::StepBatch { last, t_max: 5 }, true, 5000);
    }

    /// Eval with T_max < T exercises the `min(t, T_max - 1)` rows.
    #[test]
    fn fd_step_batch_eval() {
        grid(|last, _| RefNorm::StepBatch { last, t_max: 3 }, false, 6000);
    }

    #[test]
    fn fd_recurrent_batch_train() {
        grid(|_, _| RefNorm::RecurrentBatch { t_max: 6 }, true, 7000);
    }

    #[test]
    fn fd_recurrent_batch_eval() {
        grid(|_, _| RefNorm::RecurrentBatch { t_max: 2 }, false, 8000);
    }

    fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: length");
        for (k, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol, "{what}[{k}]: {x} vs {y}");
        }
    }

    #[test]
    fn tensor_shapes_order_and_random_ranges() {
        use TensorKind::{Param as P, RunningStat as R};
        let c = cfg(2, 3, 2, true, true);
        let names =
            |norm| -> Vec<(String, Vec<usize>, TensorKind)> { norm_tensor_shapes(&c, norm) };
        let e = |n: &str, s: &[usize], k| (n.to_string(), s.to_vec(), k);
        assert_eq!(
            names(RefNorm::Layer { last: false }),
            vec![
                e("layer_norms.0.weight", &[6], P),
                e("layer_norms.0.bias", &[6], P)
            ]
        );
        assert_eq!(names(RefNorm::Layer { last: true }).len(), 4);
        assert_eq!(
            names(RefNorm::Layer { last: true })[2].0,
            "layer_norms.1.weight"
        );
        assert_eq!(
            names(RefNorm::Batch { last: true }),
            vec![
                e("batch_norms.0.weight", &[6], P),
                e("batch_norms.0.bias", &[6], P),
                e("batch_norms.0.running_mean", &[6], R),
                e("batch_norms.0.running_var", &[6], R),
                e("batch_norms.1.weight", &[6], P),
                e("batch_norms.1.bias", &[6], P),
                e("batch_norms.1.running_mean", &[6], R),
                e("batch_norms.1.running_var", &[6], R),
            ]
        );
        assert_eq!(
            names(RefNorm::StepBatch {
                last: false,
                t_max: 7
            }),
            vec![
                e("step_norms.0.weight", &[6], P),
                e("step_norms.0.bias", &[6], P),
                e("step_norms.0.running_mean", &[7, 6], R),
                e("step_norms.0.running_var", &[7, 6], R),
            ]
        );
        let lc = names(RefNorm::LayerCell);
        assert_eq!(lc.len(), 2 * 2 * 6);
        assert_eq!(
            lc[..7].to_vec(),
            vec![
                e("ln_ih_l0.weight", &[12], P),
                e("ln_ih_l0.bias", &[12], P),
                e("ln_hh_l0.weight", &[12], P),
                e("ln_hh_l0.bias", &[12], P),
                e("ln_c_l0.weight", &[3], P),
                e("ln_c_l0.bias", &[3], P),
                e("ln_ih_l0_reverse.weight", &[12], P),
            ]
        );
        assert_eq!(lc[12].0, "ln_ih_l1.weight");
        let rb = names(RefNorm::RecurrentBatch { t_max: 4 });
        assert_eq!(rb.len(), 2 * 2 * 10);
        assert_eq!(
            rb[..11].to_vec(),
            vec![
                e("bn_ih_l0.weight", &[12], P),
                e("bn_ih_l0.running_mean", &[4, 12], R),
                e("bn_ih_l0.running_var", &[4, 12], R),
                e("bn_hh_l0.weight", &[12], P),
                e("bn_hh_l0.running_mean", &[4, 12], R),
                e("bn_hh_l0.running_var", &[4, 12], R),
                e("bn_c_l0.weight", &[3], P),
                e("bn_c_l0.bias", &[3], P),
                e("bn_c_l0.running_mean", &[4, 3], R),
                e("bn_c_l0.running_var", &[4, 3], R),
                e("bn_ih_l0_reverse.weight", &[12], P),
            ]
        );
        assert_eq!(rb[20].0, "bn_ih_l1.weight");

        let mut rng = Rng::new(3);
        for norm in [
            RefNorm::Batch { last: true },
            RefNorm::StepBatch {
                last: true,
                t_max: 3,
            },
            RefNorm::LayerCell,
            RefNorm::RecurrentBatch { t_max: 3 },
        ] {
            let nt = random_norm_tensors(&c, norm, &mut rng);
            assert_eq!(nt.len(), norm_tensor_shapes(&c, norm).len());
            for (name, v) in &nt {
                let (lo, hi) = if name.ends_with(".weight") {
                    if matches!(norm, RefNorm::RecurrentBatch { .. }) {
                        (0.05, 0.2)
                    } else {
                        (0.5, 1.5)
                    }
                } else if name.ends_with(".bias") {
                    (-0.5, 0.5)
                } else if name.ends_with(".running_mean") {
                    (-0.2, 0.2)
                } else {
                    (0.5, 1.5)
                };
                assert!(v.iter().all(|x| (lo..hi).contains(x)), "{name}");
            }
        }
    }

    /// Valid `(t, b)` rows in time-major order.
    fn valid_rows(lengths: &[usize], t_len: usize) -> Vec<(usize, usize)> {
        (0..t_len)
            .flat_map(|t| {
                (0..lengths.len())
                    .filter(move |&b| t < lengths[b])
                    .map(move |b| (t, b))
            })
            .collect()
    }

    /// Direct per-feature mean and biased variance of `[n, f]` rows.
    fn stats(rows: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
        let n = rows.len() as f64;
        let f = rows[0].len();
        let mean: Vec<f64> = (0..f)
            .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
            .collect();
        let var = (0..f)
            .map(|j| rows.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n)
            .collect();
        (mean, var)
    }

    #[test]
    fn batch_running_stats_and_output_match_direct_computation() {
        for bidir in [false, true] {
            let c = cfg(2, 3, 1, bidir, true);
            let norm = RefNorm::Batch { last: true };
            let mut rng = Rng::new(40 + bidir as u64);
            let w = random_weights(&c, &mut rng);
            let mut nt = random_norm_tensors(&c, norm, &mut rng);
            nt.insert("batch_norms.0.num_batches_tracked".into(), vec![7.0]);
            let lengths = vec![5, 1, 4];
            let (t_len, b_len) = (5, 3);
            let inp = make_inputs(&c, &mut rng, t_len, b_len, true, Some(lengths.clone()));
            let raw = forward(&c, &w, &inp).output;
            let dh = c.dirs() * 3;
            let rows = valid_rows(&lengths, t_len);
            assert_eq!(rows.len(), 10);
            let xs: Vec<Vec<f64>> = rows
                .iter()
                .map(|&(t, b)| raw[(t * b_len + b) * dh..(t * b_len + b + 1) * dh].to_vec())
                .collect();
            let (mu, var) = stats(&xs);
            let n = xs.len() as f64;
            let (g, be) = (&nt["batch_norms.0.weight"], &nt["batch_norms.0.bias"]);
            let (rm0, rv0) = (
                &nt["batch_norms.0.running_mean"],
                &nt["batch_norms.0.running_var"],
            );

            let run = forward_norm(&c, &w, norm, &nt, &inp, true).unwrap();
            let exp_m: Vec<f64> = (0..dh).map(|j| 0.9 * rm0[j] + 0.1 * mu[j]).collect();
            let exp_v: Vec<f64> = (0..dh)
                .map(|j| 0.9 * rv0[j] + 0.1 * var[j] * n / (n - 1.0))
                .collect();
            assert_close(
                &run.running["batch_norms.0.running_mean"],
                &exp_m,
                1e-14,
                "running_mean",
            );
            assert_close(
                &run.running["batch_norms.0.running_var"],
                &exp_v,
                1e-14,
                "running_var",
            );
            assert_eq!(run.running["batch_norms.0.num_batches_tracked"], vec![8.0]);
            assert_eq!(run.running.len(), 3);
            let mut exp_out = vec![0.0; raw.len()];
            for (r, &(t, b)) in rows.iter().enumerate() {
                for j in 0..dh {
                    exp_out[(t * b_len + b) * dh + j] =
                        (xs[r][j] - mu[j]) / (var[j] + 1e-5).sqrt() * g[j] + be[j];
                }
            }
            assert_close(&run.out.output, &exp_out, 1e-12, "train output");
            // h_n / c_n are the raw LSTM states.
            let plain_out = forward(&c, &w, &inp);
            assert_eq!(run.out.h_n, plain_out.h_n);
            assert_eq!(run.out.c_n, plain_out.c_n);

            // Eval: running stats unchanged, output from them.
            let ev = forward_norm(&c, &w, norm, &nt, &inp, false).unwrap();
            assert_eq!(ev.running["batch_norms.0.running_mean"], *rm0);
            assert_eq!(ev.running["batch_norms.0.running_var"], *rv0);
            assert_eq!(ev.running["batch_norms.0.num_batches_tracked"], vec![7.0]);
            let mut exp_ev = vec![0.0; raw.len()];
            for (r, &(t, b)) in rows.iter().enumerate() {
                for j in 0..dh {
                    exp_ev[(t * b_len + b) * dh + j] =
                        (xs[r][j] - rm0[j]) / (rv0[j] + 1e-5).sqrt() * g[j] + be[j];
                }
            }
            assert_close(&ev.out.output, &exp_ev, 1e-12, "eval output");
        }
    }

    #[test]
    fn step_batch_running_stats_match_direct_computation() {
        let c = cfg(2, 3, 1, true, true);
        let norm = RefNorm::StepBatch {
            last: true,
            t_max: 7,
        };
        let mut rng = Rng::new(50);
        let w = random_weights(&c, &mut rng);
        let nt = random_norm_tensors(&c, norm, &mut rng);
        let lengths = vec![5, 3, 5];
        let (t_len, b_len, dh) = (5, 3, 6);
        let inp = make_inputs(&c, &mut rng, t_len, b_len, true, Some(lengths.clone()));
        let raw = forward(&c, &w, &inp).output;
        let run = forward_norm(&c, &w, norm, &nt, &inp, true).unwrap();
        let (rm0, rv0) = (
            &nt["step_norms.0.running_mean"],
            &nt["step_norms.0.running_var"],
        );
        let (rm1, rv1) = (
            &run.running["step_norms.0.running_mean"],
            &run.running["step_norms.0.running_var"],
        );
        let (g, be) = (&nt["step_norms.0.weight"], &nt["step_norms.0.bias"]);
        for t in 0..7 {
            let r = t * dh..(t + 1) * dh;
            if t >= t_len {
                assert_eq!(rm1[r.clone()], rm0[r.clone()], "row {t} untouched");
                assert_eq!(rv1[r.clone()], rv0[r], "row {t} untouched");
                continue;
            }
            let bs: Vec<usize> = (0..b_len).filter(|&b| t < lengths[b]).collect();
            let xs: Vec<Vec<f64>> = bs
                .iter()
                .map(|&b| raw[(t * b_len + b) * dh..(t * b_len + b + 1) * dh].to_vec())
                .collect();
            let (mu, var) = stats(&xs);
            let n = xs.len() as f64;
            for j in 0..dh {
                let q = t * dh + j;
                assert!((rm1[q] - (0.9 * rm0[q] + 0.1 * mu[j])).abs() < 1e-14);
                assert!((rv1[q] - (0.9 * rv0[q] + 0.1 * var[j] * n / (n - 1.0))).abs() < 1e-14);
                for (k, &b) in bs.iter().enumerate() {
                    let y = run.out.output[(t * b_len + b) * dh + j];
                    let e = (xs[k][j] - mu[j]) / (var[j] + 1e-5).sqrt() * g[j] + be[j];
                    assert!((y - e).abs() < 1e-12, "t={t} b={b} j={j}");
                }
            }
        }
    }

    #[test]
    fn recurrent_batch_first_step_running_stats() {
        let c = cfg(2, 3, 1, false, true);
        let norm = RefNorm::RecurrentBatch { t_max: 7 };
        let mut rng = Rng::new(60);
        let w = random_weights(&c, &mut rng);
        let nt = random_norm_tensors(&c, norm, &mut rng);
        let (t_len, b_len, h) = (5, 3, 3);
        // Without h0: W_hh h_{-1} = 0, so bn_hh row 0 sees mean 0 and var 0.
        let inp = make_inputs(&c, &mut rng, t_len, b_len, false, Some(vec![5, 2, 4]));
        // (train with N = 1 at t = 4 would fail; only look at step 0 via eval-free train on T = 2 prefix)
        let inp = RefInputs {
            seq_len: 2,
            x: inp.x[..2 * b_len * 2].to_vec(),
            lengths: Some(vec![2, 2, 2]),
            ..inp
        };
        let run = forward_norm(&c, &w, norm, &nt, &inp, true).unwrap();
        let xs: Vec<Vec<f64>> = (0..b_len)
            .map(|b| {
                let mut a = vec![0.0; 4 * h];
                matvec_acc(&mut a, &w.cells[0].w_ih, &inp.x[b * 2..b * 2 + 2]);
                a
            })
            .collect();
        let (mu, var) = stats(&xs);
        let (rm0, rv0) = (&nt["bn_ih_l0.running_mean"], &nt["bn_ih_l0.running_var"]);
        let (rm1, rv1) = (
            &run.running["bn_ih_l0.running_mean"],
            &run.running["bn_ih_l0.running_var"],
        );
        for j in 0..4 * h {
            assert!((rm1[j] - (0.9 * rm0[j] + 0.1 * mu[j])).abs() < 1e-14);
            assert!((rv1[j] - (0.9 * rv0[j] + 0.1 * var[j] * 1.5)).abs() < 1e-14);
        }
        let (hm0, hv0) = (&nt["bn_hh_l0.running_mean"], &nt["bn_hh_l0.running_var"]);
        let (hm1, hv1) = (
            &run.running["bn_hh_l0.running_mean"],
            &run.running["bn_hh_l0.running_var"],
        );
        for j in 0..4 * h {
            assert!((hm1[j] - 0.9 * hm0[j]).abs() < 1e-15);
            assert!((hv1[j] - 0.9 * hv0[j]).abs() < 1e-15);
        }
        // Rows 1 updated, rows >= 2 untouched.
        for name in [
            "bn_ih_l0.running_mean",
            "bn_hh_l0.running_var",
            "bn_c_l0.running_mean",
        ] {
            let f = if name.starts_with("bn_c") { h } else { 4 * h };
            assert_ne!(
                run.running[name][f..2 * f],
                nt[name][f..2 * f],
                "{name} row 1"
            );
            assert_eq!(
                run.running[name][2 * f..],
                nt[name][2 * f..],
                "{name} rows >= 2"
            );
        }
        assert_eq!(run.running.len(), 6);
    }

    /// Step-wise variants against hand-written loops: variant 4 in eval mode
    /// with T > T_max (row `min(t, T_max - 1)`), variant 5 in eval mode with
    /// T > T_max (row `min(s, T_max - 1)` per direction step `s`) and in train
    /// mode (outputs, states and every running-stat row).
    #[test]
    fn step_wise_variants_match_direct_computation() {
        // Variant 4: T = 5 > T_max = 3.
        let c = cfg(2, 3, 1, true, true);
        let norm = RefNorm::StepBatch {
            last: true,
            t_max: 3,
        };
        let mut rng = Rng::new(55);
        let w = random_weights(&c, &mut rng);
        let nt = random_norm_tensors(&c, norm, &mut rng);
        let lengths = vec![5, 2, 4];
        let (t_len, b_len, dh) = (5, 3, 6);
        let inp = make_inputs(&c, &mut rng, t_len, b_len, true, Some(lengths.clone()));
        let raw = forward(&c, &w, &inp).output;
        let out = forward_norm(&c, &w, norm, &nt, &inp, false)
            .unwrap()
            .out
            .output;
        let (rm, rv) = (
            &nt["step_norms.0.running_mean"],
            &nt["step_norms.0.running_var"],
        );
        let (g, be) = (&nt["step_norms.0.weight"], &nt["step_norms.0.bias"]);
        for t in 0..t_len {
            let r = t.min(2);
            for (b, &len) in lengths.iter().enumerate() {
                for j in 0..dh {
                    let q = (t * b_len + b) * dh + j;
                    let e = if t < len {
                        (raw[q] - rm[r * dh + j]) / (rv[r * dh + j] + 1e-5).sqrt() * g[j] + be[j]
                    } else {
                        0.0
                    };
                    assert!((out[q] - e).abs() < 1e-12, "t={t} b={b} j={j}");
                }
            }
        }

        // Variant 5, both directions: eval with T_max = 2 < T, train.
        for (train, t_max, lengths) in [(false, 2, vec![5, 2, 4]), (true, 6, vec![5, 3, 5])] {
            let norm = RefNorm::RecurrentBatch { t_max };
            let nt = random_norm_tensors(&c, norm, &mut rng);
            let inp = make_inputs(&c, &mut rng, t_len, b_len, true, Some(lengths.clone()));
            let run = forward_norm(&c, &w, norm, &nt, &inp, train).unwrap();
            let (out, h_n, c_n, running) =
                manual_recurrent_batch(&c, &w, &nt, &inp, &lengths, t_max, train);
            assert_close(
                &run.out.output,
                &out,
                1e-12,
                &format!("train={train} output"),
            );
            assert_close(&run.out.h_n, &h_n, 1e-12, "h_n");
            assert_close(&run.out.c_n, &c_n, 1e-12, "c_n");
            assert_eq!(run.running.len(), running.len());
            for (k, v) in &running {
                assert_close(&run.running[k], v, 1e-14, k);
            }
        }
    }

    /// Hand-written one-layer recurrent-BatchNorm LSTM (variant 5) forward:
    /// returns output, h_n, c_n and the running stats.
    fn manual_recurrent_batch(
        c: &RefConfig,
        w: &RefWeights,
        nt: &NormTensors,
        inp: &RefInputs,
        lengths: &[usize],
        t_max: usize,
        train: bool,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, NormTensors) {
        assert_eq!(c.num_layers, 1);
        let (h, i_sz, b_len, d_n) = (c.hidden_size, c.input_size, inp.batch, c.dirs());
        let dh = d_n * h;
        let mut running: NormTensors = nt
            .iter()
            .filter(|(k, _)| k.contains(".running_"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut out = vec![0.0; inp.seq_len * b_len * dh];
        let mut h_n = vec![0.0; d_n * b_len * h];
        let mut c_n = vec![0.0; d_n * b_len * h];
        let sg = |v: f64| 1.0 / (1.0 + (-v).exp());
        for dir in 0..d_n {
            let base = |n: &str| format!("{n}_l0{}", dir_suffix(dir));
            let cw = &w.cells[dir];
            // BN of the vectors `vs` (one per active sequence), stats row `r`.
            let mut bn = |n: &str, vs: &[Vec<f64>], s: usize, beta: bool| -> Vec<Vec<f64>> {
                let f = vs[0].len();
                let r = if train { s } else { s.min(t_max - 1) };
                let g = &nt[&format!("{}.weight", base(n))];
                let bt = beta.then(|| &nt[&format!("{}.bias", base(n))]);
                let (mk, vk) = (
                    format!("{}.running_mean", base(n)),
                    format!("{}.running_var", base(n)),
                );
                let cnt = vs.len() as f64;
                let mut stats = vec![(0.0, 0.0); f];
                for j in 0..f {
                    stats[j] = if train {
                        let m = vs.iter().map(|v| v[j]).sum::<f64>() / cnt;
                        let var = vs.iter().map(|v| (v[j] - m).powi(2)).sum::<f64>() / cnt;
                        let rm = &mut running.get_mut(&mk).unwrap()[r * f + j];
                        *rm = 0.9 * *rm + 0.1 * m;
                        let rv = &mut running.get_mut(&vk).unwrap()[r * f + j];
                        *rv = 0.9 * *rv + 0.1 * var * cnt / (cnt - 1.0);
                        (m, var)
                    } else {
                        (nt[&mk][r * f + j], nt[&vk][r * f + j])
                    };
                }
                vs.iter()
                    .map(|v| {
                        (0..f)
                            .map(|j| {
                                (v[j] - stats[j].0) / (stats[j].1 + 1e-5).sqrt() * g[j]
                                    + bt.map_or(0.0, |b| b[j])
                            })
                            .collect()
                    })
                    .collect()
            };
            let st_off = |b: usize| (dir * b_len + b) * h;
            let mut hs: Vec<Vec<f64>> = (0..b_len)
                .map(|b| inp.h0.as_ref().unwrap()[st_off(b)..st_off(b) + h].to_vec())
                .collect();
            let mut cs: Vec<Vec<f64>> = (0..b_len)
                .map(|b| inp.c0.as_ref().unwrap()[st_off(b)..st_off(b) + h].to_vec())
                .collect();
            for s in 0..*lengths.iter().max().unwrap() {
                let bs: Vec<usize> = (0..b_len).filter(|&b| s < lengths[b]).collect();
                let time = |b: usize| if dir == 0 { s } else { lengths[b] - 1 - s };
                let mv = |m: &[f64], v: &[f64]| -> Vec<f64> {
                    let mut y = vec![0.0; 4 * h];
                    matvec_acc(&mut y, m, v);
                    y
                };
                let a: Vec<Vec<f64>> = bs
                    .iter()
                    .map(|&b| {
                        mv(
                            &cw.w_ih,
                            &inp.x[(time(b) * b_len + b) * i_sz..(time(b) * b_len + b + 1) * i_sz],
                        )
                    })
                    .collect();
                let r: Vec<Vec<f64>> = bs.iter().map(|&b| mv(&cw.w_hh, &hs[b])).collect();
                let (a, r) = (bn("bn_ih", &a, s, false), bn("bn_hh", &r, s, false));
                let mut cvs = Vec::new();
                let mut pres = Vec::new();
                for (k, &b) in bs.iter().enumerate() {
                    let pre: Vec<f64> = (0..4 * h)
                        .map(|q| {
                            a[k][q]
                                + r[k][q]
                                + cw.b_ih.as_ref().unwrap()[q]
                                + cw.b_hh.as_ref().unwrap()[q]
                        })
                        .collect();
                    cvs.push(
                        (0..h)
                            .map(|j| sg(pre[h + j]) * cs[b][j] + sg(pre[j]) * pre[2 * h + j].tanh())
                            .collect(),
                    );
                    pres.push(pre);
                }
                let ncs = bn("bn_c", &cvs, s, true);
                for (k, &b) in bs.iter().enumerate() {
                    hs[b] = (0..h)
                        .map(|j| sg(pres[k][3 * h + j]) * ncs[k][j].tanh())
                        .collect();
                    cs[b] = cvs[k].clone();
                    let o = (time(b) * b_len + b) * dh + dir * h;
                    out[o..o + h].copy_from_slice(&hs[b]);
                }
            }
            for b in 0..b_len {
                h_n[st_off(b)..st_off(b) + h].copy_from_slice(&hs[b]);
                c_n[st_off(b)..st_off(b) + h].copy_from_slice(&cs[b]);
            }
        }
        (out, h_n, c_n, running)
    }

    /// Slices `[L*D, B, H]` state of batch element `b` into a `[L*D, 1, H]` state.
    fn state_of(s: &[f64], cells: usize, batch: usize, b: usize, h: usize) -> Vec<f64> {
        (0..cells)
            .flat_map(|cell| s[(cell * batch + b) * h..(cell * batch + b + 1) * h].to_vec())
            .collect()
    }

    /// Without batch statistics (eval mode, or variants 1/2), each sequence
    /// run alone gives the same output and final states as in the batch.
    #[test]
    fn eval_outputs_do_not_depend_on_batch_composition() {
        let cases = [
            (RefNorm::Layer { last: true }, true),
            (RefNorm::LayerCell, true),
            (RefNorm::Batch { last: true }, false),
            (
                RefNorm::StepBatch {
                    last: true,
                    t_max: 3,
                },
                false,
            ),
            (RefNorm::RecurrentBatch { t_max: 2 }, false),
        ];
        for (norm, train) in cases {
            let c = cfg(2, 3, 2, true, true);
            let mut rng = Rng::new(70);
            let w = random_weights(&c, &mut rng);
            let nt = random_norm_tensors(&c, norm, &mut rng);
            let lengths = vec![5, 1, 4, 2];
            let (t_len, b_len, h, cells) = (5, 4, 3, c.cells());
            let inp = make_inputs(&c, &mut rng, t_len, b_len, true, Some(lengths.clone()));
            let out = forward_norm(&c, &w, norm, &nt, &inp, train).unwrap();
            if norm.has_batch_stats() {
                let stats: NormTensors = nt
                    .iter()
                    .filter(|(k, _)| k.contains(".running_"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(
                    out.running, stats,
                    "{norm:?}: eval returns unchanged running stats"
                );
            } else {
                assert!(out.running.is_empty());
            }
            let ow = 2 * h;
            for (b, &len) in lengths.iter().enumerate() {
                let x: Vec<f64> = (0..len)
                    .flat_map(|t| inp.x[(t * b_len + b) * 2..(t * b_len + b + 1) * 2].to_vec())
                    .collect();
                let alone = RefInputs {
                    seq_len: len,
                    batch: 1,
                    x,
                    h0: Some(state_of(inp.h0.as_ref().unwrap(), cells, b_len, b, h)),
                    c0: Some(state_of(inp.c0.as_ref().unwrap(), cells, b_len, b, h)),
                    lengths: None,
                };
                let single = forward_norm(&c, &w, norm, &nt, &alone, train).unwrap().out;
                for t in 0..len {
                    assert_close(
                        &out.out.output[(t * b_len + b) * ow..(t * b_len + b + 1) * ow],
                        &single.output[t * ow..(t + 1) * ow],
                        1e-12,
                        &format!("{norm:?} b={b} t={t}"),
                    );
                }
                assert_close(
                    &state_of(&out.out.h_n, cells, b_len, b, h),
                    &single.h_n,
                    1e-12,
                    "h_n",
                );
                assert_close(
                    &state_of(&out.out.c_n, cells, b_len, b, h),
                    &single.c_n,
                    1e-12,
                    "c_n",
                );
            }
        }
    }

    /// Train mode with batch statistics does depend on the batch (sanity check
    /// that the previous test is not vacuous), and differs from eval mode.
    #[test]
    fn train_mode_uses_batch_statistics() {
        for norm in [
            RefNorm::Batch { last: true },
            RefNorm::StepBatch {
                last: true,
                t_max: 5,
            },
            RefNorm::RecurrentBatch { t_max: 5 },
        ] {
            let c = cfg(2, 3, 1, false, true);
            let mut rng = Rng::new(80);
            let w = random_weights(&c, &mut rng);
            let nt = random_norm_tensors(&c, norm, &mut rng);
            let inp = make_inputs(&c, &mut rng, 5, 3, true, None);
            let tr = forward_norm(&c, &w, norm, &nt, &inp, true).unwrap();
            let ev = forward_norm(&c, &w, norm, &nt, &inp, false).unwrap();
            assert_ne!(tr.out.output, ev.out.output, "{norm:?}");
            assert_ne!(tr.running, nt, "{norm:?}");
            let mut inp2 = inp.clone();
            inp2.x[2 * 2] += 0.5; // change sequence 2 only (t = 0)
            let tr2 = forward_norm(&c, &w, norm, &nt, &inp2, true).unwrap();
            assert_ne!(
                tr.out.output[..3],
                tr2.out.output[..3],
                "{norm:?}: b=0 depends on b=2"
            );
        }
    }

    /// Layer (1) and layer-cell (2) have no batch statistics: `train` is irrelevant;
    /// a between-layer variant normalizing nothing is the plain LSTM.
    #[test]
    fn no_statistics_variants_and_plain_equivalence() {
        let c = cfg(2, 3, 2, true, true);
        let mut rng = Rng::new(90);
        let w = random_weights(&c, &mut rng);
        let inp = make_inputs(&c, &mut rng, 5, 3, true, Some(vec![5, 2, 4]));
        let up = make_upstream(&c, &mut rng, 5, 3);
        for norm in [RefNorm::Layer { last: true }, RefNorm::LayerCell] {
            let nt = random_norm_tensors(&c, norm, &mut rng);
            let (a, ga) = backward_norm(&c, &w, norm, &nt, &inp, &up, true).unwrap();
            let (b, gb) = backward_norm(&c, &w, norm, &nt, &inp, &up, false).unwrap();
            assert_eq!(a.out.output, b.out.output);
            assert_eq!(ga.norm, gb.norm);
            assert_eq!(ga.grads.input, gb.grads.input);
        }
        let c1 = cfg(2, 3, 1, true, true);
        let w1 = random_weights(&c1, &mut rng);
        let inp1 = make_inputs(&c1, &mut rng, 5, 3, true, Some(vec![5, 2, 4]));
        let up1 = make_upstream(&c1, &mut rng, 5, 3);
        let (out, g) = backward(&c1, &w1, &inp1, &up1);
        for norm in [
            RefNorm::Layer { last: false },
            RefNorm::Batch { last: false },
            RefNorm::StepBatch {
                last: false,
                t_max: 1,
            },
        ] {
            let nt = NormTensors::new();
            for train in [false, true] {
                let (run, ng) = backward_norm(&c1, &w1, norm, &nt, &inp1, &up1, train).unwrap();
                assert_eq!(run.out.output, out.output);
                assert_eq!(run.out.h_n, out.h_n);
                assert_eq!(ng.grads.input, g.input);
                assert_eq!(ng.grads.h0, g.h0);
                assert_eq!(ng.grads.weights.cells[1].w_hh, g.weights.cells[1].w_hh);
                assert!(ng.norm.is_empty() && run.running.is_empty());
            }
        }
    }

    /// One LayerNorm-cell step with H = 1, written out by hand: LN_c over a
    /// single value returns its bias, so h = o * tanh(beta_c).
    #[test]
    fn layer_cell_closed_form() {
        let c = cfg(1, 1, 1, false, true);
        let norm = RefNorm::LayerCell;
        let w = RefWeights {
            cells: vec![RefDirWeights {
                w_ih: vec![0.4, -0.3, 0.8, 0.1],
                w_hh: vec![-0.2, 0.5, 0.3, -0.6],
                b_ih: Some(vec![0.1, 0.2, -0.1, 0.05]),
                b_hh: Some(vec![-0.05, 0.1, 0.2, -0.1]),
            }],
        };
        let mut nt = NormTensors::new();
        let (wi, bi) = (vec![1.1, 0.9, 1.2, 0.8], vec![0.1, -0.2, 0.05, 0.3]);
        let (wh, bh) = (vec![0.7, 1.3, 1.0, 0.95], vec![-0.1, 0.15, 0.2, -0.05]);
        nt.insert("ln_ih_l0.weight".into(), wi.clone());
        nt.insert("ln_ih_l0.bias".into(), bi.clone());
        nt.insert("ln_hh_l0.weight".into(), wh.clone());
        nt.insert("ln_hh_l0.bias".into(), bh.clone());
        nt.insert("ln_c_l0.weight".into(), vec![1.7]);
        nt.insert("ln_c_l0.bias".into(), vec![0.35]);
        let (x, h0, c0) = (0.9, -0.4, 0.6);
        let inp = RefInputs {
            seq_len: 1,
            batch: 1,
            x: vec![x],
            h0: Some(vec![h0]),
            c0: Some(vec![c0]),
            lengths: None,
        };
        let ln = |v: [f64; 4], g: &[f64], b: &[f64]| -> [f64; 4] {
            let mu = v.iter().sum::<f64>() / 4.0;
            let var = v.iter().map(|a| (a - mu) * (a - mu)).sum::<f64>() / 4.0;
            std::array::from_fn(|j| (v[j] - mu) / (var + 1e-5).sqrt() * g[j] + b[j])
        };
        let wc = &w.cells[0];
        let a = ln(std::array::from_fn(|j| wc.w_ih[j] * x), &wi, &bi);
        let r = ln(std::array::from_fn(|j| wc.w_hh[j] * h0), &wh, &bh);
        let pre: [f64; 4] = std::array::from_fn(|j| {
            a[j] + r[j] + wc.b_ih.as_ref().unwrap()[j] + wc.b_hh.as_ref().unwrap()[j]
        });
        let s = |v: f64| 1.0 / (1.0 + (-v).exp());
        let c1 = s(pre[1]) * c0 + s(pre[0]) * pre[2].tanh();
        let h1 = s(pre[3]) * 0.35f64.tanh();
        let out = forward_norm(&c, &w, norm, &nt, &inp, true).unwrap().out;
        assert!((out.c_n[0] - c1).abs() < 1e-14, "{} vs {c1}", out.c_n[0]);
        assert!((out.h_n[0] - h1).abs() < 1e-14, "{} vs {h1}", out.h_n[0]);
        assert!((out.output[0] - h1).abs() < 1e-14);
    }

    #[test]
    fn error_cases() {
        let c = cfg(2, 3, 2, true, true);
        let mut rng = Rng::new(100);
        let w = random_weights(&c, &mut rng);
        let run = |norm: RefNorm, nt: &NormTensors, inp: &RefInputs, train: bool| {
            let up = make_upstream(&c, &mut Rng::new(1), inp.seq_len, inp.batch);
            let f = forward_norm(&c, &w, norm, nt, inp, train).map(|_| ());
            let b = backward_norm(&c, &w, norm, nt, inp, &up, train).map(|_| ());
            assert_eq!(f, b, "forward and backward agree on errors");
            f
        };
        let inp5 = make_inputs(&c, &mut rng, 5, 3, true, None);

        // T > T_max in train mode (eval is fine).
        for (norm, name) in [
            (
                RefNorm::StepBatch {
                    last: true,
                    t_max: 4,
                },
                "step_norms.0.running_mean",
            ),
            (
                RefNorm::RecurrentBatch { t_max: 4 },
                "bn_ih_l0.running_mean",
            ),
        ] {
            let nt = random_norm_tensors(&c, norm, &mut rng);
            let e = run(norm, &nt, &inp5, true).unwrap_err();
            assert!(e.contains(name) && e.contains("T_max"), "{e}");
            run(norm, &nt, &inp5, false).unwrap();
        }

        // A single value per channel in train mode (eval is fine).
        let one = make_inputs(&c, &mut rng, 1, 1, false, None);
        let two = make_inputs(&c, &mut rng, 2, 1, false, None);
        let ragged = make_inputs(&c, &mut rng, 5, 3, false, Some(vec![5, 2, 4]));
        let b = RefNorm::Batch { last: false };
        let sb = RefNorm::StepBatch {
            last: true,
            t_max: 5,
        };
        let rb = RefNorm::RecurrentBatch { t_max: 5 };
        for (norm, inp, ok) in [
            (b, &one, false),
            (b, &two, true), // two positions of one sequence
            (b, &ragged, true),
            (sb, &one, false),
            (sb, &two, false),
            (sb, &ragged, false), // t = 4: one valid sequence
            (rb, &two, false),
            (rb, &ragged, false),
        ] {
            let nt = random_norm_tensors(&c, norm, &mut rng);
            let r = run(norm, &nt, inp, true);
            if ok {
                r.unwrap();
            } else {
                let e = r.unwrap_err();
                assert!(
                    e.contains("Expected more than 1 value per channel when training"),
                    "{e}"
                );
            }
            run(norm, &nt, inp, false).unwrap();
        }

        // Missing, mis-sized and unexpected tensors.
        for norm in [
            RefNorm::Layer { last: false },
            RefNorm::LayerCell,
            RefNorm::Batch { last: true },
            RefNorm::StepBatch {
                last: false,
                t_max: 5,
            },
            RefNorm::RecurrentBatch { t_max: 5 },
        ] {
            let nt = random_norm_tensors(&c, norm, &mut rng);
            run(norm, &nt, &inp5, true).unwrap();
            for name in nt.keys() {
                let mut missing = nt.clone();
                missing.remove(name);
                for train in [true, false] {
                    let e = run(norm, &missing, &inp5, train).unwrap_err();
                    assert!(e.contains("missing") && e.contains(name.as_str()), "{e}");
                }
                let mut short = nt.clone();
                short.get_mut(name).unwrap().pop();
                let e = run(norm, &short, &inp5, false).unwrap_err();
                assert!(e.contains(name.as_str()), "{e}");
            }
            let mut extra = nt.clone();
            extra.insert("layer_norms.1.weight".into(), vec![1.0; 6]);
            let e = run(norm, &extra, &inp5, false).unwrap_err();
            assert!(
                e.contains("unexpected") && e.contains("layer_norms.1.weight"),
                "{e}"
            );
        }
        // num_batches_tracked: accepted for variant 3 only.
        let mut nt = random_norm_tensors(&c, b, &mut rng);
        nt.insert("batch_norms.0.num_batches_tracked".into(), vec![0.0]);
        run(b, &nt, &inp5, true).unwrap();
        nt.insert("batch_norms.1.num_batches_tracked".into(), vec![0.0]);
        assert!(
            run(b, &nt, &inp5, true)
                .unwrap_err()
                .contains("batch_norms.1.num_batches_tracked")
        );

        // Invalid lengths and t_max = 0.
        let mut bad = inp5.clone();
        bad.lengths = Some(vec![5, 0, 3]);
        let nt = random_norm_tensors(&c, RefNorm::LayerCell, &mut rng);
        assert!(run(RefNorm::LayerCell, &nt, &bad, true).is_err());
        let z = RefNorm::RecurrentBatch { t_max: 0 };
        assert!(run(z, &random_norm_tensors(&c, z, &mut rng), &inp5, false).is_err());
    }

    #[test]
    fn clipping() {
        // Above max_norm: scaled to max_norm * total / (total + 1e-6).
        let mut a = vec![3.0, 0.0];
        let mut b = vec![-4.0];
        let total = clip_grad_norm(&mut [&mut a, &mut b], 1.0);
        assert_eq!(total, 5.0);
        let after = (a[0] * a[0] + b[0] * b[0]).sqrt();
        assert!((after - 5.0 / (5.0 + 1e-6)).abs() < 1e-15);
        assert!((after - 1.0).abs() < 1e-6);
        assert!((a[0] / b[0] + 0.75).abs() < 1e-15 && a[1] == 0.0);
        assert!((grad_norm(&a) - 0.6).abs() < 1e-6);
        // Below (or at) max_norm: unchanged, bit for bit.
        let (mut a, mut b) = (vec![0.3, -0.1], vec![0.2]);
        let (a0, b0) = (a.clone(), b.clone());
        let total = clip_grad_norm(&mut [&mut a, &mut b], 10.0);
        assert!((total - (0.14f64).sqrt()).abs() < 1e-15);
        assert_eq!((a, b), (a0, b0));
        // Non-finite: reported, gradients untouched.
        let mut n = vec![1.0, f64::NAN];
        assert!(clip_grad_norm(&mut [&mut n], 1.0).is_nan());
        assert_eq!(n[0], 1.0);
        let mut inf = vec![f64::INFINITY, 2.0];
        assert_eq!(clip_grad_norm(&mut [&mut inf], 1.0), f64::INFINITY);
        assert_eq!(inf[1], 2.0);
        // Clip by value.
        let (mut a, mut b) = (vec![-3.0, 0.5, 2.0], vec![0.0, -0.25]);
        clip_grad_value(&mut [&mut a, &mut b], 1.0);
        assert_eq!(a, vec![-1.0, 0.5, 1.0]);
        assert_eq!(b, vec![0.0, -0.25]);
    }
}
