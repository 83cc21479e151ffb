//! The LSTM with projections (`nn.LSTM(proj_size = P)`): parity with the
//! PyTorch fixtures `cells/proj_uni1` and `cells/proj_bi2_len` (made by
//! `make_cell_fixtures.py`) through `lstm-wgpu grad` and through the
//! library, every output and gradient within the LSTM's tolerance
//! (1e-4 max-abs / max|ref| per tensor); the GPU against the f64
//! reference (`RefCellKind::LstmProj`) over the cells' cases and every
//! GEMM variant; and what projections refuse, by name (exit 2 in the CLI).

mod common;

use common::cases::{CELL_CASES, Case, Data, check_reference, gpu_pass};
use common::parity::*;
use lstm_wgpu::io::TensorFile;
use lstm_wgpu::lstm::{Batch, Upstream};
use lstm_wgpu::{Lstm, LstmModel};
use lstm_wgpu_reference::RefCellKind;

const REL_TOL: f32 = 1e-4;
const FIXTURES: &[&str] = &["proj_uni1", "proj_bi2_len"];

fn fixture(name: &str, kind: &str) -> std::path::PathBuf {
    fixture_in(&fixtures_dir("cells"), name, kind)
}

#[test]
fn proj_parity_with_pytorch_through_grad() {
    for name in FIXTURES {
        check_parity_with(&fixtures_dir("cells"), name, REL_TOL, &[]);
    }
}

/// The same fixtures through [`Lstm::forward_backward`]: the model from the
/// state_dict (`weight_hr_l{k}` makes it projected), h0 / c0 / lengths from
/// the inputs.
#[test]
fn proj_parity_with_pytorch_through_the_library() {
    let ctx = common::ctx();
    for name in FIXTURES {
        let w = TensorFile::read(fixture(name, "weights")).unwrap_or_else(|e| panic!("{e}"));
        let model = LstmModel::from_tensors(&ctx, &w.all_f32().unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let cfg = model.config.clone();
        assert!(cfg.proj().is_some(), "{name}: no projection read");
        let i = TensorFile::read(fixture(name, "inputs")).unwrap_or_else(|e| panic!("{e}"));
        let f = |n: &str| i.f32(n).unwrap_or_else(|e| panic!("{e}"));
        let x = f("input").expect("input");
        let (t, b) = (x.shape[0], x.shape[1]);
        let lengths = i
            .ints("lengths")
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|(_, v)| v.iter().map(|&l| l as usize).collect::<Vec<_>>());
        let (h0, c0) = (f("h0"), f("c0"));
        let batch = Batch {
            input: &x.data,
            seq_len: t,
            batch: b,
            batch_first: false,
            h0: h0.as_ref().map(|v| v.data.as_slice()),
            c0: c0.as_ref().map(|v| v.data.as_slice()),
            lengths: lengths.as_deref(),
        };
        let (go, gh, gc) = (
            f("grad_output").expect("grad_output"),
            f("grad_h_n").expect("grad_h_n"),
            f("grad_c_n").expect("grad_c_n"),
        );
        let up = Upstream {
            grad_output: &go.data,
            grad_h_n: &gh.data,
            grad_c_n: &gc.data,
        };
        let mut lstm = Lstm::new(ctx.clone(), model).unwrap_or_else(|e| panic!("{e}"));
        let (out, grads) = lstm
            .forward_backward(&batch, &up)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let exp = TensorFile::read(fixture(name, "expected")).unwrap_or_else(|e| panic!("{e}"));
        let mut got: Vec<(String, Vec<f32>)> = vec![
            ("output".into(), out.output),
            ("h_n".into(), out.h_n),
            ("c_n".into(), out.c_n),
            ("grad.input".into(), grads.input),
        ];
        if h0.is_some() {
            got.push(("grad.h0".into(), grads.h0));
        }
        if c0.is_some() {
            got.push(("grad.c0".into(), grads.c0));
        }
        got.extend(grads.params.into_iter().map(|p| (p.name, p.data)));
        let names = exp.shapes();
        assert_eq!(names.len(), got.len(), "{name}: tensors {:?}", names.keys());
        for (n, v) in got {
            let e = exp
                .require_f32(&n)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let want: Vec<f64> = e.data.iter().map(|&x| x as f64).collect();
            common::assert_close(&format!("{name}: {n}"), &v, &want, REL_TOL as f64);
        }
    }
}

