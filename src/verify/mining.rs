//! Online triplet mining within a batch.
//!
//! In: a batch's embeddings (`N × D` f32 values, row-major), each sample's identity, a
//! strategy ([`Mining`]), the triplet margin and a seed. Out: one triplet
//! `[anchor, positive, negative]` of batch indices for every anchor that has a positive (another
//! sample of its identity) in the batch, in anchor order ([`mine`]).
//!
//! Distances are PyTorch's `pairwise_distance(a, b)` = ‖a − b + ε‖₂ with ε =
//! [`crate::loss::PAIRWISE_EPS`], the distance `triplet_margin_loss` (and netc's
//! `triplet_loss`) computes, from the anchor's side: `d(a, x)` adds ε to `a − x`. They are
//! computed in f64 from the f32 embeddings. Every choice among equal distances goes to the
//! lowest batch index.
//!
//! - [`Mining::BatchHard`] (the default; Hermans, Beyer & Leibe, "In Defense of the Triplet
//!   Loss for Person Re-Identification", 2017): the hardest positive (largest distance, same
//!   identity, not the anchor itself) and the hardest negative (smallest distance, another
//!   identity).
//! - [`Mining::SemiHard`] (Schroff et al., FaceNet, 2015): the positive is the hardest
//!   positive, as above; the negative is the hardest *semi-hard* one, the closest negative
//!   with `d(a, p) < d(a, n) < d(a, p) + margin` (farther than the positive, so the loss does
//!   not push towards collapse, yet inside the margin, so it still has a gradient); when there
//!   is none, the hardest negative.
//! - [`Mining::Random`]: a uniformly chosen positive and negative, from the stream of `seed`.

use std::fmt;
use std::str::FromStr;

use crate::data::rng::Rng;
use crate::loss::PAIRWISE_EPS;

const TAG_MINE: u64 = 0x5645_5249_464d_4e31; // "VERIFMN1"

/// How triplets are chosen within a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mining {
    Random,
    #[default]
    BatchHard,
    SemiHard,
}

impl Mining {
    /// The names [`Mining::from_str`] reads (`-` or `_` between the words).
    pub const NAMES: [&'static str; 3] = ["batch-hard", "semi-hard", "random"];

    pub fn name(self) -> &'static str {
        match self {
            Mining::BatchHard => "batch-hard",
            Mining::SemiHard => "semi-hard",
            Mining::Random => "random",
        }
    }
}

impl fmt::Display for Mining {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mining {
    type Err = String;

    /// `batch-hard`, `semi-hard` or `random` (case-insensitive; `_` for `-` too).
    fn from_str(s: &str) -> Result<Mining, String> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "batch-hard" => Ok(Mining::BatchHard),
            "semi-hard" => Ok(Mining::SemiHard),
            "random" => Ok(Mining::Random),
            _ => Err(format!(
                "unknown triplet mining `{}`; expected one of {} (batch-hard is the default)",
                crate::diag::escape_controls(s),
                Mining::NAMES.join(", ")
            )),
        }
    }
}

/// `pairwise_distance(a, b)`: ‖a − b + ε‖₂, in f64.
pub fn pairwise_distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = x as f64 - y as f64 + PAIRWISE_EPS;
            d * d
        })
        .sum::<f64>()
        .sqrt()
}

/// The triplets of one batch: for each anchor (in index order) that has a positive in the
/// batch, `[anchor, positive, negative]` chosen by `mining` (see the module doc). `embeddings`
/// holds `ids.len()` rows of equal length; `margin` is the triplet loss's (used by semi-hard);
/// `seed` drives [`Mining::Random`] only (give each batch its own, e.g. from
/// `Rng::from_words(&[seed, epoch, batch])`).
///
/// Errors: an empty batch, embeddings that do not divide into `ids.len()` rows, a non-finite
/// embedding value (training diverged), a negative or non-finite margin, or a batch of one
/// identity (no negatives).
pub fn mine(
    embeddings: &[f32],
    ids: &[i64],
    mining: Mining,
    margin: f64,
    seed: u64,
) -> Result<Vec<[usize; 3]>, String> {
    let n = ids.len();
    if n == 0 {
        return Err("triplet mining got an empty batch".to_string());
    }
    if embeddings.is_empty() || !embeddings.len().is_multiple_of(n) {
        return Err(format!(
            "triplet mining got {} embedding values for {n} samples; expected {n} rows of D \
             values each",
            embeddings.len()
        ));
    }
    let dim = embeddings.len() / n;
    if let Some(i) = embeddings.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "the embedding of sample {} of the batch holds {}; training has diverged (try a \
             lower learning rate)",
            i / dim,
            embeddings[i]
        ));
    }
    if !(margin.is_finite() && margin >= 0.0) {
        return Err(format!(
            "the triplet margin is {margin}; it must be a finite number ≥ 0"
        ));
    }
    if ids.iter().all(|&id| id == ids[0]) {
        return Err(format!(
            "every sample of the batch is identity {}; triplets need a negative of another \
             identity in the batch (sample several identities per batch, e.g. P×K batches)",
            ids[0]
        ));
    }
    let row = |i: usize| &embeddings[i * dim..(i + 1) * dim];
    let mut rng = Rng::from_words(&[seed, TAG_MINE]);
    let mut out = Vec::new();
    for a in 0..n {
        let pos: Vec<usize> = (0..n).filter(|&p| p != a && ids[p] == ids[a]).collect();
        if pos.is_empty() {
            continue;
        }
        let neg: Vec<usize> = (0..n).filter(|&x| ids[x] != ids[a]).collect();
        if mining == Mining::Random {
            let p = pos[rng.below(pos.len() as u64) as usize];
            let q = neg[rng.below(neg.len() as u64) as usize];
            out.push([a, p, q]);
            continue;
        }
        let d = |x: usize| pairwise_distance(row(a), row(x));
        // The hardest positive: the largest distance, the lowest index on ties.
        let hardest_pos =
            pos.iter()
                .map(|&p| (p, d(p)))
                .fold(None, |best: Option<(usize, f64)>, (p, dp)| match best {
                    Some((_, b)) if dp <= b => best,
                    _ => Some((p, dp)),
                });
        // Both exist: `pos` is not empty, and the batch has two identities.
        let Some((p, dp)) = hardest_pos else { continue };
        let dn: Vec<(usize, f64)> = neg.iter().map(|&x| (x, d(x))).collect();
        let closest = |cands: &mut dyn Iterator<Item = (usize, f64)>| {
            cands.fold(None, |best: Option<(usize, f64)>, (x, dx)| match best {
                Some((_, b)) if dx >= b => best,
                _ => Some((x, dx)),
            })
        };
        let hardest = closest(&mut dn.iter().copied());
        let chosen = match mining {
            Mining::SemiHard => closest(
                &mut dn
                    .iter()
                    .copied()
                    .filter(|&(_, dx)| dp < dx && dx < dp + margin),
            )
            .or(hardest),
            _ => hardest,
        };
        if let Some((q, _)) = chosen {
            out.push([a, p, q]);
        }
    }
    Ok(out)
}
