//! `lstm-wgpu predict`: a series checkpoint's forecasts for every window
//! of a CSV, and `--future` steps past its end.

use crate::cli::env::{host_budget, open_gpu, size_limits};
use lstm_wgpu::Model;
use lstm_wgpu::data::{Normalizer, Selection, SeriesConfig, SeriesDataset, WindowSet};
use lstm_wgpu::error::{Error, Result};
use lstm_wgpu::infer::Checkpoint;
use lstm_wgpu::run::checkpoint::{Loaded, load_checkpoint};
use lstm_wgpu::run::choice::MissingChoice;
use lstm_wgpu::run::data::{
    csv_cell, describe_columns, dev_rows, net_with, series_table, test_windows,
};
use lstm_wgpu::run::settings::{RunConfig, describe_data};
use lstm_wgpu::train::Head;
use lstm_wgpu::train::forecast::SeriesMetrics;
use std::path::PathBuf;

/// `--missing`'s values, listed in `--help` as clap lists named values.
fn missing_parser() -> impl clap::builder::TypedValueParser<Value = MissingChoice> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(MissingChoice::NAMES)
        .map(|s| s.parse::<MissingChoice>().unwrap_or_default())
}

/// Arguments of `predict`.
#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// A series checkpoint written by `train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// CSV with the checkpoint's feature and target columns.
    #[arg(long)]
    pub data: PathBuf,
    /// Windows to predict: all, or the train, val or test split of the
    /// checkpoint's --val-fraction and --test-fraction (val reproduces
    /// train's val_loss, test its final test figures).
    #[arg(long, default_value = "all", value_parser = ["all", "train", "val", "test"])]
    pub split: String,
    /// Also continue the series N steps past its last row, feeding the
    /// predictions back (every feature must be the target or a column with
    /// a constant step); the output then has one line per row.
    #[arg(long, value_name = "N", conflicts_with = "split")]
    pub future: Option<usize>,
    /// Time column labelling the output rows (default: the checkpoint's
    /// --time, else a non-numeric first column, else a time-like column).
    #[arg(long)]
    pub time: Option<String>,
    /// Missing cells: error | drop | ffill | interpolate (default: the
    /// checkpoint's --missing).
    #[arg(long, value_parser = missing_parser())]
    pub missing: Option<MissingChoice>,
    /// Windows per GPU pass.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Also write each predicted window's attention weights to FILE: a CSV
    /// with one line per window (its label, then the weight of each of its
    /// rows, oldest first). Checkpoints trained with --head attention only.
    #[arg(long, value_name = "FILE")]
    pub attention_out: Option<PathBuf>,
}

