//! `lstm-wgpu bench`: standard training workloads timed step by step (issue
//! #5). Each step is one [`Trainer::step`]: forward over the whole sequence,
//! loss, backward, clip by global norm and AdamW, in one submit, with the
//! loss and the gradient norm read back, so the GPU work is complete when the
//! step returns. Data are synthetic from a fixed seed.
//!
//! FLOPs are counted analytically, every GEMM as 2·m·n·k (see
//! [`flops_per_step`] and "FLOPs per step" in docs/commands.md); elementwise work
//! (cell pointwise math, loss, norms, clipping, the optimizer) is left out.

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::kernels::optim::OptimConfig;
use crate::model::norm::Norm;
use crate::rng::Rng;
use crate::train::{Carry, Head, NetConfig, StepData, Trainer, init_values};
use std::sync::Arc;

/// A standard workload.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Its name on the command line.
    pub name: &'static str,
    /// The model.
    pub net: NetConfig,
    /// Sequence length T.
    pub seq: usize,
    /// Batch size B.
    pub batch: usize,
    /// Clip-by-global-norm threshold: 1.0 for the regression workloads, 5.0
    /// for the language models (the usual char-RNN value).
    pub clip: f32,
}

/// The workloads in the order `all` runs them.
pub const WORKLOADS: [&str; 4] = ["ts", "char", "big", "deep"];

/// The char model with `layers` layers.
fn char_net(layers: usize) -> NetConfig {
    NetConfig::new(
        Head::Language {
            vocab: 65,
            embed: 128,
        },
        256,
        layers,
    )
}

impl Workload {
    /// The workload called `name`.
    pub fn by_name(name: &str) -> Result<Self> {
        let w = |name, net, seq, batch, clip| Workload {
            name,
            net,
            seq,
            batch,
            clip,
        };
        Ok(match name {
            "ts" => w(
                "ts",
                NetConfig::new(
                    Head::Regression {
                        features: 10,
                        outputs: 1,
                    },
                    64,
                    2,
                ),
                20,
                32,
                1.0,
            ),
            "char" => w("char", char_net(2), 64, 32, 5.0),
            "big" => w(
                "big",
                NetConfig::new(
                    Head::Sequence {
                        features: 512,
                        outputs: 512,
                    },
                    512,
                    2,
                ),
                128,
                64,
                1.0,
            ),
            "deep" => {
                let mut net = char_net(4);
                // Between layers only: the top layer's output goes to the
                // head as it is (plus its residual input).
                net.norm = Norm::Layer { last: false };
                net.residual = true;
                w("deep", net, 64, 32, 5.0)
            }
            other => {
                return Err(Error::Invalid(format!(
                    "unknown workload {other:?}; known: {}, all",
                    WORKLOADS.join(", ")
                )));
            }
        })
    }

    /// `name`, or every workload for `all`.
    pub fn selection(name: &str) -> Result<Vec<Self>> {
        if name == "all" {
            WORKLOADS.iter().map(|n| Self::by_name(n)).collect()
        } else {
            Ok(vec![Self::by_name(name)?])
        }
    }

    /// FLOPs of one training step ([`flops_per_step`]).
    pub fn flops(&self) -> f64 {
        flops_per_step(&self.net, self.seq, self.batch)
    }
}

