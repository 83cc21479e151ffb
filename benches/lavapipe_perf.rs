//! Why are our kernels slow on lavapipe? One dispatch of a 512³ f32 GEMM in
//! several variants, timed in the same process: the production kernel through
//! its wrapper, and copies of it built by hand with different wgpu runtime
//! checks (bounds checks, loop bounding), constants instead of overrides,
//! vec4 bindings and workgroup shapes.
//!
//! Also the timing runs that were ignored tests: the GEMM variants on the
//! `char` shapes, and one LSTM pass per cell path.
//!
//! Run: `cargo bench --bench lavapipe_perf [-- NAME...]` with NAME among
//! `gemm_512`, `gemm_variants`, `cell_paths` (all when none is named).
//! Speed is reported, never asserted.

use lstm_wgpu::GpuContext;
use lstm_wgpu::kernels::gemm::{Gemm, GemmOp, GemmVariant, TileShape};
use lstm_wgpu::schedule::CellPath;
use lstm_wgpu::{Batch, Lstm, LstmConfig, LstmModel, Tuning, Upstream};
use std::time::Instant;
use wgpu::util::DeviceExt;

const N: usize = 512;
const GEMM_SRC: &str = include_str!("../shaders/gemm.wgsl");

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// The production kernel's uniform block for C = A·B, 512³, no transposes.
fn params() -> [u32; 16] {
    let n = N as u32;
    [
        n,
        n,
        n,
        n,
        n,
        n,
        0,
        0,
        0,
        0,
        0,
        0,
        1.0f32.to_bits(),
        0,
        0,
        0,
    ]
}

struct Bufs {
    a: wgpu::Buffer,
    b: wgpu::Buffer,
    c: wgpu::Buffer,
    want: Vec<f64>,
}

/// Median seconds of `reps` single-dispatch submits (after one warm-up).
fn time_it(ctx: &GpuContext, reps: usize, mut f: impl FnMut(&mut wgpu::ComputePass<'_>)) -> f64 {
    let mut times = Vec::new();
    for i in 0..=reps.max(1) {
        let t0 = Instant::now();
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            f(&mut pass);
        }
        ctx.queue.submit([enc.finish()]);
        ctx.wait().expect("GPU work completes");
        if i > 0 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn check(ctx: &GpuContext, bufs: &Bufs, what: &str) -> f64 {
    let got = ctx.read_f32(&bufs.c, 0, 64 * N).expect("readback");
    let mut err = 0.0f64;
    for (g, w) in got.iter().zip(&bufs.want) {
        err = err.max((f64::from(*g) - w).abs());
    }
    // Clear C so the next variant cannot pass on stale results.
    ctx.write(&bufs.c, 0, &vec![0.0f32; N * N]);
    assert!(err < 1e-3, "{what}: max error {err}");
    err
}

fn report(what: &str, secs: f64, err: f64) {
    let gflops = 2.0 * (N * N * N) as f64 / secs / 1e9;
    println!(
        "{what:<58} {:>9.2} ms {gflops:>7.2} GFLOP/s  (err {err:.1e})",
        secs * 1e3
    );
}

/// Builds and times `entry` of `src` with its own pipeline: bindings as in
/// gemm.wgsl (uniform, a, b, bias, c), `checks` for the module.
#[allow(clippy::too_many_arguments)]
fn run_variant(
    ctx: &GpuContext,
    bufs: &Bufs,
    what: &str,
    src: &str,
    entry: &str,
    checks: Option<wgpu::ShaderRuntimeChecks>,
    constants: &[(&str, f64)],
    groups: (u32, u32),
    reps: usize,
) {
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some(what),
        source: wgpu::ShaderSource::Wgsl(src.into()),
    };
    let t0 = Instant::now();
    let module = match checks {
        None => ctx.device.create_shader_module(desc),
        // SAFETY: the experiment's shaders index only within the 512² buffers
        // bound below (checked by the sizes chosen here).
        Some(c) => unsafe { ctx.device.create_shader_module_trusted(desc, c) },
    };
    let pipeline = ctx
        .device
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(what),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
    let uniform = ctx
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::cast_slice(&params()),
            usage: wgpu::BufferUsages::UNIFORM,
        });
    let layout = pipeline.get_bind_group_layout(0);
    // Entries the entry point does not use are dropped from an implicit layout.
    let mut entries = vec![
        wgpu::BindGroupEntry {
            binding: 1,
            resource: bufs.a.as_entire_binding(),
        },
        wgpu::BindGroupEntry {
            binding: 2,
            resource: bufs.b.as_entire_binding(),
        },
        wgpu::BindGroupEntry {
            binding: 4,
            resource: bufs.c.as_entire_binding(),
        },
    ];
    if src.contains("var<uniform>") {
        entries.push(wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        });
    }
    if src.contains("@binding(3)") && src.contains("bias[") {
        entries.push(wgpu::BindGroupEntry {
            binding: 3,
            resource: bufs.a.as_entire_binding(),
        });
    }
    let bg = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &layout,
        entries: &entries,
    });
    let build = t0.elapsed().as_secs_f64();
    let secs = time_it(ctx, reps, |pass| {
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, 1);
    });
    let err = check(ctx, bufs, what);
    report(what, secs, err);
    let _ = build;
}

