//! Training data on the host: character-level text, CSV time series and the
//! built-in generated datasets (`sine`, `mackey-glass`, `adding`, `copy`,
//! `text`).
//!
//! Everything is time-major like `nn.LSTM` without `batch_first`: token
//! batches are `[T, B]` ids, feature batches `[T, B, F]` floats, and series
//! targets `[B, k]`.
//!
//! * Text: [`Vocab`] (the distinct characters sorted by code point) and
//!   [`TextStreams`], which cuts the token stream into `B` contiguous streams
//!   and windows them exactly like PyTorch's `word_language_model`
//!   (`batchify` and `get_batch`). [`TextData`] adds the validation split.
//! * Time series: [`CsvTable`] (a small CSV reader), [`SeriesTable`] (the
//!   chosen feature and target columns), [`Normalizer`] (z-scores fitted on
//!   the training rows only) and [`SeriesDataset`] (sliding windows, split by
//!   time, seeded shuffling).
//! * Generated: [`sine_mixture`], [`mackey_glass`], [`AddingTask`],
//!   [`CopyTask`] and [`generated_text`], all seeded and deterministic.
//! * Helpers: [`pad_sequences`], [`pad_tokens`] and [`one_hot`].
//!
//! Only `std` and the library's generator ([`crate::rng`]) are used.

use crate::error::{Error, Result, clip, num};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

/// The validation fraction used when none is given.
pub const DEFAULT_VAL_FRACTION: f64 = 0.1;

// ---------------------------------------------------------------------------
// PRNG
// ---------------------------------------------------------------------------

pub use crate::rng::{Rng, derive_seed};

/// Which split a generated batch belongs to: the two draw from disjoint
/// seeded streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// Training data.
    Train,
    /// Validation data.
    Val,
}

impl Split {
    fn stream(self) -> u64 {
        match self {
            Split::Train => 0x7472_6169_6e00_0001,
            Split::Val => 0x7661_6c00_0000_0002,
        }
    }
}

/// How many of `n` items form the validation split: `round(n · val_fraction)`.
/// `val_fraction` must lie in `[0, 1)`.
pub fn val_count(n: usize, val_fraction: f64) -> Result<usize> {
    if !(val_fraction.is_finite() && (0.0..1.0).contains(&val_fraction)) {
        return Err(Error::Invalid(format!(
            "the validation fraction must lie in [0, 1), got {}",
            num(val_fraction)
        )));
    }
    Ok((((n as f64) * val_fraction).round() as usize).min(n))
}

// ---------------------------------------------------------------------------
// Text
// ---------------------------------------------------------------------------

/// Character vocabulary: the distinct Unicode scalar values of a text,
/// sorted by code point; a character's id is its index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vocab {
    /// The characters, strictly increasing.
    pub chars: Vec<char>,
}

impl Vocab {
    /// The distinct characters of `text`, sorted by code point.
    pub fn from_text(text: &str) -> Result<Self> {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        if chars.is_empty() {
            return Err(Error::Invalid(
                "cannot build a vocabulary from an empty text".into(),
            ));
        }
        Ok(Self { chars })
    }

    /// Number of characters.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The id of `c`, if it is in the vocabulary.
    pub fn id(&self, c: char) -> Option<u32> {
        self.chars.binary_search(&c).ok().map(|i| i as u32)
    }

    /// The ids of the characters of `text`; an unknown character is an error
    /// naming it and its line and column (both from 1, columns in
    /// characters).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(text.len());
        let (mut line, mut col) = (1usize, 0usize);
        for c in text.chars() {
            col += 1;
            match self.id(c) {
                Some(i) => out.push(i),
                None => {
                    return Err(Error::Invalid(format!(
                        "character {c:?} (U+{:04X}) at line {line}, column {col} is not in the \
                         vocabulary of {} characters",
                        c as u32,
                        self.len()
                    )));
                }
            }
            if c == '\n' {
                line += 1;
                col = 0;
            }
        }
        Ok(out)
    }

    /// The text of `ids`; an id outside the vocabulary becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter()
            .map(|&i| {
                self.chars
                    .get(i as usize)
                    .copied()
                    .unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect()
    }

    /// The vocabulary as one string: the characters concatenated in order
    /// (for checkpoint metadata).
    pub fn save(&self) -> String {
        self.chars.iter().collect()
    }

    /// Reads a string written by [`Vocab::save`]; it must be non-empty and
    /// strictly increasing by code point.
    pub fn load(s: &str) -> Result<Self> {
        let chars: Vec<char> = s.chars().collect();
        if chars.is_empty() {
            return Err(Error::Invalid("the stored vocabulary is empty".into()));
        }
        for (i, w) in chars.windows(2).enumerate() {
            if w[0] >= w[1] {
                return Err(Error::Invalid(format!(
                    "the stored vocabulary is not strictly sorted by code point: character {} \
                     is {:?} (U+{:04X}) after {:?} (U+{:04X})",
                    i + 2,
                    w[1],
                    w[1] as u32,
                    w[0],
                    w[0] as u32
                )));
            }
        }
        Ok(Self { chars })
    }
}

/// Reads a UTF-8 text file (a leading byte-order mark is dropped).
pub fn read_text(path: impl AsRef<Path>) -> Result<String> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    let s = String::from_utf8(bytes).map_err(|e| {
        let off = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..off].iter().filter(|&&b| b == b'\n').count() + 1;
        Error::file(path, format!("not valid UTF-8 at byte {off} (line {line})"))
    })?;
    Ok(match s.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => s,
    })
}

/// A batch of token ids: `inputs` and `targets` both `[seq_len, batch]`,
/// time-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBatch {
    /// Input ids `[seq_len, batch]`.
    pub inputs: Vec<u32>,
    /// Target ids `[seq_len, batch]`.
    pub targets: Vec<u32>,
    /// Time steps in this batch.
    pub seq_len: usize,
    /// Sequences in this batch.
    pub batch: usize,
}

/// A token stream cut into `batch` contiguous streams like PyTorch's
/// `word_language_model`:
///
/// ```python
/// def batchify(data, bsz):
///     nbatch = data.size(0) // bsz
///     data = data.narrow(0, 0, nbatch * bsz)      # the tail is dropped
///     return data.view(bsz, -1).t().contiguous()  # [nbatch, bsz]
/// def get_batch(source, i):
///     seq_len = min(bptt, len(source) - 1 - i)
///     return source[i:i+seq_len], source[i+1:i+1+seq_len]
/// for i in range(0, train_data.size(0) - 1, bptt): ...
/// ```
///
/// Stream `b` is `tokens[b·nbatch .. (b+1)·nbatch]`; window `k` takes
/// positions `[k·T, min(k·T + T, nbatch − 1))` of every stream as input and
/// the following positions as targets. Window indices wrap around: window
/// `num_windows()` is window 0 of the next epoch, where the trainer resets
/// the hidden state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextStreams {
    tokens: Vec<u32>,
    batch: usize,
    nbatch: usize,
    bptt: usize,
    dropped: usize,
}

impl TextStreams {
    /// Cuts `tokens` into `batch` streams windowed by `bptt` steps; every
    /// stream needs at least 2 tokens.
    pub fn new(tokens: &[u32], batch: usize, bptt: usize) -> Result<Self> {
        if batch == 0 || bptt == 0 {
            return Err(Error::Invalid(format!(
                "batch ({batch}) and bptt ({bptt}) must both be at least 1"
            )));
        }
        let nbatch = tokens.len() / batch;
        if nbatch < 2 {
            return Err(Error::Invalid(format!(
                "{} tokens cannot fill {batch} streams of at least 2 tokens (need at least {}); \
                 use a smaller batch or more text",
                tokens.len(),
                2 * batch
            )));
        }
        Ok(Self {
            tokens: tokens[..nbatch * batch].to_vec(),
            batch,
            nbatch,
            bptt,
            dropped: tokens.len() - nbatch * batch,
        })
    }

    /// Number of streams `B`.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Window length `T`.
    pub fn bptt(&self) -> usize {
        self.bptt
    }

    /// Tokens per stream (`nbatch`).
    pub fn stream_len(&self) -> usize {
        self.nbatch
    }

    /// Tokens of the tail that did not fill a whole row and were dropped.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// Stream `b` (`0 <= b < batch`).
    pub fn stream(&self, b: usize) -> &[u32] {
        &self.tokens[b * self.nbatch..(b + 1) * self.nbatch]
    }

    /// Windows per epoch: `ceil((nbatch − 1) / T)`.
    pub fn num_windows(&self) -> usize {
        (self.nbatch - 1).div_ceil(self.bptt)
    }

    /// Predicted tokens per epoch, `(nbatch − 1) · B` (to average a loss per
    /// token over an epoch).
    pub fn num_targets(&self) -> usize {
        (self.nbatch - 1) * self.batch
    }

    /// The epoch that global step `step` falls in.
    pub fn epoch_of(&self, step: usize) -> usize {
        step / self.num_windows()
    }

    /// Whether global step `step` is the first window of an epoch (where the
    /// hidden state is reset).
    pub fn is_epoch_start(&self, step: usize) -> bool {
        step.is_multiple_of(self.num_windows())
    }

    /// First position of window `k` (taken modulo `num_windows()`).
    pub fn window_start(&self, k: usize) -> usize {
        (k % self.num_windows()) * self.bptt
    }

    /// Length of window `k`: `min(T, nbatch − 1 − start)`.
    pub fn window_len(&self, k: usize) -> usize {
        self.bptt.min(self.nbatch - 1 - self.window_start(k))
    }

    /// Window `k` (modulo `num_windows()`): ids and next-token targets, both
    /// `[T', B]` time-major with `T' = window_len(k)`.
    pub fn get_batch(&self, k: usize) -> TokenBatch {
        let start = self.window_start(k);
        let t_len = self.window_len(k);
        let b_n = self.batch;
        let mut inputs = Vec::with_capacity(t_len * b_n);
        let mut targets = Vec::with_capacity(t_len * b_n);
        for t in 0..t_len {
            for b in 0..b_n {
                let p = b * self.nbatch + start + t;
                inputs.push(self.tokens[p]);
                targets.push(self.tokens[p + 1]);
            }
        }
        TokenBatch {
            inputs,
            targets,
            seq_len: t_len,
            batch: b_n,
        }
    }
}

/// Settings of [`TextData`]; the defaults are those of PyTorch's
/// `word_language_model` (batch 20, eval batch 10, bptt 35) with a 10 %
/// validation split.
#[derive(Clone, Debug, PartialEq)]
pub struct TextConfig {
    /// Training streams.
    pub batch: usize,
    /// Validation streams.
    pub eval_batch: usize,
    /// Window length.
    pub bptt: usize,
    /// The last `val_fraction` of the tokens form the validation split
    /// (0: none).
    pub val_fraction: f64,
}

impl Default for TextConfig {
    fn default() -> Self {
        Self {
            batch: 20,
            eval_batch: 10,
            bptt: 35,
            val_fraction: DEFAULT_VAL_FRACTION,
        }
    }
}

/// A character-level corpus: vocabulary, training streams and validation
/// streams (the last `val_fraction` of the tokens).
#[derive(Clone, Debug)]
pub struct TextData {
    /// The vocabulary (of the whole text, so the validation split encodes).
    pub vocab: Vocab,
    /// Training streams.
    pub train: TextStreams,
    /// Validation streams (`None` when `val_fraction` is 0).
    pub val: Option<TextStreams>,
    /// Tokens in the training split (before the tail is dropped).
    pub train_tokens: usize,
    /// Tokens in the validation split (before the tail is dropped).
    pub val_tokens: usize,
}

impl TextData {
    /// Builds the vocabulary from `text` and splits it.
    pub fn new(text: &str, cfg: &TextConfig) -> Result<Self> {
        Self::with_vocab(text, Vocab::from_text(text)?, cfg)
    }

    /// Encodes `text` with a given vocabulary (e.g. a checkpoint's) and
    /// splits it.
    pub fn with_vocab(text: &str, vocab: Vocab, cfg: &TextConfig) -> Result<Self> {
        let tokens = vocab.encode(text)?;
        let n_val = val_count(tokens.len(), cfg.val_fraction)?;
        let (tr, va) = tokens.split_at(tokens.len() - n_val);
        let train = TextStreams::new(tr, cfg.batch, cfg.bptt)
            .map_err(|e| Error::Invalid(format!("training split: {e}")))?;
        let val = if n_val == 0 {
            None
        } else {
            Some(TextStreams::new(va, cfg.eval_batch, cfg.bptt).map_err(|e| {
                Error::Invalid(format!(
                    "validation split (the last {n_val} of {} tokens): {e}",
                    tokens.len()
                ))
            })?)
        };
        Ok(Self {
            vocab,
            train,
            val,
            train_tokens: tr.len(),
            val_tokens: n_val,
        })
    }

    /// Reads a UTF-8 file and builds the corpus (with `vocab` if given);
    /// errors name the file.
    pub fn from_file(
        path: impl AsRef<Path>,
        cfg: &TextConfig,
        vocab: Option<Vocab>,
    ) -> Result<Self> {
        let path = path.as_ref();
        let text = read_text(path)?;
        let r = match vocab {
            Some(v) => Self::with_vocab(&text, v, cfg),
            None => Self::new(&text, cfg),
        };
        r.map_err(|e| match e {
            Error::File { .. } => e,
            other => Error::file(path, other),
        })
    }
}

