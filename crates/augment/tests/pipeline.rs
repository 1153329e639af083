//! The batch pipeline: equal to the functional API replaying the same plans, reproducible
//! whatever the thread count and batch composition, and strict about bad input.

use std::sync::Arc;

use anyhow::Result;
use augment::{
    apply_plan, presets, ColorJitter, Compose, MultiView, Op, Pipeline, Prefetcher, RandomCrop,
    RandomHorizontalFlip, RandomResizedCrop, Resize,
};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

/// `n` random images of size `(h, w)`, CHW, as raw bytes.
fn random_images(n: usize, (h, w): (usize, usize), seed: u64) -> Vec<u8> {
    let mut rng = augment::AugRng::seed_from_u64(seed);
    (0..n * 3 * h * w).map(|_| rng.random::<u8>()).collect()
}

/// Image `i` of the byte buffer as a float tensor `(3, h, w)` in [0, 1].
fn image_tensor(images: &[u8], (h, w): (usize, usize), i: usize) -> Result<Tensor> {
    let per = 3 * h * w;
    let bytes = images[i * per..(i + 1) * per].to_vec();
    Ok((Tensor::from_vec(bytes, (3, h, w), &Device::Cpu)?.to_dtype(DType::F32)? * (1.0 / 255.0))?)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    assert_eq!(a.dims(), b.dims());
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

/// Every image of a batch equals `apply_plan` on its float tensor with the plan the batch used.
fn check_against_functional(
    pipeline: &Pipeline,
    dims: (usize, usize),
    tol: f32,
) -> Result<Vec<Vec<Op>>> {
    let images = random_images(24, dims, 3);
    let indices: Vec<usize> = (0..24).rev().collect();
    let batch = pipeline.apply_batch(&images, dims, &indices, 11, 2, 1)?;
    let mut plans = Vec::new();
    for (b, &i) in indices.iter().enumerate() {
        let plan = pipeline.plan_for(dims, 11, 2, i, 1)?;
        let expected = apply_plan(&image_tensor(&images, dims, i)?, &plan)?;
        let diff = max_abs_diff(&batch.get(b)?, &expected)?;
        assert!(
            diff <= tol,
            "image {i}, plan {plan:?}: max |diff| {diff} > {tol}"
        );
        plans.push(plan);
    }
    Ok(plans)
}

#[test]
fn simclr_cifar_batch_equals_functional_replay() -> Result<()> {
    let plans = check_against_functional(&presets::simclr_cifar(32)?, (32, 32), 1e-5)?;
    // The replay is only a check if the plans exercise the ops: flips, jitter, grey all occur.
    let has = |f: &dyn Fn(&Op) -> bool| plans.iter().any(|p| p.iter().any(f));
    assert!(has(&|o| matches!(o, Op::HFlip)));
    assert!(has(&|o| matches!(o, Op::Hue(_))));
    assert!(has(&|o| matches!(o, Op::Contrast(_))));
    assert!(has(&|o| matches!(o, Op::Grayscale)));
    Ok(())
}

#[test]
fn simclr_imagenet_batch_equals_functional_replay() -> Result<()> {
    // Non-square input larger than the output: antialiased downscaling, and a 5x5 blur.
    let plans = check_against_functional(&presets::simclr_imagenet(48)?, (61, 77), 1e-5)?;
    assert!(plans.iter().any(|p| p
        .iter()
        .any(|o| matches!(o, Op::GaussianBlur { kernel_size: 5, .. }))));
    Ok(())
}

#[test]
fn eval_and_unnormalised_pipelines_equal_functional_replay() -> Result<()> {
    check_against_functional(&presets::eval(16)?, (20, 24), 1e-5)?;
    check_against_functional(&presets::eval(20)?, (20, 20), 0.0)?;
    check_against_functional(&presets::supervised(24)?, (32, 32), 1e-5)?;
    check_against_functional(
        &presets::simclr_cifar(32)?.without_normalize(),
        (32, 32),
        1e-5,
    )?;
    Ok(())
}

/// The crops (top, left) and whether a flip follows each, over the plans.
fn crops(plans: &[Vec<Op>]) -> Vec<(isize, isize, bool)> {
    let mut out = Vec::new();
    for plan in plans {
        for (i, op) in plan.iter().enumerate() {
            if let Op::Crop { top, left, .. } = *op {
                out.push((top, left, matches!(plan.get(i + 1), Some(Op::HFlip))));
            }
        }
    }
    out
}

#[test]
fn crop_flip_batch_equals_functional_replay_exactly() -> Result<()> {
    // The fused u8 path (crop and flip in one pass) against crop, then flip, on float tensors.
    for (pipeline, dims) in [
        (presets::crop_flip(32, 4)?, (32, 32)),
        (presets::crop_flip(32, 4)?.without_normalize(), (32, 32)),
        (presets::crop_flip(24, 3)?, (27, 35)),
    ] {
        let plans = check_against_functional(&pipeline, dims, 0.0)?;
        let side = pipeline.size() as isize;
        let c = crops(&plans);
        assert_eq!(c.len(), plans.len());
        // The plans reach past every edge, and come flipped and not.
        assert!(c.iter().any(|&(t, _, _)| t < 0) && c.iter().any(|&(_, l, _)| l < 0));
        assert!(c.iter().any(|&(t, _, _)| t + side > dims.0 as isize));
        assert!(c.iter().any(|&(_, l, _)| l + side > dims.1 as isize));
        assert!(c.iter().any(|c| c.2) && c.iter().any(|c| !c.2));
    }
    Ok(())
}

#[test]
fn crop_after_other_ops_equals_functional_replay() -> Result<()> {
    // Crops that are not first run on float planes; a colour op between crop and flip leaves
    // the crop alone in the fused path.
    let after_jitter = Compose::new()
        .then(ColorJitter::new(0.4, 0.4, 0.4, 0.1)?)
        .then(RandomCrop::new((20, 20))?.with_padding(3)?)
        .then(RandomHorizontalFlip::new(0.5)?);
    let plans = check_against_functional(&Pipeline::new(after_jitter, 20)?, (22, 25), 1e-5)?;
    assert!(crops(&plans).iter().any(|c| c.2) && crops(&plans).iter().any(|c| !c.2));
    let jitter_between = Compose::new()
        .then(RandomCrop::new((20, 20))?.with_padding(3)?)
        .then(ColorJitter::new(0.4, 0.4, 0.4, 0.1)?)
        .then(RandomHorizontalFlip::new(0.5)?);
    let plans = check_against_functional(&Pipeline::new(jitter_between, 20)?, (22, 25), 1e-5)?;
    assert!(plans.iter().all(|p| matches!(p[0], Op::Crop { .. })));
    assert!(plans.iter().any(|p| p.contains(&Op::HFlip)));
    Ok(())
}

#[test]
fn same_seed_same_batch_whatever_the_threads_and_batch() -> Result<()> {
    let dims = (32, 32);
    let images = random_images(64, dims, 5);
    let pipeline = presets::simclr_cifar(32)?;
    let indices: Vec<usize> = (0..64).collect();
    let run = |threads: usize| -> Result<Vec<f32>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        Ok(pool.install(|| pipeline.apply_batch_vec(&images, dims, &indices, 9, 1, 0))?)
    };
    let one = run(1)?;
    assert_eq!(one, run(2)?);
    assert_eq!(one, run(3)?);
    // Image 17 alone, or in another batch at another position: the same bits.
    let per = 3 * 32 * 32;
    let alone = pipeline.apply_batch_vec(&images, dims, &[17], 9, 1, 0)?;
    assert_eq!(alone, one[17 * per..18 * per]);
    let other = pipeline.apply_batch_vec(&images, dims, &[3, 17, 17], 9, 1, 0)?;
    assert_eq!(other[per..2 * per], one[17 * per..18 * per]);
    assert_eq!(other[2 * per..], one[17 * per..18 * per]);
    // Another view, epoch or seed changes it.
    for (seed, epoch, view) in [(9, 1, 1), (9, 2, 0), (10, 1, 0)] {
        let changed = pipeline.apply_batch_vec(&images, dims, &[17], seed, epoch, view)?;
        assert_ne!(changed, alone, "seed {seed} epoch {epoch} view {view}");
    }
    Ok(())
}

