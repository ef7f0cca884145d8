//! `netc::io`: weights (safetensors), `.npy` arrays and images, against the reference data in
//! `tests/data/reference/` and crafted bad files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use ndarray::{ArrayD, IxDyn};
use netc::io::{IoError, Value, Weights, load_image, npy, write_atomic};
use netc::layer_graph::{InputInfo, LayerGraph};
use netc::{Options, load_file, load_str};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

const MODELS: [&str; 3] = ["lenet5", "mini_resnet", "mini_inception"];

fn spec(name: &str) -> LayerGraph {
    load_file(format!("specs/{name}.net"), &Options::default())
        .unwrap_or_else(|e| panic!("{e}"))
        .graph
}

fn reference(model: &str, file: &str) -> PathBuf {
    PathBuf::from(format!("tests/data/reference/{model}/{file}"))
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "netc-io-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn join(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
    /// The error's text with this directory shown as `<tmp>`, for snapshots.
    fn show(&self, e: &IoError) -> String {
        e.to_string()
            .replace(&self.0.display().to_string(), "<tmp>")
    }
    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A safetensors file from (name, dtype, shape, raw little-endian bytes).
fn write_st(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Every tensor of a safetensors file, renamed by `rename` (None drops it).
fn tensors_of(
    path: &Path,
    rename: impl Fn(&str) -> Option<String>,
) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<_> = st
        .iter()
        .filter_map(|(n, t)| Some((rename(n)?, t.dtype(), t.shape().to_vec(), t.data().to_vec())))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn write_owned(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let t: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), *d, s.clone(), b.clone()))
        .collect();
    write_st(path, &t);
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

// ---------------------------------------------------------------------------------------------
// Weights: loading

#[test]
fn reference_weights_load_with_the_files_values() {
    for model in MODELS {
        let g = spec(model);
        let path = reference(model, "weights.safetensors");
        let w = Weights::load(&path, &g).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(w.values.len(), g.params.len());
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for (p, v) in g.params.iter().zip(&w.values) {
            assert_eq!(v.shape(), p.shape.as_slice(), "{}", p.path);
            assert_eq!(v.dtype(), p.dtype, "{}", p.path);
            let t = st.tensor(&p.path).unwrap();
            match (v, t.dtype()) {
                (Value::F32(a), Dtype::F32) => {
                    let want: Vec<f32> = t
                        .data()
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect();
                    assert_eq!(a.iter().copied().collect::<Vec<_>>(), want, "{}", p.path);
                }
                (Value::I64(a), Dtype::I64) => {
                    let want: Vec<i64> = t
                        .data()
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                        .collect();
                    assert_eq!(a.iter().copied().collect::<Vec<_>>(), want, "{}", p.path);
                }
                (v, d) => panic!("{}: {:?} from {d:?}", p.path, v.dtype()),
            }
        }
        // Lookup by path.
        let first = &g.params[0].path;
        assert_eq!(w.get(&g, first), Some(&w.values[0]));
        assert_eq!(w.get(&g, "no.such.param"), None);
    }
}

#[test]
fn weights_of_another_model_list_every_problem() {
    let g = spec("mini_resnet");
    let e = Weights::load(reference("lenet5", "weights.safetensors"), &g).unwrap_err();
    assert_eq!(
        e.path,
        PathBuf::from("tests/data/reference/lenet5/weights.safetensors")
    );
    // Every mini_resnet tensor except num_batches_tracked (optional) is named: missing, or
    // (conv1.weight, fc.weight, fc.bias) present with another shape.
    for p in &g.params {
        if !p.path.ends_with("num_batches_tracked") {
            let missing = format!("missing `{}` {}", p.path, format_shape(&p.shape));
            let shape = format!("wrong shape `{}`", p.path);
            assert!(
                e.details
                    .iter()
                    .any(|d| *d == missing || d.starts_with(&shape)),
                "{}",
                p.path
            );
        }
    }
    assert!(e.to_string().starts_with(
        "error: tests/data/reference/lenet5/weights.safetensors: the weights do not fit model `mini_resnet`"
    ));
    insta::assert_snapshot!("lenet5_weights_into_mini_resnet", e.to_string());
}

