//! Histogram kernels (`shaders/histogram.wgsl`) against a CPU reference in
//! f64: exact min, max and bin counts, sums to f32 rounding, over flat,
//! strided and length-masked segments of several buffers, with NaN/Inf,
//! constant segments, values at max and segments of many chunks; f16
//! sources (the f16-mixed gate cache) at odd offsets and strides, with
//! subnormals, the largest f16, NaN and infinities.

mod common;

use common::ctx;
use common::gpu::*;
use lstm_wgpu::GpuContext;
use lstm_wgpu::kernels::histogram::{
    CHUNK, HistPlan, Histogram, Segment, SegmentHistogram, Source,
};

fn run_plan(ctx: &GpuContext, plan: &HistPlan) -> Vec<SegmentHistogram> {
    let ds: Vec<_> = plan.groups.iter().flatten().cloned().collect();
    run(ctx, &ds);
    plan.read(ctx).unwrap_or_else(|e| panic!("{e}"))
}

/// The values of `g` in `x` that count (rows past a sequence's length
/// left out).
fn values(x: &[f32], g: &Segment, lengths: &[u32]) -> Vec<f32> {
    let mut v = Vec::new();
    for r in 0..g.rows {
        if g.batch > 0 && (r / g.batch) as u32 >= lengths[r % g.batch] {
            continue;
        }
        let o = g.offset + r * g.stride;
        v.extend_from_slice(&x[o..o + g.cols]);
    }
    v
}

/// The reference: exact bins in f64. Panics when a value is within 1e-3
/// bin widths of an inner edge, where f32 rounding may decide either way
/// (the tests' data keep clear of them).
fn reference(v: &[f32], bins: usize) -> SegmentHistogram {
    let fin: Vec<f64> = v
        .iter()
        .filter(|x| x.is_finite())
        .map(|&x| x as f64)
        .collect();
    let (lo, hi) = match fin.is_empty() {
        true => (0.0, 0.0),
        false => (
            fin.iter().cloned().fold(f64::INFINITY, f64::min),
            fin.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        ),
    };
    let mut counts = vec![0u32; bins];
    for &x in &fin {
        let b = match hi > lo {
            true => {
                let p = (x - lo) / (hi - lo) * bins as f64;
                let near =
                    (p - p.round()).abs() < 1e-3 && p.round() > 0.0 && p.round() < bins as f64;
                assert!(!near, "test data: {x} is on a bin edge");
                (p.floor() as usize).min(bins - 1)
            }
            false => 0,
        };
        counts[b] += 1;
    }
    SegmentHistogram {
        min: lo as f32,
        max: hi as f32,
        sum: fin.iter().sum::<f64>() as f32,
        sum_squares: fin.iter().map(|x| x * x).sum::<f64>() as f32,
        nan: v.iter().filter(|x| x.is_nan()).count() as u32,
        inf: v.iter().filter(|x| x.is_infinite()).count() as u32,
        counts,
    }
}

/// Sums agree to f32 rounding: within 1e-5 of the sum of magnitudes (the
/// sum of squares is its own).
fn close(a: f32, b: f32, magnitudes: f64) -> bool {
    (a as f64 - b as f64).abs() <= 1e-5 * magnitudes.max(1e-30)
}

fn check(what: &str, got: &SegmentHistogram, want: &SegmentHistogram) {
    let mag = want.counts.iter().sum::<u32>() as f64 * want.min.abs().max(want.max.abs()) as f64;
    assert_eq!((got.min, got.max), (want.min, want.max), "{what}: min, max");
    assert_eq!(got.counts, want.counts, "{what}: counts");
    assert_eq!((got.nan, got.inf), (want.nan, want.inf), "{what}: NaN, Inf");
    assert!(
        close(got.sum, want.sum, mag),
        "{what}: sum {} vs {}",
        got.sum,
        want.sum
    );
    assert!(
        close(got.sum_squares, want.sum_squares, want.sum_squares as f64),
        "{what}: sum of squares {} vs {}",
        got.sum_squares,
        want.sum_squares
    );
}

/// `n` values of [lo, hi] (both ends included) away from the inner edges
/// of `bins` bins: lo + (k + u)·w, u in [0.1, 0.9].
fn binnable(n: usize, seed: u64, lo: f32, hi: f32, bins: usize) -> Vec<f32> {
    let w = (hi - lo) as f64 / bins as f64;
    let r = values_in(2 * n, seed, 1.0);
    let mut v: Vec<f32> = (0..n)
        .map(|i| {
            let k = ((r[2 * i] + 1.0) * 0.5 * bins as f32) as usize % bins;
            let u = 0.5 + 0.4 * r[2 * i + 1] as f64;
            (lo as f64 + (k as f64 + u) * w) as f32
        })
        .collect();
    if n >= 2 {
        v[n / 3] = lo;
        v[n / 2] = hi;
    }
    v
}

