//! Data parallelism over MPI (`--features mpi`): real `mpirun` jobs of the trainer binary and of
//! this test binary, against single-process references.
//!
//! - The gathered NT-Xent and SupCon at 2 and 3 ranks: their values and gradients are those of
//!   the single-process losses of the concatenated batch; a queue of negatives fed every rank's
//!   embeddings holds what one process's queue holds; a broadcast from the last rank.
//! - Synchronised batch norm at 2 and 3 ranks: a convolution + batch-norm block's outputs,
//!   gradients and running statistics are those of one process on the whole batch.
//! - Two ranks with `--sync-bn` at a global batch of 16 (8 per rank) against one process at 16,
//!   `trainer distill` at α = 0.5: every metric, weight, momentum buffer and running statistic
//!   to 1e-5 relative (1e-6 absolute), (a) over one step at the full learning rate and (b) over
//!   six steps and two epochs at a learning rate too small to move an f32 weight (1e-12), so
//!   that each step's gradient is taken at the same weights in both runs and the momentum
//!   buffers hold the sum of them all.
//!
//!   Why not six steps at the full rate: the gradients of these tiny batches are not continuous
//!   at f32 resolution. In one process, multiplying the teacher's weights by (1 + 1e-6·noise)
//!   changes the step-2 momentum of the backbone by 1e-2 relative (and the gradient norm by
//!   2e-4), the same departure two ranks show; any two float orders of the same sums (a
//!   different GEMM blocking, another BLAS) part the same way after a step or two.
//! - A rank killed mid-epoch stops the job (no hang) with a message naming it; resumed with the
//!   same number of ranks the run ends as the uninterrupted one, and it also resumes in one
//!   process.
#![cfg(feature = "mpi")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use candle_core::{DType, Device, Tensor, Var};

type Result<T> = anyhow::Result<T>;

const BIN: &str = env!("CARGO_BIN_EXE_trainer");

/// `mpirun -np n` as root too, on however many cores there are.
fn mpirun(n: usize) -> Command {
    let mut c = Command::new("mpirun");
    c.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        &n.to_string(),
    ]);
    c
}

fn run_ok(mut cmd: Command, what: &str) -> Result<Output> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| {
        format!("{what}: starting {cmd:?} (is Open MPI installed? README, Many processes)")
    })?;
    ensure!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// Runs the ignored test `name` of this binary as an `mpirun -np n` job.
fn run_ranks(n: usize, name: &str) -> Result<()> {
    let mut c = mpirun(n);
    c.arg(std::env::current_exe()?).args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads",
        "1",
    ]);
    run_ok(c, &format!("{name} on {n} ranks"))?;
    Ok(())
}

#[test]
fn gathered_nt_xent_and_supcon_equal_the_losses_of_the_whole_batch_at_2_and_3_ranks() -> Result<()>
{
    run_ranks(2, "rank_gathered_nt_xent")?;
    run_ranks(3, "rank_gathered_nt_xent")
}

