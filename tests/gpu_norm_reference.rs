//! Every normalization variant on the GPU against the f64 reference:
//! outputs, all gradients (LSTM and norm parameters), updated running
//! statistics, and clipping. Tolerance as in the core tests: max |gpu - ref|
//! / max |ref| <= 1e-4 per tensor.

mod common;

use common::cases::*;
use common::*;
use lstm_wgpu_reference::norm::{self as rn, RefNorm};

const TOL: f64 = 1e-4;

/// Train-mode recurrent BatchNorm (per-step statistics over as few as 3
/// sequences, batch spreads ~sqrt(eps), rstd ~300) is ill-conditioned in f32:
/// on `odd_and_larger_sizes`' case PyTorch float32 itself errs 1.6e-4..5.4e-4
/// depending only on its thread count (up to 4e-4 over 30 seeds of that
/// configuration), and exact f64 with inputs perturbed by 2^-24 moves the
/// results by up to 3e-4. The kernel matches PyTorch f32 statistically
/// (median error ratio 1.08 over those seeds).
const TOL_RBN_TRAIN: f64 = 1e-3;

fn run(ctx: &std::sync::Arc<lstm_wgpu::GpuContext>, c: Case, seed: u64, clip: Option<f64>) {
    let label = format!("{c:?} clip={clip:?}");
    let norm = c.norm.unwrap_or_else(|| panic!("{label}: no norm"));
    let d = c.data(seed);
    let (rrun, mut rgrads) = rn::backward_norm(&d.rc, &d.w, norm, &d.nt, &d.rin, &d.up, c.train)
        .unwrap_or_else(|e| panic!("{label}: reference: {e}"));

    let mut lstm = c.lstm(ctx, &d);
    let (out, grads) = gpu_pass(&mut lstm, &d).unwrap_or_else(|e| panic!("{label}: {e}"));
    let tol = if c.train && matches!(norm, RefNorm::RecurrentBatch { .. }) {
        TOL_RBN_TRAIN
    } else {
        TOL
    };
    let chk = |name: &str, got: &[f32], want: &[f64]| {
        assert_close(&format!("{label}: {name}"), got, want, tol)
    };
    check_outputs(&label, (&out, &grads), (&rrun.out, &rgrads.grads), tol);

    // Reference gradients by PyTorch name, in the model's table order.
    let mut want = param_grads(&d.rc, &rgrads.grads, &rgrads.norm);
    if let Some(max_norm) = clip {
        let mut refs: Vec<&mut [f64]> = Vec::new();
        let names: Vec<String> = lstm
            .model
            .table
            .entries
            .iter()
            .map(|e| e.name.clone())
            .collect();
        let mut ordered: Vec<Vec<f64>> = names.iter().map(|n| want[n].clone()).collect();
        for v in &mut ordered {
            refs.push(v.as_mut_slice());
        }
        let total = lstm_wgpu_reference::clip::clip_grad_norm(&mut refs, max_norm);
        let st = lstm
            .clip_gradients(Some(max_norm as f32), None)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        assert!(!st.nonfinite);
        assert!(
            ((st.total_norm as f64) - total).abs() <= 1e-5 * total,
            "{label}: norm {} vs {total}",
            st.total_norm
        );
        for (name, v) in names.iter().zip(ordered) {
            want.insert(name.clone(), v);
        }
        let clipped = lstm
            .model
            .grad_tensors(ctx)
            .unwrap_or_else(|e| panic!("{e}"));
        check_params(&label, &clipped, &want, tol);
    } else {
        check_params(&label, &grads.params, &want, tol);
    }
    // Running statistics after the pass (updated in train mode).
    for s in lstm
        .model
        .stat_tensors(ctx)
        .unwrap_or_else(|e| panic!("{e}"))
    {
        chk(&s.name, &s.data, &rrun.running[&s.name]);
    }
    rgrads.grads.input.clear();
}

const BASE: Case = Case {
    norm: Some(RefNorm::LayerCell),
    layers: 2,
    input: 4,
    hidden: 5,
    seq: 5,
    ..Case::BASE
};

