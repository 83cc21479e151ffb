// Recurrent BatchNorm LSTM cell (Cooijmans et al. 2016), one dispatch per
// (layer, direction, step), one workgroup per hidden unit j with the batch
// spread over its invocations, so the per-step batch statistics of the four
// gate rows j, H+j, 2H+j, 3H+j and of c_j are workgroup reductions:
//   gates = BN_hh(W_hh h_{t-1}; g_h) + BN_ih(W_ih x_t; g_x) + b_ih + b_hh  (no shift)
//   c_t = f*c_{t-1} + i*g ;  h_t = o * tanh(BN_c(c_t; g_c, b_c))
// Statistics are per step s over the sequences active at s (s < len_b);
// train mode updates running statistics row s, eval mode reads row
// min(t0 + s, T_max - 1), t0 the stream position of step 0. Fixed-order reductions: deterministic.
//
// Cache block (after the sections of common/norm_cell.wgsl): (4, unused)
// [T*B, 4], then per-step statistics rstd_ih [T, 4H] | rstd_hh [T, 4H] |
// rstd_c [T, H].

@group(0) @binding(12) var<storage, read_write> stats: array<f32>;

const MOMENTUM: f32 = 0.1;

// The gates use the prelude's accurate sigmoid_acc and tanh_acc: see there
// why the built-ins are not enough here.

fn st_ih() -> u32 { return p.cache_off + tb() * ((3u * G + 3u) * p.h + 4u); }
fn st_hh() -> u32 { return st_ih() + p.seq * G * p.h; }
fn st_c() -> u32 { return st_hh() + p.seq * G * p.h; }

fn gate_idx(j: u32) -> vec4<u32> {
    return vec4<u32>(j, p.h + j, 2u * p.h + j, 3u * p.h + j);
}

// Sequences active at step s.
fn active_count(s: u32) -> u32 {
    var n = 0u;
    for (var b = 0u; b < p.batch; b++) {
        if s < lengths[b] {
            n += 1u;
        }
    }
    return n;
}

// Running-statistics row used at step s.
fn stat_row(s: u32) -> u32 {
    if p.train != 0u {
        return s;
    }
    return min(p.t0 + s, p.t_max - 1u);
}

