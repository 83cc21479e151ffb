//! The flags of `train` ([`TrainArgs`]): the library's settings
//! ([`lstm_wgpu::run::Config`]) with the command line's own (`--config`,
//! the outputs, `--dump-data`), `--config` files, and the checks of the
//! output paths.

use lstm_wgpu::error::{Error, Result};
use lstm_wgpu::io;
use lstm_wgpu::run::Config;
use lstm_wgpu::run::choice::{
    ActivationChoice, AttentionChoice, CellChoice, Dataset, HeadChoice, InitWhh, InitWih,
    MissingChoice, NormChoice, Optimizer, Schedule, Task,
};
use lstm_wgpu::run::settings::best_path;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Every setting of a run. Command-line flags override the `--config` TOML
/// file, which overrides the defaults.
#[derive(clap::Args, Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TrainArgs {
    /// TOML file with any of these settings (kebab-case keys).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Training data: a UTF-8 text file (task text) or a CSV with a header
    /// (task series). Without it, a built-in dataset is used.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// text | series. [default: series for a .csv --data or a series --dataset, else text]
    #[arg(long, hide_possible_values = true)]
    pub task: Option<Task>,
    /// Built-in dataset when no --data: text | copy (task text), sine |
    /// mackey-glass | adding (task series). [default: text, or sine for --task series]
    #[arg(long, hide_possible_values = true)]
    pub dataset: Option<Dataset>,
    /// Embedding width (text). [default: 32]
    #[arg(long)]
    pub embed: Option<usize>,
    /// Hidden units per layer. [default: 64]
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Stacked LSTM layers. [default: 2]
    #[arg(long)]
    pub layers: Option<usize>,
    /// Sequences per batch. [default: 16]
    #[arg(long)]
    pub batch: Option<usize>,
    /// Steps per window (truncated BPTT length for text). [default: 32 for text, 24 for series]
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Optimizer steps. [default: 200 (or --epochs)]
    #[arg(long)]
    pub steps: Option<usize>,
    /// Epochs (instead of --steps).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// sgd | adam | adamw | amsgrad (AdamW with AMSGrad). [default: adam]
    #[arg(long, hide_possible_values = true)]
    pub optimizer: Option<Optimizer>,
    /// Learning rate. [default: 3e-3, 0.1 for sgd]
    #[arg(long)]
    pub lr: Option<f64>,
    /// Weight decay (L2 for sgd/adam, decoupled for adamw/amsgrad). [default: 0, 1e-2 for adamw and amsgrad]
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// SGD momentum. [default: 0]
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Clip gradients to this global L2 norm before each step. [default: none]
    #[arg(long)]
    pub clip_norm: Option<f32>,
    /// A step whose gradient norm (before clipping) exceeds X counts as an
    /// explosion. [default: --clip-norm when clipping, else 10× the median
    /// of the last 100 norms]
    #[arg(long, value_name = "X")]
    pub explode_threshold: Option<f64>,
    /// Dropout probability on each layer's output but the last, in
    /// training only (as nn.LSTM's `dropout`), in [0, 1). [default: 0]
    #[arg(long)]
    pub dropout: Option<f32>,
    /// The recurrent cell: lstm (nn.LSTM) | gru (nn.GRU: gates r, z, n;
    /// no cell state) | indrnn (IndRNN: h' = act(W_ih x + u ⊙ h + b)).
    /// [default: lstm]
    #[arg(long, hide_possible_values = true)]
    pub cell: Option<CellChoice>,
    /// A cell written in WGSL instead of --cell (the form of
    /// shaders/cells/*.wgsl; see `lstm-wgpu check-cell`). Its source is
    /// stored in the run's settings and checkpoints.
    #[arg(long, value_name = "PATH", conflicts_with = "cell")]
    pub cell_file: Option<PathBuf>,
    /// IndRNN's activation: relu | tanh. [default: relu]
    #[arg(long, hide_possible_values = true)]
    pub activation: Option<ActivationChoice>,
    /// Weight-drop (DropConnect, AWD-LSTM) on every W_hh in [0, 1): one mask
    /// per (layer, direction) and training step, inverted scaling;
    /// validation and inference use W_hh as it is. [default: 0]
    #[arg(long, value_name = "P")]
    pub weight_drop: Option<f32>,
    /// Zoneout of h in [0, 1) (Krueger et al. 2016): in training each unit
    /// keeps its previous h with probability P, a mask per step and
    /// sequence; validation and inference use the expectation
    /// P·prev + (1 − P)·new. [default: 0]
    #[arg(long, value_name = "P")]
    pub zoneout_h: Option<f32>,
    /// Zoneout of c likewise (LSTM cells). [default: 0]
    #[arg(long, value_name = "P")]
    pub zoneout_c: Option<f32>,
    /// LSTM projections (nn.LSTM's proj_size): each layer's h is
    /// W_hr (o ⊙ tanh c), P wide, 0 < P < --hidden; the head reads P (D·P)
    /// features. The LSTM cell in f32, without norms, zoneout or
    /// weight-drop. [default: none]
    #[arg(long, value_name = "P")]
    pub proj_size: Option<usize>,
    /// Residual connections around layers 1.. (output = layer(x) + x).
    #[arg(long)]
    #[serde(default)]
    pub residual: bool,
    /// What a series model's head reads: last (the last valid step's
    /// output) | attention (attention pooling over the valid steps: the
    /// head reads [context; last output]; see --attention). [default: last]
    #[arg(long, hide_possible_values = true)]
    pub head: Option<HeadChoice>,
    /// The scores of --head attention: dot (s_t = h_t · h_T, each output
    /// against the last) | learned (s_t = q · h_t, a trained query q).
    /// [default: dot]
    #[arg(long, hide_possible_values = true)]
    pub attention: Option<AttentionChoice>,
    /// Normalization: none | layer | layer-cell | batch | step-batch |
    /// recurrent-batch (see docs/math.md, "Normalization variants"). [default: none]
    #[arg(long, hide_possible_values = true)]
    pub norm: Option<NormChoice>,
    /// Between-layer norms (layer, batch, step-batch): normalize the last
    /// layer's output too.
    #[arg(long)]
    #[serde(default)]
    pub norm_last: bool,
    /// Rows of running statistics of step-batch and recurrent-batch (the
    /// longest training sequence). [default: --seq-len]
    #[arg(long)]
    pub norm_t_max: Option<usize>,
    /// W_hh initialisation: uniform (PyTorch's U(±1/√H)) | orthogonal (each
    /// gate's H×H block). [default: uniform]
    #[arg(long, hide_possible_values = true)]
    pub init_whh: Option<InitWhh>,
    /// W_ih initialisation: uniform (PyTorch's U(±1/√H)) | xavier
    /// (U(±√(6/(I+4H)))). [default: uniform]
    #[arg(long, hide_possible_values = true)]
    pub init_wih: Option<InitWih>,
    /// Forget-gate bias: bias_ih[H..2H) = F and bias_hh[H..2H) = 0, so
    /// their sum is F. [default: none: as initialised]
    #[arg(long)]
    pub forget_bias: Option<f32>,
    /// Adding problem: random sequence lengths in [N, --seq-len] per
    /// sequence (variable-length batches). [default: none: every sequence --seq-len long]
    #[arg(long)]
    pub min_len: Option<usize>,
    /// constant | cosine (linear warmup + cosine decay) | step. [default: constant]
    #[arg(long, hide_possible_values = true)]
    pub schedule: Option<Schedule>,
    /// Warmup steps of the cosine schedule. [default: 0]
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Step schedule: multiply the rate by --gamma every --step-size steps. [default: 100]
    #[arg(long)]
    pub step_size: Option<usize>,
    /// Step schedule factor. [default: 0.5]
    #[arg(long)]
    pub gamma: Option<f64>,
    /// Seed of the initial weights and of shuffling. [default: 0]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Precision of the passes: f32 (default), f16-mixed (f16 weights and
    /// gate cache, f32 accumulation, state, gradients and master weights;
    /// needs SHADER_F16 and a plain cell) or auto (f16-mixed where
    /// possible, else f32 with a warning). A resumed run keeps its
    /// checkpoint's precision unless this is given. Command line only.
    #[serde(skip)]
    #[arg(long, value_name = "P", value_parser = lstm_wgpu::model::precision::PrecisionChoice::parse)]
    pub precision: Option<lstm_wgpu::model::precision::PrecisionChoice>,
    /// Dynamic loss scaling as torch.amp.GradScaler: `dynamic` (from
    /// 65536; the default in f16-mixed), `off` (the default in f32), or an
    /// initial scale. The scale is doubled after 2000 finite steps in a row
    /// and halved on a step with non-finite gradients, which is skipped.
    /// Command line only; a resumed run keeps its checkpoint's scaler and
    /// its state unless this is given (or the precision changes).
    #[serde(skip)]
    #[arg(long, value_name = "S", default_value = "default", hide_default_value = true, value_parser = parse_loss_scale)]
    pub loss_scale: lstm_wgpu::model::precision::LossScaleChoice,
    /// Start from these weights (`embedding.weight`, `lstm.*`, `head.*`).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// No shuffling of series windows (text is always in stream order).
    #[arg(long)]
    #[serde(default)]
    pub deterministic_order: bool,
    /// Fraction of the data, from the end, held out for validation. [default: 0.1]
    #[arg(long)]
    pub val_fraction: Option<f64>,
    /// Series: the last F of the rows, after the validation rows, held out
    /// as a test split scored at the end with the final weights and the
    /// best validation's (see docs/commands.md, "Test split"). [default: 0: none]
    #[arg(long, value_name = "F")]
    pub test_fraction: Option<f64>,
    /// Validate every N steps (and at the end). [default: 50]
    #[arg(long)]
    pub val_every: Option<usize>,
    /// Stop after this many validations without improvement (keeping the
    /// best checkpoint as `<checkpoint>.best`). [default: none: no early stop]
    #[arg(long)]
    pub patience: Option<usize>,
    /// Series: feature columns (comma-separated; default all numeric). [default: the numeric columns that are not time-like]
    #[arg(long)]
    pub features: Option<String>,
    /// Series: target column (default the last numeric one). [default: the last default feature]
    #[arg(long)]
    pub target: Option<String>,
    /// Series: values predicted per window. [default: 1]
    #[arg(long)]
    pub horizon: Option<usize>,
    /// Series: missing cells (empty, NA, NaN, null) of the chosen columns:
    /// error | drop (the row) | ffill (the value above) | interpolate
    /// (linear; the nearest value at either end). Default error. [default: error]
    #[arg(long, hide_possible_values = true)]
    pub missing: Option<MissingChoice>,
    /// Series: the time column that labels rows in `predict` (default: a
    /// non-numeric first column, else the first time-like column). It is
    /// not a feature unless named in --features.
    #[arg(long)]
    pub time: Option<String>,
    /// JSONL metrics file.
    #[arg(long)]
    pub metrics: Option<PathBuf>,
    /// Checkpoint written at every validation and at the end.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Continue the run saved in this checkpoint.
    #[arg(long)]
    #[serde(skip)]
    pub resume: Option<PathBuf>,
    /// Loss-curve plot (SVG), with a gradient-norm panel (log scale).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Log-scale loss axis in the --plot.
    #[arg(long)]
    #[serde(default)]
    pub plot_log: bool,
    /// TensorBoard event files in this directory (created if missing):
    /// the metrics file's values as scalars, for `tensorboard --logdir`.
    #[arg(long, value_name = "DIR")]
    pub tensorboard: Option<PathBuf>,
    /// Histograms of every parameter and gradient and of each layer's h, c
    /// and gates every N steps, into --metrics and --tensorboard (0: off).
    /// [default: 50 with --metrics or --tensorboard where the model allows,
    /// else off]
    #[arg(long, value_name = "N")]
    pub hist_every: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    #[serde(default)]
    pub no_progress: bool,
    /// Under mpirun or --devices: a rank that hears nothing from a peer
    /// within SECS during a gradient or validation sum names the silent
    /// ranks and stops the job (0: wait forever); under --devices a wait
    /// for the GPU longer than SECS fails too (a hung driver), so the
    /// command ends. No effect in a single process. [default: 600]
    #[arg(long, value_name = "SECS")]
    #[serde(skip)]
    pub mpi_timeout: Option<u64>,
    /// Data parallelism in one process: one rank (a thread) per adapter,
    /// `all` (every GPU of the primary backends, else every CPU adapter)
    /// or a comma-separated list of `--device` entries (one may repeat);
    /// each trains its share of every batch, as under mpirun. Not with
    /// `--device`, nor under mpirun.
    #[arg(long, value_name = "all|N|NAME[,…]")]
    #[serde(skip)]
    pub devices: Option<String>,
    /// Data parallelism (mpirun, --devices): the gradient MiB a bucket
    /// gathers before it is summed over the ranks. Each bucket is summed
    /// as soon as backward has made it final, while the GPU runs the rest
    /// of backward; 0 sums each layer's alone, a size above the model's
    /// gradients sums them all after backward. The figures do not depend
    /// on it. [default: 1]
    #[arg(long, value_name = "MB")]
    #[serde(skip)]
    pub bucket_mb: Option<f64>,
    /// Stop after this many steps (counting from the run's start), writing
    /// the checkpoint, as if interrupted; `--resume` then finishes the run.
    #[arg(long)]
    #[serde(skip)]
    pub stop_after: Option<usize>,
    /// Write the exact data this run would train and validate on to FILE
    /// and exit without training (no GPU needed): text → the UTF-8 text;
    /// sine, mackey-glass or a CSV → a CSV of the chosen columns; copy,
    /// adding → safetensors with every training step's batch and the
    /// validation batches.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub dump_data: Option<PathBuf>,
}

