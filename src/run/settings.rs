//! The settings of a run: [`Config`] as given (the flags of `lstm-wgpu
//! train`), [`RunConfig`] as resolved (defaults filled in, checked, and
//! stored in checkpoints), and what a resumed run may change.

use crate::error::{Error, Result, num};
use crate::kernels::optim::{OptimConfig, OptimKind};
use crate::model::norm::{Norm, NormKind};
use crate::run::choice::{
    ActivationChoice, AttentionChoice, CellChoice, Dataset, HeadChoice, InitWhh, InitWih,
    MissingChoice, NormChoice, Optimizer, Schedule, Task,
};
use crate::train::InitOptions;
use crate::train::lr::LrSchedule;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Every setting of a run, as `lstm-wgpu train` takes them (each field is
/// the flag of the same name, `--seq-len` = `seq_len`); `None` (or `false`)
/// takes the flag's default. Build it with `..Default::default()`:
///
/// ```
/// let c = lstm_wgpu::run::Config { hidden: Some(32), steps: Some(100), ..Default::default() };
/// assert_eq!(c.resolve().unwrap().hidden, 32);
/// ```
///
/// In TOML (a `--config` file) and from Python the names are the flags'
/// (kebab-case, or with underscores in Python).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Config {
    /// `--data`: a UTF-8 text file (task text) or a CSV with a header (task
    /// series); without it, a built-in dataset (or the data given in memory,
    /// see [`crate::run::Data`]).
    pub data: Option<PathBuf>,
    /// `--task`: text or series.
    pub task: Option<Task>,
    /// `--dataset`: the built-in dataset when there is no data.
    pub dataset: Option<Dataset>,
    /// `--embed`: embedding width (text).
    pub embed: Option<usize>,
    /// `--hidden`: hidden units per layer.
    pub hidden: Option<usize>,
    /// `--layers`: stacked layers.
    pub layers: Option<usize>,
    /// `--batch`: sequences per batch.
    pub batch: Option<usize>,
    /// `--seq-len`: steps per window.
    pub seq_len: Option<usize>,
    /// `--steps`: optimizer steps.
    pub steps: Option<usize>,
    /// `--epochs`: epochs, instead of `steps`.
    pub epochs: Option<usize>,
    /// `--optimizer`.
    pub optimizer: Option<Optimizer>,
    /// `--lr`: learning rate.
    pub lr: Option<f64>,
    /// `--weight-decay`.
    pub weight_decay: Option<f64>,
    /// `--momentum` (SGD).
    pub momentum: Option<f64>,
    /// `--clip-norm`: the global L2 norm gradients are clipped to.
    pub clip_norm: Option<f32>,
    /// `--explode-threshold`.
    pub explode_threshold: Option<f64>,
    /// `--dropout`.
    pub dropout: Option<f32>,
    /// `--cell`.
    pub cell: Option<CellChoice>,
    /// `--cell-file`: a cell written in WGSL instead of `cell`.
    pub cell_file: Option<PathBuf>,
    /// `--activation` (IndRNN).
    pub activation: Option<ActivationChoice>,
    /// `--weight-drop`.
    pub weight_drop: Option<f32>,
    /// `--zoneout-h`.
    pub zoneout_h: Option<f32>,
    /// `--zoneout-c`.
    pub zoneout_c: Option<f32>,
    /// `--proj-size`.
    pub proj_size: Option<usize>,
    /// `--head`.
    pub head: Option<HeadChoice>,
    /// `--attention`.
    pub attention: Option<AttentionChoice>,
    /// `--residual`.
    pub residual: bool,
    /// `--norm`.
    pub norm: Option<NormChoice>,
    /// `--norm-last`.
    pub norm_last: bool,
    /// `--norm-t-max`.
    pub norm_t_max: Option<usize>,
    /// `--init-whh`.
    pub init_whh: Option<InitWhh>,
    /// `--init-wih`.
    pub init_wih: Option<InitWih>,
    /// `--forget-bias`.
    pub forget_bias: Option<f32>,
    /// `--min-len` (the adding problem).
    pub min_len: Option<usize>,
    /// `--schedule`.
    pub schedule: Option<Schedule>,
    /// `--warmup` (cosine).
    pub warmup: Option<usize>,
    /// `--step-size` (step).
    pub step_size: Option<usize>,
    /// `--gamma` (step).
    pub gamma: Option<f64>,
    /// `--seed`: of the initial weights, shuffling, dropout masks and the
    /// generated datasets.
    pub seed: Option<u64>,
    /// `--precision` (f32, f16-mixed or auto); a resumed run keeps its
    /// checkpoint's unless this is given.
    #[serde(skip)]
    pub precision: Option<crate::model::precision::PrecisionChoice>,
    /// `--loss-scale`.
    #[serde(skip)]
    pub loss_scale: crate::model::precision::LossScaleChoice,
    /// `--init`: start from these weights.
    pub init: Option<PathBuf>,
    /// `--deterministic-order`.
    pub deterministic_order: bool,
    /// `--val-fraction`.
    pub val_fraction: Option<f64>,
    /// `--test-fraction` (series).
    pub test_fraction: Option<f64>,
    /// `--val-every`.
    pub val_every: Option<usize>,
    /// `--patience`.
    pub patience: Option<usize>,
    /// `--features`: comma-separated feature columns (series).
    pub features: Option<String>,
    /// `--target`: the target column (series).
    pub target: Option<String>,
    /// `--horizon`: values predicted per window (series).
    pub horizon: Option<usize>,
    /// `--missing`: what missing cells become (series).
    pub missing: Option<MissingChoice>,
    /// `--time`: the time column (series).
    pub time: Option<String>,
    /// `--checkpoint`: written at every validation and at the end, with
    /// `<checkpoint>.best` at the best validation.
    pub checkpoint: Option<PathBuf>,
    /// `--resume`: continue the run saved in this checkpoint.
    pub resume: Option<PathBuf>,
    /// `--hist-every`: steps between histograms (0: none); they are
    /// computed only where the run asks for them
    /// ([`crate::run::Prepared::start`]).
    pub hist_every: Option<u64>,
    /// `--stop-after`: stop after this many steps (from the run's start) as
    /// if interrupted, writing the checkpoint.
    pub stop_after: Option<usize>,
    /// `--bucket-mb`: data parallelism's gradient MiB per bucket
    /// ([`crate::train::Trainer::set_bucket_bytes`]); the figures do not
    /// depend on it. Only for a data-parallel run.
    pub bucket_mb: Option<f64>,
}

