//! `lstm-wgpu train | generate | predict` end to end, through the binary:
//! losses fall on every built-in dataset, resume equals an uninterrupted
//! run bit for bit, and bad checkpoints or flags give clear errors.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_lstm-wgpu");

#[path = "common/final_line.rs"]
mod final_line;
#[path = "common/tempdir.rs"]
mod tempdir;

use final_line::final_line;
use tempdir::TempDir;

fn tmp(tag: &str) -> TempDir {
    TempDir::new(&format!("train-{tag}"))
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

/// A 6-step run equals one stopped after 3 steps and resumed: every
/// checkpoint tensor (weights, running statistics, optimizer state,
/// counters) bit for bit, and the metrics. Returns the directory of the
/// runs (`a`: whole, `b` and `c`: stopped and resumed).
fn check_resume(tag: &str, common: &[&str]) -> TempDir {
    let d = tmp(tag);
    let (a, b, c) = (d.join("a.st"), d.join("b.st"), d.join("c.st"));
    let (ma, mb) = (d.join("a.jsonl"), d.join("b.jsonl"));
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
    let (ta, tc) = (tensors(&a), tensors(&c));
    assert_eq!(
        ta.iter().map(|t| &t.0).collect::<Vec<_>>(),
        tc.iter().map(|t| &t.0).collect::<Vec<_>>(),
        "{tag}: tensor names"
    );
    for (x, y) in ta.iter().zip(&tc) {
        assert!(x == y, "{tag}: resumed run ends elsewhere in `{}`", x.0);
    }
    assert_eq!(losses(&ma), losses(&mb), "{tag}");
    d
}

#[test]
fn resume_equals_uninterrupted() {
    check_resume(
        "resume",
        &[
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
        ],
    );
}

/// `--hist-every` is stored: the resumed half, not given it again, writes
/// the uninterrupted run's histogram lines byte for byte (steps 2, 4, 6
/// around a stop at 3).
#[test]
fn resume_keeps_histograms() {
    let common = [
        "--hidden",
        "16",
        "--batch",
        "4",
        "--seq-len",
        "8",
        "--val-every",
        "3",
        "--no-progress",
        "--hist-every",
        "2",
    ];
    let d = check_resume("resume-hist", &common);
    let hist = |f: &str| -> Vec<String> {
        let text = std::fs::read_to_string(d.join(f)).unwrap_or_else(|e| panic!("{e}"));
        let lines = text.lines().filter(|l| l.contains("\"histograms\""));
        lines.map(String::from).collect()
    };
    let (a, b) = (hist("a.jsonl"), hist("b.jsonl"));
    assert_eq!(a.len(), 3);
    assert_eq!(a, b);
}

/// The copy task's validations report the recall accuracy (a share in
/// [0, 1]); the final line names the last one and the one at the best
/// validation loss, and a resumed run reports the same as an
/// uninterrupted one.
#[test]
fn copy_reports_recall_accuracy() {
    let common = [
        "--dataset",
        "copy",
        "--hidden",
        "16",
        "--batch",
        "4",
        "--seq-len",
        "12",
        "--val-every",
        "2",
        "--no-progress",
    ];
    let d = check_resume("resume-copy", &common);
    let recalls = |f: &str| -> Vec<(f64, f64)> {
        let text = std::fs::read_to_string(d.join(f)).unwrap_or_else(|e| panic!("{e}"));
        let field = |l: &str, k: &str| -> f64 {
            let i = l.find(k).unwrap_or_else(|| panic!("{k} in {l}")) + k.len();
            let rest = &l[i..];
            let end = rest.find([',', '}']).unwrap_or(rest.len());
            rest[..end].parse().unwrap_or_else(|e| panic!("{l}: {e}"))
        };
        text.lines()
            .filter(|l| l.contains("\"val_loss\""))
            .map(|l| (field(l, "\"val_loss\":"), field(l, "\"val_recall_acc\":")))
            .collect()
    };
    let (a, b) = (recalls("a.jsonl"), recalls("b.jsonl"));
    assert_eq!(a.len(), 3, "{a:?}");
    assert_eq!(a, b);
    assert!(a.iter().all(|v| (0.0..=1.0).contains(&v.1)), "{a:?}");
    // The final line of a fresh run of the same settings.
    let mut args = vec!["train", "--steps", "6"];
    args.extend(common);
    let line = ok(&args);
    let word = |k: &str| -> f64 {
        let w: Vec<&str> = line.split_whitespace().collect();
        let i = w
            .iter()
            .position(|x| *x == k)
            .unwrap_or_else(|| panic!("{k}: {line}"));
        w[i + 1].parse().unwrap_or_else(|e| panic!("{line}: {e}"))
    };
    let best = a.iter().fold(a[0], |m, v| if v.0 < m.0 { *v } else { m });
    assert!((word("val_recall_acc") - a[2].1).abs() < 1e-5, "{line}");
    assert!((word("best_recall_acc") - best.1).abs() < 1e-5, "{line}");
}

#[test]
fn resume_equals_uninterrupted_with_batch_norm() {
    // Running statistics and num_batches_tracked travel in the checkpoint;
    // validation runs in eval mode between the steps.
    check_resume(
        "resume-bn",
        &[
            "--dataset",
            "sine",
            "--norm",
            "step-batch",
            "--norm-last",
            "--layers",
            "2",
            "--hidden",
            "32",
            "--batch",
            "4",
            "--seq-len",
            "8",
            "--val-every",
            "2",
            "--no-progress",
        ],
    );
}

#[test]
fn resume_equals_uninterrupted_with_dropout() {
    // Step k's masks come from (seed, k), so the resumed half draws the
    // masks the uninterrupted run draws.
    check_resume(
        "resume-dropout",
        &[
            "--dropout",
            "0.2",
            "--residual",
            "--layers",
            "3",
            "--init-whh",
            "orthogonal",
            "--init-wih",
            "xavier",
            "--forget-bias",
            "1",
            "--seed",
            "5",
            "--hidden",
            "32",
            "--batch",
            "4",
            "--seq-len",
            "8",
            "--val-every",
            "3",
            "--no-progress",
        ],
    );
}

#[test]
fn resume_keeps_f16_mixed_and_its_scaler() {
    // The resumed half gets no --precision or --loss-scale: both come from
    // the checkpoint. The initial scale 2^26 overflows the f16 gate
    // gradients of steps 1 and 2, so the scaler's state (scale, good steps,
    // skipped) has moved by step 3 and a resumed run that restarted it, or
    // ran in f32, would end elsewhere (check_resume compares every tensor,
    // the scaler's too).
    let d = check_resume(
        "resume-f16",
        &[
            "--precision",
            "f16-mixed",
            "--loss-scale",
            "67108864",
            "--hidden",
            "32",
            "--batch",
            "4",
            "--seq-len",
            "8",
            "--no-progress",
        ],
    );
    let m = std::fs::read_to_string(d.join("b.jsonl")).unwrap_or_else(|e| panic!("{e}"));
    let steps: Vec<_> = m.lines().filter(|l| l.contains("\"loss\"")).collect();
    assert_eq!(steps.len(), 6, "{m}");
    assert!(steps.iter().all(|l| l.contains("\"loss_scale\":")), "{m}");
    assert!(steps[0].contains("\"skipped\":true"), "{m}");
    assert!(steps[5].contains("\"skipped\":false"), "{m}");
}

/// Metrics lines without the throughput.
fn metrics_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
    text.lines()
        .map(|l| match l.find(",\"tokens_per_s\"") {
            Some(i) => l[..i].to_string(),
            None => l.to_string(),
        })
        .collect()
}

