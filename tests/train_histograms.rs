//! The trainer's histogram steps: only every N-th step takes them, other
//! steps record exactly the dispatches of a run without; parameters and
//! gradients agree with the tensors read back, activations count the valid
//! positions only (padding left out), gates stay in their ranges; models
//! that cache another layout are refused.

mod common;

use lstm_wgpu::kernels::histogram::SegmentHistogram;
use lstm_wgpu::kernels::optim::OptimConfig;
use lstm_wgpu::model::norm::Norm;
use lstm_wgpu::train::{
    Carry, Head, HistSettings, NetConfig, StepData, StepStats, Trainer, init_values,
};

fn net(layers: usize) -> NetConfig {
    let head = Head::Sequence {
        features: 2,
        outputs: 1,
    };
    NetConfig::new(head, 12, layers)
}

fn trainer(net: &NetConfig, b: usize, clip: Option<f32>) -> Trainer {
    let mut opt = OptimConfig::adamw();
    opt.lr = 0.01;
    Trainer::new(
        common::ctx(),
        net.clone(),
        init_values(net, 5),
        b,
        clip,
        &opt,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// One step on a [T, B, 2] batch of lengths `lens`.
fn step(tr: &mut Trainer, t: usize, lens: &[usize], k: usize) -> StepStats {
    let b = lens.len();
    let x: Vec<f32> = (0..t * b * 2)
        .map(|i| ((i + k) as f32 * 0.37).sin())
        .collect();
    let y: Vec<f32> = (0..t * b).map(|i| ((i + k) as f32 * 0.21).cos()).collect();
    let data = StepData::series(&x, &y).with_lengths(lens);
    tr.step(t, &data, Carry::Zero, 0.01)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn find<'a>(s: &'a StepStats, tag: &str) -> &'a SegmentHistogram {
    let h = s.histograms.iter().find(|(t, _)| t == tag);
    &h.unwrap_or_else(|| panic!("no {tag}")).1
}

fn min_max(v: &[f32]) -> (f32, f32) {
    let lo = v.iter().cloned().fold(f32::INFINITY, f32::min);
    let hi = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    (lo, hi)
}

#[test]
fn histogram_steps_measure_the_step() {
    let (t, lens) = (9, [9usize, 3, 7]);
    let net = net(2);
    let h = net.hidden;
    let mut tr = trainer(&net, lens.len(), None);
    // Without histograms: the plain dispatch count.
    step(&mut tr, t, &lens, 0);
    let (plain, _) = tr.dispatches_per_step(t).unwrap_or_default();
    assert_eq!(tr.last_step_dispatches(), plain);
    let bins = 20;
    tr.set_histograms(Some(HistSettings { every: 3, bins }))
        .unwrap_or_else(|e| panic!("{e}"));
    // Steps 2 and 3 (1-based): the first is plain, the second histograms.
    let s2 = step(&mut tr, t, &lens, 1);
    assert!(s2.histograms.is_empty());
    assert_eq!(tr.last_step_dispatches(), plain);
    let s3 = step(&mut tr, t, &lens, 2);
    // Sources: the layer outputs, the cache, the gradients, the parameters.
    assert_eq!(tr.last_step_dispatches(), plain + 3 * 4);
    let names = tr.tensor_names();
    let per_layer = ["h", "c", "gate_i", "gate_f", "gate_g", "gate_o"];
    assert_eq!(s3.histograms.len(), 2 * names.len() + 2 * per_layer.len());
    // Parameters after the update, gradients (no clipping) as read back.
    let params = tr
        .lstm
        .model
        .param_tensors(tr.ctx())
        .unwrap_or_else(|e| panic!("{e}"));
    let grads = tr
        .lstm
        .model
        .grad_tensors(tr.ctx())
        .unwrap_or_else(|e| panic!("{e}"));
    for (kind, tensors) in [("params", &params), ("grads", &grads)] {
        assert_eq!(tensors.len(), names.len());
        // Table order, whatever the readers name them.
        for (name, p) in names.iter().zip(tensors.iter()) {
            let tag = format!("{kind}/{name}");
            let g = find(&s3, &tag);
            assert_eq!((g.min, g.max), min_max(&p.data), "{tag}");
            assert_eq!(g.finite(), p.data.len() as u64, "{tag}");
            assert_eq!(g.counts.len(), bins);
            let sum: f64 = p.data.iter().map(|&v| v as f64).sum();
            let mag: f64 = p.data.iter().map(|&v| v.abs() as f64).sum();
            assert!((g.sum as f64 - sum).abs() <= 1e-5 * mag, "{tag}");
        }
    }
    // Activations over the valid positions only.
    let valid: usize = lens.iter().sum();
    for l in 0..2 {
        for name in per_layer {
            let g = find(&s3, &format!("activations/layer_{l}/{name}"));
            assert_eq!(g.finite(), (valid * h) as u64, "layer {l} {name}");
            assert_eq!((g.nan, g.inf), (0, 0));
            let (lo, hi) = match name {
                "gate_g" | "h" => (-1.0, 1.0),
                "c" => (f32::NEG_INFINITY, f32::INFINITY),
                _ => (0.0, 1.0),
            };
            assert!(g.min >= lo && g.max <= hi && g.min < g.max, "{name}: {g:?}");
        }
    }
    // The next histogram step is step 6.
    for k in 4..=6 {
        let s = step(&mut tr, t, &lens, k);
        assert_eq!(s.histograms.is_empty(), k != 6, "step {k}");
    }
    // Off again: the plain step.
    tr.set_histograms(None).unwrap_or_else(|e| panic!("{e}"));
    step(&mut tr, t, &lens, 7);
    assert_eq!(tr.last_step_dispatches(), plain);
}

#[test]
fn norm_cells_are_refused_by_name() {
    for (norm, name) in [
        (Norm::LayerCell, "LayerNorm cell"),
        (
            Norm::RecurrentBatch { t_max: 4 },
            "recurrent BatchNorm cell",
        ),
    ] {
        let mut n = net(1);
        n.norm = norm;
        let mut tr = trainer(&n, 2, None);
        let e = tr
            .set_histograms(Some(HistSettings { every: 1, bins: 30 }))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains(name), "{e}");
    }
    let mut tr = trainer(&net(1), 2, None);
    for (every, bins) in [(0, 30), (1, 0), (1, 1025)] {
        let s = Some(HistSettings { every, bins });
        assert!(tr.set_histograms(s).is_err(), "{every} {bins}");
    }
}
