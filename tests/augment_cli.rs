//! Augmentation lists as users write them: the spec's `augment: [...]`, `netc train
//! --augment`, the train header, and `netc augment`'s grid of samples.

use std::path::{Path, PathBuf};
use std::process::Output;

use netc::train_config::Augment;
use netc::{Options, load_str};

mod cli_support;
use cli_support::{netc, s, scratch, stderr};

/// A spec of input `shape` whose train section has `augment: LIST`.
fn spec(shape: &str, list: &str) -> String {
    format!(
        "model m {{\n  input x: {shape}\n  flatten\n  dense(2)\n  train {{\n    augment: {list}\n  }}\n}}\n"
    )
}

fn parse(shape: &str, list: &str) -> Result<Vec<Augment>, String> {
    match load_str("spec.net", &spec(shape, list), &Options::default()) {
        Ok(s) => Ok(s.graph.train.unwrap().augment),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn every_augmentation_parses_and_prints_back_the_same() {
    let list = "[mirror, vflip(p=0.25), random_crop(pad=4), random_crop(size=[20, 24], pad=2), \
                random_resized_crop(scale=[0.5, 1], ratio=[0.75, 1.25]), rotate(15), \
                affine(degrees=10, translate=[0.1, 0.2], scale=[0.9, 1.1], shear=5), \
                color_jitter(0.2, hue=0.05), color_shift(brightness=0.1, contrast=0.3), \
                pca_lighting(0.1)]";
    let augs = parse("[3, 24, 24]", list).unwrap();
    assert_eq!(augs.len(), 10);
    assert_eq!(augs[0], Augment::Mirror { p: 0.5 });
    assert_eq!(augs[1], Augment::VFlip { p: 0.25 });
    assert_eq!(
        augs[3],
        Augment::RandomCrop {
            pad: 2,
            size: Some([20, 24])
        }
    );
    assert_eq!(
        augs[6],
        Augment::Affine {
            degrees: 10.0,
            translate: [0.1, 0.2],
            scale: [0.9, 1.1],
            shear: [-5.0, 5.0, 0.0, 0.0]
        }
    );
    // Contrast and saturation default to the brightness, hue to 0.
    assert_eq!(
        augs[7],
        Augment::ColorShift {
            brightness: 0.2,
            contrast: 0.2,
            saturation: 0.2,
            hue: 0.05
        }
    );
    assert_eq!(augs[9], Augment::PcaLighting { std: 0.1 });
    // What the header and `summary` print is valid spec text for the same list.
    let shown: Vec<String> = augs.iter().map(|a| a.to_string()).collect();
    let again = parse("[3, 24, 24]", &format!("[{}]", shown.join(", "))).unwrap();
    assert_eq!(again, augs);
    // A crop of the input's own size is the default crop.
    assert_eq!(
        parse("[3, 24, 24]", "[random_crop(size=24, pad=1)]").unwrap(),
        vec![Augment::RandomCrop { pad: 1, size: None }]
    );
}

#[test]
fn bad_parameters_are_errors_at_their_argument() {
    // (input shape, list, message, where the caret starts in the list).
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "[3, 8, 8]",
            "[rotate(-5)]",
            "`degrees` must be a finite number ≥ 0, found -5",
            "-5",
        ),
        (
            "[3, 8, 8]",
            "[random_resized_crop(scale=[0.9, 0.5])]",
            "`scale` is [min, max], but its min 0.9 is larger than its max 0.5",
            "[0.9",
        ),
        (
            "[1, 8, 8]",
            "[mirror, pca_lighting(0.1)]",
            "`pca_lighting` shifts colors along ImageNet's RGB eigenvectors, so it needs 3 channels; the input has 1",
            "pca",
        ),
        (
            "[3, 8, 8]",
            "[random_crop(size=[12, 8], pad=1)]",
            "a 12×8 crop does not fit the 8×8 input padded by 1 (10×10)",
            "[12",
        ),
        (
            "[3, 8, 8]",
            "[mirror(p=1.5)]",
            "`p` is a probability in [0, 1], found 1.5",
            "1.5",
        ),
        (
            "[3, 8, 8]",
            "[color_jitter(hue=0.7)]",
            "`hue` is a shift in turns, at most 0.5",
            "0.7",
        ),
        (
            "[3, 8, 8]",
            "[affine(shear=[10, -10])]",
            "`shear` ranges are [min, max]",
            "[10",
        ),
        (
            "[3, 8, 8]",
            "[affine(translate=2)]",
            "`translate` is the largest shift",
            "2)",
        ),
        (
            "[3, 8, 8]",
            "[affine(degrees=200)]",
            "`degrees` is at most 180",
            "200",
        ),
        (
            "[3, 8, 8]",
            "[vflipp]",
            "unknown augmentation `vflipp`",
            "vflipp",
        ),
        ("[3, 8, 8]", "mirror", "`augment` is a list", "mirror"),
    ];
    for (shape, list, msg, at) in cases {
        let e = parse(shape, list).expect_err(list);
        assert!(e.contains(msg), "{list}: {e}");
        // The list starts at column 14 of line 6 (`    augment: `).
        let col = 14 + list.find(at).unwrap();
        assert!(e.contains(&format!("spec.net:6:{col}\n")), "{list}: {e}");
    }
    assert!(
        parse("[3, 8, 8]", "[vflipp]")
            .unwrap_err()
            .contains("did you mean `vflip`?")
    );
}

