//! `lstm-wgpu train` as a library call: a [`Config`] (the command line's
//! settings, typed) and [`Data`] (the settings' file or built-in dataset,
//! or token ids or rows held in memory) in, a trained [`Model`] and the
//! metrics of every step out, with a callback per step.
//!
//! ```no_run
//! use lstm_wgpu::run::{Config, Data, Run};
//! # fn main() -> lstm_wgpu::Result<()> {
//! let values: Vec<f64> = (0..400).map(|i| (i as f64 * 0.2).sin()).collect();
//! let config = Config { seq_len: Some(16), hidden: Some(16), steps: Some(100), ..Default::default() };
//! let trained = Run::new(config, Data::rows(values, &["y"]))?.train(|m| {
//!     if let Some(v) = &m.validation {
//!         println!("step {} loss {:.4} val_loss {:.4}", m.step, m.loss, v.loss);
//!     }
//!     Ok(())
//! })?;
//! let mut model = trained.model; // a lstm_wgpu::Model
//! # Ok(()) }
//! ```
//!
//! The command line's `train` is this loop with its outputs around it
//! (progress, the metrics file, TensorBoard, the plot): the same settings
//! give the same losses and the same checkpoints. Nothing here reads the
//! environment or prints; the messages a run has for its user come back as
//! values ([`Prepared::notes`], [`Run::warnings`]).
//!
//! A run goes through three stages: [`Prepared`] (settings resolved, data
//! loaded and split, everything checked that needs no GPU), [`Run`] (the
//! trainer on a GPU, weights restored) and [`Trained`] (the model, the
//! history and a [`Summary`]). [`Run::new`] takes the first two at once.

pub mod checkpoint;
pub mod choice;
pub mod data;
pub mod settings;
pub mod validation;

pub use crate::run::data::Data;
pub use crate::run::settings::{Config, RunConfig};
pub use crate::run::validation::ValReport;

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::infer::{Checkpoint, Model};
use crate::kernels::histogram::SegmentHistogram;
use crate::run::checkpoint::{
    Loaded, RunState, SCALER_NAME, Tensors, counter, health_from, init_file, load_checkpoint,
    model_parts, restore_model, resumed_config, save_checkpoint, scaler_from, values_from,
};
use crate::run::data::{
    RunData, check_splits, dump_data, epoch_len, load_data, net_of, run_seq_len, shard, test_set,
    train_batch,
};
use crate::run::settings::{
    best_path, check_batch_size, check_schedule_flags, hist_every, optim_config, resolve_for,
    schedule_of,
};
use crate::run::validation::{score, validate};
use crate::train::forecast::SeriesMetrics;
use crate::train::health::{Counts, StepHealth, layer_norms};
use crate::train::lr::LrSchedule;
use crate::train::reduce::Reducer;
use crate::train::{HistSettings, NetConfig, SizeLimits, StepStats, Trainer, init_values};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The loss histories of a run, (step, loss) pairs, and the global
/// gradient norms, (step, norm): a resumed run's start with its
/// checkpoint's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Curves {
    /// Training losses.
    pub train: Vec<(f64, f64)>,
    /// Validation losses.
    pub val: Vec<(f64, f64)>,
    /// Global gradient norms before clipping.
    pub grad: Vec<(f64, f64)>,
}

impl Curves {
    /// The three, in that order.
    pub fn all(&self) -> [&[(f64, f64)]; 3] {
        [&self.train, &self.val, &self.grad]
    }
}

/// The end of an epoch: its number (from 1) and its gradient health
/// counts, and the run's so far.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochEnd {
    /// The epoch that ended.
    pub epoch: usize,
    /// Its explosion and vanishing counts.
    pub counts: Counts,
    /// The run's.
    pub total: Counts,
}

