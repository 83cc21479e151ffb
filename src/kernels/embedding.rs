//! Wrapper of `shaders/embedding.wgsl`: token embedding lookup (gather)
//! forward and its deterministic backward (no atomics).
//!
//! Per step the host uploads the token ids (u32 `[N]`, [`PAD`] for padding,
//! checked with [`check_ids`]) and, for the backward, the CSR index of those
//! ids ([`csr_words`], at most [`Embedding::csr_len`] words) with
//! `ctx.write()`; the dispatches themselves are built once per shape.
//!
//! Bindings: `ids`, `table` and `csr` are read-only; `out`, `dout` and
//! `dtable` are read-write (they may share one buffer at disjoint ranges,
//! but not with a read-only one).

use super::flat_grid;
use super::u32_of;
use super::wgsl::{family_source, wgsl_struct};
use crate::gpu::{Binding, Dispatch, GpuContext, Kernel, module};
use crate::{Error, Result};

family_source!(EmbeddingUniform; "common/prelude.wgsl", "embedding.wgsl");
const WG: usize = 64;

wgsl_struct! {
    /// The uniform block of `embedding.wgsl`.
    pub struct EmbeddingUniform = "Params" {
        rows: u32, dim: u32, vocab: u32, flags: u32,
        ids_off: u32, table_off: u32, out_off: u32, csr_off: u32,
        dout_off: u32, dtable_off: u32, chunk: u32, _p0: u32,
    }
}

/// Padding id: its row of the output is zero and it gets no gradient.
pub const PAD: u32 = u32::MAX;
/// Rows of one id added per backward dispatch (`CHUNK` in the shader).
pub const CSR_CHUNK: usize = 4096;

/// The embedding entry points.
pub struct Embedding {
    fwd: Kernel,
    /// Also over an f16 dout, once [`Embedding::enable_half`] ran.
    bwd: super::HalfKernel,
}

/// Bindings of `backward`.
const BWD_BINDINGS: [(u32, Binding); 3] = [
    (4, Binding::Read),
    (5, Binding::ReadWrite),
    (6, Binding::ReadWrite),
];

/// Shape and element offsets of one embedding lookup of N tokens into a
/// [V, E] table.
#[derive(Clone, Copy, Debug, Default)]
pub struct EmbShape {
    /// Tokens N (time-major rows r = t·B + b when used on a [T, B] batch).
    pub rows: usize,
    /// Embedding width E.
    pub dim: usize,
    /// Vocabulary V (table rows).
    pub vocab: usize,
    /// Ids u32 `[N]` in the ids buffer.
    pub ids_off: usize,
    /// Table [V, E] in the parameter buffer.
    pub table_off: usize,
    /// Output [N, E].
    pub out_off: usize,
    /// CSR index ([`csr_words`]) in the CSR buffer: V + 1 + N words.
    pub csr_off: usize,
    /// Gradient w.r.t. the output [N, E].
    pub dout_off: usize,
    /// Table gradient [V, E] in the gradient buffer.
    pub dtable_off: usize,
    /// Add to the table gradient instead of overwriting it.
    pub accumulate: bool,
}

/// Buffers of the forward.
pub struct EmbForward<'a> {
    /// Token ids (u32), read-only.
    pub ids: &'a wgpu::Buffer,
    /// Parameters holding the table, read-only.
    pub table: &'a wgpu::Buffer,
    /// Output, written.
    pub out: &'a wgpu::Buffer,
}

/// Buffers of the backward.
pub struct EmbBackward<'a> {
    /// CSR index of the ids (u32), read-only.
    pub csr: &'a wgpu::Buffer,
    /// Gradient w.r.t. the output.
    pub dout: &'a wgpu::Buffer,
    /// Gradients holding the table gradient, written or accumulated.
    pub dtable: &'a wgpu::Buffer,
}

/// Every id must be below `vocab` or be [`PAD`]; the error names the tensor
/// `tokens` and the first bad position.
pub fn check_ids(ids: &[u32], vocab: usize) -> Result<()> {
    match ids
        .iter()
        .enumerate()
        .find(|&(_, &id)| id != PAD && id as usize >= vocab)
    {
        None => Ok(()),
        Some((i, &id)) => Err(Error::tensor(
            "tokens",
            format!(
                "id {id} at position {i} is out of range for a vocabulary of {vocab} \
                 (valid: 0..{vocab}, or {PAD} for padding)"
            ),
        )),
    }
}

/// CSR index of `ids` over a vocabulary of `vocab`: `offsets` [V + 1] and
/// `rows`, the row indices grouped by id in increasing id order and in
/// increasing row order within an id (rows of id v are
/// `rows[offsets[v]..offsets[v + 1]]`). Padding and out-of-range ids are
/// left out.
pub fn csr(ids: &[u32], vocab: usize) -> (Vec<u32>, Vec<u32>) {
    let mut offsets = vec![0u32; vocab + 1];
    for &id in ids {
        if (id as usize) < vocab {
            offsets[id as usize + 1] += 1;
        }
    }
    for v in 0..vocab {
        offsets[v + 1] += offsets[v];
    }
    let mut next = offsets.clone();
    let mut rows = vec![0u32; offsets[vocab] as usize];
    for (r, &id) in ids.iter().enumerate() {
        if (id as usize) < vocab {
            let slot = &mut next[id as usize];
            rows[*slot as usize] = r as u32;
            *slot += 1;
        }
    }
    (offsets, rows)
}

