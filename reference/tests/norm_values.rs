//! The norm reference's values against direct computations and hand-written
//! loops: tensor names and order, running statistics, batch independence in
//! eval mode, closed forms, link masks and the errors it reports.

mod common;

use common::*;
use lstm_wgpu_reference::dropout::{DropoutStep, ref_links};
use lstm_wgpu_reference::norm::*;
use lstm_wgpu_reference::*;

/// The masks drop about p of the elements and differ between layers
/// and steps; links change the output exactly where they should.
#[test]
fn links_masks_and_effect() {
    let c = cfg(2, 4, 3, true, true);
    let step = DropoutStep {
        seed: 99,
        counter: 3,
    };
    let links = ref_links(&c, 6, 5, 0.5, false, Some(&step)).unwrap();
    let n = 6 * 5 * 8;
    for m in &links.keep {
        let kept = m.iter().filter(|&&k| k).count();
        assert!((n * 3 / 10..n * 7 / 10).contains(&kept), "{kept} of {n}");
    }
    assert_ne!(links.keep[0], links.keep[1], "streams differ per layer");
    let other = DropoutStep { counter: 4, ..step };
    let l2 = ref_links(&c, 6, 5, 0.5, false, Some(&other)).unwrap();
    assert_ne!(links.keep[0], l2.keep[0], "counters differ");
    assert!(ref_links(&c, 6, 5, 1.0, false, Some(&step)).is_err());
    let bad = RefLinks {
        keep: vec![vec![true; n]],
        ..links.clone()
    };
    assert!(bad.check(&c, 6, 5).is_err(), "one mask for 3 layers");
    // Residual with identity links: y_{l+1} = h_l + y_l.
    let mut rng = Rng::new(5);
    let w = random_weights(&c, &mut rng);
    let norm = RefNorm::Layer { last: false };
    let nt = random_norm_tensors(&c, norm, &mut rng);
    let inp = make_inputs(&c, &mut rng, 6, 5, true, Some(vec![6, 2, 4, 1, 5]));
    let plain = forward_norm(&c, &w, norm, &nt, &inp, true).unwrap();
    let eval = ref_links(&c, 6, 5, 0.5, false, None).unwrap();
    let same = forward_norm_links(&c, &w, norm, &nt, &inp, true, &eval).unwrap();
    assert_eq!(
        plain.out.output, same.out.output,
        "eval-mode dropout is identity"
    );
    let dropped = forward_norm_links(&c, &w, norm, &nt, &inp, true, &links).unwrap();
    assert_ne!(plain.out.output, dropped.out.output);
    // Layer 0's states do not see any link.
    let sl = 2 * 5 * 4;
    assert_eq!(plain.out.h_n[..sl], dropped.out.h_n[..sl]);
    assert_ne!(plain.out.h_n[sl..], dropped.out.h_n[sl..]);
}

