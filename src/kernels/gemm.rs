//! Wrapper of `shaders/gemm.wgsl`: C = alpha·op(A)·op(B) (+ biases) (+ C).
//!
//! Two variants of the kernel, one chosen per adapter ([`GemmVariant::for_adapter`]):
//! a 4x4 register block per invocation read straight from global memory
//! (CPU adapters such as lavapipe, whose workgroup barriers are emulated and
//! costly), and shared-memory tiles (discrete and integrated GPUs). Inner
//! dimensions longer than [`Gemm::k_chunk`] are split into several
//! accumulating dispatches, because lavapipe silently ends an invocation's
//! loops after [`LOOP_CAP`] iterations.

use super::wgsl::{family_source, wgsl_struct};
use super::{groups_1d, u32_of};
use crate::gpu::{Binding, Dispatch, GpuContext, Kernel, module};
use crate::{Error, Result};

family_source!(GemmUniform; "gemm.wgsl");
/// Rows and columns covered by one workgroup of the block variant (8x8
/// invocations, 4x4 each).
const BLOCK_TILE: usize = 32;
/// The same for `gemm_vec4` (8x8 invocations, 8x8 each).
const VEC4_TILE: usize = 64;
/// The same for `gemm_sg` (one subgroup of 8 lanes, 32x4 each).
const SG_TILE: usize = 32;
/// The subgroup width `gemm_sg` is written for.
pub const SG_WIDTH: u32 = 8;
/// Loop passes of `store_block` in the shader at most: the row loop's 4
/// iterations and exit check, and 4 column loops of 4 iterations and a check.
const STORE_PASSES: usize = 5 + 4 * 5;

/// lavapipe (Mesa's llvmpipe) ends every loop of a shader invocation once the
/// invocation has run 65,535 loop iterations in total, counted over all its
/// loops, consecutive and nested alike, without any error (measured on Mesa
/// 22.3: one loop of 70,000 stops at 65,535; two of 40,000 stop at 40,000 +
/// 25,534; 300 x 300 nested at 65,101 inner iterations; a loop whose body is
/// unrolled 4 times counts once per pass; loops with small constant trip
/// counts are unrolled by the compiler and do not count). Kernels keep each
/// invocation's loop passes, exit checks included, at or below this.
pub const LOOP_CAP: usize = 65_535;

pub use crate::gpu::tuning::{GemmVariant, TileShape};

impl GemmVariant {
    /// The variant suited to an adapter whose device has subgroups of width
    /// `subgroup` (if any): on CPU adapters ([`crate::gpu::cpu_adapter`]) the
    /// subgroup variant with 8-wide subgroups, else the register block;
    /// tiles everywhere else, unless the adapter's limits cannot hold the
    /// default tile.
    pub fn for_adapter(
        info: &wgpu::AdapterInfo,
        limits: &wgpu::Limits,
        subgroup: Option<u32>,
    ) -> Self {
        if crate::gpu::cpu_adapter(info) {
            match subgroup {
                Some(SG_WIDTH) => Self::Subgroup,
                _ => Self::Block,
            }
        } else if TileShape::DEFAULT.check(limits).is_err() {
            Self::Block
        } else {
            Self::Tiled
        }
    }

    /// The entry point of the unaligned GEMMs (all of them for tiles).
    fn entry(self) -> &'static str {
        match self {
            Self::Block | Self::Subgroup => "gemm",
            Self::Tiled => "gemm_tiled",
        }
    }
}

impl TileShape {
    /// Checks the shape against the adapter's workgroup limits.
    pub fn check(&self, limits: &wgpu::Limits) -> Result<()> {
        let threads = u64::from(self.wg_m) * u64::from(self.wg_n);
        let shared = 16 * u64::from(self.tk) * (u64::from(self.wg_m) + u64::from(self.wg_n));
        let ok = self.wg_m > 0
            && self.wg_n > 0
            && self.tk > 0
            && self.wg_n <= limits.max_compute_workgroup_size_x
            && self.wg_m <= limits.max_compute_workgroup_size_y
            && threads <= u64::from(limits.max_compute_invocations_per_workgroup)
            && shared <= u64::from(limits.max_compute_workgroup_storage_size);
        if ok {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "GEMM tile {self:?} needs {threads} invocations and {shared} bytes of workgroup \
                 memory per workgroup; the adapter allows {} invocations ({} x {}) and {} bytes",
                limits.max_compute_invocations_per_workgroup,
                limits.max_compute_workgroup_size_x,
                limits.max_compute_workgroup_size_y,
                limits.max_compute_workgroup_storage_size
            )))
        }
    }

    /// Loop passes of one K step of `gemm_tiled`: the step loop itself, the
    /// two staging loops (iterations and exit check each) and the TK-long
    /// product loop with its exit check.
    fn passes_per_step(&self) -> usize {
        let threads = (self.wg_m * self.wg_n) as usize;
        let tk = self.tk as usize;
        let load = |side: u32| (tk * 4 * side as usize).div_ceil(threads) + 1;
        1 + load(self.wg_m) + load(self.wg_n) + tk + 1
    }
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

