//! Wrapper of `shaders/loss.wgsl`: softmax cross-entropy and masked MSE,
//! forward (per-row losses, then their mean) and backward (the gradient
//! w.r.t. the logits / predictions), deterministic (fixed-order reductions,
//! no atomics).
//!
//! **Per-step buffer.** What changes per batch lives in a small u32 storage
//! buffer (`step`, [`STEP_WORDS`] words at `step_off`) written with
//! `ctx.write()` before the submit: `[count, scale.to_bits()]`
//! ([`LossStep::words`]); count is the number of valid rows for
//! cross-entropy ([`ce_count`]) and of valid elements for MSE
//! ([`mse_count`]). The dispatches are built once per shape.
//!
//! **Outputs.** The forward writes per-row losses into `scratch` at
//! `rows_off` ([`CeShape::row_losses`], [`MseShape::row_losses`]; 0 on
//! ignored / masked rows) and `[mean, sum]` ([`LOSS_WORDS`] f32) into `loss`
//! at `loss_off`, with mean = sum / count (0 when count = 0). The loss is not
//! multiplied by `scale`; only the gradients are:
//! - cross-entropy: `dlogits = (softmax(logits) − onehot(target))·scale/count`;
//! - MSE: `dpred = 2·(pred − target)·scale/count`;
//!
//! and 0 on ignored / masked rows. Run the forward before the backward (the
//! cross-entropy backward reuses the row max and Σexp saved in scratch).
//!
//! Bindings: targets / mask and `step` are read-only u32 buffers (they may be
//! one buffer); every f32 buffer is bound read-write, so they may share one
//! buffer at disjoint ranges and the gradient may overwrite its input (same
//! offset).

use super::wgsl::{family_source, wgsl_struct};
use super::{fits, flat_grid, u32_of};
use crate::gpu::{Binding, Dispatch, GpuContext, Kernel, module};
use crate::{Error, Result};

family_source!(LossUniform; "common/prelude.wgsl", "common/tree.wgsl", "loss.wgsl");
const WG: usize = 64;
const WG_MEAN: usize = 256;

/// Ignored target of cross-entropy (as PyTorch's `ignore_index`).
pub const IGNORE: u32 = u32::MAX;
/// Words of the per-step buffer: `[count, scale bits]`.
pub const STEP_WORDS: usize = 2;
/// Word of the per-step buffer holding the gradient multiplier (a loss
/// scaler copies its scale there on the GPU).
pub const SCALE_WORD: usize = 1;
/// f32 words written to the loss buffer: `[mean, sum]`.
pub const LOSS_WORDS: usize = 2;
/// Most rows one loss accepts: the mean's 256 invocations stay under
/// lavapipe's 65,535 loop iterations each.
pub const MAX_ROWS: usize = WG_MEAN * 65_535;

/// The loss entry points.
pub struct Loss {
    ce_fwd: Kernel,
    ce_bwd: Kernel,
    mse_fwd: Kernel,
    mse_bwd: Kernel,
    mean: Kernel,
}

/// Per-step values of a loss, written at `step_off` of the step buffer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossStep {
    /// Valid rows (cross-entropy) or valid elements (MSE): the mean's divisor.
    pub count: u32,
    /// Gradient multiplier (1 for the plain mean; e.g. a loss weight).
    pub scale: f32,
}

impl LossStep {
    /// The words to write at `step_off`.
    pub fn words(&self) -> [u32; STEP_WORDS] {
        [self.count, self.scale.to_bits()]
    }
}

/// Valid rows of a cross-entropy batch: targets other than [`IGNORE`].
pub fn ce_count(targets: &[u32]) -> u32 {
    targets.iter().filter(|&&t| t != IGNORE).count() as u32
}

/// Valid elements of an MSE batch: nonzero mask rows times `features`.
pub fn mse_count(mask: &[u32], features: usize) -> u32 {
    (mask.iter().filter(|&&m| m != 0).count() * features) as u32
}

