//! The GRU, projected-LSTM and IndRNN cells, zoneout and weight-drop against
//! central finite differences of every gradient, and against single steps
//! written out by hand.

mod common;

use common::*;
use lstm_wgpu_reference::*;

const GRU: RefCellKind = RefCellKind::Gru;
const PROJ: RefCellKind = RefCellKind::LstmProj { proj_size: 2 };
const IND_TANH: RefCellKind = RefCellKind::IndRnn {
    act: RefActivation::Tanh,
};
const IND_RELU: RefCellKind = RefCellKind::IndRnn {
    act: RefActivation::Relu,
};
/// Every cell, the plain LSTM included (for zoneout and weight-drop).
const ALL: [RefCellKind; 5] = [RefCellKind::Lstm, PROJ, GRU, IND_TANH, IND_RELU];

/// Smallest |pre-activation| a ReLU case must keep: the perturbations of
/// the finite differences (1e-6 of one value) move none across the kink.
const RELU_MARGIN: f64 = 1e-3;

fn cell_cfg(cell: RefCellKind, layers: usize, bidir: bool, bias: bool) -> RefConfig {
    RefConfig {
        cell,
        ..cfg(2, 3, layers, bidir, bias)
    }
}

/// `n` values, each 1 with probability `p`, else 0.
fn bernoulli(rng: &mut Rng, n: usize, p: f64) -> Vec<f64> {
    (0..n)
        .map(|_| f64::from(rng.uniform(0.0, 1.0) < p))
        .collect()
}

/// What runs inside the recurrence of a case.
#[derive(Clone, Copy, Debug)]
enum Reg {
    None,
    /// Zoneout masks with these probabilities of h and c.
    Zoneout(f64, f64),
    /// Zoneout's eval-mode expectation.
    ZoneoutEval(f64, f64),
    /// Weight-drop with this p, and zoneout masks of h with p = 0.3.
    WeightDrop(f64),
}

fn make_reg(
    r: Reg,
    c: &RefConfig,
    w: &RefWeights,
    t: usize,
    b: usize,
    rng: &mut Rng,
) -> RefRecurrentReg {
    let positions = c.cells() * t * b;
    let h_len = positions * c.state_size();
    let c_len = if c.cell.has_c() {
        positions * c.hidden_size
    } else {
        0
    };
    let zone = |p: f64, n: usize, rng: &mut Rng| {
        if n == 0 {
            RefZoneout::Off
        } else {
            RefZoneout::Masks(bernoulli(rng, n, p))
        }
    };
    match r {
        Reg::None => RefRecurrentReg::default(),
        Reg::Zoneout(ph, pc) => RefRecurrentReg {
            zoneout_h: zone(ph, h_len, rng),
            zoneout_c: zone(pc, c_len, rng),
            weight_drop: None,
        },
        Reg::ZoneoutEval(ph, pc) => RefRecurrentReg {
            zoneout_h: RefZoneout::Expectation(ph),
            zoneout_c: if c_len > 0 {
                RefZoneout::Expectation(pc)
            } else {
                RefZoneout::Off
            },
            weight_drop: None,
        },
        Reg::WeightDrop(p) => RefRecurrentReg {
            zoneout_h: zone(0.3, h_len, rng),
            zoneout_c: RefZoneout::Off,
            weight_drop: Some(RefWeightDrop {
                p,
                masks: (w.cells.iter())
                    .map(|cw| bernoulli(rng, cw.w_hh.len(), 1.0 - p))
                    .collect(),
            }),
        },
    }
}

