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
//!    `min(1, max_norm / (norm + 1e-6))` and the non-finite flag, and updates
//!    the loss scaler;
//! 4. `apply` (only when `max_norm`, `clip_value` or a loss scaler is
//!    given): one workgroup per chunk unscales the segment elements in place
//!    (×1/S), multiplies them by the scale read from the stats buffer (no
//!    host readback in between), then clamps them to
//!    `[-clip_value, clip_value]`.
//!
//! **Loss scaling.** With a [`ScalerConfig`] the plan is
//! `torch.amp.GradScaler`'s `unscale_` + `update` fused into the clip: the
//! gradients are taken to carry the factor S (stats word 5, see
//! [`ClipPlan::scale_word`]); every norm, the clip scale and the non-finite
//! test are of the unscaled gradients g/S, `apply` writes (g/S)·scale, and
//! `finalize` moves S to word 4 and sets the S of the next step: ×backoff on
//! a non-finite step (counted), ×growth after `interval` finite steps in a
//! row (kept when the product would overflow f32).
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

use super::wgsl::{family_source, wgsl_struct};
use super::{grid, u32_of};
use crate::gpu::{Binding, Dispatch, GpuContext, Kernel, module};
use crate::{Error, Result};

/// Dynamic loss scaling as PyTorch's `torch.amp.GradScaler`: the loss
/// gradient is multiplied by the scale S; after backward the gradients are
/// unscaled (×1/S) inside the clip-by-norm pass; a step whose gradients are
/// not finite is skipped and S ×= `backoff`; after `interval` finite steps
/// in a row S ×= `growth`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScalerConfig {
    /// Initial S.
    pub init_scale: f32,
    /// Factor after `interval` good steps.
    pub growth: f32,
    /// Factor after a non-finite step.
    pub backoff: f32,
    /// Good steps in a row before growing.
    pub interval: u32,
}

impl Default for ScalerConfig {
    /// PyTorch's defaults: 65536, ×2 every 2000 good steps, ×0.5 on overflow.
    fn default() -> Self {
        Self {
            init_scale: 65536.0,
            growth: 2.0,
            backoff: 0.5,
            interval: 2000,
        }
    }
}

impl ScalerConfig {
    /// Checks the factors and the scale.
    pub fn validate(&self) -> Result<()> {
        let ok = self.init_scale.is_finite()
            && self.init_scale > 0.0
            && self.growth.is_finite()
            && self.growth >= 1.0
            && self.backoff > 0.0
            && self.backoff < 1.0
            && self.interval >= 1
            && self.interval <= MAX_COUNT;
        match ok {
            true => Ok(()),
            false => Err(Error::Invalid(format!(
                "loss scaler {self:?}: needs a finite scale > 0, growth >= 1, backoff in (0, 1) \
                 and an interval in 1..=2^24"
            ))),
        }
    }
}

/// Largest count the GPU keeps exactly (its counters are f32 integers).
const MAX_COUNT: u32 = 1 << 24;

/// Where a dynamic loss scaler stands: what `GradScaler.state_dict()`
/// holds (`scale`, `_growth_tracker`) and the skipped steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScalerState {
    /// S for the next step.
    pub scale: f32,
    /// Finite steps in a row since the last growth or backoff.
    pub good_steps: u32,
    /// Steps skipped for non-finite gradients (saturates at 2^24).
    pub skipped: u32,
}

impl ScalerState {
    /// The state before the first step.
    pub fn new(c: &ScalerConfig) -> Self {
        Self {
            scale: c.init_scale,
            good_steps: 0,
            skipped: 0,
        }
    }

    /// The three f32 words the GPU keeps.
    pub fn words(&self) -> [f32; 3] {
        [self.scale, self.good_steps as f32, self.skipped as f32]
    }

    /// From the GPU's three words.
    pub fn from_words(w: &[f32]) -> Self {
        Self {
            scale: w[0],
            good_steps: w[1] as u32,
            skipped: w[2] as u32,
        }
    }

    /// A finite scale > 0 and counters the GPU can hold.
    pub fn validate(&self) -> Result<()> {
        match self.scale.is_finite()
            && self.scale > 0.0
            && self.good_steps <= MAX_COUNT
            && self.skipped <= MAX_COUNT
        {
            true => Ok(()),
            false => Err(Error::Invalid(format!(
                "loss scaler state {self:?}: needs a finite scale > 0 and counters <= 2^24"
            ))),
        }
    }
}

family_source!(ClipUniform; "common/prelude.wgsl", "clip.wgsl");

