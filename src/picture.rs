//! Pictures out: feature-map grids, heat maps, drawn samples and style results as PNG files.
//!
//! In: [`Tile`]s, each a planar `[C, H, W]` f32 image (`C` = 1 for gray, 3 for RGB) with a
//! label, and a [`Normalize`] rule that maps values to `[0, 1]`. Out: an 8-bit RGB PNG, written
//! atomically ([`crate::io::write_atomic`]): a reader sees the old file or the whole new one,
//! and an error leaves nothing behind. Every command that writes a picture goes through here.
//!
//! - [`write_grid`]: tiles laid out in a grid, each tile's label under it in the bundled
//!   DejaVu Sans (the font [`crate::plot`] uses; no system fonts). Cells are as large as the
//!   largest tile (smaller tiles are centred in theirs) and wide enough for the label, with
//!   [`GAP`] pixels of white between them and a thin gray frame around each tile, so that a
//!   white or black tile still shows its edges. Tiles whose longer side is under
//!   [`MIN_TILE_SIDE`] pixels are enlarged by a whole factor (nearest neighbour, the same factor
//!   for every tile, at most [`MAX_UPSCALE`]), so a 7×7 feature map is not a speck.
//!   `columns == 0` picks a near-square grid (`ceil(sqrt(n))` columns).
//! - [`write_image`]: one tile at its own size, pixel for pixel, no label.
//! - [`write_detections`]: one image with detection boxes and their labels drawn on it
//!   (`picture/draw.rs`).
//!
//! Values: [`Normalize::Clamp01`] clamps to `[0, 1]` (images that are already in that range);
//! [`Normalize::MinMaxPerTile`] maps each tile's smallest finite value to black and its largest
//! to white (all channels of a tile together, so colours keep their hue); [`Normalize::Heat`]
//! clamps one-channel tiles to `[0, 1]` and colours them by [`heat`] (score maps). A constant tile
//! (nothing to stretch) is drawn mid-gray (128). Infinities are not part of the range: `+inf`
//! draws white, `-inf` black. NaN is drawn magenta (255, 0, 255), whatever the rule, so it is
//! never hidden; in an RGB tile a NaN in any channel makes the pixel magenta.
//!
//! Bounds: the whole picture may have at most [`MAX_PIXELS`] pixels and [`MAX_SIDE`] pixels a
//! side; a larger request is refused before anything big is allocated. The file name must end
//! in `.png` (the only format written), so PNG bytes never sit under another extension.

use std::path::Path;

use image::ImageEncoder;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::io::IoError;

mod draw;
pub use draw::{
    BOX_LABEL_HEIGHT, BOX_LINE, MIN_DRAW_SIDE, class_colour, draw_scale, render_detections,
    write_detections,
};

/// One image of a picture: planar `[channels, height, width]` values and a caption.
#[derive(Debug, Clone, PartialEq)]
pub struct Tile {
    /// `channels × height × width` values, channel-major (`[C, H, W]`).
    pub pixels: Vec<f32>,
    /// 1 (gray) or 3 (RGB).
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Drawn under the tile in a grid (may be empty); ignored by [`write_image`].
    pub label: String,
}

/// How values become intensities in `[0, 1]` (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalize {
    /// Values are clamped to `[0, 1]`.
    Clamp01,
    /// Each tile's finite range is stretched to `[0, 1]`; a constant tile is mid-gray.
    MinMaxPerTile,
    /// One-channel tiles of values in `[0, 1]` (probabilities), clamped and coloured by the
    /// heat map [`heat`]: a score map per class.
    Heat,
}

/// The heat colour of `t` in `[0, 1]` (clamped): black, purple, red, orange, pale yellow,
/// linear between matplotlib's `inferno` at 0, ¼, ½, ¾ and 1.
pub fn heat(t: f32) -> [u8; 3] {
    const STOPS: [[f32; 3]; 5] = [
        [0.0, 0.0, 4.0],
        [87.0, 16.0, 110.0],
        [188.0, 55.0, 84.0],
        [249.0, 142.0, 9.0],
        [252.0, 255.0, 164.0],
    ];
    let x = t.clamp(0.0, 1.0) * 4.0;
    let i = (x.floor() as usize).min(3);
    let f = x - i as f32;
    let mut out = [0u8; 3];
    for (c, o) in out.iter_mut().enumerate() {
        *o = (STOPS[i][c] + (STOPS[i + 1][c] - STOPS[i][c]) * f).round() as u8;
    }
    out
}

