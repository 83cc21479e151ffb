//! `lstm-wgpu bench`: standard training workloads timed step by step (issue
//! #5). Each step is one [`Trainer::step`]: forward over the whole sequence,
//! loss, backward, clip by global norm and AdamW, in one submit, with the
//! loss and the gradient norm read back, so the GPU work is complete when the
//! step returns. Data are synthetic from a fixed seed.
//!
//! FLOPs are counted analytically, every GEMM as 2·m·n·k (see
//! [`flops_per_step`] and "FLOPs per step" in docs/commands.md); elementwise work
//! (cell pointwise math, loss, norms, clipping, the optimizer) is left out.

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::kernels::optim::OptimConfig;
use crate::norm::Norm;
use crate::reference::Rng;
use crate::train::{Carry, Head, NetConfig, StepData, Trainer, init_values};
use std::sync::Arc;
use std::time::Instant;

/// Arguments of `bench`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Workloads (each step: forward + loss + backward + clip + AdamW):
  ts    input 10, hidden 64, 2 layers, seq 20, batch 32, head on the last step, MSE, clip 1
  char  vocab 65, embed 128, hidden 256, 2 layers, seq 64, batch 32, head every step, CE, clip 5
  big   input 512, hidden 512, 2 layers, seq 128, batch 64, 512->512 head every step, MSE, clip 1
  deep  char with 4 layers, residual connections and LayerNorm between layers, clip 5
On a CPU driver such as lavapipe steps are slow (on a 2-core machine ts about half a second,
char 20 s or more): pass small --steps/--warmup there; `all` takes a long time."
)]
pub struct BenchArgs {
    /// Workload to run: ts, char, big, deep or all.
    #[arg(long, default_value = "all", value_name = "NAME")]
    pub workload: String,
    /// One JSON object per workload on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Timed steps per workload (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Untimed steps first (pipeline and plan creation, driver warm-up).
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Also time each kernel with GPU timestamps (needs timestamp queries
    /// inside passes) and print a per-kernel table on stderr. The
    /// timestamps and their readback slow the step a little.
    #[arg(long)]
    pub profile: bool,
    /// Wait for each step before submitting the next (no pipelining): the
    /// step's latency rather than the throughput of back-to-back steps.
    #[arg(long)]
    pub sync: bool,
    /// Precision of the training steps: f32, f16-mixed or auto (see
    /// `train --precision`).
    #[arg(long, value_name = "P", default_value = "f32", value_parser = crate::precision::PrecisionChoice::parse)]
    pub precision: crate::precision::PrecisionChoice,
}

/// A standard workload.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Its name on the command line.
    pub name: &'static str,
    /// The model.
    pub net: NetConfig,
    /// Sequence length T.
    pub seq: usize,
    /// Batch size B.
    pub batch: usize,
    /// Clip-by-global-norm threshold: 1.0 for the regression workloads, 5.0
    /// for the language models (the usual char-RNN value).
    pub clip: f32,
}

/// The workloads in the order `all` runs them.
pub const WORKLOADS: [&str; 4] = ["ts", "char", "big", "deep"];

/// The char model with `layers` layers.
fn char_net(layers: usize) -> NetConfig {
    NetConfig::new(
        Head::Language {
            vocab: 65,
            embed: 128,
        },
        256,
        layers,
    )
}

impl Workload {
    /// The workload called `name`.
    pub fn by_name(name: &str) -> Result<Self> {
        let w = |name, net, seq, batch, clip| Workload {
            name,
            net,
            seq,
            batch,
            clip,
        };
        Ok(match name {
            "ts" => w(
                "ts",
                NetConfig::new(
                    Head::Regression {
                        features: 10,
                        outputs: 1,
                    },
                    64,
                    2,
                ),
                20,
                32,
                1.0,
            ),
            "char" => w("char", char_net(2), 64, 32, 5.0),
            "big" => w(
                "big",
                NetConfig::new(
                    Head::Sequence {
                        features: 512,
                        outputs: 512,
                    },
                    512,
                    2,
                ),
                128,
                64,
                1.0,
            ),
            "deep" => {
                let mut net = char_net(4);
                // Between layers only: the top layer's output goes to the
                // head as it is (plus its residual input).
                net.norm = Norm::Layer { last: false };
                net.residual = true;
                w("deep", net, 64, 32, 5.0)
            }
            other => {
                return Err(Error::Invalid(format!(
                    "unknown workload {other:?}; known: {}, all",
                    WORKLOADS.join(", ")
                )));
            }
        })
    }