fn format_shape(s: &[usize]) -> String {
    format!(
        "[{}]",
        s.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[test]
fn wrong_shapes_are_reported_with_expected_and_found() {
    // lenet5 with 100 classes: fc3 no longer fits the 10-class reference weights.
    let opts = Options::with_sets(&["classes=100"]).unwrap();
    let g = load_file("specs/lenet5.net", &opts).unwrap().graph;
    let e = Weights::load(reference("lenet5", "weights.safetensors"), &g).unwrap_err();
    insta::assert_snapshot!("lenet5_weights_with_100_classes", e.to_string());
}

#[test]
fn data_parallel_prefix_is_detected() {
    let dir = TempDir::new("prefix");
    let path = dir.join("dp.safetensors");
    let t = tensors_of(&reference("lenet5", "weights.safetensors"), |n| {
        Some(format!("module.{n}"))
    });
    write_owned(&path, &t);
    let e = Weights::load(&path, &spec("lenet5")).unwrap_err();
    assert!(
        e.details
            .iter()
            .any(|d| d.contains("did you mean `conv1.weight`?"))
    );
    assert!(e.details.iter().any(|d| d.contains("prefix `module.`")));
    insta::assert_snapshot!("module_prefix", dir.show(&e));
}

#[test]
fn missing_prefix_and_typos_get_suggestions() {
    // The model nests everything under `net.`; the file has bare names, one misspelled.
    let g = load_str(
        "wrapped.net",
        "block inner() { conv1: conv(2, 3); flatten; fc: dense(3) }\n\
         model wrapped() { input x: [1, 5, 5]; net: inner() }",
        &Options::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .graph;
    let names: Vec<&str> = g.params.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        names,
        [
            "net.conv1.weight",
            "net.conv1.bias",
            "net.fc.weight",
            "net.fc.bias"
        ]
    );
    let dir = TempDir::new("lacking");
    let path = dir.join("w.safetensors");
    write_st(
        &path,
        &[
            ("conv1.weight", Dtype::F32, vec![2, 1, 3, 3], vec![0; 72]),
            ("conv1.bias", Dtype::F32, vec![2], vec![0; 8]),
            ("fc.weight", Dtype::F32, vec![3, 18], vec![0; 216]),
            ("net.fc.bais", Dtype::F32, vec![3], vec![0; 12]),
        ],
    );
    let e = Weights::load(&path, &g).unwrap_err();
    insta::assert_snapshot!("missing_prefix_and_typo", dir.show(&e));
}

#[test]
fn wrong_dtypes_are_reported() {
    let dir = TempDir::new("dtype");
    let path = dir.join("w.safetensors");
    let t = tensors_of(&reference("lenet5", "weights.safetensors"), |n| {
        Some(n.to_string())
    });
    let t: Vec<_> = t
        .into_iter()
        .map(|(n, d, s, b)| match n.as_str() {
            // Same byte count, wrong type.
            "conv1.bias" => (n, Dtype::I32, s, b),
            "fc1.bias" => (n, Dtype::U8, vec![b.len()], b),
            _ => (n, d, s, b),
        })
        .collect();
    write_owned(&path, &t);
    let e = Weights::load(&path, &spec("lenet5")).unwrap_err();
    insta::assert_snapshot!("wrong_dtypes", dir.show(&e));
}

#[test]
fn other_float_dtypes_are_converted() {
    let g = load_str(
        "tiny.net",
        "model tiny() { input x: [2]; a: dense(2); b: dense(2); c: dense(2) }",
        &Options::default(),
    )
    .unwrap()
    .graph;
    let vals = [1.0f32, -2.0, 0.5, 3.25];
    let f64s: Vec<u8> = vals
        .iter()
        .flat_map(|&x| (x as f64).to_le_bytes())
        .collect();
    // 1.0, -2.0, 0.5, 3.25 in IEEE half and bfloat16.
    let f16s: Vec<u8> = [0x3c00u16, 0xc000, 0x3800, 0x4280]
        .iter()
        .flat_map(|h| h.to_le_bytes())
        .collect();
    let bf16s: Vec<u8> = vals
        .iter()
        .flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes())
        .collect();
    let dir = TempDir::new("convert");
    let path = dir.join("w.safetensors");
    write_st(
        &path,
        &[
            ("a.weight", Dtype::F64, vec![2, 2], f64s),
            ("a.bias", Dtype::F32, vec![2], f32_bytes(&[7.0, 8.0])),
            ("b.weight", Dtype::F16, vec![2, 2], f16s),
            ("b.bias", Dtype::F32, vec![2], f32_bytes(&[0.0, 0.0])),
            ("c.weight", Dtype::BF16, vec![2, 2], bf16s),
            ("c.bias", Dtype::F32, vec![2], f32_bytes(&[0.0, 0.0])),
        ],
    );
    let w = Weights::load(&path, &g).unwrap_or_else(|e| panic!("{e}"));
    for name in ["a.weight", "b.weight", "c.weight"] {
        let a = w.get(&g, name).unwrap().as_f32().unwrap();
        assert_eq!(a.iter().copied().collect::<Vec<_>>(), vals, "{name}");
    }
    assert_eq!(
        w.get(&g, "a.bias")
            .unwrap()
            .as_f32()
            .unwrap()
            .as_slice()
            .unwrap(),
        [7.0, 8.0]
    );
}

#[test]
fn num_batches_tracked_may_be_absent_or_i32() {
    let g = spec("mini_resnet");
    let src = reference("mini_resnet", "weights.safetensors");
    let dir = TempDir::new("nbt");
    // Absent: 0.
    let path = dir.join("absent.safetensors");
    write_owned(
        &path,
        &tensors_of(&src, |n| {
            (!n.ends_with("num_batches_tracked")).then(|| n.to_string())
        }),
    );
    let w = Weights::load(&path, &g).unwrap_or_else(|e| panic!("{e}"));
    let nbt = w.get(&g, "bn1.num_batches_tracked").unwrap();
    assert_eq!(nbt, &Value::I64(ArrayD::zeros(IxDyn(&[]))));
    // I32: widened.
    let path = dir.join("i32.safetensors");
    let t: Vec<_> = tensors_of(&src, |n| Some(n.to_string()))
        .into_iter()
        .map(|(n, d, s, b)| {
            if n.ends_with("num_batches_tracked") {
                (n, Dtype::I32, s, 7i32.to_le_bytes().to_vec())
            } else {
                (n, d, s, b)
            }
        })
        .collect();
    write_owned(&path, &t);
    let w = Weights::load(&path, &g).unwrap_or_else(|e| panic!("{e}"));
    let nbt = w.get(&g, "layer2.0.bn2.num_batches_tracked").unwrap();
    assert_eq!(nbt.as_i64().unwrap().first(), Some(&7));
}

#[test]
fn fixed_weights_come_from_the_spec_and_must_match() {
    let g = spec("edge_detect");
    let p = &g.params[0];
    assert_eq!(p.path, "sobel.weight");
    let sobel = p.fixed.clone().unwrap();
    let dir = TempDir::new("fixed");
    // A file without the fixed weight: taken from the spec.
    let empty = dir.join("empty.safetensors");
    write_st(&empty, &[]);
    let w = Weights::load(&empty, &g).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        w.values[0]
            .as_f32()
            .unwrap()
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        sobel
    );
    // The same values in the file: fine.
    let same = dir.join("same.safetensors");
    write_st(
        &same,
        &[(
            "sobel.weight",
            Dtype::F32,
            vec![2, 1, 3, 3],
            f32_bytes(&sobel),
        )],
    );
    assert!(Weights::load(&same, &g).is_ok());
    // Other values: refused, naming the first difference.
    let mut other = sobel.clone();
    other[3] = 5.0;
    let diff = dir.join("diff.safetensors");
    write_st(
        &diff,
        &[(
            "sobel.weight",
            Dtype::F32,
            vec![2, 1, 3, 3],
            f32_bytes(&other),
        )],
    );
    let e = Weights::load(&diff, &g).unwrap_err();
    insta::assert_snapshot!("fixed_weight_differs", dir.show(&e));
}

