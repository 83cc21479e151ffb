//! The BatchNorm kernel between layers (`shaders/batch_norm.wgsl`), over
//! the whole sequence and per time step, against a straightforward f64 CPU
//! implementation of the spec's formulas: outputs, saved statistics,
//! running-statistic updates, dx, dw, db, in train and eval modes, with
//! variable lengths (padded rows hold garbage that must be ignored), offsets
//! in shared buffers, in-place operation and accumulation; and the host-side
//! checks of training shapes. The CPU reference's gradients are themselves
//! checked by finite differences. Tolerance: max |gpu - ref| / max |ref| <=
//! 1e-4 per tensor.

mod common;

use common::gpu::*;
use common::rows::*;

use common::{assert_close, ctx};
use lstm_wgpu::GpuContext;
use lstm_wgpu::kernels::batch_norm::{
    BatchNorm, BnBackward, BnForward, BnShape, check_train, group_counts,
};
use lstm_wgpu_reference::Rng;

const TOL: f64 = 1e-4;
const EPS: f64 = 1e-5;

#[derive(Clone, Copy, Debug)]
struct BnMode {
    per_step: bool,
    train: bool,
    run_rows: usize,
    /// Eval: the stream position of step 0.
    t0: usize,
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
    let g = if m.train { g } else { m.t0 + g };
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

#[test]
fn batch_norm_reference_matches_finite_differences() {
    let FdProblem {
        d,
        x,
        gy,
        w,
        b,
        valid,
        mut rng,
    } = FdProblem::new();
    let rm = rng.vec(4 * d.f, -0.5, 0.5);
    let rv = rng.vec(4 * d.f, 0.5, 1.5);
    for per_step in [false, true] {
        for train in [true, false] {
            let m = BnMode {
                per_step,
                train,
                run_rows: 4,
                t0: 0,
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

fn bn_case(ctx: &GpuContext, bn: &BatchNorm, d: &Dims, m: BnMode, seed: u64, in_place: bool) {
    let label = format!("BN {d:?} {m:?} in_place={in_place}");
    let mut rng = Rng::new(seed);
    let (n, f) = (d.n(), d.f);
    let h = RowInputs::draw(&mut rng, d);
    let (x, dy, w, b) = (&h.x, &h.dy, &h.w, &h.b);
    let run_rows = if m.per_step { m.run_rows } else { 1 };
    let rm = rand(&mut rng, run_rows * f, -0.5, 0.5);
    let rv = rand(&mut rng, run_rows * f, 0.5, 1.5);
    let want = bn_ref_fwd(d, m, x, w, b, &rm, &rv);
    let (want_dx, want_dw, want_db) = bn_ref_bwd(d, m, x, dy, w, &rm, &rv);

    let o = Offsets::new(d, in_place);
    let (rmo, rvo) = (1 + run_rows * f + 3, 1);
    let s = BnShape {
        seq: d.t,
        batch: d.b,
        features: f,
        per_step: m.per_step,
        train: m.train,
        run_rows: m.run_rows,
        t0: m.t0,
        x_off: o.x,
        y_off: o.y(),
        dy_off: o.dy,
        dx_off: o.dx,
        stats_off: o.stats,
        w_off: o.w,
        b_off: o.b,
        dw_off: o.dw,
        db_off: o.db,
        rm_off: rmo,
        rv_off: rvo,
        accumulate: in_place,
    };
    let stats = upload(
        ctx,
        "stats",
        &vec![7.0f32; o.stats + BatchNorm::stats_len(&s)],
    );
    let run0 = placed(rmo + run_rows * f + 2, 4.0, &[(rmo, &rm), (rvo, &rv)]);
    let running = upload(ctx, "running", &run0);
    let g0 = rand(&mut rng, o.dw + f + 2, -1.0, 1.0);
    let bufs = RowBuffers::new(ctx, d, &o, &h, &g0);

    let fwd = BnForward {
        params: &bufs.params,
        lengths: &bufs.lengths,
        x: &bufs.act,
        y: &bufs.act,
        stats: &stats,
        running: &running,
    };
    let ds = bn.forward(ctx, &s, &fwd).unwrap();
    assert_eq!(ds.len(), 1);
    run(ctx, &ds);
    let y = read(ctx, &bufs.act, s.y_off, n);
    assert_close(&format!("{label}: y"), &y, &want.y, TOL);
    let g = s.groups();
    let st = read(ctx, &stats, o.stats, 6 * g * f);
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
    bufs.check_x_and_restore(ctx, &label, &o, x);

    let bwd = BnBackward {
        params: &bufs.params,
        lengths: &bufs.lengths,
        x: &bufs.act,
        stats: &stats,
        dy: &bufs.dy,
        dx: bufs.dx(),
        grads: &bufs.grads,
    };
    let ds = bn.backward(ctx, &s, &bwd).unwrap();
    assert_eq!(ds.len(), 2);
    run(ctx, &ds);
    let dx = read(ctx, bufs.dx(), o.dx, n);
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
    bufs.check_param_grads(ctx, &label, &o, &g0, (&want_dw, &want_db), TOL);
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
                t0: 0,
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
            // Eval also from a later stream position (generation).
            for t0 in if train { &[0][..] } else { &[0, 1, 3][..] } {
                let m = BnMode {
                    per_step: true,
                    train,
                    run_rows: *run_rows,
                    t0: *t0,
                };
                for in_place in [false, true] {
                    bn_case(&ctx, &bn, d, m, seed, in_place);
                    seed += 1;
                }
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
