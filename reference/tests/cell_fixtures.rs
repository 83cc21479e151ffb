//! The GRU and projected-LSTM references against PyTorch: every tensor of
//! each `tests/fixtures/cells/NAME.expected.safetensors` (made by
//! `make_cell_fixtures.py`).
//!
//! Tolerance: both sides compute in f64 from the same f32 values, and the
//! fixture rounds PyTorch's result to f32, which moves each value by at most
//! 2⁻²⁴ ≈ 6e-8 of itself. So `max|a − b| / max|ref|` of a correct reference
//! stays below 6e-8 (plus ~1e-15 of f64 summation order); 1e-6 leaves a
//! margin of 16 while any semantic mistake (gate order, where `r` applies,
//! a projection or length slip) shows as 1e-3 or more.

use lstm_wgpu_reference::*;
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::PathBuf;

const TOL: f64 = 1e-6;

/// Name → (shape, values as f64; int64 converted).
type Tensors = BTreeMap<String, (Vec<usize>, Vec<f64>)>;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/cells")
}

fn load(name: &str) -> (Tensors, BTreeMap<String, String>) {
    let path = dir().join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let tensors = (st.tensors().into_iter())
        .map(|(k, v)| {
            let vals = match v.dtype() {
                Dtype::F32 => (v.data().chunks_exact(4))
                    .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
                    .collect(),
                Dtype::I64 => (v.data().chunks_exact(8))
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                d => panic!("{name}: {k} has dtype {d:?}"),
            };
            (k, (v.shape().to_vec(), vals))
        })
        .collect();
    let meta = meta.metadata().clone().unwrap_or_default();
    (tensors, meta.into_iter().collect())
}

/// `[a, b, f]` → `[b, a, f]` (batch-first ↔ time-major).
fn swap01(v: &[f64], a: usize, b: usize) -> Vec<f64> {
    let f = v.len() / (a * b);
    (0..b)
        .flat_map(|j| (0..a).flat_map(move |i| (i * b + j) * f..(i * b + j + 1) * f))
        .map(|k| v[k])
        .collect()
}

fn take(t: &mut Tensors, name: &str) -> Vec<f64> {
    t.remove(name)
        .unwrap_or_else(|| panic!("missing tensor {name}"))
        .1
}

/// Runs one fixture; returns the worst relative error.
fn check_fixture(name: &str) -> f64 {
    let (mut wt, _) = load(&format!("{name}.weights.safetensors"));
    let (mut it, imeta) = load(&format!("{name}.inputs.safetensors"));
    let (expected, emeta) = load(&format!("{name}.expected.safetensors"));
    let conf: serde_json::Value = serde_json::from_str(&emeta["config"]).unwrap();
    let (int, flag) = (
        |k: &str| conf[k].as_u64().unwrap() as usize,
        |k: &str| conf[k].as_bool().unwrap(),
    );
    let bf = flag("batch_first");
    assert_eq!(imeta["batch_first"], bf.to_string());
    let cell = match (conf["cell"].as_str().unwrap(), int("proj_size")) {
        ("gru", 0) => RefCellKind::Gru,
        ("lstm", 0) => RefCellKind::Lstm,
        ("lstm", p) => RefCellKind::LstmProj { proj_size: p },
        other => panic!("{name}: cell {other:?}"),
    };
    let c = RefConfig {
        input_size: int("input_size"),
        hidden_size: int("hidden_size"),
        num_layers: int("num_layers"),
        bidirectional: flag("bidirectional"),
        bias: flag("bias"),
        cell,
    };
    let shape = &it["input"].0;
    let (t, b) = if bf {
        (shape[1], shape[0])
    } else {
        (shape[0], shape[1])
    };
    let time_major = |v: Vec<f64>| if bf { swap01(&v, b, t) } else { v };

    let sfx = ["", "_reverse"];
    let keys: Vec<String> = (0..c.num_layers)
        .flat_map(|k| (0..c.dirs()).map(move |d| format!("l{k}{}", sfx[d])))
        .collect();
    let mut cells = Vec::new();
    for key in &keys {
        let mut opt = |n: &str| wt.remove(&format!("{n}_{key}")).map(|v| v.1);
        cells.push(RefDirWeights {
            w_ih: opt("weight_ih").expect("weight_ih"),
            w_hh: opt("weight_hh").expect("weight_hh"),
            b_ih: opt("bias_ih"),
            b_hh: opt("bias_hh"),
            w_hr: opt("weight_hr"),
        });
    }
    assert!(wt.is_empty(), "{name}: unused weights {:?}", wt.keys());
    let w = RefWeights { cells };
    let inp = RefInputs {
        seq_len: t,
        batch: b,
        x: time_major(take(&mut it, "input")),
        h0: it.remove("h0").map(|v| v.1),
        c0: it.remove("c0").map(|v| v.1),
        lengths: (it.remove("lengths")).map(|v| v.1.iter().map(|&l| l as usize).collect()),
    };
    let up = RefUpstream {
        grad_output: time_major(take(&mut it, "grad_output")),
        grad_h_n: take(&mut it, "grad_h_n"),
        grad_c_n: it.remove("grad_c_n").map_or(Vec::new(), |v| v.1),
    };
    assert!(it.is_empty(), "{name}: unused inputs {:?}", it.keys());
    let (out, g) = backward(&c, &w, &inp, &up);

    // Ours, in the files' layout and names.
    let file_layout = |v: Vec<f64>| if bf { swap01(&v, t, b) } else { v };
    let mut ours: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    ours.insert("output".into(), file_layout(out.output));
    ours.insert("h_n".into(), out.h_n);
    ours.insert("grad.input".into(), file_layout(g.input));
    if cell.has_c() {
        ours.insert("c_n".into(), out.c_n);
    }
    if inp.h0.is_some() {
        ours.insert("grad.h0".into(), g.h0);
    }
    if inp.c0.is_some() {
        ours.insert("grad.c0".into(), g.c0);
    }
    for (key, gc) in keys.iter().zip(g.weights.cells) {
        let named = [
            ("weight_ih", Some(gc.w_ih)),
            ("weight_hh", Some(gc.w_hh)),
            ("bias_ih", gc.b_ih),
            ("bias_hh", gc.b_hh),
            ("weight_hr", gc.w_hr),
        ];
        for (n, v) in named {
            if let Some(v) = v {
                ours.insert(format!("grad.{n}_{key}"), v);
            }
        }
    }
    let names = |m: &mut dyn Iterator<Item = &String>| m.cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&mut expected.keys()),
        names(&mut ours.keys()),
        "{name}: tensor names"
    );

    let mut worst: f64 = 0.0;
    for (k, (shape, want)) in &expected {
        let got = &ours[k];
        assert_eq!(
            shape.iter().product::<usize>(),
            got.len(),
            "{name}: {k} size"
        );
        let scale = want.iter().fold(0.0f64, |a, v| a.max(v.abs())).max(1e-30);
        let err = (got.iter().zip(want))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
            / scale;
        assert!(err <= TOL, "{name}: {k} relative error {err:e} > {TOL:e}");
        worst = worst.max(err);
    }
    worst
}

#[test]
fn cells_match_pytorch() {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| {
            let f = e.unwrap().file_name().into_string().unwrap();
            f.strip_suffix(".expected.safetensors").map(str::to_owned)
        })
        .collect();
    names.sort();
    // The six configurations of make_cell_fixtures.py: none may go missing.
    assert_eq!(names.len(), 6, "{names:?}");
    for name in &names {
        let worst = check_fixture(name);
        eprintln!("{name}: worst relative error {worst:e}");
    }
}
