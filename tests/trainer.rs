//! The trainer's GPU step end to end: losses fall on small problems.

mod common;

use lstm_wgpu::kernels::optim::OptimConfig;
use lstm_wgpu::train::{Carry, Head, NetConfig, StepData, Trainer, init_values};

#[test]
fn char_model_loss_falls() {
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
    let net = NetConfig {
        head: Head::Language {
            vocab: vocab.len(),
            embed: 8,
        },
        hidden: 32,
        layers: 2,
    };
    let (t, b) = (8, 4);
    let mut opt = OptimConfig::adam();
    opt.lr = 0.01;
    let mut tr = Trainer::new(ctx, net.clone(), init_values(&net, 1), b, Some(5.0), &opt)
        .unwrap_or_else(|e| panic!("{e}"));
    let stream = ids.len() / b;
    let mut first = None;
    let mut last = 0.0;
    for step in 0..60 {
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
        let s = tr
            .step(
                t,
                &StepData::Tokens {
                    ids: &x,
                    targets: &y,
                },
                carry,
                0.01,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!s.skipped && s.loss.is_finite() && s.grad_norm.is_finite());
        first.get_or_insert(s.loss);
        last = s.loss;
    }
    let first = first.unwrap_or(0.0);
    assert!(first > 1.5 && last < 0.3 * first, "loss {first} -> {last}");
}

#[test]
fn series_model_loss_falls() {
    let ctx = common::ctx();
    let net = NetConfig {
        head: Head::Regression {
            features: 1,
            outputs: 1,
        },
        hidden: 32,
        layers: 1,
    };
    let (t, b) = (12, 8);
    let mut opt = OptimConfig::adamw();
    opt.lr = 0.01;
    let mut tr = Trainer::new(ctx, net.clone(), init_values(&net, 2), b, Some(1.0), &opt)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut losses = Vec::new();
    for step in 0..80 {
        let mut x = vec![0f32; t * b];
        let mut y = vec![0f32; b];
        for bb in 0..b {
            let ph = (step * b + bb) as f32 * 0.37;
            for tt in 0..t {
                x[tt * b + bb] = (ph + 0.5 * tt as f32).sin();
            }
            y[bb] = (ph + 0.5 * t as f32).sin();
        }
        let s = tr
            .step(
                t,
                &StepData::Series { x: &x, targets: &y },
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
