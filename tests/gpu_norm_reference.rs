//! Every normalization variant on the GPU against the f64 reference:
//! outputs, all gradients (LSTM and norm parameters), updated running
//! statistics, and clipping. Tolerance as in the core tests: max |gpu - ref|
//! / max |ref| <= 1e-4 per tensor.

mod common;

use common::*;
use lstm_wgpu::norm::NormKind;
use lstm_wgpu::reference::{self, RefConfig, RefInputs, RefUpstream, Rng};
use lstm_wgpu::reference_norm::{self as rn, RefNorm};
use lstm_wgpu::{Batch, Lstm, LstmModel, NamedTensor, Upstream};
use std::collections::BTreeMap;

const TOL: f64 = 1e-4;

/// Train-mode recurrent BatchNorm (per-step statistics over as few as 3
/// sequences, batch spreads ~sqrt(eps), rstd ~300) is ill-conditioned in f32:
/// on `odd_and_larger_sizes`' case PyTorch float32 itself errs 1.6e-4..5.4e-4
/// depending only on its thread count (up to 4e-4 over 30 seeds of that
/// configuration), and exact f64 with inputs perturbed by 2^-24 moves the
/// results by up to 3e-4. The kernel matches PyTorch f32 statistically
/// (median error ratio 1.08 over those seeds).
const TOL_RBN_TRAIN: f64 = 1e-3;

#[derive(Clone, Copy, Debug)]
struct Case {
    norm: RefNorm,
    train: bool,
    layers: usize,
    bidir: bool,
    bias: bool,
    input: usize,
    hidden: usize,
    seq: usize,
    batch: usize,
    states: bool,
    lengths: Option<&'static [usize]>,
}