#[test]
fn tensor_shapes_order_and_random_ranges() {
    use TensorKind::{Param as P, RunningStat as R};
    let c = cfg(2, 3, 2, true, true);
    let names = |norm| -> Vec<(String, Vec<usize>, TensorKind)> { norm_tensor_shapes(&c, norm) };
    let e = |n: &str, s: &[usize], k| (n.to_string(), s.to_vec(), k);
    assert_eq!(
        names(RefNorm::Layer { last: false }),
        vec![
            e("layer_norms.0.weight", &[6], P),
            e("layer_norms.0.bias", &[6], P)
        ]
    );
    assert_eq!(names(RefNorm::Layer { last: true }).len(), 4);
    assert_eq!(
        names(RefNorm::Layer { last: true })[2].0,
        "layer_norms.1.weight"
    );
    assert_eq!(
        names(RefNorm::Batch { last: true }),
        vec![
            e("batch_norms.0.weight", &[6], P),
            e("batch_norms.0.bias", &[6], P),
            e("batch_norms.0.running_mean", &[6], R),
            e("batch_norms.0.running_var", &[6], R),
            e("batch_norms.1.weight", &[6], P),
            e("batch_norms.1.bias", &[6], P),
            e("batch_norms.1.running_mean", &[6], R),
            e("batch_norms.1.running_var", &[6], R),
        ]
    );
    assert_eq!(
        names(RefNorm::StepBatch {
            last: false,
            t_max: 7
        }),
        vec![
            e("step_norms.0.weight", &[6], P),
            e("step_norms.0.bias", &[6], P),
            e("step_norms.0.running_mean", &[7, 6], R),
            e("step_norms.0.running_var", &[7, 6], R),
        ]
    );
    let lc = names(RefNorm::LayerCell);
    assert_eq!(lc.len(), 2 * 2 * 6);
    assert_eq!(
        lc[..7].to_vec(),
        vec![
            e("ln_ih_l0.weight", &[12], P),
            e("ln_ih_l0.bias", &[12], P),
            e("ln_hh_l0.weight", &[12], P),
            e("ln_hh_l0.bias", &[12], P),
            e("ln_c_l0.weight", &[3], P),
            e("ln_c_l0.bias", &[3], P),
            e("ln_ih_l0_reverse.weight", &[12], P),
        ]
    );
    assert_eq!(lc[12].0, "ln_ih_l1.weight");
    let rb = names(RefNorm::RecurrentBatch { t_max: 4 });
    assert_eq!(rb.len(), 2 * 2 * 10);
    assert_eq!(
        rb[..11].to_vec(),
        vec![
            e("bn_ih_l0.weight", &[12], P),
            e("bn_ih_l0.running_mean", &[4, 12], R),
            e("bn_ih_l0.running_var", &[4, 12], R),
            e("bn_hh_l0.weight", &[12], P),
            e("bn_hh_l0.running_mean", &[4, 12], R),
            e("bn_hh_l0.running_var", &[4, 12], R),
            e("bn_c_l0.weight", &[3], P),
            e("bn_c_l0.bias", &[3], P),
            e("bn_c_l0.running_mean", &[4, 3], R),
            e("bn_c_l0.running_var", &[4, 3], R),
            e("bn_ih_l0_reverse.weight", &[12], P),
        ]
    );
    assert_eq!(rb[20].0, "bn_ih_l1.weight");

    let mut rng = Rng::new(3);
    for norm in [
        RefNorm::Batch { last: true },
        RefNorm::StepBatch {
            last: true,
            t_max: 3,
        },
        RefNorm::LayerCell,
        RefNorm::RecurrentBatch { t_max: 3 },
    ] {
        let nt = random_norm_tensors(&c, norm, &mut rng);
        assert_eq!(nt.len(), norm_tensor_shapes(&c, norm).len());
        for (name, v) in &nt {
            let (lo, hi) = if name.ends_with(".weight") {
                if matches!(norm, RefNorm::RecurrentBatch { .. }) {
                    (0.05, 0.2)
                } else {
                    (0.5, 1.5)
                }
            } else if name.ends_with(".bias") {
                (-0.5, 0.5)
            } else if name.ends_with(".running_mean") {
                (-0.2, 0.2)
            } else {
                (0.5, 1.5)
            };
            assert!(v.iter().all(|x| (lo..hi).contains(x)), "{name}");
        }
    }
}

/// Valid `(t, b)` rows in time-major order.
fn valid_rows(lengths: &[usize], t_len: usize) -> Vec<(usize, usize)> {
    (0..t_len)
        .flat_map(|t| {
            (0..lengths.len())
                .filter(move |&b| t < lengths[b])
                .map(move |b| (t, b))
        })
        .collect()
}

/// Direct per-feature mean and biased variance of `[n, f]` rows.
fn stats(rows: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    let n = rows.len() as f64;
    let f = rows[0].len();
    let mean: Vec<f64> = (0..f)
        .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect();
    let var = (0..f)
        .map(|j| rows.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n)
        .collect();
    (mean, var)
}

#[test]
fn batch_running_stats_and_output_match_direct_computation() {
    for bidir in [false, true] {
        let c = cfg(2, 3, 1, bidir, true);
        let norm = RefNorm::Batch { last: true };
        let mut rng = Rng::new(40 + bidir as u64);
        let w = random_weights(&c, &mut rng);
        let mut nt = random_norm_tensors(&c, norm, &mut rng);
        nt.insert("batch_norms.0.num_batches_tracked".into(), vec![7.0]);
        let lengths = vec![5, 1, 4];
        let (t_len, b_len) = (5, 3);
        let inp = make_inputs(&c, &mut rng, t_len, b_len, true, Some(lengths.clone()));
        let raw = forward(&c, &w, &inp).output;
        let dh = c.dirs() * 3;
        let rows = valid_rows(&lengths, t_len);
        assert_eq!(rows.len(), 10);
        let xs: Vec<Vec<f64>> = rows
            .iter()
            .map(|&(t, b)| raw[(t * b_len + b) * dh..(t * b_len + b + 1) * dh].to_vec())
            .collect();
        let (mu, var) = stats(&xs);
        let n = xs.len() as f64;
        let (g, be) = (&nt["batch_norms.0.weight"], &nt["batch_norms.0.bias"]);
        let (rm0, rv0) = (
            &nt["batch_norms.0.running_mean"],
            &nt["batch_norms.0.running_var"],
        );

        let run = forward_norm(&c, &w, norm, &nt, &inp, true).unwrap();
        let exp_m: Vec<f64> = (0..dh).map(|j| 0.9 * rm0[j] + 0.1 * mu[j]).collect();
        let exp_v: Vec<f64> = (0..dh)
            .map(|j| 0.9 * rv0[j] + 0.1 * var[j] * n / (n - 1.0))
            .collect();
        assert_close(
            &run.running["batch_norms.0.running_mean"],
            &exp_m,
            1e-14,
            "running_mean",
        );
        assert_close(
            &run.running["batch_norms.0.running_var"],
            &exp_v,
            1e-14,
            "running_var",
        );
        assert_eq!(run.running["batch_norms.0.num_batches_tracked"], vec![8.0]);
        assert_eq!(run.running.len(), 3);
        let mut exp_out = vec![0.0; raw.len()];
        for (r, &(t, b)) in rows.iter().enumerate() {
            for j in 0..dh {
                exp_out[(t * b_len + b) * dh + j] =
                    (xs[r][j] - mu[j]) / (var[j] + 1e-5).sqrt() * g[j] + be[j];
            }
        }
        assert_close(&run.out.output, &exp_out, 1e-12, "train output");
        // h_n / c_n are the raw LSTM states.
        let plain_out = forward(&c, &w, &inp);
        assert_eq!(run.out.h_n, plain_out.h_n);
        assert_eq!(run.out.c_n, plain_out.c_n);

        // Eval: running stats unchanged, output from them.
        let ev = forward_norm(&c, &w, norm, &nt, &inp, false).unwrap();
        assert_eq!(ev.running["batch_norms.0.running_mean"], *rm0);
        assert_eq!(ev.running["batch_norms.0.running_var"], *rv0);
        assert_eq!(ev.running["batch_norms.0.num_batches_tracked"], vec![7.0]);
        let mut exp_ev = vec![0.0; raw.len()];
        for (r, &(t, b)) in rows.iter().enumerate() {
            for j in 0..dh {
                exp_ev[(t * b_len + b) * dh + j] =
                    (xs[r][j] - rm0[j]) / (rv0[j] + 1e-5).sqrt() * g[j] + be[j];
            }
        }
        assert_close(&ev.out.output, &exp_ev, 1e-12, "eval output");
    }
}

