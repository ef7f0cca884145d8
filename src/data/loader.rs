//! Batches for training and evaluation.
//!
//! In: a [`Dataset`] (shared, `Arc`), the model input's normalization ([`Normalize`]) and
//! [`LoaderOptions`] (batch size, shuffle, drop-last, seed, augmentations, prefetch). Out: for
//! each epoch, an iterator of [`Batch`]es: `len` samples as one `N × C × H × W` f32 buffer in
//! C order, with their labels.
//!
//! Per sample: the stored values (pixel / 255 for bytes), the augmentations
//! ([`super::augment`], on the unnormalized image, as torchvision), then
//! `(x - mean[c]) / std[c]`.
//!
//! Everything random is a pure function of (seed, epoch, sample): the epoch's order is a
//! Fisher–Yates shuffle by the stream `[seed, TAG_SHUFFLE, epoch]`, and sample `i`'s
//! augmentation uses the stream `[seed, TAG_AUGMENT, epoch, i]` (`i` is the sample's index in
//! the dataset). Batches are built by one function, [`Loader::batch`]; the prefetching
//! iterator calls the same function on a background thread, two batches ahead through a
//! bounded channel, so its output is bit-identical to building the batches synchronously.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use super::augment;
use super::rng::{Rng, TAG_AUGMENT, TAG_SHUFFLE};
use super::{DataError, Dataset, Pixels};
use crate::layer_graph::InputInfo;
use crate::train_config::Augment;

/// How many batches the background thread may have ready ahead of the consumer.
pub const PREFETCH: usize = 2;

/// Per-channel normalization `(x - mean[c]) / std[c]`, after scaling bytes by 1/255.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalize {
    /// Mean 0 and std 1 for each of `channels` channels: only the 1/255 scaling of bytes.
    pub fn none(channels: usize) -> Normalize {
        Normalize {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// Normalization for `channels` channels from per-channel `mean` and `std` as a spec gives
    /// them: empty for none, one value for every channel, or one value per channel.
    pub fn new(mean: &[f64], std: &[f64], channels: usize) -> Result<Normalize, DataError> {
        let expand = |v: &[f64], default: f32, what: &str| -> Result<Vec<f32>, DataError> {
            match v.len() {
                0 => Ok(vec![default; channels]),
                1 => Ok(vec![v[0] as f32; channels]),
                n if n == channels => Ok(v.iter().map(|&x| x as f32).collect()),
                n => Err(DataError::general(format!(
                    "{n} {what} values for {channels} channels (give one, or one per channel)"
                ))),
            }
        };
        let mean = expand(mean, 0.0, "mean")?;
        let std = expand(std, 1.0, "std")?;
        if let Some(s) = std.iter().find(|s| **s == 0.0 || !s.is_finite()) {
            return Err(DataError::general(format!(
                "a std of {s}: normalization divides by it, so it must be finite and not zero"
            )));
        }
        if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
            return Err(DataError::general(format!("a mean of {m} is not finite")));
        }
        Ok(Normalize { mean, std })
    }

    /// The normalization of a model input (its `mean` and `std`; its channels from its shape).
    pub fn from_input(input: &InputInfo) -> Result<Normalize, DataError> {
        let channels = input.shape.first().copied().unwrap_or(1);
        Normalize::new(&input.mean, &input.std, channels).map_err(|e| DataError {
            message: format!("input `{}`: {}", input.name, e.message),
            ..e
        })
    }
}

/// How batches are made.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderOptions {
    pub batch_size: usize,
    /// Shuffle the samples every epoch (training); otherwise dataset order (evaluation).
    pub shuffle: bool,
    /// Drop the last batch when it would be shorter than `batch_size` (training); otherwise
    /// it comes out shorter (evaluation).
    pub drop_last: bool,
    pub seed: u64,
    /// Applied per sample, in order.
    pub augment: Vec<Augment>,
    /// Build batches on a background thread, [`PREFETCH`] ahead.
    pub prefetch: bool,
}

impl LoaderOptions {
    /// Training: shuffled, last partial batch dropped, augmented, prefetched.
    pub fn train(batch_size: usize, seed: u64, augment: Vec<Augment>) -> LoaderOptions {
        LoaderOptions {
            batch_size,
            shuffle: true,
            drop_last: true,
            seed,
            augment,
            prefetch: true,
        }
    }

    /// Evaluation: dataset order, every sample (the last batch may be shorter), no
    /// augmentation, prefetched.
    pub fn eval(batch_size: usize) -> LoaderOptions {
        LoaderOptions {
            batch_size,
            shuffle: false,
            drop_last: false,
            seed: 0,
            augment: Vec::new(),
            prefetch: true,
        }
    }
}

