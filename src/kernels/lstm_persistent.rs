//! Wrapper of `shaders/lstm_persistent.wgsl`: the persistent time loop. One
//! dispatch runs every step of a layer (both directions, every sequence:
//! one workgroup per chain) forward, and one runs them all backward
//! including the initial-state gradients, where the per-step cell
//! ([`super::lstm_cell`]) needs T and T + 1 dispatches per direction.
//!
//! The loop is written once and joined with a cell's pointwise functions
//! ([`source`]), as the per-step strategies are: the LSTM, the GRU,
//! IndRNN and cell files run on it. It writes the per-step kernel's cache
//! and gradient layouts, so the schedule swaps one for the other without
//! touching anything else.

use super::cell::Cell;
use super::lstm_cell::{BWD_BINDINGS, CellShape, FWD_BINDINGS};
use super::u32_of;
use super::wgsl::{shader, wgsl_struct};
use crate::gpu::{Dispatch, GpuContext, Kernel, module};
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub use crate::gpu::tuning::CellPath;

/// The loop joined with `cell`'s pointwise functions, as its pipelines
/// compile it (its uniform structs declared from [`PersistentUniform`]).
pub fn source(cell: Cell) -> String {
    super::wgsl::cell_source::<PersistentUniform>(
        shader!("common/prelude.wgsl"),
        cell,
        shader!("common/cell_bindings.wgsl", "lstm_persistent.wgsl"),
    )
}

wgsl_struct! {
    /// One direction's offsets in [`PersistentUniform`].
    pub struct PersistentDir = "Dir" {
        pre_off: u32, whh_off: u32, cache_off: u32, dg_off: u32,
        state_off: u32, out_col: u32, reverse: u32, bhh_off: u32,
        dx_off: u32, _p0: u32, _p1: u32, _p2: u32,
    }
}

wgsl_struct! {
    /// The uniform block of `lstm_persistent.wgsl`.
    pub struct PersistentUniform = "Params" {
        batch: u32, seq: u32, s_begin: u32, s_end: u32,
        out_stride: u32, state_stride: u32, bhh: u32, _p1: u32,
        dirs: [PersistentDir; 2],
    }
}

/// Largest workgroup the kernel asks for; every WebGPU adapter offers 256.
const MAX_WG: usize = 256;

/// The most loop iterations one shader invocation may run on this adapter,
/// when the driver caps them: Mesa's llvmpipe (lavapipe) silently ends all
/// loops of an invocation after 65,535 iterations in total, counted over
/// every loop it runs (nested and consecutive alike; barriers do not reset
/// the count). Real GPUs have no such cap.
pub fn loop_iteration_cap(info: &wgpu::AdapterInfo) -> Option<usize> {
    let llvmpipe = |s: &str| s.to_ascii_lowercase().contains("llvmpipe");
    (llvmpipe(&info.name) || llvmpipe(&info.driver)).then_some(65_535)
}

/// Whether `cell`'s W_hh (G·H x H) fits in workgroup memory with a quarter
/// of it to spare beside the kernel's other arrays, so that the driver can
/// still keep more than one workgroup resident. A diagonal W_hh (the
/// vector u, H floats read once per step like the pre-gates) counts as on
/// chip: the loop reads nothing larger from memory.
pub fn w_on_chip(ctx: &GpuContext, cell: Cell, hidden: usize) -> bool {
    let shared = ctx.limits.max_compute_workgroup_storage_size as usize;
    let base = Spec::base_bytes(cell, hidden);
    match cell.diag() {
        true => base <= shared / 4 * 3,
        false => base + Spec::w_bytes(cell, hidden) <= shared / 4 * 3,
    }
}

/// Specialisation of the kernel for one cell and hidden size on one
/// adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Spec {
    /// The cell whose functions the loop joins.
    pub cell: Cell,
    /// Hidden size H.
    pub hidden: usize,
    /// Invocations per workgroup.
    pub wg: usize,
    /// W_hh is copied into workgroup memory (never a diagonal one).
    pub w_shared: bool,
}

