//! The attention kernels (`shaders/attention.wgsl`) against the f64
//! reference (`lstm_wgpu_reference::attention`, itself checked by finite
//! differences): weights, the head's input `[context; h_T]`, the output
//! gradient and the query's, for dot and learned scores, unequal lengths,
//! T = 1, widths and lengths past one workgroup's 256 invocations, offsets
//! inside shared buffers and garbage at padded positions; bit-identical
//! reruns; and the loop-pass cap refused by name.
//! Tolerance: max |gpu − ref| / max |ref| ≤ 1e-4 per tensor.

mod common;

use common::gpu::*;
use common::{assert_close, ctx};
use lstm_wgpu::GpuContext;
use lstm_wgpu::kernels::attention::{
    Attention, AttentionBackward, AttentionForward, AttentionShape,
};
use lstm_wgpu_reference::Rng;
use lstm_wgpu_reference::attention::{
    RefPoolShape, RefScore, attention_pool, attention_pool_backward,
};

const TOL: f64 = 1e-4;

struct Case {
    t: usize,
    b: usize,
    w: usize,
    learned: bool,
    lengths: Option<Vec<usize>>,
    /// Spread of the outputs (large: peaked weights).
    amp: f64,
}

/// What one run gives: weights, features, dh and dq, as read back.
type Run = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

