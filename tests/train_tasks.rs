//! `netc train` on tasks beyond one-input classification: several outputs with a weighted
//! objective, regression targets from `.npz` keys, several inputs, a loss the model body
//! computes, and the errors for data that do not fit.

use std::path::{Path, PathBuf};

use netc::data::rng::Rng;
use netc::io::npy::{NpzArray, write_arrays};

mod cli_support;
use cli_support::{metrics, netc, s, scratch, stderr};

/// `n` 8×8 images, each a dark field with one bright 3×3 square at a random place: the class
/// is the quadrant of the square's centre, the box its centre (x, y) in [0, 1].
fn squares(n: usize, seed: u64) -> (Vec<f32>, Vec<i64>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let (mut x, mut y, mut boxes) = (vec![0f32; n * 64], Vec::new(), Vec::new());
    for i in 0..n {
        let (r, c) = (rng.below(6) as usize, rng.below(6) as usize);
        for dr in 0..3 {
            for dc in 0..3 {
                x[i * 64 + (r + dr) * 8 + c + dc] = 1.0;
            }
        }
        for v in &mut x[i * 64..(i + 1) * 64] {
            *v += 0.1 * rng.uniform() as f32;
        }
        let (cy, cx) = (r as f32 + 1.0, c as f32 + 1.0);
        y.push(i64::from(cy >= 4.0) * 2 + i64::from(cx >= 4.0));
        boxes.extend([cx / 7.0, cy / 7.0]);
    }
    (x, y, boxes)
}

const TWO_HEADS: &str = "
model two_heads(classes: int = 4) {
  input image: [1, 8, 8]
  conv(8, 3, pad=1)
  relu
  flatten
  dense(32)
  hidden = relu
  cls = hidden |> dense(classes)
  box = hidden |> dense(2)
  output cls, box
  train {
    loss: cross_entropy(output=cls) + 5 * mse(output=box)
    optimizer: adam(lr=0.01)
    batch: 32
    epochs: 6
  }
}
";