impl Spec {
    fn units(&self) -> usize {
        self.hidden.div_ceil(self.wg)
    }

    fn hp(&self) -> usize {
        self.hidden.next_multiple_of(4)
    }

    fn gates(&self) -> usize {
        self.cell.gates()
    }

    /// Workgroup memory of the larger entry point, without W_hh.
    fn base_bytes(cell: Cell, h: usize) -> usize {
        let hp = h.next_multiple_of(4);
        let fwd = 3 * hp + 1;
        let bwd = cell.gates() * h + 2 * hp + 1;
        4 * fwd.max(bwd)
    }

    fn w_bytes(cell: Cell, h: usize) -> usize {
        4 * cell.gates() * h * h.next_multiple_of(4)
    }

    /// Upper bounds on the loop iterations of one invocation (each loop
    /// counted with two extra evaluations of its condition): before the
    /// first step, per step, and after the last, forward and backward.
    fn iterations(&self) -> ([usize; 3], [usize; 3]) {
        let (h, wg, units) = (self.hidden, self.wg, self.units());
        let gh = self.gates() * h;
        let hp4 = self.hp() / 4;
        let lp = |n: usize| n + 2;
        let w_load = if self.w_shared {
            lp((gh * hp4).div_ceil(wg))
        } else {
            0
        };
        let dot = match (self.cell.diag(), self.w_shared) {
            (true, _) => 0,
            (false, true) => lp(hp4),
            (false, false) => lp(h / 4) + lp(h % 4),
        };
        let fwd_setup = w_load + lp(self.hp().div_ceil(wg)) + lp(units);
        let fwd_step = 1 + lp(units) + units * dot;
        let matvec = match self.cell.diag() {
            true => lp(units),
            false => lp(hp4.div_ceil(wg)) + hp4.div_ceil(wg) * (lp(gh / 4) + lp(gh % 4)),
        };
        let bwd_setup = w_load + lp(gh.div_ceil(wg)) + 2 * lp(units) + matvec;
        let bwd_step = 1 + lp(units) + matvec;
        ([fwd_setup, fwd_step, 0], [bwd_setup, bwd_step, lp(units)])
    }

    fn constants(&self) -> Vec<(&'static str, f64)> {
        let (h, hp) = (self.hidden, self.hp());
        vec![
            ("H", h as f64),
            ("WG", self.wg as f64),
            ("UNITS", self.units() as f64),
            ("HP", hp as f64),
            ("HP4", (hp / 4) as f64),
            ("H2", (2 * hp) as f64),
            ("GH", (self.gates() * h) as f64),
            ("W_SHARED", f64::from(u8::from(self.w_shared))),
            (
                "W_LEN",
                if self.w_shared {
                    (self.gates() * h * hp / 4) as f64
                } else {
                    1.0
                },
            ),
        ]
    }
}

/// How a layer's time loop runs on the persistent path: the kernel
/// specialisation and the steps per dispatch forward and backward (T on
/// adapters without a loop cap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PersistentLayout {
    /// The kernel specialisation.
    pub spec: Spec,
    /// Steps per forward dispatch.
    pub fwd_chunk: usize,
    /// Steps per backward dispatch.
    pub bwd_chunk: usize,
    /// Sequence length T.
    pub seq: usize,
}

impl PersistentLayout {
    /// Forward dispatches per layer.
    pub fn fwd_dispatches(&self) -> usize {
        self.seq.div_ceil(self.fwd_chunk)
    }

    /// Backward dispatches per layer (initial-state gradients included).
    pub fn bwd_dispatches(&self) -> usize {
        self.seq.div_ceil(self.bwd_chunk)
    }
}

/// The persistent kernel family, compiled per [`Spec`] on first use.
#[derive(Default)]
pub struct LstmPersistent {
    /// Per cell ([`Cell::key`]), compiled on the first plan that takes the
    /// persistent path with it.
    modules: Mutex<HashMap<String, Arc<crate::gpu::Module>>>,
    kernels: Mutex<HashMap<Spec, Arc<[Kernel; 2]>>>,
    /// Steps per dispatch at most, 0 for no limit of our own.
    max_chunk: AtomicUsize,
}

