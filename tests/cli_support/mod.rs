//! Helpers shared by the integration tests: run the `netc` binary and read what it printed
//! (the JSON line of `netc train` among it), fresh scratch directories (kept for a look
//! afterwards, or removed on drop), and a model input description for data tests.
//!
//! Include with `mod cli_support;` and `use cli_support::*;` (each test binary uses a part).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use netc::layer_graph::InputInfo;

/// Runs the `netc` binary with `args` from the repository's root.
pub fn netc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("netc runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The JSON line netc prints last on stdout (`netc train`'s metrics).
pub fn metrics(o: &Output) -> serde_json::Value {
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no JSON line; stderr:\n{}", stderr(o)));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}\n{}", stderr(o)))
}

/// A fresh, empty directory `target/test-scratch/<name>` (name it `<test file>/<test>` so
/// that tests running at once never share one).
pub fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-scratch")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A path as the `&str` an argument list takes.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "netc-test-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn join(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An image input `image` of `shape`, without normalization.
pub fn input(shape: [usize; 3]) -> InputInfo {
    InputInfo {
        name: "image".into(),
        node: 0,
        shape: shape.to_vec(),
        mean: vec![],
        std: vec![],
    }
}