/// One rank of the gathered-loss check: every rank builds the same global batch, takes its
/// shard, and compares the gathered loss (mean over the ranks) and its gradient (this rank's rows,
/// averaged as data-parallel training does) with `losses::nt_xent` and `losses::supcon` on the
/// whole batch; and a queue of embeddings fed from every rank with one fed the whole batch.
#[test]
#[ignore = "runs as a rank of an mpirun job (see gathered_nt_xent_and_supcon_…)"]
fn rank_gathered_nt_xent() -> Result<()> {
    let _launch = trainer::dist::init()?;
    let world = trainer::dist::world();
    let (w, r) = (world.world_size(), world.rank());
    ensure!(w > 1, "not started by mpirun");
    let (n, d) = (4, 8);
    let dev = Device::Cpu;
    let global_a: Vec<f32> = (0..w * n * d)
        .map(|i| (i * 37 % 101) as f32 / 50.0 - 1.0)
        .collect();
    let global_b: Vec<f32> = (0..w * n * d)
        .map(|i| (i * 53 % 97) as f32 / 48.0 - 1.0)
        .collect();
    let za_all = Tensor::from_vec(global_a, (w * n, d), &dev)?;
    let zb_all = Tensor::from_vec(global_b, (w * n, d), &dev)?;
    // The reference: one process, the whole batch.
    let ref_a = Var::from_tensor(&za_all)?;
    let ref_b = Var::from_tensor(&zb_all)?;
    let whole = losses::nt_xent(ref_a.as_tensor(), ref_b.as_tensor(), 0.5)?;
    let g = whole.backward()?;
    let ref_ga = g
        .get(ref_a.as_tensor())
        .context("grad a")?
        .narrow(0, r * n, n)?;
    let ref_gb = g
        .get(ref_b.as_tensor())
        .context("grad b")?
        .narrow(0, r * n, n)?;
    // This rank: its shard, gathered.
    let z = Var::from_tensor(&Tensor::cat(
        &[za_all.narrow(0, r * n, n)?, zb_all.narrow(0, r * n, n)?],
        0,
    )?)?;
    let gathered = trainer::dist::all_gather(&world, z.as_tensor())?;
    let loss = losses::nt_xent_shard(&gathered, w, r, 0.5)?;
    let grad = loss
        .backward()?
        .get(z.as_tensor())
        .context("grad z")?
        .clone();
    // Averaged over the ranks, as the parameters' gradients are.
    let grad = (grad / w as f64)?;
    let mean = trainer::dist::reduce_values(&*world, &loss)?.to_scalar::<f32>()? / w as f32;
    let expected = whole.to_scalar::<f32>()?;
    ensure!(
        (mean - expected).abs() <= 1e-5 * expected.abs(),
        "rank {r}/{w}: gathered loss {mean}, whole batch {expected}"
    );
    let ref_grad = Tensor::cat(&[ref_ga, ref_gb], 0)?;
    let scale = ref_grad.abs()?.max_all()?.to_scalar::<f32>()?;
    let diff = (grad - ref_grad)?.abs()?.max_all()?.to_scalar::<f32>()?;
    ensure!(
        diff <= 1e-5 * scale,
        "rank {r}/{w}: gradient differs by {diff} (scale {scale})"
    );

    // SupCon: rank r holds rows r·m.. of the global features, labels known to every rank.
    let m = 2 * n;
    let feats = Tensor::cat(&[&za_all, &zb_all], 0)?;
    let labels: Vec<u32> = (0..w * m).map(|i| (i % 3) as u32).collect();
    let labels = Tensor::from_vec(labels, w * m, &dev)?;
    let ref_f = Var::from_tensor(&feats)?;
    let whole = losses::supcon(ref_f.as_tensor(), &labels, 0.5)?;
    let ref_grad = whole
        .backward()?
        .get(ref_f.as_tensor())
        .context("grad supcon")?
        .narrow(0, r * m, m)?;
    let x = Var::from_tensor(&feats.narrow(0, r * m, m)?)?;
    let gathered = trainer::dist::all_gather(&world, x.as_tensor())?;
    let loss = losses::supcon_shard(&gathered, &labels, w, r, 0.5)?;
    let grad = (loss
        .backward()?
        .get(x.as_tensor())
        .context("grad x")?
        .clone()
        / w as f64)?;
    let mean = trainer::dist::reduce_values(&*world, &loss)?.to_scalar::<f32>()? / w as f32;
    let expected = whole.to_scalar::<f32>()?;
    ensure!(
        (mean - expected).abs() <= 1e-5 * expected.abs(),
        "rank {r}/{w}: gathered SupCon {mean}, whole batch {expected}"
    );
    let scale = ref_grad.abs()?.max_all()?.to_scalar::<f32>()?;
    let diff = (grad - ref_grad)?.abs()?.max_all()?.to_scalar::<f32>()?;
    ensure!(
        diff <= 1e-5 * scale,
        "rank {r}/{w}: SupCon gradient differs by {diff} (scale {scale})"
    );

    // A queue of negatives (SEED, CRD) fed every rank's embeddings holds, on every rank, what
    // one process's queue fed the whole batch holds.
    let mut queue = losses::EmbeddingQueue::new(3 * m, d, DType::F32, &dev)?;
    let mut reference = losses::EmbeddingQueue::new(3 * m, d, DType::F32, &dev)?;
    for step in 0..2 {
        let batch = (feats.clone() * (step + 1) as f64)?;
        queue.push(&trainer::dist::gather_values(
            &*world,
            &batch.narrow(0, r * m, m)?,
        )?)?;
        reference.push(&batch)?;
    }
    let diff = (queue.embeddings()? - reference.embeddings()?)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    ensure!(diff == 0.0, "rank {r}/{w}: the queue differs by {diff}");

    // Broadcast from the last rank; a root outside the job is an error, not a hang.
    let mut xs = [r as f32, 1.5 * r as f32];
    world.broadcast_f32(&mut xs, w - 1)?;
    let mut ys = [r as f64; 3];
    world.broadcast_f64(&mut ys, w - 1)?;
    let last = (w - 1) as f32;
    ensure!(
        xs == [last, 1.5 * last] && ys == [f64::from(last); 3],
        "rank {r}/{w}: broadcast gave {xs:?} {ys:?}"
    );
    ensure!(
        world.broadcast_f32(&mut xs, w).is_err(),
        "root {w} accepted"
    );
    world.barrier()?;
    Ok(())
}

