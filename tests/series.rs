//! The time-series workflow through the binary: validation scores every
//! window and equals `predict`'s error on them, the naive baseline stands
//! beside every metric, CSV columns are chosen and filled as documented,
//! `predict --future` continues the series, and data too small for the run
//! is refused with one line.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_lstm-wgpu");

#[path = "common/tempdir.rs"]
mod tempdir;

use tempdir::TempDir;

fn p(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 temp path"))
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
}

fn stderr_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
        .map(str::to_string)
        .collect()
}

/// Runs a command that must succeed: (stdout, stderr).
fn ok(args: &[&str]) -> (String, String) {
    let o = run(args);
    assert!(o.status.success(), "{args:?}: {:?}", stderr_lines(&o));
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr_lines(&o).join("\n"),
    )
}

/// Exit 2, one `error:` line holding every `want`.
fn refused(args: &[&str], want: &[&str]) {
    let o = run(args);
    let lines = stderr_lines(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {lines:?}");
    assert_eq!(lines.len(), 1, "{args:?}: one line expected: {lines:?}");
    assert!(lines[0].starts_with("error: "), "{lines:?}");
    for w in want {
        assert!(lines[0].contains(w), "`{w}` missing from {lines:?}");
    }
}

/// The value after `key` in a whitespace-separated line.
fn field(line: &str, key: &str) -> f64 {
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == key {
            return it
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no number after {key} in {line}"));
        }
    }
    panic!("no {key} in {line}")
}

/// The number after `"key":` in the last JSON line that has it.
fn json(metrics: &Path, key: &str) -> f64 {
    let text = std::fs::read_to_string(metrics).unwrap_or_else(|e| panic!("{e}"));
    let pat = format!("\"{key}\":");
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains(&pat))
        .unwrap_or_else(|| panic!("no {key} in {text}"));
    let rest = &line[line.find(&pat).unwrap_or(0) + pat.len()..];
    rest[..rest.find([',', '}']).unwrap_or(rest.len())]
        .parse()
        .unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// A yearly series with a time column and a smooth target.
fn write_series(path: &Path, rows: usize) {
    let mut s = String::from("year,level\n");
    for i in 0..rows {
        let t = i as f64;
        s += &format!(
            "{},{}\n",
            1900 + i,
            10.0 + (t * 0.45).sin() * 3.0 + 0.01 * t
        );
    }
    std::fs::write(path, s).unwrap_or_else(|e| panic!("{e}"));
}

const SMALL: [&str; 8] = [
    "--hidden",
    "16",
    "--layers",
    "1",
    "--seq-len",
    "8",
    "--no-progress",
    "--seed",
];

