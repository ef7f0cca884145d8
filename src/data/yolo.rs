//! Detection data in the YOLO text format: images with a `.txt` of objects beside each.
//!
//! In: a directory laid out as either
//! - `train/` and `test/` (`val/`, `valid/` or `validation/` may stand for `test/`), each
//!   holding the images (`.png`, `.jpg`, `.jpeg`, any case) and, beside each, a `.txt` of the
//!   same stem (`train/0001.png` → `train/0001.txt`); or
//! - Ultralytics' layout: `images/train/` and `images/val/` (or `test/`, ...), with the labels
//!   in `labels/train/` and `labels/val/` (`images/train/a.jpg` → `labels/train/a.txt`);
//!
//! optionally with `classes.txt` at the root (Darknet's `obj.names`: one class name per line,
//! line `i` naming class `i`); and the model input the images must fit. Out ([`load`]): a
//! [`Split`] of byte images of the input's `[C, H, W]` with [`Dataset::objects`] filled, and the
//! number of images that had no `.txt` ([`Loaded::warning`]).
//!
//! The label format (one object per line, fields separated by spaces or tabs, blank lines
//! ignored): `class cx cy w h [x1 y1 x2 y2 ...]`.
//! - `class` is a class number `0, 1, …`, below the number of names in `classes.txt` when there
//!   is one; without it the classes are `0 ..= max` over both splits, named by their numbers.
//! - `cx cy w h` are the box's centre and size as fractions of the image's width and height
//!   (`0..1`); `w` and `h` must be positive and the box inside the image. A box that pokes out
//!   by at most [`TOLERANCE`] (the rounding of converters) is clipped to the image; beyond that
//!   it is an error.
//! - Landmarks follow as `x y` pairs, also fractions of the image (same tolerance, clamped).
//!   Every object of the dataset must have the same number of landmarks (a model's landmark
//!   head has a fixed size).
//! - An image without a `.txt` is a background image (no objects), as in Darknet and
//!   Ultralytics: they are counted and [`Loaded::warning`] reports them in one line. An empty
//!   `.txt` is a background image on purpose and is not reported. `.txt` files without an image
//!   are ignored.
//! - A sample's label (`Dataset::labels`) is the class of its first object (the file's first
//!   line), 0 for a background image; the objects are the annotations.
//! - Images are sorted by file name, loaded by [`crate::io::load_image_stretched`]: converted
//!   to the input's channels and resized to its `H × W` whatever their size, stretched as
//!   Darknet does (no crop), so boxes and landmarks, being fractions of the image, hold
//!   unchanged.
//!
//! Bounds: a label file holds at most [`MAX_LABEL_BYTES`] and [`MAX_LABEL_LINES`] lines;
//! `classes.txt` at most [`super::MAX_CLASSES`] names. Errors name the file and line as
//! `file:line`, say what was expected and, where one is likely, the fix.
//!
//! Out the other way ([`write`]): a [`Split`] with objects written as such a folder
//! (`train/`, `test/`, `classes.txt`; PNG images named `000000.png`, ...), built in a
//! temporary directory beside the destination and renamed into place, so the destination is
//! never half-written.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use super::folder::{TEST_NAMES, images};
use super::{DataError, Dataset, MAX_CLASSES, Pixels, Split, file_name};
use crate::detect::Object;
use crate::io::Kind;
use crate::io::read::show_bytes;
use crate::layer_graph::InputInfo;

/// The largest label file read (1 MiB: some 20,000 plain boxes).
pub const MAX_LABEL_BYTES: u64 = 1 << 20;
/// The most lines a label file may have.
pub const MAX_LABEL_LINES: usize = 10_000;
/// The largest `classes.txt` read.
const MAX_CLASSES_BYTES: u64 = 16 << 20;
/// How far (as a fraction of the image) a box or landmark may reach outside the image before
/// it is an error; within it, it is clipped.
pub const TOLERANCE: f32 = 1e-3;

