// Attention pooling over the outputs of a stack, the input of the
// regression head under `--head attention`: forward, backward, and the
// query's gradient summed over the batch. Deterministic: fixed-order loops
// and fixed trees, no atomics.
//
// h is the top layer's output [T, B, W] time-major at h_off, lengths u32 [B]
// at len_off (each in 1..=T; another value pools nothing: zero weights and
// features, zero gradients). For sequence b with n = len_b valid steps and
// h_T = h[n - 1, b]:
//   s_t = h_t · k,  k = h_T (dot) or q = query[q_off ..] (LEARNED)
//   a_t = exp(s_t - max) / Σ_{u < n} exp(s_u - max)   (t < n; 0 for t >= n)
//   z[b] = [Σ_{t < n} a_t h_t ; h_T]   (the head's input [B, 2W] at z_off)
// Backward, from dz = [dc ; dh_T] at z_off (the head's input gradient):
//   da_t = dc · h_t,  ds_t = a_t (da_t - Σ_u a_u da_u)
//   dh_t = a_t dc + ds_t k  (t < n; 0 for t >= n), written to dh at dh_off
//   dh_{n-1} += dh_T + Σ_t ds_t h_t  (dot)  or  += dh_T  (learned)
//   learned: dq_b = Σ_t ds_t h_t into the scratch at dq_off ([B, W]), then
//   query_grad: out[g_off + j] = Σ_b dq_b[j], b in order (overwritten).
//
// Scratch (f32 at a_off / ds_off): the weights a [B, T] (written by the
// forward, read by the backward; what `predict --attention-out` reads) and
// the backward's ds [B, T].
//
// attention_forward, attention_backward: one 256-wide workgroup per
//   sequence. Invocation l owns steps t = l, l + 256, ... (scores, their
//   gradients; each a serial dot product over W) and columns j = l, l + 256,
//   ... (context, dh; each a serial sum over t), so every value is summed
//   in one fixed order; maxima and sums over t go through a fixed tree.
//   The host keeps each invocation's loop passes under lavapipe's cap.
// attention_query_grad: one invocation per column j, 64 per workgroup.
// dh may be anything before the backward: every element of [T, B, W] is
// written.

// struct Params: written into the source from its Rust declaration,
// AttentionUniform (src/kernels/attention.rs).

// flags
const LEARNED: u32 = 1u;

const WG: u32 = 256u;
const WG_SUM: u32 = 64u;
const F32_LOWEST: f32 = -3.40282347e38;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> lengths: array<u32>;
// The stack's outputs.
@group(0) @binding(2) var<storage, read_write> h: array<f32>;
// The parameters (the query).
@group(0) @binding(3) var<storage, read_write> params: array<f32>;
// The head's input (forward: written; backward: its gradient, read).
@group(0) @binding(4) var<storage, read_write> z: array<f32>;
// Weights, ds and the per-sequence query gradients.
@group(0) @binding(5) var<storage, read_write> scratch: array<f32>;
// Gradient w.r.t. h.
@group(0) @binding(6) var<storage, read_write> dh: array<f32>;
// The gradients (the query's).
@group(0) @binding(7) var<storage, read_write> grads: array<f32>;

// `red` and `tree`: common/tree.wgsl.
const RED_LEN: u32 = WG;

// Valid steps of sequence b: its length, or 0 when outside 1..=T.
fn valid_steps(b: u32) -> u32 {
    let n = lengths[p.len_off + b];
    return select(0u, n, n >= 1u && n <= p.seq);
}

// Index of h[t, b, 0].
fn row(t: u32, b: u32) -> u32 {
    return p.h_off + (t * p.batch + b) * p.width;
}

// k_j: the query's, or h_T's (row `last`).
fn key(j: u32, last: u32) -> f32 {
    if (p.flags & LEARNED) != 0u {
        return params[p.q_off + j];
    }
    return h[last + j];
}

