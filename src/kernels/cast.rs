//! Wrapper of `shaders/cast.wgsl`: the f16 shadow of the f32 parameters
//! that f16-mixed GEMMs and cells read.

use super::u32_of;
use super::wgsl::{family_source, wgsl_struct};
use crate::Result;
use crate::gpu::{Binding, Dispatch, GpuContext, Kernel, module};

family_source!(CastUniform; "cast.wgsl");
const WG: u32 = 64;

wgsl_struct! {
    /// The uniform block of `cast.wgsl`.
    pub struct CastUniform = "Params" {
        n: u32, _p0: u32, _p1: u32, _p2: u32,
    }
}

/// Precision casts.
pub struct Cast {
    to_half: Kernel,
}

/// 32-bit words holding `n` f16 values (at least one).
pub fn half_words(n: usize) -> usize {
    n.div_ceil(2).max(1)
}

impl Cast {
    /// Compiles the kernels (core WGSL: no device feature needed).
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "cast", &source());
        let to_half = m.kernel("to_half", &[(1, Binding::Read), (2, Binding::ReadWrite)]);
        Self { to_half }
    }

    /// One dispatch writing the first `n` values of `src` (f32) as f16 into
    /// `dst` (at least [`half_words`]`(n)` words), clamped to ±65504.
    pub fn to_half(
        &self,
        ctx: &GpuContext,
        n: usize,
        src: &wgpu::Buffer,
        dst: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let words = u32_of("f16 shadow words", half_words(n))?;
        let params = CastUniform {
            n: u32_of("cast length", n)?,
            ..Default::default()
        };
        Ok(self
            .to_half
            .dispatch(ctx, &params, &[src, dst], ctx.grid(words.div_ceil(WG))))
    }
}