wgsl_struct! {
    /// The uniform block of `gemm.wgsl`.
    pub struct GemmUniform = "Params" {
        m: u32, n: u32, k: u32, lda: u32,
        ldb: u32, ldc: u32, a_off: u32, b_off: u32,
        c_off: u32, bias1_off: u32, bias2_off: u32, flags: u32,
        alpha: f32, _p0: f32, _p1: f32, _p2: f32,
    }
}

/// (f16 A, f16 B) of the pipelines [`Gemm::enable_half`] builds.
pub const HALF_TYPES: [(bool, bool); 3] = [(false, true), (true, false), (true, true)];

/// Pipelines of one pair of element types of A and B.
struct Pipelines {
    kernels: Vec<Kernel>,
    /// The block variant's `gemm_vec4` entry points (empty for tiled).
    vec4: Vec<Kernel>,
}

/// The GEMM pipelines of one variant, in its four transpose combinations,
/// with A and B in f32 and, once [`Gemm::enable_half`] ran, either or both
/// in f16.
pub struct Gemm {
    variant: GemmVariant,
    tile: TileShape,
    /// Indexed by [`Gemm::types`]: f32 · f32 first (always built).
    /// Built once each, on first use for the f16 ones: the GEMM is shared
    /// by every model on a context.
    pipes: [std::sync::OnceLock<Pipelines>; 4],
    k_chunk: usize,
}

impl Gemm {
    /// Compiles `variant` (the tiled one with tile shape `tile`, which the
    /// other variants ignore), whatever the adapter prefers; fails when the
    /// adapter cannot run it (a tile beyond its limits, the subgroup variant
    /// without 8-lane subgroups). [`crate::kernels::Kernels`] picks the
    /// variant and tile from a [`crate::gpu::tuning::Tuning`] and shares the
    /// result through the context's pipeline cache.
    pub fn new(ctx: &GpuContext, variant: GemmVariant, tile: TileShape) -> Result<Self> {
        let k_chunk = match variant {
            // One pass per k plus the exit check, then the store loops; a
            // multiple of 4 so that later chunks keep vec4 alignment
            // (`gemm_vec4` takes fewer passes: one per 4 k and the tail;
            // `gemm_sg` one per 4 k, the tail and 8 blocks' stores).
            GemmVariant::Block => (LOOP_CAP - 1 - STORE_PASSES) / 4 * 4,
            GemmVariant::Subgroup => {
                if ctx.subgroup != Some(SG_WIDTH) {
                    return Err(Error::Invalid(format!(
                        "the subgroup GEMM needs subgroups of {SG_WIDTH} lanes; adapter {} has {}",
                        ctx.info.name,
                        match ctx.subgroup {
                            Some(w) => format!("subgroups of {w}"),
                            None => "no subgroups of one fixed width".into(),
                        }
                    )));
                }
                (LOOP_CAP - 1 - STORE_PASSES) / 4 * 4
            }
            GemmVariant::Tiled => {
                tile.check(&ctx.limits)?;
                let steps = (LOOP_CAP - 1 - STORE_PASSES) / tile.passes_per_step();
                steps * tile.tk as usize
            }
        };
        let src = Self::module_source(variant, false, false);
        Ok(Self {
            variant,
            tile,
            pipes: [
                std::sync::OnceLock::from(Self::pipelines(ctx, variant, tile, &src)),
                std::sync::OnceLock::new(),
                std::sync::OnceLock::new(),
                std::sync::OnceLock::new(),
            ],
            k_chunk,
        })
    }

    /// Index of the pipelines with f16 A (`half_a`) and f16 B (`half_b`).
    fn types(half_a: bool, half_b: bool) -> usize {
        usize::from(half_a) << 1 | usize::from(half_b)
    }