/// What one training step measured, and what happened after it: the
/// epoch's end, a validation, a checkpoint. The callback of
/// [`Run::train`] gets one per step, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct StepMetrics {
    /// The step (from 1; a resumed run continues its count).
    pub step: usize,
    /// The batch's mean loss (before the update).
    pub loss: f32,
    /// The learning rate of the step.
    pub lr: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f32,
    /// The gradients were not finite: the step was skipped.
    pub skipped: bool,
    /// Skipped steps so far.
    pub skipped_total: usize,
    /// The loss scale the step's gradients carried (1 without a scaler).
    pub loss_scale: f32,
    /// Tokens (positions × sequences) per second since this invocation
    /// began.
    pub tokens_per_s: f64,
    /// The positions T of the step's batch.
    pub seq_len: usize,
    /// The gradient health checks of the step.
    pub health: StepHealth,
    /// The gradient norm of each layer.
    pub layer_grad_norms: Vec<f64>,
    /// The gradient norm of each parameter, in the order of
    /// [`Run::tensor_names`].
    pub grad_norms: Vec<f32>,
    /// On a histogram step, the tagged histograms of the parameters,
    /// gradients and activations (see `hist_every`); empty otherwise, and
    /// in [`Trained::history`].
    pub histograms: Vec<(String, SegmentHistogram)>,
    /// The epoch that ended with this step, if one did.
    pub epoch_end: Option<EpochEnd>,
    /// The validation after this step, if one ran.
    pub validation: Option<ValReport>,
    /// That validation was the best so far (`<checkpoint>.best` was
    /// written).
    pub improved: bool,
    /// The step ended at a checkpoint (a validation step or the stop): the
    /// checkpoint, if the settings name one, was written.
    pub checkpoint: bool,
    /// The run stops early after this step (`patience`).
    pub early_stop: bool,
    /// On the run's first step: the GPU dispatches and submits a step
    /// records.
    pub dispatches: Option<(usize, usize)>,
}

/// How a run ended: its final state and figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Where the run stands: steps, skipped steps, best validation loss,
    /// health counts, best test figures.
    pub state: RunState,
    /// The step this invocation started from (0, or a resumed run's).
    pub first_step: usize,
    /// The loss and gradient-norm histories (a resumed run's included).
    pub curves: Curves,
    /// Parameters of the model.
    pub params: usize,
    /// Epochs begun (the last may be partial).
    pub epochs: usize,
    /// Seconds this invocation trained.
    pub secs: f64,
    /// Tokens per second.
    pub tokens_per_s: f64,
    /// The last validation.
    pub last_validation: Option<ValReport>,
    /// The loss scale at the end, when a scaler ran.
    pub loss_scale: Option<f32>,
    /// The run stopped early (`patience`).
    pub stopped_early: bool,
    /// The partial epoch an early stop ended.
    pub last_epoch: Option<EpochEnd>,
    /// The test split's scores with the final weights (`test_fraction`).
    pub test: Option<SeriesMetrics>,
}

/// A finished run: the model as trained (the final weights, in eval mode,
/// on the run's GPU), every step's metrics, and how it ended.
pub struct Trained {
    /// The final model; `<checkpoint>.best` holds the best validation's.
    pub model: Model,
    /// Every step's metrics of this invocation, in order (without their
    /// histograms).
    pub history: Vec<StepMetrics>,
    /// How it ended.
    pub summary: Summary,
    /// The parameters' names, in the order of
    /// [`StepMetrics::grad_norms`].
    pub tensor_names: Vec<String>,
}

/// How a run meets the machine, besides its settings.
#[derive(Default)]
pub struct Setup {
    /// A data-parallel group this process is a rank of: it trains on its
    /// contiguous share of every global batch and sums its gradients with
    /// the others' (docs/distributed.md); only rank 0 writes checkpoints.
    pub reducer: Option<Box<dyn Reducer>>,
    /// Compute histograms (every `hist_every` steps, 50 by default where
    /// the model allows): the caller has somewhere to put them.
    pub histograms: bool,
}

/// Where a run's weights come from, once read: fresh values, or those of
/// a checkpoint or an `--init` file (its tensors, counters and path).
struct Weights {
    values: Vec<f32>,
    source: Option<(Tensors, PathBuf)>,
    state: RunState,
    curves: Curves,
}

/// A run's settings resolved, its data loaded and split, and everything
/// that needs no GPU checked.
pub struct Prepared {
    config: Config,
    c: RunConfig,
    resumed: Option<Loaded>,
    given: Data,
    data: RunData,
    notes: Vec<String>,
    test: Option<crate::data::WindowSet>,
    net: NetConfig,
    per_epoch: usize,
    total: usize,
    weights: Option<Weights>,
    warnings: Vec<String>,
}

