//! Training data: files on disk (or the bundled set) in, batches of model inputs out.
//!
//! In: a data source ([`open`]: `bundled`, `fashion-mnist`, `detection`, `localization`, or a path to an IDX directory, a
//! CIFAR-10 directory, an `.npz` file or directory, or an image folder) and the model input it
//! must feed ([`InputInfo`]: shape `[C, H, W]`, per-channel mean and std). Out: a [`Split`] of
//! two in-memory [`Dataset`]s (pixels kept as bytes when the files store bytes), and through a
//! [`Loader`], [`Batch`]es of `N × C × H × W` f32 values, augmented and normalized, with their
//! labels. This module stands beside the compiler pipeline: the training loop calls it and
//! feeds the batches to the compiled model.
//!
//! - [`idx`]: MNIST-style IDX files (raw or gzip'd), one directory of four files.
//! - [`cifar`]: CIFAR-10's binary batches.
//! - [`npz`]: NumPy `.npz` archives of `x` and `y`.
//! - [`folder`]: image folders, one subfolder per class; [`targets`]: a `targets.csv` or
//!   `targets.json` of per-image targets beside them.
//! - [`yolo`]: detection folders in the YOLO text format (a `.txt` of boxes beside each
//!   image), read and written.
//! - [`synth_detection`]: the synthetic detection set composed from the bundled Fashion-MNIST
//!   (`detection`; `localization`: at most one object per image).
//! - [`bundled`]: the Fashion-MNIST subset compiled into the binary, and the full set as
//!   Debian installs it.
//! - [`loader`]: normalization, seeded shuffling, batching, the prefetch thread.
//! - [`augment`]: per-sample random flips, crops, rotation, affine maps, color jitter and PCA
//!   lighting: draws the parameters.
//! - [`transform`]: the same transforms with explicit parameters (torchvision's functionals).
//! - [`rng`]: the small deterministic PRNG every random choice here uses.
//!
//! Everything read is untrusted: sizes declared in headers are checked against what the file
//! holds before they are used, decompression grows only as data arrives, and malformed files
//! give a [`DataError`] that names the file and says what is wrong; nothing here panics on a
//! bad file.

pub mod augment;
pub mod augment_boxes;
pub mod bundled;
pub mod cifar;
pub mod folder;
pub mod idx;
pub mod loader;
pub mod mapped;
pub mod npz;
pub mod rng;
pub mod synth_detection;
pub mod targets;
pub mod transform;
pub mod yolo;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::io::IoError;
use crate::layer_graph::InputInfo;

pub use bundled::{FASHION_MNIST_DIR, bundled, fashion_mnist};
pub use loader::{Batch, Batches, Loader, LoaderOptions, Normalize};

/// Sample pixels, in the element type the files store.
#[derive(Debug, Clone, PartialEq)]
pub enum Pixels {
    /// Bytes 0–255 (IDX, CIFAR, images, uint8 `.npz`): scaled by 1/255 before normalization.
    U8(Vec<u8>),
    /// Floats used as they are (float32 or float64 `.npz`).
    F32(Vec<f32>),
    /// Floats used as they are, in a memory-mapped file ([`mapped`]: the feature cache past
    /// its memory bound).
    Mapped(mapped::MappedF32),
}

impl Pixels {
    /// The values when they are floats (in memory or mapped).
    pub fn floats(&self) -> Option<&[f32]> {
        match self {
            Pixels::U8(_) => None,
            Pixels::F32(p) => Some(p),
            Pixels::Mapped(p) => Some(p),
        }
    }

    /// How many values are stored.
    pub fn len(&self) -> usize {
        match self {
            Pixels::U8(p) => p.len(),
            Pixels::F32(p) => p.len(),
            Pixels::Mapped(p) => p.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Labelled samples in memory: `len()` samples of `sample_shape` (`[C, H, W]` for images; any
/// rank ≥ 1, e.g. `[84]` for feature vectors), stored one after another in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Where it came from, for messages (`fashion-mnist (bundled subset) train`, a path).
    pub name: String,
    pub sample_shape: Vec<usize>,
    pub pixels: Pixels,
    /// One label per sample, each in `0..classes`.
    pub labels: Vec<i64>,
    /// The number of classes: the class folders of an image folder, 10 for CIFAR-10, and
    /// otherwise one more than the largest label of the split; 0 when the data have no labels
    /// (an `.npz` of inputs and targets without `y`).
    pub classes: usize,
    /// Class names by label when the source has them (image folders, Fashion-MNIST,
    /// CIFAR-10); empty otherwise.
    pub class_names: Vec<String>,
    /// Per-sample values beside the images and labels: the targets of named model outputs
    /// (regression vectors, multi-label vectors) and the values of further model inputs, each
    /// named as the output or input it feeds (`.npz` arrays, an image folder's targets file).
    pub fields: Vec<Field>,
    /// Annotated objects per sample (detection data: one list per sample, possibly empty);
    /// empty when the data have no object annotations.
    pub objects: Vec<Vec<crate::detect::Object>>,
}

/// Named per-sample values of a [`Dataset`]: `shape` per sample, `values` the samples one
/// after another.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
    /// Where the values came from (for messages): a file, or a file and a key.
    pub source: String,
}

impl Field {
    /// Values per sample.
    pub fn width(&self) -> usize {
        self.shape.iter().product()
    }
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per sample: the product of `sample_shape`.
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// How many samples each class has.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &l in &self.labels {
            if let Some(c) = usize::try_from(l).ok().and_then(|l| counts.get_mut(l)) {
                *c += 1;
            }
        }
        counts
    }

