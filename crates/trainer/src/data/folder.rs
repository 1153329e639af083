//! ImageFolder trees, as torchvision's `datasets.ImageFolder` reads them.
//!
//! `root/<class>/<file>`: one sub-folder per class; the class index is the folder's position among the
//! sorted folder names (byte order, as Python sorts them). Files whose extension is one of
//! [`IMAGE_EXTENSIONS`] (any case) are images; other files and hidden entries are skipped, as torchvision
//! skips them. Images are decoded in parallel (rayon) to the pixels PIL gives (JPEG through
//! libjpeg-turbo with PIL's settings), converted to RGB (grayscale, palette and alpha images alike;
//! alpha is dropped), and resized to the requested size.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use rayon::prelude::*;

use super::jpeg::{decode_jpeg, is_jpeg};
use super::{DataError, Dataset};

/// File extensions read as images (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.as_encoded_bytes().first() == Some(&b'.'))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        if !is_hidden(&path) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Decodes one encoded image (JPEG or PNG) into CHW RGB bytes of `height × width`.
///
/// The pixels are those of `PIL.Image.open(f).convert("RGB")`, what torchvision's `ImageFolder`
/// gives a model: JPEG through libjpeg-turbo exactly as PIL decodes it, CMYK and grayscale included
/// (`data/jpeg.rs`); PNG through the `image` crate (lossless, so any decoder agrees), grayscale,
/// palette and alpha images made RGB (alpha dropped).
///
/// Images of another size are resized to exactly `height × width` with a triangle filter (bilinear,
/// antialiased when shrinking); the aspect ratio is not kept. `path` is only used in errors.
pub fn decode_image(
    bytes: &[u8],
    path: &Path,
    height: usize,
    width: usize,
) -> Result<Vec<u8>, DataError> {
    let bad = |reason: String| DataError::BadImage {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.is_empty() {
        return Err(bad("empty file".into()));
    }
    let mut rgb = if is_jpeg(bytes) {
        decode_jpeg(bytes).map_err(bad)?
    } else {
        image::load_from_memory(bytes)
            .map_err(|e| bad(e.to_string()))?
            .into_rgb8()
    };
    if rgb.width() == 0 || rgb.height() == 0 {
        return Err(bad("zero-sized image".into()));
    }
    let (h, w) = (u32::try_from(height), u32::try_from(width));
    let (Ok(h), Ok(w)) = (h, w) else {
        return Err(bad(format!("requested size {height}x{width} is too large")));
    };
    if rgb.width() != w || rgb.height() != h {
        rgb = image::imageops::resize(&rgb, w, h, FilterType::Triangle);
    }
    Ok(rgb_to_chw(&rgb))
}

/// An RGB image's pixels in CHW order (the R plane, then G, then B; rows top to bottom), the layout
/// of a [`Dataset`] image.
pub fn rgb_to_chw(rgb: &image::RgbImage) -> Vec<u8> {
    let plane = rgb.width() as usize * rgb.height() as usize;
    let mut chw = vec![0u8; 3 * plane];
    for (i, px) in rgb.pixels().enumerate() {
        chw[i] = px[0];
        chw[plane + i] = px[1];
        chw[2 * plane + i] = px[2];
    }
    chw
}

/// Reads an ImageFolder tree at `root` into a [`Dataset`] of `height × width` images.
///
/// Errors name the path: a missing or unreadable folder, a folder with no class sub-folders, a class
/// folder with no image, or a file that cannot be decoded.
pub fn load_image_folder(
    root: impl AsRef<Path>,
    height: usize,
    width: usize,
) -> Result<Dataset, DataError> {
    let root = root.as_ref();
    if height == 0 || width == 0 {
        return Err(DataError::Invalid(format!(
            "{}: image size {height}x{width} must be positive",
            root.display()
        )));
    }
    let meta = std::fs::metadata(root).map_err(|e| DataError::io(root, e))?;
    if !meta.is_dir() {
        return Err(DataError::Invalid(format!(
            "{}: not a folder",
            root.display()
        )));
    }
    let classes: Vec<PathBuf> = sorted_entries(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if classes.is_empty() {
        return Err(DataError::Empty {
            path: root.to_path_buf(),
            what: "no class folders (expected one sub-folder of images per class)".into(),
        });
    }
    let mut files: Vec<(PathBuf, u32)> = Vec::new();
    for (label, class_dir) in classes.iter().enumerate() {
        let before = files.len();
        for path in sorted_entries(class_dir)? {
            if path.is_file() && is_image(&path) {
                files.push((path, label as u32));
            }
        }
        if files.len() == before {
            return Err(DataError::Empty {
                path: class_dir.clone(),
                what: format!(
                    "class folder has no image (looked for {})",
                    IMAGE_EXTENSIONS.join(", ")
                ),
            });
        }
    }
    let decoded: Vec<Vec<u8>> = files
        .par_iter()
        .map(|(path, _)| {
            let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
            decode_image(&bytes, path, height, width)
        })
        .collect::<Result<_, _>>()?;
    Ok(Dataset {
        images: decoded.concat(),
        labels: files.iter().map(|(_, l)| *l).collect(),
        height,
        width,
        class_names: classes
            .iter()
            .map(|c| {
                c.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect(),
    })
}
