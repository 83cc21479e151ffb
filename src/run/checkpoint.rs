//! Checkpoints: what they hold, writing them, and reading them as strictly
//! as the command line.

use crate::data::{Normalizer, Vocab};
use crate::error::{Error, Result, clip, num};
use crate::io::{self, TensorFile};
use crate::model::NamedTensor;
use crate::run::choice::{Dataset, Task};
use crate::run::data::{RunData, net_with};
use crate::run::settings::{
    Config, RunConfig, check_fixed, describe_data, has_data, optim_config, validate_config,
};
use crate::train::health::{Counts, GradHealth, WINDOW};
use crate::train::{Head, NetConfig, SizeLimits, Trainer};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub use crate::infer::{checkpoint_name, table_values};

/// Parameters of a trainer with PyTorch names: `embedding.weight`,
/// `lstm.<nn.LSTM name>`, `attention.query`, `head.weight`, `head.bias`
/// ([`checkpoint_name`]).
pub fn named_params(tr: &Trainer) -> Result<Vec<NamedTensor>> {
    let mut v = tr.lstm.model.param_tensors(tr.ctx())?;
    for t in &mut v {
        t.name = checkpoint_name(&t.name);
    }
    Ok(v)
}

/// Values in table order from tensors with PyTorch names (as
/// [`named_params`] writes them); every tensor must match.
pub fn values_from(net: &NetConfig, tensors: &[NamedTensor], file: &Path) -> Result<Vec<f32>> {
    table_values(&net.table(), tensors, file)
}

/// Running statistics in [`NetConfig::stats_table`] order from tensors
/// named `lstm.<name>`.
pub fn stats_from(net: &NetConfig, tensors: &[NamedTensor], file: &Path) -> Result<Vec<f32>> {
    table_values(&net.stats_table(), tensors, file)
}

