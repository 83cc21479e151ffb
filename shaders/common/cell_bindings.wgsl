// Storage bindings 1 to 11 of the recurrent cells in f32 (lstm_cell_ln,
// lstm_cell_bn, lstm_persistent; lstm_cell.wgsl declares the same numbers
// with its f16-capable types), joined by their wrappers. A kernel binds
// only those it uses (src/kernels/lstm_cell.rs, FWD_BINDINGS and
// BWD_BINDINGS).
@group(0) @binding(1) var<storage, read> pre: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> state_in: array<f32>;
@group(0) @binding(4) var<storage, read> lengths: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> cache: array<f32>;
@group(0) @binding(7) var<storage, read_write> state_out: array<f32>;
@group(0) @binding(8) var<storage, read> dy: array<f32>;
@group(0) @binding(9) var<storage, read> gstate_in: array<f32>;
@group(0) @binding(10) var<storage, read_write> dg: array<f32>;
@group(0) @binding(11) var<storage, read_write> gstate_out: array<f32>;
