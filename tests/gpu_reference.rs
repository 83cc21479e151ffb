//! Every output and gradient of the GPU path against the f64 reference.
//! Tolerance: max |gpu - ref| / max |ref| <= 1e-4 per tensor (f32 kernels
//! against f64 math; observed errors are around 1e-6).

mod common;

use common::cases::*;
use common::*;
use lstm_wgpu::{Batch, Cell, Grads, Lstm, LstmModel, Outputs, Tuning, Upstream};

const TOL: f64 = 1e-4;

/// A tile with several K chunks and 3 slices at small H.
const SLICED: lstm_wgpu::kernels::lstm_cell::TileConfig =
    lstm_wgpu::kernels::lstm_cell::TileConfig {
        tb: 8,
        tu: 8,
        kc: 8,
        ks: 3,
    };

fn run_case(ctx: &std::sync::Arc<lstm_wgpu::GpuContext>, c: Case, seed: u64) {
    run_case_with(ctx, c, seed, |_| {});
}

/// The wavefront (layer l + 1 at step s - C beside layer l at step s)
/// against the f64 reference, and bit for bit against the layer-by-layer
/// per-step schedule (same kernels, same summation order), for both cell
/// variants, skews from 1 to past T (partial chunks at either end), 2 to 4
/// layers, lengths, carried states and batch-first data.
#[test]
fn wavefront() {
    use lstm_wgpu::kernels::lstm_cell::{CellVariant, TileConfig};
    use lstm_wgpu::schedule::CellPath;
    let ctx = ctx();
    let cases = [
        Case {
            hidden: 70,
            input: 9,
            seq: 7,
            batch: 11,
            layers: 2,
            states: true,
            lengths: Lengths::Spread,
            ..Case::BASE
        },
        Case {
            hidden: 8,
            input: 3,
            seq: 9,
            batch: 5,
            layers: 3,
            bias: false,
            lengths: Lengths::Spread,
            batch_first: true,
            ..Case::BASE
        },
        Case {
            hidden: 13,
            seq: 1,
            batch: 2,
            layers: 4,
            states: true,
            ..Case::BASE
        },
    ];
    let mut seed = 400;
    for (variant, tile) in [
        (CellVariant::Direct, TileConfig::DEFAULT),
        (CellVariant::Tiled, TileConfig::DEFAULT),
        (CellVariant::Tiled, SLICED),
    ] {
        for c in cases {
            let setup = |path: CellPath, skew: Option<usize>| {
                move |l: &mut Lstm| {
                    l.set_tuning(Tuning {
                        cell_path: Some(path),
                        wave_skew: skew,
                        cell: Some(variant),
                        cell_tile: Some(tile),
                        ..Tuning::default()
                    })
                    .unwrap_or_else(|e| panic!("{e}"));
                }
            };
            let base = run_case_with(&ctx, c, seed, setup(CellPath::PerStep, None));
            for skew in [None, Some(1), Some(2), Some(4), Some(20)] {
                let label = format!(
                    "{variant:?} {tile:?} L={} T={} skew={skew:?}",
                    c.layers, c.seq
                );
                let wave = run_case_with(&ctx, c, seed, setup(CellPath::Wavefront, skew));
                assert!(wave == base, "{label}: wavefront differs from per-step");
            }
            seed += 1;
        }
    }
}

/// `setup` adjusts the LSTM (forced path or cell variant) before the pass.
/// Returns what forward_backward gave (in the pass's layout).
fn run_case_with(
    ctx: &std::sync::Arc<lstm_wgpu::GpuContext>,
    c: Case,
    seed: u64,
    setup: impl Fn(&mut Lstm),
) -> (Outputs, Grads) {
    run_case_tol(ctx, c, seed, setup, TOL)
}

