//! Normalization kernels between layers (`shaders/layer_norm.wgsl`,
//! `shaders/batch_norm.wgsl`) against straightforward f64 CPU
//! implementations of the spec's formulas: outputs, saved statistics,
//! running-statistic updates, dx, dw, db, in train and eval modes, with
//! variable lengths (padded rows hold garbage that must be ignored), offsets
//! in shared buffers, in-place operation and accumulation. The CPU
//! references' gradients are themselves checked by finite differences.
//! Tolerance: max |gpu - ref| / max |ref| <= 1e-4 per tensor.

mod common;

use common::gpu::*;

use common::{assert_close, ctx};
use lstm_wgpu::GpuContext;
use lstm_wgpu::kernels::batch_norm::{
    BatchNorm, BnBackward, BnForward, BnShape, check_train, group_counts,
};
use lstm_wgpu::kernels::layer_norm::{LayerNorm, LnBackward, LnForward, LnShape};
use lstm_wgpu_reference::Rng;

const TOL: f64 = 1e-4;
const EPS: f64 = 1e-5;

/// A [T, B, F] problem with per-sequence lengths.
#[derive(Clone, Debug)]
struct Dims {
    t: usize,
    b: usize,
    f: usize,
    lengths: Vec<usize>,
}

impl Dims {
    fn new(t: usize, b: usize, f: usize, lengths: &[usize]) -> Self {
        assert_eq!(lengths.len(), b);
        Self {
            t,
            b,
            f,
            lengths: lengths.to_vec(),
        }
    }
    fn rows(&self) -> usize {
        self.t * self.b
    }
    fn n(&self) -> usize {
        self.rows() * self.f
    }
    fn valid(&self, row: usize) -> bool {
        row / self.b < self.lengths[row % self.b]
    }
}

fn lengths_u32(d: &Dims) -> Vec<u32> {
    d.lengths.iter().map(|&l| l as u32).collect()
}

/// Σ over valid rows of y·gy: the loss whose gradients the backward computes.
fn loss(d: &Dims, y: &[f64], gy: &[f64]) -> f64 {
    (0..d.n())
        .filter(|i| d.valid(i / d.f))
        .map(|i| y[i] * gy[i])
        .sum()
}

// ---------------------------------------------------------------- LayerNorm

/// (y, stats [T, B, 2]) with zeros on padded rows.
fn ln_ref_fwd(d: &Dims, x: &[f64], w: &[f64], b: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let f = d.f;
    let mut y = vec![0.0; d.n()];
    let mut st = vec![0.0; 2 * d.rows()];
    for r in (0..d.rows()).filter(|&r| d.valid(r)) {
        let v = &x[r * f..(r + 1) * f];
        let mu = v.iter().sum::<f64>() / f as f64;
        let var = v.iter().map(|a| (a - mu).powi(2)).sum::<f64>() / f as f64;
        let rstd = 1.0 / (var + EPS).sqrt();
        for j in 0..f {
            y[r * f + j] = (v[j] - mu) * rstd * w[j] + b[j];
        }
        st[2 * r] = mu;
        st[2 * r + 1] = rstd;
    }
    (y, st)
}

/// (dx, dw, db).
fn ln_ref_bwd(d: &Dims, x: &[f64], dy: &[f64], w: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let f = d.f;
    let (_, st) = ln_ref_fwd(d, x, w, w);
    let mut dx = vec![0.0; d.n()];
    let mut dw = vec![0.0; f];
    let mut db = vec![0.0; f];
    for r in (0..d.rows()).filter(|&r| d.valid(r)) {
        let (mu, rstd) = (st[2 * r], st[2 * r + 1]);
        let xh: Vec<f64> = (0..f).map(|j| (x[r * f + j] - mu) * rstd).collect();
        let g: Vec<f64> = (0..f).map(|j| dy[r * f + j] * w[j]).collect();
        let m1 = g.iter().sum::<f64>() / f as f64;
        let m2 = (0..f).map(|j| g[j] * xh[j]).sum::<f64>() / f as f64;
        for j in 0..f {
            dx[r * f + j] = rstd * (g[j] - m1 - xh[j] * m2);
            dw[j] += dy[r * f + j] * xh[j];
            db[j] += dy[r * f + j];
        }
    }
    (dx, dw, db)
}