/// The most pixels a picture may have (about 100 MiB of RGB).
pub const MAX_PIXELS: u64 = 1 << 25;
/// The longest side of a picture.
pub const MAX_SIDE: u64 = 32_768;
/// White space between cells and around the grid, in pixels.
pub const GAP: usize = 6;
/// Tiles smaller than this on their longer side are enlarged in a grid.
pub const MIN_TILE_SIDE: usize = 40;
/// The largest enlargement factor.
pub const MAX_UPSCALE: usize = 8;
/// Height of the label strip under each tile when any tile has a label.
pub const LABEL_HEIGHT: usize = 18;
/// Labels are cut (with "…") to at most this width in pixels.
pub const MAX_LABEL_WIDTH: usize = 200;
/// The colour of NaN values.
pub const NAN_RGB: [u8; 3] = [255, 0, 255];

const LABEL_FONT_PX: f64 = 13.0;
const BACKGROUND: [u8; 3] = [255, 255, 255];
const FRAME: [u8; 3] = [170, 170, 170];
const TEXT: RGBColor = RGBColor(34, 34, 34);

/// Writes `tiles` as a labelled grid of `columns` columns (0: near-square) to the PNG `path`.
pub fn write_grid(
    path: &Path,
    tiles: &[Tile],
    columns: usize,
    normalize: Normalize,
) -> Result<(), IoError> {
    check_png_name(path)?;
    let (rgb, w, h) = render_grid(tiles, columns, normalize).map_err(|m| IoError::new(path, m))?;
    write_png(path, &rgb, w, h)
}

/// Writes one `[C, H, W]` tile at its own size (one pixel per value) to the PNG `path`.
pub fn write_image(path: &Path, image: &Tile, normalize: Normalize) -> Result<(), IoError> {
    check_png_name(path)?;
    let (rgb, w, h) = render_image(image, normalize).map_err(|m| IoError::new(path, m))?;
    write_png(path, &rgb, w, h)
}

/// The grid [`write_grid`] writes, as row-major RGB bytes with its width and height.
pub fn render_grid(
    tiles: &[Tile],
    columns: usize,
    normalize: Normalize,
) -> Result<(Vec<u8>, u32, u32), String> {
    if tiles.is_empty() {
        return Err("nothing to draw: the grid has no tiles".into());
    }
    for (i, t) in tiles.iter().enumerate() {
        check_tile(t)
            .and_then(|()| check_heat(t, normalize))
            .map_err(|m| format!("tile {i} ({}): {m}", show_label(&t.label)))?;
    }
    let n = tiles.len();
    let cols = if columns == 0 {
        (1..=n).find(|c| c * c >= n).unwrap_or(n)
    } else {
        columns.min(n)
    };
    let rows = n.div_ceil(cols);
    let max_h = tiles.iter().map(|t| t.height).max().unwrap_or(1);
    let max_w = tiles.iter().map(|t| t.width).max().unwrap_or(1);
    let scale = MIN_TILE_SIDE
        .div_ceil(max_h.max(max_w))
        .clamp(1, MAX_UPSCALE);
    let labelled = tiles.iter().any(|t| !t.label.is_empty());
    let font = if labelled {
        crate::plot::register_font().map_err(|e| e.to_string())?;
        Some((crate::plot::FONT, LABEL_FONT_PX).into_font())
    } else {
        None
    };
    // Sizes in u64 with saturation, checked against the bounds before any allocation.
    let label_w = match &font {
        Some(f) => tiles
            .iter()
            .map(|t| text_width(f, &t.label))
            .max()
            .unwrap_or(0)
            .saturating_add(4)
            .min(MAX_LABEL_WIDTH),
        None => 0,
    };
    let big = |x: usize| x as u64;
    let tile_w = big(max_w).saturating_mul(big(scale));
    let tile_h = big(max_h).saturating_mul(big(scale));
    let cell_w = tile_w.max(big(label_w));
    let cell_h = tile_h.saturating_add(if labelled { big(LABEL_HEIGHT) } else { 0 });
    let width = big(GAP).saturating_add(big(cols).saturating_mul(cell_w.saturating_add(big(GAP))));
    let height = big(GAP).saturating_add(big(rows).saturating_mul(cell_h.saturating_add(big(GAP))));
    check_size(
        width,
        height,
        &format!("a grid of {n} tiles ({rows} × {cols})"),
    )?;
    let (width, height) = (width as usize, height as usize);
    let (cell_w, cell_h) = (cell_w as usize, cell_h as usize);
    let mut buf = try_canvas(width, height)?;
    for (i, t) in tiles.iter().enumerate() {
        let (r, c) = (i / cols, i % cols);
        let cx = GAP + c * (cell_w + GAP);
        let cy = GAP + r * (cell_h + GAP);
        let (tw, th) = (t.width * scale, t.height * scale);
        let x0 = cx + (cell_w - tw) / 2;
        let y0 = cy + (max_h * scale - th) / 2;
        frame(&mut buf, width, (x0, y0), (tw, th));
        let colours = intensities(t, normalize);
        let plane = t.height * t.width;
        for y in 0..th {
            let row = &mut buf[((y0 + y) * width + x0) * 3..][..tw * 3];
            for x in 0..tw {
                let k = (y / scale) * t.width + x / scale;
                row[x * 3..x * 3 + 3].copy_from_slice(&colours.pixel(k, plane));
            }
        }
    }
    if let Some(font) = &font {
        let area =
            BitMapBackend::with_buffer(&mut buf, (width as u32, height as u32)).into_drawing_area();
        for (i, t) in tiles
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.label.is_empty())
        {
            let (r, c) = (i / cols, i % cols);
            let x = GAP + c * (cell_w + GAP) + cell_w / 2;
            let y = GAP + r * (cell_h + GAP) + max_h * scale + LABEL_HEIGHT / 2 + 1;
            let text = fit_label(font, &t.label, cell_w);
            let style = font.color(&TEXT).pos(Pos::new(HPos::Center, VPos::Center));
            area.draw(&Text::new(text, (x as i32, y as i32), style))
                .map_err(|e| format!("cannot draw a label: {e}"))?;
        }
        area.present()
            .map_err(|e| format!("cannot draw the labels: {e}"))?;
    }
    Ok((buf, width as u32, height as u32))
}

