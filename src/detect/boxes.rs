//! Boxes: coordinate conversion, intersection over union, and non-maximum suppression.
//!
//! In: boxes as corners [`Xyxy`] (any unit, the same for all), scores, class indices. Out:
//! IoU values and the indices of the boxes NMS keeps. The semantics are torchvision's
//! (`torchvision.ops.box_iou`, `nms`, `batched_nms`, 0.29), checked against it on stored cases
//! (`tests/detect_post.rs`):
//! - A box's area is `(x2 − x1)·(y2 − y1)`, not clamped (as torchvision); the intersection's
//!   sides are clamped at 0. IoU is `inter / (area_a + area_b − inter)` in `f32`, in that
//!   order. Two zero-area boxes that touch have IoU `0 / 0 = NaN`, as in torchvision; a
//!   zero-area box against a box with area has IoU 0. A NaN coordinate makes the IoU NaN.
//! - NMS visits boxes by decreasing score (a stable sort: equal scores keep their input
//!   order; NaN counts as larger than every number, as `torch.sort` does), keeps a box unless
//!   an already kept box has IoU strictly greater than the threshold with it, and returns the
//!   kept indices in visiting order. A NaN IoU never suppresses, so a box with a NaN
//!   coordinate is always kept and never suppresses another.
//! - Batched (per-class) NMS is the same with suppression only between boxes of one class.
//!
//! Nothing here panics on any values; mismatched lengths are an `Err`.

use std::cmp::Ordering;

use super::Xyxy;

/// `[cx, cy, w, h]` (centre and size) as corners `[x1, y1, x2, y2]`.
pub fn cxcywh_to_xyxy([cx, cy, w, h]: [f32; 4]) -> Xyxy {
    [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
}

/// Corners `[x1, y1, x2, y2]` as `[cx, cy, w, h]` (centre and size).
pub fn xyxy_to_cxcywh([x1, y1, x2, y2]: Xyxy) -> [f32; 4] {
    [(x1 + x2) / 2.0, (y1 + y2) / 2.0, x2 - x1, y2 - y1]
}

/// A box in fractions of an image as pixels of a `width × height` image (what `netc detect`
/// writes), or any rescaling of x by `width` and y by `height`.
pub fn scale_box([x1, y1, x2, y2]: Xyxy, width: f32, height: f32) -> Xyxy {
    [x1 * width, y1 * height, x2 * width, y2 * height]
}

/// The box's area `(x2 − x1)·(y2 − y1)`, negative for an inverted box (as torchvision).
pub fn area(b: &Xyxy) -> f32 {
    (b[2] - b[0]) * (b[3] - b[1])
}

/// The intersection of `a` and `b` (0 when they do not overlap). A NaN coordinate may be
/// dropped here by `f32::min`/`max`, but it makes its box's area NaN, hence the IoU.
fn intersection(a: &Xyxy, b: &Xyxy) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    w * h
}

/// `inter / (area_a + area_b − inter)`, torchvision's order of operations.
fn iou_with_areas(a: &Xyxy, b: &Xyxy, area_a: f32, area_b: f32) -> f32 {
    let inter = intersection(a, b);
    inter / (area_a + area_b - inter)
}

/// Intersection over union of two boxes (see the module documentation for zero-area boxes).
pub fn iou(a: &Xyxy, b: &Xyxy) -> f32 {
    iou_with_areas(a, b, area(a), area(b))
}

/// The IoU of every box of `a` with every box of `b`: row-major `|a| × |b|`, entry
/// `i·|b| + j` is `iou(a[i], b[j])` (torchvision's `box_iou`).
pub fn box_iou(a: &[Xyxy], b: &[Xyxy]) -> Vec<f32> {
    let areas_b: Vec<f32> = b.iter().map(area).collect();
    let mut out = Vec::with_capacity(a.len() * b.len());
    for x in a {
        let area_x = area(x);
        out.extend(
            b.iter()
                .zip(&areas_b)
                .map(|(y, &ay)| iou_with_areas(x, y, area_x, ay)),
        );
    }
    out
}

/// Non-maximum suppression (torchvision's `nms`): the indices of the boxes kept, by
/// decreasing score. Boxes overlapping a kept box of higher score with IoU greater than
/// `iou_threshold` are dropped. Errors when `boxes` and `scores` differ in length.
pub fn nms(boxes: &[Xyxy], scores: &[f32], iou_threshold: f32) -> Result<Vec<usize>, String> {
    same_len(boxes.len(), scores.len(), "scores")?;
    Ok(greedy(
        boxes.len(),
        |i| scores[i],
        |i| boxes[i],
        |_, _| true,
        iou_threshold,
        None,
    ))
}

