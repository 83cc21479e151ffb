// Persistent time loop: one dispatch runs many timesteps of one layer, for
// any cell: its wrapper joins a cell file (shaders/cells/, or a user's)
// between the prelude and this file, as lstm_cell.wgsl's wrapper does, and
// the loop calls its pointwise functions (cell_acc, cell_forward,
// cell_backward, cell_dc_prev, cell_state_grads).
//
// One workgroup per independent chain (sequence b = workgroup_id.x,
// direction d = workgroup_id.y) loops over its steps with a workgroup
// barrier between them, keeping h_{t-1} (and, when it fits, W_hh) in
// workgroup memory. The math, the length semantics and every buffer layout
// are exactly those of lstm_cell.wgsl (one dispatch per step), so the cache
// and gradient blocks feed the same weight-gradient GEMMs and column sums
// (G = CELL_GATES):
//
//   step s of sequence b is active when s < len_b and sits at t = s
//   (forward) or t = len_b - 1 - s (reverse);
//   cache block of one (layer, direction), time-major:
//     gates [T, B, G*H] (activated) | c [T, B, H] | h_prev [T, B, H]
//   gradient block of one direction: dgates [T, B, G*H] | dc [T, B, H]
//     (| dx [T, B, G*H] at dx_off, for CELL_SPLIT_DG cells)
//   state arrays ([2, L*D, B, H]): h part at 0, c part at state_stride.
//
// A cell that adds b_hh itself (CELL_OWN_BHH) reads it from the parameters
// at bhh_off when p.bhh is set; a diagonal W_hh (CELL_DIAG, the vector u)
// makes the recurrent products u_j h_j and u_j da_j.
//
// A dispatch covers the steps [s_begin, s_end). The host splits the time
// loop into chunks only where the driver caps an invocation's loop
// iterations (Mesa's lavapipe stops all loops of an invocation after 65535
// iterations in total); the state crosses a chunk boundary through the
// buffers the per-step kernel reads anyway (layer output, cache, dg), so a
// chunked run computes bit for bit what one dispatch computes.
//
// Invocation `lid` owns hidden units j = lid + u*WG (u < UNITS) in the
// pointwise parts, and column groups 4*q .. 4*q+3 (q = lid + v*WG) in the
// backward matrix-vector product dh_{t-1} = dgates_t * W_hh (with a
// diagonal W_hh, units j = lid + u*WG there too).

// Hidden size.
override H: u32 = 1u;
// Invocations per workgroup.
override WG: u32 = 64u;
// Hidden units per invocation: ceil(H / WG).
override UNITS: u32 = 1u;
// H rounded up to a multiple of 4, and its quarter.
override HP: u32 = 4u;
override HP4: u32 = 1u;
// 2*HP (the ping-pong h buffer) and G*H (the dgates of one step).
override H2: u32 = 8u;
override GH: u32 = 4u;
// W_hh copied into workgroup memory as [G*H][HP4] vec4 rows (zero padded);
// never for a diagonal W_hh.
override W_SHARED: bool = false;
// vec4 slots of that copy: G*H*HP4 when W_SHARED, else 1.
override W_LEN: u32 = 1u;

// struct Params and Dir: written into the source from their Rust
// declarations, PersistentUniform and PersistentDir
// (src/kernels/lstm_persistent.rs).

@group(0) @binding(0) var<uniform> p: Params;
// Bindings 1 to 11: common/cell_bindings.wgsl.

var<workgroup> len_sh: u32;
var<workgroup> w_sh: array<vec4<f32>, W_LEN>;
// Forward: h_{t-1} ping-pong, two halves of HP (padding stays zero).
var<workgroup> h_sh: array<f32, H2>;
// Forward: c_{t-1} of each unit (only its owner touches it).
var<workgroup> c_sh: array<f32, HP>;
// Backward: dgates of the current step, and the recurrent gradients
// flowing into the step being processed.
var<workgroup> dg_sh: array<f32, GH>;
var<workgroup> dhr_sh: array<f32, HP>;
var<workgroup> dcr_sh: array<f32, HP>;

// The sequence length, made workgroup-uniform so that loop bounds derived
// from it may contain barriers.
fn uniform_len(b: u32, lid: u32) -> u32 {
    if lid == 0u {
        len_sh = lengths[b];
    }
    return workgroupUniformLoad(&len_sh);
}

