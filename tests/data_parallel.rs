//! The library's data-parallel step (`Trainer::set_reducer`) without MPI:
//! two trainers in two threads, each on its half of a global batch with
//! unequal valid lengths, summing through a `ThreadGroup`, take
//! the steps one trainer takes on the whole batch: the same losses and
//! weights to 1e-5, and bit-identical weights on both ranks. The halves
//! hold 7 and 5 valid positions, so a loss averaged per rank and then over
//! the ranks would differ from the mean over the global batch.

mod common;

use lstm_wgpu::kernels::optim::OptimConfig;
use lstm_wgpu::train::reduce::{Reducer, ThreadGroup, ThreadReducer, columns};
use lstm_wgpu::train::{Carry, Head, NetConfig, StepData, Trainer, init_values};

const T: usize = 5;
const B: usize = 4;
const LENS: [usize; B] = [5, 2, 4, 1];
const STEPS: usize = 3;

/// Time-major batch data of step `k`: ids, targets, features, targets.
type Data = (Vec<u32>, Vec<u32>, Vec<f32>, Vec<f32>);

fn data(k: usize, (f, o): (usize, usize)) -> Data {
    let ids = (0..T * B).map(|i| ((i * 3 + k) % 7) as u32).collect();
    let tgt = (0..T * B).map(|i| ((i * 5 + k) % 7) as u32).collect();
    let x = (0..T * B * f)
        .map(|i| (((i + k) * 7 % 13) as f32 - 6.0) / 6.0)
        .collect();
    let y = (0..T * B * o)
        .map(|i| (((i + k) * 3 % 5) as f32 - 2.0) / 2.0)
        .collect();
    (ids, tgt, x, y)
}

/// Trains `STEPS` steps on sequences `from..from + b` of every global
/// batch (all of them with no reducer); the losses and the weights.
fn train(head: Head, b: usize, r: Option<ThreadReducer>) -> (Vec<f32>, Vec<f32>) {
    let net = NetConfig::new(head, 8, 2);
    let mut opt = OptimConfig::adam();
    opt.lr = 0.01;
    let mut tr = Trainer::new(
        common::ctx(),
        net.clone(),
        init_values(&net, 3),
        b,
        Some(1.0),
        &opt,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let from = r.as_ref().map_or(0, |r| r.rank() * b);
    tr.set_reducer(r.map(|r| Box::new(r) as Box<dyn Reducer>));
    let (f, o) = match head {
        Head::Sequence { features, outputs } => (features, outputs),
        _ => (1, 1),
    };
    let cols = (from, b);
    let lens = &LENS[from..from + b];
    let mut losses = Vec::new();
    for k in 0..STEPS {
        let (ids, tgt, x, y) = data(k, (f, o));
        let (ids, tgt) = (columns(&ids, B, 1, cols), columns(&tgt, B, 1, cols));
        let (x, y) = (columns(&x, B, f, cols), columns(&y, B, o, cols));
        let batch = match head {
            Head::Language { .. } => StepData::tokens(&ids, &tgt),
            _ => StepData::series(&x, &y),
        };
        let s = tr
            .step(T, &batch.with_lengths(lens), Carry::Zero, 0.01)
            .unwrap_or_else(|e| panic!("{e}"));
        losses.push(s.loss);
    }
    let m = &tr.lstm.model;
    let w = tr.ctx().read_f32(&m.params, 0, m.table.total);
    (losses, w.unwrap_or_else(|e| panic!("{e}")))
}

fn two_ranks_equal_one(head: Head) {
    let (l1, w1) = train(head, B, None);
    let ranks = ThreadGroup::new(2)
        .run(|r| Ok(train(head, B / 2, Some(r))))
        .unwrap_or_else(|e| panic!("{e}"));
    let bits = |w: &[f32]| w.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&ranks[0].1),
        bits(&ranks[1].1),
        "the ranks' weights differ"
    );
    assert_eq!(ranks[0].0, ranks[1].0, "the ranks' losses differ");
    for (a, b) in l1.iter().zip(&ranks[0].0) {
        assert!((a - b).abs() <= 1e-5 * a.abs(), "loss {a} against {b}");
    }
    let scale = w1.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in w1.iter().zip(&ranks[0].1).enumerate() {
        assert!((a - b).abs() <= 1e-5 * scale, "weight {i}: {a} against {b}");
    }
    // The steps moved the weights: the comparison is not of the start.
    let net = NetConfig::new(head, 8, 2);
    assert_ne!(bits(&w1), bits(&init_values(&net, 3)));
}

#[test]
fn language_model_with_padding() {
    two_ranks_equal_one(Head::Language { vocab: 7, embed: 4 });
}

#[test]
fn sequence_model_with_padding() {
    two_ranks_equal_one(Head::Sequence {
        features: 3,
        outputs: 2,
    });
}
