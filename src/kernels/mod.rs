//! Rust wrappers of the WGSL kernel families in `shaders/`, one file each
//! with the same name. Wrappers compile pipelines and build dispatches; they
//! own no model state.

pub mod attention;
pub mod batch_norm;
pub mod cast;
pub mod cell;
pub mod check_cell;
pub mod clip;
pub mod elementwise;
pub mod embedding;
pub mod gemm;
pub mod histogram;
pub mod layer_norm;
pub mod loss;
pub mod lstm_cell;
pub mod lstm_cell_bn;
pub mod lstm_cell_ln;
pub mod lstm_persistent;
pub mod lstm_proj;
pub mod optim;
pub mod reduce;
pub mod wgsl;

use crate::gpu::tuning::Tuning;
use crate::gpu::{GpuContext, KernelKey};
use std::sync::Arc;

/// The kernel families a model uses, chosen from a [`Tuning`] and compiled
/// on first use through the context's shared pipeline cache
/// ([`GpuContext::cached`]): models on one context share every family they
/// have in common, and a family no model uses is never compiled.
pub struct Kernels {
    ctx: Arc<GpuContext>,
    tuning: Tuning,
    /// Subgroup entry points may be built (the tuning does not turn them
    /// off; the device still needs them).
    subgroups: bool,
    /// Matrix multiply, the variant and tile the tuning resolves to (always
    /// used, so fetched, and checked, up front).
    gemm: Arc<gemm::Gemm>,
    /// The per-step cell's variant.
    cell_variant: lstm_cell::CellVariant,
    /// Persistent time loop of every plain cell (its pipelines compile per
    /// cell and hidden size on first use; its chunk cap is this model's
    /// own).
    pub persistent: lstm_persistent::LstmPersistent,
    /// The f16-mixed builds of the plain cell and of the kernels reading its
    /// f16 outputs are in use (see [`Kernels::set_half`]).
    half: bool,
}

impl Kernels {
    /// The kernels `tuning` chooses for `ctx` (each `None` field: the
    /// adapter's choice). Fails when the adapter cannot run a forced
    /// choice (a tile beyond its limits, the subgroup GEMM without 8-lane
    /// subgroups) or the skew is zero; compiles only the GEMM (unless the
    /// context compiled it already).
    pub fn new(ctx: &Arc<GpuContext>, tuning: Tuning) -> crate::Result<Self> {
        tuning.check()?;
        let subgroups = tuning.subgroups != Some(false);
        let subgroup = ctx.subgroup.filter(|_| subgroups);
        let variant = tuning
            .gemm
            .unwrap_or_else(|| gemm::GemmVariant::for_adapter(&ctx.info, &ctx.limits, subgroup));
        if variant == gemm::GemmVariant::Subgroup && !subgroups {
            return Err(crate::Error::Invalid(
                "the subgroup GEMM was asked for with subgroups turned off".into(),
            ));
        }
        let tile = tuning.gemm_tile.unwrap_or(gemm::TileShape::DEFAULT);
        let key = KernelKey {
            family: "gemm",
            variant: format!("{variant}/{},{},{}", tile.wg_m, tile.wg_n, tile.tk),
            half: false,
            subgroups: variant == gemm::GemmVariant::Subgroup,
        };
        let gemm = ctx.cached(key, || gemm::Gemm::new(ctx, variant, tile))?;
        if let Some(t) = tuning.cell_tile {
            t.check(&ctx.limits)?;
        }
        Ok(Self {
            ctx: ctx.clone(),
            tuning,
            subgroups,
            gemm,
            cell_variant: tuning
                .cell
                .unwrap_or_else(|| lstm_cell::CellVariant::for_adapter(&ctx.info)),
            persistent: lstm_persistent::LstmPersistent::new(),
            half: false,
        })
    }

