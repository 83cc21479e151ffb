//! Wrapper of `shaders/layer_norm.wgsl`: LayerNorm over the features of each
//! valid row of a time-major [T, B, F] buffer (normalization between layers),
//! forward and backward.
//!
//! Aliasing: `y` may be the buffer of `x` (with `y_off == x_off`: in place),
//! and `dx` may be the buffer of `dy` (with `dx_off == dy_off`). The data
//! buffers (`x`, `y`, `stats`, `dy`, `dx`, `grads`) are all bound read-write,
//! so any of them may also share one buffer at disjoint ranges. `params` is
//! bound read-only and must be a different buffer from all of those.
//! Backward needs the forward's input `x` unchanged, so in-place forward is
//! only useful when no backward follows.

use super::wgsl::{family_source, wgsl_struct};
use super::{groups_1d, u32_of};
use crate::Result;
use crate::gpu::{Binding, Dispatch, GpuContext, Kernel, module};

family_source!(
    NormUniform;
    "common/prelude.wgsl",
    "common/tree.wgsl",
    "common/norm_bindings.wgsl",
    "layer_norm.wgsl",
);
/// Features per workgroup of `backward_params` (the shader's `PC`).
const PARAM_COLS: usize = 16;

wgsl_struct! {
    /// The uniform block of both normalizations between layers
    /// (`common/norm_bindings.wgsl`): `rm_off`, `rv_off` and `run_rows` are
    /// BatchNorm's, `t0` LayerNorm's.
    pub struct NormUniform = "Params" {
        seq: u32, batch: u32, f: u32, flags: u32,
        x_off: u32, y_off: u32, dy_off: u32, dx_off: u32,
        stats_off: u32, w_off: u32, b_off: u32, dw_off: u32,
        db_off: u32, rm_off: u32, rv_off: u32, run_rows: u32,
        t0: u32, _p0: u32, _p1: u32, _p2: u32,
    }
}

/// Storage bindings 1 to 5 of `common/norm_bindings.wgsl` (params,
/// lengths, x, y, stats): the forward's of both normalizations (BatchNorm
/// adds its running statistics).
pub(crate) const FWD_BINDINGS: [(u32, Binding); 5] = [
    (1, Binding::Read),
    (2, Binding::Read),
    (3, Binding::ReadWrite),
    (4, Binding::ReadWrite),
    (5, Binding::ReadWrite),
];

/// The backward's storage bindings of both normalizations: params,
/// lengths, x and stats, then the family's own dy, dx and grads, from
/// binding `dy` on.
pub(crate) fn bwd_bindings(dy: u32) -> [(u32, Binding); 7] {
    use Binding::{Read, ReadWrite};
    [
        (1, Read),
        (2, Read),
        (3, ReadWrite),
        (5, ReadWrite),
        (dy, ReadWrite),
        (dy + 1, ReadWrite),
        (dy + 2, ReadWrite),
    ]
}

/// The LayerNorm entry points.
pub struct LayerNorm {
    fwd: Kernel,
    bwd_dx: Kernel,
    bwd_params: Kernel,
}

/// Shape and offsets (in elements) of one LayerNorm over [T, B, F].
/// Rows are contiguous (row stride F).
#[derive(Clone, Copy, Debug, Default)]
pub struct LnShape {
    /// Steps T covered (rows T·B).
    pub seq: usize,
    /// Step of the first row in its sequence, for the validity of rows
    /// against the lengths (0, or a chunk's first step; the offsets then
    /// point at that step's rows).
    pub t0: usize,
    /// Batch B.
    pub batch: usize,
    /// Features F (D·H).
    pub features: usize,
    /// Input x [T, B, F].
    pub x_off: usize,
    /// Output y [T, B, F].
    pub y_off: usize,
    /// Gradient w.r.t. y.
    pub dy_off: usize,
    /// Gradient w.r.t. x.
    pub dx_off: usize,
    /// Saved per-row (mean, rstd) [T, B, 2]: [`LayerNorm::stats_len`] elements.
    pub stats_off: usize,
    /// Weight `[F]` in the parameter buffer.
    pub w_off: usize,
    /// Bias `[F]` in the parameter buffer.
    pub b_off: usize,
    /// Weight gradient `[F]` in the gradient buffer.
    pub dw_off: usize,
    /// Bias gradient `[F]` in the gradient buffer.
    pub db_off: usize,
    /// Add dw / db to the gradient buffer instead of overwriting them.
    pub accumulate: bool,
}

/// Buffers of the forward pass.
pub struct LnForward<'a> {
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
}

/// Buffers of the backward pass, of LayerNorm and of BatchNorm
/// ([`super::batch_norm::BnBackward`]) alike.
pub struct NormBackward<'a> {
    /// Parameters (w), read-only.
    pub params: &'a wgpu::Buffer,
    /// Sequence lengths (u32 `[B]`).
    pub lengths: &'a wgpu::Buffer,
    /// The forward's input.
    pub x: &'a wgpu::Buffer,
    /// Statistics saved by the forward (same mode); BatchNorm writes its
    /// sums slots.
    pub stats: &'a wgpu::Buffer,
    /// Gradient w.r.t. the output.
    pub dy: &'a wgpu::Buffer,
    /// Gradient w.r.t. the input, written (may be `dy`).
    pub dx: &'a wgpu::Buffer,
    /// Parameter gradients (dw, db), written or accumulated.
    pub grads: &'a wgpu::Buffer,
}

