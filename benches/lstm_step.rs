//! Benchmarks of the GPU path: each kernel family alone (GEMM, fused cell
//! forward and backward, clipping, optimizer, losses, embedding, layer and
//! batch norm), whole forward and forward+backward passes of a small 2-layer
//! LSTM, the norm variants, and whole training steps (`Trainer::step`) on the
//! `ts` and `char` workloads of `lstm-wgpu bench`.
//!
//! Kernel groups use the `char` workload's shapes (T=64, B=32, H=256, E=128,
//! V=65) and time recording, one submit and `wait`; no host transfers.
//! Sample counts and times are small because CI runs on Mesa's lavapipe (a
//! CPU Vulkan driver); pass `-- --sample-size N` for tighter estimates on a
//! real GPU. Run with `cargo bench --bench lstm_step` (add `-- --quick`, and
//! a group name to filter).

// The program's reading of the LSTM_WGPU_* variables, shared.
#[path = "../src/cli/env.rs"]
#[allow(dead_code)]
mod env;

use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use lstm_wgpu::gpu::Dispatch;
use lstm_wgpu::kernels::Kernels;
use lstm_wgpu::kernels::gemm::GemmOp;
use lstm_wgpu::train::bench::{BenchRun, Workload};
use lstm_wgpu::{Batch, GpuContext, Lstm, LstmConfig, LstmModel, Upstream};
use lstm_wgpu_reference::Rng;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

fn context() -> Arc<GpuContext> {
    // As the binary: the LSTM_WGPU_* variables choose the kernels.
    let opts = env::gpu_options_from_env().unwrap_or_else(|e| panic!("{e}"));
    let ctx = GpuContext::with_options(opts).expect("a GPU adapter (lavapipe will do)");
    eprintln!("adapter: {}", ctx.describe());
    Arc::new(ctx)
}

fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect()
}

/// One 256x256x256 GEMM per variant of the kernel family (op(A), op(B)
/// plain or transposed), timed from recording to completion: encoder,
/// compute pass, submit and `wait`. No host transfers.
fn gemm(c: &mut Criterion, ctx: &Arc<GpuContext>) {
    const N: usize = 256;
    let kernels = Kernels::new(ctx, ctx.tuning).expect("kernels compile");
    let mut rng = Rng::new(1);
    let a = ctx
        .storage_init("a", &random(&mut rng, N * N))
        .expect("buffer");
    let b = ctx
        .storage_init("b", &random(&mut rng, N * N))
        .expect("buffer");
    let out = ctx.storage("c", N * N).expect("buffer");

    let mut group = c.benchmark_group("gemm_256");
    // 2·N³ floating-point operations: criterion's "elem/s" reads as FLOP/s.
    group.throughput(Throughput::Elements(2 * (N * N * N) as u64));
    for (name, trans_a, trans_b) in [
        ("nn", false, false),
        ("nt", false, true),
        ("tn", true, false),
        ("tt", true, true),
    ] {
        let op = GemmOp {
            m: N,
            n: N,
            k: N,
            trans_a,
            trans_b,
            a: (&a, 0, N),
            b: (&b, 0, N),
            c: (&out, 0, N),
            bias: None,
            alpha: 1.0,
            accumulate: false,
        };
        let dispatches = kernels.gemm().dispatch(ctx, &op).expect("valid GEMM");
        group.bench_function(name, |bench| {
            bench.iter(|| {
                let mut enc = ctx.device.create_command_encoder(&Default::default());
                {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    for d in &dispatches {
                        d.record(&mut pass);
                    }
                }
                ctx.queue.submit([enc.finish()]);
                ctx.wait().expect("GPU work completes");
            })
        });
    }
    group.finish();
}

