//! Gradient health: per-layer gradient norms from the per-tensor norms a
//! step reads back ([`crate::train::StepStats::tensor_norms`]), exploding
//! steps and vanishing layers, counted per epoch and in all.
//!
//! A **layer** k holds every tensor of LSTM layer k, both directions:
//! `weight_ih_l{k}`, `weight_hh_l{k}`, `bias_ih_l{k}`, `bias_hh_l{k}` (and
//! `_reverse`), the in-cell norms of layer k (`ln_*_l{k}`, `bn_*_l{k}`) and
//! the between-layer norm applied to its output (`layer_norms.{k}.*`,
//! `batch_norms.{k}.*`, `step_norms.{k}.*`). The embedding and the head
//! belong to no layer: they have per-tensor norms only.
//!
//! A step **explodes** when its global norm (before clipping, unscaled)
//! exceeds the threshold: a fixed one, or 10× the median of the last
//! [`WINDOW`] finite norms before it (none before the first step). A layer
//! **vanishes** at a step when its norm is below [`VANISH_RATIO`] × the
//! largest layer norm of that step. A step with non-finite gradients (skipped)
//! counts neither way and does not enter the window.

use std::collections::VecDeque;

/// Norms the running median spans.
pub const WINDOW: usize = 100;
/// The median's multiplier when no threshold is fixed.
pub const MEDIAN_FACTOR: f64 = 10.0;
/// A layer norm below this fraction of the step's largest one vanishes.
pub const VANISH_RATIO: f64 = 1e-3;

/// The layer a parameter (by its table name) belongs to, as the module
/// docs define it; `None` for the embedding and the head.
pub fn layer_of(name: &str) -> Option<usize> {
    let mut parts = name.split('.');
    let first = parts.next()?;
    if first.ends_with("_norms") {
        return parts.next()?.parse().ok();
    }
    let base = first.strip_suffix("_reverse").unwrap_or(first);
    let i = base.rfind("_l")?;
    base[i + 2..].parse().ok()
}

/// Per-layer L2 norms of `layers` layers from the per-tensor norms of
/// `names` (same order): sqrt of the sum of the squares of the layer's
/// tensors' norms, in f64.
pub fn layer_norms(names: &[String], tensor_norms: &[f32], layers: usize) -> Vec<f64> {
    let mut sq = vec![0.0f64; layers];
    for (n, &v) in names.iter().zip(tensor_norms) {
        if let Some(k) = layer_of(n).filter(|&k| k < layers) {
            sq[k] += (v as f64) * (v as f64);
        }
    }
    sq.into_iter().map(f64::sqrt).collect()
}

/// The median of `v` (the mean of the two middle values for an even
/// count); `None` when empty.
pub fn median(v: &[f32]) -> Option<f64> {
    let mut s: Vec<f64> = v.iter().map(|&x| x as f64).collect();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(s[n / 2]),
        _ => Some((s[n / 2 - 1] + s[n / 2]) / 2.0),
    }
}

/// What one step's health check found.
#[derive(Clone, Debug, PartialEq)]
pub struct StepHealth {
    /// The threshold the step was held to (`None`: no median yet).
    pub threshold: Option<f64>,
    /// The global norm exceeded it.
    pub explosion: bool,
    /// Layers whose norm vanished, ascending.
    pub vanishing: Vec<usize>,
}

/// Explosion and vanishing counts of an epoch, or of the whole run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Exploding steps.
    pub explosions: u64,
    /// Vanishing (step, layer) pairs.
    pub vanishing: u64,
}

/// The running state of the health checks: the threshold, the window of
/// recent norms, and the counts of the current epoch and of the run.
/// Everything in it is what a checkpoint must keep for a resumed run to
/// count as an uninterrupted one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GradHealth {
    /// A fixed threshold; `None`: [`MEDIAN_FACTOR`] × the running median.
    pub fixed: Option<f64>,
    window: VecDeque<f32>,
    /// Counts of the epoch in progress.
    pub epoch: Counts,
    /// Counts of the run so far.
    pub total: Counts,
}

impl GradHealth {
    /// Fresh checks against `fixed`, or the running median when `None`.
    pub fn new(fixed: Option<f64>) -> Self {
        Self {
            fixed,
            ..Default::default()
        }
    }

    /// The threshold the next step is held to.
    pub fn threshold(&self) -> Option<f64> {
        match self.fixed {
            Some(t) => Some(t),
            None => median(&self.window()).map(|m| MEDIAN_FACTOR * m),
        }
    }