/// Like `run_variant` for a shader using binding 4 only, result unchecked.
fn time_raw(
    ctx: &GpuContext,
    bufs: &Bufs,
    what: &str,
    src: &str,
    checks: Option<wgpu::ShaderRuntimeChecks>,
    groups: (u32, u32),
    reps: usize,
) {
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some(what),
        source: wgpu::ShaderSource::Wgsl(src.into()),
    };
    let module = match checks {
        None => ctx.device.create_shader_module(desc),
        // SAFETY: one store per invocation, inside the 512² buffer C.
        Some(c) => unsafe { ctx.device.create_shader_module_trusted(desc, c) },
    };
    let pipeline = ctx
        .device
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(what),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
    let bg = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[wgpu::BindGroupEntry {
            binding: 4,
            resource: bufs.c.as_entire_binding(),
        }],
    });
    let secs = time_it(ctx, reps, |pass| {
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, 1);
    });
    report(what, secs, 0.0);
}

/// The production `gemm` entry, with the overrides turned into plain
/// constants (TRANS_A = TRANS_B = false).
fn no_overrides(src: &str) -> String {
    src.replace(
        "override TRANS_A: bool = false;",
        "const TRANS_A: bool = false;",
    )
    .replace(
        "override TRANS_B: bool = false;",
        "const TRANS_B: bool = false;",
    )
}

/// A minimal 4x4-block GEMM with scalar loads, compile-time sizes, no
/// offsets and no uniform use (C = A·B, 512³).
const SCALAR_CONST: &str = r#"
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
const NN: u32 = 512u;
@compute @workgroup_size(WX, WY)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let m0 = gid.y * 4u;
    let n0 = gid.x * 4u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k = 0u; k < NN; k++) {
        let bv = vec4<f32>(b[k * NN + n0], b[k * NN + n0 + 1u], b[k * NN + n0 + 2u], b[k * NN + n0 + 3u]);
        acc0 += a[m0 * NN + k] * bv;
        acc1 += a[(m0 + 1u) * NN + k] * bv;
        acc2 += a[(m0 + 2u) * NN + k] * bv;
        acc3 += a[(m0 + 3u) * NN + k] * bv;
    }
    for (var q = 0u; q < 4u; q++) {
        c[m0 * NN + n0 + q] = acc0[q];
        c[(m0 + 1u) * NN + n0 + q] = acc1[q];
        c[(m0 + 2u) * NN + n0 + q] = acc2[q];
        c[(m0 + 3u) * NN + n0 + q] = acc3[q];
    }
}
"#;

/// The same with vec4 bindings of A, B and C: per 4 k, 4 vec4 loads of A and
/// 4 of B for 64 FMAs.
const VEC4_CONST: &str = r#"
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> c: array<vec4<f32>>;
const NN: u32 = 512u;
const N4: u32 = 128u;
@compute @workgroup_size(WX, WY)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let m0 = gid.y * 4u;
    let n4 = gid.x;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k4 = 0u; k4 < N4; k4++) {
        let a0 = a[m0 * N4 + k4];
        let a1 = a[(m0 + 1u) * N4 + k4];
        let a2 = a[(m0 + 2u) * N4 + k4];
        let a3 = a[(m0 + 3u) * N4 + k4];
        let k = k4 * 4u;
        let b0 = b[k * N4 + n4];
        let b1 = b[(k + 1u) * N4 + n4];
        let b2 = b[(k + 2u) * N4 + n4];
        let b3 = b[(k + 3u) * N4 + n4];
        acc0 += a0.x * b0 + a0.y * b1 + a0.z * b2 + a0.w * b3;
        acc1 += a1.x * b0 + a1.y * b1 + a1.z * b2 + a1.w * b3;
        acc2 += a2.x * b0 + a2.y * b1 + a2.z * b2 + a2.w * b3;
        acc3 += a3.x * b0 + a3.y * b1 + a3.z * b2 + a3.w * b3;
    }
    c[m0 * N4 + n4] = acc0;
    c[(m0 + 1u) * N4 + n4] = acc1;
    c[(m0 + 2u) * N4 + n4] = acc2;
    c[(m0 + 3u) * N4 + n4] = acc3;
}
"#;

/// The same vec4 kernel reading sizes from the uniform (runtime loop bound).
const VEC4_UNIFORM: &str = r#"
struct Params {
    m: u32, n: u32, k: u32, lda: u32,
    ldb: u32, ldc: u32, a_off: u32, b_off: u32,
    c_off: u32, bias1_off: u32, bias2_off: u32, flags: u32,
    alpha: f32, _p0: f32, _p1: f32, _p2: f32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> c: array<vec4<f32>>;
@compute @workgroup_size(WX, WY)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let m0 = gid.y * 4u;
    let n4 = gid.x;
    let la = p.lda / 4u;
    let lb = p.ldb / 4u;
    let lc = p.ldc / 4u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k4 = 0u; k4 < p.k / 4u; k4++) {
        let a0 = a[m0 * la + k4];
        let a1 = a[(m0 + 1u) * la + k4];
        let a2 = a[(m0 + 2u) * la + k4];
        let a3 = a[(m0 + 3u) * la + k4];
        let k = k4 * 4u;
        let b0 = b[k * lb + n4];
        let b1 = b[(k + 1u) * lb + n4];
        let b2 = b[(k + 2u) * lb + n4];
        let b3 = b[(k + 3u) * lb + n4];
        acc0 += a0.x * b0 + a0.y * b1 + a0.z * b2 + a0.w * b3;
        acc1 += a1.x * b0 + a1.y * b1 + a1.z * b2 + a1.w * b3;
        acc2 += a2.x * b0 + a2.y * b1 + a2.z * b2 + a2.w * b3;
        acc3 += a3.x * b0 + a3.y * b1 + a3.z * b2 + a3.w * b3;
    }
    c[m0 * lc + n4] = p.alpha * acc0;
    c[(m0 + 1u) * lc + n4] = p.alpha * acc1;
    c[(m0 + 2u) * lc + n4] = p.alpha * acc2;
    c[(m0 + 3u) * lc + n4] = p.alpha * acc3;
}
"#;

