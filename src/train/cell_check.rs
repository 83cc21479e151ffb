//! `check-cell`: whether a cell's hand-written backward is the gradient of
//! its forward, and whether a model of it trains.
//!
//! The gradients come from `check_cell.wgsl` (on the GPU, in f32, beside
//! central differences of the cell's own forward at steps δ = 2^-7 and
//! δ/2 on random inputs); this module draws the inputs and judges them.
//! An element's relative error is `|g − fd| / max(|g|, |fd|, FLOOR)` with
//! fd the difference at δ; the cell passes when every quantity's worst is
//! at most [`TOLERANCE`]. Where the two differences disagree by more than
//! the tolerance the forward is not smooth within δ of the point (a ReLU's
//! kink), and the element is left out and counted; more than
//! [`MAX_SKIPPED`] of a quantity's elements left out fails the check.

use crate::GpuContext;
use crate::kernels::cell::Cell;
use crate::kernels::check_cell::{CheckCell, in_width, out_width};
use crate::{Error, Result};
use std::sync::Arc;

/// The worst relative error a quantity may have. Measured on lavapipe
/// the shipped cells stay below 1e-3 (the f32 rounding of the forward,
/// amplified by the 1/2δ of the quotient); a wrong term in a backward is
/// off by its own size, tens of percent.
pub const TOLERANCE: f64 = 1e-2;
/// Below this magnitude errors count absolutely: the differences' own
/// noise is about 1e-5 there.
pub const FLOOR: f64 = 1e-2;
/// The larger step of the central differences (the other is half of it).
pub const DELTA: f32 = 1.0 / 128.0;
/// Units (random input points) of the check.
pub const UNITS: usize = 512;
/// The share of a quantity's elements that may be left out as not smooth.
pub const MAX_SKIPPED: f64 = 0.05;

/// One quantity's comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantity {
    /// `da`, `dx`, `carry`, `h0` or `c0`.
    pub name: &'static str,
    /// Its worst relative error over the elements compared.
    pub worst: f64,
    /// Where: (unit, gate) of the worst (gate 0 for the per-unit ones).
    pub at: (usize, usize),
    /// That element's analytic value and difference.
    pub values: (f64, f64),
    /// Elements compared.
    pub compared: usize,
    /// Elements left out as not smooth within δ.
    pub skipped: usize,
    /// Elements where either side is not finite.
    pub nonfinite: usize,
}

impl Quantity {
    /// Whether it passes: finite, within [`TOLERANCE`], few left out.
    pub fn passed(&self) -> bool {
        self.nonfinite == 0
            && self.worst <= TOLERANCE
            && (self.skipped as f64) <= MAX_SKIPPED * (self.compared + self.skipped) as f64
    }

    /// Why it fails, or None.
    pub fn failure(&self) -> Option<String> {
        if self.nonfinite > 0 {
            return Some(format!(
                "{}: {} non-finite values",
                self.name, self.nonfinite
            ));
        }
        if self.worst > TOLERANCE {
            return Some(format!(
                "{}: relative error {:.3e} above {TOLERANCE:e} (unit {}, gate {}: backward {:.6e}, \
                 difference {:.6e})",
                self.name, self.worst, self.at.0, self.at.1, self.values.0, self.values.1
            ));
        }
        (!self.passed()).then(|| {
            format!(
                "{}: {} of {} points not smooth within the step",
                self.name,
                self.skipped,
                self.compared + self.skipped
            )
        })
    }
}

/// The gradient check of a cell.
#[derive(Clone, Debug, PartialEq)]
pub struct GradCheck {
    /// da, dx, carry, h0, c0.
    pub quantities: Vec<Quantity>,
}

impl GradCheck {
    /// Every quantity's failure; empty when it passed.
    pub fn failures(&self) -> Vec<String> {
        self.quantities
            .iter()
            .filter_map(Quantity::failure)
            .collect()
    }
}

/// Multiples of 2^-12, so that moving by δ or δ/2 is exact in f32.
fn grid(v: f64) -> f32 {
    ((v * 4096.0).round() / 4096.0) as f32
}

/// The check's inputs for `cell`, per unit: r, pre, bh (zero unless the
/// cell adds b_hh itself, as the strategies pass it), w, c_prev, h_prev,
/// dh, dc_next, gate_next.
fn inputs(cell: Cell, units: usize, seed: u64) -> Vec<f32> {
    let g = cell.gates();
    let mut rng = crate::rng::Rng::new(seed);
    let mut v = Vec::with_capacity(units * in_width(cell));
    for _ in 0..units {
        let mut u = |lo: f64, hi: f64| grid(rng.uniform(lo, hi));
        v.extend((0..g).map(|_| u(-1.5, 1.5)).collect::<Vec<_>>());
        v.extend((0..g).map(|_| u(-1.5, 1.5)).collect::<Vec<_>>());
        let bh: Vec<f32> = (0..g).map(|_| u(-0.5, 0.5)).collect();
        match cell.own_bhh() {
            true => v.extend(bh),
            false => v.extend(std::iter::repeat_n(0.0, g)),
        }
        v.extend((0..g).map(|_| u(-1.0, 1.0)).collect::<Vec<_>>());
        // c_prev, h_prev, dh, dc_next, gate_next (an activation in (0, 1)).
        v.extend([
            u(-1.5, 1.5),
            u(-1.0, 1.0),
            u(-1.0, 1.0),
            u(-1.0, 1.0),
            u(0.05, 0.95),
        ]);
    }
    v
}