    /// Compiles the pipelines with A, B or both in f16 (the device needs
    /// SHADER_F16), for [`Gemm::dispatch_as`]; idempotent.
    pub fn enable_half(&self, ctx: &GpuContext) {
        for (half_a, half_b) in HALF_TYPES {
            self.pipes[Self::types(half_a, half_b)].get_or_init(|| {
                let src = Self::module_source(self.variant, half_a, half_b);
                Self::pipelines(ctx, self.variant, self.tile, &src)
            });
        }
    }

    /// The source a variant's module is built from: [`Gemm::source`], less
    /// `gemm_sg` (between its `subgroup` markers) except for the subgroup
    /// variant, since validation refuses subgroup operations on devices
    /// without them.
    pub fn module_source(variant: GemmVariant, half_a: bool, half_b: bool) -> String {
        let src = Self::source(half_a, half_b);
        match variant {
            GemmVariant::Subgroup => src,
            _ => crate::gpu::without_subgroups(&src),
        }
    }

    /// The shader source with A (`half_a`) and/or B (`half_b`) in f16.
    pub fn source(half_a: bool, half_b: bool) -> String {
        let aliases: Vec<&str> = [(half_a, "AT"), (half_b, "BT")]
            .iter()
            .filter_map(|&(on, name)| on.then_some(name))
            .collect();
        match aliases.is_empty() {
            true => source(),
            false => crate::gpu::half_source(&source(), &aliases, &[]),
        }
    }

    fn pipelines(ctx: &GpuContext, variant: GemmVariant, tile: TileShape, src: &str) -> Pipelines {
        let entry = variant.entry();
        let m = module(ctx, "gemm", src);
        let bindings = [
            (1, Binding::Read),
            (2, Binding::Read),
            (3, Binding::Read),
            (4, Binding::ReadWrite),
        ];
        let consts = |v: u32| {
            [
                ("TRANS_A", f64::from(v >> 1 & 1)),
                ("TRANS_B", f64::from(v & 1)),
                ("WG_M", f64::from(tile.wg_m)),
                ("WG_N", f64::from(tile.wg_n)),
                ("TK", f64::from(tile.tk)),
            ]
        };
        let kernels = (0..4)
            .map(|v| Kernel::new(ctx, &m, entry, &bindings, &consts(v)))
            .collect();
        let vec4_bindings = [
            (5, Binding::Read),
            (6, Binding::Read),
            (3, Binding::Read),
            (4, Binding::ReadWrite),
        ];
        let vec4_entry = match variant {
            GemmVariant::Block => "gemm_vec4",
            GemmVariant::Subgroup => "gemm_sg",
            GemmVariant::Tiled => "",
        };
        // gemm_sg also reads unaligned A and B through their scalar views.
        let sg_bindings = [
            vec4_bindings.as_slice(),
            &[(1, Binding::Read), (2, Binding::Read)],
        ]
        .concat();
        let vec4 = match variant {
            GemmVariant::Tiled => Vec::new(),
            GemmVariant::Block => (0..4)
                .map(|v| Kernel::new(ctx, &m, vec4_entry, &vec4_bindings, &consts(v)))
                .collect(),
            GemmVariant::Subgroup => (0..4)
                .map(|v| Kernel::new(ctx, &m, vec4_entry, &sg_bindings, &consts(v)))
                .collect(),
        };
        Pipelines { kernels, vec4 }
    }

    /// The variant compiled.
    pub fn variant(&self) -> GemmVariant {
        self.variant
    }

    /// Whether `op` runs with vec4 loads (`gemm_vec4`, or `gemm_sg` in the
    /// subgroup variant): not tiled, both buffers of 16 bytes or more, and
    /// for `gemm_vec4` A's and B's offsets and leading dimensions multiples
    /// of 4 (`gemm_sg` reads an unaligned operand as scalars).
    pub fn uses_vec4(&self, op: &GemmOp<'_>) -> bool {
        // A buffer bound as array<vec4<f32>> must hold one vec4 at least.
        self.variant != GemmVariant::Tiled
            && op.a.0.size() >= 16
            && op.b.0.size() >= 16
            && (self.variant == GemmVariant::Subgroup || Self::a_aligned(op) && Self::b_aligned(op))
    }

    fn a_aligned(op: &GemmOp<'_>) -> bool {
        op.a.1.is_multiple_of(4) && op.a.2.is_multiple_of(4)
    }

    fn b_aligned(op: &GemmOp<'_>) -> bool {
        op.b.1.is_multiple_of(4) && op.b.2.is_multiple_of(4)
    }

    /// The longest inner dimension one dispatch covers; longer ones are
    /// split into several dispatches.
    pub fn k_chunk(&self) -> usize {
        self.k_chunk
    }