    /// `name`, or every workload for `all`.
    pub fn selection(name: &str) -> Result<Vec<Self>> {
        if name == "all" {
            WORKLOADS.iter().map(|n| Self::by_name(n)).collect()
        } else {
            Ok(vec![Self::by_name(name)?])
        }
    }

    /// FLOPs of one training step ([`flops_per_step`]).
    pub fn flops(&self) -> f64 {
        flops_per_step(&self.net, self.seq, self.batch)
    }
}

/// FLOPs of one training step of `net` on a `seq`×`batch` batch, counting
/// every GEMM as 2·m·n·k. Per layer l with input width I_l, hidden H and
/// G = 4H, over N = T·B rows:
/// - forward: input projection 2·N·G·I_l and the T per-step recurrent
///   products h·W_hhᵀ, 2·N·G·H in all;
/// - backward: dW_ih 2·N·G·I_l, dW_hh 2·N·G·H, the per-step dh_{t-1} =
///   dgates·W_hh 2·N·G·H, and dX = dgates·W_ih 2·N·G·I_l, except for layer 0
///   with dense input, whose input gradient feeds nothing trainable;
/// - head over R rows (N, or B when only the last step is predicted) with
///   O outputs: forward, dW and dX, 3·2·R·H·O.
///
/// Unidirectional models, as the trainer builds.
pub fn flops_per_step(net: &NetConfig, seq: usize, batch: usize) -> f64 {
    let cfg = net.lstm();
    let (n, h) = ((seq * batch) as f64, net.hidden as f64);
    let g = 4.0 * h;
    let embedded = matches!(net.head, Head::Language { .. });
    let mut f = 0.0;
    for l in 0..net.layers {
        let i = if l == 0 { cfg.input_size as f64 } else { h };
        f += 2.0 * n * g * (i + h); // forward
        f += 2.0 * n * g * (i + h) + 2.0 * n * g * h; // dW_ih, dW_hh, dh
        if l > 0 || embedded {
            f += 2.0 * n * g * i; // dX
        }
    }
    let rows = if matches!(net.head, Head::Regression { .. }) {
        batch as f64
    } else {
        n
    };
    f + 3.0 * 2.0 * rows * h * net.out_dim() as f64
}

/// What one workload measured.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchRow {
    /// Workload name.
    pub workload: String,
    /// Median wall time of a timed step, in milliseconds.
    pub ms_per_step: f64,
    /// batch × seq per second at the median step time.
    pub tokens_per_s: f64,
    /// Compute dispatches per step.
    pub dispatches_per_step: usize,
    /// Queue submits carrying the step's compute work.
    pub submits_per_step: usize,
    /// FLOPs per step ([`flops_per_step`]) over the median step time, in 10⁹/s.
    pub gflops: f64,
    /// Most bytes of GPU buffers live at once ([`crate::gpu::MemCounter`]),
    /// in MiB.
    pub peak_mem_mb: f64,
    /// Adapter name.
    pub adapter: String,
    /// Which cell path ran.
    pub path: String,
    /// Arithmetic and storage precision.
    pub precision: &'static str,
    /// Sequence length.
    pub seq: usize,
    /// Batch size.
    pub batch: usize,
    /// Timed steps.
    pub steps: usize,
    /// Warm-up steps.
    pub warmup: usize,
    /// FLOPs per step, in 10⁹.
    pub gflop_per_step: f64,
    /// Loss of the last step (a finite value shows the step computed).
    pub last_loss: f32,
    /// Steps ran back to back (the next submitted before the previous one's
    /// loss was read), not one by one (`--sync`).
    pub pipelined: bool,
}

impl BenchRow {
    /// One JSON object on one line (non-finite numbers as null).
    pub fn json(&self) -> String {
        use crate::metrics::{Value, json_line};
        let int = |v: usize| Value::Int(v as i64);
        json_line(&[
            ("workload", Value::Str(self.workload.clone())),
            ("ms_per_step", Value::Float(self.ms_per_step)),
            ("tokens_per_s", Value::Float(self.tokens_per_s)),
            ("dispatches_per_step", int(self.dispatches_per_step)),
            ("submits_per_step", int(self.submits_per_step)),
            ("gflops", Value::Float(self.gflops)),
            ("peak_mem_mb", Value::Float(self.peak_mem_mb)),
            ("adapter", Value::Str(self.adapter.clone())),
            ("path", Value::Str(self.path.clone())),
            ("precision", Value::Str(self.precision.to_string())),
            ("seq", int(self.seq)),
            ("batch", int(self.batch)),
            ("steps", int(self.steps)),
            ("warmup", int(self.warmup)),
            ("gflop_per_step", Value::Float(self.gflop_per_step)),
            ("last_loss", Value::Float(self.last_loss as f64)),
            ("pipelined", Value::Bool(self.pipelined)),
        ])
    }

