//! Wrapper of `shaders/lstm_cell.wgsl`: the fused LSTM cell, forward and
//! backward, one dispatch per step covering up to [`MAX_LANES`] (layer,
//! direction, step) lanes.

use super::cell::{Cell, LSTM_GATES};
use super::u32_of;
use super::wgsl::{shader, wgsl_struct};
use crate::Result;
use crate::gpu::{Binding, Dispatch, GpuContext, Kernel, module};

/// Storage bindings of the forward entry points (the buffers of
/// [`CellForward::buffers`]); the persistent kernel shares them.
pub const FWD_BINDINGS: [(u32, Binding); 7] = [
    (1, Binding::Read),
    (2, Binding::Read),
    (3, Binding::Read),
    (4, Binding::Read),
    (5, Binding::ReadWrite),
    (6, Binding::ReadWrite),
    (7, Binding::ReadWrite),
];

/// Storage bindings of the backward entry points (the buffers of
/// [`CellBackward::buffers`]); the persistent kernel shares them.
pub const BWD_BINDINGS: [(u32, Binding); 8] = [
    (2, Binding::Read),
    (3, Binding::Read),
    (4, Binding::Read),
    (6, Binding::ReadWrite),
    (8, Binding::Read),
    (9, Binding::Read),
    (10, Binding::ReadWrite),
    (11, Binding::ReadWrite),
];

/// Extra bindings of the direct forward: vec4 views of W_hh, h0 and the
/// layer output (the buffers of bindings 2, 3 and 5).
const DIRECT_FWD_EXTRA: [(u32, Binding); 3] = [
    (12, Binding::Read),
    (13, Binding::Read),
    (14, Binding::ReadWrite),
];
/// Extra bindings of the direct backward: vec4 views of W_hh and dgates.
const DIRECT_BWD_EXTRA: [(u32, Binding); 2] = [(12, Binding::Read), (15, Binding::ReadWrite)];
/// The c section of the cache (the cache itself in f32, its own buffer in
/// f16-mixed), last in every entry point's bindings.
const CST_BINDING: (u32, Binding) = (16, Binding::ReadWrite);
/// The dc section of the gradient block (the gradient buffer itself in f32,
/// its own buffer in f16-mixed), last in the backward entry points'
/// bindings.
const DCS_BINDING: (u32, Binding) = (17, Binding::ReadWrite);
/// Zoneout's bindings, in every entry point: the dropout step's words
/// (its masks' seed and counter) and the zoneout sections (see
/// [`Zone`]).
const ZONE_BINDINGS: [(u32, Binding); 2] = [(18, Binding::Read), (19, Binding::ReadWrite)];
wgsl_struct! {
    /// One lane's parameters in the uniform block of `lstm_cell.wgsl` (an
    /// array of [`MAX_LANES`]).
    pub struct CellUniform = "Params" {
        h: u32, batch: u32, seq: u32, step: u32,
        reverse: u32, out_stride: u32, out_col: u32, pre_off: u32,
        whh_off: u32, cache_off: u32, dg_off: u32, state_off: u32,
        state_stride: u32, lanes: u32, wide: u32, c_off: u32,
        dc_off: u32, bhh_off: u32, bhh: u32, dx_off: u32,
        zone: u32, zcell: u32, zh_thr: u32, zc_thr: u32,
        zh_stream: u32, zc_stream: u32, zu_off: u32, zh_off: u32,
        zc_off: u32, zh_p: f32, zc_p: f32, zpad: u32,
    }
}

/// Zoneout of one (layer, direction) time loop (the shader's `ZONE_*`
/// flags): probabilities of keeping the previous h and c (0: off), train
/// (masks from the dropout step) or eval (the expectation), and where its
/// sections lie in the buffer bound as [`CellForward::zst`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Zone {
    /// Zoneout probability of h.
    pub h: f32,
    /// Zoneout probability of c (cells with a c state).
    pub c: f32,
    /// Train mode: masks drawn; else m = p.
    pub train: bool,
    /// The cell's state is h alone: its carried gradient is h's.
    pub h_only: bool,
    /// The (layer, direction) index l·D + d, the masks' first coordinate.
    pub cell: usize,
    /// Dropout streams of the h and c masks.
    pub streams: (u32, u32),
    /// Offset of the un-zoned c [T, B, H] of this (layer, direction).
    pub cu_off: usize,
    /// Offsets of the gradients carried straight back a step, of h and of
    /// c, [T, B, H] each, of this gradient region.
    pub dh_off: usize,
    /// See `dh_off`.
    pub dc_off: usize,
}

