//! The study's table: per variant, mean ± sample std over the seeds.

use crate::cli::study::Record;

/// A column: its heading, its CSV name and how a record gives its value.
struct Column {
    head: &'static str,
    csv: &'static str,
    get: fn(&Record) -> Option<f64>,
    /// The naive forecast's value, for the naive row.
    naive: Option<fn(&Record) -> Option<f64>>,
}

/// The columns of every study; those no record fills are left out.
fn columns() -> Vec<Column> {
    let c = |head, csv, get, naive| Column {
        head,
        csv,
        get,
        naive,
    };
    vec![
        c("final train loss", "train_loss", |r| r.train_loss, None),
        c(
            "final val loss",
            "val_loss",
            |r| r.val_loss,
            Some(|r| r.naive_val_loss),
        ),
        c(
            "best val loss",
            "best_val",
            |r| r.best_val,
            Some(|r| r.naive_val_loss),
        ),
        c(
            "bits/char (best val)",
            "bits_per_char",
            |r| {
                r.best_val
                    .filter(|_| r.text)
                    .map(|v| v / std::f64::consts::LN_2)
            },
            None,
        ),
        c(
            "test MAE (best)",
            "best_test_mae",
            |r| r.best_test_mae,
            Some(|r| r.naive_test_mae),
        ),
        c(
            "test RMSE (best)",
            "best_test_rmse",
            |r| r.best_test_rmse,
            Some(|r| r.naive_test_rmse),
        ),
        c(
            "test MAE (final)",
            "test_mae",
            |r| r.test_mae,
            Some(|r| r.naive_test_mae),
        ),
        c(
            "test RMSE (final)",
            "test_rmse",
            |r| r.test_rmse,
            Some(|r| r.naive_test_rmse),
        ),
        c(
            "recall acc (best)",
            "best_recall_acc",
            |r| r.best_recall_acc,
            None,
        ),
        c("recall acc (final)", "recall_acc", |r| r.recall_acc, None),
        c(
            "explosions/epoch",
            "explosions_per_epoch",
            |r| Some(r.explosions as f64 / r.epochs.max(1) as f64),
            None,
        ),
        c("params", "params", |r| Some(r.params as f64), None),
        // Last: the one figure that differs between equal runs.
        c("s/run (wall)", "secs", |r| Some(r.secs), None),
    ]
}

/// Mean and sample standard deviation (n − 1; None for one value).
fn stats(v: &[f64]) -> (f64, Option<f64>) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    // Equal values have no spread, whatever the rounding of their mean.
    let same = v.iter().all(|&x| x == v[0]);
    let std = (v.len() > 1).then(|| {
        if same {
            0.0
        } else {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        }
    });
    (mean, std)
}

/// One cell: mean and std over the seeds, or nothing.
type Cell = Option<(f64, Option<f64>)>;

/// The aggregated study.
pub(crate) struct Table {
    heads: Vec<&'static str>,
    csv_heads: Vec<&'static str>,
    /// (name, seeds, cells).
    rows: Vec<(String, usize, Vec<Cell>)>,
    seeds: usize,
}

impl Table {
    /// The rows of `variants` (in order) from `records`, and a row for the
    /// naive forecast when the runs are series forecasts.
    pub(crate) fn of(variants: &[String], records: &[Record]) -> Table {
        let cols: Vec<Column> = columns()
            .into_iter()
            .filter(|c| records.iter().any(|r| (c.get)(r).is_some()))
            .collect();
        let cell = |rs: &[&Record], f: fn(&Record) -> Option<f64>| -> Cell {
            let v: Vec<f64> = rs.iter().filter_map(|r| f(r)).collect();
            (!v.is_empty()).then(|| stats(&v))
        };
        let mut rows = Vec::new();
        let mut seeds = 0;
        for v in variants {
            let rs: Vec<&Record> = records.iter().filter(|r| &r.variant == v).collect();
            seeds = seeds.max(rs.len());
            let cells = cols.iter().map(|c| cell(&rs, c.get)).collect();
            rows.push((v.clone(), rs.len(), cells));
        }
        let all: Vec<&Record> = records.iter().collect();
        if records.iter().any(|r| r.naive_test_mae.is_some()) {
            let cells = cols
                .iter()
                .map(|c| c.naive.and_then(|f| cell(&all, f)))
                .collect();
            rows.push(("naive (last value)".into(), all.len(), cells));
        }
        Table {
            heads: cols.iter().map(|c| c.head).collect(),
            csv_heads: cols.iter().map(|c| c.csv).collect(),
            rows,
            seeds,
        }
    }

