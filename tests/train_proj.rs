//! `--proj-size P` (LSTM projections, `nn.LSTM(proj_size=P)`) through the
//! commands that train and use a model: `train` (text and series), its
//! settings and checkpoint, `--resume` bit for bit, `generate`, `predict`,
//! the library's `Model::load`, `export --to pytorch` (with `weight_hr_l{k}`
//! and `proj_size`) and `--to onnx` (refused), `bench`; and every invalid
//! combination refused by name with exit 2.

#[path = "common/cli.rs"]
mod cli;
#[path = "common/final_line.rs"]
mod final_line;
#[path = "common/tempdir.rs"]
mod tempdir;

use cli::{assert_refused, ok, run, s, settings_of};
use final_line::final_line;
use lstm_wgpu::io::TensorFile;
use tempdir::TempDir;

const TEXT: &[&str] = &[
    "train",
    "--proj-size",
    "6",
    "--hidden",
    "16",
    "--layers",
    "2",
    "--batch",
    "4",
    "--seq-len",
    "12",
    "--val-every",
    "5",
    "--no-progress",
];

#[test]
fn proj_trains_resumes_and_generates() {
    let dir = TempDir::new("proj-text");
    let ck = dir.join("p.ckpt");
    let full = ok(&[TEXT, &["--steps", "10"]].concat());
    let plain = ok(&[&TEXT[..1], &TEXT[3..], &["--steps", "10"][..]].concat());
    assert_ne!(
        final_line(&full),
        final_line(&plain),
        "a projection changes the run"
    );
    let first = ok(&[TEXT, &["--steps", "5", "--checkpoint", s(&ck)]].concat());
    assert_ne!(final_line(&first), final_line(&full));
    let settings = settings_of(&ck);
    assert!(settings.contains("proj-size = 6"), "{settings}");
    let resumed = ok(&[
        "train",
        "--resume",
        s(&ck),
        "--steps",
        "10",
        "--no-progress",
    ]);
    assert_eq!(
        final_line(&resumed),
        final_line(&full),
        "resume is bit for bit"
    );
    // The checkpoint's tensors: W_hh [4H, P], W_hr [P, H], a P-wide head.
    let f = TensorFile::read(&ck).unwrap_or_else(|e| panic!("{e}"));
    let shape = |n: &str| f.tensors[n].shape.clone();
    assert_eq!(shape("lstm.weight_hh_l1"), vec![64, 6]);
    assert_eq!(shape("lstm.weight_hr_l1"), vec![6, 16]);
    assert_eq!(shape("lstm.weight_ih_l1"), vec![64, 6]);
    assert_eq!(shape("head.weight")[1], 6);
    let text = ok(&["generate", "--checkpoint", s(&ck), "--prompt", "The "]);
    assert!(text.starts_with("The "), "{text}");
    // The library opens it too, and samples what `generate` prints.
    let mut m = lstm_wgpu::Model::load(&ck).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.config().net.proj, 6);
    let greedy = ok(&[
        "generate",
        "--checkpoint",
        s(&ck),
        "--prompt",
        "The ",
        "--top-k",
        "1",
        "--length",
        "20",
    ]);
    let sampling = lstm_wgpu::infer::Sampling {
        top_k: 1,
        ..Default::default()
    };
    let lib = m
        .generate("The ", 20, &sampling)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(greedy.trim_end(), format!("The {lib}").trim_end());
    // The projection cannot change on resume.
    let o = run(&[
        "train",
        "--resume",
        s(&ck),
        "--proj-size",
        "4",
        "--steps",
        "12",
    ]);
    assert_refused(&o, &["--proj-size 4", "6"], "a changed --proj-size");
}

