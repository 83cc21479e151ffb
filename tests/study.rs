//! `train --test-fraction` and `study`: the test split's rows and windows,
//! study files refused before anything is written, a study's runs equal
//! to `train` runs of their settings, and an interrupted study resuming
//! to the same table.

#[path = "common/cli.rs"]
mod cli;
#[path = "common/final_line.rs"]
mod final_line;
#[path = "common/tempdir.rs"]
mod tempdir;

use cli::{BIN, ok, run, s, stderr_lines};
use final_line::final_line;
use tempdir::TempDir;

const SUNSPOTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/sunspots.csv");

/// The small run every test here trains.
const SMALL: [&str; 10] = [
    "--seq-len",
    "8",
    "--hidden",
    "8",
    "--steps",
    "20",
    "--val-every",
    "10",
    "--batch",
    "8",
];

/// The value after `key` in a whitespace-separated line.
fn field(line: &str, key: &str) -> String {
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == key {
            return it.next().unwrap_or_default().to_string();
        }
    }
    panic!("no {key} in {line}")
}

fn num(line: &str, key: &str) -> f64 {
    let v = field(line, key);
    v.parse()
        .unwrap_or_else(|_| panic!("{key} {v}: not a number in {line}"))
}

/// The sunspot numbers.
fn sunspots() -> Vec<f64> {
    let t = std::fs::read_to_string(SUNSPOTS).unwrap_or_else(|e| panic!("{e}"));
    t.lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).and_then(|v| v.parse().ok()).unwrap())
        .collect()
}

/// Exit 2 with one `error:` line holding `want`.
fn refused(args: &[&str], want: &str) {
    let o = run(args);
    let lines = stderr_lines(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {lines:?}");
    assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(want),
        "`{want}` missing from {lines:?}"
    );
}

#[test]
fn test_split_is_the_last_rows_and_every_window_is_scored() {
    let y = sunspots();
    let n = y.len(); // 309: 31 test rows, then 28 of the 278 left validate.
    let n_test = (n as f64 * 0.1).round() as usize;
    for horizon in ["1", "2"] {
        let mut args = vec!["train", "--data", SUNSPOTS, "--no-progress"];
        args.extend(SMALL);
        args.extend([
            "--test-fraction",
            "0.1",
            "--horizon",
            horizon,
            "--layers",
            "1",
        ]);
        let d = TempDir::new("test-split");
        let ck = d.join("run.st");
        args.extend(["--checkpoint", s(&ck)]);
        let line = final_line(&ok(&args));
        let k: usize = horizon.parse().unwrap();
        // predict scores the same windows.
        let o = run(&[
            "predict",
            "--checkpoint",
            s(&ck),
            "--data",
            SUNSPOTS,
            "--split",
            "test",
        ]);
        let said = stderr_lines(&o).join("\n");
        let want = format!("{} windows (test split", n_test - k + 1);
        assert!(said.contains(&want), "{said}");
        let mae: f64 = field(&said.replace(':', " "), "MAE")
            .parse()
            .unwrap_or_else(|e| panic!("{e}: {said}"));
        assert!(
            (mae - num(&line, "test_mae")).abs() < 1e-5,
            "{line}\n{said}"
        );
        assert_eq!(
            num(&line, "test_windows") as usize,
            n_test - k + 1,
            "{line}"
        );
        assert_eq!(num(&line, "val_windows") as usize, 28 - k + 1, "{line}");
        // The naive forecast over all test windows, from the CSV itself.
        let (mut abs, mut cnt) = (0.0, 0.0);
        for r0 in n - n_test..=n - k {
            for j in 0..k {
                abs += (y[r0 + j] - y[r0 - 1]).abs();
                cnt += 1.0;
            }
        }
        let naive = num(&line, "naive_test_mae");
        assert!((naive - abs / cnt).abs() < 1e-4, "{naive} vs {}", abs / cnt);
        for key in ["test_mae", "test_rmse", "best_test_mae", "best_test_rmse"] {
            assert!(num(&line, key) > 0.0, "{key}: {line}");
        }
        // Appended after the existing fields.
        assert!(line.find("vanishing").unwrap() < line.find("test_mae").unwrap());
    }
    let mut args = vec!["train", "--data", SUNSPOTS, "--no-progress"];
    args.extend(SMALL);
    let line = final_line(&ok(&args));
    assert!(!line.contains("test_"), "{line}");
    args.extend(["--test-fraction", "1"]);
    refused(&args, "--test-fraction 1: expected a value in [0, 1)");
    let n = args.len();
    args[n - 1] = "0.99";
    refused(&args, "--test-fraction 0.99");
    refused(
        &["train", "--test-fraction", "0.1", "--steps", "1"],
        "--test-fraction applies to series runs",
    );
}

