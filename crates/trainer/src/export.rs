//! `trainer export`: a checkpoint as a standard ONNX file ([`deploy::onnx`]), checked by an
//! independent runtime before it is written.
//!
//! The network is read from the checkpoint (architecture from its metadata or `--arch`, stem
//! from `conv1.weight`, classes from `fc.weight`, the projection head from `projector.*`), every
//! batch norm folded into its convolution. Unless told not to, the export is then run by tract on
//! a few seeded random images and compared with our own forward pass (the one `trainer eval`
//! uses); a relative difference above [`VERIFY_TOLERANCE`] is an error and nothing is written.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use deploy::onnx::{ExportOptions, InputKind, OutputKind};
use deploy::{ModelSpec, OnnxModel};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::checkpoint::{meta, Checkpoint};
use crate::{Error, Result};

/// Largest accepted `max |onnx − ours| / max |ours|` of the check after export.
pub const VERIFY_TOLERANCE: f64 = 1e-4;

/// What to export, and how.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// The checkpoint (safetensors, torchvision keys).
    pub checkpoint: PathBuf,
    /// The `.onnx` file to write.
    pub onnx: PathBuf,
    /// Architecture, when the checkpoint's metadata does not say (or to override it).
    pub arch: Option<String>,
    /// Input kind and outputs (normalisation constants: CIFAR-10's, as the trainer uses).
    pub options: ExportOptions,
    /// Run the export by tract and compare with our forward pass before writing it.
    pub verify: bool,
}

