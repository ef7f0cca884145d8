//! The data layer: loaders for every format on small synthetic files (round trips and the
//! errors for malformed files), the bundled Fashion-MNIST subset, and the loader's
//! determinism (shuffles, augmentation, prefetching).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use netc::data::rng::Rng;
use netc::data::{
    self, Batch, DataError, Dataset, Loader, LoaderOptions, Normalize, Pixels, cifar, idx,
};
use netc::train_config::Augment;

mod cli_support;
use cli_support::{TempDir, input};

fn gz(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(path, bytes).unwrap();
}

fn u8s(p: &Pixels) -> &[u8] {
    match p {
        Pixels::U8(v) => v,
        _ => panic!("expected bytes"),
    }
}

fn f32s(p: &Pixels) -> &[f32] {
    match p {
        Pixels::F32(v) => v,
        _ => panic!("expected floats in memory"),
    }
}

// ---------------------------------------------------------------------------------------------
// IDX

/// Synthetic IDX split: `n_train` and `n_test` images of 3×4 with labels `i % 4`.
struct IdxSet {
    train_images: Vec<u8>,
    train_labels: Vec<u8>,
    test_images: Vec<u8>,
    test_labels: Vec<u8>,
}

fn idx_set(n_train: usize, n_test: usize) -> IdxSet {
    let px = |n: usize, salt: usize| (0..n * 12).map(|i| ((i * 7 + salt) % 256) as u8).collect();
    let lb = |n: usize| (0..n).map(|i| (i % 4) as u8).collect();
    IdxSet {
        train_images: px(n_train, 0),
        train_labels: lb(n_train),
        test_images: px(n_test, 3),
        test_labels: lb(n_test),
    }
}

/// Writes the four files into `dir` with `name(split, kind, idx)`, gzip'd when `zip`.
fn write_idx(dir: &Path, s: &IdxSet, zip: bool, name: impl Fn(&str, &str, &str) -> String) {
    let files = [
        ("train", "images", "idx3", &s.train_images, true),
        ("train", "labels", "idx1", &s.train_labels, false),
        ("t10k", "images", "idx3", &s.test_images, true),
        ("t10k", "labels", "idx1", &s.test_labels, false),
    ];
    for (split, kind, ix, data, images) in files {
        let bytes = if images {
            idx::encode(&[(data.len() / 12) as u32, 3, 4], data)
        } else {
            idx::encode(&[data.len() as u32], data)
        };
        let bytes = if zip { gz(&bytes) } else { bytes };
        write(&dir.join(name(split, kind, ix)), &bytes);
    }
}

fn canonical(zip: bool) -> impl Fn(&str, &str, &str) -> String {
    move |s, k, i| format!("{s}-{k}-{i}-ubyte{}", if zip { ".gz" } else { "" })
}

#[test]
fn idx_raw_and_gz_round_trip() {
    let set = idx_set(10, 6);
    for zip in [false, true] {
        let t = TempDir::new("idx");
        write_idx(&t.0, &set, zip, canonical(zip));
        let split = data::open(t.path(), &input([1, 3, 4])).unwrap();
        assert_eq!(split.train.len(), 10);
        assert_eq!(split.test.len(), 6);
        assert_eq!(split.train.sample_shape, [1, 3, 4]);
        assert_eq!(u8s(&split.train.pixels), set.train_images.as_slice());
        assert_eq!(u8s(&split.test.pixels), set.test_images.as_slice());
        let labels: Vec<i64> = set.train_labels.iter().map(|&l| l as i64).collect();
        assert_eq!(split.train.labels, labels);
        assert_eq!(split.train.classes, 4);
        assert_eq!(split.test.classes, 4);
    }
}

#[test]
fn idx_other_namings_and_raw_subfolder() {
    let set = idx_set(5, 5);
    // `train-images.idx3-ubyte` (a dot before idx3), `test` for `t10k`, in `raw/`.
    let t = TempDir::new("idx-names");
    write_idx(&t.join("raw"), &set, false, |s, k, i| {
        let s = if s == "t10k" { "test" } else { s };
        format!("{s}-{k}.{i}-ubyte")
    });
    let split = data::open(t.path(), &input([1, 3, 4])).unwrap();
    assert_eq!((split.train.len(), split.test.len()), (5, 5));
    // Raw and gzip'd files mixed.
    let t = TempDir::new("idx-mixed");
    write_idx(&t.0, &set, false, canonical(false));
    std::fs::remove_file(t.join("t10k-labels-idx1-ubyte")).unwrap();
    write(
        &t.join("t10k-labels-idx1-ubyte.gz"),
        &gz(&idx::encode(&[5], &set.test_labels)),
    );
    assert!(data::open(t.path(), &input([1, 3, 4])).is_ok());
}