/// Writes study `text` into `dir` as `name.toml`.
fn study_file(dir: &TempDir, name: &str, text: &str) -> String {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
    s(&p).to_string()
}

#[test]
fn bad_study_files_are_refused_before_any_output() {
    let d = TempDir::new("study-bad");
    let out = d.join("out");
    let base = format!("[base]\ndata = \"{SUNSPOTS}\"\nsteps = 5\n");
    for (text, want) in [
        (
            format!("seeds = []\n{base}[[variant]]\nname = \"a\"\n"),
            "`seeds` is empty",
        ),
        (
            format!("seeds = [0]\n{base}[[variant]]\nname = \"a\"\nhiden = 3\n"),
            "variant `a`: unknown field `hiden`",
        ),
        (
            format!(
                "seeds = [0]\n{base}[[variant]]\nname = \"a\"\n[[variant]]\nname = \"a\"\nlayers = 1\n"
            ),
            "variant name `a` is used twice",
        ),
        (
            format!("seeds = [0]\n{base}seed = 3\n[[variant]]\nname = \"a\"\n"),
            "[base] sets `seed`",
        ),
        (
            format!(
                "seeds = [0]\n{base}[[variant]]\nname = \"a\"\nlayers = 2\n[[variant]]\nname = \"b\"\n"
            ),
            "variants `a` and `b` train the same settings",
        ),
        (
            format!("seeds = [0]\n{base}[[variant]]\nname = \"a\"\nhidden = 0\n"),
            "variant `a` seed 0: --hidden must be at least 1",
        ),
        (
            format!("seeds = [0]\n{base}[[variant]]\nname = \"a\"\ntest-fraction = 0.95\n"),
            "--test-fraction 0.95",
        ),
    ] {
        let f = study_file(&d, "s", &text);
        refused(&["study", &f, "--out", s(&out)], want);
        assert!(!out.exists(), "{want}: the output directory was created");
    }
    refused(&["study", "--builtin", "nope"], "--builtin nope: expected");
}

/// A study of two variants × two seeds, small enough for CI.
fn tiny(dir: &TempDir) -> String {
    let text = format!(
        "seeds = [1, 2]\n[base]\ndata = \"{SUNSPOTS}\"\nseq-len = 8\nhidden = 8\nsteps = 20\n\
         val-every = 10\nbatch = 8\nhist-every = 10\n[[variant]]\nname = \"one\"\nlayers = 1\n\
         [[variant]]\nname = \"two-ln\"\nlayers = 2\nnorm = \"layer\"\n"
    );
    study_file(dir, "tiny", &text)
}

