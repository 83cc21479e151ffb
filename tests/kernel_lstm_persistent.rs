//! The persistent time loop (`shaders/lstm_persistent.wgsl`) against the f64
//! reference and against the per-step cell: outputs, h_n/c_n and every
//! gradient over hidden sizes with W_hh in workgroup memory (32, 33) and in
//! global memory (64, 256, 512), batches 1..32, T = 1, 7, 40, 1–3 layers,
//! bidirectional, unequal lengths with a length-1 sequence, with and without
//! bias and initial states; chunked time loops (forced, and lavapipe's own
//! for its loop-iteration cap); bit-identical reruns; adapter limits.
//!
//! Tolerance: max |gpu - ref| / max |ref| <= 1e-4 per tensor, as for the
//! per-step path (f32 kernels against f64 math). Persistent and per-step
//! sum the recurrent products in different orders, so they agree to f32
//! rounding (checked at 1e-5), not bit for bit; a chunked run and an
//! unchunked one run the same arithmetic and must agree bit for bit.

mod common;

use common::cases::{self, Case, Data, Lengths, check_paths_agree, check_reference, gpu_pass};
use common::*;
use lstm_wgpu::kernels::lstm_persistent::loop_iteration_cap;
use lstm_wgpu::model::norm::Norm;
use lstm_wgpu::schedule::{CellPath, prefers_persistent};
use lstm_wgpu::{Batch, Grads, Lstm, LstmConfig, LstmModel, Outputs, Upstream};
use std::sync::Arc;

const TOL: f64 = 1e-4;

/// Runs forward and backward on the GPU with the path forced, returning the
/// results and the dispatches per (forward, backward) pass.
fn run_gpu(
    ctx: &Arc<lstm_wgpu::GpuContext>,
    (c, d): (&Case, &Data),
    path: CellPath,
    max_chunk: Option<usize>,
) -> (Outputs, Grads, (usize, usize)) {
    let mut lstm = c.lstm(ctx, d);
    set_path(&mut lstm, Some(path));
    lstm.kernels().persistent.set_max_chunk(max_chunk);
    let (t, n) = (d.rin.seq_len, d.rin.batch);
    let (out, grads) = gpu_pass(&mut lstm, d).unwrap_or_else(|e| panic!("{path}: {e}"));
    let plan = lstm.plan(t, n).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.path, path, "the plan ran another path");
    let counts = (plan.forward.len(), plan.backward.len());
    (out, grads, counts)
}

fn bits(r: &(Outputs, Grads, (usize, usize))) -> Vec<(String, Vec<u32>)> {
    cases::bits(&r.0, &r.1)
}

const BASE: Case = Case {
    hidden: 32,
    seq: 7,
    ..Case::BASE
};

/// The grid against the reference, and each case against the per-step path.
#[test]
fn persistent_matches_reference_and_per_step() {
    let ctx = ctx();
    let cases = [
        // W_hh in workgroup memory (on lavapipe's 32 KiB).
        Case {
            layers: 2,
            bidir: true,
            states: true,
            lengths: Lengths::SpreadToOne,
            ..BASE
        },
        Case {
            layers: 3,
            bidir: true,
            bias: false,
            hidden: 33,
            seq: 40,
            states: true,
            lengths: Lengths::SpreadToOne,
            ..BASE
        },
        // W_hh in global memory.
        Case {
            layers: 2,
            hidden: 64,
            input: 10,
            seq: 40,
            batch: 32,
            lengths: Lengths::SpreadToOne,
            ..BASE
        },
        Case {
            layers: 2,
            bidir: true,
            hidden: 64,
            seq: 1,
            batch: 1,
            states: true,
            ..BASE
        },
        Case {
            bidir: true,
            hidden: 256,
            input: 16,
            states: true,
            lengths: Lengths::SpreadToOne,
            ..BASE
        },
        Case {
            layers: 2,
            hidden: 256,
            input: 8,
            batch: 32,
            bias: false,
            seq: 7,
            ..BASE
        },
    ];
    for (i, c) in cases.into_iter().enumerate() {
        let label = format!("{c:?}");
        let d = c.data(500 + i as u64);
        let (out, grads, counts) = run_gpu(&ctx, (&c, &d), CellPath::Persistent, None);
        let e_ref = check_reference(&label, &d, (&out, &grads), TOL);
        let (pout, pgrads, pcounts) = run_gpu(&ctx, (&c, &d), CellPath::PerStep, None);
        let e_paths = check_paths_agree(&label, &(out, grads), &(pout, pgrads), 1e-5);
        eprintln!(
            "H={} B={} T={} L={} bidir={}: vs reference {e_ref:.2e}, vs per-step {e_paths:.2e}; \
             dispatches persistent {counts:?}, per-step {pcounts:?}",
            c.hidden, c.batch, c.seq, c.layers, c.bidir
        );
    }
}

