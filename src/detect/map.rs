//! Mean average precision, VOC-style (mAP@0.5 by default).
//!
//! In: per image, its [`Detection`]s and its ground-truth [`Object`]s (both as fractions of
//! the image), the number of classes and an IoU threshold. Out: [`MeanAp`], the AP of every
//! class and their mean.
//!
//! The rules are the PASCAL VOC devkit's (`VOCevaldet.m`, and `voc_eval` / `voc_ap` with
//! `use_07_metric=False` in its Python ports), checked against a transcription of them on
//! stored cases (`tests/detect_post.rs`):
//! - Per class, the detections of all images are visited by decreasing score (a stable sort:
//!   equal scores in image order, then in each image's order; NaN scores last).
//! - A detection is compared with the ground-truth boxes of its class in its image; the one of
//!   highest IoU (the first on ties) is its match if that IoU is at least the threshold. A
//!   match not yet taken makes a true positive and is taken; a match already taken, or none,
//!   makes a false positive (the devkit's rule: a duplicate does not fall back to another
//!   box).
//! - AP is the area under the precision–recall curve after making precision monotonically
//!   decreasing (all-point interpolation, VOC2010 and later).
//! - Differences from the devkit, deliberately: no "difficult" flags (the YOLO format has
//!   none), and IoU without the devkit's `+1` pixel on widths and heights (boxes here are
//!   fractions of the image, as in torchvision's and COCO's evaluators).
//! - A class with no ground truth in any image has no AP (`None`) and is left out of the
//!   mean; a class with ground truth but no detections has AP 0 and counts. With no ground
//!   truth at all, the mean is `None`.
//!
//! Detections for mAP come from [`super::decode::decode`] with
//! [`super::decode::DecodeOptions::for_map`] (a low score threshold, so that the curve reaches
//! high recall).

use super::boxes::iou;
use super::{Detection, Object, Xyxy};

/// The IoU threshold of mAP@0.5.
pub const MAP50_IOU: f32 = 0.5;

/// What [`mean_average_precision`] measures.
#[derive(Debug, Clone, PartialEq)]
pub struct MeanAp {
    /// AP of each class (`num_classes` entries); `None` for a class without ground truth.
    pub per_class: Vec<Option<f64>>,
    /// Ground-truth boxes of each class over all images.
    pub ground_truth: Vec<usize>,
    /// The mean of the classes' APs that are `Some`; `None` if no class has ground truth.
    pub map: Option<f64>,
}

/// VOC mAP over images: `detections[i]` and `truth[i]` belong to image `i` (so the two have
/// the same length). Errors on different lengths and on a class index not below
/// `num_classes`, naming the image.
pub fn mean_average_precision<D, T>(
    detections: &[D],
    truth: &[T],
    num_classes: usize,
    iou_threshold: f32,
) -> Result<MeanAp, String>
where
    D: AsRef<[Detection]>,
    T: AsRef<[Object]>,
{
    if detections.len() != truth.len() {
        return Err(format!(
            "detections for {} images but ground truth for {}: mAP needs both for every image",
            detections.len(),
            truth.len()
        ));
    }
    for (i, (d, t)) in detections.iter().zip(truth).enumerate() {
        let bad = d.as_ref().iter().map(|d| d.class);
        let bad = bad.chain(t.as_ref().iter().map(|o| o.class));
        if let Some(c) = bad.into_iter().find(|&c| c >= num_classes) {
            return Err(format!(
                "image {i} has class {c}, but there are {num_classes} classes (0..{num_classes})"
            ));
        }
    }
    // Ground-truth boxes by class and image, converted once.
    let mut gt: Vec<Vec<Vec<Xyxy>>> = vec![vec![Vec::new(); truth.len()]; num_classes];
    for (i, t) in truth.iter().enumerate() {
        for o in t.as_ref() {
            gt[o.class][i].push(o.xyxy());
        }
    }
    let mut per_class = Vec::with_capacity(num_classes);
    let mut ground_truth = Vec::with_capacity(num_classes);
    for (class, boxes) in gt.iter().enumerate() {
        let npos: usize = boxes.iter().map(Vec::len).sum();
        ground_truth.push(npos);
        if npos == 0 {
            per_class.push(None);
            continue;
        }
        // (image, detection) of this class, in input order, then stably by score.
        let mut dets: Vec<(usize, &Detection)> = detections
            .iter()
            .enumerate()
            .flat_map(|(i, d)| d.as_ref().iter().map(move |d| (i, d)))
            .filter(|(_, d)| d.class == class)
            .collect();
        dets.sort_by(|a, b| nan_last_desc(a.1.score, b.1.score));
        let mut taken: Vec<Vec<bool>> = boxes.iter().map(|b| vec![false; b.len()]).collect();
        let mut tp = Vec::with_capacity(dets.len());
        for (image, d) in dets {
            let best = best_match(&d.bbox, &boxes[image]);
            let hit = match best {
                Some((j, overlap)) if overlap >= iou_threshold && !taken[image][j] => {
                    taken[image][j] = true;
                    true
                }
                _ => false,
            };
            tp.push(hit);
        }
        per_class.push(Some(average_precision(&tp, npos)));
    }
    let aps: Vec<f64> = per_class.iter().flatten().copied().collect();
    let map = (!aps.is_empty()).then(|| aps.iter().sum::<f64>() / aps.len() as f64);
    Ok(MeanAp {
        per_class,
        ground_truth,
        map,
    })
}