/// Every target must be below `classes` or be [`IGNORE`]; the error names
/// the tensor `targets` and the first bad position.
pub fn check_targets(targets: &[u32], classes: usize) -> Result<()> {
    match targets
        .iter()
        .enumerate()
        .find(|&(_, &t)| t != IGNORE && t as usize >= classes)
    {
        None => Ok(()),
        Some((i, &t)) => Err(Error::tensor(
            "targets",
            format!(
                "class {t} at position {i} is out of range for {classes} classes \
                 (valid: 0..{classes}, or {IGNORE} to ignore the row)"
            ),
        )),
    }
}

/// Cross-entropy over logits [N, V] (row stride V); offsets in elements.
#[derive(Clone, Copy, Debug, Default)]
pub struct CeShape {
    /// Rows N.
    pub rows: usize,
    /// Classes V.
    pub classes: usize,
    /// Logits [N, V].
    pub logits_off: usize,
    /// Targets u32 `[N]` in the targets buffer.
    pub targets_off: usize,
    /// Gradient w.r.t. the logits [N, V] (may equal `logits_off` in the same
    /// buffer: in place).
    pub dlogits_off: usize,
    /// Scratch: [`CeShape::scratch_len`] f32 (per-row losses, row max, row Σexp).
    pub scratch_off: usize,
    /// `[mean, sum]` in the loss buffer.
    pub loss_off: usize,
    /// `[count, scale]` in the step buffer.
    pub step_off: usize,
}

impl CeShape {
    /// Scratch words: 3·N.
    pub fn scratch_len(&self) -> usize {
        3 * self.rows
    }
    /// Element range of the per-row losses in the scratch buffer.
    pub fn row_losses(&self) -> std::ops::Range<usize> {
        self.scratch_off..self.scratch_off + self.rows
    }
}

/// Masked MSE over predictions and targets [N, K]; offsets in elements.
#[derive(Clone, Copy, Debug, Default)]
pub struct MseShape {
    /// Rows N.
    pub rows: usize,
    /// Features K per row.
    pub features: usize,
    /// Predictions [N, K].
    pub pred_off: usize,
    /// Targets [N, K] (f32).
    pub target_off: usize,
    /// Row mask u32 `[N]` (nonzero = valid) in the mask buffer.
    pub mask_off: usize,
    /// Gradient w.r.t. the predictions [N, K] (may equal `pred_off`).
    pub dpred_off: usize,
    /// Scratch: [`MseShape::scratch_len`] f32 (per-row Σ(p − t)²).
    pub scratch_off: usize,
    /// `[mean, sum]` in the loss buffer.
    pub loss_off: usize,
    /// `[count, scale]` in the step buffer.
    pub step_off: usize,
}

impl MseShape {
    /// Scratch words: N.
    pub fn scratch_len(&self) -> usize {
        self.rows
    }
    /// Element range of the per-row sums of squared errors in the scratch buffer.
    pub fn row_losses(&self) -> std::ops::Range<usize> {
        self.scratch_off..self.scratch_off + self.rows
    }
}

/// Buffers of the cross-entropy forward.
pub struct CeForward<'a> {
    /// Logits.
    pub logits: &'a wgpu::Buffer,
    /// Targets (u32), read-only.
    pub targets: &'a wgpu::Buffer,
    /// Step buffer (u32), read-only.
    pub step: &'a wgpu::Buffer,
    /// Scratch, written.
    pub scratch: &'a wgpu::Buffer,
    /// Loss, written.
    pub loss: &'a wgpu::Buffer,
}

/// Buffers of the cross-entropy backward.
pub struct CeBackward<'a> {
    /// Logits.
    pub logits: &'a wgpu::Buffer,
    /// Targets (u32), read-only.
    pub targets: &'a wgpu::Buffer,
    /// Step buffer (u32), read-only.
    pub step: &'a wgpu::Buffer,
    /// Scratch written by the forward.
    pub scratch: &'a wgpu::Buffer,
    /// Gradient, written.
    pub dlogits: &'a wgpu::Buffer,
}

