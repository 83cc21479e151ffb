//! The settings of a run: flags, `--config`, defaults, checks, and what a
//! resumed run may change.

use crate::cli::choice::{
    ActivationChoice, AttentionChoice, CellChoice, Dataset, HeadChoice, InitWhh, InitWih,
    MissingChoice, NormChoice, Optimizer, Schedule, Task,
};
use crate::cli::env::host_budget;
use lstm_wgpu::error::{Error, Result, num};
use lstm_wgpu::io;
use lstm_wgpu::kernels::optim::{OptimConfig, OptimKind};
use lstm_wgpu::model::norm::{Norm, NormKind};
use lstm_wgpu::train::InitOptions;
use lstm_wgpu::train::lr::LrSchedule;
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
    /// Under mpirun: a rank that hears nothing from a peer within SECS
    /// during a gradient or validation sum names the silent ranks and
    /// stops the job (0: wait forever). No effect in a single process.
    /// [default: 600]
    #[arg(long, value_name = "SECS")]
    #[serde(skip)]
    pub mpi_timeout: Option<u64>,
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

/// The resolved settings of a run (stored in checkpoints).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct RunConfig {
    pub(crate) task: Task,
    pub(crate) data: Option<PathBuf>,
    pub(crate) dataset: Dataset,
    pub(crate) embed: usize,
    pub(crate) hidden: usize,
    pub(crate) layers: usize,
    pub(crate) batch: usize,
    pub(crate) seq_len: usize,
    pub(crate) optimizer: Optimizer,
    pub(crate) lr: f64,
    pub(crate) weight_decay: f64,
    pub(crate) momentum: f64,
    pub(crate) clip_norm: Option<f32>,
    pub(crate) schedule: Schedule,
    pub(crate) warmup: usize,
    pub(crate) step_size: usize,
    pub(crate) gamma: f64,
    pub(crate) seed: u64,
    pub(crate) deterministic_order: bool,
    pub(crate) val_fraction: f64,
    pub(crate) val_every: usize,
    pub(crate) patience: Option<usize>,
    pub(crate) features: Option<String>,
    pub(crate) target: Option<String>,
    pub(crate) horizon: usize,
    /// The run's length in steps (the cosine schedule spans it).
    pub(crate) steps: usize,
    // Later settings default to what runs without them did, so older
    // checkpoints still load.
    #[serde(default)]
    pub(crate) dropout: f32,
    #[serde(default)]
    pub(crate) residual: bool,
    #[serde(default)]
    pub(crate) norm: NormChoice,
    #[serde(default)]
    pub(crate) norm_last: bool,
    #[serde(default)]
    pub(crate) norm_t_max: usize,
    #[serde(default)]
    pub(crate) init_whh: InitWhh,
    #[serde(default)]
    pub(crate) init_wih: InitWih,
    #[serde(default)]
    pub(crate) forget_bias: Option<f32>,
    #[serde(default)]
    pub(crate) min_len: Option<usize>,
    #[serde(default)]
    pub(crate) missing: MissingChoice,
    #[serde(default)]
    pub(crate) time: Option<String>,
    /// None: the clip norm, or the running median (see
    /// `lstm_wgpu::train::health`).
    #[serde(default)]
    pub(crate) explode_threshold: Option<f64>,
    /// None: the default ([`DEFAULT_HIST_EVERY`] where an output and the
    /// model allow, else off); 0: off.
    #[serde(default)]
    pub(crate) hist_every: Option<u64>,
    /// 0: no test split (then not written, so such a run's settings
    /// read as before).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) test_fraction: f64,
    /// The LSTM's is not written, so such a run's settings read as before.
    #[serde(default, skip_serializing_if = "is_lstm")]
    pub(crate) cell: CellChoice,
    /// 0: none (then not written, as `test_fraction`).
    #[serde(default, skip_serializing_if = "is_zero_f32")]
    pub(crate) weight_drop: f32,
    /// Zoneout of h and of c; 0: none (then not written).
    #[serde(default, skip_serializing_if = "is_zero_f32")]
    pub(crate) zoneout_h: f32,
    #[serde(default, skip_serializing_if = "is_zero_f32")]
    pub(crate) zoneout_c: f32,
    /// IndRNN's; written only when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) activation: Option<ActivationChoice>,
    /// The name of the `--cell-file` (instead of `cell`), and its source,
    /// so that the run resumes and infers without the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cell_file: Option<String>,
    /// See `cell_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cell_source: Option<String>,
    /// The last step's is not written, so such a run's settings read as
    /// before.
    #[serde(default, skip_serializing_if = "is_last")]
    pub(crate) head: HeadChoice,
    /// The scores of `--head attention` (written with it only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) attention: Option<AttentionChoice>,
    /// The LSTM's projection size P; 0: none (then not written).
    #[serde(default, skip_serializing_if = "is_zero_usize")]
    pub(crate) proj_size: usize,
}