impl Prepared {
    /// Prepares a run of `config` on `data`: the settings resolved (on
    /// `config.resume`, the checkpoint's, with the settings that may change
    /// applied and the others refused), the data loaded and checked.
    pub fn new(config: Config, data: Data) -> Result<Self> {
        let resumed = config
            .resume
            .as_ref()
            .map(|p| load_checkpoint(p))
            .transpose()?;
        let c = match &resumed {
            Some(l) => resumed_config(&config, l, None, data.task())?,
            None => resolve_for(&config, data.task())?,
        };
        Self::with_settings(config, c, resumed, data)
    }

    /// Prepares a run whose settings are resolved already: `c` from
    /// `config` (see [`Config::resolve`], [`checkpoint::resumed_config`]),
    /// resuming `resumed` if given.
    pub fn with_settings(
        config: Config,
        mut c: RunConfig,
        resumed: Option<Loaded>,
        given: Data,
    ) -> Result<Self> {
        check_schedule_flags(&config, c.schedule)?;
        let budget = crate::train::host_budget();
        check_batch_size(&c, budget)?;
        let data = load_data(
            &c,
            &given,
            resumed.as_ref().and_then(|l| l.vocab.clone()),
            resumed.as_ref().and_then(|l| l.norm.clone()),
        )?;
        let notes = notes(&config, &c, &data, resumed.is_some());
        check_splits(&c, &data)?;
        let test = test_set(&c, &data)?;
        let net = net_of(&c, &data)?;
        net.check_size(run_seq_len(&c, &data), c.batch, &SizeLimits::of(None))?;
        let per_epoch = epoch_len(&c, &data).max(1);
        let total = match (config.steps, config.epochs, &resumed) {
            (Some(s), _, _) => s,
            (None, Some(e), _) => e * per_epoch,
            (None, None, Some(_)) => c.steps,
            (None, None, None) => 200,
        };
        c.steps = total;
        Ok(Self {
            config,
            c,
            resumed,
            given,
            data,
            notes,
            test,
            net,
            per_epoch,
            total,
            weights: None,
            warnings: Vec::new(),
        })
    }

    /// The resolved settings.
    pub fn settings(&self) -> &RunConfig {
        &self.c
    }

    /// The network the run trains.
    pub fn net(&self) -> &NetConfig {
        &self.net
    }

    /// What the run has to say about its inputs: the task inferred from
    /// the data file, a series' columns.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The run's length in steps.
    pub fn total_steps(&self) -> usize {
        self.total
    }

    /// Training steps per epoch.
    pub fn steps_per_epoch(&self) -> usize {
        self.per_epoch
    }

    /// `--dump-data`: writes the exact data the run would train and
    /// validate on to `path` (see [`data::dump_data`]) and says what it
    /// wrote.
    pub fn dump_data(&self, path: &Path) -> Result<String> {
        let budget = crate::train::host_budget();
        dump_data(path, &self.c, &self.given, &self.data, self.total, budget)
    }

    /// Reads the weights the run starts from (a resumed checkpoint's, an
    /// `init` file's, or fresh ones from the seed) and where a resumed run
    /// stands; the step it continues from. [`Prepared::start`] does it
    /// when it has not been done.
    pub fn restore(&mut self) -> Result<usize> {
        if let Some(w) = &self.weights {
            return Ok(w.state.step);
        }
        let net = &self.net;
        let source = match (&self.resumed, &self.config.init) {
            (Some(l), _) => Some((l.file.params_and_counters()?, l.file.path.clone())),
            (None, Some(p)) => {
                let (tensors, note) = init_file(net, p)?;
                self.warnings.extend(note);
                Some((tensors, p.clone()))
            }
            (None, None) => None,
        };
        let values = match &source {
            Some(((floats, _), p)) => values_from(net, floats, p)?,
            None => init_values(net, self.c.seed),
        };
        let (mut state, curves) = match &self.resumed {
            Some(l) => resumed_state(l, self.total)?,
            None => Default::default(),
        };
        // The default threshold: the clip norm, else the running median.
        state.health.fixed = self.c.explode_threshold.or(self.c.clip_norm.map(f64::from));
        schedule_of(&self.c, self.total).validate()?;
        let step = state.step;
        self.weights = Some(Weights {
            values,
            source,
            state,
            curves,
        });
        Ok(step)
    }

