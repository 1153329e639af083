//! The random transforms sample torchvision's distributions.

use anyhow::Result;
use augment::{AugRng, ColorJitter, Op, RandomGrayscale, RandomResizedCrop, Transform};
use candle_core::{Device, Tensor};
use rand::SeedableRng;

fn sample(
    t: &dyn Transform,
    rng: &mut AugRng,
    dims: (usize, usize),
) -> Result<(Vec<Op>, (usize, usize))> {
    let mut plan = Vec::new();
    let out = t.sample(rng, dims, &mut plan)?;
    Ok((plan, out))
}

#[test]
fn random_resized_crop_windows_follow_scale_and_ratio() -> Result<()> {
    let t = RandomResizedCrop::new((24, 24))?;
    let mut rng = AugRng::seed_from_u64(1);
    let (h, w) = (40usize, 50usize);
    let mut small = 0;
    for _ in 0..2000 {
        let (top, left, ch, cw) = t.window(&mut rng, (h, w));
        assert!(
            ch >= 1 && cw >= 1 && top + ch <= h && left + cw <= w,
            "{top} {left} {ch} {cw}"
        );
        let frac = (ch * cw) as f64 / (h * w) as f64;
        // Rounding of the sides moves the area a little outside [0.08, 1].
        assert!((0.06..=1.0).contains(&frac), "area fraction {frac}");
        let ratio = cw as f64 / ch as f64;
        assert!((0.6..=1.5).contains(&ratio), "ratio {ratio}");
        small += usize::from(frac < 0.3);
    }
    // U(0.08, 1) puts about 24% of the mass below 0.3 (less once big crops are rejected).
    assert!(
        (300..700).contains(&small),
        "{small} crops below 0.3 of the area"
    );
    Ok(())
}

#[test]
fn random_resized_crop_fallback_is_torchvisions_central_crop() -> Result<()> {
    let mut rng = AugRng::seed_from_u64(2);
    // No try can fit an area of 2-3 times the image: whole image within the ratio range.
    let t = RandomResizedCrop::new((8, 8))?.with_scale(2.0, 3.0)?;
    assert_eq!(t.window(&mut rng, (30, 35)), (0, 0, 30, 35));
    // A wide image: full height, width round(h * 4/3), centred.
    assert_eq!(t.window(&mut rng, (10, 100)), (0, (100 - 13) / 2, 10, 13));
    // A tall image: full width, height round(w / (3/4)), centred.
    assert_eq!(t.window(&mut rng, (100, 9)), ((100 - 12) / 2, 0, 12, 9));
    Ok(())
}

#[test]
fn color_jitter_draws_each_factor_once_in_random_order() -> Result<()> {
    let t = ColorJitter::new(0.4, 0.4, 0.4, 0.1)?;
    let mut rng = AugRng::seed_from_u64(3);
    let mut orders = std::collections::HashSet::new();
    for _ in 0..1000 {
        let (plan, out) = sample(&t, &mut rng, (5, 5))?;
        assert_eq!(out, (5, 5));
        assert_eq!(plan.len(), 4);
        let mut order = Vec::new();
        for op in &plan {
            match *op {
                Op::Brightness(f) | Op::Contrast(f) | Op::Saturation(f) => {
                    assert!((0.6..1.4).contains(&f), "{op:?}")
                }
                Op::Hue(f) => assert!((-0.1..0.1).contains(&f), "{op:?}"),
                ref other => panic!("unexpected op {other:?}"),
            }
            order.push(std::mem::discriminant(op));
        }
        orders.insert(format!("{order:?}"));
    }
    assert_eq!(orders.len(), 24, "all 4! orders occur");
    // Zero strengths are left out, as torchvision's None.
    let (plan, _) = sample(&ColorJitter::new(0.0, 0.5, 0.0, 0.0)?, &mut rng, (5, 5))?;
    assert!(matches!(plan[..], [Op::Contrast(_)]), "{plan:?}");
    Ok(())
}

#[test]
fn probabilities_are_respected() -> Result<()> {
    let mut rng = AugRng::seed_from_u64(4);
    let t = RandomGrayscale::new(0.2)?;
    let mut grey = 0;
    for _ in 0..5000 {
        grey += sample(&t, &mut rng, (4, 4))?.0.len();
    }
    assert!((900..1100).contains(&grey), "{grey} of 5000 grey at p 0.2");
    let p = augment::presets::simclr_cifar(32)?;
    let mut jitter = 0;
    for i in 0..2000 {
        let plan = p.plan_for((32, 32), 0, 0, i, 0)?;
        jitter += usize::from(plan.iter().any(|o| matches!(o, Op::Hue(_))));
        assert!(matches!(
            plan[0],
            Op::ResizedCrop {
                size: (32, 32),
                antialias: true,
                ..
            }
        ));
        assert!(matches!(plan.last(), Some(Op::Normalize { .. })));
    }
    assert!(
        (1520..1680).contains(&jitter),
        "{jitter} of 2000 jittered at p 0.8"
    );
    Ok(())
}

#[test]
fn transform_apply_on_tensors_is_seeded() -> Result<()> {
    let img = Tensor::rand(0f32, 1f32, (2, 3, 20, 20), &Device::Cpu)?;
    let p = augment::presets::simclr_imagenet(16)?;
    let a = p.apply(&img, &mut AugRng::seed_from_u64(7))?;
    let b = p.apply(&img, &mut AugRng::seed_from_u64(7))?;
    assert_eq!(a.dims(), &[2, 3, 16, 16]);
    let diff = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    assert_eq!(diff, 0.0);
    Ok(())
}