impl Config {
    /// The resolved settings of a new run (defaults filled in, every
    /// setting checked; errors name the setting as its flag). A resumed
    /// run's are the checkpoint's: see
    /// [`crate::run::checkpoint::resumed_config`].
    pub fn resolve(&self) -> Result<RunConfig> {
        resolve(self)
    }
}

/// The resolved settings of a run (stored in checkpoints as TOML, the
/// `config` metadata): [`Config`]'s with the defaults filled in and
/// checked. Fields may be added (older checkpoints read as before).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
#[allow(missing_docs)]
pub struct RunConfig {
    pub task: Task,
    pub data: Option<PathBuf>,
    pub dataset: Dataset,
    pub embed: usize,
    pub hidden: usize,
    pub layers: usize,
    pub batch: usize,
    pub seq_len: usize,
    pub optimizer: Optimizer,
    pub lr: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub clip_norm: Option<f32>,
    pub schedule: Schedule,
    pub warmup: usize,
    pub step_size: usize,
    pub gamma: f64,
    pub seed: u64,
    pub deterministic_order: bool,
    pub val_fraction: f64,
    pub val_every: usize,
    pub patience: Option<usize>,
    pub features: Option<String>,
    pub target: Option<String>,
    pub horizon: usize,
    /// The run's length in steps (the cosine schedule spans it).
    pub steps: usize,
    // Later settings default to what runs without them did, so older
    // checkpoints still load.
    #[serde(default)]
    pub dropout: f32,
    #[serde(default)]
    pub residual: bool,
    #[serde(default)]
    pub norm: NormChoice,
    #[serde(default)]
    pub norm_last: bool,
    #[serde(default)]
    pub norm_t_max: usize,
    #[serde(default)]
    pub init_whh: InitWhh,
    #[serde(default)]
    pub init_wih: InitWih,
    #[serde(default)]
    pub forget_bias: Option<f32>,
    #[serde(default)]
    pub min_len: Option<usize>,
    #[serde(default)]
    pub missing: MissingChoice,
    #[serde(default)]
    pub time: Option<String>,
    /// None: the clip norm, or the running median (see
    /// `crate::train::health`).
    #[serde(default)]
    pub explode_threshold: Option<f64>,
    /// None: the default ([`DEFAULT_HIST_EVERY`] where an output and the
    /// model allow, else off); 0: off.
    #[serde(default)]
    pub hist_every: Option<u64>,
    /// 0: no test split (then not written, so such a run's settings
    /// read as before).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub test_fraction: f64,
    /// The LSTM's is not written, so such a run's settings read as before.
    #[serde(default, skip_serializing_if = "is_lstm")]
    pub cell: CellChoice,
    /// 0: none (then not written, as `test_fraction`).
    #[serde(default, skip_serializing_if = "is_zero_f32")]
    pub weight_drop: f32,
    /// Zoneout of h and of c; 0: none (then not written).
    #[serde(default, skip_serializing_if = "is_zero_f32")]
    pub zoneout_h: f32,
    #[serde(default, skip_serializing_if = "is_zero_f32")]
    pub zoneout_c: f32,
    /// IndRNN's; written only when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<ActivationChoice>,
    /// The name of the `--cell-file` (instead of `cell`), and its source,
    /// so that the run resumes and infers without the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell_file: Option<String>,
    /// See `cell_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell_source: Option<String>,
    /// The last step's is not written, so such a run's settings read as
    /// before.
    #[serde(default, skip_serializing_if = "is_last")]
    pub head: HeadChoice,
    /// The scores of `--head attention` (written with it only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<AttentionChoice>,
    /// The LSTM's projection size P; 0: none (then not written).
    #[serde(default, skip_serializing_if = "is_zero_usize")]
    pub proj_size: usize,
    /// The run's data was given in memory ([`crate::run::Data::Tokens`] or
    /// [`crate::run::Data::Rows`]), not by `data` or `dataset`: a resume
    /// needs it again. Written only when true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub in_memory: bool,
}

