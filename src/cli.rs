//! The command line: thin over the library.

use crate::GpuContext;
use crate::error::{Error, Result};
use crate::gpu::GpuOptions;
use crate::io::{self, TensorFile};
use crate::kernels::elementwise::DropoutStep;
use crate::lstm::{Batch, Lstm, Upstream, validate_batch, validate_upstream};
use crate::model::{Links, LstmConfig, LstmModel, NamedTensor};
use crate::norm::NormKind;
use crate::tuning::Tuning;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
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
    Train(Box<crate::train_cli::TrainArgs>),
    /// Sample text from a text checkpoint.
    Generate(crate::train_cli::GenerateArgs),
    /// Run a time-series checkpoint over a CSV.
    Predict(crate::train_cli::PredictArgs),
    /// Time standard training workloads (ms/step, tokens/s, dispatches,
    /// GFLOP/s, peak GPU memory); `all` takes minutes on a CPU driver.
    Bench(crate::bench::BenchArgs),
}

/// Arguments of `grad`.
#[derive(clap::Args, Debug)]
pub struct GradArgs {
    /// nn.LSTM state_dict in safetensors (weight_ih_l0, weight_hh_l0, ...).
    #[arg(long)]
    pub weights: PathBuf,
    /// input, grad_output, grad_h_n, grad_c_n [, h0, c0, lengths].
    #[arg(long)]
    pub inputs: PathBuf,
    /// Where to write output, h_n, c_n and the gradients.
    #[arg(long)]
    pub out: PathBuf,
    /// input and grad_output are [B, T, ...] instead of [T, B, ...].
    #[arg(long)]
    pub batch_first: bool,
    /// Normalization variant; the weights file must hold exactly its tensors
    /// [default: none].
    #[arg(long, value_enum)]
    pub norm: Option<NormKind>,
    /// BatchNorm in train mode: batch statistics, running statistics
    /// updated and written to the output (the default).
    #[arg(long, conflicts_with = "eval")]
    pub train: bool,
    /// BatchNorm in eval mode: running statistics.
    #[arg(long)]
    pub eval: bool,
    /// Clip the gradients to this global L2 norm (clip_grad_norm_); the
    /// output gets `grad_norm` (before clipping) and `grad_norm.<name>`
    /// [default: no clipping].
    #[arg(long)]
    pub clip_norm: Option<f32>,
    /// Clamp every gradient to [-V, V] (clip_grad_value_), after --clip-norm
    /// [default: no clamping].
    #[arg(long)]
    pub clip_value: Option<f32>,
    /// Dropout probability in [0, 1) on each layer's output but the last
    /// (after its between-layer norm), as nn.LSTM's `dropout`; train mode
    /// only, identity with --eval.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub dropout: f32,
    /// Residual connections: layer l >= 1 adds its input to its output.
    #[arg(long)]
    pub residual: bool,
    /// Seed of the dropout mask (Philox key).
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub dropout_seed: u64,
    /// Counter of the dropout mask (the training step it belongs to).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub dropout_step: u32,
    /// Precision of the passes: f32, f16-mixed (f16 weights and gate
    /// cache, f32 accumulation, state and gradients; needs SHADER_F16 and a
    /// plain cell) or auto (f16-mixed where possible, else f32 with a
    /// warning).
    #[arg(long, value_name = "P", default_value = "f32", value_parser = crate::precision::PrecisionChoice::parse)]
    pub precision: crate::precision::PrecisionChoice,
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
        crate::out::check()?;
    }
    match cli.cmd {
        Cmd::Grad(a) => grad(&a, cli.verbose),
        Cmd::Demo(a) => crate::demo::run(&a, cli.verbose),
        Cmd::Train(a) => crate::train_cli::train(*a, cli.verbose),
        Cmd::Generate(a) => crate::train_cli::generate(&a, cli.verbose),
        Cmd::Predict(a) => crate::train_cli::predict(&a, cli.verbose),
        Cmd::Bench(a) => crate::bench::run(&a, cli.verbose),
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
pub fn size_limits(ctx: Option<&GpuContext>) -> crate::train::SizeLimits {
    crate::train::SizeLimits {
        host_bytes: host_budget(),
        buffer: ctx.map(|c| c.max_storage_bytes()),
    }
}

/// Environment variable forcing the GEMM variant: `block`, `tiled` or
/// `subgroup` (unset or empty: chosen by adapter).
pub const GEMM_ENV: &str = "LSTM_WGPU_GEMM";
/// Environment variable setting the tiled GEMM's shape: `WG_M,WG_N,TK`
/// (unset: [`crate::kernels::gemm::TileShape::DEFAULT`]).
pub const GEMM_TILE_ENV: &str = "LSTM_WGPU_GEMM_TILE";
/// Environment variable forcing the cell variant: `direct` or `tiled`
/// (unset or empty: chosen by adapter).
pub const CELL_ENV: &str = "LSTM_WGPU_CELL";
/// Environment variable setting the tiled cell's tile: `TB,TU,KC,KS`
/// (batch rows, hidden units, K chunk, K slices; unset: the default tile,
/// and the large one for large dispatches).
pub const CELL_TILE_ENV: &str = "LSTM_WGPU_CELL_TILE";
/// Environment variable forcing the cell path: `per-step`, `persistent` or
/// `wavefront` (unset or empty: chosen by shape).
pub const CELL_PATH_ENV: &str = "LSTM_WGPU_CELL_PATH";
/// Environment variable setting the wavefront's skew C (layer l + 1 runs
/// step s − C beside layer l at step s); unset: chosen by adapter and shape.
pub const WAVE_SKEW_ENV: &str = "LSTM_WGPU_WAVE_SKEW";
/// Environment variable turning the subgroup kernels off (`off` or `0`) or
/// on (`on`, `1`, or unset: on wherever the adapter has subgroups of one
/// fixed width).
pub const SUBGROUPS_ENV: &str = "LSTM_WGPU_SUBGROUPS";

/// The value of environment variable `var` parsed by `parse`, when set and
/// not empty; a parse failure names the variable.
pub fn env_choice<T>(
    var: &str,
    parse: impl Fn(&str) -> std::result::Result<T, String>,
) -> Result<Option<T>> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => parse(&v)
            .map(Some)
            .map_err(|e| Error::Invalid(format!("{var}: {e}"))),
        _ => Ok(None),
    }
}

