//! `lstm-wgpu train`, `generate` and `predict`: data, loop, validation,
//! early stopping, metrics, checkpoints and resume, over [`Trainer`].

use crate::cli::open_gpu;
use crate::data::{
    AddingTask, Builtin, CopyTask, CsvTable, DataRng, Normalizer, SeriesConfig, SeriesDataset,
    Split, TextConfig, TextData, Vocab,
};
use crate::error::{Error, Result};
use crate::io::{self, TensorFile};
use crate::kernels::optim::{OptimConfig, OptimKind};
use crate::metrics::{MetricsLog, Value, loss_svg};
use crate::model::NamedTensor;
use crate::schedule_lr::LrSchedule;
use crate::train::{Carry, Head, NetConfig, StepData, Trainer, init_values};
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
    /// text | series.
    #[arg(long)]
    pub task: Option<String>,
    /// Built-in dataset when no --data: text | copy (task text), sine |
    /// mackey-glass | adding (task series).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Embedding width (text).
    #[arg(long)]
    pub embed: Option<usize>,
    /// Hidden units per layer.
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Stacked LSTM layers.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Sequences per batch.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Steps per window (truncated BPTT length for text).
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Optimizer steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Epochs (instead of --steps).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// sgd | adam | adamw | amsgrad (AdamW with AMSGrad).
    #[arg(long)]
    pub optimizer: Option<String>,
    /// Learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Weight decay (L2 for sgd/adam, decoupled for adamw/amsgrad).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// SGD momentum.
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Clip gradients to this global L2 norm before each step.
    #[arg(long)]
    pub clip_norm: Option<f32>,
    /// Dropout between layers (not implemented: only 0 is accepted).
    #[arg(long)]
    pub dropout: Option<f32>,
    /// constant | cosine (linear warmup + cosine decay) | step.
    #[arg(long)]
    pub schedule: Option<String>,
    /// Warmup steps of the cosine schedule.
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Step schedule: multiply the rate by --gamma every --step-size steps.
    #[arg(long)]
    pub step_size: Option<usize>,
    /// Step schedule factor.
    #[arg(long)]
    pub gamma: Option<f64>,
    /// Seed of the initial weights and of shuffling.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Start from these weights (`embedding.weight`, `lstm.*`, `head.*`).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// No shuffling of series windows (text is always in stream order).
    #[arg(long)]
    #[serde(default)]
    pub deterministic_order: bool,
    /// Fraction of the data, from the end, held out for validation.
    #[arg(long)]
    pub val_fraction: Option<f64>,
    /// Validate every N steps (and at the end).
    #[arg(long)]
    pub val_every: Option<usize>,
    /// Stop after this many validations without improvement (keeping the
    /// best checkpoint as `<checkpoint>.best`).
    #[arg(long)]
    pub patience: Option<usize>,
    /// Series: feature columns (comma-separated; default all numeric).
    #[arg(long)]
    pub features: Option<String>,
    /// Series: target column (default the last numeric one).
    #[arg(long)]
    pub target: Option<String>,
    /// Series: values predicted per window.
    #[arg(long)]
    pub horizon: Option<usize>,
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
            metrics,
            checkpoint,
            plot
        );
        self.deterministic_order |= o.deterministic_order;
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
}

