//! Wrapper of `shaders/batch_norm.wgsl`: BatchNorm between layers over the
//! valid rows of a time-major [T, B, F] buffer, sequence-wise (one group of
//! all valid rows) or per timestep (group t = valid rows at time t), in
//! train or eval mode, forward and backward.
//!
//! Aliasing: `y` may be the buffer of `x` (with `y_off == x_off`: in place),
//! and `dx` may be the buffer of `dy` (with `dx_off == dy_off`). The data
//! buffers (`x`, `y`, `stats`, `running`, `dy`, `dx`, `grads`) are all bound
//! read-write, so any of them may also share one buffer at disjoint ranges.
//! `params` is bound read-only and must be a different buffer from all of
//! those (in particular, running statistics cannot live in it). Backward
//! needs the forward's input `x` unchanged.
//!
//! Train mode with a group of fewer than 2 valid rows must be rejected on
//! the host before dispatch ([`group_counts`], [`check_train`]).

use super::layer_norm::{FWD_BINDINGS, NormUniform, bwd_bindings, norm_offsets};
use super::u32_of;
use super::wgsl::family_source;
use crate::gpu::{Binding, Dispatch, GpuContext, Kernel, module};
use crate::{Error, Result};

family_source!(
    super::layer_norm::NormUniform;
    "common/prelude.wgsl",
    "common/norm_bindings.wgsl",
    "batch_norm.wgsl",
);
const WG: usize = 64;

/// What one dispatch covers, an invocation each: the (group, feature)
/// columns or every element.
#[derive(Clone, Copy)]
enum Over {
    Columns,
    Elements,
}

/// The BatchNorm entry points.
pub struct BatchNorm {
    fwd: Kernel,
    bwd_sums: Kernel,
    bwd_dx: Kernel,
}

/// Shape, mode and offsets (in elements) of one BatchNorm over [T, B, F].
/// Rows are contiguous (row stride F).
#[derive(Clone, Copy, Debug, Default)]
pub struct BnShape {
    /// Sequence length T.
    pub seq: usize,
    /// Batch B.
    pub batch: usize,
    /// Features F (D·H).
    pub features: usize,
    /// Per-timestep statistics (variant 4) instead of sequence-wise (variant 3).
    pub per_step: bool,
    /// Train mode (batch statistics, running-stat update) instead of eval.
    pub train: bool,
    /// Rows of the running statistics: T_max per timestep, 1 sequence-wise
    /// (ignored there).
    pub run_rows: usize,
    /// Per-timestep eval: the stream position of step 0, so that step g
    /// reads running-statistics row min(t0 + g, run_rows − 1).
    pub t0: usize,
    /// Input x [T, B, F].
    pub x_off: usize,
    /// Output y [T, B, F].
    pub y_off: usize,
    /// Gradient w.r.t. y.
    pub dy_off: usize,
    /// Gradient w.r.t. x.
    pub dx_off: usize,
    /// Saved statistics [G, 6, F]: [`BatchNorm::stats_len`] elements.
    pub stats_off: usize,
    /// Weight `[F]` in the parameter buffer.
    pub w_off: usize,
    /// Bias `[F]` in the parameter buffer.
    pub b_off: usize,
    /// Weight gradient `[F]` in the gradient buffer.
    pub dw_off: usize,
    /// Bias gradient `[F]` in the gradient buffer.
    pub db_off: usize,
    /// Running mean [run_rows, F] in the running-statistics buffer.
    pub rm_off: usize,
    /// Running variance [run_rows, F] in the running-statistics buffer.
    pub rv_off: usize,
    /// Add dw / db to the gradient buffer instead of overwriting them.
    pub accumulate: bool,
}

impl BnShape {
    /// Number of statistics groups G: T per timestep, 1 sequence-wise.
    pub fn groups(&self) -> usize {
        if self.per_step { self.seq } else { 1 }
    }
}

/// Buffers of the forward pass.
pub struct BnForward<'a> {
    /// Parameters (w, b), read-only.
    pub params: &'a wgpu::Buffer,
    /// Sequence lengths (u32 `[B]`).
    pub lengths: &'a wgpu::Buffer,
    /// Input.
    pub x: &'a wgpu::Buffer,
    /// Output (may be `x`).
    pub y: &'a wgpu::Buffer,
    /// Saved statistics, written.
    pub stats: &'a wgpu::Buffer,
    /// Running mean and variance: read in eval, updated in place in train.
    pub running: &'a wgpu::Buffer,
}

/// Buffers of the BatchNorm backward: those of LayerNorm's.
pub type BnBackward<'a> = super::layer_norm::NormBackward<'a>;

/// Valid rows of each statistics group: per timestep, the number of
/// sequences with t < len for t < `seq`; sequence-wise, one count of all
/// valid rows (lengths clamped to `seq`).
pub fn group_counts(lengths: &[usize], seq: usize, per_step: bool) -> Vec<usize> {
    if per_step {
        (0..seq)
            .map(|t| lengths.iter().filter(|&&l| t < l).count())
            .collect()
    } else {
        vec![lengths.iter().map(|&l| l.min(seq)).sum()]
    }
}