#[test]
fn step_batch_running_stats_match_direct_computation() {
    let c = cfg(2, 3, 1, true, true);
    let norm = RefNorm::StepBatch {
        last: true,
        t_max: 7,
    };
    let mut rng = Rng::new(50);
    let w = random_weights(&c, &mut rng);
    let nt = random_norm_tensors(&c, norm, &mut rng);
    let lengths = vec![5, 3, 5];
    let (t_len, b_len, dh) = (5, 3, 6);
    let inp = make_inputs(&c, &mut rng, t_len, b_len, true, Some(lengths.clone()));
    let raw = forward(&c, &w, &inp).output;
    let run = forward_norm(&c, &w, norm, &nt, &inp, true).unwrap();
    let (rm0, rv0) = (
        &nt["step_norms.0.running_mean"],
        &nt["step_norms.0.running_var"],
    );
    let (rm1, rv1) = (
        &run.running["step_norms.0.running_mean"],
        &run.running["step_norms.0.running_var"],
    );
    let (g, be) = (&nt["step_norms.0.weight"], &nt["step_norms.0.bias"]);
    for t in 0..7 {
        let r = t * dh..(t + 1) * dh;
        if t >= t_len {
            assert_eq!(rm1[r.clone()], rm0[r.clone()], "row {t} untouched");
            assert_eq!(rv1[r.clone()], rv0[r], "row {t} untouched");
            continue;
        }
        let bs: Vec<usize> = (0..b_len).filter(|&b| t < lengths[b]).collect();
        let xs: Vec<Vec<f64>> = bs
            .iter()
            .map(|&b| raw[(t * b_len + b) * dh..(t * b_len + b + 1) * dh].to_vec())
            .collect();
        let (mu, var) = stats(&xs);
        let n = xs.len() as f64;
        for j in 0..dh {
            let q = t * dh + j;
            assert!((rm1[q] - (0.9 * rm0[q] + 0.1 * mu[j])).abs() < 1e-14);
            assert!((rv1[q] - (0.9 * rv0[q] + 0.1 * var[j] * n / (n - 1.0))).abs() < 1e-14);
            for (k, &b) in bs.iter().enumerate() {
                let y = run.out.output[(t * b_len + b) * dh + j];
                let e = (xs[k][j] - mu[j]) / (var[j] + 1e-5).sqrt() * g[j] + be[j];
                assert!((y - e).abs() < 1e-12, "t={t} b={b} j={j}");
            }
        }
    }
}

