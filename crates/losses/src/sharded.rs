//! Contrastive losses over a batch sharded across processes (data parallelism): each process
//! scores its own anchors against the candidates gathered from every process.
//!
//! With `W` shards, shard `s` holding rows `s·m .. (s+1)·m` of the gathered `(W·m, D)` matrix,
//! the loss of shard `s` is
//!
//! `L_s = W · Σ_{anchors i of shard s} ℓ_i / A`,
//!
//! where `ℓ_i` is anchor `i`'s contrastive term against **every** gathered row and `A` the number
//! of anchors (with a positive) over all shards. So the mean of the shards' losses,
//! `(1/W) Σ_s L_s = Σ_i ℓ_i / A`, is exactly the loss of the whole gathered batch, and averaging
//! the shards' gradients (what data-parallel training does with the parameters' gradients) gives
//! its gradient, provided the gather's backward sums every shard's gradient of the gathered rows
//! (an all-reduce) and keeps the shard's own rows.

use candle_core::{bail, DType, Result, Tensor};

use crate::common::{dims2, float_dtype, l2_normalize, logsumexp, mask_value, positive};

/// Checks `shards`/`shard` against `rows` rows and returns the rows per shard.
fn rows_per_shard(func: &str, rows: usize, shards: usize, shard: usize) -> Result<usize> {
    if shards == 0 || shard >= shards {
        bail!("{func}: shard {shard} of {shards} shards does not exist")
    }
    if rows % shards != 0 {
        bail!("{func}: {rows} gathered rows cannot be split into {shards} equal shards")
    }
    Ok(rows / shards)
}

/// NT-Xent (SimCLR) of shard `shard`'s anchors against the whole gathered batch.
///
/// `z` holds every shard's projections of its `n` images' two views, shard after shard:
/// `[z_a⁰; z_b⁰; z_a¹; z_b¹; …]`. The mean over the shards of this loss equals
/// [`nt_xent`](crate::nt_xent)`([z_a⁰; z_a¹; …], [z_b⁰; z_b¹; …], temperature)`, in value and
/// in gradient (see the module docs); with one shard it is `nt_xent(z_a⁰, z_b⁰)`.
///
/// # Shapes
/// - `z`: `(shards · 2n, D)`, float
/// - returns `()`
///
/// # Errors
/// If `z` is not rank 2, its rows do not split into `shards` shards of two equal views,
/// `shard ≥ shards`, or `temperature` is not finite and > 0.
///
/// # Example
/// ```
/// # fn main() -> candle_core::Result<()> {
/// use candle_core::{Device, Tensor};
/// let dev = Device::Cpu;
/// let za = Tensor::new(&[[1f32, 0.], [0., 1.], [1., 1.], [1., -1.]], &dev)?;
/// let zb = Tensor::new(&[[0.9f32, 0.1], [0.1, 0.9], [1., 0.8], [0.9, -1.]], &dev)?;
/// // Two shards of two images each: [z_a⁰; z_b⁰; z_a¹; z_b¹].
/// let z = Tensor::cat(&[&za.narrow(0, 0, 2)?, &zb.narrow(0, 0, 2)?,
///                       &za.narrow(0, 2, 2)?, &zb.narrow(0, 2, 2)?], 0)?;
/// let mean = ((losses::nt_xent_shard(&z, 2, 0, 0.5)? + losses::nt_xent_shard(&z, 2, 1, 0.5)?)? / 2.0)?;
/// let whole = losses::nt_xent(&za, &zb, 0.5)?;
/// let diff = (mean - whole)?.abs()?.to_scalar::<f32>()?;
/// assert!(diff < 1e-5);
/// # Ok(()) }
/// ```
pub fn nt_xent_shard(z: &Tensor, shards: usize, shard: usize, temperature: f64) -> Result<Tensor> {
    const F: &str = "nt_xent_shard";
    let (rows, _) = dims2(F, "z", z)?;
    float_dtype(F, "z", z)?;
    positive(F, "temperature", temperature)?;
    let m = rows_per_shard(F, rows, shards, shard)?;
    if m % 2 != 0 || m < 2 {
        bail!("nt_xent_shard: each shard must hold two views of n ≥ 1 images, got {m} rows per shard (z {:?})", z.dims())
    }
    let n = m / 2;
    if shards * n < 2 {
        bail!("nt_xent_shard: needs N ≥ 2 images over all shards (the negatives come from the batch), got z {:?}", z.dims())
    }
    // Row j of shard s shows image s·n + (j mod n).
    let image: Vec<u32> = (0..shards)
        .flat_map(|s| (0..m).map(move |j| (s * n + j % n) as u32))
        .collect();
    let image = Tensor::from_vec(image, rows, z.device())?;
    shard_loss(&l2_normalize(z)?, &image, shards, shard, m, temperature, F)
}