/// One finite-difference case; a ReLU case redraws (deterministically)
/// until no pre-activation lies within [`RELU_MARGIN`] of the kink.
#[allow(clippy::too_many_arguments)]
fn fd_case(
    c: &RefConfig,
    t: usize,
    b: usize,
    with_state: bool,
    lengths: Option<Vec<usize>>,
    reg: Reg,
    links: &RefLinks,
    seed: u64,
    chk: &mut Checker,
) {
    for attempt in 0..100 {
        let mut rng = Rng::new(seed + 7919 * attempt);
        let w = random_weights(c, &mut rng);
        let inp = make_inputs(c, &mut rng, t, b, with_state, lengths.clone());
        let up = make_upstream(c, &mut rng, t, b);
        let rg = make_reg(reg, c, &w, t, b, &mut rng);
        if c.cell == IND_RELU && min_abs_preactivation(c, &w, &inp, links, &rg) < RELU_MARGIN {
            continue;
        }
        let tag = format!(
            "{:?} L={} D={} bias={} state={with_state} T={t} B={b} lengths={lengths:?} \
             {reg:?} links={} seed={seed}+{attempt}",
            c.cell,
            c.num_layers,
            c.dirs(),
            c.bias,
            links.keep.len(),
        );
        fd_all(c, &w, &inp, &up, links, &rg, &tag, chk);
        return;
    }
    panic!("no ReLU draw with margin {RELU_MARGIN} for seed {seed}");
}

fn report(what: &str, chk: &Checker) {
    eprintln!(
        "{what}: {} entries, worst relative error {:e} ({})",
        chk.count, chk.worst, chk.worst_what
    );
}

/// The new cells: 1–3 layers, uni/bidirectional, bias on/off, with and
/// without h0/c0, full and unequal lengths.
#[test]
fn finite_difference_cells() {
    let mut chk = Checker::new();
    let mut seed = 1000;
    for cell in [GRU, PROJ, IND_TANH, IND_RELU] {
        for layers in 1..=3 {
            for bidir in [false, true] {
                let bias = (layers + usize::from(bidir)) % 2 == 0;
                let c = cell_cfg(cell, layers, bidir, bias);
                let cases: [(usize, usize, bool, Option<Vec<usize>>); 3] = [
                    (4, 3, false, None),
                    (4, 3, true, Some(vec![4, 1, 3])),
                    (1, 2, true, None),
                ];
                for (t, b, st, lengths) in cases {
                    seed += 1;
                    let links = RefLinks::default();
                    fd_case(&c, t, b, st, lengths, Reg::None, &links, seed, &mut chk);
                }
            }
        }
    }
    // Bias off with a larger odd input size, and a projection to 1.
    let c = RefConfig {
        cell: RefCellKind::LstmProj { proj_size: 1 },
        ..cfg(5, 4, 2, true, false)
    };
    fd_case(
        &c,
        3,
        2,
        true,
        Some(vec![2, 3]),
        Reg::None,
        &RefLinks::default(),
        7,
        &mut chk,
    );
    report("finite differences of the cells", &chk);
}

/// Zoneout masks (train) and expectation (eval) on every cell, and
/// weight-drop masks with zoneout and dropout links between layers.
#[test]
fn finite_difference_zoneout_and_weight_drop() {
    let mut chk = Checker::new();
    let mut seed = 2000;
    let mut rng = Rng::new(5);
    for cell in ALL {
        for (q, reg) in [
            Reg::Zoneout(0.3, 0.5),
            Reg::ZoneoutEval(0.2, 0.6),
            Reg::WeightDrop(0.4),
        ]
        .into_iter()
        .enumerate()
        {
            let (layers, bidir) = [(2, true), (1, false), (3, false)][q];
            let c = cell_cfg(cell, layers, bidir, q != 1);
            let (t, b) = (4, 3);
            let n = t * b * c.dirs() * c.state_size();
            let links = RefLinks {
                dropout: 0.25,
                residual: q == 2,
                keep: (0..layers - 1)
                    .map(|_| (0..n).map(|_| rng.uniform(0.0, 1.0) >= 0.25).collect())
                    .collect(),
            };
            seed += 1;
            let lengths = (q != 1).then(|| vec![3, 4, 1]);
            fd_case(&c, t, b, q != 2, lengths, reg, &links, seed, &mut chk);
        }
    }
    report("finite differences with zoneout / weight-drop", &chk);
}

