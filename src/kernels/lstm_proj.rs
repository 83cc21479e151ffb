//! Wrapper of `shaders/lstm_proj.wgsl`: the pointwise halves of the
//! projected LSTM's steps (`nn.LSTM(proj_size = P)`) and the reordering
//! around its time loop, whose products are GEMMs the schedule records
//! between them (see the shader's header and docs/architecture.md,
//! "Projections"). One dispatch per (direction, step) of a layer, f32.

use super::flat_grid;
use super::lstm_cell::{CellBackward, CellForward};
use super::u32_of;
use super::wgsl::{family_source, wgsl_struct};
use crate::Result;
use crate::gpu::{Binding, Dispatch, GpuContext, Kernel, module};

family_source!(
    ProjUniform;
    "common/prelude.wgsl",
    "common/cell_bindings.wgsl",
    "cells/lstm.wgsl",
    "lstm_proj.wgsl",
);

/// Invocations per workgroup (the shader's `WG`).
const WG: usize = 64;

wgsl_struct! {
    /// The uniform block of `lstm_proj.wgsl`.
    pub struct ProjUniform = "Params" {
        h: u32, p: u32, batch: u32, seq: u32,
        step: u32, reverse: u32, pre_off: u32, cache_off: u32,
        c_off: u32, hp_off: u32, dg_off: u32, dc_off: u32,
        state_off: u32, state_stride: u32, out_stride: u32, _p2: u32,
        out_col: u32, r_off: u32, m_off: u32, dm_off: u32,
        hst_off: u32, dhs_off: u32, _p0: u32, _p1: u32,
    }
}

/// Shape and offsets (in elements) of one (layer, direction) time loop of
/// the projected LSTM.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProjShape {
    /// Hidden size H.
    pub hidden: usize,
    /// Projection size P.
    pub proj: usize,
    /// Batch B.
    pub batch: usize,
    /// Sequence length T.
    pub seq: usize,
    /// Reverse direction.
    pub reverse: bool,
    /// Its pre-gates [T, B, 4H] in the pre-gates buffer.
    pub pre_off: usize,
    /// Its gate cache [T, B, 4H] in the cache.
    pub cache_off: usize,
    /// Its c [T, B, H] in the cache.
    pub c_off: usize,
    /// Its h_prev section [T, B, H] in the cache (h_{t-1} in the first P
    /// columns).
    pub hp_off: usize,
    /// Its gate gradients [T, B, 4H] in the gradient buffer.
    pub dg_off: usize,
    /// Its dc [T, B, H] in the gradient buffer.
    pub dc_off: usize,
    /// (l·D + d)·B·H: its rows of the state arrays: h0, h_n and their
    /// gradients (the first P columns of each row), and after
    /// `state_stride` c0, c_n and theirs.
    pub state_off: usize,
    /// Where the c halves of the state arrays start (L·D·B·H).
    pub state_stride: usize,
    /// Row stride of the layer output and its gradient (D·P).
    pub out_stride: usize,
    /// First column of this direction (the layer's offset + d·P).
    pub out_col: usize,
    /// The step's scratch [B, 4H] in `work`: W_hh h_{s-1} in forward, the
    /// step's gate gradients in backward.
    pub r_off: usize,
    /// Its m = o ⊙ tanh(c), step-major [T, B, H], in `work`.
    pub m_off: usize,
    /// The step's W_hrᵀ dh [B, H] in `work`.
    pub dm_off: usize,
    /// Its h, step-major [T, B, P], in `seqs`.
    pub hst_off: usize,
    /// Its dh, step-major [T, B, P], in `seqs`.
    pub dhs_off: usize,
}

/// Buffers of the projected LSTM's kernels: the plain cell's (f32, so
/// their c sections are the cache and the gradient buffer themselves) and
/// the loop's step-major scratch.
pub struct ProjBuffers<'a> {
    /// Pre-gates, states, lengths, layer outputs, cache.
    pub fwd: &'a CellForward<'a>,
    /// Output gradients, state gradients, gate gradients.
    pub bwd: &'a CellBackward<'a>,
    /// m, the step's scratch and dm (a GEMM reads one of these buffers
    /// while writing the other).
    pub work: &'a wgpu::Buffer,
    /// h and dh, step-major.
    pub seqs: &'a wgpu::Buffer,
}

