//! Transfer learning through `netc`: vector inputs on NPZ features, `--reinit`, `--freeze ..N`,
//! `netc features`, the frozen-prefix feature cache, and their errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn netc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("netc runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The JSON line netc prints last on stdout.
fn metrics(o: &Output) -> serde_json::Value {
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no output; stderr: {}", stderr(o)));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// A fresh directory under target/.
fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-scratch/transfer")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The training loss of each epoch, from the `epoch   N  loss X` lines.
fn epoch_losses(o: &Output) -> Vec<f64> {
    stderr(o)
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("epoch"))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.next()?.parse::<usize>().ok()?;
            (w.next()? == "loss").then_some(())?;
            w.next()?.parse().ok()
        })
        .collect()
}

/// Small pseudo-random numbers in [-1, 1).
struct Rand(u64);
impl Rand {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Feature vectors of `f` values in `classes` separable clusters, as an NPZ with train and
/// test keys.
fn write_clusters(path: &Path, f: usize, classes: usize, n_train: usize, n_test: usize) {
    let mut r = Rand(0x5eed);
    let centers: Vec<Vec<f32>> = (0..classes)
        .map(|_| (0..f).map(|_| r.next()).collect())
        .collect();
    let mut make = |n: usize| {
        let mut x = Vec::with_capacity(n * f);
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let c = i % classes;
            x.extend(centers[c].iter().map(|&m| m + 0.5 * r.next()));
            y.push(c as i64);
        }
        (x, y)
    };
    let (xt, yt) = make(n_train);
    let (xs, ys) = make(n_test);
    netc::io::npy::write_npz(path, |z| {
        z.begin("x_train", "<f4", &[n_train, f])?;
        z.f32s(&xt)?;
        z.begin("y_train", "<i8", &[n_train])?;
        z.i64s(&yt)?;
        z.begin("x_test", "<f4", &[n_test, f])?;
        z.f32s(&xs)?;
        z.begin("y_test", "<i8", &[n_test])?;
        z.i64s(&ys)
    })
    .unwrap();
}

const MLP: &str = "model mlp(classes: int = 3) {
  input feat: [84]
  fc1: dense(32)
  relu
  fc2: dense(classes)
}
";

#[test]
fn a_vector_input_spec_trains_on_npz_features() {
    let d = scratch("vector");
    let spec = d.join("mlp.net");
    std::fs::write(&spec, MLP).unwrap();
    let data = d.join("feats.npz");
    write_clusters(&data, 84, 3, 600, 150);
    let o = netc(&[
        "train",
        s(&spec),
        "--data",
        s(&data),
        "--epochs",
        "3",
        "--batch",
        "32",
        "--lr",
        "0.01",
        "--out",
        s(&d),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let losses = epoch_losses(&o);
    assert_eq!(losses.len(), 3, "{}", stderr(&o));
    assert!(losses[2] < losses[0] * 0.5, "loss did not fall: {losses:?}");
    let acc = metrics(&o)["test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.9, "test accuracy {acc}");

    // Augmentation on vector samples: an error naming the setting.
    let aug = d.join("mlp_aug.net");
    std::fs::write(
        &aug,
        MLP.replace(
            "fc2: dense(classes)",
            "fc2: dense(classes)\n  train { augment: [mirror] }",
        ),
    )
    .unwrap();
    let o = netc(&["train", s(&aug), "--data", s(&data), "--epochs", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("augmentations act on images [C, H, W]"), "{e}");
    assert!(e.contains("help: remove `augment`"), "{e}");

    // Image data for a vector input: the shapes, both named.
    let o = netc(&["train", s(&spec), "--data", "bundled", "--epochs", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("1×28×28 images") && e.contains("`feat` is 84"),
        "{e}"
    );
}
