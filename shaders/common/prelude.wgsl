// Functions shared by the kernels, joined before a shader's own source by
// its wrapper (src/kernels/wgsl.rs, `shader!`). Pure functions and the
// entry points' workgroup builtins only: no bindings, no module-scope
// variables, no names a shader may define.

// ---- activations ------------------------------------------------------------

// Fast: the built-ins.
fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// tanh saturates to +-1 in f32 long before 15; clamping keeps exp-based
// implementations from overflowing into NaN.
fn tanh_clamped(x: f32) -> f32 {
    return tanh(clamp(x, -15.0, 15.0));
}

// Accurate exp, sigmoid and tanh (about 1-2 ulp, unbiased), for the
// recurrent BatchNorm cell. The built-ins are not enough there: lavapipe's
// exp is off by up to 6 ulp with a systematic bias (+0.7 ulp on average)
// and its tanh, lowered as (e^2x - 1)/(e^2x + 1), has an absolute error of
// ~1e-7 near 0 (thousands of ulp). Train-mode recurrent BatchNorm amplifies
// such errors strongly (small per-step batches, batch spreads comparable to
// sqrt(eps)), and with the built-ins the kernel's error was ~1.5x that of
// PyTorch float32; with these it matches it. NaN propagates (no clamp of the
// argument).

// e^x: x = k ln2 + r (Cody-Waite split of ln2, |r| <= ln2/2), degree-7
// Taylor polynomial for e^r (truncation < 6e-9 relative), scaled by 2^k.
fn exp_acc(x: f32) -> f32 {
    let k = clamp(round(x * 1.4426950408889634), -126.0, 127.0);
    let r = (x - k * 0.693145751953125) - k * 1.4286067653302226e-6;
    let q = 1.0 + r * (1.0 + r * (0.5 + r * (0.16666666666666666 + r * (0.041666666666666664
        + r * (0.008333333333333333 + r * (0.001388888888888889 + r * 0.0001984126984126984))))));
    // Below -87 the result underflows anyway (and r would leave the range of
    // the polynomial); above 88.7 ldexp overflows to +inf as it should.
    return select(ldexp(q, i32(k)), 0.0, x < -87.0);
}

fn sigmoid_acc(x: f32) -> f32 {
    return 1.0 / (1.0 + exp_acc(-x));
}

// tanh: odd Taylor polynomial to degree 17 for |x| < 0.4 (truncation < 1e-11
// relative), else 1 - 2/(e^2|x| + 1) (no cancellation worse than 1.6x there).
fn tanh_acc(x: f32) -> f32 {
    let a = abs(x);
    var r: f32;
    if a < 0.4 {
        let z = a * a;
        r = a + a * z * (-0.3333333333333333 + z * (0.13333333333333333 + z * (-0.05396825396825397
            + z * (0.021869488536155203 + z * (-0.008863235529902197 + z * (0.003592128036572481
            + z * (-0.0014558343870513183 + z * 0.0005900274409455859)))))));
    } else {
        r = 1.0 - 2.0 / (exp_acc(2.0 * a) + 1.0);
    }
    return select(r, -r, x < 0.0);
}

// ---- time order -------------------------------------------------------------

// Time of step s of a sequence of length len: steps count in the sequence's
// own processing order (what pack_padded_sequence does).
fn time_of(s: u32, len: u32, reverse: u32) -> u32 {
    if reverse != 0u {
        return len - 1u - s;
    }
    return s;
}

// Time of the step before the one at time t.
fn prev_time(t: u32, reverse: u32) -> u32 {
    if reverse != 0u {
        return t + 1u;
    }
    return t - 1u;
}

// ---- grids ------------------------------------------------------------------

// Element index of invocation lid of workgroup wid on an (x, y) grid of
// wg-wide workgroups (the host spills into y past the x limit).
fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, wg: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * wg + lid;
}

// The same from the global invocation id.
fn global_index(gid: vec3<u32>, nwg: vec3<u32>, wg: u32) -> u32 {
    return gid.x + gid.y * nwg.x * wg;
}

// The workgroup builtins of most entry points, declared once:
// `fn k(grid: Grid, @builtin(local_invocation_index) lid: u32)`. Both are
// uniform, so that what is computed from them alone is.
struct Grid {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
}

// Index of the workgroup on the (x, y) grid.
fn group_of(grid: Grid) -> u32 {
    return grid.wid.x + grid.wid.y * grid.nwg.x;
}

// flat_index of invocation lid.
fn grid_index(grid: Grid, lid: u32, wg: u32) -> u32 {
    return flat_index(grid.wid, grid.nwg, lid, wg);
}