    /// The samples at `indices`, in that order, as a new dataset named `name`. Every index
    /// must be below `len()` (it panics otherwise, like slice indexing).
    pub fn subset(&self, indices: &[usize], name: impl Into<String>) -> Dataset {
        let n = self.sample_len();
        let pixels = match &self.pixels {
            Pixels::U8(p) => Pixels::U8(
                indices
                    .iter()
                    .flat_map(|&i| &p[i * n..(i + 1) * n])
                    .copied()
                    .collect(),
            ),
            Pixels::F32(_) | Pixels::Mapped(_) => {
                let p = self.pixels.floats().unwrap_or_default();
                Pixels::F32(
                    indices
                        .iter()
                        .flat_map(|&i| &p[i * n..(i + 1) * n])
                        .copied()
                        .collect(),
                )
            }
        };
        let fields = self
            .fields
            .iter()
            .map(|f| {
                let w = f.width();
                Field {
                    values: indices
                        .iter()
                        .flat_map(|&i| &f.values[i * w..(i + 1) * w])
                        .copied()
                        .collect(),
                    ..f.clone()
                }
            })
            .collect();
        Dataset {
            name: name.into(),
            sample_shape: self.sample_shape.clone(),
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes,
            class_names: self.class_names.clone(),
            fields,
            objects: if self.objects.is_empty() {
                Vec::new()
            } else {
                indices.iter().map(|&i| self.objects[i].clone()).collect()
            },
        }
    }
}

/// A training set and a test set of the same kind of samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub train: Dataset,
    pub test: Dataset,
}

impl Split {
    /// Checks that a classifier with `outputs` output values (named `output` in messages) can
    /// take these labels: every label must index an output.
    pub fn check_classes(&self, outputs: usize, output: &str) -> Result<(), DataError> {
        let classes = self.train.classes.max(self.test.classes);
        if classes > outputs {
            return Err(DataError::general(format!(
                "the data have {classes} classes (labels 0–{}) but the model's output `{output}` \
                 has {outputs} values ({})",
                classes - 1,
                self.train.name
            ))
            .with_help(format!("give the model's last layer {classes} outputs")));
        }
        Ok(())
    }

    /// Gives both halves the same number of classes (the larger), so a test set that happens
    /// to lack the last class still has the training set's label range.
    fn unify_classes(mut self) -> Split {
        let classes = self.train.classes.max(self.test.classes);
        self.train.classes = classes;
        self.test.classes = classes;
        if self.train.class_names.is_empty() {
            self.train.class_names = self.test.class_names.clone();
        }
        self.test.class_names = self.train.class_names.clone();
        self
    }
}

/// Why data could not be loaded: the file (when there is one), what is wrong with it, and
/// what to do about it when there is something to say.
///
/// Displays as `error: <path>: <message>`, then `  help: <help>`, control characters escaped
/// ([`crate::diag::escape_controls`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataError {
    pub path: Option<PathBuf>,
    pub message: String,
    pub help: Option<String>,
}

impl DataError {
    /// An error about the file or directory `path`.
    pub fn new(path: impl AsRef<Path>, message: impl Into<String>) -> DataError {
        DataError {
            path: Some(path.as_ref().to_path_buf()),
            message: message.into(),
            help: None,
        }
    }