/// Weight-drop: entries of W_hh that the mask drops get exactly no
/// gradient, and the forward equals the plain one with W_hh ⊙ mask / (1 − p).
#[test]
fn weight_drop_is_masked_scaled_w_hh() {
    for cell in ALL {
        let c = cell_cfg(cell, 2, true, true);
        let mut rng = Rng::new(31);
        let w = random_weights(&c, &mut rng);
        let inp = make_inputs(&c, &mut rng, 4, 2, true, Some(vec![4, 2]));
        let up = make_upstream(&c, &mut rng, 4, 2);
        // p = 0.5: scaling by 1/(1 − p) is exact, so outputs compare exactly.
        let reg = make_reg(Reg::WeightDrop(0.5), &c, &w, 4, 2, &mut rng);
        let wd = reg.weight_drop.clone().unwrap();
        let reg = RefRecurrentReg {
            zoneout_h: RefZoneout::Off,
            ..reg
        };
        let mut scaled = w.clone();
        for (cw, m) in scaled.cells.iter_mut().zip(&wd.masks) {
            for (v, mv) in cw.w_hh.iter_mut().zip(m) {
                *v *= mv / (1.0 - wd.p);
            }
        }
        let links = RefLinks::default();
        let (a, g) = backward_reg(&c, &w, &inp, &up, &links, &reg);
        let (b, gs) = backward(&c, &scaled, &inp, &up);
        assert_eq!(a.output, b.output, "{cell:?}");
        assert_eq!(a.h_n, b.h_n, "{cell:?}");
        assert_eq!(g.input, gs.input, "{cell:?}");
        for ((gc, gsc), m) in g.weights.cells.iter().zip(&gs.weights.cells).zip(&wd.masks) {
            for (k, &mk) in m.iter().enumerate() {
                let want = gsc.w_hh[k] * mk / (1.0 - wd.p);
                assert!((gc.w_hh[k] - want).abs() <= 1e-15, "{cell:?} w_hh[{k}]");
                if mk == 0.0 {
                    assert_eq!(gc.w_hh[k], 0.0);
                }
            }
        }
    }
}

/// Zoneout extremes: masks of ones keep h0 (and c0) forever; masks of zeros
/// and the expectation with p = 0 are no zoneout.
#[test]
fn zoneout_extremes() {
    for cell in ALL {
        let c = cell_cfg(cell, 2, true, true);
        let (t, b) = (3, 2);
        let mut rng = Rng::new(41);
        let w = random_weights(&c, &mut rng);
        let inp = make_inputs(&c, &mut rng, t, b, true, Some(vec![3, 2]));
        let n = c.cells() * t * b;
        let c_n = if cell.has_c() { n * c.hidden_size } else { 0 };
        let links = RefLinks::default();
        let masks = |v: f64, len: usize| {
            if len == 0 {
                RefZoneout::Off
            } else {
                RefZoneout::Masks(vec![v; len])
            }
        };
        let keep_all = RefRecurrentReg {
            zoneout_h: masks(1.0, n * c.state_size()),
            zoneout_c: masks(1.0, c_n),
            weight_drop: None,
        };
        let out = forward_reg(&c, &w, &inp, &links, &keep_all);
        assert_eq!(&out.h_n, inp.h0.as_ref().unwrap(), "{cell:?}");
        if cell.has_c() {
            assert_eq!(&out.c_n, inp.c0.as_ref().unwrap(), "{cell:?}");
        }
        let plain = forward(&c, &w, &inp);
        for reg in [
            RefRecurrentReg {
                zoneout_h: masks(0.0, n * c.state_size()),
                zoneout_c: masks(0.0, c_n),
                weight_drop: None,
            },
            RefRecurrentReg {
                zoneout_h: RefZoneout::Expectation(0.0),
                ..Default::default()
            },
        ] {
            let z = forward_reg(&c, &w, &inp, &links, &reg);
            assert_eq!(z.output, plain.output, "{cell:?}");
            assert_eq!(z.h_n, plain.h_n, "{cell:?}");
            assert_eq!(z.c_n, plain.c_n, "{cell:?}");
        }
    }
}

