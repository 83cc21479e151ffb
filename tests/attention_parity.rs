//! The attention head (`--head attention`) against PyTorch: the fixtures of
//! `tests/fixtures/attention/` (made by `make_attention_fixtures.py` with the
//! README's `LstmWgpu` module in float64) hold the weights, a batch with
//! lengths, and the loss, predictions, attention weights and the gradient of
//! every parameter. A training step at learning rate 0 must give that loss
//! and those gradients, and an evaluation pass those predictions and weights.
//! Tolerance: max |gpu − torch| / max |torch| ≤ 1e-4 per tensor (the loss:
//! relative 1e-4).

mod common;

use common::assert_close;
use lstm_wgpu::infer::{checkpoint_name, table_values};
use lstm_wgpu::kernels::optim::OptimConfig;
use lstm_wgpu::model::NamedTensor;
use lstm_wgpu::train::{Attention, Carry, Head, NetConfig, StepData, Trainer};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const TOL: f64 = 1e-4;

/// Max |a − b| / max |b|, for the printed worst case.
fn rel(got: &[f32], want: &[f64]) -> f64 {
    let scale = want.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
    let d = got.iter().zip(want);
    d.fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs())) / scale
}

struct Fixture {
    path: PathBuf,
    config: serde_json::Value,
    floats: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    lengths: Vec<usize>,
}

fn load(name: &str) -> Fixture {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/attention")
        .join(format!("{name}.safetensors"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap_or_else(|e| panic!("{e}"));
    let config = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("config"))
        .map(|c| serde_json::from_str(c).unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_else(|| panic!("{name}: no config metadata"));
    let mut floats = BTreeMap::new();
    let mut lengths = Vec::new();
    for (k, v) in st.tensors() {
        match v.dtype() {
            Dtype::F32 => {
                let d = (v.data().chunks_exact(4))
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                floats.insert(k, (v.shape().to_vec(), d));
            }
            Dtype::I64 if k == "lengths" => {
                lengths = (v.data().chunks_exact(8))
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as usize)
                    .collect();
            }
            d => panic!("{name}: {k} has dtype {d:?}"),
        }
    }
    Fixture {
        path,
        config,
        floats,
        lengths,
    }
}

impl Fixture {
    fn int(&self, k: &str) -> usize {
        self.config[k]
            .as_u64()
            .unwrap_or_else(|| panic!("config {k}")) as usize
    }

    fn get(&self, k: &str) -> &[f32] {
        &self
            .floats
            .get(k)
            .unwrap_or_else(|| panic!("{}: no tensor {k}", self.path.display()))
            .1
    }

    fn f64s(&self, k: &str) -> Vec<f64> {
        self.get(k).iter().map(|&v| v as f64).collect()
    }
}

fn check(name: &str) {
    let fx = load(name);
    let (t, b) = (fx.int("seq_len"), fx.int("batch"));
    let net = {
        let mut n = NetConfig::new(
            Head::Regression {
                features: fx.int("input_size"),
                outputs: fx.int("outputs"),
            },
            fx.int("hidden_size"),
            fx.int("num_layers"),
        );
        n.attention = Some(match fx.config["attention"].as_str() {
            Some("dot") => Attention::Dot,
            Some("learned") => Attention::Learned,
            other => panic!("{name}: attention {other:?}"),
        });
        n
    };
    let tensors: Vec<NamedTensor> = (fx.floats.iter())
        .map(|(k, (s, d))| NamedTensor::new(k.clone(), s.clone(), d.clone()))
        .collect();
    let values =
        table_values(&net.table(), &tensors, &fx.path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let ctx = common::ctx();
    let mut tr = Trainer::new(
        ctx.clone(),
        net.clone(),
        values,
        b,
        None,
        &OptimConfig::sgd(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (x, y) = (fx.get("input"), fx.get("target"));
    let data = StepData::series(x, y).with_lengths(&fx.lengths);
    let s = tr
        .step(t, &data, Carry::Zero, 0.0)
        .unwrap_or_else(|e| panic!("{e}"));
    let want = fx.get("expected.loss")[0] as f64;
    assert!(
        ((s.loss as f64) - want).abs() <= TOL * want.abs(),
        "{name}: loss {} vs torch {want}",
        s.loss
    );
    let grads = tr
        .lstm
        .model
        .grad_tensors(&ctx)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(grads.len(), net.table().entries.len());
    let mut worst = (0f64, String::new());
    for g in &grads {
        let param = g.name.strip_prefix("grad.").unwrap_or(&g.name);
        let key = format!("grad.{}", checkpoint_name(param));
        let want = fx.f64s(&key);
        assert_close(&format!("{name}: {key}"), &g.data, &want, TOL);
        let e = rel(&g.data, &want);
        if e > worst.0 {
            worst = (e, key);
        }
    }
    println!("{name}: worst gradient error {:.2e} ({})", worst.0, worst.1);
    let weights = fx.f64s("expected.weights");
    let a = tr.attention_weights(t).unwrap_or_else(|e| panic!("{e}"));
    assert_close(&format!("{name}: weights (train)"), &a, &weights, TOL);

    // Evaluation: the same weights (lr 0), predictions and weights.
    let loss = tr
        .eval(t, &data, Carry::Zero)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loss, s.loss, "{name}: eval loss");
    let pred = tr.head_output(t).unwrap_or_else(|e| panic!("{e}"));
    assert_close(
        &format!("{name}: prediction"),
        &pred,
        &fx.f64s("expected.prediction"),
        TOL,
    );
    let a = tr.attention_weights(t).unwrap_or_else(|e| panic!("{e}"));
    assert_close(&format!("{name}: weights (eval)"), &a, &weights, TOL);
}

#[test]
fn dot_scores_with_lengths_two_layers() {
    check("dot_len");
}

#[test]
fn learned_query_with_lengths() {
    check("learned_len");
}

#[test]
fn learned_query_h32() {
    check("learned_h32");
}

#[test]
fn dot_scores_h33_three_outputs() {
    check("dot_h33");
}

/// Only a model with attention pooling has weights to read, and only a
/// head that reads one vector per sequence takes the pooling.
#[test]
fn attention_is_refused_by_name_where_it_does_not_apply() {
    let ctx = common::ctx();
    let plain = NetConfig::new(
        Head::Regression {
            features: 1,
            outputs: 1,
        },
        8,
        1,
    );
    let v = lstm_wgpu::train::init_values(&plain, 0);
    let tr = Trainer::new(ctx.clone(), plain, v, 2, None, &OptimConfig::sgd())
        .unwrap_or_else(|e| panic!("{e}"));
    let e = tr.attention_weights(3).err().map(|e| e.to_string());
    assert!(
        e.as_deref()
            .is_some_and(|e| e.contains("no attention pooling")),
        "{e:?}"
    );
    let mut seq = NetConfig::new(
        Head::Sequence {
            features: 1,
            outputs: 1,
        },
        8,
        1,
    );
    seq.attention = Some(Attention::Dot);
    let v = lstm_wgpu::train::init_values(&seq, 0);
    let e = Trainer::new(ctx, seq, v, 2, None, &OptimConfig::sgd())
        .err()
        .map(|e| e.to_string());
    assert!(
        e.as_deref()
            .is_some_and(|e| e.contains("attention pooling (dot)")),
        "{e:?}"
    );
}
