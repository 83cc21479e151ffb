//! The trainer's GPU step: embedding (or dense input) → LSTM → linear head →
//! loss → backward → clip by global norm → optimizer, recorded into one
//! command encoder and one submit per step. Only the loss, the gradient norm
//! and the skip flag are read back.

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, GpuContext};
use crate::kernels::clip::ClipPlan;
use crate::kernels::elementwise::LastStepShape;
use crate::kernels::embedding::{EmbBackward, EmbForward, EmbShape, csr_words};
use crate::kernels::gemm::GemmOp;
use crate::kernels::loss::{
    CeBackward, CeForward, CeShape, LossStep, MseBackward, MseForward, MseShape,
};
use crate::kernels::optim::{OptimConfig, OptimPlan};
use crate::lstm::Lstm;
use crate::model::{HostModel, LstmConfig, LstmModel};
use crate::norm::Norm;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// What the model predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// Token ids in, a distribution over `vocab` classes at every step out;
    /// cross-entropy averaged over all positions.
    Language {
        /// Vocabulary size V.
        vocab: usize,
        /// Embedding width E.
        embed: usize,
    },
    /// Real features in, `outputs` values predicted from the last step; MSE.
    Regression {
        /// Features per step.
        features: usize,
        /// Values predicted per sequence.
        outputs: usize,
    },
}

/// Shape of a trainable model: the LSTM and what surrounds it.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConfig {
    /// Input and output pieces.
    pub head: Head,
    /// Hidden units per layer.
    pub hidden: usize,
    /// Stacked layers.
    pub layers: usize,
}

impl NetConfig {
    /// The LSTM part.
    pub fn lstm(&self) -> LstmConfig {
        let input_size = match self.head {
            Head::Language { embed, .. } => embed,
            Head::Regression { features, .. } => features,
        };
        LstmConfig {
            input_size,
            hidden_size: self.hidden,
            num_layers: self.layers,
            bidirectional: false,
            bias: true,
        }
    }

    /// Output width of the head.
    pub fn out_dim(&self) -> usize {
        match self.head {
            Head::Language { vocab, .. } => vocab,
            Head::Regression { outputs, .. } => outputs,
        }
    }

    /// The pieces around the LSTM, with PyTorch names.
    pub fn extra(&self) -> Vec<(String, Vec<usize>)> {
        let mut v = Vec::new();
        if let Head::Language { vocab, embed } = self.head {
            v.push(("embedding.weight".to_string(), vec![vocab, embed]));
        }
        v.push(("head.weight".to_string(), vec![self.out_dim(), self.hidden]));
        v.push(("head.bias".to_string(), vec![self.out_dim()]));
        v
    }
}

/// Initial values as PyTorch's defaults: LSTM U(±1/√H); embedding N(0, 1);
/// head (nn.Linear) U(±1/√fan_in) for weight and bias. Seeded.
pub fn init_values(net: &NetConfig, seed: u64) -> Vec<f32> {
    let cfg = net.lstm();
    let mut rng = crate::reference::Rng::new(seed);
    let k = 1.0 / (cfg.hidden_size as f64).sqrt();
    let n_lstm = crate::model::ParamTable::new(cfg.param_shapes()).total;
    let mut v: Vec<f32> = (0..n_lstm).map(|_| rng.uniform(-k, k) as f32).collect();
    for (name, shape) in net.extra() {
        let n: usize = shape.iter().product();
        if name == "embedding.weight" {
            // Box–Muller from the same generator.
            for _ in 0..n {
                let u1 = rng.uniform(f64::MIN_POSITIVE, 1.0);
                let u2 = rng.uniform(0.0, 1.0);
                v.push(((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32);
            }
        } else {
            let fan_in = cfg.hidden_size as f64;
            let b = 1.0 / fan_in.sqrt();
            v.extend((0..n).map(|_| rng.uniform(-b, b) as f32));
        }
    }
    v
}

/// One batch of a step.
pub enum StepData<'a> {
    /// Token ids and next-token targets, time-major [T·B] each.
    Tokens {
        /// Inputs.
        ids: &'a [u32],
        /// Targets.
        targets: &'a [u32],
    },
    /// Features [T, B, F] (time-major) and targets [B, outputs].
    Series {
        /// Inputs.
        x: &'a [f32],
        /// Targets.
        targets: &'a [f32],
    },
}

/// What one step measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Mean loss of the batch (before the update).
    pub loss: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// The gradients were not finite: no update happened.
    pub skipped: bool,
}