// W_hh[r, k .. k+3] from global memory, zero past column H. Indices are
// clamped into the row, so no load is out of bounds and no branch is taken.
fn w4(whh: u32, r: u32, k: u32) -> vec4<f32> {
    let base = whh + r * H;
    let last = base + H - 1u;
    let v = vec4<f32>(w[min(base + k, last)], w[min(base + k + 1u, last)],
                      w[min(base + k + 2u, last)], w[min(base + k + 3u, last)]);
    return select(vec4<f32>(0.0), v, vec4<u32>(k, k + 1u, k + 2u, k + 3u) < vec4<u32>(H));
}

// b_hh of unit j for a cell that adds it itself (CELL_OWN_BHH; with
// p.bhh set), else zero: lstm_cell.wgsl's bias_hh.
fn bias_hh(bhh: u32, j: u32) -> Gates {
    var g: Gates;
    if CELL_OWN_BHH && p.bhh != 0u {
        for (var q = 0u; q < CELL_GATES; q++) {
            g[q] = w[bhh + q * H + j];
        }
    }
    return g;
}

fn load_w_shared(whh: u32, lid: u32) {
    for (var q = lid; q < CELL_GATES * H * HP4; q += WG) {
        let r = q / HP4;
        w_sh[q] = w4(whh, r, (q % HP4) * 4u);
    }
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let b = wid.x;
    let dr = p.dirs[wid.y];
    let len = uniform_len(b, lid);
    if W_SHARED {
        load_w_shared(dr.whh_off, lid);
    }
    let bsz = p.batch;
    let gates_len = p.seq * bsz * CELL_GATES * H;
    let c_base = dr.cache_off + gates_len;
    let hp_base = c_base + p.seq * bsz * H;
    let s_end = min(p.s_end, len);
    // h_{t-1} and c_{t-1} of the first step: the initial state, or what the
    // previous chunk left in the layer output and the cache.
    for (var j = lid; j < HP; j += WG) {
        var hv = 0.0;
        if j < H && p.s_begin < s_end {
            if p.s_begin == 0u {
                hv = state_in[dr.state_off + b * H + j];
            } else {
                let tp = time_of(p.s_begin - 1u, len, dr.reverse);
                hv = out[(tp * bsz + b) * p.out_stride + dr.out_col + j];
            }
        }
        h_sh[j] = hv;
        h_sh[HP + j] = 0.0;
    }
    for (var u = 0u; u < UNITS; u++) {
        let j = lid + u * WG;
        if j < H && p.s_begin < s_end {
            if p.s_begin == 0u {
                c_sh[j] = state_in[p.state_stride + dr.state_off + b * H + j];
            } else {
                let tp = time_of(p.s_begin - 1u, len, dr.reverse);
                c_sh[j] = cache[c_base + (tp * bsz + b) * H + j];
            }
        }
    }
    var cur = 0u;
    for (var s = p.s_begin; s < s_end; s++) {
        // h_sh[cur] is complete, and nobody still reads h_sh[1 - cur].
        workgroupBarrier();
        let t = time_of(s, len, dr.reverse);
        let row = t * bsz + b;
        let hb = cur * HP;
        let hn = (1u - cur) * HP;
        for (var u = 0u; u < UNITS; u++) {
            let j = lid + u * WG;
            if j >= H {
                break;
            }
            let pb = dr.pre_off + row * CELL_GATES * H;
            var a: Gates;
            for (var g = 0u; g < CELL_GATES; g++) {
                a[g] = pre[pb + g * H + j];
            }
            let pre_j = a;
            a = cell_acc(a, bias_hh(dr.bhh_off, j));
            if CELL_DIAG {
                // A diagonal W_hh (IndRNN): u_j h_{t-1, j}.
                a[0] += w[dr.whh_off + j] * h_sh[hb + j];
            } else if W_SHARED {
                for (var q = 0u; q < HP4; q++) {
                    let k = hb + 4u * q;
                    let hv = vec4<f32>(h_sh[k], h_sh[k + 1u], h_sh[k + 2u], h_sh[k + 3u]);
                    for (var g = 0u; g < CELL_GATES; g++) {
                        a[g] += dot(w_sh[(g * H + j) * HP4 + q], hv);
                    }
                }
            } else {
                // Gate g's row of unit j starts at wj + g * H * H.
                let wj = dr.whh_off + j * H;
                for (var q = 0u; q < H / 4u; q++) {
                    let k = 4u * q;
                    let hv = vec4<f32>(h_sh[hb + k], h_sh[hb + k + 1u], h_sh[hb + k + 2u],
                                       h_sh[hb + k + 3u]);
                    for (var g = 0u; g < CELL_GATES; g++) {
                        let r = wj + g * H * H + k;
                        a[g] += dot(vec4<f32>(w[r], w[r + 1u], w[r + 2u], w[r + 3u]), hv);
                    }
                }
                for (var k = H & ~3u; k < H; k++) {
                    let hv = h_sh[hb + k];
                    for (var g = 0u; g < CELL_GATES; g++) {
                        a[g] += w[wj + g * H * H + k] * hv;
                    }
                }
            }
            let st = cell_forward(a, pre_j, c_sh[j], h_sh[hb + j]);
            c_sh[j] = st.c;
            h_sh[hn + j] = st.h;
            out[row * p.out_stride + dr.out_col + j] = st.h;
            let gb = dr.cache_off + row * CELL_GATES * H;
            for (var q = 0u; q < CELL_GATES; q++) {
                cache[gb + q * H + j] = st.act[q];
            }
            cache[c_base + row * H + j] = st.c;
            cache[hp_base + row * H + j] = h_sh[hb + j];
            if s + 1u == len {
                let sb = dr.state_off + b * H + j;
                state_out[sb] = st.h;
                state_out[p.state_stride + sb] = st.c;
            }
        }
        cur = 1u - cur;
    }
}

