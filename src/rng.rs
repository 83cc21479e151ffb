//! The library's one seeded generator: SplitMix64, with the samplers the
//! datasets and the initialisers draw from. Deterministic for a seed on
//! every machine. (The f64 reference crate keeps a copy of its own; a test
//! checks that the two streams agree.)

/// SplitMix64 with uniform, integer and Gaussian samplers.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
    /// The second value of the last Box–Muller pair of [`Rng::normal`].
    spare: Option<f64>,
}

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed,
            spare: None,
        }
    }

    /// Next raw 64-bit value.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// Uniform integer in `0..n` (0 when `n == 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Standard normal sample (Box–Muller; the second value of each pair is
    /// kept for the next call). The datasets' noise.
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let u1 = 1.0 - self.next_f64(); // (0, 1]: ln is finite
        let u2 = self.next_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let th = std::f64::consts::TAU * u2;
        self.spare = Some(r * th.sin());
        r * th.cos()
    }

    /// Standard normal sample from one Box–Muller pair, its cosine half only
    /// (two uniforms per sample). The initialisers' stream (embedding
    /// N(0, 1), orthogonal W_hh): kept apart from [`Rng::normal`] because
    /// seeded initial weights, and the results documented from them, must
    /// not change.
    pub fn normal_unpaired(&mut self) -> f64 {
        let u1 = self.uniform(f64::MIN_POSITIVE, 1.0);
        let u2 = self.uniform(0.0, 1.0);
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// The seed of an independent stream numbered `stream` under `seed`
/// (e.g. one per epoch or per batch).
pub fn derive_seed(seed: u64, stream: u64) -> u64 {
    let mut r = Rng::new(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
    r.next_u64() ^ stream
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED: [u64; 5] = [
        0x3fec_3b62_0ee5_015b,
        0x3ff6_372f_c37a_e2d6,
        0xbfec_8a54_f4e9_1a7c,
        0x26,
        0xf08a_aefc_ec73_03c5,
    ];

    /// SplitMix64's published first outputs for seed 0.
    #[test]
    fn splitmix64_known_answers() {
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    /// Seeded weights, datasets and shuffles depend on these exact bits.
    #[test]
    fn streams_are_pinned() {
        let mut r = Rng::new(42);
        let got = [
            r.normal().to_bits(),
            r.normal().to_bits(),
            r.normal_unpaired().to_bits(),
            r.below(1000) as u64,
            derive_seed(42, 7),
        ];
        assert_eq!(got, PINNED);
    }

    #[test]
    fn samplers_stay_in_range() {
        let mut r = Rng::new(3);
        for _ in 0..1000 {
            let u = r.uniform(-2.0, 5.0);
            assert!((-2.0..5.0).contains(&u));
            assert!(r.below(7) < 7);
            assert!(r.normal().is_finite() && r.normal_unpaired().is_finite());
        }
        assert_eq!(r.below(0), 0);
    }
}