fn run_case_tol(
    ctx: &std::sync::Arc<lstm_wgpu::GpuContext>,
    c: Case,
    seed: u64,
    setup: impl Fn(&mut Lstm),
    tol: f64,
) -> (Outputs, Grads) {
    let label = format!("{c:?}");
    let d = c.data(seed);
    let mut lstm = c.lstm(ctx, &d);
    assert_eq!(lstm.model.config, config(&d.rc));
    setup(&mut lstm);
    // The GPU side gets batch-first data when asked, the reference always
    // time-major; results are converted back for comparison.
    let hp = HostPass::new(&d, c.batch_first);
    let batch = hp.batch();
    let (out, grads) = lstm
        .forward_backward(&batch, &hp.upstream())
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    let w_io = d.rc.dirs() * c.hidden;
    let out_tm = Outputs {
        output: hp.time_major(out.output.clone(), w_io),
        ..out.clone()
    };
    let grads_tm = Grads {
        input: hp.time_major(grads.input.clone(), c.input),
        ..grads.clone()
    };
    check_reference(&label, &d, (&out_tm, &grads_tm), tol);
    // Forward alone must agree with the forward half of forward_backward.
    let fo = lstm
        .forward(&batch)
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    assert_eq!(fo, out, "{label}: forward differs from forward_backward");
    (out, grads)
}

#[test]
fn grid_small() {
    let ctx = ctx();
    for (seed, c) in core_grid() {
        run_case(&ctx, c, seed);
    }
}

/// The core grid: 1–3 layers, uni- and bidirectional, with and without
/// bias, states and lengths, each case with its own seed.
fn core_grid() -> Vec<(u64, Case)> {
    let mut v = Vec::new();
    for layers in 1..=3 {
        for bidir in [false, true] {
            for (bias, states, lengths) in [
                (true, false, Lengths::Full),
                (false, true, Lengths::Spread),
                (true, true, Lengths::Spread),
            ] {
                let c = Case {
                    layers,
                    bidir,
                    bias,
                    states,
                    lengths,
                    ..Case::BASE
                };
                v.push((v.len() as u64 + 1, c));
            }
        }
    }
    v
}

/// f16-mixed over the core grid, within the f16 tolerance.
#[test]
fn grid_small_f16_mixed() {
    use lstm_wgpu::model::precision::Precision;
    let ctx = ctx();
    for (seed, c) in core_grid() {
        run_case_tol(
            &ctx,
            c,
            seed,
            |l| {
                l.set_precision(Precision::F16Mixed)
                    .unwrap_or_else(|e| panic!("{e}"))
            },
            F16_TOL,
        );
    }
}

/// Both per-step cell variants (whichever the adapter would pick) over
/// shapes that leave partial 8 x 8 tiles, several K chunks (H = 70),
/// lengths, reverse directions and carried states.
#[test]
fn per_step_cell_variants() {
    use lstm_wgpu::kernels::lstm_cell::{CellVariant, TileConfig};
    use lstm_wgpu::schedule::CellPath;
    let ctx = ctx();
    let wide = TileConfig {
        tb: 4,
        tu: 16,
        kc: 64,
        ks: 1,
    };
    for (variant, tile) in [
        (CellVariant::Direct, TileConfig::DEFAULT),
        (CellVariant::Tiled, TileConfig::DEFAULT),
        (CellVariant::Tiled, wide),
        (CellVariant::Tiled, SLICED),
    ] {
        for (i, c) in [
            Case {
                hidden: 70,
                input: 9,
                seq: 5,
                batch: 11,
                bidir: true,
                layers: 2,
                states: true,
                lengths: Lengths::Spread,
                ..Case::BASE
            },
            Case {
                hidden: 8,
                input: 3,
                seq: 4,
                batch: 8,
                ..Case::BASE
            },
            Case {
                hidden: 13,
                seq: 1,
                batch: 1,
                states: true,
                ..Case::BASE
            },
            // H a multiple of 4 (the direct variant's vec4 path), a partial
            // group of 4 batch rows, both directions, lengths and states.
            Case {
                hidden: 12,
                input: 4,
                seq: 6,
                batch: 7,
                bidir: true,
                layers: 2,
                states: true,
                lengths: Lengths::Spread,
                ..Case::BASE
            },
        ]
        .into_iter()
        .enumerate()
        {
            run_case_with(&ctx, c, 300 + i as u64, |l| {
                l.set_tuning(Tuning {
                    cell_path: Some(CellPath::PerStep),
                    cell: Some(variant),
                    cell_tile: Some(tile),
                    ..Tuning::default()
                })
                .unwrap_or_else(|e| panic!("{e}"));
            });
        }
    }
}

