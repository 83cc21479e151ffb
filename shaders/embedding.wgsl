// Token embedding: gather forward, deterministic scatter-add backward.
//
// forward, one invocation per output element (r, e), r < N, e < E:
//   out[out_off + r E + e] = table[table_off + ids[ids_off + r] E + e]
// or 0 when the id is PAD (0xffffffff) or otherwise >= V (the host rejects
// out-of-range ids before upload; the shader only stays in bounds).
//
// backward, one invocation per table element (v, e), v < V, e < E:
//   dtable[dtable_off + v E + e] (= or +=) Σ_{r: ids[r] == v} dout[dout_off + r E + e]
// with no atomics: the host uploads a CSR index of the batch's ids into
// `csr` at csr_off: offsets[V + 1] (rows of id v are
// rows[offsets[v] .. offsets[v + 1]]) followed by rows[] (row indices
// grouped by id, increasing within an id). Each invocation adds its id's
// rows in that order. Because Mesa's lavapipe silently stops an
// invocation's loops after 65535 iterations, the rows of one id are taken
// in chunks of at most CHUNK: dispatch k (chunk = k) adds the rows
// [k CHUNK, (k + 1) CHUNK) of every id to what dispatch k - 1 left
// (dispatch 0 starts from 0, or from dtable when accumulating). The host
// records ceil(N / CHUNK) dispatches (at least 1), so the summation order
// is fixed: results are bit-identical from run to run.

// struct Params: written into the source from its Rust declaration,
// EmbeddingUniform (src/kernels/embedding.rs).

const ACCUMULATE: u32 = 1u;
const CHUNK: u32 = 4096u;
const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> csr: array<u32>;
// Storage type of dout: f16 in the f16-mixed build of `backward` (the f16
// gate gradients summed per token), converted on load; sums stay f32.
alias DT = f32;
@group(0) @binding(5) var<storage, read_write> dout: array<DT>;
@group(0) @binding(6) var<storage, read_write> dtable: array<f32>;

@compute @workgroup_size(64)
fn forward(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = grid_index(grid, lid, WG);
    if i >= p.rows * p.dim {
        return;
    }
    let r = i / p.dim;
    let e = i % p.dim;
    let id = ids[p.ids_off + r];
    var v = 0.0;
    if id < p.vocab {
        v = table[p.table_off + id * p.dim + e];
    }
    out[p.out_off + i] = v;
}

@compute @workgroup_size(64)
fn backward(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let i = grid_index(grid, lid, WG);
    if i >= p.vocab * p.dim {
        return;
    }
    let v = i / p.dim;
    let e = i % p.dim;
    let start = csr[p.csr_off + v];
    let stop = csr[p.csr_off + v + 1u];
    let first = start + p.chunk * CHUNK;
    // Later chunks leave ids with fewer rows alone.
    if p.chunk > 0u && first >= stop {
        return;
    }
    let last = min(stop, first + CHUNK);
    var s = 0.0;
    if p.chunk > 0u || (p.flags & ACCUMULATE) != 0u {
        s = dtable[p.dtable_off + i];
    }
    let rows = p.csr_off + p.vocab + 1u;
    for (var k = first; k < last; k++) {
        s += f32(dout[p.dout_off + csr[rows + k] * p.dim + e]);
    }
    dtable[p.dtable_off + i] = s;
}