// dhr_sh[k] = sum_r dg_sh[r] * W_hh[r, k] for the column groups this
// invocation owns: four rows per iteration, a vec4 of columns each, then
// the G*H % 4 rows left one at a time. From global memory, whole groups
// take plain loads and only the group past column H takes the clamped
// ones. A diagonal W_hh: dhr_sh[j] = dg_sh[j] * u_j for the units this
// invocation owns.
fn dh_through_whh(whh: u32, lid: u32) {
    if CELL_DIAG {
        for (var u = 0u; u < UNITS; u++) {
            let j = lid + u * WG;
            if j < H {
                dhr_sh[j] = dg_sh[j] * w[whh + j];
            }
        }
        return;
    }
    let r_end = GH & ~3u;
    for (var q = lid; q < HP4; q += WG) {
        let k = 4u * q;
        var acc = vec4<f32>(0.0);
        if W_SHARED {
            for (var r = 0u; r < r_end; r += 4u) {
                acc += dg_sh[r] * w_sh[r * HP4 + q] + dg_sh[r + 1u] * w_sh[(r + 1u) * HP4 + q]
                     + dg_sh[r + 2u] * w_sh[(r + 2u) * HP4 + q]
                     + dg_sh[r + 3u] * w_sh[(r + 3u) * HP4 + q];
            }
            for (var r = r_end; r < GH; r++) {
                acc += dg_sh[r] * w_sh[r * HP4 + q];
            }
        } else if k + 3u < H {
            for (var r = 0u; r < r_end; r += 4u) {
                let a = whh + r * H + k;
                let b = a + H;
                let c = b + H;
                let d = c + H;
                acc += dg_sh[r] * vec4<f32>(w[a], w[a + 1u], w[a + 2u], w[a + 3u])
                     + dg_sh[r + 1u] * vec4<f32>(w[b], w[b + 1u], w[b + 2u], w[b + 3u])
                     + dg_sh[r + 2u] * vec4<f32>(w[c], w[c + 1u], w[c + 2u], w[c + 3u])
                     + dg_sh[r + 3u] * vec4<f32>(w[d], w[d + 1u], w[d + 2u], w[d + 3u]);
            }
            for (var r = r_end; r < GH; r++) {
                let a = whh + r * H + k;
                acc += dg_sh[r] * vec4<f32>(w[a], w[a + 1u], w[a + 2u], w[a + 3u]);
            }
        } else {
            for (var r = 0u; r < r_end; r += 4u) {
                acc += dg_sh[r] * w4(whh, r, k) + dg_sh[r + 1u] * w4(whh, r + 1u, k)
                     + dg_sh[r + 2u] * w4(whh, r + 2u, k) + dg_sh[r + 3u] * w4(whh, r + 3u, k);
            }
            for (var r = r_end; r < GH; r++) {
                acc += dg_sh[r] * w4(whh, r, k);
            }
        }
        dhr_sh[k] = acc.x;
        dhr_sh[k + 1u] = acc.y;
        dhr_sh[k + 2u] = acc.z;
        dhr_sh[k + 3u] = acc.w;
    }
}

