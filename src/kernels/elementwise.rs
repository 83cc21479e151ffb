//! Wrapper of `shaders/elementwise.wgsl`: dropout (forward and backward),
//! residual add, dropout fused with a residual add (and its backward),
//! copy / accumulate, fill, and the gather of each sequence's last valid step
//! (with its backward scatter).
//!
//! Every method returns the dispatches of one operation of a fixed shape;
//! build them once and re-record them every step. All offsets and lengths are
//! in elements (f32 or u32 words). f32 data buffers are bound read-write, so
//! an output may alias an input (same buffer, same offset: in place) and
//! inputs and outputs may share a buffer at disjoint ranges. The u32 buffer
//! (`rng` state or `lengths`) is bound read-only and must be a different
//! buffer from the f32 ones.
//!
//! **Dropout** (see the shader for the exact definition): element `i` of a
//! region of `n` elements is kept iff `philox4x32_10(key = (seed0, seed1),
//! counter = (i / 4, step_counter, stream, 0))[i % 4] >= round(p·2³²)`; kept
//! elements are multiplied by `1 / (1 − p)`, dropped ones are 0. The seeds
//! and counter live in a small per-step u32 storage buffer
//! ([`DropoutStep::words`], [`DROPOUT_STEP_WORDS`] words at `step_off`)
//! written with `ctx.write()` before the submit; `stream` (fixed per
//! dropout site) separates the sites of one step. The backward replays the
//! same mask from the same step buffer contents. `p = 0` is an exact
//! identity. [`dropout_keep`] is the same mask on the CPU.

use super::wgsl::{family_source, wgsl_struct};
use super::{fits, flat_grid, u32_of};
use crate::gpu::{Binding, Dispatch, GpuContext, Kernel, module};
use crate::{Error, Result};

family_source!(
    ElementwiseUniform;
    "common/prelude.wgsl",
    "common/philox.wgsl",
    "elementwise.wgsl",
);
const WG: usize = 64;
const ACCUMULATE: u32 = 1;

/// Words of the per-step dropout buffer: `[seed0, seed1, counter, 0]`.
pub const DROPOUT_STEP_WORDS: usize = 4;

/// The elementwise entry points.
pub struct Elementwise {
    dropout: Kernel,
    dropout_add: Kernel,
    dropout_split: Kernel,
    add: Kernel,
    accumulate: Kernel,
    fill: Kernel,
    last_gather: Kernel,
    last_scatter: Kernel,
}

/// Per-step state of the dropout generator, written into the step buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropoutStep {
    /// 64-bit seed (Philox key: low word, high word).
    pub seed: u64,
    /// Counter, typically the step number: a new mask every step.
    pub counter: u32,
}

impl DropoutStep {
    /// The words to write at `step_off` of the step buffer.
    pub fn words(&self) -> [u32; DROPOUT_STEP_WORDS] {
        [self.seed as u32, (self.seed >> 32) as u32, self.counter, 0]
    }
}

/// One dropout site: `n` elements of `input` at `in_off` to `output` at
/// `out_off` (forward: x → y; backward: dy → dx).
#[derive(Clone, Copy, Debug, Default)]
pub struct DropoutShape {
    /// Elements.
    pub n: usize,
    /// Drop probability, in [0, 1).
    pub p: f32,
    /// Stream id of this dropout site (distinct per site within a step).
    pub stream: u32,
    /// Offset of the RNG words in the step buffer.
    pub step_off: usize,
    /// Forward: x. Backward: dy.
    pub in_off: usize,
    /// Forward: y. Backward: dx.
    pub out_off: usize,
    /// Add to the output instead of overwriting it.
    pub accumulate: bool,
}

/// A [T, B, F] time-major tensor and its last valid step per sequence.
#[derive(Clone, Copy, Debug, Default)]
pub struct LastStepShape {
    /// T.
    pub seq: usize,
    /// B.
    pub batch: usize,
    /// F.
    pub features: usize,
    /// Offset of the [T, B, F] tensor (gather: x; scatter: dx).
    pub seq_off: usize,
    /// Offset of the [B, F] tensor (gather: out; scatter: dout).
    pub last_off: usize,
    /// Offset of the u32 lengths `[B]` in their buffer.
    pub len_off: usize,
    /// Add to the output instead of overwriting it.
    pub accumulate: bool,
}