/// One step of zoneout written out: h_1 = m h0 + (1 − m) cell(x, h0), and
/// the layer outputs that zoned-out h_1.
#[test]
fn zoneout_closed_form_step() {
    let c = cell_cfg(GRU, 1, false, true);
    let mut rng = Rng::new(3);
    let w = random_weights(&c, &mut rng);
    let inp = make_inputs(&c, &mut rng, 1, 1, true, None);
    let m = vec![1.0, 0.0, 0.25];
    let reg = RefRecurrentReg {
        zoneout_h: RefZoneout::Masks(m.clone()),
        ..Default::default()
    };
    let z = forward_reg(&c, &w, &inp, &RefLinks::default(), &reg);
    let plain = forward(&c, &w, &inp);
    let h0 = inp.h0.as_ref().unwrap();
    for j in 0..3 {
        let want = m[j] * h0[j] + (1.0 - m[j]) * plain.h_n[j];
        assert!((z.h_n[j] - want).abs() < 1e-15);
        assert_eq!(z.output[j], z.h_n[j]);
    }
}

fn one_cell(w_ih: Vec<f64>, w_hh: Vec<f64>, b_ih: Vec<f64>, b_hh: Vec<f64>) -> RefWeights {
    RefWeights {
        cells: vec![RefDirWeights {
            w_ih,
            w_hh,
            b_ih: Some(b_ih),
            b_hh: Some(b_hh),
            w_hr: None,
        }],
    }
}