/// The cell of run `c`: its `--cell` (and activation), or the cell file
/// its settings hold.
pub(crate) fn run_cell(c: &RunConfig) -> Result<lstm_wgpu::Cell> {
    match (&c.cell_file, &c.cell_source) {
        (Some(name), Some(src)) => lstm_wgpu::Cell::from_wgsl(name, src),
        (None, None) => Ok(c.cell.cell(c.activation.unwrap_or_default())),
        _ => Err(Error::Invalid(
            "cell-file and cell-source are stored together or not at all".into(),
        )),
    }
}

fn is_zero_f32(x: &f32) -> bool {
    *x == 0.0
}

fn is_zero_usize(x: &usize) -> bool {
    *x == 0
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

fn is_last(h: &HeadChoice) -> bool {
    *h == HeadChoice::Last
}

fn is_lstm(c: &CellChoice) -> bool {
    *c == CellChoice::Lstm
}

/// Steps between histograms when --hist-every is not given.
pub(crate) const DEFAULT_HIST_EVERY: u64 = 50;

/// Steps between histograms (0: none) of run `c`: none without an output
/// to write them to (a resumed run's stored value included); else its
/// --hist-every, or the default.
pub(crate) fn hist_every(a: &TrainArgs, c: &RunConfig) -> u64 {
    if a.metrics.is_none() && a.tensorboard.is_none() {
        return 0;
    }
    c.hist_every.unwrap_or(DEFAULT_HIST_EVERY)
}

/// The [`Norm`] a run's settings describe.
pub(crate) fn norm_of(c: &RunConfig) -> Norm {
    lstm_wgpu::infer::norm_of(c.norm.kind(), c.norm_last, c.norm_t_max)
}

/// The initialisation options of a run's settings.
pub(crate) fn init_of(c: &RunConfig) -> InitOptions {
    InitOptions {
        whh: c.init_whh.into(),
        wih: c.init_wih.into(),
        forget_bias: c.forget_bias,
    }
}

pub(crate) fn resolve(a: &TrainArgs) -> Result<RunConfig> {
    let task = a.task.unwrap_or(match (a.dataset, &a.data) {
        (Some(d), _) => d.task(),
        (None, Some(p)) if is_csv(p) => Task::Series,
        _ => Task::Text,
    });
    let dataset = a.dataset.unwrap_or(match task {
        Task::Series => Dataset::Sine,
        Task::Text => Dataset::Text,
    });
    let optimizer = a.optimizer.unwrap_or_default();
    let seq_len = a.seq_len.unwrap_or(match task {
        Task::Text => 32,
        Task::Series => 24,
    });
    let c = RunConfig {
        task,
        data: a.data.clone(),
        dataset,
        embed: a.embed.unwrap_or(32),
        hidden: a.hidden.unwrap_or(64),
        layers: a.layers.unwrap_or(2),
        batch: a.batch.unwrap_or(16),
        seq_len,
        lr: a.lr.unwrap_or(if optimizer == Optimizer::Sgd {
            0.1
        } else {
            3e-3
        }),
        weight_decay: a
            .weight_decay
            .unwrap_or(if optimizer.decoupled() { 1e-2 } else { 0.0 }),
        momentum: a.momentum.unwrap_or(0.0),
        optimizer,
        clip_norm: a.clip_norm,
        schedule: a.schedule.unwrap_or_default(),
        warmup: a.warmup.unwrap_or(0),
        step_size: a.step_size.unwrap_or(100),
        gamma: a.gamma.unwrap_or(0.5),
        seed: a.seed.unwrap_or(0),
        deterministic_order: a.deterministic_order,
        val_fraction: a.val_fraction.unwrap_or(0.1),
        val_every: a.val_every.unwrap_or(50),
        patience: a.patience,
        features: a.features.clone(),
        target: a.target.clone(),
        horizon: a.horizon.unwrap_or(1),
        steps: 0,
        dropout: a.dropout.unwrap_or(0.0),
        residual: a.residual,
        norm: a.norm.unwrap_or_default(),
        norm_last: a.norm_last,
        norm_t_max: a.norm_t_max.unwrap_or(seq_len),
        init_whh: a.init_whh.unwrap_or_default(),
        init_wih: a.init_wih.unwrap_or_default(),
        forget_bias: a.forget_bias,
        min_len: a.min_len,
        missing: a.missing.unwrap_or_default(),
        time: a.time.clone(),
        explode_threshold: a.explode_threshold,
        hist_every: a.hist_every,
        test_fraction: a.test_fraction.unwrap_or(0.0),
        cell: a.cell.unwrap_or_default(),
        weight_drop: a.weight_drop.unwrap_or(0.0),
        zoneout_h: a.zoneout_h.unwrap_or(0.0),
        zoneout_c: a.zoneout_c.unwrap_or(0.0),
        activation: a.activation,
        cell_file: None,
        cell_source: None,
        head: a.head.unwrap_or_default(),
        attention: match a.head {
            Some(HeadChoice::Attention) => Some(a.attention.unwrap_or_default()),
            _ => a.attention,
        },
        proj_size: a.proj_size.unwrap_or(0),
    };
    if a.proj_size == Some(0) {
        return Err(Error::Invalid(
            "--proj-size 0: a projection is at least 1 wide (leave the flag out for none)".into(),
        ));
    }
    let mut c = c;
    if let Some(p) = &a.cell_file {
        // A --config file may name the other.
        if let Some(cell) = a.cell {
            return Err(Error::Invalid(format!(
                "--cell {cell} and --cell-file {}: give one",
                p.display()
            )));
        }
        let f = crate::cli::choice::CellFile::read(p)?;
        c.cell_file = Some(f.name);
        c.cell_source = Some(f.source);
    }
    validate_config(&c)?;
    Ok(c)
}

/// The data of run `c`: its path, or `built-in <dataset>`.
pub(crate) fn describe_data(c: &RunConfig) -> String {
    c.data
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| format!("built-in {}", c.dataset))
}

