//! Transfer learning through `netc`: vector inputs on NPZ features, `--reinit`, `--freeze ..N`,
//! `netc features`, the frozen-prefix feature cache, and their errors.

use std::path::Path;
use std::process::Output;

mod cli_support;
use cli_support::{metrics, netc, s, scratch, stderr};

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
    let d = scratch("transfer/vector");
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

/// An image folder `<class>/*.png` of `per` images per class, `size`×`size`, `channels` 1 or 3:
/// class `c` is a bright band at a class-dependent place, plus noise.
fn write_image_folder(dir: &Path, classes: usize, per: usize, size: u32, channels: u8) {
    let mut r = Rand(7);
    for c in 0..classes {
        let cd = dir.join(format!("class{c}"));
        std::fs::create_dir_all(&cd).unwrap();
        for i in 0..per {
            let mut band = |x: u32, y: u32| {
                let v = match c % 3 {
                    0 => x < size / 3,
                    1 => y < size / 3,
                    _ => x + y > size,
                };
                let base = if v { 200.0 } else { 40.0 };
                (base + 30.0 * r.next()).clamp(0.0, 255.0) as u8
            };
            let path = cd.join(format!("{i:03}.png"));
            if channels == 1 {
                image::GrayImage::from_fn(size, size, |x, y| image::Luma([band(x, y)]))
                    .save(&path)
                    .unwrap();
            } else {
                image::RgbImage::from_fn(size, size, |x, y| {
                    let v = band(x, y);
                    image::Rgb([v, v / 2, 255 - v])
                })
                .save(&path)
                .unwrap();
            }
        }
    }
}

fn lenet_weights(path: &Path, classes: usize) -> netc::io::weights::Weights {
    let spec = netc::load_file(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/lenet5.net"),
        &netc::Options::with_sets(&[format!("classes={classes}")]).unwrap(),
    )
    .unwrap();
    let w = netc::io::weights::Weights::init(&spec.graph, 11);
    w.save(path, &spec.graph).unwrap();
    w
}

