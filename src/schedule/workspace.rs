//! Activations, caches and gradient scratch for one (T, B) shape, allocated
//! once and reused every step.

use crate::error::Result;
use crate::gpu::GpuContext;
use crate::kernels::lstm_cell_ln;
use crate::model::norm::Norm;
use crate::model::{Links, LstmConfig};

/// GPU buffers of one (sequence length, batch) shape. Layouts are
/// time-major; offsets are in elements.
pub struct Workspace {
    /// Sequence length T.
    pub seq: usize,
    /// Batch B.
    pub batch: usize,
    /// Features of a layer output (D·S: D·H, or D·P with a projection).
    pub features: usize,
    /// Eval mode: the stream position of step 0 ([`crate::schedule::Modes::t0`]).
    pub t0: usize,
    /// Layer-0 input [T, B, I].
    pub x: wgpu::Buffer,
    /// Outputs of all layers, [T, B, D·H] each at [`Workspace::out_off`]
    /// (the top layer first, at 0). One buffer, so that one cell dispatch
    /// can serve several layers (the wavefront).
    pub outs: wgpu::Buffer,
    /// Layers L.
    pub layers: usize,
    /// `pre` and `dg` hold one region per layer (the wavefront, where
    /// several layers are in flight) instead of one per direction.
    pub per_layer: bool,
    /// Normalized output of each layer with a between-layer norm.
    pub normed: Vec<Option<wgpu::Buffer>>,
    /// Input of layer l + 1 where dropout or a residual add follow layer l:
    /// dropout(normed or raw output) (+ layer l's input).
    pub linked: Vec<Option<wgpu::Buffer>>,
    /// Statistics saved by between-layer norms, [`Workspace::norm_stats_len`] per layer.
    pub norm_stats: wgpu::Buffer,
    /// Weight-drop (train mode): the recurrent cells' view of the LSTM's
    /// parameters, laid out as they are, with every W_hh dropped (and
    /// b_hh copied for cells that add it themselves); the rest unused.
    pub dropped: Option<wgpu::Buffer>,
    /// Zoneout's sections, f32 [T, B, H] each: the un-zoned c of every
    /// (layer, direction), then the gradients of h and of c carried straight
    /// back a step, per region of `dg` (see [`Workspace::zone_offsets`]);
    /// one word when zoneout is off.
    pub zst: wgpu::Buffer,
    /// The passes are in train mode (zoneout draws masks).
    pub train: bool,
    /// Pre-gates [T, B, 4H] of each direction of the current layer, or of
    /// each layer when `per_layer`.
    pub pre: wgpu::Buffer,
    /// Per (layer, direction): gates [T,B,4H] | c [T,B,H] | h_prev [T,B,H]
    /// in f32; gates | h_prev as f16 when `half` (c is then in `cseq`).
    /// One buffer, or one per layer when `split` (see [`Workspace::cache`]).
    caches: Vec<wgpu::Buffer>,
    /// The f16-mixed layout: f16 cache, f32 c apart.
    pub half: bool,
    /// f16-mixed: c [T,B,H] per (layer, direction), f32, split as the cache.
    cseqs: Vec<wgpu::Buffer>,
    /// The gate caches of all layers together exceed the adapter's largest
    /// storage binding: each layer has its own cache buffer (the wavefront,
    /// whose lanes share one binding across layers, cannot run then).
    pub split: bool,
    /// Per direction of the current layer (per layer when `per_layer`):
    /// dgates `[T,B,4H]` | dc `[T,B,H]` in f32; dgates as f16 when `half` (dc
    /// is then in `dcseq`).
    pub dg: wgpu::Buffer,
    /// f16-mixed: dc `[T,B,H]` per region of `dg`, f32.
    pub dcseq: Option<wgpu::Buffer>,
    /// Gradients w.r.t. each layer's output (its input for the layer
    /// above), laid out like `outs`.
    pub dy: wgpu::Buffer,
    /// Gradient w.r.t. the input [T, B, I].
    pub dx: wgpu::Buffer,
    /// Sequence lengths (u32) `[B]`.
    pub lengths: wgpu::Buffer,
    /// h0 | c0, each [L·D, B, H] (with a projection h0 is [L·D, B, P],
    /// packed at the start of its half).
    pub state_in: wgpu::Buffer,
    /// h_n | c_n.
    pub state_out: wgpu::Buffer,
    /// grad_h_n | grad_c_n.
    pub gstate_in: wgpu::Buffer,
    /// grad_h0 | grad_c0.
    pub gstate_out: wgpu::Buffer,
    /// The projected LSTM's step-major scratch (see
    /// `shaders/lstm_proj.wgsl` and [`Workspace::proj_offsets`]).
    pub proj: Option<ProjScratch>,
}

