//! `lstm-wgpu train | generate | predict` end to end, through the binary:
//! losses fall on every built-in dataset, resume equals an uninterrupted
//! run bit for bit, and bad checkpoints or flags give clear errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_lstm-wgpu");

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lstm-wgpu-train-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    d
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 temp path"))
}

/// Training losses from a metrics file.
fn losses(metrics: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(metrics).unwrap_or_else(|e| panic!("{e}"));
    text.lines()
        .filter(|l| l.contains("\"loss\""))
        .map(|l| {
            let i = l.find("\"loss\":").unwrap_or_else(|| panic!("{l}")) + 7;
            let rest = &l[i..];
            rest[..rest.find(',').unwrap_or(rest.len())]
                .parse()
                .unwrap_or_else(|e| panic!("{l}: {e}"))
        })
        .collect()
}

const SMALL: [&str; 10] = [
    "--hidden",
    "32",
    "--layers",
    "1",
    "--batch",
    "8",
    "--no-progress",
    "--val-every",
    "1000",
    "--seed",
];

#[test]
fn loss_falls_on_every_builtin_dataset() {
    let d = tmp("datasets");
    for (ds, steps, seq, factor) in [
        ("text", "40", "16", 0.85),
        ("copy", "40", "12", 0.95),
        ("sine", "40", "12", 0.5),
        ("mackey-glass", "40", "12", 0.5),
        ("adding", "40", "10", 0.95),
    ] {
        let m = d.join(format!("{ds}.jsonl"));
        let mut args = vec![
            "train",
            "--dataset",
            ds,
            "--steps",
            steps,
            "--seq-len",
            seq,
            "--metrics",
            p(&m),
        ];
        args.extend(SMALL);
        args.push("3");
        ok(&args);
        let l = losses(&m);
        let n = l.len();
        assert_eq!(
            n,
            steps.parse::<usize>().unwrap_or(0),
            "{ds}: one metrics line per step"
        );
        let head: f64 = l[..5].iter().sum::<f64>() / 5.0;
        let tail: f64 = l[n - 5..].iter().sum::<f64>() / 5.0;
        assert!(tail < factor * head, "{ds}: loss {head:.4} -> {tail:.4}");
    }
}

fn tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{e}"));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{e}"));
    let mut v: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.data().to_vec()))
        .collect();
    v.sort();
    v
}

#[test]
fn resume_equals_uninterrupted() {
    let d = tmp("resume");
    let (a, b, c) = (d.join("a.st"), d.join("b.st"), d.join("c.st"));
    let (ma, mb) = (d.join("a.jsonl"), d.join("b.jsonl"));
    let common = [
        "--hidden",
        "32",
        "--batch",
        "4",
        "--seq-len",
        "8",
        "--val-every",
        "3",
        "--no-progress",
        "--optimizer",
        "adamw",
        "--schedule",
        "cosine",
        "--warmup",
        "2",
        "--clip-norm",
        "0.5",
    ];
    let mut full = vec![
        "train",
        "--steps",
        "6",
        "--checkpoint",
        p(&a),
        "--metrics",
        p(&ma),
    ];
    full.extend(common);
    ok(&full);
    let mut half = vec![
        "train",
        "--steps",
        "6",
        "--stop-after",
        "3",
        "--checkpoint",
        p(&b),
        "--metrics",
        p(&mb),
    ];
    half.extend(common);
    ok(&half);
    ok(&[
        "train",
        "--resume",
        p(&b),
        "--checkpoint",
        p(&c),
        "--metrics",
        p(&mb),
        "--no-progress",
    ]);
    assert_eq!(
        tensors(&a),
        tensors(&c),
        "resumed run ends elsewhere than the uninterrupted one"
    );
    assert_eq!(losses(&ma), losses(&mb));
}

#[test]
fn bad_checkpoints_and_flags() {
    let d = tmp("bad");
    let ck = d.join("ck.st");
    ok(&[
        "train",
        "--steps",
        "2",
        "--hidden",
        "32",
        "--batch",
        "2",
        "--seq-len",
        "4",
        "--checkpoint",
        p(&ck),
        "--no-progress",
    ]);
    let bytes = std::fs::read(&ck).unwrap_or_else(|e| panic!("{e}"));
    let cut = d.join("cut.st");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap_or_else(|e| panic!("{e}"));
    let junk = d.join("junk.st");
    std::fs::write(&junk, b"not a checkpoint at all").unwrap_or_else(|e| panic!("{e}"));
    for f in [&cut, &junk] {
        let o = run(&["train", "--resume", p(f), "--steps", "4", "--no-progress"]);
        assert_eq!(o.status.code(), Some(2));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(p(f)), "error must name the file: {err}");
        let o = run(&["generate", "--checkpoint", p(f)]);
        assert_eq!(o.status.code(), Some(2));
    }
    for args in [
        vec!["train", "--dropout", "0.3", "--steps", "1"],
        vec!["train", "--optimizer", "rmsprop", "--steps", "1"],
        vec![
            "train",
            "--task",
            "series",
            "--dataset",
            "text",
            "--steps",
            "1",
        ],
        vec!["train", "--val-fraction", "1.5", "--steps", "1"],
        vec!["generate", "--checkpoint", p(&ck), "--prompt", "\u{2603}"],
    ] {
        let o = run(&args);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn generate_and_predict() {
    let d = tmp("gen");
    let ck = d.join("text.st");
    ok(&[
        "train",
        "--steps",
        "3",
        "--hidden",
        "32",
        "--batch",
        "2",
        "--seq-len",
        "4",
        "--checkpoint",
        p(&ck),
        "--no-progress",
    ]);
    let out = ok(&[
        "generate",
        "--checkpoint",
        p(&ck),
        "--prompt",
        "The ",
        "--length",
        "25",
        "--top-k",
        "3",
        "--seed",
        "1",
    ]);
    let line = out.trim_end_matches('\n');
    assert!(line.starts_with("The "), "{line}");
    assert_eq!(line.chars().count(), 4 + 25, "{line:?}");
    assert_eq!(
        out,
        ok(&[
            "generate",
            "--checkpoint",
            p(&ck),
            "--prompt",
            "The ",
            "--length",
            "25",
            "--top-k",
            "3",
            "--seed",
            "1"
        ]),
        "same seed, same text"
    );

    let csv = d.join("s.csv");
    let mut text = String::from("a,b,y\n");
    for i in 0..120 {
        let t = i as f64 * 0.3;
        text += &format!("{},{},{}\n", t.sin(), t.cos(), (t + 0.3).sin());
    }
    std::fs::write(&csv, text).unwrap_or_else(|e| panic!("{e}"));
    let sck = d.join("series.st");
    ok(&[
        "train",
        "--task",
        "series",
        "--data",
        p(&csv),
        "--target",
        "y",
        "--seq-len",
        "10",
        "--steps",
        "5",
        "--hidden",
        "32",
        "--batch",
        "4",
        "--checkpoint",
        p(&sck),
        "--no-progress",
    ]);
    let pred = ok(&["predict", "--checkpoint", p(&sck), "--data", p(&csv)]);
    let rows: Vec<&str> = pred.lines().collect();
    assert_eq!(rows[0], "window,pred_y_t+1");
    assert!(rows.len() > 100, "{} rows", rows.len());
    assert!(rows[1..].iter().all(|r| {
        r.split(',')
            .nth(1)
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(f64::is_finite)
    }));
}