/// Drop threshold for `p`: `round(p·2³²)`, an element is kept iff its random
/// word is `>=` it. Errors unless `0 <= p < 1`.
pub fn dropout_threshold(p: f32) -> Result<u32> {
    if !(p.is_finite() && (0.0..1.0).contains(&p)) {
        return Err(Error::Invalid(format!(
            "dropout probability must be in [0, 1), got {p}"
        )));
    }
    Ok(((p as f64) * 4294967296.0).round().min(u32::MAX as f64) as u32)
}

/// Scale of the kept elements: `1 / (1 − p)` rounded to f32 (exactly 1 at p = 0).
pub fn dropout_scale(p: f32) -> f32 {
    (1.0 / (1.0 - p as f64)) as f32
}

/// (high, low) words of `a·b`.
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// Philox4x32-10 (Random123): the block of `ctr` under `key`.
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (ctr, key);
    for _ in 0..10 {
        let (h0, l0) = mulhilo(0xD251_1F53, c[0]);
        let (h1, l1) = mulhilo(0xCD9E_8D57, c[2]);
        c = [h1 ^ c[1] ^ k[0], l1, h0 ^ c[3] ^ k[1], l0];
        k = [
            k[0].wrapping_add(0x9E37_79B9),
            k[1].wrapping_add(0xBB67_AE85),
        ];
    }
    c
}

/// Whether element `i` of dropout site `stream` survives at step `step`
/// with drop probability `p` (the GPU's mask, on the CPU).
pub fn dropout_keep(step: &DropoutStep, stream: u32, i: u32, p: f32) -> Result<bool> {
    let thr = dropout_threshold(p)?;
    if thr == 0 {
        return Ok(true);
    }
    let w = step.words();
    let r = philox4x32_10([i / 4, w[2], stream, 0], [w[0], w[1]]);
    Ok(r[(i % 4) as usize] >= thr)
}

wgsl_struct! {
    /// The uniform block of `elementwise.wgsl`.
    pub struct ElementwiseUniform = "Params" {
        n: u32, a_off: u32, b_off: u32, out_off: u32,
        flags: u32, aux_off: u32, thr: u32, scale: f32,
        stream: u32, seq: u32, batch: u32, feat: u32,
        value: f32, _p0: u32, _p1: u32, _p2: u32,
    }
}

impl Elementwise {
    /// Compiles the entry points.
    pub fn new(ctx: &GpuContext) -> Self {
        use Binding::{Read, ReadWrite};
        let m = module(ctx, "elementwise", &source());
        let aux_a_out = [(1, Read), (2, ReadWrite), (4, ReadWrite)];
        let aux_a_b_out = [(1, Read), (2, ReadWrite), (3, ReadWrite), (4, ReadWrite)];
        Self {
            dropout: m.kernel("dropout", &aux_a_out),
            dropout_add: m.kernel("dropout_add", &aux_a_b_out),
            dropout_split: m.kernel("dropout_split", &aux_a_b_out),
            add: m.kernel("add", &[(2, ReadWrite), (3, ReadWrite), (4, ReadWrite)]),
            accumulate: m.kernel("accumulate", &[(2, ReadWrite), (4, ReadWrite)]),
            fill: m.kernel("fill", &[(4, ReadWrite)]),
            last_gather: m.kernel("last_gather", &aux_a_out),
            last_scatter: m.kernel("last_scatter", &aux_a_out),
        }
    }

    /// Every dropout entry point: `residual` is the skip of the fused ones
    /// (`dropout_add`, `dropout_split`), bound between input and output.
    #[allow(clippy::too_many_arguments)]
    fn dropout_op(
        &self,
        ctx: &GpuContext,
        kernel: &Kernel,
        s: &DropoutShape,
        step: &wgpu::Buffer,
        input: &wgpu::Buffer,
        residual: Option<(&wgpu::Buffer, usize)>,
        output: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        let thr = dropout_threshold(s.p)?;
        let mut bufs = vec![step, input];
        bufs.extend(residual.map(|r| r.0));
        bufs.push(output);
        // Four elements per invocation (one Philox block).
        flat(
            ctx,
            kernel,
            "dropout elements",
            s.n.div_ceil(4),
            &bufs,
            || {
                Ok(ElementwiseUniform {
                    n: u32_of("dropout elements", s.n)?,
                    a_off: fits("dropout input", s.in_off, s.n)?,
                    b_off: match residual {
                        Some((_, off)) => fits("residual", off, s.n)?,
                        None => 0,
                    },
                    out_off: fits("dropout output", s.out_off, s.n)?,
                    flags: flags(s.accumulate),
                    aux_off: fits("dropout step state", s.step_off, DROPOUT_STEP_WORDS)?,
                    thr,
                    scale: dropout_scale(s.p),
                    stream: s.stream,
                    ..Default::default()
                })
            },
        )
    }

