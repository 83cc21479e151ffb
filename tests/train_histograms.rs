//! The trainer's histogram steps: only every N-th step takes them, other
//! steps record exactly the dispatches of a run without; parameters and
//! gradients agree with the tensors read back, activations count the valid
//! positions only (padding left out), gates stay in their ranges. Runs in
//! f16-mixed, with the normalized cells and with projections measure the
//! cached h, c and gates: their min and max are those of the workspace's
//! tensors read back, their counts the valid positions × units.

mod common;

use lstm_wgpu::GpuContext;
use lstm_wgpu::kernels::histogram::SegmentHistogram;
use lstm_wgpu::kernels::lstm_cell_ln;
use lstm_wgpu::kernels::optim::OptimConfig;
use lstm_wgpu::model::norm::Norm;
use lstm_wgpu::model::precision::Precision;
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

/// Parameters after the update, gradients (no clipping) as read back:
/// min, max, counts and sums of every tensor's histogram.
fn check_tensors(tr: &Trainer, s: &StepStats, bins: usize) {
    let names = tr.tensor_names();
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
            let g = find(s, &tag);
            assert_eq!((g.min, g.max), min_max(&p.data), "{tag}");
            assert_eq!(g.finite(), p.data.len() as u64, "{tag}");
            assert_eq!(g.counts.len(), bins);
            let sum: f64 = p.data.iter().map(|&v| v as f64).sum();
            let mag: f64 = p.data.iter().map(|&v| v.abs() as f64).sum();
            assert!((g.sum as f64 - sum).abs() <= 1e-5 * mag, "{tag}");
        }
    }
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
    check_tensors(&tr, &s3, bins);
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
fn bad_settings_are_refused() {
    let mut tr = trainer(&net(1), 2, None);
    for (every, bins) in [(0, 30), (1, 0), (1, 1025)] {
        let s = Some(HistSettings { every, bins });
        assert!(tr.set_histograms(s).is_err(), "{every} {bins}");
    }
}

/// The valid rows (t < lens[b]) of a time-major [T, B, ..] block of `v`:
/// `cols` values per row, `stride` apart, from `off`.
fn valid_rows(v: &[f32], off: usize, cols: usize, stride: usize, lens: &[usize]) -> Vec<f32> {
    let b = lens.len();
    let t = lens.iter().copied().max().unwrap_or(0);
    let mut out = Vec::new();
    for r in 0..t * b {
        if r / b < lens[r % b] {
            let o = off + r * stride;
            out.extend_from_slice(&v[o..o + cols]);
        }
    }
    out
}

/// A whole buffer of f32, or of f16 pairs (low half first) widened.
fn read_all(ctx: &GpuContext, buf: &wgpu::Buffer, half: bool) -> Vec<f32> {
    let words = ctx
        .read_f32(buf, 0, (buf.size() / 4) as usize)
        .unwrap_or_else(|e| panic!("{e}"));
    match half {
        false => words,
        true => words
            .iter()
            .flat_map(|w| {
                let b = w.to_bits();
                [b & 0xffff, b >> 16].map(|x| half::f16::from_bits(x as u16).to_f32())
            })
            .collect(),
    }
}

/// `tag`'s histogram measures `v`: its min and max, one count per value.
fn measures(s: &StepStats, tag: &str, v: &[f32]) {
    let g = find(s, tag);
    assert_eq!((g.min, g.max), min_max(v), "{tag}");
    assert_eq!(g.finite(), v.len() as u64, "{tag}");
    assert_eq!((g.nan, g.inf), (0, 0), "{tag}");
    assert!(g.min < g.max, "{tag}: {g:?}");
}

/// Sequence lengths: padding in two of three sequences.
const LENS: [usize; 3] = [9, 3, 7];

