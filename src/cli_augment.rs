//! `netc augment`: a picture of what the augmentations do to training samples.
//!
//! In: a spec (its one image input and its `augment` list, or `--augment`), a data source (as
//! `netc train --data`), how many samples and variants, a seed. Out: a PNG grid
//! ([`crate::picture::write_grid`]), one row per sample: the stored image, then the same image
//! as training epochs 1, 2, ... would feed it (the loader's own per-sample streams
//! `[seed, TAG_AUGMENT, epoch, index]`, before normalization; byte data drawn as values in
//! `[0, 1]`, float data mapped to it with one range for the whole grid). Exit code 0, 1 on
//! errors (the spec, the data, the file), 2 on a bad command line.

use crate::cli::fail;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli_values::AugmentArg;
use crate::data::rng::{Rng, TAG_AUGMENT};
use crate::data::{Dataset, Pixels, augment};
use crate::picture::{Normalize, Tile, write_grid};
use crate::spec::Spec;
use crate::train_config::Augment;

/// The most samples (rows) and variants (augmented columns).
pub const MAX_COUNT: usize = 64;

/// The flags of `netc augment`.
#[derive(clap::Args, Debug, Clone)]
pub struct AugmentArgs {
    /// The data, as `netc train --data` (default: the spec's, else `bundled`).
    #[arg(long)]
    pub data: Option<String>,
    /// The PNG to write.
    #[arg(long, short)]
    pub output: PathBuf,
    /// Samples to show, one per row (spread evenly over the training set).
    #[arg(long, default_value_t = 4, value_parser = count)]
    pub count: usize,
    /// Augmented variants of each sample (epochs 1..N), beside the original.
    #[arg(long, default_value_t = 7, value_parser = count)]
    pub variants: usize,
    /// Seed of the augmentation (as `netc train --seed`; default: the spec's, else 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Augmentations replacing the spec's list, in the same syntax (as `netc train --augment`).
    #[arg(long, value_parser = crate::cli_values::augment)]
    pub augment: Option<AugmentArg>,
}

/// `--count` and `--variants`: 1 to [`MAX_COUNT`].
fn count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_COUNT).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from 1 to {MAX_COUNT}")),
    }
}

/// Sample `i` of `data` as unnormalized `[C, H, W]` values (bytes / 255), and whether its
/// values are bytes (the color blends clamp them).
fn sample(data: &Dataset, i: usize) -> (Vec<f32>, bool) {
    let n = data.sample_len();
    match &data.pixels {
        Pixels::U8(p) => (
            p[i * n..(i + 1) * n]
                .iter()
                .map(|&b| b as f32 / 255.0)
                .collect(),
            true,
        ),
        p => {
            let p = p.floats().unwrap_or_default();
            (p[i * n..(i + 1) * n].to_vec(), false)
        }
    }
}

/// The grid's tiles, row by row: each of `count` samples (evenly spread over `data`), then
/// its `variants` augmentations by `augs` as epochs 0.. of a training with `seed` make them.
pub fn grid_tiles(
    data: &Dataset,
    augs: &[Augment],
    count: usize,
    variants: usize,
    seed: u64,
) -> Vec<Tile> {
    // Augmentations act on images [C, H, W] only (the command checks the model input).
    let shape = match data.sample_shape[..] {
        [c, h, w] => [c, h, w],
        _ => return Vec::new(),
    };
    let [c, h, w] = shape;
    let count = count.min(data.len());
    let mut tiles = Vec::with_capacity(count * (variants + 1));
    for k in 0..count {
        let i = k * data.len() / count;
        let (img, clamp) = sample(data, i);
        let label = data.labels[i];
        let class = usize::try_from(label)
            .ok()
            .and_then(|l| data.class_names.get(l))
            .map(|n| format!(" {n}"))
            .unwrap_or_default();
        let tile = |pixels: Vec<f32>, label: String| Tile {
            pixels,
            channels: c,
            height: h,
            width: w,
            label,
        };
        tiles.push(tile(img.clone(), format!("#{i} ({label}{class})")));
        for epoch in 0..variants {
            let mut x = img.clone();
            let mut rng = Rng::from_words(&[seed, TAG_AUGMENT, epoch as u64, i as u64]);
            augment::apply(augs, &mut x, shape, clamp, &mut rng);
            tiles.push(tile(x, format!("epoch {}", epoch + 1)));
        }
    }
    tiles
}

