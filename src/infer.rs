//! A trained model, opened from any checkpoint the engine writes, for
//! inference: series predictions and recursive forecasts in the data's
//! units, text sampling, one step at a time with carried state, and its
//! weights under PyTorch names.
//!
//! ```no_run
//! # fn main() -> lstm_wgpu::Result<()> {
//! let mut m = lstm_wgpu::Model::load("sun.st.best")?;
//! let rows: Vec<Vec<f64>> = (0..24).map(|i| vec![i as f64]).collect();
//! let next = m.forecast(&rows, 10)?; // ten values past the last row
//! # Ok(()) }
//! ```
//!
//! A checkpoint holds the run's settings (TOML, `config` metadata), its
//! parameters with PyTorch names (`embedding.weight`, `lstm.<nn.LSTM
//! name>` and the norms under `lstm.`, `head.weight`, `head.bias`), the
//! running statistics of BatchNorm variants, and the vocabulary (text) or
//! the normaliser (series) as metadata.

pub mod onnx;

use crate::data::{Missing, Normalizer, Rng, SeriesTable, Vocab, WindowSet};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::io::TensorFile;
use crate::kernels::optim::OptimConfig;
use crate::model::NamedTensor;
use crate::model::norm::{Norm, NormKind};
use crate::train::forecast::{continuations, predict_windows, predict_windows_attention};
use crate::train::{Carry, Head, NetConfig, StepData, Trainer};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a model was trained on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// Token ids in, logits over the vocabulary at every step out.
    Text,
    /// Rows of features in, the next `horizon` target values out.
    Series,
}

/// The settings of a trained model that inference needs, read from its
/// checkpoint (fields may be added: it is read, not built).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ModelConfig {
    /// Text or series.
    pub task: Task,
    /// The network: head (sized from the checkpoint's tensors), hidden
    /// size, layers, norm, dropout (unused in inference), residual links.
    pub net: NetConfig,
    /// The run's window length (series: the rows one prediction reads).
    pub seq_len: usize,
    /// Target values predicted per window (series).
    pub horizon: usize,
    /// The data the run trained on, as stored (a CSV path), if any.
    pub data: Option<PathBuf>,
    /// The run's time column, if it named one.
    pub time: Option<String>,
    /// The run's rule for missing CSV cells.
    pub missing: Missing,
    /// The run's validation and test fractions.
    pub val_fraction: f64,
    /// See `val_fraction`.
    pub test_fraction: f64,
}

/// The settings as the checkpoint's TOML holds them (the program's `train`
/// settings; the ones inference does not need are ignored).
#[derive(serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Settings {
    task: String,
    data: Option<PathBuf>,
    embed: usize,
    hidden: usize,
    layers: usize,
    seq_len: usize,
    horizon: usize,
    val_fraction: f64,
    #[serde(default)]
    test_fraction: f64,
    #[serde(default)]
    residual: bool,
    #[serde(default)]
    norm: Option<String>,
    #[serde(default)]
    norm_last: bool,
    #[serde(default)]
    norm_t_max: usize,
    #[serde(default)]
    missing: Option<String>,
    #[serde(default)]
    time: Option<String>,
    /// Absent: the LSTM.
    #[serde(default)]
    cell: Option<String>,
    /// IndRNN's activation (absent: relu).
    #[serde(default)]
    activation: Option<String>,
    /// A cell file's name and source (`train --cell-file`).
    #[serde(default)]
    cell_file: Option<String>,
    /// See `cell_file`.
    #[serde(default)]
    cell_source: Option<String>,
    #[serde(default)]
    weight_drop: f32,
    /// Zoneout of h and c: inference runs their expectation.
    #[serde(default)]
    zoneout_h: f32,
    #[serde(default)]
    zoneout_c: f32,
    /// `attention` for attention pooling (absent: the last step).
    #[serde(default)]
    head: Option<String>,
    /// Its scores: `dot` or `learned`.
    #[serde(default)]
    attention: Option<String>,
    /// The LSTM's projection size (absent: none).
    #[serde(default)]
    proj_size: usize,
}

impl Settings {
    /// The cell its `cell` and `activation` name.
    fn cell(&self) -> std::result::Result<crate::kernels::cell::Cell, String> {
        if let (Some(name), Some(src)) = (&self.cell_file, &self.cell_source) {
            return crate::kernels::cell::Cell::from_wgsl(name, src).map_err(|e| e.to_string());
        }
        let act = self.activation.as_deref().unwrap_or("relu");
        match (self.cell.as_deref().unwrap_or("lstm"), act) {
            ("lstm", _) => Ok(crate::kernels::cell::Cell::Lstm),
            ("gru", _) => Ok(crate::kernels::cell::Cell::Gru),
            ("indrnn", "relu") => Ok(crate::kernels::cell::Cell::IndRnn { relu: true }),
            ("indrnn", "tanh") => Ok(crate::kernels::cell::Cell::IndRnn { relu: false }),
            (c, a) => Err(format!("cell `{c}` with activation `{a}`")),
        }
    }

