//! NumPy `.npy` files: reader and writer.
//!
//! In: a `.npy` file of format version 1, 2 or 3 (`np.save`), little-endian, C order, any rank.
//! Out: an `ArrayD<f32>` ([`read_f32`]: `<f4`, or `<f8` converted to f32) or an `ArrayD<i64>`
//! ([`read_i64`]: `<i8`, or `<i4`, `|u1`, `|i1` widened). [`write_f32`] writes `<f4` in
//! version 1 (version 2 if the header needs it), atomically. [`read_stream`] reads a `.npy`
//! from a stream (an `.npz` member as it is decompressed: header first, then exactly the data
//! it declares) into its shape and [`NpyData`] in the file's own dtype; [`from_bytes`] does
//! the same for one held in memory. [`write_npz`] writes an `.npz` archive (uncompressed, as
//! `np.savez`) member by member, streaming each array's values, atomically.
//!
//! The file is untrusted: the header is bounded in size and parsed by a small parser of the
//! Python dict literal numpy writes; the size the header declares is checked against the
//! file's length before the data is allocated, so a crafted shape cannot exhaust memory.
//! Errors name the problem: bad magic, unsupported version, malformed header, Fortran order,
//! big-endian or unsupported dtypes (saying which), truncated or over-long data.

use std::io::{Read, Write};
use std::path::Path;

use ndarray::{ArrayD, IxDyn};

use super::{IoError, Kind, open_limited, show_shape, write_atomic};

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// numpy itself refuses headers over 10,000 bytes unless told otherwise; allow some more.
const MAX_HEADER: usize = 1 << 16;

/// The element types the reader understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F4,
    F8,
    I8,
    I4,
    I1,
    U1,
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::F4 | Dtype::I4 => 4,
            Dtype::F8 | Dtype::I8 => 8,
            Dtype::I1 | Dtype::U1 => 1,
        }
    }
    fn numpy_name(self) -> &'static str {
        match self {
            Dtype::F4 => "float32",
            Dtype::F8 => "float64",
            Dtype::I8 => "int64",
            Dtype::I4 => "int32",
            Dtype::I1 => "int8",
            Dtype::U1 => "uint8",
        }
    }
}

/// A parsed header: dtype, shape and where the data starts.
#[derive(Debug)]
struct Header {
    dtype: Dtype,
    descr: String,
    shape: Vec<usize>,
    data_offset: usize,
}

/// Reads a `.npy` file of float32 (`<f4`) or float64 (`<f8`, converted to f32) values.
pub fn read_f32(path: impl AsRef<Path>) -> Result<ArrayD<f32>, IoError> {
    let path = path.as_ref();
    let (h, data) = read_raw(path)?;
    let v: Vec<f32> = match h.dtype {
        Dtype::F4 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F8 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        other => {
            return Err(IoError::new(
                path,
                format!(
                    "expected a float array (float32 `<f4` or float64 `<f8`), found {} (`{}`)",
                    other.numpy_name(),
                    h.descr
                ),
            ));
        }
    };
    to_array(path, &h.shape, v)
}

/// Reads a `.npy` file of int64 (`<i8`) values; int32 (`<i4`), int8 and uint8 are widened.
pub fn read_i64(path: impl AsRef<Path>) -> Result<ArrayD<i64>, IoError> {
    let path = path.as_ref();
    let (h, data) = read_raw(path)?;
    let v: Vec<i64> = match h.dtype {
        Dtype::I8 => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect(),
        Dtype::I4 => data
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
            .collect(),
        Dtype::I1 => data.iter().map(|&b| b as i8 as i64).collect(),
        Dtype::U1 => data.iter().map(|&b| b as i64).collect(),
        other => {
            return Err(IoError::new(
                path,
                format!(
                    "expected an integer array (int64 `<i8`), found {} (`{}`)",
                    other.numpy_name(),
                    h.descr
                ),
            ));
        }
    };
    to_array(path, &h.shape, v)
}

