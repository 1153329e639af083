//! Loads a torchvision-format ResNet checkpoint (safetensors) and prints its top
//! predictions for an image file.
//!
//! `cargo run --release -p examples --example predict -- CHECKPOINT IMAGE [OPTIONS]`
//!
//! Options (defaults in brackets):
//! - `--arch NAME`: any of `models::RESNET_NAMES` [`resnet18`]
//! - `--stem imagenet|cifar`: [read from `conv1.weight`: 7×7 is ImageNet, 3×3 CIFAR]
//! - `--classes N`: [read from `fc.weight`]
//! - `--top K`: how many predictions to print [5]
//! - `--labels FILE|cifar10`: class names, one per line [class indices]
//!
//! Preprocessing: ImageNet stem: shorter side to 256, centre crop 224, ImageNet mean/std;
//! CIFAR stem: resize to 32×32, CIFAR-10 mean/std.
//!
//! A torchvision checkpoint in this format:
//! ```text
//! python -c "import torchvision, safetensors.torch as st; \
//!   st.save_file(torchvision.models.resnet18(weights='DEFAULT').state_dict(), 'resnet18.safetensors')"
//! cargo run --release -p examples --example predict -- resnet18.safetensors cat.jpg
//! ```

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, ModuleT, Tensor, D};
use candle_nn::VarBuilder;
use image::imageops::FilterType;
use models::{ResNet, ResNetConfig, Stem};

const CIFAR10: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

struct Args {
    checkpoint: String,
    image: String,
    arch: String,
    stem: Option<Stem>,
    classes: Option<usize>,
    top: usize,
    labels: Option<String>,
}

fn parse_args() -> Result<Args> {
    let mut positional = vec![];
    let mut args = Args {
        checkpoint: String::new(),
        image: String::new(),
        arch: "resnet18".into(),
        stem: None,
        classes: None,
        top: 5,
        labels: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--arch" => args.arch = value()?,
            "--stem" => {
                args.stem = Some(match value()?.as_str() {
                    "imagenet" => Stem::ImageNet,
                    "cifar" => Stem::Cifar,
                    s => bail!("--stem {s:?}: expected imagenet or cifar"),
                })
            }
            "--classes" => args.classes = Some(value()?.parse().context("--classes")?),
            "--top" => args.top = value()?.parse().context("--top")?,
            "--labels" => args.labels = Some(value()?),
            s if s.starts_with("--") => bail!("unknown option {s}"),
            _ => positional.push(a),
        }
    }
    let [checkpoint, image] = <[String; 2]>::try_from(positional).map_err(|_| {
        anyhow::anyhow!("usage: predict CHECKPOINT IMAGE [--arch NAME] [--stem imagenet|cifar] [--classes N] [--top K] [--labels FILE|cifar10]")
    })?;
    args.checkpoint = checkpoint;
    args.image = image;
    Ok(args)
}

/// The image as a normalised `(1, 3, size, size)` tensor.
fn preprocess(path: &str, stem: Stem) -> Result<Tensor> {
    let img = image::open(path).with_context(|| format!("reading {path}"))?;
    let (img, mean, std) = match stem {
        Stem::ImageNet => {
            let (w, h) = (img.width(), img.height());
            let scale = 256.0 / w.min(h) as f64;
            let (nw, nh) = (
                ((w as f64 * scale).round() as u32).max(224),
                ((h as f64 * scale).round() as u32).max(224),
            );
            let img = img.resize_exact(nw, nh, FilterType::Triangle);
            let img = img.crop_imm((nw - 224) / 2, (nh - 224) / 2, 224, 224);
            (img, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        }
        Stem::Cifar => (
            img.resize_exact(32, 32, FilterType::Triangle),
            [0.4914, 0.4822, 0.4465],
            [0.2470, 0.2435, 0.2616],
        ),
    };
    let rgb = img.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let mut chw = vec![0f32; 3 * h * w];
    for (i, px) in rgb.pixels().enumerate() {
        for c in 0..3 {
            chw[c * h * w + i] = (f32::from(px.0[c]) / 255.0 - mean[c]) / std[c];
        }
    }
    Ok(Tensor::from_vec(chw, (1, 3, h, w), &Device::Cpu)?)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let device = Device::Cpu;
    // SAFETY: the checkpoint is only read, and not expected to change while mapped.
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(&[&args.checkpoint], DType::F32, &device)
            .with_context(|| format!("opening {}", args.checkpoint))?
    };
    let stem = match args.stem {
        Some(s) => s,
        None => match vb.get_unchecked("conv1.weight")?.dims() {
            [_, 3, 7, 7] => Stem::ImageNet,
            [_, 3, 3, 3] => Stem::Cifar,
            d => bail!("conv1.weight has shape {d:?}; pass --stem"),
        },
    };
    let classes = match args.classes {
        Some(n) => n,
        None => vb.get_unchecked("fc.weight")?.dim(0)?,
    };
    let cfg = ResNetConfig::by_name(&args.arch, classes)?.with_stem(stem);
    let net = ResNet::new(&cfg, vb).with_context(|| {
        format!(
            "{} is not a {} ({stem:?} stem, {classes} classes) checkpoint",
            args.checkpoint, args.arch
        )
    })?;
    let labels: Vec<String> = match args.labels.as_deref() {
        None => vec![],
        Some("cifar10") => CIFAR10.iter().map(|s| s.to_string()).collect(),
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading {path}"))?
            .lines()
            .map(str::to_string)
            .collect(),
    };

    let xs = preprocess(&args.image, stem)?;
    let probs = candle_nn::ops::softmax(&net.forward_t(&xs, false)?, D::Minus1)?
        .squeeze(0)?
        .to_vec1::<f32>()?;
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    println!(
        "{} ({}, {stem:?} stem, {} parameters) on {}:",
        args.checkpoint,
        args.arch,
        net.num_parameters(),
        args.image
    );
    for (rank, &c) in order.iter().take(args.top).enumerate() {
        let name = labels.get(c).map(String::as_str).unwrap_or("");
        println!(
            "{:>2}. class {c:>4} {name:<20} p = {:.4}",
            rank + 1,
            probs[c]
        );
    }
    Ok(())
}
