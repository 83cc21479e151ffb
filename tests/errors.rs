//! Bad input through the library API: clear errors, never a panic or a
//! wgpu validation abort.

mod common;

use common::{set_cell, set_path};
use lstm_wgpu::{Batch, Error, Lstm, LstmConfig, LstmModel, NamedTensor, Upstream};

fn cfg(i: usize, h: usize) -> LstmConfig {
    LstmConfig {
        input_size: i,
        hidden_size: h,
        num_layers: 1,
        bidirectional: false,
        bias: true,
        cell: Default::default(),
        proj_size: 0,
    }
}

#[test]
fn model_over_adapter_limits() {
    let ctx = common::ctx();
    // 4H(I+H) parameters: far beyond any storage binding limit.
    let e = LstmModel::init_uniform(&ctx, cfg(60_000, 60_000), 0)
        .err()
        .expect("must fail");
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    assert!(e.to_string().contains("parameters"), "{e}");
}

#[test]
fn workspace_over_adapter_limits() {
    let ctx = common::ctx();
    let model = LstmModel::init_uniform(&ctx, cfg(1, 512), 0).unwrap_or_else(|e| panic!("{e}"));
    let mut lstm = Lstm::new(ctx.clone(), model).unwrap_or_else(|e| panic!("{e}"));
    let (limit, _) = ctx.max_storage_bytes();
    // Enough steps that the gate cache [T, B, 6H] cannot fit.
    let t = (limit / (6 * 512 * 4) + 1) as usize;
    let x = vec![0.1f32; t];
    let b = Batch {
        input: &x,
        seq_len: t,
        batch: 1,
        batch_first: false,
        h0: None,
        c0: None,
        lengths: None,
    };
    let e = lstm.forward(&b).expect_err("must fail");
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
}

#[test]
fn bad_batches_name_the_tensor() {
    let ctx = common::ctx();
    let model = LstmModel::init_uniform(&ctx, cfg(3, 4), 0).unwrap_or_else(|e| panic!("{e}"));
    let mut lstm = Lstm::new(ctx, model).unwrap_or_else(|e| panic!("{e}"));
    let x = vec![0.5f32; 5 * 2 * 3];
    let ok = Batch {
        input: &x,
        seq_len: 5,
        batch: 2,
        batch_first: false,
        h0: None,
        c0: None,
        lengths: None,
    };
    let short = vec![0.5f32; 29];
    let mut nan = x.clone();
    nan[7] = f32::NAN;
    let h_bad = vec![0f32; 7];
    let cases: Vec<(Batch, &str)> = vec![
        (
            Batch {
                input: &short,
                ..ok
            },
            "input",
        ),
        (Batch { input: &nan, ..ok }, "input"),
        (
            Batch {
                h0: Some(&h_bad),
                ..ok
            },
            "h0",
        ),
        (
            Batch {
                c0: Some(&h_bad),
                ..ok
            },
            "c0",
        ),
        (
            Batch {
                lengths: Some(&[5, 0]),
                ..ok
            },
            "lengths",
        ),
        (
            Batch {
                lengths: Some(&[6, 1]),
                ..ok
            },
            "lengths",
        ),
        (
            Batch {
                lengths: Some(&[5]),
                ..ok
            },
            "lengths",
        ),
        (
            Batch {
                seq_len: 0,
                input: &[],
                ..ok
            },
            "input",
        ),
    ];
    for (b, name) in cases {
        match lstm.forward(&b) {
            Err(Error::Tensor { name: n, msg }) => assert_eq!(n, name, "{msg}"),
            other => panic!("expected an error naming `{name}`, got {other:?}"),
        }
    }
    let g = [0f32; 5 * 2 * 4];
    let s = vec![0f32; 2 * 4];
    let up = Upstream {
        grad_output: &g[1..],
        grad_h_n: &s,
        grad_c_n: &s,
    };
    match lstm.forward_backward(&ok, &up) {
        Err(Error::Tensor { name, .. }) => assert_eq!(name, "grad_output"),
        other => panic!("expected a grad_output error, got {other:?}"),
    }
    // The model still works after rejected input.
    let out = lstm.forward(&ok).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.output.len(), 5 * 2 * 4);
}