/// Buffers and dispatches of one (T, B) shape around the LSTM's plan.
struct StepPlan {
    inputs: wgpu::Buffer,
    targets: wgpu::Buffer,
    csr: wgpu::Buffer,
    head_out: wgpu::Buffer,
    forward: Vec<Dispatch>,
    backward: Vec<Dispatch>,
}

/// A model with its optimizer, ready to take steps.
pub struct Trainer {
    ctx: Arc<GpuContext>,
    /// The LSTM and its flat buffers (embedding and head parameters are
    /// appended to the same table).
    pub lstm: Lstm,
    /// The network's shape.
    pub net: NetConfig,
    clip: ClipPlan,
    /// The optimizer and its state.
    pub optim: OptimPlan,
    plans: HashMap<usize, StepPlan>,
    loss: wgpu::Buffer,
    loss_step: wgpu::Buffer,
    batch: usize,
    /// Final (h, c) of the last training step and of the last evaluation,
    /// carried into the next one of the same kind (truncated BPTT).
    carry: [wgpu::Buffer; 2],
}

/// Which carried state a pass continues from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carry {
    /// Zero initial state.
    Zero,
    /// The final state of the previous pass of the same kind (training or
    /// evaluation), detached.
    Continue,
}

fn push(v: &mut Vec<Dispatch>, d: Result<Option<Dispatch>>) -> Result<()> {
    v.extend(d?);
    Ok(())
}

impl Trainer {
    /// A trainer for `net` on batches of `batch` sequences, with parameters
    /// `values` (in table order: LSTM, then [`NetConfig::extra`]), clipping
    /// to `clip_norm` when given, and optimizer `optim`.
    pub fn new(
        ctx: Arc<GpuContext>,
        net: NetConfig,
        values: Vec<f32>,
        batch: usize,
        clip_norm: Option<f32>,
        optim: &OptimConfig,
    ) -> Result<Self> {
        if batch == 0 {
            return Err(Error::Invalid("--batch must be at least 1".into()));
        }
        let model = LstmModel::from_host(
            &ctx,
            HostModel {
                config: net.lstm(),
                norm: Norm::None,
                values,
                stats: Vec::new(),
                tracked: BTreeMap::new(),
                extra: net.extra(),
            },
        )?;
        let segs: Vec<(usize, usize)> = model
            .table
            .entries
            .iter()
            .map(|e| (e.offset, e.len()))
            .collect();
        let lstm = Lstm::new(ctx.clone(), model)?;
        let k = lstm.kernels();
        let grads = &lstm.model.grads;
        let clip = ctx.scoped(|| k.clip.plan(&ctx, grads, &segs, clip_norm, None))?;
        let n = lstm.model.table.total;
        let optim = ctx.scoped(|| {
            k.optim.plan(
                &ctx,
                optim,
                &lstm.model.params,
                grads,
                n,
                Some((&clip.stats, 3)),
            )
        })?;
        let state = 2 * crate::workspace::Workspace::state_len(&net.lstm(), batch);
        let carry = [
            ctx.storage("carried state", state)?,
            ctx.storage("carried state", state)?,
        ];
        let loss = ctx.storage("loss", crate::kernels::loss::LOSS_WORDS)?;
        let loss_step = ctx.storage("loss step", crate::kernels::loss::STEP_WORDS)?;
        Ok(Self {
            ctx,
            lstm,
            net,
            clip,
            optim,
            plans: HashMap::new(),
            loss,
            loss_step,
            batch,
            carry,
        })
    }

