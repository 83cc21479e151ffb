//! Numeric precision of a model's passes and the dynamic loss scaler of
//! f16-mixed training.
//!
//! `f16-mixed` keeps what would drift in f32 and rounds what is re-made
//! every step: the GEMMs and the fused cell read the weights from an f16
//! shadow of the f32 master parameters (refreshed by one dispatch before
//! every forward), the cell stores its saved gates and h_{t-1} as f16, and
//! the weight-gradient GEMM reads that f16 h_{t-1}. Every product
//! accumulates in f32; the cell state c, the layer outputs, all gradients,
//! norm statistics, optimizer state and master weights stay f32.

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::model::norm::Norm;

pub use crate::kernels::clip::{ScalerConfig, ScalerState};

/// How a model's passes store and read weights and saved activations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// Everything f32 (the default).
    #[default]
    F32,
    /// f16 weights for GEMMs and the cell and an f16 gate cache, f32
    /// accumulation, state, gradients and master weights.
    F16Mixed,
}

/// What a user asks for: a precision, or `auto` (f16-mixed where the
/// adapter and the model allow it, else f32 with a warning).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PrecisionChoice {
    /// [`Precision::F32`].
    #[default]
    F32,
    /// [`Precision::F16Mixed`]; an error where it cannot run.
    F16Mixed,
    /// f16-mixed when possible, else f32.
    Auto,
}

impl Precision {
    /// The name [`PrecisionChoice::parse`] accepts.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16Mixed => "f16-mixed",
        }
    }

    /// Whether weights and the gate cache are f16.
    pub fn is_half(self) -> bool {
        self == Self::F16Mixed
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PrecisionChoice {
    /// Parses `f32`, `f16-mixed` or `auto`.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" => Ok(Self::F32),
            "f16-mixed" | "f16" | "mixed" => Ok(Self::F16Mixed),
            "auto" => Ok(Self::Auto),
            other => Err(format!(
                "unknown precision `{other}` (f32, f16-mixed or auto)"
            )),
        }
    }
}

/// Why f16-mixed cannot run a model of norm `norm` and `cell` on `ctx`, if
/// it cannot (see [`f16_obstacle_for`] for a whole configuration).
pub fn f16_obstacle(
    ctx: &GpuContext,
    norm: &Norm,
    cell: crate::kernels::cell::Cell,
) -> Option<String> {
    if !ctx.f16 {
        return Some(format!(
            "adapter {} lacks the SHADER_F16 feature",
            ctx.info.name
        ));
    }
    if norm.in_cell() {
        return Some(
            "the normalized cells (layer-cell, recurrent-batch) run in f32 only".to_string(),
        );
    }
    // IndRNN's diagonal W_hh gradient sums an f32 gate cache only.
    if cell.diag() {
        return Some(format!("the {} cell runs in f32 only", cell.module()));
    }
    None
}

/// [`f16_obstacle`] of a model of shape `cfg`: projections first (they
/// run in f32 only, whatever the adapter).
pub fn f16_obstacle_for(
    ctx: &GpuContext,
    norm: &Norm,
    cfg: &crate::model::config::LstmConfig,
) -> Option<String> {
    match cfg.proj() {
        Some(p) => Some(format!(
            "an LSTM with projections (proj_size {p}) runs in f32 only"
        )),
        None => f16_obstacle(ctx, norm, cfg.cell()),
    }
}

/// The precision `choice` gives a model of norm `norm` and `cell` on `ctx`, with a
/// warning when `auto` falls back to f32; an error naming the reason when
/// f16-mixed is asked for and cannot run (see [`resolve_for`] for a whole
/// configuration).
pub fn resolve(
    choice: PrecisionChoice,
    ctx: &GpuContext,
    norm: &Norm,
    cell: crate::kernels::cell::Cell,
) -> Result<(Precision, Option<String>)> {
    resolve_with(choice, f16_obstacle(ctx, norm, cell))
}

/// [`resolve`] for a model of shape `cfg` ([`f16_obstacle_for`]).
pub fn resolve_for(
    choice: PrecisionChoice,
    ctx: &GpuContext,
    norm: &Norm,
    cfg: &crate::model::config::LstmConfig,
) -> Result<(Precision, Option<String>)> {
    resolve_with(choice, f16_obstacle_for(ctx, norm, cfg))
}

fn resolve_with(
    choice: PrecisionChoice,
    obstacle: Option<String>,
) -> Result<(Precision, Option<String>)> {
    match (choice, obstacle) {
        (PrecisionChoice::F32, _) => Ok((Precision::F32, None)),
        (PrecisionChoice::F16Mixed, None) | (PrecisionChoice::Auto, None) => {
            Ok((Precision::F16Mixed, None))
        }
        (PrecisionChoice::F16Mixed, Some(why)) => Err(Error::Invalid(format!(
            "f16-mixed precision cannot run: {why} (use --precision f32, or auto to fall back)"
        ))),
        (PrecisionChoice::Auto, Some(why)) => Ok((
            Precision::F32,
            Some(format!(
                "precision auto: f16-mixed cannot run ({why}); using f32"
            )),
        )),
    }
}

/// What `--loss-scale` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum LossScaleChoice {
    /// Dynamic scaling from 65536 in f16-mixed, none in f32.
    #[default]
    Default,
    /// No loss scaling.
    Off,
    /// Dynamic scaling from this initial scale (in either precision).
    Dynamic(f32),
}

impl LossScaleChoice {
    /// Parses `dynamic` (from 65536), `off`, or a finite initial scale > 0.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "dynamic" | "on" => Ok(Self::Dynamic(ScalerConfig::default().init_scale)),
            "off" | "none" => Ok(Self::Off),
            _ => match t.parse::<f32>() {
                Ok(v) if v.is_finite() && v > 0.0 => Ok(Self::Dynamic(v)),
                _ => Err(format!(
                    "bad loss scale `{s}` (dynamic, off, or an initial scale > 0)"
                )),
            },
        }
    }

    /// The scaler a run of precision `p` gets (PyTorch's growth, backoff
    /// and interval), if any.
    pub fn config(self, p: Precision) -> Option<ScalerConfig> {
        match self {
            Self::Default if p.is_half() => Some(ScalerConfig::default()),
            Self::Default | Self::Off => None,
            Self::Dynamic(init_scale) => Some(ScalerConfig {
                init_scale,
                ..Default::default()
            }),
        }
    }
}