#[test]
fn recurrent_batch_first_step_running_stats() {
    let c = cfg(2, 3, 1, false, true);
    let norm = RefNorm::RecurrentBatch { t_max: 7 };
    let mut rng = Rng::new(60);
    let w = random_weights(&c, &mut rng);
    let nt = random_norm_tensors(&c, norm, &mut rng);
    let (t_len, b_len, h) = (5, 3, 3);
    // Without h0: W_hh h_{-1} = 0, so bn_hh row 0 sees mean 0 and var 0.
    let inp = make_inputs(&c, &mut rng, t_len, b_len, false, Some(vec![5, 2, 4]));
    // (train with N = 1 at t = 4 would fail; only look at step 0 via eval-free train on T = 2 prefix)
    let inp = RefInputs {
        seq_len: 2,
        x: inp.x[..2 * b_len * 2].to_vec(),
        lengths: Some(vec![2, 2, 2]),
        ..inp
    };
    let run = forward_norm(&c, &w, norm, &nt, &inp, true).unwrap();
    let xs: Vec<Vec<f64>> = (0..b_len)
        .map(|b| {
            let mut a = vec![0.0; 4 * h];
            matvec_acc(&mut a, &w.cells[0].w_ih, &inp.x[b * 2..b * 2 + 2]);
            a
        })
        .collect();
    let (mu, var) = stats(&xs);
    let (rm0, rv0) = (&nt["bn_ih_l0.running_mean"], &nt["bn_ih_l0.running_var"]);
    let (rm1, rv1) = (
        &run.running["bn_ih_l0.running_mean"],
        &run.running["bn_ih_l0.running_var"],
    );
    for j in 0..4 * h {
        assert!((rm1[j] - (0.9 * rm0[j] + 0.1 * mu[j])).abs() < 1e-14);
        assert!((rv1[j] - (0.9 * rv0[j] + 0.1 * var[j] * 1.5)).abs() < 1e-14);
    }
    let (hm0, hv0) = (&nt["bn_hh_l0.running_mean"], &nt["bn_hh_l0.running_var"]);
    let (hm1, hv1) = (
        &run.running["bn_hh_l0.running_mean"],
        &run.running["bn_hh_l0.running_var"],
    );
    for j in 0..4 * h {
        assert!((hm1[j] - 0.9 * hm0[j]).abs() < 1e-15);
        assert!((hv1[j] - 0.9 * hv0[j]).abs() < 1e-15);
    }
    // Rows 1 updated, rows >= 2 untouched.
    for name in [
        "bn_ih_l0.running_mean",
        "bn_hh_l0.running_var",
        "bn_c_l0.running_mean",
    ] {
        let f = if name.starts_with("bn_c") { h } else { 4 * h };
        assert_ne!(
            run.running[name][f..2 * f],
            nt[name][f..2 * f],
            "{name} row 1"
        );
        assert_eq!(
            run.running[name][2 * f..],
            nt[name][2 * f..],
            "{name} rows >= 2"
        );
    }
    assert_eq!(run.running.len(), 6);
}

/// Step-wise variants against hand-written loops: variant 4 in eval mode
/// with T > T_max (row `min(t, T_max - 1)`), variant 5 in eval mode with
/// T > T_max (row `min(s, T_max - 1)` per direction step `s`) and in train
/// mode (outputs, states and every running-stat row).
#[test]
fn step_wise_variants_match_direct_computation() {
    // Variant 4: T = 5 > T_max = 3.
    let c = cfg(2, 3, 1, true, true);
    let norm = RefNorm::StepBatch {
        last: true,
        t_max: 3,
    };
    let mut rng = Rng::new(55);
    let w = random_weights(&c, &mut rng);
    let nt = random_norm_tensors(&c, norm, &mut rng);
    let lengths = vec![5, 2, 4];
    let (t_len, b_len, dh) = (5, 3, 6);
    let inp = make_inputs(&c, &mut rng, t_len, b_len, true, Some(lengths.clone()));
    let raw = forward(&c, &w, &inp).output;
    let out = forward_norm(&c, &w, norm, &nt, &inp, false)
        .unwrap()
        .out
        .output;
    let (rm, rv) = (
        &nt["step_norms.0.running_mean"],
        &nt["step_norms.0.running_var"],
    );
    let (g, be) = (&nt["step_norms.0.weight"], &nt["step_norms.0.bias"]);
    for t in 0..t_len {
        let r = t.min(2);
        for (b, &len) in lengths.iter().enumerate() {
            for j in 0..dh {
                let q = (t * b_len + b) * dh + j;
                let e = if t < len {
                    (raw[q] - rm[r * dh + j]) / (rv[r * dh + j] + 1e-5).sqrt() * g[j] + be[j]
                } else {
                    0.0
                };
                assert!((out[q] - e).abs() < 1e-12, "t={t} b={b} j={j}");
            }
        }
    }

    // Variant 5, both directions: eval with T_max = 2 < T, train.
    for (train, t_max, lengths) in [(false, 2, vec![5, 2, 4]), (true, 6, vec![5, 3, 5])] {
        let norm = RefNorm::RecurrentBatch { t_max };
        let nt = random_norm_tensors(&c, norm, &mut rng);
        let inp = make_inputs(&c, &mut rng, t_len, b_len, true, Some(lengths.clone()));
        let run = forward_norm(&c, &w, norm, &nt, &inp, train).unwrap();
        let (out, h_n, c_n, running) =
            manual_recurrent_batch(&c, &w, &nt, &inp, &lengths, t_max, train);
        assert_close(
            &run.out.output,
            &out,
            1e-12,
            &format!("train={train} output"),
        );
        assert_close(&run.out.h_n, &h_n, 1e-12, "h_n");
        assert_close(&run.out.c_n, &c_n, 1e-12, "c_n");
        assert_eq!(run.running.len(), running.len());
        for (k, v) in &running {
            assert_close(&run.running[k], v, 1e-14, k);
        }
    }
}

