//! Wrapper of `shaders/reduce.wgsl`: deterministic column sums.

use super::{groups_1d, u32_of};
use crate::Result;
use crate::gpu::{Binding, Dispatch, GpuContext, Kernel, module};

const SRC: &str = include_str!("../../shaders/reduce.wgsl");

/// Reduction kernels.
pub struct Reduce {
    colsum: Kernel,
    colsum_prod: Kernel,
}

impl Reduce {
    /// Compiles the kernels.
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "reduce", SRC);
        let colsum = Kernel::new(
            ctx,
            &m,
            "colsum",
            &[(1, Binding::Read), (2, Binding::ReadWrite)],
            &[],
        );
        let colsum_prod = Kernel::new(
            ctx,
            &m,
            "colsum_prod",
            &[
                (1, Binding::Read),
                (2, Binding::ReadWrite),
                (3, Binding::Read),
            ],
            &[],
        );
        Self {
            colsum,
            colsum_prod,
        }
    }

    /// out[o1 + n] (and out[o2 + n] when given) = Σ_m a[a_off + m·lda + n],
    /// for n < cols and m < rows; added to `out` when `accumulate`.
    #[allow(clippy::too_many_arguments)]
    pub fn colsum(
        &self,
        ctx: &GpuContext,
        a: (&wgpu::Buffer, usize, usize),
        rows: usize,
        cols: usize,
        out: &wgpu::Buffer,
        o1: usize,
        o2: Option<usize>,
        accumulate: bool,
    ) -> Result<Option<Dispatch>> {
        if cols == 0 {
            return Ok(None);
        }
        let flags = u32::from(o2.is_some()) | u32::from(accumulate) << 1;
        let params = [
            u32_of("colsum rows", rows)?,
            u32_of("colsum cols", cols)?,
            u32_of("colsum lda", a.2)?,
            u32_of("colsum offset", a.1)?,
            u32_of("colsum offset", o1)?,
            u32_of("colsum offset", o2.unwrap_or(0))?,
            flags,
            0,
        ];
        let g = groups_1d(ctx, "colsum columns", cols, 64)?;
        Ok(Some(self.colsum.dispatch(
            ctx,
            &params,
            &[a.0, out],
            (g, 1),
        )))
    }

    /// out[o + n] = Σ_m a[m·lda + n] · b[m·lda + n] over rows m < rows, for
    /// n < cols; `a` and `b` share the leading dimension.
    #[allow(clippy::too_many_arguments)]
    pub fn colsum_prod(
        &self,
        ctx: &GpuContext,
        a: (&wgpu::Buffer, usize),
        b: (&wgpu::Buffer, usize),
        lda: usize,
        rows: usize,
        cols: usize,
        out: (&wgpu::Buffer, usize),
    ) -> Result<Option<Dispatch>> {
        if cols == 0 {
            return Ok(None);
        }
        let params = [
            u32_of("colsum rows", rows)?,
            u32_of("colsum cols", cols)?,
            u32_of("colsum lda", lda)?,
            u32_of("colsum offset", a.1)?,
            u32_of("colsum offset", out.1)?,
            u32_of("colsum offset", b.1)?,
            0,
            0,
        ];
        let g = groups_1d(ctx, "colsum columns", cols, 64)?;
        Ok(Some(self.colsum_prod.dispatch(
            ctx,
            &params,
            &[a.0, out.0, b.0],
            (g, 1),
        )))
    }
}