/// Unmasked segments of a buffer of f32.
fn f32_source(buffer: &wgpu::Buffer, segments: Vec<Segment>) -> Source<'_> {
    Source {
        buffer,
        half: false,
        lengths: None,
        segments,
    }
}

fn plan(ctx: &GpuContext, sources: &[Source<'_>], bins: usize) -> HistPlan {
    Histogram::new(ctx)
        .plan(ctx, sources, bins)
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn segments_of_different_lengths_match_the_reference() {
    let ctx = ctx();
    let bins = 30;
    let big = 5 * CHUNK + 123;
    let mut x = binnable(big, 1, -2.5, 3.0, bins);
    x.extend(binnable(1000, 2, 0.25, 0.75, bins));
    x.extend([7.5]);
    x.extend(binnable(CHUNK, 3, -1e-3, 4e-3, bins));
    let segs = [
        Segment::flat(0, big),
        Segment::flat(big, 1000),
        Segment::flat(big + 1000, 1),
        Segment::flat(big + 1001, CHUNK),
    ];
    let buf = upload(&ctx, "x", &x);
    let src = f32_source(&buf, segs.to_vec());
    let got = run_plan(&ctx, &plan(&ctx, &[src], bins));
    assert_eq!(got.len(), segs.len());
    for (i, g) in segs.iter().enumerate() {
        let want = reference(&values(&x, g, &[]), bins);
        check(&format!("segment {i}"), &got[i], &want);
        assert_eq!(
            got[i].finite(),
            g.len() as u64,
            "segment {i}: every value binned"
        );
    }
    // The maximum is in the last bin; a single value is min = max, bin 0.
    assert!(got[0].counts[bins - 1] > 0);
    assert_eq!((got[2].min, got[2].max, got[2].counts[0]), (7.5, 7.5, 1));
    assert_eq!(got[0].right_edges().last(), Some(&3.0));
}

#[test]
fn equal_values_fill_one_bin() {
    let ctx = ctx();
    let x = vec![-0.625f32; 3 * CHUNK + 5];
    let buf = upload(&ctx, "x", &x);
    let src = f32_source(&buf, vec![Segment::flat(0, x.len())]);
    let got = run_plan(&ctx, &plan(&ctx, &[src], 7));
    assert_eq!((got[0].min, got[0].max), (-0.625, -0.625));
    assert_eq!(got[0].counts, [x.len() as u32, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn nan_and_inf_are_counted_apart() {
    let ctx = ctx();
    let bins = 10;
    let mut x = binnable(2 * CHUNK, 4, -1.0, 1.0, bins);
    for (i, v) in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::NAN]
        .into_iter()
        .enumerate()
    {
        x[100 + i * CHUNK / 2] = v;
    }
    // A segment of non-finite values only.
    x.extend([f32::NAN, f32::INFINITY]);
    let n = x.len();
    let buf = upload(&ctx, "x", &x);
    let src = f32_source(
        &buf,
        vec![Segment::flat(0, 2 * CHUNK), Segment::flat(n - 2, 2)],
    );
    let got = run_plan(&ctx, &plan(&ctx, &[src], bins));
    check("mixed", &got[0], &reference(&x[..2 * CHUNK], bins));
    assert_eq!((got[0].nan, got[0].inf), (2, 2));
    assert_eq!(got[0].finite(), 2 * CHUNK as u64 - 4);
    let none = &got[1];
    assert_eq!((none.nan, none.inf, none.finite()), (1, 1, 0));
    assert_eq!((none.min, none.max, none.sum), (0.0, 0.0, 0.0));
}

#[test]
fn strided_and_masked_segments_of_several_buffers() {
    let ctx = ctx();
    let bins = 16;
    // A time-major [T, B, 3H] block: a strided middle column block, and the
    // same masked to the sequences' lengths.
    let (t, b, h) = (40, 5, 37);
    let mut block = binnable(t * b * 3 * h, 5, -4.0, 4.0, bins);
    // Row (t 0, b 0), valid in every view, holds both ends.
    (block[h], block[h + 1]) = (-4.0, 4.0);
    let lengths: Vec<u32> = vec![40, 1, 17, 40, 33];
    let strided = Segment::rows(h, t * b, h, 3 * h);
    let masked = strided.masked(b);
    let whole = Segment::flat(0, t * b * 3 * h).masked(0);
    let flat = binnable(999, 6, 10.0, 20.0, bins);
    let (bb, lb, fb) = (
        upload(&ctx, "block", &block),
        upload(&ctx, "lengths", &lengths),
        upload(&ctx, "flat", &flat),
    );
    let sources = [
        Source {
            buffer: &bb,
            half: false,
            lengths: Some(&lb),
            segments: vec![strided, masked, whole],
        },
        f32_source(&fb, vec![Segment::flat(0, 999)]),
    ];
    let p = plan(&ctx, &sources, bins);
    assert_eq!(p.groups.len(), 2);
    assert!(p.groups.iter().all(|g| g.len() == 3));
    let got = run_plan(&ctx, &p);
    let kept: u32 = lengths.iter().sum();
    for (i, g) in [strided, masked, whole].iter().enumerate() {
        check(
            &format!("block {i}"),
            &got[i],
            &reference(&values(&block, g, &lengths), bins),
        );
    }
    assert_eq!(got[1].finite(), (kept as usize * h) as u64);
    check("flat", &got[3], &reference(&flat, bins));
    // Twice: bit-identical.
    let again = run_plan(&ctx, &p);
    assert_eq!(got, again);
}

/// An f16 source: a time-major [T, B, 5H] block of f16 values read as a
/// strided, masked column block starting on an odd element (the high half
/// of a word), a segment of subnormals and tiny normals, and one with the
/// largest f16, NaN and infinities; beside an f32 source in the same plan.
/// The reference measures the f16 values widened on the CPU.
#[test]
fn f16_sources_match_the_reference() {
    let ctx = ctx();
    let bins = 12;
    let (t, b, h) = (23, 3, 33);
    let width = 5 * h;
    let mut x = binnable(t * b * width, 7, -4.0, 4.0, bins);
    // Row (t 0, b 0) of the column block holds both ends.
    (x[h + 1], x[h + 2]) = (-4.0, 4.0);
    let tiny_at = x.len();
    // Subnormal f16 (below 2^-14) and small normals, both signs.
    x.extend(binnable(777, 8, -1.2e-4, 3e-5, bins));
    let special_at = x.len();
    let mut special = binnable(301, 9, -2.0, 65504.0, bins);
    special[5] = f32::NAN;
    special[70] = f32::INFINITY;
    special[71] = f32::NEG_INFINITY;
    x.extend(special);
    let lengths: Vec<u32> = vec![23, 4, 11];
    let xs = f16_rounded(&x);
    assert!(
        xs[tiny_at..special_at]
            .iter()
            .any(|v| *v != 0.0 && v.abs() < 6.1e-5),
        "test data: no subnormal f16"
    );
    let block = Segment::rows(h + 1, t * b, 2 * h + 1, width);
    let segs = vec![
        block,
        block.masked(b),
        Segment::flat(tiny_at, 777),
        Segment::flat(special_at, 301),
    ];
    let (hb, lb, fb) = (
        f16_buffer(&ctx, "x16", &x),
        upload(&ctx, "lengths", &lengths),
        upload(&ctx, "x32", &xs[tiny_at..special_at]),
    );
    let sources = [
        Source {
            buffer: &hb,
            half: true,
            lengths: Some(&lb),
            segments: segs.clone(),
        },
        f32_source(&fb, vec![Segment::flat(0, 777)]),
    ];
    let p = plan(&ctx, &sources, bins);
    let got = run_plan(&ctx, &p);
    for (i, g) in segs.iter().enumerate() {
        let want = reference(&values(&xs, g, &lengths), bins);
        check(&format!("f16 segment {i}"), &got[i], &want);
    }
    let kept: u32 = lengths.iter().sum();
    assert_eq!(got[1].finite(), (kept as usize * (2 * h + 1)) as u64);
    assert_eq!((got[3].nan, got[3].inf, got[3].max), (1, 2, 65504.0));
    // The f16 tiny values read as f16 and as their f32 widening agree.
    assert_eq!(got[2], got[4]);
    // Past the end in f16 elements: the buffer holds x.len() rounded up to
    // whole words.
    let n = x.len().div_ceil(2) * 2;
    let k = Histogram::new(&ctx);
    for (seg, ok) in [
        (Segment::flat(n - 3, 3), true),
        (Segment::flat(n - 3, 4), false),
    ] {
        let src = Source {
            buffer: &hb,
            half: true,
            lengths: None,
            segments: vec![seg],
        };
        assert_eq!(k.plan(&ctx, &[src], bins).is_ok(), ok, "{seg:?}");
    }
}

#[test]
fn bad_plans_are_refused() {
    let ctx = ctx();
    let buf = upload(&ctx, "x", &[1.0f32; 64]);
    let k = Histogram::new(&ctx);
    let refused = |segs: Vec<Segment>, bins: usize, what: &str| {
        let src = f32_source(&buf, segs);
        let e = k.plan(&ctx, &[src], bins).err().map(|e| e.to_string());
        let e = e.unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(e.contains("histogram"), "{what}: {e}");
    };
    refused(vec![Segment::flat(0, 0)], 30, "empty segment");
    refused(vec![Segment::flat(60, 5)], 30, "past the end");
    refused(
        vec![Segment::rows(0, 4, 16, 17)],
        30,
        "past the end, strided",
    );
    refused(vec![Segment::rows(0, 2, 8, 4)], 30, "overlapping rows");
    refused(
        vec![Segment::flat(0, 8).masked(2)],
        30,
        "masked without lengths",
    );
    refused(vec![Segment::flat(0, 8)], 0, "no bins");
    refused(vec![Segment::flat(0, 8)], 1025, "too many bins");
}
