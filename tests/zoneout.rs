//! Zoneout (Krueger et al. 2016) against the f64 reference: the engine's
//! train-mode pass replayed by the reference with the masks the engine
//! reports (`Lstm::zoneout_masks`), for the LSTM (h and c) and the GRU and
//! IndRNN (h), on every per-step strategy and the wavefront; eval mode
//! against the expectation; the masks' rate; masks of zeros and zoneout off
//! leave the plain pass's bits; `grad` writes the masks and refuses bad
//! flags by name; `train` stores, resumes and refuses.

mod common;

#[path = "common/cli.rs"]
mod cli;
#[path = "common/final_line.rs"]
mod final_line;

use common::cases::{CELL_CASES, Case, Data, Lengths, check_all, data, gpu_pass};
use common::{ctx, set_cell, set_path};
use lstm_wgpu::kernels::elementwise::DropoutStep;
use lstm_wgpu::kernels::lstm_cell::CellVariant;
use lstm_wgpu::schedule::CellPath;
use lstm_wgpu::{Links, Lstm};
use lstm_wgpu_reference::{
    self as reference, RefActivation, RefCellKind, RefLinks, RefRecurrentReg, RefZoneout,
};
use std::collections::BTreeMap;

const TOL: f64 = 1e-4;
const STEP: DropoutStep = DropoutStep {
    seed: 23,
    counter: 5,
};

fn case_data(c: &Case, kind: RefCellKind, seed: u64) -> Data {
    let mut rc = c.ref_config();
    rc.cell = kind;
    let lengths = c.lengths.of(c.seq, c.batch);
    let mut d = data(rc, None, (c.seq, c.batch), c.states, lengths, seed);
    if !kind.has_c() {
        d.rin.c0 = None;
        d.up.grad_c_n = Vec::new();
    }
    d
}

