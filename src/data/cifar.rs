//! CIFAR-10's binary version.
//!
//! In: a directory holding `data_batch_1.bin` … `data_batch_5.bin` and `test_batch.bin`, or
//! the `cifar-10-batches-bin` folder the archive unpacks to inside it. Each file is a sequence
//! of 3073-byte records: one label byte (0–9), then 3072 pixel bytes, the 32×32 red plane,
//! then green, then blue (row-major), which is already the `[3, 32, 32]` layout of a model
//! input. Out: a [`Split`] of 50,000 training and 10,000 test byte images (for the full set).

use std::path::{Path, PathBuf};

use super::{DataError, Dataset, Pixels, Split, file_name};

const RECORD: usize = 1 + 3 * 32 * 32;
const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
const TEST_FILE: &str = "test_batch.bin";
const CLASS_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// The directory holding the batch files: `dir` itself or its `cifar-10-batches-bin`
/// subfolder, whichever has any of them. `None` when neither has.
pub fn find_dir(dir: &Path) -> Option<PathBuf> {
    [dir.to_path_buf(), dir.join("cifar-10-batches-bin")]
        .into_iter()
        .find(|d| {
            TRAIN_FILES
                .iter()
                .chain([&TEST_FILE])
                .any(|f| d.join(f).is_file())
        })
}

/// Loads the training batches and the test batch from `dir` (as [`find_dir`] gives it).
pub fn load_dir(dir: &Path) -> Result<Split, DataError> {
    let missing: Vec<&str> = TRAIN_FILES
        .iter()
        .chain([&TEST_FILE])
        .filter(|f| !dir.join(f).is_file())
        .copied()
        .collect();
    if !missing.is_empty() {
        return Err(DataError::new(
            dir,
            format!(
                "CIFAR-10 needs data_batch_1.bin … data_batch_5.bin and test_batch.bin; missing: {}",
                missing.join(", ")
            ),
        ));
    }
    let name = file_name(dir);
    let train_paths: Vec<PathBuf> = TRAIN_FILES.iter().map(|f| dir.join(f)).collect();
    let train = load_files(format!("{name} train"), &train_paths)?;
    let test = load_files(format!("{name} test"), &[dir.join(TEST_FILE)])?;
    Ok(Split { train, test })
}

/// Reads and concatenates batch files into one dataset.
pub fn load_files(name: String, paths: &[PathBuf]) -> Result<Dataset, DataError> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for p in paths {
        let bytes = crate::io::read_limited(p, crate::io::Kind::Data)?;
        read_batch(p, &bytes, &mut pixels, &mut labels)?;
    }
    Ok(Dataset {
        name,
        sample_shape: vec![3, 32, 32],
        pixels: Pixels::U8(pixels),
        labels,
        classes: 10,
        class_names: CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
        fields: Vec::new(),
        objects: Vec::new(),
    })
}

/// Appends the records of one batch file's bytes.
pub fn read_batch(
    path: &Path,
    bytes: &[u8],
    pixels: &mut Vec<u8>,
    labels: &mut Vec<i64>,
) -> Result<(), DataError> {
    if bytes.is_empty() {
        return Err(DataError::new(path, "the file is empty"));
    }
    if !bytes.len().is_multiple_of(RECORD) {
        return Err(DataError::new(
            path,
            format!(
                "{} bytes is not a whole number of CIFAR-10 records (3073 bytes each: 1 label \
                 byte and 3072 pixel bytes); {} records and {} bytes left over{}",
                bytes.len(),
                bytes.len() / RECORD,
                bytes.len() % RECORD,
                if bytes.len().is_multiple_of(RECORD + 1) {
                    " (3074-byte records are CIFAR-100's, which netc does not read)"
                } else {
                    ""
                }
            ),
        ));
    }
    pixels.reserve(bytes.len() / RECORD * (RECORD - 1));
    for (i, r) in bytes.chunks_exact(RECORD).enumerate() {
        if r[0] > 9 {
            return Err(DataError::new(
                path,
                format!(
                    "record {i} has label {}; CIFAR-10's labels are 0–9 (is this CIFAR-100, or \
                     not a CIFAR batch?)",
                    r[0]
                ),
            ));
        }
        labels.push(r[0] as i64);
        pixels.extend_from_slice(&r[1..]);
    }
    Ok(())
}

/// Bytes of a batch file holding `records` (label, 3072 pixels). For tests and tools.
pub fn encode(records: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.len() * RECORD);
    for (l, px) in records {
        out.push(*l);
        out.extend_from_slice(px);
    }
    out
}