/// Invocations per workgroup (`WG` in the shader).
const WG: usize = 64;
/// Elements per chunk: one workgroup reduces one chunk, 64 per invocation.
pub const CHUNK: usize = WG * 64;
/// Words of the stats buffer before the per-segment sums of squares:
/// `[sum_sq, norm, scale, nonfinite, loss_scale_used, loss_scale,
/// good_steps, skipped]`.
pub const STATS_HEADER: usize = 8;
/// Stats word of the loss scale S the next step's gradients are to carry.
const SCALE_WORD: usize = 5;

const HAS_MAX_NORM: u32 = 1;
const HAS_CLIP_VALUE: u32 = 2;
const HAS_SCALER: u32 = 4;

wgsl_struct! {
    /// The uniform block of `clip.wgsl`.
    pub struct ClipUniform = "Params" {
        n_chunks: u32, n_segs: u32, seg_base: u32, flags: u32,
        max_norm: f32, clip_value: f32, growth: f32, backoff: f32,
        interval: u32, _p0: u32, _p1: u32, _p2: u32,
    }
}

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
    /// The loss scale S the gradients carried and were divided by (1
    /// without a loss scaler).
    pub loss_scale: f32,
    /// L2 norm of each segment, in the order the segments were given
    /// (before clipping; NaN or Inf for a segment holding a non-finite value).
    pub per_tensor: Vec<f32>,
}

/// The dispatches of one clip of a fixed buffer and segment list, and the
/// buffers they use. Re-record it every step.
pub struct ClipPlan {
    /// The dispatches, to record in this order (3 without clipping, 4 with).
    pub dispatches: Vec<Dispatch>,
    /// f32 stats: `[sum_sq, norm, scale, nonfinite (0/1), loss_scale_used,
    /// loss_scale, good_steps, skipped, seg_sum_sq...]`.
    pub stats: wgpu::Buffer,
    /// Number of segments (per-tensor entries in the stats).
    pub segments: usize,
    /// The loss scaler, when the plan unscales.
    pub scaler: Option<ScalerConfig>,
    // Kept alive with the plan: the chunk/segment table and the partials.
    _table: wgpu::Buffer,
    _partials: wgpu::Buffer,
}

impl Clip {
    /// Compiles the kernels.
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "clip", &source());
        use Binding::{Read, ReadWrite};
        let partials = m.kernel(
            "partials",
            &[(1, Read), (2, Read), (3, ReadWrite), (8, Read)],
        );
        let segsum = m.kernel("segsum", &[(1, Read), (4, Read), (5, ReadWrite)]);
        let finalize = m.kernel("finalize", &[(5, ReadWrite)]);
        let apply = m.kernel("apply", &[(1, Read), (6, Read), (7, ReadWrite)]);
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
        let opts = ClipOptions {
            max_norm,
            clip_value,
            scaler: None,
        };
        self.plan_with(ctx, grads, segments, &opts, None)
    }

    /// [`Clip::plan`] with a loss scaler too. `stats`: the stats buffer of
    /// an earlier plan of the same segments to keep (and its scaler state,
    /// when both plans scale), so that readers bound to it (the optimizer's
    /// skip flag) stay valid; otherwise a new one, whose scaler starts at
    /// the configured initial scale.
    pub fn plan_with(
        &self,
        ctx: &GpuContext,
        grads: &wgpu::Buffer,
        segments: &[(usize, usize)],
        opts: &ClipOptions,
        stats: Option<&wgpu::Buffer>,
    ) -> Result<ClipPlan> {
        let ClipOptions {
            max_norm,
            clip_value,
            scaler,
        } = *opts;
        opts.validate()?;
        check_segments(grads, segments)?;
        let (table, n_chunks, seg_base) = chunk_table(segments)?;

        let flags = if max_norm.is_some() { HAS_MAX_NORM } else { 0 }
            | if clip_value.is_some() {
                HAS_CLIP_VALUE
            } else {
                0
            }
            | if scaler.is_some() { HAS_SCALER } else { 0 };
        let sc = scaler.unwrap_or_default();
        let params = ClipUniform {
            n_chunks: u32_of("chunk count", n_chunks)?,
            n_segs: u32_of("segment count", segments.len())?,
            seg_base: u32_of("table size", seg_base)?,
            flags,
            max_norm: max_norm.unwrap_or(0.0),
            clip_value: clip_value.unwrap_or(0.0),
            growth: sc.growth,
            backoff: sc.backoff,
            interval: sc.interval,
            ..Default::default()
        };

        let table_buf = ctx.storage_init("clip table", &table)?;
        let partials = ctx.storage("clip partials", 2 * n_chunks)?;
        let stats = stats_buffer(ctx, stats, segments.len(), scaler.as_ref())?;
        let chunk_grid = grid(ctx, "clip chunks", n_chunks)?;
        let seg_grid = grid(ctx, "clip segments", segments.len())?;

        let mut dispatches = vec![
            self.partials.dispatch(
                ctx,
                &params,
                &[&table_buf, grads, &partials, &stats],
                chunk_grid,
            ),
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
            scaler,
            _table: table_buf,
            _partials: partials,
        })
    }
}

