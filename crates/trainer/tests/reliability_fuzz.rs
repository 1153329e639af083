//! Property-based fuzzing (proptest) of the four readers of untrusted bytes: CIFAR records, image
//! decoding, the checkpoint loader and the configuration parser. None may panic; what they accept must
//! be well formed.
//!
//! Inputs are valid seeds with random byte edits and truncations (so that the fuzzer gets past magic
//! numbers and headers), plus plain random bytes. `cargo test` runs a short smoke (32 cases each);
//! `PROPTEST_CASES=200000 cargo test --release -p trainer --test reliability_fuzz` fuzzes for long.

use std::path::Path;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use proptest::prelude::*;
use trainer::checkpoint::Checkpoint;
use trainer::data::{decode_image, parse_cifar_records, Cifar100Labels, CifarFormat};
use trainer::Config;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Byte edits: (position as a fraction of the length, new byte), then a cut as a fraction.
type Edits = (Vec<(f64, u8)>, Option<f64>);

fn edits() -> impl Strategy<Value = Edits> {
    (
        proptest::collection::vec((0.0..1.0f64, any::<u8>()), 0..12),
        proptest::option::of(0.0..1.0f64),
    )
}

fn mutate(seed: &[u8], (edits, cut): &Edits) -> Vec<u8> {
    let mut out = seed.to_vec();
    for &(at, byte) in edits {
        if !out.is_empty() {
            let i = ((at * out.len() as f64) as usize).min(out.len() - 1);
            out[i] = byte;
        }
    }
    if let Some(c) = cut {
        out.truncate((c * out.len() as f64) as usize);
    }
    out
}

fn png_seed() -> &'static Vec<u8> {
    static S: OnceLock<Vec<u8>> = OnceLock::new();
    S.get_or_init(|| {
        let img = image::RgbaImage::from_fn(7, 5, |x, y| {
            image::Rgba([x as u8 * 30, y as u8 * 40, 9, 200])
        });
        let mut v = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut v), image::ImageFormat::Png)
            .expect("encode png");
        v
    })
}

fn jpeg_seed() -> &'static Vec<u8> {
    static S: OnceLock<Vec<u8>> = OnceLock::new();
    S.get_or_init(|| {
        std::fs::read(trainer::data::bundled_sample_dir().join("train/cat/0000.jpg"))
            .expect("the bundled sample")
    })
}

fn checkpoint_seed() -> &'static Vec<u8> {
    static S: OnceLock<Vec<u8>> = OnceLock::new();
    S.get_or_init(|| {
        let dev = Device::Cpu;
        let w = Tensor::arange(0f32, 20.0, &dev)
            .and_then(|t| t.reshape((10, 2)))
            .expect("tensor");
        let b = Tensor::zeros(10, candle_core::DType::F32, &dev).expect("tensor");
        let n = Tensor::new(3i64, &dev).expect("tensor");
        let meta = std::collections::HashMap::from([
            ("arch".to_string(), "resnet8".to_string()),
            ("num_classes".to_string(), "10".to_string()),
            ("epoch".to_string(), "1".to_string()),
        ]);
        safetensors::serialize(
            [
                ("fc.weight", &w),
                ("fc.bias", &b),
                ("bn1.num_batches_tracked", &n),
            ],
            Some(meta),
        )
        .expect("serialize")
    })
}

fn check_cifar(bytes: &[u8], format: CifarFormat) {
    if let Ok((images, labels)) = parse_cifar_records(bytes, Path::new("fuzz.bin"), format) {
        assert_eq!(images.len(), labels.len() * 3072);
        assert_eq!(bytes.len(), labels.len() * format.record_bytes());
        assert!(labels.iter().all(|&l| l < 100));
    }
}

fn check_image(bytes: &[u8], h: usize, w: usize) {
    if let Ok(chw) = decode_image(bytes, Path::new("fuzz.img"), h, w) {
        assert_eq!(chw.len(), 3 * h * w);
    }
}

