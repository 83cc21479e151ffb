//! The trainer's GPU step: embedding (or dense input) → LSTM → linear head →
//! loss → backward → clip by global norm → optimizer, recorded into one
//! command encoder and one submit per step. Only the loss, the gradient
//! norms and the skip flag are read back, and on histogram steps the bin
//! counts ([`histograms`]).

pub mod bench;
pub mod cell_check;
pub mod forecast;
pub mod health;
pub mod histograms;
pub mod lr;
pub mod metrics;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod reduce;
pub mod tensorboard;
mod threads;

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, GpuContext};
use crate::kernels::attention::{AttentionBackward, AttentionForward};
use crate::kernels::clip::ClipPlan;
use crate::kernels::elementwise::DropoutStep;
use crate::kernels::elementwise::LastStepShape;
use crate::kernels::embedding::{EmbBackward, EmbForward, EmbShape, csr_words};
use crate::kernels::gemm::GemmOp;
use crate::kernels::loss::{
    CeBackward, CeForward, CeShape, LossStep, MseBackward, MseForward, MseShape,
};
use crate::kernels::optim::{OptimConfig, OptimPlan};
use crate::lstm::Lstm;
use crate::model::norm::{Norm, TensorKind};
use crate::model::{HostModel, Links, LstmConfig, LstmModel, ParamTable, tables};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// What the model predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// Token ids in, a distribution over `vocab` classes at every step out;
    /// cross-entropy averaged over all positions.
    Language {
        /// Vocabulary size V.
        vocab: usize,
        /// Embedding width E.
        embed: usize,
    },
    /// Real features in, `outputs` values predicted from the last (valid)
    /// step; MSE.
    Regression {
        /// Features per step.
        features: usize,
        /// Values predicted per sequence.
        outputs: usize,
    },
    /// Real features in, `outputs` values predicted at every step; MSE
    /// averaged over all valid positions and outputs.
    Sequence {
        /// Features per step.
        features: usize,
        /// Values predicted per step.
        outputs: usize,
    },
}

/// Attention pooling over the LSTM's outputs, the input of the
/// [`Head::Regression`] head instead of the last valid step alone
/// (`shaders/attention.wgsl`; docs/math.md, "Attention pooling"): per
/// sequence, scores `s_t` over its valid steps, weights `a = softmax(s)`,
/// and the head reads `[Σ_t a_t h_t ; h_T]` (its weight is then
/// `[outputs, 2H]`), with `h_T` the last valid output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attention {
    /// `s_t = h_t · h_T`: each output's similarity to the last one.
    Dot,
    /// `s_t = q · h_t` with a trained query `q` `[H]`
    /// (`attention.query`, initialised U(±1/√H) as PyTorch initialises a
    /// bias of fan-in H).
    Learned,
}

impl Attention {
    /// The name `--attention` takes and checkpoints store.
    pub fn name(self) -> &'static str {
        match self {
            Attention::Dot => "dot",
            Attention::Learned => "learned",
        }
    }
}

/// How the LSTM weights start (issue #4). The default is PyTorch's:
/// U(±1/√H) for every LSTM weight and bias.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct InitOptions {
    /// Recurrent weights W_hh.
    pub whh: WhhInit,
    /// Input weights W_ih.
    pub wih: WihInit,
    /// Forget-gate bias: `Some(F)` sets the forget slice [H, 2H) of bias_ih
    /// to F and of bias_hh to 0, so their sum, the effective bias, is F.
    pub forget_bias: Option<f32>,
}

/// Initialisation of W_hh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WhhInit {
    /// PyTorch's default U(±1/√H).
    #[default]
    Uniform,
    /// Each of the four H×H gate blocks orthogonal (gain 1).
    Orthogonal,
}

/// Initialisation of W_ih.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WihInit {
    /// PyTorch's default U(±1/√H).
    #[default]
    Uniform,
    /// Xavier (Glorot) uniform on the [4H, I] matrix.
    Xavier,
}

/// Shape of a trainable model: the LSTM and what surrounds it. Build it
/// with [`NetConfig::new`] and assign the optional fields, so that fields
/// added later keep their defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConfig {
    /// Input and output pieces.
    pub head: Head,
    /// Hidden units per layer.
    pub hidden: usize,
    /// Stacked layers.
    pub layers: usize,
    /// Normalization variant.
    pub norm: Norm,
    /// Dropout probability on each layer's output but the last (training
    /// only), as nn.LSTM's `dropout`.
    pub dropout: f32,
    /// Residual connections between layers of equal width.
    pub residual: bool,
    /// How the LSTM weights start.
    pub init: InitOptions,
    /// The recurrent cell (the LSTM's by default).
    pub cell: crate::kernels::cell::Cell,
    /// Weight-drop probability on every W_hh (see [`Links::weight_drop`]).
    pub weight_drop: f32,
    /// Zoneout probabilities of h and c (see [`Links::zoneout_h`]).
    pub zoneout: (f32, f32),
    /// Attention pooling before a [`Head::Regression`] head; `None`: the
    /// head reads the last valid step.
    pub attention: Option<Attention>,
    /// The LSTM's projection size P (`nn.LSTM`'s `proj_size`; 0: none):
    /// the layers' h, and the head's input, are P wide.
    pub proj: usize,
}

impl NetConfig {
    /// A plain model: no norm, no dropout, no residual, PyTorch's init.
    pub fn new(head: Head, hidden: usize, layers: usize) -> Self {
        Self {
            head,
            hidden,
            layers,
            norm: Norm::None,
            dropout: 0.0,
            residual: false,
            init: InitOptions::default(),
            cell: crate::kernels::cell::Cell::Lstm,
            weight_drop: 0.0,
            zoneout: (0.0, 0.0),
            attention: None,
            proj: 0,
        }
    }

    /// Width of the LSTM's output, the head's input: P with a projection,
    /// else the hidden size.
    pub fn width(&self) -> usize {
        self.lstm().state_size()
    }

    /// The LSTM part.
    pub fn lstm(&self) -> LstmConfig {
        let input_size = match self.head {
            Head::Language { embed, .. } => embed,
            Head::Regression { features, .. } | Head::Sequence { features, .. } => features,
        };
        LstmConfig {
            input_size,
            hidden_size: self.hidden,
            num_layers: self.layers,
            bidirectional: false,
            bias: true,
            cell: self.cell,
            proj_size: self.proj,
        }
    }

    /// Checks that the init options fit the cell: a forget-gate bias is
    /// the LSTM's, an orthogonal W_hh needs a matrix (not IndRNN's u).
    pub fn check_init(&self) -> Result<()> {
        let cell = self.cell;
        if self.init.forget_bias.is_some() && cell != crate::kernels::cell::Cell::Lstm {
            return Err(Error::Invalid(format!(
                "a forget-gate bias is the LSTM's; the {} has no forget gate",
                cell.module()
            )));
        }
        if self.init.whh == WhhInit::Orthogonal && cell.diag() {
            return Err(Error::Invalid(format!(
                "an orthogonal W_hh needs a matrix; the {}'s W_hh is a vector",
                cell.module()
            )));
        }
        Ok(())
    }

    /// Checks that attention pooling has a head to feed: a
    /// [`Head::Regression`] one (the others read every step).
    pub fn check_head(&self) -> Result<()> {
        match (self.attention, self.head) {
            (Some(a), Head::Language { .. } | Head::Sequence { .. }) => {
                Err(Error::Invalid(format!(
                    "attention pooling ({}) feeds a head that reads one vector per sequence; \
                     this model's head predicts at every step",
                    a.name()
                )))
            }
            // The README module's `Attention` and the exports read H-wide
            // outputs; a projected model's pooling is not written.
            (Some(a), _) if self.proj > 0 => Err(Error::Invalid(format!(
                "attention pooling ({}) with --proj-size {} is not supported",
                a.name(),
                self.proj
            ))),
            _ => Ok(()),
        }
    }

    /// Input width of the head: the layers' width W (H, or P with a
    /// projection), or 2W (`[context; h_T]`) with attention.
    pub fn head_in(&self) -> usize {
        match self.attention {
            Some(_) => 2 * self.width(),
            None => self.width(),
        }
    }

    /// Output width of the head.
    pub fn out_dim(&self) -> usize {
        match self.head {
            Head::Language { vocab, .. } => vocab,
            Head::Regression { outputs, .. } | Head::Sequence { outputs, .. } => outputs,
        }
    }

    /// The pieces around the LSTM, with PyTorch names.
    pub fn extra(&self) -> Vec<(String, Vec<usize>)> {
        let mut v = Vec::new();
        if let Head::Language { vocab, embed } = self.head {
            v.push(("embedding.weight".to_string(), vec![vocab, embed]));
        }
        if self.attention == Some(Attention::Learned) {
            v.push(("attention.query".to_string(), vec![self.width()]));
        }
        v.push((
            "head.weight".to_string(),
            vec![self.out_dim(), self.head_in()],
        ));
        v.push(("head.bias".to_string(), vec![self.out_dim()]));
        v
    }
}

/// The LSTM's parameter table followed by the norm parameters and the
/// pieces around it ([`NetConfig::extra`]): the layout of the flat buffers.
impl NetConfig {
    /// Layout of the trainer's flat parameter buffer.
    pub fn table(&self) -> ParamTable {
        let (mut t, _) = tables(&self.lstm(), &self.norm);
        for (n, s) in self.extra() {
            t.push(n, s);
        }
        t
    }

    /// Layout of the running statistics of BatchNorm variants.
    pub fn stats_table(&self) -> ParamTable {
        tables(&self.lstm(), &self.norm).1
    }
}

/// What a model must fit before anything is allocated for it: a host
/// memory budget (the command line gives half the machine's memory) and,
/// once a GPU is open, its largest storage buffer
/// ([`GpuContext::max_storage_bytes`]).
#[derive(Clone, Copy, Debug)]
pub struct SizeLimits {
    /// Bytes the host may hold for parameters and batches.
    pub host_bytes: u64,
    /// The largest storage buffer and which limit that is, when known.
    pub buffer: Option<(u64, &'static str)>,
}

impl SizeLimits {
    /// The limits of this machine: [`host_budget`] for the host, and the
    /// largest storage buffer of `ctx` when a GPU is open.
    pub fn of(ctx: Option<&GpuContext>) -> Self {
        Self {
            host_bytes: host_budget(),
            buffer: ctx.map(|c| c.max_storage_bytes()),
        }
    }
}

/// Host memory a run may plan for: half of `MemTotal` in /proc/meminfo,
/// or 8 GiB where that cannot be read. Sizes over it are refused before
/// anything is allocated (a failed allocation aborts the process).
pub fn host_budget() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb.saturating_mul(1024) / 2)
        })
        .unwrap_or(8 << 30)
}

/// Copies of the parameters (f32) the host holds at once at most: initial
/// values, a checkpoint's parameters and optimizer state (up to three
/// moments) read back, and the serialized file.
pub const HOST_PARAM_COPIES: u64 = 8;

/// `a · b · …` in u128, saturating (far above any budget).
fn prod(v: &[usize]) -> u128 {
    v.iter().fold(1u128, |a, &d| a.saturating_mul(d as u128))
}

/// Bytes for a message: exact, or `more than 2^64` when saturated.
fn bytes_text(b: u128) -> String {
    match u64::try_from(b) {
        Ok(b) => b.to_string(),
        Err(_) => "more than 2^64".to_string(),
    }
}

