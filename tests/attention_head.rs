//! The attention head (`train --head attention`) beyond its PyTorch parity
//! (`attention_parity.rs`): it trains (the loss falls on a series, dot and
//! learned scores), a batch with lengths pools each sequence as if it ran
//! alone, and the program carries it through: its settings and tensors in
//! the checkpoint, a bit-exact resume, `predict --attention-out` (and
//! `Model::predict_with_attention`), `export --to pytorch` under the
//! README module's names, and the refusals by name (`--attention-out`
//! without the head, ONNX export, `--attention` without `--head attention`,
//! text runs, changes on `--resume`). The README's PyTorch module is the
//! one the fixture script runs.

#[path = "common/cli.rs"]
mod cli;
mod common;

use cli::{assert_refused, ok, run, s, settings_of};
use common::sine_batch;
use common::tempdir::TempDir;
use lstm_wgpu::Model;
use lstm_wgpu::io::TensorFile;
use lstm_wgpu::kernels::optim::OptimConfig;
use lstm_wgpu::train::{Attention, Carry, Head, NetConfig, StepData, Trainer, init_values};
use std::path::{Path, PathBuf};

fn net(attention: Attention, hidden: usize) -> NetConfig {
    let mut n = NetConfig::new(
        Head::Regression {
            features: 1,
            outputs: 1,
        },
        hidden,
        1,
    );
    n.attention = Some(attention);
    n
}

#[test]
fn attention_head_loss_falls() {
    let ctx = common::ctx();
    let (t, b) = (12, 8);
    for a in [Attention::Dot, Attention::Learned] {
        let n = net(a, 32);
        let mut opt = OptimConfig::adamw();
        opt.lr = 0.01;
        let mut tr = Trainer::new(
            ctx.clone(),
            n.clone(),
            init_values(&n, 2),
            b,
            Some(1.0),
            &opt,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut losses = Vec::new();
        for step in 0..80 {
            let (x, y) = sine_batch(step, t, b);
            let st = tr
                .step(t, &StepData::series(&x, &y), Carry::Zero, 0.01)
                .unwrap_or_else(|e| panic!("{e}"));
            losses.push(st.loss);
        }
        let head: f32 = losses[..5].iter().sum::<f32>() / 5.0;
        let tail: f32 = losses[losses.len() - 5..].iter().sum::<f32>() / 5.0;
        assert!(tail < 0.2 * head, "{a:?}: loss {head} -> {tail}");
        // The weights stay a distribution over each window's steps.
        let w = tr.attention_weights(t).unwrap_or_else(|e| panic!("{e}"));
        for row in w.chunks_exact(t) {
            let sum: f32 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5 && row.iter().all(|&v| v >= 0.0));
        }
    }
}

/// Eval predictions and weights of a batch with lengths are those of each
/// sequence run alone at its own length (B = 1, T = len).
#[test]
fn lengths_pool_each_sequence_as_if_alone() {
    let ctx = common::ctx();
    let (t, b) = (6, 3);
    let lens = [6usize, 2, 4];
    let (x, y) = sine_batch(1, t, b);
    for a in [Attention::Dot, Attention::Learned] {
        let n = net(a, 16);
        let v = init_values(&n, 7);
        let model = |batch| {
            Trainer::new(
                ctx.clone(),
                n.clone(),
                v.clone(),
                batch,
                None,
                &OptimConfig::sgd(),
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let mut all = model(b);
        all.eval(
            t,
            &StepData::series(&x, &y).with_lengths(&lens),
            Carry::Zero,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let pred = all.head_output(t).unwrap_or_else(|e| panic!("{e}"));
        let w = all.attention_weights(t).unwrap_or_else(|e| panic!("{e}"));
        let mut one = model(1);
        for (bi, &l) in lens.iter().enumerate() {
            let xs: Vec<f32> = (0..l).map(|tt| x[tt * b + bi]).collect();
            one.eval(l, &StepData::series(&xs, &y[bi..bi + 1]), Carry::Zero)
                .unwrap_or_else(|e| panic!("{e}"));
            let p = one.head_output(l).unwrap_or_else(|e| panic!("{e}"));
            let wl = one.attention_weights(l).unwrap_or_else(|e| panic!("{e}"));
            assert!((p[0] - pred[bi]).abs() <= 1e-5, "{a:?} sequence {bi}");
            for tt in 0..t {
                let want = wl.get(tt).copied().unwrap_or(0.0);
                let got = w[bi * t + tt];
                assert!(
                    (got - want).abs() <= 1e-6,
                    "{a:?} ({bi}, {tt}): {got} vs {want}"
                );
            }
        }
    }
}

fn sunspots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/sunspots.csv")
}

/// `train` on the sunspots with the attention head; extra flags after.
fn train_args<'a>(csv: &'a str, ck: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "train",
        "--data",
        csv,
        "--seq-len",
        "8",
        "--hidden",
        "8",
        "--layers",
        "1",
        "--batch",
        "8",
        "--val-every",
        "3",
        "--head",
        "attention",
        "--checkpoint",
        ck,
        "--no-progress",
    ];
    v.extend_from_slice(extra);
    v
}

