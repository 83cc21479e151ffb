//! Validation over the whole validation split.

use crate::data::{Selection, SeriesDataset, Split, WindowSet};
use crate::error::{Error, Result};
use crate::run::data::{Owned, RunData, VAL_BATCHES, adding_batch, shard};
use crate::run::settings::RunConfig;
use crate::train::forecast::SeriesMetrics;
use crate::train::reduce::predict_windows_sharded;
use crate::train::{Carry, Trainer};

/// One validation: the mean loss over the whole validation split
/// (weighted by positions), and for series the model's and the naive
/// forecast's errors on every validation window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ValReport {
    /// The validation loss (cross-entropy for text, MSE of the z-scores
    /// for series).
    pub loss: f64,
    /// A series' errors in the target's units, and the naive forecast's.
    pub series: Option<SeriesMetrics>,
    /// The copy task's recall accuracy: the share of the recalled symbols
    /// (the last K targets of every validation sequence) whose largest
    /// logit is the right one.
    pub recall: Option<f64>,
}

/// Validates over the whole validation split, or `None` when there is none.
pub fn validate(tr: &mut Trainer, c: &RunConfig, data: &RunData) -> Result<Option<ValReport>> {
    let mut sum = 0.0;
    let mut n = 0.0;
    // Copy task: recalled symbols right, and recalled symbols.
    let mut hits = [0.0, 0.0];
    match data {
        RunData::Text(t) => {
            let Some(v) = &t.val else { return Ok(None) };
            for w in 0..v.num_windows() {
                let b = v.get_batch(w);
                let carry = if w == 0 { Carry::Zero } else { Carry::Continue };
                let mine = shard(tr, Owned::Tokens(b.inputs, b.targets));
                let l = tr.eval(b.seq_len, &mine.view(), carry)?;
                sum += l as f64 * b.seq_len as f64;
                n += b.seq_len as f64;
            }
        }
        RunData::Series(s, sel) => {
            let Some(v) = &s.val else { return Ok(None) };
            // Every window, the last batch short: scored on the host from
            // the predictions, so val_loss is predict's MSE on them.
            let m = score_series(tr, v, s, sel)?;
            return Ok(Some(ValReport {
                loss: m.model.mse,
                series: Some(m),
                recall: None,
            }));
        }
        RunData::Copy(task) => {
            for i in 0..VAL_BATCHES as u64 {
                let b = task.batch(Split::Val, i, c.batch)?;
                let mine = shard(tr, Owned::Tokens(b.inputs, b.targets));
                sum += tr.eval(b.seq_len, &mine.view(), Carry::Zero)? as f64;
                n += 1.0;
                let Owned::Tokens(_, targets) = &mine else {
                    unreachable!("a copy batch is tokens")
                };
                let logits = tr.head_output(b.seq_len)?;
                let first = task.seq_len() - task.symbols;
                let r = recall_hits(&logits, targets, tr.batch(), first);
                hits[0] += r.0;
                hits[1] += r.1;
            }
        }
        RunData::Adding(task) => {
            for i in 0..VAL_BATCHES as u64 {
                let b = shard(tr, adding_batch(c, task, Split::Val, i)?);
                sum += tr.eval(task.seq_len, &b.view(), Carry::Zero)? as f64;
                n += 1.0;
            }
        }
    }
    // Data parallel: every rank's shard has as many positions.
    let mut sums = [sum, n, hits[0], hits[1]];
    if let Some(r) = tr.reducer() {
        r.sum_f64(&mut sums)?;
    }
    let [sum, n, right, recalled] = sums;
    Ok((n > 0.0).then(|| ValReport {
        loss: sum / n,
        series: None,
        recall: (recalled > 0.0).then(|| right / recalled),
    }))
}

/// Right and all predictions at the positions from `first` on of a batch
/// of `batch` sequences: `logits` `[T·B, vocab]` time-major, `targets`
/// `[T, B]`. A prediction is the first largest logit.
fn recall_hits(logits: &[f32], targets: &[u32], batch: usize, first: usize) -> (f64, f64) {
    let vocab = logits.len() / targets.len().max(1);
    let mut right = 0.0;
    let mut all = 0.0;
    for (row, &y) in targets.iter().enumerate().skip(first * batch) {
        let l = &logits[row * vocab..(row + 1) * vocab];
        let best = (0..vocab).fold(0, |b, k| if l[k] > l[b] { k } else { b });
        right += f64::from(best as u32 == y);
        all += 1.0;
    }
    (right, all)
}

/// The model's and the naive forecast's errors on every window of `set`
/// (of the series `s`, `sel`).
fn score_series(
    tr: &mut Trainer,
    set: &WindowSet,
    s: &SeriesDataset,
    sel: &Selection,
) -> Result<SeriesMetrics> {
    let windows: Vec<usize> = (0..set.len()).collect();
    let pred = predict_windows_sharded(tr, set, &windows)?;
    Ok(SeriesMetrics::of(
        set,
        &windows,
        &pred,
        &sel.table.target,
        &s.norm,
    ))
}

/// Scores the test windows `set` of a series run.
pub fn score(tr: &mut Trainer, set: &WindowSet, data: &RunData) -> Result<SeriesMetrics> {
    match data {
        RunData::Series(s, sel) => score_series(tr, set, s, sel),
        _ => Err(Error::Invalid("a test split needs a series".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::recall_hits;

    #[test]
    fn recall_counts_only_the_recalled_positions() {
        // T = 3, B = 2, vocab 3: rows t·B + b.
        let logits = [
            9.0, 0.0, 0.0, /* t0 b0 */ 9.0, 0.0, 0.0, // t0 b1
            0.0, 1.0, 0.5, /* t1 b0 */ 0.0, 0.2, 0.7, // t1 b1
            0.0, 0.0, 3.0, /* t2 b0 */ 2.0, 2.0, 1.0, // t2 b1: tie, first wins
        ];
        let targets = [1, 1, 1, 1, 2, 1];
        // Positions 1 and 2: right at (1, 0), (2, 0); wrong at (1, 1), (2, 1).
        assert_eq!(recall_hits(&logits, &targets, 2, 1), (2.0, 4.0));
        assert_eq!(recall_hits(&logits, &targets, 2, 2), (1.0, 2.0));
        assert_eq!(recall_hits(&logits, &targets, 2, 0), (2.0, 6.0));
    }
}
