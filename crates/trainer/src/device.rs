//! The `--device` option: `cpu`, `cuda`, `cuda:N` or `metal`.

use candle_core::Device;

use crate::{Error, Result};

/// A parsed `--device` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
    /// The default Metal device.
    Metal,
}

/// Parses a `--device` value and checks that this binary was built with its backend.
pub fn parse_device(s: &str) -> Result<DeviceSpec> {
    let spec = match s {
        "cpu" => DeviceSpec::Cpu,
        "cuda" => DeviceSpec::Cuda(0),
        "metal" => DeviceSpec::Metal,
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => DeviceSpec::Cuda(n),
            _ => {
                return Err(Error::Config(format!(
                    "--device {s:?}: expected cpu, cuda, cuda:N or metal"
                )))
            }
        },
    };
    match spec {
        DeviceSpec::Cuda(_) if !candle_core::utils::cuda_is_available() => Err(Error::Config(format!(
            "--device {s}: this trainer was built without CUDA; rebuild with `--features cuda` (or `cudnn`)"
        ))),
        DeviceSpec::Metal if !candle_core::utils::metal_is_available() => Err(Error::Config(format!(
            "--device {s}: this trainer was built without Metal; rebuild with `--features metal`"
        ))),
        spec => Ok(spec),
    }
}

/// Opens the device (this is where a missing GPU is found).
pub fn open_device(s: &str) -> Result<Device> {
    Ok(match parse_device(s)? {
        DeviceSpec::Cpu => Device::Cpu,
        DeviceSpec::Cuda(n) => {
            Device::new_cuda(n).map_err(|e| Error::Config(format!("--device {s}: {e}")))?
        }
        DeviceSpec::Metal => {
            Device::new_metal(0).map_err(|e| Error::Config(format!("--device {s}: {e}")))?
        }
    })
}