/// A case's data for the projected LSTM of size `p`.
fn proj_data(c: &Case, p: usize, seed: u64) -> Data {
    let mut rc = c.ref_config();
    rc.cell = RefCellKind::LstmProj { proj_size: p };
    c.data_of(rc, seed)
}

/// The GPU against the f64 reference on the cells' cases (one layer,
/// bidirectional with lengths and states, no bias down to length 1, H = 8
/// with P = 4 for the aligned loads, B = 24 with H = 32), each with every
/// GEMM variant the adapter runs.
#[test]
fn proj_matches_the_reference() {
    use lstm_wgpu::kernels::gemm::GemmVariant;
    let ctx = common::ctx();
    let mut variants = vec![None, Some(GemmVariant::Block), Some(GemmVariant::Tiled)];
    if ctx.subgroup == Some(lstm_wgpu::kernels::gemm::SG_WIDTH) {
        variants.push(Some(GemmVariant::Subgroup));
    }
    for (i, (name, c)) in CELL_CASES.into_iter().enumerate() {
        let p = match c.hidden {
            8 => 4,
            32 => 12,
            h => h / 2,
        };
        let d = proj_data(&c, p, 800 + i as u64);
        for v in &variants {
            let label = format!("proj {p}, GEMM {v:?}, {name}");
            let mut l = c.lstm(&ctx, &d);
            let t = lstm_wgpu::Tuning {
                gemm: *v,
                ..*l.tuning()
            };
            l.set_tuning(t).unwrap_or_else(|e| panic!("{label}: {e}"));
            let (out, grads) = gpu_pass(&mut l, &d).unwrap_or_else(|e| panic!("{label}: {e}"));
            assert_eq!(
                out.h_n.len(),
                c.layers * (1 + usize::from(c.bidir)) * c.batch * p,
                "{label}"
            );
            check_reference(&label, &d, (&out, &grads), 1e-4);
        }
    }
}

/// Batch-first data and a second pass on the same plan give the same
/// numbers as time-major; eval mode the same as train mode (no dropout).
#[test]
fn proj_batch_first_and_repeated_passes_agree() {
    let ctx = common::ctx();
    let c = CELL_CASES[1].1;
    let d = proj_data(&c, 3, 811);
    let mut l = c.lstm(&ctx, &d);
    let (out, grads) = gpu_pass(&mut l, &d).unwrap_or_else(|e| panic!("{e}"));
    let again = gpu_pass(&mut l, &d).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.0, out);
    assert_eq!(again.1, grads);
    let hp = common::cases::HostPass::new(&d, true);
    let (bo, bg) = l
        .forward_backward(&hp.batch(), &hp.upstream())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hp.time_major(bo.output, 2 * 3), out.output);
    assert_eq!((&bo.h_n, &bo.c_n), (&out.h_n, &out.c_n));
    assert_eq!(hp.time_major(bg.input, c.input), grads.input);
    assert_eq!(bg.params, grads.params);
    l.train = false;
    let hp = common::cases::HostPass::new(&d, false);
    let eval = l.forward(&hp.batch()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(eval, out);
}