    /// Builds the trainer on `ctx`: precision, loss scaler, histograms, the
    /// weights of [`Prepared::restore`] and, on resume, the optimizer,
    /// carried state and scaler; joins the data-parallel group of `setup`.
    pub fn start(mut self, ctx: Arc<GpuContext>, setup: Setup) -> Result<Run> {
        self.restore()?;
        let w = self.weights.take().expect("restored above");
        let tr = build_trainer(&mut self, ctx, &w, setup)?;
        let stop = self
            .config
            .stop_after
            .map_or(self.total, |s| s.min(self.total));
        let sched = schedule_of(&self.c, self.total);
        Ok(Run {
            names: tr.tensor_names(),
            first_step: w.state.step,
            st: w.state,
            curves: w.curves,
            tr,
            sched,
            stop,
            p: self,
            start: std::time::Instant::now(),
            tokens: 0,
            last_val: None,
            stopped_early: false,
            history: Vec::new(),
        })
    }
}

/// A run on its GPU, ready to train.
pub struct Run {
    p: Prepared,
    tr: Trainer,
    st: RunState,
    curves: Curves,
    sched: LrSchedule,
    /// The parameters' names, in the order of `StepStats::tensor_norms`.
    names: Vec<String>,
    /// Where this invocation stops (`stop_after`).
    stop: usize,
    first_step: usize,
    start: std::time::Instant,
    tokens: usize,
    last_val: Option<ValReport>,
    stopped_early: bool,
    history: Vec<StepMetrics>,
}

impl Run {
    /// Prepares the run of `config` on `data` and starts it on the default
    /// GPU adapter ([`GpuContext::new`]).
    pub fn new(config: Config, data: Data) -> Result<Self> {
        let p = Prepared::new(config, data)?;
        p.start(Arc::new(GpuContext::new()?), Setup::default())
    }

    /// The resolved settings.
    pub fn settings(&self) -> &RunConfig {
        &self.p.c
    }

    /// The network it trains.
    pub fn net(&self) -> &NetConfig {
        &self.p.net
    }

    /// What the run has to say about its inputs (see [`Prepared::notes`]).
    pub fn notes(&self) -> &[String] {
        &self.p.notes
    }

    /// Warnings and notes about its weights and precision (an `init`
    /// checkpoint's state left unused, a precision chosen for it).
    pub fn warnings(&self) -> &[String] {
        &self.p.warnings
    }

    /// The parameters' names, in the order of [`StepMetrics::grad_norms`].
    pub fn tensor_names(&self) -> &[String] {
        &self.names
    }

    /// Parameters of the model.
    pub fn params(&self) -> usize {
        self.tr.lstm.model.table.total
    }

    /// The run's length in steps.
    pub fn total_steps(&self) -> usize {
        self.p.total
    }

    /// Training steps per epoch.
    pub fn steps_per_epoch(&self) -> usize {
        self.p.per_epoch
    }

    /// The step it starts from (0, or a resumed run's).
    pub fn first_step(&self) -> usize {
        self.first_step
    }

    /// Where this invocation stops: the run's length, or `stop_after`.
    pub fn stop_step(&self) -> usize {
        self.stop
    }

    /// The target column of a series run (its name in the data).
    pub fn target_name(&self) -> Option<&str> {
        match &self.p.data {
            RunData::Series(_, sel) => Some(&sel.table.target_name),
            _ => None,
        }
    }

    /// The trainer.
    pub fn trainer(&self) -> &Trainer {
        &self.tr
    }

