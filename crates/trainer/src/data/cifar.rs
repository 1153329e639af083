//! CIFAR-10 and CIFAR-100 in the official binary format (`cifar-10-batches-bin`, `cifar-100-binary`).
//!
//! A record is the label byte(s) followed by 3,072 pixel bytes: 1,024 red, 1,024 green, 1,024 blue,
//! each plane row by row (32×32, CHW). CIFAR-10 has one label byte per record; CIFAR-100 has two
//! (coarse label, then fine label).
//!
//! Candle-datasets' `vision::cifar::load_dir` reads CIFAR-10 too, but it requires exactly 10,000 records
//! per file, converts to `f32` at once (4× the memory of the raw bytes the augmentation pipeline wants),
//! and reports a short file without its name; this reader keeps bytes, names the file and checks labels.

use std::path::Path;

use super::{DataError, Dataset, Split};

const SIDE: usize = 32;
const PIXELS: usize = 3 * SIDE * SIDE;

/// The two CIFAR binary layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CifarFormat {
    /// One label byte per record, 10 classes.
    Cifar10,
    /// Two label bytes per record (coarse, fine); which one becomes the label.
    Cifar100(Cifar100Labels),
}

/// Which CIFAR-100 label to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cifar100Labels {
    /// The 100 fine classes (the usual benchmark).
    #[default]
    Fine,
    /// The 20 superclasses.
    Coarse,
}

impl CifarFormat {
    fn label_bytes(self) -> usize {
        match self {
            CifarFormat::Cifar10 => 1,
            CifarFormat::Cifar100(_) => 2,
        }
    }

    fn num_classes(self) -> usize {
        match self {
            CifarFormat::Cifar10 => 10,
            CifarFormat::Cifar100(Cifar100Labels::Fine) => 100,
            CifarFormat::Cifar100(Cifar100Labels::Coarse) => 20,
        }
    }

    /// Bytes per record: label byte(s) plus 3,072 pixels.
    pub fn record_bytes(self) -> usize {
        self.label_bytes() + PIXELS
    }
}

/// Parses the records of one CIFAR batch held in memory; `path` is only used in errors.
///
/// Fails when the length is zero or not a multiple of the record size, or a label byte is out of range.
pub fn parse_cifar_records(
    bytes: &[u8],
    path: &Path,
    format: CifarFormat,
) -> Result<(Vec<u8>, Vec<u32>), DataError> {
    let record = format.record_bytes();
    let bad = |reason: String| DataError::BadCifar {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.is_empty() {
        return Err(bad("empty file, expected CIFAR records".into()));
    }
    if bytes.len() % record != 0 {
        return Err(bad(format!(
            "truncated or not a CIFAR batch: {} bytes is not a multiple of the {record}-byte record \
             ({} whole records and {} bytes left over)",
            bytes.len(),
            bytes.len() / record,
            bytes.len() % record
        )));
    }
    let n = bytes.len() / record;
    let mut images = Vec::with_capacity(n * PIXELS);
    let mut labels = Vec::with_capacity(n);
    let classes = format.num_classes();
    for (i, rec) in bytes.chunks_exact(record).enumerate() {
        let label = match format {
            CifarFormat::Cifar10 | CifarFormat::Cifar100(Cifar100Labels::Coarse) => rec[0],
            CifarFormat::Cifar100(Cifar100Labels::Fine) => rec[1],
        };
        if label as usize >= classes {
            return Err(bad(format!(
                "record {i}: label byte {label} is out of range 0..{classes}"
            )));
        }
        labels.push(label as u32);
        images.extend_from_slice(&rec[format.label_bytes()..]);
    }
    Ok((images, labels))
}

fn read_batches(
    dir: &Path,
    files: &[&str],
    format: CifarFormat,
    names: &[String],
) -> Result<Dataset, DataError> {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for f in files {
        let path = dir.join(f);
        let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
        let (i, l) = parse_cifar_records(&bytes, &path, format)?;
        images.extend(i);
        labels.extend(l);
    }
    Ok(Dataset {
        images,
        labels,
        height: SIDE,
        width: SIDE,
        class_names: names.to_vec(),
    })
}

fn check_dir(dir: &Path) -> Result<(), DataError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(DataError::Invalid(format!(
            "{}: not a folder",
            dir.display()
        ))),
        Err(e) => Err(DataError::io(dir, e)),
    }
}

/// Class names from a `*.txt` meta file (one per line), or `default` if the file is absent.
fn class_names(
    path: &Path,
    default: impl Fn() -> Vec<String>,
    expected: usize,
) -> Result<Vec<String>, DataError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let names: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
            if names.len() != expected {
                return Err(DataError::Invalid(format!(
                    "{}: expected {expected} class names, found {}",
                    path.display(),
                    names.len()
                )));
            }
            Ok(names)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(default()),
        Err(e) => Err(DataError::io(path, e)),
    }
}

/// The ten CIFAR-10 class names, in label order.
pub(crate) const CIFAR10_CLASSES: [&str; 10] = [
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

/// Loads `data_batch_1.bin` … `data_batch_5.bin` and `test_batch.bin` from `dir`
/// (the `cifar-10-batches-bin` folder); class names from `batches.meta.txt` when present.
pub fn load_cifar10_dir(dir: impl AsRef<Path>) -> Result<Split, DataError> {
    let dir = dir.as_ref();
    check_dir(dir)?;
    let names = class_names(
        &dir.join("batches.meta.txt"),
        || CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
        10,
    )?;
    let train_files = [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
    ];
    Ok(Split {
        train: read_batches(dir, &train_files, CifarFormat::Cifar10, &names)?,
        test: read_batches(dir, &["test_batch.bin"], CifarFormat::Cifar10, &names)?,
    })
}

/// Loads `train.bin` and `test.bin` from `dir` (the `cifar-100-binary` folder) with the fine or coarse
/// labels; class names from `fine_label_names.txt` / `coarse_label_names.txt` when present, else `"0"`, `"1"`, ….
pub fn load_cifar100_dir(
    dir: impl AsRef<Path>,
    labels: Cifar100Labels,
) -> Result<Split, DataError> {
    let dir = dir.as_ref();
    check_dir(dir)?;
    let format = CifarFormat::Cifar100(labels);
    let (meta, n) = match labels {
        Cifar100Labels::Fine => ("fine_label_names.txt", 100),
        Cifar100Labels::Coarse => ("coarse_label_names.txt", 20),
    };
    let names = class_names(
        &dir.join(meta),
        || (0..n).map(|i| i.to_string()).collect(),
        n,
    )?;
    Ok(Split {
        train: read_batches(dir, &["train.bin"], format, &names)?,
        test: read_batches(dir, &["test.bin"], format, &names)?,
    })
}
