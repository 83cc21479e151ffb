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

/// The gradient bytes a bucket gathers before it is summed
/// ([`plan_buckets`]): PyTorch DDP's first bucket. A model with fewer
/// gradient bytes sums them at once, after backward.
pub const DEFAULT_BUCKET_BYTES: usize = 1 << 20;

/// The bytes of `--bucket-mb MB` (MiB); a negative or non-finite size is
/// refused.
pub fn bucket_bytes(mb: f64) -> Result<usize> {
    if !(mb.is_finite() && mb >= 0.0) {
        return Err(crate::Error::Invalid(format!(
            "--bucket-mb {mb}: a bucket's size must be a finite number of MiB, 0 or more"
        )));
    }
    Ok((mb * (1u64 << 20) as f64).min(usize::MAX as f64) as usize)
}

/// Where the data-parallel steps' time went, in seconds summed over
/// [`ReduceTimes::steps`] steps: the host's time in each phase. With
/// several buckets the phases overlap the GPU's backward (a bucket is read
/// back and summed while the GPU computes the next), so `compute` is the
/// part of the GPU's work the host waited for, not all of it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ReduceTimes {
    /// Data-parallel steps counted.
    pub steps: u64,
    /// Buckets per step (of the last step counted).
    pub buckets: usize,
    /// Waiting for the GPU to finish the work each bucket waits for.
    pub compute: f64,
    /// Reading the buckets (and the loss) back to the host.
    pub readback: f64,
    /// The sums over the ranks ([`Reducer::sum_f32`]), waits for peers
    /// included.
    pub allreduce: f64,
    /// Writing the sums back until the GPU holds them.
    pub upload: f64,
}

/// A part of the flat gradient buffer summed over the ranks as soon as
/// backward has made it final ([`crate::schedule::Plan::ready`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketPlan {
    /// Dispatches of the step's backward after which it is final.
    pub after: usize,
    /// Its ranges of the gradient buffer (elements), ascending, disjoint.
    pub ranges: Vec<std::ops::Range<usize>>,
}

impl BucketPlan {
    /// Gradients in the bucket.
    pub fn len(&self) -> usize {
        self.ranges.iter().map(|r| r.len()).sum()
    }

    /// True when it holds no gradient.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Buckets of a backward of `end` dispatches over `total` gradients:
/// `ready` says which ranges are final after how many dispatches (in
/// order); the parts listed are gathered in that order until a bucket
/// holds `cap_bytes`, and the last bucket, summed after the whole
/// backward, takes what is left, with every gradient no entry lists.
/// `cap_bytes` = 0 sums each listed part alone; a cap above the model
/// makes one bucket (the blocking sum after backward).
pub fn plan_buckets(
    ready: &[(usize, Vec<std::ops::Range<usize>>)],
    total: usize,
    end: usize,
    cap_bytes: usize,
) -> Vec<BucketPlan> {
    let mut taken = Vec::new();
    let mut out = Vec::new();
    let mut cur = BucketPlan {
        after: 0,
        ranges: Vec::new(),
    };
    for (after, ranges) in ready {
        for r in ranges {
            // Gradients listed twice count once, where first listed.
            let fresh = minus(r.start.min(total)..r.end.min(total), &taken);
            taken = coalesce([taken, fresh.clone()].concat());
            cur.ranges.extend(fresh);
        }
        // Never before an earlier part (a bucket waits for all of its own).
        cur.after = (*after)
            .min(end)
            .max(out.last().map_or(0, |b: &BucketPlan| b.after));
        if !cur.is_empty() && cur.len() * 4 >= cap_bytes {
            out.push(std::mem::replace(
                &mut cur,
                BucketPlan {
                    after: 0,
                    ranges: Vec::new(),
                },
            ));
        }
    }
    cur.ranges.extend(minus(0..total, &taken));
    cur.after = end;
    out.push(cur);
    for b in &mut out {
        b.ranges = coalesce(std::mem::take(&mut b.ranges));
    }
    out.retain(|b| !b.is_empty());
    out
}

/// The parts of `r` outside `taken` (sorted, disjoint).
fn minus(
    r: std::ops::Range<usize>,
    taken: &[std::ops::Range<usize>],
) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut from = r.start;
    for t in taken.iter().filter(|t| t.end > r.start && t.start < r.end) {
        if t.start > from {
            out.push(from..t.start);
        }
        from = from.max(t.end);
    }
    if from < r.end {
        out.push(from..r.end);
    }
    out
}

