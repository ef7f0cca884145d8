//! Image folders: one subfolder of PNG/JPEG files per class.
//!
//! In: a directory laid out as `train/<class>/*` and `test/<class>/*` (`val/`, `valid/` or
//! `validation/` may stand for `test/`), or as `<class>/*` alone; and the model input the
//! images must fit. Out: a [`Split`] of byte images of the input's `[C, H, W]`.
//!
//! - Classes are the training subfolders sorted by name (byte order); label `i` is the `i`-th.
//!   A test folder may lack some classes, but may not have classes the training set lacks.
//! - Images are the `.png`, `.jpg` and `.jpeg` files (any case) directly in a class folder,
//!   sorted by name; other files and hidden entries are ignored.
//! - Each image is loaded by [`crate::io::load_image`] — converted to the input's channels,
//!   resized and center-cropped to its `H × W` as torchvision's `Resize` + `CenterCrop` — and
//!   kept as bytes (normalization happens when batching).
//! - With `<class>/*` alone, a sixth of each class (`n / 6`, rounded down) is held out for
//!   testing, chosen by a fixed seed (so the same files always form the test set) and kept in
//!   file order.

use std::path::{Path, PathBuf};

use super::rng::{Rng, TAG_HOLDOUT};
use super::{DataError, Dataset, Pixels, Split, file_name};
use crate::layer_graph::InputInfo;

/// How an image folder is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// `train/<class>/*` and a test folder (`test/`, `val/`, ...).
    Split { train: PathBuf, test: PathBuf },
    /// `<class>/*`: the test set is held out.
    Holdout,
}

pub(crate) const TEST_NAMES: [&str; 4] = ["test", "val", "valid", "validation"];

/// Recognizes an image folder; `None` when `dir` looks like none.
pub fn detect(dir: &Path) -> Result<Option<Layout>, DataError> {
    let train = dir.join("train");
    if train.is_dir() {
        return match TEST_NAMES.iter().map(|n| dir.join(n)).find(|p| p.is_dir()) {
            Some(test) => Ok(Some(Layout::Split { train, test })),
            None => Err(
                DataError::new(dir, "has a train/ folder but no test/ folder").with_help(
                    "put test images in test/<class>/, or put the class folders directly in the \
                 directory to hold out a sixth of each class for testing",
                ),
            ),
        };
    }
    for class in subdirs(dir)? {
        if !images(&class)?.is_empty() {
            return Ok(Some(Layout::Holdout));
        }
    }
    Ok(None)
}

/// Loads the image folder at `dir` laid out as `layout` for the model input `input`.
pub fn load(dir: &Path, layout: Layout, input: &InputInfo) -> Result<Split, DataError> {
    let name = file_name(dir);
    let targets = super::targets::read(dir)?;
    let attach = |(mut ds, files): (Dataset, Vec<PathBuf>)| -> Result<Dataset, DataError> {
        if let Some(t) = &targets {
            t.attach(dir, &mut ds, &files)?;
        }
        Ok(ds)
    };
    match layout {
        Layout::Split { train, test } => {
            let classes = class_dirs(&train)?;
            let class_names: Vec<String> = classes.iter().map(|c| file_name(c)).collect();
            let train = attach(load_classes(
                format!("{name} train"),
                &classes,
                &class_names,
                input,
            )?)?;
            let test_classes = class_dirs(&test)?;
            let mut test_dirs = Vec::new();
            for c in &test_classes {
                let cname = file_name(c);
                let Some(label) = class_names.iter().position(|n| *n == cname) else {
                    return Err(DataError::new(
                        c,
                        format!(
                            "test class `{cname}` has no training folder (training classes: {})",
                            class_names.join(", ")
                        ),
                    ));
                };
                test_dirs.push((label, c.clone()));
            }
            let test = attach(load_labelled(
                format!("{name} test"),
                &test_dirs,
                &class_names,
                input,
            )?)?;
            Ok(Split { train, test })
        }
        Layout::Holdout => {
            let classes = class_dirs(dir)?;
            let class_names: Vec<String> = classes.iter().map(|c| file_name(c)).collect();
            let all = attach(load_classes(name.clone(), &classes, &class_names, input)?)?;
            let (mut train_idx, mut test_idx) = (Vec::new(), Vec::new());
            let mut start = 0;
            for (c, count) in all.class_counts().into_iter().enumerate() {
                let mut idx: Vec<usize> = (start..start + count).collect();
                Rng::from_words(&[0, TAG_HOLDOUT, c as u64]).shuffle(&mut idx);
                let held = count / 6;
                let mut test: Vec<usize> = idx[..held].to_vec();
                let mut train: Vec<usize> = idx[held..].to_vec();
                test.sort_unstable();
                train.sort_unstable();
                test_idx.extend(test);
                train_idx.extend(train);
                start += count;
            }
            if test_idx.is_empty() {
                return Err(DataError::new(
                    dir,
                    "too few images to hold out a test set: a sixth of each class is held out, \
                     so some class needs at least 6 images",
                )
                .with_help("or give separate train/<class>/ and test/<class>/ folders"));
            }
            Ok(Split {
                train: all.subset(&train_idx, format!("{name} train (held-in 5/6)")),
                test: all.subset(&test_idx, format!("{name} test (held-out 1/6)")),
            })
        }
    }
}

