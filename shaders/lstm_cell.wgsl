// Fused LSTM cell, forward and backward. Gate order i, f, g, o as in
// PyTorch. One dispatch covers up to LANES (layer, direction, step) lanes of
// the same H and B: the directions of a bidirectional layer's step, or the
// layers of a wavefront (layer l at step s beside layer l+1 at step s - C).
//
// Two variants with the same bindings, chosen per adapter by
// src/kernels/lstm_cell.rs:
// - `forward`, `backward`, `backward_state` (direct): one invocation per
//   (b, j) reading W_hh and h straight from global memory, no barriers.
//   Best on lavapipe, where workgroup barriers are emulated and costly.
// - `*_tiled`: a workgroup per TB x TU block of (b, j) stages the recurrent
//   product through workgroup memory (8 x 8, or 16 x 16 for large shapes;
//   the host sets the tile's constants by name). Best on GPUs.
//
// Steps are counted in each sequence's own processing order: step s of
// sequence b is active when s < len_b and sits at time t = s (forward) or
// t = len_b - 1 - s (reverse), which is what pack_padded_sequence does.
// The previous state is read where the previous step wrote it (the layer
// output and the cell cache), so no ping-pong state buffers are needed.
//
// Cache block of one (layer, direction), time-major:
//   gates [T, B, 4H] (activated i, f, g, o) | c [T, B, H] | h_prev [T, B, H]
// The c section is read and written through `cst` at c_off. In f32 the host
// binds the cache itself there (c_off = cache_off + T*B*4H). The f16-mixed
// build (src/kernels/lstm_cell.rs sets the aliases below to f16 and HALF
// to true) keeps the cache as f16 gates | h_prev and c in its own f32
// buffer: c is the long-lived state, and rounding it every step would
// accumulate.
// Gradient block of one direction: dgates [T, B, 4H] (pre-activation) | dc [T, B, H].
// dc is read and written through `dcs` at dc_off: in f32 the host binds the
// gradient buffer itself there (dc_off = dg_off + T*B*4H); the f16-mixed
// build stores dgates as f16 (through to_dg, which turns magnitudes of 2^16
// and more into infinities, so that a loss scale too large for f16 shows as
// non-finite gradients, as in PyTorch's f16 backward) and keeps dc, the
// long-lived gradient state, in its own f32 buffer.
// State arrays ([2, L*D, B, H]): h part at 0, c part at state_stride.
//
// Zoneout (Krueger et al. 2016; docs/math.md), with p.zone set: after a
// step the state is m·prev + (1 − m)·new per unit (ZONE_H: h, ZONE_C: c),
// `new` what the cell computed from the previous (zoned) states. In train
// mode m is 1 with probability p, element ((zcell·T + t)·B + b)·H + j of
// the state's Philox stream at the dropout step's words (`zrng`), so
// backward recomputes it; in eval mode (ZONE_EVAL) m = p. The output,
// h_n, c_n and the c section hold zoned states; `zst` holds per (layer,
// direction) the un-zoned c [T, B, H] at zu_off (tanh's argument in
// backward) and per gradient region the gradients m·d carried straight
// to the previous step, of h at zh_off and of c at zc_off. ZONE_FOLD: the
// cell has no c, its carried gradient (the dc section) is h's own.

// struct Params: written into the source from its Rust declaration,
// CellUniform (src/kernels/lstm_cell.rs).

// Lane q of a dispatch uses pp[q]; pp[0].lanes counts them. The direct
// kernels run lane q on invocations [q*B*H, (q+1)*B*H), the tiled ones on
// grid rows [q*nbt, (q+1)*nbt) (nbt: batch tiles). h, batch and seq are the
// same in every lane; offsets, step and `reverse` are the lane's own.
const LANES: u32 = 8u;
@group(0) @binding(0) var<uniform> pp: array<Params, LANES>;
// This invocation's parameters, copied from pp first thing.
var<private> p: Params;

// The f16-mixed build (with the aliases below f16).
const HALF: bool = false;
// Storage types of W_hh, of the cache's gates and h_prev, and of dgates.
alias WT = f32;
alias GT = f32;
alias DGT = f32;
// Sections between the gates and h_prev in the cache: c, or none in f16.
const HP_GAP: u32 = select(1u, 0u, HALF);

const ZONE_H: u32 = 1u;
const ZONE_C: u32 = 2u;
const ZONE_EVAL: u32 = 4u;
const ZONE_FOLD: u32 = 8u;
// The dropout step's words: seed low, seed high, counter.
@group(0) @binding(18) var<storage, read> zrng: array<u32>;
@group(0) @binding(19) var<storage, read_write> zst: array<f32>;

fn zone_on(bit: u32) -> bool {
    return (p.zone & bit) != 0u;
}

// m of state `bit` (ZONE_H or ZONE_C) for unit j of batch row b at time t.
fn zone_m(bit: u32, t: u32, b: u32, j: u32) -> f32 {
    let is_h = bit == ZONE_H;
    if zone_on(ZONE_EVAL) {
        return select(p.zc_p, p.zh_p, is_h);
    }
    let i = ((p.zcell * p.seq + t) * p.batch + b) * p.h + j;
    let stream = select(p.zc_stream, p.zh_stream, is_h);
    let r = philox(vec4<u32>(i / 4u, zrng[2], stream, 0u), vec2<u32>(zrng[0], zrng[1]));
    return select(0.0, 1.0, r[i % 4u] < select(p.zc_thr, p.zh_thr, is_h));
}

fn zone_mix(m: f32, prev: f32, cur: f32) -> f32 {
    return m * prev + (1.0 - m) * cur;
}

// Forward bindings.
@group(0) @binding(1) var<storage, read> pre: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<WT>;
@group(0) @binding(3) var<storage, read> state_in: array<f32>;
@group(0) @binding(4) var<storage, read> lengths: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> cache: array<GT>;
// The c section of the cache (see the layout above).
@group(0) @binding(16) var<storage, read_write> cst: array<f32>;

fn gate(i: u32) -> f32 {
    return f32(cache[i]);
}

// Offset of the h_prev section.
fn hp_base() -> u32 {
    return p.cache_off + p.seq * p.batch * (CELL_GATES + HP_GAP) * p.h;
}
@group(0) @binding(7) var<storage, read_write> state_out: array<f32>;

// The gates of one unit in the pre-gates, from `i` on (gate sections H
// apart).
fn pre_at(i: u32) -> Gates {
    var g: Gates;
    for (var q = 0u; q < CELL_GATES; q++) {
        g[q] = pre[i + q * p.h];
    }
    return g;
}

