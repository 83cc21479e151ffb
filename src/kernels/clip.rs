//! Wrapper of `shaders/clip.wgsl`: deterministic global and per-tensor L2
//! norms of gradient segments, clip by norm and clip by value, all on the GPU.
//!
//! A [`ClipPlan`] is built once for a gradient buffer and a list of
//! `(offset, len)` segments (in elements), then recorded into a compute pass
//! every step. It is a fixed list of four dispatches (three when it only
//! measures):
//!
//! 1. `partials`: one workgroup per chunk of at most [`CHUNK`] elements (each
//!    chunk inside one segment) writes the chunk's sum of squares and a
//!    NaN/Inf flag (fixed-order tree in workgroup memory);
//! 2. `segsum`: one workgroup per segment reduces its chunk partials, in a
//!    fixed order, to the segment's (tensor's) sum of squares;
//! 3. `finalize`: one workgroup reduces the per-segment sums in a fixed order
//!    to the global sum and writes the norm, the scale
//!    `min(1, max_norm / (norm + 1e-6))` and the non-finite flag;
//! 4. `apply` (only when `max_norm` or `clip_value` is given): one workgroup
//!    per chunk multiplies the segment elements in place by the scale read
//!    from the stats buffer (no host readback in between), then clamps them
//!    to `[-clip_value, clip_value]`.
//!
//! The norm is always that of the gradients as they were before clipping
//! (what `torch.nn.utils.clip_grad_norm_` returns). With both `max_norm` and
//! `clip_value` set, the norm scaling is applied first, then the clamp.
//!
//! **Non-finite gradients.** When any element of the segments is NaN or ±Inf,
//! or the f32 sum of squares overflows, the stats' flag is set, the reported
//! sum/norm are non-finite, the scale is forced to 1 and `apply` leaves every
//! gradient untouched (no scaling, no clamping), so that a trainer can read
//! [`ClipStats::nonfinite`] and skip the optimiser step.
//!
//! Elements of the buffer outside the segments are never read or written.
//! Results are bit-identical from run to run (no atomics).

use super::{groups_1d, u32_of};
use crate::gpu::{Binding, Dispatch, GpuContext, Kernel, module};
use crate::{Error, Result};

const SRC: &str = include_str!("../../shaders/clip.wgsl");

/// Invocations per workgroup (`WG` in the shader).
const WG: usize = 64;
/// Elements per chunk: one workgroup reduces one chunk, 64 per invocation.
pub const CHUNK: usize = WG * 64;
/// Words of the stats buffer before the per-segment sums of squares.
pub const STATS_HEADER: usize = 4;

const HAS_MAX_NORM: u32 = 1;
const HAS_CLIP_VALUE: u32 = 2;

/// The clipping kernels.
pub struct Clip {
    partials: Kernel,
    segsum: Kernel,
    finalize: Kernel,
    apply: Kernel,
}

/// What one clip measured, read back from the stats buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipStats {
    /// L2 norm of all segments together, before clipping (non-finite when
    /// `nonfinite`).
    pub total_norm: f32,
    /// Factor the gradients were multiplied by (1 when not clipped, when
    /// `max_norm` was not given, or when `nonfinite`).
    pub scale: f32,
    /// Some gradient was NaN or ±Inf, or the sum of squares overflowed: the
    /// gradients were left untouched and the step should be skipped.
    pub nonfinite: bool,
    /// L2 norm of each segment, in the order the segments were given
    /// (before clipping; NaN or Inf for a segment holding a non-finite value).
    pub per_tensor: Vec<f32>,
}

/// The dispatches of one clip of a fixed buffer and segment list, and the
/// buffers they use. Re-record it every step.
pub struct ClipPlan {
    /// The dispatches, to record in this order (3 without clipping, 4 with).
    pub dispatches: Vec<Dispatch>,
    /// f32 stats: `[sum_sq, norm, scale, nonfinite (0/1), seg_sum_sq...]`.
    pub stats: wgpu::Buffer,
    /// Number of segments (per-tensor entries in the stats).
    pub segments: usize,
    // Kept alive with the plan: the chunk/segment table and the partials.
    _table: wgpu::Buffer,
    _partials: wgpu::Buffer,
}