#[test]
fn reinit_replaces_the_head_and_lists_it() {
    let d = scratch("transfer/reinit");
    let imgs = d.join("imgs");
    write_image_folder(&imgs, 3, 12, 28, 1);
    let pre = d.join("pre.safetensors");
    let w10 = lenet_weights(&pre, 10);
    let base = [
        "train",
        "specs/lenet5.net",
        "--data",
        s(&imgs),
        "--set",
        "classes=3",
        "--epochs",
        "1",
        "--batch",
        "4",
    ];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend(extra);
        netc(&a)
    };
    // Without --reinit: strict, the head's shape is an error.
    let o = with(&["--weights", s(&pre)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("wrong shape `fc3.weight`"),
        "{}",
        stderr(&o)
    );

    let ck = d.join("ck.safetensors");
    let o = with(&[
        "--weights",
        s(&pre),
        "--reinit",
        "fc3",
        "--freeze",
        "..4",
        "--save",
        s(&ck),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("reinitialized 2 tensors (--reinit fc3): fc3.weight [3, 84], fc3.bias [3]"),
        "{e}"
    );
    assert!(
        e.contains("not loaded from") && e.contains("fc3.bias [10], fc3.weight [10, 84]"),
        "{e}"
    );
    // The frozen layers are the file's, the head was trained from a fresh start.
    let spec3 = netc::load_file(
        "specs/lenet5.net",
        &netc::Options::with_sets(&["classes=3"]).unwrap(),
    )
    .unwrap();
    let got = netc::io::weights::Weights::load(&ck, &spec3.graph).unwrap();
    let spec10 = netc::load_file("specs/lenet5.net", &netc::Options::default()).unwrap();
    for p in ["conv1.weight", "conv2.bias", "fc2.weight"] {
        assert_eq!(
            got.get(&spec3.graph, p),
            w10.get(&spec10.graph, p),
            "{p} should be loaded and frozen"
        );
    }
    assert_eq!(
        got.get(&spec3.graph, "fc3.weight").unwrap().shape(),
        &[3, 84]
    );

    // A name that matches nothing: the flag, the nearest names.
    let o = with(&["--weights", s(&pre), "--reinit", "fc9"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("--reinit fc9: matches no parameter of model `lenet5`"),
        "{e}"
    );
    assert!(e.contains("help:") && e.contains("`fc3`"), "{e}");
    // --reinit without --weights.
    let o = with(&["--reinit", "fc3"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("help: add --weights FILE"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn freeze_counts_layers_as_summary_numbers_them() {
    let o = netc(&["summary", "specs/resnet18.net", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let numbered: Vec<(String, String)> = j["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| !l["number"].is_null())
        .map(|l| {
            (
                l["number"].to_string(),
                l["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // The table shows the same numbers in its # column.
    let o = netc(&["summary", "specs/resnet18.net"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("\n7  fc "), "{out}");
    assert!(out.contains("\n   2    "), "{out}");
    let want = [
        "conv1",
        "bn1",
        "layer1.0.conv1",
        "layer2.0.conv1",
        "layer3.0.conv1",
        "layer4.0.conv1",
        "fc",
    ];
    assert_eq!(numbered.len(), 7, "{numbered:?}");
    for (i, ((n, path), w)) in numbered.iter().zip(want).enumerate() {
        assert_eq!(n, &(i + 1).to_string());
        assert_eq!(path, w);
    }
    // `..6` freezes what the table numbers 1 to 6: everything but fc.
    let mut lg = netc::load_file("specs/resnet18.net", &netc::Options::default())
        .unwrap()
        .graph;
    netc::train::freeze(&mut lg, &["..6".to_string()]).unwrap();
    let trainable: Vec<&str> = lg
        .params
        .iter()
        .filter(|p| p.trainable)
        .map(|p| p.path.as_str())
        .collect();
    assert_eq!(trainable, ["fc.weight", "fc.bias"]);

    // Freezing everything, or more layers than there are: errors naming the flag and the fix.
    let o = netc(&[
        "train",
        "specs/lenet5.net",
        "--freeze",
        "..5",
        "--epochs",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("--freeze ..5 freezes every trainable parameter of `lenet5`"),
        "{e}"
    );
    assert!(
        e.contains("help: freeze fewer layers, e.g. `--freeze ..4` trains only `fc3`"),
        "{e}"
    );
    let o = netc(&[
        "train",
        "specs/lenet5.net",
        "--freeze",
        "..9",
        "--epochs",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("`..9` asks for 9 layers, but model `lenet5` has 5"),
        "{e}"
    );
}

#[test]
fn features_round_trip_into_a_vector_input_spec() {
    let d = scratch("transfer/features");
    let imgs = d.join("imgs");
    write_image_folder(&imgs, 3, 18, 28, 1);
    let w = d.join("w.safetensors");
    lenet_weights(&w, 10);
    let feats = d.join("feats.npz");
    let o = netc(&[
        "features",
        "specs/lenet5.net",
        "--weights",
        s(&w),
        "--layer",
        "fc2",
        "--data",
        s(&imgs),
        "--batch",
        "7",
        "--output",
        s(&feats),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("x_train [45, 84], x_test [9, 84]"),
        "{}",
        stderr(&o)
    );

    // The file holds the layer's values for each sample, in order, with the labels.
    let spec = netc::load_file("specs/lenet5.net", &netc::Options::default()).unwrap();
    let lg = &spec.graph;
    let images = netc::data::open(s(&imgs), &lg.inputs[0]).unwrap();
    let feat_input = netc::layer_graph::InputInfo {
        name: "feat".into(),
        node: 0,
        shape: vec![84],
        mean: vec![],
        std: vec![],
    };
    let back = netc::data::open(s(&feats), &feat_input).unwrap();
    assert_eq!(back.train.labels, images.train.labels);
    assert_eq!(back.test.labels, images.test.labels);
    let fc2 = netc::cut::find_node(lg, "fc2").unwrap();
    let pre = netc::cut::prefix(lg, &[("f".into(), fc2)]).unwrap();
    let weights = netc::io::weights::Weights::load(&w, lg).unwrap();
    let norm = netc::data::Normalize::from_input(&lg.inputs[0]).unwrap();
    let loader = netc::data::Loader::new(
        std::sync::Arc::new(images.test.clone()),
        norm,
        netc::data::LoaderOptions::eval(9),
    )
    .unwrap();
    let b = loader.epoch_sync(0).next().unwrap();
    let x = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&b.shape()), b.x.clone()).unwrap();
    let want = netc::reference::run::<f32>(
        &netc::lower::lower(&pre, 9),
        &netc::model::params_f32(&weights),
        &[("image", x)],
    )
    .unwrap();
    let netc::data::Pixels::F32(got) = &back.test.pixels else {
        panic!("float features")
    };
    for (g, w) in got.iter().zip(want[0].iter()) {
        assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{g} vs {w}");
    }

    // And trains a vector-input spec.
    let spec = d.join("head.net");
    std::fs::write(
        &spec,
        "model head(classes: int = 3) {\n  input feat: [84]\n  fc: dense(classes)\n}\n",
    )
    .unwrap();
    let o = netc(&[
        "train",
        s(&spec),
        "--data",
        s(&feats),
        "--epochs",
        "2",
        "--batch",
        "5",
        "--out",
        s(&d),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(metrics(&o)["steps"], 18);

    // A layer that does not exist: the flag and the nearest name.
    let o = netc(&[
        "features",
        "specs/lenet5.net",
        "--layer",
        "fc7",
        "--output",
        s(&d.join("x.npz")),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("--layer fc7: model `lenet5` has no layer `fc7`"),
        "{e}"
    );
    assert!(e.contains("did you mean"), "{e}");
    assert!(!d.join("x.npz").exists());
}

const CACHED: &str = "model cached(classes: int = 10) {
  input image: [1, 28, 28] with mean=[0.2860], std=[0.3530]
  conv1: conv(8, 5, pad=2)
  bn1: batchnorm
  relu
  maxpool(2)
  conv2: conv(16, 5)
  relu
  maxpool(2)
  flatten
  fc1: dense(64)
  bn2: batchnorm
  relu
  drop: dropout(0.3)
  fc2: dense(classes)
}
";

fn weights_of(path: &Path, spec: &Path) -> netc::io::weights::Weights {
    let spec = netc::load_file(spec, &netc::Options::default()).unwrap();
    netc::io::weights::Weights::load(path, &spec.graph).unwrap()
}

#[test]
fn the_feature_cache_trains_to_the_same_weights() {
    let d = scratch("transfer/cache");
    let spec = d.join("cached.net");
    std::fs::write(&spec, CACHED).unwrap();
    // conv1, bn1, conv2 frozen (bn1 in inference mode); fc1, bn2 (training mode), dropout and
    // fc2 train.
    let run = |name: &str, extra: &[&str]| {
        let ck = d.join(name);
        let mut a = vec![
            "train",
            s(&spec),
            "--freeze",
            "..3",
            "--epochs",
            "2",
            "--max-steps",
            "260",
            "--batch",
            "50",
            "--seed",
            "5",
            "--threads",
            "2",
            "--save",
            s(&ck),
        ];
        a.extend(extra);
        let o = netc(&a);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        (o, weights_of(&ck, &spec))
    };
    let (plain, w_plain) = run("plain.safetensors", &["--no-cache-features"]);
    let (cached, w_cached) = run("cached.safetensors", &[]);
    assert!(
        !stderr(&plain).contains("feature cache"),
        "{}",
        stderr(&plain)
    );
    let e = stderr(&cached);
    assert!(
        e.contains(
            "note: feature cache: layers 1-3 (`netc summary`'s #) are frozen; their output \
             (`7`, flatten [400])"
        ),
        "{e}"
    );
    assert!(e.contains("12,000 images, 400 values each"), "{e}");
    assert_eq!(w_plain, w_cached, "the cache changed the trained weights");
    // Same figures too (the first epoch's evaluation).
    let epoch1 = |o: &Output| {
        stderr(o)
            .lines()
            .find(|l| l.starts_with("epoch   1"))
            .map(|l| {
                l.split("img/s")
                    .next()
                    .unwrap()
                    .rsplit_once("lr")
                    .unwrap()
                    .0
                    .to_string()
            })
            .unwrap()
    };
    assert_eq!(epoch1(&plain), epoch1(&cached));

    // With augmentation: not cached, and an error when asked for.
    let aug = d.join("aug.net");
    std::fs::write(
        &aug,
        CACHED.replace(
            "fc2: dense(classes)",
            "fc2: dense(classes)\n  train { augment: [mirror] }",
        ),
    )
    .unwrap();
    let o = netc(&[
        "train",
        s(&aug),
        "--freeze",
        "..3",
        "--max-steps",
        "1",
        "--cache-features",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("--cache-features: random augmentation (`mirror"),
        "{e}"
    );
    assert!(e.contains("help:"), "{e}");
    let o = netc(&["train", s(&aug), "--freeze", "..3", "--max-steps", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("note: no feature cache: random augmentation"),
        "{}",
        stderr(&o)
    );

    // Past its memory limit: in a memory-mapped file in --cache-dir, the same weights, and
    // nothing left in the directory.
    let spill = d.join("spill");
    std::fs::create_dir_all(&spill).unwrap();
    let (mapped, w_mapped) = run(
        "mapped.safetensors",
        &["--cache-limit", "1K", "--cache-dir", s(&spill)],
    );
    let e = stderr(&mapped);
    assert!(
        e.contains(&format!(
            "past --cache-limit: in a memory-mapped file in {}",
            spill.display()
        )),
        "{e}"
    );
    assert_eq!(
        w_plain, w_mapped,
        "the mapped cache changed the trained weights"
    );
    assert_eq!(
        std::fs::read_dir(&spill).unwrap().count(),
        0,
        "a file was left"
    );
    // No room there (here: no such directory): an error naming the flag when asked for, a
    // note otherwise.
    let missing = d.join("no-such-dir");
    let args = |extra: &[&'static str]| {
        let mut a = vec!["train", s(&spec), "--freeze", "..3", "--max-steps", "1"];
        a.extend_from_slice(&["--cache-limit", "1M", "--cache-dir", s(&missing)]);
        a.extend_from_slice(extra);
        netc(&a)
    };
    let o = args(&["--cache-features"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("more than --cache-limit 1.05 MB in memory"),
        "{e}"
    );
    assert!(e.contains("--cache-dir"), "{e}");
    assert!(e.contains("no-such-dir"), "{e}");
    assert!(e.contains("raise --cache-limit"), "{e}");
    let o = args(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("note: no feature cache: the cache would take"),
        "{}",
        stderr(&o)
    );
    // Nothing frozen: no cache and no note; asked for: an error saying why.
    let o = netc(&["train", s(&spec), "--max-steps", "1", "--cache-features"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no frozen prefix to cache"),
        "{}",
        stderr(&o)
    );
}

/// The README's fine-tuning recipe: torchvision-named ResNet-18 weights (made here by
/// `Weights::init`: the names and shapes are torchvision's, as `tests/model_library.rs`
/// checks), a new image folder of 3 classes, one command.
#[test]
fn fine_tunes_resnet18_weights_to_a_new_image_folder_in_one_command() {
    let d = scratch("transfer/finetune");
    let imgs = d.join("pets");
    write_image_folder(&imgs, 3, 12, 40, 3);
    let pre = d.join("resnet18.safetensors");
    let spec = netc::load_file("specs/resnet18.net", &netc::Options::default()).unwrap();
    let w = netc::io::weights::Weights::init(&spec.graph, 1);
    w.save(&pre, &spec.graph).unwrap();
    let o = netc(&[
        "train",
        "specs/resnet18.net",
        "--weights",
        s(&pre),
        "--set",
        "classes=3",
        "--set",
        "size=32",
        "--reinit",
        "fc",
        "--freeze",
        "..6",
        "--data",
        s(&imgs),
        "--epochs",
        "4",
        "--batch",
        "10",
        "--out",
        s(&d.join("run")),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("reinitialized 2 tensors (--reinit fc): fc.weight [3, 512], fc.bias [3]"),
        "{e}"
    );
    assert!(e.contains("fc.bias [1000], fc.weight [1000, 512]"), "{e}");
    assert!(
        e.contains("layers 1-6 (`netc summary`'s #) are frozen"),
        "{e}"
    );
    assert!(e.contains("60 parameters frozen"), "{e}");
    let m = metrics(&o);
    assert_eq!(m["outcome"], "finished");
    let losses = epoch_losses(&o);
    assert!(losses[3] < losses[0], "{losses:?}");
    // The checkpoint is the whole fine-tuned model: it runs as a 3-class ResNet-18.
    let ck = d.join("run/checkpoint.safetensors");
    let spec3 = netc::load_file(
        "specs/resnet18.net",
        &netc::Options::with_sets(&["classes=3", "size=32"]).unwrap(),
    )
    .unwrap();
    let got = netc::io::weights::Weights::load(&ck, &spec3.graph).unwrap();
    assert_eq!(
        got.get(&spec3.graph, "layer4.1.conv2.weight"),
        w.get(&spec.graph, "layer4.1.conv2.weight")
    );
}

#[test]
fn a_cached_run_resumes_into_the_uncached_result() {
    let d = scratch("transfer/cache-resume");
    let spec = d.join("cached.net");
    std::fs::write(&spec, CACHED).unwrap();
    let base = |ck: &Path| {
        vec![
            "train".to_string(),
            s(&spec).to_string(),
            "--freeze".into(),
            "..3".into(),
            "--epochs".into(),
            "1".into(),
            "--batch".into(),
            "100".into(),
            "--seed".into(),
            "9".into(),
            "--save".into(),
            s(ck).to_string(),
        ]
    };
    let go = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let o = netc(&a);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        o
    };
    let straight = d.join("straight.safetensors");
    let mut a = base(&straight);
    a.push("--no-cache-features".into());
    go(a);
    // Cached, stopped after 40 steps, resumed (cached again) to the end of the epoch.
    let split = d.join("split.safetensors");
    let mut a = base(&split);
    a.extend(["--max-steps".into(), "40".into()]);
    go(a);
    let mut a = base(&split);
    a.extend(["--resume".into(), s(&split).to_string()]);
    let o = go(a);
    assert!(stderr(&o).contains("note: feature cache"), "{}", stderr(&o));
    assert_eq!(weights_of(&straight, &spec), weights_of(&split, &spec));
}
