//! netc's augmentation transforms against torchvision's functionals, on stored cases.
//!
//! `tests/data/augment/cases.json` is made by `tests/data/augment/make_cases.py` (torchvision
//! 0.29): byte images and, per case, a transform's explicit parameters and torchvision's
//! output. Each case runs the same transform of `netc::data::transform` (through
//! `data::augment::Step` where the loader goes that way) and must agree within 1/255 on
//! every pixel.

use std::collections::BTreeMap;

use netc::data::augment::{ColorOp, Step, resized_crop_window};
use netc::data::rng::Rng;
use netc::data::transform::{self, AffineParams};
use serde_json::Value;

fn nums(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

fn pair(v: &Value) -> (usize, usize) {
    let n = nums(v);
    (n[0] as usize, n[1] as usize)
}

/// netc's output for one case: (values, shape).
fn run(op: &str, p: &Value, img: &[f32], shape: [usize; 3]) -> Vec<f32> {
    let u = |k: &str| p[k].as_u64().expect("a whole number") as usize;
    let f = |k: &str| p[k].as_f64().expect("a number");
    let mut x = img.to_vec();
    match op {
        "hflip" => Step::HFlip.apply(&mut x, shape, true),
        "vflip" => Step::VFlip.apply(&mut x, shape, true),
        "pad_crop" => {
            x = transform::pad_crop(
                img,
                shape,
                u("pad"),
                (u("top"), u("left")),
                pair(&p["size"]),
            )
        }
        // The loader's random_crop(size): crop, then resize back to the input size.
        "pad_crop_resize" => Step::PadCrop {
            pad: u("pad"),
            top: u("top"),
            left: u("left"),
            size: pair(&p["size"]),
        }
        .apply(&mut x, shape, true),
        "resized_crop" => {
            x = transform::resized_crop(
                img,
                shape,
                (u("top"), u("left")),
                pair(&p["size"]),
                pair(&p["out"]),
                p["antialias"].as_bool().expect("a bool"),
            )
        }
        "rotate" => x = transform::rotate(img, shape, f("angle")),
        "affine" => {
            let t = nums(&p["translate"]);
            let s = nums(&p["shear"]);
            Step::Affine(AffineParams {
                angle: f("angle"),
                translate: [t[0], t[1]],
                scale: f("scale"),
                shear: [s[0], s[1]],
            })
            .apply(&mut x, shape, true)
        }
        "color" => {
            let ops = p["ops"]
                .as_array()
                .expect("ops")
                .iter()
                .map(|o| {
                    let v = o[1].as_f64().expect("a factor");
                    match o[0].as_str().expect("a name") {
                        "brightness" => ColorOp::Brightness(v),
                        "contrast" => ColorOp::Contrast(v),
                        "saturation" => ColorOp::Saturation(v),
                        "hue" => ColorOp::Hue(v),
                        other => panic!("unknown color op {other}"),
                    }
                })
                .collect();
            Step::Color(ops).apply(&mut x, shape, true)
        }
        "pca_lighting" => {
            let a = nums(&p["alpha"]);
            Step::Lighting([a[0], a[1], a[2]]).apply(&mut x, shape, true)
        }
        other => panic!("unknown op {other}"),
    }
    x
}

#[test]
fn transforms_match_torchvision_within_one_level() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/augment/cases.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut images: BTreeMap<String, (Vec<f32>, [usize; 3])> = BTreeMap::new();
    for (name, im) in doc["images"].as_object().unwrap() {
        let s = nums(&im["shape"]);
        let px: Vec<f32> = nums(&im["bytes"])
            .iter()
            .map(|&b| b as f32 / 255.0)
            .collect();
        images.insert(
            name.clone(),
            (px, [s[0] as usize, s[1] as usize, s[2] as usize]),
        );
    }
    let cases = doc["cases"].as_array().unwrap();
    let mut worst: BTreeMap<String, f32> = BTreeMap::new();
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let (img, shape) = &images[case["image"].as_str().unwrap()];
        let op = case["op"].as_str().unwrap();
        let got = run(op, &case["params"], img, *shape);
        let want: Vec<f32> = nums(&case["output"]).iter().map(|&v| v as f32).collect();
        let diff = if got.len() == want.len() {
            got.iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
        } else {
            f32::INFINITY
        };
        let key = match case["params"]["ops"].as_array() {
            Some(ops) if ops.len() == 1 => format!("{op}:{}", ops[0][0].as_str().unwrap_or("?")),
            Some(_) => format!("{op}:jitter"),
            None => op.to_string(),
        };
        let w = worst.entry(key).or_insert(0.0);
        *w = w.max(diff);
        if diff > 1.0 / 255.0 {
            failures.push(format!(
                "case {i} ({op} {} on {}): max |diff| {diff} ({} vs {} values)",
                case["params"],
                case["image"],
                got.len(),
                want.len()
            ));
        }
    }
    println!("{} cases against torchvision {}", cases.len(), doc["torch"]);
    for (op, d) in &worst {
        println!(
            "  {op:20} max |diff| {d:.2e} ({:.4} levels of 1/255)",
            d * 255.0
        );
    }
    assert!(cases.len() >= 50, "only {} cases", cases.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn resized_crop_fallback_windows_match_torchvision() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/augment/cases.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let windows = doc["windows"].as_array().unwrap();
    assert!(windows.len() >= 5);
    for c in windows {
        let (h, w) = pair(&c["size"]);
        let (s, r) = (nums(&c["scale"]), nums(&c["ratio"]));
        let want: Vec<usize> = nums(&c["window"]).iter().map(|&v| v as usize).collect();
        for seed in 0..5 {
            let (top, left, ch, cw) =
                resized_crop_window(&mut Rng::new(seed), h, w, [s[0], s[1]], [r[0], r[1]]);
            assert_eq!(vec![top, left, ch, cw], want, "{c}");
        }
    }
}