#[test]
fn bad_files_give_clear_errors() {
    let g = spec("lenet5");
    let dir = TempDir::new("bad");
    let good = std::fs::read(reference("lenet5", "weights.safetensors")).unwrap();
    let mut out = Vec::new();
    let mut case = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        let e = Weights::load(&p, &g).unwrap_err();
        out.push(dir.show(&e));
    };
    case("truncated_data.safetensors", &good[..good.len() - 100]);
    case("truncated_header.safetensors", &good[..200]);
    case("tiny.safetensors", &good[..5]);
    case("empty.safetensors", b"");
    case("text.safetensors", b"hello, this is not a weights file\n");
    case(
        "checkpoint.pt",
        b"PK\x03\x04\x14\x00\x00\x00\x08\x00rest of a zip",
    );
    case("legacy.pt", b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.");
    case("array.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'}");
    let mut extra = good.clone();
    extra.extend_from_slice(b"junk");
    case("extra.safetensors", &extra);
    let mut bad_json = good.clone();
    bad_json[20] = b'{';
    case("bad_json.safetensors", &bad_json);
    let missing = dir.join("does_not_exist.safetensors");
    out.push(dir.show(&Weights::load(&missing, &g).unwrap_err()));
    out.push(dir.show(&Weights::load(&dir.0, &g).unwrap_err()));
    insta::assert_snapshot!("bad_weight_files", out.join("\n"));
}

