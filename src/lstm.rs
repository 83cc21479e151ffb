//! The library's front door: run forward and backward passes of an
//! [`LstmModel`] with host slices in and out.

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::gpu::tuning::Tuning;
use crate::kernels::Kernels;
use crate::kernels::elementwise::DropoutStep;
pub use crate::model::Batch;
use crate::model::norm::Norm;
use crate::model::{Links, LstmConfig, LstmModel, NamedTensor};
use crate::schedule::Plan;
use std::collections::HashMap;
use std::sync::Arc;

/// Gradients arriving from above: of `output`, `h_n` and `c_n`.
#[derive(Clone, Copy, Debug)]
pub struct Upstream<'a> {
    /// Same shape and layout as `output`.
    pub grad_output: &'a [f32],
    /// `[L·D, B, S]` (S: P with a projection, else H).
    pub grad_h_n: &'a [f32],
    /// `[L·D, B, H]`; empty for a cell without c (the GRU).
    pub grad_c_n: &'a [f32],
}

/// Results of a forward pass, with `nn.LSTM`'s shapes.
#[derive(Clone, Debug, PartialEq)]
pub struct Outputs {
    /// `[T, B, D·S]` (or `[B, T, D·S]`), zero at padded positions (S:
    /// P with a projection, else H).
    pub output: Vec<f32>,
    /// `[L·D, B, S]`.
    pub h_n: Vec<f32>,
    /// `[L·D, B, H]`; empty for a cell without c (the GRU).
    pub c_n: Vec<f32>,
}

/// Gradients of a backward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Grads {
    /// Same shape and layout as the input.
    pub input: Vec<f32>,
    /// `[L·D, B, S]` (S: P with a projection, else H).
    pub h0: Vec<f32>,
    /// `[L·D, B, H]`; empty for a cell without c (the GRU).
    pub c0: Vec<f32>,
    /// `grad.<name>` for every parameter, PyTorch names and shapes.
    pub params: Vec<NamedTensor>,
}

/// A model bound to a GPU context, with compiled kernels and a prepared
/// plan per (T, B) shape.
pub struct Lstm {
    ctx: Arc<GpuContext>,
    kernels: Kernels,
    /// The model (parameters and gradients live on the GPU).
    pub model: LstmModel,
    plans: HashMap<PlanKey, Plan>,
    clips: HashMap<(Option<u32>, Option<u32>), crate::kernels::clip::ClipPlan>,
    /// Train mode (`true`, the default): BatchNorm uses batch statistics and
    /// updates running ones, and dropout between layers is applied. Eval
    /// mode (`false`): running statistics, no dropout.
    pub train: bool,
    /// Eval mode: the stream position of the next pass's step 0, for the
    /// per-step running statistics of `--norm step-batch` and
    /// `recurrent-batch` ([`crate::schedule::Modes::t0`]); 0 by default.
    pub t0: usize,
    /// Whether backward computes the gradient w.r.t. the input (`true`, the
    /// default); see [`Lstm::set_input_grad`].
    input_grad: bool,
    /// Layer 0's pre-gates come from the caller; see [`Lstm::set_token_input`].
    token_input: bool,
    /// [`DropoutStep`] words read by every plan's dropout dispatches.
    dropout_step: wgpu::Buffer,
}

/// A plan's key: (T, B, train mode, stream position of step 0).
type PlanKey = (usize, usize, bool, usize);

/// Swaps the first two axes of a `[a, b, rest]` array.
pub fn swap01(x: &[f32], a: usize, b: usize, rest: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for i in 0..a {
        for j in 0..b {
            let src = (i * b + j) * rest;
            let dst = (j * a + i) * rest;
            out[dst..dst + rest].copy_from_slice(&x[src..src + rest]);
        }
    }
    out
}

fn check(name: &str, data: &[f32], shape: &[usize]) -> Result<()> {
    let n: usize = shape.iter().product();
    if data.len() != n {
        return Err(Error::tensor(
            name,
            format!("{} values, expected {n} for shape {shape:?}", data.len()),
        ));
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(Error::tensor(
            name,
            format!("non-finite value {} at flat index {i}", data[i]),
        ));
    }
    Ok(())
}

