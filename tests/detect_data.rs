//! Detection data: YOLO-format folders read (boxes, landmarks, classes.txt, background images,
//! both layouts) and refused with `file:line` errors; the synthetic Fashion-MNIST detection set
//! (determinism, tight boxes inside the image, overlaps); and the round trip generate → write
//! (`netc data detection`) → read.

use std::path::Path;

use netc::data::synth_detection::{self, Background, SynthConfig};
use netc::data::{self, Pixels, Split, yolo};
use netc::detect::Object;

mod cli_support;
use cli_support::{TempDir, input, netc};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A `w × h` gray PNG whose pixel (x, y) is `(x + 2y + salt) % 256`.
fn png(path: &Path, w: u32, h: u32, salt: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_fn(w, h, |x, y| image::Luma([((x + 2 * y + salt) % 256) as u8]))
        .save(path)
        .unwrap();
}

fn u8s(p: &Pixels) -> &[u8] {
    match p {
        Pixels::U8(v) => v,
        _ => panic!("expected bytes"),
    }
}

fn obj(class: usize, b: [f32; 4], landmarks: &[[f32; 2]]) -> Object {
    Object {
        class,
        cx: b[0],
        cy: b[1],
        w: b[2],
        h: b[3],
        landmarks: landmarks.to_vec(),
    }
}

fn assert_objects_close(got: &[Object], want: &[Object], tol: f32) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.class, w.class, "{g:?} vs {w:?}");
        let (gv, wv) = ([g.cx, g.cy, g.w, g.h], [w.cx, w.cy, w.w, w.h]);
        for (a, b) in gv.iter().zip(wv) {
            assert!((a - b).abs() <= tol, "{g:?} vs {w:?}");
        }
        assert_eq!(g.landmarks.len(), w.landmarks.len(), "{g:?} vs {w:?}");
        for (a, b) in g.landmarks.iter().zip(&w.landmarks) {
            assert!(
                (a[0] - b[0]).abs() <= tol && (a[1] - b[1]).abs() <= tol,
                "{g:?} vs {w:?}"
            );
        }
    }
}

/// A small flat YOLO folder: train/ with a labelled image, an image with an empty label
/// file, an image without one, a label file without an image; test/ with one image.
fn small_folder(t: &TempDir, classes: Option<&str>) {
    png(&t.join("train/a.png"), 32, 32, 0);
    write(
        &t.join("train/a.txt"),
        "2 0.5 0.5 0.25 0.5 0.4 0.3 0.6 0.7\n\n1\t0.25 0.25 0.5 0.5 0.1 0.1 0.2 0.2\r\n",
    );
    png(&t.join("train/b.png"), 32, 32, 1);
    write(&t.join("train/b.txt"), "");
    png(&t.join("train/c.png"), 32, 32, 2);
    write(
        &t.join("train/orphan.txt"),
        "0 0.5 0.5 0.1 0.1 0.5 0.5 0.5 0.5\n",
    );
    png(&t.join("test/z.png"), 32, 32, 3);
    write(
        &t.join("test/z.txt"),
        "0 0.1 0.9 0.2 0.2 0.1 0.9 0.15 0.95\n",
    );
    if let Some(c) = classes {
        write(&t.join("classes.txt"), c);
    }
}