/// Where one split's images and labels are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub images: PathBuf,
    /// The folder of the `.txt` files: `images` itself in the flat layout.
    pub labels: PathBuf,
}

/// How a YOLO folder is laid out: its two splits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub train: Part,
    pub test: Part,
}

/// A loaded YOLO folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub split: Split,
    /// Images without a `.txt` (background images), train and test together.
    pub unlabelled: usize,
    /// The first of them, for the warning.
    pub first_unlabelled: Option<PathBuf>,
}

impl Loaded {
    /// One line about the images without labels, when there are any.
    pub fn warning(&self) -> Option<String> {
        let first = self.first_unlabelled.as_ref()?;
        Some(format!(
            "warning: {} image{} without a .txt label file (e.g. {}) {} background (no objects)",
            self.unlabelled,
            if self.unlabelled == 1 { "" } else { "s" },
            crate::diag::escape_controls(&first.display().to_string()),
            if self.unlabelled == 1 {
                "is taken as a"
            } else {
                "are taken as"
            }
        ))
    }
}

/// Recognizes a YOLO folder; `None` when `dir` is not one.
///
/// It is one when it has `images/train/` and `labels/`, or when its `train/` holds images
/// directly (not in class subfolders) and either `classes.txt` exists or some training image
/// has a `.txt` beside it. A class-subfolder image folder ([`super::folder`]) never has images
/// directly in `train/`, so it is not taken for one.
pub fn detect(dir: &Path) -> Result<Option<Layout>, DataError> {
    let (imgs, labels) = (dir.join("images"), dir.join("labels"));
    if imgs.join("train").is_dir() && labels.is_dir() {
        let Some(test) = TEST_NAMES.iter().find(|n| imgs.join(n).is_dir()) else {
            return Err(DataError::new(
                dir,
                "has images/train/ but no images/val/ (or images/test/) folder",
            )
            .with_help("put the test images in images/val/ and their labels in labels/val/"));
        };
        let part = |n: &str| Part {
            images: imgs.join(n),
            labels: labels.join(n),
        };
        return Ok(Some(Layout {
            train: part("train"),
            test: part(test),
        }));
    }
    let train = dir.join("train");
    if !train.is_dir() {
        return Ok(None);
    }
    let files = images(&train)?;
    let labelled = dir.join("classes.txt").is_file()
        || files.iter().any(|f| f.with_extension("txt").is_file());
    if files.is_empty() || !labelled {
        return Ok(None);
    }
    let Some(test) = TEST_NAMES.iter().map(|n| dir.join(n)).find(|p| p.is_dir()) else {
        return Err(DataError::new(
            dir,
            "has a train/ folder of labelled images but no test/ folder",
        )
        .with_help("put the test images and their .txt files in test/ (or val/)"));
    };
    Ok(Some(Layout {
        train: Part {
            images: train.clone(),
            labels: train,
        },
        test: Part {
            images: test.clone(),
            labels: test,
        },
    }))
}

/// What label files must agree on across the dataset.
struct Context {
    /// The number of classes in `classes.txt`, when there is one.
    classes: Option<usize>,
    /// The landmark count of the first object with its file and line.
    landmarks: Option<(usize, PathBuf)>,
}

/// Loads the YOLO folder `dir` laid out as `layout` for the model input `input`.
pub fn load(dir: &Path, layout: &Layout, input: &InputInfo) -> Result<Loaded, DataError> {
    let name = file_name(dir);
    let names = read_classes(&dir.join("classes.txt"))?;
    let mut ctx = Context {
        classes: names.as_ref().map(Vec::len),
        landmarks: None,
    };
    let mut unlabelled = (0, None);
    let mut train = load_part(
        format!("{name} train"),
        &layout.train,
        input,
        &mut ctx,
        &mut unlabelled,
    )?;
    let mut test = load_part(
        format!("{name} test"),
        &layout.test,
        input,
        &mut ctx,
        &mut unlabelled,
    )?;
    let names = names.unwrap_or_else(|| {
        let max = [&train, &test]
            .iter()
            .flat_map(|d| d.objects.iter().flatten())
            .map(|o| o.class)
            .max();
        (0..max.map_or(1, |m| m + 1))
            .map(|c| c.to_string())
            .collect()
    });
    for d in [&mut train, &mut test] {
        d.classes = names.len();
        d.class_names = names.clone();
    }
    Ok(Loaded {
        split: Split { train, test },
        unlabelled: unlabelled.0,
        first_unlabelled: unlabelled.1,
    })
}