/// Checks `cell`'s backward against central differences of its forward on
/// [`UNITS`] random points drawn from `seed`, on `ctx`'s GPU.
pub fn grad_check(ctx: &GpuContext, cell: Cell, seed: u64) -> Result<GradCheck> {
    let k = ctx.scoped(|| Ok(CheckCell::new(ctx, cell)))?;
    let out = ctx.scoped(|| k.run(ctx, &inputs(cell, UNITS, seed), DELTA))?;
    let (g, w) = (cell.gates(), out_width(cell));
    // (name, offset of its first triple, stride between gates, gates).
    let layout = [
        ("da", 0, 6, g),
        ("dx", 3, 6, g),
        ("carry", 6 * g, 0, 1),
        ("h0", 6 * g + 3, 0, 1),
        ("c0", 6 * g + 6, 0, 1),
    ];
    let quantities = layout
        .iter()
        .map(|&(name, off, stride, gates)| {
            let mut q = Quantity {
                name,
                worst: 0.0,
                at: (0, 0),
                values: (0.0, 0.0),
                compared: 0,
                skipped: 0,
                nonfinite: 0,
            };
            for u in 0..UNITS {
                for gate in 0..gates {
                    let o = u * w + off + gate * stride;
                    let [an, fd, fd2] = [out[o], out[o + 1], out[o + 2]].map(f64::from);
                    if ![an, fd, fd2].iter().all(|x| x.is_finite()) {
                        q.nonfinite += 1;
                        continue;
                    }
                    let rel = |a: f64, b: f64| (a - b).abs() / a.abs().max(b.abs()).max(FLOOR);
                    if rel(fd, fd2) > TOLERANCE {
                        q.skipped += 1;
                        continue;
                    }
                    q.compared += 1;
                    let e = rel(an, fd);
                    if e > q.worst {
                        (q.worst, q.at, q.values) = (e, (u, gate), (an, fd));
                    }
                }
            }
            q
        })
        .collect();
    Ok(GradCheck { quantities })
}

/// A few training steps of a small model of the cell.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainCheck {
    /// The loss of every step.
    pub losses: Vec<f32>,
}

impl TrainCheck {
    /// Mean loss of the first and of the last five steps.
    pub fn ends(&self) -> (f32, f32) {
        let n = self.losses.len().clamp(1, 5) as f32;
        let head = self.losses.iter().take(5).sum::<f32>() / n;
        let tail = self.losses.iter().rev().take(5).sum::<f32>() / n;
        (head, tail)
    }

    /// Why it fails (a non-finite loss, or a loss that did not fall), or
    /// None.
    pub fn failure(&self) -> Option<String> {
        if let Some(i) = self.losses.iter().position(|l| !l.is_finite()) {
            return Some(format!(
                "training: the loss of step {} is {}",
                i + 1,
                self.losses[i]
            ));
        }
        let (head, tail) = self.ends();
        (tail >= head).then(|| format!("training: the loss did not fall ({head:.5} -> {tail:.5})"))
    }
}

/// Steps of [`train_check`].
pub const TRAIN_STEPS: usize = 30;

/// [`TRAIN_STEPS`] Adam steps (lr 0.01) of a one-layer model of `cell`
/// (hidden 16) predicting the next value of sine waves of random phase
/// (T = 12, B = 8), from the init of `seed`.
pub fn train_check(ctx: &Arc<GpuContext>, cell: Cell, seed: u64) -> Result<TrainCheck> {
    use super::{Carry, Head, NetConfig, StepData, Trainer, init_values};
    let mut net = NetConfig::new(
        Head::Regression {
            features: 1,
            outputs: 1,
        },
        16,
        1,
    );
    net.cell = cell;
    let (t, b) = (12, 8);
    let mut opt = crate::kernels::optim::OptimConfig::adam();
    opt.lr = 0.01;
    let mut tr = Trainer::new(
        ctx.clone(),
        net.clone(),
        init_values(&net, seed),
        b,
        Some(1.0),
        &opt,
    )?;
    let mut rng = crate::rng::Rng::new(crate::rng::derive_seed(seed, 0xce11));
    let mut losses = Vec::with_capacity(TRAIN_STEPS);
    for _ in 0..TRAIN_STEPS {
        let mut x = vec![0f32; t * b];
        let mut y = vec![0f32; b];
        for (bb, yv) in y.iter_mut().enumerate() {
            let ph = rng.uniform(0.0, std::f64::consts::TAU);
            for (tt, xv) in x.iter_mut().skip(bb).step_by(b).enumerate() {
                *xv = (ph + 0.5 * tt as f64).sin() as f32;
            }
            *yv = (ph + 0.5 * t as f64).sin() as f32;
        }
        let s = tr.step(t, &StepData::series(&x, &y), Carry::Zero, opt.lr)?;
        losses.push(s.loss);
    }
    Ok(TrainCheck { losses })
}

/// Both checks' verdict: an [`Error::CheckFailed`] naming every failure.
pub fn verdict(grad: &GradCheck, train: &TrainCheck) -> Result<()> {
    let mut f = grad.failures();
    f.extend(train.failure());
    match f.is_empty() {
        true => Ok(()),
        false => Err(Error::CheckFailed(f.join("; "))),
    }
}