fn one_step(
    c: &RefConfig,
    w: &RefWeights,
    x: f64,
    h0: Vec<f64>,
    c0: Option<Vec<f64>>,
) -> RefOutputs {
    let inp = RefInputs {
        seq_len: 1,
        batch: 1,
        x: vec![x],
        h0: Some(h0),
        c0,
        lengths: None,
    };
    forward(c, w, &inp)
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// Closed-form GRU step with H = 1: gate order r, z, n, and r multiplies
/// `W_hn h + b_hn` (not `W_hn h` alone, not the input part).
#[test]
fn gru_closed_form() {
    let c = RefConfig {
        cell: GRU,
        ..cfg(1, 1, 1, false, true)
    };
    let (wi, wh) = ([0.5, -0.3, 0.8], [0.2, 0.7, -0.6]);
    let (bi, bh) = ([0.1, -0.2, 0.3], [-0.4, 0.25, 0.15]);
    let w = one_cell(wi.to_vec(), wh.to_vec(), bi.to_vec(), bh.to_vec());
    let (x, h) = (0.9, -0.45);
    let out = one_step(&c, &w, x, vec![h], None);
    let r = sigmoid(wi[0] * x + bi[0] + wh[0] * h + bh[0]);
    let z = sigmoid(wi[1] * x + bi[1] + wh[1] * h + bh[1]);
    let n = (wi[2] * x + bi[2] + r * (wh[2] * h + bh[2])).tanh();
    let h1 = (1.0 - z) * n + z * h;
    assert!((out.h_n[0] - h1).abs() < 1e-15, "{} vs {h1}", out.h_n[0]);
    assert_eq!(out.output, out.h_n);
    assert!(out.c_n.is_empty());
}

/// Closed-form IndRNN steps with H = 2: `u` multiplies h elementwise.
#[test]
fn indrnn_closed_form() {
    let (wi, u, bi, bh) = ([0.5, -1.5], [0.8, -0.6], [0.1, 0.2], [-0.3, 0.05]);
    let w = one_cell(wi.to_vec(), u.to_vec(), bi.to_vec(), bh.to_vec());
    let (x, h) = (0.7, [0.4, 0.9]);
    for (act, f) in [
        (RefActivation::Relu, (|v: f64| v.max(0.0)) as fn(f64) -> f64),
        (RefActivation::Tanh, f64::tanh),
    ] {
        let c = RefConfig {
            cell: RefCellKind::IndRnn { act },
            ..cfg(1, 2, 1, false, true)
        };
        let out = one_step(&c, &w, x, h.to_vec(), None);
        for j in 0..2 {
            let want = f(wi[j] * x + bi[j] + u[j] * h[j] + bh[j]);
            assert!((out.h_n[j] - want).abs() < 1e-15, "{act:?} {j}");
        }
    }
    // The second unit's ReLU input is negative: exactly zero.
    let c = RefConfig {
        cell: IND_RELU,
        ..cfg(1, 2, 1, false, true)
    };
    assert_eq!(one_step(&c, &w, x, h.to_vec(), None).h_n[1], 0.0);
}

/// Closed-form projected LSTM step with H = 2, P = 1: h = W_hr (o tanh c),
/// `W_hh` is [4H, P] and c stays H wide.
#[test]
fn lstm_proj_closed_form() {
    let c = RefConfig {
        cell: RefCellKind::LstmProj { proj_size: 1 },
        ..cfg(1, 2, 1, false, true)
    };
    let wi: Vec<f64> = (0..8).map(|k| 0.1 * k as f64 - 0.35).collect();
    let wh: Vec<f64> = (0..8).map(|k| 0.3 - 0.07 * k as f64).collect();
    let bi: Vec<f64> = (0..8).map(|k| 0.05 * k as f64 - 0.2).collect();
    let bh = vec![0.02; 8];
    let w_hr = vec![0.6, -1.1];
    let mut w = one_cell(wi.clone(), wh.clone(), bi.clone(), bh.clone());
    w.cells[0].w_hr = Some(w_hr.clone());
    let (x, h, c0) = (0.8, -0.5, vec![0.3, -0.7]);
    let out = one_step(&c, &w, x, vec![h], Some(c0.clone()));
    let pre = |r: usize| wi[r] * x + bi[r] + wh[r] * h + bh[r];
    let mut hp = 0.0;
    for j in 0..2 {
        let (i, f) = (sigmoid(pre(j)), sigmoid(pre(2 + j)));
        let (g, o) = (pre(4 + j).tanh(), sigmoid(pre(6 + j)));
        let c1 = f * c0[j] + i * g;
        assert!((out.c_n[j] - c1).abs() < 1e-15);
        hp += w_hr[j] * o * c1.tanh();
    }
    assert!((out.h_n[0] - hp).abs() < 1e-15);
    assert_eq!(out.output, out.h_n);
}

/// Runs a small one-layer case of `cell`, with a `c0` when asked.
fn run_small(cell: RefCellKind, with_c0: bool, reg: RefRecurrentReg) {
    let c = cell_cfg(cell, 1, false, true);
    let mut rng = Rng::new(1);
    let w = random_weights(&c, &mut rng);
    let mut inp = make_inputs(&c, &mut rng, 2, 1, true, None);
    if with_c0 {
        inp.c0 = Some(vec![0.0; 3]);
    }
    forward_reg(&c, &w, &inp, &RefLinks::default(), &reg);
}

#[test]
#[should_panic(expected = "no c state, but c0 is given")]
fn gru_rejects_c0() {
    run_small(GRU, true, RefRecurrentReg::default());
}

#[test]
#[should_panic(expected = "no c state to zone out")]
fn indrnn_rejects_c_zoneout() {
    let reg = RefRecurrentReg {
        zoneout_c: RefZoneout::Expectation(0.5),
        ..Default::default()
    };
    run_small(IND_TANH, false, reg);
}

#[test]
fn shapes_follow_the_cell() {
    for (cell, g, whh, s) in [
        (RefCellKind::Lstm, 4, 4 * 3 * 3, 3),
        (PROJ, 4, 4 * 3 * 2, 2),
        (GRU, 3, 3 * 3 * 3, 3),
        (IND_RELU, 1, 3, 3),
    ] {
        let c = cell_cfg(cell, 2, true, true);
        let w = random_weights(&c, &mut Rng::new(2));
        assert_eq!(c.state_size(), s);
        assert_eq!(c.layer_input_size(1), 2 * s);
        assert_eq!(w.cells[2].w_ih.len(), g * 3 * 2 * s);
        assert_eq!(w.cells[2].w_hh.len(), whh);
        assert_eq!(w.cells[2].b_hh.as_ref().unwrap().len(), g * 3);
        assert_eq!(
            w.cells[2].w_hr.as_ref().map(Vec::len),
            (s == 2).then_some(6)
        );
        let inp = make_inputs(&c, &mut Rng::new(3), 3, 2, true, None);
        let out = forward(&c, &w, &inp);
        assert_eq!(out.output.len(), 3 * 2 * 2 * s);
        assert_eq!(out.h_n.len(), 4 * 2 * s);
        assert_eq!(out.c_n.len(), if cell.has_c() { 4 * 2 * 3 } else { 0 });
    }
}