    /// The attention pooling its `head` and `attention` name.
    fn attention(&self) -> std::result::Result<Option<crate::train::Attention>, String> {
        use crate::train::Attention;
        match (
            self.head.as_deref().unwrap_or("last"),
            self.attention.as_deref(),
        ) {
            ("last", None) => Ok(None),
            ("attention", Some("dot")) => Ok(Some(Attention::Dot)),
            ("attention", Some("learned")) => Ok(Some(Attention::Learned)),
            (h, a) => Err(format!(
                "head `{h}` with attention `{}`",
                a.unwrap_or("none")
            )),
        }
    }
}

/// What [`Model::predict_with_attention`] gives: per window its
/// predictions (`horizon` values, the target's units) and its attention
/// weights (`seq_len` values, oldest row first).
pub type Attended = (Vec<Vec<f64>>, Vec<Vec<f64>>);

/// Sampling settings of [`Model::generate`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Softmax temperature (> 0).
    pub temperature: f64,
    /// Sample among the k most likely tokens only (0: all).
    pub top_k: usize,
    /// Seed of the sampler.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            seed: 0,
        }
    }
}

/// The recurrent state carried between [`Model::step`] calls: h then c,
/// each `[layers, 1, hidden]` (f32), and the steps taken since the zero
/// state (the running-statistics row of a `--norm step-batch` or
/// `recurrent-batch` model's next step, as `predict` reads row t at a
/// window's step t). With projections (`proj_size` P) h is P wide: each
/// of its rows holds h in its first P columns, zeros after.
#[derive(Clone, Debug, PartialEq)]
pub struct State(pub Vec<f32>, pub usize);

/// The name of parameter `name` of a [`NetConfig::table`] in checkpoints:
/// `embedding.*`, `attention.*` and `head.*` as they are, the LSTM's
/// (norms included) under `lstm.`.
pub fn checkpoint_name(name: &str) -> String {
    let own = ["embedding.", "attention.", "head."];
    if own.iter().any(|p| name.starts_with(p)) {
        name.to_string()
    } else {
        format!("lstm.{name}")
    }
}

/// Values in `table` order from tensors with checkpoint names (see
/// [`checkpoint_name`]); every tensor must be there with its shape. Errors
/// name the tensor and `file`.
pub fn table_values(
    table: &crate::model::ParamTable,
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

/// The [`Norm`] of the `train` settings `norm` (none: `None`),
/// `norm-last` and `norm-t-max`.
pub fn norm_of(kind: Option<NormKind>, last: bool, t_max: usize) -> Norm {
    match kind {
        None => Norm::None,
        Some(NormKind::Layer) => Norm::Layer { last },
        Some(NormKind::LayerCell) => Norm::LayerCell,
        Some(NormKind::Batch) => Norm::Batch { last },
        Some(NormKind::StepBatch) => Norm::StepBatch { last, t_max },
        Some(NormKind::RecurrentBatch) => Norm::RecurrentBatch { t_max },
    }
}

/// Parses a checkpoint's `config` metadata (of the file at `path`).
fn config_of(path: &Path, metadata: &HashMap<String, String>) -> Result<(Settings, Norm, Missing)> {
    let text = metadata
        .get("config")
        .ok_or_else(|| Error::file(path, "not an lstm-wgpu checkpoint (no `config` metadata)"))?;
    let bad = |e: &dyn std::fmt::Display| Error::file(path, format!("bad `config` metadata: {e}"));
    let s: Settings = toml::from_str(text).map_err(|e| bad(&e))?;
    let kind = match s.norm.as_deref() {
        None | Some("none") => None,
        Some(n) => Some(
            NormKind::ALL
                .into_iter()
                .find(|k| k.as_str() == n)
                .ok_or_else(|| bad(&format!("norm `{n}`")))?,
        ),
    };
    let norm = norm_of(kind, s.norm_last, s.norm_t_max);
    let cell = s.cell().map_err(|e| bad(&e))?;
    crate::model::config::check_proj(s.proj_size, s.hidden, cell).map_err(|e| bad(&e))?;
    s.attention().map_err(|e| bad(&e))?;
    let missing = match s.missing.as_deref() {
        None | Some("error") => Missing::Error,
        Some("drop") => Missing::Drop,
        Some("ffill") => Missing::Ffill,
        Some("interpolate") => Missing::Interpolate,
        Some(m) => return Err(bad(&format!("missing `{m}`"))),
    };
    if s.hidden == 0 || s.layers == 0 || s.seq_len == 0 || s.horizon == 0 {
        return Err(bad(
            &"hidden, layers, seq-len and horizon must be at least 1",
        ));
    }
    Ok((s, norm, missing))
}

/// The dimension `dim` of the tensor `name` of shape `shape` (`None`:
/// absent) of the file at `path`, which must be there with `rank`
/// dimensions.
fn dim_of(
    path: &Path,
    name: &str,
    shape: Option<&[usize]>,
    rank: usize,
    dim: usize,
) -> Result<usize> {
    let shape =
        shape.ok_or_else(|| Error::tensor(name, format!("missing from {}", path.display())))?;
    if shape.len() != rank {
        return Err(Error::tensor(
            name,
            format!(
                "shape {shape:?} in {}, expected {rank} dimensions",
                path.display()
            ),
        ));
    }
    Ok(shape[dim])
}

/// What [`Checkpoint::build`] reads its tensors from: a file, or tensors
/// in memory.
enum Source<'a> {
    File(&'a TensorFile),
    Tensors(Vec<NamedTensor>, BTreeMap<String, i64>),
}

impl Source<'_> {
    /// The shape of tensor `name`, if there is one.
    fn shape(&self, name: &str) -> Option<&[usize]> {
        match self {
            Source::File(f) => f.tensors.get(name).map(|t| t.shape.as_slice()),
            Source::Tensors(floats, _) => floats
                .iter()
                .find(|t| t.name == name)
                .map(|t| t.shape.as_slice()),
        }
    }
}

