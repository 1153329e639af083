//! Augments one image file into two SimCLR views and writes them as PNG.
//!
//! `cargo run --release -p examples --example augment_views -- [IMAGE] [OUT_PREFIX] [SEED]`
//! (defaults: `data/sample/test/airplane/0000.jpg`, `views`, 0) writes `OUT_PREFIX_0.png` and
//! `OUT_PREFIX_1.png`. Images up to 64 pixels a side get `simclr_cifar` at their size; larger
//! ones `simclr_imagenet` at `min(side, 224)` (with blur). Normalisation is left out so the
//! views can be looked at.

use anyhow::{Context, Result};
use augment::{presets, MultiView};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let input = args
        .first()
        .map(String::as_str)
        .unwrap_or("data/sample/test/airplane/0000.jpg");
    let prefix = args.get(1).map(String::as_str).unwrap_or("views");
    let seed: u64 = match args.get(2) {
        Some(s) => s
            .parse()
            .with_context(|| format!("seed {s:?} is not an integer"))?,
        None => 0,
    };

    let rgb = image::open(input)
        .with_context(|| format!("reading {input}"))?
        .to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    // HWC (interleaved) -> CHW (planar), the layout the pipeline reads.
    let mut chw = vec![0u8; 3 * h * w];
    for (i, px) in rgb.pixels().enumerate() {
        for c in 0..3 {
            chw[c * h * w + i] = px.0[c];
        }
    }

    let side = h.min(w);
    let pipeline = if side <= 64 {
        presets::simclr_cifar(side)?
    } else {
        presets::simclr_imagenet(side.min(224))?
    };
    let size = pipeline.size();
    let views = MultiView::repeat(pipeline.without_normalize(), 2)?;
    let batch = views.apply_batch(&chw, (h, w), &[0], seed, 0)?;

    for (v, view) in batch.iter().enumerate() {
        let planar = view.flatten_all()?.to_vec1::<f32>()?;
        let n = size * size;
        let mut hwc = Vec::with_capacity(3 * n);
        for i in 0..n {
            for c in 0..3 {
                hwc.push((planar[c * n + i] * 255.0).round().clamp(0.0, 255.0) as u8);
            }
        }
        let out = format!("{prefix}_{v}.png");
        image::RgbImage::from_raw(size as u32, size as u32, hwc)
            .context("view buffer has the wrong size")?
            .save(&out)
            .with_context(|| format!("writing {out}"))?;
        println!("wrote {out} ({size}x{size})");
    }
    Ok(())
}