/// Maps float data of unknown range to `[0, 1]` with one range for every tile (the smallest
/// and largest finite value of all), so a brightness change stays visible, which a range per
/// tile would undo. Byte data are already in `[0, 1]`.
pub fn shared_range(tiles: &mut [Tile]) {
    let finite = tiles
        .iter()
        .flat_map(|t| &t.pixels)
        .filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
        (lo.min(v), hi.max(v))
    });
    let span = hi - lo;
    if !(span.is_finite() && span > 0.0) {
        return;
    }
    for v in tiles.iter_mut().flat_map(|t| t.pixels.iter_mut()) {
        if v.is_finite() {
            *v = (*v - lo) / span;
        }
    }
}

/// Runs `netc augment`.
pub fn augment_cmd(spec: &Spec, args: &AugmentArgs) -> ExitCode {
    let lg = &spec.graph;
    let cfg = lg.train.clone().unwrap_or_default();
    let Some(input) = lg.inputs.first() else {
        return fail(format!("`{}` has no input", lg.name));
    };
    if lg.inputs.len() != 1 || input.shape.len() != 3 {
        return fail(format!(
            "`netc augment` shows image samples of a model with one [C, H, W] input; `{}` has {}",
            lg.name,
            lg.inputs
                .iter()
                .map(|i| format!("`{}`: {}", i.name, crate::io::show_shape(&i.shape)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let augs = match &args.augment {
        Some(a) => match a.for_input(&input.shape) {
            Ok(l) => l,
            Err(e) => return fail(e),
        },
        None => cfg.augment.clone(),
    };
    if augs.is_empty() {
        return fail(format!(
            "`{}` has no augmentations to show\n  help: add `augment: [...]` to its train \
             section, or pass e.g. --augment \"mirror, random_crop(pad=4)\"",
            lg.name
        ));
    }
    let source = args
        .data
        .clone()
        .or(cfg.data.clone())
        .unwrap_or_else(|| "bundled".to_string());
    let data = match crate::data::open(&source, input) {
        Ok(d) => d.train,
        Err(e) => return fail(e),
    };
    if data.is_empty() {
        return fail(format!("{} has no samples", data.name));
    }
    let seed = args.seed.or(cfg.seed).unwrap_or(0);
    let tiles = grid_tiles(&data, &augs, args.count, args.variants, seed);
    let mut tiles = tiles;
    if data.pixels.floats().is_some() {
        shared_range(&mut tiles);
    }
    if let Err(e) = write_grid(&args.output, &tiles, args.variants + 1, Normalize::Clamp01) {
        return fail(e);
    }
    let list: Vec<String> = augs.iter().map(|a| a.to_string()).collect();
    eprintln!(
        "wrote {}: {} samples of {} × {} variants ({})",
        args.output.display(),
        tiles.len() / (args.variants + 1),
        data.name,
        args.variants,
        list.join(", ")
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_tiles_share_one_range() {
        let tile = |pixels: Vec<f32>| Tile {
            pixels,
            channels: 1,
            height: 1,
            width: 2,
            label: String::new(),
        };
        let mut tiles = vec![tile(vec![-1.0, 1.0]), tile(vec![-2.0, 2.0 * f32::NAN])];
        tiles.push(tile(vec![3.0, f32::INFINITY]));
        shared_range(&mut tiles);
        assert_eq!(tiles[0].pixels, vec![0.2, 0.6]);
        assert_eq!(tiles[1].pixels[0], 0.0);
        assert!(tiles[1].pixels[1].is_nan());
        assert_eq!(tiles[2].pixels, vec![1.0, f32::INFINITY]);
        // A constant set is left alone.
        let mut flat = vec![tile(vec![5.0, 5.0])];
        shared_range(&mut flat);
        assert_eq!(flat[0].pixels, vec![5.0, 5.0]);
    }
}