/// 130 rows, val-fraction 0.25: 33 validation windows, not a multiple of
/// the batch of 8. Every one is scored, val_loss is predict's MSE (in
/// z-scores) on them and val_rmse / val_mae its errors in the data's
/// units, and the naive baseline's figures are the last-value forecast's.
#[test]
fn validation_scores_every_window_and_equals_predict() {
    let d = TempDir::new("val");
    let (csv, ck, m) = (d.join("s.csv"), d.join("s.st"), d.join("m.jsonl"));
    write_series(&csv, 130);
    let mut args = vec![
        "train",
        "--data",
        p(&csv),
        "--steps",
        "12",
        "--val-every",
        "6",
        "--batch",
        "8",
        "--val-fraction",
        "0.25",
        "--checkpoint",
        p(&ck),
        "--metrics",
        p(&m),
    ];
    args.extend(SMALL);
    args.push("1");
    let (out, err) = ok(&args);
    assert!(err.contains("task: series"), "{err}");
    assert!(
        err.contains("columns: features [level], target `level`, time `year`"),
        "{err}"
    );
    let fin = out.lines().last().unwrap_or_default();
    assert_eq!(field(fin, "val_windows"), 33.0, "{fin}");
    let val_loss = json(&m, "val_loss");
    assert_eq!(json(&m, "val_windows"), 33.0);

    let o = run(&[
        "predict",
        "--checkpoint",
        p(&ck),
        "--data",
        p(&csv),
        "--split",
        "val",
    ]);
    assert!(o.status.success(), "{:?}", stderr_lines(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows[0], "year,window,level_t+1,pred_level_t+1");
    assert_eq!(rows.len(), 1 + 33);
    // Errors in the data's units from predict's own CSV.
    let (mut se, mut ae, mut nae, mut nse) = (0.0, 0.0, 0.0, 0.0);
    let values: Vec<f64> = std::fs::read_to_string(&csv)
        .unwrap_or_else(|e| panic!("{e}"))
        .lines()
        .skip(1)
        .map(|l| {
            l.split(',')
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN)
        })
        .collect();
    for r in &rows[1..] {
        let c: Vec<&str> = r.split(',').collect();
        let year: usize = c[0].parse().unwrap_or_else(|e| panic!("{r}: {e}"));
        let (actual, pred): (f64, f64) = (
            c[2].parse().unwrap_or_else(|e| panic!("{e}")),
            c[3].parse().unwrap_or_else(|e| panic!("{e}")),
        );
        let row = year - 1900;
        assert_eq!(actual, values[row], "{r}");
        se += (pred - actual).powi(2);
        ae += (pred - actual).abs();
        let naive = values[row - 1];
        nae += (naive - actual).abs();
        nse += (naive - actual).powi(2);
    }
    let n = 33.0;
    let close = |a: f64, b: f64, what: &str| {
        assert!(
            (a - b).abs() <= 1e-5 * b.abs().max(1e-3),
            "{what}: {a} vs {b}"
        );
    };
    close((se / n).sqrt(), json(&m, "val_rmse"), "val_rmse");
    close(ae / n, json(&m, "val_mae"), "val_mae");
    close(nae / n, json(&m, "naive_mae"), "naive_mae");
    close((nse / n).sqrt(), json(&m, "naive_rmse"), "naive_rmse");
    // val_loss is the MSE of z-scores: the summary's figure.
    let err = stderr_lines(&o).join("\n");
    let i = err
        .find("MSE of z-scores ")
        .unwrap_or_else(|| panic!("{err}"))
        + 16;
    let mse: f64 = err[i..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    close(mse, val_loss, "val_loss");
    // The naive loss relates to its RMSE through the target's std, like
    // the model's.
    close(
        json(&m, "naive_val_loss") / val_loss,
        (json(&m, "naive_rmse") / json(&m, "val_rmse")).powi(2),
        "naive_val_loss",
    );
    assert!(
        fin.contains("naive_val_loss") && fin.contains("naive_rmse"),
        "{fin}"
    );
}

/// Fewer validation windows than the batch are still scored; the plot's
/// legend names MAE and RMSE and the naive forecast.
#[test]
fn few_validation_windows_still_validate() {
    let d = TempDir::new("few");
    let (csv, plot) = (d.join("s.csv"), d.join("p.svg"));
    write_series(&csv, 60);
    let mut args = vec![
        "train",
        "--data",
        p(&csv),
        "--steps",
        "4",
        "--batch",
        "16",
        "--val-fraction",
        "0.05",
        "--plot",
        p(&plot),
    ];
    args.extend(SMALL);
    args.push("2");
    let (out, _) = ok(&args);
    let fin = out.lines().last().unwrap_or_default();
    assert_eq!(field(fin, "val_windows"), 3.0, "{fin}");
    assert!(field(fin, "val_loss").is_finite(), "{fin}");
    let svg = std::fs::read_to_string(&plot).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        svg.contains("MAE") && svg.contains("naive last-value"),
        "{svg}"
    );
    assert!(svg.contains("s.csv"), "title names the data");
}

