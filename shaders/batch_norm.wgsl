// BatchNorm between LSTM layers over the rows of a time-major [T, B, F]
// buffer, forward and backward. Row (t, b) is valid iff t < lengths[b].
// Statistics are taken per (group, feature) over the valid rows of a group:
//   sequence-wise (variant 3): one group, all valid rows (G = 1);
//   per-timestep (variant 4):  group t = valid rows at time t (G = T).
// Padded rows are written as 0 and contribute nothing to statistics or
// parameter gradients.
//
// Running statistics (rm at rm_off, rv at rv_off, each [run_rows, F]): row
// g in per-timestep train mode, min(t0 + g, run_rows - 1) in per-timestep
// eval mode (t0: the stream position of step 0), row 0 sequence-wise. Train mode updates them in place (momentum 0.1,
// unbiased variance) for groups with N >= 2; groups with N < 2 must be
// rejected by the host before dispatch (PyTorch raises), the kernel only
// keeps them finite.
//
// Saved statistics, per group g (base = stats_off + 6 g F), per feature j:
//   base + j       mean m (train: f32 batch mean; eval: running mean)
//   base + F + j   rstd = 1 / sqrt(var + eps)
//   base + 2F + j  N, the group's number of valid rows (as f32)
//   base + 3F + j  c, residual of the rounded mean: mean(x - m) (0 in eval)
//   base + 4F + j  sum of dy            (written by backward_sums)
//   base + 5F + j  sum of dy * xhat     (written by backward_sums)
// xhat = ((x - m) - c) * rstd. The residual c keeps sum(xhat) = 0 to f32
// precision even when the group's spread is tiny against its mean (for
// N = 2, x - m is exact): without it the rounding of m, amplified by rstd,
// dominates dx, which is a small difference of large terms.
//
// Every reduction is a fixed-order loop in one invocation: deterministic.
// Each invocation reads and writes only its own elements, so y may alias x
// and dx may alias dy (same buffer, same offset).

// The uniform block and bindings 0 to 5: common/norm_bindings.wgsl.

const PER_STEP: u32 = 1u;
const TRAIN: u32 = 2u;
const ACCUMULATE: u32 = 4u;
const EPS: f32 = 1e-5;
const MOMENTUM: f32 = 0.1;

@group(0) @binding(6) var<storage, read_write> running: array<f32>;
@group(0) @binding(7) var<storage, read_write> dy: array<f32>;
@group(0) @binding(8) var<storage, read_write> dx: array<f32>;
@group(0) @binding(9) var<storage, read_write> grads: array<f32>;

fn per_step() -> bool {
    return (p.flags & PER_STEP) != 0u;
}

fn groups() -> u32 {
    return select(1u, p.seq, per_step());
}

// Time range [first, last) of group g.
fn t_first(g: u32) -> u32 {
    return select(0u, g, per_step());
}

fn t_last(g: u32) -> u32 {
    return select(p.seq, g + 1u, per_step());
}

fn stats_base(g: u32) -> u32 {
    return p.stats_off + 6u * g * p.f;
}