// ---------------------------------------------------------------- BatchNorm

#[derive(Clone, Copy, Debug)]
struct BnMode {
    per_step: bool,
    train: bool,
    run_rows: usize,
}

/// Valid rows of each group.
fn bn_groups(d: &Dims, per_step: bool) -> Vec<Vec<usize>> {
    let valid = |t: usize| (0..d.b).map(move |b| t * d.b + b).filter(|&r| d.valid(r));
    if per_step {
        (0..d.t).map(|t| valid(t).collect()).collect()
    } else {
        vec![(0..d.t).flat_map(valid).collect()]
    }
}

/// Running-stat row used by group g.
fn bn_run_row(m: BnMode, g: usize) -> usize {
    if m.per_step { g.min(m.run_rows - 1) } else { 0 }
}

/// Output of the BatchNorm reference forward.
struct BnRef {
    y: Vec<f64>,
    /// [G, F].
    mean: Vec<f64>,
    /// [G, F].
    rstd: Vec<f64>,
    /// Updated running statistics [run_rows, F].
    rm: Vec<f64>,
    rv: Vec<f64>,
}

fn bn_ref_fwd(
    d: &Dims,
    m: BnMode,
    x: &[f64],
    w: &[f64],
    b: &[f64],
    rm: &[f64],
    rv: &[f64],
) -> BnRef {
    let f = d.f;
    let groups = bn_groups(d, m.per_step);
    let mut out = BnRef {
        y: vec![0.0; d.n()],
        mean: vec![0.0; groups.len() * f],
        rstd: vec![0.0; groups.len() * f],
        rm: rm.to_vec(),
        rv: rv.to_vec(),
    };
    for (g, rows) in groups.iter().enumerate() {
        let n = rows.len() as f64;
        let rr = bn_run_row(m, g);
        for j in 0..f {
            let (mu, var) = if m.train {
                let mu = rows.iter().map(|r| x[r * f + j]).sum::<f64>() / n;
                let var = rows
                    .iter()
                    .map(|r| (x[r * f + j] - mu).powi(2))
                    .sum::<f64>()
                    / n;
                out.rm[rr * f + j] = 0.9 * rm[rr * f + j] + 0.1 * mu;
                out.rv[rr * f + j] = 0.9 * rv[rr * f + j] + 0.1 * var * n / (n - 1.0);
                (mu, var)
            } else {
                (rm[rr * f + j], rv[rr * f + j])
            };
            let rstd = 1.0 / (var + EPS).sqrt();
            out.mean[g * f + j] = mu;
            out.rstd[g * f + j] = rstd;
            for r in rows {
                out.y[r * f + j] = (x[r * f + j] - mu) * rstd * w[j] + b[j];
            }
        }
    }
    out
}

/// (dx, dw, db).
fn bn_ref_bwd(
    d: &Dims,
    m: BnMode,
    x: &[f64],
    dy: &[f64],
    w: &[f64],
    rm: &[f64],
    rv: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let f = d.f;
    let fw = bn_ref_fwd(d, m, x, w, w, rm, rv);
    let mut dx = vec![0.0; d.n()];
    let mut dw = vec![0.0; f];
    let mut db = vec![0.0; f];
    for (g, rows) in bn_groups(d, m.per_step).iter().enumerate() {
        let n = rows.len() as f64;
        for j in 0..f {
            let (mu, rstd) = (fw.mean[g * f + j], fw.rstd[g * f + j]);
            let xh = |r: usize| (x[r * f + j] - mu) * rstd;
            let s1: f64 = rows.iter().map(|&r| dy[r * f + j]).sum();
            let s2: f64 = rows.iter().map(|&r| dy[r * f + j] * xh(r)).sum();
            dw[j] += s2;
            db[j] += s1;
            for &r in rows {
                dx[r * f + j] = if m.train {
                    w[j] * rstd / n * (n * dy[r * f + j] - s1 - xh(r) * s2)
                } else {
                    dy[r * f + j] * w[j] * rstd
                };
            }
        }
    }
    (dx, dw, db)
}

