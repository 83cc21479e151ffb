//! Gradient clipping kernels (`shaders/clip.wgsl`) against an f64 CPU
//! computation: global and per-tensor norms, clip by norm, clip by value,
//! non-finite detection, partial segment coverage, determinism, and the
//! fused loss-scaler unscale and update (against GradScaler's rules).

mod common;

use common::gpu::*;

use common::{assert_close, ctx};
use lstm_wgpu::GpuContext;
use lstm_wgpu::kernels::clip::{CHUNK, Clip, ClipOptions, ClipPlan, ClipStats, STATS_HEADER};
use lstm_wgpu::model::precision::{ScalerConfig, ScalerState};

fn run(ctx: &GpuContext, plan: &ClipPlan) {
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        plan.record(&mut pass);
    }
    ctx.queue.submit([enc.finish()]);
}

fn sum_sq(x: &[f32]) -> f64 {
    x.iter().map(|&v| v as f64 * v as f64).sum()
}

fn rel(got: f32, want: f64) -> f64 {
    (got as f64 - want).abs() / want.abs().max(1e-30)
}

/// Reference norms of `segments` of `x`: (total, per segment).
fn ref_norms(x: &[f32], segments: &[(usize, usize)]) -> (f64, Vec<f64>) {
    let per: Vec<f64> = segments
        .iter()
        .map(|&(o, n)| sum_sq(&x[o..o + n]))
        .collect();
    (
        per.iter().sum::<f64>().sqrt(),
        per.iter().map(|s| s.sqrt()).collect(),
    )
}

fn check_norms(what: &str, st: &ClipStats, x: &[f32], segments: &[(usize, usize)]) {
    let (total, per) = ref_norms(x, segments);
    assert!(!st.nonfinite, "{what}: flagged non-finite");
    assert!(
        rel(st.total_norm, total) <= 1e-5,
        "{what}: total norm {} vs {total} (rel {:.2e})",
        st.total_norm,
        rel(st.total_norm, total)
    );
    assert_eq!(st.per_tensor.len(), segments.len(), "{what}");
    for (i, (&g, &w)) in st.per_tensor.iter().zip(&per).enumerate() {
        if w == 0.0 {
            assert_eq!(g, 0.0, "{what}: segment {i} norm");
        } else {
            assert!(
                rel(g, w) <= 1e-5,
                "{what}: segment {i} norm {g} vs {w} (rel {:.2e})",
                rel(g, w)
            );
        }
    }
}

/// Elements outside every segment.
fn outside(n: usize, segments: &[(usize, usize)]) -> Vec<usize> {
    let mut inside = vec![false; n];
    for &(o, l) in segments {
        inside[o..o + l].iter_mut().for_each(|b| *b = true);
    }
    (0..n).filter(|&i| !inside[i]).collect()
}

/// Uploads `x`, clips it, and returns (stats, gradients after).
fn clip(
    ctx: &GpuContext,
    k: &Clip,
    x: &[f32],
    segments: &[(usize, usize)],
    max_norm: Option<f32>,
    clip_value: Option<f32>,
) -> (ClipStats, Vec<f32>) {
    let g = ctx.storage_init("grads", x).unwrap();
    let plan = k.plan(ctx, &g, segments, max_norm, clip_value).unwrap();
    run(ctx, &plan);
    let st = plan.read(ctx).unwrap();
    (st, ctx.read_f32(&g, 0, x.len()).unwrap())
}

#[test]
fn clip_by_norm_whole_buffer_sizes() {
    let ctx = ctx();
    let k = Clip::new(&ctx);
    for (i, &n) in [1usize, 7, 1000, 300_001].iter().enumerate() {
        let x = values_in(n, 10 + i as u64, 3.0);
        let seg = [(0, n)];
        let (norm, _) = ref_norms(&x, &seg);
        let max_norm = (0.37 * norm) as f32;
        let (st, got) = clip(&ctx, &k, &x, &seg, Some(max_norm), None);
        check_norms(&format!("n={n}"), &st, &x, &seg);
        let scale = max_norm as f64 / (norm + 1e-6);
        assert!(
            rel(st.scale, scale) <= 1e-5,
            "n={n}: scale {} vs {scale}",
            st.scale
        );
        let want: Vec<f64> = x.iter().map(|&v| v as f64 * scale).collect();
        assert_close(&format!("clipped n={n}"), &got, &want, 1e-5);
        // The clipped gradients now have norm max_norm (up to the 1e-6).
        let after = sum_sq(&got).sqrt();
        assert!(
            rel(after as f32, norm * scale) <= 1e-5,
            "n={n}: norm after {after}"
        );
    }
}