/// An h state `[L·D, B, S]` laid out as the state arrays hold it: rows of
/// H, h in the first S columns (with a projection S = P < H; else `h`
/// itself).
pub fn h_to_rows<'a>(cfg: &LstmConfig, h: &'a [f32]) -> std::borrow::Cow<'a, [f32]> {
    let (s, hs) = (cfg.state_size(), cfg.hidden_size);
    if s == hs {
        return std::borrow::Cow::Borrowed(h);
    }
    let mut out = vec![0f32; h.len() / s * hs];
    for (dst, src) in out.chunks_exact_mut(hs).zip(h.chunks_exact(s)) {
        dst[..s].copy_from_slice(src);
    }
    std::borrow::Cow::Owned(out)
}

/// The inverse of [`h_to_rows`]: `[L·D, B, S]` from rows of H.
pub fn h_from_rows(cfg: &LstmConfig, rows: &[f32]) -> Vec<f32> {
    let (s, hs) = (cfg.state_size(), cfg.hidden_size);
    rows.chunks_exact(hs)
        .flat_map(|r| r[..s].iter().copied())
        .collect()
}

/// Checks every tensor of `b` against a model of shape `cfg`.
pub fn validate_batch(cfg: &LstmConfig, b: &Batch<'_>) -> Result<()> {
    let (t, n) = (b.seq_len, b.batch);
    if t == 0 || n == 0 {
        return Err(Error::tensor(
            "input",
            format!("sequence length {t} and batch {n} must both be at least 1"),
        ));
    }
    let ishape = if b.batch_first {
        [n, t, cfg.input_size]
    } else {
        [t, n, cfg.input_size]
    };
    check("input", b.input, &ishape)?;
    let sshape = [cfg.num_layers * cfg.dirs(), n, cfg.hidden_size];
    if let Some(h0) = b.h0 {
        check("h0", h0, &[sshape[0], n, cfg.state_size()])?;
    }
    if let Some(c0) = b.c0 {
        no_c(cfg, "c0")?;
        check("c0", c0, &sshape)?;
    }
    if let Some(lens) = b.lengths {
        if lens.len() != n {
            return Err(Error::tensor(
                "lengths",
                format!("{} entries, expected one per sequence ({n})", lens.len()),
            ));
        }
        if let Some((i, l)) = lens.iter().enumerate().find(|(_, l)| **l == 0 || **l > t) {
            return Err(Error::tensor(
                "lengths",
                format!("lengths[{i}] = {l} is outside 1..={t} (the sequence length)"),
            ));
        }
    }
    Ok(())
}

/// Checks the upstream gradients of a batch against a model of shape `cfg`.
pub fn validate_upstream(cfg: &LstmConfig, b: &Batch<'_>, up: &Upstream<'_>) -> Result<()> {
    let (t, n) = (b.seq_len, b.batch);
    let w = cfg.out_width();
    let oshape = if b.batch_first { [n, t, w] } else { [t, n, w] };
    check("grad_output", up.grad_output, &oshape)?;
    let sshape = [cfg.num_layers * cfg.dirs(), n, cfg.hidden_size];
    check("grad_h_n", up.grad_h_n, &[sshape[0], n, cfg.state_size()])?;
    match cfg.cell().has_c() {
        true => check("grad_c_n", up.grad_c_n, &sshape),
        false if up.grad_c_n.is_empty() => Ok(()),
        false => no_c(cfg, "grad_c_n"),
    }
}

/// An error naming `what` when the cell has no c state (the GRU).
fn no_c(cfg: &LstmConfig, what: &str) -> Result<()> {
    match cfg.cell().has_c() {
        true => Ok(()),
        false => Err(Error::tensor(
            what,
            format!("given, but {} has no cell state c", cfg.cell().module()),
        )),
    }
}

impl Lstm {
    /// Binds `model` to `ctx`, with the kernels the context's tuning
    /// chooses ([`GpuContext::tuning`]; compiled on first use, shared with
    /// every model on the context).
    pub fn new(ctx: Arc<GpuContext>, model: LstmModel) -> Result<Self> {
        let tuning = ctx.tuning;
        Self::with_tuning(ctx, model, tuning)
    }

    /// As [`Lstm::new`], with the kernels `tuning` chooses (each `None`
    /// field: the adapter's or the shape's choice). Fails when the adapter
    /// cannot run a forced choice or the skew is zero.
    pub fn with_tuning(ctx: Arc<GpuContext>, model: LstmModel, tuning: Tuning) -> Result<Self> {
        let kernels = Kernels::new(&ctx, tuning)?;
        let dropout_step = ctx.storage_init("dropout step", &DropoutStep::default().words())?;
        Ok(Self {
            ctx,
            kernels,
            model,
            plans: HashMap::new(),
            clips: HashMap::new(),
            train: true,
            t0: 0,
            input_grad: true,
            token_input: false,
            dropout_step,
        })
    }

