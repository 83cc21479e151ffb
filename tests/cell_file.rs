//! Cells a user writes (`--cell-file`, `check-cell`): the shipped example
//! and the built-in cells' own files pass the finite-difference check, a
//! cell with a wrong backward fails it (exit 1), a cell file equivalent to
//! the LSTM trains bit for bit as `--cell lstm`, the example learns, a
//! cell-file run resumes and predicts without its file, and malformed or
//! missing files are refused with exit 2 before any output exists.

#[path = "common/cli.rs"]
mod cli;
mod common;
#[path = "common/final_line.rs"]
mod final_line;

use cli::{assert_refused, ok, run, s, stderr_lines};
use common::tempdir::TempDir;
use final_line::final_line;
use lstm_wgpu::Cell;
use lstm_wgpu::train::cell_check::{TOLERANCE, grad_check, train_check};

const CIFG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/cells/cifg.wgsl");

fn cells_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders/cells")
}

/// A series run on the built-in sine data, small enough for lavapipe.
fn sine(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "train",
        "--dataset",
        "sine",
        "--hidden",
        "16",
        "--layers",
        "2",
        "--batch",
        "8",
        "--seq-len",
        "12",
        "--val-every",
        "10",
        "--no-progress",
    ]
    .map(String::from)
    .to_vec();
    v.extend(extra.iter().map(|e| e.to_string()));
    v
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn check_cell_passes_on_the_example() {
    let out = ok(&["check-cell", CIFG, "--seed", "3"]);
    assert!(out.contains("check-cell cifg.wgsl: passed"), "{out}");
    for q in ["da", "dx", "carry", "h0", "c0"] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(q) && l.ends_with("ok")),
            "{q}: {out}"
        );
    }
}

/// The built-in cells' files, read as a user's, pass both checks.
#[test]
fn check_cell_passes_on_the_built_in_cells_files() {
    let ctx = common::ctx();
    for f in ["lstm.wgsl", "gru.wgsl", "indrnn.wgsl"] {
        let src = std::fs::read_to_string(cells_dir().join(f)).unwrap_or_else(|e| panic!("{e}"));
        let cell = Cell::from_wgsl(f, &src).unwrap_or_else(|e| panic!("{e}"));
        let g = grad_check(&ctx, cell, 1).unwrap_or_else(|e| panic!("{e}"));
        assert!(g.failures().is_empty(), "{f}: {:?}", g.failures());
        for q in &g.quantities {
            assert!(q.worst <= TOLERANCE && q.compared > 0, "{f}: {q:?}");
        }
        let t = train_check(&ctx, cell, 1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.failure(), None, "{f}: {:?}", t.losses);
    }
}

/// A check that cannot fail is worthless: the example with one sign
/// flipped in its backward (g's gradient) fails with exit 1, naming the
/// quantities it broke.
#[test]
fn check_cell_fails_on_a_wrong_backward() {
    let dir = TempDir::new("cell-flip");
    let src = std::fs::read_to_string(CIFG).unwrap_or_else(|e| panic!("{e}"));
    let flipped = src.replace("let dg = dc * (1.0 - f)", "let dg = -dc * (1.0 - f)");
    assert_ne!(flipped, src, "the example changed: flip another sign");
    let p = dir.path().join("flip.wgsl");
    std::fs::write(&p, flipped).unwrap_or_else(|e| panic!("{e}"));
    let o = run(&["check-cell", s(&p)]);
    assert_eq!(o.status.code(), Some(1), "{:?}", stderr_lines(&o));
    let e = stderr_lines(&o).join("\n");
    assert!(e.contains("check failed: da: relative error"), "{e}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("FAILED"), "{out}");
    // A dropped term (the forget gate's c_prev) fails too.
    let dropped = src.replace("dc * (c_prev - g)", "dc * (0.0 - g)");
    std::fs::write(&p, dropped).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run(&["check-cell", s(&p)]).status.code(), Some(1));
}