/// The tiled cell takes `TileConfig::LARGE` for lanes with enough large
/// tiles (`LARGE_TILE_MIN_GROUPS`) unless a tile was set; decided per lane,
/// so the wavefront keeps the bits of the layer-by-layer schedule (one lane
/// per dispatch there, up to one per layer in the wavefront). Both match the
/// reference, in f32 and f16-mixed.
#[test]
fn large_cell_tile_for_large_lanes() {
    use lstm_wgpu::kernels::lstm_cell::{CellVariant, LARGE_TILE_MIN_GROUPS, LstmCell, TileConfig};
    use lstm_wgpu::model::precision::Precision;
    use lstm_wgpu::schedule::CellPath;
    let ctx = ctx();
    let fits = TileConfig::LARGE.check(&ctx.limits).is_ok();
    if lstm_wgpu::gpu::cpu_adapter(&ctx.info) {
        assert!(fits, "{}: the large tile fits lavapipe", ctx.describe());
    }
    let want = |large: bool| match large && fits {
        true => TileConfig::LARGE,
        false => TileConfig::DEFAULT,
    };
    let auto = LstmCell::new(&ctx, Cell::Lstm, CellVariant::Tiled, None, false, true)
        .unwrap_or_else(|e| panic!("{e}"));
    let set = LstmCell::new(
        &ctx,
        Cell::Lstm,
        CellVariant::Tiled,
        Some(TileConfig::DEFAULT),
        false,
        true,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // 8 x 16 large tiles: exactly the threshold.
    assert_eq!(TileConfig::LARGE.groups(128, 256), LARGE_TILE_MIN_GROUPS);
    assert_eq!(auto.tile_for(128, 256), want(true));
    assert_eq!(auto.tile_for(128, 240), want(false));
    assert_eq!(set.tile_for(128, 256), TileConfig::DEFAULT);
    // `big` (H = 512, B = 64) takes it; `char` (H = 256, B = 32) does not.
    assert_eq!(auto.tile_for(512, 64), want(true));
    assert_eq!(auto.tile_for(256, 32), TileConfig::DEFAULT);
    let mut precisions = vec![(Precision::F32, TOL)];
    if ctx.f16 {
        precisions.push((Precision::F16Mixed, F16_TOL));
    }
    // Large lanes, then lanes of 64 large tiles (two of them fill a wavefront
    // dispatch to the threshold, which must not change the tile).
    for (i, (b, large)) in [(256, true), (128, false)].into_iter().enumerate() {
        let c = Case {
            hidden: 128,
            input: 6,
            seq: 3,
            batch: b,
            layers: 2,
            states: true,
            lengths: Lengths::Spread,
            ..Case::BASE
        };
        for &(precision, tol) in &precisions {
            let setup = |path: CellPath| {
                move |l: &mut Lstm| {
                    l.set_tuning(Tuning {
                        cell_path: Some(path),
                        cell: Some(CellVariant::Tiled),
                        ..Tuning::default()
                    })
                    .unwrap_or_else(|e| panic!("{e}"));
                    l.set_precision(precision).unwrap_or_else(|e| panic!("{e}"));
                    let cell = l
                        .kernels()
                        .cell(Cell::Lstm)
                        .unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(cell.tile_for(128, b), want(large));
                }
            };
            let seed = 360 + i as u64;
            let base = run_case_tol(&ctx, c, seed, setup(CellPath::PerStep), tol);
            let wave = run_case_tol(&ctx, c, seed, setup(CellPath::Wavefront), tol);
            assert!(
                wave == base,
                "B={b} {precision:?}: the wavefront's bits differ from per-step"
            );
        }
    }
}

/// With 8-lane subgroups (lavapipe), the direct cell's wide path runs as
/// `*_sg` for B > 16 (forward when H is a multiple of 8, backward when of
/// 32; here with partial groups of 32 rows) and the
/// aligned GEMMs as `gemm_sg`: the same products in the same order, so the
/// same bits as a context without subgroups, and both match the reference,
/// in f32 and in f16-mixed.
#[test]
fn subgroup_kernels_match_the_wide_path() {
    use lstm_wgpu::model::precision::Precision;
    use lstm_wgpu::schedule::CellPath;
    let ctx = ctx();
    // lavapipe's 8-lane subgroups must reach the kernels under test (the
    // library reads no environment: nothing turns them off here).
    if lstm_wgpu::gpu::cpu_adapter(&ctx.info)
        && ctx.info.subgroup_min_size == 8
        && ctx.info.subgroup_max_size == 8
    {
        assert_eq!(
            ctx.subgroup,
            Some(8),
            "{}: 8-lane subgroups",
            ctx.describe()
        );
    }
    let mut plain = lstm_wgpu::GpuContext::new().unwrap_or_else(|e| panic!("{e}"));
    plain.subgroup = None;
    let plain = std::sync::Arc::new(plain);
    for (i, (c, path)) in [
        (
            Case {
                hidden: 64,
                input: 9,
                seq: 5,
                batch: 19,
                bidir: true,
                layers: 2,
                states: true,
                lengths: Lengths::Spread,
                ..Case::BASE
            },
            CellPath::PerStep,
        ),
        (
            Case {
                hidden: 32,
                input: 8,
                seq: 7,
                batch: 33,
                layers: 3,
                states: true,
                lengths: Lengths::Spread,
                ..Case::BASE
            },
            CellPath::Wavefront,
        ),
        (
            Case {
                hidden: 40,
                input: 4,
                seq: 4,
                batch: 17,
                ..Case::BASE
            },
            CellPath::PerStep,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        for (precision, tol) in [(Precision::F32, TOL), (Precision::F16Mixed, F16_TOL)] {
            let setup = |l: &mut Lstm| {
                set_path(l, Some(path));
                l.set_precision(precision).unwrap_or_else(|e| panic!("{e}"));
            };
            let with = run_case_tol(&ctx, c, 700 + i as u64, setup, tol);
            let without = run_case_tol(&plain, c, 700 + i as u64, setup, tol);
            assert!(
                with == without,
                "case {i} {precision:?}: subgroup kernels change the bits"
            );
        }
    }
}

#[test]
fn odd_sizes_and_t1() {
    let ctx = ctx();
    for (i, c) in [
        Case {
            hidden: 13,
            input: 3,
            seq: 1,
            batch: 1,
            ..Case::BASE
        },
        Case {
            hidden: 13,
            input: 1,
            seq: 1,
            batch: 4,
            bidir: true,
            layers: 2,
            states: true,
            lengths: Lengths::Spread,
            ..Case::BASE
        },
        Case {
            hidden: 33,
            input: 17,
            seq: 9,
            batch: 5,
            bidir: true,
            layers: 2,
            lengths: Lengths::Spread,
            batch_first: true,
            ..Case::BASE
        },
        Case {
            hidden: 1,
            input: 2,
            seq: 4,
            batch: 2,
            layers: 3,
            ..Case::BASE
        },
    ]
    .into_iter()
    .enumerate()
    {
        run_case(&ctx, c, 100 + i as u64);
    }
}

#[test]
fn long_sequence() {
    let ctx = ctx();
    run_case(
        &ctx,
        Case {
            layers: 2,
            bidir: true,
            input: 8,
            hidden: 16,
            seq: 53,
            batch: 3,
            states: true,
            lengths: Lengths::Spread,
            ..Case::BASE
        },
        7,
    );
}

#[test]
fn large_layer() {
    let ctx = ctx();
    run_case(
        &ctx,
        Case {
            layers: 1,
            input: 128,
            hidden: 256,
            seq: 4,
            batch: 2,
            states: true,
            ..Case::BASE
        },
        9,
    );
}

#[test]
fn bit_identical_runs() {
    let ctx = ctx();
    let cfg = lstm_wgpu::LstmConfig {
        input_size: 6,
        hidden_size: 10,
        num_layers: 2,
        bidirectional: true,
        bias: true,
        cell: Default::default(),
        proj_size: 0,
    };
    let x: Vec<f32> = (0..8 * 3 * 6)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let go: Vec<f32> = (0..8 * 3 * 20)
        .map(|i| ((i * 53 % 97) as f32 / 48.0) - 1.0)
        .collect();
    let gs = vec![0.25f32; 4 * 3 * 10];
    let lens = [8, 5, 2];
    let run = || {
        let model =
            LstmModel::init_uniform(&ctx, cfg.clone(), 42).unwrap_or_else(|e| panic!("{e}"));
        let mut l = Lstm::new(ctx.clone(), model).unwrap_or_else(|e| panic!("{e}"));
        let b = Batch {
            input: &x,
            seq_len: 8,
            batch: 3,
            batch_first: false,
            h0: None,
            c0: None,
            lengths: Some(&lens),
        };
        let u = Upstream {
            grad_output: &go,
            grad_h_n: &gs,
            grad_c_n: &gs,
        };
        l.forward_backward(&b, &u).unwrap_or_else(|e| panic!("{e}"))
    };
    let (o1, g1) = run();
    let (o2, g2) = run();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&o1.output), bits(&o2.output));
    assert_eq!(bits(&g1.input), bits(&g2.input));
    for (a, b) in g1.params.iter().zip(&g2.params) {
        assert_eq!(bits(&a.data), bits(&b.data), "{}", a.name);
    }
}

