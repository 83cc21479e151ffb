//! Helpers of the reference's own tests: random cases, finite differences
//! and comparisons.
#![allow(dead_code)]

use lstm_wgpu_reference::{
    RefCellKind, RefConfig, RefInputs, RefLinks, RefRecurrentReg, RefUpstream, RefWeights, Rng,
    backward_reg, forward_reg, loss,
};

/// Relative tolerance of an analytic gradient against finite differences.
pub const TOL: f64 = 1e-6;
/// Step of the central differences.
pub const EPS: f64 = 1e-6;

pub fn cfg(i: usize, h: usize, l: usize, bidir: bool, bias: bool) -> RefConfig {
    RefConfig {
        input_size: i,
        hidden_size: h,
        num_layers: l,
        bidirectional: bidir,
        bias,
        ..Default::default()
    }
}

/// Values of `h0` / `h_n`.
pub fn state_len(c: &RefConfig, b: usize) -> usize {
    c.cells() * b * c.state_size()
}

/// Values of `c0` / `c_n` (0 for cells without `c`).
pub fn c_state_len(c: &RefConfig, b: usize) -> usize {
    if c.cell.has_c() {
        c.cells() * b * c.hidden_size
    } else {
        0
    }
}

pub fn make_inputs(
    c: &RefConfig,
    rng: &mut Rng,
    t: usize,
    b: usize,
    with_state: bool,
    lengths: Option<Vec<usize>>,
) -> RefInputs {
    let (sl, cl) = (state_len(c, b), c_state_len(c, b));
    RefInputs {
        seq_len: t,
        batch: b,
        x: rng.vec(t * b * c.input_size, -1.0, 1.0),
        h0: with_state.then(|| rng.vec(sl, -1.0, 1.0)),
        c0: (with_state && c.cell.has_c()).then(|| rng.vec(cl, -1.0, 1.0)),
        lengths,
    }
}

pub fn make_upstream(c: &RefConfig, rng: &mut Rng, t: usize, b: usize) -> RefUpstream {
    let sl = state_len(c, b);
    RefUpstream {
        grad_output: rng.vec(t * b * c.dirs() * c.state_size(), -1.0, 1.0),
        grad_h_n: rng.vec(sl, -1.0, 1.0),
        grad_c_n: rng.vec(c_state_len(c, b), -1.0, 1.0),
    }
}

/// Tracks the worst mixed relative error seen.
pub struct Checker {
    pub worst: f64,
    pub worst_what: String,
    pub count: usize,
    /// Entries that needed the Richardson extrapolation.
    pub extrapolated: usize,
}

impl Checker {
    pub fn new() -> Self {
        Checker {
            worst: 0.0,
            worst_what: String::new(),
            count: 0,
            extrapolated: 0,
        }
    }

    /// Mixed relative error (absolute below 1e-2).
    pub fn rel(analytic: f64, numeric: f64) -> f64 {
        (analytic - numeric).abs() / analytic.abs().max(numeric.abs()).max(1e-2)
    }

    pub fn check(&mut self, what: &dyn Fn() -> String, analytic: f64, numeric: f64) {
        let err = Self::rel(analytic, numeric);
        assert!(
            err < TOL,
            "{}: analytic {analytic:e} vs numeric {numeric:e} (rel err {err:e})",
            what()
        );
        if err > self.worst {
            self.worst = err;
            self.worst_what = what();
        }
        self.count += 1;
    }
}

/// Central difference with step `h` of the loss w.r.t. `get(state)[k]`.
pub fn central<S: Clone>(
    base: &S,
    k: usize,
    h: f64,
    get: &impl Fn(&mut S) -> &mut Vec<f64>,
    eval: &impl Fn(&S) -> f64,
) -> f64 {
    let mut s = base.clone();
    let v = get(&mut s)[k];
    get(&mut s)[k] = v + h;
    let lp = eval(&s);
    get(&mut s)[k] = v - h;
    let lm = eval(&s);
    (lp - lm) / (2.0 * h)
}

/// Central difference of the loss w.r.t. `get(state)[k]` (step `EPS`).
pub fn fd<S: Clone>(
    base: &S,
    k: usize,
    get: impl Fn(&mut S) -> &mut Vec<f64>,
    eval: impl Fn(&S) -> f64,
) -> f64 {
    central(base, k, EPS, &get, &eval)
}

/// Checks `analytic` against the central difference with step `EPS`; where
/// they differ by more than `TOL/10`, also against the Richardson
/// extrapolation of the steps `EPS/2` and `EPS/4` (truncation error O(EPS⁴)
/// instead of O(EPS²)) and keeps the closer of the two. This matters
/// where a norm sees a constant vector, e.g. `LN(W_hh · 0)` at the first
/// step without `h0`: the gradient carries a `1/sqrt(eps)` factor and the
/// plain central difference is off by ~1e-4 relative (converging as EPS²).
#[allow(clippy::too_many_arguments)]
pub fn fd_cmp<S: Clone>(
    chk: &mut Checker,
    what: &dyn Fn() -> String,
    analytic: f64,
    base: &S,
    k: usize,
    get: impl Fn(&mut S) -> &mut Vec<f64>,
    eval: impl Fn(&S) -> f64,
) {
    let d1 = central(base, k, EPS, &get, &eval);
    if Checker::rel(analytic, d1) < 0.1 * TOL {
        chk.check(what, analytic, d1);
        return;
    }
    let d2 = central(base, k, 0.5 * EPS, &get, &eval);
    let d4 = central(base, k, 0.25 * EPS, &get, &eval);
    let extrapolated = (4.0 * d4 - d2) / 3.0;
    // Rounding noise grows as the step shrinks, truncation error falls:
    // keep whichever estimate is closer (both must be far off to fail).
    if Checker::rel(analytic, extrapolated) < Checker::rel(analytic, d1) {
        chk.extrapolated += 1;
        chk.check(what, analytic, extrapolated);
    } else {
        chk.check(what, analytic, d1);
    }
}