/// One-hot encoding of `ids` (any shape, e.g. `[T, B]`) as `[.., vocab_size]`.
pub fn one_hot(ids: &[u32], vocab_size: usize) -> Result<Vec<f32>> {
    let mut out = vec![0f32; ids.len() * vocab_size];
    for (i, &id) in ids.iter().enumerate() {
        if id as usize >= vocab_size {
            return Err(Error::tensor(
                "ids",
                format!("id {id} at index {i} is outside the vocabulary of {vocab_size}"),
            ));
        }
        out[i * vocab_size + id as usize] = 1.0;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------

/// A comma-separated table with a header line, read as RFC 4180 says: a
/// field in double quotes may hold commas, line breaks and quotes (written
/// twice, `""`). Fields are trimmed (inside quotes too); blank lines are
/// skipped; `\r\n` line ends and a byte-order mark are accepted.
#[derive(Clone, Debug)]
pub struct CsvTable {
    /// Where the table came from (used in error messages).
    pub source: PathBuf,
    /// Column names.
    pub header: Vec<String>,
    /// The cells of every data row, row after row, unquoted and trimmed.
    cells: String,
    /// Byte range in `cells` of cell (r, c), at `r · columns + c`.
    spans: Vec<Range<usize>>,
    /// The 1-based line on which each data row starts.
    lines: Vec<usize>,
}

fn parse_number(cell: &str) -> Option<f64> {
    cell.parse::<f64>().ok()
}

/// Splits CSV text into records (RFC 4180 quoting) and hands each to
/// `each` with the line it starts on and its fields (unquoted, trimmed);
/// an unclosed quote or text after a closing quote is an error naming its
/// line.
fn csv_records(
    text: &str,
    source: &Path,
    mut each: impl FnMut(usize, Vec<String>) -> Result<()>,
) -> Result<()> {
    let bad = |msg: String| Error::file(source, msg);
    let mut it = text.chars().peekable();
    let mut line = 1usize;
    while it.peek().is_some() {
        let start = line;
        let mut fields = Vec::new();
        let mut quoted_any = false;
        loop {
            while it.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
            let mut f = String::new();
            if it.next_if_eq(&'"').is_some() {
                quoted_any = true;
                let opened = line;
                loop {
                    match it.next() {
                        None => {
                            return Err(bad(format!(
                                "line {opened}: a quoted field is never closed (a quote inside \
                                 quotes is written twice, \"\")"
                            )));
                        }
                        Some('"') if it.next_if_eq(&'"').is_some() => f.push('"'),
                        Some('"') => break,
                        Some(c) => {
                            line += usize::from(c == '\n');
                            f.push(c);
                        }
                    }
                }
                while it.next_if(|c| c.is_whitespace() && *c != '\n').is_some() {}
                if !matches!(it.peek(), None | Some(',') | Some('\n')) {
                    return Err(bad(format!(
                        "line {line}: field {} has text after its closing quote (a quote inside \
                         quotes is written twice, \"\")",
                        fields.len() + 1
                    )));
                }
            } else {
                while let Some(c) = it.next_if(|c| *c != ',' && *c != '\n') {
                    f.push(c);
                }
            }
            fields.push(f.trim().to_string());
            match it.next() {
                Some(',') => {}
                Some(_) => {
                    line += 1;
                    break;
                }
                None => break,
            }
        }
        // A line of nothing but whitespace is no record.
        if quoted_any || fields.len() > 1 || !fields[0].is_empty() {
            each(start, fields)?;
        }
    }
    Ok(())
}

/// Refuses a header with an empty or repeated name.
fn check_header(source: &Path, line: usize, names: &[String]) -> Result<()> {
    for (j, n) in names.iter().enumerate() {
        if n.is_empty() {
            return Err(Error::file(
                source,
                format!("line {line}: column {} of the header has no name", j + 1),
            ));
        }
        if let Some(k) = names[..j].iter().position(|m| m == n) {
            return Err(Error::file(
                source,
                format!(
                    "line {line}: columns {} and {} of the header are both named `{n}`",
                    k + 1,
                    j + 1
                ),
            ));
        }
    }
    Ok(())
}

impl CsvTable {
    /// Parses CSV text; `source` names it in errors. Every data row must
    /// have as many fields as the header.
    pub fn parse(text: &str, source: impl Into<PathBuf>) -> Result<Self> {
        let source = source.into();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut header: Option<(usize, Vec<String>)> = None;
        let (mut cells, mut spans, mut lines) = (String::new(), Vec::new(), Vec::new());
        csv_records(text, &source, |line, fields| {
            let Some((header_line, names)) = &header else {
                check_header(&source, line, &fields)?;
                header = Some((line, fields));
                return Ok(());
            };
            if fields.len() != names.len() {
                return Err(Error::file(
                    &source,
                    format!(
                        "line {line}: {} fields, but the header (line {header_line}) has {} \
                         columns",
                        fields.len(),
                        names.len()
                    ),
                ));
            }
            for f in &fields {
                spans.push(cells.len()..cells.len() + f.len());
                cells.push_str(f);
            }
            lines.push(line);
            Ok(())
        })?;
        let Some((header_line, names)) = header else {
            return Err(Error::file(&source, "empty file: expected a header line"));
        };
        if lines.is_empty() {
            return Err(Error::file(
                &source,
                format!("no data rows after the header (line {header_line})"),
            ));
        }
        Ok(Self {
            source,
            header: names,
            cells,
            spans,
            lines,
        })
    }

    /// Reads and parses a CSV file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = read_text(path)?;
        Self::parse(&text, path)
    }

    /// Data rows.
    pub fn num_rows(&self) -> usize {
        self.lines.len()
    }

    /// Columns.
    pub fn num_columns(&self) -> usize {
        self.header.len()
    }

    /// The 1-based line number on which data row `r` starts.
    pub fn line_of_row(&self, r: usize) -> usize {
        self.lines[r]
    }

    fn row_fields(&self, r: usize) -> impl Iterator<Item = &str> {
        let n = self.num_columns();
        self.spans[r * n..(r + 1) * n]
            .iter()
            .map(|s| &self.cells[s.clone()])
    }

    /// The (trimmed, unquoted) cell of data row `r`, column `c`.
    pub fn cell(&self, r: usize, c: usize) -> &str {
        &self.cells[self.spans[r * self.num_columns() + c].clone()]
    }

    /// The index of the column named `name`.
    pub fn column_index(&self, name: &str) -> Result<usize> {
        self.header.iter().position(|h| h == name).ok_or_else(|| {
            Error::file(
                &self.source,
                format!(
                    "no column `{name}`; the header has: {}",
                    self.header.join(", ")
                ),
            )
        })
    }

    /// Whether a cell stands for a missing value: empty, or `NA`, `N/A`,
    /// `NaN`, `null` or `None` (any case).
    pub fn is_missing(cell: &str) -> bool {
        cell.is_empty()
            || ["na", "n/a", "nan", "null", "none"]
                .iter()
                .any(|m| cell.eq_ignore_ascii_case(m))
    }

    /// The columns that hold numbers: every cell of every row is a number
    /// or missing ([`CsvTable::is_missing`]), and at least one is a number.
    pub fn numeric_column_indices(&self) -> Vec<usize> {
        let mut numeric = vec![true; self.num_columns()];
        let mut seen = vec![false; self.num_columns()];
        for r in 0..self.num_rows() {
            for (c, cell) in self.row_fields(r).enumerate() {
                if !numeric[c] || Self::is_missing(cell) {
                    continue;
                }
                match parse_number(cell) {
                    Some(_) => seen[c] = true,
                    None => numeric[c] = false,
                }
            }
        }
        (0..self.num_columns())
            .filter(|&c| numeric[c] && seen[c])
            .collect()
    }

    /// Why column `c` looks like a time index, if it does: its name is a
    /// time word (date, time, year, timestamp, datetime, month, week, day,
    /// hour, minute, quarter, period), or its cells (three rows or more)
    /// are integers that increase strictly from row to row.
    pub fn time_like(&self, c: usize) -> Option<&'static str> {
        const WORDS: [&str; 12] = [
            "date",
            "time",
            "year",
            "timestamp",
            "datetime",
            "month",
            "week",
            "day",
            "hour",
            "minute",
            "quarter",
            "period",
        ];
        let name = self.header[c].to_ascii_lowercase();
        if name
            .split(|ch: char| !ch.is_ascii_alphanumeric())
            .any(|w| WORDS.contains(&w))
        {
            return Some("named like a time index");
        }
        let mut prev: Option<f64> = None;
        for r in 0..self.num_rows() {
            let v = match parse_number(self.cell(r, c)) {
                Some(v) if v.is_finite() && v.fract() == 0.0 => v,
                _ => return None,
            };
            if prev.is_some_and(|p| v <= p) {
                return None;
            }
            prev = Some(v);
        }
        (self.num_rows() >= 3).then_some("integers increasing row by row")
    }

    /// Parses column `c` as numbers, with `None` for missing cells; a
    /// non-numeric or non-finite cell is an error naming its line and
    /// column.
    fn column_values(&self, c: usize) -> Result<Vec<Option<f64>>> {
        (0..self.num_rows())
            .map(|r| {
                let cell = self.cell(r, c);
                if Self::is_missing(cell) {
                    return Ok(None);
                }
                match parse_number(cell) {
                    Some(v) if v.is_finite() => Ok(Some(v)),
                    Some(_) => Err(Error::file(
                        &self.source,
                        format!("{}: `{}` is not a finite number", self.at(r, c), clip(cell)),
                    )),
                    None => Err(Error::file(
                        &self.source,
                        format!("{}: `{}` is not a number", self.at(r, c), clip(cell)),
                    )),
                }
            })
            .collect()
    }

    /// `line L, column C (`name`)` of data row `r`.
    fn at(&self, r: usize, c: usize) -> String {
        format!(
            "line {}, column {} (`{}`)",
            self.lines[r],
            c + 1,
            self.header[c]
        )
    }

    /// Chooses the feature and target columns by name (missing cells are
    /// an error). See [`CsvTable::select_with`].
    pub fn select(&self, features: Option<&[String]>, target: Option<&str>) -> Result<SeriesTable> {
        let o = SelectOptions {
            features: features.map(<[String]>::to_vec),
            target: target.map(str::to_string),
            ..Default::default()
        };
        Ok(self.select_with(&o)?.table)
    }

    /// Chooses the columns of a series. By default the features are the
    /// numeric columns ([`CsvTable::numeric_column_indices`]) that do not
    /// look like a time index ([`CsvTable::time_like`]), and the target is
    /// the last of them (which is then also a feature). Missing cells of the
    /// chosen columns are handled as `o.missing` says. The time column
    /// (`o.time`, else a non-numeric first column, else the first
    /// time-like column) labels rows in `predict`'s output.
    pub fn select_with(&self, o: &SelectOptions) -> Result<Selection> {
        let numeric = self.numeric_column_indices();
        let time_like: Vec<(usize, &'static str)> = numeric
            .iter()
            .filter_map(|&c| self.time_like(c).map(|why| (c, why)))
            .collect();
        let usable: Vec<usize> = numeric
            .iter()
            .copied()
            .filter(|c| !time_like.iter().any(|t| t.0 == *c))
            .collect();
        let no_numeric = || {
            let mut msg = "no numeric column to use".to_string();
            if !time_like.is_empty() {
                msg += &format!(
                    " (time-like columns are not used unless named: {})",
                    time_like
                        .iter()
                        .map(|(c, _)| format!("`{}`", self.header[*c]))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            Error::file(
                &self.source,
                msg + "; name the columns with --features and --target",
            )
        };
        let feat: Vec<usize> = match &o.features {
            Some(names) if !names.is_empty() => names
                .iter()
                .map(|n| self.column_index(n))
                .collect::<Result<_>>()?,
            _ => {
                if usable.is_empty() {
                    return Err(no_numeric());
                }
                usable.clone()
            }
        };
        for (j, &c) in feat.iter().enumerate() {
            if feat[..j].contains(&c) {
                return Err(Error::Invalid(format!(
                    "feature column `{}` is listed twice",
                    self.header[c]
                )));
            }
        }
        let tgt = match &o.target {
            Some(n) => self.column_index(n)?,
            None => *usable.last().ok_or_else(no_numeric)?,
        };
        let mut cols = feat.clone();
        if !cols.contains(&tgt) {
            cols.push(tgt);
        }
        let raw = cols
            .iter()
            .map(|&c| self.column_values(c))
            .collect::<Result<Vec<_>>>()?;
        let (values, rows) = fill_missing(self, &cols, raw, o.missing)?;
        let time = match &o.time {
            Some(n) => Some(self.column_index(n)?),
            None if !numeric.contains(&0) && !cols.contains(&0) => Some(0),
            None => time_like.iter().map(|t| t.0).find(|c| !cols.contains(c)),
        }
        .map(|c| TimeColumn {
            name: self.header[c].clone(),
            values: rows.iter().map(|&r| self.cell(r, c).to_string()).collect(),
        });
        let unused_time = time_like
            .iter()
            .filter(|(c, _)| !cols.contains(c))
            .map(|(c, why)| (self.header[*c].clone(), *why))
            .collect();
        let mut values = values;
        let target_values = match feat.iter().position(|&c| c == tgt) {
            Some(k) => values[k].clone(),
            None => values.pop().unwrap_or_default(),
        };
        let table = SeriesTable::new(
            feat.iter().map(|&c| self.header[c].clone()).collect(),
            values,
            self.header[tgt].clone(),
            target_values,
        )
        .map_err(|e| Error::file(&self.source, e))?;
        Ok(Selection {
            table,
            time,
            rows: rows.iter().map(|&r| self.lines[r]).collect(),
            unused_time,
        })
    }
}

/// How missing cells of the chosen columns are handled (`--missing`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Missing {
    /// A missing cell is an error naming its line and column.
    #[default]
    Error,
    /// Rows with a missing cell in any chosen column are left out.
    Drop,
    /// A missing cell takes the last value above it (none above: error).
    Ffill,
    /// A missing cell is interpolated linearly between the nearest values
    /// above and below; at either end it takes the nearest value.
    Interpolate,
}

impl Missing {
    /// The `--missing` name.
    pub fn name(self) -> &'static str {
        match self {
            Missing::Error => "error",
            Missing::Drop => "drop",
            Missing::Ffill => "ffill",
            Missing::Interpolate => "interpolate",
        }
    }

    /// Parses a `--missing` name.
    pub fn parse(s: &str) -> Result<Self> {
        [
            Missing::Error,
            Missing::Drop,
            Missing::Ffill,
            Missing::Interpolate,
        ]
        .into_iter()
        .find(|m| m.name() == s)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "--missing {s}: expected error, drop, ffill or interpolate"
            ))
        })
    }
}