impl NetConfig {
    /// Parameters (the flat buffer, [`NetConfig::table`]) and running
    /// statistics, counted with overflow-safe arithmetic and without
    /// building the tables (a bound for the norm tensors).
    pub fn counts(&self) -> (u128, u128) {
        let c = self.lstm();
        let (h, l, i) = (c.hidden_size, c.num_layers, c.input_size);
        let g = prod(&[4, h]);
        let first = g.saturating_mul((i as u128).saturating_add(h as u128).saturating_add(2));
        let rest = g
            .saturating_mul(prod(&[2, h]).saturating_add(2))
            .saturating_mul(l.saturating_sub(1) as u128);
        // At most 2 · (4H + 4H + H) norm parameters per layer (layer-cell).
        let norm = prod(&[18, h, l]);
        // Projections: W_hr [P, H] per layer (W_hh's [4H, P] is within the
        // [4H, H] counted above).
        let proj = prod(&[self.proj, h, l]);
        let extra = self
            .extra()
            .iter()
            .fold(0u128, |a, (_, s)| a.saturating_add(prod(s)));
        let params = first
            .saturating_add(rest)
            .saturating_add(norm)
            .saturating_add(proj)
            .saturating_add(extra);
        let stats = match self.norm {
            Norm::None | Norm::Layer { .. } | Norm::LayerCell => 0,
            Norm::Batch { .. } => prod(&[18, h, l]),
            Norm::StepBatch { t_max, .. } | Norm::RecurrentBatch { t_max } => {
                prod(&[18, h, l, t_max])
            }
        };
        (params, stats)
    }

    /// Checks, with overflow-safe arithmetic and before anything is
    /// allocated, that this model trained or run on steps of `seq` ×
    /// `batch` fits `limits`: [`HOST_PARAM_COPIES`] copies of its
    /// parameters and statistics and one batch on the host, and its
    /// largest buffers (parameters, one layer's pre-gates, the embedded
    /// inputs, the logits) each in one storage buffer, and an attention
    /// head's loop passes within its kernels' cap. The errors name
    /// the command-line flags that set the sizes.
    pub fn check_size(&self, seq: usize, batch: usize, limits: &SizeLimits) -> Result<()> {
        let c = self.lstm();
        let (params, stats) = self.counts();
        let dims = format!(
            "--hidden {}, --layers {}, input width {}{}, {} outputs",
            c.hidden_size,
            c.num_layers,
            c.input_size,
            match self.head {
                Head::Language { .. } => " (--embed)",
                _ => "",
            },
            self.out_dim()
        );
        let host = params
            .saturating_add(stats)
            .saturating_mul(4 * HOST_PARAM_COPIES as u128);
        if host > limits.host_bytes as u128 {
            return Err(Error::Invalid(format!(
                "model too large: {} parameters and {} statistics ({dims}) need {} bytes of \
                 host memory ({HOST_PARAM_COPIES} copies), over the budget of {} bytes; \
                 lower {}",
                bytes_text(params),
                bytes_text(stats),
                bytes_text(host),
                limits.host_bytes,
                match (stats > params, self.head) {
                    (true, _) => "--norm-t-max (or --seq-len), --hidden or --layers",
                    (false, Head::Language { .. }) => "--hidden, --layers or --embed",
                    (false, _) => "--hidden or --layers",
                }
            )));
        }
        let width = (c.input_size.max(2) as u128).saturating_add(self.out_dim() as u128);
        let step = prod(&[seq, batch]).saturating_mul(width).saturating_mul(8);
        if step > limits.host_bytes as u128 {
            return Err(Error::Invalid(format!(
                "batch too large: --seq-len {seq} × --batch {batch} × {width} values need {} \
                 bytes, over the host budget of {} bytes",
                bytes_text(step),
                limits.host_bytes
            )));
        }
        if self.attention.is_some() {
            let shape = crate::kernels::attention::AttentionShape {
                seq,
                batch,
                width: c.hidden_size,
                ..Default::default()
            };
            let (passes, cap) = (shape.loop_passes(), crate::kernels::gemm::LOOP_CAP);
            if passes > cap {
                return Err(Error::Invalid(format!(
                    "attention head too large: --seq-len {seq} × --hidden {} need {passes} loop \
                     passes an invocation, over the {cap} its kernels keep to; lower --seq-len \
                     or --hidden",
                    c.hidden_size
                )));
            }
        }
        let Some((limit, kind)) = limits.buffer else {
            return Ok(());
        };
        let tb = format!("--seq-len {seq} × --batch {batch}");
        let mut buffers = vec![
            (format!("the parameters ({dims})"), params.saturating_mul(4)),
            (
                format!(
                    "the pre-gates of one layer ({tb} × 4 × --hidden {})",
                    c.hidden_size
                ),
                prod(&[seq, batch, 4, c.hidden_size, 4]),
            ),
            (
                format!("the layer inputs ({tb} × width {})", c.input_size),
                prod(&[seq, batch, c.input_size, 4]),
            ),
        ];
        if let Head::Language { vocab, .. } | Head::Sequence { outputs: vocab, .. } = self.head {
            buffers.push((
                format!("the outputs ({tb} × {vocab})"),
                prod(&[seq, batch, vocab, 4]),
            ));
        }
        if let Some((what, bytes)) = buffers.into_iter().find(|(_, b)| *b > limit as u128) {
            return Err(Error::TooLarge {
                what,
                bytes: u64::try_from(bytes).unwrap_or(u64::MAX),
                limit,
                kind,
            });
        }
        Ok(())
    }
}

/// Initial values in [`NetConfig::table`] order. The default is PyTorch's:
/// LSTM U(±1/√H); norm gains and shifts as [`Norm::init_value`]; embedding
/// N(0, 1); a learned attention query U(±1/√H), as a bias of fan-in H;
/// head (nn.Linear) U(±1/√fan_in) for weight and bias. The options
/// of [`NetConfig::init`] then overwrite W_hh, W_ih and the forget-gate
/// biases from a second stream of the same seed, so the default draws stay
/// what they were. Seeded and deterministic.
pub fn init_values(net: &NetConfig, seed: u64) -> Vec<f32> {
    let cfg = net.lstm();
    let mut rng = crate::rng::Rng::new(seed);
    let k = 1.0 / (cfg.hidden_size as f64).sqrt();
    let n_lstm = ParamTable::new(cfg.param_shapes()).total;
    let mut v: Vec<f32> = (0..n_lstm).map(|_| rng.uniform(-k, k) as f32).collect();
    for (name, shape, kind) in net.norm.tensor_shapes(&cfg) {
        if kind == TensorKind::Param {
            let n: usize = shape.iter().product();
            v.extend(std::iter::repeat_n(net.norm.init_value(&name), n));
        }
    }
    for (name, shape) in net.extra() {
        let n: usize = shape.iter().product();
        if name == "embedding.weight" {
            v.extend((0..n).map(|_| rng.normal_unpaired() as f32));
        } else {
            let fan_in = match name.starts_with("head.") {
                true => net.head_in(),
                false => net.width(),
            } as f64;
            let b = 1.0 / fan_in.sqrt();
            v.extend((0..n).map(|_| rng.uniform(-b, b) as f32));
        }
    }
    apply_init_options(net, seed, &mut v);
    v
}

/// Initial running statistics in [`NetConfig::stats_table`] order: means 0,
/// variances 1.
pub fn init_stats(net: &NetConfig) -> Vec<f32> {
    let mut v = Vec::new();
    for e in &net.stats_table().entries {
        v.extend(std::iter::repeat_n(net.norm.init_value(&e.name), e.len()));
    }
    v
}

/// A random n×n orthogonal matrix (row-major), as `torch.nn.init.orthogonal_`
/// makes one: the Q of the QR decomposition of a standard Gaussian matrix,
/// with the signs that make R's diagonal positive. Gram–Schmidt on the
/// columns (twice, for f64 accuracy) yields exactly that Q.
pub fn orthogonal(n: usize, rng: &mut crate::rng::Rng) -> Vec<f64> {
    let a: Vec<f64> = (0..n * n).map(|_| rng.normal_unpaired()).collect();
    let mut q = vec![0f64; n * n];
    for j in 0..n {
        let mut v: Vec<f64> = (0..n).map(|r| a[r * n + j]).collect();
        for _ in 0..2 {
            for i in 0..j {
                let d: f64 = (0..n).map(|r| q[r * n + i] * v[r]).sum();
                for (r, x) in v.iter_mut().enumerate() {
                    *x -= d * q[r * n + i];
                }
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        for (r, x) in v.iter().enumerate() {
            q[r * n + j] = x / norm;
        }
    }
    q
}

fn apply_init_options(net: &NetConfig, seed: u64, v: &mut [f32]) {
    let o = net.init;
    if o == InitOptions::default() {
        return;
    }
    let cfg = net.lstm();
    let h = cfg.hidden_size;
    let table = net.table();
    // A stream of its own: the default draws above are left as they were.
    let mut rng = crate::rng::Rng::new(crate::rng::derive_seed(seed, 0x1417_0417));
    for l in 0..cfg.num_layers {
        for d in 0..cfg.dirs() {
            let sfx = crate::model::dir_suffix(d);
            // Other cells are refused by NetConfig::check_init.
            let lstm = cfg.cell() == crate::kernels::cell::Cell::Lstm;
            if o.whh == WhhInit::Orthogonal && !cfg.cell().diag() {
                let off = table.offset(&format!("weight_hh_l{l}{sfx}"));
                // Each gate's H×H block separately (rows g·H .. (g+1)·H);
                // with a projection, its H×P block: the first P columns of
                // an orthogonal matrix (orthonormal columns).
                let s = cfg.state_size();
                for g in 0..cfg.cell().gates() {
                    let q = orthogonal(h, &mut rng);
                    let at = off + g * h * s;
                    for (r, dst) in v[at..at + h * s].chunks_exact_mut(s).enumerate() {
                        for (x, src) in dst.iter_mut().zip(&q[r * h..r * h + s]) {
                            *x = *src as f32;
                        }
                    }
                }
            }
            if o.wih == WihInit::Xavier
                && let Some(e) = table.get(&format!("weight_ih_l{l}{sfx}"))
            {
                // fan_out = 4H rows, fan_in = the layer's input width.
                let (fan_out, fan_in) = (e.shape[0] as f64, e.shape[1] as f64);
                let b = (6.0 / (fan_in + fan_out)).sqrt();
                for x in &mut v[e.offset..e.offset + e.len()] {
                    *x = rng.uniform(-b, b) as f32;
                }
            }
            if let Some(f) = o.forget_bias.filter(|_| lstm) {
                let ih = table.offset(&format!("bias_ih_l{l}{sfx}"));
                let hh = table.offset(&format!("bias_hh_l{l}{sfx}"));
                v[ih + h..ih + 2 * h].fill(f);
                v[hh + h..hh + 2 * h].fill(0.0);
            }
        }
    }
}

/// One batch of a step. `lengths`: valid steps per sequence (B values in
/// 1..=T; all T when `None`), with `pack_padded_sequence` semantics: padded
/// positions neither change the state nor count in the loss.
pub enum StepData<'a> {
    /// Token ids and next-token targets, time-major [T·B] each
    /// ([`Head::Language`]).
    Tokens {
        /// Inputs.
        ids: &'a [u32],
        /// Targets.
        targets: &'a [u32],
        /// Valid steps per sequence.
        lengths: Option<&'a [usize]>,
    },
    /// Features [T, B, F] (time-major) and targets: [B, outputs] for
    /// [`Head::Regression`], [T, B, outputs] for [`Head::Sequence`].
    Series {
        /// Inputs.
        x: &'a [f32],
        /// Targets.
        targets: &'a [f32],
        /// Valid steps per sequence.
        lengths: Option<&'a [usize]>,
    },
}

impl<'a> StepData<'a> {
    /// Token ids and targets, every sequence T long.
    pub fn tokens(ids: &'a [u32], targets: &'a [u32]) -> Self {
        StepData::Tokens {
            ids,
            targets,
            lengths: None,
        }
    }

    /// Features and targets, every sequence T long.
    pub fn series(x: &'a [f32], targets: &'a [f32]) -> Self {
        StepData::Series {
            x,
            targets,
            lengths: None,
        }
    }

    /// The same batch with per-sequence lengths.
    pub fn with_lengths(self, l: &'a [usize]) -> Self {
        match self {
            StepData::Tokens { ids, targets, .. } => StepData::Tokens {
                ids,
                targets,
                lengths: Some(l),
            },
            StepData::Series { x, targets, .. } => StepData::Series {
                x,
                targets,
                lengths: Some(l),
            },
        }
    }

    fn lengths(&self) -> Option<&'a [usize]> {
        match self {
            StepData::Tokens { lengths, .. } | StepData::Series { lengths, .. } => *lengths,
        }
    }
}

