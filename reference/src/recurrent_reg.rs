//! Regularizers inside the recurrence: zoneout of `h` and `c` and
//! weight-drop (DropConnect) of `W_hh`. The reference takes their masks
//! explicitly, so a test can give it the engine's masks.

use crate::{RefConfig, RefDirWeights, RefWeights};
use std::borrow::Cow;

/// Zoneout of one state (Krueger et al. 2016): with `m` its value at
/// (cell, t, b, j), the state after step `t` is `m prev + (1 − m) new`,
/// where `new` is what the cell computed from the previous (zoned-out)
/// states. The zoned-out `h_t` is what the layer outputs at `t` and what
/// `h_n` / `c_n` hold. (An LSTM computes its new `h` from its new, not yet
/// zoned-out, `c`.)
#[derive(Clone, Debug, Default, PartialEq)]
pub enum RefZoneout {
    /// No zoneout (`m = 0`).
    #[default]
    Off,
    /// Train mode: `mask[((cell * T + t) * B + b) * N + j]`, shape
    /// `[L*D, T, B, N]` (`N` the state's width, `t` the time position, also
    /// for the reverse direction); 1 keeps the previous value, 0 takes the
    /// new one. Values at padded positions are never read.
    Masks(Vec<f64>),
    /// Eval mode with zoneout probability `p`: the expectation, `m = p`.
    Expectation(f64),
}

impl RefZoneout {
    /// `m` of `n` values from `off`, `None` when off.
    pub(crate) fn at(&self, off: usize, n: usize) -> Option<Cow<'_, [f64]>> {
        match self {
            RefZoneout::Off => None,
            RefZoneout::Masks(m) => Some(Cow::Borrowed(&m[off..off + n])),
            RefZoneout::Expectation(p) => Some(Cow::Owned(vec![*p; n])),
        }
    }

    fn check(&self, what: &str, len: usize) -> Result<(), String> {
        match self {
            RefZoneout::Off => Ok(()),
            RefZoneout::Masks(m) if m.len() != len => Err(format!(
                "{what} zoneout mask has {} values, expected {len}",
                m.len()
            )),
            RefZoneout::Masks(_) => Ok(()),
            RefZoneout::Expectation(p) if !(0.0..=1.0).contains(p) => {
                Err(format!("{what} zoneout probability {p} outside [0, 1]"))
            }
            RefZoneout::Expectation(_) => Ok(()),
        }
    }
}

/// Weight-drop on `W_hh` (AWD-LSTM): every step of (layer, dir) `k` uses
/// `W_hh ⊙ masks[k] / (1 − p)`; gradients are w.r.t. the raw `W_hh`.
#[derive(Clone, Debug, PartialEq)]
pub struct RefWeightDrop {
    /// Drop probability `p` in [0, 1).
    pub p: f64,
    /// One 0/1 mask per (layer, dir), `layer * D + dir`, shaped like `W_hh`.
    pub masks: Vec<Vec<f64>>,
}

/// The regularizers inside the recurrence; the default is none.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RefRecurrentReg {
    /// Zoneout of `h`, width `S`.
    pub zoneout_h: RefZoneout,
    /// Zoneout of `c` (LSTM cells only), width `H`.
    pub zoneout_c: RefZoneout,
    /// Weight-drop of `W_hh`.
    pub weight_drop: Option<RefWeightDrop>,
}

impl RefRecurrentReg {
    /// Checks the masks against the configuration; `Err` names the problem.
    pub fn check(
        &self,
        cfg: &RefConfig,
        w: &RefWeights,
        seq_len: usize,
        batch: usize,
    ) -> Result<(), String> {
        let cells = cfg.cells() * seq_len * batch;
        self.zoneout_h.check("h", cells * cfg.state_size())?;
        if cfg.cell.has_c() {
            self.zoneout_c.check("c", cells * cfg.hidden_size)?;
        } else if self.zoneout_c != RefZoneout::Off {
            return Err(format!("{:?} has no c state to zone out", cfg.cell));
        }
        if let Some(wd) = &self.weight_drop {
            if !(0.0..1.0).contains(&wd.p) {
                return Err(format!("weight-drop p {} outside [0, 1)", wd.p));
            }
            if wd.masks.len() != w.cells.len() {
                return Err(format!(
                    "{} weight-drop masks, expected {}",
                    wd.masks.len(),
                    w.cells.len()
                ));
            }
            for (k, (m, c)) in wd.masks.iter().zip(&w.cells).enumerate() {
                if m.len() != c.w_hh.len() {
                    return Err(format!("weight-drop mask {k} is not shaped like W_hh"));
                }
            }
        }
        Ok(())
    }

    /// The weights the steps use: `w` with weight-drop applied to `W_hh`.
    pub(crate) fn step_weights<'a>(&self, w: &'a RefWeights) -> Cow<'a, RefWeights> {
        match &self.weight_drop {
            None => Cow::Borrowed(w),
            Some(wd) => {
                let mut d = w.clone();
                for (c, m) in d.cells.iter_mut().zip(&wd.masks) {
                    wd.scale(&mut c.w_hh, m);
                }
                Cow::Owned(d)
            }
        }
    }

    /// Turns gradients w.r.t. the step weights into gradients w.r.t. `w`.
    pub(crate) fn raw_grads(&self, g: &mut [RefDirWeights]) {
        if let Some(wd) = &self.weight_drop {
            for (c, m) in g.iter_mut().zip(&wd.masks) {
                wd.scale(&mut c.w_hh, m);
            }
        }
    }
}

impl RefWeightDrop {
    /// `v ⊙ mask / (1 − p)`: the forward map and, being linear and
    /// diagonal, also its own backward.
    fn scale(&self, v: &mut [f64], mask: &[f64]) {
        let s = 1.0 / (1.0 - self.p);
        for (x, m) in v.iter_mut().zip(mask) {
            *x *= m * s;
        }
    }
}