    /// Offset of a named parameter in the flat buffers.
    fn offset(&self, name: &str) -> usize {
        self.lstm.model.table.offset(name)
    }

    fn build(&mut self, t: usize) -> Result<StepPlan> {
        let b = self.batch;
        let tb = t * b;
        let h = self.net.hidden;
        let out_dim = self.net.out_dim();
        let (w_head, b_head) = (self.offset("head.weight"), self.offset("head.bias"));
        let emb_off = match self.net.head {
            Head::Language { .. } => Some(self.offset("embedding.weight")),
            Head::Regression { .. } => None,
        };
        let ctx = self.ctx.clone();
        let plan = self.lstm.plan(t, b)?;
        let (lstm_fwd, lstm_bwd) = (plan.forward.clone(), plan.backward.clone());
        let out = plan.output().clone();
        let ws_x = plan.ws.x.clone();
        let lengths = plan.ws.lengths.clone();
        let dy_top = plan.ws.dy[plan.grad_output].clone();
        let dy_in = plan.ws.dy[plan.grad_input].clone();
        let k = self.lstm.kernels();
        let params = &self.lstm.model.params;
        let grads = &self.lstm.model.grads;
        let lang = matches!(self.net.head, Head::Language { .. });
        // Rows the head sees: every step (language model) or the last (series).
        let rows = if lang { tb } else { b };
        let inputs = ctx.storage("step inputs", if lang { tb } else { 1 })?;
        let targets = ctx.storage("step targets", if lang { tb } else { b * out_dim })?;
        let csr = ctx.storage(
            "embedding index",
            match self.net.head {
                Head::Language { vocab, .. } => vocab + 1 + tb,
                _ => 1,
            },
        )?;
        let head_in = ctx.storage("head input", if lang { 1 } else { b * h })?;
        let head_out = ctx.storage("head output", rows * out_dim)?;
        let scratch = ctx.storage("loss scratch", 3 * rows)?;
        let mask = ctx.storage_init("loss mask", &vec![1u32; rows])?;
        ctx.scoped(|| {
            let mut forward = Vec::new();
            let mut backward = Vec::new();
            let (hin, hin_off) = if lang { (&out, 0) } else { (&head_in, 0) };
            if let (Head::Language { vocab, embed }, Some(emb_off)) = (self.net.head, emb_off) {
                let es = EmbShape {
                    rows: tb,
                    dim: embed,
                    vocab,
                    table_off: emb_off,
                    dtable_off: emb_off,
                    ..Default::default()
                };
                forward.extend(k.embedding.forward(
                    &ctx,
                    &es,
                    &EmbForward {
                        ids: &inputs,
                        table: params,
                        out: &ws_x,
                    },
                )?);
                // Runs last in backward, on the LSTM's input gradient.
                let eb = k.embedding.backward(
                    &ctx,
                    &es,
                    &EmbBackward {
                        csr: &csr,
                        dout: &dy_in,
                        dtable: grads,
                    },
                )?;
                forward.extend(lstm_fwd.iter().cloned());
                self.head(
                    &mut forward,
                    &mut backward,
                    hin,
                    hin_off,
                    rows,
                    &head_out,
                    &dy_top,
                    (w_head, b_head),
                )?;
                let cs = CeShape {
                    rows,
                    classes: vocab,
                    ..Default::default()
                };
                forward.extend(k.loss.ce_forward(
                    &ctx,
                    &cs,
                    &CeForward {
                        logits: &head_out,
                        targets: &targets,
                        step: &self.loss_step,
                        scratch: &scratch,
                        loss: &self.loss,
                    },
                )?);
                let mut bwd = k.loss.ce_backward(
                    &ctx,
                    &cs,
                    &CeBackward {
                        logits: &head_out,
                        targets: &targets,
                        step: &self.loss_step,
                        scratch: &scratch,
                        dlogits: &head_out,
                    },
                )?;
                bwd.append(&mut backward);
                backward = bwd;
                backward.extend(lstm_bwd.iter().cloned());
                backward.extend(eb);
            } else {
                forward.extend(lstm_fwd.iter().cloned());
                let ls = LastStepShape {
                    seq: t,
                    batch: b,
                    features: h,
                    ..Default::default()
                };
                forward.extend(
                    k.elementwise
                        .last_gather(&ctx, &ls, &lengths, &out, &head_in)?,
                );
                self.head(
                    &mut forward,
                    &mut backward,
                    hin,
                    hin_off,
                    rows,
                    &head_out,
                    // d(last step), scattered below into the zeroed d(output).
                    &head_in,
                    (w_head, b_head),
                )?;
                let ms = MseShape {
                    rows,
                    features: out_dim,
                    ..Default::default()
                };
                forward.extend(k.loss.mse_forward(
                    &ctx,
                    &ms,
                    &MseForward {
                        pred: &head_out,
                        target: &targets,
                        mask: &mask,
                        step: &self.loss_step,
                        scratch: &scratch,
                        loss: &self.loss,
                    },
                )?);
                let mut bwd = k.loss.mse_backward(
                    &ctx,
                    &ms,
                    &MseBackward {
                        pred: &head_out,
                        target: &targets,
                        mask: &mask,
                        step: &self.loss_step,
                        dpred: &head_out,
                    },
                )?;
                bwd.append(&mut backward);
                backward = bwd;
                backward.extend(
                    k.elementwise
                        .last_scatter(&ctx, &ls, &lengths, &head_in, &dy_top)?,
                );
                backward.extend(lstm_bwd.iter().cloned());
            }
            Ok(StepPlan {
                inputs: inputs.clone(),
                targets: targets.clone(),
                csr: csr.clone(),
                head_out: head_out.clone(),
                forward,
                backward,
            })
        })
    }