/// Supervised contrastive loss ([`supcon`](crate::supcon)) of shard `shard`'s anchors against
/// the whole gathered batch: `features` and `labels` are every shard's rows, shard after shard.
/// The mean over the shards equals `supcon(features, labels, temperature)` (see the module docs).
///
/// # Shapes
/// - `features`: `(shards · m, D)`, float; `labels`: `(shards · m,)`, integer class indices
/// - returns `()`
///
/// # Errors
/// As [`supcon`](crate::supcon), and if the rows do not split into `shards` equal shards or
/// `shard ≥ shards`.
pub fn supcon_shard(
    features: &Tensor,
    labels: &Tensor,
    shards: usize,
    shard: usize,
    temperature: f64,
) -> Result<Tensor> {
    const F: &str = "supcon_shard";
    let (rows, _) = dims2(F, "features", features)?;
    float_dtype(F, "features", features)?;
    if labels.dims() != [rows] || labels.dtype().is_float() {
        bail!(
            "supcon_shard: labels must be ({rows},) integer class indices to match features {:?}, got {:?} {:?}",
            features.dims(),
            labels.dims(),
            labels.dtype()
        )
    }
    positive(F, "temperature", temperature)?;
    let m = rows_per_shard(F, rows, shards, shard)?;
    let labels = labels.to_device(features.device())?;
    shard_loss(
        &l2_normalize(features)?,
        &labels,
        shards,
        shard,
        m,
        temperature,
        F,
    )
}

