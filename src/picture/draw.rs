//! Detections drawn on an image: a rectangle per box in its class's colour and a label
//! "name 0.87" on a strip of that colour, above the box (inside it when the box touches the
//! top).
//!
//! In: the image as a [`Tile`] (with its [`Normalize`] rule), [`Detection`]s with boxes as
//! fractions of the image (netc's convention), and class names (a class without a name is
//! shown by its number). Out: row-major RGB bytes with width and height
//! ([`render_detections`]), or a PNG file written atomically ([`write_detections`]).
//!
//! An image whose longer side is under [`MIN_DRAW_SIDE`] pixels is enlarged by a whole factor
//! (nearest neighbour, at most [`super::MAX_UPSCALE`]) first, so that labels are readable on a
//! 96×96 input. A box covers the pixels from `round(x1·W)` to `round(x2·W) − 1` (and the same
//! vertically) of the enlarged picture, clipped to it; its outline is [`BOX_LINE`] pixels wide,
//! inside that range. Boxes with a non-finite coordinate, or entirely outside the image, are
//! not drawn. Lower scores are drawn first, so the best box is on top.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{MAX_UPSCALE, Normalize, Tile, check_png_name, check_size, render_image, write_png};
use crate::detect::Detection;
use crate::detect::boxes::by_score_desc;
use crate::io::IoError;

/// Images smaller than this on their longer side are enlarged before drawing.
pub const MIN_DRAW_SIDE: usize = 384;
/// Width of a box's outline in pixels (of the enlarged picture).
pub const BOX_LINE: usize = 2;
/// Height of a label's strip in pixels.
pub const BOX_LABEL_HEIGHT: usize = 16;

const BOX_FONT_PX: f64 = 12.0;

/// Distinct colours for classes (Sasha Trubetskoy's list), repeated past ten classes.
const PALETTE: [[u8; 3]; 10] = [
    [230, 25, 75],
    [60, 180, 75],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [210, 245, 60],
    [0, 128, 128],
    [170, 110, 40],
];

/// The colour of class `class`'s boxes.
pub fn class_colour(class: usize) -> [u8; 3] {
    PALETTE[class % PALETTE.len()]
}

/// Writes `image` with `detections` drawn on it to the PNG `path` (see the module
/// documentation).
pub fn write_detections(
    path: &Path,
    image: &Tile,
    normalize: Normalize,
    detections: &[Detection],
    class_names: &[String],
) -> Result<(), IoError> {
    check_png_name(path)?;
    let (rgb, w, h) = render_detections(image, normalize, detections, class_names)
        .map_err(|m| IoError::new(path, m))?;
    write_png(path, &rgb, w, h)
}