#[test]
fn below_max_norm_is_bit_unchanged() {
    let ctx = ctx();
    let k = Clip::new(&ctx);
    for (i, &n) in [1usize, 7, 1000, 300_001].iter().enumerate() {
        let mut x = values_in(n, 20 + i as u64, 1.0);
        // Denormals and signed zeros must survive too.
        x[0] = -0.0;
        if n > 2 {
            x[1] = f32::from_bits(1);
            x[2] = -f32::MIN_POSITIVE / 4.0;
        }
        let seg = [(0, n)];
        let (norm, _) = ref_norms(&x, &seg);
        let (st, got) = clip(&ctx, &k, &x, &seg, Some((2.0 * norm + 1.0) as f32), None);
        check_norms(&format!("n={n}"), &st, &x, &seg);
        assert_eq!(st.scale, 1.0, "n={n}");
        assert_eq!(bits(&got), bits(&x), "n={n}: gradients changed");
    }
}

#[test]
fn per_tensor_norms_of_partial_segments() {
    let ctx = ctx();
    let k = Clip::new(&ctx);
    let n = 4 * CHUNK + 5000;
    let x = values_in(n, 3, 2.0);
    // Unordered, one empty, one spanning several chunks, gaps between them.
    let segs = [
        (5000, 2 * CHUNK + 17), // ends at 13209
        (10, 100),
        (200, 0),
        (n - 7, 7),
        (300, 1),
        (CHUNK * 3 + 1000, CHUNK - 1),
    ];
    let (norm, _) = ref_norms(&x, &segs);
    let max_norm = (0.25 * norm) as f32;
    let (st, got) = clip(&ctx, &k, &x, &segs, Some(max_norm), None);
    check_norms("partial", &st, &x, &segs);
    let scale = max_norm as f64 / (norm + 1e-6);
    for &(o, l) in &segs {
        let want: Vec<f64> = x[o..o + l].iter().map(|&v| v as f64 * scale).collect();
        assert_close(&format!("segment ({o}, {l})"), &got[o..o + l], &want, 1e-5);
    }
    let out = outside(n, &segs);
    assert!(out.len() > 1000);
    for i in out {
        assert_eq!(got[i].to_bits(), x[i].to_bits(), "element {i} outside");
    }
}

#[test]
fn clip_by_value() {
    let ctx = ctx();
    let k = Clip::new(&ctx);
    let n = 300_001;
    let x = values_in(n, 4, 2.0);
    let segs = [(1, 150_000), (150_100, n - 150_100 - 3)];
    let v = 0.5f32;
    let (st, got) = clip(&ctx, &k, &x, &segs, None, Some(v));
    // Stats are of the gradients before clipping; no norm scaling.
    check_norms("value", &st, &x, &segs);
    assert_eq!(st.scale, 1.0);
    for &(o, l) in &segs {
        for i in o..o + l {
            assert_eq!(got[i].to_bits(), x[i].clamp(-v, v).to_bits(), "[{i}]");
        }
    }
    for i in outside(n, &segs) {
        assert_eq!(got[i].to_bits(), x[i].to_bits(), "element {i} outside");
    }

    // Small sizes, whole buffer.
    for &n in &[1usize, 7, 1000] {
        let x = values_in(n, 40 + n as u64, 1.0);
        let (_, got) = clip(&ctx, &k, &x, &[(0, n)], None, Some(0.25));
        let want: Vec<f32> = x.iter().map(|v| v.clamp(-0.25, 0.25)).collect();
        assert_eq!(bits(&got), bits(&want), "n={n}");
    }
}

