//! The trainer's pieces around the LSTM (`shaders/embedding.wgsl`,
//! `shaders/loss.wgsl`, `shaders/elementwise.wgsl`) against f64 CPU
//! versions written here: embedding gather and its CSR scatter-add
//! backward, softmax cross-entropy (extreme logits, ignored rows, 1..=3 and
//! 70 classes), masked MSE, dropout (exact identity at p = 0, mask rate,
//! same mask in the backward, reproducibility, Philox known answers),
//! residual add / accumulate / fill, and the last-valid-step gather and
//! scatter. Offsets into shared buffers, in-place use, accumulation and
//! bit-identical reruns are checked along the way.
//! Tolerance: max |gpu - ref| / max |ref| <= 1e-4 per tensor.

mod common;

use common::{assert_close, ctx};
use lstm_wgpu::gpu::Dispatch;
use lstm_wgpu::kernels::elementwise::{
    DROPOUT_STEP_WORDS, DropoutShape, DropoutStep, Elementwise, LastStepShape, dropout_keep,
    dropout_scale, dropout_threshold, philox4x32_10,
};
use lstm_wgpu::kernels::embedding::{
    CSR_CHUNK, EmbBackward, EmbForward, EmbShape, Embedding, PAD, check_ids, csr, csr_words,
};
use lstm_wgpu::kernels::loss::{
    CeBackward, CeForward, CeShape, IGNORE, LOSS_WORDS, Loss, LossStep, MseBackward, MseForward,
    MseShape, ce_count, check_targets, mse_count,
};
use lstm_wgpu::{Error, GpuContext};
use lstm_wgpu_reference::Rng;

const TOL: f64 = 1e-4;