/// The error, checked to name `file` and to contain every one of `words`.
fn expect_err(r: Result<data::Split, DataError>, file: &str, words: &[&str]) -> DataError {
    let e = r.unwrap_err();
    let text = e.to_string();
    assert!(text.contains(file), "the error should name {file}: {text}");
    for w in words {
        assert!(text.contains(w), "the error should say `{w}`: {text}");
    }
    e
}

#[test]
fn idx_errors_name_the_file() {
    let set = idx_set(6, 4);
    let shape = input([1, 3, 4]);

    // Bad magic.
    let t = TempDir::new("idx-magic");
    write_idx(&t.0, &set, false, canonical(false));
    let mut b = std::fs::read(t.join("train-images-idx3-ubyte")).unwrap();
    b[0] = 0x12;
    write(&t.join("train-images-idx3-ubyte"), &b);
    expect_err(
        data::open(t.path(), &shape),
        "train-images-idx3-ubyte",
        &["not an IDX file", "bad magic"],
    );

    // Truncated, raw and gzip'd.
    for zip in [false, true] {
        let t = TempDir::new("idx-trunc");
        write_idx(&t.0, &set, zip, canonical(zip));
        let name = if zip {
            "t10k-images-idx3-ubyte.gz"
        } else {
            "t10k-images-idx3-ubyte"
        };
        let full = idx::encode(&[4, 3, 4], &set.test_images);
        let cut = &full[..full.len() - 5];
        write(&t.join(name), &if zip { gz(cut) } else { cut.to_vec() });
        expect_err(data::open(t.path(), &shape), name, &["truncated"]);
    }

    // A gzip'd header declaring more than the data limit (2^48 bytes): refused from the
    // header, whatever the stream would inflate to.
    let t = TempDir::new("idx-gzhuge");
    write_idx(&t.0, &set, true, canonical(true));
    let mut huge = idx::encode(&[1, 1, 1], &[0]);
    huge[4..16].copy_from_slice(&[0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0]);
    write(&t.join("train-images-idx3-ubyte.gz"), &gz(&huge));
    expect_err(
        data::open(t.path(), &shape),
        "train-images-idx3-ubyte.gz",
        &["281474976710656 bytes", "64 GiB limit"],
    );

    // A truncated gzip stream.
    let t = TempDir::new("idx-gzcut");
    write_idx(&t.0, &set, true, canonical(true));
    let b = std::fs::read(t.join("train-labels-idx1-ubyte.gz")).unwrap();
    write(&t.join("train-labels-idx1-ubyte.gz"), &b[..b.len() / 2]);
    expect_err(
        data::open(t.path(), &shape),
        "train-labels-idx1-ubyte.gz",
        &["corrupt gzip data"],
    );

    // Count mismatch: 5 labels for 6 images.
    let t = TempDir::new("idx-count");
    write_idx(&t.0, &set, false, canonical(false));
    write(
        &t.join("train-labels-idx1-ubyte"),
        &idx::encode(&[5], &set.train_labels[..5]),
    );
    expect_err(
        data::open(t.path(), &shape),
        "train-labels-idx1-ubyte",
        &["5 labels", "6 images"],
    );

    // Extra bytes after the data.
    let t = TempDir::new("idx-extra");
    write_idx(&t.0, &set, false, canonical(false));
    let mut b = idx::encode(&[6], &set.train_labels);
    b.push(0);
    write(&t.join("train-labels-idx1-ubyte"), &b);
    expect_err(
        data::open(t.path(), &shape),
        "train-labels-idx1-ubyte",
        &["1 more bytes"],
    );

    // Wrong type code and wrong rank.
    let t = TempDir::new("idx-type");
    write_idx(&t.0, &set, false, canonical(false));
    let mut b = idx::encode(&[6, 3, 4], &set.train_images);
    b[2] = 0x0d;
    write(&t.join("train-images-idx3-ubyte"), &b);
    expect_err(
        data::open(t.path(), &shape),
        "train-images-idx3-ubyte",
        &["float32"],
    );
    write(
        &t.join("train-images-idx3-ubyte"),
        &idx::encode(&[6, 12], &set.train_images),
    );
    expect_err(
        data::open(t.path(), &shape),
        "train-images-idx3-ubyte",
        &["3 dimensions"],
    );

    // A missing file.
    let t = TempDir::new("idx-missing");
    write_idx(&t.0, &set, false, canonical(false));
    std::fs::remove_file(t.join("t10k-labels-idx1-ubyte")).unwrap();
    expect_err(
        data::open(t.path(), &shape),
        "t10k-labels-idx1-ubyte",
        &["missing"],
    );

    // A single IDX file instead of its directory.
    let t = TempDir::new("idx-single");
    write_idx(&t.0, &set, false, canonical(false));
    let e = expect_err(
        data::open(t.join("train-images-idx3-ubyte").to_str().unwrap(), &shape),
        "train-images-idx3-ubyte",
        &["not a training/test split"],
    );
    assert!(e.help.unwrap().contains(t.path()));
}

