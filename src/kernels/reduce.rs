//! Wrapper of `shaders/reduce.wgsl`: deterministic column sums.

use super::gemm::LOOP_CAP;
use super::wgsl::{family_source, wgsl_struct};
use super::{groups_1d, u32_of};
use crate::Result;
use crate::gpu::{Binding, Dispatch, GpuContext, Kernel, module};

family_source!(ReduceUniform; "common/prelude.wgsl", "reduce.wgsl");

/// Rows one column-sum dispatch covers: one loop pass per row plus the exit
/// check stay within lavapipe's [`LOOP_CAP`]. Longer sums are split into
/// consecutive dispatches that add onto the first, in row order, so results
/// stay deterministic.
pub const ROW_CHUNK: usize = LOOP_CAP - 1;

/// (first row, rows) of each dispatch of a sum over `rows` rows: one chunk,
/// possibly empty, when `rows` fits in [`ROW_CHUNK`].
fn row_chunks(rows: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..rows.div_ceil(ROW_CHUNK).max(1)).map(move |i| {
        let r0 = i * ROW_CHUNK;
        (r0, ROW_CHUNK.min(rows - r0))
    })
}

wgsl_struct! {
    /// The uniform block of `reduce.wgsl`.
    pub struct ReduceUniform = "Params" {
        m: u32, n: u32, lda: u32, a_off: u32,
        out1_off: u32, out2_off: u32, flags: u32, a2_off: u32,
    }
}

/// Bindings of `colsum`.
const COLSUM_BINDINGS: [(u32, Binding); 2] = [(1, Binding::Read), (2, Binding::ReadWrite)];

/// Columns one workgroup sums (CT in the shader).
const COLS_PER_GROUP: usize = 16;
/// The shader's `PAIR` flag (see [`Reduce::colsum_pair`]).
const PAIR: u32 = 4;

/// Reduction kernels.
pub struct Reduce {
    /// Also over an f16 A, once [`Reduce::enable_half`] ran.
    colsum: super::HalfKernel,
    colsum_prod: Kernel,
}

impl Reduce {
    /// Compiles the kernels.
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "reduce", &source());
        let colsum = super::HalfKernel::new(&m, "colsum", &COLSUM_BINDINGS);
        let colsum_prod = m.kernel(
            "colsum_prod",
            &[
                (1, Binding::Read),
                (2, Binding::ReadWrite),
                (3, Binding::Read),
            ],
        );
        Self {
            colsum,
            colsum_prod,
        }
    }

    /// The shader source with A in f16.
    pub fn half_source() -> String {
        crate::gpu::half_source(&source(), &["AT"], &[])
    }

    /// Compiles `colsum` over an f16 A (the device needs SHADER_F16), for
    /// [`Reduce::colsum`]; idempotent.
    pub fn enable_half(&self, ctx: &GpuContext) {
        self.colsum.enable(ctx, "reduce", &Self::half_source());
    }

    /// out[o1 + n] (and out[o2 + n] when given) = Σ_m a[a_off + m·lda + n],
    /// for n < cols and m < rows; added to `out` when `accumulate`; with
    /// `half_a`, A's buffer holds f16 values, which needs
    /// [`Reduce::enable_half`] first. One dispatch per [`ROW_CHUNK`] rows
    /// (none when `cols` is 0), to record in order.
    #[allow(clippy::too_many_arguments)]
    pub fn colsum(
        &self,
        ctx: &GpuContext,
        a: (&wgpu::Buffer, usize, usize),
        rows: usize,
        cols: usize,
        out: &wgpu::Buffer,
        (o1, o2): (usize, Option<usize>),
        accumulate: bool,
        half_a: bool,
    ) -> Result<Vec<Dispatch>> {
        let kernel = self.colsum.get(half_a)?;
        if cols == 0 {
            return Ok(Vec::new());
        }
        let g = groups_1d(ctx, "colsum columns", cols, COLS_PER_GROUP)?;
        row_chunks(rows)
            .map(|(r0, n)| {
                // Chunks after the first add onto what the first wrote.
                let acc = accumulate || r0 > 0;
                let flags = u32::from(o2.is_some()) | u32::from(acc) << 1;
                let offs = [a.1 + r0 * a.2, o1, o2.unwrap_or(0), 0];
                let params = chunk_uniform((n, cols, a.2), offs, flags)?;
                Ok(kernel.dispatch(ctx, &params, &[a.0, out], (g, 1)))
            })
            .collect()
    }

    /// Column sums of two [rows, cols] matrices of one buffer with one
    /// leading dimension, in one dispatch per row chunk: `o.0` takes the
    /// sums of the matrix at `a.1`, `o.1` those of the one at `a.2` (each
    /// summed as [`Reduce::colsum`] sums). With `half_a` as there.
    #[allow(clippy::too_many_arguments)]
    pub fn colsum_pair(
        &self,
        ctx: &GpuContext,
        a: (&wgpu::Buffer, usize, usize, usize),
        rows: usize,
        cols: usize,
        out: &wgpu::Buffer,
        o: (usize, usize),
        half_a: bool,
    ) -> Result<Vec<Dispatch>> {
        let kernel = self.colsum.get(half_a)?;
        if cols == 0 {
            return Ok(Vec::new());
        }
        let (buf, off1, off2, lda) = a;
        let g = groups_1d(ctx, "colsum columns", cols, COLS_PER_GROUP)?;
        row_chunks(rows)
            .map(|(r0, n)| {
                let offs = [off1 + r0 * lda, o.0, o.1, off2 + r0 * lda];
                // Chunks after the first add onto what the first wrote.
                let params = chunk_uniform((n, cols, lda), offs, PAIR | u32::from(r0 > 0) << 1)?;
                Ok(kernel.dispatch(ctx, &params, &[buf, out], (g, 2)))
            })
            .collect()
    }

    /// out[o + n] = Σ_m a[m·lda + n] · b[m·lda + n] over rows m < rows, for
    /// n < cols; `a` and `b` share the leading dimension. Dispatches as
    /// [`Reduce::colsum`].
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
    ) -> Result<Vec<Dispatch>> {
        if cols == 0 {
            return Ok(Vec::new());
        }
        let g = groups_1d(ctx, "colsum columns", cols, COLS_PER_GROUP)?;
        row_chunks(rows)
            .map(|(r0, n)| {
                // b's offset travels in out2_off (no second output).
                let offs = [a.1 + r0 * lda, out.1, b.1 + r0 * lda, 0];
                // Chunks after the first add onto what the first wrote.
                let params = chunk_uniform((n, cols, lda), offs, u32::from(r0 > 0) << 1)?;
                Ok(self
                    .colsum_prod
                    .dispatch(ctx, &params, &[a.0, out.0, b.0], (g, 1)))
            })
            .collect()
    }
}

/// The uniform of one row chunk: `n` rows of `cols` columns, leading
/// dimension `lda`; offsets `[a_off, out1_off, out2_off, a2_off]` as the
/// entry point reads them.
fn chunk_uniform(
    (n, cols, lda): (usize, usize, usize),
    [a_off, out1_off, out2_off, a2_off]: [usize; 4],
    flags: u32,
) -> Result<ReduceUniform> {
    Ok(ReduceUniform {
        m: u32_of("colsum rows", n)?,
        n: u32_of("colsum cols", cols)?,
        lda: u32_of("colsum lda", lda)?,
        a_off: u32_of("colsum offset", a_off)?,
        out1_off: u32_of("colsum offset", out1_off)?,
        out2_off: u32_of("colsum offset", out2_off)?,
        flags,
        a2_off: u32_of("colsum offset", a2_off)?,
    })
}
