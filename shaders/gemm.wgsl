// General matrix multiply: C = alpha * op(A) * op(B) [+ bias1 + bias2] [+ C]
// op(A) is [M, K], op(B) is [K, N]; all row-major with leading dimensions and
// element offsets, so strided views (a direction's columns of an interleaved
// bidirectional output) and transposed operands need no copies.
// Each invocation computes a 4x4 register block: on lavapipe's 8-wide SIMD a
// register block beats shared-memory tiles, whose barriers are emulated.

struct Params {
    m: u32, n: u32, k: u32, lda: u32,
    ldb: u32, ldc: u32, a_off: u32, b_off: u32,
    c_off: u32, bias1_off: u32, bias2_off: u32, flags: u32,
    alpha: f32, _p0: f32, _p1: f32, _p2: f32,
}

const ACCUMULATE: u32 = 1u;
const BIAS1: u32 = 2u;
const BIAS2: u32 = 4u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

override TRANS_A: bool = false;
override TRANS_B: bool = false;

fn a_at(m: u32, k: u32) -> f32 {
    if TRANS_A {
        return a[p.a_off + k * p.lda + m];
    }
    return a[p.a_off + m * p.lda + k];
}

fn b_at(k: u32, n: u32) -> f32 {
    if TRANS_B {
        return b[p.b_off + n * p.ldb + k];
    }
    return b[p.b_off + k * p.ldb + n];
}

@compute @workgroup_size(8, 8)
fn gemm(@builtin(global_invocation_id) gid: vec3<u32>) {
    let m0 = gid.y * 4u;
    let n0 = gid.x * 4u;
    if m0 >= p.m || n0 >= p.n {
        return;
    }
    // Clamp out-of-range rows/columns to the last valid one so loads stay in
    // bounds; their results are never stored.
    let ml = p.m - 1u;
    let nl = p.n - 1u;
    let mi = vec4<u32>(m0, min(m0 + 1u, ml), min(m0 + 2u, ml), min(m0 + 3u, ml));
    let ni = vec4<u32>(n0, min(n0 + 1u, nl), min(n0 + 2u, nl), min(n0 + 3u, nl));
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k = 0u; k < p.k; k++) {
        let bv = vec4<f32>(b_at(k, ni.x), b_at(k, ni.y), b_at(k, ni.z), b_at(k, ni.w));
        acc0 += a_at(mi.x, k) * bv;
        acc1 += a_at(mi.y, k) * bv;
        acc2 += a_at(mi.z, k) * bv;
        acc3 += a_at(mi.w, k) * bv;
    }
    var accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var r = 0u; r < 4u; r++) {
        let m = m0 + r;
        if m >= p.m {
            break;
        }
        for (var q = 0u; q < 4u; q++) {
            let n = n0 + q;
            if n >= p.n {
                break;
            }
            var v = p.alpha * accs[r][q];
            if (p.flags & BIAS1) != 0u {
                v += bias[p.bias1_off + n];
            }
            if (p.flags & BIAS2) != 0u {
                v += bias[p.bias2_off + n];
            }
            let ci = p.c_off + m * p.ldc + n;
            if (p.flags & ACCUMULATE) != 0u {
                v += c[ci];
            }
            c[ci] = v;
        }
    }
}