    /// The table header ([`BenchRow::table_row`] aligns under it).
    pub fn table_header() -> String {
        format!(
            "{:<8} {:>10} {:>10} {:>10} {:>8} {:>8} {:>9}  {:<10} adapter",
            "workload",
            "ms/step",
            "tokens/s",
            "disp/step",
            "submits",
            "GFLOP/s",
            "peak MiB",
            "path"
        )
    }

    /// One aligned table row.
    pub fn table_row(&self) -> String {
        format!(
            "{:<8} {:>10.1} {:>10.0} {:>10} {:>8} {:>8.2} {:>9.1}  {:<10} {}",
            self.workload,
            self.ms_per_step,
            self.tokens_per_s,
            self.dispatches_per_step,
            self.submits_per_step,
            self.gflops,
            self.peak_mem_mb,
            self.path,
            self.adapter
        )
    }
}

/// Which cell path `trainer` runs for `t`×`b` batches: the schedule's
/// choice by shape, or the one forced by `LSTM_WGPU_CELL_PATH`. The only
/// place the bench learns the path.
fn cell_path(trainer: &mut Trainer, t: usize, b: usize) -> Result<&'static str> {
    Ok(trainer.lstm.plan(t, b)?.path.as_str())
}

/// The synthetic batch of a workload, time-major: inputs and targets.
enum Synthetic {
    Tokens(Vec<u32>, Vec<u32>),
    Series(Vec<f32>, Vec<f32>),
}