/// FLOPs of one training step of `net` on a `seq`×`batch` batch, counting
/// every GEMM as 2·m·n·k. Per layer l with input width I_l, hidden H and
/// G = 4H, over N = T·B rows:
/// - forward: input projection 2·N·G·I_l and the T per-step recurrent
///   products h·W_hhᵀ, 2·N·G·H in all;
/// - backward: dW_ih 2·N·G·I_l, dW_hh 2·N·G·H, the per-step dh_{t-1} =
///   dgates·W_hh 2·N·G·H, and dX = dgates·W_ih 2·N·G·I_l, except for layer 0
///   with dense input, whose input gradient feeds nothing trainable;
/// - head over R rows (N, or B when only the last step is predicted) with
///   O outputs: forward, dW and dX, 3·2·R·H·O.
///
/// With a projection of size P the recurrent products, layer l > 0's
/// input and the head read P instead of H, and the projection adds
/// 3·2·N·H·P per layer (h = W_hr m, dm = W_hrᵀ dh, dW_hr).
///
/// Unidirectional models, as the trainer builds.
pub fn flops_per_step(net: &NetConfig, seq: usize, batch: usize) -> f64 {
    let cfg = net.lstm();
    let (n, h) = ((seq * batch) as f64, net.hidden as f64);
    // The width of h: H, or P with a projection.
    let s = net.width() as f64;
    let g = cfg.cell().gates() as f64 * h;
    let embedded = matches!(net.head, Head::Language { .. });
    let mut f = 0.0;
    for l in 0..net.layers {
        let i = if l == 0 { cfg.input_size as f64 } else { s };
        f += 2.0 * n * g * (i + s); // forward
        f += 2.0 * n * g * (i + s) + 2.0 * n * g * s; // dW_ih, dW_hh, dh
        if l > 0 || embedded {
            f += 2.0 * n * g * i; // dX
        }
        if net.proj > 0 {
            f += 3.0 * 2.0 * n * h * s; // W_hr m, W_hrᵀ dh, dW_hr
        }
    }
    let rows = if matches!(net.head, Head::Regression { .. }) {
        batch as f64
    } else {
        n
    };
    f + 3.0 * 2.0 * rows * s * net.out_dim() as f64
}

/// What one workload measured.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchRow {
    /// Workload name.
    pub workload: String,
    /// Median wall time of a timed step, in milliseconds.
    pub ms_per_step: f64,
    /// batch × seq per second at the median step time.
    pub tokens_per_s: f64,
    /// Compute dispatches per step.
    pub dispatches_per_step: usize,
    /// Queue submits carrying the step's compute work.
    pub submits_per_step: usize,
    /// FLOPs per step ([`flops_per_step`]) over the median step time, in 10⁹/s.
    pub gflops: f64,
    /// Most bytes of GPU buffers live at once ([`crate::gpu::MemCounter`]),
    /// in MiB.
    pub peak_mem_mb: f64,
    /// Adapter name.
    pub adapter: String,
    /// Which cell path ran.
    pub path: String,
    /// Arithmetic and storage precision.
    pub precision: &'static str,
    /// Sequence length.
    pub seq: usize,
    /// Batch size.
    pub batch: usize,
    /// Timed steps.
    pub steps: usize,
    /// Warm-up steps.
    pub warmup: usize,
    /// FLOPs per step, in 10⁹.
    pub gflop_per_step: f64,
    /// Loss of the last step (a finite value shows the step computed).
    pub last_loss: f32,
    /// Steps ran back to back (the next submitted before the previous one's
    /// loss was read), not one by one (`--sync`).
    pub pipelined: bool,
    /// Data-parallel steps (`bench --mpi`): the ranks and where a step's
    /// time went on rank 0; `None` for plain steps.
    pub split: Option<StepSplit>,
}

/// A data-parallel step's time on one rank, in milliseconds per step
/// (averaged over the timed steps): the host's time in each phase
/// ([`crate::train::reduce::ReduceTimes`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepSplit {
    /// Ranks sharing each batch (`batch` is the global one).
    pub ranks: usize,
    /// Gradient buckets per step: with more than one, the buckets before
    /// the last are read back and summed while the GPU runs the rest of
    /// backward.
    pub buckets: usize,
    /// Waiting for forward and backward on the GPU (the part the reduction
    /// did not hide).
    pub compute_ms: f64,
    /// The gradients read back.
    pub readback_ms: f64,
    /// The sum over the ranks.
    pub allreduce_ms: f64,
    /// The sums written back to the GPU.
    pub upload_ms: f64,
}

impl StepSplit {
    /// The split of `t` (summed over its steps) on `ranks` ranks.
    pub fn of(t: &crate::train::reduce::ReduceTimes, ranks: usize) -> Self {
        let per = |s: f64| 1e3 * s / t.steps.max(1) as f64;
        StepSplit {
            ranks,
            buckets: t.buckets,
            compute_ms: per(t.compute),
            readback_ms: per(t.readback),
            allreduce_ms: per(t.allreduce),
            upload_ms: per(t.upload),
        }
    }
}