#[test]
fn yolo_folder_reads_boxes_landmarks_classes_and_background_images() {
    let t = TempDir::new("flat");
    small_folder(&t, Some("cat\ndog\nbird\n"));
    let layout = yolo::detect(&t.0).unwrap().expect("a YOLO folder");
    let loaded = yolo::load(&t.0, &layout, &input([1, 32, 32])).unwrap();
    let s = &loaded.split;
    assert_eq!(s.train.len(), 3);
    assert_eq!(s.test.len(), 1);
    assert_eq!(s.train.sample_shape, vec![1, 32, 32]);
    // Pixels as written (sorted by name: a, b, c).
    let px = u8s(&s.train.pixels);
    assert_eq!(px[32 * 32 + 3 * 32 + 5], 5 + 2 * 3 + 1);
    assert_objects_close(
        &s.train.objects[0],
        &[
            obj(2, [0.5, 0.5, 0.25, 0.5], &[[0.4, 0.3], [0.6, 0.7]]),
            obj(1, [0.25, 0.25, 0.5, 0.5], &[[0.1, 0.1], [0.2, 0.2]]),
        ],
        1e-6,
    );
    assert!(s.train.objects[1].is_empty() && s.train.objects[2].is_empty());
    assert_objects_close(
        &s.test.objects[0],
        &[obj(0, [0.1, 0.9, 0.2, 0.2], &[[0.1, 0.9], [0.15, 0.95]])],
        1e-6,
    );
    // The label: the first object's class, 0 for background images.
    assert_eq!(s.train.labels, vec![2, 0, 0]);
    assert_eq!(s.test.labels, vec![0]);
    assert_eq!(s.train.classes, 3);
    assert_eq!(s.test.class_names, vec!["cat", "dog", "bird"]);
    // c.png has no .txt: one background image, one warning line naming it.
    assert_eq!(loaded.unlabelled, 1);
    let w = loaded.warning().unwrap();
    assert!(w.contains("1 image without") && w.contains("c.png"), "{w}");
    assert!(!w.contains('\n'), "{w}");

    // The generic loader recognizes it too.
    let via_open = data::open(t.path(), &input([1, 32, 32])).unwrap();
    assert_eq!(via_open, loaded.split);

    // Without classes.txt: classes 0..=max, named by number.
    let t = TempDir::new("flat-noclasses");
    small_folder(&t, None);
    let s = data::open(t.path(), &input([1, 32, 32])).unwrap();
    assert_eq!(s.train.classes, 3);
    assert_eq!(s.train.class_names, vec!["0", "1", "2"]);
}

#[test]
fn images_of_another_size_are_stretched_and_boxes_kept() {
    let t = TempDir::new("stretch");
    // The left quarter black, the rest white: stretched (not cropped) to 16 wide, columns 0–3
    // stay black.
    std::fs::create_dir_all(t.join("train")).unwrap();
    image::GrayImage::from_fn(64, 32, |x, _| image::Luma([if x < 16 { 0 } else { 255 }]))
        .save(t.join("train/a.png"))
        .unwrap();
    write(&t.join("train/a.txt"), "0 0.25 0.5 0.5 1.0\n");
    png(&t.join("val/b.jpg"), 40, 40, 0);
    write(&t.join("val/b.txt"), "0 0.5 0.5 0.5 0.5\n");
    let s = data::open(t.path(), &input([3, 16, 16])).unwrap();
    assert_eq!(s.train.sample_shape, vec![3, 16, 16]);
    let px = u8s(&s.train.pixels);
    assert_eq!(px.len(), 3 * 16 * 16);
    for c in 0..3 {
        let row = &px[c * 256 + 5 * 16..c * 256 + 6 * 16];
        assert!(row[..3].iter().all(|&v| v == 0), "{row:?}");
        assert!(row[5..].iter().all(|&v| v == 255), "{row:?}");
    }
    assert_objects_close(
        &s.train.objects[0],
        &[obj(0, [0.25, 0.5, 0.5, 1.0], &[])],
        0.0,
    );
    assert_eq!(s.test.len(), 1);
}

