//! The design's snippet in Rust: build the combined SimCLR + distillation loss, feed it
//! tensors, print its three parts.
//!
//! Run with `cargo run --release -p examples --example distillation_loss`.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use losses::{SimClrDistillation, SimClrDistillationConfig};

fn main() -> Result<()> {
    let device = Device::Cpu;
    let (batch, classes, proj_dim) = (8, 10, 128);

    // Stand-ins for the student's and the teacher's logits and for the projections of two
    // augmented views of the same batch (deterministic, so the output is reproducible).
    let pattern = |rows: usize, cols: usize, phase: f64| -> Result<Tensor> {
        let xs = Tensor::arange(0u32, (rows * cols) as u32, &device)?
            .to_dtype(DType::F32)?
            .reshape((rows, cols))?;
        Ok(xs.affine(0.37, phase)?.sin()?)
    };
    let student_logits = pattern(batch, classes, 0.0)?.affine(3.0, 0.0)?;
    let teacher_logits = pattern(batch, classes, 0.2)?.affine(5.0, 0.0)?;
    let z_a = pattern(batch, proj_dim, 0.0)?;
    let z_b = pattern(batch, proj_dim, 0.3)?;

    let loss_fn = SimClrDistillation::new(SimClrDistillationConfig {
        temperature: 0.5,
        kd_temperature: 4.0,
        alpha: 0.5,
    })?;
    let loss = loss_fn.forward(&student_logits, &teacher_logits, &z_a, &z_b)?;

    println!("total        {:.6}", loss.total.to_scalar::<f32>()?);
    println!("contrastive  {:.6}", loss.contrastive.to_scalar::<f32>()?);
    println!("distillation {:.6}", loss.distillation.to_scalar::<f32>()?);
    Ok(())
}
