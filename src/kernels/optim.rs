//! Wrapper of `shaders/optim.wgsl`: the SGD, Adam and AdamW updates of
//! `torch.optim` (single-tensor formulas, PyTorch's defaults) over one flat
//! parameter buffer and its gradient buffer, in one dispatch per step.
//!
//! An [`OptimPlan`] is built once for a parameter buffer, a gradient buffer
//! of the same layout, an element count `n` (elements `[0, n)` of both are
//! updated) and an optional *skip word*; it owns the optimizer state (flat
//! f32 buffers of `n` elements laid out like the parameters) and a small
//! per-step storage buffer. Every step the host:
//!
//! 1. calls [`OptimPlan::prepare`] with the learning rate of the coming
//!    update (it writes the per-step buffer, with the bias corrections
//!    computed in f64 as PyTorch does);
//! 2. records [`OptimPlan::record`] (one dispatch) after the backward pass and
//!    the clipping dispatches, and submits;
//! 3. once it has read whether that update was skipped (without holding up
//!    the next ones: up to [`MAX_IN_FLIGHT`] updates may be prepared before
//!    the oldest is confirmed), calls [`OptimPlan::commit`], which advances
//!    the host's step count only for an applied step.
//!
//! **Per-step buffer**: a header `[parity, base, count0, count1]` (u32)
//! and three 8-word entries for steps `t = base + 1, base + 2, base + 3`:
//!
//! | word | value |
//! |---|---|
//! | 0 | `lr` (f32) |
//! | 1 | `step_size = lr / (1 - beta1^t)` (Adam/AdamW; f64, rounded once) |
//! | 2 | `bc2_sqrt = sqrt(1 - beta2^t)` (Adam/AdamW) |
//! | 3 | `decay = 1 - lr * weight_decay` (AdamW) |
//! | 4 | `first`: u32 1 when `t == 1` (SGD: momentum buffer = grad), else 0 |
//! | 5 | `t` (u32, saturating; informative) |
//! | 6, 7 | 0 |
//!
//! The GPU owns the applied-step count: update `k` (parity `k % 2`) reads
//! `count[k % 2]`, uses entry `count - base`, and writes the count after
//! itself (one more unless skipped) to `count[(k + 1) % 2]`. The host
//! writes the count only when nothing is in flight.
//!
//! **Skip contract.** The kernel first reads one 32-bit word (the skip word:
//! normally [`crate::kernels::clip::ClipPlan::stats`] at word 3, the
//! non-finite flag, written by an earlier dispatch of the same submit) and,
//! when its bits are not all zero, writes nothing but the step count:
//! params and every state buffer stay bit-identical, and the count does not
//! advance. A plan without a skip word never skips.
//!
//! **State** ([`OptimPlan::state_tensors`], [`OptimPlan::load_state`]):
//! `optimizer.momentum_buffer` (SGD with momentum), `optimizer.exp_avg`,
//! `optimizer.exp_avg_sq`, `optimizer.max_exp_avg_sq` (amsgrad), each of
//! shape `[n]`, and the applied step count [`OptimPlan::steps`] (checkpoint it
//! as the int64 counter [`STEP_NAME`]). Fresh state is zero, as PyTorch's.
//!
//! Results are bit-identical from run to run (one element per invocation, no
//! reductions).

use super::wgsl::{family_source, wgsl_struct};
use super::{groups_1d, u32_of};
use crate::gpu::{Binding, Dispatch, GpuContext, Kernel, module};
use crate::io::NamedTensor;
use crate::{Error, Result};

family_source!(OptimUniform; "common/prelude.wgsl", "optim.wgsl");

/// Invocations per workgroup (`WG` in the shader); one element each.
const WG: usize = 256;

/// Updates that may be prepared before the oldest is committed.
pub const MAX_IN_FLIGHT: usize = STEP_ENTRIES - 1;
/// Step entries in the per-step buffer (`ENTRIES` in the shader).
const STEP_ENTRIES: usize = 3;
/// Words before the entries: parity, base, count[2].
const STEPS_HEADER: usize = 4;
/// Words of the per-step buffer.
pub const STEP_WORDS: usize = 8;
/// Name under which a checkpoint stores the applied step count (int64).
pub const STEP_NAME: &str = "optimizer.step";