/// Register-only FMAs: 512 iterations of 16 FMAs per invocation, no loads,
/// one store per invocation: 512³ FMAs for a 128x128 grid of invocations
/// (the result is not checked, only timed).
const REGS_ONLY: &str = r#"
@group(0) @binding(4) var<storage, read_write> c: array<vec4<f32>>;
@compute @workgroup_size(WX, WY)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let x = f32(gid.x) * 1e-3;
    let bv = vec4<f32>(x, x + 1.0, x + 2.0, x + 3.0);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k = 0u; k < 512u; k++) {
        let s = f32(k) * 1e-4;
        acc0 = fma(vec4<f32>(s), bv, acc0);
        acc1 = fma(vec4<f32>(s + 0.5), bv, acc1);
        acc2 = fma(vec4<f32>(s + 0.25), bv, acc2);
        acc3 = fma(vec4<f32>(s + 0.125), bv, acc3);
    }
    c[gid.y * 128u + gid.x] = acc0 + acc1 + acc2 + acc3;
}
"#;

/// Times the same 512³ product on the host (one thread, i-k-j order that
/// LLVM vectorises), as a measure of how fast this machine is right now.
fn host_gemm(a: &[f32], b: &[f32]) -> f64 {
    let mut c = vec![0.0f32; N * N];
    let t0 = Instant::now();
    for i in 0..N {
        let row = &mut c[i * N..(i + 1) * N];
        for l in 0..N {
            let x = a[i * N + l];
            let br = &b[l * N..(l + 1) * N];
            for (cv, bv) in row.iter_mut().zip(br) {
                *cv += x * bv;
            }
        }
    }
    let s = t0.elapsed().as_secs_f64();
    std::hint::black_box(&c);
    s
}

/// One SIMD row (8 invocations) per workgroup: the workgroup owns 8 rows
/// and 32 columns of C; lane l owns columns n0 + l + 8q (q < 4). Loads of A
/// depend on the workgroup and k only (uniform across lanes); loads of B are
/// per lane.
const UNIFORM_A: &str = r#"
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
const NN: u32 = 512u;
@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let m0 = wid.y * 8u;
    let n0 = wid.x * 32u + l;
    var acc: array<vec4<f32>, 8>;
    for (var k = 0u; k < NN; k++) {
        let bv = vec4<f32>(b[k * NN + n0], b[k * NN + n0 + 8u], b[k * NN + n0 + 16u], b[k * NN + n0 + 24u]);
        let ar = m0 * NN + k;
        acc[0] += a[ar] * bv;
        acc[1] += a[ar + NN] * bv;
        acc[2] += a[ar + 2u * NN] * bv;
        acc[3] += a[ar + 3u * NN] * bv;
        acc[4] += a[ar + 4u * NN] * bv;
        acc[5] += a[ar + 5u * NN] * bv;
        acc[6] += a[ar + 6u * NN] * bv;
        acc[7] += a[ar + 7u * NN] * bv;
    }
    for (var r = 0u; r < 8u; r++) {
        for (var q = 0u; q < 4u; q++) {
            c[(m0 + r) * NN + n0 + 8u * q] = acc[r][q];
        }
    }
}
"#;

/// As UNIFORM_A, but B is read with uniform vec4 loads too (the workgroup's
/// 32 columns), each lane picking its 4 by a select on its lane index:
/// lane l owns columns n0 + 4l .. n0 + 4l + 3.
const UNIFORM_AB: &str = r#"
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> c: array<vec4<f32>>;
const NN: u32 = 512u;
const N4: u32 = 128u;
@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let m0 = wid.y * 8u;
    let c4 = wid.x * 8u;
    var acc: array<vec4<f32>, 8>;
    for (var k = 0u; k < NN; k++) {
        let br = k * N4 + c4;
        let b01 = select(b[br], b[br + 1u], (l & 1u) != 0u);
        let b23 = select(b[br + 2u], b[br + 3u], (l & 1u) != 0u);
        let b45 = select(b[br + 4u], b[br + 5u], (l & 1u) != 0u);
        let b67 = select(b[br + 6u], b[br + 7u], (l & 1u) != 0u);
        let b03 = select(b01, b23, (l & 2u) != 0u);
        let b47 = select(b45, b67, (l & 2u) != 0u);
        let bv = select(b03, b47, (l & 4u) != 0u);
        let ar = m0 * NN + k;
        acc[0] += a[ar] * bv;
        acc[1] += a[ar + NN] * bv;
        acc[2] += a[ar + 2u * NN] * bv;
        acc[3] += a[ar + 3u * NN] * bv;
        acc[4] += a[ar + 4u * NN] * bv;
        acc[5] += a[ar + 5u * NN] * bv;
        acc[6] += a[ar + 6u * NN] * bv;
        acc[7] += a[ar + 7u * NN] * bv;
    }
    for (var r = 0u; r < 8u; r++) {
        c[(m0 + r) * N4 + c4 + l] = acc[r];
    }
}
"#;

