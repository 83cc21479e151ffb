// The uniform block and bindings 0 to 5 of the normalizations between
// layers (batch_norm.wgsl, layer_norm.wgsl), joined by their wrappers; each
// declares its bindings from 6 on. The uniform block is mirrored by
// NormUniform in src/kernels/layer_norm.rs; rm_off, rv_off and run_rows are
// BatchNorm's; t0 is LayerNorm's first step and BatchNorm's stream position.

struct Params {
    seq: u32, batch: u32, f: u32, flags: u32,
    x_off: u32, y_off: u32, dy_off: u32, dx_off: u32,
    stats_off: u32, w_off: u32, b_off: u32, dw_off: u32,
    db_off: u32, rm_off: u32, rv_off: u32, run_rows: u32,
    t0: u32, _p0: u32, _p1: u32, _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// w and b (at w_off, b_off).
@group(0) @binding(1) var<storage, read> prm: array<f32>;
@group(0) @binding(2) var<storage, read> lengths: array<u32>;
// Data bindings are read_write so that any of them may share a buffer
// (wgpu rejects one buffer bound both read-only and read-write).
@group(0) @binding(3) var<storage, read_write> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;