    /// Head forward (logits = x·W_headᵀ + b) and its backward, appended to
    /// `bwd` in the order they run after the loss backward: dW = dlogitsᵀ·x,
    /// db = Σ dlogits, then the input gradient dlogits·W_head into `dx`.
    #[allow(clippy::too_many_arguments)]
    fn head(
        &self,
        fwd: &mut Vec<Dispatch>,
        bwd: &mut Vec<Dispatch>,
        x: &wgpu::Buffer,
        x_off: usize,
        rows: usize,
        out: &wgpu::Buffer,
        dx: &wgpu::Buffer,
        (w, b): (usize, usize),
    ) -> Result<()> {
        let ctx = &self.ctx;
        let k = self.lstm.kernels();
        let params = &self.lstm.model.params;
        let grads = &self.lstm.model.grads;
        let (h, o) = (self.net.hidden, self.net.out_dim());
        push(
            fwd,
            k.gemm.dispatch(
                ctx,
                &GemmOp {
                    m: rows,
                    n: o,
                    k: h,
                    trans_a: false,
                    trans_b: true,
                    a: (x, x_off, h),
                    b: (params, w, h),
                    c: (out, 0, o),
                    bias: Some((params, Some(b), None)),
                    alpha: 1.0,
                    accumulate: false,
                },
            ),
        )?;
        push(
            bwd,
            k.gemm.dispatch(
                ctx,
                &GemmOp {
                    m: o,
                    n: h,
                    k: rows,
                    trans_a: true,
                    trans_b: false,
                    a: (out, 0, o),
                    b: (x, x_off, h),
                    c: (grads, w, h),
                    bias: None,
                    alpha: 1.0,
                    accumulate: false,
                },
            ),
        )?;
        push(
            bwd,
            k.reduce
                .colsum(ctx, (out, 0, o), rows, o, grads, b, None, false),
        )?;
        push(
            bwd,
            k.gemm.dispatch(
                ctx,
                &GemmOp {
                    m: rows,
                    n: h,
                    k: o,
                    trans_a: false,
                    trans_b: false,
                    a: (out, 0, o),
                    b: (params, w, h),
                    c: (dx, 0, h),
                    bias: None,
                    alpha: 1.0,
                    accumulate: false,
                },
            ),
        )
    }

