//! [`Reducer`] over MPI (cargo feature `mpi`, through rsmpi's `mpi` crate).
//!
//! The sum is each rank sending its part to rank 0, rank 0 adding the
//! parts in rank order ([`sum_in_rank_order`]) and sending the result back,
//! rather than `MPI_Allreduce`, whose grouping of the additions is the
//! implementation's and may differ between ranks or runs. It moves
//! (N − 1)·n values in and out of rank 0 for n values on N ranks: fine for
//! a few MB of LSTM gradients on a handful of ranks, see
//! docs/distributed.md for the cost model.
//!
//! The messages are non-blocking and polled against a deadline
//! ([`MpiReducer::with_timeout`]), so a rank that died, hangs or failed
//! without aborting the job turns into an error naming it, not a hang.

use super::reduce::{Reducer, sum_in_rank_order};
use crate::error::{Error, Result};
use mpi::request::{LocalScope, Request};
use mpi::traits::{Communicator, Destination, Source};
use std::time::{Duration, Instant};

/// Tag of a rank's part on its way to rank 0.
const PART: i32 = 1;
/// Tag of the sum on its way back.
const SUM: i32 = 2;

/// Sums over the ranks of an MPI communicator (e.g.
/// `mpi::initialize()?.world()`); the caller keeps the `Universe` alive.
pub struct MpiReducer {
    comm: mpi::topology::SimpleCommunicator,
    timeout: Option<Duration>,
}

/// Outstanding requests, each with the rank at its other end.
type Pending<'a, 'b, T> = Vec<(usize, Request<'a, [T], &'b LocalScope<'a>>)>;

impl MpiReducer {
    /// A reducer over every rank of `comm`, waiting as long as it takes.
    pub fn new(comm: mpi::topology::SimpleCommunicator) -> Self {
        MpiReducer {
            comm,
            timeout: None,
        }
    }

    /// Gives up a sum after `timeout` without a peer's message (`None`:
    /// waits forever). The error names the ranks not heard from; the MPI
    /// job is then broken and the caller should abort it
    /// (`MPI_Abort`), as its buffers stay posted.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    fn sum<T>(&self, v: &mut [T]) -> Result<()>
    where
        T: Copy + Default + std::ops::AddAssign + mpi::datatype::Equivalence,
    {
        let size = self.comm.size() as usize;
        let n = v.len();
        if size == 1 || n == 0 {
            return Ok(());
        }
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let root = self.comm.process_at_rank(0);
        if self.comm.rank() == 0 {
            let mut all = vec![T::default(); n * size];
            all[..n].copy_from_slice(v);
            let got = mpi::request::scope(|scope| {
                let reqs = all[n..]
                    .chunks_mut(n)
                    .enumerate()
                    .map(|(i, part)| {
                        let r = self.comm.process_at_rank(i as i32 + 1);
                        (i + 1, r.immediate_receive_into_with_tag(scope, part, PART))
                    })
                    .collect();
                settle(reqs, deadline)
            });
            if let Err(silent) = got {
                // Posted receives may still write into `all`: keep it.
                std::mem::forget(all);
                return Err(self.silent("sent no part of the sum", &silent));
            }
            v.copy_from_slice(&sum_in_rank_order(&all, size));
            let out = v.to_vec();
            let sent = mpi::request::scope(|scope| {
                let reqs = (1..size)
                    .map(|r| {
                        let p = self.comm.process_at_rank(r as i32);
                        (r, p.immediate_send_with_tag(scope, &out[..], SUM))
                    })
                    .collect();
                settle(reqs, deadline)
            });
            if let Err(silent) = sent {
                std::mem::forget(out);
                return Err(self.silent("took no sum", &silent));
            }
        } else {
            let part = v.to_vec();
            let mut sum = vec![T::default(); n];
            let done = mpi::request::scope(|scope| {
                let reqs = vec![
                    (0, root.immediate_send_with_tag(scope, &part[..], PART)),
                    (
                        0,
                        root.immediate_receive_into_with_tag(scope, &mut sum[..], SUM),
                    ),
                ];
                settle(reqs, deadline)
            });
            if done.is_err() {
                std::mem::forget((part, sum));
                return Err(self.silent("sent no sum", &[0]));
            }
            v.copy_from_slice(&sum);
        }
        Ok(())
    }

    /// The error of a sum that timed out waiting for `ranks`.
    fn silent(&self, what: &str, ranks: &[usize]) -> Error {
        let names: Vec<String> = ranks.iter().map(usize::to_string).collect();
        let secs = self.timeout.map_or(0.0, |t| t.as_secs_f64());
        Error::Invalid(format!(
            "MPI: rank {} {what} within {secs} s (it died, hangs or failed); stopping the job",
            names.join(", ")
        ))
    }
}

/// Waits for every request, or until `deadline`: then the ranks of the
/// requests still open, which are released from their scope unfinished
/// (their buffers must outlive them: the caller leaks them).
fn settle<'a, 'b, T>(
    mut pending: Pending<'a, 'b, T>,
    deadline: Option<Instant>,
) -> std::result::Result<(), Vec<usize>>
where
    T: mpi::datatype::Equivalence,
{
    let Some(deadline) = deadline else {
        for (_, r) in pending {
            r.wait();
        }
        return Ok(());
    };
    loop {
        let mut open = Vec::new();
        for (who, r) in pending {
            if let Err(r) = r.test() {
                open.push((who, r));
            }
        }
        if open.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let mut who: Vec<usize> = open.iter().map(|(w, _)| *w).collect();
            who.dedup();
            for (_, r) in open {
                // SAFETY: the request stays posted with MPI; its buffer is
                // leaked by the caller, so it never dangles.
                let _ = unsafe { r.into_raw() };
            }
            return Err(who);
        }
        pending = open;
        std::thread::sleep(Duration::from_micros(50));
    }
}

impl Reducer for MpiReducer {
    fn rank(&self) -> usize {
        self.comm.rank() as usize
    }

    fn size(&self) -> usize {
        self.comm.size() as usize
    }

    fn sum_f32(&self, v: &mut [f32]) -> Result<()> {
        self.sum(v)
    }

    fn sum_f64(&self, v: &mut [f64]) -> Result<()> {
        self.sum(v)
    }
}
