//! Wrapper of `shaders/lstm_cell_ln.wgsl`: the LayerNorm LSTM cell, one
//! workgroup per sequence. Also defines the parameter block shared with the
//! recurrent BatchNorm cell (`lstm_cell_bn`), whose layouts are the same.

// The norm cells' sections count in the LSTM's gates, G
// (`common/norm_cell.wgsl` mirrors them).
use super::cell::LSTM_GATES as G;
use super::lstm_cell::{BWD_BINDINGS, CellBackward, CellForward, CellShape, FWD_BINDINGS};
use super::u32_of;
use super::wgsl::{family_source, wgsl_struct};
use crate::Result;
use crate::gpu::{Binding, Dispatch, GpuContext, Kernel, module};

family_source!(
    NormCellUniform;
    "common/prelude.wgsl",
    "cells/lstm.wgsl",
    "common/cell_bindings.wgsl",
    "common/norm_cell.wgsl",
    "lstm_cell_ln.wgsl",
);

/// Offsets of a normalized cell's own tensors, beyond [`CellShape`].
#[derive(Clone, Copy, Debug, Default)]
pub struct NormCellParams {
    /// Offsets of b_ih and b_hh in the parameter buffer, when the LSTM has biases.
    pub bias: Option<(usize, usize)>,
    /// Gain and shift of the input-part norm (shift unused by the BN cell).
    pub ih: (usize, usize),
    /// Gain and shift of the recurrent-part norm (shift unused by the BN cell).
    pub hh: (usize, usize),
    /// Gain and shift of the cell-state norm.
    pub c: (usize, usize),
    /// Train mode (batch statistics) rather than eval (running statistics).
    pub train: bool,
    /// Rows of running statistics.
    pub t_max: usize,
    /// The stream position of step 0 (eval: running-statistics row
    /// min(t0 + s, t_max − 1) at step s; 0 in train mode).
    pub t0: usize,
    /// Running mean/var offsets in the statistics buffer: ih, hh, c.
    pub running: [(usize, usize); 3],
}

/// Elements of one (layer, direction) cache block of a normalized cell:
/// the sections of [`cache_sections`], 4 words of row statistics per row,
/// and per step the recurrent BatchNorm's statistics (ih GH, hh GH, c H).
pub fn cache_block(hidden: usize, seq: usize, batch: usize) -> usize {
    seq * batch * ((3 * G + 3) * hidden + 4) + seq * (2 * G + 1) * hidden
}

/// Elements of one direction's gradient block of a normalized cell.
pub fn dg_block(hidden: usize, seq: usize, batch: usize) -> usize {
    seq * batch * (3 * G + 2) * hidden
}

/// Offsets (relative to the gradient block) of da, dp, dr, dc, dhc.
pub fn dg_sections(hidden: usize, seq: usize, batch: usize) -> [usize; 5] {
    let tbh = seq * batch * hidden;
    [0, G, 2 * G, 3 * G, 3 * G + 1].map(|s| s * tbh)
}

/// Offsets (relative to the cache block) of gates, c, h_prev, x̂_ih, x̂_hh, x̂_c.
pub fn cache_sections(hidden: usize, seq: usize, batch: usize) -> [usize; 6] {
    let tbh = seq * batch * hidden;
    [0, G, G + 1, G + 2, 2 * G + 2, 3 * G + 2].map(|s| s * tbh)
}

wgsl_struct! {
    /// The uniform block of both normalized cells (`common/norm_cell.wgsl`).
    pub struct NormCellUniform = "Params" {
        h: u32, batch: u32, seq: u32, step: u32,
        reverse: u32, out_stride: u32, out_col: u32, pre_off: u32,
        whh_off: u32, cache_off: u32, dg_off: u32, state_off: u32,
        state_stride: u32, has_bias: u32, bih_off: u32, bhh_off: u32,
        nw_ih: u32, nb_ih: u32, nw_hh: u32, nb_hh: u32,
        nw_c: u32, nb_c: u32, train: u32, t_max: u32,
        rm_ih: u32, rv_ih: u32, rm_hh: u32, rv_hh: u32,
        rm_c: u32, rv_c: u32, t0: u32, _p1: u32,
    }
}