/// `W · Σ_{anchors of the shard} ℓ_i / A` for normalised `z` `(W·m, D)` whose rows are positives
/// of each other when their `labels` agree (see the module docs).
fn shard_loss(
    z: &Tensor,
    labels: &Tensor,
    shards: usize,
    shard: usize,
    m: usize,
    temperature: f64,
    func: &str,
) -> Result<Tensor> {
    let rows = z.dim(0)?;
    let dtype = z.dtype();
    let dev = z.device();
    // Positives of every row among every row (self excluded), to count all anchors.
    let same_all = labels
        .unsqueeze(1)?
        .broadcast_eq(&labels.unsqueeze(0)?)?
        .to_dtype(DType::F64)?;
    let n_pos_all = (same_all.sum(1)? - 1.0)?;
    let anchors_all = n_pos_all
        .gt(0.0)?
        .to_dtype(DType::F64)?
        .sum_all()?
        .to_scalar::<f64>()?;
    if anchors_all < 1.0 {
        bail!("{func}: no anchor has a positive (every label of {rows} rows is unique)")
    }
    let start = shard * m;
    let own = z.narrow(0, start, m)?;
    let own_labels = labels.narrow(0, start, m)?;
    // (m, W·m): 1 where the row is the anchor itself.
    let self_mask: Vec<f32> = (0..m)
        .flat_map(|i| (0..rows).map(move |j| if j == start + i { 1.0 } else { 0.0 }))
        .collect();
    let self_mask = Tensor::from_vec(self_mask, (m, rows), dev)?.to_dtype(dtype)?;
    let same = own_labels
        .unsqueeze(1)?
        .broadcast_eq(&labels.unsqueeze(0)?)?
        .to_dtype(dtype)?;
    let pos_mask = (same - &self_mask)?;
    let n_pos = pos_mask.sum(1)?;
    let has_pos = n_pos.gt(0.0)?.to_dtype(dtype)?;
    let sims = own.affine(1.0 / temperature, 0.0)?.matmul(&z.t()?)?;
    let lse = logsumexp(&(&sims + self_mask.affine(-mask_value(temperature), 0.0)?)?)?;
    let neg_log_prob = sims.broadcast_sub(&lse)?.neg()?;
    let per_anchor = (pos_mask * neg_log_prob)?
        .sum(1)?
        .div(&n_pos.maximum(1.0)?)?;
    (per_anchor * has_pos)?
        .sum_all()?
        .affine(shards as f64 / anchors_all, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn randn(rows: usize, d: usize, seed: u64) -> Tensor {
        // A small deterministic generator: the tests need no RNG crate.
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let v: Vec<f64> = (0..rows * d)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, (rows, d), &Device::Cpu).unwrap()
    }

    /// Rows of shard-major `[z_a⁰; z_b⁰; z_a¹; z_b¹; …]` as `(z_a, z_b)` of the whole batch.
    fn unshard(z: &Tensor, shards: usize) -> Result<(Tensor, Tensor)> {
        let m = z.dim(0)? / shards;
        let n = m / 2;
        let a: Vec<Tensor> = (0..shards)
            .map(|s| z.narrow(0, s * m, n))
            .collect::<Result<_>>()?;
        let b: Vec<Tensor> = (0..shards)
            .map(|s| z.narrow(0, s * m + n, n))
            .collect::<Result<_>>()?;
        Ok((Tensor::cat(&a, 0)?, Tensor::cat(&b, 0)?))
    }

    fn shard_mean(
        z: &Tensor,
        shards: usize,
        f: impl Fn(usize) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let parts: Vec<Tensor> = (0..shards).map(f).collect::<Result<_>>()?;
        Tensor::stack(&parts, 0)?.mean_all()?.to_dtype(z.dtype())
    }

    /// `whole` and `mean` equal in value and in gradient with respect to `x`, to 1e-12 (f64).
    fn assert_same(whole: &Tensor, mean: &Tensor, x: &Var, what: &str) -> Result<()> {
        let (w, m) = (whole.to_scalar::<f64>()?, mean.to_scalar::<f64>()?);
        assert!((w - m).abs() < 1e-12 * w.abs(), "{what}: {m} vs {w}");
        let gw = whole.backward()?.get(x.as_tensor()).unwrap().clone();
        let gm = mean.backward()?.get(x.as_tensor()).unwrap().clone();
        let diff = (gw - gm)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(diff < 1e-12, "{what}: gradient differs by {diff}");
        Ok(())
    }

    #[test]
    fn the_mean_of_the_shards_is_nt_xent_of_the_whole_batch_in_value_and_gradient() -> Result<()> {
        for shards in [1usize, 2, 3] {
            let z = Var::from_tensor(&randn(shards * 2 * 3, 5, shards as u64))?;
            let (za, zb) = unshard(z.as_tensor(), shards)?;
            let whole = crate::nt_xent(&za, &zb, 0.5)?;
            let mean = shard_mean(&z, shards, |s| nt_xent_shard(z.as_tensor(), shards, s, 0.5))?;
            assert_same(&whole, &mean, &z, &format!("{shards} shards"))?;
        }
        Ok(())
    }

    #[test]
    fn the_mean_of_the_shards_is_supcon_of_the_whole_batch() -> Result<()> {
        let shards = 3;
        let f = Var::from_tensor(&randn(12, 4, 7))?;
        // Class 3 appears once: that anchor has no positive and is left out, as in supcon.
        let labels = Tensor::new(&[0u32, 1, 2, 0, 1, 2, 0, 1, 3, 2, 2, 0], &Device::Cpu)?;
        let whole = crate::supcon(f.as_tensor(), &labels, 0.1)?;
        let mean = shard_mean(&f, shards, |s| {
            supcon_shard(f.as_tensor(), &labels, shards, s, 0.1)
        })?;
        assert_same(&whole, &mean, &f, "supcon")?;
        Ok(())
    }

    #[test]
    fn bad_shards_are_errors_naming_them() {
        let z = randn(8, 3, 1);
        let e = nt_xent_shard(&z, 3, 0, 0.5).unwrap_err().to_string();
        assert!(e.contains("3 equal shards"), "{e}");
        let e = nt_xent_shard(&z, 2, 2, 0.5).unwrap_err().to_string();
        assert!(e.contains("shard 2 of 2"), "{e}");
        let e = nt_xent_shard(&z, 8, 0, 0.5).unwrap_err().to_string();
        assert!(e.contains("two views"), "{e}");
    }
}
