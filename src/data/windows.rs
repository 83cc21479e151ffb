//! Sliding windows over a series: the split by time into training and
//! validation rows, the normalisation fitted on the training rows, and
//! batches and seeded epochs of windows.

use super::{
    ColumnStats, CsvTable, DEFAULT_VAL_FRACTION, Normalizer, Rng, SeriesBatch, SeriesTable,
    derive_seed, val_count,
};
use crate::error::{Error, Result, num};
use std::ops::Range;
use std::sync::Arc;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
