//! `netc run`'s outputs end to end: `--output-image` grids, `--layer`, `--native-size` on a real
//! photograph (specs/edge_detect.net against a plain Rust Sobel), `--output` as .npy/.npz and
//! its usage errors, and which outputs get a top-5 (classifiers only, no second softmax, a
//! summary for large batches).
//!
//! The photograph is `tests/data/photos/flower.jpg` (640×427, CC BY 2.0, see the README there).

use std::io::Read as _;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};

mod cli_support;
use cli_support::{netc, s, stderr, stdout};

fn dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("netc-run-outputs-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn decode(path: &Path) -> image::RgbImage {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    image::load_from_memory(&bytes).unwrap().to_rgb8()
}

/// The members of an .npz, by key.
fn read_npz(path: &Path) -> Vec<(String, ArrayD<f32>)> {
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for i in 0..z.len() {
        let mut f = z.by_index(i).unwrap();
        let name = f.name().unwrap().trim_end_matches(".npy").to_string();
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        let tmp = std::env::temp_dir().join(format!("netc-npz-{}-{i}.npy", std::process::id()));
        std::fs::write(&tmp, &bytes).unwrap();
        out.push((name, netc::io::npy::read_f32(&tmp).unwrap()));
        std::fs::remove_file(&tmp).unwrap();
    }
    out
}

const PHOTO: &str = "tests/data/photos/flower.jpg";

/// Sobel d/dx and d/dy of `x` `[H, W]` with zero padding, as PyTorch's conv2d computes them.
fn sobel(x: &[f32], h: usize, w: usize) -> [Vec<f32>; 2] {
    let kx = [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]];
    let ky = [[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]];
    let at = |i: isize, j: isize| -> f64 {
        if i < 0 || j < 0 || i >= h as isize || j >= w as isize {
            0.0
        } else {
            x[i as usize * w + j as usize] as f64
        }
    };
    let mut out = [vec![0f32; h * w], vec![0f32; h * w]];
    for i in 0..h {
        for j in 0..w {
            let (mut gx, mut gy) = (0.0, 0.0);
            for a in 0..3 {
                for b in 0..3 {
                    let v = at(i as isize + a as isize - 1, j as isize + b as isize - 1);
                    gx += kx[a][b] * v;
                    gy += ky[a][b] * v;
                }
            }
            out[0][i * w + j] = gx as f32;
            out[1][i * w + j] = gy as f32;
        }
    }
    out
}