fn resolve(a: &TrainArgs) -> Result<RunConfig> {
    let task = a.task.clone().unwrap_or_else(|| match &a.dataset {
        Some(d) if ["sine", "mackey-glass", "adding"].contains(&d.as_str()) => "series".into(),
        _ => "text".into(),
    });
    if task != "text" && task != "series" {
        return Err(Error::Invalid(format!(
            "--task {task}: expected text or series"
        )));
    }
    let dataset = a.dataset.clone().unwrap_or_else(|| {
        if task == "text" {
            "text".into()
        } else {
            "sine".into()
        }
    });
    let ok = if task == "text" {
        ["text", "copy"].contains(&dataset.as_str())
    } else {
        ["sine", "mackey-glass", "adding"].contains(&dataset.as_str())
    };
    if !ok && a.data.is_none() {
        return Err(Error::Invalid(format!(
            "--dataset {dataset} does not fit --task {task}"
        )));
    }
    if let Some(p) = a.dropout
        && p != 0.0
    {
        return Err(Error::Invalid(format!(
            "--dropout {p}: dropout between layers is not implemented yet; only 0 is accepted"
        )));
    }
    let optimizer = a.optimizer.clone().unwrap_or_else(|| "adam".into());
    if !["sgd", "adam", "adamw", "amsgrad"].contains(&optimizer.as_str()) {
        return Err(Error::Invalid(format!(
            "--optimizer {optimizer}: expected sgd, adam, adamw or amsgrad"
        )));
    }
    let schedule = a.schedule.clone().unwrap_or_else(|| "constant".into());
    if !["constant", "cosine", "step"].contains(&schedule.as_str()) {
        return Err(Error::Invalid(format!(
            "--schedule {schedule}: expected constant, cosine or step"
        )));
    }
    let c = RunConfig {
        task: task.clone(),
        data: a.data.clone(),
        dataset,
        embed: a.embed.unwrap_or(32),
        hidden: a.hidden.unwrap_or(64),
        layers: a.layers.unwrap_or(2),
        batch: a.batch.unwrap_or(16),
        seq_len: a.seq_len.unwrap_or(if task == "text" { 32 } else { 24 }),
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
        schedule,
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
    };
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
    if !(0.0..1.0).contains(&c.val_fraction) {
        return Err(Error::Invalid(format!(
            "--val-fraction {}: expected a value in [0, 1)",
            c.val_fraction
        )));
    }
    Ok(c)
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

fn schedule(c: &RunConfig, total: usize) -> LrSchedule {
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
    Series(SeriesDataset),
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
                let text = crate::data::generated_text(crate::data::DEFAULT_TEXT_BYTES, c.seed);
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
    let table = match (&c.data, c.dataset.as_str()) {
        (Some(p), _) => {
            let csv = CsvTable::read(p)?;
            let feats: Option<Vec<String>> = c
                .features
                .as_ref()
                .map(|f| f.split(',').map(|s| s.trim().to_string()).collect());
            csv.select(feats.as_deref(), c.target.as_deref())?
        }
        (None, "adding") => return Ok(Data::Adding(AddingTask::new(c.seq_len.max(2), c.seed)?)),
        (None, name) => {
            let b = name.parse::<Builtin>()?;
            crate::data::builtin_series(b, crate::data::DEFAULT_SERIES_LEN, c.seed)?
        }
    };
    Ok(Data::Series(match norm {
        Some(n) => SeriesDataset::with_normalizer(&table, &sc, n)?,
        None => SeriesDataset::new(&table, &sc)?,
    }))
}

fn net_of(c: &RunConfig, data: &Data) -> NetConfig {
    let head = match data {
        Data::Text(t) => Head::Language {
            vocab: t.vocab.len(),
            embed: c.embed,
        },
        Data::Copy(k) => Head::Language {
            vocab: k.vocab_size(),
            embed: c.embed,
        },
        Data::Series(s) => Head::Regression {
            features: s.train.num_features(),
            outputs: c.horizon,
        },
        Data::Adding(_) => Head::Regression {
            features: 2,
            outputs: 1,
        },
    };
    NetConfig {
        head,
        hidden: c.hidden,
        layers: c.layers,
    }
}

/// Batches per epoch of the training split.
fn epoch_len(c: &RunConfig, data: &Data) -> usize {
    match data {
        Data::Text(t) => t.train.num_windows(),
        Data::Series(s) => s.train.num_batches(c.batch, true),
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
        Data::Series(s) => {
            let nb = s.train.num_batches(c.batch, true).max(1);
            let (epoch, i) = (k / nb, k % nb);
            let seed = (!c.deterministic_order).then_some(c.seed);
            let order = s.train.order(seed, epoch as u64);
            let b = s.train.batch(&order[i * c.batch..(i + 1) * c.batch])?;
            Ok((b.seq_len, Owned::Series(b.inputs, b.targets), Carry::Zero))
        }
        Data::Adding(task) => {
            let b = task.batch(Split::Train, k as u64, c.batch)?;
            Ok((b.seq_len, Owned::Series(b.inputs, b.targets), Carry::Zero))
        }
    }
}

enum Owned {
    Tokens(Vec<u32>, Vec<u32>),
    Series(Vec<f32>, Vec<f32>),
}

impl Owned {
    fn view(&self) -> StepData<'_> {
        match self {
            Owned::Tokens(ids, targets) => StepData::Tokens { ids, targets },
            Owned::Series(x, targets) => StepData::Series { x, targets },
        }
    }
}

