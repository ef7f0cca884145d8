//! Training curves as a PNG image.
//!
//! In: a [`History`] of per-epoch (or per-step) records: train loss, train accuracy, validation
//! loss, validation accuracy, each optional. Out: a [`WIDTH`]×[`HEIGHT`] RGB PNG with a title
//! and two panels, loss (left) and accuracy in percent (right), train and validation curves
//! with legends and axis labels, written atomically by [`write_curves`].
//!
//! Drawn with plotters' bitmap backend only, and text with DejaVu Sans bundled in the binary
//! (`assets/fonts/`, licence beside it), so plotting needs no system fonts or libraries.
//! Absent values (`None`) are skipped and the curve joins its neighbours; non-finite values
//! (a diverged NaN loss) break the curve there. Points are marked when there are few of them,
//! so a single epoch still shows.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use image::ImageEncoder;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Width of the image in pixels.
pub const WIDTH: u32 = 1280;
/// Height of the image in pixels.
pub const HEIGHT: u32 = 520;

/// What the records' `x` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unit {
    #[default]
    Epoch,
    Step,
}

/// One point of the history. Accuracies are fractions in `[0, 1]` (shown in percent).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Record {
    /// The epoch (counted from 1) or the step.
    pub x: f64,
    pub train_loss: Option<f64>,
    pub train_accuracy: Option<f64>,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
}

/// The curves of one training run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct History {
    /// The figure's title, e.g. the model's name; empty for "Training curves".
    pub title: String,
    pub unit: Unit,
    /// In increasing `x`.
    pub records: Vec<Record>,
}

impl History {
    pub fn new(title: impl Into<String>, unit: Unit) -> Self {
        History {
            title: title.into(),
            unit,
            records: Vec::new(),
        }
    }

    pub fn push(&mut self, record: Record) {
        self.records.push(record);
    }
}

/// Draws `history` and writes it to `path` as a PNG, atomically: the image goes to a temporary
/// file in the same directory, which is flushed to disk and then renamed over `path`, so a
/// reader never sees a half-written plot.
pub fn write_curves(path: &Path, history: &History) -> io::Result<()> {
    let rgb = render(history)?;
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&rgb, WIDTH, HEIGHT, image::ExtendedColorType::Rgb8)
        .map_err(io::Error::other)?;
    write_atomically(path, &png)
}

/// Draws `history` into an RGB buffer of [`WIDTH`]×[`HEIGHT`] pixels, row-major.
///
/// The bitmap backend draws lines without anti-aliasing, so the figure is drawn at [`SS`]
/// times the size and scaled down.
pub fn render(history: &History) -> io::Result<Vec<u8>> {
    register_font()?;
    let (w, h) = (WIDTH * SS, HEIGHT * SS);
    let mut buf = vec![0u8; w as usize * h as usize * 3];
    draw(&mut buf, (w, h), history).map_err(io::Error::other)?;
    let big = image::RgbImage::from_raw(w, h, buf).expect("buffer of the drawn size");
    let small = image::imageops::resize(&big, WIDTH, HEIGHT, image::imageops::FilterType::Triangle);
    Ok(small.into_raw())
}

/// Supersampling factor: every length below is in output pixels, multiplied by this.
const SS: u32 = 2;

/// `px` output pixels in drawing pixels.
fn px(px: u32) -> u32 {
    px * SS
}

/// A font of `size` output pixels.
fn font(size: u32) -> FontDesc<'static> {
    (FONT, f64::from(px(size))).into_font()
}

// ---- drawing ----

/// The family name the bundled font is registered under (also used by [`crate::picture`]).
pub(crate) const FONT: &str = "DejaVu Sans";
static FONT_BYTES: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Registers the bundled font with plotters, once per process.
pub(crate) fn register_font() -> io::Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES)
            .map_err(|_| "the bundled font DejaVuSans.ttf is not a valid font".to_string())
    })
    .clone()
    .map_err(io::Error::other)
}

const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VAL: RGBColor = RGBColor(230, 111, 0);
const TEXT: RGBColor = RGBColor(34, 34, 34);
const GRID: RGBColor = RGBColor(221, 221, 221);
const FINE_GRID: RGBColor = RGBColor(240, 240, 240);
const AXIS: RGBColor = RGBColor(102, 102, 102);

/// Curves with more points than this are drawn without markers.
const MARKERS_UP_TO: usize = 60;