/// A time loop split into chunks of 3 steps (and of 1) computes exactly
/// what one dispatch computes, and still matches the reference.
#[test]
fn chunked_time_loop_is_bit_identical() {
    let ctx = ctx();
    let c = Case {
        layers: 2,
        bidir: true,
        hidden: 33,
        seq: 40,
        batch: 3,
        states: true,
        lengths: Lengths::SpreadToOne,
        ..BASE
    };
    let d = c.data(77);
    let whole = run_gpu(&ctx, (&c, &d), CellPath::Persistent, None);
    let cells = c.layers * 2;
    let bwd_rest = cells * 4;
    for chunk in [3, 1] {
        let part = run_gpu(&ctx, (&c, &d), CellPath::Persistent, Some(chunk));
        let per_layer = c.seq.div_ceil(chunk);
        assert_eq!(
            part.2,
            (
                cells + c.layers * per_layer,
                c.layers * per_layer + bwd_rest
            ),
            "chunk {chunk}: dispatch counts"
        );
        assert!(bits(&whole) == bits(&part), "chunk {chunk}: results differ");
    }
    let e = check_reference("chunked", &d, (&whole.0, &whole.1), TOL);
    eprintln!("chunked H=33 T=40: bit-identical to one dispatch; vs reference {e:.2e}");
}

/// A shape whose steps exceed lavapipe's loop-iteration cap in one
/// dispatch: the layout splits it (there), and the results stay right.
#[test]
fn long_sequence_respects_the_loop_cap() {
    let ctx = ctx();
    let c = cases::LOOP_CAP_CASE;
    let d = c.data(91);
    let (out, grads, counts) = run_gpu(&ctx, (&c, &d), CellPath::Persistent, None);
    if loop_iteration_cap(&ctx.info).is_some() {
        // One step costs ~270 (forward) and ~520 (backward) iterations here.
        assert!(counts.0 > 2 && counts.1 > 5, "not chunked: {counts:?}");
    }
    let e = check_reference("H=512 T=260", &d, (&out, &grads), TOL);
    eprintln!("H=512 T=260 B=2: dispatches {counts:?}, vs reference {e:.2e}");
}

#[test]
fn bit_identical_reruns() {
    let ctx = ctx();
    let c = Case {
        layers: 2,
        bidir: true,
        hidden: 64,
        seq: 9,
        batch: 4,
        states: true,
        lengths: Lengths::SpreadToOne,
        ..BASE
    };
    let d = c.data(5);
    let a = run_gpu(&ctx, (&c, &d), CellPath::Persistent, None);
    let b = run_gpu(&ctx, (&c, &d), CellPath::Persistent, None);
    assert!(bits(&a) == bits(&b), "reruns differ");
}

fn norm_model(ctx: &Arc<lstm_wgpu::GpuContext>, norm: Norm, h: usize) -> Lstm {
    let cfg = LstmConfig {
        input_size: 6,
        hidden_size: h,
        num_layers: 2,
        bidirectional: true,
        bias: true,
        cell: Default::default(),
        proj_size: 0,
    };
    let model = LstmModel::init_with_norm(ctx, cfg, norm, 3).unwrap_or_else(|e| panic!("{e}"));
    Lstm::new(ctx.clone(), model).unwrap_or_else(|e| panic!("{e}"))
}