/// Without the input gradient (`Lstm::set_input_grad(false)`), backward
/// records one GEMM less, returns no input gradient, and leaves every other
/// result bit for bit as it was, on the wavefront and layer by layer.
#[test]
fn input_gradient_can_be_skipped() {
    use lstm_wgpu::schedule::CellPath;
    let ctx = ctx();
    let c = Case {
        hidden: 12,
        input: 5,
        seq: 5,
        batch: 3,
        layers: 2,
        states: true,
        lengths: Lengths::Spread,
        ..Case::BASE
    };
    for path in [CellPath::Wavefront, CellPath::PerStep] {
        let counts = |l: &mut Lstm| l.dispatch_counts(c.seq, c.batch);
        let with = run_case_with(&ctx, c, 500, |l| set_path(l, Some(path)));
        let d = c.data(500);
        let mut lstm = c.lstm(&ctx, &d);
        set_path(&mut lstm, Some(path));
        let hp = HostPass::new(&d, false);
        lstm.forward_backward(&hp.batch(), &hp.upstream())
            .expect("pass");
        let full = counts(&mut lstm).expect("counts");
        lstm.set_input_grad(false);
        let (out, grads) = lstm
            .forward_backward(&hp.batch(), &hp.upstream())
            .expect("pass");
        assert_eq!(counts(&mut lstm), Some((full.0, full.1 - 1)), "{path}");
        assert!(grads.input.is_empty(), "{path}");
        assert_eq!(out, with.0, "{path}");
        assert!(
            Grads {
                input: with.1.input.clone(),
                ..grads
            } == with.1,
            "{path}: gradients differ without the input gradient"
        );
    }
}