/// The cell of run `c`: its `--cell` (and activation), or the cell file
/// its settings hold.
pub fn run_cell(c: &RunConfig) -> Result<crate::kernels::cell::Cell> {
    match (&c.cell_file, &c.cell_source) {
        (Some(name), Some(src)) => crate::kernels::cell::Cell::from_wgsl(name, src),
        (None, None) => Ok(c.cell.cell(c.activation.unwrap_or_default())),
        _ => Err(Error::Invalid(
            "cell-file and cell-source are stored together or not at all".into(),
        )),
    }
}

fn is_false(x: &bool) -> bool {
    !*x
}

fn is_zero_f32(x: &f32) -> bool {
    *x == 0.0
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

fn is_zero_usize(x: &usize) -> bool {
    *x == 0
}

fn is_last(h: &HeadChoice) -> bool {
    *h == HeadChoice::Last
}

fn is_lstm(c: &CellChoice) -> bool {
    *c == CellChoice::Lstm
}

/// Steps between histograms when --hist-every is not given.
pub const DEFAULT_HIST_EVERY: u64 = 50;

/// Steps between histograms (0: none) of run `c`: none unless they are
/// `wanted` (the command line: an output to write them to; a resumed run's
/// stored value included); else its --hist-every, or the default.
pub fn hist_every(wanted: bool, c: &RunConfig) -> u64 {
    if !wanted {
        return 0;
    }
    c.hist_every.unwrap_or(DEFAULT_HIST_EVERY)
}

/// The [`Norm`] a run's settings describe.
pub fn norm_of(c: &RunConfig) -> Norm {
    crate::infer::norm_of(c.norm.kind(), c.norm_last, c.norm_t_max)
}

/// The initialisation options of a run's settings.
pub fn init_of(c: &RunConfig) -> InitOptions {
    InitOptions {
        whh: c.init_whh.into(),
        wih: c.init_wih.into(),
        forget_bias: c.forget_bias,
    }
}

/// The resolved settings of `a` for data given by its path or dataset
/// (see [`resolve_for`]).
pub fn resolve(a: &Config) -> Result<RunConfig> {
    resolve_for(a, None)
}

/// The resolved settings of `a`, for data given in memory for `memory`
/// (its task), if any: such data takes the place of `data` and `dataset`,
/// which are then refused.
pub fn resolve_for(a: &Config, memory: Option<Task>) -> Result<RunConfig> {
    if let Some(t) = memory {
        check_memory(a, t)?;
    }
    let task = a.task.or(memory).unwrap_or(match (a.dataset, &a.data) {
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
        in_memory: memory.is_some(),
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
        let f = crate::run::choice::CellFile::read(p)?;
        c.cell_file = Some(f.name);
        c.cell_source = Some(f.source);
    }
    validate_config(&c)?;
    Ok(c)
}

/// Refuses settings that name data besides data given in memory (of
/// `task`).
fn check_memory(a: &Config, task: Task) -> Result<()> {
    if let Some(p) = &a.data {
        return Err(Error::Invalid(format!(
            "--data {}: the data is given in memory; give one or the other",
            p.display()
        )));
    }
    if let Some(d) = a.dataset {
        return Err(Error::Invalid(format!(
            "--dataset {d}: the data is given in memory; give one or the other"
        )));
    }
    match a.task {
        Some(t) if t != task => Err(Error::Invalid(format!(
            "--task {t}: the data given in memory is {}",
            match task {
                Task::Text => "token ids (task text)",
                Task::Series => "rows of a series (task series)",
            }
        ))),
        _ => Ok(()),
    }
}

/// The data of run `c`: its path, `data in memory`, or `built-in
/// <dataset>`.
pub fn describe_data(c: &RunConfig) -> String {
    match (&c.data, c.in_memory) {
        (Some(p), _) => p.display().to_string(),
        (None, true) => "data in memory".to_string(),
        (None, false) => format!("built-in {}", c.dataset),
    }
}

/// Whether run `c` has data of its own (a file, or data in memory) rather
/// than a built-in dataset.
pub fn has_data(c: &RunConfig) -> bool {
    c.data.is_some() || c.in_memory
}

/// Whether a data path names a CSV file (by its extension).
pub fn is_csv(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

/// Checks a run's settings, from the command line ([`resolve`]) or from a
/// checkpoint (`--resume`, `generate`, `predict`): the errors name the
/// setting as its flag.
pub fn validate_config(c: &RunConfig) -> Result<()> {
    if c.dataset.task() != c.task && !has_data(c) {
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
    crate::run::choice::check_zoneout(c.zoneout_h, c.zoneout_c, cell, c.norm.kind())?;
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
        if c.task != Task::Series || c.dataset != Dataset::Adding || has_data(c) {
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
    if c.task != Task::Series || !has_data(c) {
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
        && (c.task != Task::Series || c.dataset == Dataset::Adding && !has_data(c))
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
pub fn check_schedule_flags(a: &Config, schedule: Schedule) -> Result<()> {
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

pub fn optim_config(c: &RunConfig) -> Result<OptimConfig> {
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

pub fn schedule_of(c: &RunConfig, total: usize) -> LrSchedule {
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
fn check_cell_file(x: &Config, c: &RunConfig, from: Option<&Path>) -> Result<()> {
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
            let f = crate::run::choice::CellFile::read(p)?;
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
pub fn check_fixed(x: &Config, c: &RunConfig, from: Option<&Path>) -> Result<()> {
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
pub fn describe_links(c: &RunConfig) -> String {
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

pub fn best_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(".best");
    PathBuf::from(s)
}

/// Refuses a batch of `--seq-len` × `--batch` too large for the host
/// memory `budget` before the data is built (resumed settings included).
pub fn check_batch_size(c: &RunConfig, budget: u64) -> Result<()> {
    let bytes = (c.seq_len as u128 * c.batch as u128).saturating_mul(16);
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
