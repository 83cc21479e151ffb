//! Benchmarks of the GPU path: the GEMM kernel alone, and whole forward and
//! forward+backward passes of a small 2-layer LSTM.
//!
//! Sample counts and times are small because CI runs on Mesa's lavapipe (a
//! CPU Vulkan driver); pass `-- --sample-size N` for tighter estimates on a
//! real GPU. Run with `cargo bench --bench lstm_step`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lstm_wgpu::kernels::Kernels;
use lstm_wgpu::kernels::gemm::GemmOp;
use lstm_wgpu::reference::Rng;
use lstm_wgpu::{Batch, GpuContext, Lstm, LstmConfig, LstmModel, Upstream};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

fn context() -> Arc<GpuContext> {
    let ctx = GpuContext::new().expect("a GPU adapter (lavapipe will do)");
    eprintln!("adapter: {}", ctx.describe());
    Arc::new(ctx)
}

fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect()
}

/// One 256x256x256 GEMM per variant of the kernel family (op(A), op(B)
/// plain or transposed), timed from recording to completion: encoder,
/// compute pass, submit and `wait`. No host transfers.
fn gemm(c: &mut Criterion, ctx: &GpuContext) {
    const N: usize = 256;
    let kernels = Kernels::new(ctx).expect("kernels compile");
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
        let dispatch = kernels
            .gemm
            .dispatch(ctx, &op)
            .expect("valid GEMM")
            .expect("C is not empty");
        group.bench_function(name, |bench| {
            bench.iter(|| {
                let mut enc = ctx.device.create_command_encoder(&Default::default());
                {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    dispatch.record(&mut pass);
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
    use lstm_wgpu::norm::Norm;
    let cfg = LstmConfig {
        input_size: 32,
        hidden_size: 64,
        num_layers: 2,
        bidirectional: false,
        bias: true,
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

fn benches(c: &mut Criterion) {
    let ctx = context();
    gemm(c, &ctx);
    passes(c, &ctx);
    norm_variants(c, &ctx);
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