#[test]
fn shape_mismatch_says_both_shapes() {
    let t = TempDir::new("idx-shape");
    write_idx(&t.0, &idx_set(3, 3), true, canonical(true));
    let e = data::open(t.path(), &input([3, 32, 32])).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("the data has 1×3×4 images but the model's input `image` is 3×32×32"),
        "{text}"
    );
    assert!(e.help.unwrap().contains("[1, 3, 4]"));
    // A model input that is not an image.
    let mut i = input([1, 3, 4]);
    i.shape = vec![10];
    assert!(
        data::open(t.path(), &i)
            .unwrap_err()
            .to_string()
            .contains("[C, H, W]")
    );
}

#[test]
fn unknown_sources_and_empty_dirs() {
    let e = data::open("/nonexistent/netc-data-dir", &input([1, 28, 28])).unwrap_err();
    assert!(e.to_string().contains("no such file or directory"), "{e}");
    assert!(e.help.unwrap().contains("bundled"));
    let t = TempDir::new("empty");
    let e = data::open(t.path(), &input([1, 28, 28])).unwrap_err();
    assert!(e.to_string().contains("no training data found"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// CIFAR-10

/// CIFAR records: (label, 3072 pixel bytes).
type Records = Vec<(u8, Vec<u8>)>;

fn cifar_records(n: usize, salt: u8) -> Records {
    (0..n)
        .map(|i| {
            let px = (0..3072)
                .map(|j| (j as u8).wrapping_mul(3).wrapping_add(i as u8 ^ salt))
                .collect();
            ((i % 10) as u8, px)
        })
        .collect()
}

fn write_cifar(dir: &Path) -> (Records, Records) {
    let mut train = Vec::new();
    for k in 1..=5 {
        let r = cifar_records(3, k);
        write(&dir.join(format!("data_batch_{k}.bin")), &cifar::encode(&r));
        train.extend(r);
    }
    let test = cifar_records(4, 99);
    write(&dir.join("test_batch.bin"), &cifar::encode(&test));
    (train, test)
}

#[test]
fn cifar_synthetic_batches() {
    let t = TempDir::new("cifar");
    let (train, test) = write_cifar(&t.join("cifar-10-batches-bin"));
    let split = data::open(t.path(), &input([3, 32, 32])).unwrap();
    assert_eq!(split.train.len(), 15);
    assert_eq!(split.test.len(), 4);
    assert_eq!(split.train.sample_shape, [3, 32, 32]);
    assert_eq!(split.train.classes, 10);
    assert_eq!(split.train.class_names[3], "cat");
    let px: Vec<u8> = train.iter().flat_map(|r| r.1.clone()).collect();
    assert_eq!(u8s(&split.train.pixels), px.as_slice());
    let labels: Vec<i64> = test.iter().map(|r| r.0 as i64).collect();
    assert_eq!(split.test.labels, labels);
    // The batches folder itself works too.
    let split2 = data::open(
        t.join("cifar-10-batches-bin").to_str().unwrap(),
        &input([3, 32, 32]),
    )
    .unwrap();
    assert_eq!(split, split2);
}

#[test]
fn cifar_errors_name_the_file() {
    let shape = input([3, 32, 32]);
    let t = TempDir::new("cifar-bad");
    write_cifar(&t.0);
    let mut b = cifar::encode(&cifar_records(2, 0));
    b.pop();
    write(&t.join("data_batch_3.bin"), &b);
    expect_err(
        data::open(t.path(), &shape),
        "data_batch_3.bin",
        &["not a whole number of CIFAR-10 records"],
    );
    let mut r = cifar_records(2, 0);
    r[1].0 = 57;
    write(&t.join("data_batch_3.bin"), &cifar::encode(&r));
    expect_err(
        data::open(t.path(), &shape),
        "data_batch_3.bin",
        &["record 1 has label 57"],
    );
    std::fs::remove_file(t.join("data_batch_3.bin")).unwrap();
    expect_err(
        data::open(t.path(), &shape),
        "data_batch_3.bin",
        &["missing"],
    );
}

// ---------------------------------------------------------------------------------------------
// NPZ

/// A `.npy` file's bytes (version 1, C order).
fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let shape_text = match shape {
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
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

fn le<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

fn write_npz(path: &Path, members: &[(&str, Vec<u8>)], deflate: bool) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let opts = zip::write::SimpleFileOptions::default().compression_method(method);
    for (name, bytes) in members {
        z.start_file(*name, opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
}

#[test]
fn npz_train_and_test_files() {
    let t = TempDir::new("npz-dir");
    // uint8 NCHW images, int64 labels.
    let x: Vec<u8> = (0..5 * 2 * 3 * 3).map(|i| i as u8).collect();
    let y: Vec<i64> = vec![0, 1, 2, 1, 0];
    for (f, deflate) in [("train.npz", true), ("test.npz", false)] {
        write_npz(
            &t.join(f),
            &[
                ("x.npy", npy("|u1", &[5, 2, 3, 3], &x)),
                ("y.npy", npy("<i8", &[5], &le(&y, i64::to_le_bytes))),
            ],
            deflate,
        );
    }
    let split = data::open(t.path(), &input([2, 3, 3])).unwrap();
    assert_eq!(u8s(&split.train.pixels), x.as_slice());
    assert_eq!(split.test.labels, y);
    assert_eq!(split.train.classes, 3);
}

#[test]
fn npz_single_file_with_train_and_test_keys() {
    let t = TempDir::new("npz-keys");
    // float32 NHW images (one channel) written by the crate's npy writer, int32 labels.
    let xa = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[4, 2, 3]), |i| {
        (i[0] * 6 + i[1] * 3 + i[2]) as f32 * 0.5
    });
    netc::io::npy::write_f32(t.join("x.npy"), &xa).unwrap();
    let xb = std::fs::read(t.join("x.npy")).unwrap();
    let y: Vec<i32> = vec![3, 0, 1, 2];
    write_npz(
        &t.join("d.npz"),
        &[
            ("x_train.npy", xb.clone()),
            ("y_train.npy", npy("<i4", &[4], &le(&y, i32::to_le_bytes))),
            ("x_test.npy", xb),
            ("y_test.npy", npy("|u1", &[4, 1], &[1, 1, 0, 0])),
        ],
        true,
    );
    let split = data::open(t.join("d.npz").to_str().unwrap(), &input([1, 2, 3])).unwrap();
    assert_eq!(split.train.sample_shape, [1, 2, 3]);
    assert_eq!(f32s(&split.train.pixels), xa.as_slice().unwrap());
    assert_eq!(split.train.labels, vec![3, 0, 1, 2]);
    assert_eq!(split.test.labels, vec![1, 1, 0, 0]);
    assert_eq!((split.train.classes, split.test.classes), (4, 4));
}

#[test]
fn npz_single_x_y_holds_out_the_last_sixth() {
    let t = TempDir::new("npz-xy");
    let x: Vec<f64> = (0..12 * 4).map(|i| i as f64).collect();
    let y: Vec<i64> = (0..12).map(|i| i % 2).collect();
    write_npz(
        &t.join("all.npz"),
        &[
            (
                "x.npy",
                npy("<f8", &[12, 1, 2, 2], &le(&x, f64::to_le_bytes)),
            ),
            ("y.npy", npy("<i8", &[12], &le(&y, i64::to_le_bytes))),
        ],
        true,
    );
    let split = data::open(t.join("all.npz").to_str().unwrap(), &input([1, 2, 2])).unwrap();
    assert_eq!((split.train.len(), split.test.len()), (10, 2));
    assert_eq!(f32s(&split.test.pixels)[0], 40.0);
    assert_eq!(split.test.labels, vec![0, 1]);
}

#[test]
fn npz_channels_last_is_transposed() {
    let t = TempDir::new("npz-nhwc");
    // [N=2, H=2, W=2, C=3]
    let x: Vec<u8> = (0..24).collect();
    write_npz(
        &t.join("train.npz"),
        &[
            ("x.npy", npy("|u1", &[2, 2, 2, 3], &x)),
            ("y.npy", npy("|u1", &[2], &[0, 1])),
        ],
        false,
    );
    std::fs::copy(t.join("train.npz"), t.join("test.npz")).unwrap();
    let split = data::open(t.path(), &input([3, 2, 2])).unwrap();
    assert_eq!(split.train.sample_shape, [3, 2, 2]);
    // Sample 0, channel 0 is every third value: 0, 3, 6, 9.
    assert_eq!(&u8s(&split.train.pixels)[..4], &[0, 3, 6, 9]);
    assert_eq!(&u8s(&split.train.pixels)[4..8], &[1, 4, 7, 10]);
}

#[test]
fn npz_errors_name_the_member() {
    let shape = input([1, 2, 2]);
    let t = TempDir::new("npz-bad");
    let x = npy("|u1", &[3, 2, 2], &[0; 12]);
    let p = t.join("d.npz");
    let ps = p.to_str().unwrap();

    write_npz(&p, &[("x.npy", x.clone())], true);
    expect_err(data::open(ps, &shape), "d.npz", &["no `y`"]);

    write_npz(
        &p,
        &[
            ("x.npy", x.clone()),
            ("y.npy", npy("<f4", &[3], &le(&[0f32; 3], f32::to_le_bytes))),
        ],
        true,
    );
    expect_err(data::open(ps, &shape), "d.npz/y.npy", &["float32"]);

    write_npz(
        &p,
        &[("x.npy", x.clone()), ("y.npy", npy("|u1", &[2], &[0, 1]))],
        true,
    );
    expect_err(
        data::open(ps, &shape),
        "d.npz/y.npy",
        &["2 labels", "3 images"],
    );

    write_npz(
        &p,
        &[
            ("x.npy", x.clone()),
            (
                "y.npy",
                npy("<i8", &[3], &le(&[0i64, -1, 0], i64::to_le_bytes)),
            ),
        ],
        true,
    );
    expect_err(data::open(ps, &shape), "d.npz/y.npy", &["negative"]);

    let mut cut = x.clone();
    cut.truncate(cut.len() - 1);
    write_npz(
        &p,
        &[("x.npy", cut), ("y.npy", npy("|u1", &[3], &[0; 3]))],
        true,
    );
    expect_err(data::open(ps, &shape), "d.npz/x.npy", &["truncated"]);

    write_npz(&p, &[("a.npy", x.clone())], false);
    expect_err(data::open(ps, &shape), "d.npz", &["found `a`"]);

    write(&p, &x);
    expect_err(data::open(ps, &shape), "d.npz", &["a single .npy array"]);

    write(&p, b"hello");
    expect_err(data::open(ps, &shape), "d.npz", &["not an .npz file"]);

    // Too few samples to hold out a sixth.
    write_npz(
        &p,
        &[("x.npy", x), ("y.npy", npy("|u1", &[3], &[0; 3]))],
        true,
    );
    expect_err(data::open(ps, &shape), "d.npz", &["at least 6"]);
}

#[test]
fn npz_member_header_is_checked_before_its_data_are_inflated() {
    let t = TempDir::new("npz-stream");
    let p = t.join("d.npz");
    // `x.npy` declares 16 bytes of data but holds 64 MiB more (which deflate to 64 KiB), and
    // the archive's CRC of the member is wrong. Only a reader that inflates the whole member
    // reaches the CRC; one that reads the header first refuses the member before its data.
    let mut x = npy("|u1", &[1, 4, 4], &[0; 16]);
    x.resize(x.len() + (64 << 20), 0);
    write_npz(
        &p,
        &[("x.npy", x.clone()), ("y.npy", npy("|u1", &[1], &[0]))],
        true,
    );
    let crc = {
        let mut h = flate2::Crc::new();
        h.update(&x);
        h.sum().to_le_bytes()
    };
    let mut zip = std::fs::read(&p).unwrap();
    let mut patched = 0;
    for i in 0..zip.len() - 4 {
        if zip[i..i + 4] == crc {
            zip[i] ^= 0xff;
            patched += 1;
        }
    }
    assert_eq!(
        patched, 2,
        "the CRC is in the local header and the central directory"
    );
    write(&p, &zip);
    let e = expect_err(
        data::open(p.to_str().unwrap(), &input([1, 4, 4])),
        "d.npz/x.npy",
        &["extra bytes", "[1, 4, 4] uint8"],
    );
    assert!(!e.to_string().contains("checksum"), "{e}");
}

#[cfg(unix)]
#[test]
fn data_files_that_are_not_regular_files_are_refused() {
    let t = TempDir::new("fifo");
    let fifo = t.join("d.npz");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(ok.success());
    // A FIFO would block a reader forever (nothing writes to it); /dev/zero never ends.
    expect_err(
        data::open(fifo.to_str().unwrap(), &input([1, 4, 4])),
        "d.npz",
        &["FIFO", "regular files"],
    );
    expect_err(
        data::open("/dev/zero", &input([1, 4, 4])),
        "/dev/zero",
        &["character device"],
    );
    // Named like an IDX file, a FIFO is still reported as a FIFO (not as "a single data
    // file" to be replaced by its directory).
    let idx_fifo = t.join("train-images-idx3-ubyte");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&idx_fifo)
            .status()
            .unwrap()
            .success()
    );
    expect_err(
        data::open(idx_fifo.to_str().unwrap(), &input([1, 4, 4])),
        "train-images-idx3-ubyte",
        &["FIFO", "regular files"],
    );
}

#[test]
fn huge_images_in_a_folder_are_refused_from_their_header() {
    // 10,000,000 × 1 pixels in a 10 KB PNG: refused by its header's size, at once.
    let t = TempDir::new("wide-png");
    png(&t.join("a/0.png"), 4, 4, |_, _| 0);
    png(&t.join("b/0.png"), 10_000_000, 1, |x, _| {
        (x / 4096 % 2) as u8 * 200
    });
    let e = expect_err(
        data::open(t.path(), &input([1, 28, 28])),
        "0.png",
        &["10000000×1", "65535"],
    );
    assert!(e.to_string().contains("b/0.png"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Image folders

fn png(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)]))
        .save(path)
        .unwrap();
}