#[test]
fn clip_by_norm_then_value() {
    let ctx = ctx();
    let k = Clip::new(&ctx);
    let n = 1000;
    let x = values_in(n, 5, 1.0);
    let seg = [(0, n)];
    let (norm, _) = ref_norms(&x, &seg);
    let max_norm = (0.5 * norm) as f32;
    let (st, got) = clip(&ctx, &k, &x, &seg, Some(max_norm), Some(0.3));
    check_norms("both", &st, &x, &seg);
    // Scaling first, then the clamp (applied to the GPU's own scale, so
    // the clamped elements are exact).
    for (i, (&g, &v)) in got.iter().zip(&x).enumerate() {
        let want = (v * st.scale).clamp(-0.3, 0.3);
        assert!(
            (g - want).abs() <= 1e-6 * want.abs().max(1e-3),
            "[{i}] got {g} want {want}"
        );
        assert!(g.abs() <= 0.3);
    }
}

#[test]
fn nonfinite_gradients_are_flagged_and_untouched() {
    let ctx = ctx();
    let k = Clip::new(&ctx);
    let n = 300_001;
    for (what, bad) in [
        ("NaN", f32::NAN),
        ("Inf", f32::INFINITY),
        ("-Inf", f32::NEG_INFINITY),
    ] {
        let mut x = values_in(n, 6, 2.0);
        let at = 2 * CHUNK + 123;
        x[at] = bad;
        let segs = [(0, 1000), (1000, n - 1000)];
        for (max_norm, clip_value) in [(Some(0.1), None), (None, Some(0.1)), (Some(0.1), Some(0.1))]
        {
            let (st, got) = clip(&ctx, &k, &x, &segs, max_norm, clip_value);
            assert!(st.nonfinite, "{what}: not flagged");
            assert!(!st.total_norm.is_finite(), "{what}: norm {}", st.total_norm);
            if bad.is_nan() {
                assert!(st.total_norm.is_nan(), "{what}: norm {}", st.total_norm);
            }
            assert_eq!(st.scale, 1.0, "{what}");
            assert!(st.per_tensor[0].is_finite(), "{what}: clean segment");
            assert!(!st.per_tensor[1].is_finite(), "{what}: bad segment");
            assert_eq!(bits(&got), bits(&x), "{what}: gradients changed");
        }
    }

    // A non-finite value outside the segments is not looked at.
    let mut x = values_in(5000, 7, 1.0);
    x[4000] = f32::NAN;
    let segs = [(0, 4000), (4001, 999)];
    let (st, _) = clip(&ctx, &k, &x, &segs, Some(1e9), None);
    check_norms("NaN outside", &st, &x, &segs);

    // Finite gradients whose sum of squares overflows f32 count as
    // non-finite too.
    let x = vec![1e20f32; 100];
    let (st, got) = clip(&ctx, &k, &x, &[(0, 100)], Some(1.0), None);
    assert!(st.nonfinite && st.scale == 1.0);
    assert_eq!(bits(&got), bits(&x));
}

#[test]
fn bit_identical_runs_and_rerecording() {
    let ctx = ctx();
    let k = Clip::new(&ctx);
    let n = 300_001;
    let x = values_in(n, 8, 1.5);
    let segs = [(0, 7), (7, 123_456), (200_000, n - 200_000)];
    let g = ctx.storage_init("grads", &x).unwrap();
    let plan = k.plan(&ctx, &g, &segs, Some(1.0), None).unwrap();
    assert_eq!(plan.dispatches.len(), 4);
    let stats_len = STATS_HEADER + segs.len();
    let mut outs = Vec::new();
    for _ in 0..2 {
        ctx.write(&g, 0, &x);
        run(&ctx, &plan);
        let s = ctx.read_f32(&plan.stats, 0, stats_len).unwrap();
        let y = ctx.read_f32(&g, 0, n).unwrap();
        outs.push((bits(&s), bits(&y)));
    }
    assert_eq!(outs[0].0, outs[1].0, "stats differ between runs");
    assert!(outs[0].1 == outs[1].1, "gradients differ between runs");
    // The stats buffer holds [sum_sq, norm, scale, flag, per-segment sums].
    let s: Vec<f32> = outs[0].0.iter().map(|&b| f32::from_bits(b)).collect();
    let (norm, per) = ref_norms(&x, &segs);
    assert!(rel(s[0], norm * norm) <= 2e-5);
    assert!(rel(s[1], norm) <= 1e-5);
    assert_eq!(s[3], 0.0);
    for (i, p) in per.iter().enumerate() {
        assert!(rel(s[STATS_HEADER + i], p * p) <= 2e-5);
    }

    // Re-recorded without rebuilding: the clipped gradients now have norm
    // ~max_norm, so the second clip scales by ~1.
    run(&ctx, &plan);
    let st = plan.read(&ctx).unwrap();
    assert!(rel(st.total_norm, 1.0) <= 1e-5, "norm {}", st.total_norm);
    assert!(
        st.scale <= 1.0 && st.scale > 1.0 - 1e-5,
        "scale {}",
        st.scale
    );
}