impl LstmPersistent {
    /// Compiles nothing: the module and the pipelines of each hidden size
    /// are built by the first plan that needs them.
    pub fn new() -> Self {
        Self::default()
    }

    /// Caps the steps per dispatch below what the adapter allows (`None`:
    /// no cap of our own), so that tests exercise chunked time loops on any
    /// adapter. Applies to plans built afterwards.
    pub fn set_max_chunk(&self, steps: Option<usize>) {
        self.max_chunk
            .store(steps.map_or(0, |s| s.max(1)), Ordering::Relaxed);
    }

    /// How the persistent path would run `cell` with H = `hidden` over
    /// `seq` steps of `batch` sequences in `dirs` directions on this
    /// adapter, or why it cannot (workgroup memory, grid or loop-cap
    /// limits).
    pub fn layout(
        &self,
        ctx: &GpuContext,
        cell: Cell,
        hidden: usize,
        batch: usize,
        dirs: usize,
        seq: usize,
    ) -> Result<PersistentLayout> {
        let lim = &ctx.limits;
        let cannot = |why: String| {
            Err(Error::Invalid(format!(
                "the persistent cell path cannot run H = {hidden}, B = {batch}, T = {seq} on \
                 this adapter: {why}"
            )))
        };
        let max_wg = MAX_WG
            .min(lim.max_compute_invocations_per_workgroup as usize)
            .min(lim.max_compute_workgroup_size_x as usize);
        // Whole SIMD groups of 32, no more than the hidden units need.
        let wg = hidden.next_multiple_of(32).min(max_wg).max(1);
        let grid = lim.max_compute_workgroups_per_dimension as usize;
        if batch > grid || dirs > grid {
            return cannot(format!("{batch} workgroups exceed the grid limit {grid}"));
        }
        let shared = lim.max_compute_workgroup_storage_size as usize;
        let base = Spec::base_bytes(cell, hidden);
        if base > shared {
            return cannot(format!(
                "it needs {base} bytes of workgroup memory, the adapter has {shared}"
            ));
        }
        let w_shared = !cell.diag() && w_on_chip(ctx, cell, hidden);
        let spec = Spec {
            cell,
            hidden,
            wg,
            w_shared,
        };
        let (f, b) = spec.iterations();
        let chunk = |it: [usize; 3]| -> Option<usize> {
            let mut c = seq.max(1);
            if let Some(cap) = loop_iteration_cap(&ctx.info) {
                // A sixteenth of margin on top of the bounds above.
                let budget = (cap - cap / 16).checked_sub(it[0] + it[2])?;
                c = c.min(budget / it[1]);
            }
            let m = self.max_chunk.load(Ordering::Relaxed);
            if m > 0 {
                c = c.min(m);
            }
            (c > 0).then_some(c)
        };
        match (chunk(f), chunk(b)) {
            (Some(fwd_chunk), Some(bwd_chunk)) => Ok(PersistentLayout {
                spec,
                fwd_chunk,
                bwd_chunk,
                seq,
            }),
            _ => cannot("one step needs more loop iterations than the driver allows".into()),
        }
    }

    fn kernels(&self, ctx: &GpuContext, spec: Spec) -> Arc<[Kernel; 2]> {
        let mut cache = self.kernels.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(spec)
            .or_insert_with(|| {
                let c = spec.constants();
                let m = self.module(ctx, spec.cell);
                let fwd = Kernel::new(ctx, &m, "forward", &FWD_BINDINGS, &c);
                let bwd = Kernel::new(ctx, &m, "backward", &BWD_BINDINGS, &c);
                Arc::new([fwd, bwd])
            })
            .clone()
    }