/// The ground-truth box of highest IoU with `b` (the first on ties; NaN IoUs never win) and
/// that IoU, or `None` when there is no box.
fn best_match(b: &Xyxy, truth: &[Xyxy]) -> Option<(usize, f32)> {
    let mut best: Option<(usize, f32)> = None;
    for (j, t) in truth.iter().enumerate() {
        let o = iou(b, t);
        let better = match best {
            None => !o.is_nan(),
            Some((_, m)) => o > m,
        };
        if better {
            best = Some((j, o));
        }
    }
    best
}

/// AP from the detections' hits (true positive or not) in visiting order and the number of
/// ground-truth boxes: the area under the precision envelope (`voc_ap`, all points).
pub fn average_precision(hits: &[bool], npos: usize) -> f64 {
    let mut recall = Vec::with_capacity(hits.len() + 2);
    let mut precision = Vec::with_capacity(hits.len() + 2);
    recall.push(0.0);
    precision.push(0.0);
    let (mut tp, mut fp) = (0usize, 0usize);
    for &hit in hits {
        if hit {
            tp += 1;
        } else {
            fp += 1;
        }
        recall.push(tp as f64 / npos as f64);
        precision.push(tp as f64 / ((tp + fp) as f64).max(f64::EPSILON));
    }
    recall.push(1.0);
    precision.push(0.0);
    for i in (1..precision.len()).rev() {
        precision[i - 1] = precision[i - 1].max(precision[i]);
    }
    (1..recall.len())
        .filter(|&i| recall[i] != recall[i - 1])
        .map(|i| (recall[i] - recall[i - 1]) * precision[i])
        .sum()
}

/// Decreasing score with NaN last (numpy's `argsort(-score)` puts NaN last).
fn nan_last_desc(a: f32, b: f32) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Equal,
        (true, false) => Greater,
        (false, true) => Less,
        (false, false) => b.partial_cmp(&a).unwrap_or(Equal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_area() {
        // Hits T F T with 2 boxes: recall 0.5, 0.5, 1; precision 1, 0.5, 2/3 → envelope
        // 1 on [0, 0.5], 2/3 on [0.5, 1].
        let ap = average_precision(&[true, false, true], 2);
        assert!((ap - (0.5 + 0.5 * 2.0 / 3.0)).abs() < 1e-12, "{ap}");
        assert_eq!(average_precision(&[], 3), 0.0);
    }

    #[test]
    fn bad_classes_and_lengths_are_errors() {
        let det = vec![Detection {
            class: 3,
            score: 0.5,
            bbox: [0.0, 0.0, 1.0, 1.0],
        }];
        let e = mean_average_precision(&[det], &[Vec::<Object>::new()], 2, 0.5).unwrap_err();
        assert!(e.contains("image 0 has class 3"), "{e}");
        let e = mean_average_precision::<Vec<Detection>, Vec<Object>>(&[], &[vec![]], 2, 0.5)
            .unwrap_err();
        assert!(e.contains("0 images"), "{e}");
    }
}
