//! Data-parallel training: the gradient reduction between ranks.
//!
//! Every rank of a group holds the same model and trains on its own shard
//! of each global batch. After backward, [`Trainer`](super::Trainer) reads
//! back the flat gradient buffer (and the step's loss), hands it to its
//! [`Reducer`], which replaces it with the sum over the ranks, and uploads
//! the sum before clipping and the optimizer step. Each rank's loss divides
//! its own sum by the *global* count of positions (summed over the ranks
//! before the step, see [`Reducer::sum_f64`]), so the summed gradient is
//! that of the mean loss over the global batch, as PyTorch's DDP.
//!
//! The sum is deterministic: every implementation adds the ranks' values in
//! rank order, `((v_0 + v_1) + v_2) + …` ([`sum_in_rank_order`]), and gives
//! every rank the same bits, so all ranks keep bit-identical weights and a
//! run is reproducible (MPI's own allreduce may group the additions in any
//! order). The MPI implementation is `train::mpi::MpiReducer` (cargo
//! feature `mpi`); [`ThreadGroup`] is one between the threads of one
//! process (one per adapter).

use crate::data::WindowSet;
use crate::error::Result;
use crate::gpu::GpuContext;
use crate::train::Trainer;
use crate::train::forecast::predict_windows;

pub use super::threads::{ThreadGroup, ThreadReducer};

/// Sums values over the ranks of a data-parallel group. Every method is
/// collective: every rank calls it, in the same order, with slices of the
/// same length.
pub trait Reducer {
    /// This process's rank, 0-based.
    fn rank(&self) -> usize;
    /// Ranks in the group.
    fn size(&self) -> usize;
    /// Replaces `v` by the element-wise sum over the ranks of their `v`,
    /// added in rank order ([`sum_in_rank_order`]): the same bits on
    /// every rank.
    fn sum_f32(&self, v: &mut [f32]) -> Result<()>;
    /// [`Reducer::sum_f32`] in f64 (counts of positions, validation sums).
    fn sum_f64(&self, v: &mut [f64]) -> Result<()>;
}

/// Where the data-parallel steps' time went, in seconds summed over
/// [`ReduceTimes::steps`] steps: the order of a step, one after the other
/// (nothing overlaps yet).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ReduceTimes {
    /// Data-parallel steps counted.
    pub steps: u64,
    /// From the submit of forward and backward until the GPU finished them.
    pub compute: f64,
    /// Reading the gradients and the loss back to the host.
    pub readback: f64,
    /// The sum over the ranks ([`Reducer::sum_f32`]), waits for peers
    /// included.
    pub allreduce: f64,
    /// Writing the sums back until the GPU holds them.
    pub upload: f64,
}

/// The data-parallel part of a training step, between its backward and
/// its clipping: reads back the `n` gradients of `grads` and the step's
/// loss (word 0 of `loss`, this rank's share of the global mean), sums
/// both over the ranks with `r` and writes the sums back. With `times`,
/// each phase's time is added to it (waiting for the GPU between phases,
/// which an untimed step leaves to the readback and the next submit).
pub(crate) fn reduce_step(
    ctx: &GpuContext,
    grads: &wgpu::Buffer,
    n: usize,
    loss: &wgpu::Buffer,
    r: &dyn Reducer,
    times: Option<&mut ReduceTimes>,
) -> Result<()> {
    let timed = times.is_some();
    let mut clock = std::time::Instant::now();
    let mut lap = || {
        let now = std::time::Instant::now();
        let s = now.duration_since(clock).as_secs_f64();
        clock = now;
        s
    };
    if timed {
        ctx.wait()?;
    }
    let compute = lap();
    let mut v = ctx.read_f32(grads, 0, n)?;
    v.extend(ctx.read_f32(loss, 0, 1)?);
    let readback = lap();
    r.sum_f32(&mut v)?;
    let allreduce = lap();
    ctx.write(grads, 0, &v[..n]);
    ctx.write(loss, 0, &v[n..]);
    let Some(times) = times else {
        return Ok(());
    };
    // The writes land with the next submit: an empty one, waited for.
    ctx.queue.submit([]);
    ctx.wait()?;
    let upload = lap();
    times.steps += 1;
    times.compute += compute;
    times.readback += readback;
    times.allreduce += allreduce;
    times.upload += upload;
    Ok(())
}

