//! Image-classification datasets stored as parquet shards, laid out as on the Hugging Face Hub.
//!
//! # Layout
//! A dataset is a set of `.parquet` files (shards) named by their path relative to the dataset's
//! root. A shard's config and split come from its name, in either of the Hub's two layouts:
//!
//! | shard name | config | split |
//! | --- | --- | --- |
//! | `plain_text/train/0000.parquet` (the Hub's parquet conversion, `refs/convert/parquet`) | `plain_text` | `train` |
//! | `default/partial-train/0003.parquet` (a conversion cut short on a large dataset) | `default` | `train` |
//! | `data/test-00000-of-00002.parquet` (`push_to_hub`, exports) | `data` | `test` |
//! | `test.parquet` | (none) | `test` |
//!
//! The train split is `train`; the test split is `test`, or else `validation` (or `valid`, as
//! Tiny-ImageNet's copy on the Hub names it).
//! Shards of a split are read in name order, rows in file order, as `datasets` reads them.
//!
//! # Columns
//! The `huggingface` key of a shard's schema metadata holds the dataset's features as `datasets`
//! writes them (`{"info": {"features": {"img": {"_type": "Image"}, "label": {"_type":
//! "ClassLabel", "names": [...]}}}}`). The image column is the first `Image` feature; the label
//! column the `ClassLabel` feature named `label`, or else the first one (CIFAR-100: `fine_label`),
//! whose `names` are the class names. Without that metadata (a file written by pyarrow or polars
//! alone), the image column is the one named `image` or `img` and the label column the integer
//! column named `label` or `labels`, and the classes are named `0`, `1`, … up to the largest label.
//! An image column is a struct with a binary `bytes` field (the `datasets` layout) or a plain
//! binary column; its images are decoded by [`decode_image`], as an
//! ImageFolder's are (any size, mode or format, resized).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::basic::{ConvertedType, LogicalType, Type as PhysicalType};
use parquet::data_type::ByteArray;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use parquet::schema::types::Type;
use rayon::prelude::*;

use super::{decode_image, DataError, Dataset, Split};

/// The config and split a shard belongs to, from its name relative to the dataset's root.
///
/// `None` for a name that does not end in `.parquet`.
pub fn shard_config_split(name: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty()).collect();
    let (file, dirs) = parts.split_last()?;
    let stem = file.strip_suffix(".parquet")?;
    if !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_digit()) {
        // `config/split/0000.parquet`, the Hub's parquet conversion.
        let (split, config) = dirs.split_last()?;
        let split = split.strip_prefix("partial-").unwrap_or(split);
        return Some((config.join("/"), split.to_string()));
    }
    // `config/split-00000-of-00002.parquet` or `split.parquet`.
    let split = stem.split('-').next().unwrap_or(stem);
    Some((dirs.join("/"), split.to_string()))
}

/// The shards of a dataset's train and test splits, chosen by [`choose_splits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitShards {
    /// The config the shards belong to (empty when the names carry none).
    pub config: String,
    /// The train split's shard names, sorted.
    pub train: Vec<String>,
    /// The test split's name: `test`, or else `validation` or `valid`.
    pub test_split: String,
    /// The test split's shard names, sorted.
    pub test: Vec<String>,
}

