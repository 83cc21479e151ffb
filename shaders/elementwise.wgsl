// Elementwise pieces around the LSTM: dropout (forward and backward share
// one entry point), residual add, accumulate / copy, fill, and the gather of
// each sequence's last valid step with its backward scatter.
//
// Every entry point is one invocation per element (dropout: per group of
// four elements), 64 per workgroup, on an (x, y) grid of workgroups that is
// flattened back here; excess invocations return. No loops except the ten
// Philox rounds. An invocation reads and writes only its own elements, so
// outputs may alias inputs at the same offset (all f32 data buffers are
// bound read_write for that reason).
//
// ---- dropout ---------------------------------------------------------------
// out[out_off + i] (= or +=) a[a_off + i] * m_i * scale, i < n, with
// m_i = 1 iff r_i >= thr, thr = round(p * 2^32) and scale = 1 / (1 - p)
// (both from the host, in the uniform). r_i is a counter-based random word:
// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2,
// 3", SC 2011; the generator of Random123, cuRAND and PyTorch's CUDA RNG)
// with
//   key     = (seed0, seed1)
//   counter = (i / 4, step_counter, stream, 0)
// and r_i = word (i % 4) of the output block. seed0, seed1 and step_counter
// are read from the per-step storage buffer `rng` at aux_off
// ([seed0, seed1, counter, unused]); `stream` (uniform) tells dropout sites
// of one step apart. The mask is a pure function of (seed, counter, stream,
// i), so the backward regenerates exactly the forward's mask. thr == 0
// (p = 0) copies a exactly (no multiply).
//
// dropout_add (forward of dropout then a residual add, between LSTM layers):
//   out[out_off + i] (= or +=) dropout(a)[i] + b[b_off + i]
// dropout_split (its backward): with g = a[a_off + i],
//   out[out_off + i] (= or +=) dropout(g)[i];  b[b_off + i] = g
// (b keeps the upstream gradient for the skip path; out may alias a).
//
// ---- last valid step -------------------------------------------------------
// x is [T, B, F] time-major at a_off; lengths u32 [B] at aux_off.
// last_gather:  out[out_off + b F + f] (= or +=) x[a_off + ((len_b - 1) B + b) F + f]
// last_scatter: out[out_off + ((len_b - 1) B + b) F + f] (= or +=) a[a_off + b F + f]
// (other rows of the scatter's output untouched). A length outside 1..=T
// gathers zeros and scatters nothing (the host validates lengths).

// struct Params: written into the source from its Rust declaration,
// ElementwiseUniform (src/kernels/elementwise.rs).

// flags
const ACCUMULATE: u32 = 1u;

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
// Per-step RNG state (dropout) or sequence lengths (last step), u32.
@group(0) @binding(1) var<storage, read> aux: array<u32>;
@group(0) @binding(2) var<storage, read_write> a: array<f32>;
@group(0) @binding(3) var<storage, read_write> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

fn store(i: u32, v: f32) {
    if (p.flags & ACCUMULATE) != 0u {
        out[i] = out[i] + v;
    } else {
        out[i] = v;
    }
}

// Keep flags of the four elements of group q (all kept at p = 0, without
// running Philox; the scale is then exactly 1).
fn drop_keep(q: u32) -> vec4<bool> {
    if p.thr == 0u {
        return vec4<bool>(true);
    }
    let key = vec2<u32>(aux[p.aux_off], aux[p.aux_off + 1u]);
    let r = philox(vec4<u32>(q, aux[p.aux_off + 2u], p.stream, 0u), key);
    return r >= vec4<u32>(p.thr);
}

// Dropout of a with b, four elements per invocation: the residual add
// (split false: out = dropout(a) + b) or its backward (split true: b = a,
// out = dropout(a)). Called with a constant `split`, so each entry point
// compiles to its own branch only.
fn dropout_pair(grid: Grid, lid: u32, split: bool) {
    let q = grid_index(grid, lid, WG);
    if q >= (p.n + 3u) / 4u {
        return;
    }
    let keep = drop_keep(q);
    for (var j = 0u; j < 4u; j++) {
        let i = q * 4u + j;
        if i < p.n {
            let g = a[p.a_off + i];
            if split {
                b[p.b_off + i] = g;
                store(p.out_off + i, select(0.0, g * p.scale, keep[j]));
            } else {
                store(p.out_off + i, select(0.0, g * p.scale, keep[j]) + b[p.b_off + i]);
            }
        }
    }
}

@compute @workgroup_size(64)
fn dropout_add(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    dropout_pair(grid, lid, false);
}

@compute @workgroup_size(64)
fn dropout_split(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    dropout_pair(grid, lid, true);
}

@compute @workgroup_size(64)
fn dropout(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let q = grid_index(grid, lid, WG);
    let first = q * 4u;
    if q >= (p.n + 3u) / 4u {
        return;
    }
    if p.thr == 0u {
        for (var j = 0u; j < 4u; j++) {
            let i = first + j;
            if i < p.n {
                store(p.out_off + i, a[p.a_off + i]);
            }
        }
        return;
    }
    let key = vec2<u32>(aux[p.aux_off], aux[p.aux_off + 1u]);
    let r = philox(vec4<u32>(q, aux[p.aux_off + 2u], p.stream, 0u), key);
    for (var j = 0u; j < 4u; j++) {
        let i = first + j;
        if i < p.n {
            let keep = r[j] >= p.thr;
            store(p.out_off + i, select(0.0, a[p.a_off + i] * p.scale, keep));
        }
    }
}

// out = a + b (out may alias a or b).
@compute @workgroup_size(64)
fn add(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = grid_index(grid, lid, WG);
    if i >= p.n {
        return;
    }
    store(p.out_off + i, a[p.a_off + i] + b[p.b_off + i]);
}

// out (= or +=) a: a copy, or dy_lower += dy_upper.
@compute @workgroup_size(64)
fn accumulate(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = grid_index(grid, lid, WG);
    if i >= p.n {
        return;
    }
    store(p.out_off + i, a[p.a_off + i]);
}

// out = value.
@compute @workgroup_size(64)
fn fill(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = grid_index(grid, lid, WG);
    if i >= p.n {
        return;
    }
    out[p.out_off + i] = p.value;
}

// Index in the [T, B, F] tensor of element i of the [B, F] one: at the row
// of sequence i / F's last valid step, or 0xffffffff when it has none.
fn last_index(i: u32) -> u32 {
    let bi = i / p.feat;
    let len = aux[p.aux_off + bi];
    if len == 0u || len > p.seq {
        return 0xffffffffu;
    }
    return ((len - 1u) * p.batch + bi) * p.feat + i % p.feat;
}

@compute @workgroup_size(64)
fn last_gather(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = grid_index(grid, lid, WG);
    if i >= p.batch * p.feat {
        return;
    }
    let k = last_index(i);
    var v = 0.0;
    if k != 0xffffffffu {
        v = a[p.a_off + k];
    }
    store(p.out_off + i, v);
}

@compute @workgroup_size(64)
fn last_scatter(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = grid_index(grid, lid, WG);
    if i >= p.batch * p.feat {
        return;
    }
    let k = last_index(i);
    if k != 0xffffffffu {
        store(p.out_off + k, a[p.a_off + i]);
    }
}
