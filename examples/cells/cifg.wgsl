// A coupled input-forget-gate LSTM (CIFG; Greff et al. 2017, "LSTM: A
// Search Space Odyssey"): the LSTM with the input gate tied to the forget
// gate, i = 1 − f. Three gates in this order:
//   f = σ(W_if x + b_if + W_hf h + b_hf)
//   g = tanh(W_ig x + b_ig + W_hg h + b_hg)
//   o = σ(W_io x + b_io + W_ho h + b_ho)
//   c' = f ⊙ c + (1 − f) ⊙ g
//   h' = o ⊙ tanh(c')
// A cell file for `--cell-file` and `lstm-wgpu check-cell`: it declares
// what shaders/cells/lstm.wgsl lists, and is joined after the prelude
// (sigmoid, tanh_clamped) with the recurrent strategies.

const CELL_GATES: u32 = 3u;
const CELL_STATES: u32 = 2u;
alias Gates = vec3<f32>;
const CELL_OWN_BHH: bool = false;
const CELL_SPLIT_DG: bool = false;
const CELL_DIAG: bool = false;
// f carries c's gradient back a step: dc_{t-1} = dc_t ⊙ f_t.
const CELL_CARRY: u32 = 0u;

fn cell_acc(pre: Gates, bh: Gates) -> Gates {
    return pre;
}

fn cell_join(acc: Gates, pre: Gates, bh: Gates) -> Gates {
    return acc + pre;
}

struct CellStep { act: Gates, c: f32, h: f32 }

// act = (f, g, o).
fn cell_forward(a: Gates, pre: Gates, c_prev: f32, h_prev: f32) -> CellStep {
    let f = sigmoid(a.x);
    let g = tanh_clamped(a.y);
    let o = sigmoid(a.z);
    let c = f * c_prev + (1.0 - f) * g;
    return CellStep(vec3<f32>(f, g, o), c, o * tanh_clamped(c));
}

struct CellGrads { da: Gates, dx: Gates, dc: f32 }

fn cell_dc_prev(dc: f32, f: f32) -> f32 {
    return dc * f;
}

// dc: of c_t, from h_t and from step t + 1; dc/df = c_prev − g.
fn cell_backward(act: Gates, c: f32, c_prev: f32, h_prev: f32, dh: f32, dc_rec: f32) -> CellGrads {
    let f = act.x;
    let g = act.y;
    let o = act.z;
    let tc = tanh_clamped(c);
    let dc = dh * o * (1.0 - tc * tc) + dc_rec;
    let df = dc * (c_prev - g) * f * (1.0 - f);
    let dg = dc * (1.0 - f) * (1.0 - g * g);
    let d_o = dh * tc * o * (1.0 - o);
    let da = vec3<f32>(df, dg, d_o);
    return CellGrads(da, da, dc);
}

// grad h0 = dgates_0 * W_hh; grad c0 = dc_0 ⊙ f_0.
fn cell_state_grads(dh_w: f32, carry: f32) -> vec2<f32> {
    return vec2<f32>(dh_w, carry);
}
