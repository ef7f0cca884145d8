//! Training checkpoints: the model's weights plus what resuming needs.
//!
//! In: the current [`Weights`], the optimizer's state and the training progress. Out: one
//! safetensors file, written atomically (temp file, fsync, rename: an interrupt never leaves a
//! broken file). The model's parameters and buffers are stored under their paths exactly as
//! [`Weights::save`] writes them, so a checkpoint loads anywhere weights do (`netc run
//! --weights`, PyTorch's `load_state_dict` after dropping the `optimizer.` keys). Beside them:
//! - `optimizer.m.<path>` / `optimizer.v.<path>`: SGD's momentum buffer or Adam's moments;
//! - metadata `netc.progress`: JSON with the epoch and batch to continue from, the global step,
//!   the optimizer's step count, its settings and the per-epoch history.

use std::collections::HashMap;
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::io::IoError;
use crate::io::weights::{CHECKPOINT_PREFIX, Value, Weights};
use crate::layer_graph::LayerGraph;

use super::optim::OptimState;

/// Where training stands.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Progress {
    /// The epoch to continue with (0-based) and the batch within it.
    pub epoch: usize,
    pub batch: usize,
    /// Steps taken in all.
    pub step: u64,
    /// The optimizer's settings when saved (for the message if they differ on resume).
    pub optimizer: String,
    pub seed: u64,
    pub history: Vec<EpochRecord>,
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
    pub seconds: f64,
    pub images_per_second: f64,
}

/// A loaded checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub weights: Weights,
    /// Optimizer state by parameter path: (first moment / momentum, second moment).
    pub moments: HashMap<String, (Vec<f32>, Vec<f32>)>,
    /// None for a plain weights file (no training state).
    pub progress: Option<Progress>,
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

/// Reads a checkpoint (or a plain weights file, which has no training state).
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
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| IoError::new(path, format!("not a safetensors file: {e}")))?;
    let mut moments: HashMap<String, (Vec<f32>, Vec<f32>)> = HashMap::new();
    for (name, view) in st.tensors() {
        let Some(rest) = name.strip_prefix(CHECKPOINT_PREFIX) else {
            continue;
        };
        let Some((kind, param)) = rest.split_once('.') else {
            continue;
        };
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(IoError::new(
                path,
                format!("optimizer tensor `{name}` is not F32"),
            ));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let entry = moments.entry(param.to_string()).or_default();
        match kind {
            "m" => entry.0 = data,
            "v" => entry.1 = data,
            _ => {}
        }
    }
    Ok(Checkpoint {
        weights,
        moments,
        progress,
    })
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
