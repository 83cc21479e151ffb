//! The trainer's GPU step end to end: losses fall on small problems.

mod common;

use common::sine_batch;
use lstm_wgpu::data::{SeriesConfig, SeriesDataset, SeriesTable};
use lstm_wgpu::kernels::optim::OptimConfig;
use lstm_wgpu::lstm::{Batch, Lstm, Upstream};
use lstm_wgpu::model::LstmModel;
use lstm_wgpu::model::norm::Norm;
use lstm_wgpu::model::precision::{Precision, ScalerConfig};
use lstm_wgpu::train::forecast::{continuations, forecast, predict_windows};
use lstm_wgpu::train::{Carry, Head, NetConfig, StepData, Trainer, init_values};

#[test]
fn char_model_loss_falls() {
    let (first, last) = char_losses(Precision::F32);
    assert!(first > 1.5 && last < 0.3 * first, "loss {first} -> {last}");
}

/// The same run in f16-mixed (f16 weights and gate cache, f32 state and
/// gradients) ends within 2% of the f32 run's loss.
#[test]
fn char_model_f16_mixed_tracks_f32() {
    let (f1, l1) = char_losses(Precision::F32);
    let (f2, l2) = char_losses(Precision::F16Mixed);
    assert!(
        ((f2 - f1) / f1).abs() < 0.02,
        "first loss f32 {f1}, f16-mixed {f2}"
    );
    assert!(
        ((l2 - l1) / l1).abs() < 0.02,
        "final loss f32 {l1}, f16-mixed {l2}"
    );
    assert!(l2 < 0.3 * f2, "f16-mixed loss {f2} -> {l2}");
}

/// One character batch: inputs, targets and how the carried state starts.
type CharBatch = (Vec<u32>, Vec<u32>, Carry);

/// A small 2-layer character model and 60 steps of batches (T = 8, B = 4).
fn char_setup(precision: Precision) -> (Trainer, Vec<CharBatch>) {
    let ctx = common::ctx();
    let text = "abcdefgh".repeat(40);
    let vocab: Vec<char> = {
        let mut v: Vec<char> = text.chars().collect();
        v.sort();
        v.dedup();
        v
    };
    let ids: Vec<u32> = text
        .chars()
        .map(|c| vocab.iter().position(|&v| v == c).unwrap_or(0) as u32)
        .collect();
    let net = NetConfig::new(
        Head::Language {
            vocab: vocab.len(),
            embed: 8,
        },
        32,
        2,
    );
    let (t, b) = (8, 4);
    let mut opt = OptimConfig::adam();
    opt.lr = 0.01;
    let mut tr = Trainer::new(ctx, net.clone(), init_values(&net, 1), b, Some(5.0), &opt)
        .unwrap_or_else(|e| panic!("{e}"));
    tr.set_precision(precision)
        .unwrap_or_else(|e| panic!("{e}"));
    let stream = ids.len() / b;
    let batches = (0..60)
        .map(|step| {
            let k = step % ((stream - 1) / t);
            let mut x = vec![0u32; t * b];
            let mut y = vec![0u32; t * b];
            for tt in 0..t {
                for bb in 0..b {
                    x[tt * b + bb] = ids[bb * stream + k * t + tt];
                    y[tt * b + bb] = ids[bb * stream + k * t + tt + 1];
                }
            }
            let carry = if k > 0 { Carry::Continue } else { Carry::Zero };
            (x, y, carry)
        })
        .collect();
    (tr, batches)
}

/// First and last loss of 60 steps of a small 2-layer character model.
fn char_losses(precision: Precision) -> (f32, f32) {
    let (mut tr, batches) = char_setup(precision);
    let mut first = None;
    let mut last = 0.0;
    for (x, y, carry) in &batches {
        let s = tr
            .step(8, &StepData::tokens(x, y), *carry, 0.01)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!s.skipped && s.loss.is_finite() && s.grad_norm.is_finite());
        assert_eq!(s.loss_scale, 1.0);
        first.get_or_insert(s.loss);
        last = s.loss;
    }
    (first.unwrap_or(0.0), last)
}

