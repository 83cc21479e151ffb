// The uniform block and bindings 0 to 5 of the normalizations between
// layers (batch_norm.wgsl, layer_norm.wgsl), joined by their wrappers; each
// declares its bindings from 6 on. struct Params is written into the source
// from its Rust declaration, NormUniform (src/kernels/layer_norm.rs);
// rm_off, rv_off and run_rows are BatchNorm's; t0 is LayerNorm's first
// step and BatchNorm's stream position.

@group(0) @binding(0) var<uniform> p: Params;
// w and b (at w_off, b_off).
@group(0) @binding(1) var<storage, read> prm: array<f32>;
@group(0) @binding(2) var<storage, read> lengths: array<u32>;
// Data bindings are read_write so that any of them may share a buffer
// (wgpu rejects one buffer bound both read-only and read-write).
@group(0) @binding(3) var<storage, read_write> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;