/// Buffers of the MSE forward.
pub struct MseForward<'a> {
    /// Predictions.
    pub pred: &'a wgpu::Buffer,
    /// Targets.
    pub target: &'a wgpu::Buffer,
    /// Row mask (u32), read-only.
    pub mask: &'a wgpu::Buffer,
    /// Step buffer (u32), read-only.
    pub step: &'a wgpu::Buffer,
    /// Scratch, written.
    pub scratch: &'a wgpu::Buffer,
    /// Loss, written.
    pub loss: &'a wgpu::Buffer,
}

/// Buffers of the MSE backward.
pub struct MseBackward<'a> {
    /// Predictions.
    pub pred: &'a wgpu::Buffer,
    /// Targets.
    pub target: &'a wgpu::Buffer,
    /// Row mask (u32), read-only.
    pub mask: &'a wgpu::Buffer,
    /// Step buffer (u32), read-only.
    pub step: &'a wgpu::Buffer,
    /// Gradient, written.
    pub dpred: &'a wgpu::Buffer,
}

fn check_rows(rows: usize) -> Result<()> {
    if rows > MAX_ROWS {
        return Err(Error::TooLarge {
            what: "loss rows".into(),
            bytes: rows as u64 * 4,
            limit: MAX_ROWS as u64 * 4,
            kind: "loss reduction",
        });
    }
    Ok(())
}

wgsl_struct! {
    /// The uniform block of `loss.wgsl`.
    pub struct LossUniform = "Params" {
        rows: u32, cols: u32, flags: u32, labels_off: u32,
        x_off: u32, tgt_off: u32, dx_off: u32, rows_off: u32,
        loss_off: u32, step_off: u32, _p0: u32, _p1: u32,
    }
}

impl Loss {
    /// Compiles the entry points.
    pub fn new(ctx: &GpuContext) -> Self {
        use Binding::{Read, ReadWrite};
        let m = module(ctx, "loss", &source());
        Self {
            ce_fwd: m.kernel("ce_forward", &[(1, Read), (3, ReadWrite), (5, ReadWrite)]),
            ce_bwd: m.kernel(
                "ce_backward",
                &[
                    (1, Read),
                    (2, Read),
                    (3, ReadWrite),
                    (5, ReadWrite),
                    (7, ReadWrite),
                ],
            ),
            mse_fwd: m.kernel(
                "mse_forward",
                &[(1, Read), (3, ReadWrite), (4, ReadWrite), (5, ReadWrite)],
            ),
            mse_bwd: m.kernel(
                "mse_backward",
                &[
                    (1, Read),
                    (2, Read),
                    (3, ReadWrite),
                    (4, ReadWrite),
                    (7, ReadWrite),
                ],
            ),
            mean: m.kernel("mean", &[(2, Read), (5, ReadWrite), (6, ReadWrite)]),
        }
    }

    fn ce_uniform(s: &CeShape) -> Result<LossUniform> {
        check_rows(s.rows)?;
        if s.rows > 0 && s.classes == 0 {
            return Err(Error::Invalid(
                "cross-entropy needs at least one class".into(),
            ));
        }
        let n = s.rows * s.classes;
        Ok(LossUniform {
            rows: u32_of("cross-entropy rows", s.rows)?,
            cols: u32_of("cross-entropy classes", s.classes)?,
            labels_off: fits("cross-entropy targets", s.targets_off, s.rows)?,
            x_off: fits("cross-entropy logits", s.logits_off, n)?,
            dx_off: fits("cross-entropy logit gradient", s.dlogits_off, n)?,
            rows_off: fits("cross-entropy scratch", s.scratch_off, s.scratch_len())?,
            loss_off: fits("loss", s.loss_off, LOSS_WORDS)?,
            step_off: fits("loss step state", s.step_off, STEP_WORDS)?,
            ..Default::default()
        })
    }