// ------------------------------------------- finite differences of the refs

/// Central differences of `loss_of(v)` w.r.t. every index of `v` in `idx`,
/// against `analytic`.
fn fd_check(
    what: &str,
    v: &[f64],
    idx: impl Iterator<Item = usize>,
    analytic: &[f64],
    loss_of: impl Fn(&[f64]) -> f64,
) {
    let h = 1e-5;
    let mut p = v.to_vec();
    let scale = analytic.iter().fold(0f64, |m, a| m.max(a.abs())).max(1e-12);
    for i in idx {
        let v0 = p[i];
        p[i] = v0 + h;
        let lp = loss_of(&p);
        p[i] = v0 - h;
        let lm = loss_of(&p);
        p[i] = v0;
        let num = (lp - lm) / (2.0 * h);
        let err = (num - analytic[i]).abs() / scale;
        assert!(
            err < 1e-6,
            "{what}[{i}]: finite difference {num} vs analytic {}",
            analytic[i]
        );
    }
}

#[test]
fn references_match_finite_differences() {
    let mut rng = Rng::new(7);
    let d = Dims::new(4, 3, 5, &[4, 2, 3]);
    let x = rng.vec(d.n(), -1.0, 1.0);
    let gy = rng.vec(d.n(), -1.0, 1.0);
    let w = rng.vec(d.f, 0.5, 1.5);
    let b = rng.vec(d.f, -0.5, 0.5);
    let valid: Vec<usize> = (0..d.n()).filter(|i| d.valid(i / d.f)).collect();

    let (dx, dw, db) = ln_ref_bwd(&d, &x, &gy, &w);
    let ln_loss = |x: &[f64], w: &[f64], b: &[f64]| loss(&d, &ln_ref_fwd(&d, x, w, b).0, &gy);
    fd_check("LN dx", &x, valid.iter().copied(), &dx, |p| {
        ln_loss(p, &w, &b)
    });
    fd_check("LN dw", &w, 0..d.f, &dw, |p| ln_loss(&x, p, &b));
    fd_check("LN db", &b, 0..d.f, &db, |p| ln_loss(&x, &w, p));
    // Padded rows get no gradient and do not change the loss.
    for i in (0..d.n()).filter(|i| !d.valid(i / d.f)) {
        assert_eq!(dx[i], 0.0);
    }

    let rm = rng.vec(4 * d.f, -0.5, 0.5);
    let rv = rng.vec(4 * d.f, 0.5, 1.5);
    for per_step in [false, true] {
        for train in [true, false] {
            let m = BnMode {
                per_step,
                train,
                run_rows: 4,
            };
            let (dx, dw, db) = bn_ref_bwd(&d, m, &x, &gy, &w, &rm, &rv);
            let bn_loss = |x: &[f64], w: &[f64], b: &[f64]| {
                loss(&d, &bn_ref_fwd(&d, m, x, w, b, &rm, &rv).y, &gy)
            };
            let what = format!("BN per_step={per_step} train={train}");
            fd_check(&format!("{what} dx"), &x, valid.iter().copied(), &dx, |p| {
                bn_loss(p, &w, &b)
            });
            fd_check(&format!("{what} dw"), &w, 0..d.f, &dw, |p| {
                bn_loss(&x, p, &b)
            });
            fd_check(&format!("{what} db"), &b, 0..d.f, &db, |p| {
                bn_loss(&x, &w, p)
            });
        }
    }
}

// ------------------------------------------------------------- GPU: LayerNorm