/// The projected LSTM's scratch: two buffers, since a GEMM of its time
/// loop reads one while it writes the other.
pub struct ProjScratch {
    /// Per (layer, direction) m [T, B, H]; per direction the step's
    /// scratch [B, 4H] and dm [B, H].
    pub work: wgpu::Buffer,
    /// Per (layer, direction) h [T, B, P]; per direction dh [T, B, P].
    pub seqs: wgpu::Buffer,
}

impl Workspace {
    /// Elements of one (layer, direction) cache block.
    pub fn cache_block(cfg: &LstmConfig, norm: &Norm, seq: usize, batch: usize) -> usize {
        if norm.in_cell() {
            lstm_cell_ln::cache_block(cfg.hidden_size, seq, batch)
        } else {
            seq * batch * cfg.cell().cache_width(false) * cfg.hidden_size
        }
    }

    /// Elements of one (layer, direction) cache block in a workspace of
    /// this precision: [`Workspace::cache_block`] in f32, gates | h_prev
    /// in f16-mixed ([`crate::kernels::cell`]).
    pub fn cell_cache_len(&self, cfg: &LstmConfig, norm: &Norm) -> usize {
        match self.half {
            true => self.seq * self.batch * cfg.cell().cache_width(true) * cfg.hidden_size,
            false => Self::cache_block(cfg, norm, self.seq, self.batch),
        }
    }

    /// Offsets of layer `l`, direction `d`'s cache block in
    /// [`Workspace::cache`]`(l)`, of its c section in [`Workspace::cst`]`(l)`,
    /// and of its h_prev section in the cache (plain cells).
    pub fn cell_offsets(&self, cfg: &LstmConfig, norm: &Norm, l: usize, d: usize) -> [usize; 3] {
        let cell = match self.split {
            true => d,
            false => l * cfg.dirs() + d,
        };
        let tbh = self.seq * self.batch * cfg.hidden_size;
        let base = cell * self.cell_cache_len(cfg, norm);
        let c = cfg.cell();
        match self.half {
            true => [base, cell * tbh, base + c.hp_section(true) * tbh],
            false => [
                base,
                base + c.c_section() * tbh,
                base + c.hp_section(false) * tbh,
            ],
        }
    }

    /// Offsets in [`Workspace::zst`] of (layer, direction) `cell`'s un-zoned
    /// c and of region `r`'s carried gradients of h and c.
    pub fn zone_offsets(&self, cfg: &LstmConfig, cell: usize, r: usize) -> [usize; 3] {
        let tbh = self.seq * self.batch * cfg.hidden_size;
        let cells = cfg.num_layers * cfg.dirs();
        let regions = if self.per_layer {
            cfg.num_layers
        } else {
            cfg.dirs()
        };
        [cell * tbh, (cells + r) * tbh, (cells + regions + r) * tbh]
    }

    /// Which of the cache (and c) buffers holds layer `l`.
    fn part(&self, l: usize) -> usize {
        if self.split { l } else { 0 }
    }

    /// The buffer holding layer `l`'s gate cache.
    pub fn cache(&self, l: usize) -> &wgpu::Buffer {
        &self.caches[self.part(l)]
    }

    /// The buffer holding layer `l`'s c sections: the c buffer in
    /// f16-mixed, else the cache.
    pub fn cst(&self, l: usize) -> &wgpu::Buffer {
        match self.half {
            true => &self.cseqs[self.part(l)],
            false => self.cache(l),
        }
    }

    /// 32-bit words of the gate caches of `cells` (layer, direction) cells:
    /// f32 blocks, or in `half` f16 gates | h_prev, two per word.
    fn cache_words(
        cfg: &LstmConfig,
        norm: &Norm,
        (seq, batch): (usize, usize),
        half: bool,
        cells: usize,
    ) -> usize {
        match half {
            true => {
                (cells * seq * batch * cfg.cell().cache_width(true) * cfg.hidden_size).div_ceil(2)
            }
            false => cells * Self::cache_block(cfg, norm, seq, batch),
        }
    }

    /// 32-bit words of `regions` regions of gate gradients: f32 blocks
    /// (dgates | dc), or in `half` f16 dgates, two per word.
    fn dg_words(
        cfg: &LstmConfig,
        norm: &Norm,
        (seq, batch): (usize, usize),
        half: bool,
        regions: usize,
    ) -> usize {
        match half {
            true => {
                (regions * seq * batch * cfg.cell().dg_width(true) * cfg.hidden_size).div_ceil(2)
            }
            false => regions * Self::dg_block(cfg, norm, seq, batch),
        }
    }

