//! Rust wrappers of the WGSL kernel families in `shaders/`, one file each
//! with the same name. Wrappers compile pipelines and build dispatches; they
//! own no model state.

pub mod batch_norm;
pub mod cast;
pub mod clip;
pub mod elementwise;
pub mod embedding;
pub mod gemm;
pub mod layer_norm;
pub mod loss;
pub mod lstm_cell;
pub mod lstm_cell_bn;
pub mod lstm_cell_ln;
pub mod lstm_persistent;
pub mod optim;
pub mod reduce;

use crate::gpu::GpuContext;

/// Every kernel family, compiled once per context.
pub struct Kernels {
    /// Matrix multiply.
    pub gemm: gemm::Gemm,
    /// Fused LSTM cell forward and backward.
    pub cell: lstm_cell::LstmCell,
    /// LayerNorm LSTM cell.
    pub cell_ln: lstm_cell_ln::LstmCellLn,
    /// Recurrent BatchNorm LSTM cell.
    pub cell_bn: lstm_cell_bn::LstmCellBn,
    /// Persistent time loop of the plain cell.
    pub persistent: lstm_persistent::LstmPersistent,
    /// The plain cell's time-loop path when forced (initially from
    /// `LSTM_WGPU_CELL_PATH`); `None` lets the schedule choose by shape.
    pub cell_path: Option<lstm_persistent::CellPath>,
    /// The wavefront's skew when set (initially from `LSTM_WGPU_WAVE_SKEW`);
    /// `None`: chosen by adapter and shape.
    pub wave_skew: Option<usize>,
    /// Deterministic reductions.
    pub reduce: reduce::Reduce,
    /// LayerNorm between layers.
    pub layer_norm: layer_norm::LayerNorm,
    /// BatchNorm between layers.
    pub batch_norm: batch_norm::BatchNorm,
    /// Clipping and gradient norms.
    pub clip: clip::Clip,
    /// Embedding lookup.
    pub embedding: embedding::Embedding,
    /// Losses.
    pub loss: loss::Loss,
    /// Dropout, residual adds, last-step gather.
    pub elementwise: elementwise::Elementwise,
    /// Optimizers.
    pub optim: optim::Optim,
    /// The f16 shadow of the parameters.
    pub cast: cast::Cast,
    /// The f16-mixed builds of the plain cell and of the kernels reading its
    /// f16 outputs are in use (see [`Kernels::set_half`]).
    pub half: bool,
}

impl Kernels {
    /// Compiles all kernels for `ctx`.
    pub fn new(ctx: &GpuContext) -> crate::Result<Self> {
        ctx.scoped(|| {
            Ok(Self {
                gemm: gemm::Gemm::new(ctx)?,
                cell: lstm_cell::LstmCell::new(ctx)?,
                cell_ln: lstm_cell_ln::LstmCellLn::new(ctx),
                cell_bn: lstm_cell_bn::LstmCellBn::new(ctx),
                persistent: lstm_persistent::LstmPersistent::new(ctx),
                cell_path: lstm_persistent::CellPath::from_env()?,
                wave_skew: crate::schedule::skew_from_env()?,
                reduce: reduce::Reduce::new(ctx),
                layer_norm: layer_norm::LayerNorm::new(ctx),
                batch_norm: batch_norm::BatchNorm::new(ctx),
                clip: clip::Clip::new(ctx),
                embedding: embedding::Embedding::new(ctx),
                loss: loss::Loss::new(ctx),
                elementwise: elementwise::Elementwise::new(ctx),
                optim: optim::Optim::new(ctx),
                cast: cast::Cast::new(ctx),
                half: false,
            })
        })
    }

    /// Switches the plain cell to its f16-mixed build (or back) and
    /// compiles the f16 pipelines of the GEMM, the column sum and the
    /// embedding's scatter-add; needs SHADER_F16 for `on`.
    pub fn set_half(&mut self, ctx: &GpuContext, on: bool) -> crate::Result<()> {
        if on && !ctx.f16 {
            return Err(crate::Error::Device(format!(
                "adapter {} lacks SHADER_F16: no f16 kernels",
                ctx.info.name
            )));
        }
        ctx.scoped(|| {
            if on {
                self.gemm.enable_half(ctx);
                self.reduce.enable_half(ctx);
                self.embedding.enable_half(ctx);
            }
            if self.cell.half != on {
                self.cell = self.cell.rebuilt(ctx, on);
            }
            Ok(())
        })?;
        self.half = on;
        Ok(())
    }
}

