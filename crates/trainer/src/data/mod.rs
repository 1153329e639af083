//! Data readers: CIFAR binary batches, ImageFolder trees, the CIFAR-10 JPEG tarballs and the bundled sample;
//! with the `parquet` feature, parquet shards in the Hugging Face Hub's layout (module `parquet`), and with
//! the `hub` feature, datasets from the Hub itself (module `hub`).
//!
//! Every reader returns a [`Dataset`]: raw `u8` pixels, one image after the other, each in CHW order
//! `(3, H, W)` (CIFAR's native layout, and what [`augment`] consumes), plus `u32` labels.
//! Errors are [`DataError`]s that name the file and what is wrong; no reader panics on bad input.

mod cifar;
mod error;
mod folder;
#[cfg(feature = "hub")]
pub mod hub;
mod jpeg;
#[cfg(feature = "parquet")]
pub mod parquet;
mod source;
mod tarball;

pub use cifar::{
    load_cifar100_dir, load_cifar10_dir, parse_cifar_records, Cifar100Labels, CifarFormat,
};
pub use error::DataError;
pub use folder::{decode_image, load_image_folder, rgb_to_chw, IMAGE_EXTENSIONS};
pub use source::{bundled_sample_dir, DataSource};
pub use tarball::load_cifar10_tarballs;

/// A labelled set of same-sized RGB images held as raw bytes.
///
/// # Layout
/// `images` holds `len() * 3 * height * width` bytes: image `i` is
/// `images[i * image_bytes() .. (i + 1) * image_bytes()]`, channels first (R plane, G plane, B plane),
/// rows top to bottom. `labels[i]` is in `0..class_names.len()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// Pixels of every image, CHW, `u8`.
    pub images: Vec<u8>,
    /// One class index per image.
    pub labels: Vec<u32>,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Class names; a label is an index into this list.
    pub class_names: Vec<String>,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Bytes per image: `3 * height * width`.
    pub fn image_bytes(&self) -> usize {
        3 * self.height * self.width
    }

    /// The pixels of image `i` (CHW), or `None` past the end.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let n = self.image_bytes();
        self.images.get(i * n..(i + 1) * n)
    }

    /// How many images each class has.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes()];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }

    /// A new set with the images at `indices`, in that order; indices past the end are skipped.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let n = self.image_bytes();
        let mut images = Vec::with_capacity(indices.len() * n);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            if let Some(img) = self.image(i) {
                images.extend_from_slice(img);
                labels.push(self.labels[i]);
            }
        }
        Dataset {
            images,
            labels,
            height: self.height,
            width: self.width,
            class_names: self.class_names.clone(),
        }
    }

    /// The first `per_class` images of each class, in their original order (a quick, balanced subset).
    pub fn take_per_class(&self, per_class: usize) -> Dataset {
        let mut seen = vec![0usize; self.num_classes()];
        let indices: Vec<usize> = (0..self.len())
            .filter(|&i| {
                let c = &mut seen[self.labels[i] as usize];
                *c += 1;
                *c <= per_class
            })
            .collect();
        self.select(&indices)
    }
}

/// A train and a test [`Dataset`] with the same classes and image size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The training images.
    pub train: Dataset,
    /// The held-out images.
    pub test: Dataset,
}