impl BenchRow {
    /// One JSON object on one line (non-finite numbers as null).
    pub fn json(&self) -> String {
        use crate::train::metrics::{Value, json_line};
        let int = |v: usize| Value::Int(v as i64);
        let mut fields = vec![
            ("workload", Value::Str(self.workload.clone())),
            ("ms_per_step", Value::Float(self.ms_per_step)),
            ("tokens_per_s", Value::Float(self.tokens_per_s)),
            ("dispatches_per_step", int(self.dispatches_per_step)),
            ("submits_per_step", int(self.submits_per_step)),
            ("gflops", Value::Float(self.gflops)),
            ("peak_mem_mb", Value::Float(self.peak_mem_mb)),
            ("adapter", Value::Str(self.adapter.clone())),
            ("path", Value::Str(self.path.clone())),
            ("precision", Value::Str(self.precision.to_string())),
            ("seq", int(self.seq)),
            ("batch", int(self.batch)),
            ("steps", int(self.steps)),
            ("warmup", int(self.warmup)),
            ("gflop_per_step", Value::Float(self.gflop_per_step)),
            ("last_loss", Value::Float(self.last_loss as f64)),
            ("pipelined", Value::Bool(self.pipelined)),
        ];
        if let Some(s) = &self.split {
            fields.extend([
                ("ranks", int(s.ranks)),
                ("buckets", int(s.buckets)),
                ("compute_ms", Value::Float(s.compute_ms)),
                ("readback_ms", Value::Float(s.readback_ms)),
                ("allreduce_ms", Value::Float(s.allreduce_ms)),
                ("upload_ms", Value::Float(s.upload_ms)),
            ]);
        }
        json_line(&fields)
    }

    /// The table header ([`BenchRow::table_row`] aligns under it).
    pub fn table_header() -> String {
        format!(
            "{:<8} {:>10} {:>10} {:>10} {:>8} {:>8} {:>9}  {:<10} adapter",
            "workload",
            "ms/step",
            "tokens/s",
            "disp/step",
            "submits",
            "GFLOP/s",
            "peak MiB",
            "path"
        )
    }

    /// One aligned table row (a data-parallel row ends with its split).
    pub fn table_row(&self) -> String {
        let split = self.split.map_or(String::new(), |s| {
            format!(
                "  [{} rank{}, {} bucket{}: compute {:.1}, readback {:.1}, allreduce {:.1}, \
                 upload {:.1} ms]",
                s.ranks,
                if s.ranks == 1 { "" } else { "s" },
                s.buckets,
                if s.buckets == 1 { "" } else { "s" },
                s.compute_ms,
                s.readback_ms,
                s.allreduce_ms,
                s.upload_ms
            )
        });
        format!(
            "{:<8} {:>10.1} {:>10.0} {:>10} {:>8} {:>8.2} {:>9.1}  {:<10} {}{split}",
            self.workload,
            self.ms_per_step,
            self.tokens_per_s,
            self.dispatches_per_step,
            self.submits_per_step,
            self.gflops,
            self.peak_mem_mb,
            self.path,
            self.adapter
        )
    }
}

/// The synthetic batch of a workload, time-major: inputs and targets.
enum Synthetic {
    Tokens(Vec<u32>, Vec<u32>),
    Series(Vec<f32>, Vec<f32>),
}

impl Synthetic {
    fn new(w: &Workload, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let tb = w.seq * w.batch;
        let mut uniform =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect() };
        match w.net.head {
            Head::Language { vocab, .. } => {
                let mut ids = |n: usize| -> Vec<u32> {
                    (0..n)
                        .map(|_| (rng.next_u64() % vocab as u64) as u32)
                        .collect()
                };
                let x = ids(tb);
                Synthetic::Tokens(x, ids(tb))
            }
            Head::Regression { features, outputs } => {
                Synthetic::Series(uniform(tb * features), uniform(w.batch * outputs))
            }
            Head::Sequence { features, outputs } => {
                Synthetic::Series(uniform(tb * features), uniform(tb * outputs))
            }
        }
    }

    fn step_data(&self) -> StepData<'_> {
        match self {
            Synthetic::Tokens(x, y) => StepData::tokens(x, y),
            Synthetic::Series(x, y) => StepData::series(x, y),
        }
    }
}

/// A workload ready to step: its trainer (AdamW, lr 1e-3, the workload's
/// clip) and its synthetic batch. Shared with the criterion benchmarks.
pub struct BenchRun {
    /// The trainer.
    pub trainer: Trainer,
    data: Synthetic,
    seq: usize,
    lr: f64,
}

