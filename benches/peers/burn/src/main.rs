//! The `ts`, `char` and `big` workloads of `lstm-wgpu bench`, trained with
//! Burn's `nn::Lstm` (or, with `--cell gru`, `nn::Gru`) on its wgpu backend (autodiff, AdamW, gradient clipping
//! by norm), printing the same columns (or `--json` with the same fields).
//!
//! One step: forward over the whole sequence, loss, backward, clipping and
//! the AdamW update, then `Device::sync` so that the GPU work is complete
//! inside the timed region. Data are synthetic from a fixed seed, uploaded
//! before timing and reused every step.
//!
//! Usage: burn-lstm-bench [--workload ts|char|big|all] [--cell lstm|gru]
//! [--steps N] [--warmup N] [--json]

use burn::grad_clipping::GradientClippingConfig;
use burn::nn::loss::{CrossEntropyLossConfig, MseLoss, Reduction};
use burn::nn::{
    Embedding, EmbeddingConfig, Gru, GruConfig, Initializer, Linear, LinearConfig, Lstm,
    LstmConfig,
};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use std::process::ExitCode;
use std::time::Instant;

/// A workload: the shapes of `lstm-wgpu bench`.
#[derive(Clone, Copy)]
struct Workload {
    name: &'static str,
    /// Vocabulary and embedding width for token input; `None`: real features.
    vocab_embed: Option<(usize, usize)>,
    /// Features per step when the input is real-valued.
    features: usize,
    hidden: usize,
    layers: usize,
    seq: usize,
    batch: usize,
    /// Head outputs.
    outputs: usize,
    /// Head on every step (`true`) or on the last step only.
    every_step: bool,
    clip: f32,
    /// Gate rows per hidden unit: the LSTM's 4, the GRU's 3.
    gates: usize,
}

const WORKLOADS: [Workload; 3] = [
    Workload {
        name: "ts",
        vocab_embed: None,
        features: 10,
        hidden: 64,
        layers: 2,
        seq: 20,
        batch: 32,
        outputs: 1,
        every_step: false,
        clip: 1.0,
        gates: 4,
    },
    Workload {
        name: "char",
        vocab_embed: Some((65, 128)),
        features: 0,
        hidden: 256,
        layers: 2,
        seq: 64,
        batch: 32,
        outputs: 65,
        every_step: true,
        clip: 5.0,
        gates: 4,
    },
    Workload {
        name: "big",
        vocab_embed: None,
        features: 512,
        hidden: 512,
        layers: 2,
        seq: 128,
        batch: 64,
        outputs: 512,
        every_step: true,
        clip: 1.0,
        gates: 4,
    },
];

impl Workload {
    fn input_width(&self) -> usize {
        self.vocab_embed.map_or(self.features, |(_, e)| e)
    }

    /// FLOPs of one training step, counted as `lstm-wgpu bench` counts them
    /// (src/bench.rs; "FLOPs per step" in docs/commands.md): every GEMM as
    /// 2·m·n·k.
    fn flops(&self) -> f64 {
        let (tb, h) = ((self.seq * self.batch) as f64, self.hidden as f64);
        let g = self.gates as f64 * h;
        let mut f = 0.0;
        for l in 0..self.layers {
            let i = if l == 0 { self.input_width() as f64 } else { h };
            // Forward: input GEMM and the per-step recurrent products.
            f += 2.0 * tb * g * (i + h);
            // Backward: dW_ih, dW_hh and the per-step dh_{t-1}.
            f += 2.0 * tb * g * (i + h) + 2.0 * tb * g * h;
            // dX, unless it would feed nothing trainable (dense input).
            if l > 0 || self.vocab_embed.is_some() {
                f += 2.0 * tb * g * i;
            }
        }
        let rows = if self.every_step {
            tb
        } else {
            self.batch as f64
        };
        // Head forward, dW and dX.
        f + 3.0 * 2.0 * rows * h * self.outputs as f64
    }
}

#[derive(Module, Debug)]
struct Net {
    embedding: Option<Embedding>,
    /// The layers: LSTM ones, or (`--cell gru`) GRU ones in `gru`.
    lstm: Vec<Lstm>,
    gru: Vec<Gru>,
    head: Linear,
}

/// PyTorch's default init, as lstm-wgpu and the PyTorch script use:
/// U(±1/√H) for the LSTM and U(±1/√fan_in) for the head.
fn uniform(bound: f64) -> Initializer {
    Initializer::Uniform {
        min: -bound,
        max: bound,
    }
}