/// One entry point compiled from a shader's f32 source and, once
/// [`HalfKernel::enable`] ran, from its f16 build.
pub(crate) struct HalfKernel {
    f32: crate::gpu::Kernel,
    f16: Option<crate::gpu::Kernel>,
    entry: &'static str,
    bindings: &'static [(u32, crate::gpu::Binding)],
}

impl HalfKernel {
    /// `entry` of module `m` (the f32 source) with storage `bindings`.
    pub(crate) fn new(
        ctx: &GpuContext,
        m: &crate::gpu::Module,
        entry: &'static str,
        bindings: &'static [(u32, crate::gpu::Binding)],
    ) -> Self {
        Self {
            f32: crate::gpu::Kernel::new(ctx, m, entry, bindings, &[]),
            f16: None,
            entry,
            bindings,
        }
    }

    /// Compiles the f16 build from `src` (the device needs SHADER_F16);
    /// idempotent.
    pub(crate) fn enable(&mut self, ctx: &GpuContext, label: &'static str, src: &str) {
        if self.f16.is_none() {
            let m = crate::gpu::module(ctx, label, src);
            self.f16 = Some(crate::gpu::Kernel::new(
                ctx,
                &m,
                self.entry,
                self.bindings,
                &[],
            ));
        }
    }

    /// The f16 build with `half`, else the f32 one; an error when the f16
    /// build was asked for before [`HalfKernel::enable`].
    pub(crate) fn get(&self, half: bool) -> crate::Result<&crate::gpu::Kernel> {
        match (half, &self.f16) {
            (false, _) => Ok(&self.f32),
            (true, Some(k)) => Ok(k),
            (true, None) => Err(crate::Error::Invalid(format!(
                "the f16 build of `{}` was used before it was compiled (Kernels::set_half)",
                self.entry
            ))),
        }
    }
}

/// Every f16 build of a shader the kernels compile in f16-mixed, named, as
/// the wrappers make them (the plain cell with its default tile), so that
/// tests can validate them without an adapter.
pub fn half_sources() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = gemm::HALF_TYPES
        .iter()
        .map(|&(a, b)| {
            (
                format!("gemm.wgsl (f16 A: {a}, f16 B: {b})"),
                gemm::Gemm::source(a, b),
            )
        })
        .collect();
    v.push((
        "lstm_cell.wgsl (f16-mixed)".into(),
        lstm_cell::TileConfig::DEFAULT.source(true),
    ));
    v.push((
        "lstm_cell.wgsl (f16-mixed, large tile)".into(),
        lstm_cell::TileConfig::LARGE.source(true),
    ));
    v.push(("reduce.wgsl (f16 A)".into(), reduce::Reduce::half_source()));
    v.push((
        "embedding.wgsl (f16 dout)".into(),
        embedding::Embedding::half_source(),
    ));
    v
}

/// Checked conversion of an element count or offset to the u32 the shaders use.
pub(crate) fn u32_of(what: &str, v: usize) -> crate::Result<u32> {
    u32::try_from(v).map_err(|_| crate::Error::TooLarge {
        what: what.to_string(),
        bytes: v as u64 * 4,
        limit: u32::MAX as u64 * 4,
        kind: "32-bit index",
    })
}

/// Workgroups needed for `n` items in groups of `size`, checked against the
/// per-dimension limit.
pub(crate) fn groups_1d(ctx: &GpuContext, what: &str, n: usize, size: usize) -> crate::Result<u32> {
    let g = n.div_ceil(size);
    let max = ctx.limits.max_compute_workgroups_per_dimension as usize;
    if g > max {
        return Err(crate::Error::TooLarge {
            what: what.to_string(),
            bytes: g as u64,
            limit: max as u64,
            kind: "dispatch dimension (workgroups)",
        });
    }
    Ok(g.max(1) as u32)
}
