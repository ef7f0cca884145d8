//! Decoding a YOLO grid head's output into detections.
//!
//! In: one image's head output ([`GridHead`]: `[A × (5 + C), S_h, S_w]` values, channel-major,
//! the anchors `(w, h)` in input pixels, the class count and the input's size) and
//! [`DecodeOptions`]. Out: [`Detection`]s with boxes as fractions of the image, by decreasing
//! score.
//!
//! Every cell and anchor gives one box by the formulas of [`crate::detect`]'s conventions, and
//! one candidate per class whose score `σ(t_obj) · softmax(t_cls)[c]` is strictly greater than
//! the score threshold (Darknet's rule: a box may be a candidate for several classes).
//! Candidates are made in the order row, column, anchor, class; boxes are clipped to the image
//! (`[0, 1]`) if asked; then per-class NMS ([`super::boxes::nms_detections`]) keeps the best
//! of overlapping boxes, and at most `max_detections` of the highest scores are returned.
//!
//! Cost: nothing is allocated per cell; a cell whose objectness is at most the threshold is
//! skipped before the softmax (no class score can exceed it). At most [`MAX_CANDIDATES`]
//! candidates (the highest scores) enter NMS, whose cost is candidates × detections kept
//! (it stops at `max_detections`).

use super::Detection;
use super::boxes::{by_score_desc, cxcywh_to_xyxy, nms_detections};

/// The most candidates that enter NMS (as Ultralytics' `max_nms`); the lowest scores beyond
/// it are dropped first.
pub const MAX_CANDIDATES: usize = 30_000;

/// One image's output of a grid head, with what it takes to read it.
#[derive(Debug, Clone, Copy)]
pub struct GridHead<'a> {
    /// `shape[0] × shape[1] × shape[2]` values, channel-major (`[channels, S_h, S_w]`).
    pub values: &'a [f32],
    /// `[channels, S_h, S_w]`; `channels` must be `anchors × (5 + num_classes)`.
    pub shape: [usize; 3],
    /// Anchor `(w, h)` in pixels of the model's input.
    pub anchors: &'a [[f32; 2]],
    pub num_classes: usize,
    /// The model input's `[width, height]` in pixels.
    pub input_size: [usize; 2],
}

/// What [`decode`] keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeOptions {
    /// A candidate's class score must be strictly greater than this.
    pub score_threshold: f32,
    /// NMS drops a box whose IoU with a better box of its class is greater than this.
    pub iou_threshold: f32,
    /// At most this many detections (the highest scores); `None`: all.
    pub max_detections: Option<usize>,
    /// Clip boxes to the image (`[0, 1]`) before NMS.
    pub clip: bool,
}

impl Default for DecodeOptions {
    /// Darknet's `detect` defaults (threshold 0.25, NMS 0.45), torchvision's 100 detections
    /// per image, boxes clipped.
    fn default() -> Self {
        DecodeOptions {
            score_threshold: 0.25,
            iou_threshold: 0.45,
            max_detections: Some(100),
            clip: true,
        }
    }
}

impl DecodeOptions {
    /// The options for measuring mAP: a low score threshold (Darknet's `map` uses 0.005), so
    /// that the precision–recall curve reaches high recall; NMS 0.45, 100 per image, clipped.
    pub fn for_map() -> Self {
        DecodeOptions {
            score_threshold: 0.005,
            ..DecodeOptions::default()
        }
    }
}

/// Checks that a head of `channels` channels fits `anchors` anchors and `num_classes`
/// classes (`channels = anchors × (5 + num_classes)`); the error says what was expected.
pub fn check_head(channels: usize, anchors: usize, num_classes: usize) -> Result<(), String> {
    if anchors == 0 {
        return Err("no anchors: a grid head needs at least one anchor (w, h)".into());
    }
    if num_classes == 0 {
        return Err("no classes: a grid head needs at least one class".into());
    }
    let per = num_classes.saturating_add(5);
    let want = anchors.saturating_mul(per);
    if channels == want {
        return Ok(());
    }
    let mut msg = format!(
        "the head has {channels} channels; {anchors} anchors × (5 + {num_classes} classes) = \
         {want} expected"
    );
    if channels.is_multiple_of(anchors) && channels / anchors > 5 {
        msg += &format!(
            " ({channels} channels with {anchors} anchors would be {} classes",
            channels / anchors - 5
        );
        if channels.is_multiple_of(per) {
            msg += &format!(", or {} anchors of {num_classes} classes", channels / per);
        }
        msg += ": make the spec's classes, anchors and the head's channels agree)";
    } else if channels.is_multiple_of(per) {
        msg += &format!(
            " ({channels} channels would be {} anchors of {num_classes} classes: give the \
             head as many anchors as it predicts)",
            channels / per
        );
    } else {
        msg += " (the head's last convolution needs anchors × (5 + classes) filters)";
    }
    Err(msg)
}