@compute @workgroup_size(64)
fn forward(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let j = group_of(grid);
    if j >= p.h {
        return;
    }
    let hs = p.h;
    let h4 = G * hs;
    let s = p.step;
    let n = active_count(s);
    if n == 0u {
        return;
    }
    let kk = gate_idx(j);
    // Raw recurrent (r) and input (x) parts of the four gate rows of unit j.
    var sr = vec4<f32>(0.0);
    var sx = vec4<f32>(0.0);
    for (var b = lid; b < p.batch; b += WG) {
        let len = lengths[b];
        if s >= len {
            continue;
        }
        let t = time_of(s, len, p.reverse);
        let row = t * p.batch + b;
        var r = vec4<f32>(0.0);
        if s == 0u {
            let sb = p.state_off + b * hs;
            for (var i = 0u; i < hs; i++) {
                let hp = state_in[sb + i];
                r += vec4<f32>(w[p.whh_off + kk.x * hs + i], w[p.whh_off + kk.y * hs + i],
                               w[p.whh_off + kk.z * hs + i], w[p.whh_off + kk.w * hs + i]) * hp;
            }
        } else {
            let tp = time_of(s - 1u, len, p.reverse);
            let ob = (tp * p.batch + b) * p.out_stride + p.out_col;
            for (var i = 0u; i < hs; i++) {
                let hp = out[ob + i];
                r += vec4<f32>(w[p.whh_off + kk.x * hs + i], w[p.whh_off + kk.y * hs + i],
                               w[p.whh_off + kk.z * hs + i], w[p.whh_off + kk.w * hs + i]) * hp;
            }
        }
        let pb = p.pre_off + row * h4;
        let x = vec4<f32>(pre[pb + kk.x], pre[pb + kk.y], pre[pb + kk.z], pre[pb + kk.w]);
        for (var q = 0u; q < 4u; q++) {
            cache[sec_xh() + row * h4 + kk[q]] = r[q];
            cache[sec_xi() + row * h4 + kk[q]] = x[q];
        }
        sr += r;
        sx += x;
    }
    var mean_r: vec4<f32>;
    var mean_x: vec4<f32>;
    var var_r: vec4<f32>;
    var var_x: vec4<f32>;
    let rrow = stat_row(s);
    if p.train != 0u {
        let m = wg_sum3(lid, sr, sx, vec4<f32>(0.0));
        mean_r = m[0] / f32(n);
        mean_x = m[1] / f32(n);
        // Corrected two-pass: the mean's f32 rounding (amplified by rstd when
        // few sequences are active) is measured and removed.
        var qr = vec4<f32>(0.0);
        var qx = vec4<f32>(0.0);
        var er = vec4<f32>(0.0);
        var ex = vec4<f32>(0.0);
        for (var b = lid; b < p.batch; b += WG) {
            let len = lengths[b];
            if s >= len {
                continue;
            }
            let row = time_of(s, len, p.reverse) * p.batch + b;
            for (var q = 0u; q < 4u; q++) {
                let dr = cache[sec_xh() + row * h4 + kk[q]] - mean_r[q];
                let dx = cache[sec_xi() + row * h4 + kk[q]] - mean_x[q];
                qr[q] += dr * dr;
                qx[q] += dx * dx;
                er[q] += dr;
                ex[q] += dx;
            }
        }
        let v = wg_sum4(lid, qr, qx, er, ex);
        let cr = v[2] / f32(n);
        let cx = v[3] / f32(n);
        var_r = max(v[0] / f32(n) - cr * cr, vec4<f32>(0.0));
        var_x = max(v[1] / f32(n) - cx * cx, vec4<f32>(0.0));
        mean_r += cr;
        mean_x += cx;
        if lid == 0u {
            let unb = f32(n) / f32(max(n, 2u) - 1u);
            for (var q = 0u; q < 4u; q++) {
                let o = rrow * h4 + kk[q];
                stats[p.rm_hh + o] = (1.0 - MOMENTUM) * stats[p.rm_hh + o] + MOMENTUM * mean_r[q];
                stats[p.rv_hh + o] = (1.0 - MOMENTUM) * stats[p.rv_hh + o] + MOMENTUM * var_r[q] * unb;
                stats[p.rm_ih + o] = (1.0 - MOMENTUM) * stats[p.rm_ih + o] + MOMENTUM * mean_x[q];
                stats[p.rv_ih + o] = (1.0 - MOMENTUM) * stats[p.rv_ih + o] + MOMENTUM * var_x[q] * unb;
            }
        }
    } else {
        for (var q = 0u; q < 4u; q++) {
            let o = rrow * h4 + kk[q];
            mean_r[q] = stats[p.rm_hh + o];
            var_r[q] = stats[p.rv_hh + o];
            mean_x[q] = stats[p.rm_ih + o];
            var_x[q] = stats[p.rv_ih + o];
        }
    }
    let rs_r = inverseSqrt(var_r + vec4<f32>(EPS));
    let rs_x = inverseSqrt(var_x + vec4<f32>(EPS));
    if lid == 0u {
        for (var q = 0u; q < 4u; q++) {
            cache[st_hh() + s * h4 + kk[q]] = rs_r[q];
            cache[st_ih() + s * h4 + kk[q]] = rs_x[q];
        }
    }
    let gh = vec4<f32>(w[p.nw_hh + kk.x], w[p.nw_hh + kk.y], w[p.nw_hh + kk.z], w[p.nw_hh + kk.w]);
    let gx = vec4<f32>(w[p.nw_ih + kk.x], w[p.nw_ih + kk.y], w[p.nw_ih + kk.z], w[p.nw_ih + kk.w]);
    var bias = vec4<f32>(0.0);
    if p.has_bias != 0u {
        for (var q = 0u; q < 4u; q++) {
            bias[q] = w[p.bih_off + kk[q]] + w[p.bhh_off + kk[q]];
        }
    }
    var sc = vec4<f32>(0.0);
    for (var b = lid; b < p.batch; b += WG) {
        let len = lengths[b];
        if s >= len {
            continue;
        }
        let t = time_of(s, len, p.reverse);
        let row = t * p.batch + b;
        var xh: vec4<f32>;
        var xi: vec4<f32>;
        for (var q = 0u; q < 4u; q++) {
            xh[q] = (cache[sec_xh() + row * h4 + kk[q]] - mean_r[q]) * rs_r[q];
            xi[q] = (cache[sec_xi() + row * h4 + kk[q]] - mean_x[q]) * rs_x[q];
            cache[sec_xh() + row * h4 + kk[q]] = xh[q];
            cache[sec_xi() + row * h4 + kk[q]] = xi[q];
        }
        let a = gh * xh + gx * xi + bias;
        let act = lstm_act_acc(a);
        var c_prev: f32;
        var hp: f32;
        let sb = p.state_off + b * hs;
        if s == 0u {
            c_prev = state_in[p.state_stride + sb + j];
            hp = state_in[sb + j];
        } else {
            let tp = time_of(s - 1u, len, p.reverse);
            c_prev = cache[sec_c() + (tp * p.batch + b) * hs + j];
            hp = out[(tp * p.batch + b) * p.out_stride + p.out_col + j];
        }
        let c = lstm_c(act, c_prev);
        let gb = p.cache_off + row * h4;
        for (var q = 0u; q < CELL_GATES; q++) {
            cache[gb + kk[q]] = act[q];
        }
        cache[sec_c() + row * hs + j] = c;
        cache[sec_hp() + row * hs + j] = hp;
        sc.x += c;
    }
    var mean_c: f32;
    var var_c: f32;
    if p.train != 0u {
        mean_c = wg_sum3(lid, sc, vec4<f32>(0.0), vec4<f32>(0.0))[0].x / f32(n);
        var qc = vec4<f32>(0.0);
        for (var b = lid; b < p.batch; b += WG) {
            let len = lengths[b];
            if s >= len {
                continue;
            }
            let d = cache[sec_c() + (time_of(s, len, p.reverse) * p.batch + b) * hs + j] - mean_c;
            qc += vec4<f32>(d * d, d, 0.0, 0.0);
        }
        let vc = wg_sum3(lid, qc, vec4<f32>(0.0), vec4<f32>(0.0))[0] / f32(n);
        var_c = max(vc.x - vc.y * vc.y, 0.0);
        mean_c += vc.y;
        if lid == 0u {
            let o = rrow * hs + j;
            let unb = f32(n) / f32(max(n, 2u) - 1u);
            stats[p.rm_c + o] = (1.0 - MOMENTUM) * stats[p.rm_c + o] + MOMENTUM * mean_c;
            stats[p.rv_c + o] = (1.0 - MOMENTUM) * stats[p.rv_c + o] + MOMENTUM * var_c * unb;
        }
    } else {
        mean_c = stats[p.rm_c + rrow * hs + j];
        var_c = stats[p.rv_c + rrow * hs + j];
    }
    let rs_c = inverseSqrt(var_c + EPS);
    if lid == 0u {
        cache[st_c() + s * hs + j] = rs_c;
    }
    let gc = w[p.nw_c + j];
    let bc = w[p.nb_c + j];
    for (var b = lid; b < p.batch; b += WG) {
        let len = lengths[b];
        if s >= len {
            continue;
        }
        let row = time_of(s, len, p.reverse) * p.batch + b;
        let c = cache[sec_c() + row * hs + j];
        let xc = (c - mean_c) * rs_c;
        cache[sec_xc() + row * hs + j] = xc;
        let hv = cache[p.cache_off + row * h4 + 3u * hs + j] * tanh_acc(gc * xc + bc);
        out[row * p.out_stride + p.out_col + j] = hv;
        if s + 1u == len {
            let sb = p.state_off + b * hs + j;
            state_out[sb] = hv;
            state_out[p.state_stride + sb] = c;
        }
    }
}