/// Mean validation loss over the whole validation split (weighted by
/// positions), or `None` when there is none.
fn validate(tr: &mut Trainer, c: &RunConfig, data: &Data) -> Result<Option<f64>> {
    let mut sum = 0.0;
    let mut n = 0.0;
    match data {
        Data::Text(t) => {
            let Some(v) = &t.val else { return Ok(None) };
            for w in 0..v.num_windows() {
                let b = v.get_batch(w);
                let carry = if w == 0 { Carry::Zero } else { Carry::Continue };
                let l = tr.eval(
                    b.seq_len,
                    &StepData::Tokens {
                        ids: &b.inputs,
                        targets: &b.targets,
                    },
                    carry,
                )?;
                sum += l as f64 * b.seq_len as f64;
                n += b.seq_len as f64;
            }
        }
        Data::Series(s) => {
            let Some(v) = &s.val else { return Ok(None) };
            if v.num_batches(c.batch, true) == 0 {
                return Ok(None);
            }
            for b in v.epoch(c.batch, None, 0, true)? {
                sum += tr.eval(
                    b.seq_len,
                    &StepData::Series {
                        x: &b.inputs,
                        targets: &b.targets,
                    },
                    Carry::Zero,
                )? as f64;
                n += 1.0;
            }
        }
        Data::Copy(task) => {
            for i in 0..4 {
                let b = task.batch(Split::Val, i, c.batch)?;
                sum += tr.eval(
                    b.seq_len,
                    &StepData::Tokens {
                        ids: &b.inputs,
                        targets: &b.targets,
                    },
                    Carry::Zero,
                )? as f64;
                n += 1.0;
            }
        }
        Data::Adding(task) => {
            for i in 0..4 {
                let b = task.batch(Split::Val, i, c.batch)?;
                sum += tr.eval(
                    b.seq_len,
                    &StepData::Series {
                        x: &b.inputs,
                        targets: &b.targets,
                    },
                    Carry::Zero,
                )? as f64;
                n += 1.0;
            }
        }
    }
    Ok((n > 0.0).then(|| sum / n))
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
    let mut table = crate::model::ParamTable::new(net.lstm().param_shapes());
    for (n, s) in net.extra() {
        table.push(n, s);
    }
    let by: HashMap<&str, &NamedTensor> = tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut values = Vec::with_capacity(table.total);
    for e in &table.entries {
        let name = if e.name.starts_with("embedding.") || e.name.starts_with("head.") {
            e.name.clone()
        } else {
            format!("lstm.{}", e.name)
        };
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
) -> Result<()> {
    let mut tensors = named_params(tr)?;
    tensors.extend(tr.optim.state_tensors(tr.ctx())?);
    let state = tr.carried_state()?;
    tensors.push(NamedTensor::new("train.state", vec![state.len()], state));
    let mut counters = BTreeMap::new();
    counters.insert(
        crate::kernels::optim::STEP_NAME.to_string(),
        tr.optim.steps() as i64,
    );
    counters.insert("train.step".to_string(), st.step as i64);
    counters.insert("train.skipped".to_string(), st.skipped as i64);
    counters.insert("train.bad_vals".to_string(), st.bad_vals as i64);
    let mut meta = HashMap::new();
    meta.insert(
        "config".to_string(),
        toml::to_string(c).map_err(|e| Error::Invalid(e.to_string()))?,
    );
    meta.insert("best_val".to_string(), format!("{}", st.best_val));
    match data {
        Data::Text(t) => {
            meta.insert("vocab".to_string(), t.vocab.save());
        }
        Data::Series(s) => {
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
}

fn load_checkpoint(path: &Path) -> Result<Loaded> {
    let file = TensorFile::read(path)?;
    let cfg = file
        .metadata
        .get("config")
        .ok_or_else(|| Error::file(path, "not an lstm-wgpu checkpoint (no `config` metadata)"))?;
    let config: RunConfig = toml::from_str(cfg)
        .map_err(|e| Error::file(path, format!("bad `config` metadata: {e}")))?;
    let vocab = file
        .metadata
        .get("vocab")
        .map(|v| Vocab::load(v))
        .transpose()?;
    let norm = file
        .metadata
        .get("normalizer")
        .map(|v| Normalizer::from_metadata(v))
        .transpose()?;
    Ok(Loaded {
        config,
        file,
        vocab,
        norm,
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

/// Runs `train`.
pub fn train(a: TrainArgs, verbose: bool) -> Result<()> {
    let mut a = a;
    if let Some(p) = &a.config {
        let text = std::fs::read_to_string(p).map_err(|e| Error::file(p, e))?;
        let file: TrainArgs =
            toml::from_str(&text).map_err(|e| Error::file(p, format!("bad TOML: {e}")))?;
        a.merge_from(&file);
    }
    let resumed = a.resume.as_ref().map(|p| load_checkpoint(p)).transpose()?;
    let mut c = match &resumed {
        Some(l) => l.config.clone(),
        None => resolve(&a)?,
    };
    let data = load_data(
        &c,
        resumed.as_ref().and_then(|l| l.vocab.clone()),
        resumed.as_ref().and_then(|l| l.norm.clone()),
    )?;
    let net = net_of(&c, &data);
    let per_epoch = epoch_len(&c, &data).max(1);
    let total = match (a.steps, a.epochs, &resumed) {
        (Some(s), _, _) => s,
        (None, Some(e), _) => e * per_epoch,
        (None, None, Some(_)) => c.steps,
        (None, None, None) => 200,
    };
    c.steps = total;
    let stop = a.stop_after.map_or(total, |s| s.min(total));
    let values = match (&resumed, &a.init) {
        (Some(l), _) => {
            let (floats, _) = l.file.params_and_counters()?;
            values_from(&net, &floats, &l.file.path)?
        }
        (None, Some(p)) => {
            let f = TensorFile::read(p)?;
            values_from(&net, &f.all_f32()?, p)?
        }
        (None, None) => init_values(&net, c.seed),
    };
    let ctx = open_gpu(verbose)?;
    let oc = optim_config(&c)?;
    let mut tr = Trainer::new(ctx, net.clone(), values, c.batch, c.clip_norm, &oc)?;
    let mut st = RunState {
        step: 0,
        skipped: 0,
        best_val: f64::INFINITY,
        bad_vals: 0,
    };
    if let Some(l) = &resumed {
        let (floats, _) = l.file.params_and_counters()?;
        tr.optim.load_state(tr.ctx(), &floats)?;
        tr.optim
            .set_steps(counter(&l.file, crate::kernels::optim::STEP_NAME)? as u64);
        st.step = counter(&l.file, "train.step")? as usize;
        st.skipped = counter(&l.file, "train.skipped")? as usize;
        st.bad_vals = counter(&l.file, "train.bad_vals")? as usize;
        st.best_val = l
            .file
            .metadata
            .get("best_val")
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::INFINITY);
        let state = l.file.require_f32("train.state")?;
        tr.set_carried_state(&state.data)?;
    }
    let sched = schedule(&c, total);
    sched.validate()?;
    let mut log = a
        .metrics
        .as_ref()
        .map(|p| MetricsLog::open(p, resumed.is_some()))
        .transpose()?;
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
    eprintln!(
        "train: task {}, data {}, {} params, LSTM({} -> {}, {} layers), batch {}, seq {}, {} steps ({} per epoch), {} lr {}",
        c.task,
        c.data
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("built-in {}", c.dataset)),
        tr.lstm.model.table.total,
        net.lstm().input_size,
        c.hidden,
        c.layers,
        c.batch,
        c.seq_len,
        total,
        per_epoch,
        c.optimizer,
        c.lr
    );
    let mut curve: Vec<(f64, f64)> = Vec::new();
    let mut val_curve: Vec<(f64, f64)> = Vec::new();
    let start = std::time::Instant::now();
    let mut tokens = 0usize;
    let mut stopped_early = false;
    while st.step < stop {
        let (t, batch, carry) = train_batch(&c, &data, st.step)?;
        let lr = sched.lr(c.lr, st.step + 1);
        let s = tr.step(t, &batch.view(), carry, lr)?;
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
                ("tokens_per_s", Value::Float(rate)),
            ])?;
        }
        curve.push((st.step as f64, s.loss as f64));
        bar.set_message(format!("loss {:.4} lr {lr:.2e} {rate:.0} tok/s", s.loss));
        bar.inc(1);
        if st.step.is_multiple_of(c.val_every) || st.step == total || st.step == stop {
            if let Some(v) = validate(&mut tr, &c, &data)? {
                val_curve.push((st.step as f64, v));
                if let Some(l) = &mut log {
                    l.log(&[
                        ("step", Value::Int(st.step as i64)),
                        ("val_loss", Value::Float(v)),
                    ])?;
                }
                say(
                    &bar,
                    format!("step {:>6}  loss {:.4}  val_loss {v:.4}", st.step, s.loss),
                );
                if v < st.best_val {
                    st.best_val = v;
                    st.bad_vals = 0;
                    if let Some(p) = &a.checkpoint {
                        save_checkpoint(&best_path(p), &tr, &c, &data, &st)?;
                    }
                } else {
                    st.bad_vals += 1;
                }
            } else {
                say(&bar, format!("step {:>6}  loss {:.4}", st.step, s.loss));
            }
            if let Some(p) = &a.checkpoint {
                save_checkpoint(p, &tr, &c, &data, &st)?;
            }
            if let Some(pat) = c.patience
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
    let secs = start.elapsed().as_secs_f64();
    if let Some(p) = &a.plot {
        let svg = loss_svg(
            &format!("lstm-wgpu {} ({})", c.task, c.dataset),
            &[("train loss", &curve), ("val loss", &val_curve)],
        );
        io::write_atomic(p, svg.as_bytes())?;
    }
    let last = curve.last().map(|p| p.1).unwrap_or(f64::NAN);
    println!(
        "final: step {} train_loss {last:.5} val_loss {} best_val {} skipped {} time {secs:.1}s tokens/s {:.0}{}",
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
        tokens as f64 / secs.max(1e-9),
        if stopped_early { " (early stop)" } else { "" }
    );
    Ok(())
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
            a.temperature
        )));
    }
    let l = load_checkpoint(&a.checkpoint)?;
    let vocab = l
        .vocab
        .clone()
        .ok_or_else(|| Error::file(&a.checkpoint, "not a text checkpoint (no vocabulary)"))?;
    let c = l.config.clone();
    let net = NetConfig {
        head: Head::Language {
            vocab: vocab.len(),
            embed: c.embed,
        },
        hidden: c.hidden,
        layers: c.layers,
    };
    let (floats, _) = l.file.params_and_counters()?;
    let values = values_from(&net, &floats, &a.checkpoint)?;
    let mut prompt = vocab.encode(&a.prompt)?;
    if prompt.is_empty() {
        prompt.push(0);
    }
    let ctx = open_gpu(verbose)?;
    let mut tr = Trainer::new(ctx, net, values, 1, None, &OptimConfig::sgd())?;
    let mut rng = DataRng::new(a.seed);
    let mut out = a.prompt.clone();
    let mut carry = Carry::Zero;
    // The prompt primes the state; its last position gives the first logits.
    let mut logits = Vec::new();
    for &id in &prompt {
        tr.eval(
            1,
            &StepData::Tokens {
                ids: &[id],
                targets: &[0],
            },
            carry,
        )?;
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
        tr.eval(
            1,
            &StepData::Tokens {
                ids: &[pick as u32],
                targets: &[0],
            },
            carry,
        )?;
        logits = tr.head_output(1)?;
    }
    println!("{out}");
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
}

