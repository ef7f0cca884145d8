//! Anchor boxes from a dataset's box sizes: k-means on IoU distance (YOLOv2, §"Dimension
//! Clusters").
//!
//! In: box sizes `(w, h)` (any unit, the same for all: `netc anchors` gives pixels of the
//! model's input), `k` and a seed. Out: [`AnchorFit`]: `k` anchors `(w, h)` in the same unit,
//! sorted by area, and the mean over boxes of the best IoU with an anchor.
//!
//! The distance is `1 − IoU` of two sizes aligned at a corner (`min(w)·min(h)` over the
//! union). Initial centres are chosen by k-means++ (the first uniformly, each next one with
//! probability proportional to the squared distance to the nearest chosen one) from the
//! random stream `[seed, TAG]` of [`crate::data::rng`]: the same seed gives the same anchors
//! on every machine. Then Lloyd's iterations: each box goes to the centre of highest IoU (the
//! first on ties), each centre becomes the mean size of its boxes (a centre with no box stays
//! where it is), until no box changes centre or [`MAX_ITERATIONS`] rounds. Arithmetic is in
//! `f64`.
//!
//! Errors, not panics: `k = 0`, fewer boxes (or fewer distinct sizes) than `k`, a size that is
//! not positive and finite.

use crate::data::rng::Rng;

/// The stream tag of the k-means++ initialization.
const TAG: u64 = 0x414e_4348_4f52_5331; // "ANCHORS1"

/// The most rounds of Lloyd's iterations.
pub const MAX_ITERATIONS: usize = 1000;

/// The anchors k-means found.
#[derive(Debug, Clone, PartialEq)]
pub struct AnchorFit {
    /// `k` anchors `(w, h)`, by increasing area (then width).
    pub anchors: Vec<[f32; 2]>,
    /// The mean over boxes of the highest IoU with an anchor (in `(0, 1]`).
    pub mean_iou: f64,
    /// Rounds of assignment run.
    pub iterations: usize,
    /// Whether the assignment stopped changing before [`MAX_ITERATIONS`].
    pub converged: bool,
}

/// IoU of two sizes `(w, h)` aligned at a corner.
pub fn wh_iou(a: [f64; 2], b: [f64; 2]) -> f64 {
    let inter = a[0].min(b[0]) * a[1].min(b[1]);
    inter / (a[0] * a[1] + b[0] * b[1] - inter)
}

/// `k` anchors for the box `sizes` by k-means on `1 − IoU` (see the module documentation).
pub fn kmeans_anchors(sizes: &[[f32; 2]], k: usize, seed: u64) -> Result<AnchorFit, String> {
    if k == 0 {
        return Err("k is 0: ask for at least one anchor".into());
    }
    if let Some((i, [w, h])) = sizes
        .iter()
        .enumerate()
        .find(|(_, [w, h])| !(w.is_finite() && h.is_finite() && *w > 0.0 && *h > 0.0))
    {
        return Err(format!(
            "box {i} has size {w} × {h}; k-means needs positive, finite widths and heights \
             (drop empty boxes from the labels)"
        ));
    }
    if sizes.len() < k {
        return Err(format!(
            "{} boxes for {k} anchors: k-means needs at least as many boxes as anchors (use a \
             smaller k or more data)",
            sizes.len()
        ));
    }
    let boxes: Vec<[f64; 2]> = sizes
        .iter()
        .map(|&[w, h]| [f64::from(w), f64::from(h)])
        .collect();
    let distinct = {
        let mut s = sizes.to_vec();
        s.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
        s.dedup();
        s.len()
    };
    if distinct < k {
        return Err(format!(
            "{} boxes but only {distinct} distinct sizes for {k} anchors: k-means needs at least \
             k different sizes (use a smaller k)",
            sizes.len()
        ));
    }
    let mut centres = kmeans_pp(&boxes, k, &mut Rng::from_words(&[seed, TAG]));
    let mut assignment = vec![usize::MAX; boxes.len()];
    let mut iterations = 0;
    let mut converged = false;
    while iterations < MAX_ITERATIONS {
        iterations += 1;
        let mut changed = false;
        for (b, slot) in boxes.iter().zip(assignment.iter_mut()) {
            let best = nearest(*b, &centres).0;
            changed |= *slot != best;
            *slot = best;
        }
        if !changed {
            converged = true;
            break;
        }
        let mut sums = vec![[0.0f64; 3]; k];
        for (b, &c) in boxes.iter().zip(&assignment) {
            sums[c][0] += b[0];
            sums[c][1] += b[1];
            sums[c][2] += 1.0;
        }
        for (centre, [sw, sh, n]) in centres.iter_mut().zip(sums) {
            if n > 0.0 {
                *centre = [sw / n, sh / n];
            }
        }
    }
    let mean_iou = mean_nearest(&boxes, &centres);
    centres.sort_by(|a, b| {
        (a[0] * a[1])
            .total_cmp(&(b[0] * b[1]))
            .then(a[0].total_cmp(&b[0]))
    });
    Ok(AnchorFit {
        anchors: centres.iter().map(|&[w, h]| [w as f32, h as f32]).collect(),
        mean_iou,
        iterations,
        converged,
    })
}

