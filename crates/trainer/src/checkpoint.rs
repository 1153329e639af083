//! Checkpoints: safetensors files written atomically, read with errors that name the file and tensor.
//!
//! A checkpoint holds the network's weights under torchvision `state_dict` keys (`conv1.weight`,
//! `layer1.0.bn1.running_mean`, …, plus `num_batches_tracked` for every batch norm so that PyTorch's
//! strict `load_state_dict` accepts the backbone), the projection head under `projector.`, the optimizer
//! state under `optimizer.` (in `last` checkpoints only), and string metadata: architecture, classes,
//! epoch, step and the resolved configuration.
//!
//! Writing is atomic: the bytes go to `NAME.tmp` in the same folder, are flushed to disk (`fsync`), and
//! the file is renamed over `NAME`; a crash leaves either the old or the new file, never half of one.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use crate::{Error, Result};

/// Metadata keys every checkpoint of this trainer carries.
pub mod meta {
    /// Architecture name (`resnet18`, …).
    pub const ARCH: &str = "arch";
    /// Number of classes of `fc`.
    pub const NUM_CLASSES: &str = "num_classes";
    /// Epochs completed.
    pub const EPOCH: &str = "epoch";
    /// Optimizer steps completed.
    pub const STEP: &str = "step";
    /// `teacher` or `student`.
    pub const ROLE: &str = "role";
    /// The resolved configuration, TOML.
    pub const CONFIG: &str = "config";
    /// Best evaluation metric so far.
    pub const BEST: &str = "best_metric";
}

/// The largest class count a checkpoint may declare (a larger one is corrupt, and would allocate
/// gigabytes for the classifier).
pub const MAX_CLASSES: usize = 100_000;

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |e| Error::Io(path.to_path_buf(), e);
    let tmp = path.with_extension(match path.extension() {
        Some(ext) => format!("{}.tmp", ext.to_string_lossy()),
        None => "tmp".into(),
    });
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// Saves `tensors` with `metadata` to `path` atomically (see [`write_atomic`]).
pub fn save(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut cpu: Vec<(String, Tensor)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        cpu.push((name.clone(), t.to_device(&Device::Cpu)?.contiguous()?));
    }
    cpu.sort_by(|a, b| a.0.cmp(&b.0));
    let meta: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let bytes = safetensors::serialize(cpu.iter().map(|(n, t)| (n.as_str(), t)), Some(meta))
        .map_err(|e| Error::Checkpoint(format!("{}: cannot serialise: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

/// A checkpoint read into memory.
#[derive(Debug)]
pub struct Checkpoint {
    /// Every tensor, on the device it was loaded to.
    pub tensors: HashMap<String, Tensor>,
    /// The string metadata (empty for files written by other tools).
    pub metadata: BTreeMap<String, String>,
}

/// The name of the bundled CIFAR-10 teacher, accepted wherever a checkpoint path is
/// (`--teacher bundled`, `--checkpoint bundled`, `teacher.from = "bundled"`).
pub const BUNDLED: &str = "bundled";

/// The bundled CIFAR-10 teacher (`data/teachers/cifar10/teacher.safetensors`, see its README).
pub fn bundled_teacher() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/teachers/cifar10/teacher.safetensors")
}

/// `path`, or the bundled teacher's file when `path` is [`BUNDLED`] (and no file of that name
/// exists).
pub fn resolve(path: &Path) -> PathBuf {
    if path == Path::new(BUNDLED) && !path.exists() {
        bundled_teacher()
    } else {
        path.to_path_buf()
    }
}

impl Checkpoint {
    /// Reads a safetensors file (or the bundled teacher, see [`resolve`]); a missing, truncated or
    /// non-safetensors file is an error naming it. Tensors keep their stored dtype (the bundled
    /// teacher is stored in half precision; loading into a network converts to `f32`).
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let path = &resolve(path);
        let bytes = std::fs::read(path).map_err(|e| Error::Io(path.to_path_buf(), e))?;
        let bad = |e: String| {
            Error::Checkpoint(format!(
                "{}: not a readable safetensors file ({e})",
                path.display()
            ))
        };
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let (_, header) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let metadata = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            let t = candle_core::safetensors::Load::load(&view, device)
                .map_err(|e| bad(format!("{name}: {e}")))?;
            tensors.insert(name, t);
        }
        let ckpt = Self { tensors, metadata };
        ckpt.check().map_err(bad)?;
        Ok(ckpt)
    }

    /// Checks what the trainer later trusts: a sane class count, and a classifier of rank 2.
    fn check(&self) -> std::result::Result<(), String> {
        if let Some(v) = self.metadata.get(meta::NUM_CLASSES) {
            match v.parse::<usize>() {
                Ok(n) if (1..=MAX_CLASSES).contains(&n) => {}
                _ => {
                    return Err(format!(
                        "metadata `{}` is {v:?}, expected a class count in 1..={MAX_CLASSES}",
                        meta::NUM_CLASSES
                    ))
                }
            }
        }
        if let Some(fc) = self.tensors.get("fc.weight") {
            if fc.rank() != 2 || fc.dims()[0] == 0 || fc.dims()[0] > MAX_CLASSES {
                return Err(format!(
                    "tensor `fc.weight` has shape {:?}, expected (classes, features) with 1..={MAX_CLASSES} classes",
                    fc.dims()
                ));
            }
        }
        Ok(())
    }

    /// A metadata value parsed as `T`, or `None` when absent.
    pub fn meta<T: std::str::FromStr>(&self, key: &str) -> Option<T> {
        self.metadata.get(key).and_then(|v| v.parse().ok())
    }
}