#[test]
fn ultralytics_layout_reads() {
    let t = TempDir::new("ultra");
    png(&t.join("images/train/a.png"), 24, 24, 0);
    write(&t.join("labels/train/a.txt"), "1 0.5 0.5 0.5 0.5\n");
    png(&t.join("images/train/b.png"), 24, 24, 1);
    write(&t.join("labels/train/b.txt"), "0 0.3 0.3 0.2 0.2\n");
    png(&t.join("images/val/c.png"), 24, 24, 2);
    write(&t.join("labels/val/c.txt"), "1 0.6 0.6 0.2 0.4\n");
    let s = data::open(t.path(), &input([1, 24, 24])).unwrap();
    assert_eq!(s.train.labels, vec![1, 0]);
    assert_objects_close(
        &s.test.objects[0],
        &[obj(1, [0.6, 0.6, 0.2, 0.4], &[])],
        1e-6,
    );
    assert_eq!(s.train.classes, 2);

    // labels/val missing: an error naming it, not 1 silent background image.
    std::fs::remove_dir_all(t.join("labels/val")).unwrap();
    let e = data::open(t.path(), &input([1, 24, 24]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("val") && e.contains("is missing"), "{e}");
}

#[test]
fn class_folders_still_load_as_image_folders() {
    let t = TempDir::new("classes");
    for (split, n) in [("train", 3), ("test", 1)] {
        for class in ["cat", "dog"] {
            for i in 0..n {
                png(&t.join(&format!("{split}/{class}/{i}.png")), 8, 8, i);
            }
        }
    }
    assert_eq!(yolo::detect(&t.0).unwrap(), None);
    let s = data::open(t.path(), &input([1, 8, 8])).unwrap();
    assert_eq!(s.train.class_names, vec!["cat", "dog"]);
    assert_eq!(s.train.labels, vec![0, 0, 0, 1, 1, 1]);
    assert!(s.train.objects.is_empty());
}

/// Loads a flat folder whose train/a.txt holds `labels` (and classes.txt `classes`), and
/// returns the error's text.
fn label_error(labels: &str, classes: Option<&str>) -> String {
    let t = TempDir::new("bad");
    png(&t.join("train/a.png"), 16, 16, 0);
    write(&t.join("train/a.txt"), labels);
    png(&t.join("test/b.png"), 16, 16, 0);
    write(&t.join("test/b.txt"), "0 0.5 0.5 0.5 0.5\n");
    if let Some(c) = classes {
        write(&t.join("classes.txt"), c);
    }
    match data::open(t.path(), &input([1, 16, 16])) {
        Ok(s) => panic!("accepted {labels:?}: {:?}", s.train.objects),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_label_lines_are_errors_naming_file_and_line() {
    let ok = "0 0.5 0.5 0.2 0.2\n";
    let cases: &[(&str, Option<&str>, &str, &[&str])] = &[
        (
            "0 0.5 0.5 0.2\n",
            None,
            "a.txt:1:",
            &["expected `class cx cy w h`", "found 4 values", "help:"],
        ),
        (
            "0 0.5 0.5 0.2 0.2 0.1\n",
            None,
            "a.txt:1:",
            &["6 values", "`x y` pairs"],
        ),
        (
            "0 0.5 abc 0.2 0.2\n",
            None,
            "a.txt:1:",
            &["`abc` (cy) is not a number"],
        ),
        (
            "0 0.5 0.5 0.2 0.2 0.3 zz\n",
            None,
            "a.txt:1:",
            &["`zz` (landmark 1 y)"],
        ),
        (
            "cat 0.5 0.5 0.2 0.2\n",
            None,
            "a.txt:1:",
            &["`cat` is not a class number"],
        ),
        (
            "-1 0.5 0.5 0.2 0.2\n",
            None,
            "a.txt:1:",
            &["`-1` is not a class number"],
        ),
        (
            "0 nan 0.5 0.2 0.2\n",
            None,
            "a.txt:1:",
            &["cx is `nan`", "finite"],
        ),
        (
            "0 0.5 0.5 0.2 0.2\n3 0.5 0.5 0.2 0.2\n",
            Some("a\nb\nc\n"),
            "a.txt:2:",
            &[
                "class 3 is beyond the 3 classes of classes.txt (0–2)",
                "add the class",
            ],
        ),
        (
            "0 0.95 0.5 0.2 0.2\n",
            None,
            "a.txt:1:",
            &["outside the image", "clip it"],
        ),
        (
            "0 0.5 0.5 0.2 0.2\n0 48 40 10 12\n",
            None,
            "a.txt:2:",
            &["outside the image", "divide pixel coordinates"],
        ),
        (
            "0 0.5 0.5 0 0.2\n",
            None,
            "a.txt:1:",
            &["width w is 0", "must be positive"],
        ),
        (
            "0 1.0005 0.5 0.0002 0.2\n",
            None,
            "a.txt:1:",
            &["nothing of it is inside the image"],
        ),
        (
            "0 0.5 0.5 0.2 -0.1\n",
            None,
            "a.txt:1:",
            &["height h is -0.1", "must be positive"],
        ),
        (
            "0 0.5 0.5 0.2 0.2 1.5 0.5\n",
            None,
            "a.txt:1:",
            &["landmark 1 (1.5, 0.5) is outside the image"],
        ),
        (
            "0 0.5 0.5 0.2 0.2 0.5 0.5\n\n0 0.5 0.5 0.2 0.2 0.5 0.5 0.6 0.6\n",
            None,
            "a.txt:3:",
            &["2 landmarks", "a.txt:1 has 1", "same number"],
        ),
        (
            "0 0.5 0.5 0.2 0.2\n\n\n0 0.5 0.5 0.2\n",
            None,
            "a.txt:4:",
            &["found 4 values"],
        ),
        (ok, Some("a\n\nc\n"), "classes.txt:2:", &["line 2 is empty"]),
        (
            ok,
            Some("a\nb\na\n"),
            "classes.txt:3:",
            &["`a` is named twice (lines 1 and 3)"],
        ),
    ];
    for (labels, classes, at, words) in cases {
        let e = label_error(labels, *classes);
        assert!(e.contains(at), "{labels:?}: expected {at} in\n{e}");
        for w in *words {
            assert!(e.contains(w), "{labels:?}: expected `{w}` in\n{e}");
        }
    }
}

#[test]
fn label_files_are_bounded_and_text() {
    // Too large: refused before it is read, with its size and the limit.
    let big = "0 0.5 0.5 0.2 0.2\n".repeat((yolo::MAX_LABEL_BYTES as usize) / 18 + 1);
    let e = label_error(&big, None);
    assert!(
        e.contains("a.txt") && e.contains("too large") && e.contains("1 MiB"),
        "{e}"
    );
    // Too many lines, though small.
    let many = "\n".repeat(yolo::MAX_LABEL_LINES) + "0 0.5 0.5 0.2 0.2\n";
    let e = label_error(&many, None);
    assert!(
        e.contains("a.txt") && e.contains("more than 10000 lines"),
        "{e}"
    );
    // Not UTF-8.
    let t = TempDir::new("utf8");
    png(&t.join("train/a.png"), 16, 16, 0);
    std::fs::write(t.join("train/a.txt"), b"0 0.5 0.5 0.2 \xff\n").unwrap();
    png(&t.join("test/b.png"), 16, 16, 0);
    let e = data::open(t.path(), &input([1, 16, 16]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("a.txt") && e.contains("not UTF-8"), "{e}");
}

#[test]
fn boxes_within_the_tolerance_are_clipped() {
    let t = TempDir::new("tol");
    png(&t.join("train/a.png"), 16, 16, 0);
    // x2 = 1.0005, y1 = -0.0005: within 1e-3 of the image, clipped to it.
    write(
        &t.join("train/a.txt"),
        "0 0.9005 0.0995 0.2 0.2 1.0004 -0.0002\n",
    );
    png(&t.join("test/b.png"), 16, 16, 0);
    let s = data::open(t.path(), &input([1, 16, 16])).unwrap();
    let o = &s.train.objects[0][0];
    let [x1, y1, x2, y2] = o.xyxy();
    assert!((x2 - 1.0).abs() < 1e-6 && (y1 - 0.0).abs() < 1e-6, "{o:?}");
    assert!(
        (x1 - 0.8005).abs() < 1e-5 && (y2 - 0.1995).abs() < 1e-5,
        "{o:?}"
    );
    assert_eq!(o.landmarks, vec![[1.0, 0.0]]);
}

#[test]
fn folder_layout_errors() {
    // A train/ of labelled images but no test/.
    let t = TempDir::new("notest");
    png(&t.join("train/a.png"), 16, 16, 0);
    write(&t.join("train/a.txt"), "0 0.5 0.5 0.2 0.2\n");
    let e = data::open(t.path(), &input([1, 16, 16]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no test/ folder"), "{e}");
    // An empty test/.
    std::fs::create_dir_all(t.join("test")).unwrap();
    let e = data::open(t.path(), &input([1, 16, 16]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("test") && e.contains("has no images"), "{e}");
}

fn small_config(seed: u64) -> SynthConfig {
    SynthConfig {
        channels: 1,
        height: 64,
        width: 64,
        train: 60,
        test: 20,
        min_objects: 1,
        max_objects: 4,
        background: Background::Noise,
        seed,
    }
}

#[test]
fn synthetic_set_is_deterministic_for_a_seed() {
    let a = synth_detection::generate(&small_config(5)).unwrap();
    let b = synth_detection::generate(&small_config(5)).unwrap();
    assert_eq!(a, b);
    let c = synth_detection::generate(&small_config(6)).unwrap();
    assert_ne!(a.train.pixels, c.train.pixels);
    assert_ne!(a.train.objects, c.train.objects);
    // Each image depends on its own stream: a longer set starts with the same images.
    let longer = synth_detection::generate(&SynthConfig {
        train: 80,
        ..small_config(5)
    })
    .unwrap();
    assert_eq!(longer.train.objects[..60], a.train.objects[..]);
    assert_eq!(a.train.class_names[9], "Ankle boot");
    assert_eq!(a.train.labels[3], a.train.objects[3][0].class as i64);
}

/// The pixel box (ends exclusive) of object `o` in a `w × h` image.
fn pixel_box(o: &Object, w: usize, h: usize) -> [usize; 4] {
    let [x1, y1, x2, y2] = o.xyxy();
    let r = |v: f32, s: usize| (v * s as f32).round() as usize;
    [r(x1, w), r(y1, h), r(x2, w), r(y2, h)]
}

#[test]
fn synthetic_boxes_are_tight_and_inside_the_image() {
    // One object on a black background: a pixel is lit exactly when it is inside the box, and
    // every edge of the box has a lit pixel.
    let cfg = SynthConfig {
        min_objects: 1,
        max_objects: 1,
        background: Background::Plain,
        train: 200,
        test: 10,
        ..small_config(1)
    };
    let s = synth_detection::generate(&cfg).unwrap();
    let (w, h) = (64, 64);
    let px = u8s(&s.train.pixels);
    let mut widths = Vec::new();
    for (i, objs) in s.train.objects.iter().enumerate() {
        assert_eq!(objs.len(), 1);
        let o = &objs[0];
        let [x1, y1, x2, y2] = o.xyxy();
        assert!(x1 >= 0.0 && y1 >= 0.0 && x2 <= 1.0 && y2 <= 1.0, "{o:?}");
        let [bx1, by1, bx2, by2] = pixel_box(o, w, h);
        let img = &px[i * w * h..(i + 1) * w * h];
        let lit = |x: usize, y: usize| img[y * w + x] > 0;
        for y in 0..h {
            for x in 0..w {
                let inside = (bx1..bx2).contains(&x) && (by1..by2).contains(&y);
                assert!(
                    inside || !lit(x, y),
                    "image {i}: ({x}, {y}) lit outside {o:?}"
                );
            }
        }
        assert!((by1..by2).any(|y| lit(bx1, y)), "image {i}: left edge dark");
        assert!(
            (by1..by2).any(|y| lit(bx2 - 1, y)),
            "image {i}: right edge dark"
        );
        assert!((bx1..bx2).any(|x| lit(x, by1)), "image {i}: top edge dark");
        assert!(
            (bx1..bx2).any(|x| lit(x, by2 - 1)),
            "image {i}: bottom edge dark"
        );
        widths.push(bx2 - bx1);
    }
    // Scales vary: objects from well under 28 px to well over it.
    let (lo, hi) = (widths.iter().min().unwrap(), widths.iter().max().unwrap());
    assert!(*lo < 20 && *hi > 36, "widths {lo}..{hi}");
}

fn iou(a: &Object, b: &Object) -> f32 {
    let ([a1, a2, a3, a4], [b1, b2, b3, b4]) = (a.xyxy(), b.xyxy());
    let iw = (a3.min(b3) - a1.max(b1)).max(0.0);
    let ih = (a4.min(b4) - a2.max(b2)).max(0.0);
    let inter = iw * ih;
    inter / (a.w * a.h + b.w * b.h - inter)
}

#[test]
fn synthetic_objects_overlap_sometimes_but_not_wholly() {
    let s = synth_detection::generate(&small_config(2)).unwrap();
    let mut overlapping = 0;
    let mut counts = [0usize; 5];
    for objs in &s.train.objects {
        counts[objs.len()] += 1;
        for (i, a) in objs.iter().enumerate() {
            for b in &objs[i + 1..] {
                let v = iou(a, b);
                assert!(v <= synth_detection::MAX_IOU + 1e-4, "IoU {v}: {a:?} {b:?}");
                if v > 0.0 {
                    overlapping += 1;
                }
            }
        }
    }
    assert!(overlapping >= 5, "{overlapping} overlapping pairs");
    // 1 to 4 objects per image, each count occurring.
    assert_eq!(counts[0], 0);
    assert!(counts[1..].iter().all(|&c| c > 0), "{counts:?}");
}

#[test]
fn generate_write_read_round_trip() {
    let split = synth_detection::generate(&small_config(9)).unwrap();
    let t = TempDir::new("roundtrip");
    let dir = t.join("det");
    yolo::write(&split, &dir, false).unwrap();
    // Nothing but the folder is left beside it.
    let beside: Vec<_> = std::fs::read_dir(&t.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, vec![std::ffi::OsString::from("det")]);
    let back = data::open(dir.to_str().unwrap(), &input([1, 64, 64])).unwrap();
    assert_eq!(back.train.pixels, split.train.pixels);
    assert_eq!(back.test.pixels, split.test.pixels);
    assert_eq!(back.train.labels, split.train.labels);
    assert_eq!(back.train.class_names, split.train.class_names);
    assert_eq!(back.test.classes, 10);
    for (d, orig) in [(&back.train, &split.train), (&back.test, &split.test)] {
        assert_eq!(d.objects.len(), orig.objects.len());
        for (g, w) in d.objects.iter().zip(&orig.objects) {
            assert_objects_close(g, w, 1e-6);
        }
    }
}

#[test]
fn writer_refuses_to_overwrite_what_it_did_not_write() {
    let split = synth_detection::generate(&SynthConfig {
        train: 3,
        test: 2,
        ..small_config(0)
    })
    .unwrap();
    let t = TempDir::new("overwrite");
    let dir = t.join("out");
    // An empty existing directory is fine.
    std::fs::create_dir(&dir).unwrap();
    yolo::write(&split, &dir, false).unwrap();
    // Again: not empty.
    let e = yolo::write(&split, &dir, false).unwrap_err().to_string();
    assert!(e.contains("is not empty") && e.contains("--force"), "{e}");
    // With force: replaced by the new data.
    let other = synth_detection::generate(&SynthConfig {
        train: 4,
        test: 2,
        ..small_config(1)
    })
    .unwrap();
    yolo::write(&other, &dir, true).unwrap();
    assert!(dir.join("train/000003.png").is_file());
    // A directory with something else in it is never replaced.
    write(&dir.join("notes.md"), "mine");
    let e = yolo::write(&split, &dir, true).unwrap_err().to_string();
    assert!(
        e.contains("notes.md") && e.contains("does not write"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.md")).unwrap(),
        "mine"
    );
    // A file is not a directory.
    let e = yolo::write(&split, &dir.join("notes.md"), true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a directory"), "{e}");
    // Only the output directory is left beside it: no temporary directories.
    let beside: Vec<_> = std::fs::read_dir(&t.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, vec![std::ffi::OsString::from("out")]);
}

#[test]
fn detection_source_is_the_default_synthetic_split() {
    let s: Split = data::open("detection", &input([1, 96, 96])).unwrap();
    assert_eq!((s.train.len(), s.test.len()), (2000, 400));
    assert_eq!(s.train.sample_shape, vec![1, 96, 96]);
    assert_eq!(s.train.objects.len(), 2000);
    assert!(s.train.objects.iter().all(|o| (1..=4).contains(&o.len())));
    assert_eq!(
        s,
        synth_detection::generate(&SynthConfig::default()).unwrap()
    );
    // At the model input's size and channels.
    let s = data::open("detection", &input([3, 48, 64])).unwrap();
    assert_eq!(s.test.sample_shape, vec![3, 48, 64]);
    let px = u8s(&s.test.pixels);
    assert_eq!(px[..48 * 64], px[48 * 64..2 * 48 * 64]);
}

#[test]
fn netc_data_detection_writes_a_yolo_folder() {
    let t = TempDir::new("cli");
    let out = t.join("det");
    let o = out.to_str().unwrap();
    let args = [
        "data",
        "detection",
        "--output",
        o,
        "--size",
        "48",
        "--train",
        "12",
        "--test",
        "4",
        "--objects",
        "2..3",
        "--background",
        "noise",
        "--seed",
        "4",
    ];
    let r = netc(&args);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(stdout.contains("12 training and 4 test images"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(out.join("classes.txt"))
            .unwrap()
            .lines()
            .count(),
        10
    );
    let s = data::open(o, &input([1, 48, 48])).unwrap();
    let want = synth_detection::generate(&SynthConfig {
        channels: 1,
        height: 48,
        width: 48,
        train: 12,
        test: 4,
        min_objects: 2,
        max_objects: 3,
        background: Background::Noise,
        seed: 4,
    })
    .unwrap();
    assert_eq!(s.train.pixels, want.train.pixels);
    // Again: refused (exit 1), the folder untouched; with --force: rewritten.
    let r = netc(&args);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("is not empty"));
    let mut forced = args.to_vec();
    forced.push("--force");
    assert!(netc(&forced).status.success());
    // Bad arguments: exit 2 with the reason.
    for (flag, value, words) in [
        ("--objects", "4..1", "MIN ≤ MAX"),
        ("--objects", "x", "not a number of objects"),
        ("--size", "4", "out of range"),
        ("--train", "0", "at least one image"),
    ] {
        let fresh = t.join("fresh");
        let r = netc(&[
            "data",
            "detection",
            "--output",
            fresh.to_str().unwrap(),
            flag,
            value,
        ]);
        assert!(!fresh.exists());
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(words), "{flag} {value}: {err}");
    }
}

/// Label text from tokens that are near misses of valid values.
fn label_lines() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let token = prop_oneof![
        (0u32..12).prop_map(|c| c.to_string()),
        (-0.5f32..1.5).prop_map(|v| v.to_string()),
        Just("nan".to_string()),
        Just("-inf".to_string()),
        Just("1e40".to_string()),
        Just("99999999999999999999999".to_string()),
        Just("-1".to_string()),
        Just("0x1".to_string()),
        Just("é".to_string()),
        Just("\u{0}".to_string()),
    ];
    proptest::collection::vec(proptest::collection::vec(token, 0..12), 0..6).prop_map(|lines| {
        lines
            .iter()
            .map(|l| l.join(" "))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 64, ..Default::default() })]

    /// Whatever the label file holds: a dataset whose objects are valid, or an error naming
    /// the file; never a panic.
    #[test]
    fn arbitrary_label_files_load_or_fail_cleanly(labels in label_lines(), bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
        for (i, content) in [labels.into_bytes(), bytes].into_iter().enumerate() {
            let t = TempDir::new("fuzz");
            png(&t.join("train/a.png"), 8, 8, 0);
            std::fs::write(t.join("train/a.txt"), &content).unwrap();
            png(&t.join("test/b.png"), 8, 8, 0);
            write(&t.join("classes.txt"), "a\nb\nc\nd\ne\nf\ng\nh\n");
            match data::open(t.path(), &input([1, 8, 8])) {
                Ok(s) => {
                    for o in s.train.objects.iter().flatten() {
                        let [x1, y1, x2, y2] = o.xyxy();
                        proptest::prop_assert!(o.class < 8, "{o:?}");
                        proptest::prop_assert!(o.w > 0.0 && o.h > 0.0, "{o:?}");
                        let tol = 1e-6;
                        proptest::prop_assert!(
                            x1 >= -tol && y1 >= -tol && x2 <= 1.0 + tol && y2 <= 1.0 + tol,
                            "{o:?}"
                        );
                    }
                }
                Err(e) => {
                    let e = e.to_string();
                    proptest::prop_assert!(e.contains("a.txt"), "case {i}: {e}");
                }
            }
        }
    }
}

/// The tight box (fractions of the image) of the pixels above 0.5, if any.
fn lit_box(img: &[f32], h: usize, w: usize) -> Option<[f32; 4]> {
    let (mut x1, mut y1, mut x2, mut y2) = (w, h, 0, 0);
    for y in 0..h {
        for x in 0..w {
            if img[y * w + x] > 0.5 {
                (x1, y1, x2, y2) = (x1.min(x), y1.min(y), x2.max(x + 1), y2.max(y + 1));
            }
        }
    }
    (x2 > x1).then(|| {
        [
            x1 as f32 / w as f32,
            y1 as f32 / h as f32,
            x2 as f32 / w as f32,
            y2 as f32 / h as f32,
        ]
    })
}

#[test]
fn boxes_follow_the_pixels_through_every_geometric_augmentation() {
    use netc::data::augment::apply_with_objects;
    use netc::data::rng::Rng;
    use netc::detect::boxes::iou;
    use netc::train_config::Augment;
    let (h, w) = (64usize, 80usize);
    // A bright 20×24 px rectangle at x 10..30, y 20..44: its box is exact.
    let mut img = vec![0f32; h * w];
    for y in 20..44 {
        for x in 10..30 {
            img[y * w + x] = 1.0;
        }
    }
    let truth = obj(3, [20.0 / 80.0, 32.0 / 64.0, 20.0 / 80.0, 24.0 / 64.0], &[]);
    let augs = [
        Augment::Mirror { p: 1.0 },
        Augment::VFlip { p: 1.0 },
        Augment::RandomCrop {
            pad: 12,
            size: None,
        },
        Augment::RandomCrop {
            pad: 4,
            size: Some([48, 56]),
        },
        Augment::RandomResizedCrop {
            scale: [0.3, 1.0],
            ratio: [0.75, 1.33],
        },
        Augment::Rotate { degrees: 40.0 },
        Augment::Affine {
            degrees: 15.0,
            translate: [0.2, 0.1],
            scale: [0.7, 1.3],
            shear: [-10.0, 10.0, -5.0, 5.0],
        },
    ];
    let (mut kept, mut dropped) = (0, 0);
    for aug in &augs {
        for seed in 0..25 {
            let (mut x, mut objs) = (img.clone(), vec![truth.clone()]);
            let mut rng = Rng::new(seed);
            apply_with_objects(
                std::slice::from_ref(aug),
                &mut x,
                [1, h, w],
                true,
                &mut rng,
                &mut objs,
            );
            match (objs.first(), lit_box(&x, h, w)) {
                (Some(o), Some(lit)) => {
                    let got = iou(&o.xyxy(), &lit);
                    // Rotation and shear: the mapped corners' box is the rotated
                    // rectangle's, which its lit pixels fill up to blur at the edges.
                    assert!(got > 0.8, "{aug}, seed {seed}: IoU {got}: {o:?} vs {lit:?}");
                    assert_eq!(o.class, 3);
                    kept += 1;
                }
                (None, lit) => {
                    // Dropped: at most a sliver (under a pixel wide) is left in view.
                    if let Some([a, b, c, d]) = lit {
                        assert!(
                            (c - a) * w as f32 <= 2.0 || (d - b) * h as f32 <= 2.0,
                            "{aug}, seed {seed}: dropped but {lit:?} is visible"
                        );
                    }
                    dropped += 1;
                }
                (Some(o), None) => panic!("{aug}, seed {seed}: kept {o:?} but nothing is visible"),
            }
        }
    }
    assert!(kept > 150, "kept {kept}, dropped {dropped}");
    // Colour changes leave the boxes alone.
    let mut objs = vec![truth.clone()];
    let color = Augment::ColorShift {
        brightness: 0.3,
        contrast: 0.3,
        saturation: 0.0,
        hue: 0.0,
    };
    apply_with_objects(
        &[color],
        &mut img.clone(),
        [1, h, w],
        true,
        &mut Rng::new(1),
        &mut objs,
    );
    assert_eq!(objs, vec![truth]);
}

#[test]
fn detection_batches_carry_the_augmented_boxes_and_landmarks_refuse_moves() {
    use netc::data::{Loader, LoaderOptions, Normalize};
    use netc::train_config::Augment;
    let split = synth_detection::generate(&small_config(2)).unwrap();
    let train = std::sync::Arc::new(split.train);
    let loader = Loader::new(
        train.clone(),
        Normalize::none(1),
        LoaderOptions::train(8, 0, vec![Augment::Mirror { p: 1.0 }]),
    )
    .unwrap();
    let b = loader.gather(0, vec![0, 1, 2]);
    for (k, &i) in b.indices.iter().enumerate() {
        let (got, was) = (&b.objects[k], &train.objects[i]);
        assert_eq!(got.len(), was.len());
        for (g, o) in got.iter().zip(was) {
            assert!(
                (g.cx - (1.0 - o.cx)).abs() < 1e-5 && (g.cy - o.cy).abs() < 1e-5,
                "{g:?} {o:?}"
            );
        }
    }
    // With landmarks, a flip is refused (left and right points would swap); colour is fine.
    let mut marked = (*train).clone();
    marked.objects[0][0].landmarks = vec![[0.2, 0.3]];
    let marked = std::sync::Arc::new(marked);
    let load = |augment: Vec<Augment>| {
        Loader::new(
            marked.clone(),
            Normalize::none(1),
            LoaderOptions::train(8, 0, augment),
        )
    };
    let e = load(vec![Augment::Mirror { p: 0.5 }])
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("`mirror(p=0.5)` moves pixels, and the landmarks"),
        "{e}"
    );
    assert!(e.contains("color augmentations only"), "{e}");
    let color = Augment::ColorShift {
        brightness: 0.2,
        contrast: 0.2,
        saturation: 0.0,
        hue: 0.0,
    };
    assert!(load(vec![color, Augment::PcaLighting { std: 0.1 }]).is_ok());
}

#[test]
fn localization_source_has_at_most_one_object_per_image() {
    let s = data::open("localization", &input([1, 64, 64])).unwrap();
    for set in [&s.train, &s.test] {
        let counts: Vec<usize> = set.objects.iter().map(Vec::len).collect();
        assert!(counts.iter().all(|&c| c <= 1));
        let with = counts.iter().filter(|&&c| c == 1).count();
        // About half the images have an object (0 or 1, uniformly).
        assert!(
            with * 3 > set.len() && with * 3 < 2 * set.len(),
            "{with} of {}",
            set.len()
        );
    }
}