    /// Dropout forward: y (= or +=) x·m/(1−p). `step` holds the
    /// [`DropoutStep`] words at `s.step_off`. y may be x (in place). One
    /// dispatch (none when `n == 0`).
    pub fn dropout_forward(
        &self,
        ctx: &GpuContext,
        s: &DropoutShape,
        step: &wgpu::Buffer,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        self.dropout_op(ctx, &self.dropout, s, step, x, None, y)
    }

    /// Dropout backward: dx (= or +=) dy·m/(1−p) with the forward's mask
    /// (same shape, `stream` and step-buffer contents). dx may be dy. One
    /// dispatch (none when `n == 0`).
    pub fn dropout_backward(
        &self,
        ctx: &GpuContext,
        s: &DropoutShape,
        step: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        dx: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        self.dropout_op(ctx, &self.dropout, s, step, dy, None, dx)
    }

    /// Dropout then a residual add, fused: y (= or +=) x·m/(1−p) + skip,
    /// with [`Elementwise::dropout_forward`]'s mask. y may be x or skip (in
    /// place). One dispatch (none when `n == 0`).
    pub fn dropout_add(
        &self,
        ctx: &GpuContext,
        s: &DropoutShape,
        step: &wgpu::Buffer,
        x: &wgpu::Buffer,
        skip: (&wgpu::Buffer, usize),
        y: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        self.dropout_op(ctx, &self.dropout_add, s, step, x, Some(skip), y)
    }

    /// Backward of [`Elementwise::dropout_add`]: dx (= or +=) dy·m/(1−p)
    /// and skip = dy (the skip path's gradient, overwritten). dx may be dy;
    /// skip must not overlap dy or dx. One dispatch (none when `n == 0`).
    pub fn dropout_split(
        &self,
        ctx: &GpuContext,
        s: &DropoutShape,
        step: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        skip: (&wgpu::Buffer, usize),
        dx: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        self.dropout_op(ctx, &self.dropout_split, s, step, dy, Some(skip), dx)
    }

    /// Residual add: out[out_off + i] = a[a_off + i] + b[b_off + i], i < n
    /// (out may be a or b at the same offset). One dispatch (none when
    /// `n == 0`).
    pub fn add(
        &self,
        ctx: &GpuContext,
        n: usize,
        a: (&wgpu::Buffer, usize),
        b: (&wgpu::Buffer, usize),
        out: (&wgpu::Buffer, usize),
    ) -> Result<Vec<Dispatch>> {
        flat(
            ctx,
            &self.add,
            "add elements",
            n,
            &[a.0, b.0, out.0],
            || {
                Ok(ElementwiseUniform {
                    n: u32_of("add elements", n)?,
                    a_off: fits("add input a", a.1, n)?,
                    b_off: fits("add input b", b.1, n)?,
                    out_off: fits("add output", out.1, n)?,
                    ..Default::default()
                })
            },
        )
    }

    /// out[out_off + i] += src[src_off + i] (or `=` when `!accumulate`: a
    /// copy), i < n. The backward of a residual add is this, once per
    /// branch (`dy_lower += dy_upper`). One dispatch (none when `n == 0`).
    pub fn accumulate(
        &self,
        ctx: &GpuContext,
        n: usize,
        src: (&wgpu::Buffer, usize),
        out: (&wgpu::Buffer, usize),
        accumulate: bool,
    ) -> Result<Vec<Dispatch>> {
        let what = "accumulate elements";
        flat(ctx, &self.accumulate, what, n, &[src.0, out.0], || {
            Ok(ElementwiseUniform {
                n: u32_of(what, n)?,
                a_off: fits("accumulate source", src.1, n)?,
                out_off: fits("accumulate destination", out.1, n)?,
                flags: flags(accumulate),
                ..Default::default()
            })
        })
    }