/// A batch: `len` samples, `x` holding `len × C × H × W` (or `len ×` any sample shape)
/// normalized values in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub x: Vec<f32>,
    pub labels: Vec<i64>,
    pub len: usize,
    /// The shape of one sample: `[C, H, W]` for images.
    pub sample_shape: Vec<usize>,
    /// Which dataset samples these are, in batch order.
    pub indices: Vec<usize>,
    /// The dataset's [`super::Field`]s for these samples, by name, in batch order.
    pub fields: Vec<(String, Vec<f32>)>,
    /// The dataset's annotated objects for these samples, in batch order (empty when the data
    /// have none).
    pub objects: Vec<Vec<crate::detect::Object>>,
}

impl Batch {
    /// The values of field `name`, if the data have it.
    pub fn field(&self, name: &str) -> Option<&[f32]> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

impl Batch {
    /// `[len, C, H, W]` (`len` and the sample shape).
    pub fn shape(&self) -> Vec<usize> {
        let mut s = vec![self.len];
        s.extend(&self.sample_shape);
        s
    }
}

struct Shared {
    data: Arc<Dataset>,
    norm: Normalize,
    opts: LoaderOptions,
}

/// Makes the batches of a dataset, epoch by epoch. Cheap to clone.
#[derive(Clone)]
pub struct Loader {
    shared: Arc<Shared>,
}

impl Loader {
    /// A loader over `data`. Errors: a batch size of 0, a normalization whose channel count
    /// (the first axis) is not the data's, augmentations on samples that are not images.
    pub fn new(
        data: Arc<Dataset>,
        norm: Normalize,
        opts: LoaderOptions,
    ) -> Result<Loader, DataError> {
        if opts.batch_size == 0 {
            return Err(DataError::general("the batch size must be at least 1"));
        }
        let c = data.sample_shape.first().copied().unwrap_or(1);
        if !opts.augment.is_empty() && !super::is_image(&data.sample_shape) {
            return Err(DataError::general(format!(
                "augmentations act on images [C, H, W], but the samples of {} are {}",
                data.name,
                crate::io::show_shape(&data.sample_shape)
            ))
            .with_help("remove `augment` from the spec's train section (and --augment)"));
        }
        // Boxes follow the pixels (`augment_boxes`); landmarks cannot (a flip swaps left and
        // right points, which only the data know how to pair): only the augmentations that
        // leave pixels in place apply to data with landmarks.
        let moving: Vec<String> = opts
            .augment
            .iter()
            .filter(|a| !matches!(a, Augment::ColorShift { .. } | Augment::PcaLighting { .. }))
            .map(|a| format!("`{a}`"))
            .collect();
        let landmarks = data
            .objects
            .iter()
            .flatten()
            .any(|o| !o.landmarks.is_empty());
        if landmarks && !moving.is_empty() {
            return Err(DataError::general(format!(
                "{} moves pixels, and the landmarks of {}'s objects cannot follow (a flip would \
                 swap left and right points)",
                moving.join(", "),
                data.name
            ))
            .with_help(
                "on data with landmarks use the color augmentations only (color_shift, \
                 pca_lighting), or none",
            ));
        }
        if norm.mean.len() != c || norm.std.len() != c {
            return Err(DataError::general(format!(
                "normalization for {} channels, but {} has {c}",
                norm.mean.len(),
                data.name
            )));
        }
        let expected = data.len() * data.sample_len();
        let stored = data.pixels.len();
        if stored != expected {
            return Err(DataError::general(format!(
                "{} holds {stored} values for {} samples of {} values",
                data.name,
                data.len(),
                data.sample_len()
            )));
        }
        Ok(Loader {
            shared: Arc::new(Shared { data, norm, opts }),
        })
    }

    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.shared.data
    }

    pub fn options(&self) -> &LoaderOptions {
        &self.shared.opts
    }

