//! Data parallelism across processes: the collective interface the engine trains through.
//!
//! A job of `W` processes (ranks) trains one network: every rank takes its shard of the same
//! seeded global batch ([`shard`]), computes its loss and gradients, the gradients are
//! all-reduced and averaged ([`all_reduce_gradients`]), and every rank makes the same update, so
//! the weights and the optimizer's state stay identical on every rank. Rank 0 alone writes
//! checkpoints, metrics and progress.
//!
//! **Gradient scale.** With `L_r` the loss of rank `r` on its shard (a mean over its images), the
//! job minimises `L = (1/W) Σ_r L_r`, the loss of the global batch. Where a rank's loss also
//! depends on other ranks' rows (NT-Xent against gathered negatives, synchronised batch norm), the
//! gather's backward ([`all_gather`]) sums every rank's gradient of the gathered rows, so each
//! rank's backward gives the gradient of `Σ_r L_r` through its own activations, and the average
//! over the ranks is `∇L`. The equivalence test checks it: two ranks at batch B equal one process
//! at batch 2B.
//!
//! | backend | when | build |
//! | --- | --- | --- |
//! | [`Single`] | one process (the default; every collective is the identity, no cost) | always |
//! | `Mpi` | launched by `mpirun` (`OMPI_COMM_WORLD_SIZE`, `PMI_SIZE` set) | `--features mpi` |

#[cfg(feature = "mpi")]
pub mod mpi;

use std::sync::{Arc, OnceLock};

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};

use crate::optim::Param;
use crate::{Error, Result};

/// The collective operations of a data-parallel job, over host buffers. Every rank must call the
/// same operations in the same order with the same lengths.
pub trait Collective: Send + Sync {
    /// This process's rank, `0..world_size()`.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn world_size(&self) -> usize;
    /// The backend's name (`single`, `mpi`).
    fn backend(&self) -> &'static str;
    /// Element-wise sum over the ranks, in place.
    fn all_reduce_f32(&self, xs: &mut [f32]) -> Result<()>;
    /// Element-wise sum over the ranks, in place.
    fn all_reduce_f64(&self, xs: &mut [f64]) -> Result<()>;
    /// Every rank's `xs` (the same length on every rank), concatenated in rank order.
    fn all_gather_f32(&self, xs: &[f32]) -> Result<Vec<f32>>;
    /// Every rank's `xs`, concatenated in rank order.
    fn all_gather_f64(&self, xs: &[f64]) -> Result<Vec<f64>>;
    /// Rank `root`'s `xs` into every rank's `xs` (the same length on every rank).
    fn broadcast_f32(&self, xs: &mut [f32], root: usize) -> Result<()>;
    /// Rank `root`'s `xs` into every rank's `xs`.
    fn broadcast_f64(&self, xs: &mut [f64], root: usize) -> Result<()>;
    /// Waits for every rank.
    fn barrier(&self) -> Result<()>;
    /// Stops every rank of the job (after this rank reported an error), exiting with `code`.
    fn abort(&self, code: i32) -> !;
    /// How long one collective may wait for the other ranks before the job is stopped (None:
    /// forever). A single process never waits.
    fn set_timeout(&self, _timeout: Option<std::time::Duration>) {}
}