fn bits(f: &TensorFile, name: &str) -> Vec<u32> {
    let t = f.require_f32(name).unwrap_or_else(|e| panic!("{e}"));
    t.data.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn train_checkpoint_resume_and_predict_with_attention() {
    let d = TempDir::new("attention-cli");
    let csv = sunspots();
    let (a, b) = (d.join("a.st"), d.join("b.st"));
    let six = ["--steps", "6", "--attention", "learned"];
    ok(&train_args(s(&csv), s(&a), &six));
    let stored = settings_of(&a);
    assert!(stored.contains("head = \"attention\""), "{stored}");
    assert!(stored.contains("attention = \"learned\""), "{stored}");
    let fa = TensorFile::read(&a).unwrap_or_else(|e| panic!("{e}"));
    let shapes = fa.shapes();
    assert_eq!(shapes["attention.query"], vec![8]);
    assert_eq!(shapes["head.weight"], vec![1, 16]);

    // Stopped after 3 steps and resumed: the uninterrupted run's bits.
    let mut first = train_args(s(&csv), s(&b), &six);
    first.extend(["--stop-after", "3"]);
    ok(&first);
    ok(&[
        "train",
        "--resume",
        s(&b),
        "--checkpoint",
        s(&b),
        "--no-progress",
    ]);
    let fb = TensorFile::read(&b).unwrap_or_else(|e| panic!("{e}"));
    for name in fa.shapes().keys().filter(|n| !n.starts_with("train.")) {
        if fa.require_f32(name).is_ok() {
            assert_eq!(bits(&fa, name), bits(&fb, name), "{name} after resume");
        }
    }
    for (flag, v) in [("--attention", "dot"), ("--head", "last")] {
        let o = run(&[
            "train",
            "--resume",
            s(&b),
            "--checkpoint",
            s(&b),
            flag,
            v,
            "--no-progress",
        ]);
        assert_refused(&o, &[flag, "cannot change on --resume"], flag);
    }

    // predict --attention-out: one line per window, each a distribution
    // over the window's 8 rows; the library gives the same.
    let out = d.join("attn.csv");
    let printed = ok(&[
        "predict",
        "--checkpoint",
        s(&a),
        "--data",
        s(&csv),
        "--split",
        "val",
        "--attention-out",
        s(&out),
    ]);
    let text = std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "YEAR,window,a_t-8,a_t-7,a_t-6,a_t-5,a_t-4,a_t-3,a_t-2,a_t-1"
    );
    let pred: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), pred.len(), "a line per prediction line");
    let mut m = Model::load(&a).unwrap_or_else(|e| panic!("{e}"));
    let rows = m.csv_rows(&csv).unwrap_or_else(|e| panic!("{e}"));
    let (_, lib) = m
        .predict_with_attention(&rows)
        .unwrap_or_else(|e| panic!("{e}"));
    for (line, p) in lines[1..].iter().zip(&pred[1..]) {
        let cells: Vec<&str> = line.split(',').collect();
        let label: Vec<&str> = p.split(',').take(2).collect();
        assert_eq!(cells[..2], label[..], "the window's label");
        let w: Vec<f64> = cells[2..]
            .iter()
            .map(|c| c.parse().unwrap_or_else(|e| panic!("{c}: {e}")))
            .collect();
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-5, "{line}");
        let window: usize = cells[1].parse().unwrap_or_else(|e| panic!("{e}"));
        // The library's windows run over every row from the first.
        let first_target = cells[0].parse::<usize>().unwrap_or(0) - 1700;
        let lw = &lib[first_target - 8];
        for (x, y) in w.iter().zip(lw) {
            assert!((x - y).abs() <= 1e-6, "window {window}: {w:?} vs {lw:?}");
        }
    }

    // Export to PyTorch: the README module's names and its argument.
    let pt = d.join("pt.safetensors");
    ok(&["export", "--checkpoint", s(&a), "--to", "pytorch", s(&pt)]);
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(pt.with_extension("json")).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json["module"]["attention"], "learned");
    let e = TensorFile::read(&pt).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bits(&e, "attention.query"), bits(&fa, "attention.query"));
    assert_eq!(bits(&e, "head.weight"), bits(&fa, "head.weight"));
    let o = run(&[
        "export",
        "--checkpoint",
        s(&a),
        "--to",
        "onnx",
        s(&d.join("x.onnx")),
    ]);
    assert_refused(&o, &["--head attention (--attention learned)"], "onnx");
    assert!(!d.join("x.onnx").exists());
}