    /// Batches per epoch: `len / batch` with `drop_last`, else rounded up.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.shared.data.len(), self.shared.opts.batch_size);
        if self.shared.opts.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The sample order of `epoch`: shuffled by `(seed, epoch)`, or dataset order.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.shared.data.len()).collect();
        if self.shared.opts.shuffle {
            Rng::from_words(&[self.shared.opts.seed, TAG_SHUFFLE, epoch]).shuffle(&mut order);
        }
        order
    }

    /// Batch `b` of `epoch` given the epoch's `order`.
    pub fn batch(&self, epoch: u64, order: &[usize], b: usize) -> Batch {
        let bs = self.shared.opts.batch_size;
        let start = (b * bs).min(order.len());
        let end = (start + bs).min(order.len());
        self.gather(epoch, order[start..end].to_vec())
    }

    /// The samples `indices` (each below the dataset's length) as one batch, augmented as in
    /// `epoch`: the one function every path uses.
    pub fn gather(&self, epoch: u64, indices: Vec<usize>) -> Batch {
        let s = &*self.shared;
        let shape = &s.data.sample_shape;
        let n = s.data.sample_len();
        // Values per channel (the first axis): the mean/std index is `j / plane`.
        let plane: usize = shape.iter().skip(1).product();
        let mut x = vec![0f32; indices.len() * n];
        let mut labels = Vec::with_capacity(indices.len());
        let mut sample = vec![0f32; n];
        // Detection data: each sample's objects, moved with its pixels by augmentation.
        let detection = !s.data.objects.is_empty();
        let mut objects = Vec::with_capacity(if detection { indices.len() } else { 0 });
        for (k, &i) in indices.iter().enumerate() {
            let mut objs = if detection {
                s.data.objects[i].clone()
            } else {
                Vec::new()
            };
            let clamp = match &s.data.pixels {
                Pixels::U8(p) => {
                    for (v, &b) in sample.iter_mut().zip(&p[i * n..(i + 1) * n]) {
                        *v = b as f32 / 255.0;
                    }
                    true
                }
                Pixels::F32(_) | Pixels::Mapped(_) => {
                    let p = s.data.pixels.floats().unwrap_or_default();
                    sample.copy_from_slice(&p[i * n..(i + 1) * n]);
                    false
                }
            };
            if !s.opts.augment.is_empty() {
                let mut rng = Rng::from_words(&[s.opts.seed, TAG_AUGMENT, epoch, i as u64]);
                // `new` allows augmentations on images only.
                if let &[c, h, w] = shape.as_slice() {
                    let augs = &s.opts.augment;
                    if detection {
                        augment::apply_with_objects(
                            augs,
                            &mut sample,
                            [c, h, w],
                            clamp,
                            &mut rng,
                            &mut objs,
                        );
                    } else {
                        augment::apply(augs, &mut sample, [c, h, w], clamp, &mut rng);
                    }
                }
            }
            if detection {
                objects.push(objs);
            }
            let out = &mut x[k * n..(k + 1) * n];
            for (j, (o, &v)) in out.iter_mut().zip(&sample).enumerate() {
                let c = j / plane.max(1);
                *o = (v - s.norm.mean[c]) / s.norm.std[c];
            }
            labels.push(s.data.labels[i]);
        }
        let fields = s
            .data
            .fields
            .iter()
            .map(|f| {
                let w = f.width();
                let values = indices
                    .iter()
                    .flat_map(|&i| &f.values[i * w..(i + 1) * w])
                    .copied()
                    .collect();
                (f.name.clone(), values)
            })
            .collect();
        Batch {
            x,
            labels,
            len: indices.len(),
            sample_shape: shape.clone(),
            indices,
            fields,
            objects,
        }
    }

    /// The batches of `epoch`, prefetched on a background thread when the options say so.
    pub fn epoch(&self, epoch: u64) -> Batches {
        if self.shared.opts.prefetch {
            self.epoch_prefetched(epoch)
        } else {
            self.epoch_sync(epoch)
        }
    }

    /// The batches of `epoch`, each built when asked for, on the calling thread.
    pub fn epoch_sync(&self, epoch: u64) -> Batches {
        Batches {
            remaining: self.batches_per_epoch(),
            inner: Inner::Sync {
                loader: self.clone(),
                epoch,
                order: self.order(epoch),
                next: 0,
            },
        }
    }

    /// The batches of `epoch`, built on a background thread at most [`PREFETCH`] ahead.
    /// Dropping the iterator early stops the thread.
    pub fn epoch_prefetched(&self, epoch: u64) -> Batches {
        let (tx, rx) = sync_channel(PREFETCH);
        let loader = self.clone();
        let count = self.batches_per_epoch();
        let handle = std::thread::Builder::new()
            .name("netc-data".into())
            .spawn(move || {
                let order = loader.order(epoch);
                for b in 0..count {
                    // The receiver is gone: the consumer stopped early.
                    if tx.send(loader.batch(epoch, &order, b)).is_err() {
                        break;
                    }
                }
            });
        match handle {
            Ok(handle) => Batches {
                remaining: count,
                inner: Inner::Prefetch {
                    rx: Some(rx),
                    handle: Some(handle),
                },
            },
            // No thread to be had: build the batches here instead (same output).
            Err(_) => self.epoch_sync(epoch),
        }
    }
}

