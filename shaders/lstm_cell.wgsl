// Fused LSTM cell, one dispatch per (layer, direction, step), forward and
// backward. Gate order i, f, g, o as in PyTorch.
//
// Steps are counted in each sequence's own processing order: step s of
// sequence b is active when s < len_b and sits at time t = s (forward) or
// t = len_b - 1 - s (reverse), which is what pack_padded_sequence does.
// The previous state is read where the previous step wrote it (the layer
// output and the cell cache), so no ping-pong state buffers are needed.
//
// Cache block of one (layer, direction), time-major:
//   gates [T, B, 4H] (activated i, f, g, o) | c [T, B, H] | h_prev [T, B, H]
// Gradient block of one direction: dgates [T, B, 4H] (pre-activation) | dc [T, B, H]
// State arrays ([2, L*D, B, H]): h part at 0, c part at state_stride.

struct Params {
    h: u32, batch: u32, seq: u32, step: u32,
    reverse: u32, out_stride: u32, out_col: u32, pre_off: u32,
    whh_off: u32, cache_off: u32, dg_off: u32, state_off: u32,
    state_stride: u32, _p0: u32, _p1: u32, _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// Forward bindings.
@group(0) @binding(1) var<storage, read> pre: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> state_in: array<f32>;
@group(0) @binding(4) var<storage, read> lengths: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> cache: array<f32>;
@group(0) @binding(7) var<storage, read_write> state_out: array<f32>;

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// tanh saturates to +-1 in f32 long before 15; clamping keeps exp-based
// implementations from overflowing into NaN.
fn tanh_s(x: f32) -> f32 {
    return tanh(clamp(x, -15.0, 15.0));
}

// Time of step s for a sequence of length len.
fn time_of(s: u32, len: u32) -> u32 {
    if p.reverse != 0u {
        return len - 1u - s;
    }
    return s;
}

// Invocation index over (batch, hidden) with 2-D grids for large B*H.
fn lane(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

@compute @workgroup_size(64)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = lane(gid, nwg);
    let hs = p.h;
    if idx >= p.batch * hs {
        return;
    }
    let b = idx / hs;
    let j = idx % hs;
    let len = lengths[b];
    let s = p.step;
    if s >= len {
        return;
    }
    let t = time_of(s, len);
    let row = t * p.batch + b;
    let pb = p.pre_off + row * 4u * hs;
    var ai = pre[pb + j];
    var af = pre[pb + hs + j];
    var ag = pre[pb + 2u * hs + j];
    var ao = pre[pb + 3u * hs + j];
    let wi = p.whh_off + j * hs;
    let wf = wi + hs * hs;
    let wg = wf + hs * hs;
    let wo = wg + hs * hs;
    var hp_j: f32;
    var c_prev: f32;
    let gates_len = p.seq * p.batch * 4u * hs;
    let c_base = p.cache_off + gates_len;
    if s == 0u {
        let sb = p.state_off + b * hs;
        for (var k = 0u; k < hs; k++) {
            let hp = state_in[sb + k];
            ai += w[wi + k] * hp;
            af += w[wf + k] * hp;
            ag += w[wg + k] * hp;
            ao += w[wo + k] * hp;
        }
        hp_j = state_in[sb + j];
        c_prev = state_in[p.state_stride + sb + j];
    } else {
        var tp = t - 1u;
        if p.reverse != 0u {
            tp = t + 1u;
        }
        let ob = (tp * p.batch + b) * p.out_stride + p.out_col;
        for (var k = 0u; k < hs; k++) {
            let hp = out[ob + k];
            ai += w[wi + k] * hp;
            af += w[wf + k] * hp;
            ag += w[wg + k] * hp;
            ao += w[wo + k] * hp;
        }
        hp_j = out[ob + j];
        c_prev = cache[c_base + (tp * p.batch + b) * hs + j];
    }
    let i = sigmoid(ai);
    let f = sigmoid(af);
    let g = tanh_s(ag);
    let o = sigmoid(ao);
    let c = f * c_prev + i * g;
    let h = o * tanh_s(c);
    out[row * p.out_stride + p.out_col + j] = h;
    let gb = p.cache_off + row * 4u * hs;
    cache[gb + j] = i;
    cache[gb + hs + j] = f;
    cache[gb + 2u * hs + j] = g;
    cache[gb + 3u * hs + j] = o;
    cache[c_base + row * hs + j] = c;
    cache[c_base + p.seq * p.batch * hs + row * hs + j] = hp_j;
    if s + 1u == len {
        let sb = p.state_off + b * hs + j;
        state_out[sb] = h;
        state_out[p.state_stride + sb] = c;
    }
}

// Backward bindings (w, state_in, lengths and cache are shared with forward;
// cache is only read here).
@group(0) @binding(8) var<storage, read> dy: array<f32>;
@group(0) @binding(9) var<storage, read> gstate_in: array<f32>;
@group(0) @binding(10) var<storage, read_write> dg: array<f32>;
@group(0) @binding(11) var<storage, read_write> gstate_out: array<f32>;

// dh_prev[j] = sum_k dgates[row, k] * W_hh[k, j]: the recurrent gradient
// flowing from the gates at `row` back into h_{t-1}.
fn dh_through_whh(row: u32, j: u32) -> f32 {
    let hs = p.h;
    let base = p.dg_off + row * 4u * hs;
    var acc = 0.0;
    for (var k = 0u; k < 4u * hs; k++) {
        acc += dg[base + k] * w[p.whh_off + k * hs + j];
    }
    return acc;
}

// One backward step s (called for s = T-1 down to 0). Each invocation owns
// one (b, j): it pulls the recurrent gradients of step s+1 (already
// complete, written by the previous dispatch) and emits the four gate
// gradients and dc of step s. Padded steps write nothing: their dgates stay
// at the zero the buffer was cleared to.
@compute @workgroup_size(64)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = lane(gid, nwg);
    let hs = p.h;
    if idx >= p.batch * hs {
        return;
    }
    let b = idx / hs;
    let j = idx % hs;
    let len = lengths[b];
    let s = p.step;
    if s >= len {
        return;
    }
    let t = time_of(s, len);
    let row = t * p.batch + b;
    let gates_len = p.seq * p.batch * 4u * hs;
    let c_base = p.cache_off + gates_len;
    let dc_base = p.dg_off + gates_len;
    var dh_rec: f32;
    var dc_rec: f32;
    if s + 1u < len {
        let row1 = time_of(s + 1u, len) * p.batch + b;
        dh_rec = dh_through_whh(row1, j);
        dc_rec = dg[dc_base + row1 * hs + j] * cache[p.cache_off + row1 * 4u * hs + hs + j];
    } else {
        let sb = p.state_off + b * hs + j;
        dh_rec = gstate_in[sb];
        dc_rec = gstate_in[p.state_stride + sb];
    }
    let dh = dy[row * p.out_stride + p.out_col + j] + dh_rec;
    let gb = p.cache_off + row * 4u * hs;
    let i = cache[gb + j];
    let f = cache[gb + hs + j];
    let g = cache[gb + 2u * hs + j];
    let o = cache[gb + 3u * hs + j];
    let tc = tanh_s(cache[c_base + row * hs + j]);
    var c_prev: f32;
    if s == 0u {
        c_prev = state_in[p.state_stride + p.state_off + b * hs + j];
    } else {
        let rowp = time_of(s - 1u, len) * p.batch + b;
        c_prev = cache[c_base + rowp * hs + j];
    }
    let dc = dh * o * (1.0 - tc * tc) + dc_rec;
    let d_o = dh * tc;
    let db = p.dg_off + row * 4u * hs;
    dg[db + j] = dc * g * i * (1.0 - i);
    dg[db + hs + j] = dc * c_prev * f * (1.0 - f);
    dg[db + 2u * hs + j] = dc * i * (1.0 - g * g);
    dg[db + 3u * hs + j] = d_o * o * (1.0 - o);
    dg[dc_base + row * hs + j] = dc;
}

// Gradients of the initial state after step 0: grad_h0 = dgates_0 * W_hh,
// grad_c0 = dc_0 * f_0.
@compute @workgroup_size(64)
fn backward_state(@builtin(global_invocation_id) gid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = lane(gid, nwg);
    let hs = p.h;
    if idx >= p.batch * hs {
        return;
    }
    let b = idx / hs;
    let j = idx % hs;
    let len = lengths[b];
    let row = time_of(0u, len) * p.batch + b;
    let gates_len = p.seq * p.batch * 4u * hs;
    let sb = p.state_off + b * hs + j;
    gstate_out[sb] = dh_through_whh(row, j);
    gstate_out[p.state_stride + sb] =
        dg[p.dg_off + gates_len + row * hs + j] * cache[p.cache_off + row * 4u * hs + hs + j];
}