/// Loads only: 512 iterations of 8 scalar (divergent) loads per invocation.
const LOADS_SCALAR: &str = r#"
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<vec4<f32>>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    var s = vec4<f32>(0.0);
    for (var k = 0u; k < 512u; k++) {
        let r = k * 512u + (n & 511u);
        s += vec4<f32>(b[r], b[r ^ 1u], b[r ^ 2u], b[r ^ 3u]);
        s += vec4<f32>(b[r ^ 4u], b[r ^ 5u], b[r ^ 6u], b[r ^ 7u]);
    }
    c[gid.x] = s;
}
"#;

/// Loads only: 512 iterations of 2 vec4 (divergent) loads per invocation.
const LOADS_VEC4: &str = r#"
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> c: array<vec4<f32>>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    var s = vec4<f32>(0.0);
    for (var k = 0u; k < 512u; k++) {
        let r = k * 128u + (n & 127u);
        s += b[r] + b[r ^ 1u];
    }
    c[gid.x] = s;
}
"#;

/// 8x8 register block per invocation, scalar loads: 16 loads per 64 FMAs.
const BLOCK8: &str = r#"
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
const NN: u32 = 512u;
@compute @workgroup_size(WX, WY)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let m0 = gid.y * 8u;
    let n0 = gid.x * 8u;
    var x0 = vec4<f32>(0.0);
    var y0 = vec4<f32>(0.0);
    var x1 = vec4<f32>(0.0);
    var y1 = vec4<f32>(0.0);
    var x2 = vec4<f32>(0.0);
    var y2 = vec4<f32>(0.0);
    var x3 = vec4<f32>(0.0);
    var y3 = vec4<f32>(0.0);
    var x4 = vec4<f32>(0.0);
    var y4 = vec4<f32>(0.0);
    var x5 = vec4<f32>(0.0);
    var y5 = vec4<f32>(0.0);
    var x6 = vec4<f32>(0.0);
    var y6 = vec4<f32>(0.0);
    var x7 = vec4<f32>(0.0);
    var y7 = vec4<f32>(0.0);
    for (var k = 0u; k < NN; k++) {
        let br = k * NN + n0;
        let ar = m0 * NN + k;
        let b0 = vec4<f32>(b[br], b[br + 1u], b[br + 2u], b[br + 3u]);
        let b1 = vec4<f32>(b[br + 4u], b[br + 5u], b[br + 6u], b[br + 7u]);
        let a0 = a[ar + 0u * NN];
        x0 += a0 * b0;
        y0 += a0 * b1;
        let a1 = a[ar + 1u * NN];
        x1 += a1 * b0;
        y1 += a1 * b1;
        let a2 = a[ar + 2u * NN];
        x2 += a2 * b0;
        y2 += a2 * b1;
        let a3 = a[ar + 3u * NN];
        x3 += a3 * b0;
        y3 += a3 * b1;
        let a4 = a[ar + 4u * NN];
        x4 += a4 * b0;
        y4 += a4 * b1;
        let a5 = a[ar + 5u * NN];
        x5 += a5 * b0;
        y5 += a5 * b1;
        let a6 = a[ar + 6u * NN];
        x6 += a6 * b0;
        y6 += a6 * b1;
        let a7 = a[ar + 7u * NN];
        x7 += a7 * b0;
        y7 += a7 * b1;
    }
    for (var q = 0u; q < 4u; q++) { c[(m0 + 0u) * NN + n0 + q] = x0[q]; c[(m0 + 0u) * NN + n0 + 4u + q] = y0[q]; }
    for (var q = 0u; q < 4u; q++) { c[(m0 + 1u) * NN + n0 + q] = x1[q]; c[(m0 + 1u) * NN + n0 + 4u + q] = y1[q]; }
    for (var q = 0u; q < 4u; q++) { c[(m0 + 2u) * NN + n0 + q] = x2[q]; c[(m0 + 2u) * NN + n0 + 4u + q] = y2[q]; }
    for (var q = 0u; q < 4u; q++) { c[(m0 + 3u) * NN + n0 + q] = x3[q]; c[(m0 + 3u) * NN + n0 + 4u + q] = y3[q]; }
    for (var q = 0u; q < 4u; q++) { c[(m0 + 4u) * NN + n0 + q] = x4[q]; c[(m0 + 4u) * NN + n0 + 4u + q] = y4[q]; }
    for (var q = 0u; q < 4u; q++) { c[(m0 + 5u) * NN + n0 + q] = x5[q]; c[(m0 + 5u) * NN + n0 + 4u + q] = y5[q]; }
    for (var q = 0u; q < 4u; q++) { c[(m0 + 6u) * NN + n0 + q] = x6[q]; c[(m0 + 6u) * NN + n0 + 4u + q] = y6[q]; }
    for (var q = 0u; q < 4u; q++) { c[(m0 + 7u) * NN + n0 + q] = x7[q]; c[(m0 + 7u) * NN + n0 + 4u + q] = y7[q]; }
}
"#;