#[test]
fn state_dict_mismatches() {
    let t = |n: &str, shape: Vec<usize>| {
        NamedTensor::new(n, shape.clone(), vec![0.0; shape.iter().product()])
    };
    let good = vec![
        t("weight_ih_l0", vec![8, 3]),
        t("weight_hh_l0", vec![8, 2]),
        t("bias_ih_l0", vec![8]),
        t("bias_hh_l0", vec![8]),
    ];
    let (c, v) = LstmModel::host_values(&good).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c,
        LstmConfig {
            input_size: 3,
            hidden_size: 2,
            num_layers: 1,
            bidirectional: false,
            bias: true,
            cell: Default::default(),
            proj_size: 0,
        }
    );
    assert_eq!(v.len(), 8 * 3 + 8 * 2 + 16);
    let name_of = |ts: &[NamedTensor]| match LstmModel::host_values(ts) {
        Err(Error::Tensor { name, .. }) => name,
        other => panic!("expected a tensor error, got {other:?}"),
    };
    let mut extra = good.clone();
    extra.push(t("weight_hh_l0_reverse", vec![8, 2]));
    assert_eq!(name_of(&extra), "weight_ih_l0_reverse");
    let mut wrong = good.clone();
    wrong[2] = t("bias_ih_l0", vec![9]);
    assert_eq!(name_of(&wrong), "bias_ih_l0");
    let mut nobias_hh = good.clone();
    nobias_hh.pop();
    assert_eq!(name_of(&nobias_hh), "bias_hh_l0");
    let mut stray = good.clone();
    stray.push(t("head.weight", vec![1, 2]));
    assert_eq!(name_of(&stray), "head.weight");
    let mut bad_hh = good;
    bad_hh[1] = t("weight_hh_l0", vec![8, 3]);
    assert_eq!(name_of(&bad_hh), "weight_hh_l0");
}

/// The schedule's shape: per layer and direction, one input GEMM plus one
/// cell dispatch per step forward; backward one cell dispatch per step, one
/// for the initial-state gradients, two weight GEMMs, one bias reduction,
/// and one input-gradient GEMM. The persistent path replaces each layer's
/// cell dispatches (all directions) by one per time chunk forward and one
/// per chunk backward, the initial-state gradients included (one chunk
/// unless the driver caps loop iterations).
#[test]
fn dispatch_counts() {
    use lstm_wgpu::kernels::lstm_cell::CellVariant;
    use lstm_wgpu::schedule::CellPath;
    let ctx = common::ctx();
    for (layers, bidir, bias, path, variant) in [
        (2, false, true, CellPath::PerStep, CellVariant::Direct),
        (3, true, false, CellPath::PerStep, CellVariant::Direct),
        (3, true, false, CellPath::PerStep, CellVariant::Tiled),
        (2, false, true, CellPath::Persistent, CellVariant::Direct),
        (3, true, false, CellPath::Persistent, CellVariant::Tiled),
        (2, false, true, CellPath::Wavefront, CellVariant::Direct),
        (3, false, false, CellPath::Wavefront, CellVariant::Tiled),
    ] {
        let c = LstmConfig {
            input_size: 3,
            hidden_size: 4,
            num_layers: layers,
            bidirectional: bidir,
            bias,
            cell: Default::default(),
            proj_size: 0,
        };
        let model = LstmModel::init_uniform(&ctx, c.clone(), 0).unwrap_or_else(|e| panic!("{e}"));
        let mut lstm = Lstm::new(ctx.clone(), model).unwrap_or_else(|e| panic!("{e}"));
        set_path(&mut lstm, Some(path));
        set_cell(&mut lstm, variant);
        let (t, n) = (7, 2);
        let x = vec![0.5f32; t * n * 3];
        let b = Batch {
            input: &x,
            seq_len: t,
            batch: n,
            batch_first: false,
            h0: None,
            c0: None,
            lengths: None,
        };
        lstm.forward(&b).unwrap_or_else(|e| panic!("{e}"));
        let cells = layers * c.dirs();
        let (fwd, bwd) = match path {
            CellPath::PerStep => {
                // Both directions of a step share one dispatch.
                (
                    cells + layers * t,
                    layers * (t + 1) + cells * (2 + usize::from(bias) + 1),
                )
            }
            CellPath::Wavefront => {
                // Skew C (CPU adapters: ceil(sqrt(7)) = 3; GPUs: 4): T +
                // (L-1)C cell dispatches per pass, (L-1)ceil(T/C) chunk
                // GEMMs, one state-gradient dispatch for all layers.
                let c = lstm
                    .plan(t, n)
                    .ok()
                    .and_then(|p| p.skew)
                    .expect("a wavefront plan has a skew");
                let waves = t + (layers - 1) * c;
                let chunks = (layers - 1) * t.div_ceil(c);
                (
                    1 + chunks + waves,
                    waves + chunks + 1 + layers * (2 + usize::from(bias)) + 1,
                )
            }
            CellPath::Persistent => {
                let lay = lstm
                    .kernels()
                    .persistent
                    .layout(&ctx, Default::default(), 4, n, c.dirs(), t)
                    .unwrap_or_else(|e| panic!("{e}"));
                (
                    cells + layers * lay.fwd_dispatches(),
                    layers * lay.bwd_dispatches() + cells * (2 + usize::from(bias) + 1),
                )
            }
        };
        assert_eq!(
            lstm.dispatch_counts(t, n),
            Some((fwd, bwd)),
            "{path} {variant:?}"
        );
        assert_eq!(lstm.plan(t, n).map(|p| p.path).ok(), Some(path));
    }
}

