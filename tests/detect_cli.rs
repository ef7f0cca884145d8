//! The detection commands end to end: `netc detect` (boxes printed, as JSON in the image's
//! pixels, drawn; mAP over a dataset), `netc anchors`, and `map50` in `netc train`.

use std::path::Path;

use netc::io::weights::{Value, Weights};

mod cli_support;
use cli_support::{metrics, netc, s, scratch, stderr, stdout};

/// A grid head with no input dependence: a 3×3 grid (48 px input, cells of 16 px), 2
/// anchors, 3 classes; all its weights zero, so every cell outputs the head's biases.
const FIXED: &str = "model fixed(classes: int = 3) {
  input image: [1, 48, 48]
  conv1: conv(4, 3, pad=1)
  relu
  maxpool(4)
  maxpool(4)
  head: conv(2 * (5 + classes), 1)
  output head
  train { loss: yolo(output=head, anchors=[[8, 8], [30, 20]]) }
}
";

/// Weights whose head outputs, in every cell: anchor 0 — tx = ty = 0 (the cell's centre),
/// tw = th = 0 (the anchor's 8×8 px), objectness logit `obj`, class 2 far ahead; anchor 1
/// — objectness −20 (nothing).
fn fixed_weights(spec: &Path, path: &Path, obj: f32) {
    let spec = netc::load_file(spec, &netc::Options::default()).unwrap();
    let g = &spec.graph;
    let mut w = Weights::init(g, 1);
    for (p, v) in g.params.iter().zip(&mut w.values) {
        let Value::F32(a) = v else { continue };
        a.fill(0.0);
        if p.path == "head.bias" {
            let per = a.len() / 2; // 5 + classes
            a[[4]] = obj;
            a[[5 + 2]] = 12.0;
            a[[per + 4]] = -20.0;
        }
    }
    w.save(path, g).unwrap();
}