fn grid(norm: RefNorm, modes: &[bool]) {
    let ctx = ctx();
    let mut seed = 11;
    for &train in modes {
        for (layers, bidir, bias, states, lengths) in [
            (1, false, true, false, Lengths::Full),
            (2, true, true, true, Lengths::Given(&[5, 3, 5])),
            (3, false, false, true, Lengths::Given(&[4, 5, 2])),
            (2, true, false, false, Lengths::Full),
        ] {
            // Train-mode BatchNorm needs two sequences at every step, and
            // with exactly two its f32 gradient is noise around an exact 0
            // (x̂ = ±1 whatever x): keep three or more active here.
            let bn_train =
                train && norm != RefNorm::LayerCell && !matches!(norm, RefNorm::Layer { .. });
            let (batch, lengths) = if bn_train && lengths != Lengths::Full {
                (4, Lengths::Given(&[5, 3, 5, 5]))
            } else {
                (BASE.batch, lengths)
            };
            run(
                &ctx,
                Case {
                    norm: Some(norm),
                    train,
                    layers,
                    bidir,
                    bias,
                    states,
                    lengths,
                    batch,
                    ..BASE
                },
                seed,
                None,
            );
            seed += 1;
        }
    }
}

#[test]
fn layer_between() {
    grid(RefNorm::Layer { last: true }, &[true]);
    grid(RefNorm::Layer { last: false }, &[true]);
}

#[test]
fn layer_cell() {
    grid(RefNorm::LayerCell, &[true]);
}

#[test]
fn batch_between() {
    grid(RefNorm::Batch { last: true }, &[true, false]);
    grid(RefNorm::Batch { last: false }, &[true]);
}

#[test]
fn step_batch_between() {
    grid(
        RefNorm::StepBatch {
            last: true,
            t_max: 5,
        },
        &[true, false],
    );
    // Eval with T > T_max reuses the last row.
    let ctx = ctx();
    run(
        &ctx,
        Case {
            norm: Some(RefNorm::StepBatch {
                last: false,
                t_max: 3,
            }),
            train: false,
            bidir: true,
            lengths: Lengths::Given(&[5, 2, 4]),
            ..BASE
        },
        3,
        None,
    );
}

#[test]
fn recurrent_batch_cell() {
    grid(RefNorm::RecurrentBatch { t_max: 5 }, &[true, false]);
    let ctx = ctx();
    run(
        &ctx,
        Case {
            norm: Some(RefNorm::RecurrentBatch { t_max: 2 }),
            train: false,
            bidir: true,
            states: true,
            lengths: Lengths::Given(&[5, 1, 4]),
            ..BASE
        },
        4,
        None,
    );
}

#[test]
fn odd_and_larger_sizes() {
    let ctx = ctx();
    for (i, norm) in [
        RefNorm::Layer { last: true },
        RefNorm::LayerCell,
        RefNorm::Batch { last: true },
        RefNorm::StepBatch {
            last: true,
            t_max: 9,
        },
        RefNorm::RecurrentBatch { t_max: 9 },
    ]
    .into_iter()
    .enumerate()
    {
        // H = 33 and 70 > 64 invocations: the workgroup loops wrap.
        run(
            &ctx,
            Case {
                norm: Some(norm),
                hidden: 33,
                input: 7,
                seq: 9,
                batch: 5,
                bidir: true,
                states: true,
                lengths: Lengths::Given(&[9, 4, 7, 9, 9]),
                ..BASE
            },
            40 + i as u64,
            None,
        );
        run(
            &ctx,
            Case {
                norm: Some(norm),
                hidden: 70,
                input: 3,
                seq: 3,
                batch: 70,
                layers: 1,
                ..BASE
            },
            50 + i as u64,
            None,
        );
    }
}

#[test]
fn clipping_matches_reference() {
    let ctx = ctx();
    run(
        &ctx,
        Case {
            norm: Some(RefNorm::Batch { last: false }),
            ..BASE
        },
        7,
        Some(0.05),
    );
    run(
        &ctx,
        Case {
            norm: Some(RefNorm::LayerCell),
            bidir: true,
            ..BASE
        },
        8,
        Some(0.1),
    );
    run(
        &ctx,
        Case {
            norm: Some(RefNorm::LayerCell),
            ..BASE
        },
        9,
        Some(1e6),
    );
}