    /// Trains up to the stop, validating every `val_every` steps and
    /// writing the checkpoints on the way; `on_step` gets every step's
    /// metrics (an error from it ends the run with that error). Returns the
    /// trained model, the history and the summary.
    ///
    /// Steps are pipelined: the next is submitted before the previous
    /// one's loss is read, except across a validation or checkpoint step,
    /// which must see the parameters right after it.
    pub fn train(mut self, mut on_step: impl FnMut(&StepMetrics) -> Result<()>) -> Result<Trained> {
        let mut submitted = self.st.step;
        let mut in_flight: VecDeque<(usize, f64)> = Default::default();
        while self.st.step < self.stop {
            while submitted < self.stop
                && submitted - self.st.step < crate::kernels::optim::MAX_IN_FLIGHT
                && (submitted == self.st.step || !self.boundary(submitted))
            {
                let (t, batch, carry) = train_batch(&self.p.c, &self.p.data, submitted)?;
                let batch = shard(&self.tr, batch);
                let lr = self.sched.lr(self.p.c.lr, submitted + 1);
                self.tr.submit(t, &batch.view(), carry, lr)?;
                in_flight.push_back((t, lr));
                submitted += 1;
            }
            let s = self
                .tr
                .next_stats()?
                .ok_or_else(|| Error::Gpu("a submitted step left no statistics".into()))?;
            let (t, lr) = in_flight
                .pop_front()
                .ok_or_else(|| Error::Gpu("step bookkeeping out of order".into()))?;
            let mut m = self.record(s, t, lr);
            // A stop between validations (stop_after) writes the
            // checkpoint without validating, so that resuming runs as
            // uninterrupted.
            let val_due =
                self.st.step.is_multiple_of(self.p.c.val_every) || self.st.step == self.p.total;
            if val_due || self.st.step == self.stop {
                m.checkpoint = true;
                m.early_stop = self.checkpoint(&mut m, val_due)?;
            }
            on_step(&m)?;
            m.histograms = Vec::new();
            self.history.push(m);
            if self.stopped_early {
                break;
            }
        }
        self.finish()
    }

    /// Whether step `n` ends with a validation or a checkpoint.
    fn boundary(&self, n: usize) -> bool {
        n.is_multiple_of(self.p.c.val_every) || n == self.p.total || n == self.stop
    }

    /// Counts a finished step (`t` positions at rate `lr`): its metrics.
    fn record(&mut self, s: StepStats, t: usize, lr: f64) -> StepMetrics {
        let st = &mut self.st;
        st.step += 1;
        self.tokens += t * self.p.c.batch;
        let dispatches = match st.step {
            1 => self.tr.dispatches_per_step(t),
            _ => None,
        };
        if s.skipped {
            st.skipped += 1;
        }
        let layers = layer_norms(&self.names, &s.tensor_norms, self.p.c.layers);
        let health = st.health.observe(s.grad_norm, &layers, s.skipped);
        let rate = self.tokens as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        // The last, partial, epoch ends with the run.
        let epoch_end = (st.step.is_multiple_of(self.p.per_epoch) || st.step == self.p.total)
            .then(|| self.end_epoch());
        let st = &self.st;
        self.curves.train.push((st.step as f64, s.loss as f64));
        self.curves.grad.push((st.step as f64, s.grad_norm as f64));
        StepMetrics {
            step: st.step,
            loss: s.loss,
            lr,
            grad_norm: s.grad_norm,
            skipped: s.skipped,
            skipped_total: st.skipped,
            loss_scale: s.loss_scale,
            tokens_per_s: rate,
            seq_len: t,
            health,
            layer_grad_norms: layers,
            grad_norms: s.tensor_norms,
            histograms: s.histograms,
            epoch_end,
            validation: None,
            improved: false,
            checkpoint: false,
            early_stop: false,
            dispatches,
        }
    }

    /// Ends the epoch: its explosion and vanishing counts, which start the
    /// next epoch's from zero.
    fn end_epoch(&mut self) -> EpochEnd {
        let step = self.st.step;
        EpochEnd {
            epoch: step.div_ceil(self.p.per_epoch),
            counts: self.st.health.end_epoch(),
            total: self.st.health.total,
        }
    }

    /// At a validation step (`val_due`) or the stop: validates (into
    /// `m`), writes the checkpoints; whether to stop early.
    fn checkpoint(&mut self, m: &mut StepMetrics, val_due: bool) -> Result<bool> {
        if val_due {
            self.validate(m)?;
        }
        if let Some(p) = &self.p.config.checkpoint {
            let (tr, c, data) = (&self.tr, &self.p.c, &self.p.data);
            save_checkpoint(p, tr, c, data, &self.st, self.curves.all())?;
        }
        if let Some(pat) = self.p.c.patience
            && val_due
            && self.st.bad_vals >= pat
        {
            self.stopped_early = true;
        }
        Ok(self.stopped_early)
    }

