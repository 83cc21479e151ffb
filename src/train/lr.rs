//! Learning-rate schedules, evaluated on the host once per optimizer step
//! (the value goes to the optimizer's per-step buffer, see
//! [`crate::kernels::optim::OptimPlan::prepare`]).
//!
//! Steps are 1-based optimizer steps (the `t` of the update being prepared;
//! skipped steps do not count). With `base` the base learning rate:
//!
//! - [`LrSchedule::Constant`]: `lr(s) = base`.
//! - [`LrSchedule::WarmupCosine`] `{ warmup: w, total: N, min_lr }`:
//!   - `s <= w`: linear warmup `lr(s) = base * s / w` (base/w at step 1,
//!     base at step w);
//!   - `s > w`: cosine annealing as `torch.optim.lr_scheduler.CosineAnnealingLR`
//!     (`eta_max = base`, `eta_min = min_lr`):
//!     `lr(s) = min_lr + (base - min_lr) * (1 + cos(pi * T_cur / T_max)) / 2`
//!     with `a = max(w, 1)`, `T_cur = s - a`, `T_max = N - a`: it starts at
//!     `base` at step `a` (the last warmup step, or step 1 without warmup) and
//!     reaches `min_lr` at step `N`. Steps after `N` (or every step after the
//!     warmup when `N <= a`) use `min_lr` (CosineAnnealingLR would rise again;
//!     this schedule holds).
//! - [`LrSchedule::Step`] `{ step_size, gamma }`: `torch.optim.lr_scheduler.StepLR`
//!   with `scheduler.step()` after every optimizer step:
//!   `lr(s) = base * gamma^floor((s - 1) / step_size)` (steps 1..=step_size
//!   use `base`).
//!
//! Step 0 is treated as step 1.

use crate::{Error, Result};

/// A learning-rate schedule (see the module docs for the formulas).
#[derive(Clone, Debug, PartialEq)]
pub enum LrSchedule {
    /// The base rate at every step.
    Constant,
    /// Linear warmup over `warmup` steps, then cosine annealing to `min_lr`
    /// at step `total`.
    WarmupCosine {
        /// Warmup steps (0: none).
        warmup: usize,
        /// Step at which the rate reaches `min_lr`.
        total: usize,
        /// Final rate.
        min_lr: f64,
    },
    /// Multiply by `gamma` every `step_size` steps.
    Step {
        /// Steps per decay (at least 1).
        step_size: usize,
        /// Decay factor.
        gamma: f64,
    },
}

impl LrSchedule {
    /// The learning rate of optimizer step `step` (1-based) for base rate `base`.
    pub fn lr(&self, base: f64, step: usize) -> f64 {
        let s = step.max(1);
        match *self {
            LrSchedule::Constant => base,
            LrSchedule::WarmupCosine {
                warmup,
                total,
                min_lr,
            } => {
                if s <= warmup {
                    return base * s as f64 / warmup as f64;
                }
                let a = warmup.max(1);
                if s >= total || total <= a {
                    return if s == a { base } else { min_lr };
                }
                let t_cur = (s - a) as f64;
                let t_max = (total - a) as f64;
                min_lr
                    + (base - min_lr) * (1.0 + (std::f64::consts::PI * t_cur / t_max).cos()) / 2.0
            }
            LrSchedule::Step { step_size, gamma } => {
                let k = (s - 1) / step_size.max(1);
                base * gamma.powi(i32::try_from(k).unwrap_or(i32::MAX))
            }
        }
    }