/// The CSR index as uploaded: `offsets` then `rows` (V + 1 + valid-id
/// count words, at most [`Embedding::csr_len`]).
pub fn csr_words(ids: &[u32], vocab: usize) -> Vec<u32> {
    let (mut offsets, rows) = csr(ids, vocab);
    offsets.extend_from_slice(&rows);
    offsets
}

impl Embedding {
    /// Compiles the entry points.
    pub fn new(ctx: &GpuContext) -> Self {
        use Binding::{Read, ReadWrite};
        let m = module(ctx, "embedding", &source());
        Self {
            fwd: m.kernel("forward", &[(1, Read), (2, Read), (3, ReadWrite)]),
            bwd: super::HalfKernel::new(&m, "backward", &BWD_BINDINGS),
        }
    }

    /// The shader source with dout in f16.
    pub fn half_source() -> String {
        crate::gpu::half_source(&source(), &["DT"], &[])
    }

    /// Compiles `backward` over an f16 dout (the device needs SHADER_F16),
    /// for [`Embedding::backward_as`]; idempotent.
    pub fn enable_half(&self, ctx: &GpuContext) {
        self.bwd.enable(ctx, "embedding", &Self::half_source());
    }

    /// Words of the CSR region for `rows` tokens and `vocab` ids: V + 1 + N.
    pub fn csr_len(vocab: usize, rows: usize) -> usize {
        vocab + 1 + rows
    }

    /// Dispatches of the backward for `rows` tokens: ⌈N / [`CSR_CHUNK`]⌉, at
    /// least 1 (0 when the table is empty).
    pub fn backward_dispatches(rows: usize, vocab: usize, dim: usize) -> usize {
        if vocab * dim == 0 {
            0
        } else {
            rows.div_ceil(CSR_CHUNK).max(1)
        }
    }

    fn params(s: &EmbShape, chunk: usize) -> Result<EmbeddingUniform> {
        let data = s.rows * s.dim;
        let table = s.vocab * s.dim;
        for (what, off, n) in [
            ("embedding ids", s.ids_off, s.rows),
            ("embedding table", s.table_off, table),
            ("embedding output", s.out_off, data),
            (
                "embedding CSR index",
                s.csr_off,
                Self::csr_len(s.vocab, s.rows),
            ),
            ("embedding output gradient", s.dout_off, data),
            ("embedding table gradient", s.dtable_off, table),
        ] {
            u32_of(what, off.saturating_add(n))?;
        }
        Ok(EmbeddingUniform {
            rows: s.rows as u32,
            dim: s.dim as u32,
            vocab: s.vocab as u32,
            flags: u32::from(s.accumulate),
            ids_off: s.ids_off as u32,
            table_off: s.table_off as u32,
            out_off: s.out_off as u32,
            csr_off: s.csr_off as u32,
            dout_off: s.dout_off as u32,
            dtable_off: s.dtable_off as u32,
            chunk: chunk as u32,
            _p0: 0,
        })
    }

    /// Forward: `out[r, :] = table[ids[r], :]` (zeros for [`PAD`]). One
    /// dispatch (none when N·E = 0).
    pub fn forward(
        &self,
        ctx: &GpuContext,
        s: &EmbShape,
        b: &EmbForward<'_>,
    ) -> Result<Vec<Dispatch>> {
        if s.rows * s.dim == 0 {
            return Ok(Vec::new());
        }
        Ok(vec![self.fwd.dispatch(
            ctx,
            &Self::params(s, 0)?,
            &[b.ids, b.table, b.out],
            flat_grid(ctx, "embedding elements", s.rows * s.dim, WG)?,
        )])
    }

    /// Backward: `dtable[v, :] (= or +=) Σ_{r: ids[r] = v} dout[r, :]`, every
    /// table row written (0 for absent ids unless accumulating), summed in
    /// increasing row order. The CSR index of the step's ids
    /// ([`csr_words`]) must be in `b.csr` at `s.csr_off`.
    /// [`Embedding::backward_dispatches`] dispatches, in order.
    pub fn backward(
        &self,
        ctx: &GpuContext,
        s: &EmbShape,
        b: &EmbBackward<'_>,
    ) -> Result<Vec<Dispatch>> {
        self.backward_as(ctx, s, b, false)
    }

    /// As [`Embedding::backward`]; with `half_dout`, `b.dout` holds f16
    /// values, which needs [`Embedding::enable_half`] first.
    pub fn backward_as(
        &self,
        ctx: &GpuContext,
        s: &EmbShape,
        b: &EmbBackward<'_>,
        half_dout: bool,
    ) -> Result<Vec<Dispatch>> {
        let kernel = self.bwd.get(half_dout)?;
        let n = Self::backward_dispatches(s.rows, s.vocab, s.dim);
        let grid = flat_grid(ctx, "embedding table elements", s.vocab * s.dim, WG)?;
        (0..n)
            .map(|k| {
                Ok(kernel.dispatch(ctx, &Self::params(s, k)?, &[b.csr, b.dout, b.dtable], grid))
            })
            .collect()
    }
}