wgsl_struct! {
    /// The uniform block of `optim.wgsl`.
    pub struct OptimUniform = "Params" {
        n: u32, skip_at: u32, flags: u32, _p0: u32,
        momentum: f32,
        /// 1 - dampening (SGD).
        one_m_damp: f32,
        weight_decay: f32, eps: f32, beta1: f32,
        /// 1 - beta1, rounded from f64 (PyTorch's lerp weight).
        one_m_beta1: f32,
        beta2: f32, one_m_beta2: f32,
    }
}

const NESTEROV: u32 = 1;
const DECOUPLED: u32 = 2;
const HAS_WD: u32 = 4;

/// Which update rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimKind {
    /// `torch.optim.SGD` (momentum, dampening, Nesterov, L2 weight decay).
    Sgd,
    /// `torch.optim.Adam` (L2 weight decay added to the gradient).
    Adam,
    /// `torch.optim.AdamW` (decoupled weight decay: `p *= 1 - lr * wd` first).
    AdamW,
}

/// Hyperparameters, with PyTorch's names and (through [`OptimConfig::sgd`],
/// [`OptimConfig::adam`], [`OptimConfig::adamw`]) defaults. `lr` is the base
/// learning rate; the rate actually used is the one given to
/// [`OptimPlan::prepare`] each step (e.g. from [`crate::train::lr`]).
#[derive(Clone, Debug, PartialEq)]
pub struct OptimConfig {
    /// Update rule.
    pub kind: OptimKind,
    /// Base learning rate.
    pub lr: f64,
    /// SGD momentum factor (0: no momentum buffer).
    pub momentum: f64,
    /// SGD dampening of the momentum.
    pub dampening: f64,
    /// SGD Nesterov momentum (needs momentum > 0 and dampening 0).
    pub nesterov: bool,
    /// Adam/AdamW (beta1, beta2).
    pub betas: (f64, f64),
    /// Adam/AdamW term added to the denominator (outside the square root).
    pub eps: f64,
    /// Weight decay: L2 added to the gradient (SGD, Adam) or decoupled (AdamW).
    pub weight_decay: f64,
    /// Adam/AdamW: use the running maximum of `exp_avg_sq`.
    pub amsgrad: bool,
}

impl OptimConfig {
    /// `torch.optim.SGD` defaults: lr 1e-3, momentum 0, dampening 0, no
    /// weight decay, no Nesterov.
    pub fn sgd() -> Self {
        Self {
            kind: OptimKind::Sgd,
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
        }
    }

    /// `torch.optim.Adam` defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8,
    /// weight decay 0, no amsgrad.
    pub fn adam() -> Self {
        Self {
            kind: OptimKind::Adam,
            ..Self::sgd()
        }
    }

    /// `torch.optim.AdamW` defaults: as Adam with weight decay 1e-2.
    pub fn adamw() -> Self {
        Self {
            kind: OptimKind::AdamW,
            weight_decay: 1e-2,
            ..Self::sgd()
        }
    }