impl Zone {
    /// Whether zoneout is on.
    pub fn on(&self) -> bool {
        self.h > 0.0 || self.c > 0.0
    }

    /// The shader's flags.
    fn flags(&self) -> u32 {
        let mut f = 0;
        if self.h > 0.0 {
            f |= 1;
            if self.h_only {
                f |= 8;
            }
        }
        if self.c > 0.0 {
            f |= 2;
        }
        if f != 0 && !self.train {
            f |= 4;
        }
        f
    }
}

/// Which entry point a dispatch runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Entry {
    Forward,
    Backward,
    State,
}

/// Batch rows per invocation of the direct variant's wide (vec4) path: the
/// shader's `RB`.
const WIDE_ROWS: usize = 8;

/// Invocations per workgroup of the direct variant.
const WG: usize = 64;
/// The subgroup width of the `*_sg` entry points.
const SG_WIDTH: u32 = 8;
/// Batch rows a subgroup of the `*_sg` entry points owns: the shader's `SR`.
const SG_ROWS: usize = 32;
/// Workgroups of [`TileConfig::LARGE`] per lane from which tiled dispatches
/// use that tile: about one per streaming multiprocessor of a large GPU (an
/// H100 or H200 has 132), below which the default tile's 4x more workgroups
/// win.
pub const LARGE_TILE_MIN_GROUPS: usize = 128;
/// Lanes ((layer, direction, step) triples) one dispatch can cover: the
/// shader's `LANES`.
pub const MAX_LANES: usize = 8;
pub use crate::gpu::tuning::{CellVariant, TileConfig};

impl TileConfig {
    /// Workgroups of one lane of H = `hidden`, B = `batch` with this tile.
    pub fn groups(&self, hidden: usize, batch: usize) -> usize {
        hidden.div_ceil(self.tu) * batch.div_ceil(self.tb)
    }

    /// Checks the shader's divisibility rules and the adapter's limits.
    pub fn check(&self, limits: &wgpu::Limits) -> Result<()> {
        let bad = |m: String| Err(crate::Error::Invalid(format!("cell tile {self:?}: {m}")));
        if self.tb == 0 || self.tu == 0 || self.kc == 0 || self.ks == 0 {
            return bad("sizes must be positive".into());
        }
        if !self.kc.is_multiple_of(self.tb) || !self.kc.is_multiple_of(self.tu) {
            return bad("KC must be a multiple of TB and TU".into());
        }
        let wgs = self.tb * self.tu * self.ks;
        // The shader's workgroup is one-dimensional: WGS = TB·TU·KS wide.
        if wgs > limits.max_compute_invocations_per_workgroup as usize
            || wgs > limits.max_compute_workgroup_size_x as usize
        {
            return bad(format!(
                "{wgs} invocations exceed the adapter's workgroup limits"
            ));
        }
        let shared = 4 * (self.ks * (self.tb + LSTM_GATES * self.tu) * (self.kc + 1) + 2 * self.tb);
        if shared > limits.max_compute_workgroup_storage_size as usize {
            return bad(format!(
                "{shared} bytes of workgroup memory exceed the adapter's limit"
            ));
        }
        Ok(())
    }

    /// The shader source with this tile's constants; with `half`, the
    /// f16-mixed build (f16 W_hh, cache gates and h_prev, and dgates; c and
    /// dc apart).
    pub fn source(&self, half: bool) -> String {
        self.source_of(Cell::Lstm, half)
    }

    /// The same with `cell`'s pointwise functions.
    pub fn source_of(&self, cell: Cell, half: bool) -> String {
        let src = self.f32_source(cell);
        match half {
            false => src,
            true => crate::gpu::half_source(&src, &["WT", "GT", "DGT"], &[("HALF", "true")]),
        }
    }

