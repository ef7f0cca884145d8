//! MNIST-style IDX files.
//!
//! In: IDX files, raw or gzip'd (detected by content, not by name): images of unsigned bytes
//! with 3 dimensions (count, rows, columns) and labels of unsigned bytes with 1 dimension; or a
//! directory holding the four files of a split. Out: a [`Dataset`] of `1 × rows × columns`
//! byte images per pair of files, a [`Split`] per directory.
//!
//! The format (LeCun's): a big-endian header of two zero bytes, a type code (`0x08` = unsigned
//! byte), the number of dimensions, then one big-endian `u32` per dimension, then the data in
//! C order. The sizes in the header are checked against the data before anything is trusted:
//! a raw file's length is checked before the data is copied; gzip'd data are decompressed only
//! as far as the header says (plus one byte, to notice extra data), growing the buffer as
//! data actually arrives.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use super::{DataError, Dataset, Pixels, Split, check_labels, file_name};

/// The element type codes of the IDX format, for messages.
fn type_name(code: u8) -> Option<&'static str> {
    Some(match code {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0b => "16-bit integer",
        0x0c => "32-bit integer",
        0x0d => "float32",
        0x0e => "float64",
        _ => return None,
    })
}

/// The most dimensions an IDX header may declare here (MNIST's files have 1 or 3).
const MAX_DIMS: usize = 4;

/// An IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an IDX file, raw or gzip'd.
pub fn read_file(path: &Path) -> Result<Idx, DataError> {
    let bytes = crate::io::read_limited(path, crate::io::Kind::Data)?;
    parse(path, bytes)
}

/// Parses the bytes of an IDX file (raw or gzip'd); `path` names it in errors.
pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Idx, DataError> {
    if bytes.is_empty() {
        return Err(DataError::new(path, "not an IDX file: the file is empty"));
    }
    if bytes.starts_with(&[0x1f, 0x8b]) {
        parse_gz(path, &bytes)
    } else {
        parse_raw(path, bytes)
    }
}

fn parse_raw(path: &Path, mut bytes: Vec<u8>) -> Result<Idx, DataError> {
    let (dims, header_len) = header(path, &bytes, false)?;
    let want = data_len(path, &dims)?;
    let have = bytes.len() - header_len;
    check_len(path, &dims, want, have as u64, false)?;
    bytes.drain(..header_len);
    Ok(Idx { dims, data: bytes })
}

fn parse_gz(path: &Path, bytes: &[u8]) -> Result<Idx, DataError> {
    let gz_err = |e: std::io::Error| {
        let why = if e.kind() == std::io::ErrorKind::UnexpectedEof {
            "the compressed data end too early".to_string()
        } else {
            e.to_string()
        };
        DataError::new(path, format!("corrupt gzip data: {why}"))
    };
    let mut dec = GzDecoder::new(bytes);
    // The fixed part of the header, then the dimensions it announces.
    let mut head = [0u8; 4];
    let got = read_all(&mut dec, &mut head).map_err(gz_err)?;
    let mut head_bytes = head[..got].to_vec();
    let ndims = head[3] as usize;
    if got == 4 && head[0] == 0 && head[1] == 0 && ndims <= MAX_DIMS {
        let mut d = vec![0u8; 4 * ndims];
        let got = read_all(&mut dec, &mut d).map_err(gz_err)?;
        head_bytes.extend_from_slice(&d[..got]);
    }
    let (dims, _) = header(path, &head_bytes, true)?;
    let want = data_len(path, &dims)?;
    let cap = crate::io::Kind::Data.cap();
    if want as u64 > cap {
        return Err(DataError::new(
            path,
            format!(
                "the header declares {} bytes of data, more than the {} limit for {}",
                want,
                crate::io::read::show_bytes(cap),
                crate::io::Kind::Data.what()
            ),
        ));
    }
    // Never reserve more than the compressed data could expand to (deflate's ratio is at
    // most about 1032:1); the rest of the buffer grows only as data really arrive.
    let mut data = Vec::with_capacity(want.min(bytes.len().saturating_mul(1032)));
    dec.take(want as u64 + 1)
        .read_to_end(&mut data)
        .map_err(gz_err)?;
    check_len(path, &dims, want, data.len() as u64, true)?;
    Ok(Idx { dims, data })
}