/// The variables of `varmap` (all of them, or those under `prefix`) as `(name, tensor)` pairs, plus a
/// `num_batches_tracked` (`steps`, i64) beside every batch norm's `running_mean`.
pub fn varmap_tensors(varmap: &VarMap, steps: usize) -> Vec<(String, Tensor)> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut out: Vec<(String, Tensor)> = Vec::with_capacity(data.len());
    for (name, var) in data.iter() {
        out.push((name.clone(), var.as_tensor().clone()));
        if let Some(bn) = name.strip_suffix(".running_mean") {
            if let Ok(t) = Tensor::new(steps as i64, &Device::Cpu) {
                out.push((format!("{bn}.num_batches_tracked"), t));
            }
        }
    }
    out
}

/// Copies the checkpoint's tensors into every variable of `varmap` whose path starts with `prefix`
/// (all when `prefix` is empty). The error names the first variable (in path order) that the checkpoint
/// lacks or holds with another shape: the sign of a checkpoint of another architecture.
pub fn load_into_varmap(
    varmap: &VarMap,
    ckpt: &Checkpoint,
    prefix: &str,
    source: &Path,
    arch: &str,
) -> Result<()> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut names: Vec<&String> = data.keys().filter(|n| n.starts_with(prefix)).collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let Some(t) = ckpt.tensors.get(name.as_str()) else {
            return Err(Error::Checkpoint(format!(
                "{}: no tensor `{name}`, which {arch} needs; is it a checkpoint of another architecture?",
                source.display()
            )));
        };
        if t.dims() != var.dims() {
            return Err(Error::Checkpoint(format!(
                "{}: tensor `{name}` has shape {:?} but {arch} expects {:?}; is it a checkpoint of another architecture?",
                source.display(),
                t.dims(),
                var.dims()
            )));
        }
        var.set(&t.to_device(var.device())?.to_dtype(DType::F32)?)?;
    }
    Ok(())
}

/// Writes `src` to `dst` with every `f32` tensor stored in half precision (`f16`) and the metadata
/// kept, plus `storage = "f16"`: half the size, the same network once loaded (loading converts
/// back to `f32`; the rounding is what changes, by at most 2⁻¹¹ relative per weight).
pub fn save_half(src: &Path, dst: &Path) -> Result<()> {
    let ckpt = Checkpoint::load(src, &Device::Cpu)?;
    let mut tensors = Vec::with_capacity(ckpt.tensors.len());
    for (name, t) in &ckpt.tensors {
        let t = if t.dtype() == DType::F32 {
            t.to_dtype(DType::F16)?
        } else {
            t.clone()
        };
        tensors.push((name.clone(), t));
    }
    let mut md = ckpt.metadata.clone();
    md.insert("storage".into(), "f16".into());
    save(dst, &tensors, &md)
}
