// The fixed-order workgroup tree of the scalar reductions (attention.wgsl,
// layer_norm.wgsl, loss.wgsl), joined after the prelude by their wrappers.
// The joining shader declares RED_LEN, the slots of `red`: at least its
// largest workgroup.

var<workgroup> red: array<f32, RED_LEN>;

// Fixed-order tree over the first `n` slots of `red` (n a power of two);
// must be called in uniform control flow. Returns the sum (or max) of every
// invocation's v, added in the same order on every run and adapter.
fn tree(v: f32, lid: u32, n: u32, is_max: bool) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = n / 2u; s > 0u; s = s >> 1u) {
        if lid < s {
            if is_max {
                red[lid] = max(red[lid], red[lid + s]);
            } else {
                red[lid] = red[lid] + red[lid + s];
            }
        }
        workgroupBarrier();
    }
    let r = red[0];
    // Everyone has read the result before `red` is reused.
    workgroupBarrier();
    return r;
}