/// What projections cannot take is refused by name: f16-mixed, the
/// persistent and wavefront paths, the tiled cell, zoneout, weight-drop,
/// and h0 of the unprojected width.
#[test]
fn proj_refuses_what_it_cannot_take() {
    use lstm_wgpu::kernels::lstm_cell::CellVariant;
    use lstm_wgpu::model::Links;
    use lstm_wgpu::schedule::CellPath;
    let ctx = common::ctx();
    let c = Case {
        layers: 2,
        ..Case::BASE
    };
    let d = proj_data(&c, 3, 820);
    let hp = common::cases::HostPass::new(&d, false);
    let refused = |setup: &dyn Fn(&mut Lstm) -> lstm_wgpu::Result<()>, what: &str| {
        let mut l = c.lstm(&ctx, &d);
        let e = match setup(&mut l) {
            Err(e) => e,
            Ok(()) => l.forward(&hp.batch()).expect_err(what),
        };
        let msg = e.to_string();
        assert!(matches!(e, lstm_wgpu::Error::Invalid(_)), "{what}: {msg}");
        assert!(msg.contains(what) && msg.contains("proj"), "{what}: {msg}");
    };
    for (path, what) in [
        (CellPath::Persistent, "persistent"),
        (CellPath::Wavefront, "wavefront"),
    ] {
        refused(
            &|l| {
                common::set_path(l, Some(path));
                Ok(())
            },
            what,
        );
    }
    refused(
        &|l| {
            common::set_cell(l, CellVariant::Tiled);
            Ok(())
        },
        "tiled cell",
    );
    refused(
        &|l| {
            l.set_links(Links {
                zoneout_h: 0.1,
                ..Links::default()
            })
        },
        "zoneout",
    );
    refused(
        &|l| {
            l.set_links(Links {
                weight_drop: 0.1,
                ..Links::default()
            })
        },
        "weight-drop",
    );
    if ctx.f16 {
        refused(
            &|l| l.set_precision(lstm_wgpu::model::precision::Precision::F16Mixed),
            "f32",
        );
    }
    // h0 must be P wide.
    let mut l = c.lstm(&ctx, &d);
    let h0 = vec![0f32; c.layers * c.batch * c.hidden];
    let b = Batch {
        h0: Some(&h0),
        ..hp.batch()
    };
    let e = l.forward(&b).unwrap_err().to_string();
    assert!(e.contains("h0"), "{e}");
    // The direct cell variant is what runs: forcing it is fine.
    let mut l = c.lstm(&ctx, &d);
    common::set_cell(&mut l, CellVariant::Direct);
    l.forward(&hp.batch()).unwrap_or_else(|e| panic!("{e}"));
}

/// `grad` refuses projections with a GRU (named `weight_hr_l0`), a P not
/// below H, a norm variant and f16-mixed: exit 2, one line, no output.
#[test]
fn proj_grad_refusals() {
    let spec = |args: &[&str]| RunSpec {
        batch_first: false,
        args: args.iter().map(|s| s.to_string()).collect(),
    };
    let (w, i) = (
        fixture("proj_uni1", "weights"),
        fixture("proj_uni1", "inputs"),
    );
    let dir = TempDir::new("proj-gru");
    run_rejected(
        "GRU",
        &dir,
        &w,
        &i,
        &spec(&["--cell", "gru"]),
        "weight_hr_l0",
        true,
    );
    let dir = TempDir::new("proj-f16");
    let f16 = spec(&["--precision", "f16-mixed"]);
    run_rejected("f16-mixed", &dir, &w, &i, &f16, "proj_size", false);
    let dir = TempDir::new("proj-zoneout");
    let z = spec(&["--zoneout-h", "0.2"]);
    run_rejected("zoneout", &dir, &w, &i, &z, "zoneout", true);
    // weight_hr_l0 [P, H] with P = H.
    let dir = TempDir::new("proj-p");
    let bad = dir.join("w.safetensors");
    let mut l = load(&w);
    let hr = l.tensor_mut("weight_hr_l0");
    hr.shape = vec![7, 7];
    hr.data = vec![0; 7 * 7 * 4];
    save(&l, &bad);
    run_rejected("P = H", &dir, &bad, &i, &spec(&[]), "weight_hr_l0", true);
}