fn ln_case(ctx: &GpuContext, ln: &LayerNorm, d: &Dims, seed: u64, in_place: bool) {
    let label = format!("LN {d:?} in_place={in_place}");
    let mut rng = Rng::new(seed);
    let (n, f) = (d.n(), d.f);
    // Padded rows of x and dy hold garbage that must not matter.
    let x = rand(&mut rng, n, -2.0, 2.0);
    let dy = rand(&mut rng, n, -1.0, 1.0);
    let w = rand(&mut rng, f, 0.5, 1.5);
    let b = rand(&mut rng, f, -0.5, 0.5);
    let (want_y, want_st) = ln_ref_fwd(d, &x, &w, &b);
    let (want_dx, want_dw, want_db) = ln_ref_bwd(d, &x, &dy, &w);

    let (xo, yo, so) = (3, 3 + n + 5, 2);
    let (wo, bo) = (7, 7 + f + 2);
    let (dwo, dbo) = (5 + f + 1, 1);
    let (dyo, dxo) = (2, if in_place { 2 } else { 4 });
    let act = upload(ctx, "act", &placed(yo + n + 3, 9.0, &[(xo, &x)]));
    let params = upload(
        ctx,
        "params",
        &placed(bo + f + 1, 5.0, &[(wo, &w), (bo, &b)]),
    );
    let lengths = upload(ctx, "lengths", &lengths_u32(d));
    let stats = upload(
        ctx,
        "stats",
        &vec![7.0f32; so + LayerNorm::stats_len(d.t, d.b)],
    );
    let g0 = rand(&mut rng, dwo + f + 2, -1.0, 1.0);
    let grads = upload(ctx, "grads", &f32s(&g0));
    let dyb = upload(ctx, "dy", &placed(dyo + n, 3.0, &[(dyo, &dy)]));
    let dxb = if in_place {
        None
    } else {
        Some(upload(ctx, "dx", &vec![8.0f32; dxo + n]))
    };
    let dxb = dxb.as_ref().unwrap_or(&dyb);

    let s = LnShape {
        seq: d.t,
        t0: 0,
        batch: d.b,
        features: f,
        x_off: xo,
        y_off: if in_place { xo } else { yo },
        dy_off: dyo,
        dx_off: dxo,
        stats_off: so,
        w_off: wo,
        b_off: bo,
        dw_off: dwo,
        db_off: dbo,
        accumulate: in_place,
    };
    let fwd = LnForward {
        params: &params,
        lengths: &lengths,
        x: &act,
        y: &act,
        stats: &stats,
    };
    run(ctx, &ln.forward(ctx, &s, &fwd).unwrap());
    let y = read(ctx, &act, s.y_off, n);
    assert_close(&format!("{label}: y"), &y, &want_y, TOL);
    let st = read(ctx, &stats, so, 2 * d.rows());
    assert_close(&format!("{label}: stats"), &st, &want_st, TOL);
    if in_place {
        // Restore x for the backward.
        ctx.write(&act, xo, &f32s(&x));
    } else {
        // x is untouched.
        assert_close(&format!("{label}: x"), &read(ctx, &act, xo, n), &x, 0.0);
    }

    let bwd = LnBackward {
        params: &params,
        lengths: &lengths,
        x: &act,
        stats: &stats,
        dy: &dyb,
        dx: dxb,
        grads: &grads,
    };
    let ds = ln.backward(ctx, &s, &bwd).unwrap();
    assert_eq!(ds.len(), 2);
    run(ctx, &ds);
    let dx = read(ctx, dxb, dxo, n);
    assert_close(&format!("{label}: dx"), &dx, &want_dx, TOL);
    let mut want_g = g0.clone();
    for j in 0..f {
        let acc = if in_place { 1.0 } else { 0.0 };
        want_g[dwo + j] = acc * g0[dwo + j] + want_dw[j];
        want_g[dbo + j] = acc * g0[dbo + j] + want_db[j];
    }
    let g = read(ctx, &grads, 0, want_g.len());
    assert_close(
        &format!("{label}: dw"),
        &g[dwo..dwo + f],
        &want_g[dwo..dwo + f],
        TOL,
    );
    assert_close(
        &format!("{label}: db"),
        &g[dbo..dbo + f],
        &want_g[dbo..dbo + f],
        TOL,
    );
    assert_close(&format!("{label}: grads"), &g, &want_g, TOL);
}

#[test]
fn layer_norm_matches_reference() {
    let ctx = ctx();
    let ln = LayerNorm::new(&ctx);
    let cases = [
        Dims::new(1, 1, 13, &[1]),
        Dims::new(5, 3, 13, &[2, 5, 4]),
        Dims::new(7, 5, 64, &[3, 7, 1, 6, 2]),
        Dims::new(4, 2, 64, &[4, 4]),
        Dims::new(3, 4, 130, &[1, 3, 2, 3]),
    ];
    for (i, d) in cases.iter().enumerate() {
        ln_case(&ctx, &ln, d, 100 + i as u64, false);
        ln_case(&ctx, &ln, d, 200 + i as u64, true);
    }
}