/// Stopped between validations (`--stop-after 6`, `--val-every 4`) and
/// resumed with `--patience` and `--checkpoint`, a run ends as the
/// uninterrupted one: the final line (but time and tokens/s) and so
/// best_val, the last and the `.best` checkpoints (every tensor bit for
/// bit, and the metadata: settings, best_val, precision) and the metrics.
#[test]
fn resume_between_validations_equals_uninterrupted() {
    let d = tmp("resume-between");
    let (a, b) = (d.join("a.st"), d.join("b.st"));
    let (ma, mb) = (d.join("a.jsonl"), d.join("b.jsonl"));
    let common = [
        "--steps",
        "14",
        "--val-every",
        "4",
        "--patience",
        "3",
        "--hidden",
        "32",
        "--batch",
        "4",
        "--seq-len",
        "8",
        "--no-progress",
    ];
    let full = ok(&[
        &["train", "--checkpoint", p(&a), "--metrics", p(&ma)][..],
        &common,
    ]
    .concat());
    ok(&[
        &["train", "--stop-after", "6", "--checkpoint", p(&b)][..],
        &["--metrics", p(&mb)],
        &common,
    ]
    .concat());
    let resumed = ok(&[
        "train",
        "--resume",
        p(&b),
        "--checkpoint",
        p(&b),
        "--metrics",
        p(&mb),
        "--no-progress",
    ]);
    assert_eq!(final_line(&full), final_line(&resumed));
    assert!(!final_line(&full).contains("best_val -"), "{full}");
    for (x, y) in [
        (a.clone(), b.clone()),
        (d.join("a.st.best"), d.join("b.st.best")),
    ] {
        assert!(tensors(&x) == tensors(&y), "{} differs", y.display());
        let meta = |f: &Path| {
            lstm_wgpu::io::TensorFile::read(f)
                .unwrap_or_else(|e| panic!("{e}"))
                .metadata
        };
        assert_eq!(meta(&x), meta(&y), "{}", y.display());
    }
    assert_eq!(metrics_lines(&ma), metrics_lines(&mb));
}