/// Runs `predict`. Without `--future`: one CSV line per window (the time of
/// its first target when the CSV has a time column, the window index, the
/// actual target values, the predictions), all in the target's units. With
/// `--future N`: one line per row (time, row, actual, the one-step-ahead
/// prediction of the window before it), then N forecast rows. A summary with
/// MAE and RMSE beside the naive last-value forecast's goes to stderr.
pub fn predict(a: &PredictArgs, verbose: bool) -> Result<()> {
    if a.batch == 0 {
        return Err(Error::Invalid("--batch must be at least 1".into()));
    }
    let l = load_checkpoint(&a.checkpoint)?;
    if let Some(p) = &a.attention_out {
        if l.config.attention.is_none() {
            return Err(Error::file(
                &a.checkpoint,
                format!(
                    "--attention-out {}: this checkpoint's head reads the last step; attention \
                     weights come from a model trained with --head attention",
                    p.display()
                ),
            ));
        }
        lstm_wgpu::io::check_output(p, "--attention-out", &[&a.checkpoint, &a.data])?;
    }
    let (c, norm) = run_config(a, &l)?;
    check_future_size(a.future, &c, norm.features.len())?;
    let sel = series_table(&c, &lstm_wgpu::run::Data::Settings)?;
    norm.check_matches(&sel.table)
        .map_err(|e| Error::file(&a.data, e))?;
    let ds = dataset(a, &c, &sel, &norm)?;
    let n = sel.table.len();
    let test = match a.split.as_str() {
        "test" => Some(test_windows(&c, &sel.table, &norm)?.ok_or_else(|| {
            Error::file(
                &a.checkpoint,
                "--split test: its run held out no test rows (train --test-fraction)",
            )
        })?),
        _ => None,
    };
    let set = match (&ds, a.split.as_str()) {
        (_, "test") => test.as_ref(),
        (Some(d), "val") => Some(d.val.as_ref().ok_or_else(|| {
            Error::file(
                &a.data,
                format!(
                    "--split val: --val-fraction {} of {n} rows holds out no validation rows",
                    c.val_fraction
                ),
            )
        })?),
        (Some(d), _) => Some(&d.train),
        (None, _) => None,
    };
    if a.future.is_some() && n < c.seq_len {
        return Err(Error::file(
            &a.data,
            format!(
                "--future needs the last {} rows (the checkpoint's --seq-len); it has {n}",
                c.seq_len
            ),
        ));
    }
    let cont = match a.future {
        Some(_) => Some(
            lstm_wgpu::train::forecast::continuations(&sel.table)
                .map_err(|e| Error::file(&a.data, e))?,
        ),
        None => None,
    };
    let windows: Vec<usize> = (0..set.map_or(0, |s| s.len())).collect();
    let net = net_with(
        &c,
        Head::Regression {
            features: sel.table.num_features(),
            outputs: c.horizon,
        },
    )?;
    let b = a.batch.min(windows.len().max(1));
    net.check_size(c.seq_len, b, &size_limits(None))?;
    let ck = Checkpoint::from_file(&l.file)?;
    let ctx = open_gpu(verbose)?;
    net.check_size(c.seq_len, b, &size_limits(Some(&ctx)))?;
    let mut model = Model::new(ctx, ck);
    eprintln!("{}", describe_columns(&c, &sel));
    let (pred, weights) = match (set, &a.attention_out) {
        (Some(s), Some(_)) => model.predict_windows_attention(s, &windows, b)?,
        (Some(s), None) => (model.predict_windows(s, &windows, b)?, Vec::new()),
        (None, _) => Default::default(),
    };
    // The windows run in batches of b, the recursive forecast one window
    // a pass: the first plan is dropped before the second exists.
    model.release_plans();
    let future = match (a.future, &cont) {
        (Some(steps), Some(_)) => model
            .forecast_table(&sel.table, steps)
            .map_err(|e| Error::file(&a.data, e))?,
        _ => Vec::new(),
    };
    let out = Output {
        sel: &sel,
        norm: &norm,
        seq_len: c.seq_len,
        horizon: c.horizon,
        pred: &pred,
    };
    match (a.future, set) {
        (None, Some(s)) => out.windows(s, &windows)?,
        _ => out.rows(windows.len(), &future)?,
    }
    if let Some(p) = &a.attention_out {
        let text = out.attention(set, &windows, &weights);
        lstm_wgpu::io::write_atomic(p, text.as_bytes())?;
        eprintln!(
            "attention: the weights of {} window{} written to {}",
            windows.len(),
            if windows.len() == 1 { "" } else { "s" },
            p.display()
        );
    }
    if let Some(s) = set
        && !windows.is_empty()
    {
        let m = SeriesMetrics::of(s, &windows, &pred, &sel.table.target, &norm);
        eprintln!(
            "predict: {} window{} ({} split of {}), target `{}`: MAE {:.6} RMSE {:.6}; \
             naive last value: MAE {:.6} RMSE {:.6}; MSE of z-scores {:.6} (naive {:.6})",
            m.windows,
            if m.windows == 1 { "" } else { "s" },
            a.split,
            a.data.display(),
            sel.table.target_name,
            m.model.mae,
            m.model.rmse,
            m.naive.mae,
            m.naive.rmse,
            m.model.mse,
            m.naive.mse
        );
    }
    if let Some(steps) = a.future {
        eprintln!(
            "forecast: {steps} steps past row {n}, {} at a time, predictions fed back as `{}`",
            c.horizon, sel.table.target_name
        );
    }
    Ok(())
}