#[test]
fn multiview_and_prefetcher_give_the_direct_batches() -> Result<()> {
    let dims = (32, 32);
    let images = Arc::new(random_images(16, dims, 8));
    let views = MultiView::new(vec![presets::simclr_cifar(32)?, presets::simclr_cifar(16)?])?;
    assert_eq!(views.len(), 2);
    let batches = vec![vec![0, 1, 2, 3], vec![15, 4], vec![7]];
    let prefetched: Vec<_> = views
        .prefetch(images.clone(), dims, batches.clone(), 4, 3, 1)?
        .collect();
    assert_eq!(prefetched.len(), 3);
    for (got, indices) in prefetched.into_iter().zip(&batches) {
        let got = got?;
        let direct = views.apply_batch(&images, dims, indices, 4, 3)?;
        assert_eq!(got[1].dims(), &[indices.len(), 3, 16, 16]);
        for v in 0..2 {
            assert_eq!(max_abs_diff(&got[v], &direct[v])?, 0.0);
            let single = views.views()[v].apply_batch(&images, dims, indices, 4, 3, v as u64)?;
            assert_eq!(max_abs_diff(&got[v], &single)?, 0.0);
        }
    }
    // Dropping a prefetcher early stops its worker.
    let mut early = Prefetcher::new(0..1000u64, 1, |x| x + 1)?;
    assert_eq!(early.next(), Some(1));
    drop(early);
    Ok(())
}