    /// Validates after the step of `m` (into it), and writes the best
    /// checkpoint on an improvement. Nothing without a validation split.
    fn validate(&mut self, m: &mut StepMetrics) -> Result<()> {
        let Some(rep) = validate(&mut self.tr, &self.p.c, &self.p.data)? else {
            return Ok(());
        };
        let (step, v) = (self.st.step, rep.loss);
        self.curves.val.push((step as f64, v));
        m.validation = Some(rep);
        self.last_val = Some(rep);
        if v < self.st.best_val {
            m.improved = true;
            self.st.best_val = v;
            self.st.best_recall = rep.recall;
            self.st.bad_vals = 0;
            // The best weights' test figures, kept with the checkpoint.
            if let Some(t) = &self.p.test {
                let s = score(&mut self.tr, t, &self.p.data)?;
                self.st.best_test = Some((s.model.mae, s.model.rmse));
            }
            if let Some(p) = &self.p.config.checkpoint {
                let (tr, c, data) = (&self.tr, &self.p.c, &self.p.data);
                save_checkpoint(&best_path(p), tr, c, data, &self.st, self.curves.all())?;
            }
        } else {
            self.st.bad_vals += 1;
        }
        Ok(())
    }

    /// Writes what is left (the checkpoint of a run of no steps), scores
    /// the test split and builds the model.
    fn finish(mut self) -> Result<Trained> {
        // A run of no steps (steps 0, epochs 0) still writes its
        // checkpoint: the initial model (or the resumed one, as it stands).
        if self.st.step == self.first_step
            && let Some(p) = &self.p.config.checkpoint
        {
            let (tr, c, data) = (&self.tr, &self.p.c, &self.p.data);
            save_checkpoint(p, tr, c, data, &self.st, self.curves.all())?;
        }
        // An early stop ends the epoch in progress too.
        let last_epoch = (self.stopped_early && !self.st.step.is_multiple_of(self.p.per_epoch))
            .then(|| self.end_epoch());
        let test = match &self.p.test {
            Some(t) => Some(score(&mut self.tr, t, &self.p.data)?),
            None => None,
        };
        let secs = self.start.elapsed().as_secs_f64();
        let label = match &self.p.config.checkpoint {
            Some(p) => p.clone(),
            None => PathBuf::from("(trained model)"),
        };
        let (meta, floats, ints) = model_parts(&self.tr, &self.p.c, &self.p.data)?;
        let ck = Checkpoint::from_tensors(&label, &meta, floats, ints)?;
        let model = Model::new(self.tr.ctx().clone(), ck);
        let summary = Summary {
            params: self.params(),
            epochs: self.st.step.div_ceil(self.p.per_epoch),
            first_step: self.first_step,
            secs,
            tokens_per_s: self.tokens as f64 / secs.max(1e-9),
            last_validation: self.last_val,
            loss_scale: self.tr.scaler_state()?.map(|s| s.scale),
            stopped_early: self.stopped_early,
            last_epoch,
            test,
            state: self.st,
            curves: self.curves,
        };
        Ok(Trained {
            model,
            history: self.history,
            summary,
            tensor_names: self.names,
        })
    }
}

/// Trains `config` on `data` data-parallel over `devices`, one rank per
/// entry (the same adapter may repeat), each a thread with its own
/// [`GpuContext`] and its share of every global batch, summing gradients
/// in rank order ([`crate::train::reduce::ThreadGroup`]): the same
/// figures as that many MPI ranks, bit for bit. `on_step` sees rank 0's
/// steps; only rank 0 writes checkpoints. Returns rank 0's [`Trained`]
/// (every rank holds the same weights); a rank that fails ends the
/// others' sums, and the error names it (`rank R of N: …`).
pub fn train_on_devices(
    config: Config,
    data: Data,
    devices: &[crate::gpu::GpuOptions],
    on_step: impl FnMut(&StepMetrics) -> Result<()> + Send,
) -> Result<Trained> {
    if devices.is_empty() {
        return Err(Error::Invalid("no devices to train on".into()));
    }
    let on_step = std::sync::Mutex::new(Some(on_step));
    let group = crate::train::reduce::ThreadGroup::new(devices.len());
    let mut all = group.run(|r| {
        let rank = r.rank();
        let p = Prepared::new(config.clone(), data.clone())?;
        let ctx = Arc::new(GpuContext::with_options(devices[rank].clone())?);
        let setup = Setup {
            reducer: Some(Box::new(r)),
            histograms: false,
        };
        let run = p.start(ctx, setup)?;
        if rank > 0 {
            return run.train(|_| Ok(())).map(|_| None);
        }
        let mut f = (on_step.lock().ok().and_then(|mut f| f.take()))
            .ok_or_else(|| Error::Invalid("rank 0 ran twice".into()))?;
        // A model holds trainers, which stay on their thread: its parts.
        let t = run.train(&mut f)?;
        let (ctx, ck) = (t.model.ctx().clone(), t.model.checkpoint().clone());
        Ok(Some((ctx, ck, t.history, t.summary, t.tensor_names)))
    })?;
    let (ctx, ck, history, summary, tensor_names) = all
        .swap_remove(0)
        .ok_or_else(|| Error::Invalid("rank 0 trained nothing".into()))?;
    Ok(Trained {
        model: Model::new(ctx, ck),
        history,
        summary,
        tensor_names,
    })
}