    /// Checks the values as PyTorch's constructors do.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(m));
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad(format!("invalid learning rate: {}", self.lr));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!("invalid weight_decay value: {}", self.weight_decay));
        }
        match self.kind {
            OptimKind::Sgd => {
                if !(self.momentum.is_finite() && self.momentum >= 0.0) {
                    return bad(format!("invalid momentum value: {}", self.momentum));
                }
                if !self.dampening.is_finite() {
                    return bad(format!("invalid dampening value: {}", self.dampening));
                }
                if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
                    return bad("Nesterov momentum requires a momentum and zero dampening".into());
                }
            }
            OptimKind::Adam | OptimKind::AdamW => {
                if !(self.eps.is_finite() && self.eps >= 0.0) {
                    return bad(format!("invalid epsilon value: {}", self.eps));
                }
                for (i, b) in [self.betas.0, self.betas.1].into_iter().enumerate() {
                    if !(0.0..1.0).contains(&b) {
                        return bad(format!("invalid beta parameter at index {i}: {b}"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Names of the state buffers this configuration keeps, in binding order.
    pub fn state_names(&self) -> Vec<&'static str> {
        match self.kind {
            OptimKind::Sgd if self.momentum != 0.0 => vec!["optimizer.momentum_buffer"],
            OptimKind::Sgd => vec![],
            OptimKind::Adam | OptimKind::AdamW => {
                let mut v = vec!["optimizer.exp_avg", "optimizer.exp_avg_sq"];
                if self.amsgrad {
                    v.push("optimizer.max_exp_avg_sq");
                }
                v
            }
        }
    }

    /// The per-step buffer for step `t` (1-based) at learning rate `lr`.
    pub fn step_words(&self, t: u64, lr: f64) -> [u32; STEP_WORDS] {
        let t = t.max(1);
        // As PyTorch: Python floats (f64), `beta ** step` with an integral step.
        let tf = t as f64;
        let bc1 = 1.0 - self.betas.0.powf(tf);
        let bc2 = 1.0 - self.betas.1.powf(tf);
        let (step_size, bc2_sqrt) = match self.kind {
            OptimKind::Sgd => (lr, 1.0),
            _ => (lr / bc1, bc2.sqrt()),
        };
        [
            (lr as f32).to_bits(),
            (step_size as f32).to_bits(),
            (bc2_sqrt as f32).to_bits(),
            ((1.0 - lr * self.weight_decay) as f32).to_bits(),
            u32::from(t == 1),
            u32::try_from(t).unwrap_or(u32::MAX),
            0,
            0,
        ]
    }

    fn uniform(&self, n: u32, skip_at: u32) -> OptimUniform {
        let f = |x: f64| x as f32;
        let mut flags = 0;
        if self.nesterov {
            flags |= NESTEROV;
        }
        if self.kind == OptimKind::AdamW {
            flags |= DECOUPLED;
        }
        if self.weight_decay != 0.0 {
            flags |= HAS_WD;
        }
        OptimUniform {
            n,
            skip_at,
            flags,
            _p0: 0,
            momentum: f(self.momentum),
            one_m_damp: f(1.0 - self.dampening),
            weight_decay: f(self.weight_decay),
            eps: f(self.eps),
            beta1: f(self.betas.0),
            one_m_beta1: f(1.0 - self.betas.0),
            beta2: f(self.betas.1),
            one_m_beta2: f(1.0 - self.betas.1),
        }
    }
}

/// The optimizer kernels.
pub struct Optim {
    sgd: Kernel,
    sgd_momentum: Kernel,
    adam: Kernel,
    adam_amsgrad: Kernel,
}

/// One optimizer over a fixed parameter/gradient buffer pair: its state, its
/// per-step buffer and its single dispatch. Re-record it every step.
pub struct OptimPlan {
    /// The configuration it was built with.
    pub config: OptimConfig,
    /// The dispatch (one per step).
    pub dispatch: Dispatch,
    /// The per-step buffer ([`STEP_WORDS`] words, see the module docs).
    pub step_buf: wgpu::Buffer,
    /// State buffers (name, buffer of `n` f32), in [`OptimConfig::state_names`] order.
    pub state: Vec<(&'static str, wgpu::Buffer)>,
    /// Elements updated (`[0, n)`).
    pub n: usize,
    skip: (wgpu::Buffer, usize),
    steps: u64,
    /// Updates prepared so far (their parity picks the GPU's count word).
    submitted: u64,
    /// Updates prepared but not yet committed (in flight).
    unconfirmed: u64,
}

impl Optim {
    /// Compiles the kernels.
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "optim", &source());
        use Binding::{Read, ReadWrite};
        let base = [(1, ReadWrite), (2, Read), (3, ReadWrite), (4, Read)];
        let with = |extra: &[(u32, Binding)]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            v
        };
        Self {
            sgd: m.kernel("sgd", &base),
            sgd_momentum: m.kernel("sgd_momentum", &with(&[(5, ReadWrite)])),
            adam: m.kernel("adam", &with(&[(5, ReadWrite), (6, ReadWrite)])),
            adam_amsgrad: m.kernel(
                "adam_amsgrad",
                &with(&[(5, ReadWrite), (6, ReadWrite), (7, ReadWrite)]),
            ),
        }
    }

    /// Plans the update of elements `[0, n)` of `params` from `grads` (same
    /// layout), with zeroed state. `skip`: the buffer and 32-bit word index
    /// of the skip flag (e.g. `(&clip_plan.stats, 3)`); `None` never skips.
    /// The step count starts at 0 (the first step is `t = 1`).
    pub fn plan(
        &self,
        ctx: &GpuContext,
        config: &OptimConfig,
        params: &wgpu::Buffer,
        grads: &wgpu::Buffer,
        n: usize,
        skip: Option<(&wgpu::Buffer, usize)>,
    ) -> Result<OptimPlan> {
        config.validate()?;
        for (what, b) in [("parameter", params), ("gradient", grads)] {
            let elems = (b.size() / 4) as usize;
            if n > elems {
                return Err(Error::Invalid(format!(
                    "optimizer over {n} elements, but the {what} buffer holds {elems}"
                )));
            }
        }
        let skip = match skip {
            Some((buf, at)) => {
                if at >= (buf.size() / 4) as usize {
                    return Err(Error::Invalid(format!(
                        "optimizer skip word {at} is outside its buffer of {} words",
                        buf.size() / 4
                    )));
                }
                (buf.clone(), at)
            }
            None => (ctx.storage("optimizer never-skip word", 1)?, 0),
        };
        let params_u = config.uniform(
            u32_of("optimizer elements", n)?,
            u32_of("optimizer skip word", skip.1)?,
        );
        let step_buf = ctx.storage("optimizer steps", STEPS_HEADER + STEP_ENTRIES * STEP_WORDS)?;
        let state: Vec<(&'static str, wgpu::Buffer)> = config
            .state_names()
            .into_iter()
            .map(|name| Ok((name, ctx.storage(name, n)?)))
            .collect::<Result<_>>()?;
        let groups = groups_total(ctx, n)?;
        let kernel = match config.kind {
            OptimKind::Sgd if config.momentum != 0.0 => &self.sgd_momentum,
            OptimKind::Sgd => &self.sgd,
            _ if config.amsgrad => &self.adam_amsgrad,
            _ => &self.adam,
        };
        let mut bufs: Vec<&wgpu::Buffer> = vec![params, grads, &step_buf, &skip.0];
        bufs.extend(state.iter().map(|(_, b)| b));
        let dispatch = kernel.dispatch(ctx, &params_u, &bufs, groups);
        Ok(OptimPlan {
            config: config.clone(),
            dispatch,
            step_buf,
            state,
            n,
            skip,
            steps: 0,
            submitted: 0,
            unconfirmed: 0,
        })
    }
}

impl OptimPlan {
    /// Records the update (one dispatch) into `pass`.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.dispatch.record(pass);
    }

    /// Dispatches per step (always 1).
    pub fn dispatch_count(&self) -> usize {
        1
    }

    /// Steps applied so far (PyTorch's `state["step"]`).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Sets the applied step count (after [`OptimPlan::load_state`]); no
    /// update may be in flight.
    pub fn set_steps(&mut self, steps: u64) -> Result<()> {
        if self.unconfirmed != 0 {
            return Err(Error::Invalid(
                "optimizer step count set while updates are in flight".into(),
            ));
        }
        self.steps = steps;
        Ok(())
    }

    /// Updates prepared but not yet committed.
    pub fn in_flight(&self) -> u64 {
        self.unconfirmed
    }

    /// Writes the per-step buffer for the coming update at learning rate
    /// `lr`; call before the submit that records it. With `k` earlier
    /// updates still uncommitted (at most [`MAX_IN_FLIGHT`]), the step is one
    /// of `steps() + 1 ..= steps() + 1 + k`, depending on how many of those
    /// the GPU applies; the GPU picks (module docs).
    pub fn prepare(&mut self, ctx: &GpuContext, lr: f64) -> Result<()> {
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(Error::Invalid(format!("invalid learning rate: {lr}")));
        }
        if self.unconfirmed as usize > MAX_IN_FLIGHT {
            return Err(Error::Invalid(format!(
                "more than {MAX_IN_FLIGHT} optimizer updates in flight"
            )));
        }
        let parity = (self.submitted % 2) as u32;
        let base = self.steps;
        let base32 = u32_of("optimizer step", base as usize)?;
        let mut words = vec![parity, base32];
        if self.unconfirmed == 0 {
            // Nothing in flight: the GPU's count is the host's.
            words.extend([base32; 2]);
        }
        ctx.write(&self.step_buf, 0, &words);
        let entries: Vec<u32> = (1..=STEP_ENTRIES as u64)
            .flat_map(|e| self.config.step_words(base + e, lr))
            .collect();
        ctx.write(&self.step_buf, STEPS_HEADER, &entries);
        self.submitted += 1;
        self.unconfirmed += 1;
        Ok(())
    }

    /// Confirms the oldest update in flight, advancing the step count
    /// unless it was `skipped`.
    pub fn commit(&mut self, skipped: bool) {
        if !skipped {
            self.steps += 1;
        }
        self.unconfirmed = self.unconfirmed.saturating_sub(1);
    }

    /// Reads the skip word (waits for the GPU): true when the last recorded
    /// update was skipped.
    pub fn skipped(&self, ctx: &GpuContext) -> Result<bool> {
        let w = ctx.read_f32(&self.skip.0, self.skip.1, 1)?;
        Ok(w[0].to_bits() != 0)
    }

    /// Reads every state buffer back (waits for the GPU), as tensors of
    /// shape `[n]` named `optimizer.<state>`.
    pub fn state_tensors(&self, ctx: &GpuContext) -> Result<Vec<NamedTensor>> {
        self.state
            .iter()
            .map(|(name, buf)| {
                Ok(NamedTensor::new(
                    *name,
                    vec![self.n],
                    ctx.read_f32(buf, 0, self.n)?,
                ))
            })
            .collect()
    }

    /// Uploads the state from `tensors` (as [`OptimPlan::state_tensors`]
    /// writes them; other names are ignored). Every state buffer of this
    /// configuration must be present with `n` finite values. Set the step
    /// count with [`OptimPlan::set_steps`].
    pub fn load_state(&self, ctx: &GpuContext, tensors: &[NamedTensor]) -> Result<()> {
        let mut found = Vec::with_capacity(self.state.len());
        for (name, buf) in &self.state {
            let t = tensors
                .iter()
                .find(|t| t.name == *name)
                .ok_or_else(|| Error::tensor(*name, "missing optimizer state"))?;
            if t.data.len() != self.n {
                return Err(Error::tensor(
                    *name,
                    format!("{} values, expected {}", t.data.len(), self.n),
                ));
            }
            if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
                return Err(Error::tensor(
                    *name,
                    format!("non-finite value {} at flat index {i}", t.data[i]),
                ));
            }
            found.push((buf, &t.data));
        }
        for (buf, data) in found {
            ctx.write(buf, 0, data);
        }
        Ok(())
    }
}

/// Workgroup grid for `n` elements, one per invocation: x up to the
/// per-dimension limit, then y (the shader flattens it back).
fn groups_total(ctx: &GpuContext, n: usize) -> Result<(u32, u32)> {
    // At least one workgroup: invocation 0 carries the step count on.
    let wgs = n.div_ceil(WG).max(1);
    let max = ctx.limits.max_compute_workgroups_per_dimension.max(1) as usize;
    groups_1d(ctx, "optimizer workgroups", wgs, max)?;
    Ok(ctx.grid(u32_of("optimizer workgroups", wgs)?))
}