    /// Why the wavefront's workspace (one region of pre-gates and of gate
    /// gradients per layer, one gate cache for all layers) does not fit
    /// the adapter's largest storage binding, if it does not; the
    /// layer-by-layer workspace needs only one region per direction and
    /// can split the cache per layer.
    pub fn wavefront_obstacle(
        ctx: &GpuContext,
        cfg: &LstmConfig,
        norm: &Norm,
        shape: (usize, usize),
        half: bool,
    ) -> Option<String> {
        let (limit, _) = ctx.max_storage_bytes();
        let layers = cfg.num_layers;
        let cells = layers * cfg.dirs();
        let tbh = shape.0 * shape.1 * cfg.hidden_size;
        [
            ("pre-gates", layers * tbh * cfg.cell().gates()),
            (
                "gate gradients",
                Self::dg_words(cfg, norm, shape, half, layers),
            ),
            (
                "gate cache",
                Self::cache_words(cfg, norm, shape, half, cells),
            ),
            ("cell states", if half { cells * tbh } else { 0 }),
        ]
        .into_iter()
        .map(|(what, words)| (what, 4 * words as u64))
        .find(|&(_, bytes)| bytes > limit)
        .map(|(what, bytes)| {
            format!(
                "its {what} of all layers need {bytes} bytes in one binding, over the adapter's \
                 {limit}"
            )
        })
    }

    /// The buffer holding the cells' dc sections: `dcseq` in f16-mixed,
    /// else `dg`.
    pub fn dcs(&self) -> &wgpu::Buffer {
        self.dcseq.as_ref().unwrap_or(&self.dg)
    }

    /// Offset of region `r`'s gate gradients in `dg`.
    pub fn dg_off(&self, cfg: &LstmConfig, norm: &Norm, r: usize) -> usize {
        match self.half {
            true => r * self.seq * self.batch * cfg.cell().dg_width(true) * cfg.hidden_size,
            false => r * Self::dg_block(cfg, norm, self.seq, self.batch),
        }
    }

    /// Offset of region `r`'s dc [T, B, H] in [`Workspace::dcs`] (plain
    /// cells).
    pub fn dc_off(&self, cfg: &LstmConfig, norm: &Norm, r: usize) -> usize {
        let tbh = self.seq * self.batch * cfg.hidden_size;
        match self.half {
            true => r * tbh,
            false => self.dg_off(cfg, norm, r) + cfg.cell().dc_section() * tbh,
        }
    }

    /// Offset of region `r`'s W_ih gate gradients [T, B, G·H] in `dg`:
    /// the dx section for cells that [`split_dg`], else the gate
    /// gradients themselves.
    ///
    /// [`split_dg`]: crate::kernels::cell::Cell::split_dg
    pub fn dx_off(&self, cfg: &LstmConfig, norm: &Norm, r: usize) -> usize {
        let c = cfg.cell();
        let tbh = self.seq * self.batch * cfg.hidden_size;
        match c.split_dg() {
            true => self.dg_off(cfg, norm, r) + c.dx_section(self.half) * tbh,
            false => self.dg_off(cfg, norm, r),
        }
    }

