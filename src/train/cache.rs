//! The frozen-prefix feature cache: train only what follows a frozen prefix, from that
//! prefix's outputs computed once per sample.
//!
//! In: a layer graph (freeze flags applied), its weights, the training data [`Split`] and what
//! the loader would do to the samples (normalization, augmentations). Out: a [`Plan`] (where
//! the model is cut and what the cache costs) or the reason there is none, and then
//! [`build`]: the suffix ([`crate::cut::suffix`]; the same parameter table, so its weights and
//! checkpoints are the whole model's) and a [`Split`] of its inputs — the prefix's values for
//! every training and test sample, as F32 samples of the boundary's shape with the labels —
//! ready for [`super::session::run`] with no normalization and no augmentation.
//!
//! When it applies: the cut is [`crate::cut::frozen_prefix_boundary`]'s (everything before it
//! has no trainable parameter, no dropout, no batchnorm in training mode), and no random
//! augmentation acts on the input (augmentations act on the input, before every layer: any of
//! them disables the cache). Then each sample's prefix value is the same at every step, so
//! training the suffix on cached values computes what training the whole model computes: the
//! prefix runs in inference mode, which is what frozen layers run in training too. The values
//! equal the whole model's forward pass up to the rounding of differently fused kernels (see
//! `tests/transfer_cli.rs`, which trains with and without the cache and compares weights).
//!
//! Storage: the cache holds `samples × boundary size` f32 values. Up to its memory bound
//! ([`DEFAULT_LIMIT`], `--cache-limit`) they are kept in memory; past it they go to an unnamed
//! file in a directory (`--cache-dir`, default the system's temporary directory), memory-mapped
//! ([`crate::data::mapped`]), so the kernel pages them as memory allows. A cache that the
//! directory's file system has no room for is not built (an error when it was asked for).

use std::path::Path;

use crate::data::mapped::Spill;
use crate::data::{Dataset, Normalize, Pixels, Split};
use crate::io::weights::Weights;
use crate::layer_graph::{LayerGraph, NodeId};
use crate::train_config::Augment;

/// The default most memory the cache may take: 4 GiB.
pub const DEFAULT_LIMIT: u64 = 4 << 30;

/// Where the model is cut and what the cache holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The boundary node and its path (the suffix's input is named after it).
    pub path: String,
    pub node: NodeId,
    /// Its per-sample shape.
    pub shape: Vec<usize>,
    /// The layers before the cut, as `netc summary` numbers them (the frozen prefix).
    pub layers: usize,
    /// Bytes of cached values for all samples.
    pub bytes: u64,
}

/// Where to cut `lg` for a cache of `samples` samples, or why it cannot be cached.
pub fn plan(lg: &LayerGraph, augment: &[Augment], samples: usize) -> Result<Plan, String> {
    let Some((path, node)) = crate::cut::frozen_prefix_boundary(lg) else {
        return Err(
            "no frozen prefix to cache: the first layer trains, or is a batchnorm in training \
             mode or a dropout (freeze the first layers with --freeze ..N)"
                .to_string(),
        );
    };
    if !augment.is_empty() {
        let names: Vec<String> = augment.iter().map(|a| format!("`{a}`")).collect();
        return Err(format!(
            "random augmentation ({}) changes the input every epoch, before the frozen layers",
            names.join(", ")
        ));
    }
    let shape = lg.nodes[node].shape.clone();
    let per: u64 = shape.iter().fold(4u64, |a, &d| a.saturating_mul(d as u64));
    // The numbered layers whose nodes all come before the cut.
    let layers = crate::elab::numbered_layers(lg)
        .iter()
        .take_while(|top| {
            lg.nodes
                .iter()
                .filter(|n| !n.params.is_empty() && n.path.split('.').next() == Some(**top))
                .all(|n| n.id <= node)
        })
        .count();
    Ok(Plan {
        path,
        node,
        shape,
        layers,
        bytes: per.saturating_mul(samples as u64),
    })
}

/// The suffix of `lg` after `plan`'s cut and the prefix's values for every sample of `data`
/// (computed with `weights`, normalized by `normalize`, in batches of `batch`), kept in memory,
/// or with `spill` in a memory-mapped file in that directory.
#[allow(clippy::too_many_arguments)]
pub fn build(
    lg: &LayerGraph,
    weights: &Weights,
    plan: &Plan,
    data: &Split,
    normalize: &Normalize,
    batch: usize,
    threads: usize,
    memory_limit: Option<u64>,
    spill: Option<&Path>,
) -> Result<(LayerGraph, Split), String> {
    let suffix = crate::cut::suffix(lg, &[(plan.path.clone(), plan.node)])?;
    let mut ex = crate::features::Extractor::new(lg, weights, plan.node, threads, memory_limit)?;
    let mut values = |set: &Dataset| -> Result<Dataset, String> {
        let n = set.len().saturating_mul(ex.sample_len());
        let pixels = match spill {
            Some(dir) => {
                let mut file = Spill::create(dir, n).map_err(|e| format!("--cache-dir: {e}"))?;
                ex.run(set, normalize, batch, |v, _| file.push(v))?;
                Pixels::Mapped(file.finish()?)
            }
            None => {
                let mut x: Vec<f32> = Vec::new();
                x.try_reserve_exact(n).map_err(|_| {
                    format!(
                        "cannot allocate the feature cache ({} values)",
                        crate::show::thousands(n as u64)
                    )
                })?;
                ex.run(set, normalize, batch, |v, _| {
                    x.extend_from_slice(v);
                    Ok(())
                })?;
                Pixels::F32(x)
            }
        };
        Ok(Dataset {
            name: set.name.clone(),
            sample_shape: plan.shape.clone(),
            pixels,
            labels: set.labels.clone(),
            classes: set.classes,
            class_names: set.class_names.clone(),
            fields: set.fields.clone(),
            objects: set.objects.clone(),
        })
    };
    let train = values(&data.train)?;
    let test = values(&data.test)?;
    Ok((suffix, Split { train, test }))
}