    /// Sets the seed and counter of the dropout masks of the next passes
    /// (the plans read them from one buffer, so nothing is rebuilt). Call it
    /// once per training step with a new counter for fresh masks.
    pub fn set_dropout_step(&self, step: DropoutStep) {
        self.ctx.write(&self.dropout_step, 0, &step.words());
    }

    /// The buffer holding the current [`DropoutStep`] words.
    pub fn dropout_step_buffer(&self) -> &wgpu::Buffer {
        &self.dropout_step
    }

    /// Sets dropout and residual connections between layers; prepared plans
    /// are dropped (dispatch lists taken from them earlier are stale).
    pub fn set_links(&mut self, links: Links) -> Result<()> {
        self.model.set_links(links)?;
        self.plans.clear();
        Ok(())
    }

    /// The key of a (T, B) shape's plan in the current mode: the stream
    /// position only matters in eval mode, and only to models with
    /// per-step running statistics.
    fn key(&self, t: usize, n: usize) -> PlanKey {
        let t0 = if self.train { 0 } else { self.eval_t0() };
        (t, n, self.train, t0)
    }

    /// [`Lstm::t0`] as eval mode reads it: clamped to the last row of
    /// running statistics, 0 for models without per-step ones (so they
    /// keep one plan per shape).
    pub(crate) fn eval_t0(&self) -> usize {
        match self.model.norm {
            Norm::StepBatch { t_max, .. } | Norm::RecurrentBatch { t_max } => {
                self.t0.min(t_max.saturating_sub(1))
            }
            _ => 0,
        }
    }

    /// The prepared plan of a (T, B) shape in the current mode, built on
    /// first use (for callers that record passes into their own encoder).
    pub fn plan(&mut self, seq_len: usize, batch: usize) -> Result<&Plan> {
        let key = self.key(seq_len, batch);
        if !self.plans.contains_key(&key) {
            let plan = Plan::new(
                &self.ctx,
                &self.kernels,
                &self.model,
                seq_len,
                batch,
                crate::schedule::Modes {
                    train: self.train,
                    input_grad: self.input_grad,
                    token_input: self.token_input,
                    t0: key.3,
                },
                &self.dropout_step,
            )?;
            self.plans.insert(key, plan);
        }
        Ok(&self.plans[&key])
    }

    /// Sets the precision of the passes (default f32; see
    /// [`crate::model::precision`]). f16-mixed needs the adapter's SHADER_F16 and a
    /// plain cell (between-layer norms and links are fine) and never takes
    /// the persistent path; the error names what is missing. Prepared plans
    /// are dropped.
    pub fn set_precision(&mut self, p: crate::model::precision::Precision) -> Result<()> {
        if p.is_half()
            && let Some(why) = crate::model::precision::f16_obstacle_for(
                &self.ctx,
                &self.model.norm,
                &self.model.config,
            )
        {
            return Err(Error::Invalid(format!(
                "f16-mixed precision cannot run: {why}"
            )));
        }
        self.kernels.set_half(p.is_half())?;
        self.model.set_precision(&self.ctx, p)?;
        self.plans.clear();
        Ok(())
    }

    /// The precision of the passes.
    pub fn precision(&self) -> crate::model::precision::Precision {
        self.model.precision
    }

    /// Chooses the kernels by `tuning` from now on (the cell path, the
    /// wavefront's skew, the GEMM and cell variants and tiles); prepared
    /// plans are dropped. Fails, changing nothing, when the adapter cannot
    /// run a forced choice or the skew is zero. A forced persistent path
    /// that cannot run a shape fails its passes.
    pub fn set_tuning(&mut self, tuning: Tuning) -> Result<()> {
        self.kernels.retune(tuning)?;
        self.plans.clear();
        Ok(())
    }

    /// The tuning the kernels are chosen by.
    pub fn tuning(&self) -> &Tuning {
        self.kernels.tuning()
    }

    /// Whether backward computes the gradient w.r.t. the input (default
    /// `true`). Without it the last GEMM of backward is skipped (a model
    /// whose dense input feeds nothing trainable does not need it), and
    /// [`Lstm::forward_backward`] returns an empty `Grads::input`; prepared
    /// plans are dropped.
    pub fn set_input_grad(&mut self, on: bool) {
        self.input_grad = on;
        self.plans.clear();
    }