    fn mse_uniform(s: &MseShape) -> Result<LossUniform> {
        check_rows(s.rows)?;
        let n = s.rows * s.features;
        Ok(LossUniform {
            rows: u32_of("MSE rows", s.rows)?,
            cols: u32_of("MSE features", s.features)?,
            labels_off: fits("MSE mask", s.mask_off, s.rows)?,
            x_off: fits("MSE predictions", s.pred_off, n)?,
            tgt_off: fits("MSE targets", s.target_off, n)?,
            dx_off: fits("MSE prediction gradient", s.dpred_off, n)?,
            rows_off: fits("MSE scratch", s.scratch_off, s.scratch_len())?,
            loss_off: fits("loss", s.loss_off, LOSS_WORDS)?,
            step_off: fits("loss step state", s.step_off, STEP_WORDS)?,
            ..Default::default()
        })
    }

    fn rows_grid(ctx: &GpuContext, rows: usize) -> Result<(u32, u32)> {
        flat_grid(ctx, "loss rows", rows, 1)
    }

    /// Cross-entropy forward: per-row losses `−log softmax(logits)[target]`
    /// (max-subtracted; 0 on ignored rows) and the row max and Σexp into
    /// scratch, then `[mean, sum]` into `loss`. Two dispatches (one per
    /// row's workgroup, then one workgroup for the mean); with N = 0 only the
    /// mean (writing 0).
    pub fn ce_forward(
        &self,
        ctx: &GpuContext,
        s: &CeShape,
        b: &CeForward<'_>,
    ) -> Result<Vec<Dispatch>> {
        let w = Self::ce_uniform(s)?;
        let mut out = Vec::with_capacity(2);
        if s.rows > 0 {
            out.push(self.ce_fwd.dispatch(
                ctx,
                &w,
                &[b.targets, b.logits, b.scratch],
                Self::rows_grid(ctx, s.rows)?,
            ));
        }
        out.push(
            self.mean
                .dispatch(ctx, &w, &[b.step, b.scratch, b.loss], (1, 1)),
        );
        Ok(out)
    }

    /// Cross-entropy backward: dlogits = (softmax − onehot)·scale/count (0 on
    /// ignored rows), from the forward's scratch. One dispatch (none when
    /// N·V = 0).
    pub fn ce_backward(
        &self,
        ctx: &GpuContext,
        s: &CeShape,
        b: &CeBackward<'_>,
    ) -> Result<Vec<Dispatch>> {
        let w = Self::ce_uniform(s)?;
        let n = s.rows * s.classes;
        if n == 0 {
            return Ok(Vec::new());
        }
        Ok(vec![self.ce_bwd.dispatch(
            ctx,
            &w,
            &[b.targets, b.step, b.logits, b.scratch, b.dlogits],
            flat_grid(ctx, "cross-entropy elements", n, WG)?,
        )])
    }

    /// MSE forward: per-row Σ(p − t)² (0 on masked rows) into scratch, then
    /// `[mean, sum]` into `loss`. Two dispatches (with N = 0 only the mean).
    pub fn mse_forward(
        &self,
        ctx: &GpuContext,
        s: &MseShape,
        b: &MseForward<'_>,
    ) -> Result<Vec<Dispatch>> {
        let w = Self::mse_uniform(s)?;
        let mut out = Vec::with_capacity(2);
        if s.rows > 0 {
            out.push(self.mse_fwd.dispatch(
                ctx,
                &w,
                &[b.mask, b.pred, b.target, b.scratch],
                Self::rows_grid(ctx, s.rows)?,
            ));
        }
        out.push(
            self.mean
                .dispatch(ctx, &w, &[b.step, b.scratch, b.loss], (1, 1)),
        );
        Ok(out)
    }

    /// MSE backward: dpred = 2(p − t)·scale/count (0 on masked rows). One
    /// dispatch (none when N·K = 0).
    pub fn mse_backward(
        &self,
        ctx: &GpuContext,
        s: &MseShape,
        b: &MseBackward<'_>,
    ) -> Result<Vec<Dispatch>> {
        let w = Self::mse_uniform(s)?;
        let n = s.rows * s.features;
        if n == 0 {
            return Ok(Vec::new());
        }
        Ok(vec![self.mse_bwd.dispatch(
            ctx,
            &w,
            &[b.mask, b.step, b.pred, b.target, b.dpred],
            flat_grid(ctx, "MSE elements", n, WG)?,
        )])
    }
}