/// Runs `predict`: for every window of the CSV, the row after it and the
/// predicted target values (denormalized), as CSV on stdout.
pub fn predict(a: &PredictArgs, verbose: bool) -> Result<()> {
    let l = load_checkpoint(&a.checkpoint)?;
    let norm = l
        .norm
        .clone()
        .ok_or_else(|| Error::file(&a.checkpoint, "not a series checkpoint (no normalizer)"))?;
    let mut c = l.config.clone();
    c.data = Some(a.data.clone());
    c.val_fraction = 0.0;
    let Data::Series(ds) = load_data(&c, None, Some(norm.clone()))? else {
        return Err(Error::file(&a.checkpoint, "not a series checkpoint"));
    };
    let net = NetConfig {
        head: Head::Regression {
            features: ds.train.num_features(),
            outputs: c.horizon,
        },
        hidden: c.hidden,
        layers: c.layers,
    };
    let (floats, _) = l.file.params_and_counters()?;
    let values = values_from(&net, &floats, &a.checkpoint)?;
    let ctx = open_gpu(verbose)?;
    let mut tr = Trainer::new(ctx, net, values, 1, None, &OptimConfig::sgd())?;
    let headers: Vec<String> = (1..=c.horizon)
        .map(|k| format!("pred_{}_t+{k}", norm.target.name))
        .collect();
    println!("window,{}", headers.join(","));
    for w in 0..ds.train.len() {
        let b = ds.train.batch(&[w])?;
        tr.eval(
            b.seq_len,
            &StepData::Series {
                x: &b.inputs,
                targets: &b.targets,
            },
            Carry::Zero,
        )?;
        let z = tr.head_output(b.seq_len)?;
        let y = norm.denormalize(&z);
        let cells: Vec<String> = y.iter().map(|v| format!("{v}")).collect();
        println!("{w},{}", cells.join(","));
    }
    Ok(())
}