fn zoned(l: &mut Lstm, (h, c): (f32, f32)) {
    l.set_links(Links {
        zoneout_h: h,
        zoneout_c: c,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    l.set_dropout_step(STEP);
}

/// The engine's masks of a pass over `c`, as the reference takes them.
fn masks(l: &Lstm, c: &Case, (h, cp): (f32, f32)) -> (RefZoneout, RefZoneout) {
    let mut m = l
        .zoneout_masks(&STEP, c.seq, c.batch)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter();
    let mut next = |p: f32, name: &str| match p > 0.0 {
        true => {
            let t = m.next().unwrap_or_else(|| panic!("no {name} mask"));
            assert_eq!(t.name, format!("zoneout.{name}_mask"));
            RefZoneout::Masks(t.data.iter().map(|&x| f64::from(x)).collect())
        }
        false => RefZoneout::Off,
    };
    (next(h, "h"), next(cp, "c"))
}

/// Runs `c` with zoneout `p` under `setup` and checks the pass against the
/// reference replaying it (train: the engine's masks; eval: m = p).
fn run(label: &str, c: Case, kind: RefCellKind, p: (f32, f32), setup: impl Fn(&mut Lstm)) {
    run_within(label, c, kind, p, TOL, setup);
}

fn run_within(
    label: &str,
    c: Case,
    kind: RefCellKind,
    p: (f32, f32),
    tol: f64,
    setup: impl Fn(&mut Lstm),
) {
    let ctx = ctx();
    let d = case_data(&c, kind, 900 + label.len() as u64);
    let mut l = c.lstm(&ctx, &d);
    setup(&mut l);
    zoned(&mut l, p);
    let (out, grads) = gpu_pass(&mut l, &d).unwrap_or_else(|e| panic!("{label}: {e}"));
    let (zoneout_h, zoneout_c) = match c.train {
        true => masks(&l, &c, p),
        false => (
            RefZoneout::Expectation(f64::from(p.0)),
            match p.1 > 0.0 {
                true => RefZoneout::Expectation(f64::from(p.1)),
                false => RefZoneout::Off,
            },
        ),
    };
    let reg = RefRecurrentReg {
        zoneout_h,
        zoneout_c,
        weight_drop: None,
    };
    let r = reference::backward_reg(&d.rc, &d.w, &d.rin, &d.up, &RefLinks::default(), &reg);
    check_all(
        label,
        &d.rc,
        (&out, &grads),
        (&r.0, &r.1),
        &BTreeMap::new(),
        tol,
    );
}

const LSTM_P: (f32, f32) = (0.3, 0.4);
const GRU_P: (f32, f32) = (0.35, 0.0);

fn per_step(kind: RefCellKind, p: (f32, f32), variants: &[CellVariant]) {
    for &variant in variants {
        for (name, c) in CELL_CASES {
            run(&format!("{kind:?} {variant:?}, {name}"), c, kind, p, |l| {
                set_path(l, Some(CellPath::PerStep));
                set_cell(l, variant);
            });
        }
    }
}

#[test]
fn lstm_zoneout_matches_the_reference_per_step() {
    per_step(
        RefCellKind::Lstm,
        LSTM_P,
        &[CellVariant::Direct, CellVariant::Tiled],
    );
    // h alone and c alone.
    run(
        "LSTM h only",
        Case::BI2,
        RefCellKind::Lstm,
        (0.5, 0.0),
        |_| {},
    );
    run(
        "LSTM c only",
        Case::BI2,
        RefCellKind::Lstm,
        (0.0, 0.5),
        |_| {},
    );
}

#[test]
fn gru_and_indrnn_zoneout_match_the_reference_per_step() {
    per_step(
        RefCellKind::Gru,
        GRU_P,
        &[CellVariant::Direct, CellVariant::Tiled],
    );
    per_step(
        RefCellKind::IndRnn {
            act: RefActivation::Relu,
        },
        GRU_P,
        &[CellVariant::Direct],
    );
}

#[test]
fn zoneout_matches_the_reference_in_the_wavefront() {
    let c = Case {
        layers: 3,
        hidden: 8,
        states: true,
        lengths: Lengths::Spread,
        batch: 4,
        ..Case::BASE
    };
    for (kind, p) in [
        (RefCellKind::Lstm, LSTM_P),
        (RefCellKind::Gru, GRU_P),
        (
            RefCellKind::IndRnn {
                act: RefActivation::Tanh,
            },
            GRU_P,
        ),
    ] {
        run(&format!("{kind:?} wavefront"), c, kind, p, |l| {
            set_path(l, Some(CellPath::Wavefront));
        });
    }
}

/// f16-mixed (f16 W_hh, gates and h_prev; f32 states, zoneout sections
/// and gradients) within the f16-mixed tolerance of the other cells'
/// tests, where the adapter has SHADER_F16.
#[test]
fn f16_mixed_zoneout_matches_the_reference() {
    use lstm_wgpu::model::precision::Precision;
    if !ctx().f16 {
        eprintln!("skipped: the adapter lacks SHADER_F16");
        return;
    }
    let wave = Case {
        layers: 2,
        ..Case::BASE
    };
    for (kind, p) in [(RefCellKind::Lstm, LSTM_P), (RefCellKind::Gru, GRU_P)] {
        for (name, c, path) in [
            ("per step", Case::BI2, CellPath::PerStep),
            ("wavefront", wave, CellPath::Wavefront),
        ] {
            let label = format!("{kind:?} f16-mixed {name}");
            run_within(&label, c, kind, p, 1e-2, |l| {
                set_path(l, Some(path));
                l.set_precision(Precision::F16Mixed)
                    .unwrap_or_else(|e| panic!("{e}"));
            });
        }
    }
}

#[test]
fn eval_mode_is_the_expectation() {
    for (kind, p) in [(RefCellKind::Lstm, LSTM_P), (RefCellKind::Gru, GRU_P)] {
        let c = Case {
            train: false,
            ..Case::BI2
        };
        run(&format!("{kind:?} eval"), c, kind, p, |_| {});
        let w = Case {
            layers: 2,
            train: false,
            ..Case::BASE
        };
        run(&format!("{kind:?} eval, wavefront"), w, kind, p, |l| {
            set_path(l, Some(CellPath::Wavefront));
        });
    }
}

/// The masks keep the previous value at rate p, change with the step, and
/// hold only 0 and 1.
#[test]
fn mask_rate_is_p() {
    let ctx = ctx();
    let c = Case {
        layers: 2,
        bidir: true,
        hidden: 32,
        seq: 20,
        batch: 16,
        ..Case::BASE
    };
    let d = c.data(940);
    let mut l = c.lstm(&ctx, &d);
    zoned(&mut l, (0.2, 0.6));
    let all = l
        .zoneout_masks(&STEP, c.seq, c.batch)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(all.len(), 2);
    for (t, p) in all.iter().zip([0.2, 0.6]) {
        assert_eq!(t.shape, vec![4, c.seq, c.batch, c.hidden]);
        assert!(t.data.iter().all(|&x| x == 0.0 || x == 1.0));
        let rate = t.data.iter().sum::<f32>() / t.data.len() as f32;
        assert!((rate - p).abs() < 0.02, "{}: rate {rate}, p {p}", t.name);
    }
    let other = DropoutStep {
        counter: STEP.counter + 1,
        ..STEP
    };
    let next = l
        .zoneout_masks(&other, c.seq, c.batch)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(all[0].data, next[0].data, "a new step draws a new mask");
    assert_ne!(all[0].data, all[1].data, "h and c draw apart");
}

/// Zoneout off (set back to 0) and zoneout whose masks are all 0 give the
/// plain pass's bits, on the per-step kernels and the wavefront.
#[test]
fn zero_masks_and_off_leave_the_plain_bits() {
    let ctx = ctx();
    let c = Case {
        layers: 2,
        states: true,
        lengths: Lengths::Spread,
        batch: 4,
        ..Case::BASE
    };
    for kind in [RefCellKind::Lstm, RefCellKind::Gru] {
        let d = case_data(&c, kind, 950);
        let p = match kind.has_c() {
            true => (1e-9, 1e-9),
            false => (1e-9, 0.0),
        };
        for path in [CellPath::PerStep, CellPath::Wavefront] {
            let mut plain = c.lstm(&ctx, &d);
            set_path(&mut plain, Some(path));
            let want = gpu_pass(&mut plain, &d).unwrap_or_else(|e| panic!("{e}"));
            let mut l = c.lstm(&ctx, &d);
            set_path(&mut l, Some(path));
            zoned(&mut l, p);
            let m = l
                .zoneout_masks(&STEP, c.seq, c.batch)
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(m.iter().all(|t| t.data.iter().all(|&x| x == 0.0)));
            let label = format!("{kind:?} {path:?}");
            let got = gpu_pass(&mut l, &d).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(got.0.output, want.0.output, "{label}: zero masks");
            assert_eq!(got.0.h_n, want.0.h_n, "{label}: zero masks");
            assert_eq!(got.1.input, want.1.input, "{label}: zero masks");
            assert_eq!(got.1.h0, want.1.h0, "{label}: zero masks");
            l.set_links(Links::default())
                .unwrap_or_else(|e| panic!("{e}"));
            let off = gpu_pass(&mut l, &d).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(off.0.output, want.0.output, "{label}: off");
            assert_eq!(off.1.c0, want.1.c0, "{label}: off");
            assert_eq!(off.1.input, want.1.input, "{label}: off");
        }
    }
}

/// The library refuses zoneout of c for cells without c, and the
/// persistent path.
#[test]
fn library_refusals_name_the_problem() {
    let ctx = ctx();
    let c = Case::BASE;
    let d = case_data(&c, RefCellKind::Gru, 960);
    let mut l = c.lstm(&ctx, &d);
    let e = l
        .set_links(Links {
            zoneout_c: 0.2,
            ..Default::default()
        })
        .expect_err("a GRU has no c");
    assert!(e.to_string().contains("zoneout of c"), "{e}");
    let d = c.data(961);
    let mut l = c.lstm(&ctx, &d);
    zoned(&mut l, (0.2, 0.0));
    set_path(&mut l, Some(CellPath::Persistent));
    let e = gpu_pass(&mut l, &d).expect_err("persistent refuses zoneout");
    assert!(e.to_string().contains("zoneout"), "{e}");
}

/// `grad --zoneout-h/--zoneout-c` writes the masks it used (train mode),
/// none with `--eval`; bad probabilities and `--zoneout-c` on a GRU are
/// refused by name with exit 2 before any output exists.
#[test]
fn grad_writes_the_masks_and_refuses_by_name() {
    use common::parity::{TempDir, f32_values, grad_on, parse, read};
    let dir = TempDir::new("zo-grad");
    let grad = |extra: &[&str], out: &std::path::Path| grad_on("uni1", extra, out);
    let (train, eval) = (dir.join("train.st"), dir.join("eval.st"));
    let zo = ["--zoneout-h", "0.5", "--zoneout-c", "0.25"];
    let o = grad(&[&zo[..], &["--dropout-step", "2"]].concat(), &train);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = read(&train);
    let st = parse(&bytes, &train);
    let out = st.tensor("output").unwrap_or_else(|e| panic!("{e:?}"));
    let h0 = st.tensor("h_n").unwrap_or_else(|e| panic!("{e:?}"));
    for name in ["zoneout.h_mask", "zoneout.c_mask"] {
        let m = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let (t, b, n) = (out.shape()[0], out.shape()[1], h0.shape()[2]);
        assert_eq!(m.shape(), [h0.shape()[0], t, b, n], "{name}");
        let v = f32_values(name, &m);
        assert!(v.iter().all(|&x| x == 0.0 || x == 1.0), "{name}");
        assert!(v.contains(&0.0) && v.contains(&1.0), "{name}");
    }
    let o = grad(&[&zo[..], &["--eval"]].concat(), &eval);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = read(&eval);
    assert!(parse(&bytes, &eval).tensor("zoneout.h_mask").is_err());
    for (bad, flag) in [
        (&["--zoneout-h", "1"][..], "--zoneout-h"),
        (&["--zoneout-c=-0.1"][..], "--zoneout-c"),
        (&["--zoneout-h", "NaN"][..], "--zoneout-h"),
        (&["--cell", "gru", "--zoneout-c", "0.1"][..], "--zoneout-c"),
    ] {
        let out = dir.join("bad.st");
        let o = grad(bad, &out);
        cli::assert_refused(&o, &[flag], &format!("{bad:?}"));
        assert!(!out.exists(), "{bad:?}");
    }
}

const TEXT: &[&str] = &[
    "train",
    "--hidden",
    "16",
    "--layers",
    "2",
    "--batch",
    "4",
    "--seq-len",
    "12",
    "--val-every",
    "5",
    "--no-progress",
];

/// `train --zoneout-h/--zoneout-c`: changes the run, is stored in the
/// settings, resumes bit for bit, refuses a change on resume; `generate`
/// runs the stored model; bad values and combinations are refused by name.
#[test]
fn train_stores_resumes_and_refuses() {
    use common::parity::TempDir;
    let s = cli::s;
    let dir = TempDir::new("zo-train");
    let ck = dir.join("z.ckpt");
    let zo = ["--zoneout-h", "0.2", "--zoneout-c", "0.1"];
    let args = |steps: &'static str| [TEXT, &zo[..], &["--steps", steps]].concat();
    let full = cli::ok(&args("10"));
    let plain = cli::ok(&[TEXT, &["--steps", "10"]].concat());
    assert_ne!(
        final_line::final_line(&full),
        final_line::final_line(&plain),
        "zoneout changes the run"
    );
    cli::ok(&[args("5"), vec!["--checkpoint", s(&ck)]].concat());
    let settings = cli::settings_of(&ck);
    assert!(
        settings.contains("zoneout-h = 0.2") && settings.contains("zoneout-c = 0.1"),
        "{settings}"
    );
    let resumed = cli::ok(&[
        "train",
        "--resume",
        s(&ck),
        "--steps",
        "10",
        "--no-progress",
    ]);
    assert_eq!(
        final_line::final_line(&resumed),
        final_line::final_line(&full),
        "resume is bit for bit"
    );
    let o = cli::run(&[
        "train",
        "--resume",
        s(&ck),
        "--steps",
        "10",
        "--zoneout-h",
        "0.3",
    ]);
    cli::assert_refused(&o, &["--zoneout-h"], "a new --zoneout-h on resume");
    let g = cli::run(&["generate", "--checkpoint", s(&ck), "--prompt", "The "]);
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    for (bad, flag) in [
        (&["--zoneout-h", "1.5"][..], "--zoneout-h"),
        (&["--zoneout-c", "0.1", "--cell", "gru"][..], "--zoneout-c"),
        (
            &["--zoneout-h", "0.1", "--norm", "layer-cell"][..],
            "--zoneout-h",
        ),
    ] {
        let o = cli::run(&[&["train", "--steps", "2"], bad].concat());
        cli::assert_refused(&o, &[flag], &format!("{bad:?}"));
    }
}
