//! [`DataSource`]: the `--data` option, parsed and loaded.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::{
    load_cifar100_dir, load_cifar10_dir, load_cifar10_tarballs, load_image_folder, Cifar100Labels,
    DataError, Split,
};

/// Where a run's images come from.
///
/// Parsed from the strings the trainer's `--data` takes:
///
/// | string | meaning |
/// | --- | --- |
/// | `sample` | the bundled 3,000-image CIFAR-10 sample ([`bundled_sample_dir`]) |
/// | `cifar10:DIR` | CIFAR-10 binary batches (`data_batch_1.bin` …) |
/// | `cifar100:DIR` | CIFAR-100 binary (`train.bin`, `test.bin`), fine labels |
/// | `cifar100-coarse:DIR` | the same, 20 coarse labels |
/// | `folder:DIR` | `DIR/train/` and `DIR/test/` ImageFolder trees |
/// | `cifar10-tar:DIR` | `DIR/train.tar.gz` and `DIR/test.tar.gz`, CIFAR-10 as JPEG folders, read as a stream |
/// | `parquet:DIR` | parquet shards in the Hugging Face Hub's layout (feature `parquet`) |
/// | `hub:OWNER/NAME[@REVISION][:CONFIG]` | a dataset from the Hugging Face Hub, through its cache (feature `hub`) |
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// The bundled sample.
    Sample,
    /// CIFAR-10 binary batches in a folder.
    Cifar10(PathBuf),
    /// CIFAR-100 binary files in a folder.
    Cifar100(PathBuf, Cifar100Labels),
    /// A folder with `train/` and `test/` ImageFolder trees.
    Folder(PathBuf),
    /// A folder with the CIFAR-10 JPEG tarballs.
    Cifar10Tar(PathBuf),
    /// A folder of parquet shards ([`super::parquet`]).
    #[cfg(feature = "parquet")]
    Parquet(PathBuf),
    /// A dataset on the Hugging Face Hub ([`super::hub`]).
    #[cfg(feature = "hub")]
    Hub(super::hub::HubDataset),
}

/// The bundled sample's folder: `data/sample` at the top of the source tree this binary was built from.
pub fn bundled_sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/sample")
}

impl FromStr for DataSource {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "sample" {
            return Ok(DataSource::Sample);
        }
        let bad = || {
            DataError::Invalid(format!(
                "--data {s:?}: expected `sample`, `cifar10:DIR`, `cifar100:DIR`, `cifar100-coarse:DIR`, \
                 `folder:DIR`, `cifar10-tar:DIR`, `parquet:DIR` or `hub:OWNER/NAME`"
            ))
        };
        let (kind, dir) = s.split_once(':').ok_or_else(bad)?;
        if dir.is_empty() {
            return Err(bad());
        }
        if let Some(feature) = missing_feature(kind) {
            return Err(DataError::Invalid(format!(
                "--data {s:?}: this trainer was built without the `{feature}` feature; \
                 rebuild it with `cargo build --release -p trainer --features {feature}`"
            )));
        }
        #[cfg(feature = "hub")]
        if kind == "hub" {
            return Ok(DataSource::Hub(dir.parse()?));
        }
        let dir = PathBuf::from(dir);
        Ok(match kind {
            "cifar10" => DataSource::Cifar10(dir),
            "cifar100" => DataSource::Cifar100(dir, Cifar100Labels::Fine),
            "cifar100-coarse" => DataSource::Cifar100(dir, Cifar100Labels::Coarse),
            "folder" => DataSource::Folder(dir),
            "cifar10-tar" => DataSource::Cifar10Tar(dir),
            #[cfg(feature = "parquet")]
            "parquet" => DataSource::Parquet(dir),
            _ => return Err(bad()),
        })
    }
}

/// The cargo feature a `--data` kind needs, when this build lacks it.
fn missing_feature(kind: &str) -> Option<&'static str> {
    match kind {
        "parquet" if !cfg!(feature = "parquet") => Some("parquet"),
        "hub" if !cfg!(feature = "hub") => Some("hub"),
        _ => None,
    }
}

impl std::fmt::Display for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSource::Sample => write!(f, "sample"),
            DataSource::Cifar10(d) => write!(f, "cifar10:{}", d.display()),
            DataSource::Cifar100(d, Cifar100Labels::Fine) => write!(f, "cifar100:{}", d.display()),
            DataSource::Cifar100(d, Cifar100Labels::Coarse) => {
                write!(f, "cifar100-coarse:{}", d.display())
            }
            DataSource::Folder(d) => write!(f, "folder:{}", d.display()),
            DataSource::Cifar10Tar(d) => write!(f, "cifar10-tar:{}", d.display()),
            #[cfg(feature = "parquet")]
            DataSource::Parquet(d) => write!(f, "parquet:{}", d.display()),
            #[cfg(feature = "hub")]
            DataSource::Hub(h) => write!(f, "{h}"),
        }
    }
}

impl DataSource {
    /// Loads the train and test sets. Folder, tarball, parquet and Hub images are resized to
    /// `image_size` squared; CIFAR binary images are always 32×32, and another `image_size` is an error.
    /// A Hub dataset is reached with the options `hub::HubOptions::from_env` takes from the environment.
    pub fn load(&self, image_size: usize) -> Result<Split, DataError> {
        let binary_size = |split: Split| {
            if image_size == 32 {
                Ok(split)
            } else {
                Err(DataError::Invalid(format!(
                    "{self}: CIFAR binary images are 32x32; image size {image_size} is not supported for them"
                )))
            }
        };
        let split = match self {
            DataSource::Sample => {
                let dir = bundled_sample_dir();
                if !dir.is_dir() {
                    return Err(DataError::Invalid(format!(
                        "the bundled sample is not at {} (it ships with the source tree); pass --data folder:DIR",
                        dir.display()
                    )));
                }
                load_folders(&dir, image_size)?
            }
            DataSource::Cifar10(d) => binary_size(load_cifar10_dir(d)?)?,
            DataSource::Cifar100(d, labels) => binary_size(load_cifar100_dir(d, *labels)?)?,
            DataSource::Folder(d) => load_folders(d, image_size)?,
            DataSource::Cifar10Tar(d) => load_cifar10_tarballs(d, image_size, image_size)?,
            #[cfg(feature = "parquet")]
            DataSource::Parquet(d) => super::parquet::load_parquet_dir(d, image_size)?,
            #[cfg(feature = "hub")]
            DataSource::Hub(h) => {
                super::hub::load_hub(h, image_size, &super::hub::HubOptions::from_env())?
            }
        };
        Ok(split)
    }
}

fn load_folders(dir: &Path, image_size: usize) -> Result<Split, DataError> {
    let train = load_image_folder(dir.join("train"), image_size, image_size)?;
    let test = load_image_folder(dir.join("test"), image_size, image_size)?;
    if train.class_names != test.class_names {
        return Err(DataError::Invalid(format!(
            "{}: train/ and test/ have different class folders ({:?} vs {:?})",
            dir.display(),
            train.class_names,
            test.class_names
        )));
    }
    Ok(Split { train, test })
}