impl BenchRun {
    /// Builds `w` on `ctx` from seeded initial weights and data.
    pub fn new(ctx: Arc<GpuContext>, w: &Workload) -> Result<Self> {
        let optim = OptimConfig {
            lr: 1e-3,
            ..OptimConfig::adamw()
        };
        let values = init_values(&w.net, 0);
        let trainer = Trainer::new(ctx, w.net.clone(), values, w.batch, Some(w.clip), &optim)?;
        Ok(Self {
            trainer,
            data: Synthetic::new(w, 1),
            seq: w.seq,
            lr: optim.lr,
        })
    }

    /// One training step over the whole sequence from a zero state; returns
    /// once the GPU work is done (the loss and gradient norm are read back).
    pub fn step(&mut self) -> Result<crate::train::StepStats> {
        self.trainer
            .step(self.seq, &self.data.step_data(), Carry::Zero, self.lr)
    }

    /// Submits one such step without waiting ([`Trainer::submit`]).
    pub fn submit(&mut self) -> Result<()> {
        self.trainer
            .submit(self.seq, &self.data.step_data(), Carry::Zero, self.lr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_of_ts_by_hand() {
        // Layer 0: I=10, H=64, N=640, G=256; no dX (dense input).
        // fwd 2·640·256·74, bwd 2·640·256·74 + 2·640·256·64.
        // Layer 1: I=64: fwd 2·640·256·128, bwd the same + dh + dX.
        // Head: 3·2·32·64·1.
        let (n, g) = (640.0, 256.0);
        let l0 = 2.0 * n * g * 74.0 * 2.0 + 2.0 * n * g * 64.0;
        let l1 = 2.0 * n * g * 128.0 * 2.0 + 2.0 * n * g * 64.0 + 2.0 * n * g * 64.0;
        let head = 6.0 * 32.0 * 64.0;
        let w = Workload::by_name("ts").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(w.flops(), l0 + l1 + head);
    }

    #[test]
    fn every_workload_resolves_and_unknown_is_an_error() {
        assert_eq!(
            Workload::selection("all")
                .unwrap_or_else(|e| panic!("{e}"))
                .len(),
            WORKLOADS.len()
        );
        let e = Workload::by_name("nope")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("unknown workload") && e.contains("ts, char, big, deep"));
    }

    #[test]
    fn json_escapes_and_nulls() {
        let row = BenchRow {
            workload: "ts".into(),
            ms_per_step: 2.0,
            tokens_per_s: 320.0,
            dispatches_per_step: 28,
            submits_per_step: 1,
            gflops: 1.5,
            peak_mem_mb: 4.0,
            adapter: "a\"b\\c".into(),
            path: "per-step".into(),
            precision: "f32",
            seq: 20,
            batch: 32,
            steps: 2,
            warmup: 1,
            gflop_per_step: 0.003,
            last_loss: f32::NAN,
            pipelined: true,
            split: None,
        };
        let j = row.json();
        assert!(
            j.starts_with("{\"workload\":\"ts\",\"ms_per_step\":2,"),
            "{j}"
        );
        assert!(j.contains("\"adapter\":\"a\\\"b\\\\c\""), "{j}");
        assert!(j.contains("\"gflops\":1.5,"), "{j}");
        assert!(j.contains("\"dispatches_per_step\":28,"), "{j}");
        assert!(j.contains("\"last_loss\":null,"), "{j}");
        assert!(j.ends_with("\"pipelined\":true}"), "{j}");
        let split = StepSplit {
            ranks: 2,
            buckets: 3,
            compute_ms: 3.0,
            readback_ms: 0.5,
            allreduce_ms: 1.3,
            upload_ms: 0.4,
        };
        let row = BenchRow {
            split: Some(split),
            ..row
        };
        let j = row.json();
        assert!(
            j.ends_with(
                "\"pipelined\":true,\"ranks\":2,\"buckets\":3,\"compute_ms\":3,\"readback_ms\":0.5,\
                 \"allreduce_ms\":1.3,\"upload_ms\":0.4}"
            ),
            "{j}"
        );
        assert!(
            row.table_row().ends_with(
                "[2 ranks, 3 buckets: compute 3.0, readback 0.5, allreduce 1.3, upload 0.4 ms]"
            ),
            "{}",
            row.table_row()
        );
    }
}