#[test]
fn measure_only_and_edge_cases() {
    let ctx = ctx();
    let k = Clip::new(&ctx);
    let x = values_in(1000, 9, 1.0);
    let g = ctx.storage_init("grads", &x).unwrap();

    // No clipping: three dispatches, stats only, gradients untouched.
    let plan = k
        .plan(&ctx, &g, &[(0, 500), (500, 500)], None, None)
        .unwrap();
    assert_eq!(plan.dispatches.len(), 3);
    run(&ctx, &plan);
    let st = plan.read(&ctx).unwrap();
    check_norms("measure", &st, &x, &[(0, 500), (500, 500)]);
    assert_eq!(st.scale, 1.0);
    assert_eq!(bits(&ctx.read_f32(&g, 0, 1000).unwrap()), bits(&x));

    // No segments, or only empty ones: norm 0, scale 1.
    for segs in [&[][..], &[(3, 0), (10, 0)][..]] {
        let plan = k.plan(&ctx, &g, segs, Some(1.0), Some(1.0)).unwrap();
        run(&ctx, &plan);
        let st = plan.read(&ctx).unwrap();
        assert_eq!(st.total_norm, 0.0);
        assert_eq!(st.scale, 1.0);
        assert!(!st.nonfinite);
        assert_eq!(st.per_tensor, vec![0.0; segs.len()]);
    }

    // Bad arguments are refused.
    assert!(k.plan(&ctx, &g, &[(0, 1001)], Some(1.0), None).is_err());
    assert!(
        k.plan(&ctx, &g, &[(0, 10), (9, 5)], Some(1.0), None)
            .is_err()
    );
    assert!(k.plan(&ctx, &g, &[(usize::MAX, 2)], None, None).is_err());
    assert!(k.plan(&ctx, &g, &[(0, 10)], Some(-1.0), None).is_err());
    assert!(k.plan(&ctx, &g, &[(0, 10)], Some(f32::NAN), None).is_err());
    assert!(
        k.plan(&ctx, &g, &[(0, 10)], None, Some(f32::INFINITY))
            .is_err()
    );
}

#[test]
fn more_chunks_than_one_grid_row() {
    let ctx = ctx();
    let k = Clip::new(&ctx);
    // One chunk per segment: more chunks than workgroups allowed in x, so
    // the dispatches use a 2-D grid.
    let nseg = ctx.limits.max_compute_workgroups_per_dimension as usize + 1000;
    let n = 2 * nseg;
    let x = values_in(n, 11, 1.0);
    let segs: Vec<(usize, usize)> = (0..nseg).map(|i| (2 * i + 1, 1)).collect();
    let (norm, _) = ref_norms(&x, &segs);
    let max_norm = (0.5 * norm) as f32;
    let g = ctx.storage_init("grads", &x).unwrap();
    let plan = k.plan(&ctx, &g, &segs, Some(max_norm), None).unwrap();
    run(&ctx, &plan);
    let st = plan.read(&ctx).unwrap();
    let got = ctx.read_f32(&g, 0, n).unwrap();
    check_norms("2-D grid", &st, &x, &segs);
    let scale = max_norm as f64 / (norm + 1e-6);
    for i in 0..n {
        if i % 2 == 1 {
            assert!(
                rel(got[i], x[i] as f64 * scale) <= 1e-5 || x[i] == 0.0,
                "[{i}]"
            );
        } else {
            assert_eq!(got[i].to_bits(), x[i].to_bits(), "[{i}]");
        }
    }
}