/// 160 training and 40 test images of 28×28 bytes (IDX files) in `dir`.
fn tiny_data(dir: &Path) -> PathBuf {
    let data = dir.join("tiny");
    std::fs::create_dir_all(&data).unwrap();
    for (split, n) in [("train", 160usize), ("t10k", 40)] {
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let px: Vec<u8> = (0..n * 784)
            .map(|i| ((i * 2654435761) % 251) as u8)
            .collect();
        let enc = netc::data::idx::encode;
        std::fs::write(
            data.join(format!("{split}-images-idx3-ubyte")),
            enc(&[n as u32, 28, 28], &px),
        )
        .unwrap();
        std::fs::write(
            data.join(format!("{split}-labels-idx1-ubyte")),
            enc(&[n as u32], &labels),
        )
        .unwrap();
    }
    data
}

/// LeNet-5 with `augment: [mirror]` in its train section, in `dir`.
fn lenet_with_mirror(dir: &Path) -> PathBuf {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/lenet5.net"))
            .unwrap();
    let at = text
        .find("train {")
        .expect("lenet5.net has a train section")
        + "train {".len();
    let text = format!("{}\n    augment: [mirror]{}", &text[..at], &text[at..]);
    let p = dir.join("lenet5.net");
    std::fs::write(&p, text).unwrap();
    p
}

fn train(spec: &Path, data: &Path, out: &Path, more: &[&str]) -> Output {
    let base = [
        "train",
        s(spec),
        "--data",
        s(data),
        "--batch",
        "32",
        "--threads",
        "1",
        "--max-steps",
        "2",
        "--out",
        s(out),
    ];
    netc(&[&base[..], more].concat())
}