/// Whether a data path names a CSV file (by its extension).
pub(crate) fn is_csv(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

/// Checks a run's settings, from the command line ([`resolve`]) or from a
/// checkpoint (`--resume`, `generate`, `predict`): the errors name the
/// setting as its flag.
pub(crate) fn validate_config(c: &RunConfig) -> Result<()> {
    if c.dataset.task() != c.task && c.data.is_none() {
        return Err(Error::Invalid(format!(
            "--dataset {} does not fit --task {}",
            c.dataset, c.task
        )));
    }
    for (flag, p) in [("--dropout", c.dropout), ("--weight-drop", c.weight_drop)] {
        if !(p.is_finite() && (0.0..1.0).contains(&p)) {
            return Err(Error::Invalid(format!(
                "{flag} {}: expected a probability in [0, 1)",
                num(p)
            )));
        }
    }
    let cell = c.cell.cell(c.activation.unwrap_or_default());
    crate::cli::choice::check_zoneout(c.zoneout_h, c.zoneout_c, cell, c.norm.kind())?;
    if c.weight_drop > 0.0
        && let Some(k @ (NormKind::LayerCell | NormKind::RecurrentBatch)) = c.norm.kind()
    {
        return Err(Error::Invalid(format!(
            "--weight-drop with --norm {}: the normalized cells read W_hh themselves; \
             weight-drop serves the plain cells",
            NormChoice::from_kind(k)
        )));
    }
    if let Some(f) = c.forget_bias
        && !f.is_finite()
    {
        return Err(Error::Invalid(format!(
            "--forget-bias {}: expected a finite number",
            num(f)
        )));
    }
    match (c.head, c.attention) {
        (HeadChoice::Last, Some(s)) => {
            return Err(Error::Invalid(format!(
                "--attention {s} sets the scores of --head attention; the head is last"
            )));
        }
        (HeadChoice::Attention, None) => {
            return Err(Error::Invalid(
                "--head attention without --attention (dot or learned)".into(),
            ));
        }
        (HeadChoice::Attention, Some(_)) if c.task != Task::Series => {
            return Err(Error::Invalid(format!(
                "--head attention pools a series model's outputs into its one prediction; \
                 --task {} predicts at every step",
                c.task
            )));
        }
        _ => {}
    }
    if c.residual && c.layers < 2 {
        return Err(Error::Invalid(
            "--residual connects stacked layers: it needs --layers 2 or more".into(),
        ));
    }
    if let Some(name) = &c.cell_file {
        let cell = run_cell(c)?;
        let refuse = |what: &str| {
            Err(Error::Invalid(format!(
                "{what}; --cell-file {name} is a cell of its own"
            )))
        };
        if c.activation.is_some() {
            return refuse("--activation sets IndRNN's activation");
        }
        if c.forget_bias.is_some() {
            return refuse("--forget-bias sets the LSTM's forget gate");
        }
        if let Some(NormKind::LayerCell | NormKind::RecurrentBatch) = c.norm.kind() {
            return refuse(&format!(
                "--norm {}: the normalized cells are LSTM cells (a cell file takes a norm \
                 between layers: layer, batch, step-batch)",
                c.norm
            ));
        }
        if cell.diag() && c.init_whh == InitWhh::Orthogonal {
            return refuse("--init-whh orthogonal: its W_hh is a vector u, not a matrix");
        }
    }
    check_proj(c)?;
    c.cell.check_activation(c.activation)?;
    if c.cell == CellChoice::Indrnn && c.init_whh == InitWhh::Orthogonal {
        return Err(Error::Invalid(
            "--init-whh orthogonal: IndRNN's W_hh is a vector u, not a matrix".into(),
        ));
    }
    if c.cell != CellChoice::Lstm {
        let cell = c.cell.name();
        if c.forget_bias.is_some() {
            return Err(Error::Invalid(format!(
                "--forget-bias sets the LSTM's forget gate; --cell {cell} has none"
            )));
        }
        if let Some(NormKind::LayerCell | NormKind::RecurrentBatch) = c.norm.kind() {
            return Err(Error::Invalid(format!(
                "--norm {}: the normalized cells are LSTM cells; --cell {cell} takes a norm \
                 between layers (layer, batch, step-batch) only",
                c.norm
            )));
        }
    }
    if let Some(m) = c.min_len {
        if c.task != Task::Series || c.dataset != Dataset::Adding || c.data.is_some() {
            return Err(Error::Invalid(
                "--min-len: variable lengths are available for the built-in adding dataset \
                 (--dataset adding) only"
                    .into(),
            ));
        }
        if m < 2 || m > c.seq_len.max(2) {
            return Err(Error::Invalid(format!(
                "--min-len {m}: expected a length in 2..={} (--seq-len)",
                c.seq_len.max(2)
            )));
        }
    }
    for (name, v) in [
        ("--embed", c.embed),
        ("--hidden", c.hidden),
        ("--layers", c.layers),
        ("--batch", c.batch),
        ("--seq-len", c.seq_len),
        ("--val-every", c.val_every),
        ("--horizon", c.horizon),
    ] {
        if v == 0 {
            return Err(Error::Invalid(format!("{name} must be at least 1")));
        }
    }
    // After --seq-len, its default.
    if c.norm_t_max == 0 {
        return Err(Error::Invalid("--norm-t-max must be at least 1".into()));
    }
    if c.patience == Some(0) {
        return Err(Error::Invalid(
            "--patience must be at least 1 (validations without improvement)".into(),
        ));
    }
    if c.task != Task::Series || c.data.is_none() {
        for (flag, set) in [
            ("--missing", c.missing != MissingChoice::Error),
            ("--time", c.time.is_some()),
            ("--features", c.features.is_some()),
            ("--target", c.target.is_some()),
        ] {
            if set {
                return Err(Error::Invalid(format!(
                    "{flag} applies to series runs on a CSV (--task series --data FILE.csv)"
                )));
            }
        }
    }
    if !(0.0..1.0).contains(&c.val_fraction) {
        return Err(Error::Invalid(format!(
            "--val-fraction {}: expected a value in [0, 1)",
            num(c.val_fraction)
        )));
    }
    if !(0.0..1.0).contains(&c.test_fraction) {
        return Err(Error::Invalid(format!(
            "--test-fraction {}: expected a value in [0, 1)",
            num(c.test_fraction)
        )));
    }
    if c.test_fraction > 0.0
        && (c.task != Task::Series || c.dataset == Dataset::Adding && c.data.is_none())
    {
        return Err(Error::Invalid(
            "--test-fraction applies to series runs on a CSV, sine or mackey-glass".into(),
        ));
    }
    if let Some(n) = c.clip_norm
        && !(n.is_finite() && n >= 0.0)
    {
        return Err(Error::Invalid(format!(
            "--clip-norm {}: expected a finite number >= 0",
            num(n)
        )));
    }
    if let Some(x) = c.explode_threshold
        && !(x.is_finite() && x > 0.0)
    {
        return Err(Error::Invalid(format!(
            "--explode-threshold {}: expected a finite number > 0",
            num(x)
        )));
    }
    for (flag, v) in [
        ("--lr", c.lr),
        ("--weight-decay", c.weight_decay),
        ("--momentum", c.momentum),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(Error::Invalid(format!(
                "{flag} {}: expected a finite number >= 0",
                num(v)
            )));
        }
    }
    // Checked whatever the schedule: a stored value is a value.
    if c.step_size == 0 {
        return Err(Error::Invalid("--step-size must be at least 1".into()));
    }
    if !(c.gamma.is_finite() && c.gamma >= 0.0) {
        return Err(Error::Invalid(format!(
            "--gamma {}: expected a finite number >= 0",
            num(c.gamma)
        )));
    }
    optim_config(c)?;
    schedule_of(c, c.steps).validate()
}

