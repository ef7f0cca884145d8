//! The library's front door: spec → runnable model.
//!
//! In: an elaborated [`Spec`], a batch size, parameter values. Out: an [`Executable`] (lowered,
//! fused, planned and JIT-compiled) plus the intermediate stages for inspection. Generated
//! code is cached for the life of the process: equal kernels compile once.

use std::sync::{Arc, Mutex, OnceLock};

use ndarray::ArrayD;

use crate::codegen::Jit;
use crate::fuse::{FusedGraph, fuse};
use crate::graph::Graph;
use crate::lower::lower;
use crate::runtime::Executable;
use crate::spec::Spec;

/// The process-wide JIT and its kernel cache.
pub fn jit() -> Result<Arc<Mutex<Jit>>, String> {
    static JIT: OnceLock<Result<Arc<Mutex<Jit>>, String>> = OnceLock::new();
    JIT.get_or_init(|| Jit::new().map(|j| Arc::new(Mutex::new(j))))
        .clone()
}

/// How to compile.
#[derive(Debug, Clone, Copy)]
pub struct CompileOptions {
    pub batch: usize,
    /// Threads for running (the calling thread included): `1..=runtime::pool::max_threads()`,
    /// else compiling fails.
    pub threads: usize,
    /// The most memory the executable may allocate, in bytes; `None`: the memory available
    /// to the process ([`crate::budget::available`]). Checked before allocating.
    pub memory_limit: Option<u64>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            batch: 1,
            threads: crate::runtime::pool::default_threads(),
            memory_limit: None,
        }
    }
}

/// The stages of compiling a spec, for inspection (`netc graph --stage ...`).
pub fn stages(spec: &Spec, batch: usize) -> (Graph, FusedGraph) {
    let prims = lower(&spec.graph, batch);
    let fused = fuse(&prims);
    (prims, fused)
}

/// The training graph of a spec (its objective, [`crate::train::graph::objective_of`]; freeze
/// selectors applied) and its fusion, for inspection (`netc graph --train`).
pub fn train_stages(spec: &Spec, batch: usize) -> Result<(Graph, FusedGraph), String> {
    let mut lg = spec.graph.clone();
    let cfg = lg.train.clone().unwrap_or_default();
    crate::train::freeze(&mut lg, &cfg.freeze)?;
    let objective = crate::train::graph::objective_of(&lg);
    let tg = crate::train::build(&lg, batch, &objective)?;
    let fused = crate::fuse::fuse_with(&tg.prims, &tg.variable);
    Ok((tg.prims, fused))
}

/// Compiles a spec with the given parameter values (indexed like `LayerGraph::params`;
/// `num_batches_tracked` entries are ignored). What the executable will allocate is checked
/// against `opts.memory_limit` first ([`crate::budget`]); a model too large for it is an error
/// naming its largest buffers. Refused before lowering when the layer graph alone cannot fit.
pub fn compile(
    spec: &Spec,
    params: &[ArrayD<f32>],
    opts: CompileOptions,
) -> Result<Executable, String> {
    let batch = opts.batch.max(1);
    crate::budget::check_layers(&spec.graph, batch, opts.memory_limit)?;
    let (_, fused) = stages(spec, batch);
    let budget = crate::runtime::Budget {
        limit: opts.memory_limit,
        names: Some(&spec.graph),
        ..Default::default()
    };
    Executable::with_budget(fused, params, jit()?, opts.threads, budget)
}

/// The f32 parameter values of `w` in `LayerGraph::params` order (integer buffers such as
/// `num_batches_tracked` become empty arrays: inference never reads them).
pub fn params_f32(w: &crate::io::weights::Weights) -> Vec<ArrayD<f32>> {
    w.values
        .iter()
        .map(|v| {
            v.as_f32()
                .cloned()
                .unwrap_or_else(|| ArrayD::zeros(ndarray::IxDyn(&[0])))
        })
        .collect()
}