/// Splits too small for the run are refused with one line, before any
/// output file exists.
#[test]
fn small_splits_are_refused() {
    let d = TempDir::new("small");
    let (csv, ck) = (d.join("s.csv"), d.join("out.st"));
    write_series(&csv, 40);
    let base = |extra: &[&str]| {
        let mut a = vec!["train", "--data", p(&csv), "--checkpoint", p(&ck)];
        a.extend(SMALL);
        a.push("0");
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let cases: [(&[&str], &[&str]); 4] = [
        (&["--batch", "64"], &["--batch 64", "windows"]),
        (&["--batch", "8", "--val-fraction", "0.9"], &["rows"]),
        (
            &["--val-fraction", "0.001"],
            &["--val-fraction 0.001", "too small"],
        ),
        (&["--val-fraction", "0", "--patience", "2"], &["--patience"]),
    ];
    for (extra, want) in cases {
        let a = base(extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        refused(&a, want);
    }
    assert_eq!(d.files(), ["s.csv"], "a refused run writes nothing");
}

/// Columns: a time-like column is no feature unless named, numeric
/// columns are decided on all rows, missing cells error by default (line
/// and column) or are dropped / filled as asked, and a constant column is
/// refused by name. `--dump-data` shows the data exactly as trained on.
#[test]
fn csv_columns_and_missing_cells() {
    let d = TempDir::new("cols");
    let (csv, dump) = (d.join("m.csv"), d.join("dump.csv"));
    let mut s = String::from("date,idx,label,x,y\n");
    for i in 0..40 {
        let x = if i == 5 {
            String::new()
        } else {
            format!("{}", (i as f64 * 0.7).cos())
        };
        let label = if i == 3 { "n/a?" } else { "7" };
        s += &format!(
            "2020-01-{:02},{i},{label},{x},{}\n",
            i % 28 + 1,
            (i as f64 * 0.3).sin()
        );
    }
    std::fs::write(&csv, s).unwrap_or_else(|e| panic!("{e}"));
    refused(
        &[
            "train",
            "--seq-len",
            "8",
            "--data",
            p(&csv),
            "--dump-data",
            p(&dump),
        ],
        &["line 7, column 4 (`x`)", "missing value", "--missing"],
    );
    let (_, err) = ok(&[
        "train",
        "--seq-len",
        "8",
        "--data",
        p(&csv),
        "--missing",
        "interpolate",
        "--dump-data",
        p(&dump),
    ]);
    assert!(err.contains("features [x, y], target `y`"), "{err}");
    assert!(
        err.contains("`idx` is not a feature (integers increasing"),
        "{err}"
    );
    assert!(err.contains("time `date`"), "{err}");
    let dumped = std::fs::read_to_string(&dump).unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<&str> = dumped.lines().collect();
    assert_eq!(lines[0], "x,y");
    let x = |r: usize| -> f64 {
        lines[r + 1]
            .split(',')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    assert!((x(5) - (x(4) + x(6)) / 2.0).abs() < 1e-12, "interpolated");
    ok(&[
        "train",
        "--seq-len",
        "8",
        "--data",
        p(&csv),
        "--missing",
        "drop",
        "--dump-data",
        p(&dump),
    ]);
    let dumped = std::fs::read_to_string(&dump).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dumped.lines().count(), 1 + 39, "one row dropped");
    ok(&[
        "train",
        "--seq-len",
        "8",
        "--data",
        p(&csv),
        "--missing",
        "drop",
        "--features",
        "idx,y",
        "--dump-data",
        p(&dump),
    ]);
    let dumped = std::fs::read_to_string(&dump).unwrap_or_else(|e| panic!("{e}"));
    assert!(dumped.starts_with("idx,y\n0,"), "named, idx is a feature");
    // `label` is numeric in its first row only.
    refused(
        &[
            "train",
            "--seq-len",
            "8",
            "--data",
            p(&csv),
            "--missing",
            "drop",
            "--features",
            "label",
            "--dump-data",
            p(&dump),
        ],
        &["line 5, column 3 (`label`)", "`n/a?` is not a number"],
    );
    refused(
        &[
            "train",
            "--seq-len",
            "8",
            "--data",
            p(&csv),
            "--task",
            "series",
            "--missing",
            "bogus",
            "--dump-data",
            p(&dump),
        ],
        &["--missing bogus"],
    );
    // A constant column cannot be normalised.
    let c = d.join("c.csv");
    let mut s = String::from("k,y\n");
    for i in 0..40 {
        s += &format!("3,{}\n", (i as f64).sin());
    }
    std::fs::write(&c, s).unwrap_or_else(|e| panic!("{e}"));
    refused(
        &[
            "train",
            "--seq-len",
            "8",
            "--data",
            p(&c),
            "--dump-data",
            p(&dump),
        ],
        &["`k` is constant"],
    );
    let big = d.join("big.csv");
    let mut s = String::from("y\n");
    for i in 0..40 {
        s += &format!("{}e307\n", if i % 2 == 0 { 9 } else { -9 });
    }
    std::fs::write(&big, s).unwrap_or_else(|e| panic!("{e}"));
    let big_args = [
        "train",
        "--seq-len",
        "8",
        "--data",
        p(&big),
        "--dump-data",
        p(&dump),
    ];
    // Finite values of any size normalise (a naive sum of squares
    // overflowed and refused this column).
    ok(&big_args);
    // A value beyond f32 in z-scores is refused by name, numbers short; so
    // is a constant column of huge values.
    let mut s = String::from("y\n");
    for i in 0..39 {
        s += &format!("{}\n", (i as f64).sin());
    }
    s += "1e300\n";
    std::fs::write(&big, s).unwrap_or_else(|e| panic!("{e}"));
    refused(&big_args, &["`y` row 40: 1e300 lies", "beyond f32"]);
    std::fs::write(&big, format!("y\n{}", "1e300\n".repeat(40))).unwrap_or_else(|e| panic!("{e}"));
    refused(&big_args, &["`y` is constant (1e300)"]);
    // A text file stays text without --task.
    let txt = d.join("t.txt");
    std::fs::write(&txt, "hello world, ".repeat(200)).unwrap_or_else(|e| panic!("{e}"));
    let (_, err) = ok(&[
        "train",
        "--seq-len",
        "8",
        "--data",
        p(&txt),
        "--dump-data",
        p(&dump),
    ]);
    assert!(err.contains("task: text"), "{err}");
}

/// RFC 4180 quoting: quoted commas, doubled quotes and line breaks are
/// cells, written back quoted by --dump-data; a quote never closed is
/// refused with its line.
#[test]
fn quoted_csv_fields_are_read() {
    let d = TempDir::new("series-quoted");
    let (csv, dump, again) = (d.join("q.csv"), d.join("d.csv"), d.join("e.csv"));
    let mut s = String::from("\"when, local\",\"level, \"\"m\"\"\"\n");
    for i in 0..40 {
        s += &format!("\"Jan {}, 2020\",\"{}\"\n", i + 1, (i as f64 * 0.4).sin());
    }
    std::fs::write(&csv, s).unwrap_or_else(|e| panic!("{e}"));
    let dump_args = |from: &Path, to: &Path| {
        let v = [
            "train",
            "--seq-len",
            "8",
            "--data",
            p(from),
            "--dump-data",
            p(to),
        ];
        v.map(String::from)
    };
    let a = dump_args(&csv, &dump);
    let (_, err) = ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        err.contains("target `level, \"m\"`") && err.contains("time `when, local`"),
        "{err}"
    );
    let dumped = std::fs::read_to_string(&dump).unwrap_or_else(|e| panic!("{e}"));
    assert!(dumped.starts_with("\"level, \"\"m\"\"\"\n0\n"), "{dumped}");
    let a = dump_args(&dump, &again);
    ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let back = std::fs::read_to_string(&again).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, dumped, "a dumped CSV reads back as itself");

    let bad = d.join("bad.csv");
    std::fs::write(&bad, "t,y\n1,2\n\"3,4\n5,6\n").unwrap_or_else(|e| panic!("{e}"));
    let a = dump_args(&bad, &dump);
    refused(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &["bad.csv", "line 3", "quoted field is never closed"],
    );
}