/// The picture [`write_image`] writes, as row-major RGB bytes with its width and height.
pub fn render_image(image: &Tile, normalize: Normalize) -> Result<(Vec<u8>, u32, u32), String> {
    check_tile(image)?;
    check_heat(image, normalize)?;
    let (w, h) = (image.width, image.height);
    check_size(w as u64, h as u64, "the image")?;
    let mut buf = try_canvas(w, h)?;
    let colours = intensities(image, normalize);
    let plane = w * h;
    for (k, px) in buf.chunks_exact_mut(3).enumerate() {
        px.copy_from_slice(&colours.pixel(k, plane));
    }
    Ok((buf, w as u32, h as u32))
}

// ---- values to colours ----

/// A tile's values and the affine map that takes them to `[0, 1]`.
struct Intensities<'a> {
    tile: &'a Tile,
    /// `(value - lo) * gain`, or `None` for a constant tile (mid-gray).
    lo: f32,
    gain: Option<f32>,
    clamp_only: bool,
    heat: bool,
}

fn intensities(tile: &Tile, normalize: Normalize) -> Intensities<'_> {
    match normalize {
        Normalize::Clamp01 | Normalize::Heat => Intensities {
            tile,
            lo: 0.0,
            gain: Some(1.0),
            clamp_only: true,
            heat: normalize == Normalize::Heat,
        },
        Normalize::MinMaxPerTile => {
            let (lo, hi) = tile
                .pixels
                .iter()
                .filter(|v| v.is_finite())
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
            // In f64: the range of two finite f32 can overflow f32.
            let span = f64::from(hi) - f64::from(lo);
            let gain = (lo < hi).then(|| (1.0 / span) as f32);
            Intensities {
                tile,
                lo,
                gain,
                clamp_only: false,
                heat: false,
            }
        }
    }
}

impl Intensities<'_> {
    /// The colour of pixel `k` (row-major within a plane of `plane` values).
    fn pixel(&self, k: usize, plane: usize) -> [u8; 3] {
        let c = self.tile.channels;
        if self.heat {
            let v = self.tile.pixels[k];
            return if v.is_nan() { NAN_RGB } else { heat(v) };
        }
        let mut out = [0u8; 3];
        for (ch, o) in out.iter_mut().enumerate() {
            let v = self.tile.pixels[(ch % c) * plane + k];
            if v.is_nan() {
                return NAN_RGB;
            }
            *o = self.level(v);
        }
        out
    }

    fn level(&self, v: f32) -> u8 {
        let t = if self.clamp_only {
            v
        } else if v.is_infinite() {
            if v > 0.0 { 1.0 } else { 0.0 }
        } else {
            match self.gain {
                // In f64 so that a huge range does not overflow on the way.
                Some(g) => ((f64::from(v) - f64::from(self.lo)) * f64::from(g)) as f32,
                None => 0.5,
            }
        };
        (t.clamp(0.0, 1.0) * 255.0).round() as u8
    }
}

