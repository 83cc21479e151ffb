//! A trained model used from the library (`lstm_wgpu::Model`) and exported
//! to PyTorch: the library gives what `predict` and `generate` print, its
//! streaming state carries, bad files are refused by name, and a PyTorch
//! model goes in (`train --init`, bare `nn.LSTM` names) and comes out
//! (`export --to pytorch`) bit for bit, predicting as PyTorch does
//! (fixtures of tests/fixtures/export/make_export_fixtures.py; no Python
//! needed here). `export --to onnx`: the committed checkpoints export to
//! the very bytes that make_onnx_fixtures.py ran with onnxruntime, and the
//! engine gives what onnxruntime gave (1e-5); models the ONNX `LSTM`
//! cannot express are refused before a file is written.

use lstm_wgpu::infer::{Checkpoint, Sampling, State};
use lstm_wgpu::io::TensorFile;
use lstm_wgpu::{Model, NamedTensor};
use std::path::{Path, PathBuf};

#[path = "common/cli.rs"]
mod cli;
#[path = "common/tempdir.rs"]
mod tempdir;

use cli::{assert_refused, ok, run, s};
use tempdir::TempDir;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/export")
        .join(name)
}

/// Ten training steps.
const TEN: &[&str] = &["--steps", "10"];

/// A checkpoint of a series run (2 layers of 8) on the fixture CSV.
fn series_checkpoint(d: &TempDir, name: &str, extra: &[&str]) -> PathBuf {
    let ck = d.path().join(name);
    let csv = fixture("series.csv");
    let mut args = vec![
        "train",
        "--data",
        s(&csv),
        "--features",
        "y",
        "--target",
        "y",
        "--seq-len",
        "8",
        "--hidden",
        "8",
        "--checkpoint",
        s(&ck),
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    ok(&args);
    ck
}

/// Exports checkpoint `ck` to `out`; the JSON beside it.
fn export(ck: &Path, out: &Path) -> serde_json::Value {
    ok(&["export", "--checkpoint", s(ck), "--to", "pytorch", s(out)]);
    let text = std::fs::read_to_string(out.with_extension("json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The exported state_dict `out` holds the README module's keys (listed in
/// the fixture's metadata) and every tensor of the PyTorch `init` file
/// bit for bit (bare `nn.LSTM` names there, under `lstm.` here).
fn assert_exported_as_given(out: &Path, init: &Path, expected: &TensorFile) {
    let exported = TensorFile::read(out).unwrap().all_f32().unwrap();
    let given = TensorFile::read(init).unwrap().all_f32().unwrap();
    let keys: Vec<&str> = expected.metadata["keys"].split(',').collect();
    let mut names: Vec<&str> = exported.iter().map(|t| t.name.as_str()).collect();
    names.sort();
    assert_eq!(names, keys, "the README module's state_dict keys");
    assert_eq!(given.len(), exported.len());
    for t in &given {
        let name = match t.name.starts_with("head.") || t.name.starts_with("embedding.") {
            true => t.name.clone(),
            false => format!("lstm.{}", t.name),
        };
        let e = exported.iter().find(|x| x.name == name).unwrap();
        assert_eq!(e.shape, t.shape, "{name}");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&e.data), bits(&t.data), "{name} bit for bit");
    }
}

/// PyTorch → engine → PyTorch: the fixture's bare `nn.LSTM` state_dict and
/// head tensors start a run of no steps, whose export holds the same bits
/// under the README module's names; the engine's predictions equal
/// PyTorch's (1e-5) under the exported normaliser.
#[test]
fn pytorch_round_trip_is_bit_exact_and_predicts_as_pytorch() {
    let d = TempDir::new("export-rt");
    let out = d.path().join("out.safetensors");
    let (csv, init) = (fixture("series.csv"), fixture("init.safetensors"));
    let ck = series_checkpoint(&d, "ck.st", &["--init", s(&init), "--steps", "0"]);
    let json = export(&ck, &out);
    let expected = TensorFile::read(fixture("expected.safetensors")).unwrap();
    assert_exported_as_given(&out, &init, &expected);
    let target = &json["normalizer"]["target"];
    let (mean, std) = (
        target["mean"].as_f64().unwrap(),
        target["std"].as_f64().unwrap(),
    );
    assert_eq!(mean, expected.metadata["mean"].parse::<f64>().unwrap());
    assert_eq!(std, expected.metadata["std"].parse::<f64>().unwrap());
    assert_eq!(json["module"]["hidden_size"], 8);
    let pz = expected.f32("pred_z").unwrap().unwrap().data;
    let mut m = Model::load(&ck).unwrap();
    let rows = m.csv_rows(&csv).unwrap();
    let pred = m.predict(&rows).unwrap();
    assert_eq!(pred.len(), rows.len() - 8 + 1);
    let theirs: Vec<f64> = pz.iter().map(|&z| z as f64 * std + mean).collect();
    let scale = theirs.iter().fold(1f64, |a, v| a.max(v.abs()));
    for (i, (p, t)) in pred.iter().zip(&theirs).enumerate() {
        assert!(
            (p[0] - t).abs() <= 1e-5 * scale,
            "window {i}: {} vs PyTorch {t}",
            p[0]
        );
    }
}

/// The same for a character model (embedding, nn.LSTM, head): the
/// weights come back bit for bit, and `Model::step_token` over a prompt
/// gives PyTorch's logits at every step (1e-5).
#[test]
fn pytorch_text_round_trip_is_bit_exact_and_steps_as_pytorch() {
    let d = TempDir::new("export-text");
    let (ck, out) = (d.path().join("ck.st"), d.path().join("out.safetensors"));
    let (text, init) = (fixture("text.txt"), fixture("text_init.safetensors"));
    ok(&[
        "train",
        "--data",
        s(&text),
        "--embed",
        "4",
        "--hidden",
        "8",
        "--layers",
        "2",
        "--batch",
        "2",
        "--seq-len",
        "8",
        "--init",
        s(&init),
        "--steps",
        "0",
        "--checkpoint",
        s(&ck),
        "--no-progress",
    ]);
    let json = export(&ck, &out);
    let expected = TensorFile::read(fixture("text_expected.safetensors")).unwrap();
    assert_exported_as_given(&out, &init, &expected);
    let mut m = Model::load(&ck).unwrap();
    let vocab = m.vocab().unwrap().clone();
    let listed: Vec<String> = vocab.chars.iter().map(|c| c.to_string()).collect();
    assert_eq!(json["vocab"], serde_json::json!(listed));
    assert_eq!(json["module"]["vocab"], vocab.len());
    let want = expected.f32("logits").unwrap().unwrap();
    let prompt = &expected.metadata["prompt"];
    assert_eq!(want.shape, [prompt.chars().count(), vocab.len()]);
    for (t, id) in vocab.encode(prompt).unwrap().into_iter().enumerate() {
        let got = m.step_token(id).unwrap();
        let row = &want.data[t * vocab.len()..(t + 1) * vocab.len()];
        let scale = row.iter().fold(1f32, |a, v| a.max(v.abs()));
        for (g, w) in got.iter().zip(row) {
            assert!(
                (g - w).abs() <= 1e-5 * scale,
                "step {t}: {got:?} vs PyTorch {row:?}"
            );
        }
    }
}

/// `Model::predict`, `forecast` and `generate` give what the commands
/// print, digit for digit.
#[test]
fn model_gives_what_predict_and_generate_print() {
    let d = TempDir::new("infer-cmds");
    let csv = fixture("series.csv");
    let ck = series_checkpoint(&d, "series.st", &["--horizon", "2", "--steps", "10"]);
    let printed = ok(&["predict", "--checkpoint", s(&ck), "--data", s(&csv)]);
    let mut m = Model::load(&ck).unwrap();
    m.set_batch(5).unwrap();
    let rows = m.csv_rows(&csv).unwrap();
    let pred = m.predict(&rows).unwrap();
    let lines: Vec<&str> = printed.lines().skip(1).collect();
    assert_eq!(lines.len(), rows.len() - 8 - 2 + 1);
    for (line, p) in lines.iter().zip(&pred) {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(
            cells[cells.len() - 2..],
            [p[0].to_string(), p[1].to_string()]
        );
    }
    let printed = ok(&[
        "predict",
        "--checkpoint",
        s(&ck),
        "--data",
        s(&csv),
        "--future",
        "5",
    ]);
    let future: Vec<String> = printed
        .lines()
        .rev()
        .take(5)
        .map(|l| l.rsplit(',').next().unwrap().to_string())
        .collect();
    let ours: Vec<String> = m
        .forecast(&rows, 5)
        .unwrap()
        .iter()
        .rev()
        .map(f64::to_string)
        .collect();
    assert_eq!(future, ours);

    let text = d.path().join("text.st");
    ok(&[
        "train",
        "--hidden",
        "8",
        "--embed",
        "4",
        "--steps",
        "3",
        "--checkpoint",
        s(&text),
        "--no-progress",
    ]);
    let printed = ok(&[
        "generate",
        "--checkpoint",
        s(&text),
        "--prompt",
        "th",
        "--length",
        "40",
        "--temperature",
        "0.7",
        "--top-k",
        "5",
        "--seed",
        "9",
    ]);
    let mut t = Model::load(&text).unwrap();
    let sampling = Sampling {
        temperature: 0.7,
        top_k: 5,
        seed: 9,
    };
    let ours = t.generate("th", 40, &sampling).unwrap();
    assert_eq!(printed, format!("th{ours}\n"));
    assert_eq!(
        t.vocab().unwrap().len(),
        t.checkpoint().vocab().unwrap().len()
    );
    // The wrong kind of model for a call is an error, not a panic.
    assert!(t.predict(&rows).unwrap_err().to_string().contains("text"));
    assert!(
        m.generate("a", 1, &sampling)
            .unwrap_err()
            .to_string()
            .contains("series")
    );
}

/// `step` carries the state from call to call: T steps from zero give
/// window 0's prediction; a state taken and restored gives the same step
/// bit for bit; `reset` starts from zero again.
#[test]
fn streaming_carries_the_state() {
    let d = TempDir::new("infer-stream");
    let csv = fixture("series.csv");
    let ck = series_checkpoint(&d, "series.st", TEN);
    let mut m = Model::load(&ck).unwrap();
    let rows = m.csv_rows(&csv).unwrap();
    let window0 = m.predict(&rows[..8]).unwrap()[0][0];
    assert_eq!(m.state().unwrap().0, vec![0.0; 2 * 2 * 8]);
    let mut last = Vec::new();
    for r in &rows[..8] {
        last = m.step(r).unwrap();
    }
    assert!(
        (last[0] - window0).abs() <= 1e-5 * window0.abs().max(1.0),
        "{last:?} vs {window0}"
    );
    let st: State = m.state().unwrap();
    assert!(st.0.iter().any(|&v| v != 0.0));
    let a = m.step(&rows[8]).unwrap();
    m.with_state(&st).unwrap();
    assert_eq!(m.step(&rows[8]).unwrap(), a);
    m.reset();
    let fresh = Model::load(&ck).unwrap().step(&rows[0]).unwrap();
    assert_eq!(m.step(&rows[0]).unwrap(), fresh);
    let e = m.predict(&rows[..1]).unwrap_err().to_string();
    assert!(e.contains("fewer than the model's seq_len 8"), "{e}");
    let e = m.step(&[1.0, 2.0]).unwrap_err().to_string();
    assert!(e.contains("2 values, expected 1") && e.contains("y"), "{e}");
}

/// Models with per-step running statistics (`--norm step-batch`,
/// `recurrent-batch`) stream step t on row min(t, T_max − 1), as a window's
/// step t: T steps from zero give each window's prediction, and a state
/// restored with `with_state` restores its position.
#[test]
fn streaming_reads_the_running_statistics_of_its_position() {
    let csv = fixture("series.csv");
    for name in ["pt_step_batch_last_residual.st", "pt_recurrent_batch.st"] {
        let mut m = Model::load(fixture(name)).unwrap();
        let rows = m.csv_rows(&csv).unwrap();
        for w in [0, 5, 30] {
            let want = m.predict(&rows[w..w + 8]).unwrap()[0][0];
            m.reset();
            let mut got = Vec::new();
            for r in &rows[w..w + 8] {
                got = m.step(r).unwrap();
            }
            assert!(
                (got[0] - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{name} window {w}: streamed {} vs predicted {want}",
                got[0]
            );
        }
        m.reset();
        for r in &rows[..3] {
            m.step(r).unwrap();
        }
        let st = m.state().unwrap();
        assert_eq!(st.1, 3, "{name}: the position of the state");
        let ahead: Vec<Vec<f64>> = rows[3..12].iter().map(|r| m.step(r).unwrap()).collect();
        m.reset();
        m.step(&rows[0]).unwrap();
        m.with_state(&st).unwrap();
        let again: Vec<Vec<f64>> = rows[3..12].iter().map(|r| m.step(r).unwrap()).collect();
        assert_eq!(ahead, again, "{name}: steps after with_state");
    }
}

/// A copy of checkpoint `ck` (beside it, as `name`) whose tensor `tensor`
/// has zeros of `shape`, or is gone (`None`).
fn altered(ck: &Path, tensor: &str, shape: Option<Vec<usize>>, name: &str) -> PathBuf {
    let f = TensorFile::read(ck).unwrap();
    let (mut tensors, ints) = f.params_and_counters().unwrap();
    tensors.retain(|t| t.name != tensor);
    if let Some(shape) = shape {
        let n = shape.iter().product();
        tensors.push(NamedTensor::new(tensor, shape, vec![0.0; n]));
    }
    let out = ck.with_file_name(name);
    lstm_wgpu::io::write_with_counters(&out, &tensors, &ints, Some(f.metadata.clone())).unwrap();
    out
}

/// Missing, corrupt and inconsistent checkpoints are errors naming the
/// file or the tensor, before a GPU is opened.
#[test]
fn bad_checkpoints_are_refused_by_name() {
    let d = TempDir::new("infer-bad");
    let missing = d.path().join("none.st");
    let e = Checkpoint::read(&missing).unwrap_err().to_string();
    assert!(e.contains("none.st"), "{e}");
    let junk = d.path().join("junk.st");
    std::fs::write(&junk, b"not a checkpoint at all").unwrap();
    let e = Checkpoint::read(&junk).unwrap_err().to_string();
    assert!(e.contains("junk.st") && e.contains("safetensors"), "{e}");
    let e = Checkpoint::read(fixture("init.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no `config` metadata"), "{e}");
    let ck = series_checkpoint(&d, "series.st", TEN);
    let bad = altered(&ck, "lstm.weight_hh_l1", Some(vec![32, 4]), "shape.st");
    let e = Checkpoint::read(&bad).unwrap_err().to_string();
    assert!(
        e.contains("lstm.weight_hh_l1") && e.contains("[32, 4]"),
        "{e}"
    );
    let bad = altered(&ck, "head.bias", None, "gone.st");
    let e = Checkpoint::read(&bad).unwrap_err().to_string();
    assert!(e.contains("head.bias") && e.contains("missing"), "{e}");
}

/// `export` refuses bad input with exit 2 and one line, before it writes
/// anything: a missing or corrupt checkpoint, an unwritable or misnamed
/// OUT, a misshapen tensor, a model the PyTorch module cannot hold, an
/// unknown format.
#[test]
fn export_refuses_bad_input_before_writing() {
    let d = TempDir::new("export-bad");
    let out = d.path().join("out.safetensors");
    let o = |args: &[&str]| run(args);
    let missing = d.path().join("none.st");
    let refused = |ck: &Path, out: &Path, want: &[&str]| {
        let before = d.files();
        let r = o(&["export", "--checkpoint", s(ck), "--to", "pytorch", s(out)]);
        assert_refused(&r, want, &format!("export {}", ck.display()));
        assert_eq!(d.files(), before, "nothing written");
    };
    refused(&missing, &out, &["none.st"]);
    let junk = d.path().join("junk.st");
    std::fs::write(&junk, b"\x08\0\0\0\0\0\0\0{}").unwrap();
    refused(&junk, &out, &["junk.st"]);
    let ck = series_checkpoint(&d, "series.st", TEN);
    refused(&ck, &d.path().join("no/such/dir/out.safetensors"), &["OUT"]);
    refused(
        &ck,
        &d.path().join("out.json"),
        &["out.json", ".safetensors"],
    );
    refused(&ck, &ck, &["OUT"]);
    // A cell file's math is WGSL no PyTorch module knows.
    let cifg = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cells/cifg.wgsl");
    let file = series_checkpoint(&d, "cifg.st", &["--cell-file", s(&cifg), "--steps", "1"]);
    refused(&file, &out, &["cifg.st", "--cell-file cifg"]);
    // A tensor of the wrong shape, named with both shapes.
    let bad = altered(&ck, "head.weight", Some(vec![1, 4]), "shape.st");
    refused(&bad, &out, &["head.weight", "[1, 4]", "[1, 8]"]);
    let r = o(&["export", "--checkpoint", s(&ck), "--to", "tflite", s(&out)]);
    assert_eq!(r.status.code(), Some(2));
    assert!(!out.exists());
    ok(&["export", "--checkpoint", s(&ck), "--to", "pytorch", s(&out)]);
    assert!(out.exists() && out.with_extension("json").exists());
}

/// Exports fixture checkpoint `ck` with the binary and the library; both
/// must give the committed `.onnx` byte for byte.
fn assert_exports_as_committed(ck: &str, onnx: &str) {
    let d = TempDir::new("onnx-bytes");
    let out = d.path().join("model.onnx");
    ok(&[
        "export",
        "--checkpoint",
        s(&fixture(ck)),
        "--to",
        "onnx",
        s(&out),
    ]);
    let committed = std::fs::read(fixture(onnx)).unwrap();
    assert!(
        std::fs::read(&out).unwrap() == committed,
        "{ck}: the export differs from the committed {onnx}"
    );
    let lib = Checkpoint::read(fixture(ck)).unwrap().onnx().unwrap();
    assert!(
        lib == committed,
        "{ck}: Checkpoint::onnx differs from {onnx}"
    );
}

/// `|a - b| <= 1e-5 · max(1, max |b|)` everywhere; the largest relative
/// error.
fn assert_close(what: &str, got: &[f64], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(1f64, |a, &v| a.max((v as f64).abs()));
    let mut worst = 0f64;
    for (i, (g, &w)) in got.iter().zip(want).enumerate() {
        let e = (g - w as f64).abs() / scale;
        assert!(e <= 1e-5, "{what} [{i}]: {g} vs the reference {w}");
        worst = worst.max(e);
    }
    eprintln!("{what}: max relative error {worst:.3e}");
    worst
}

/// The series model (features t and y, 2 layers, horizon 2): the export
/// is the committed file, `Model::predict` gives onnxruntime's `y` for
/// every window of the CSV, and the state after stepping window 0 is
/// onnxruntime's `h_n`, `c_n`.
#[test]
fn onnx_series_export_is_deterministic_and_predicts_as_onnxruntime() {
    assert_exports_as_committed("onnx_series.st", "onnx_series.onnx");
    let expected = TensorFile::read(fixture("onnx_series_expected.safetensors")).unwrap();
    let y = expected.f32("y").unwrap().unwrap();
    let mut m = Model::load(fixture("onnx_series.st")).unwrap();
    let rows = m.csv_rows(fixture("series.csv")).unwrap();
    let pred = m.predict(&rows).unwrap();
    assert_eq!(y.shape, [pred.len(), 2]);
    let flat: Vec<f64> = pred.into_iter().flatten().collect();
    assert_close("series y", &flat, &y.data);
    for r in &rows[..8] {
        m.step(r).unwrap();
    }
    let state = m.state().unwrap().0;
    let (h, c) = state.split_at(state.len() / 2);
    let want = |n: &str| expected.f32(n).unwrap().unwrap();
    let (hn, cn) = (want("h_n"), want("c_n"));
    assert_eq!(hn.shape, [2, 1, 8]);
    let wide = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    assert_close("series h_n", &wide(h), &hn.data);
    assert_close("series c_n", &wide(c), &cn.data);
}

/// The character model: the export is the committed file, and
/// `Model::step_token` over the prompt gives onnxruntime's logits at
/// every step.
#[test]
fn onnx_text_export_is_deterministic_and_steps_as_onnxruntime() {
    assert_exports_as_committed("onnx_text.st", "onnx_text.onnx");
    let expected = TensorFile::read(fixture("onnx_text_expected.safetensors")).unwrap();
    let want = expected.f32("logits").unwrap().unwrap();
    let mut m = Model::load(fixture("onnx_text.st")).unwrap();
    let vocab = m.vocab().unwrap().clone();
    let prompt = &expected.metadata["prompt"];
    assert_eq!(want.shape, [prompt.chars().count(), vocab.len()]);
    let mut got = Vec::new();
    for id in vocab.encode(prompt).unwrap() {
        got.extend(m.step_token(id).unwrap().into_iter().map(f64::from));
    }
    assert_close("text logits", &got, &want.data);
}

/// A model with a norm, residual links or another cell, and a bad OUT,
/// are refused with exit 2 and one line naming them, and nothing is
/// written.
#[test]
fn onnx_export_refuses_what_it_cannot_express() {
    let d = TempDir::new("onnx-refused");
    let out = d.path().join("out.onnx");
    let refused = |ck: &Path, out: &Path, want: &[&str]| {
        let before = d.files();
        let r = run(&["export", "--checkpoint", s(ck), "--to", "onnx", s(out)]);
        assert_refused(&r, want, &format!("export {}", ck.display()));
        assert_eq!(d.files(), before, "nothing written");
    };
    for (name, flags, want) in [
        ("layer.st", &["--norm", "layer"][..], "--norm layer"),
        (
            "cellnorm.st",
            &["--norm", "layer-cell"],
            "--norm layer-cell",
        ),
        ("residual.st", &["--residual"], "--residual"),
        ("gru.st", &["--cell", "gru"], "--cell gru"),
        ("zoneout.st", &["--zoneout-c", "0.1"], "--zoneout-c"),
    ] {
        let ck = series_checkpoint(&d, name, &[flags, &["--steps", "1"]].concat());
        refused(&ck, &out, &[name, want, "not in the ONNX export"]);
    }
    let ck = fixture("onnx_series.st");
    refused(&ck, &d.path().join("no/such/dir/out.onnx"), &["OUT"]);
    refused(&d.path().join("none.st"), &out, &["none.st"]);
    // The checkpoint itself as OUT.
    let copy = d.path().join("copy.st");
    std::fs::copy(&ck, &copy).unwrap();
    refused(&copy, &copy, &["OUT"]);
}

/// The models of make_export_norm_fixtures.py (norms between layers,
/// residual links, the GRU, as the README module's per-layer form or
/// `nn.GRU`): each committed checkpoint exports, from the binary and the
/// library, the keys that PyTorch loaded with strict=True, and the engine
/// gives what the README module gave on them (1e-5): every window's
/// prediction (series) or the logits at every step of a prompt (text).
#[test]
fn norm_residual_gru_exports_predict_as_pytorch() {
    let d = TempDir::new("export-norms");
    let out = d.path().join("out.safetensors");
    let names = [
        "layer_residual",
        "batch_last",
        "gru",
        "step_batch_last_residual",
        "gru_batch_residual_attention",
        "text_layer_last_residual",
        "text_gru_batch",
        // The README's `Recurrent` module.
        "layer_cell_residual",
        "recurrent_batch",
        "indrnn_tanh_layer",
        "zoneout",
        "gru_zoneout_residual",
        "text_step_batch",
        "text_recurrent_batch",
        "text_indrnn_zoneout",
    ];
    for name in names {
        let ck = fixture(&format!("pt_{name}.st"));
        let expected =
            TensorFile::read(fixture(&format!("pt_{name}_expected.safetensors"))).unwrap();
        let meta = &expected.metadata;
        let json = export(&ck, &out);
        let module: serde_json::Value = serde_json::from_str(&meta["module"]).unwrap();
        assert_eq!(json["module"], module, "{name}: the module's arguments");
        let (floats, ints) = TensorFile::read(&out)
            .unwrap()
            .params_and_counters()
            .unwrap();
        let mut written: Vec<String> = floats.into_iter().map(|t| t.name).collect();
        written.extend(ints.into_keys());
        written.sort();
        let (tensors, counters, _) = Checkpoint::read(&ck).unwrap().pytorch().unwrap();
        let mut lib: Vec<String> = tensors.into_iter().map(|t| t.name).collect();
        lib.extend(counters.into_keys());
        lib.sort();
        let keys: Vec<String> = meta["keys"].split(',').map(String::from).collect();
        assert_eq!(written, keys, "{name}: the README module's state_dict keys");
        assert_eq!(lib, keys, "{name}: Checkpoint::pytorch's keys");
        // `--init` takes the export back, every value bit for bit.
        let net = Checkpoint::read(&ck).unwrap().config().net.clone();
        let ((floats, ints), _) = lstm_wgpu::run::checkpoint::init_file(&net, &out).unwrap();
        let (mine, my_ints) = TensorFile::read(&ck)
            .unwrap()
            .params_and_counters()
            .unwrap();
        for (k, v) in &ints {
            assert_eq!(my_ints.get(k), Some(v), "{name}: {k} through --init");
        }
        for t in &floats {
            let m = mine.iter().find(|m| m.name == t.name).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&t.data),
                bits(&m.data),
                "{name}: {} through --init",
                t.name
            );
        }
        assert_eq!(
            floats.len() + ints.len(),
            keys.len(),
            "{name}: tensors through --init"
        );
        let mut m = Model::load(&ck).unwrap();
        if let Some(prompt) = meta.get("prompt") {
            let want = expected.f32("logits").unwrap().unwrap();
            let vocab = m.vocab().unwrap().clone();
            assert_eq!(want.shape, [prompt.chars().count(), vocab.len()]);
            let mut got = Vec::new();
            for id in vocab.encode(prompt).unwrap() {
                got.extend(m.step_token(id).unwrap().into_iter().map(f64::from));
            }
            assert_close(&format!("{name} logits"), &got, &want.data);
        } else {
            let want = expected.f32("pred_z").unwrap().unwrap();
            let (mean, std) = (
                meta["mean"].parse::<f64>().unwrap(),
                meta["std"].parse::<f64>().unwrap(),
            );
            let rows = m.csv_rows(fixture("series.csv")).unwrap();
            let z: Vec<f64> = m
                .predict(&rows)
                .unwrap()
                .iter()
                .map(|p| (p[0] - mean) / std)
                .collect();
            assert_close(&format!("{name} predictions"), &z, &want.data);
        }
    }
}