/// The checkpoint's settings as `predict` applies them to `--data`: its
/// time column, missing-cell rule and split, and the columns it trained
/// on by name (a CSV with its columns in another order, or with more
/// numeric columns, selects the same ones); and its normaliser.
fn run_config(a: &PredictArgs, l: &Loaded) -> Result<(RunConfig, Normalizer)> {
    let norm = l.norm.clone().ok_or_else(|| {
        Error::file(
            &a.checkpoint,
            format!(
                "a {} checkpoint on {}: predict runs series checkpoints trained on a CSV or a \
                 generated series",
                l.config.task,
                describe_data(&l.config)
            ),
        )
    })?;
    let mut c = l.config.clone();
    c.data = Some(a.data.clone());
    if let Some(t) = &a.time {
        c.time = Some(t.clone());
    }
    if let Some(m) = &a.missing {
        c.missing = *m;
    }
    if a.split == "all" {
        c.val_fraction = 0.0;
        c.test_fraction = 0.0;
    }
    if c.features.is_none() {
        let names: Vec<&str> = norm.features.iter().map(|f| f.name.as_str()).collect();
        c.features = Some(names.join(","));
    }
    if c.target.is_none() {
        c.target = Some(norm.target.name.clone());
    }
    Ok((c, norm))
}

/// The windows of the selected rows, or `None` for a `--future` run on a
/// series too short for one (which needs none); a series too short for
/// `predict` without `--future` is refused, saying how many rows it needs.
fn dataset(
    a: &PredictArgs,
    c: &RunConfig,
    sel: &Selection,
    norm: &Normalizer,
) -> Result<Option<SeriesDataset>> {
    let (t_len, k, n) = (c.seq_len, c.horizon, sel.table.len());
    if a.future.is_none() && n < t_len.saturating_add(k) {
        return Err(Error::file(
            &a.data,
            format!(
                "{n} rows{}, too few to predict: one window takes the checkpoint's --seq-len \
                 {t_len} rows as input and the next --horizon {k} as targets ({} rows); give a \
                 longer series",
                if c.missing == MissingChoice::Drop {
                    " kept (--missing drop)"
                } else {
                    ""
                },
                t_len.saturating_add(k)
            ),
        ));
    }
    if n < t_len + k {
        return Ok(None);
    }
    let sc = SeriesConfig {
        seq_len: t_len,
        horizon: k,
        val_fraction: c.val_fraction,
    };
    // Training and validation rows end where the test rows begin.
    SeriesDataset::with_normalizer(&dev_rows(c, &sel.table)?, &sc, norm.clone())
        .map(Some)
        .map_err(|e| Error::file(&a.data, e))
}

/// What `predict` prints on stdout: the selected rows, their normaliser
/// and the window predictions (z-scores, `horizon` per window).
struct Output<'a> {
    sel: &'a Selection,
    norm: &'a Normalizer,
    seq_len: usize,
    horizon: usize,
    pred: &'a [f32],
}