fn load_part(
    name: String,
    part: &Part,
    input: &InputInfo,
    ctx: &mut Context,
    unlabelled: &mut (usize, Option<PathBuf>),
) -> Result<Dataset, DataError> {
    let (c, h, w) = match input.shape.as_slice() {
        &[c, h, w] => (c, h, w),
        _ => (0, 0, 0),
    };
    let files = images(&part.images)?;
    if files.is_empty() {
        return Err(DataError::new(
            &part.images,
            "has no images (.png, .jpg or .jpeg)",
        ));
    }
    if part.labels != part.images && !part.labels.is_dir() {
        return Err(DataError::new(
            &part.labels,
            format!(
                "is missing: the labels of {} go there",
                part.images.display()
            ),
        )
        .with_help("put a .txt of the same name beside each image's place in labels/"));
    }
    // Images as [0, 1] floats without normalization, turned back into the bytes they were.
    let raw_input = InputInfo {
        mean: Vec::new(),
        std: Vec::new(),
        ..input.clone()
    };
    let mut pixels = Vec::with_capacity(files.len() * c * h * w);
    let mut labels = Vec::with_capacity(files.len());
    let mut objects = Vec::with_capacity(files.len());
    for f in &files {
        let stem = f.file_stem().unwrap_or_default();
        let label_path = part.labels.join(stem).with_extension("txt");
        let objs = if label_path.is_file() {
            parse_labels(&label_path, &read_label_file(&label_path)?, ctx)?
        } else {
            unlabelled.0 += 1;
            unlabelled.1.get_or_insert_with(|| f.clone());
            Vec::new()
        };
        let img = crate::io::load_image_stretched(f, &raw_input)?;
        pixels.extend(
            img.iter()
                .map(|&x| (x * 255.0).round().clamp(0.0, 255.0) as u8),
        );
        labels.push(objs.first().map_or(0, |o| o.class as i64));
        objects.push(objs);
    }
    Ok(Dataset {
        name,
        sample_shape: vec![c, h, w],
        pixels: Pixels::U8(pixels),
        labels,
        classes: 0,
        class_names: Vec::new(),
        fields: Vec::new(),
        objects,
    })
}

