//! Series forecasting with a trained model: predictions for many windows
//! in batches, their errors beside the naive last-value forecast's, and
//! recursive forecasts past the end of the data.

use crate::data::{Normalizer, SeriesTable, WindowSet};
use crate::error::{Error, Result};
use crate::train::{Carry, StepData, Trainer};

/// Predictions (z-scores, `[windows.len(), k]`) of `windows` of `set`, in
/// batches of the trainer's batch size; a short last batch is padded with
/// its last window, whose extra rows are dropped (in eval mode rows do not
/// affect one another).
pub fn predict_windows(tr: &mut Trainer, set: &WindowSet, windows: &[usize]) -> Result<Vec<f32>> {
    Ok(windows_pass(tr, set, windows, false)?.0)
}

/// [`predict_windows`] of a model with attention pooling
/// ([`crate::train::NetConfig::attention`]), with each window's attention
/// weights (`[windows.len(), T]`: the weight of each of its rows, oldest
/// first); an error for a model without.
pub fn predict_windows_attention(
    tr: &mut Trainer,
    set: &WindowSet,
    windows: &[usize],
) -> Result<(Vec<f32>, Vec<f32>)> {
    windows_pass(tr, set, windows, true)
}

fn windows_pass(
    tr: &mut Trainer,
    set: &WindowSet,
    windows: &[usize],
    attention: bool,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let (b, k) = (tr.batch(), set.horizon());
    let mut out = Vec::with_capacity(windows.len() * k);
    let mut weights = Vec::new();
    for chunk in windows.chunks(b) {
        let mut ids = chunk.to_vec();
        ids.resize(b, chunk[chunk.len() - 1]);
        let batch = set.batch(&ids)?;
        let data = StepData::series(&batch.inputs, &batch.targets);
        tr.eval(batch.seq_len, &data, Carry::Zero)?;
        let y = tr.head_output(batch.seq_len)?;
        out.extend_from_slice(&y[..chunk.len() * k]);
        if attention {
            let a = tr.attention_weights(batch.seq_len)?;
            weights.extend_from_slice(&a[..chunk.len() * batch.seq_len]);
        }
    }
    Ok((out, weights))
}

/// Errors of a forecast over a set of windows and all `k` targets of each.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Errors {
    /// Mean squared error of the z-scores (the training loss's units).
    pub mse: f64,
    /// Mean absolute error in the target's units.
    pub mae: f64,
    /// Root mean squared error in the target's units.
    pub rmse: f64,
}

/// The model's errors and the naive forecast's on the same windows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SeriesMetrics {
    /// Windows scored.
    pub windows: usize,
    /// The model.
    pub model: Errors,
    /// The naive forecast: every target of a window is the last target
    /// value the window observes (for horizon j, the value j steps back).
    pub naive: Errors,
}

impl SeriesMetrics {
    /// Scores predictions `pred` (z-scores, `[windows.len(), k]`) of
    /// `windows` of `set` against `target`, the target column in its units
    /// (the rows `set` was built from); `norm` maps z-scores to units.
    pub fn of(
        set: &WindowSet,
        windows: &[usize],
        pred: &[f32],
        target: &[f64],
        norm: &Normalizer,
    ) -> Self {
        let k = set.horizon();
        let st = &norm.target;
        let (mut m, mut nv) = ([0f64; 3], [0f64; 3]);
        for (i, &w) in windows.iter().enumerate() {
            let r0 = set.first_target_row(w);
            let zt = set.targets(w);
            let last = target[r0 - 1];
            for j in 0..k {
                let actual = target[r0 + j];
                let zp = pred[i * k + j] as f64;
                let dz = zp - zt[j] as f64;
                let d = st.denormalize(zp) - actual;
                m[0] += dz * dz;
                m[1] += d.abs();
                m[2] += d * d;
                let dn = last - actual;
                let dzn = (set.last_observed(w) - zt[j]) as f64;
                nv[0] += dzn * dzn;
                nv[1] += dn.abs();
                nv[2] += dn * dn;
            }
        }
        let n = (windows.len() * k).max(1) as f64;
        let errors = |s: [f64; 3]| Errors {
            mse: s[0] / n,
            mae: s[1] / n,
            rmse: (s[2] / n).sqrt(),
        };
        Self {
            windows: windows.len(),
            model: errors(m),
            naive: errors(nv),
        }
    }
}

/// How a feature continues past the last row of the data.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Continuation {
    /// The feature is the target: it takes the predictions.
    Target,
    /// The feature grows by this constant step per row (a time index).
    Step(f64),
}