    fn upload(&mut self, t: usize, data: &StepData<'_>) -> Result<()> {
        if !self.plans.contains_key(&t) {
            let p = self.build(t)?;
            self.plans.insert(t, p);
        }
        let b = self.batch;
        let p = &self.plans[&t];
        let ctx = &self.ctx;
        match (data, self.net.head) {
            (StepData::Tokens { ids, targets }, Head::Language { vocab, .. }) => {
                if ids.len() != t * b || targets.len() != t * b {
                    return Err(Error::tensor(
                        "tokens",
                        format!(
                            "{} ids and {} targets, expected {} each",
                            ids.len(),
                            targets.len(),
                            t * b
                        ),
                    ));
                }
                crate::kernels::embedding::check_ids(ids, vocab)?;
                crate::kernels::loss::check_targets(targets, vocab)?;
                ctx.write(&p.inputs, 0, ids);
                ctx.write(&p.targets, 0, targets);
                ctx.write(&p.csr, 0, &csr_words(ids, vocab));
                let step = LossStep {
                    count: crate::kernels::loss::ce_count(targets),
                    scale: 1.0,
                };
                ctx.write(&self.loss_step, 0, &step.words());
            }
            (StepData::Series { x, targets }, Head::Regression { features, outputs }) => {
                if x.len() != t * b * features {
                    return Err(Error::tensor(
                        "input",
                        format!("{} values, expected [T={t}, B={b}, F={features}]", x.len()),
                    ));
                }
                if targets.len() != b * outputs {
                    return Err(Error::tensor(
                        "targets",
                        format!("{} values, expected [B={b}, {outputs}]", targets.len()),
                    ));
                }
                if let Some(i) = x.iter().chain(targets.iter()).position(|v| !v.is_finite()) {
                    return Err(Error::tensor(
                        "input",
                        format!("non-finite value at flat index {i}"),
                    ));
                }
                let ws_x = self.lstm.plan(t, b)?.ws.x.clone();
                ctx.write(&ws_x, 0, x);
                ctx.write(&p.targets, 0, targets);
                let step = LossStep {
                    count: (b * outputs) as u32,
                    scale: 1.0,
                };
                ctx.write(&self.loss_step, 0, &step.words());
            }
            _ => {
                return Err(Error::Invalid(
                    "batch does not match the model's task".into(),
                ));
            }
        }
        let lens = vec![t as u32; b];
        let ws = &self.lstm.plan(t, b)?.ws;
        self.ctx.write(&ws.lengths, 0, &lens);
        Ok(())
    }

    /// Records the initial state (zero, or the carried one of `kind`: 0
    /// training, 1 evaluation) and clears the layer outputs.
    fn encode_state(
        &mut self,
        enc: &mut wgpu::CommandEncoder,
        t: usize,
        carry: Carry,
        kind: usize,
    ) -> Result<()> {
        let ws = &self.lstm.plan(t, self.batch)?.ws;
        match carry {
            Carry::Continue => {
                enc.copy_buffer_to_buffer(&self.carry[kind], 0, &ws.state_in, 0, ws.state_in.size())
            }
            Carry::Zero => enc.clear_buffer(&ws.state_in, 0, None),
        }
        for o in ws.outs.iter().chain(ws.normed.iter().flatten()) {
            enc.clear_buffer(o, 0, None);
        }
        Ok(())
    }

    /// Records keeping the final state for the next pass of `kind`.
    fn encode_keep(&mut self, enc: &mut wgpu::CommandEncoder, t: usize, kind: usize) -> Result<()> {
        let ws = &self.lstm.plan(t, self.batch)?.ws;
        enc.copy_buffer_to_buffer(&ws.state_out, 0, &self.carry[kind], 0, ws.state_out.size());
        Ok(())
    }

    /// The carried training state (h then c, each [L, B, H]), read back.
    pub fn carried_state(&self) -> Result<Vec<f32>> {
        let n = (self.carry[0].size() / 4) as usize;
        self.ctx.read_f32(&self.carry[0], 0, n)
    }