    /// An error about no file in particular.
    pub fn general(message: impl Into<String>) -> DataError {
        DataError {
            path: None,
            message: message.into(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> DataError {
        self.help = Some(help.into());
        self
    }

    /// An error from the operating system while doing `what` (e.g. "cannot read").
    pub(crate) fn os(path: impl AsRef<Path>, what: &str, e: &std::io::Error) -> DataError {
        DataError::new(path, format!("{what}: {}", crate::io::os_reason(e)))
    }
}

impl From<IoError> for DataError {
    fn from(e: IoError) -> DataError {
        let mut message = e.message;
        for d in e.details {
            message.push_str("; ");
            message.push_str(&d);
        }
        DataError {
            path: Some(e.path),
            message,
            help: None,
        }
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let esc = crate::diag::escape_controls;
        match &self.path {
            Some(p) => write!(
                f,
                "error: {}: {}",
                esc(&p.display().to_string()),
                esc(&self.message)
            )?,
            None => write!(f, "error: {}", esc(&self.message))?,
        }
        if let Some(h) = &self.help {
            write!(f, "\n  help: {}", esc(h))?;
        }
        Ok(())
    }
}

impl std::error::Error for DataError {}

/// Loads the training and test sets named by `source` for the model input `input`.
///
/// `source` is one of:
/// - `bundled`: the Fashion-MNIST subset compiled into netc (10,000 training and 2,000 test
///   images, 1×28×28; see `data/fashion-mnist/README.md`);
/// - `fashion-mnist`: the full Fashion-MNIST where Debian's `dataset-fashion-mnist` installs it
///   ([`FASHION_MNIST_DIR`]); when it is missing, the error says how to install it;
/// - `detection`: the default synthetic detection split ([`synth_detection::default_split`]:
///   2,000 training and 400 test images at the input's size, 1–4 Fashion-MNIST objects each),
///   generated when loaded; `localization`: the same with 0 or 1 object per image;
/// - any other string is a path (write `./fashion-mnist` for a directory of that name), and
///   what it holds decides how it is read:
///   - a directory with `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
///     `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte` (each raw or `.gz`; also in a
///     `raw/` subfolder, as torchvision stores them): [`idx`];
///   - a directory with CIFAR-10's `data_batch_1.bin` … `data_batch_5.bin` and
///     `test_batch.bin` (or its `cifar-10-batches-bin` subfolder): [`cifar`];
///   - an `.npz` file, or a directory with `train.npz` and `test.npz`: [`npz`];
///   - a YOLO detection folder (`train/` and `test/` of images with a `.txt` of boxes beside
///     each, or `images/train/` + `labels/train/` ...): [`yolo`] (images are resized to the
///     model's input; a one-line warning counts images without labels);
///   - a directory with `train/<class>/` and `test/<class>/` image folders, or only
///     `<class>/` folders: [`folder`] (images are resized to the model's input).
///
/// The data's sample shape must equal the input's shape; the error says both when they
/// differ. Images are `[C, H, W]`; an input of another rank (a feature vector `[84]`) takes
/// `.npz` data whose `x` is `[N, ...]` with the input's shape after `N`.
pub fn open(source: &str, input: &InputInfo) -> Result<Split, DataError> {
    let shape = input_shape(input)?;
    let split = match source {
        "bundled" => bundled()?,
        "fashion-mnist" => fashion_mnist(Path::new(FASHION_MNIST_DIR))?,
        "detection" => synth_detection::default_split(input)?,
        "localization" => synth_detection::localization_split(input)?,
        path => open_path(Path::new(path), input, shape)?,
    };
    check_shape(&split.train, input)?;
    check_shape(&split.test, input)?;
    if split.train.is_empty() {
        return Err(DataError::general(format!(
            "the training set of {} is empty",
            split.train.name
        )));
    }
    Ok(split.unify_classes())
}

/// The model input's shape: any rank ≥ 1, no size 0.
fn input_shape(input: &InputInfo) -> Result<&[usize], DataError> {
    match input.shape.as_slice() {
        s if !s.is_empty() && !s.contains(&0) => Ok(s),
        s => Err(DataError::general(format!(
            "the model's input `{}` has shape {}; training data are samples of a shape with \
             at least one axis and no empty one ([C, H, W] for images, [F] for vectors)",
            input.name,
            crate::io::show_shape(s)
        ))),
    }
}

/// Whether samples of this shape are images `[C, H, W]` (what image files, IDX and CIFAR
/// hold, and what augmentations act on).
pub fn is_image(shape: &[usize]) -> bool {
    shape.len() == 3
}

fn open_path(path: &Path, input: &InputInfo, shape: &[usize]) -> Result<Split, DataError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        let err = DataError::os(path, "cannot open the data", &e);
        let name = path
            .to_string_lossy()
            .to_ascii_lowercase()
            .replace(['-', '_'], "");
        if e.kind() == std::io::ErrorKind::NotFound && name.starts_with("cifar") {
            // A dataset's name, not a path: netc downloads nothing.
            err.with_help(
                "CIFAR-10 is not built in: download its binary version (cifar-10-binary.tar.gz \
                 from https://www.cs.toronto.edu/~kriz/cifar.html), unpack it and give the \
                 directory, e.g. `data/cifar-10-batches-bin`",
            )
        } else if e.kind() == std::io::ErrorKind::NotFound {
            err.with_help(
                "give a directory or .npz file of training data, `bundled` (the built-in \
                 Fashion-MNIST subset) or `fashion-mnist` (the full set, installed by \
                 `sudo apt-get install dataset-fashion-mnist`)",
            )
        } else {
            err
        }
    })?;
    // Not a directory: a file, read as an `.npz` (a FIFO or device is refused there).
    if !meta.is_dir() {
        return npz::load_file(path, shape).map_err(|e| {
            // A regular IDX or CIFAR file given where a split was expected; any other
            // refusal (a FIFO or device so named, a file too large) is reported as it is.
            if meta.is_file() && is_idx_or_cifar_file(path) {
                DataError::new(path, "a single data file, not a training/test split").with_help(
                    match path.parent() {
                        Some(d) if !d.as_os_str().is_empty() => {
                            format!("pass the directory that holds it: {}", d.display())
                        }
                        _ => "pass the directory that holds it".to_string(),
                    },
                )
            } else {
                e
            }
        });
    }
    // Only `.npz` archives hold samples other than images.
    if !is_image(shape) && !npz::is_split_dir(path) {
        return Err(DataError::new(
            path,
            format!(
                "the model's input `{}` is {}, not an image [C, H, W]: such inputs train on .npz \
                 data only",
                input.name,
                crate::io::show_shape(shape)
            ),
        )
        .with_help(format!(
            "give an .npz file whose `x` is [N, {}] (float32) with labels `y` [N] (`netc \
             features` writes one), or a directory with train.npz and test.npz",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if let Some(files) = idx::find_files(path) {
        return idx::load_files(path, &files);
    }
    if let Some(dir) = cifar::find_dir(path) {
        return cifar::load_dir(&dir);
    }
    if npz::is_split_dir(path) {
        return npz::load_dir(path, shape);
    }
    if let Some(layout) = yolo::detect(path)? {
        let loaded = yolo::load(path, &layout, input)?;
        if let Some(w) = loaded.warning() {
            eprintln!("{w}");
        }
        return Ok(loaded.split);
    }
    if let Some(layout) = folder::detect(path)? {
        return folder::load(path, layout, input);
    }
    Err(
        DataError::new(path, "no training data found in this directory").with_help(
            "netc reads a directory of MNIST-style IDX files (train-images-idx3-ubyte[.gz], \
         train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]), \
         CIFAR-10's binary batches (data_batch_1.bin … data_batch_5.bin, test_batch.bin), \
         train.npz + test.npz, or image folders (train/<class>/*.png and test/<class>/*.png, \
         or <class>/*.png)",
        ),
    )
}

fn is_idx_or_cifar_file(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    name.contains("-ubyte") || name.contains(".idx") || name.ends_with(".bin")
}

/// `1×28×28`, `84`
fn show_chw(s: &[usize]) -> String {
    s.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×")
}

fn check_shape(d: &Dataset, input: &InputInfo) -> Result<(), DataError> {
    let want = input_shape(input)?;
    if d.sample_shape == want {
        return Ok(());
    }
    let what = if is_image(&d.sample_shape) {
        "images"
    } else {
        "samples"
    };
    Err(DataError::general(format!(
        "the data has {} {what} but the model's input `{}` is {} ({})",
        show_chw(&d.sample_shape),
        input.name,
        show_chw(want),
        d.name
    ))
    .with_help(format!(
        "give the model the input shape {}, or train on data of shape {} \
         (image folders are resized to the model's input when loaded)",
        crate::io::show_shape(&d.sample_shape),
        show_chw(want)
    )))
}

/// Checks labels are in `0..limit` (when given) and returns the number of classes: one more
/// than the largest label. `what` names the file for the error.
pub(crate) fn check_labels(
    path: &Path,
    labels: &[i64],
    limit: Option<usize>,
) -> Result<usize, DataError> {
    let mut max = -1i64;
    for (i, &l) in labels.iter().enumerate() {
        if l < 0 {
            return Err(DataError::new(
                path,
                format!("label {l} of sample {i} is negative; labels are class numbers 0, 1, …"),
            ));
        }
        if let Some(limit) = limit
            && l as u64 >= limit as u64
        {
            return Err(DataError::new(
                path,
                format!("label {l} of sample {i} is out of range: there are {limit} classes"),
            ));
        }
        max = max.max(l);
    }
    // Labels index one-hot vectors: refuse absurd class counts rather than allocate them.
    if max >= MAX_CLASSES as i64 {
        return Err(DataError::new(
            path,
            format!("label {max} is too large (netc allows up to {MAX_CLASSES} classes)"),
        ));
    }
    Ok((max + 1) as usize)
}

/// The most classes a dataset may have.
pub const MAX_CLASSES: usize = 1 << 20;

/// A file's name for messages and dataset names (control characters escaped: dataset names
/// are printed).
pub(crate) fn file_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    crate::diag::escape_controls(&name).into_owned()
}