/// The uniform block of a normalized cell step.
pub fn params(s: &CellShape, n: &NormCellParams, step: usize) -> Result<NormCellUniform> {
    let u = |w: &str, v: usize| u32_of(w, v);
    let (bih, bhh) = n.bias.unwrap_or((0, 0));
    Ok(NormCellUniform {
        h: u("hidden size", s.hidden)?,
        batch: u("batch", s.batch)?,
        seq: u("sequence length", s.seq)?,
        step: u("step", step)?,
        reverse: u32::from(s.reverse),
        out_stride: u("output stride", s.out_stride)?,
        out_col: u("output column", s.out_col)?,
        pre_off: u("pre-gates offset", s.pre_off)?,
        whh_off: u("W_hh offset", s.whh_off)?,
        cache_off: u("cache offset", s.cache_off)?,
        dg_off: u("gradient offset", s.dg_off)?,
        state_off: u("state offset", s.state_off)?,
        state_stride: u("state stride", s.state_stride)?,
        has_bias: u32::from(n.bias.is_some()),
        bih_off: u("bias offset", bih)?,
        bhh_off: u("bias offset", bhh)?,
        nw_ih: u("norm offset", n.ih.0)?,
        nb_ih: u("norm offset", n.ih.1)?,
        nw_hh: u("norm offset", n.hh.0)?,
        nb_hh: u("norm offset", n.hh.1)?,
        nw_c: u("norm offset", n.c.0)?,
        nb_c: u("norm offset", n.c.1)?,
        train: u32::from(n.train),
        t_max: u("T_max", n.t_max)?,
        t0: u("stream position", n.t0)?,
        rm_ih: u("statistics offset", n.running[0].0)?,
        rv_ih: u("statistics offset", n.running[0].1)?,
        rm_hh: u("statistics offset", n.running[1].0)?,
        rv_hh: u("statistics offset", n.running[1].1)?,
        rm_c: u("statistics offset", n.running[2].0)?,
        rv_c: u("statistics offset", n.running[2].1)?,
        ..Default::default()
    })
}

/// Buffers of a normalized cell step: the plain cell's (the norm cells
/// bind through its tables) and the running statistics.
pub struct NormCellBuffers<'a> {
    /// The forward's (`cst`, `rng` and `zst` unused).
    pub fwd: CellForward<'a>,
    /// The backward's (`gstate_out`, `cst`, `dcs`, `rng` and `zst` unused).
    pub bwd: CellBackward<'a>,
    /// Running statistics (the BN cell's forward).
    pub stats: &'a wgpu::Buffer,
}

/// The norm cells bind the plain cell's forward buffers (bindings 1 to 7 of
/// common/cell_bindings.wgsl) and its backward ones but gstate_out (the
/// plain cell's initial-state step serves them).
const BWD: &[(u32, Binding)] = BWD_BINDINGS.split_at(7).0;

/// A normalized cell's entry points: the LayerNorm cell (`BN` false, one
/// workgroup per sequence) or the recurrent BatchNorm one (`BN` true, one
/// per hidden unit, its forward also binding the running statistics); the
/// two differ in nothing else on the host.
pub struct NormCell<const BN: bool> {
    fwd: Kernel,
    bwd: Kernel,
}

/// The LayerNorm cell's entry points.
pub type LstmCellLn = NormCell<false>;

impl LstmCellLn {
    /// Compiles the entry points.
    pub fn new(ctx: &GpuContext) -> Self {
        Self::build(ctx, "lstm_cell_ln", &source(), &FWD_BINDINGS)
    }
}

impl<const BN: bool> NormCell<BN> {
    /// Compiles `src`'s entry points, the forward with bindings `fwd`.
    pub(crate) fn build(
        ctx: &GpuContext,
        label: &'static str,
        src: &str,
        fwd: &[(u32, Binding)],
    ) -> Self {
        let m = module(ctx, label, src);
        Self {
            fwd: m.kernel("forward", fwd),
            bwd: m.kernel("backward", BWD),
        }
    }

    /// Step `step` of the time loop: forward, one workgroup per sequence
    /// (LN) or hidden unit (BN); with `backward`, backward (run for T-1
    /// down to 0).
    pub fn step(
        &self,
        ctx: &GpuContext,
        s: &CellShape,
        n: &NormCellParams,
        step: usize,
        b: &NormCellBuffers<'_>,
        backward: bool,
    ) -> Result<Dispatch> {
        let (k, mut bufs) = match backward {
            false => (&self.fwd, b.fwd.buffers().to_vec()),
            true => (&self.bwd, b.bwd.buffers()[..BWD.len()].to_vec()),
        };
        if BN && !backward {
            bufs.push(b.stats);
        }
        let p = params(s, n, step)?;
        let groups = if BN { s.hidden } else { s.batch };
        Ok(k.dispatch(ctx, &p, &bufs, ctx.grid(groups as u32)))
    }
}
