//! `lstm-wgpu train`: settings, data, the training loop, validation,
//! early stopping, metrics, checkpoints and resume, over [`Trainer`].

pub(crate) mod checkpoint;
pub(crate) mod data;
mod parallel;
pub(crate) mod report;
pub(crate) mod settings;
mod validation;

use crate::cli::env::size_limits;
use crate::cli::train::checkpoint::{
    Loaded, RunState, SCALER_NAME, counter, health_from, init_file, load_checkpoint, restore_model,
    save_checkpoint, scaler_from, values_from,
};
use crate::cli::train::data::{
    Data, check_splits, describe_columns, dump_data, epoch_len, load_data, net_of, run_seq_len,
    test_set, train_batch,
};
use crate::cli::train::report::{RunEnd, final_line, say, write_plot};
use crate::cli::train::settings::{
    RunConfig, TrainArgs, best_path, check_batch_size, check_fixed, check_outputs,
    check_schedule_flags, describe_data, describe_links, hist_every, is_csv, optim_config, resolve,
    schedule_of, validate_config,
};
use crate::cli::train::validation::{ValReport, score, series_fields, validate};
use lstm_wgpu::data::WindowSet;
use lstm_wgpu::error::{Error, Result};
use lstm_wgpu::io;
use lstm_wgpu::model::NamedTensor;
use lstm_wgpu::train::health::{StepHealth, layer_norms};
use lstm_wgpu::train::histograms::{to_json, to_tensorboard};
use lstm_wgpu::train::lr::LrSchedule;
use lstm_wgpu::train::metrics::{MetricsBuffer, Value};
use lstm_wgpu::train::tensorboard::EventWriter;
use lstm_wgpu::train::{HistSettings, NetConfig, StepStats, Trainer, init_values};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The run's settings: `--config` merged under the flags, output paths
/// checked, and on `--resume` the stored settings with the flags that may
/// change them (the others refused by name).
pub(crate) fn settings(a: TrainArgs) -> Result<(TrainArgs, RunConfig, Option<Loaded>)> {
    let cli = a.clone();
    let mut a = a;
    if let Some(p) = &a.config {
        let text = std::fs::read_to_string(p).map_err(|e| Error::file(p, e))?;
        let file: TrainArgs =
            toml::from_str(&text).map_err(|e| Error::file(p, format!("bad TOML: {e}")))?;
        a.merge_from(&file);
    }
    check_outputs(&a)?;
    let resumed = a.resume.as_ref().map(|p| load_checkpoint(p)).transpose()?;
    let c = match &resumed {
        // On resume, a flag either applies (and the stored settings record
        // it) or is refused when it would change the model or its data.
        Some(l) => {
            let mut c = l.config.clone();
            check_fixed(&cli, &c, None)?;
            check_fixed(&a, &c, a.config.as_deref())?;
            if let Some(d) = &a.data {
                c.data = Some(d.clone());
            } else if let Some(d) = &c.data
                && let Err(e) = std::fs::metadata(d)
            {
                // Not the user's path: say where it came from.
                return Err(Error::file(
                    d,
                    format!(
                        "{} (the data path stored in checkpoint {}{}); give the data with --data",
                        io::io_msg(&e),
                        l.file.path.display(),
                        if d.is_relative() {
                            ", relative to the current directory"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            c.lr = a.lr.unwrap_or(c.lr);
            c.val_every = a.val_every.unwrap_or(c.val_every);
            c.patience = a.patience.or(c.patience);
            c.explode_threshold = a.explode_threshold.or(c.explode_threshold);
            c.hist_every = a.hist_every.or(c.hist_every);
            validate_config(&c)?;
            c
        }
        None => resolve(&a)?,
    };
    Ok((a, c, resumed))
}

/// Runs `train`.
pub fn train(a: TrainArgs, verbose: bool) -> Result<()> {
    let (a, c, resumed) = settings(a)?;
    // Under mpirun: this rank's part of a data-parallel run.
    let group = parallel::start(&c, a.mpi_timeout)?;
    let a = parallel::rank_args(a);
    let r = match Run::new(a, c, resumed, verbose) {
        Ok(Some(mut run)) => run
            .steps()
            .and_then(|()| parallel::report(&run.tr))
            .and_then(|()| run.finish())
            .and_then(|f| match parallel::is_root() {
                true => crate::cli::out::line(f.line),
                false => Ok(()),
            }),
        // --dump-data wrote the data instead.
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    group.finish(r)
}

/// The loss histories of a run, (step, loss) pairs, and the global
/// gradient norms, (step, norm).
#[derive(Default)]
pub(crate) struct Curves {
    pub(crate) train: Vec<(f64, f64)>,
    pub(crate) val: Vec<(f64, f64)>,
    pub(crate) grad: Vec<(f64, f64)>,
}

impl Curves {
    fn all(&self) -> [&[(f64, f64)]; 3] {
        [&self.train, &self.val, &self.grad]
    }
}

/// What a finished run reports: its final line and the figures a study
/// tabulates.
pub(crate) struct RunResult {
    pub(crate) line: String,
    pub(crate) params: usize,
    /// Epochs begun (the last may be partial).
    pub(crate) epochs: usize,
    pub(crate) explosions: u64,
    /// Infinite without validation.
    pub(crate) best_val: f64,
    pub(crate) best_test: Option<(f64, f64)>,
    /// The copy task's recall accuracy at the best validation.
    pub(crate) best_recall: Option<f64>,
    pub(crate) curves: Curves,
    pub(crate) end: RunEnd,
}

/// A run in progress: its settings, data and trainer, where it stands,
/// and what it has written and will report.
pub(crate) struct Run {
    a: TrainArgs,
    c: RunConfig,
    data: Data,
    /// The `--test-fraction` windows.
    test: Option<WindowSet>,
    tr: Trainer,
    st: RunState,
    curves: Curves,
    sched: LrSchedule,
    log: Option<MetricsBuffer>,
    /// TensorBoard events, flushed with the metrics.
    events: Option<EventWriter>,
    bar: indicatif::ProgressBar,
    verbose: bool,
    /// The parameters' names, in the order of `StepStats::tensor_norms`.
    names: Vec<String>,
    /// Steps per epoch: the health counts are reported per epoch.
    per_epoch: usize,
    /// The run's length, and where this invocation stops (--stop-after).
    total: usize,
    stop: usize,
    first_step: usize,
    start: std::time::Instant,
    tokens: usize,
    last_val: Option<ValReport>,
    stopped_early: bool,
}

impl Run {
    /// Loads the data and builds the trainer, with every check done before
    /// anything is written; `None` when `--dump-data` wrote the data.
    pub(crate) fn new(
        a: TrainArgs,
        mut c: RunConfig,
        resumed: Option<Loaded>,
        verbose: bool,
    ) -> Result<Option<Run>> {
        let Prepared {
            data,
            notes,
            test,
            net,
        } = prepare(&a, &c, resumed.as_ref())?;
        let per_epoch = epoch_len(&c, &data).max(1);
        let total = match (a.steps, a.epochs, &resumed) {
            (Some(s), _, _) => s,
            (None, Some(e), _) => e * per_epoch,
            (None, None, Some(_)) => c.steps,
            (None, None, None) => 200,
        };
        c.steps = total;
        if let Some(p) = &a.dump_data {
            notes.iter().for_each(|n| eprintln!("{n}"));
            dump_data(p, &c, &data, total)?;
            return Ok(None);
        }
        let stop = a.stop_after.map_or(total, |s| s.min(total));
        // Weights (and running statistics) from the checkpoint or --init file.
        let source = match (&resumed, &a.init) {
            (Some(l), _) => Some((l.file.params_and_counters()?, l.file.path.clone())),
            (None, Some(p)) => Some((init_file(&net, p)?, p.clone())),
            (None, None) => None,
        };
        let values = match &source {
            Some(((floats, _), p)) => values_from(&net, floats, p)?,
            None => init_values(&net, c.seed),
        };
        let (mut st, curves) = match &resumed {
            Some(l) => resumed_state(l, total)?,
            None => Default::default(),
        };
        // The default threshold: the clip norm, else the running median.
        st.health.fixed = c.explode_threshold.or(c.clip_norm.map(f64::from));
        let sched = schedule_of(&c, total);
        sched.validate()?;
        // The metrics file is read now, written at the first checkpoint.
        let log = match (&a.metrics, &resumed) {
            (Some(p), Some(_)) => Some(MetricsBuffer::resume(p, st.step)?),
            (Some(p), None) => Some(MetricsBuffer::new(p)),
            (None, _) => None,
        };
        // Events go to a new file; a resumed run's starts at its step.
        let events = a.tensorboard.as_deref().map(|d| match &resumed {
            Some(_) => EventWriter::resumed(d, st.step as u64),
            None => EventWriter::new(d),
        });
        let weights = Weights {
            values,
            source: source.as_ref(),
            resumed: resumed.as_ref(),
            step: st.step,
        };
        let tr = build_trainer(&a, &c, &net, &data, weights, verbose)?;
        let bar = progress_bar(!a.no_progress, st.step, stop)?;
        notes.iter().for_each(|n| eprintln!("{n}"));
        eprintln!(
            "train: task {}, data {}, {} params, {}({} -> {}, {} layers{}), batch {}, seq {}{}, {} steps ({} per epoch), {} lr {}",
            c.task,
            describe_data(&c),
            tr.lstm.model.table.total,
            match net.cell {
                lstm_wgpu::Cell::Lstm => "LSTM",
                lstm_wgpu::Cell::Gru => "GRU",
                lstm_wgpu::Cell::IndRnn { relu: true } => "IndRNN-relu",
                lstm_wgpu::Cell::IndRnn { relu: false } => "IndRNN-tanh",
                c @ lstm_wgpu::Cell::Custom(_) => c.module(),
            },
            net.lstm().input_size,
            c.hidden,
            c.layers,
            describe_links(&c),
            c.batch,
            c.seq_len,
            c.min_len
                .map(|m| format!(" (lengths {m}..={})", c.seq_len))
                .unwrap_or_default(),
            total,
            per_epoch,
            c.optimizer,
            c.lr
        );
        Ok(Some(Run {
            names: tr.tensor_names(),
            per_epoch,
            first_step: st.step,
            a,
            c,
            data,
            test,
            tr,
            st,
            curves,
            sched,
            log,
            events,
            bar,
            verbose,
            total,
            stop,
            start: std::time::Instant::now(),
            tokens: 0,
            last_val: None,
            stopped_early: false,
        }))
    }

    /// Trains up to `stop`, validating and writing checkpoints on the way.
    /// Steps are pipelined: the next is submitted before the previous one's
    /// loss is read (Trainer::submit), except across a validation or
    /// checkpoint step, which must see the parameters right after it.
    pub(crate) fn steps(&mut self) -> Result<()> {
        let mut submitted = self.st.step;
        let mut in_flight: std::collections::VecDeque<(usize, f64)> = Default::default();
        while self.st.step < self.stop {
            while submitted < self.stop
                && submitted - self.st.step < lstm_wgpu::kernels::optim::MAX_IN_FLIGHT
                && (submitted == self.st.step || !self.boundary(submitted))
            {
                let (t, batch, carry) = train_batch(&self.c, &self.data, submitted)?;
                let batch = parallel::shard(&self.tr, batch);
                let lr = self.sched.lr(self.c.lr, submitted + 1);
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
            self.record(&s, t, lr)?;
            // A stop between validations (--stop-after) writes the
            // checkpoint without validating, so that resuming runs as
            // uninterrupted.
            let val_due =
                self.st.step.is_multiple_of(self.c.val_every) || self.st.step == self.total;
            if (val_due || self.st.step == self.stop) && self.checkpoint(s.loss, val_due)? {
                self.stopped_early = true;
                break;
            }
        }
        Ok(())
    }

    /// Whether step `n` ends with a validation or a checkpoint.
    fn boundary(&self, n: usize) -> bool {
        n.is_multiple_of(self.c.val_every) || n == self.total || n == self.stop
    }

    /// Counts a finished step (`t` positions at rate `lr`) and logs it.
    fn record(&mut self, s: &StepStats, t: usize, lr: f64) -> Result<()> {
        let st = &mut self.st;
        st.step += 1;
        self.tokens += t * self.c.batch;
        if self.verbose
            && st.step == 1
            && let Some((d, sub)) = self.tr.dispatches_per_step(t)
        {
            say(
                &self.bar,
                format!("dispatches per step: {d} in {sub} submit (T = {t})"),
            );
        }
        if s.skipped {
            st.skipped += 1;
        }
        let layers = layer_norms(&self.names, &s.tensor_norms, self.c.layers);
        let h = st.health.observe(s.grad_norm, &layers, s.skipped);
        let rate = self.tokens as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        if let Some(l) = &mut self.log {
            let mut fields = vec![
                ("step", Value::Int(st.step as i64)),
                ("loss", Value::Float(s.loss as f64)),
                ("grad_norm", Value::Float(s.grad_norm as f64)),
                ("lr", Value::Float(lr)),
                ("skipped", Value::Bool(s.skipped)),
                ("skipped_total", Value::Int(st.skipped as i64)),
                ("loss_scale", Value::Float(s.loss_scale as f64)),
            ];
            fields.extend(health_fields(&self.names, s, &layers, &h));
            fields.push(("tokens_per_s", Value::Float(rate)));
            l.log(&fields)?;
        }
        if let Some(ev) = &mut self.events {
            let step = st.step as u64;
            for (tag, v) in [
                ("train/loss", s.loss as f64),
                ("train/lr", lr),
                ("train/grad_norm", s.grad_norm as f64),
                ("train/skipped_total", st.skipped as f64),
                ("train/loss_scale", s.loss_scale as f64),
                ("train/tokens_per_s", rate),
            ] {
                ev.scalar(step, tag, v);
            }
            for (n, &v) in self.names.iter().zip(&s.tensor_norms) {
                ev.scalar(step, &format!("grad_norm/{n}"), v as f64);
            }
            for (k, &v) in layers.iter().enumerate() {
                ev.scalar(step, &format!("grad_norm/layer_{k}"), v);
            }
        }
        // The last, partial, epoch ends with the run.
        if st.step.is_multiple_of(self.per_epoch) || st.step == self.total {
            self.end_epoch()?;
        }
        self.histograms(s)?;
        let st = &self.st;
        self.curves.train.push((st.step as f64, s.loss as f64));
        self.curves.grad.push((st.step as f64, s.grad_norm as f64));
        self.bar
            .set_message(format!("loss {:.4} lr {lr:.2e} {rate:.0} tok/s", s.loss));
        self.bar.inc(1);
        Ok(())
    }

    /// Writes a histogram step's histograms: one JSONL line
    /// `{"step", "histograms": {tag: {min, max, nan, inf, counts}}}` and
    /// TensorBoard histogram events.
    fn histograms(&mut self, s: &StepStats) -> Result<()> {
        if s.histograms.is_empty() {
            return Ok(());
        }
        let step = self.st.step;
        if let Some(l) = &mut self.log {
            let all = s.histograms.iter().map(|(t, h)| (t.clone(), to_json(h)));
            l.log(&[
                ("step", Value::Int(step as i64)),
                ("histograms", Value::Object(all.collect())),
            ])?;
        }
        if let Some(ev) = &mut self.events {
            for (tag, h) in &s.histograms {
                ev.histogram(step as u64, tag, &to_tensorboard(h))?;
            }
        }
        Ok(())
    }

    /// Reports the epoch's explosion and vanishing counts, and starts the
    /// next epoch's from zero.
    fn end_epoch(&mut self) -> Result<()> {
        let step = self.st.step;
        let e = self.st.health.end_epoch();
        let t = self.st.health.total;
        if let Some(l) = &mut self.log {
            l.log(&[
                ("step", Value::Int(step as i64)),
                ("epoch", Value::Int(step.div_ceil(self.per_epoch) as i64)),
                ("explosions", Value::Int(e.explosions as i64)),
                ("vanishing", Value::Int(e.vanishing as i64)),
                ("explosions_total", Value::Int(t.explosions as i64)),
                ("vanishing_total", Value::Int(t.vanishing as i64)),
            ])?;
        }
        if let Some(ev) = &mut self.events {
            ev.scalar(step as u64, "health/explosions", e.explosions as f64);
            ev.scalar(step as u64, "health/vanishing", e.vanishing as f64);
        }
        Ok(())
    }

    /// At a validation step (`val_due`) or the stop: validates, writes the
    /// checkpoints and flushes the metrics; whether to stop early.
    fn checkpoint(&mut self, loss: f32, val_due: bool) -> Result<bool> {
        let step = self.st.step;
        if !val_due || !self.validate(loss)? {
            say(&self.bar, format!("step {step:>6}  loss {loss:.4}"));
        }
        if let Some(p) = &self.a.checkpoint {
            let (tr, c, data) = (&self.tr, &self.c, &self.data);
            save_checkpoint(p, tr, c, data, &self.st, self.curves.all())?;
        }
        // The metrics file holds what the checkpoint does.
        self.flush_logs()?;
        if let Some(pat) = self.c.patience
            && val_due
            && self.st.bad_vals >= pat
        {
            say(
                &self.bar,
                format!("early stop: no improvement in {pat} validations"),
            );
            return Ok(true);
        }
        Ok(false)
    }

    /// Validates after a step of training loss `loss`: logs and reports
    /// it, and writes the best checkpoint on an improvement. False when
    /// there is no validation split.
    fn validate(&mut self, loss: f32) -> Result<bool> {
        let Some(rep) = validate(&mut self.tr, &self.c, &self.data)? else {
            return Ok(false);
        };
        let (step, v) = (self.st.step, rep.loss);
        self.curves.val.push((step as f64, v));
        let mut fields = vec![
            ("step", Value::Int(step as i64)),
            ("val_loss", Value::Float(v)),
        ];
        let mut line = format!("step {step:>6}  loss {loss:.4}  val_loss {v:.4}");
        if let Some(m) = &rep.series {
            fields.extend(series_fields(m));
            line += &format!(
                " (naive {:.4})  val_mae {:.4} (naive {:.4})",
                m.naive.mse, m.model.mae, m.naive.mae
            );
        }
        if let Some(a) = rep.recall {
            fields.push(("val_recall_acc", Value::Float(a)));
            line += &format!("  recall_acc {a:.4}");
        }
        if let Some(l) = &mut self.log {
            l.log(&fields)?;
        }
        if let Some(ev) = &mut self.events {
            ev.scalar(step as u64, "val/loss", v);
            if let Some(a) = rep.recall {
                ev.scalar(step as u64, "val/recall_accuracy", a);
            }
            if let Some(m) = &rep.series {
                for (tag, x) in [
                    ("val/naive_loss", m.naive.mse),
                    ("val/mae", m.model.mae),
                    ("val/rmse", m.model.rmse),
                    ("val/naive_mae", m.naive.mae),
                    ("val/naive_rmse", m.naive.rmse),
                ] {
                    ev.scalar(step as u64, tag, x);
                }
            }
        }
        say(&self.bar, line);
        let recall = rep.recall;
        self.last_val = Some(rep);
        if v < self.st.best_val {
            self.st.best_val = v;
            self.st.best_recall = recall;
            self.st.bad_vals = 0;
            // The best weights' test figures, kept with the checkpoint.
            if let Some(t) = &self.test {
                let m = score(&mut self.tr, t, &self.data)?;
                self.st.best_test = Some((m.model.mae, m.model.rmse));
            }
            if let Some(p) = &self.a.checkpoint {
                let (tr, c, data) = (&self.tr, &self.c, &self.data);
                save_checkpoint(&best_path(p), tr, c, data, &self.st, self.curves.all())?;
            }
        } else {
            self.st.bad_vals += 1;
        }
        Ok(true)
    }

    /// Writes the buffered metrics and TensorBoard events.
    fn flush_logs(&mut self) -> Result<()> {
        if let Some(l) = &mut self.log {
            l.flush()?;
        }
        if let Some(ev) = &mut self.events {
            ev.flush()?;
        }
        Ok(())
    }

    /// Writes what is left (the checkpoint of a run of no steps, the
    /// metrics, the plot) and scores the test split; the results, with
    /// the final line.
    pub(crate) fn finish(mut self) -> Result<RunResult> {
        self.bar.finish_and_clear();
        // A run of no steps (--steps 0, --epochs 0) still writes its
        // checkpoint: the initial model (or the resumed one, as it stands).
        if self.st.step == self.first_step
            && let Some(p) = &self.a.checkpoint
        {
            let (tr, c, data) = (&self.tr, &self.c, &self.data);
            save_checkpoint(p, tr, c, data, &self.st, self.curves.all())?;
        }
        // An early stop ends the epoch in progress too.
        if self.stopped_early && !self.st.step.is_multiple_of(self.per_epoch) {
            self.end_epoch()?;
        }
        let test = match &self.test {
            Some(t) => Some(score(&mut self.tr, t, &self.data)?),
            None => None,
        };
        if let (Some(m), Some(l)) = (&test, &mut self.log) {
            l.log(&test_fields(self.st.step, m, self.st.best_test))?;
        }
        self.flush_logs()?;
        let secs = self.start.elapsed().as_secs_f64();
        let series = self.last_val.as_ref().and_then(|r| r.series);
        let recall = self.last_val.as_ref().and_then(|r| r.recall);
        if let Some(p) = &self.a.plot {
            let log = self.a.plot_log;
            write_plot(
                p,
                &self.c,
                &self.data,
                series.as_ref(),
                self.curves.all(),
                log,
            )?;
        }
        let end = RunEnd {
            secs,
            speed: self.tokens as f64 / secs.max(1e-9),
            series,
            scale: self.tr.scaler_state()?.map(|s| s.scale),
            stopped_early: self.stopped_early,
            test,
            recall,
        };
        Ok(RunResult {
            line: final_line(&self.st, self.curves.all(), &end),
            params: self.tr.lstm.model.table.total,
            epochs: self.st.step.div_ceil(self.per_epoch),
            explosions: self.st.health.total.explosions,
            best_val: self.st.best_val,
            best_test: self.st.best_test,
            best_recall: self.st.best_recall,
            curves: self.curves,
            end,
        })
    }
}

/// A run's data and model, checked without a GPU.
pub(crate) struct Prepared {
    data: Data,
    /// Said once every check has passed, so a refusal stays one line.
    notes: Vec<String>,
    test: Option<WindowSet>,
    net: NetConfig,
}

/// Loads the data of run `a`, `c` (resumed from `resumed`) and checks
/// everything that needs no GPU: the splits, the model's size.
pub(crate) fn prepare(a: &TrainArgs, c: &RunConfig, resumed: Option<&Loaded>) -> Result<Prepared> {
    check_schedule_flags(a, c.schedule)?;
    check_batch_size(c)?;
    let data = load_data(
        c,
        resumed.and_then(|l| l.vocab.clone()),
        resumed.and_then(|l| l.norm.clone()),
    )?;
    let notes = notes(a, c, &data, resumed.is_some());
    check_splits(c, &data)?;
    let test = test_set(c, &data)?;
    let net = net_of(c, &data)?;
    net.check_size(run_seq_len(c, &data), c.batch, &size_limits(None))?;
    Ok(Prepared {
        data,
        notes,
        test,
        net,
    })
}

/// The gradient health fields of a step's metrics line: what `h` found,
/// the layer norms `layers` and the tensor norms of `s` by `names`.
fn health_fields(
    names: &[String],
    s: &StepStats,
    layers: &[f64],
    h: &StepHealth,
) -> [(&'static str, Value); 5] {
    let ints = h.vanishing.iter().map(|&k| Value::Int(k as i64));
    let tensors = names.iter().zip(&s.tensor_norms);
    [
        ("explosion", Value::Bool(h.explosion)),
        // null before there is a median.
        (
            "explode_threshold",
            Value::Float(h.threshold.unwrap_or(f64::NAN)),
        ),
        ("vanishing_layers", Value::List(ints.collect())),
        (
            "layer_grad_norms",
            Value::List(layers.iter().map(|&v| Value::Float(v)).collect()),
        ),
        (
            "grad_norms",
            Value::Object(
                tensors
                    .map(|(n, &v)| (n.clone(), Value::Float(v as f64)))
                    .collect(),
            ),
        ),
    ]
}

/// The metrics-file line of the test split's scores: the final weights'
/// `m` and the best validation's MAE and RMSE `best`.
fn test_fields(
    step: usize,
    m: &lstm_wgpu::train::forecast::SeriesMetrics,
    best: Option<(f64, f64)>,
) -> Vec<(&'static str, Value)> {
    let (bm, br) = best.unwrap_or((f64::NAN, f64::NAN));
    vec![
        ("step", Value::Int(step as i64)),
        ("test_loss", Value::Float(m.model.mse)),
        ("test_mae", Value::Float(m.model.mae)),
        ("test_rmse", Value::Float(m.model.rmse)),
        ("best_test_mae", Value::Float(bm)),
        ("best_test_rmse", Value::Float(br)),
        ("naive_test_loss", Value::Float(m.naive.mse)),
        ("naive_test_mae", Value::Float(m.naive.mae)),
        ("naive_test_rmse", Value::Float(m.naive.rmse)),
        ("test_windows", Value::Int(m.windows as i64)),
    ]
}

/// What a run says about its inputs before training: the task inferred
/// from `--data`, and a series' columns.
fn notes(a: &TrainArgs, c: &RunConfig, data: &Data, resumed: bool) -> Vec<String> {
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
            if is_csv(p) {
                "a .csv file"
            } else {
                "not a .csv file, read as text"
            }
        ));
    }
    if let Data::Series(_, sel) = data {
        notes.push(describe_columns(c, sel));
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

/// The progress bar of steps `from..stop` (hidden when `show` is false).
fn progress_bar(show: bool, from: usize, stop: usize) -> Result<indicatif::ProgressBar> {
    if !show || stop <= from {
        return Ok(indicatif::ProgressBar::hidden());
    }
    let b = indicatif::ProgressBar::new((stop - from) as u64);
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {per_sec} {msg}",
        )
        .map_err(|e| Error::Invalid(e.to_string()))?,
    );
    Ok(b)
}

/// Where a run's weights come from: fresh `values`, or those of `source`
/// (a checkpoint or an `--init` file) with, on resume, the optimizer,
/// carried state and loss scaler of `resumed` at step `step`.
pub(crate) struct Weights<'a> {
    pub(crate) values: Vec<f32>,
    pub(crate) source: Option<&'a Source>,
    pub(crate) resumed: Option<&'a Loaded>,
    pub(crate) step: usize,
}

/// A checkpoint's or `--init` file's tensors and counters, and its path.
pub(crate) type Source = ((Vec<NamedTensor>, BTreeMap<String, i64>), PathBuf);

/// Opens the GPU and builds the trainer: precision, loss scaler, and the
/// weights and optimizer state of `w`.
pub(crate) fn build_trainer(
    a: &TrainArgs,
    c: &RunConfig,
    net: &NetConfig,
    data: &Data,
    w: Weights<'_>,
    verbose: bool,
) -> Result<Trainer> {
    let ctx = parallel::open_gpu(verbose)?;
    net.check_size(run_seq_len(c, data), c.batch, &size_limits(Some(&ctx)))?;
    let oc = optim_config(c)?;
    // The precision a resumed run trained in.
    let saved = w.resumed.map(|l| l.precision);
    let choice = match (saved, a.precision) {
        (_, Some(c)) => c,
        (Some(lstm_wgpu::model::precision::Precision::F32), None) => {
            lstm_wgpu::model::precision::PrecisionChoice::F32
        }
        (Some(lstm_wgpu::model::precision::Precision::F16Mixed), None) => {
            lstm_wgpu::model::precision::PrecisionChoice::F16Mixed
        }
        (None, None) => Default::default(),
    };
    use lstm_wgpu::model::precision::PrecisionChoice;
    // Weight-drop reads an f32 copy of W_hh: f32 only.
    let choice = match (net.weight_drop > 0.0, choice) {
        (true, PrecisionChoice::F16Mixed) => {
            return Err(Error::Invalid(
                "--weight-drop runs in f32 (give --precision f32 or auto)".into(),
            ));
        }
        (true, PrecisionChoice::Auto) => {
            eprintln!("warning: precision auto: --weight-drop runs in f32; using f32");
            PrecisionChoice::F32
        }
        (_, c) => c,
    };
    let (precision, warning) =
        lstm_wgpu::model::precision::resolve_for(choice, &ctx, &net.norm, &net.lstm())?;
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    let batch = parallel::local_batch(c.batch);
    let mut tr = Trainer::new(ctx, net.clone(), w.values, batch, c.clip_norm, &oc)?;
    parallel::attach(&mut tr)?;
    tr.set_precision(precision)?;
    // Resumed in its checkpoint's precision without --loss-scale, a run
    // keeps its scaler: on exactly when the checkpoint holds its state.
    let keep_scaler = a.loss_scale == Default::default() && saved == Some(precision);
    let scaler = match w.resumed {
        Some(l) if keep_scaler => l
            .file
            .f32(SCALER_NAME)?
            .map(|_| lstm_wgpu::model::precision::ScalerConfig::default()),
        _ => a.loss_scale.config(precision),
    };
    tr.set_loss_scaler(scaler)?;
    let every = hist_every(a, c);
    tr.set_histograms((every > 0).then_some(HistSettings {
        every,
        bins: lstm_wgpu::kernels::histogram::DEFAULT_BINS,
    }))?;
    tr.dropout_seed = c.seed;
    if let Some(((floats, ints), p)) = w.source {
        restore_model(&mut tr, floats, ints, p)?;
    }
    if let Some(l) = w.resumed {
        let (floats, _) = l.file.params_and_counters()?;
        tr.optim.load_state(tr.ctx(), &floats)?;
        tr.optim
            .set_steps(counter(&l.file, lstm_wgpu::kernels::optim::STEP_NAME)? as u64)?;
        tr.steps_taken = w.step as u64;
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
