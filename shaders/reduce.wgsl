// Column sums of a row-major [M, N] matrix (colsum), or of the elementwise
// product of two such matrices (colsum_prod: gradients of norm gains), in a fixed order (no atomics), so
// results are bit-identical run to run. Used for bias gradients: the sum of
// the gate gradients over all (time, batch) rows, written to two places
// because b_ih and b_hh receive the same gradient.
// The host splits sums over more than 65,534 rows into consecutive
// accumulating dispatches (src/kernels/reduce.rs): lavapipe ends all loops of
// an invocation after 65,535 iterations in total.

// struct Params: written into the source from its Rust declaration,
// ReduceUniform (src/kernels/reduce.rs).

const OUT2: u32 = 1u;
const ACCUMULATE: u32 = 2u;
// colsum of two matrices in one dispatch (the GRU's b_ih and b_hh
// gradients): workgroups of row wg.y = 1 sum the matrix at a2_off into
// out2, those of row 0 the one at a_off into out1.
const PAIR: u32 = 4u;

@group(0) @binding(0) var<uniform> p: Params;
// Storage type of A: f16 in the f16-mixed build of `colsum` (the f16 gate
// gradients), converted on load; sums stay f32.
alias AT = f32;
@group(0) @binding(1) var<storage, read> a: array<AT>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;

// A workgroup sums CT columns with RL row lanes: lane r adds rows r, r+RL, ...
// of its column, then lane 0 adds the RL partial sums in lane order. The
// order is fixed, so results stay bit-identical run to run, and a sum over
// many rows keeps CT*RL invocations per workgroup busy instead of one.
const CT: u32 = 16u;
const RL: u32 = 16u;

var<workgroup> part: array<f32, 256>;

fn store(n: u32, s: f32, to2: bool) {
    store_at(p.out1_off + n, s);
    if to2 {
        store_at(p.out2_off + n, s);
    }
}

fn store_at(i: u32, s: f32) {
    if (p.flags & ACCUMULATE) != 0u {
        out[i] += s;
    } else {
        out[i] = s;
    }
}

// Lane 0 of column c: the sum of the RL partials (after a barrier).
fn lanes_sum(c: u32) -> f32 {
    var s = 0.0;
    for (var r = 0u; r < RL; r++) {
        s += part[r * CT + c];
    }
    return s;
}

@compute @workgroup_size(256)
fn colsum(grid: Grid, @builtin(local_invocation_index) li: u32) {
    let c = li % CT;
    let r = li / CT;
    let n = grid.wid.x * CT + c;
    let second = (p.flags & PAIR) != 0u && grid.wid.y == 1u;
    let a_off = select(p.a_off, p.a2_off, second);
    var s = 0.0;
    if n < p.n {
        for (var m = r; m < p.m; m += RL) {
            s += f32(a[a_off + m * p.lda + n]);
        }
    }
    part[li] = s;
    workgroupBarrier();
    if r == 0u && n < p.n {
        if (p.flags & PAIR) == 0u {
            store(n, lanes_sum(c), (p.flags & OUT2) != 0u);
        } else {
            store_at(select(p.out1_off, p.out2_off, second) + n, lanes_sum(c));
        }
    }
}

// out[out1_off + n] = sum_m a[a_off + m*lda + n] * b[out2_off + m*lda + n]
// (b's offset travels in out2_off; there is no second output).
@compute @workgroup_size(256)
fn colsum_prod(grid: Grid, @builtin(local_invocation_index) li: u32) {
    let c = li % CT;
    let r = li / CT;
    let n = grid.wid.x * CT + c;
    var s = 0.0;
    if n < p.n {
        for (var m = r; m < p.m; m += RL) {
            s += f32(a[p.a_off + m * p.lda + n]) * b[p.out2_off + m * p.lda + n];
        }
    }
    part[li] = s;
    workgroupBarrier();
    if r == 0u && n < p.n {
        store(n, lanes_sum(c), false);
    }
}