use Binding::{Read, ReadWrite};
const FWD: [(u32, Binding); 6] = [
    (1, Read),
    (3, Read),
    (4, Read),
    (6, ReadWrite),
    (7, ReadWrite),
    (20, ReadWrite),
];
const BWD: [(u32, Binding); 7] = [
    (3, Read),
    (4, Read),
    (6, ReadWrite),
    (9, Read),
    (10, ReadWrite),
    (11, ReadWrite),
    (20, ReadWrite),
];
const SCATTER: [(u32, Binding); 6] = [
    (3, Read),
    (4, Read),
    (5, ReadWrite),
    (6, ReadWrite),
    (7, ReadWrite),
    (21, ReadWrite),
];
const GATHER: [(u32, Binding); 4] = [(4, Read), (8, Read), (9, Read), (21, ReadWrite)];

/// The projected LSTM's entry points.
pub struct LstmProj {
    fwd: Kernel,
    bwd: Kernel,
    scatter: Kernel,
    gather: Kernel,
}

impl LstmProj {
    /// Compiles the entry points.
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "lstm_proj", &source());
        Self {
            fwd: m.kernel("forward_step", &FWD),
            bwd: m.kernel("backward_step", &BWD),
            scatter: m.kernel("scatter", &SCATTER),
            gather: m.kernel("gather", &GATHER),
        }
    }

    fn params(s: &ProjShape, step: usize) -> Result<ProjUniform> {
        let u = |what: &str, v: usize| u32_of(what, v);
        Ok(ProjUniform {
            h: u("hidden size", s.hidden)?,
            p: u("projection size", s.proj)?,
            batch: u("batch", s.batch)?,
            seq: u("sequence length", s.seq)?,
            step: u("step", step)?,
            reverse: u32::from(s.reverse),
            pre_off: u("pre-gates offset", s.pre_off)?,
            cache_off: u("cache offset", s.cache_off)?,
            c_off: u("c offset", s.c_off)?,
            hp_off: u("h_prev offset", s.hp_off)?,
            dg_off: u("gradient offset", s.dg_off)?,
            dc_off: u("dc offset", s.dc_off)?,
            state_off: u("state offset", s.state_off)?,
            state_stride: u("state stride", s.state_stride)?,
            out_stride: u("output stride", s.out_stride)?,
            out_col: u("output column", s.out_col)?,
            r_off: u("projection scratch offset", s.r_off)?,
            m_off: u("projection input offset", s.m_off)?,
            dm_off: u("projection gradient offset", s.dm_off)?,
            hst_off: u("projected h offset", s.hst_off)?,
            dhs_off: u("projected dh offset", s.dhs_off)?,
            ..Default::default()
        })
    }

    /// One dispatch of `kernel` over `n` invocations.
    fn run(
        ctx: &GpuContext,
        kernel: &Kernel,
        (s, step): (&ProjShape, usize),
        bufs: &[&wgpu::Buffer],
        n: usize,
    ) -> Result<Dispatch> {
        let g = flat_grid(ctx, "projected LSTM invocations", n, WG)?;
        Ok(kernel.dispatch(ctx, &Self::params(s, step)?, bufs, g))
    }

    /// The pointwise half of step `step`: forward (R already at `r_off`)
    /// or, with `backward`, backward (dm already at `dm_off`; run for step
    /// = T − 1 down to 0).
    pub fn step(
        &self,
        ctx: &GpuContext,
        (s, step): (&ProjShape, usize),
        b: &ProjBuffers<'_>,
        backward: bool,
    ) -> Result<Dispatch> {
        let (f, g) = (b.fwd, b.bwd);
        let n = s.batch * s.hidden;
        if !backward {
            let bufs = [f.pre, f.state_in, f.lengths, f.cache, f.state_out, b.work];
            return Self::run(ctx, &self.fwd, (s, step), &bufs, n);
        }
        let bufs = [
            g.state_in,
            g.lengths,
            g.cache,
            g.gstate_in,
            g.dg,
            g.gstate_out,
            b.work,
        ];
        Self::run(ctx, &self.bwd, (s, step), &bufs, n)
    }

    /// After the forward time loop: the layer output, h_n and the h_prev
    /// section from the step-major h.
    pub fn scatter(
        &self,
        ctx: &GpuContext,
        s: &ProjShape,
        b: &ProjBuffers<'_>,
    ) -> Result<Dispatch> {
        let f = b.fwd;
        let bufs = [f.state_in, f.lengths, f.out, f.cache, f.state_out, b.seqs];
        Self::run(ctx, &self.scatter, (s, 0), &bufs, s.seq * s.batch * s.proj)
    }

    /// Before the backward time loop: the step-major dh from the output's
    /// gradient and grad h_n.
    pub fn gather(&self, ctx: &GpuContext, s: &ProjShape, b: &ProjBuffers<'_>) -> Result<Dispatch> {
        let bufs = [b.bwd.lengths, b.bwd.dy, b.bwd.gstate_in, b.seqs];
        Self::run(ctx, &self.gather, (s, 0), &bufs, s.seq * s.batch * s.proj)
    }
}
