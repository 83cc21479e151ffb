// LayerNorm LSTM cell (Ba et al. 2016), one dispatch per (layer, direction,
// step), one workgroup per sequence b:
//   gates = LN_ih(W_ih x_t) + LN_hh(W_hh h_{t-1}) + b_ih + b_hh   (LN over 4H)
//   c_t = f*c_{t-1} + i*g ;  h_t = o * tanh(LN_c(c_t))             (LN over H)
// Reductions run in workgroup memory in a fixed order (deterministic).
//
// Cache block (after the sections of common/norm_cell.wgsl): rstd [T*B, 4]
// (ih, hh, c, -).

fn sec_rs() -> u32 { return p.cache_off + tb() * (3u * G + 3u) * p.h; }

// The step of this workgroup's sequence b: its length, time and row; len 0
// when b is past the batch or its sequence ended before the step.
struct SeqStep {
    b: u32,
    len: u32,
    t: u32,
    row: u32,
}

fn seq_step(grid: Grid) -> SeqStep {
    var q = SeqStep(group_of(grid), 0u, 0u, 0u);
    if q.b < p.batch {
        let len = lengths[q.b];
        if p.step < len {
            q.len = len;
            q.t = time_of(p.step, len, p.reverse);
            q.row = q.t * p.batch + q.b;
        }
    }
    return q;
}

@compute @workgroup_size(64)
fn forward(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let q = seq_step(grid);
    if q.len == 0u {
        return;
    }
    let tp = prev_time(q.t, p.reverse);
    let row = q.row;
    let s = p.step;
    let hs = loop_h(q.len);
    let h4 = G * hs;
    let sb = p.state_off + q.b * hs;
    let ob = (tp * p.batch + q.b) * p.out_stride + p.out_col;
    // Raw recurrent and input parts, kept in the x-hat slots until normalized.
    var sum = vec4<f32>(0.0);
    for (var k = lid; k < h4; k += WG) {
        var r = 0.0;
        let wr = p.whh_off + k * hs;
        if s == 0u {
            for (var j = 0u; j < hs; j++) {
                r += w[wr + j] * state_in[sb + j];
            }
        } else {
            for (var j = 0u; j < hs; j++) {
                r += w[wr + j] * out[ob + j];
            }
        }
        let x = pre[p.pre_off + row * h4 + k];
        cache[sec_xh() + row * h4 + k] = r;
        cache[sec_xi() + row * h4 + k] = x;
        sum += vec4<f32>(r, x, 0.0, 0.0);
    }
    let mean = wg_sum(lid, sum) / f32(h4);
    var sq = vec4<f32>(0.0);
    for (var k = lid; k < h4; k += WG) {
        let dr = cache[sec_xh() + row * h4 + k] - mean.x;
        let dx = cache[sec_xi() + row * h4 + k] - mean.y;
        sq += vec4<f32>(dr * dr, dx * dx, 0.0, 0.0);
    }
    let rs = inverseSqrt(wg_sum(lid, sq) / f32(h4) + vec4<f32>(EPS));
    for (var k = lid; k < h4; k += WG) {
        let xh = (cache[sec_xh() + row * h4 + k] - mean.x) * rs.x;
        let xi = (cache[sec_xi() + row * h4 + k] - mean.y) * rs.y;
        cache[sec_xh() + row * h4 + k] = xh;
        cache[sec_xi() + row * h4 + k] = xi;
        var a = xh * w[p.nw_hh + k] + w[p.nb_hh + k] + xi * w[p.nw_ih + k] + w[p.nb_ih + k];
        if p.has_bias != 0u {
            a += w[p.bih_off + k] + w[p.bhh_off + k];
        }
        cache[p.cache_off + row * h4 + k] = a;
    }
    if lid == 0u {
        cache[sec_rs() + row * 4u] = rs.y;
        cache[sec_rs() + row * 4u + 1u] = rs.x;
    }
    storageBarrier();
    workgroupBarrier();
    var csum = vec4<f32>(0.0);
    let gb = p.cache_off + row * h4;
    for (var j = lid; j < hs; j += WG) {
        var a: Gates;
        for (var q = 0u; q < CELL_GATES; q++) {
            a[q] = cache[gb + q * hs + j];
        }
        let act = lstm_act(a);
        var c_prev: f32;
        var hp: f32;
        if s == 0u {
            c_prev = state_in[p.state_stride + sb + j];
            hp = state_in[sb + j];
        } else {
            c_prev = cache[sec_c() + (tp * p.batch + q.b) * hs + j];
            hp = out[ob + j];
        }
        let c = lstm_c(act, c_prev);
        for (var q = 0u; q < CELL_GATES; q++) {
            cache[gb + q * hs + j] = act[q];
        }
        cache[sec_c() + row * hs + j] = c;
        cache[sec_hp() + row * hs + j] = hp;
        csum.x += c;
    }
    let cmean = wg_sum(lid, csum).x / f32(hs);
    var csq = vec4<f32>(0.0);
    for (var j = lid; j < hs; j += WG) {
        let d = cache[sec_c() + row * hs + j] - cmean;
        csq.x += d * d;
    }
    let crs = inverseSqrt(wg_sum(lid, csq).x / f32(hs) + EPS);
    for (var j = lid; j < hs; j += WG) {
        let c = cache[sec_c() + row * hs + j];
        let xc = (c - cmean) * crs;
        cache[sec_xc() + row * hs + j] = xc;
        let hv = cache[gb + 3u * hs + j] * tanh_clamped(xc * w[p.nw_c + j] + w[p.nb_c + j]);
        out[row * p.out_stride + p.out_col + j] = hv;
        if s + 1u == q.len {
            state_out[sb + j] = hv;
            state_out[p.state_stride + sb + j] = c;
        }
    }
    if lid == 0u {
        cache[sec_rs() + row * 4u + 2u] = crs;
    }
}

