//! NumPy `.npz` archives (`np.savez` / `np.savez_compressed`).
//!
//! In: an `.npz` file, or a directory holding `train.npz` and `test.npz`, plus the model
//! input's `[C, H, W]` (to recognize channels-last arrays). Images are `x` (float32, float64
//! or uint8; `[N, C, H, W]`, `[N, H, W]` meaning one channel, or `[N, H, W, C]` when that is
//! what matches the model's input — as Keras saves CIFAR — which is transposed), labels are
//! `y` (int64, int32, int8 or uint8; `[N]` or `[N, 1]`). Out: a [`Split`]:
//!
//! - a directory with `train.npz` and `test.npz`, each holding `x` and `y`;
//! - one file with `x_train`, `y_train`, `x_test`, `y_test` (as `keras.datasets` arrays
//!   are often saved);
//! - one file with only `x` and `y`: the **last sixth** of the samples (`N / 6`, rounded
//!   down) is held out as the test set, the rest is the training set, in file order.
//!
//! uint8 images stay bytes (scaled by 1/255 when batched); float images are used as they are.
//! Each `.npy` member is read as it is decompressed ([`crate::io::npy::read_stream`]): its
//! header first, which must account for the member's declared size and stay within the data
//! limit ([`Kind::Data`]), then exactly the bytes it declares (one byte more is an error, and
//! nothing past it is inflated); errors name `archive.npz/member.npy`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use zip::ZipArchive;

use super::{DataError, Dataset, Field, Pixels, Split, check_labels, file_name};
use crate::io::Kind;
use crate::io::npy::{NpyData, read_stream};

/// True when `dir` has a `train.npz` or a `test.npz` (a missing partner is reported when
/// loading).
pub fn is_split_dir(dir: &Path) -> bool {
    dir.join("train.npz").is_file() || dir.join("test.npz").is_file()
}

/// Loads `dir/train.npz` and `dir/test.npz`, each with `x` and `y`.
pub fn load_dir(dir: &Path, shape: &[usize]) -> Result<Split, DataError> {
    let (train_path, test_path) = (dir.join("train.npz"), dir.join("test.npz"));
    for p in [&train_path, &test_path] {
        if !p.is_file() {
            return Err(DataError::new(
                dir,
                format!(
                    "{} is missing: an .npz dataset directory holds train.npz and test.npz",
                    file_name(p)
                ),
            ));
        }
    }
    let mut train = Archive::open(&train_path)?;
    let mut test = Archive::open(&test_path)?;
    let name = file_name(dir);
    Ok(Split {
        train: train.dataset(format!("{name} train"), "x", "y", shape)?,
        test: test.dataset(format!("{name} test"), "x", "y", shape)?,
    })
}