// Backward over the steps [s_begin, s_end) in reverse, for every chain at
// once; the chunk holding step 0 also writes the initial-state gradients
// (cell_state_grads of dgates_0 * W_hh and the carried gradient: the
// LSTM's grad_h0 = dgates_0 * W_hh, grad_c0 = dc_0 * f_0). Padded steps write
// nothing: their dgates stay at the zero the buffer was cleared to.
@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let b = wid.x;
    let dr = p.dirs[wid.y];
    let len = uniform_len(b, lid);
    if W_SHARED {
        load_w_shared(dr.whh_off, lid);
    }
    let bsz = p.batch;
    let gates_len = p.seq * bsz * CELL_GATES * H;
    let c_base = dr.cache_off + gates_len;
    let hp_base = c_base + p.seq * bsz * H;
    let dc_base = dr.dg_off + gates_len;
    let top = min(p.s_end, len);
    if top > p.s_begin {
        if top < len {
            // Step `top` ran in the previous chunk: rebuild its recurrent
            // gradients from the dgates and dc it wrote.
            let row1 = time_of(top, len, dr.reverse) * bsz + b;
            for (var r = lid; r < CELL_GATES * H; r += WG) {
                dg_sh[r] = dg[dr.dg_off + row1 * CELL_GATES * H + r];
            }
            for (var u = 0u; u < UNITS; u++) {
                let j = lid + u * WG;
                if j < H {
                    let f1 = cache[dr.cache_off + row1 * CELL_GATES * H + CELL_CARRY * H + j];
                    dcr_sh[j] = cell_dc_prev(dg[dc_base + row1 * H + j], f1);
                }
            }
            workgroupBarrier();
            dh_through_whh(dr.whh_off, lid);
        } else {
            for (var u = 0u; u < UNITS; u++) {
                let j = lid + u * WG;
                if j < H {
                    let sb = dr.state_off + b * H + j;
                    dhr_sh[j] = gstate_in[sb];
                    dcr_sh[j] = gstate_in[p.state_stride + sb];
                }
            }
        }
    }
    for (var s1 = top; s1 > p.s_begin; s1--) {
        let s = s1 - 1u;
        // dhr_sh is complete, and dg_sh is free to overwrite.
        workgroupBarrier();
        let t = time_of(s, len, dr.reverse);
        let row = t * bsz + b;
        let gb = dr.cache_off + row * CELL_GATES * H;
        let db = dr.dg_off + row * CELL_GATES * H;
        for (var u = 0u; u < UNITS; u++) {
            let j = lid + u * WG;
            if j >= H {
                break;
            }
            let dh = dy[row * p.out_stride + dr.out_col + j] + dhr_sh[j];
            var act: Gates;
            for (var q = 0u; q < CELL_GATES; q++) {
                act[q] = cache[gb + q * H + j];
            }
            let c = cache[c_base + row * H + j];
            let h_prev = cache[hp_base + row * H + j];
            var c_prev: f32;
            if s == 0u {
                c_prev = state_in[p.state_stride + dr.state_off + b * H + j];
            } else {
                let rowp = time_of(s - 1u, len, dr.reverse) * bsz + b;
                c_prev = cache[c_base + rowp * H + j];
            }
            let gr = cell_backward(act, c, c_prev, h_prev, dh, dcr_sh[j]);
            for (var q = 0u; q < CELL_GATES; q++) {
                dg[db + q * H + j] = gr.da[q];
                dg_sh[q * H + j] = gr.da[q];
            }
            if CELL_SPLIT_DG {
                let xb = dr.dx_off + row * CELL_GATES * H;
                for (var q = 0u; q < CELL_GATES; q++) {
                    dg[xb + q * H + j] = gr.dx[q];
                }
            }
            dg[dc_base + row * H + j] = gr.dc;
            dcr_sh[j] = cell_dc_prev(gr.dc, act[CELL_CARRY]);
        }
        // dg_sh is complete.
        workgroupBarrier();
        dh_through_whh(dr.whh_off, lid);
    }
    if p.s_begin == 0u {
        workgroupBarrier();
        for (var u = 0u; u < UNITS; u++) {
            let j = lid + u * WG;
            if j < H {
                let sb = dr.state_off + b * H + j;
                let g = cell_state_grads(dhr_sh[j], dcr_sh[j]);
                gstate_out[sb] = g.x;
                gstate_out[p.state_stride + sb] = g.y;
            }
        }
    }
}