/// Refuses a schedule flag given for a schedule that does not use it
/// (`--warmup` is cosine's, `--step-size` and `--gamma` step's): a flag
/// silently ignored would look applied.
pub(crate) fn check_schedule_flags(a: &TrainArgs, schedule: Schedule) -> Result<()> {
    for (flag, given, owner) in [
        ("--warmup", a.warmup.is_some(), Schedule::Cosine),
        ("--step-size", a.step_size.is_some(), Schedule::Step),
        ("--gamma", a.gamma.is_some(), Schedule::Step),
    ] {
        if given && schedule != owner {
            return Err(Error::Invalid(format!(
                "{flag} applies to --schedule {owner}, but the schedule is {schedule}"
            )));
        }
    }
    Ok(())
}

pub(crate) fn optim_config(c: &RunConfig) -> Result<OptimConfig> {
    let mut o = match c.optimizer {
        Optimizer::Sgd => OptimConfig::sgd(),
        Optimizer::Adam => OptimConfig::adam(),
        Optimizer::Adamw | Optimizer::Amsgrad => OptimConfig::adamw(),
    };
    o.lr = c.lr;
    o.weight_decay = c.weight_decay;
    if o.kind == OptimKind::Sgd {
        o.momentum = c.momentum;
    }
    o.amsgrad = c.optimizer == Optimizer::Amsgrad;
    o.validate()?;
    Ok(o)
}