impl Output<'_> {
    /// `time,` of row `r`, when the CSV has a time column.
    fn time_cell(&self, r: usize) -> String {
        self.sel
            .time
            .as_ref()
            .map(|tc| format!("{},", csv_cell(&tc.values[r])))
            .unwrap_or_default()
    }

    fn time_head(&self) -> String {
        self.sel
            .time
            .as_ref()
            .map(|tc| format!("{},", csv_cell(&tc.name)))
            .unwrap_or_default()
    }

    /// One line per window: its targets and predictions.
    fn windows(&self, s: &WindowSet, windows: &[usize]) -> Result<()> {
        let (k, tname) = (self.horizon, &self.sel.table.target_name);
        let target = &self.sel.table.target;
        let names: Vec<String> = (1..=k)
            .map(|j| csv_cell(&format!("{tname}_t+{j}")))
            .chain((1..=k).map(|j| csv_cell(&format!("pred_{tname}_t+{j}"))))
            .collect();
        crate::cli::out::line(format!("{}window,{}", self.time_head(), names.join(",")))?;
        for (i, &w) in windows.iter().enumerate() {
            let r0 = s.first_target_row(w);
            let mut row = self.time_cell(r0) + &w.to_string();
            for j in 0..k {
                row += &format!(",{}", target[r0 + j]);
            }
            for j in 0..k {
                let p = self.norm.target.denormalize(self.pred[i * k + j] as f64);
                row += &format!(",{p}");
            }
            crate::cli::out::line(row)?;
        }
        Ok(())
    }

    /// The `--attention-out` CSV: a header, then one line per window of
    /// `windows` (those predicted; with `--future`, those behind the
    /// one-step-ahead column): its label as the windows' output has it
    /// (the time of its first target, when the CSV has a time column, and
    /// the window index), then the weight of each of its `seq_len` rows,
    /// oldest first (`a_t-T` … `a_t-1`: the row so many steps before the
    /// first predicted one).
    fn attention(&self, set: Option<&WindowSet>, windows: &[usize], weights: &[f32]) -> String {
        let t = self.seq_len;
        let cols: Vec<String> = (1..=t).rev().map(|j| format!("a_t-{j}")).collect();
        let mut text = format!("{}window,{}\n", self.time_head(), cols.join(","));
        let Some(s) = set else {
            return text;
        };
        for (i, &w) in windows.iter().enumerate() {
            let r0 = s.first_target_row(w);
            text += &(self.time_cell(r0) + &w.to_string());
            for v in &weights[i * t..(i + 1) * t] {
                text += &format!(",{v}");
            }
            text.push('\n');
        }
        text
    }

    /// One line per row (actual and the one-step-ahead prediction of the
    /// `windows` windows), then one per `future` value.
    fn rows(&self, windows: usize, future: &[f64]) -> Result<()> {
        let (t, tname) = (&self.sel.table, &self.sel.table.target_name);
        crate::cli::out::line(format!(
            "{}row,{},{}",
            self.time_head(),
            csv_cell(tname),
            csv_cell(&format!("pred_{tname}"))
        ))?;
        // The one-step-ahead prediction of row r comes from the window
        // ending at r - 1 (window r - seq_len).
        for (r, actual) in t.target.iter().enumerate() {
            let p = r
                .checked_sub(self.seq_len)
                .filter(|w| *w < windows)
                .map(|w| {
                    let z = self.pred[w * self.horizon] as f64;
                    self.norm.target.denormalize(z).to_string()
                })
                .unwrap_or_default();
            let line = format!("{}{},{actual},{p}", self.time_cell(r), r + 1);
            crate::cli::out::line(line)?;
        }
        let time = self.sel.time.as_ref();
        let times = time
            .map(|tc| extend_times(&tc.values, future.len()))
            .unwrap_or_default();
        for (i, y) in future.iter().enumerate() {
            let cell = match (times.get(i), time) {
                (Some(t), _) => format!("{},", csv_cell(t)),
                (None, Some(_)) => ",".into(),
                (None, None) => String::new(),
            };
            crate::cli::out::line(format!("{cell}{},,{y}", t.len() + i + 1))?;
        }
        Ok(())
    }
}

/// Refuses a `--future` whose rows (the checkpoint's `features` columns,
/// in f64, with their time labels and output lines) exceed the host
/// budget, before anything is allocated.
pub(crate) fn check_future_size(
    future: Option<usize>,
    c: &RunConfig,
    features: usize,
) -> Result<()> {
    let Some(steps) = future else {
        return Ok(());
    };
    // Per row: the feature values, the row's vector, the prediction and a
    // time label (a String and its text).
    let per_row = (features as u128)
        .saturating_mul(8)
        .saturating_add(24 + 8 + 24 + 32);
    let bytes = (steps as u128)
        .saturating_add(c.seq_len as u128)
        .saturating_mul(per_row);
    let budget = host_budget();
    if bytes > budget as u128 {
        return Err(Error::Invalid(format!(
            "--future {steps}: the forecast rows need {} bytes, over the host budget of \
             {budget} bytes; forecast fewer steps",
            u64::try_from(bytes).map_or("more than 2^64".into(), |b| b.to_string())
        )));
    }
    Ok(())
}

/// The next `n` values of a time column with a constant step: numbers, or
/// dates `YYYY-MM-DD` / `YYYY-MM` stepping by days or by months; empty
/// strings when the step is not constant.
pub(crate) fn extend_times(values: &[String], n: usize) -> Vec<String> {
    if let Some(v) = extend_dates(values, n) {
        return v;
    }
    let nums: Option<Vec<f64>> = values.iter().map(|v| v.parse::<f64>().ok()).collect();
    if let Some(v) = nums
        && let Some(d) = lstm_wgpu::train::forecast::constant_step(&v)
    {
        let last = v[v.len() - 1];
        let ints = v.iter().all(|x| x.fract() == 0.0) && d.fract() == 0.0;
        return (1..=n)
            .map(|i| {
                let x = last + d * i as f64;
                if ints {
                    format!("{x:.0}")
                } else {
                    format!("{x}")
                }
            })
            .collect();
    }
    vec![String::new(); n]
}

