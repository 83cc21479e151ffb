// General matrix multiply: C = alpha * op(A) * op(B) [+ bias1 + bias2] [+ C]
// op(A) is [M, K], op(B) is [K, N]; all row-major with leading dimensions and
// element offsets, so strided views (a direction's columns of an interleaved
// bidirectional output) and transposed operands need no copies.
//
// Four entry points, chosen per adapter by src/kernels/gemm.rs:
// - `gemm`: each invocation computes a 4x4 register block straight from
//   global memory. Best on lavapipe's 8-wide SIMD, where workgroup barriers
//   are emulated and costly.
// - `gemm_tiled`: a workgroup of WG_N x WG_M invocations computes a
//   (4*WG_M) x (4*WG_N) tile of C, staging TK-deep slices of A and B in
//   workgroup memory; each invocation still accumulates a 4x4 block, read
//   from workgroup memory as vec4. Best on discrete GPUs.
// - `gemm_vec4`: the register block with vec4 loads of A and B (4 loads of
//   each per 64 FMAs instead of 32 scalar ones), for operands whose offsets
//   and leading dimensions are multiples of 4; the host picks it per GEMM in
//   the block variant. lavapipe turns every storage load into a per-lane
//   loop, so fewer, wider loads make it about twice as fast there.
// - `gemm_sg`: for adapters with 8-wide subgroups (lavapipe), A and B read
//   as vec4 where aligned as for gemm_vec4, else as scalars: a workgroup is one subgroup; its 8 lanes share 32 rows of
//   op(A), each lane loading 4 of the 32 vec4s and broadcasting them, and each
//   lane owns 4 columns: 8 vec4 loads per 512 FMAs (`gemm_vec4`: 16 per 256).
//   The host strips it (between the `subgroup` markers) from the module on
//   devices without subgroups, whose validator would refuse it.
// All accumulate each output in the same order (k ascending), so none
// depends on scheduling: results are bit-identical run to run.
//
// Long inner dimensions are split by the host into several dispatches (the
// first honours the flags, later ones accumulate): lavapipe ends all loops of
// an invocation after 65,535 iterations in total.

// struct Params: written into the source from its Rust declaration,
// GemmUniform (src/kernels/gemm.rs).

const ACCUMULATE: u32 = 1u;
const BIAS1: u32 = 2u;
const BIAS2: u32 = 4u;
// gemm_sg only: A's (B's) offset or leading dimension is not a multiple of
// 4, so it is read as scalars (a time series' input of 10 features, say).
const A_SCALAR: u32 = 8u;
const B_SCALAR: u32 = 16u;

@group(0) @binding(0) var<uniform> p: Params;
// Storage types of A and B: f16 in the f16-mixed builds (A is then the f16
// gate gradients; B a weight from the f16 shadow of the parameters or the
// f16 h_prev cache), converted on load; products and sums stay f32.
alias AT = f32;
alias BT = f32;
@group(0) @binding(1) var<storage, read> a: array<AT>;
@group(0) @binding(2) var<storage, read> b: array<BT>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

override TRANS_A: bool = false;
override TRANS_B: bool = false;
// Tiled variant: invocations per workgroup along M and N, and the depth of
// the K slice staged in workgroup memory. The tile of C is 4*WG_M x 4*WG_N.
override WG_M: u32 = 16u;
override WG_N: u32 = 16u;
override TK: u32 = 16u;

fn a_at(m: u32, k: u32) -> f32 {
    if TRANS_A {
        return f32(a[p.a_off + k * p.lda + m]);
    }
    return f32(a[p.a_off + m * p.lda + k]);
}

fn b_at(k: u32, n: u32) -> f32 {
    if TRANS_B {
        return f32(b[p.b_off + n * p.ldb + k]);
    }
    return f32(b[p.b_off + k * p.ldb + n]);
}