    /// The loop joined with `cell`, compiled once per cell (a cell file's
    /// with wgpu's loop-bounding counters, as the per-step kernels).
    fn module(&self, ctx: &GpuContext, cell: Cell) -> Arc<crate::gpu::Module> {
        let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        modules
            .entry(cell.key())
            .or_insert_with(|| {
                let compile = match cell.custom() {
                    Some(_) => crate::gpu::module_bounded,
                    None => module,
                };
                Arc::new(compile(ctx, "lstm_persistent", &source(cell)))
            })
            .clone()
    }

    /// The uniform block of the steps [s_begin, s_end) of the directions
    /// `shapes` (one or two, as [`CellShape`]s of the per-step kernel).
    fn params(shapes: &[CellShape], s_begin: usize, s_end: usize) -> Result<PersistentUniform> {
        let s = &shapes[0];
        let mut p = PersistentUniform {
            batch: u32_of("batch", s.batch)?,
            seq: u32_of("sequence length", s.seq)?,
            s_begin: u32_of("step", s_begin)?,
            s_end: u32_of("step", s_end)?,
            out_stride: u32_of("output stride", s.out_stride)?,
            state_stride: u32_of("state stride", s.state_stride)?,
            bhh: u32::from(s.bhh_off.is_some()),
            ..Default::default()
        };
        // A missing second direction stays zero.
        for (d, s) in p.dirs.iter_mut().zip(shapes) {
            *d = PersistentDir {
                pre_off: u32_of("pre-gates offset", s.pre_off)?,
                whh_off: u32_of("W_hh offset", s.whh_off)?,
                cache_off: u32_of("cache offset", s.cache_off)?,
                dg_off: u32_of("gradient offset", s.dg_off)?,
                state_off: u32_of("state offset", s.state_off)?,
                out_col: u32_of("output column", s.out_col)?,
                reverse: u32::from(s.reverse),
                bhh_off: u32_of("b_hh offset", s.bhh_off.unwrap_or(0))?,
                dx_off: u32_of("dx offset", s.dx_off)?,
                ..Default::default()
            };
        }
        Ok(p)
    }

    fn check(lay: &PersistentLayout, shapes: &[CellShape]) -> Result<()> {
        let ok = matches!(shapes.len(), 1 | 2)
            && shapes.iter().all(|s| {
                s.hidden == lay.spec.hidden
                    && s.seq == lay.seq
                    && s.batch == shapes[0].batch
                    && s.out_stride == shapes[0].out_stride
                    && s.state_stride == shapes[0].state_stride
            });
        if ok {
            Ok(())
        } else {
            Err(Error::Invalid(
                "persistent cell: the directions' shapes differ from the layout".into(),
            ))
        }
    }

    /// The time loop of one layer, every direction in `shapes` at once,
    /// one dispatch per chunk of steps in the order the chunks run: forward
    /// (`lay.fwd_dispatches()`, `bufs` a
    /// [`super::lstm_cell::CellForward::buffers`]), or `backward` with the
    /// initial-state gradients (`lay.bwd_dispatches()`, last steps first,
    /// `bufs` a [`super::lstm_cell::CellBackward::buffers`]).
    pub fn pass(
        &self,
        ctx: &GpuContext,
        lay: &PersistentLayout,
        shapes: &[CellShape],
        backward: bool,
        bufs: &[&wgpu::Buffer],
    ) -> Result<Vec<Dispatch>> {
        Self::check(lay, shapes)?;
        let k = &self.kernels(ctx, lay.spec)[usize::from(backward)];
        let groups = (shapes[0].batch as u32, shapes.len() as u32);
        let chunk = match backward {
            true => lay.bwd_chunk,
            false => lay.fwd_chunk,
        };
        let mut starts: Vec<usize> = (0..lay.seq).step_by(chunk).collect();
        if backward {
            starts.reverse();
        }
        starts
            .into_iter()
            .map(|s0| {
                let p = Self::params(shapes, s0, (s0 + chunk).min(lay.seq))?;
                Ok(k.dispatch(ctx, &p, bufs, groups))
            })
            .collect()
    }
}