    fn f32_source(&self, cell: Cell) -> String {
        let base = super::wgsl::cell_source::<CellUniform>(
            shader!("common/prelude.wgsl", "common/philox.wgsl"),
            cell,
            shader!("lstm_cell.wgsl"),
        );
        [
            ("TB", self.tb),
            ("TU", self.tu),
            ("KC", self.kc),
            ("KS", self.ks),
        ]
        .iter()
        .fold(base, |src, (name, v)| {
            crate::gpu::set_decl(&src, "const", name, &format!("{v}u"))
        })
    }
}

impl CellVariant {
    /// Direct on CPU adapters (measured on lavapipe: `ts` 495 ms per step
    /// direct, 910 ms tiled) and tiled on GPUs (H100: the tiled kernels take
    /// `char` from 25 ms to 8.7 ms).
    pub fn for_adapter(info: &wgpu::AdapterInfo) -> Self {
        if crate::gpu::cpu_adapter(info) {
            Self::Direct
        } else {
            Self::Tiled
        }
    }
}

/// The cell's three entry points, of one variant.
pub struct LstmCell {
    fwd: Kernel,
    bwd: Kernel,
    bwd_state: Kernel,
    /// `forward_sg`, `backward_sg`, `backward_state_sg`: the direct
    /// variant's wide path with subgroup broadcasts, built when the device
    /// has 8-lane subgroups.
    sg: Option<[Kernel; 3]>,
    /// The variant compiled.
    pub variant: CellVariant,
    /// The tiled variant's tile: the only one when a tile was set, else the
    /// one for lanes too small for [`TileConfig::LARGE`].
    pub tile: TileConfig,
    /// The tiled variant's entry points with [`TileConfig::LARGE`], used for
    /// dispatches of at least [`LARGE_TILE_MIN_GROUPS`] large tiles; built
    /// unless a tile was set.
    large: Option<[Kernel; 3]>,
    /// The f16-mixed build: W_hh read from the f16 shadow of the
    /// parameters, the cache's gates and h_prev and the gate gradients
    /// stored as f16.
    pub half: bool,
    /// The cell whose pointwise functions it joins.
    pub cell: Cell,
}

/// Shape and offsets (in elements) of one (layer, direction) time loop.
#[derive(Clone, Copy, Debug)]
pub struct CellShape {
    /// Hidden size H.
    pub hidden: usize,
    /// Batch B.
    pub batch: usize,
    /// Sequence length T.
    pub seq: usize,
    /// Reverse direction.
    pub reverse: bool,
    /// Row stride of the layer output (D·H).
    pub out_stride: usize,
    /// First column of this direction in the layer output (dir·H).
    pub out_col: usize,
    /// Offset of this direction's pre-gates [T, B, G·H].
    pub pre_off: usize,
    /// Offset of W_hh [G·H, H] in the parameter buffer.
    pub whh_off: usize,
    /// Offset of this (layer, direction)'s cache block (see
    /// [`super::cell`]): gates | c | h_prev in f32, gates | h_prev (f16)
    /// in f16-mixed.
    pub cache_off: usize,
    /// Offset of its c section [T, B, H] in the buffer bound as
    /// [`CellForward::cst`].
    pub c_off: usize,
    /// Offset of this direction's gate gradients [T, B, G·H] (in f32 the
    /// gradient block: dgates | dc).
    pub dg_off: usize,
    /// Offset of its W_ih gate gradients (the dx section) in the gradient
    /// buffer, for cells that keep them apart ([`Cell::split_dg`]).
    pub dx_off: usize,
    /// Offset of b_hh in the parameter buffer, for cells that add it
    /// themselves ([`Cell::own_bhh`]); None without biases.
    pub bhh_off: Option<usize>,
    /// Offset of its dc [T, B, H] in the buffer bound as
    /// [`CellBackward::dcs`] (f32: `dg_off` + T·B·G·H).
    pub dc_off: usize,
    /// Offset of this (layer, direction) in the state arrays ((l·D + d)·B·H).
    pub state_off: usize,
    /// Distance between the h and c halves of the state arrays (L·D·B·H).
    pub state_stride: usize,
    /// Zoneout (off by default).
    pub zone: Zone,
}