#[test]
fn a_class_head_and_a_box_head_train_on_a_weighted_sum() {
    let d = scratch("tasks/heads");
    let spec = d.join("two_heads.net");
    std::fs::write(&spec, TWO_HEADS).unwrap();
    let (x, y, boxes) = squares(960, 1);
    let n = y.len();
    let data = d.join("squares.npz");
    write_arrays(
        &data,
        &[
            ("x", NpzArray::F32(&[n, 1, 8, 8], &x)),
            ("y", NpzArray::I64(&[n], &y)),
            ("box", NpzArray::F32(&[n, 2], &boxes)),
        ],
    )
    .unwrap();
    let o = netc(&[
        "train",
        s(&spec),
        "--data",
        s(&data),
        "--out",
        s(&d.join("run")),
        "--threads",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("loss: cross_entropy(output=cls, label_smoothing=0) + 5 * mse(output=box)"),
        "{err}"
    );
    let m = metrics(&o);
    // Chance is 25% and a box MSE of ~0.08 (the variance of a uniform centre).
    let acc = m["test_accuracy"].as_f64().unwrap();
    let mse = m["test_mse"].as_f64().unwrap();
    let mae = m["test_mae"].as_f64().unwrap();
    assert!(acc > 0.8, "test accuracy {acc}: {m}");
    assert!(mse < 0.02, "test box MSE {mse}: {m}");
    assert!(mae > 0.0 && mae < 0.15, "test box MAE {mae}: {m}");
    // The epoch line shows the regression metrics too.
    assert!(
        err.contains("  mse 0.") && err.contains("  mae 0."),
        "{err}"
    );
}

#[test]
fn a_regression_target_of_the_wrong_width_is_refused_naming_the_key() {
    let d = scratch("tasks/width");
    let spec = d.join("two_heads.net");
    std::fs::write(&spec, TWO_HEADS).unwrap();
    let (x, y, _) = squares(60, 2);
    let n = y.len();
    let wrong = vec![0f32; n * 3];
    let data = d.join("wrong.npz");
    write_arrays(
        &data,
        &[
            ("x", NpzArray::F32(&[n, 1, 8, 8], &x)),
            ("y", NpzArray::I64(&[n], &y)),
            ("box", NpzArray::F32(&[n, 3], &wrong)),
        ],
    )
    .unwrap();
    let o = netc(&["train", s(&spec), "--data", s(&data), "--epochs", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("wrong.npz") && err.contains("`box`"), "{err}");
    assert!(err.contains("holds 3 values per sample"), "{err}");
    assert!(err.contains("help: give `box` the shape [N, 2]"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // Without the key at all.
    let missing = d.join("missing.npz");
    write_arrays(
        &missing,
        &[
            ("x", NpzArray::F32(&[n, 1, 8, 8], &x)),
            ("y", NpzArray::I64(&[n], &y)),
        ],
    )
    .unwrap();
    let o = netc(&["train", s(&spec), "--data", s(&missing), "--epochs", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("needs targets for the output `box`"), "{err}");
    assert!(err.contains("an array `box` of shape [N, 2]"), "{err}");
}

#[test]
fn the_objective_names_outputs_and_checks_them() {
    let bad = TWO_HEADS.replace("mse(output=box)", "mse(output=bx)");
    let d = scratch("tasks/names");
    let spec = d.join("bad.net");
    std::fs::write(&spec, bad).unwrap();
    let o = netc(&["check", s(&spec)]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("the model has no output `bx`"), "{err}");
    assert!(err.contains("did you mean `box`?"), "{err}");
    assert!(err.contains("bad.net:"), "{err}");

    let bad = TWO_HEADS.replace("5 * mse", "-5 * mse");
    std::fs::write(&spec, bad).unwrap();
    let o = netc(&["check", s(&spec)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("a loss weight must be a number ≥ 0"));

    let bad = TWO_HEADS.replace("mse(output=box)", "msee(output=box)");
    std::fs::write(&spec, bad).unwrap();
    let o = netc(&["check", s(&spec)]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("`msee` is neither a loss nor an output") && err.contains("`mse`"),
        "{err}"
    );

    // `summary` shows the objective as the spec means it.
    std::fs::write(&spec, TWO_HEADS).unwrap();
    let o = netc(&["summary", s(&spec)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("loss: cross_entropy(output=cls, label_smoothing=0) + 5 * mse(output=box)"),
        "{out}"
    );
}

/// A model with two image inputs (`left`, `right`: the data's `x` and an array `right`) whose
/// body computes its own loss, trained as that loss.
#[test]
fn several_inputs_from_npz_keys_and_a_loss_the_body_computes() {
    let spec_text = "
model twin {
  input left: [1, 8, 8]
  input right: [1, 8, 8]
  embed = shared seq { flatten; dense(8) }
  a = embed(left)
  b = embed(right)
  c = embed(left)
  loss = triplet_loss(a, b, c, margin=0.5)
  output loss
  train { optimizer: sgd(lr=0.1), batch: 16, epochs: 2 }
}
";
    let d = scratch("tasks/twin");
    let spec = d.join("twin.net");
    std::fs::write(&spec, spec_text).unwrap();
    let (x, y, _) = squares(120, 3);
    let (right, _, _) = squares(120, 4);
    let data = d.join("twin.npz");
    write_arrays(
        &data,
        &[
            ("x", NpzArray::F32(&[120, 1, 8, 8], &x)),
            ("y", NpzArray::I64(&[120], &y)),
            ("right", NpzArray::F32(&[120, 1, 8, 8], &right)),
        ],
    )
    .unwrap();
    let o = netc(&[
        "train",
        s(&spec),
        "--data",
        s(&data),
        "--out",
        s(&d.join("run")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("loss: loss"), "{}", stderr(&o));
    let m = metrics(&o);
    assert!(m["train_accuracy"].is_null(), "{m}");
    let first = m["train_loss"].as_f64().unwrap();
    assert!(first.is_finite(), "{m}");

    // Without `right`, the second input has no data: a clear error.
    let data2 = d.join("left-only.npz");
    write_arrays(
        &data2,
        &[
            ("x", NpzArray::F32(&[120, 1, 8, 8], &x)),
            ("y", NpzArray::I64(&[120], &y)),
        ],
    )
    .unwrap();
    let o = netc(&["train", s(&spec), "--data", s(&data2), "--epochs", "1"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("the model's input `right` has no data"),
        "{err}"
    );
    assert!(
        err.contains("an array `right` of shape [N, 1, 8, 8]"),
        "{err}"
    );
}

/// An image folder (`<class>/*.png`) with a `targets.csv` of box centres beside it.
fn folder_with_targets(d: &Path, json: bool) -> PathBuf {
    let root = d.join("squares");
    let (x, y, boxes) = squares(48, 5);
    let mut csv = String::from("file,box,box\n");
    let mut obj = serde_json::Map::new();
    for (i, &label) in y.iter().enumerate() {
        let class = format!("q{label}");
        std::fs::create_dir_all(root.join(&class)).unwrap();
        let px: Vec<u8> = x[i * 64..(i + 1) * 64]
            .iter()
            .map(|v| (v.clamp(0.0, 1.0) * 255.0) as u8)
            .collect();
        let rel = format!("{class}/{i:03}.png");
        image::GrayImage::from_raw(8, 8, px)
            .unwrap()
            .save(root.join(&rel))
            .unwrap();
        csv += &format!("{rel},{},{}\n", boxes[2 * i], boxes[2 * i + 1]);
        obj.insert(
            rel,
            serde_json::json!({ "box": [boxes[2 * i], boxes[2 * i + 1]] }),
        );
    }
    if json {
        std::fs::write(
            root.join("targets.json"),
            serde_json::Value::Object(obj).to_string(),
        )
        .unwrap();
    } else {
        std::fs::write(root.join("targets.csv"), csv).unwrap();
    }
    root
}

#[test]
fn an_image_folder_takes_its_targets_from_a_csv_or_json_beside_it() {
    let d = scratch("tasks/folder");
    let spec = d.join("two_heads.net");
    std::fs::write(&spec, TWO_HEADS).unwrap();
    for json in [false, true] {
        let root = folder_with_targets(&d.join(if json { "j" } else { "c" }), json);
        let o = netc(&[
            "train",
            s(&spec),
            "--data",
            s(&root),
            "--epochs",
            "2",
            "--out",
            s(&d.join("run")),
        ]);
        assert!(o.status.success(), "json={json}: {}", stderr(&o));
        let m = metrics(&o);
        assert!(m["test_mse"].as_f64().is_some(), "{m}");
        assert!(m["test_accuracy"].as_f64().is_some(), "{m}");
    }
    // An image without a row is an error naming the file and the image.
    let root = folder_with_targets(&d.join("missing"), false);
    let csv = std::fs::read_to_string(root.join("targets.csv")).unwrap();
    let dropped = csv
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let fewer: Vec<&str> = csv.lines().filter(|l| !l.starts_with(&dropped)).collect();
    std::fs::write(root.join("targets.csv"), fewer.join("\n")).unwrap();
    let o = netc(&["train", s(&spec), "--data", s(&root), "--epochs", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("targets.csv") && err.contains(&format!("no row for the image `{dropped}`")),
        "{err}"
    );
    // A value that is not a number: the line is named.
    std::fs::write(
        root.join("targets.csv"),
        format!("file,box,box\n{dropped},0.5,abc\n"),
    )
    .unwrap();
    let o = netc(&["train", s(&spec), "--data", s(&root), "--epochs", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("line 2: `abc` is not a number"),
        "{}",
        stderr(&o)
    );
}
