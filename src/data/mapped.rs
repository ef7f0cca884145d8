//! f32 values kept in a memory-mapped file instead of the heap: the frozen-prefix feature
//! cache's storage past its memory bound.
//!
//! In: values streamed to a [`Spill`] (a new file in a chosen directory). Out: a
//! [`MappedF32`], the values as one read-only `&[f32]` backed by the file through `mmap`, so
//! the kernel pages them in and out as memory allows instead of the process holding them.
//!
//! The file is unlinked as soon as it is created: it has no name while it is written and
//! mapped, takes disk space only while the process holds it, and is gone when the process
//! ends however it ends (a crash, Ctrl-C), so nothing is left behind in the directory.
//! Before writing, [`Spill::create`] checks that the directory's file system has room for the
//! whole cache and keeps [`DISK_RESERVE`] free beside it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Disk space left free beside a spilled cache: 1 GiB, or a tenth of what is free when that
/// is less.
pub const DISK_RESERVE: u64 = 1 << 30;

/// Read-only f32 values mapped from a file (cheap to clone: clones share the mapping).
#[derive(Clone)]
pub struct MappedF32 {
    map: Arc<Map>,
}

struct Map {
    ptr: *mut libc::c_void,
    len: usize,
    /// Kept open for the mapping's lifetime (the file has no name).
    _file: File,
}

// SAFETY: the mapping is read-only (PROT_READ) and never changes after creation; the
// pointer is only read through `as_slice`.
unsafe impl Send for Map {}
unsafe impl Sync for Map {}

impl Drop for Map {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: `ptr`/`len * 4` are exactly what `mmap` returned and were never unmapped.
            unsafe {
                libc::munmap(self.ptr, self.len * 4);
            }
        }
    }
}

impl MappedF32 {
    /// The values.
    pub fn as_slice(&self) -> &[f32] {
        if self.map.len == 0 {
            return &[];
        }
        // SAFETY: the mapping holds `len` f32 values (the file was written with exactly that
        // many, the mapping is page-aligned so f32-aligned) and lives as long as `self.map`.
        unsafe { std::slice::from_raw_parts(self.map.ptr as *const f32, self.map.len) }
    }

    pub fn len(&self) -> usize {
        self.map.len
    }

    pub fn is_empty(&self) -> bool {
        self.map.len == 0
    }
}

impl std::ops::Deref for MappedF32 {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        self.as_slice()
    }
}

impl std::fmt::Debug for MappedF32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MappedF32({} values)", self.map.len)
    }
}

impl PartialEq for MappedF32 {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

/// Values being written to a new unnamed file, to be mapped when complete.
pub struct Spill {
    out: BufWriter<File>,
    written: usize,
    expected: usize,
    dir: PathBuf,
}

/// Free bytes on the file system of `dir`, as an unprivileged user may use them.
pub fn free_space(dir: &Path) -> Result<u64, String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| format!("{}: a path with a NUL byte", dir.display()))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(format!(
            "{}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Whether `bytes` fit in `free` bytes with the reserve kept: the reserve is
/// [`DISK_RESERVE`], or a tenth of `free` when that is less.
pub fn fits(bytes: u64, free: u64) -> bool {
    let reserve = DISK_RESERVE.min(free / 10);
    bytes <= free.saturating_sub(reserve)
}

impl Spill {
    /// A new unnamed file in `dir` for `values` f32 values; an error naming `dir` when it
    /// cannot be created or its file system lacks room (see [`fits`]).
    pub fn create(dir: &Path, values: usize) -> Result<Spill, String> {
        let bytes = (values as u64).saturating_mul(4);
        let free = free_space(dir)?;
        if !fits(bytes, free) {
            return Err(format!(
                "{} has {}B free; the cache needs {}B and {}B are kept free beside it",
                dir.display(),
                crate::show::human(free).trim(),
                crate::show::human(bytes).trim(),
                crate::show::human(DISK_RESERVE.min(free / 10)).trim()
            ));
        }
        let path = dir.join(format!(
            ".netc-cache-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| format!("{}: cannot create the cache file: {e}", dir.display()))?;
        // Unnamed from now on: removed by the system when the last handle closes.
        std::fs::remove_file(&path)
            .map_err(|e| format!("{}: cannot unlink the cache file: {e}", path.display()))?;
        Ok(Spill {
            out: BufWriter::with_capacity(1 << 20, file),
            written: 0,
            expected: values,
            dir: dir.to_path_buf(),
        })
    }

    /// Appends values (never more than announced to [`Spill::create`]).
    pub fn push(&mut self, values: &[f32]) -> Result<(), String> {
        if self.written + values.len() > self.expected {
            return Err(format!(
                "the cache file got more than the {} values announced",
                self.expected
            ));
        }
        let mut bytes = Vec::with_capacity(values.len() * 4);
        for v in values {
            bytes.extend_from_slice(&v.to_ne_bytes());
        }
        self.out
            .write_all(&bytes)
            .map_err(|e| format!("{}: writing the cache file: {e}", self.dir.display()))?;
        self.written += values.len();
        Ok(())
    }

    /// The values written, mapped read-only.
    pub fn finish(self) -> Result<MappedF32, String> {
        let dir = self.dir.clone();
        if self.written != self.expected {
            return Err(format!(
                "the cache file holds {} values, {} expected",
                self.written, self.expected
            ));
        }
        let file = self
            .out
            .into_inner()
            .map_err(|e| format!("{}: writing the cache file: {e}", dir.display()))?;
        let len = self.written;
        if len == 0 {
            return Ok(MappedF32 {
                map: Arc::new(Map {
                    ptr: std::ptr::null_mut(),
                    len: 0,
                    _file: file,
                }),
            });
        }
        use std::os::unix::io::AsRawFd;
        // SAFETY: mapping `len * 4` bytes of a file of exactly that size, read-only, shared.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len * 4,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!(
                "{}: cannot map the cache file: {}",
                dir.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(MappedF32 {
            map: Arc::new(Map {
                ptr,
                len,
                _file: file,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_the_mapping_and_leave_no_file() {
        let dir = std::env::temp_dir().join(format!("netc-mapped-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let values: Vec<f32> = (0..100_003).map(|i| i as f32 * 0.25 - 7.0).collect();
        let mut s = Spill::create(&dir, values.len()).unwrap();
        for chunk in values.chunks(997) {
            s.push(chunk).unwrap();
        }
        let m = s.finish().unwrap();
        assert_eq!(m.as_slice(), values.as_slice());
        let c = m.clone();
        drop(m);
        assert_eq!(&c[..3], &values[..3]);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "a file was left"
        );
        // Too many or too few values are errors, not a short mapping.
        let mut s = Spill::create(&dir, 2).unwrap();
        assert!(s.push(&[1.0, 2.0, 3.0]).is_err());
        let mut s = Spill::create(&dir, 2).unwrap();
        s.push(&[1.0]).unwrap();
        assert!(
            s.finish()
                .unwrap_err()
                .contains("holds 1 values, 2 expected")
        );
        assert!(Spill::create(&dir, 0).unwrap().finish().unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_disk_bound_keeps_a_reserve() {
        assert!(fits(10, 100));
        assert!(!fits(95, 100)); // a tenth of 100 stays free
        assert!(fits(9 << 30, 10 << 30));
        assert!(!fits(9 << 30 | 1, 10 << 30)); // 1 GiB stays free
        assert!(!fits(1, 0));
        let e = Spill::create(Path::new("/nonexistent-netc-dir"), 1)
            .err()
            .unwrap();
        assert!(e.contains("/nonexistent-netc-dir"), "{e}");
    }
}
