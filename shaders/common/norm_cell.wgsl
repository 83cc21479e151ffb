// What the two normalized LSTM cells share (lstm_cell_ln.wgsl,
// lstm_cell_bn.wgsl), joined after the prelude and the cell bindings by
// their wrappers: the uniform block (struct Params, written into the source
// from NormCellUniform in src/kernels/lstm_cell_ln.rs), the sections both
// lay out alike, and the workgroup sums.
//
// Cache block of one (layer, direction), sections of [T*B, width]:
//   gates GH (activated) | c H | h_prev H | xhat_ih GH | xhat_hh GH | xhat_c H
// then each cell's own statistics.
// Gradient block of one direction: da GH | dp GH | dr GH | dc H | dhc H
// (da: pre-activation gates; dp, dr: gradients of W_ih x and W_hh h).

@group(0) @binding(0) var<uniform> p: Params;
// Bindings 1 to 10: common/cell_bindings.wgsl.

const WG: u32 = 64u;
const EPS: f32 = 1e-5;

fn tb() -> u32 { return p.seq * p.batch; }
// Section starts, in T*B*H (src/kernels/lstm_cell_ln.rs mirrors them).
const G: u32 = CELL_GATES;
fn sec_c() -> u32 { return p.cache_off + tb() * G * p.h; }
fn sec_hp() -> u32 { return p.cache_off + tb() * (G + 1u) * p.h; }
fn sec_xi() -> u32 { return p.cache_off + tb() * (G + 2u) * p.h; }
fn sec_xh() -> u32 { return p.cache_off + tb() * (2u * G + 2u) * p.h; }
fn sec_xc() -> u32 { return p.cache_off + tb() * (3u * G + 2u) * p.h; }
fn g_dp() -> u32 { return p.dg_off + tb() * G * p.h; }
fn g_dr() -> u32 { return p.dg_off + tb() * 2u * G * p.h; }
fn g_dc() -> u32 { return p.dg_off + tb() * 3u * G * p.h; }
fn g_dhc() -> u32 { return p.dg_off + tb() * (3u * G + 1u) * p.h; }

// p.h, hidden from the compiler's constant folding (`len` is a sequence
// length, never u32::MAX). Lavapipe (Mesa 22.3) inlines uniform values into
// a kernel when that halves its size, as these loops' bounds did at H <= 32,
// and then recompiles it at every dispatch (each has its own uniform
// buffer): 5 ms a step and the compiled code never freed.
fn loop_h(len: u32) -> u32 {
    return select(p.h, 0u, len == 0xffffffffu);
}

// The gradients (dh, dc) flowing into step s (< len) of sequence b, unit
// j: from step s + 1 (dr of its gates through W_hh, and dc * f), or grad
// h_n and grad c_n at the sequence's last step.
fn recurrent_grads(b: u32, j: u32, s: u32, len: u32) -> vec2<f32> {
    let hs = loop_h(len);
    let h4 = G * hs;
    if s + 1u < len {
        let row1 = time_of(s + 1u, len, p.reverse) * p.batch + b;
        var a = 0.0;
        for (var k = 0u; k < h4; k++) {
            a += dg[g_dr() + row1 * h4 + k] * w[p.whh_off + k * hs + j];
        }
        let f1 = cache[p.cache_off + row1 * h4 + CELL_CARRY * hs + j];
        return vec2<f32>(a, cell_dc_prev(dg[g_dc() + row1 * hs + j], f1));
    }
    let sb = p.state_off + b * hs + j;
    return vec2<f32>(gstate_in[sb], gstate_in[p.state_stride + sb]);
}

// c_{t-1} of step s of sequence b, unit j (c0 at step 0).
fn prev_c(b: u32, j: u32, s: u32, len: u32) -> f32 {
    if s == 0u {
        return state_in[p.state_stride + p.state_off + b * p.h + j];
    }
    return cache[sec_c() + (time_of(s - 1u, len, p.reverse) * p.batch + b) * p.h + j];
}

// Workgroup sums in a fixed tree order (deterministic); call them in
// uniform control flow. A kernel's workgroup memory holds only the arrays
// its sums touch.
var<workgroup> red_a: array<vec4<f32>, WG>;
var<workgroup> red_b: array<vec4<f32>, WG>;
var<workgroup> red_c: array<vec4<f32>, WG>;
var<workgroup> red_d: array<vec4<f32>, WG>;

// Sum of `v` over the workgroup.
fn wg_sum(lid: u32, v: vec4<f32>) -> vec4<f32> {
    red_a[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            red_a[lid] += red_a[lid + s];
        }
        workgroupBarrier();
    }
    let r = red_a[0];
    workgroupBarrier();
    return r;
}

// Sums of four vec4s over the workgroup, in one tree.
fn wg_sum4(lid: u32, a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>) -> array<vec4<f32>, 4> {
    red_a[lid] = a;
    red_b[lid] = b;
    red_c[lid] = c;
    red_d[lid] = d;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            red_a[lid] += red_a[lid + s];
            red_b[lid] += red_b[lid + s];
            red_c[lid] += red_c[lid + s];
            red_d[lid] += red_d[lid + s];
        }
        workgroupBarrier();
    }
    let r = array<vec4<f32>, 4>(red_a[0], red_b[0], red_c[0], red_d[0]);
    workgroupBarrier();
    return r;
}

fn wg_sum3(lid: u32, a: vec4<f32>, b: vec4<f32>, c: vec4<f32>) -> array<vec4<f32>, 3> {
    let r = wg_sum4(lid, a, b, c, vec4<f32>(0.0));
    return array<vec4<f32>, 3>(r[0], r[1], r[2]);
}