/// What one step measured.
#[derive(Clone, Debug, PartialEq)]
pub struct StepStats {
    /// Mean loss of the batch (before the update).
    pub loss: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// The gradients were not finite: no update happened.
    pub skipped: bool,
    /// The loss scale the step's gradients carried (1 without a loss
    /// scaler; see [`Trainer::set_loss_scaler`]).
    pub loss_scale: f32,
    /// L2 norm of each parameter's gradient before clipping, unscaled, in
    /// [`NetConfig::table`] order (see [`Trainer::tensor_names`]); read
    /// back with the loss, no extra dispatch or wait.
    pub tensor_norms: Vec<f32>,
    /// The step's tagged histograms ([`histograms`]) on a histogram step
    /// (see [`Trainer::set_histograms`]); empty otherwise.
    pub histograms: Vec<(String, crate::kernels::histogram::SegmentHistogram)>,
}

/// Buffers and dispatches of one (T, mode) shape around the LSTM's plan.
struct StepPlan {
    /// Gather ids of the token projection (padding mapped to V), if used.
    tok: Option<wgpu::Buffer>,
    inputs: wgpu::Buffer,
    targets: wgpu::Buffer,
    mask: wgpu::Buffer,
    csr: wgpu::Buffer,
    head_out: wgpu::Buffer,
    /// The attention weights [B, T] (first in the attention scratch).
    attn: wgpu::Buffer,
    forward: Vec<Dispatch>,
    backward: Vec<Dispatch>,
    /// When gradients become final during `backward`
    /// ([`crate::schedule::Plan::ready`], with the head's).
    ready: crate::schedule::Ready,
}

/// What [`Trainer::build`] wires together for one step length: the LSTM
/// plan's pieces and the buffers of the head and the loss.
struct StepParts {
    t: usize,
    /// Rows the head sees: every step, or the last valid one per sequence.
    rows: usize,
    /// The head runs on the last valid step only (regression).
    last: bool,
    head_off: (usize, usize),
    emb_off: usize,
    lstm_fwd: Vec<Dispatch>,
    lstm_bwd: Vec<Dispatch>,
    lstm_ready: crate::schedule::Ready,
    refresh: Option<Dispatch>,
    out: wgpu::Buffer,
    ws_x: wgpu::Buffer,
    lengths: wgpu::Buffer,
    dy_top: wgpu::Buffer,
    dy_in: wgpu::Buffer,
    ws_pre: wgpu::Buffer,
    ws_dg: wgpu::Buffer,
    half_dg: bool,
    gate_offs: Vec<(usize, usize)>,
    inputs: wgpu::Buffer,
    targets: wgpu::Buffer,
    csr: wgpu::Buffer,
    head_in: wgpu::Buffer,
    tp: Option<(wgpu::Buffer, wgpu::Buffer, wgpu::Buffer)>,
    head_out: wgpu::Buffer,
    scratch: wgpu::Buffer,
    mask: wgpu::Buffer,
    /// The attention pooling's scratch (weights first), when it has one.
    attn: wgpu::Buffer,
}

/// A step's forward and backward dispatches, and where the LSTM's
/// backward begins in the latter.
type StepLists = (Vec<Dispatch>, Vec<Dispatch>, usize);

/// A step plan's key: (T, train mode, stream position of step 0 in eval).
type PlanKey = (usize, bool, usize);

/// A model with its optimizer, ready to take steps.
pub struct Trainer {
    ctx: Arc<GpuContext>,
    /// The LSTM and its flat buffers (norm, embedding and head parameters
    /// are in the same table).
    pub lstm: Lstm,
    /// The network's shape.
    pub net: NetConfig,
    clip: ClipPlan,
    /// What the clip plan was built from (rebuilt by set_loss_scaler).
    clip_norm: Option<f32>,
    segs: Vec<(usize, usize)>,
    /// The optimizer and its state.
    pub optim: OptimPlan,
    /// Per (T, train mode): eval passes use the model's eval-mode plan
    /// (running statistics, no dropout).
    plans: HashMap<PlanKey, StepPlan>,
    loss: wgpu::Buffer,
    loss_step: wgpu::Buffer,
    batch: usize,
    /// Final (h, c) of the last training step and of the last evaluation,
    /// carried into the next one of the same kind (truncated BPTT).
    carry: [wgpu::Buffer; 2],
    /// Seed of the dropout masks (the run's seed).
    pub dropout_seed: u64,
    /// Training steps taken so far (skipped ones included): step k's
    /// dropout masks use counter k (1-based), so a resumed run that sets
    /// this draws the masks an uninterrupted run draws.
    pub steps_taken: u64,
    /// Mode of the last pass (which plan [`Trainer::head_output`] reads).
    last_train: bool,
    /// Per-kernel timing of training steps, when enabled.
    pub profiler: Option<crate::gpu::Profiler>,
    /// Readback slots (loss and clip stats, per-tensor sums included) of
    /// steps in flight.
    ring: Vec<wgpu::Buffer>,
    /// Token models: layer 0's input projection runs per vocabulary entry
    /// and is gathered (see [`Trainer::set_token_projection`]).
    token_projection: bool,
    /// Steps submitted and not yet read back, oldest first.
    pending: std::collections::VecDeque<Pending>,
    /// Statistics read back but not yet returned by next_stats.
    done: std::collections::VecDeque<StepStats>,
    /// Histograms every `every` steps (step k is one when k % every == 0,
    /// k 1-based), `bins` bins each; `None`: off.
    hist: Option<HistSettings>,
    /// Per step length: the histogram plan of training steps.
    hist_plans: HashMap<usize, histograms::StepHistograms>,
    /// Dispatches the last training step recorded.
    last_dispatches: usize,
    /// Data parallelism: sums the gradients over the ranks after backward
    /// (see [`Trainer::set_reducer`]).
    reducer: Option<Box<dyn reduce::Reducer>>,
    /// The data-parallel steps' time split, while timed
    /// ([`Trainer::time_reduce_steps`]).
    reduce_times: Option<reduce::ReduceTimes>,
    /// Data parallelism: the bytes a gradient bucket gathers before it is
    /// summed ([`Trainer::set_bucket_bytes`]).
    bucket_bytes: usize,
    /// The buckets of each training plan, built at its first
    /// data-parallel step.
    buckets: HashMap<PlanKey, Vec<reduce::Bucket>>,
}

/// When and how finely a [`Trainer`] takes histograms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistSettings {
    /// Steps between histogram steps (at least 1).
    pub every: u64,
    /// Bins per histogram.
    pub bins: usize,
}

/// Buffers of the token projection of one step plan.
struct TokenTables<'a> {
    proj: &'a wgpu::Buffer,
    tok: &'a wgpu::Buffer,
    gsum: &'a wgpu::Buffer,
    csr: &'a wgpu::Buffer,
}

/// A submitted training step awaiting its readback.
struct Pending {
    slot: usize,
    /// Histograms of a step of this length follow the stats in the slot.
    hist: Option<usize>,
    index: wgpu::SubmissionIndex,
    mapped: PendingMap,
}

type PendingMap = Arc<std::sync::Mutex<Option<std::result::Result<(), wgpu::BufferAsyncError>>>>;

/// Which carried state a pass continues from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carry {
    /// Zero initial state.
    Zero,
    /// The final state of the previous pass of the same kind (training or
    /// evaluation), detached.
    Continue,
}

fn push<D: IntoIterator<Item = Dispatch>>(v: &mut Vec<Dispatch>, d: Result<D>) -> Result<()> {
    v.extend(d?);
    Ok(())
}

/// Records `list` into one compute pass of `enc`; how many it recorded.
fn record_pass<'a>(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    list: impl Iterator<Item = &'a Dispatch>,
) -> Result<usize> {
    let mut n = 0;
    ctx.scoped(|| {
        let mut pass = enc.begin_compute_pass(&Default::default());
        for d in list {
            n += 1;
            d.record(&mut pass);
        }
        Ok(())
    })?;
    Ok(n)
}

/// Checks per-sequence lengths: B values in 1..=T.
pub fn check_lengths(lengths: &[usize], t: usize, b: usize) -> Result<()> {
    if lengths.len() != b {
        return Err(Error::tensor(
            "lengths",
            format!("{} entries, expected one per sequence ({b})", lengths.len()),
        ));
    }
    if let Some((i, l)) = lengths
        .iter()
        .enumerate()
        .find(|(_, l)| **l == 0 || **l > t)
    {
        return Err(Error::tensor(
            "lengths",
            format!("lengths[{i}] = {l} is outside 1..={t} (the sequence length)"),
        ));
    }
    Ok(())
}

impl Trainer {
    /// A trainer for `net` on batches of `batch` sequences, with parameters
    /// `values` (in [`NetConfig::table`] order), clipping to `clip_norm`
    /// when given, and optimizer `optim`. Running statistics of BatchNorm
    /// variants start as [`init_stats`] (see [`Trainer::set_stats`]).
    pub fn new(
        ctx: Arc<GpuContext>,
        net: NetConfig,
        values: Vec<f32>,
        batch: usize,
        clip_norm: Option<f32>,
        optim: &OptimConfig,
    ) -> Result<Self> {
        if batch == 0 {
            return Err(Error::Invalid("--batch must be at least 1".into()));
        }
        net.check_init()?;
        net.check_head()?;
        let stats_table = net.stats_table();
        // One `num_batches_tracked` per BatchNorm module, as PyTorch keeps.
        let tracked: BTreeMap<String, i64> = stats_table
            .entries
            .iter()
            .filter_map(|e| e.name.strip_suffix(".running_mean"))
            .map(|m| (format!("{m}.num_batches_tracked"), 0))
            .collect();
        let model = LstmModel::from_host(
            &ctx,
            HostModel {
                config: net.lstm(),
                norm: net.norm,
                values,
                stats: init_stats(&net),
                tracked,
                extra: net.extra(),
            },
        )?;
        let segs: Vec<(usize, usize)> = model
            .table
            .entries
            .iter()
            .map(|e| (e.offset, e.len()))
            .collect();
        let mut lstm = Lstm::new(ctx.clone(), model)?;
        // Token models of cells without norms inside project per
        // vocabulary entry (see set_token_projection); otherwise only the
        // embedding needs the LSTM's input gradient, and dense inputs feed
        // nothing trainable.
        let token_projection = matches!(net.head, Head::Language { .. }) && !net.norm.in_cell();
        lstm.set_token_input(token_projection);
        lstm.set_input_grad(matches!(net.head, Head::Language { .. }) && !token_projection);
        lstm.set_links(Links {
            dropout: net.dropout,
            residual: net.residual,
            weight_drop: net.weight_drop,
            zoneout_h: net.zoneout.0,
            zoneout_c: net.zoneout.1,
        })?;
        let k = lstm.kernels();
        let grads = &lstm.model.grads;
        let clip = ctx.scoped(|| k.clip()?.plan(&ctx, grads, &segs, clip_norm, None))?;
        let n = lstm.model.table.total;
        let optim = ctx.scoped(|| {
            k.optim()?.plan(
                &ctx,
                optim,
                &lstm.model.params,
                grads,
                n,
                Some((&clip.stats, 3)),
            )
        })?;
        let state = 2 * crate::schedule::workspace::Workspace::state_len(&net.lstm(), batch);
        let carry = [
            ctx.storage("carried state", state)?,
            ctx.storage("carried state", state)?,
        ];
        let loss = ctx.storage("loss", crate::kernels::loss::LOSS_WORDS)?;
        let loss_step = ctx.storage("loss step", crate::kernels::loss::STEP_WORDS)?;
        let ring = Self::ring(&ctx, segs.len(), 0);
        Ok(Self {
            ctx,
            lstm,
            net,
            clip,
            clip_norm,
            segs,
            optim,
            plans: HashMap::new(),
            loss,
            loss_step,
            batch,
            carry,
            dropout_seed: 0,
            steps_taken: 0,
            last_train: true,
            profiler: None,
            ring,
            token_projection,
            pending: Default::default(),
            done: Default::default(),
            hist: None,
            hist_plans: HashMap::new(),
            last_dispatches: 0,
            reducer: None,
            reduce_times: None,
            bucket_bytes: reduce::DEFAULT_BUCKET_BYTES,
            buckets: HashMap::new(),
        })
    }