/// The mean over box sizes `sizes` of the IoU with their best anchor of `anchors` (both
/// `(w, h)`, aligned at a corner): how well the anchors fit the data.
pub fn mean_best_iou(sizes: &[[f32; 2]], anchors: &[[f32; 2]]) -> f64 {
    let f = |v: &[[f32; 2]]| -> Vec<[f64; 2]> {
        v.iter()
            .map(|&[w, h]| [f64::from(w), f64::from(h)])
            .collect()
    };
    mean_nearest(&f(sizes), &f(anchors))
}

fn mean_nearest(boxes: &[[f64; 2]], centres: &[[f64; 2]]) -> f64 {
    boxes.iter().map(|&b| nearest(b, centres).1).sum::<f64>() / boxes.len().max(1) as f64
}

/// The centre of highest IoU with `b` (the first on ties) and that IoU.
fn nearest(b: [f64; 2], centres: &[[f64; 2]]) -> (usize, f64) {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, &c) in centres.iter().enumerate() {
        let o = wh_iou(b, c);
        if o > best.1 {
            best = (i, o);
        }
    }
    best
}

/// k-means++ seeding with distance `1 − IoU`: `k` boxes, the first uniform, each next one
/// with probability proportional to its squared distance to the nearest chosen box. Needs at
/// least `k` distinct sizes.
fn kmeans_pp(boxes: &[[f64; 2]], k: usize, rng: &mut Rng) -> Vec<[f64; 2]> {
    let mut centres = vec![boxes[rng.below(boxes.len() as u64) as usize]];
    let mut d2: Vec<f64> = boxes
        .iter()
        .map(|&b| (1.0 - wh_iou(b, centres[0])).powi(2))
        .collect();
    while centres.len() < k {
        let total: f64 = d2.iter().sum();
        let pick = if total > 0.0 {
            let target = rng.uniform() * total;
            let mut acc = 0.0;
            // The last box of positive weight if rounding runs past the end.
            let mut pick = d2.iter().rposition(|&d| d > 0.0).unwrap_or(0);
            for (i, &d) in d2.iter().enumerate() {
                acc += d;
                if d > 0.0 && acc > target {
                    pick = i;
                    break;
                }
            }
            pick
        } else {
            // Only sizes equal (to rounding) to chosen centres are left: the first other one.
            boxes.iter().position(|b| !centres.contains(b)).unwrap_or(0)
        };
        let c = boxes[pick];
        centres.push(c);
        for (d, &b) in d2.iter_mut().zip(boxes) {
            *d = d.min((1.0 - wh_iou(b, c)).powi(2));
        }
    }
    centres
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wh_iou_of_nested_sizes() {
        assert_eq!(wh_iou([2.0, 2.0], [1.0, 1.0]), 0.25);
        assert_eq!(wh_iou([2.0, 1.0], [1.0, 2.0]), 1.0 / 3.0);
        assert_eq!(wh_iou([3.0, 5.0], [3.0, 5.0]), 1.0);
    }

    #[test]
    fn bad_input_is_an_error() {
        let sizes = [[1.0, 2.0], [2.0, 1.0], [3.0, 3.0]];
        assert!(kmeans_anchors(&sizes, 0, 0).unwrap_err().contains("k is 0"));
        assert!(
            kmeans_anchors(&sizes, 4, 0)
                .unwrap_err()
                .contains("3 boxes for 4")
        );
        let e = kmeans_anchors(&[[1.0, 0.0], [1.0, 1.0]], 1, 0).unwrap_err();
        assert!(e.contains("box 0 has size 1 × 0"), "{e}");
        assert!(kmeans_anchors(&[[f32::NAN, 1.0]], 1, 0).is_err());
        let e = kmeans_anchors(&[[1.0, 1.0], [1.0, 1.0], [2.0, 2.0]], 3, 0).unwrap_err();
        assert!(e.contains("only 2 distinct sizes"), "{e}");
    }
}
