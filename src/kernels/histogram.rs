//! Wrapper of `shaders/histogram.wgsl`: per-segment min, max, sum, sum of
//! squares, NaN/Inf counts and fixed-width bin counts of segments of GPU
//! buffers, computed on the GPU so that only the counts come back.
//!
//! A [`HistPlan`] is built once for a list of [`Source`]s (a buffer and its
//! [`Segment`]s) and recorded every step it is wanted: three dispatches per
//! source (chunk statistics, segment statistics, bin counts), all writing
//! one output buffer of [`HistPlan::words`] words that one copy reads back.
//!
//! A source holds f32 values, or f16 values two per word
//! ([`Source::half`]: the f16-mixed gate cache), widened exactly to f32.
//!
//! **Bins.** `bins` equal-width bins over the segment's [min, max] of its
//! finite values: x goes to bin ⌊(x − min) / (max − min) · bins⌋ computed
//! in f32, x = max to the last bin; with min = max every value is in bin 0.
//! A value within f32 rounding of an inner edge may land on either side of
//! it (the edges are not representable anyway). NaN and ±Inf are counted
//! apart and left out of min, max, sums and bins.
//!
//! **Determinism.** Statistics are reduced in a fixed order (bit-identical
//! run to run); counts are u32 atomic additions, exact in any order.

use super::wgsl::{family_source, wgsl_struct};
use super::{grid, u32_of};
use crate::gpu::{Binding, Dispatch, GpuContext, Kernel, module};
use crate::{Error, Result};

family_source!(HistogramUniform; "common/prelude.wgsl", "histogram.wgsl");

/// TensorBoard's usual bin count.
pub const DEFAULT_BINS: usize = 30;
/// Largest bin count (`MAX_BINS` in the shader: workgroup memory).
pub const MAX_BINS: usize = 1024;
/// Invocations per workgroup (`WG` in the shader).
const WG: usize = 64;
/// Elements per chunk: one workgroup, 64 per invocation.
pub const CHUNK: usize = WG * 64;
/// Words before a segment's bins in the output: `[min, max, sum, sum_sq,
/// finite, nan, inf, 0]`.
pub const HEADER: usize = 8;
/// Words per segment in the table.
const SEG_WORDS: usize = 8;

wgsl_struct! {
    /// The uniform block of `histogram.wgsl`.
    pub struct HistogramUniform = "Params" {
        n_chunks: u32, n_segs: u32, seg_base: u32, bins: u32,
        half: u32, _p0: u32, _p1: u32, _p2: u32,
    }
}

/// `rows` rows of `cols` values, `stride` apart, from element `offset`;
/// with `batch` > 0 row r is position (t, b) = (r / batch, r % batch) of a
/// time-major block and counts only when t < lengths[b].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// First element.
    pub offset: usize,
    /// Rows.
    pub rows: usize,
    /// Values per row.
    pub cols: usize,
    /// Elements from one row's start to the next.
    pub stride: usize,
    /// Sequences per time step of a masked block; 0: every row counts.
    pub batch: usize,
}

impl Segment {
    /// `len` contiguous values.
    pub fn flat(offset: usize, len: usize) -> Self {
        Self::rows(offset, 1, len, len)
    }

    /// `rows` rows of `cols` values, `stride` apart.
    pub fn rows(offset: usize, rows: usize, cols: usize, stride: usize) -> Self {
        Self {
            offset,
            rows,
            cols,
            stride,
            batch: 0,
        }
    }

    /// Only rows (t, b) with t < lengths[b] count (`batch` = B).
    pub fn masked(self, batch: usize) -> Self {
        Self { batch, ..self }
    }

    /// Elements it spans, padding included.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// No elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One past its last element, checked.
    fn end(&self) -> Option<usize> {
        (self.rows - 1)
            .checked_mul(self.stride)?
            .checked_add(self.offset)?
            .checked_add(self.cols)
    }
}

/// A buffer and the segments of it to histogram; `lengths` (u32 [B]) is
/// needed by masked segments.
pub struct Source<'a> {
    /// The values: f32, or f16 two per word (the low half first) when
    /// `half`.
    pub buffer: &'a wgpu::Buffer,
    /// f16 values (the f16-mixed gate cache); segments then count f16
    /// elements. Each is widened to f32 exactly before it is measured.
    pub half: bool,
    /// Sequence lengths for masked segments.
    pub lengths: Option<&'a wgpu::Buffer>,
    /// What to histogram, in output order.
    pub segments: Vec<Segment>,
}