    /// Makes this trainer one rank of a data-parallel group ([`reduce`]):
    /// its batches are its shard of each global batch, every training
    /// step's loss divides by the count of positions summed over the
    /// ranks, and after backward the gradients and the loss are summed
    /// over the ranks by `r` before clipping and the optimizer, so every
    /// rank takes the step of the mean loss over the global batch. Every
    /// rank must start from the same weights and take the same steps.
    /// The sums run on the host in buckets, each as soon as backward has
    /// made its gradients final ([`Trainer::set_bucket_bytes`]); a step
    /// waits for its backward and cannot be profiled. [`Trainer::eval`]
    /// stays this rank's own (the mean over its shard; sum what it returns with
    /// [`Trainer::reducer`]). `None`: a single process again.
    pub fn set_reducer(&mut self, r: Option<Box<dyn reduce::Reducer>>) {
        self.reducer = r;
    }

    /// Data parallelism: gather at least `bytes` of gradients per bucket
    /// ([`reduce::plan_buckets`]; default [`reduce::DEFAULT_BUCKET_BYTES`]).
    /// Each bucket is summed over the ranks as soon as backward has made
    /// it final, while the GPU runs the rest of backward; the last waits
    /// for the end. 0: one bucket per layer (and one for the head); more
    /// than the model's gradients: one sum after backward. The sums, and
    /// so the steps, are the same bits whatever the buckets; every rank
    /// must use the same size (their sums are collective, one per bucket).
    pub fn set_bucket_bytes(&mut self, bytes: usize) {
        self.bucket_bytes = bytes;
        self.buckets.clear();
    }

    /// Where the data-parallel steps' time went since
    /// [`Trainer::time_reduce_steps`]: compute, readback, the sum over the
    /// ranks and the upload. `None` when not timed.
    pub fn reduce_times(&self) -> Option<reduce::ReduceTimes> {
        self.reduce_times
    }

    /// Times the phases of every data-parallel step from now on (afresh:
    /// e.g. after warm-up steps). Timing waits for the GPU between the
    /// phases, so untimed steps (training) skip it.
    pub fn time_reduce_steps(&mut self) {
        self.reduce_times = Some(Default::default());
    }

    /// The data-parallel group's reducer, if any (for sums of the
    /// caller's, e.g. validation losses).
    pub fn reducer(&self) -> Option<&dyn reduce::Reducer> {
        self.reducer.as_deref()
    }

    /// Whether a token model computes layer 0's input projection once per
    /// vocabulary entry (P = E·W_ihᵀ + b, gathered per token, and layer 0's
    /// dW_ih and the embedding gradient from the gate gradients summed per
    /// token) instead of per position (embedding lookup, then a GEMM over
    /// all T·B rows). On by default for token models of plain cells; the
    /// two agree to f32 rounding (the sums are grouped by token). Plans are
    /// rebuilt. An error for other models.
    pub fn set_token_projection(&mut self, on: bool) -> Result<()> {
        let lang = matches!(self.net.head, Head::Language { .. });
        if on && (!lang || self.net.norm.in_cell()) {
            // A normalized cell normalizes the input part before its
            // biases: no per-token table holds that.
            return Err(Error::Invalid(
                "token projections need a token model whose cell has no norm inside".into(),
            ));
        }
        self.token_projection = on;
        self.lstm.set_token_input(on);
        self.lstm.set_input_grad(lang && !on);
        self.plans.clear();
        self.buckets.clear();
        Ok(())
    }

    /// Sets the precision of the passes (see [`Lstm::set_precision`]):
    /// in f16-mixed the LSTM, the head's forward and input-gradient GEMMs
    /// read f16 weights; plans are rebuilt. The loss scaler is separate
    /// ([`Trainer::set_loss_scaler`]).
    pub fn set_precision(&mut self, p: crate::model::precision::Precision) -> Result<()> {
        self.lstm.set_precision(p)?;
        self.plans.clear();
        self.buckets.clear();
        self.hist_plans.clear();
        Ok(())
    }

    /// Readback slots of `segs` tensors' stats and `hist_words` words of
    /// histograms.
    fn ring(ctx: &GpuContext, segs: usize, hist_words: usize) -> Vec<wgpu::Buffer> {
        let words = 1 + crate::kernels::clip::STATS_HEADER + segs + hist_words;
        (0..=crate::kernels::optim::MAX_IN_FLIGHT)
            .map(|_| ctx.readback("step readback", words))
            .collect()
    }

    /// Takes histograms ([`histograms`]) on every training step whose
    /// 1-based number is a multiple of `s.every` (counted in
    /// [`Trainer::steps_taken`]), or never (`None`): other steps run
    /// exactly as without, and so does every step while
    /// [`Trainer::profiler`] is set. An error while steps are in flight.
    pub fn set_histograms(&mut self, s: Option<HistSettings>) -> Result<()> {
        if self.outstanding() != 0 {
            return Err(Error::Invalid(
                "set_histograms() while submitted steps are uncollected".into(),
            ));
        }
        if let Some(s) = &s {
            let max = crate::kernels::histogram::MAX_BINS;
            if s.every == 0 || !(1..=max).contains(&s.bins) {
                return Err(Error::Invalid(format!(
                    "histograms every {} steps with {} bins: expected at least 1 step and 1..={max} bins",
                    s.every, s.bins
                )));
            }
        }
        let n = self.segs.len();
        let layers = self.net.layers;
        let dirs = self.lstm.model.config.dirs();
        // Per tensor a gradient and a parameter; per layer h, and per
        // direction c and the gates (as histograms::plan tags them).
        let per_cell = histograms::cell_segments(self.lstm.model.config.cell());
        let segments = 2 * n + layers * (1 + dirs * per_cell);
        let words = s.map_or(0, |s| {
            segments * (crate::kernels::histogram::HEADER + s.bins)
        });
        self.ring = Self::ring(&self.ctx, n, words);
        self.hist = s;
        self.hist_plans.clear();
        Ok(())
    }

    /// The histogram plan of training steps of length `t`, built on first
    /// use.
    fn hist_plan(&mut self, t: usize, bins: usize) -> Result<()> {
        if self.hist_plans.contains_key(&t) {
            return Ok(());
        }
        let names = self.tensor_names();
        let k = self.lstm.kernels().histogram()?;
        let ctx = self.ctx.clone();
        let b = self.batch;
        self.lstm.train = true;
        let cfg = self.lstm.model.config.clone();
        let norm = self.net.norm;
        let (params, grads) = (
            self.lstm.model.params.clone(),
            self.lstm.model.grads.clone(),
        );
        let ws = &self.lstm.plan(t, b)?.ws;
        let tensors = histograms::Tensors {
            names: &names,
            segs: &self.segs,
            params: &params,
            grads: &grads,
            cfg: &cfg,
            norm: &norm,
        };
        let p = ctx.scoped(|| histograms::plan(&ctx, &k, ws, &tensors, bins))?;
        self.hist_plans.insert(t, p);
        Ok(())
    }

    /// Turns dynamic loss scaling on (from the config's initial scale) or
    /// off, as `torch.amp.GradScaler`: each step's loss gradient is
    /// multiplied by the current scale S (read on the GPU, so steps in
    /// flight need no host round trip), the clip pass unscales the
    /// gradients before their norm, clipping and the non-finite test, a
    /// step with non-finite gradients is skipped and S ×= backoff, and
    /// after `interval` finite steps in a row S ×= growth. No steps may be
    /// in flight.
    pub fn set_loss_scaler(
        &mut self,
        cfg: Option<crate::model::precision::ScalerConfig>,
    ) -> Result<()> {
        if self.outstanding() != 0 {
            return Err(Error::Invalid(
                "set_loss_scaler() while submitted steps are uncollected".into(),
            ));
        }
        let opts = crate::kernels::clip::ClipOptions {
            max_norm: self.clip_norm,
            clip_value: None,
            scaler: cfg,
        };
        let k = self.lstm.kernels();
        let ctx = &self.ctx;
        let grads = &self.lstm.model.grads;
        let stats = &self.clip.stats;
        let clip = ctx.scoped(|| {
            k.clip()?
                .plan_with(ctx, grads, &self.segs, &opts, Some(stats))
        })?;
        if let Some(c) = &cfg {
            clip.set_scaler_state(ctx, &crate::model::precision::ScalerState::new(c))?;
        }
        self.clip = clip;
        Ok(())
    }

    /// The loss scaler's configuration, when one is on.
    pub fn loss_scaler(&self) -> Option<crate::model::precision::ScalerConfig> {
        self.clip.scaler
    }

    /// The loss scaler's state after the collected steps (waits for the
    /// GPU); `None` without a scaler.
    pub fn scaler_state(&self) -> Result<Option<crate::model::precision::ScalerState>> {
        self.clip.scaler_state(&self.ctx)
    }

    /// Replaces the loss scaler's state (e.g. when resuming); an error
    /// without a scaler.
    pub fn set_scaler_state(&self, s: &crate::model::precision::ScalerState) -> Result<()> {
        self.clip.set_scaler_state(&self.ctx, s)
    }

    /// Offset of a named parameter in the flat buffers.
    fn offset(&self, name: &str) -> usize {
        self.lstm.model.table.offset(name)
    }

    /// Replaces the running statistics (in [`NetConfig::stats_table`]
    /// order), e.g. when resuming.
    pub fn set_stats(&self, v: &[f32]) -> Result<()> {
        let n = self.lstm.model.stats_table.total;
        if v.len() != n {
            return Err(Error::tensor(
                "running statistics",
                format!("{} values, expected {n}", v.len()),
            ));
        }
        if n > 0 {
            self.ctx.write(&self.lstm.model.stats, 0, v);
        }
        Ok(())
    }

    /// The running statistics with their names (empty without BatchNorm).
    pub fn stats(&self) -> Result<Vec<crate::model::NamedTensor>> {
        if self.lstm.model.stats_table.total == 0 {
            return Ok(Vec::new());
        }
        self.lstm.model.stat_tensors(&self.ctx)
    }

    fn build(&mut self, t: usize, train: bool) -> Result<StepPlan> {
        let s = self.step_parts(t, train)?;
        let ctx = self.ctx.clone();
        ctx.scoped(|| {
            let (forward, backward, lstm_at) = match self.net.head {
                Head::Language { vocab, embed } => self.language_step(&s, vocab, embed)?,
                _ => self.series_step(&s)?,
            };
            // The head's (and attention's) gradients are final before the
            // LSTM's backward; the embedding's only at the end.
            let entries = self.lstm.model.table.entries.iter();
            let head = entries
                .filter(|e| e.layer().is_none() && e.name != "embedding.weight")
                .map(|e| e.range())
                .collect();
            let lstm = s.lstm_ready.iter().map(|(n, r)| (lstm_at + n, r.clone()));
            let ready = std::iter::once((lstm_at, head)).chain(lstm).collect();
            Ok(StepPlan {
                tok: s.tp.as_ref().map(|t| t.1.clone()),
                inputs: s.inputs.clone(),
                targets: s.targets.clone(),
                mask: s.mask.clone(),
                csr: s.csr.clone(),
                head_out: s.head_out.clone(),
                attn: s.attn.clone(),
                forward,
                backward,
                ready,
            })
        })
    }