// ------------------------------------------------------------- GPU: BatchNorm

fn bn_case(ctx: &GpuContext, bn: &BatchNorm, d: &Dims, m: BnMode, seed: u64, in_place: bool) {
    let label = format!("BN {d:?} {m:?} in_place={in_place}");
    let mut rng = Rng::new(seed);
    let (n, f) = (d.n(), d.f);
    let x = rand(&mut rng, n, -2.0, 2.0);
    let dy = rand(&mut rng, n, -1.0, 1.0);
    let w = rand(&mut rng, f, 0.5, 1.5);
    let b = rand(&mut rng, f, -0.5, 0.5);
    let run_rows = if m.per_step { m.run_rows } else { 1 };
    let rm = rand(&mut rng, run_rows * f, -0.5, 0.5);
    let rv = rand(&mut rng, run_rows * f, 0.5, 1.5);
    let want = bn_ref_fwd(d, m, &x, &w, &b, &rm, &rv);
    let (want_dx, want_dw, want_db) = bn_ref_bwd(d, m, &x, &dy, &w, &rm, &rv);

    let (xo, yo, so) = (3, 3 + n + 5, 2);
    let (wo, bo) = (7, 7 + f + 2);
    let (dwo, dbo) = (5 + f + 1, 1);
    let (dyo, dxo) = (2, if in_place { 2 } else { 4 });
    let (rmo, rvo) = (1 + run_rows * f + 3, 1);
    let act = upload(ctx, "act", &placed(yo + n + 3, 9.0, &[(xo, &x)]));
    let params = upload(
        ctx,
        "params",
        &placed(bo + f + 1, 5.0, &[(wo, &w), (bo, &b)]),
    );
    let lengths = upload(ctx, "lengths", &lengths_u32(d));
    let s = BnShape {
        seq: d.t,
        batch: d.b,
        features: f,
        per_step: m.per_step,
        train: m.train,
        run_rows: m.run_rows,
        x_off: xo,
        y_off: if in_place { xo } else { yo },
        dy_off: dyo,
        dx_off: dxo,
        stats_off: so,
        w_off: wo,
        b_off: bo,
        dw_off: dwo,
        db_off: dbo,
        rm_off: rmo,
        rv_off: rvo,
        accumulate: in_place,
    };
    let stats = upload(ctx, "stats", &vec![7.0f32; so + BatchNorm::stats_len(&s)]);
    let run0 = placed(rmo + run_rows * f + 2, 4.0, &[(rmo, &rm), (rvo, &rv)]);
    let running = upload(ctx, "running", &run0);
    let g0 = rand(&mut rng, dwo + f + 2, -1.0, 1.0);
    let grads = upload(ctx, "grads", &f32s(&g0));
    let dyb = upload(ctx, "dy", &placed(dyo + n, 3.0, &[(dyo, &dy)]));
    let dxb = if in_place {
        None
    } else {
        Some(upload(ctx, "dx", &vec![8.0f32; dxo + n]))
    };
    let dxb = dxb.as_ref().unwrap_or(&dyb);

    let fwd = BnForward {
        params: &params,
        lengths: &lengths,
        x: &act,
        y: &act,
        stats: &stats,
        running: &running,
    };
    let ds = bn.forward(ctx, &s, &fwd).unwrap();
    assert_eq!(ds.len(), 1);
    run(ctx, &ds);
    let y = read(ctx, &act, s.y_off, n);
    assert_close(&format!("{label}: y"), &y, &want.y, TOL);
    let g = s.groups();
    let st = read(ctx, &stats, so, 6 * g * f);
    let slot = |k: usize| -> Vec<f32> {
        (0..g)
            .flat_map(|gi| st[(6 * gi + k) * f..(6 * gi + k + 1) * f].to_vec())
            .collect()
    };
    // The saved mean is split into the rounded mean and its residual.
    let mean: Vec<f32> = slot(0).iter().zip(slot(3)).map(|(m, c)| m + c).collect();
    assert_close(&format!("{label}: saved mean"), &mean, &want.mean, TOL);
    if !m.train {
        assert!(slot(3).iter().all(|&c| c == 0.0), "{label}: eval residual");
    }
    assert_close(&format!("{label}: saved rstd"), &slot(1), &want.rstd, TOL);
    let counts: Vec<f64> = group_counts(&d.lengths, d.t, m.per_step)
        .iter()
        .flat_map(|&c| vec![c as f64; f])
        .collect();
    assert_close(&format!("{label}: saved N"), &slot(2), &counts, 0.0);
    // Running statistics: updated in train mode (rows of groups only),
    // untouched in eval mode; nothing around them changes.
    let want_run = placed(
        rmo + run_rows * f + 2,
        4.0,
        &[(rmo, &want.rm), (rvo, &want.rv)],
    );
    let want_run: Vec<f64> = want_run.iter().map(|&v| v as f64).collect();
    let got_run = read(ctx, &running, 0, want_run.len());
    assert_close(
        &format!("{label}: running mean"),
        &got_run[rmo..rmo + run_rows * f],
        &want_run[rmo..rmo + run_rows * f],
        TOL,
    );
    assert_close(
        &format!("{label}: running var"),
        &got_run[rvo..rvo + run_rows * f],
        &want_run[rvo..rvo + run_rows * f],
        TOL,
    );
    assert_close(
        &format!("{label}: running buffer"),
        &got_run,
        &want_run,
        TOL,
    );
    if m.train && m.per_step {
        // Rows at and past T keep their exact values.
        for i in d.t * f..run_rows * f {
            assert_eq!(
                got_run[rmo + i],
                run0[rmo + i],
                "{label}: running mean [{i}]"
            );
            assert_eq!(
                got_run[rvo + i],
                run0[rvo + i],
                "{label}: running var [{i}]"
            );
        }
    }
    if in_place {
        ctx.write(&act, xo, &f32s(&x));
    } else {
        assert_close(&format!("{label}: x"), &read(ctx, &act, xo, n), &x, 0.0);
    }

    let bwd = BnBackward {
        params: &params,
        lengths: &lengths,
        x: &act,
        stats: &stats,
        dy: &dyb,
        dx: dxb,
        grads: &grads,
    };
    let ds = bn.backward(ctx, &s, &bwd).unwrap();
    assert_eq!(ds.len(), 2);
    run(ctx, &ds);
    let dx = read(ctx, dxb, dxo, n);
    // Train-mode dx is w·rstd times a difference of terms of the size of dy
    // that cancel to eps-sized values when every group has 2 rows: f32 can
    // only be accurate relative to the terms then (PyTorch's too).
    let terms = (0..n)
        .filter(|i| d.valid(i / f))
        .map(|i| {
            let g = if m.per_step { i / f / d.b } else { 0 };
            (w[i % f] * want.rstd[g * f + i % f] * dy[i]).abs()
        })
        .fold(0f64, f64::max);
    let dx_max = want_dx.iter().fold(0f64, |a, v| a.max(v.abs()));
    if m.train && dx_max < 1e-2 * terms {
        let err = dx
            .iter()
            .zip(&want_dx)
            .fold(0f64, |a, (g, r)| a.max((*g as f64 - r).abs()));
        assert!(
            err <= TOL * terms,
            "{label}: dx error {err:e} > {TOL:e} x term scale {terms:e}"
        );
    } else {
        assert_close(&format!("{label}: dx"), &dx, &want_dx, TOL);
    }
    let mut want_g = g0.clone();
    for j in 0..f {
        let acc = if in_place { 1.0 } else { 0.0 };
        want_g[dwo + j] = acc * g0[dwo + j] + want_dw[j];
        want_g[dbo + j] = acc * g0[dbo + j] + want_db[j];
    }
    let gr = read(ctx, &grads, 0, want_g.len());
    assert_close(
        &format!("{label}: dw"),
        &gr[dwo..dwo + f],
        &want_g[dwo..dwo + f],
        TOL,
    );
    assert_close(
        &format!("{label}: db"),
        &gr[dbo..dbo + f],
        &want_g[dbo..dbo + f],
        TOL,
    );
    assert_close(&format!("{label}: grads"), &gr, &want_g, TOL);
}

