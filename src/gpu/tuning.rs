//! Tuning: the kernel choices a caller may force (GEMM and cell variants and
//! tiles, the cell's time-loop path, the wavefront's skew, subgroups), as a
//! value given when a [`crate::GpuContext`] or [`crate::Lstm`] is built.
//! Every field is an `Option`: `None` keeps the per-adapter (and per-shape)
//! choice. The library never reads the environment; the command-line layer
//! builds a `Tuning` from the `LSTM_WGPU_*` variables (`src/cli/env.rs`).
//!
//! It sits beside [`crate::gpu`], below the kernels: plain data that the
//! kernel wrappers ([`crate::kernels`]) and the schedule interpret, so that
//! neither layer has to import the other's types.

use crate::error::{Error, Result};

/// Kernel choices forced by the caller; `Tuning::default()` forces nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tuning {
    /// The GEMM variant (`None`: per adapter, see
    /// [`GemmVariant::for_adapter`]).
    pub gemm: Option<GemmVariant>,
    /// The tiled GEMM's tile (`None`: [`TileShape::DEFAULT`]).
    pub gemm_tile: Option<TileShape>,
    /// The per-step cell variant (`None`: direct on CPU adapters, tiled on
    /// GPUs).
    pub cell: Option<CellVariant>,
    /// The tiled cell's only tile (`None`: [`TileConfig::DEFAULT`], and
    /// [`TileConfig::LARGE`] for large dispatches where the adapter allows it).
    pub cell_tile: Option<TileConfig>,
    /// The plain cell's time-loop path (`None`: chosen by shape).
    pub cell_path: Option<CellPath>,
    /// The wavefront's skew C, at least 1 (`None`: chosen by adapter and
    /// shape).
    pub wave_skew: Option<usize>,
    /// Subgroup kernels: `Some(false)` turns them off; `None` or
    /// `Some(true)`: on wherever the adapter has subgroups of one fixed
    /// width. Given to [`crate::GpuContext::with_tuning`] it decides
    /// whether the device asks for subgroups at all; given to
    /// [`crate::Lstm::with_tuning`] it can only turn them off for that model.
    pub subgroups: Option<bool>,
}

impl Tuning {
    /// Checks what needs no adapter: a skew of at least 1.
    pub fn check(&self) -> Result<()> {
        if self.wave_skew == Some(0) {
            return Err(Error::Invalid(
                "the wavefront skew must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Parses N comma-separated counts, such as a tile shape `8,8,32`; `names`
/// (e.g. `TB,TU,KC`) goes into the error.
pub fn parse_counts<const N: usize>(s: &str, names: &str) -> std::result::Result<[u32; N], String> {
    let v: Vec<u32> = s
        .split(',')
        .map(|x| x.trim().parse::<u32>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("`{s}`: {e} (expected {names})"))?;
    v.try_into()
        .map_err(|_| format!("`{s}`: expected {N} numbers {names}"))
}

/// Which GEMM kernel runs (see [`crate::kernels::gemm`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmVariant {
    /// Entry point `gemm`: a 4x4 register block per invocation, operands
    /// read from global memory, no barriers.
    Block,
    /// Entry point `gemm_tiled`: shared-memory tiles of A and B, a 4x4 block
    /// per invocation read from them.
    Tiled,
    /// Entry point `gemm_sg` where the operands allow vec4 loads (else
    /// `gemm`): one 8-lane subgroup per workgroup shares its rows of A
    /// through subgroup broadcasts; needs 8-wide subgroups.
    Subgroup,
}

impl GemmVariant {
    /// Parses `block`, `tiled` or `subgroup`.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "block" => Ok(Self::Block),
            "tiled" => Ok(Self::Tiled),
            "subgroup" => Ok(Self::Subgroup),
            other => Err(format!(
                "unknown GEMM variant `{other}` (block, tiled or subgroup)"
            )),
        }
    }

    /// The name [`GemmVariant::parse`] accepts.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Tiled => "tiled",
            Self::Subgroup => "subgroup",
        }
    }
}

impl std::fmt::Display for GemmVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Tile shape of the tiled GEMM, passed to the shader as the
/// pipeline-overridable constants `WG_M`, `WG_N` and `TK`. A workgroup of
/// `wg_n` x `wg_m` invocations computes a `4·wg_m` x `4·wg_n` tile of C,
/// staging `tk`-deep slices of A and B in workgroup memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TileShape {
    /// Invocations along M.
    pub wg_m: u32,
    /// Invocations along N.
    pub wg_n: u32,
    /// Depth of the K slice staged per step.
    pub tk: u32,
}