macro_rules! merge {
    ($dst:ident, $src:ident, $($f:ident),*) => { $( if $dst.$f.is_none() { $dst.$f = $src.$f.clone(); } )* };
}

impl TrainArgs {
    pub(crate) fn merge_from(&mut self, o: &TrainArgs) {
        merge!(
            self,
            o,
            data,
            task,
            dataset,
            embed,
            hidden,
            layers,
            batch,
            seq_len,
            steps,
            epochs,
            optimizer,
            lr,
            weight_decay,
            momentum,
            clip_norm,
            explode_threshold,
            dropout,
            weight_drop,
            zoneout_h,
            zoneout_c,
            proj_size,
            cell,
            cell_file,
            activation,
            head,
            attention,
            norm,
            norm_t_max,
            init_whh,
            init_wih,
            forget_bias,
            min_len,
            schedule,
            warmup,
            step_size,
            gamma,
            seed,
            init,
            val_fraction,
            test_fraction,
            val_every,
            patience,
            features,
            target,
            horizon,
            missing,
            time,
            metrics,
            checkpoint,
            plot,
            tensorboard,
            hist_every
        );
        self.deterministic_order |= o.deterministic_order;
        self.residual |= o.residual;
        self.norm_last |= o.norm_last;
        self.no_progress |= o.no_progress;
        self.plot_log |= o.plot_log;
    }
}

