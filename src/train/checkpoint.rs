//! Training checkpoints: the model's weights plus what resuming needs.
//!
//! In: the current [`Weights`], the optimizer's state and the training progress. Out: one
//! safetensors file, written atomically (temp file, fsync, rename: an interrupt never leaves a
//! broken file). The model's parameters and buffers are stored under their paths exactly as
//! [`Weights::save`] writes them, so a checkpoint loads anywhere weights do (`netc run
//! --weights`, PyTorch's `load_state_dict` after dropping the `optimizer.` keys). Beside them:
//! - `optimizer.m.<path>` / `optimizer.v.<path>`: SGD's momentum buffer or Adam's moments;
//! - metadata `netc.progress`: JSON with the epoch and batch to continue from, the global step
//!   (also the optimizer's step count), the batch size, the running sums of the unfinished
//!   epoch, the optimizer's settings and the per-epoch history (without wall-clock times, so
//!   that identical training writes identical bytes).
//!
//! Nothing in a checkpoint is trusted on load: every weight and optimizer tensor must be finite
//! (a second moment also not negative) and shaped like its parameter, and the progress must be
//! consistent in itself ([`load`]) and with the spec and the data of the resumed run
//! ([`check_progress`]); errors name the field or the tensor (and the first bad element).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::io::weights::{CHECKPOINT_PREFIX, Value, Weights};
use crate::io::{IoError, show_shape};
use crate::layer_graph::LayerGraph;

use super::optim::OptimState;

/// Where training stands.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Progress {
    /// The epoch to continue with (0-based) and the batch within it.
    pub epoch: usize,
    pub batch: usize,
    /// Steps taken in all (also the optimizer's step count).
    pub step: u64,
    /// The optimizer's settings when saved (for the message if they differ on resume).
    pub optimizer: String,
    pub seed: u64,
    /// The batch size `batch` counts in (absent in checkpoints of older versions).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// The running sums of the epoch so far, when it is unfinished (`batch > 0`), so that a
    /// resumed epoch reports the same figures as one run straight through.
    #[serde(default)]
    pub epoch_sums: Option<EpochSums>,
    pub history: Vec<EpochRecord>,
    /// A verification model's decision threshold, chosen at training time on held-out pairs
    /// (`netc verify` uses it), in the units of [`crate::verify::score_kind`]: a distance
    /// between embeddings (`distance <= threshold` ⇒ same) or a learned similarity, the
    /// sigmoid of the model's logit (`similarity >= threshold` ⇒ same). See
    /// [`crate::verify::Score::best_threshold`].
    #[serde(default)]
    pub threshold: Option<f64>,
}

/// The sums behind an epoch's training loss and accuracy, over its batches so far.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct EpochSums {
    /// Σ batch mean loss × batch size.
    pub loss_sum: f64,
    pub correct: u64,
    pub seen: u64,
}

/// The metrics of one finished epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub test_loss: Option<f64>,
    pub test_accuracy: Option<f64>,
    pub lr: f64,
    /// Wall-clock figures of the run that trained the epoch: not saved in checkpoints (0 after
    /// loading one), which hold only what the training computed.
    #[serde(skip)]
    pub seconds: f64,
    #[serde(skip)]
    pub images_per_second: f64,
}

/// A loaded checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The file it was read from (for messages).
    pub source: PathBuf,
    pub weights: Weights,
    /// Optimizer state by parameter path: (first moment / momentum, second moment).
    pub moments: HashMap<String, (Vec<f32>, Vec<f32>)>,
    /// None for a plain weights file (no training state).
    pub progress: Option<Progress>,
}

/// What the resumed run is, to check a checkpoint's progress against.
#[derive(Debug, Clone, Copy)]
pub struct RunShape {
    /// Epochs planned in all.
    pub epochs: usize,
    /// Batches in an epoch of this data at this batch size.
    pub batches: usize,
    pub batch_size: usize,
    /// Samples in the training set.
    pub samples: usize,
}

/// Writes a checkpoint atomically. `tensors` lists the optimizer's tensors as parameter
/// indices, in the state's order.
pub fn save(
    path: &Path,
    lg: &LayerGraph,
    weights: &Weights,
    optim: &OptimState,
    tensors: &[usize],
    progress: &Progress,
) -> Result<(), IoError> {
    let mut extra = Vec::new();
    for (k, &i) in tensors.iter().enumerate() {
        let p = &lg.params[i];
        for (kind, data) in [("m", &optim.m[k]), ("v", &optim.v[k])] {
            if data.is_empty() {
                continue;
            }
            let a = ArrayD::from_shape_vec(IxDyn(&p.shape), data.clone())
                .map_err(|e| IoError::new(path, format!("optimizer state of {}: {e}", p.path)))?;
            extra.push((
                format!("{CHECKPOINT_PREFIX}{kind}.{}", p.path),
                Value::F32(a),
            ));
        }
    }
    let json = serde_json::to_string(progress)
        .map_err(|e| IoError::new(path, format!("cannot encode the progress: {e}")))?;
    let meta = HashMap::from([("netc.progress".to_string(), json)]);
    weights.save_with(path, lg, extra, meta)
}