impl Synthetic {
    fn new(w: &Workload, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let tb = w.seq * w.batch;
        let mut uniform =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect() };
        match w.net.head {
            Head::Language { vocab, .. } => {
                let mut ids = |n: usize| -> Vec<u32> {
                    (0..n)
                        .map(|_| (rng.next_u64() % vocab as u64) as u32)
                        .collect()
                };
                let x = ids(tb);
                Synthetic::Tokens(x, ids(tb))
            }
            Head::Regression { features, outputs } => {
                Synthetic::Series(uniform(tb * features), uniform(w.batch * outputs))
            }
            Head::Sequence { features, outputs } => {
                Synthetic::Series(uniform(tb * features), uniform(tb * outputs))
            }
        }
    }

    fn step_data(&self) -> StepData<'_> {
        match self {
            Synthetic::Tokens(x, y) => StepData::tokens(x, y),
            Synthetic::Series(x, y) => StepData::series(x, y),
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// A workload ready to step: its trainer (AdamW, lr 1e-3, the workload's
/// clip) and its synthetic batch. Shared with the criterion benchmarks.
pub struct BenchRun {
    /// The trainer.
    pub trainer: Trainer,
    data: Synthetic,
    seq: usize,
    lr: f64,
}

impl BenchRun {
    /// Builds `w` on `ctx` from seeded initial weights and data.
    pub fn new(ctx: Arc<GpuContext>, w: &Workload) -> Result<Self> {
        let optim = OptimConfig {
            lr: 1e-3,
            ..OptimConfig::adamw()
        };
        let values = init_values(&w.net, 0);
        let trainer = Trainer::new(ctx, w.net.clone(), values, w.batch, Some(w.clip), &optim)?;
        Ok(Self {
            trainer,
            data: Synthetic::new(w, 1),
            seq: w.seq,
            lr: optim.lr,
        })
    }

    /// One training step over the whole sequence from a zero state; returns
    /// once the GPU work is done (the loss and gradient norm are read back).
    pub fn step(&mut self) -> Result<crate::train::StepStats> {
        self.trainer
            .step(self.seq, &self.data.step_data(), Carry::Zero, self.lr)
    }

    /// Submits one such step without waiting ([`Trainer::submit`]).
    pub fn submit(&mut self) -> Result<()> {
        self.trainer
            .submit(self.seq, &self.data.step_data(), Carry::Zero, self.lr)
    }
}

/// Runs `w` on a context of its own (so its memory high-water mark counts
/// only this workload): `warmup` untimed steps, then `steps` timed ones.
/// `progress` reports each step on stderr.
/// `profile` times each kernel of the timed steps (after the first step,
/// which makes the plans) and prints the table on stderr; `sync` waits for
/// each step before submitting the next.
pub fn run_workload(
    w: &Workload,
    steps: usize,
    warmup: usize,
    progress: bool,
    profile: bool,
    sync: bool,
    precision: crate::precision::PrecisionChoice,
) -> Result<BenchRow> {
    if steps == 0 {
        return Err(Error::Invalid("--steps must be at least 1".into()));
    }
    // Profiling reads every step's timestamps back before the next submit.
    let sync = sync || profile;
    let ctx = Arc::new(GpuContext::with_options(crate::gpu::GpuOptions {
        timestamps: profile,
        ..crate::cli::gpu_options_from_env()?
    })?);
    let mut run = BenchRun::new(ctx.clone(), w)?;
    let (precision, warning) = crate::precision::resolve(precision, &ctx, &w.net.norm)?;
    if let Some(msg) = warning {
        eprintln!("warning: {msg}");
    }
    run.trainer.set_precision(precision)?;
    // f16-mixed training steps carry GradScaler's dynamic loss scale, as
    // `train --precision f16-mixed` does.
    let scaler = crate::precision::LossScaleChoice::Default.config(precision);
    run.trainer.set_loss_scaler(scaler)?;
    let mut times = Vec::with_capacity(steps);
    let mut last_loss = f32::NAN;
    // Steps are pipelined as in training: step i is submitted before step
    // i-1's loss is read, and a step's time is the interval between the
    // completions of consecutive steps (each read back once done), so the
    // GPU work is inside the timed region and host recording overlaps it.
    let mut collected = 0usize;
    let mut last_done = Instant::now();
    let mut collect = |st: crate::train::StepStats, times: &mut Vec<f64>| {
        let now = Instant::now();
        let ms = (now - last_done).as_secs_f64() * 1e3;
        last_done = now;
        let i = collected;
        collected += 1;
        let timed = i >= warmup && i < warmup + steps;
        if timed {
            times.push(ms);
        }
        if progress && i < warmup + steps {
            eprintln!(
                "{}: step {}/{} {ms:.1} ms, loss {:.4}{}",
                w.name,
                i + 1,
                warmup + steps,
                st.loss,
                if timed { "" } else { " (warm-up)" }
            );
        } else if progress {
            eprintln!("{}: trailing untimed step {ms:.1} ms", w.name);
        }
        timed.then_some(st.loss)
    };
    // Pipelined, one more step runs after the timed ones, so that each timed
    // step is read while its successor is in flight (steady state) and the
    // last one's interval is not cut short by the final drain.
    for i in 0..warmup + steps + usize::from(!sync) {
        if profile && i > 0 && run.trainer.profiler.is_none() {
            let (n, _) = run.trainer.dispatches_per_step(w.seq).unwrap_or((0, 0));
            run.trainer.profiler = Some(crate::gpu::Profiler::new(&ctx, n)?);
        }
        if i == warmup
            && let Some(p) = run.trainer.profiler.as_mut()
        {
            p.reset();
        }
        run.submit()?;
        // Keep this step in flight while the previous one is read, unless
        // steps are timed one by one.
        let keep = if sync {
            0
        } else {
            crate::kernels::optim::MAX_IN_FLIGHT - 1
        };
        while run.trainer.outstanding() > keep {
            if let Some(st) = run.trainer.next_stats()?
                && let Some(l) = collect(st, &mut times)
            {
                last_loss = l;
            }
        }
    }
    while let Some(st) = run.trainer.next_stats()? {
        if let Some(l) = collect(st, &mut times) {
            last_loss = l;
        }
    }
    let ms = median(&mut times);
    if let Some(p) = &run.trainer.profiler {
        let rows = p.report();
        let total: f64 = rows.iter().map(|r| r.2).sum();
        eprintln!(
            "{} kernels (GPU timestamps, per step; {total:.0} us in all):",
            w.name
        );
        eprintln!("{:>10} {:>6} {:>9}  kernel", "us", "%", "dispatch");
        for (name, n, us) in rows {
            eprintln!("{us:>10.1} {:>6.1} {n:>9.1}  {name}", 100.0 * us / total);
        }
    }
    let trainer = &mut run.trainer;
    let (dispatches, submits) = trainer
        .dispatches_per_step(w.seq)
        .ok_or_else(|| Error::Invalid(format!("no training step of length {} has run", w.seq)))?;
    let flops = w.flops();
    Ok(BenchRow {
        workload: w.name.to_string(),
        ms_per_step: ms,
        tokens_per_s: (w.seq * w.batch) as f64 / (ms * 1e-3),
        dispatches_per_step: dispatches,
        submits_per_step: submits,
        gflops: flops / (ms * 1e-3) / 1e9,
        peak_mem_mb: ctx.mem.peak() as f64 / (1024.0 * 1024.0),
        adapter: ctx.info.name.clone(),
        path: cell_path(trainer, w.seq, w.batch)?.to_string(),
        precision: precision.as_str(),
        seq: w.seq,
        batch: w.batch,
        steps,
        warmup,
        gflop_per_step: flops / 1e9,
        last_loss,
        pipelined: !sync,
    })
}

/// `lstm-wgpu bench`: rows on stdout as each workload finishes, progress on
/// stderr.
pub fn run(a: &BenchArgs, verbose: bool) -> Result<()> {
    // Everything is checked before the GPU is opened.
    let workloads = Workload::selection(&a.workload)?;
    if a.steps == 0 {
        return Err(Error::Invalid("--steps must be at least 1".into()));
    }
    if !a.json {
        crate::out::line(BenchRow::table_header())?;
    }
    for w in &workloads {
        eprintln!(
            "bench {}: {} warm-up + {} timed steps, {:.3} GFLOP per step",
            w.name,
            a.warmup,
            a.steps,
            w.flops() / 1e9
        );
        let row = run_workload(w, a.steps, a.warmup, true, a.profile, a.sync, a.precision)?;
        if verbose {
            eprintln!("adapter: {}", row.adapter);
        }
        if a.json {
            crate::out::line(row.json())?;
        } else {
            crate::out::line(row.table_row())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_of_ts_by_hand() {
        // Layer 0: I=10, H=64, N=640, G=256; no dX (dense input).
        // fwd 2·640·256·74, bwd 2·640·256·74 + 2·640·256·64.
        // Layer 1: I=64: fwd 2·640·256·128, bwd the same + dh + dX.
        // Head: 3·2·32·64·1.
        let (n, g) = (640.0, 256.0);
        let l0 = 2.0 * n * g * 74.0 * 2.0 + 2.0 * n * g * 64.0;
        let l1 = 2.0 * n * g * 128.0 * 2.0 + 2.0 * n * g * 64.0 + 2.0 * n * g * 64.0;
        let head = 6.0 * 32.0 * 64.0;
        let w = Workload::by_name("ts").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(w.flops(), l0 + l1 + head);
    }

    #[test]
    fn every_workload_resolves_and_unknown_is_an_error() {
        assert_eq!(
            Workload::selection("all")
                .unwrap_or_else(|e| panic!("{e}"))
                .len(),
            WORKLOADS.len()
        );
        let e = Workload::by_name("nope")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("unknown workload") && e.contains("ts, char, big, deep"));
    }

    #[test]
    fn json_escapes_and_nulls() {
        let row = BenchRow {
            workload: "ts".into(),
            ms_per_step: 2.0,
            tokens_per_s: 320.0,
            dispatches_per_step: 28,
            submits_per_step: 1,
            gflops: 1.5,
            peak_mem_mb: 4.0,
            adapter: "a\"b\\c".into(),
            path: "per-step".into(),
            precision: "f32",
            seq: 20,
            batch: 32,
            steps: 2,
            warmup: 1,
            gflop_per_step: 0.003,
            last_loss: f32::NAN,
            pipelined: true,
        };
        let j = row.json();
        assert!(
            j.starts_with("{\"workload\":\"ts\",\"ms_per_step\":2,"),
            "{j}"
        );
        assert!(j.contains("\"adapter\":\"a\\\"b\\\\c\""), "{j}");
        assert!(j.contains("\"gflops\":1.5,"), "{j}");
        assert!(j.contains("\"dispatches_per_step\":28,"), "{j}");
        assert!(j.contains("\"last_loss\":null,"), "{j}");
        assert!(j.ends_with("\"pipelined\":true}"), "{j}");
    }
}
