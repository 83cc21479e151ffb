//! The command line: thin over the library.

use lstm_wgpu::error::Result;
use lstm_wgpu::model::LstmConfig;
pub mod bench;
pub mod check_cell;
pub mod demo;
pub mod env;
pub mod export;
pub mod generate;
pub mod grad;
pub mod out;
pub mod predict;
pub mod study;
pub mod train;

use clap::{Parser, Subcommand};
use grad::GradArgs;

/// Train and run PyTorch-compatible LSTMs on any GPU that wgpu reaches.
#[derive(Parser, Debug)]
#[command(name = "lstm-wgpu", version, about)]
pub struct Cli {
    /// Print the chosen adapter and progress details to stderr.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// The adapter to run on: its number in `lstm-wgpu devices`, or a part
    /// of its name; under MPI a comma-separated list, rank r taking entry r
    /// modulo its length. Overrides WGPU_ADAPTER_NAME. [default: wgpu's
    /// choice; under MPI, rank r on GPU r modulo the GPUs]
    #[arg(long, global = true, value_name = "N|NAME[,…]")]
    pub device: Option<String>,
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
    Demo(crate::cli::demo::DemoArgs),
    /// Train a language model or a time-series model on the GPU.
    Train(Box<crate::cli::train::settings::TrainArgs>),
    /// Sample text from a text checkpoint.
    Generate(crate::cli::generate::GenerateArgs),
    /// Run a time-series checkpoint over a CSV.
    Predict(crate::cli::predict::PredictArgs),
    /// Write a checkpoint's weights as a PyTorch state_dict (safetensors)
    /// with its normaliser or vocabulary as JSON beside it.
    Export(crate::cli::export::ExportArgs),
    /// Train every variant × seed of a study and tabulate them (mean ±
    /// std over seeds), with the curves; interrupted studies resume.
    Study(crate::cli::study::StudyArgs),
    /// List the adapters wgpu finds, numbered as `--device` takes them.
    Devices,
    /// Time standard training workloads (ms/step, tokens/s, dispatches,
    /// GFLOP/s, peak GPU memory); `all` takes minutes on a CPU driver.
    Bench(crate::cli::bench::BenchArgs),
    /// Check a cell file: its backward against central differences of its
    /// forward on the GPU (exit 1 above the tolerance), then a few
    /// training steps of it.
    CheckCell(crate::cli::check_cell::CheckCellArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    // Commands that print results find an unwritable stdout before they
    // print anything else (grad and --dump-data write files only).
    let prints = match &cli.cmd {
        Cmd::Grad(_) | Cmd::Export(_) => false,
        Cmd::Train(a) => a.dump_data.is_none(),
        _ => true,
    };
    if prints {
        crate::cli::out::check()?;
    }
    crate::cli::env::set_device(cli.device);
    match cli.cmd {
        Cmd::Devices => list_devices(),
        Cmd::Grad(a) => grad::run(&a, cli.verbose),
        Cmd::Demo(a) => crate::cli::demo::run(&a, cli.verbose),
        Cmd::Train(a) => crate::cli::train::train(*a, cli.verbose),
        Cmd::Generate(a) => crate::cli::generate::generate(&a, cli.verbose),
        Cmd::Predict(a) => crate::cli::predict::predict(&a, cli.verbose),
        Cmd::Export(a) => crate::cli::export::export(&a),
        Cmd::Bench(a) => crate::cli::bench::run(&a, cli.verbose),
        Cmd::Study(a) => crate::cli::study::run(&a, cli.verbose),
        Cmd::CheckCell(a) => crate::cli::check_cell::run(&a, cli.verbose),
    }
}

/// One line describing a configuration.
pub fn describe(cfg: &LstmConfig) -> String {
    format!(
        "{} layer(s), input {}, hidden {}{}, {}, {}",
        cfg.num_layers,
        cfg.input_size,
        cfg.hidden_size,
        match cfg.proj() {
            Some(p) => format!(", projection {p}"),
            None => String::new(),
        },
        if cfg.bidirectional {
            "bidirectional"
        } else {
            "unidirectional"
        },
        if cfg.bias { "with bias" } else { "no bias" }
    )
}

/// `lstm-wgpu devices`: the adapters, one a line, numbered as `--device`
/// takes them.
pub fn list_devices() -> Result<()> {
    let all = lstm_wgpu::gpu::adapters();
    if all.is_empty() {
        return Err(lstm_wgpu::error::Error::NoAdapter(
            "wgpu finds no adapter (install a Vulkan driver, e.g. Mesa's lavapipe)".into(),
        ));
    }
    let mut s = String::from("device  name  backend  type  driver\n");
    for (k, i) in all.iter().enumerate() {
        s += &format!(
            "{k}  {}  {:?}  {:?}  {} {}\n",
            i.name, i.backend, i.device_type, i.driver, i.driver_info
        );
    }
    out::text(&s)
}
