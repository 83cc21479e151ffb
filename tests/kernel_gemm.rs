//! GEMM (`shaders/gemm.wgsl`) in every variant, against f64 CPU
//! computations on whatever adapter is present (lavapipe in CI): a grid of
//! shapes, transposes, offsets, padded leading dimensions, biases, alpha and
//! accumulation; bit-identical reruns; inner dimensions beyond lavapipe's
//! loop cap, split into several dispatches; and the per-adapter choice of
//! variant. The column sums of `shaders/reduce.wgsl` are in
//! `kernel_reduce.rs`.

mod common;

use common::gpu::*;

use common::{assert_close, ctx};
use lstm_wgpu::GpuContext;
use lstm_wgpu::kernels::gemm::{Gemm, GemmOp, GemmVariant, LOOP_CAP, TileShape};

/// The variants this adapter can run: block and tiled everywhere, and the
/// subgroup variant where subgroups are 8 lanes wide (lavapipe; else
/// `subgroup_variant_needs_8_lanes` checks that it is refused).
fn variants(ctx: &GpuContext) -> Vec<GemmVariant> {
    let mut v = vec![GemmVariant::Block, GemmVariant::Tiled];
    if ctx.subgroup == Some(lstm_wgpu::kernels::gemm::SG_WIDTH) {
        v.push(GemmVariant::Subgroup);
    }
    v
}

/// One GEMM case, with its storage layout.
#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
    /// Element offsets of A, B and C in their buffers.
    offs: (usize, usize, usize),
    /// Leading dimensions beyond the stored row width.
    pad: (usize, usize, usize),
    bias1: bool,
    bias2: bool,
    alpha: f32,
    accumulate: bool,
}

impl Case {
    /// Stored (rows, row width) of A and B.
    fn a_dims(&self) -> (usize, usize) {
        if self.trans_a {
            (self.k, self.m)
        } else {
            (self.m, self.k)
        }
    }
    fn b_dims(&self) -> (usize, usize) {
        if self.trans_b {
            (self.n, self.k)
        } else {
            (self.k, self.n)
        }
    }
    fn lds(&self) -> (usize, usize, usize) {
        (
            self.a_dims().1 + self.pad.0,
            self.b_dims().1 + self.pad.1,
            self.n + self.pad.2,
        )
    }
}

/// Host data of one case: A, B, bias (two vectors of n, at 0 and n + 1)
/// and the initial C.
struct Data {
    a: Vec<f32>,
    b: Vec<f32>,
    bias: Vec<f32>,
    c: Vec<f32>,
}

impl Data {
    fn new(cs: &Case, fill: impl Fn(usize, u64) -> Vec<f32>) -> Self {
        let (lda, ldb, ldc) = cs.lds();
        Self {
            a: fill(cs.offs.0 + cs.a_dims().0 * lda, 1),
            b: fill(cs.offs.1 + cs.b_dims().0 * ldb, 2),
            bias: fill(2 * cs.n + 1, 3),
            c: fill(cs.offs.2 + cs.m * ldc + 3, 4),
        }
    }
}

/// The whole C buffer after the case, in f64: entries outside C unchanged.
fn reference(cs: &Case, d: &Data) -> Vec<f64> {
    let (lda, ldb, ldc) = cs.lds();
    let mut out: Vec<f64> = d.c.iter().map(|&v| v as f64).collect();
    for i in 0..cs.m {
        for j in 0..cs.n {
            let mut s = 0f64;
            for l in 0..cs.k {
                let a = if cs.trans_a {
                    d.a[cs.offs.0 + l * lda + i]
                } else {
                    d.a[cs.offs.0 + i * lda + l]
                };
                let b = if cs.trans_b {
                    d.b[cs.offs.1 + j * ldb + l]
                } else {
                    d.b[cs.offs.1 + l * ldb + j]
                };
                s += a as f64 * b as f64;
            }
            let mut v = cs.alpha as f64 * s;
            if cs.bias1 {
                v += d.bias[j] as f64;
            }
            if cs.bias2 {
                v += d.bias[cs.n + 1 + j] as f64;
            }
            let ci = cs.offs.2 + i * ldc + j;
            if cs.accumulate {
                v += out[ci];
            }
            out[ci] = v;
        }
    }
    out
}

