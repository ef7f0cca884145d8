//! Fashion-MNIST: the subset compiled into netc, and the full set as Debian installs it.
//!
//! In: nothing ([`bundled`]: the four gzip'd IDX files of `data/fashion-mnist/`, embedded in
//! the binary with `include_bytes!`, so training works from any directory with no files
//! around), or the directory of the full set ([`fashion_mnist`]). Out: a [`Split`] of
//! 1×28×28 byte images in 10 classes: 10,000 training and 2,000 test images for the subset
//! (1,000 and 200 per class; how they were chosen is in `data/fashion-mnist/README.md`), 60,000
//! and 10,000 for the full set.

use std::path::Path;

use super::{DataError, Split, idx};

/// Where Debian's `dataset-fashion-mnist` package puts the full Fashion-MNIST.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's class names, by label.
pub const CLASS_NAMES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

const TRAIN_IMAGES: &[u8] = include_bytes!("../../data/fashion-mnist/train-images-idx3-ubyte.gz");
const TRAIN_LABELS: &[u8] = include_bytes!("../../data/fashion-mnist/train-labels-idx1-ubyte.gz");
const TEST_IMAGES: &[u8] = include_bytes!("../../data/fashion-mnist/t10k-images-idx3-ubyte.gz");
const TEST_LABELS: &[u8] = include_bytes!("../../data/fashion-mnist/t10k-labels-idx1-ubyte.gz");

/// The bundled Fashion-MNIST subset: 10,000 training and 2,000 test images.
pub fn bundled() -> Result<Split, DataError> {
    let part = |split: &str, images: &[u8], labels: &[u8], iname: &str, lname: &str| {
        let ip = Path::new("bundled").join(iname);
        let lp = Path::new("bundled").join(lname);
        idx::dataset(
            format!("fashion-mnist (bundled subset) {split}"),
            &ip,
            idx::parse(&ip, images.to_vec())?,
            &lp,
            idx::parse(&lp, labels.to_vec())?,
        )
    };
    let train = part(
        "train",
        TRAIN_IMAGES,
        TRAIN_LABELS,
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    )?;
    let test = part(
        "test",
        TEST_IMAGES,
        TEST_LABELS,
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    )?;
    Ok(with_names(Split { train, test }))
}

/// The full Fashion-MNIST from `dir` (normally [`FASHION_MNIST_DIR`]); when the directory is
/// missing, the error says how to install it.
pub fn fashion_mnist(dir: &Path) -> Result<Split, DataError> {
    if !dir.is_dir() {
        return Err(DataError::new(
            dir,
            "the full Fashion-MNIST is not installed",
        )
        .with_help(
            "install it with `sudo apt-get install dataset-fashion-mnist` (or pass `--data DIR`)",
        ));
    }
    let Some(files) = idx::find_files(dir) else {
        return Err(DataError::new(
            dir,
            "no Fashion-MNIST files here (train-images-idx3-ubyte.gz, ...)",
        )
        .with_help(
            "reinstall it with `sudo apt-get install --reinstall dataset-fashion-mnist` (or \
             pass `--data DIR`)",
        ));
    };
    let mut split = idx::load_files(dir, &files)?;
    split.train.name = "fashion-mnist train".into();
    split.test.name = "fashion-mnist test".into();
    Ok(with_names(split))
}

fn with_names(mut split: Split) -> Split {
    let names: Vec<String> = CLASS_NAMES.iter().map(|s| s.to_string()).collect();
    for d in [&mut split.train, &mut split.test] {
        d.classes = d.classes.max(names.len());
        d.class_names = names.clone();
    }
    split
}
