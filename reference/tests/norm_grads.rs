//! The norm reference against central finite differences of every gradient
//! (input, states, LSTM weights, norm tensors), every variant in train and
//! eval mode, also with dropout and residual links.

mod common;

use common::*;
use lstm_wgpu_reference::dropout::{DropoutStep, ref_links};
use lstm_wgpu_reference::norm::*;
use lstm_wgpu_reference::*;

struct Case {
    c: RefConfig,
    norm: RefNorm,
    train: bool,
    t: usize,
    b: usize,
    with_state: bool,
    lengths: Option<Vec<usize>>,
    seed: u64,
    links: RefLinks,
}

/// Finite differences of every gradient of one case.
fn fd_check(case: &Case, chk: &mut Checker) {
    let Case {
        ref c,
        norm,
        train,
        t,
        b,
        with_state,
        ref lengths,
        seed,
        ref links,
    } = *case;
    let mut rng = Rng::new(seed);
    let w = random_weights(c, &mut rng);
    let nt = random_norm_tensors(c, norm, &mut rng);
    let inp = make_inputs(c, &mut rng, t, b, with_state, lengths.clone());
    let up = make_upstream(c, &mut rng, t, b);
    let (run, g) = backward_norm_links(c, &w, norm, &nt, &inp, &up, train, links).unwrap();
    let fwd = forward_norm_links(c, &w, norm, &nt, &inp, train, links).unwrap();
    assert_eq!(run.out.output, fwd.out.output);
    assert_eq!(run.out.h_n, fwd.out.h_n);
    assert_eq!(run.out.c_n, fwd.out.c_n);
    assert_eq!(run.running, fwd.running);
    let tag = format!(
        "{norm:?} train={train} L={} D={} bias={} state={with_state} T={t} B={b} lengths={lengths:?} \
         dropout={} ({} masks) residual={}",
        c.num_layers,
        c.dirs(),
        c.bias,
        links.dropout,
        links.keep.len(),
        links.residual
    );

    // Padded outputs are exactly zero.
    let lens = lengths.clone().unwrap_or(vec![t; b]);
    let ow = c.dirs() * c.hidden_size;
    for tt in 0..t {
        for (bb, &len) in lens.iter().enumerate() {
            let row = &run.out.output[(tt * b + bb) * ow..(tt * b + bb + 1) * ow];
            if tt >= len {
                assert!(
                    row.iter().all(|&v| v == 0.0),
                    "{tag}: padded output t={tt} b={bb}"
                );
            }
        }
    }

    // Input gradient; exactly zero at padded positions.
    let fwd_out = |w: &RefWeights, nt: &NormTensors, inp: &RefInputs| {
        forward_norm_links(c, w, norm, nt, inp, train, links)
            .unwrap()
            .out
    };
    let eval_in = |s: &RefInputs| loss(&fwd_out(&w, &nt, s), &up);
    assert_eq!(g.grads.input.len(), inp.x.len());
    for k in 0..inp.x.len() {
        let (tt, bb) = (k / (b * c.input_size), (k / c.input_size) % b);
        if tt >= lens[bb] {
            let num = fd(&inp, k, |s| &mut s.x, eval_in);
            assert_eq!(g.grads.input[k], 0.0, "{tag}: padded input grad {k}");
            assert_eq!(num, 0.0, "{tag}: padded input numeric grad {k}");
        } else {
            let what = || format!("{tag}: input[{k}]");
            fd_cmp(chk, &what, g.grads.input[k], &inp, k, |s| &mut s.x, eval_in);
        }
    }

    // Initial states (w.r.t. zeros when h0/c0 are absent).
    let sl = state_len(c, b);
    let mut inp_s = inp.clone();
    inp_s.h0.get_or_insert_with(|| vec![0.0; sl]);
    inp_s.c0.get_or_insert_with(|| vec![0.0; sl]);
    assert_eq!(g.grads.h0.len(), sl);
    assert_eq!(g.grads.c0.len(), sl);
    for k in 0..sl {
        let what = || format!("{tag}: h0[{k}]");
        fd_cmp(
            chk,
            &what,
            g.grads.h0[k],
            &inp_s,
            k,
            |s| s.h0.as_mut().unwrap(),
            eval_in,
        );
        let what = || format!("{tag}: c0[{k}]");
        fd_cmp(
            chk,
            &what,
            g.grads.c0[k],
            &inp_s,
            k,
            |s| s.c0.as_mut().unwrap(),
            eval_in,
        );
    }

    // LSTM weights.
    let eval_w = |s: &RefWeights| loss(&fwd_out(s, &nt, &inp), &up);
    assert_eq!(g.grads.weights.cells.len(), w.cells.len());
    for (ci, gc) in g.grads.weights.cells.iter().enumerate() {
        assert_eq!(gc.b_ih.is_some(), c.bias);
        assert_eq!(gc.b_hh.is_some(), c.bias);
        for k in 0..gc.w_ih.len() {
            let what = || format!("{tag}: cell {ci} w_ih[{k}]");
            fd_cmp(
                chk,
                &what,
                gc.w_ih[k],
                &w,
                k,
                |s| &mut s.cells[ci].w_ih,
                eval_w,
            );
        }
        for k in 0..gc.w_hh.len() {
            let what = || format!("{tag}: cell {ci} w_hh[{k}]");
            fd_cmp(
                chk,
                &what,
                gc.w_hh[k],
                &w,
                k,
                |s| &mut s.cells[ci].w_hh,
                eval_w,
            );
        }
        if let (Some(gbi), Some(gbh)) = (&gc.b_ih, &gc.b_hh) {
            assert_eq!(gbi, gbh, "{tag}: b_ih and b_hh grads must match");
            for k in 0..gbi.len() {
                let what = || format!("{tag}: cell {ci} b_ih[{k}]");
                fd_cmp(
                    chk,
                    &what,
                    gbi[k],
                    &w,
                    k,
                    |s| s.cells[ci].b_ih.as_mut().unwrap(),
                    eval_w,
                );
                let what = || format!("{tag}: cell {ci} b_hh[{k}]");
                fd_cmp(
                    chk,
                    &what,
                    gbh[k],
                    &w,
                    k,
                    |s| s.cells[ci].b_hh.as_mut().unwrap(),
                    eval_w,
                );
            }
        }
    }

    // Norm tensors: every Param has a gradient, running stats have none.
    let eval_nt = |s: &NormTensors| loss(&fwd_out(&w, s, &inp), &up);
    let shapes = norm_tensor_shapes(c, norm);
    let params: Vec<_> = shapes
        .iter()
        .filter(|(_, _, kind)| *kind == TensorKind::Param)
        .collect();
    assert_eq!(g.norm.len(), params.len(), "{tag}: norm grad count");
    for (name, shape, _) in params {
        let gv = &g.norm[name];
        assert_eq!(gv.len(), shape.iter().product::<usize>());
        for (k, &gk) in gv.iter().enumerate() {
            let what = || format!("{tag}: {name}[{k}]");
            fd_cmp(
                chk,
                &what,
                gk,
                &nt,
                k,
                |s| s.get_mut(name).unwrap(),
                eval_nt,
            );
        }
    }
}

