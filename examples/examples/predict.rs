//! Loads a torchvision-format ResNet checkpoint (safetensors), or an ONNX file exported by
//! `trainer export` (run by tract, a pure-Rust ONNX runtime), and prints its top predictions for
//! an image file.
//!
//! `cargo run --release -p examples --example predict -- CHECKPOINT|MODEL.onnx IMAGE [OPTIONS]`
//!
//! Options (defaults in brackets):
//! - `--arch NAME`: any of `models::RESNET_NAMES` [`resnet18`] (safetensors only)
//! - `--stem imagenet|cifar`: [read from `conv1.weight`: 7×7 is ImageNet, 3×3 CIFAR; for an ONNX
//!   file, from its `stem` metadata]
//! - `--classes N`: [read from `fc.weight`] (safetensors only)
//! - `--top K`: how many predictions to print [5]
//! - `--labels FILE|cifar10`: class names, one per line [class indices]
//!
//! Preprocessing: ImageNet stem: shorter side to 256, centre crop 224, ImageNet mean/std;
//! CIFAR stem: resize to 32×32, CIFAR-10 mean/std. An ONNX file gets the image at its declared
//! input size, as `uint8`, `[0, 1]` or normalised pixels as its `input` metadata says (the
//! normalisation then happens inside the graph, with the constants it was exported with).
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
        anyhow::anyhow!("usage: predict CHECKPOINT.safetensors|MODEL.onnx IMAGE [--arch NAME] [--stem imagenet|cifar] [--classes N] [--top K] [--labels FILE|cifar10]")
    })?;
    args.checkpoint = checkpoint;
    args.image = image;
    Ok(args)
}

/// The image as a normalised `(1, 3, size, size)` tensor.
fn preprocess(path: &str, stem: Stem) -> Result<Tensor> {
    let img = image::open(path).with_context(|| format!("reading {path}"))?;
    let (img, mean, std) = resize(img, stem);
    let unit = to_chw(&img)?.to_dtype(DType::F32)? / 255.0;
    let mean = Tensor::new(&mean, &Device::Cpu)?.reshape((1, 3, 1, 1))?;
    let std = Tensor::new(&std, &Device::Cpu)?.reshape((1, 3, 1, 1))?;
    Ok(unit?.broadcast_sub(&mean)?.broadcast_div(&std)?)
}

/// The image as the stem expects it (ImageNet: shorter side 256, centre crop 224; CIFAR:
/// 32×32), with the mean and standard deviation to normalise it with.
fn resize(img: image::DynamicImage, stem: Stem) -> (image::DynamicImage, [f32; 3], [f32; 3]) {
    match stem {
        Stem::ImageNet => {
            let (w, h) = (img.width(), img.height());
            let scale = 256.0 / w.min(h) as f64;
            let (nw, nh) = (
                ((w as f64 * scale).round() as u32).max(224),
                ((h as f64 * scale).round() as u32).max(224),
            );
            let img = img.resize_exact(nw, nh, FilterType::Triangle);
            let img = img.crop_imm((nw - 224) / 2, (nh - 224) / 2, 224, 224);
            (
                img,
                augment::presets::IMAGENET_MEAN,
                augment::presets::IMAGENET_STD,
            )
        }
        Stem::Cifar => (
            img.resize_exact(32, 32, FilterType::Triangle),
            augment::presets::CIFAR_MEAN,
            augment::presets::CIFAR_STD,
        ),
    }
}

/// The image's pixels as a `(1, 3, H, W)` `u8` tensor.
fn to_chw(img: &image::DynamicImage) -> Result<Tensor> {
    let rgb = img.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let mut chw = vec![0u8; 3 * h * w];
    for (i, px) in rgb.pixels().enumerate() {
        for c in 0..3 {
            chw[c * h * w + i] = px.0[c];
        }
    }
    Ok(Tensor::from_vec(chw, (1, 3, h, w), &Device::Cpu)?)
}

/// Logits of an ONNX file (run by tract) for the image; returns them and a description.
fn onnx_logits(args: &Args) -> Result<(Tensor, String)> {
    let bytes =
        std::fs::read(&args.checkpoint).with_context(|| format!("reading {}", args.checkpoint))?;
    let model = deploy::OnnxModel::from_bytes(&bytes, &args.checkpoint)?;
    let stem = match (args.stem, model.metadata_value("stem")) {
        (Some(s), _) => s,
        (None, Some("imagenet")) => Stem::ImageNet,
        (None, Some("cifar")) => Stem::Cifar,
        _ => bail!("{}: no `stem` metadata; pass --stem", args.checkpoint),
    };
    let img = image::open(&args.image).with_context(|| format!("reading {}", args.image))?;
    let (img, _, _) = resize(img, stem);
    let img = match model.input_dims() {
        [_, _, Some(h), Some(w)] => img.resize_exact(*w as u32, *h as u32, FilterType::Triangle),
        _ => img,
    };
    let pixels = to_chw(&img)?;
    let xs = match (model.takes_uint8(), model.metadata_value("input")) {
        (true, _) => pixels,
        (false, Some("unit")) => (pixels.to_dtype(DType::F32)? / 255.0)?,
        _ => preprocess(&args.image, stem)?,
    };
    let logits = model
        .run(&xs)?
        .into_iter()
        .next()
        .context("the model has no output")?;
    let arch = model
        .metadata_value("arch")
        .unwrap_or("ONNX model")
        .to_string();
    Ok((logits, format!("{arch}, {stem:?} stem, tract")))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let (logits, what) = if args.checkpoint.ends_with(".onnx") {
        onnx_logits(&args)?
    } else {
        safetensors_logits(&args)?
    };
    let labels: Vec<String> = match args.labels.as_deref() {
        None => vec![],
        Some("cifar10") => CIFAR10.iter().map(|s| s.to_string()).collect(),
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading {path}"))?
            .lines()
            .map(str::to_string)
            .collect(),
    };
    let probs = candle_nn::ops::softmax(&logits, D::Minus1)?
        .squeeze(0)?
        .to_vec1::<f32>()?;
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    println!("{} ({what}) on {}:", args.checkpoint, args.image);
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

/// Logits of a safetensors checkpoint (our kernels) for the image; returns them and a
/// description.
fn safetensors_logits(args: &Args) -> Result<(Tensor, String)> {
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
    let xs = preprocess(&args.image, stem)?;
    let logits = net.forward_t(&xs, false)?;
    let what = format!(
        "{}, {stem:?} stem, {} parameters",
        args.arch,
        net.num_parameters()
    );
    Ok((logits, what))
}
