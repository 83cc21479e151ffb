//! Activations, caches and gradient scratch for one (T, B) shape, allocated
//! once and reused every step.

use crate::error::Result;
use crate::gpu::GpuContext;
use crate::kernels::lstm_cell_ln;
use crate::model::{Links, LstmConfig};
use crate::norm::Norm;

/// GPU buffers of one (sequence length, batch) shape. Layouts are
/// time-major; offsets are in elements.
pub struct Workspace {
    /// Sequence length T.
    pub seq: usize,
    /// Batch B.
    pub batch: usize,
    /// Layer-0 input [T, B, I].
    pub x: wgpu::Buffer,
    /// Output of each layer [T, B, D·H].
    pub outs: Vec<wgpu::Buffer>,
    /// Normalized output of each layer with a between-layer norm.
    pub normed: Vec<Option<wgpu::Buffer>>,
    /// Input of layer l + 1 where dropout or a residual add follow layer l:
    /// dropout(normed or raw output) (+ layer l's input).
    pub linked: Vec<Option<wgpu::Buffer>>,
    /// Statistics saved by between-layer norms, [`Workspace::norm_stats_len`] per layer.
    pub norm_stats: wgpu::Buffer,
    /// Pre-gates of each direction of the current layer [D][T, B, 4H].
    pub pre: wgpu::Buffer,
    /// Per (layer, direction): gates [T,B,4H] | c [T,B,H] | h_prev [T,B,H].
    pub cache: wgpu::Buffer,
    /// Per direction of the current layer: dgates [T,B,4H] | dc [T,B,H].
    pub dg: wgpu::Buffer,
    /// Ping-pong gradients w.r.t. layer outputs / inputs [T, B, max(D·H, I)].
    pub dy: [wgpu::Buffer; 2],
    /// Sequence lengths (u32) [B].
    pub lengths: wgpu::Buffer,
    /// h0 | c0, each [L·D, B, H].
    pub state_in: wgpu::Buffer,
    /// h_n | c_n.
    pub state_out: wgpu::Buffer,
    /// grad_h_n | grad_c_n.
    pub gstate_in: wgpu::Buffer,
    /// grad_h0 | grad_c0.
    pub gstate_out: wgpu::Buffer,
}

impl Workspace {
    /// Elements of one (layer, direction) cache block.
    pub fn cache_block(cfg: &LstmConfig, norm: &Norm, seq: usize, batch: usize) -> usize {
        if norm.in_cell() {
            lstm_cell_ln::cache_block(cfg.hidden_size, seq, batch)
        } else {
            seq * batch * 6 * cfg.hidden_size
        }
    }

    /// Elements of one direction's gradient block.
    pub fn dg_block(cfg: &LstmConfig, norm: &Norm, seq: usize, batch: usize) -> usize {
        if norm.in_cell() {
            lstm_cell_ln::dg_block(cfg.hidden_size, seq, batch)
        } else {
            seq * batch * 5 * cfg.hidden_size
        }
    }

    /// Elements of one layer's saved between-layer norm statistics.
    pub fn norm_stats_len(cfg: &LstmConfig, norm: &Norm, seq: usize, batch: usize) -> usize {
        use crate::kernels::{batch_norm::BatchNorm, layer_norm::LayerNorm};
        let features = cfg.dirs() * cfg.hidden_size;
        match norm {
            Norm::Layer { .. } => LayerNorm::stats_len(seq, batch),
            Norm::Batch { .. } | Norm::StepBatch { .. } => {
                BatchNorm::stats_len(&crate::kernels::batch_norm::BnShape {
                    seq,
                    batch,
                    features,
                    per_step: matches!(norm, Norm::StepBatch { .. }),
                    ..Default::default()
                })
            }
            _ => 0,
        }
    }

    /// Elements of one half (h or c) of a state array.
    pub fn state_len(cfg: &LstmConfig, batch: usize) -> usize {
        cfg.num_layers * cfg.dirs() * batch * cfg.hidden_size
    }

    /// The input of layer `l + 1` (for the last layer: the stack's output).
    pub fn layer_output(&self, l: usize) -> &wgpu::Buffer {
        self.linked[l]
            .as_ref()
            .or(self.normed[l].as_ref())
            .unwrap_or(&self.outs[l])
    }

    /// Allocates every buffer, failing with a clear error when one would
    /// exceed the adapter's limits.
    pub fn new(
        ctx: &GpuContext,
        cfg: &LstmConfig,
        norm: &Norm,
        links: &Links,
        train: bool,
        seq: usize,
        batch: usize,
    ) -> Result<Self> {
        let h = cfg.hidden_size;
        let d = cfg.dirs();
        let tb = seq * batch;
        let cells = cfg.num_layers * d;
        let state = Self::state_len(cfg, batch);
        let outs = (0..cfg.num_layers)
            .map(|l| ctx.storage(&format!("output of layer {l}"), tb * d * h))
            .collect::<Result<Vec<_>>>()?;
        let dy_len = tb * (d * h).max(cfg.input_size);
        let normed = (0..cfg.num_layers)
            .map(|l| {
                norm.normalizes_output(cfg, l)
                    .then(|| ctx.storage(&format!("normalized output of layer {l}"), tb * d * h))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        let linked = (0..cfg.num_layers)
            .map(|l| {
                (links.drops(cfg, l, train) || links.adds(l))
                    .then(|| ctx.storage(&format!("linked output of layer {l}"), tb * d * h))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        let norm_stats = ctx.storage(
            "norm statistics",
            cfg.num_layers * Self::norm_stats_len(cfg, norm, seq, batch),
        )?;
        Ok(Self {
            seq,
            batch,
            x: ctx.storage("input", tb * cfg.input_size)?,
            outs,
            normed,
            linked,
            norm_stats,
            pre: ctx.storage("pre-gates", d * tb * 4 * h)?,
            cache: ctx.storage(
                "gate cache",
                cells * Self::cache_block(cfg, norm, seq, batch),
            )?,
            dg: ctx.storage("gate gradients", d * Self::dg_block(cfg, norm, seq, batch))?,
            dy: [
                ctx.storage("output gradients", dy_len)?,
                ctx.storage("output gradients", dy_len)?,
            ],
            lengths: ctx.storage("lengths", batch)?,
            state_in: ctx.storage("initial state", 2 * state)?,
            state_out: ctx.storage("final state", 2 * state)?,
            gstate_in: ctx.storage("final state gradients", 2 * state)?,
            gstate_out: ctx.storage("initial state gradients", 2 * state)?,
        })
    }
}