// b_hh of unit j, for a cell that adds it itself (CELL_OWN_BHH; read
// from the parameters bound as `w`, at bhh_off when pp.bhh is set); zero
// otherwise.
fn bias_hh(j: u32) -> Gates {
    var g: Gates;
    if CELL_OWN_BHH && p.bhh != 0u {
        for (var q = 0u; q < CELL_GATES; q++) {
            g[q] = f32(w[p.bhh_off + q * p.h + j]);
        }
    }
    return g;
}

// The same unit's gate rows of W_hh at one k, from `i` on (gate blocks
// H x H apart).
fn w_at(i: u32) -> Gates {
    var g: Gates;
    for (var q = 0u; q < CELL_GATES; q++) {
        g[q] = f32(w[i + q * p.h * p.h]);
    }
    return g;
}

// The cell's pointwise half for (b, j) at `row`, given the gate
// pre-activations (input and recurrent products and biases summed): writes
// h, the cache (activated gates, c, h_prev) and, at the last step, h_n, c_n.
fn forward_finish(b: u32, j: u32, last: bool, row: u32, a: Gates, hp_j: f32, c_prev: f32) {
    let hs = p.h;
    let st = cell_forward(a, pre_at(p.pre_off + row * CELL_GATES * hs + j), c_prev, hp_j);
    var h = st.h;
    var c = st.c;
    if zone_on(ZONE_H) {
        h = zone_mix(zone_m(ZONE_H, row / p.batch, b, j), hp_j, h);
    }
    if zone_on(ZONE_C) {
        zst[p.zu_off + row * hs + j] = c;
        c = zone_mix(zone_m(ZONE_C, row / p.batch, b, j), c_prev, c);
    }
    out[row * p.out_stride + p.out_col + j] = h;
    let gb = p.cache_off + row * CELL_GATES * hs;
    for (var q = 0u; q < CELL_GATES; q++) {
        cache[gb + q * hs + j] = GT(st.act[q]);
    }
    cst[p.c_off + row * hs + j] = c;
    cache[hp_base() + row * hs + j] = GT(hp_j);
    if last {
        let sb = p.state_off + b * hs + j;
        state_out[sb] = h;
        state_out[p.state_stride + sb] = c;
    }
}

// The direct kernels' lane and (row, unit) of this invocation, over `rows`
// rows (B, or the groups of RB batch rows of the wide path) of `units` units
// (H, or H / 4); selects the lane (sets p). ok is false past the last lane.
struct Site { ok: bool, b: u32, u: u32 }

fn site(gid: vec3<u32>, nwg: vec3<u32>, rows: u32, units: u32) -> Site {
    return site_at(global_index(gid, nwg, 64u), rows, units);
}

fn site_at(idx: u32, rows: u32, units: u32) -> Site {
    let per_lane = rows * units;
    let q = idx / per_lane;
    if q >= pp[0].lanes {
        return Site(false, 0u, 0u);
    }
    p = pp[q];
    let r = idx % per_lane;
    return Site(true, r / units, r % units);
}

// Batch rows per invocation of the wide path: W_hh values loaded once serve
// RB rows.
const RB: u32 = 8u;

// vec4 views of W_hh, h0 and the layer output, bound only by the direct
// kernels: with pp[0].wide set (H, and every offset, a multiple of 4) the
// recurrent products load 4 values at a time. lavapipe turns each storage
// load into a per-lane loop, so this is about twice as fast there. The
// products are summed in the same order either way.
@group(0) @binding(12) var<storage, read> w4: array<vec4<WT>>;
@group(0) @binding(13) var<storage, read> state_in4: array<vec4<f32>>;
@group(0) @binding(14) var<storage, read_write> out4: array<vec4<f32>>;

// The wide forward of units j0, j0 + 1 for batch rows RB·bg .. RB·bg +
// RB − 1 (those that exist and are active at this step): the recurrent
// products with vec4 loads, each W_hh vec4 serving RB rows and each h vec4
// both units (8 W and RB h loads per 4 k and 32·RB FMAs), summed from the
// pre-gates in k order as in the scalar path; then the pointwise half per
// row and unit.
fn forward_wide(bg: u32, j0: u32) {
    let h4 = p.h / 4u;
    let gs = p.h * h4;
    let wi = (p.whh_off + j0 * p.h) / 4u;
    var rows = wide_rows(bg, j0);
    for (var kq = 0u; kq < h4; kq++) {
        let w0 = w_rows(wi + kq, gs);
        let w1 = w_rows(wi + h4 + kq, gs);
        for (var r = 0u; r < RB; r++) {
            let hv = h_prev4(rows.src[r] + kq);
            rows.acc[2u * r] = gates_row(rows.acc[2u * r], hv, w0);
            rows.acc[2u * r + 1u] = gates_row(rows.acc[2u * r + 1u], hv, w1);
        }
    }
    wide_finish(bg, j0, rows);
}

// The wide forward's batch rows: where their h_{t-1} vec4s start (in
// state_in4 at step 0, else out4), and acc[2r + q], the gates of row r,
// unit j0 + q, starting from cell_acc of the pre-gates.
struct WideRows {
    src: array<u32, RB>,
    acc: array<Gates, 2u * RB>,
}

// The h_{t-1} vec4 at i (of h0 at step 0).
fn h_prev4(i: u32) -> vec4<f32> {
    if p.step == 0u {
        return state_in4[i];
    }
    return out4[i];
}

// A unit's gate rows of W_hh over 4 k: the vec4 at i of each gate block
// (blocks gs vec4s apart).
alias GateRows = array<vec4<f32>, CELL_GATES>;

fn w_rows(i: u32, gs: u32) -> GateRows {
    var r: GateRows;
    for (var q = 0u; q < CELL_GATES; q++) {
        r[q] = vec4<f32>(w4[i + q * gs]);
    }
    return r;
}

// x plus the products of one h_{t-1} vec4 with a unit's gate rows over
// the same 4 k, k ascending.
fn gates_row(x: Gates, hv: vec4<f32>, wr: GateRows) -> Gates {
    var y = x;
    for (var c = 0u; c < 4u; c++) {
        for (var q = 0u; q < CELL_GATES; q++) {
            y[q] += wr[q][c] * hv[c];
        }
    }
    return y;
}

// Whether batch row b exists and is active at this step.
fn live_row(b: u32) -> bool {
    return b < p.batch && p.step < lengths[b];
}

// cell_acc of the pre-gates of unit j for batch row b at this step; zero
// for rows that do not exist or are not active.
fn pre_gates(b: u32, j: u32) -> Gates {
    if !live_row(b) {
        return Gates();
    }
    let t = time_of(p.step, lengths[b], p.reverse);
    return cell_acc(pre_at(p.pre_off + (t * p.batch + b) * CELL_GATES * p.h + j), bias_hh(j));
}