/// Between-layer norms run the persistent cell; normalized cells keep the
/// per-step path even when persistent is forced.
#[test]
fn norm_variants_and_paths() {
    let ctx = ctx();
    let (t, n, h) = (6, 3, 32);
    let x: Vec<f32> = (0..t * n * 6)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let go: Vec<f32> = (0..t * n * 2 * h)
        .map(|i| ((i * 53 % 97) as f32 / 48.0) - 1.0)
        .collect();
    let gs = vec![0.25f32; 4 * n * h];
    let lens = [6, 4, 1];
    let b = Batch {
        input: &x,
        seq_len: t,
        batch: n,
        batch_first: false,
        h0: None,
        c0: None,
        lengths: Some(&lens),
    };
    let up = Upstream {
        grad_output: &go,
        grad_h_n: &gs,
        grad_c_n: &gs,
    };
    let run = |path: CellPath| {
        let mut m = norm_model(&ctx, Norm::Layer { last: true }, h);
        set_path(&mut m, Some(path));
        let r = m
            .forward_backward(&b, &up)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.plan(t, n).map(|p| p.path).ok(), Some(path));
        r
    };
    let e = check_paths_agree(
        "layer norm between layers",
        &run(CellPath::Persistent),
        &run(CellPath::PerStep),
        1e-5,
    );
    eprintln!("LayerNorm between layers: persistent vs per-step {e:.2e}");
    // A normalized cell has no persistent loop: forcing one is an error
    // naming it, not a silent per-step run.
    let mut cell = norm_model(&ctx, Norm::LayerCell, h);
    set_path(&mut cell, Some(CellPath::Persistent));
    let e = cell.plan(t, n).err().map(|e| e.to_string());
    assert!(
        e.as_deref().is_some_and(|m| m.contains("persistent path")),
        "{e:?}"
    );
    set_path(&mut cell, None);
    let plan = cell.plan(t, n).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(plan.path, CellPath::Persistent);
}

/// A hidden size whose workgroup needs exceed the adapter: a forced
/// persistent path is a clear error, the automatic choice runs per-step.
#[test]
fn adapter_limits_and_automatic_choice() {
    let ctx = ctx();
    let shared = ctx.limits.max_compute_workgroup_storage_size as usize;
    // The backward needs (4H + 2H + 1) floats of workgroup memory.
    let h = shared / 24 + 8;
    let cfg = LstmConfig {
        input_size: 1,
        hidden_size: h,
        num_layers: 1,
        bidirectional: false,
        bias: false,
        cell: Default::default(),
        proj_size: 0,
    };
    let model = LstmModel::init_uniform(&ctx, cfg, 0).unwrap_or_else(|e| panic!("{e}"));
    let mut lstm = Lstm::new(ctx.clone(), model).unwrap_or_else(|e| panic!("{e}"));
    set_path(&mut lstm, Some(CellPath::Persistent));
    let x = [0.5f32];
    let b = Batch {
        input: &x,
        seq_len: 1,
        batch: 1,
        batch_first: false,
        h0: None,
        c0: None,
        lengths: None,
    };
    let e = lstm.forward(&b).expect_err("must fail");
    assert!(
        e.to_string().contains("persistent cell path cannot run")
            && e.to_string().contains("workgroup memory"),
        "{e}"
    );
    set_path(&mut lstm, None);
    lstm.forward(&b).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        lstm.plan(1, 1).map(|p| p.path).ok(),
        Some(CellPath::PerStep)
    );
    // The automatic choice: small layers persistent on every adapter, a
    // 512-wide one per-step on every adapter.
    assert!(prefers_persistent(&ctx, 16));
    assert!(!prefers_persistent(&ctx, 512));
    // On GPUs (no loop cap) the boundary measured on an H200: H <= 32.
    if loop_iteration_cap(&ctx.info).is_none() {
        assert!(prefers_persistent(&ctx, 32));
        assert!(!prefers_persistent(&ctx, 33));
    }
    assert_eq!(CellPath::parse("per-step").ok(), Some(CellPath::PerStep));
    assert_eq!(CellPath::Persistent.as_str(), "persistent");
    assert!(CellPath::parse("fast").is_err());
}