/// GradScaler's default scale (65536) in f16-mixed: no step overflows, and
/// the f16 gate gradients, scaled into f16's normal range instead of
/// rounding into its subnormals, track the f32 run at least as closely as
/// the unscaled f16-mixed run does (losses and gradient norms, step by
/// step).
#[test]
fn loss_scaler_default_f16_mixed_tracks_f32() {
    let (mut plain, batches) = char_setup(Precision::F16Mixed);
    let (mut scaled, _) = char_setup(Precision::F16Mixed);
    let (mut full, _) = char_setup(Precision::F32);
    scaled
        .set_loss_scaler(Some(ScalerConfig::default()))
        .unwrap_or_else(|e| panic!("{e}"));
    let (mut worst_plain, mut worst_scaled) = (0f32, 0f32);
    let rel = |a: f32, b: f32| ((a - b) / b).abs();
    for (x, y, carry) in batches.iter().take(20) {
        let step = |tr: &mut Trainer| {
            tr.step(8, &StepData::tokens(x, y), *carry, 0.01)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let (a, b, f) = (step(&mut plain), step(&mut scaled), step(&mut full));
        assert!(!b.skipped);
        assert_eq!(b.loss_scale, 65536.0);
        worst_plain = worst_plain
            .max(rel(a.loss, f.loss))
            .max(rel(a.grad_norm, f.grad_norm));
        worst_scaled = worst_scaled
            .max(rel(b.loss, f.loss))
            .max(rel(b.grad_norm, f.grad_norm));
    }
    eprintln!("against f32: f16-mixed {worst_plain:.2e}, with the scaler {worst_scaled:.2e}");
    assert!(
        worst_scaled < 1e-2,
        "scaled run differs from f32 by {worst_scaled:.2e}"
    );
    assert!(
        worst_scaled <= worst_plain,
        "the scaler moved f16-mixed away from f32: {worst_scaled:.2e} > {worst_plain:.2e}"
    );
    let st = scaled.scaler_state().unwrap().unwrap();
    assert_eq!((st.scale, st.good_steps, st.skipped), (65536.0, 20, 0));
}

/// A forced huge loss scale overflows the gradients: f16-mixed stores the
/// gate gradients as f16, so an initial scale of 2^40 overflows them (as in
/// PyTorch's f16 backward) until the scale has backed off into range; f32
/// gradients hold 2^40 and overflow only near f32's range (2^127 here, with
/// the MSE gradient 2(p − y)·S/count of targets ~100).
#[test]
fn loss_scaler_forced_overflow_skips_backs_off_and_grows() {
    let (skipped, grew, scale) = forced_overflow(Precision::F16Mixed, 2f32.powi(40), 40);
    assert!(skipped >= 1, "a scale of 2^40 never overflowed f16");
    assert!(grew >= 1, "the scale never grew after the overflow");
    assert!(scale < 2f32.powi(30), "final scale {scale}");
    let (skipped, grew, _) = forced_overflow(Precision::F32, 2f32.powi(40), 12);
    assert_eq!((skipped, grew), (0, 2), "f32 gradients at 2^40");
    let (skipped, _, _) = forced_overflow(Precision::F32, 2f32.powi(127), 12);
    assert!(skipped >= 1, "a scale of 2^127 never overflowed f32");
}

/// `steps` steps of a small series model from loss scale `init` (growth
/// interval 5): checks that every skipped step leaves the parameters and the
/// optimizer's step count alone and halves the scale, that every other
/// step updates, and that the scale doubles after 5 good steps in a row;
/// returns (skipped steps, growths, final scale).
fn forced_overflow(precision: Precision, init: f32, steps: usize) -> (u32, u32, f32) {
    let ctx = common::ctx();
    let net = sine_net(2);
    let (t, b) = (12, 8);
    let mut opt = OptimConfig::adamw();
    opt.lr = 0.01;
    let mut tr = Trainer::new(ctx, net.clone(), init_values(&net, 2), b, Some(1.0), &opt)
        .unwrap_or_else(|e| panic!("{e}"));
    tr.set_precision(precision)
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = ScalerConfig {
        init_scale: init,
        interval: 5,
        ..Default::default()
    };
    tr.set_loss_scaler(Some(cfg))
        .unwrap_or_else(|e| panic!("{e}"));
    let n = tr.lstm.model.table.total;
    let mut expect = cfg.init_scale;
    let (mut skipped, mut good_run, mut grew) = (0u32, 0u32, 0);
    for i in 0..steps {
        let (x, y) = sine_batch(i, t, b);
        let y: Vec<f32> = y.iter().map(|v| 100.0 * v).collect();
        let before = tr.ctx().read_f32(&tr.lstm.model.params, 0, n).unwrap();
        let steps = tr.optim.steps();
        let s = tr
            .step(t, &StepData::series(&x, &y), Carry::Zero, 0.01)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.loss_scale, expect, "step {i}: scale used");
        assert!(s.loss.is_finite(), "step {i}: the loss itself is unscaled");
        let after = tr.ctx().read_f32(&tr.lstm.model.params, 0, n).unwrap();
        if s.skipped {
            assert!(
                before == after,
                "step {i}: a skipped step changed parameters"
            );
            assert_eq!(tr.optim.steps(), steps, "step {i}");
            skipped += 1;
            good_run = 0;
            expect *= 0.5;
        } else {
            assert!(before != after, "step {i}: no update");
            assert_eq!(tr.optim.steps(), steps + 1, "step {i}");
            assert!(s.grad_norm.is_finite());
            good_run += 1;
            if good_run == cfg.interval {
                good_run = 0;
                if (expect * 2.0).is_finite() {
                    expect *= 2.0;
                    grew += 1;
                }
            }
        }
    }
    let st = tr.scaler_state().unwrap().unwrap();
    assert_eq!(
        (st.scale, st.good_steps, st.skipped),
        (expect, good_run, skipped)
    );
    eprintln!(
        "{precision} from {init}: {skipped} skipped steps, {grew} growths, final scale {expect}"
    );
    (skipped, grew, expect)
}