/// The picture [`write_detections`] writes, as row-major RGB bytes with its width and height.
pub fn render_detections(
    image: &Tile,
    normalize: Normalize,
    detections: &[Detection],
    class_names: &[String],
) -> Result<(Vec<u8>, u32, u32), String> {
    let scale = draw_scale(image.width, image.height);
    let (w, h) = (image.width * scale, image.height * scale);
    check_size(w as u64, h as u64, "the enlarged image")?;
    let (small, _, _) = render_image(image, normalize)?;
    let mut buf = super::try_canvas(w, h)?;
    for y in 0..h {
        for x in 0..w {
            let k = (y / scale) * image.width + x / scale;
            buf[(y * w + x) * 3..][..3].copy_from_slice(&small[k * 3..k * 3 + 3]);
        }
    }
    let mut order: Vec<&Detection> = detections.iter().collect();
    order.sort_by(|a, b| by_score_desc(b.score, a.score));
    let placed: Vec<(&Detection, Rect)> = order
        .into_iter()
        .filter_map(|d| box_pixels(d, w, h).map(|r| (d, r)))
        .collect();
    for (d, r) in &placed {
        outline(&mut buf, w, r, class_colour(d.class));
    }
    if placed.is_empty() {
        return Ok((buf, w as u32, h as u32));
    }
    crate::plot::register_font().map_err(|e| e.to_string())?;
    let font: FontDesc<'_> = (crate::plot::FONT, BOX_FONT_PX).into_font();
    let area = BitMapBackend::with_buffer(&mut buf, (w as u32, h as u32)).into_drawing_area();
    for (d, r) in &placed {
        let name = match class_names.get(d.class) {
            Some(n) => crate::diag::escape_controls(n).into_owned(),
            None => d.class.to_string(),
        };
        let text = super::fit_label(&font, &format!("{name} {:.2}", d.score), w.max(4) - 4);
        let label_w = (super::text_width(&font, &text) + 4).min(w);
        let top = if r.top >= BOX_LABEL_HEIGHT {
            r.top - BOX_LABEL_HEIGHT
        } else {
            r.top
        };
        let left = r.left.min(w - label_w);
        let [cr, cg, cb] = class_colour(d.class);
        let fill = RGBColor(cr, cg, cb);
        let bottom = (top + BOX_LABEL_HEIGHT).min(h) - 1;
        area.draw(&Rectangle::new(
            [
                (left as i32, top as i32),
                ((left + label_w - 1) as i32, bottom as i32),
            ],
            fill.filled(),
        ))
        .map_err(|e| format!("cannot draw a label: {e}"))?;
        let luma = 0.299 * f64::from(cr) + 0.587 * f64::from(cg) + 0.114 * f64::from(cb);
        let ink = if luma > 140.0 { BLACK } else { WHITE };
        let style = font.color(&ink).pos(Pos::new(HPos::Left, VPos::Center));
        let at = ((left + 2) as i32, (top + BOX_LABEL_HEIGHT / 2) as i32);
        area.draw(&Text::new(text, at, style))
            .map_err(|e| format!("cannot draw a label: {e}"))?;
    }
    area.present()
        .map_err(|e| format!("cannot draw the labels: {e}"))?;
    drop(area);
    Ok((buf, w as u32, h as u32))
}

/// The enlargement factor for an image of `width × height` pixels.
pub fn draw_scale(width: usize, height: usize) -> usize {
    MIN_DRAW_SIDE
        .div_ceil(width.max(height).max(1))
        .clamp(1, MAX_UPSCALE)
}

/// A box in pixels: columns `left..=right`, rows `top..=bottom`.
#[derive(Debug, Clone, Copy)]
struct Rect {
    left: usize,
    top: usize,
    right: usize,
    bottom: usize,
}

/// The pixels of `d`'s box in a `w × h` picture, clipped; `None` if it has a non-finite
/// coordinate or lies outside.
fn box_pixels(d: &Detection, w: usize, h: usize) -> Option<Rect> {
    if d.bbox.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let [x1, y1, x2, y2] = d.bbox.map(f64::from);
    let span = |a: f64, b: f64, n: usize| -> Option<(usize, usize)> {
        let (lo, hi) = ((a.min(b) * n as f64).round(), (a.max(b) * n as f64).round());
        if hi <= 0.0 || lo >= n as f64 {
            return None;
        }
        let lo = lo.max(0.0) as usize;
        let hi = ((hi as usize).min(n) - 1).max(lo);
        Some((lo, hi))
    };
    let (left, right) = span(x1, x2, w)?;
    let (top, bottom) = span(y1, y2, h)?;
    Some(Rect {
        left,
        top,
        right,
        bottom,
    })
}

/// The outline of `r`, [`BOX_LINE`] pixels wide inside it.
fn outline(buf: &mut [u8], width: usize, r: &Rect, colour: [u8; 3]) {
    for y in r.top..=r.bottom {
        for x in r.left..=r.right {
            let edge = x < r.left + BOX_LINE
                || x + BOX_LINE > r.right
                || y < r.top + BOX_LINE
                || y + BOX_LINE > r.bottom;
            if edge {
                buf[(y * width + x) * 3..][..3].copy_from_slice(&colour);
            }
        }
    }
}