/// The CSV without its wall-time columns (the last two).
fn csv_figures(out: &std::path::Path) -> String {
    let t = std::fs::read_to_string(out.join("results.csv")).unwrap_or_else(|e| panic!("{e}"));
    t.lines()
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            c[..c.len() - 2].join(",")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn study_runs_equal_train_runs_and_resume_gives_the_same_table() {
    let d = TempDir::new("study");
    let f = tiny(&d);
    let full = d.join("full");
    let o = std::process::Command::new(BIN)
        .args(["study", &f, "--out", s(&full)])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = stderr_lines(&o);
    assert!(o.status.success(), "{err:?}");
    let md = String::from_utf8_lossy(&o.stdout).into_owned();
    for want in [
        "| one |",
        "| two-ln |",
        "| naive (last value) |",
        "test MAE (best)",
        " ± ",
    ] {
        assert!(md.contains(want), "`{want}` missing from {md}");
    }
    let names = [
        "results.md",
        "results.csv",
        "curves.svg",
        "study.toml",
        "grad_histograms.csv",
        "grad_histograms.svg",
    ];
    for n in names {
        assert!(full.join(n).is_file(), "{n} missing");
    }
    assert_eq!(
        std::fs::read_to_string(full.join("results.md")).unwrap(),
        md
    );
    // The final gradient histograms: per variant, fractions summing to 1
    // over both seeds' step-20 histograms; a line each in the SVG.
    let csv = std::fs::read_to_string(full.join("grad_histograms.csv")).unwrap();
    for v in ["one", "two-ln"] {
        let rows: Vec<Vec<&str>> = csv
            .lines()
            .filter(|l| l.starts_with(&format!("{v},")))
            .map(|l| l.split(',').collect())
            .collect();
        assert_eq!(rows.len(), 48, "{csv}");
        let total: f64 = rows.iter().map(|r| r[3].parse::<f64>().unwrap()).sum();
        assert!((total - 1.0).abs() < 1e-4, "{v}: {total}");
        assert!(rows.iter().all(|r| r[4] == "2"), "{v}: two runs pooled");
    }
    let gsvg = std::fs::read_to_string(full.join("grad_histograms.svg")).unwrap();
    assert_eq!(gsvg.matches("<polyline").count(), 2, "{gsvg}");
    // A band and a mean line per variant.
    let svg = std::fs::read_to_string(full.join("curves.svg")).unwrap();
    assert_eq!(svg.matches("<polygon").count(), 2, "{svg}");
    assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
    for r in ["one.seed1", "one.seed2", "two-ln.seed1", "two-ln.seed2"] {
        for ext in ["toml", "st", "jsonl"] {
            assert!(full.join("runs").join(format!("{r}.{ext}")).is_file());
        }
    }
    // A run of the study is `train` with its settings (and the study's
    // default test split).
    let lines: Vec<&String> = err.iter().filter(|l| l.starts_with("final:")).collect();
    assert_eq!(lines.len(), 4, "{err:?}");
    for (line, (layers, norm, seed)) in
        lines
            .iter()
            .zip([("1", "none", "1"), ("1", "none", "2"), ("2", "layer", "1")])
    {
        let mut args = vec!["train", "--data", SUNSPOTS, "--no-progress"];
        args.extend(SMALL);
        args.extend([
            "--layers",
            layers,
            "--norm",
            norm,
            "--seed",
            seed,
            "--test-fraction",
            "0.1",
        ]);
        assert_eq!(final_line(line), final_line(&ok(&args)));
    }
    // Interrupted after one run, then resumed: the same figures.
    let part = d.join("part");
    ok(&["study", &f, "--out", s(&part), "--stop-after-runs", "1"]);
    assert!(!part.join("results.csv").exists());
    assert!(part.join("runs/one.seed1.toml").is_file());
    assert!(!part.join("runs/one.seed2.toml").exists());
    let o = run(&["study", &f, "--out", s(&part)]);
    assert!(o.status.success());
    let err = stderr_lines(&o);
    assert!(
        err.iter()
            .any(|l| l.contains("one seed 1: done before, kept")),
        "{err:?}"
    );
    assert_eq!(err.iter().filter(|l| l.starts_with("final:")).count(), 3);
    assert_eq!(csv_figures(&part), csv_figures(&full));
    // Another study in the same directory is refused.
    let other = study_file(
        &d,
        "tiny",
        &std::fs::read_to_string(&f)
            .unwrap()
            .replace("[1, 2]", "[1]"),
    );
    refused(&["study", &other, "--out", s(&part)], "holds another study");
}

/// Every built-in study is a valid study: planned and checked (its data
/// loaded, every run's settings resolved) without running any.
#[test]
fn builtin_studies_are_valid() {
    let d = TempDir::new("builtins");
    for name in ["depth-norm", "regularizers", "long-memory"] {
        let out = d.join(name);
        ok(&[
            "study",
            "--builtin",
            name,
            "--out",
            s(&out),
            "--stop-after-runs",
            "0",
        ]);
        assert!(out.join("study.toml").is_file(), "{name}");
        assert!(!out.join("results.md").exists(), "{name}: no run ran");
    }
}