// Backward step s (run for s = T-1 down to 0), one workgroup per unit j.
@compute @workgroup_size(64)
fn backward(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let j = group_of(grid);
    if j >= p.h {
        return;
    }
    let hs = p.h;
    let h4 = G * hs;
    let s = p.step;
    let n = active_count(s);
    if n == 0u {
        return;
    }
    let kk = gate_idx(j);
    let gc = w[p.nw_c + j];
    let bc = w[p.nb_c + j];
    // Through h = o * tanh(BN_c(c)).
    var acc = vec4<f32>(0.0);
    for (var b = lid; b < p.batch; b += WG) {
        let len = lengths[b];
        if s >= len {
            continue;
        }
        let row = time_of(s, len, p.reverse) * p.batch + b;
        let rec = recurrent_grads(b, j, s, len);
        let dh = dy[row * p.out_stride + p.out_col + j] + rec.x;
        let o = cache[p.cache_off + row * h4 + 3u * hs + j];
        let xc = cache[sec_xc() + row * hs + j];
        let th = tanh_acc(gc * xc + bc);
        let dhc = lstm_dtanh(dh, o, th);
        dg[g_dhc() + row * hs + j] = dhc;
        dg[g_dc() + row * hs + j] = rec.y;
        dg[p.dg_off + row * h4 + kk.w] = lstm_d_o(o, dh * th);
        acc += vec4<f32>(dhc, dhc * xc, 0.0, 0.0);
    }
    var mc = vec4<f32>(0.0);
    if p.train != 0u {
        mc = wg_sum3(lid, acc, vec4<f32>(0.0), vec4<f32>(0.0))[0] / f32(n);
    }
    let rs_c = cache[st_c() + s * hs + j];
    var sa = vec4<f32>(0.0);
    var sah = vec4<f32>(0.0);
    var sai = vec4<f32>(0.0);
    for (var b = lid; b < p.batch; b += WG) {
        let len = lengths[b];
        if s >= len {
            continue;
        }
        let row = time_of(s, len, p.reverse) * p.batch + b;
        let xc = cache[sec_xc() + row * hs + j];
        let dhc = dg[g_dhc() + row * hs + j];
        let dc = gc * rs_c * (dhc - mc.x - xc * mc.y) + dg[g_dc() + row * hs + j];
        dg[g_dc() + row * hs + j] = dc;
        let gb = p.cache_off + row * h4;
        let act = vec4<f32>(cache[gb + kk.x], cache[gb + kk.y], cache[gb + kk.z], 0.0);
        let db = p.dg_off + row * h4;
        let da = vec4<f32>(lstm_d_ifg(act, dc, prev_c(b, j, s, len)), dg[db + kk.w]);
        dg[db + kk.x] = da.x;
        dg[db + kk.y] = da.y;
        dg[db + kk.z] = da.z;
        var xh: vec4<f32>;
        var xi: vec4<f32>;
        for (var q = 0u; q < 4u; q++) {
            xh[q] = cache[sec_xh() + row * h4 + kk[q]];
            xi[q] = cache[sec_xi() + row * h4 + kk[q]];
        }
        sa += da;
        sah += da * xh;
        sai += da * xi;
    }
    var ma = vec4<f32>(0.0);
    var mah = vec4<f32>(0.0);
    var mai = vec4<f32>(0.0);
    if p.train != 0u {
        let m = wg_sum3(lid, sa, sah, sai);
        ma = m[0] / f32(n);
        mah = m[1] / f32(n);
        mai = m[2] / f32(n);
    }
    var gh: vec4<f32>;
    var gx: vec4<f32>;
    var rs_h: vec4<f32>;
    var rs_x: vec4<f32>;
    for (var q = 0u; q < 4u; q++) {
        gh[q] = w[p.nw_hh + kk[q]];
        gx[q] = w[p.nw_ih + kk[q]];
        rs_h[q] = cache[st_hh() + s * h4 + kk[q]];
        rs_x[q] = cache[st_ih() + s * h4 + kk[q]];
    }
    for (var b = lid; b < p.batch; b += WG) {
        let len = lengths[b];
        if s >= len {
            continue;
        }
        let row = time_of(s, len, p.reverse) * p.batch + b;
        let db = p.dg_off + row * h4;
        for (var q = 0u; q < 4u; q++) {
            let da = dg[db + kk[q]];
            let xh = cache[sec_xh() + row * h4 + kk[q]];
            let xi = cache[sec_xi() + row * h4 + kk[q]];
            dg[g_dr() + row * h4 + kk[q]] = gh[q] * rs_h[q] * (da - ma[q] - xh * mah[q]);
            dg[g_dp() + row * h4 + kk[q]] = gx[q] * rs_x[q] * (da - ma[q] - xi * mai[q]);
        }
    }
}
