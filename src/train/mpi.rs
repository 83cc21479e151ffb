//! [`Reducer`] over MPI (cargo feature `mpi`, through rsmpi's `mpi` crate).
//!
//! The sum is a gather to rank 0, rank 0 adding the parts in rank order
//! ([`sum_in_rank_order`]), and a broadcast of the result, rather than
//! `MPI_Allreduce`, whose grouping of the additions is the
//! implementation's and may differ between ranks or runs. It moves
//! (N − 1)·n values in and out of rank 0 for n values on N ranks: fine for
//! a few MB of LSTM gradients on a handful of ranks, see
//! docs/distributed.md for the cost model.

use super::reduce::{Reducer, sum_in_rank_order};
use crate::error::Result;
use mpi::traits::{Communicator, Root};

/// Sums over the ranks of an MPI communicator (e.g.
/// `mpi::initialize()?.world()`); the caller keeps the `Universe` alive.
pub struct MpiReducer {
    comm: mpi::topology::SimpleCommunicator,
}

impl MpiReducer {
    /// A reducer over every rank of `comm`.
    pub fn new(comm: mpi::topology::SimpleCommunicator) -> Self {
        MpiReducer { comm }
    }

    fn sum<T>(&self, v: &mut [T]) -> Result<()>
    where
        T: Copy + Default + std::ops::AddAssign + mpi::datatype::Equivalence,
    {
        let size = self.comm.size() as usize;
        if size == 1 {
            return Ok(());
        }
        let root = self.comm.process_at_rank(0);
        if self.comm.rank() == 0 {
            let mut all = vec![T::default(); v.len() * size];
            root.gather_into_root(&v[..], &mut all[..]);
            v.copy_from_slice(&sum_in_rank_order(&all, size));
        } else {
            root.gather_into(&v[..]);
        }
        root.broadcast_into(v);
        Ok(())
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