#[test]
fn image_folders_with_train_and_test() {
    let t = TempDir::new("folders");
    // Classes sorted by name: ant (0), bee (1), cat (2).
    for (ci, class) in ["cat", "ant", "bee"].iter().enumerate() {
        for k in 0..2 {
            png(&t.join(&format!("train/{class}/{k}.png")), 4, 4, |x, y| {
                (ci * 80 + k * 10) as u8 + (x + 4 * y) as u8
            });
        }
    }
    png(&t.join("test/bee/a.png"), 4, 4, |_, _| 200);
    // Ignored: other files, hidden files.
    write(&t.join("train/ant/notes.txt"), b"not an image");
    write(&t.join("train/.hidden/x.png"), b"junk");

    let split = data::open(t.path(), &input([1, 4, 4])).unwrap();
    assert_eq!(split.train.class_names, vec!["ant", "bee", "cat"]);
    assert_eq!(split.train.labels, vec![0, 0, 1, 1, 2, 2]);
    assert_eq!(split.test.labels, vec![1]);
    assert_eq!(split.test.classes, 3);
    // The first training image is ant/0.png: ci = 1 (ant was written second), k = 0.
    let first: Vec<u8> = (0..16).map(|i| 80 + i as u8).collect();
    assert_eq!(&u8s(&split.train.pixels)[..16], first.as_slice());
    assert!(u8s(&split.test.pixels).iter().all(|&p| p == 200));

    // Resized to the model's input; replicated to 3 channels.
    let split = data::open(t.path(), &input([3, 2, 2])).unwrap();
    assert_eq!(split.train.sample_shape, [3, 2, 2]);
    assert_eq!(u8s(&split.train.pixels).len(), 6 * 12);

    // A test class the training set lacks.
    png(&t.join("test/dog/a.png"), 4, 4, |_, _| 0);
    expect_err(
        data::open(t.path(), &input([1, 4, 4])),
        "dog",
        &["no training folder"],
    );
    std::fs::remove_dir_all(t.join("test/dog")).unwrap();

    // A corrupt image names the file.
    write(&t.join("train/cat/bad.png"), b"\x89PNG\r\n\x1a\nxx");
    expect_err(data::open(t.path(), &input([1, 4, 4])), "bad.png", &["PNG"]);
}