#[test]
fn synchronised_batch_norm_equals_batch_norm_of_the_whole_batch_at_2_and_3_ranks() -> Result<()> {
    run_ranks(2, "rank_sync_batch_norm")?;
    run_ranks(3, "rank_sync_batch_norm")
}

/// A residual block as the ResNets train it: a convolution fused with batch norm + ReLU, a
/// batch norm + ReLU, a convolution fused with batch norm + residual + ReLU, a batch norm +
/// residual + ReLU, in training mode, on `x`; returns the output and the layers' variables
/// (`a`…`d`: batch norms, `wa`, `wc`: convolution kernels).
fn block(x: &Tensor) -> Result<(Tensor, candle_nn::VarMap, Vec<candle_nn::BatchNorm>)> {
    let c = x.dim(1)?;
    let vm = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let mut bns = Vec::new();
    for name in ["a", "b", "c", "d"] {
        bns.push(candle_nn::batch_norm(
            c,
            candle_nn::BatchNormConfig::default(),
            vb.pp(name),
        )?);
    }
    let wa = vb.get((c, c, 3, 3), "wa")?;
    let wc = vb.get((c, c, 3, 3), "wc")?;
    // Distinct values per channel, the same in every process.
    let data = vm.data().lock().expect("varmap");
    for (name, var) in data.iter() {
        let n = var.elem_count();
        let value = |k: usize| match name.rsplit('.').next() {
            Some("weight") => Some(0.5 + 0.1 * k as f32),
            Some("bias") => Some(0.2 * k as f32 - 0.3),
            _ if name.starts_with('w') => Some(((k * 13) % 7) as f32 / 7.0 - 0.45),
            _ => None, // running statistics keep their initial values
        };
        if value(0).is_some() {
            let vals: Vec<f32> = (0..n).map(|k| value(k).unwrap_or(0.0)).collect();
            var.set(&Tensor::from_vec(vals, var.shape(), &Device::Cpu)?)?;
        }
    }
    drop(data);
    let h = models::ops::conv2d_bn_train(x, &wa, 1, 1, &bns[0], None, true)?;
    let h = models::ops::batch_norm_relu(&h, &bns[1], true)?;
    let h = models::ops::conv2d_bn_train(&h, &wc, 1, 1, &bns[2], Some(x), true)?;
    let y = models::ops::batch_norm_add_relu(&h, &bns[3], x, true)?;
    Ok((y, vm, bns))
}