/// The world of a single process: rank 0 of 1; every collective is the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn backend(&self) -> &'static str {
        "single"
    }
    fn all_reduce_f32(&self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_f64(&self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn all_gather_f32(&self, xs: &[f32]) -> Result<Vec<f32>> {
        Ok(xs.to_vec())
    }
    fn all_gather_f64(&self, xs: &[f64]) -> Result<Vec<f64>> {
        Ok(xs.to_vec())
    }
    fn broadcast_f32(&self, _: &mut [f32], root: usize) -> Result<()> {
        check_root(root, 1)
    }
    fn broadcast_f64(&self, _: &mut [f64], root: usize) -> Result<()> {
        check_root(root, 1)
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// An error unless `root` is a rank of a world of `size`.
pub(crate) fn check_root(root: usize, size: usize) -> Result<()> {
    if root >= size {
        return Err(Error::Config(format!(
            "broadcast from rank {root}: the job has ranks 0..{size}"
        )));
    }
    Ok(())
}

/// The job's collective, shared.
pub type World = Arc<dyn Collective>;

static WORLD: OnceLock<World> = OnceLock::new();

/// The world of this process: the one [`init`] set up, else a [`Single`] process.
pub fn world() -> World {
    WORLD.get().cloned().unwrap_or_else(|| Arc::new(Single))
}

/// What keeps the launcher's runtime up: MPI is finalised when it is dropped, so hold it until
/// the end of `main`.
pub struct Launch {
    #[cfg(feature = "mpi")]
    _universe: Option<::mpi::environment::Universe>,
}

impl Launch {
    /// Shuts the launcher's runtime down (`MPI_Finalize` under MPI; nothing in one process).
    /// No collective may follow.
    pub fn finish(self) {}
}

/// The launcher this process was started by, read from its environment: the world size it
/// announces (`OMPI_COMM_WORLD_SIZE` from Open MPI's `mpirun`, `PMI_SIZE` from MPICH's and
/// Slurm's), if any.
pub fn launched_world_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.parse().ok())
}

/// Sets up [`world`] from the launcher: MPI when started by `mpirun` (with the `mpi` feature),
/// else a single process. Call once, first thing in `main`, and keep the returned [`Launch`].
///
/// A process started by `mpirun -np N` (N > 1) in a build without the `mpi` feature is an error
/// saying how to build one, rather than N independent copies of the same job.
pub fn init() -> Result<Launch> {
    let announced = launched_world_size();
    #[cfg(feature = "mpi")]
    if announced.is_some() {
        let (universe, world) = mpi::Mpi::init()?;
        let _ = WORLD.set(Arc::new(world));
        return Ok(Launch {
            _universe: Some(universe),
        });
    }
    if let Some(n) = announced.filter(|&n| n > 1) {
        return Err(Error::Config(format!(
            "this process was started as one of {n} ranks (by mpirun), but this trainer was built \
             without MPI: build it with `cargo build --release -p trainer --features mpi`"
        )));
    }
    Ok(Launch {
        #[cfg(feature = "mpi")]
        _universe: None,
    })
}

/// Rank `rank`'s part of a global batch of `batch.len()` images over `world` ranks: the
/// `rank`-th of `world` equal consecutive slices.
pub fn shard(batch: &[usize], rank: usize, world: usize) -> Result<&[usize]> {
    if world == 0 || rank >= world || batch.len() % world != 0 {
        return Err(Error::Config(format!(
            "a batch of {} images cannot be split into {world} equal shards: choose a batch size divisible by the number of processes",
            batch.len()
        )));
    }
    let n = batch.len() / world;
    Ok(&batch[rank * n..(rank + 1) * n])
}

/// Replaces every gradient of `params` in `grads` by its mean over the ranks, and returns the
/// sum over the ranks of `flags` (sent in the same message: e.g. "Ctrl-C was pressed here").
///
/// A parameter without a gradient has none on every rank (the ranks run the same graph).
pub fn all_reduce_gradients(
    world: &dyn Collective,
    params: &[Param],
    grads: &mut GradStore,
    flags: &[f32],
) -> Result<Vec<f32>> {
    let w = world.world_size();
    if w == 1 {
        return Ok(flags.to_vec());
    }
    let mut flat = Vec::new();
    let mut shapes = Vec::new();
    for p in params {
        if let Some(g) = grads.get(p.var.as_tensor()) {
            let v = g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            shapes.push((p, g.dtype(), flat.len(), v.len()));
            flat.extend(v);
        }
    }
    let grads_len = flat.len();
    flat.extend_from_slice(flags);
    world.all_reduce_f32(&mut flat)?;
    let scale = 1.0 / w as f32;
    for (p, dtype, at, len) in shapes {
        let v: Vec<f32> = flat[at..at + len].iter().map(|g| g * scale).collect();
        let t = p.var.as_tensor();
        let g = Tensor::from_vec(v, t.shape(), t.device())?.to_dtype(dtype)?;
        grads.insert(t, g);
    }
    Ok(flat[grads_len..].to_vec())
}

/// Checks that every rank holds the same `params` (a checksum per rank compared): the ranks
/// started from the same checkpoint or seed. An error names the first rank that differs.
pub fn check_replicas(world: &dyn Collective, params: &[Param]) -> Result<()> {
    if world.world_size() == 1 {
        return Ok(());
    }
    let mut sums = [0f64; 2];
    for (i, p) in params.iter().enumerate() {
        let t = p.var.as_tensor().to_dtype(DType::F64)?;
        sums[0] += t.sum_all()?.to_scalar::<f64>()?;
        sums[1] += (i + 1) as f64 * t.abs()?.sum_all()?.to_scalar::<f64>()?;
    }
    let all = world.all_gather_f64(&sums)?;
    for (r, s) in all.chunks(2).enumerate() {
        if s != sums.as_slice() {
            return Err(Error::Config(format!(
                "rank {r} holds other weights than rank {}: every rank must start from the same seed and the same checkpoint (a run folder every rank reads)",
                world.rank()
            )));
        }
    }
    Ok(())
}

/// `xs` `(n, …)` of every rank concatenated along dimension 0 in rank order, `(W·n, …)`, as a
/// differentiable op: its backward sums every rank's gradient of the gathered rows (an
/// all-reduce) and keeps this rank's rows (see the module docs for why).
///
/// Every rank must pass the same shape. On the CPU, f32 or f64.
pub fn all_gather(world: &World, xs: &Tensor) -> Result<Tensor> {
    if world.world_size() == 1 {
        return Ok(xs.clone());
    }
    let gathered = gather_values(&**world, &xs.detach())?;
    let op = AllGather {
        world: world.clone(),
        gathered,
    };
    Ok(xs.apply_op1_arc(Arc::new(Box::new(op)))?)
}

/// The values of `xs` of every rank, concatenated along dimension 0 (no gradient).
pub fn gather_values(world: &dyn Collective, xs: &Tensor) -> Result<Tensor> {
    let w = world.world_size();
    let mut dims = xs.dims().to_vec();
    if dims.is_empty() {
        return Err(Error::Config(
            "all_gather: a scalar has no rows to gather".into(),
        ));
    }
    dims[0] *= w;
    let flat = xs.flatten_all()?;
    let t = match xs.dtype() {
        DType::F64 => Tensor::from_vec(
            world.all_gather_f64(&flat.to_vec1::<f64>()?)?,
            dims,
            xs.device(),
        )?,
        DType::F32 => Tensor::from_vec(
            world.all_gather_f32(&flat.to_vec1::<f32>()?)?,
            dims,
            xs.device(),
        )?,
        d => {
            let v = flat.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            Tensor::from_vec(world.all_gather_f32(&v)?, dims, xs.device())?.to_dtype(d)?
        }
    };
    Ok(t)
}

/// Element-wise sum over the ranks of `xs` (no gradient).
pub fn reduce_values(world: &dyn Collective, xs: &Tensor) -> Result<Tensor> {
    if world.world_size() == 1 {
        return Ok(xs.clone());
    }
    let flat = xs.flatten_all()?;
    let t = match xs.dtype() {
        DType::F64 => {
            let mut v = flat.to_vec1::<f64>()?;
            world.all_reduce_f64(&mut v)?;
            Tensor::from_vec(v, xs.shape(), xs.device())?
        }
        d => {
            let mut v = flat.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            world.all_reduce_f32(&mut v)?;
            Tensor::from_vec(v, xs.shape(), xs.device())?.to_dtype(d)?
        }
    };
    Ok(t)
}

/// The all-gather of [`all_gather`]: the forward pass returns the values gathered beforehand.
struct AllGather {
    world: World,
    gathered: Tensor,
}

impl CustomOp1 for AllGather {
    fn name(&self) -> &'static str {
        "dist-all-gather"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.gathered.contiguous()?;
        let (storage, layout) = g.storage_and_layout();
        match &*storage {
            candle_core::Storage::Cpu(s) => {
                let out = match s {
                    CpuStorage::F32(v) => CpuStorage::F32(contiguous_part(v, layout)),
                    CpuStorage::F64(v) => CpuStorage::F64(contiguous_part(v, layout)),
                    _ => candle_core::bail!("dist-all-gather: f32 or f64 tensors only"),
                };
                Ok((out, g.shape().clone()))
            }
            _ => candle_core::bail!("dist-all-gather: CPU tensors only"),
        }
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let n = arg.dim(0)?;
        let summed = reduce_values(&*self.world, grad_res).map_err(candle_core::Error::wrap)?;
        Ok(Some(summed.narrow(0, self.world.rank() * n, n)?))
    }
}

