//! Text: the vocabulary, reading a text file, token batches and the streams
//! that cut a text into truncated-BPTT windows.

use super::*;

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
