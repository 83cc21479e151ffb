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
//! Files by source: `text.rs`, `csv.rs`, `series.rs` (table, column
//! statistics, normaliser), `windows.rs` (window sets, the series dataset,
//! padding), `synthetic.rs`; their unit tests in `tests.rs`.
//!
//! Only `std` and the library's generator ([`crate::rng`]) are used.

use crate::error::{Error, Result, clip, num};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

mod csv;
mod series;
mod synthetic;
#[cfg(test)]
mod tests;
mod text;
mod windows;

pub use csv::*;
pub use series::*;
pub use synthetic::*;
pub use text::*;
pub use windows::*;

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
