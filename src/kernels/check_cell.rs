//! Wrapper of `shaders/check_cell.wgsl`: a cell's pointwise backward beside
//! central differences of its forward, per unit, for `check-cell`
//! ([`crate::train::cell_check`] judges the values).

use super::cell::Cell;
use super::u32_of;
use super::wgsl::{shader, wgsl_struct};
use crate::Result;
use crate::gpu::{Binding, GpuContext, Kernel};

const WG: u32 = 64;

wgsl_struct! {
    /// The uniform block of `check_cell.wgsl`.
    pub struct CheckUniform = "Params" {
        n: u32, delta: f32, _p0: u32, _p1: u32,
    }
}

/// The kernel's source with `cell`'s pointwise functions (its uniform
/// struct declared from [`CheckUniform`]).
pub fn source(cell: Cell) -> String {
    super::wgsl::cell_source::<CheckUniform>(
        shader!("common/prelude.wgsl"),
        cell,
        shader!("check_cell.wgsl"),
    )
}

/// Inputs per unit: r, pre, bh, w (G each), c_prev, h_prev, dh, dc_next,
/// gate_next (the shader's `CHECK_IN`).
pub fn in_width(cell: Cell) -> usize {
    4 * cell.gates() + 5
}

/// Outputs per unit: (analytic, fd at δ, fd at δ/2) per gate of da and dx,
/// then of carry, h0 and c0 (the shader's `CHECK_OUT`).
pub fn out_width(cell: Cell) -> usize {
    6 * cell.gates() + 9
}

/// The check of one cell.
pub struct CheckCell {
    kernel: Kernel,
    cell: Cell,
}

impl CheckCell {
    /// Compiles the check joined with `cell` (a custom cell's loops keep
    /// wgpu's bounding counters: nothing proves they end).
    pub fn new(ctx: &GpuContext, cell: Cell) -> Self {
        let m = crate::gpu::module_bounded(ctx, "check_cell", &source(cell));
        let kernel = Kernel::new(
            ctx,
            &m,
            "check",
            &[(1, Binding::Read), (2, Binding::ReadWrite)],
            &[],
        );
        Self { kernel, cell }
    }

    /// Runs the check on `inputs` ([`in_width`] values per unit) with step
    /// `delta` (and `delta` / 2) and returns [`out_width`] values per unit.
    pub fn run(&self, ctx: &GpuContext, inputs: &[f32], delta: f32) -> Result<Vec<f32>> {
        let units = inputs.len() / in_width(self.cell);
        let inp = ctx.storage_init("check_cell inputs", inputs)?;
        let len = units * out_width(self.cell);
        let out = ctx.storage("check_cell outputs", len)?;
        let params = CheckUniform {
            n: u32_of("units", units)?,
            delta,
            ..Default::default()
        };
        let d = self.kernel.dispatch(
            ctx,
            &params,
            &[&inp, &out],
            ctx.grid(u32_of("units", units)?.div_ceil(WG)),
        );
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            d.record(&mut pass);
        }
        ctx.queue.submit([enc.finish()]);
        ctx.read_f32(&out, 0, len)
    }
}