/// Forward and forward+backward of a 2-layer unidirectional LSTM with
/// H=64, I=32, T=16, B=8. These go through the public `Lstm` API, so each
/// iteration includes uploading the batch and reading every result back to
/// the host, not only the GPU work. The per-shape plan is built before
/// timing starts.
fn passes(c: &mut Criterion, ctx: &Arc<GpuContext>) {
    let cfg = LstmConfig {
        input_size: 32,
        hidden_size: 64,
        num_layers: 2,
        bidirectional: false,
        bias: true,
        cell: Default::default(),
        proj_size: 0,
    };
    let (seq, batch) = (16, 8);
    let state_len = cfg.num_layers * cfg.dirs() * batch * cfg.hidden_size;
    let out_len = seq * batch * cfg.dirs() * cfg.hidden_size;
    let mut rng = Rng::new(2);
    let input = random(&mut rng, seq * batch * cfg.input_size);
    let grad_output = random(&mut rng, out_len);
    let grad_h_n = random(&mut rng, state_len);
    let grad_c_n = random(&mut rng, state_len);

    let model = LstmModel::init_uniform(ctx, cfg, 0).expect("model");
    let mut lstm = Lstm::new(ctx.clone(), model).expect("kernels compile");
    let b = Batch {
        input: &input,
        seq_len: seq,
        batch,
        batch_first: false,
        h0: None,
        c0: None,
        lengths: None,
    };
    let up = Upstream {
        grad_output: &grad_output,
        grad_h_n: &grad_h_n,
        grad_c_n: &grad_c_n,
    };
    // Warm the plan cache for (T, B) so that only the passes are timed.
    lstm.forward_backward(&b, &up).expect("forward+backward");

    let mut group = c.benchmark_group("lstm_L2_H64_I32_T16_B8");
    group.bench_function("forward", |bench| {
        bench.iter(|| black_box(lstm.forward(&b).expect("forward")))
    });
    group.bench_function("forward_backward", |bench| {
        bench.iter(|| black_box(lstm.forward_backward(&b, &up).expect("forward+backward")))
    });
    group.finish();
}

/// Forward+backward of the same 2-layer model (H=64, I=32, T=16, B=8) with
/// each normalization variant, train mode, to read each variant's cost
/// relative to the plain LSTM (`none`). Includes upload and readback as in
/// [`passes`].
fn norm_variants(c: &mut Criterion, ctx: &Arc<GpuContext>) {
    use lstm_wgpu::model::norm::Norm;
    let cfg = LstmConfig {
        input_size: 32,
        hidden_size: 64,
        num_layers: 2,
        bidirectional: false,
        bias: true,
        cell: Default::default(),
        proj_size: 0,
    };
    let (seq, batch) = (16, 8);
    let state_len = cfg.num_layers * batch * cfg.hidden_size;
    let mut rng = Rng::new(3);
    let input = random(&mut rng, seq * batch * cfg.input_size);
    let grad_output = random(&mut rng, seq * batch * cfg.hidden_size);
    let grad_state = random(&mut rng, state_len);
    let b = Batch {
        input: &input,
        seq_len: seq,
        batch,
        batch_first: false,
        h0: None,
        c0: None,
        lengths: None,
    };
    let up = Upstream {
        grad_output: &grad_output,
        grad_h_n: &grad_state,
        grad_c_n: &grad_state,
    };
    let mut group = c.benchmark_group("norm_variants_L2_H64_T16_B8");
    for (name, norm) in [
        ("none", Norm::None),
        ("layer", Norm::Layer { last: true }),
        ("layer-cell", Norm::LayerCell),
        ("batch", Norm::Batch { last: true }),
        (
            "step-batch",
            Norm::StepBatch {
                last: true,
                t_max: seq,
            },
        ),
        ("recurrent-batch", Norm::RecurrentBatch { t_max: seq }),
    ] {
        let model = LstmModel::init_with_norm(ctx, cfg.clone(), norm, 0).expect("model");
        let mut lstm = Lstm::new(ctx.clone(), model).expect("kernels compile");
        lstm.forward_backward(&b, &up).expect("forward+backward");
        group.bench_function(name, |bench| {
            bench.iter(|| black_box(lstm.forward_backward(&b, &up).expect("forward+backward")))
        });
    }
    group.finish();
}

/// Shapes of the `char` workload, used by the kernel groups.
const T: usize = 64;
const B: usize = 32;
const H: usize = 256;
const E: usize = 128;
const V: usize = 65;

/// A buffer of `n` uniform values in [-0.5, 0.5).
fn filled(ctx: &GpuContext, rng: &mut Rng, label: &str, n: usize) -> wgpu::Buffer {
    let v: Vec<f32> = (0..n).map(|_| rng.uniform(-0.5, 0.5) as f32).collect();
    ctx.storage_init(label, &v).expect("buffer")
}