/// Buffers of the LayerNorm backward.
pub type LnBackward<'a> = NormBackward<'a>;

/// The offsets [`NormUniform::checked`] takes, from a shape of either
/// normalization (their fields are named alike).
macro_rules! norm_offsets {
    ($s:expr) => {
        [
            $s.x_off,
            $s.y_off,
            $s.dy_off,
            $s.dx_off,
            $s.stats_off,
            $s.w_off,
            $s.b_off,
            $s.dw_off,
            $s.db_off,
        ]
    };
}
pub(crate) use norm_offsets;

impl NormUniform {
    /// What both normalizations fill alike: the shape [T, B, F] and the
    /// offsets of the data (x, y, dy, dx), of `stats` elements of statistics
    /// and of the parameters and gradients (w, b, dw, db: F each), each
    /// range checked against u32 indices (errors name `what`).
    pub(crate) fn checked(
        what: &str,
        (seq, batch, f): (usize, usize, usize),
        [x, y, dy, dx, st, w, b, dw, db]: [usize; 9],
        stats: usize,
    ) -> Result<Self> {
        let data = seq * batch * f;
        for (name, off, len) in [
            ("input", x, data),
            ("output", y, data),
            ("output gradient", dy, data),
            ("input gradient", dx, data),
            ("statistics", st, stats),
            ("weight", w, f),
            ("bias", b, f),
            ("weight gradient", dw, f),
            ("bias gradient", db, f),
        ] {
            u32_of(&format!("{what} {name}"), off + len)?;
        }
        Ok(Self {
            seq: u32_of("sequence length", seq)?,
            batch: u32_of("batch", batch)?,
            f: u32_of(&format!("{what} features"), f)?,
            x_off: x as u32,
            y_off: y as u32,
            dy_off: dy as u32,
            dx_off: dx as u32,
            stats_off: st as u32,
            w_off: w as u32,
            b_off: b as u32,
            dw_off: dw as u32,
            db_off: db as u32,
            ..Self::default()
        })
    }
}

impl LayerNorm {
    /// Compiles the entry points.
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "layer_norm", &source());
        let bwd = bwd_bindings(6);
        Self {
            fwd: m.kernel("forward", &FWD_BINDINGS),
            bwd_dx: m.kernel("backward_dx", &bwd),
            bwd_params: m.kernel("backward_params", &bwd),
        }
    }

    /// Elements of the saved-statistics scratch of one LayerNorm: 2·T·B.
    pub fn stats_len(seq: usize, batch: usize) -> usize {
        2 * seq * batch
    }

    fn params(s: &LnShape) -> Result<NormUniform> {
        let shape = (s.seq, s.batch, s.features);
        let stats = Self::stats_len(s.seq, s.batch);
        let u = NormUniform::checked("layer norm", shape, norm_offsets!(s), stats)?;
        Ok(NormUniform {
            flags: u32::from(s.accumulate),
            t0: u32_of("layer norm first step", s.t0)?,
            ..u
        })
    }

    fn row_groups(ctx: &GpuContext, s: &LnShape) -> Result<(u32, u32)> {
        Ok(ctx.grid(u32_of("layer norm rows", s.seq * s.batch)?))
    }

    /// Forward: y = LN(x)·w + b on valid rows, 0 on padded rows; per-row
    /// (mean, rstd) saved to `stats`. One dispatch (none when empty).
    pub fn forward(
        &self,
        ctx: &GpuContext,
        s: &LnShape,
        b: &LnForward<'_>,
    ) -> Result<Vec<Dispatch>> {
        if s.seq * s.batch == 0 || s.features == 0 {
            return Ok(Vec::new());
        }
        let params = Self::params(s)?;
        Ok(vec![self.fwd.dispatch(
            ctx,
            &params,
            &[b.params, b.lengths, b.x, b.y, b.stats],
            Self::row_groups(ctx, s)?,
        )])
    }

    /// Backward: dw, db (column sums over valid rows, overwritten or
    /// accumulated) then dx (0 on padded rows). Two dispatches, in that
    /// order, so that dx may overwrite dy. With no rows, dw and db are
    /// still written (as 0) unless `accumulate`.
    pub fn backward(
        &self,
        ctx: &GpuContext,
        s: &LnShape,
        b: &LnBackward<'_>,
    ) -> Result<Vec<Dispatch>> {
        if s.features == 0 {
            return Ok(Vec::new());
        }
        let params = Self::params(s)?;
        let bufs = [b.params, b.lengths, b.x, b.stats, b.dy, b.dx, b.grads];
        let mut out = vec![self.bwd_params.dispatch(
            ctx,
            &params,
            &bufs,
            (
                groups_1d(ctx, "layer norm features", s.features, PARAM_COLS)?,
                1,
            ),
        )];
        if s.seq * s.batch > 0 {
            out.push(
                self.bwd_dx
                    .dispatch(ctx, &params, &bufs, Self::row_groups(ctx, s)?),
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn param_cols_is_the_shaders() {
        let pc = format!("const PC: u32 = {}u;", super::PARAM_COLS);
        assert!(
            super::source().contains(&pc),
            "layer_norm.wgsl lacks `{pc}`"
        );
    }
}
