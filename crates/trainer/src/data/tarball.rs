//! The CIFAR-10 JPEG tarballs (`train.tar.gz`, `test.tar.gz`), read as a stream without unpacking.
//!
//! Each tarball holds `<split>/<class>/<file>.jpg`; classes are indexed in sorted folder-name order,
//! as for an ImageFolder, and images in sorted file-name order within a class.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{decode_image, folder::IMAGE_EXTENSIONS, DataError, Dataset, Split};

fn read_tarball(
    path: &Path,
    split: &str,
    height: usize,
    width: usize,
) -> Result<Dataset, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut archive =
        tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    // class name -> file name -> bytes, both sorted.
    let mut classes: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    let entries = archive.entries().map_err(|e| DataError::io(path, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| DataError::io(path, e))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| DataError::io(path, e))?
            .to_string_lossy()
            .into_owned();
        let parts: Vec<&str> = name.trim_start_matches("./").split('/').collect();
        let [top, class, file] = parts[..] else {
            continue;
        };
        let is_image = Path::new(file)
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)));
        if top != split || !is_image || file.starts_with('.') {
            continue;
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| DataError::io(path, e))?;
        classes
            .entry(class.to_string())
            .or_default()
            .insert(file.to_string(), bytes);
    }
    if classes.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            what: format!("no `{split}/<class>/<image>` entries"),
        });
    }
    let items: Vec<(u32, String, &Vec<u8>)> = classes
        .iter()
        .enumerate()
        .flat_map(|(label, (class, files))| {
            files
                .iter()
                .map(move |(f, b)| (label as u32, format!("{split}/{class}/{f}"), b))
        })
        .collect();
    let decoded: Vec<Vec<u8>> = items
        .par_iter()
        .map(|(_, name, bytes)| {
            let inner: PathBuf = path.join(name);
            decode_image(bytes, &inner, height, width)
        })
        .collect::<Result<_, _>>()?;
    Ok(Dataset {
        images: decoded.concat(),
        labels: items.iter().map(|(l, _, _)| *l).collect(),
        height,
        width,
        class_names: classes.keys().cloned().collect(),
    })
}

/// Reads `dir/train.tar.gz` and `dir/test.tar.gz` (CIFAR-10 as JPEG image folders) into a [`Split`].
pub fn load_cifar10_tarballs(
    dir: impl AsRef<Path>,
    height: usize,
    width: usize,
) -> Result<Split, DataError> {
    let dir = dir.as_ref();
    let train = read_tarball(&dir.join("train.tar.gz"), "train", height, width)?;
    let test = read_tarball(&dir.join("test.tar.gz"), "test", height, width)?;
    if train.class_names != test.class_names {
        return Err(DataError::Invalid(format!(
            "{}: train and test tarballs have different classes ({:?} vs {:?})",
            dir.display(),
            train.class_names,
            test.class_names
        )));
    }
    Ok(Split { train, test })
}