    /// The LSTM plan of a `t`-step batch and the buffers the head and the
    /// loss of a step add to it.
    fn step_parts(&mut self, t: usize, train: bool) -> Result<StepParts> {
        let b = self.batch;
        let tb = t * b;
        let h = self.net.hidden;
        let out_dim = self.net.out_dim();
        let head_off = (self.offset("head.weight"), self.offset("head.bias"));
        let emb_off = match self.net.head {
            Head::Language { .. } => self.offset("embedding.weight"),
            _ => 0,
        };
        let ctx = self.ctx.clone();
        self.lstm.train = train;
        let plan = self.lstm.plan(t, b)?;
        let (lstm_fwd, lstm_bwd) = (plan.forward.clone(), plan.backward.clone());
        let lstm_ready = plan.ready.clone();
        // f16-mixed: the f16 weights are refreshed first of all.
        let refresh = plan.refresh.clone();
        let out = plan.output().clone();
        let ws_x = plan.ws.x.clone();
        let lengths = plan.ws.lengths.clone();
        let dy_top = plan.grad_output().clone();
        let dy_in = plan.grad_input().clone();
        let (ws_pre, ws_dg) = (plan.ws.pre.clone(), plan.ws.dg.clone());
        let half_dg = plan.ws.half;
        let dirs = self.lstm.model.config.dirs();
        let gh = self.lstm.model.config.cell().gates() * h;
        let gate_offs = (0..dirs)
            .map(|d| self.lstm.gate_offsets(t, b, 0, d))
            .collect::<Result<Vec<_>>>()?;
        let lang = matches!(self.net.head, Head::Language { .. });
        let last = matches!(self.net.head, Head::Regression { .. });
        // Rows the head sees: every step, or the last valid one per sequence.
        let rows = if last { b } else { tb };
        let inputs = ctx.storage("step inputs", if lang { tb } else { 1 })?;
        let targets = ctx.storage("step targets", if lang { tb } else { rows * out_dim })?;
        let csr = ctx.storage(
            "embedding index",
            match self.net.head {
                Head::Language { vocab, .. } => vocab + 1 + tb,
                _ => 1,
            },
        )?;
        let head_in = ctx.storage("head input", if last { b * self.net.head_in() } else { 1 })?;
        let attn = ctx.storage(
            "attention scratch",
            match self.net.attention {
                Some(_) => self.attention_shape(t).scratch_len(),
                None => 1,
            },
        )?;
        // Token projections (see `token_projection`): per direction, the
        // table P = E·W_ihᵀ + b [V + 1, GH] (row V: padding, biases only),
        // the gather ids (padding mapped to V), and the per-token sums of
        // layer 0's W_ih gate gradients S [V, GH].
        let tp = match self.net.head {
            Head::Language { vocab, .. } if self.token_projection => Some((
                ctx.storage("token projections", dirs * (vocab + 1) * gh)?,
                ctx.storage("gather ids", tb)?,
                ctx.storage("per-token gate gradients", dirs * vocab * gh)?,
            )),
            _ => None,
        };
        let head_out = ctx.storage("head output", rows * out_dim)?;
        let scratch = ctx.storage("loss scratch", 3 * rows)?;
        // Rows of the MSE that count; rewritten per batch for Sequence.
        let mask = ctx.storage_init("loss mask", &vec![1u32; rows])?;
        Ok(StepParts {
            t,
            rows,
            last,
            head_off,
            emb_off,
            lstm_fwd,
            lstm_bwd,
            lstm_ready,
            refresh,
            out,
            ws_x,
            lengths,
            dy_top,
            dy_in,
            ws_pre,
            ws_dg,
            half_dg,
            gate_offs,
            inputs,
            targets,
            csr,
            head_in,
            tp,
            head_out,
            scratch,
            mask,
            attn,
        })
    }

    /// The attention pooling of a `t`-step batch over the LSTM's output,
    /// into the head's input (see [`crate::kernels::attention`]).
    fn attention_shape(&self, t: usize) -> crate::kernels::attention::AttentionShape {
        let query = self.lstm.model.table.get("attention.query");
        let q_off = query.map_or(0, |e| e.offset);
        crate::kernels::attention::AttentionShape {
            seq: t,
            batch: self.batch,
            width: self.net.width(),
            learned: query.is_some(),
            q_off,
            dq_off: q_off,
            ..Default::default()
        }
    }

    /// A language model's step: embedding (or token projection), LSTM,
    /// head on every step, cross-entropy; backward in reverse, the
    /// embedding's gradient last.
    fn language_step(&self, s: &StepParts, vocab: usize, embed: usize) -> Result<StepLists> {
        let ctx = &self.ctx;
        let k = self.lstm.kernels();
        let tb = s.t * self.batch;
        let mut forward: Vec<Dispatch> = s.refresh.iter().cloned().collect();
        let mut backward = Vec::new();
        let es = EmbShape {
            rows: tb,
            dim: embed,
            vocab,
            table_off: s.emb_off,
            dtable_off: s.emb_off,
            ..Default::default()
        };
        // Runs last in backward: the embedding gradient.
        let mut eb = Vec::new();
        match &s.tp {
            None => {
                forward.extend(k.embedding()?.forward(
                    ctx,
                    &es,
                    &EmbForward {
                        ids: &s.inputs,
                        table: &self.lstm.model.params,
                        out: &s.ws_x,
                    },
                )?);
                eb = k.embedding()?.backward(
                    ctx,
                    &es,
                    &EmbBackward {
                        csr: &s.csr,
                        dout: &s.dy_in,
                        dtable: &self.lstm.model.grads,
                    },
                )?;
            }
            Some((proj, tok, gsum)) => {
                for (d, &(pre_off, dg_off)) in s.gate_offs.iter().enumerate() {
                    let tables = TokenTables {
                        proj,
                        tok,
                        gsum,
                        csr: &s.csr,
                    };
                    let (f, bw) = self.token_projection_dispatches(
                        (vocab, embed),
                        (s.emb_off, d),
                        (&s.ws_pre, pre_off),
                        (&s.ws_dg, dg_off, s.half_dg),
                        tb,
                        &tables,
                    )?;
                    forward.extend(f);
                    eb.extend(bw);
                }
            }
        }
        forward.extend(s.lstm_fwd.iter().cloned());
        self.head(
            &mut forward,
            &mut backward,
            &s.out,
            s.rows,
            &s.head_out,
            &s.dy_top,
            s.head_off,
        )?;
        let cs = CeShape {
            rows: s.rows,
            classes: vocab,
            ..Default::default()
        };
        forward.extend(k.loss()?.ce_forward(
            ctx,
            &cs,
            &CeForward {
                logits: &s.head_out,
                targets: &s.targets,
                step: &self.loss_step,
                scratch: &s.scratch,
                loss: &self.loss,
            },
        )?);
        let mut bwd = k.loss()?.ce_backward(
            ctx,
            &cs,
            &CeBackward {
                logits: &s.head_out,
                targets: &s.targets,
                step: &self.loss_step,
                scratch: &s.scratch,
                dlogits: &s.head_out,
            },
        )?;
        bwd.append(&mut backward);
        let lstm_at = bwd.len();
        bwd.extend(s.lstm_bwd.iter().cloned());
        bwd.extend(eb);
        Ok((forward, bwd, lstm_at))
    }

    /// A series model's step: LSTM, head on the last valid step
    /// (regression) or on every step (sequence), masked MSE.
    fn series_step(&self, s: &StepParts) -> Result<StepLists> {
        let ctx = &self.ctx;
        let k = self.lstm.kernels();
        let mut forward: Vec<Dispatch> = s.refresh.iter().cloned().collect();
        let mut backward = Vec::new();
        forward.extend(s.lstm_fwd.iter().cloned());
        let ls = LastStepShape {
            seq: s.t,
            batch: self.batch,
            features: self.net.width(),
            ..Default::default()
        };
        let attention = self.net.attention.map(|_| self.attention_shape(s.t));
        match (s.last, &attention) {
            (true, None) => forward.extend(
                k.elementwise()?
                    .last_gather(ctx, &ls, &s.lengths, &s.out, &s.head_in)?,
            ),
            (true, Some(a)) => forward.extend(k.attention()?.forward(
                ctx,
                a,
                &AttentionForward {
                    lengths: &s.lengths,
                    h: &s.out,
                    params: &self.lstm.model.params,
                    z: &s.head_in,
                    scratch: &s.attn,
                },
            )?),
            (false, _) => {}
        }
        // The head's input gradient goes to the last-step buffer
        // (scattered below into the zeroed d(output), or taken back
        // through the attention pooling), or straight to d(output) when
        // the head runs on every step.
        let (hin, dhin) = if s.last {
            (&s.head_in, &s.head_in)
        } else {
            (&s.out, &s.dy_top)
        };
        self.head(
            &mut forward,
            &mut backward,
            hin,
            s.rows,
            &s.head_out,
            dhin,
            s.head_off,
        )?;
        let ms = MseShape {
            rows: s.rows,
            features: self.net.out_dim(),
            ..Default::default()
        };
        forward.extend(k.loss()?.mse_forward(
            ctx,
            &ms,
            &MseForward {
                pred: &s.head_out,
                target: &s.targets,
                mask: &s.mask,
                step: &self.loss_step,
                scratch: &s.scratch,
                loss: &self.loss,
            },
        )?);
        let mut bwd = k.loss()?.mse_backward(
            ctx,
            &ms,
            &MseBackward {
                pred: &s.head_out,
                target: &s.targets,
                mask: &s.mask,
                step: &self.loss_step,
                dpred: &s.head_out,
            },
        )?;
        bwd.append(&mut backward);
        match (s.last, &attention) {
            (true, None) => bwd.extend(
                k.elementwise()?
                    .last_scatter(ctx, &ls, &s.lengths, &s.head_in, &s.dy_top)?,
            ),
            (true, Some(a)) => bwd.extend(k.attention()?.backward(
                ctx,
                a,
                &AttentionBackward {
                    lengths: &s.lengths,
                    h: &s.out,
                    params: &self.lstm.model.params,
                    dz: &s.head_in,
                    scratch: &s.attn,
                    dh: &s.dy_top,
                    grads: &self.lstm.model.grads,
                },
            )?),
            (false, _) => {}
        }
        let lstm_at = bwd.len();
        bwd.extend(s.lstm_bwd.iter().cloned());
        Ok((forward, bwd, lstm_at))
    }