/// How each feature of `table` continues past its last row, or an error
/// naming the features that would be needed: a recursive forecast feeds
/// predictions back, so every feature must be the target or follow from
/// it (here: a column with a constant step, such as a time index).
pub fn continuations(table: &SeriesTable) -> Result<Vec<Continuation>> {
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for (name, col) in table.feature_names.iter().zip(&table.features) {
        if *name == table.target_name {
            out.push(Continuation::Target);
            continue;
        }
        match constant_step(col) {
            Some(d) => out.push(Continuation::Step(d)),
            None => unknown.push(format!("`{name}`")),
        }
    }
    if !unknown.is_empty() {
        return Err(Error::Invalid(format!(
            "--future feeds predictions back, but feature(s) {} are neither the target `{}` nor \
             a column with a constant step (a time index), so their values after the last row \
             are unknown; train on the target alone (--features {}) to forecast recursively, or \
             append future values of those columns to the CSV",
            unknown.join(", "),
            table.target_name,
            table.target_name
        )));
    }
    Ok(out)
}

/// The step of a column whose consecutive differences are all equal (to
/// 1e-9 of the largest value), if it is one.
pub fn constant_step(col: &[f64]) -> Option<f64> {
    if col.len() < 2 {
        return None;
    }
    let d = col[1] - col[0];
    let scale = col.iter().fold(0f64, |m, v| m.max(v.abs())).max(1.0);
    col.windows(2)
        .all(|w| ((w[1] - w[0]) - d).abs() <= 1e-9 * scale)
        .then_some(d)
}

/// Continues the series `steps` rows past its end (in the target's units):
/// each pass reads the last `seq_len` rows, predicts the next `k` target
/// values, and appends them as rows (features by `cont`), until `steps`
/// values exist. Each pass is one window, so `tr` must have batch 1 (a
/// larger batch would compute copies of it).
pub fn forecast(
    tr: &mut Trainer,
    table: &SeriesTable,
    norm: &Normalizer,
    seq_len: usize,
    horizon: usize,
    steps: usize,
    cont: &[Continuation],
) -> Result<Vec<f64>> {
    let n = table.len();
    if n < seq_len {
        return Err(Error::Invalid(format!(
            "--future needs the last {seq_len} rows (--seq-len of the checkpoint); the data has {n}"
        )));
    }
    if tr.batch() != 1 {
        return Err(Error::Invalid(format!(
            "the recursive forecast runs one window a pass: its model needs batch 1, not {}",
            tr.batch()
        )));
    }
    // The last seq_len rows in units, extended as predictions come.
    let mut rows: Vec<Vec<f64>> = (n - seq_len..n)
        .map(|r| table.features.iter().map(|c| c[r]).collect())
        .collect();
    let mut out = Vec::with_capacity(steps);
    let targets = vec![0f32; horizon];
    while out.len() < steps {
        // [T, 1, F]: the last seq_len rows as z-scores.
        let x: Vec<f32> = rows[rows.len() - seq_len..]
            .iter()
            .flat_map(|row| {
                row.iter()
                    .zip(&norm.features)
                    .map(|(v, st)| st.normalize(*v) as f32)
            })
            .collect();
        tr.eval(seq_len, &StepData::series(&x, &targets), Carry::Zero)?;
        let z = tr.head_output(seq_len)?;
        for &zj in z.iter().take(horizon) {
            if out.len() == steps {
                break;
            }
            let y = norm.target.denormalize(zj as f64);
            let last = &rows[rows.len() - 1];
            let next = cont
                .iter()
                .zip(last)
                .map(|(c, v)| match c {
                    Continuation::Target => y,
                    Continuation::Step(d) => v + d,
                })
                .collect();
            rows.push(next);
            out.push(y);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_steps() {
        assert_eq!(constant_step(&[1700.0, 1701.0, 1702.0]), Some(1.0));
        assert_eq!(constant_step(&[0.0, 0.5, 1.0, 1.5]), Some(0.5));
        assert_eq!(constant_step(&[1.0, 2.0, 4.0]), None);
        assert_eq!(constant_step(&[1.0]), None);
    }

    #[test]
    fn continuations_name_the_unknown_features() {
        let t = SeriesTable::new(
            vec!["year".into(), "y".into(), "x".into()],
            vec![
                vec![1.0, 2.0, 3.0],
                vec![5.0, 6.0, 4.0],
                vec![1.0, 7.0, 2.0],
            ],
            "y".into(),
            vec![5.0, 6.0, 4.0],
        )
        .unwrap();
        let e = continuations(&t).unwrap_err().to_string();
        assert!(e.contains("`x`") && !e.contains("`year`"), "{e}");
        let t = SeriesTable::new(
            vec!["year".into(), "y".into()],
            vec![vec![1.0, 2.0, 3.0], vec![5.0, 6.0, 4.0]],
            "y".into(),
            vec![5.0, 6.0, 4.0],
        )
        .unwrap();
        assert_eq!(
            continuations(&t).unwrap(),
            vec![Continuation::Step(1.0), Continuation::Target]
        );
    }
}