/// The GradScaler update rule on the host: (scale, good steps, skipped)
/// after one step.
fn scaler_rule(c: &ScalerConfig, s: ScalerState, found_inf: bool) -> ScalerState {
    let mut n = s;
    if found_inf {
        n.scale = s.scale * c.backoff;
        n.good_steps = 0;
        n.skipped += 1;
    } else if s.good_steps + 1 == c.interval {
        let g = s.scale * c.growth;
        if g.is_finite() {
            n.scale = g;
        }
        n.good_steps = 0;
    } else {
        n.good_steps += 1;
    }
    n
}

#[test]
fn loss_scaler_unscale_fused_into_clip() {
    let ctx = ctx();
    let k = Clip::new(&ctx);
    let n = 2 * CHUNK + 777;
    let segs = [(0, 1000), (1000, n - 1000)];
    let u = values_in(n, 11, 1.0);
    let (norm_u, _) = ref_norms(&u, &segs);
    let cfg = ScalerConfig {
        interval: 3,
        ..Default::default()
    };
    let g = ctx.storage("grads", n).unwrap();
    let max_norm = (0.5 * norm_u) as f32;
    let opts = ClipOptions {
        max_norm: Some(max_norm),
        clip_value: Some(0.3),
        scaler: Some(cfg),
    };
    let plan = k.plan_with(&ctx, &g, &segs, &opts, None).unwrap();
    let mut state = ScalerState::new(&cfg);
    assert_eq!(plan.scaler_state(&ctx).unwrap(), Some(state));

    // Steps 1..=7: finite gradients carrying S; S doubles after every 3.
    for step in 1..=7 {
        let s = state.scale;
        let scaled: Vec<f32> = u.iter().map(|&v| v * s).collect();
        ctx.write(&g, 0, &scaled);
        run(&ctx, &plan);
        let st = plan.read(&ctx).unwrap();
        assert_eq!(st.loss_scale, s, "step {step}: scale used");
        check_norms(&format!("step {step}"), &st, &u, &segs);
        let coef = max_norm as f64 / (norm_u + 1e-6);
        assert!(rel(st.scale, coef) <= 1e-5, "step {step}: clip scale");
        // Unscaled, clipped by norm, then clamped to 0.3.
        let want: Vec<f64> = u
            .iter()
            .map(|&v| (v as f64 * coef).clamp(-0.3, 0.3))
            .collect();
        let got = ctx.read_f32(&g, 0, n).unwrap();
        assert_close(&format!("step {step}: gradients"), &got, &want, 1e-6);
        state = scaler_rule(&cfg, state, false);
        assert_eq!(plan.scaler_state(&ctx).unwrap(), Some(state), "step {step}");
    }
    assert_eq!(state.scale, 65536.0 * 4.0);
    assert_eq!(state.good_steps, 1);

    // A non-finite gradient: flagged, left untouched, S halves, counted.
    let mut bad: Vec<f32> = u.iter().map(|&v| v * state.scale).collect();
    bad[CHUNK + 5] = f32::INFINITY;
    ctx.write(&g, 0, &bad);
    run(&ctx, &plan);
    let st = plan.read(&ctx).unwrap();
    assert!(st.nonfinite && st.scale == 1.0);
    assert_eq!(bits(&ctx.read_f32(&g, 0, n).unwrap()), bits(&bad));
    state = scaler_rule(&cfg, state, true);
    assert_eq!(state.skipped, 1);
    assert_eq!(plan.scaler_state(&ctx).unwrap(), Some(state));

    // Finite gradients that overflow once unscaled (S < 1) are non-finite.
    let tiny = ScalerState {
        scale: 2f32.powi(-100),
        good_steps: 2,
        skipped: 1,
    };
    plan.set_scaler_state(&ctx, &tiny).unwrap();
    let big = vec![1e10f32; n];
    ctx.write(&g, 0, &big);
    run(&ctx, &plan);
    assert!(plan.read(&ctx).unwrap().nonfinite);
    assert_eq!(bits(&ctx.read_f32(&g, 0, n).unwrap()), bits(&big));
    let after = plan.scaler_state(&ctx).unwrap().unwrap();
    assert_eq!(after, scaler_rule(&cfg, tiny, true));

    // Growth that would overflow f32 keeps the scale.
    let top = ScalerState {
        scale: 2f32.powi(127),
        good_steps: 2,
        skipped: 0,
    };
    plan.set_scaler_state(&ctx, &top).unwrap();
    ctx.write(&g, 0, &vec![0.0f32; n]);
    run(&ctx, &plan);
    let after = plan.scaler_state(&ctx).unwrap().unwrap();
    assert_eq!(after.scale, 2f32.powi(127));
    assert_eq!(after.good_steps, 0);

    // Bad states and configurations are refused by name.
    for s in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let e = plan
            .set_scaler_state(&ctx, &ScalerState { scale: s, ..state })
            .unwrap_err();
        assert!(e.to_string().contains("loss scaler"), "{e}");
    }
    for bad in [
        ScalerConfig { growth: 0.5, ..cfg },
        ScalerConfig {
            backoff: 1.0,
            ..cfg
        },
        ScalerConfig { interval: 0, ..cfg },
        ScalerConfig {
            init_scale: f32::NAN,
            ..cfg
        },
    ] {
        let o = ClipOptions {
            scaler: Some(bad),
            ..opts
        };
        let e = k.plan_with(&ctx, &g, &segs, &o, None).err().unwrap();
        assert!(e.to_string().contains("loss scaler"), "{e}");
    }
    let plain = k.plan(&ctx, &g, &segs, Some(1.0), None).unwrap();
    assert!(plain.scaler_state(&ctx).unwrap().is_none());
    assert!(plain.set_scaler_state(&ctx, &state).is_err());
}

