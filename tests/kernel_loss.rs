//! The loss kernels (`shaders/loss.wgsl`) against f64 CPU versions written
//! here: softmax cross-entropy (extreme logits, ignored rows, 1..=3 and 70
//! classes, the per-step count and scale) and masked MSE.
//! Tolerance: max |gpu - ref| / max |ref| <= 1e-4 per tensor.

mod common;

use common::gpu::*;
use common::{assert_close, ctx};
use lstm_wgpu::GpuContext;
use lstm_wgpu::kernels::loss::{
    CeBackward, CeForward, CeShape, IGNORE, LOSS_WORDS, Loss, LossStep, MseBackward, MseForward,
    MseShape, ce_count, check_targets, mse_count,
};
use lstm_wgpu_reference::Rng;

const TOL: f64 = 1e-4;

// ------------------------------------------------------------ cross-entropy

/// (per-row losses, mean, dlogits) in f64.
fn ce_ref(x: &[f64], t: &[u32], v: usize, scale: f64) -> (Vec<f64>, f64, Vec<f64>) {
    let n = t.len();
    let count = t.iter().filter(|&&y| y != IGNORE).count();
    let mut rows = vec![0.0; n];
    let mut d = vec![0.0; n * v];
    for r in 0..n {
        if t[r] == IGNORE {
            continue;
        }
        let row = &x[r * v..(r + 1) * v];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row.iter().map(|a| (a - m).exp()).sum();
        rows[r] = s.ln() + m - row[t[r] as usize];
        for j in 0..v {
            let sm = (row[j] - m).exp() / s;
            let oh = if j == t[r] as usize { 1.0 } else { 0.0 };
            d[r * v + j] = (sm - oh) * scale / count as f64;
        }
    }
    let mean = if count > 0 {
        rows.iter().sum::<f64>() / count as f64
    } else {
        0.0
    };
    (rows, mean, d)
}

struct CeCase {
    n: usize,
    v: usize,
    /// Logit range.
    amp: f64,
    scale: f32,
    in_place: bool,
    all_ignored: bool,
}

fn ce_case(ctx: &GpuContext, k: &Loss, c: &CeCase, seed: u64) {
    let (n, v) = (c.n, c.v);
    let mut rng = Rng::new(seed);
    let mut x = rand(&mut rng, n * v, -c.amp, c.amp);
    // Some rows at the extremes: one +amp logit among -amp ones.
    for r in (0..n).step_by(3) {
        for j in 0..v {
            x[r * v + j] = if (j + r) % v == 0 { c.amp } else { -c.amp };
        }
    }
    let t: Vec<u32> = (0..n)
        .map(|r| {
            if c.all_ignored || r % 4 == 2 {
                IGNORE
            } else {
                (rng.uniform(0.0, v as f64) as u32).min(v as u32 - 1)
            }
        })
        .collect();
    check_targets(&t, v).unwrap();
    let mut xf = f32s(&x);
    // Ignored rows may hold garbage.
    for r in (0..n).filter(|r| t[*r] == IGNORE) {
        xf[r * v] = f32::NAN;
    }
    let (rows_ref, mean_ref, d_ref) = ce_ref(&x, &t, v, c.scale as f64);

    // logits at 6 of one buffer that also holds the scratch and the loss;
    // the step words at 0 and the targets at 4 of one read-only u32 buffer.
    let logits_off = 6;
    let scratch_off = logits_off + n * v + 3;
    let loss_off = scratch_off + 3 * n + 1;
    let dlogits_off = if c.in_place { logits_off } else { 2 };
    let s = CeShape {
        rows: n,
        classes: v,
        logits_off,
        targets_off: 4,
        dlogits_off,
        scratch_off,
        loss_off,
        step_off: 0,
    };
    let buf = upload(
        ctx,
        "ce data",
        &placed(loss_off + LOSS_WORDS + 2, -7.0, &[(logits_off, &xf)]),
    );
    let dbuf = if c.in_place {
        None
    } else {
        Some(upload(ctx, "ce grad", &vec![-7.0f32; dlogits_off + n * v]))
    };
    let dlog = dbuf.as_ref().unwrap_or(&buf);
    let step = LossStep {
        count: ce_count(&t),
        scale: c.scale,
    };
    let mut u = vec![0u32; 4 + n];
    u[..2].copy_from_slice(&step.words());
    u[4..].copy_from_slice(&t);
    let ubuf = upload(ctx, "ce u32", &u);
    let fwd = k
        .ce_forward(
            ctx,
            &s,
            &CeForward {
                logits: &buf,
                targets: &ubuf,
                step: &ubuf,
                scratch: &buf,
                loss: &buf,
            },
        )
        .unwrap();
    assert_eq!(fwd.len(), 2);
    let bwd = k
        .ce_backward(
            ctx,
            &s,
            &CeBackward {
                logits: &buf,
                targets: &ubuf,
                step: &ubuf,
                scratch: &buf,
                dlogits: dlog,
            },
        )
        .unwrap();
    assert_eq!(bwd.len(), 1);
    let all = [fwd, bwd].concat();
    run(ctx, &all);

    let name = format!("ce n={n} v={v} amp={}", c.amp);
    let rows = read(ctx, &buf, s.row_losses().start, n);
    assert!(rows.iter().all(|r| r.is_finite()), "{name}: {rows:?}");
    assert_close(&format!("{name} row losses"), &rows, &rows_ref, TOL);
    let loss = read(ctx, &buf, loss_off, LOSS_WORDS);
    assert_close(&format!("{name} mean"), &loss[..1], &[mean_ref], TOL);
    assert_close(
        &format!("{name} sum"),
        &loss[1..],
        &[rows_ref.iter().sum()],
        TOL,
    );
    let d = read(ctx, dlog, dlogits_off, n * v);
    assert!(d.iter().all(|r| r.is_finite()), "{name}: {d:?}");
    if c.all_ignored {
        assert!(d.iter().all(|&x| x == 0.0));
        assert_eq!(loss, vec![0.0, 0.0]);
    } else {
        assert_close(&format!("{name} dlogits"), &d, &d_ref, TOL);
    }
    // Ignored rows: exactly zero.
    for r in (0..n).filter(|r| t[*r] == IGNORE) {
        assert_eq!(rows[r], 0.0);
        assert!(d[r * v..(r + 1) * v].iter().all(|&x| x == 0.0));
    }

    // Bit-identical rerun (restore the logits when overwritten in place).
    if !c.in_place {
        run(ctx, &all);
        assert_eq!(bits(&read(ctx, &buf, loss_off, 2)), bits(&loss));
        assert_eq!(bits(&read(ctx, dlog, dlogits_off, n * v)), bits(&d));
    }
}