/// A forced wavefront on a model it cannot run fails with the reason, and
/// the automatic choice falls back to the layer-by-layer schedule.
#[test]
fn wavefront_obstacles_are_named() {
    use lstm_wgpu::schedule::CellPath;
    let ctx = common::ctx();
    for (layers, bidir, why) in [
        (1, false, "at least 2 layers"),
        (2, true, "bidirectional"),
        (9, false, "at most 8 layers"),
    ] {
        let c = LstmConfig {
            input_size: 3,
            hidden_size: 40,
            num_layers: layers,
            bidirectional: bidir,
            bias: true,
            cell: Default::default(),
            proj_size: 0,
        };
        let model = LstmModel::init_uniform(&ctx, c, 0).unwrap_or_else(|e| panic!("{e}"));
        let mut lstm = Lstm::new(ctx.clone(), model).unwrap_or_else(|e| panic!("{e}"));
        set_path(&mut lstm, Some(CellPath::Wavefront));
        match lstm.plan(4, 2) {
            Err(Error::Invalid(m)) => assert!(m.contains(why), "{m}"),
            Err(e) => panic!("expected an invalid-input error, got {e}"),
            Ok(_) => panic!("L={layers} bidir={bidir}: forced wavefront ran"),
        }
        set_path(&mut lstm, Some(CellPath::PerStep));
        let p = lstm.plan(4, 2).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.path, CellPath::PerStep);
        assert_eq!(p.skew, None);
    }
    assert!(matches!(
        {
            let model = LstmModel::init_uniform(
                &ctx,
                LstmConfig {
                    input_size: 3,
                    hidden_size: 40,
                    num_layers: 2,
                    bidirectional: false,
                    bias: true,
                    cell: Default::default(),
                    proj_size: 0,
                },
                0,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            Lstm::new(ctx.clone(), model)
                .unwrap_or_else(|e| panic!("{e}"))
                .set_tuning(lstm_wgpu::Tuning {
                    wave_skew: Some(0),
                    ..lstm_wgpu::Tuning::default()
                })
        },
        Err(Error::Invalid(_))
    ));
}

/// An adapter without SHADER_F16 (simulated: the context's flag cleared)
/// refuses f16-mixed with an error naming the feature, and `auto` falls
/// back to f32 with a warning.
#[test]
fn f16_mixed_needs_shader_f16() {
    use lstm_wgpu::model::norm::Norm;
    use lstm_wgpu::model::precision::{Precision, PrecisionChoice, resolve};
    let mut ctx = lstm_wgpu::GpuContext::new().unwrap_or_else(|e| panic!("{e}"));
    ctx.f16 = false;
    let e = resolve(
        PrecisionChoice::F16Mixed,
        &ctx,
        &Norm::None,
        lstm_wgpu::Cell::Lstm,
    )
    .expect_err("f16 without F16");
    assert!(e.to_string().contains("SHADER_F16"), "{e}");
    let (p, warning) = resolve(
        PrecisionChoice::Auto,
        &ctx,
        &Norm::None,
        lstm_wgpu::Cell::Lstm,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p, Precision::F32);
    assert!(warning.is_some_and(|w| w.contains("SHADER_F16")));
    let ctx = std::sync::Arc::new(ctx);
    let model = LstmModel::init_uniform(&ctx, cfg(3, 8), 0).unwrap_or_else(|e| panic!("{e}"));
    let mut lstm = Lstm::new(ctx, model).unwrap_or_else(|e| panic!("{e}"));
    let e = lstm
        .set_precision(Precision::F16Mixed)
        .expect_err("set_precision without F16");
    assert!(e.to_string().contains("SHADER_F16"), "{e}");
    assert_eq!(lstm.precision(), Precision::F32);
}
