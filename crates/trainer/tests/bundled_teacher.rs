//! The bundled CIFAR-10 teacher (`data/teachers/cifar10`, written by `cargo xtask teacher`):
//! stored as promised, loaded by its name wherever a checkpoint is taken, and a real CIFAR-10
//! model on the bundled sample's test images.

use std::path::Path;

use anyhow::Result;
use candle_core::{DType, Device};
use trainer::checkpoint::{bundled_teacher, meta, Checkpoint, BUNDLED};
use trainer::Config;

#[test]
fn the_bundled_teacher_is_half_precision_resnet8x4_under_25_mb() -> Result<()> {
    let file = bundled_teacher();
    let bytes = std::fs::metadata(&file)?.len();
    assert!(bytes <= 25 << 20, "{}: {bytes} bytes", file.display());
    let ckpt = Checkpoint::load(Path::new(BUNDLED), &Device::Cpu)?;
    assert_eq!(
        ckpt.metadata.get(meta::ARCH).map(String::as_str),
        Some("resnet8x4")
    );
    assert_eq!(ckpt.meta::<usize>(meta::NUM_CLASSES), Some(10));
    assert_eq!(
        ckpt.metadata.get("storage").map(String::as_str),
        Some("f16")
    );
    // Every floating-point tensor is stored in half precision.
    for (name, t) in &ckpt.tensors {
        assert!(
            !matches!(t.dtype(), DType::F32 | DType::F64),
            "{name} is stored as {:?}",
            t.dtype()
        );
    }
    // The run that made it is beside it.
    let dir = file.parent().expect("a folder");
    for f in ["config.toml", "metrics.jsonl", "README.md"] {
        assert!(
            dir.join(f).is_file(),
            "{f} missing beside the bundled teacher"
        );
    }
    Ok(())
}

#[test]
fn bundled_names_the_teacher_and_it_classifies_the_sample() -> Result<()> {
    let mut cfg = Config {
        threads: 2,
        ..Config::default()
    };
    cfg.eval.knn_k = 20;
    let by_name = trainer::run::run_eval(&cfg, Path::new(BUNDLED), None, false)?;
    let by_path = trainer::run::run_eval(&cfg, &bundled_teacher(), None, false)?;
    assert_eq!(by_name, by_path);
    assert_eq!(by_name.test_images, 1000);
    // A CIFAR-10 model, loaded right: far above chance (10%) on CIFAR-10 test images it never saw
    // (the sample's test images are a part of CIFAR-10's test set).
    let acc = by_name.classifier_accuracy.expect("a trained classifier");
    assert!(
        acc > 0.8,
        "the bundled teacher's accuracy on the sample: {acc}"
    );
    Ok(())
}