fn run_case(ctx: &GpuContext, k: &Attention, c: &Case, seed: u64) -> Run {
    let (t, b, w) = (c.t, c.b, c.w);
    let mut rng = Rng::new(seed);
    let lens = c.lengths.clone().unwrap_or(vec![t; b]);
    let mut h = rand(&mut rng, t * b * w, -c.amp, c.amp);
    // Padded positions hold garbage the kernels must not read.
    for (bi, &l) in lens.iter().enumerate() {
        for ti in l..t {
            for j in 0..w {
                h[(ti * b + bi) * w + j] = 1e4;
            }
        }
    }
    let q = rand(&mut rng, w, -1.0, 1.0);
    let dz = rand(&mut rng, b * 2 * w, -1.0, 1.0);
    let score = if c.learned {
        RefScore::Learned
    } else {
        RefScore::Dot
    };
    let rs = RefPoolShape {
        seq_len: t,
        batch: b,
        width: w,
        lengths: Some(lens.clone()),
    };
    let pooled = attention_pool(score, &q, &h, &rs);
    let (dh_ref, dq_ref) = attention_pool_backward(score, &q, &h, &rs, &pooled, &dz);

    // Offsets inside shared buffers: h and dh after a prefix, the query
    // inside a parameter buffer, its gradient inside a gradient buffer.
    let (h_off, q_off, z_off, s_off, dh_off, len_off) = (5, 7, 3, 11, 2, 1);
    let shape = AttentionShape {
        seq: t,
        batch: b,
        width: w,
        learned: c.learned,
        h_off,
        len_off,
        q_off,
        z_off,
        scratch_off: s_off,
        dh_off,
        dq_off: q_off + 1,
    };
    let hb = upload(ctx, "h", &placed(h_off + h.len(), 7.0, &[(h_off, &h[..])]));
    let params = upload(
        ctx,
        "params",
        &placed(q_off + w + 3, 9.0, &[(q_off, &q[..])]),
    );
    let grads = upload(ctx, "grads", &vec![5.0f32; q_off + 1 + w + 2]);
    let mut lw: Vec<u32> = vec![99];
    lw.extend(lens.iter().map(|&l| l as u32));
    let lb = upload(ctx, "lengths", &lw);
    let zb = upload(ctx, "z", &vec![3.0f32; z_off + b * 2 * w + 1]);
    let sb = upload(ctx, "scratch", &vec![-1.0f32; s_off + shape.scratch_len()]);
    let dhb = upload(ctx, "dh", &vec![8.0f32; dh_off + t * b * w + 4]);
    let fwd = k
        .forward(
            ctx,
            &shape,
            &AttentionForward {
                lengths: &lb,
                h: &hb,
                params: &params,
                z: &zb,
                scratch: &sb,
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
    run(ctx, &fwd);
    let weights = read(ctx, &sb, s_off, b * t);
    let feats = read(ctx, &zb, z_off, b * 2 * w);
    let tag = format!(
        "T={t} B={b} W={w} learned={} lengths={:?}",
        c.learned, c.lengths
    );
    assert_close(&format!("{tag}: weights"), &weights, &pooled.weights, TOL);
    assert_close(&format!("{tag}: features"), &feats, &pooled.features, TOL);
    // Padded weights are exactly 0, and each sequence's sum to 1.
    for (bi, &l) in lens.iter().enumerate() {
        let row = &weights[bi * t..(bi + 1) * t];
        assert!(row[l..].iter().all(|&a| a == 0.0), "{tag}: padded weights");
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "{tag}: weights sum to {sum}");
    }

    // The backward reads dz where the forward wrote z.
    ctx.write(&zb, z_off, &f32s(&dz));
    let bwd = k
        .backward(
            ctx,
            &shape,
            &AttentionBackward {
                lengths: &lb,
                h: &hb,
                params: &params,
                dz: &zb,
                scratch: &sb,
                dh: &dhb,
                grads: &grads,
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        bwd.len(),
        if c.learned { 2 } else { 1 },
        "{tag}: dispatches"
    );
    run(ctx, &bwd);
    let dh = read(ctx, &dhb, dh_off, t * b * w);
    assert_close(&format!("{tag}: dh"), &dh, &dh_ref, TOL);
    // Padded positions are written with exact zeros, around them nothing.
    for (bi, &l) in lens.iter().enumerate() {
        for ti in l..t {
            let r = &dh[(ti * b + bi) * w..(ti * b + bi + 1) * w];
            assert!(r.iter().all(|&v| v == 0.0), "{tag}: padded dh");
        }
    }
    assert_eq!(read(ctx, &dhb, 0, dh_off), vec![8.0; dh_off], "{tag}");
    assert_eq!(read(ctx, &dhb, dh_off + t * b * w, 4), vec![8.0; 4]);
    let g = read(ctx, &grads, 0, q_off + 1 + w + 2);
    let dq = &g[q_off + 1..q_off + 1 + w];
    if c.learned {
        assert_close(&format!("{tag}: dq"), dq, &dq_ref, TOL);
    } else {
        assert!(
            dq.iter().all(|&v| v == 5.0),
            "{tag}: dot scores write no dq"
        );
    }
    assert!(
        g[..q_off + 1]
            .iter()
            .chain(&g[q_off + 1 + w..])
            .all(|&v| v == 5.0)
    );
    (weights, feats, dh, dq.to_vec())
}

#[test]
fn attention_matches_reference() {
    let ctx = ctx();
    let k = Attention::new(&ctx);
    let cases = [
        (5, 3, 4, Some(vec![5, 2, 4]), 1.0),
        (1, 2, 6, None, 1.0),
        (7, 4, 3, Some(vec![1, 7, 3, 6]), 3.0),
        // More steps and columns than one workgroup's invocations.
        (300, 2, 260, Some(vec![300, 137]), 0.2),
        (12, 16, 32, None, 1.0),
    ];
    for (q, (t, b, w, lengths, amp)) in cases.into_iter().enumerate() {
        for learned in [false, true] {
            let c = Case {
                t,
                b,
                w,
                learned,
                lengths: lengths.clone(),
                amp,
            };
            run_case(&ctx, &k, &c, 10 + q as u64);
        }
    }
}

#[test]
fn attention_is_bit_identical_on_reruns() {
    let ctx = ctx();
    let k = Attention::new(&ctx);
    let c = Case {
        t: 40,
        b: 5,
        w: 33,
        learned: true,
        lengths: Some(vec![40, 3, 17, 1, 39]),
        amp: 1.0,
    };
    let a = run_case(&ctx, &k, &c, 3);
    let b = run_case(&ctx, &k, &c, 3);
    assert_eq!(bits(&a.0), bits(&b.0));
    assert_eq!(bits(&a.1), bits(&b.1));
    assert_eq!(bits(&a.2), bits(&b.2));
    assert_eq!(bits(&a.3), bits(&b.3));
}

#[test]
fn too_many_loop_passes_are_refused() {
    let ctx = ctx();
    let k = Attention::new(&ctx);
    let buf = upload(&ctx, "any", &[0f32; 4]);
    let s = AttentionShape {
        seq: 4096,
        batch: 2,
        width: 4096,
        ..Default::default()
    };
    assert!(s.loop_passes() > lstm_wgpu::kernels::gemm::LOOP_CAP);
    let e = k
        .forward(
            &ctx,
            &s,
            &AttentionForward {
                lengths: &buf,
                h: &buf,
                params: &buf,
                z: &buf,
                scratch: &buf,
            },
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("attention pooling over 4096 steps of width 4096") && e.contains("loop passes"),
        "{e}"
    );
}
