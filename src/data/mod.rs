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
//! One file per source: `text.rs`, `csv.rs` (reading a CSV and choosing its
//! columns), `series.rs` (the chosen columns and their z-scores),
//! `windows.rs` (windows and splits of a series), `synthetic.rs` (the
//! generated datasets) and `padding.rs`. This file holds the small types
//! they share ([`Split`], [`val_count`], [`TokenBatch`], [`SeriesBatch`])
//! and re-exports the rest, so every item is `data::Name`.
//!
//! Only `std` and the library's generator ([`crate::rng`]) are used.

mod csv;
mod padding;
mod series;
mod synthetic;
mod text;
mod windows;

pub use csv::{CsvTable, Missing, SelectOptions, Selection, TimeColumn};
pub use padding::{Padded, pad_sequences, pad_tokens};
pub use series::{ColumnStats, Normalizer, SeriesTable};
pub use synthetic::{
    AddingTask, Builtin, CopyTask, DEFAULT_SERIES_LEN, DEFAULT_TEXT_BYTES, SINE_NOISE_STD,
    builtin_series, generated_text, mackey_glass, sine_mixture,
};
pub use text::{TextConfig, TextData, TextStreams, Vocab, one_hot, read_text};
pub use windows::{SeriesConfig, SeriesDataset, SeriesEpoch, WindowSet};

pub use crate::rng::{Rng, derive_seed};

use crate::error::{Error, Result, num};

/// The validation fraction used when none is given.
pub const DEFAULT_VAL_FRACTION: f64 = 0.1;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
