//! Detection post-processing (`netc::detect`, `netc::picture::render_detections`) against
//! stored references and by its properties.
//!
//! `tests/data/detect/cases.json` is made by `tests/data/detect/make_cases.py` (torch 2.14,
//! torchvision 0.29): torchvision's `box_iou`, `nms` and `batched_nms` on random, tied and
//! degenerate boxes; VOC mAP by a numpy transcription of the devkit's `voc_eval` / `voc_ap`;
//! a grid head decoded by the formulas of `src/detect/mod.rs` written independently in numpy.
//! Anchors (k-means) and drawing are tested by their properties.

use std::sync::OnceLock;

use netc::detect::anchors::{kmeans_anchors, wh_iou};
use netc::detect::boxes::{batched_nms, box_iou, iou, nms};
use netc::detect::decode::{DecodeOptions, GridHead, decode};
use netc::detect::map::mean_average_precision;
use netc::detect::{Detection, Object, Xyxy};
use netc::picture::{
    BOX_LABEL_HEIGHT, Normalize, Tile, class_colour, draw_scale, render_detections, render_image,
    write_detections,
};
use proptest::prelude::*;
use serde_json::Value;

fn cases() -> &'static Value {
    static CASES: OnceLock<Value> = OnceLock::new();
    CASES.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/detect/cases.json");
        serde_json::from_str(&std::fs::read_to_string(path).expect("the stored cases"))
            .expect("JSON")
    })
}

/// A number; null is NaN (JSON has no NaN).
fn num(v: &Value) -> f32 {
    if v.is_null() {
        f32::NAN
    } else {
        v.as_f64().expect("a number") as f32
    }
}

fn nums(v: &Value) -> Vec<f32> {
    v.as_array().expect("a list").iter().map(num).collect()
}

fn boxes(v: &Value) -> Vec<Xyxy> {
    v.as_array()
        .expect("a list of boxes")
        .iter()
        .map(|b| nums(b).try_into().expect("4 numbers"))
        .collect()
}

fn indices(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|x| x.as_u64().expect("an index") as usize)
        .collect()
}

fn detection(v: &Value) -> Detection {
    Detection {
        class: v["class"].as_u64().unwrap() as usize,
        score: num(&v["score"]),
        bbox: nums(&v["box"]).try_into().unwrap(),
    }
}

// ---- against torchvision ----

