// Gradient clipping over segments of one flat gradient buffer: global and
// per-segment L2 norms, clip by norm (scale computed on the GPU) and clip by
// value. No atomics: every sum is reduced in a fixed order, so results are
// bit-identical run to run.
//
// The segment list (offset, len) is split on the host into chunks of at most
// CHUNK elements, each inside one segment. `table` holds
//   [0, 2·n_chunks):                 (offset, len) of every chunk
//   [seg_base, seg_base + 2·n_segs): (first chunk, chunk count) per segment
//
// Dispatches, in order:
//   partials  one workgroup per chunk: sum of squares and a non-finite flag
//             of the chunk (fixed-order tree in workgroup memory);
//   segsum    one workgroup per segment: tree over its chunk partials;
//   finalize  one workgroup: tree over the per-segment sums, then the norm,
//             the scale and the non-finite flag, and the loss scaler's update;
//   apply     one workgroup per chunk: in-place unscale, scale and/or clamp.
//
// Every invocation runs few loop iterations (at most 64 + 6 per chunk, and
// n/64 + 6 over n partials or segments): Mesa's llvmpipe/lavapipe silently
// ends all loops of an invocation after 65535 iterations in total, so a
// single-workgroup loop over every segment would break on large tables.
//
// stats layout (f32): [sum_sq, norm, scale, nonfinite (0 or 1),
//                      loss_scale_used, loss_scale, good_steps, skipped,
//                      seg_sum_sq[0 .. n_segs]].
//
// Dynamic loss scaling (flag HAS_SCALER, as torch.amp.GradScaler): the
// gradients arrive multiplied by S = stats[5]. `partials` multiplies every
// element by 1/S before squaring and testing it, so the norms, the clip scale
// and the flag are those of the unscaled gradients; `finalize` keeps S in
// stats[4] and updates stats[5..8] (×backoff, good steps 0, skipped + 1 on a
// non-finite step; ×growth after `interval` good steps in a row, unless that
// overflows); `apply` writes (g / S)·scale. Counters are f32 integers (exact
// below 2^24). Without the flag stats[4] is 1 and stats[5..8] are untouched.
//
// Non-finite gradients (any NaN/Inf element, or a sum of squares that
// overflows f32) set the flag, force scale = 1 and make `apply` leave the
// gradients untouched, so that a trainer can skip the step.

// struct Params: written into the source from its Rust declaration,
// ClipUniform (src/kernels/clip.rs).

// flags
const HAS_MAX_NORM: u32 = 1u;
const HAS_CLIP_VALUE: u32 = 2u;
const HAS_SCALER: u32 = 4u;

const HEADER: u32 = 8u;

const WG: u32 = 64u;
const EPS: f32 = 1e-6;
const EXP_MASK: u32 = 0x7f800000u;
const QUIET_NAN: u32 = 0x7fc00000u;

@group(0) @binding(0) var<uniform> p: Params;
// Chunk and segment table, shared by all entry points.
@group(0) @binding(1) var<storage, read> table: array<u32>;

var<workgroup> sh: array<f32, WG>;
var<workgroup> shf: array<u32, WG>;

// NaN or ±Inf, from the bits: `x != x` may be folded away by a compiler.
fn nonfinite(x: f32) -> u32 {
    return u32((bitcast<u32>(x) & EXP_MASK) == EXP_MASK);
}

// Tree reduction of sh (sum) and shf (or) over the workgroup; the result is
// in sh[0] / shf[0] after the call. Must be called in uniform control flow,
// after each invocation has written its own slot.
fn tree(lid: u32) {
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            sh[lid] += sh[lid + s];
            shf[lid] |= shf[lid + s];
        }
        workgroupBarrier();
    }
}

// ---- partials --------------------------------------------------------------

@group(0) @binding(2) var<storage, read> pg: array<f32>;
// [0, n_chunks): sums of squares; [n_chunks, 2·n_chunks): flags (0 or 1).
@group(0) @binding(3) var<storage, read_write> pout: array<f32>;
// The stats of the previous step: the loss scale S the gradients carry.
@group(0) @binding(8) var<storage, read> pstats: array<f32>;

@compute @workgroup_size(64)
fn partials(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let c = group_of(grid);
    if c >= p.n_chunks {
        return;
    }
    let off = table[2u * c];
    let len = table[2u * c + 1u];
    var inv = 1.0;
    if (p.flags & HAS_SCALER) != 0u {
        inv = 1.0 / pstats[5];
    }
    var acc = 0.0;
    var bad = 0u;
    for (var i = lid; i < len; i += WG) {
        let x = pg[off + i] * inv;
        bad |= nonfinite(x);
        acc += x * x;
    }
    sh[lid] = acc;
    shf[lid] = bad;
    tree(lid);
    if lid == 0u {
        pout[c] = sh[0];
        pout[p.n_chunks + c] = f32(shf[0]);
    }
}