/// One segment's histogram, read back.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentHistogram {
    /// Smallest finite value (0 when there is none).
    pub min: f32,
    /// Largest finite value (0 when there is none).
    pub max: f32,
    /// Sum of the finite values (f32, fixed order).
    pub sum: f32,
    /// Sum of their squares.
    pub sum_squares: f32,
    /// NaN values.
    pub nan: u32,
    /// ±Inf values.
    pub inf: u32,
    /// Finite values per bin.
    pub counts: Vec<u32>,
}

impl SegmentHistogram {
    /// Finite values binned.
    pub fn finite(&self) -> u64 {
        self.counts.iter().map(|&c| c as u64).sum()
    }

    /// Right edges of the bins: min + (i + 1)·(max − min)/bins, the last
    /// exactly max.
    pub fn right_edges(&self) -> Vec<f64> {
        let (lo, hi, n) = (self.min as f64, self.max as f64, self.counts.len());
        (1..=n)
            .map(|i| match i == n {
                true => hi,
                false => lo + (hi - lo) * i as f64 / n as f64,
            })
            .collect()
    }

    /// Multiplies every value by `k` > 0 (e.g. 1/S to unscale gradients
    /// carrying a loss scale S): the bins scale with the values.
    pub fn scaled(mut self, k: f32) -> Self {
        self.min *= k;
        self.max *= k;
        self.sum *= k;
        self.sum_squares *= k * k;
        self
    }
}

/// The histogram kernels.
pub struct Histogram {
    partials: Kernel,
    segstats: Kernel,
    bins: Kernel,
}

/// The dispatches of the histograms of fixed sources, and their buffers.
/// Re-record it every step it is wanted.
pub struct HistPlan {
    /// Per source, in order: its three dispatches, to record in order
    /// (after whatever writes the source).
    pub groups: Vec<Vec<Dispatch>>,
    /// Per segment of every source, in order: [`HEADER`] words, then the
    /// bins (u32 words, f32 as bits).
    pub out: wgpu::Buffer,
    /// Bins per segment.
    pub bins: usize,
    /// Segments of all sources.
    pub segments: usize,
    // Kept alive with the plan: tables, partials, the dummy lengths.
    _keep: Vec<wgpu::Buffer>,
}

impl Histogram {
    /// Compiles the kernels.
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "histogram", &source());
        use Binding::{Read, ReadWrite};
        let partials = m.kernel(
            "partials",
            &[(1, Read), (2, Read), (3, Read), (4, ReadWrite)],
        );
        let segstats = m.kernel("segstats", &[(1, Read), (5, Read), (6, ReadWrite)]);
        let bins = m.kernel("bins", &[(1, Read), (2, Read), (3, Read), (7, ReadWrite)]);
        Self {
            partials,
            segstats,
            bins,
        }
    }

    /// Plans the histograms of `sources` with `bins` bins (1..=[`MAX_BINS`])
    /// per segment. Refuses empty segments, segments past their buffer,
    /// rows that overlap within a segment, and masked segments without
    /// lengths.
    pub fn plan(&self, ctx: &GpuContext, sources: &[Source<'_>], bins: usize) -> Result<HistPlan> {
        if !(1..=MAX_BINS).contains(&bins) {
            return Err(Error::Invalid(format!(
                "histogram bins {bins}: expected 1..={MAX_BINS}"
            )));
        }
        let per_seg = HEADER + bins;
        let segments: usize = sources.iter().map(|s| s.segments.len()).sum();
        let out = ctx.storage("histogram out", segments * per_seg)?;
        let no_lengths = ctx.storage("histogram lengths", 1)?;
        let mut keep = vec![no_lengths.clone()];
        let mut groups = Vec::with_capacity(sources.len());
        let mut out_base = 0;
        for s in sources {
            check(s)?;
            let (table, n_chunks, seg_base) = chunk_table(&s.segments, out_base, per_seg)?;
            out_base += s.segments.len() * per_seg;
            let params = HistogramUniform {
                n_chunks: u32_of("histogram chunks", n_chunks)?,
                n_segs: u32_of("histogram segments", s.segments.len())?,
                seg_base: u32_of("histogram table", seg_base)?,
                bins: bins as u32,
                half: u32::from(s.half),
                ..Default::default()
            };
            let table = ctx.storage_init("histogram table", &table)?;
            let part = ctx.storage("histogram partials", 8 * n_chunks)?;
            let lengths = s.lengths.unwrap_or(&no_lengths);
            let chunk_grid = grid(ctx, "histogram chunks", n_chunks)?;
            let seg_grid = grid(ctx, "histogram segments", s.segments.len())?;
            groups.push(vec![
                self.partials.dispatch(
                    ctx,
                    &params,
                    &[&table, s.buffer, lengths, &part],
                    chunk_grid,
                ),
                self.segstats
                    .dispatch(ctx, &params, &[&table, &part, &out], seg_grid),
                self.bins
                    .dispatch(ctx, &params, &[&table, s.buffer, lengths, &out], chunk_grid),
            ]);
            keep.extend([table, part]);
        }
        Ok(HistPlan {
            groups,
            out,
            bins,
            segments,
            _keep: keep,
        })
    }
}

