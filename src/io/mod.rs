//! Files in and out of a model: weights, arrays and images.
//!
//! In: paths to files written by other tools (PyTorch's `safetensors` state dicts, NumPy
//! `.npy` arrays, PNG/JPEG images) plus the [`LayerGraph`](crate::layer_graph::LayerGraph) or
//! [`InputInfo`](crate::layer_graph::InputInfo) they must fit. Out: checked values in `ndarray`
//! arrays ([`Weights`], `ArrayD<f32>`/`ArrayD<i64>`), or an [`IoError`] that names the file and
//! lists every problem found, not only the first.
//!
//! - [`weights`]: a model's parameters and buffers, one [`Value`] per
//!   `LayerGraph::params` entry. Load and save safetensors by parameter path; seeded
//!   initialization for running without weights.
//! - [`npy`]: NumPy `.npy` reader and writer (`<f4`, `<f8`, `<i8`, C order).
//! - [`image`]: a PNG or JPEG as a `[C, H, W]` model input (channels, resize + center crop,
//!   `[0, 1]` scaling, mean/std normalization).
//! - [`read`]: where every input file of netc is opened ([`read_limited`], [`open_limited`]):
//!   regular files only, never blocking, within a size cap per [`Kind`] checked before reading.
//!
//! Everything read from disk is untrusted: files are opened through [`read`], sizes declared
//! in headers are checked against the file's length before anything is allocated, and nothing
//! here panics on a bad file. Files are
//! written atomically ([`write_atomic`]): a crash or error never leaves a half-written file in
//! place of a good one.

pub mod image;
pub mod npy;
pub mod read;
pub mod stale;
pub mod weights;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub use image::{load_image, load_image_stretched};
pub use read::{Kind, open_limited, read_limited};
pub use weights::{Value, Weights};

/// Why a file could not be read or written.
///
/// Displays as `error: <path>: <message>` followed by one indented line per detail (every
/// missing tensor, every shape mismatch, ...), control characters escaped
/// ([`crate::diag::escape_controls`]). The CLI prints it and exits with status 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoError {
    pub path: PathBuf,
    pub message: String,
    pub details: Vec<String>,
}

impl IoError {
    pub fn new(path: impl AsRef<Path>, message: impl Into<String>) -> IoError {
        IoError {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn with_details(mut self, details: Vec<String>) -> IoError {
        self.details = details;
        self
    }

    /// An error from the operating system while doing `what` (e.g. "cannot read").
    pub(crate) fn os(path: impl AsRef<Path>, what: &str, e: &io::Error) -> IoError {
        IoError::new(path, format!("{what}: {}", os_reason(e)))
    }
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let esc = crate::diag::escape_controls;
        let path = self.path.display().to_string();
        write!(f, "error: {}: {}", esc(&path), esc(&self.message))?;
        for d in &self.details {
            write!(f, "\n  {}", esc(d))?;
        }
        Ok(())
    }
}

impl std::error::Error for IoError {}

/// The OS error in words, without Rust's `(os error 2)` suffix.
pub(crate) fn os_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file or directory".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::IsADirectory => "is a directory".into(),
        io::ErrorKind::UnexpectedEof => "the file ends too early".into(),
        _ => {
            let s = e.to_string();
            match s.find(" (os error") {
                Some(i) => s[..i].to_string(),
                None => s,
            }
        }
    }
}

/// Writes `path` atomically: `write` fills a temporary file in the same directory, which is
/// flushed and fsynced, then renamed over `path`; then the directory is fsynced so the rename
/// itself is durable. Readers see either the old file or the complete new one, never a partial
/// file. On any error the temporary file is removed and an existing `path` is left untouched.
/// An existing file's permissions are kept.
pub fn write_atomic(
    path: impl AsRef<Path>,
    write: impl FnOnce(&mut BufWriter<&File>) -> io::Result<()>,
) -> Result<(), IoError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let path = path.as_ref();
    let Some(name) = path.file_name() else {
        return Err(IoError::new(path, "cannot write: not a file name"));
    };
    if path.is_dir() {
        return Err(IoError::new(path, "cannot write: is a directory"));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| {
            let why = if !dir.is_dir() {
                format!("the directory {} does not exist", dir.display())
            } else {
                format!(
                    "cannot create a temporary file in {}: {}",
                    dir.display(),
                    os_reason(&e)
                )
            };
            IoError::new(path, format!("cannot write: {why}"))
        })?;
    let result = (|| -> io::Result<()> {
        {
            let mut w = BufWriter::with_capacity(1 << 20, &file);
            write(&mut w)?;
            w.flush()?;
        }
        if let Ok(meta) = fs::metadata(path) {
            // Keep the permissions of the file being replaced; not fatal if it fails.
            let _ = file.set_permissions(meta.permissions());
        }
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(IoError::os(path, "cannot write", &e));
    }
    // Make the rename durable. Directories cannot be opened for syncing on every platform.
    #[cfg(unix)]
    if let Ok(d) = File::open(&dir) {
        d.sync_all()
            .map_err(|e| IoError::os(path, "cannot sync the directory after writing", &e))?;
    }
    Ok(())
}

/// `[4, 1, 28, 28]`
pub(crate) use crate::layer_graph::show_shape;