    /// The token projection of direction `d` (`token_projection`):
    /// forward, P = E·W_ihᵀ + b_ih + b_hh (b_ih alone for a cell adding
    /// b_hh itself, the GRU) for every token and the biases alone for
    /// padding, then layer 0's input pre-gates gathered from P; backward
    /// (after the LSTM's), W_ih's gate gradients (the dx section of cells
    /// that split them) summed per token (S, the embedding's deterministic
    /// scatter-add), dW_ih = Sᵀ·E and the embedding gradient S·W_ih (added
    /// over directions). The same sums as x·W_ihᵀ, dGᵀ·X and the scatter of
    /// dG·W_ih, grouped by token: 3·2·V·GH·E FLOPs instead of
    /// 3·2·T·B·GH·E.
    #[allow(clippy::too_many_arguments)]
    fn token_projection_dispatches(
        &self,
        (vocab, embed): (usize, usize),
        (emb_off, d): (usize, usize),
        pre: (&wgpu::Buffer, usize),
        dg: (&wgpu::Buffer, usize, bool),
        rows: usize,
        t: &TokenTables<'_>,
    ) -> Result<(Vec<Dispatch>, Vec<Dispatch>)> {
        let ctx = &self.ctx;
        let k = self.lstm.kernels();
        let params = &self.lstm.model.params;
        let grads = &self.lstm.model.grads;
        let cell = self.lstm.model.config.cell();
        let g = cell.gates() * self.net.hidden;
        let (wih, _, bih, bhh) = self.lstm.model.cell_offsets(0, d);
        let p_off = d * (vocab + 1) * g;
        let s_off = d * vocab * g;
        let project = |m: usize, kk: usize, c_off: usize| GemmOp {
            m,
            n: g,
            k: kk,
            trans_a: false,
            trans_b: true,
            a: (params, emb_off, embed),
            b: (params, wih, embed),
            c: (t.proj, c_off, g),
            // As the schedule's input GEMM: a cell adding b_hh itself (the
            // GRU) gets b_ih alone.
            bias: Some((params, bih, bhh.filter(|_| !cell.own_bhh()))),
            alpha: 1.0,
            accumulate: false,
        };
        let mut fwd = k.gemm().dispatch(ctx, &project(vocab, embed, p_off))?;
        // The padding row: no input, biases only (K = 0).
        fwd.extend(k.gemm().dispatch(ctx, &project(1, 0, p_off + vocab * g))?);
        let gather = EmbShape {
            rows,
            dim: g,
            vocab: vocab + 1,
            table_off: p_off,
            out_off: pre.1,
            ..Default::default()
        };
        fwd.extend(k.embedding()?.forward(
            ctx,
            &gather,
            &EmbForward {
                ids: t.tok,
                table: t.proj,
                out: pre.0,
            },
        )?);
        let scatter = EmbShape {
            rows,
            dim: g,
            vocab,
            dout_off: dg.1,
            dtable_off: s_off,
            ..Default::default()
        };
        // dg.2: the gate gradients are f16 (f16-mixed).
        let mut bwd = k.embedding()?.backward_as(
            ctx,
            &scatter,
            &EmbBackward {
                csr: t.csr,
                dout: dg.0,
                dtable: t.gsum,
            },
            dg.2,
        )?;
        let dw_ih = GemmOp {
            m: g,
            n: embed,
            k: vocab,
            trans_a: true,
            trans_b: false,
            a: (t.gsum, s_off, g),
            b: (params, emb_off, embed),
            c: (grads, wih, embed),
            bias: None,
            alpha: 1.0,
            accumulate: false,
        };
        bwd.extend(k.gemm().dispatch(ctx, &dw_ih)?);
        let d_emb = GemmOp {
            m: vocab,
            n: embed,
            k: g,
            trans_a: false,
            trans_b: false,
            a: (t.gsum, s_off, g),
            b: (params, wih, embed),
            c: (grads, emb_off, embed),
            bias: None,
            alpha: 1.0,
            accumulate: d > 0,
        };
        bwd.extend(k.gemm().dispatch(ctx, &d_emb)?);
        Ok((fwd, bwd))
    }

    /// Head forward (logits = x·W_headᵀ + b, x of width
    /// [`NetConfig::head_in`]) and its backward, appended to
    /// `bwd` in the order they run after the loss backward: dW = dlogitsᵀ·x,
    /// db = Σ dlogits, then the input gradient dlogits·W_head into `dx`.
    #[allow(clippy::too_many_arguments)]
    fn head(
        &self,
        fwd: &mut Vec<Dispatch>,
        bwd: &mut Vec<Dispatch>,
        x: &wgpu::Buffer,
        rows: usize,
        out: &wgpu::Buffer,
        dx: &wgpu::Buffer,
        (w, b): (usize, usize),
    ) -> Result<()> {
        let ctx = &self.ctx;
        let k = self.lstm.kernels();
        let params = &self.lstm.model.params;
        let (weights, half) = self.lstm.model.weights();
        let grads = &self.lstm.model.grads;
        let (h, o) = (self.net.head_in(), self.net.out_dim());
        push(
            fwd,
            k.gemm().dispatch_as(
                ctx,
                &GemmOp {
                    m: rows,
                    n: o,
                    k: h,
                    trans_a: false,
                    trans_b: true,
                    a: (x, 0, h),
                    b: (weights, w, h),
                    c: (out, 0, o),
                    bias: Some((params, Some(b), None)),
                    alpha: 1.0,
                    accumulate: false,
                },
                false,
                half,
            ),
        )?;
        push(
            bwd,
            k.gemm().dispatch(
                ctx,
                &GemmOp {
                    m: o,
                    n: h,
                    k: rows,
                    trans_a: true,
                    trans_b: false,
                    a: (out, 0, o),
                    b: (x, 0, h),
                    c: (grads, w, h),
                    bias: None,
                    alpha: 1.0,
                    accumulate: false,
                },
            ),
        )?;
        push(
            bwd,
            k.reduce()?
                .colsum(ctx, (out, 0, o), rows, o, grads, (b, None), false, false),
        )?;
        push(
            bwd,
            k.gemm().dispatch_as(
                ctx,
                &GemmOp {
                    m: rows,
                    n: h,
                    k: o,
                    trans_a: false,
                    trans_b: false,
                    a: (out, 0, o),
                    b: (weights, w, h),
                    c: (dx, 0, h),
                    bias: None,
                    alpha: 1.0,
                    accumulate: false,
                },
                false,
                half,
            ),
        )
    }

    /// Checks a batch, builds the (T, mode) plan on first use and uploads
    /// inputs, targets, the loss mask and count, and the lengths.
    fn upload(&mut self, t: usize, data: &StepData<'_>, train: bool) -> Result<()> {
        let b = self.batch;
        if t == 0 {
            return Err(Error::tensor(
                "input",
                "sequence length 0: expected at least 1",
            ));
        }
        let lens: Vec<usize> = match data.lengths() {
            Some(l) => {
                check_lengths(l, t, b)?;
                l.to_vec()
            }
            None => vec![t; b],
        };
        let cfg = self.net.lstm();
        crate::model::check_batch(
            &cfg,
            &self.net.norm,
            &crate::lstm::Batch {
                input: &[],
                seq_len: t,
                batch: b,
                batch_first: false,
                h0: None,
                c0: None,
                lengths: data.lengths(),
            },
            train,
        )?;
        let key = self.key(t, train);
        if !self.plans.contains_key(&key) {
            let p = self.build(t, train)?;
            self.plans.insert(key, p);
        }
        self.lstm.train = train;
        let ws_x = self.lstm.plan(t, b)?.ws.x.clone();
        let ws_lengths = self.lstm.plan(t, b)?.ws.lengths.clone();
        let count = match (data, self.net.head) {
            (StepData::Tokens { ids, targets, .. }, Head::Language { vocab, .. }) => {
                self.upload_tokens(key, ids, targets, vocab, &lens)?
            }
            (StepData::Series { x, targets, .. }, Head::Regression { features, outputs })
            | (StepData::Series { x, targets, .. }, Head::Sequence { features, outputs }) => {
                let every = matches!(self.net.head, Head::Sequence { .. });
                let shape = (features, outputs, every);
                self.upload_series(key, x, targets, shape, &ws_x, &lens)?
            }
            _ => {
                return Err(Error::Invalid(
                    "batch does not match the model's task".into(),
                ));
            }
        };
        // Data parallel: a training step's mean is over the global batch.
        let count = match self.reducer.as_deref() {
            Some(r) if train => {
                let mut n = [count as f64];
                r.sum_f64(&mut n)?;
                u32::try_from(n[0] as u64).map_err(|_| {
                    Error::Invalid(format!("{} loss positions over the ranks", n[0]))
                })?
            }
            _ => count,
        };
        let step = LossStep { count, scale: 1.0 };
        self.ctx.write(&self.loss_step, 0, &step.words());
        let lens: Vec<u32> = lens.iter().map(|&l| l as u32).collect();
        self.ctx.write(&ws_lengths, 0, &lens);
        Ok(())
    }

    /// A language model's batch for the plan `key` (T, train): token ids, targets (padding ignored by the
    /// loss) and the embedding's scatter index; returns the loss count.
    fn upload_tokens(
        &self,
        key: PlanKey,
        ids: &[u32],
        targets: &[u32],
        vocab: usize,
        lens: &[usize],
    ) -> Result<u32> {
        let (b, t) = (self.batch, key.0);
        if ids.len() != t * b || targets.len() != t * b {
            return Err(Error::tensor(
                "tokens",
                format!(
                    "{} ids and {} targets, expected {} each",
                    ids.len(),
                    targets.len(),
                    t * b
                ),
            ));
        }
        crate::kernels::embedding::check_ids(ids, vocab)?;
        crate::kernels::loss::check_targets(targets, vocab)?;
        // Padded positions are ignored by the loss.
        let targets: Vec<u32> = targets
            .iter()
            .enumerate()
            .map(|(i, &y)| {
                if i / b < lens[i % b] {
                    y
                } else {
                    crate::kernels::loss::IGNORE
                }
            })
            .collect();
        let (p, ctx) = (&self.plans[&key], &self.ctx);
        ctx.write(&p.inputs, 0, ids);
        if let Some(tok) = &p.tok {
            let v = vocab as u32;
            let mapped: Vec<u32> = ids.iter().map(|&i| i.min(v)).collect();
            ctx.write(tok, 0, &mapped);
        }
        ctx.write(&p.targets, 0, &targets);
        ctx.write(&p.csr, 0, &csr_words(ids, vocab));
        Ok(crate::kernels::loss::ce_count(&targets))
    }

    /// A series model's batch for the plan `key` (T, train): inputs, targets (the last valid step's, or
    /// every step's with its mask of valid positions); returns the loss
    /// count. `shape`: features, outputs, and whether the head runs on
    /// every step.
    fn upload_series(
        &self,
        key: PlanKey,
        x: &[f32],
        targets: &[f32],
        (features, outputs, every): (usize, usize, bool),
        ws_x: &wgpu::Buffer,
        lens: &[usize],
    ) -> Result<u32> {
        let (b, t) = (self.batch, key.0);
        if x.len() != t * b * features {
            return Err(Error::tensor(
                "input",
                format!("{} values, expected [T={t}, B={b}, F={features}]", x.len()),
            ));
        }
        let rows = if every { t * b } else { b };
        if targets.len() != rows * outputs {
            return Err(Error::tensor(
                "targets",
                format!(
                    "{} values, expected {}",
                    targets.len(),
                    if every {
                        format!("[T={t}, B={b}, {outputs}]")
                    } else {
                        format!("[B={b}, {outputs}]")
                    }
                ),
            ));
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(Error::tensor(
                "input",
                format!("non-finite value at flat index {i}"),
            ));
        }
        if let Some(i) = targets.iter().position(|v| !v.is_finite()) {
            return Err(Error::tensor(
                "targets",
                format!("non-finite value at flat index {i}"),
            ));
        }
        let (p, ctx) = (&self.plans[&key], &self.ctx);
        ctx.write(ws_x, 0, x);
        ctx.write(&p.targets, 0, targets);
        let mut count = b;
        if every {
            let mask: Vec<u32> = (0..rows).map(|i| (i / b < lens[i % b]) as u32).collect();
            count = mask.iter().filter(|&&m| m != 0).count();
            ctx.write(&p.mask, 0, &mask);
        }
        Ok((count * outputs) as u32)
    }

    /// Records the initial state (zero, or the carried one of `kind`: 0
    /// training, 1 evaluation) and clears the layer outputs.
    fn encode_state(
        &mut self,
        enc: &mut wgpu::CommandEncoder,
        t: usize,
        carry: Carry,
        kind: usize,
    ) -> Result<()> {
        let ws = &self.lstm.plan(t, self.batch)?.ws;
        match carry {
            Carry::Continue => {
                enc.copy_buffer_to_buffer(&self.carry[kind], 0, &ws.state_in, 0, ws.state_in.size())
            }
            Carry::Zero => enc.clear_buffer(&ws.state_in, 0, None),
        }
        enc.clear_buffer(&ws.outs, 0, None);
        for o in ws.normed.iter().flatten() {
            enc.clear_buffer(o, 0, None);
        }
        Ok(())
    }

    /// Records keeping the final state for the next pass of `kind`.
    fn encode_keep(&mut self, enc: &mut wgpu::CommandEncoder, t: usize, kind: usize) -> Result<()> {
        let ws = &self.lstm.plan(t, self.batch)?.ws;
        enc.copy_buffer_to_buffer(&ws.state_out, 0, &self.carry[kind], 0, ws.state_out.size());
        Ok(())
    }