    /// Checks one step of global norm `norm` and per-layer norms `layers`
    /// (`skipped`: its gradients were not finite) and counts what it found.
    pub fn observe(&mut self, norm: f32, layers: &[f64], skipped: bool) -> StepHealth {
        let threshold = self.threshold();
        if skipped || !norm.is_finite() {
            return StepHealth {
                threshold,
                explosion: false,
                vanishing: Vec::new(),
            };
        }
        let explosion = threshold.is_some_and(|t| norm as f64 > t);
        let top = layers.iter().copied().fold(0.0f64, f64::max);
        let vanishing: Vec<usize> = match top > 0.0 {
            true => (0..layers.len())
                .filter(|&k| layers[k] < VANISH_RATIO * top)
                .collect(),
            false => Vec::new(),
        };
        let found = Counts {
            explosions: explosion as u64,
            vanishing: vanishing.len() as u64,
        };
        for c in [&mut self.epoch, &mut self.total] {
            c.explosions += found.explosions;
            c.vanishing += found.vanishing;
        }
        if self.window.len() == WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(norm);
        StepHealth {
            threshold,
            explosion,
            vanishing,
        }
    }

    /// Ends the epoch: its counts, which start again from zero.
    pub fn end_epoch(&mut self) -> Counts {
        std::mem::take(&mut self.epoch)
    }

    /// The norms the median spans, oldest first.
    pub fn window(&self) -> Vec<f32> {
        self.window.iter().copied().collect()
    }

    /// Restores the window (the last [`WINDOW`] values of `norms` are kept).
    pub fn set_window(&mut self, norms: &[f32]) {
        let from = norms.len().saturating_sub(WINDOW);
        self.window = norms[from..].iter().copied().collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_of_every_kind_of_name() {
        for (n, want) in [
            ("weight_ih_l0", Some(0)),
            ("bias_hh_l12_reverse", Some(12)),
            ("ln_c_l1.weight", Some(1)),
            ("bn_hh_l2_reverse.bias", Some(2)),
            ("layer_norms.3.weight", Some(3)),
            ("step_norms.0.bias", Some(0)),
            ("embedding.weight", None),
            ("head.weight", None),
            ("head.bias", None),
        ] {
            assert_eq!(layer_of(n), want, "{n}");
        }
    }

    #[test]
    fn layer_norms_sum_squares_of_both_directions() {
        let names: Vec<String> = [
            "weight_ih_l0",
            "weight_ih_l0_reverse",
            "weight_hh_l1",
            "head.weight",
        ]
        .map(String::from)
        .to_vec();
        let l = layer_norms(&names, &[3.0, 4.0, 2.0, 100.0], 2);
        assert_eq!(l, vec![5.0, 2.0]);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn median_threshold_counts_a_spike_and_slides() {
        let mut h = GradHealth::new(None);
        // No median before the first step: nothing can explode.
        let s = h.observe(1e9, &[1.0], false);
        assert_eq!((s.threshold, s.explosion), (None, false));
        let mut h = GradHealth::new(None);
        for _ in 0..WINDOW {
            assert!(!h.observe(1.0, &[1.0], false).explosion);
        }
        // 10 × median 1: 10 is not above, 10.5 is.
        assert!(!h.observe(10.0, &[1.0], false).explosion);
        let s = h.observe(10.5, &[1.0], false);
        assert_eq!((s.threshold, s.explosion), (Some(10.0), true));
        // Non-finite (skipped) steps count neither way nor enter the window.
        assert!(!h.observe(f32::INFINITY, &[1.0], true).explosion);
        assert_eq!(h.window().len(), WINDOW);
        assert_eq!(h.window().last(), Some(&10.5));
        assert_eq!(h.total.explosions, 1);
        // The window keeps the last WINDOW norms: 100 steps of 50 move the
        // median to 50.
        for _ in 0..WINDOW {
            h.observe(50.0, &[1.0], false);
        }
        assert_eq!(h.threshold(), Some(500.0));
    }

    #[test]
    fn fixed_threshold_and_epochs() {
        let mut h = GradHealth::new(Some(2.0));
        for n in [1.0, 3.0, 2.0, 5.0] {
            h.observe(n, &[1.0, 1.0], false);
        }
        assert_eq!(h.end_epoch().explosions, 2);
        h.observe(9.0, &[1.0, 1.0], false);
        assert_eq!(h.epoch.explosions, 1);
        assert_eq!(h.total.explosions, 3);
    }

    #[test]
    fn vanishing_layers_against_the_largest() {
        let mut h = GradHealth::new(Some(1e9));
        let s = h.observe(1.0, &[1.0, 0.9e-3, 1e-3, 0.0], false);
        assert_eq!(s.vanishing, vec![1, 3]);
        // All zero: nothing to compare against.
        assert!(h.observe(0.0, &[0.0, 0.0], false).vanishing.is_empty());
        assert_eq!(h.total.vanishing, 2);
    }

    #[test]
    fn window_round_trips() {
        let mut h = GradHealth::new(None);
        for i in 0..150 {
            h.observe(i as f32, &[], false);
        }
        let mut g = GradHealth::new(None);
        g.set_window(&h.window());
        assert_eq!(g.threshold(), h.threshold());
        assert_eq!(g.window().len(), WINDOW);
    }
}