/// Writes `a` as a little-endian float32 `.npy` file in C order, atomically.
pub fn write_f32(path: impl AsRef<Path>, a: &ArrayD<f32>) -> Result<(), IoError> {
    let path = path.as_ref();
    let header = header_bytes("<f4", a.shape());
    write_atomic(path, |w| {
        w.write_all(&header)?;
        // Logical (C) order whatever the array's memory layout.
        let mut buf = Vec::with_capacity(64 * 1024);
        for &x in a.iter() {
            buf.extend_from_slice(&x.to_le_bytes());
            if buf.len() >= 64 * 1024 {
                w.write_all(&buf)?;
                buf.clear();
            }
        }
        w.write_all(&buf)
    })
}

/// One array of an `.npz` archive written by [`write_arrays`].
#[derive(Debug, Clone, PartialEq)]
pub enum NpzArray<'a> {
    F32(&'a [usize], &'a [f32]),
    I64(&'a [usize], &'a [i64]),
}

/// Writes named arrays held in memory as an `.npz` archive, atomically ([`write_npz`]): `x`
/// becomes the member `x.npy`. Each array's values must fill its shape.
pub fn write_arrays(
    path: impl AsRef<Path>,
    arrays: &[(&str, NpzArray<'_>)],
) -> Result<(), IoError> {
    let path = path.as_ref();
    for (i, (k, _)) in arrays.iter().enumerate() {
        if k.is_empty() || k.contains('/') || arrays[..i].iter().any(|(o, _)| o == k) {
            return Err(IoError::new(
                path,
                format!("cannot name an array `{k}` in an .npz (empty, repeated or with a `/`)"),
            ));
        }
    }
    for (name, a) in arrays {
        let (shape, len) = match a {
            NpzArray::F32(s, v) => (*s, v.len()),
            NpzArray::I64(s, v) => (*s, v.len()),
        };
        if shape.iter().product::<usize>() != len {
            return Err(IoError::new(
                path,
                format!("array `{name}` has {len} values for the shape {shape:?}"),
            ));
        }
    }
    write_npz(path, |w| {
        for (name, a) in arrays {
            match a {
                NpzArray::F32(shape, v) => {
                    w.begin(name, "<f4", shape)?;
                    w.f32s(v)?;
                }
                NpzArray::I64(shape, v) => {
                    w.begin(name, "<i8", shape)?;
                    w.i64s(v)?;
                }
            }
        }
        Ok(())
    })
}

/// Writes the members of an `.npz` archive (an uncompressed zip of `.npy` files, what
/// `np.savez` writes), streamed: each array's header, then its values as they are given.
pub struct NpzWriter<'a, W: Write + std::io::Seek> {
    zip: &'a mut zip::ZipWriter<W>,
}

impl<W: Write + std::io::Seek> NpzWriter<'_, W> {
    /// Starts member `name.npy`: an array of `shape` with numpy dtype `descr` (`<f4`, `<i8`);
    /// its values follow through [`NpzWriter::f32s`] / [`NpzWriter::i64s`], exactly
    /// `shape.iter().product()` of them (the caller's to get right: nothing checks it).
    pub fn begin(&mut self, name: &str, descr: &str, shape: &[usize]) -> std::io::Result<()> {
        let elem = if descr.ends_with('8') { 8u64 } else { 4 };
        let bytes = shape.iter().fold(elem, |a, &d| a.saturating_mul(d as u64));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(bytes >= u32::MAX as u64 - 1024);
        self.zip
            .start_file(format!("{name}.npy"), opts)
            .map_err(std::io::Error::other)?;
        self.zip.write_all(&header_bytes(descr, shape))
    }

    pub fn f32s(&mut self, v: &[f32]) -> std::io::Result<()> {
        for chunk in v.chunks(16 * 1024) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|x| x.to_le_bytes()).collect();
            self.zip.write_all(&bytes)?;
        }
        Ok(())
    }

    pub fn i64s(&mut self, v: &[i64]) -> std::io::Result<()> {
        for chunk in v.chunks(8 * 1024) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|x| x.to_le_bytes()).collect();
            self.zip.write_all(&bytes)?;
        }
        Ok(())
    }
}