/// Runs the case on the GPU; returns the whole C buffer and the number of
/// dispatches the GEMM took.
fn run(ctx: &GpuContext, gemm: &Gemm, cs: &Case, d: &Data) -> (Vec<f32>, usize) {
    run_as(ctx, gemm, cs, d, (false, false))
}

/// As [`run`], with A and/or B stored as f16 (`half`: (A, B)).
fn run_as(
    ctx: &GpuContext,
    gemm: &Gemm,
    cs: &Case,
    d: &Data,
    half: (bool, bool),
) -> (Vec<f32>, usize) {
    let (lda, ldb, ldc) = cs.lds();
    let upload = |label: &str, v: &[f32], h: bool| match h {
        true => f16_buffer(ctx, label, v),
        false => ctx.storage_init(label, v).expect("buffer"),
    };
    let a = upload("a", &d.a, half.0);
    let b = upload("b", &d.b, half.1);
    let bias = ctx.storage_init("bias", &d.bias).expect("buffer");
    let c = ctx.storage_init("c", &d.c).expect("buffer");
    let op = GemmOp {
        m: cs.m,
        n: cs.n,
        k: cs.k,
        trans_a: cs.trans_a,
        trans_b: cs.trans_b,
        a: (&a, cs.offs.0, lda),
        b: (&b, cs.offs.1, ldb),
        c: (&c, cs.offs.2, ldc),
        bias: (cs.bias1 || cs.bias2).then_some((
            &bias,
            cs.bias1.then_some(0),
            cs.bias2.then_some(cs.n + 1),
        )),
        alpha: cs.alpha,
        accumulate: cs.accumulate,
    };
    let dispatches = ctx
        .scoped(|| gemm.dispatch_as(ctx, &op, half.0, half.1))
        .expect("valid GEMM");
    record(ctx, &dispatches);
    let out = ctx.read_f32(&c, 0, d.c.len()).expect("readback");
    (out, dispatches.len())
}

/// Pads a case's leading dimensions of A and B up to multiples of 4 (plus
/// 4), so that the block variant reads them with vec4 loads.
fn aligned(cs: Case) -> Case {
    let up = |w: usize| (4 - w % 4) % 4 + 4;
    Case {
        offs: (8, 4, cs.offs.2),
        pad: (up(cs.a_dims().1), up(cs.b_dims().1), cs.pad.2),
        ..cs
    }
}

/// The grid: every (M, N, K) from {1, 3, 17, 64, 65, 130} in all four
/// transpose combinations, cycling through five layouts: packed; offsets and
/// padded leading dimensions; one bias; both biases, alpha and accumulate
/// (with offsets and padding); the last again with A and B aligned to 4
/// elements (the block variant's vec4 loads).
fn grid() -> Vec<Case> {
    const DIMS: [usize; 6] = [1, 3, 17, 64, 65, 130];
    let mut cases = Vec::new();
    let mut i = 0;
    for &m in &DIMS {
        for &n in &DIMS {
            for &k in &DIMS {
                for t in 0..4 {
                    let layout = i % 5;
                    i += 1;
                    let shifted = layout == 1 || layout >= 3;
                    let cs = Case {
                        m,
                        n,
                        k,
                        trans_a: t & 2 != 0,
                        trans_b: t & 1 != 0,
                        offs: if shifted { (5, 3, 7) } else { (0, 0, 0) },
                        pad: if shifted { (3, 1, 2) } else { (0, 0, 0) },
                        bias1: layout >= 2,
                        bias2: layout >= 3,
                        alpha: if layout >= 3 { -0.75 } else { 1.0 },
                        accumulate: layout >= 3,
                    };
                    cases.push(if layout == 4 { aligned(cs) } else { cs });
                }
            }
        }
    }
    cases
}