/// A copy of the built-in LSTM's file trains exactly as `--cell lstm`, on
/// the default path, in f16-mixed and on the tiled variant.
#[test]
fn lstm_cell_file_trains_as_the_built_in_lstm() {
    let dir = TempDir::new("cell-lstm");
    let p = dir.path().join("my_lstm.wgsl");
    std::fs::copy(cells_dir().join("lstm.wgsl"), &p).unwrap_or_else(|e| panic!("{e}"));
    let built_in = ok(&args(&sine(&["--steps", "20", "--cell", "lstm"])));
    let file = ok(&args(&sine(&["--steps", "20", "--cell-file", s(&p)])));
    assert_eq!(final_line(&file), final_line(&built_in));
    // f16-mixed (lavapipe has SHADER_F16): the same f16 strategies.
    let half = ["--steps", "20", "--precision", "f16-mixed"];
    let built_in_half = ok(&args(&sine(&[&half[..], &["--cell", "lstm"]].concat())));
    let file_half = ok(&args(&sine(&[&half[..], &["--cell-file", s(&p)]].concat())));
    assert_eq!(final_line(&file_half), final_line(&built_in_half));
    let tiled = std::process::Command::new(env!("CARGO_BIN_EXE_lstm-wgpu"))
        .args(args(&sine(&["--steps", "20", "--cell-file", s(&p)])))
        .env("LSTM_WGPU_CELL", "tiled")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(tiled.status.success(), "{:?}", stderr_lines(&tiled));
    assert_eq!(
        final_line(&String::from_utf8_lossy(&tiled.stdout)),
        final_line(&built_in)
    );
}