impl ClipOptions {
    /// Refuses a bound that is negative or not finite, and a bad scaler.
    fn validate(&self) -> Result<()> {
        if let Some(s) = &self.scaler {
            s.validate()?;
        }
        if let Some(m) = self.max_norm
            && !(m.is_finite() && m >= 0.0)
        {
            return Err(Error::Invalid(format!(
                "max_norm must be finite and >= 0, got {m}"
            )));
        }
        if let Some(v) = self.clip_value
            && !(v.is_finite() && v >= 0.0)
        {
            return Err(Error::Invalid(format!(
                "clip_value must be finite and >= 0, got {v}"
            )));
        }
        Ok(())
    }
}

/// The kernels' table of `segments`: chunks (offset, len) of at most
/// [`CHUNK`] values, then (first chunk, chunk count) per segment; with the
/// chunk count and where the segment part starts.
fn chunk_table(segments: &[(usize, usize)]) -> Result<(Vec<u32>, usize, usize)> {
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
    let (n_chunks, seg_base) = (chunks.len() / 2, chunks.len());
    let mut table = chunks;
    table.extend_from_slice(&segs);
    Ok((table, n_chunks, seg_base))
}

/// The stats buffer of a plan of `segments` segments: `kept` (an earlier
/// plan's, of the right size), or a new one whose scaler state starts at
/// `scaler`'s initial scale.
fn stats_buffer(
    ctx: &GpuContext,
    kept: Option<&wgpu::Buffer>,
    segments: usize,
    scaler: Option<&ScalerConfig>,
) -> Result<wgpu::Buffer> {
    let words = STATS_HEADER + segments;
    match kept {
        Some(b) if b.size() == (4 * words.max(1)) as u64 => Ok(b.clone()),
        Some(b) => Err(Error::Invalid(format!(
            "clip stats buffer of {} bytes, expected {} words",
            b.size(),
            words
        ))),
        None => {
            let b = ctx.storage("clip stats", words)?;
            if let Some(s) = scaler {
                ctx.write(&b, SCALE_WORD, &ScalerState::new(s).words());
            }
            Ok(b)
        }
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
            loss_scale: s[4],
            per_tensor: s[STATS_HEADER..]
                .iter()
                .map(|&v| (v as f64).sqrt() as f32)
                .collect(),
        })
    }
}

/// What a clip plan does besides measuring.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClipOptions {
    /// Clip to this global L2 norm (`clip_grad_norm_`).
    pub max_norm: Option<f32>,
    /// Clamp to `[-v, v]` (`clip_grad_value_`), after the norm scaling.
    pub clip_value: Option<f32>,
    /// Unscale by a dynamic loss scale first.
    pub scaler: Option<ScalerConfig>,
}

impl ClipPlan {
    /// Byte offset in [`ClipPlan::stats`] of the f32 loss scale S that the
    /// next step's loss gradient is to be multiplied by (copy it into the
    /// loss's step buffer before the step's passes).
    pub fn scale_word(&self) -> u64 {
        (4 * SCALE_WORD) as u64
    }

    /// The loss scaler's state as the last recorded clip left it (waits for
    /// the GPU); `None` without a scaler.
    pub fn scaler_state(&self, ctx: &GpuContext) -> Result<Option<ScalerState>> {
        if self.scaler.is_none() {
            return Ok(None);
        }
        let w = ctx.read_f32(&self.stats, SCALE_WORD, 3)?;
        Ok(Some(ScalerState::from_words(&w)))
    }

    /// Replaces the loss scaler's state (e.g. when resuming); an error
    /// without a scaler or for a scale that is not finite and > 0.
    pub fn set_scaler_state(&self, ctx: &GpuContext, s: &ScalerState) -> Result<()> {
        if self.scaler.is_none() {
            return Err(Error::Invalid(
                "this clip plan has no loss scaler to set".into(),
            ));
        }
        s.validate()?;
        ctx.write(&self.stats, SCALE_WORD, &s.words());
        Ok(())
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
