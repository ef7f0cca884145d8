//! Bounded reading of input files: the one place every input file is opened.
//!
//! In: a path and the [`Kind`] of file it should be (spec, image, array, weights, checkpoint,
//! training data). Out: the open file and its size ([`open_limited`]), or its whole contents
//! ([`read_limited`]); or an [`IoError`] naming the file, and for a file that is too large, its
//! size and the limit.
//!
//! The file is opened without blocking (`O_NONBLOCK`, so a FIFO or a terminal never makes
//! netc wait), then the open handle is checked: only regular files are read (a directory,
//! FIFO, socket or device such as `/dev/zero` or `/dev/stdin` is refused with what it is), and
//! the size it has now must be within the kind's cap ([`Kind::cap`], one table for all kinds)
//! before a byte is read. Reading stops one byte past the cap, so a file that grows while it is
//! read (or a `/proc` file, which reports size 0) cannot get past it either.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::Path;

use super::{IoError, os_reason};

/// What a file is read as; each kind has its own size limit ([`Kind::cap`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A spec (`.net`, YAML) or a file it imports.
    Spec,
    /// A PNG or JPEG given with `--input` or found in an image folder.
    Image,
    /// A NumPy `.npy` array given with `--input`.
    Array,
    /// A safetensors weights file (`--weights`).
    Weights,
    /// A training checkpoint (`--resume`).
    Checkpoint,
    /// A training data file (`--data`: IDX, CIFAR-10 batches, `.npz`), and each array
    /// decompressed from an `.npz`.
    Data,
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

impl Kind {
    /// The largest file of this kind netc reads, in bytes. Specs are text written by hand;
    /// images are compressed photos (the decoded size has its own limit in `image`); weights,
    /// checkpoints and datasets can be as large as real models and datasets are (memory itself
    /// is checked against a budget before a model is run).
    pub const fn cap(self) -> u64 {
        match self {
            Kind::Spec => 16 * MIB,
            Kind::Image => 64 * MIB,
            Kind::Array => 16 * GIB,
            Kind::Weights | Kind::Checkpoint => 64 * GIB,
            Kind::Data => 64 * GIB,
        }
    }

    /// `spec files`, for messages.
    pub fn what(self) -> &'static str {
        match self {
            Kind::Spec => "spec files",
            Kind::Image => "image files",
            Kind::Array => ".npy arrays",
            Kind::Weights => "weights files",
            Kind::Checkpoint => "checkpoints",
            Kind::Data => "training data files",
        }
    }
}

/// `16 MiB`, `1.5 GiB`, `512 bytes`.
pub fn show_bytes(n: u64) -> String {
    let (unit, name) = match n {
        n if n >= GIB => (GIB, "GiB"),
        n if n >= MIB => (MIB, "MiB"),
        n if n >= KIB => (KIB, "KiB"),
        _ => return format!("{n} bytes"),
    };
    if n.is_multiple_of(unit) {
        format!("{} {name}", n / unit)
    } else {
        format!("{:.1} {name}", n as f64 / unit as f64)
    }
}

/// The error for `size` bytes of `kind` over the cap.
pub fn too_large(path: &Path, kind: Kind, size: u64) -> IoError {
    IoError::new(
        path,
        format!(
            "the file is too large: {} ({size} bytes), more than the {} limit for {}",
            show_bytes(size),
            show_bytes(kind.cap()),
            kind.what()
        ),
    )
}

/// Opens `path` for reading as a `kind` file: a regular file of at most `kind.cap()` bytes.
/// Returns the file and its size. Never blocks (see the module documentation).
pub fn open_limited(path: &Path, kind: Kind) -> Result<(File, u64), IoError> {
    let mut opts = OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let f = opts
        .open(path)
        .map_err(|e| IoError::os(path, "cannot read", &e))?;
    let meta = f
        .metadata()
        .map_err(|e| IoError::os(path, "cannot read", &e))?;
    if !meta.is_file() {
        return Err(IoError::new(
            path,
            format!(
                "cannot read: {}; netc reads only regular files",
                not_regular(&meta)
            ),
        ));
    }
    if meta.len() > kind.cap() {
        return Err(too_large(path, kind, meta.len()));
    }
    Ok((f, meta.len()))
}

/// What a file that is not a regular file is, in words.
fn not_regular(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "is a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "is a FIFO (named pipe)";
        }
        if t.is_socket() {
            return "is a socket";
        }
        if t.is_char_device() {
            return "is a character device";
        }
        if t.is_block_device() {
            return "is a block device";
        }
    }
    "is not a regular file"
}

/// Reads the whole of `path` as a `kind` file (see [`open_limited`]): at most `kind.cap()`
/// bytes, even if the file grows while it is read.
pub fn read_limited(path: &Path, kind: Kind) -> Result<Vec<u8>, IoError> {
    let (f, size) = open_limited(path, kind)?;
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    f.take(kind.cap().saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| IoError::new(path, format!("cannot read: {}", os_reason(&e))))?;
    if bytes.len() as u64 > kind.cap() {
        return Err(IoError::new(
            path,
            format!(
                "the file is too large: it grew past the {} limit for {} while being read",
                show_bytes(kind.cap()),
                kind.what()
            ),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_in_words() {
        assert_eq!(show_bytes(512), "512 bytes");
        assert_eq!(show_bytes(16 * MIB), "16 MiB");
        assert_eq!(show_bytes(3 * GIB / 2), "1.5 GiB");
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_directories_are_refused_before_reading() {
        for (p, why) in [
            ("/dev/zero", "character device"),
            ("/dev/null", "character device"),
            ("/", "directory"),
        ] {
            let e = read_limited(Path::new(p), Kind::Spec).unwrap_err();
            assert!(e.message.contains(why), "{p}: {}", e.message);
        }
    }
}