/// Reads `buf.len()` bytes, or as many as there are before the end.
fn read_all(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Checks the magic and type, returns the dimensions and the header's length.
fn header(path: &Path, b: &[u8], gz: bool) -> Result<(Vec<usize>, usize), DataError> {
    let what = if gz { "decompressed data" } else { "file" };
    if b.len() < 4 && b.iter().take(2).any(|&x| x != 0) {
        return Err(DataError::new(
            path,
            "not an IDX file: it does not start with two zero bytes",
        ));
    }
    if b.len() < 4 {
        return Err(DataError::new(
            path,
            format!("truncated: the {what} ends inside the IDX header"),
        ));
    }
    if b[0] != 0 || b[1] != 0 || b[3] == 0 {
        return Err(DataError::new(
            path,
            format!(
                "not an IDX file: bad magic {:02x} {:02x} {:02x} {:02x} (an IDX file starts with \
                 two zero bytes, a type code and the number of dimensions, e.g. 00 00 08 03)",
                b[0], b[1], b[2], b[3]
            ),
        ));
    }
    match type_name(b[2]) {
        Some(_) if b[2] == 0x08 => {}
        Some(name) => {
            return Err(DataError::new(
                path,
                format!(
                    "IDX data of type {name} (code 0x{:02x}); netc reads unsigned bytes (0x08)",
                    b[2]
                ),
            ));
        }
        None => {
            return Err(DataError::new(
                path,
                format!(
                    "not an IDX file: unknown type code 0x{:02x} in the magic number",
                    b[2]
                ),
            ));
        }
    }
    let ndims = b[3] as usize;
    if ndims > MAX_DIMS {
        return Err(DataError::new(
            path,
            format!("the IDX header declares {ndims} dimensions (at most {MAX_DIMS} supported)"),
        ));
    }
    let len = 4 + 4 * ndims;
    if b.len() < len {
        return Err(DataError::new(
            path,
            format!("truncated: the {what} ends inside the IDX header"),
        ));
    }
    let dims = (0..ndims)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) as usize
        })
        .collect();
    Ok((dims, len))
}

fn data_len(path: &Path, dims: &[usize]) -> Result<usize, DataError> {
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| {
            DataError::new(
                path,
                format!(
                    "the IDX header declares dimensions {}, whose size overflows",
                    show_dims(dims)
                ),
            )
        })
}

fn check_len(
    path: &Path,
    dims: &[usize],
    want: usize,
    have: u64,
    gz: bool,
) -> Result<(), DataError> {
    let what = if gz {
        "the decompressed data have"
    } else {
        "the file has"
    };
    if have < want as u64 {
        return Err(DataError::new(
            path,
            format!(
                "truncated: the IDX header declares {} bytes of data ({}) but {what} {have}",
                want,
                show_dims(dims)
            ),
        ));
    }
    if have > want as u64 {
        let extra = if gz {
            "more bytes".to_string()
        } else {
            format!("{} more bytes", have - want as u64)
        };
        return Err(DataError::new(
            path,
            format!(
                "{extra} after the {want} bytes of data the IDX header declares ({})",
                show_dims(dims)
            ),
        ));
    }
    Ok(())
}

fn show_dims(dims: &[usize]) -> String {
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×")
}

/// Pairs an images file and a labels file into a dataset named `name`.
pub fn dataset(
    name: String,
    images_path: &Path,
    images: Idx,
    labels_path: &Path,
    labels: Idx,
) -> Result<Dataset, DataError> {
    let [n, h, w] = match images.dims.as_slice() {
        &[n, h, w] => [n, h, w],
        d => {
            return Err(DataError::new(
                images_path,
                format!(
                    "expected images with 3 dimensions (count, rows, columns), found {} ({})",
                    d.len(),
                    show_dims(d)
                ),
            ));
        }
    };
    if h == 0 || w == 0 {
        return Err(DataError::new(
            images_path,
            format!("the images have size {h}×{w}"),
        ));
    }
    let &[nl] = labels.dims.as_slice() else {
        return Err(DataError::new(
            labels_path,
            format!(
                "expected labels with 1 dimension (count), found {} ({})",
                labels.dims.len(),
                show_dims(&labels.dims)
            ),
        ));
    };
    if nl != n {
        return Err(DataError::new(
            labels_path,
            format!("{nl} labels, but {} has {n} images", images_path.display()),
        ));
    }
    let labels: Vec<i64> = labels.data.iter().map(|&l| l as i64).collect();
    let classes = check_labels(labels_path, &labels, None)?;
    Ok(Dataset {
        name,
        sample_shape: vec![1, h, w],
        pixels: Pixels::U8(images.data),
        labels,
        classes,
        class_names: Vec::new(),
        fields: Vec::new(),
        objects: Vec::new(),
    })
}

/// The four files of a split, in the order train images, train labels, test images, test
/// labels.
pub type SplitFiles = [PathBuf; 4];