/// Fills or drops the missing cells of the columns `cols` (values per
/// column, `None` where missing); returns the columns and the data rows
/// kept.
fn fill_missing(
    csv: &CsvTable,
    cols: &[usize],
    mut raw: Vec<Vec<Option<f64>>>,
    missing: Missing,
) -> Result<(Vec<Vec<f64>>, Vec<usize>)> {
    let n = csv.num_rows();
    let first_missing = || {
        (0..n).find_map(|r| {
            raw.iter()
                .zip(cols)
                .find(|(v, _)| v[r].is_none())
                .map(|(_, &c)| (r, c))
        })
    };
    let mut rows: Vec<usize> = (0..n).collect();
    match missing {
        Missing::Error => {
            if let Some((r, c)) = first_missing() {
                return Err(Error::file(
                    &csv.source,
                    format!(
                        "{}: missing value `{}` (choose --missing drop, ffill or interpolate)",
                        csv.at(r, c),
                        clip(csv.cell(r, c))
                    ),
                ));
            }
        }
        Missing::Drop => {
            rows.retain(|&r| raw.iter().all(|v| v[r].is_some()));
            if rows.is_empty() {
                return Err(Error::file(
                    &csv.source,
                    "--missing drop: every row has a missing value in the chosen columns",
                ));
            }
            for v in &mut raw {
                *v = rows.iter().map(|&r| v[r]).collect();
            }
        }
        Missing::Ffill => {
            for (v, &c) in raw.iter_mut().zip(cols) {
                let mut last = None;
                for (r, x) in v.iter_mut().enumerate() {
                    match x {
                        Some(y) => last = Some(*y),
                        None => {
                            *x = Some(last.ok_or_else(|| {
                                Error::file(
                                    &csv.source,
                                    format!(
                                        "{}: missing value with no value above it to carry \
                                         forward (--missing ffill); use interpolate or drop",
                                        csv.at(r, c)
                                    ),
                                )
                            })?)
                        }
                    }
                }
            }
        }
        Missing::Interpolate => {
            for (v, &c) in raw.iter_mut().zip(cols) {
                let known: Vec<usize> = (0..v.len()).filter(|&r| v[r].is_some()).collect();
                if known.is_empty() {
                    return Err(Error::file(
                        &csv.source,
                        format!("column {} (`{}`) has no value at all", c + 1, csv.header[c]),
                    ));
                }
                let mut k = 0;
                for r in 0..v.len() {
                    while k + 1 < known.len() && known[k + 1] <= r {
                        k += 1;
                    }
                    if v[r].is_some() {
                        continue;
                    }
                    let (a, b) = (known[k], known.get(k + 1).copied());
                    let va = v[a].unwrap_or_default();
                    v[r] = Some(match b {
                        _ if r < a => va,
                        Some(b) => {
                            let vb = v[b].unwrap_or_default();
                            va + (vb - va) * (r - a) as f64 / (b - a) as f64
                        }
                        None => va,
                    });
                }
            }
        }
    }
    let values = raw
        .into_iter()
        .map(|v| v.into_iter().map(Option::unwrap_or_default).collect())
        .collect();
    Ok((values, rows))
}

/// What [`CsvTable::select_with`] chooses by.
#[derive(Clone, Debug, Default)]
pub struct SelectOptions {
    /// Feature columns (default: the numeric, not time-like ones).
    pub features: Option<Vec<String>>,
    /// Target column (default: the last default feature).
    pub target: Option<String>,
    /// Time column naming rows in output (default: see select_with).
    pub time: Option<String>,
    /// Missing cells.
    pub missing: Missing,
}

/// A CSV's time column: its cells of the rows kept.
#[derive(Clone, Debug, PartialEq)]
pub struct TimeColumn {
    /// Column name.
    pub name: String,
    /// One cell per row of the series.
    pub values: Vec<String>,
}

/// The columns of a series chosen from a CSV.
#[derive(Clone, Debug)]
pub struct Selection {
    /// Features and target, in row order.
    pub table: SeriesTable,
    /// The time column, if any.
    pub time: Option<TimeColumn>,
    /// The file's line of each row of `table`.
    pub rows: Vec<usize>,
    /// Time-like columns left out of the defaults, with the reason.
    pub unused_time: Vec<(String, &'static str)>,
}

// ---------------------------------------------------------------------------
// Time series
// ---------------------------------------------------------------------------

/// The chosen columns of a time series, in time order: `features[f][row]`
/// and `target[row]` (the target may also be a feature).
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesTable {
    /// Feature column names.
    pub feature_names: Vec<String>,
    /// Feature columns, each of `len()` values.
    pub features: Vec<Vec<f64>>,
    /// Target column name.
    pub target_name: String,
    /// Target values.
    pub target: Vec<f64>,
}

impl SeriesTable {
    /// Checks the columns: at least one feature, equal non-zero lengths,
    /// finite values, names without line breaks.
    pub fn new(
        feature_names: Vec<String>,
        features: Vec<Vec<f64>>,
        target_name: String,
        target: Vec<f64>,
    ) -> Result<Self> {
        if features.is_empty() || feature_names.len() != features.len() {
            return Err(Error::Invalid(format!(
                "a series needs at least one feature column and one name per column \
                 ({} names, {} columns)",
                feature_names.len(),
                features.len()
            )));
        }
        let n = target.len();
        if n == 0 {
            return Err(Error::Invalid("the series is empty".into()));
        }
        for name in feature_names.iter().chain(std::iter::once(&target_name)) {
            if name.contains(['\n', '\r']) {
                return Err(Error::Invalid(format!(
                    "column name {name:?} contains a line break"
                )));
            }
        }
        for (name, col) in feature_names
            .iter()
            .zip(&features)
            .chain(std::iter::once((&target_name, &target)))
        {
            if col.len() != n {
                return Err(Error::Invalid(format!(
                    "column `{name}` has {} values, the target has {n}",
                    col.len()
                )));
            }
            if let Some(i) = col.iter().position(|v| !v.is_finite()) {
                return Err(Error::Invalid(format!(
                    "column `{name}` row {i} is not finite ({})",
                    num(col[i])
                )));
            }
        }
        Ok(Self {
            feature_names,
            features,
            target_name,
            target,
        })
    }

    /// A univariate series: one feature which is also the target.
    pub fn univariate(name: &str, values: Vec<f64>) -> Result<Self> {
        Self::new(
            vec![name.to_string()],
            vec![values.clone()],
            name.to_string(),
            values,
        )
    }

    /// Rows (time steps).
    pub fn len(&self) -> usize {
        self.target.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.target.is_empty()
    }

    /// Feature columns `F`.
    pub fn num_features(&self) -> usize {
        self.features.len()
    }
}

/// Mean and standard deviation of one column, for z-scores.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnStats {
    /// Column name.
    pub name: String,
    /// Mean over the training rows.
    pub mean: f64,
    /// Population standard deviation over the training rows (positive).
    pub std: f64,
}

impl ColumnStats {
    /// Fits mean and standard deviation to `values` (not empty, finite;
    /// huge or tiny ones are summed scaled, so both are finite). A column
    /// that is constant (std 0, or below 1e-12 of its mean) is refused by
    /// name: its z-scores would not be finite.
    pub fn fit(name: &str, values: &[f64]) -> Result<Self> {
        let n = values.len().max(1) as f64;
        // Squares of values beyond 1e100 overflow and below 1e-100
        // underflow: such columns are summed divided by their largest
        // magnitude, so finite data of any size fits (others as they are,
        // bit for bit as before).
        let big = values.iter().fold(0f64, |m, v| m.max(v.abs()));
        let s = if big == 0.0 || (1e-100..=1e100).contains(&big) {
            1.0
        } else {
            big
        };
        let mean_s = values.iter().map(|v| v / s).sum::<f64>() / n;
        let var_s = values
            .iter()
            .map(|v| (v / s - mean_s) * (v / s - mean_s))
            .sum::<f64>()
            / n;
        let (mean, std) = (mean_s * s, var_s.sqrt() * s);
        if !(mean.is_finite() && std.is_finite()) {
            return Err(Error::Invalid(format!(
                "column `{name}`: its mean or standard deviation over the {} training rows \
                 is not finite (mean {}, std {}); rescale it",
                values.len(),
                num(mean),
                num(std)
            )));
        }
        if std <= 1e-12 * mean.abs() || std == 0.0 {
            return Err(Error::Invalid(format!(
                "column `{name}` is constant ({}) over the {} training rows, so it cannot \
                 be normalised; leave it out (--features) or choose another --target",
                num(mean),
                values.len()
            )));
        }
        Ok(Self {
            name: name.to_string(),
            mean,
            std,
        })
    }

    /// `(x − mean) / std` (as `x/std − mean/std` where `x − mean`
    /// overflows).
    pub fn normalize(&self, x: f64) -> f64 {
        let d = x - self.mean;
        if d.is_finite() {
            d / self.std
        } else {
            x / self.std - self.mean / self.std
        }
    }

    /// `z · std + mean`.
    pub fn denormalize(&self, z: f64) -> f64 {
        z * self.std + self.mean
    }
}

/// Per-column z-score statistics, fitted on the training rows only.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalizer {
    /// One per feature column, in feature order.
    pub features: Vec<ColumnStats>,
    /// The target column.
    pub target: ColumnStats,
}

impl Normalizer {
    /// Fits the statistics on rows `0..train_rows` of `table`.
    pub fn fit(table: &SeriesTable, train_rows: usize) -> Result<Self> {
        if train_rows == 0 || train_rows > table.len() {
            return Err(Error::Invalid(format!(
                "cannot fit the normalization on {train_rows} of {} rows",
                table.len()
            )));
        }
        Ok(Self {
            features: table
                .feature_names
                .iter()
                .zip(&table.features)
                .map(|(n, c)| ColumnStats::fit(n, &c[..train_rows]))
                .collect::<Result<_>>()?,
            target: ColumnStats::fit(&table.target_name, &table.target[..train_rows])?,
        })
    }

    /// Target values back in the data's units.
    pub fn denormalize(&self, z: &[f32]) -> Vec<f64> {
        z.iter()
            .map(|&v| self.target.denormalize(v as f64))
            .collect()
    }

    /// Target values as z-scores.
    pub fn normalize_target(&self, x: &[f64]) -> Vec<f32> {
        x.iter().map(|&v| self.target.normalize(v) as f32).collect()
    }

    /// Checks that `table` has the same feature and target columns, in order.
    pub fn check_matches(&self, table: &SeriesTable) -> Result<()> {
        let mine: Vec<&str> = self.features.iter().map(|s| s.name.as_str()).collect();
        let theirs: Vec<&str> = table.feature_names.iter().map(|s| s.as_str()).collect();
        if mine != theirs || self.target.name != table.target_name {
            return Err(Error::Invalid(format!(
                "the data's columns (features [{}], target `{}`) differ from the stored \
                 normalization's (features [{}], target `{}`)",
                theirs.join(", "),
                table.target_name,
                mine.join(", "),
                self.target.name
            )));
        }
        Ok(())
    }

    /// Text form for checkpoint metadata: one line per column,
    /// `feature|target <TAB> mean <TAB> std <TAB> name`, the target last.
    pub fn to_metadata(&self) -> String {
        let mut s = String::new();
        for (kind, c) in self
            .features
            .iter()
            .map(|c| ("feature", c))
            .chain(std::iter::once(("target", &self.target)))
        {
            s.push_str(&format!("{kind}\t{:e}\t{:e}\t{}\n", c.mean, c.std, c.name));
        }
        s
    }

    /// Reads [`Normalizer::to_metadata`]'s text.
    pub fn from_metadata(s: &str) -> Result<Self> {
        let mut features = Vec::new();
        let mut target = None;
        for (i, line) in s.lines().enumerate() {
            if line.is_empty() {
                continue;
            }
            let bad = |what: &str| {
                Error::Invalid(format!(
                    "normalization metadata line {}: {what}: {:?}",
                    i + 1,
                    clip(line)
                ))
            };
            let parts: Vec<&str> = line.splitn(4, '\t').collect();
            if parts.len() != 4 {
                return Err(bad("expected kind, mean, std and name separated by tabs"));
            }
            let mean: f64 = parts[1].parse().map_err(|_| bad("bad mean"))?;
            let std: f64 = parts[2].parse().map_err(|_| bad("bad std"))?;
            if !(mean.is_finite() && std.is_finite() && std > 0.0) {
                return Err(bad("mean must be finite and std finite and positive"));
            }
            let c = ColumnStats {
                name: parts[3].to_string(),
                mean,
                std,
            };
            match parts[0] {
                "feature" => features.push(c),
                "target" if target.is_none() => target = Some(c),
                "target" => return Err(bad("a second target line")),
                _ => return Err(bad("the kind must be `feature` or `target`")),
            }
        }
        match target {
            Some(target) if !features.is_empty() => Ok(Self { features, target }),
            _ => Err(Error::Invalid(
                "normalization metadata needs at least one feature line and one target line".into(),
            )),
        }
    }
}