    /// The dispatches for `op`, to record in order: none when C is empty,
    /// one when `op.k` is at most [`Gemm::k_chunk`], else one per chunk of
    /// K (the first honours `accumulate`, the biases and overwrites or adds
    /// to C as asked; later ones add their partial products to C).
    pub fn dispatch(&self, ctx: &GpuContext, op: &GemmOp<'_>) -> Result<Vec<Dispatch>> {
        self.dispatch_as(ctx, op, false, false)
    }

    /// As [`Gemm::dispatch`]; with `half_a` (`half_b`), A's (B's) buffer
    /// holds f16 values (offsets and leading dimension still in elements),
    /// which needs [`Gemm::enable_half`] first.
    pub fn dispatch_as(
        &self,
        ctx: &GpuContext,
        op: &GemmOp<'_>,
        half_a: bool,
        half_b: bool,
    ) -> Result<Vec<Dispatch>> {
        let Some(pipes) = self.pipes[Self::types(half_a, half_b)].get() else {
            return Err(Error::Invalid(
                "an f16 GEMM before the f16 pipelines were built (Gemm::enable_half)".into(),
            ));
        };
        if op.m == 0 || op.n == 0 {
            return Ok(Vec::new());
        }
        let (bias_buf, b1, b2) = match op.bias {
            Some((buf, b1, b2)) => (buf, b1, b2),
            None => (op.a.0, None, None),
        };
        let wide = self.uses_vec4(op);
        let (rows, cols) = match self.variant {
            GemmVariant::Block if wide => (VEC4_TILE, VEC4_TILE),
            GemmVariant::Subgroup if wide => (SG_TILE, SG_TILE),
            GemmVariant::Block | GemmVariant::Subgroup => (BLOCK_TILE, BLOCK_TILE),
            GemmVariant::Tiled => (4 * self.tile.wg_m as usize, 4 * self.tile.wg_n as usize),
        };
        let groups = (
            groups_1d(ctx, "gemm columns", op.n, cols)?,
            groups_1d(ctx, "gemm rows", op.m, rows)?,
        );
        let which = usize::from(op.trans_a) << 1 | usize::from(op.trans_b);
        let kernel = match wide {
            true => &pipes.vec4[which],
            false => &pipes.kernels[which],
        };
        // gemm_sg's flags A_SCALAR and B_SCALAR: A or B read as scalars.
        let scalar = u32::from(wide && !Self::a_aligned(op)) << 3
            | u32::from(wide && !Self::b_aligned(op)) << 4;
        let chunks = op.k.div_ceil(self.k_chunk).max(1);
        let mut out = Vec::with_capacity(chunks);
        for i in 0..chunks {
            let k0 = i * self.k_chunk;
            let kc = self.k_chunk.min(op.k - k0);
            // op(A)[:, k0..] and op(B)[k0.., :] as offsets into the stored operands.
            let a_off = op.a.1 + if op.trans_a { k0 * op.a.2 } else { k0 };
            let b_off = op.b.1 + if op.trans_b { k0 } else { k0 * op.b.2 };
            let flags = scalar
                | if i == 0 {
                    u32::from(op.accumulate)
                        | u32::from(b1.is_some()) << 1
                        | u32::from(b2.is_some()) << 2
                } else {
                    1
                };
            let params = GemmUniform {
                m: u32_of("gemm m", op.m)?,
                n: u32_of("gemm n", op.n)?,
                k: u32_of("gemm k", kc)?,
                lda: u32_of("gemm lda", op.a.2)?,
                ldb: u32_of("gemm ldb", op.b.2)?,
                ldc: u32_of("gemm ldc", op.c.2)?,
                a_off: u32_of("gemm a offset", a_off)?,
                b_off: u32_of("gemm b offset", b_off)?,
                c_off: u32_of("gemm c offset", op.c.1)?,
                bias1_off: u32_of("gemm bias offset", b1.unwrap_or(0))?,
                bias2_off: u32_of("gemm bias offset", b2.unwrap_or(0))?,
                flags,
                alpha: op.alpha,
                ..Default::default()
            };
            let buffers = [op.a.0, op.b.0, bias_buf, op.c.0, op.a.0, op.b.0];
            let bound = match wide && self.variant == GemmVariant::Subgroup {
                true => &buffers[..],
                false => &buffers[..4],
            };
            out.push(kernel.dispatch(ctx, &params, bound, groups));
        }
        Ok(out)
    }
}
