//! `lstm-wgpu train`: the flags and `--config`, then the library's run
//! ([`lstm_wgpu::run`]: data, the training loop, validation, early
//! stopping, checkpoints and resume) with the command line's outputs
//! around it: the progress bar and its lines, the metrics file,
//! TensorBoard events, the plot and the final line.

pub(crate) mod parallel;
pub(crate) mod report;
pub(crate) mod settings;

use crate::cli::train::report::{RunEnd, final_line, say, write_plot};
use crate::cli::train::settings::{TrainArgs, check_outputs};
use lstm_wgpu::error::{Error, Result};
use lstm_wgpu::run::checkpoint::{Loaded, load_checkpoint, resumed_config};
use lstm_wgpu::run::settings::{check_fixed, describe_data, describe_links, resolve};
use lstm_wgpu::run::{Curves, Data, EpochEnd, Prepared, RunConfig, Setup, StepMetrics, Trained};
use lstm_wgpu::train::histograms::{to_json, to_tensorboard};
use lstm_wgpu::train::metrics::{MetricsBuffer, Value};
use lstm_wgpu::train::reduce::Reducer;
use lstm_wgpu::train::tensorboard::EventWriter;

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
            check_fixed(&cli.run_config(), &l.config, None)?;
            resumed_config(&a.run_config(), l, a.config.as_deref(), None)?
        }
        None => resolve(&a.run_config())?,
    };
    Ok((a, c, resumed))
}

/// Runs `train`.
pub fn train(a: TrainArgs, verbose: bool) -> Result<()> {
    let (a, c, resumed) = settings(a)?;
    if let Some(mb) = a.bucket_mb {
        lstm_wgpu::train::reduce::bucket_bytes(mb)?;
        if a.devices.is_none() && parallel::launched_ranks() <= 1 {
            return Err(Error::Invalid(format!(
                "--bucket-mb {mb}: buckets are for data-parallel runs (mpirun, --devices)"
            )));
        }
    }
    // --dump-data writes the data alone: no ranks to run.
    if let Some(spec) = a.devices.clone().filter(|_| a.dump_data.is_none()) {
        return on_devices(&spec, a, c, resumed, verbose);
    }
    // Under mpirun: this rank's part of a data-parallel run.
    let group = parallel::start(&c, a.mpi_timeout)?;
    let r = train_rank(a, c, resumed, verbose, parallel::Rank::process());
    group.finish(r)
}

/// `train --devices SPEC`: one rank per adapter of `spec`, each a thread
/// running [`train_rank`] with the others' reducers
/// ([`lstm_wgpu::train::reduce::ThreadGroup`]). Every refusal comes
/// before any rank starts; a rank that fails ends the others' sums.
fn on_devices(
    spec: &str,
    a: TrainArgs,
    c: RunConfig,
    resumed: Option<Loaded>,
    verbose: bool,
) -> Result<()> {
    if let Some(d) = crate::cli::env::device_flag() {
        return Err(Error::Invalid(format!(
            "--devices {spec} with --device {d}: give one (--devices lists every rank's adapter)"
        )));
    }
    let ranks = parallel::launched_ranks();
    if ranks > 1 {
        return Err(Error::Invalid(format!(
            "--devices {spec} under mpirun ({ranks} ranks): give one kind of data \
             parallelism (each MPI rank takes one adapter, see --device)"
        )));
    }
    // A rank silent for --mpi-timeout fails its peers' sums, and a wait
    // for a hung GPU fails in its own thread, so the command ends.
    let timeout = parallel::timeout(a.mpi_timeout);
    let gpus: Vec<_> = (crate::cli::env::devices(spec)?.into_iter())
        .map(|g| lstm_wgpu::gpu::GpuOptions {
            wait_timeout: timeout,
            ..g
        })
        .collect();
    let n = gpus.len();
    parallel::check_batch(c.batch, n, &format!("devices of --devices {spec}"))?;
    // Each rank reads the checkpoint it resumes (a `Loaded` is its own).
    let resume = resumed.map(|l| l.file.path.clone());
    let group = lstm_wgpu::train::reduce::ThreadGroup::new(n).with_timeout(timeout);
    group
        .run(|r| {
            let gpu = gpus[r.rank()].clone();
            let resumed = resume.as_deref().map(load_checkpoint).transpose()?;
            let rank = parallel::Rank::device(r, gpu);
            train_rank(a.clone(), c.clone(), resumed, verbose, rank)
        })
        .map(|_| ())
}

