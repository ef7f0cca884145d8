//! One loader per input format, shared by the mutation tests (`tests/fuzz_formats.rs`) and the
//! `cargo fuzz` targets (`fuzz/fuzz_targets/`), so both exercise exactly the same code.
//!
//! In: a [`Format`] and the bytes of a file. The bytes are written to a fresh temporary file
//! (for IDX, one of the four files of a split directory, beside three valid ones) and read
//! through netc's public loading API, as the CLI reads it. Out: `Ok(summary)` or
//! `Err(message)` for a clean error. A panic in a loader propagates (the fuzzer's finding);
//! so do the harness's own checks: an error must render and name the file, and a success
//! must not claim more elements than the bytes it came from can hold.
//!
//! [`seeds`] gives valid files of every format (built here, from netc's own writers and the
//! `image`/`zip` crates), the starting points for mutation.

#![allow(dead_code)] // each consumer (a test binary, one fuzz target) uses part of it

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{ArrayD, IxDyn};
use netc::data::idx;
use netc::io::Weights;
use netc::layer_graph::{InputInfo, LayerGraph};
use netc::train::checkpoint::{self, EpochRecord, Progress};
use netc::train::optim::OptimState;
use netc::train_config::Optimizer;

/// The input formats netc reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A `.net` spec (`netc::load_file`).
    Net,
    /// A YAML spec.
    Yaml,
    /// safetensors weights (`Weights::load`).
    Safetensors,
    /// A training checkpoint (`checkpoint::load`).
    Checkpoint,
    /// A `.npy` array (`io::npy::read_f32` and `read_i64`, as `--input` and the tests read).
    Npy,
    /// An `.npz` dataset (`data::open`).
    Npz,
    /// Images as model inputs (`io::load_image`).
    Png,
    Jpeg,
    /// An IDX split directory (`data::open`), files raw or gzip'd: the first byte of the
    /// fuzzed data picks which of the four files is replaced by the rest.
    Idx,
    IdxGz,
}

impl Format {
    pub const ALL: [Format; 10] = [
        Format::Net,
        Format::Yaml,
        Format::Safetensors,
        Format::Checkpoint,
        Format::Npy,
        Format::Npz,
        Format::Png,
        Format::Jpeg,
        Format::Idx,
        Format::IdxGz,
    ];

    /// The name of its corpus directory (`tests/data/fuzz-corpus/<name>/`) and fuzz target.
    pub fn name(self) -> &'static str {
        match self {
            Format::Net => "net",
            Format::Yaml => "yaml",
            Format::Safetensors => "safetensors",
            Format::Checkpoint => "checkpoint",
            Format::Npy => "npy",
            Format::Npz => "npz",
            Format::Png => "png",
            Format::Jpeg => "jpeg",
            Format::Idx => "idx",
            Format::IdxGz => "idx-gz",
        }
    }

    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The file name the bytes are written under.
    fn file_name(self) -> &'static str {
        match self {
            Format::Net => "fuzz.net",
            Format::Yaml => "fuzz.yaml",
            Format::Safetensors => "fuzz.safetensors",
            Format::Checkpoint => "fuzz.checkpoint.safetensors",
            Format::Npy => "fuzz.npy",
            Format::Npz => "fuzz.npz",
            Format::Png => "fuzz.png",
            Format::Jpeg => "fuzz.jpg",
            Format::Idx | Format::IdxGz => "data",
        }
    }
}

/// A fresh directory under the system temp dir, removed on drop. If the process dies inside a
/// loader (an abort on a refused allocation, a kill by a hang guard), it stays behind with the
/// input that did it.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "netc-fuzz-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The small model the weights and checkpoint formats are read against: a convolution with
/// bias, batchnorm (its `num_batches_tracked` is the one int64 tensor) and a dense layer.
pub fn model() -> &'static LayerGraph {
    static MODEL: OnceLock<LayerGraph> = OnceLock::new();
    MODEL.get_or_init(|| {
        let text = "model tiny {\n  input image: [1, 6, 6]\n  conv1: conv(2, 3, pad=1)\n  \
                    bn1: batchnorm\n  relu\n  maxpool(2)\n  flatten\n  fc: dense(3)\n}\n";
        netc::load_str("tiny.net", text, &netc::Options::default())
            .unwrap_or_else(|e| panic!("{e}"))
            .graph
    })
}