#[test]
fn image_folders_without_test_hold_out_a_sixth() {
    let t = TempDir::new("holdout");
    for class in ["a", "b"] {
        for k in 0..12 {
            png(&t.join(&format!("{class}/{k:02}.png")), 3, 3, |_, _| {
                k as u8
            });
        }
    }
    let split = data::open(t.path(), &input([1, 3, 3])).unwrap();
    assert_eq!((split.train.len(), split.test.len()), (20, 4));
    assert_eq!(split.test.class_counts(), vec![2, 2]);
    assert_eq!(split.train.class_counts(), vec![10, 10]);
    // Deterministic.
    let again = data::open(t.path(), &input([1, 3, 3])).unwrap();
    assert_eq!(split, again);
}

// ---------------------------------------------------------------------------------------------
// Loader

fn synthetic(n: usize, shape: [usize; 3]) -> Arc<Dataset> {
    let len: usize = shape.iter().product();
    let mut rng = Rng::new(42);
    Arc::new(Dataset {
        name: "synthetic".into(),
        sample_shape: shape.to_vec(),
        pixels: Pixels::U8((0..n * len).map(|_| rng.below(256) as u8).collect()),
        labels: (0..n).map(|i| (i % 10) as i64).collect(),
        classes: 10,
        class_names: vec![],
        fields: Vec::new(),
        objects: Vec::new(),
    })
}