/// One rank of the synchronised batch-norm check: the gradients of this rank's input rows and
/// of γ, β (averaged over the ranks) and the running statistics equal those of one process on
/// the whole batch.
#[test]
#[ignore = "runs as a rank of an mpirun job (see synchronised_batch_norm_…)"]
fn rank_sync_batch_norm() -> Result<()> {
    let _launch = trainer::dist::init()?;
    let world = trainer::dist::world();
    let (w, r) = (world.world_size(), world.rank());
    ensure!(w > 1, "not started by mpirun");
    let (b, c, hw) = (4, 3, 5);
    let dev = Device::Cpu;
    let n = w * b * c * hw * hw;
    // Channels with different means and spreads, one nearly constant.
    let vals: Vec<f32> = (0..n)
        .map(|i| {
            let ch = (i / (hw * hw)) % c;
            let u = ((i * 7919) % 1009) as f32 / 1009.0 - 0.5;
            [3.0 + 2.0 * u, -1.0 + 0.5 * u, 0.01 * u][ch]
        })
        .collect();
    let x_all = Tensor::from_vec(vals, (w * b, c, hw, hw), &dev)?;
    let weights: Vec<f32> = (0..n)
        .map(|i| ((i * 31) % 17) as f32 / 17.0 - 0.4)
        .collect();
    let r_all = Tensor::from_vec(weights, (w * b, c, hw, hw), &dev)?;
    // One process, the whole batch.
    let xv = Var::from_tensor(&x_all)?;
    let (y, vm_ref, bn_ref) = block(xv.as_tensor())?;
    let loss = (y * &r_all)?.mean_all()?;
    let g = loss.backward()?;
    // This rank, synchronised.
    let x_own = Var::from_tensor(&x_all.narrow(0, r * b, b)?)?;
    let _sync = models::ops::SyncBatchNorm::enter(std::sync::Arc::new(trainer::dist::WorldSums(
        world.clone(),
    )));
    let (y, vm, bns) = block(x_own.as_tensor())?;
    let loss_own = (y * r_all.narrow(0, r * b, b)?)?.mean_all()?;
    let g_own = loss_own.backward()?;
    let close = |what: &str, got: &Tensor, want: &Tensor| -> Result<()> {
        let scale = want.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-20);
        let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        ensure!(
            diff <= 2e-5 * scale,
            "rank {r}/{w}: {what} differs by {diff} (scale {scale})"
        );
        Ok(())
    };
    let dx = (g_own.get(x_own.as_tensor()).context("dx")? / w as f64)?;
    close(
        "dx",
        &dx,
        &g.get(xv.as_tensor())
            .context("dx ref")?
            .narrow(0, r * b, b)?,
    )?;
    let data = vm.data().lock().expect("varmap");
    let data_ref = vm_ref.data().lock().expect("varmap");
    let mut names: Vec<&String> = data.keys().filter(|k| !k.contains("running")).collect();
    names.sort();
    for name in names {
        let local = g_own.get(data[name].as_tensor()).context("dγ")?;
        let mean = (trainer::dist::reduce_values(&*world, local)? / w as f64)?;
        close(
            name,
            &mean,
            g.get(data_ref[name].as_tensor()).context("ref")?,
        )?;
    }
    for (bn, bn_r) in bns.iter().zip(&bn_ref) {
        close("running mean", bn.running_mean(), bn_r.running_mean())?;
        close("running var", bn.running_var(), bn_r.running_var())?;
    }
    world.barrier()?;
    Ok(())
}

/// The tiny distillation of these tests: resnet8 on `per_class` images per class of the bundled
/// sample, global batch 16, `epochs` epochs, a checkpoint after every step; the student's
/// learning rate `lr` (the default, 0.1, when `None`).
fn tiny_toml(per_class: usize, epochs: usize, lr: Option<f64>) -> String {
    let lr = lr.map_or(String::new(), |lr| format!("lr = {lr:e}\n"));
    format!(
        "quiet = true\nlog_every = 1\ncheckpoint_every = 1\nthreads = 1\n\
         [data]\ntrain_per_class = {per_class}\ntest_per_class = 4\n\
         [teacher]\narch = \"resnet8\"\n\
         [teacher.optim]\nepochs = 1\nbatch_size = 16\nwarmup_epochs = 0.5\n\
         [student]\narch = \"resnet8\"\nalpha = 0.5\n\
         [student.optim]\n{lr}epochs = {epochs}\nbatch_size = 16\nwarmup_epochs = 0.5\n\
         [eval]\nlinear_epochs = 2\nknn_k = 5\n"
    )
}

