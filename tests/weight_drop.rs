//! Weight-drop (DropConnect on W_hh, AWD-LSTM) against the f64 reference:
//! the engine's pass replayed by the reference with the masks the engine
//! reports (`Lstm::weight_drop_masks`), for the LSTM and the GRU, per step
//! and as a wavefront; the masks' rate; eval mode leaves W_hh alone.

mod common;

use common::cases::{Case, Data, check_all, data, gpu_pass};
use common::{ctx, set_path};
use lstm_wgpu::kernels::elementwise::DropoutStep;
use lstm_wgpu::schedule::CellPath;
use lstm_wgpu::{Links, Lstm};
use lstm_wgpu_reference::{
    self as reference, RefCellKind, RefLinks, RefRecurrentReg, RefWeightDrop,
};
use std::collections::BTreeMap;

const TOL: f64 = 1e-4;
const P: f32 = 0.3;

fn case_data(c: &Case, gru: bool, seed: u64) -> Data {
    let mut rc = c.ref_config();
    if gru {
        rc.cell = RefCellKind::Gru;
    }
    let mut d = data(
        rc,
        None,
        (c.seq, c.batch),
        c.states,
        c.lengths.of(c.seq, c.batch),
        seed,
    );
    if gru {
        d.rin.c0 = None;
        d.up.grad_c_n = Vec::new();
    }
    d
}

/// The engine's train-mode pass with weight-drop, and its masks.
fn dropped_pass(
    l: &mut Lstm,
    d: &Data,
    step: u32,
) -> (lstm_wgpu::Outputs, lstm_wgpu::Grads, Vec<Vec<f64>>) {
    l.set_links(Links {
        weight_drop: P,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    l.set_dropout_step(DropoutStep {
        seed: 11,
        counter: step,
    });
    let (out, grads) = gpu_pass(l, d).unwrap_or_else(|e| panic!("{e}"));
    let masks = l
        .weight_drop_masks()
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|t| t.data.iter().map(|&x| f64::from(x)).collect())
        .collect();
    (out, grads, masks)
}

#[test]
fn weight_drop_matches_the_reference_with_the_engine_masks() {
    let ctx = ctx();
    let cases = [
        ("bi 2 layers, lengths", Case::BI2, CellPath::PerStep),
        (
            "3 layers, wavefront",
            Case {
                layers: 3,
                hidden: 8,
                states: true,
                ..Case::BASE
            },
            CellPath::Wavefront,
        ),
    ];
    for gru in [false, true] {
        for (i, (name, c, path)) in cases.iter().enumerate() {
            let label = format!("{} {name}", if gru { "GRU" } else { "LSTM" });
            let d = case_data(c, gru, 800 + i as u64);
            let mut l = c.lstm(&ctx, &d);
            set_path(&mut l, Some(*path));
            let (out, grads, masks) = dropped_pass(&mut l, &d, 3);
            assert_eq!(masks.len(), c.layers * if c.bidir { 2 } else { 1 });
            let all: Vec<f64> = masks.concat();
            let kept = all.iter().sum::<f64>() / all.len() as f64;
            assert!(
                (kept - (1.0 - P as f64)).abs() < 0.1,
                "{label}: kept {kept}"
            );
            assert!(all.iter().all(|&m| m == 0.0 || m == 1.0));
            let reg = RefRecurrentReg {
                weight_drop: Some(RefWeightDrop { p: P as f64, masks }),
                ..Default::default()
            };
            let r = reference::backward_reg(&d.rc, &d.w, &d.rin, &d.up, &RefLinks::default(), &reg);
            check_all(
                &label,
                &d.rc,
                (&out, &grads),
                (&r.0, &r.1),
                &BTreeMap::new(),
                TOL,
            );
        }
    }
}

#[test]
fn masks_follow_the_step_and_eval_uses_the_weights() {
    let ctx = ctx();
    let c = Case {
        layers: 2,
        ..Case::BASE
    };
    let d = case_data(&c, false, 820);
    let mut l = c.lstm(&ctx, &d);
    let (_, _, m3) = dropped_pass(&mut l, &d, 3);
    let (_, _, m4) = dropped_pass(&mut l, &d, 4);
    let (_, _, m3b) = dropped_pass(&mut l, &d, 3);
    assert_ne!(m3, m4, "a new step draws a new mask");
    assert_eq!(m3, m3b, "the same step draws the same mask");
    // Eval: exactly the plain pass.
    l.train = false;
    let (dropped, _, _) = dropped_pass(&mut l, &d, 3);
    let mut plain = c.lstm(&ctx, &d);
    plain.train = false;
    let (want, _) = gpu_pass(&mut plain, &d).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dropped.output, want.output);
}

/// `grad --weight-drop P` writes the masks it used (train mode), none with
/// `--eval`, and refuses P outside [0, 1) by name.
#[test]
fn grad_writes_the_masks() {
    use common::parity::{TempDir, grad_on, parse, read};
    let dir = TempDir::new("wd-grad");
    let grad = |extra: &[&str], out: &std::path::Path| grad_on("uni1", extra, out);
    let (train, eval) = (dir.join("train.st"), dir.join("eval.st"));
    let o = grad(&["--weight-drop", "0.5", "--dropout-step", "2"], &train);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = read(&train);
    let st = parse(&bytes, &train);
    let m = st
        .tensor("weight_drop.mask_l0")
        .unwrap_or_else(|e| panic!("{e:?}"));
    let w = st
        .tensor("grad.weight_hh_l0")
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(m.shape(), w.shape());
    let v: Vec<f32> = m
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert!(v.iter().all(|&x| x == 0.0 || x == 1.0));
    assert!(v.contains(&0.0) && v.contains(&1.0));
    let o = grad(&["--weight-drop", "0.5", "--eval"], &eval);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = read(&eval);
    assert!(parse(&bytes, &eval).tensor("weight_drop.mask_l0").is_err());
    let bad = dir.join("bad.st");
    let o = grad(&["--weight-drop", "1.5"], &bad);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--weight-drop"));
    assert!(!bad.exists());
}
