//! The elementwise kernels (`shaders/elementwise.wgsl`): dropout (exact
//! identity at p = 0, mask rate, same mask in the backward,
//! reproducibility, Philox known answers), residual add / accumulate /
//! fill, and the last-valid-step gather and scatter, against f64 CPU
//! versions written here.

mod common;

use common::gpu::*;
use common::{assert_close, ctx};
use lstm_wgpu::GpuContext;
use lstm_wgpu::kernels::elementwise::{
    DROPOUT_STEP_WORDS, DropoutShape, DropoutStep, Elementwise, LastStepShape, dropout_keep,
    dropout_scale, dropout_threshold, philox4x32_10,
};
use lstm_wgpu_reference::Rng;

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