// ---- checks, layout helpers ----

fn check_tile(t: &Tile) -> Result<(), String> {
    if t.channels != 1 && t.channels != 3 {
        return Err(format!(
            "has {} channels; a picture has 1 (gray) or 3 (RGB)",
            t.channels
        ));
    }
    if t.height == 0 || t.width == 0 {
        return Err(format!("is empty ({} × {})", t.height, t.width));
    }
    let want = t
        .channels
        .checked_mul(t.height)
        .and_then(|x| x.checked_mul(t.width));
    if want != Some(t.pixels.len()) {
        return Err(format!(
            "has {} values but [{}, {}, {}] needs {}",
            t.pixels.len(),
            t.channels,
            t.height,
            t.width,
            want.map_or("more than can be counted".into(), |n| n.to_string())
        ));
    }
    Ok(())
}

fn check_heat(t: &Tile, normalize: Normalize) -> Result<(), String> {
    if normalize == Normalize::Heat && t.channels != 1 {
        return Err(format!(
            "has {} channels; a heat map colours one channel",
            t.channels
        ));
    }
    Ok(())
}

fn check_size(width: u64, height: u64, what: &str) -> Result<(), String> {
    if width > MAX_SIDE || height > MAX_SIDE || width.saturating_mul(height) > MAX_PIXELS {
        return Err(format!(
            "{what} would be {width} × {height} pixels; a picture may have at most {MAX_SIDE} \
             pixels a side and {MAX_PIXELS} in all (draw fewer or smaller tiles, e.g. a \
             smaller batch or a layer with fewer channels)"
        ));
    }
    Ok(())
}

/// A white RGB canvas, allocated fallibly.
fn try_canvas(width: usize, height: usize) -> Result<Vec<u8>, String> {
    let n = width * height * 3;
    let mut buf = Vec::new();
    buf.try_reserve_exact(n)
        .map_err(|_| format!("out of memory for a {width} × {height} picture"))?;
    buf.extend(std::iter::repeat_n(BACKGROUND, width * height).flatten());
    Ok(buf)
}

/// A one-pixel frame just outside the rectangle at `(x0, y0)` of size `(w, h)` (inside the gap).
fn frame(buf: &mut [u8], width: usize, (x0, y0): (usize, usize), (w, h): (usize, usize)) {
    let mut put = |x: usize, y: usize| buf[(y * width + x) * 3..][..3].copy_from_slice(&FRAME);
    for x in x0 - 1..=x0 + w {
        put(x, y0 - 1);
        put(x, y0 + h);
    }
    for y in y0..y0 + h {
        put(x0 - 1, y);
        put(x0 + w, y);
    }
}

fn text_width(font: &FontDesc<'_>, text: &str) -> usize {
    if text.is_empty() {
        return 0;
    }
    font.box_size(text).map_or(0, |(w, _)| w as usize)
}

/// `label`, cut with "…" until it fits in `width` pixels.
fn fit_label(font: &FontDesc<'_>, label: &str, width: usize) -> String {
    if text_width(font, label) <= width {
        return label.to_string();
    }
    let mut chars: Vec<char> = label.chars().collect();
    while !chars.is_empty() {
        chars.pop();
        let s: String = chars.iter().chain(['…'].iter()).collect();
        if text_width(font, &s) <= width {
            return s;
        }
    }
    String::new()
}

fn show_label(label: &str) -> String {
    if label.is_empty() {
        "no label".into()
    } else {
        format!("`{}`", crate::diag::escape_controls(label))
    }
}

fn check_png_name(path: &Path) -> Result<(), IoError> {
    let png = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if png {
        Ok(())
    } else {
        Err(IoError::new(
            path,
            "pictures are written as PNG: give the file a .png name",
        ))
    }
}

fn write_png(path: &Path, rgb: &[u8], width: u32, height: u32) -> Result<(), IoError> {
    crate::io::write_atomic(path, |w| {
        image::codecs::png::PngEncoder::new(w)
            .write_image(rgb, width, height, image::ExtendedColorType::Rgb8)
            .map_err(std::io::Error::other)
    })
}