/// [`extend_times`] for dates, when every value is one and the step is
/// constant.
pub(crate) fn extend_dates(values: &[String], n: usize) -> Option<Vec<String>> {
    let dates: Vec<(i64, i64, Option<i64>)> = values
        .iter()
        .map(|v| parse_date(v))
        .collect::<Option<_>>()
        .filter(|d: &Vec<_>| d.len() >= 2)?;
    let compact = !values[0].contains('-');
    let fmt = |y: i64, m: i64, d: Option<i64>| match (d, compact) {
        (Some(d), true) => format!("{y:04}{m:02}{d:02}"),
        (Some(d), false) => format!("{y:04}-{m:02}-{d:02}"),
        (None, _) => format!("{y:04}-{m:02}"),
    };
    let months: Vec<f64> = dates.iter().map(|d| (d.0 * 12 + d.1 - 1) as f64).collect();
    let (y, m, day) = dates[dates.len() - 1];
    // The same day of the month (or none) and a constant month step.
    if let Some(step) = lstm_wgpu::train::forecast::constant_step(&months)
        && dates.iter().all(|x| x.2 == day)
    {
        let last = months[months.len() - 1] as i64;
        return Some(
            (1..=n as i64)
                .map(|i| {
                    let t = last + step as i64 * i;
                    fmt(t.div_euclid(12), t.rem_euclid(12) + 1, day)
                })
                .collect(),
        );
    }
    let day = day?;
    let days: Vec<f64> = dates
        .iter()
        .map(|d| days_from_civil(d.0, d.1, d.2.unwrap_or(1)) as f64)
        .collect();
    let step = lstm_wgpu::train::forecast::constant_step(&days)? as i64;
    let last = days_from_civil(y, m, day);
    Some(
        (1..=n as i64)
            .map(|i| {
                let (yy, mm, dd) = civil_from_days(last + step * i);
                fmt(yy, mm, Some(dd))
            })
            .collect(),
    )
}

/// `YYYY-MM-DD`, `YYYYMMDD` or `YYYY-MM` as (year, month, day).
pub(crate) fn parse_date(s: &str) -> Option<(i64, i64, Option<i64>)> {
    let s = s.trim();
    let p: Vec<&str> = if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
        vec![&s[..4], &s[4..6], &s[6..]]
    } else {
        s.split('-').collect()
    };
    let num = |x: &str, len: usize| {
        (x.len() == len && x.bytes().all(|b| b.is_ascii_digit()))
            .then(|| x.parse::<i64>().ok())
            .flatten()
    };
    let (y, m) = (num(p.first()?, 4)?, num(p.get(1)?, 2)?);
    if !(1..=12).contains(&m) {
        return None;
    }
    match p.len() {
        2 => Some((y, m, None)),
        3 => num(p[2], 2)
            .filter(|d| (1..=31).contains(d))
            .map(|d| (y, m, Some(d))),
        _ => None,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The date of a day count of [`days_from_civil`].
pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_columns_extend() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(extend_times(&s(&["1700", "1701"]), 2), ["1702", "1703"]);
        assert_eq!(extend_times(&s(&["0.5", "1"]), 1), ["1.5"]);
        assert_eq!(
            extend_times(&s(&["2024-12-28", "2025-01-04"]), 2),
            ["2025-01-11", "2025-01-18"]
        );
        assert_eq!(
            extend_times(&s(&["1958-11-01", "1958-12-01"]), 2),
            ["1959-01-01", "1959-02-01"]
        );
        assert_eq!(extend_times(&s(&["1949-11", "1949-12"]), 1), ["1950-01"]);
        assert_eq!(extend_times(&s(&["a", "b"]), 2), ["", ""]);
        assert_eq!(extend_times(&s(&["19581227", "19590103"]), 1), ["19590110"]);
        assert_eq!(extend_times(&s(&["1", "2", "4"]), 1), [""]);
        for z in [-800_000, -1, 0, 59, 10_000, 20_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
    }
}