/// A source's segments: non-empty, rows apart, inside the buffer, masked
/// only with lengths.
fn check(s: &Source<'_>) -> Result<()> {
    let elems = (s.buffer.size() / if s.half { 2 } else { 4 }) as usize;
    for g in &s.segments {
        let bad = |m: &str| Err(Error::Invalid(format!("histogram segment {g:?}: {m}")));
        if g.is_empty() {
            return bad("empty (a histogram needs values)");
        }
        if g.rows > 1 && g.stride < g.cols {
            return bad("rows overlap (stride < cols)");
        }
        if g.batch > 0 && s.lengths.is_none() {
            return bad("masked without a lengths buffer");
        }
        match g.end() {
            Some(end) if end <= elems => {}
            _ => return bad(&format!("exceeds the buffer of {elems} elements")),
        }
    }
    Ok(())
}

/// The kernels' table (see the shader): chunks of at most [`CHUNK`]
/// elements, then the segments; with the chunk count and where the
/// segments start.
fn chunk_table(
    segments: &[Segment],
    out_base: usize,
    per_seg: usize,
) -> Result<(Vec<u32>, usize, usize)> {
    let mut chunks: Vec<u32> = Vec::new();
    let mut segs: Vec<u32> = Vec::with_capacity(SEG_WORDS * segments.len());
    for (i, g) in segments.iter().enumerate() {
        let first = chunks.len() / 4;
        let len = g.len();
        for start in (0..len).step_by(CHUNK) {
            let n = CHUNK.min(len - start);
            chunks.extend([u32_of("segment index", i)?, u32_of("element", start)?]);
            chunks.extend([n as u32, 0]);
        }
        let words = [
            g.offset,
            g.cols,
            g.stride,
            g.batch,
            first,
            chunks.len() / 4 - first,
            out_base + i * per_seg,
            0,
        ];
        for w in words {
            segs.push(u32_of("histogram segment", w)?);
        }
    }
    let (n_chunks, seg_base) = (chunks.len() / 4, chunks.len());
    chunks.extend_from_slice(&segs);
    Ok((chunks, n_chunks, seg_base))
}

impl HistPlan {
    /// Records every source's dispatches into `pass`, in order.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.groups.iter().flatten().for_each(|d| d.record(pass));
    }

    /// Words of [`HistPlan::out`].
    pub fn words(&self) -> usize {
        self.segments * (HEADER + self.bins)
    }

    /// The histograms from the words of [`HistPlan::out`], in segment order.
    pub fn decode(&self, words: &[u32]) -> Result<Vec<SegmentHistogram>> {
        if words.len() != self.words() {
            return Err(Error::Gpu(format!(
                "histogram readback of {} words, expected {}",
                words.len(),
                self.words()
            )));
        }
        let f = f32::from_bits;
        Ok(words
            .chunks_exact(HEADER + self.bins)
            .map(|w| {
                // No finite value: the shader's sentinels, reported as 0.
                let none = w[4] == 0;
                SegmentHistogram {
                    min: if none { 0.0 } else { f(w[0]) },
                    max: if none { 0.0 } else { f(w[1]) },
                    sum: f(w[2]),
                    sum_squares: f(w[3]),
                    nan: w[5],
                    inf: w[6],
                    counts: w[HEADER..].to_vec(),
                }
            })
            .collect())
    }

    /// Reads the histograms of the last recorded plan back (waits for the
    /// GPU).
    pub fn read(&self, ctx: &GpuContext) -> Result<Vec<SegmentHistogram>> {
        let w = ctx.read_f32(&self.out, 0, self.words())?;
        self.decode(&w.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
    }
}
