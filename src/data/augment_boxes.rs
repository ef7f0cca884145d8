//! Annotated objects through an augmentation: the boxes of detection data follow the pixels.
//!
//! In: a [`Step`] drawn for an image of shape `[C, H, W]` and that image's objects (boxes as
//! fractions of the image, netc's YOLO convention). Out: the objects of the augmented image.
//! Flips mirror the boxes; crops (padded or resized) shift and scale them; an affine map
//! (rotation, translation, scale, shear) takes each box to the bounding box of its four mapped
//! corners (what torchvision's `transforms.v2` does with bounding boxes). Boxes are then
//! clipped to the image, and an object whose clipped box is narrower or lower than one pixel is
//! dropped (torchvision's `SanitizeBoundingBoxes` rule, `min_size=1`). Colour steps leave the
//! objects as they are.
//!
//! Landmarks are not mapped: a flip turns a left eye into a right one, which only the data's
//! author can pair up, so the loader refuses geometric augmentation on data with landmarks.
//!
//! Coordinates: a box's `x` in pixels runs over `[0, W]` (pixel `i` covers `[i, i + 1)`); the
//! transforms of [`super::transform`] index pixel centres, `x − ½`.

use super::augment::Step;
use crate::detect::Object;

/// A map of pixel-space points `(x, y)` of the original image to the augmented one.
type PointMap = Box<dyn Fn(f64, f64) -> (f64, f64)>;

/// Where the pixel-space point `(x, y)` of the original image lands in the augmented one,
/// for a `h × w` image; `None` for steps that move no pixel.
fn point_map(step: &Step, h: usize, w: usize) -> Option<PointMap> {
    let (hf, wf) = (h as f64, w as f64);
    match *step {
        Step::Keep | Step::Color(_) | Step::Lighting(_) => None,
        Step::HFlip => Some(Box::new(move |x, y| (wf - x, y))),
        Step::VFlip => Some(Box::new(move |x, y| (x, hf - y))),
        Step::PadCrop {
            pad,
            top,
            left,
            size: (sh, sw),
        } => {
            let (dx, dy) = (pad as f64 - left as f64, pad as f64 - top as f64);
            let (kx, ky) = (wf / sw as f64, hf / sh as f64);
            Some(Box::new(move |x, y| ((x + dx) * kx, (y + dy) * ky)))
        }
        Step::ResizedCrop {
            top,
            left,
            size: (sh, sw),
        } => {
            let (kx, ky) = (wf / sw as f64, hf / sh as f64);
            let (l, t) = (left as f64, top as f64);
            Some(Box::new(move |x, y| ((x - l) * kx, (y - t) * ky)))
        }
        Step::Affine(ref p) => {
            // The transform maps output pixel centres to input ones (relative to the centre):
            // input = A·output + t. Boxes need the other direction: output = A⁻¹(input − t).
            let m = p.inverse_matrix();
            let det = m[0] * m[4] - m[1] * m[3];
            if det.abs() < 1e-12 || !det.is_finite() {
                return Some(Box::new(|_, _| (f64::NAN, f64::NAN)));
            }
            let inv = [m[4] / det, -m[1] / det, -m[3] / det, m[0] / det];
            let (cx, cy) = ((wf - 1.0) / 2.0, (hf - 1.0) / 2.0);
            Some(Box::new(move |x, y| {
                let (ix, iy) = (x - 0.5 - cx - m[2], y - 0.5 - cy - m[5]);
                let ox = inv[0] * ix + inv[1] * iy;
                let oy = inv[2] * ix + inv[3] * iy;
                (ox + cx + 0.5, oy + cy + 0.5)
            }))
        }
    }
}

/// Maps `objects` (of an `h × w` image) through `step`, in place: see the module
/// documentation.
pub fn map_objects(step: &Step, objects: &mut Vec<Object>, h: usize, w: usize) {
    let Some(f) = point_map(step, h, w) else {
        return;
    };
    let (hf, wf) = (h as f64, w as f64);
    objects.retain_mut(|o| {
        let [x1, y1, x2, y2] = o.xyxy().map(f64::from);
        let corners = [
            f(x1 * wf, y1 * hf),
            f(x2 * wf, y1 * hf),
            f(x1 * wf, y2 * hf),
            f(x2 * wf, y2 * hf),
        ];
        let lo_x = corners.iter().map(|c| c.0).fold(f64::INFINITY, f64::min);
        let hi_x = corners
            .iter()
            .map(|c| c.0)
            .fold(f64::NEG_INFINITY, f64::max);
        let lo_y = corners.iter().map(|c| c.1).fold(f64::INFINITY, f64::min);
        let hi_y = corners
            .iter()
            .map(|c| c.1)
            .fold(f64::NEG_INFINITY, f64::max);
        let (a, b) = (lo_x.clamp(0.0, wf), hi_x.clamp(0.0, wf));
        let (c, d) = (lo_y.clamp(0.0, hf), hi_y.clamp(0.0, hf));
        // NaN fails both comparisons: a degenerate map drops the object.
        if !(b - a >= 1.0 && d - c >= 1.0) {
            return false;
        }
        o.cx = ((a + b) / 2.0 / wf) as f32;
        o.cy = ((c + d) / 2.0 / hf) as f32;
        o.w = ((b - a) / wf) as f32;
        o.h = ((d - c) / hf) as f32;
        true
    });
}