/// Restores parameters, running statistics and `num_batches_tracked`
/// counters (`lstm.<module>.num_batches_tracked`, absent ones stay 0).
pub fn restore_model(
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

/// The tensors of an `--init` file for `net`: its parameters, running
/// statistics and `num_batches_tracked` counters, which are used. The file
/// may be a checkpoint: its optimizer and training state (`optimizer.*`,
/// `train.*`) are not used — the run starts afresh, `--resume` continues
/// one — and the note returned says so. Any other tensor is refused.
pub fn init_file(net: &NetConfig, path: &Path) -> Result<(Tensors, Option<String>)> {
    let mut file = TensorFile::read(path)?;
    checkpoint_precision(&file)?;
    bare_lstm_names(&mut file, net);
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
    let note = state.then(|| {
        format!(
            "note: --init {}: using its weights and statistics; its optimizer and training \
             state start afresh (--resume continues a run)",
            path.display()
        )
    });
    Ok(((floats, ints), note))
}

/// A file's f32 tensors and integer counters.
pub type Tensors = (Vec<NamedTensor>, BTreeMap<String, i64>);

/// Takes a bare `nn.LSTM` state_dict's names (`weight_ih_l0`, …) or those
/// of the README module's per-layer form (`lstm.1.weight_ih_l0`,
/// `norms.0.weight`: what `export --to pytorch` writes for models with
/// norms between layers or residual links) as the engine's
/// (`lstm.weight_ih_l1`, `lstm.layer_norms.0.weight`) where the file does
/// not hold the latter, so that a PyTorch model's `state_dict()` goes in
/// without renaming.
fn bare_lstm_names(file: &mut TensorFile, net: &NetConfig) {
    let (table, stats) = (net.table(), net.stats_table());
    let mut names: Vec<(String, String)> = Vec::new();
    for e in table.entries.iter().chain(&stats.entries) {
        names.push((checkpoint_name(&e.name), e.name.clone()));
        if let Some(m) = e.name.strip_suffix(".running_mean")
            && m.starts_with("batch_norms.")
        {
            let n = format!("{m}.num_batches_tracked");
            names.push((format!("lstm.{n}"), n));
        }
    }
    for (full, bare) in names {
        if file.tensors.contains_key(&full) {
            continue;
        }
        let per_layer = crate::infer::per_layer_name(&full).ok();
        for alias in [Some(bare), per_layer].into_iter().flatten() {
            if alias != full
                && let Some(t) = file.tensors.remove(&alias)
            {
                file.tensors.insert(full, t);
                break;
            }
        }
    }
}

/// Checkpoint tensor of the loss scaler: [scale, good steps, skipped].
pub const SCALER_NAME: &str = "train.loss_scaler";
/// Checkpoint tensors of the loss history for `--plot`, rows of (step,
/// loss) of the finite training losses ([n, 2]) and validation losses
/// ([m, 2]) so far.
pub const CURVE_NAME: &str = "train.curve";
pub const VAL_CURVE_NAME: &str = "train.val_curve";
/// The global gradient norms so far ([n, 2] rows of step and norm), for
/// `--plot`.
pub const GRAD_CURVE_NAME: &str = "train.grad_curve";
/// The norms the explosion threshold's running median spans, oldest first
/// (at most `health::WINDOW`).
pub const WINDOW_NAME: &str = "train.grad_norm_window";
/// The f32 tensors of a checkpoint's training state besides the model's
/// and the optimizer's.
pub const TRAIN_FLOATS: [&str; 6] = [
    "train.state",
    SCALER_NAME,
    CURVE_NAME,
    VAL_CURVE_NAME,
    GRAD_CURVE_NAME,
    WINDOW_NAME,
];
/// The explosion and vanishing counts of the run and of its epoch in
/// progress (absent in older checkpoints: 0).
pub const HEALTH_INTS: [&str; 4] = [
    "train.explosions",
    "train.vanishing",
    "train.epoch_explosions",
    "train.epoch_vanishing",
];
/// The integer counters of a checkpoint's training state.
pub const TRAIN_INTS: [&str; 8] = [
    crate::kernels::optim::STEP_NAME,
    "train.step",
    "train.skipped",
    "train.bad_vals",
    HEALTH_INTS[0],
    HEALTH_INTS[1],
    HEALTH_INTS[2],
    HEALTH_INTS[3],
];
/// Every optimizer state tensor name (an `--init` checkpoint may come from
/// a run with another optimizer).
pub const ALL_OPTIM_STATE: [&str; 4] = [
    "optimizer.momentum_buffer",
    "optimizer.exp_avg",
    "optimizer.exp_avg_sq",
    "optimizer.max_exp_avg_sq",
];

/// The tensor names a reader of weights or checkpoints accepts: f32
/// tensors and integer scalars. Anything else in a file is refused by name,
/// never ignored.
#[derive(Default)]
pub struct Accepted {
    pub floats: std::collections::BTreeSet<String>,
    pub ints: std::collections::BTreeSet<String>,
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
pub fn in_file(path: &Path) -> impl Fn(Error) -> Error + '_ {
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
pub fn check_signs(
    floats: &[NamedTensor],
    ints: &BTreeMap<String, i64>,
    file: &Path,
) -> Result<()> {
    for t in floats {
        let var = t.name.ends_with(".running_var")
            || t.name == "optimizer.exp_avg_sq"
            || t.name == "optimizer.max_exp_avg_sq"
            || t.name == WINDOW_NAME;
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
pub fn curve_from(floats: &[NamedTensor], name: &str, file: &Path) -> Result<Vec<(f64, f64)>> {
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
pub fn curve_tensor(name: &str, curve: &[(f64, f64)]) -> NamedTensor {
    let data: Vec<f32> = curve
        .iter()
        .map(|&(x, y)| (x as f32, y as f32))
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .flat_map(|(x, y)| [x, y])
        .collect();
    NamedTensor::new(name, vec![data.len() / 2, 2], data)
}
/// Checkpoint metadata: the precision the run trained in (absent: f32).
pub const PRECISION_KEY: &str = "precision";

/// The precision a checkpoint's (or an `--init` file's) run trained in,
/// from its `precision` metadata (absent: f32); any other value is refused.
pub fn checkpoint_precision(f: &TensorFile) -> Result<crate::model::precision::Precision> {
    use crate::model::precision::{Precision, PrecisionChoice};
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
pub fn data_metadata(c: &RunConfig) -> Option<(&'static str, &'static str)> {
    match (c.task, has_data(c), c.dataset) {
        (Task::Text, false, Dataset::Copy) | (Task::Series, false, Dataset::Adding) => None,
        (Task::Text, ..) => Some(("vocab", "the characters its ids stand for")),
        _ => Some((
            "normalizer",
            "the training rows' mean and std of every column",
        )),
    }
}

/// The scaler state of a checkpoint tensor.
pub fn scaler_from(w: &[f32], file: &Path) -> Result<crate::model::precision::ScalerState> {
    let s = match w {
        [_, _, _] => crate::model::precision::ScalerState::from_words(w),
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

/// The metadata key of [`RunState::best_test`].
const BEST_TEST_KEY: &str = "best_test";

/// The metadata key of [`RunState::best_recall`].
const BEST_RECALL_KEY: &str = "best_recall";

/// Where a run stands: steps taken and skipped, the best validation loss
/// (infinite before the first), validations since it improved, and the
/// gradient health checks.
#[derive(Clone, Debug, PartialEq)]
pub struct RunState {
    pub step: usize,
    pub skipped: usize,
    pub best_val: f64,
    pub bad_vals: usize,
    pub health: GradHealth,
    /// The test MAE and RMSE of the best validation's weights
    /// (`--test-fraction`).
    pub best_test: Option<(f64, f64)>,
    /// The copy task's recall accuracy at the best validation.
    pub best_recall: Option<f64>,
}

impl Default for RunState {
    fn default() -> Self {
        RunState {
            step: 0,
            skipped: 0,
            best_val: f64::INFINITY,
            bad_vals: 0,
            health: GradHealth::default(),
            best_test: None,
            best_recall: None,
        }
    }
}

/// The health counters of `h` as checkpoint counters ([`HEALTH_INTS`]).
fn health_counters(h: &GradHealth) -> [(&'static str, i64); 4] {
    let (t, e) = (h.total, h.epoch);
    let v = [t.explosions, t.vanishing, e.explosions, e.vanishing];
    std::array::from_fn(|i| (HEALTH_INTS[i], v[i] as i64))
}

/// The health checks a checkpoint stored (absent parts, from older
/// checkpoints, start empty), held to `fixed`.
pub fn health_from(f: &TensorFile, fixed: Option<f64>) -> Result<GradHealth> {
    let mut v = [0u64; 4];
    for (i, name) in HEALTH_INTS.iter().enumerate() {
        if f.ints(name)?.is_some() {
            v[i] = counter(f, name)? as u64;
        }
    }
    let mut h = GradHealth::new(fixed);
    h.total = Counts {
        explosions: v[0],
        vanishing: v[1],
    };
    h.epoch = Counts {
        explosions: v[2],
        vanishing: v[3],
    };
    if let Some(w) = f.f32(WINDOW_NAME)? {
        if w.shape.len() != 1 || w.data.len() > WINDOW {
            return Err(Error::tensor(
                WINDOW_NAME,
                format!(
                    "shape {:?} in {}, expected [n] with n <= {WINDOW}",
                    w.shape,
                    f.path.display()
                ),
            ));
        }
        h.set_window(&w.data);
    }
    Ok(h)
}

pub fn save_checkpoint(
    path: &Path,
    tr: &Trainer,
    c: &RunConfig,
    data: &RunData,
    st: &RunState,
    curves: [&[(f64, f64)]; 3],
) -> Result<()> {
    let mut tensors = named_params(tr)?;
    for mut t in tr.stats()? {
        t.name = format!("lstm.{}", t.name);
        tensors.push(t);
    }
    tensors.extend(tr.optim.state_tensors(tr.ctx())?);
    // Collective under MPI; rank 0 alone writes.
    let state = tr.carried_state()?;
    if tr.reducer().is_some_and(|r| r.rank() != 0) {
        return Ok(());
    }
    tensors.push(NamedTensor::new("train.state", vec![state.len()], state));
    if let Some(s) = tr.scaler_state()? {
        tensors.push(NamedTensor::new(SCALER_NAME, vec![3], s.words().to_vec()));
    }
    tensors.push(curve_tensor(CURVE_NAME, curves[0]));
    tensors.push(curve_tensor(VAL_CURVE_NAME, curves[1]));
    tensors.push(curve_tensor(GRAD_CURVE_NAME, curves[2]));
    let window = st.health.window();
    tensors.push(NamedTensor::new(WINDOW_NAME, vec![window.len()], window));
    let mut counters = BTreeMap::new();
    counters.insert(
        crate::kernels::optim::STEP_NAME.to_string(),
        tr.optim.steps() as i64,
    );
    counters.insert("train.step".to_string(), st.step as i64);
    for (name, v) in &tr.lstm.model.tracked {
        counters.insert(format!("lstm.{name}"), *v);
    }
    counters.insert("train.skipped".to_string(), st.skipped as i64);
    counters.insert("train.bad_vals".to_string(), st.bad_vals as i64);
    for (name, v) in health_counters(&st.health) {
        counters.insert(name.to_string(), v);
    }
    let mut meta = model_metadata(tr, c, data)?;
    meta.insert("best_val".to_string(), format!("{}", st.best_val));
    if let Some((mae, rmse)) = st.best_test {
        meta.insert(BEST_TEST_KEY.to_string(), format!("{mae} {rmse}"));
    }
    if let Some(a) = st.best_recall {
        meta.insert(BEST_RECALL_KEY.to_string(), format!("{a}"));
    }
    io::write_with_counters(path, &tensors, &counters, Some(meta))
}

/// The metadata of a checkpoint that describes its model: the settings
/// (`config`), the precision, and the vocabulary or normaliser.
fn model_metadata(tr: &Trainer, c: &RunConfig, data: &RunData) -> Result<HashMap<String, String>> {
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
    meta.insert(PRECISION_KEY.to_string(), tr.lstm.precision().to_string());
    match data {
        RunData::Text(t) => {
            meta.insert("vocab".to_string(), t.vocab.save());
        }
        RunData::Series(s, _) => {
            meta.insert("normalizer".to_string(), s.norm.to_metadata());
        }
        _ => {}
    }
    Ok(meta)
}

/// The model of trainer `tr` (run `c` on `data`) as a checkpoint of it
/// holds it for inference, in memory: the metadata of `model_metadata`,
/// and the parameters, running statistics and counters under checkpoint
/// names (see [`crate::infer::Checkpoint::from_tensors`]).
pub fn model_parts(tr: &Trainer, c: &RunConfig, data: &RunData) -> Result<ModelParts> {
    let stats = tr.stats()?.into_iter().map(|mut t| {
        t.name = format!("lstm.{}", t.name);
        t
    });
    let floats = named_params(tr)?.into_iter().chain(stats).collect();
    let ints = (tr.lstm.model.tracked.iter())
        .map(|(name, v)| (format!("lstm.{name}"), *v))
        .collect();
    Ok((model_metadata(tr, c, data)?, floats, ints))
}

/// A model's metadata, f32 tensors and integer counters.
pub type ModelParts = (
    HashMap<String, String>,
    Vec<NamedTensor>,
    BTreeMap<String, i64>,
);

/// A checkpoint's contents.
pub struct Loaded {
    pub config: RunConfig,
    pub file: TensorFile,
    pub vocab: Option<Vocab>,
    pub norm: Option<Normalizer>,
    /// The precision the run trained in.
    pub precision: crate::model::precision::Precision,
    /// The best validation loss so far (infinite before the first).
    pub best_val: f64,
    /// The best validation's test MAE and RMSE, when scored.
    pub best_test: Option<(f64, f64)>,
    /// The copy task's recall accuracy at the best validation.
    pub best_recall: Option<f64>,
    /// The loss histories so far (for `--plot`).
    pub curve: Vec<(f64, f64)>,
    pub val_curve: Vec<(f64, f64)>,
    pub grad_curve: Vec<(f64, f64)>,
}

/// Reads a checkpoint and checks it as strictly as the command line: its
/// settings as [`crate::run::settings::resolve`] does, no tensor a reader
/// would ignore (see [`Accepted`]), finite values, variances and counters
/// at least 0, and the step counters within the run. Errors name the file
/// and the setting or tensor.
pub fn load_checkpoint(path: &Path) -> Result<Loaded> {
    let file = TensorFile::read(path)?;
    let cfg = file
        .metadata
        .get("config")
        .ok_or_else(|| Error::file(path, "not an lstm-wgpu checkpoint (no `config` metadata)"))?;
    let bad = |e: &dyn std::fmt::Display| Error::file(path, format!("bad `config` metadata: {e}"));
    let config: RunConfig = toml::from_str(cfg).map_err(|e| bad(&e))?;
    validate_config(&config).map_err(|e| bad(&e))?;
    // The names do not depend on the sizes the data gives the head.
    let head = match config.task {
        Task::Text => Head::Language {
            vocab: 1,
            embed: config.embed,
        },
        Task::Series => Head::Regression {
            features: 1,
            outputs: config.horizon,
        },
    };
    let optim = optim_config(&config)?;
    let net = net_with(&config, head)?;
    // Sizes first: the names of an impossible model would not fit memory.
    net.check_size(config.seq_len, config.batch, &SizeLimits::of(None))
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
    let capped = [crate::kernels::optim::STEP_NAME, "train.skipped"];
    for name in capped.into_iter().chain([HEALTH_INTS[0], HEALTH_INTS[2]]) {
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
    let best_test = match file.metadata.get(BEST_TEST_KEY) {
        None => None,
        Some(v) => {
            let x: Vec<f64> = v.split(' ').filter_map(|w| w.parse().ok()).collect();
            match x[..] {
                [mae, rmse] if mae >= 0.0 && rmse >= 0.0 => Some((mae, rmse)),
                _ => {
                    return Err(Error::file(
                        path,
                        format!(
                            "bad `{BEST_TEST_KEY}` metadata `{}`: expected MAE and RMSE >= 0",
                            clip(v)
                        ),
                    ));
                }
            }
        }
    };
    let best_recall = match file.metadata.get(BEST_RECALL_KEY) {
        None => None,
        Some(v) => match v.parse::<f64>() {
            Ok(a) if (0.0..=1.0).contains(&a) => Some(a),
            _ => {
                return Err(Error::file(
                    path,
                    format!(
                        "bad `{BEST_RECALL_KEY}` metadata `{}`: expected an accuracy in [0, 1]",
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
    let grad_curve = curve_from(&floats, GRAD_CURVE_NAME, path)?;
    health_from(&file, None)?;
    let precision = checkpoint_precision(&file)?;
    let (vocab, norm) = data_meta(&file, &config)?;
    Ok(Loaded {
        config,
        file,
        vocab,
        norm,
        precision,
        best_val,
        best_test,
        best_recall,
        curve,
        val_curve,
        grad_curve,
    })
}

/// The vocabulary or normaliser a checkpoint of run `config` holds, and
/// only that one: without it a resume would refit it and a reader would
/// misread the model.
fn data_meta(file: &TensorFile, config: &RunConfig) -> Result<(Option<Vocab>, Option<Normalizer>)> {
    let path = &file.path;
    let need = data_metadata(config);
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
                        describe_data(config)
                    ),
                ));
            }
            _ if has && need.is_none_or(|(k, _)| k != key) => {
                return Err(Error::file(
                    path,
                    format!(
                        "`{key}` metadata, which a {} checkpoint on {} does not have",
                        config.task,
                        describe_data(config)
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
    Ok((vocab, norm))
}

pub fn counter(f: &TensorFile, name: &str) -> Result<i64> {
    match f.ints(name)? {
        Some((_, v)) if v.len() == 1 => Ok(v[0]),
        _ => Err(Error::tensor(
            name,
            format!("missing from {}", f.path.display()),
        )),
    }
}

/// The settings of a run resumed from `l` with the settings `a` given for
/// it (`from`: the file they came from, for messages): those that would
/// change the model or its data refused ([`check_fixed`]), the data path
/// and the ones a run may change (`lr`, `val_every`, `patience`,
/// `explode_threshold`, `hist_every`) applied. `memory`: the task of data
/// given in memory, which a run trained on such data needs again.
pub fn resumed_config(
    a: &Config,
    l: &Loaded,
    from: Option<&Path>,
    memory: Option<Task>,
) -> Result<RunConfig> {
    let mut c = l.config.clone();
    check_fixed(a, &c, from)?;
    if let Some(t) = memory {
        if let Some(p) = &a.data {
            return Err(Error::Invalid(format!(
                "--data {}: the data is given in memory; give one or the other",
                p.display()
            )));
        }
        if t != c.task {
            return Err(Error::Invalid(format!(
                "the data given in memory is for task {t}, but {} is a {} run",
                l.file.path.display(),
                c.task
            )));
        }
        c.data = None;
        c.in_memory = true;
    } else if let Some(d) = &a.data {
        c.data = Some(d.clone());
        c.in_memory = false;
    } else if c.in_memory {
        return Err(Error::file(
            &l.file.path,
            "its run trained on data given in memory: give that data again (or --data)",
        ));
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
    c.explode_threshold = a.explode_threshold.or(c.explode_threshold);
    c.hist_every = a.hist_every.or(c.hist_every);
    validate_config(&c)?;
    Ok(c)
}