// ---- segsum ----------------------------------------------------------------

@group(0) @binding(4) var<storage, read> fpart: array<f32>;
@group(0) @binding(5) var<storage, read_write> fstats: array<f32>;

// One workgroup per segment: the sum of its chunk partials, written to
// stats[HEADER + s]; NaN when a chunk saw a non-finite element (so the value
// itself carries the flag even if NaN/Inf did not propagate through the sum).
@compute @workgroup_size(64)
fn segsum(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let s = group_of(grid);
    if s >= p.n_segs {
        return;
    }
    let first = table[p.seg_base + 2u * s];
    let cnt = table[p.seg_base + 2u * s + 1u];
    var acc = 0.0;
    var bad = 0u;
    for (var i = lid; i < cnt; i += WG) {
        acc += fpart[first + i];
        bad |= u32(fpart[p.n_chunks + first + i] != 0.0);
    }
    sh[lid] = acc;
    shf[lid] = bad;
    tree(lid);
    if lid == 0u {
        var v = sh[0];
        if shf[0] != 0u && nonfinite(v) == 0u {
            v = bitcast<f32>(QUIET_NAN);
        }
        fstats[HEADER + s] = v;
    }
}

// ---- finalize --------------------------------------------------------------

// One workgroup: the global sum of the per-segment sums (fixed order), the
// norm, the scale, the flag and the loss scaler's update.
@compute @workgroup_size(64)
fn finalize(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    var bad = 0u;
    for (var i = lid; i < p.n_segs; i += WG) {
        let v = fstats[HEADER + i];
        acc += v;
        bad |= nonfinite(v);
    }
    sh[lid] = acc;
    shf[lid] = bad;
    tree(lid);
    if lid == 0u {
        var sum = sh[0];
        let flagged = shf[0] != 0u || nonfinite(sum) != 0u;
        if flagged && nonfinite(sum) == 0u {
            sum = bitcast<f32>(QUIET_NAN);
        }
        let norm = sqrt(sum);
        var scale = 1.0;
        if !flagged && (p.flags & HAS_MAX_NORM) != 0u {
            scale = min(1.0, p.max_norm / (norm + EPS));
        }
        fstats[0] = sum;
        fstats[1] = norm;
        fstats[2] = scale;
        fstats[3] = select(0.0, 1.0, flagged);
        if (p.flags & HAS_SCALER) == 0u {
            fstats[4] = 1.0;
        } else {
            let used = fstats[5];
            var next = used;
            var good = fstats[6];
            var skipped = fstats[7];
            if flagged {
                next = used * p.backoff;
                good = 0.0;
                skipped += 1.0;
            } else {
                good += 1.0;
                if good >= f32(p.interval) {
                    let grown = used * p.growth;
                    if nonfinite(grown) == 0u {
                        next = grown;
                    }
                    good = 0.0;
                }
            }
            fstats[4] = used;
            fstats[5] = next;
            fstats[6] = good;
            fstats[7] = skipped;
        }
    }
}

// ---- apply -----------------------------------------------------------------

@group(0) @binding(6) var<storage, read> astats: array<f32>;
@group(0) @binding(7) var<storage, read_write> ag: array<f32>;

@compute @workgroup_size(64)
fn apply(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let c = group_of(grid);
    if c >= p.n_chunks || astats[3] != 0.0 {
        return;
    }
    let scale = astats[2];
    let do_scale = scale < 1.0;
    let do_clamp = (p.flags & HAS_CLIP_VALUE) != 0u;
    let unscale = (p.flags & HAS_SCALER) != 0u;
    if !do_scale && !do_clamp && !unscale {
        return;
    }
    // Unscaled first, then clipped: the products PyTorch forms after
    // GradScaler.unscale_ and clip_grad_norm_.
    let inv = 1.0 / astats[4];
    let v = p.clip_value;
    let off = table[2u * c];
    let len = table[2u * c + 1u];
    for (var i = lid; i < len; i += WG) {
        let x = ag[off + i];
        var y = x;
        var write = do_scale || unscale;
        if unscale {
            y = y * inv;
        }
        if do_scale {
            y = y * scale;
        }
        if do_clamp {
            // Explicit tests rather than clamp(): elements inside [-v, v]
            // are not rewritten at all, so they stay bit-identical.
            if y > v {
                y = v;
                write = true;
            } else if y < -v {
                y = -v;
                write = true;
            }
        }
        if write {
            ag[off + i] = y;
        }
    }
}
