//! The engine's other cells against the f64 reference (which is checked
//! against PyTorch in `reference/tests/cell_fixtures.rs`): the GRU's
//! outputs, final states and every gradient, on every recurrent strategy
//! that runs it (per step: direct, wide, subgroup, tiled; the wavefront),
//! with layers, directions, lengths, bias off and h0.
//!
//! Tolerance as the LSTM's (`gpu_reference.rs`): f32 kernels against f64,
//! max|a − b| / max|ref| per tensor.

mod common;

use common::cases::{Case, Data, Lengths, check_reference, data, gpu_pass};
use common::{ctx, set_cell, set_path};
use lstm_wgpu::kernels::lstm_cell::CellVariant;
use lstm_wgpu::schedule::CellPath;
use lstm_wgpu::{Lstm, Upstream};
use lstm_wgpu_reference::RefCellKind;

const TOL: f64 = 1e-4;

/// A case's data for a GRU: no c0, no gradient of c_n.
fn gru_data(c: &Case, seed: u64) -> Data {
    let mut rc = c.ref_config();
    rc.cell = RefCellKind::Gru;
    let lengths = c.lengths.of(c.seq, c.batch);
    let mut d = data(rc, None, (c.seq, c.batch), c.states, lengths, seed);
    d.rin.c0 = None;
    d.up.grad_c_n = Vec::new();
    d
}

/// Runs `c` as a GRU under `setup` and checks it against the reference.
fn run(label: &str, c: Case, seed: u64, setup: impl Fn(&mut Lstm)) -> f64 {
    let ctx = ctx();
    let d = gru_data(&c, seed);
    let mut l = c.lstm(&ctx, &d);
    setup(&mut l);
    let (out, grads) = gpu_pass(&mut l, &d).unwrap_or_else(|e| panic!("{label}: {e}"));
    assert!(
        out.c_n.is_empty() && grads.c0.is_empty(),
        "{label}: a GRU has no c"
    );
    check_reference(label, &d, (&out, &grads), TOL)
}

const GRU_CASES: [(&str, Case); 5] = [
    ("uni 1 layer", Case::BASE),
    ("bi 2 layers, lengths, h0", Case::BI2),
    (
        "3 layers, no bias, lengths to 1",
        Case {
            layers: 3,
            bias: false,
            lengths: Lengths::SpreadToOne,
            batch: 4,
            ..Case::BASE
        },
    ),
    (
        "wide (H = 8), bi, h0",
        Case {
            hidden: 8,
            bidir: true,
            states: true,
            lengths: Lengths::Spread,
            ..Case::BASE
        },
    ),
    (
        "subgroup shape (B = 24, H = 32), 2 layers",
        Case {
            hidden: 32,
            batch: 24,
            seq: 4,
            layers: 2,
            states: true,
            lengths: Lengths::Spread,
            ..Case::BASE
        },
    ),
];

#[test]
fn gru_matches_the_reference_per_step() {
    for (v, variant) in [CellVariant::Direct, CellVariant::Tiled]
        .into_iter()
        .enumerate()
    {
        for (i, (name, c)) in GRU_CASES.into_iter().enumerate() {
            let seed = 700 + 10 * v as u64 + i as u64;
            run(&format!("{variant:?}, {name}"), c, seed, |l| {
                set_path(l, Some(CellPath::PerStep));
                set_cell(l, variant);
            });
        }
    }
}

#[test]
fn gru_matches_the_reference_in_the_wavefront() {
    for (i, (name, c)) in GRU_CASES.into_iter().enumerate() {
        if c.layers < 2 || c.bidir {
            continue;
        }
        run(&format!("wavefront, {name}"), c, 720 + i as u64, |l| {
            set_path(l, Some(CellPath::Wavefront));
        });
    }
}

#[test]
fn gru_batch_first_and_eval_agree_with_time_major() {
    let ctx = ctx();
    let c = GRU_CASES[1].1;
    let d = gru_data(&c, 731);
    let mut l = c.lstm(&ctx, &d);
    let (out, grads) = gpu_pass(&mut l, &d).unwrap_or_else(|e| panic!("{e}"));
    let hp = common::cases::HostPass::new(&d, true);
    let (bo, bg) = l
        .forward_backward(&hp.batch(), &hp.upstream())
        .unwrap_or_else(|e| panic!("{e}"));
    let w = 2 * c.hidden;
    assert_eq!(
        hp.time_major(bo.output, w),
        out.output,
        "batch-first output"
    );
    assert_eq!(bo.h_n, out.h_n);
    assert_eq!(hp.time_major(bg.input, c.input), grads.input);
    assert_eq!(bg.params, grads.params);
}

#[test]
fn gru_refuses_what_it_has_not() {
    let ctx = ctx();
    let c = Case::BASE;
    let d = gru_data(&c, 740);
    let mut l = c.lstm(&ctx, &d);
    let hp = common::cases::HostPass::new(&d, false);
    let c0 = vec![0f32; c.batch * c.hidden];
    let mut b = hp.batch();
    b.c0 = Some(&c0);
    let e = l.forward(&b).unwrap_err().to_string();
    assert!(e.contains("c0") && e.contains("nn.GRU"), "{e}");
    let up = hp.upstream();
    let bad = Upstream {
        grad_c_n: &c0,
        ..up
    };
    let e = l
        .forward_backward(&hp.batch(), &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("grad_c_n"), "{e}");
    set_path(&mut l, Some(CellPath::Persistent));
    let e = l.forward(&hp.batch()).unwrap_err().to_string();
    assert!(e.contains("persistent") && e.contains("nn.GRU"), "{e}");
}