/// One curve: a label, a colour and runs of consecutive finite points.
struct Curve {
    label: &'static str,
    color: RGBColor,
    runs: Vec<Vec<(f64, f64)>>,
}

impl Curve {
    fn new(
        label: &'static str,
        color: RGBColor,
        records: &[Record],
        value: impl Fn(&Record) -> Option<f64>,
        scale: f64,
    ) -> Self {
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for r in records.iter().filter(|r| r.x.is_finite()) {
            match value(r) {
                None => {}
                Some(v) if v.is_finite() => runs.last_mut().unwrap().push((r.x, v * scale)),
                Some(_) => runs.push(Vec::new()),
            }
        }
        runs.retain(|r| !r.is_empty());
        Curve { label, color, runs }
    }

    fn points(&self) -> impl Iterator<Item = &(f64, f64)> {
        self.runs.iter().flatten()
    }
}

struct Panel {
    caption: &'static str,
    y_label: &'static str,
    /// Appended to tick labels.
    suffix: &'static str,
    /// Bounds the axis may not leave (accuracy: 0 to 100).
    clamp: (f64, f64),
    /// The smallest range of the axis.
    min_span: f64,
    legend: SeriesLabelPosition,
    empty_note: &'static str,
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn draw(buf: &mut [u8], (w, h_px): (u32, u32), h: &History) -> Result<(), String> {
    let root = BitMapBackend::with_buffer(buf, (w, h_px)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let title = if h.title.is_empty() {
        "Training curves"
    } else {
        h.title.as_str()
    };
    let (top, body) = root.split_vertically(px(52));
    top.draw(&Text::new(
        title,
        (w as i32 / 2, px(28) as i32),
        font(26)
            .color(&TEXT)
            .pos(Pos::new(HPos::Center, VPos::Center)),
    ))
    .map_err(|e| e.to_string())?;
    let (left, right) = body.split_horizontally(w / 2);
    let x_range = x_range(h);
    let recs = &h.records;
    panel(
        &left,
        h.unit,
        x_range,
        &Panel {
            caption: "Loss",
            y_label: "loss",
            suffix: "",
            clamp: (f64::NEG_INFINITY, f64::INFINITY),
            min_span: 0.0,
            legend: SeriesLabelPosition::UpperRight,
            empty_note: "no loss recorded",
        },
        &[
            Curve::new("train", TRAIN, recs, |r| r.train_loss, 1.0),
            Curve::new("validation", VAL, recs, |r| r.val_loss, 1.0),
        ],
    )?;
    panel(
        &right,
        h.unit,
        x_range,
        &Panel {
            caption: "Accuracy",
            y_label: "accuracy (%)",
            suffix: "%",
            clamp: (0.0, 100.0),
            min_span: 10.0,
            legend: SeriesLabelPosition::LowerRight,
            empty_note: "no accuracy recorded",
        },
        &[
            Curve::new("train", TRAIN, recs, |r| r.train_accuracy, 100.0),
            Curve::new("validation", VAL, recs, |r| r.val_accuracy, 100.0),
        ],
    )?;
    root.present().map_err(|e| e.to_string())
}

fn panel(
    area: &Area<'_>,
    unit: Unit,
    (x0, x1, x_ticks): (f64, f64, usize),
    p: &Panel,
    curves: &[Curve],
) -> Result<(), String> {
    let (y0, y1) = y_range(curves, p.clamp, p.min_span);
    let mut chart = ChartBuilder::on(area)
        .caption(p.caption, font(20).color(&TEXT))
        .margin_top(px(4))
        .margin_left(px(14))
        .margin_right(px(30))
        .margin_bottom(px(10))
        .x_label_area_size(px(50))
        .y_label_area_size(px(70))
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| e.to_string())?;
    let x_label = match unit {
        Unit::Epoch => "epoch",
        Unit::Step => "step",
    };
    let suffix = p.suffix;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(p.y_label)
        .x_labels(x_ticks)
        .y_labels(8)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| format!("{}{suffix}", tick(*v)))
        .max_light_lines(1)
        .label_style(font(15).color(&TEXT))
        .axis_desc_style(font(16).color(&TEXT))
        .x_label_offset(0)
        .set_all_tick_mark_size(px(5))
        .bold_line_style(GRID.stroke_width(SS))
        .light_line_style(FINE_GRID.stroke_width(SS))
        .axis_style(AXIS.stroke_width(SS))
        .draw()
        .map_err(|e| e.to_string())?;