/// A batch of series windows: `inputs` `[seq_len, batch, num_features]`
/// (time-major) and `targets` `[batch, horizon]`.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesBatch {
    /// `[seq_len, batch, num_features]`.
    pub inputs: Vec<f32>,
    /// `[batch, horizon]`.
    pub targets: Vec<f32>,
    /// `T`.
    pub seq_len: usize,
    /// `B`.
    pub batch: usize,
    /// `F`.
    pub num_features: usize,
    /// `k`: target values per window.
    pub horizon: usize,
}

#[derive(Debug)]
struct NormalizedSeries {
    /// `[N, F]` row-major z-scores.
    x: Vec<f32>,
    /// `[N]` z-scores.
    y: Vec<f32>,
    f: usize,
}

/// Sliding windows over a normalized series: window `w` reads rows
/// `s .. s+T` (all features) and predicts target rows `s+T .. s+T+k`, where
/// `s = first_start + w`.
#[derive(Clone, Debug)]
pub struct WindowSet {
    data: Arc<NormalizedSeries>,
    starts: Range<usize>,
    seq_len: usize,
    horizon: usize,
}

impl WindowSet {
    /// Number of windows.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether there are no windows.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// `T`.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// `k`.
    pub fn horizon(&self) -> usize {
        self.horizon
    }

    /// `F`.
    pub fn num_features(&self) -> usize {
        self.data.f
    }

    /// The series row of window `w`'s first target.
    pub fn first_target_row(&self, w: usize) -> usize {
        self.starts.start + w + self.seq_len
    }

    /// Window `w`'s target values (z-scores), `k` of them.
    pub fn targets(&self, w: usize) -> &[f32] {
        let r = self.first_target_row(w);
        &self.data.y[r..r + self.horizon]
    }

    /// The last target value window `w` observes (z-score): the naive
    /// forecast of each of its `k` targets.
    pub fn last_observed(&self, w: usize) -> f32 {
        self.data.y[self.first_target_row(w) - 1]
    }

    /// Batches per epoch of `batch` windows (the last one smaller unless
    /// `drop_last`).
    pub fn num_batches(&self, batch: usize, drop_last: bool) -> usize {
        if batch == 0 {
            0
        } else if drop_last {
            self.len() / batch
        } else {
            self.len().div_ceil(batch)
        }
    }

    /// The window order of `epoch`: `0..len` when `shuffle_seed` is `None`,
    /// else a permutation drawn from `(seed, epoch)`.
    pub fn order(&self, shuffle_seed: Option<u64>, epoch: u64) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.len()).collect();
        if let Some(seed) = shuffle_seed {
            Rng::new(derive_seed(seed, epoch)).shuffle(&mut v);
        }
        v
    }

    fn build(&self, windows: &[usize]) -> SeriesBatch {
        let (t_n, k_n, f_n, b_n) = (self.seq_len, self.horizon, self.data.f, windows.len());
        let mut inputs = vec![0f32; t_n * b_n * f_n];
        let mut targets = vec![0f32; b_n * k_n];
        for (b, &w) in windows.iter().enumerate() {
            let s = self.starts.start + w;
            for t in 0..t_n {
                let src = &self.data.x[(s + t) * f_n..(s + t + 1) * f_n];
                inputs[(t * b_n + b) * f_n..(t * b_n + b + 1) * f_n].copy_from_slice(src);
            }
            targets[b * k_n..(b + 1) * k_n].copy_from_slice(&self.data.y[s + t_n..s + t_n + k_n]);
        }
        SeriesBatch {
            inputs,
            targets,
            seq_len: t_n,
            batch: b_n,
            num_features: f_n,
            horizon: k_n,
        }
    }

    /// The batch of the given windows, in that order.
    pub fn batch(&self, windows: &[usize]) -> Result<SeriesBatch> {
        if windows.is_empty() {
            return Err(Error::Invalid("a batch needs at least one window".into()));
        }
        if let Some(&w) = windows.iter().find(|&&w| w >= self.len()) {
            return Err(Error::Invalid(format!(
                "window {w} is out of range: there are {} windows",
                self.len()
            )));
        }
        Ok(self.build(windows))
    }

    /// The batches of one epoch in [`WindowSet::order`]'s order.
    pub fn epoch(
        &self,
        batch: usize,
        shuffle_seed: Option<u64>,
        epoch: u64,
        drop_last: bool,
    ) -> Result<SeriesEpoch<'_>> {
        if batch == 0 {
            return Err(Error::Invalid("the batch size must be at least 1".into()));
        }
        if self.num_batches(batch, drop_last) == 0 {
            return Err(Error::Invalid(format!(
                "{} windows make no full batch of {batch}",
                self.len()
            )));
        }
        Ok(SeriesEpoch {
            set: self,
            order: self.order(shuffle_seed, epoch),
            batch,
            pos: 0,
            drop_last,
        })
    }
}

/// Iterator over the batches of one epoch (see [`WindowSet::epoch`]).
#[derive(Debug)]
pub struct SeriesEpoch<'a> {
    set: &'a WindowSet,
    order: Vec<usize>,
    batch: usize,
    pos: usize,
    drop_last: bool,
}

impl Iterator for SeriesEpoch<'_> {
    type Item = SeriesBatch;

    fn next(&mut self) -> Option<SeriesBatch> {
        let end = (self.pos + self.batch).min(self.order.len());
        if self.pos >= end || (self.drop_last && end - self.pos < self.batch) {
            return None;
        }
        let b = self.set.build(&self.order[self.pos..end]);
        self.pos = end;
        Some(b)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.order.len() - self.pos;
        let n = if self.drop_last {
            left / self.batch
        } else {
            left.div_ceil(self.batch)
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for SeriesEpoch<'_> {}

/// Settings of [`SeriesDataset`].
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesConfig {
    /// Window length `T`.
    pub seq_len: usize,
    /// Target values per window `k` (the next `k` values of the target).
    pub horizon: usize,
    /// The last `val_fraction` of the rows are validation rows (0: none).
    pub val_fraction: f64,
}

impl Default for SeriesConfig {
    fn default() -> Self {
        Self {
            seq_len: 50,
            horizon: 1,
            val_fraction: DEFAULT_VAL_FRACTION,
        }
    }
}

/// A time series split by time into training and validation windows.
///
/// With `N` rows, `n_val = round(N · val_fraction)` and
/// `n_train = N − n_val`: the normalization is fitted on rows `0..n_train`;
/// training windows have all targets below `n_train`
/// (`n_train − T − k + 1` windows); validation windows have all targets in
/// `n_train..N` (`n_val − k + 1` windows) and may read their inputs from the
/// end of the training rows, as a forecaster would.
#[derive(Clone, Debug)]
pub struct SeriesDataset {
    /// Z-score statistics (store these in the checkpoint).
    pub norm: Normalizer,
    /// Training windows.
    pub train: WindowSet,
    /// Validation windows (`None` when `val_fraction` is 0).
    pub val: Option<WindowSet>,
    /// Rows of the training split.
    pub train_rows: usize,
    /// Rows of the validation split.
    pub val_rows: usize,
}

impl SeriesDataset {
    /// Splits `table`, fits the normalization on the training rows and
    /// builds the windows.
    pub fn new(table: &SeriesTable, cfg: &SeriesConfig) -> Result<Self> {
        let n_train = table.len() - val_count(table.len(), cfg.val_fraction)?;
        Self::check(table, cfg, n_train)?;
        let norm = Normalizer::fit(table, n_train)?;
        Self::build(table, cfg, norm, n_train)
    }

    /// Like [`SeriesDataset::new`] with given statistics (e.g. a
    /// checkpoint's); the columns must match.
    pub fn with_normalizer(
        table: &SeriesTable,
        cfg: &SeriesConfig,
        norm: Normalizer,
    ) -> Result<Self> {
        norm.check_matches(table)?;
        let n_train = table.len() - val_count(table.len(), cfg.val_fraction)?;
        Self::check(table, cfg, n_train)?;
        Self::build(table, cfg, norm, n_train)
    }

    /// Reads the columns of a CSV (see [`CsvTable::select`]) and builds the
    /// dataset.
    pub fn from_csv(
        csv: &CsvTable,
        features: Option<&[String]>,
        target: Option<&str>,
        cfg: &SeriesConfig,
    ) -> Result<Self> {
        let table = csv.select(features, target)?;
        Self::new(&table, cfg).map_err(|e| Error::file(&csv.source, e))
    }

    fn check(table: &SeriesTable, cfg: &SeriesConfig, n_train: usize) -> Result<()> {
        if cfg.seq_len == 0 || cfg.horizon == 0 {
            return Err(Error::Invalid(format!(
                "seq_len ({}) and horizon ({}) must both be at least 1",
                cfg.seq_len, cfg.horizon
            )));
        }
        let need = cfg.seq_len.saturating_add(cfg.horizon);
        let n = table.len();
        if n_train < need && n_train == n {
            return Err(Error::Invalid(format!(
                "the series has {n} rows, but one window needs seq_len + horizon = {need} rows"
            )));
        }
        if n_train < need {
            return Err(Error::Invalid(format!(
                "the training split has {n_train} rows (the last {} of the {n} rows are held \
                 out for validation, --val-fraction {}), but one window needs seq_len + \
                 horizon = {need} rows",
                n - n_train,
                num(cfg.val_fraction)
            )));
        }
        let n_val = table.len() - n_train;
        if n_val > 0 && n_val < cfg.horizon {
            return Err(Error::Invalid(format!(
                "the validation split has {n_val} rows, fewer than the horizon {}",
                cfg.horizon
            )));
        }
        Ok(())
    }

    fn build(
        table: &SeriesTable,
        cfg: &SeriesConfig,
        norm: Normalizer,
        n_train: usize,
    ) -> Result<Self> {
        let n = table.len();
        let f = table.num_features();
        // A z-score beyond f32 (a value far outside the training rows'
        // spread) would train or predict on infinities: refused by name.
        let z = |st: &ColumnStats, r: usize, v: f64| {
            let z = st.normalize(v) as f32;
            if z.is_finite() {
                Ok(z)
            } else {
                Err(Error::Invalid(format!(
                    "column `{}` row {}: {} lies {} standard deviations ({}) from the training \
                     rows' mean ({}), beyond f32; rescale the column or leave out the row",
                    st.name,
                    r + 1,
                    num(v),
                    num(st.normalize(v)),
                    num(st.std),
                    num(st.mean)
                )))
            }
        };
        let mut x = vec![0f32; n * f];
        for (j, (col, st)) in table.features.iter().zip(&norm.features).enumerate() {
            for (r, &v) in col.iter().enumerate() {
                x[r * f + j] = z(st, r, v)?;
            }
        }
        let y = table
            .target
            .iter()
            .enumerate()
            .map(|(r, &v)| z(&norm.target, r, v))
            .collect::<Result<Vec<f32>>>()?;
        let data = Arc::new(NormalizedSeries { x, y, f });
        let (t, k) = (cfg.seq_len, cfg.horizon);
        let train = WindowSet {
            data: data.clone(),
            starts: 0..n_train + 1 - t - k,
            seq_len: t,
            horizon: k,
        };
        let val = (n_train < n).then(|| WindowSet {
            data,
            starts: n_train - t..n + 1 - t - k,
            seq_len: t,
            horizon: k,
        });
        Ok(Self {
            norm,
            train,
            val,
            train_rows: n_train,
            val_rows: n - n_train,
        })
    }

    /// `F`.
    pub fn num_features(&self) -> usize {
        self.train.num_features()
    }
}

// ---------------------------------------------------------------------------
// Variable-length batches
// ---------------------------------------------------------------------------

/// Sequences padded to a common length.
#[derive(Clone, Debug, PartialEq)]
pub struct Padded {
    /// `[max_len, batch, num_features]`, zeros past each length.
    pub data: Vec<f32>,
    /// Each sequence's length (for `Batch::lengths`).
    pub lengths: Vec<usize>,
    /// `T_max`.
    pub max_len: usize,
    /// `B`.
    pub batch: usize,
    /// `F`.
    pub num_features: usize,
}

/// Pads sequences given row-major as `[len_i, F]` to `[T_max, B, F]`
/// (zeros) and returns their lengths; every sequence needs at least one step.
pub fn pad_sequences<S: AsRef<[f32]>>(seqs: &[S], num_features: usize) -> Result<Padded> {
    if seqs.is_empty() || num_features == 0 {
        return Err(Error::Invalid(format!(
            "padding needs at least one sequence and one feature ({} sequences, {num_features} features)",
            seqs.len()
        )));
    }
    let mut lengths = Vec::with_capacity(seqs.len());
    for (i, s) in seqs.iter().enumerate() {
        let n = s.as_ref().len();
        if n == 0 || n % num_features != 0 {
            return Err(Error::tensor(
                format!("sequence {i}"),
                format!("{n} values are not a positive multiple of {num_features} features"),
            ));
        }
        lengths.push(n / num_features);
    }
    let max_len = *lengths.iter().max().unwrap_or(&0);
    let b_n = seqs.len();
    let mut data = vec![0f32; max_len * b_n * num_features];
    for (b, s) in seqs.iter().enumerate() {
        for (t, row) in s.as_ref().chunks_exact(num_features).enumerate() {
            let o = (t * b_n + b) * num_features;
            data[o..o + num_features].copy_from_slice(row);
        }
    }
    Ok(Padded {
        data,
        lengths,
        max_len,
        batch: b_n,
        num_features,
    })
}

/// Pads token sequences to `[T_max, B]` with `pad` and returns the ids and
/// lengths; every sequence needs at least one token.
pub fn pad_tokens<S: AsRef<[u32]>>(seqs: &[S], pad: u32) -> Result<(Vec<u32>, Vec<usize>)> {
    if seqs.is_empty() {
        return Err(Error::Invalid("padding needs at least one sequence".into()));
    }
    if let Some(i) = seqs.iter().position(|s| s.as_ref().is_empty()) {
        return Err(Error::tensor(format!("sequence {i}"), "is empty"));
    }
    let lengths: Vec<usize> = seqs.iter().map(|s| s.as_ref().len()).collect();
    let max_len = *lengths.iter().max().unwrap_or(&0);
    let b_n = seqs.len();
    let mut ids = vec![pad; max_len * b_n];
    for (b, s) in seqs.iter().enumerate() {
        for (t, &id) in s.as_ref().iter().enumerate() {
            ids[t * b_n + b] = id;
        }
    }
    Ok((ids, lengths))
}

// ---------------------------------------------------------------------------
// Built-in generated datasets
// ---------------------------------------------------------------------------

/// The built-in datasets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// A mixture of 2–3 sines plus Gaussian noise (a series).
    Sine,
    /// The Mackey–Glass delay equation (a series).
    MackeyGlass,
    /// Hochreiter's adding problem (sequence regression).
    Adding,
    /// The copy-memory task (token sequences).
    Copy,
    /// A generated English-like text.
    Text,
}

impl Builtin {
    /// All names, as accepted by [`Builtin::from_name`].
    pub const NAMES: [&'static str; 5] = ["sine", "mackey-glass", "adding", "copy", "text"];

    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Sine => "sine",
            Builtin::MackeyGlass => "mackey-glass",
            Builtin::Adding => "adding",
            Builtin::Copy => "copy",
            Builtin::Text => "text",
        }
    }

    /// Parses a name (also `mackey_glass`, `mackeyglass`, `mg`).
    pub fn from_name(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "sine" => Builtin::Sine,
            "mackey-glass" | "mackey_glass" | "mackeyglass" | "mg" => Builtin::MackeyGlass,
            "adding" => Builtin::Adding,
            "copy" => Builtin::Copy,
            "text" => Builtin::Text,
            _ => {
                return Err(Error::Invalid(format!(
                    "unknown dataset `{s}`; the built-in datasets are: {}",
                    Self::NAMES.join(", ")
                )));
            }
        })
    }

    /// Whether the dataset is a series for [`builtin_series`].
    pub fn is_series(self) -> bool {
        matches!(self, Builtin::Sine | Builtin::MackeyGlass)
    }
}

