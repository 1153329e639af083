//! Inference speed of a network: latency per image at batch 1 and throughput at batch 64, on
//! the fast evaluation path ([`models::ResNet::detached`]: every batch norm, residual and ReLU
//! in its convolution's epilogue).
//!
//! Each figure is the median of timed forward passes after warm-up passes, on random images
//! (the speed of a dense network does not depend on the pixels). Run on the thread pool the
//! process was started with (`--threads`, `RAYON_NUM_THREADS`).

use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use models::ResNet;
use serde::Serialize;

use crate::Result;

/// How much to measure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InferenceOptions {
    /// Batch of the throughput figure (64).
    pub batch: usize,
    /// Untimed passes before each figure.
    pub warmup: usize,
    /// Timed passes at batch 1 (at most; see `max_seconds`).
    pub samples_batch1: usize,
    /// Timed passes at `batch` (at most; see `max_seconds`).
    pub samples_batch: usize,
    /// Stop sampling a figure after this many seconds (at least 3 samples are taken).
    pub max_seconds: f64,
}

impl Default for InferenceOptions {
    /// Batch 64; 3 warm-up passes; 100 timed passes at batch 1 and 15 at batch 64, each figure
    /// cut at 20 s.
    fn default() -> Self {
        Self {
            batch: 64,
            warmup: 3,
            samples_batch1: 100,
            samples_batch: 15,
            max_seconds: 20.0,
        }
    }
}

/// The two speed figures of a network.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct InferenceTiming {
    /// Median latency of one image at batch 1, milliseconds.
    pub ms_per_image: f64,
    /// Images per second at the batch of [`InferenceOptions::batch`] (its median pass).
    pub images_per_second: f64,
    /// That batch.
    pub batch: usize,
    /// Timed passes at batch 1.
    pub samples_batch1: usize,
    /// Timed passes at the large batch.
    pub samples_batch: usize,
}

/// The median of `xs` (the mean of the two middle values for an even count; 0 when empty).
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// Seconds of each of up to `samples` timed calls of `f` (after `warmup` untimed ones), stopping
/// early after `max_seconds` once 3 are taken.
fn sample(
    warmup: usize,
    samples: usize,
    max_seconds: f64,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    let budget = Duration::from_secs_f64(max_seconds.max(0.0));
    let start = Instant::now();
    let mut times = Vec::with_capacity(samples);
    while times.len() < samples.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
        if times.len() >= 3 && start.elapsed() > budget {
            break;
        }
    }
    Ok(times)
}

/// Times `net` (evaluation mode, no graph) on `(1, 3, size, size)` and `(batch, 3, size, size)`
/// inputs; see the module docs.
pub fn time_inference(
    net: &ResNet,
    image_size: usize,
    device: &Device,
    opts: &InferenceOptions,
) -> Result<InferenceTiming> {
    let forward = |xs: &Tensor| -> Result<()> {
        let logits = net.forward_features(xs, false)?.logits;
        // Wait for the device and keep the result alive until here.
        logits.to_device(&Device::Cpu)?;
        Ok(())
    };
    let one = Tensor::randn(0f32, 1., (1, 3, image_size, image_size), device)?;
    let t1 = sample(opts.warmup, opts.samples_batch1, opts.max_seconds, || {
        forward(&one)
    })?;
    let batch = opts.batch.max(1);
    let many = Tensor::randn(0f32, 1., (batch, 3, image_size, image_size), device)?;
    let tb = sample(opts.warmup, opts.samples_batch, opts.max_seconds, || {
        forward(&many)
    })?;
    Ok(InferenceTiming {
        ms_per_image: 1e3 * median(&t1),
        images_per_second: batch as f64 / median(&tb),
        batch,
        samples_batch1: t1.len(),
        samples_batch: tb.len(),
    })
}