pub(crate) fn schedule_of(c: &RunConfig, total: usize) -> LrSchedule {
    match c.schedule {
        Schedule::Cosine => LrSchedule::WarmupCosine {
            warmup: c.warmup,
            total,
            min_lr: 0.0,
        },
        Schedule::Step => LrSchedule::Step {
            step_size: c.step_size,
            gamma: c.gamma,
        },
        Schedule::Constant => LrSchedule::Constant,
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

/// What `--proj-size` cannot go with, refused by name: another cell than
/// the LSTM, a P not below `--hidden`, a norm, zoneout, weight-drop.
fn check_proj(c: &RunConfig) -> Result<()> {
    let p = c.proj_size;
    if p == 0 {
        return Ok(());
    }
    let refuse = |why: String| Err(Error::Invalid(format!("--proj-size {p}: {why}")));
    if let Some(name) = &c.cell_file {
        return refuse(format!(
            "projections serve the LSTM cell; --cell-file {name} is a cell of its own"
        ));
    }
    if c.cell != CellChoice::Lstm {
        return refuse(format!(
            "projections serve the LSTM cell; --cell {} has none",
            c.cell
        ));
    }
    if p >= c.hidden {
        return refuse(format!(
            "must be below --hidden {} (0 < P < H, as nn.LSTM)",
            c.hidden
        ));
    }
    if c.norm != NormChoice::None {
        return refuse(format!(
            "an LSTM with projections takes no --norm ({})",
            c.norm
        ));
    }
    for (flag, v) in [
        ("--zoneout-h", c.zoneout_h),
        ("--zoneout-c", c.zoneout_c),
        ("--weight-drop", c.weight_drop),
    ] {
        if v > 0.0 {
            return refuse(format!("an LSTM with projections does not take {flag}"));
        }
    }
    Ok(())
}

/// On `--resume`: a run of a cell file keeps it (by name and content), a
/// run of a built-in cell takes none.
fn check_cell_file(x: &TrainArgs, c: &RunConfig, from: Option<&Path>) -> Result<()> {
    let from = from
        .map(|p| format!(" (from {})", p.display()))
        .unwrap_or_default();
    let stored = match &c.cell_file {
        Some(n) => format!("cell file {n}"),
        None => format!("cell {}", c.cell),
    };
    let refuse = |given: String| {
        Err(Error::Invalid(format!(
            "{given}{from} cannot change on --resume (the checkpoint has {stored})"
        )))
    };
    match (&x.cell_file, &c.cell_file) {
        (Some(p), None) => return refuse(format!("--cell-file {}", p.display())),
        (Some(p), Some(name)) => {
            let f = crate::cli::choice::CellFile::read(p)?;
            if &f.name != name {
                return refuse(format!("--cell-file {}", p.display()));
            }
            if Some(&f.source) != c.cell_source.as_ref() {
                return refuse(format!(
                    "--cell-file {} (its source differs from the stored one)",
                    p.display()
                ));
            }
        }
        (None, _) => {}
    }
    match (x.cell, &c.cell_file) {
        (Some(cell), Some(_)) => refuse(format!("--cell {cell}")),
        _ => Ok(()),
    }
}

/// On `--resume`, refuses a setting of `x` that would change the model or
/// its data from the checkpoint's `c`; `from` names the `--config` file the
/// settings came from, if any.
pub(crate) fn check_fixed(x: &TrainArgs, c: &RunConfig, from: Option<&Path>) -> Result<()> {
    fn same<T: PartialEq + std::fmt::Display>(
        flag: &str,
        given: Option<&T>,
        stored: Option<&T>,
        from: Option<&Path>,
    ) -> Result<()> {
        match given {
            Some(g) if Some(g) != stored => Err(Error::Invalid(format!(
                "{flag} {g}{} cannot change on --resume (the checkpoint has {})",
                from.map(|p| format!(" (from {})", p.display()))
                    .unwrap_or_default(),
                stored.map_or("none".to_string(), |v| v.to_string())
            ))),
            _ => Ok(()),
        }
    }
    let f = from;
    same("--task", x.task.as_ref(), Some(&c.task), f)?;
    same("--dataset", x.dataset.as_ref(), Some(&c.dataset), f)?;
    same("--embed", x.embed.as_ref(), Some(&c.embed), f)?;
    same("--hidden", x.hidden.as_ref(), Some(&c.hidden), f)?;
    same("--layers", x.layers.as_ref(), Some(&c.layers), f)?;
    same("--batch", x.batch.as_ref(), Some(&c.batch), f)?;
    same("--seq-len", x.seq_len.as_ref(), Some(&c.seq_len), f)?;
    same("--optimizer", x.optimizer.as_ref(), Some(&c.optimizer), f)?;
    same(
        "--weight-decay",
        x.weight_decay.as_ref(),
        Some(&c.weight_decay),
        f,
    )?;
    same("--momentum", x.momentum.as_ref(), Some(&c.momentum), f)?;
    same("--clip-norm", x.clip_norm.as_ref(), c.clip_norm.as_ref(), f)?;
    same("--dropout", x.dropout.as_ref(), Some(&c.dropout), f)?;
    same(
        "--weight-drop",
        x.weight_drop.as_ref(),
        Some(&c.weight_drop),
        f,
    )?;
    check_cell_file(x, c, f)?;
    same("--zoneout-h", x.zoneout_h.as_ref(), Some(&c.zoneout_h), f)?;
    same("--zoneout-c", x.zoneout_c.as_ref(), Some(&c.zoneout_c), f)?;
    same(
        "--proj-size",
        x.proj_size.as_ref(),
        (c.proj_size > 0).then_some(&c.proj_size),
        f,
    )?;
    same("--cell", x.cell.as_ref(), Some(&c.cell), f)?;
    same("--head", x.head.as_ref(), Some(&c.head), f)?;
    same("--attention", x.attention.as_ref(), c.attention.as_ref(), f)?;
    same(
        "--activation",
        x.activation.as_ref(),
        c.activation.as_ref(),
        f,
    )?;
    same("--norm", x.norm.as_ref(), Some(&c.norm), f)?;
    same(
        "--norm-t-max",
        x.norm_t_max.as_ref(),
        Some(&c.norm_t_max),
        f,
    )?;
    same("--init-whh", x.init_whh.as_ref(), Some(&c.init_whh), f)?;
    same("--init-wih", x.init_wih.as_ref(), Some(&c.init_wih), f)?;
    same(
        "--forget-bias",
        x.forget_bias.as_ref(),
        c.forget_bias.as_ref(),
        f,
    )?;
    same("--min-len", x.min_len.as_ref(), c.min_len.as_ref(), f)?;
    same("--schedule", x.schedule.as_ref(), Some(&c.schedule), f)?;
    same("--warmup", x.warmup.as_ref(), Some(&c.warmup), f)?;
    same("--step-size", x.step_size.as_ref(), Some(&c.step_size), f)?;
    same("--gamma", x.gamma.as_ref(), Some(&c.gamma), f)?;
    same("--seed", x.seed.as_ref(), Some(&c.seed), f)?;
    same(
        "--val-fraction",
        x.val_fraction.as_ref(),
        Some(&c.val_fraction),
        f,
    )?;
    same(
        "--test-fraction",
        x.test_fraction.as_ref(),
        Some(&c.test_fraction),
        f,
    )?;
    same("--features", x.features.as_ref(), c.features.as_ref(), f)?;
    same("--target", x.target.as_ref(), c.target.as_ref(), f)?;
    same("--horizon", x.horizon.as_ref(), Some(&c.horizon), f)?;
    same("--missing", x.missing.as_ref(), Some(&c.missing), f)?;
    same("--time", x.time.as_ref(), c.time.as_ref(), f)?;
    for (flag, given, stored) in [
        ("--residual", x.residual, c.residual),
        ("--norm-last", x.norm_last, c.norm_last),
        (
            "--deterministic-order",
            x.deterministic_order,
            c.deterministic_order,
        ),
    ] {
        same(flag, given.then_some(&true), Some(&stored), f)?;
    }
    if let Some(p) = &x.init {
        return Err(Error::Invalid(format!(
            "--init {} cannot be used with --resume (the checkpoint holds the weights)",
            p.display()
        )));
    }
    Ok(())
}

/// The norm, dropout and residual settings, for the run's first line.
pub(crate) fn describe_links(c: &RunConfig) -> String {
    let mut s = String::new();
    if c.norm != NormChoice::None {
        s += &format!(
            ", norm {}{}",
            c.norm,
            if c.norm_last { " (last too)" } else { "" }
        );
    }
    if c.dropout > 0.0 {
        s += &format!(", dropout {}", c.dropout);
    }
    if c.residual {
        s += ", residual";
    }
    if let Some(a) = c.attention {
        s += &format!(", attention head ({a})");
    }
    if c.proj_size > 0 {
        s += &format!(", projection {}", c.proj_size);
    }
    s
}

pub(crate) fn best_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(".best");
    PathBuf::from(s)
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

/// Refuses a batch of `--seq-len` × `--batch` too large for the host
/// before the data is built (resumed settings included).
pub(crate) fn check_batch_size(c: &RunConfig) -> Result<()> {
    let bytes = (c.seq_len as u128 * c.batch as u128).saturating_mul(16);
    let budget = host_budget();
    if bytes > budget as u128 {
        return Err(Error::Invalid(format!(
            "batch too large: --seq-len {} × --batch {} need {} bytes a step, over the host \
             budget of {budget} bytes",
            c.seq_len,
            c.batch,
            u64::try_from(bytes).map_or("more than 2^64".into(), |b| b.to_string())
        )));
    }
    Ok(())
}
