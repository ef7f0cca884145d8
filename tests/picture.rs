//! Pictures out (`netc::picture`): the pixels of a small grid decoded back, labels drawn in
//! their strip, normalization rules (constant tiles, NaN, infinities), enlargement of small
//! tiles, the single-image writer, and atomic writes (nothing partial or left behind on error).

use std::path::{Path, PathBuf};

use image::RgbImage;
use netc::picture::{
    GAP, LABEL_HEIGHT, MAX_PIXELS, NAN_RGB, Normalize, Tile, render_grid, write_grid, write_image,
};

fn dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("netc-picture-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn decode(path: &Path) -> RgbImage {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .unwrap()
        .to_rgb8()
}

fn entries(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn gray(h: usize, w: usize, f: impl Fn(usize, usize) -> f32, label: &str) -> Tile {
    let pixels = (0..h * w).map(|k| f(k / w, k % w)).collect();
    Tile {
        pixels,
        channels: 1,
        height: h,
        width: w,
        label: label.into(),
    }
}

#[test]
fn grid_pixels_decode_back() {
    // Two 40×40 tiles (no enlargement), no labels: min-max per tile, then clamp.
    let a = gray(40, 40, |y, x| (y * 40 + x) as f32, "");
    let b = gray(40, 40, |y, _| y as f32 / 39.0 * 2.0 - 0.5, "");
    let d = dir("pixels");
    let p = d.join("grid.png");
    write_grid(&p, &[a.clone(), b.clone()], 2, Normalize::MinMaxPerTile).unwrap();
    let img = decode(&p);
    assert_eq!(
        img.dimensions(),
        ((GAP * 3 + 80) as u32, (GAP * 2 + 40) as u32)
    );
    let at = |x: usize, y: usize| img.get_pixel(x as u32, y as u32).0;
    for y in 0..40 {
        for x in 0..40 {
            let want = ((y * 40 + x) as f32 / 1599.0 * 255.0).round() as u8;
            assert_eq!(at(GAP + x, GAP + y), [want; 3], "tile a at ({x}, {y})");
            let want = (y as f32 / 39.0 * 255.0).round() as u8;
            let got = at(2 * GAP + 40 + x, GAP + y);
            assert!(got[0].abs_diff(want) <= 1 && got[0] == got[1] && got[1] == got[2]);
        }
    }
    // The gap is white, the frame gray.
    assert_eq!(at(0, 0), [255; 3]);
    assert_eq!(at(GAP - 1, GAP + 5), [170; 3]);
    // Clamp01: values outside [0, 1] saturate.
    let p2 = d.join("clamp.png");
    write_grid(&p2, &[b], 1, Normalize::Clamp01).unwrap();
    let img = decode(&p2);
    assert_eq!(img.get_pixel(GAP as u32, GAP as u32).0, [0; 3]);
    assert_eq!(img.get_pixel(GAP as u32, (GAP + 39) as u32).0, [255; 3]);
    let mid = img.get_pixel(GAP as u32, (GAP + 15) as u32).0[0];
    let want = ((15.0f32 / 39.0 * 2.0 - 0.5) * 255.0).round() as u8;
    assert!(mid.abs_diff(want) <= 1, "{mid} vs {want}");
    assert_eq!(entries(&d), ["clamp.png", "grid.png"], "no temporary files");
}

#[test]
fn labels_are_drawn_in_their_strip() {
    let tiles: Vec<Tile> = (0..3)
        .map(|i| gray(40, 40, |_, _| 0.0, &format!("ch {i}")))
        .collect();
    let (rgb, w, h) = render_grid(&tiles, 3, Normalize::Clamp01).unwrap();
    assert_eq!(h as usize, GAP * 2 + 40 + LABEL_HEIGHT);
    let img = RgbImage::from_raw(w, h, rgb).unwrap();
    let cell_w = (w as usize - GAP) / 3 - GAP;
    for c in 0..3 {
        let x0 = GAP + c * (cell_w + GAP);
        let dark = (GAP + 41..GAP + 40 + LABEL_HEIGHT)
            .flat_map(|y| (x0..x0 + cell_w).map(move |x| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x as u32, y as u32).0[0] < 128)
            .count();
        assert!(dark >= 10, "label of tile {c}: {dark} dark pixels");
    }
    // Without labels there is no strip.
    let bare: Vec<Tile> = tiles
        .iter()
        .map(|t| Tile {
            label: String::new(),
            ..t.clone()
        })
        .collect();
    let (_, _, h2) = render_grid(&bare, 3, Normalize::Clamp01).unwrap();
    assert_eq!(h2 as usize, GAP * 2 + 40);
}

#[test]
fn constant_nan_and_infinite_values() {
    let constant = gray(40, 40, |_, _| 7.0, "");
    let mut odd = gray(40, 40, |y, _| y as f32, "");
    odd.pixels[0] = f32::NAN;
    odd.pixels[1] = f32::INFINITY;
    odd.pixels[2] = f32::NEG_INFINITY;
    let (rgb, w, h) = render_grid(&[constant, odd], 2, Normalize::MinMaxPerTile).unwrap();
    let img = RgbImage::from_raw(w, h, rgb).unwrap();
    let at = |x: usize, y: usize| img.get_pixel(x as u32, y as u32).0;
    assert_eq!(
        at(GAP + 20, GAP + 20),
        [128; 3],
        "a constant tile is mid-gray"
    );
    let x0 = 2 * GAP + 40;
    assert_eq!(at(x0, GAP), NAN_RGB);
    assert_eq!(at(x0 + 1, GAP), [255; 3], "+inf is white");
    assert_eq!(at(x0 + 2, GAP), [0; 3], "-inf is black");
    // The finite range 0..39 is unaffected by the infinities.
    assert_eq!(at(x0 + 5, GAP + 39), [255; 3]);
    assert_eq!(at(x0 + 5, GAP), [0; 3]);
}

#[test]
fn small_tiles_are_enlarged_and_rgb_keeps_colour() {
    // A 2×2 RGB tile: enlarged 8× (40 / 2 = 20, at most 8).
    let t = Tile {
        pixels: vec![
            1.0, 0.0, 0.0, 0.0, // R
            0.0, 1.0, 0.0, 0.0, // G
            0.0, 0.0, 1.0, 0.0, // B
        ],
        channels: 3,
        height: 2,
        width: 2,
        label: String::new(),
    };
    let (rgb, w, h) = render_grid(std::slice::from_ref(&t), 0, Normalize::Clamp01).unwrap();
    assert_eq!((w as usize, h as usize), (2 * GAP + 16, 2 * GAP + 16));
    let img = RgbImage::from_raw(w, h, rgb).unwrap();
    let at = |x: usize, y: usize| img.get_pixel((GAP + x) as u32, (GAP + y) as u32).0;
    assert_eq!(at(0, 0), [255, 0, 0]);
    assert_eq!(at(7, 7), [255, 0, 0]);
    assert_eq!(at(8, 0), [0, 255, 0]);
    assert_eq!(at(0, 8), [0, 0, 255]);
    assert_eq!(at(15, 15), [0, 0, 0]);
    // The single-image writer: own size, one pixel per value.
    let d = dir("single");
    let p = d.join("one.png");
    write_image(&p, &t, Normalize::Clamp01).unwrap();
    let img = decode(&p);
    assert_eq!(img.dimensions(), (2, 2));
    assert_eq!(img.get_pixel(1, 0).0, [0, 255, 0]);
    assert_eq!(img.get_pixel(0, 1).0, [0, 0, 255]);
}

#[test]
fn bad_requests_are_refused_and_leave_nothing() {
    let d = dir("refused");
    let p = d.join("keep.png");
    std::fs::write(&p, b"old").unwrap();
    let ok = gray(40, 40, |_, _| 0.0, "");
    // Too many tiles for the bound: refused before allocating, the old file kept.
    let n = (MAX_PIXELS / (46 * 46)) as usize + 10;
    let many = vec![ok.clone(); n];
    let e = write_grid(&p, &many, 0, Normalize::Clamp01)
        .unwrap_err()
        .to_string();
    assert!(e.contains("at most") && e.contains("keep.png"), "{e}");
    // A tile whose values do not fit its shape.
    let bad = Tile {
        pixels: vec![0.0; 5],
        ..ok.clone()
    };
    let e = write_grid(&p, &[ok.clone(), bad], 2, Normalize::Clamp01)
        .unwrap_err()
        .to_string();
    assert!(e.contains("tile 1") && e.contains("1600"), "{e}");
    let two = Tile {
        channels: 2,
        pixels: vec![0.0; 3200],
        ..ok.clone()
    };
    let e = write_image(&p, &two, Normalize::Clamp01)
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 channels"), "{e}");
    let e = write_grid(&p, &[], 1, Normalize::Clamp01)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no tiles"), "{e}");
    // Not a PNG name.
    let e = write_grid(
        &d.join("x.npy"),
        std::slice::from_ref(&ok),
        1,
        Normalize::Clamp01,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains(".png"), "{e}");
    // A directory that does not exist.
    assert!(write_grid(&d.join("no/such.png"), &[ok], 1, Normalize::Clamp01).is_err());
    assert_eq!(std::fs::read(&p).unwrap(), b"old");
    assert_eq!(entries(&d), ["keep.png"], "nothing partial or temporary");
}