/// The class folders of `dir`, sorted; an error when there are none.
fn class_dirs(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let d = subdirs(dir)?;
    if d.is_empty() {
        return Err(DataError::new(
            dir,
            "no class folders: expected one subfolder of images per class",
        ));
    }
    Ok(d)
}

/// Loads the classes `dirs`, labelled by position; also the image files in sample order.
fn load_classes(
    name: String,
    dirs: &[PathBuf],
    class_names: &[String],
    input: &InputInfo,
) -> Result<(Dataset, Vec<PathBuf>), DataError> {
    let labelled: Vec<(usize, PathBuf)> = dirs.iter().cloned().enumerate().collect();
    load_labelled(name, &labelled, class_names, input)
}

fn load_labelled(
    name: String,
    dirs: &[(usize, PathBuf)],
    class_names: &[String],
    input: &InputInfo,
) -> Result<(Dataset, Vec<PathBuf>), DataError> {
    // Images as [0, 1] floats without normalization, turned back into the bytes they were.
    let raw_input = InputInfo {
        mean: Vec::new(),
        std: Vec::new(),
        ..input.clone()
    };
    let (c, h, w) = match raw_input.shape.as_slice() {
        &[c, h, w] => (c, h, w),
        _ => (0, 0, 0),
    };
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let mut all_files = Vec::new();
    for (label, dir) in dirs {
        let files = images(dir)?;
        if files.is_empty() {
            return Err(DataError::new(
                dir,
                "class folder has no images (.png, .jpg or .jpeg)",
            ));
        }
        for f in files {
            let img = crate::io::load_image(&f, &raw_input)?;
            pixels.extend(
                img.iter()
                    .map(|&x| (x * 255.0).round().clamp(0.0, 255.0) as u8),
            );
            labels.push(*label as i64);
            all_files.push(f);
        }
    }
    let ds = Dataset {
        name,
        sample_shape: vec![c, h, w],
        pixels: Pixels::U8(pixels),
        labels,
        classes: class_names.len(),
        class_names: class_names.to_vec(),
        fields: Vec::new(),
        objects: Vec::new(),
    };
    Ok((ds, all_files))
}

/// Visible subdirectories of `dir`, sorted by name.
fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out: Vec<PathBuf> = entries(dir)?.into_iter().filter(|p| p.is_dir()).collect();
    out.sort();
    Ok(out)
}

/// The image files directly in `dir`, sorted by name.
pub(crate) fn images(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out: Vec<PathBuf> = entries(dir)?
        .into_iter()
        .filter(|p| {
            let ext = p
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            matches!(ext.as_str(), "png" | "jpg" | "jpeg") && p.is_file()
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Visible entries of `dir`.
fn entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::os(dir, "cannot list", &e))?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| DataError::os(dir, "cannot list", &e))?;
        if !e.file_name().to_string_lossy().starts_with('.') {
            out.push(e.path());
        }
    }
    Ok(out)
}
