//! A layer's activations over a dataset: the prefix of a model up to that layer, compiled for
//! inference and run batch by batch.
//!
//! In: a [`LayerGraph`] with one input, its [`Weights`], the node whose values are wanted,
//! a [`Dataset`] of the input's samples and its normalization. Out: per batch, the node's
//! values (`len × shape` f32, C order) and the samples' labels, handed to a callback in
//! dataset order, so a caller can stream them to disk (`netc features`) or keep them (the
//! frozen-prefix feature cache, [`crate::train::cache`]). Memory: one batch of inputs and of
//! activations at a time, plus the compiled prefix (checked against the memory budget).
//!
//! The prefix ([`crate::cut::prefix`]) is lowered in inference mode: batchnorm with its running
//! statistics, dropout gone — what frozen layers compute in training too.

use std::sync::Arc;

use crate::data::{Dataset, Loader, LoaderOptions, Normalize};
use crate::io::weights::Weights;
use crate::layer_graph::{LayerGraph, NodeId};
use crate::runtime::Executable;

/// The name of the prefix's output.
const OUT: &str = "features";

/// The prefix of `lg` computing `node`, compiled for batches of `batch` samples.
pub struct Extractor {
    prefix: LayerGraph,
    params: Vec<ndarray::ArrayD<f32>>,
    threads: usize,
    memory_limit: Option<u64>,
    /// Executables by batch size (the last batch of a pass may be shorter).
    exes: Vec<(usize, Executable)>,
    /// The node's per-sample shape.
    pub shape: Vec<usize>,
}

impl Extractor {
    /// Cuts `lg` at `node` and checks the prefix reads one input (the data's samples).
    pub fn new(
        lg: &LayerGraph,
        weights: &Weights,
        node: NodeId,
        threads: usize,
        memory_limit: Option<u64>,
    ) -> Result<Extractor, String> {
        let prefix = crate::cut::prefix(lg, &[(OUT.to_string(), node)])?;
        if prefix.inputs.len() != 1 {
            return Err(format!(
                "layer `{}` is computed from {} inputs; features are taken of layers computed \
                 from one input",
                lg.nodes[node].path,
                prefix.inputs.len()
            ));
        }
        Ok(Extractor {
            shape: lg.nodes[node].shape.clone(),
            params: crate::model::params_f32(weights),
            prefix,
            threads,
            memory_limit,
            exes: Vec::new(),
        })
    }

    /// The input the samples feed.
    pub fn input(&self) -> &crate::layer_graph::InputInfo {
        &self.prefix.inputs[0]
    }

    /// Values per sample.
    pub fn sample_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Compiles the prefix for batches of `b` (once per size).
    fn exe(&mut self, b: usize) -> Result<&mut Executable, String> {
        if let Some(i) = self.exes.iter().position(|(n, _)| *n == b) {
            return Ok(&mut self.exes[i].1);
        }
        crate::budget::check_layers(&self.prefix, b, self.memory_limit)?;
        let g = crate::lower::lower(&self.prefix, b);
        let budget = crate::runtime::Budget {
            limit: self.memory_limit,
            names: Some(&self.prefix),
            ..Default::default()
        };
        let exe = Executable::with_budget(
            crate::fuse::fuse(&g),
            &self.params,
            crate::model::jit()?,
            self.threads,
            budget,
        )?;
        self.exes.push((b, exe));
        Ok(&mut self.exes.last_mut().expect("pushed").1)
    }

    /// Runs every sample of `data` (in dataset order, normalized by `normalize`, batches of
    /// `batch`) and calls `sink(values, labels)` per batch.
    pub fn run(
        &mut self,
        data: &Dataset,
        normalize: &Normalize,
        batch: usize,
        mut sink: impl FnMut(&[f32], &[i64]) -> Result<(), String>,
    ) -> Result<(), String> {
        let loader = Loader::new(
            Arc::new(data.clone()),
            normalize.clone(),
            LoaderOptions::eval(batch),
        )
        .map_err(|e| e.to_string())?;
        let input = self.input().name.clone();
        for b in loader.epoch(0) {
            let exe = self.exe(b.len)?;
            exe.run_in_place(&[(input.as_str(), &b.x)])?;
            let out = exe.output(OUT).ok_or("the prefix has no output")?;
            sink(out, &b.labels)?;
        }
        Ok(())
    }
}
