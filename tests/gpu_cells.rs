//! The engine's other cells against the f64 reference (which is checked
//! against PyTorch in `reference/tests/cell_fixtures.rs`, and by finite
//! differences in `reference/tests/cells.rs`): the GRU's outputs, final
//! states and every gradient, on every recurrent strategy that runs it
//! (per step: direct, wide, subgroup, tiled; the wavefront; the persistent
//! loop), with layers, directions, lengths, bias off and h0; IndRNN (relu
//! and tanh) on the direct kernels, per step, as a wavefront and on the
//! persistent loop; the GRU's persistent loop split by lavapipe's
//! loop-iteration cap.
//!
//! Tolerance as the LSTM's (`gpu_reference.rs`): f32 kernels against f64,
//! max|a − b| / max|ref| per tensor. The persistent loop against the
//! per-step path as the LSTM's (`kernel_lstm_persistent.rs`): 1e-5 (they
//! sum the recurrent products in different orders), and a chunked loop bit
//! for bit against one dispatch.

mod common;

use common::cases::{
    self, CELL_CASES, Case, Data, Lengths, check_paths_agree, check_reference, data, gpu_pass,
};
use common::{ctx, set_cell, set_path};
use lstm_wgpu::kernels::lstm_cell::CellVariant;
use lstm_wgpu::schedule::CellPath;
use lstm_wgpu::{Grads, Lstm, Outputs, Upstream};
use lstm_wgpu_reference::RefCellKind;

const TOL: f64 = 1e-4;

/// A case's data for a GRU: no c0, no gradient of c_n.
fn gru_data(c: &Case, seed: u64) -> Data {
    cell_data(c, RefCellKind::Gru, seed)
}

/// A case's data for a cell without c.
fn cell_data(c: &Case, kind: RefCellKind, seed: u64) -> Data {
    let mut rc = c.ref_config();
    rc.cell = kind;
    let lengths = c.lengths.of(c.seq, c.batch);
    let mut d = data(rc, None, (c.seq, c.batch), c.states, lengths, seed);
    d.rin.c0 = None;
    d.up.grad_c_n = Vec::new();
    d
}

/// Runs `c` as a GRU under `setup` and checks it against the reference.
fn run(label: &str, c: Case, seed: u64, setup: impl Fn(&mut Lstm)) -> f64 {
    run_cell(label, c, RefCellKind::Gru, seed, setup)
}

fn run_cell(label: &str, c: Case, kind: RefCellKind, seed: u64, setup: impl Fn(&mut Lstm)) -> f64 {
    let ctx = ctx();
    let d = cell_data(&c, kind, seed);
    let mut l = c.lstm(&ctx, &d);
    setup(&mut l);
    let (out, grads) = gpu_pass(&mut l, &d).unwrap_or_else(|e| panic!("{label}: {e}"));
    assert!(
        out.c_n.is_empty() && grads.c0.is_empty(),
        "{label}: a GRU has no c"
    );
    check_reference(label, &d, (&out, &grads), TOL)
}