/// A folder with the configuration and a teacher trained by one process.
fn setup(dir: &Path, toml: &str) -> Result<(PathBuf, PathBuf)> {
    let config = dir.join("config.toml");
    std::fs::write(&config, toml)?;
    let teacher = dir.join("teacher");
    let mut c = Command::new(BIN);
    c.args(["teacher", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&teacher);
    run_ok(c, "the teacher")?;
    Ok((config, teacher.join("best.safetensors")))
}

fn distill(config: &Path, teacher: &Path, out: &Path) -> Command {
    let mut c = Command::new(BIN);
    distill_args(&mut c, config, teacher, out);
    c
}

fn distill_args(c: &mut Command, config: &Path, teacher: &Path, out: &Path) {
    c.args(["distill", "--config"])
        .arg(config)
        .arg("--teacher")
        .arg(teacher)
        .arg("--out")
        .arg(out);
}

/// `trainer distill` as an `mpirun -np n` job with synchronised batch norm.
fn distill_ranks(n: usize, config: &Path, teacher: &Path, out: &Path) -> Command {
    let mut c = mpirun(n);
    c.arg(BIN);
    distill_args(&mut c, config, teacher, out);
    c.arg("--sync-bn");
    c
}

/// Every float of two JSON values equal to `rel` relative (other values exactly).
///
/// The gradient norm gets 1e-3: it is the one figure that moves when a single ReLU input lies
/// within rounding of zero in one run and not in the other (the whole element's gradient is then
/// gated differently), which happens at some steps of any two runs that add the same numbers in
/// another order; the losses and the weights stay within `rel`.
fn close_json(a: &serde_json::Value, b: &serde_json::Value, rel: f64, at: &str) -> Result<()> {
    use serde_json::Value;
    let rel = if at.ends_with(".grad_norm") {
        rel.max(1e-3)
    } else {
        rel
    };
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            ensure!(
                (x - y).abs() <= rel * x.abs().max(y.abs()) + 1e-6,
                "{at}: {x} vs {y}"
            );
        }
        (Value::Object(x), Value::Object(y)) => {
            ensure!(
                x.len() == y.len(),
                "{at}: keys {:?} vs {:?}",
                x.keys(),
                y.keys()
            );
            for (k, v) in x {
                close_json(
                    v,
                    y.get(k).context(format!("{at}.{k} missing"))?,
                    rel,
                    &format!("{at}.{k}"),
                )?;
            }
        }
        _ => ensure!(a == b, "{at}: {a} vs {b}"),
    }
    Ok(())
}

/// The tensors of two checkpoints equal to `rel` relative to each tensor's largest value, or
/// 1e-7 absolute: the projection head's first bias feeds a batch norm, which removes it, so its
/// gradient is zero in exact arithmetic and its momentum buffer holds f32 rounding (1e-8).
fn close_weights(a: &Path, b: &Path, rel: f64) -> Result<()> {
    let ta = candle_core::safetensors::load(a, &Device::Cpu)?;
    let tb = candle_core::safetensors::load(b, &Device::Cpu)?;
    ensure!(ta.len() == tb.len(), "{} tensors vs {}", ta.len(), tb.len());
    let mut worst = 0f64;
    for (name, x) in &ta {
        let y = tb
            .get(name)
            .with_context(|| format!("{name} missing in {}", b.display()))?;
        let (x, y) = (x.to_dtype(DType::F64)?, y.to_dtype(DType::F64)?);
        let scale = x.abs()?.max_all()?.to_scalar::<f64>()?.max(1e-12);
        let diff = (x - y)?.abs()?.max_all()?.to_scalar::<f64>()?;
        worst = worst.max(diff / scale);
        ensure!(
            diff <= rel * scale + 1e-7,
            "{name}: differs by {diff} (largest value {scale})"
        );
    }
    eprintln!("largest relative difference of the weights: {worst:.2e}");
    Ok(())
}

fn compare_runs(one: &Path, two: &Path, rel: f64) -> Result<()> {
    let (a, b) = (
        common::metrics_without_timing(&one.join("metrics.jsonl")),
        common::metrics_without_timing(&two.join("metrics.jsonl")),
    );
    ensure!(
        a.len() == b.len() && !a.is_empty(),
        "{} metrics records vs {}",
        a.len(),
        b.len()
    );
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        close_json(x, y, rel, &format!("metrics record {i}"))?;
    }
    close_weights(
        &one.join("last.safetensors"),
        &two.join("last.safetensors"),
        rel,
    )?;
    close_weights(
        &one.join("best.safetensors"),
        &two.join("best.safetensors"),
        rel,
    )
}

