//! A run's data: what the caller gives ([`Data`]), loading it, batches
//! per step, splits and `--dump-data`.

use crate::data::{
    AddingTask, CopyTask, CsvTable, Normalizer, SelectOptions, Selection, SeriesConfig,
    SeriesDataset, SeriesTable, Split, TextConfig, TextData, Vocab, WindowSet, val_count,
};
use crate::error::{Error, Result, num};
use crate::io;
use crate::run::choice::{Dataset, MissingChoice, Task};
use crate::run::settings::{RunConfig, describe_data, init_of, norm_of};
use crate::train::reduce::columns;
use crate::train::{Carry, Head, NetConfig, StepData, Trainer};
use std::collections::BTreeMap;
use std::path::Path;

/// The data a run trains on, when the caller holds it: token ids or the
/// rows of a series, in memory. [`Data::Settings`] takes the settings'
/// `data` file or built-in `dataset` instead.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Data {
    /// The file [`crate::run::Config::data`] names (text, or a CSV for
    /// series), or the built-in [`crate::run::Config::dataset`].
    #[default]
    Settings,
    /// A text (task text) as token ids, and the characters they stand for
    /// (id k is `vocab.chars[k]`; checkpoints keep the vocabulary).
    Tokens {
        /// The ids, in text order.
        ids: Vec<u32>,
        /// Their vocabulary.
        vocab: Vocab,
    },
    /// A series (task series): `values` row after row, one value per
    /// column of `columns` (their names). The settings' `features`,
    /// `target`, `time` and `missing` choose among the columns as among a
    /// CSV's (by default the target is the last column, and every column
    /// that does not look like a time index is a feature); NaN is a
    /// missing value.
    Rows {
        /// rows × columns values, row-major.
        values: Vec<f64>,
        /// The columns' names.
        columns: Vec<String>,
    },
}

impl Data {
    /// A text as token ids of its own vocabulary (its distinct characters,
    /// sorted), as `--data FILE` reads a text file.
    pub fn text(text: &str) -> Result<Self> {
        let vocab = Vocab::from_text(text)?;
        Ok(Data::Tokens {
            ids: vocab.encode(text)?,
            vocab,
        })
    }

    /// A series of `columns.len()` named columns, `values` row after row.
    pub fn rows(values: Vec<f64>, columns: &[&str]) -> Self {
        Data::Rows {
            values,
            columns: columns.iter().map(|c| c.to_string()).collect(),
        }
    }

    /// The task of data given in memory (`None` for [`Data::Settings`]).
    pub fn task(&self) -> Option<Task> {
        match self {
            Data::Settings => None,
            Data::Tokens { .. } => Some(Task::Text),
            Data::Rows { .. } => Some(Task::Series),
        }
    }
}

/// What [`Data::Rows`] are called in messages.
pub const ROWS_SOURCE: &str = "data in memory";

/// The data of a run, loaded.
pub enum RunData {
    /// A text.
    Text(TextData),
    /// The copy task.
    Copy(CopyTask),
    /// A series and its chosen columns.
    Series(SeriesDataset, Box<Selection>),
    /// The adding problem.
    Adding(AddingTask),
}