// Where batch row b's h_{t-1} starts, in vec4s of h_prev4; 0 for rows that
// do not exist or are not active.
fn h_src4(b: u32) -> u32 {
    if !live_row(b) {
        return 0u;
    }
    if p.step == 0u {
        return (p.state_off + b * p.h) / 4u;
    }
    let tp = prev_time(time_of(p.step, lengths[b], p.reverse), p.reverse);
    return ((tp * p.batch + b) * p.out_stride + p.out_col) / 4u;
}

fn wide_rows(bg: u32, j0: u32) -> WideRows {
    var src: array<u32, RB>;
    var acc: array<Gates, 2u * RB>;
    for (var r = 0u; r < RB; r++) {
        let b = bg * RB + r;
        src[r] = h_src4(b);
        acc[2u * r] = pre_gates(b, j0);
        acc[2u * r + 1u] = pre_gates(b, j0 + 1u);
    }
    return WideRows(src, acc);
}

// The pointwise half of the forward for batch row b (if active) and unit
// j, given its gate pre-activations.
fn finish_row(b: u32, j: u32, a: Gates) {
    if !live_row(b) {
        return;
    }
    let hs = p.h;
    let s = p.step;
    let len = lengths[b];
    let t = time_of(s, len, p.reverse);
    var hp_j: f32;
    var c_prev: f32;
    if s == 0u {
        let sb = p.state_off + b * hs;
        hp_j = state_in[sb + j];
        c_prev = state_in[p.state_stride + sb + j];
    } else {
        let tp = prev_time(t, p.reverse);
        hp_j = out[(tp * p.batch + b) * p.out_stride + p.out_col + j];
        c_prev = cst[p.c_off + (tp * p.batch + b) * hs + j];
    }
    forward_finish(b, j, s == len - 1u, t * p.batch + b, a, hp_j, c_prev);
}

// The pointwise half of the wide forward, per active row and unit.
fn wide_finish(bg: u32, j0: u32, rows: WideRows) {
    for (var r = 0u; r < RB; r++) {
        finish_row(bg * RB + r, j0, rows.acc[2u * r]);
        finish_row(bg * RB + r, j0 + 1u, rows.acc[2u * r + 1u]);
    }
}

@compute @workgroup_size(64)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    if pp[0].wide != 0u {
        let st = site(gid, nwg, (pp[0].batch + RB - 1u) / RB, pp[0].h / 2u);
        if st.ok {
            forward_wide(st.b, 2u * st.u);
        }
        return;
    }
    let st = site(gid, nwg, pp[0].batch, pp[0].h);
    if !st.ok {
        return;
    }
    let b = st.b;
    let j = st.u;
    let hs = p.h;
    let len = lengths[b];
    let s = p.step;
    if s >= len {
        return;
    }
    let t = time_of(s, len, p.reverse);
    let row = t * p.batch + b;
    var a = cell_acc(pre_at(p.pre_off + row * CELL_GATES * hs + j), bias_hh(j));
    let wi = p.whh_off + j * hs;
    var hp_j: f32;
    var c_prev: f32;
    let c_base = p.c_off;
    if s == 0u {
        let sb = p.state_off + b * hs;
        if !CELL_DIAG {
            for (var k = 0u; k < hs; k++) {
                a += w_at(wi + k) * state_in[sb + k];
            }
        }
        hp_j = state_in[sb + j];
        c_prev = state_in[p.state_stride + sb + j];
    } else {
        let tp = prev_time(t, p.reverse);
        let ob = (tp * p.batch + b) * p.out_stride + p.out_col;
        if !CELL_DIAG {
            for (var k = 0u; k < hs; k++) {
                a += w_at(wi + k) * out[ob + k];
            }
        }
        hp_j = out[ob + j];
        c_prev = cst[c_base + (tp * p.batch + b) * hs + j];
    }
    if CELL_DIAG {
        // A diagonal W_hh (IndRNN): u_j h_{t-1, j}.
        a[0] += f32(w[p.whh_off + j]) * hp_j;
    }
    forward_finish(b, j, s == len - 1u, row, a, hp_j, c_prev);
}

// Backward bindings (w, state_in, lengths and cache are shared with forward;
// cache is only read here).
@group(0) @binding(8) var<storage, read> dy: array<f32>;
@group(0) @binding(9) var<storage, read> gstate_in: array<f32>;
@group(0) @binding(10) var<storage, read_write> dg: array<DGT>;
@group(0) @binding(11) var<storage, read_write> gstate_out: array<f32>;
// The dc section of the gradient block (see the layout above).
@group(0) @binding(17) var<storage, read_write> dcs: array<f32>;

// A gate gradient in its storage type: itself in f32. In f16, magnitudes
// below 2^16 are clamped to the largest finite f16 (65504) and rounded;
// larger ones, infinities and NaN become an infinity of their sign, so that
// overflow is the same on every adapter (WGSL leaves [65504, 2^16) to the
// implementation).
fn to_dg(x: f32) -> DGT {
    if !HALF {
        return DGT(x);
    }
    let bits = bitcast<u32>(x);
    if (bits & 0x7fffffffu) < 0x47800000u {
        return DGT(clamp(x, -65504.0, 65504.0));
    }
    let inf = select(-131072.0, 131072.0, (bits >> 31u) == 0u);
    return DGT(inf);
}

// dh_prev[j] = sum_k dgates[row, k] * W_hh[k, j]: the recurrent gradient
// flowing from the gates at `row` back into h_{t-1}.
fn dh_direct(row: u32, j: u32) -> f32 {
    let hs = p.h;
    let base = p.dg_off + row * CELL_GATES * hs;
    if CELL_DIAG {
        // A diagonal W_hh (IndRNN, one gate): u_j dgates_j.
        return f32(dg[base + j]) * f32(w[p.whh_off + j]);
    }
    var acc = 0.0;
    for (var k = 0u; k < CELL_GATES * hs; k++) {
        acc += f32(dg[base + k]) * f32(w[p.whh_off + k * hs + j]);
    }
    return acc;
}

