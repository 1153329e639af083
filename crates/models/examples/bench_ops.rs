//! Times `models::ops` kernels against stock candle on the CIFAR ResNet shapes.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p models --example bench_ops -- [--batch 128] [--reps 5] [--filter NAME] [--only stock|fast]
//! ```
//! Prints a markdown table: the median of `reps` timed runs after one warm-up, stock and fast
//! side by side, the fast kernel's GEMM rate and its share of a plain 2048³ GEMM through the
//! same `gemm` call.

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{BatchNorm, ModuleT};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

struct Args {
    batch: usize,
    reps: usize,
    filter: Option<String>,
    only: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        batch: 128,
        reps: 5,
        filter: None,
        only: None,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let next = v.get(i + 1).cloned();
        match v[i].as_str() {
            "--batch" => a.batch = next.and_then(|s| s.parse().ok()).unwrap_or(a.batch),
            "--reps" => a.reps = next.and_then(|s| s.parse().ok()).unwrap_or(a.reps),
            "--filter" => a.filter = next,
            "--only" => a.only = next,
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    a
}

fn randn(rng: &mut ChaCha8Rng, dims: &[usize]) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.sample(StandardNormal)).collect();
    Tensor::from_vec(v, dims, &Device::Cpu)
}

/// Median seconds of `reps` runs after one warm-up.
fn time(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut ts = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        ts.push(t.elapsed().as_secs_f64());
    }
    ts.sort_by(f64::total_cmp);
    Ok(ts[ts.len() / 2])
}

/// GFLOP/s of a plain `n³` f32 GEMM through the `gemm` crate, as the kernels call it.
fn sgemm_rate(n: usize, reps: usize) -> f64 {
    let a = vec![1.0f32; n * n];
    let b = vec![1.0f32; n * n];
    let mut c = vec![0.0f32; n * n];
    let threads = rayon::current_num_threads();
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let s = time(reps, || {
        // SAFETY: three distinct n×n row-major buffers.
        unsafe {
            gemm::gemm(
                n,
                n,
                n,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                n as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            )
        };
        Ok(())
    })
    .unwrap_or(f64::NAN);
    2.0 * (n as f64).powi(3) / s / 1e9
}

struct Row {
    name: String,
    pass: &'static str,
    stock: Option<f64>,
    fast: Option<f64>,
    gflop: f64,
}