/// Buffers of the forward step.
pub struct CellForward<'a> {
    /// Pre-gates x·W_ih^T + b_ih + b_hh.
    pub pre: &'a wgpu::Buffer,
    /// Parameters.
    pub params: &'a wgpu::Buffer,
    /// h0 | c0.
    pub state_in: &'a wgpu::Buffer,
    /// Sequence lengths (u32).
    pub lengths: &'a wgpu::Buffer,
    /// Layer output [T, B, D·H].
    pub out: &'a wgpu::Buffer,
    /// Gate/state cache.
    pub cache: &'a wgpu::Buffer,
    /// h_n | c_n.
    pub state_out: &'a wgpu::Buffer,
    /// Holds the c sections (the cache itself in f32).
    pub cst: &'a wgpu::Buffer,
    /// The dropout step's words (zoneout's masks).
    pub rng: &'a wgpu::Buffer,
    /// Zoneout's sections ([`Zone`]); any f32 buffer when off.
    pub zst: &'a wgpu::Buffer,
}

impl CellForward<'_> {
    /// The buffers in binding order (bindings 1 to 7).
    pub fn buffers(&self) -> [&wgpu::Buffer; 7] {
        [
            self.pre,
            self.params,
            self.state_in,
            self.lengths,
            self.out,
            self.cache,
            self.state_out,
        ]
    }
}

/// Buffers of the backward step.
pub struct CellBackward<'a> {
    /// Parameters.
    pub params: &'a wgpu::Buffer,
    /// h0 | c0.
    pub state_in: &'a wgpu::Buffer,
    /// Sequence lengths (u32).
    pub lengths: &'a wgpu::Buffer,
    /// Gate/state cache written by forward.
    pub cache: &'a wgpu::Buffer,
    /// Gradient of the loss w.r.t. the layer output.
    pub dy: &'a wgpu::Buffer,
    /// grad_h_n | grad_c_n.
    pub gstate_in: &'a wgpu::Buffer,
    /// Gate gradients (and dc, in f32).
    pub dg: &'a wgpu::Buffer,
    /// grad_h0 | grad_c0.
    pub gstate_out: &'a wgpu::Buffer,
    /// Holds the c sections, as in [`CellForward::cst`].
    pub cst: &'a wgpu::Buffer,
    /// Holds the dc sections (`dg` itself in f32).
    pub dcs: &'a wgpu::Buffer,
    /// As in [`CellForward::rng`].
    pub rng: &'a wgpu::Buffer,
    /// As in [`CellForward::zst`].
    pub zst: &'a wgpu::Buffer,
}

impl CellBackward<'_> {
    /// The buffers in binding order ([`BWD_BINDINGS`]).
    pub fn buffers(&self) -> [&wgpu::Buffer; 8] {
        [
            self.params,
            self.state_in,
            self.lengths,
            self.cache,
            self.dy,
            self.gstate_in,
            self.dg,
            self.gstate_out,
        ]
    }
}

impl LstmCell {
    /// Compiles the entry points of `variant`, built for `half` (see
    /// [`LstmCell::half`]; the f16 build needs the device's SHADER_F16).
    /// With `tile`, that tile (checked against the adapter's limits) shapes
    /// every dispatch of the tiled variant; without, the default tile does,
    /// and [`TileConfig::LARGE`] large dispatches where the adapter allows
    /// it. The `*_sg` entry points are built when `subgroups` and the device
    /// has 8-lane subgroups.
    pub fn new(
        ctx: &GpuContext,
        cell: Cell,
        variant: CellVariant,
        tile: Option<TileConfig>,
        half: bool,
        subgroups: bool,
    ) -> Result<Self> {
        let (tile, large) = match tile {
            Some(t) => {
                t.check(&ctx.limits)?;
                (t, false)
            }
            None => (
                TileConfig::DEFAULT,
                TileConfig::LARGE.check(&ctx.limits).is_ok(),
            ),
        };
        let sg = subgroups && ctx.subgroup == Some(SG_WIDTH);
        if cell.diag() && variant != CellVariant::Direct {
            return Err(crate::Error::Invalid(format!(
                "the {} cell runs on the direct cell variant only",
                cell.module()
            )));
        }
        if half && cell.diag() {
            return Err(crate::Error::Invalid(format!(
                "f16-mixed precision serves the LSTM and GRU cells; the {} runs in f32",
                cell.module()
            )));
        }
        Ok(Self::build(ctx, cell, variant, tile, large, half, sg))
    }

