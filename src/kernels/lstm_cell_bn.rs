//! Wrapper of `shaders/lstm_cell_bn.wgsl`: the recurrent BatchNorm LSTM
//! cell, one workgroup per hidden unit. Layouts and parameters are those of
//! [`super::lstm_cell_ln`].

use super::lstm_cell::FWD_BINDINGS;
use super::lstm_cell_ln::NormCell;
use super::wgsl::family_source;
use crate::gpu::{Binding, GpuContext};

family_source!(
    super::lstm_cell_ln::NormCellUniform;
    "common/prelude.wgsl",
    "cells/lstm.wgsl",
    "common/cell_bindings.wgsl",
    "common/norm_cell.wgsl",
    "lstm_cell_bn.wgsl",
);

/// The recurrent BatchNorm cell's entry points.
pub type LstmCellBn = NormCell<true>;

impl LstmCellBn {
    /// Compiles the entry points.
    pub fn new(ctx: &GpuContext) -> Self {
        let mut fwd = FWD_BINDINGS.to_vec();
        fwd.push((12, Binding::ReadWrite));
        Self::build(ctx, "lstm_cell_bn", &source(), &fwd)
    }
}
