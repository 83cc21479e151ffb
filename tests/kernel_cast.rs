//! The f16 shadow cast (`shaders/cast.wgsl`, `to_half`) against the `half`
//! crate's f32 -> f16 conversion (round to nearest, ties to even), bit for
//! bit, so that f32 -> f16 -> f32 gives `half`'s value: exact f16 values, values that must round (ties
//! included), subnormals and underflow to ±0, values past f16's range and
//! ±inf clamped to ±65504 (not inf), NaN kept NaN; two values a word, the
//! even index in the low half; an odd count leaving the last high half 0;
//! words past the count untouched; and a count large enough for a 2-D grid
//! of workgroups.

mod common;

use common::ctx;
use common::gpu::*;
use half::f16;
use lstm_wgpu::GpuContext;
use lstm_wgpu::kernels::cast::{Cast, half_words};

/// What a destination buffer holds before the cast, in every word.
const SENTINEL: u32 = 0xDEAD_BEEF;

/// The largest finite f16.
const F16_MAX: f32 = 65504.0;

/// The f16 the kernel must write for `x`: clamped to ±65504, then rounded
/// to nearest even (NaN stays NaN).
fn want_half(x: f32) -> f16 {
    f16::from_f32(if x.is_nan() {
        x
    } else {
        x.clamp(-F16_MAX, F16_MAX)
    })
}

/// Casts `src` on the GPU into a buffer of `half_words(len) + 3` words
/// filled with [`SENTINEL`]; returns every word of it.
fn cast(ctx: &GpuContext, cast: &Cast, src: &[f32]) -> Vec<u32> {
    let words = half_words(src.len()) + 3;
    let s = upload(ctx, "src", &placed(src.len().max(1), 0.0, &[(0, src)]));
    let d = upload(ctx, "dst", &vec![SENTINEL; words]);
    let ds = cast
        .to_half(ctx, src.len(), &s, &d)
        .unwrap_or_else(|e| panic!("{e}"));
    run(ctx, &[ds]);
    bits(&read(ctx, &d, 0, words))
}

/// The words of a cast of `src` against [`want_half`]: each value bit for
/// bit (so back to f32 the same value; any NaN for NaN), the unused high half of an odd
/// count zero, the words past it untouched.
fn check(label: &str, src: &[f32], got: &[u32]) {
    let n = src.len();
    for (i, &x) in src.iter().enumerate() {
        let word = got[i / 2];
        let h = f16::from_bits(if i % 2 == 0 {
            word as u16
        } else {
            (word >> 16) as u16
        });
        let want = want_half(x);
        if x.is_nan() {
            assert!(
                h.is_nan(),
                "{label}: [{i}] NaN cast to {h} ({:#06x})",
                h.to_bits()
            );
            continue;
        }
        assert!(
            h.to_bits() == want.to_bits(),
            "{label}: [{i}] {x:e} ({:#010x}) cast to {:e} ({:#06x}), want {:e} ({:#06x})",
            x.to_bits(),
            h.to_f32(),
            h.to_bits(),
            want.to_f32(),
            want.to_bits()
        );
    }
    let used = n.div_ceil(2);
    if n % 2 == 1 {
        assert_eq!(got[used - 1] >> 16, 0, "{label}: high half past the count");
    }
    for (w, &word) in got.iter().enumerate().skip(used) {
        assert_eq!(word, SENTINEL, "{label}: word {w} past the count written");
    }
}

/// f16's special values and edges, each with both signs: exact values,
/// ties that round to even (down and up), subnormals, underflow, overflow
/// past the rounding boundary (65520 rounds to inf unclamped) and ±inf.
fn edges() -> Vec<f32> {
    let ulp1 = 2f32.powi(-10); // f16's spacing in [1, 2)
    let sub = 2f32.powi(-24); // the smallest f16 subnormal
    let mut v = vec![
        0.0,
        1.0,
        2.5,
        1.0 / 3.0,
        std::f32::consts::PI,
        F16_MAX,
        65519.0,
        65520.0,
        1e6,
        f32::MAX,
        f32::INFINITY,
        2f32.powi(-14),       // the smallest normal
        2f32.powi(-14) - sub, // the largest subnormal
        sub,
        3.0 * sub,
        sub / 2.0,                // a tie with 0: to even, 0
        sub * 1.5,                // a tie between sub and 2 sub: 2 sub
        sub / 2.0 + sub / 1024.0, // just past the tie: sub
        sub / 4.0,
        f32::MIN_POSITIVE,
        1.0 + ulp1 / 2.0,                 // tie: down to 1
        1.0 + 3.0 * ulp1 / 2.0,           // tie: up to 1 + 2 ulp
        1.0 + ulp1 / 2.0 + ulp1 / 4096.0, // just past the tie: up
        1.0 + ulp1 / 2.0 - ulp1 / 4096.0, // just short of it: down
        2048.0 + 1.0,                     // spacing 2 above 2048: tie, down
        2048.0 + 3.0,                     // tie, up
        0.1,
        1234.567,
    ];
    let neg: Vec<f32> = v.iter().map(|x| -x).collect();
    v.extend(neg);
    v.extend([f32::NAN, -f32::NAN, f32::from_bits(0x7f80_0001)]);
    v
}

#[test]
fn to_half_matches_half_rounding() {
    let ctx = ctx();
    let c = Cast::new(&ctx);
    let e = edges();
    // Odd and even counts, so that both halves of the last word get each
    // value somewhere; and the values one by one.
    check("edges", &e, &cast(&ctx, &c, &e));
    check("edges, shifted", &e[1..], &cast(&ctx, &c, &e[1..]));
    for (i, &x) in e.iter().enumerate() {
        check(&format!("edge {i} alone"), &[x], &cast(&ctx, &c, &[x]));
    }
    // Random values over f16's whole range of magnitudes, 2^-26 to 2^17,
    // both signs; several workgroups of 64 words and a partial last one.
    let mut rng = lstm_wgpu_reference::Rng::new(3);
    let r: Vec<f32> = rng
        .vec(2 * 64 * 5 + 37, -1.0, 1.0)
        .into_iter()
        .zip(rng.vec(2 * 64 * 5 + 37, -26.0, 17.0))
        .map(|(s, p)| (s.signum() * 2f64.powf(p)) as f32)
        .collect();
    check("random", &r, &cast(&ctx, &c, &r));
}

#[test]
fn to_half_empty_writes_nothing() {
    let ctx = ctx();
    let c = Cast::new(&ctx);
    check("empty", &[], &cast(&ctx, &c, &[]));
}

/// More words than one grid dimension holds workgroups of 64: the kernel's
/// index must follow `GpuContext::grid` into its second dimension.
#[test]
fn to_half_over_a_2d_grid() {
    let ctx = ctx();
    let c = Cast::new(&ctx);
    let max = ctx.limits.max_compute_workgroups_per_dimension as usize;
    let n = 2 * 64 * (max + 2) + 1;
    assert!(
        ctx.grid(half_words(n).div_ceil(64) as u32).1 > 1,
        "not a 2-D grid"
    );
    // Values that round differently word by word, and say where they were.
    let src: Vec<f32> = (0..n)
        .map(|i| (i % 4099) as f32 * 0.37 - 700.0 + (i / 4099) as f32 * 1e-3)
        .collect();
    check("2-D grid", &src, &cast(&ctx, &c, &src));
}