fn check_checkpoint(bytes: &[u8]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fuzz.safetensors");
    std::fs::write(&path, bytes).expect("write");
    if let Ok(ck) = Checkpoint::load(&path, &Device::Cpu) {
        let _ = ck.meta::<usize>("epoch");
        // What the trainer then does with a checkpoint: build the network it describes and load it.
        let _ = trainer::net::Net::from_checkpoint(&path, Some("resnet8"), 10, 32, &Device::Cpu);
    }
}

fn check_config(text: &str) {
    if let Ok(cfg) = Config::from_toml_str(text) {
        if cfg.validate().is_ok() {
            let back = Config::from_toml_str(&cfg.to_toml().expect("to_toml")).expect("round trip");
            assert_eq!(back, cfg);
        }
    }
}

const FORMATS: [CifarFormat; 3] = [
    CifarFormat::Cifar10,
    CifarFormat::Cifar100(Cifar100Labels::Fine),
    CifarFormat::Cifar100(Cifar100Labels::Coarse),
];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_cifar_records(records in 0usize..3, e in edits(), f in 0usize..3,
                          extra in proptest::collection::vec(any::<u8>(), 0..4)) {
        let format = FORMATS[f];
        let mut seed = Vec::new();
        for r in 0..records {
            seed.push((r % 10) as u8);
            if format != CifarFormat::Cifar10 {
                seed.push((r % 20) as u8);
            }
            seed.extend((0..3072).map(|i| (i * 7 + r) as u8));
        }
        let mut bytes = mutate(&seed, &e);
        bytes.extend(extra);
        check_cifar(&bytes, format);
    }

    #[test]
    fn fuzz_decode_image(png in any::<bool>(), e in edits(), h in 1usize..48, w in 1usize..48) {
        let seed = if png { png_seed() } else { jpeg_seed() };
        check_image(&mutate(seed, &e), h, w);
    }

    #[test]
    fn fuzz_decode_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        check_image(&bytes, 8, 8);
    }

    #[test]
    fn fuzz_checkpoint_loader(e in edits()) {
        check_checkpoint(&mutate(checkpoint_seed(), &e));
    }

    #[test]
    fn fuzz_checkpoint_header(header in "\\{[ -~]{0,120}\\}", body in proptest::collection::vec(any::<u8>(), 0..64)) {
        // A well-framed file (8-byte length, then the header) with a random JSON-ish header.
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        bytes.extend(body);
        check_checkpoint(&bytes);
    }

    #[test]
    fn fuzz_config_parser(e in edits(), base in 0usize..2) {
        let seeds = [
            Config::default().to_toml().expect("toml"),
            "seed = 3\ncheckpoint_every = 2\n[student]\nalpha = 0.25\n[teacher.optim]\nepochs = 2\nbatch_size = 4\n".to_string(),
        ];
        let bytes = mutate(seeds[base].as_bytes(), &e);
        check_config(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn fuzz_config_values(key in prop::sample::select(vec![
            "seed", "threads", "log_every", "checkpoint_every", "device", "out", "quiet",
            "data.image_size", "data.source", "teacher.optim.epochs", "teacher.optim.lr",
            "student.optim.batch_size", "student.alpha", "student.projection.output_dim",
            "eval.knn_k", "teacher.optim.step_milestones", "student.teacher"]),
        value in prop::sample::select(vec![
            "0", "-1", "1", "2", "1e308", "-1e308", "nan", "inf", "-inf", "18446744073709551615",
            "99999999999999999999", "\"\"", "\"cuda:99\"", "\"folder:\"", "true", "[1, -2]",
            "{ x = 1 }", "0.5", "\"resnet8\"", "1979-05-27"]))
    {
        let (table, leaf) = match key.rsplit_once('.') {
            Some((t, l)) => (format!("[{t}]\n"), l),
            None => (String::new(), key),
        };
        check_config(&format!("{table}{leaf} = {value}\n"));
    }
}
