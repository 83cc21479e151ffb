//! `lstm-wgpu train`, `generate` and `predict`: data, loop, validation,
//! early stopping, metrics, checkpoints and resume, over [`Trainer`].

use crate::cli::env::{host_budget, open_gpu, size_limits};
use lstm_wgpu::data::{
    AddingTask, Builtin, CopyTask, CsvTable, Missing, Normalizer, Rng, SelectOptions, Selection,
    SeriesConfig, SeriesDataset, Split, TextConfig, TextData, Vocab,
};
use lstm_wgpu::error::{Error, Result, clip, num};
use lstm_wgpu::io::{self, TensorFile};
use lstm_wgpu::kernels::optim::{OptimConfig, OptimKind};
use lstm_wgpu::model::NamedTensor;
use lstm_wgpu::model::norm::{Norm, NormKind};
use lstm_wgpu::train::forecast::{SeriesMetrics, predict_windows};
use lstm_wgpu::train::lr::LrSchedule;
use lstm_wgpu::train::metrics::{MetricsBuffer, Value, loss_svg};
use lstm_wgpu::train::{
    Carry, Head, InitOptions, NetConfig, StepData, Trainer, WhhInit, WihInit, init_values,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
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
    #[arg(long)]
    pub task: Option<String>,
    /// Built-in dataset when no --data: text | copy (task text), sine |
    /// mackey-glass | adding (task series). [default: text, or sine for --task series]
    #[arg(long)]
    pub dataset: Option<String>,
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
    #[arg(long)]
    pub optimizer: Option<String>,
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
    /// Dropout probability on each layer's output but the last, in
    /// training only (as nn.LSTM's `dropout`), in [0, 1). [default: 0]
    #[arg(long)]
    pub dropout: Option<f32>,
    /// Residual connections around layers 1.. (output = layer(x) + x).
    #[arg(long)]
    #[serde(default)]
    pub residual: bool,
    /// Normalization: none | layer | layer-cell | batch | step-batch |
    /// recurrent-batch (see docs/math.md, "Normalization variants"). [default: none]
    #[arg(long)]
    pub norm: Option<String>,
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
    #[arg(long)]
    pub init_whh: Option<String>,
    /// W_ih initialisation: uniform (PyTorch's U(±1/√H)) | xavier
    /// (U(±√(6/(I+4H)))). [default: uniform]
    #[arg(long)]
    pub init_wih: Option<String>,
    /// Forget-gate bias: bias_ih[H..2H) = F and bias_hh[H..2H) = 0, so
    /// their sum is F. [default: none: as initialised]
    #[arg(long)]
    pub forget_bias: Option<f32>,
    /// Adding problem: random sequence lengths in [N, --seq-len] per
    /// sequence (variable-length batches). [default: none: every sequence --seq-len long]
    #[arg(long)]
    pub min_len: Option<usize>,
    /// constant | cosine (linear warmup + cosine decay) | step. [default: constant]
    #[arg(long)]
    pub schedule: Option<String>,
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
    #[arg(long)]
    pub missing: Option<String>,
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
    /// Loss-curve plot (SVG).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    #[serde(default)]
    pub no_progress: bool,
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
    fn merge_from(&mut self, o: &TrainArgs) {
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
            dropout,
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
            val_every,
            patience,
            features,
            target,
            horizon,
            missing,
            time,
            metrics,
            checkpoint,
            plot
        );
        self.deterministic_order |= o.deterministic_order;
        self.residual |= o.residual;
        self.norm_last |= o.norm_last;
        self.no_progress |= o.no_progress;
    }
}

/// The resolved settings of a run (stored in checkpoints).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct RunConfig {
    task: String,
    data: Option<PathBuf>,
    dataset: String,
    embed: usize,
    hidden: usize,
    layers: usize,
    batch: usize,
    seq_len: usize,
    optimizer: String,
    lr: f64,
    weight_decay: f64,
    momentum: f64,
    clip_norm: Option<f32>,
    schedule: String,
    warmup: usize,
    step_size: usize,
    gamma: f64,
    seed: u64,
    deterministic_order: bool,
    val_fraction: f64,
    val_every: usize,
    patience: Option<usize>,
    features: Option<String>,
    target: Option<String>,
    horizon: usize,
    /// The run's length in steps (the cosine schedule spans it).
    steps: usize,
    // Later settings default to what runs without them did, so older
    // checkpoints still load.
    #[serde(default)]
    dropout: f32,
    #[serde(default)]
    residual: bool,
    #[serde(default = "none")]
    norm: String,
    #[serde(default)]
    norm_last: bool,
    #[serde(default)]
    norm_t_max: usize,
    #[serde(default = "uniform")]
    init_whh: String,
    #[serde(default = "uniform")]
    init_wih: String,
    #[serde(default)]
    forget_bias: Option<f32>,
    #[serde(default)]
    min_len: Option<usize>,
    #[serde(default = "error")]
    missing: String,
    #[serde(default)]
    time: Option<String>,
}

fn error() -> String {
    "error".into()
}

fn none() -> String {
    "none".into()
}

fn uniform() -> String {
    "uniform".into()
}

/// The norm variant of `--norm` (`none` or a [`NormKind`] name).
fn norm_kind(name: &str) -> Result<Option<NormKind>> {
    if name == "none" {
        return Ok(None);
    }
    NormKind::parse(name).map(Some).map_err(|_| {
        Error::Invalid(format!(
            "--norm {name}: expected none, layer, layer-cell, batch, step-batch or recurrent-batch"
        ))
    })
}

/// The [`Norm`] a run's settings describe.
fn norm_of(c: &RunConfig) -> Result<Norm> {
    let (last, t_max) = (c.norm_last, c.norm_t_max);
    Ok(match norm_kind(&c.norm)? {
        None => Norm::None,
        Some(NormKind::Layer) => Norm::Layer { last },
        Some(NormKind::LayerCell) => Norm::LayerCell,
        Some(NormKind::Batch) => Norm::Batch { last },
        Some(NormKind::StepBatch) => Norm::StepBatch { last, t_max },
        Some(NormKind::RecurrentBatch) => Norm::RecurrentBatch { t_max },
    })
}

/// The initialisation options of a run's settings.
fn init_of(c: &RunConfig) -> Result<InitOptions> {
    let whh = match c.init_whh.as_str() {
        "uniform" => WhhInit::Uniform,
        "orthogonal" => WhhInit::Orthogonal,
        o => {
            return Err(Error::Invalid(format!(
                "--init-whh {o}: expected uniform or orthogonal"
            )));
        }
    };
    let wih = match c.init_wih.as_str() {
        "uniform" => WihInit::Uniform,
        "xavier" => WihInit::Xavier,
        o => {
            return Err(Error::Invalid(format!(
                "--init-wih {o}: expected uniform or xavier"
            )));
        }
    };
    Ok(InitOptions {
        whh,
        wih,
        forget_bias: c.forget_bias,
    })
}

fn resolve(a: &TrainArgs) -> Result<RunConfig> {
    let task = a
        .task
        .clone()
        .unwrap_or_else(|| match (&a.dataset, &a.data) {
            (Some(d), _) if ["sine", "mackey-glass", "adding"].contains(&d.as_str()) => {
                "series".into()
            }
            (None, Some(p)) if is_csv(p) => "series".into(),
            _ => "text".into(),
        });
    let dataset = a.dataset.clone().unwrap_or_else(|| {
        if task == "series" {
            "sine".into()
        } else {
            "text".into()
        }
    });
    let optimizer = a.optimizer.clone().unwrap_or_else(|| "adam".into());
    let seq_len = a.seq_len.unwrap_or(if task == "text" { 32 } else { 24 });
    let c = RunConfig {
        task: task.clone(),
        data: a.data.clone(),
        dataset,
        embed: a.embed.unwrap_or(32),
        hidden: a.hidden.unwrap_or(64),
        layers: a.layers.unwrap_or(2),
        batch: a.batch.unwrap_or(16),
        seq_len,
        lr: a.lr.unwrap_or(if optimizer == "sgd" { 0.1 } else { 3e-3 }),
        weight_decay: a
            .weight_decay
            .unwrap_or(if optimizer == "adamw" || optimizer == "amsgrad" {
                1e-2
            } else {
                0.0
            }),
        momentum: a.momentum.unwrap_or(0.0),
        optimizer,
        clip_norm: a.clip_norm,
        schedule: a.schedule.clone().unwrap_or_else(|| "constant".into()),
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
        norm: a.norm.clone().unwrap_or_else(none),
        norm_last: a.norm_last,
        norm_t_max: a.norm_t_max.unwrap_or(seq_len),
        init_whh: a.init_whh.clone().unwrap_or_else(uniform),
        init_wih: a.init_wih.clone().unwrap_or_else(uniform),
        forget_bias: a.forget_bias,
        min_len: a.min_len,
        missing: a.missing.clone().unwrap_or_else(error),
        time: a.time.clone(),
    };
    validate_config(&c)?;
    Ok(c)
}

/// The data of run `c`: its path, or `built-in <dataset>`.
fn describe_data(c: &RunConfig) -> String {
    c.data
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| format!("built-in {}", c.dataset))
}

