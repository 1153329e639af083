//! Colour transforms: [`ColorJitter`], [`RandomGrayscale`] and [`RandomSolarize`].

use candle_core::{bail, Result};
use rand::seq::SliceRandom;

use crate::op::Op;
use crate::transform::{check_p, coin, uniform, AugRng, Transform};

/// Random brightness, contrast, saturation and hue changes, applied in a random order
/// (`transforms.v2.ColorJitter`; SimCLR uses `0.4, 0.4, 0.4, 0.1` with probability 0.8).
///
/// A strength `v` gives a factor drawn from `U(max(0, 1 − v), 1 + v)` for brightness, contrast
/// and saturation, and a hue shift from `U(−v, v)`; a strength of 0 disables that adjustment.
/// The order is a uniform permutation of the four, as torchvision's `randperm(4)`.
#[derive(Debug, Clone)]
pub struct ColorJitter {
    brightness: Option<(f64, f64)>,
    contrast: Option<(f64, f64)>,
    saturation: Option<(f64, f64)>,
    hue: Option<(f64, f64)>,
}

fn around_one(name: &str, v: f64) -> Result<Option<(f64, f64)>> {
    if !(v >= 0.0 && v.is_finite()) {
        bail!("ColorJitter: {name} strength {v} must be a finite number >= 0")
    }
    Ok((v > 0.0).then(|| ((1.0 - v).max(0.0), 1.0 + v)))
}

impl ColorJitter {
    /// Strengths of the four adjustments; `hue` in [0, 0.5], the others >= 0.
    pub fn new(brightness: f64, contrast: f64, saturation: f64, hue: f64) -> Result<Self> {
        if !(0.0..=0.5).contains(&hue) {
            bail!("ColorJitter: hue strength {hue} must be in [0, 0.5]")
        }
        Ok(Self {
            brightness: around_one("brightness", brightness)?,
            contrast: around_one("contrast", contrast)?,
            saturation: around_one("saturation", saturation)?,
            hue: (hue > 0.0).then_some((-hue, hue)),
        })
    }
}

impl Transform for ColorJitter {
    fn sample(
        &self,
        rng: &mut AugRng,
        dims: (usize, usize),
        plan: &mut Vec<Op>,
    ) -> Result<(usize, usize)> {
        let mut order = [0usize, 1, 2, 3];
        order.shuffle(rng);
        let mut draw = |r: Option<(f64, f64)>| r.map(|(lo, hi)| uniform(rng, lo, hi) as f32);
        let b = draw(self.brightness);
        let c = draw(self.contrast);
        let s = draw(self.saturation);
        let h = draw(self.hue);
        for i in order {
            let op = match i {
                0 => b.map(Op::Brightness),
                1 => c.map(Op::Contrast),
                2 => s.map(Op::Saturation),
                _ => h.map(|h| Op::Hue(h.clamp(-0.5, 0.5))),
            };
            if let Some(op) = op {
                op.check(dims)?;
                plan.push(op);
            }
        }
        Ok(dims)
    }
}

/// Converts to grey (three equal channels) with probability `p` (`transforms.v2.RandomGrayscale`).
#[derive(Debug, Clone)]
pub struct RandomGrayscale {
    p: f64,
}

impl RandomGrayscale {
    /// Grey with probability `p` in [0, 1] (SimCLR: 0.2).
    pub fn new(p: f64) -> Result<Self> {
        check_p("RandomGrayscale", p)?;
        Ok(Self { p })
    }
}

impl Transform for RandomGrayscale {
    fn sample(
        &self,
        rng: &mut AugRng,
        dims: (usize, usize),
        plan: &mut Vec<Op>,
    ) -> Result<(usize, usize)> {
        if coin(rng, self.p) {
            plan.push(Op::Grayscale);
        }
        Ok(dims)
    }
}

/// Solarizes (inverts values at or above `threshold`) with probability `p`
/// (`transforms.v2.RandomSolarize`; BYOL uses threshold 0.5, p 0.2 on its second view).
#[derive(Debug, Clone)]
pub struct RandomSolarize {
    threshold: f32,
    p: f64,
}

impl RandomSolarize {
    /// `threshold <= 1`, `p` in [0, 1].
    pub fn new(threshold: f32, p: f64) -> Result<Self> {
        check_p("RandomSolarize", p)?;
        Op::Solarize(threshold).check((1, 1))?;
        Ok(Self { threshold, p })
    }
}

impl Transform for RandomSolarize {
    fn sample(
        &self,
        rng: &mut AugRng,
        dims: (usize, usize),
        plan: &mut Vec<Op>,
    ) -> Result<(usize, usize)> {
        if coin(rng, self.p) {
            plan.push(Op::Solarize(self.threshold));
        }
        Ok(dims)
    }
}