impl Net {
    fn new(w: &Workload, device: &Device) -> Self {
        let k = 1.0 / (w.hidden as f64).sqrt();
        let width = |l: usize| if l == 0 { w.input_width() } else { w.hidden };
        let (mut lstm, mut gru) = (Vec::new(), Vec::new());
        for l in 0..w.layers {
            if w.gates == 3 {
                // reset_after (Burn's default): nn.GRU's n = tanh(W_in x +
                // b_in + r ⊙ (W_hn h + b_hn)), the engine's GRU.
                gru.push(
                    GruConfig::new(width(l), w.hidden, true)
                        .with_initializer(uniform(k))
                        .init(device),
                );
            } else {
                lstm.push(
                    LstmConfig::new(width(l), w.hidden, true)
                        .with_initializer(uniform(k))
                        .init(device),
                );
            }
        }
        Self {
            embedding: w
                .vocab_embed
                .map(|(v, e)| EmbeddingConfig::new(v, e).init(device)),
            lstm,
            gru,
            head: LinearConfig::new(w.hidden, w.outputs)
                .with_initializer(uniform(k))
                .init(device),
        }
    }

    /// [B, T, I] in, [B, T, H] out.
    fn lstm(&self, mut x: Tensor<3>) -> Tensor<3> {
        for layer in &self.lstm {
            x = layer.forward(x, None).0;
        }
        for layer in &self.gru {
            x = layer.forward(x, None);
        }
        x
    }
}

/// The batch of a workload, on the device.
enum Data {
    Tokens {
        ids: Tensor<2, Int>,
        targets: Tensor<1, Int>,
    },
    Series {
        x: Tensor<3>,
        targets: Tensor<3>,
    },
}

/// A small deterministic generator (splitmix64), so runs repeat.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn data(w: &Workload, device: &Device) -> Data {
    let mut rng = Rng(0);
    let (b, t) = (w.batch, w.seq);
    match w.vocab_embed {
        Some((v, _)) => {
            let ids: Vec<i64> = (0..b * t).map(|_| (rng.next() % v as u64) as i64).collect();
            let targets: Vec<i64> = (0..b * t).map(|_| (rng.next() % v as u64) as i64).collect();
            Data::Tokens {
                ids: Tensor::from_data(TensorData::new(ids, [b, t]), device),
                targets: Tensor::from_data(TensorData::new(targets, [b * t]), device),
            }
        }
        None => {
            let x: Vec<f32> = (0..b * t * w.features).map(|_| rng.uniform()).collect();
            let rows = if w.every_step { t } else { 1 };
            let y: Vec<f32> = (0..b * rows * w.outputs).map(|_| rng.uniform()).collect();
            Data::Series {
                x: Tensor::from_data(TensorData::new(x, [b, t, w.features]), device),
                targets: Tensor::from_data(TensorData::new(y, [b, rows, w.outputs]), device),
            }
        }
    }
}

fn loss(net: &Net, w: &Workload, d: &Data, device: &Device) -> Tensor<1> {
    match d {
        Data::Tokens { ids, targets } => {
            let emb = net
                .embedding
                .as_ref()
                .expect("token workloads have an embedding");
            let y = net.lstm(emb.forward(ids.clone()));
            let logits = net.head.forward(y).reshape([w.batch * w.seq, w.outputs]);
            CrossEntropyLossConfig::new()
                .init(device)
                .forward(logits, targets.clone())
        }
        Data::Series { x, targets } => {
            let mut y = net.lstm(x.clone());
            if !w.every_step {
                y = y.slice(s![.., (w.seq - 1)..w.seq, ..]);
            }
            MseLoss::new().forward(net.head.forward(y), targets.clone(), Reduction::Mean)
        }
    }
}

struct Row {
    ms: f64,
    tokens_per_s: f64,
    gflops: f64,
    peak_mb: Option<f64>,
}

fn run(w: &Workload, steps: usize, warmup: usize, device: &Device) -> Result<Row, String> {
    let mut net = Net::new(w, device);
    // torch.optim.AdamW's defaults (Burn's own are eps 1e-5, decay 1e-4).
    // Burn clips each parameter tensor to the norm, not the global norm:
    // that is the clipping it offers.
    let mut optim = AdamWConfig::new()
        .with_epsilon(1e-8)
        .with_weight_decay(1e-2)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(w.clip)))
        .init();
    let d = data(w, device);
    let mut times = Vec::with_capacity(steps);
    let mut peak: Option<u64> = None;
    for i in 0..warmup + steps {
        let start = Instant::now();
        let l = loss(&net, w, &d, device);
        let grads = GradientsParams::from_grads(l.backward(), &net);
        net = optim.step(1e-3, net, grads);
        device.sync().map_err(|e| format!("device sync: {e:?}"))?;
        let el = start.elapsed().as_secs_f64();
        if let Some(u) = device.memory_pool_usage() {
            peak = Some(peak.unwrap_or(0).max(u.bytes_reserved));
        }
        if i >= warmup {
            times.push(el);
        }
        eprintln!(
            "{}: step {}/{} {:.1} ms{}",
            w.name,
            i + 1,
            warmup + steps,
            el * 1e3,
            if i < warmup { " (warm-up)" } else { "" }
        );
    }
    times.sort_by(f64::total_cmp);
    let n = times.len();
    let med = if n % 2 == 1 {
        times[n / 2]
    } else {
        0.5 * (times[n / 2 - 1] + times[n / 2])
    };
    Ok(Row {
        ms: med * 1e3,
        tokens_per_s: (w.batch * w.seq) as f64 / med,
        gflops: w.flops() / med / 1e9,
        peak_mb: peak.map(|b| b as f64 / (1024.0 * 1024.0)),
    })
}