/// One rank's run (the single process's, an MPI rank's or a `--devices`
/// thread's): only rank 0 writes the outputs and the final line.
fn train_rank(
    a: TrainArgs,
    c: RunConfig,
    resumed: Option<Loaded>,
    verbose: bool,
    mut rank: parallel::Rank,
) -> Result<()> {
    let a = rank.args(a);
    // None: --dump-data wrote the data instead.
    let Some(run) = Run::on(a, c, resumed, verbose, &mut rank)? else {
        return Ok(());
    };
    let (r, trained) = run.train()?;
    rank.report(&trained);
    match rank.is_root() {
        true => crate::cli::out::line(r.line),
        false => Ok(()),
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

/// A run of the library with the command line's outputs: the settings,
/// the run, and what it writes and shows.
pub(crate) struct Run {
    a: TrainArgs,
    run: lstm_wgpu::run::Run,
    out: Outputs,
}

/// Where a run's steps go besides the checkpoints: the metrics file,
/// TensorBoard, the progress bar and its lines.
struct Outputs {
    log: Option<MetricsBuffer>,
    /// TensorBoard events, flushed with the metrics.
    events: Option<EventWriter>,
    bar: indicatif::ProgressBar,
    verbose: bool,
    /// The parameters' names, in the order of `StepMetrics::grad_norms`.
    names: Vec<String>,
    patience: Option<usize>,
}

impl Run {
    /// Loads the data and builds the trainer, with every check done before
    /// anything is written; `None` when `--dump-data` wrote the data.
    pub(crate) fn new(
        a: TrainArgs,
        c: RunConfig,
        resumed: Option<Loaded>,
        verbose: bool,
    ) -> Result<Option<Run>> {
        Self::on(a, c, resumed, verbose, &mut parallel::Rank::process())
    }

    /// [`Run::new`] as rank `rank` of a data-parallel group.
    fn on(
        a: TrainArgs,
        c: RunConfig,
        resumed: Option<Loaded>,
        verbose: bool,
        rank: &mut parallel::Rank,
    ) -> Result<Option<Run>> {
        let resuming = resumed.is_some();
        let mut p = prepare(&a, c, resumed)?;
        if let Some(path) = &a.dump_data {
            p.notes().iter().for_each(|n| eprintln!("{n}"));
            eprintln!("{}", p.dump_data(path)?);
            return Ok(None);
        }
        // Weights (and running statistics) from the checkpoint or --init file.
        let step = p.restore()?;
        // The metrics file is read now, written at the first checkpoint.
        let log = match (&a.metrics, resuming) {
            (Some(p), true) => Some(MetricsBuffer::resume(p, step)?),
            (Some(p), false) => Some(MetricsBuffer::new(p)),
            (None, _) => None,
        };
        // Events go to a new file; a resumed run's starts at its step.
        let events = a.tensorboard.as_deref().map(|d| match resuming {
            true => EventWriter::resumed(d, step as u64),
            false => EventWriter::new(d),
        });
        let setup = Setup {
            reducer: rank.take_reducer(),
            histograms: a.metrics.is_some() || a.tensorboard.is_some(),
        };
        let ctx = rank.open_gpu(verbose)?;
        let batch = p.settings().batch;
        let run = p.start(ctx.clone(), setup)?;
        rank.joined(&ctx, batch);
        let bar = progress_bar(!a.no_progress, step, run.stop_step())?;
        run.warnings().iter().for_each(|w| eprintln!("{w}"));
        run.notes().iter().for_each(|n| eprintln!("{n}"));
        let (c, net) = (run.settings(), run.net());
        eprintln!(
            "train: task {}, data {}, {} params, {}({} -> {}, {} layers{}), batch {}, seq {}{}, {} steps ({} per epoch), {} lr {}",
            c.task,
            describe_data(c),
            run.params(),
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
            describe_links(c),
            c.batch,
            c.seq_len,
            c.min_len
                .map(|m| format!(" (lengths {m}..={})", c.seq_len))
                .unwrap_or_default(),
            run.total_steps(),
            run.steps_per_epoch(),
            c.optimizer,
            c.lr
        );
        let out = Outputs {
            log,
            events,
            bar,
            verbose,
            names: run.tensor_names().to_vec(),
            patience: c.patience,
        };
        Ok(Some(Run { a, run, out }))
    }

    /// Trains to the stop, showing and logging every step; the results,
    /// with the final line, and the trained model.
    pub(crate) fn train(self) -> Result<(RunResult, Trained)> {
        let Run { a, run, mut out } = self;
        let c = run.settings().clone();
        let target = run.target_name().map(str::to_string);
        let trained = run.train(|m| out.step(m))?;
        let r = out.finish(&a, &c, target.as_deref(), &trained)?;
        Ok((r, trained))
    }
}

impl Outputs {
    /// Shows and logs a finished step: its metrics line and TensorBoard
    /// scalars, the end of an epoch, histograms, and at a checkpoint its
    /// validation (or its loss) and the flush of what was logged.
    fn step(&mut self, m: &StepMetrics) -> Result<()> {
        if self.verbose
            && let Some((d, sub)) = m.dispatches
        {
            say(
                &self.bar,
                format!(
                    "dispatches per step: {d} in {sub} submit (T = {})",
                    m.seq_len
                ),
            );
        }
        let layers = &m.layer_grad_norms;
        if let Some(l) = &mut self.log {
            let mut fields = vec![
                ("step", Value::Int(m.step as i64)),
                ("loss", Value::Float(m.loss as f64)),
                ("grad_norm", Value::Float(m.grad_norm as f64)),
                ("lr", Value::Float(m.lr)),
                ("skipped", Value::Bool(m.skipped)),
                ("skipped_total", Value::Int(m.skipped_total as i64)),
                ("loss_scale", Value::Float(m.loss_scale as f64)),
            ];
            fields.extend(health_fields(&self.names, m));
            fields.push(("tokens_per_s", Value::Float(m.tokens_per_s)));
            l.log(&fields)?;
        }
        if let Some(ev) = &mut self.events {
            let step = m.step as u64;
            for (tag, v) in [
                ("train/loss", m.loss as f64),
                ("train/lr", m.lr),
                ("train/grad_norm", m.grad_norm as f64),
                ("train/skipped_total", m.skipped_total as f64),
                ("train/loss_scale", m.loss_scale as f64),
                ("train/tokens_per_s", m.tokens_per_s),
            ] {
                ev.scalar(step, tag, v);
            }
            for (n, &v) in self.names.iter().zip(&m.grad_norms) {
                ev.scalar(step, &format!("grad_norm/{n}"), v as f64);
            }
            for (k, &v) in layers.iter().enumerate() {
                ev.scalar(step, &format!("grad_norm/layer_{k}"), v);
            }
        }
        if let Some(e) = &m.epoch_end {
            self.end_epoch(m.step, e)?;
        }
        self.histograms(m)?;
        self.bar.set_message(format!(
            "loss {:.4} lr {:.2e} {:.0} tok/s",
            m.loss, m.lr, m.tokens_per_s
        ));
        self.bar.inc(1);
        if m.checkpoint {
            match &m.validation {
                Some(v) => self.validated(m, v)?,
                None => say(&self.bar, format!("step {:>6}  loss {:.4}", m.step, m.loss)),
            }
            // The metrics file holds what the checkpoint does.
            self.flush_logs()?;
            if m.early_stop
                && let Some(pat) = self.patience
            {
                say(
                    &self.bar,
                    format!("early stop: no improvement in {pat} validations"),
                );
            }
        }
        Ok(())
    }

    /// Writes a histogram step's histograms: one JSONL line
    /// `{"step", "histograms": {tag: {min, max, nan, inf, counts}}}` and
    /// TensorBoard histogram events.
    fn histograms(&mut self, m: &StepMetrics) -> Result<()> {
        if m.histograms.is_empty() {
            return Ok(());
        }
        let step = m.step;
        if let Some(l) = &mut self.log {
            let all = m.histograms.iter().map(|(t, h)| (t.clone(), to_json(h)));
            l.log(&[
                ("step", Value::Int(step as i64)),
                ("histograms", Value::Object(all.collect())),
            ])?;
        }
        if let Some(ev) = &mut self.events {
            for (tag, h) in &m.histograms {
                ev.histogram(step as u64, tag, &to_tensorboard(h))?;
            }
        }
        Ok(())
    }

    /// Logs the explosion and vanishing counts of the epoch that ended at
    /// `step`.
    fn end_epoch(&mut self, step: usize, e: &EpochEnd) -> Result<()> {
        let (c, t) = (e.counts, e.total);
        if let Some(l) = &mut self.log {
            l.log(&[
                ("step", Value::Int(step as i64)),
                ("epoch", Value::Int(e.epoch as i64)),
                ("explosions", Value::Int(c.explosions as i64)),
                ("vanishing", Value::Int(c.vanishing as i64)),
                ("explosions_total", Value::Int(t.explosions as i64)),
                ("vanishing_total", Value::Int(t.vanishing as i64)),
            ])?;
        }
        if let Some(ev) = &mut self.events {
            ev.scalar(step as u64, "health/explosions", c.explosions as f64);
            ev.scalar(step as u64, "health/vanishing", c.vanishing as f64);
        }
        Ok(())
    }

    /// Logs and shows the validation `v` after step `m`.
    fn validated(&mut self, m: &StepMetrics, v: &lstm_wgpu::run::ValReport) -> Result<()> {
        let step = m.step;
        let mut fields = vec![
            ("step", Value::Int(step as i64)),
            ("val_loss", Value::Float(v.loss)),
        ];
        let mut line = format!("step {step:>6}  loss {:.4}  val_loss {:.4}", m.loss, v.loss);
        if let Some(s) = &v.series {
            fields.extend(report::series_fields(s));
            line += &format!(
                " (naive {:.4})  val_mae {:.4} (naive {:.4})",
                s.naive.mse, s.model.mae, s.naive.mae
            );
        }
        if let Some(a) = v.recall {
            fields.push(("val_recall_acc", Value::Float(a)));
            line += &format!("  recall_acc {a:.4}");
        }
        if let Some(l) = &mut self.log {
            l.log(&fields)?;
        }
        if let Some(ev) = &mut self.events {
            ev.scalar(step as u64, "val/loss", v.loss);
            if let Some(a) = v.recall {
                ev.scalar(step as u64, "val/recall_accuracy", a);
            }
            if let Some(s) = &v.series {
                for (tag, x) in [
                    ("val/naive_loss", s.naive.mse),
                    ("val/mae", s.model.mae),
                    ("val/rmse", s.model.rmse),
                    ("val/naive_mae", s.naive.mae),
                    ("val/naive_rmse", s.naive.rmse),
                ] {
                    ev.scalar(step as u64, tag, x);
                }
            }
        }
        say(&self.bar, line);
        Ok(())
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

    /// Writes what is left (the early stop's epoch, the test split's
    /// scores, the plot) after run `c` of `a` (series target `target`)
    /// ended as `trained`; the results, with the final line.
    fn finish(
        mut self,
        a: &TrainArgs,
        c: &RunConfig,
        target: Option<&str>,
        trained: &Trained,
    ) -> Result<RunResult> {
        self.bar.finish_and_clear();
        let s = &trained.summary;
        let st = &s.state;
        if let Some(e) = &s.last_epoch {
            self.end_epoch(st.step, e)?;
        }
        if let (Some(m), Some(l)) = (&s.test, &mut self.log) {
            l.log(&test_fields(st.step, m, st.best_test))?;
        }
        self.flush_logs()?;
        let series = s.last_validation.and_then(|r| r.series);
        let recall = s.last_validation.and_then(|r| r.recall);
        if let Some(p) = &a.plot {
            let curves = s.curves.all();
            write_plot(p, c, target, series.as_ref(), curves, a.plot_log)?;
        }
        let end = RunEnd {
            secs: s.secs,
            speed: s.tokens_per_s,
            series,
            scale: s.loss_scale,
            stopped_early: s.stopped_early,
            test: s.test,
            recall,
        };
        Ok(RunResult {
            line: final_line(st, s.curves.all(), &end),
            params: s.params,
            epochs: s.epochs,
            explosions: st.health.total.explosions,
            best_val: st.best_val,
            best_test: st.best_test,
            best_recall: st.best_recall,
            curves: s.curves.clone(),
            end,
        })
    }
}

/// Loads the data of run `a`, `c` (resumed from `resumed`) and checks
/// everything that needs no GPU: the splits, the model's size.
pub(crate) fn prepare(a: &TrainArgs, c: RunConfig, resumed: Option<Loaded>) -> Result<Prepared> {
    Prepared::with_settings(a.run_config(), c, resumed, Data::Settings)
}

/// The gradient health fields of a step's metrics line: what the step's
/// health check found, its layer norms and its tensor norms by `names`.
fn health_fields(names: &[String], m: &StepMetrics) -> [(&'static str, Value); 5] {
    let h = &m.health;
    let ints = h.vanishing.iter().map(|&k| Value::Int(k as i64));
    let tensors = names.iter().zip(&m.grad_norms);
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
            Value::List(
                m.layer_grad_norms
                    .iter()
                    .map(|&v| Value::Float(v))
                    .collect(),
            ),
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
