//! `lstm-wgpu bench`: the workloads of [`lstm_wgpu::train::bench`] timed
//! step by step, rows on stdout, progress on stderr.

use lstm_wgpu::error::{Error, Result};
use lstm_wgpu::gpu::GpuContext;
use lstm_wgpu::train::Trainer;
use lstm_wgpu::train::bench::{BenchRow, BenchRun, StepSplit, Workload};
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
    #[arg(long, value_name = "P", default_value = "f32", value_parser = lstm_wgpu::model::precision::PrecisionChoice::parse)]
    pub precision: lstm_wgpu::model::precision::PrecisionChoice,
    /// Take histograms every N training steps, as `train --hist-every`
    /// does (1: every step, to time their cost; 0: none). Not with
    /// --profile.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub hist_every: u64,
    /// The recurrent cell of every workload: lstm | gru | indrnn (ReLU)
    /// (rows then named `<workload>-gru`, `<workload>-indrnn`).
    #[arg(
        long,
        value_name = "CELL",
        default_value = "lstm",
        hide_possible_values = true
    )]
    pub cell: lstm_wgpu::run::choice::CellChoice,
    /// A cell written in WGSL for every workload instead of --cell (rows
    /// then named `<workload>-<file name>`).
    #[arg(long, value_name = "PATH", conflicts_with = "cell")]
    pub cell_file: Option<std::path::PathBuf>,
    /// Zoneout of h in every workload's training steps, in [0, 1).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub zoneout_h: f32,
    /// Zoneout of c likewise (LSTM cells).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub zoneout_c: f32,
    /// LSTM projections of size P in every workload (nn.LSTM's
    /// proj_size, below each workload's hidden size; rows then named
    /// `<workload>-p<P>`). Not with deep, whose LayerNorm projections do
    /// not take.
    #[arg(long, value_name = "P")]
    pub proj_size: Option<usize>,
    /// Data-parallel steps, as `mpirun -np N lstm-wgpu train` takes them:
    /// each rank trains its share of every workload's batch, its gradients
    /// are read back in buckets, summed over the ranks and uploaded; rows
    /// (rank 0's) end with the step's time split (buckets; compute,
    /// readback, allreduce, upload). Under mpirun (cargo feature `mpi`)
    /// over the job's ranks, otherwise one rank alone. Not with --profile.
    #[arg(long)]
    pub mpi: bool,
    /// Under mpirun: how long a sum waits for a peer, in seconds (0:
    /// forever), as `train --mpi-timeout`.
    #[arg(long, value_name = "SECS")]
    pub mpi_timeout: Option<u64>,
    /// With --mpi: the gradient MiB a bucket gathers before it is summed,
    /// as `train --bucket-mb` [default: 1]
    #[arg(long, value_name = "MB")]
    pub bucket_mb: Option<f64>,
}

/// Which cell path `trainer` runs for `t`×`b` batches: the schedule's
/// choice by shape, or the one forced by `LSTM_WGPU_CELL_PATH`. The only
/// place the bench learns the path.
fn cell_path(trainer: &mut Trainer, t: usize, b: usize) -> Result<&'static str> {
    Ok(trainer.lstm.plan(t, b)?.path.as_str())
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