#[test]
fn box_iou_matches_torchvision() {
    for (k, case) in cases()["box_iou"].as_array().unwrap().iter().enumerate() {
        let (a, b) = (boxes(&case["a"]), boxes(&case["b"]));
        let want = nums(&case["iou"]);
        let got = box_iou(&a, &b);
        assert_eq!(got.len(), want.len(), "case {k}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let (r, c) = (i / b.len(), i % b.len());
            assert!(
                (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-6,
                "case {k} [{r}, {c}]: {g} vs torchvision {w}"
            );
            let one = iou(&a[r], &b[c]);
            assert!(one == *g || (one.is_nan() && g.is_nan()));
        }
    }
}

#[test]
fn nms_matches_torchvision() {
    let all = cases()["nms"].as_array().unwrap();
    assert!(all.len() >= 10);
    for case in all {
        let note = case["note"].as_str().unwrap();
        let b = boxes(&case["boxes"]);
        let s = nums(&case["scores"]);
        let c = indices(&case["classes"]);
        let thr = num(&case["iou_threshold"]);
        assert_eq!(
            nms(&b, &s, thr).unwrap(),
            indices(&case["nms"]),
            "nms: {note}"
        );
        assert_eq!(
            batched_nms(&b, &s, &c, thr).unwrap(),
            indices(&case["batched_nms"]),
            "batched_nms: {note}"
        );
    }
}

#[test]
fn nms_survives_nan_boxes() {
    // A NaN coordinate makes every IoU with the box NaN: it is kept and suppresses nothing.
    let b = [
        [0.0, 0.0, 1.0, 1.0],
        [0.0, 0.0, f32::NAN, 1.0],
        [0.0, 0.0, 1.0, 1.0],
        [f32::NAN; 4],
    ];
    let s = [0.9, 0.95, 0.8, f32::NAN];
    assert_eq!(nms(&b, &s, 0.5).unwrap(), [3, 1, 0]);
    assert_eq!(
        batched_nms(&b, &s, &[0, 0, 1, 1], 0.5).unwrap(),
        [3, 1, 0, 2]
    );
}

// ---- mAP against the VOC devkit ----

fn object(v: &Value) -> Object {
    let [cx, cy, w, h]: [f32; 4] = nums(&v["box"]).try_into().unwrap();
    Object {
        class: v["class"].as_u64().unwrap() as usize,
        cx,
        cy,
        w,
        h,
        landmarks: vec![],
    }
}

#[test]
fn map_matches_the_voc_devkit() {
    let all = cases()["map"].as_array().unwrap();
    assert!(all.len() >= 4);
    for (k, case) in all.iter().enumerate() {
        let images = case["images"].as_array().unwrap();
        let dets: Vec<Vec<Detection>> = images
            .iter()
            .map(|im| {
                im["detections"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(detection)
                    .collect()
            })
            .collect();
        let truth: Vec<Vec<Object>> = images
            .iter()
            .map(|im| {
                im["objects"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(object)
                    .collect()
            })
            .collect();
        let classes = case["num_classes"].as_u64().unwrap() as usize;
        let got =
            mean_average_precision(&dets, &truth, classes, num(&case["iou_threshold"])).unwrap();
        let want: Vec<Option<f64>> = case["ap"]
            .as_array()
            .unwrap()
            .iter()
            .map(Value::as_f64)
            .collect();
        assert_eq!(got.per_class.len(), classes);
        for (c, (g, w)) in got.per_class.iter().zip(&want).enumerate() {
            match (g, w) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "case {k} class {c}: {g} {w}"),
                (None, None) => {}
                _ => panic!("case {k} class {c}: {g:?} vs devkit {w:?}"),
            }
        }
        match (got.map, case["map"].as_f64()) {
            (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "case {k}: mAP {g} vs {w}"),
            (None, None) => {}
            (g, w) => panic!("case {k}: mAP {g:?} vs devkit {w:?}"),
        }
        let counted: usize = got.ground_truth.iter().sum();
        assert_eq!(counted, truth.iter().map(Vec::len).sum::<usize>());
    }
}

#[test]
fn perfect_detections_score_one_and_duplicates_count_against() {
    let truth = vec![vec![
        Object {
            class: 0,
            cx: 0.3,
            cy: 0.3,
            w: 0.2,
            h: 0.2,
            landmarks: vec![],
        },
        Object {
            class: 1,
            cx: 0.7,
            cy: 0.7,
            w: 0.2,
            h: 0.4,
            landmarks: vec![],
        },
    ]];
    let exact: Vec<Detection> = truth[0]
        .iter()
        .map(|o| Detection {
            class: o.class,
            score: 0.9,
            bbox: o.xyxy(),
        })
        .collect();
    let m = mean_average_precision(std::slice::from_ref(&exact), &truth, 3, 0.5).unwrap();
    assert_eq!(m.per_class, [Some(1.0), Some(1.0), None]);
    assert_eq!(m.map, Some(1.0));
    // A duplicate of higher score takes the box; the original becomes a false positive
    // after it, which does not lower the envelope at recall 1.
    let mut dup = exact.clone();
    dup.push(Detection {
        score: 0.95,
        ..exact[0].clone()
    });
    assert_eq!(
        mean_average_precision(&[dup.clone()], &truth, 3, 0.5)
            .unwrap()
            .per_class[0],
        Some(1.0)
    );
    // A false positive ranked first halves the precision at recall 1.
    dup[2].bbox = [0.0, 0.9, 0.05, 1.0];
    let m = mean_average_precision(&[dup], &truth, 3, 0.5).unwrap();
    assert_eq!(m.per_class[0], Some(0.5));
}

// ---- decode against the formulas in numpy ----

#[test]
fn decode_matches_the_formulas() {
    let all = cases()["decode"].as_array().unwrap();
    for (k, case) in all.iter().enumerate() {
        let values = nums(&case["values"]);
        let shape: [usize; 3] = indices(&case["shape"]).try_into().unwrap();
        let anchors: Vec<[f32; 2]> = case["anchors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| nums(a).try_into().unwrap())
            .collect();
        let input: [usize; 2] = indices(&case["input_size"]).try_into().unwrap();
        let head = GridHead {
            values: &values,
            shape,
            anchors: &anchors,
            num_classes: case["num_classes"].as_u64().unwrap() as usize,
            input_size: input,
        };
        let options = DecodeOptions {
            score_threshold: num(&case["score_threshold"]),
            iou_threshold: num(&case["iou_threshold"]),
            max_detections: case["max_detections"].as_u64().map(|n| n as usize),
            clip: case["clip"].as_bool().unwrap(),
        };
        let got = decode(&head, &options).unwrap();
        let want: Vec<Detection> = case["detections"]
            .as_array()
            .unwrap()
            .iter()
            .map(detection)
            .collect();
        assert!(!want.is_empty());
        assert_eq!(got.len(), want.len(), "case {k}: {got:?}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.class, w.class, "case {k} detection {i}");
            assert!(
                (g.score - w.score).abs() <= 1e-5 * w.score.max(1.0),
                "case {k} detection {i}: score {} vs {}",
                g.score,
                w.score
            );
            for (a, b) in g.bbox.iter().zip(&w.bbox) {
                assert!(
                    (a - b).abs() <= 1e-5,
                    "case {k} detection {i}: {g:?} vs {w:?}"
                );
            }
        }
    }
}

#[test]
fn decode_rejects_a_head_that_does_not_fit() {
    let values = vec![0.0; 45 * 2 * 2];
    let head = GridHead {
        values: &values,
        shape: [45, 2, 2],
        anchors: &[[10.0, 10.0]; 5],
        num_classes: 3,
        input_size: [64, 64],
    };
    let e = decode(&head, &DecodeOptions::default()).unwrap_err();
    assert!(
        e.contains("the head has 45 channels; 5 anchors × (5 + 3 classes) = 40 expected"),
        "{e}"
    );
}

#[test]
fn decode_survives_non_finite_outputs() {
    let mut values = vec![0.0f32; 7 * 3 * 3];
    values[4 * 9] = f32::NAN; // objectness of cell 0
    values[4 * 9 + 1] = f32::INFINITY; // objectness of cell 1
    values[2 * 9 + 1] = f32::INFINITY; // its width
    values[3 * 9 + 1] = f32::INFINITY; // and height
    values[5 * 9 + 2] = f32::INFINITY; // a class logit of cell 2
    values[4 * 9 + 2] = 5.0;
    let head = GridHead {
        values: &values,
        shape: [7, 3, 3],
        anchors: &[[8.0, 8.0]],
        num_classes: 2,
        input_size: [24, 24],
    };
    let opts = DecodeOptions {
        score_threshold: 0.1,
        ..DecodeOptions::default()
    };
    let got = decode(&head, &opts).unwrap();
    // Cell 1 (infinite width, clipped to the image) is found; NaN scores are never kept.
    assert!(got.iter().all(|d| d.score > 0.1), "{got:?}");
    assert!(
        got.iter().any(|d| d.bbox == [0.0, 0.0, 1.0, 1.0]),
        "{got:?}"
    );
}

// ---- anchors: properties ----

/// `per` boxes around each of `centres`, jittered by up to ±4 % (deterministic).
fn clustered_sizes(centres: &[[f32; 2]], per: usize) -> Vec<[f32; 2]> {
    let mut out = Vec::new();
    let mut rng = netc::data::rng::Rng::new(99);
    for &[w, h] in centres {
        for _ in 0..per {
            let jw = rng.uniform_in(-0.04, 0.04) as f32;
            let jh = rng.uniform_in(-0.04, 0.04) as f32;
            out.push([w * (1.0 + jw), h * (1.0 + jh)]);
        }
    }
    out
}

const CLUSTERS: [[f32; 2]; 5] = [
    [10.0, 12.0],
    [40.0, 18.0],
    [22.0, 60.0],
    [70.0, 70.0],
    [150.0, 110.0],
];

#[test]
fn anchors_recover_well_separated_clusters() {
    let sizes = clustered_sizes(&CLUSTERS, 40);
    let mut want = CLUSTERS.to_vec();
    want.sort_by(|a, b| (a[0] * a[1]).total_cmp(&(b[0] * b[1])));
    for seed in 0..20 {
        let fit = kmeans_anchors(&sizes, 5, seed).unwrap();
        assert!(fit.converged, "seed {seed}");
        assert_eq!(fit.anchors.len(), 5);
        for (g, w) in fit.anchors.iter().zip(&want) {
            let o = wh_iou([g[0].into(), g[1].into()], [w[0].into(), w[1].into()]);
            assert!(
                o > 0.95,
                "seed {seed}: anchor {g:?} vs cluster {w:?} (IoU {o})"
            );
        }
        assert!(
            fit.mean_iou > 0.9 && fit.mean_iou <= 1.0,
            "{}",
            fit.mean_iou
        );
    }
}

#[test]
fn anchors_are_deterministic_sorted_and_in_range() {
    // Sizes with no cluster structure: uniform in [4, 100) (deterministic).
    let mut rng = netc::data::rng::Rng::new(5);
    let sizes: Vec<[f32; 2]> = (0..300)
        .map(|_| {
            [
                rng.uniform_in(4.0, 100.0) as f32,
                rng.uniform_in(4.0, 100.0) as f32,
            ]
        })
        .collect();
    let a = kmeans_anchors(&sizes, 5, 7).unwrap();
    assert_eq!(
        a,
        kmeans_anchors(&sizes, 5, 7).unwrap(),
        "same seed, same anchors"
    );
    let areas: Vec<f32> = a.anchors.iter().map(|[w, h]| w * h).collect();
    assert!(areas.windows(2).all(|p| p[0] <= p[1]), "{:?}", a.anchors);
    assert!(a.mean_iou > 0.0 && a.mean_iou < 1.0, "{}", a.mean_iou);
    // The mean IoU is what the anchors give, recomputed here.
    let mean = sizes
        .iter()
        .map(|&[w, h]| {
            a.anchors
                .iter()
                .map(|&[aw, ah]| wh_iou([w.into(), h.into()], [aw.into(), ah.into()]))
                .fold(0.0, f64::max)
        })
        .sum::<f64>()
        / sizes.len() as f64;
    assert!((mean - a.mean_iou).abs() < 1e-6, "{mean} vs {}", a.mean_iou);
    // More anchors fit better; one anchor is the best single size.
    let one = kmeans_anchors(&sizes, 1, 7).unwrap();
    assert!(one.mean_iou < a.mean_iou);
    // Each box belongs to its nearest anchor, and each anchor is its boxes' mean (converged).
    assert!(a.converged);
    for (i, anchor) in a.anchors.iter().enumerate() {
        let mine: Vec<&[f32; 2]> = sizes
            .iter()
            .filter(|&&[w, h]| {
                let ious: Vec<f64> = a
                    .anchors
                    .iter()
                    .map(|&[aw, ah]| wh_iou([w.into(), h.into()], [aw.into(), ah.into()]))
                    .collect();
                let best = ious.iter().cloned().fold(f64::MIN, f64::max);
                ious.iter().position(|&o| o == best) == Some(i)
            })
            .collect();
        assert!(!mine.is_empty());
        let mw = mine.iter().map(|b| f64::from(b[0])).sum::<f64>() / mine.len() as f64;
        let mh = mine.iter().map(|b| f64::from(b[1])).sum::<f64>() / mine.len() as f64;
        assert!((mw - f64::from(anchor[0])).abs() < 1e-3 * mw, "anchor {i}");
        assert!((mh - f64::from(anchor[1])).abs() < 1e-3 * mh, "anchor {i}");
    }
}

// ---- drawing ----

fn flat_gray(w: usize, h: usize) -> Tile {
    Tile {
        pixels: vec![0.5; w * h],
        channels: 1,
        height: h,
        width: w,
        label: String::new(),
    }
}

#[test]
fn boxes_are_drawn_where_they_are() {
    // 48×40 is enlarged 8× to 384×320; the box [0.25, 0.5, 0.75, 0.9] covers columns
    // 96..=287 and rows 160..=287, its outline 2 pixels wide inside them.
    let image = flat_gray(48, 40);
    assert_eq!(draw_scale(48, 40), 8);
    let det = Detection {
        class: 2,
        score: 0.87,
        bbox: [0.25, 0.5, 0.75, 0.9],
    };
    let names = vec!["shirt".to_string(), "bag".into(), "boot".into()];
    let (rgb, w, h) = render_detections(
        &image,
        Normalize::Clamp01,
        std::slice::from_ref(&det),
        &names,
    )
    .unwrap();
    assert_eq!((w, h), (384, 320));
    let at = |x: usize, y: usize| -> [u8; 3] { rgb[(y * 384 + x) * 3..][..3].try_into().unwrap() };
    let colour = class_colour(2);
    let gray = [128; 3];
    for y in [160, 161, 200, 286, 287] {
        assert_eq!(at(96, y), colour, "left edge at row {y}");
        assert_eq!(at(97, y), colour);
        assert_eq!(at(286, y), colour, "right edge at row {y}");
        assert_eq!(at(287, y), colour);
        assert_eq!(at(95, y), gray, "outside, left, row {y}");
        assert_eq!(at(288, y), gray, "outside, right, row {y}");
    }
    for y in [162, 200, 285] {
        assert_eq!(at(98, y), gray, "inside, left, row {y}");
        assert_eq!(at(285, y), gray, "inside, right, row {y}");
    }
    for x in [98, 180, 285] {
        assert_eq!(at(x, 160), colour, "top edge at column {x}");
        assert_eq!(at(x, 161), colour);
        assert_eq!(at(x, 162), gray);
        assert_eq!(at(x, 286), colour, "bottom edge at column {x}");
        assert_eq!(at(x, 287), colour);
        assert_eq!(at(x, 285), gray);
        assert_eq!(at(x, 288), gray);
    }
    assert_eq!(at(200, 210), gray, "the box's inside is the image");
    // The label "boot 0.87" sits on a strip of the class colour just above the box, with
    // text of another colour on it.
    let strip: Vec<[u8; 3]> = (160 - BOX_LABEL_HEIGHT..160)
        .flat_map(|y| (96..146).map(move |x| (x, y)))
        .map(|(x, y)| at(x, y))
        .collect();
    let filled = strip.iter().filter(|&&p| p == colour).count();
    let ink = strip.iter().filter(|&&p| p != colour && p != gray).count();
    assert!(filled > strip.len() / 2, "{filled} of {}", strip.len());
    assert!(ink > 20, "{ink} text pixels");
    assert_eq!(
        at(100, 160 - BOX_LABEL_HEIGHT - 1),
        gray,
        "nothing above the label"
    );
    // Everywhere else the picture is the image, enlarged.
    let (plain, _, _) = render_image(&image, Normalize::Clamp01).unwrap();
    assert_eq!(plain[..3], gray);
    let changed = rgb.chunks(3).filter(|p| *p != gray).count();
    let outline = 2 * 2 * (192 + 128) - 16;
    assert!(
        changed >= outline && changed < outline + 16 * 120,
        "{changed}"
    );
}

#[test]
fn boxes_off_the_image_or_not_finite_are_not_drawn() {
    let image = flat_gray(48, 48);
    let (plain, _, _) = render_detections(&image, Normalize::Clamp01, &[], &[]).unwrap();
    let odd = [
        [1.2, 0.2, 1.5, 0.4],
        [f32::NAN, 0.2, 0.5, 0.4],
        [0.1, f32::INFINITY, 0.5, 0.4],
    ];
    let dets: Vec<Detection> = odd
        .iter()
        .map(|&bbox| Detection {
            class: 0,
            score: f32::NAN,
            bbox,
        })
        .collect();
    let (rgb, _, _) = render_detections(&image, Normalize::Clamp01, &dets, &[]).unwrap();
    assert!(rgb == plain);
    // A box over the top edge is clipped; its label goes inside it.
    let top = Detection {
        class: 1,
        score: 0.5,
        bbox: [-0.2, -0.1, 0.5, 0.5],
    };
    let (rgb, w, _) = render_detections(&image, Normalize::Clamp01, &[top], &[]).unwrap();
    let at = |x: usize, y: usize| -> [u8; 3] {
        rgb[(y * w as usize + x) * 3..][..3].try_into().unwrap()
    };
    assert_eq!(w, 384);
    assert_eq!(
        at(100, 191),
        class_colour(1),
        "the bottom edge, row 192 − 1"
    );
    assert_eq!(at(191, 100), class_colour(1), "the right edge");
    assert_eq!(at(0, 100), class_colour(1), "the left edge, clipped at 0");
    assert_eq!(at(100, 100), [128; 3]);
}

#[test]
fn drawn_detections_are_written_as_png() {
    let dir = std::env::temp_dir().join(format!("netc-detect-post-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let image = flat_gray(32, 32);
    let det = Detection {
        class: 0,
        score: 0.5,
        bbox: [0.1, 0.1, 0.6, 0.6],
    };
    let path = dir.join("boxes.png");
    write_detections(
        &path,
        &image,
        Normalize::Clamp01,
        std::slice::from_ref(&det),
        &[],
    )
    .unwrap();
    let back = image::open(&path).unwrap().to_rgb8();
    let (rgb, w, h) =
        render_detections(&image, Normalize::Clamp01, std::slice::from_ref(&det), &[]).unwrap();
    assert_eq!(back.dimensions(), (w, h));
    assert!(back.into_raw() == rgb);
    let e = write_detections(
        &dir.join("boxes.jpg"),
        &image,
        Normalize::Clamp01,
        &[det],
        &[],
    )
    .unwrap_err();
    assert!(e.to_string().contains(".png"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- no input panics ----

fn odd_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => -2.0f32..2.0,
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(0.0f32),
        1 => Just(f32::MAX),
    ]
}

fn odd_detections() -> impl Strategy<Value = Vec<Detection>> {
    prop::collection::vec(
        (0usize..4, odd_f32(), prop::array::uniform4(odd_f32())),
        0..12,
    )
    .prop_map(|v| {
        v.into_iter()
            .map(|(class, score, bbox)| Detection { class, score, bbox })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn post_processing_never_panics(
        dets in odd_detections(),
        truth in prop::collection::vec((0usize..5, prop::array::uniform4(odd_f32())), 0..8),
        head in prop::collection::vec(odd_f32(), 2 * 7 * 2 * 3),
        sizes in prop::collection::vec(prop::array::uniform2(odd_f32()), 0..12),
        k in 0usize..6,
        thr in odd_f32(),
    ) {
        let b: Vec<Xyxy> = dets.iter().map(|d| d.bbox).collect();
        let s: Vec<f32> = dets.iter().map(|d| d.score).collect();
        let c: Vec<usize> = dets.iter().map(|d| d.class).collect();
        let kept = nms(&b, &s, thr).unwrap();
        prop_assert!(kept.iter().all(|&i| i < b.len()));
        let kept = batched_nms(&b, &s, &c, thr).unwrap();
        prop_assert!(kept.len() <= b.len());
        prop_assert_eq!(box_iou(&b, &b).len(), b.len() * b.len());
        let objects: Vec<Object> = truth
            .iter()
            .map(|&(class, [cx, cy, w, h])| Object { class, cx, cy, w, h, landmarks: vec![] })
            .collect();
        let m = mean_average_precision(std::slice::from_ref(&dets), &[objects], 5, thr).unwrap();
        for ap in m.per_class.iter().flatten() {
            prop_assert!((0.0..=1.0).contains(ap), "{}", ap);
        }
        let grid = GridHead {
            values: &head,
            shape: [2 * 7, 2, 3],
            anchors: &[[8.0, 16.0], [30.0, 20.0]],
            num_classes: 2,
            input_size: [48, 32],
        };
        let options = DecodeOptions { score_threshold: thr, ..DecodeOptions::default() };
        let found = decode(&grid, &options).unwrap();
        prop_assert!(found.iter().all(|d| d.score > thr && d.class < 2));
        let _ = kmeans_anchors(&sizes, k, 3);
        let image = flat_gray(12, 10);
        let (rgb, w, h) = render_detections(&image, Normalize::Clamp01, &dets, &[]).unwrap();
        prop_assert_eq!(rgb.len(), w as usize * h as usize * 3);
    }
}