#[test]
fn cross_entropy_against_f64() {
    let ctx = ctx();
    let k = Loss::new(&ctx);
    let case = |n, v, amp, scale, in_place| CeCase {
        n,
        v,
        amp,
        scale,
        in_place,
        all_ignored: false,
    };
    for (i, c) in [
        case(7, 70, 3.0, 1.0, false),
        case(9, 70, 80.0, 1.0, false),
        case(5, 1, 2.0, 1.0, false),
        case(6, 2, 80.0, 0.5, false),
        case(8, 3, 80.0, 1.0, true),
        case(4, 3, 5.0, 2.0, false),
        case(3, 200, 80.0, 1.0, true),
        case(1, 64, 1.0, 1.0, false),
    ]
    .iter()
    .enumerate()
    {
        ce_case(&ctx, &k, c, 10 + i as u64);
    }
    ce_case(
        &ctx,
        &k,
        &CeCase {
            all_ignored: true,
            ..case(5, 4, 1.0, 1.0, false)
        },
        99,
    );
}

#[test]
fn cross_entropy_step_buffer_is_per_step() {
    // The same dispatches with another count / scale written in between.
    let ctx = ctx();
    let k = Loss::new(&ctx);
    let (n, v) = (4, 5);
    let mut rng = Rng::new(5);
    let x = rand(&mut rng, n * v, -2.0, 2.0);
    let t = [1u32, 4, 0, 2];
    let buf = upload(
        &ctx,
        "data",
        &placed(n * v + 3 * n + 2, 0.0, &[(0, &f32s(&x))]),
    );
    let step = ctx.storage("step", 2).unwrap();
    let tb = upload(&ctx, "targets", &t);
    let dbuf = ctx.storage("grad", n * v).unwrap();
    let s = CeShape {
        rows: n,
        classes: v,
        scratch_off: n * v,
        loss_off: n * v + 3 * n,
        ..Default::default()
    };
    let ds = [
        k.ce_forward(
            &ctx,
            &s,
            &CeForward {
                logits: &buf,
                targets: &tb,
                step: &step,
                scratch: &buf,
                loss: &buf,
            },
        )
        .unwrap(),
        k.ce_backward(
            &ctx,
            &s,
            &CeBackward {
                logits: &buf,
                targets: &tb,
                step: &step,
                scratch: &buf,
                dlogits: &dbuf,
            },
        )
        .unwrap(),
    ]
    .concat();
    for scale in [1.0f32, 0.25, 3.0] {
        let st = LossStep {
            count: ce_count(&t),
            scale,
        };
        ctx.write(&step, 0, &st.words());
        run(&ctx, &ds);
        let (_, mean, d) = ce_ref(&x, &t, v, scale as f64);
        assert_close("mean", &read(&ctx, &buf, s.loss_off, 1), &[mean], TOL);
        assert_close("dlogits", &read(&ctx, &dbuf, 0, n * v), &d, TOL);
    }
    assert_tensor_error(check_targets(&[0, 5, IGNORE], 5), "targets");
    assert!(check_targets(&[0, 4, IGNORE], 5).is_ok());
}