// The pointwise backward of step s for (b, j), given the recurrent product
// dh_w = dgates_{s+1} * W_hh (used when step s+1 exists): writes the four
// gate gradients and dc of step s.
fn backward_finish(b: u32, j: u32, s: u32, len: u32, dh_w: f32) {
    let hs = p.h;
    let row = time_of(s, len, p.reverse) * p.batch + b;
    let c_base = p.c_off;
    let dc_base = p.dc_off;
    var dh_rec: f32;
    var dc_rec: f32;
    if s + 1u < len {
        let row1 = time_of(s + 1u, len, p.reverse) * p.batch + b;
        dh_rec = dh_w;
        let f1 = gate(p.cache_off + row1 * CELL_GATES * hs + CELL_CARRY * hs + j);
        dc_rec = cell_dc_prev(dcs[dc_base + row1 * hs + j], f1);
    } else {
        let sb = p.state_off + b * hs + j;
        dh_rec = gstate_in[sb];
        dc_rec = gstate_in[p.state_stride + sb];
    }
    var dh = dy[row * p.out_stride + p.out_col + j] + dh_rec;
    var c = cst[c_base + row * hs + j];
    if p.zone != 0u {
        // dh, dc_rec: of the zoned states, with what step s + 1 carried
        // straight back; the cell gets (1 − m) of them.
        if s + 1u < len {
            let row1 = time_of(s + 1u, len, p.reverse) * p.batch + b;
            if zone_on(ZONE_H) {
                dh += zst[p.zh_off + row1 * hs + j];
            }
            if zone_on(ZONE_C) {
                dc_rec += zst[p.zc_off + row1 * hs + j];
            }
        }
        if zone_on(ZONE_FOLD) {
            dh += dc_rec;
            dc_rec = 0.0;
        }
        let t = row / p.batch;
        if zone_on(ZONE_H) {
            let m = zone_m(ZONE_H, t, b, j);
            zst[p.zh_off + row * hs + j] = m * dh;
            dh = (1.0 - m) * dh;
        }
        if zone_on(ZONE_C) {
            let m = zone_m(ZONE_C, t, b, j);
            zst[p.zc_off + row * hs + j] = m * dc_rec;
            dc_rec = (1.0 - m) * dc_rec;
            c = zst[p.zu_off + row * hs + j];
        }
    }
    let gb = p.cache_off + row * CELL_GATES * hs;
    var act: Gates;
    for (var q = 0u; q < CELL_GATES; q++) {
        act[q] = gate(gb + q * hs + j);
    }
    let hp = f32(cache[hp_base() + row * hs + j]);
    var c_prev: f32;
    if s == 0u {
        c_prev = state_in[p.state_stride + p.state_off + b * hs + j];
    } else {
        let rowp = time_of(s - 1u, len, p.reverse) * p.batch + b;
        c_prev = cst[c_base + rowp * hs + j];
    }
    let gr = cell_backward(act, c, c_prev, hp, dh, dc_rec);
    let db = p.dg_off + row * CELL_GATES * hs;
    for (var q = 0u; q < CELL_GATES; q++) {
        dg[db + q * hs + j] = to_dg(gr.da[q]);
    }
    if CELL_SPLIT_DG {
        let xb = p.dx_off + row * CELL_GATES * hs;
        for (var q = 0u; q < CELL_GATES; q++) {
            dg[xb + q * hs + j] = to_dg(gr.dx[q]);
        }
    }
    dcs[dc_base + row * hs + j] = gr.dc;
}

// vec4 view of the gate gradients, bound only by the direct backward.
@group(0) @binding(15) var<storage, read_write> dg4: array<vec4<DGT>>;

// The wide backward (backward_site) of units j0 .. j0 + 7 (those below H)
// for batch rows RB·bg ..: dh_prev = dgates_{s+1} * W_hh[:, j0..j0+8]
// with vec4 loads (dh_wide: each W_hh vec4 serving RB rows and each
// dgates vec4 both unit quads, 8 W and RB dgates loads per 4 k and 32·RB
// FMAs; k ascending, as dh_direct), then, here, the pointwise half per
// row and unit.
fn backward_rows(bg: u32, j0: u32, acc: array<vec4<f32>, 2u * RB>) {
    let hs = p.h;
    let s = p.step;
    for (var r = 0u; r < RB; r++) {
        let b = bg * RB + r;
        if b >= p.batch {
            return;
        }
        let len = lengths[b];
        if s >= len {
            continue;
        }
        // Rows without a step s + 1 summed garbage: backward_finish uses
        // grad h_n / c_n there instead.
        for (var q = 0u; q < 8u; q++) {
            if j0 + q < hs {
                backward_finish(b, j0 + q, s, len, acc[2u * r + q / 4u][q % 4u]);
            }
        }
    }
}

// dh_prev[r, j0 + q] = acc[2r + q / 4][q % 4] for the RB rows from RB·bg:
// the dgates row of step s + 1 (or, with `state`, of step 0) times
// W_hh[:, j0..j0+8]. Rows without such a step sum garbage.
fn dh_wide(bg: u32, j0: u32, state: bool) -> array<vec4<f32>, 2u * RB> {
    let hs = p.h;
    let h4 = hs / 4u;
    let wb = (p.whh_off + j0) / 4u;
    // The second quad reads the first again when it is past H (never
    // stored).
    let q1 = select(0u, 1u, j0 + 4u < hs);
    let base = dg_rows(bg, state);
    var acc: array<vec4<f32>, 2u * RB>;
    for (var kq = 0u; kq < CELL_GATES * hs / 4u; kq++) {
        let k = 4u * kq;
        let w0 = vec4<f32>(w4[wb + k * h4]);
        let w1 = vec4<f32>(w4[wb + (k + 1u) * h4]);
        let w2 = vec4<f32>(w4[wb + (k + 2u) * h4]);
        let w3 = vec4<f32>(w4[wb + (k + 3u) * h4]);
        let v0 = vec4<f32>(w4[wb + q1 + k * h4]);
        let v1 = vec4<f32>(w4[wb + q1 + (k + 1u) * h4]);
        let v2 = vec4<f32>(w4[wb + q1 + (k + 2u) * h4]);
        let v3 = vec4<f32>(w4[wb + q1 + (k + 3u) * h4]);
        for (var r = 0u; r < RB; r++) {
            let d = vec4<f32>(dg4[base[r] + kq]);
            acc[2u * r] = dh_row(acc[2u * r], d, w0, w1, w2, w3);
            acc[2u * r + 1u] = dh_row(acc[2u * r + 1u], d, v0, v1, v2, v3);
        }
    }
    return acc;
}

// x plus one dgates vec4 (4 k) times the rows k..k+3 of a W_hh quad, k
// ascending.
fn dh_row(x: vec4<f32>, d: vec4<f32>, w0: vec4<f32>, w1: vec4<f32>, w2: vec4<f32>,
          w3: vec4<f32>) -> vec4<f32> {
    var y = x;
    y += d.x * w0;
    y += d.y * w1;
    y += d.z * w2;
    y += d.w * w3;
    return y;
}

// Where the dgates vec4s of the RB rows from RB·bg start: step s + 1 (or,
// with `state`, step 0); 0 for rows without one.
fn dg_rows(bg: u32, state: bool) -> array<u32, RB> {
    var base: array<u32, RB>;
    for (var r = 0u; r < RB; r++) {
        base[r] = dg_src4(bg * RB + r, state);
    }
    return base;
}

// Where batch row b's dgates row of step s + 1 (with `state`, of step 0)
// starts, in vec4s of dg4; 0 for rows without one.
fn dg_src4(b: u32, state: bool) -> u32 {
    if b >= p.batch {
        return 0u;
    }
    let len = lengths[b];
    var t: u32;
    if state {
        t = time_of(0u, len, p.reverse);
    } else if p.step + 1u < len {
        t = time_of(p.step + 1u, len, p.reverse);
    } else {
        return 0u;
    }
    return (p.dg_off + (t * p.batch + b) * CELL_GATES * p.h) / 4u;
}