/// Runs `w` on a context of its own (so its memory high-water mark counts
/// only this workload): `warmup` untimed steps, then `steps` timed ones.
/// `progress` reports each step on stderr.
/// `profile` times each kernel of the timed steps (after the first step,
/// which makes the plans) and prints the table on stderr; `sync` waits for
/// each step before submitting the next; `hist_every` > 0 takes
/// histograms every that many steps.
#[allow(clippy::too_many_arguments)]
pub fn run_workload(
    w: &Workload,
    steps: usize,
    warmup: usize,
    progress: bool,
    profile: bool,
    sync: bool,
    precision: lstm_wgpu::model::precision::PrecisionChoice,
    hist_every: u64,
    dp: Option<&DataParallel>,
) -> Result<BenchRow> {
    if steps == 0 {
        return Err(Error::Invalid("--steps must be at least 1".into()));
    }
    // Profiling reads every step's timestamps back before the next submit.
    let sync = sync || profile;
    let (ctx, mut run, precision) = open_run(w, profile, precision, dp)?;
    if hist_every > 0 {
        run.trainer
            .set_histograms(Some(lstm_wgpu::train::HistSettings {
                every: hist_every,
                bins: lstm_wgpu::kernels::histogram::DEFAULT_BINS,
            }))?;
    }
    let mut times = Vec::with_capacity(steps);
    let mut last_loss = f32::NAN;
    // Steps are pipelined as in training: step i is submitted before step
    // i-1's loss is read, and a step's time is the interval between the
    // completions of consecutive steps (each read back once done), so the
    // GPU work is inside the timed region and host recording overlaps it.
    let mut collected = 0usize;
    let mut last_done = Instant::now();
    let mut collect = |st: lstm_wgpu::train::StepStats, times: &mut Vec<f64>| {
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
            run.trainer.profiler = Some(lstm_wgpu::gpu::Profiler::new(&ctx, n)?);
        }
        if i == warmup {
            if let Some(p) = run.trainer.profiler.as_mut() {
                p.reset();
            }
            if dp.is_some() {
                run.trainer.time_reduce_steps();
            }
        }
        run.submit()?;
        // Keep this step in flight while the previous one is read, unless
        // steps are timed one by one.
        let keep = if sync {
            0
        } else {
            lstm_wgpu::kernels::optim::MAX_IN_FLIGHT - 1
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
        print_profile(w.name, p);
    }
    let trainer = &mut run.trainer;
    let (dispatches, submits) = trainer
        .dispatches_per_step(w.seq)
        .ok_or_else(|| Error::Invalid(format!("no training step of length {} has run", w.seq)))?;
    let flops = w.flops();
    let split = dp.map(|d| StepSplit::of(&trainer.reduce_times().unwrap_or_default(), d.ranks));
    let batch = trainer.batch();
    Ok(BenchRow {
        workload: w.name.to_string(),
        ms_per_step: ms,
        tokens_per_s: (w.seq * w.batch) as f64 / (ms * 1e-3),
        split,
        dispatches_per_step: dispatches,
        submits_per_step: submits,
        gflops: flops / (ms * 1e-3) / 1e9,
        peak_mem_mb: ctx.mem.peak() as f64 / (1024.0 * 1024.0),
        adapter: ctx.info.name.clone(),
        path: cell_path(trainer, w.seq, batch)?.to_string(),
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

/// `bench --mpi`: the ranks each batch is shared by (the MPI job's, or
/// this process alone).
pub struct DataParallel {
    /// Ranks.
    pub ranks: usize,
    /// Gradient bytes per bucket (`--bucket-mb`).
    pub bucket_bytes: usize,
}

/// The one-rank group (sums that change nothing): the data-parallel step
/// of a process alone.
fn one_rank() -> lstm_wgpu::train::reduce::ThreadReducer {
    let mut r = lstm_wgpu::train::reduce::ThreadGroup::new(1).reducers();
    r.pop().expect("a group of one has one reducer")
}

impl DataParallel {
    /// This rank's reducer: the MPI job's, or the one-rank group.
    fn reducer(&self) -> Box<dyn lstm_wgpu::train::reduce::Reducer> {
        crate::cli::train::parallel::Rank::process()
            .take_reducer()
            .unwrap_or_else(|| Box::new(one_rank()))
    }
}

/// A context of its own for `w` (with GPU timestamps when `profile`), and
/// its trainer in the precision `choice` resolves to, with the loss scaler
/// `train` would use.
fn open_run(
    w: &Workload,
    profile: bool,
    choice: lstm_wgpu::model::precision::PrecisionChoice,
    dp: Option<&DataParallel>,
) -> Result<(
    Arc<GpuContext>,
    BenchRun,
    lstm_wgpu::model::precision::Precision,
)> {
    let ctx = match dp {
        Some(_) => crate::cli::train::parallel::Rank::process().open_gpu(false)?,
        None => Arc::new(GpuContext::with_options(lstm_wgpu::gpu::GpuOptions {
            timestamps: profile,
            ..crate::cli::env::gpu_options_from_env()?
        })?),
    };
    let mut run = match dp {
        // This rank's share of the global batch (the same synthetic data
        // on every rank: the timing does not depend on it).
        Some(d) => {
            let mut local = w.clone();
            local.batch = w.batch / d.ranks;
            let mut run = BenchRun::new(ctx.clone(), &local)?;
            run.trainer.set_reducer(Some(d.reducer()));
            run.trainer.set_bucket_bytes(d.bucket_bytes);
            run
        }
        None => BenchRun::new(ctx.clone(), w)?,
    };
    let (precision, warning) =
        lstm_wgpu::model::precision::resolve_for(choice, &ctx, &w.net.norm, &w.net.lstm())?;
    if let Some(msg) = warning {
        eprintln!("warning: {msg}");
    }
    run.trainer.set_precision(precision)?;
    // f16-mixed training steps carry GradScaler's dynamic loss scale, as
    // `train --precision f16-mixed` does.
    let scaler = lstm_wgpu::model::precision::LossScaleChoice::Default.config(precision);
    run.trainer.set_loss_scaler(scaler)?;
    Ok((ctx, run, precision))
}

/// The per-kernel table of a profiled workload, on stderr.
fn print_profile(name: &str, p: &lstm_wgpu::gpu::Profiler) {
    let rows = p.report();
    let total: f64 = rows.iter().map(|r| r.2).sum();
    eprintln!("{name} kernels (GPU timestamps, per step; {total:.0} us in all):");
    eprintln!("{:>10} {:>6} {:>9}  kernel", "us", "%", "dispatch");
    for (kernel, n, us) in rows {
        eprintln!("{us:>10.1} {:>6.1} {n:>9.1}  {kernel}", 100.0 * us / total);
    }
}

/// `--proj-size p` for workload `w` (its cell already set), refused by
/// name before the GPU opens: 0 < P < its hidden size, an LSTM cell, no
/// norm or zoneout.
fn check_proj(w: &Workload, p: usize) -> Result<()> {
    let bad = |why: String| Err(Error::Invalid(format!("--proj-size {p}: {why}")));
    if p == 0 {
        return bad("a projection is at least 1 wide (leave the flag out for none)".into());
    }
    if let Err(e) = lstm_wgpu::model::config::check_proj(p, w.net.hidden, w.net.cell) {
        return bad(format!("workload {}: {e}", w.name));
    }
    if w.net.norm != lstm_wgpu::model::norm::Norm::None {
        return bad(format!(
            "workload {} has a norm between layers, which projections do not take",
            w.name
        ));
    }
    if w.net.zoneout != (0.0, 0.0) {
        return bad("projections do not take zoneout".into());
    }
    Ok(())
}

/// `lstm-wgpu bench`: rows on stdout as each workload finishes, progress on
/// stderr.
pub fn run(a: &BenchArgs, verbose: bool) -> Result<()> {
    let group = match a.mpi {
        true => Some(crate::cli::train::parallel::join(a.mpi_timeout)?),
        false => None,
    };
    let r = run_rows(a, verbose);
    match group {
        Some(g) => g.finish(r),
        None => r,
    }
}

fn run_rows(a: &BenchArgs, verbose: bool) -> Result<()> {
    // Everything is checked before the GPU is opened.
    let mut workloads = Workload::selection(&a.workload)?;
    let cell = lstm_wgpu::run::choice::cell_of(a.cell, None, a.cell_file.as_deref())?;
    lstm_wgpu::run::choice::check_zoneout(a.zoneout_h, a.zoneout_c, cell, None)?;
    for w in &mut workloads {
        w.net.cell = cell;
        w.net.zoneout = (a.zoneout_h, a.zoneout_c);
        if let Some(p) = a.proj_size {
            check_proj(w, p)?;
            w.net.proj = p;
        }
    }
    let name = |w: &Workload| {
        let base = match (cell.custom(), a.cell) {
            (Some(c), _) => format!("{}-{}", w.name, c.name),
            (None, lstm_wgpu::run::choice::CellChoice::Lstm) => w.name.to_string(),
            (None, c) => format!("{}-{c}", w.name),
        };
        match a.proj_size {
            Some(p) => format!("{base}-p{p}"),
            None => base,
        }
    };
    if a.steps == 0 {
        return Err(Error::Invalid("--steps must be at least 1".into()));
    }
    if a.profile && a.hist_every > 0 {
        return Err(Error::Invalid(
            "--hist-every with --profile: the profiler times the plain step; give one of them"
                .into(),
        ));
    }
    if a.mpi_timeout.is_some() && !a.mpi {
        return Err(Error::Invalid("--mpi-timeout is for --mpi".into()));
    }
    if a.bucket_mb.is_some() && !a.mpi {
        return Err(Error::Invalid("--bucket-mb is for --mpi".into()));
    }
    let bucket_bytes = match a.bucket_mb {
        Some(mb) => lstm_wgpu::train::reduce::bucket_bytes(mb)?,
        None => lstm_wgpu::train::reduce::DEFAULT_BUCKET_BYTES,
    };
    let dp = a.mpi.then(|| DataParallel {
        ranks: crate::cli::train::parallel::rank_size().1,
        bucket_bytes,
    });
    if let Some(d) = &dp {
        if a.profile {
            return Err(Error::Invalid(
                "--profile with --mpi: a data-parallel step is not profiled; give one of them"
                    .into(),
            ));
        }
        for w in &workloads {
            if !w.batch.is_multiple_of(d.ranks) {
                return Err(Error::Invalid(format!(
                    "--mpi: workload {}'s batch {} does not divide evenly over the {} MPI ranks",
                    w.name, w.batch, d.ranks
                )));
            }
        }
    }
    let root = crate::cli::train::parallel::Rank::process().is_root();
    if !a.json && root {
        crate::cli::out::line(BenchRow::table_header())?;
    }
    for w in &workloads {
        if root {
            eprintln!(
                "bench {}: {} warm-up + {} timed steps, {:.3} GFLOP per step",
                name(w),
                a.warmup,
                a.steps,
                w.flops() / 1e9
            );
        }
        let mut row = run_workload(
            w,
            a.steps,
            a.warmup,
            root,
            a.profile,
            a.sync,
            a.precision,
            a.hist_every,
            dp.as_ref(),
        )?;
        row.workload = name(w);
        if !root {
            continue;
        }
        if verbose {
            eprintln!("adapter: {}", row.adapter);
        }
        if a.json {
            crate::cli::out::line(row.json())?;
        } else {
            crate::cli::out::line(row.table_row())?;
        }
    }
    Ok(())
}