#[test]
fn proj_forecasts_and_exports() {
    let dir = TempDir::new("proj-series");
    let ck = dir.join("s.ckpt");
    let csv = dir.sine_csv("s.csv");
    let out = ok(&[
        "train",
        "--proj-size",
        "5",
        "--init-whh",
        "orthogonal",
        "--data",
        s(&csv),
        "--hidden",
        "12",
        "--batch",
        "8",
        "--steps",
        "40",
        "--val-every",
        "20",
        "--no-progress",
        "--checkpoint",
        s(&ck),
    ]);
    assert!(final_line(&out).contains("val_mae"), "{out}");
    let pred = ok(&["predict", "--checkpoint", s(&ck), "--data", s(&csv)]);
    assert!(pred.lines().count() > 10, "{pred}");
    // To PyTorch: weight_hr_l{k} and proj_size for nn.LSTM(proj_size=P).
    let pt = dir.join("p.safetensors");
    ok(&["export", "--checkpoint", s(&ck), "--to", "pytorch", s(&pt)]);
    let f = TensorFile::read(&pt).unwrap_or_else(|e| panic!("{e}"));
    for (name, shape) in [
        ("lstm.weight_hr_l0", vec![5, 12]),
        ("lstm.weight_hh_l0", vec![48, 5]),
        ("lstm.weight_hr_l1", vec![5, 12]),
        ("lstm.weight_ih_l1", vec![48, 5]),
        ("head.weight", vec![1, 5]),
    ] {
        assert_eq!(f.tensors[name].shape, shape, "{name}");
    }
    let json = std::fs::read_to_string(pt.with_extension("json")).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["module"]["proj_size"], 5, "{json}");
    // Not to ONNX, whose LSTM has no projection; nothing written.
    let onnx = dir.join("p.onnx");
    let o = run(&["export", "--checkpoint", s(&ck), "--to", "onnx", s(&onnx)]);
    assert_refused(&o, &["--proj-size 5", "not in the ONNX export"], "onnx");
    assert!(!onnx.exists());
}

#[test]
fn proj_refusals_are_named() {
    for (args, names) in [
        (&["--proj-size", "0"][..], &["--proj-size 0"][..]),
        (
            &["--proj-size", "8", "--hidden", "8"],
            &["--proj-size 8", "--hidden 8"],
        ),
        (
            &["--proj-size", "4", "--cell", "gru"],
            &["--proj-size 4", "gru"],
        ),
        (
            &["--proj-size", "4", "--cell", "indrnn"],
            &["--proj-size 4", "indrnn"],
        ),
        (
            &["--proj-size", "4", "--norm", "layer"],
            &["--proj-size 4", "--norm"],
        ),
        (
            &["--proj-size", "4", "--zoneout-h", "0.1"],
            &["--proj-size 4", "--zoneout-h"],
        ),
        (
            &["--proj-size", "4", "--weight-drop", "0.1"],
            &["--proj-size 4", "--weight-drop"],
        ),
        (
            &["--proj-size", "4", "--precision", "f16-mixed"],
            &["f16-mixed", "proj_size 4"],
        ),
    ] {
        let o = run(&[&["train", "--steps", "2", "--no-progress"], args].concat());
        assert_refused(&o, names, &format!("{args:?}"));
    }
    let cell = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cells/cifg.wgsl");
    let o = run(&[
        "train",
        "--proj-size",
        "4",
        "--cell-file",
        s(&cell),
        "--steps",
        "2",
    ]);
    assert_refused(&o, &["--proj-size 4", "cifg.wgsl"], "a cell file");
    // bench: rows named with the projection; deep's LayerNorm refused.
    let o = ok(&[
        "bench",
        "--workload",
        "ts",
        "--proj-size",
        "16",
        "--json",
        "--steps",
        "2",
        "--warmup",
        "1",
    ]);
    assert!(o.contains("\"workload\":\"ts-p16\""), "{o}");
    let o = run(&["bench", "--workload", "deep", "--proj-size", "16"]);
    assert_refused(&o, &["--proj-size 16", "deep"], "bench deep");
    let o = run(&["bench", "--workload", "ts", "--proj-size", "64"]);
    assert_refused(&o, &["--proj-size 64", "ts"], "bench P = H");
}