#[test]
fn edge_detect_on_a_photograph_at_its_own_size() {
    let d = dir("edges");
    let (npy, png) = (d.join("edges.npy"), d.join("edges.png"));
    let o = netc(&[
        "run",
        "specs/edge_detect.net",
        "--native-size",
        "--input",
        PHOTO,
        "--output",
        s(&npy),
        "--output-image",
        s(&png),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (h, w) = (427, 640);
    let y = netc::io::npy::read_f32(&npy).unwrap();
    assert_eq!(y.shape(), [1, 2, h, w]);
    // The same grayscale the model saw (luma, [0, 1]), at its own size: nothing resized.
    let info = netc::layer_graph::InputInfo {
        name: "image".into(),
        node: 0,
        shape: vec![1, h, w],
        mean: vec![],
        std: vec![],
    };
    let gray = netc::io::image::load_image(PHOTO, &info).unwrap();
    let gray = gray.as_slice().unwrap();
    let want = sobel(gray, h, w);
    let got = y.as_slice().unwrap();
    for c in 0..2 {
        let err = got[c * h * w..(c + 1) * h * w]
            .iter()
            .zip(&want[c])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 1e-5, "channel {c}: max difference {err}");
    }
    // Strong responses where the photograph has edges (a Sobel response of 1 is a step of a
    // quarter of the whole range), none in the flat background (the top-left corner).
    let strong = want[0].iter().filter(|v| v.abs() > 1.0).count();
    assert!(strong > 1000, "{strong} strong responses");
    let corner = (5..40)
        .flat_map(|i| (5..40).map(move |j| i * w + j))
        .map(|k| want[0][k].abs().max(want[1][k].abs()))
        .fold(0.0, f32::max);
    assert!(corner < 0.2, "background response {corner}");

    // The picture: two labelled tiles at the photograph's size, each min-max normalized.
    let gap = netc::picture::GAP;
    let img = decode(&png);
    assert_eq!(
        img.dimensions(),
        (
            (3 * gap + 2 * w) as u32,
            (2 * gap + h + netc::picture::LABEL_HEIGHT) as u32
        )
    );
    for (c, v) in want.iter().enumerate() {
        let (lo, hi) = v
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        for &(i, j) in &[(0, 0), (200, 320), (100, 250), (426, 639), (300, 17)] {
            let expect = ((v[i * w + j] - lo) / (hi - lo) * 255.0).round() as i32;
            let x0 = gap + c * (w + gap);
            let p = img.get_pixel((x0 + j) as u32, (gap + i) as u32).0;
            assert!(
                (p[0] as i32 - expect).abs() <= 1 && p[0] == p[1] && p[1] == p[2],
                "channel {c} at ({i}, {j}): {p:?} vs {expect}"
            );
        }
    }

    // Without --native-size the photograph is resized and cropped to the spec's 28×28.
    let o = netc(&["run", "specs/edge_detect.net", "--input", PHOTO]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("shape [1, 2, 28, 28]"),
        "{}",
        stdout(&o)
    );
    // A model with dense layers has other weight shapes at another size: its weights do not
    // load, and the error names them.
    let o = netc(&[
        "run",
        "specs/lenet5.net",
        "--weights",
        "tests/data/reference/lenet5/weights.safetensors",
        "--native-size",
        "--input",
        PHOTO,
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("fc1.weight"), "{e}");
    // A layer that cannot take the size at all: the spec's error, and a note saying the size.
    let small = d.join("small.net");
    std::fs::write(
        &small,
        "model small {\n  input image: [1, 8, 8]\n  conv(4, 3)\n  avgpool(6)\n  flatten\n  dense(2)\n}\n",
    )
    .unwrap();
    let tiny = d.join("tiny.png");
    image::GrayImage::from_pixel(5, 7, image::Luma([9]))
        .save(&tiny)
        .unwrap();
    let o = netc(&["run", s(&small), "--native-size", "--input", s(&tiny)]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let e = stderr(&o);
    assert!(
        e.contains("error") && e.contains("input `image` is 7×5"),
        "{e}"
    );
}

#[test]
fn output_image_of_a_layer_and_layer_errors() {
    let d = dir("layer");
    let png = d.join("conv2.png");
    let npz = d.join("conv2.npz");
    let args = [
        "run",
        "specs/lenet5.net",
        "--weights",
        "tests/data/reference/lenet5/weights.safetensors",
        "--input",
        "tests/data/reference/lenet5/input.npy",
    ];
    let o = netc(&[&args[..], &["--layer", "conv2", "--output-image", s(&png)]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stdout(&o).contains("top-5"), "{}", stdout(&o));
    // 4 samples × 16 channels of 10×10, enlarged 4× (to 40), one row per sample.
    let gap = netc::picture::GAP;
    let img = decode(&png);
    let cell_h = 40 + netc::picture::LABEL_HEIGHT;
    assert_eq!(img.height() as usize, gap + 4 * (cell_h + gap));
    assert!(img.width() as usize >= gap + 16 * (40 + gap));

    // --layer of the last layer gives the model's output.
    let full = d.join("full.npy");
    let last = d.join("last.npy");
    assert_eq!(
        netc(&[&args[..], &["--output", s(&full)]].concat())
            .status
            .code(),
        Some(0)
    );
    let o = netc(&[&args[..], &["--layer", "fc3", "--output", s(&last)]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("fc3[0] top-5:"), "{}", stdout(&o));
    let (a, b) = (
        netc::io::npy::read_f32(&full).unwrap(),
        netc::io::npy::read_f32(&last).unwrap(),
    );
    assert_eq!(a, b);
    // An intermediate layer's values: the ReLU after conv1.
    let o = netc(&[&args[..], &["--layer", "1", "--output", s(&npz)]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m = read_npz(&npz);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].0, "1");
    assert_eq!(m[0].1.shape(), [4, 6, 28, 28]);
    assert!(m[0].1.iter().all(|&v| v >= 0.0));
    assert!(m[0].1.iter().any(|&v| v > 0.0));

    // An unknown layer: a usage error naming the nearest one.
    let o = netc(&[&args[..], &["--layer", "conv3"]].concat());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("did you mean `conv1`?"),
        "{}",
        stderr(&o)
    );
    let o = netc(&[&args[..], &["--layer", "layer4.1.conv2"]].concat());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("did you mean `"), "{}", stderr(&o));
    // A picture of an output that is not a feature map.
    let o = netc(&[&args[..], &["--output-image", s(&d.join("x.png"))]].concat());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--layer"), "{}", stderr(&o));
    assert!(!d.join("x.png").exists());
}

const TWO: &str = "model two {\n  input x: [3, 8, 8]\n  a: conv(2, 3, pad=1)\n  b = a |> relu\n  c: conv(3, 1)\n  output a, b, c\n}\n";

fn write_input(d: &Path, shape: &[usize]) -> PathBuf {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|k| ((k * 7919 % 1000) as f32) / 500.0 - 1.0)
        .collect();
    let p = d.join("x.npy");
    netc::io::npy::write_f32(&p, &ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()).unwrap();
    p
}

#[test]
fn output_writes_every_output() {
    let d = dir("every");
    let spec = d.join("two.net");
    std::fs::write(&spec, TWO).unwrap();
    let x = write_input(&d, &[2, 3, 8, 8]);
    let npz = d.join("all.npz");
    let o = netc(&["run", s(&spec), "--input", s(&x), "--output", s(&npz)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m = read_npz(&npz);
    let keys: Vec<&str> = m.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["a", "b", "c"]);
    assert_eq!(m[0].1.shape(), [2, 2, 8, 8]);
    assert_eq!(m[2].1.shape(), [2, 3, 8, 8]);
    // b = relu(a)
    for (a, b) in m[0].1.iter().zip(m[1].1.iter()) {
        assert_eq!(a.max(0.0), *b);
    }
    // A .npy for several outputs, a PNG name or another extension: usage errors, nothing
    // written.
    for (name, says) in [
        ("y.npy", "all.npz"),
        ("y.png", "--output-image"),
        ("y.bin", ".npz"),
    ] {
        let p = d.join(name);
        let o = netc(&["run", s(&spec), "--input", s(&x), "--output", s(&p)]);
        assert_eq!(o.status.code(), Some(2), "{name}");
        let want = if name == "y.npy" { "y.npz" } else { says };
        assert!(stderr(&o).contains(want), "{name}: {}", stderr(&o));
        assert!(!p.exists(), "{name} written");
    }
    let o = netc(&[
        "run",
        s(&spec),
        "--input",
        s(&x),
        "--output-image",
        s(&d.join("g.jpg")),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("g.png"), "{}", stderr(&o));

    // The picture of several outputs: 2 samples × (2 + 2 + 3) channels, labelled by output.
    let png = d.join("all.png");
    let o = netc(&["run", s(&spec), "--input", s(&x), "--output-image", s(&png)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("(14 tiles)"), "{}", stdout(&o));
    // Outputs that are not feature maps are named as not drawn.
    let mixed = d.join("mixed.net");
    std::fs::write(
        &mixed,
        "model mixed {\n  input x: [3, 8, 8]\n  a: conv(2, 3, pad=1)\n  f = a |> flatten\n  output a, f\n}\n",
    )
    .unwrap();
    let o = netc(&[
        "run",
        s(&mixed),
        "--input",
        s(&x),
        "--output-image",
        s(&png),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("(4 tiles; not feature maps, not drawn: `f` [128])"),
        "{}",
        stdout(&o)
    );
    // --rgb: the 3-channel output is one colour tile per sample, min-max over its channels.
    let o = netc(&[
        "run",
        s(&spec),
        "--input",
        s(&x),
        "--layer",
        "c",
        "--rgb",
        "--output-image",
        s(&png),
        "--output",
        s(&d.join("c.npy")),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("(2 tiles)"), "{}", stdout(&o));
    let c = netc::io::npy::read_f32(d.join("c.npy")).unwrap();
    let img = decode(&png);
    // 8×8 tiles enlarged 5× (to 40).
    let gap = netc::picture::GAP;
    let s0: Vec<f32> = c.iter().take(3 * 64).copied().collect();
    let (lo, hi) = s0
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    for (i, j) in [(0, 0), (3, 5), (7, 7)] {
        let p = img.get_pixel((gap + 5 * j) as u32, (gap + 5 * i) as u32).0;
        for ch in 0..3 {
            let want = ((s0[ch * 64 + i * 8 + j] - lo) / (hi - lo) * 255.0).round() as i32;
            assert!(
                (p[ch] as i32 - want).abs() <= 1,
                "({i}, {j}) {ch}: {p:?} vs {want}"
            );
        }
    }
}

#[test]
fn top5_only_for_classifiers_without_a_second_softmax() {
    let d = dir("top5");
    // Ends in a softmax: its values are printed as they are.
    let spec = d.join("sm.net");
    std::fs::write(
        &spec,
        "model sm {\n  input x: [3, 8, 8]\n  flatten\n  fc: dense(10)\n  softmax\n}\n",
    )
    .unwrap();
    let x = write_input(&d, &[2, 3, 8, 8]);
    let y = d.join("p.npy");
    let o = netc(&[
        "run",
        s(&spec),
        "--input",
        s(&x),
        "--output",
        s(&y),
        "--seed",
        "3",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let p = netc::io::npy::read_f32(&y).unwrap();
    let out = stdout(&o);
    let line = out
        .lines()
        .find(|l| l.starts_with("output[0] top-5:"))
        .unwrap();
    let best = p.iter().take(10).copied().fold(f32::MIN, f32::max);
    let first = line.split('(').nth(1).unwrap().split('%').next().unwrap();
    let shown: f32 = first.parse().unwrap();
    assert!(
        (shown - 100.0 * best).abs() < 0.051,
        "{line}: the top probability is {best}"
    );

    // Not classifiers: feature maps, embeddings, one value.
    let emb = d.join("emb.net");
    std::fs::write(
        &emb,
        "model emb {\n  input x: [3, 8, 8]\n  flatten\n  fc: dense(16)\n  l2_normalize\n}\n",
    )
    .unwrap();
    let o = netc(&["run", s(&emb), "--input", s(&x)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stdout(&o).contains("top-5"), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("output: shape [2, 16]"),
        "{}",
        stdout(&o)
    );

    // A fully convolutional classifier's [K, 1, 1] scores get a top-5 (softmaxed).
    let fcn = d.join("fcn.net");
    std::fs::write(&fcn, "model fcn {\n  input x: [3, 8, 8]\n  conv(7, 8)\n}\n").unwrap();
    let o = netc(&["run", s(&fcn), "--input", s(&x)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).matches("top-5:").count(), 2, "{}", stdout(&o));
    // --rgb belongs to --output-image.
    let o = netc(&["run", s(&fcn), "--input", s(&x), "--rgb"]);
    assert_eq!(o.status.code(), Some(2));

    // A large batch: a few lines, then counts of the top-1 classes.
    let x = write_input(&d, &[20, 3, 8, 8]);
    let o = netc(&["run", s(&spec), "--input", s(&x), "--seed", "3"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.matches("top-5:").count(), 3, "{out}");
    assert!(out.contains("... (17 more samples)"), "{out}");
    let counts = out
        .lines()
        .find(|l| l.contains("top-1 class counts over 20 samples"))
        .unwrap_or_else(|| panic!("{out}"));
    let total: usize = counts
        .rsplit(": ")
        .next()
        .unwrap()
        .split(", ")
        .map(|t| {
            t.split('(')
                .nth(1)
                .unwrap()
                .trim_end_matches(')')
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert_eq!(total, 20, "{counts}");
}

#[test]
fn input_sizes_replace_height_and_width_only() {
    let sized = |text: &str, sizes: Vec<(String, [usize; 2])>| {
        let opts = netc::Options {
            input_sizes: sizes,
            ..Default::default()
        };
        netc::load_str("m.net", text, &opts)
    };
    let spec = sized(
        "model m {\n  input image: [3, 8, 8]\n  conv(4, 3, pad=1)\n}\n",
        vec![("image".into(), [5, 11])],
    )
    .unwrap();
    let g = &spec.graph;
    assert_eq!(g.inputs[0].shape, [3, 5, 11]);
    assert_eq!(g.nodes[g.outputs[0].1].shape, [4, 5, 11]);
    // Only image inputs, and only inputs the model has.
    let e = sized(
        "model m {\n  input v: [8]\n  dense(2)\n}\n",
        vec![("v".into(), [5, 11])],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("input `v` is a vector [8]"), "{e}");
    let e = sized(
        "model m {\n  input image: [3, 8, 8]\n  relu\n}\n",
        vec![("img".into(), [5, 11])],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no input `img`") && e.contains("image"), "{e}");
}

#[test]
fn a_layer_of_a_shared_module_gives_one_output_per_application() {
    let d = dir("shared");
    let x = write_input(&d, &[1, 1, 28, 28]);
    let npz = d.join("e.npz");
    let input = |n: &str| format!("{n}={}", x.display());
    let (a, p, n) = (input("anchor"), input("positive"), input("negative"));
    let o = netc(&[
        "run",
        "specs/triplet.net",
        "--input",
        &a,
        "--input",
        &p,
        "--input",
        &n,
        "--layer",
        "embed.conv1",
        "--output",
        s(&npz),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let m = read_npz(&npz);
    let keys: Vec<&str> = m.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["embed.conv1#1", "embed.conv1#2", "embed.conv1#3"]);
    // The same weights on the same image: the three applications agree.
    assert_eq!(m[0].1, m[1].1);
    assert_eq!(m[0].1, m[2].1);
    assert_eq!(m[0].1.shape(), [1, 32, 28, 28]);
}