fn all_augments() -> Vec<Augment> {
    vec![
        Augment::RandomCrop { pad: 2, size: None },
        Augment::VFlip { p: 0.3 },
        Augment::RandomResizedCrop {
            scale: [0.5, 1.0],
            ratio: [0.75, 1.33],
        },
        Augment::Mirror { p: 0.5 },
        Augment::Rotate { degrees: 15.0 },
        Augment::ColorShift {
            brightness: 0.3,
            contrast: 0.3,
            saturation: 0.3,
            hue: 0.1,
        },
        Augment::Affine {
            degrees: 5.0,
            translate: [0.1, 0.1],
            scale: [0.9, 1.1],
            shear: [-5.0, 5.0, 0.0, 0.0],
        },
        Augment::PcaLighting { std: 0.1 },
    ]
}

fn orders(l: &Loader, epoch: u64) -> Vec<usize> {
    l.epoch(epoch).flat_map(|b| b.indices).collect()
}

#[test]
fn shuffles_are_seeded() {
    let d = synthetic(50, [1, 4, 4]);
    let mk = |seed| {
        Loader::new(
            d.clone(),
            Normalize::none(1),
            LoaderOptions::train(8, seed, vec![]),
        )
        .unwrap()
    };
    let (a, a2, b) = (mk(1), mk(1), mk(2));
    assert_eq!(orders(&a, 0), orders(&a2, 0));
    assert_ne!(orders(&a, 0), orders(&b, 0));
    assert_ne!(orders(&a, 0), orders(&a, 1));
    // drop_last: 6 batches of 8; every sample at most once.
    let o = orders(&a, 3);
    assert_eq!(o.len(), 48);
    let mut s = o.clone();
    s.sort();
    s.dedup();
    assert_eq!(s.len(), 48);
    // Evaluation: dataset order, all samples, the last batch shorter.
    let e = Loader::new(d.clone(), Normalize::none(1), LoaderOptions::eval(8)).unwrap();
    let lens: Vec<usize> = e.epoch(0).map(|b| b.len).collect();
    assert_eq!(lens, vec![8, 8, 8, 8, 8, 8, 2]);
    assert_eq!(orders(&e, 5), (0..50).collect::<Vec<_>>());
}