impl Clip {
    /// Compiles the kernels.
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "clip", SRC);
        use Binding::{Read, ReadWrite};
        let partials = Kernel::new(
            ctx,
            &m,
            "partials",
            &[(1, Read), (2, Read), (3, ReadWrite)],
            &[],
        );
        let segsum = Kernel::new(
            ctx,
            &m,
            "segsum",
            &[(1, Read), (4, Read), (5, ReadWrite)],
            &[],
        );
        let finalize = Kernel::new(ctx, &m, "finalize", &[(5, ReadWrite)], &[]);
        let apply = Kernel::new(
            ctx,
            &m,
            "apply",
            &[(1, Read), (6, Read), (7, ReadWrite)],
            &[],
        );
        Self {
            partials,
            segsum,
            finalize,
            apply,
        }
    }

    /// Plans the norm of `segments` (`(offset, len)` in elements of `grads`,
    /// non-overlapping, in any order; per-tensor results follow this order),
    /// clipped to `max_norm` (global L2 norm, as `clip_grad_norm_`) and/or to
    /// `[-clip_value, clip_value]` (as `clip_grad_value_`). With neither, the
    /// plan only measures. Segments may be empty.
    pub fn plan(
        &self,
        ctx: &GpuContext,
        grads: &wgpu::Buffer,
        segments: &[(usize, usize)],
        max_norm: Option<f32>,
        clip_value: Option<f32>,
    ) -> Result<ClipPlan> {
        if let Some(m) = max_norm
            && !(m.is_finite() && m >= 0.0)
        {
            return Err(Error::Invalid(format!(
                "max_norm must be finite and >= 0, got {m}"
            )));
        }
        if let Some(v) = clip_value
            && !(v.is_finite() && v >= 0.0)
        {
            return Err(Error::Invalid(format!(
                "clip_value must be finite and >= 0, got {v}"
            )));
        }
        check_segments(grads, segments)?;

        // Chunks (offset, len), then (first chunk, chunk count) per segment.
        let mut chunks: Vec<u32> = Vec::new();
        let mut segs: Vec<u32> = Vec::with_capacity(2 * segments.len());
        for &(off, len) in segments {
            let first = chunks.len() / 2;
            let mut start = 0;
            while start < len {
                let n = CHUNK.min(len - start);
                chunks.push(u32_of("gradient offset", off + start)?);
                chunks.push(n as u32);
                start += n;
            }
            segs.push(u32_of("chunk index", first)?);
            segs.push(u32_of("chunk count", chunks.len() / 2 - first)?);
        }
        let n_chunks = chunks.len() / 2;
        let seg_base = chunks.len();
        let mut table = chunks;
        table.extend_from_slice(&segs);

        let flags = if max_norm.is_some() { HAS_MAX_NORM } else { 0 }
            | if clip_value.is_some() {
                HAS_CLIP_VALUE
            } else {
                0
            };
        let params = [
            u32_of("chunk count", n_chunks)?,
            u32_of("segment count", segments.len())?,
            u32_of("table size", seg_base)?,
            flags,
            max_norm.unwrap_or(0.0).to_bits(),
            clip_value.unwrap_or(0.0).to_bits(),
            0,
            0,
        ];

        let table_buf = ctx.storage_init("clip table", &table)?;
        let partials = ctx.storage("clip partials", 2 * n_chunks)?;
        let stats = ctx.storage("clip stats", STATS_HEADER + segments.len())?;
        let chunk_grid = grid(ctx, "clip chunks", n_chunks)?;
        let seg_grid = grid(ctx, "clip segments", segments.len())?;

        let mut dispatches = vec![
            self.partials
                .dispatch(ctx, &params, &[&table_buf, grads, &partials], chunk_grid),
            self.segsum
                .dispatch(ctx, &params, &[&table_buf, &partials, &stats], seg_grid),
            self.finalize.dispatch(ctx, &params, &[&stats], (1, 1)),
        ];
        if flags != 0 && n_chunks > 0 {
            dispatches.push(self.apply.dispatch(
                ctx,
                &params,
                &[&table_buf, &stats, grads],
                chunk_grid,
            ));
        }
        Ok(ClipPlan {
            dispatches,
            stats,
            segments: segments.len(),
            _table: table_buf,
            _partials: partials,
        })
    }
}

impl ClipPlan {
    /// Records the dispatches into `pass`, in order.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.dispatches {
            d.record(pass);
        }
    }

    /// Reads the stats of the last recorded clip back (waits for the GPU).
    pub fn read(&self, ctx: &GpuContext) -> Result<ClipStats> {
        let s = ctx.read_f32(&self.stats, 0, STATS_HEADER + self.segments)?;
        Ok(ClipStats {
            total_norm: s[1],
            scale: s[2],
            nonfinite: s[3] != 0.0,
            per_tensor: s[STATS_HEADER..]
                .iter()
                .map(|&v| (v as f64).sqrt() as f32)
                .collect(),
        })
    }
}

/// Segments must lie inside `grads` and must not overlap (an element in two
/// segments would be scaled twice).
fn check_segments(grads: &wgpu::Buffer, segments: &[(usize, usize)]) -> Result<()> {
    let elems = (grads.size() / 4) as usize;
    let mut sorted: Vec<(usize, usize)> = Vec::with_capacity(segments.len());
    for &(off, len) in segments {
        match off.checked_add(len) {
            Some(end) if end <= elems => {}
            _ => {
                return Err(Error::Invalid(format!(
                    "clip segment ({off}, {len}) exceeds the gradient buffer of {elems} elements"
                )));
            }
        }
        if len > 0 {
            sorted.push((off, len));
        }
    }
    sorted.sort_unstable();
    for w in sorted.windows(2) {
        let ((a, an), (b, _)) = (w[0], w[1]);
        if a + an > b {
            return Err(Error::Invalid(format!(
                "clip segments ({a}, {an}) and ({b}, ..) overlap"
            )));
        }
    }
    Ok(())
}

/// Workgroup grid for `n` workgroups: x up to the per-dimension limit, then
/// y (the shader flattens it back and skips the excess).
fn grid(ctx: &GpuContext, what: &str, n: usize) -> Result<(u32, u32)> {
    let max = ctx.limits.max_compute_workgroups_per_dimension.max(1) as usize;
    // Rows of `max` workgroups; the row count must itself fit a dimension.
    groups_1d(ctx, what, n, max)?;
    Ok(ctx.grid(u32_of(what, n)?))
}