/// The model input images and IDX/npz samples are read for: `[C, 6, 6]`.
pub fn image_input(channels: usize) -> InputInfo {
    InputInfo {
        name: "image".into(),
        node: 0,
        shape: vec![channels, 6, 6],
        mean: vec![0.5],
        std: vec![0.25],
    }
}

/// The most elements a successful load may produce from `len` bytes of input: a loader must
/// not report (or allocate) data the file does not hold. Compressed formats get a factor of
/// 1100 (deflate's limit is 1032:1) on top.
fn assert_bounded(what: &str, elements: usize, len: usize, compressed: bool) {
    let cap = if compressed { len * 1100 } else { len } + 64;
    assert!(
        elements <= cap,
        "{what}: a {len}-byte file gave {elements} elements"
    );
}

/// An error must render, and name the file it is about (`name`: a file or directory name).
fn checked_err(msg: String, name: &str) -> Result<String, String> {
    assert!(!msg.trim().is_empty(), "an error rendered as nothing");
    assert!(
        msg.contains(name),
        "the error does not name the file `{name}`:\n{msg}"
    );
    Err(msg)
}

/// Loads `bytes` as `format` through the public API. See the module doc.
pub fn load(format: Format, bytes: &[u8]) -> Result<String, String> {
    let dir = TempDir::new(format.name());
    let path = dir.path().join(format.file_name());
    let name = format.file_name();
    let len = bytes.len();
    match format {
        Format::Net | Format::Yaml => {
            std::fs::write(&path, bytes).expect("write");
            match netc::load_file(&path, &netc::Options::default()) {
                Ok(spec) => {
                    // A success must print as every command prints it.
                    let g = &spec.graph;
                    let _ = netc::show::summary(g);
                    let _ = netc::show::graph_text(g);
                    let _ = netc::show::graph_json(g).to_string();
                    Ok(format!("model `{}`: {} nodes", g.name, g.nodes.len()))
                }
                // Spec errors name the file in their `-->` line (or in the message when it
                // cannot be read).
                Err(e) => checked_err(e.to_string(), name),
            }
        }
        Format::Safetensors => {
            std::fs::write(&path, bytes).expect("write");
            match Weights::load(&path, model()) {
                Ok(w) => Ok(format!("{} tensors", w.values.len())),
                Err(e) => checked_err(e.to_string(), name),
            }
        }
        Format::Checkpoint => {
            std::fs::write(&path, bytes).expect("write");
            match checkpoint::load(&path, model()) {
                Ok(ck) => {
                    let moments: usize = ck.moments.values().map(|(m, v)| m.len() + v.len()).sum();
                    assert_bounded("optimizer moments", moments * 4, len, false);
                    let history = ck.progress.as_ref().map_or(0, |p| p.history.len());
                    assert_bounded("history", history, len, false);
                    Ok(format!("{moments} moment values, {history} epochs"))
                }
                Err(e) => checked_err(e.to_string(), name),
            }
        }
        Format::Npy => {
            std::fs::write(&path, bytes).expect("write");
            let f = netc::io::npy::read_f32(&path).map(|a| a.len() * 4);
            let i = netc::io::npy::read_i64(&path).map(|a| a.len() * 8);
            for r in [&f, &i] {
                match r {
                    Ok(n) => assert_bounded("npy", *n, len, false),
                    Err(e) => {
                        checked_err(e.to_string(), name).ok();
                    }
                }
            }
            match (f, i) {
                (Ok(n), _) | (_, Ok(n)) => Ok(format!("{n} bytes of elements")),
                (Err(e), _) => Err(e.to_string()),
            }
        }
        Format::Npz => {
            std::fs::write(&path, bytes).expect("write");
            data_open(&path, 1, len, true, name)
        }
        Format::Png | Format::Jpeg => {
            std::fs::write(&path, bytes).expect("write");
            let mut out = Ok(String::new());
            for c in [1, 3] {
                out = match netc::io::load_image(&path, &image_input(c)) {
                    Ok(a) => {
                        assert_eq!(a.shape(), [c, 6, 6], "an image gave the wrong shape");
                        Ok(format!("{:?}", a.shape()))
                    }
                    Err(e) => checked_err(e.to_string(), name),
                };
            }
            out
        }
        Format::Idx | Format::IdxGz => {
            let gz = format == Format::IdxGz;
            let (which, rest) = bytes.split_first().map_or((0, &[][..]), |(&b, r)| (b, r));
            let files = idx_files(gz);
            let which = which as usize % files.len();
            let mut total = 0;
            std::fs::create_dir_all(&path).expect("mkdir");
            for (i, (fname, content)) in files.iter().enumerate() {
                let content = if i == which { rest } else { content };
                std::fs::write(path.join(fname), content).expect("write");
                total += content.len();
            }
            // Errors name the replaced file or the directory (`data`).
            data_open(&path, 1, total, gz, "data")
        }
    }
}

