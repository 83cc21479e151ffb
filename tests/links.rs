//! Dropout and residual connections between stacked layers on the GPU
//! against the f64 reference (with the GPU's dropout mask, `dropout_keep`):
//! outputs, states and every gradient, max |gpu - ref| / max |ref| <= 1e-4
//! per tensor as in the core tests. Also: eval mode is dropout-free, the
//! mask follows the step counter and is reproducible bit for bit, links are
//! validated, and each link costs one dispatch per direction of the pass.

mod common;

use common::cases::{self, Data, check_all, f32s, model_of, ref_config};
use common::parity;
use common::*;
use lstm_wgpu::kernels::elementwise::DropoutStep;
use lstm_wgpu::{Error, Grads, Links, Lstm, NamedTensor, Outputs};
use lstm_wgpu_reference::norm::{self as rn, RefNorm};
use lstm_wgpu_reference::{self as reference, Rng};
use std::collections::BTreeMap;
use std::sync::Arc;

const TOL: f64 = 1e-4;

#[derive(Clone, Copy, Debug)]
struct Case {
    norm: Option<RefNorm>,
    train: bool,
    dropout: f32,
    residual: bool,
    layers: usize,
    bidir: bool,
    hidden: usize,
    seq: usize,
    batch: usize,
    states: bool,
    lengths: Option<&'static [usize]>,
}

const BASE: Case = Case {
    norm: None,
    train: true,
    dropout: 0.0,
    residual: false,
    layers: 3,
    bidir: false,
    hidden: 32,
    seq: 5,
    batch: 3,
    states: true,
    lengths: None,
};

const INPUT: usize = 7;

/// The reference's copy of a dropout step (it shares no type with the engine).
fn ref_step(st: &DropoutStep) -> lstm_wgpu_reference::dropout::DropoutStep {
    lstm_wgpu_reference::dropout::DropoutStep {
        seed: st.seed,
        counter: st.counter,
    }
}

fn step(counter: u32) -> DropoutStep {
    DropoutStep {
        seed: 0x5eed_0000_1234,
        counter,
    }
}

fn data(c: &Case, seed: u64) -> Data {
    let rc = ref_config(INPUT, c.hidden, c.layers, c.bidir, true);
    let lengths = c.lengths.map(|l| l.to_vec());
    cases::data(rc, c.norm, (c.seq, c.batch), c.states, lengths, seed)
}