#[test]
fn attention_refusals_name_the_flag() {
    let d = TempDir::new("attention-refusals");
    let csv = sunspots();
    let plain = d.join("plain.st");
    let mut args = train_args(s(&csv), s(&plain), &["--steps", "2"]);
    // The same run without the attention head.
    args.retain(|a| *a != "--head" && *a != "attention");
    ok(&args);
    let out = d.join("w.csv");
    let o = run(&[
        "predict",
        "--checkpoint",
        s(&plain),
        "--data",
        s(&csv),
        "--attention-out",
        s(&out),
    ]);
    assert_refused(&o, &["--attention-out", "reads the last step"], "plain");
    assert!(!out.exists());
    let mut m = Model::load(&plain).unwrap_or_else(|e| panic!("{e}"));
    let rows = m.csv_rows(&csv).unwrap_or_else(|e| panic!("{e}"));
    let e = m.predict_with_attention(&rows).err().map(|e| e.to_string());
    assert!(
        e.as_deref()
            .is_some_and(|e| e.contains("no attention weights")),
        "{e:?}"
    );
    let x = d.join("x.st");
    for (extra, want) in [
        (
            vec!["--attention", "dot"],
            "--attention dot sets the scores of --head attention",
        ),
        (
            vec!["--head", "attention", "--task", "text"],
            "--head attention pools a series model's outputs",
        ),
        (
            vec!["--head", "first"],
            "--head first: expected last or attention",
        ),
        (
            vec!["--head", "attention", "--proj-size", "2", "--data", s(&csv)],
            "attention pooling (dot) with --proj-size 2 is not supported",
        ),
    ] {
        let mut a = vec![
            "train",
            "--steps",
            "1",
            "--checkpoint",
            s(&x),
            "--no-progress",
        ];
        a.extend(extra);
        let o = run(&a);
        assert_eq!(o.status.code(), Some(2), "{a:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{a:?}: {err}");
    }
}

/// The README's `Attention` and `LstmWgpu` are, line for line, the module
/// that `make_attention_fixtures.py` ran to make the parity fixtures (and
/// that `tests/fixtures/export/make_export_norm_fixtures.py` imports from
/// it to load the exports of models with norms, residual links and the
/// GRU).
#[test]
fn readme_module_is_the_fixture_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{e}"));
    let script = read("tests/fixtures/attention/make_attention_fixtures.py");
    let begin = "# ---- the README's module ----";
    let from = script.find(begin).unwrap_or_else(|| panic!("no marker")) + begin.len();
    let body = &script[from..];
    let body = &body[body.find('\n').unwrap_or(0) + 1..body.find("# ------").unwrap_or(0)];
    let readme = read("README.md");
    assert!(
        readme.contains(body.trim()),
        "README.md's module differs from the fixture script's:\n{body}"
    );
}
