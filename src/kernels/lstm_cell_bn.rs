//! Wrapper of `shaders/lstm_cell_bn.wgsl`: the recurrent BatchNorm LSTM
//! cell, one workgroup per hidden unit. Layouts and parameters are those of
//! [`super::lstm_cell_ln`].

use super::lstm_cell::CellShape;
use super::lstm_cell_ln::{
    BWD, FWD, NormCellBuffers, NormCellParams, bwd_buffers, fwd_buffers, params,
};
use super::wgsl::shader;
use crate::Result;
use crate::gpu::{Binding, Dispatch, GpuContext, Kernel, module};

pub(crate) const SRC: &str = shader!(
    "common/prelude.wgsl",
    "cells/lstm.wgsl",
    "common/cell_bindings.wgsl",
    "common/norm_cell.wgsl",
    "lstm_cell_bn.wgsl"
);

/// The recurrent BatchNorm cell's entry points.
pub struct LstmCellBn {
    fwd: Kernel,
    bwd: Kernel,
}

impl LstmCellBn {
    /// Compiles the entry points.
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "lstm_cell_bn", SRC);
        let mut fwd = FWD.to_vec();
        fwd.push((12, Binding::ReadWrite));
        Self {
            fwd: Kernel::new(ctx, &m, "forward", &fwd, &[]),
            bwd: Kernel::new(ctx, &m, "backward", &BWD, &[]),
        }
    }

    /// Forward step `step`: one workgroup per hidden unit.
    pub fn forward(
        &self,
        ctx: &GpuContext,
        s: &CellShape,
        n: &NormCellParams,
        step: usize,
        b: &NormCellBuffers<'_>,
    ) -> Result<Dispatch> {
        let p = params(s, n, step)?;
        let mut bufs = fwd_buffers(b);
        bufs.push(b.stats);
        Ok(self.fwd.dispatch(ctx, &p, &bufs, ctx.grid(s.hidden as u32)))
    }

    /// Backward step `step` (run for T-1 down to 0).
    pub fn backward(
        &self,
        ctx: &GpuContext,
        s: &CellShape,
        n: &NormCellParams,
        step: usize,
        b: &NormCellBuffers<'_>,
    ) -> Result<Dispatch> {
        let p = params(s, n, step)?;
        Ok(self
            .bwd
            .dispatch(ctx, &p, &bwd_buffers(b), ctx.grid(s.hidden as u32)))
    }
}