    /// Whether the caller writes layer 0's pre-gates (x·W_ihᵀ + b_ih + b_hh,
    /// at [`Plan::gate_offsets`]) and computes layer 0's dW_ih itself, as a
    /// token model does from per-token tables (default `false`). Plain
    /// cells only; prepared plans are dropped. With it set, `forward` and
    /// `forward_backward` refuse to run (they would read unset pre-gates):
    /// it is for callers that record plans into their own passes.
    ///
    /// [`Plan::gate_offsets`]: crate::schedule::Plan::gate_offsets
    pub fn set_token_input(&mut self, on: bool) {
        self.token_input = on;
        self.plans.clear();
    }

    /// [`Plan::gate_offsets`] of the (T, B) plan in the current mode.
    ///
    /// [`Plan::gate_offsets`]: crate::schedule::Plan::gate_offsets
    pub fn gate_offsets(
        &mut self,
        seq_len: usize,
        batch: usize,
        l: usize,
        d: usize,
    ) -> Result<(usize, usize)> {
        self.plan(seq_len, batch)?;
        let plan = &self.plans[&self.key(seq_len, batch)];
        Ok(plan.gate_offsets(&self.model, l, d))
    }

    /// The kernels (compiled on first use).
    pub fn kernels(&self) -> &Kernels {
        &self.kernels
    }

    /// Dispatches recorded per forward and per backward pass for the
    /// (T, B) shape, once a pass of that shape has run.
    pub fn dispatch_counts(&self, seq_len: usize, batch: usize) -> Option<(usize, usize)> {
        self.plans
            .get(&self.key(seq_len, batch))
            .map(|p| (p.forward.len(), p.backward.len()))
    }

    /// The context.
    pub fn ctx(&self) -> &GpuContext {
        &self.ctx
    }

    /// Checks every tensor of `b` against the model's shape.
    pub fn validate(&self, b: &Batch<'_>) -> Result<()> {
        validate_batch(&self.model.config, b)
    }

    fn upload(&mut self, b: &Batch<'_>) -> Result<()> {
        if self.token_input {
            return Err(crate::Error::Invalid(
                "this LSTM takes its layer-0 pre-gates from the caller (set_token_input): \
                 run its plans in the caller's passes"
                    .into(),
            ));
        }
        self.validate(b)?;
        let (t, n) = (b.seq_len, b.batch);
        self.model.check_batch(b, self.train)?;
        let key = self.key(t, n);
        self.plan(t, n)?;
        let cfg = &self.model.config;
        let ws = &self.plans[&key].ws;
        let ctx = &self.ctx;
        if b.batch_first {
            ctx.write(&ws.x, 0, &swap01(b.input, n, t, cfg.input_size));
        } else {
            ctx.write(&ws.x, 0, b.input);
        }
        let lens: Vec<u32> = match b.lengths {
            Some(l) => l.iter().map(|&v| v as u32).collect(),
            None => vec![t as u32; n],
        };
        ctx.write(&ws.lengths, 0, &lens);
        let half = crate::schedule::workspace::Workspace::state_len(cfg, n);
        let zeros = vec![0f32; half];
        match b.h0 {
            Some(h0) => ctx.write(&ws.state_in, 0, &h_to_rows(cfg, h0)),
            None => ctx.write(&ws.state_in, 0, &zeros),
        }
        // A cell without c ignores that half (and writes its own there).
        ctx.write(&ws.state_in, half, b.c0.unwrap_or(&zeros));
        Ok(())
    }

    fn read_outputs(&self, t: usize, n: usize, batch_first: bool) -> Result<Outputs> {
        let cfg = &self.model.config;
        let plan = &self.plans[&self.key(t, n)];
        let w = cfg.out_width();
        let mut output = self.ctx.read_f32(plan.output(), 0, t * n * w)?;
        if batch_first {
            output = swap01(&output, t, n, w);
        }
        let half = crate::schedule::workspace::Workspace::state_len(cfg, n);
        let st = self.ctx.read_f32(&plan.ws.state_out, 0, 2 * half)?;
        let has_c = cfg.cell().has_c();
        Ok(Outputs {
            output,
            h_n: h_from_rows(cfg, &st[..half]),
            c_n: if has_c {
                st[half..].to_vec()
            } else {
                Vec::new()
            },
        })
    }