fn bits(batches: &[Batch]) -> Vec<(Vec<u32>, Vec<i64>)> {
    batches
        .iter()
        .map(|b| (b.x.iter().map(|v| v.to_bits()).collect(), b.labels.clone()))
        .collect()
}

#[test]
fn prefetch_is_bit_identical_to_synchronous() {
    for shape in [[1, 6, 6], [3, 5, 7]] {
        let d = synthetic(37, shape);
        let norm = Normalize::new(&[0.3], &[0.4], shape[0]).unwrap();
        let l = Loader::new(d, norm, LoaderOptions::train(5, 9, all_augments())).unwrap();
        for epoch in 0..3 {
            let sync: Vec<Batch> = l.epoch_sync(epoch).collect();
            let pre: Vec<Batch> = l.epoch_prefetched(epoch).collect();
            assert_eq!(sync.len(), 7);
            assert_eq!(bits(&sync), bits(&pre));
        }
        // Augmentation depends on the epoch.
        let e0: Vec<Batch> = l.epoch(0).collect();
        let e1: Vec<Batch> = l.epoch(1).collect();
        assert_ne!(bits(&e0), bits(&e1));
    }
}

#[test]
fn augmentation_depends_on_the_sample_not_the_batch() {
    // The same sample in the same epoch gets the same augmentation whatever the batch size.
    let d = synthetic(20, [1, 6, 6]);
    let mk = |bs| {
        let mut o = LoaderOptions::train(bs, 4, all_augments());
        o.shuffle = false;
        o.drop_last = false;
        Loader::new(d.clone(), Normalize::none(1), o).unwrap()
    };
    let flat = |l: Loader| -> Vec<u32> {
        l.epoch(2)
            .flat_map(|b| b.x.into_iter().map(f32::to_bits))
            .collect()
    };
    assert_eq!(flat(mk(3)), flat(mk(7)));
}

#[test]
fn no_augmentation_gives_the_normalized_pixels() {
    let d = synthetic(4, [1, 2, 2]);
    let norm = Normalize::new(&[0.5], &[0.25], 1).unwrap();
    let l = Loader::new(d.clone(), norm, LoaderOptions::eval(4)).unwrap();
    let b = l.epoch(0).next().unwrap();
    assert_eq!(b.shape(), [4, 1, 2, 2]);
    let want: Vec<f32> = u8s(&d.pixels)
        .iter()
        .map(|&p| (p as f32 / 255.0 - 0.5) / 0.25)
        .collect();
    assert_eq!(b.x, want);
    assert_eq!(b.labels, vec![0, 1, 2, 3]);
}

// ---------------------------------------------------------------------------------------------
// Bundled and installed Fashion-MNIST

#[test]
fn bundled_fashion_mnist_subset() {
    let split = data::open("bundled", &input([1, 28, 28])).unwrap();
    assert_eq!(split.train.len(), 10_000);
    assert_eq!(split.test.len(), 2_000);
    assert_eq!(split.train.classes, 10);
    assert_eq!(split.train.class_counts(), vec![1000; 10]);
    assert_eq!(split.test.class_counts(), vec![200; 10]);
    assert_eq!(split.train.class_names[9], "Ankle boot");
    let px = u8s(&split.train.pixels);
    assert_eq!(px.len(), 10_000 * 784);
    let n = px.len() as f64;
    let mean = px.iter().map(|&p| p as f64 / 255.0).sum::<f64>() / n;
    let var = px
        .iter()
        .map(|&p| (p as f64 / 255.0 - mean).powi(2))
        .sum::<f64>()
        / n;
    // Fashion-MNIST's training set: mean 0.2860, std 0.3530.
    assert!((mean - 0.286).abs() < 0.01, "mean {mean}");
    assert!((var.sqrt() - 0.353).abs() < 0.01, "std {}", var.sqrt());

    // Normalized batches with the usual statistics have about mean 0 and std 1.
    let mut i = input([1, 28, 28]);
    i.mean = vec![0.286];
    i.std = vec![0.353];
    let train = Arc::new(split.train);
    let l = Loader::new(
        train,
        Normalize::from_input(&i).unwrap(),
        LoaderOptions::train(256, 0, vec![]),
    )
    .unwrap();
    assert_eq!(l.batches_per_epoch(), 39);
    let b = l.epoch(0).next().unwrap();
    let m = b.x.iter().map(|&v| v as f64).sum::<f64>() / b.x.len() as f64;
    assert!(m.abs() < 0.1, "{m}");

    // Labels must fit the model's outputs.
    assert!(split_classes_ok(10));
    assert!(!split_classes_ok(5));

    // The wrong model input is reported.
    let e = data::open("bundled", &input([3, 32, 32])).unwrap_err();
    assert!(
        e.to_string()
            .contains("the data has 1×28×28 images but the model's input `image` is 3×32×32"),
        "{e}"
    );
}