// One invocation per (group, feature): statistics, running-stat update,
// normalization of the group's column.
@compute @workgroup_size(64)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = global_index(gid, nwg, 64u);
    if idx >= groups() * p.f {
        return;
    }
    let g = idx / p.f;
    let j = idx % p.f;
    let t0 = t_first(g);
    let t1 = t_last(g);
    var n = 0u;
    var sum = 0.0;
    for (var t = t0; t < t1; t++) {
        for (var b = 0u; b < p.batch; b++) {
            if t < lengths[b] {
                sum += x[p.x_off + (t * p.batch + b) * p.f + j];
                n += 1u;
            }
        }
    }
    var mean: f32;
    var c = 0.0;
    var rstd: f32;
    if (p.flags & TRAIN) != 0u {
        let nf = f32(n);
        let nd = max(nf, 1.0);
        mean = sum / nd;
        var sd = 0.0;
        var q = 0.0;
        for (var t = t0; t < t1; t++) {
            for (var b = 0u; b < p.batch; b++) {
                if t < lengths[b] {
                    let d = x[p.x_off + (t * p.batch + b) * p.f + j] - mean;
                    sd += d;
                    q += d * d;
                }
            }
        }
        c = sd / nd;
        let var_b = max(q / nd - c * c, 0.0);
        rstd = 1.0 / sqrt(var_b + EPS);
        if n >= 2u {
            let r = select(0u, g, per_step()) * p.f + j;
            let rm = p.rm_off + r;
            let rv = p.rv_off + r;
            running[rm] = (1.0 - MOMENTUM) * running[rm] + MOMENTUM * (mean + c);
            running[rv] = (1.0 - MOMENTUM) * running[rv] + MOMENTUM * var_b * nf / (nf - 1.0);
        }
    } else {
        let r = select(0u, min(p.t0 + g, p.run_rows - 1u), per_step()) * p.f + j;
        mean = running[p.rm_off + r];
        rstd = 1.0 / sqrt(running[p.rv_off + r] + EPS);
    }
    let base = stats_base(g);
    stats[base + j] = mean;
    stats[base + p.f + j] = rstd;
    stats[base + 2u * p.f + j] = f32(n);
    stats[base + 3u * p.f + j] = c;
    let w = prm[p.w_off + j];
    let bias = prm[p.b_off + j];
    for (var t = t0; t < t1; t++) {
        for (var b = 0u; b < p.batch; b++) {
            let row = t * p.batch + b;
            var v = 0.0;
            if t < lengths[b] {
                v = ((x[p.x_off + row * p.f + j] - mean) - c) * rstd * w + bias;
            }
            y[p.y_off + row * p.f + j] = v;
        }
    }
}

// One invocation per (group, feature): sum of dy and of dy * xhat over the
// group's valid rows (train and eval).
@compute @workgroup_size(64)
fn backward_sums(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = global_index(gid, nwg, 64u);
    if idx >= groups() * p.f {
        return;
    }
    let g = idx / p.f;
    let j = idx % p.f;
    let base = stats_base(g);
    let mean = stats[base + j];
    let rstd = stats[base + p.f + j];
    let c = stats[base + 3u * p.f + j];
    var s1 = 0.0;
    var s2 = 0.0;
    for (var t = t_first(g); t < t_last(g); t++) {
        for (var b = 0u; b < p.batch; b++) {
            if t < lengths[b] {
                let row = t * p.batch + b;
                let d = dy[p.dy_off + row * p.f + j];
                s1 += d;
                s2 += d * ((x[p.x_off + row * p.f + j] - mean) - c) * rstd;
            }
        }
    }
    stats[base + 4u * p.f + j] = s1;
    stats[base + 5u * p.f + j] = s2;
}

// One invocation per element: dx. Train:
//   dx = (w rstd / N) (N dy - sum(dy) - xhat sum(dy xhat));
// eval: dx = dy w rstd. Invocations j < F also write dw[j], db[j] as sums
// over the groups, in order.
@compute @workgroup_size(64)
fn backward_dx(@builtin(global_invocation_id) gid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = global_index(gid, nwg, 64u);
    if idx >= p.seq * p.batch * p.f {
        return;
    }
    let row = idx / p.f;
    let j = idx % p.f;
    let t = row / p.batch;
    let b = row % p.batch;
    var v = 0.0;
    if t < lengths[b] {
        let base = stats_base(select(0u, t, per_step()));
        let rstd = stats[base + p.f + j];
        let w = prm[p.w_off + j];
        let d = dy[p.dy_off + idx];
        if (p.flags & TRAIN) != 0u {
            let mean = stats[base + j];
            let n = stats[base + 2u * p.f + j];
            let xhat = ((x[p.x_off + idx] - mean) - stats[base + 3u * p.f + j]) * rstd;
            let s1 = stats[base + 4u * p.f + j];
            let s2 = stats[base + 5u * p.f + j];
            v = w * rstd * (d - (s1 + xhat * s2) / n);
        } else {
            v = d * w * rstd;
        }
    }
    dx[p.dx_off + idx] = v;
    if idx < p.f {
        var sw = 0.0;
        var sb = 0.0;
        for (var g = 0u; g < groups(); g++) {
            let base = stats_base(g);
            sb += stats[base + 4u * p.f + idx];
            sw += stats[base + 5u * p.f + idx];
        }
        if (p.flags & ACCUMULATE) != 0u {
            sw += grads[p.dw_off + idx];
            sb += grads[p.db_off + idx];
        }
        grads[p.dw_off + idx] = sw;
        grads[p.db_off + idx] = sb;
    }
}