/// `data::open` on `path` for `[channels, 6, 6]` samples, with the size checks.
fn data_open(
    path: &Path,
    channels: usize,
    len: usize,
    compressed: bool,
    name: &str,
) -> Result<String, String> {
    let source = path.to_str().expect("temp paths are UTF-8");
    match netc::data::open(source, &image_input(channels)) {
        Ok(split) => {
            for set in [&split.train, &split.test] {
                assert_bounded("samples", set.len() * set.sample_len(), len, compressed);
                assert_eq!(set.sample_shape, [channels, 6, 6]);
            }
            Ok(format!(
                "{} + {} samples",
                split.train.len(),
                split.test.len()
            ))
        }
        Err(e) => checked_err(e.to_string(), name),
    }
}

// ------------------------------------------------------------------------------ seed files

/// Valid files of `format`, the mutators' starting points (each loads successfully).
pub fn seeds(format: Format) -> Vec<Vec<u8>> {
    match format {
        Format::Net => vec![
            include_bytes!("../../specs/lenet5.net").to_vec(),
            include_bytes!("../../specs/vgg_small.net").to_vec(),
        ],
        Format::Yaml => vec![include_bytes!("../../specs/lenet5.yaml").to_vec()],
        Format::Safetensors => {
            let dir = TempDir::new("seed");
            let p = dir.path().join("w.safetensors");
            Weights::init(model(), 1).save(&p, model()).expect("save");
            vec![std::fs::read(&p).expect("read")]
        }
        Format::Checkpoint => vec![checkpoint_bytes(&Progress {
            epoch: 1,
            batch: 2,
            step: 7,
            optimizer: "sgd".into(),
            seed: 3,
            history: vec![record(1)],
            ..Progress::default()
        })],
        Format::Npy => {
            let a = ArrayD::from_shape_vec(IxDyn(&[2, 3, 4]), (0..24).map(|i| i as f32).collect());
            let dir = TempDir::new("seed");
            let p = dir.path().join("a.npy");
            netc::io::npy::write_f32(&p, &a.expect("shape")).expect("write");
            let ints: Vec<u8> = (0..6i64).flat_map(|i| i.to_le_bytes()).collect();
            vec![std::fs::read(&p).expect("read"), npy("<i8", &[2, 3], &ints)]
        }
        Format::Npz => {
            let (x, y) = samples(12);
            vec![
                npz(&[("x.npy", x.clone()), ("y.npy", y.clone())], true),
                npz(&[("x.npy", x), ("y.npy", y)], false),
            ]
        }
        Format::Png => vec![
            encode(image::ImageFormat::Png, 7, 5, 1),
            encode(image::ImageFormat::Png, 6, 9, 3),
        ],
        Format::Jpeg => vec![
            encode(image::ImageFormat::Jpeg, 9, 7, 3),
            encode(image::ImageFormat::Jpeg, 6, 6, 1),
        ],
        // The first byte picks the file the rest replaces (see `load`).
        Format::Idx | Format::IdxGz => idx_files(format == Format::IdxGz)
            .into_iter()
            .enumerate()
            .map(|(i, (_, b))| [vec![i as u8], b].concat())
            .collect(),
    }
}

/// One epoch's metrics, for checkpoints.
pub fn record(epoch: usize) -> EpochRecord {
    EpochRecord {
        epoch,
        train_loss: 0.5,
        train_accuracy: 0.75,
        test_loss: Some(0.6),
        test_accuracy: Some(0.7),
        lr: 0.05,
        metrics: Default::default(),
        seconds: 1.0,
        images_per_second: 100.0,
    }
}