#[test]
fn full_fashion_mnist_missing_gives_the_install_hint() {
    let e = data::fashion_mnist(Path::new("/nonexistent/netc/fashion-mnist")).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(
            "install it with `sudo apt-get install dataset-fashion-mnist` (or pass `--data DIR`)"
        ),
        "{text}"
    );
    if !Path::new(data::FASHION_MNIST_DIR).exists() {
        let e = data::open("fashion-mnist", &input([1, 28, 28])).unwrap_err();
        assert!(e.to_string().contains("dataset-fashion-mnist"), "{e}");
    }
}

#[test]
fn full_fashion_mnist_when_installed() {
    if !Path::new(data::FASHION_MNIST_DIR).is_dir() {
        eprintln!("skipped: {} is not installed", data::FASHION_MNIST_DIR);
        return;
    }
    let split = data::open("fashion-mnist", &input([1, 28, 28])).unwrap();
    assert_eq!((split.train.len(), split.test.len()), (60_000, 10_000));
    assert_eq!(split.train.class_counts(), vec![6000; 10]);
    // The bundled subset is the first 1,000 of each class, in file order.
    let sub = data::open("bundled", &input([1, 28, 28])).unwrap();
    let mut taken = [0; 10];
    let mut idx = Vec::new();
    for (i, &l) in split.train.labels.iter().enumerate() {
        if taken[l as usize] < 1000 {
            taken[l as usize] += 1;
            idx.push(i);
        }
    }
    let want = split.train.subset(&idx, "");
    assert_eq!(want.pixels, sub.train.pixels);
    assert_eq!(want.labels, sub.train.labels);
}

// ---------------------------------------------------------------------------------------------
// Malformed files never panic

#[test]
fn mutated_files_give_errors_not_panics() {
    let mut rng = Rng::new(2024);
    let set = idx_set(4, 2);
    let t = TempDir::new("fuzz");
    // IDX (raw and gzip'd), CIFAR and npz sources, each mutated many times.
    let idx_raw = idx::encode(&[4, 3, 4], &set.train_images);
    let idx_gz = gz(&idx_raw);
    let cifar_bytes = cifar::encode(&cifar_records(2, 0));
    let npz_path = t.join("base.npz");
    write_npz(
        &npz_path,
        &[
            ("x.npy", npy("|u1", &[6, 3, 4], &[7; 72])),
            ("y.npy", npy("<i8", &[6], &le(&[1i64; 6], i64::to_le_bytes))),
        ],
        true,
    );
    let npz_bytes = std::fs::read(&npz_path).unwrap();
    for round in 0..300 {
        for (k, base) in [&idx_raw, &idx_gz, &cifar_bytes, &npz_bytes]
            .iter()
            .enumerate()
        {
            let mut b = base.to_vec();
            match rng.below(3) {
                0 => b.truncate(rng.below(b.len() as u64 + 1) as usize),
                1 => {
                    for _ in 0..1 + rng.below(4) {
                        let i = rng.below(b.len() as u64) as usize;
                        b[i] = rng.below(256) as u8;
                    }
                }
                _ => b.extend((0..rng.below(8)).map(|_| rng.below(256) as u8)),
            }
            let p = t.join(&format!("m{round}-{k}"));
            match k {
                0 | 1 => {
                    let _ = idx::parse(&p, b);
                }
                2 => {
                    let (mut px, mut lb) = (Vec::new(), Vec::new());
                    let _ = cifar::read_batch(&p, &b, &mut px, &mut lb);
                }
                _ => {
                    let f = t.join("m.npz");
                    write(&f, &b);
                    let _ = data::open(f.to_str().unwrap(), &input([1, 3, 4]));
                }
            }
        }
    }
}

fn split_classes_ok(outputs: usize) -> bool {
    let split = data::open("bundled", &input([1, 28, 28])).unwrap();
    match split.check_classes(outputs, "logits") {
        Ok(()) => true,
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains("the data have 10 classes (labels 0–9) but the model's output `logits` has 5 values"),
                "{text}"
            );
            false
        }
    }
}