/// With a power-of-two scale and nothing else to do, the unscale is exact,
/// and a plan without a scaler leaves gradients carrying S alone.
#[test]
fn loss_scaler_alone_unscales_exactly() {
    let ctx = ctx();
    let k = Clip::new(&ctx);
    let n = 5000;
    let u = values_in(n, 12, 3.0);
    let scaled: Vec<f32> = u.iter().map(|&v| v * 1024.0).collect();
    let g = ctx.storage_init("grads", &scaled).unwrap();
    let cfg = ScalerConfig {
        init_scale: 1024.0,
        ..Default::default()
    };
    let opts = ClipOptions {
        scaler: Some(cfg),
        ..Default::default()
    };
    let plan = k.plan_with(&ctx, &g, &[(0, n)], &opts, None).unwrap();
    assert_eq!(plan.dispatches.len(), 4, "the unscale needs apply");
    run(&ctx, &plan);
    let st = plan.read(&ctx).unwrap();
    check_norms("unscaled", &st, &u, &[(0, n)]);
    assert_eq!(st.loss_scale, 1024.0);
    assert_eq!(bits(&ctx.read_f32(&g, 0, n).unwrap()), bits(&u));

    // Replanning onto the same stats keeps the scaler's state; a plan
    // without a scaler reports scale 1.
    let again = k
        .plan_with(&ctx, &g, &[(0, n)], &opts, Some(&plan.stats))
        .unwrap();
    assert_eq!(again.scaler_state(&ctx).unwrap().unwrap().good_steps, 1);
    let plain = k
        .plan_with(
            &ctx,
            &g,
            &[(0, n)],
            &ClipOptions::default(),
            Some(&plan.stats),
        )
        .unwrap();
    run(&ctx, &plain);
    assert_eq!(plain.read(&ctx).unwrap().loss_scale, 1.0);
    let wrong = ctx.storage("stats", 3).unwrap();
    assert!(
        k.plan_with(&ctx, &g, &[(0, n)], &opts, Some(&wrong))
            .is_err()
    );
}