/// Finds the four files of a split in `dir` or its `raw/` subfolder. Accepted names:
/// `{train,t10k}-{images-idx3,labels-idx1}-ubyte`, with `.` instead of the middle `-` (as
/// some copies of MNIST name them), `test` for `t10k`, and an optional `.gz`. `None` when
/// none of them is there; a directory with only some of them gives the ones it has, with the
/// missing ones as their canonical names (reading them reports which is missing).
pub fn find_files(dir: &Path) -> Option<SplitFiles> {
    for d in [dir.to_path_buf(), dir.join("raw")] {
        if !d.is_dir() {
            continue;
        }
        let parts = [
            ("train", "images", "idx3"),
            ("train", "labels", "idx1"),
            ("t10k", "images", "idx3"),
            ("t10k", "labels", "idx1"),
        ];
        let found: Vec<Option<PathBuf>> = parts
            .iter()
            .map(|&(split, kind, idx)| find_one(&d, split, kind, idx))
            .collect();
        if found.iter().any(Option::is_some) {
            let mut out: SplitFiles = Default::default();
            for (i, (f, &(split, kind, idx))) in found.into_iter().zip(&parts).enumerate() {
                out[i] = f.unwrap_or_else(|| d.join(format!("{split}-{kind}-{idx}-ubyte.gz")));
            }
            return Some(out);
        }
    }
    None
}

fn find_one(dir: &Path, split: &str, kind: &str, idx: &str) -> Option<PathBuf> {
    let splits: &[&str] = if split == "t10k" {
        &["t10k", "test"]
    } else {
        &[split]
    };
    for s in splits {
        for sep in ['-', '.'] {
            for ext in ["", ".gz"] {
                let p = dir.join(format!("{s}-{kind}{sep}{idx}-ubyte{ext}"));
                if p.is_file() {
                    return Some(p);
                }
            }
        }
    }
    None
}

/// Loads the split from the files [`find_files`] found in `dir`.
pub fn load_files(dir: &Path, files: &SplitFiles) -> Result<Split, DataError> {
    let missing: Vec<String> = files
        .iter()
        .filter(|p| !p.is_file())
        .map(|p| file_name(p))
        .collect();
    if !missing.is_empty() {
        return Err(DataError::new(
            dir,
            format!(
                "an IDX dataset needs four files; missing: {} (each may be gzip'd, ending in .gz)",
                missing.join(", ")
            ),
        ));
    }
    let name = file_name(dir);
    let load = |split: &str, images: &Path, labels: &Path| -> Result<Dataset, DataError> {
        dataset(
            format!("{name} {split}"),
            images,
            read_file(images)?,
            labels,
            read_file(labels)?,
        )
    };
    let train = load("train", &files[0], &files[1])?;
    let test = load("test", &files[2], &files[3])?;
    if test.sample_shape != train.sample_shape {
        return Err(DataError::new(
            &files[2],
            format!(
                "test images of size {}×{} but training images of size {}×{}",
                test.sample_shape[1],
                test.sample_shape[2],
                train.sample_shape[1],
                train.sample_shape[2]
            ),
        ));
    }
    Ok(Split { train, test })
}

/// Bytes of an IDX file: header for `dims`, then `data`. For tests and tools.
pub fn encode(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn raw_and_gz_parse_the_same() {
        let data: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
        let raw = encode(&[2, 3, 4], &data);
        let p = Path::new("x");
        let a = parse(p, raw.clone()).unwrap();
        let b = parse(p, gz(&raw)).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.dims, vec![2, 3, 4]);
        assert_eq!(a.data, data);
    }

    #[test]
    fn every_prefix_of_a_file_is_an_error_not_a_panic() {
        let raw = encode(&[2, 3, 4], &[7; 24]);
        let p = Path::new("x");
        for n in 0..raw.len() {
            assert!(parse(p, raw[..n].to_vec()).is_err(), "raw prefix {n}");
        }
        let z = gz(&raw);
        for n in 2..z.len() {
            assert!(parse(p, z[..n].to_vec()).is_err(), "gz prefix {n}");
        }
    }

    #[test]
    fn huge_declared_sizes_do_not_allocate() {
        // 4G × 4G × 4G: overflows; 65535 × 65535 × 65535 gzip'd: over the data limit;
        // 4096 × 4096 × 4096 (the limit) of nothing: truncated.
        let p = Path::new("x");
        let e = parse(p, encode(&[u32::MAX, u32::MAX, u32::MAX], &[])).unwrap_err();
        assert!(e.message.contains("overflows"), "{e}");
        let e = parse(p, gz(&encode(&[65535, 65535, 65535], &[1, 2, 3]))).unwrap_err();
        assert!(e.message.contains("64 GiB limit"), "{e}");
        let e = parse(p, gz(&encode(&[4096, 4096, 4096], &[1, 2, 3]))).unwrap_err();
        assert!(e.message.contains("truncated"), "{e}");
    }
}