// One backward step s (called for s = T-1 down to 0). Each invocation owns
// one (b, j), or with pp[0].wide 8 units of RB rows: it pulls the recurrent
// gradients of step s+1 (already complete, written by the previous
// dispatch) and emits the four gate gradients and dc of step s. Padded
// steps write nothing: their dgates stay at the zero the buffer was
// cleared to.
@compute @workgroup_size(64)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let st = backward_site(gid, nwg, false);
    if !st.ok {
        return;
    }
    let b = st.b;
    let len = lengths[b];
    let s = p.step;
    if s >= len {
        return;
    }
    var dh_w = 0.0;
    if s + 1u < len {
        dh_w = dh_direct(time_of(s + 1u, len, p.reverse) * p.batch + b, st.u);
    }
    backward_finish(b, st.u, s, len, dh_w);
}

// The initial-state gradients of (b, j), whose step 0 sits at `row`:
// grad_h0 = dh (dgates_0 * W_hh), grad_c0 = dc_0 * f_0.
fn write_state_grads(b: u32, j: u32, row: u32, dh: f32) {
    let hs = p.h;
    let sb = p.state_off + b * hs + j;
    let carry =
        cell_dc_prev(dcs[p.dc_off + row * hs + j], gate(p.cache_off + row * CELL_GATES * hs + CELL_CARRY * hs + j));
    var g = cell_state_grads(dh, carry);
    // Zoneout's direct share of step 0's state gradients.
    if zone_on(ZONE_H) {
        g.x += zst[p.zh_off + row * hs + j];
    }
    if zone_on(ZONE_C) {
        g.y += zst[p.zc_off + row * hs + j];
    }
    gstate_out[sb] = g.x;
    gstate_out[p.state_stride + sb] = g.y;
}

// The direct backward kernels' (b, j) (`state`: of backward_state). With
// pp[0].wide the invocation instead runs the wide variant for its 8 units
// of RB rows and gets a site that is not ok.
fn backward_site(gid: vec3<u32>, nwg: vec3<u32>, state: bool) -> Site {
    if pp[0].wide == 0u {
        return site(gid, nwg, pp[0].batch, pp[0].h);
    }
    let st = site(gid, nwg, (pp[0].batch + RB - 1u) / RB, (pp[0].h + 7u) / 8u);
    if st.ok {
        let acc = dh_wide(st.b, 8u * st.u, state);
        if state {
            state_rows(st.b, 8u * st.u, acc);
        } else {
            backward_rows(st.b, 8u * st.u, acc);
        }
    }
    return Site(false, 0u, 0u);
}

fn state_rows(bg: u32, j0: u32, acc: array<vec4<f32>, 2u * RB>) {
    let hs = p.h;
    for (var r = 0u; r < RB; r++) {
        let b = bg * RB + r;
        if b >= p.batch {
            return;
        }
        let row = time_of(0u, lengths[b], p.reverse) * p.batch + b;
        for (var q = 0u; q < 8u; q++) {
            if j0 + q < hs {
                write_state_grads(b, j0 + q, row, acc[2u * r + q / 4u][q % 4u]);
            }
        }
    }
}

// Gradients of the initial state after step 0: grad_h0 = dgates_0 * W_hh,
// grad_c0 = dc_0 * f_0.
@compute @workgroup_size(64)
fn backward_state(@builtin(global_invocation_id) gid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let st = backward_site(gid, nwg, true);
    if !st.ok {
        return;
    }
    let row = time_of(0u, lengths[st.b], p.reverse) * p.batch + st.b;
    write_state_grads(st.b, st.u, row, dh_direct(row, st.u));
}

// ---- Tiled variant ---------------------------------------------------------

// Tiles: a workgroup of TB*TU invocations owns TB batch rows x TU hidden
// units (all four gates of each unit) and walks the recurrent product in K
// chunks of KC staged in workgroup memory, so each W_hh and h value is
// loaded once per tile instead of once per output (coalesced along k), and
// B*H/(TB*TU) workgroups keep a large GPU busy at every step. KS slices of
// TB*TU invocations each take every KS-th chunk, and slice 0 adds their
// partial sums in slice order at the end: more invocations per tile and
// KS times shorter dependency chains, the same result on every run. Rows
// are padded to KC + 1 against bank conflicts. The host may set TB, TU, KC
// and KS by name (src/kernels/lstm_cell.rs, TileConfig: private arrays
// cannot take override sizes); KC must be a multiple of TB and TU.
const TB: u32 = 8u;
const TU: u32 = 8u;
const KC: u32 = 32u;
const KS: u32 = 4u;
const KP: u32 = KC + 1u;
const TT: u32 = TB * TU;
const WGS: u32 = TT * KS;
// Loads per invocation per chunk: h or dgates rows, forward W rows,
// backward W rows.
const NA: u32 = KC / TU;
const NWF: u32 = CELL_GATES * KC / TB;
const NWB: u32 = KC / TB;

// Per slice: h_prev or dgates rows; W rows, 4*TU x KP (forward) or KC x TU
// (backward). sh_w also carries the partial sums at the end.
var<workgroup> sh_a: array<f32, KS * TB * KP>;
var<workgroup> sh_w: array<f32, KS * CELL_GATES * TU * KP>;
var<workgroup> sh_src: array<u32, TB>;         // per tile row: source offset
var<workgroup> sh_kind: array<u32, TB>;        // 0 none, 1 out/dg, 2 state_in

// Selects the lane of workgroup row wy (sets p) and returns the first
// batch row of its tile.
fn tile_dir(wy: u32) -> u32 {
    let nbt = (pp[0].batch + TB - 1u) / TB;
    p = pp[min(wy / nbt, LANES - 1u)];
    return (wy % nbt) * TB;
}

// Where tile row r's h_{t-1} lives for forward step p.step.
fn fwd_source(b: u32) {
    let s = p.step;
    var kind = 0u;
    var off = 0u;
    if b < p.batch {
        let len = lengths[b];
        if s < len {
            if s == 0u {
                kind = 2u;
                off = p.state_off + b * p.h;
            } else {
                let t = time_of(s, len, p.reverse);
                let tp = prev_time(t, p.reverse);
                kind = 1u;
                off = (tp * p.batch + b) * p.out_stride + p.out_col;
            }
        }
    }
    sh_src[b % TB] = off;
    sh_kind[b % TB] = kind;
}

// Registers holding one chunk between its global loads and its stores to
// workgroup memory. Element e = lt + TT*r of a row-major tile with KC
// columns is row e / KC, column e % KC (lt: index within the slice).
var<private> ra: array<f32, NA>;
var<private> rw: array<f32, NWF>;