/// Loads the data of run `c`: `given` in memory, or its file or built-in
/// dataset; with the vocabulary or normaliser of the checkpoint it resumes,
/// if any.
pub fn load_data(
    c: &RunConfig,
    given: &Data,
    vocab: Option<Vocab>,
    norm: Option<Normalizer>,
) -> Result<RunData> {
    if c.task == Task::Text {
        let tc = TextConfig {
            batch: c.batch,
            eval_batch: c.batch,
            bptt: c.seq_len,
            val_fraction: c.val_fraction,
        };
        if let Data::Tokens { ids, vocab: v } = given {
            if let Some(stored) = vocab
                && stored != *v
            {
                return Err(Error::Invalid(format!(
                    "the vocabulary given ({} characters) is not the one the run was trained                      with ({} characters)",
                    v.len(),
                    stored.len()
                )));
            }
            return Ok(RunData::Text(TextData::from_tokens(
                ids.clone(),
                v.clone(),
                &tc,
            )?));
        }
        return Ok(match (&c.data, c.dataset) {
            (Some(p), _) => RunData::Text(TextData::from_file(p, &tc, vocab)?),
            (None, Dataset::Copy) => RunData::Copy(CopyTask::new(
                c.seq_len.max(4) / 4,
                c.seq_len.max(4) - 2 * (c.seq_len.max(4) / 4),
                8,
                c.seed,
            )?),
            (None, _) => {
                let text = crate::data::generated_text(crate::data::DEFAULT_TEXT_BYTES, c.seed);
                RunData::Text(match vocab {
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
    if c.data.is_none() && !c.in_memory && c.dataset == Dataset::Adding {
        return Ok(RunData::Adding(AddingTask::new(c.seq_len.max(2), c.seed)?));
    }
    let sel = series_table(c, given)?;
    let in_file = |e: Error| match (&c.data, c.in_memory, e) {
        (Some(p), _, Error::Invalid(m)) => Error::file(p, m),
        (None, true, Error::Invalid(m)) => Error::file(ROWS_SOURCE, m),
        (_, _, e) => e,
    };
    // The test rows come last: training and validation see only the rows
    // before them.
    let dev = dev_rows(c, &sel.table)?;
    let ds = match norm {
        Some(n) => SeriesDataset::with_normalizer(&dev, &sc, n),
        None => SeriesDataset::new(&dev, &sc),
    }
    .map_err(in_file)?;
    Ok(RunData::Series(ds, Box::new(sel)))
}

/// The rows of `t` before the test split of `--test-fraction` (all of
/// them without one), checked to leave a training window and to hold a
/// test window.
pub fn dev_rows(c: &RunConfig, t: &SeriesTable) -> Result<SeriesTable> {
    let n = t.len();
    let n_test = val_count(n, c.test_fraction)?;
    if c.test_fraction == 0.0 {
        return Ok(t.clone());
    }
    let f = num(c.test_fraction);
    if n_test < c.horizon {
        return Err(Error::Invalid(format!(
            "--test-fraction {f}: holds out {n_test} of the {n} rows, fewer than --horizon {} \
             (one test window needs that many); use a larger fraction",
            c.horizon
        )));
    }
    let m = n - n_test;
    let n_train = m - val_count(m, c.val_fraction)?;
    let need = c.seq_len.saturating_add(c.horizon);
    if n_train < need {
        return Err(Error::Invalid(format!(
            "--test-fraction {f}: the last {n_test} of the {n} rows held out for test and {} \
             for validation leave {n_train} training rows, but one window needs --seq-len + \
             --horizon = {need} rows",
            m - n_train
        )));
    }
    Ok(SeriesTable {
        feature_names: t.feature_names.clone(),
        features: t.features.iter().map(|col| col[..m].to_vec()).collect(),
        target_name: t.target_name.clone(),
        target: t.target[..m].to_vec(),
    })
}

/// The test windows of a series run with `--test-fraction`: every window
/// whose targets all lie in the test rows (its inputs may reach back into
/// the validation rows, as a forecaster's would), normalized with the
/// training rows' statistics.
pub fn test_set(c: &RunConfig, data: &RunData) -> Result<Option<WindowSet>> {
    match data {
        RunData::Series(ds, sel) => test_windows(c, &sel.table, &ds.norm),
        _ => Ok(None),
    }
}

/// The test windows of `--test-fraction` over the rows of `table`, as
/// [`test_set`]'s, with the statistics `norm`.
pub fn test_windows(
    c: &RunConfig,
    table: &SeriesTable,
    norm: &Normalizer,
) -> Result<Option<WindowSet>> {
    let n = table.len();
    let n_test = val_count(n, c.test_fraction)?;
    if n_test == 0 {
        return Ok(None);
    }
    let sc = SeriesConfig {
        seq_len: c.seq_len,
        horizon: c.horizon,
        // Exactly n_test rows: round(n · n_test / n).
        val_fraction: n_test as f64 / n as f64,
    };
    let all = SeriesDataset::with_normalizer(table, &sc, norm.clone())?;
    Ok(all.val)
}

/// The columns of a series run: the `--data` CSV's (or the rows `given`
/// in memory) chosen columns, or the built-in `sine` / `mackey-glass`
/// series.
pub fn series_table(c: &RunConfig, given: &Data) -> Result<Selection> {
    let csv = match (&c.data, given) {
        (Some(p), _) => Some(CsvTable::read(p)?),
        (None, Data::Rows { values, columns }) => {
            Some(CsvTable::from_values(ROWS_SOURCE, columns.clone(), values)?)
        }
        (None, _) => None,
    };
    match csv {
        Some(csv) => {
            let o = SelectOptions {
                features: c
                    .features
                    .as_ref()
                    .map(|f| f.split(',').map(|s| s.trim().to_string()).collect()),
                target: c.target.clone(),
                time: c.time.clone(),
                missing: c.missing.into(),
            };
            csv.select_with(&o)
        }
        None => {
            let b = c.dataset.builtin();
            let table = crate::data::builtin_series(b, crate::data::DEFAULT_SERIES_LEN, c.seed)?;
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
pub fn describe_columns(c: &RunConfig, sel: &Selection) -> String {
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
    if c.data.is_some() || c.in_memory {
        s += &format!("; missing cells: {}", c.missing);
        if c.missing == MissingChoice::Drop {
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
/// trainer (inputs [T, B] or [T, B, 2], adding targets [B, 1]). Returns
/// the line that says what it wrote.
pub fn dump_data(
    path: &Path,
    c: &RunConfig,
    given: &Data,
    data: &RunData,
    steps: usize,
    budget: u64,
) -> Result<String> {
    let what = match data {
        RunData::Text(_) => {
            let text = match (&c.data, given) {
                (Some(p), _) => crate::data::read_text(p)?,
                (None, Data::Tokens { ids, vocab }) => vocab.decode(ids),
                (None, _) => crate::data::generated_text(crate::data::DEFAULT_TEXT_BYTES, c.seed),
            };
            io::write_atomic(path, text.as_bytes())?;
            format!("{} characters of text", text.chars().count())
        }
        RunData::Series(_, sel) => {
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
        RunData::Copy(task) => {
            check_dump_size(
                steps,
                task.seq_len().saturating_mul(c.batch).saturating_mul(16),
                budget,
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
        RunData::Adding(task) => {
            let per = task.seq_len.saturating_mul(8).saturating_add(20);
            check_dump_size(steps, per.saturating_mul(c.batch), budget)?;
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
    Ok(format!(
        "dump-data: wrote {what} ({}) to {}",
        describe_data(c),
        path.display()
    ))
}

/// Tensors of a `--dump-data` safetensors file.
#[derive(Default)]
pub struct DumpTensors(Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>);

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
        meta.insert("dataset".to_string(), c.dataset.to_string());
        meta.insert(
            "config".to_string(),
            toml::to_string(c).map_err(|e| Error::Invalid(e.to_string()))?,
        );
        io::write_atomic(path, &io::serialize(&self.0, &meta)?)
    }
}

pub fn net_of(c: &RunConfig, data: &RunData) -> Result<NetConfig> {
    let head = match data {
        RunData::Text(t) => Head::Language {
            vocab: t.vocab.len(),
            embed: c.embed,
        },
        RunData::Copy(k) => Head::Language {
            vocab: k.vocab_size(),
            embed: c.embed,
        },
        RunData::Series(s, _) => Head::Regression {
            features: s.train.num_features(),
            outputs: c.horizon,
        },
        RunData::Adding(_) => Head::Regression {
            features: 2,
            outputs: 1,
        },
    };
    net_with(c, head)
}

/// The network of a run's settings around `head`.
pub fn net_with(c: &RunConfig, head: Head) -> Result<NetConfig> {
    let mut net = NetConfig::new(head, c.hidden, c.layers);
    net.norm = norm_of(c);
    net.dropout = c.dropout;
    net.residual = c.residual;
    net.init = init_of(c);
    net.cell = crate::run::settings::run_cell(c)?;
    net.weight_drop = c.weight_drop;
    net.zoneout = (c.zoneout_h, c.zoneout_c);
    net.attention = c.attention.map(|a| a.attention());
    net.proj = c.proj_size;
    Ok(net)
}

/// Batches per epoch of the training split.
pub fn epoch_len(c: &RunConfig, data: &RunData) -> usize {
    match data {
        RunData::Text(t) => t.train.num_windows(),
        RunData::Series(s, _) => s.train.num_batches(c.batch, true),
        RunData::Copy(_) | RunData::Adding(_) => 100,
    }
}

/// Owned batch for step `k` (0-based) of the training split, and whether
/// its state continues the previous step's.
pub fn train_batch(c: &RunConfig, data: &RunData, k: usize) -> Result<(usize, Owned, Carry)> {
    match data {
        RunData::Text(t) => {
            let nw = t.train.num_windows();
            let w = k % nw;
            let b = t.train.get_batch(w);
            Ok((
                b.seq_len,
                Owned::Tokens(b.inputs, b.targets),
                if w == 0 { Carry::Zero } else { Carry::Continue },
            ))
        }
        RunData::Copy(task) => {
            let b = task.batch(Split::Train, k as u64, c.batch)?;
            Ok((b.seq_len, Owned::Tokens(b.inputs, b.targets), Carry::Zero))
        }
        RunData::Series(s, _) => {
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
        RunData::Adding(task) => Ok((
            task.seq_len,
            adding_batch(c, task, Split::Train, k as u64)?,
            Carry::Zero,
        )),
    }
}

/// An adding-problem batch, with random lengths under `--min-len`.
pub fn adding_batch(c: &RunConfig, task: &AddingTask, split: Split, i: u64) -> Result<Owned> {
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

pub enum Owned {
    Tokens(Vec<u32>, Vec<u32>),
    Series(Vec<f32>, Vec<f32>, Option<Vec<usize>>),
}

impl Owned {
    pub fn view(&self) -> StepData<'_> {
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

/// This rank's shard of a global batch `b` of a data-parallel run (the
/// trainer's reducer): its contiguous sequences (columns of the
/// time-major tensors); `b` itself outside one.
pub fn shard(tr: &Trainer, b: Owned) -> Owned {
    let Some(r) = tr.reducer() else { return b };
    let (mine, all) = (tr.batch(), tr.batch() * r.size());
    let cols = (r.rank() * mine, mine);
    match (b, tr.net.head) {
        (Owned::Tokens(ids, targets), _) => {
            Owned::Tokens(columns(&ids, all, 1, cols), columns(&targets, all, 1, cols))
        }
        (
            Owned::Series(x, targets, lengths),
            Head::Regression { features, outputs } | Head::Sequence { features, outputs },
        ) => Owned::Series(
            columns(&x, all, features, cols),
            columns(&targets, all, outputs, cols),
            lengths.map(|l| l[cols.0..cols.0 + cols.1].to_vec()),
        ),
        // A batch of the wrong task: the trainer refuses it as it is.
        (b, Head::Language { .. }) => b,
    }
}

/// Refuses data that cannot run as asked: fewer training windows than
/// `--batch`, or a validation split that is empty while validation is
/// asked for (`--val-fraction` > 0, `--patience`).
pub fn check_splits(c: &RunConfig, data: &RunData) -> Result<()> {
    let src = || describe_data(c);
    let has_val = match data {
        RunData::Text(t) => t.val.is_some(),
        RunData::Series(s, _) => {
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
        RunData::Copy(_) | RunData::Adding(_) => true,
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

/// The longest window of a run: text windows end with the streams.
pub fn run_seq_len(c: &RunConfig, data: &RunData) -> usize {
    match data {
        RunData::Text(t) => c.seq_len.min(t.train.stream_len().saturating_sub(1)).max(1),
        RunData::Copy(k) => k.seq_len(),
        RunData::Series(..) => c.seq_len,
        RunData::Adding(k) => k.seq_len,
    }
}

/// Refuses a `--dump-data` of `steps` training batches (and the
/// validation batches) of `bytes_per_batch` over the host budget, before
/// anything is built: the tensors and the file's bytes are both held.
pub fn check_dump_size(steps: usize, bytes_per_batch: usize, budget: u64) -> Result<()> {
    let n = steps.saturating_add(VAL_BATCHES) as u128;
    let bytes = n.saturating_mul(bytes_per_batch as u128).saturating_mul(2);
    if bytes > budget as u128 {
        return Err(Error::Invalid(format!(
            "--dump-data: {steps} steps (--steps) of {bytes_per_batch} bytes need {} bytes, \
             over the host budget of {budget} bytes; dump fewer steps",
            u64::try_from(bytes).map_or("more than 2^64".into(), |b| b.to_string())
        )));
    }
    Ok(())
}

/// A CSV cell: quoted when it holds a comma, a quote or a line break.
pub fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Validation batches of the generated copy and adding tasks (the same
/// ones at every validation).
pub const VAL_BATCHES: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_quote_commas() {
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("a\nb"), "\"a\nb\"");
        assert_eq!(csv_cell("x"), "x");
    }
}