/// A checkpoint of [`model`] (seeded weights, SGD momentum buffers) with this progress;
/// `edit` changes the weights or the optimizer state first (e.g. to put a NaN in).
pub fn checkpoint_with(
    progress: &Progress,
    edit: impl FnOnce(&mut Weights, &mut OptimState),
) -> Vec<u8> {
    let lg = model();
    let mut w = Weights::init(lg, 2);
    let tensors: Vec<usize> = (0..lg.params.len())
        .filter(|&i| lg.params[i].dtype == netc::layer_graph::DType::F32)
        .collect();
    let sizes: Vec<usize> = tensors.iter().map(|&i| lg.params[i].numel()).collect();
    let sgd = Optimizer::Sgd {
        lr: 0.05,
        momentum: 0.9,
        dampening: 0.0,
        nesterov: false,
        weight_decay: 0.0,
    };
    let mut optim = OptimState::new(sgd, &sizes);
    for (k, m) in optim.m.iter_mut().enumerate() {
        for (j, x) in m.iter_mut().enumerate() {
            *x = (k + j) as f32 * 0.01;
        }
    }
    edit(&mut w, &mut optim);
    let dir = TempDir::new("seed");
    let p = dir.path().join("c.safetensors");
    checkpoint::save(&p, lg, &w, &optim, &tensors, progress).expect("save");
    std::fs::read(&p).expect("read")
}

pub fn checkpoint_bytes(progress: &Progress) -> Vec<u8> {
    checkpoint_with(progress, |_, _| {})
}

/// `n` uint8 samples of `[1, 6, 6]` and their int64 labels, as `.npy` bytes.
pub fn samples(n: usize) -> (Vec<u8>, Vec<u8>) {
    let px: Vec<u8> = (0..n * 36).map(|i| (i * 7 % 256) as u8).collect();
    let labels: Vec<u8> = (0..n as i64).flat_map(|i| (i % 3).to_le_bytes()).collect();
    (npy("|u1", &[n, 1, 6, 6], &px), npy("<i8", &[n], &labels))
}

/// A `.npy` file's bytes (version 1, C order).
pub fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = match dims.as_slice() {
        [d] => format!("({d},)"),
        _ => format!("({})", dims.join(", ")),
    };
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}")
        .into_bytes();
    let total = (10 + h.len() + 1).next_multiple_of(64);
    h.resize(total - 10 - 1, b' ');
    h.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

/// An `.npz` archive of `members`, deflated or stored.
pub fn npz(members: &[(&str, Vec<u8>)], deflate: bool) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let opts = zip::write::SimpleFileOptions::default().compression_method(method);
    for (name, bytes) in members {
        z.start_file(*name, opts).expect("zip");
        z.write_all(bytes).expect("zip");
    }
    z.finish().expect("zip").into_inner()
}

/// A `w × h` image with `channels` (1 or 3) encoded as `format`.
pub fn encode(format: image::ImageFormat, w: u32, h: u32, channels: u8) -> Vec<u8> {
    let img: image::DynamicImage = if channels == 1 {
        image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x * 31 + y * 17) as u8])).into()
    } else {
        image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 31) as u8, (y * 17) as u8, (x * y) as u8])
        })
        .into()
    };
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

/// The four files of a valid IDX split of 5 training and 3 test images of 6×6 (gzip'd when
/// `gz`): (file name, bytes).
pub fn idx_files(gz: bool) -> Vec<(String, Vec<u8>)> {
    let images = |n: u32, salt: u32| {
        let px: Vec<u8> = (0..n * 36).map(|i| ((i * 13 + salt) % 256) as u8).collect();
        idx::encode(&[n, 6, 6], &px)
    };
    let labels = |n: u32| idx::encode(&[n], &(0..n).map(|i| (i % 3) as u8).collect::<Vec<_>>());
    let files = [
        ("train-images-idx3-ubyte", images(5, 0)),
        ("train-labels-idx1-ubyte", labels(5)),
        ("t10k-images-idx3-ubyte", images(3, 1)),
        ("t10k-labels-idx1-ubyte", labels(3)),
    ];
    files
        .into_iter()
        .map(|(n, b)| {
            if gz {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(&b).expect("gzip");
                (format!("{n}.gz"), e.finish().expect("gzip"))
            } else {
                (n.to_string(), b)
            }
        })
        .collect()
}