    /// The tile of tiled dispatches of this H and B. Decided per lane, not
    /// per dispatch, so that a layer's steps get the same tile however many
    /// lanes share their dispatches: the wavefront then keeps giving the
    /// bits of the layer-by-layer schedule.
    pub fn tile_for(&self, hidden: usize, batch: usize) -> TileConfig {
        let large = TileConfig::LARGE;
        match self.large.is_some() && large.groups(hidden, batch) >= LARGE_TILE_MIN_GROUPS {
            true => large,
            false => self.tile,
        }
    }

    /// The forward, backward and initial-state kernels of module `m` whose
    /// entry points end in `suffix`.
    fn entries(
        ctx: &GpuContext,
        m: &crate::gpu::Module,
        suffix: &str,
        fb: &[(u32, Binding)],
        bb: &[(u32, Binding)],
    ) -> [Kernel; 3] {
        [
            Kernel::new(ctx, m, &format!("forward{suffix}"), fb, &[]),
            Kernel::new(ctx, m, &format!("backward{suffix}"), bb, &[]),
            Kernel::new(ctx, m, &format!("backward_state{suffix}"), bb, &[]),
        ]
    }

    fn build(
        ctx: &GpuContext,
        cell: Cell,
        variant: CellVariant,
        tile: TileConfig,
        large: bool,
        half: bool,
        sg: bool,
    ) -> Self {
        let with_sg = variant == CellVariant::Direct && sg;
        let src = match with_sg {
            true => tile.source_of(cell, half),
            false => crate::gpu::without_subgroups(&tile.source_of(cell, half)),
        };
        // A cell file's loops keep wgpu's bounding counters.
        let compile = match cell.custom() {
            Some(_) => crate::gpu::module_bounded,
            None => module,
        };
        let m = compile(ctx, "lstm_cell", &src);
        let suffix = match variant {
            CellVariant::Direct => "",
            CellVariant::Tiled => "_tiled",
        };
        let (mut fb, mut bb) = (FWD_BINDINGS.to_vec(), BWD_BINDINGS.to_vec());
        if variant == CellVariant::Direct {
            fb.extend(DIRECT_FWD_EXTRA);
            bb.extend(DIRECT_BWD_EXTRA);
        }
        fb.push(CST_BINDING);
        bb.extend([CST_BINDING, DCS_BINDING]);
        fb.extend(ZONE_BINDINGS);
        bb.extend(ZONE_BINDINGS);
        let [fwd, bwd, bwd_state] = Self::entries(ctx, &m, suffix, &fb, &bb);
        let sg = with_sg.then(|| Self::entries(ctx, &m, "_sg", &fb, &bb));
        let large = (large && variant == CellVariant::Tiled).then(|| {
            let src = crate::gpu::without_subgroups(&TileConfig::LARGE.source_of(cell, half));
            let m = compile(ctx, "lstm_cell (large tile)", &src);
            Self::entries(ctx, &m, "_tiled", &fb, &bb)
        });
        Self {
            fwd,
            bwd,
            bwd_state,
            sg,
            variant,
            tile,
            large,
            half,
            cell,
        }
    }

    /// Whether the direct variant's vec4 loads can serve `lanes`: H and
    /// every offset they use multiples of 4.
    fn wide(&self, lanes: &[(CellShape, usize)]) -> bool {
        // A diagonal W_hh (IndRNN) has its own scalar product.
        self.variant == CellVariant::Direct
            && !self.cell.diag()
            && lanes.iter().all(|(s, _)| {
                [
                    s.hidden,
                    s.whh_off,
                    s.state_off,
                    s.out_stride,
                    s.out_col,
                    s.dg_off,
                ]
                .iter()
                .all(|v| v % 4 == 0)
            })
    }