/// The elements of a contiguous `layout` over `v`.
fn contiguous_part<T: Copy>(v: &[T], layout: &Layout) -> Vec<T> {
    let start = layout.start_offset();
    v[start..start + layout.shape().elem_count()].to_vec()
}

/// [`models::ops::ChannelSums`] over a world: synchronised batch norm's all-reduce.
pub struct WorldSums(pub World);

impl models::ops::ChannelSums for WorldSums {
    fn all_reduce(&self, sums: &mut [f64]) -> candle_core::Result<()> {
        self.0
            .all_reduce_f64(sums)
            .map_err(candle_core::Error::wrap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_batch_in_order() {
        let b: Vec<usize> = (10..22).collect();
        let parts: Vec<&[usize]> = (0..3).map(|r| shard(&b, r, 3).unwrap()).collect();
        assert_eq!(parts.concat(), b);
        assert_eq!(parts[1], &[14, 15, 16, 17]);
        let e = shard(&b, 0, 5).unwrap_err().to_string();
        assert!(
            e.contains("12 images") && e.contains("5 equal shards"),
            "{e}"
        );
    }

    #[test]
    fn a_single_process_gathers_and_reduces_nothing() -> Result<()> {
        let w: World = Arc::new(Single);
        let x = Tensor::new(&[[1f32, 2.], [3., 4.]], &candle_core::Device::Cpu)?;
        assert_eq!(all_gather(&w, &x)?.to_vec2::<f32>()?, x.to_vec2::<f32>()?);
        assert_eq!(
            reduce_values(&*w, &x)?.to_vec2::<f32>()?,
            x.to_vec2::<f32>()?
        );
        Ok(())
    }
}