#[test]
fn the_flag_replaces_the_specs_list_and_the_header_shows_it() {
    let d = scratch("augment/flag");
    let data = tiny_data(&d);
    let spec = lenet_with_mirror(&d);
    let o = train(&spec, &data, &d.join("a"), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("\n  augment: mirror(p=0.5)\n"),
        "{}",
        stderr(&o)
    );
    let o = train(
        &spec,
        &data,
        &d.join("b"),
        &["--augment", "vflip(p=1), random_crop(pad=2)"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("\n  augment: vflip(p=1), random_crop(pad=2)\n"),
        "{}",
        stderr(&o)
    );
    let o = train(&spec, &data, &d.join("c"), &["--augment", "none"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("augment:"), "{}", stderr(&o));
    // The flag's list is what trains: flipping every image changes the weights.
    let w = |run: &str| std::fs::read(d.join(run).join("checkpoint.safetensors")).unwrap();
    let o = train(&spec, &data, &d.join("d"), &["--augment", "[vflip(p=1)]"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_ne!(w("c"), w("d"));
    let o = train(&spec, &data, &d.join("e"), &["--augment", "none"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(w("c"), w("e"));
}

#[test]
fn bad_flag_text_is_a_usage_error_naming_the_flag_and_column() {
    let d = scratch("augment/bad");
    let data = tiny_data(&d);
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/lenet5.net");
    for (text, msg, at) in [
        (
            "mirror, rotate(-3)",
            "`degrees` must be a finite number ≥ 0",
            "--augment:1:16",
        ),
        ("mirror, mirorr", "did you mean `mirror`?", "--augment:1:9"),
        ("mirror, random_crop(pad=", "", "--augment:1:"),
        (
            "mirror,, vflip",
            "an empty item in the list",
            "--augment:1:8",
        ),
    ] {
        let o = train(&spec, &data, &d.join("x"), &["--augment", text]);
        assert_eq!(o.status.code(), Some(2), "{text}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains("--augment <AUGMENT>"), "{text}: {e}");
        assert!(e.contains(msg) && e.contains(at), "{text}: {e}");
    }
    // Shape checks need the model: an error naming the flag, before anything is trained.
    let o = train(
        &spec,
        &data,
        &d.join("y"),
        &["--augment", "mirror, pca_lighting(0.1)"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("needs 3 channels; the input has 1"), "{e}");
    assert!(e.contains("--augment:1:9"), "{e}");
    assert!(!d.join("y").join("checkpoint.safetensors").exists());
}

fn lenet() -> netc::Spec {
    netc::load_file(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/lenet5.net"),
        &Options::default(),
    )
    .unwrap()
}

#[test]
fn augment_writes_the_grid_of_what_training_sees() {
    let d = scratch("augment/grid");
    let data = tiny_data(&d);
    let png = d.join("grid.png");
    let list = "mirror, random_crop(pad=3), rotate(20), color_shift(0.3)";
    let o = netc(&[
        "augment",
        "specs/lenet5.net",
        "--data",
        s(&data),
        "--augment",
        list,
        "--count",
        "3",
        "--variants",
        "2",
        "--seed",
        "7",
        "--output",
        s(&png),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let got = image::open(&png).unwrap().to_rgb8();
    // The same tiles, rendered here: the PNG is exactly that grid (size and pixels).
    let spec = lenet();
    let split = netc::data::open(s(&data), &spec.graph.inputs[0]).unwrap();
    let augs = netc::elab::augment_from_text(list, Some(&[1, 28, 28])).unwrap();
    let tiles = netc::cli_augment::grid_tiles(&split.train, &augs, 3, 2, 7);
    assert_eq!(tiles.len(), 9);
    let (rgb, w, h) =
        netc::picture::render_grid(&tiles, 3, netc::picture::Normalize::Clamp01).unwrap();
    assert_eq!((got.width(), got.height()), (w, h));
    assert_eq!(got.into_raw(), rgb);
    // Each variant is the loader's sample in that epoch (before normalization).
    let train = std::sync::Arc::new(split.train.clone());
    let mut opts = netc::data::LoaderOptions::train(1, 7, augs.clone());
    opts.shuffle = false;
    opts.prefetch = false;
    let loader = netc::data::Loader::new(train, netc::data::Normalize::none(1), opts).unwrap();
    for (row, sample) in [0usize, 53, 106].into_iter().enumerate() {
        assert_eq!(tiles[row * 3].label, format!("#{sample} ({})", sample % 10));
        for epoch in 0..2u64 {
            let order = loader.order(epoch);
            let b = loader.batch(epoch, &order, sample);
            assert_eq!(b.indices, vec![sample]);
            assert_eq!(tiles[row * 3 + 1 + epoch as usize].pixels, b.x);
        }
    }
    assert_ne!(tiles[1].pixels, tiles[0].pixels);
}

#[test]
fn augment_refuses_what_it_cannot_show() {
    let d = scratch("augment/refuse");
    let data = tiny_data(&d);
    let run = |more: &[&str]| {
        let base = ["augment", "specs/lenet5.net", "--data", s(&data)];
        netc(&[&base[..], more].concat())
    };
    // No list in the spec and none given.
    let png = d.join("a.png");
    let o = run(&["--output", s(&png)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no augmentations to show"),
        "{}",
        stderr(&o)
    );
    assert!(!png.exists());
    // Not a PNG name: nothing written.
    let npy = d.join("a.npy");
    let o = run(&["--augment", "mirror", "--output", s(&npy)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!npy.exists());
    // Bad counts and bad lists are usage errors.
    let o = run(&["--augment", "mirror", "--count", "0", "--output", s(&png)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = run(&["--augment", "mirror(p=-1)", "--output", s(&png)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--augment:1:10"), "{}", stderr(&o));
    // PCA lighting on a 1-channel model.
    let o = run(&["--augment", "pca_lighting", "--output", s(&png)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("needs 3 channels"), "{}", stderr(&o));
    assert!(!png.exists());
}
