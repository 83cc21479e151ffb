//! Wrapper of `shaders/attention.wgsl`: attention pooling over a stack's
//! outputs `h` `[T, B, W]` (time-major), the input of a regression head on
//! `[context; h_T]`, forward and backward, deterministic (fixed-order
//! loops and trees, no atomics).
//!
//! For sequence b with `n = len_b` valid steps and `h_T = h[n − 1, b]`:
//! scores `s_t = h_t · h_T` ([`AttentionShape::learned`] false) or
//! `s_t = q · h_t` (true, `q` `[W]` in the parameter buffer), weights
//! `a = softmax(s)` over `t < n` (0 past the length), and the head's input
//! `z[b] = [Σ_t a_t h_t ; h_T]` `[B, 2W]`. The backward takes `dz` in the
//! same buffer (the head's input gradient overwrites its input, as the
//! trainer's head writes it), writes `dh` `[T, B, W]` whole (0 at padded
//! positions) and, for a learned query, `dq = Σ_b Σ_t ds_t h_t` into the
//! gradient buffer (overwritten), summed over the batch in order.
//!
//! **Scratch** ([`AttentionShape::scratch_len`] f32 at `scratch_off`): the
//! weights `a` `[B, T]` first ([`AttentionShape::weights`]: written by the
//! forward, read by the backward and by whoever reports them), then the
//! backward's `ds` `[B, T]` and the per-sequence query gradients `[B, W]`.
//!
//! Bindings: `lengths` is a read-only u32 buffer; every f32 buffer is bound
//! read-write and they must be distinct buffers, except that the parameter
//! and gradient buffers may be any (they are only read at `q_off` and only
//! written at `dq_off`).

use super::gemm::LOOP_CAP;
use super::wgsl::{family_source, wgsl_struct};
use super::{fits, flat_grid, u32_of};
use crate::gpu::{Binding, Dispatch, GpuContext, Kernel, module};
use crate::{Error, Result};

family_source!(AttentionUniform; "common/prelude.wgsl", "common/tree.wgsl", "attention.wgsl");
/// Invocations per sequence of the forward and backward.
const WG: usize = 256;
const WG_SUM: usize = 64;
const LEARNED: u32 = 1;

/// The attention entry points.
pub struct Attention {
    forward: Kernel,
    backward: Kernel,
    query_grad: Kernel,
}

/// One pooling: sizes and offsets (in elements) of its tensors.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttentionShape {
    /// T.
    pub seq: usize,
    /// B.
    pub batch: usize,
    /// W, the width of each output.
    pub width: usize,
    /// Scores against a trained query `q` (else against `h_T`).
    pub learned: bool,
    /// The outputs `[T, B, W]`.
    pub h_off: usize,
    /// The u32 lengths `[B]` (each in 1..=T).
    pub len_off: usize,
    /// The query `[W]` in the parameter buffer (learned only).
    pub q_off: usize,
    /// The head's input `[B, 2W]` (forward: written; backward: its
    /// gradient, read).
    pub z_off: usize,
    /// The scratch ([`AttentionShape::scratch_len`] words).
    pub scratch_off: usize,
    /// `dh` `[T, B, W]` (backward).
    pub dh_off: usize,
    /// The query's gradient `[W]` in the gradient buffer (backward, learned).
    pub dq_off: usize,
}

impl AttentionShape {
    /// Scratch words: `2·B·T + B·W`.
    pub fn scratch_len(&self) -> usize {
        self.batch * (2 * self.seq + self.width)
    }

    /// Element range of the weights `[B, T]` in the scratch buffer.
    pub fn weights(&self) -> std::ops::Range<usize> {
        self.scratch_off..self.scratch_off + self.batch * self.seq
    }

    /// Loop passes of one invocation of the forward or the backward, at
    /// most: its steps' dot products over W, its columns' sums over T,
    /// the loops' exit checks and two trees.
    pub fn loop_passes(&self) -> usize {
        let (t, w) = (self.seq, self.width);
        t.div_ceil(WG) * (w + 4) + w.div_ceil(WG) * (t + 3) + 2 * 10
    }
}

/// Buffers of the forward.
pub struct AttentionForward<'a> {
    /// Lengths (u32), read-only.
    pub lengths: &'a wgpu::Buffer,
    /// The outputs.
    pub h: &'a wgpu::Buffer,
    /// The parameters (the query's).
    pub params: &'a wgpu::Buffer,
    /// The head's input, written.
    pub z: &'a wgpu::Buffer,
    /// Scratch, written.
    pub scratch: &'a wgpu::Buffer,
}

/// Buffers of the backward.
pub struct AttentionBackward<'a> {
    /// Lengths (u32), read-only.
    pub lengths: &'a wgpu::Buffer,
    /// The outputs.
    pub h: &'a wgpu::Buffer,
    /// The parameters (the query's).
    pub params: &'a wgpu::Buffer,
    /// The head's input gradient, read.
    pub dz: &'a wgpu::Buffer,
    /// Scratch written by the forward.
    pub scratch: &'a wgpu::Buffer,
    /// Gradient w.r.t. the outputs, written.
    pub dh: &'a wgpu::Buffer,
    /// The gradients (the query's, written when learned).
    pub grads: &'a wgpu::Buffer,
}