#[test]
fn norm_variants_loss_falls() {
    let d = tmp("norms");
    // H = 64 for the LayerNorm cell: at H = 32 its kernel is ~10x slower
    // per step on lavapipe (as the plain cell below 32, issue #5).
    for (norm, hidden, last) in [
        ("layer", "32", true),
        ("layer-cell", "64", false),
        ("batch", "32", false),
        ("step-batch", "32", false),
        ("recurrent-batch", "32", false),
    ] {
        let m = d.join(format!("{norm}.jsonl"));
        let ck = d.join(format!("{norm}.st"));
        let mut args = vec![
            "train",
            "--dataset",
            "sine",
            "--norm",
            norm,
            "--layers",
            "2",
            "--hidden",
            hidden,
            "--batch",
            "8",
            "--seq-len",
            "12",
            "--lr",
            "0.01",
            "--no-progress",
        ];
        if last {
            args.push("--norm-last");
        }
        let mut run_args = args.clone();
        run_args.extend([
            "--steps",
            "40",
            "--val-every",
            "40",
            "--metrics",
            p(&m),
            "--checkpoint",
            p(&ck),
        ]);
        ok(&run_args);
        let l = losses(&m);
        let n = l.len();
        assert_eq!(n, 40, "{norm}");
        let head: f64 = l[..5].iter().sum::<f64>() / 5.0;
        let tail: f64 = l[n - 5..].iter().sum::<f64>() / 5.0;
        assert!(tail < 0.5 * head, "{norm}: loss {head:.4} -> {tail:.4}");
        // The variant's tensors are in the checkpoint with PyTorch names.
        let names: Vec<String> = tensors(&ck).into_iter().map(|t| t.0).collect();
        let (want, absent): (&[&str], &str) = match norm {
            "layer" => (
                &["lstm.layer_norms.1.weight", "lstm.layer_norms.0.bias"],
                "-",
            ),
            "layer-cell" => (&["lstm.ln_ih_l0.weight", "lstm.ln_c_l1.bias"], "-"),
            "batch" => (
                &[
                    "lstm.batch_norms.0.running_var",
                    "lstm.batch_norms.0.num_batches_tracked",
                ],
                "lstm.batch_norms.1.weight",
            ),
            "step-batch" => (
                &["lstm.step_norms.0.running_mean", "lstm.step_norms.0.bias"],
                "lstm.step_norms.1.weight",
            ),
            _ => (&["lstm.bn_hh_l1.running_var", "lstm.bn_c_l0.bias"], "-"),
        };
        for w in want {
            assert!(names.iter().any(|n| n == w), "{norm}: no {w} in {names:?}");
        }
        assert!(!names.iter().any(|n| n == absent), "{norm}: {absent}");
        // --init takes the variant's tensors back (statistics included);
        // a plain model's file lacks them.
        let mut again = args.clone();
        again.extend(["--steps", "1", "--init", p(&ck)]);
        ok(&again);
        if norm == "layer" {
            let pl = d.join("plain.st");
            let mut plain = vec!["train", "--steps", "1", "--hidden", "32"];
            plain.extend(["--dataset", "sine", "--layers", "2", "--no-progress"]);
            plain.extend(["--checkpoint", p(&pl)]);
            ok(&plain);
            let mut bad = args.clone();
            bad.extend(["--steps", "1", "--init", p(&pl)]);
            let o = run(&bad);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{err}");
            assert!(err.contains("lstm.layer_norms.0.weight"), "{err}");
        }
    }
}