    /// The carried training state (h then c, each [L, B, H]), read back.
    /// Data parallel ([`Trainer::set_reducer`]), that of the global batch,
    /// every rank's sequences in place (collective).
    pub fn carried_state(&self) -> Result<Vec<f32>> {
        let mine = self.read_carry(0)?;
        let Some(r) = self.reducer() else {
            return Ok(mine);
        };
        let n = mine.len();
        // Each rank's columns placed into zeros, then summed: exact.
        let (b, size, h) = (self.batch, r.size(), self.net.hidden);
        let mut all = vec![0.0f32; n * size];
        for (row, dst) in mine
            .chunks_exact(b * h)
            .zip(all.chunks_exact_mut(b * h * size))
        {
            dst[r.rank() * b * h..(r.rank() + 1) * b * h].copy_from_slice(row);
        }
        r.sum_f32(&mut all)?;
        Ok(all)
    }

    /// Replaces the carried training state (as [`Trainer::carried_state`]
    /// returns it, of the global batch when data parallel), e.g. when
    /// resuming.
    pub fn set_carried_state(&self, v: &[f32]) -> Result<()> {
        let n = (self.carry[0].size() / 4) as usize;
        let shard;
        let v = match self.reducer() {
            Some(r) if v.len() == n * r.size() => {
                let (b, h) = (self.batch, self.net.hidden);
                shard = reduce::columns(v, b * r.size(), h, (r.rank() * b, b));
                &shard[..]
            }
            _ => v,
        };
        self.write_carry(0, v)
    }

    /// The carried evaluation state (h then c, each [L, B, H]: where the
    /// last [`Trainer::eval`] ended), read back.
    pub fn eval_state(&self) -> Result<Vec<f32>> {
        self.read_carry(1)
    }

    /// Replaces the carried evaluation state (as [`Trainer::eval_state`]
    /// returns it): the next [`Trainer::eval`] with [`Carry::Continue`]
    /// starts from it.
    pub fn set_eval_state(&self, v: &[f32]) -> Result<()> {
        self.write_carry(1, v)
    }

    fn read_carry(&self, kind: usize) -> Result<Vec<f32>> {
        let n = (self.carry[kind].size() / 4) as usize;
        self.ctx.read_f32(&self.carry[kind], 0, n)
    }

    fn write_carry(&self, kind: usize, v: &[f32]) -> Result<()> {
        let n = (self.carry[kind].size() / 4) as usize;
        if v.len() != n {
            return Err(Error::tensor(
                "state",
                format!("{} values, expected {n}", v.len()),
            ));
        }
        self.ctx.write(&self.carry[kind], 0, v);
        Ok(())
    }

    /// One optimizer step on a batch of `t` steps at learning rate `lr`, in
    /// train mode (batch statistics, dropout), returning once it is done.
    /// `carry`: start from the previous training step's final state
    /// (truncated BPTT) or from zero. Steps submitted with
    /// [`Trainer::submit`] must have been collected first.
    pub fn step(
        &mut self,
        t: usize,
        data: &StepData<'_>,
        carry: Carry,
        lr: f64,
    ) -> Result<StepStats> {
        if self.outstanding() != 0 {
            return Err(Error::Invalid(
                "step() while submitted steps are uncollected: call next_stats() first".into(),
            ));
        }
        self.submit(t, data, carry, lr)?;
        self.next_stats()?
            .ok_or_else(|| Error::Gpu("a submitted step left no statistics".into()))
    }

    /// Steps submitted whose statistics [`Trainer::next_stats`] has not
    /// returned yet.
    pub fn outstanding(&self) -> usize {
        self.pending.len() + self.done.len()
    }

    /// The statistics of the oldest submitted step not yet returned, waiting
    /// for it if need be; `None` when every step's were returned.
    pub fn next_stats(&mut self) -> Result<Option<StepStats>> {
        if let Some(st) = self.done.pop_front() {
            return Ok(Some(st));
        }
        match self.pending.is_empty() {
            true => Ok(None),
            false => self.finish_oldest().map(Some),
        }
    }

    /// Waits for the oldest step in flight and reads its loss, gradient norm
    /// and skip flag from its readback slot (copied there by its own command
    /// buffer, so later steps may already be running).
    fn finish_oldest(&mut self) -> Result<StepStats> {
        let p = self
            .pending
            .pop_front()
            .ok_or_else(|| Error::Gpu("no step in flight".into()))?;
        self.ctx.wait_for(p.index)?;
        let mapped = p
            .mapped
            .lock()
            .map_err(|_| Error::Gpu("readback state poisoned".into()))?
            .take();
        match mapped {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(Error::Gpu(format!("step readback: {e}"))),
            None => return Err(Error::Gpu("step readback never completed".into())),
        }
        let slot = &self.ring[p.slot];
        let view = slot
            .get_mapped_range(..)
            .map_err(|e| Error::Gpu(e.to_string()))?;
        let w = bytemuck::cast_slice::<u8, f32>(&view).to_vec();
        drop(view);
        slot.unmap();
        // Words: loss, then the clip stats (header words 1, 3 and 4: total
        // norm, non-finite flag, loss scale used; then the unscaled sums of
        // squares per segment, that is per tensor).
        let skipped = w[4] != 0.0;
        self.optim.commit(skipped);
        let (head, tail) = w.split_at(1 + crate::kernels::clip::STATS_HEADER + self.segs.len());
        let sums = &head[1 + crate::kernels::clip::STATS_HEADER..];
        let histograms = match p.hist.and_then(|t| self.hist_plans.get(&t)) {
            Some(h) => {
                let words: Vec<u32> = tail.iter().map(|v| v.to_bits()).collect();
                h.decode(&words, w[5])?
            }
            None => Vec::new(),
        };
        Ok(StepStats {
            loss: w[0],
            grad_norm: w[2],
            skipped,
            loss_scale: w[5],
            tensor_norms: sums.iter().map(|&v| (v as f64).sqrt() as f32).collect(),
            histograms,
        })
    }