    /// Checks the parameters: `min_lr` finite and >= 0, `step_size` >= 1,
    /// `gamma` finite and >= 0.
    pub fn validate(&self) -> Result<()> {
        match *self {
            LrSchedule::Constant => Ok(()),
            LrSchedule::WarmupCosine { min_lr, .. } => {
                if min_lr.is_finite() && min_lr >= 0.0 {
                    Ok(())
                } else {
                    Err(Error::Invalid(format!(
                        "min_lr must be finite and >= 0, got {}",
                        crate::error::num(min_lr)
                    )))
                }
            }
            LrSchedule::Step { step_size, gamma } => {
                if step_size == 0 {
                    Err(Error::Invalid("step_size must be at least 1".into()))
                } else if !(gamma.is_finite() && gamma >= 0.0) {
                    Err(Error::Invalid(format!(
                        "gamma must be finite and >= 0, got {}",
                        crate::error::num(gamma)
                    )))
                } else {
                    Ok(())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1e-300)
    }

    #[test]
    fn constant() {
        for s in [0, 1, 2, 1000] {
            assert_eq!(LrSchedule::Constant.lr(0.3, s), 0.3);
        }
    }

    #[test]
    fn warmup_is_linear_to_base() {
        let sch = LrSchedule::WarmupCosine {
            warmup: 4,
            total: 12,
            min_lr: 0.01,
        };
        assert!(close(sch.lr(1.0, 1), 0.25));
        assert!(close(sch.lr(1.0, 2), 0.5));
        assert!(close(sch.lr(1.0, 3), 0.75));
        assert_eq!(sch.lr(1.0, 4), 1.0);
        assert_eq!(sch.lr(1.0, 0), sch.lr(1.0, 1));
    }

    /// After the warmup the values are CosineAnnealingLR's closed form, which
    /// (away from restarts) equals its recursive form; checked against the
    /// recursion of `torch.optim.lr_scheduler.CosineAnnealingLR.get_lr`.
    #[test]
    fn cosine_matches_pytorch_recursion() {
        let (base, min_lr, w, n) = (0.1f64, 0.001f64, 3usize, 11usize);
        let sch = LrSchedule::WarmupCosine {
            warmup: w,
            total: n,
            min_lr,
        };
        let t_max = (n - w) as f64;
        let pi = std::f64::consts::PI;
        // PyTorch's recursive update, epoch = T_cur.
        let mut lr = base;
        for t_cur in 1..=(n - w) {
            let e = t_cur as f64;
            // (The restart branch of get_lr, `(e - 1 - T_max) % (2 T_max) == 0`,
            // never fires for 1 <= e <= T_max.)
            lr = (1.0 + (pi * e / t_max).cos()) / (1.0 + (pi * (e - 1.0) / t_max).cos())
                * (lr - min_lr)
                + min_lr;
            let got = sch.lr(base, w + t_cur);
            assert!(
                (got - lr).abs() <= 1e-12,
                "step {}: {got} vs {lr}",
                w + t_cur
            );
        }
        assert!(close(sch.lr(base, n), min_lr));
        // Monotone decreasing after the warmup, held at min_lr afterwards.
        for s in w..n {
            assert!(sch.lr(base, s + 1) < sch.lr(base, s));
        }
        assert_eq!(sch.lr(base, n + 1), min_lr);
        assert_eq!(sch.lr(base, 10 * n), min_lr);
        // Halfway through the cosine: the mean of base and min_lr.
        let sch2 = LrSchedule::WarmupCosine {
            warmup: 2,
            total: 12,
            min_lr: 0.0,
        };
        assert!(close(sch2.lr(1.0, 7), 0.5));
    }

    #[test]
    fn cosine_without_warmup_starts_at_base() {
        let sch = LrSchedule::WarmupCosine {
            warmup: 0,
            total: 5,
            min_lr: 0.0,
        };
        let pi = std::f64::consts::PI;
        for s in 1..=5 {
            let want = (1.0 + (pi * (s - 1) as f64 / 4.0).cos()) / 2.0;
            assert!((sch.lr(2.0, s) - 2.0 * want).abs() <= 1e-15, "step {s}");
        }
        assert_eq!(sch.lr(2.0, 1), 2.0);
        assert_eq!(sch.lr(2.0, 5), 0.0);
    }

    #[test]
    fn cosine_degenerate_totals() {
        // total <= warmup: warmup, then min_lr.
        let sch = LrSchedule::WarmupCosine {
            warmup: 3,
            total: 2,
            min_lr: 0.05,
        };
        assert!(close(sch.lr(1.0, 1), 1.0 / 3.0));
        assert_eq!(sch.lr(1.0, 3), 1.0);
        assert_eq!(sch.lr(1.0, 4), 0.05);
        let one = LrSchedule::WarmupCosine {
            warmup: 0,
            total: 1,
            min_lr: 0.05,
        };
        assert_eq!(one.lr(1.0, 1), 1.0);
        assert_eq!(one.lr(1.0, 2), 0.05);
    }

    #[test]
    fn step_lr_as_pytorch() {
        let sch = LrSchedule::Step {
            step_size: 3,
            gamma: 0.5,
        };
        // StepLR: after k scheduler.step() calls, lr = base * gamma^(k // step_size);
        // optimizer step s runs after s - 1 calls.
        let want = [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(sch.lr(1.0, i + 1), *w, "step {}", i + 1);
        }
    }

    #[test]
    fn validation() {
        assert!(LrSchedule::Constant.validate().is_ok());
        assert!(
            LrSchedule::Step {
                step_size: 0,
                gamma: 0.1
            }
            .validate()
            .is_err()
        );
        assert!(
            LrSchedule::Step {
                step_size: 1,
                gamma: f64::NAN
            }
            .validate()
            .is_err()
        );
        assert!(
            LrSchedule::WarmupCosine {
                warmup: 1,
                total: 2,
                min_lr: -1.0
            }
            .validate()
            .is_err()
        );
    }
}
