//! The chosen columns of a time series, whatever their source (a CSV or a
//! generated dataset), and their z-score statistics.

use crate::error::{Error, Result, clip, num};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{SeriesConfig, SeriesDataset};

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
}
