//! Every output and gradient of the GPU path against the f64 reference.
//! Tolerance: max |gpu - ref| / max |ref| <= 1e-4 per tensor (f32 kernels
//! against f64 math; observed errors are around 1e-6).

mod common;

use common::*;
use lstm_wgpu::reference::{self, RefConfig, RefInputs, RefUpstream, Rng};
use lstm_wgpu::{Batch, Lstm, LstmModel, Upstream};

const TOL: f64 = 1e-4;

#[derive(Clone, Copy)]
struct Case {
    layers: usize,
    bidir: bool,
    bias: bool,
    input: usize,
    hidden: usize,
    seq: usize,
    batch: usize,
    states: bool,
    lengths: bool,
    batch_first: bool,
}

fn run_case(ctx: &std::sync::Arc<lstm_wgpu::GpuContext>, c: Case, seed: u64) {
    let label = format!(
        "L={} bidir={} bias={} I={} H={} T={} B={} states={} lengths={} batch_first={}",
        c.layers,
        c.bidir,
        c.bias,
        c.input,
        c.hidden,
        c.seq,
        c.batch,
        c.states,
        c.lengths,
        c.batch_first
    );
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
    let (t, n) = (c.seq, c.batch);
    let sl = c.layers * rc.dirs() * n * c.hidden;
    let mut vec = |len: usize| {
        let mut v = rng.vec(len, -1.0, 1.0);
        round_f32(&mut v);
        v
    };
    let x = vec(t * n * c.input);
    let (h0, c0) = if c.states {
        (Some(vec(sl)), Some(vec(sl)))
    } else {
        (None, None)
    };
    let gout = vec(t * n * rc.dirs() * c.hidden);
    let ghn = vec(sl);
    let gcn = vec(sl);
    let lengths: Option<Vec<usize>> = c.lengths.then(|| {
        (0..n)
            .map(|b| if b == 0 { t } else { 1 + (b * 7 + 3) % t })
            .collect()
    });
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
    let (rout, rgrad) = reference::backward(&rc, &w, &rin, &up);

    let model =
        LstmModel::from_tensors(ctx, &ref_to_tensors(&rc, &w)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(model.config, config(&rc));
    let mut lstm = Lstm::new(ctx.clone(), model).unwrap_or_else(|e| panic!("{e}"));
    let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let w_io = rc.dirs() * c.hidden;
    // The GPU side gets batch-first data when asked, the reference always
    // time-major; results are converted back for comparison.
    let to_layout = |v: Vec<f32>, width: usize| {
        if c.batch_first {
            lstm_wgpu::lstm::swap01(&v, t, n, width)
        } else {
            v
        }
    };
    let from_layout = |v: Vec<f32>, width: usize| {
        if c.batch_first {
            lstm_wgpu::lstm::swap01(&v, n, t, width)
        } else {
            v
        }
    };
    let xg = to_layout(f(&x), c.input);
    let h0g = h0.as_ref().map(|v| f(v));
    let c0g = c0.as_ref().map(|v| f(v));
    let batch = Batch {
        input: &xg,
        seq_len: t,
        batch: n,
        batch_first: c.batch_first,
        h0: h0g.as_deref(),
        c0: c0g.as_deref(),
        lengths: lengths.as_deref(),
    };
    let goutg = to_layout(f(&gout), w_io);
    let (ghn_f, gcn_f) = (f(&ghn), f(&gcn));
    let upg = Upstream {
        grad_output: &goutg,
        grad_h_n: &ghn_f,
        grad_c_n: &gcn_f,
    };
    let (out, grads) = lstm
        .forward_backward(&batch, &upg)
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    let chk = |name: &str, got: &[f32], want: &[f64]| {
        assert_close(&format!("{label}: {name}"), got, want, TOL)
    };
    chk(
        "output",
        &from_layout(out.output.clone(), w_io),
        &rout.output,
    );
    chk("h_n", &out.h_n, &rout.h_n);
    chk("c_n", &out.c_n, &rout.c_n);
    chk(
        "grad.input",
        &from_layout(grads.input.clone(), c.input),
        &rgrad.input,
    );
    chk("grad.h0", &grads.h0, &rgrad.h0);
    chk("grad.c0", &grads.c0, &rgrad.c0);
    for (l, cell) in rgrad.weights.cells.iter().enumerate() {
        let (layer, d) = (l / rc.dirs(), l % rc.dirs());
        let sfx = if d == 1 { "_reverse" } else { "" };
        let get = |n: &str| {
            grads
                .params
                .iter()
                .find(|t| t.name == format!("grad.{n}_l{layer}{sfx}"))
                .unwrap_or_else(|| panic!("{label}: no grad.{n}_l{layer}{sfx}"))
                .data
                .clone()
        };
        chk(
            &format!("weight_ih_l{layer}{sfx}"),
            &get("weight_ih"),
            &cell.w_ih,
        );
        chk(
            &format!("weight_hh_l{layer}{sfx}"),
            &get("weight_hh"),
            &cell.w_hh,
        );
        if let (Some(bi), Some(bh)) = (&cell.b_ih, &cell.b_hh) {
            chk(&format!("bias_ih_l{layer}{sfx}"), &get("bias_ih"), bi);
            chk(&format!("bias_hh_l{layer}{sfx}"), &get("bias_hh"), bh);
        }
    }
    // Forward alone must agree with the forward half of forward_backward.
    let fo = lstm
        .forward(&batch)
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    assert_eq!(fo, out, "{label}: forward differs from forward_backward");
}

const BASE: Case = Case {
    layers: 1,
    bidir: false,
    bias: true,
    input: 5,
    hidden: 7,
    seq: 6,
    batch: 3,
    states: false,
    lengths: false,
    batch_first: false,
};

#[test]
fn grid_small() {
    let ctx = ctx();
    let mut seed = 1;
    for layers in 1..=3 {
        for bidir in [false, true] {
            for (bias, states, lengths) in [
                (true, false, false),
                (false, true, true),
                (true, true, true),
            ] {
                let c = Case {
                    layers,
                    bidir,
                    bias,
                    states,
                    lengths,
                    ..BASE
                };
                run_case(&ctx, c, seed);
                seed += 1;
            }
        }
    }
}

#[test]
fn odd_sizes_and_t1() {
    let ctx = ctx();
    for (i, c) in [
        Case {
            hidden: 13,
            input: 3,
            seq: 1,
            batch: 1,
            ..BASE
        },
        Case {
            hidden: 13,
            input: 1,
            seq: 1,
            batch: 4,
            bidir: true,
            layers: 2,
            states: true,
            lengths: true,
            ..BASE
        },
        Case {
            hidden: 33,
            input: 17,
            seq: 9,
            batch: 5,
            bidir: true,
            layers: 2,
            lengths: true,
            batch_first: true,
            ..BASE
        },
        Case {
            hidden: 1,
            input: 2,
            seq: 4,
            batch: 2,
            layers: 3,
            ..BASE
        },
    ]
    .into_iter()
    .enumerate()
    {
        run_case(&ctx, c, 100 + i as u64);
    }
}

#[test]
fn long_sequence() {
    let ctx = ctx();
    run_case(
        &ctx,
        Case {
            layers: 2,
            bidir: true,
            input: 8,
            hidden: 16,
            seq: 53,
            batch: 3,
            states: true,
            lengths: true,
            ..BASE
        },
        7,
    );
}

#[test]
fn large_layer() {
    let ctx = ctx();
    run_case(
        &ctx,
        Case {
            layers: 1,
            input: 128,
            hidden: 256,
            seq: 4,
            batch: 2,
            states: true,
            ..BASE
        },
        9,
    );
}

#[test]
fn bit_identical_runs() {
    let ctx = ctx();
    let cfg = lstm_wgpu::LstmConfig {
        input_size: 6,
        hidden_size: 10,
        num_layers: 2,
        bidirectional: true,
        bias: true,
    };
    let x: Vec<f32> = (0..8 * 3 * 6)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let go: Vec<f32> = (0..8 * 3 * 20)
        .map(|i| ((i * 53 % 97) as f32 / 48.0) - 1.0)
        .collect();
    let gs = vec![0.25f32; 4 * 3 * 10];
    let lens = [8, 5, 2];
    let run = || {
        let model =
            LstmModel::init_uniform(&ctx, cfg.clone(), 42).unwrap_or_else(|e| panic!("{e}"));
        let mut l = Lstm::new(ctx.clone(), model).unwrap_or_else(|e| panic!("{e}"));
        let b = Batch {
            input: &x,
            seq_len: 8,
            batch: 3,
            batch_first: false,
            h0: None,
            c0: None,
            lengths: Some(&lens),
        };
        let u = Upstream {
            grad_output: &go,
            grad_h_n: &gs,
            grad_c_n: &gs,
        };
        l.forward_backward(&b, &u).unwrap_or_else(|e| panic!("{e}"))
    };
    let (o1, g1) = run();
    let (o2, g2) = run();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&o1.output), bits(&o2.output));
    assert_eq!(bits(&g1.input), bits(&g2.input));
    for (a, b) in g1.params.iter().zip(&g2.params) {
        assert_eq!(bits(&a.data), bits(&b.data), "{}", a.name);
    }
}