impl From<crate::cli::ExportArgs> for ExportRequest {
    /// The request of `trainer export` (CIFAR-10 normalisation constants, as the trainer uses).
    fn from(a: crate::cli::ExportArgs) -> Self {
        Self {
            checkpoint: a.checkpoint,
            onnx: a.onnx,
            arch: a.arch,
            options: ExportOptions {
                input: a.input,
                outputs: a.output,
                image_size: a.image_size.map(|s| (s, s)),
                ..ExportOptions::default()
            },
            verify: !a.no_verify,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    /// The `.onnx` file.
    pub path: PathBuf,
    /// Architecture.
    pub arch: String,
    /// `cifar` or `imagenet`.
    pub stem: String,
    /// Classes of the classifier.
    pub num_classes: usize,
    /// Size of the file in bytes.
    pub bytes: usize,
    /// Graph nodes.
    pub nodes: usize,
    /// The graph's outputs, in order.
    pub outputs: Vec<String>,
    /// The check's relative difference per output (`None` when not verified).
    pub verified_rel_err: Option<Vec<f64>>,
}

/// The image side a checkpoint was trained at: `data.image_size` of its configuration metadata.
pub fn trained_image_size(ckpt: &Checkpoint) -> Option<usize> {
    let cfg = crate::Config::from_toml_str(ckpt.metadata.get(meta::CONFIG)?).ok()?;
    Some(cfg.data.image_size).filter(|&s| s > 0)
}

/// The architecture a checkpoint describes: `arch` when given, else its metadata.
pub fn checkpoint_spec(ckpt: &Checkpoint, path: &Path, arch: Option<&str>) -> Result<ModelSpec> {
    let arch = match (arch, ckpt.metadata.get(meta::ARCH)) {
        (Some(a), _) => a.to_string(),
        (None, Some(a)) => a.clone(),
        (None, None) => {
            return Err(Error::Checkpoint(format!(
                "{}: the file does not say its architecture; pass --arch (one of {})",
                path.display(),
                models::RESNET_NAMES.join(", ")
            )))
        }
    };
    ModelSpec::from_tensors(&arch, &ckpt.tensors).map_err(|e| {
        Error::Checkpoint(format!(
            "{}: not a {arch} model checkpoint: {e}",
            path.display()
        ))
    })
}

/// Checks that `path` can be written before any work: its folder exists and is not a file.
fn check_writable(path: &Path) -> Result<()> {
    let bad = |why: String| Error::Config(format!("--onnx {}: {why}", path.display()));
    if path.is_dir() {
        return Err(bad("is a folder".into()));
    }
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d,
        None => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(bad(format!("the folder {} does not exist", dir.display())));
    }
    let meta = std::fs::metadata(dir).map_err(|e| bad(format!("{}: {e}", dir.display())))?;
    if meta.permissions().readonly() {
        return Err(bad(format!("the folder {} is read-only", dir.display())));
    }
    Ok(())
}

/// Exports the checkpoint of `req` (see the module docs).
pub fn export_checkpoint(req: &ExportRequest) -> Result<Exported> {
    check_writable(&req.onnx)?;
    let ckpt = Checkpoint::load(&req.checkpoint, &Device::Cpu)?;
    let spec = checkpoint_spec(&ckpt, &req.checkpoint, req.arch.as_deref())?;
    let mut options = req.options.clone();
    if options.image_size.is_none() {
        options.image_size = trained_image_size(&ckpt).map(|s| (s, s));
    }
    for key in [meta::ROLE, meta::EPOCH] {
        if let Some(v) = ckpt.metadata.get(key) {
            options.metadata.push((key.to_string(), v.clone()));
        }
    }
    let model = deploy::onnx::export(&spec, &ckpt.tensors, &options).map_err(|e| {
        Error::Checkpoint(format!("{}: cannot export: {e}", req.checkpoint.display()))
    })?;
    let nodes = model.graph.as_ref().map_or(0, |g| g.node.len());
    let bytes = deploy::onnx::to_bytes(&model);
    let verified_rel_err = if req.verify {
        Some(verify(&spec, &ckpt, &options, &bytes, &req.onnx)?)
    } else {
        None
    };
    crate::checkpoint::write_atomic(&req.onnx, &bytes)?;
    Ok(Exported {
        path: req.onnx.clone(),
        arch: spec.arch.clone(),
        stem: format!("{:?}", spec.resnet.stem).to_lowercase(),
        num_classes: spec.resnet.num_classes,
        bytes: bytes.len(),
        nodes,
        outputs: options
            .outputs
            .iter()
            .map(|o| o.name().to_string())
            .collect(),
        verified_rel_err,
    })
}

/// Images for the check: seeded `uint8` pixels, and the graph's input for them.
fn check_inputs(options: &ExportOptions, size: (usize, usize)) -> Result<(Tensor, Tensor)> {
    let (h, w) = size;
    let n = 2 * 3 * h * w;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let pixels: Vec<u8> = (0..n).map(|_| rng.random()).collect();
    let u8s = Tensor::from_vec(pixels, (2, 3, h, w), &Device::Cpu)?;
    let unit = (u8s.to_dtype(DType::F32)? / 255.0)?;
    let mean = Tensor::new(&options.mean, &Device::Cpu)?.reshape((1, 3, 1, 1))?;
    let std = Tensor::new(&options.std, &Device::Cpu)?.reshape((1, 3, 1, 1))?;
    let normalized = unit.broadcast_sub(&mean)?.broadcast_div(&std)?;
    let input = match options.input {
        InputKind::Uint8 => u8s,
        InputKind::Unit => unit,
        InputKind::Normalized => normalized.clone(),
    };
    Ok((normalized, input))
}

/// Runs `bytes` by tract and our networks on the same images; the relative difference of each
/// output, an error above [`VERIFY_TOLERANCE`].
fn verify(
    spec: &ModelSpec,
    ckpt: &Checkpoint,
    options: &ExportOptions,
    bytes: &[u8],
    path: &Path,
) -> Result<Vec<f64>> {
    let size = options.image_size.unwrap_or(match spec.resnet.stem {
        models::Stem::Cifar => (32, 32),
        models::Stem::ImageNet => (224, 224),
    });
    let (normalized, input) = check_inputs(options, size)?;
    let (backbone, head) = spec.build(&ckpt.tensors, &Device::Cpu)?;
    let f = backbone.forward_features(&normalized, false)?;
    let onnx = OnnxModel::from_bytes(bytes, &path.display().to_string())?;
    let theirs = onnx.run(&input)?;
    let mut errs = Vec::with_capacity(options.outputs.len());
    for (kind, t) in options.outputs.iter().zip(&theirs) {
        let ours = match kind {
            OutputKind::Logits => f.logits.clone(),
            OutputKind::Features => f.pooled.clone(),
            OutputKind::Projection => match &head {
                Some(h) => candle_core::ModuleT::forward_t(h, &f.pooled, false)?,
                None => continue,
            },
        };
        let e = rel_err(t, &ours)?;
        if e.is_nan() || e > VERIFY_TOLERANCE {
            return Err(Error::Checkpoint(format!(
                "{}: the exported {} differ from ours by {e:.2e} (relative; tolerance {VERIFY_TOLERANCE:e}); not written",
                path.display(),
                kind.name()
            )));
        }
        errs.push(e);
    }
    Ok(errs)
}

/// `max |a − b| / max |b|` (shapes must agree).
pub fn rel_err(a: &Tensor, b: &Tensor) -> Result<f64> {
    if a.dims() != b.dims() {
        return Err(Error::Config(format!(
            "rel_err: shapes {:?} and {:?} differ",
            a.dims(),
            b.dims()
        )));
    }
    let a = a.to_dtype(DType::F64)?.flatten_all()?;
    let b = b.to_dtype(DType::F64)?.flatten_all()?;
    let diff = (a - &b)?.abs()?.max(0)?.to_scalar::<f64>()?;
    let scale = b.abs()?.max(0)?.to_scalar::<f64>()?;
    Ok(diff / scale.max(1e-12))
}