impl FromStr for Builtin {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::from_name(s)
    }
}

impl fmt::Display for Builtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Default length of the generated series.
pub const DEFAULT_SERIES_LEN: usize = 10_000;
/// Default noise standard deviation of the `sine` dataset.
pub const SINE_NOISE_STD: f64 = 0.05;

fn sine_parts(len: usize, noise_std: f64, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = Rng::new(seed);
    let n_comp = 2 + rng.below(2);
    let comps: Vec<(f64, f64, f64)> = (0..n_comp)
        .map(|_| {
            let period = rng.uniform(8.0, 64.0);
            let amp = rng.uniform(0.4, 1.0);
            let phase = rng.uniform(0.0, std::f64::consts::TAU);
            (std::f64::consts::TAU / period, amp, phase)
        })
        .collect();
    let clean: Vec<f64> = (0..len)
        .map(|t| {
            comps
                .iter()
                .map(|&(w, a, p)| a * (w * t as f64 + p).sin())
                .sum()
        })
        .collect();
    let noisy = clean
        .iter()
        .map(|&c| c + noise_std * rng.normal())
        .collect();
    (clean, noisy)
}

/// `len` samples of `Σ a_i sin(ω_i t + φ_i) + noise_std · N(0, 1)` with 2 or 3
/// components whose periods (8–64 steps), amplitudes (0.4–1) and phases are
/// drawn from `seed`.
pub fn sine_mixture(len: usize, noise_std: f64, seed: u64) -> Vec<f64> {
    sine_parts(len, noise_std, seed).1
}

/// `len` unit-step samples of the Mackey–Glass equation
/// `dx/dt = β x(t−τ) / (1 + x(t−τ)^n) − γ x(t)` with τ = 17, β = 0.2,
/// γ = 0.1, n = 10, integrated by RK4 with step 0.1 from a history of
/// `1.2 ± 0.1` (drawn from `seed`), after a 500-unit warm-up. The values
/// stay within about (0.2, 1.5); [`SeriesDataset`] normalizes them.
pub fn mackey_glass(len: usize, seed: u64) -> Vec<f64> {
    const TAU: usize = 17;
    const SUB: usize = 10; // RK steps per unit of time
    const WARMUP: usize = 500;
    let (beta, gamma, n_exp, h) = (0.2f64, 0.1f64, 10i32, 1.0 / SUB as f64);
    let d = TAU * SUB;
    let mut rng = Rng::new(seed);
    let steps = (WARMUP + len) * SUB;
    let mut x: Vec<f64> = Vec::with_capacity(d + 1 + steps);
    for _ in 0..=d {
        x.push(1.2 + rng.uniform(-0.1, 0.1));
    }
    let f = |x: f64, xd: f64| beta * xd / (1.0 + xd.powi(n_exp)) - gamma * x;
    for j in d..d + steps {
        let (xd0, xd1) = (x[j - d], x[j - d + 1]);
        let xdm = 0.5 * (xd0 + xd1);
        let xj = x[j];
        let k1 = f(xj, xd0);
        let k2 = f(xj + 0.5 * h * k1, xdm);
        let k3 = f(xj + 0.5 * h * k2, xdm);
        let k4 = f(xj + h * k3, xd1);
        x.push(xj + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4));
    }
    (0..len).map(|m| x[d + (WARMUP + m) * SUB]).collect()
}

/// A generated series dataset (`sine` or `mackey-glass`) as a univariate
/// table named after it.
pub fn builtin_series(kind: Builtin, len: usize, seed: u64) -> Result<SeriesTable> {
    let values = match kind {
        Builtin::Sine => sine_mixture(len, SINE_NOISE_STD, seed),
        Builtin::MackeyGlass => mackey_glass(len, seed),
        other => {
            return Err(Error::Invalid(format!(
                "`{other}` is not a series dataset (the series are: sine, mackey-glass)"
            )));
        }
    };
    SeriesTable::univariate(kind.name(), values)
}

/// Hochreiter's adding problem: `T` steps of 2 features, a value `U(0, 1)`
/// and a marker (0 or 1); exactly two steps are marked, one in the first
/// half (`0..T/2`) and one in the second (`T/2..T`); the target, read after
/// the last step, is the sum of the two marked values (in `[0, 2]`).
/// Predicting 1 always gives a mean squared error of 1/6
/// ([`AddingTask::BASELINE_MSE`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddingTask {
    /// `T` (at least 2).
    pub seq_len: usize,
    /// Seed of all batches.
    pub seed: u64,
}

impl AddingTask {
    /// Features per step.
    pub const NUM_FEATURES: usize = 2;
    /// The mean squared error of always predicting 1.
    pub const BASELINE_MSE: f64 = 1.0 / 6.0;

    /// A task of `seq_len` steps.
    pub fn new(seq_len: usize, seed: u64) -> Result<Self> {
        if seq_len < 2 {
            return Err(Error::Invalid(format!(
                "the adding problem needs at least 2 steps, got {seq_len}"
            )));
        }
        Ok(Self { seq_len, seed })
    }

    /// Batch number `index` of `split`: inputs `[T, B, 2]`, targets `[B, 1]`;
    /// the same arguments give the same batch.
    pub fn batch(&self, split: Split, index: u64, batch: usize) -> Result<SeriesBatch> {
        Ok(self.batch_lengths(split, index, batch, self.seq_len)?.0)
    }

    /// Like [`AddingTask::batch`], but sequence b is `len_b` steps long,
    /// drawn uniformly from `min_len..=T` (from a stream of its own): its
    /// markers lie in `0..len_b/2` and `len_b/2..len_b`, and inputs past
    /// `len_b` are 0. With `min_len = T` it is exactly [`AddingTask::batch`].
    /// Returns the batch and the lengths.
    pub fn batch_lengths(
        &self,
        split: Split,
        index: u64,
        batch: usize,
        min_len: usize,
    ) -> Result<(SeriesBatch, Vec<usize>)> {
        if batch == 0 {
            return Err(Error::Invalid("the batch size must be at least 1".into()));
        }
        let t_n = self.seq_len;
        if min_len < 2 || min_len > t_n {
            return Err(Error::Invalid(format!(
                "the adding problem's minimum length must be in 2..={t_n}, got {min_len}"
            )));
        }
        let seed = derive_seed(derive_seed(self.seed, split.stream()), index);
        let mut rng = Rng::new(seed);
        let mut len_rng = Rng::new(derive_seed(seed, 0x4C45_4E53));
        let lengths: Vec<usize> = (0..batch)
            .map(|_| {
                if min_len == t_n {
                    t_n
                } else {
                    min_len + len_rng.below(t_n - min_len + 1)
                }
            })
            .collect();
        let mut inputs = vec![0f32; t_n * batch * 2];
        let mut targets = vec![0f32; batch];
        for (b, target) in targets.iter_mut().enumerate() {
            let l = lengths[b];
            let half = l / 2;
            let m1 = rng.below(half);
            let m2 = half + rng.below(l - half);
            let mut sum = 0f32;
            for t in 0..l {
                let v = rng.next_f64() as f32;
                let o = (t * batch + b) * 2;
                inputs[o] = v;
                if t == m1 || t == m2 {
                    inputs[o + 1] = 1.0;
                    sum += v;
                }
            }
            *target = sum;
        }
        Ok((
            SeriesBatch {
                inputs,
                targets,
                seq_len: t_n,
                batch,
                num_features: 2,
                horizon: 1,
            },
            lengths,
        ))
    }
}

/// The copy-memory task. Ids: 0 is the blank, `1..=alphabet` the symbols,
/// `alphabet + 1` the delimiter. The input is `K` random symbols, `D − 1`
/// blanks, the delimiter and `K` blanks; the target is `K + D` blanks and
/// then the `K` symbols: `T = 2K + D` steps, a target at every step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyTask {
    /// `K`: symbols to remember.
    pub symbols: usize,
    /// `D`: steps from the last symbol to the delimiter, inclusive.
    pub delay: usize,
    /// Distinct symbols.
    pub alphabet: usize,
    /// Seed of all batches.
    pub seed: u64,
}

impl CopyTask {
    /// The blank id.
    pub const BLANK: u32 = 0;

    /// A task remembering `symbols` symbols of `alphabet` over `delay` steps.
    pub fn new(symbols: usize, delay: usize, alphabet: usize, seed: u64) -> Result<Self> {
        if symbols == 0 || delay == 0 || alphabet == 0 {
            return Err(Error::Invalid(format!(
                "the copy task needs at least 1 symbol, 1 delay step and a 1-letter alphabet \
                 (got {symbols} symbols, delay {delay}, alphabet {alphabet})"
            )));
        }
        Ok(Self {
            symbols,
            delay,
            alphabet,
            seed,
        })
    }

    /// The delimiter id.
    pub fn delimiter(&self) -> u32 {
        self.alphabet as u32 + 1
    }

    /// Ids in use: blank, symbols, delimiter.
    pub fn vocab_size(&self) -> usize {
        self.alphabet + 2
    }

    /// `T = 2K + D`.
    pub fn seq_len(&self) -> usize {
        2 * self.symbols + self.delay
    }

    /// Cross-entropy per step of a model that knows the layout but not the
    /// symbols: `K ln(alphabet) / T`.
    pub fn baseline_cross_entropy(&self) -> f64 {
        self.symbols as f64 * (self.alphabet as f64).ln() / self.seq_len() as f64
    }

    /// Batch number `index` of `split`: inputs and targets `[T, B]`; the same
    /// arguments give the same batch.
    pub fn batch(&self, split: Split, index: u64, batch: usize) -> Result<TokenBatch> {
        if batch == 0 {
            return Err(Error::Invalid("the batch size must be at least 1".into()));
        }
        let (k_n, t_n) = (self.symbols, self.seq_len());
        let mut rng = Rng::new(derive_seed(derive_seed(self.seed, split.stream()), index));
        let mut inputs = vec![Self::BLANK; t_n * batch];
        let mut targets = vec![Self::BLANK; t_n * batch];
        for b in 0..batch {
            for i in 0..k_n {
                let s = 1 + rng.below(self.alphabet) as u32;
                inputs[i * batch + b] = s;
                targets[(k_n + self.delay + i) * batch + b] = s;
            }
            inputs[(k_n + self.delay - 1) * batch + b] = self.delimiter();
        }
        Ok(TokenBatch {
            inputs,
            targets,
            seq_len: t_n,
            batch,
        })
    }
}

/// Default size of [`generated_text`].
pub const DEFAULT_TEXT_BYTES: usize = 48 * 1024;