/// Reads a bounded text file: at most `cap` bytes, UTF-8 (a leading byte-order mark dropped).
fn read_text(path: &Path, cap: u64, what: &str, help: &str) -> Result<String, DataError> {
    let (f, size) = crate::io::open_limited(path, Kind::Data)?;
    let too_large = |size: String| {
        DataError::new(
            path,
            format!(
                "{what} is too large: {size}, more than netc's limit of {}",
                show_bytes(cap)
            ),
        )
        .with_help(help.to_string())
    };
    if size > cap {
        return Err(too_large(show_bytes(size)));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    f.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| DataError::os(path, "cannot read", &e))?;
    if bytes.len() as u64 > cap {
        return Err(too_large("it grew while being read".into()));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        DataError::new(
            path,
            format!(
                "is not UTF-8 text (an invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(t) => t.to_string(),
        None => text,
    })
}

fn read_label_file(path: &Path) -> Result<String, DataError> {
    read_text(
        path,
        MAX_LABEL_BYTES,
        "the label file",
        "a label file holds one line per object of one image; split the image or check that \
         this is a label file",
    )
}

/// `path:line`, for errors about a line of a file.
fn at_line(path: &Path, line: usize) -> PathBuf {
    PathBuf::from(format!("{}:{line}", path.display()))
}

/// The class names of `classes.txt` at `path`, or `None` when there is no such file.
pub fn read_classes(path: &Path) -> Result<Option<Vec<String>>, DataError> {
    if !path.exists() {
        return Ok(None);
    }
    let text = read_text(
        path,
        MAX_CLASSES_BYTES,
        "classes.txt",
        "classes.txt names one class per line",
    )?;
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let used = lines.len() - lines.iter().rev().take_while(|l| l.is_empty()).count();
    if used == 0 {
        return Err(DataError::new(path, "names no classes")
            .with_help("write one class name per line, class 0 first"));
    }
    if used > MAX_CLASSES {
        return Err(DataError::new(
            path,
            format!("names {used} classes; netc allows up to {MAX_CLASSES}"),
        ));
    }
    let mut names: Vec<String> = Vec::with_capacity(used);
    let mut seen = std::collections::HashMap::new();
    for (i, l) in lines[..used].iter().enumerate() {
        if l.is_empty() {
            return Err(DataError::new(
                at_line(path, i + 1),
                format!("line {} is empty: line i names class i", i + 1),
            )
            .with_help("give every class a name, one per line, without blank lines"));
        }
        if let Some(first) = seen.insert(*l, i + 1) {
            return Err(DataError::new(
                at_line(path, i + 1),
                format!("class `{l}` is named twice (lines {first} and {})", i + 1),
            ));
        }
        names.push(l.to_string());
    }
    Ok(Some(names))
}

/// The objects of the label file `path` whose contents are `text`.
fn parse_labels(path: &Path, text: &str, ctx: &mut Context) -> Result<Vec<Object>, DataError> {
    let mut objects = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if n > MAX_LABEL_LINES {
            return Err(DataError::new(
                path,
                format!("has more than {MAX_LABEL_LINES} lines; netc reads at most that many objects per image"),
            )
            .with_help("check that this is a YOLO label file (one line per object)"));
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        objects.push(parse_object(path, n, &fields, ctx)?);
    }
    Ok(objects)
}

const BOX_FIELDS: [&str; 4] = ["cx", "cy", "w", "h"];

fn parse_object(
    path: &Path,
    n: usize,
    fields: &[&str],
    ctx: &mut Context,
) -> Result<Object, DataError> {
    let err = |msg: String| DataError::new(at_line(path, n), msg);
    let esc = |s: &str| crate::diag::escape_controls(s).into_owned();
    if fields.len() < 5 {
        return Err(err(format!(
            "expected `class cx cy w h` (then optionally landmarks `x y`), found {} value{}",
            fields.len(),
            if fields.len() == 1 { "" } else { "s" }
        ))
        .with_help(
            "one object per line: its class number and its box's centre and size as \
             fractions of the image, e.g. `0 0.5 0.5 0.25 0.4`",
        ));
    }
    if !(fields.len() - 5).is_multiple_of(2) {
        return Err(err(format!(
            "{} values: after `class cx cy w h` come landmarks as `x y` pairs, so a line has 5 \
             plus an even number of values",
            fields.len()
        ))
        .with_help("a landmark lacks its y, or there is a stray value"));
    }
    let class: usize = fields[0]
        .parse::<u64>()
        .ok()
        .and_then(|c| usize::try_from(c).ok())
        .ok_or_else(|| {
            err(format!(
                "`{}` is not a class number (0, 1, 2, …)",
                esc(fields[0])
            ))
        })?;
    if let Some(k) = ctx.classes
        && class >= k
    {
        return Err(err(format!(
            "class {class} is beyond the {k} classes of classes.txt (0–{})",
            k - 1
        ))
        .with_help("add the class's name to classes.txt (line i names class i), or fix the id"));
    }
    if class >= MAX_CLASSES {
        return Err(err(format!(
            "class {class} is too large (netc allows up to {MAX_CLASSES} classes)"
        )));
    }
    let mut values = Vec::with_capacity(fields.len() - 1);
    for (j, s) in fields[1..].iter().enumerate() {
        let what = match BOX_FIELDS.get(j) {
            Some(b) => (*b).to_string(),
            None => format!(
                "landmark {} {}",
                (j - 4) / 2 + 1,
                if j % 2 == 0 { "x" } else { "y" }
            ),
        };
        let v: f32 = s
            .parse()
            .map_err(|_| err(format!("`{}` ({what}) is not a number", esc(s))))?;
        if !v.is_finite() {
            return Err(err(format!(
                "{what} is `{}`: values must be finite numbers",
                esc(s)
            )));
        }
        values.push(v);
    }
    let (cx, cy, w, h) = (values[0], values[1], values[2], values[3]);
    for (v, name) in [(w, "width w"), (h, "height h")] {
        if v <= 0.0 {
            return Err(err(format!("the box's {name} is {v}; it must be positive"))
                .with_help("drop the line, or give the box its size as a fraction of the image"));
        }
    }
    let pixels_hint = "YOLO coordinates are fractions of the image's width and height (0–1): \
                       divide pixel coordinates by the image's size";
    let [x1, y1, x2, y2] = [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0];
    let inside = |v: f32| (-TOLERANCE..=1.0 + TOLERANCE).contains(&v);
    if ![x1, y1, x2, y2].into_iter().all(inside) {
        let help = if values[..4].iter().any(|&v| v > 1.0 + TOLERANCE) {
            pixels_hint
        } else {
            "the box must lie inside the image: clip it to 0–1 (or drop the line)"
        };
        return Err(err(format!(
            "the box (cx {cx}, cy {cy}, w {w}, h {h}) spans x {x1}–{x2}, y {y1}–{y2}: it \
             reaches outside the image (0–1)"
        ))
        .with_help(help));
    }
    let [x1, y1, x2, y2] = [x1, y1, x2, y2].map(|v| v.clamp(0.0, 1.0));
    if x2 <= x1 || y2 <= y1 {
        return Err(err(format!(
            "the box (cx {cx}, cy {cy}, w {w}, h {h}) lies on or past the image's edge: \
             nothing of it is inside the image"
        ))
        .with_help("drop the line"));
    }
    let mut landmarks = Vec::with_capacity((values.len() - 4) / 2);
    for (m, p) in values[4..].chunks_exact(2).enumerate() {
        if !inside(p[0]) || !inside(p[1]) {
            return Err(err(format!(
                "landmark {} ({}, {}) is outside the image (0–1)",
                m + 1,
                p[0],
                p[1]
            ))
            .with_help(if p[0] > 1.0 || p[1] > 1.0 {
                pixels_hint
            } else {
                "every landmark must be a point of the image; netc has no marker for a \
                 missing one (such as yolov5-face's -1)"
            }));
        }
        landmarks.push([p[0].clamp(0.0, 1.0), p[1].clamp(0.0, 1.0)]);
    }
    match &ctx.landmarks {
        None => ctx.landmarks = Some((landmarks.len(), at_line(path, n))),
        Some((count, first)) if *count != landmarks.len() => {
            return Err(err(format!(
                "{} landmark{}, but {} has {count}: every object needs the same number",
                landmarks.len(),
                if landmarks.len() == 1 { "" } else { "s" },
                first.display()
            ))
            .with_help("a model's landmark head has one size: give every object all landmarks"));
        }
        Some(_) => {}
    }
    Ok(Object {
        class,
        cx: (x1 + x2) / 2.0,
        cy: (y1 + y2) / 2.0,
        w: x2 - x1,
        h: y2 - y1,
        landmarks,
    })
}

/// The label file's text for `objects`: `class cx cy w h [x y ...]` per line, six decimals.
pub fn label_text(objects: &[Object]) -> String {
    let mut s = String::new();
    for o in objects {
        s.push_str(&format!(
            "{} {:.6} {:.6} {:.6} {:.6}",
            o.class, o.cx, o.cy, o.w, o.h
        ));
        for [x, y] in &o.landmarks {
            s.push_str(&format!(" {x:.6} {y:.6}"));
        }
        s.push('\n');
    }
    s
}

/// The entries a folder [`write`] made has; `--force` replaces only such a folder.
const WRITTEN: [&str; 3] = ["classes.txt", "train", "test"];

/// Writes `split` as a YOLO folder at `dir`: `classes.txt` (the class names, or the numbers
/// `0..classes` when the data have none), `train/` and `test/` with one PNG and one `.txt` per
/// sample (`000000.png`, `000000.txt`, ...; the `.txt` empty for a sample without objects).
///
/// The folder is built in a temporary directory beside `dir` and renamed into place: `dir`
/// is either as it was or complete. A `dir` that exists must be empty, or, with `force`, a
/// folder of this kind (only `classes.txt`, `train/`, `test/`), which is then replaced.
pub fn write(split: &Split, dir: &Path, force: bool) -> Result<(), DataError> {
    for d in [&split.train, &split.test] {
        check_writable(d)?;
    }
    let names: Vec<String> = if split.train.class_names.is_empty() {
        (0..split.train.classes.max(1))
            .map(|c| c.to_string())
            .collect()
    } else {
        split.train.class_names.clone()
    };
    if let Some(n) = names
        .iter()
        .find(|n| n.trim().is_empty() || n.contains(['\n', '\r']) || n.trim() != *n)
    {
        return Err(DataError::general(format!(
            "class name `{}` cannot be a line of classes.txt (empty, surrounded by spaces or \
             with a line break)",
            crate::diag::escape_controls(n)
        )));
    }
    let replace = check_destination(dir, force)?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(DataError::new(
            dir,
            format!(
                "cannot write: the directory {} does not exist",
                parent.display()
            ),
        ));
    }
    let base = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    let Some(base) = base.filter(|b| b != "..") else {
        return Err(DataError::new(dir, "cannot write: not a directory name"));
    };
    let tmp = parent.join(format!(".{base}.netc-tmp-{}", std::process::id()));
    if tmp.exists() {
        // Left by an earlier run of this process id that was killed: ours to remove.
        let _ = fs::remove_dir_all(&tmp);
    }
    let made = (|| {
        fs::create_dir(&tmp).map_err(|e| DataError::os(&tmp, "cannot create", &e))?;
        let mut classes = names.join("\n");
        classes.push('\n');
        fs::write(tmp.join("classes.txt"), classes)
            .map_err(|e| DataError::os(tmp.join("classes.txt"), "cannot write", &e))?;
        write_part(&split.train, &tmp.join("train"))?;
        write_part(&split.test, &tmp.join("test"))?;
        swap_in(&tmp, dir, &parent, &base, replace)
    })();
    if made.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    made
}

