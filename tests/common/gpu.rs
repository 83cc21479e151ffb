//! The kernel tests' one way to drive the GPU: upload, run a list of
//! dispatches in one submit (inside an error scope), read back; and the
//! small host helpers every kernel test uses.
#![allow(dead_code)]

use lstm_wgpu::gpu::Dispatch;
use lstm_wgpu::{Error, GpuContext};
use lstm_wgpu_reference::Rng;

/// Records `ds` into one pass, submits, waits; a wgpu error panics.
pub fn run(ctx: &GpuContext, ds: &[Dispatch]) {
    ctx.scoped(|| {
        record(ctx, ds);
        ctx.wait()
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Records `ds` into one pass and submits, without waiting (for timing).
pub fn record(ctx: &GpuContext, ds: &[Dispatch]) {
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        for d in ds {
            d.record(&mut pass);
        }
    }
    ctx.queue.submit([enc.finish()]);
}

/// `len` f32 values of `buf` from element `off`.
pub fn read(ctx: &GpuContext, buf: &wgpu::Buffer, off: usize, len: usize) -> Vec<f32> {
    ctx.read_f32(buf, off, len)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A storage buffer holding `data`.
pub fn upload<T: bytemuck::Pod>(ctx: &GpuContext, label: &str, data: &[T]) -> wgpu::Buffer {
    ctx.storage_init(label, data)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Values in [lo, hi) rounded to f32, so GPU and reference see the same input.
pub fn rand(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    rng.vec(n, lo, hi)
        .into_iter()
        .map(|v| v as f32 as f64)
        .collect()
}

pub fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Deterministic values in [-amp, amp) (xorshift, no `Rng`: the GEMM,
/// column-sum, clipping and optimizer tests' data).
pub fn values_in(n: usize, seed: u64, amp: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            (2.0 * u - 1.0) * amp
        })
        .collect()
}

/// Deterministic values in [-1, 1).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    values_in(n, seed, 1.0)
}

/// Deterministic small integers in [-r, r]: sums of their products stay
/// exact in f32 below 2^24, so long reductions can be checked exactly.
pub fn ints(n: usize, seed: u64, r: i32) -> Vec<f32> {
    values(n, seed)
        .into_iter()
        .map(|v| {
            ((v + 1.0) * 0.5 * (2 * r + 1) as f32)
                .floor()
                .min((2 * r) as f32)
                - r as f32
        })
        .collect()
}

/// A buffer of `v` as f16 (round to nearest), padded to whole words.
pub fn f16_buffer(ctx: &GpuContext, label: &str, v: &[f32]) -> wgpu::Buffer {
    let mut h: Vec<u16> = v
        .iter()
        .map(|&x| half::f16::from_f32(x).to_bits())
        .collect();
    h.resize(h.len().div_ceil(2) * 2, 0);
    ctx.storage_init(label, &h).expect("buffer")
}

/// `v` rounded to f16 and back.
pub fn f16_rounded(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
}

/// The bit patterns, for bit-identical comparisons.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A value a buffer holds as f32.
pub trait AsF32: Copy {
    fn as_f32(self) -> f32;
}

impl AsF32 for f32 {
    fn as_f32(self) -> f32 {
        self
    }
}

impl AsF32 for f64 {
    fn as_f32(self) -> f32 {
        self as f32
    }
}

/// `data` placed at `off` in a buffer of `len` elements filled with `fill`.
pub fn placed<T: AsF32>(len: usize, fill: f32, parts: &[(usize, &[T])]) -> Vec<f32> {
    let mut v = vec![fill; len];
    for (off, d) in parts {
        for (i, x) in d.iter().enumerate() {
            v[off + i] = x.as_f32();
        }
    }
    v
}

/// `r` is a range error naming tensor `name`.
pub fn assert_tensor_error(r: lstm_wgpu::Result<()>, name: &str) {
    match r {
        Err(Error::Tensor { name: n, msg }) => {
            assert_eq!(n, name, "{msg}");
            assert!(msg.contains("out of range"), "{msg}");
        }
        other => panic!("expected a tensor error naming `{name}`, got {other:?}"),
    }
}