/// Predictions of `windows` of `set` as [`predict_windows`] gives them; on
/// a data-parallel trainer ([`Trainer::set_reducer`]) each rank predicts
/// its contiguous share of the windows and every rank gets all of them
/// (summed into zeros, which is exact). Collective.
pub fn predict_windows_sharded(
    tr: &mut Trainer,
    set: &WindowSet,
    windows: &[usize],
) -> Result<Vec<f32>> {
    let Some((rank, size)) = tr.reducer().map(|r| (r.rank(), r.size())) else {
        return predict_windows(tr, set, windows);
    };
    let (n, k) = (windows.len(), set.horizon());
    let (from, to) = (rank * n / size, (rank + 1) * n / size);
    let mut all = vec![0.0f32; n * k];
    if from < to {
        let mine = predict_windows(tr, set, &windows[from..to])?;
        all[from * k..to * k].copy_from_slice(&mine);
    }
    if let Some(r) = tr.reducer() {
        r.sum_f32(&mut all)?;
    }
    Ok(all)
}

/// The element-wise sum of `ranks` equal-length parts laid end to end in
/// `all` (rank 0's first), added in rank order: element i is
/// `((all[i] + all[n + i]) + all[2n + i]) + …` with n = `all.len() / ranks`.
pub fn sum_in_rank_order<T>(all: &[T], ranks: usize) -> Vec<T>
where
    T: Copy + std::ops::AddAssign,
{
    let n = all.len() / ranks.max(1);
    let mut acc = all[..n].to_vec();
    for part in all[n..]
        .chunks_exact(n.max(1))
        .take(ranks.saturating_sub(1))
    {
        for (a, &b) in acc.iter_mut().zip(part) {
            *a += b;
        }
    }
    acc
}

/// The shard of rank `rank` of `ranks` in a global batch of `batch`
/// sequences: its first sequence and how many it has. `None` when the
/// batch does not divide evenly.
pub fn shard(batch: usize, rank: usize, ranks: usize) -> Option<(usize, usize)> {
    (ranks > 0 && batch.is_multiple_of(ranks) && rank < ranks).then(|| {
        let b = batch / ranks;
        (rank * b, b)
    })
}

/// Columns `from..from + width` of a time-major `[rows, cols, inner]`
/// array `v` (`cols` sequences per row, `inner` values each): the batch
/// shard of a time-major tensor.
pub fn columns<T: Copy>(
    v: &[T],
    cols: usize,
    inner: usize,
    (from, width): (usize, usize),
) -> Vec<T> {
    v.chunks_exact(cols * inner)
        .flat_map(|row| &row[from * inner..(from + width) * inner])
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_order_is_left_to_right() {
        // 1e8 + 1 - 1e8 in f32: (1e8 + 1) rounds back to 1e8, so the
        // left-to-right sum is 0 where 1 + (-1e8 + 1e8) would be 1.
        let all = [1e8f32, 1.0, -1e8];
        assert_eq!(sum_in_rank_order(&all, 3), vec![0.0]);
        let all = [1.0f32, 2.0, 10.0, 20.0];
        assert_eq!(sum_in_rank_order(&all, 2), vec![11.0, 22.0]);
        assert_eq!(sum_in_rank_order(&[3.0f64, 4.0], 1), vec![3.0, 4.0]);
    }

    #[test]
    fn shards_split_the_batch() {
        assert_eq!(shard(16, 1, 2), Some((8, 8)));
        assert_eq!(shard(16, 0, 1), Some((0, 16)));
        assert_eq!(shard(10, 0, 4), None);
        assert_eq!(shard(8, 2, 2), None);
    }

    #[test]
    fn columns_of_time_major() {
        // [T=2, B=4, inner=2]
        let v: Vec<u32> = (0..16).collect();
        assert_eq!(columns(&v, 4, 2, (2, 2)), vec![4, 5, 6, 7, 12, 13, 14, 15]);
        assert_eq!(columns(&v, 4, 2, (0, 1)), vec![0, 1, 8, 9]);
    }
}
