//! f64 CPU reference of the normalization variants (issue 3), built on the
//! plain `nn.LSTM` reference of this crate.
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
//! Variants 1, 3 and 4 (`between`) run every layer through the plain
//! reference ([`crate::forward`] / [`crate::backward`] on a one-layer
//! configuration) and normalize between layers; variants 2 and 5 (`cell`)
//! have their own cell, processed step by step over the whole batch with
//! explicit caches. Both build on the normalization primitives in `ops`.
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
//! layer's between-layer norm; [`crate::dropout::ref_links`] builds them with
//! the GPU's dropout mask.

mod between;
mod cell;
mod ops;

use crate::lstm::check_inputs;
use crate::{
    RefCellKind, RefConfig, RefGrads, RefInputs, RefLinks, RefOutputs, RefUpstream, RefWeights, Rng,
};
use between::{BetweenLayer, backward_between, forward_between};
use cell::{CellStep, backward_cells, forward_cells};
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

// ---------------------------------------------------------------------------
// Validation and the forward pass of every variant
// ---------------------------------------------------------------------------

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
    let lengths = check_inputs(cfg, w, inp)?;
    if cfg.cell != RefCellKind::Lstm {
        return Err(format!("the norm reference has no {:?} cell", cfg.cell));
    }
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