/// Reads a checkpoint (or a plain weights file, which has no training state) and checks
/// everything in it that does not depend on the resumed run: finite weights, optimizer
/// tensors of known parameters with their shapes and finite values, a consistent progress.
pub fn load(path: &Path, lg: &LayerGraph) -> Result<Checkpoint, IoError> {
    let weights = Weights::load(path, lg)?;
    let bytes = crate::io::read_limited(path, crate::io::Kind::Checkpoint)?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| IoError::new(path, format!("not a safetensors file: {e}")))?;
    let progress = match meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("netc.progress"))
    {
        Some(json) => Some(serde_json::from_str::<Progress>(json).map_err(|e| {
            IoError::new(
                path,
                format!("the checkpoint's training progress is unreadable: {e}"),
            )
        })?),
        None => None,
    };
    if let Some(p) = &progress {
        check_progress_itself(p).map_err(|e| IoError::new(path, e))?;
    }
    for (p, v) in lg.params.iter().zip(&weights.values) {
        if let Value::F32(a) = v {
            check_finite(&p.path, a.shape(), a.iter().copied(), false)
                .map_err(|e| IoError::new(path, e))?;
        }
    }
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| IoError::new(path, format!("not a safetensors file: {e}")))?;
    let mut moments: HashMap<String, (Vec<f32>, Vec<f32>)> = HashMap::new();
    for (name, view) in st.tensors() {
        let Some(rest) = name.strip_prefix(CHECKPOINT_PREFIX) else {
            continue;
        };
        let bad = |m: String| IoError::new(path, format!("optimizer tensor `{name}`: {m}"));
        let (kind, param) = match rest.split_once('.') {
            Some((k @ ("m" | "v"), param)) => (k, param),
            _ => {
                return Err(bad(format!(
                    "not optimizer state (expected `{CHECKPOINT_PREFIX}m.<parameter>` or \
                     `{CHECKPOINT_PREFIX}v.<parameter>`)"
                )));
            }
        };
        let Some(p) = lg.params.iter().find(|p| p.path == param) else {
            return Err(bad(format!(
                "model `{}` has no parameter `{param}`",
                lg.name
            )));
        };
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(bad(format!("is {:?}, expected F32", view.dtype())));
        }
        if view.shape() != p.shape.as_slice() {
            return Err(bad(format!(
                "has shape {}, but `{param}` has shape {}",
                show_shape(view.shape()),
                show_shape(&p.shape)
            )));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        check_finite(&name, &p.shape, data.iter().copied(), kind == "v")
            .map_err(|e| IoError::new(path, e))?;
        let entry = moments.entry(param.to_string()).or_default();
        if kind == "m" {
            entry.0 = data;
        } else {
            entry.1 = data;
        }
    }
    Ok(Checkpoint {
        source: path.to_path_buf(),
        weights,
        moments,
        progress,
    })
}

/// The first element of a tensor that is not finite (or, for a second moment, negative), as
/// `name[i, j, ...] = value`.
fn check_finite(
    name: &str,
    shape: &[usize],
    values: impl Iterator<Item = f32>,
    second_moment: bool,
) -> Result<(), String> {
    let Some((i, x)) = values
        .enumerate()
        .find(|&(_, x)| !x.is_finite() || (second_moment && x < 0.0))
    else {
        return Ok(());
    };
    let mut index = vec![0; shape.len()];
    let mut rest = i;
    for (k, &d) in shape.iter().enumerate().rev() {
        index[k] = rest % d.max(1);
        rest /= d.max(1);
    }
    let at = index
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let why = if x.is_finite() {
        "a second moment is never negative"
    } else {
        "values must be finite"
    };
    Err(format!("`{name}[{at}]` is {x}: {why}"))
}

