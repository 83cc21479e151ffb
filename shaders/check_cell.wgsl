// The finite-difference check of a cell's pointwise backward (`lstm-wgpu
// check-cell`). Joined after the prelude and a cell file (built-in or a
// user's) by src/kernels/check_cell.rs. One invocation per unit: it runs
// the cell's backward once and its forward at ± a step along each input,
// in f32, and writes both sides of every comparison; the host judges them.
//
// What the backward's outputs are the gradients of: the strategies feed a
// step dh (of h_t) and dc_rec (of the carried state at t), so the step's
// part of the loss is
//   CELL_STATES 2:  L = dh h_t + dc_rec c_t
//   CELL_STATES 1:  L = (dh + dc_rec) h_t   (the carried state is h itself)
// with the pre-activations a = cell_acc(pre, bh) + r (r: the recurrent
// product W_hh h, bh: b_hh where CELL_OWN_BHH), as the direct kernels form
// them. Then
//   da    = dL/dr                      (W_hh's and b_hh's gate gradients)
//   dx    = dL/dpre                    (W_ih's: dx where CELL_SPLIT_DG, else da)
//   carry = cell_dc_prev(dc, act[CELL_CARRY]) = dL/d(carried state at t-1),
//           a held (c_prev; h_prev for CELL_STATES 1)
//   h0, c0 = cell_state_grads(sum_g da_g w_g, carry): dL/dh_prev with
//           r = r0 + w h_prev (a diagonal stand-in for W_hh), and dL/dc_prev.
// dc_rec is made as the strategies make it, cell_dc_prev(dc_next, gate_next),
// so that a cell that carries nothing gets none.
//
// Inputs are multiples of 2^-12 and the steps powers of two, so every
// perturbed input is exact in f32 and the quotient's only errors are the
// forward's rounding and the truncation (see docs/commands.md, check-cell).

// struct Params: written into the source from its Rust declaration,
// CheckUniform (src/kernels/check_cell.rs).

@group(0) @binding(0) var<uniform> p: Params;
// Per unit (CHECK_IN values): r, pre, bh, w (CELL_GATES each), c_prev,
// h_prev, dh, dc_next, gate_next.
@group(0) @binding(1) var<storage, read> inp: array<f32>;
// Per unit (CHECK_OUT values): per gate (analytic, fd at delta, fd at
// delta / 2) of da then dx; then the same triples of carry, h0 and c0.
@group(0) @binding(2) var<storage, read_write> outp: array<f32>;

const CHECK_IN: u32 = 4u * CELL_GATES + 5u;
const CHECK_OUT: u32 = 6u * CELL_GATES + 9u;

struct Point { r: Gates, pre: Gates, bh: Gates, c_prev: f32, h_prev: f32 }

fn check_loss(x: Point, dh: f32, dc_rec: f32) -> f32 {
    let s = cell_forward(cell_acc(x.pre, x.bh) + x.r, x.pre, x.c_prev, x.h_prev);
    if CELL_STATES == 2u {
        return dh * s.h + dc_rec * s.c;
    }
    return (dh + dc_rec) * s.h;
}

// Central differences of check_loss between xp and xm, apart by 2 d.
fn quotient(xp: Point, xm: Point, d: f32, dh: f32, dc_rec: f32) -> f32 {
    return (check_loss(xp, dh, dc_rec) - check_loss(xm, dh, dc_rec)) / (2.0 * d);
}

// Which input a difference moves: 0 r_g, 1 pre_g, 2 c_prev, 3 h_prev with
// a held, 4 h_prev through r = r0 + w h_prev.
fn moved(x: Point, w: Gates, what: u32, g: u32, e: f32) -> Point {
    var y = x;
    switch what {
        case 0u: { y.r[g] += e; }
        case 1u: { y.pre[g] += e; }
        case 2u: { y.c_prev += e; }
        case 3u: { y.h_prev += e; }
        default: {
            y.h_prev += e;
            for (var q = 0u; q < CELL_GATES; q++) {
                y.r[q] += w[q] * e;
            }
        }
    }
    return y;
}

// Writes (analytic, fd at delta, fd at delta / 2) at o.
fn triple(o: u32, an: f32, x: Point, w: Gates, what: u32, g: u32, dh: f32, dc_rec: f32) {
    outp[o] = an;
    for (var k = 1u; k <= 2u; k++) {
        let d = p.delta / f32(k);
        outp[o + k] = quotient(moved(x, w, what, g, d), moved(x, w, what, g, -d), d, dh, dc_rec);
    }
}

@compute @workgroup_size(64)
fn check(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    if n >= p.n {
        return;
    }
    let ib = n * CHECK_IN;
    var x: Point;
    var w: Gates;
    for (var q = 0u; q < CELL_GATES; q++) {
        x.r[q] = inp[ib + q];
        x.pre[q] = inp[ib + CELL_GATES + q];
        x.bh[q] = inp[ib + 2u * CELL_GATES + q];
        w[q] = inp[ib + 3u * CELL_GATES + q];
    }
    let sb = ib + 4u * CELL_GATES;
    x.c_prev = inp[sb];
    x.h_prev = inp[sb + 1u];
    let dh = inp[sb + 2u];
    let dc_rec = cell_dc_prev(inp[sb + 3u], inp[sb + 4u]);

    let st = cell_forward(cell_acc(x.pre, x.bh) + x.r, x.pre, x.c_prev, x.h_prev);
    let gr = cell_backward(st.act, st.c, x.c_prev, x.h_prev, dh, dc_rec);
    var dx = gr.da;
    if CELL_SPLIT_DG {
        dx = gr.dx;
    }
    let ob = n * CHECK_OUT;
    var dh_w = 0.0;
    for (var g = 0u; g < CELL_GATES; g++) {
        triple(ob + 6u * g, gr.da[g], x, w, 0u, g, dh, dc_rec);
        triple(ob + 6u * g + 3u, dx[g], x, w, 1u, g, dh, dc_rec);
        dh_w += gr.da[g] * w[g];
    }
    let carry = cell_dc_prev(gr.dc, st.act[CELL_CARRY]);
    let sg = cell_state_grads(dh_w, carry);
    let tb = ob + 6u * CELL_GATES;
    triple(tb, carry, x, w, select(3u, 2u, CELL_STATES == 2u), 0u, dh, dc_rec);
    triple(tb + 3u, sg.x, x, w, 4u, 0u, dh, dc_rec);
    triple(tb + 6u, sg.y, x, w, 2u, 0u, dh, dc_rec);
}