#[test]
fn series_model_loss_falls() {
    let ctx = common::ctx();
    let net = NetConfig::new(
        Head::Regression {
            features: 1,
            outputs: 1,
        },
        32,
        1,
    );
    let (t, b) = (12, 8);
    let mut opt = OptimConfig::adamw();
    opt.lr = 0.01;
    let mut tr = Trainer::new(ctx, net.clone(), init_values(&net, 2), b, Some(1.0), &opt)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut losses = Vec::new();
    for step in 0..80 {
        let (x, y) = sine_batch(step, t, b);
        let s = tr
            .step(t, &StepData::series(&x, &y), Carry::Zero, 0.01)
            .unwrap_or_else(|e| panic!("{e}"));
        losses.push(s.loss);
    }
    let head: f32 = losses[..5].iter().sum::<f32>() / 5.0;
    let tail: f32 = losses[losses.len() - 5..].iter().sum::<f32>() / 5.0;
    assert!(tail < 0.2 * head, "loss {head} -> {tail}");
}

/// The recursive forecast runs one window a pass: a model of batch 4 is
/// refused (it would compute four copies), and with batch 1 the first
/// forecast equals the batched prediction of the same window.
#[test]
fn forecast_runs_one_window_a_pass() {
    let ctx = common::ctx();
    let net = sine_net(1);
    let values = init_values(&net, 3);
    let model = |b: usize| {
        Trainer::new(ctx.clone(), net.clone(), values.clone(), b, None, &adamw())
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let y: Vec<f64> = (0..41).map(|i| (i as f64 * 0.3).sin()).collect();
    let full = SeriesTable::univariate("y", y.clone()).unwrap_or_else(|e| panic!("{e}"));
    let head = SeriesTable::univariate("y", y[..40].to_vec()).unwrap_or_else(|e| panic!("{e}"));
    let cfg = SeriesConfig {
        seq_len: 6,
        horizon: 1,
        val_fraction: 0.0,
    };
    let ds = SeriesDataset::new(&full, &cfg).unwrap_or_else(|e| panic!("{e}"));
    let cont = continuations(&head).unwrap_or_else(|e| panic!("{e}"));
    let e = forecast(&mut model(4), &head, &ds.norm, 6, 1, 2, &cont)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("needs batch 1, not 4"), "{e}");
    // Window 34 reads rows 34..40, the last 6 rows of `head`.
    let last = ds.train.len() - 1;
    assert_eq!(ds.train.first_target_row(last), 40);
    let z =
        predict_windows(&mut model(4), &ds.train, &[0, last, 1]).unwrap_or_else(|e| panic!("{e}"));
    let want = ds.norm.target.denormalize(z[1] as f64);
    let got =
        forecast(&mut model(1), &head, &ds.norm, 6, 1, 2, &cont).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.len(), 2);
    assert!(
        (got[0] - want).abs() <= 1e-5 * want.abs().max(1.0),
        "{got:?} vs {want}"
    );
}

fn sine_net(layers: usize) -> NetConfig {
    NetConfig::new(
        Head::Regression {
            features: 1,
            outputs: 1,
        },
        32,
        layers,
    )
}

fn adamw() -> OptimConfig {
    let mut opt = OptimConfig::adamw();
    opt.lr = 0.01;
    opt
}

