// LayerNorm over the F features of each row of a time-major [T, B, F]
// buffer (variant 1: between LSTM layers), forward and backward.
//
// Row (t, b) is valid iff t0 + t < lengths[b]: a dispatch may cover the
// steps [t0, t0 + seq) of a longer sequence (the host offsets every view),
// as the wavefront does chunk by chunk. Padded rows are written as 0 (y,
// dx, saved stats) and contribute nothing to dw / db.
//
// Saved statistics, per row: stats[stats_off + 2 row] = mean,
// stats[stats_off + 2 row + 1] = rstd = 1 / sqrt(var + eps) (biased var).
//
// forward / backward_dx: one 64-wide workgroup per row; each invocation
// accumulates a strided slice of the features in a fixed order, then a
// fixed shared-memory tree adds the 64 partial sums, so results are
// deterministic. An invocation reads and writes only its own features of
// the row, so y may alias x and dx may alias dy (same buffer, same offset).
// backward_params: 16 features x 16 row slices per workgroup (see there);
// it reads dy, so it must run before an in-place backward_dx.

// The uniform block and bindings 0 to 5: common/norm_bindings.wgsl.

const ACCUMULATE: u32 = 1u;
const EPS: f32 = 1e-5;
const WG: u32 = 64u;

@group(0) @binding(6) var<storage, read_write> dy: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx: array<f32>;
@group(0) @binding(8) var<storage, read_write> grads: array<f32>;

// `red` and `tree`: common/tree.wgsl.
const RED_LEN: u32 = WG;

fn row_valid(row: u32) -> bool {
    return p.t0 + row / p.batch < lengths[row % p.batch];
}

@compute @workgroup_size(64)
fn forward(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let row = group_of(grid);
    if row >= p.seq * p.batch {
        return;
    }
    let valid = row_valid(row);
    let xb = p.x_off + row * p.f;
    let yb = p.y_off + row * p.f;
    let nf = f32(p.f);
    var s = 0.0;
    for (var j = lid; j < p.f; j += WG) {
        s += x[xb + j];
    }
    let mean = tree(s, lid, WG, false) / nf;
    var q = 0.0;
    for (var j = lid; j < p.f; j += WG) {
        let d = x[xb + j] - mean;
        q += d * d;
    }
    let rstd = 1.0 / sqrt(tree(q, lid, WG, false) / nf + EPS);
    for (var j = lid; j < p.f; j += WG) {
        let v = (x[xb + j] - mean) * rstd * prm[p.w_off + j] + prm[p.b_off + j];
        y[yb + j] = select(0.0, v, valid);
    }
    if lid == 0u {
        stats[p.stats_off + 2u * row] = select(0.0, mean, valid);
        stats[p.stats_off + 2u * row + 1u] = select(0.0, rstd, valid);
    }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w.
@compute @workgroup_size(64)
fn backward_dx(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let row = group_of(grid);
    if row >= p.seq * p.batch {
        return;
    }
    let valid = row_valid(row);
    let xb = p.x_off + row * p.f;
    let db = p.dy_off + row * p.f;
    let mean = stats[p.stats_off + 2u * row];
    let rstd = stats[p.stats_off + 2u * row + 1u];
    var s1 = 0.0;
    var s2 = 0.0;
    for (var j = lid; j < p.f; j += WG) {
        let g = dy[db + j] * prm[p.w_off + j];
        s1 += g;
        s2 += g * (x[xb + j] - mean) * rstd;
    }
    let nf = f32(p.f);
    let m1 = tree(s1, lid, WG, false) / nf;
    let m2 = tree(s2, lid, WG, false) / nf;
    let ob = p.dx_off + row * p.f;
    for (var j = lid; j < p.f; j += WG) {
        let g = dy[db + j] * prm[p.w_off + j];
        let xhat = (x[xb + j] - mean) * rstd;
        dx[ob + j] = select(0.0, rstd * (g - m1 - xhat * m2), valid);
    }
}

// dw[j] = sum over valid rows of dy * xhat, db[j] = sum of dy. A workgroup
// owns PC features; its PS row slices each sum every PS-th row in order,
// then slice 0 adds the PS partials in slice order (deterministic). One
// invocation per feature left a GPU nearly idle: 4 workgroups for F = 256.
const PC: u32 = 16u;
const PS: u32 = 16u;
var<workgroup> part_w: array<f32, 256>;
var<workgroup> part_b: array<f32, 256>;

@compute @workgroup_size(16, 16)
fn backward_params(@builtin(local_invocation_id) lid: vec3<u32>,
                   @builtin(workgroup_id) wid: vec3<u32>) {
    let j = wid.x * PC + lid.x;
    let ok = j < p.f;
    var sw = 0.0;
    var sb = 0.0;
    let rows = p.seq * p.batch;
    for (var row = lid.y; row < rows; row += PS) {
        let t = row / p.batch;
        let b = row % p.batch;
        if ok && p.t0 + t < lengths[b] {
            let d = dy[p.dy_off + row * p.f + j];
            let mean = stats[p.stats_off + 2u * row];
            let rstd = stats[p.stats_off + 2u * row + 1u];
            sw += d * (x[p.x_off + row * p.f + j] - mean) * rstd;
            sb += d;
        }
    }
    part_w[lid.y * PC + lid.x] = sw;
    part_b[lid.y * PC + lid.x] = sb;
    workgroupBarrier();
    if lid.y != 0u || !ok {
        return;
    }
    sw = 0.0;
    sb = 0.0;
    for (var q = 0u; q < PS; q++) {
        sw += part_w[q * PC + lid.x];
        sb += part_b[q * PC + lid.x];
    }
    if (p.flags & ACCUMULATE) != 0u {
        sw += grads[p.dw_off + j];
        sb += grads[p.db_off + j];
    }
    grads[p.dw_off + j] = sw;
    grads[p.db_off + j] = sb;
}