// Forward chunk at k0: TB h_prev rows and the 4*TU W_hh rows of the tile.
// The loads are unconditional (an index past a buffer's end is clamped by
// the bounds checks, and the value masked after): loads inside branches are
// issued one after another, each paying the full memory latency.
fn fwd_load(lt: u32, j0: u32, k0: u32) {
    let hs = p.h;
    for (var r = 0u; r < NA; r++) {
        let e = lt + TT * r;
        let row = e / KC;
        let k = k0 + e % KC;
        let kind = sh_kind[row];
        let vo = out[sh_src[row] + k];
        let vs = state_in[sh_src[row] + k];
        ra[r] = select(0.0, select(vs, vo, kind == 1u), kind != 0u && k < hs);
    }
    for (var r = 0u; r < NWF; r++) {
        let e = lt + TT * r;
        let row = e / KC;
        let k = k0 + e % KC;
        let j = j0 + row % TU;
        let v = f32(w[p.whh_off + ((row / TU) * hs + j) * hs + k]);
        rw[r] = select(0.0, v, k < hs && j < hs);
    }
}

fn fwd_stage(lt: u32, q: u32) {
    for (var r = 0u; r < NA; r++) {
        let e = lt + TT * r;
        sh_a[q * TB * KP + (e / KC) * KP + e % KC] = ra[r];
    }
    for (var r = 0u; r < NWF; r++) {
        let e = lt + TT * r;
        sh_w[q * CELL_GATES * TU * KP + (e / KC) * KP + e % KC] = rw[r];
    }
}

// Slice 0's invocation lt: the sum of the KS slices' partials of component
// c (the partials were stored at sh_w[(q * CELL_GATES + c) * TT + lt]).
fn slices_sum(lt: u32, c: u32) -> f32 {
    var acc = 0.0;
    for (var q = 0u; q < KS; q++) {
        acc += sh_w[(q * CELL_GATES + c) * TT + lt];
    }
    return acc;
}

@compute @workgroup_size(WGS)
fn forward_tiled(@builtin(local_invocation_index) li: u32,
           @builtin(workgroup_id) wg: vec3<u32>) {
    let b0 = tile_dir(wg.y);
    // From pp[0]: loop bounds around barriers must be uniform.
    let hs = pp[0].h;
    let j0 = wg.x * TU;
    if li < TB {
        fwd_source(b0 + li);
    }
    workgroupBarrier();
    var a = Gates();
    let q = li / TT;
    let lt = li % TT;
    let bl = lt / TU;
    let ul = lt % TU;
    let wq = q * CELL_GATES * TU * KP;
    let aq = q * TB * KP;
    // Each chunk's global loads go to registers first, all issued before
    // any is used, and the next chunk's are issued before this chunk's
    // products: the loads' latency overlaps instead of adding up.
    fwd_load(lt, j0, q * KC);
    for (var k0 = 0u; k0 < hs; k0 += KS * KC) {
        fwd_stage(lt, q);
        workgroupBarrier();
        if k0 + KS * KC < hs {
            fwd_load(lt, j0, k0 + (KS + q) * KC);
        }
        for (var k = 0u; k < KC; k++) {
            let hv = sh_a[aq + bl * KP + k];
            for (var g = 0u; g < CELL_GATES; g++) {
                a[g] += sh_w[wq + (g * TU + ul) * KP + k] * hv;
            }
        }
        workgroupBarrier();
    }
    for (var g = 0u; g < CELL_GATES; g++) {
        sh_w[(q * CELL_GATES + g) * TT + lt] = a[g];
    }
    workgroupBarrier();
    if q != 0u {
        return;
    }
    for (var g = 0u; g < CELL_GATES; g++) {
        a[g] = slices_sum(lt, g);
    }
    let b = b0 + bl;
    let j = j0 + ul;
    if b >= p.batch || j >= hs || sh_kind[bl] == 0u {
        return;
    }
    let len = lengths[b];
    let s = p.step;
    let t = time_of(s, len, p.reverse);
    let row = t * p.batch + b;
    a = cell_join(a, pre_at(p.pre_off + row * CELL_GATES * hs + j), bias_hh(j));
    let c_base = p.c_off;
    var hp_j: f32;
    var c_prev: f32;
    if s == 0u {
        let sb = p.state_off + b * hs;
        hp_j = state_in[sb + j];
        c_prev = state_in[p.state_stride + sb + j];
    } else {
        let tp = prev_time(t, p.reverse);
        hp_j = out[(tp * p.batch + b) * p.out_stride + p.out_col + j];
        c_prev = cst[c_base + (tp * p.batch + b) * hs + j];
    }
    forward_finish(b, j, s == len - 1u, row, a, hp_j, c_prev);
}

// dh_prev[b, j] = sum_k dgates[row_b, k] * W_hh[k, j] for the invocation's
// (b, j) of the tile, where tile row r's gradient row starts at
// sh_src[r] (sh_kind[r] == 0: no row, the product is 0): the recurrent
// gradient flowing from the gates back into h_{t-1}. Called by every
// invocation of the workgroup (it has barriers).
fn dh_tiled(li: u32, j0: u32) -> f32 {
    let k4 = CELL_GATES * pp[0].h;
    let q = li / TT;
    let lt = li % TT;
    let bl = lt / TU;
    let ul = lt % TU;
    let wq = q * KC * TU;
    let aq = q * TB * KP;
    var acc = 0.0;
    bwd_load(lt, j0, q * KC);
    for (var k0 = 0u; k0 < k4; k0 += KS * KC) {
        bwd_stage(lt, q);
        workgroupBarrier();
        if k0 + KS * KC < k4 {
            bwd_load(lt, j0, k0 + (KS + q) * KC);
        }
        for (var k = 0u; k < KC; k++) {
            acc += sh_a[aq + bl * KP + k] * sh_w[wq + k * TU + ul];
        }
        workgroupBarrier();
    }
    sh_w[q * CELL_GATES * TT + lt] = acc;
    workgroupBarrier();
    // Only slice 0's value is used.
    return slices_sum(lt, 0u);
}

// Backward chunk at k0: TB dgates rows (KC columns) and KC rows of W_hh (TU
// columns from j0); unconditional loads as above.
fn bwd_load(lt: u32, j0: u32, k0: u32) {
    let hs = p.h;
    let k4 = CELL_GATES * hs;
    for (var r = 0u; r < NA; r++) {
        let e = lt + TT * r;
        let row = e / KC;
        let k = k0 + e % KC;
        let v = f32(dg[sh_src[row] + k]);
        ra[r] = select(0.0, v, k < k4 && sh_kind[row] != 0u);
    }
    for (var r = 0u; r < NWB; r++) {
        let e = lt + TT * r;
        let kr = k0 + e / TU;
        let j = j0 + e % TU;
        let v = f32(w[p.whh_off + kr * hs + j]);
        rw[r] = select(0.0, v, kr < k4 && j < hs);
    }
}

