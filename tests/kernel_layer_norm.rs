//! The LayerNorm kernel between layers (`shaders/layer_norm.wgsl`) against
//! a straightforward f64 CPU implementation of the spec's formulas:
//! outputs, saved statistics, dx, dw, db, with variable lengths (padded rows
//! hold garbage that must be ignored), offsets in shared buffers, in-place
//! operation and accumulation. The CPU reference's gradients are themselves
//! checked by finite differences. Tolerance: max |gpu - ref| / max |ref| <=
//! 1e-4 per tensor.

mod common;

use common::gpu::*;
use common::rows::*;

use common::{assert_close, ctx};
use lstm_wgpu::GpuContext;
use lstm_wgpu::kernels::layer_norm::{LayerNorm, LnBackward, LnForward, LnShape};
use lstm_wgpu_reference::Rng;

const TOL: f64 = 1e-4;
const EPS: f64 = 1e-5;

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

#[test]
fn layer_norm_reference_matches_finite_differences() {
    let FdProblem {
        d,
        x,
        gy,
        w,
        b,
        valid,
        ..
    } = FdProblem::new();
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
}

fn ln_case(ctx: &GpuContext, ln: &LayerNorm, d: &Dims, seed: u64, in_place: bool) {
    let label = format!("LN {d:?} in_place={in_place}");
    let mut rng = Rng::new(seed);
    let (n, f) = (d.n(), d.f);
    let h = RowInputs::draw(&mut rng, d);
    let (want_y, want_st) = ln_ref_fwd(d, &h.x, &h.w, &h.b);
    let (want_dx, want_dw, want_db) = ln_ref_bwd(d, &h.x, &h.dy, &h.w);

    let o = Offsets::new(d, in_place);
    let g0 = rand(&mut rng, o.dw + f + 2, -1.0, 1.0);
    let bufs = RowBuffers::new(ctx, d, &o, &h, &g0);
    let stats = upload(
        ctx,
        "stats",
        &vec![7.0f32; o.stats + LayerNorm::stats_len(d.t, d.b)],
    );

    let s = LnShape {
        seq: d.t,
        t0: 0,
        batch: d.b,
        features: f,
        x_off: o.x,
        y_off: o.y(),
        dy_off: o.dy,
        dx_off: o.dx,
        stats_off: o.stats,
        w_off: o.w,
        b_off: o.b,
        dw_off: o.dw,
        db_off: o.db,
        accumulate: in_place,
    };
    let fwd = LnForward {
        params: &bufs.params,
        lengths: &bufs.lengths,
        x: &bufs.act,
        y: &bufs.act,
        stats: &stats,
    };
    run(ctx, &ln.forward(ctx, &s, &fwd).unwrap());
    let y = read(ctx, &bufs.act, s.y_off, n);
    assert_close(&format!("{label}: y"), &y, &want_y, TOL);
    let st = read(ctx, &stats, o.stats, 2 * d.rows());
    assert_close(&format!("{label}: stats"), &st, &want_st, TOL);
    bufs.check_x_and_restore(ctx, &label, &o, &h.x);

    let bwd = LnBackward {
        params: &bufs.params,
        lengths: &bufs.lengths,
        x: &bufs.act,
        stats: &stats,
        dy: &bufs.dy,
        dx: bufs.dx(),
        grads: &bufs.grads,
    };
    let ds = ln.backward(ctx, &s, &bwd).unwrap();
    assert_eq!(ds.len(), 2);
    run(ctx, &ds);
    let dx = read(ctx, bufs.dx(), o.dx, n);
    assert_close(&format!("{label}: dx"), &dx, &want_dx, TOL);
    bufs.check_param_grads(ctx, &label, &o, &g0, (&want_dw, &want_db), TOL);
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