/// Loads only, as LOADS_VEC4, from a 64 KiB uniform buffer.
const LOADS_UBO: &str = r#"
@group(0) @binding(0) var<uniform> u: array<vec4<f32>, 4096>;
@group(0) @binding(4) var<storage, read_write> c: array<vec4<f32>>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    var s = vec4<f32>(0.0);
    for (var k = 0u; k < 512u; k++) {
        let r = (k * 128u + (n & 127u)) & 4095u;
        s += u[r] + u[r ^ 1u];
    }
    c[gid.x] = s;
}
"#;

/// Prototype: both operands read from 64 KiB uniform-buffer windows (A
/// stored transposed, [K, M]; B [K, N]); one dispatch per 32 rows of K,
/// each adding its partial 4x4 block product to C.
const UBO_GEMM: &str = r#"
@group(0) @binding(0) var<uniform> at: array<vec4<f32>, 4096>;
@group(0) @binding(3) var<uniform> bw: array<vec4<f32>, 4096>;
@group(0) @binding(4) var<storage, read_write> c: array<vec4<f32>>;
@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let m4 = gid.y;
    let n4 = gid.x;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k = 0u; k < 32u; k++) {
        let av = at[k * 128u + m4];
        let bv = bw[k * 128u + n4];
        acc0 += av.x * bv;
        acc1 += av.y * bv;
        acc2 += av.z * bv;
        acc3 += av.w * bv;
    }
    let m0 = m4 * 4u;
    c[m0 * 128u + n4] += acc0;
    c[(m0 + 1u) * 128u + n4] += acc1;
    c[(m0 + 2u) * 128u + n4] += acc2;
    c[(m0 + 3u) * 128u + n4] += acc3;
}
"#;

fn wg(src: &str, x: u32, y: u32) -> String {
    src.replace("WX", &x.to_string())
        .replace("WY", &y.to_string())
}

