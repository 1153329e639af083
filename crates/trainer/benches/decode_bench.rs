//! Decode time per JPEG: the trainer's [`trainer::data::decode_image`] beside the `image` crate's
//! decoder (zune-jpeg, what `decode_image` used before it decoded JPEG through libjpeg-turbo).
//!
//! ```sh
//! cargo bench -p trainer --bench decode_bench                                       # the bundled sample
//! cargo bench -p trainer --bench decode_bench -- --runs 9 --tar DIR/test.tar.gz  # CIFAR-10's
//! ```
//!
//! The JPEGs (the bundled sample's 3,000, or every `.jpg` of a `.tar.gz` such as the CIFAR-10
//! `test.tar.gz`) are read into memory first; then each run decodes all of them on one thread, to
//! CHW RGB at their own size (no resize), once through each decoder, the two in alternating order.
//! Prints the median over `--runs` (default 7, after one untimed warm-up) of the time per image for
//! each decoder, and their ratio.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// The `image` crate's decode of one image to CHW RGB bytes (what `decode_image` did before, less
/// its resize, which these same-sized images never needed).
fn decode_with_image_crate(bytes: &[u8]) -> Result<Vec<u8>> {
    Ok(trainer::data::rgb_to_chw(
        &image::load_from_memory(bytes)?.into_rgb8(),
    ))
}

fn jpegs_in_dir(dir: &Path, out: &mut Vec<Vec<u8>>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            jpegs_in_dir(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "jpg") {
            out.push(std::fs::read(&path)?);
        }
    }
    Ok(())
}

fn jpegs_in_tar(path: &Path) -> Result<Vec<Vec<u8>>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.path()?.extension().is_some_and(|e| e == "jpg") {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            out.push(bytes);
        }
    }
    Ok(out)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Seconds to decode images `0..n` once, and the sum of their pixels (which also keeps the work
/// from being optimised away).
fn time_all(n: usize, decode: impl Fn(usize) -> Result<Vec<u8>>) -> Result<(f64, u64)> {
    let t = Instant::now();
    let mut sum = 0u64;
    for i in 0..n {
        sum += decode(i)?.iter().map(|&v| u64::from(v)).sum::<u64>();
    }
    Ok((t.elapsed().as_secs_f64(), sum))
}

fn main() -> Result<()> {
    let mut runs = 7usize;
    let mut tar: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => {
                let v = args.next().context("--runs needs a value")?;
                runs = v.parse().with_context(|| format!("--runs {v}"))?;
                if runs == 0 {
                    bail!("--runs must be at least 1")
                }
            }
            "--tar" => tar = Some(args.next().context("--tar needs a file")?.into()),
            "--bench" => {} // passed by `cargo bench`
            other => bail!("usage: decode_bench [--runs N] [--tar FILE.tar.gz] (got `{other}`)"),
        }
    }
    let jpegs = match &tar {
        Some(path) => jpegs_in_tar(path)?,
        None => {
            let mut v = Vec::new();
            jpegs_in_dir(&trainer::data::bundled_sample_dir(), &mut v)?;
            v
        }
    };
    if jpegs.is_empty() {
        bail!("no .jpg found");
    }
    // Each image at its own size, read before the clock starts.
    let sizes: Vec<(usize, usize)> = jpegs
        .iter()
        .map(|b| {
            let (w, h) = image::load_from_memory(b)?.into_rgb8().dimensions();
            Ok((h as usize, w as usize))
        })
        .collect::<Result<_>>()?;
    let ours = |i: usize| -> Result<Vec<u8>> {
        let (h, w) = sizes[i];
        Ok(trainer::data::decode_image(
            &jpegs[i],
            Path::new("bench.jpg"),
            h,
            w,
        )?)
    };
    let theirs = |i: usize| decode_with_image_crate(&jpegs[i]);
    // Warm-up, and a check that both decoders read every file and agree on the pixel sum.
    let (_, sum_ours) = time_all(jpegs.len(), ours)?;
    let (_, sum_image) = time_all(jpegs.len(), theirs)?;
    let (mut t_ours, mut t_image) = (Vec::new(), Vec::new());
    for run in 0..runs {
        if run % 2 == 0 {
            t_ours.push(time_all(jpegs.len(), ours)?.0);
            t_image.push(time_all(jpegs.len(), theirs)?.0);
        } else {
            t_image.push(time_all(jpegs.len(), theirs)?.0);
            t_ours.push(time_all(jpegs.len(), ours)?.0);
        }
    }
    let per_image = |t: Vec<f64>| median(t) / jpegs.len() as f64 * 1e6;
    let (ours_us, image_us) = (per_image(t_ours), per_image(t_image));
    println!(
        "{} JPEGs, median of {runs} runs, one thread, per image:\n  \
         trainer::data::decode_image   {ours_us:8.2} µs\n  \
         image crate (zune-jpeg)       {image_us:8.2} µs\n  \
         ratio decode_image / image    {:8.3}\n  \
         pixel sums                    {sum_ours} / {sum_image}",
        jpegs.len(),
        ours_us / image_us
    );
    Ok(())
}