// Backward step s (run for s = T-1 down to 0), one workgroup per sequence.
@compute @workgroup_size(64)
fn backward(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let q = seq_step(grid);
    if q.len == 0u {
        return;
    }
    let row = q.row;
    let s = p.step;
    let hs = loop_h(q.len);
    let h4 = G * hs;
    let gb = p.cache_off + row * h4;
    // Through h = o * tanh(LN_c(c)).
    var acc = vec4<f32>(0.0);
    for (var j = lid; j < hs; j += WG) {
        let rec = recurrent_grads(q.b, j, s, q.len);
        let dh = dy[row * p.out_stride + p.out_col + j] + rec.x;
        let o = cache[gb + 3u * hs + j];
        let xc = cache[sec_xc() + row * hs + j];
        let wc = w[p.nw_c + j];
        let th = tanh_clamped(xc * wc + w[p.nb_c + j]);
        let dhc = lstm_dtanh(dh, o, th);
        dg[g_dhc() + row * hs + j] = dhc;
        dg[g_dc() + row * hs + j] = rec.y;
        dg[p.dg_off + row * h4 + 3u * hs + j] = lstm_d_o(o, dh * th);
        acc += vec4<f32>(dhc * wc, dhc * wc * xc, 0.0, 0.0);
    }
    let m = wg_sum(lid, acc) / f32(hs);
    let crs = cache[sec_rs() + row * 4u + 2u];
    for (var j = lid; j < hs; j += WG) {
        let xc = cache[sec_xc() + row * hs + j];
        let dhc = dg[g_dhc() + row * hs + j];
        let dc = crs * (dhc * w[p.nw_c + j] - m.x - xc * m.y) + dg[g_dc() + row * hs + j];
        dg[g_dc() + row * hs + j] = dc;
        let act = vec4<f32>(cache[gb + j], cache[gb + hs + j], cache[gb + 2u * hs + j], 0.0);
        let d = lstm_d_ifg(act, dc, prev_c(q.b, j, s, q.len));
        let db = p.dg_off + row * h4;
        for (var q = 0u; q < 3u; q++) {
            dg[db + q * hs + j] = d[q];
        }
    }
    storageBarrier();
    workgroupBarrier();
    // Through the two LayerNorms over 4H.
    var acc2 = vec4<f32>(0.0);
    for (var k = lid; k < h4; k += WG) {
        let da = dg[p.dg_off + row * h4 + k];
        let ah = da * w[p.nw_hh + k];
        let ai = da * w[p.nw_ih + k];
        acc2 += vec4<f32>(ah, ah * cache[sec_xh() + row * h4 + k], ai, ai * cache[sec_xi() + row * h4 + k]);
    }
    let m2 = wg_sum(lid, acc2) / f32(h4);
    let rs_ih = cache[sec_rs() + row * 4u];
    let rs_hh = cache[sec_rs() + row * 4u + 1u];
    for (var k = lid; k < h4; k += WG) {
        let da = dg[p.dg_off + row * h4 + k];
        let xh = cache[sec_xh() + row * h4 + k];
        let xi = cache[sec_xi() + row * h4 + k];
        dg[g_dr() + row * h4 + k] = rs_hh * (da * w[p.nw_hh + k] - m2.x - xh * m2.y);
        dg[g_dp() + row * h4 + k] = rs_ih * (da * w[p.nw_ih + k] - m2.z - xi * m2.w);
    }
}
