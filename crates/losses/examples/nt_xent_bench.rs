//! Times NT-Xent forward + backward, plain or blocked, at one batch size.
//!
//! `cargo run --release -p losses --example nt_xent_bench -- <plain|blocked> <N> [D] [block] [reps]`
//! Run it under `/usr/bin/time -v` for the peak memory (maximum resident set size).

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor, Var};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let variant = args.get(1).map_or("plain", String::as_str).to_string();
    let arg =
        |i: usize, default: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let (n, d, block, reps) = (arg(2, 4096), arg(3, 128), arg(4, 1024), arg(5, 3));
    let dev = Device::Cpu;
    let pattern = |phase: f64| -> Result<Tensor> {
        Tensor::arange(0u32, (n * d) as u32, &dev)?
            .to_dtype(DType::F32)?
            .reshape((n, d))?
            .affine(0.618, phase)?
            .sin()
    };
    let z_a = Var::from_tensor(&pattern(0.0)?)?;
    let z_b = Var::from_tensor(&pattern(0.5)?)?;
    let mut times = Vec::new();
    let mut value = 0f32;
    for _ in 0..reps {
        let start = Instant::now();
        let loss = match variant.as_str() {
            "blocked" => losses::nt_xent_blocked(&z_a, &z_b, 0.5, block)?,
            _ => losses::nt_xent(&z_a, &z_b, 0.5)?,
        };
        let grads = loss.backward()?;
        let g = grads
            .get(&z_a)
            .map_or(Ok(0f32), |g| g.sum_all()?.to_scalar::<f32>())?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        value = loss.to_scalar::<f32>()? + 0.0 * g;
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{variant} N={n} D={d} block={block}: loss {value:.6}, fwd+bwd median {:.1} ms (min {:.1}, {reps} runs)",
        times[times.len() / 2],
        times[0]
    );
    Ok(())
}
