//! Compares the trainer's decode of CIFAR-10's JPEG tarballs with PIL's, pixel for pixel.
//!
//! ```sh
//! python3 crates/trainer/examples/pil_decode_tarball.py DIR target/pil_cifar10   # PIL's pixels
//! cargo run --release -p trainer --example jpeg_vs_pil -- DIR target/pil_cifar10
//! ```
//!
//! `DIR` holds `train.tar.gz` and `test.tar.gz`; the script writes PIL's
//! `Image.open(f).convert("RGB")` of every image (CHW, 32 × 32) to `<split>.u8`, in the reader's
//! order, and the member names to `<split>.txt`. This reads the same tarballs with
//! [`trainer::data::load_cifar10_tarballs`] at 32 × 32 (their own size: no resize), prints per
//! split the images and values that differ and the largest difference, and fails if any differs.
//! `cargo xtask jpeg-check` runs both.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, pil] = &args[..] else {
        bail!("usage: jpeg_vs_pil DIR PIL_DIR (see crates/trainer/examples/jpeg_vs_pil.rs)");
    };
    let (dir, pil) = (PathBuf::from(dir), PathBuf::from(pil));
    let split = trainer::data::load_cifar10_tarballs(&dir, 32, 32)?;
    let mut differing_images = 0usize;
    for (name, ds) in [("train", &split.train), ("test", &split.test)] {
        let path = pil.join(format!("{name}.u8"));
        let reference =
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let names_path = pil.join(format!("{name}.txt"));
        let names = std::fs::read_to_string(&names_path)
            .with_context(|| format!("reading {}", names_path.display()))?;
        let names: Vec<&str> = names.lines().collect();
        if reference.len() != ds.images.len() || names.len() != ds.len() {
            bail!(
                "{name}: PIL decoded {} images ({} bytes), the trainer {} ({} bytes)",
                names.len(),
                reference.len(),
                ds.len(),
                ds.images.len()
            );
        }
        let (mut images, mut values, mut max) = (0usize, 0usize, 0u8);
        let per_image = ds.image_bytes();
        for (i, (ours, theirs)) in ds
            .images
            .chunks_exact(per_image)
            .zip(reference.chunks_exact(per_image))
            .enumerate()
        {
            let diff: Vec<u8> = ours
                .iter()
                .zip(theirs)
                .map(|(a, b)| a.abs_diff(*b))
                .collect();
            let n = diff.iter().filter(|&&d| d > 0).count();
            if n > 0 {
                let m = diff.iter().copied().max().unwrap_or(0);
                if images < 5 {
                    println!("  {}: {n} values differ, by up to {m}", names[i]);
                }
                images += 1;
                values += n;
                max = max.max(m);
            }
        }
        println!(
            "{name}: {} images, {images} differ from PIL ({values} of {} values, max difference {max})",
            ds.len(),
            ds.images.len()
        );
        differing_images += images;
    }
    if differing_images > 0 {
        bail!("{differing_images} images differ from PIL's decode");
    }
    println!("every pixel equals PIL's");
    Ok(())
}