    /// Replaces the carried training state (as [`Trainer::carried_state`]
    /// returns it), e.g. when resuming.
    pub fn set_carried_state(&self, v: &[f32]) -> Result<()> {
        let n = (self.carry[0].size() / 4) as usize;
        if v.len() != n {
            return Err(Error::tensor(
                "state",
                format!("{} values, expected {n}", v.len()),
            ));
        }
        self.ctx.write(&self.carry[0], 0, v);
        Ok(())
    }

    /// One optimizer step on a batch of `t` steps at learning rate `lr`.
    /// `carry`: start from the previous training step's final state
    /// (truncated BPTT) or from zero.
    pub fn step(
        &mut self,
        t: usize,
        data: &StepData<'_>,
        carry: Carry,
        lr: f64,
    ) -> Result<StepStats> {
        self.upload(t, data)?;
        self.optim.prepare(&self.ctx, lr)?;
        let ctx = self.ctx.clone();
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        self.encode_state(&mut enc, t, carry, 0)?;
        let b = self.batch;
        {
            let ws = &self.lstm.plan(t, b)?.ws;
            enc.clear_buffer(&ws.dg, 0, None);
            if let Head::Regression { .. } = self.net.head {
                let plan = self.lstm.plan(t, b)?;
                enc.clear_buffer(&plan.ws.dy[plan.grad_output], 0, None);
            }
        }
        let p = &self.plans[&t];
        ctx.scoped(|| {
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                for d in p.forward.iter().chain(&p.backward) {
                    d.record(&mut pass);
                }
                self.clip.record(&mut pass);
                self.optim.dispatch.record(&mut pass);
            }
            Ok(())
        })?;
        self.encode_keep(&mut enc, t, 0)?;
        ctx.scoped(|| {
            ctx.queue.submit([enc.finish()]);
            Ok(())
        })?;
        let loss = ctx.read_f32(&self.loss, 0, 1)?[0];
        let st = self.clip.read(&ctx)?;
        self.optim.commit(st.nonfinite);
        Ok(StepStats {
            loss,
            grad_norm: st.total_norm,
            skipped: st.nonfinite,
        })
    }

    /// The mean loss of a batch without updating anything (validation,
    /// generation); its state carries into the next evaluation only.
    pub fn eval(&mut self, t: usize, data: &StepData<'_>, carry: Carry) -> Result<f32> {
        self.upload(t, data)?;
        let ctx = self.ctx.clone();
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        self.encode_state(&mut enc, t, carry, 1)?;
        let p = &self.plans[&t];
        ctx.scoped(|| {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for d in &p.forward {
                d.record(&mut pass);
            }
            Ok(())
        })?;
        self.encode_keep(&mut enc, t, 1)?;
        ctx.scoped(|| {
            ctx.queue.submit([enc.finish()]);
            Ok(())
        })?;
        Ok(ctx.read_f32(&self.loss, 0, 1)?[0])
    }

    /// The head's output of the last pass ([rows, out_dim]: logits or
    /// predictions), read back.
    pub fn head_output(&mut self, t: usize) -> Result<Vec<f32>> {
        let rows = match self.net.head {
            Head::Language { .. } => t * self.batch,
            Head::Regression { .. } => self.batch,
        };
        let p = self
            .plans
            .get(&t)
            .ok_or_else(|| Error::Invalid(format!("no pass of length {t} has run")))?;
        self.ctx.read_f32(&p.head_out, 0, rows * self.net.out_dim())
    }

    /// Dispatches and submits per training step of length `t` (after one
    /// step of that length has run).
    pub fn dispatches_per_step(&self, t: usize) -> Option<(usize, usize)> {
        self.plans.get(&t).map(|p| {
            (
                p.forward.len() + p.backward.len() + self.clip.dispatches.len() + 1,
                1,
            )
        })
    }

    /// The context.
    pub fn ctx(&self) -> &Arc<GpuContext> {
        &self.ctx
    }
}