/// Hand-written one-layer recurrent-BatchNorm LSTM (variant 5) forward:
/// returns output, h_n, c_n and the running stats.
fn manual_recurrent_batch(
    c: &RefConfig,
    w: &RefWeights,
    nt: &NormTensors,
    inp: &RefInputs,
    lengths: &[usize],
    t_max: usize,
    train: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, NormTensors) {
    assert_eq!(c.num_layers, 1);
    let (h, i_sz, b_len, d_n) = (c.hidden_size, c.input_size, inp.batch, c.dirs());
    let dh = d_n * h;
    let mut running: NormTensors = nt
        .iter()
        .filter(|(k, _)| k.contains(".running_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut out = vec![0.0; inp.seq_len * b_len * dh];
    let mut h_n = vec![0.0; d_n * b_len * h];
    let mut c_n = vec![0.0; d_n * b_len * h];
    let sg = |v: f64| 1.0 / (1.0 + (-v).exp());
    for dir in 0..d_n {
        let base = |n: &str| format!("{n}_l0{}", dir_suffix(dir));
        let cw = &w.cells[dir];
        // BN of the vectors `vs` (one per active sequence), stats row `r`.
        let mut bn = |n: &str, vs: &[Vec<f64>], s: usize, beta: bool| -> Vec<Vec<f64>> {
            let f = vs[0].len();
            let r = if train { s } else { s.min(t_max - 1) };
            let g = &nt[&format!("{}.weight", base(n))];
            let bt = beta.then(|| &nt[&format!("{}.bias", base(n))]);
            let (mk, vk) = (
                format!("{}.running_mean", base(n)),
                format!("{}.running_var", base(n)),
            );
            let cnt = vs.len() as f64;
            let mut stats = vec![(0.0, 0.0); f];
            for j in 0..f {
                stats[j] = if train {
                    let m = vs.iter().map(|v| v[j]).sum::<f64>() / cnt;
                    let var = vs.iter().map(|v| (v[j] - m).powi(2)).sum::<f64>() / cnt;
                    let rm = &mut running.get_mut(&mk).unwrap()[r * f + j];
                    *rm = 0.9 * *rm + 0.1 * m;
                    let rv = &mut running.get_mut(&vk).unwrap()[r * f + j];
                    *rv = 0.9 * *rv + 0.1 * var * cnt / (cnt - 1.0);
                    (m, var)
                } else {
                    (nt[&mk][r * f + j], nt[&vk][r * f + j])
                };
            }
            vs.iter()
                .map(|v| {
                    (0..f)
                        .map(|j| {
                            (v[j] - stats[j].0) / (stats[j].1 + 1e-5).sqrt() * g[j]
                                + bt.map_or(0.0, |b| b[j])
                        })
                        .collect()
                })
                .collect()
        };
        let st_off = |b: usize| (dir * b_len + b) * h;
        let mut hs: Vec<Vec<f64>> = (0..b_len)
            .map(|b| inp.h0.as_ref().unwrap()[st_off(b)..st_off(b) + h].to_vec())
            .collect();
        let mut cs: Vec<Vec<f64>> = (0..b_len)
            .map(|b| inp.c0.as_ref().unwrap()[st_off(b)..st_off(b) + h].to_vec())
            .collect();
        for s in 0..*lengths.iter().max().unwrap() {
            let bs: Vec<usize> = (0..b_len).filter(|&b| s < lengths[b]).collect();
            let time = |b: usize| if dir == 0 { s } else { lengths[b] - 1 - s };
            let mv = |m: &[f64], v: &[f64]| -> Vec<f64> {
                let mut y = vec![0.0; 4 * h];
                matvec_acc(&mut y, m, v);
                y
            };
            let a: Vec<Vec<f64>> = bs
                .iter()
                .map(|&b| {
                    mv(
                        &cw.w_ih,
                        &inp.x[(time(b) * b_len + b) * i_sz..(time(b) * b_len + b + 1) * i_sz],
                    )
                })
                .collect();
            let r: Vec<Vec<f64>> = bs.iter().map(|&b| mv(&cw.w_hh, &hs[b])).collect();
            let (a, r) = (bn("bn_ih", &a, s, false), bn("bn_hh", &r, s, false));
            let mut cvs = Vec::new();
            let mut pres = Vec::new();
            for (k, &b) in bs.iter().enumerate() {
                let pre: Vec<f64> = (0..4 * h)
                    .map(|q| {
                        a[k][q]
                            + r[k][q]
                            + cw.b_ih.as_ref().unwrap()[q]
                            + cw.b_hh.as_ref().unwrap()[q]
                    })
                    .collect();
                cvs.push(
                    (0..h)
                        .map(|j| sg(pre[h + j]) * cs[b][j] + sg(pre[j]) * pre[2 * h + j].tanh())
                        .collect(),
                );
                pres.push(pre);
            }
            let ncs = bn("bn_c", &cvs, s, true);
            for (k, &b) in bs.iter().enumerate() {
                hs[b] = (0..h)
                    .map(|j| sg(pres[k][3 * h + j]) * ncs[k][j].tanh())
                    .collect();
                cs[b] = cvs[k].clone();
                let o = (time(b) * b_len + b) * dh + dir * h;
                out[o..o + h].copy_from_slice(&hs[b]);
            }
        }
        for b in 0..b_len {
            h_n[st_off(b)..st_off(b) + h].copy_from_slice(&hs[b]);
            c_n[st_off(b)..st_off(b) + h].copy_from_slice(&cs[b]);
        }
    }
    (out, h_n, c_n, running)
}

/// Without batch statistics (eval mode, or variants 1/2), each sequence
/// run alone gives the same output and final states as in the batch.
#[test]
fn eval_outputs_do_not_depend_on_batch_composition() {
    let cases = [
        (RefNorm::Layer { last: true }, true),
        (RefNorm::LayerCell, true),
        (RefNorm::Batch { last: true }, false),
        (
            RefNorm::StepBatch {
                last: true,
                t_max: 3,
            },
            false,
        ),
        (RefNorm::RecurrentBatch { t_max: 2 }, false),
    ];
    for (norm, train) in cases {
        let c = cfg(2, 3, 2, true, true);
        let mut rng = Rng::new(70);
        let w = random_weights(&c, &mut rng);
        let nt = random_norm_tensors(&c, norm, &mut rng);
        let lengths = vec![5, 1, 4, 2];
        let (t_len, b_len, h, cells) = (5, 4, 3, c.cells());
        let inp = make_inputs(&c, &mut rng, t_len, b_len, true, Some(lengths.clone()));
        let out = forward_norm(&c, &w, norm, &nt, &inp, train).unwrap();
        if norm.has_batch_stats() {
            let stats: NormTensors = nt
                .iter()
                .filter(|(k, _)| k.contains(".running_"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert_eq!(
                out.running, stats,
                "{norm:?}: eval returns unchanged running stats"
            );
        } else {
            assert!(out.running.is_empty());
        }
        let ow = 2 * h;
        for (b, &len) in lengths.iter().enumerate() {
            let x: Vec<f64> = (0..len)
                .flat_map(|t| inp.x[(t * b_len + b) * 2..(t * b_len + b + 1) * 2].to_vec())
                .collect();
            let alone = RefInputs {
                seq_len: len,
                batch: 1,
                x,
                h0: Some(state_of(inp.h0.as_ref().unwrap(), cells, b_len, b, h)),
                c0: Some(state_of(inp.c0.as_ref().unwrap(), cells, b_len, b, h)),
                lengths: None,
            };
            let single = forward_norm(&c, &w, norm, &nt, &alone, train).unwrap().out;
            for t in 0..len {
                assert_close(
                    &out.out.output[(t * b_len + b) * ow..(t * b_len + b + 1) * ow],
                    &single.output[t * ow..(t + 1) * ow],
                    1e-12,
                    &format!("{norm:?} b={b} t={t}"),
                );
            }
            assert_close(
                &state_of(&out.out.h_n, cells, b_len, b, h),
                &single.h_n,
                1e-12,
                "h_n",
            );
            assert_close(
                &state_of(&out.out.c_n, cells, b_len, b, h),
                &single.c_n,
                1e-12,
                "c_n",
            );
        }
    }
}

/// Train mode with batch statistics does depend on the batch (sanity check
/// that the previous test is not vacuous), and differs from eval mode.
#[test]
fn train_mode_uses_batch_statistics() {
    for norm in [
        RefNorm::Batch { last: true },
        RefNorm::StepBatch {
            last: true,
            t_max: 5,
        },
        RefNorm::RecurrentBatch { t_max: 5 },
    ] {
        let c = cfg(2, 3, 1, false, true);
        let mut rng = Rng::new(80);
        let w = random_weights(&c, &mut rng);
        let nt = random_norm_tensors(&c, norm, &mut rng);
        let inp = make_inputs(&c, &mut rng, 5, 3, true, None);
        let tr = forward_norm(&c, &w, norm, &nt, &inp, true).unwrap();
        let ev = forward_norm(&c, &w, norm, &nt, &inp, false).unwrap();
        assert_ne!(tr.out.output, ev.out.output, "{norm:?}");
        assert_ne!(tr.running, nt, "{norm:?}");
        let mut inp2 = inp.clone();
        inp2.x[2 * 2] += 0.5; // change sequence 2 only (t = 0)
        let tr2 = forward_norm(&c, &w, norm, &nt, &inp2, true).unwrap();
        assert_ne!(
            tr.out.output[..3],
            tr2.out.output[..3],
            "{norm:?}: b=0 depends on b=2"
        );
    }
}

/// Layer (1) and layer-cell (2) have no batch statistics: `train` is irrelevant;
/// a between-layer variant normalizing nothing is the plain LSTM.
#[test]
fn no_statistics_variants_and_plain_equivalence() {
    let c = cfg(2, 3, 2, true, true);
    let mut rng = Rng::new(90);
    let w = random_weights(&c, &mut rng);
    let inp = make_inputs(&c, &mut rng, 5, 3, true, Some(vec![5, 2, 4]));
    let up = make_upstream(&c, &mut rng, 5, 3);
    for norm in [RefNorm::Layer { last: true }, RefNorm::LayerCell] {
        let nt = random_norm_tensors(&c, norm, &mut rng);
        let (a, ga) = backward_norm(&c, &w, norm, &nt, &inp, &up, true).unwrap();
        let (b, gb) = backward_norm(&c, &w, norm, &nt, &inp, &up, false).unwrap();
        assert_eq!(a.out.output, b.out.output);
        assert_eq!(ga.norm, gb.norm);
        assert_eq!(ga.grads.input, gb.grads.input);
    }
    let c1 = cfg(2, 3, 1, true, true);
    let w1 = random_weights(&c1, &mut rng);
    let inp1 = make_inputs(&c1, &mut rng, 5, 3, true, Some(vec![5, 2, 4]));
    let up1 = make_upstream(&c1, &mut rng, 5, 3);
    let (out, g) = backward(&c1, &w1, &inp1, &up1);
    for norm in [
        RefNorm::Layer { last: false },
        RefNorm::Batch { last: false },
        RefNorm::StepBatch {
            last: false,
            t_max: 1,
        },
    ] {
        let nt = NormTensors::new();
        for train in [false, true] {
            let (run, ng) = backward_norm(&c1, &w1, norm, &nt, &inp1, &up1, train).unwrap();
            assert_eq!(run.out.output, out.output);
            assert_eq!(run.out.h_n, out.h_n);
            assert_eq!(ng.grads.input, g.input);
            assert_eq!(ng.grads.h0, g.h0);
            assert_eq!(ng.grads.weights.cells[1].w_hh, g.weights.cells[1].w_hh);
            assert!(ng.norm.is_empty() && run.running.is_empty());
        }
    }
}

/// One LayerNorm-cell step with H = 1, written out by hand: LN_c over a
/// single value returns its bias, so h = o * tanh(beta_c).
#[test]
fn layer_cell_closed_form() {
    let c = cfg(1, 1, 1, false, true);
    let norm = RefNorm::LayerCell;
    let w = RefWeights {
        cells: vec![RefDirWeights {
            w_ih: vec![0.4, -0.3, 0.8, 0.1],
            w_hh: vec![-0.2, 0.5, 0.3, -0.6],
            b_ih: Some(vec![0.1, 0.2, -0.1, 0.05]),
            b_hh: Some(vec![-0.05, 0.1, 0.2, -0.1]),
            w_hr: None,
        }],
    };
    let mut nt = NormTensors::new();
    let (wi, bi) = (vec![1.1, 0.9, 1.2, 0.8], vec![0.1, -0.2, 0.05, 0.3]);
    let (wh, bh) = (vec![0.7, 1.3, 1.0, 0.95], vec![-0.1, 0.15, 0.2, -0.05]);
    nt.insert("ln_ih_l0.weight".into(), wi.clone());
    nt.insert("ln_ih_l0.bias".into(), bi.clone());
    nt.insert("ln_hh_l0.weight".into(), wh.clone());
    nt.insert("ln_hh_l0.bias".into(), bh.clone());
    nt.insert("ln_c_l0.weight".into(), vec![1.7]);
    nt.insert("ln_c_l0.bias".into(), vec![0.35]);
    let (x, h0, c0) = (0.9, -0.4, 0.6);
    let inp = RefInputs {
        seq_len: 1,
        batch: 1,
        x: vec![x],
        h0: Some(vec![h0]),
        c0: Some(vec![c0]),
        lengths: None,
    };
    let ln = |v: [f64; 4], g: &[f64], b: &[f64]| -> [f64; 4] {
        let mu = v.iter().sum::<f64>() / 4.0;
        let var = v.iter().map(|a| (a - mu) * (a - mu)).sum::<f64>() / 4.0;
        std::array::from_fn(|j| (v[j] - mu) / (var + 1e-5).sqrt() * g[j] + b[j])
    };
    let wc = &w.cells[0];
    let a = ln(std::array::from_fn(|j| wc.w_ih[j] * x), &wi, &bi);
    let r = ln(std::array::from_fn(|j| wc.w_hh[j] * h0), &wh, &bh);
    let pre: [f64; 4] = std::array::from_fn(|j| {
        a[j] + r[j] + wc.b_ih.as_ref().unwrap()[j] + wc.b_hh.as_ref().unwrap()[j]
    });
    let s = |v: f64| 1.0 / (1.0 + (-v).exp());
    let c1 = s(pre[1]) * c0 + s(pre[0]) * pre[2].tanh();
    let h1 = s(pre[3]) * 0.35f64.tanh();
    let out = forward_norm(&c, &w, norm, &nt, &inp, true).unwrap().out;
    assert!((out.c_n[0] - c1).abs() < 1e-14, "{} vs {c1}", out.c_n[0]);
    assert!((out.h_n[0] - h1).abs() < 1e-14, "{} vs {h1}", out.h_n[0]);
    assert!((out.output[0] - h1).abs() < 1e-14);
}

#[test]
fn error_cases() {
    let c = cfg(2, 3, 2, true, true);
    let mut rng = Rng::new(100);
    let w = random_weights(&c, &mut rng);
    let run = |norm: RefNorm, nt: &NormTensors, inp: &RefInputs, train: bool| {
        let up = make_upstream(&c, &mut Rng::new(1), inp.seq_len, inp.batch);
        let f = forward_norm(&c, &w, norm, nt, inp, train).map(|_| ());
        let b = backward_norm(&c, &w, norm, nt, inp, &up, train).map(|_| ());
        assert_eq!(f, b, "forward and backward agree on errors");
        f
    };
    let inp5 = make_inputs(&c, &mut rng, 5, 3, true, None);

    // T > T_max in train mode (eval is fine).
    for (norm, name) in [
        (
            RefNorm::StepBatch {
                last: true,
                t_max: 4,
            },
            "step_norms.0.running_mean",
        ),
        (
            RefNorm::RecurrentBatch { t_max: 4 },
            "bn_ih_l0.running_mean",
        ),
    ] {
        let nt = random_norm_tensors(&c, norm, &mut rng);
        let e = run(norm, &nt, &inp5, true).unwrap_err();
        assert!(e.contains(name) && e.contains("T_max"), "{e}");
        run(norm, &nt, &inp5, false).unwrap();
    }

    // A single value per channel in train mode (eval is fine).
    let one = make_inputs(&c, &mut rng, 1, 1, false, None);
    let two = make_inputs(&c, &mut rng, 2, 1, false, None);
    let ragged = make_inputs(&c, &mut rng, 5, 3, false, Some(vec![5, 2, 4]));
    let b = RefNorm::Batch { last: false };
    let sb = RefNorm::StepBatch {
        last: true,
        t_max: 5,
    };
    let rb = RefNorm::RecurrentBatch { t_max: 5 };
    for (norm, inp, ok) in [
        (b, &one, false),
        (b, &two, true), // two positions of one sequence
        (b, &ragged, true),
        (sb, &one, false),
        (sb, &two, false),
        (sb, &ragged, false), // t = 4: one valid sequence
        (rb, &two, false),
        (rb, &ragged, false),
    ] {
        let nt = random_norm_tensors(&c, norm, &mut rng);
        let r = run(norm, &nt, inp, true);
        if ok {
            r.unwrap();
        } else {
            let e = r.unwrap_err();
            assert!(
                e.contains("Expected more than 1 value per channel when training"),
                "{e}"
            );
        }
        run(norm, &nt, inp, false).unwrap();
    }

    // Missing, mis-sized and unexpected tensors.
    for norm in [
        RefNorm::Layer { last: false },
        RefNorm::LayerCell,
        RefNorm::Batch { last: true },
        RefNorm::StepBatch {
            last: false,
            t_max: 5,
        },
        RefNorm::RecurrentBatch { t_max: 5 },
    ] {
        let nt = random_norm_tensors(&c, norm, &mut rng);
        run(norm, &nt, &inp5, true).unwrap();
        for name in nt.keys() {
            let mut missing = nt.clone();
            missing.remove(name);
            for train in [true, false] {
                let e = run(norm, &missing, &inp5, train).unwrap_err();
                assert!(e.contains("missing") && e.contains(name.as_str()), "{e}");
            }
            let mut short = nt.clone();
            short.get_mut(name).unwrap().pop();
            let e = run(norm, &short, &inp5, false).unwrap_err();
            assert!(e.contains(name.as_str()), "{e}");
        }
        let mut extra = nt.clone();
        extra.insert("layer_norms.1.weight".into(), vec![1.0; 6]);
        let e = run(norm, &extra, &inp5, false).unwrap_err();
        assert!(
            e.contains("unexpected") && e.contains("layer_norms.1.weight"),
            "{e}"
        );
    }
    // num_batches_tracked: accepted for variant 3 only.
    let mut nt = random_norm_tensors(&c, b, &mut rng);
    nt.insert("batch_norms.0.num_batches_tracked".into(), vec![0.0]);
    run(b, &nt, &inp5, true).unwrap();
    nt.insert("batch_norms.1.num_batches_tracked".into(), vec![0.0]);
    assert!(
        run(b, &nt, &inp5, true)
            .unwrap_err()
            .contains("batch_norms.1.num_batches_tracked")
    );

    // Invalid lengths and t_max = 0.
    let mut bad = inp5.clone();
    bad.lengths = Some(vec![5, 0, 3]);
    let nt = random_norm_tensors(&c, RefNorm::LayerCell, &mut rng);
    assert!(run(RefNorm::LayerCell, &nt, &bad, true).is_err());
    let z = RefNorm::RecurrentBatch { t_max: 0 };
    assert!(run(z, &random_norm_tensors(&c, z, &mut rng), &inp5, false).is_err());
}