impl TileShape {
    /// Parses `WG_M,WG_N,TK`.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let [wg_m, wg_n, tk] = parse_counts(s, "WG_M,WG_N,TK")?;
        Ok(Self { wg_m, wg_n, tk })
    }

    /// 64x64 tiles of C from 16x16 invocations, K slices of 16 (8 KiB of
    /// workgroup memory).
    pub const DEFAULT: Self = Self {
        wg_m: 16,
        wg_n: 16,
        tk: 16,
    };
}

/// Which per-step cell kernels run (same bindings, same results to
/// rounding; see [`crate::kernels::lstm_cell`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CellVariant {
    /// One invocation per (b, j), reading W_hh and h from global memory.
    Direct,
    /// A workgroup per TB x TU block of (b, j) (8 x 8, or 16 x 16 for
    /// large dispatches), staging the recurrent product through workgroup
    /// memory.
    Tiled,
}

impl CellVariant {
    /// Parses `direct` or `tiled`.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "direct" => Ok(Self::Direct),
            "tiled" => Ok(Self::Tiled),
            other => Err(format!("unknown cell variant `{other}` (direct or tiled)")),
        }
    }
}

/// Tile of the tiled cell: a workgroup of `tb`·`tu`·`ks` invocations owns
/// `tb` batch rows x `tu` hidden units and stages the recurrent product in
/// K chunks of `kc`, `ks` chunks at a time. Substituted into the shader's
/// constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TileConfig {
    /// Batch rows per workgroup.
    pub tb: usize,
    /// Hidden units per workgroup.
    pub tu: usize,
    /// K chunk staged per barrier, per slice.
    pub kc: usize,
    /// K slices: groups of `tb`·`tu` invocations taking every `ks`-th chunk.
    pub ks: usize,
}

impl TileConfig {
    /// 8 x 8 with K chunks of 32, in 4 slices (256 invocations).
    pub const DEFAULT: Self = Self {
        tb: 8,
        tu: 8,
        kc: 32,
        ks: 4,
    };

    /// 16 x 16 with K chunks of 32, in 2 slices (512 invocations): a
    /// quarter of the default's W_hh and h traffic per output, for shapes
    /// whose grid stays full with it
    /// ([`crate::kernels::lstm_cell::LARGE_TILE_MIN_GROUPS`] a lane). On an
    /// H200, `big` (H = 512, B = 64): 23.4 ms per training step against
    /// 27.1 ms with the default; `char` (H = 256, B = 32, 32 workgroups a
    /// lane) 4.7 against 3.7 ms.
    pub const LARGE: Self = Self {
        tb: 16,
        tu: 16,
        kc: 32,
        ks: 2,
    };

    /// Parses `TB,TU,KC,KS`.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let [tb, tu, kc, ks] = parse_counts(s, "TB,TU,KC,KS")?.map(|x| x as usize);
        Ok(Self { tb, tu, kc, ks })
    }
}

/// Which kernel runs the recurrent time loop of the plain cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CellPath {
    /// One fused cell dispatch per (layer, direction, step).
    PerStep,
    /// One dispatch per layer and pass looping over the steps
    /// (`lstm_persistent.wgsl`), split into chunks only where the driver
    /// caps loop iterations.
    Persistent,
    /// Per-step cells with the layers in a wavefront: layer l + 1 at step
    /// s − C shares a dispatch with layer l at step s (`schedule.rs`).
    Wavefront,
}

impl CellPath {
    /// `"per-step"`, `"persistent"` or `"wavefront"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CellPath::PerStep => "per-step",
            CellPath::Persistent => "persistent",
            CellPath::Wavefront => "wavefront",
        }
    }

    /// Parses [`CellPath::as_str`]'s names.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "per-step" => Ok(CellPath::PerStep),
            "persistent" => Ok(CellPath::Persistent),
            "wavefront" => Ok(CellPath::Wavefront),
            _ => Err(Error::Invalid(format!(
                "unknown cell path `{s}`: expected `per-step`, `persistent` or `wavefront`"
            ))),
        }
    }
}

impl std::fmt::Display for CellPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