/// Sorted, merged ranges.
fn coalesce(mut v: Vec<std::ops::Range<usize>>) -> Vec<std::ops::Range<usize>> {
    v.sort_by_key(|r| r.start);
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for r in v {
        match out.last_mut() {
            Some(l) if l.end >= r.start => l.end = l.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// A bucket with the host buffer it is read into.
pub(crate) struct Bucket {
    pub(crate) plan: BucketPlan,
    pub(crate) staging: wgpu::Buffer,
}

impl Bucket {
    /// Copies the bucket's gradients (and, with `loss`, the step's loss
    /// after them) into its staging buffer, in `enc`.
    pub(crate) fn encode_copy(
        &self,
        enc: &mut wgpu::CommandEncoder,
        grads: &wgpu::Buffer,
        loss: Option<&wgpu::Buffer>,
    ) {
        let mut at = 0u64;
        for r in &self.plan.ranges {
            let bytes = 4 * r.len() as u64;
            enc.copy_buffer_to_buffer(grads, 4 * r.start as u64, &self.staging, at, bytes);
            at += bytes;
        }
        if let Some(loss) = loss {
            enc.copy_buffer_to_buffer(loss, 0, &self.staging, at, 4);
        }
    }
}

/// The data-parallel part of a training step: `submit(i, enc)` records
/// the work bucket i waits for into `enc`, ending with the bucket's copy
/// to its staging buffer (the first's with the step's loss, word 0 of
/// `loss`: this rank's share of the global mean), and submits it. In
/// order, each bucket is read back once its submission is done, summed
/// over the ranks with `r` and written back; the writes land before the
/// next submit. The next bucket's work is submitted before a bucket is
/// waited for, so the GPU runs it during the sum (also where a submit
/// waits for the previous one, as lavapipe's does), one submission ahead:
/// the last bucket's sum runs alone. With `times`, each phase's time is
/// added to it (and the uploads are waited for).
pub(crate) fn reduce_buckets(
    ctx: &GpuContext,
    buckets: &[Bucket],
    enc: &mut wgpu::CommandEncoder,
    submit: &mut dyn FnMut(usize, &mut wgpu::CommandEncoder) -> Result<wgpu::SubmissionIndex>,
    (grads, loss): (&wgpu::Buffer, &wgpu::Buffer),
    r: &dyn Reducer,
    times: Option<&mut ReduceTimes>,
) -> Result<()> {
    let mut t = ReduceTimes {
        steps: 1,
        buckets: buckets.len(),
        ..Default::default()
    };
    let mut clock = std::time::Instant::now();
    let mut lap = || {
        let now = std::time::Instant::now();
        let s = now.duration_since(clock).as_secs_f64();
        clock = now;
        s
    };
    let mut next = match buckets.is_empty() {
        true => None,
        false => Some(submit(0, enc)?),
    };
    for (i, b) in buckets.iter().enumerate() {
        let sub = next
            .take()
            .ok_or_else(|| crate::Error::Gpu("no bucket submitted".into()))?;
        if i + 1 < buckets.len() {
            next = Some(submit(i + 1, enc)?);
        }
        let n = b.plan.len() + usize::from(i == 0);
        ctx.wait_for(sub.clone())?;
        t.compute += lap();
        let mut v: Vec<f32> = ctx.map_read_after(&b.staging, 4 * n as u64, Some(sub))?;
        t.readback += lap();
        r.sum_f32(&mut v)?;
        t.allreduce += lap();
        let mut at = 0;
        for range in &b.plan.ranges {
            ctx.write(grads, range.start, &v[at..at + range.len()]);
            at += range.len();
        }
        if i == 0 {
            ctx.write(loss, 0, &v[at..]);
        }
        t.upload += lap();
    }
    let Some(times) = times else {
        return Ok(());
    };
    // The writes land with the next submit: an empty one, waited for.
    ctx.queue.submit([]);
    ctx.wait()?;
    t.upload += lap();
    times.steps += 1;
    times.buckets = t.buckets;
    times.compute += t.compute;
    times.readback += t.readback;
    times.allreduce += t.allreduce;
    times.upload += t.upload;
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
    #[allow(clippy::single_range_in_vec_init)]
    fn buckets_gather_parts_as_they_become_final() {
        // Head (8..10) after 3 dispatches, layer 1 (4..8) after 7, layer 0
        // (0..4 but 2) after 12; 10..12 (embedding) and 2 only at the end.
        let ready = vec![(3, vec![8..10]), (7, vec![4..8]), (12, vec![0..2, 3..4])];
        let b = |after, ranges: Vec<std::ops::Range<usize>>| BucketPlan { after, ranges };
        assert_eq!(
            plan_buckets(&ready, 12, 15, 0),
            vec![
                b(3, vec![8..10]),
                b(7, vec![4..8]),
                b(12, vec![0..2, 3..4]),
                b(15, vec![2..3, 10..12]),
            ]
        );
        // 12 bytes: the head joins layer 1; layer 0 closes its own.
        assert_eq!(
            plan_buckets(&ready, 12, 15, 12),
            vec![
                b(7, vec![4..10]),
                b(12, vec![0..2, 3..4]),
                b(15, vec![2..3, 10..12])
            ]
        );
        // 24 bytes: layer 0 joins the rest.
        assert_eq!(
            plan_buckets(&ready, 12, 15, 24),
            vec![b(7, vec![4..10]), b(15, vec![0..4, 10..12])]
        );
        // Out of order: a bucket never comes before the one ahead of it.
        assert_eq!(
            plan_buckets(&[(5, vec![0..1]), (2, vec![1..2])], 2, 9, 0),
            vec![b(5, vec![0..1]), b(5, vec![1..2])]
        );
        // Parts listed twice, or past the end, count once.
        assert_eq!(
            plan_buckets(&[(1, vec![0..3]), (2, vec![2..6, 9..20])], 8, 4, 0),
            vec![b(1, vec![0..3]), b(2, vec![3..6]), b(4, vec![6..8])]
        );
        // One bucket: the sum after backward.
        assert_eq!(
            plan_buckets(&ready, 12, 15, 1 << 20),
            vec![b(15, vec![0..12])]
        );
        assert_eq!(plan_buckets(&[], 5, 2, 0), vec![b(2, vec![0..5])]);
        // Every gradient is in exactly one bucket.
        for cap in [0, 4, 16, 40, 1000] {
            let all: usize = plan_buckets(&ready, 12, 15, cap)
                .iter()
                .map(|b| b.len())
                .sum();
            assert_eq!(all, 12);
        }
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