wgsl_struct! {
    /// The uniform block of `attention.wgsl`.
    pub struct AttentionUniform = "Params" {
        seq: u32, batch: u32, width: u32, flags: u32,
        h_off: u32, len_off: u32, q_off: u32, z_off: u32,
        a_off: u32, ds_off: u32, dh_off: u32, dq_off: u32,
        g_off: u32, _p0: u32, _p1: u32, _p2: u32,
    }
}

impl Attention {
    /// Compiles the entry points.
    pub fn new(ctx: &GpuContext) -> Self {
        use Binding::{Read, ReadWrite};
        let m = module(ctx, "attention", &source());
        let rw = |i: u32| (i, ReadWrite);
        Self {
            forward: m.kernel(
                "attention_forward",
                &[(1, Read), rw(2), rw(3), rw(4), rw(5)],
            ),
            backward: m.kernel(
                "attention_backward",
                &[(1, Read), rw(2), rw(3), rw(4), rw(5), rw(6)],
            ),
            query_grad: m.kernel("attention_query_grad", &[rw(5), rw(7)]),
        }
    }

    /// The uniform of `s`, its sizes checked: offsets within u32 and each
    /// invocation's loop passes within [`LOOP_CAP`] (on every adapter, so
    /// that the path tested on lavapipe is the one that runs).
    fn uniform(s: &AttentionShape) -> Result<AttentionUniform> {
        let passes = s.loop_passes().max(s.batch);
        if passes > LOOP_CAP {
            return Err(Error::Invalid(format!(
                "attention pooling over {} steps of width {} in batches of {}: {passes} loop \
                 passes an invocation, over the {LOOP_CAP} that lavapipe runs (kept on every \
                 adapter); shorten the sequences, narrow the outputs or shrink the batch",
                s.seq, s.width, s.batch
            )));
        }
        let (t, b, w) = (s.seq, s.batch, s.width);
        let bt = b * t;
        Ok(AttentionUniform {
            seq: u32_of("attention steps", t)?,
            batch: u32_of("attention batch", b)?,
            width: u32_of("attention width", w)?,
            flags: if s.learned { LEARNED } else { 0 },
            h_off: fits("attention outputs", s.h_off, t * b * w)?,
            len_off: fits("lengths", s.len_off, b)?,
            q_off: fits("attention query", s.q_off, w)?,
            z_off: fits("head input", s.z_off, b * 2 * w)?,
            a_off: fits("attention scratch", s.scratch_off, s.scratch_len())?,
            ds_off: (s.scratch_off + bt) as u32,
            dh_off: fits("attention output gradient", s.dh_off, t * b * w)?,
            dq_off: (s.scratch_off + 2 * bt) as u32,
            g_off: fits("attention query gradient", s.dq_off, w)?,
            ..Default::default()
        })
    }

    /// One dispatch of `k` binding `bufs`, an invocation per sequence
    /// (none when the batch or the width is empty; the shape checked
    /// either way).
    fn per_sequence(
        ctx: &GpuContext,
        s: &AttentionShape,
        k: &Kernel,
        bufs: &[&wgpu::Buffer],
    ) -> Result<Vec<Dispatch>> {
        let w = Self::uniform(s)?;
        if s.batch * s.width == 0 {
            return Ok(Vec::new());
        }
        let groups = flat_grid(ctx, "attention sequences", s.batch, 1)?;
        Ok(vec![k.dispatch(ctx, &w, bufs, groups)])
    }

    /// Forward: the weights into the scratch and `[context; h_T]` into `z`.
    /// One dispatch (none when the batch or the width is empty).
    pub fn forward(
        &self,
        ctx: &GpuContext,
        s: &AttentionShape,
        b: &AttentionForward<'_>,
    ) -> Result<Vec<Dispatch>> {
        let bufs = [b.lengths, b.h, b.params, b.z, b.scratch];
        Self::per_sequence(ctx, s, &self.forward, &bufs)
    }

    /// Backward: `dh` from `dz` and the forward's weights, and for a
    /// learned query its gradient (summed over the batch in a second
    /// dispatch). One or two dispatches (none when the batch or the width
    /// is empty).
    pub fn backward(
        &self,
        ctx: &GpuContext,
        s: &AttentionShape,
        b: &AttentionBackward<'_>,
    ) -> Result<Vec<Dispatch>> {
        let bufs = [b.lengths, b.h, b.params, b.dz, b.scratch, b.dh];
        let mut out = Self::per_sequence(ctx, s, &self.backward, &bufs)?;
        if s.learned && !out.is_empty() {
            out.push(self.query_grad.dispatch(
                ctx,
                &Self::uniform(s)?,
                &[b.scratch, b.grads],
                flat_grid(ctx, "attention query", s.width, WG_SUM)?,
            ));
        }
        Ok(out)
    }
}