/// Grid of finite-difference cases for one variant/mode; `mk(last, train)`
/// builds the variant.
fn grid(mk: impl Fn(bool, bool) -> RefNorm, train: bool, seed0: u64) {
    let probe = mk(true, train);
    let bn_train = train && probe.has_batch_stats();
    // Every time step / step has >= 2 valid sequences (or none) in BN train mode.
    let length_sets: Vec<Option<Vec<usize>>> = if bn_train {
        vec![Some(vec![5, 3, 5]), None, Some(vec![4, 4, 2])]
    } else {
        vec![
            Some(vec![5, 2, 4]),
            None,
            Some(vec![1, 5, 3]),
            Some(vec![4, 2, 4]),
        ]
    };
    // (bias, state, last)
    let combos = [
        (true, true, true),
        (false, false, false),
        (true, false, false),
        (false, true, true),
    ];
    let mut chk = Checker::new();
    let mut q = 0;
    let mut cases = Vec::new();
    for layers in [1, 2] {
        for bidir in [false, true] {
            let j = 2 * (layers - 1) + bidir as usize;
            for &(bias, with_state, last) in &combos[2 * (j % 2)..2 * (j % 2) + 2] {
                cases.push(Case {
                    c: cfg(2, 3, layers, bidir, bias),
                    norm: mk(last, train),
                    train,
                    t: 5,
                    b: 3,
                    with_state,
                    lengths: length_sets[q % length_sets.len()].clone(),
                    seed: seed0 + q as u64,
                    links: RefLinks::default(),
                });
                q += 1;
            }
        }
    }
    cases.push(Case {
        c: cfg(2, 3, 3, true, true),
        norm: mk(true, train),
        train,
        t: 5,
        b: 3,
        with_state: true,
        lengths: length_sets[0].clone(),
        seed: seed0 + 100,
        links: RefLinks::default(),
    });
    for case in &cases {
        fd_check(case, &mut chk);
    }
    eprintln!(
        "{probe:?} train={train}: {} cases, {} entries ({} extrapolated), worst relative error {:e} at {}",
        cases.len(),
        chk.count,
        chk.extrapolated,
        chk.worst,
        chk.worst_what
    );
}