fn main() -> Result<()> {
    models::ops::retain_freed_memory();
    let a = args();
    let b = a.batch;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let run_stock = a.only.as_deref() != Some("fast");
    let run_fast = a.only.as_deref() != Some("stock");
    let keep = |name: &str| a.filter.as_deref().is_none_or(|f| name.contains(f));
    let threads = rayon::current_num_threads();
    let peak = if run_fast && a.filter.is_none() {
        sgemm_rate(2048, a.reps)
    } else {
        f64::NAN
    };
    let mut rows = Vec::new();

    // (name, c_in, c_out, hw, k, stride, padding, input needs a gradient)
    let convs = [
        ("r18.conv1 3->64 32x32 k3s1", 3, 64, 32, 3, 1, 1, false),
        ("r18.layer1 64->64 32x32 k3s1", 64, 64, 32, 3, 1, 1, true),
        (
            "r18.layer2.0 64->128 32x32 k3s2",
            64,
            128,
            32,
            3,
            2,
            1,
            true,
        ),
        (
            "r18.layer2 128->128 16x16 k3s1",
            128,
            128,
            16,
            3,
            1,
            1,
            true,
        ),
        (
            "r18.layer2.ds 64->128 32x32 k1s2",
            64,
            128,
            32,
            1,
            2,
            0,
            true,
        ),
        ("r18.layer3 256->256 8x8 k3s1", 256, 256, 8, 3, 1, 1, true),
        ("r18.layer4 512->512 4x4 k3s1", 512, 512, 4, 3, 1, 1, true),
        (
            "r8x4.layer1.ds 32->64 32x32 k1s1",
            32,
            64,
            32,
            1,
            1,
            0,
            true,
        ),
    ];
    for (name, c_in, c_out, hw, k, stride, pad, x_grad) in convs {
        if !keep(name) {
            continue;
        }
        let x = randn(&mut rng, &[b, c_in, hw, hw])?;
        let w = Var::from_tensor(&(randn(&mut rng, &[c_out, c_in, k, k])? * 0.05)?)?;
        let xv = Var::from_tensor(&x)?;
        let xg = if x_grad {
            xv.as_tensor().clone()
        } else {
            x.clone()
        };
        let out = (hw + 2 * pad - k) / stride + 1;
        let fwd_flop = 2.0 * (b * c_out * out * out * c_in * k * k) as f64;
        let stock_fwd = |xs: &Tensor| xs.conv2d(&w, pad, stride, 1, 1);
        let fast_fwd = |xs: &Tensor| models::ops::conv2d(xs, &w, pad, stride);
        let t = |f: &dyn Fn(&Tensor) -> Result<Tensor>, xs: &Tensor, bwd: bool| {
            time(a.reps, || {
                let y = f(xs)?;
                if bwd {
                    y.backward()?;
                }
                Ok(())
            })
        };
        rows.push(Row {
            name: name.to_string(),
            pass: "fwd",
            stock: run_stock.then(|| t(&stock_fwd, &x, false)).transpose()?,
            fast: run_fast.then(|| t(&fast_fwd, &x, false)).transpose()?,
            gflop: fwd_flop / 1e9,
        });
        rows.push(Row {
            name: name.to_string(),
            pass: "fwd+bwd",
            stock: run_stock.then(|| t(&stock_fwd, &xg, true)).transpose()?,
            fast: run_fast.then(|| t(&fast_fwd, &xg, true)).transpose()?,
            gflop: fwd_flop * if x_grad { 3.0 } else { 2.0 } / 1e9,
        });
    }

    for (c, hw) in [(64, 32), (128, 16), (256, 8), (512, 4)] {
        let name = format!("bn+relu {c}x{hw}x{hw}");
        if !keep(&name) {
            continue;
        }
        let x = Var::from_tensor(&randn(&mut rng, &[b, c, hw, hw])?)?;
        let w = Var::from_tensor(&Tensor::ones(c, DType::F32, &Device::Cpu)?)?;
        let bias = Var::from_tensor(&Tensor::zeros(c, DType::F32, &Device::Cpu)?)?;
        let bn = BatchNorm::new(
            c,
            Tensor::zeros(c, DType::F32, &Device::Cpu)?,
            Tensor::ones(c, DType::F32, &Device::Cpu)?,
            w.as_tensor().clone(),
            bias.as_tensor().clone(),
            1e-5,
        )?;
        let stock = |train: bool, bwd: bool| {
            time(a.reps, || {
                let y = bn.forward_t(&x, train)?.relu()?;
                if bwd {
                    y.backward()?;
                }
                Ok(())
            })
        };
        let fast = |train: bool, bwd: bool| {
            time(a.reps, || {
                let y = models::ops::batch_norm_relu(&x, &bn, train)?;
                if bwd {
                    y.backward()?;
                }
                Ok(())
            })
        };
        for (pass, train, bwd) in [
            ("eval fwd", false, false),
            ("train fwd", true, false),
            ("train fwd+bwd", true, true),
        ] {
            rows.push(Row {
                name: name.clone(),
                pass,
                stock: run_stock.then(|| stock(train, bwd)).transpose()?,
                fast: run_fast.then(|| fast(train, bwd)).transpose()?,
                gflop: 0.0,
            });
        }
    }

    // All convolution rows of one pass together: total GFLOP over total time, as a share of the
    // SGEMM rate (each layer kind once, not weighted by how often a network uses it).
    let total = |pass: &str| {
        let (g, t) = rows
            .iter()
            .filter(|r| r.pass == pass && r.gflop > 0.0)
            .filter_map(|r| r.fast.map(|f| (r.gflop, f)))
            .fold((0.0, 0.0), |(g, t), (rg, rf)| (g + rg, t + rf));
        (t > 0.0).then(|| g / t)
    };
    let conv_totals: Vec<(&str, f64)> = ["fwd", "fwd+bwd"]
        .into_iter()
        .filter_map(|p| total(p).map(|r| (p, r)))
        .collect();
    println!("batch {b}, {threads} threads, median of {} runs; 2048³ SGEMM through gemm: {peak:.1} GFLOP/s", a.reps);
    for (pass, rate) in &conv_totals {
        println!(
            "all convolution rows, {pass}: {rate:.1} GFLOP/s, {:.0}% of SGEMM",
            100.0 * rate / peak
        );
    }
    println!();
    println!("| kernel | pass | stock ms | fast ms | speed-up | fast GFLOP/s | % of SGEMM |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    let ms = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{:.2}", s * 1e3));
    for r in rows {
        let speedup = match (r.stock, r.fast) {
            (Some(s), Some(f)) => format!("{:.2}x", s / f),
            _ => "-".to_string(),
        };
        let (rate, share) = match r.fast {
            Some(f) if r.gflop > 0.0 => {
                let g = r.gflop / f;
                (format!("{g:.1}"), format!("{:.0}%", 100.0 * g / peak))
            }
            _ => ("-".to_string(), "-".to_string()),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            r.pass,
            ms(r.stock),
            ms(r.fast),
            speedup,
            rate,
            share
        );
    }
    Ok(())
}