/// The [`Tuning`] the `LSTM_WGPU_*` variables ask for: the only place the
/// program reads them (the library takes the value). A malformed value is
/// an error naming its variable.
pub fn tuning_from_env() -> Result<Tuning> {
    use crate::tuning::{CellPath, CellVariant, GemmVariant, TileConfig, TileShape};
    let cell_path = match std::env::var(CELL_PATH_ENV) {
        Ok(v) if !v.is_empty() => {
            Some(CellPath::parse(&v).map_err(|e| Error::Invalid(format!("{CELL_PATH_ENV}: {e}")))?)
        }
        _ => None,
    };
    let wave_skew = env_choice(WAVE_SKEW_ENV, |v| {
        v.trim()
            .parse::<usize>()
            .ok()
            .filter(|&c| c > 0)
            .ok_or_else(|| format!("`{v}` is not a positive whole number"))
    })?;
    let subgroups = env_choice(SUBGROUPS_ENV, |v| match v.trim() {
        "on" | "1" => Ok(true),
        "off" | "0" => Ok(false),
        other => Err(format!("`{other}` is neither on nor off")),
    })?;
    Ok(Tuning {
        gemm: env_choice(GEMM_ENV, GemmVariant::parse)?,
        gemm_tile: env_choice(GEMM_TILE_ENV, TileShape::parse)?,
        cell: env_choice(CELL_ENV, CellVariant::parse)?,
        cell_tile: env_choice(CELL_TILE_ENV, TileConfig::parse)?,
        cell_path,
        wave_skew,
        subgroups,
    })
}

/// How the program builds its GPU context: the adapter `WGPU_ADAPTER_NAME`
/// names (none matching is an error listing the adapters) and
/// [`tuning_from_env`].
pub fn gpu_options_from_env() -> Result<GpuOptions> {
    let adapter_name = match std::env::var(crate::gpu::ADAPTER_NAME_ENV) {
        Ok(want) if !want.is_empty() => Some(want),
        _ => None,
    };
    Ok(GpuOptions {
        adapter_name,
        tuning: tuning_from_env()?,
        ..GpuOptions::default()
    })
}