/// A checkpoint read and checked, without a GPU: its settings, vocabulary
/// or normaliser and parameters ([`Model`] runs it).
#[derive(Clone, Debug)]
pub struct Checkpoint {
    config: ModelConfig,
    vocab: Option<Vocab>,
    normalizer: Option<Normalizer>,
    values: Vec<f32>,
    floats: Vec<NamedTensor>,
    ints: BTreeMap<String, i64>,
    path: PathBuf,
}

impl Checkpoint {
    /// Reads checkpoint `path`.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_file(&TensorFile::read(path.as_ref())?)
    }

    /// A checkpoint file already read. Its settings, vocabulary or
    /// normaliser and every parameter and running statistic are checked:
    /// errors name the file and the setting or tensor.
    pub fn from_file(file: &TensorFile) -> Result<Self> {
        Self::build(&file.path, &file.metadata, Source::File(file))
    }

    /// A checkpoint given as its metadata and tensors in memory (the model
    /// of a run as it ends, `run::Run::train`), named `path` in messages:
    /// checked as [`Checkpoint::from_file`] checks a file, but for the
    /// finiteness of the values (a run may end with diverged weights).
    pub fn from_tensors(
        path: &Path,
        metadata: &HashMap<String, String>,
        floats: Vec<NamedTensor>,
        ints: BTreeMap<String, i64>,
    ) -> Result<Self> {
        Self::build(path, metadata, Source::Tensors(floats, ints))
    }

    fn build(path: &Path, metadata: &HashMap<String, String>, src: Source<'_>) -> Result<Self> {
        let path = path.to_path_buf();
        let file = &src;
        let (s, norm, missing) = config_of(&path, metadata)?;
        let task = match s.task.as_str() {
            "text" => Task::Text,
            "series" => Task::Series,
            t => {
                return Err(Error::file(
                    &path,
                    format!("bad `config` metadata: task `{t}`: expected text or series"),
                ));
            }
        };
        let bad = |key: &str, e: Error| Error::file(&path, format!("bad `{key}` metadata: {e}"));
        let vocab = match metadata.get("vocab") {
            Some(v) => Some(Vocab::load(v).map_err(|e| bad("vocab", e))?),
            None => None,
        };
        let normalizer = match metadata.get("normalizer") {
            Some(v) => Some(Normalizer::from_metadata(v).map_err(|e| bad("normalizer", e))?),
            None => None,
        };
        let head = match task {
            Task::Text => Head::Language {
                vocab: match &vocab {
                    Some(v) => v.len(),
                    None => dim_of(
                        &path,
                        "embedding.weight",
                        file.shape("embedding.weight"),
                        2,
                        0,
                    )?,
                },
                embed: s.embed,
            },
            Task::Series => Head::Regression {
                features: match &normalizer {
                    Some(n) => n.features.len(),
                    None => dim_of(
                        &path,
                        "lstm.weight_ih_l0",
                        file.shape("lstm.weight_ih_l0"),
                        2,
                        1,
                    )?,
                },
                outputs: s.horizon,
            },
        };
        let mut net = NetConfig::new(head, s.hidden, s.layers);
        net.norm = norm;
        net.residual = s.residual;
        // Checked by config_of.
        net.cell = s.cell().unwrap_or_default();
        net.weight_drop = s.weight_drop;
        net.zoneout = (s.zoneout_h, s.zoneout_c);
        net.proj = s.proj_size;
        // Checked by config_of.
        net.attention = s.attention().unwrap_or_default();
        net.check_head()
            .map_err(|e| Error::file(&path, format!("bad `config` metadata: {e}")))?;
        let (floats, ints) = match src {
            Source::File(f) => f.params_and_counters()?,
            Source::Tensors(floats, ints) => (floats, ints),
        };
        let values = table_values(&net.table(), &floats, &path)?;
        // The running statistics, checked now rather than at first use.
        table_values(&net.stats_table(), &floats, &path)?;
        Ok(Self {
            config: ModelConfig {
                task,
                net,
                seq_len: s.seq_len,
                horizon: s.horizon,
                data: s.data,
                time: s.time,
                missing,
                val_fraction: s.val_fraction,
                test_fraction: s.test_fraction,
            },
            vocab,
            normalizer,
            values,
            floats,
            ints,
            path,
        })
    }

    /// Its settings.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The characters its token ids stand for (text models on text).
    pub fn vocab(&self) -> Option<&Vocab> {
        self.vocab.as_ref()
    }

    /// The training rows' mean and std of every column (series models on
    /// a CSV or a generated series).
    pub fn normalizer(&self) -> Option<&Normalizer> {
        self.normalizer.as_ref()
    }

    /// Where it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its parameters under PyTorch names (`embedding.weight`,
    /// `lstm.weight_ih_l0`, …, `head.weight`, `head.bias`), in
    /// [`NetConfig::table`] order.
    pub fn state_dict(&self) -> Vec<NamedTensor> {
        let mut out = Vec::new();
        let mut at = 0;
        for e in &self.config.net.table().entries {
            let n: usize = e.shape.iter().product();
            out.push(NamedTensor::new(
                checkpoint_name(&e.name),
                e.shape.clone(),
                self.values[at..at + n].to_vec(),
            ));
            at += n;
        }
        out
    }
}