/// Whether a data path names a CSV file (by its extension).
fn is_csv(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

/// Checks a run's settings, from the command line ([`resolve`]) or from a
/// checkpoint (`--resume`, `generate`, `predict`): the errors name the
/// setting as its flag.
fn validate_config(c: &RunConfig) -> Result<()> {
    let task = c.task.as_str();
    if task != "text" && task != "series" {
        return Err(Error::Invalid(format!(
            "--task {task}: expected text or series"
        )));
    }
    let dataset = c.dataset.as_str();
    let ok = if task == "text" {
        ["text", "copy"].contains(&dataset)
    } else {
        ["sine", "mackey-glass", "adding"].contains(&dataset)
    };
    if !ok && c.data.is_none() {
        return Err(Error::Invalid(format!(
            "--dataset {dataset} does not fit --task {task}"
        )));
    }
    let dropout = c.dropout;
    if !(dropout.is_finite() && (0.0..1.0).contains(&dropout)) {
        return Err(Error::Invalid(format!(
            "--dropout {}: expected a probability in [0, 1)",
            num(dropout)
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
    let optimizer = c.optimizer.as_str();
    if !["sgd", "adam", "adamw", "amsgrad"].contains(&optimizer) {
        return Err(Error::Invalid(format!(
            "--optimizer {optimizer}: expected sgd, adam, adamw or amsgrad"
        )));
    }
    let schedule = c.schedule.as_str();
    if !["constant", "cosine", "step"].contains(&schedule) {
        return Err(Error::Invalid(format!(
            "--schedule {schedule}: expected constant, cosine or step"
        )));
    }
    norm_of(c)?;
    init_of(c)?;
    if c.residual && c.layers < 2 {
        return Err(Error::Invalid(
            "--residual connects stacked layers: it needs --layers 2 or more".into(),
        ));
    }
    if let Some(m) = c.min_len {
        if task != "series" || c.dataset != "adding" || c.data.is_some() {
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
    lstm_wgpu::data::Missing::parse(&c.missing)?;
    if c.task != "series" || c.data.is_none() {
        for (flag, set) in [
            ("--missing", c.missing != "error"),
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
    if let Some(n) = c.clip_norm
        && !(n.is_finite() && n >= 0.0)
    {
        return Err(Error::Invalid(format!(
            "--clip-norm {}: expected a finite number >= 0",
            num(n)
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
fn check_schedule_flags(a: &TrainArgs, schedule: &str) -> Result<()> {
    for (flag, given, owner) in [
        ("--warmup", a.warmup.is_some(), "cosine"),
        ("--step-size", a.step_size.is_some(), "step"),
        ("--gamma", a.gamma.is_some(), "step"),
    ] {
        if given && schedule != owner {
            return Err(Error::Invalid(format!(
                "{flag} applies to --schedule {owner}, but the schedule is {schedule}"
            )));
        }
    }
    Ok(())
}

fn optim_config(c: &RunConfig) -> Result<OptimConfig> {
    let mut o = match c.optimizer.as_str() {
        "sgd" => OptimConfig::sgd(),
        "adam" => OptimConfig::adam(),
        _ => OptimConfig::adamw(),
    };
    o.lr = c.lr;
    o.weight_decay = c.weight_decay;
    if o.kind == OptimKind::Sgd {
        o.momentum = c.momentum;
    }
    o.amsgrad = c.optimizer == "amsgrad";
    o.validate()?;
    Ok(o)
}

fn schedule_of(c: &RunConfig, total: usize) -> LrSchedule {
    match c.schedule.as_str() {
        "cosine" => LrSchedule::WarmupCosine {
            warmup: c.warmup,
            total,
            min_lr: 0.0,
        },
        "step" => LrSchedule::Step {
            step_size: c.step_size,
            gamma: c.gamma,
        },
        _ => LrSchedule::Constant,
    }
}

/// The data of a run.
enum Data {
    Text(TextData),
    Copy(CopyTask),
    Series(SeriesDataset, Box<Selection>),
    Adding(AddingTask),
}

fn load_data(c: &RunConfig, vocab: Option<Vocab>, norm: Option<Normalizer>) -> Result<Data> {
    if c.task == "text" {
        let tc = TextConfig {
            batch: c.batch,
            eval_batch: c.batch,
            bptt: c.seq_len,
            val_fraction: c.val_fraction,
        };
        return Ok(match (&c.data, c.dataset.as_str()) {
            (Some(p), _) => Data::Text(TextData::from_file(p, &tc, vocab)?),
            (None, "copy") => Data::Copy(CopyTask::new(
                c.seq_len.max(4) / 4,
                c.seq_len.max(4) - 2 * (c.seq_len.max(4) / 4),
                8,
                c.seed,
            )?),
            (None, _) => {
                let text =
                    lstm_wgpu::data::generated_text(lstm_wgpu::data::DEFAULT_TEXT_BYTES, c.seed);
                Data::Text(match vocab {
                    Some(v) => TextData::with_vocab(&text, v, &tc)?,
                    None => TextData::new(&text, &tc)?,
                })
            }
        });
    }
    let sc = SeriesConfig {
        seq_len: c.seq_len,
        horizon: c.horizon,
        val_fraction: c.val_fraction,
    };
    if c.data.is_none() && c.dataset == "adding" {
        return Ok(Data::Adding(AddingTask::new(c.seq_len.max(2), c.seed)?));
    }
    let sel = series_table(c)?;
    let in_file = |e: Error| match (&c.data, e) {
        (Some(p), Error::Invalid(m)) => Error::file(p, m),
        (_, e) => e,
    };
    let ds = match norm {
        Some(n) => SeriesDataset::with_normalizer(&sel.table, &sc, n),
        None => SeriesDataset::new(&sel.table, &sc),
    }
    .map_err(in_file)?;
    Ok(Data::Series(ds, Box::new(sel)))
}

/// The columns of a series run: the `--data` CSV's chosen columns or the
/// built-in `sine` / `mackey-glass` series.
fn series_table(c: &RunConfig) -> Result<Selection> {
    match &c.data {
        Some(p) => {
            let csv = CsvTable::read(p)?;
            let o = SelectOptions {
                features: c
                    .features
                    .as_ref()
                    .map(|f| f.split(',').map(|s| s.trim().to_string()).collect()),
                target: c.target.clone(),
                time: c.time.clone(),
                missing: Missing::parse(&c.missing)?,
            };
            csv.select_with(&o)
        }
        None => {
            let b = c.dataset.parse::<Builtin>()?;
            let table =
                lstm_wgpu::data::builtin_series(b, lstm_wgpu::data::DEFAULT_SERIES_LEN, c.seed)?;
            Ok(Selection {
                rows: (1..=table.len()).collect(),
                table,
                time: None,
                unused_time: Vec::new(),
            })
        }
    }
}

/// One line naming the columns a series run uses.
fn describe_columns(c: &RunConfig, sel: &Selection) -> String {
    let t = &sel.table;
    let mut s = format!(
        "columns: features [{}], target `{}`",
        t.feature_names.join(", "),
        t.target_name
    );
    if let Some(tc) = &sel.time {
        s += &format!(", time `{}`", tc.name);
    }
    for (name, why) in &sel.unused_time {
        s += &format!("; `{name}` is not a feature ({why}; name it in --features to use it)");
    }
    if c.data.is_some() {
        s += &format!("; missing cells: {}", c.missing);
        if c.missing == "drop" {
            s += &format!(" ({} rows kept)", t.len());
        }
    }
    s
}

/// `--dump-data`: writes the data of run `c` (of `steps` steps) to `path`.
/// Text runs get the UTF-8 text (BOM dropped), series runs a CSV of the
/// feature columns and then the target column unless it is a feature (the
/// values in Rust's shortest round-trip form, so parsing them gives the same
/// f64), and the generated copy and adding tasks a safetensors file:
/// `train.inputs`, `train.targets` with a leading step axis (batch k is
/// step k + 1's), `val.inputs`, `val.targets` with a leading axis of the
/// [`VAL_BATCHES`] validation batches, `train.lengths` / `val.lengths`
/// under `--min-len`; ids and lengths i64, values f32; time-major as the
/// trainer (inputs [T, B] or [T, B, 2], adding targets [B, 1]).
fn dump_data(path: &Path, c: &RunConfig, data: &Data, steps: usize) -> Result<()> {
    let what = match data {
        Data::Text(_) => {
            let text = match &c.data {
                Some(p) => lstm_wgpu::data::read_text(p)?,
                None => {
                    lstm_wgpu::data::generated_text(lstm_wgpu::data::DEFAULT_TEXT_BYTES, c.seed)
                }
            };
            io::write_atomic(path, text.as_bytes())?;
            format!("{} characters of text", text.chars().count())
        }
        Data::Series(_, sel) => {
            let t = &sel.table;
            let mut cols: Vec<(&str, &[f64])> = t
                .feature_names
                .iter()
                .zip(&t.features)
                .map(|(n, v)| (n.as_str(), v.as_slice()))
                .collect();
            if !t.feature_names.contains(&t.target_name) {
                cols.push((t.target_name.as_str(), &t.target));
            }
            let names: Vec<&str> = cols.iter().map(|c| c.0).collect();
            let head: Vec<String> = names.iter().map(|n| csv_cell(n)).collect();
            let mut s = head.join(",") + "\n";
            for r in 0..t.len() {
                let row: Vec<String> = cols.iter().map(|c| format!("{}", c.1[r])).collect();
                s += &row.join(",");
                s.push('\n');
            }
            io::write_atomic(path, s.as_bytes())?;
            format!("a CSV of {} rows of {}", t.len(), names.join(", "))
        }
        Data::Copy(task) => {
            check_dump_size(
                steps,
                task.seq_len().saturating_mul(c.batch).saturating_mul(16),
            )?;
            let mut d = DumpTensors::default();
            for (split, n) in [(Split::Train, steps), (Split::Val, VAL_BATCHES)] {
                let (mut x, mut y) = (Vec::new(), Vec::new());
                for i in 0..n {
                    let b = task.batch(split, i as u64, c.batch)?;
                    x.extend(b.inputs.iter().map(|&v| v as i64));
                    y.extend(b.targets.iter().map(|&v| v as i64));
                }
                let shape = vec![n, task.seq_len(), c.batch];
                d.ints(split, "inputs", shape.clone(), x);
                d.ints(split, "targets", shape, y);
            }
            d.write(path, c)?;
            format!("{steps} training and {VAL_BATCHES} validation batches")
        }
        Data::Adding(task) => {
            let per = task.seq_len.saturating_mul(8).saturating_add(20);
            check_dump_size(steps, per.saturating_mul(c.batch))?;
            let mut d = DumpTensors::default();
            for (split, n) in [(Split::Train, steps), (Split::Val, VAL_BATCHES)] {
                let (mut x, mut y, mut lens) = (Vec::new(), Vec::new(), Vec::new());
                for i in 0..n {
                    let (b, l) = task.batch_lengths(
                        split,
                        i as u64,
                        c.batch,
                        c.min_len.unwrap_or(task.seq_len),
                    )?;
                    x.extend(b.inputs);
                    y.extend(b.targets);
                    lens.extend(l.iter().map(|&v| v as i64));
                }
                d.floats(split, "inputs", vec![n, task.seq_len, c.batch, 2], x);
                d.floats(split, "targets", vec![n, c.batch, 1], y);
                if c.min_len.is_some() {
                    d.ints(split, "lengths", vec![n, c.batch], lens);
                }
            }
            d.write(path, c)?;
            format!("{steps} training and {VAL_BATCHES} validation batches")
        }
    };
    eprintln!(
        "dump-data: wrote {what} ({}) to {}",
        describe_data(c),
        path.display()
    );
    Ok(())
}

/// Tensors of a `--dump-data` safetensors file.
#[derive(Default)]
struct DumpTensors(Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>);

impl DumpTensors {
    fn name(split: Split, what: &str) -> String {
        match split {
            Split::Train => format!("train.{what}"),
            Split::Val => format!("val.{what}"),
        }
    }

    fn ints(&mut self, split: Split, what: &str, shape: Vec<usize>, v: Vec<i64>) {
        let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.0
            .push((Self::name(split, what), safetensors::Dtype::I64, shape, b));
    }

    fn floats(&mut self, split: Split, what: &str, shape: Vec<usize>, v: Vec<f32>) {
        let b = bytemuck::cast_slice::<f32, u8>(&v).to_vec();
        self.0
            .push((Self::name(split, what), safetensors::Dtype::F32, shape, b));
    }

    fn write(&self, path: &Path, c: &RunConfig) -> Result<()> {
        let mut meta = BTreeMap::new();
        meta.insert("dataset".to_string(), c.dataset.clone());
        meta.insert(
            "config".to_string(),
            toml::to_string(c).map_err(|e| Error::Invalid(e.to_string()))?,
        );
        io::write_atomic(path, &io::serialize(&self.0, &meta)?)
    }
}

fn net_of(c: &RunConfig, data: &Data) -> Result<NetConfig> {
    let head = match data {
        Data::Text(t) => Head::Language {
            vocab: t.vocab.len(),
            embed: c.embed,
        },
        Data::Copy(k) => Head::Language {
            vocab: k.vocab_size(),
            embed: c.embed,
        },
        Data::Series(s, _) => Head::Regression {
            features: s.train.num_features(),
            outputs: c.horizon,
        },
        Data::Adding(_) => Head::Regression {
            features: 2,
            outputs: 1,
        },
    };
    net_with(c, head)
}

/// The network of a run's settings around `head`.
fn net_with(c: &RunConfig, head: Head) -> Result<NetConfig> {
    let mut net = NetConfig::new(head, c.hidden, c.layers);
    net.norm = norm_of(c)?;
    net.dropout = c.dropout;
    net.residual = c.residual;
    net.init = init_of(c)?;
    Ok(net)
}

/// Batches per epoch of the training split.
fn epoch_len(c: &RunConfig, data: &Data) -> usize {
    match data {
        Data::Text(t) => t.train.num_windows(),
        Data::Series(s, _) => s.train.num_batches(c.batch, true),
        Data::Copy(_) | Data::Adding(_) => 100,
    }
}

/// Owned batch for step `k` (0-based) of the training split, and whether
/// its state continues the previous step's.
fn train_batch(c: &RunConfig, data: &Data, k: usize) -> Result<(usize, Owned, Carry)> {
    match data {
        Data::Text(t) => {
            let nw = t.train.num_windows();
            let w = k % nw;
            let b = t.train.get_batch(w);
            Ok((
                b.seq_len,
                Owned::Tokens(b.inputs, b.targets),
                if w == 0 { Carry::Zero } else { Carry::Continue },
            ))
        }
        Data::Copy(task) => {
            let b = task.batch(Split::Train, k as u64, c.batch)?;
            Ok((b.seq_len, Owned::Tokens(b.inputs, b.targets), Carry::Zero))
        }
        Data::Series(s, _) => {
            let nb = s.train.num_batches(c.batch, true).max(1);
            let (epoch, i) = (k / nb, k % nb);
            let seed = (!c.deterministic_order).then_some(c.seed);
            let order = s.train.order(seed, epoch as u64);
            let b = s.train.batch(&order[i * c.batch..(i + 1) * c.batch])?;
            Ok((
                b.seq_len,
                Owned::Series(b.inputs, b.targets, None),
                Carry::Zero,
            ))
        }
        Data::Adding(task) => Ok((
            task.seq_len,
            adding_batch(c, task, Split::Train, k as u64)?,
            Carry::Zero,
        )),
    }
}

/// An adding-problem batch, with random lengths under `--min-len`.
fn adding_batch(c: &RunConfig, task: &AddingTask, split: Split, i: u64) -> Result<Owned> {
    Ok(match c.min_len {
        Some(m) => {
            let (b, lens) = task.batch_lengths(split, i, c.batch, m)?;
            Owned::Series(b.inputs, b.targets, Some(lens))
        }
        None => {
            let b = task.batch(split, i, c.batch)?;
            Owned::Series(b.inputs, b.targets, None)
        }
    })
}

enum Owned {
    Tokens(Vec<u32>, Vec<u32>),
    Series(Vec<f32>, Vec<f32>, Option<Vec<usize>>),
}

impl Owned {
    fn view(&self) -> StepData<'_> {
        match self {
            Owned::Tokens(ids, targets) => StepData::tokens(ids, targets),
            Owned::Series(x, targets, lengths) => StepData::Series {
                x,
                targets,
                lengths: lengths.as_deref(),
            },
        }
    }
}

/// Validation batches of the generated copy and adding tasks (the same
/// ones at every validation).
const VAL_BATCHES: usize = 4;

/// One validation: the mean loss over the whole validation split
/// (weighted by positions), and for series the model's and the naive
/// forecast's errors on every validation window.
struct ValReport {
    loss: f64,
    series: Option<SeriesMetrics>,
}

/// Validates over the whole validation split, or `None` when there is none.
fn validate(tr: &mut Trainer, c: &RunConfig, data: &Data) -> Result<Option<ValReport>> {
    let mut sum = 0.0;
    let mut n = 0.0;
    match data {
        Data::Text(t) => {
            let Some(v) = &t.val else { return Ok(None) };
            for w in 0..v.num_windows() {
                let b = v.get_batch(w);
                let carry = if w == 0 { Carry::Zero } else { Carry::Continue };
                let l = tr.eval(b.seq_len, &StepData::tokens(&b.inputs, &b.targets), carry)?;
                sum += l as f64 * b.seq_len as f64;
                n += b.seq_len as f64;
            }
        }
        Data::Series(s, sel) => {
            let Some(v) = &s.val else { return Ok(None) };
            // Every window, the last batch short: scored on the host from
            // the predictions, so val_loss is predict's MSE on them.
            let windows: Vec<usize> = (0..v.len()).collect();
            let pred = predict_windows(tr, v, &windows)?;
            let m = SeriesMetrics::of(v, &windows, &pred, &sel.table.target, &s.norm);
            return Ok(Some(ValReport {
                loss: m.model.mse,
                series: Some(m),
            }));
        }
        Data::Copy(task) => {
            for i in 0..VAL_BATCHES as u64 {
                let b = task.batch(Split::Val, i, c.batch)?;
                sum += tr.eval(
                    b.seq_len,
                    &StepData::tokens(&b.inputs, &b.targets),
                    Carry::Zero,
                )? as f64;
                n += 1.0;
            }
        }
        Data::Adding(task) => {
            for i in 0..VAL_BATCHES as u64 {
                let b = adding_batch(c, task, Split::Val, i)?;
                sum += tr.eval(task.seq_len, &b.view(), Carry::Zero)? as f64;
                n += 1.0;
            }
        }
    }
    Ok((n > 0.0).then(|| ValReport {
        loss: sum / n,
        series: None,
    }))
}

/// The metrics-file fields of a series validation.
fn series_fields(m: &SeriesMetrics) -> Vec<(&'static str, Value)> {
    vec![
        ("naive_val_loss", Value::Float(m.naive.mse)),
        ("val_mae", Value::Float(m.model.mae)),
        ("val_rmse", Value::Float(m.model.rmse)),
        ("naive_mae", Value::Float(m.naive.mae)),
        ("naive_rmse", Value::Float(m.naive.rmse)),
        ("val_windows", Value::Int(m.windows as i64)),
    ]
}

/// Refuses data that cannot run as asked: fewer training windows than
/// `--batch`, or a validation split that is empty while validation is
/// asked for (`--val-fraction` > 0, `--patience`).
fn check_splits(c: &RunConfig, data: &Data) -> Result<()> {
    let src = || describe_data(c);
    let has_val = match data {
        Data::Text(t) => t.val.is_some(),
        Data::Series(s, _) => {
            if s.train.len() < c.batch {
                return Err(Error::Invalid(format!(
                    "--batch {}: the training split of {} has only {} windows of --seq-len {} + \
                     --horizon {} rows ({} rows); use --batch {} or less, or a shorter --seq-len",
                    c.batch,
                    src(),
                    s.train.len(),
                    c.seq_len,
                    c.horizon,
                    s.train_rows,
                    s.train.len()
                )));
            }
            s.val.is_some()
        }
        Data::Copy(_) | Data::Adding(_) => true,
    };
    if !has_val && c.val_fraction > 0.0 {
        return Err(Error::Invalid(format!(
            "--val-fraction {}: {} is too small to hold out a validation split; use a larger \
             fraction, or --val-fraction 0 to train without validation",
            c.val_fraction,
            src()
        )));
    }
    if !has_val && c.patience.is_some() {
        return Err(Error::Invalid(
            "--patience stops on validation, but --val-fraction 0 holds out none".into(),
        ));
    }
    Ok(())
}

/// Parameters of a trainer with PyTorch names: `embedding.weight`,
/// `lstm.<nn.LSTM name>`, `head.weight`, `head.bias`.
fn named_params(tr: &Trainer) -> Result<Vec<NamedTensor>> {
    let mut v = tr.lstm.model.param_tensors(tr.ctx())?;
    for t in &mut v {
        if !t.name.starts_with("embedding.") && !t.name.starts_with("head.") {
            t.name = format!("lstm.{}", t.name);
        }
    }
    Ok(v)
}

/// Values in table order from tensors with PyTorch names (as
/// [`named_params`] writes them); every tensor must match.
fn values_from(net: &NetConfig, tensors: &[NamedTensor], file: &Path) -> Result<Vec<f32>> {
    table_values(&net.table(), tensors, file)
}

/// Running statistics in [`NetConfig::stats_table`] order from tensors
/// named `lstm.<name>`.
fn stats_from(net: &NetConfig, tensors: &[NamedTensor], file: &Path) -> Result<Vec<f32>> {
    table_values(&net.stats_table(), tensors, file)
}

/// Restores parameters, running statistics and `num_batches_tracked`
/// counters (`lstm.<module>.num_batches_tracked`, absent ones stay 0).
fn restore_model(
    tr: &mut Trainer,
    floats: &[NamedTensor],
    ints: &BTreeMap<String, i64>,
    file: &Path,
) -> Result<()> {
    tr.set_stats(&stats_from(&tr.net, floats, file)?)?;
    for (name, v) in tr.lstm.model.tracked.iter_mut() {
        if let Some(&n) = ints.get(&format!("lstm.{name}")) {
            *v = n;
        }
    }
    Ok(())
}

fn table_values(
    table: &lstm_wgpu::model::ParamTable,
    tensors: &[NamedTensor],
    file: &Path,
) -> Result<Vec<f32>> {
    let by: HashMap<&str, &NamedTensor> = tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut values = Vec::with_capacity(table.total);
    for e in &table.entries {
        let name = checkpoint_name(&e.name);
        let t = by.get(name.as_str()).ok_or_else(|| {
            Error::tensor(
                &name,
                format!(
                    "missing from {}: expected shape {:?}",
                    file.display(),
                    e.shape
                ),
            )
        })?;
        if t.shape != e.shape {
            return Err(Error::tensor(
                &name,
                format!(
                    "shape {:?} in {}, expected {:?}",
                    t.shape,
                    file.display(),
                    e.shape
                ),
            ));
        }
        values.extend_from_slice(&t.data);
    }
    Ok(values)
}

/// The name of parameter `name` of a [`NetConfig::table`] in files:
/// `embedding.*` and `head.*` as they are, the LSTM's (norms included)
/// under `lstm.`.
fn checkpoint_name(name: &str) -> String {
    if name.starts_with("embedding.") || name.starts_with("head.") {
        name.to_string()
    } else {
        format!("lstm.{name}")
    }
}

/// The tensors of an `--init` file for `net`: its parameters, running
/// statistics and `num_batches_tracked` counters, which are used. The file
/// may be a checkpoint: its optimizer and training state (`optimizer.*`,
/// `train.*`) are not used — the run starts afresh, `--resume` continues
/// one — and a note on stderr says so. Any other tensor is refused.
fn init_file(net: &NetConfig, path: &Path) -> Result<(Vec<NamedTensor>, BTreeMap<String, i64>)> {
    let file = TensorFile::read(path)?;
    checkpoint_precision(&file)?;
    Accepted::model(net)
        .with_state(&ALL_OPTIM_STATE)
        .check(&file, "this run's model or a checkpoint of it")?;
    let (mut floats, mut ints) = file.params_and_counters().map_err(in_file(path))?;
    let model = Accepted::model(net);
    let state = floats.iter().any(|t| !model.floats.contains(&t.name))
        || ints.keys().any(|n| !model.ints.contains(n));
    floats.retain(|t| model.floats.contains(&t.name));
    ints.retain(|n, _| model.ints.contains(n));
    check_signs(&floats, &ints, path)?;
    if state {
        eprintln!(
            "note: --init {}: using its weights and statistics; its optimizer and training \
             state start afresh (--resume continues a run)",
            path.display()
        );
    }
    Ok((floats, ints))
}

/// Checkpoint tensor of the loss scaler: [scale, good steps, skipped].
const SCALER_NAME: &str = "train.loss_scaler";
/// Checkpoint tensors of the loss history for `--plot`, rows of (step,
/// loss) of the finite training losses ([n, 2]) and validation losses
/// ([m, 2]) so far.
const CURVE_NAME: &str = "train.curve";
const VAL_CURVE_NAME: &str = "train.val_curve";
/// The f32 tensors of a checkpoint's training state besides the model's
/// and the optimizer's.
const TRAIN_FLOATS: [&str; 4] = ["train.state", SCALER_NAME, CURVE_NAME, VAL_CURVE_NAME];
/// The integer counters of a checkpoint's training state.
const TRAIN_INTS: [&str; 4] = [
    lstm_wgpu::kernels::optim::STEP_NAME,
    "train.step",
    "train.skipped",
    "train.bad_vals",
];
/// Every optimizer state tensor name (an `--init` checkpoint may come from
/// a run with another optimizer).
const ALL_OPTIM_STATE: [&str; 4] = [
    "optimizer.momentum_buffer",
    "optimizer.exp_avg",
    "optimizer.exp_avg_sq",
    "optimizer.max_exp_avg_sq",
];

/// The tensor names a reader of weights or checkpoints accepts: f32
/// tensors and integer scalars. Anything else in a file is refused by name,
/// never ignored.
#[derive(Default)]
struct Accepted {
    floats: std::collections::BTreeSet<String>,
    ints: std::collections::BTreeSet<String>,
}

impl Accepted {
    /// The model of `net`: its parameters (`embedding.*`, `lstm.*`,
    /// `head.*`), running statistics and `num_batches_tracked` counters.
    fn model(net: &NetConfig) -> Self {
        let mut a = Self::default();
        for e in &net.table().entries {
            a.floats.insert(checkpoint_name(&e.name));
        }
        for e in &net.stats_table().entries {
            a.floats.insert(format!("lstm.{}", e.name));
            if let Some(m) = e.name.strip_suffix(".running_mean") {
                a.ints.insert(format!("lstm.{m}.num_batches_tracked"));
            }
        }
        a
    }

    /// Adds a checkpoint's training state: the optimizer state tensors
    /// `optim`, `optimizer.step` and the `train.*` entries.
    fn with_state(mut self, optim: &[&str]) -> Self {
        let floats = optim.iter().chain(&TRAIN_FLOATS);
        self.floats.extend(floats.map(|s| s.to_string()));
        self.ints.extend(TRAIN_INTS.iter().map(|s| s.to_string()));
        self
    }

    /// Refuses the first tensor of `f` not accepted, naming it and `what`
    /// the file should be.
    fn check(&self, f: &TensorFile, what: &str) -> Result<()> {
        for (name, t) in &f.tensors {
            let int = matches!(t.dtype, safetensors::Dtype::I64 | safetensors::Dtype::I32);
            let ok = match int {
                true => self.ints.contains(name),
                false => self.floats.contains(name),
            };
            if !ok {
                return Err(Error::tensor(
                    name,
                    format!(
                        "unexpected {}in {}: not part of {what}",
                        if int { "integer tensor " } else { "" },
                        f.path.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Adds the file to a tensor error that does not name it.
fn in_file(path: &Path) -> impl Fn(Error) -> Error + '_ {
    move |e| match e {
        Error::Tensor { name, msg } if !msg.contains(&path.display().to_string()) => {
            Error::tensor(name, format!("{msg} in {}", path.display()))
        }
        e => e,
    }
}

/// The sign constraints of a file's values (their finiteness is checked as
/// they are read): running variances and Adam's second moments >= 0,
/// counters >= 0.
fn check_signs(floats: &[NamedTensor], ints: &BTreeMap<String, i64>, file: &Path) -> Result<()> {
    for t in floats {
        let var = t.name.ends_with(".running_var")
            || t.name == "optimizer.exp_avg_sq"
            || t.name == "optimizer.max_exp_avg_sq";
        if var && let Some(i) = t.data.iter().position(|&v| v < 0.0) {
            return Err(Error::tensor(
                &t.name,
                format!(
                    "negative value {} at flat index {i} in {}: expected values >= 0",
                    num(t.data[i]),
                    file.display()
                ),
            ));
        }
    }
    for (name, &v) in ints {
        if v < 0 {
            return Err(Error::tensor(
                name,
                format!("{v} in {}: expected a count >= 0", file.display()),
            ));
        }
    }
    Ok(())
}

/// A loss history tensor of a checkpoint ([n, 2] rows of step and loss),
/// empty when absent (older checkpoints).
fn curve_from(floats: &[NamedTensor], name: &str, file: &Path) -> Result<Vec<(f64, f64)>> {
    let Some(t) = floats.iter().find(|t| t.name == name) else {
        return Ok(Vec::new());
    };
    if t.shape.len() != 2 || t.shape[1] != 2 {
        return Err(Error::tensor(
            name,
            format!("shape {:?} in {}, expected [n, 2]", t.shape, file.display()),
        ));
    }
    Ok(t.data
        .chunks_exact(2)
        .map(|r| (r[0] as f64, r[1] as f64))
        .collect())
}

/// The finite points of a loss history as a checkpoint tensor.
fn curve_tensor(name: &str, curve: &[(f64, f64)]) -> NamedTensor {
    let data: Vec<f32> = curve
        .iter()
        .map(|&(x, y)| (x as f32, y as f32))
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .flat_map(|(x, y)| [x, y])
        .collect();
    NamedTensor::new(name, vec![data.len() / 2, 2], data)
}
/// Checkpoint metadata: the precision the run trained in (absent: f32).
const PRECISION_KEY: &str = "precision";

fn parse_loss_scale(
    s: &str,
) -> std::result::Result<lstm_wgpu::model::precision::LossScaleChoice, String> {
    match s {
        "default" => Ok(Default::default()),
        _ => lstm_wgpu::model::precision::LossScaleChoice::parse(s),
    }
}

/// The precision a checkpoint's (or an `--init` file's) run trained in,
/// from its `precision` metadata (absent: f32); any other value is refused.
fn checkpoint_precision(f: &TensorFile) -> Result<lstm_wgpu::model::precision::Precision> {
    use lstm_wgpu::model::precision::{Precision, PrecisionChoice};
    match f
        .metadata
        .get(PRECISION_KEY)
        .map(|v| (v, PrecisionChoice::parse(v)))
    {
        None => Ok(Precision::F32),
        Some((_, Ok(PrecisionChoice::F32))) => Ok(Precision::F32),
        Some((_, Ok(PrecisionChoice::F16Mixed))) => Ok(Precision::F16Mixed),
        Some((v, _)) => Err(Error::file(
            &f.path,
            format!(
                "bad `{PRECISION_KEY}` metadata `{}`: expected f32 or f16-mixed",
                clip(v)
            ),
        )),
    }
}

/// The metadata a checkpoint of run `c` must hold besides its settings:
/// the vocabulary of a text run on text, the normalization of a series run
/// on a CSV or a generated series (copy and adding need neither).
fn data_metadata(c: &RunConfig) -> Option<(&'static str, &'static str)> {
    match (c.task.as_str(), c.data.is_some(), c.dataset.as_str()) {
        ("text", false, "copy") | ("series", false, "adding") => None,
        ("text", ..) => Some(("vocab", "the characters its ids stand for")),
        _ => Some((
            "normalizer",
            "the training rows' mean and std of every column",
        )),
    }
}

/// The scaler state of a checkpoint tensor.
fn scaler_from(w: &[f32], file: &Path) -> Result<lstm_wgpu::model::precision::ScalerState> {
    let s = match w {
        [_, _, _] => lstm_wgpu::model::precision::ScalerState::from_words(w),
        _ => {
            return Err(Error::file(
                file,
                format!("`{SCALER_NAME}` has {} values, expected 3", w.len()),
            ));
        }
    };
    s.validate().map_err(|e| Error::file(file, e.to_string()))?;
    Ok(s)
}

struct RunState {
    step: usize,
    skipped: usize,
    best_val: f64,
    bad_vals: usize,
}

fn save_checkpoint(
    path: &Path,
    tr: &Trainer,
    c: &RunConfig,
    data: &Data,
    st: &RunState,
    curves: [&[(f64, f64)]; 2],
) -> Result<()> {
    let mut tensors = named_params(tr)?;
    for mut t in tr.stats()? {
        t.name = format!("lstm.{}", t.name);
        tensors.push(t);
    }
    tensors.extend(tr.optim.state_tensors(tr.ctx())?);
    let state = tr.carried_state()?;
    tensors.push(NamedTensor::new("train.state", vec![state.len()], state));
    if let Some(s) = tr.scaler_state()? {
        tensors.push(NamedTensor::new(SCALER_NAME, vec![3], s.words().to_vec()));
    }
    tensors.push(curve_tensor(CURVE_NAME, curves[0]));
    tensors.push(curve_tensor(VAL_CURVE_NAME, curves[1]));
    let mut counters = BTreeMap::new();
    counters.insert(
        lstm_wgpu::kernels::optim::STEP_NAME.to_string(),
        tr.optim.steps() as i64,
    );
    counters.insert("train.step".to_string(), st.step as i64);
    for (name, v) in &tr.lstm.model.tracked {
        counters.insert(format!("lstm.{name}"), *v);
    }
    counters.insert("train.skipped".to_string(), st.skipped as i64);
    counters.insert("train.bad_vals".to_string(), st.bad_vals as i64);
    // The data path is stored absolute, so that a resume from another
    // working directory finds it.
    let mut c = c.clone();
    if let Some(d) = &c.data {
        c.data = Some(std::path::absolute(d).map_err(|e| Error::file(d, e))?);
    }
    let mut meta = HashMap::new();
    meta.insert(
        "config".to_string(),
        toml::to_string(&c).map_err(|e| Error::Invalid(e.to_string()))?,
    );
    meta.insert("best_val".to_string(), format!("{}", st.best_val));
    meta.insert(PRECISION_KEY.to_string(), tr.lstm.precision().to_string());
    match data {
        Data::Text(t) => {
            meta.insert("vocab".to_string(), t.vocab.save());
        }
        Data::Series(s, _) => {
            meta.insert("normalizer".to_string(), s.norm.to_metadata());
        }
        _ => {}
    }
    io::write_with_counters(path, &tensors, &counters, Some(meta))
}

/// A checkpoint's contents.
struct Loaded {
    config: RunConfig,
    file: TensorFile,
    vocab: Option<Vocab>,
    norm: Option<Normalizer>,
    /// The precision the run trained in.
    precision: lstm_wgpu::model::precision::Precision,
    /// The best validation loss so far (infinite before the first).
    best_val: f64,
    /// The loss histories so far (for `--plot`).
    curve: Vec<(f64, f64)>,
    val_curve: Vec<(f64, f64)>,
}

/// Reads a checkpoint and checks it as strictly as the command line: its
/// settings as [`resolve`] does, no tensor a reader would ignore (see
/// [`Accepted`]), finite values, variances and counters >= 0, and the step
/// counters within the run. Errors name the file and the setting or tensor.
fn load_checkpoint(path: &Path) -> Result<Loaded> {
    let file = TensorFile::read(path)?;
    let cfg = file
        .metadata
        .get("config")
        .ok_or_else(|| Error::file(path, "not an lstm-wgpu checkpoint (no `config` metadata)"))?;
    let bad = |e: &dyn std::fmt::Display| Error::file(path, format!("bad `config` metadata: {e}"));
    let config: RunConfig = toml::from_str(cfg).map_err(|e| bad(&e))?;
    validate_config(&config).map_err(|e| bad(&e))?;
    // The names do not depend on the sizes the data gives the head.
    let head = match config.task.as_str() {
        "text" => Head::Language {
            vocab: 1,
            embed: config.embed,
        },
        _ => Head::Regression {
            features: 1,
            outputs: config.horizon,
        },
    };
    let optim = optim_config(&config)?;
    let net = net_with(&config, head)?;
    // Sizes first: the names of an impossible model would not fit memory.
    net.check_size(config.seq_len, config.batch, &size_limits(None))
        .map_err(|e| bad(&e))?;
    Accepted::model(&net)
        .with_state(&optim.state_names())
        .check(&file, "a checkpoint of this run's model and optimizer")?;
    let (floats, ints) = file.params_and_counters().map_err(in_file(path))?;
    check_signs(&floats, &ints, path)?;
    let out_of_range = |name: &str, v: i64, max: i64, what: &str| {
        Error::tensor(
            name,
            format!("{v} in {}: expected 0..={max} ({what})", path.display()),
        )
    };
    let step = ints.get("train.step").copied().unwrap_or(0);
    if step > config.steps as i64 {
        return Err(out_of_range(
            "train.step",
            step,
            config.steps as i64,
            "the run's steps",
        ));
    }
    for name in [lstm_wgpu::kernels::optim::STEP_NAME, "train.skipped"] {
        if let Some(&v) = ints.get(name)
            && v > step
        {
            return Err(out_of_range(name, v, step, "train.step"));
        }
    }
    let best_val = match file.metadata.get("best_val") {
        None => f64::INFINITY,
        Some(v) => match v.parse::<f64>() {
            Ok(b) if b >= 0.0 => b,
            _ => {
                return Err(Error::file(
                    path,
                    format!(
                        "bad `best_val` metadata `{}`: expected a loss >= 0 or inf",
                        clip(v)
                    ),
                ));
            }
        },
    };
    if let Some(t) = floats.iter().find(|t| t.name == SCALER_NAME) {
        scaler_from(&t.data, path)?;
    }
    let curve = curve_from(&floats, CURVE_NAME, path)?;
    let val_curve = curve_from(&floats, VAL_CURVE_NAME, path)?;
    let precision = checkpoint_precision(&file)?;
    // A run's data metadata must be there, and no other: without it a
    // resume would refit it and a reader would misread the model.
    let need = data_metadata(&config);
    for key in ["vocab", "normalizer"] {
        let has = file.metadata.contains_key(key);
        match need {
            Some((k, what)) if k == key && !has => {
                return Err(Error::file(
                    path,
                    format!(
                        "no `{key}` metadata ({what}), which a {} checkpoint on {} needs; \
                         the file is incomplete",
                        config.task,
                        describe_data(&config)
                    ),
                ));
            }
            _ if has && need.is_none_or(|(k, _)| k != key) => {
                return Err(Error::file(
                    path,
                    format!(
                        "`{key}` metadata, which a {} checkpoint on {} does not have",
                        config.task,
                        describe_data(&config)
                    ),
                ));
            }
            _ => {}
        }
    }
    let meta = |key: &str| file.metadata.get(key).map(String::as_str);
    let bad_meta =
        |key: &'static str| move |e: Error| Error::file(path, format!("bad `{key}` metadata: {e}"));
    let vocab = meta("vocab")
        .map(|v| Vocab::load(v).map_err(bad_meta("vocab")))
        .transpose()?;
    let norm = meta("normalizer")
        .map(|v| Normalizer::from_metadata(v).map_err(bad_meta("normalizer")))
        .transpose()?;
    Ok(Loaded {
        config,
        file,
        vocab,
        norm,
        precision,
        best_val,
        curve,
        val_curve,
    })
}

fn counter(f: &TensorFile, name: &str) -> Result<i64> {
    match f.ints(name)? {
        Some((_, v)) if v.len() == 1 => Ok(v[0]),
        _ => Err(Error::tensor(
            name,
            format!("missing from {}", f.path.display()),
        )),
    }
}

/// On `--resume`, refuses a setting of `x` that would change the model or
/// its data from the checkpoint's `c`; `from` names the `--config` file the
/// settings came from, if any.
fn check_fixed(x: &TrainArgs, c: &RunConfig, from: Option<&Path>) -> Result<()> {
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

/// The run's settings: `--config` merged under the flags, output paths
/// checked, and on `--resume` the stored settings with the flags that may
/// change them (the others refused by name).
fn settings(a: TrainArgs) -> Result<(TrainArgs, RunConfig, Option<Loaded>)> {
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
            validate_config(&c)?;
            c
        }
        None => resolve(&a)?,
    };
    Ok((a, c, resumed))
}

/// Runs `train`.
pub fn train(a: TrainArgs, verbose: bool) -> Result<()> {
    let (a, mut c, resumed) = settings(a)?;
    check_schedule_flags(&a, &c.schedule)?;
    check_batch_size(&c)?;
    let data = load_data(
        &c,
        resumed.as_ref().and_then(|l| l.vocab.clone()),
        resumed.as_ref().and_then(|l| l.norm.clone()),
    )?;
    // Said once every check has passed, so a refusal stays one line.
    let mut notes = Vec::new();
    if resumed.is_none()
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
    if let Data::Series(_, sel) = &data {
        notes.push(describe_columns(&c, sel));
    }
    check_splits(&c, &data)?;
    let net = net_of(&c, &data)?;
    net.check_size(run_seq_len(&c, &data), c.batch, &size_limits(None))?;
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
        return dump_data(p, &c, &data, total);
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
    let mut st = RunState {
        step: 0,
        skipped: 0,
        best_val: f64::INFINITY,
        bad_vals: 0,
    };
    let mut curve: Vec<(f64, f64)> = Vec::new();
    let mut val_curve: Vec<(f64, f64)> = Vec::new();
    if let Some(l) = &resumed {
        st.step = counter(&l.file, "train.step")? as usize;
        st.skipped = counter(&l.file, "train.skipped")? as usize;
        st.bad_vals = counter(&l.file, "train.bad_vals")? as usize;
        st.best_val = l.best_val;
        curve = l.curve.clone();
        val_curve = l.val_curve.clone();
        if total < st.step {
            return Err(Error::Invalid(format!(
                "--steps {total}: {} is already at step {}",
                l.file.path.display(),
                st.step
            )));
        }
    }
    let sched = schedule_of(&c, total);
    sched.validate()?;
    // The metrics file is read now, written at the first checkpoint.
    let mut log = match (&a.metrics, &resumed) {
        (Some(p), Some(_)) => Some(MetricsBuffer::resume(p, st.step)?),
        (Some(p), None) => Some(MetricsBuffer::new(p)),
        (None, _) => None,
    };
    let weights = Weights {
        values,
        source: source.as_ref(),
        resumed: resumed.as_ref(),
        step: st.step,
    };
    let mut tr = build_trainer(&a, &c, &net, &data, weights, verbose)?;
    let first_step = st.step;
    let bar = if a.no_progress || stop <= st.step {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new((stop - st.step) as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {per_sec} {msg}",
            )
            .map_err(|e| Error::Invalid(e.to_string()))?,
        );
        b
    };
    notes.iter().for_each(|n| eprintln!("{n}"));
    eprintln!(
        "train: task {}, data {}, {} params, LSTM({} -> {}, {} layers{}), batch {}, seq {}{}, {} steps ({} per epoch), {} lr {}",
        c.task,
        describe_data(&c),
        tr.lstm.model.table.total,
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
    let start = std::time::Instant::now();
    let mut last_val: Option<ValReport> = None;
    let mut tokens = 0usize;
    let mut stopped_early = false;
    // Steps are pipelined: the next is submitted before the previous one's
    // loss is read (Trainer::submit), except across a validation or
    // checkpoint step, which must see the parameters right after it.
    let boundary = |n: usize| n.is_multiple_of(c.val_every) || n == total || n == stop;
    let mut submitted = st.step;
    let mut in_flight: std::collections::VecDeque<(usize, f64)> = Default::default();
    while st.step < stop {
        while submitted < stop
            && submitted - st.step < lstm_wgpu::kernels::optim::MAX_IN_FLIGHT
            && (submitted == st.step || !boundary(submitted))
        {
            let (t, batch, carry) = train_batch(&c, &data, submitted)?;
            let lr = sched.lr(c.lr, submitted + 1);
            tr.submit(t, &batch.view(), carry, lr)?;
            in_flight.push_back((t, lr));
            submitted += 1;
        }
        let s = tr
            .next_stats()?
            .ok_or_else(|| Error::Gpu("a submitted step left no statistics".into()))?;
        let (t, lr) = in_flight
            .pop_front()
            .ok_or_else(|| Error::Gpu("step bookkeeping out of order".into()))?;
        st.step += 1;
        tokens += t * c.batch;
        if verbose
            && st.step == 1
            && let Some((d, sub)) = tr.dispatches_per_step(t)
        {
            say(
                &bar,
                format!("dispatches per step: {d} in {sub} submit (T = {t})"),
            );
        }
        if s.skipped {
            st.skipped += 1;
        }
        let rate = tokens as f64 / start.elapsed().as_secs_f64().max(1e-9);
        if let Some(l) = &mut log {
            l.log(&[
                ("step", Value::Int(st.step as i64)),
                ("loss", Value::Float(s.loss as f64)),
                ("grad_norm", Value::Float(s.grad_norm as f64)),
                ("lr", Value::Float(lr)),
                ("skipped", Value::Bool(s.skipped)),
                ("skipped_total", Value::Int(st.skipped as i64)),
                ("loss_scale", Value::Float(s.loss_scale as f64)),
                ("tokens_per_s", Value::Float(rate)),
            ])?;
        }
        curve.push((st.step as f64, s.loss as f64));
        bar.set_message(format!("loss {:.4} lr {lr:.2e} {rate:.0} tok/s", s.loss));
        bar.inc(1);
        // A stop between validations (--stop-after) writes the checkpoint
        // without validating, so that resuming runs as uninterrupted.
        let val_due = st.step.is_multiple_of(c.val_every) || st.step == total;
        if val_due || st.step == stop {
            if !val_due {
                say(&bar, format!("step {:>6}  loss {:.4}", st.step, s.loss));
            } else if let Some(rep) = validate(&mut tr, &c, &data)? {
                let v = rep.loss;
                val_curve.push((st.step as f64, v));
                let mut fields = vec![
                    ("step", Value::Int(st.step as i64)),
                    ("val_loss", Value::Float(v)),
                ];
                let mut line = format!("step {:>6}  loss {:.4}  val_loss {v:.4}", st.step, s.loss);
                if let Some(m) = &rep.series {
                    fields.extend(series_fields(m));
                    line += &format!(
                        " (naive {:.4})  val_mae {:.4} (naive {:.4})",
                        m.naive.mse, m.model.mae, m.naive.mae
                    );
                }
                if let Some(l) = &mut log {
                    l.log(&fields)?;
                }
                say(&bar, line);
                last_val = Some(rep);
                if v < st.best_val {
                    st.best_val = v;
                    st.bad_vals = 0;
                    if let Some(p) = &a.checkpoint {
                        let curves = [&curve[..], &val_curve[..]];
                        save_checkpoint(&best_path(p), &tr, &c, &data, &st, curves)?;
                    }
                } else {
                    st.bad_vals += 1;
                }
            } else {
                say(&bar, format!("step {:>6}  loss {:.4}", st.step, s.loss));
            }
            if let Some(p) = &a.checkpoint {
                save_checkpoint(p, &tr, &c, &data, &st, [&curve, &val_curve])?;
            }
            // The metrics file holds what the checkpoint does.
            if let Some(l) = &mut log {
                l.flush()?;
            }
            if let Some(pat) = c.patience
                && val_due
                && st.bad_vals >= pat
            {
                say(
                    &bar,
                    format!("early stop: no improvement in {pat} validations"),
                );
                stopped_early = true;
                break;
            }
        }
    }
    bar.finish_and_clear();
    // A run of no steps (--steps 0, --epochs 0) still writes its
    // checkpoint: the initial model (or the resumed one, as it stands).
    if st.step == first_step
        && let Some(p) = &a.checkpoint
    {
        save_checkpoint(p, &tr, &c, &data, &st, [&curve, &val_curve])?;
    }
    if let Some(l) = &mut log {
        l.flush()?;
    }
    let secs = start.elapsed().as_secs_f64();
    let series = last_val.as_ref().and_then(|r| r.series);
    if let Some(p) = &a.plot {
        write_plot(p, &c, &data, series.as_ref(), [&curve, &val_curve])?;
    }
    let scale = tr.scaler_state()?.map(|s| s.scale);
    let speed = tokens as f64 / secs.max(1e-9);
    let end = RunEnd {
        secs,
        speed,
        series,
        scale,
        stopped_early,
    };
    crate::cli::out::line(final_line(&st, [&curve, &val_curve], &end))
}

/// Where a run's weights come from: fresh `values`, or those of `source`
/// (a checkpoint or an `--init` file) with, on resume, the optimizer,
/// carried state and loss scaler of `resumed` at step `step`.
struct Weights<'a> {
    values: Vec<f32>,
    source: Option<&'a Source>,
    resumed: Option<&'a Loaded>,
    step: usize,
}

/// A checkpoint's or `--init` file's tensors and counters, and its path.
type Source = ((Vec<NamedTensor>, BTreeMap<String, i64>), PathBuf);

/// Opens the GPU and builds the trainer: precision, loss scaler, and the
/// weights and optimizer state of `w`.
fn build_trainer(
    a: &TrainArgs,
    c: &RunConfig,
    net: &NetConfig,
    data: &Data,
    w: Weights<'_>,
    verbose: bool,
) -> Result<Trainer> {
    let ctx = open_gpu(verbose)?;
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
    let (precision, warning) = lstm_wgpu::model::precision::resolve(choice, &ctx, &net.norm)?;
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    let mut tr = Trainer::new(ctx, net.clone(), w.values, c.batch, c.clip_norm, &oc)?;
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

/// The SVG of the loss curves, with the naive baseline's loss on series.
fn write_plot(
    p: &Path,
    c: &RunConfig,
    data: &Data,
    series: Option<&SeriesMetrics>,
    [curve, val_curve]: [&[(f64, f64)]; 2],
) -> Result<()> {
    let title = format!(
        "lstm-wgpu {} on {}",
        c.task,
        c.data
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("built-in {}", c.dataset))
    );
    let (val_name, naive_name, naive) = match (series, data) {
        (Some(m), Data::Series(_, sel)) => {
            let (a, b) = (val_curve.first(), val_curve.last());
            let unit = &sel.table.target_name;
            (
                format!(
                    "val loss (last: MAE {:.4}, RMSE {:.4} {unit})",
                    m.model.mae, m.model.rmse
                ),
                format!(
                    "naive last-value loss {:.4} (MAE {:.4}, RMSE {:.4} {unit})",
                    m.naive.mse, m.naive.mae, m.naive.rmse
                ),
                a.zip(b)
                    .map(|(a, b)| vec![(a.0, m.naive.mse), (b.0, m.naive.mse)])
                    .unwrap_or_default(),
            )
        }
        _ => ("val loss".to_string(), String::new(), Vec::new()),
    };
    let mut lines: Vec<(&str, &[(f64, f64)])> = vec![("train loss", curve), (&val_name, val_curve)];
    if !naive.is_empty() {
        lines.push((&naive_name, &naive));
    }
    io::write_atomic(p, loss_svg(&title, &lines).as_bytes())?;
    Ok(())
}

/// How a run ended, for its final line.
struct RunEnd {
    secs: f64,
    /// Tokens per second.
    speed: f64,
    series: Option<SeriesMetrics>,
    /// The loss scale, when a scaler ran.
    scale: Option<f32>,
    stopped_early: bool,
}

/// The `final: …` line on stdout.
fn final_line(st: &RunState, [curve, val_curve]: [&[(f64, f64)]; 2], end: &RunEnd) -> String {
    let last = curve
        .last()
        .map_or_else(|| "-".to_string(), |p| format!("{:.5}", p.1));
    format!(
        "final: step {} train_loss {last} val_loss {} best_val {} skipped {} time {:.1}s tokens/s {:.0}{}",
        st.step,
        val_curve
            .last()
            .map(|v| format!("{:.5}", v.1))
            .unwrap_or_else(|| "-".into()),
        if st.best_val.is_finite() {
            format!("{:.5}", st.best_val)
        } else {
            "-".into()
        },
        st.skipped,
        end.secs,
        end.speed,
        end.series
            .map(|m| format!(
                " naive_val_loss {:.5} val_mae {:.5} val_rmse {:.5} naive_mae {:.5} naive_rmse {:.5} val_windows {}",
                m.naive.mse, m.model.mae, m.model.rmse, m.naive.mae, m.naive.rmse, m.windows
            ))
            .unwrap_or_default()
            + &end
                .scale
                .map(|s| format!(" loss_scale {s}"))
                .unwrap_or_default()
            + if end.stopped_early { " (early stop)" } else { "" }
    )
}

/// The norm, dropout and residual settings, for the run's first line.
fn describe_links(c: &RunConfig) -> String {
    let mut s = String::new();
    if c.norm != "none" {
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
    s
}

/// A line to stderr that does not tear the progress bar.
fn say(bar: &indicatif::ProgressBar, msg: String) {
    if bar.is_hidden() {
        eprintln!("{msg}");
    } else {
        bar.println(msg);
    }
}

fn best_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(".best");
    PathBuf::from(s)
}

/// Checks every output path of `train` before anything runs (see
/// [`io::check_output`]). The checkpoint may be the `--resume` file: that
/// is how a run continues in place.
fn check_outputs(a: &TrainArgs) -> Result<()> {
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
    // Two outputs at one file would overwrite each other.
    let best = a.checkpoint.as_deref().map(best_path);
    let outputs: Vec<(&str, &Path)> = [
        ("--checkpoint", a.checkpoint.as_deref()),
        ("--checkpoint (its .best)", best.as_deref()),
        ("--metrics", a.metrics.as_deref()),
        ("--plot", a.plot.as_deref()),
        ("--dump-data", a.dump_data.as_deref()),
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
fn check_batch_size(c: &RunConfig) -> Result<()> {
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

/// The longest window of a run: text windows end with the streams.
fn run_seq_len(c: &RunConfig, data: &Data) -> usize {
    match data {
        Data::Text(t) => c.seq_len.min(t.train.stream_len().saturating_sub(1)).max(1),
        Data::Copy(k) => k.seq_len(),
        Data::Series(..) => c.seq_len,
        Data::Adding(k) => k.seq_len,
    }
}

/// Refuses a `--dump-data` of `steps` training batches (and the
/// validation batches) of `bytes_per_batch` over the host budget, before
/// anything is built: the tensors and the file's bytes are both held.
fn check_dump_size(steps: usize, bytes_per_batch: usize) -> Result<()> {
    let n = steps.saturating_add(VAL_BATCHES) as u128;
    let bytes = n.saturating_mul(bytes_per_batch as u128).saturating_mul(2);
    let budget = host_budget();
    if bytes > budget as u128 {
        return Err(Error::Invalid(format!(
            "--dump-data: {steps} steps (--steps) of {bytes_per_batch} bytes need {} bytes, \
             over the host budget of {budget} bytes; dump fewer steps",
            u64::try_from(bytes).map_or("more than 2^64".into(), |b| b.to_string())
        )));
    }
    Ok(())
}

/// Arguments of `generate`.
#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// A text checkpoint written by `train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Text to start from (its characters must be in the vocabulary).
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// Characters to generate.
    #[arg(long, default_value_t = 200)]
    pub length: usize,
    /// Softmax temperature (> 0).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Sample only among the k most likely characters (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs `generate`: prints the prompt and the sampled continuation.
pub fn generate(a: &GenerateArgs, verbose: bool) -> Result<()> {
    if !(a.temperature > 0.0 && a.temperature.is_finite()) {
        return Err(Error::Invalid(format!(
            "--temperature {}: expected a positive number",
            num(a.temperature)
        )));
    }
    let l = load_checkpoint(&a.checkpoint)?;
    let vocab = l.vocab.clone().ok_or_else(|| {
        Error::file(
            &a.checkpoint,
            format!(
                "a {} checkpoint on {}: generate samples from text checkpoints trained on text",
                l.config.task,
                describe_data(&l.config)
            ),
        )
    })?;
    let c = l.config.clone();
    let net = net_with(
        &c,
        Head::Language {
            vocab: vocab.len(),
            embed: c.embed,
        },
    )?;
    net.check_size(1, 1, &size_limits(None))?;
    let (floats, ints) = l.file.params_and_counters()?;
    let values = values_from(&net, &floats, &a.checkpoint)?;
    let mut prompt = vocab.encode(&a.prompt)?;
    if prompt.is_empty() {
        prompt.push(0);
    }
    check_length(a, &vocab)?;
    let ctx = open_gpu(verbose)?;
    let mut tr = Trainer::new(ctx, net, values, 1, None, &OptimConfig::sgd())?;
    restore_model(&mut tr, &floats, &ints, &a.checkpoint)?;
    let mut rng = Rng::new(a.seed);
    // The text streams out as it is sampled (a line, or 64 bytes, at a
    // time): memory does not grow with --length, and `| head` stops it.
    let mut out = a.prompt.clone();
    let mut carry = Carry::Zero;
    // The prompt primes the state; its last position gives the first logits.
    let mut logits = Vec::new();
    for &id in &prompt {
        tr.eval(1, &StepData::tokens(&[id], &[0]), carry)?;
        carry = Carry::Continue;
        logits = tr.head_output(1)?;
    }
    for _ in 0..a.length {
        let mut idx: Vec<usize> = (0..logits.len()).collect();
        idx.sort_by(|&x, &y| logits[y].total_cmp(&logits[x]));
        if a.top_k > 0 {
            idx.truncate(a.top_k);
        }
        let m = logits[idx[0]] as f64;
        let w: Vec<f64> = idx
            .iter()
            .map(|&i| ((logits[i] as f64 - m) / a.temperature).exp())
            .collect();
        let mut r = rng.uniform(0.0, w.iter().sum());
        let mut pick = idx[idx.len() - 1];
        for (k, &i) in idx.iter().enumerate() {
            if r < w[k] {
                pick = i;
                break;
            }
            r -= w[k];
        }
        out.push_str(&vocab.decode(&[pick as u32]));
        if out.len() >= 64 || out.ends_with('\n') {
            crate::cli::out::text(&out)?;
            out.clear();
        }
        tr.eval(1, &StepData::tokens(&[pick as u32], &[0]), carry)?;
        logits = tr.head_output(1)?;
    }
    crate::cli::out::line(out)?;
    Ok(())
}

/// Refuses a `--length` whose text (the prompt and `--length` characters
/// of the vocabulary's longest UTF-8 form) would exceed the host budget.
/// The text is streamed, not held, but a length past any output the
/// machine could take is a mistake to refuse at once, not to run for days.
fn check_length(a: &GenerateArgs, vocab: &Vocab) -> Result<()> {
    let widest = vocab.chars.iter().map(|c| c.len_utf8()).max().unwrap_or(4);
    let bytes = (a.length as u128)
        .saturating_mul(widest as u128)
        .saturating_add(a.prompt.len() as u128 + 1);
    let budget = host_budget();
    if bytes > budget as u128 {
        return Err(Error::Invalid(format!(
            "--length {}: the text would take up to {bytes} bytes, over the host budget of \
             {budget} bytes; generate less",
            a.length
        )));
    }
    Ok(())
}

/// Arguments of `predict`.
#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// A series checkpoint written by `train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// CSV with the checkpoint's feature and target columns.
    #[arg(long)]
    pub data: PathBuf,
    /// Windows to predict: all, or the train or val split of the
    /// checkpoint's --val-fraction (val reproduces train's val_loss).
    #[arg(long, default_value = "all", value_parser = ["all", "train", "val"])]
    pub split: String,
    /// Also continue the series N steps past its last row, feeding the
    /// predictions back (every feature must be the target or a column with
    /// a constant step); the output then has one line per row.
    #[arg(long, value_name = "N", conflicts_with = "split")]
    pub future: Option<usize>,
    /// Time column labelling the output rows (default: the checkpoint's
    /// --time, else a non-numeric first column, else a time-like column).
    #[arg(long)]
    pub time: Option<String>,
    /// Missing cells: error | drop | ffill | interpolate (default: the
    /// checkpoint's --missing).
    #[arg(long)]
    pub missing: Option<String>,
    /// Windows per GPU pass.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
}

/// Runs `predict`. Without `--future`: one CSV line per window (the time of
/// its first target when the CSV has a time column, the window index, the
/// actual target values, the predictions), all in the target's units. With
/// `--future N`: one line per row (time, row, actual, the one-step-ahead
/// prediction of the window before it), then N forecast rows. A summary with
/// MAE and RMSE beside the naive last-value forecast's goes to stderr.
pub fn predict(a: &PredictArgs, verbose: bool) -> Result<()> {
    if a.batch == 0 {
        return Err(Error::Invalid("--batch must be at least 1".into()));
    }
    let l = load_checkpoint(&a.checkpoint)?;
    let norm = l.norm.clone().ok_or_else(|| {
        Error::file(
            &a.checkpoint,
            format!(
                "a {} checkpoint on {}: predict runs series checkpoints trained on a CSV or a \
                 generated series",
                l.config.task,
                describe_data(&l.config)
            ),
        )
    })?;
    let mut c = l.config.clone();
    c.data = Some(a.data.clone());
    if let Some(t) = &a.time {
        c.time = Some(t.clone());
    }
    if let Some(m) = &a.missing {
        Missing::parse(m)?;
        c.missing = m.clone();
    }
    if a.split == "all" {
        c.val_fraction = 0.0;
    }
    // The checkpoint's columns, by name: a CSV with its columns in another
    // order, or with more numeric columns, selects the same ones.
    if c.features.is_none() {
        let names: Vec<&str> = norm.features.iter().map(|f| f.name.as_str()).collect();
        c.features = Some(names.join(","));
    }
    if c.target.is_none() {
        c.target = Some(norm.target.name.clone());
    }
    check_future_size(a.future, &c, norm.features.len())?;
    let sel = series_table(&c)?;
    norm.check_matches(&sel.table)
        .map_err(|e| Error::file(&a.data, e))?;
    let (t_len, k) = (c.seq_len, c.horizon);
    let n = sel.table.len();
    if a.future.is_none() && n < t_len.saturating_add(k) {
        return Err(Error::file(
            &a.data,
            format!(
                "{n} rows{}, too few to predict: one window takes the checkpoint's --seq-len \
                 {t_len} rows as input and the next --horizon {k} as targets ({} rows); give a \
                 longer series",
                if c.missing == "drop" {
                    " kept (--missing drop)"
                } else {
                    ""
                },
                t_len.saturating_add(k)
            ),
        ));
    }
    // Windows exist when a target follows seq_len rows; --future needs none.
    let ds = if n >= t_len + k || a.future.is_none() {
        let sc = SeriesConfig {
            seq_len: t_len,
            horizon: k,
            val_fraction: c.val_fraction,
        };
        Some(
            SeriesDataset::with_normalizer(&sel.table, &sc, norm.clone())
                .map_err(|e| Error::file(&a.data, e))?,
        )
    } else {
        None
    };
    let set = match (&ds, a.split.as_str()) {
        (Some(d), "val") => Some(d.val.as_ref().ok_or_else(|| {
            Error::file(
                &a.data,
                format!(
                    "--split val: --val-fraction {} of {n} rows holds out no validation rows",
                    c.val_fraction
                ),
            )
        })?),
        (Some(d), _) => Some(&d.train),
        (None, _) => None,
    };
    if a.future.is_some() && n < t_len {
        return Err(Error::file(
            &a.data,
            format!(
                "--future needs the last {t_len} rows (the checkpoint's --seq-len); it has {n}"
            ),
        ));
    }
    let cont = match a.future {
        Some(_) => Some(
            lstm_wgpu::train::forecast::continuations(&sel.table)
                .map_err(|e| Error::file(&a.data, e))?,
        ),
        None => None,
    };
    let windows: Vec<usize> = (0..set.map_or(0, |s| s.len())).collect();
    let features = sel.table.num_features();
    let net = net_with(
        &c,
        Head::Regression {
            features,
            outputs: k,
        },
    )?;
    let b = a.batch.min(windows.len().max(1));
    net.check_size(t_len, b, &size_limits(None))?;
    let (floats, ints) = l.file.params_and_counters()?;
    let values = values_from(&net, &floats, &a.checkpoint)?;
    let ctx = open_gpu(verbose)?;
    net.check_size(t_len, b, &size_limits(Some(&ctx)))?;
    // The windows run in batches of b, the recursive forecast one window
    // a pass: one model each, the first dropped before the second exists.
    let model = |batch: usize| -> Result<Trainer> {
        let opt = OptimConfig::sgd();
        let mut tr = Trainer::new(ctx.clone(), net.clone(), values.clone(), batch, None, &opt)?;
        restore_model(&mut tr, &floats, &ints, &a.checkpoint)?;
        Ok(tr)
    };
    eprintln!("{}", describe_columns(&c, &sel));
    let pred = match set {
        Some(s) if !windows.is_empty() => predict_windows(&mut model(b)?, s, &windows)?,
        _ => Vec::new(),
    };
    let future = match (a.future, &cont) {
        (Some(steps), Some(cont)) => lstm_wgpu::train::forecast::forecast(
            &mut model(1)?,
            &sel.table,
            &norm,
            t_len,
            k,
            steps,
            cont,
        )
        .map_err(|e| Error::file(&a.data, e))?,
        _ => Vec::new(),
    };
    let target = &sel.table.target;
    let tname = &sel.table.target_name;
    let time = sel.time.as_ref();
    let cell = |r: usize| time.map(|tc| format!("{},", csv_cell(&tc.values[r])));
    let time_head = time
        .map(|tc| format!("{},", csv_cell(&tc.name)))
        .unwrap_or_default();
    match (a.future, set) {
        (None, Some(s)) => {
            let names: Vec<String> = (1..=k)
                .map(|j| csv_cell(&format!("{tname}_t+{j}")))
                .chain((1..=k).map(|j| csv_cell(&format!("pred_{tname}_t+{j}"))))
                .collect();
            crate::cli::out::line(format!("{time_head}window,{}", names.join(",")))?;
            for (i, &w) in windows.iter().enumerate() {
                let r0 = s.first_target_row(w);
                let mut row = cell(r0).unwrap_or_default() + &w.to_string();
                for j in 0..k {
                    row += &format!(",{}", target[r0 + j]);
                }
                for j in 0..k {
                    row += &format!(",{}", norm.target.denormalize(pred[i * k + j] as f64));
                }
                crate::cli::out::line(row)?;
            }
        }
        _ => {
            crate::cli::out::line(format!(
                "{time_head}row,{},{}",
                csv_cell(tname),
                csv_cell(&format!("pred_{tname}"))
            ))?;
            // The one-step-ahead prediction of row r comes from the window
            // ending at r - 1 (window r - seq_len).
            for (r, actual) in target.iter().enumerate() {
                let p = r
                    .checked_sub(t_len)
                    .filter(|w| *w < windows.len())
                    .map(|w| norm.target.denormalize(pred[w * k] as f64).to_string())
                    .unwrap_or_default();
                crate::cli::out::line(format!(
                    "{}{},{},{p}",
                    cell(r).unwrap_or_default(),
                    r + 1,
                    actual
                ))?;
            }
            let times = time
                .map(|tc| extend_times(&tc.values, future.len()))
                .unwrap_or_default();
            for (i, y) in future.iter().enumerate() {
                let t = times.get(i).map(|t| format!("{},", csv_cell(t))).unwrap_or(
                    if time.is_some() {
                        ",".into()
                    } else {
                        String::new()
                    },
                );
                crate::cli::out::line(format!("{t}{},,{y}", n + i + 1))?;
            }
        }
    }
    if let Some(s) = set
        && !windows.is_empty()
    {
        let m = SeriesMetrics::of(s, &windows, &pred, target, &norm);
        eprintln!(
            "predict: {} window{} ({} split of {}), target `{tname}`: MAE {:.6} RMSE {:.6}; \
             naive last value: MAE {:.6} RMSE {:.6}; MSE of z-scores {:.6} (naive {:.6})",
            m.windows,
            if m.windows == 1 { "" } else { "s" },
            a.split,
            a.data.display(),
            m.model.mae,
            m.model.rmse,
            m.naive.mae,
            m.naive.rmse,
            m.model.mse,
            m.naive.mse
        );
    }
    if let Some(steps) = a.future {
        eprintln!(
            "forecast: {steps} steps past row {n}, {k} at a time, predictions fed back as `{tname}`"
        );
    }
    Ok(())
}

/// Refuses a `--future` whose rows (the checkpoint's `features` columns,
/// in f64, with their time labels and output lines) exceed the host
/// budget, before anything is allocated.
fn check_future_size(future: Option<usize>, c: &RunConfig, features: usize) -> Result<()> {
    let Some(steps) = future else {
        return Ok(());
    };
    // Per row: the feature values, the row's vector, the prediction and a
    // time label (a String and its text).
    let per_row = (features as u128)
        .saturating_mul(8)
        .saturating_add(24 + 8 + 24 + 32);
    let bytes = (steps as u128)
        .saturating_add(c.seq_len as u128)
        .saturating_mul(per_row);
    let budget = host_budget();
    if bytes > budget as u128 {
        return Err(Error::Invalid(format!(
            "--future {steps}: the forecast rows need {} bytes, over the host budget of \
             {budget} bytes; forecast fewer steps",
            u64::try_from(bytes).map_or("more than 2^64".into(), |b| b.to_string())
        )));
    }
    Ok(())
}

/// A CSV cell: quoted when it holds a comma, a quote or a line break.
fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The next `n` values of a time column with a constant step: numbers, or
/// dates `YYYY-MM-DD` / `YYYY-MM` stepping by days or by months; empty
/// strings when the step is not constant.
fn extend_times(values: &[String], n: usize) -> Vec<String> {
    if let Some(v) = extend_dates(values, n) {
        return v;
    }
    let nums: Option<Vec<f64>> = values.iter().map(|v| v.parse::<f64>().ok()).collect();
    if let Some(v) = nums
        && let Some(d) = lstm_wgpu::train::forecast::constant_step(&v)
    {
        let last = v[v.len() - 1];
        let ints = v.iter().all(|x| x.fract() == 0.0) && d.fract() == 0.0;
        return (1..=n)
            .map(|i| {
                let x = last + d * i as f64;
                if ints {
                    format!("{x:.0}")
                } else {
                    format!("{x}")
                }
            })
            .collect();
    }
    vec![String::new(); n]
}

/// [`extend_times`] for dates, when every value is one and the step is
/// constant.
fn extend_dates(values: &[String], n: usize) -> Option<Vec<String>> {
    let dates: Vec<(i64, i64, Option<i64>)> = values
        .iter()
        .map(|v| parse_date(v))
        .collect::<Option<_>>()
        .filter(|d: &Vec<_>| d.len() >= 2)?;
    let compact = !values[0].contains('-');
    let fmt = |y: i64, m: i64, d: Option<i64>| match (d, compact) {
        (Some(d), true) => format!("{y:04}{m:02}{d:02}"),
        (Some(d), false) => format!("{y:04}-{m:02}-{d:02}"),
        (None, _) => format!("{y:04}-{m:02}"),
    };
    let months: Vec<f64> = dates.iter().map(|d| (d.0 * 12 + d.1 - 1) as f64).collect();
    let (y, m, day) = dates[dates.len() - 1];
    // The same day of the month (or none) and a constant month step.
    if let Some(step) = lstm_wgpu::train::forecast::constant_step(&months)
        && dates.iter().all(|x| x.2 == day)
    {
        let last = months[months.len() - 1] as i64;
        return Some(
            (1..=n as i64)
                .map(|i| {
                    let t = last + step as i64 * i;
                    fmt(t.div_euclid(12), t.rem_euclid(12) + 1, day)
                })
                .collect(),
        );
    }
    let day = day?;
    let days: Vec<f64> = dates
        .iter()
        .map(|d| days_from_civil(d.0, d.1, d.2.unwrap_or(1)) as f64)
        .collect();
    let step = lstm_wgpu::train::forecast::constant_step(&days)? as i64;
    let last = days_from_civil(y, m, day);
    Some(
        (1..=n as i64)
            .map(|i| {
                let (yy, mm, dd) = civil_from_days(last + step * i);
                fmt(yy, mm, Some(dd))
            })
            .collect(),
    )
}

/// `YYYY-MM-DD`, `YYYYMMDD` or `YYYY-MM` as (year, month, day).
fn parse_date(s: &str) -> Option<(i64, i64, Option<i64>)> {
    let s = s.trim();
    let p: Vec<&str> = if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
        vec![&s[..4], &s[4..6], &s[6..]]
    } else {
        s.split('-').collect()
    };
    let num = |x: &str, len: usize| {
        (x.len() == len && x.bytes().all(|b| b.is_ascii_digit()))
            .then(|| x.parse::<i64>().ok())
            .flatten()
    };
    let (y, m) = (num(p.first()?, 4)?, num(p.get(1)?, 2)?);
    if !(1..=12).contains(&m) {
        return None;
    }
    match p.len() {
        2 => Some((y, m, None)),
        3 => num(p[2], 2)
            .filter(|d| (1..=31).contains(d))
            .map(|d| (y, m, Some(d))),
        _ => None,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The date of a day count of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_columns_extend() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(extend_times(&s(&["1700", "1701"]), 2), ["1702", "1703"]);
        assert_eq!(extend_times(&s(&["0.5", "1"]), 1), ["1.5"]);
        assert_eq!(
            extend_times(&s(&["2024-12-28", "2025-01-04"]), 2),
            ["2025-01-11", "2025-01-18"]
        );
        assert_eq!(
            extend_times(&s(&["1958-11-01", "1958-12-01"]), 2),
            ["1959-01-01", "1959-02-01"]
        );
        assert_eq!(extend_times(&s(&["1949-11", "1949-12"]), 1), ["1950-01"]);
        assert_eq!(extend_times(&s(&["a", "b"]), 2), ["", ""]);
        assert_eq!(extend_times(&s(&["19581227", "19590103"]), 1), ["19590110"]);
        assert_eq!(extend_times(&s(&["1", "2", "4"]), 1), [""]);
        for z in [-800_000, -1, 0, 59, 10_000, 20_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
    }

    #[test]
    fn csv_cells_quote_commas() {
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("a\nb"), "\"a\nb\"");
        assert_eq!(csv_cell("x"), "x");
    }
}