#[test]
fn gru_matches_the_reference_per_step() {
    for (v, variant) in [CellVariant::Direct, CellVariant::Tiled]
        .into_iter()
        .enumerate()
    {
        for (i, (name, c)) in CELL_CASES.into_iter().enumerate() {
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
    for (i, (name, c)) in CELL_CASES.into_iter().enumerate() {
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
    let c = CELL_CASES[1].1;
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
    // No f16-mixed on the persistent loop, for the GRU as for the LSTM.
    set_path(&mut l, Some(CellPath::Persistent));
    if ctx.f16 {
        use lstm_wgpu::model::precision::Precision;
        l.set_precision(Precision::F16Mixed)
            .unwrap_or_else(|e| panic!("{e}"));
        let e = l.forward(&hp.batch()).unwrap_err().to_string();
        assert!(e.contains("persistent") && e.contains("f32"), "{e}");
    }
}

/// Runs `c` as `kind` on `path` (the persistent loop in chunks of at most
/// `chunk` steps), checked against the reference: the results and the
/// dispatches per (forward, backward) pass.
fn run_path(
    label: &str,
    (c, kind, seed): (Case, RefCellKind, u64),
    path: CellPath,
    chunk: Option<usize>,
) -> ((Outputs, Grads), (usize, usize)) {
    let ctx = ctx();
    let d = cell_data(&c, kind, seed);
    let mut l = c.lstm(&ctx, &d);
    set_path(&mut l, Some(path));
    l.kernels().persistent.set_max_chunk(chunk);
    let r = gpu_pass(&mut l, &d).unwrap_or_else(|e| panic!("{label}: {e}"));
    check_reference(&format!("{label} {path}"), &d, (&r.0, &r.1), TOL);
    let plan = l
        .plan(c.seq, c.batch)
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    assert_eq!(plan.path, path, "{label}: the plan ran another path");
    (r, (plan.forward.len(), plan.backward.len()))
}

const PERSISTENT_KINDS: [(&str, RefCellKind); 3] = [
    ("GRU", RefCellKind::Gru),
    (
        "IndRNN relu",
        RefCellKind::IndRnn {
            act: lstm_wgpu_reference::RefActivation::Relu,
        },
    ),
    (
        "IndRNN tanh",
        RefCellKind::IndRnn {
            act: lstm_wgpu_reference::RefActivation::Tanh,
        },
    ),
];

/// The GRU and IndRNN (relu, tanh) on the persistent loop: against the
/// reference, and against the per-step path tensor by tensor, on every
/// cell case (uni/bidirectional, 1–3 layers, lengths down to 1, bias off,
/// h0).
#[test]
fn cells_on_the_persistent_loop_match_per_step() {
    for (k, (name, kind)) in PERSISTENT_KINDS.into_iter().enumerate() {
        for (i, (case, c)) in CELL_CASES.into_iter().enumerate() {
            let label = format!("{name}, {case}");
            let seed = 800 + 10 * k as u64 + i as u64;
            let (p, pc) = run_path(&label, (c, kind, seed), CellPath::Persistent, None);
            let (s, sc) = run_path(&label, (c, kind, seed), CellPath::PerStep, None);
            let e = check_paths_agree(&label, &p, &s, 1e-5);
            eprintln!(
                "{label}: persistent vs per-step {e:.2e}; dispatches persistent {pc:?}, \
                 per-step {sc:?}"
            );
        }
    }
}

/// A persistent loop split into chunks of 3 steps and of 1 (as the host
/// splits it where lavapipe caps loop iterations) computes bit for bit
/// what one dispatch computes, for each cell.
#[test]
fn chunked_persistent_cells_are_bit_identical() {
    let c = Case {
        layers: 2,
        bidir: true,
        hidden: 9,
        seq: 11,
        batch: 3,
        states: true,
        lengths: Lengths::SpreadToOne,
        ..Case::BASE
    };
    for (k, (name, kind)) in PERSISTENT_KINDS.into_iter().enumerate() {
        let run = |chunk| run_path(name, (c, kind, 850 + k as u64), CellPath::Persistent, chunk);
        let (whole, counts) = run(None);
        // Both directions of a layer share each dispatch.
        assert_eq!(
            counts.0 - 2 * c.layers,
            c.layers,
            "{name}: one forward loop"
        );
        for chunk in [3, 1] {
            let (part, pc) = run(Some(chunk));
            let per_layer = c.seq.div_ceil(chunk);
            assert_eq!(
                (pc.0 - counts.0, pc.1 - counts.1),
                (c.layers * (per_layer - 1), c.layers * (per_layer - 1)),
                "{name}, chunk {chunk}: dispatch counts"
            );
            assert!(
                cases::bits(&whole.0, &whole.1) == cases::bits(&part.0, &part.1),
                "{name}, chunk {chunk}: results differ"
            );
        }
    }
}

/// IndRNN, relu and tanh, against the reference: per step (the direct
/// kernels, whatever variant is asked for) and as a wavefront; W_hh is the
/// vector u.
#[test]
fn indrnn_matches_the_reference() {
    use lstm_wgpu_reference::RefActivation;
    for act in [RefActivation::Relu, RefActivation::Tanh] {
        let kind = RefCellKind::IndRnn { act };
        for (i, (name, c)) in CELL_CASES.into_iter().enumerate() {
            let seed = 760 + i as u64;
            for variant in [CellVariant::Direct, CellVariant::Tiled] {
                run_cell(
                    &format!("IndRNN {act:?} {variant:?}, {name}"),
                    c,
                    kind,
                    seed,
                    |l| {
                        set_path(l, Some(CellPath::PerStep));
                        set_cell(l, variant);
                    },
                );
            }
            if c.layers >= 2 && !c.bidir {
                run_cell(
                    &format!("IndRNN {act:?} wavefront, {name}"),
                    c,
                    kind,
                    seed,
                    |l| {
                        set_path(l, Some(CellPath::Wavefront));
                    },
                );
            }
        }
    }
}

/// `grad --cell indrnn --activation tanh` on the reference's data: the
/// file's outputs and gradients are the reference's (IndRNN has no PyTorch
/// module to make fixtures with).
#[test]
fn indrnn_grad_command_matches_the_reference() {
    use common::cases::f32s;
    use lstm_wgpu::NamedTensor;
    use lstm_wgpu_reference::RefActivation;
    // Lengths are the library tests'; here the file's path.
    let c = Case {
        layers: 2,
        states: true,
        batch: 4,
        ..Case::BASE
    };
    let kind = RefCellKind::IndRnn {
        act: RefActivation::Tanh,
    };
    let d = cell_data(&c, kind, 790);
    let dir = common::tempdir::TempDir::new("indrnn-grad");
    let (w, i, o) = (dir.join("w.st"), dir.join("i.st"), dir.join("o.st"));
    let tensors = common::ref_to_tensors(&d.rc, &d.w);
    lstm_wgpu::io::write(&w, &tensors, None).unwrap_or_else(|e| panic!("{e}"));
    let (t, b, h) = (c.seq, c.batch, c.hidden);
    let sl = vec![c.layers, b, h];
    let inputs = vec![
        NamedTensor::new("input", vec![t, b, c.input], f32s(&d.rin.x)),
        NamedTensor::new("grad_output", vec![t, b, h], f32s(&d.up.grad_output)),
        NamedTensor::new("grad_h_n", sl.clone(), f32s(&d.up.grad_h_n)),
        NamedTensor::new("h0", sl, f32s(d.rin.h0.as_deref().unwrap_or_default())),
    ];
    lstm_wgpu::io::write(&i, &inputs, None).unwrap_or_else(|e| panic!("{e}"));
    let r = std::process::Command::new(env!("CARGO_BIN_EXE_lstm-wgpu"))
        .args([
            "grad",
            "--cell",
            "indrnn",
            "--activation",
            "tanh",
            "--weights",
        ])
        .arg(&w)
        .arg("--inputs")
        .arg(&i)
        .arg("--out")
        .arg(&o)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let got = lstm_wgpu::io::TensorFile::read(&o).unwrap_or_else(|e| panic!("{e}"));
    let (rout, rgrads) = lstm_wgpu_reference::backward(&d.rc, &d.w, &d.rin, &d.up);
    let get = |n: &str| got.require_f32(n).unwrap_or_else(|e| panic!("{e}")).data;
    common::assert_close("output", &get("output"), &rout.output, TOL);
    common::assert_close("h_n", &get("h_n"), &rout.h_n, TOL);
    common::assert_close("grad.input", &get("grad.input"), &rgrads.input, TOL);
    common::assert_close("grad.h0", &get("grad.h0"), &rgrads.h0, TOL);
    let want = common::cases::param_grads(&d.rc, &rgrads, &Default::default());
    for (name, v) in want {
        common::assert_close(&name, &get(&format!("grad.{name}")), &v, TOL);
    }
    assert!(!got.tensors.contains_key("c_n"));
}

/// The GRU in f16-mixed (f16 W_hh, b_hh, gates and h_prev; f32 sums,
/// state and gradients) against the f64 reference, within the LSTM's
/// f16-mixed tolerance (`gpu_reference.rs`), per step and as a wavefront,
/// where the adapter has SHADER_F16.
#[test]
fn gru_f16_mixed_matches_the_reference() {
    use lstm_wgpu::model::precision::Precision;
    if !ctx().f16 {
        eprintln!("skipped: the adapter lacks SHADER_F16");
        return;
    }
    for (i, (name, c)) in CELL_CASES.into_iter().enumerate() {
        for path in [CellPath::PerStep, CellPath::Wavefront] {
            if path == CellPath::Wavefront && (c.layers < 2 || c.bidir) {
                continue;
            }
            let label = format!("f16-mixed {path:?}, {name}");
            let ctx = ctx();
            let d = gru_data(&c, 780 + i as u64);
            let mut l = c.lstm(&ctx, &d);
            set_path(&mut l, Some(path));
            l.set_precision(Precision::F16Mixed)
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            let (out, grads) = gpu_pass(&mut l, &d).unwrap_or_else(|e| panic!("{label}: {e}"));
            check_reference(&label, &d, (&out, &grads), 1e-2);
        }
    }
}

/// A GRU whose steps exceed lavapipe's loop-iteration cap in one dispatch:
/// the host splits its loop there (as the LSTM's in
/// `kernel_lstm_persistent.rs`), and the split run agrees with the
/// reference and with per step.
#[test]
fn gru_long_sequence_respects_the_loop_cap() {
    let c = cases::LOOP_CAP_CASE;
    let run = |path| run_path("GRU H=512 T=260", (c, RefCellKind::Gru, 870), path, None);
    let (p, counts) = run(CellPath::Persistent);
    if lstm_wgpu::kernels::lstm_persistent::loop_iteration_cap(&ctx().info).is_some() {
        // One step costs ~270 (forward) and ~400 (backward) iterations here.
        assert!(counts.0 > 2 && counts.1 > 5, "not chunked: {counts:?}");
    }
    let e = check_paths_agree("GRU H=512 T=260", &p, &run(CellPath::PerStep).0, 1e-5);
    eprintln!("GRU H=512 T=260 B=2: dispatches {counts:?}, vs per-step {e:.2e}");
}
