//! The random transforms sample torchvision's distributions.

use anyhow::Result;
use augment::{AugRng, ColorJitter, Op, RandomCrop, RandomGrayscale, RandomResizedCrop, Transform};
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

/// Counts of each `(top, left)` over `draws` windows of `t` on an image of size `dims`.
fn crop_counts(
    t: &RandomCrop,
    dims: (usize, usize),
    draws: usize,
    seed: u64,
) -> Result<std::collections::BTreeMap<(isize, isize), usize>> {
    let mut rng = AugRng::seed_from_u64(seed);
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..draws {
        *counts.entry(t.window(&mut rng, dims)?).or_insert(0) += 1;
    }
    Ok(counts)
}

#[test]
fn random_crop_offsets_are_uniform_over_the_padded_image() -> Result<()> {
    // CIFAR: 32 x 32 crops of the image padded by 4: top, left ~ U{0..=8} in the padded image,
    // that is U{-4..=4} in the image's; all 81 positions equally likely.
    let t = RandomCrop::new((32, 32))?.with_padding(4)?;
    let per = 300;
    let counts = crop_counts(&t, (32, 32), 81 * per, 5)?;
    let expected: Vec<(isize, isize)> = (-4..=4)
        .flat_map(|top| (-4..=4).map(move |left| (top, left)))
        .collect();
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), expected);
    // Binomial(24300, 1/81): mean 300, standard deviation 17.2; 5 sigma either side.
    for (pos, &n) in &counts {
        assert!(
            (214..=386).contains(&n),
            "{pos:?} drawn {n} times, expected about {per}"
        );
    }
    // Non-square crop of a non-square image: top in [-2, 31 + 2 - 28], left in [-2, 33 + 2 - 30].
    let t = RandomCrop::new((28, 30))?.with_padding(2)?;
    let counts = crop_counts(&t, (31, 33), 64 * 100, 6)?;
    assert_eq!(counts.len(), 8 * 8);
    let tops: std::collections::BTreeSet<isize> = counts.keys().map(|k| k.0).collect();
    let lefts: std::collections::BTreeSet<isize> = counts.keys().map(|k| k.1).collect();
    assert_eq!(tops, (-2..=5).collect());
    assert_eq!(lefts, (-2..=5).collect());
    // Without padding, a crop of the image's size has one position.
    let counts = crop_counts(&RandomCrop::new((9, 7))?, (9, 7), 50, 7)?;
    assert_eq!(counts.into_iter().collect::<Vec<_>>(), [((0, 0), 50)]);
    Ok(())
}

#[test]
fn random_crop_samples_one_crop_op() -> Result<()> {
    let t = RandomCrop::new((6, 5))?.with_padding(2)?;
    let mut rng = AugRng::seed_from_u64(8);
    let mut replay = AugRng::seed_from_u64(8);
    for _ in 0..100 {
        let (plan, out) = sample(&t, &mut rng, (7, 9))?;
        assert_eq!(out, (6, 5));
        let (top, left) = t.window(&mut replay, (7, 9))?;
        assert_eq!(
            plan,
            [Op::Crop {
                top,
                left,
                size: (6, 5)
            }]
        );
    }
    Ok(())
}

#[test]
fn random_crop_bad_parameters_are_errors_naming_them() -> Result<()> {
    let msg = |r: candle_core::Result<RandomCrop>| match r {
        Ok(t) => format!("unexpected Ok: {t:?}"),
        Err(e) => e.to_string(),
    };
    let cases = [
        (msg(RandomCrop::new((0, 32))), "(0, 32)"),
        (
            msg(RandomCrop::new((32, 32))?.with_padding(32)),
            "padding 32",
        ),
        (msg(RandomCrop::new((32, 5))?.with_padding(5)), "(32, 5)"),
    ];
    for (m, needle) in cases {
        assert!(m.contains(needle), "message {m:?} does not name {needle:?}");
    }
    assert!(RandomCrop::new((32, 5))?.with_padding(4).is_ok());
    // 24 + 2 * 4 = 32 fits, 23 + 2 * 4 does not.
    let t = RandomCrop::new((32, 32))?.with_padding(4)?;
    let mut rng = AugRng::seed_from_u64(9);
    assert!(t.window(&mut rng, (24, 40)).is_ok());
    for dims in [(23, 40), (40, 23)] {
        let m = format!("{:?}", t.window(&mut rng, dims).map_err(|e| e.to_string()));
        let image = format!("{}x{}", dims.0, dims.1);
        assert!(
            m.contains("(32, 32)") && m.contains(&image) && m.contains("padded by 4"),
            "{m}"
        );
        let m = format!(
            "{:?}",
            sample(&t, &mut rng, dims).map_err(|e| e.to_string())
        );
        assert!(m.contains(&image), "{m}");
    }
    for (r, needle) in [
        (augment::presets::crop_flip(32, 32), "padding 32"),
        (augment::presets::crop_flip(0, 0), "(0, 0)"),
    ] {
        let m = format!("{:?}", r.map_err(|e| e.to_string()));
        assert!(m.contains(needle), "{m}");
    }
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