// ---------------------------------------------------------------------- MSE

fn mse_case(ctx: &GpuContext, k: &Loss, n: usize, kf: usize, scale: f32, seed: u64) {
    let mut rng = Rng::new(seed);
    let p = rand(&mut rng, n * kf, -2.0, 2.0);
    let t = rand(&mut rng, n * kf, -2.0, 2.0);
    let mask: Vec<u32> = (0..n).map(|r| u32::from(r % 3 != 1)).collect();
    let count = mse_count(&mask, kf);
    let mut pf = f32s(&p);
    for r in (0..n).filter(|&r| mask[r] == 0) {
        pf[r * kf] = f32::NAN;
    }
    // Reference.
    let mut rows = vec![0.0; n];
    let mut d = vec![0.0; n * kf];
    for r in (0..n).filter(|&r| mask[r] != 0) {
        for j in 0..kf {
            let e = p[r * kf + j] - t[r * kf + j];
            rows[r] += e * e;
            d[r * kf + j] = 2.0 * e * scale as f64 / count as f64;
        }
    }
    let sum: f64 = rows.iter().sum();

    // pred and target share a buffer; dpred in place of pred.
    let (pred_off, target_off) = (2, 3 + n * kf);
    let scratch_off = 1;
    let loss_off = scratch_off + n;
    let data = upload(
        ctx,
        "mse data",
        &placed(
            target_off + n * kf,
            5.0,
            &[(pred_off, &pf), (target_off, &f32s(&t))],
        ),
    );
    let small = upload(ctx, "mse out", &vec![-3.0f32; loss_off + LOSS_WORDS]);
    let mut u = vec![0u32; 5 + n];
    u[3..5].copy_from_slice(&LossStep { count, scale }.words());
    u[5..].copy_from_slice(&mask);
    let ubuf = upload(ctx, "mse u32", &u);
    let s = MseShape {
        rows: n,
        features: kf,
        pred_off,
        target_off,
        mask_off: 5,
        dpred_off: pred_off,
        scratch_off,
        loss_off,
        step_off: 3,
    };
    let fwd = k
        .mse_forward(
            ctx,
            &s,
            &MseForward {
                pred: &data,
                target: &data,
                mask: &ubuf,
                step: &ubuf,
                scratch: &small,
                loss: &small,
            },
        )
        .unwrap();
    let bwd = k
        .mse_backward(
            ctx,
            &s,
            &MseBackward {
                pred: &data,
                target: &data,
                mask: &ubuf,
                step: &ubuf,
                dpred: &data,
            },
        )
        .unwrap();
    assert_eq!((fwd.len(), bwd.len()), (2, 1));
    run(ctx, &[fwd, bwd].concat());
    let name = format!("mse n={n} k={kf}");
    let got_rows = read(ctx, &small, s.row_losses().start, n);
    assert_close(&format!("{name} rows"), &got_rows, &rows, TOL);
    let loss = read(ctx, &small, loss_off, 2);
    assert_close(
        &format!("{name} mean"),
        &loss[..1],
        &[sum / count as f64],
        TOL,
    );
    assert_close(&format!("{name} sum"), &loss[1..], &[sum], TOL);
    let got = read(ctx, &data, pred_off, n * kf);
    assert_close(&format!("{name} dpred"), &got, &d, TOL);
    for r in (0..n).filter(|&r| mask[r] == 0) {
        assert_eq!(got_rows[r], 0.0);
        assert!(got[r * kf..(r + 1) * kf].iter().all(|&x| x == 0.0));
    }
}

#[test]
fn mse_against_f64() {
    let ctx = ctx();
    let k = Loss::new(&ctx);
    mse_case(&ctx, &k, 9, 5, 1.0, 1);
    mse_case(&ctx, &k, 7, 70, 0.5, 2);
    mse_case(&ctx, &k, 4, 1, 2.0, 3);
    mse_case(&ctx, &k, 600, 3, 1.0, 4);
}
