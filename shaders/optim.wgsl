// Optimizer updates over one flat parameter buffer and the gradient buffer
// of the same layout, with PyTorch's formulas (torch.optim.SGD, Adam, AdamW,
// single-tensor implementation). One invocation per element, one dispatch
// per step; elements [0, n) of every buffer are updated in place.
//
// Entry points and the state buffers they use (each laid out like params):
//   sgd            no state (momentum 0)
//   sgd_momentum   s0 = momentum_buffer
//   adam           s0 = exp_avg, s1 = exp_avg_sq         (Adam and AdamW)
//   adam_amsgrad   s0, s1, s2 = max_exp_avg_sq           (Adam and AdamW)
//
// Fixed hyperparameters live in the uniform block; everything that changes
// per step lives in the small storage buffer `st`, written by the host
// before each submit (the dispatch is built once). Each Step entry is
//   [lr, step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t),
//    decay = 1 - lr·weight_decay, first (u32: t == 1), t (u32), 0, 0]
// with the bias corrections computed by the host in f64 (as PyTorch does in
// Python floats) and rounded once to f32. The host cannot know whether the
// updates still in flight were skipped, so it writes entries for
// t = base + 1 .. base + ENTRIES, and the GPU keeps the applied step count:
// update k reads count[parity] (parity = k % 2, from the host), uses entry
// count - base, and writes count + (applied ? 1 : 0) to count[1 - parity]
// for update k + 1.
//
// Skip: the word `skip[p.skip_at]` (e.g. the non-finite flag of the clip
// stats, written by an earlier dispatch of the same pass) is read first;
// when its bits are not all zero the whole dispatch returns without
// touching params or state.

// struct Params: written into the source from its Rust declaration,
// OptimUniform (src/kernels/optim.rs).

struct Step {
    lr: f32,
    step_size: f32,
    bc2_sqrt: f32,
    decay: f32,
    first: u32,
    t: u32,
    _p0: u32,
    _p1: u32,
}

const ENTRIES: u32 = 3u;

struct Steps {
    parity: u32,
    base: u32,
    count: array<u32, 2>,
    entries: array<Step, ENTRIES>,
}

// flags
const NESTEROV: u32 = 1u;
const DECOUPLED: u32 = 2u;
const HAS_WD: u32 = 4u;

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> steps: Steps;
@group(0) @binding(4) var<storage, read> skip: array<u32>;
@group(0) @binding(5) var<storage, read_write> s0: array<f32>;
@group(0) @binding(6) var<storage, read_write> s1: array<f32>;
@group(0) @binding(7) var<storage, read_write> s2: array<f32>;

fn skipped() -> bool {
    return skip[p.skip_at] != 0u;
}

// This update's Step; invocation 0 also passes the applied-step count on to
// the next update. Every entry point calls it first, skipped or not.
fn step_of(i: u32) -> Step {
    let cur = steps.count[steps.parity & 1u];
    if i == 0u {
        steps.count[(steps.parity + 1u) & 1u] = cur + select(1u, 0u, skipped());
    }
    return steps.entries[min(cur - steps.base, ENTRIES - 1u)];
}

// ---- SGD -------------------------------------------------------------------

// The gradient of element i (value x) with weight decay (L2) added.
fn sgd_grad(i: u32, x: f32) -> f32 {
    var d = grad[i];
    if (p.flags & HAS_WD) != 0u {
        d = d + p.weight_decay * x;
    }
    return d;
}

@compute @workgroup_size(256)
fn sgd(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = grid_index(grid, lid, WG);
    let st = step_of(i);
    if i >= p.n || skipped() {
        return;
    }
    let x = param[i];
    param[i] = x - st.lr * sgd_grad(i, x);
}

@compute @workgroup_size(256)
fn sgd_momentum(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = grid_index(grid, lid, WG);
    let st = step_of(i);
    if i >= p.n || skipped() {
        return;
    }
    let x = param[i];
    var d = sgd_grad(i, x);
    // First step: buf = grad (PyTorch clones it, no dampening).
    var b = d;
    if st.first == 0u {
        b = s0[i] * p.momentum + p.one_m_damp * d;
    }
    s0[i] = b;
    if (p.flags & NESTEROV) != 0u {
        d = d + p.momentum * b;
    } else {
        d = b;
    }
    param[i] = x - st.lr * d;
}

// ---- Adam / AdamW ----------------------------------------------------------

// Weight decay and the moment updates; returns (x after decoupled decay,
// exp_avg, exp_avg_sq), having stored the moments.
fn adam_moments(i: u32, st: Step) -> vec3<f32> {
    var x = param[i];
    var g = grad[i];
    if (p.flags & HAS_WD) != 0u {
        if (p.flags & DECOUPLED) != 0u {
            x = x * st.decay;
        } else {
            g = g + p.weight_decay * x;
        }
    }
    // exp_avg.lerp_(grad, 1 - beta1); weight < 0.5: m + w·(g - m).
    let m0 = s0[i];
    let m = m0 + p.one_m_beta1 * (g - m0);
    // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value = 1 - beta2).
    let v = s1[i] * p.beta2 + p.one_m_beta2 * (g * g);
    s0[i] = m;
    s1[i] = v;
    return vec3<f32>(x, m, v);
}

// p.addcdiv_(exp_avg, sqrt(v)/bc2_sqrt + eps, value = -step_size).
fn adam_apply(i: u32, st: Step, x: f32, m: f32, v: f32) {
    let denom = sqrt(v) / st.bc2_sqrt + p.eps;
    param[i] = x - st.step_size * (m / denom);
}

@compute @workgroup_size(256)
fn adam(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = grid_index(grid, lid, WG);
    let st = step_of(i);
    if i >= p.n || skipped() {
        return;
    }
    let r = adam_moments(i, st);
    adam_apply(i, st, r.x, r.y, r.z);
}

@compute @workgroup_size(256)
fn adam_amsgrad(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = grid_index(grid, lid, WG);
    let st = step_of(i);
    if i >= p.n || skipped() {
        return;
    }
    let r = adam_moments(i, st);
    let vmax = max(s2[i], r.z);
    s2[i] = vmax;
    adam_apply(i, st, r.x, r.y, vmax);
}
