//! Character-level text: the vocabulary, the token streams and their
//! windows (PyTorch's `batchify` and `get_batch`), the validation split and
//! one-hot encoding.

use super::{DEFAULT_VAL_FRACTION, TokenBatch, val_count};
use crate::error::{Error, Result};
use std::path::Path;

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
        Self::from_tokens(tokens, vocab, cfg)
    }

    /// Splits a text given as token ids of `vocab` (every id must be
    /// below its size).
    pub fn from_tokens(tokens: Vec<u32>, vocab: Vocab, cfg: &TextConfig) -> Result<Self> {
        if let Some(i) = tokens.iter().position(|&t| t as usize >= vocab.len()) {
            return Err(Error::Invalid(format!(
                "token id {} at position {i}: the vocabulary has {} characters (ids 0..{})",
                tokens[i],
                vocab.len(),
                vocab.len()
            )));
        }
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
    fn one_hot_encodes_ids() {
        assert_eq!(one_hot(&[2, 0], 3).unwrap(), vec![0., 0., 1., 1., 0., 0.]);
        assert!(one_hot(&[3], 3).is_err());
    }
}