fn lstm_of(ctx: &Arc<lstm_wgpu::GpuContext>, c: &Case, d: &Data) -> Lstm {
    let model = model_of(ctx, d, c.norm).unwrap_or_else(|e| panic!("{e}"));
    let mut lstm = Lstm::new(ctx.clone(), model).unwrap_or_else(|e| panic!("{e}"));
    lstm.train = c.train;
    lstm.set_links(Links {
        dropout: c.dropout,
        residual: c.residual,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    lstm
}

fn gpu_pass(lstm: &mut Lstm, d: &Data) -> (Outputs, Grads) {
    cases::gpu_pass(lstm, d).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs one case on both sides (mask of `step(counter)`) and compares
/// every tensor.
fn run(ctx: &Arc<lstm_wgpu::GpuContext>, c: Case, seed: u64, counter: u32) {
    run_with(ctx, c, seed, counter, |_| {});
}

/// As [`run`], with `setup` adjusting the LSTM (path, skew, cell variant)
/// before the pass; returns what the GPU gave.
fn run_with(
    ctx: &Arc<lstm_wgpu::GpuContext>,
    c: Case,
    seed: u64,
    counter: u32,
    setup: impl Fn(&mut Lstm),
) -> (Outputs, Grads) {
    let label = format!("{c:?}");
    let d = data(&c, seed);
    let st = step(counter);
    let links = lstm_wgpu_reference::dropout::ref_links(
        &d.rc,
        c.seq,
        c.batch,
        c.dropout,
        c.residual,
        c.train.then_some(&ref_step(&st)),
    )
    .unwrap_or_else(|e| panic!("{label}: {e}"));
    if c.train && c.dropout > 0.0 {
        assert_eq!(links.keep.len(), c.layers - 1, "{label}");
    }
    let (rout, rgrads, rnorm) = match c.norm {
        None => {
            let (o, g) = reference::backward_links(&d.rc, &d.w, &d.rin, &d.up, &links);
            (o, g, BTreeMap::new())
        }
        Some(norm) => {
            let (run, g) =
                rn::backward_norm_links(&d.rc, &d.w, norm, &d.nt, &d.rin, &d.up, c.train, &links)
                    .unwrap_or_else(|e| panic!("{label}: reference: {e}"));
            (run.out, g.grads, g.norm)
        }
    };
    let mut lstm = lstm_of(ctx, &c, &d);
    lstm.set_dropout_step(st);
    setup(&mut lstm);
    let (out, grads) = gpu_pass(&mut lstm, &d);
    let worst = check_all(&label, &d.rc, (&out, &grads), (&rout, &rgrads), &rnorm, TOL);
    eprintln!("{label}: worst max|gpu-ref|/max|ref| {worst:.2e}");
    (out, grads)
}

/// LayerNorm between layers and residual adds run inside the wavefront,
/// chunk by chunk: against the reference, and against the layer-by-layer
/// per-step schedule bit for bit, except the LayerNorm weight gradients
/// (summed chunk by chunk there, so only to rounding), for both cell
/// variants, skews 1, 3 and past T, 2–4 layers, lengths, with and without
/// the last layer's norm, and in eval mode.
#[test]
fn wavefront_layer_norm_and_residual() {
    use lstm_wgpu::kernels::lstm_cell::CellVariant;
    use lstm_wgpu::schedule::CellPath;
    let ctx = ctx();
    let base = Case {
        norm: Some(RefNorm::Layer { last: false }),
        residual: true,
        layers: 3,
        hidden: 12,
        seq: 7,
        lengths: Some(&[7, 3, 5]),
        ..BASE
    };
    let cases = [
        (base, 3, CellVariant::Direct),
        (base, 1, CellVariant::Tiled),
        (
            Case {
                norm: Some(RefNorm::Layer { last: true }),
                layers: 4,
                ..base
            },
            2,
            CellVariant::Direct,
        ),
        (
            Case {
                layers: 2,
                residual: false,
                lengths: None,
                ..base
            },
            9,
            CellVariant::Direct,
        ),
        (
            Case {
                train: false,
                dropout: 0.3,
                ..base
            },
            3,
            CellVariant::Tiled,
        ),
    ];
    for (i, (c, skew, variant)) in cases.into_iter().enumerate() {
        let seed = 40 + i as u64;
        let (wo, wg) = run_with(&ctx, c, seed, 0, |l| {
            l.set_tuning(lstm_wgpu::Tuning {
                cell: Some(variant),
                cell_path: Some(CellPath::Wavefront),
                wave_skew: Some(skew),
                ..lstm_wgpu::Tuning::default()
            })
            .unwrap_or_else(|e| panic!("{e}"));
            let p = l.plan(c.seq, c.batch).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(p.path, CellPath::Wavefront, "{c:?}");
        });
        let (po, pg) = run_with(&ctx, c, seed, 0, |l| {
            set_cell(l, variant);
            set_path(l, Some(CellPath::PerStep));
        });
        assert_eq!(wo, po, "{c:?}: outputs");
        assert!(
            wg.input == pg.input && wg.h0 == pg.h0 && wg.c0 == pg.c0,
            "{c:?}: input or state gradients"
        );
        for (a, b) in wg.params.iter().zip(&pg.params) {
            assert_eq!(a.name, b.name);
            if a.name.contains("layer_norms") {
                let scale = b.data.iter().fold(1e-30f32, |m, v| m.max(v.abs()));
                let worst = a
                    .data
                    .iter()
                    .zip(&b.data)
                    .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(worst / scale < 1e-6, "{c:?}: {}: {worst:e}", a.name);
            } else {
                assert!(a.data == b.data, "{c:?}: {}", a.name);
            }
        }
    }
    // What spans whole sequences keeps the layer-by-layer schedule, and a
    // forced wavefront names it.
    for (c, why) in [
        (
            Case {
                dropout: 0.3,
                ..base
            },
            "dropout",
        ),
        (
            Case {
                norm: Some(RefNorm::Batch { last: false }),
                ..base
            },
            "BatchNorm",
        ),
    ] {
        let d = data(&c, 50);
        let mut lstm = lstm_of(&ctx, &c, &d);
        set_path(&mut lstm, Some(CellPath::PerStep));
        lstm.plan(c.seq, c.batch).unwrap_or_else(|e| panic!("{e}"));
        set_path(&mut lstm, Some(CellPath::Wavefront));
        let e = lstm
            .plan(c.seq, c.batch)
            .err()
            .expect("forced wavefront ran");
        assert!(e.to_string().contains(why), "{e}");
    }
}

#[test]
fn residual_only() {
    let ctx = ctx();
    let c = Case {
        residual: true,
        lengths: Some(&[5, 2, 4]),
        ..BASE
    };
    run(&ctx, c, 1, 0);
}

#[test]
fn dropout_only_train_and_eval() {
    let ctx = ctx();
    let c = Case {
        dropout: 0.4,
        layers: 2,
        ..BASE
    };
    run(&ctx, c, 2, 3);
    // Eval mode: dropout is the identity (the reference gets no masks).
    run(&ctx, Case { train: false, ..c }, 2, 3);
}

#[test]
fn dropout_residual_layer_norm_bidirectional() {
    let ctx = ctx();
    let c = Case {
        norm: Some(RefNorm::Layer { last: true }),
        dropout: 0.3,
        residual: true,
        bidir: true,
        lengths: Some(&[5, 1, 3]),
        ..BASE
    };
    run(&ctx, c, 3, 11);
}

#[test]
fn dropout_residual_deep_unequal_lengths() {
    let ctx = ctx();
    let c = Case {
        dropout: 0.5,
        residual: true,
        layers: 4,
        seq: 6,
        states: false,
        lengths: Some(&[6, 3, 5]),
        ..BASE
    };
    run(&ctx, c, 4, 5);
}

#[test]
fn dropout_residual_with_other_norms() {
    let ctx = ctx();
    // In-cell LayerNorm: links follow the cell output.
    let c = Case {
        norm: Some(RefNorm::LayerCell),
        dropout: 0.25,
        residual: true,
        layers: 2,
        lengths: Some(&[4, 5, 2]),
        ..BASE
    };
    run(&ctx, c, 5, 2);
    // Sequence-wise BatchNorm in train mode, bidirectional.
    let c = Case {
        norm: Some(RefNorm::Batch { last: false }),
        dropout: 0.3,
        residual: true,
        layers: 2,
        bidir: true,
        lengths: Some(&[5, 3, 5]),
        ..BASE
    };
    run(&ctx, c, 6, 9);
}

/// The same counter gives bit-identical results, another counter another
/// mask (and different results), without rebuilding the plan.
#[test]
fn mask_follows_counter_and_is_reproducible() {
    let ctx = ctx();
    let c = Case {
        dropout: 0.5,
        residual: true,
        layers: 2,
        ..BASE
    };
    let d = data(&c, 7);
    let mut lstm = lstm_of(&ctx, &c, &d);
    lstm.set_dropout_step(step(1));
    let a = gpu_pass(&mut lstm, &d);
    let counts = lstm.dispatch_counts(c.seq, c.batch);
    lstm.set_dropout_step(step(2));
    let b = gpu_pass(&mut lstm, &d);
    lstm.set_dropout_step(step(1));
    let again = gpu_pass(&mut lstm, &d);
    assert_eq!(lstm.dispatch_counts(c.seq, c.batch), counts);
    assert_eq!(a, again, "same step, same results bit for bit");
    assert_ne!(a.0.output, b.0.output, "another counter, another mask");
    assert_ne!(a.1.input, b.1.input);
    // Layer 0 runs before any dropout: its final states do not change.
    let sl = c.batch * c.hidden;
    assert_eq!(a.0.h_n[..sl], b.0.h_n[..sl]);
    // Another seed, same counter: another mask too.
    lstm.set_dropout_step(DropoutStep {
        seed: 1,
        counter: 1,
    });
    let s = gpu_pass(&mut lstm, &d);
    assert_ne!(a.0.output, s.0.output);
}

#[test]
fn links_are_validated() {
    let ctx = ctx();
    let c = Case { layers: 2, ..BASE };
    let d = data(&c, 8);
    let mut lstm = lstm_of(&ctx, &c, &d);
    for p in [1.0, -0.1, f32::NAN, f32::INFINITY, 1.5] {
        let e = lstm
            .set_links(Links {
                dropout: p,
                residual: false,
                ..Default::default()
            })
            .expect_err("must fail");
        assert!(matches!(e, Error::Invalid(_)), "{e}");
        assert!(e.to_string().contains("dropout"), "{e}");
    }
    assert_eq!(
        lstm.model.links,
        Links::default(),
        "a bad value is not kept"
    );
    lstm.set_links(Links {
        dropout: 0.0,
        residual: true,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Each layer with a link costs one elementwise dispatch forward and one
/// backward; eval mode drops the dropout-only links.
#[test]
fn dispatch_counts_with_links() {
    let ctx = ctx();
    let c = Case {
        layers: 3,
        bidir: true,
        ..BASE
    };
    let d = data(&c, 9);
    let mut counts = BTreeMap::new();
    for (p, residual, train) in [
        (0.0, false, true),
        (0.5, false, true),
        (0.0, true, true),
        (0.5, true, true),
        (0.5, false, false),
        (0.5, true, false),
    ] {
        let mut lstm = lstm_of(&ctx, &Case { train, ..c }, &d);
        lstm.set_links(Links {
            dropout: p,
            residual,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        gpu_pass(&mut lstm, &d);
        let got = lstm
            .dispatch_counts(c.seq, c.batch)
            .unwrap_or_else(|| panic!("no plan"));
        counts.insert((p.to_bits(), residual, train), got);
    }
    let base = counts[&(0f32.to_bits(), false, true)];
    let plus = |k: usize| (base.0 + k, base.1 + k);
    // Dropout after layers 0 and 1; residual around layers 1 and 2; both:
    // layers 0, 1 and 2 (fused where they meet).
    assert_eq!(counts[&(0.5f32.to_bits(), false, true)], plus(2));
    assert_eq!(counts[&(0f32.to_bits(), true, true)], plus(2));
    assert_eq!(counts[&(0.5f32.to_bits(), true, true)], plus(3));
    assert_eq!(counts[&(0.5f32.to_bits(), false, false)], plus(0));
    assert_eq!(counts[&(0.5f32.to_bits(), true, false)], plus(2));
}

/// Writes a case's weights and inputs as safetensors and runs `lstm-wgpu
/// grad` with `args` on them.
fn run_grad_cli(
    tag: &str,
    c: &Case,
    d: &Data,
    args: &[&str],
) -> (std::process::Output, std::path::PathBuf, parity::TempDir) {
    let dir = parity::TempDir::new(tag);
    let (w, i, o) = (
        dir.join("w.safetensors"),
        dir.join("i.safetensors"),
        dir.join("o.safetensors"),
    );
    lstm_wgpu::io::write(&w, &ref_to_tensors(&d.rc, &d.w), None).unwrap_or_else(|e| panic!("{e}"));
    let sl = vec![c.layers * d.rc.dirs(), c.batch, c.hidden];
    let mut inputs = vec![
        NamedTensor::new("input", vec![c.seq, c.batch, INPUT], f32s(&d.rin.x)),
        NamedTensor::new(
            "grad_output",
            vec![c.seq, c.batch, d.rc.dirs() * c.hidden],
            f32s(&d.up.grad_output),
        ),
        NamedTensor::new("grad_h_n", sl.clone(), f32s(&d.up.grad_h_n)),
        NamedTensor::new("grad_c_n", sl.clone(), f32s(&d.up.grad_c_n)),
    ];
    for (name, v) in [("h0", &d.rin.h0), ("c0", &d.rin.c0)] {
        if let Some(v) = v {
            inputs.push(NamedTensor::new(name, sl.clone(), f32s(v)));
        }
    }
    lstm_wgpu::io::write(&i, &inputs, None).unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lstm-wgpu"))
        .arg("grad")
        .args(["--weights", w.to_str().unwrap_or_default()])
        .args(["--inputs", i.to_str().unwrap_or_default()])
        .args(["--out", o.to_str().unwrap_or_default()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running lstm-wgpu: {e}"));
    (out, o, dir)
}

/// `grad --dropout --residual --dropout-seed --dropout-step` against the
/// reference with the same mask; `--eval` makes dropout the identity.
#[test]
fn grad_cli_links() {
    let c = Case {
        dropout: 0.35,
        residual: true,
        layers: 3,
        bidir: true,
        ..BASE
    };
    let d = data(&c, 10);
    let st = DropoutStep {
        seed: 12345,
        counter: 6,
    };
    for eval in [false, true] {
        let mut args = vec![
            "--dropout",
            "0.35",
            "--residual",
            "--dropout-seed",
            "12345",
            "--dropout-step",
            "6",
        ];
        if eval {
            args.push("--eval");
        }
        let (res, out, _dir) = run_grad_cli("links_cli", &c, &d, &args);
        assert!(
            res.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&res.stderr)
        );
        let links = lstm_wgpu_reference::dropout::ref_links(
            &d.rc,
            c.seq,
            c.batch,
            0.35,
            true,
            (!eval).then_some(&ref_step(&st)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (rout, rg) = reference::backward_links(&d.rc, &d.w, &d.rin, &d.up, &links);
        let f = lstm_wgpu::io::TensorFile::read(&out).unwrap_or_else(|e| panic!("{e}"));
        let get = |n: &str| f.require_f32(n).unwrap_or_else(|e| panic!("{e}")).data;
        let label = format!("grad eval={eval}");
        assert_close(
            &format!("{label}: output"),
            &get("output"),
            &rout.output,
            TOL,
        );
        assert_close(&format!("{label}: h_n"), &get("h_n"), &rout.h_n, TOL);
        assert_close(
            &format!("{label}: grad.input"),
            &get("grad.input"),
            &rg.input,
            TOL,
        );
        assert_close(
            &format!("{label}: grad.weight_ih_l1_reverse"),
            &get("grad.weight_ih_l1_reverse"),
            &rg.weights.cells[3].w_ih,
            TOL,
        );
        if let Some(dir) = out.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Bad link flags: exit code 2, an error on stderr whose first line names
/// the flag, and no output file.
#[test]
fn grad_cli_bad_links() {
    let c = Case { layers: 2, ..BASE };
    let d = data(&c, 11);
    for (args, flag) in [
        (&["--dropout", "1"][..], "--dropout"),
        (&["--dropout=-0.2"][..], "--dropout"),
        (&["--dropout", "NaN"][..], "--dropout"),
        (&["--dropout", "inf"][..], "--dropout"),
        (&["--dropout", "half"][..], "--dropout"),
        (&["--dropout-step=-1"][..], "--dropout-step"),
        (&["--dropout-step", "4294967296"][..], "--dropout-step"),
        (&["--dropout-seed", "x"][..], "--dropout-seed"),
    ] {
        let (res, out, _dir) = run_grad_cli("links_bad", &c, &d, args);
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(2), "{args:?}: {stderr}");
        let first = stderr
            .lines()
            .find(|l| l.starts_with("error"))
            .unwrap_or_default();
        assert!(first.contains(flag), "{args:?}: {stderr}");
        assert!(!out.exists(), "{args:?}: output written");
    }
    // Our own checks (not clap's parse errors) are exactly one line.
    let (res, _, _dir) = run_grad_cli("links_bad", &c, &d, &["--dropout", "1"]);
    let stderr = String::from_utf8_lossy(&res.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("[0, 1)"), "{stderr}");
}

/// The fused kernels alone, at offsets, with an odd length, against
/// `dropout_keep`: `dropout_add` (also in place on the skip operand and
/// accumulating) and `dropout_split` (in place on dy); p = 0 is exact.
#[test]
fn fused_kernels_against_cpu_mask() {
    use lstm_wgpu::kernels::elementwise::{DropoutShape, Elementwise, dropout_keep, dropout_scale};
    let ctx = ctx();
    let k = Elementwise::new(&ctx);
    let n = 1001;
    let mut rng = Rng::new(12);
    let mut vals = |len: usize| f32s(&rng.vec(len, -2.0, 2.0));
    let (x, skip0, y0) = (vals(n + 8), vals(n + 8), vals(n + 8));
    let st = step(9);
    let stepbuf = ctx
        .storage_init("step", &[0u32, 0, 0, 0, 0, 0, 0, 0])
        .unwrap_or_else(|e| panic!("{e}"));
    ctx.write(&stepbuf, 3, &st.words());
    let buf = |v: &[f32]| {
        ctx.storage_init("data", v)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let run = |ds: Vec<lstm_wgpu::gpu::Dispatch>| {
        assert_eq!(ds.len(), 1);
        ctx.scoped(|| {
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                ds[0].record(&mut pass);
            }
            ctx.queue.submit([enc.finish()]);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    };
    let read = |b: &wgpu::Buffer| ctx.read_f32(b, 0, n + 8).unwrap_or_else(|e| panic!("{e}"));
    for p in [0.0f32, 0.3] {
        let s = DropoutShape {
            n,
            p,
            stream: 4,
            step_off: 3,
            in_off: 2,
            out_off: 5,
            accumulate: false,
        };
        let m = |i: usize| {
            let keep = dropout_keep(&st, 4, i as u32, p).unwrap_or_else(|e| panic!("{e}"));
            if keep { dropout_scale(p) } else { 0.0 }
        };
        // y = drop(x) + skip, then y += drop(x) + skip with y as the skip.
        let (xb, sb, yb) = (buf(&x), buf(&skip0), buf(&y0));
        run(k
            .dropout_add(&ctx, &s, &stepbuf, &xb, (&sb, 1), &yb)
            .unwrap_or_else(|e| panic!("{e}")));
        let y = read(&yb);
        for i in 0..n {
            let want = x[2 + i] * m(i) + skip0[1 + i];
            assert_eq!(y[5 + i], want, "p={p} add [{i}]");
        }
        assert_eq!(y[..5], y0[..5], "outside the range untouched");
        let acc = DropoutShape {
            accumulate: true,
            ..s
        };
        run(k
            .dropout_add(&ctx, &acc, &stepbuf, &xb, (&yb, 5), &yb)
            .unwrap_or_else(|e| panic!("{e}")));
        let y2 = read(&yb);
        for i in 0..n {
            let want = y[5 + i] + (x[2 + i] * m(i) + y[5 + i]);
            assert_eq!(y2[5 + i], want, "p={p} accumulate [{i}]");
        }
        // dx = drop(dy) in place, skip = dy.
        let split = DropoutShape { out_off: 2, ..s };
        let (db, kb) = (buf(&x), buf(&skip0));
        run(k
            .dropout_split(&ctx, &split, &stepbuf, &db, (&kb, 7), &db)
            .unwrap_or_else(|e| panic!("{e}")));
        let (dx, kept) = (read(&db), read(&kb));
        for i in 0..n {
            assert_eq!(dx[2 + i], x[2 + i] * m(i), "p={p} split dx [{i}]");
            assert_eq!(kept[7 + i], x[2 + i], "p={p} split skip [{i}]");
        }
        if p == 0.0 {
            assert_eq!(dx[2..2 + n], x[2..2 + n], "p = 0 is the identity");
        } else {
            let dropped = (0..n).filter(|&i| m(i) == 0.0).count();
            assert!((200..400).contains(&dropped), "{dropped} of {n} dropped");
        }
    }
}

/// Every configuration written by `tests/fixtures/make_link_fixtures.py`.
const LINK_FIXTURES: &[&str] = &["res_plain_uni3", "res_layer_uni3_last", "res_layer_bi3_len"];

/// `lstm-wgpu grad [--norm layer] --residual` against PyTorch (a stack of
/// `nn.LSTM`s with `nn.LayerNorm` and residual adds on the packed data),
/// every tensor within 1e-4.
#[test]
fn pytorch_residual_parity() {
    let dir = parity::fixtures_dir("links");
    parity::check_all_listed(&dir, LINK_FIXTURES);
    for name in LINK_FIXTURES {
        parity::check_parity(&dir, name, TOL as f32);
    }
}
