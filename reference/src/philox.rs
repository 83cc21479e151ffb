//! The dropout mask on the CPU: Philox4x32-10 (Random123) keyed by a seed
//! and counted by step, as the engine's dropout kernel draws it. A copy of
//! the engine's host mirror, so that the reference shares no code with what
//! it judges; the engine's tests check that the two agree.

/// Per-step state of the dropout generator: a 64-bit seed (the Philox key)
/// and a counter (typically the step number: a new mask every step).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropoutStep {
    /// 64-bit seed (Philox key: low word, high word).
    pub seed: u64,
    /// Counter, typically the step number.
    pub counter: u32,
}

/// Drop threshold for `p`: `round(p·2³²)`; an element is kept iff its random
/// word is `>=` it. Errors unless `0 <= p < 1`.
pub fn dropout_threshold(p: f32) -> Result<u32, String> {
    if !(p.is_finite() && (0.0..1.0).contains(&p)) {
        return Err(format!("dropout probability must be in [0, 1), got {p}"));
    }
    Ok(((p as f64) * 4294967296.0).round().min(u32::MAX as f64) as u32)
}

/// (high, low) words of `a·b`.
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// Philox4x32-10: the block of `ctr` under `key`.
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (ctr, key);
    for _ in 0..10 {
        let (h0, l0) = mulhilo(0xD251_1F53, c[0]);
        let (h1, l1) = mulhilo(0xCD9E_8D57, c[2]);
        c = [h1 ^ c[1] ^ k[0], l1, h0 ^ c[3] ^ k[1], l0];
        k = [
            k[0].wrapping_add(0x9E37_79B9),
            k[1].wrapping_add(0xBB67_AE85),
        ];
    }
    c
}

/// Whether element `i` of dropout site `stream` survives at `step` with drop
/// probability `p`.
pub fn dropout_keep(step: &DropoutStep, stream: u32, i: u32, p: f32) -> Result<bool, String> {
    let thr = dropout_threshold(p)?;
    if thr == 0 {
        return Ok(true);
    }
    let (lo, hi) = (step.seed as u32, (step.seed >> 32) as u32);
    let r = philox4x32_10([i / 4, step.counter, stream, 0], [lo, hi]);
    Ok(r[(i % 4) as usize] >= thr)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123's known-answer vectors for Philox4x32-10.
    #[test]
    fn philox_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
    }

    #[test]
    fn threshold_and_rate() {
        assert!(dropout_threshold(1.0).is_err());
        assert!(dropout_threshold(f32::NAN).is_err());
        assert_eq!(dropout_threshold(0.0), Ok(0));
        let st = DropoutStep {
            seed: 7,
            counter: 3,
        };
        let kept = (0..40_000u32)
            .filter(|&i| dropout_keep(&st, 1, i, 0.25).unwrap_or(false))
            .count();
        assert!((kept as f64 / 40_000.0 - 0.75).abs() < 0.01, "{kept}");
    }
}