fn bwd_stage(lt: u32, q: u32) {
    for (var r = 0u; r < NA; r++) {
        let e = lt + TT * r;
        sh_a[q * TB * KP + (e / KC) * KP + e % KC] = ra[r];
    }
    for (var r = 0u; r < NWB; r++) {
        sh_w[q * KC * TU + lt + TT * r] = rw[r];
    }
}

// One backward step s (called for s = T-1 down to 0). Each invocation owns
// one (b, j) of a TB x TU tile: it pulls the recurrent gradients of step s+1
// (already complete, written by the previous dispatch) and emits the four
// gate gradients and dc of step s. Padded steps write nothing: their dgates
// stay at the zero the buffer was cleared to.
@compute @workgroup_size(WGS)
fn backward_tiled(@builtin(local_invocation_index) li: u32,
            @builtin(workgroup_id) wg: vec3<u32>) {
    let b0 = tile_dir(wg.y);
    let hs = p.h;
    let j0 = wg.x * TU;
    let s = p.step;
    if li < TB {
        let bb = b0 + li;
        var kind = 0u;
        var off = 0u;
        if bb < p.batch {
            let len = lengths[bb];
            if s + 1u < len {
                kind = 1u;
                off = p.dg_off + (time_of(s + 1u, len, p.reverse) * p.batch + bb) * CELL_GATES * hs;
            }
        }
        sh_src[li] = off;
        sh_kind[li] = kind;
    }
    workgroupBarrier();
    let dh_w = dh_tiled(li, j0);
    let b = b0 + li / TU;
    let j = j0 + li % TU;
    if li >= TT || b >= p.batch || j >= hs {
        return;
    }
    let len = lengths[b];
    if s >= len {
        return;
    }
    backward_finish(b, j, s, len, dh_w);
}

// Gradients of the initial state after step 0: grad_h0 = dgates_0 * W_hh,
// grad_c0 = dc_0 * f_0.
@compute @workgroup_size(WGS)
fn backward_state_tiled(@builtin(local_invocation_index) li: u32,
                  @builtin(workgroup_id) wg: vec3<u32>) {
    let b0 = tile_dir(wg.y);
    let hs = p.h;
    let j0 = wg.x * TU;
    if li < TB {
        let bb = b0 + li;
        var kind = 0u;
        var off = 0u;
        if bb < p.batch {
            kind = 1u;
            off = p.dg_off + (time_of(0u, lengths[bb], p.reverse) * p.batch + bb) * CELL_GATES * hs;
        }
        sh_src[li] = off;
        sh_kind[li] = kind;
    }
    workgroupBarrier();
    let dh_w = dh_tiled(li, j0);
    let b = b0 + li / TU;
    let j = j0 + li % TU;
    if li >= TT || b >= p.batch || j >= hs {
        return;
    }
    write_state_grads(b, j, time_of(0u, lengths[b], p.reverse) * p.batch + b, dh_w);
}

// subgroup-begin
// ---- Direct variant with subgroup broadcasts --------------------------------

// For 8-lane subgroups (lavapipe), chosen by the host when B > 16 and H is
// a multiple of 8 (forward) or 32 (backward): a subgroup owns SR = 32 batch
// rows and each lane one unit (forward: its four gates) or four (backward).
// Lane l loads rows l, l + 8, l + 16, l + 24 of h_{t-1} (dgates) and the
// others take them by broadcast, so per 4 k a lane makes 8 vec4 loads for
// 512 FMAs (the wide path: 16 for 256), the shape of `gemm_sg`. The
// products are summed as in the wide path. The invocation index is built
// from the subgroup builtins, so a subgroup is 8 consecutive indices
// whatever the implementation's grouping; no lane returns before the loop,
// as every lane's loads feed the others. Broadcast lanes must be constant
// expressions, hence the rows written out in gates8 and dh8; the rows are
// kept as four arrays of 8 indexed only by constants in the loop, so that
// they stay in registers (an array indexed by a variable anywhere is kept
// in per-lane scratch memory).
const SR: u32 = 32u;

fn sg_index(wid: vec3<u32>, nwg: vec3<u32>, sid: u32, sl: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * 64u + sid * 8u + sl;
}

// Rows 0..7 of acc take the gate products of the h vec4 that lanes 0..7
// loaded as x.
fn gates8(acc: ptr<function, array<Gates, 8>>, x: vec4<f32>, wr: GateRows) {
    (*acc)[0] = gates_row((*acc)[0], subgroupBroadcast(x, 0u), wr);
    (*acc)[1] = gates_row((*acc)[1], subgroupBroadcast(x, 1u), wr);
    (*acc)[2] = gates_row((*acc)[2], subgroupBroadcast(x, 2u), wr);
    (*acc)[3] = gates_row((*acc)[3], subgroupBroadcast(x, 3u), wr);
    (*acc)[4] = gates_row((*acc)[4], subgroupBroadcast(x, 4u), wr);
    (*acc)[5] = gates_row((*acc)[5], subgroupBroadcast(x, 5u), wr);
    (*acc)[6] = gates_row((*acc)[6], subgroupBroadcast(x, 6u), wr);
    (*acc)[7] = gates_row((*acc)[7], subgroupBroadcast(x, 7u), wr);
}

// The pre-gates of unit j for batch rows b .. b + 7.
fn pre8(b: u32, j: u32) -> array<Gates, 8> {
    return array<Gates, 8>(pre_gates(b, j), pre_gates(b + 1u, j), pre_gates(b + 2u, j),
                               pre_gates(b + 3u, j), pre_gates(b + 4u, j), pre_gates(b + 5u, j),
                               pre_gates(b + 6u, j), pre_gates(b + 7u, j));
}

fn finish8(b: u32, j: u32, acc: array<Gates, 8>) {
    for (var r = 0u; r < 8u; r++) {
        finish_row(b + r, j, acc[r]);
    }
}

