//! The MPI backend of [`Collective`]: `mpirun -np N trainer …` (Open MPI, MPICH), through the
//! `mpi` crate.
//!
//! MPI has no timeouts of its own: a rank that dies makes `mpirun` stop the others, but a rank
//! that hangs would keep them waiting. A watchdog thread therefore stops the job when one
//! collective has waited longer than the timeout ([`Collective::set_timeout`],
//! `--collective-timeout`),
//! naming the operation and the rank.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Root};
use mpi::Threading;

use super::Collective;
use crate::{Error, Result};

/// What the watchdog watches: the collective in progress and since when.
#[derive(Default)]
struct Watch {
    busy: Option<(Instant, &'static str)>,
    timeout: Option<Duration>,
}

/// The MPI world communicator.
pub struct Mpi {
    comm: Mutex<SimpleCommunicator>,
    rank: usize,
    size: usize,
    watch: Arc<Mutex<Watch>>,
}

// SAFETY: MPI is initialised with `Threading::Serialized` (or better), and every call into MPI
// goes through the `comm` mutex, so no two threads call MPI at the same time. The communicator
// handle itself is a plain value valid in every thread of the process.
unsafe impl Send for Mpi {}
// SAFETY: see `Send`: shared access is serialised by the mutex.
unsafe impl Sync for Mpi {}

/// The watchdog's default: longer than any rank's pause between two collectives (rank 0
/// evaluating on the test set while the others wait at the next step).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

impl Mpi {
    /// Initialises MPI; the returned [`Universe`] finalises it when dropped.
    pub fn init() -> Result<(Universe, Mpi)> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| Error::Config("MPI was already initialised".into()))?;
        if threading < Threading::Serialized {
            return Err(Error::Config(format!(
                "the MPI library offers thread level {threading:?}, the trainer needs Serialized"
            )));
        }
        let comm = universe.world();
        let (rank, size) = (comm.rank() as usize, comm.size() as usize);
        let watch = Arc::new(Mutex::new(Watch {
            busy: None,
            timeout: Some(DEFAULT_TIMEOUT),
        }));
        spawn_watchdog(watch.clone(), rank);
        Ok((
            universe,
            Mpi {
                comm: Mutex::new(comm),
                rank,
                size,
                watch,
            },
        ))
    }

    /// Runs `f` on the communicator, watched by the watchdog as operation `what`.
    fn call<R>(&self, what: &'static str, f: impl FnOnce(&SimpleCommunicator) -> R) -> R {
        let comm = self.comm.lock().unwrap_or_else(|e| e.into_inner());
        self.watch.lock().unwrap_or_else(|e| e.into_inner()).busy = Some((Instant::now(), what));
        let r = f(&comm);
        self.watch.lock().unwrap_or_else(|e| e.into_inner()).busy = None;
        r
    }
}

/// Stops the process (and so, through `mpirun`, the job) when a collective waits too long.
fn spawn_watchdog(watch: Arc<Mutex<Watch>>, rank: usize) {
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(500));
        let w = watch.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some((since, what)), Some(timeout)) = (w.busy, w.timeout) {
            if since.elapsed() > timeout {
                eprintln!(
                    "error: rank {rank}: `{what}` waited {:.0} s for the other ranks (timeout {:.0} s, --collective-timeout): a rank has stopped or hangs; stopping the job",
                    since.elapsed().as_secs_f64(),
                    timeout.as_secs_f64()
                );
                // Not MPI_Abort: this thread may not call MPI while the main one is inside it.
                // mpirun sees the abnormal exit and stops every other rank.
                std::process::abort();
            }
        }
    });
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.size
    }

    fn backend(&self) -> &'static str {
        "mpi"
    }

    fn all_reduce_f32(&self, xs: &mut [f32]) -> Result<()> {
        let send = xs.to_vec();
        self.call("all-reduce", |c| {
            c.all_reduce_into(&send[..], xs, SystemOperation::sum())
        });
        Ok(())
    }

    fn all_reduce_f64(&self, xs: &mut [f64]) -> Result<()> {
        let send = xs.to_vec();
        self.call("all-reduce", |c| {
            c.all_reduce_into(&send[..], xs, SystemOperation::sum())
        });
        Ok(())
    }

    fn all_gather_f32(&self, xs: &[f32]) -> Result<Vec<f32>> {
        let mut out = vec![0f32; xs.len() * self.size];
        self.call("all-gather", |c| c.all_gather_into(xs, &mut out[..]));
        Ok(out)
    }

    fn all_gather_f64(&self, xs: &[f64]) -> Result<Vec<f64>> {
        let mut out = vec![0f64; xs.len() * self.size];
        self.call("all-gather", |c| c.all_gather_into(xs, &mut out[..]));
        Ok(out)
    }

    fn broadcast_f32(&self, xs: &mut [f32], root: usize) -> Result<()> {
        super::check_root(root, self.size)?;
        self.call("broadcast", |c| {
            c.process_at_rank(root as i32).broadcast_into(xs)
        });
        Ok(())
    }

    fn broadcast_f64(&self, xs: &mut [f64], root: usize) -> Result<()> {
        super::check_root(root, self.size)?;
        self.call("broadcast", |c| {
            c.process_at_rank(root as i32).broadcast_into(xs)
        });
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.call("barrier", |c| c.barrier());
        Ok(())
    }

    fn set_timeout(&self, timeout: Option<Duration>) {
        self.watch.lock().unwrap_or_else(|e| e.into_inner()).timeout = timeout;
    }

    fn abort(&self, code: i32) -> ! {
        let comm = self.comm.lock().unwrap_or_else(|e| e.into_inner());
        comm.abort(code)
    }
}
