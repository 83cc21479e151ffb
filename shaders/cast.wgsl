// Precision casts for f16-mixed training. `to_half` writes the f16 shadow
// of an f32 buffer (the master weights), two values per u32 word packed
// with pack2x16float, so this module needs no `enable f16;` and every
// invocation owns whole words (no two invocations store into one word).
// Values beyond f16's range are clamped to ±65504 first (pack2x16float of
// an unrepresentable value is indeterminate); NaN stays NaN.

// struct Params: written into the source from its Rust declaration,
// CastUniform (src/kernels/cast.rs).

const F16_MAX: f32 = 65504.0;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

fn half_of(x: f32) -> f32 {
    // NaN fails both comparisons and passes through.
    if x > F16_MAX {
        return F16_MAX;
    }
    if x < -F16_MAX {
        return -F16_MAX;
    }
    return x;
}

@compute @workgroup_size(64)
fn to_half(@builtin(global_invocation_id) gid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let w = gid.x + gid.y * nwg.x * 64u;
    let i = 2u * w;
    if i >= p.n {
        return;
    }
    var hi = 0.0;
    if i + 1u < p.n {
        hi = half_of(src[i + 1u]);
    }
    dst[w] = pack2x16float(vec2<f32>(half_of(src[i]), hi));
}