    /// Chooses the kernels by `tuning` instead, keeping the precision and
    /// the persistent kernels (and their chunk cap); on error nothing
    /// changes.
    pub fn retune(&mut self, tuning: Tuning) -> crate::Result<()> {
        let mut k = Self::new(&self.ctx, tuning)?;
        if self.half {
            k.set_half(true)?;
        }
        std::mem::swap(&mut k.persistent, &mut self.persistent);
        *self = k;
        Ok(())
    }

    /// The tuning the kernels were chosen by.
    pub fn tuning(&self) -> &Tuning {
        &self.tuning
    }

    /// Whether the f16-mixed builds are in use.
    pub fn half(&self) -> bool {
        self.half
    }

    /// Switches the plain cell to its f16-mixed build (or back), and the
    /// GEMM, the column sum and the embedding's scatter-add to their f16
    /// pipelines (compiled on first use); needs SHADER_F16 for `on`.
    pub fn set_half(&mut self, on: bool) -> crate::Result<()> {
        let ctx = &self.ctx;
        if on && !ctx.f16 {
            return Err(crate::Error::Device(format!(
                "adapter {} lacks SHADER_F16: no f16 kernels",
                ctx.info.name
            )));
        }
        if on {
            ctx.scoped(|| {
                self.gemm.enable_half(ctx);
                Ok(())
            })?;
        }
        self.half = on;
        Ok(())
    }

    /// A family with one build, from the context's cache.
    fn family<T: std::any::Any + Send + Sync>(
        &self,
        family: &'static str,
        build: impl FnOnce(&GpuContext) -> T,
    ) -> crate::Result<Arc<T>> {
        let key = KernelKey {
            family,
            variant: String::new(),
            half: false,
            subgroups: false,
        };
        self.ctx.cached(key, || Ok(build(&self.ctx)))
    }

    /// Matrix multiply (its f16 pipelines built once [`Kernels::set_half`]
    /// switched f16 on).
    pub fn gemm(&self) -> &gemm::Gemm {
        &self.gemm
    }

    /// The fused recurrent step of `cell`, forward and backward, in the
    /// current precision.
    pub fn cell(&self, cell: cell::Cell) -> crate::Result<Arc<lstm_cell::LstmCell>> {
        // A diagonal W_hh (IndRNN) has its product on the direct variant
        // only, whatever the adapter's choice.
        let variant = match cell.diag() {
            true => lstm_cell::CellVariant::Direct,
            false => self.cell_variant,
        };
        let tile = self.tuning.cell_tile;
        let sg = self.subgroups
            && variant == lstm_cell::CellVariant::Direct
            && self.ctx.subgroup.is_some();
        let key = KernelKey {
            family: "lstm_cell",
            variant: format!("{}/{variant:?}/{tile:?}", cell.key()),
            half: self.half,
            subgroups: sg,
        };
        let half = self.half;
        self.ctx.cached(key, || {
            lstm_cell::LstmCell::new(&self.ctx, cell, variant, tile, half, sg)
        })
    }

    /// Deterministic reductions (the f16 column sum built once f16 is on).
    pub fn reduce(&self) -> crate::Result<Arc<reduce::Reduce>> {
        let r = self.family("reduce", reduce::Reduce::new)?;
        self.halved(r, reduce::Reduce::enable_half)
    }

    /// Embedding lookup (the f16 scatter-add built once f16 is on).
    pub fn embedding(&self) -> crate::Result<Arc<embedding::Embedding>> {
        let e = self.family("embedding", embedding::Embedding::new)?;
        self.halved(e, embedding::Embedding::enable_half)
    }

    /// `k`, its f16 pipelines built (`enable`) while f16 is on.
    fn halved<T>(&self, k: Arc<T>, enable: impl FnOnce(&T, &GpuContext)) -> crate::Result<Arc<T>> {
        if self.half {
            self.ctx.scoped(|| {
                enable(&k, &self.ctx);
                Ok(())
            })?;
        }
        Ok(k)
    }
}