/// Benchmarks `ds` recorded into one compute pass, submitted once and
/// waited for.
fn bench_dispatches(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    ctx: &GpuContext,
    name: &str,
    ds: &[Dispatch],
) {
    let run = || {
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for d in ds {
                d.record(&mut pass);
            }
        }
        ctx.queue.submit([enc.finish()]);
        ctx.wait().expect("GPU work completes");
    };
    // The driver compiles a pipeline on its first use: keep that untimed.
    run();
    group.bench_function(name, |bench| bench.iter(run));
}

/// The fused cell over a whole sequence: T forward step dispatches, and T
/// backward steps plus the initial-state gradients (one layer, H=256, B=32).
fn cell(c: &mut Criterion, ctx: &GpuContext, k: &Kernels) {
    use lstm_wgpu::kernels::lstm_cell::{CellBackward, CellForward, CellShape};
    use lstm_wgpu::model::norm::Norm;
    use lstm_wgpu::schedule::workspace::Workspace;
    let cfg = LstmConfig {
        input_size: E,
        hidden_size: H,
        num_layers: 1,
        bidirectional: false,
        bias: true,
        cell: Default::default(),
        proj_size: 0,
    };
    let state = Workspace::state_len(&cfg, B);
    let s = CellShape {
        hidden: H,
        batch: B,
        seq: T,
        reverse: false,
        out_stride: H,
        out_col: 0,
        pre_off: 0,
        whh_off: 0,
        cache_off: 0,
        // f32 layout: c follows the gates in the cache.
        c_off: T * B * 4 * H,
        dg_off: 0,
        // f32 layout: dc follows the gate gradients.
        dc_off: T * B * 4 * H,
        // The LSTM keeps no dx section and adds b_hh in the input GEMM.
        dx_off: 0,
        bhh_off: None,
        state_off: 0,
        state_stride: state,
        zone: Default::default(),
    };
    let mut rng = Rng::new(4);
    let pre = filled(ctx, &mut rng, "pre-gates", T * B * 4 * H);
    let whh = filled(ctx, &mut rng, "w_hh", 4 * H * H);
    let state_in = filled(ctx, &mut rng, "state in", 2 * state);
    let lengths = ctx.storage_init("lengths", &[T as u32; B]).expect("buffer");
    let out = ctx.storage("out", T * B * H).expect("buffer");
    let cache = ctx
        .storage("cache", Workspace::cache_block(&cfg, &Norm::None, T, B))
        .expect("buffer");
    let state_out = ctx.storage("state out", 2 * state).expect("buffer");
    let dy = filled(ctx, &mut rng, "dy", T * B * H);
    let gstate_in = ctx.storage("grad state in", 2 * state).expect("buffer");
    let dg = ctx
        .storage("dgates", Workspace::dg_block(&cfg, &Norm::None, T, B))
        .expect("buffer");
    let gstate_out = filled(ctx, &mut rng, "grad state out", 2 * state);
    // Zoneout is off: its bindings get placeholders.
    let zrng = ctx.storage("dropout step", 4).expect("buffer");
    let zst = ctx.storage("zoneout sections", 1).expect("buffer");
    let fb = CellForward {
        pre: &pre,
        params: &whh,
        state_in: &state_in,
        lengths: &lengths,
        out: &out,
        cache: &cache,
        state_out: &state_out,
        cst: &cache,
        rng: &zrng,
        zst: &zst,
    };
    let fwd: Vec<Dispatch> = (0..T)
        .flat_map(|t| {
            k.cell(lstm_wgpu::Cell::Lstm)
                .expect("kernels compile")
                .forward(ctx, &[s], t, &fb)
                .expect("cell forward")
        })
        .collect();
    let bb = CellBackward {
        params: &whh,
        state_in: &state_in,
        lengths: &lengths,
        cache: &cache,
        dy: &dy,
        gstate_in: &gstate_in,
        dg: &dg,
        gstate_out: &gstate_out,
        cst: &cache,
        dcs: &dg,
        rng: &zrng,
        zst: &zst,
    };
    let mut bwd: Vec<Dispatch> = (0..T)
        .rev()
        .flat_map(|t| {
            k.cell(lstm_wgpu::Cell::Lstm)
                .expect("kernels compile")
                .backward(ctx, &[s], t, &bb)
                .expect("cell backward")
        })
        .collect();
    bwd.extend(
        k.cell(lstm_wgpu::Cell::Lstm)
            .expect("kernels compile")
            .backward_state(ctx, &[s], &bb)
            .expect("state grads"),
    );
    let mut group = c.benchmark_group("cell_H256_B32_T64");
    group.throughput(Throughput::Elements(T as u64));
    bench_dispatches(&mut group, ctx, "forward", &fwd);
    // The cache the backward reads comes from the forward: run it once.
    bench_dispatches(
        &mut group,
        ctx,
        "forward_then_backward",
        &[fwd, bwd].concat(),
    );
    group.finish();
}