/// f16-mixed (f16 weights for the GEMMs and the cell, f16 gates and h_prev
/// in the cache, f32 accumulation, c and gradients) against the f64
/// reference. Tolerance: max |gpu - ref| / max |ref| <= F16_TOL per tensor;
/// f16 rounds to 2^-11 relative (4.9e-4) per stored value, and observed
/// errors are around 1e-3.
const F16_TOL: f64 = 1e-2;

#[test]
fn f16_mixed() {
    use lstm_wgpu::kernels::lstm_cell::CellVariant;
    use lstm_wgpu::model::precision::Precision;
    use lstm_wgpu::schedule::CellPath;
    let ctx = ctx();
    assert!(
        ctx.f16,
        "this adapter lacks SHADER_F16; the f16-mixed tests need it"
    );
    let cases = [
        // Per-step, both directions, lengths and states, odd sizes.
        Case {
            bidir: true,
            states: true,
            lengths: Lengths::Spread,
            hidden: 7,
            ..Case::BASE
        },
        // Wide (vec4) path, batch-first.
        Case {
            hidden: 16,
            input: 8,
            batch: 9,
            batch_first: true,
            ..Case::BASE
        },
        // The wavefront over 3 layers.
        Case {
            layers: 3,
            hidden: 12,
            seq: 9,
            batch: 4,
            lengths: Lengths::Spread,
            ..Case::BASE
        },
        // Two layers, no bias, bidirectional (per-step).
        Case {
            layers: 2,
            bidir: true,
            bias: false,
            hidden: 9,
            ..Case::BASE
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        for variant in [CellVariant::Direct, CellVariant::Tiled] {
            run_case_tol(
                &ctx,
                *c,
                900 + i as u64,
                |l| {
                    set_cell(l, variant);
                    l.set_precision(Precision::F16Mixed)
                        .unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(l.precision(), Precision::F16Mixed);
                },
                F16_TOL,
            );
        }
    }
    // The persistent path is f32 only: forcing it in f16-mixed is a clear
    // error, not a wrong result.
    let d = Case::BASE.data(7);
    let mut lstm = Case::BASE.lstm(&ctx, &d);
    lstm.set_precision(Precision::F16Mixed)
        .unwrap_or_else(|e| panic!("{e}"));
    set_path(&mut lstm, Some(CellPath::Persistent));
    let hp = HostPass::new(&d, false);
    let err = lstm.forward(&hp.batch()).expect_err("persistent in f16");
    assert!(err.to_string().contains("f32 only"), "{err}");
}

/// f16-mixed stores the gate gradients as f16, as PyTorch's f16 backward
/// does, so their range is f16's: with the upstream gradients scaled by S
/// (what a loss scaler does) such that the largest gate gradient passes
/// 2^16, the parameter gradients are not finite (what the scaler detects
/// and backs off from); at S/4 they are finite and, unscaled, match the f32
/// pass; unscaled by 2^-24, the gate gradients underflow f16 and the
/// weight gradients are lost, which the f32 pass at the same scale is not
/// (why f16-mixed training wants a loss scale).
#[test]
fn f16_mixed_gate_gradients_overflow_and_underflow() {
    use lstm_wgpu::model::precision::Precision;
    use lstm_wgpu::schedule::CellPath;
    let ctx = ctx();
    let c = Case {
        layers: 2,
        hidden: 16,
        input: 8,
        batch: 4,
        ..Case::BASE
    };
    let (t, b, h) = (c.seq, c.batch, c.hidden);
    let d = c.data(77);
    let hp = HostPass::new(&d, false);
    let run = |half: bool, s: f32| -> (Grads, f32) {
        let mut lstm = c.lstm(&ctx, &d);
        if half {
            lstm.set_precision(Precision::F16Mixed)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        // Both layers' gate gradients stay in their own regions.
        set_path(&mut lstm, Some(CellPath::Wavefront));
        let up = hp.upstream();
        let scaled = |v: &[f32]| v.iter().map(|x| x * s).collect::<Vec<f32>>();
        let (go, gh, gc) = (
            scaled(up.grad_output),
            scaled(up.grad_h_n),
            scaled(up.grad_c_n),
        );
        let up = Upstream {
            grad_output: &go,
            grad_h_n: &gh,
            grad_c_n: &gc,
        };
        let (_, g) = lstm
            .forward_backward(&hp.batch(), &up)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut m = 0f32;
        if !half {
            for l in 0..c.layers {
                let (_, off) = lstm
                    .gate_offsets(t, b, l, 0)
                    .unwrap_or_else(|e| panic!("{e}"));
                let plan = lstm.plan(t, b).unwrap_or_else(|e| panic!("{e}"));
                let v = ctx
                    .read_f32(&plan.ws.dg, off, t * b * 4 * h)
                    .unwrap_or_else(|e| panic!("{e}"));
                m = v.iter().fold(m, |m, x| m.max(x.abs()));
            }
        }
        (g, m)
    };
    let (g32, m) = run(false, 1.0);
    assert!(m > 0.0 && m.is_finite(), "largest gate gradient {m}");
    let finite = |g: &Grads| {
        g.params
            .iter()
            .all(|p| p.data.iter().all(|v| v.is_finite()))
    };
    // Unscaled gradients as f64, to compare with `rel_err`.
    let unscaled = |g: &Grads, s: f32, name: &str| -> Vec<f32> {
        let p = g.params.iter().find(|p| p.name.ends_with(name));
        let p = p.unwrap_or_else(|| panic!("no {name}"));
        p.data.iter().map(|v| v / s).collect()
    };
    let want = |name: &str| -> Vec<f64> {
        unscaled(&g32, 1.0, name)
            .iter()
            .map(|&v| v as f64)
            .collect()
    };
    let names = [
        "weight_ih_l0",
        "weight_hh_l0",
        "bias_ih_l0",
        "weight_ih_l1",
        "weight_hh_l1",
        "bias_hh_l1",
    ];
    // S with S·m in [1.05·2^16, 2.1·2^16): the margin covers the f16
    // pass's own rounding of the gate gradients.
    let s_over = 2f32.powi((65536.0 * 1.05 / m).log2().ceil() as i32);
    let (g_over, _) = run(true, s_over);
    assert!(
        !finite(&g_over),
        "gate gradients up to {} (S = {s_over}) stayed finite in f16",
        m * s_over
    );
    let s_ok = s_over / 4.0;
    let (g_ok, _) = run(true, s_ok);
    assert!(
        finite(&g_ok),
        "gate gradients up to {} overflowed",
        m * s_ok
    );
    for name in names {
        let e = rel_err(&unscaled(&g_ok, s_ok, name), &want(name));
        assert!(e < F16_TOL, "{name} at S = {s_ok}: error {e:.2e}");
    }
    let s_tiny = 2f32.powi(-24);
    let (g_tiny, _) = run(true, s_tiny);
    let (g_tiny32, _) = run(false, s_tiny);
    let lost = rel_err(
        &unscaled(&g_tiny, s_tiny, "weight_hh_l0"),
        &want("weight_hh_l0"),
    );
    let kept = rel_err(
        &unscaled(&g_tiny32, s_tiny, "weight_hh_l0"),
        &want("weight_hh_l0"),
    );
    assert!(
        lost > 0.1,
        "f16 gate gradients at 2^-24 kept weight_hh_l0 to {lost:.2e}"
    );
    assert!(
        kept < 1e-5,
        "f32 gate gradients at 2^-24 lost weight_hh_l0: {kept:.2e}"
    );
    eprintln!(
        "largest gate gradient {m:.3}; S = {s_over}: non-finite; S = {s_ok}: finite; \
         2^-24: f16 error {lost:.2e}, f32 {kept:.2e}"
    );
}

/// A model whose gate caches together exceed the adapter's largest storage
/// binding (lowered here to a few KiB) gets one cache buffer per layer and
/// runs layer by layer (the wavefront's lanes would share one binding):
/// against the f64 reference, and bit for bit against the same model with
/// one cache, on the persistent and per-step paths, in f32 and f16-mixed.
#[test]
fn gate_cache_split_per_layer() {
    use lstm_wgpu::model::precision::Precision;
    use lstm_wgpu::schedule::CellPath;
    let c = Case {
        layers: 3,
        hidden: 8,
        input: 3,
        seq: 40,
        batch: 4,
        states: true,
        lengths: Lengths::Spread,
        ..Case::BASE
    };
    let full = ctx();
    // Bytes per T·B·H: the f32 cache is 24 per layer (72 in all), pre-gates
    // 16 per region; the f16 cache 10 per layer (30 in all). The limits sit
    // between one layer's cache and all of them, above one pre-gate region.
    let tbh = (c.seq * c.batch * c.hidden) as u64;
    for (precision, limit, tol) in [
        (Precision::F32, 30 * tbh, TOL),
        (Precision::F16Mixed, 20 * tbh, F16_TOL),
    ] {
        let small = std::sync::Arc::new(
            lstm_wgpu::GpuContext::with_binding_limit(limit).unwrap_or_else(|e| panic!("{e}")),
        );
        for path in [None, Some(CellPath::PerStep)] {
            // Runs the case on `ctx`, checking whether the cache is split.
            let run = |ctx: &std::sync::Arc<lstm_wgpu::GpuContext>, split: bool| {
                run_case_tol(
                    ctx,
                    c,
                    31,
                    |l| {
                        l.set_precision(precision).unwrap_or_else(|e| panic!("{e}"));
                        set_path(l, path);
                        let p = l.plan(c.seq, c.batch).unwrap_or_else(|e| panic!("{e}"));
                        assert_eq!(p.ws.split, split, "{precision} {path:?}");
                        assert!(!split || p.path != CellPath::Wavefront);
                    },
                    tol,
                )
            };
            let ((o1, g1), (o2, g2)) = (run(&small, true), run(&full, false));
            assert!(
                o1 == o2 && g1 == g2,
                "{precision} {path:?}: split cache differs"
            );
        }
        // A forced wavefront names the buffer that does not fit.
        let d = c.data(31);
        let mut lstm = c.lstm(&small, &d);
        lstm.set_precision(precision)
            .unwrap_or_else(|e| panic!("{e}"));
        set_path(&mut lstm, Some(CellPath::Wavefront));
        let e = lstm
            .plan(c.seq, c.batch)
            .err()
            .expect("forced wavefront ran");
        assert!(e.to_string().contains("in one binding"), "{e}");
    }
}