/// Both variants over the grid, against the f64 product. Tolerance 1e-5 of
/// max |ref| over the whole C buffer (padding included, which must stay
/// untouched): f32 products summed in order over K <= 130 err by a few ulp
/// of the largest partial sum, ~1e-6 relative.
#[test]
fn gemm_grid_matches_f64_reference() {
    let ctx = ctx();
    let cases = grid();
    for v in variants(&ctx) {
        let gemm = Gemm::new(&ctx, v, TileShape::DEFAULT).expect("GEMM compiles");
        let mut worst = 0f64;
        for cs in &cases {
            let d = Data::new(cs, values);
            let want = reference(cs, &d);
            let (got, n) = run(&ctx, &gemm, cs, &d);
            assert_eq!(n, 1, "{v}: {cs:?} takes one dispatch");
            assert_close(&format!("{v} {cs:?}"), &got, &want, 1e-5);
            let scale = want.iter().fold(1e-30f64, |m, x| m.max(x.abs()));
            let err = got
                .iter()
                .zip(&want)
                .fold(0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
            worst = worst.max(err / scale);
        }
        println!(
            "{v}: {} cases, worst relative error {worst:.2e}",
            cases.len()
        );
    }
}

/// The block variant reads aligned operands with vec4 loads and others
/// with scalar ones (the subgroup variant: `gemm_sg` throughout, reading
/// an unaligned A, B or both as scalars); all paths occur in the grid, and
/// agree bit for bit (same products, same order).
#[test]
fn block_vec4_and_scalar_paths_agree() {
    let ctx = ctx();
    for v in variants(&ctx) {
        if v != GemmVariant::Tiled {
            vec4_and_scalar_paths_agree(&ctx, v);
        }
    }
}

fn vec4_and_scalar_paths_agree(ctx: &GpuContext, v: GemmVariant) {
    let gemm = Gemm::new(ctx, v, TileShape::DEFAULT).expect("GEMM compiles");
    let tiled = Gemm::new(ctx, GemmVariant::Tiled, TileShape::DEFAULT).expect("GEMM compiles");
    let buf = ctx.storage("x", 16).expect("buffer");
    let op = |a_off, lda, b_off, ldb| GemmOp {
        m: 4,
        n: 4,
        k: 4,
        trans_a: false,
        trans_b: false,
        a: (&buf, a_off, lda),
        b: (&buf, b_off, ldb),
        c: (&buf, 0, 4),
        bias: None,
        alpha: 1.0,
        accumulate: false,
    };
    assert!(gemm.uses_vec4(&op(4, 8, 0, 4)));
    // gemm_sg reads an unaligned A or B as scalars; gemm_vec4 needs both
    // aligned.
    let sg = v == GemmVariant::Subgroup;
    assert_eq!(gemm.uses_vec4(&op(2, 8, 0, 4)), sg);
    assert_eq!(gemm.uses_vec4(&op(4, 5, 0, 4)), sg);
    assert_eq!(gemm.uses_vec4(&op(4, 8, 1, 4)), sg);
    assert_eq!(gemm.uses_vec4(&op(4, 8, 0, 10)), sg);
    assert!(!tiled.uses_vec4(&op(4, 8, 0, 4)));
    let mut both = 0;
    for cs in grid()
        .iter()
        .filter(|c| c.m >= 17 && c.n >= 17 && c.k >= 17)
    {
        let vec4 = aligned(*cs);
        let d = Data::new(&vec4, values);
        // The same stored values at scalar-only offsets (A and B shifted by one).
        let shifted = Case {
            offs: (vec4.offs.0 + 1, vec4.offs.1 + 1, vec4.offs.2),
            ..vec4
        };
        let d2 = Data {
            a: [vec![0.5], d.a.clone()].concat(),
            b: [vec![0.5], d.b.clone()].concat(),
            bias: d.bias.clone(),
            c: d.c.clone(),
        };
        let (x, _) = run(ctx, &gemm, &vec4, &d);
        let (y, _) = run(ctx, &gemm, &shifted, &d2);
        assert_eq!(
            bits(&x),
            bits(&y),
            "{v} {cs:?}: vec4 and scalar paths differ"
        );
        // Only A shifted: gemm_sg with A read as scalars.
        let a_only = Case {
            offs: (vec4.offs.0 + 1, vec4.offs.1, vec4.offs.2),
            ..vec4
        };
        let d3 = Data {
            b: d.b.clone(),
            ..d2
        };
        let (z, _) = run(ctx, &gemm, &a_only, &d3);
        assert_eq!(
            bits(&x),
            bits(&z),
            "{v} {cs:?}: vec4 and scalar-A paths differ"
        );
        // Only B shifted: gemm_sg with B read as scalars.
        let b_only = Case {
            offs: (vec4.offs.0, vec4.offs.1 + 1, vec4.offs.2),
            ..vec4
        };
        let d4 = Data {
            a: d.a.clone(),
            b: d2.b,
            bias: d.bias.clone(),
            c: d.c.clone(),
        };
        let (w, _) = run(ctx, &gemm, &b_only, &d4);
        assert_eq!(
            bits(&x),
            bits(&w),
            "{v} {cs:?}: vec4 and scalar-B paths differ"
        );
        both += 1;
    }
    assert!(both > 50);
}

/// Rerunning a GEMM gives the same bits, for both variants, on the largest
/// grid shapes in every transpose combination.
#[test]
fn gemm_reruns_are_bit_identical() {
    let ctx = ctx();
    for v in variants(&ctx) {
        let gemm = Gemm::new(&ctx, v, TileShape::DEFAULT).expect("GEMM compiles");
        for cs in grid().iter().filter(|c| c.m * c.n * c.k >= 130 * 65 * 64) {
            let d = Data::new(cs, values);
            let (first, _) = run(&ctx, &gemm, cs, &d);
            let (second, _) = run(&ctx, &gemm, cs, &d);
            assert_eq!(bits(&first), bits(&second), "{v}: {cs:?} differs on rerun");
        }
    }
}

/// Empty C records nothing; K = 0 writes alpha·0 + biases (+ C).
#[test]
fn gemm_degenerate_shapes() {
    let ctx = ctx();
    for v in variants(&ctx) {
        let gemm = Gemm::new(&ctx, v, TileShape::DEFAULT).expect("GEMM compiles");
        let cs = Case {
            m: 5,
            n: 6,
            k: 0,
            trans_a: false,
            trans_b: false,
            offs: (0, 0, 1),
            pad: (1, 0, 1),
            bias1: true,
            bias2: false,
            alpha: 2.0,
            accumulate: true,
        };
        let d = Data::new(&cs, values);
        let (got, n) = run(&ctx, &gemm, &cs, &d);
        assert_eq!(n, 1, "{v}: K = 0 still writes C");
        assert_close(&format!("{v} K=0"), &got, &reference(&cs, &d), 0.0);
        for (m, n) in [(0, 4), (4, 0)] {
            let cs = Case { m, n, k: 3, ..cs };
            let d = Data::new(&cs, values);
            let (got, count) = run(&ctx, &gemm, &cs, &d);
            assert_eq!(count, 0, "{v}: empty C records no dispatch");
            assert_eq!(got, d.c, "{v}: empty C leaves the buffer alone");
        }
    }
}

/// Inner dimensions beyond lavapipe's loop cap (65,535 iterations per
/// invocation, silently truncated) come out right: the GEMM splits K into
/// chunks, the first honouring bias and accumulate, later ones adding on.
/// Integer data keeps every sum exact in f32, so the check is exact: one
/// dropped term would show. K = k_chunk exactly must fit in one dispatch
/// (this is what checks the chunk against the cap), k_chunk + 1 takes two.
#[test]
fn gemm_long_inner_dimension_is_exact() {
    let ctx = ctx();
    for v in variants(&ctx) {
        let gemm = Gemm::new(&ctx, v, TileShape::DEFAULT).expect("GEMM compiles");
        let kc = gemm.k_chunk();
        assert!(kc < LOOP_CAP && kc > LOOP_CAP / 2, "{v}: k_chunk {kc}");
        for (k, dispatches) in [(kc, 1), (kc + 1, 2), (70_000, 70_000usize.div_ceil(kc))] {
            for (trans_a, trans_b, align) in [
                (true, false, false),
                (false, true, false),
                (false, false, false),
                (true, false, true),
                (false, true, true),
                (false, false, true),
            ] {
                let cs = Case {
                    m: 5,
                    n: 6,
                    k,
                    trans_a,
                    trans_b,
                    offs: (2, 1, 3),
                    pad: (1, 2, 1),
                    bias1: true,
                    bias2: true,
                    alpha: 0.5,
                    accumulate: true,
                };
                let cs = if align { aligned(cs) } else { cs };
                let d = Data::new(&cs, |n, seed| ints(n, seed, 2));
                let (got, n) = run(&ctx, &gemm, &cs, &d);
                assert_eq!(n, dispatches, "{v}: dispatches for K = {k}");
                let want = reference(&cs, &d);
                let scale = want.iter().fold(0f64, |m, x| m.max(x.abs()));
                assert!(scale > 100.0, "the data must not cancel out");
                assert_close(&format!("{v} K={k} {cs:?}"), &got, &want, 0.0);
            }
        }
    }
}

/// The f16-mixed GEMMs (A, B or both stored as f16, converted on load,
/// products and sums in f32) of both variants over every 7th case of the
/// grid, against the f64 product of the f16-rounded operands; tolerance as
/// the f32 grid (the rounding of the operands is in the reference).
#[test]
fn gemm_f16_operands_match_f64_reference() {
    use lstm_wgpu::kernels::gemm::HALF_TYPES;
    let ctx = ctx();
    assert!(
        ctx.f16,
        "this adapter lacks SHADER_F16; the f16 GEMM tests need it"
    );
    let cases: Vec<Case> = grid().into_iter().step_by(7).collect();
    for v in variants(&ctx) {
        let gemm = Gemm::new(&ctx, v, TileShape::DEFAULT).expect("GEMM compiles");
        gemm.enable_half(&ctx);
        for half in HALF_TYPES {
            for cs in &cases {
                let mut d = Data::new(cs, values);
                if half.0 {
                    d.a = f16_rounded(&d.a);
                }
                if half.1 {
                    d.b = f16_rounded(&d.b);
                }
                let want = reference(cs, &d);
                let (got, _) = run_as(&ctx, &gemm, cs, &d, half);
                assert_close(&format!("{v} f16 {half:?} {cs:?}"), &got, &want, 1e-5);
            }
        }
    }
    // Without enable_half, an f16 GEMM is an error, not a wrong result.
    let gemm = Gemm::new(&ctx, GemmVariant::Block, TileShape::DEFAULT).expect("GEMM compiles");
    let cs = grid()[0];
    let d = Data::new(&cs, values);
    let a = ctx.storage_init("a", &d.a).expect("buffer");
    let op = GemmOp {
        m: cs.m,
        n: cs.n,
        k: cs.k,
        trans_a: false,
        trans_b: false,
        a: (&a, 0, cs.k),
        b: (&a, 0, cs.n),
        c: (&a, 0, cs.n),
        bias: None,
        alpha: 1.0,
        accumulate: false,
    };
    assert!(gemm.dispatch_as(&ctx, &op, true, false).is_err());
}

/// The variant follows the adapter: CPU adapters and llvmpipe get the
/// register block, GPUs the tiles unless their limits cannot hold a tile.
#[test]
fn variant_follows_adapter() {
    let ctx = ctx();
    let limits = wgpu::Limits::default();
    let mut info = ctx.info.clone();
    let named = |info: &mut wgpu::AdapterInfo, name: &str, driver: &str, ty| {
        info.name = name.into();
        info.driver = driver.into();
        info.device_type = ty;
    };
    use wgpu::DeviceType::*;
    for (name, driver, ty, want) in [
        (
            "llvmpipe (LLVM 15.0.6, 256 bits)",
            "llvmpipe",
            Cpu,
            GemmVariant::Block,
        ),
        (
            "llvmpipe (LLVM 15.0.6, 256 bits)",
            "llvmpipe",
            Other,
            GemmVariant::Block,
        ),
        ("SwiftShader Device", "", Cpu, GemmVariant::Block),
        (
            "NVIDIA H100 80GB HBM3",
            "NVIDIA",
            DiscreteGpu,
            GemmVariant::Tiled,
        ),
        ("AMD Radeon 780M", "radv", IntegratedGpu, GemmVariant::Tiled),
    ] {
        named(&mut info, name, driver, ty);
        assert_eq!(
            GemmVariant::for_adapter(&info, &limits, None),
            want,
            "{name}"
        );
        // 8-lane subgroups (lavapipe with 256-bit vectors) pick `gemm_sg` on
        // CPU adapters only; other widths keep the register block.
        let sg = match want {
            GemmVariant::Block => GemmVariant::Subgroup,
            other => other,
        };
        assert_eq!(
            GemmVariant::for_adapter(&info, &limits, Some(8)),
            sg,
            "{name}"
        );
        assert_eq!(
            GemmVariant::for_adapter(&info, &limits, Some(16)),
            want,
            "{name}"
        );
    }
    named(&mut info, "small GPU", "", DiscreteGpu);
    let small = wgpu::Limits {
        max_compute_invocations_per_workgroup: 128,
        ..limits
    };
    assert_eq!(
        GemmVariant::for_adapter(&info, &small, Some(32)),
        GemmVariant::Block
    );
    assert!(TileShape::DEFAULT.check(&small).is_err());
    assert_eq!(GemmVariant::parse("Tiled"), Ok(GemmVariant::Tiled));
    assert_eq!(GemmVariant::parse("block"), Ok(GemmVariant::Block));
    assert_eq!(GemmVariant::parse("subgroup"), Ok(GemmVariant::Subgroup));
    assert!(GemmVariant::parse("fast").is_err());
}

/// The subgroup variant runs only with 8-lane subgroups and says why not;
/// the module of every other variant is built without `gemm_sg`, and that
/// source validates without the subgroup capability.
#[test]
fn subgroup_variant_needs_8_lanes() {
    use naga::valid::{Capabilities, ValidationFlags, Validator};
    let ctx = ctx();
    match ctx.subgroup {
        Some(8) => {
            Gemm::new(&ctx, GemmVariant::Subgroup, TileShape::DEFAULT)
                .expect("8-lane subgroups suffice");
        }
        _ => {
            let err = Gemm::new(&ctx, GemmVariant::Subgroup, TileShape::DEFAULT)
                .err()
                .expect("refused without 8-lane subgroups")
                .to_string();
            assert!(err.contains("subgroups of 8 lanes"), "{err}");
        }
    }
    for half in [(false, false), (true, true)] {
        let src = Gemm::module_source(GemmVariant::Block, half.0, half.1);
        assert!(!src.contains("fn gemm_sg") && !src.contains("subgroupBroadcast"));
        let module = naga::front::wgsl::parse_str(&src).expect("parses");
        Validator::new(ValidationFlags::all(), Capabilities::SHADER_FLOAT16)
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}", e.emit_to_string(&src)));
        let full = Gemm::module_source(GemmVariant::Subgroup, half.0, half.1);
        assert!(full.contains("fn gemm_sg"));
    }
}

/// A non-default tile shape (pipeline-overridable constants) is just as
/// exact, including a K-chunk split.
#[test]
fn tiled_shape_overrides() {
    let ctx = ctx();
    let tile = TileShape {
        wg_m: 8,
        wg_n: 4,
        tk: 8,
    };
    let gemm = Gemm::new(&ctx, GemmVariant::Tiled, tile).expect("GEMM compiles");
    for cs in grid().iter().step_by(7) {
        let d = Data::new(cs, values);
        let (got, _) = run(&ctx, &gemm, cs, &d);
        assert_close(
            &format!("tile {tile:?} {cs:?}"),
            &got,
            &reference(cs, &d),
            1e-5,
        );
    }
    let cs = Case {
        m: 9,
        n: 5,
        k: gemm.k_chunk() + 3,
        trans_a: true,
        trans_b: false,
        offs: (0, 0, 0),
        pad: (0, 0, 0),
        bias1: false,
        bias2: false,
        alpha: 1.0,
        accumulate: false,
    };
    let d = Data::new(&cs, |n, seed| ints(n, seed, 2));
    let (got, n) = run(&ctx, &gemm, &cs, &d);
    assert_eq!(n, 2);
    assert_close("tile long K", &got, &reference(&cs, &d), 0.0);
}