/// The progress's own consistency: one history record per finished epoch, numbered in order;
/// steps enough for the epochs and batches done; running sums that fit the batches done.
fn check_progress_itself(p: &Progress) -> Result<(), String> {
    let f = "netc.progress";
    if p.history.len() != p.epoch {
        return Err(format!(
            "{f}.epoch = {} but {f}.history has {} epochs (one record per finished epoch)",
            p.epoch,
            p.history.len()
        ));
    }
    if let Some(r) = p.history.iter().enumerate().find(|(i, r)| r.epoch != i + 1) {
        return Err(format!(
            "{f}.history[{}].epoch = {}, expected {}",
            r.0,
            r.1.epoch,
            r.0 + 1
        ));
    }
    // Every finished epoch took at least one step, and so did every batch of this one.
    let least = p.epoch as u128 + p.batch as u128;
    if (p.step as u128) < least {
        return Err(format!(
            "{f}.step = {} but {f}.epoch = {} and {f}.batch = {} need at least {least} steps",
            p.step, p.epoch, p.batch
        ));
    }
    if p.batch_size == Some(0) {
        return Err(format!("{f}.batch_size = 0, expected at least 1"));
    }
    match (&p.epoch_sums, p.batch) {
        (Some(_), 0) => {
            return Err(format!(
                "{f}.epoch_sums are given but {f}.batch = 0 (no batch of the epoch is done)"
            ));
        }
        (Some(s), b) => {
            if let Some(size) = p.batch_size
                && s.seen as u128 != b as u128 * size as u128
            {
                return Err(format!(
                    "{f}.epoch_sums.seen = {} but {b} batches of {size} are {}",
                    s.seen,
                    b as u128 * size as u128
                ));
            }
            if s.correct > s.seen {
                return Err(format!(
                    "{f}.epoch_sums.correct = {} is more than the {} samples seen",
                    s.correct, s.seen
                ));
            }
            if !s.loss_sum.is_finite() {
                return Err(format!(
                    "{f}.epoch_sums.loss_sum = {} is not finite",
                    s.loss_sum
                ));
            }
        }
        (None, _) => {}
    }
    Ok(())
}

/// Checks a checkpoint's progress against the run that resumes it: the epoch within the
/// epochs planned, the batch within an epoch of this data, the same batch size mid-epoch, and
/// no more steps than the epochs could have taken (which also keeps the count far from
/// overflowing). `source` names the checkpoint in the messages.
pub fn check_progress(p: &Progress, run: &RunShape, source: &Path) -> Result<(), String> {
    let f = format!("{}: netc.progress", source.display());
    if p.epoch > run.epochs || (p.epoch == run.epochs && p.batch > 0) {
        return Err(format!(
            "{f}.epoch = {} (batch {}) is beyond the end of this training of {} epochs; pass \
             --epochs {} or more to train further",
            p.epoch,
            p.batch,
            run.epochs,
            p.epoch.saturating_add(1)
        ));
    }
    if p.batch > 0 {
        if p.batch >= run.batches {
            return Err(format!(
                "{f}.batch = {} but an epoch of this data has {} batches (of {})",
                p.batch, run.batches, run.batch_size
            ));
        }
        if let Some(size) = p.batch_size
            && size != run.batch_size
        {
            return Err(format!(
                "{f}.batch_size = {size}, but this run uses batches of {}: an epoch stopped \
                 midway continues only with the same batch size (pass --batch {size})",
                run.batch_size
            ));
        }
    }
    // A batch has at least one sample: an epoch takes at most `samples` steps.
    let most = p.epoch as u128 * run.samples as u128 + p.batch as u128;
    if p.step as u128 > most {
        return Err(format!(
            "{f}.step = {} but {} epochs of at most {} steps (one per sample of this data) and \
             {} batches are at most {most}",
            p.step, p.epoch, run.samples, p.batch
        ));
    }
    Ok(())
}

/// Restores the optimizer's state from a checkpoint's moments: every tensor the optimizer
/// keeps state for must be there, with the right size.
pub fn restore_optimizer(
    optim: &mut OptimState,
    lg: &LayerGraph,
    tensors: &[usize],
    ck: &Checkpoint,
    step: u64,
) -> Result<(), String> {
    for (k, &i) in tensors.iter().enumerate() {
        let p = &lg.params[i];
        let (m, v) = ck.moments.get(&p.path).cloned().unwrap_or_default();
        for (want, got, what) in [(&mut optim.m[k], m, "m"), (&mut optim.v[k], v, "v")] {
            if want.is_empty() {
                continue;
            }
            if got.len() != want.len() {
                return Err(format!(
                    "the checkpoint has no optimizer state `{CHECKPOINT_PREFIX}{what}.{}` of {} values \
                     (was it saved with another optimizer or other frozen layers?)",
                    p.path,
                    want.len()
                ));
            }
            *want = got;
        }
    }
    optim.step = step;
    Ok(())
}
