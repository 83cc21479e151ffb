// Histograms of segments of one buffer: per segment min, max, sum, sum of
// squares and NaN/Inf counts (fixed-order trees, bit-identical run to run),
// then counts in `bins` equal-width bins over [min, max]. Counts use u32
// atomics: integer addition is order-independent, so they are exact and
// deterministic too.
//
// A segment is `rows` rows of `cols` values, `stride` apart (a flat tensor:
// one row). With `batch` > 0, row r is a (t, b) position of a time-major
// [T, B, ...] block, r = t·B + b, and counts only when t < lengths[b]
// (padding is left out). Element e of a segment: row e / cols, column
// e % cols.
//
// The host splits segments into chunks of at most CHUNK elements. `table`:
//   [0, 4·n_chunks):                  (segment, first element, count, 0)
//   [seg_base, seg_base + 8·n_segs):  (offset, cols, stride, batch,
//                                      first chunk, chunk count, out base, 0)
//
// Dispatches, in order:
//   partials  one workgroup per chunk: its stats (tree in workgroup memory);
//   segstats  one workgroup per segment: tree over its chunks' stats, written
//             to the segment's header; zeroes its bins;
//   bins      one workgroup per chunk: bin counts in workgroup atomics, added
//             to the segment's bins.
//
// out, per segment from its out base (u32 words, f32 as bits):
//   [min, max, sum, sum_sq, finite, nan, inf, 0, bins...]
// min and max are of the finite values (+-BIG, reversed, when there are none).
// Value x goes to bin floor((x - min) / (max - min) · bins), the last bin
// taking x = max; with min = max every value is in bin 0.
//
// Loops stay short (64 values per invocation per chunk; n/64 chunks or bins
// per invocation): lavapipe ends all loops of an invocation after 65,535
// iterations in total.

// struct Params: written into the source from its Rust declaration,
// HistogramUniform (src/kernels/histogram.rs).

const WG: u32 = 64u;
const HEADER: u32 = 8u;
// Largest bin count (workgroup memory of `bins`).
const MAX_BINS: u32 = 1024u;
const EXP_MASK: u32 = 0x7f800000u;
const MANT_MASK: u32 = 0x007fffffu;
// Bounds of "no finite value yet": the largest finite f32 (an infinity
// might not survive fast-math lowering).
const BIG: f32 = 3.4028234663852886e38;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<u32>;

// A chunk's or a segment's statistics.
struct Stats {
    lo: f32,
    hi: f32,
    sum: f32,
    sq: f32,
    finite: u32,
    nan: u32,
    inf: u32,
}

var<workgroup> sh: array<Stats, WG>;

fn empty() -> Stats {
    return Stats(BIG, -BIG, 0.0, 0.0, 0u, 0u, 0u);
}

// Stats as the 8 words a buffer keeps (f32 as bits, one unused), and back.
fn pack(s: Stats) -> array<u32, 8> {
    return array<u32, 8>(bitcast<u32>(s.lo), bitcast<u32>(s.hi), bitcast<u32>(s.sum),
                         bitcast<u32>(s.sq), s.finite, s.nan, s.inf, 0u);
}

fn unpack(w: array<u32, 8>) -> Stats {
    return Stats(bitcast<f32>(w[0]), bitcast<f32>(w[1]), bitcast<f32>(w[2]),
                 bitcast<f32>(w[3]), w[4], w[5], w[6]);
}

fn merge(a: Stats, b: Stats) -> Stats {
    return Stats(min(a.lo, b.lo), max(a.hi, b.hi), a.sum + b.sum, a.sq + b.sq,
                 a.finite + b.finite, a.nan + b.nan, a.inf + b.inf);
}

// Fixed-order tree over sh; the result is in sh[0] after the call. Must be
// called in uniform control flow, after every invocation wrote its slot.
fn tree(lid: u32) {
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            sh[lid] = merge(sh[lid], sh[lid + s]);
        }
        workgroupBarrier();
    }
}

// Segment words.
struct Seg {
    offset: u32,
    cols: u32,
    stride: u32,
    batch: u32,
    first: u32,
    chunks: u32,
    out: u32,
}

fn segment(s: u32) -> Seg {
    let b = p.seg_base + 8u * s;
    return Seg(table[b], table[b + 1u], table[b + 2u], table[b + 3u],
               table[b + 4u], table[b + 5u], table[b + 6u]);
}

// f32 as bits, or f16 pairs (`half`).
@group(0) @binding(2) var<storage, read> src: array<u32>;
@group(0) @binding(3) var<storage, read> lengths: array<u32>;

