//! Data-parallel training: `mpirun -np N lstm-wgpu train …` (cargo feature
//! `mpi`) or `train --devices` (threads of one process; docs/distributed.md).
//! Every rank builds the same run (settings, data, initial weights), trains
//! on its contiguous shard of each global batch and sums its gradients with
//! the others' ([`lstm_wgpu::train::reduce`]); only rank 0 writes outputs.
//! A [`Rank`] says which rank a run is; without the feature, or outside
//! mpirun and `--devices`, it is the single process.

use crate::cli::env::gpu_options_for;
use crate::cli::train::report::say_line as say;
use crate::cli::train::settings::TrainArgs;
use lstm_wgpu::error::Result;
use lstm_wgpu::gpu::GpuContext;
use lstm_wgpu::gpu::GpuOptions;
use lstm_wgpu::run::{RunConfig, Trained};
use lstm_wgpu::train::reduce::{Reducer, ThreadReducer};
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
    check_batch(c.batch, rank_size().1, "MPI ranks")?;
    Ok(group)
}

/// Joins the MPI job this process is a rank of, if any (sums then wait
/// `timeout_s` for a peer, `--mpi-timeout`).
pub(crate) fn join(timeout_s: Option<u64>) -> Result<Group> {
    let _ = TIMEOUT.set(timeout(timeout_s));
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

/// `--mpi-timeout SECS` (default [`DEFAULT_TIMEOUT_S`]; 0: `None`,
/// forever).
pub(crate) fn timeout(timeout_s: Option<u64>) -> Option<std::time::Duration> {
    let t = timeout_s.unwrap_or(DEFAULT_TIMEOUT_S);
    (t > 0).then(|| std::time::Duration::from_secs(t))
}

/// Refuses a global batch of `batch` that does not divide over `size`
/// ranks (`what`: how the ranks are called).
pub(crate) fn check_batch(batch: usize, size: usize, what: &str) -> Result<()> {
    if batch.is_multiple_of(size) {
        return Ok(());
    }
    Err(lstm_wgpu::Error::Invalid(format!(
        "--batch {batch}: the global batch must divide evenly over the {size} {what}; \
         use a multiple of {size}"
    )))
}

/// The ranks of the MPI job that started this process, as its launcher
/// says (OpenMPI's or a PMI one's size; 1 outside MPI), without joining it.
pub(crate) fn launched_ranks() -> usize {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
        .iter()
        .filter_map(|v| std::env::var(v).ok()?.trim().parse().ok())
        .next()
        .unwrap_or(1)
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

/// Where a run stands in a data-parallel group: the process (alone, or a
/// rank of the MPI job that started it) or one thread of `--devices`.
pub(crate) struct Rank {
    rank: usize,
    size: usize,
    /// The group's reducer, until the run takes it.
    reducer: Option<Box<dyn Reducer>>,
    /// `--devices`: this thread's adapter.
    gpu: Option<GpuOptions>,
}

impl Rank {
    /// This process: rank 0 of 1, or its rank of the MPI job it joined.
    pub(crate) fn process() -> Rank {
        let (rank, size) = rank_size();
        Rank {
            rank,
            size,
            reducer: mpi_reducer(size),
            gpu: None,
        }
    }

    /// Rank `r.rank()` of a `--devices` group, on the adapter of `gpu`.
    pub(crate) fn device(r: ThreadReducer, gpu: GpuOptions) -> Rank {
        Rank {
            rank: r.rank(),
            size: r.size(),
            reducer: Some(Box::new(r)),
            gpu: Some(gpu),
        }
    }

    /// Whether this rank writes the run's outputs: rank 0, or the single
    /// process.
    pub(crate) fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// The settings of this rank: ranks other than 0 write no metrics,
    /// TensorBoard events or plot and show no progress bar (checkpoints
    /// stay named: gathering their carried state is collective, and the
    /// library keeps them from the disk).
    pub(crate) fn args(&self, mut a: TrainArgs) -> TrainArgs {
        if !self.is_root() {
            a.metrics = None;
            a.tensorboard = None;
            a.plot = None;
            a.no_progress = true;
        }
        a
    }

    /// The reducer the library's run joins (and through it refuses what
    /// would make the ranks' models differ); `None` for a single process.
    pub(crate) fn take_reducer(&mut self) -> Option<Box<dyn Reducer>> {
        self.reducer.take()
    }

    /// Opens this rank's GPU: under `--devices` its entry's adapter; under
    /// MPI with several ranks and no `--device` or `WGPU_ADAPTER_NAME`,
    /// adapter `rank` modulo the GPUs
    /// ([`lstm_wgpu::gpu::GpuOptions::adapter_index`]); otherwise as a
    /// single run does.
    pub(crate) fn open_gpu(&self, verbose: bool) -> Result<Arc<GpuContext>> {
        let (rank, size) = (self.rank, self.size);
        let o = match &self.gpu {
            Some(o) => o.clone(),
            None if size == 1 => return crate::cli::env::open_gpu(verbose),
            None => {
                let mut o = gpu_options_for(rank)?;
                if o.device.is_none() {
                    o.adapter_index = Some(rank);
                }
                o
            }
        };
        Ok(Arc::new(GpuContext::with_options(o)?))
    }

    /// Says which adapter (`ctx`'s) this rank runs on and which sequences
    /// of each global batch of `batch` it trains on, with several ranks:
    /// once the run has joined the group, so that a refusal every rank
    /// meets comes first and alone.
    pub(crate) fn joined(&self, ctx: &GpuContext, batch: usize) {
        let (rank, size) = (self.rank, self.size);
        if size > 1 {
            let b = batch / size;
            say(format!(
                "rank {rank} of {size}: adapter: {}",
                ctx.describe()
            ));
            say(format!(
                "rank {rank} of {size}: sequences {}..{} of each global batch of {batch}",
                rank * b,
                (rank + 1) * b,
            ));
        }
    }

    /// With several ranks, says on stderr which rank this is and a CRC-32C
    /// of its parameters' bits, so that a run shows every rank holding the
    /// same weights.
    pub(crate) fn report(&self, t: &Trained) {
        let (rank, size) = (self.rank, self.size);
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
    }
}

/// The reducer of this process's MPI job, if it has `size` > 1 ranks.
fn mpi_reducer(size: usize) -> Option<Box<dyn Reducer>> {
    if size == 1 {
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