/// Loads one `.npz` file: `x_train`, `y_train`, `x_test`, `y_test`, or `x` and `y` with the
/// last sixth held out for testing.
pub fn load_file(path: &Path, shape: &[usize]) -> Result<Split, DataError> {
    let mut a = Archive::open(path)?;
    let name = file_name(path);
    if a.has("x_train") || a.has("x_test") {
        return Ok(Split {
            train: a.dataset(format!("{name} train"), "x_train", "y_train", shape)?,
            test: a.dataset(format!("{name} test"), "x_test", "y_test", shape)?,
        });
    }
    if a.has("x") {
        let all = a.dataset(name.clone(), "x", "y", shape)?;
        let n = all.len();
        let held = n / 6;
        if held == 0 {
            return Err(DataError::new(
                path,
                format!(
                    "only {n} samples: holding out the last sixth for testing needs at least 6"
                ),
            ));
        }
        let train_idx: Vec<usize> = (0..n - held).collect();
        let test_idx: Vec<usize> = (n - held..n).collect();
        return Ok(Split {
            train: all.subset(&train_idx, format!("{name} train (first 5/6)")),
            test: all.subset(&test_idx, format!("{name} test (last 1/6)")),
        });
    }
    Err(DataError::new(
        path,
        format!(
            "no images in the archive: expected arrays `x` and `y`, or `x_train`, `y_train`, \
             `x_test` and `y_test`; found {}",
            if a.names.is_empty() {
                "none".to_string()
            } else {
                a.names
                    .iter()
                    .map(|n| format!("`{}`", n.strip_suffix(".npy").unwrap_or(n)))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
    ))
}

struct Archive {
    path: PathBuf,
    zip: ZipArchive<File>,
    names: Vec<String>,
}

impl Archive {
    fn open(path: &Path) -> Result<Archive, DataError> {
        let (mut f, _) = crate::io::open_limited(path, Kind::Data)?;
        let mut magic = [0u8; 6];
        let got = f
            .read(&mut magic)
            .map_err(|e| DataError::os(path, "cannot read", &e))?;
        if got == 0 {
            return Err(DataError::new(path, "not an .npz file: the file is empty"));
        }
        if &magic[..got] == b"\x93NUMPY" {
            return Err(DataError::new(
                path,
                "a single .npy array; training data need an .npz archive with images `x` and \
                 labels `y` (np.savez(path, x=x, y=y))",
            ));
        }
        f.seek(SeekFrom::Start(0))
            .map_err(|e| DataError::os(path, "cannot read", &e))?;
        let zip = ZipArchive::new(f).map_err(|e| {
            DataError::new(
                path,
                format!("not an .npz file (a zip archive of .npy arrays): {e}"),
            )
        })?;
        let names = zip
            .file_names()
            .filter_map(|n| n.ok().map(|n| n.into_owned()))
            .collect();
        Ok(Archive {
            path: path.to_path_buf(),
            zip,
            names,
        })
    }

    /// The archive's member for array `key` (`key.npy`, or `key` as it is).
    fn member_name(&self, key: &str) -> Option<String> {
        let with_ext = format!("{key}.npy");
        [with_ext, key.to_string()]
            .into_iter()
            .find(|n| self.names.iter().any(|m| m == n))
    }

    fn has(&self, key: &str) -> bool {
        self.member_name(key).is_some()
    }

    /// Reads array `key`; the path in errors is `archive.npz/key.npy`.
    fn array(&mut self, key: &str) -> Result<(PathBuf, Vec<usize>, NpyData), DataError> {
        let Some(member) = self.member_name(key) else {
            return Err(DataError::new(
                &self.path,
                format!("the archive has no array `{key}`"),
            ));
        };
        let mpath = self.path.join(&member);
        let mut f = self
            .zip
            .by_name(&member)
            .map_err(|e| DataError::new(&mpath, format!("cannot read the archive member: {e}")))?;
        // The header comes first, from the decompressing stream: its shape must account for
        // the member's declared size, and only the data it declares are decompressed (the
        // buffer reserved no larger than the compressed data could give).
        let (size, reserve) = (f.size(), f.compressed_size().saturating_mul(1032));
        let (shape, data) = read_stream(&mpath, &mut f, size, Kind::Data.cap(), reserve)?;
        Ok((mpath, shape, data))
    }

    /// The dataset of images `xk` and labels `yk`, with every other array of the same
    /// suffix (`box` beside `x` and `y`, `box_train` beside `x_train`) as a [`Field`] named
    /// without it. Labels may be missing when there are fields (targets only).
    fn dataset(
        &mut self,
        name: String,
        xk: &str,
        yk: &str,
        model: &[usize],
    ) -> Result<Dataset, DataError> {
        let suffix = xk.strip_prefix('x').unwrap_or("");
        let others: Vec<String> = self
            .names
            .iter()
            .map(|n| n.strip_suffix(".npy").unwrap_or(n).to_string())
            .filter(|k| k != xk && k != yk)
            .filter(|k| match suffix {
                "" => !k.ends_with("_train") && !k.ends_with("_test"),
                s => k.ends_with(s),
            })
            .collect();
        for k in [xk, yk] {
            let optional = k == yk && !others.is_empty();
            if !self.has(k) && !optional {
                return Err(DataError::new(
                    &self.path,
                    format!(
                        "the archive has `{}` but no `{k}`",
                        if k == xk { yk } else { xk }
                    ),
                ));
            }
        }
        let (xpath, xshape, x) = self.array(xk)?;
        let mut ds = if self.has(yk) {
            let (ypath, yshape, y) = self.array(yk)?;
            images_and_labels(name, &xpath, &xshape, x, &ypath, &yshape, y, model)?
        } else {
            // No labels: the images with label 0 and no classes; the targets are fields.
            let n = xshape.first().copied().unwrap_or(0);
            let y = NpyData::I64(vec![0; n]);
            let mut ds = images_and_labels(name, &xpath, &xshape, x, &xpath, &[n], y, model)?;
            ds.classes = 0;
            ds
        };
        for k in others {
            let field = k[..k.len() - suffix.len()].to_string();
            let (path, shape, data) = self.array(&k)?;
            let n = ds.len();
            if shape.first() != Some(&n) {
                return Err(DataError::new(
                    &path,
                    format!(
                        "`{k}` has shape {}, but there are {n} images: every array beside the \
                         images holds one row per image",
                        crate::io::show_shape(&shape)
                    ),
                ));
            }
            let values: Vec<f32> = match data {
                NpyData::F32(v) => v,
                NpyData::F64(v) => v.into_iter().map(|x| x as f32).collect(),
                NpyData::I64(v) => v.into_iter().map(|x| x as f32).collect(),
                NpyData::I32(v) => v.into_iter().map(|x| x as f32).collect(),
                NpyData::I8(v) => v.into_iter().map(f32::from).collect(),
                NpyData::U8(v) => v.into_iter().map(f32::from).collect(),
            };
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(DataError::new(
                    &path,
                    format!("`{k}` has a value that is not finite at position {i}"),
                ));
            }
            let per: Vec<usize> = match &shape[1..] {
                [] => vec![1],
                rest => rest.to_vec(),
            };
            ds.fields.push(Field {
                name: field,
                shape: per,
                values,
                source: format!("{} (`{k}`)", self.path.display()),
            });
        }
        Ok(ds)
    }
}

/// How an `x` array's axes map to `[N, C, H, W]`.
enum Layout {
    /// `[N, H, W]`: one channel.
    Nhw,
    Nchw,
    /// `[N, H, W, C]`: transposed on load.
    Nhwc,
}

#[allow(clippy::too_many_arguments)]
fn images_and_labels(
    name: String,
    xpath: &Path,
    xshape: &[usize],
    x: NpyData,
    ypath: &Path,
    yshape: &[usize],
    y: NpyData,
    model: &[usize],
) -> Result<Dataset, DataError> {
    let (n, layout, sample_shape) = match *xshape {
        // Samples of the model input's shape, of any rank (vectors `[N, F]` included).
        [n, ref rest @ ..] if rest == model => (n, Layout::Nchw, rest.to_vec()),
        [n, h, w] if model.len() == 3 => (n, Layout::Nhw, vec![1, h, w]),
        [n, a, b, c] if model.len() == 3 => {
            if [c, a, b] == model || (matches!(c, 1 | 3) && !matches!(a, 1 | 3)) {
                (n, Layout::Nhwc, vec![c, a, b])
            } else {
                (n, Layout::Nchw, vec![a, b, c])
            }
        }
        // Anything else as it is: the shape check then names both shapes.
        [n, ref rest @ ..] if !rest.is_empty() && model.len() != 3 => {
            (n, Layout::Nchw, rest.to_vec())
        }
        _ => {
            return Err(DataError::new(
                xpath,
                format!(
                    "samples of shape {}; expected [N, C, H, W] or [N, H, W] for images, or \
                     [N, ...] with the model input's shape {} after N",
                    crate::io::show_shape(xshape),
                    crate::io::show_shape(model)
                ),
            ));
        }
    };
    if sample_shape.contains(&0) {
        return Err(DataError::new(
            xpath,
            format!(
                "images of shape {} hold no pixels",
                crate::io::show_shape(xshape)
            ),
        ));
    }
    let ny = match *yshape {
        [n] | [n, 1] => n,
        _ => {
            return Err(DataError::new(
                ypath,
                format!(
                    "labels of shape {}; expected [N] (one class number per image)",
                    crate::io::show_shape(yshape)
                ),
            ));
        }
    };
    if ny != n {
        return Err(DataError::new(
            ypath,
            format!("{ny} labels, but {} has {n} images", xpath.display()),
        ));
    }
    let pixels = match x {
        NpyData::U8(v) => Pixels::U8(to_nchw(v, layout, n, &sample_shape)),
        NpyData::F32(v) => Pixels::F32(to_nchw(v, layout, n, &sample_shape)),
        NpyData::F64(v) => Pixels::F32(to_nchw(
            v.into_iter().map(|x| x as f32).collect(),
            layout,
            n,
            &sample_shape,
        )),
        other => {
            return Err(DataError::new(
                xpath,
                format!(
                    "images of type {}; netc reads float32, float64 or uint8 images",
                    other.dtype_name()
                ),
            ));
        }
    };
    if let Pixels::F32(v) = &pixels
        && let Some(i) = v.iter().position(|x| !x.is_finite())
    {
        return Err(DataError::new(
            xpath,
            format!(
                "image {} has a value that is not finite ({})",
                i / sample_shape.iter().product::<usize>(),
                v[i]
            ),
        ));
    }
    let labels: Vec<i64> = match y {
        NpyData::I64(v) => v,
        NpyData::I32(v) => v.into_iter().map(i64::from).collect(),
        NpyData::I8(v) => v.into_iter().map(i64::from).collect(),
        NpyData::U8(v) => v.into_iter().map(i64::from).collect(),
        other => {
            return Err(DataError::new(
                ypath,
                format!(
                    "labels of type {}; labels are class numbers: int64, int32 or uint8",
                    other.dtype_name()
                ),
            ));
        }
    };
    let classes = check_labels(ypath, &labels, None)?;
    Ok(Dataset {
        name,
        sample_shape,
        pixels,
        labels,
        classes,
        class_names: Vec::new(),
        fields: Vec::new(),
        objects: Vec::new(),
    })
}

/// Samples in `[N, C, H, W]` order.
fn to_nchw<T: Copy + Default>(v: Vec<T>, layout: Layout, n: usize, shape: &[usize]) -> Vec<T> {
    match (layout, shape) {
        (Layout::Nhwc, &[c, h, w]) => {
            let mut out = vec![T::default(); v.len()];
            let plane = h * w;
            for s in 0..n {
                let src = &v[s * plane * c..(s + 1) * plane * c];
                let dst = &mut out[s * plane * c..(s + 1) * plane * c];
                for p in 0..plane {
                    for ch in 0..c {
                        dst[ch * plane + p] = src[p * c + ch];
                    }
                }
            }
            out
        }
        _ => v,
    }
}