/// What a run says about its inputs before training: the task inferred
/// from the data file, and a series' columns.
fn notes(a: &Config, c: &RunConfig, data: &RunData, resumed: bool) -> Vec<String> {
    let mut notes = Vec::new();
    if !resumed
        && a.task.is_none()
        && a.dataset.is_none()
        && let Some(p) = &a.data
    {
        notes.push(format!(
            "task: {} (inferred from {}: {}; --task overrides)",
            c.task,
            p.display(),
            if settings::is_csv(p) {
                "a .csv file"
            } else {
                "not a .csv file, read as text"
            }
        ));
    }
    if let RunData::Series(_, sel) = data {
        notes.push(data::describe_columns(c, sel));
    }
    notes
}

/// Where a resumed run stands: its counters and loss histories, checked
/// against the run's length `total`.
fn resumed_state(l: &Loaded, total: usize) -> Result<(RunState, Curves)> {
    let st = RunState {
        step: counter(&l.file, "train.step")? as usize,
        skipped: counter(&l.file, "train.skipped")? as usize,
        bad_vals: counter(&l.file, "train.bad_vals")? as usize,
        best_val: l.best_val,
        health: health_from(&l.file, None)?,
        best_test: l.best_test,
        best_recall: l.best_recall,
    };
    if total < st.step {
        return Err(Error::Invalid(format!(
            "--steps {total}: {} is already at step {}",
            l.file.path.display(),
            st.step
        )));
    }
    let curves = Curves {
        train: l.curve.clone(),
        val: l.val_curve.clone(),
        grad: l.grad_curve.clone(),
    };
    Ok((st, curves))
}

