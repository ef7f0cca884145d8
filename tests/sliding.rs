//! Sliding windows as convolutions (`netc::sliding`, `netc run --sliding`): the convolutional
//! pass's score map equals the classifier run on every window at the reported stride, on odd
//! image sizes, for LeNet-5 and classifiers with several dense layers, a non-square window, a
//! global pool and batchnorm after a dense layer; the CLI writes the map as .npy and a heat map
//! per class; specs that cannot slide are refused naming the layer.
//!
//! The per-window reference runs the original classifier (the oracle interpreter, batch = all
//! windows); the pass runs compiled (the JIT), as `netc run` runs it. LeNet-5's `conv1` pads by
//! 2, so over the image a window reads the 2 pixels around it where the classifier read zeros:
//! its reference is the classifier with that padding taken from the image (the 32×32 context,
//! `conv1` unpadded); the unpadded classifiers are compared with the bare crops.

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn, s};
use netc::io::weights::Weights;
use netc::layer_graph::{LayerGraph, Op};
use netc::model::{CompileOptions, compile, params_f32};
use netc::sliding::{Sliding, convert};
use netc::{Options, Spec, load_file, load_str};

mod cli_support;
use cli_support::netc;

/// Deterministic pseudo-random values in [-1, 1).
fn random(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), data).unwrap()
}

/// Two dense layers after the flatten, batchnorm after a dense layer, dropout, a final
/// softmax; a non-square 20×18 window, a stride-2 convolution, no padding.
const TWO_DENSE: &str = "
model two_dense(classes: int = 5) {
  input image: [2, 20, 18] with mean=[0.5, 0.2], std=[0.3, 0.4]
  c1: conv(4, 3)
  relu
  maxpool(2)
  c2: conv(6, 3, stride=2)
  tanh
  flatten
  fc1: dense(12)
  bn: batchnorm
  relu
  dropout(0.3)
  fc2: dense(7)
  leaky_relu(0.1)
  fc3: dense(classes)
  softmax
}
";

/// A global average pool before the dense layers (the pool becomes a window average).
const GLOBAL_POOL: &str = "
model global_pool {
  input image: [3, 15, 15]
  c1: conv(8, 3)
  relu
  c2: conv(8, 3, stride=2)
  relu
  pool: global_avgpool
  flatten
  fc1: dense(6)
  relu
  fc2: dense(3)
}
";

/// Branches: batchnorm on the map, a concat, a residual add, an adaptive pooling that halves
/// the map (an average pooling of 2×2 at stride 2 over the image).
const BRANCHES: &str = "
model branches(classes: int = 4) {
  input image: [1, 16, 16]
  c1: conv(4, 3)
  bn1: batchnorm
  relu
  mix: concat {
    a: conv(3, 1)
    b: seq { conv(2, 1); sigmoid }
  }
  res: residual { conv(5, 1); relu }
  pool: adaptive_avgpool(7)
  flatten
  fc1: dense(8)
  relu
  fc2: dense(classes)
}
";