#[test]
fn sequence_batch_norm_matches_reference() {
    let ctx = ctx();
    let bn = BatchNorm::new(&ctx);
    let cases = [
        Dims::new(2, 1, 13, &[2]),
        Dims::new(3, 1, 13, &[3]),
        Dims::new(5, 3, 13, &[2, 5, 1]),
        Dims::new(7, 5, 64, &[3, 7, 1, 6, 2]),
        Dims::new(1, 4, 64, &[1, 1, 1, 1]),
    ];
    let mut seed = 300;
    for d in &cases {
        for train in [true, false] {
            let m = BnMode {
                per_step: false,
                train,
                run_rows: 1,
            };
            for in_place in [false, true] {
                bn_case(&ctx, &bn, d, m, seed, in_place);
                seed += 1;
            }
        }
    }
}

#[test]
fn step_batch_norm_matches_reference() {
    let ctx = ctx();
    let bn = BatchNorm::new(&ctx);
    // Train: every time step needs at least 2 valid sequences; groups of
    // exactly 2 (xhat = ±sqrt(var / (var + eps)), dx an eps-sized
    // difference of large terms) are the numerically hardest case.
    let train_cases = [
        (Dims::new(1, 2, 13, &[1, 1]), 1),
        (Dims::new(1, 3, 13, &[1, 1, 1]), 1),
        (Dims::new(5, 4, 13, &[5, 3, 5, 2]), 5),
        (Dims::new(3, 5, 64, &[3, 3, 1, 2, 3]), 6),
        (Dims::new(4, 3, 64, &[4, 2, 4]), 4),
    ];
    // Eval: any lengths, T beyond the running statistics' rows.
    let eval_cases = [
        (Dims::new(7, 3, 13, &[7, 2, 5]), 4),
        (Dims::new(6, 5, 64, &[1, 6, 3, 6, 2]), 2),
        (Dims::new(2, 1, 13, &[2]), 5),
        (Dims::new(3, 2, 64, &[3, 1]), 1),
    ];
    let mut seed = 400;
    for (train, cases) in [(true, &train_cases[..]), (false, &eval_cases[..])] {
        for (d, run_rows) in cases {
            let m = BnMode {
                per_step: true,
                train,
                run_rows: *run_rows,
            };
            for in_place in [false, true] {
                bn_case(&ctx, &bn, d, m, seed, in_place);
                seed += 1;
            }
        }
    }
}