/// Clip by global norm and the AdamW update over the flat gradient and
/// parameter buffers of the `char` model, segmented by its parameter table.
fn clip_optim(c: &mut Criterion, ctx: &GpuContext, k: &Kernels) {
    use lstm_wgpu::kernels::optim::OptimConfig;
    let w = Workload::by_name("char").expect("workload");
    let table = w.net.table();
    let n = table.total;
    let segs: Vec<(usize, usize)> = table.entries.iter().map(|e| (e.offset, e.len())).collect();
    let mut rng = Rng::new(5);
    let params = filled(ctx, &mut rng, "params", n);
    let grads = filled(ctx, &mut rng, "grads", n);
    let clip = k
        .clip()
        .expect("kernels compile")
        .plan(ctx, &grads, &segs, Some(5.0), None)
        .expect("clip plan");
    let mut optim = k
        .optim()
        .expect("kernels compile")
        .plan(
            ctx,
            &OptimConfig::adamw(),
            &params,
            &grads,
            n,
            Some((&clip.stats, 3)),
        )
        .expect("optimizer plan");
    optim.prepare(ctx, 1e-3).expect("optimizer step");
    let mut group = c.benchmark_group(format!("clip_optim_{n}_params"));
    group.throughput(Throughput::Elements(n as u64));
    bench_dispatches(&mut group, ctx, "clip_global_norm", &clip.dispatches);
    bench_dispatches(
        &mut group,
        ctx,
        "adamw",
        std::slice::from_ref(&optim.dispatch),
    );
    group.finish();
}

/// Cross-entropy over T·B rows of V logits and MSE over T·B rows of H
/// values, forward (loss) and backward (gradient) together.
fn loss(c: &mut Criterion, ctx: &GpuContext, k: &Kernels) {
    use lstm_wgpu::kernels::loss::{
        CeBackward, CeForward, CeShape, LOSS_WORDS, LossStep, MseBackward, MseForward, MseShape,
    };
    let rows = T * B;
    let mut rng = Rng::new(6);
    let logits = filled(ctx, &mut rng, "logits", rows * V);
    let dlogits = ctx.storage("dlogits", rows * V).expect("buffer");
    let targets: Vec<u32> = (0..rows).map(|i| (i * 7 % V) as u32).collect();
    let tbuf = ctx.storage_init("targets", &targets).expect("buffer");
    let step = ctx
        .storage_init(
            "loss step",
            &LossStep {
                count: rows as u32,
                scale: 1.0,
            }
            .words(),
        )
        .expect("buffer");
    let loss = ctx.storage("loss", LOSS_WORDS).expect("buffer");
    let cs = CeShape {
        rows,
        classes: V,
        ..Default::default()
    };
    let scratch = ctx.storage("scratch", cs.scratch_len()).expect("buffer");
    let ce = [
        k.loss()
            .expect("kernels compile")
            .ce_forward(
                ctx,
                &cs,
                &CeForward {
                    logits: &logits,
                    targets: &tbuf,
                    step: &step,
                    scratch: &scratch,
                    loss: &loss,
                },
            )
            .expect("ce forward"),
        k.loss()
            .expect("kernels compile")
            .ce_backward(
                ctx,
                &cs,
                &CeBackward {
                    logits: &logits,
                    targets: &tbuf,
                    step: &step,
                    scratch: &scratch,
                    dlogits: &dlogits,
                },
            )
            .expect("ce backward"),
    ]
    .concat();
    let pred = filled(ctx, &mut rng, "pred", rows * H);
    let target = filled(ctx, &mut rng, "target", rows * H);
    let dpred = ctx.storage("dpred", rows * H).expect("buffer");
    let mask = ctx.storage_init("mask", &vec![1u32; rows]).expect("buffer");
    let ms = MseShape {
        rows,
        features: H,
        ..Default::default()
    };
    let mse_step = ctx
        .storage_init(
            "mse step",
            &LossStep {
                count: (rows * H) as u32,
                scale: 1.0,
            }
            .words(),
        )
        .expect("buffer");
    let mse_scratch = ctx.storage("scratch", ms.scratch_len()).expect("buffer");
    let mse = [
        k.loss()
            .expect("kernels compile")
            .mse_forward(
                ctx,
                &ms,
                &MseForward {
                    pred: &pred,
                    target: &target,
                    mask: &mask,
                    step: &mse_step,
                    scratch: &mse_scratch,
                    loss: &loss,
                },
            )
            .expect("mse forward"),
        k.loss()
            .expect("kernels compile")
            .mse_backward(
                ctx,
                &ms,
                &MseBackward {
                    pred: &pred,
                    target: &target,
                    mask: &mask,
                    step: &mse_step,
                    dpred: &dpred,
                },
            )
            .expect("mse backward"),
    ]
    .concat();
    let mut group = c.benchmark_group("loss_rows2048");
    bench_dispatches(&mut group, ctx, "cross_entropy_V65", &ce);
    bench_dispatches(&mut group, ctx, "mse_F256", &mse);
    group.finish();
}

