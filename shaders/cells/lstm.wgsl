// The LSTM cell: its pointwise forward and backward, in PyTorch's gate
// order i, f, g, o. Joined after the prelude by the wrapper of every kernel
// that runs an LSTM step (lstm_cell, lstm_persistent, lstm_cell_ln,
// lstm_cell_bn; f32 and f16-mixed), which own the recurrent product, the
// storage and the schedule. Pure functions of one hidden unit; the
// expressions are the kernels' former ones, operation for operation, so
// every path computes what it computed before, bit for bit.
//
// What a cell file declares (docs/architecture.md, "Cells"):
//   CELL_GATES        gate rows per hidden unit in W_ih, W_hh and the biases
//   CELL_STATES       2: state c and h (h0/c0, h_n/c_n; the carried gradient
//                     is c's); 1: h alone (the carried gradient is h's)
//   Gates             one unit's gate values, a vector of CELL_GATES
//   CELL_OWN_BHH      whether the cell adds b_hh itself (the input GEMM
//                     then adds b_ih alone) instead of the GEMM adding both
//   CELL_SPLIT_DG     whether W_ih's gate gradients differ from W_hh's (a
//                     second section of the gradient block holds them)
//   CELL_DIAG         whether W_hh is a vector u (IndRNN): the recurrent
//                     product is u_j h_j, on the direct kernels only
//   CELL_CARRY        the gate whose activation carries the state gradient
//                     back a step: dstate_{t-1} += dstate_t * gate
//   cell_acc(pre, bh) what a unit's recurrent product W_hh h is summed onto,
//                     given its input part (W_ih x and the GEMM's biases)
//                     and b_hh (zero unless CELL_OWN_BHH). The LSTM sums
//                     straight onto the input part: one sum, the order of
//                     cuDNN and of the engine so far. The GRU starts its n
//                     component from b_hn and reads the input part in its
//                     forward.
//   cell_join(acc, pre, bh)  the same, for a product summed on its own first
//   cell_forward, cell_backward, cell_state_grads (below).

const CELL_GATES: u32 = 4u;
const CELL_STATES: u32 = 2u;
alias Gates = vec4<f32>;
const CELL_OWN_BHH: bool = false;
const CELL_SPLIT_DG: bool = false;
const CELL_DIAG: bool = false;

fn cell_acc(pre: Gates, bh: Gates) -> Gates {
    return pre;
}

// The same for kernels that sum the recurrent product on its own first
// (the tiled one): the pre-activations from the product and the input part.
fn cell_join(acc: Gates, pre: Gates, bh: Gates) -> Gates {
    return acc + pre;
}

// Activated gates (i, f, g, o) of pre-activations a.
fn lstm_act(a: Gates) -> Gates {
    return vec4<f32>(sigmoid(a.x), sigmoid(a.y), tanh_clamped(a.z), sigmoid(a.w));
}

// The same with the prelude's accurate functions (the recurrent BatchNorm
// cell: see `exp_acc`).
fn lstm_act_acc(a: Gates) -> Gates {
    return vec4<f32>(sigmoid_acc(a.x), sigmoid_acc(a.y), tanh_acc(a.z), sigmoid_acc(a.w));
}

// c_t = f * c_{t-1} + i * g.
fn lstm_c(act: Gates, c_prev: f32) -> f32 {
    return act.y * c_prev + act.x * act.z;
}

// One step forward from the pre-activations a (pre: their input part,
// unused here): activated gates (what backward needs cached), c_t (the
// cache's c section) and h_t = o * tanh(c_t).
struct CellStep { act: Gates, c: f32, h: f32 }

fn cell_forward(a: Gates, pre: Gates, c_prev: f32, h_prev: f32) -> CellStep {
    let act = lstm_act(a);
    let c = lstm_c(act, c_prev);
    return CellStep(act, c, act.w * tanh_clamped(c));
}

// Gradient of tc's argument through h_t = o * tanh(..): of c_t, or of the
// normalized c_t in the norm cells (tc: the tanh).
fn lstm_dtanh(dh: f32, o: f32, tc: f32) -> f32 {
    return dh * o * (1.0 - tc * tc);
}

// Gradients of the pre-activations of i, f and g, given dc (of c_t).
fn lstm_d_ifg(act: Gates, dc: f32, c_prev: f32) -> vec3<f32> {
    return vec3<f32>(dc * act.z * act.x * (1.0 - act.x), dc * c_prev * act.y * (1.0 - act.y),
                     dc * act.x * (1.0 - act.z * act.z));
}

// Gradient of o's pre-activation, given d_o = dh * tanh(c_t).
fn lstm_d_o(o: f32, d_o: f32) -> f32 {
    return d_o * o * (1.0 - o);
}

// One step backward from the cached gates, c_t and c_{t-1} (h_{t-1}
// unused here), given dh (of h_t) and dc_rec (of c_t, from step t + 1):
// the pre-activation gradients (da; dx, W_ih's, the same) and dc (of c_t;
// dc_{t-1} = dc * f).
struct CellGrads { da: Gates, dx: Gates, dc: f32 }

// The gate whose activation carries c's gradient back a step, and that
// gradient: dc_{t-1} = dc_t * f_t (dc_t from step t's backward).
const CELL_CARRY: u32 = 1u;

fn cell_dc_prev(dc: f32, f: f32) -> f32 {
    return dc * f;
}

fn cell_backward(act: Gates, c: f32, c_prev: f32, h_prev: f32, dh: f32, dc_rec: f32) -> CellGrads {
    let tc = tanh_clamped(c);
    let dc = lstm_dtanh(dh, act.w, tc) + dc_rec;
    let da = vec4<f32>(lstm_d_ifg(act, dc, c_prev), lstm_d_o(act.w, dh * tc));
    return CellGrads(da, da, dc);
}

// The initial-state gradients (h0, c0) of a unit, given dh_w = dgates_0 *
// W_hh and carry = dc_prev(dc_0, the carry gate of step 0).
fn cell_state_grads(dh_w: f32, carry: f32) -> vec2<f32> {
    return vec2<f32>(dh_w, carry);
}