/// A header length whose first bytes are a pickle's protocol marker (`0x80, 2..=5`: 640, 896,
/// 1152 or 1408 bytes, plus multiples of 65,536) is still a safetensors file: its JSON header
/// starts at byte 8. (Found by `tests/fuzz_formats.rs`: such files were refused as pickles.)
#[test]
fn header_lengths_that_look_like_a_pickle_load() {
    let g = spec("lenet5");
    let dir = TempDir::new("pickle-like");
    let w = Weights::init(&g, 0);
    let p = dir.join("w.safetensors");
    let header_len = |pad: usize| {
        let meta = HashMap::from([("pad".to_string(), "x".repeat(pad))]);
        w.save_with(&p, &g, Vec::new(), meta).unwrap();
        let b = std::fs::read(&p).unwrap();
        u64::from_le_bytes(b[..8].try_into().unwrap()) as usize
    };
    // The header is padded to a multiple of 8; each byte of metadata adds one.
    let base = header_len(0);
    for second in 2..=5 {
        let target = (0..)
            .map(|k| k * 65536 + second * 256 + 0x80)
            .find(|&t| t >= base)
            .unwrap();
        assert_eq!(header_len(target - base), target);
        assert_eq!(
            Weights::load(&p, &g).unwrap(),
            w,
            "header length {target:#x}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Weights: saving

#[test]
fn save_then_load_round_trips() {
    let dir = TempDir::new("roundtrip");
    for model in MODELS {
        let g = spec(model);
        let w = Weights::load(reference(model, "weights.safetensors"), &g).unwrap();
        let path = dir.join(&format!("{model}.safetensors"));
        w.save(&path, &g).unwrap();
        assert_eq!(Weights::load(&path, &g).unwrap(), w);
        // The keys are exactly the parameter paths; num_batches_tracked is I64.
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut names = st.names();
        names.sort();
        let mut want: Vec<&str> = g.params.iter().map(|p| p.path.as_str()).collect();
        want.sort();
        assert_eq!(names, want);
        for (n, t) in st.iter() {
            let d = if n.ends_with("num_batches_tracked") {
                Dtype::I64
            } else {
                Dtype::F32
            };
            assert_eq!(t.dtype(), d, "{n}");
        }
    }
    // Only the saved files remain: no temporary files.
    assert_eq!(
        dir.files(),
        [
            "lenet5.safetensors",
            "mini_inception.safetensors",
            "mini_resnet.safetensors"
        ]
    );
}

#[test]
fn failed_saves_leave_the_existing_file_untouched() {
    let dir = TempDir::new("atomic");
    let g = spec("lenet5");
    let w = Weights::init(&g, 1);
    let path = dir.join("w.safetensors");
    w.save(&path, &g).unwrap();
    let before = std::fs::read(&path).unwrap();

    // A writer that fails half-way: the target keeps its old contents, no temp file is left.
    let e = write_atomic(&path, |out| {
        std::io::Write::write_all(out, b"half of a file")?;
        Err(std::io::Error::other("disk full"))
    })
    .unwrap_err();
    assert_eq!(
        dir.show(&e),
        "error: <tmp>/w.safetensors: cannot write: disk full"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(dir.files(), ["w.safetensors"]);

    // Values that do not fit the model: nothing is written.
    let other = Weights::init(&spec("mini_resnet"), 1);
    let e = other.save(&path, &g).unwrap_err();
    assert!(e.message.contains("do not fit model `lenet5`"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // A missing directory.
    let e = w
        .save(dir.join("no/such/dir/w.safetensors"), &g)
        .unwrap_err();
    insta::assert_snapshot!("save_into_missing_dir", dir.show(&e));

    // A directory in the way of the target.
    std::fs::create_dir(dir.join("taken")).unwrap();
    let e = w.save(dir.join("taken"), &g).unwrap_err();
    assert_eq!(
        dir.show(&e),
        "error: <tmp>/taken: cannot write: is a directory"
    );
    assert_eq!(dir.files(), ["taken", "w.safetensors"]);

    // A successful save replaces the file.
    Weights::init(&g, 2).save(&path, &g).unwrap();
    assert_ne!(std::fs::read(&path).unwrap(), before);
    assert_eq!(dir.files(), ["taken", "w.safetensors"]);
}

// ---------------------------------------------------------------------------------------------
// Weights: initialization

#[test]
fn init_is_deterministic_per_seed() {
    for model in ["lenet5", "mini_resnet", "resnet18"] {
        let g = spec(model);
        let a = Weights::init(&g, 42);
        let b = Weights::init(&g, 42);
        let bits = |w: &Weights| -> Vec<u32> {
            w.values
                .iter()
                .filter_map(Value::as_f32)
                .flat_map(|a| a.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
                .collect()
        };
        assert_eq!(bits(&a), bits(&b), "{model}");
        assert_ne!(bits(&a), bits(&Weights::init(&g, 43)), "{model}");
        for (p, v) in g.params.iter().zip(&a.values) {
            assert_eq!(v.shape(), p.shape.as_slice(), "{}", p.path);
            assert_eq!(v.dtype(), p.dtype, "{}", p.path);
        }
    }
}

#[test]
fn init_pins_the_first_values() {
    // Guards against accidental changes of the generator: saved inits must stay reproducible.
    let g = spec("lenet5");
    let w = Weights::init(&g, 0);
    let first: Vec<f32> = w.values[0]
        .as_f32()
        .unwrap()
        .iter()
        .take(4)
        .copied()
        .collect();
    insta::assert_snapshot!("init_lenet5_seed0_conv1_weight", format!("{first:?}"));
}

#[test]
fn init_values_by_kind() {
    let g = spec("mini_resnet");
    let w = Weights::init(&g, 7);
    let all = |path: &str, x: f32| {
        let v = w.get(&g, path).unwrap().as_f32().unwrap();
        assert!(v.iter().all(|&y| y == x), "{path}");
    };
    all("bn1.weight", 1.0);
    all("bn1.bias", 0.0);
    all("bn1.running_mean", 0.0);
    all("bn1.running_var", 1.0);
    all("fc.bias", 0.0);
    assert_eq!(
        w.get(&g, "bn1.num_batches_tracked").unwrap(),
        &Value::I64(ArrayD::zeros(IxDyn(&[])))
    );
    // A layer's values depend on its path and the seed, not on the rest of the model.
    let conv1 = w.get(&g, "conv1.weight").unwrap();
    let g2 = load_str(
        "other.net",
        "model other() { input x: [3, 16, 16]; conv1: conv(8, 3, pad=1, bias=false) }",
        &Options::default(),
    )
    .unwrap()
    .graph;
    assert_eq!(
        Weights::init(&g2, 7).get(&g2, "conv1.weight").unwrap(),
        conv1
    );
    // Fixed weights come from the spec.
    let g = spec("edge_detect");
    let w = Weights::init(&g, 7);
    assert_eq!(
        w.values[0]
            .as_f32()
            .unwrap()
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        g.params[0].fixed.clone().unwrap()
    );
}

#[test]
fn init_has_he_statistics() {
    // resnet18's layer4 convolutions: 512 × 512 × 3 × 3 = 2.4M values, fan_in 4608.
    let g = spec("resnet18");
    let w = Weights::init(&g, 3);
    for (path, fan_in) in [
        ("layer4.1.conv2.weight", 4608.0),
        ("fc.weight", 512.0),
        ("conv1.weight", 147.0),
    ] {
        let a = w.get(&g, path).unwrap().as_f32().unwrap();
        let n = a.len() as f64;
        let mean = a.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        let target = (2.0f64 / fan_in).sqrt();
        let tol = if n > 1e6 { 0.01 } else { 0.05 };
        assert!(
            (var.sqrt() / target - 1.0).abs() < tol,
            "{path}: std {} vs {target}",
            var.sqrt()
        );
        assert!(mean.abs() < 4.0 * target / n.sqrt(), "{path}: mean {mean}");
        // Normal, not uniform: about 4.6% of values beyond 2 std.
        let tails = a
            .iter()
            .filter(|&&x| (x as f64).abs() > 2.0 * target)
            .count() as f64
            / n;
        assert!((tails - 0.0455).abs() < 0.01, "{path}: tails {tails}");
    }
}

#[test]
fn init_saves_and_loads() {
    let dir = TempDir::new("initsave");
    let g = spec("mini_inception");
    let w = Weights::init(&g, 5);
    let path = dir.join("init.safetensors");
    w.save(&path, &g).unwrap();
    assert_eq!(Weights::load(&path, &g).unwrap(), w);
}

// ---------------------------------------------------------------------------------------------
// .npy

#[test]
fn reference_arrays_read() {
    let shapes: HashMap<&str, [usize; 4]> = HashMap::from([
        ("lenet5", [4, 1, 28, 28]),
        ("mini_resnet", [4, 3, 16, 16]),
        ("mini_inception", [4, 3, 15, 15]),
    ]);
    for model in MODELS {
        let x = npy::read_f32(reference(model, "input.npy")).unwrap();
        assert_eq!(x.shape(), shapes[model]);
        assert!(x.iter().all(|v| v.is_finite()));
        // The input matches the spec's per-sample shape.
        assert_eq!(&x.shape()[1..], spec(model).inputs[0].shape.as_slice());
        let y = npy::read_i64(reference(model, "labels.npy")).unwrap();
        assert_eq!(y.shape(), [4]);
        assert!(y.iter().all(|&c| (0..10).contains(&c)), "{model}: {y}");
        for f in ["eval_output.npy", "train_output.npy"] {
            assert_eq!(npy::read_f32(reference(model, f)).unwrap().shape(), [4, 10]);
        }
    }
    // The wrong element type says which.
    let e = npy::read_f32(reference("lenet5", "labels.npy")).unwrap_err();
    assert!(e.message.contains("int64 (`<i8`)"), "{e}");
    let e = npy::read_i64(reference("lenet5", "input.npy")).unwrap_err();
    assert!(e.message.contains("float32 (`<f4`)"), "{e}");
}

#[test]
fn npy_round_trips() {
    let dir = TempDir::new("npy");
    for shape in [vec![], vec![0], vec![5], vec![2, 3, 4], vec![1, 1, 1, 1, 2]] {
        let n: usize = shape.iter().product();
        let a = ArrayD::from_shape_vec(
            IxDyn(&shape),
            (0..n).map(|i| i as f32 * 0.5 - 1.0).collect(),
        )
        .unwrap();
        let p = dir.join("a.npy");
        npy::write_f32(&p, &a).unwrap();
        assert_eq!(npy::read_f32(&p).unwrap(), a, "{shape:?}");
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!((bytes.len() - 4 * n) % 64, 0);
    }
    // A transposed (non-C-layout) array is written in logical order.
    let a = ArrayD::from_shape_vec(IxDyn(&[2, 3]), (0..6).map(|i| i as f32).collect()).unwrap();
    let t = a.t().to_owned().into_dyn();
    let at = a.clone().reversed_axes();
    let p = dir.join("t.npy");
    npy::write_f32(&p, &at).unwrap();
    assert_eq!(npy::read_f32(&p).unwrap(), t);
    // Byte-identical to numpy for the reference output.
    let x = npy::read_f32(reference("lenet5", "eval_output.npy")).unwrap();
    let p = dir.join("eval.npy");
    npy::write_f32(&p, &x).unwrap();
    assert_eq!(
        std::fs::read(&p).unwrap(),
        std::fs::read(reference("lenet5", "eval_output.npy")).unwrap()
    );
    assert_eq!(dir.files(), ["a.npy", "eval.npy", "t.npy"]);
}

/// A `.npy` file with header dict `dict` (version `major`) followed by `data`.
fn npy_bytes(major: u8, dict: &str, data: &[u8]) -> Vec<u8> {
    let mut v = b"\x93NUMPY".to_vec();
    v.push(major);
    v.push(0);
    let prefix = if major == 1 { 10 } else { 12 };
    let total = (prefix + dict.len() + 1).next_multiple_of(64);
    let hlen = total - prefix;
    if major == 1 {
        v.extend_from_slice(&(hlen as u16).to_le_bytes());
    } else {
        v.extend_from_slice(&(hlen as u32).to_le_bytes());
    }
    v.extend_from_slice(dict.as_bytes());
    v.resize(total - 1, b' ');
    v.push(b'\n');
    v.extend_from_slice(data);
    v
}

#[test]
fn npy_versions_and_conversions() {
    let dir = TempDir::new("npyv");
    let p = dir.join("x.npy");
    let f64s: Vec<u8> = [1.5f64, -2.0, 3.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    for major in [2, 3] {
        std::fs::write(
            &p,
            npy_bytes(
                major,
                "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }",
                &f64s,
            ),
        )
        .unwrap();
        assert_eq!(
            npy::read_f32(&p).unwrap().as_slice().unwrap(),
            [1.5, -2.0, 3.0]
        );
    }
    let i32s: Vec<u8> = [3i32, -1].iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(
        &p,
        npy_bytes(
            1,
            "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }",
            &i32s,
        ),
    )
    .unwrap();
    assert_eq!(npy::read_i64(&p).unwrap().as_slice().unwrap(), [3, -1]);
    std::fs::write(
        &p,
        npy_bytes(
            1,
            "{'descr': '|u1', 'fortran_order': False, 'shape': (2,), }",
            &[200, 7],
        ),
    )
    .unwrap();
    assert_eq!(npy::read_i64(&p).unwrap().as_slice().unwrap(), [200, 7]);
}

#[test]
fn bad_npy_files_give_clear_errors() {
    let dir = TempDir::new("npybad");
    let good = std::fs::read(reference("lenet5", "labels.npy")).unwrap();
    let f4 = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }";
    let mut out = Vec::new();
    let mut case = |name: &str, bytes: Vec<u8>| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        let e = if name.starts_with("i64") {
            npy::read_i64(&p).unwrap_err()
        } else {
            npy::read_f32(&p).unwrap_err()
        };
        out.push(dir.show(&e));
    };
    case("i64_truncated.npy", good[..good.len() - 3].to_vec());
    case("i64_extra.npy", [good.as_slice(), &[0; 8]].concat());
    case("i64_cut_in_header.npy", good[..40].to_vec());
    case("bad_magic.npy", b"\x93NUMPX\x01\x00".to_vec());
    case("empty.npy", Vec::new());
    case("npz.npy", b"PK\x03\x04\x14\x00\x00\x00".to_vec());
    case("version9.npy", npy_bytes(9, f4, &[0; 16]));
    case(
        "bad_header.npy",
        npy_bytes(
            1,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2}",
            &[0; 16],
        ),
    );
    case("not_a_dict.npy", npy_bytes(1, "hello", &[0; 16]));
    case(
        "no_shape.npy",
        npy_bytes(1, "{'descr': '<f4', 'fortran_order': False}", &[0; 16]),
    );
    case(
        "negative.npy",
        npy_bytes(
            1,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 2), }",
            &[0; 16],
        ),
    );
    case(
        "fortran.npy",
        npy_bytes(
            1,
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
            &[0; 16],
        ),
    );
    case(
        "big_endian.npy",
        npy_bytes(
            1,
            "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 2), }",
            &[0; 16],
        ),
    );
    case(
        "half.npy",
        npy_bytes(
            1,
            "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 2), }",
            &[0; 8],
        ),
    );
    case(
        "strings.npy",
        npy_bytes(
            1,
            "{'descr': '<U5', 'fortran_order': False, 'shape': (2, 2), }",
            &[0; 80],
        ),
    );
    case(
        "structured.npy",
        npy_bytes(
            1,
            "{'descr': [('x', '<f4'), ('y', '<f4')], 'fortran_order': False, 'shape': (2,), }",
            &[0; 16],
        ),
    );
    // Huge declared shapes: refused from the file length, without allocating.
    case(
        "huge.npy",
        npy_bytes(
            1,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000, 100000), }",
            &[0; 16],
        ),
    );
    case(
        "overflow.npy",
        npy_bytes(
            1,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }",
            &[0; 16],
        ),
    );
    let mut huge_header = b"\x93NUMPY\x02\x00".to_vec();
    huge_header.extend_from_slice(&u32::MAX.to_le_bytes());
    case("huge_header.npy", huge_header);
    out.push(dir.show(&npy::read_f32(dir.join("missing.npy")).unwrap_err()));
    insta::assert_snapshot!("bad_npy_files", out.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Images

fn input(shape: [usize; 3], mean: &[f64], std: &[f64]) -> InputInfo {
    InputInfo {
        name: "image".into(),
        node: 0,
        shape: shape.to_vec(),
        mean: mean.to_vec(),
        std: std.to_vec(),
    }
}

#[test]
fn grayscale_png_as_lenet5_input() {
    let dir = TempDir::new("img_gray");
    let p = dir.join("digit.png");
    let img = image::GrayImage::from_fn(28, 28, |x, y| image::Luma([((x * 9 + y) % 256) as u8]));
    img.save(&p).unwrap();
    let info = &spec("lenet5").inputs[0];
    let x = load_image(&p, info).unwrap();
    assert_eq!(x.shape(), [1, 28, 28]);
    // Same size: no resampling; scaled to [0, 1] then normalized with the spec's mean/std.
    for (y, xx) in [(0, 0), (3, 5), (27, 27)] {
        let raw = ((xx * 9 + y) % 256) as f32 / 255.0;
        let want = (raw - 0.2860) / 0.3530;
        assert!((x[[0, y, xx]] - want).abs() < 1e-6);
    }
}

#[test]
fn rgb_and_alpha_and_luma() {
    let dir = TempDir::new("img_rgb");
    // RGBA: alpha is dropped.
    let p = dir.join("rgba.png");
    image::RgbaImage::from_pixel(4, 4, image::Rgba([255, 128, 0, 10]))
        .save(&p)
        .unwrap();
    let x = load_image(&p, &input([3, 4, 4], &[], &[])).unwrap();
    assert_eq!(x.shape(), [3, 4, 4]);
    assert_eq!(x[[0, 1, 1]], 1.0);
    assert_eq!(x[[1, 1, 1]], 128.0 / 255.0);
    assert_eq!(x[[2, 1, 1]], 0.0);
    // One channel from RGB: PIL's ITU-R 601-2 luma, (255*299 + 128*587 + 0*114)/1000 ≈ 151.
    let g = load_image(&p, &input([1, 4, 4], &[], &[])).unwrap();
    assert_eq!(g[[0, 0, 0]], 151.0 / 255.0);
    // Three channels from grayscale: replicated. Per-channel mean/std.
    let p = dir.join("gray.png");
    image::GrayImage::from_pixel(2, 2, image::Luma([51]))
        .save(&p)
        .unwrap();
    let x = load_image(&p, &input([3, 2, 2], &[0.1, 0.2, 0.3], &[0.5, 0.5, 0.25])).unwrap();
    let v = 51.0f32 / 255.0;
    assert!((x[[0, 0, 0]] - (v - 0.1) / 0.5).abs() < 1e-6);
    assert!((x[[1, 1, 1]] - (v - 0.2) / 0.5).abs() < 1e-6);
    assert!((x[[2, 0, 1]] - (v - 0.3) / 0.25).abs() < 1e-6);
}

#[test]
fn resize_keeps_aspect_and_crops_the_center() {
    let dir = TempDir::new("img_resize");
    // 40×20 (landscape): white in the middle, black at the left and right ends. Into 10×10:
    // resized to 20×10 and the center 10×10 cropped: all white, no black is stretched in.
    let p = dir.join("wide.png");
    image::GrayImage::from_fn(40, 20, |x, _| {
        image::Luma([if (8..32).contains(&x) { 255 } else { 0 }])
    })
    .save(&p)
    .unwrap();
    let x = load_image(&p, &input([1, 10, 10], &[], &[])).unwrap();
    assert_eq!(x.shape(), [1, 10, 10]);
    assert!(x.iter().all(|&v| v > 0.99), "{x}");
    // Same aspect ratio: plain resize, a uniform image stays uniform.
    let p = dir.join("big.png");
    image::RgbImage::from_pixel(64, 64, image::Rgb([10, 20, 30]))
        .save(&p)
        .unwrap();
    let x = load_image(&p, &input([3, 16, 16], &[], &[])).unwrap();
    assert_eq!(x.shape(), [3, 16, 16]);
    assert!(
        x.slice(ndarray::s![2, .., ..])
            .iter()
            .all(|&v| (v - 30.0 / 255.0).abs() < 1e-6)
    );
    // Upscaling a portrait image into a non-square target.
    let p = dir.join("tall.png");
    image::GrayImage::from_pixel(3, 9, image::Luma([200]))
        .save(&p)
        .unwrap();
    let x = load_image(&p, &input([1, 8, 6], &[], &[])).unwrap();
    assert_eq!(x.shape(), [1, 8, 6]);
    assert!(x.iter().all(|&v| (v - 200.0 / 255.0).abs() < 1e-6));
}

#[test]
fn jpeg_loads() {
    let dir = TempDir::new("img_jpeg");
    let p = dir.join("photo.jpg");
    image::RgbImage::from_pixel(32, 24, image::Rgb([120, 60, 200]))
        .save(&p)
        .unwrap();
    let x = load_image(&p, &input([3, 16, 16], &[], &[])).unwrap();
    assert_eq!(x.shape(), [3, 16, 16]);
    // Lossy, but a flat color survives closely.
    assert!((x[[0, 8, 8]] - 120.0 / 255.0).abs() < 0.03);
    assert!((x[[2, 8, 8]] - 200.0 / 255.0).abs() < 0.03);
}

#[test]
fn absurd_image_sizes_give_an_error_or_a_quick_result() {
    // A 10 KB PNG of 10,000,000 × 1 pixels, and one of 1,000,000 × 1: refused from the
    // header, naming the size (they were resize requests of 280,000,000 × 28 and 28,000,000 ×
    // 28 pixels: gigabytes, or 95 s).
    let dir = TempDir::new("img_absurd");
    let info = input([1, 28, 28], &[], &[]);
    for w in [10_000_000u32, 1_000_000] {
        let p = dir.join(&format!("{w}.png"));
        image::GrayImage::from_fn(w, 1, |x, _| image::Luma([(x / 4096 % 2) as u8 * 200]))
            .save(&p)
            .unwrap();
        assert!(std::fs::metadata(&p).unwrap().len() < 100_000);
        let e = load_image(&p, &info).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{w}×1 pixels")) && e.contains("65535"),
            "{e}"
        );
    }
    // 60,000 × 1 decodes; only the middle of it, which survives the center crop, is scaled.
    let p = dir.join("60000.png");
    image::GrayImage::from_fn(60_000, 1, |x, _| {
        image::Luma([if (29_000..31_000).contains(&x) {
            255
        } else {
            0
        }])
    })
    .save(&p)
    .unwrap();
    let x = load_image(&p, &info).unwrap();
    assert_eq!(x.shape(), [1, 28, 28]);
    assert!(x.iter().all(|&v| v == 1.0), "{x:?}");
}

#[test]
fn bad_images_give_clear_errors() {
    let dir = TempDir::new("img_bad");
    let good = dir.join("good.png");
    image::GrayImage::from_fn(28, 28, |x, y| image::Luma([(x * y) as u8]))
        .save(&good)
        .unwrap();
    let png = std::fs::read(&good).unwrap();
    let jpg_path = dir.join("good.jpg");
    image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 7]))
        .save(&jpg_path)
        .unwrap();
    let jpg = std::fs::read(&jpg_path).unwrap();
    let info = input([1, 28, 28], &[], &[]);
    let mut out = Vec::new();
    let mut case = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        out.push(dir.show(&load_image(&p, &info).unwrap_err()));
    };
    case("truncated.png", &png[..png.len() / 2]);
    case("truncated.jpg", &jpg[..jpg.len() / 3]);
    case("text.png", b"this is not an image");
    case("empty.png", b"");
    case("anim.gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;");
    let mut corrupt = png.clone();
    for b in &mut corrupt[40..60] {
        *b ^= 0x5a;
    }
    case("corrupt.png", &corrupt);
    out.push(dir.show(&load_image(dir.join("missing.png"), &info).unwrap_err()));
    out.push(dir.show(&load_image(&good, &input([4, 28, 28], &[], &[])).unwrap_err()));
    out.push(dir.show(&load_image(&good, &input([3, 28, 28], &[0.5, 0.5], &[])).unwrap_err()));
    insta::assert_snapshot!("bad_images", out.join("\n"));
}