#[test]
fn detect_prints_writes_and_draws_boxes_in_the_images_pixels() {
    let d = scratch("detect/fixed");
    let spec = d.join("fixed.net");
    std::fs::write(&spec, FIXED).unwrap();
    let weights = d.join("w.safetensors");
    fixed_weights(&spec, &weights, 3.0);
    // A 96×72 photo: stretched to the 48×48 input; boxes come back in its pixels.
    let img = d.join("photo.png");
    image::GrayImage::from_fn(96, 72, |x, y| image::Luma([((x * 3 + y) % 256) as u8]))
        .save(&img)
        .unwrap();
    let (json, drawn) = (d.join("boxes.json"), d.join("boxes.png"));
    let o = netc(&[
        "detect",
        s(&spec),
        "--weights",
        s(&weights),
        "--input",
        s(&img),
        "--output",
        s(&json),
        "--draw",
        s(&drawn),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("9 objects: 2 0."), "{}", stdout(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(96), Some(72))
    );
    let dets = v["detections"].as_array().unwrap();
    assert_eq!(dets.len(), 9, "{v}");
    // score = σ(3) · softmax ≈ 0.9526; a box per cell, centred in it, the anchor's size
    // (8 px of 48: a sixth of the image: 16 × 12 px of the photo).
    let mut centres = Vec::new();
    for det in dets {
        assert_eq!(det["class"], 2);
        let score = det["score"].as_f64().unwrap();
        assert!((score - 0.952_574).abs() < 1e-4, "{score}");
        let b: Vec<f64> = det["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert!(
            (b[2] - b[0] - 16.0).abs() < 1e-3 && (b[3] - b[1] - 12.0).abs() < 1e-3,
            "{b:?}"
        );
        centres.push((
            ((b[0] + b[2]) / 2.0).round() as i64,
            ((b[1] + b[3]) / 2.0).round() as i64,
        ));
    }
    centres.sort();
    let mut want = Vec::new();
    for col in 0..3 {
        for row in 0..3 {
            want.push((16 + 32 * col, 12 + 24 * row));
        }
    }
    assert_eq!(centres, want);
    // Drawn on the photo at its own size (enlarged to 384 px on its longer side for labels).
    let png = image::open(&drawn).unwrap().to_rgb8();
    assert_eq!(png.dimensions(), (384, 288));
    // Below the score threshold: nothing (σ(−3) ≈ 0.047 < 0.25), and said so.
    fixed_weights(&spec, &weights, -3.0);
    let o = netc(&[
        "detect",
        s(&spec),
        "--weights",
        s(&weights),
        "--input",
        s(&img),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("no objects above the score threshold"),
        "{}",
        stdout(&o)
    );
    // --score lowers it.
    let o = netc(&[
        "detect",
        s(&spec),
        "--weights",
        s(&weights),
        "--input",
        s(&img),
        "--score",
        "0.01",
    ]);
    assert!(stdout(&o).contains("9 objects"), "{}", stdout(&o));
}

#[test]
fn detect_measures_map_and_refuses_what_it_cannot_read() {
    let d = scratch("detect/map");
    let spec = d.join("fixed.net");
    std::fs::write(&spec, FIXED).unwrap();
    let weights = d.join("w.safetensors");
    fixed_weights(&spec, &weights, 3.0);
    let data = d.join("data");
    let o = netc(&[
        "data",
        "detection",
        "--output",
        s(&data),
        "--size",
        "48",
        "--train",
        "8",
        "--test",
        "6",
        "--objects",
        "1..2",
        "--seed",
        "4",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // classes.txt names 10 classes; the fixed head knows 3: the labels beyond are an error.
    let o = netc(&[
        "detect",
        s(&spec),
        "--weights",
        s(&weights),
        "--data",
        s(&data),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let e = stderr(&o);
    assert!(
        e.contains("is beyond the model's 3 classes") && e.contains("--set classes=10"),
        "{e}"
    );
    let spec10 = d.join("fixed10.net");
    std::fs::write(
        &spec10,
        FIXED.replace("classes: int = 3", "classes: int = 10"),
    )
    .unwrap();
    let w10 = d.join("w10.safetensors");
    fixed_weights(&spec10, &w10, 3.0);
    let o = netc(&[
        "detect",
        s(&spec10),
        "--weights",
        s(&w10),
        "--data",
        s(&data),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("mAP@0.5 over 6 test images"), "{out}");
    let m = metrics(&o);
    let map = m["map50"].as_f64().unwrap();
    // Fixed 8 px boxes of class 2 never overlap a real object (17–45 px) by IoU 0.5.
    assert!((0.0..0.05).contains(&map), "{m}");
    assert_eq!(m["images"], 6);

    // A spec without a yolo loss: the error says how to give one.
    let plain = d.join("plain.net");
    std::fs::write(
        &plain,
        FIXED.replace(
            "train { loss: yolo(output=head, anchors=[[8, 8], [30, 20]]) }",
            "",
        ),
    )
    .unwrap();
    let o = netc(&[
        "detect",
        s(&plain),
        "--input",
        s(&data.join("test/000000.png")),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("has no `yolo` loss") && e.contains("help:"),
        "{e}"
    );
    // --draw with two images is a usage error.
    let img = data.join("test/000000.png");
    let o = netc(&[
        "detect",
        s(&spec10),
        "--weights",
        s(&w10),
        "--input",
        s(&img),
        s(&img),
        "--draw",
        s(&d.join("x.png")),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn anchors_cluster_the_boxes_of_a_dataset() {
    let d = scratch("detect/anchors");
    let spec = d.join("fixed.net");
    std::fs::write(
        &spec,
        FIXED.replace("classes: int = 3", "classes: int = 10"),
    )
    .unwrap();
    // Two sizes of boxes: 8×8 px and 24×12 px (of 48), a little jittered.
    let data = d.join("data");
    for part in ["train", "test"] {
        std::fs::create_dir_all(data.join(part)).unwrap();
        for i in 0..12 {
            image::GrayImage::new(48, 48)
                .save(data.join(part).join(format!("{i}.png")))
                .unwrap();
            let j = (i % 3) as f32 * 0.004;
            std::fs::write(
                data.join(part).join(format!("{i}.txt")),
                format!(
                    "1 0.3 0.3 {} {}\n2 0.6 0.6 {} {}\n",
                    8.0 / 48.0 + j,
                    8.0 / 48.0,
                    24.0 / 48.0 - j,
                    12.0 / 48.0
                ),
            )
            .unwrap();
        }
    }
    let o = netc(&["anchors", s(&spec), "--data", s(&data), "--k", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("2 anchors from 24 boxes"), "{out}");
    assert!(out.contains("anchors=[[8, 8], [24, 12]]"), "{out}");
    let o = netc(&["anchors", s(&spec), "--data", s(&data), "--k", "30"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--k 30"), "{}", stderr(&o));
}

#[test]
fn training_a_yolo_spec_reports_map50() {
    let d = scratch("detect/train");
    let spec = d.join("fixed.net");
    std::fs::write(
        &spec,
        FIXED.replace("classes: int = 3", "classes: int = 10"),
    )
    .unwrap();
    let data = d.join("data");
    let o = netc(&[
        "data",
        "detection",
        "--output",
        s(&data),
        "--size",
        "48",
        "--train",
        "16",
        "--test",
        "8",
        "--objects",
        "1..2",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = netc(&[
        "train",
        s(&spec),
        "--data",
        s(&data),
        "--epochs",
        "2",
        "--batch",
        "8",
        "--out",
        s(&d.join("run")),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m = metrics(&o);
    let map = m["map50"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&map), "{m}");
    assert!(stderr(&o).contains("map50"), "{}", stderr(&o));
}
