//! `mpirun -np N lstm-wgpu train …`: data-parallel training over MPI
//! (cargo feature `mpi`; docs/distributed.md). Every rank builds the same
//! run (settings, data, initial weights), trains on its contiguous shard
//! of each global batch and sums its gradients with the others'
//! ([`lstm_wgpu::train::reduce`]); only rank 0 writes outputs. Without the
//! feature, or outside mpirun, every function here is the single process.

use crate::cli::env::gpu_options_for;
use crate::cli::train::report::say_line as say;
use crate::cli::train::settings::TrainArgs;
use lstm_wgpu::error::Result;
use lstm_wgpu::gpu::GpuContext;
use lstm_wgpu::run::{RunConfig, Trained};
use lstm_wgpu::train::reduce::Reducer;
use std::sync::Arc;

/// The MPI environment of a run under mpirun, finalized when dropped.
pub(crate) struct Group {
    #[cfg(feature = "mpi")]
    _universe: Option<mpi::environment::Universe>,
}

/// How long a sum waits for a peer (`--mpi-timeout`; `None`: forever).
static TIMEOUT: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();

/// `--mpi-timeout`'s default, in seconds: far above a step or a
/// validation of the models this engine trains, even on a CPU driver.
const DEFAULT_TIMEOUT_S: u64 = 600;

impl Group {
    /// `r`, the outcome of this rank's run; under MPI with several ranks
    /// an error is said on stderr naming this rank, then the whole job is
    /// aborted (`MPI_Abort`), so that no rank waits on it: every rank exits
    /// non-zero within the peers' timeouts.
    pub(crate) fn finish(self, r: Result<()>) -> Result<()> {
        #[cfg(feature = "mpi")]
        if let (Err(e), Some(u)) = (&r, &self._universe) {
            use mpi::traits::Communicator;
            let w = u.world();
            if w.size() > 1 {
                let msg = e.to_string();
                let msg = msg.split_whitespace().collect::<Vec<_>>().join(" ");
                say(format!("error: rank {} of {}: {msg}", w.rank(), w.size()));
                w.abort(2);
            }
        }
        r
    }
}

/// Whether this process was started by an MPI launcher (OpenMPI's
/// mpirun, or a PMI/PMIx one such as MPICH's or Slurm's).
#[cfg(feature = "mpi")]
fn launched_by_mpi() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

/// Joins the MPI job this process is a rank of, if any, and checks that
/// the global batch divides over its ranks.
pub(crate) fn start(c: &RunConfig, timeout_s: Option<u64>) -> Result<Group> {
    let group = join(timeout_s)?;
    let size = rank_size().1;
    if !c.batch.is_multiple_of(size) {
        return Err(lstm_wgpu::Error::Invalid(format!(
            "--batch {}: the global batch must divide evenly over the {size} MPI ranks; \
             use a multiple of {size}",
            c.batch
        )));
    }
    Ok(group)
}

/// Joins the MPI job this process is a rank of, if any (sums then wait
/// `timeout_s` for a peer, `--mpi-timeout`).
pub(crate) fn join(timeout_s: Option<u64>) -> Result<Group> {
    let t = timeout_s.unwrap_or(DEFAULT_TIMEOUT_S);
    let _ = TIMEOUT.set((t > 0).then(|| std::time::Duration::from_secs(t)));
    #[cfg(feature = "mpi")]
    {
        let universe =
            match launched_by_mpi() {
                true => Some(mpi::initialize().ok_or_else(|| {
                    lstm_wgpu::Error::Invalid("MPI was already initialized".into())
                })?),
                false => None,
            };
        Ok(Group {
            _universe: universe,
        })
    }
    #[cfg(not(feature = "mpi"))]
    Ok(Group {})
}

/// This process's rank and the number of ranks (0 and 1 outside MPI).
pub(crate) fn rank_size() -> (usize, usize) {
    #[cfg(feature = "mpi")]
    if mpi::environment::is_initialized() && !mpi::environment::is_finalized() {
        use mpi::traits::Communicator;
        let w = mpi::topology::SimpleCommunicator::world();
        return (w.rank() as usize, w.size() as usize);
    }
    (0, 1)
}

/// Whether this process writes the run's outputs: rank 0, or the single
/// process.
pub(crate) fn is_root() -> bool {
    rank_size().0 == 0
}

/// The settings of this rank: ranks other than 0 write no metrics,
/// TensorBoard events or plot and show no progress bar (checkpoints stay
/// named: gathering their carried state is collective, and
/// [`skip_write`] keeps them from the disk).
pub(crate) fn rank_args(mut a: TrainArgs) -> TrainArgs {
    if !is_root() {
        a.metrics = None;
        a.tensorboard = None;
        a.plot = None;
        a.no_progress = true;
    }
    a
}

/// Opens this rank's GPU: under MPI with several ranks and no
/// `--device` or `WGPU_ADAPTER_NAME`, adapter `rank` modulo the GPUs
/// ([`lstm_wgpu::gpu::GpuOptions::adapter_index`]); otherwise as a single
/// run does.
pub(crate) fn open_gpu(verbose: bool) -> Result<Arc<GpuContext>> {
    let (rank, size) = rank_size();
    if size == 1 {
        return crate::cli::env::open_gpu(verbose);
    }
    let mut o = gpu_options_for(rank)?;
    if o.device.is_none() {
        o.adapter_index = Some(rank);
    }
    let ctx = GpuContext::with_options(o)?;
    say(format!(
        "rank {rank} of {size}: adapter: {}",
        ctx.describe()
    ));
    Ok(Arc::new(ctx))
}

/// The reducer of this rank's MPI job, if it has several ranks: the
/// library's run then trains on this rank's share of every global batch
/// (and refuses what would make the ranks' models differ).
pub(crate) fn reducer() -> Option<Box<dyn Reducer>> {
    if rank_size().1 == 1 {
        return None;
    }
    #[cfg(feature = "mpi")]
    {
        let world = mpi::topology::SimpleCommunicator::world();
        let timeout = TIMEOUT.get().copied().flatten();
        Some(Box::new(
            lstm_wgpu::train::mpi::MpiReducer::new(world).with_timeout(timeout),
        ))
    }
    #[cfg(not(feature = "mpi"))]
    None
}

/// Says which sequences of each global batch of `batch` this rank trains
/// on, under MPI with several ranks.
pub(crate) fn joined(batch: usize) {
    let (rank, size) = rank_size();
    if size > 1 {
        let b = batch / size;
        say(format!(
            "rank {rank} of {size}: sequences {}..{} of each global batch of {batch}",
            rank * b,
            (rank + 1) * b,
        ));
    }
}

/// Under MPI, says on stderr which rank this is and a CRC-32C of its
/// parameters' bits, so that a run shows every rank holding the same
/// weights.
pub(crate) fn report(t: &Trained) -> Result<()> {
    let (rank, size) = rank_size();
    if size > 1 {
        // The parameters in table order, as the trainer's flat buffer.
        let v: Vec<f32> = (t.model.checkpoint().state_dict().into_iter())
            .flat_map(|t| t.data)
            .collect();
        let crc = crc32c::crc32c(bytemuck::cast_slice(&v));
        say(format!(
            "rank {rank} of {size}: parameters crc32c {crc:08x}"
        ));
    }
    Ok(())
}
