// The projected LSTM (nn.LSTM(proj_size = P)): the pointwise halves of a
// step and the reordering around its time loop. Joined after the prelude,
// the f32 cell bindings and a cell's functions (cells/lstm.wgsl) by
// src/kernels/lstm_proj.rs. The products are the GEMM's
// (src/schedule/mod.rs, docs/architecture.md "Projections"): per step s of
// one (layer, direction),
//   forward:  R = h_{s-1} W_hh^T        (GEMM, [B, 4H], into `work` at r_off)
//             forward_step: gates from pre + R, c_t, m_t = o * tanh(c_t)
//             h_s = m_s W_hr^T          (GEMM, [B, P], into `seqs` at hst_off)
//   backward: dh_s += dgates_{s+1} W_hh (GEMM, onto `seqs` at dhs_off)
//             dm = dh_s W_hr            (GEMM, [B, H], into `work` at dm_off)
//             backward_step: dgates_s, dc_s from dm and the carried dc
// The GEMMs need a step's rows contiguous, which a time-major tensor does
// not give for a reverse direction over sequences of different lengths
// (step s of sequence b sits at time len_b - 1 - s). So h and dh of the
// time loop are step-major ([T, B, P], row s*B + b, in `seqs`), as are m
// ([T, B, H] in `work` at m_off, zero for inactive rows) and the per-step
// scratch R / dgates ([B, 4H] at r_off: R in forward, dgates_{s} in
// backward, zero for inactive rows) and dm ([B, H] at dm_off). `scatter`
// then writes h time-major (the layer output, h_n, and h_{t-1} into the
// cache's h_prev section for dW_hh), and `gather` reads dy time-major
// (plus grad_h_n at each sequence's last step) into dh.
//
// Time-major blocks are those of lstm_cell.wgsl (f32): gates [T, B, 4H] at
// cache_off, c [T, B, H] at c_off (both in `cache`), h_prev [T, B, H] at
// hp_off (its first P columns); dgates [T, B, 4H] at dg_off and dc [T, B, H]
// at dc_off (in `dg`). State arrays ([2, L*D, B, H]): h0 / h_n / their
// gradients at state_off ((l*D + d)*B*H), each row's first P columns; c0 /
// c_n / theirs at state_stride + state_off.

// struct Params: written into the source from its Rust declaration,
// ProjUniform (src/kernels/lstm_proj.rs).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(20) var<storage, read_write> work: array<f32>;
@group(0) @binding(21) var<storage, read_write> seqs: array<f32>;

const WG: u32 = 64u;

// The gates of one unit in the pre-gates, from `i` on (gate sections H
// apart).
fn proj_pre(i: u32) -> Gates {
    var g: Gates;
    for (var q = 0u; q < CELL_GATES; q++) {
        g[q] = pre[i + q * p.h];
    }
    return g;
}

// c of (b, j) before step s, at time t: c0 at step 0.
fn proj_c_prev(b: u32, j: u32, s: u32, t: u32) -> f32 {
    if s == 0u {
        return state_in[p.state_stride + p.state_off + b * p.h + j];
    }
    return cache[p.c_off + (prev_time(t, p.reverse) * p.batch + b) * p.h + j];
}

// The (b, j) of invocation lid of a step's B x H grid, with b's length;
// ok is false past the grid.
struct Unit { ok: bool, b: u32, j: u32, len: u32 }

fn unit_of(grid: Grid, lid: u32) -> Unit {
    let i = grid_index(grid, lid, WG);
    if i >= p.batch * p.h {
        return Unit(false, 0u, 0u, 0u);
    }
    let b = i / p.h;
    return Unit(true, b, i % p.h, lengths[b]);
}

// Forward step p.step for (b, j): the gates from the pre-gates and R, then
// c_t (cached with the activated gates) and m_t (step-major); c_n at the
// sequence's last step.
@compute @workgroup_size(64)
fn forward_step(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let u = unit_of(grid, lid);
    if !u.ok {
        return;
    }
    let hs = p.h;
    let s = p.step;
    let m_at = p.m_off + (s * p.batch + u.b) * hs + u.j;
    if s >= u.len {
        work[m_at] = 0.0;
        return;
    }
    let t = time_of(s, u.len, p.reverse);
    let row = t * p.batch + u.b;
    var rec: Gates;
    for (var q = 0u; q < CELL_GATES; q++) {
        rec[q] = work[p.r_off + u.b * CELL_GATES * hs + q * hs + u.j];
    }
    let pre_g = proj_pre(p.pre_off + row * CELL_GATES * hs + u.j);
    // h_prev (P wide) is the GEMM's; the LSTM's pointwise step ignores it.
    let c_prev = proj_c_prev(u.b, u.j, s, t);
    let st = cell_forward(cell_join(rec, pre_g, Gates()), pre_g, c_prev, 0.0);
    for (var q = 0u; q < CELL_GATES; q++) {
        cache[p.cache_off + row * CELL_GATES * hs + q * hs + u.j] = st.act[q];
    }
    cache[p.c_off + row * hs + u.j] = st.c;
    work[m_at] = st.h;
    if s == u.len - 1u {
        state_out[p.state_stride + p.state_off + u.b * hs + u.j] = st.c;
    }
}

