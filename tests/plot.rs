//! Training curves (`netc::plot`): a valid PNG of the expected size with something drawn in the
//! plot areas, for a normal run, a single epoch, NaN values and missing validation series;
//! written atomically (no temporary file left behind, an existing file replaced).
//!
//! Set `NETC_PLOT_DIR` to keep the images (to look at them).

use std::path::PathBuf;

use image::RgbImage;
use netc::plot::{HEIGHT, History, Record, Unit, WIDTH, write_curves};

fn out_dir(test: &str) -> PathBuf {
    let dir = match std::env::var_os("NETC_PLOT_DIR") {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join(format!("netc-plot-{}-{test}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `h` to `<dir>/<name>.png` and decodes it again.
fn write_and_read(test: &str, h: &History) -> RgbImage {
    let dir = out_dir(test);
    let path = dir.join(format!("{test}.png"));
    write_curves(&path, h).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!(".{test}.png.")))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .unwrap()
        .to_rgb8();
    assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
    img
}

/// Pixels in the rectangle `[x0, x1) × [y0, y1)` for which `f` holds.
fn count(
    img: &RgbImage,
    (x0, x1): (u32, u32),
    (y0, y1): (u32, u32),
    f: impl Fn([u8; 3]) -> bool,
) -> usize {
    (y0..y1)
        .flat_map(|y| (x0..x1).map(move |x| (x, y)))
        .filter(|&(x, y)| f(img.get_pixel(x, y).0))
        .count()
}

/// The inside of the left (loss) and right (accuracy) panels, away from titles and labels.
const LEFT: (u32, u32) = (110, WIDTH / 2 - 40);
const RIGHT: (u32, u32) = (WIDTH / 2 + 110, WIDTH - 40);
const ROWS: (u32, u32) = (90, HEIGHT - 70);

fn dark(p: [u8; 3]) -> bool {
    p.iter().map(|&c| c as u32).sum::<u32>() < 3 * 110
}
/// The train curve's blue.
fn blue(p: [u8; 3]) -> bool {
    p[2] > 140 && p[0] < 90 && p[2] as i32 - p[0] as i32 > 80
}
/// The validation curve's orange.
fn orange(p: [u8; 3]) -> bool {
    p[0] > 200 && p[1] > 70 && p[1] < 160 && p[2] < 60
}

fn run(epochs: usize) -> History {
    let mut h = History::new("lenet5 — training curves", Unit::Epoch);
    for e in 1..=epochs {
        let t = e as f64;
        h.push(Record {
            x: t,
            train_loss: Some(2.3 * (-0.25 * t).exp() + 0.05),
            train_accuracy: Some(1.0 - 0.9 * (-0.3 * t).exp()),
            val_loss: Some(2.3 * (-0.2 * t).exp() + 0.12 + 0.01 * t),
            val_accuracy: Some(0.97 - 0.85 * (-0.28 * t).exp()),
        });
    }
    h
}

#[test]
fn a_full_run() {
    let img = write_and_read("full", &run(20));
    // Text, axes and curves are dark or coloured; the panels are mostly white.
    assert!(
        count(&img, (0, WIDTH), (0, HEIGHT), dark) > 2000,
        "text and axes"
    );
    for (panel, cols) in [("loss", LEFT), ("accuracy", RIGHT)] {
        assert!(count(&img, cols, ROWS, dark) > 50, "{panel}: dark pixels");
        assert!(count(&img, cols, ROWS, blue) > 300, "{panel}: train curve");
        assert!(
            count(&img, cols, ROWS, orange) > 300,
            "{panel}: validation curve"
        );
        let white = count(&img, cols, ROWS, |p| p == [255, 255, 255]);
        let all = ((cols.1 - cols.0) * (ROWS.1 - ROWS.0)) as usize;
        assert!(white > all / 2, "{panel}: mostly background");
    }
}

#[test]
fn a_single_epoch() {
    let img = write_and_read("single", &run(1));
    for cols in [LEFT, RIGHT] {
        // One marker per series.
        assert!(count(&img, cols, ROWS, blue) > 10);
        assert!(count(&img, cols, ROWS, orange) > 10);
        assert!(count(&img, cols, ROWS, dark) > 50);
    }
}

#[test]
fn nan_values_are_skipped() {
    let mut h = run(12);
    h.records[4].train_loss = Some(f64::NAN);
    h.records[5].val_loss = Some(f64::INFINITY);
    h.records[7].train_accuracy = Some(f64::NAN);
    let img = write_and_read("nan", &h);
    for cols in [LEFT, RIGHT] {
        assert!(count(&img, cols, ROWS, blue) > 200);
        assert!(count(&img, cols, ROWS, orange) > 200);
    }
    // All NaN: empty panels, still an image.
    let mut h = run(3);
    for r in &mut h.records {
        r.train_loss = Some(f64::NAN);
        r.val_loss = None;
    }
    let img = write_and_read("all_nan", &h);
    assert_eq!(count(&img, LEFT, ROWS, blue), 0);
    assert!(count(&img, RIGHT, ROWS, blue) > 10);
}

#[test]
fn missing_validation_and_accuracy() {
    // A regression or metric-learning run: train loss only, per step.
    let mut h = History::new("", Unit::Step);
    for s in 0..300 {
        let t = s as f64 * 10.0;
        h.push(Record {
            x: t,
            train_loss: Some(1.0 / (1.0 + 0.01 * t) + 0.02 * (t * 0.37).sin()),
            ..Record::default()
        });
    }
    let img = write_and_read("no_validation", &h);
    assert!(count(&img, LEFT, ROWS, blue) > 300);
    assert_eq!(count(&img, LEFT, ROWS, orange), 0, "no validation curve");
    assert_eq!(count(&img, RIGHT, ROWS, blue), 0, "no accuracy curve");
    // The empty panel still has its axes, labels and a grey note in the middle.
    assert!(count(&img, (WIDTH / 2, WIDTH), (0, HEIGHT), dark) > 300);
    let grey = |p: [u8; 3]| p[0] < 180 && p[0] == p[1] && p[1] == p[2];
    assert!(count(&img, RIGHT, (HEIGHT / 2 - 40, HEIGHT / 2 + 20), grey) > 50);
}

#[test]
fn an_existing_file_is_replaced() {
    let dir = out_dir("replace");
    let path = dir.join("curves.png");
    std::fs::write(&path, b"not a png").unwrap();
    write_curves(&path, &run(3)).unwrap();
    let img = image::open(&path).unwrap();
    assert_eq!((img.width(), img.height()), (WIDTH, HEIGHT));
    // A directory that does not exist is an error, not a panic.
    assert!(write_curves(&dir.join("missing/curves.png"), &run(3)).is_err());
}
