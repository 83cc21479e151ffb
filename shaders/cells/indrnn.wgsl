// The IndRNN cell (Li et al. 2018): h' = act(W_ih x + b_ih + u ⊙ h + b_hh),
// act relu (IND_RELU, the default) or tanh (the host sets IND_RELU false
// by name). One gate row per unit; the recurrent weight weight_hh_l{k} is
// the vector u [H], so the recurrent product is diagonal (CELL_DIAG): the
// direct kernels' forward adds u_j h_j and their backward steps dh back as
// u_j da_j. The host runs this cell on those kernels only (direct, scalar;
// per step or as a wavefront). The state is h alone; the cache's c section
// and the carried gradient stay zero.

const CELL_GATES: u32 = 1u;
const CELL_STATES: u32 = 1u;
// One gate; the second component stays zero (WGSL has no 1-vectors).
alias Gates = vec2<f32>;
const CELL_OWN_BHH: bool = false;
const CELL_SPLIT_DG: bool = false;
const CELL_DIAG: bool = true;
const IND_RELU: bool = true;

fn cell_acc(pre: Gates, bh: Gates) -> Gates {
    return pre;
}

fn cell_join(acc: Gates, pre: Gates, bh: Gates) -> Gates {
    return acc + pre;
}

struct CellStep { act: Gates, c: f32, h: f32 }

// act = (h_t, 0): h_t is what backward needs for act's derivative.
fn cell_forward(a: Gates, pre: Gates, c_prev: f32, h_prev: f32) -> CellStep {
    let h = select(tanh_clamped(a.x), max(a.x, 0.0), IND_RELU);
    return CellStep(vec2<f32>(h, 0.0), 0.0, h);
}

struct CellGrads { da: Gates, dx: Gates, dc: f32 }

// Nothing is carried besides the recurrent product.
const CELL_CARRY: u32 = 0u;

fn cell_dc_prev(dc: f32, g: f32) -> f32 {
    return 0.0;
}

// relu'(a) = 1 where h > 0 (0 at a = 0, as PyTorch), tanh'(a) = 1 − h².
fn cell_backward(act: Gates, c: f32, c_prev: f32, h_prev: f32, dh: f32, dc_rec: f32) -> CellGrads {
    let h = act.x;
    let d = select(1.0 - h * h, select(0.0, 1.0, h > 0.0), IND_RELU);
    let da = vec2<f32>(dh * d, 0.0);
    return CellGrads(da, da, 0.0);
}

fn cell_state_grads(dh_w: f32, carry: f32) -> vec2<f32> {
    return vec2<f32>(dh_w, 0.0);
}