// Writes the 4x4 block at (m0, n0): alpha * acc [+ biases] [+ C], skipping
// rows and columns outside C.
fn store_block(m0: u32, n0: u32, accs: array<vec4<f32>, 4>) {
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

// Indices x0 .. x0 + 3, those past n - 1 clamped to n - 1.
fn clamped4(x0: u32, n: u32) -> vec4<u32> {
    return min(vec4<u32>(x0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(n - 1u));
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
    let mi = clamped4(m0, p.m);
    let ni = clamped4(n0, p.n);
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
    store_block(m0, n0, array<vec4<f32>, 4>(acc0, acc1, acc2, acc3));
}

// The same operands seen as vec4 (bound only by `gemm_vec4`).
@group(0) @binding(5) var<storage, read> a4: array<vec4<AT>>;
@group(0) @binding(6) var<storage, read> b4: array<vec4<BT>>;

// Element (m, k) of op(A) through the vec4 view.
fn a4_at(m: u32, k: u32) -> f32 {
    var i = p.a_off + m * p.lda + k;
    if TRANS_A {
        i = p.a_off + k * p.lda + m;
    }
    return f32(a4[i / 4u][i % 4u]);
}

fn b4_at(k: u32, n: u32) -> f32 {
    var i = p.b_off + k * p.ldb + n;
    if TRANS_B {
        i = p.b_off + n * p.ldb + k;
    }
    return f32(b4[i / 4u][i % 4u]);
}

// The 4x4 block of op(A) at rows mi (from m0), columns k..k+4, as
// rows[r][q] = op(A)[mi[r], k + q], from four vec4 loads: rows of A, or
// with TRANS_A columns of A (contiguous along M) transposed.
fn a4_block(mi: vec4<u32>, m0: u32, k: u32) -> mat4x4<f32> {
    if TRANS_A {
        // A is [K, M]: one vec4 holds op(A)[m0..m0+4, k + q].
        let base = (p.a_off + m0) / 4u;
        let l4 = p.lda / 4u;
        let c0 = vec4<f32>(a4[base + k * l4]);
        let c1 = vec4<f32>(a4[base + (k + 1u) * l4]);
        let c2 = vec4<f32>(a4[base + (k + 2u) * l4]);
        let c3 = vec4<f32>(a4[base + (k + 3u) * l4]);
        return transpose(mat4x4<f32>(c0, c1, c2, c3));
    }
    let l4 = p.lda / 4u;
    let k4 = (p.a_off + k) / 4u;
    return mat4x4<f32>(vec4<f32>(a4[k4 + mi.x * l4]), vec4<f32>(a4[k4 + mi.y * l4]),
                       vec4<f32>(a4[k4 + mi.z * l4]), vec4<f32>(a4[k4 + mi.w * l4]));
}

// rows[q] = op(B)[k + q, n0..n0+4].
fn b4_block(ni: vec4<u32>, n0: u32, k: u32) -> mat4x4<f32> {
    if TRANS_B {
        // B is [N, K]: one vec4 holds op(B)[k..k+4, n].
        let l4 = p.ldb / 4u;
        let k4 = (p.b_off + k) / 4u;
        return transpose(mat4x4<f32>(vec4<f32>(b4[k4 + ni.x * l4]),
                                     vec4<f32>(b4[k4 + ni.y * l4]),
                                     vec4<f32>(b4[k4 + ni.z * l4]),
                                     vec4<f32>(b4[k4 + ni.w * l4])));
    }
    let base = (p.b_off + n0) / 4u;
    let l4 = p.ldb / 4u;
    return mat4x4<f32>(vec4<f32>(b4[base + k * l4]), vec4<f32>(b4[base + (k + 1u) * l4]),
                       vec4<f32>(b4[base + (k + 2u) * l4]), vec4<f32>(b4[base + (k + 3u) * l4]));
}

// acc += av * bv for a 4x4 block over 4 k, one product at a time in k
// order (the order of `gemm`); written out so that no loop counts against
// lavapipe's loop cap.
fn block4(acc: array<vec4<f32>, 4>, av: mat4x4<f32>, bv: mat4x4<f32>) -> array<vec4<f32>, 4> {
    var c = acc;
    c[0] += av[0].x * bv[0];
    c[1] += av[1].x * bv[0];
    c[2] += av[2].x * bv[0];
    c[3] += av[3].x * bv[0];
    c[0] += av[0].y * bv[1];
    c[1] += av[1].y * bv[1];
    c[2] += av[2].y * bv[1];
    c[3] += av[3].y * bv[1];
    c[0] += av[0].z * bv[2];
    c[1] += av[1].z * bv[2];
    c[2] += av[2].z * bv[2];
    c[3] += av[3].z * bv[2];
    c[0] += av[0].w * bv[3];
    c[1] += av[1].w * bv[3];
    c[2] += av[2].w * bv[3];
    c[3] += av[3].w * bv[3];
    return c;
}

// The last p.k % 4 values of k for a 4x4 block, scalar.
fn tail4(acc: array<vec4<f32>, 4>, mi: vec4<u32>, ni: vec4<u32>) -> array<vec4<f32>, 4> {
    var c = acc;
    for (var k = p.k / 4u * 4u; k < p.k; k++) {
        let bv = vec4<f32>(b4_at(k, ni.x), b4_at(k, ni.y), b4_at(k, ni.z), b4_at(k, ni.w));
        c[0] += a4_at(mi.x, k) * bv;
        c[1] += a4_at(mi.y, k) * bv;
        c[2] += a4_at(mi.z, k) * bv;
        c[3] += a4_at(mi.w, k) * bv;
    }
    return c;
}

// An 8x8 block of C per invocation (four 4x4 blocks sharing their loads:
// 16 vec4 loads per 256 FMAs), 64x64 per workgroup.
@compute @workgroup_size(8, 8)
fn gemm_vec4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let m0 = gid.y * 8u;
    let n0 = gid.x * 8u;
    if m0 >= p.m || n0 >= p.n {
        return;
    }
    // Out-of-range rows/columns read the last valid one (or, inside a
    // vec4, a neighbour); their results are never stored.
    let mi0 = clamped4(m0, p.m);
    let mi1 = clamped4(m0 + 4u, p.m);
    let ni0 = clamped4(n0, p.n);
    let ni1 = clamped4(n0 + 4u, p.n);
    let z = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    var c00 = z;
    var c01 = z;
    var c10 = z;
    var c11 = z;
    let k4 = p.k / 4u;
    for (var kq = 0u; kq < k4; kq++) {
        let k = kq * 4u;
        let a0 = a4_block(mi0, m0, k);
        let a1 = a4_block(mi1, m0 + 4u, k);
        let b0 = b4_block(ni0, n0, k);
        let b1 = b4_block(ni1, n0 + 4u, k);
        c00 = block4(c00, a0, b0);
        c01 = block4(c01, a0, b1);
        c10 = block4(c10, a1, b0);
        c11 = block4(c11, a1, b1);
    }
    c00 = tail4(c00, mi0, ni0);
    c01 = tail4(c01, mi0, ni1);
    c10 = tail4(c10, mi1, ni0);
    c11 = tail4(c11, mi1, ni1);
    store_block(m0, n0, c00);
    store_block(m0, n0 + 4u, c01);
    store_block(m0 + 4u, n0, c10);
    store_block(m0 + 4u, n0 + 4u, c11);
}

// Slices of A and B for one K step, k-major and packed as vec4 along M and N
// so each invocation reads its 4 rows and 4 columns with one load each.
var<workgroup> tile_a: array<vec4<f32>, TK * WG_M>;
var<workgroup> tile_b: array<vec4<f32>, TK * WG_N>;

@compute @workgroup_size(WG_N, WG_M)
fn gemm_tiled(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let tm = 4u * WG_M;
    let tn = 4u * WG_N;
    let row0 = wid.y * tm;
    let col0 = wid.x * tn;
    let threads = WG_M * WG_N;
    let t = lid.y * WG_N + lid.x;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let tiles = (p.k + TK - 1u) / TK;
    // No early return: every invocation must reach the barriers.
    for (var kt = 0u; kt < tiles; kt++) {
        let k0 = kt * TK;
        // Consecutive invocations load consecutive addresses of A: along M
        // when A is stored transposed, along K otherwise. Elements outside
        // op(A) load as 0 and add nothing.
        for (var i = t; i < TK * tm; i += threads) {
            var kk = i % TK;
            var mm = i / TK;
            if TRANS_A {
                kk = i / tm;
                mm = i % tm;
            }
            let gm = row0 + mm;
            let gk = k0 + kk;
            // Unconditional load, masked (a past-the-end index is clamped
            // by the bounds checks): loads in branches serialize on GPUs.
            let v = select(0.0, a_at(gm, gk), gm < p.m && gk < p.k);
            tile_a[kk * WG_M + mm / 4u][mm % 4u] = v;
        }
        for (var i = t; i < TK * tn; i += threads) {
            var kk = i / tn;
            var nn = i % tn;
            if TRANS_B {
                kk = i % TK;
                nn = i / TK;
            }
            let gn = col0 + nn;
            let gk = k0 + kk;
            let v = select(0.0, b_at(gk, gn), gn < p.n && gk < p.k);
            tile_b[kk * WG_N + nn / 4u][nn % 4u] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let av = tile_a[kk * WG_M + lid.y];
            let bv = tile_b[kk * WG_N + lid.x];
            acc0 += av.x * bv;
            acc1 += av.y * bv;
            acc2 += av.z * bv;
            acc3 += av.w * bv;
        }
        workgroupBarrier();
    }
    let m0 = row0 + lid.y * 4u;
    let n0 = col0 + lid.x * 4u;
    if m0 < p.m && n0 < p.n {
        store_block(m0, n0, array<vec4<f32>, 4>(acc0, acc1, acc2, acc3));
    }
}

// subgroup-begin
// Rows 0-3 (lo4) or 4-7 (hi4) of a subgroup's 8 vec4s, one per lane.
fn lo4(x: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(subgroupBroadcast(x, 0u), subgroupBroadcast(x, 1u),
                       subgroupBroadcast(x, 2u), subgroupBroadcast(x, 3u));
}

fn hi4(x: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(subgroupBroadcast(x, 4u), subgroupBroadcast(x, 5u),
                       subgroupBroadcast(x, 6u), subgroupBroadcast(x, 7u));
}

// The lane's vec4 of slice i (rows 8i..8i+8 of the 32) of op(A) at k..k+4.
// Without TRANS_A lane l holds row 8i + l; with it, lanes 4h..4h+3 hold
// k + (l % 4) of rows 8i + 4h .. 8i + 4h + 3 (A is [K, M], contiguous along
// M), which lo4/hi4 then transpose.
fn a_slice(m0: u32, i: u32, k: u32, lane: u32) -> vec4<f32> {
    let l4 = p.lda / 4u;
    if (p.flags & A_SCALAR) != 0u {
        if TRANS_A {
            let m = clamped4(m0 + 8u * i + 4u * (lane / 4u), p.m);
            let kk = k + lane % 4u;
            return vec4<f32>(a_at(m.x, kk), a_at(m.y, kk), a_at(m.z, kk), a_at(m.w, kk));
        }
        let m = min(m0 + 8u * i + lane, p.m - 1u);
        return vec4<f32>(a_at(m, k), a_at(m, k + 1u), a_at(m, k + 2u), a_at(m, k + 3u));
    }
    if TRANS_A {
        let m = m0 + 8u * i + 4u * (lane / 4u);
        return vec4<f32>(a4[(p.a_off + m) / 4u + (k + lane % 4u) * l4]);
    }
    let m = min(m0 + 8u * i + lane, p.m - 1u);
    return vec4<f32>(a4[(p.a_off + k) / 4u + m * l4]);
}

// b4_block for gemm_sg, through B's scalar view when B_SCALAR is set.
fn b_sg_block(ni: vec4<u32>, n0: u32, k: u32) -> mat4x4<f32> {
    if (p.flags & B_SCALAR) == 0u {
        return b4_block(ni, n0, k);
    }
    return mat4x4<f32>(
        vec4<f32>(b_at(k, ni.x), b_at(k, ni.y), b_at(k, ni.z), b_at(k, ni.w)),
        vec4<f32>(b_at(k + 1u, ni.x), b_at(k + 1u, ni.y), b_at(k + 1u, ni.z), b_at(k + 1u, ni.w)),
        vec4<f32>(b_at(k + 2u, ni.x), b_at(k + 2u, ni.y), b_at(k + 2u, ni.z), b_at(k + 2u, ni.w)),
        vec4<f32>(b_at(k + 3u, ni.x), b_at(k + 3u, ni.y), b_at(k + 3u, ni.z), b_at(k + 3u, ni.w)));
}

// tail4 for gemm_sg, reading A (B) through its scalar view when A_SCALAR
// (B_SCALAR) is set: the vec4 view of a small unaligned operand may hold
// none of its elements.
fn tail_sg(acc: array<vec4<f32>, 4>, mi: vec4<u32>, ni: vec4<u32>) -> array<vec4<f32>, 4> {
    let a_scalar = (p.flags & A_SCALAR) != 0u;
    let b_scalar = (p.flags & B_SCALAR) != 0u;
    var c = acc;
    for (var k = p.k / 4u * 4u; k < p.k; k++) {
        var bv: vec4<f32>;
        if b_scalar {
            bv = vec4<f32>(b_at(k, ni.x), b_at(k, ni.y), b_at(k, ni.z), b_at(k, ni.w));
        } else {
            bv = vec4<f32>(b4_at(k, ni.x), b4_at(k, ni.y), b4_at(k, ni.z), b4_at(k, ni.w));
        }
        var av: vec4<f32>;
        if a_scalar {
            av = vec4<f32>(a_at(mi.x, k), a_at(mi.y, k), a_at(mi.z, k), a_at(mi.w, k));
        } else {
            av = vec4<f32>(a4_at(mi.x, k), a4_at(mi.y, k), a4_at(mi.z, k), a4_at(mi.w, k));
        }
        c[0] += av.x * bv;
        c[1] += av.y * bv;
        c[2] += av.z * bv;
        c[3] += av.w * bv;
    }
    return c;
}

// Rows 4g..4g+3 of the 32 (g = 2i for lo, 2i + 1 for hi) as av[r] =
// op(A)[row, k..k+4].
fn a_lo(x: vec4<f32>) -> mat4x4<f32> {
    if TRANS_A {
        return transpose(lo4(x));
    }
    return lo4(x);
}

fn a_hi(x: vec4<f32>) -> mat4x4<f32> {
    if TRANS_A {
        return transpose(hi4(x));
    }
    return hi4(x);
}

// A 32x32 tile of C per workgroup of one 8-lane subgroup: lane l computes
// rows m0..m0+32 at columns n0 + 4l .. n0 + 4l + 4, summing k in order as
// the other entry points do. No lane returns early: every lane's loads feed
// the others' broadcasts.
@compute @workgroup_size(8)
fn gemm_sg(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let m0 = wid.y * 32u;
    let n0 = wid.x * 32u + lane * 4u;
    let ni = clamped4(n0, p.n);
    let z = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    var c0 = z;
    var c1 = z;
    var c2 = z;
    var c3 = z;
    var c4 = z;
    var c5 = z;
    var c6 = z;
    var c7 = z;
    let k4 = p.k / 4u;
    for (var kq = 0u; kq < k4; kq++) {
        let k = kq * 4u;
        let bv = b_sg_block(ni, n0, k);
        let x0 = a_slice(m0, 0u, k, lane);
        let x1 = a_slice(m0, 1u, k, lane);
        let x2 = a_slice(m0, 2u, k, lane);
        let x3 = a_slice(m0, 3u, k, lane);
        c0 = block4(c0, a_lo(x0), bv);
        c1 = block4(c1, a_hi(x0), bv);
        c2 = block4(c2, a_lo(x1), bv);
        c3 = block4(c3, a_hi(x1), bv);
        c4 = block4(c4, a_lo(x2), bv);
        c5 = block4(c5, a_hi(x2), bv);
        c6 = block4(c6, a_lo(x3), bv);
        c7 = block4(c7, a_hi(x3), bv);
    }
    if n0 >= p.n {
        // Past the last column: this lane only fed the broadcasts.
        return;
    }
    c0 = tail_sg(c0, clamped4(m0, p.m), ni);
    c1 = tail_sg(c1, clamped4(m0 + 4u, p.m), ni);
    c2 = tail_sg(c2, clamped4(m0 + 8u, p.m), ni);
    c3 = tail_sg(c3, clamped4(m0 + 12u, p.m), ni);
    c4 = tail_sg(c4, clamped4(m0 + 16u, p.m), ni);
    c5 = tail_sg(c5, clamped4(m0 + 20u, p.m), ni);
    c6 = tail_sg(c6, clamped4(m0 + 24u, p.m), ni);
    c7 = tail_sg(c7, clamped4(m0 + 28u, p.m), ni);
    store_block(m0, n0, c0);
    store_block(m0 + 4u, n0, c1);
    store_block(m0 + 8u, n0, c2);
    store_block(m0 + 12u, n0, c3);
    store_block(m0 + 16u, n0, c4);
    store_block(m0 + 20u, n0, c5);
    store_block(m0 + 24u, n0, c6);
    store_block(m0 + 28u, n0, c7);
}
// subgroup-end