/// One histogram step of `net` in `precision` on sequences of lengths
/// `lens` (T the longest): the dispatches of the plain step plus three per
/// source (`sources`), steps without histograms unchanged, every tensor's
/// histogram right, and h, c and the gates of every layer those of the
/// workspace's cache read back after the step, over the valid positions.
fn histogram_step_of(net: &NetConfig, precision: Precision, sources: usize, lens: &[usize]) {
    let t = lens.iter().copied().max().unwrap_or(0);
    let valid: usize = lens.iter().sum();
    let mut tr = trainer(net, lens.len(), None);
    tr.set_precision(precision)
        .unwrap_or_else(|e| panic!("{e}"));
    step(&mut tr, t, lens, 0);
    let (plain, _) = tr.dispatches_per_step(t).unwrap_or_default();
    assert_eq!(tr.last_step_dispatches(), plain);
    let bins = 16;
    tr.set_histograms(Some(HistSettings { every: 3, bins }))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(step(&mut tr, t, lens, 1).histograms.is_empty());
    assert_eq!(tr.last_step_dispatches(), plain);
    let s = step(&mut tr, t, lens, 2);
    assert_eq!(tr.last_step_dispatches(), plain + 3 * sources);
    let names = tr.tensor_names();
    let per_layer = 6;
    assert_eq!(s.histograms.len(), 2 * names.len() + net.layers * per_layer);
    check_tensors(&tr, &s, bins);
    let cfg = tr.lstm.model.config.clone();
    let norm = tr.lstm.model.norm;
    let h = cfg.hidden_size;
    let ctx = tr.ctx().clone();
    tr.lstm.train = true;
    // The workspace the step ran in (its plan is cached).
    let plan = tr
        .lstm
        .plan(t, lens.len())
        .unwrap_or_else(|e| panic!("{e}"));
    let ws = &plan.ws;
    assert_eq!(ws.half, precision == Precision::F16Mixed);
    let outs = read_all(&ctx, &ws.outs, false);
    for l in 0..net.layers {
        let name = format!("activations/layer_{l}");
        let hv = valid_rows(&outs, ws.out_off(l), ws.features, ws.features, lens);
        assert_eq!(hv.len(), valid * cfg.state_size());
        measures(&s, &format!("{name}/h"), &hv);
        let [base, c_off, _] = ws.cell_offsets(&cfg, &norm, l, 0);
        // The gate and c sections where the cells' layouts put them
        // (src/kernels/cell.rs, lstm_cell_ln.rs), one cache buffer.
        let (b, tbh) = (lens.len(), t * lens.len() * h);
        let want = match (ws.half, norm.in_cell()) {
            // f16 gates 4 | h_prev 1; c in its own buffer.
            (true, _) => [l * 5 * tbh, l * tbh],
            (false, true) => {
                let block = lstm_cell_ln::cache_block(h, t, b);
                let sec = lstm_cell_ln::cache_sections(h, t, b);
                [l * block + sec[0], l * block + sec[1]]
            }
            // gates 4 | c 1 | h_prev 1.
            (false, false) => [l * 6 * tbh, l * 6 * tbh + 4 * tbh],
        };
        assert!(!ws.split);
        assert_eq!([base, c_off], want, "layer {l}");
        let c = read_all(&ctx, ws.cst(l), false);
        measures(&s, &format!("{name}/c"), &valid_rows(&c, c_off, h, h, lens));
        let cache = read_all(&ctx, ws.cache(l), ws.half);
        for (q, gate) in ["i", "f", "g", "o"].into_iter().enumerate() {
            let v = valid_rows(&cache, base + q * h, h, 4 * h, lens);
            assert_eq!(v.len(), valid * h);
            let lo = if gate == "g" { -1.0 } else { 0.0 };
            assert!(
                v.iter().all(|x| (lo..=1.0).contains(x)),
                "{gate}: activated"
            );
            measures(&s, &format!("{name}/gate_{gate}"), &v);
        }
    }
    // Off again: the plain step.
    tr.set_histograms(None).unwrap_or_else(|e| panic!("{e}"));
    step(&mut tr, t, lens, 3);
    assert_eq!(tr.last_step_dispatches(), plain);
}

/// The plain cell in f32: the same, exactly.
#[test]
fn plain_histograms_are_the_cache() {
    histogram_step_of(&net(2), Precision::F32, 4, &LENS);
}

/// f16-mixed: the gates are read as f16 from the cache, c from its own f32
/// buffer (a source of its own: five sources).
#[test]
fn f16_mixed_histograms_read_the_f16_cache() {
    histogram_step_of(&net(2), Precision::F16Mixed, 5, &LENS);
}

/// The LayerNorm cell caches the activated gates and c (before LN_c) as
/// the plain cell does.
#[test]
fn layer_norm_cell_histograms() {
    let mut n = net(2);
    n.norm = Norm::LayerCell;
    histogram_step_of(&n, Precision::F32, 4, &LENS);
}

/// The recurrent BatchNorm cell (per-step statistics over T_max = T
/// steps): the same sections.
#[test]
fn recurrent_batch_norm_cell_histograms() {
    let mut n = net(2);
    n.norm = Norm::RecurrentBatch { t_max: 9 };
    // Train-mode BatchNorm needs two sequences at every step.
    histogram_step_of(&n, Precision::F32, 4, &[9, 4, 9]);
}

/// Projections: h is P wide, c and the gates H wide.
#[test]
fn projected_lstm_histograms() {
    let mut n = net(2);
    n.proj = 5;
    histogram_step_of(&n, Precision::F32, 4, &LENS);
}

/// A GRU in f16-mixed: its gates r, z, n read from the f16 cache, in
/// their ranges, one count per valid position and unit; no c.
#[test]
fn gru_f16_mixed_gates() {
    let mut n = net(1);
    n.cell = lstm_wgpu::kernels::cell::Cell::Gru;
    let mut tr = trainer(&n, LENS.len(), None);
    tr.set_precision(Precision::F16Mixed)
        .unwrap_or_else(|e| panic!("{e}"));
    tr.set_histograms(Some(HistSettings { every: 1, bins: 16 }))
        .unwrap_or_else(|e| panic!("{e}"));
    let s = step(&mut tr, 9, &LENS, 0);
    let valid: usize = LENS.iter().sum();
    assert!(s.histograms.iter().all(|(t, _)| !t.ends_with("/c")));
    for (gate, lo) in [("r", 0.0), ("z", 0.0), ("n", -1.0)] {
        let g = find(&s, &format!("activations/layer_0/gate_{gate}"));
        assert_eq!(g.finite(), (valid * n.hidden) as u64, "{gate}");
        assert!(
            g.min >= lo && g.max <= 1.0 && g.min < g.max,
            "{gate}: {g:?}"
        );
    }
}