fn check_writable(d: &Dataset) -> Result<(), DataError> {
    let ok_shape = matches!(d.sample_shape.as_slice(), [1 | 3, h, w] if *h > 0 && *w > 0);
    if !ok_shape || !matches!(d.pixels, Pixels::U8(_)) {
        return Err(DataError::general(format!(
            "{} is not byte images [1 or 3, H, W]; only such images are written as PNG",
            d.name
        )));
    }
    if !d.objects.is_empty() && d.objects.len() != d.len() {
        return Err(DataError::general(format!(
            "{} has {} samples but {} object lists",
            d.name,
            d.len(),
            d.objects.len()
        )));
    }
    Ok(())
}

/// Whether `dir` exists and is to be replaced; an error when it may not be written.
fn check_destination(dir: &Path, force: bool) -> Result<bool, DataError> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(DataError::os(dir, "cannot write", &e)),
    };
    if !meta.is_dir() {
        return Err(DataError::new(dir, "exists and is not a directory")
            .with_help("choose another output directory"));
    }
    let mut entries = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| DataError::os(dir, "cannot list", &e))? {
        let e = e.map_err(|e| DataError::os(dir, "cannot list", &e))?;
        entries.push(e.file_name().to_string_lossy().into_owned());
    }
    if entries.is_empty() {
        return Ok(true);
    }
    if !force {
        return Err(DataError::new(dir, "is not empty").with_help(
            "give --force to replace a detection folder netc wrote, or choose another directory",
        ));
    }
    entries.sort();
    if let Some(other) = entries.iter().find(|e| !WRITTEN.contains(&e.as_str())) {
        return Err(DataError::new(
            dir,
            format!(
                "holds `{}`, which netc does not write: --force replaces only a detection \
                 folder netc wrote (classes.txt, train/, test/)",
                crate::diag::escape_controls(other)
            ),
        )
        .with_help("choose another output directory, or empty this one yourself"));
    }
    Ok(true)
}

