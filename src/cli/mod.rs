//! The command line: thin over the library.

use lstm_wgpu::GpuContext;
use lstm_wgpu::error::Result;
use lstm_wgpu::model::LstmConfig;
pub mod bench;
pub mod demo;
pub mod env;
pub mod grad;
pub mod out;
pub mod train;

use clap::{Parser, Subcommand};
use grad::GradArgs;
use std::sync::Arc;

/// Train and run PyTorch-compatible LSTMs on any GPU that wgpu reaches.
#[derive(Parser, Debug)]
#[command(name = "lstm-wgpu", version, about)]
pub struct Cli {
    /// Print the chosen adapter and progress details to stderr.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// What to do.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// One forward and one backward pass, as torch.autograd computes them.
    Grad(GradArgs),
    /// Train a small LSTM for a few steps on a generated sine mixture and
    /// print its falling loss.
    Demo(DemoArgs),
    /// Train a language model or a time-series model on the GPU.
    Train(Box<crate::cli::train::TrainArgs>),
    /// Sample text from a text checkpoint.
    Generate(crate::cli::train::GenerateArgs),
    /// Run a time-series checkpoint over a CSV.
    Predict(crate::cli::train::PredictArgs),
    /// Time standard training workloads (ms/step, tokens/s, dispatches,
    /// GFLOP/s, peak GPU memory); `all` takes minutes on a CPU driver.
    Bench(crate::cli::bench::BenchArgs),
}

/// Arguments of `demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Training steps.
    #[arg(long, default_value_t = 60)]
    pub steps: usize,
    /// Hidden units.
    #[arg(long, default_value_t = 32)]
    pub hidden: usize,
    /// Stacked layers.
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    /// Sequence length.
    #[arg(long, default_value_t = 32)]
    pub seq_len: usize,
    /// Sequences per batch.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 0.01)]
    pub lr: f32,
    /// Seed of the initial weights and the data.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    // Commands that print results find an unwritable stdout before they
    // print anything else (grad and --dump-data write files only).
    let prints = match &cli.cmd {
        Cmd::Grad(_) => false,
        Cmd::Train(a) => a.dump_data.is_none(),
        _ => true,
    };
    if prints {
        crate::cli::out::check()?;
    }
    match cli.cmd {
        Cmd::Grad(a) => grad::run(&a, cli.verbose),
        Cmd::Demo(a) => crate::cli::demo::run(&a, cli.verbose),
        Cmd::Train(a) => crate::cli::train::train(*a, cli.verbose),
        Cmd::Generate(a) => crate::cli::train::generate(&a, cli.verbose),
        Cmd::Predict(a) => crate::cli::train::predict(&a, cli.verbose),
        Cmd::Bench(a) => crate::cli::bench::run(&a, cli.verbose),
    }
}

/// Host memory a run may plan for: half of `MemTotal` in /proc/meminfo,
/// or 8 GiB where that cannot be read. Sizes over it are refused before
/// anything is allocated (a failed allocation aborts the process).
pub fn host_budget() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb.saturating_mul(1024) / 2)
        })
        .unwrap_or(8 << 30)
}

/// The size limits of a run: the host budget and, with a GPU, its largest
/// storage buffer.
pub fn size_limits(ctx: Option<&GpuContext>) -> lstm_wgpu::train::SizeLimits {
    lstm_wgpu::train::SizeLimits {
        host_bytes: host_budget(),
        buffer: ctx.map(|c| c.max_storage_bytes()),
    }
}

/// Opens the GPU as the environment says ([`gpu_options_from_env`]),
/// printing the adapter with `-v`.
pub fn open_gpu(verbose: bool) -> Result<Arc<GpuContext>> {
    let ctx = GpuContext::with_options(env::gpu_options_from_env()?)?;
    if verbose {
        eprintln!("adapter: {}", ctx.describe());
    }
    Ok(Arc::new(ctx))
}

/// One line describing a configuration.
pub fn describe(cfg: &LstmConfig) -> String {
    format!(
        "{} layer(s), input {}, hidden {}, {}, {}",
        cfg.num_layers,
        cfg.input_size,
        cfg.hidden_size,
        if cfg.bidirectional {
            "bidirectional"
        } else {
            "unidirectional"
        },
        if cfg.bias { "with bias" } else { "no bias" }
    )
}