impl TrainArgs {
    /// The run's settings as the library takes them: every setting but
    /// the command line's own (`--config`, the outputs besides the
    /// checkpoint, `--no-progress`, `--dump-data`).
    pub(crate) fn run_config(&self) -> Config {
        Config {
            data: self.data.clone(),
            task: self.task,
            dataset: self.dataset,
            embed: self.embed,
            hidden: self.hidden,
            layers: self.layers,
            batch: self.batch,
            seq_len: self.seq_len,
            steps: self.steps,
            epochs: self.epochs,
            optimizer: self.optimizer,
            lr: self.lr,
            weight_decay: self.weight_decay,
            momentum: self.momentum,
            clip_norm: self.clip_norm,
            explode_threshold: self.explode_threshold,
            dropout: self.dropout,
            cell: self.cell,
            cell_file: self.cell_file.clone(),
            activation: self.activation,
            weight_drop: self.weight_drop,
            zoneout_h: self.zoneout_h,
            zoneout_c: self.zoneout_c,
            proj_size: self.proj_size,
            head: self.head,
            attention: self.attention,
            residual: self.residual,
            norm: self.norm,
            norm_last: self.norm_last,
            norm_t_max: self.norm_t_max,
            init_whh: self.init_whh,
            init_wih: self.init_wih,
            forget_bias: self.forget_bias,
            min_len: self.min_len,
            schedule: self.schedule,
            warmup: self.warmup,
            step_size: self.step_size,
            gamma: self.gamma,
            seed: self.seed,
            precision: self.precision,
            loss_scale: self.loss_scale,
            init: self.init.clone(),
            deterministic_order: self.deterministic_order,
            val_fraction: self.val_fraction,
            test_fraction: self.test_fraction,
            val_every: self.val_every,
            patience: self.patience,
            features: self.features.clone(),
            target: self.target.clone(),
            horizon: self.horizon,
            missing: self.missing,
            time: self.time.clone(),
            checkpoint: self.checkpoint.clone(),
            resume: self.resume.clone(),
            hist_every: self.hist_every,
            stop_after: self.stop_after,
            bucket_mb: self.bucket_mb,
        }
    }
}