/// Dropout and residual links: with LayerNorm between layers (the last
/// included), with the LayerNorm cell, with BatchNorm in train mode, and
/// with eval-mode links (residual only). Masks are the GPU's.
#[test]
fn fd_links() {
    let step = DropoutStep {
        seed: 0x1234_5678_9abc,
        counter: 7,
    };
    let mut chk = Checker::new();
    let mut cases = Vec::new();
    // (layers, bidir, norm, train, p, residual, lengths)
    type Spec = (usize, bool, RefNorm, bool, f32, bool, Option<Vec<usize>>);
    let specs: [Spec; 6] = [
        (
            3,
            true,
            RefNorm::Layer { last: true },
            true,
            0.3,
            true,
            Some(vec![5, 2, 4]),
        ),
        (
            3,
            false,
            RefNorm::Layer { last: false },
            true,
            0.5,
            false,
            None,
        ),
        (
            2,
            false,
            RefNorm::Layer { last: true },
            false,
            0.4,
            true,
            Some(vec![1, 5, 3]),
        ),
        (
            3,
            true,
            RefNorm::LayerCell,
            true,
            0.25,
            true,
            Some(vec![4, 2, 4]),
        ),
        (
            2,
            true,
            RefNorm::Batch { last: true },
            true,
            0.3,
            true,
            Some(vec![5, 3, 5]),
        ),
        (
            3,
            false,
            RefNorm::StepBatch {
                last: false,
                t_max: 6,
            },
            true,
            0.2,
            true,
            None,
        ),
    ];
    for (q, (layers, bidir, norm, drop_on, p, residual, lengths)) in specs.into_iter().enumerate() {
        let c = cfg(2, 3, layers, bidir, q % 2 == 0);
        let links = ref_links(&c, 5, 3, p, residual, drop_on.then_some(&step)).unwrap();
        assert_eq!(links.keep.len(), if drop_on { layers - 1 } else { 0 });
        cases.push(Case {
            c,
            norm,
            train: true,
            t: 5,
            b: 3,
            with_state: q % 3 != 1,
            lengths,
            seed: 7000 + q as u64,
            links,
        });
    }
    for case in &cases {
        fd_check(case, &mut chk);
    }
    eprintln!(
        "links: {} cases, {} entries ({} extrapolated), worst relative error {:e} at {}",
        cases.len(),
        chk.count,
        chk.extrapolated,
        chk.worst,
        chk.worst_what
    );
}

#[test]
fn fd_layer() {
    grid(|last, _| RefNorm::Layer { last }, true, 1000);
}

#[test]
fn fd_layer_cell() {
    grid(|_, _| RefNorm::LayerCell, true, 2000);
}

#[test]
fn fd_batch_train() {
    grid(|last, _| RefNorm::Batch { last }, true, 3000);
}

#[test]
fn fd_batch_eval() {
    grid(|last, _| RefNorm::Batch { last }, false, 4000);
}

#[test]
fn fd_step_batch_train() {
    grid(|last, _| RefNorm::StepBatch { last, t_max: 5 }, true, 5000);
}

/// Eval with T_max < T exercises the `min(t, T_max - 1)` rows.
#[test]
fn fd_step_batch_eval() {
    grid(|last, _| RefNorm::StepBatch { last, t_max: 3 }, false, 6000);
}

#[test]
fn fd_recurrent_batch_train() {
    grid(|_, _| RefNorm::RecurrentBatch { t_max: 6 }, true, 7000);
}

#[test]
fn fd_recurrent_batch_eval() {
    grid(|_, _| RefNorm::RecurrentBatch { t_max: 2 }, false, 8000);
}