const G_NAMES: &[&str] = &[
    "Alice", "Bob", "Clara", "David", "Emma", "Frank", "Grace", "Henry",
];
const G_DETS: &[&str] = &["the", "a", "every", "that", "some", "this", "one", "no"];
const G_ADJS: &[&str] = &[
    "old", "small", "quiet", "bright", "green", "little", "strange", "happy", "cold", "young",
    "dark", "gentle", "heavy", "red", "tired", "clever", "empty", "warm", "long", "brave",
];
const G_NOUNS: &[&str] = &[
    "cat", "dog", "river", "house", "garden", "child", "teacher", "bird", "window", "road", "tree",
    "king", "letter", "city", "boat", "horse", "friend", "book", "mountain", "farmer", "song",
    "door", "stone", "village", "lamp", "forest", "ship", "girl", "boy", "market",
];
const G_VT: &[&str] = &[
    "saw",
    "found",
    "followed",
    "loved",
    "watched",
    "carried",
    "opened",
    "painted",
    "remembered",
    "helped",
    "built",
    "lost",
    "heard",
    "visited",
    "crossed",
    "wanted",
];
const G_VI: &[&str] = &[
    "slept", "waited", "smiled", "laughed", "arrived", "stopped", "sang", "fell", "walked",
    "listened", "left", "rested",
];
const G_ADVS: &[&str] = &[
    "slowly",
    "quietly",
    "again",
    "today",
    "suddenly",
    "happily",
    "at night",
    "in the morning",
    "once more",
    "together",
];
const G_PREPS: &[&str] = &[
    "near", "behind", "under", "across", "beside", "inside", "over", "toward",
];
const G_CONJS: &[&str] = &["and", "but", "so", "because", "while", "when"];
const G_SAYS: &[&str] = &["said", "thought", "knew", "believed", "wrote", "heard"];

/// Index in `0..n` with probability ∝ 1/(i+1) (Zipf-like word frequencies).
fn zipf(rng: &mut Rng, n: usize) -> usize {
    let h: f64 = (1..=n).map(|i| 1.0 / i as f64).sum();
    let mut u = rng.next_f64() * h;
    for i in 0..n {
        u -= 1.0 / (i + 1) as f64;
        if u < 0.0 {
            return i;
        }
    }
    n - 1
}

fn pick<'a>(rng: &mut Rng, words: &[&'a str]) -> &'a str {
    words[zipf(rng, words.len())]
}

fn g_np(rng: &mut Rng, w: &mut Vec<&str>) {
    if rng.below(6) == 0 {
        w.push(pick(rng, G_NAMES));
        return;
    }
    w.push(pick(rng, G_DETS));
    if rng.below(2) == 0 {
        w.push(pick(rng, G_ADJS));
    }
    w.push(pick(rng, G_NOUNS));
}

fn g_clause(rng: &mut Rng, w: &mut Vec<&str>) {
    g_np(rng, w);
    if rng.below(2) == 0 {
        w.push(pick(rng, G_VT));
        g_np(rng, w);
    } else {
        w.push(pick(rng, G_VI));
        if rng.below(2) == 0 {
            w.push(pick(rng, G_ADVS));
        }
    }
    if rng.below(3) == 0 {
        w.push(pick(rng, G_PREPS));
        g_np(rng, w);
    }
}

fn g_sentence(rng: &mut Rng, out: &mut String) {
    let mut w: Vec<&str> = Vec::new();
    let end = match rng.below(10) {
        0..=4 => {
            g_clause(rng, &mut w);
            "."
        }
        5 | 6 => {
            g_clause(rng, &mut w);
            w.push(",");
            w.push(pick(rng, G_CONJS));
            g_clause(rng, &mut w);
            "."
        }
        7 => {
            w.push(pick(rng, G_NAMES));
            w.push(pick(rng, G_SAYS));
            w.push("that");
            g_clause(rng, &mut w);
            "."
        }
        8 => {
            g_np(rng, &mut w);
            w.push("was");
            w.push(pick(rng, G_ADJS));
            "."
        }
        _ => {
            w.push("did");
            g_np(rng, &mut w);
            w.push("see");
            g_np(rng, &mut w);
            "?"
        }
    };
    let start = out.len();
    for (i, word) in w.iter().enumerate() {
        let mut word = *word;
        if word == "a"
            && w.get(i + 1)
                .is_some_and(|n| n.starts_with(['a', 'e', 'i', 'o', 'u']))
        {
            word = "an";
        }
        if i > 0 && word != "," {
            out.push(' ');
        }
        out.push_str(word);
    }
    out.push_str(end);
    // Capitalize the sentence's first letter.
    if let Some(c) = out[start..].chars().next() {
        let up: String = c.to_uppercase().collect();
        out.replace_range(start..start + c.len_utf8(), &up);
    }
}