// The f32 of the f16 bits in the low half of `h`: exact.
fn widen(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if e == 0x1fu {
        return bitcast<f32>(sign | EXP_MASK | (m << 13u));
    }
    if e == 0u {
        // Subnormal or zero: m · 2^-24, a normal f32.
        return bitcast<f32>(sign | bitcast<u32>(f32(m) * 5.9604644775390625e-8));
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}

// Element k of the source.
fn load(k: i32) -> f32 {
    if p.half != 0u {
        let w = src[u32(k) >> 1u];
        return widen(w >> (16u * (u32(k) & 1u)));
    }
    return bitcast<f32>(src[k]);
}

// Index in `src` of element e of segment g, or -1 for padding.
fn element(g: Seg, e: u32) -> i32 {
    let row = e / g.cols;
    if g.batch > 0u && row / g.batch >= lengths[row % g.batch] {
        return -1;
    }
    return i32(g.offset + row * g.stride + e % g.cols);
}

// Chunk c: its segment, its first element in it, its element count.
struct Chunk {
    seg: Seg,
    first: u32,
    n: u32,
}

fn chunk(c: u32) -> Chunk {
    return Chunk(segment(table[4u * c]), table[4u * c + 1u], table[4u * c + 2u]);
}

// ---- partials --------------------------------------------------------------

// 8 words per chunk: Stats, f32 as bits.
@group(0) @binding(4) var<storage, read_write> part: array<u32>;

@compute @workgroup_size(64)
fn partials(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let c = group_of(grid);
    if c >= p.n_chunks {
        return;
    }
    let ch = chunk(c);
    let g = ch.seg;
    var st = empty();
    for (var i = lid; i < ch.n; i += WG) {
        let k = element(g, ch.first + i);
        if k < 0 {
            continue;
        }
        let x = load(k);
        let bits = bitcast<u32>(x);
        if (bits & EXP_MASK) == EXP_MASK {
            if (bits & MANT_MASK) != 0u {
                st.nan += 1u;
            } else {
                st.inf += 1u;
            }
        } else {
            st = merge(st, Stats(x, x, x, x * x, 1u, 0u, 0u));
        }
    }
    sh[lid] = st;
    tree(lid);
    if lid == 0u {
        let w = pack(sh[0]);
        for (var k = 0u; k < 8u; k++) {
            part[8u * c + k] = w[k];
        }
    }
}

// ---- segstats --------------------------------------------------------------

@group(0) @binding(5) var<storage, read> spart: array<u32>;
@group(0) @binding(6) var<storage, read_write> sout: array<u32>;

fn chunk_stats(c: u32) -> Stats {
    var w: array<u32, 8>;
    for (var k = 0u; k < 8u; k++) {
        w[k] = spart[8u * c + k];
    }
    return unpack(w);
}

@compute @workgroup_size(64)
fn segstats(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let s = group_of(grid);
    if s >= p.n_segs {
        return;
    }
    let g = segment(s);
    var st = empty();
    for (var i = lid; i < g.chunks; i += WG) {
        st = merge(st, chunk_stats(g.first + i));
    }
    sh[lid] = st;
    tree(lid);
    if lid == 0u {
        let w = pack(sh[0]);
        for (var k = 0u; k < HEADER; k++) {
            sout[g.out + k] = w[k];
        }
    }
    for (var k = lid; k < p.bins; k += WG) {
        sout[g.out + HEADER + k] = 0u;
    }
}

// ---- bins ------------------------------------------------------------------

@group(0) @binding(7) var<storage, read_write> bout: array<atomic<u32>>;

var<workgroup> local_bins: array<atomic<u32>, MAX_BINS>;

@compute @workgroup_size(64)
fn bins(grid: Grid, @builtin(local_invocation_index) lid: u32) {
    let c = group_of(grid);
    // Uniform per workgroup: every invocation returns or none does.
    if c >= p.n_chunks {
        return;
    }
    for (var k = lid; k < p.bins; k += WG) {
        atomicStore(&local_bins[k], 0u);
    }
    workgroupBarrier();
    let ch = chunk(c);
    let g = ch.seg;
    let lo = bitcast<f32>(atomicLoad(&bout[g.out]));
    let hi = bitcast<f32>(atomicLoad(&bout[g.out + 1u]));
    let last = p.bins - 1u;
    for (var i = lid; i < ch.n; i += WG) {
        let k = element(g, ch.first + i);
        if k < 0 {
            continue;
        }
        let x = load(k);
        if (bitcast<u32>(x) & EXP_MASK) == EXP_MASK {
            continue;
        }
        var b = 0u;
        if hi > lo {
            b = min(u32(max((x - lo) / (hi - lo) * f32(p.bins), 0.0)), last);
        }
        atomicAdd(&local_bins[b], 1u);
    }
    workgroupBarrier();
    for (var k = lid; k < p.bins; k += WG) {
        let v = atomicLoad(&local_bins[k]);
        if v > 0u {
            atomicAdd(&bout[g.out + HEADER + k], v);
        }
    }
}