/// The error PyTorch raises for train-mode BatchNorm on a group of fewer
/// than 2 values per channel, if any group of these lengths has one.
pub fn check_train(lengths: &[usize], seq: usize, per_step: bool, features: usize) -> Result<()> {
    match group_counts(lengths, seq, per_step)
        .into_iter()
        .enumerate()
        .find(|&(_, n)| n < 2)
    {
        None => Ok(()),
        Some((g, n)) => {
            let at = if per_step {
                format!(" at time step {g}")
            } else {
                String::new()
            };
            Err(Error::Invalid(format!(
                "Expected more than 1 value per channel when training, got input size \
                 [{n}, {features}]{at}"
            )))
        }
    }
}

impl BatchNorm {
    /// Compiles the entry points.
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "batch_norm", &source());
        let mut fwd = FWD_BINDINGS.to_vec();
        fwd.push((6, Binding::ReadWrite));
        let bwd = bwd_bindings(7);
        Self {
            fwd: m.kernel("forward", &fwd),
            bwd_sums: m.kernel("backward_sums", &bwd),
            bwd_dx: m.kernel("backward_dx", &bwd),
        }
    }

    /// Elements of the saved-statistics scratch of one BatchNorm: 6·G·F.
    pub fn stats_len(s: &BnShape) -> usize {
        6 * s.groups() * s.features
    }

    fn params(s: &BnShape) -> Result<NormUniform> {
        let run_rows = if s.per_step { s.run_rows } else { 1 };
        if run_rows == 0 {
            return Err(Error::Invalid(
                "batch norm running statistics have no rows".into(),
            ));
        }
        if s.per_step && s.train && s.seq > run_rows {
            return Err(Error::Invalid(format!(
                "per-timestep batch norm in train mode: sequence length {} exceeds the {} rows \
                 of the running statistics",
                s.seq, run_rows
            )));
        }
        let shape = (s.seq, s.batch, s.features);
        let u = NormUniform::checked("batch norm", shape, norm_offsets!(s), Self::stats_len(s))?;
        for (what, off) in [
            ("batch norm running mean", s.rm_off),
            ("batch norm running variance", s.rv_off),
        ] {
            u32_of(what, off + run_rows * s.features)?;
        }
        let flags = u32::from(s.per_step) | u32::from(s.train) << 1 | u32::from(s.accumulate) << 2;
        Ok(NormUniform {
            flags,
            rm_off: s.rm_off as u32,
            rv_off: s.rv_off as u32,
            run_rows: run_rows as u32,
            t0: u32_of("stream position", s.t0)?,
            ..u
        })
    }

    /// The dispatches of one pass, `kernels` in order on `bufs`; none when
    /// the shape is empty, whose uniform is checked all the same.
    fn pass(
        ctx: &GpuContext,
        s: &BnShape,
        bufs: &[&wgpu::Buffer],
        kernels: &[(&Kernel, Over)],
    ) -> Result<Vec<Dispatch>> {
        let params = Self::params(s)?;
        if s.seq * s.batch == 0 || s.features == 0 {
            return Ok(Vec::new());
        }
        let grid = |over| {
            let (what, n) = match over {
                Over::Columns => ("batch norm columns", s.groups() * s.features),
                Over::Elements => ("batch norm elements", s.seq * s.batch * s.features),
            };
            Ok(ctx.grid(u32_of(what, n.div_ceil(WG))?))
        };
        kernels
            .iter()
            .map(|&(k, over)| Ok(k.dispatch(ctx, &params, bufs, grid(over)?)))
            .collect()
    }

    /// Forward: statistics (train) or running statistics (eval) per
    /// (group, feature), saved to `stats`; running statistics updated in
    /// train mode; y = xhat·w + b on valid rows, 0 on padded rows. One
    /// dispatch (none when empty).
    pub fn forward(
        &self,
        ctx: &GpuContext,
        s: &BnShape,
        b: &BnForward<'_>,
    ) -> Result<Vec<Dispatch>> {
        let bufs = [b.params, b.lengths, b.x, b.y, b.stats, b.running];
        Self::pass(ctx, s, &bufs, &[(&self.fwd, Over::Columns)])
    }

    /// Backward (of a forward in the same mode, whose `stats` it reads):
    /// per-(group, feature) sums of dy and dy·xhat, then dx (0 on padded
    /// rows) together with dw, db over all valid rows (overwritten or
    /// accumulated). Two dispatches (none when empty); dx may overwrite dy.
    pub fn backward(
        &self,
        ctx: &GpuContext,
        s: &BnShape,
        b: &BnBackward<'_>,
    ) -> Result<Vec<Dispatch>> {
        let bufs = [b.params, b.lengths, b.x, b.stats, b.dy, b.dx, b.grads];
        Self::pass(
            ctx,
            s,
            &bufs,
            &[
                (&self.bwd_sums, Over::Columns),
                (&self.bwd_dx, Over::Elements),
            ],
        )
    }
}