/// Embedding gather of T·B ids from a [V, E] table, and its deterministic
/// scatter-add backward.
fn embedding(c: &mut Criterion, ctx: &GpuContext, k: &Kernels) {
    use lstm_wgpu::kernels::embedding::{EmbBackward, EmbForward, EmbShape, csr_words};
    let rows = T * B;
    let mut rng = Rng::new(7);
    let ids: Vec<u32> = (0..rows).map(|i| (i * 13 % V) as u32).collect();
    let ibuf = ctx.storage_init("ids", &ids).expect("buffer");
    let csr = ctx
        .storage_init("csr", &csr_words(&ids, V))
        .expect("buffer");
    let table = filled(ctx, &mut rng, "table", V * E);
    let dtable = ctx.storage("dtable", V * E).expect("buffer");
    let out = ctx.storage("out", rows * E).expect("buffer");
    let dout = filled(ctx, &mut rng, "dout", rows * E);
    let s = EmbShape {
        rows,
        dim: E,
        vocab: V,
        ..Default::default()
    };
    let fwd = k
        .embedding()
        .expect("kernels compile")
        .forward(
            ctx,
            &s,
            &EmbForward {
                ids: &ibuf,
                table: &table,
                out: &out,
            },
        )
        .expect("embedding forward");
    let bwd = k
        .embedding()
        .expect("kernels compile")
        .backward(
            ctx,
            &s,
            &EmbBackward {
                csr: &csr,
                dout: &dout,
                dtable: &dtable,
            },
        )
        .expect("embedding backward");
    let mut group = c.benchmark_group("embedding_V65_E128_rows2048");
    bench_dispatches(&mut group, ctx, "forward", &fwd);
    bench_dispatches(&mut group, ctx, "backward", &bwd);
    group.finish();
}