/// Checks a whole [`GridHead`]: the channels ([`check_head`]), the number of values, the
/// anchors (positive, finite) and the input size (positive).
pub fn check_grid_head(head: &GridHead<'_>) -> Result<(), String> {
    let [channels, sh, sw] = head.shape;
    check_head(channels, head.anchors.len(), head.num_classes)?;
    let want = channels.checked_mul(sh).and_then(|x| x.checked_mul(sw));
    if want != Some(head.values.len()) {
        return Err(format!(
            "the head's output has {} values but its shape [{channels}, {sh}, {sw}] needs {}",
            head.values.len(),
            want.map_or("more than can be counted".into(), |n| n.to_string())
        ));
    }
    if sh == 0 || sw == 0 {
        return Err(format!("the head's grid is empty ({sh} × {sw} cells)"));
    }
    for (i, &[w, h]) in head.anchors.iter().enumerate() {
        if !(w.is_finite() && h.is_finite() && w > 0.0 && h > 0.0) {
            return Err(format!(
                "anchor {i} is {w} × {h}; anchors are positive widths and heights in pixels of \
                 the model's input"
            ));
        }
    }
    let [iw, ih] = head.input_size;
    if iw == 0 || ih == 0 {
        return Err(format!(
            "the input size is {iw} × {ih}; anchors are converted by a positive width and height"
        ));
    }
    Ok(())
}

/// The detections of one image: every candidate above the score threshold, clipped if asked,
/// per-class NMS, at most `max_detections`, by decreasing score; boxes as fractions of the
/// image. Errors (from [`check_grid_head`]) when the head does not fit its description.
pub fn decode(head: &GridHead<'_>, options: &DecodeOptions) -> Result<Vec<Detection>, String> {
    check_grid_head(head)?;
    let [_, sh, sw] = head.shape;
    let classes = head.num_classes;
    let per = 5 + classes;
    let plane = sh * sw;
    let threshold = options.score_threshold;
    let [iw, ih] = head.input_size;
    let (iw, ih) = (iw as f32, ih as f32);
    let mut candidates = Vec::new();
    for row in 0..sh {
        for col in 0..sw {
            let cell = row * sw + col;
            for (a, &[aw, ah]) in head.anchors.iter().enumerate() {
                let at = |k: usize| head.values[(a * per + k) * plane + cell];
                let objectness = sigmoid(at(4));
                // Every class score is objectness × a probability ≤ 1 (also in floating
                // point), so no class can pass; NaN is skipped too.
                if objectness.is_nan() || objectness <= threshold {
                    continue;
                }
                let top = (0..classes).map(|c| at(5 + c)).fold(f32::MIN, f32::max);
                let total: f32 = (0..classes).map(|c| (at(5 + c) - top).exp()).sum();
                let cx = (col as f32 + sigmoid(at(0))) / sw as f32;
                let cy = (row as f32 + sigmoid(at(1))) / sh as f32;
                let w = aw / iw * at(2).exp();
                let h = ah / ih * at(3).exp();
                let mut bbox = cxcywh_to_xyxy([cx, cy, w, h]);
                if options.clip {
                    for v in &mut bbox {
                        *v = v.clamp(0.0, 1.0);
                    }
                }
                for class in 0..classes {
                    let score = objectness * ((at(5 + class) - top).exp() / total);
                    if score > threshold {
                        candidates.push(Detection { class, score, bbox });
                    }
                }
            }
        }
    }
    if candidates.len() > MAX_CANDIDATES {
        candidates.sort_by(|a, b| by_score_desc(a.score, b.score));
        candidates.truncate(MAX_CANDIDATES);
    }
    let keep = nms_detections(&candidates, options.iou_threshold, options.max_detections);
    Ok(keep.iter().map(|&i| candidates[i].clone()).collect())
}

/// The logistic function `1 / (1 + e^−x)`.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_mismatch_says_what_was_expected() {
        let e = check_head(45, 5, 3).unwrap_err();
        assert!(
            e.starts_with("the head has 45 channels; 5 anchors × (5 + 3 classes) = 40 expected"),
            "{e}"
        );
        assert!(e.contains("would be 4 classes"), "{e}");
        let e = check_head(24, 5, 3).unwrap_err();
        assert!(e.contains("would be 3 anchors of 3 classes"), "{e}");
        assert!(check_head(40, 5, 3).is_ok());
        assert!(check_head(40, 0, 3).is_err());
        assert!(check_head(5, 1, 0).is_err());
    }

    #[test]
    fn bad_heads_are_errors() {
        let values = vec![0.0; 8 * 2 * 2];
        let good = GridHead {
            values: &values,
            shape: [8, 2, 2],
            anchors: &[[10.0, 10.0]],
            num_classes: 3,
            input_size: [64, 64],
        };
        assert!(decode(&good, &DecodeOptions::default()).is_ok());
        let short = GridHead {
            values: &values[1..],
            ..good
        };
        assert!(check_grid_head(&short).unwrap_err().contains("31 values"));
        let bad_anchor = GridHead {
            anchors: &[[0.0, 10.0]],
            ..good
        };
        assert!(
            check_grid_head(&bad_anchor)
                .unwrap_err()
                .contains("anchor 0")
        );
        let no_input = GridHead {
            input_size: [0, 64],
            ..good
        };
        assert!(check_grid_head(&no_input).is_err());
    }
}