@compute @workgroup_size(64)
fn forward_sg(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(subgroup_id) sid: u32,
              @builtin(subgroup_invocation_id) sl: u32) {
    let st = site_at(sg_index(wid, nwg, sid, sl), (pp[0].batch + SR - 1u) / SR, pp[0].h);
    if !st.ok {
        return;
    }
    let b0 = st.b * SR;
    let j = st.u;
    let hs = p.h;
    let h4 = hs / 4u;
    let gs = hs * h4;
    let wi = (p.whh_off + j * hs) / 4u;
    var acc0 = pre8(b0, j);
    var acc1 = pre8(b0 + 8u, j);
    var acc2 = pre8(b0 + 16u, j);
    var acc3 = pre8(b0 + 24u, j);
    let x0 = h_src4(b0 + sl);
    let x1 = h_src4(b0 + 8u + sl);
    let x2 = h_src4(b0 + 16u + sl);
    let x3 = h_src4(b0 + 24u + sl);
    for (var kq = 0u; kq < h4; kq++) {
        let wr = w_rows(wi + kq, gs);
        gates8(&acc0, h_prev4(x0 + kq), wr);
        gates8(&acc1, h_prev4(x1 + kq), wr);
        gates8(&acc2, h_prev4(x2 + kq), wr);
        gates8(&acc3, h_prev4(x3 + kq), wr);
    }
    finish8(b0, j, acc0);
    finish8(b0 + 8u, j, acc1);
    finish8(b0 + 16u, j, acc2);
    finish8(b0 + 24u, j, acc3);
}

// Rows 0..7 of acc take the products of the dgates vec4 that lanes 0..7
// loaded as x with rows k..k+3 of the lane's W_hh quad.
fn dh8(acc: ptr<function, array<vec4<f32>, 8>>, x: vec4<f32>, w0: vec4<f32>, w1: vec4<f32>,
       w2: vec4<f32>, w3: vec4<f32>) {
    (*acc)[0] = dh_row((*acc)[0], subgroupBroadcast(x, 0u), w0, w1, w2, w3);
    (*acc)[1] = dh_row((*acc)[1], subgroupBroadcast(x, 1u), w0, w1, w2, w3);
    (*acc)[2] = dh_row((*acc)[2], subgroupBroadcast(x, 2u), w0, w1, w2, w3);
    (*acc)[3] = dh_row((*acc)[3], subgroupBroadcast(x, 3u), w0, w1, w2, w3);
    (*acc)[4] = dh_row((*acc)[4], subgroupBroadcast(x, 4u), w0, w1, w2, w3);
    (*acc)[5] = dh_row((*acc)[5], subgroupBroadcast(x, 5u), w0, w1, w2, w3);
    (*acc)[6] = dh_row((*acc)[6], subgroupBroadcast(x, 6u), w0, w1, w2, w3);
    (*acc)[7] = dh_row((*acc)[7], subgroupBroadcast(x, 7u), w0, w1, w2, w3);
}

// dh_prev[b0 + 8i + r, j0 .. j0 + 4] = acc<i>[r]: the dgates rows of step
// s + 1 (with `state`, of step 0) times W_hh[:, j0..j0+4], k ascending.
struct Dh32 {
    acc0: array<vec4<f32>, 8>,
    acc1: array<vec4<f32>, 8>,
    acc2: array<vec4<f32>, 8>,
    acc3: array<vec4<f32>, 8>,
}

fn dh_sg(b0: u32, j0: u32, state: bool, sl: u32) -> Dh32 {
    let hs = p.h;
    let h4 = hs / 4u;
    let wb = (p.whh_off + j0) / 4u;
    let x0 = dg_src4(b0 + sl, state);
    let x1 = dg_src4(b0 + 8u + sl, state);
    let x2 = dg_src4(b0 + 16u + sl, state);
    let x3 = dg_src4(b0 + 24u + sl, state);
    var acc0: array<vec4<f32>, 8>;
    var acc1: array<vec4<f32>, 8>;
    var acc2: array<vec4<f32>, 8>;
    var acc3: array<vec4<f32>, 8>;
    for (var kq = 0u; kq < CELL_GATES * hs / 4u; kq++) {
        let k = 4u * kq;
        let w0 = vec4<f32>(w4[wb + k * h4]);
        let w1 = vec4<f32>(w4[wb + (k + 1u) * h4]);
        let w2 = vec4<f32>(w4[wb + (k + 2u) * h4]);
        let w3 = vec4<f32>(w4[wb + (k + 3u) * h4]);
        dh8(&acc0, vec4<f32>(dg4[x0 + kq]), w0, w1, w2, w3);
        dh8(&acc1, vec4<f32>(dg4[x1 + kq]), w0, w1, w2, w3);
        dh8(&acc2, vec4<f32>(dg4[x2 + kq]), w0, w1, w2, w3);
        dh8(&acc3, vec4<f32>(dg4[x3 + kq]), w0, w1, w2, w3);
    }
    return Dh32(acc0, acc1, acc2, acc3);
}

// The pointwise backward of rows b .. b + 7 (those active), units j0 .. j0 + 3.
fn bwd_finish8(b: u32, j0: u32, acc: array<vec4<f32>, 8>) {
    let s = p.step;
    for (var r = 0u; r < 8u; r++) {
        if live_row(b + r) {
            let len = lengths[b + r];
            for (var q = 0u; q < 4u; q++) {
                backward_finish(b + r, j0 + q, s, len, acc[r][q]);
            }
        }
    }
}

// grad h0 / c0 of rows b .. b + 7 (those that exist), units j0 .. j0 + 3.
fn state_finish8(b: u32, j0: u32, acc: array<vec4<f32>, 8>) {
    for (var r = 0u; r < 8u; r++) {
        if b + r < p.batch {
            let row = time_of(0u, lengths[b + r], p.reverse) * p.batch + b + r;
            for (var q = 0u; q < 4u; q++) {
                write_state_grads(b + r, j0 + q, row, acc[r][q]);
            }
        }
    }
}

// backward_sg and backward_state_sg: the recurrent products of the
// subgroup's rows, then the pointwise half (with `state`, grad h0 / c0).
fn backward_sg_at(idx: u32, sl: u32, state: bool) {
    let st = site_at(idx, (pp[0].batch + SR - 1u) / SR, pp[0].h / 4u);
    if !st.ok {
        return;
    }
    let b0 = st.b * SR;
    let j0 = 4u * st.u;
    let d = dh_sg(b0, j0, state, sl);
    if state {
        state_finish8(b0, j0, d.acc0);
        state_finish8(b0 + 8u, j0, d.acc1);
        state_finish8(b0 + 16u, j0, d.acc2);
        state_finish8(b0 + 24u, j0, d.acc3);
    } else {
        bwd_finish8(b0, j0, d.acc0);
        bwd_finish8(b0 + 8u, j0, d.acc1);
        bwd_finish8(b0 + 16u, j0, d.acc2);
        bwd_finish8(b0 + 24u, j0, d.acc3);
    }
}

@compute @workgroup_size(64)
fn backward_sg(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(subgroup_id) sid: u32,
               @builtin(subgroup_invocation_id) sl: u32) {
    backward_sg_at(sg_index(wid, nwg, sid, sl), sl, false);
}

@compute @workgroup_size(64)
fn backward_state_sg(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(subgroup_id) sid: u32,
                     @builtin(subgroup_invocation_id) sl: u32) {
    backward_sg_at(sg_index(wid, nwg, sid, sl), sl, true);
}
// subgroup-end