/// LayerNorm and sequence-wise BatchNorm (train mode) between layers over
/// [T, B, H], forward then backward.
fn norms(c: &mut Criterion, ctx: &GpuContext, k: &Kernels) {
    use lstm_wgpu::kernels::batch_norm::{BatchNorm, BnBackward, BnForward, BnShape};
    use lstm_wgpu::kernels::layer_norm::{LayerNorm, LnBackward, LnForward, LnShape};
    let n = T * B * H;
    let mut rng = Rng::new(8);
    let x = filled(ctx, &mut rng, "x", n);
    let y = ctx.storage("y", n).expect("buffer");
    let dy = filled(ctx, &mut rng, "dy", n);
    let dx = ctx.storage("dx", n).expect("buffer");
    // Gain then shift, and their gradients, at [0, H) and [H, 2H).
    let params = ctx
        .storage_init("gain, shift", &[vec![1.0f32; H], vec![0.0f32; H]].concat())
        .expect("buffer");
    let grads = ctx.storage("grads", 2 * H).expect("buffer");
    let lengths = ctx.storage_init("lengths", &[T as u32; B]).expect("buffer");
    let ls = LnShape {
        seq: T,
        batch: B,
        features: H,
        b_off: H,
        db_off: H,
        ..Default::default()
    };
    let ln_stats = ctx
        .storage("ln stats", LayerNorm::stats_len(T, B))
        .expect("buffer");
    let ln = [
        k.layer_norm()
            .expect("kernels compile")
            .forward(
                ctx,
                &ls,
                &LnForward {
                    params: &params,
                    lengths: &lengths,
                    x: &x,
                    y: &y,
                    stats: &ln_stats,
                },
            )
            .expect("layer norm forward"),
        k.layer_norm()
            .expect("kernels compile")
            .backward(
                ctx,
                &ls,
                &LnBackward {
                    params: &params,
                    lengths: &lengths,
                    x: &x,
                    stats: &ln_stats,
                    dy: &dy,
                    dx: &dx,
                    grads: &grads,
                },
            )
            .expect("layer norm backward"),
    ]
    .concat();
    let bs = BnShape {
        seq: T,
        batch: B,
        features: H,
        per_step: false,
        train: true,
        run_rows: 1,
        b_off: H,
        db_off: H,
        rv_off: H,
        ..Default::default()
    };
    let bn_stats = ctx
        .storage("bn stats", BatchNorm::stats_len(&bs))
        .expect("buffer");
    let running = ctx
        .storage_init("running", &[vec![0.0f32; H], vec![1.0f32; H]].concat())
        .expect("buffer");
    let bn = [
        k.batch_norm()
            .expect("kernels compile")
            .forward(
                ctx,
                &bs,
                &BnForward {
                    params: &params,
                    lengths: &lengths,
                    x: &x,
                    y: &y,
                    stats: &bn_stats,
                    running: &running,
                },
            )
            .expect("batch norm forward"),
        k.batch_norm()
            .expect("kernels compile")
            .backward(
                ctx,
                &bs,
                &BnBackward {
                    params: &params,
                    lengths: &lengths,
                    x: &x,
                    stats: &bn_stats,
                    dy: &dy,
                    dx: &dx,
                    grads: &grads,
                },
            )
            .expect("batch norm backward"),
    ]
    .concat();
    let mut group = c.benchmark_group("norm_T64_B32_F256");
    bench_dispatches(&mut group, ctx, "layer_forward_backward", &ln);
    bench_dispatches(&mut group, ctx, "batch_forward_backward", &bn);
    group.finish();
}

/// Whole training steps as `lstm-wgpu bench` times them: forward, loss,
/// backward, clip and AdamW in one submit, loss and norm read back. The
/// cell path is the schedule's choice (set `LSTM_WGPU_CELL_PATH` to force
/// one). Throughput in tokens (B·T).
fn train_step(c: &mut Criterion, ctx: &Arc<GpuContext>) {
    let mut group = c.benchmark_group("train_step");
    for name in ["ts", "char"] {
        let w = Workload::by_name(name).expect("workload");
        let mut run = BenchRun::new(ctx.clone(), &w).expect("trainer");
        // Plans, pipelines and the driver's first-use costs stay untimed.
        run.step().expect("warm-up step");
        group.throughput(Throughput::Elements((w.seq * w.batch) as u64));
        group.bench_function(name, |bench| {
            bench.iter(|| black_box(run.step().expect("training step")))
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let ctx = context();
    gemm(c, &ctx);
    passes(c, &ctx);
    norm_variants(c, &ctx);
    let k = Kernels::new(&ctx, ctx.tuning).expect("kernels compile");
    cell(c, &ctx, &k);
    clip_optim(c, &ctx, &k);
    loss(c, &ctx, &k);
    embedding(c, &ctx, &k);
    norms(c, &ctx, &k);
    train_step(c, &ctx);
}

criterion_group! {
    name = lstm_step;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(lstm_step);
