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

/// Trains `STEPS` steps of `net` on sequences `from..from + b` of every
/// global batch (all of them with no reducer), `setup` applied to the
/// trainer before its first step: the losses and the weights, and the
/// submits per step.
fn train_net(
    net: &NetConfig,
    b: usize,
    r: Option<ThreadReducer>,
    setup: impl Fn(&mut Trainer),
) -> ((Vec<f32>, Vec<f32>), usize) {
    let head = net.head;
    let mut opt = OptimConfig::adam();
    opt.lr = 0.01;
    let mut tr = Trainer::new(
        common::ctx(),
        net.clone(),
        init_values(net, 3),
        b,
        Some(1.0),
        &opt,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let from = r.as_ref().map_or(0, |r| r.rank() * b);
    tr.set_reducer(r.map(|r| Box::new(r) as Box<dyn Reducer>));
    setup(&mut tr);
    let (f, o) = match head {
        Head::Sequence { features, outputs } => (features, outputs),
        Head::Regression { features, outputs } => (features, outputs),
        _ => (1, 1),
    };
    let cols = (from, b);
    let lens = &LENS[from..from + b];
    let mut losses = Vec::new();
    for k in 0..STEPS {
        let (ids, tgt, x, y) = data(k, (f, o));
        let (ids, tgt) = (columns(&ids, B, 1, cols), columns(&tgt, B, 1, cols));
        let (x, y) = (columns(&x, B, f, cols), columns(&y, B, o, cols));
        // A regression head predicts once per sequence: the last row's
        // targets.
        let y = match head {
            Head::Regression { .. } => y[y.len() - b * o..].to_vec(),
            _ => y,
        };
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
    let submits = tr.dispatches_per_step(T).map_or(0, |d| d.1);
    ((losses, w.unwrap_or_else(|e| panic!("{e}"))), submits)
}

fn two_ranks_equal_one(head: Head) {
    two_ranks_equal_one_of(&NetConfig::new(head, 8, 2));
}

fn two_ranks_equal_one_of(net: &NetConfig) {
    let (l1, w1) = train_net(net, B, None, |_| {}).0;
    let ranks = ThreadGroup::new(2)
        .run(|r| Ok(train_net(net, B / 2, Some(r), |_| {}).0))
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
    assert_ne!(bits(&w1), bits(&init_values(net, 3)));
}

/// Weight-drop's mask is per weight, drawn alike on every rank.
#[test]
fn weight_drop_on_two_ranks() {
    let mut net = NetConfig::new(Head::Language { vocab: 7, embed: 4 }, 8, 2);
    net.weight_drop = 0.4;
    two_ranks_equal_one_of(&net);
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

/// Gradient buckets change when the sums run, never what they add: for
/// every cell path, cell, norm, head and precision, two ranks summing each layer's
/// gradients as soon as backward has made them final (buckets of 0
/// bytes) take the very steps of two ranks summing all of them after
/// backward (one bucket), bit for bit. A bucket summed before a later
/// dispatch wrote its gradients would lose that dispatch's part.
#[test]
fn buckets_change_no_bit() {
    use lstm_wgpu::kernels::cell::Cell;
    use lstm_wgpu::model::norm::Norm;
    use lstm_wgpu::schedule::CellPath;
    use lstm_wgpu::train::Attention;
    let lang = Head::Language { vocab: 7, embed: 4 };
    let seq = Head::Sequence {
        features: 3,
        outputs: 2,
    };
    let reg = Head::Regression {
        features: 3,
        outputs: 2,
    };
    let net = |head, layers| NetConfig::new(head, 8, layers);
    let with = |mut n: NetConfig, f: &dyn Fn(&mut NetConfig)| {
        f(&mut n);
        n
    };
    // (what, net, forced path, token projection); f16-mixed below.
    let mut cases: Vec<(&str, NetConfig, CellPath, bool)> = vec![
        (
            "wavefront, 3 layers",
            net(lang, 3),
            CellPath::Wavefront,
            false,
        ),
        ("token projection", net(lang, 2), CellPath::Wavefront, true),
        ("per-step", net(lang, 2), CellPath::PerStep, false),
        (
            "persistent, LayerNorm between, residual",
            with(net(seq, 3), &|n| {
                n.norm = Norm::Layer { last: true };
                n.residual = true;
            }),
            CellPath::Persistent,
            false,
        ),
        (
            "LayerNorm cell",
            with(net(seq, 2), &|n| n.norm = Norm::LayerCell),
            CellPath::PerStep,
            false,
        ),
        (
            "GRU, weight-drop",
            with(net(seq, 2), &|n| {
                n.cell = Cell::Gru;
                n.weight_drop = 0.3;
            }),
            CellPath::PerStep,
            false,
        ),
        (
            "projections",
            with(net(seq, 2), &|n| n.proj = 4),
            CellPath::PerStep,
            false,
        ),
        (
            "IndRNN, attention",
            with(net(reg, 2), &|n| {
                n.cell = Cell::IndRnn { relu: false };
                n.attention = Some(Attention::Learned);
            }),
            CellPath::Wavefront,
            false,
        ),
    ];
    cases.push(("f16-mixed", net(lang, 2), CellPath::Wavefront, false));
    for (what, net, path, tp) in &cases {
        let run = |bytes: usize| {
            ThreadGroup::new(2)
                .run(|r| {
                    let setup = |tr: &mut Trainer| {
                        common::set_path(&mut tr.lstm, Some(*path));
                        tr.set_token_projection(*tp)
                            .unwrap_or_else(|e| panic!("{e}"));
                        if *what == "f16-mixed" {
                            let half = lstm_wgpu::model::precision::Precision::F16Mixed;
                            tr.set_precision(half).unwrap_or_else(|e| panic!("{e}"));
                        }
                        tr.set_bucket_bytes(bytes);
                    };
                    Ok(train_net(net, B / 2, Some(r), setup))
                })
                .unwrap_or_else(|e| panic!("{what}: {e}"))
                .swap_remove(0)
        };
        let ((l1, w1), one) = run(usize::MAX);
        let ((l2, w2), many) = run(0);
        assert_eq!(one, 2, "{what}: one bucket, one submit more");
        // The head, every layer, and what is final only at the end.
        assert!(many > net.layers + 1, "{what}: {many} submits");
        let bits = |w: &[f32]| w.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(l1, l2, "{what}: losses");
        assert!(bits(&w1) == bits(&w2), "{what}: the weights differ");
    }
}