/// `predict --future N` continues the series N rows past its end, feeding
/// predictions back: the first forecast is the prediction of the window of
/// the last rows, and each next one the prediction after appending the
/// previous; the time column continues; features that cannot be
/// continued are refused by name.
#[test]
fn predict_future_continues_the_series() {
    let d = TempDir::new("future");
    let (csv, ck) = (d.join("s.csv"), d.join("s.st"));
    write_series(&csv, 60);
    let mut args = vec![
        "train",
        "--data",
        p(&csv),
        "--steps",
        "6",
        "--batch",
        "8",
        "--checkpoint",
        p(&ck),
    ];
    args.extend(SMALL);
    args.push("3");
    ok(&args);
    let (out, err) = ok(&[
        "predict",
        "--checkpoint",
        p(&ck),
        "--data",
        p(&csv),
        "--future",
        "3",
    ]);
    assert!(err.contains("forecast: 3 steps past row 60"), "{err}");
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows[0], "year,row,level,pred_level");
    assert_eq!(rows.len(), 1 + 60 + 3);
    assert!(
        rows[1].starts_with("1900,1,") && rows[1].ends_with(','),
        "{}",
        rows[1]
    );
    let future: Vec<f64> = rows[61..]
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let c: Vec<&str> = r.split(',').collect();
            assert_eq!(c[0], (1960 + i).to_string(), "{r}");
            assert_eq!(c[2], "", "no actual value past the end: {r}");
            c[3].parse().unwrap_or_else(|e| panic!("{r}: {e}"))
        })
        .collect();
    // Append the forecasts one by one, with a placeholder target row, and
    // predict the last window: the same values.
    let mut text = std::fs::read_to_string(&csv).unwrap_or_else(|e| panic!("{e}"));
    for (i, f) in future.iter().enumerate() {
        let ext = d.join("ext.csv");
        std::fs::write(&ext, format!("{text}{},0\n", 1960 + i)).unwrap_or_else(|e| panic!("{e}"));
        let (out, _) = ok(&["predict", "--checkpoint", p(&ck), "--data", p(&ext)]);
        let last = out.lines().last().unwrap_or_default();
        let pred: f64 = last
            .rsplit(',')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{last}"));
        assert!(
            (pred - f).abs() <= 1e-6 * f.abs().max(1.0),
            "step {i}: {pred} vs {f}"
        );
        text += &format!("{},{f}\n", 1960 + i);
    }
    // A feature that is neither the target nor a time index.
    let two = d.join("two.csv");
    let mut s = String::from("year,x,level\n");
    for i in 0..60 {
        s += &format!(
            "{},{},{}\n",
            1900 + i,
            (i as f64).cos(),
            (i as f64 * 0.4).sin()
        );
    }
    std::fs::write(&two, s).unwrap_or_else(|e| panic!("{e}"));
    let ck2 = d.join("two.st");
    let mut args = vec![
        "train",
        "--data",
        p(&two),
        "--steps",
        "2",
        "--batch",
        "8",
        "--checkpoint",
        p(&ck2),
    ];
    args.extend(SMALL);
    args.push("3");
    ok(&args);
    refused(
        &[
            "predict",
            "--checkpoint",
            p(&ck2),
            "--data",
            p(&two),
            "--future",
            "2",
        ],
        &["`x`", "--features level"],
    );
}