/// The value after `key` in a line of train's output.
fn value(line: &str, key: &str) -> f64 {
    let w: Vec<&str> = line.split_whitespace().collect();
    let i = w
        .iter()
        .position(|x| *x == key)
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    w[i + 1].parse().unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn the_example_cell_learns() {
    let o = run(&args(&sine(&[
        "--steps",
        "40",
        "--cell-file",
        CIFG,
        "--lr",
        "0.01",
    ])));
    assert!(o.status.success(), "{:?}", stderr_lines(&o));
    // The progress lines go to stderr.
    let out = stderr_lines(&o).join("\n");
    let val: Vec<f64> = out
        .lines()
        .filter(|l| l.starts_with("step"))
        .map(|l| value(l, "val_loss"))
        .collect();
    assert_eq!(val.len(), 4, "{out}");
    assert!(val[3] < 0.5 * val[0], "val_loss {val:?}");
}

/// The run holds the cell's source: resume (bit for bit) and predict work
/// once the file is gone; resume refuses another cell file or --cell.
#[test]
fn a_cell_file_run_resumes_and_predicts_without_the_file() {
    let dir = TempDir::new("cell-resume");
    let cell = dir.path().join("cifg.wgsl");
    std::fs::copy(CIFG, &cell).unwrap_or_else(|e| panic!("{e}"));
    let csv = dir.sine_csv("s.csv");
    let ck = dir.path().join("c.ckpt");
    let base = [
        "train",
        "--data",
        s(&csv),
        "--hidden",
        "12",
        "--batch",
        "8",
        "--val-every",
        "5",
        "--no-progress",
        "--cell-file",
        s(&cell),
    ];
    let full = ok(&[&base[..], &["--steps", "10"]].concat());
    ok(&[&base[..], &["--steps", "5", "--checkpoint", s(&ck)]].concat());
    std::fs::remove_file(&cell).unwrap_or_else(|e| panic!("{e}"));
    let resumed = ok(&[
        "train",
        "--resume",
        s(&ck),
        "--steps",
        "10",
        "--no-progress",
    ]);
    assert_eq!(final_line(&resumed), final_line(&full));
    let pred = ok(&["predict", "--checkpoint", s(&ck), "--data", s(&csv)]);
    assert!(pred.lines().count() > 10, "{pred}");
    let other = dir.path().join("other.wgsl");
    std::fs::copy(CIFG, &other).unwrap_or_else(|e| panic!("{e}"));
    let resume_with =
        |extra: &[&str]| run(&[&["train", "--resume", s(&ck), "--steps", "12"], extra].concat());
    let o = resume_with(&["--cell-file", s(&other)]);
    assert_refused(
        &o,
        &["--cell-file", "other.wgsl", "cifg.wgsl"],
        "other file",
    );
    let o = resume_with(&["--cell", "lstm"]);
    assert_refused(&o, &["--cell lstm", "cell file cifg.wgsl"], "--cell");
}

/// Malformed, missing or conflicting: exit 2, one line, naga's message for
/// a malformed cell, and no output file.
#[test]
fn bad_cell_files_are_refused_before_any_output() {
    let dir = TempDir::new("cell-bad");
    let lstm =
        std::fs::read_to_string(cells_dir().join("lstm.wgsl")).unwrap_or_else(|e| panic!("{e}"));
    let bad = dir.path().join("bad.wgsl");
    std::fs::write(&bad, lstm.replace("return pre;", "return pre"))
        .unwrap_or_else(|e| panic!("{e}"));
    let ck = dir.path().join("out.ckpt");
    let o = run(&args(&sine(&[
        "--cell-file",
        s(&bad),
        "--checkpoint",
        s(&ck),
    ])));
    assert_refused(
        &o,
        &["cell file bad.wgsl: line 41:1: expected `;`"],
        "train",
    );
    assert_refused(
        &run(&["check-cell", s(&bad)]),
        &["expected `;`"],
        "check-cell",
    );
    let grad_out = dir.path().join("g.safetensors");
    let o = run(&[
        "grad",
        "--weights",
        s(&ck),
        "--inputs",
        s(&ck),
        "--out",
        s(&grad_out),
        "--cell-file",
        s(&bad),
    ]);
    assert_eq!(o.status.code(), Some(2), "{:?}", stderr_lines(&o));
    let o = run(&["bench", "--workload", "ts", "--cell-file", s(&bad)]);
    assert_refused(&o, &["cell file bad.wgsl"], "bench");
    // A validation error (a u32 where cell_forward returns an f32).
    std::fs::write(
        &bad,
        lstm.replace(
            "return CellStep(act, c, act.w * tanh_clamped(c));",
            "return CellStep(act, 1u, act.w * tanh_clamped(c));",
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let o = run(&["check-cell", s(&bad)]);
    assert_refused(&o, &["cell file bad.wgsl: line "], "validation");
    let missing = dir.path().join("missing.wgsl");
    let o = run(&args(&sine(&[
        "--cell-file",
        s(&missing),
        "--checkpoint",
        s(&ck),
    ])));
    assert_refused(&o, &["missing.wgsl"], "missing file");
    assert_refused(
        &run(&["check-cell", s(&missing)]),
        &["missing.wgsl"],
        "missing",
    );
    let o = run(&args(&sine(&["--cell", "gru", "--cell-file", CIFG])));
    assert_refused(&o, &["--cell", "--cell-file"], "both");
    let o = run(&args(&sine(&["--cell-file", CIFG, "--forget-bias", "1"])));
    assert_refused(&o, &["--forget-bias", "cifg.wgsl"], "forget bias");
    assert!(!ck.exists() && !grad_out.exists(), "{:?}", dir.files());
}

/// The example cell on the persistent loop: the same outputs and
/// gradients as per step (to f32 rounding, as the LSTM's paths), over two
/// bidirectional layers with unequal lengths and initial states; chunked
/// loops bit for bit as one dispatch; and `train` runs it when
/// `LSTM_WGPU_CELL_PATH=persistent` forces it.
#[test]
fn the_example_cell_runs_on_the_persistent_loop() {
    use common::cases::{bits, check_paths_agree};
    use lstm_wgpu::schedule::CellPath;
    use lstm_wgpu::{Batch, Lstm, LstmConfig, LstmModel, Upstream};
    let ctx = common::ctx();
    let src = std::fs::read_to_string(CIFG).unwrap_or_else(|e| panic!("{e}"));
    let cell = Cell::from_wgsl("cifg.wgsl", &src).unwrap_or_else(|e| panic!("{e}"));
    let (t, n, h, i) = (9, 3, 12, 5);
    let cfg = LstmConfig {
        input_size: i,
        hidden_size: h,
        num_layers: 2,
        bidirectional: true,
        bias: true,
        cell,
        proj_size: 0,
    };
    let wave = |len: usize, k: usize, s: f32| -> Vec<f32> {
        (0..len)
            .map(|j| ((j * k % 101) as f32 / 50.0 - 1.0) * s)
            .collect()
    };
    let x = wave(t * n * i, 37, 1.0);
    let state = wave(4 * n * h, 29, 0.5);
    let go = wave(t * n * 2 * h, 53, 1.0);
    let gs = wave(4 * n * h, 41, 0.25);
    let lens = [9, 4, 1];
    let b = Batch {
        input: &x,
        seq_len: t,
        batch: n,
        batch_first: false,
        h0: Some(&state),
        c0: Some(&state),
        lengths: Some(&lens),
    };
    let up = Upstream {
        grad_output: &go,
        grad_h_n: &gs,
        grad_c_n: &gs,
    };
    let run = |path: CellPath, chunk: Option<usize>| {
        let model = LstmModel::init_uniform(&ctx, cfg.clone(), 7).unwrap_or_else(|e| panic!("{e}"));
        let mut m = Lstm::new(ctx.clone(), model).unwrap_or_else(|e| panic!("{e}"));
        common::set_path(&mut m, Some(path));
        m.kernels().persistent.set_max_chunk(chunk);
        let r = m
            .forward_backward(&b, &up)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(m.plan(t, n).map(|p| p.path).ok(), Some(path));
        r
    };
    let whole = run(CellPath::Persistent, None);
    let e = check_paths_agree("cifg.wgsl", &whole, &run(CellPath::PerStep, None), 1e-5);
    eprintln!("cifg.wgsl: persistent vs per-step {e:.2e}");
    for chunk in [4, 1] {
        let part = run(CellPath::Persistent, Some(chunk));
        assert!(
            bits(&whole.0, &whole.1) == bits(&part.0, &part.1),
            "chunk {chunk}: results differ"
        );
    }
    let dir = TempDir::new("cell-persistent");
    let ck = dir.path().join("out.ckpt");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_lstm-wgpu"))
        .args(args(&sine(&[
            "--cell-file",
            CIFG,
            "--steps",
            "2",
            "--checkpoint",
            s(&ck),
        ])))
        .env("LSTM_WGPU_CELL_PATH", "persistent")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(o.status.success(), "{:?}", stderr_lines(&o));
    assert!(ck.exists(), "{:?}", dir.files());
}

/// `grad` with a copy of a built-in cell's file writes the bytes `--cell`
/// writes, on PyTorch's fixtures: the LSTM per step and the GRU on its
/// default path (which a cell file takes as its built-in twin does).
#[test]
fn grad_with_a_built_in_cells_file_matches_the_built_in_cell() {
    let dir = TempDir::new("cell-grad");
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (cell, case, path) in [
        ("lstm", fixtures.join("bi2_len"), "per-step"),
        ("gru", fixtures.join("cells/gru_bi2_len"), ""),
    ] {
        let file = dir.path().join(format!("my_{cell}.wgsl"));
        std::fs::copy(cells_dir().join(format!("{cell}.wgsl")), &file)
            .unwrap_or_else(|e| panic!("{e}"));
        let w = format!("{}.weights.safetensors", case.display());
        let i = format!("{}.inputs.safetensors", case.display());
        let grad = |how: &[&str], out: &std::path::Path| {
            let o = std::process::Command::new(env!("CARGO_BIN_EXE_lstm-wgpu"))
                .args(
                    [
                        &["grad", "--weights", &w, "--inputs", &i, "--out", s(out)],
                        how,
                    ]
                    .concat(),
                )
                .env("LSTM_WGPU_CELL_PATH", path)
                .output()
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(o.status.success(), "{cell}: {:?}", stderr_lines(&o));
            std::fs::read(out).unwrap_or_else(|e| panic!("{e}"))
        };
        let built_in = grad(&["--cell", cell], &dir.path().join("a.st"));
        let from_file = grad(&["--cell-file", s(&file)], &dir.path().join("b.st"));
        assert!(built_in == from_file, "{cell}: the outputs differ");
    }
}

#[test]
fn bench_runs_a_cell_file() {
    let out = ok(&[
        "bench",
        "--workload",
        "ts",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--cell-file",
        CIFG,
    ]);
    let row = out
        .lines()
        .find(|l| l.starts_with("ts-cifg.wgsl "))
        .unwrap_or_else(|| panic!("no row ts-cifg.wgsl in {out}"));
    assert!(row.contains("wavefront"), "{row}");
}
