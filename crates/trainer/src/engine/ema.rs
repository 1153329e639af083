//! An exponential moving average of a network's weights and batch-norm statistics, as PyTorch's
//! `torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay),
//! use_buffers=True)` updated after every optimizer step:
//!
//! - the first update copies every variable;
//! - every later one moves each variable of the average towards the network's,
//!   `avg ← avg + (1 − decay)·(x − avg)` (PyTorch's `torch.lerp`), parameters and running
//!   statistics alike.
//!
//! The average is a [`Net`] of its own, evaluated in place of the trained one; a checkpoint keeps
//! it under `ema.` with the number of updates, so that a resumed run continues it.

use std::collections::HashMap;

use candle_core::Tensor;
use candle_nn::VarMap;

use crate::net::Net;
use crate::Result;

/// Prefix of the average's tensors in a checkpoint.
pub const PREFIX: &str = "ema.";

/// One update of the average `avg` towards `src`, variable by variable (by name): a copy when
/// `first`, else `avg ← avg + (1 − decay)·(src − avg)`.
pub fn update_average(avg: &VarMap, src: &VarMap, decay: f64, first: bool) -> Result<()> {
    let src = src.data().lock().unwrap_or_else(|e| e.into_inner());
    let dst = avg.data().lock().unwrap_or_else(|e| e.into_inner());
    for (name, a) in dst.iter() {
        let Some(x) = src.get(name) else { continue };
        let x = x.as_tensor();
        if first {
            a.set(x)?;
        } else {
            let t = a.as_tensor();
            a.set(&((x - t)?.affine(1.0 - decay, 0.0)? + t)?)?;
        }
    }
    Ok(())
}

/// The moving average of a network (see the module docs).
pub struct Ema {
    decay: f64,
    avg: Net,
    updates: usize,
}

impl Ema {
    /// An average with `decay` of networks shaped like `net` (no update yet).
    pub fn new(net: &Net, decay: f64) -> Result<Self> {
        Ok(Self {
            decay,
            avg: net.duplicate()?,
            updates: 0,
        })
    }

    /// The averaged network.
    pub fn net(&self) -> &Net {
        &self.avg
    }

    /// Updates so far.
    pub fn updates(&self) -> usize {
        self.updates
    }

    /// One update towards `net`'s current variables.
    pub fn update(&mut self, net: &Net) -> Result<()> {
        update_average(&self.avg.varmap, &net.varmap, self.decay, self.updates == 0)?;
        self.updates += 1;
        Ok(())
    }

    /// The average's variables as checkpoint tensors (`ema.<name>`).
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        let data = self
            .avg
            .varmap
            .data()
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        data.iter()
            .map(|(n, v)| (format!("{PREFIX}{n}"), v.as_tensor().clone()))
            .collect()
    }

    /// Restores the average from a checkpoint's `ema.` tensors after `updates` updates (a missing
    /// tensor leaves the average at "no update yet").
    pub fn restore(&mut self, tensors: &HashMap<String, Tensor>, updates: usize) -> Result<()> {
        let dst = self
            .avg
            .varmap
            .data()
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (name, var) in dst.iter() {
            match tensors.get(&format!("{PREFIX}{name}")) {
                Some(t) => var.set(&t.to_device(var.device())?.to_dtype(var.dtype())?)?,
                None => {
                    self.updates = 0;
                    return Ok(());
                }
            }
        }
        self.updates = updates;
        Ok(())
    }
}