/// `predict` selects the checkpoint's columns by name: a CSV with its
/// columns in another order, or with one more numeric column, gives the
/// same predictions; an absurd `--future` is refused before anything is
/// allocated (it aborted on a failed allocation).
#[test]
fn predict_selects_the_checkpoint_columns_and_sizes_the_future() {
    let d = TempDir::new("columns");
    let (csv, ck) = (d.join("s.csv"), d.join("s.st"));
    let mut text = String::from("year,aux,level\n");
    for i in 0..60 {
        let t = i as f64;
        text += &format!(
            "{},{},{}\n",
            1900 + i,
            (t * 0.3).cos(),
            10.0 + (t * 0.45).sin()
        );
    }
    std::fs::write(&csv, &text).unwrap_or_else(|e| panic!("{e}"));
    let mut args = vec!["train", "--data", p(&csv), "--steps", "2", "--batch", "4"];
    args.extend(["--checkpoint", p(&ck)]);
    args.extend(SMALL);
    args.push("1");
    ok(&args);
    let predict = |data: &Path| ok(&["predict", "--checkpoint", p(&ck), "--data", p(data)]).0;
    let want = predict(&csv);
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
    let reordered = d.join("reordered.csv");
    let moved: String = rows
        .iter()
        .map(|r| format!("{},{},{}\n", r[2], r[0], r[1]))
        .collect();
    std::fs::write(&reordered, moved).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(predict(&reordered), want, "columns in another order");
    let extra = d.join("extra.csv");
    let more: String = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let x = if i == 0 {
                "other".into()
            } else {
                ((i * 7) % 5).to_string()
            };
            format!("{},{x}\n", r.join(","))
        })
        .collect();
    std::fs::write(&extra, more).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(predict(&extra), want, "one more numeric column");

    // Too few rows for one window: said plainly, in the checkpoint's terms.
    let short = d.join("short.csv");
    std::fs::write(&short, "year,aux,level\n1,2,3\n2,3,4\n3,4,5\n4,5,6\n")
        .unwrap_or_else(|e| panic!("{e}"));
    for split in ["all", "train", "val"] {
        refused(
            &[
                "predict",
                "--checkpoint",
                p(&ck),
                "--data",
                p(&short),
                "--split",
                split,
            ],
            &[
                "short.csv: 4 rows, too few to predict",
                "--seq-len 8",
                "(9 rows)",
            ],
        );
    }

    let huge = u64::MAX.to_string();
    for n in ["100000000000", huge.as_str()] {
        refused(
            &[
                "predict",
                "--checkpoint",
                p(&ck),
                "--data",
                p(&csv),
                "--future",
                n,
            ],
            &["--future", "host budget"],
        );
    }
}
