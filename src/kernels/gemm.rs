//! Wrapper of `shaders/gemm.wgsl`: C = alpha·op(A)·op(B) (+ biases) (+ C).

use super::{groups_1d, u32_of};
use crate::Result;
use crate::gpu::{Binding, Dispatch, GpuContext, Kernel, module};

const SRC: &str = include_str!("../../shaders/gemm.wgsl");
/// Rows and columns covered by one workgroup (8x8 invocations, 4x4 each).
const TILE: usize = 32;

/// The four transpose variants of the GEMM pipeline.
pub struct Gemm {
    kernels: Vec<Kernel>,
}

/// One GEMM: shapes, strides, offsets (in elements) and buffers.
/// op(A) is [m, k], op(B) is [k, n], C is [m, n] with leading dimension `ldc`.
pub struct GemmOp<'a> {
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// A is stored [k, m] (transposed) instead of [m, k].
    pub trans_a: bool,
    /// B is stored [n, k] (transposed) instead of [k, n].
    pub trans_b: bool,
    /// Buffer, element offset and leading dimension of A.
    pub a: (&'a wgpu::Buffer, usize, usize),
    /// Buffer, element offset and leading dimension of B.
    pub b: (&'a wgpu::Buffer, usize, usize),
    /// Buffer, element offset and leading dimension of C.
    pub c: (&'a wgpu::Buffer, usize, usize),
    /// Up to two bias vectors of length n added to every row, with their buffer.
    pub bias: Option<(&'a wgpu::Buffer, Option<usize>, Option<usize>)>,
    /// Scale of the product.
    pub alpha: f32,
    /// Add to C instead of overwriting it.
    pub accumulate: bool,
}

impl Gemm {
    /// Compiles the four variants.
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "gemm", SRC);
        let bindings = [
            (1, Binding::Read),
            (2, Binding::Read),
            (3, Binding::Read),
            (4, Binding::ReadWrite),
        ];
        let kernels = (0..4)
            .map(|v| {
                let consts = [
                    ("TRANS_A", f64::from(v >> 1 & 1)),
                    ("TRANS_B", f64::from(v & 1)),
                ];
                Kernel::new(ctx, &m, "gemm", &bindings, &consts)
            })
            .collect();
        Self { kernels }
    }

    /// The dispatch for `op`, or `None` when C is empty.
    pub fn dispatch(&self, ctx: &GpuContext, op: &GemmOp<'_>) -> Result<Option<Dispatch>> {
        if op.m == 0 || op.n == 0 {
            return Ok(None);
        }
        let (bias_buf, b1, b2) = match op.bias {
            Some((buf, b1, b2)) => (buf, b1, b2),
            None => (op.a.0, None, None),
        };
        let flags =
            u32::from(op.accumulate) | u32::from(b1.is_some()) << 1 | u32::from(b2.is_some()) << 2;
        let params = [
            u32_of("gemm m", op.m)?,
            u32_of("gemm n", op.n)?,
            u32_of("gemm k", op.k)?,
            u32_of("gemm lda", op.a.2)?,
            u32_of("gemm ldb", op.b.2)?,
            u32_of("gemm ldc", op.c.2)?,
            u32_of("gemm a offset", op.a.1)?,
            u32_of("gemm b offset", op.b.1)?,
            u32_of("gemm c offset", op.c.1)?,
            u32_of("gemm bias offset", b1.unwrap_or(0))?,
            u32_of("gemm bias offset", b2.unwrap_or(0))?,
            flags,
            op.alpha.to_bits(),
            0,
            0,
            0,
        ];
        let groups = (
            groups_1d(ctx, "gemm columns", op.n, TILE)?,
            groups_1d(ctx, "gemm rows", op.m, TILE)?,
        );
        let v = usize::from(op.trans_a) << 1 | usize::from(op.trans_b);
        Ok(Some(self.kernels[v].dispatch(
            ctx,
            &params,
            &[op.a.0, op.b.0, bias_buf, op.c.0],
            groups,
        )))
    }
}