#[test]
fn batch_norm_host_checks() {
    assert_eq!(group_counts(&[3, 1, 2], 3, true), vec![3, 2, 1]);
    assert_eq!(group_counts(&[3, 1, 2], 3, false), vec![6]);
    assert_eq!(group_counts(&[5, 1], 3, false), vec![4]);
    assert!(check_train(&[3, 3], 3, true, 8).is_ok());
    assert!(check_train(&[1], 1, false, 8).is_err());
    assert!(check_train(&[2], 2, false, 8).is_ok());
    let e = check_train(&[3, 1, 2], 3, true, 8).unwrap_err().to_string();
    assert!(
        e.contains("Expected more than 1 value per channel when training"),
        "{e}"
    );
    assert!(e.contains("[1, 8]") && e.contains("step 2"), "{e}");

    // Per-step train with T beyond the running statistics is refused.
    let ctx = ctx();
    let bn = BatchNorm::new(&ctx);
    let buf = ctx.storage("any", 64).unwrap();
    let s = BnShape {
        seq: 3,
        batch: 2,
        features: 4,
        per_step: true,
        train: true,
        run_rows: 2,
        ..Default::default()
    };
    let fwd = BnForward {
        params: &buf,
        lengths: &buf,
        x: &buf,
        y: &buf,
        stats: &buf,
        running: &buf,
    };
    let e = bn
        .forward(&ctx, &s, &fwd)
        .expect_err("must fail")
        .to_string();
    assert!(e.contains("exceeds"), "{e}");
    // Eval mode accepts it.
    let s = BnShape { train: false, ..s };
    assert_eq!(bn.forward(&ctx, &s, &fwd).unwrap().len(), 1);
}