    fn params(s: &CellShape, step: usize, lanes: usize, wide: bool) -> Result<CellUniform> {
        let z = &s.zone;
        let thr = |p: f32| match z.train {
            true => crate::kernels::elementwise::dropout_threshold(p),
            false => Ok(0),
        };
        Ok(CellUniform {
            h: u32_of("hidden size", s.hidden)?,
            batch: u32_of("batch", s.batch)?,
            seq: u32_of("sequence length", s.seq)?,
            step: u32_of("step", step)?,
            reverse: u32::from(s.reverse),
            out_stride: u32_of("output stride", s.out_stride)?,
            out_col: u32_of("output column", s.out_col)?,
            pre_off: u32_of("pre-gates offset", s.pre_off)?,
            whh_off: u32_of("W_hh offset", s.whh_off)?,
            cache_off: u32_of("cache offset", s.cache_off)?,
            dg_off: u32_of("gradient offset", s.dg_off)?,
            state_off: u32_of("state offset", s.state_off)?,
            state_stride: u32_of("state stride", s.state_stride)?,
            lanes: u32_of("lanes", lanes)?,
            wide: u32::from(wide),
            c_off: u32_of("c offset", s.c_off)?,
            dc_off: u32_of("dc offset", s.dc_off)?,
            bhh_off: u32_of("b_hh offset", s.bhh_off.unwrap_or(0))?,
            bhh: u32::from(s.bhh_off.is_some()),
            dx_off: u32_of("dx offset", s.dx_off)?,
            zone: z.flags(),
            zcell: u32_of("zoneout cell", z.cell)?,
            zh_thr: thr(z.h)?,
            zc_thr: thr(z.c)?,
            zh_stream: z.streams.0,
            zc_stream: z.streams.1,
            zu_off: u32_of("zoneout c offset", z.cu_off)?,
            zh_off: u32_of("zoneout dh offset", z.dh_off)?,
            zc_off: u32_of("zoneout dc offset", z.dc_off)?,
            zh_p: z.h,
            zc_p: z.c,
            zpad: 0,
        })
    }

    /// One dispatch over `lanes` (shape, step) of the same H, B and T:
    /// the directions of one layer's step, or the layers of a wavefront
    /// (grid: one invocation per (lane, b, j) for the direct variant; TU x
    /// TB blocks of (j, b), each lane's batch tiles after the previous
    /// lane's, for the tiled one).
    fn dispatches(
        &self,
        ctx: &GpuContext,
        entry: Entry,
        lanes: &[(CellShape, usize)],
        buffers: &[&wgpu::Buffer],
    ) -> Result<Vec<Dispatch>> {
        let (s0, _) = lanes
            .first()
            .ok_or_else(|| crate::Error::Invalid("cell step over no lane".into()))?;
        if lanes.len() > MAX_LANES {
            return Err(crate::Error::Invalid(format!(
                "a cell dispatch covers at most {MAX_LANES} lanes, not {}",
                lanes.len()
            )));
        }
        if lanes
            .iter()
            .any(|(s, _)| (s.hidden, s.batch, s.seq) != (s0.hidden, s0.batch, s0.seq))
        {
            return Err(crate::Error::Invalid(
                "the lanes of a cell dispatch differ in hidden size, batch or length".into(),
            ));
        }
        let wide = self.wide(lanes);
        // Lanes past the last stay zero.
        let mut params = [CellUniform::default(); MAX_LANES];
        for (p, (s, step)) in params.iter_mut().zip(lanes) {
            *p = Self::params(s, *step, lanes.len(), wide)?;
        }
        // The subgroup entry points: 8 lanes share SG_ROWS batch rows, so
        // a subgroup must not straddle two row groups (H a multiple of 8
        // forward, of 32 backward, whose lanes own 4 units), and B must be
        // large enough to fill most of a group.
        let sg = match (&self.sg, entry) {
            (Some(k), Entry::Forward) if wide && s0.hidden % 8 == 0 => Some(&k[0]),
            (Some(k), Entry::Backward) if wide && s0.hidden % 32 == 0 => Some(&k[1]),
            (Some(k), Entry::State) if wide && s0.hidden % 32 == 0 => Some(&k[2]),
            _ => None,
        }
        .filter(|_| s0.batch > SG_ROWS / 2);
        let tile = self.tile_for(s0.hidden, s0.batch);
        let kernels = match (&self.large, sg) {
            (Some(k), None) if tile == TileConfig::LARGE => [&k[0], &k[1], &k[2]],
            _ => [&self.fwd, &self.bwd, &self.bwd_state],
        };
        let kernel = match (sg, entry) {
            (Some(k), _) => k,
            (None, Entry::Forward) => kernels[0],
            (None, Entry::Backward) => kernels[1],
            (None, Entry::State) => kernels[2],
        };
        let g = match self.variant {
            CellVariant::Direct => {
                // The wide path gives each invocation WIDE_ROWS batch rows
                // of 2 units (forward) or 8 (backward); the subgroup path
                // SG_ROWS rows of 1 unit (forward) or 4 (backward).
                let (rows, units) = match (entry, wide, sg.is_some()) {
                    (Entry::Forward, _, true) => (s0.batch.div_ceil(SG_ROWS), s0.hidden),
                    (_, _, true) => (s0.batch.div_ceil(SG_ROWS), s0.hidden / 4),
                    (Entry::Forward, true, _) => (s0.batch.div_ceil(WIDE_ROWS), s0.hidden / 2),
                    (Entry::Backward | Entry::State, true, _) => {
                        (s0.batch.div_ceil(WIDE_ROWS), s0.hidden.div_ceil(8))
                    }
                    _ => (s0.batch, s0.hidden),
                };
                let n = u32_of("cell invocations", lanes.len() * rows * units)?;
                ctx.grid(n.div_ceil(WG as u32))
            }
            CellVariant::Tiled => (
                u32_of("cell tiles", s0.hidden.div_ceil(tile.tu))?,
                u32_of("cell tiles", s0.batch.div_ceil(tile.tb) * lanes.len())?,
            ),
        };
        Ok(vec![kernel.dispatch(ctx, &params, buffers, g)])
    }