pub(crate) fn parse_loss_scale(
    s: &str,
) -> std::result::Result<lstm_wgpu::model::precision::LossScaleChoice, String> {
    match s {
        "default" => Ok(Default::default()),
        _ => lstm_wgpu::model::precision::LossScaleChoice::parse(s),
    }
}

/// Checks every output path of `train` before anything runs (see
/// [`io::check_output`] and, for `--tensorboard`, [`io::check_output_dir`]). The checkpoint may be the `--resume` file: that
/// is how a run continues in place.
pub(crate) fn check_outputs(a: &TrainArgs) -> Result<()> {
    let mut inputs: Vec<&Path> = [&a.data, &a.config, &a.init]
        .into_iter()
        .filter_map(|p| p.as_deref())
        .collect();
    if let Some(p) = &a.checkpoint {
        io::check_output(p, "--checkpoint", &inputs)?;
        io::check_output(&best_path(p), "--checkpoint (its .best)", &inputs)?;
    }
    inputs.extend(a.resume.as_deref());
    for (flag, p) in [
        ("--metrics", &a.metrics),
        ("--plot", &a.plot),
        ("--dump-data", &a.dump_data),
    ] {
        if let Some(p) = p {
            io::check_output(p, flag, &inputs)?;
        }
    }
    if let Some(d) = &a.tensorboard {
        io::check_output_dir(d, "--tensorboard")?;
    }
    if let Some(n) = a.hist_every.filter(|&n| n > 0)
        && a.metrics.is_none()
        && a.tensorboard.is_none()
    {
        return Err(Error::Invalid(format!(
            "--hist-every {n}: histograms go to --metrics or --tensorboard; give one of them"
        )));
    }
    // Two outputs at one file would overwrite each other.
    let best = a.checkpoint.as_deref().map(best_path);
    let outputs: Vec<(&str, &Path)> = [
        ("--checkpoint", a.checkpoint.as_deref()),
        ("--checkpoint (its .best)", best.as_deref()),
        ("--metrics", a.metrics.as_deref()),
        ("--plot", a.plot.as_deref()),
        ("--dump-data", a.dump_data.as_deref()),
        ("--tensorboard", a.tensorboard.as_deref()),
    ]
    .into_iter()
    .filter_map(|(f, p)| p.map(|p| (f, p)))
    .collect();
    for (i, (flag, p)) in outputs.iter().enumerate() {
        for (other, q) in &outputs[..i] {
            if io::same_output(p, q)? {
                return Err(Error::file(
                    p,
                    format!("{flag}: is also the {other} output; give each output its own file"),
                ));
            }
        }
    }
    Ok(())
}