fn gemm_512_variants() {
    let ctx = GpuContext::new().expect("adapter");
    println!("adapter: {}", ctx.describe());
    println!(
        "LP_NUM_THREADS={:?}",
        std::env::var("LP_NUM_THREADS").unwrap_or_default()
    );
    let a = values(N * N, 1);
    let b = values(N * N, 2);
    let want: Vec<f64> = (0..64 * N)
        .map(|idx| {
            let (i, j) = (idx / N, idx % N);
            (0..N)
                .map(|l| f64::from(a[i * N + l]) * f64::from(b[l * N + j]))
                .sum()
        })
        .collect();
    let bufs = Bufs {
        a: ctx.storage_init("a", &a).expect("buffer"),
        b: ctx.storage_init("b", &b).expect("buffer"),
        c: ctx.storage("c", N * N).expect("buffer"),
        want,
    };
    let only = std::env::var("PERF_ONLY").unwrap_or_default();
    let want_run = |tag: &str| only.is_empty() || only.split(',').any(|o| tag.starts_with(o));
    let reps = 3;

    if want_run("host") {
        let s = (0..3).map(|_| host_gemm(&a, &b)).fold(f64::MAX, f64::min);
        report(
            "host: Rust loop, 1 thread (baseline of this machine)",
            s,
            0.0,
        );
    }
    if want_run("regs") {
        for (wx, wy) in [(8u32, 8u32), (64, 1)] {
            for (name, checks) in [
                ("checked", None),
                ("unchecked", Some(wgpu::ShaderRuntimeChecks::unchecked())),
            ] {
                let tag = format!("regs-only {wx}x{wy}, {name} (no check)");
                let src = wg(REGS_ONLY, wx, wy);
                time_raw(&ctx, &bufs, &tag, &src, checks, (128 / wx, 128 / wy), reps);
            }
        }
    }
    if want_run("uni") {
        for (name, checks) in [
            ("checked", None),
            ("unchecked", Some(wgpu::ShaderRuntimeChecks::unchecked())),
        ] {
            let g = (N as u32 / 32, N as u32 / 8);
            let tag = format!("uniform A, per-lane B, {name}");
            run_variant(&ctx, &bufs, &tag, UNIFORM_A, "main", checks, &[], g, reps);
            let tag = format!("uniform A, uniform vec4 B + select, {name}");
            run_variant(&ctx, &bufs, &tag, UNIFORM_AB, "main", checks, &[], g, reps);
        }
    }
    if want_run("loads") {
        // 16384 invocations x 512 x 8 scalar loads = 67M lane loads.
        for (tag, src) in [
            ("loads: 8 scalar per iteration", LOADS_SCALAR),
            ("loads: 2 vec4 per iteration", LOADS_VEC4),
        ] {
            let desc = wgpu::ShaderModuleDescriptor {
                label: Some(tag),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            };
            let module = ctx.device.create_shader_module(desc);
            let pipeline = ctx
                .device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(tag),
                    layout: None,
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: Default::default(),
                    cache: None,
                });
            let bg = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipeline.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: bufs.b.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 4,
                        resource: bufs.c.as_entire_binding(),
                    },
                ],
            });
            let secs = time_it(&ctx, reps, |pass| {
                pass.set_pipeline(&pipeline);
                pass.set_bind_group(0, &bg, &[]);
                pass.dispatch_workgroups(256, 1, 1);
            });
            let lane_loads = 16384.0 * 512.0 * 8.0;
            println!(
                "{tag:<58} {:>9.2} ms {:>6.2} ns per 8-lane component load",
                secs * 1e3,
                secs * 1e9 / (lane_loads / 8.0)
            );
        }
    }
    if want_run("b8") {
        for (wx, wy) in [(8u32, 8u32), (64, 1)] {
            let tag = format!("8x8 block const {wx}x{wy}, checked");
            let gr = (N as u32 / 8 / wx, N as u32 / 8 / wy);
            run_variant(
                &ctx,
                &bufs,
                &tag,
                &wg(BLOCK8, wx, wy),
                "main",
                None,
                &[],
                gr,
                reps,
            );
            let tag = format!("4x4 block const {wx}x{wy}, checked");
            let gr = (N as u32 / 4 / wx, N as u32 / 4 / wy);
            run_variant(
                &ctx,
                &bufs,
                &tag,
                &wg(SCALAR_CONST, wx, wy),
                "main",
                None,
                &[],
                gr,
                reps,
            );
        }
    }
    if want_run("ubo") {
        println!(
            "max uniform binding {} B, max storage binding {} B",
            ctx.limits.max_uniform_buffer_binding_size, ctx.limits.max_storage_buffer_binding_size
        );
        let ubo = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("ubo"),
                contents: bytemuck::cast_slice(&b[..16384]),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let module = ctx
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("ubo"),
                source: wgpu::ShaderSource::Wgsl(LOADS_UBO.into()),
            });
        let pipeline = ctx
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("ubo"),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        let bg = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: ubo.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 4,
                    resource: bufs.c.as_entire_binding(),
                },
            ],
        });
        let secs = time_it(&ctx, reps, |pass| {
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bg, &[]);
            pass.dispatch_workgroups(256, 1, 1);
        });
        let lane_loads = 16384.0 * 512.0 * 8.0;
        println!(
            "{:<58} {:>9.2} ms {:>6.2} ns per 8-lane component load",
            "loads: 2 vec4 per iteration from a uniform buffer",
            secs * 1e3,
            secs * 1e9 / (lane_loads / 8.0)
        );
    }
    if want_run("ubogemm") {
        let mut at = vec![0.0f32; N * N];
        for i in 0..N {
            for l in 0..N {
                at[l * N + i] = a[i * N + l];
            }
        }
        let usage = wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::STORAGE;
        let mk = |d: &[f32]| {
            ctx.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("ubo operand"),
                    contents: bytemuck::cast_slice(d),
                    usage,
                })
        };
        let (atb, bb) = (mk(&at), mk(&b));
        let module = ctx
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("ubo gemm"),
                source: wgpu::ShaderSource::Wgsl(UBO_GEMM.into()),
            });
        let pipeline = ctx
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("ubo gemm"),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        let window = 32 * N as u64 * 4;
        let bgs: Vec<wgpu::BindGroup> = (0..N as u64 / 32)
            .map(|w| {
                ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &pipeline.get_bind_group_layout(0),
                    entries: &[
                        wgpu::BindGroupEntry {
                            binding: 0,
                            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: &atb,
                                offset: w * window,
                                size: wgpu::BufferSize::new(window),
                            }),
                        },
                        wgpu::BindGroupEntry {
                            binding: 3,
                            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: &bb,
                                offset: w * window,
                                size: wgpu::BufferSize::new(window),
                            }),
                        },
                        wgpu::BindGroupEntry {
                            binding: 4,
                            resource: bufs.c.as_entire_binding(),
                        },
                    ],
                })
            })
            .collect();
        // One timed run (C must start at zero: it accumulates).
        ctx.write(&bufs.c, 0, &vec![0.0f32; N * N]);
        ctx.wait().expect("GPU work completes");
        let secs = time_it(&ctx, 0, |pass| {
            pass.set_pipeline(&pipeline);
            for bg in &bgs {
                pass.set_bind_group(0, bg, &[]);
                pass.dispatch_workgroups(N as u32 / 32, N as u32 / 32, 1);
            }
        });
        // Recompute once from zero for the check (the timing ran it twice).
        ctx.write(&bufs.c, 0, &vec![0.0f32; N * N]);
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            for bg in &bgs {
                pass.set_bind_group(0, bg, &[]);
                pass.dispatch_workgroups(N as u32 / 32, N as u32 / 32, 1);
            }
        }
        ctx.queue.submit([enc.finish()]);
        let err = check(&ctx, &bufs, "ubo gemm");
        report("UBO-window GEMM, 4x4 block, 16 dispatches", secs, err);
    }
    if want_run("prod") {
        // (a) The production kernel through the wrapper.
        let gemm = Gemm::new(&ctx, GemmVariant::Block, TileShape::DEFAULT).expect("GEMM compiles");
        let op = GemmOp {
            m: N,
            n: N,
            k: N,
            trans_a: false,
            trans_b: false,
            a: (&bufs.a, 0, N),
            b: (&bufs.b, 0, N),
            c: (&bufs.c, 0, N),
            bias: None,
            alpha: 1.0,
            accumulate: false,
        };
        let ds = gemm.dispatch(&ctx, &op).expect("valid GEMM");
        let secs = time_it(&ctx, reps, |pass| {
            for d in &ds {
                d.record(pass);
            }
        });
        let err = check(&ctx, &bufs, "prod");
        report("prod: Gemm wrapper (block), checked module", secs, err);
    }

    let g = (N as u32 / 32, N as u32 / 32);
    let consts: &[(&str, f64)] = &[("TRANS_A", 0.0), ("TRANS_B", 0.0)];
    let unchecked = wgpu::ShaderRuntimeChecks::unchecked();
    let no_bounds = wgpu::ShaderRuntimeChecks {
        bounds_checks: false,
        ..wgpu::ShaderRuntimeChecks::checked()
    };
    let no_loop = wgpu::ShaderRuntimeChecks {
        force_loop_bounding: false,
        ..wgpu::ShaderRuntimeChecks::checked()
    };
    let cases: Vec<(&str, Option<wgpu::ShaderRuntimeChecks>)> = vec![
        ("checked", None),
        ("unchecked", Some(unchecked)),
        ("no bounds checks", Some(no_bounds)),
        ("no loop bounding", Some(no_loop)),
    ];
    for (name, checks) in &cases {
        let tag = format!("gemm.wgsl overrides, {name}");
        if want_run("ovr") {
            run_variant(
                &ctx, &bufs, &tag, GEMM_SRC, "gemm", *checks, consts, g, reps,
            );
        }
    }
    let plain = no_overrides(GEMM_SRC);
    for (name, checks) in &cases {
        let tag = format!("gemm.wgsl consts, {name}");
        if want_run("const") {
            run_variant(&ctx, &bufs, &tag, &plain, "gemm", *checks, &[], g, reps);
        }
    }
    for (name, checks) in &cases {
        for (wx, wy) in [(8u32, 8u32), (64, 1), (16, 16)] {
            if want_run("scalar") {
                let tag = format!("scalar const {wx}x{wy}, {name}");
                let gr = (N as u32 / 4 / wx, N as u32 / 4 / wy);
                let s = wg(SCALAR_CONST, wx, wy);
                run_variant(&ctx, &bufs, &tag, &s, "main", *checks, &[], gr, reps);
            }
            if want_run("vec4") {
                let tag = format!("vec4 const {wx}x{wy}, {name}");
                let gr = (N as u32 / 4 / wx, N as u32 / 4 / wy);
                let s = wg(VEC4_CONST, wx, wy);
                run_variant(&ctx, &bufs, &tag, &s, "main", *checks, &[], gr, reps);
            }
            if want_run("uvec4") {
                let tag = format!("vec4 uniform {wx}x{wy}, {name}");
                let gr = (N as u32 / 4 / wx, N as u32 / 4 / wy);
                let s = wg(VEC4_UNIFORM, wx, wy);
                run_variant(&ctx, &bufs, &tag, &s, "main", *checks, &[], gr, reps);
            }
        }
    }
}