    /// A train-mode pass of a BatchNorm variant counts one batch, as
    /// PyTorch's `num_batches_tracked`.
    fn count_batch(&mut self) {
        if self.train && self.model.norm.has_batch_stats() {
            for v in self.model.tracked.values_mut() {
                *v += 1;
            }
        }
    }

    /// Clips the gradients in `model.grads` on the GPU: by global L2 norm
    /// (`torch.nn.utils.clip_grad_norm_`, scale `min(1, max_norm / (norm +
    /// 1e-6))`) and/or by value (`clip_grad_value_`), over every parameter
    /// tensor. Returns the norms before clipping; when a gradient is not
    /// finite, nothing is changed and `nonfinite` is set.
    pub fn clip_gradients(
        &mut self,
        max_norm: Option<f32>,
        clip_value: Option<f32>,
    ) -> Result<crate::kernels::clip::ClipStats> {
        // Clip::plan validates max_norm and clip_value (a new value always
        // builds a new plan).
        let key = (max_norm.map(f32::to_bits), clip_value.map(f32::to_bits));
        if !self.clips.contains_key(&key) {
            let segs: Vec<(usize, usize)> = self
                .model
                .table
                .entries
                .iter()
                .map(|e| (e.offset, e.len()))
                .collect();
            let ctx = &self.ctx;
            let k = &self.kernels;
            let grads = &self.model.grads;
            let plan = ctx.scoped(|| k.clip()?.plan(ctx, grads, &segs, max_norm, clip_value))?;
            self.clips.insert(key, plan);
        }
        let plan = &self.clips[&key];
        let ctx = &self.ctx;
        ctx.scoped(|| {
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                plan.record(&mut pass);
            }
            ctx.queue.submit([enc.finish()]);
            Ok(())
        })?;
        plan.read(ctx)
    }

    /// The zoneout masks a train-mode pass over `seq` steps of `batch`
    /// sequences draws with [`DropoutStep`] `step` (see
    /// [`Links::zoneout_h`]): `zoneout.h_mask` and, with zoneout of c,
    /// `zoneout.c_mask`, each [L·D, T, B, H], 1 where the unit keeps its
    /// previous value (values at padded positions are never used). Empty
    /// without zoneout. The kernels' Philox draw, on the CPU, so a caller
    /// can replay a pass.
    ///
    /// [`DropoutStep`]: crate::kernels::elementwise::DropoutStep
    /// [`Links::zoneout_h`]: crate::model::Links::zoneout_h
    pub fn zoneout_masks(
        &self,
        step: &crate::kernels::elementwise::DropoutStep,
        seq: usize,
        batch: usize,
    ) -> Result<Vec<NamedTensor>> {
        use crate::kernels::elementwise::dropout_keep;
        let links = self.model.links;
        let cfg = &self.model.config;
        let shape = vec![cfg.num_layers * cfg.dirs(), seq, batch, cfg.hidden_size];
        let n: usize = shape.iter().product();
        let n32 = crate::kernels::u32_of("zoneout mask elements", n)?;
        let (sh, sc) = Links::zoneout_streams();
        let mut out = Vec::new();
        for (name, p, stream) in [("h", links.zoneout_h, sh), ("c", links.zoneout_c, sc)] {
            if p <= 0.0 {
                continue;
            }
            let mask = (0..n32)
                .map(|i| Ok(f32::from(!dropout_keep(step, stream, i, p)?)))
                .collect::<Result<Vec<f32>>>()?;
            out.push(NamedTensor::new(
                format!("zoneout.{name}_mask"),
                shape.clone(),
                mask,
            ));
        }
        Ok(out)
    }

    /// The weight-drop masks a train-mode pass draws with the current
    /// [`DropoutStep`] (see [`Links::weight_drop`]): per (layer,
    /// direction), `weight_drop.mask_l{k}[_reverse]` shaped like its W_hh,
    /// 1 where the weight is kept and 0 where dropped. Empty without
    /// weight-drop. Computed by the passes' own kernel on a tensor of ones,
    /// so a caller can replay a pass.
    ///
    /// [`DropoutStep`]: crate::kernels::elementwise::DropoutStep
    /// [`Links::weight_drop`]: crate::model::Links::weight_drop
    pub fn weight_drop_masks(&self) -> Result<Vec<NamedTensor>> {
        let links = self.model.links;
        if links.weight_drop <= 0.0 {
            return Ok(Vec::new());
        }
        let cfg = &self.model.config;
        let shape = cfg.cell().whh_shape(cfg.hidden_size);
        let n: usize = shape.iter().product();
        let ctx = &self.ctx;
        let e = self.kernels.elementwise()?;
        let ones = ctx.storage_init("weight-drop ones", &vec![1f32; n])?;
        let mut out = Vec::new();
        for l in 0..cfg.num_layers {
            for d in 0..cfg.dirs() {
                let kept = ctx.storage("weight-drop mask", n)?;
                let s = crate::kernels::elementwise::DropoutShape {
                    n,
                    p: links.weight_drop,
                    stream: Links::weight_drop_stream(l * cfg.dirs() + d),
                    ..Default::default()
                };
                let list =
                    ctx.scoped(|| e.dropout_forward(ctx, &s, &self.dropout_step, &ones, &kept))?;
                ctx.scoped(|| {
                    let mut enc = ctx.device.create_command_encoder(&Default::default());
                    {
                        let mut pass = enc.begin_compute_pass(&Default::default());
                        list.iter().for_each(|d| d.record(&mut pass));
                    }
                    ctx.queue.submit([enc.finish()]);
                    Ok(())
                })?;
                let v = ctx.read_f32(&kept, 0, n)?;
                let mask = v.iter().map(|&x| f32::from(x != 0.0)).collect();
                let name = format!("weight_drop.mask_l{l}{}", crate::model::dir_suffix(d));
                out.push(NamedTensor::new(name, shape.clone(), mask));
            }
        }
        Ok(out)
    }

    /// Runs the forward pass.
    pub fn forward(&mut self, b: &Batch<'_>) -> Result<Outputs> {
        self.upload(b)?;
        let plan = &self.plans[&self.key(b.seq_len, b.batch)];
        let ctx = &self.ctx;
        ctx.scoped(|| {
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            plan.encode_forward(&mut enc);
            ctx.queue.submit([enc.finish()]);
            Ok(())
        })?;
        self.count_batch();
        self.read_outputs(b.seq_len, b.batch, b.batch_first)
    }

    /// Runs forward and backward in one submission, for the loss
    /// `Σ output·grad_output + Σ h_n·grad_h_n + Σ c_n·grad_c_n`.
    /// Parameter gradients are left in `model.grads` and also returned.
    pub fn forward_backward(
        &mut self,
        b: &Batch<'_>,
        up: &Upstream<'_>,
    ) -> Result<(Outputs, Grads)> {
        let cfg = self.model.config.clone();
        let (t, n) = (b.seq_len, b.batch);
        validate_upstream(&cfg, b, up)?;
        self.upload(b)?;
        let plan = &self.plans[&self.key(t, n)];
        let ctx = &self.ctx.clone();
        let gy = plan.grad_output();
        if b.batch_first {
            let w = cfg.out_width();
            ctx.write(gy, 0, &swap01(up.grad_output, n, t, w));
        } else {
            ctx.write(gy, 0, up.grad_output);
        }
        let half = crate::schedule::workspace::Workspace::state_len(&cfg, n);
        ctx.write(&plan.ws.gstate_in, 0, &h_to_rows(&cfg, up.grad_h_n));
        // Without c, the cells read zero there (no gradient arrives at c_n).
        match cfg.cell().has_c() {
            true => ctx.write(&plan.ws.gstate_in, half, up.grad_c_n),
            false => ctx.write(&plan.ws.gstate_in, half, &vec![0f32; half]),
        }
        ctx.scoped(|| {
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            plan.encode_forward(&mut enc);
            plan.encode_backward(&mut enc);
            ctx.queue.submit([enc.finish()]);
            Ok(())
        })?;
        self.count_batch();
        let out = self.read_outputs(t, n, b.batch_first)?;
        let plan = &self.plans[&self.key(t, n)];
        let i = cfg.input_size;
        let mut input = match self.input_grad {
            true => ctx.read_f32(plan.grad_input(), 0, t * n * i)?,
            false => Vec::new(),
        };
        if b.batch_first && self.input_grad {
            input = swap01(&input, t, n, i);
        }
        let st = ctx.read_f32(&plan.ws.gstate_out, 0, 2 * half)?;
        let grads = Grads {
            input,
            h0: h_from_rows(&cfg, &st[..half]),
            c0: match cfg.cell().has_c() {
                true => st[half..].to_vec(),
                false => Vec::new(),
            },
            params: self.model.grad_tensors(ctx)?,
        };
        Ok((out, grads))
    }
}