    /// Elements of one direction's gradient block (f32 layout).
    pub fn dg_block(cfg: &LstmConfig, norm: &Norm, seq: usize, batch: usize) -> usize {
        if norm.in_cell() {
            lstm_cell_ln::dg_block(cfg.hidden_size, seq, batch)
        } else {
            seq * batch * cfg.cell().dg_width(false) * cfg.hidden_size
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

    /// Offsets of layer `l`, direction `d`'s projection scratch: m, the
    /// step's scratch and dm in `work`, h and dh in `seqs` (see
    /// [`ProjScratch`]; the layer-by-layer schedule, one region per
    /// direction).
    pub fn proj_offsets(&self, cfg: &LstmConfig, l: usize, d: usize) -> [usize; 5] {
        let (h, p) = (cfg.hidden_size, cfg.state_size());
        let (tb, b) = (self.seq * self.batch, self.batch);
        let cells = cfg.num_layers * cfg.dirs();
        let cell = l * cfg.dirs() + d;
        let step = b * (cfg.cell().gates() + 1) * h;
        let r = cells * tb * h + d * step;
        [
            cell * tb * h,
            r,
            r + b * cfg.cell().gates() * h,
            cell * tb * p,
            (cells + d) * tb * p,
        ]
    }

    /// Offset of layer `l`'s region in `outs` and `dy`.
    pub fn out_off(&self, l: usize) -> usize {
        (self.layers - 1 - l) * self.seq * self.batch * self.features
    }

    /// The input of layer `l + 1` (for the last layer: the stack's output,
    /// always at offset 0) and its offset.
    pub fn layer_output(&self, l: usize) -> (&wgpu::Buffer, usize) {
        match self.linked[l].as_ref().or(self.normed[l].as_ref()) {
            Some(b) => (b, 0),
            None => (&self.outs, self.out_off(l)),
        }
    }

    /// Offset of region `r` (layer or direction) in `pre`.
    pub fn pre_off(&self, cfg: &LstmConfig, r: usize) -> usize {
        r * self.seq * self.batch * cfg.cell().gates() * cfg.hidden_size
    }

    /// Allocates every buffer, failing with a clear error when one would
    /// exceed the adapter's limits. `per_layer`, `half`: see the fields
    /// (`half` serves plain cells only).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &GpuContext,
        cfg: &LstmConfig,
        norm: &Norm,
        links: &Links,
        train: bool,
        seq: usize,
        batch: usize,
        per_layer: bool,
        half: bool,
    ) -> Result<Self> {
        let h = cfg.hidden_size;
        let d = cfg.dirs();
        let tb = seq * batch;
        let cells = cfg.num_layers * d;
        let state = Self::state_len(cfg, batch);
        let regions = if per_layer { cfg.num_layers } else { d };
        let (limit, _) = ctx.max_storage_bytes();
        // The f16 cache (5 halves per unit) is always larger than the f32 c
        // buffer beside it (1 float).
        let all_cells = Self::cache_words(cfg, norm, (seq, batch), half, cells);
        let split = !per_layer && cfg.num_layers > 1 && 4 * all_cells as u64 > limit;
        // Cells per cache buffer, and labels naming the layer when split.
        let (parts, per_part) = match split {
            true => (cfg.num_layers, d),
            false => (1, cells),
        };
        let label = |what: &str, p: usize| match split {
            true => format!("{what} of layer {p}"),
            false => what.to_string(),
        };
        let cache_label = if half {
            "gate cache (f16)"
        } else {
            "gate cache"
        };
        let caches = (0..parts)
            .map(|p| {
                let words = Self::cache_words(cfg, norm, (seq, batch), half, per_part);
                ctx.storage(&label(cache_label, p), words)
            })
            .collect::<Result<Vec<_>>>()?;
        let cseqs = match half {
            true => (0..parts)
                .map(|p| ctx.storage(&label("cell states", p), per_part * tb * h))
                .collect::<Result<Vec<_>>>()?,
            false => Vec::new(),
        };
        let width = cfg.out_width();
        let outs = ctx.storage("layer outputs", cfg.num_layers * tb * width)?;
        let normed = (0..cfg.num_layers)
            .map(|l| {
                norm.normalizes_output(cfg, l)
                    .then(|| ctx.storage(&format!("normalized output of layer {l}"), tb * width))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        let linked = (0..cfg.num_layers)
            .map(|l| {
                (links.drops(cfg, l, train) || links.adds(l))
                    .then(|| ctx.storage(&format!("linked output of layer {l}"), tb * width))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        let norm_stats = ctx.storage(
            "norm statistics",
            cfg.num_layers * Self::norm_stats_len(cfg, norm, seq, batch),
        )?;
        let dropped = match links.drops_weights(train) {
            true => {
                let n = crate::model::ParamTable::new(cfg.param_shapes()).total;
                Some(ctx.storage("weight-dropped W_hh", n)?)
            }
            false => None,
        };
        let zone_words = match links.zones() {
            true => (cells + 2 * regions) * tb * h,
            false => 1,
        };
        Ok(Self {
            seq,
            batch,
            t0: 0,
            features: width,
            layers: cfg.num_layers,
            per_layer,
            x: ctx.storage("input", tb * cfg.input_size)?,
            outs,
            normed,
            linked,
            norm_stats,
            dropped,
            zst: ctx.storage("zoneout sections", zone_words)?,
            train,
            pre: ctx.storage("pre-gates", regions * tb * cfg.cell().gates() * h)?,
            caches,
            half,
            cseqs,
            split,
            dg: ctx.storage(
                if half {
                    "gate gradients (f16)"
                } else {
                    "gate gradients"
                },
                Self::dg_words(cfg, norm, (seq, batch), half, regions),
            )?,
            dcseq: half
                .then(|| ctx.storage("cell state gradients", regions * tb * h))
                .transpose()?,
            dy: ctx.storage("output gradients", cfg.num_layers * tb * width)?,
            dx: ctx.storage("input gradients", tb * cfg.input_size)?,
            lengths: ctx.storage("lengths", batch)?,
            state_in: ctx.storage("initial state", 2 * state)?,
            state_out: ctx.storage("final state", 2 * state)?,
            gstate_in: ctx.storage("final state gradients", 2 * state)?,
            gstate_out: ctx.storage("initial state gradients", 2 * state)?,
            proj: match cfg.proj() {
                Some(p) => {
                    let step = batch * (cfg.cell().gates() + 1) * h;
                    Some(ProjScratch {
                        work: ctx.storage("projection inputs", cells * tb * h + d * step)?,
                        seqs: ctx.storage("projected states", (cells + d) * tb * p)?,
                    })
                }
                None => None,
            },
        })
    }
}