@compute @workgroup_size(256)
fn attention_forward(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let b = group_of(grid);
    if b >= p.batch {
        return;
    }
    let n = valid_steps(b);
    let last = row(max(n, 1u) - 1u, b);
    let w = p.width;
    let ab = p.a_off + b * p.seq;
    // Scores of the steps this invocation owns, kept in the weights' slots.
    var m = F32_LOWEST;
    for (var t0 = 0u; t0 < p.seq; t0 += WG) {
        let t = t0 + lid;
        if t < n {
            let r = row(t, b);
            var s = 0.0;
            for (var j = 0u; j < w; j++) {
                s += h[r + j] * key(j, last);
            }
            scratch[ab + t] = s;
            m = max(m, s);
        }
    }
    m = tree(m, lid, WG, true);
    var sum = 0.0;
    for (var t0 = 0u; t0 < p.seq; t0 += WG) {
        let t = t0 + lid;
        if t < n {
            let e = exp(scratch[ab + t] - m);
            scratch[ab + t] = e;
            sum += e;
        }
    }
    sum = tree(sum, lid, WG, false);
    for (var t0 = 0u; t0 < p.seq; t0 += WG) {
        let t = t0 + lid;
        if t < p.seq {
            var a = 0.0;
            if t < n {
                a = scratch[ab + t] / sum;
            }
            scratch[ab + t] = a;
        }
    }
    // Every weight is written before any invocation reads them all.
    storageBarrier();
    let zb = p.z_off + b * 2u * w;
    for (var j0 = 0u; j0 < w; j0 += WG) {
        let j = j0 + lid;
        if j < w {
            var c = 0.0;
            for (var t = 0u; t < n; t++) {
                c += scratch[ab + t] * h[row(t, b) + j];
            }
            z[zb + j] = c;
            z[zb + w + j] = select(0.0, h[last + j], n > 0u);
        }
    }
}

@compute @workgroup_size(256)
fn attention_backward(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let b = group_of(grid);
    if b >= p.batch {
        return;
    }
    let n = valid_steps(b);
    let last_t = max(n, 1u) - 1u;
    let last = row(last_t, b);
    let w = p.width;
    let ab = p.a_off + b * p.seq;
    let db = p.ds_off + b * p.seq;
    let zb = p.z_off + b * 2u * w;
    // da_t = dc · h_t, kept in the ds slots; Σ a_t da_t.
    var sad = 0.0;
    for (var t0 = 0u; t0 < p.seq; t0 += WG) {
        let t = t0 + lid;
        if t < n {
            let r = row(t, b);
            var da = 0.0;
            for (var j = 0u; j < w; j++) {
                da += z[zb + j] * h[r + j];
            }
            scratch[db + t] = da;
            sad += scratch[ab + t] * da;
        }
    }
    sad = tree(sad, lid, WG, false);
    for (var t0 = 0u; t0 < p.seq; t0 += WG) {
        let t = t0 + lid;
        if t < n {
            scratch[db + t] = scratch[ab + t] * (scratch[db + t] - sad);
        }
    }
    // Every ds is written before any invocation reads them all.
    storageBarrier();
    let learned = (p.flags & LEARNED) != 0u;
    for (var j0 = 0u; j0 < w; j0 += WG) {
        let j = j0 + lid;
        if j < w {
            let dc = z[zb + j];
            let kj = key(j, last);
            // Σ_t ds_t h_t[j]: the key's gradient.
            var dk = 0.0;
            for (var t = 0u; t < n; t++) {
                let ds = scratch[db + t];
                dk += ds * h[row(t, b) + j];
                dh[p.dh_off + (t * p.batch + b) * w + j] = scratch[ab + t] * dc + ds * kj;
            }
            for (var t = n; t < p.seq; t++) {
                dh[p.dh_off + (t * p.batch + b) * w + j] = 0.0;
            }
            if n > 0u {
                let at = p.dh_off + (last_t * p.batch + b) * w + j;
                var extra = z[zb + w + j];
                if !learned {
                    extra += dk;
                }
                dh[at] = dh[at] + extra;
            }
            if learned {
                scratch[p.dq_off + b * w + j] = dk;
            }
        }
    }
}

@compute @workgroup_size(64)
fn attention_query_grad(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let j = grid_index(grid, lid, WG_SUM);
    if j >= p.width {
        return;
    }
    var s = 0.0;
    for (var b = 0u; b < p.batch; b++) {
        s += scratch[p.dq_off + b * p.width + j];
    }
    grads[p.g_off + j] = s;
}