// Backward step p.step for (b, j), given dm = W_hr^T dh_s at dm_off: the
// gate gradients (time-major, and step-major at r_off for the next GEMM)
// and dc; grad c0 after step 0.
@compute @workgroup_size(64)
fn backward_step(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let u = unit_of(grid, lid);
    if !u.ok {
        return;
    }
    let hs = p.h;
    let s = p.step;
    let dgs = p.r_off + u.b * CELL_GATES * hs + u.j;
    if s >= u.len {
        for (var q = 0u; q < CELL_GATES; q++) {
            work[dgs + q * hs] = 0.0;
        }
        return;
    }
    let t = time_of(s, u.len, p.reverse);
    let row = t * p.batch + u.b;
    var dc_rec: f32;
    if s + 1u < u.len {
        let row1 = time_of(s + 1u, u.len, p.reverse) * p.batch + u.b;
        let f1 = cache[p.cache_off + row1 * CELL_GATES * hs + CELL_CARRY * hs + u.j];
        dc_rec = cell_dc_prev(dg[p.dc_off + row1 * hs + u.j], f1);
    } else {
        dc_rec = gstate_in[p.state_stride + p.state_off + u.b * hs + u.j];
    }
    var act: Gates;
    for (var q = 0u; q < CELL_GATES; q++) {
        act[q] = cache[p.cache_off + row * CELL_GATES * hs + q * hs + u.j];
    }
    let c = cache[p.c_off + row * hs + u.j];
    let dm = work[p.dm_off + u.b * hs + u.j];
    let gr = cell_backward(act, c, proj_c_prev(u.b, u.j, s, t), 0.0, dm, dc_rec);
    for (var q = 0u; q < CELL_GATES; q++) {
        dg[p.dg_off + row * CELL_GATES * hs + q * hs + u.j] = gr.da[q];
        work[dgs + q * hs] = gr.da[q];
    }
    dg[p.dc_off + row * hs + u.j] = gr.dc;
    if s == 0u {
        let carry = cell_dc_prev(gr.dc, act[CELL_CARRY]);
        // grad h0 is the GEMM's (dgates_0 W_hh).
        let g0 = cell_state_grads(0.0, carry);
        gstate_out[p.state_stride + p.state_off + u.b * hs + u.j] = g0.y;
    }
}

// The element (x, b, k < P) of invocation lid of a [T, B, P] grid (x a
// time or a step), with b's length; ok is false past the grid.
struct Elem { ok: bool, x: u32, b: u32, k: u32, len: u32 }

fn elem_of(grid: Grid, lid: u32) -> Elem {
    let i = grid_index(grid, lid, WG);
    if i >= p.seq * p.batch * p.p {
        return Elem(false, 0u, 0u, 0u, 0u);
    }
    let r = i / p.p;
    let b = r % p.batch;
    return Elem(true, r / p.batch, b, i % p.p, lengths[b]);
}

// After the time loop, per (t, b, k < P): the layer output and h_{t-1}
// (the cache's h_prev section, zero at padded times) from the step-major
// h, and h_n at each sequence's last step.
@compute @workgroup_size(64)
fn scatter(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let e = elem_of(grid, lid);
    if !e.ok {
        return;
    }
    let r = e.x * p.batch + e.b;
    let hp_at = p.hp_off + r * p.h + e.k;
    if e.x >= e.len {
        cache[hp_at] = 0.0;
        return;
    }
    // time_of is its own inverse: the step at time t.
    let s = time_of(e.x, e.len, p.reverse);
    let v = seqs[p.hst_off + (s * p.batch + e.b) * p.p + e.k];
    out[r * p.out_stride + p.out_col + e.k] = v;
    if s == 0u {
        cache[hp_at] = state_in[p.state_off + e.b * p.h + e.k];
    } else {
        cache[hp_at] = seqs[p.hst_off + ((s - 1u) * p.batch + e.b) * p.p + e.k];
    }
    if s == e.len - 1u {
        state_out[p.state_off + e.b * p.h + e.k] = v;
    }
}

// Before the time loop, per (s, b, k < P): dh_s = dy at the step's time,
// plus grad h_n at the sequence's last step; zero past it.
@compute @workgroup_size(64)
fn gather(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let e = elem_of(grid, lid);
    if !e.ok {
        return;
    }
    let at = p.dhs_off + (e.x * p.batch + e.b) * p.p + e.k;
    if e.x >= e.len {
        seqs[at] = 0.0;
        return;
    }
    let t = time_of(e.x, e.len, p.reverse);
    var v = dy[(t * p.batch + e.b) * p.out_stride + p.out_col + e.k];
    if e.x == e.len - 1u {
        v += gstate_in[p.state_off + e.b * p.h + e.k];
    }
    seqs[at] = v;
}