    fn same_step(shapes: &[CellShape], step: usize) -> Vec<(CellShape, usize)> {
        shapes.iter().map(|s| (*s, step)).collect()
    }

    /// Forward step `step` (in each sequence's processing order) of the
    /// directions `shapes` of one layer, in one dispatch.
    pub fn forward(
        &self,
        ctx: &GpuContext,
        shapes: &[CellShape],
        step: usize,
        b: &CellForward<'_>,
    ) -> Result<Vec<Dispatch>> {
        self.forward_lanes(ctx, &Self::same_step(shapes, step), b)
    }

    /// Forward of each lane's (shape, step), in one dispatch. Lanes must
    /// not depend on each other within it.
    pub fn forward_lanes(
        &self,
        ctx: &GpuContext,
        lanes: &[(CellShape, usize)],
        b: &CellForward<'_>,
    ) -> Result<Vec<Dispatch>> {
        let mut bufs = b.buffers().to_vec();
        if self.variant == CellVariant::Direct {
            bufs.extend([b.params, b.state_in, b.out]);
        }
        bufs.extend([b.cst, b.rng, b.zst]);
        self.dispatches(ctx, Entry::Forward, lanes, &bufs)
    }

    /// The backward buffers, with the direct variant's vec4 views.
    fn direct_bwd_buffers<'a>(&self, b: &'a CellBackward<'a>) -> Vec<&'a wgpu::Buffer> {
        let mut bufs = b.buffers().to_vec();
        if self.variant == CellVariant::Direct {
            bufs.extend([b.params, b.dg]);
        }
        bufs.extend([b.cst, b.dcs, b.rng, b.zst]);
        bufs
    }

    /// Backward step `step` of the directions `shapes` of one layer; run
    /// for step = T-1 down to 0.
    pub fn backward(
        &self,
        ctx: &GpuContext,
        shapes: &[CellShape],
        step: usize,
        b: &CellBackward<'_>,
    ) -> Result<Vec<Dispatch>> {
        self.backward_lanes(ctx, &Self::same_step(shapes, step), b)
    }

    /// Backward of each lane's (shape, step), in one dispatch.
    pub fn backward_lanes(
        &self,
        ctx: &GpuContext,
        lanes: &[(CellShape, usize)],
        b: &CellBackward<'_>,
    ) -> Result<Vec<Dispatch>> {
        self.dispatches(ctx, Entry::Backward, lanes, &self.direct_bwd_buffers(b))
    }

    /// Gradients of h0 and c0 of the lanes `shapes` (any layers and
    /// directions), after their backward step 0, in one dispatch.
    pub fn backward_state(
        &self,
        ctx: &GpuContext,
        shapes: &[CellShape],
        b: &CellBackward<'_>,
    ) -> Result<Vec<Dispatch>> {
        let lanes = Self::same_step(shapes, 0);
        self.dispatches(ctx, Entry::State, &lanes, &self.direct_bwd_buffers(b))
    }
}