fn err_msg<T: std::fmt::Debug>(r: candle_core::Result<T>) -> String {
    match r {
        Ok(v) => format!("unexpected Ok: {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_batch_input_is_an_error_naming_the_value() -> Result<()> {
    let p = presets::simclr_cifar(32)?;
    let images = vec![0u8; 2 * 3 * 32 * 32];
    let cases = [
        (
            err_msg(p.apply_batch(&images, (32, 32), &[0, 2], 0, 0, 0)),
            "index 2",
        ),
        (
            err_msg(p.apply_batch(&images[1..], (32, 32), &[0], 0, 0, 0)),
            "6143 bytes",
        ),
        (
            err_msg(p.apply_batch(&images, (0, 32), &[0], 0, 0, 0)),
            "(0, 32)",
        ),
        (
            err_msg(p.apply_batch_into(&images, (32, 32), &[0], 0, 0, 0, &mut [0.0; 7])),
            "7 floats",
        ),
        (err_msg(presets::simclr_cifar(0)), "size 0"),
        (
            err_msg(presets::eval(32)?.with_normalize([0.0; 3], [1.0, 0.0, 1.0])),
            "[1.0, 0.0, 1.0]",
        ),
        (err_msg(MultiView::new(vec![])), "got 0"),
        (
            err_msg(RandomResizedCrop::new((32, 32))?.with_scale(0.5, 0.1)),
            "(0.5, 0.1)",
        ),
        (
            err_msg(augment::ColorJitter::new(0.4, 0.4, 0.4, 0.6)),
            "0.6",
        ),
        (
            err_msg(augment::ColorJitter::new(-0.4, 0.4, 0.4, 0.1)),
            "-0.4",
        ),
        (
            err_msg(augment::GaussianBlur::new(4, 0.1, 2.0)),
            "kernel_size 4",
        ),
        (err_msg(augment::GaussianBlur::new(3, 0.0, 2.0)), "(0, 2)"),
        (err_msg(augment::RandomGrayscale::new(1.2)), "p 1.2"),
        (
            err_msg(augment::RandomApply::new(
                augment::RandomGrayscale::new(1.0)?,
                -0.1,
            )),
            "p -0.1",
        ),
        (
            err_msg(augment::RandomSolarize::new(2.0, 0.5)),
            "threshold 2",
        ),
    ];
    for (i, (msg, needle)) in cases.iter().enumerate() {
        assert!(
            msg.contains(needle),
            "case {i}: message {msg:?} does not name {needle:?}"
        );
    }
    // A pipeline whose transforms do not produce its declared size.
    let wrong = Pipeline::new(Compose::new().then(Resize::new((8, 8))?), 16)?;
    let msg = err_msg(wrong.apply_batch(&images, (32, 32), &[0], 0, 0, 0));
    assert!(msg.contains("(8, 8)"), "{msg}");
    // A blur kernel larger than the image.
    let blur = Pipeline::new(
        Compose::new().then(augment::GaussianBlur::new(5, 1.0, 1.0)?),
        2,
    )?;
    let msg = err_msg(blur.apply_batch(&[0u8; 3 * 2 * 2], (2, 2), &[0], 0, 0, 0));
    assert!(
        msg.contains("kernel_size 5") && msg.contains("2x2"),
        "{msg}"
    );
    Ok(())
}