/// About `bytes` bytes (a little more: whole sentences) of English-like
/// ASCII text from a small seeded grammar with Zipf-distributed word
/// choices, in paragraphs of 3–7 sentences, one paragraph per line.
pub fn generated_text(bytes: usize, seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let mut out = String::with_capacity(bytes + 256);
    while out.len() < bytes {
        let n = 3 + rng.below(5);
        for i in 0..n {
            if i > 0 {
                out.push(' ');
            }
            g_sentence(&mut rng, &mut out);
        }
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn letters() -> (Vocab, Vec<u32>) {
        let text: String = ('a'..='z').collect();
        let v = Vocab::from_text(&text).unwrap();
        let ids = v.encode(&text).unwrap();
        (v, ids)
    }

    fn rows(v: &Vocab, ids: &[u32], b: usize) -> Vec<String> {
        ids.chunks(b).map(|r| v.decode(r)).collect()
    }

    #[test]
    fn batchify_and_get_batch_26_letters() {
        let (v, ids) = letters();
        let s = TextStreams::new(&ids, 4, 3).unwrap();
        assert_eq!(s.stream_len(), 6);
        assert_eq!(s.dropped(), 2); // y, z
        let streams: Vec<String> = (0..4).map(|b| v.decode(s.stream(b))).collect();
        assert_eq!(streams, ["abcdef", "ghijkl", "mnopqr", "stuvwx"]);
        assert_eq!(s.num_windows(), 2); // range(0, 5, 3) = [0, 3]
        assert_eq!(s.num_targets(), 20);

        let b0 = s.get_batch(0);
        assert_eq!((b0.seq_len, b0.batch), (3, 4));
        assert_eq!(rows(&v, &b0.inputs, 4), ["agms", "bhnt", "ciou"]);
        assert_eq!(rows(&v, &b0.targets, 4), ["bhnt", "ciou", "djpv"]);

        // The last window is short: seq_len = min(3, 6 - 1 - 3) = 2.
        let b1 = s.get_batch(1);
        assert_eq!(b1.seq_len, 2);
        assert_eq!(rows(&v, &b1.inputs, 4), ["djpv", "ekqw"]);
        assert_eq!(rows(&v, &b1.targets, 4), ["ekqw", "flrx"]);

        // The next epoch starts again at 0.
        assert_eq!(s.get_batch(2), b0);
        assert!(s.is_epoch_start(2) && !s.is_epoch_start(3));
        assert_eq!(s.epoch_of(5), 2);
    }

    /// Literal transcription of PyTorch's batchify/get_batch loop.
    fn pytorch_windows(tokens: &[u32], bsz: usize, bptt: usize) -> Vec<(Vec<u32>, Vec<u32>)> {
        let nbatch = tokens.len() / bsz;
        // source[t][b] = tokens[b * nbatch + t]
        let source = |t: usize, b: usize| tokens[b * nbatch + t];
        let mut out = Vec::new();
        let mut i = 0;
        while i < nbatch - 1 {
            let seq_len = bptt.min(nbatch - 1 - i);
            let mut x = Vec::new();
            let mut y = Vec::new();
            for t in i..i + seq_len {
                for b in 0..bsz {
                    x.push(source(t, b));
                    y.push(source(t + 1, b));
                }
            }
            out.push((x, y));
            i += bptt;
        }
        out
    }

    #[test]
    fn streams_match_pytorch_for_many_shapes() {
        let tokens: Vec<u32> = (0..103).map(|i| (i * 7 % 31) as u32).collect();
        for bsz in [1, 2, 3, 5, 10, 51] {
            for bptt in [1, 2, 4, 7, 35, 200] {
                let s = TextStreams::new(&tokens, bsz, bptt).unwrap();
                let want = pytorch_windows(&tokens, bsz, bptt);
                assert_eq!(s.num_windows(), want.len(), "bsz {bsz} bptt {bptt}");
                for (k, (x, y)) in want.iter().enumerate() {
                    let got = s.get_batch(k);
                    assert_eq!(&got.inputs, x);
                    assert_eq!(&got.targets, y);
                    assert_eq!(got.seq_len * bsz, x.len());
                }
            }
        }
    }

    #[test]
    fn streams_reject_too_little_data() {
        let e = TextStreams::new(&[1, 2, 3], 2, 5).unwrap_err().to_string();
        assert!(e.contains("3 tokens") && e.contains("2 streams"), "{e}");
        assert!(TextStreams::new(&[1, 2, 3, 4], 2, 5).is_ok());
        assert!(TextStreams::new(&[1, 2, 3, 4], 0, 5).is_err());
        assert!(TextStreams::new(&[1, 2, 3, 4], 1, 0).is_err());
    }

    #[test]
    fn vocab_sorts_non_ascii_by_code_point() {
        let text = "zébre ☃\naé𝄞A";
        let v = Vocab::from_text(text).unwrap();
        assert_eq!(
            v.chars,
            vec!['\n', ' ', 'A', 'a', 'b', 'e', 'r', 'z', 'é', '☃', '𝄞']
        );
        let ids = v.encode(text).unwrap();
        assert_eq!(v.decode(&ids), text);
        assert_eq!(v.id('é'), Some(8));
        assert_eq!(v.decode(&[99]), "\u{FFFD}");

        let saved = v.save();
        assert_eq!(Vocab::load(&saved).unwrap(), v);
        let e = Vocab::load("ba").unwrap_err().to_string();
        assert!(e.contains("not strictly sorted"), "{e}");
        assert!(Vocab::load("aa").is_err());
        assert!(Vocab::load("").is_err());
        assert!(Vocab::from_text("").is_err());

        let e = v.encode("abz\nzeß").unwrap_err().to_string();
        assert!(e.contains("'ß'") && e.contains("U+00DF"), "{e}");
        assert!(e.contains("line 2, column 3"), "{e}");
    }

    #[test]
    fn text_validation_split_sizes() {
        let text: String = (0..1000).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let cfg = TextConfig {
            batch: 4,
            eval_batch: 2,
            bptt: 10,
            val_fraction: 0.1,
        };
        let d = TextData::new(&text, &cfg).unwrap();
        assert_eq!((d.train_tokens, d.val_tokens), (900, 100));
        assert_eq!(d.train.stream_len(), 225);
        let val = d.val.as_ref().unwrap();
        assert_eq!(val.stream_len(), 50);
        assert_eq!(val.batch(), 2);
        // The validation streams are the last 100 tokens.
        assert_eq!(d.vocab.decode(val.stream(0)), text[900..950]);
        assert_eq!(d.vocab.decode(val.stream(1)), text[950..1000]);
        assert_eq!(d.train.num_windows(), 23); // ceil(224 / 10)

        let none = TextData::new(
            &text,
            &TextConfig {
                val_fraction: 0.0,
                ..cfg.clone()
            },
        )
        .unwrap();
        assert!(none.val.is_none() && none.train_tokens == 1000);
        assert!(
            TextData::new(
                &text,
                &TextConfig {
                    val_fraction: 1.0,
                    ..cfg.clone()
                }
            )
            .is_err()
        );
        assert_eq!(val_count(1005, 0.1).unwrap(), 101); // round(100.5)
        assert_eq!(val_count(10, 0.25).unwrap(), 3); // round(2.5) rounds half away from zero
        let e = TextData::new(
            "abcdefgh",
            &TextConfig {
                val_fraction: 0.1,
                ..cfg
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("training split"), "{e}");

        // A checkpoint's vocabulary that lacks a character of the text.
        let v = Vocab::load("abc").unwrap();
        let e = TextData::with_vocab("abcd", v, &TextConfig::default()).unwrap_err();
        assert!(e.to_string().contains("'d'"), "{e}");
    }

    #[test]
    fn one_hot_and_padding() {
        assert_eq!(one_hot(&[2, 0], 3).unwrap(), vec![0., 0., 1., 1., 0., 0.]);
        assert!(one_hot(&[3], 3).is_err());

        let p = pad_sequences(&[vec![1., 2., 3., 4.], vec![5., 6.]], 2).unwrap();
        assert_eq!((p.max_len, p.batch, p.num_features), (2, 2, 2));
        assert_eq!(p.lengths, vec![2, 1]);
        assert_eq!(p.data, vec![1., 2., 5., 6., 3., 4., 0., 0.]);
        assert!(pad_sequences(&[vec![1., 2., 3.]], 2).is_err());
        assert!(pad_sequences::<Vec<f32>>(&[vec![]], 2).is_err());
        assert!(pad_sequences::<Vec<f32>>(&[], 2).is_err());

        let (ids, lens) = pad_tokens(&[vec![1, 2, 3], vec![4]], 9).unwrap();
        assert_eq!(ids, vec![1, 4, 2, 9, 3, 9]);
        assert_eq!(lens, vec![3, 1]);
        assert!(pad_tokens::<Vec<u32>>(&[vec![]], 0).is_err());
    }

    const CSV: &str = "\u{feff}date, temp ,\"load\",humidity\r\n\
                       2024-01-01,1.5,10,0.5\r\n\
                       \r\n\
                       2024-01-02,2.5,30,0.25\r\n\
                       2024-01-03,-3e0,20,1\r\n";

    #[test]
    fn csv_parses_and_selects_columns() {
        let t = CsvTable::parse(CSV, "x.csv").unwrap();
        assert_eq!(t.header, ["date", "temp", "load", "humidity"]);
        assert_eq!(t.num_rows(), 3);
        assert_eq!(t.line_of_row(1), 4); // the blank line 3 is skipped
        assert_eq!(t.cell(0, 0), "2024-01-01");
        assert_eq!(t.numeric_column_indices(), vec![1, 2, 3]);

        // Default: all numeric columns as features, the last as target.
        let s = t.select(None, None).unwrap();
        assert_eq!(s.feature_names, ["temp", "load", "humidity"]);
        assert_eq!(s.target_name, "humidity");
        assert_eq!(s.features[0], vec![1.5, 2.5, -3.0]);
        assert_eq!(s.target, vec![0.5, 0.25, 1.0]);

        let f = vec!["load".to_string()];
        let s = t.select(Some(&f), Some("temp")).unwrap();
        assert_eq!(s.feature_names, ["load"]);
        assert_eq!(s.features, vec![vec![10., 30., 20.]]);
        assert_eq!(
            (s.target_name.as_str(), s.target.clone()),
            ("temp", vec![1.5, 2.5, -3.0])
        );

        let e = t.select(None, Some("pressure")).unwrap_err().to_string();
        assert!(
            e.contains("x.csv") && e.contains("`pressure`") && e.contains("date, temp"),
            "{e}"
        );
        let e = t.select(None, Some("date")).unwrap_err().to_string();
        assert!(
            e.contains("line 2, column 1 (`date`)") && e.contains("not a number"),
            "{e}"
        );
        let dup = vec!["load".to_string(), "load".to_string()];
        assert!(t.select(Some(&dup), None).is_err());
    }

    #[test]
    fn csv_rejects_bad_input_with_line_numbers() {
        let e = CsvTable::parse("a,b\n1,2\n3\n", "r.csv")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("r.csv: line 3: 1 fields") && e.contains("2 columns"),
            "{e}"
        );
        let e = CsvTable::parse("a,b\n1,2\n3,4,5\n", "r.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3: 3 fields"), "{e}");

        let t = CsvTable::parse("a,b\n1,2\n3,x\n2,6\n", "n.csv").unwrap();
        // `b` is not numeric (decided on all rows): name it to see why.
        let e = t.select(None, Some("b")).unwrap_err().to_string();
        assert!(
            e.contains("n.csv") && e.contains("line 3, column 2 (`b`): `x` is not a number"),
            "{e}"
        );
        let t = CsvTable::parse("a,b\n1,2\n3,\n", "n.csv").unwrap();
        let e = t.select(None, None).unwrap_err().to_string();
        assert!(
            e.contains("line 3, column 2") && e.contains("missing value"),
            "{e}"
        );
        let t = CsvTable::parse("a,b\n1,2\n3,NaN\n", "n.csv").unwrap();
        let e = t.select(None, None).unwrap_err().to_string();
        assert!(e.contains("missing value `NaN`"), "{e}");
        let t = CsvTable::parse("a,b\n1,2\n3,inf\n", "n.csv").unwrap();
        let e = t.select(None, None).unwrap_err().to_string();
        assert!(e.contains("`inf` is not a finite number"), "{e}");

        assert!(
            CsvTable::parse("", "e.csv")
                .unwrap_err()
                .to_string()
                .contains("empty file")
        );
        assert!(
            CsvTable::parse("a,b\n\n", "e.csv")
                .unwrap_err()
                .to_string()
                .contains("no data rows")
        );
        let e = CsvTable::parse("a,a\n1,2\n", "d.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("both named `a`"), "{e}");
        let e = CsvTable::parse("a,,c\n1,2,3\n", "d.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("column 2 of the header has no name"), "{e}");
        let t = CsvTable::parse("name\nfoo\n", "s.csv").unwrap();
        assert!(
            t.select(None, None)
                .unwrap_err()
                .to_string()
                .contains("no numeric column")
        );
    }

    #[test]
    fn csv_quoted_fields_follow_rfc_4180() {
        let t = CsvTable::parse(
            "when,\"level, in m\",note\n\
             \"Jan 1, 2020\", \"1.5\" ,\"say \"\"hi\"\"\"\n\
             \"Jan 2,\n2020\",2,\"\"\n\
             Jan 3,3,x\r\n",
            "q.csv",
        )
        .unwrap();
        assert_eq!(t.header, ["when", "level, in m", "note"]);
        assert_eq!(t.num_rows(), 3);
        assert_eq!(t.cell(0, 0), "Jan 1, 2020");
        assert_eq!(t.cell(0, 2), "say \"hi\"");
        assert_eq!(t.cell(1, 0), "Jan 2,\n2020");
        assert_eq!(t.cell(1, 2), "");
        // A row starts on its first line; line breaks in quotes count.
        assert_eq!((t.line_of_row(1), t.line_of_row(2)), (3, 5));
        assert_eq!(t.numeric_column_indices(), vec![1]);
        let s = t.select(None, None).unwrap();
        assert_eq!(s.target, vec![1.5, 2.0, 3.0]);

        let e = CsvTable::parse("a,b\n1,2\n\"3,4\n5,6\n", "u.csv")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("u.csv: line 3: a quoted field is never closed"),
            "{e}"
        );
        let e = CsvTable::parse("a,b\n1,\"2\"x\n", "u.csv")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2: field 2 has text after its closing quote"),
            "{e}"
        );
        // A quoted empty line is a record, an empty one is not.
        let t = CsvTable::parse("a\n1\n\n  \n2\n", "b.csv").unwrap();
        assert_eq!(t.num_rows(), 2);
        let e = CsvTable::parse("a,b\n\"\"\n", "b.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2: 1 fields"), "{e}");
    }

    #[test]
    fn csv_numeric_and_time_like_columns() {
        // `code` is numeric in the first row only; `t` counts up; `year`
        // is named like time; `x` holds a missing cell.
        let t = CsvTable::parse(
            "year,code,t,x,y\n2000,1,10,0.5,3\n2001,B,11,,1\n2002,3,12,0.2,2\n",
            "c.csv",
        )
        .unwrap();
        assert_eq!(t.numeric_column_indices(), vec![0, 2, 3, 4]);
        assert_eq!(t.time_like(0), Some("named like a time index"));
        assert_eq!(t.time_like(2), Some("integers increasing row by row"));
        assert_eq!(t.time_like(3), None);
        assert_eq!(t.time_like(4), None);
        let o = SelectOptions {
            missing: Missing::Interpolate,
            ..Default::default()
        };
        let s = t.select_with(&o).unwrap();
        assert_eq!(s.table.feature_names, ["x", "y"]);
        assert_eq!(s.table.features[0], vec![0.5, 0.35, 0.2]);
        assert_eq!(s.time.as_ref().map(|c| c.name.as_str()), Some("year"));
        assert_eq!(s.unused_time.len(), 2);
        assert_eq!(s.rows, vec![2, 3, 4]);
        // Named, a time-like column is a feature.
        let o = SelectOptions {
            features: Some(vec!["t".into(), "y".into()]),
            time: Some("code".into()),
            ..Default::default()
        };
        let s = t.select_with(&o).unwrap();
        assert_eq!(s.table.feature_names, ["t", "y"]);
        assert_eq!(s.time.unwrap().values, ["1", "B", "3"]);
    }

    #[test]
    fn csv_missing_cells() {
        let t = CsvTable::parse("a,y\n1,NA\n2,4\n,6\n3,\n5,10\n", "m.csv").unwrap();
        let sel = |m| {
            t.select_with(&SelectOptions {
                missing: m,
                ..Default::default()
            })
        };
        let e = sel(Missing::Error).unwrap_err().to_string();
        assert!(
            e.contains("m.csv: line 2, column 2 (`y`): missing value `NA`")
                && e.contains("--missing"),
            "{e}"
        );
        let d = sel(Missing::Drop).unwrap();
        assert_eq!(d.table.features, vec![vec![2.0, 5.0], vec![4.0, 10.0]]);
        assert_eq!(d.rows, vec![3, 6]);
        let e = sel(Missing::Ffill).unwrap_err().to_string();
        assert!(
            e.contains("line 2, column 2") && e.contains("no value above"),
            "{e}"
        );
        let i = sel(Missing::Interpolate).unwrap();
        assert_eq!(i.table.features[0], vec![1.0, 2.0, 2.5, 3.0, 5.0]);
        assert_eq!(i.table.target, vec![4.0, 4.0, 6.0, 8.0, 10.0]);
        let t = CsvTable::parse("a,y\n1,1\n2,\n,6\n", "m.csv").unwrap();
        let f = t
            .select_with(&SelectOptions {
                missing: Missing::Ffill,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            f.table.features,
            vec![vec![1.0, 2.0, 2.0], vec![1.0, 1.0, 6.0]]
        );
        assert!(Missing::parse("zero").is_err());
    }

    #[test]
    fn unnormalisable_columns_are_refused_by_name() {
        let e = ColumnStats::fit("c", &[5.0, 5.0, 5.0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`c` is constant"), "{e}");
        // Finite values of any size fit (a naive sum of squares overflowed).
        let st = ColumnStats::fit("big", &[1e308, -1e308, 1e308]).unwrap();
        assert!(st.mean.is_finite() && st.std.is_finite(), "{st:?}");
        assert!(ColumnStats::fit("ok", &[1.0, 2.0]).is_ok());
    }

    #[test]
    fn csv_reads_files() {
        let dir = std::env::temp_dir().join(format!("lstm_wgpu_data_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.csv");
        std::fs::write(&p, "x,y\n1,2\n3,4\n").unwrap();
        let t = CsvTable::read(&p).unwrap();
        assert_eq!(t.select(None, None).unwrap().target, vec![2.0, 4.0]);
        std::fs::write(&p, b"x,y\n1,\xff\n").unwrap();
        let e = CsvTable::read(&p).unwrap_err().to_string();
        assert!(e.contains("not valid UTF-8 at byte 6 (line 2)"), "{e}");
        let e = CsvTable::read(dir.join("missing.csv"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("missing.csv") && e.contains("cannot read"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn normalization_is_fitted_on_the_training_rows_only() {
        // 10 rows: 8 training rows 0..8, 2 validation rows far away.
        let mut v: Vec<f64> = (0..8).map(|i| i as f64).collect();
        v.extend([1000.0, 2000.0]);
        let other: Vec<f64> = (0..10).map(|i| 5.0 + (i % 2) as f64).collect();
        let table = SeriesTable::new(
            vec!["x".into(), "c".into()],
            vec![v.clone(), other],
            "x".into(),
            v.clone(),
        )
        .unwrap();
        let cfg = SeriesConfig {
            seq_len: 3,
            horizon: 1,
            val_fraction: 0.2,
        };
        let d = SeriesDataset::new(&table, &cfg).unwrap();
        assert_eq!((d.train_rows, d.val_rows), (8, 2));
        let var = (0..8).map(|i| (i as f64 - 3.5).powi(2)).sum::<f64>() / 8.0;
        assert_eq!(d.norm.target.mean, 3.5);
        assert!((d.norm.target.std - var.sqrt()).abs() < 1e-12);
        assert_eq!(d.norm.features[0], d.norm.target);
        assert_eq!(
            (d.norm.features[1].mean, d.norm.features[1].std),
            (5.5, 0.5)
        );

        // Round trips.
        let z = d.norm.normalize_target(&[0.0, 1000.0]);
        let back = d.norm.denormalize(&z);
        assert!((back[0] - 0.0).abs() < 1e-4 && (back[1] - 1000.0).abs() < 1e-3);
        let meta = d.norm.to_metadata();
        assert_eq!(Normalizer::from_metadata(&meta).unwrap(), d.norm);
        assert!(Normalizer::from_metadata("feature\t1\t0\tx\ntarget\t1\t1\tx\n").is_err());
        assert!(Normalizer::from_metadata("feature\t1\t1\tx\n").is_err());

        // A stored normalization is reused as is.
        let again = SeriesDataset::with_normalizer(&table, &cfg, d.norm.clone()).unwrap();
        assert_eq!(again.norm, d.norm);
        let uni = SeriesTable::univariate("x", v).unwrap();
        assert!(SeriesDataset::with_normalizer(&uni, &cfg, d.norm.clone()).is_err());
    }

    #[test]
    fn huge_and_tiny_columns_normalise() {
        for scale in [1e300, 1e-300, 1.0] {
            let v: Vec<f64> = [1.0, 2.0, 3.0].iter().map(|x| x * scale).collect();
            let st = ColumnStats::fit("x", &v).unwrap();
            let want = (2f64 / 3.0).sqrt() * scale;
            assert!((st.std - want).abs() <= 1e-12 * want, "{scale}: {}", st.std);
            assert!((st.mean - 2.0 * scale).abs() <= 1e-12 * scale, "{scale}");
            assert!(
                (st.normalize(v[2]) - 1.5f64.sqrt()).abs() < 1e-12,
                "{scale}"
            );
        }
        // x − mean overflows here, the z-score does not.
        let v = [-1.7e308, 1.7e308, 1.7e308];
        let st = ColumnStats::fit("x", &v).unwrap();
        assert!(v.iter().all(|&x| st.normalize(x).is_finite()), "{st:?}");
        let e = ColumnStats::fit("k", &[1e300; 4]).unwrap_err().to_string();
        assert!(e.contains("`k` is constant (1e300)"), "{e}");
        // A value far outside the training rows is refused by name.
        let mut y: Vec<f64> = (0..10).map(|i| (i % 3) as f64).collect();
        y.push(1e300);
        let t = SeriesTable::univariate("y", y).unwrap();
        let cfg = SeriesConfig {
            seq_len: 2,
            horizon: 1,
            val_fraction: 0.1,
        };
        let e = SeriesDataset::new(&t, &cfg).unwrap_err().to_string();
        assert!(
            e.contains("column `y` row 11: 1e300 lies") && e.contains("beyond f32"),
            "{e}"
        );
    }

    #[test]
    fn windows_hold_the_right_rows() {
        // x = row index, target = 100 + row index; stats make z easy to undo.
        let n = 20;
        let x: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let y: Vec<f64> = (0..n).map(|i| 100.0 + i as f64).collect();
        let table = SeriesTable::new(vec!["x".into()], vec![x], "y".into(), y).unwrap();
        let cfg = SeriesConfig {
            seq_len: 3,
            horizon: 2,
            val_fraction: 0.25,
        };
        let d = SeriesDataset::new(&table, &cfg).unwrap();
        assert_eq!((d.train_rows, d.val_rows), (15, 5));
        // Training windows: targets below row 15: starts 0..=10.
        assert_eq!(d.train.len(), 11);
        let val = d.val.as_ref().unwrap();
        // Validation windows: first target in 15..=18: 5 - 2 + 1 = 4.
        assert_eq!(val.len(), 4);
        assert_eq!(val.first_target_row(0), 15);

        let fx = &d.norm.features[0];
        let undo_x = |v: f32| fx.denormalize(v as f64).round();
        let undo_y = |v: f32| d.norm.target.denormalize(v as f64).round();

        let b = d.train.batch(&[0, 10]).unwrap();
        assert_eq!(
            (b.seq_len, b.batch, b.num_features, b.horizon),
            (3, 2, 1, 2)
        );
        let xs: Vec<f64> = b.inputs.iter().map(|&v| undo_x(v)).collect();
        assert_eq!(xs, vec![0., 10., 1., 11., 2., 12.]); // [T, B, F]
        let ys: Vec<f64> = b.targets.iter().map(|&v| undo_y(v)).collect();
        assert_eq!(ys, vec![103., 104., 113., 114.]); // [B, k]

        let b = val.batch(&[0, 3]).unwrap();
        let xs: Vec<f64> = b.inputs.iter().map(|&v| undo_x(v)).collect();
        assert_eq!(xs, vec![12., 15., 13., 16., 14., 17.]);
        let ys: Vec<f64> = b.targets.iter().map(|&v| undo_y(v)).collect();
        assert_eq!(ys, vec![115., 116., 118., 119.]);
        assert!(val.batch(&[4]).is_err());
        assert!(val.batch(&[]).is_err());

        // Too short for one window.
        let short = SeriesConfig {
            seq_len: 15,
            ..cfg.clone()
        };
        let e = SeriesDataset::new(&table, &short).unwrap_err().to_string();
        assert!(
            e.contains("training split has 15 rows (the last 5 of the 20")
                && e.contains("= 17 rows"),
            "{e}"
        );
        let e = SeriesDataset::new(
            &table,
            &SeriesConfig {
                seq_len: 19,
                val_fraction: 0.0,
                ..short.clone()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("the series has 20 rows") && e.contains("= 21"),
            "{e}"
        );
        let noval = SeriesDataset::new(
            &table,
            &SeriesConfig {
                val_fraction: 0.0,
                ..cfg
            },
        )
        .unwrap();
        assert!(noval.val.is_none());
        assert_eq!(noval.train.len(), 16);
    }

    #[test]
    fn epochs_shuffle_with_a_seed_or_keep_order() {
        let table = SeriesTable::univariate("s", (0..40).map(|i| i as f64).collect()).unwrap();
        let cfg = SeriesConfig {
            seq_len: 4,
            horizon: 1,
            val_fraction: 0.0,
        };
        let d = SeriesDataset::new(&table, &cfg).unwrap();
        let w = &d.train;
        assert_eq!(w.len(), 36);
        assert_eq!(w.order(None, 3), (0..36).collect::<Vec<_>>());
        let a = w.order(Some(7), 0);
        assert_eq!(a, w.order(Some(7), 0));
        assert_ne!(a, w.order(Some(7), 1));
        assert_ne!(a, w.order(Some(8), 0));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..36).collect::<Vec<_>>());

        let batches: Vec<SeriesBatch> = w.epoch(10, Some(7), 0, false).unwrap().collect();
        assert_eq!(batches.len(), 4);
        assert_eq!(batches[3].batch, 6);
        assert_eq!(batches[0], w.batch(&a[..10]).unwrap());
        assert_eq!(w.epoch(10, None, 0, true).unwrap().len(), 3);
        assert_eq!(w.num_batches(10, true), 3);
        assert!(w.epoch(37, None, 0, true).is_err());
        assert!(w.epoch(0, None, 0, false).is_err());
        let seq: Vec<SeriesBatch> = w.epoch(36, None, 0, false).unwrap().collect();
        assert_eq!(seq[0], w.batch(&(0..36).collect::<Vec<_>>()).unwrap());
    }

    #[test]
    fn rng_samplers() {
        let mut r = Rng::new(1);
        let n = 200_000;
        let z: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = z.iter().sum::<f64>() / n as f64;
        let var = z.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        assert!(
            mean.abs() < 0.01 && (var - 1.0).abs() < 0.01,
            "{mean} {var}"
        );
        let mut counts = [0usize; 5];
        for _ in 0..50_000 {
            counts[r.below(5)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_500..10_500).contains(&c)),
            "{counts:?}"
        );
        // The raw SplitMix64 stream for a seed.
        assert_eq!(Rng::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn sine_is_deterministic_with_the_right_noise() {
        let a = sine_mixture(5000, 0.1, 3);
        assert_eq!(a, sine_mixture(5000, 0.1, 3));
        assert_ne!(a, sine_mixture(5000, 0.1, 4));
        let (clean, noisy) = sine_parts(20_000, 0.1, 3);
        let r: Vec<f64> = noisy.iter().zip(&clean).map(|(n, c)| n - c).collect();
        let m = r.iter().sum::<f64>() / r.len() as f64;
        let sd = (r.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / r.len() as f64).sqrt();
        assert!(m.abs() < 0.005 && (sd - 0.1).abs() < 0.005, "{m} {sd}");
        let amp = clean.iter().fold(0f64, |a, v| a.max(v.abs()));
        assert!(amp > 0.4 && amp <= 3.0, "{amp}");
        let (clean0, noisy0) = sine_parts(100, 0.0, 3);
        assert_eq!(clean0, noisy0);
        let t = builtin_series(Builtin::Sine, 300, 1).unwrap();
        assert_eq!(
            (t.len(), t.num_features(), t.target_name.as_str()),
            (300, 1, "sine")
        );
    }

    #[test]
    fn mackey_glass_is_bounded_chaotic_and_deterministic() {
        let a = mackey_glass(3000, 0);
        assert_eq!(a, mackey_glass(3000, 0));
        assert_ne!(a, mackey_glass(3000, 1));
        let (lo, hi) = a
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        assert!(lo > 0.2 && hi < 1.5, "{lo} {hi}");
        let m = a.iter().sum::<f64>() / a.len() as f64;
        let sd = (a.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / a.len() as f64).sqrt();
        assert!(sd > 0.1, "{sd}");
        assert!(hi - lo > 0.6, "{lo} {hi}");
        // Not periodic with a short period: values 50 apart differ.
        let d50 = a.windows(51).map(|w| (w[0] - w[50]).abs()).sum::<f64>() / (a.len() - 50) as f64;
        assert!(d50 > 0.05, "{d50}");
        let t = builtin_series(Builtin::MackeyGlass, 500, 2).unwrap();
        let d = SeriesDataset::new(&t, &SeriesConfig::default()).unwrap();
        assert_eq!((d.train_rows, d.val_rows), (450, 50));
        assert!(builtin_series(Builtin::Copy, 10, 0).is_err());
    }

    #[test]
    fn adding_task_with_lengths() {
        let task = AddingTask::new(20, 4).unwrap();
        let (b, lens) = task.batch_lengths(Split::Train, 3, 32, 6).unwrap();
        assert_eq!(lens.len(), 32);
        assert!(lens.iter().all(|&l| (6..=20).contains(&l)));
        assert!(lens.iter().any(|&l| l < 20) && lens.iter().any(|&l| l != lens[0]));
        for (j, &l) in lens.iter().enumerate() {
            let mut marked = Vec::new();
            for t in 0..20 {
                let o = (t * 32 + j) * 2;
                if t >= l {
                    assert_eq!((b.inputs[o], b.inputs[o + 1]), (0.0, 0.0), "padding");
                } else if b.inputs[o + 1] == 1.0 {
                    marked.push((t, b.inputs[o]));
                }
            }
            assert_eq!(marked.len(), 2);
            assert!(marked[0].0 < l / 2 && marked[1].0 >= l / 2);
            assert_eq!(b.targets[j], marked[0].1 + marked[1].1);
        }
        // The full length is the plain batch; bad minimums are refused.
        let (full, l) = task.batch_lengths(Split::Val, 1, 8, 20).unwrap();
        assert_eq!(full, task.batch(Split::Val, 1, 8).unwrap());
        assert_eq!(l, vec![20; 8]);
        for m in [1, 21] {
            let e = task.batch_lengths(Split::Train, 0, 8, m).unwrap_err();
            assert!(e.to_string().contains("2..=20"), "{e}");
        }
    }

    #[test]
    fn adding_task() {
        let task = AddingTask::new(50, 9).unwrap();
        let b = task.batch(Split::Train, 0, 64).unwrap();
        assert_eq!(b, task.batch(Split::Train, 0, 64).unwrap());
        assert_ne!(b, task.batch(Split::Train, 1, 64).unwrap());
        assert_ne!(b, task.batch(Split::Val, 0, 64).unwrap());
        assert_eq!(
            (b.seq_len, b.batch, b.num_features, b.horizon),
            (50, 64, 2, 1)
        );
        assert_eq!(b.targets.len(), 64);
        let mut total = 0f64;
        for j in 0..64 {
            let mut marked = Vec::new();
            for t in 0..50 {
                let o = (t * 64 + j) * 2;
                assert!((0.0..1.0).contains(&b.inputs[o]));
                match b.inputs[o + 1] {
                    1.0 => marked.push((t, b.inputs[o])),
                    0.0 => {}
                    m => panic!("marker {m}"),
                }
            }
            assert_eq!(marked.len(), 2);
            assert!(marked[0].0 < 25 && marked[1].0 >= 25);
            let sum = marked[0].1 + marked[1].1;
            assert_eq!(b.targets[j], sum);
            assert!((0.0..=2.0).contains(&b.targets[j]));
            total += sum as f64;
        }
        let mean = total / 64.0;
        assert!((mean - 1.0).abs() < 0.2, "{mean}");
        let b2 = AddingTask::new(2, 0)
            .unwrap()
            .batch(Split::Train, 0, 8)
            .unwrap();
        assert!(b2.inputs.chunks(2).all(|p| p[1] == 1.0)); // both steps marked
        assert!(AddingTask::new(1, 0).is_err());
        assert!(task.batch(Split::Train, 0, 0).is_err());
    }

    #[test]
    fn copy_task() {
        let task = CopyTask::new(3, 5, 4, 1).unwrap();
        assert_eq!(
            (task.seq_len(), task.vocab_size(), task.delimiter()),
            (11, 6, 5)
        );
        let b = task.batch(Split::Train, 2, 7).unwrap();
        assert_eq!(b, task.batch(Split::Train, 2, 7).unwrap());
        assert_ne!(b, task.batch(Split::Val, 2, 7).unwrap());
        assert_eq!((b.seq_len, b.batch), (11, 7));
        for j in 0..7 {
            let x: Vec<u32> = (0..11).map(|t| b.inputs[t * 7 + j]).collect();
            let y: Vec<u32> = (0..11).map(|t| b.targets[t * 7 + j]).collect();
            assert!(x[..3].iter().all(|&s| (1..=4).contains(&s)));
            assert_eq!(&x[3..7], &[0, 0, 0, 0]);
            assert_eq!(x[7], 5);
            assert_eq!(&x[8..], &[0, 0, 0]);
            assert_eq!(&y[..8], &[0; 8]);
            assert_eq!(&y[8..], &x[..3]);
        }
        assert!((task.baseline_cross_entropy() - 3.0 * 4f64.ln() / 11.0).abs() < 1e-12);
        assert!(CopyTask::new(0, 5, 4, 1).is_err());
    }

    #[test]
    fn generated_text_is_english_like_and_deterministic() {
        let t = generated_text(DEFAULT_TEXT_BYTES, 0);
        assert_eq!(t, generated_text(DEFAULT_TEXT_BYTES, 0));
        assert_ne!(t, generated_text(DEFAULT_TEXT_BYTES, 1));
        assert!(t.len() >= DEFAULT_TEXT_BYTES && t.len() < DEFAULT_TEXT_BYTES + 2000);
        assert!(t.is_ascii());
        let v = Vocab::from_text(&t).unwrap();
        assert!((30..70).contains(&v.len()), "{}", v.len());
        assert!(
            t.lines()
                .all(|l| l.starts_with(|c: char| c.is_ascii_uppercase()))
        );
        assert!(t.contains(". ") && t.contains(", ") && t.contains("an "));
        assert!(!t.contains(" a o") && !t.contains("  "));
        let d = TextData::new(&t, &TextConfig::default()).unwrap();
        assert!(d.train.num_windows() > 50 && d.val.is_some());
    }

    #[test]
    fn builtin_names() {
        for n in Builtin::NAMES {
            let b: Builtin = n.parse().unwrap();
            assert_eq!(b.to_string(), n);
        }
        assert_eq!(Builtin::from_name("MG").unwrap(), Builtin::MackeyGlass);
        let e = Builtin::from_name("lorenz").unwrap_err().to_string();
        assert!(e.contains("lorenz") && e.contains("mackey-glass"), "{e}");
        assert!(Builtin::Sine.is_series() && !Builtin::Text.is_series());
    }
}