#[test]
fn two_ranks_with_sync_bn_equal_one_process_at_the_global_batch() -> Result<()> {
    // (a) 20 images: one step of a global batch of 16 at the full learning rate;
    // (b) 50 images: three steps an epoch, two epochs, at a rate that moves no f32 weight.
    for (what, toml) in [
        ("one step", tiny_toml(2, 1, None)),
        ("six steps at lr 1e-12", tiny_toml(5, 2, Some(1e-12))),
    ] {
        let dir = tempfile::tempdir()?;
        let (config, teacher) = setup(dir.path(), &toml)?;
        let one = dir.path().join("one");
        let two = dir.path().join("two");
        run_ok(distill(&config, &teacher, &one), "one process")?;
        let out = run_ok(distill_ranks(2, &config, &teacher, &two), "two ranks")?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            text.matches("| student").count() == 1,
            "{what}: rank 0 alone prints the summary:\n{text}"
        );
        compare_runs(&one, &two, 1e-5).with_context(|| what.to_string())?;
    }
    Ok(())
}

/// The pids of the ranks `mpirun` (pid `parent`) started, by rank.
fn rank_pids(parent: u32) -> Result<Vec<(usize, u32)>> {
    let mut ranks = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(pid) = entry?.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The parent pid is the second field after the parenthesised command name.
        let Some(after) = stat.rsplit(')').next() else {
            continue;
        };
        let ppid: Option<u32> = after.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if ppid != Some(parent) {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        for var in env.split(|&b| b == 0) {
            if let Some(r) = var.strip_prefix(b"OMPI_COMM_WORLD_RANK=") {
                ranks.push((String::from_utf8_lossy(r).parse()?, pid));
            }
        }
    }
    ranks.sort();
    Ok(ranks)
}

#[test]
fn a_killed_rank_stops_the_job_and_the_run_resumes_at_another_world_size() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // 160 images: ten steps an epoch, two epochs: time to kill a rank in the first.
    let (config, teacher) = setup(dir.path(), &tiny_toml(16, 2, None))?;
    let reference = dir.path().join("reference");
    run_ok(
        distill_ranks(2, &config, &teacher, &reference),
        "the uninterrupted run",
    )?;
    let out = dir.path().join("killed");
    let log = dir.path().join("killed.log");
    let file = std::fs::File::create(&log)?;
    let mut job = distill_ranks(2, &config, &teacher, &out)
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()?;
    // Wait for the first step's checkpoint (mid-epoch 0), then kill rank 1.
    let start = Instant::now();
    let last = out.join("last.safetensors");
    while !last.exists() {
        ensure!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint after 300 s"
        );
        if let Some(s) = job.try_wait()? {
            bail!(
                "the job ended before the kill ({s}):\n{}",
                std::fs::read_to_string(&log)?
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let pids = rank_pids(job.id())?;
    let Some(&(_, victim)) = pids.iter().find(|(r, _)| *r == 1) else {
        bail!("rank 1 not found among the children of mpirun: {pids:?}")
    };
    Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()?;
    let killed_at = Instant::now();
    let status = loop {
        if let Some(s) = job.try_wait()? {
            break s;
        }
        ensure!(
            killed_at.elapsed() < Duration::from_secs(120),
            "the job still runs 120 s after rank 1 was killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log)?;
    ensure!(
        !status.success(),
        "the job succeeded without rank 1:\n{text}"
    );
    ensure!(
        text.contains("rank 1"),
        "the message names the killed rank:\n{text}"
    );
    // A copy resumes in one process (world size 1, the same global batch).
    let single = dir.path().join("single");
    std::fs::create_dir_all(&single)?;
    for f in std::fs::read_dir(&out)? {
        let f = f?;
        std::fs::copy(f.path(), single.join(f.file_name()))?;
    }
    let mut resume = distill(&config, &teacher, &single);
    resume.arg("--resume");
    let resumed = run_ok(resume, "the run resumed in one process")?;
    ensure!(String::from_utf8_lossy(&resumed.stdout).contains("| student"));
    // The job resumed with two ranks ends as the uninterrupted one.
    let mut resume = distill_ranks(2, &config, &teacher, &out);
    resume.arg("--resume");
    run_ok(resume, "the job resumed with two ranks")?;
    compare_runs(&reference, &out, 1e-6)
}