pub fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: length");
    for (k, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol, "{what}[{k}]: {x} vs {y}");
    }
}

/// Slices `[L*D, B, H]` state of batch element `b` into a `[L*D, 1, H]` state.
pub fn state_of(s: &[f64], cells: usize, batch: usize, b: usize, h: usize) -> Vec<f64> {
    (0..cells)
        .flat_map(|cell| s[(cell * batch + b) * h..(cell * batch + b + 1) * h].to_vec())
        .collect()
}

/// `y += W x` with `W: [y.len(), x.len()]`, written out for hand-made checks.
pub fn matvec_acc(y: &mut [f64], w: &[f64], x: &[f64]) {
    for (yi, row) in y.iter_mut().zip(w.chunks_exact(x.len())) {
        *yi += row.iter().zip(x).map(|(a, b)| a * b).sum::<f64>();
    }
}

/// Checks every gradient of `backward_reg` (input, h0, c0 when the cell has
/// one, every weight) against central finite differences of `forward_reg`;
/// input gradients at padded positions must be exactly zero.
#[allow(clippy::too_many_arguments)]
pub fn fd_all(
    c: &RefConfig,
    w: &RefWeights,
    inp: &RefInputs,
    up: &RefUpstream,
    links: &RefLinks,
    reg: &RefRecurrentReg,
    tag: &str,
    chk: &mut Checker,
) {
    let forward = |w: &RefWeights, inp: &RefInputs| forward_reg(c, w, inp, links, reg);
    let (out, g) = backward_reg(c, w, inp, up, links, reg);
    let fwd = forward(w, inp);
    assert_eq!(out.output, fwd.output);
    assert_eq!(out.h_n, fwd.h_n);
    assert_eq!(out.c_n, fwd.c_n);
    let (t, b) = (inp.seq_len, inp.batch);

    // Input gradient; exactly zero at padded positions.
    let lens = inp.lengths.clone().unwrap_or(vec![t; b]);
    assert_eq!(g.input.len(), inp.x.len());
    let eval_in = |s: &RefInputs| loss(&forward(w, s), up);
    for k in 0..inp.x.len() {
        let (tt, bb) = (k / (b * c.input_size), (k / c.input_size) % b);
        let num = fd(inp, k, |s| &mut s.x, eval_in);
        if tt >= lens[bb] {
            assert_eq!(g.input[k], 0.0, "{tag}: padded input grad {k}");
            assert_eq!(num, 0.0, "{tag}: padded input numeric grad {k}");
        } else {
            chk.check(&|| format!("{tag}: input[{k}]"), g.input[k], num);
        }
    }

    // Initial state gradients (w.r.t. zeros when h0/c0 are absent).
    let (sl, cl) = (state_len(c, b), c_state_len(c, b));
    let mut inp_s = inp.clone();
    inp_s.h0.get_or_insert_with(|| vec![0.0; sl]);
    if c.cell.has_c() {
        inp_s.c0.get_or_insert_with(|| vec![0.0; cl]);
    }
    assert_eq!(g.h0.len(), sl);
    assert_eq!(g.c0.len(), cl);
    for k in 0..sl {
        let nh = fd(&inp_s, k, |s| s.h0.as_mut().unwrap(), eval_in);
        chk.check(&|| format!("{tag}: h0[{k}]"), g.h0[k], nh);
    }
    for k in 0..cl {
        let nc = fd(&inp_s, k, |s| s.c0.as_mut().unwrap(), eval_in);
        chk.check(&|| format!("{tag}: c0[{k}]"), g.c0[k], nc);
    }

    // Parameter gradients.
    let eval_w = |s: &RefWeights| loss(&forward(s, inp), up);
    assert_eq!(g.weights.cells.len(), w.cells.len());
    for (ci, gc) in g.weights.cells.iter().enumerate() {
        assert_eq!(gc.b_ih.is_some(), c.bias);
        assert_eq!(gc.b_hh.is_some(), c.bias);
        assert_eq!(gc.w_hr.is_some(), w.cells[ci].w_hr.is_some());
        let mut check =
            |name: &str, got: &[f64], get: &dyn Fn(&mut RefWeights) -> &mut Vec<f64>| {
                for (k, &a) in got.iter().enumerate() {
                    let n = fd(w, k, get, eval_w);
                    chk.check(&|| format!("{tag}: cell {ci} {name}[{k}]"), a, n);
                }
            };
        check("w_ih", &gc.w_ih, &|s| &mut s.cells[ci].w_ih);
        check("w_hh", &gc.w_hh, &|s| &mut s.cells[ci].w_hh);
        if let Some(gr) = &gc.w_hr {
            check("w_hr", gr, &|s| s.cells[ci].w_hr.as_mut().unwrap());
        }
        if let (Some(gbi), Some(gbh)) = (&gc.b_ih, &gc.b_hh) {
            // Only GRU's n gate sees b_hn apart from b_in (behind r).
            if c.cell != RefCellKind::Gru {
                assert_eq!(gbi, gbh, "{tag}: b_ih and b_hh grads must match");
            }
            check("b_ih", gbi, &|s| s.cells[ci].b_ih.as_mut().unwrap());
            check("b_hh", gbh, &|s| s.cells[ci].b_hh.as_mut().unwrap());
        }
    }
}