/// The accessors of the families with one build, named as their modules,
/// each fetched through [`Kernels::family`].
macro_rules! families {
    ($($(#[$doc:meta])* $name:ident: $module:ident::$ty:ident),+ $(,)?) => {
        impl Kernels {
            $(
                $(#[$doc])*
                pub fn $name(&self) -> crate::Result<Arc<$module::$ty>> {
                    self.family(stringify!($module), $module::$ty::new)
                }
            )+
        }
    };
}

families! {
    /// The projected LSTM's pointwise steps and reordering.
    proj: lstm_proj::LstmProj,
    /// LayerNorm LSTM cell.
    cell_ln: lstm_cell_ln::LstmCellLn,
    /// Recurrent BatchNorm LSTM cell.
    cell_bn: lstm_cell_bn::LstmCellBn,
    /// LayerNorm between layers.
    layer_norm: layer_norm::LayerNorm,
    /// BatchNorm between layers.
    batch_norm: batch_norm::BatchNorm,
    /// Clipping and gradient norms.
    clip: clip::Clip,
    /// Histograms of buffer segments.
    histogram: histogram::Histogram,
    /// Attention pooling of the regression head.
    attention: attention::Attention,
    /// Losses.
    loss: loss::Loss,
    /// Dropout, residual adds, last-step gather.
    elementwise: elementwise::Elementwise,
    /// Optimizers.
    optim: optim::Optim,
    /// The f16 shadow of the parameters.
    cast: cast::Cast,
}

/// One entry point compiled from a shader's f32 source and, once
/// [`HalfKernel::enable`] ran, from its f16 build.
pub(crate) struct HalfKernel {
    f32: crate::gpu::Kernel,
    f16: std::sync::OnceLock<crate::gpu::Kernel>,
    entry: &'static str,
    bindings: &'static [(u32, crate::gpu::Binding)],
}

impl HalfKernel {
    /// `entry` of module `m` (the f32 source) with storage `bindings`.
    pub(crate) fn new(
        m: &crate::gpu::Module,
        entry: &'static str,
        bindings: &'static [(u32, crate::gpu::Binding)],
    ) -> Self {
        Self {
            f32: m.kernel(entry, bindings),
            f16: std::sync::OnceLock::new(),
            entry,
            bindings,
        }
    }

    /// Compiles the f16 build from `src` (the device needs SHADER_F16);
    /// idempotent.
    pub(crate) fn enable(&self, ctx: &GpuContext, label: &'static str, src: &str) {
        self.f16.get_or_init(|| {
            let m = crate::gpu::module(ctx, label, src);
            m.kernel(self.entry, self.bindings)
        });
    }

    /// The f16 build with `half`, else the f32 one; an error when the f16
    /// build was asked for before [`HalfKernel::enable`].
    pub(crate) fn get(&self, half: bool) -> crate::Result<&crate::gpu::Kernel> {
        match (half, self.f16.get()) {
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
    v.push((
        "lstm_cell.wgsl with the GRU (f16-mixed)".into(),
        lstm_cell::TileConfig::DEFAULT.source_of(cell::Cell::Gru, true),
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

/// Workgroup grid for `n` workgroups: x up to the per-dimension limit, then
/// y (the shader flattens it back and skips the excess).
pub(crate) fn grid(ctx: &GpuContext, what: &str, n: usize) -> crate::Result<(u32, u32)> {
    let max = ctx.limits.max_compute_workgroups_per_dimension.max(1) as usize;
    // Rows of `max` workgroups; the row count must itself fit a dimension.
    groups_1d(ctx, what, n, max)?;
    Ok(ctx.grid(u32_of(what, n)?))
}

/// Workgroup grid for `n` items, `wg` per workgroup (see [`grid`]).
pub(crate) fn flat_grid(
    ctx: &GpuContext,
    what: &str,
    n: usize,
    wg: usize,
) -> crate::Result<(u32, u32)> {
    grid(ctx, what, n.div_ceil(wg))
}

/// `off` as the shaders' u32, checked that the `n` elements from it end
/// within u32 indices (errors name `what`).
pub(crate) fn fits(what: &str, off: usize, n: usize) -> crate::Result<u32> {
    u32_of(what, off.saturating_add(n))?;
    Ok(off as u32)
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