/// A trained model on a GPU, ready for inference (eval mode: running
/// statistics, no dropout). It keeps one inference plan per batch size
/// (and, inside it, per sequence length), built on first use and reused by
/// later calls; [`Model::release_plans`] frees them.
pub struct Model {
    ctx: Arc<GpuContext>,
    ck: Checkpoint,
    plans: HashMap<usize, Trainer>,
    /// The batch-1 model that [`Model::step`] and [`Model::generate`] run,
    /// whose evaluation state carries from call to call.
    stream: Option<Trainer>,
    /// Whether the stream's next step starts from a zero state.
    fresh: bool,
    /// Steps the stream has taken since its zero state.
    pos: usize,
    /// Windows per GPU pass of [`Model::predict`].
    batch: usize,
}

impl Model {
    /// Opens checkpoint `path` on the default GPU adapter (wgpu's
    /// environment variables choose it). The file is checked before a GPU
    /// is opened.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let ck = Checkpoint::read(path)?;
        Ok(Self::new(Arc::new(GpuContext::new()?), ck))
    }

    /// Opens checkpoint `path` on `ctx`.
    pub fn load_on(ctx: Arc<GpuContext>, path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::new(ctx, Checkpoint::read(path)?))
    }

    /// The model of a checkpoint on `ctx`.
    pub fn new(ctx: Arc<GpuContext>, ck: Checkpoint) -> Self {
        Self {
            ctx,
            ck,
            plans: HashMap::new(),
            stream: None,
            fresh: true,
            pos: 0,
            batch: 256,
        }
    }

    /// Its checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.ck
    }

    /// Its settings.
    pub fn config(&self) -> &ModelConfig {
        &self.ck.config
    }

    /// The characters its token ids stand for (text models on text).
    pub fn vocab(&self) -> Option<&Vocab> {
        self.ck.vocab.as_ref()
    }

    /// The training rows' mean and std of every column (series models on
    /// a CSV or a generated series).
    pub fn normalizer(&self) -> Option<&Normalizer> {
        self.ck.normalizer.as_ref()
    }

    /// The GPU it runs on.
    pub fn ctx(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// Sets the windows per GPU pass of [`Model::predict`] (default 256).
    pub fn set_batch(&mut self, batch: usize) -> Result<()> {
        if batch == 0 {
            return Err(Error::Invalid("batch must be at least 1".into()));
        }
        self.batch = batch;
        Ok(())
    }

    /// Frees the inference plans built so far (the next call builds its
    /// own again); the streaming state is kept.
    pub fn release_plans(&mut self) {
        self.plans.clear();
    }

    fn build(&self, batch: usize) -> Result<Trainer> {
        let ck = &self.ck;
        let net = ck.config.net.clone();
        let opt = OptimConfig::sgd();
        let mut tr = Trainer::new(self.ctx.clone(), net, ck.values.clone(), batch, None, &opt)?;
        tr.set_stats(&table_values(&tr.net.stats_table(), &ck.floats, &ck.path)?)?;
        for (name, v) in tr.lstm.model.tracked.iter_mut() {
            if let Some(&n) = ck.ints.get(&format!("lstm.{name}")) {
                *v = n;
            }
        }
        Ok(tr)
    }

    fn plan(&mut self, batch: usize) -> Result<&mut Trainer> {
        if !self.plans.contains_key(&batch) {
            let tr = self.build(batch)?;
            self.plans.insert(batch, tr);
        }
        Ok(self.plans.get_mut(&batch).expect("inserted above"))
    }

    fn stream(&mut self) -> Result<&mut Trainer> {
        if self.stream.is_none() {
            self.stream = Some(self.build(1)?);
        }
        Ok(self.stream.as_mut().expect("built above"))
    }

    fn series_only(&self, what: &str) -> Result<()> {
        match self.ck.config.task {
            Task::Series => Ok(()),
            Task::Text => Err(Error::file(
                &self.ck.path,
                format!("a text checkpoint: {what} needs a series model"),
            )),
        }
    }

    fn text_only(&self, what: &str) -> Result<()> {
        match self.ck.config.task {
            Task::Text => Ok(()),
            Task::Series => Err(Error::file(
                &self.ck.path,
                format!("a series checkpoint: {what} needs a text model"),
            )),
        }
    }

    /// Features per row of a series model.
    pub fn num_features(&self) -> usize {
        match self.ck.config.net.head {
            Head::Regression { features, .. } | Head::Sequence { features, .. } => features,
            Head::Language { .. } => 0,
        }
    }

    /// One row's features as z-scores (as they are when there is no
    /// normaliser), refusing a row of the wrong width or one whose z-score
    /// leaves f32.
    fn normalize_row(&self, r: usize, row: &[f64], out: &mut Vec<f32>) -> Result<()> {
        let f = self.num_features();
        if row.len() != f {
            return Err(Error::Invalid(format!(
                "row {}: {} values, expected {f} (the model's features{})",
                r + 1,
                row.len(),
                self.ck
                    .normalizer
                    .as_ref()
                    .map(|n| format!(
                        ": {}",
                        n.features
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                    .unwrap_or_default()
            )));
        }
        for (j, &v) in row.iter().enumerate() {
            let z = match &self.ck.normalizer {
                Some(n) => n.features[j].normalize(v) as f32,
                None => v as f32,
            };
            if !z.is_finite() {
                return Err(Error::Invalid(format!(
                    "row {} column {}: {v} is not finite in f32 once normalised",
                    r + 1,
                    j + 1
                )));
            }
            out.push(z);
        }
        Ok(())
    }

    fn target_units(&self, z: f32) -> f64 {
        match &self.ck.normalizer {
            Some(n) => n.target.denormalize(z as f64),
            None => z as f64,
        }
    }

    /// The rows of a CSV file as [`Model::predict`] takes them: the
    /// model's feature columns, chosen by name (its normaliser's), every
    /// cell a number; errors name the file, the line and the column.
    pub fn csv_rows(&self, path: impl AsRef<Path>) -> Result<Vec<Vec<f64>>> {
        let t = crate::data::CsvTable::read(path.as_ref())?;
        let n = self.ck.normalizer.as_ref().ok_or_else(|| {
            Error::file(
                &self.ck.path,
                "no normaliser: no column names to read a CSV by",
            )
        })?;
        let cols = n
            .features
            .iter()
            .map(|c| t.column_index(&c.name))
            .collect::<Result<Vec<_>>>()?;
        (0..t.num_rows())
            .map(|r| {
                cols.iter()
                    .zip(&n.features)
                    .map(|(&c, st)| {
                        let v = t.cell(r, c);
                        v.parse::<f64>()
                            .ok()
                            .filter(|x| x.is_finite())
                            .ok_or_else(|| {
                                Error::file(
                                    path.as_ref(),
                                    format!(
                                        "line {}: column `{}`: `{}` is not a number",
                                        t.line_of_row(r),
                                        st.name,
                                        crate::error::clip(v)
                                    ),
                                )
                            })
                    })
                    .collect()
            })
            .collect()
    }

    /// Predictions of a series model for every window of `rows` (each row
    /// the model's features, in their units and order): window w reads rows
    /// w..w+seq_len and gives the `horizon` target values after it, in the
    /// target's units. `rows.len() - seq_len + 1` windows, in batches (see
    /// [`Model::set_batch`]).
    pub fn predict(&mut self, rows: &[Vec<f64>]) -> Result<Vec<Vec<f64>>> {
        Ok(self.predict_rows(rows, false)?.0)
    }

    /// [`Model::predict`] of a model with an attention head (`train --head
    /// attention`), with each window's attention weights: `seq_len` values
    /// summing to 1, the weight of each of its rows, oldest first. Refused
    /// for a model whose head reads the last step.
    pub fn predict_with_attention(&mut self, rows: &[Vec<f64>]) -> Result<Attended> {
        self.attention_only()?;
        self.predict_rows(rows, true)
    }

    /// An error naming the checkpoint unless its head has attention.
    fn attention_only(&self) -> Result<()> {
        match self.ck.config.net.attention {
            Some(_) => Ok(()),
            None => Err(Error::file(
                &self.ck.path,
                "its head reads the last step: no attention weights (a model trained with \
                 --head attention has them)",
            )),
        }
    }

    fn predict_rows(&mut self, rows: &[Vec<f64>], attention: bool) -> Result<Attended> {
        self.series_only("predict")?;
        let (t, k) = (self.ck.config.seq_len, self.ck.config.horizon);
        if rows.len() < t {
            return Err(Error::Invalid(format!(
                "{} rows, fewer than the model's seq_len {t}",
                rows.len()
            )));
        }
        let mut z = Vec::with_capacity(rows.len() * self.num_features());
        for (r, row) in rows.iter().enumerate() {
            self.normalize_row(r, row, &mut z)?;
        }
        let f = self.num_features();
        let windows = rows.len() - t + 1;
        let b = self.batch.min(windows);
        let targets = vec![0f32; b * k];
        let mut out = Vec::with_capacity(windows);
        let mut weights = Vec::new();
        let ids: Vec<usize> = (0..windows).collect();
        for chunk in ids.chunks(b) {
            // [T, B, F]; a short last batch repeats its last window.
            let mut x = vec![0f32; t * b * f];
            for bi in 0..b {
                let w = chunk[bi.min(chunk.len() - 1)];
                for ti in 0..t {
                    let src = &z[(w + ti) * f..(w + ti + 1) * f];
                    x[(ti * b + bi) * f..(ti * b + bi + 1) * f].copy_from_slice(src);
                }
            }
            let tr = self.plan(b)?;
            tr.eval(t, &StepData::series(&x, &targets), Carry::Zero)?;
            let y = tr.head_output(t)?;
            let a = match attention {
                true => tr.attention_weights(t)?,
                false => Vec::new(),
            };
            for i in 0..chunk.len() {
                let w: Vec<f64> = y[i * k..(i + 1) * k]
                    .iter()
                    .map(|&v| self.target_units(v))
                    .collect();
                out.push(w);
                if attention {
                    weights.push(a[i * t..(i + 1) * t].iter().map(|&v| v as f64).collect());
                }
            }
        }
        Ok((out, weights))
    }

    /// Predictions (z-scores, `[windows.len(), horizon]`) of windows of a
    /// [`WindowSet`] built with this model's normaliser, `batch` windows a
    /// pass (what `lstm-wgpu predict` runs).
    pub fn predict_windows(
        &mut self,
        set: &WindowSet,
        windows: &[usize],
        batch: usize,
    ) -> Result<Vec<f32>> {
        self.series_only("predict")?;
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        predict_windows(self.plan(batch)?, set, windows)
    }

    /// [`Model::predict_windows`] with each window's attention weights
    /// (`[windows.len(), seq_len]`), for a model with an attention head;
    /// refused by name for others.
    pub fn predict_windows_attention(
        &mut self,
        set: &WindowSet,
        windows: &[usize],
        batch: usize,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        self.series_only("predict")?;
        self.attention_only()?;
        if windows.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        predict_windows_attention(self.plan(batch)?, set, windows)
    }

    /// Continues a series `n` values past its last row (the `--future`
    /// semantics of `lstm-wgpu predict`): each pass reads the last
    /// `seq_len` rows, predicts the next `horizon` target values and
    /// appends them as rows, every feature being the target (which takes
    /// the prediction) or a column with a constant step (which continues
    /// it); any other feature is refused by name. `rows` hold the model's
    /// features in their units; the values come back in the target's.
    pub fn forecast(&mut self, rows: &[Vec<f64>], n: usize) -> Result<Vec<f64>> {
        self.series_only("forecast")?;
        let f = self.num_features();
        let mut z = Vec::new();
        for (r, row) in rows.iter().enumerate() {
            self.normalize_row(r, row, &mut z)?;
        }
        let names: Vec<String> = match &self.ck.normalizer {
            Some(nm) => nm.features.iter().map(|c| c.name.clone()).collect(),
            None => (0..f).map(|j| format!("feature{j}")).collect(),
        };
        let target = match &self.ck.normalizer {
            Some(nm) => nm.target.name.clone(),
            None => names[0].clone(),
        };
        let cols: Vec<Vec<f64>> = (0..f)
            .map(|j| rows.iter().map(|r| r[j]).collect())
            .collect();
        // The target's own values are not read by the forecast (only the
        // features are); a target that is no feature gets the first
        // feature's column as a stand-in.
        let tcol = names
            .iter()
            .position(|x| *x == target)
            .map_or_else(|| cols[0].clone(), |j| cols[j].clone());
        let table = SeriesTable::new(names, cols, target, tcol)?;
        self.forecast_table(&table, n)
    }

    /// [`Model::forecast`] on a [`SeriesTable`] of the model's features.
    pub fn forecast_table(&mut self, table: &SeriesTable, n: usize) -> Result<Vec<f64>> {
        self.series_only("forecast")?;
        let cont = continuations(table)?;
        let (t, k) = (self.ck.config.seq_len, self.ck.config.horizon);
        let norm = match &self.ck.normalizer {
            Some(n) => n.clone(),
            None => identity(table),
        };
        crate::train::forecast::forecast(self.plan(1)?, table, &norm, t, k, n, &cont)
    }

    /// The carried state of [`Model::step`] (zero before the first step).
    pub fn state(&mut self) -> Result<State> {
        let fresh = self.fresh;
        let tr = self.stream()?;
        let v = tr.eval_state()?;
        Ok(match fresh {
            true => State(vec![0.0; v.len()], 0),
            false => State(v, self.pos),
        })
    }

    /// Continues from `state` (as [`Model::state`] gave it).
    pub fn with_state(&mut self, state: &State) -> Result<&mut Self> {
        self.stream()?.set_eval_state(&state.0)?;
        self.fresh = false;
        self.pos = state.1;
        Ok(self)
    }

    /// Starts the next [`Model::step`] from a zero state.
    pub fn reset(&mut self) {
        self.fresh = true;
    }

    /// One step of a series model from the carried state: `row` (the
    /// model's features, in their units) in, the `horizon` values it
    /// predicts after everything seen so far out, in the target's units.
    pub fn step(&mut self, row: &[f64]) -> Result<Vec<f64>> {
        self.series_only("step")?;
        let mut x = Vec::new();
        self.normalize_row(0, row, &mut x)?;
        let targets = vec![0f32; self.ck.config.horizon];
        let (carry, pos) = self.carry();
        let tr = self.stream()?;
        tr.set_stream_position(pos);
        tr.eval(1, &StepData::series(&x, &targets), carry)?;
        let y = tr.head_output(1)?;
        Ok(y.iter().map(|&v| self.target_units(v)).collect())
    }

    /// One step of a text model from the carried state: token `id` in, the
    /// logits of the next token out.
    pub fn step_token(&mut self, id: u32) -> Result<Vec<f32>> {
        self.text_only("step_token")?;
        let v = match self.ck.config.net.head {
            Head::Language { vocab, .. } => vocab,
            _ => 0,
        };
        if id as usize >= v {
            return Err(Error::Invalid(format!(
                "token id {id}: the vocabulary has {v}"
            )));
        }
        let (carry, pos) = self.carry();
        let tr = self.stream()?;
        tr.set_stream_position(pos);
        tr.eval(1, &StepData::tokens(&[id], &[0]), carry)?;
        tr.head_output(1)
    }

    /// How the next stream step starts, and its position; counts it.
    fn carry(&mut self) -> (Carry, usize) {
        let carry = match std::mem::replace(&mut self.fresh, false) {
            true => {
                self.pos = 0;
                Carry::Zero
            }
            false => Carry::Continue,
        };
        self.pos += 1;
        (carry, self.pos - 1)
    }

    /// Text sampled from a text model: the prompt (whose characters must
    /// be in the vocabulary; empty: token 0) primes a zero state, then `n`
    /// characters are drawn from the softmax at `s.temperature`, among the
    /// `s.top_k` most likely when > 0. Returns the continuation (without
    /// the prompt).
    pub fn generate(&mut self, prompt: &str, n: usize, s: &Sampling) -> Result<String> {
        let mut out = String::new();
        self.generate_with(prompt, n, s, |c| {
            out.push_str(c);
            Ok(())
        })?;
        Ok(out)
    }

    /// [`Model::generate`], giving each character to `emit` as it is
    /// sampled (memory does not grow with `n`).
    pub fn generate_with(
        &mut self,
        prompt: &str,
        n: usize,
        s: &Sampling,
        mut emit: impl FnMut(&str) -> Result<()>,
    ) -> Result<()> {
        self.text_only("generate")?;
        if !(s.temperature > 0.0 && s.temperature.is_finite()) {
            return Err(Error::Invalid(format!(
                "temperature {}: expected a positive number",
                crate::error::num(s.temperature)
            )));
        }
        let vocab = self.ck.vocab.clone().ok_or_else(|| {
            Error::file(
                &self.ck.path,
                "no vocabulary (a model of token ids): generate needs characters; use step_token",
            )
        })?;
        let mut ids = vocab.encode(prompt)?;
        if ids.is_empty() {
            ids.push(0);
        }
        let mut rng = Rng::new(s.seed);
        self.fresh = true;
        let mut logits = Vec::new();
        for &id in &ids {
            logits = self.step_token(id)?;
        }
        for _ in 0..n {
            let mut idx: Vec<usize> = (0..logits.len()).collect();
            idx.sort_by(|&x, &y| logits[y].total_cmp(&logits[x]));
            if s.top_k > 0 {
                idx.truncate(s.top_k);
            }
            let m = logits[idx[0]] as f64;
            let w: Vec<f64> = idx
                .iter()
                .map(|&i| ((logits[i] as f64 - m) / s.temperature).exp())
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
            emit(&vocab.decode(&[pick as u32]))?;
            logits = self.step_token(pick as u32)?;
        }
        Ok(())
    }
}

/// A normaliser of `table`'s columns that changes nothing (mean 0, std
/// 1), for series models trained without one.
fn identity(table: &SeriesTable) -> Normalizer {
    let id = |name: &String| crate::data::ColumnStats {
        name: name.clone(),
        mean: 0.0,
        std: 1.0,
    };
    Normalizer {
        features: table.feature_names.iter().map(id).collect(),
        target: id(&table.target_name),
    }
}

impl Checkpoint {
    /// Its parameters as the state_dict of the README's PyTorch module
    /// (`embedding` = `nn.Embedding(V, E)` for text, `lstm` = `nn.LSTM(I,
    /// H, L)` or `nn.GRU(I, H, L)`, `attention` = its `Attention(H, "dot" |
    /// "learned")` with `attention.query` for a learned query, `head` =
    /// `nn.Linear(H, out)`, or `nn.Linear(2H, out)` behind the attention),
    /// its `num_batches_tracked` counters (by name; none without
    /// BatchNorm), and a JSON text of what the module needs besides: its
    /// sizes, the window length and horizon, and the normaliser (series)
    /// or the vocabulary (text).
    ///
    /// A model with `--norm layer`, `batch` or `step-batch` between
    /// layers, or with residual links, fills the module's per-layer form:
    /// `lstm` = one single-layer `nn.LSTM`/`nn.GRU` per layer
    /// (`lstm.{k}.weight_ih_l0`, ...) and `norms` = one
    /// `nn.LayerNorm`/`nn.BatchNorm1d`/`StepBatchNorm` per normalized
    /// layer output (`norms.{k}.weight`, ...). The cells `nn.LSTM` and
    /// `nn.GRU` have no counterpart for (IndRNN, the LayerNorm and
    /// recurrent-BatchNorm LSTM cells, zoneout) fill the README's
    /// `Recurrent` module under the same names, their norms as
    /// `ln_ih_l{k}.weight`, `bn_c_l{k}.running_mean`, ... A cell file is
    /// refused by name: its math is WGSL the module cannot know.
    pub fn pytorch(&self) -> Result<(Vec<NamedTensor>, BTreeMap<String, i64>, String)> {
        let net = &self.config.net;
        // A norm between layers (and whether after the last one too).
        let between_last = net.norm.between().map(|(_, last)| last);
        let cell = net.cell;
        if let crate::kernels::cell::Cell::Custom(c) = cell {
            return Err(Error::file(
                &self.path,
                format!(
                    "a model with --cell-file {}: its cell is WGSL that no PyTorch module \
                     can know, so it does not export (the state_dict is in the checkpoint \
                     under PyTorch's names)",
                    c.name
                ),
            ));
        }
        let per_layer = between_last.is_some() || net.residual;
        let mut tensors = self.state_dict();
        let mut counters = BTreeMap::new();
        let stats = net.stats_table();
        let values = table_values(&stats, &self.floats, &self.path)?;
        let mut at = 0;
        for e in &stats.entries {
            let n: usize = e.shape.iter().product();
            tensors.push(NamedTensor::new(
                checkpoint_name(&e.name),
                e.shape.clone(),
                values[at..at + n].to_vec(),
            ));
            at += n;
            // nn.BatchNorm1d's counter (the README's StepBatchNorm has none).
            if let Some(module) = e.name.strip_suffix(".running_mean")
                && module.starts_with("batch_norms.")
            {
                let name = format!("lstm.{module}.num_batches_tracked");
                let n = self.ints.get(&name).copied();
                counters.insert(per_layer_name(&name)?, n.unwrap_or(0));
            }
        }
        if per_layer {
            for t in &mut tensors {
                t.name = per_layer_name(&t.name)?;
            }
        }
        let lstm = net.lstm();
        let (vocab, outputs) = match net.head {
            Head::Language { vocab, .. } => (Some(vocab), vocab),
            Head::Regression { outputs, .. } | Head::Sequence { outputs, .. } => (None, outputs),
        };
        let col = |c: &crate::data::ColumnStats| serde_json::json!({ "name": c.name, "mean": c.mean, "std": c.std });
        let mut json = serde_json::json!({
            "format": "lstm-wgpu pytorch export 1",
            "task": match self.config.task { Task::Text => "text", Task::Series => "series" },
            "module": {
                "input_size": lstm.input_size,
                "hidden_size": lstm.hidden_size,
                "num_layers": lstm.num_layers,
                "outputs": outputs,
                "vocab": vocab,
            },
            "seq_len": self.config.seq_len,
            "horizon": self.config.horizon,
            "normalizer": self.normalizer.as_ref().map(|n| serde_json::json!({
                "features": n.features.iter().map(col).collect::<Vec<_>>(),
                "target": col(&n.target),
            })),
            "vocab": self.vocab.as_ref().map(|v| {
                v.chars.iter().map(|c| c.to_string()).collect::<Vec<_>>()
            }),
        });
        // The README module's `attention` argument, for models with one
        // (absent otherwise, so that older copies of the module still take
        // the sizes).
        if let Some(a) = net.attention {
            json["module"]["attention"] = serde_json::json!(a.name());
        }
        // Written only with a projection, so other models' files stay as
        // they were.
        if let Some(p) = lstm.proj() {
            json["module"]["proj_size"] = p.into();
        }
        // The same for the cell, norms and residual links: an LSTM without
        // them writes the file it always did.
        if cell != crate::kernels::cell::Cell::Lstm {
            json["module"]["cell"] = cell.name().into();
        }
        if let crate::kernels::cell::Cell::IndRnn { relu } = cell {
            json["module"]["activation"] = if relu { "relu" } else { "tanh" }.into();
        }
        if let Some(kind) = net.norm.kind() {
            json["module"]["norm"] = kind.as_str().into();
        }
        if let Some(last) = between_last {
            json["module"]["norm_last"] = last.into();
        }
        if let Norm::StepBatch { t_max, .. } | Norm::RecurrentBatch { t_max } = net.norm {
            json["module"]["norm_t_max"] = t_max.into();
        }
        if net.residual {
            json["module"]["residual"] = true.into();
        }
        // As the flag was written (0.2, not f32's 0.20000000298…).
        let short = |p: f32| p.to_string().parse::<f64>().unwrap_or(f64::from(p));
        for (key, p) in [("zoneout_h", net.zoneout.0), ("zoneout_c", net.zoneout.1)] {
            if p > 0.0 {
                json["module"][key] = short(p).into();
            }
        }
        let text =
            serde_json::to_string_pretty(&json).map_err(|e| Error::Invalid(e.to_string()))?;
        Ok((tensors, counters, text + "\n"))
    }
}

/// The name in the README module's per-layer form of a tensor with
/// checkpoint name `name`: `lstm.weight_ih_l{k}` → `lstm.{k}.weight_ih_l0`
/// (layer k's own single-layer module), `lstm.layer_norms.{k}.*`,
/// `lstm.batch_norms.{k}.*` and `lstm.step_norms.{k}.*` → `norms.{k}.*`,
/// a cell norm's `lstm.ln_ih_l{k}.weight` → `lstm.{k}.ln_ih_l0.weight`;
/// the embedding, attention and head keep theirs.
pub fn per_layer_name(name: &str) -> Result<String> {
    let Some(rest) = name.strip_prefix("lstm.") else {
        return Ok(name.to_string());
    };
    for prefix in ["layer_norms.", "batch_norms.", "step_norms."] {
        if let Some(tail) = rest.strip_prefix(prefix) {
            return Ok(format!("norms.{tail}"));
        }
    }
    // `weight_ih_l{k}` or a cell norm's `ln_ih_l{k}.weight`.
    let (module, tail) = rest.split_once('.').map_or((rest, ""), |(m, t)| (m, t));
    let dot = if tail.is_empty() { "" } else { "." };
    match module.rsplit_once("_l") {
        Some((base, k)) if k.parse::<usize>().is_ok() => {
            Ok(format!("lstm.{k}.{base}_l0{dot}{tail}"))
        }
        _ => Err(Error::tensor(
            name,
            "has no place in the per-layer PyTorch module".to_string(),
        )),
    }
}