    /// out[out_off + i] = value, i < n. One dispatch (none when `n == 0`).
    pub fn fill(
        &self,
        ctx: &GpuContext,
        n: usize,
        out: (&wgpu::Buffer, usize),
        value: f32,
    ) -> Result<Vec<Dispatch>> {
        flat(ctx, &self.fill, "fill elements", n, &[out.0], || {
            Ok(ElementwiseUniform {
                n: u32_of("fill elements", n)?,
                out_off: fits("fill destination", out.1, n)?,
                value,
                ..Default::default()
            })
        })
    }

    /// Both last-step kernels: they read `a` and write `out`, each given as
    /// (what, offset, elements); which of them is the [T, B, F] tensor is
    /// the direction.
    #[allow(clippy::too_many_arguments)]
    fn last_step(
        &self,
        ctx: &GpuContext,
        kernel: &Kernel,
        s: &LastStepShape,
        bufs: [&wgpu::Buffer; 3],
        a: (&str, usize, usize),
        out: (&str, usize, usize),
    ) -> Result<Vec<Dispatch>> {
        let last = s.batch * s.features;
        flat(ctx, kernel, "last-step elements", last, &bufs, || {
            Ok(ElementwiseUniform {
                seq: u32_of("sequence length", s.seq)?,
                batch: u32_of("batch", s.batch)?,
                feat: u32_of("last-step features", s.features)?,
                flags: flags(s.accumulate),
                aux_off: fits("lengths", s.len_off, s.batch)?,
                n: u32_of("last-step elements", last)?,
                a_off: fits(a.0, a.1, a.2)?,
                out_off: fits(out.0, out.1, out.2)?,
                ..Default::default()
            })
        })
    }

    /// Forward of the last-step head input: out[b, :] (= or +=)
    /// x[(len_b − 1)·B + b, :] for the [T, B, F] tensor `x` at `s.seq_off`,
    /// `out` [B, F] at `s.last_off`, `lengths` u32 `[B]` at `s.len_off`
    /// (each in 1..=T; other lengths gather zeros). One dispatch (none when
    /// empty).
    pub fn last_gather(
        &self,
        ctx: &GpuContext,
        s: &LastStepShape,
        lengths: &wgpu::Buffer,
        x: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        let last = s.batch * s.features;
        let seq = s.seq * last;
        let a = ("last-step input", s.seq_off, seq);
        let o = ("last-step output", s.last_off, last);
        self.last_step(ctx, &self.last_gather, s, [lengths, x, out], a, o)
    }

    /// Backward: dx[(len_b − 1)·B + b, :] (+= or =) dout[b, :], other rows of
    /// `dx` untouched (`dx` [T, B, F] at `s.seq_off`, `dout` [B, F] at
    /// `s.last_off`). One dispatch (none when empty).
    pub fn last_scatter(
        &self,
        ctx: &GpuContext,
        s: &LastStepShape,
        lengths: &wgpu::Buffer,
        dout: &wgpu::Buffer,
        dx: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        let last = s.batch * s.features;
        let seq = s.seq * last;
        let a = ("last-step output gradient", s.last_off, last);
        let o = ("last-step input gradient", s.seq_off, seq);
        self.last_step(ctx, &self.last_scatter, s, [lengths, dout, dx], a, o)
    }
}

/// One dispatch of `kernel` over `items` grid items, none when `items == 0`.
/// `uniform` runs only for a non-empty op: an empty one is not checked.
fn flat(
    ctx: &GpuContext,
    kernel: &Kernel,
    what: &str,
    items: usize,
    bufs: &[&wgpu::Buffer],
    uniform: impl FnOnce() -> Result<ElementwiseUniform>,
) -> Result<Vec<Dispatch>> {
    if items == 0 {
        return Ok(Vec::new());
    }
    let w = uniform()?;
    Ok(vec![kernel.dispatch(
        ctx,
        &w,
        bufs,
        flat_grid(ctx, what, items, WG)?,
    )])
}

fn flags(accumulate: bool) -> u32 {
    if accumulate { ACCUMULATE } else { 0 }
}
