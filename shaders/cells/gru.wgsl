// The GRU cell (torch.nn.GRU): its pointwise forward and backward, gates
// r, z, n in PyTorch's order:
//   r = σ(W_ir x + b_ir + W_hr h + b_hr)
//   z = σ(W_iz x + b_iz + W_hz h + b_hz)
//   n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
//   h' = (1 − z) ⊙ n + z ⊙ h
// Joined after the prelude by the wrapper of the recurrent kernel
// (lstm_cell.wgsl's strategies), as cells/lstm.wgsl is: the declarations
// are those that file lists. n needs the recurrent part W_hn h + b_hn apart
// from the input part, so the cell adds b_hh itself (the input GEMM adds
// b_ih alone) and starts n's accumulator from b_hn; the forward keeps that
// recurrent part in the cache's c section (hn below), which backward needs
// for r's gradient. The state is h alone: the state arrays' c half stays
// unused (zero), and the carried gradient (the gradient block's dc
// section) is dh itself, carried back a step through z.
//
// W_ih and W_hh see different gate gradients: n's pre-activation gradient
// dn multiplies W_in x + b_in, while W_hn h + b_hn gets dn ⊙ r. The
// gradient block holds both (CELL_SPLIT_DG): da (for W_hh, b_hh and the
// step back through W_hh) and dx (for W_ih, b_ih and the layer's input).

const CELL_GATES: u32 = 3u;
const CELL_STATES: u32 = 1u;
alias Gates = vec3<f32>;
const CELL_OWN_BHH: bool = true;
const CELL_SPLIT_DG: bool = true;
const CELL_DIAG: bool = false;

fn cell_acc(pre: Gates, bh: Gates) -> Gates {
    return vec3<f32>(pre.x + bh.x, pre.y + bh.y, bh.z);
}

fn cell_join(acc: Gates, pre: Gates, bh: Gates) -> Gates {
    return cell_acc(pre, bh) + acc;
}

struct CellStep { act: Gates, c: f32, h: f32 }

// act = (r, z, n); c = hn = W_hn h + b_hn (a.z); pre.z = W_in x + b_in.
fn cell_forward(a: Gates, pre: Gates, c_prev: f32, h_prev: f32) -> CellStep {
    let r = sigmoid(a.x);
    let z = sigmoid(a.y);
    let n = tanh_clamped(pre.z + r * a.z);
    return CellStep(vec3<f32>(r, z, n), a.z, (1.0 - z) * n + z * h_prev);
}

struct CellGrads { da: Gates, dx: Gates, dc: f32 }

// z carries h's gradient back a step: dh_{t-1} += dh_t ⊙ z_t.
const CELL_CARRY: u32 = 1u;

fn cell_dc_prev(dc: f32, z: f32) -> f32 {
    return dc * z;
}

// dh: of h_t through the output and W_hh; dc_rec: through z from step t+1;
// c = hn. dc, the carried gradient, is the whole of h_t's.
fn cell_backward(act: Gates, c: f32, c_prev: f32, h_prev: f32, dh: f32, dc_rec: f32) -> CellGrads {
    let d = dh + dc_rec;
    let r = act.x;
    let z = act.y;
    let n = act.z;
    let dan = d * (1.0 - z) * (1.0 - n * n);
    let dar = dan * c * r * (1.0 - r);
    let daz = d * (h_prev - n) * z * (1.0 - z);
    return CellGrads(vec3<f32>(dar, daz, dan * r), vec3<f32>(dar, daz, dan), d);
}

// grad h0 = dgates_0 * W_hh + dh_0 ⊙ z_0; no c.
fn cell_state_grads(dh_w: f32, carry: f32) -> vec2<f32> {
    return vec2<f32>(dh_w + carry, 0.0);
}