/// The adapter Burn's default wgpu device asks for (high performance).
fn adapter_name() -> String {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    match pollster_block(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    })) {
        Ok(a) => a.get_info().name,
        Err(e) => format!("unknown ({e})"),
    }
}

/// Drives a future to completion on this thread (wgpu's adapter request
/// resolves immediately on native backends).
fn pollster_block<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

struct Args {
    workloads: Vec<Workload>,
    steps: usize,
    warmup: usize,
    json: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        workloads: WORKLOADS[..2].to_vec(),
        steps: 5,
        warmup: 2,
        json: false,
    };
    let mut gates = 4;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |f: &str| it.next().ok_or_else(|| format!("{f} needs a value"));
        match flag.as_str() {
            "--json" => a.json = true,
            "--cell" => {
                let v = value(&flag)?;
                gates = match v.as_str() {
                    "lstm" => 4,
                    "gru" => 3,
                    _ => return Err(format!("--cell {v}: expected lstm or gru")),
                };
            }
            "--steps" | "--warmup" => {
                let v = value(&flag)?;
                let n: usize = v
                    .parse()
                    .map_err(|_| format!("{flag} {v}: expected a whole number"))?;
                if flag == "--steps" {
                    if n == 0 {
                        return Err("--steps must be at least 1".into());
                    }
                    a.steps = n;
                } else {
                    a.warmup = n;
                }
            }
            "--workload" => {
                let v = value(&flag)?;
                a.workloads = if v == "all" {
                    WORKLOADS.to_vec()
                } else {
                    vec![*WORKLOADS.iter().find(|w| w.name == v).ok_or_else(|| {
                        format!("unknown workload {v:?}; known: ts, char, big, all")
                    })?]
                };
            }
            "-h" | "--help" => {
                println!(
                    "burn-lstm-bench [--workload ts|char|big|all] [--cell lstm|gru] [--steps N] [--warmup N] [--json]\n\
                     Default: ts and char, 2 warm-up and 5 timed steps. The first step compiles\n\
                     shaders (~40 s on lavapipe): keep at least one warm-up step."
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    for w in &mut a.workloads {
        w.gates = gates;
        // `lstm-wgpu bench --cell gru` names its rows so.
        if gates == 3 {
            w.name = match w.name {
                "ts" => "ts-gru",
                "char" => "char-gru",
                _ => "big-gru",
            };
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let device = Device::wgpu(DeviceKind::DefaultDevice).autodiff();
    let adapter = adapter_name();
    if !args.json {
        println!(
            "{:<8} {:>10} {:>10} {:>10} {:>8} {:>8} {:>9}  {:<10} adapter",
            "workload",
            "ms/step",
            "tokens/s",
            "disp/step",
            "submits",
            "GFLOP/s",
            "peak MiB",
            "path"
        );
    }
    for w in &args.workloads {
        let r = match run(w, args.steps, args.warmup, &device) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {}: {e}", w.name);
                return ExitCode::from(1);
            }
        };
        let peak = r.peak_mb.map_or("null".to_string(), |m| format!("{m:.1}"));
        if args.json {
            // Dispatches and submits are not observable from Burn's API.
            println!(
                "{{\"workload\":{},\"ms_per_step\":{:.3},\"tokens_per_s\":{:.1},\
                 \"dispatches_per_step\":null,\"submits_per_step\":null,\"gflops\":{:.3},\
                 \"peak_mem_mb\":{peak},\"adapter\":{},\"path\":\"burn-wgpu\",\
                 \"framework\":\"burn 0.22.1\",\"steps\":{},\"warmup\":{}}}",
                json_str(w.name),
                r.ms,
                r.tokens_per_s,
                r.gflops,
                json_str(&adapter),
                args.steps,
                args.warmup
            );
        } else {
            println!(
                "{:<8} {:>10.1} {:>10.0} {:>10} {:>8} {:>8.2} {:>9}  {:<10} {}",
                w.name, r.ms, r.tokens_per_s, "-", "-", r.gflops, peak, "burn-wgpu", adapter
            );
        }
    }
    ExitCode::SUCCESS
}