fn run(ctx: &GpuContext, ds: &[Dispatch]) {
    ctx.scoped(|| {
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for d in ds {
                d.record(&mut pass);
            }
        }
        ctx.queue.submit([enc.finish()]);
        ctx.wait()
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

fn read(ctx: &GpuContext, buf: &wgpu::Buffer, off: usize, len: usize) -> Vec<f32> {
    ctx.read_f32(buf, off, len)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn upload<T: bytemuck::Pod>(ctx: &GpuContext, label: &str, data: &[T]) -> wgpu::Buffer {
    ctx.storage_init(label, data)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Values in [lo, hi) rounded to f32, so GPU and reference see the same input.
fn rand(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    rng.vec(n, lo, hi)
        .into_iter()
        .map(|v| v as f32 as f64)
        .collect()
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `data` placed at `off` in a buffer of `len` elements filled with `fill`.
fn placed(len: usize, fill: f32, parts: &[(usize, &[f32])]) -> Vec<f32> {
    let mut v = vec![fill; len];
    for (off, d) in parts {
        v[*off..*off + d.len()].copy_from_slice(d);
    }
    v
}

fn assert_tensor_error(r: lstm_wgpu::Result<()>, name: &str) {
    match r {
        Err(Error::Tensor { name: n, msg }) => {
            assert_eq!(n, name, "{msg}");
            assert!(msg.contains("out of range"), "{msg}");
        }
        other => panic!("expected a tensor error naming `{name}`, got {other:?}"),
    }
}

// ---------------------------------------------------------------- embedding

fn emb_ref_fwd(ids: &[u32], table: &[f64], e: usize) -> Vec<f64> {
    let mut out = vec![0.0; ids.len() * e];
    for (r, &id) in ids.iter().enumerate() {
        if id != PAD {
            out[r * e..(r + 1) * e].copy_from_slice(&table[id as usize * e..(id as usize + 1) * e]);
        }
    }
    out
}

fn emb_ref_bwd(ids: &[u32], dout: &[f64], v: usize, e: usize) -> Vec<f64> {
    let mut dt = vec![0.0; v * e];
    for (r, &id) in ids.iter().enumerate() {
        if id != PAD {
            for j in 0..e {
                dt[id as usize * e + j] += dout[r * e + j];
            }
        }
    }
    dt
}

#[test]
fn embedding_csr_and_id_checks() {
    let ids = [2, PAD, 0, 2, 3, 0, 2];
    let (offsets, rows) = csr(&ids, 5);
    assert_eq!(offsets, vec![0, 2, 2, 5, 6, 6]);
    assert_eq!(rows, vec![2, 5, 0, 3, 6, 4]);
    assert_eq!(csr_words(&ids, 5), [offsets, rows].concat());
    assert_eq!(Embedding::csr_len(5, ids.len()), 13);
    assert!(check_ids(&ids, 4).is_ok());
    assert_tensor_error(check_ids(&[0, 1, 4, PAD], 4), "tokens");
    assert_eq!(Embedding::backward_dispatches(1, 3, 2), 1);
    assert_eq!(Embedding::backward_dispatches(CSR_CHUNK, 3, 2), 1);
    assert_eq!(Embedding::backward_dispatches(CSR_CHUNK + 1, 3, 2), 2);
}

/// Forward and backward (overwrite, then accumulate) with repeated ids,
/// padding, and offsets in shared buffers.
fn embedding_case(ctx: &GpuContext, n: usize, v: usize, e: usize, seed: u64) {
    let k = Embedding::new(ctx);
    let mut rng = Rng::new(seed);
    // Ids concentrated on a few values (so some repeat many times), some
    // padding, and one id never used.
    let ids: Vec<u32> = (0..n)
        .map(|_| {
            let u = rng.uniform(0.0, 1.0);
            if u < 0.15 {
                PAD
            } else if u < 0.75 {
                0
            } else {
                1 + (rng.uniform(0.0, (v - 2) as f64) as u32).min(v as u32 - 3)
            }
        })
        .collect();
    check_ids(&ids, v).unwrap();
    let zeros = ids.iter().filter(|&&i| i == 0).count();
    assert_eq!(
        zeros > CSR_CHUNK,
        n > 2 * CSR_CHUNK,
        "{zeros} repeats of id 0"
    );
    let table = rand(&mut rng, v * e, -1.0, 1.0);
    let dout = rand(&mut rng, n * e, -1.0, 1.0);
    let prior = rand(&mut rng, v * e, -1.0, 1.0);

    // ids at 3 in a u32 buffer; table at 5 of a params buffer; out and dout
    // share one buffer; the CSR index at 2.
    let (ids_off, table_off, out_off, dout_off, dt_off, csr_off) = (3, 5, 7, 11 + n * e, 4, 2);
    let mut ids_buf = vec![7u32; ids_off + n + 1];
    ids_buf[ids_off..ids_off + n].copy_from_slice(&ids);
    let ids_buf = upload(ctx, "ids", &ids_buf);
    let params = upload(
        ctx,
        "params",
        &placed(table_off + v * e + 3, 9.0, &[(table_off, &f32s(&table))]),
    );
    let act = upload(
        ctx,
        "act",
        &placed(dout_off + n * e + 2, f32::NAN, &[(dout_off, &f32s(&dout))]),
    );
    let grads = upload(ctx, "grads", &vec![f32::NAN; dt_off + v * e + 5]);
    let csr_buf = ctx
        .storage("csr", csr_off + Embedding::csr_len(v, n))
        .unwrap();
    ctx.write(&csr_buf, csr_off, &csr_words(&ids, v));

    let mut s = EmbShape {
        rows: n,
        dim: e,
        vocab: v,
        ids_off,
        table_off,
        out_off,
        csr_off,
        dout_off,
        dtable_off: dt_off,
        accumulate: false,
    };
    let fwd = k
        .forward(
            ctx,
            &s,
            &EmbForward {
                ids: &ids_buf,
                table: &params,
                out: &act,
            },
        )
        .unwrap();
    assert_eq!(fwd.len(), 1);
    let bufs = EmbBackward {
        csr: &csr_buf,
        dout: &act,
        dtable: &grads,
    };
    let bwd = k.backward(ctx, &s, &bufs).unwrap();
    assert_eq!(bwd.len(), n.div_ceil(CSR_CHUNK));
    run(ctx, &[fwd, bwd.clone()].concat());

    let out = read(ctx, &act, out_off, n * e);
    assert_close("embedding out", &out, &emb_ref_fwd(&ids, &table, e), 0.0);
    let want = emb_ref_bwd(&ids, &dout, v, e);
    let got = read(ctx, &grads, dt_off, v * e);
    assert_close("embedding dtable", &got, &want, TOL);
    // Unused ids get exact zeros (overwrite mode), padding-free outside.
    assert!(got[(v - 1) * e..].iter().all(|&x| x == 0.0));
    assert!(read(ctx, &grads, 0, dt_off).iter().all(|x| x.is_nan()));

    // Bit-identical rerun.
    run(ctx, &bwd);
    assert_eq!(bits(&read(ctx, &grads, dt_off, v * e)), bits(&got));

    // Accumulate onto a prior gradient.
    ctx.write(&grads, dt_off, &f32s(&prior));
    s.accumulate = true;
    run(ctx, &k.backward(ctx, &s, &bufs).unwrap());
    let want: Vec<f64> = want.iter().zip(&prior).map(|(a, b)| a + b).collect();
    assert_close(
        "embedding dtable accumulated",
        &read(ctx, &grads, dt_off, v * e),
        &want,
        TOL,
    );

    // The f16-mixed scatter (the f16 gate gradients summed per token):
    // dout stored as f16, sums in f32, against the f64 sums of the
    // f16-rounded values.
    k.enable_half(ctx);
    let dout16: Vec<half::f16> = dout.iter().map(|&x| half::f16::from_f64(x)).collect();
    let mut words: Vec<u16> = vec![0; dout_off];
    words.extend(dout16.iter().map(|h| h.to_bits()));
    words.resize(words.len().div_ceil(2) * 2, 0);
    let dout_h = ctx.storage_init("dout f16", &words).unwrap();
    let half_bufs = EmbBackward {
        dout: &dout_h,
        ..bufs
    };
    s.accumulate = false;
    run(ctx, &k.backward_as(ctx, &s, &half_bufs, true).unwrap());
    let rounded: Vec<f64> = dout16.iter().map(|h| h.to_f64()).collect();
    assert_close(
        "embedding dtable from f16 dout",
        &read(ctx, &grads, dt_off, v * e),
        &emb_ref_bwd(&ids, &rounded, v, e),
        TOL,
    );
}

#[test]
fn embedding_forward_backward() {
    let ctx = ctx();
    embedding_case(&ctx, 15, 6, 7, 1);
    embedding_case(&ctx, 40, 9, 70, 2);
    // One id repeated more than CSR_CHUNK times: several backward passes.
    embedding_case(&ctx, 2 * CSR_CHUNK + 300, 5, 3, 3);
}

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

// ------------------------------------------------------------------ dropout

#[test]
fn philox_known_answers() {
    // Random123's kat_vectors: counter, key -> output.
    assert_eq!(
        philox4x32_10([0; 4], [0; 2]),
        [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
    );
    assert_eq!(
        philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
        [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
    );
    assert_eq!(
        philox4x32_10(
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0]
        ),
        [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
    );
    assert_eq!(dropout_threshold(0.0).unwrap(), 0);
    assert_eq!(dropout_threshold(0.5).unwrap(), 1 << 31);
    assert_eq!(dropout_scale(0.0), 1.0);
    for bad in [1.0, 1.5, -0.1, f32::NAN] {
        assert!(dropout_threshold(bad).is_err(), "{bad}");
    }
}

struct DropRig<'a> {
    ctx: &'a GpuContext,
    k: &'a Elementwise,
    step: wgpu::Buffer,
    x: wgpu::Buffer,
    y: wgpu::Buffer,
}

impl DropRig<'_> {
    fn run(&self, s: &DropoutShape, st: &DropoutStep, backward: bool) -> Vec<f32> {
        self.ctx.write(&self.step, s.step_off, &st.words());
        let ds = if backward {
            self.k
                .dropout_backward(self.ctx, s, &self.step, &self.x, &self.y)
        } else {
            self.k
                .dropout_forward(self.ctx, s, &self.step, &self.x, &self.y)
        }
        .unwrap();
        assert_eq!(ds.len(), 1);
        run(self.ctx, &ds);
        read(self.ctx, &self.y, s.out_off, s.n)
    }
}

#[test]
fn dropout_mask_identity_and_reproducibility() {
    let ctx = ctx();
    let k = Elementwise::new(&ctx);
    let n = 100_000;
    let (in_off, out_off, step_off) = (3, 5, 2);
    let mut rng = Rng::new(7);
    // Inputs in [0.5, 1.5): never 0, so y == 0 exactly when dropped.
    let mut x = f32s(&rand(&mut rng, n, 0.5, 1.5));
    x[10] = -0.0;
    x[11] = 1e-38;
    x[12] = -3.0e38;
    let d = DropRig {
        ctx: &ctx,
        k: &k,
        step: ctx.storage("step", step_off + DROPOUT_STEP_WORDS).unwrap(),
        x: upload(&ctx, "x", &placed(in_off + n, 0.0, &[(in_off, &x)])),
        y: upload(&ctx, "y", &vec![f32::NAN; out_off + n]),
    };
    let st = DropoutStep {
        seed: 0x1234_5678_9abc_def0,
        counter: 17,
    };
    let mut s = DropoutShape {
        n,
        p: 0.0,
        stream: 3,
        step_off,
        in_off,
        out_off,
        accumulate: false,
    };

    // p = 0: exact identity, forward and backward.
    assert_eq!(bits(&d.run(&s, &st, false)), bits(&x));
    assert_eq!(bits(&d.run(&s, &st, true)), bits(&x));

    for p in [0.1f32, 0.3, 0.5] {
        s.p = p;
        let y = d.run(&s, &st, false);
        let scale = dropout_scale(p);
        let mut dropped = 0usize;
        for i in 0..n {
            let keep = dropout_keep(&st, s.stream, i as u32, p).unwrap();
            let want = if keep { x[i] * scale } else { 0.0 };
            assert_eq!(y[i].to_bits(), want.to_bits(), "p={p} i={i}");
            dropped += usize::from(!keep);
        }
        let frac = dropped as f64 / n as f64;
        // sigma = sqrt(p(1-p)/n) <= 0.0016.
        assert!((frac - p as f64).abs() < 0.01, "p={p}: dropped {frac}");

        // Backward: same mask, same scale.
        let dx = d.run(&s, &st, true);
        assert_eq!(bits(&dx), bits(&y), "p={p}: backward mask");

        // Bit-identical rerun; another counter, stream or seed: another mask.
        assert_eq!(bits(&d.run(&s, &st, false)), bits(&y));
        let differ = |z: &[f32]| z.iter().zip(&y).filter(|(a, b)| a != b).count() as f64 / n as f64;
        let expect = 2.0 * p as f64 * (1.0 - p as f64);
        let other = DropoutStep {
            counter: st.counter + 1,
            ..st
        };
        let f = differ(&d.run(&s, &other, false));
        assert!((f - expect).abs() < 0.02, "counter: {f} vs {expect}");
        let f = differ(&d.run(&DropoutShape { stream: 4, ..s }, &st, false));
        assert!((f - expect).abs() < 0.02, "stream: {f} vs {expect}");
        let other = DropoutStep {
            seed: st.seed ^ (1 << 40),
            ..st
        };
        let f = differ(&d.run(&s, &other, false));
        assert!((f - expect).abs() < 0.02, "seed: {f} vs {expect}");
    }

    // Accumulate and in place: y += dropout(x) on a short odd-length region.
    s.p = 0.4;
    s.n = 37;
    s.accumulate = true;
    let y0 = d.run(
        &DropoutShape {
            p: 0.0,
            accumulate: false,
            ..s
        },
        &st,
        false,
    );
    let y = d.run(&s, &st, false);
    for i in 0..37 {
        let keep = dropout_keep(&st, s.stream, i as u32, 0.4).unwrap();
        let want = y0[i] + if keep { x[i] * dropout_scale(0.4) } else { 0.0 };
        assert_eq!(y[i].to_bits(), want.to_bits(), "accumulate i={i}");
    }
    let inplace = DropoutShape {
        accumulate: false,
        out_off: in_off,
        ..s
    };
    let ds = k
        .dropout_forward(&ctx, &inplace, &d.step, &d.x, &d.x)
        .unwrap();
    run(&ctx, &ds);
    let z = read(&ctx, &d.x, in_off, 40);
    for i in 0..40 {
        let want = if i >= 37 {
            x[i]
        } else if dropout_keep(&st, s.stream, i as u32, 0.4).unwrap() {
            x[i] * dropout_scale(0.4)
        } else {
            0.0
        };
        assert_eq!(z[i].to_bits(), want.to_bits(), "in place i={i}");
    }
    assert!(
        k.dropout_forward(&ctx, &DropoutShape { p: 1.0, ..s }, &d.step, &d.x, &d.y)
            .is_err()
    );
}

// ---------------------------------------------------- residual, copy, fill

#[test]
fn residual_add_accumulate_fill() {
    let ctx = ctx();
    let k = Elementwise::new(&ctx);
    let n = 150;
    let mut rng = Rng::new(3);
    let a = f32s(&rand(&mut rng, n, -1.0, 1.0));
    let b = f32s(&rand(&mut rng, n, -1.0, 1.0));
    // a at 4 and b at 200 in one buffer; out in another at 1.
    let ab = upload(&ctx, "ab", &placed(200 + n + 3, 8.0, &[(4, &a), (200, &b)]));
    let out = upload(&ctx, "out", &vec![f32::NAN; n + 4]);
    let sum: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();

    run(
        &ctx,
        &k.add(&ctx, n, (&ab, 4), (&ab, 200), (&out, 1)).unwrap(),
    );
    assert_eq!(bits(&read(&ctx, &out, 1, n)), bits(&sum));
    assert!(read(&ctx, &out, 0, 1)[0].is_nan());
    assert!(read(&ctx, &out, n + 1, 3).iter().all(|v| v.is_nan()));

    // In place: b += a via add (out = b), then accumulate (dy_lower += dy_upper).
    run(
        &ctx,
        &k.add(&ctx, n, (&ab, 4), (&ab, 200), (&ab, 200)).unwrap(),
    );
    assert_eq!(bits(&read(&ctx, &ab, 200, n)), bits(&sum));
    run(
        &ctx,
        &k.accumulate(&ctx, n, (&ab, 4), (&out, 1), true).unwrap(),
    );
    let twice: Vec<f64> = a.iter().zip(&sum).map(|(x, s)| (*x + *s) as f64).collect();
    assert_close("accumulate", &read(&ctx, &out, 1, n), &twice, 0.0);
    // Copy.
    run(
        &ctx,
        &k.accumulate(&ctx, n, (&ab, 4), (&out, 1), false).unwrap(),
    );
    assert_eq!(bits(&read(&ctx, &out, 1, n)), bits(&a));
    // Fill.
    run(&ctx, &k.fill(&ctx, n - 2, (&out, 2), 0.0).unwrap());
    let o = read(&ctx, &out, 0, n + 4);
    assert_eq!(o[1].to_bits(), a[0].to_bits());
    assert!(o[2..n].iter().all(|&v| v == 0.0));
    assert!(o[n + 1..].iter().all(|v| v.is_nan()));
    assert!(
        k.add(&ctx, 0, (&ab, 0), (&ab, 0), (&out, 0))
            .unwrap()
            .is_empty()
    );
}

// ---------------------------------------------------------- last valid step

#[test]
fn last_step_gather_scatter() {
    let ctx = ctx();
    let k = Elementwise::new(&ctx);
    for (t, b, f, lengths) in [
        (5usize, 4usize, 70usize, vec![5u32, 1, 3, 2]),
        (1, 3, 2, vec![1, 1, 1]),
        (6, 1, 5, vec![4]),
    ] {
        let mut rng = Rng::new(t as u64 * 31 + f as u64);
        let x = f32s(&rand(&mut rng, t * b * f, -1.0, 1.0));
        let dout = f32s(&rand(&mut rng, b * f, -1.0, 1.0));
        let prior = f32s(&rand(&mut rng, t * b * f, -1.0, 1.0));
        let row = |bi: usize| (lengths[bi] as usize - 1) * b + bi;
        let mut gathered = vec![0.0f32; b * f];
        for bi in 0..b {
            gathered[bi * f..(bi + 1) * f].copy_from_slice(&x[row(bi) * f..(row(bi) + 1) * f]);
        }
        let (seq_off, last_off, len_off) = (3, 2, 1);
        let lens = upload(&ctx, "lengths", &[&[9u32][..], &lengths].concat());
        let xb = upload(
            &ctx,
            "x",
            &placed(seq_off + t * b * f, 0.0, &[(seq_off, &x)]),
        );
        let ob = upload(&ctx, "out", &vec![f32::NAN; last_off + b * f + 1]);
        let mut s = LastStepShape {
            seq: t,
            batch: b,
            features: f,
            seq_off,
            last_off,
            len_off,
            accumulate: false,
        };
        run(&ctx, &k.last_gather(&ctx, &s, &lens, &xb, &ob).unwrap());
        assert_eq!(bits(&read(&ctx, &ob, last_off, b * f)), bits(&gathered));
        assert!(read(&ctx, &ob, last_off + b * f, 1)[0].is_nan());
        // Accumulating gather doubles.
        s.accumulate = true;
        run(&ctx, &k.last_gather(&ctx, &s, &lens, &xb, &ob).unwrap());
        let doubled: Vec<f64> = gathered.iter().map(|&v| 2.0 * v as f64).collect();
        assert_close(
            "gather accumulate",
            &read(&ctx, &ob, last_off, b * f),
            &doubled,
            0.0,
        );

        // Scatter: dx += dout at each sequence's last row, others untouched.
        let gb = upload(
            &ctx,
            "dout",
            &placed(last_off + b * f, 0.0, &[(last_off, &dout)]),
        );
        let dxb = upload(
            &ctx,
            "dx",
            &placed(seq_off + t * b * f, 4.0, &[(seq_off, &prior)]),
        );
        run(&ctx, &k.last_scatter(&ctx, &s, &lens, &gb, &dxb).unwrap());
        let mut want = prior.clone();
        for bi in 0..b {
            for j in 0..f {
                want[row(bi) * f + j] += dout[bi * f + j];
            }
        }
        assert_eq!(bits(&read(&ctx, &dxb, seq_off, t * b * f)), bits(&want));
        // Overwrite mode: those rows become dout, others still untouched.
        s.accumulate = false;
        run(&ctx, &k.last_scatter(&ctx, &s, &lens, &gb, &dxb).unwrap());
        for bi in 0..b {
            for j in 0..f {
                want[row(bi) * f + j] = dout[bi * f + j];
            }
        }
        assert_eq!(bits(&read(&ctx, &dxb, seq_off, t * b * f)), bits(&want));
        assert!(read(&ctx, &dxb, 0, seq_off).iter().all(|&v| v == 4.0));
    }
}