struct Operands {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

fn variants(ctx: &GpuContext) -> Vec<GemmVariant> {
    let mut v = vec![GemmVariant::Block, GemmVariant::Tiled];
    if ctx.subgroup == Some(lstm_wgpu::kernels::gemm::SG_WIDTH) {
        v.push(GemmVariant::Subgroup);
    }
    v
}

fn record(ctx: &GpuContext, dispatches: &[lstm_wgpu::gpu::Dispatch]) {
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        for d in dispatches {
            d.record(&mut pass);
        }
    }
    ctx.queue.submit([enc.finish()]);
}

/// GFLOP/s of both variants on 512³ and the `char` workload's shapes
/// (input GEMM 2048x1024x384 with B transposed; weight gradient
/// 1024x384x2048 with A transposed), median of 5 runs after a warm-up, each
/// timed from recording to completion. Ignored because it takes minutes on
/// a loaded lavapipe; speed is reported, never asserted, but sampled
/// entries are checked against f64 so a wrong kernel cannot time well.
fn gemm_variants() {
    let ctx = GpuContext::new().expect("adapter");
    println!("adapter: {}", ctx.describe());
    for (m, n, k, trans_a, trans_b) in [
        (512, 512, 512, false, false),
        (2048, 1024, 384, false, true),
        (1024, 384, 2048, true, false),
        // The char step's own: input projection, dW, input gradient.
        (2048, 1024, 256, false, true),
        (1024, 256, 2048, true, false),
        (2048, 256, 1024, false, false),
        // Its head's weight and input gradients (A's leading dimension 65).
        (65, 256, 2048, true, false),
        (2048, 256, 65, false, false),
        // A time series' input projection and weight gradient with 10
        // features (B's leading dimension 10).
        (2048, 256, 10, false, true),
        (256, 10, 2048, true, false),
    ] {
        // A is [m, k] ([k, m] transposed), B [k, n] ([n, k] transposed).
        let (lda, ldb, ldc) = (if trans_a { m } else { k }, if trans_b { k } else { n }, n);
        let d = Operands {
            a: values(m * k, 1),
            b: values(k * n, 2),
            c: vec![0.0; m * n],
        };
        let a = ctx.storage_init("a", &d.a).expect("buffer");
        let b = ctx.storage_init("b", &d.b).expect("buffer");
        let c = ctx.storage("c", d.c.len()).expect("buffer");
        for v in variants(&ctx) {
            let gemm = Gemm::new(&ctx, v, TileShape::DEFAULT).expect("GEMM compiles");
            let op = GemmOp {
                m,
                n,
                k,
                trans_a,
                trans_b,
                a: (&a, 0, lda),
                b: (&b, 0, ldb),
                c: (&c, 0, ldc),
                bias: None,
                alpha: 1.0,
                accumulate: false,
            };
            let ds = gemm.dispatch(&ctx, &op).expect("valid GEMM");
            let mut times = Vec::new();
            for _ in 0..6 {
                let t0 = std::time::Instant::now();
                record(&ctx, &ds);
                ctx.wait().expect("GPU work completes");
                times.push(t0.elapsed().as_secs_f64());
            }
            times.remove(0);
            times.sort_by(f64::total_cmp);
            let med = times[times.len() / 2];
            let got = ctx.read_f32(&c, 0, m * n).expect("readback");
            for s in 0..64 {
                let (i, j) = ((s * 7919) % m, (s * 104_729) % n);
                let want: f64 = (0..k)
                    .map(|l| {
                        let x = if trans_a {
                            d.a[l * lda + i]
                        } else {
                            d.a[i * lda + l]
                        };
                        let y = if trans_b {
                            d.b[j * ldb + l]
                        } else {
                            d.b[l * ldb + j]
                        };
                        x as f64 * y as f64
                    })
                    .sum();
                let err = (got[i * ldc + j] as f64 - want).abs();
                assert!(err <= 1e-4 * (k as f64).sqrt(), "{v} {m}x{n}x{k} [{i},{j}]");
            }
            println!(
                "{v:>5} {m}x{n}x{k} (trans_a {trans_a}, trans_b {trans_b}): {:.1} ms, {:.2} GFLOP/s",
                med * 1e3,
                2.0 * (m * n * k) as f64 / med / 1e9
            );
        }
    }
}