#[test]
fn batch_norm_eval_uses_running_statistics() {
    let ctx = common::ctx();
    let (t, b) = (12, 8);
    for norm in [
        Norm::Batch { last: true },
        Norm::StepBatch {
            last: false,
            t_max: t,
        },
        Norm::RecurrentBatch { t_max: t },
    ] {
        let mut net = sine_net(2);
        net.norm = norm;
        let mut tr = Trainer::new(
            ctx.clone(),
            net.clone(),
            init_values(&net, 1),
            b,
            None,
            &adamw(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let stats = |tr: &Trainer| -> Vec<f32> {
            tr.stats()
                .unwrap_or_else(|e| panic!("{e}"))
                .into_iter()
                .flat_map(|t| t.data)
                .collect()
        };
        let s0 = stats(&tr);
        assert!(!s0.is_empty(), "{norm:?} has running statistics");
        let (x, y) = sine_batch(0, t, b);
        let data = StepData::series(&x, &y);
        let e0 = tr
            .eval(t, &data, Carry::Zero)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stats(&tr), s0, "{norm:?}: eval leaves the statistics alone");
        let s = tr
            .step(t, &data, Carry::Zero, 0.0)
            .unwrap_or_else(|e| panic!("{e}"));
        let s1 = stats(&tr);
        assert_ne!(s1, s0, "{norm:?}: a train step updates the statistics");
        assert!(
            tr.lstm.model.tracked.values().all(|&v| v == 1),
            "{norm:?}: {:?}",
            tr.lstm.model.tracked
        );
        // lr 0: same parameters; eval now reads the updated statistics, so
        // its loss moves, and it is not the batch-statistics loss.
        let e1 = tr
            .eval(t, &data, Carry::Zero)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stats(&tr), s1);
        assert!(e0 != e1 && e1 != s.loss, "{norm:?}: {e0} {e1} {}", s.loss);
        assert_eq!(
            e1,
            tr.eval(t, &data, Carry::Zero)
                .unwrap_or_else(|e| panic!("{e}")),
            "{norm:?}: eval is deterministic"
        );
        // Eval mode needs no batch of 2: one sequence works.
        let mut one = Trainer::new(
            ctx.clone(),
            net.clone(),
            init_values(&net, 1),
            1,
            None,
            &adamw(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let x1: Vec<f32> = (0..t).map(|tt| x[tt * b]).collect();
        let one_seq = StepData::series(&x1, &y[..1]);
        let l = one
            .eval(t, &one_seq, Carry::Zero)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(l.is_finite());
        // In train mode, per-step statistics need two sequences; the
        // sequence-wise BatchNorm has T positions of one.
        let r = one.step(t, &one_seq, Carry::Zero, 0.01);
        if let Norm::Batch { .. } = norm {
            assert!(r.is_ok(), "{norm:?}: {:?}", r.err());
        } else {
            let err = r.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("more than 1 value"), "{norm:?}: {err}");
        }
    }
}

#[test]
fn dropout_masks_follow_seed_and_step() {
    let ctx = common::ctx();
    let (t, b) = (10, 4);
    let mut net = sine_net(3);
    net.dropout = 0.3;
    net.residual = true;
    let values = init_values(&net, 7);
    let (x, y) = sine_batch(1, t, b);
    let data = StepData::series(&x, &y);
    let mut tr = Trainer::new(ctx.clone(), net.clone(), values.clone(), b, None, &adamw())
        .unwrap_or_else(|e| panic!("{e}"));
    tr.dropout_seed = 11;
    // lr 0 keeps the parameters, so only the masks change the loss.
    let run = |tr: &mut Trainer, k: u64| {
        tr.steps_taken = k;
        tr.step(t, &data, Carry::Zero, 0.0)
            .unwrap_or_else(|e| panic!("{e}"))
            .loss
    };
    let (a, a2, c) = (run(&mut tr, 0), run(&mut tr, 0), run(&mut tr, 1));
    assert_eq!(a, a2, "same seed and step, same masks");
    assert_ne!(a, c, "a new step draws new masks");
    tr.dropout_seed = 12;
    assert_ne!(run(&mut tr, 0), a, "a new seed draws new masks");
    // Eval has no dropout: it equals the same model built without it.
    let ev = tr
        .eval(t, &data, Carry::Zero)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut plain = net.clone();
    plain.dropout = 0.0;
    let mut tp = Trainer::new(
        ctx.clone(),
        plain.clone(),
        values.clone(),
        b,
        None,
        &adamw(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ev,
        tp.eval(t, &data, Carry::Zero)
            .unwrap_or_else(|e| panic!("{e}"))
    );
    // The residual connections change the function.
    let mut nores = plain.clone();
    nores.residual = false;
    let mut tn =
        Trainer::new(ctx, nores, values, b, None, &adamw()).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(
        ev,
        tn.eval(t, &data, Carry::Zero)
            .unwrap_or_else(|e| panic!("{e}"))
    );
}

#[test]
fn dropout_and_residual_loss_falls() {
    let ctx = common::ctx();
    let (t, b) = (12, 8);
    let mut net = sine_net(3);
    net.dropout = 0.2;
    net.residual = true;
    let mut tr = Trainer::new(
        ctx,
        net.clone(),
        init_values(&net, 3),
        b,
        Some(1.0),
        &adamw(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut losses = Vec::new();
    for step in 0..60 {
        let (x, y) = sine_batch(step, t, b);
        let s = tr
            .step(t, &StepData::series(&x, &y), Carry::Zero, 0.01)
            .unwrap_or_else(|e| panic!("{e}"));
        losses.push(s.loss);
    }
    let head: f32 = losses[..5].iter().sum::<f32>() / 5.0;
    let tail: f32 = losses[losses.len() - 5..].iter().sum::<f32>() / 5.0;
    assert!(tail < 0.3 * head, "loss {head} -> {tail}");
}

/// Gradients of every parameter after a step at lr 0, by name.
fn grads(tr: &Trainer) -> Vec<(String, Vec<f32>)> {
    tr.lstm
        .model
        .grad_tensors(tr.ctx())
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|t| (t.name, t.data))
        .collect()
}

#[test]
fn sequence_head_matches_cpu() {
    let ctx = common::ctx();
    let (t, b, f, o, h) = (4, 3, 3, 2, 32);
    let lens = [4usize, 2, 3];
    let net = NetConfig::new(
        Head::Sequence {
            features: f,
            outputs: o,
        },
        h,
        1,
    );
    let values = init_values(&net, 5);
    let x: Vec<f32> = (0..t * b * f)
        .map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0)
        .collect();
    let y: Vec<f32> = (0..t * b * o)
        .map(|i| ((i * 5 % 7) as f32 - 3.0) / 3.0)
        .collect();
    let mut tr = Trainer::new(
        ctx.clone(),
        net.clone(),
        values.clone(),
        b,
        None,
        &OptimConfig::sgd(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let s = tr
        .step(
            t,
            &StepData::series(&x, &y).with_lengths(&lens),
            Carry::Zero,
            0.0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let g = grads(&tr);

    // CPU head and loss around the library's LSTM (checked elsewhere
    // against the f64 reference).
    let table = net.table();
    let nl = table.offset("head.weight");
    let w = &values[nl..nl + o * h];
    let bias = &values[nl + o * h..nl + o * h + o];
    let cfg = net.lstm();
    let model =
        LstmModel::with_values(&ctx, cfg.clone(), &values[..nl]).unwrap_or_else(|e| panic!("{e}"));
    let mut lstm = Lstm::new(ctx.clone(), model).unwrap_or_else(|e| panic!("{e}"));
    let batch = Batch {
        input: &x,
        seq_len: t,
        batch: b,
        batch_first: false,
        h0: None,
        c0: None,
        lengths: Some(&lens),
    };
    let out = lstm
        .forward(&batch)
        .unwrap_or_else(|e| panic!("{e}"))
        .output;
    let count: usize = lens.iter().sum::<usize>() * o;
    let mut loss = 0f64;
    let mut dy = vec![0f64; t * b * o];
    for tt in 0..t {
        for (bb, &len) in lens.iter().enumerate() {
            if tt >= len {
                continue;
            }
            let r = tt * b + bb;
            for k in 0..o {
                let p: f64 = bias[k] as f64
                    + (0..h)
                        .map(|j| out[r * h + j] as f64 * w[k * h + j] as f64)
                        .sum::<f64>();
                let e = p - y[r * o + k] as f64;
                loss += e * e / count as f64;
                dy[r * o + k] = 2.0 * e / count as f64;
            }
        }
    }
    assert!(
        ((s.loss as f64) - loss).abs() < 1e-5 * loss.max(1.0),
        "loss {} vs CPU {loss}",
        s.loss
    );
    let mut dw = vec![0f64; o * h];
    let mut db = vec![0f64; o];
    let mut dout = vec![0f32; t * b * h];
    for r in 0..t * b {
        for k in 0..o {
            db[k] += dy[r * o + k];
            for j in 0..h {
                dw[k * h + j] += dy[r * o + k] * out[r * h + j] as f64;
                dout[r * h + j] += (dy[r * o + k] * w[k * h + j] as f64) as f32;
            }
        }
    }
    let zeros = vec![0f32; b * h];
    let (_, lg) = lstm
        .forward_backward(
            &batch,
            &Upstream {
                grad_output: &dout,
                grad_h_n: &zeros,
                grad_c_n: &zeros,
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let find = |n: &str| -> &Vec<f32> {
        &g.iter()
            .find(|(k, _)| k == n)
            .unwrap_or_else(|| panic!("{n}"))
            .1
    };
    common::assert_close("grad head.weight", find("grad.head.weight"), &dw, 1e-4);
    common::assert_close("grad head.bias", find("grad.head.bias"), &db, 1e-4);
    for p in lg.params {
        let want: Vec<f64> = p.data.iter().map(|&v| v as f64).collect();
        common::assert_close(&p.name, find(&p.name), &want, 1e-4);
    }
}

#[test]
fn sequence_head_loss_falls() {
    let ctx = common::ctx();
    let (t, b) = (12, 8);
    let net = NetConfig::new(
        Head::Sequence {
            features: 1,
            outputs: 1,
        },
        32,
        1,
    );
    let mut tr = Trainer::new(
        ctx,
        net.clone(),
        init_values(&net, 2),
        b,
        Some(1.0),
        &adamw(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut losses = Vec::new();
    for step in 0..60 {
        // Predict the next value at every step.
        let (x, _) = sine_batch(step, t + 1, b);
        let s = tr
            .step(
                t,
                &StepData::series(&x[..t * b], &x[b..]),
                Carry::Zero,
                0.01,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        losses.push(s.loss);
    }
    let head: f32 = losses[..5].iter().sum::<f32>() / 5.0;
    let tail: f32 = losses[losses.len() - 5..].iter().sum::<f32>() / 5.0;
    assert!(tail < 0.2 * head, "loss {head} -> {tail}");
}

/// Tokens or features, as the head takes them.
fn step_data<'a>(
    head: Head,
    ids: &'a [u32],
    tgt: &'a [u32],
    x: &'a [f32],
    y: &'a [f32],
) -> StepData<'a> {
    match head {
        Head::Language { .. } => StepData::tokens(ids, tgt),
        _ => StepData::series(x, y),
    }
}

/// Max |a − b| / max |b| over a tensor.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(1e-20f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn var_length_batch_equals_separate_sequences() {
    let ctx = common::ctx();
    let (t, b) = (5, 3);
    let lens = [5usize, 2, 4];
    for head in [
        Head::Language { vocab: 7, embed: 4 },
        Head::Regression {
            features: 2,
            outputs: 2,
        },
        Head::Sequence {
            features: 2,
            outputs: 1,
        },
    ] {
        let net = NetConfig::new(head, 32, 2);
        let values = init_values(&net, 9);
        let new = |batch| {
            Trainer::new(
                ctx.clone(),
                net.clone(),
                values.clone(),
                batch,
                None,
                &OptimConfig::sgd(),
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let (f, o) = match head {
            Head::Language { .. } => (1, 1),
            Head::Regression { features, outputs } | Head::Sequence { features, outputs } => {
                (features, outputs)
            }
        };
        let every = !matches!(head, Head::Regression { .. });
        // Time-major data; padded positions hold junk that must not count.
        let ids: Vec<u32> = (0..t * b).map(|i| (i * 3 % 7) as u32).collect();
        let tgt: Vec<u32> = (0..t * b).map(|i| (i * 5 % 7) as u32).collect();
        let x: Vec<f32> = (0..t * b * f)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0)
            .collect();
        let ny = if every { t * b * o } else { b * o };
        let y: Vec<f32> = (0..ny).map(|i| ((i * 3 % 5) as f32 - 2.0) / 2.0).collect();
        let one = |bb: usize, l: usize| -> (Vec<u32>, Vec<u32>, Vec<f32>, Vec<f32>) {
            let pick_u = |v: &[u32]| (0..l).map(|tt| v[tt * b + bb]).collect();
            let xs = (0..l)
                .flat_map(|tt| x[(tt * b + bb) * f..(tt * b + bb + 1) * f].to_vec())
                .collect();
            let ys = if every {
                (0..l)
                    .flat_map(|tt| y[(tt * b + bb) * o..(tt * b + bb + 1) * o].to_vec())
                    .collect()
            } else {
                y[bb * o..(bb + 1) * o].to_vec()
            };
            (pick_u(&ids), pick_u(&tgt), xs, ys)
        };

        let mut tb = new(b);
        let s = tb
            .step(
                t,
                &step_data(head, &ids, &tgt, &x, &y).with_lengths(&lens),
                Carry::Zero,
                0.0,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let gb = grads(&tb);

        // Each sequence alone, combined with the weights of the batch mean:
        // positions for per-step losses, sequences for the last-step one.
        let total: usize = lens.iter().sum();
        let mut ts = new(1);
        let mut loss = 0f32;
        let mut gs: Vec<Vec<f32>> = gb.iter().map(|(_, v)| vec![0f32; v.len()]).collect();
        for (bb, &l) in lens.iter().enumerate() {
            let (i1, t1, x1, y1) = one(bb, l);
            let s1 = ts
                .step(l, &step_data(head, &i1, &t1, &x1, &y1), Carry::Zero, 0.0)
                .unwrap_or_else(|e| panic!("{e}"));
            let wgt = if every {
                l as f32 / total as f32
            } else {
                1.0 / b as f32
            };
            loss += wgt * s1.loss;
            for (acc, (_, g)) in gs.iter_mut().zip(grads(&ts)) {
                for (a, v) in acc.iter_mut().zip(g) {
                    *a += wgt * v;
                }
            }
        }
        assert!(
            (s.loss - loss).abs() < 1e-5 * loss.abs().max(1.0),
            "{head:?}: loss {} vs {loss}",
            s.loss
        );
        for ((name, g), want) in gb.iter().zip(&gs) {
            let e = rel_err(g, want);
            assert!(e < 1e-4, "{head:?} {name}: rel error {e}");
        }

        // Lengths out of range are refused with the offending entry named.
        for (bad, msg) in [
            (vec![5, 0, 4], "lengths[1] = 0 is outside 1..=5"),
            (vec![5, 6, 4], "lengths[1] = 6 is outside 1..=5"),
            (vec![5, 4], "2 entries, expected one per sequence (3)"),
        ] {
            let e = tb
                .step(
                    t,
                    &step_data(head, &ids, &tgt, &x, &y).with_lengths(&bad),
                    Carry::Zero,
                    0.0,
                )
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(msg), "{head:?} {bad:?}: {e}");
        }
    }
}

/// Pipelined steps (submit, then next_stats) give bit-identical losses,
/// skips, step counts and parameters to synchronous ones, including when a
/// step in flight is skipped: the GPU keeps the optimizer's step count, so
/// the step submitted after it uses the right bias correction.
#[test]
fn pipelined_steps_match_synchronous_ones() {
    let ctx = common::ctx();
    let (t, b) = (6, 4);
    let net = sine_net(2);
    let opt = adamw();
    // Step 2's targets make the loss overflow: that step is skipped and the
    // ones after it (submitted while it is in flight) apply again.
    let lrs = [0.01, 0.02, 0.01, 0.01, 0.03, 0.01, 0.01];
    let run = |pipelined: bool| {
        let mut tr = Trainer::new(
            ctx.clone(),
            net.clone(),
            init_values(&net, 9),
            b,
            Some(1.0),
            &opt,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut stats = Vec::new();
        for (step, &lr) in lrs.iter().enumerate() {
            let (x, mut y) = sine_batch(step, t, b);
            if step == 2 {
                y.fill(3e38);
            }
            let data = StepData::series(&x, &y);
            if pipelined {
                tr.submit(t, &data, Carry::Zero, lr)
                    .unwrap_or_else(|e| panic!("{e}"));
                assert!(tr.outstanding() >= 1);
                if step % 3 == 2 {
                    stats.push(tr.next_stats().unwrap().expect("stats"));
                }
            } else {
                stats.push(
                    tr.step(t, &data, Carry::Zero, lr)
                        .unwrap_or_else(|e| panic!("{e}")),
                );
            }
        }
        while let Some(s) = tr.next_stats().unwrap() {
            stats.push(s);
        }
        assert!(
            tr.step(
                t,
                &StepData::series(&[0.0; 24], &[0.0; 4]),
                Carry::Zero,
                0.0
            )
            .is_ok()
        );
        let params = tr
            .ctx()
            .read_f32(&tr.lstm.model.params, 0, tr.lstm.model.table.total)
            .unwrap();
        (stats, tr.optim.steps(), params)
    };
    let (sync, sync_steps, sync_params) = run(false);
    let (pipe, pipe_steps, pipe_params) = run(true);
    assert_eq!(sync.len(), lrs.len());
    let skipped: Vec<bool> = sync.iter().map(|s| s.skipped).collect();
    assert_eq!(skipped, [false, false, true, false, false, false, false]);
    assert_eq!(sync_steps, lrs.len() as u64);
    for (i, (a, b)) in sync.iter().zip(&pipe).enumerate() {
        assert_eq!(a.skipped, b.skipped, "step {i}: skip");
        assert_eq!(a.loss.to_bits(), b.loss.to_bits(), "step {i}: loss");
        assert_eq!(
            a.grad_norm.to_bits(),
            b.grad_norm.to_bits(),
            "step {i}: norm"
        );
        // The per-tensor norms come back in the same slot as the loss.
        assert_eq!(a.tensor_norms.len(), b.tensor_norms.len());
        for (x, y) in a.tensor_norms.iter().zip(&b.tensor_norms) {
            assert_eq!(x.to_bits(), y.to_bits(), "step {i}: tensor norms");
        }
    }
    assert_eq!(sync_steps, pipe_steps);
    assert!(
        sync_params
            .iter()
            .zip(&pipe_params)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
}

/// step() refuses to run while submitted steps are uncollected.
#[test]
fn step_refuses_uncollected_submits() {
    let ctx = common::ctx();
    let net = sine_net(1);
    let mut tr = Trainer::new(ctx, net.clone(), init_values(&net, 3), 2, None, &adamw())
        .unwrap_or_else(|e| panic!("{e}"));
    let (x, y) = sine_batch(0, 3, 2);
    let data = StepData::series(&x, &y);
    tr.submit(3, &data, Carry::Zero, 0.01).unwrap();
    let e = tr.step(3, &data, Carry::Zero, 0.01).unwrap_err();
    assert!(e.to_string().contains("next_stats"), "{e}");
    assert!(tr.next_stats().unwrap().is_some());
    assert!(tr.next_stats().unwrap().is_none());
    tr.step(3, &data, Carry::Zero, 0.01).unwrap();
}

/// A token model's per-vocabulary input projection (the default) against
/// the per-position one (embedding lookup, GEMM over all T·B rows): same
/// losses, gradients and parameters to f32 rounding, over steps with
/// unequal lengths and a padding id inside a sequence (both embed it as
/// zero), on the wavefront, layer by layer, persistent, and with LayerNorm
/// and residual links between layers; and for the GRU and IndRNN (the GRU
/// on every path, IndRNN per step and persistent).
#[test]
fn token_projection_matches_per_position_projection() {
    use lstm_wgpu::kernels::embedding::PAD;
    use lstm_wgpu::schedule::CellPath;
    let ctx = common::ctx();
    let (t, b, vocab) = (6, 3, 9);
    let plain = NetConfig::new(Head::Language { vocab, embed: 12 }, 16, 2);
    // LayerNorm between layers and residual links: layer by layer.
    let mut linked = plain.clone();
    linked.norm = Norm::Layer { last: false };
    linked.residual = true;
    // The GRU adds b_hh itself and splits its gate gradients; IndRNN has
    // one gate and a vector W_hh.
    let mut gru = plain.clone();
    gru.cell = lstm_wgpu::kernels::cell::Cell::Gru;
    let mut indrnn = plain.clone();
    indrnn.cell = lstm_wgpu::kernels::cell::Cell::IndRnn { relu: true };
    let lens = [6usize, 3, 5];
    for (net, path) in [
        (&plain, CellPath::Wavefront),
        (&plain, CellPath::PerStep),
        (&plain, CellPath::Persistent),
        (&linked, CellPath::PerStep),
        (&gru, CellPath::Wavefront),
        (&gru, CellPath::PerStep),
        (&gru, CellPath::Persistent),
        (&indrnn, CellPath::PerStep),
        (&indrnn, CellPath::Persistent),
    ] {
        let values = init_values(net, 4);
        let run = |projection: bool| {
            let mut opt = OptimConfig::adam();
            opt.lr = 0.01;
            let mut tr = Trainer::new(ctx.clone(), net.clone(), values.clone(), b, Some(5.0), &opt)
                .unwrap_or_else(|e| panic!("{e}"));
            common::set_path(&mut tr.lstm, Some(path));
            tr.set_token_projection(projection)
                .unwrap_or_else(|e| panic!("{e}"));
            let mut out = Vec::new();
            for step in 0..3u32 {
                let mut x: Vec<u32> = (0..t * b as u32 as usize)
                    .map(|i| (i as u32 * 7 + step * 3) % vocab as u32)
                    .collect();
                x[b + 1] = PAD;
                let y: Vec<u32> = x.iter().map(|&v| (v.min(8) + 1) % vocab as u32).collect();
                let s = tr
                    .step(
                        t,
                        &StepData::tokens(&x, &y).with_lengths(&lens),
                        Carry::Zero,
                        0.01,
                    )
                    .unwrap_or_else(|e| panic!("{e}"));
                out.push((s.loss, s.grad_norm, grads(&tr)));
            }
            let params = tr
                .lstm
                .model
                .param_tensors(tr.ctx())
                .unwrap_or_else(|e| panic!("{e}"));
            (out, params)
        };
        let (a, pa) = run(true);
        let (c, pc) = run(false);
        for (step, (x, y)) in a.iter().zip(&c).enumerate() {
            assert!(
                (x.0 - y.0).abs() <= 1e-5 * y.0.abs(),
                "{path} step {step}: loss {} vs {}",
                x.0,
                y.0
            );
            assert!(
                (x.1 - y.1).abs() <= 1e-5 * y.1.abs(),
                "{path} step {step}: norm {} vs {}",
                x.1,
                y.1
            );
            for ((name, g), (_, h)) in x.2.iter().zip(&y.2) {
                let e = rel_err(g, h);
                assert!(
                    e <= 1e-5,
                    "{path} step {step}: grad {name} differs by {e:.2e}"
                );
            }
        }
        for (p, q) in pa.iter().zip(&pc) {
            let e = rel_err(&p.data, &q.data);
            assert!(e <= 1e-5, "{path}: parameter {} differs by {e:.2e}", p.name);
        }
    }
}

/// f16-mixed refuses what it cannot run, naming why: the normalized cells.
#[test]
fn f16_mixed_refuses_normalized_cells() {
    let ctx = common::ctx();
    let mut net = sine_net(1);
    net.norm = Norm::LayerCell;
    let mut tr = Trainer::new(ctx, net.clone(), init_values(&net, 1), 2, None, &adamw())
        .unwrap_or_else(|e| panic!("{e}"));
    let err = tr
        .set_precision(Precision::F16Mixed)
        .expect_err("layer-cell in f16-mixed");
    assert!(err.to_string().contains("f32 only"), "{err}");
}

/// The per-tensor norms a step reads back with its loss are the L2 norms
/// of the gradients the engine holds (embedding, LSTM, LayerNorm and head
/// tensors), before clipping; every LSTM and norm tensor has a layer, the
/// embedding and the head none, and the layer norms group them so.
#[test]
fn step_tensor_norms_are_those_of_the_gradients() {
    use lstm_wgpu::train::health::{layer_norms, layer_of};
    let ctx = common::ctx();
    let (t, b, vocab) = (5, 3, 7);
    let mut net = NetConfig::new(Head::Language { vocab, embed: 6 }, 8, 2);
    net.norm = Norm::Layer { last: true };
    let values = init_values(&net, 11);
    let x: Vec<u32> = (0..t * b).map(|i| (i * 5 % vocab) as u32).collect();
    let y: Vec<u32> = x.iter().map(|&v| (v + 1) % vocab as u32).collect();
    let run = |clip: Option<f32>| {
        let mut tr = Trainer::new(
            ctx.clone(),
            net.clone(),
            values.clone(),
            b,
            clip,
            &OptimConfig::sgd(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let s = tr
            .step(t, &StepData::tokens(&x, &y), Carry::Zero, 0.0)
            .unwrap_or_else(|e| panic!("{e}"));
        (s, tr.tensor_names(), grads(&tr))
    };
    let sq = |v: &[f32]| v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>();
    let (s, names, g) = run(None);
    assert_eq!(names.len(), s.tensor_norms.len());
    assert!(
        names.iter().any(|n| n == "layer_norms.1.weight"),
        "{names:?}"
    );
    let mut by_layer = [0.0f64; 2];
    for ((name, v), (n, &norm)) in g.iter().zip(names.iter().zip(&s.tensor_norms)) {
        assert_eq!(name.strip_prefix("grad."), Some(n.as_str()));
        let want = sq(v).sqrt();
        assert!(want > 0.0, "{n}: no gradient");
        assert!(
            (norm as f64 - want).abs() <= 1e-5 * want,
            "{n}: {norm} vs {want}"
        );
        let outside = n.starts_with("embedding.") || n.starts_with("head.");
        match layer_of(n) {
            Some(k) => by_layer[k] += sq(v),
            None => assert!(outside, "{n} has no layer"),
        }
    }
    let total = sq(&s.tensor_norms).sqrt();
    assert!((total - s.grad_norm as f64).abs() <= 1e-5 * total);
    let layers = layer_norms(&names, &s.tensor_norms, 2);
    for k in 0..2 {
        let want = by_layer[k].sqrt();
        assert!((layers[k] - want).abs() <= 1e-5 * want, "layer {k}");
    }
    // Clipped to a tenth of the norm: the same norms are reported (before
    // clipping), and the gradients the engine holds are a tenth.
    let (c, _, gc) = run(Some(s.grad_norm / 10.0));
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&c.tensor_norms), bits(&s.tensor_norms));
    let clipped = gc.iter().map(|(_, v)| sq(v)).sum::<f64>().sqrt();
    assert!((clipped - total / 10.0).abs() <= 1e-4 * total, "{clipped}");
}
