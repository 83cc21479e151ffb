// Losses of the trainer's heads, deterministic (no atomics, fixed-order
// reductions): softmax cross-entropy over classes and masked mean squared
// error, each as a per-row forward, a shared mean over rows, and an
// elementwise backward.
//
// Per-step storage buffer `step` (u32 words at step_off), written by the host
// before each submit so that the dispatches are reusable:
//   step[step_off]      count: CE: valid rows; MSE: valid rows · K
//   step[step_off + 1]  scale (f32 bits): gradient multiplier
// With count == 0 the loss and every gradient are 0.
//
// Scratch (f32 at rows_off): per-row losses [N] (CE: -log softmax(x)[t];
// MSE: Σ_k (p - t)² over the row), then for CE the row max [N] and the row
// Σ exp(x - max) [N] that the backward reuses. Ignored / masked rows: 0.
// Loss buffer (f32 at loss_off): [mean, sum] = [sum / count, Σ_r row loss].
//
// ce_forward, mse_forward: one 64-wide workgroup per row; each invocation
//   handles a strided slice of the row in order, then a fixed tree over the
//   workgroup: bit-identical results.
// mean: one 256-wide workgroup; invocation l adds rows l, l + 256, ... in
//   order, then a fixed tree.
// ce_backward, mse_backward: one invocation per element; dx may alias x.
//
// Cross-entropy: x = logits [N, V] (row stride V), labels = targets u32 [N],
// IGNORE (0xffffffff) or any target >= V marks an ignored row.
//   dlogits = (softmax(x) - onehot(t)) · scale / count
// MSE: x = pred [N, K], tgt = target [N, K], labels = mask u32 [N]
// (nonzero = valid row).
//   dpred = 2 (p - t) · scale / count

// struct Params: written into the source from its Rust declaration,
// LossUniform (src/kernels/loss.rs).

const WG: u32 = 64u;
const WG_MEAN: u32 = 256u;
const F32_LOWEST: f32 = -3.40282347e38;

@group(0) @binding(0) var<uniform> p: Params;
// CE targets or MSE row mask (u32).
@group(0) @binding(1) var<storage, read> labels: array<u32>;
// [count, scale bits].
@group(0) @binding(2) var<storage, read> step: array<u32>;
// Logits or predictions.
@group(0) @binding(3) var<storage, read_write> x: array<f32>;
// MSE targets.
@group(0) @binding(4) var<storage, read_write> tgt: array<f32>;
// Per-row losses (and CE row statistics).
@group(0) @binding(5) var<storage, read_write> scratch: array<f32>;
// [mean, sum].
@group(0) @binding(6) var<storage, read_write> loss: array<f32>;
// Gradient w.r.t. x.
@group(0) @binding(7) var<storage, read_write> dx: array<f32>;

// `red` and `tree`: common/tree.wgsl.
const RED_LEN: u32 = WG_MEAN;

// count > 0 ? scale / count : 0.
fn grad_coef() -> f32 {
    let count = step[p.step_off];
    let scale = bitcast<f32>(step[p.step_off + 1u]);
    return select(0.0, scale / f32(count), count > 0u);
}

@compute @workgroup_size(64)
fn ce_forward(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let row = group_of(grid);
    if row >= p.rows {
        return;
    }
    let base = p.x_off + row * p.cols;
    var m = F32_LOWEST;
    for (var j = lid; j < p.cols; j += WG) {
        m = max(m, x[base + j]);
    }
    m = tree(m, lid, WG, true);
    var s = 0.0;
    for (var j = lid; j < p.cols; j += WG) {
        s += exp(x[base + j] - m);
    }
    s = tree(s, lid, WG, false);
    if lid == 0u {
        let t = labels[p.labels_off + row];
        var l = 0.0;
        if t < p.cols {
            // -log(exp(x_t - m) / s), with x_t - m <= 0 and s >= 1.
            l = log(s) - (x[base + t] - m);
        }
        scratch[p.rows_off + row] = l;
        scratch[p.rows_off + p.rows + row] = m;
        scratch[p.rows_off + 2u * p.rows + row] = s;
    }
}

@compute @workgroup_size(64)
fn ce_backward(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = grid_index(grid, lid, WG);
    if i >= p.rows * p.cols {
        return;
    }
    let row = i / p.cols;
    let j = i % p.cols;
    let t = labels[p.labels_off + row];
    var d = 0.0;
    if t < p.cols {
        let m = scratch[p.rows_off + p.rows + row];
        let s = scratch[p.rows_off + 2u * p.rows + row];
        let sm = exp(x[p.x_off + i] - m) / s;
        d = (sm - select(0.0, 1.0, j == t)) * grad_coef();
    }
    dx[p.dx_off + i] = d;
}

@compute @workgroup_size(64)
fn mse_forward(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let row = group_of(grid);
    if row >= p.rows {
        return;
    }
    let xb = p.x_off + row * p.cols;
    let tb = p.tgt_off + row * p.cols;
    var s = 0.0;
    for (var j = lid; j < p.cols; j += WG) {
        let d = x[xb + j] - tgt[tb + j];
        s += d * d;
    }
    s = tree(s, lid, WG, false);
    if lid == 0u {
        scratch[p.rows_off + row] = select(0.0, s, labels[p.labels_off + row] != 0u);
    }
}

@compute @workgroup_size(64)
fn mse_backward(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = grid_index(grid, lid, WG);
    if i >= p.rows * p.cols {
        return;
    }
    let row = i / p.cols;
    var d = 0.0;
    if labels[p.labels_off + row] != 0u {
        d = 2.0 * (x[p.x_off + i] - tgt[p.tgt_off + i]) * grad_coef();
    }
    dx[p.dx_off + i] = d;
}

@compute @workgroup_size(256)
fn mean(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var r = lid; r < p.rows; r += WG_MEAN) {
        s += scratch[p.rows_off + r];
    }
    s = tree(s, lid, WG_MEAN, false);
    if lid == 0u {
        let count = step[p.step_off];
        loss[p.loss_off] = select(0.0, s / f32(count), count > 0u);
        loss[p.loss_off + 1u] = s;
    }
}