/// Picks the config and the train and test shards among a dataset's shard `names`.
///
/// The config is `config` when given; else the only one; else `default` when there is one.
/// `what` names the dataset in errors; `name_config` says how the user names a config (it gets
/// one config name and returns, e.g., `hub:owner/name:CONFIG`). Errors list the configs, or the
/// splits of the config, that were found.
pub fn choose_splits(
    what: &str,
    names: &[String],
    config: Option<&str>,
    name_config: &dyn Fn(&str) -> String,
) -> Result<SplitShards, DataError> {
    // config -> split -> shard names
    let mut layout: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for name in names {
        if let Some((c, s)) = shard_config_split(name) {
            layout
                .entry(c)
                .or_default()
                .entry(s)
                .or_default()
                .push(name.clone());
        }
    }
    if layout.is_empty() {
        return Err(DataError::Invalid(format!(
            "{what}: no .parquet file found"
        )));
    }
    let list = |keys: &mut dyn Iterator<Item = &String>| {
        keys.map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let configs = list(&mut layout.keys());
    let config = match config {
        Some(c) => c.to_string(),
        None if layout.len() == 1 => layout.keys().next().cloned().unwrap_or_default(),
        None if layout.contains_key("default") => "default".to_string(),
        None => {
            let first = layout.keys().next().cloned().unwrap_or_default();
            return Err(DataError::Invalid(format!(
                "{what}: the dataset has several configs ({configs}); name one, e.g. {}",
                name_config(&first)
            )));
        }
    };
    let Some(splits) = layout.get_mut(&config) else {
        return Err(DataError::Invalid(format!(
            "{what}: no config `{config}`; the configs found are {configs}"
        )));
    };
    let found = list(&mut splits.keys());
    let test_split = ["test", "validation", "valid"]
        .into_iter()
        .find(|s| splits.contains_key(*s));
    let (Some(test_split), true) = (test_split, splits.contains_key("train")) else {
        let config_name = if config.is_empty() {
            String::new()
        } else {
            format!(" config `{config}`")
        };
        return Err(DataError::Invalid(format!(
            "{what}:{config_name} has the splits {found}; a `train` split and a `test` (or `validation`, `valid`) split are needed"
        )));
    };
    let mut take = |s: &str| {
        let mut v = splits.remove(s).unwrap_or_default();
        v.sort();
        v
    };
    Ok(SplitShards {
        train: take("train"),
        test: take(test_split),
        test_split: test_split.to_string(),
        config,
    })
}

/// One split of a dataset as read from its shards, before the two splits are put together.
#[derive(Debug)]
pub struct ParquetSplit {
    /// The images, `u8` CHW, and their labels; `class_names` is empty until [`into_split`] fills it.
    pub dataset: Dataset,
    /// The `ClassLabel` names of the label column, when the shards carry them.
    pub class_names: Option<Vec<String>>,
}

/// The columns a shard's images and labels are read from.
struct Columns {
    image: String,
    label: String,
    /// The `names` of the label's `ClassLabel` feature.
    class_names: Option<Vec<String>>,
}

/// `(name, type)` of every top-level column, for errors.
fn describe_columns(schema: &Type) -> String {
    schema
        .get_fields()
        .iter()
        .map(|f| {
            let kind = if f.is_group() {
                let children: Vec<&str> = f.get_fields().iter().map(|c| c.name()).collect();
                format!("struct {{{}}}", children.join(", "))
            } else {
                format!("{}", f.get_physical_type())
            };
            format!("`{}` ({kind})", f.name())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_binary(t: &Type) -> bool {
    t.is_primitive()
        && t.get_physical_type() == PhysicalType::BYTE_ARRAY
        && t.get_basic_info().converted_type() != ConvertedType::UTF8
        && !matches!(
            t.get_basic_info().logical_type_ref(),
            Some(LogicalType::String)
        )
}

/// A struct with a binary `bytes` field (`datasets`' `Image`), or a binary column.
fn is_image_column(t: &Type) -> bool {
    if t.is_group() {
        t.get_fields()
            .iter()
            .any(|c| c.name() == "bytes" && is_binary(c))
    } else {
        is_binary(t)
    }
}

fn is_integer_column(t: &Type) -> bool {
    t.is_primitive()
        && matches!(
            t.get_physical_type(),
            PhysicalType::INT32 | PhysicalType::INT64
        )
}

/// The `features` object of the `huggingface` schema metadata, when there is one.
fn hf_features(
    reader: &SerializedFileReader<File>,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, String> {
    let meta = reader.metadata().file_metadata();
    let Some(value) = meta
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|kv| kv.key == "huggingface"))
        .and_then(|kv| kv.value.as_deref())
    else {
        return Ok(None);
    };
    let json: serde_json::Value = serde_json::from_str(value)
        .map_err(|e| format!("the `huggingface` schema metadata is not JSON: {e}"))?;
    Ok(json
        .get("info")
        .and_then(|i| i.get("features"))
        .and_then(|f| f.as_object())
        .cloned())
}

fn feature_type<'a>(
    features: &'a Option<serde_json::Map<String, serde_json::Value>>,
    column: &str,
) -> Option<&'a str> {
    features.as_ref()?.get(column)?.get("_type")?.as_str()
}

/// Finds the image and label columns of a shard (see the module documentation).
fn find_columns(reader: &SerializedFileReader<File>) -> Result<Columns, String> {
    let schema = reader.metadata().file_metadata().schema();
    let features = hf_features(reader)?;
    let fields = schema.get_fields();
    let found = || describe_columns(schema);
    let image = fields
        .iter()
        .find(|f| feature_type(&features, f.name()) == Some("Image") && is_image_column(f))
        .or_else(|| {
            fields
                .iter()
                .find(|f| matches!(f.name(), "image" | "img") && is_image_column(f))
        })
        .ok_or_else(|| {
            format!(
                "no image column (an `Image` feature, or a column `image` or `img` holding encoded bytes); the columns are {}",
                found()
            )
        })?;
    let class_labels: Vec<&Arc<Type>> = fields
        .iter()
        .filter(|f| feature_type(&features, f.name()) == Some("ClassLabel") && is_integer_column(f))
        .collect();
    let label = class_labels
        .iter()
        .find(|f| f.name() == "label")
        .or(class_labels.first())
        .copied()
        .or_else(|| {
            fields
                .iter()
                .find(|f| matches!(f.name(), "label" | "labels") && is_integer_column(f))
        })
        .ok_or_else(|| {
            format!(
                "no label column (a `ClassLabel` feature, or an integer column `label` or `labels`); the columns are {}",
                found()
            )
        })?;
    let class_names = match features
        .as_ref()
        .and_then(|f| f.get(label.name()))
        .and_then(|f| f.get("names"))
    {
        None => None,
        Some(names) => Some(
            names
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .map(|n| n.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| {
                    format!(
                        "the `names` of the `ClassLabel` feature `{}` are not a list of strings",
                        label.name()
                    )
                })?,
        ),
    };
    Ok(Columns {
        image: image.name().to_string(),
        label: label.name().to_string(),
        class_names,
    })
}

/// The encoded bytes of an image cell: a struct's `bytes` field, or a binary value.
fn image_bytes(field: Field) -> Result<ByteArray, String> {
    match field {
        Field::Bytes(b) => Ok(b),
        Field::Group(row) => {
            let mut bytes = None;
            let mut path = None;
            for (name, f) in row.into_columns() {
                match (name.as_str(), f) {
                    ("bytes", Field::Bytes(b)) => bytes = Some(b),
                    ("path", Field::Str(p)) => path = Some(p),
                    _ => {}
                }
            }
            match (bytes, path) {
                (Some(b), _) => Ok(b),
                (None, Some(p)) => Err(format!(
                    "no image bytes, only a path ({p:?}) that refers to a file outside the shard"
                )),
                (None, None) => Err("no image (null)".into()),
            }
        }
        Field::Null => Err("no image (null)".into()),
        other => Err(format!("not an image but {other}")),
    }
}

fn label_value(field: &Field) -> Result<i64, String> {
    match *field {
        Field::Byte(v) => Ok(v.into()),
        Field::Short(v) => Ok(v.into()),
        Field::Int(v) => Ok(v.into()),
        Field::Long(v) => Ok(v),
        Field::UByte(v) => Ok(v.into()),
        Field::UShort(v) => Ok(v.into()),
        Field::UInt(v) => Ok(v.into()),
        Field::ULong(v) => i64::try_from(v).map_err(|_| format!("label {v} is too large")),
        Field::Null => Err("no label (null)".into()),
        ref other => Err(format!("label {other} is not an integer")),
    }
}

/// Reads one split from its shards: `(name, local file)` pairs, in order.
///
/// `what` names the dataset and split in errors (e.g. `hub:uoft-cs/cifar10 split train`); every
/// error also names the shard, and, for a bad cell, the row and the column. Images are decoded in
/// parallel and resized to `height × width`. Labels must be non-negative (`-1`, an unlabelled row
/// in `datasets`, is an error) and below the number of class names when the shards carry them.
pub fn read_parquet_split(
    what: &str,
    shards: &[(String, PathBuf)],
    height: usize,
    width: usize,
) -> Result<ParquetSplit, DataError> {
    if height == 0 || width == 0 {
        return Err(DataError::Invalid(format!(
            "{what}: image size {height}x{width} must be positive"
        )));
    }
    let mut images = Vec::new();
    let mut labels: Vec<u32> = Vec::new();
    let mut class_names: Option<(Vec<String>, String)> = None;
    for (name, path) in shards {
        let at = |msg: String| DataError::Invalid(format!("{what}, {name}: {msg}"));
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        let reader = SerializedFileReader::new(file).map_err(|e| {
            at(format!(
                "not a readable parquet file ({}): {e}",
                path.display()
            ))
        })?;
        let columns = find_columns(&reader).map_err(at)?;
        match (&class_names, &columns.class_names) {
            (Some((seen, from)), Some(names)) if seen != names => {
                return Err(at(format!(
                    "its class names {names:?} differ from those of {from} ({seen:?})"
                )))
            }
            (None, Some(names)) => class_names = Some((names.clone(), name.clone())),
            _ => {}
        }
        let schema = reader.metadata().file_metadata().schema();
        let projected: Vec<Arc<Type>> = schema
            .get_fields()
            .iter()
            .filter(|f| f.name() == columns.image || f.name() == columns.label)
            .cloned()
            .collect();
        let projection = Type::group_type_builder(schema.name())
            .with_fields(projected)
            .build()
            .map_err(|e| at(e.to_string()))?;
        let rows = reader
            .get_row_iter(Some(projection))
            .map_err(|e| at(e.to_string()))?;
        let mut cells: Vec<(usize, ByteArray)> = Vec::new();
        for (r, row) in rows.enumerate() {
            let row = row.map_err(|e| at(format!("row {r}: {e}")))?;
            let mut bytes = None;
            let mut label = None;
            for (col, field) in row.into_columns() {
                if col == columns.image {
                    bytes = Some(
                        image_bytes(field)
                            .map_err(|e| at(format!("row {r}, column `{col}`: {e}")))?,
                    );
                } else if col == columns.label {
                    label = Some(
                        label_value(&field)
                            .map_err(|e| at(format!("row {r}, column `{col}`: {e}")))?,
                    );
                }
            }
            let (Some(bytes), Some(label)) = (bytes, label) else {
                return Err(at(format!("row {r}: the image or the label is missing")));
            };
            let label = u32::try_from(label).map_err(|_| {
                at(format!(
                    "row {r}, column `{}`: label {label} (a split without labels cannot be used)",
                    columns.label
                ))
            })?;
            if let Some(names) = &columns.class_names {
                if label as usize >= names.len() {
                    return Err(at(format!(
                        "row {r}, column `{}`: label {label} is not below the {} class names",
                        columns.label,
                        names.len()
                    )));
                }
            }
            labels.push(label);
            cells.push((r, bytes));
        }
        let decoded: Vec<Vec<u8>> = cells
            .par_iter()
            .map(|(r, bytes)| {
                let cell = PathBuf::from(format!(
                    "{what}, {name}, row {r}, column `{}`",
                    columns.image
                ));
                decode_image(bytes.data(), &cell, height, width)
            })
            .collect::<Result<_, _>>()?;
        images.extend(decoded.into_iter().flatten());
    }
    if labels.is_empty() {
        return Err(DataError::Invalid(format!("{what}: no rows")));
    }
    Ok(ParquetSplit {
        dataset: Dataset {
            images,
            labels,
            height,
            width,
            class_names: Vec::new(),
        },
        class_names: class_names.map(|(names, _)| names),
    })
}

/// Puts a train and a test split together: both get the class names of their `ClassLabel`
/// feature (which must agree), or `0`, `1`, … up to the largest label of either.
pub fn into_split(what: &str, train: ParquetSplit, test: ParquetSplit) -> Result<Split, DataError> {
    let names = match (train.class_names, test.class_names) {
        (Some(a), Some(b)) if a != b => {
            return Err(DataError::Invalid(format!(
                "{what}: the train and test splits name their classes differently ({a:?} vs {b:?})"
            )))
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => {
            let max = train
                .dataset
                .labels
                .iter()
                .chain(&test.dataset.labels)
                .max()
                .copied()
                .unwrap_or(0);
            (0..=max).map(|c| c.to_string()).collect()
        }
    };
    for (split, ds) in [("train", &train.dataset), ("test", &test.dataset)] {
        if let Some(&l) = ds.labels.iter().find(|&&l| l as usize >= names.len()) {
            return Err(DataError::Invalid(format!(
                "{what}: {split} label {l} is not below the {} class names",
                names.len()
            )));
        }
    }
    let mut train = train.dataset;
    let mut test = test.dataset;
    train.class_names = names.clone();
    test.class_names = names;
    Ok(Split { train, test })
}

/// Every `.parquet` file under `dir`, as `(name relative to dir with / separators, path)`,
/// following symbolic links (a Hugging Face cache snapshot is made of them), sorted by name.
pub fn list_parquet_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| DataError::io(&d, e))? {
            let entry = entry.map_err(|e| DataError::io(&d, e))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let rel = format!("{prefix}{name}");
            let meta = std::fs::metadata(&path).map_err(|e| DataError::io(&path, e))?;
            if meta.is_dir() {
                stack.push((path, format!("{rel}/")));
            } else if name.ends_with(".parquet") {
                out.push((rel, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads the train and test splits of a dataset whose shards are `files` (`(name, local path)`;
/// see the module documentation for how names map to configs and splits).
pub fn load_parquet_files(
    what: &str,
    files: &[(String, PathBuf)],
    config: Option<&str>,
    name_config: &dyn Fn(&str) -> String,
    image_size: usize,
) -> Result<Split, DataError> {
    let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    let chosen = choose_splits(what, &names, config, name_config)?;
    let by_name: BTreeMap<&str, &PathBuf> = files.iter().map(|(n, p)| (n.as_str(), p)).collect();
    let pick = |shards: &[String]| -> Vec<(String, PathBuf)> {
        shards
            .iter()
            .filter_map(|n| by_name.get(n.as_str()).map(|p| (n.clone(), (*p).clone())))
            .collect()
    };
    let label = |split: &str| {
        if chosen.config.is_empty() {
            format!("{what} split {split}")
        } else {
            format!("{what} config {} split {split}", chosen.config)
        }
    };
    let train = read_parquet_split(
        &label("train"),
        &pick(&chosen.train),
        image_size,
        image_size,
    )?;
    let test = read_parquet_split(
        &label(&chosen.test_split),
        &pick(&chosen.test),
        image_size,
        image_size,
    )?;
    into_split(what, train, test)
}

/// `--data parquet:DIR`: the parquet shards under `dir`, named as on the Hub (see the module
/// documentation); `dir` may hold one config's `train/`, `test/` folders or `train-*.parquet`
/// files, or several configs, of which `default` (or the only one) is read.
pub fn load_parquet_dir(dir: &Path, image_size: usize) -> Result<Split, DataError> {
    let what = format!("parquet:{}", dir.display());
    let meta = std::fs::metadata(dir).map_err(|e| DataError::io(dir, e))?;
    if !meta.is_dir() {
        return Err(DataError::Invalid(format!(
            "{what}: not a folder (expected a folder of parquet shards holding a train and a test split)"
        )));
    }
    let files = list_parquet_files(dir)?;
    let name_config = |c: &str| format!("parquet:{}", dir.join(c).display());
    load_parquet_files(&what, &files, None, &name_config, image_size)
}