/// Opens the GPU as the environment says ([`gpu_options_from_env`]),
/// printing the adapter with `-v`.
pub fn open_gpu(verbose: bool) -> Result<Arc<GpuContext>> {
    let ctx = GpuContext::with_options(gpu_options_from_env()?)?;
    if verbose {
        eprintln!("adapter: {}", ctx.describe());
    }
    Ok(Arc::new(ctx))
}

fn expect_shape(t: &NamedTensor, want: &[usize], what: &str) -> Result<()> {
    if t.shape != want {
        return Err(Error::tensor(
            &t.name,
            format!("shape {:?}, expected {want:?} ({what})", t.shape),
        ));
    }
    Ok(())
}

const INPUT_NAMES: [&str; 7] = [
    "input",
    "grad_output",
    "grad_h_n",
    "grad_c_n",
    "h0",
    "c0",
    "lengths",
];

fn grad(a: &GradArgs, verbose: bool) -> Result<()> {
    // Everything is read and checked on the host before the GPU is opened.
    io::check_output(&a.out, "--out", &[&a.weights, &a.inputs])?;
    let wfile = TensorFile::read(&a.weights)?;
    let (floats, counters) = wfile.params_and_counters()?;
    let host = LstmModel::host_model(&floats, &counters, a.norm)?;
    let cfg = host.config.clone();
    let inp = TensorFile::read(&a.inputs)?;
    if let Some(name) = inp
        .tensors
        .keys()
        .find(|k| !INPUT_NAMES.contains(&k.as_str()))
    {
        return Err(Error::tensor(
            name,
            format!(
                "unexpected in {}; known: {}",
                a.inputs.display(),
                INPUT_NAMES.join(", ")
            ),
        ));
    }
    let x = inp.require_f32("input")?;
    let (i, h, sd) = (cfg.input_size, cfg.hidden_size, cfg.num_layers * cfg.dirs());
    let layout = if a.batch_first {
        "[B, T, I] with --batch-first"
    } else {
        "[T, B, I]"
    };
    if x.shape.len() != 3 || x.shape[2] != i || x.shape[0] == 0 || x.shape[1] == 0 {
        return Err(Error::tensor(
            "input",
            format!(
                "shape {:?}, expected {layout} with I = {i} from the weights",
                x.shape
            ),
        ));
    }
    let (t, n) = if a.batch_first {
        (x.shape[1], x.shape[0])
    } else {
        (x.shape[0], x.shape[1])
    };
    let w = cfg.dirs() * h;
    let oshape = if a.batch_first { [n, t, w] } else { [t, n, w] };
    let gout = inp.require_f32("grad_output")?;
    expect_shape(&gout, &oshape, "the shape of output")?;
    let sshape = [sd, n, h];
    let ghn = inp.require_f32("grad_h_n")?;
    expect_shape(&ghn, &sshape, "[L*D, B, H]")?;
    let gcn = inp.require_f32("grad_c_n")?;
    expect_shape(&gcn, &sshape, "[L*D, B, H]")?;
    let h0 = inp.f32("h0")?;
    let c0 = inp.f32("c0")?;
    for s in [&h0, &c0].into_iter().flatten() {
        expect_shape(s, &sshape, "[L*D, B, H]")?;
    }
    let lengths = match inp.ints("lengths")? {
        None => None,
        Some((shape, v)) => {
            if shape != [n] {
                return Err(Error::tensor(
                    "lengths",
                    format!("shape {shape:?}, expected [{n}] (one per sequence)"),
                ));
            }
            if let Some((k, l)) = v
                .iter()
                .enumerate()
                .find(|(_, l)| **l < 1 || **l > t as i64)
            {
                return Err(Error::tensor(
                    "lengths",
                    format!("lengths[{k}] = {l} is outside 1..={t} (the sequence length)"),
                ));
            }
            Some(v.iter().map(|&l| l as usize).collect::<Vec<_>>())
        }
    };
    let batch = Batch {
        input: &x.data,
        seq_len: t,
        batch: n,
        batch_first: a.batch_first,
        h0: h0.as_ref().map(|v| v.data.as_slice()),
        c0: c0.as_ref().map(|v| v.data.as_slice()),
        lengths: lengths.as_deref(),
    };
    let up = Upstream {
        grad_output: &gout.data,
        grad_h_n: &ghn.data,
        grad_c_n: &gcn.data,
    };
    validate_batch(&cfg, &batch)?;
    validate_upstream(&cfg, &batch, &up)?;
    let train = !a.eval;
    crate::model::check_batch(&cfg, &host.norm, &batch, train)?;

    for (flag, v) in [("--clip-norm", a.clip_norm), ("--clip-value", a.clip_value)] {
        if let Some(v) = v
            && !(v.is_finite() && v >= 0.0)
        {
            return Err(Error::Invalid(format!(
                "{flag} {}: expected a finite value >= 0",
                crate::error::num(v)
            )));
        }
    }
    let links = Links {
        dropout: a.dropout,
        residual: a.residual,
    };
    if links.validate().is_err() {
        return Err(Error::Invalid(format!(
            "--dropout {}: expected a probability in [0, 1)",
            crate::error::num(a.dropout)
        )));
    }
    let ctx = open_gpu(verbose)?;
    let (precision, warning) = crate::precision::resolve(a.precision, &ctx, &host.norm)?;
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    let model = LstmModel::from_host(&ctx, host)?;
    let mut lstm = Lstm::new(ctx.clone(), model)?;
    lstm.set_precision(precision)?;
    lstm.train = train;
    lstm.set_links(links)?;
    lstm.set_dropout_step(DropoutStep {
        seed: a.dropout_seed,
        counter: a.dropout_step,
    });
    let (out, mut g) = lstm.forward_backward(&batch, &up)?;
    let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
    if precision.is_half()
        && !(finite(&g.input)
            && finite(&g.h0)
            && finite(&g.c0)
            && g.params.iter().all(|p| finite(&p.data)))
    {
        eprintln!(
            "warning: gradients are not finite: in f16-mixed the gate gradients overflow \
             at 2^16 (scale grad_output, grad_h_n and grad_c_n down, or use --precision f32)"
        );
    }
    let mut norms = Vec::new();
    if a.clip_norm.is_some() || a.clip_value.is_some() {
        let st = lstm.clip_gradients(a.clip_norm, a.clip_value)?;
        if st.nonfinite {
            eprintln!("warning: gradients are not finite; they were left unclipped");
        }
        g.params = lstm.model.grad_tensors(&ctx)?;
        norms.push(NamedTensor::new("grad_norm", vec![], vec![st.total_norm]));
        for (e, n) in lstm.model.table.entries.iter().zip(&st.per_tensor) {
            norms.push(NamedTensor::new(
                format!("grad_norm.{}", e.name),
                vec![],
                vec![*n],
            ));
        }
    }
    if verbose && let Some((f, b)) = lstm.dispatch_counts(t, n) {
        eprintln!("dispatches: forward {f}, backward {b}, in 1 submit");
    }
    let mut tensors = vec![
        NamedTensor::new("output", oshape.to_vec(), out.output),
        NamedTensor::new("h_n", sshape.to_vec(), out.h_n),
        NamedTensor::new("c_n", sshape.to_vec(), out.c_n),
        NamedTensor::new("grad.input", x.shape.clone(), g.input),
    ];
    if h0.is_some() {
        tensors.push(NamedTensor::new("grad.h0", sshape.to_vec(), g.h0));
    }
    if c0.is_some() {
        tensors.push(NamedTensor::new("grad.c0", sshape.to_vec(), g.c0));
    }
    tensors.extend(g.params);
    tensors.extend(norms);
    let mut counters = std::collections::BTreeMap::new();
    if train && lstm.model.norm.has_batch_stats() {
        tensors.extend(lstm.model.stat_tensors(&ctx)?);
        counters = lstm.model.tracked.clone();
    }
    io::write_with_counters(&a.out, &tensors, &counters, None)?;
    if verbose {
        eprintln!(
            "wrote {} tensors to {} ({})",
            tensors.len(),
            a.out.display(),
            describe(&cfg)
        );
    }
    Ok(())
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