#[test]
fn variable_length_adding_problem() {
    let d = tmp("varlen");
    let m = d.join("m.jsonl");
    let mut args = vec![
        "train",
        "--dataset",
        "adding",
        "--seq-len",
        "10",
        "--min-len",
        "4",
        "--steps",
        "40",
        "--metrics",
        p(&m),
    ];
    args.extend(SMALL);
    args.push("3");
    ok(&args);
    let l = losses(&m);
    let n = l.len();
    let head: f64 = l[..5].iter().sum::<f64>() / 5.0;
    let tail: f64 = l[n - 5..].iter().sum::<f64>() / 5.0;
    assert!(tail < 0.95 * head, "loss {head:.4} -> {tail:.4}");
}

/// Trains a small text model for `steps` steps into checkpoint `ck`.
fn text_checkpoint(ck: &Path, steps: &str) {
    let args = [
        "--hidden",
        "32",
        "--batch",
        "2",
        "--seq-len",
        "4",
        "--no-progress",
    ];
    ok(&[
        &["train", "--steps", steps, "--checkpoint", p(ck)][..],
        &args,
    ]
    .concat());
}

#[test]
fn bad_checkpoints_and_flags() {
    let d = tmp("bad");
    let ck = d.join("ck.st");
    text_checkpoint(&ck, "2");
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
    for (args, want) in [
        (
            vec!["train", "--dropout", "1.5", "--steps", "1"],
            "--dropout 1.5",
        ),
        (
            vec!["train", "--dropout=-0.1", "--steps", "1"],
            "--dropout -0.1",
        ),
        (
            vec!["train", "--norm", "group", "--steps", "1"],
            "--norm group",
        ),
        (
            vec!["train", "--init-whh", "eye", "--steps", "1"],
            "--init-whh eye",
        ),
        (
            vec!["train", "--init-wih", "kaiming", "--steps", "1"],
            "--init-wih kaiming",
        ),
        (
            vec!["train", "--forget-bias", "inf", "--steps", "1"],
            "--forget-bias",
        ),
        (
            vec!["train", "--residual", "--layers", "1", "--steps", "1"],
            "--residual",
        ),
        (
            vec![
                "train",
                "--norm",
                "step-batch",
                "--norm-t-max",
                "0",
                "--steps",
                "1",
            ],
            "--norm-t-max",
        ),
        (vec!["train", "--min-len", "3", "--steps", "1"], "--min-len"),
        (
            vec![
                "train",
                "--dataset",
                "adding",
                "--seq-len",
                "10",
                "--min-len",
                "11",
                "--steps",
                "1",
            ],
            "--min-len 11",
        ),
        // Per-step BatchNorm in train mode needs two sequences per step.
        (
            vec![
                "train",
                "--norm",
                "step-batch",
                "--batch",
                "1",
                "--hidden",
                "32",
                "--seq-len",
                "4",
                "--steps",
                "1",
            ],
            "more than 1 value",
        ),
        (
            vec!["train", "--optimizer", "rmsprop", "--steps", "1"],
            "rmsprop",
        ),
        (
            vec![
                "train",
                "--task",
                "series",
                "--dataset",
                "text",
                "--steps",
                "1",
            ],
            "--dataset text",
        ),
        (
            vec!["train", "--val-fraction", "1.5", "--steps", "1"],
            "--val-fraction",
        ),
        // Huge numbers print short, not in 300 digits.
        (
            vec!["train", "--val-fraction", "1e300", "--steps", "1"],
            "--val-fraction 1e300: expected",
        ),
        (
            vec!["train", "--lr=-1e300", "--steps", "1"],
            "--lr -1e300: expected",
        ),
        // Schedule values are checked whatever the schedule, and a flag
        // of another schedule is refused rather than ignored.
        (
            vec!["train", "--gamma", "nan", "--steps", "1"],
            "--gamma NaN: expected a finite number >= 0",
        ),
        (
            vec!["train", "--step-size", "0", "--steps", "1"],
            "--step-size must be at least 1",
        ),
        (
            vec![
                "train",
                "--gamma",
                "0.5",
                "--schedule",
                "cosine",
                "--steps",
                "1",
            ],
            "--gamma applies to --schedule step, but the schedule is cosine",
        ),
        (
            vec!["train", "--step-size", "10", "--steps", "1"],
            "--step-size applies to --schedule step, but the schedule is constant",
        ),
        (
            vec![
                "train",
                "--warmup",
                "2",
                "--schedule",
                "step",
                "--steps",
                "1",
            ],
            "--warmup applies to --schedule cosine, but the schedule is step",
        ),
        (
            vec!["train", "--loss-scale", "x", "--steps", "1"],
            "bad loss scale `x`",
        ),
        (
            vec!["generate", "--checkpoint", p(&ck), "--prompt", "\u{2603}"],
            "U+2603",
        ),
    ] {
        let o = run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// generate streams its text: the first bytes arrive while it still runs
/// (it held all of it until the end), a closed pipe ends it quietly, and a
/// --length past the host budget is refused before anything runs.
#[test]
fn generate_streams_and_sizes_its_length() {
    use std::io::Read;
    let d = tmp("stream");
    let ck = d.join("text.st");
    text_checkpoint(&ck, "1");
    // 100,000 characters take minutes on lavapipe.
    let mut child = Command::new(BIN)
        .args(["generate", "--checkpoint", p(&ck), "--length", "100000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut first = [0u8; 100];
    let mut stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    stdout
        .read_exact(&mut first)
        .unwrap_or_else(|e| panic!("{e}"));
    let running = child.try_wait().unwrap_or_else(|e| panic!("{e}")).is_none();
    drop(stdout);
    let o = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(running, "the first 100 bytes came only at the end");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let huge = u64::MAX.to_string();
    let o = run(&["generate", "--checkpoint", p(&ck), "--length", &huge]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("--length {huge}")) && err.contains("host budget"),
        "{err}"
    );
}

#[test]
fn generate_and_predict() {
    let d = tmp("gen");
    let ck = d.join("text.st");
    text_checkpoint(&ck, "3");
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
    // A BatchNorm model generates one sequence at a time: eval mode, with
    // the running statistics from the checkpoint.
    let bck = d.join("bn.st");
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
        "--norm",
        "recurrent-batch",
        "--dropout",
        "0.3",
        "--checkpoint",
        p(&bck),
        "--no-progress",
    ]);
    let g = ok(&[
        "generate",
        "--checkpoint",
        p(&bck),
        "--prompt",
        "The ",
        "--length",
        "10",
    ]);
    assert_eq!(g.trim_end_matches('\n').chars().count(), 14, "{g:?}");
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
    assert_eq!(rows[0], "window,y_t+1,pred_y_t+1");
    assert!(rows.len() > 100, "{} rows", rows.len());
    assert!(rows[1..].iter().all(|r| {
        r.split(',')
            .nth(2)
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(f64::is_finite)
    }));
}

/// `--dump-data` writes the exact data of the run (the generated text, the
/// series as CSV, the copy and adding batches of every step as safetensors)
/// without training, and an unwritable path is a one-line error, exit 2.
#[test]
fn dump_data_writes_the_run_data() {
    use lstm_wgpu::data::{self, AddingTask, CopyTask, CsvTable, Split};
    let d = tmp("dump");
    let (text, csv, copy, adding) = (
        d.join("text.txt"),
        d.join("mg.csv"),
        d.join("copy.st"),
        d.join("adding.st"),
    );
    ok(&["train", "--seed", "3", "--dump-data", p(&text)]);
    let got = std::fs::read_to_string(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, data::generated_text(data::DEFAULT_TEXT_BYTES, 3));

    ok(&["train", "--dataset", "mackey-glass", "--dump-data", p(&csv)]);
    let table = CsvTable::read(&csv)
        .and_then(|t| t.select(None, None))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(table.feature_names, ["mackey-glass"]);
    assert_eq!(
        table.target,
        data::mackey_glass(data::DEFAULT_SERIES_LEN, 0),
        "the CSV must give back the series bit for bit"
    );

    let common = ["--batch", "3", "--steps", "5", "--seed", "7"];
    ok(&[
        &["train", "--dataset", "copy", "--seq-len", "12"],
        &common[..],
        &["--dump-data", p(&copy)],
    ]
    .concat());
    let f = lstm_wgpu::io::TensorFile::read(&copy).unwrap_or_else(|e| panic!("{e}"));
    let task = CopyTask::new(3, 6, 8, 7).unwrap_or_else(|e| panic!("{e}"));
    for (split, name, n) in [(Split::Train, "train", 5), (Split::Val, "val", 4)] {
        let (shape, x) = f
            .ints(&format!("{name}.inputs"))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no {name}.inputs"));
        let (_, y) = f
            .ints(&format!("{name}.targets"))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no {name}.targets"));
        assert_eq!(shape, [n, 12, 3]);
        let b = task
            .batch(split, n as u64 - 1, 3)
            .unwrap_or_else(|e| panic!("{e}"));
        let last = (n - 1) * 36..n * 36;
        let ids = |v: &[u32]| v.iter().map(|&i| i as i64).collect::<Vec<_>>();
        assert_eq!(x[last.clone()], ids(&b.inputs)[..], "{name}");
        assert_eq!(y[last], ids(&b.targets)[..], "{name}");
    }

    ok(&[
        &[
            "train",
            "--dataset",
            "adding",
            "--seq-len",
            "10",
            "--min-len",
            "4",
        ],
        &common[..],
        &["--dump-data", p(&adding)],
    ]
    .concat());
    let f = lstm_wgpu::io::TensorFile::read(&adding).unwrap_or_else(|e| panic!("{e}"));
    let x = f
        .require_f32("train.inputs")
        .unwrap_or_else(|e| panic!("{e}"));
    let (lshape, lens) = f
        .ints("train.lengths")
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no train.lengths"));
    assert_eq!(
        (x.shape.as_slice(), lshape.as_slice()),
        (&[5, 10, 3, 2][..], &[5, 3][..])
    );
    let task = AddingTask::new(10, 7).unwrap_or_else(|e| panic!("{e}"));
    let (b, l) = task
        .batch_lengths(Split::Train, 2, 3, 4)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(x.data[2 * 60..3 * 60], b.inputs[..]);
    assert_eq!(
        lens[6..9],
        l.iter().map(|&v| v as i64).collect::<Vec<_>>()[..]
    );

    let bad = d.join("no-such-dir").join("x.csv");
    let o = run(&["train", "--dataset", "sine", "--dump-data", p(&bad)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.starts_with("error: ") && err.contains(p(&bad)), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!bad.exists());
}

/// `--seq-len 0` is named as itself, not as `--norm-t-max` (whose
/// default it is).
#[test]
fn zero_seq_len_names_seq_len() {
    for task in [["--dataset", "sine"], ["--dataset", "text"]] {
        let mut args = vec!["train", "--steps", "1", "--seq-len", "0", "--no-progress"];
        args.extend(task);
        let o = run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
            .collect();
        assert_eq!(o.status.code(), Some(2), "{lines:?}");
        assert_eq!(lines, ["error: --seq-len must be at least 1"], "{args:?}");
    }
}