/// Builds the trainer of `p` on `ctx`: precision, loss scaler, and the
/// weights and optimizer state of `w`; the data-parallel group of `setup`.
fn build_trainer(
    p: &mut Prepared,
    ctx: Arc<GpuContext>,
    w: &Weights,
    setup: Setup,
) -> Result<Trainer> {
    let (a, c, net) = (&p.config, &p.c, &p.net);
    net.check_size(
        run_seq_len(c, &p.data),
        c.batch,
        &SizeLimits::of(Some(&ctx)),
    )?;
    let oc = optim_config(c)?;
    // The precision a resumed run trained in.
    let resumed = p.resumed.as_ref();
    let saved = resumed.map(|l| l.precision);
    use crate::model::precision::{Precision, PrecisionChoice};
    let choice = match (saved, a.precision) {
        (_, Some(c)) => c,
        (Some(Precision::F32), None) => PrecisionChoice::F32,
        (Some(Precision::F16Mixed), None) => PrecisionChoice::F16Mixed,
        (None, None) => Default::default(),
    };
    // Weight-drop reads an f32 copy of W_hh: f32 only.
    let choice = match (net.weight_drop > 0.0, choice) {
        (true, PrecisionChoice::F16Mixed) => {
            return Err(Error::Invalid(
                "--weight-drop runs in f32 (give --precision f32 or auto)".into(),
            ));
        }
        (true, PrecisionChoice::Auto) => {
            p.warnings
                .push("warning: precision auto: --weight-drop runs in f32; using f32".into());
            PrecisionChoice::F32
        }
        (_, c) => c,
    };
    let (precision, warning) =
        crate::model::precision::resolve_for(choice, &ctx, &net.norm, &net.lstm())?;
    if let Some(w) = warning {
        p.warnings.push(format!("warning: {w}"));
    }
    let ranks = setup.reducer.as_ref().map_or(1, |r| r.size());
    if !c.batch.is_multiple_of(ranks) {
        return Err(Error::Invalid(format!(
            "--batch {}: the global batch must divide evenly over the {ranks} ranks; \
             use a multiple of {ranks}",
            c.batch
        )));
    }
    let (a, c, net) = (&p.config, &p.c, &p.net);
    let mut tr = Trainer::new(
        ctx,
        net.clone(),
        w.values.clone(),
        c.batch / ranks,
        c.clip_norm,
        &oc,
    )?;
    if let Some(r) = setup.reducer {
        join(&mut tr, r)?;
    }
    if let Some(mb) = a.bucket_mb {
        if ranks == 1 {
            return Err(Error::Invalid(format!(
                "--bucket-mb {mb}: buckets are for data-parallel runs (mpirun, --devices)"
            )));
        }
        tr.set_bucket_bytes(crate::train::reduce::bucket_bytes(mb)?);
    }
    tr.set_precision(precision)?;
    // Resumed in its checkpoint's precision without a loss scale, a run
    // keeps its scaler: on exactly when the checkpoint holds its state.
    let keep_scaler = a.loss_scale == Default::default() && saved == Some(precision);
    let scaler = match resumed {
        Some(l) if keep_scaler => l
            .file
            .f32(SCALER_NAME)?
            .map(|_| crate::model::precision::ScalerConfig::default()),
        _ => a.loss_scale.config(precision),
    };
    tr.set_loss_scaler(scaler)?;
    let every = hist_every(setup.histograms, c);
    tr.set_histograms((every > 0).then_some(HistSettings {
        every,
        bins: crate::kernels::histogram::DEFAULT_BINS,
    }))?;
    tr.dropout_seed = c.seed;
    if let Some(((floats, ints), path)) = &w.source {
        restore_model(&mut tr, floats, ints, path)?;
    }
    if let Some(l) = resumed {
        let (floats, _) = l.file.params_and_counters()?;
        tr.optim.load_state(tr.ctx(), &floats)?;
        tr.optim
            .set_steps(counter(&l.file, crate::kernels::optim::STEP_NAME)? as u64)?;
        tr.steps_taken = w.state.step as u64;
        let state = l.file.require_f32("train.state")?;
        tr.set_carried_state(&state.data)?;
        // A kept scaler continues where it stood; one set anew starts fresh.
        if keep_scaler
            && tr.loss_scaler().is_some()
            && let Some(s) = l.file.f32(SCALER_NAME)?
        {
            tr.set_scaler_state(&scaler_from(&s.data, &l.file.path)?)?;
        }
    }
    Ok(tr)
}

/// Makes `tr` a rank of the data-parallel group of `r`, if it has several
/// ranks. Refuses what would make the ranks' models differ from one
/// process's: BatchNorm's batch statistics (per rank; no synchronized
/// BatchNorm yet), dropout and zoneout (masks drawn per local batch
/// position).
fn join(tr: &mut Trainer, r: Box<dyn Reducer>) -> Result<()> {
    let size = r.size();
    if size == 1 {
        return Ok(());
    }
    if tr.net.norm.has_batch_stats() {
        return Err(Error::Invalid(format!(
            "--norm: BatchNorm variants are not supported on {size} ranks yet \
             (their batch statistics would be each rank's); use LayerNorm or none"
        )));
    }
    if tr.net.dropout > 0.0 {
        return Err(Error::Invalid(format!(
            "--dropout {}: dropout is not supported on {size} ranks yet",
            tr.net.dropout
        )));
    }
    if let (h, c) = tr.net.zoneout
        && (h > 0.0 || c > 0.0)
    {
        return Err(Error::Invalid(format!(
            "--zoneout-h {h} --zoneout-c {c}: zoneout is not supported on {size} ranks yet \
             (its masks are drawn per position of the local batch)"
        )));
    }
    tr.set_reducer(Some(r));
    Ok(())
}