fn kind(n: RefNorm) -> NormKind {
    match n {
        RefNorm::Layer { .. } => NormKind::Layer,
        RefNorm::LayerCell => NormKind::LayerCell,
        RefNorm::Batch { .. } => NormKind::Batch,
        RefNorm::StepBatch { .. } => NormKind::StepBatch,
        RefNorm::RecurrentBatch { .. } => NormKind::RecurrentBatch,
    }
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn run(ctx: &std::sync::Arc<lstm_wgpu::GpuContext>, c: Case, seed: u64, clip: Option<f64>) {
    let label = format!("{c:?} clip={clip:?}");
    let rc = RefConfig {
        input_size: c.input,
        hidden_size: c.hidden,
        num_layers: c.layers,
        bidirectional: c.bidir,
        bias: c.bias,
    };
    let mut rng = Rng::new(seed);
    let mut w = reference::random_weights(&rc, &mut rng);
    for cell in &mut w.cells {
        round_f32(&mut cell.w_ih);
        round_f32(&mut cell.w_hh);
        for b in [&mut cell.b_ih, &mut cell.b_hh].into_iter().flatten() {
            round_f32(b);
        }
    }
    let mut nt = rn::random_norm_tensors(&rc, c.norm, &mut rng);
    for v in nt.values_mut() {
        round_f32(v);
    }
    let (t, n) = (c.seq, c.batch);
    let sl = c.layers * rc.dirs() * n * c.hidden;
    let mut vecr = |len: usize| {
        let mut v = rng.vec(len, -1.0, 1.0);
        round_f32(&mut v);
        v
    };
    let x = vecr(t * n * c.input);
    let (h0, c0) = if c.states {
        (Some(vecr(sl)), Some(vecr(sl)))
    } else {
        (None, None)
    };
    let gout = vecr(t * n * rc.dirs() * c.hidden);
    let ghn = vecr(sl);
    let gcn = vecr(sl);
    let lengths = c.lengths.map(|l| l.to_vec());
    let rin = RefInputs {
        seq_len: t,
        batch: n,
        x: x.clone(),
        h0: h0.clone(),
        c0: c0.clone(),
        lengths: lengths.clone(),
    };
    let up = RefUpstream {
        grad_output: gout.clone(),
        grad_h_n: ghn.clone(),
        grad_c_n: gcn.clone(),
    };
    let (rrun, mut rgrads) = rn::backward_norm(&rc, &w, c.norm, &nt, &rin, &up, c.train)
        .unwrap_or_else(|e| panic!("{label}: reference: {e}"));

    let mut tensors = ref_to_tensors(&rc, &w);
    for (name, shape, _) in rn::norm_tensor_shapes(&rc, c.norm) {
        tensors.push(NamedTensor::new(name.clone(), shape, f32s(&nt[&name])));
    }
    let host = LstmModel::host_model(&tensors, &BTreeMap::new(), Some(kind(c.norm)))
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    let model = LstmModel::from_host(ctx, host).unwrap_or_else(|e| panic!("{label}: {e}"));
    let mut lstm = Lstm::new(ctx.clone(), model).unwrap_or_else(|e| panic!("{label}: {e}"));
    lstm.train = c.train;
    let (xg, h0g, c0g) = (
        f32s(&x),
        h0.as_ref().map(|v| f32s(v)),
        c0.as_ref().map(|v| f32s(v)),
    );
    let batch = Batch {
        input: &xg,
        seq_len: t,
        batch: n,
        batch_first: false,
        h0: h0g.as_deref(),
        c0: c0g.as_deref(),
        lengths: lengths.as_deref(),
    };
    let (go, gh, gc) = (f32s(&gout), f32s(&ghn), f32s(&gcn));
    let upg = Upstream {
        grad_output: &go,
        grad_h_n: &gh,
        grad_c_n: &gc,
    };
    let (out, grads) = lstm
        .forward_backward(&batch, &upg)
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    let tol = if c.train && matches!(c.norm, RefNorm::RecurrentBatch { .. }) {
        TOL_RBN_TRAIN
    } else {
        TOL
    };
    let chk = |name: &str, got: &[f32], want: &[f64]| {
        assert_close(&format!("{label}: {name}"), got, want, tol)
    };
    chk("output", &out.output, &rrun.out.output);
    chk("h_n", &out.h_n, &rrun.out.h_n);
    chk("c_n", &out.c_n, &rrun.out.c_n);
    chk("grad.input", &grads.input, &rgrads.grads.input);
    chk("grad.h0", &grads.h0, &rgrads.grads.h0);
    chk("grad.c0", &grads.c0, &rgrads.grads.c0);

    // Reference gradients by PyTorch name, in the model's table order.
    let mut want: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (l, cell) in rgrads.grads.weights.cells.iter().enumerate() {
        let sfx = if l % rc.dirs() == 1 { "_reverse" } else { "" };
        let layer = l / rc.dirs();
        want.insert(format!("weight_ih_l{layer}{sfx}"), cell.w_ih.clone());
        want.insert(format!("weight_hh_l{layer}{sfx}"), cell.w_hh.clone());
        if let (Some(bi), Some(bh)) = (&cell.b_ih, &cell.b_hh) {
            want.insert(format!("bias_ih_l{layer}{sfx}"), bi.clone());
            want.insert(format!("bias_hh_l{layer}{sfx}"), bh.clone());
        }
    }
    want.extend(rgrads.norm.clone());
    assert_eq!(grads.params.len(), want.len(), "{label}: gradient count");
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
        let total = rn::clip_grad_norm(&mut refs, max_norm);
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
        for g in &clipped {
            chk(&g.name, &g.data, &want[g.name.trim_start_matches("grad.")]);
        }
    } else {
        for g in &grads.params {
            chk(&g.name, &g.data, &want[g.name.trim_start_matches("grad.")]);
        }
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
    norm: RefNorm::LayerCell,
    train: true,
    layers: 2,
    bidir: false,
    bias: true,
    input: 4,
    hidden: 5,
    seq: 5,
    batch: 3,
    states: false,
    lengths: None,
};

fn grid(norm: RefNorm, modes: &[bool]) {
    let ctx = ctx();
    let mut seed = 11;
    for &train in modes {
        for (layers, bidir, bias, states, lengths) in [
            (1, false, true, false, None),
            (2, true, true, true, Some(&[5usize, 3, 5][..])),
            (3, false, false, true, Some(&[4usize, 5, 2][..])),
            (2, true, false, false, None),
        ] {
            // Train-mode BatchNorm needs two sequences at every step, and
            // with exactly two its f32 gradient is noise around an exact 0
            // (x̂ = ±1 whatever x): keep three or more active here.
            let bn_train =
                train && norm != RefNorm::LayerCell && !matches!(norm, RefNorm::Layer { .. });
            let (batch, lengths) = if bn_train && lengths.is_some() {
                (4, Some(&[5usize, 3, 5, 5][..]))
            } else {
                (BASE.batch, lengths)
            };
            run(
                &ctx,
                Case {
                    norm,
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
            norm: RefNorm::StepBatch {
                last: false,
                t_max: 3,
            },
            train: false,
            bidir: true,
            lengths: Some(&[5, 2, 4]),
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
            norm: RefNorm::RecurrentBatch { t_max: 2 },
            train: false,
            bidir: true,
            states: true,
            lengths: Some(&[5, 1, 4]),
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
                norm,
                hidden: 33,
                input: 7,
                seq: 9,
                batch: 5,
                bidir: true,
                states: true,
                lengths: Some(&[9, 4, 7, 9, 9]),
                ..BASE
            },
            40 + i as u64,
            None,
        );
        run(
            &ctx,
            Case {
                norm,
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
            norm: RefNorm::Batch { last: false },
            ..BASE
        },
        7,
        Some(0.05),
    );
    run(
        &ctx,
        Case {
            norm: RefNorm::LayerCell,
            bidir: true,
            ..BASE
        },
        8,
        Some(0.1),
    );
    run(
        &ctx,
        Case {
            norm: RefNorm::LayerCell,
            ..BASE
        },
        9,
        Some(1e6),
    );
}