/// Writes an `.npz` archive atomically (nothing at `path` changes unless all of it was
/// written): `members` writes the arrays through the [`NpzWriter`] it is given.
pub fn write_npz(
    path: impl AsRef<Path>,
    members: impl FnOnce(
        &mut NpzWriter<'_, &mut std::io::BufWriter<&std::fs::File>>,
    ) -> std::io::Result<()>,
) -> Result<(), IoError> {
    write_atomic(path, |w| {
        let mut zip = zip::ZipWriter::new(w);
        members(&mut NpzWriter { zip: &mut zip })?;
        zip.finish().map_err(std::io::Error::other)?;
        Ok(())
    })
}

/// Magic, version, length and the padded dict, as numpy writes them: the data starts at a
/// multiple of 64 bytes and the header ends with a newline.
fn header_bytes(descr: &str, shape: &[usize]) -> Vec<u8> {
    let shape_text = match shape {
        [] => "()".to_string(),
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
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Version 1 has a 2-byte length; bigger headers need version 2 (4-byte length).
    let total_for = |prefix: usize| (prefix + dict.len() + 1).next_multiple_of(64);
    let (version, prefix) = if total_for(10) - 10 <= u16::MAX as usize {
        (1u8, 10)
    } else {
        (2u8, 12)
    };
    let total = total_for(prefix);
    let hlen = total - prefix;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(hlen as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(hlen as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

fn to_array<T>(path: &Path, shape: &[usize], v: Vec<T>) -> Result<ArrayD<T>, IoError> {
    ArrayD::from_shape_vec(IxDyn(shape), v).map_err(|e| {
        IoError::new(
            path,
            format!("data does not fit shape {}: {e}", show_shape(shape)),
        )
    })
}

/// Reads and checks the header, then exactly the data it declares.
fn read_raw(path: &Path) -> Result<(Header, Vec<u8>), IoError> {
    let (mut f, file_len) = open_limited(path, Kind::Array)?;
    // The fixed prefix: magic (6), version (2), header length (2 or 4).
    let mut prefix = [0u8; 12];
    let got = read_up_to(&mut f, &mut prefix).map_err(|e| IoError::os(path, "cannot read", &e))?;
    let h = parse_prefix_and_header(path, &prefix[..got], &mut f, file_len)?;
    let nbytes = data_len(path, &h, file_len)?;
    // Safe to allocate: the file really has this many bytes.
    let mut data = vec![0u8; nbytes];
    f.read_exact(&mut data)
        .map_err(|e| IoError::os(path, "cannot read the data", &e))?;
    Ok((h, data))
}

/// The number of data bytes the header declares, checked against what the file holds.
fn data_len(path: &Path, h: &Header, file_len: u64) -> Result<usize, IoError> {
    let n = h
        .shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .and_then(|n| n.checked_mul(h.dtype.size()));
    let Some(nbytes) = n else {
        return Err(IoError::new(
            path,
            format!(
                "the header declares shape {}, whose size overflows",
                show_shape(&h.shape)
            ),
        ));
    };
    let available = file_len.saturating_sub(h.data_offset as u64);
    if (nbytes as u64) > available {
        return Err(IoError::new(
            path,
            format!(
                "truncated: the header declares {} {} values ({nbytes} bytes) but the file has {available} bytes of data",
                show_shape(&h.shape),
                h.dtype.numpy_name(),
            ),
        ));
    }
    if (nbytes as u64) < available {
        return Err(IoError::new(
            path,
            format!(
                "{} extra bytes after the {} {} array the header declares (a .npy file holds one array)",
                available - nbytes as u64,
                show_shape(&h.shape),
                h.dtype.numpy_name()
            ),
        ));
    }
    Ok(nbytes)
}

/// The elements of an array in the element type of its file (see [`from_bytes`]).
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
}

impl NpyData {
    /// numpy's name for the element type (`float32`, `uint8`, ...).
    pub fn dtype_name(&self) -> &'static str {
        match self {
            NpyData::F32(_) => "float32",
            NpyData::F64(_) => "float64",
            NpyData::I64(_) => "int64",
            NpyData::I32(_) => "int32",
            NpyData::I8(_) => "int8",
            NpyData::U8(_) => "uint8",
        }
    }
}

/// Parses a whole `.npy` file held in memory (e.g. a member of an `.npz` archive) into its
/// shape and its elements, keeping their element type. `path` names it in errors. The checks
/// are those of the file readers.
pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<(Vec<usize>, NpyData), IoError> {
    let len = bytes.len() as u64;
    read_stream(path, &mut &bytes[..], len, u64::MAX, len)
}

/// Reads one `.npy` array from a stream that declares `len` bytes in all (an `.npz` member as
/// it is decompressed): the header first, checked against `len` and against `cap` bytes of
/// data, then exactly the data the header declares, in a buffer of at most `reserve` bytes to
/// start with that grows only as data arrive. A stream that goes on past the data is refused
/// after one byte too many; nothing beyond that is read.
pub fn read_stream(
    path: &Path,
    r: &mut impl Read,
    len: u64,
    cap: u64,
    reserve: u64,
) -> Result<(Vec<usize>, NpyData), IoError> {
    let corrupt = |e: std::io::Error| IoError::new(path, format!("corrupt data: {e}"));
    let mut prefix = [0u8; 12];
    let got = read_up_to(r, &mut prefix).map_err(corrupt)?;
    let h = parse_prefix_and_header(path, &prefix[..got], r, len)?;
    let nbytes = data_len(path, &h, len)?;
    if nbytes as u64 > cap {
        return Err(IoError::new(
            path,
            format!(
                "the header declares a {} {} array of {}, more than the {} limit",
                show_shape(&h.shape),
                h.dtype.numpy_name(),
                super::read::show_bytes(nbytes as u64),
                super::read::show_bytes(cap),
            ),
        ));
    }
    let mut data = Vec::with_capacity(nbytes.min(usize::try_from(reserve).unwrap_or(0)));
    r.take(nbytes as u64)
        .read_to_end(&mut data)
        .map_err(corrupt)?;
    if data.len() < nbytes {
        return Err(IoError::new(
            path,
            format!(
                "truncated: the data end after {} of the {nbytes} bytes the header declares",
                data.len()
            ),
        ));
    }
    if read_up_to(r, &mut [0u8; 1]).map_err(corrupt)? > 0 {
        return Err(IoError::new(
            path,
            format!(
                "extra bytes after the {} {} array the header declares (a .npy file holds one array)",
                show_shape(&h.shape),
                h.dtype.numpy_name()
            ),
        ));
    }
    Ok((h.shape, decode(h.dtype, &data)))
}

/// The elements of `data` (little-endian, as the header's dtype says).
fn decode(dtype: Dtype, data: &[u8]) -> NpyData {
    match dtype {
        Dtype::F4 => NpyData::F32(
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Dtype::F8 => NpyData::F64(
            data.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
        ),
        Dtype::I8 => NpyData::I64(
            data.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
        ),
        Dtype::I4 => NpyData::I32(
            data.chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Dtype::I1 => NpyData::I8(data.iter().map(|&b| b as i8).collect()),
        Dtype::U1 => NpyData::U8(data.to_vec()),
    }
}

fn read_up_to(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn parse_prefix_and_header(
    path: &Path,
    prefix: &[u8],
    f: &mut impl Read,
    file_len: u64,
) -> Result<Header, IoError> {
    if prefix.is_empty() {
        return Err(IoError::new(path, "not a .npy file: the file is empty"));
    }
    if prefix.len() < 8 || &prefix[..6] != MAGIC {
        let what = if prefix.starts_with(b"PK\x03\x04") {
            " (it is a zip archive: an .npz file? extract the array, or save it with np.save)"
        } else {
            ""
        };
        return Err(IoError::new(
            path,
            format!("not a .npy file: it does not start with the magic `\\x93NUMPY`{what}"),
        ));
    }
    let (major, minor) = (prefix[6], prefix[7]);
    let (hlen, start) = match major {
        1 if prefix.len() >= 10 => (u16::from_le_bytes([prefix[8], prefix[9]]) as usize, 10),
        2 | 3 if prefix.len() >= 12 => (
            u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]) as usize,
            12,
        ),
        1..=3 => {
            return Err(IoError::new(
                path,
                "truncated: the file ends inside the header",
            ));
        }
        _ => {
            return Err(IoError::new(
                path,
                format!(
                    "unsupported .npy format version {major}.{minor} (netc reads 1.0, 2.0 and 3.0)"
                ),
            ));
        }
    };
    if hlen > MAX_HEADER {
        return Err(IoError::new(
            path,
            format!(
                "malformed header: it declares {hlen} bytes of header (at most {MAX_HEADER} allowed)"
            ),
        ));
    }
    // The prefix read may already hold the first bytes of the header (and, for a header
    // shorter than that, of the data): a header that short is not numpy's.
    if hlen < prefix.len() - start {
        return Err(IoError::new(
            path,
            format!("malformed header: it declares only {hlen} bytes of header"),
        ));
    }
    if (start + hlen) as u64 > file_len {
        return Err(IoError::new(
            path,
            "truncated: the file ends inside the header",
        ));
    }
    let mut text = vec![0u8; hlen];
    text[..prefix.len() - start].copy_from_slice(&prefix[start..]);
    f.read_exact(&mut text[prefix.len() - start..])
        .map_err(|e| IoError::os(path, "cannot read the header", &e))?;
    // Version 1 and 2 headers are latin-1, version 3 UTF-8; the dict numpy writes is ASCII.
    let text: String = if major == 3 {
        String::from_utf8(text)
            .map_err(|_| IoError::new(path, "malformed header: not UTF-8 text"))?
    } else {
        text.iter().map(|&b| b as char).collect()
    };
    let dict =
        parse_dict(&text).map_err(|m| IoError::new(path, format!("malformed header: {m}")))?;
    let mut descr = None;
    let mut fortran = None;
    let mut shape = None;
    for (k, v) in dict {
        match (k.as_str(), v) {
            ("descr", Lit::Str(s)) => descr = Some(s),
            ("descr", Lit::List) => {
                return Err(IoError::new(
                    path,
                    "unsupported dtype: a structured (record) array; save a plain numeric array",
                ));
            }
            ("fortran_order", Lit::Bool(b)) => fortran = Some(b),
            ("shape", Lit::Tuple(t)) => shape = Some(t),
            (k @ ("descr" | "fortran_order" | "shape"), _) => {
                return Err(IoError::new(
                    path,
                    format!("malformed header: `{k}` has the wrong type"),
                ));
            }
            _ => {}
        }
    }
    let (Some(descr), Some(fortran), Some(shape)) = (descr, fortran, shape) else {
        return Err(IoError::new(
            path,
            "malformed header: it needs the keys `descr`, `fortran_order` and `shape`",
        ));
    };
    if fortran {
        return Err(IoError::new(
            path,
            "the array is in Fortran (column-major) order; netc reads C order: save np.ascontiguousarray(a)",
        ));
    }
    let dtype = parse_descr(&descr).map_err(|m| IoError::new(path, m))?;
    Ok(Header {
        dtype,
        descr,
        shape,
        data_offset: start + hlen,
    })
}

fn parse_descr(d: &str) -> Result<Dtype, String> {
    let (order, code) = match d.chars().next() {
        Some(c @ ('<' | '>' | '|' | '=')) => (c, &d[1..]),
        _ => ('=', d),
    };
    let t = match code {
        "f4" => Dtype::F4,
        "f8" => Dtype::F8,
        "i8" => Dtype::I8,
        "i4" => Dtype::I4,
        "i1" => Dtype::I1,
        "u1" => Dtype::U1,
        _ => {
            let name = match code {
                "f2" => "float16",
                "i2" => "int16",
                "u2" => "uint16",
                "u4" => "uint32",
                "u8" => "uint64",
                "b1" => "bool",
                "c8" => "complex64",
                "c16" => "complex128",
                "O" => "object (pickled Python objects)",
                _ => "",
            };
            let what = if name.is_empty() {
                format!("`{d}`")
            } else {
                format!("{name} (`{d}`)")
            };
            return Err(format!(
                "unsupported dtype {what}: netc reads float32, float64 and int64 (a.astype('<f4'))"
            ));
        }
    };
    if order == '>' && t.size() > 1 {
        return Err(format!(
            "big-endian data (`{d}`) is not supported: save a.astype('<{code}')"
        ));
    }
    // '=' is native order; numpy writes '<' or '>' explicitly, so only little-endian hosts
    // would write '='. Accept it as little-endian, as every supported host is.
    Ok(t)
}

/// A value in the header dict. Lists only occur as structured dtypes, which are refused.
#[derive(Debug, PartialEq)]
enum Lit {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
    List,
}

/// Parses the Python dict literal numpy writes: string keys; values are strings, booleans or
/// tuples of non-negative integers (lists are skipped).
fn parse_dict(s: &str) -> Result<Vec<(String, Lit)>, String> {
    let mut p = P {
        s: s.as_bytes(),
        i: 0,
    };
    p.ws();
    p.eat(b'{')?;
    let mut out = Vec::new();
    loop {
        p.ws();
        if p.peek() == Some(b'}') {
            p.i += 1;
            break;
        }
        let k = p.string()?;
        p.ws();
        p.eat(b':')?;
        p.ws();
        let v = p.value()?;
        out.push((k, v));
        p.ws();
        match p.peek() {
            Some(b',') => p.i += 1,
            Some(b'}') => {}
            _ => return Err("expected `,` or `}` in the dict".into()),
        }
    }
    p.ws();
    if p.i != p.s.len() {
        return Err("unexpected text after the dict".into());
    }
    Ok(out)
}

struct P<'a> {
    s: &'a [u8],
    i: usize,
}

impl P<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\t' | b'\r' | b'\0')) {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected `{}`", c as char))
        }
    }
    fn string(&mut self) -> Result<String, String> {
        let q = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err("expected a quoted string".into()),
        };
        self.i += 1;
        let start = self.i;
        while let Some(c) = self.peek() {
            if c == q {
                let v = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                self.i += 1;
                return Ok(v);
            }
            if c == b'\\' {
                return Err("escapes in strings are not supported".into());
            }
            self.i += 1;
        }
        Err("unterminated string".into())
    }
    fn word(&mut self) -> &str {
        let start = self.i;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_') {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i]).unwrap_or("")
    }
    fn value(&mut self) -> Result<Lit, String> {
        match self.peek() {
            Some(b'\'' | b'"') => Ok(Lit::Str(self.string()?)),
            Some(b'(') => {
                self.i += 1;
                let mut dims = Vec::new();
                loop {
                    self.ws();
                    if self.peek() == Some(b')') {
                        self.i += 1;
                        return Ok(Lit::Tuple(dims));
                    }
                    let w = self.word();
                    // Python 2 numpy wrote longs as `3L`.
                    let w = w.strip_suffix('L').unwrap_or(w);
                    let d: usize = w
                        .parse()
                        .map_err(|_| "the shape must be a tuple of non-negative integers")?;
                    dims.push(d);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b')') => {}
                        _ => return Err("expected `,` or `)` in the shape".into()),
                    }
                    if dims.len() > 64 {
                        return Err("the shape has more than 64 dimensions".into());
                    }
                }
            }
            Some(b'[') => {
                // A structured dtype: skip to the matching bracket.
                let mut depth = 0usize;
                while let Some(c) = self.peek() {
                    self.i += 1;
                    match c {
                        b'[' | b'(' => depth += 1,
                        b']' | b')' => {
                            depth -= 1;
                            if depth == 0 {
                                return Ok(Lit::List);
                            }
                        }
                        _ => {}
                    }
                }
                Err("unterminated list".into())
            }
            _ => match self.word() {
                "True" => Ok(Lit::Bool(true)),
                "False" => Ok(Lit::Bool(false)),
                _ => Err("expected a string, True/False or a tuple".into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numpy_headers() {
        let d =
            parse_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (4, 1, 28, 28), }   \n")
                .unwrap();
        assert_eq!(d[0], ("descr".into(), Lit::Str("<f4".into())));
        assert_eq!(d[1], ("fortran_order".into(), Lit::Bool(false)));
        assert_eq!(d[2], ("shape".into(), Lit::Tuple(vec![4, 1, 28, 28])));
        let d = parse_dict("{'descr': '<i8', 'fortran_order': True, 'shape': (4,), }").unwrap();
        assert_eq!(d[2].1, Lit::Tuple(vec![4]));
        let d =
            parse_dict("{'shape': (), 'descr': [('a', '<f4')], 'fortran_order': False}").unwrap();
        assert_eq!(d[0].1, Lit::Tuple(vec![]));
        assert_eq!(d[1].1, Lit::List);
        assert!(parse_dict("{'shape': (-1,)}").is_err());
        assert!(parse_dict("{'shape': (1,").is_err());
        assert!(parse_dict("").is_err());
    }

    #[test]
    fn from_bytes_keeps_the_dtype_and_refuses_short_headers() {
        let p = Path::new("a.npy");
        let mut b = header_bytes("|u1", &[2, 2]);
        b.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            from_bytes(p, &b).unwrap(),
            (vec![2, 2], NpyData::U8(vec![1, 2, 3, 4]))
        );
        // A header length shorter than the bytes already read with the prefix.
        for hlen in [0u16, 1] {
            let mut b = b"\x93NUMPY\x01\x00".to_vec();
            b.extend_from_slice(&hlen.to_le_bytes());
            b.extend_from_slice(b"{}");
            let e = from_bytes(p, &b).unwrap_err();
            assert!(e.message.contains("malformed header"), "{e}");
        }
        for n in 0..b.len() {
            assert!(from_bytes(p, &b[..n]).is_err());
        }
    }

    /// A reader that counts the bytes taken from it.
    struct Counting<R>(R, u64);

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1 += n as u64;
            Ok(n)
        }
    }

    #[test]
    fn streams_are_read_header_first_and_no_further_than_one_byte_past_the_data() {
        let p = Path::new("a.npz/x.npy");
        let head = header_bytes("|u1", &[16]);
        let hl = head.len() as u64;
        let endless = || Counting(head.as_slice().chain(std::io::repeat(7)), 0);
        // The declared size disagrees with the header: refused before any data are read.
        let mut r = endless();
        let e = read_stream(p, &mut r, hl + (1 << 30), u64::MAX, 0).unwrap_err();
        assert!(e.message.contains("extra bytes"), "{e}");
        assert_eq!(r.1, hl);
        // The sizes agree but the stream goes on: refused after one byte too many.
        let mut r = endless();
        let e = read_stream(p, &mut r, hl + 16, u64::MAX, 0).unwrap_err();
        assert!(e.message.contains("extra bytes"), "{e}");
        assert_eq!(r.1, hl + 17);
        // More data than the limit: refused from the header.
        let mut r = endless();
        let e = read_stream(p, &mut r, hl + 16, 15, 0).unwrap_err();
        assert!(e.message.contains("limit"), "{e}");
        assert_eq!(r.1, hl);
        // Exactly the data: read.
        let mut b = head.clone();
        b.extend_from_slice(&[7; 16]);
        let mut r = Counting(b.as_slice(), 0);
        let (shape, data) = read_stream(p, &mut r, hl + 16, 16, 16).unwrap();
        assert_eq!((shape, data), (vec![16], NpyData::U8(vec![7; 16])));
    }

    #[test]
    fn header_is_aligned() {
        for shape in [vec![], vec![3], vec![4, 1, 28, 28]] {
            let h = header_bytes("<f4", &shape);
            assert_eq!(h.len() % 64, 0);
            assert_eq!(*h.last().unwrap(), b'\n');
            assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
        }
    }
}
