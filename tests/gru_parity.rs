//! Parity of `lstm-wgpu grad --cell gru` with PyTorch `nn.GRU` (fixtures
//! in `tests/fixtures/cells/`, made by `make_cell_fixtures.py`), every
//! output and gradient within the LSTM's tolerance, and the GRU's own bad
//! inputs: exit 2, one line naming the tensor, no output file.

mod common;

use common::parity::*;
use std::path::PathBuf;

const REL_TOL: f32 = 1e-4;

/// The GRU fixtures (uni/bidirectional, 1–3 layers, lengths, bias off,
/// batch_first, h0).
const GRU: &[&str] = &["gru_uni1", "gru_bi2_len", "gru_nobias3_bf", "gru_h0"];

fn fixture(name: &str, kind: &str) -> PathBuf {
    fixture_in(&fixtures_dir("cells"), name, kind)
}

#[test]
fn gru_parity_with_pytorch() {
    for name in GRU {
        check_parity_with(&fixtures_dir("cells"), name, REL_TOL, &["--cell", "gru"]);
    }
}

/// `grad --cell gru --precision f16-mixed` against the same fixtures,
/// within the LSTM's f16-mixed tolerance.
#[test]
fn gru_parity_f16_mixed() {
    for name in GRU {
        let args = ["--cell", "gru", "--precision", "f16-mixed"];
        check_parity_with(&fixtures_dir("cells"), name, 1e-2, &args);
    }
}

/// The same fixtures on the wavefront, the tiled cells and the persistent
/// loop (forced by `LSTM_WGPU_CELL_PATH`, as a user would).
#[test]
fn gru_parity_on_every_path() {
    for (path, cell) in [
        ("per-step", "tiled"),
        ("wavefront", "direct"),
        ("persistent", "direct"),
    ] {
        for name in ["gru_nobias3_bf", "gru_h0"] {
            let spec = run_spec(&fixture(name, "inputs"));
            let tmp = TempDir::new(name);
            let out = tmp.join("grads.safetensors");
            let mut args = spec.args.clone();
            args.extend(["--cell".into(), "gru".into()]);
            if spec.batch_first {
                args.push("--batch-first".into());
            }
            let r = std::process::Command::new(env!("CARGO_BIN_EXE_lstm-wgpu"))
                .env("LSTM_WGPU_CELL_PATH", path)
                .env("LSTM_WGPU_CELL", cell)
                .arg("grad")
                .arg("--weights")
                .arg(fixture(name, "weights"))
                .arg("--inputs")
                .arg(fixture(name, "inputs"))
                .arg("--out")
                .arg(&out)
                .args(&args)
                .output()
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                r.status.success(),
                "{name} {path}/{cell}: {}",
                String::from_utf8_lossy(&r.stderr)
            );
            let got = read(&out);
            let got = parse(&got, &out);
            let exp_path = fixture(name, "expected");
            let exp = read(&exp_path);
            let exp = parse(&exp, &exp_path);
            for t in exp.names() {
                let e = exp.tensor(t).expect("listed");
                let a = got
                    .tensor(t)
                    .unwrap_or_else(|_| panic!("{name} {path}: no {t}"));
                assert_close(name, t, &e, &a, REL_TOL);
            }
            // No c for a GRU.
            assert!(got.tensor("c_n").is_err(), "{name}: c_n written");
        }
    }
}

/// An nn.LSTM state_dict is not a GRU's: the weights are named.
#[test]
fn gru_rejects_lstm_weights() {
    let dir = TempDir::new("bad");
    let spec = RunSpec {
        batch_first: false,
        args: vec!["--cell".into(), "gru".into()],
    };
    let lstm = fixtures_dir("");
    run_rejected(
        "lstm weights as a GRU",
        &dir,
        &fixture_in(&lstm, "uni1", "weights"),
        &fixture("gru_uni1", "inputs"),
        &spec,
        "weight_hh_l0",
        true,
    );
}

/// A GRU has no c: c0 or grad_c_n in the inputs are refused by name.
#[test]
fn gru_rejects_c_tensors() {
    for name in ["c0", "grad_c_n"] {
        let dir = TempDir::new("bad");
        let inputs = dir.join("inputs.safetensors");
        let mut i = load(&fixture("gru_h0", "inputs"));
        let h0 = i.tensors["h0"].clone();
        i.tensors.insert(name.into(), h0);
        save(&i, &inputs);
        let spec = RunSpec {
            batch_first: false,
            args: vec!["--cell".into(), "gru".into()],
        };
        run_rejected(
            name,
            &dir,
            &fixture("gru_h0", "weights"),
            &inputs,
            &spec,
            name,
            true,
        );
    }
}