    /// The Markdown table, with a line on what the cells are.
    pub(crate) fn markdown(&self) -> String {
        let mut s = format!("| variant | {} |\n", self.heads.join(" | "));
        s += &format!("|---|{}\n", "---|".repeat(self.heads.len()));
        for (name, _, cells) in &self.rows {
            let shown: Vec<String> = cells
                .iter()
                .zip(&self.heads)
                .map(|(c, h)| match c {
                    None => "—".into(),
                    Some((m, _)) if *h == "params" => format!("{m:.0}"),
                    Some((m, None)) => short(*m),
                    Some((m, Some(sd))) => format!("{} ± {}", short(*m), short(*sd)),
                })
                .collect();
            s += &format!("| {name} | {} |\n", shown.join(" | "));
        }
        s += &if self.seeds > 1 {
            format!("\nmean ± sample std (n − 1) over {} seeds; ", self.seeds)
        } else {
            "\none seed: means only, no spread; ".to_string()
        };
        if self.csv_heads.contains(&"test_mae") {
            s += "test figures in the target's units, of the best validation's weights \
                  (best) and the last (final); ";
        }
        s += "s/run is wall time, the only column that differs between equal studies.\n";
        s
    }

    /// The CSV: a mean and a std column per figure (std empty with one
    /// seed), full precision; the wall-time columns last.
    pub(crate) fn csv(&self) -> String {
        let mut head = vec!["variant".to_string(), "runs".to_string()];
        for h in &self.csv_heads {
            head.push(format!("{h}_mean"));
            head.push(format!("{h}_std"));
        }
        let mut s = head.join(",") + "\n";
        for (name, n, cells) in &self.rows {
            let mut row = vec![name.clone(), n.to_string()];
            for c in cells {
                let (m, sd) = match c {
                    None => (String::new(), String::new()),
                    Some((m, sd)) => (m.to_string(), sd.map(|x| x.to_string()).unwrap_or_default()),
                };
                row.push(m);
                row.push(sd);
            }
            s += &row.join(",");
            s.push('\n');
        }
        s
    }
}

/// Four significant digits, without an exponent where one is not needed.
fn short(x: f64) -> String {
    let a = x.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{x:.3e}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.3}")
    } else {
        format!("{x:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_std() {
        let (m, s) = stats(&[1.0, 2.0, 3.0]);
        assert_eq!(m, 2.0);
        assert_eq!(s, Some(1.0));
        assert_eq!(stats(&[5.0]), (5.0, None));
        assert_eq!(stats(&[0.1, 0.1, 0.1]).1, Some(0.0));
    }

    #[test]
    fn one_seed_gives_means_only() {
        let r = Record {
            variant: "a".into(),
            seed: 0,
            final_line: String::new(),
            text: true,
            train_loss: Some(1.0),
            val_loss: Some(2.0),
            best_val: Some(2.0),
            naive_val_loss: None,
            test_mae: None,
            test_rmse: None,
            best_test_mae: None,
            best_test_rmse: None,
            naive_test_mae: None,
            naive_test_rmse: None,
            recall_acc: None,
            best_recall_acc: None,
            explosions: 3,
            epochs: 2,
            params: 10,
            secs: 1.5,
            val_curve: Vec::new(),
        };
        let t = Table::of(&["a".to_string()], &[r]);
        let md = t.markdown();
        assert!(md.contains("one seed: means only"), "{md}");
        assert!(!md.contains('±') && !md.contains("test"), "{md}");
        // bits per character = best val / ln 2; explosions per epoch.
        assert!(
            md.contains("| a | 1.000 | 2.000 | 2.000 | 2.885 | 1.500 | 10 | 1.500 |"),
            "{md}"
        );
        assert!(t.csv().lines().nth(1).unwrap().starts_with("a,1,1,,2,,2,,"));
    }
}
