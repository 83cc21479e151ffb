// Column sums of a row-major [M, N] matrix (colsum), or of the elementwise
// product of two such matrices (colsum_prod: gradients of norm gains), in a fixed order (no atomics), so
// results are bit-identical run to run. Used for bias gradients: the sum of
// the gate gradients over all (time, batch) rows, written to two places
// because b_ih and b_hh receive the same gradient.
// The host splits sums over more than 65,534 rows into consecutive
// accumulating dispatches (src/kernels/reduce.rs): lavapipe ends all loops of
// an invocation after 65,535 iterations in total.

struct Params {
    m: u32, n: u32, lda: u32, a_off: u32,
    out1_off: u32, out2_off: u32, flags: u32, _p0: u32,
}

const OUT2: u32 = 1u;
const ACCUMULATE: u32 = 2u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;

@compute @workgroup_size(64)
fn colsum(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    if n >= p.n {
        return;
    }
    var s = 0.0;
    for (var m = 0u; m < p.m; m++) {
        s += a[p.a_off + m * p.lda + n];
    }
    if (p.flags & ACCUMULATE) != 0u {
        out[p.out1_off + n] += s;
    } else {
        out[p.out1_off + n] = s;
    }
    if (p.flags & OUT2) != 0u {
        if (p.flags & ACCUMULATE) != 0u {
            out[p.out2_off + n] += s;
        } else {
            out[p.out2_off + n] = s;
        }
    }
}

// out[out1_off + n] = sum_m a[a_off + m*lda + n] * b[out2_off + m*lda + n]
// (b's offset travels in out2_off; there is no second output).
@compute @workgroup_size(64)
fn colsum_prod(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    if n >= p.n {
        return;
    }
    var s = 0.0;
    for (var m = 0u; m < p.m; m++) {
        s += a[p.a_off + m * p.lda + n] * b[p.out2_off + m * p.lda + n];
    }
    if (p.flags & ACCUMULATE) != 0u {
        out[p.out1_off + n] += s;
    } else {
        out[p.out1_off + n] = s;
    }
}
