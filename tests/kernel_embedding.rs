//! The embedding kernels (`shaders/embedding.wgsl`) against f64 CPU
//! versions written here: the gather forward and its deterministic CSR
//! scatter-add backward (also from f16 upstream gradients), the CSR index
//! and the id checks. Offsets into shared buffers, accumulation and
//! bit-identical reruns are checked along the way.
//! Tolerance: max |gpu - ref| / max |ref| <= 1e-4 per tensor.

mod common;

use common::gpu::*;
use common::{assert_close, ctx};
use lstm_wgpu::GpuContext;
use lstm_wgpu::kernels::embedding::{
    CSR_CHUNK, EmbBackward, EmbForward, EmbShape, Embedding, PAD, check_ids, csr, csr_words,
};
use lstm_wgpu_reference::Rng;

const TOL: f64 = 1e-4;

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