fn spec_str(text: &str) -> Spec {
    load_str("test.net", text, &Options::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// Weights with batchnorm statistics away from 0 and 1, so that folding them matters.
fn weights(lg: &LayerGraph, seed: u64) -> Vec<ArrayD<f32>> {
    let mut p = params_f32(&Weights::init(lg, seed));
    for (k, (v, info)) in p.iter_mut().zip(&lg.params).enumerate() {
        let r = random(&info.shape, seed + k as u64);
        match info.path.rsplit('.').next() {
            Some("running_var") => *v = r.mapv(|x| 1.5 + x),
            Some("running_mean" | "bias") => *v = r.mapv(|x| 0.3 * x),
            _ => {}
        }
    }
    p
}

/// The sliding pass, compiled, on `image` `[1, C, H, W]`.
fn pass(sl: &Sliding, params: &[ArrayD<f32>], image: &ArrayD<f32>) -> ArrayD<f32> {
    let spec = Spec {
        sources: Default::default(),
        graph: sl.graph.clone(),
    };
    let opts = CompileOptions {
        batch: 1,
        threads: 2,
        memory_limit: None,
    };
    let params = sl.params(params.to_vec()).unwrap();
    let mut exe = compile(&spec, &params, opts).unwrap_or_else(|e| panic!("{e}"));
    let name = sl.graph.inputs[0].name.as_str();
    let outs = exe.run(&[(name, image)]).unwrap();
    outs.into_iter().next().unwrap().1
}

/// `lg` on a batch by the oracle interpreter: its first output.
fn oracle(lg: &LayerGraph, params: &[ArrayD<f32>], x: ArrayD<f32>) -> ArrayD<f32> {
    let prims = netc::lower::lower(lg, x.shape()[0]);
    let feed = [(lg.inputs[0].name.as_str(), x)];
    let outs = netc::reference::run::<f32>(&prims, params, &feed).unwrap_or_else(|e| panic!("{e}"));
    outs.into_iter().next().unwrap()
}

/// Every window's crop of `image` (`[1, C, H, W]`, extended with zeros where a window reaches
/// past it), `pad` pixels of context around each, at the map's stride: `[P, C, wh, ww]` in
/// row-major position order.
fn windows(image: &ArrayD<f32>, sl: &Sliding, pad: usize) -> ArrayD<f32> {
    let m = &sl.maps[0];
    let (c, h, w) = (image.shape()[1], image.shape()[2], image.shape()[3]);
    let [wh, ww] = [sl.window[0] + 2 * pad, sl.window[1] + 2 * pad];
    let [rows, cols] = m.positions;
    let big_h = (rows - 1) * m.stride[0] + wh;
    let big_w = (cols - 1) * m.stride[1] + ww;
    let mut padded = ArrayD::<f32>::zeros(IxDyn(&[c, big_h.max(h + pad), big_w.max(w + pad)]));
    padded
        .slice_mut(s![.., pad..pad + h, pad..pad + w])
        .assign(&image.slice(s![0, .., .., ..]));
    let mut out = ArrayD::<f32>::zeros(IxDyn(&[rows * cols, c, wh, ww]));
    for i in 0..rows {
        for j in 0..cols {
            let [y, x] = m.corner(i, j);
            out.slice_mut(s![i * cols + j, .., .., ..])
                .assign(&padded.slice(s![.., y..y + wh, x..x + ww]));
        }
    }
    out
}

/// The pass's map `[1, K, rows, cols]` against the per-window scores `[rows·cols, K]`.
fn assert_map_matches(map: &ArrayD<f32>, per_window: &ArrayD<f32>, sl: &Sliding, what: &str) {
    let m = &sl.maps[0];
    let [rows, cols] = m.positions;
    assert_eq!(
        map.shape(),
        &[1, m.classes, rows, cols],
        "{what}: map shape"
    );
    let per = per_window
        .to_shape((rows * cols, m.classes))
        .unwrap()
        .to_owned();
    let mut worst = 0f32;
    for i in 0..rows {
        for j in 0..cols {
            for k in 0..m.classes {
                let a = map[[0, k, i, j]];
                let b = per[[i * cols + j, k]];
                let err = (a - b).abs() / b.abs().max(1.0);
                worst = worst.max(err);
                assert!(
                    err <= 1e-4,
                    "{what}: window ({i}, {j}) class {k}: pass {a} vs classifier {b}"
                );
            }
        }
    }
    eprintln!("{what}: {rows}×{cols} windows, worst relative difference {worst:e}");
}

#[test]
fn lenet5_map_equals_the_classifier_on_each_window_in_its_context() {
    let spec = load_file("specs/lenet5.net", &Options::default()).unwrap();
    let lg = &spec.graph;
    for (size, seed) in [([37, 45], 1), ([28, 28], 2), ([33, 60], 3)] {
        let sl = convert(lg, size).unwrap();
        let m = &sl.maps[0];
        assert_eq!(sl.window, [28, 28]);
        assert_eq!(m.stride, [4, 4], "two 2×2 poolings");
        assert_eq!(m.classes, 10);
        assert_eq!(
            m.positions,
            [(size[0] - 28) / 4 + 1, (size[1] - 28) / 4 + 1]
        );
        // conv1 pads by 2: the scores read a 32×32 context, 2 pixels around the window.
        assert_eq!((m.field.start, m.field.end), ([-2, -2], [30, 30]));
        assert!(!m.exact(sl.window));
        assert_eq!(sl.padded, ["conv1"]);
        let params = weights(lg, seed);
        let image = random(&[1, 1, size[0], size[1]], seed);
        let map = pass(&sl, &params, &image);
        // The classifier with its padding taken from the image: conv1 unpadded on the 32×32
        // window in context (the same weights; every later shape as at 28×28).
        let mut context = lg.clone();
        context.inputs[0].shape = vec![1, 32, 32];
        context.nodes[0].shape = vec![1, 32, 32];
        let conv1 = context
            .nodes
            .iter_mut()
            .find(|n| n.path == "conv1")
            .unwrap();
        let Op::Conv2d { padding, .. } = &mut conv1.op else {
            panic!("conv1 is a convolution")
        };
        *padding = [0; 4];
        let per_window = oracle(&context, &params, windows(&image, &sl, 2));
        assert_map_matches(&map, &per_window, &sl, &format!("lenet5 {size:?}"));
    }
}

#[test]
fn unpadded_classifiers_map_equals_the_classifier_on_each_crop() {
    for (text, size, stride, exact_field) in [
        (TWO_DENSE, [37, 45], [4, 4], ([0, 0], [20, 16])),
        (GLOBAL_POOL, [37, 29], [2, 2], ([0, 0], [15, 15])),
        (BRANCHES, [37, 29], [2, 2], ([0, 0], [16, 16])),
    ] {
        let spec = spec_str(text);
        let lg = &spec.graph;
        let sl = convert(lg, size).unwrap();
        let m = &sl.maps[0];
        assert_eq!(m.stride, stride, "{}", lg.name);
        assert_eq!((m.field.start, m.field.end), exact_field, "{}", lg.name);
        assert!(m.exact(sl.window), "{}", lg.name);
        assert!(sl.padded.is_empty());
        let params = weights(lg, 7);
        let image = random(&[1, lg.inputs[0].shape[0], size[0], size[1]], 11);
        let map = pass(&sl, &params, &image);
        let per_window = oracle(lg, &params, windows(&image, &sl, 0));
        assert_map_matches(&map, &per_window, &sl, &lg.name);
    }
}

#[test]
fn the_converted_layers_are_reported() {
    let spec = spec_str(TWO_DENSE);
    let sl = convert(&spec.graph, [37, 45]).unwrap();
    let text = sl.describe().join("\n");
    assert!(
        text.contains("windows of 20×18 every 4×4 pixels, 5×8 positions"),
        "{text}"
    );
    assert!(text.contains("layer `fc1` (dense)"), "{text}");
    assert!(text.contains("[12, 72] as [12, 6, 4, 3]"), "{text}");
    let fc2 = sl.graph.nodes.iter().find(|n| n.path == "fc2").unwrap();
    assert!(matches!(fc2.op, Op::Conv2d { kernel: [1, 1], .. }));
    let pool = spec_str(GLOBAL_POOL);
    let sl = convert(&pool.graph, [37, 29]).unwrap();
    let text = sl.describe().join("\n");
    assert!(
        text.contains("averages each 6×6 window at stride 1"),
        "{text}"
    );
    // A ceil-mode pooling whose last window reaches past the crop reads past it too.
    let ceil = "model m { input x: [1, 13, 13]\n c: conv(2, 3)\n p: maxpool(2, ceil=true)\n \
                flatten\n fc: dense(3) }";
    let ceil = convert(&spec_str(ceil).graph, [30, 30]).unwrap();
    assert_eq!(ceil.padded, ["p"]);
    assert_eq!(
        ceil.maps[0].field.end,
        [14, 14],
        "11 columns of conv, 6 pooled windows of 2"
    );
    assert!(!ceil.maps[0].exact(ceil.window));
    // The weights keep their paths; only their shapes change.
    let fc1 = sl
        .graph
        .params
        .iter()
        .find(|p| p.path == "fc1.weight")
        .unwrap();
    assert_eq!(fc1.shape, [6, 8, 1, 1]);
}

fn refusal(text: &str, size: [usize; 2]) -> String {
    convert(&spec_str(text).graph, size).expect_err("refused")
}

#[test]
fn what_cannot_slide_is_refused_naming_the_layer() {
    let flat_bn = "model m { input x: [1, 12, 12]\n c: conv(2, 3)\n flatten\n bn: batchnorm\n \
                   fc: dense(3) }";
    let e = refusal(flat_bn, [20, 20]);
    assert!(e.contains("layer `bn` (batchnorm) cannot slide"), "{e}");
    assert!(
        e.contains("flattened 2×10×10 map as 200 separate features"),
        "{e}"
    );
    let flat_softmax = "model m { input x: [1, 12, 12]\n c: conv(2, 3)\n flatten\n sm: softmax }";
    let e = refusal(flat_softmax, [20, 20]);
    assert!(e.contains("layer `sm` (softmax) cannot slide"), "{e}");
    let flat_out = "model m { input x: [1, 12, 12]\n c: conv(2, 3)\n flatten }";
    let e = refusal(flat_out, [20, 20]);
    assert!(
        e.contains("output") && e.contains("flattened feature map [200]"),
        "{e}"
    );
    let map_out = "model m { input x: [1, 12, 12]\n c: conv(2, 3) }";
    let e = refusal(map_out, [20, 20]);
    assert!(e.contains("--native-size"), "{e}");
    let vector = "model m { input x: [10]\n fc: dense(3) }";
    let e = refusal(vector, [20, 20]);
    assert!(e.contains("input `x` is [10], not an image"), "{e}");
    let e = convert(
        &load_file("specs/lenet5.net", &Options::default())
            .unwrap()
            .graph,
        [20, 40],
    )
    .unwrap_err();
    assert!(
        e.contains("smaller than the classifier's 28×28 window"),
        "{e}"
    );
    // AlexNet at 67×67: its adaptive pooling takes a 1×1 map to 6×6 (uneven windows).
    let alex = load_file(
        "specs/alexnet.net",
        &Options::with_sets(&["size=67", "classes=5"]).unwrap(),
    )
    .unwrap();
    let e = convert(&alex.graph, [99, 99]).unwrap_err();
    assert!(
        e.contains("layer `avgpool` (adaptive_avgpool2d) cannot slide"),
        "{e}"
    );
    let triplet = load_file(
        "specs/triplet.net",
        &Options::with_sets(&["size=16", "embedding=8"]).unwrap(),
    )
    .unwrap();
    let e = convert(&triplet.graph, [40, 40]).unwrap_err();
    assert!(e.contains("has 3 inputs"), "{e}");
}

#[test]
fn alexnet_at_224_passes_its_adaptive_pool_through() {
    let alex = load_file(
        "specs/alexnet.net",
        &Options::with_sets(&["classes=7"]).unwrap(),
    )
    .unwrap();
    let sl = convert(&alex.graph, [287, 255]).unwrap();
    let m = &sl.maps[0];
    assert_eq!(m.stride, [32, 32]);
    assert_eq!(m.positions, [3, 2]);
    let pool = sl.graph.nodes.iter().find(|n| n.path == "avgpool").unwrap();
    assert_eq!(pool.op, Op::Identity);
    let fc = sl
        .graph
        .params
        .iter()
        .find(|p| p.path == "classifier.1.weight")
        .unwrap();
    assert_eq!(fc.shape, [4096, 256, 6, 6]);
}

#[test]
fn every_shipped_spec_converts_or_is_refused_with_a_reason() {
    // (spec, --set, image size, the refusal's reason if refused)
    type Case<'a> = (&'a str, &'a [&'a str], [usize; 2], Option<&'a str>);
    let cases: &[Case] = &[
        ("lenet5", &[], [61, 29], None),
        ("vgg_small", &[], [47, 40], None),
        ("mini_resnet", &[], [45, 33], None),
        ("mini_inception", &[], [45, 33], None),
        ("resnet18", &["size=32", "classes=7"], [75, 64], None),
        ("googlenet", &["size=64", "classes=9"], [99, 64], None),
        (
            "vgg16",
            &["size=32", "classes=10"],
            [64, 96],
            Some("1×1 map to 7×7"),
        ),
        ("alexnet", &["classes=5"], [250, 224], None),
        ("edge_detect", &["size=13"], [20, 20], Some("--native-size")),
        ("siamese", &["size=16"], [20, 20], Some("inputs")),
    ];
    for &(name, sets, size, refused) in cases {
        let spec = load_file(
            format!("specs/{name}.net"),
            &Options::with_sets(sets).unwrap(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        match (convert(&spec.graph, size), refused) {
            (Ok(sl), None) => {
                // The converted graph lowers (its shapes are consistent) and its weights
                // take the classifier's values.
                netc::lower::lower(&sl.graph, 1);
                if spec.graph.num_parameters() < 5_000_000 {
                    let params = params_f32(&Weights::init(&spec.graph, 0));
                    sl.params(params).unwrap_or_else(|e| panic!("{name}: {e}"));
                }
                let m = &sl.maps[0];
                assert!(m.positions[0] >= 1 && m.positions[1] >= 1, "{name}");
                // The layers the conversion keeps have the shapes elaboration gives them at
                // the image's size (up to the first converted layer on their way).
                let mut opts = Options::with_sets(sets).unwrap();
                opts.input_sizes = vec![(spec.graph.inputs[0].name.clone(), size)];
                let at_size = load_file(format!("specs/{name}.net"), &opts)
                    .unwrap_or_else(|e| panic!("{name}: {e}"))
                    .graph;
                let mut changed = vec![false; sl.graph.nodes.len()];
                let mut compared = 0;
                for (n, node) in sl.graph.nodes.iter().enumerate() {
                    changed[n] = node.op != spec.graph.nodes[n].op
                        || node.inputs.iter().any(|&i| changed[i]);
                    if !changed[n] && node.shape.len() == 3 {
                        assert_eq!(node.shape, at_size.nodes[n].shape, "{name}: {}", node.path);
                        compared += 1;
                    }
                }
                assert!(compared > 3, "{name}: {compared} layers compared");
            }
            (Err(e), Some(why)) => assert!(e.contains(why), "{name}: {e}"),
            (Ok(_), Some(_)) => panic!("{name}: converted, expected a refusal"),
            (Err(e), None) => panic!("{name}: {e}"),
        }
    }
}

// ---- the CLI ----

fn dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("netc-sliding-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn run_sliding_writes_the_score_map_and_a_heat_map_per_class() {
    let d = dir("run");
    let spec = load_file("specs/lenet5.net", &Options::default()).unwrap();
    let lg = &spec.graph;
    let params = weights(lg, 5);
    let mut w = Weights::init(lg, 0);
    for (v, x) in w.values.iter_mut().zip(&params) {
        if let netc::io::weights::Value::F32(a) = v {
            *a = x.clone();
        }
    }
    let wpath = d.join("lenet5.safetensors");
    w.save(&wpath, lg).unwrap();
    let image = random(&[1, 37, 45], 9);
    let xpath = d.join("big.npy");
    netc::io::npy::write_f32(&xpath, &image).unwrap();
    let (npy, png) = (d.join("map.npy"), d.join("map.png"));
    let o = netc(&[
        "run",
        "specs/lenet5.net",
        "--weights",
        p(&wpath),
        "--input",
        p(&xpath),
        "--sliding",
        "--output",
        p(&npy),
        "--output-image",
        p(&png),
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        out.contains("windows of 28×28 every 4×4 pixels, 3×5 positions"),
        "{out}"
    );
    assert!(out.contains("top class per window"), "{out}");
    // The file holds the pass's map (the same as the library computes).
    let map = netc::io::npy::read_f32(&npy).unwrap();
    let sl = convert(lg, [37, 45]).unwrap();
    let want = pass(&sl, &params, &image.clone().insert_axis(ndarray::Axis(0)));
    assert_eq!(map.shape(), want.shape());
    let diff = (&map - &want).mapv(f32::abs).fold(0f32, |a, &b| a.max(b));
    assert!(diff < 1e-5, "{diff}");
    // The heat map: ten labelled tiles, not gray.
    let img = image::open(&png).unwrap().to_rgb8();
    assert!(
        img.width() > 10 * 15 && img.height() > 15,
        "{:?}",
        img.dimensions()
    );
    assert!(
        img.pixels().any(|px| px[0] > px[2].saturating_add(60)),
        "heat colours (red above blue somewhere)"
    );
    assert!(out.contains(&format!("wrote {}", p(&png))), "{out}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn run_sliding_refuses_what_cannot_slide() {
    let d = dir("refuse");
    let x = d.join("x.npy");
    netc::io::npy::write_f32(&x, &random(&[1, 20, 20], 1)).unwrap();
    // The image is smaller than LeNet-5's window.
    let o = netc(&["run", "specs/lenet5.net", "--input", p(&x), "--sliding"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("smaller than the classifier's 28×28 window"),
        "{err}"
    );
    // --sliding with --layer is a usage error.
    let o = netc(&[
        "run",
        "specs/lenet5.net",
        "--input",
        p(&x),
        "--sliding",
        "--layer",
        "conv1",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn heat_maps_colour_probabilities_from_black_to_pale_yellow() {
    use netc::picture::{Normalize, Tile, heat, render_image};
    assert_eq!(heat(0.0), [0, 0, 4]);
    assert_eq!(heat(0.5), [188, 55, 84]);
    assert_eq!(heat(1.0), [252, 255, 164]);
    assert_eq!(heat(-3.0), heat(0.0), "clamped");
    assert_eq!(heat(7.0), heat(1.0), "clamped");
    // Between stops, linear: a quarter of the way from 0.5 to 0.75.
    assert_eq!(heat(0.5625), [203, 77, 65]);
    let tile = Tile {
        pixels: vec![0.0, 0.5, 1.0, f32::NAN],
        channels: 1,
        height: 1,
        width: 4,
        label: String::new(),
    };
    let (rgb, w, h) = render_image(&tile, Normalize::Heat).unwrap();
    assert_eq!((w, h), (4, 1));
    assert_eq!(rgb, [0, 0, 4, 188, 55, 84, 252, 255, 164, 255, 0, 255]);
    let rgb_tile = Tile {
        pixels: vec![0.5; 3],
        channels: 3,
        height: 1,
        width: 1,
        label: String::new(),
    };
    let e = render_image(&rgb_tile, Normalize::Heat).unwrap_err();
    assert!(e.contains("a heat map colours one channel"), "{e}");
}

#[test]
fn run_sliding_size_resizes_the_image_first() {
    let photo = "tests/data/photos/flower.jpg";
    let o = netc(&[
        "run",
        "specs/lenet5.net",
        "--input",
        photo,
        "--sliding",
        "--size",
        "40x44",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("over 40×44: windows of 28×28 every 4×4 pixels, 4×5 positions"),
        "{out}"
    );
    assert_eq!(
        out.matches("  y ").count(),
        4,
        "a line per row of windows: {out}"
    );
    for bad in ["0", "12x", "axb", "70000"] {
        let o = netc(&[
            "run",
            "specs/lenet5.net",
            "--input",
            photo,
            "--sliding",
            "--size",
            bad,
        ]);
        assert_eq!(o.status.code(), Some(2), "--size {bad}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("expected a size as HxW or N"), "{err}");
    }
    // --size needs --sliding.
    let o = netc(&["run", "specs/lenet5.net", "--input", photo, "--size", "40"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn bench_sliding_reports_the_pass_beside_the_window_loop() {
    let o = netc(&[
        "bench",
        "specs/lenet5.net",
        "--sliding",
        "--size",
        "45x37",
        "--iters",
        "2",
        "--warmup",
        "0",
        "--threads",
        "1",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["windows"], 15);
    assert_eq!(v["positions"], serde_json::json!([5, 3]));
    assert_eq!(v["stride"], serde_json::json!([4, 4]));
    for key in [
        "pass_ms",
        "window_loop_ms",
        "windows_batched_ms",
        "speedup_vs_loop",
    ] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {v}");
    }
    // --sliding needs --size.
    let o = netc(&["bench", "specs/lenet5.net", "--sliding"]);
    assert_eq!(o.status.code(), Some(2));
}