/// Renames the finished `tmp` to `dir`; an existing `dir` (checked by [`check_destination`])
/// is moved aside first and removed after, or moved back if the rename fails.
fn swap_in(
    tmp: &Path,
    dir: &Path,
    parent: &Path,
    base: &str,
    replace: bool,
) -> Result<(), DataError> {
    if !replace {
        return fs::rename(tmp, dir).map_err(|e| DataError::os(dir, "cannot write", &e));
    }
    let old = parent.join(format!(".{base}.netc-old-{}", std::process::id()));
    fs::rename(dir, &old).map_err(|e| DataError::os(dir, "cannot replace", &e))?;
    if let Err(e) = fs::rename(tmp, dir) {
        let _ = fs::rename(&old, dir);
        return Err(DataError::os(dir, "cannot write", &e));
    }
    fs::remove_dir_all(&old).map_err(|e| {
        DataError::os(
            &old,
            "wrote the new folder, but cannot remove the old one",
            &e,
        )
    })
}

/// Writes one split's images and label files into the new directory `dir`.
fn write_part(d: &Dataset, dir: &Path) -> Result<(), DataError> {
    fs::create_dir(dir).map_err(|e| DataError::os(dir, "cannot create", &e))?;
    let (c, h, w) = match d.sample_shape.as_slice() {
        &[c, h, w] => (c, h, w),
        _ => unreachable!("checked by check_writable"),
    };
    let Pixels::U8(pixels) = &d.pixels else {
        unreachable!("checked by check_writable")
    };
    let digits = d.len().saturating_sub(1).to_string().len().max(6);
    let n = d.sample_len();
    let mut hwc = vec![0u8; n];
    for i in 0..d.len() {
        let chw = &pixels[i * n..(i + 1) * n];
        let (data, color) = if c == 1 {
            (chw, image::ExtendedColorType::L8)
        } else {
            for (p, v) in chw.iter().enumerate() {
                hwc[(p % (h * w)) * c + p / (h * w)] = *v;
            }
            (&hwc[..], image::ExtendedColorType::Rgb8)
        };
        let png = dir.join(format!("{i:0digits$}.png"));
        let mut bytes = Vec::new();
        image::ImageEncoder::write_image(
            image::codecs::png::PngEncoder::new(&mut bytes),
            data,
            w as u32,
            h as u32,
            color,
        )
        .map_err(|e| DataError::new(&png, format!("cannot encode the PNG: {e}")))?;
        fs::write(&png, bytes).map_err(|e| DataError::os(&png, "cannot write", &e))?;
        let txt = png.with_extension("txt");
        let objects = d.objects.get(i).map_or(&[][..], Vec::as_slice);
        fs::write(&txt, label_text(objects))
            .map_err(|e| DataError::os(&txt, "cannot write", &e))?;
    }
    Ok(())
}