/// The batches of one epoch, in order.
pub struct Batches {
    remaining: usize,
    inner: Inner,
}

enum Inner {
    Sync {
        loader: Loader,
        epoch: u64,
        order: Vec<usize>,
        next: usize,
    },
    Prefetch {
        rx: Option<Receiver<Batch>>,
        handle: Option<JoinHandle<()>>,
    },
}

impl Iterator for Batches {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.remaining == 0 {
            return None;
        }
        let batch = match &mut self.inner {
            Inner::Sync {
                loader,
                epoch,
                order,
                next,
            } => {
                let b = loader.batch(*epoch, order, *next);
                *next += 1;
                Some(b)
            }
            Inner::Prefetch { rx, handle } => match rx.as_ref().map(|r| r.recv()) {
                Some(Ok(b)) => Some(b),
                _ => {
                    // The thread ended without sending: it panicked. Re-raise its panic here.
                    rx.take();
                    if let Some(h) = handle.take()
                        && let Err(payload) = h.join()
                    {
                        std::panic::resume_unwind(payload);
                    }
                    None
                }
            },
        };
        self.remaining = if batch.is_some() {
            self.remaining - 1
        } else {
            0
        };
        batch
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Batches {}

impl Drop for Batches {
    fn drop(&mut self) {
        if let Inner::Prefetch { rx, handle } = &mut self.inner {
            // Closing the channel first makes a blocked `send` fail, so the thread ends.
            rx.take();
            if let Some(h) = handle.take() {
                let _ = h.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(n: usize) -> Arc<Dataset> {
        Arc::new(Dataset {
            name: "tiny".into(),
            sample_shape: vec![1, 2, 2],
            pixels: Pixels::U8((0..n * 4).map(|i| (i % 256) as u8).collect()),
            labels: (0..n as i64).map(|i| i % 3).collect(),
            classes: 3,
            class_names: Vec::new(),
            fields: Vec::new(),
            objects: Vec::new(),
        })
    }

    #[test]
    fn batch_counts() {
        let d = tiny(10);
        let l = Loader::new(
            d.clone(),
            Normalize::none(1),
            LoaderOptions::train(4, 0, vec![]),
        )
        .unwrap();
        assert_eq!(l.batches_per_epoch(), 2);
        assert_eq!(l.epoch(0).map(|b| b.len).collect::<Vec<_>>(), vec![4, 4]);
        let l = Loader::new(d, Normalize::none(1), LoaderOptions::eval(4)).unwrap();
        assert_eq!(l.batches_per_epoch(), 3);
        assert_eq!(l.epoch(0).map(|b| b.len).collect::<Vec<_>>(), vec![4, 4, 2]);
    }

    #[test]
    fn normalization_is_applied_per_channel() {
        let d = Arc::new(Dataset {
            name: "two".into(),
            sample_shape: vec![2, 1, 1],
            pixels: Pixels::U8(vec![255, 0]),
            labels: vec![0],
            classes: 1,
            class_names: Vec::new(),
            fields: Vec::new(),
            objects: Vec::new(),
        });
        let norm = Normalize::new(&[0.5, 0.25], &[0.5, 0.25], 2).unwrap();
        let l = Loader::new(d, norm, LoaderOptions::eval(1)).unwrap();
        let b = l.epoch_sync(0).next().unwrap();
        assert_eq!(b.x, vec![1.0, -1.0]);
    }

    #[test]
    fn dropping_a_prefetching_epoch_early_stops_its_thread() {
        let l = Loader::new(tiny(100), Normalize::none(1), LoaderOptions::eval(1)).unwrap();
        let mut it = l.epoch_prefetched(0);
        assert!(it.next().is_some());
        drop(it); // Must not hang.
    }

    #[test]
    fn bad_options_are_errors() {
        assert!(Loader::new(tiny(3), Normalize::none(1), LoaderOptions::eval(0)).is_err());
        assert!(Loader::new(tiny(3), Normalize::none(3), LoaderOptions::eval(1)).is_err());
        assert!(Normalize::new(&[0.5, 0.5], &[], 3).is_err());
        assert!(Normalize::new(&[], &[0.0], 3).is_err());
        assert_eq!(
            Normalize::new(&[0.5], &[2.0], 3).unwrap(),
            Normalize {
                mean: vec![0.5; 3],
                std: vec![2.0; 3]
            }
        );
    }
}
