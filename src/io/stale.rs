//! Temporary files left behind by interrupted atomic writes.
//!
//! In: a directory and the names of files written there atomically. Out: the temporary files
//! of those names whose writing process no longer runs, removed, and their paths. The patterns
//! are [`super::write_atomic`]'s `.NAME.PID.N.tmp` and the curves writer's (`crate::plot`)
//! `.NAME.PID-N.tmp`; a SIGKILL between creating and renaming one leaves it forever. Files of
//! live processes (a write in progress) and anything not matching exactly are left alone.
//! A process counts as alive while `/proc/PID` exists (Linux); where there is no `/proc`,
//! nothing is removed.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The writing process's id if `file` is a temporary file of `name` (`.NAME.PID.N.tmp` or
/// `.NAME.PID-N.tmp`, PID and N decimal).
fn temp_pid(file: &str, name: &str) -> Option<u32> {
    let rest = file
        .strip_prefix('.')?
        .strip_prefix(name)?
        .strip_prefix('.')?
        .strip_suffix(".tmp")?;
    let (pid, n) = rest.split_once(['.', '-'])?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(pid) && digits(n)).then(|| pid.parse().ok())?
}

/// Removes the stale temporary files of `names` in `dir` (see the module's doc); returns what
/// was removed. Errors (an unreadable directory, a file that cannot be removed) only mean
/// that less is removed.
pub fn remove_stale_temps(dir: &Path, names: &[&OsStr]) -> Vec<PathBuf> {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let names: Vec<&str> = names.iter().filter_map(|n| n.to_str()).collect();
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(file) = file.to_str() else {
            continue;
        };
        let Some(pid) = names.iter().find_map(|n| temp_pid(file, n)) else {
            continue;
        };
        if pid == std::process::id() || proc.join(pid.to_string()).exists() {
            continue;
        }
        let path = entry.path();
        let regular = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file());
        if regular && std::fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    }
    removed.sort();
    removed
}

#[cfg(test)]
mod tests {
    use super::temp_pid;

    #[test]
    fn patterns() {
        let n = "checkpoint.safetensors";
        assert_eq!(temp_pid(".checkpoint.safetensors.123.0.tmp", n), Some(123));
        assert_eq!(temp_pid(".checkpoint.safetensors.123-7.tmp", n), Some(123));
        for other in [
            "checkpoint.safetensors.123.0.tmp",
            ".checkpoint.safetensors.123.tmp",
            ".checkpoint.safetensors.12a.0.tmp",
            ".checkpoint.safetensors.123.0.tmp.bak",
            ".checkpoint.safetensors..0.tmp",
            ".other.safetensors.123.0.tmp",
            ".checkpoint.safetensors.99999999999.0.tmp",
        ] {
            assert_eq!(temp_pid(other, n), None, "{other}");
        }
    }
}