/// Timing of one forward + backward pass of the LSTM alone, per path (not a
/// test: speed is never asserted). `LSTM_WGPU_TIMING=I,H,L,T,B[,D][;…]`
/// picks shapes instead of the set.
fn cell_paths() {
    let ctx = std::sync::Arc::new(GpuContext::new().expect("adapter"));
    let shapes: Vec<[usize; 6]> = match std::env::var("LSTM_WGPU_TIMING") {
        Ok(s) => s
            .split(';')
            .map(|one| {
                let mut v: Vec<usize> = one
                    .split(',')
                    .map(|x| x.trim().parse().expect("a number"))
                    .collect();
                v.resize(6, 1);
                [v[0], v[1], v[2], v[3], v[4], v[5].max(1)]
            })
            .collect(),
        // ts, char, and H = 512, B = 64 (T = 16 to keep lavapipe runs short).
        Err(_) => vec![
            [10, 64, 2, 20, 32, 1],
            [128, 256, 2, 64, 32, 1],
            [512, 512, 2, 16, 64, 1],
        ],
    };
    for [i, h, layers, t, n, dirs] in shapes {
        let cfg = LstmConfig {
            input_size: i,
            hidden_size: h,
            num_layers: layers,
            bidirectional: dirs == 2,
            bias: true,
            cell: Default::default(),
            proj_size: 0,
        };
        let x: Vec<f32> = (0..t * n * i)
            .map(|k| ((k * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let go = vec![0.01f32; t * n * dirs * h];
        let gs = vec![0.01f32; layers * dirs * n * h];
        let b = Batch {
            input: &x,
            seq_len: t,
            batch: n,
            batch_first: false,
            h0: None,
            c0: None,
            lengths: None,
        };
        let up = Upstream {
            grad_output: &go,
            grad_h_n: &gs,
            grad_c_n: &gs,
        };
        let mut line = format!("I={i} H={h} L={layers} T={t} B={n} D={dirs}:");
        for path in [CellPath::PerStep, CellPath::Wavefront, CellPath::Persistent] {
            let model =
                LstmModel::init_uniform(&ctx, cfg.clone(), 0).unwrap_or_else(|e| panic!("{e}"));
            let mut lstm = Lstm::new(ctx.clone(), model).unwrap_or_else(|e| panic!("{e}"));
            lstm.set_tuning(Tuning {
                cell_path: Some(path),
                ..*lstm.tuning()
            })
            .unwrap_or_else(|e| panic!("{e}"));
            // A path that cannot run the shape (one layer: no wavefront).
            if let Err(e) = lstm.forward_backward(&b, &up) {
                line += &format!("  {path}: n/a ({e})");
                continue;
            }
            let reps = 7;
            let mut ms = Vec::new();
            for _ in 0..reps {
                let plan = lstm.plan(t, n).unwrap_or_else(|e| panic!("{e}"));
                let c = &ctx;
                let start = std::time::Instant::now();
                let mut enc = c.device.create_command_encoder(&Default::default());
                plan.encode_forward(&mut enc);
                plan.encode_backward(&mut enc);
                c.queue.submit([enc.finish()]);
                c.wait().unwrap_or_else(|e| panic!("{e}"));
                ms.push(start.elapsed().as_secs_f64() * 1e3);
            }
            ms.sort_by(f64::total_cmp);
            let plan = lstm.plan(t, n).unwrap_or_else(|e| panic!("{e}"));
            line += &format!(
                "  {}: {:.2} ms ({} + {} dispatches)",
                path,
                ms[reps / 2],
                plan.forward.len(),
                plan.backward.len()
            );
        }
        println!("{line}");
    }
}

fn main() {
    let want: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |name: &str| want.is_empty() || want.iter().any(|w| w == name);
    if run("gemm_512") {
        gemm_512_variants();
    }
    if run("gemm_variants") {
        gemm_variants();
    }
    if run("cell_paths") {
        cell_paths();
    }
}