    let mut any = false;
    for c in curves {
        if c.runs.is_empty() {
            continue;
        }
        any = true;
        let markers = c.points().count() <= MARKERS_UP_TO;
        let line = c.color.stroke_width(px(2));
        for (i, run) in c.runs.iter().enumerate() {
            let series = chart
                .draw_series(LineSeries::new(run.iter().copied(), line))
                .map_err(|e| e.to_string())?;
            if i == 0 {
                let color = c.color;
                series.label(c.label).legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(
                            vec![(0, 0), (px(24) as i32, 0)],
                            color.stroke_width(px(2)),
                        )
                        + Circle::new((px(12) as i32, 0), px(3), color.filled())
                });
            }
            if markers || run.len() == 1 {
                chart
                    .draw_series(
                        run.iter()
                            .map(|&pt| Circle::new(pt, px(3), c.color.filled())),
                    )
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    if any {
        chart
            .configure_series_labels()
            .position(p.legend.clone())
            .margin(px(10))
            .legend_area_size(px(34))
            .label_font(font(15).color(&TEXT))
            .background_style(WHITE.mix(0.9))
            .border_style(GRID.stroke_width(SS))
            .draw()
            .map_err(|e| e.to_string())?;
    } else {
        let style = font(17)
            .color(&AXIS)
            .pos(Pos::new(HPos::Center, VPos::Center));
        chart
            .plotting_area()
            .draw(&Text::new(
                p.empty_note,
                ((x0 + x1) / 2.0, (y0 + y1) / 2.0),
                style,
            ))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The x axis shared by both panels: `(from, to, number of ticks)`, the data's range with a
/// small margin so that markers at the ends show whole. Epochs get whole-number ticks.
fn x_range(h: &History) -> (f64, f64, usize) {
    let xs = h.records.iter().map(|r| r.x).filter(|x| x.is_finite());
    let (lo, hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    if lo > hi {
        return (0.0, 1.0, 2);
    }
    let (lo, hi, ticks) = match h.unit {
        Unit::Epoch => {
            let (lo, hi) = (lo.floor(), hi.ceil());
            let (lo, hi) = if lo == hi {
                (lo - 1.0, hi + 1.0)
            } else {
                (lo, hi)
            };
            // Few enough ticks that plotters' steps are whole epochs.
            (lo, hi, ((hi - lo) as usize + 1).min(11))
        }
        Unit::Step if lo == hi => (lo - 1.0, hi + 1.0, 3),
        Unit::Step => (lo, hi, 9),
    };
    let pad = 0.025 * (hi - lo);
    (lo - pad, hi + pad, ticks)
}

/// The y axis: the data's range with a margin, at least `min_span` wide (so that a few nearly
/// equal values don't fill the panel), inside `clamp`; all of `clamp` (or `[0, 1]`) without
/// data.
fn y_range(curves: &[Curve], clamp: (f64, f64), min_span: f64) -> (f64, f64) {
    let (lo, hi) = curves
        .iter()
        .flat_map(Curve::points)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(_, y)| {
            (lo.min(y), hi.max(y))
        });
    if lo > hi {
        return if clamp.1.is_finite() {
            clamp
        } else {
            (0.0, 1.0)
        };
    }
    let span = (hi - lo)
        .max(min_span)
        .max(0.2 * lo.abs().max(hi.abs()))
        .max(1e-9);
    let mid = (lo + hi) / 2.0;
    let (mut a, mut b) = (
        (mid - span / 2.0).min(lo - 0.06 * span),
        (mid + span / 2.0).max(hi + 0.06 * span),
    );
    // Non-negative data (losses, accuracies) keeps a non-negative axis.
    if lo >= 0.0 && a < 0.0 {
        (a, b) = (0.0, b - a);
    }
    if b > clamp.1 {
        (a, b) = (a - (b - clamp.1), clamp.1);
    }
    (a.max(clamp.0), b)
}

/// A tick label: at most four decimals, trailing zeros dropped; scientific when tiny or huge.
fn tick(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        return format!("{v:.1e}");
    }
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

// ---- files ----

/// Writes `bytes` to a temporary file next to `path`, syncs it, renames it over `path` and
/// syncs the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    // Unique per process and call, so concurrent writers never share a temporary file.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = File::options().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // Make the rename itself durable (not possible on every platform; best effort).
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
