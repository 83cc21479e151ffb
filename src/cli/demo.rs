//! `lstm-wgpu demo`: next-value prediction on a generated sine mixture.
//! The LSTM's forward and backward run on the GPU; the one-unit linear head
//! and the Adam update run on the host (the GPU trainer replaces this).

use crate::cli::env::open_gpu;
use lstm_wgpu::error::{Error, Result};
use lstm_wgpu::lstm::{Batch, Lstm, Upstream};
use lstm_wgpu::model::{LstmConfig, LstmModel};
use lstm_wgpu::rng::Rng;

/// Arguments of `demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Training steps.
    #[arg(long, default_value_t = 60)]
    pub steps: usize,
    /// Hidden units.
    #[arg(long, default_value_t = 32)]
    pub hidden: usize,
    /// Stacked layers.
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    /// Sequence length.
    #[arg(long, default_value_t = 32)]
    pub seq_len: usize,
    /// Sequences per batch.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 0.01)]
    pub lr: f32,
    /// Seed of the initial weights and the data.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Adam (PyTorch defaults: betas 0.9, 0.999, eps 1e-8) on a host vector.
struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl Adam {
    fn new(n: usize) -> Self {
        Self {
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }
    fn step(&mut self, p: &mut [f32], g: &[f32], lr: f32) {
        self.t += 1;
        let (b1, b2) = (0.9f32, 0.999f32);
        let c1 = 1.0 - b1.powi(self.t);
        let c2 = 1.0 - b2.powi(self.t);
        for i in 0..p.len() {
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g[i];
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g[i] * g[i];
            p[i] -= lr * (self.m[i] / c1) / ((self.v[i] / c2).sqrt() + 1e-8);
        }
    }
}

/// A batch of sine mixtures with random phases: inputs [T, B, 1] and the
/// next values as targets.
fn sine_batch(rng: &mut Rng, t: usize, b: usize) -> (Vec<f32>, Vec<f32>) {
    let mut x = vec![0f32; t * b];
    let mut y = vec![0f32; t * b];
    for j in 0..b {
        let p1 = rng.uniform(0.0, std::f64::consts::TAU);
        let p2 = rng.uniform(0.0, std::f64::consts::TAU);
        let f = |s: usize| {
            (0.6 * (0.3 * s as f64 + p1).sin() + 0.3 * (0.71 * s as f64 + p2).sin()) as f32
        };
        for s in 0..t {
            x[s * b + j] = f(s);
            y[s * b + j] = f(s + 1);
        }
    }
    (x, y)
}

/// Runs the demo, printing the loss to stdout.
pub fn run(a: &DemoArgs, verbose: bool) -> Result<()> {
    if a.steps == 0 || a.seq_len == 0 || a.batch == 0 {
        return Err(Error::Invalid(
            "--steps, --seq-len and --batch must be at least 1".into(),
        ));
    }
    let cfg = LstmConfig {
        input_size: 1,
        hidden_size: a.hidden,
        num_layers: a.layers,
        bidirectional: false,
        bias: true,
        cell: Default::default(),
        proj_size: 0,
    };
    cfg.validate()?;
    let ctx = open_gpu(verbose)?;
    let model = LstmModel::init_uniform(&ctx, cfg.clone(), a.seed)?;
    let mut params = ctx.read_f32(&model.params, 0, model.table.total)?;
    let mut lstm = Lstm::new(ctx.clone(), model)?;
    let (t, b, h) = (a.seq_len, a.batch, a.hidden);
    let mut rng = Rng::new(a.seed ^ 0x5eed);
    let mut head = vec![0f32; h + 1];
    let mut opt = Adam::new(params.len());
    let mut opt_head = Adam::new(h + 1);
    let sd = cfg.num_layers * cfg.dirs() * b * h;
    let zeros = vec![0f32; sd];
    let n = (t * b) as f32;
    eprintln!(
        "demo: LSTM({}, {h}, {} layers) + linear head, next-value prediction on sine mixtures, T={t}, B={b}, Adam lr {}",
        cfg.input_size, cfg.num_layers, a.lr
    );
    let start = std::time::Instant::now();
    for step in 1..=a.steps {
        let (x, y) = sine_batch(&mut rng, t, b);
        // Forward once to get the head's input, then again with its gradient:
        // the head lives on the host, so its gradient needs the output first.
        let batch = Batch {
            input: &x,
            seq_len: t,
            batch: b,
            batch_first: false,
            h0: None,
            c0: None,
            lengths: None,
        };
        let out = lstm.forward(&batch)?;
        let mut loss = 0f32;
        let mut gout = vec![0f32; t * b * h];
        let mut ghead = vec![0f32; h + 1];
        for r in 0..t * b {
            let hv = &out.output[r * h..(r + 1) * h];
            let pred: f32 = hv.iter().zip(&head).map(|(a, w)| a * w).sum::<f32>() + head[h];
            let e = pred - y[r];
            loss += e * e / n;
            let de = 2.0 * e / n;
            for k in 0..h {
                gout[r * h + k] = de * head[k];
                ghead[k] += de * hv[k];
            }
            ghead[h] += de;
        }
        let up = Upstream {
            grad_output: &gout,
            grad_h_n: &zeros,
            grad_c_n: &zeros,
        };
        lstm.forward_backward(&batch, &up)?;
        let g = ctx.read_f32(&lstm.model.grads, 0, params.len())?;
        opt.step(&mut params, &g, a.lr);
        opt_head.step(&mut head, &ghead, a.lr);
        ctx.write(&lstm.model.params, 0, &params);
        if step == 1 || step % 10 == 0 || step == a.steps {
            crate::cli::out::line(format!("step {step:>4}  loss {loss:.5}"))?;
        }
    }
    eprintln!(
        "demo: {} steps in {:.1} s",
        a.steps,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