    /// Records and submits one training step like [`Trainer::step`] without
    /// waiting for it: up to [`crate::kernels::optim::MAX_IN_FLIGHT`] steps
    /// run while the host records the next, and [`Trainer::next_stats`]
    /// returns their statistics in order. Buffers written for a step
    /// (inputs, learning rate) go through the queue, so they never touch a
    /// step still running.
    pub fn submit(&mut self, t: usize, data: &StepData<'_>, carry: Carry, lr: f64) -> Result<()> {
        while self.pending.len() >= crate::kernels::optim::MAX_IN_FLIGHT {
            let st = self.finish_oldest()?;
            self.done.push_back(st);
        }
        self.upload(t, data, true)?;
        self.last_train = true;
        self.optim.prepare(&self.ctx, lr)?;
        self.lstm.set_dropout_step(DropoutStep {
            seed: self.dropout_seed,
            counter: (self.steps_taken + 1) as u32,
        });
        let ctx = self.ctx.clone();
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        self.encode_state(&mut enc, t, carry, 0)?;
        let b = self.batch;
        {
            let plan = self.lstm.plan(t, b)?;
            enc.clear_buffer(&plan.ws.dg, 0, None);
            if let Head::Regression { .. } = self.net.head {
                let bytes = (plan.output_len() * 4) as u64;
                enc.clear_buffer(plan.grad_output(), 0, Some(bytes));
            }
        }
        if self.clip.scaler.is_some() {
            // The loss gradient's multiplier: S as the last clip left it.
            let word = 4 * crate::kernels::loss::SCALE_WORD as u64;
            enc.copy_buffer_to_buffer(
                &self.clip.stats,
                self.clip.scale_word(),
                &self.loss_step,
                word,
                4,
            );
        }
        // A histogram step adds the activations' histograms after the
        // forward, the gradients' before the clip, the parameters' after
        // the update; other steps record exactly the plain list.
        let hist_t = match self.hist {
            // A profiler's query set holds the plain step's dispatches.
            Some(h)
                if self.profiler.is_none() && (self.steps_taken + 1).is_multiple_of(h.every) =>
            {
                self.hist_plan(t, h.bins)?;
                Some(t)
            }
            _ => None,
        };
        let hp = hist_t.and_then(|t| self.hist_plans.get(&t));
        let groups = |r: std::ops::Range<usize>| {
            hp.into_iter()
                .flat_map(move |h| h.plan.groups[r.clone()].iter().flatten())
        };
        let (acts, grads, params) = match hp {
            Some(h) => (
                h.activations.clone(),
                h.grads..h.grads + 1,
                h.params..h.params + 1,
            ),
            None => (0..0, 0..0, 0..0),
        };
        let p = &self.plans[&self.key(t, true)];
        let first = p.forward.iter().chain(groups(acts)).chain(&p.backward);
        let second = groups(grads)
            .chain(&self.clip.dispatches)
            .chain(std::iter::once(&self.optim.dispatch))
            .chain(groups(params));
        let mut recorded = 0;
        match self.reducer.as_deref() {
            None => {
                let list = first.chain(second).inspect(|_| recorded += 1);
                ctx.scoped(|| {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    match self.profiler.as_mut() {
                        Some(prof) => prof.record(&mut pass, list)?,
                        None => list.for_each(|d| d.record(&mut pass)),
                    }
                    Ok(())
                })?;
            }
            Some(r) => {
                if self.profiler.is_some() {
                    return Err(Error::Invalid(
                        "a data-parallel step (with a reducer) cannot be profiled".into(),
                    ));
                }
                // Forward and backward in one submit per bucket, each
                // ending with its bucket's copy for the host; then the
                // sums over the ranks, bucket by bucket while the GPU
                // runs on, then clipping and the optimizer.
                let list: Vec<&Dispatch> = first.collect();
                let bwd0 = list.len() - p.backward.len();
                let key = self.key(t, true);
                let grads = &self.lstm.model.grads;
                let buckets = match self.buckets.entry(key) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let total = self.lstm.model.table.total;
                        let plans = reduce::plan_buckets(
                            &p.ready,
                            total,
                            p.backward.len(),
                            self.bucket_bytes,
                        );
                        let staging = |(i, b): (usize, reduce::BucketPlan)| reduce::Bucket {
                            staging: ctx.readback("gradient bucket", b.len() + usize::from(i == 0)),
                            plan: b,
                        };
                        e.insert(plans.into_iter().enumerate().map(staging).collect())
                    }
                };
                let mut at = 0;
                let mut submit = |i: usize, enc: &mut wgpu::CommandEncoder| {
                    let b = &buckets[i];
                    let end = bwd0 + b.plan.after;
                    recorded += record_pass(&ctx, enc, list[at..end].iter().copied())?;
                    at = end;
                    b.encode_copy(enc, grads, (i == 0).then_some(&self.loss));
                    let done = std::mem::replace(
                        enc,
                        ctx.device.create_command_encoder(&Default::default()),
                    );
                    ctx.scoped(|| Ok(ctx.queue.submit([done.finish()])))
                };
                let times = self.reduce_times.as_mut();
                let bufs = (grads, &self.loss);
                reduce::reduce_buckets(&ctx, buckets, &mut enc, &mut submit, bufs, r, times)?;
                recorded += record_pass(&ctx, &mut enc, second)?;
            }
        }
        self.last_dispatches = recorded;
        if let Some(prof) = &self.profiler {
            prof.resolve(&mut enc);
        }
        self.encode_keep(&mut enc, t, 0)?;
        let slot = (self.steps_taken as usize) % self.ring.len();
        enc.copy_buffer_to_buffer(&self.loss, 0, &self.ring[slot], 0, 4);
        enc.copy_buffer_to_buffer(
            &self.clip.stats,
            0,
            &self.ring[slot],
            4,
            4 * (crate::kernels::clip::STATS_HEADER + self.segs.len()) as u64,
        );
        if let Some(h) = hist_t.and_then(|t| self.hist_plans.get(&t)) {
            let at = 4 * (1 + crate::kernels::clip::STATS_HEADER + self.segs.len()) as u64;
            let out = &h.plan.out;
            enc.copy_buffer_to_buffer(out, 0, &self.ring[slot], at, out.size());
        }
        let index = ctx.scoped(|| Ok(ctx.queue.submit([enc.finish()])))?;
        let mapped = Arc::new(std::sync::Mutex::new(None));
        let m = mapped.clone();
        self.ring[slot].map_async(wgpu::MapMode::Read, .., move |r| {
            if let Ok(mut g) = m.lock() {
                *g = Some(r);
            }
        });
        self.pending.push_back(Pending {
            slot,
            hist: hist_t,
            index,
            mapped,
        });
        self.steps_taken += 1;
        // The forward updated the running statistics (skipped or not, as
        // PyTorch's BatchNorm counts every train-mode forward).
        if self.net.norm.has_batch_stats() {
            for v in self.lstm.model.tracked.values_mut() {
                *v += 1;
            }
        }
        if let Some(prof) = self.profiler.as_mut() {
            prof.collect(&ctx)?;
        }
        Ok(())
    }

    /// The stream position of the next [`Trainer::eval`]'s first step:
    /// step s of it reads the running-statistics row min(pos + s, T_max − 1)
    /// of `--norm step-batch` and `recurrent-batch` (other models ignore
    /// it). 0 for passes over whole windows; a stream of single steps
    /// (`Model::step`, generation) counts its steps here, as a window
    /// counts its positions.
    pub fn set_stream_position(&mut self, pos: usize) {
        self.lstm.t0 = pos;
    }

    /// A plan's key: (T, train mode, stream position in eval).
    fn key(&self, t: usize, train: bool) -> PlanKey {
        (t, train, if train { 0 } else { self.lstm.eval_t0() })
    }

    /// The mean loss of a batch without updating anything (validation,
    /// generation), in eval mode: running statistics, no dropout. Its state
    /// carries into the next evaluation only.
    pub fn eval(&mut self, t: usize, data: &StepData<'_>, carry: Carry) -> Result<f32> {
        self.upload(t, data, false)?;
        self.last_train = false;
        let ctx = self.ctx.clone();
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        self.encode_state(&mut enc, t, carry, 1)?;
        let p = &self.plans[&self.key(t, false)];
        ctx.scoped(|| {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for d in &p.forward {
                d.record(&mut pass);
            }
            Ok(())
        })?;
        self.encode_keep(&mut enc, t, 1)?;
        ctx.scoped(|| {
            ctx.queue.submit([enc.finish()]);
            Ok(())
        })?;
        // Later direct uses of the LSTM see its default (train) mode.
        self.lstm.train = true;
        Ok(ctx.read_f32(&self.loss, 0, 1)?[0])
    }

    /// The head's output of the last pass of length `t` ([rows, out_dim]:
    /// logits or predictions; rows = T·B, or B for [`Head::Regression`]),
    /// read back.
    pub fn head_output(&mut self, t: usize) -> Result<Vec<f32>> {
        let rows = match self.net.head {
            Head::Regression { .. } => self.batch,
            _ => t * self.batch,
        };
        let p = self.last_plan(t)?;
        self.ctx.read_f32(&p.head_out, 0, rows * self.net.out_dim())
    }

    /// The plan of the last pass, of length `t`.
    fn last_plan(&self, t: usize) -> Result<&StepPlan> {
        self.plans
            .get(&self.key(t, self.last_train))
            .ok_or_else(|| Error::Invalid(format!("no pass of length {t} has run")))
    }

    /// The attention weights of the last pass of length `t` (`[B, T]`
    /// row-major: sequence b's weight of each step, 0 past its length),
    /// read back; an error for a model without attention pooling.
    pub fn attention_weights(&self, t: usize) -> Result<Vec<f32>> {
        if self.net.attention.is_none() {
            return Err(Error::Invalid(
                "attention weights: this model's head reads the last step (no attention \
                 pooling)"
                    .into(),
            ));
        }
        let p = self.last_plan(t)?;
        self.ctx.read_f32(&p.attn, 0, self.batch * t)
    }

    /// Dispatches and submits per training step of length `t` (after one
    /// step of that length has run).
    pub fn dispatches_per_step(&self, t: usize) -> Option<(usize, usize)> {
        // A data-parallel step submits once per bucket, then once more.
        let submits = match self.reducer {
            Some(_) => self.buckets.get(&self.key(t, true)).map_or(1, Vec::len) + 1,
            None => 1,
        };
        self.plans.get(&self.key(t, true)).map(|p| {
            (
                p.forward.len() + p.backward.len() + self.clip.dispatches.len() + 1,
                submits,
            )
        })
    }

    /// Dispatches the last training step recorded (counted as recorded:
    /// [`Trainer::dispatches_per_step`] plus a histogram step's own).
    pub fn last_step_dispatches(&self) -> usize {
        self.last_dispatches
    }

    /// The parameters' names in [`NetConfig::table`] order: what
    /// [`StepStats::tensor_norms`] follows.
    pub fn tensor_names(&self) -> Vec<String> {
        let entries = &self.lstm.model.table.entries;
        entries.iter().map(|e| e.name.clone()).collect()
    }

    /// Sequences per batch (of every pass).
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The context.
    pub fn ctx(&self) -> &Arc<GpuContext> {
        &self.ctx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(init: InitOptions) -> NetConfig {
        let mut n = NetConfig::new(
            Head::Regression {
                features: 5,
                outputs: 1,
            },
            16,
            2,
        );
        n.init = init;
        n
    }

    fn tensor<'a>(net: &NetConfig, v: &'a [f32], name: &str) -> &'a [f32] {
        let t = net.table();
        let e = t.get(name).unwrap_or_else(|| panic!("no {name}"));
        &v[e.offset..e.offset + e.len()]
    }

    #[test]
    fn orthogonal_blocks_are_orthogonal() {
        let n = net(InitOptions {
            whh: WhhInit::Orthogonal,
            ..Default::default()
        });
        let v = init_values(&n, 3);
        let h = 16;
        for l in 0..2 {
            let w = tensor(&n, &v, &format!("weight_hh_l{l}"));
            for g in 0..4 {
                let q = &w[g * h * h..(g + 1) * h * h];
                let mut worst = 0f64;
                for i in 0..h {
                    for j in 0..h {
                        let d: f64 = (0..h)
                            .map(|k| q[i * h + k] as f64 * q[j * h + k] as f64)
                            .sum();
                        worst = worst.max((d - if i == j { 1.0 } else { 0.0 }).abs());
                    }
                }
                assert!(worst < 1e-5, "layer {l} gate {g}: |QQᵀ − I| = {worst}");
            }
            // The four gate blocks differ (each its own draw).
            assert_ne!(&w[..h * h], &w[h * h..2 * h * h]);
        }
    }

    #[test]
    fn orthogonal_has_positive_r_diagonal() {
        // Q = A·R⁻¹ with R upper triangular and diag(R) > 0, as torch's
        // sign-corrected QR: rᵢᵢ = qᵢ·aᵢ > 0 for the same Gaussian A.
        let mut r1 = crate::rng::Rng::new(9);
        let q = orthogonal(6, &mut r1);
        let mut r2 = crate::rng::Rng::new(9);
        let a: Vec<f64> = (0..36).map(|_| r2.normal_unpaired()).collect();
        for j in 0..6 {
            let rjj: f64 = (0..6).map(|r| q[r * 6 + j] * a[r * 6 + j]).sum();
            assert!(rjj > 0.0, "r[{j}][{j}] = {rjj}");
            // Column j of A lies in the span of q_0..q_j (R is triangular).
            for i in j + 1..6 {
                let rij: f64 = (0..6).map(|r| q[r * 6 + i] * a[r * 6 + j]).sum();
                assert!(rij.abs() < 1e-12, "r[{i}][{j}] = {rij}");
            }
        }
    }

    #[test]
    fn xavier_bounds_and_variance() {
        let n = net(InitOptions {
            wih: WihInit::Xavier,
            ..Default::default()
        });
        let v = init_values(&n, 4);
        for (l, fan_in) in [(0, 5.0f64), (1, 16.0)] {
            let w = tensor(&n, &v, &format!("weight_ih_l{l}"));
            let b = (6.0 / (fan_in + 64.0)).sqrt();
            assert!(w.iter().all(|&x| (x as f64).abs() <= b), "layer {l} bound");
            // U(±b) has variance b²/3.
            let var = w.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / w.len() as f64;
            let want = b * b / 3.0;
            assert!(
                (var / want - 1.0).abs() < 0.15,
                "layer {l}: variance {var}, expected about {want}"
            );
            // Larger than the default bound 1/√H would allow for layer 0.
            assert!(w.iter().any(|&x| (x as f64).abs() > 0.25), "layer {l}");
        }
    }

    #[test]
    fn forget_bias_and_untouched_defaults() {
        let plain = net(InitOptions::default());
        let p = init_values(&plain, 5);
        let n = net(InitOptions {
            forget_bias: Some(1.0),
            ..Default::default()
        });
        let v = init_values(&n, 5);
        let h = 16;
        for l in 0..2 {
            let ih = tensor(&n, &v, &format!("bias_ih_l{l}"));
            let hh = tensor(&n, &v, &format!("bias_hh_l{l}"));
            assert!(ih[h..2 * h].iter().all(|&x| x == 1.0));
            assert!(hh[h..2 * h].iter().all(|&x| x == 0.0));
            // The other gates keep PyTorch's default.
            let pih = tensor(&plain, &p, &format!("bias_ih_l{l}"));
            assert_eq!(&ih[..h], &pih[..h]);
            assert_eq!(&ih[2 * h..], &pih[2 * h..]);
        }
        // Every other tensor is the default draw, bit for bit.
        for name in ["weight_ih_l0", "weight_hh_l1", "head.weight", "head.bias"] {
            assert_eq!(tensor(&n, &v, name), tensor(&plain, &p, name), "{name}");
        }
        // And the default is U(±1/√H).
        let k = 1.0 / 4.0;
        assert!(
            p[..net(InitOptions::default()).table().offset("head.weight")]
                .iter()
                .all(|&x| x.abs() <= k)
        );
    }

    #[test]
    fn norm_tensors_are_in_the_table_with_their_init() {
        let mut n = net(InitOptions::default());
        n.norm = Norm::RecurrentBatch { t_max: 7 };
        let v = init_values(&n, 1);
        assert_eq!(v.len(), n.table().total);
        assert!(tensor(&n, &v, "bn_ih_l1.weight").iter().all(|&x| x == 0.1));
        assert!(tensor(&n, &v, "bn_c_l0.bias").iter().all(|&x| x == 0.0));
        let s = init_stats(&n);
        let st = n.stats_table();
        let e = st
            .get("bn_hh_l0.running_var")
            .unwrap_or_else(|| panic!("no var"));
        assert_eq!(e.shape, vec![7, 64]);
        assert!(s[e.offset..e.offset + e.len()].iter().all(|&x| x == 1.0));
        // The LSTM and head draws are those of the plain model.
        let plain = init_values(&net(InitOptions::default()), 1);
        let nl = ParamTable::new(n.lstm().param_shapes()).total;
        assert_eq!(&v[..nl], &plain[..nl]);
        assert_eq!(tensor(&n, &v, "head.weight"), {
            let pn = net(InitOptions::default());
            tensor(&pn, &plain, "head.weight").to_vec()
        });
    }

    #[test]
    fn lengths_are_checked() {
        assert!(check_lengths(&[1, 4, 2], 4, 3).is_ok());
        for (l, want) in [
            (vec![1, 5, 2], "lengths[1] = 5 is outside 1..=4"),
            (vec![0, 4, 2], "lengths[0] = 0 is outside 1..=4"),
            (vec![4, 4], "2 entries, expected one per sequence (3)"),
        ] {
            let e = check_lengths(&l, 4, 3).err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains(want)),
                "{l:?}: {e:?}"
            );
        }
    }
}