/// Per-class non-maximum suppression (torchvision's `batched_nms`): as [`nms`], but a box
/// only suppresses boxes of its own class. The kept indices are in decreasing score over
/// all classes. Errors when the three slices differ in length.
pub fn batched_nms(
    boxes: &[Xyxy],
    scores: &[f32],
    classes: &[usize],
    iou_threshold: f32,
) -> Result<Vec<usize>, String> {
    same_len(boxes.len(), scores.len(), "scores")?;
    same_len(boxes.len(), classes.len(), "classes")?;
    Ok(greedy(
        boxes.len(),
        |i| scores[i],
        |i| boxes[i],
        |i, j| classes[i] == classes[j],
        iou_threshold,
        None,
    ))
}

/// Per-class NMS over detections: the indices of `detections` kept, by decreasing score
/// ([`batched_nms`] on their boxes, scores and classes), at most `max_kept` of them (the same
/// as cutting the whole result, found sooner).
pub fn nms_detections(
    detections: &[super::Detection],
    iou_threshold: f32,
    max_kept: Option<usize>,
) -> Vec<usize> {
    greedy(
        detections.len(),
        |i| detections[i].score,
        |i| detections[i].bbox,
        |i, j| detections[i].class == detections[j].class,
        iou_threshold,
        max_kept,
    )
}

/// Orders by decreasing score, NaN first (torch's sort counts NaN as the largest value).
pub fn by_score_desc(a: f32, b: f32) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
    }
}

/// Greedy NMS as torchvision's CPU kernel decides it: visiting boxes by decreasing score, a
/// box is kept unless a kept box it is `related` to (same class, or always) overlaps it with
/// IoU above the threshold. Checking each box against the kept ones (rather than each kept box
/// against all later ones) gives the same boxes and lets the loop stop after `max_kept`:
/// O(n · kept) instead of O(n²).
fn greedy(
    n: usize,
    score: impl Fn(usize) -> f32,
    bbox: impl Fn(usize) -> Xyxy,
    related: impl Fn(usize, usize) -> bool,
    iou_threshold: f32,
    max_kept: Option<usize>,
) -> Vec<usize> {
    let limit = max_kept.unwrap_or(usize::MAX);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| by_score_desc(score(i), score(j)));
    let mut keep: Vec<usize> = Vec::new();
    let mut kept: Vec<(Xyxy, f32)> = Vec::new();
    for i in order {
        if keep.len() >= limit {
            break;
        }
        let b = bbox(i);
        let a = area(&b);
        let suppressed = keep
            .iter()
            .zip(&kept)
            .any(|(&k, (kb, ka))| related(k, i) && iou_with_areas(kb, &b, *ka, a) > iou_threshold);
        if !suppressed {
            keep.push(i);
            kept.push((b, a));
        }
    }
    keep
}

fn same_len(boxes: usize, other: usize, what: &str) -> Result<(), String> {
    if boxes == other {
        Ok(())
    } else {
        Err(format!(
            "{boxes} boxes but {other} {what}: NMS needs one score and one class per box"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_trip() {
        let b = [0.5, 0.25, 0.5, 0.25];
        let c = cxcywh_to_xyxy(b);
        assert_eq!(c, [0.25, 0.125, 0.75, 0.375]);
        assert_eq!(xyxy_to_cxcywh(c), b);
        assert_eq!(scale_box(c, 96.0, 64.0), [24.0, 8.0, 72.0, 24.0]);
    }

    #[test]
    fn iou_of_halves() {
        assert_eq!(iou(&[0.0, 0.0, 2.0, 1.0], &[0.0, 0.0, 1.0, 1.0]), 0.5);
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[2.0, 2.0, 3.0, 3.0]), 0.0);
        assert!(iou(&[1.0, 1.0, 1.0, 1.0], &[1.0, 1.0, 1.0, 1.0]).is_nan());
        assert!(iou(&[0.0, 0.0, f32::NAN, 1.0], &[0.0, 0.0, 1.0, 1.0]).is_nan());
    }

    #[test]
    fn mismatched_lengths_are_errors() {
        let e = nms(&[[0.0; 4]], &[], 0.5).unwrap_err();
        assert!(e.contains("1 boxes but 0 scores"), "{e}");
        assert!(batched_nms(&[[0.0; 4]], &[1.0], &[], 0.5).is_err());
    }
}
