//! Benchmark (not a test): two SimCLR views of 512 random 32×32 `u8` images with
//! `presets::simclr_cifar(32)`, in images per second on one thread and on all cores.
//!
//! `cargo run --release -p augment --example bench_augment`; compare with
//! `python crates/augment/examples/bench_torchvision.py` run in the same session.

use std::time::{Duration, Instant};

use augment::{presets, MultiView};
use rand::{Rng, SeedableRng};

const N: usize = 512;
const SIDE: usize = 32;

/// Images per second (each giving two views) over at least `min_time`, after one warm-up pass.
fn images_per_second(
    views: &MultiView,
    images: &[u8],
    threads: usize,
    min_time: Duration,
) -> anyhow::Result<f64> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let indices: Vec<usize> = (0..N).collect();
    pool.install(|| -> anyhow::Result<f64> {
        views.apply_batch(images, (SIDE, SIDE), &indices, 0, 0)?;
        let start = Instant::now();
        let mut done = 0usize;
        let mut epoch = 1;
        while start.elapsed() < min_time {
            let out = views.apply_batch(images, (SIDE, SIDE), &indices, 0, epoch)?;
            std::hint::black_box(out);
            done += N;
            epoch += 1;
        }
        Ok(done as f64 / start.elapsed().as_secs_f64())
    })
}

fn main() -> anyhow::Result<()> {
    let mut rng = augment::AugRng::seed_from_u64(0);
    let images: Vec<u8> = (0..N * 3 * SIDE * SIDE).map(|_| rng.random()).collect();
    let views = MultiView::repeat(presets::simclr_cifar(SIDE)?, 2)?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let min_time = Duration::from_secs(3);
    println!("simclr_cifar(32), two views of {N} random 32x32 u8 images");
    let one = images_per_second(&views, &images, 1, min_time)?;
    println!("1 thread:    {one:10.0} images/s");
    let all = images_per_second(&views, &images, cores, min_time)?;
    println!("{cores} threads: {all:10.0} images/s");
    Ok(())
}
