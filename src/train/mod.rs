//! Training: the compiled training step, optimizers, and evaluation.
//!
//! In: a checked [`LayerGraph`], its initial [`Weights`], a loss and an optimizer. Out: a
//! [`Trainer`] whose [`Trainer::step`] runs one batch through the compiled forward + backward
//! graph ([`graph`]) and updates every parameter ([`optim`]), and whose [`Trainer::weights`]
//! are the current parameters and buffers, ready to save.
//!
//! The training graph goes through the same fusion, planning and code generation as
//! inference; parameters live in the executable (outside the arena) and the optimizer updates
//! them in place between steps. Evaluation compiles the inference graph with the current
//! weights (batchnorm folded, dropout gone).

pub mod bench;
pub mod cache;
pub mod checkpoint;
pub mod graph;
pub mod optim;
pub mod session;
pub mod task;
pub mod verification;

use std::sync::{Arc, Mutex};

use ndarray::{ArrayD, IxDyn};

use crate::codegen::Jit;
use crate::data::Loader;
use crate::io::weights::{Value, Weights};
use crate::layer_graph::{LayerGraph, ParamKind};
use crate::runtime::Executable;
use crate::train_config::{Objective, Optimizer};

use checkpoint::EpochSums;
use task::Task;

pub use graph::{TrainGraph, build, freeze};
pub use optim::{Horizon, OptimState, learning_rate, learning_rate_in};

/// What one training step measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    pub loss: f32,
    /// Samples whose predicted class (argmax) is the label (classification losses).
    pub correct: usize,
}

/// Why a step failed.
#[derive(Debug, Clone, PartialEq)]
pub enum StepError {
    /// The loss was NaN or infinite (the parameters were not updated), or the update made a
    /// parameter NaN or infinite (the loss is finite then). `params` names every parameter
    /// holding a NaN or an infinity, in `state_dict` order.
    NonFinite {
        loss: f32,
        params: Vec<String>,
    },
    Other(String),
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::NonFinite { loss, params } => {
                write!(f, "the loss is {loss}")?;
                if !params.is_empty() {
                    write!(f, "; not finite: {}", params.join(", "))?;
                }
                Ok(())
            }
            StepError::Other(m) => f.write_str(m),
        }
    }
}

/// A model being trained.
pub struct Trainer {
    lg: LayerGraph,
    tg: TrainGraph,
    exe: Executable,
    jit: Arc<Mutex<Jit>>,
    pub optim: OptimState,
    batch: usize,
    objective: Objective,
    /// The values of parameters that do not change (frozen, fixed, integer buffers): the
    /// executable holds the variable ones.
    base: Weights,
    /// `num_batches_tracked` of every batchnorm in training mode, with how much it grows per
    /// step: the number of times the step applies the batchnorm (more than once when shared).
    tracked: Vec<(usize, i64)>,
    threads: usize,
    targets: Vec<f32>,
    /// Seeds the dropout masks (with the step count).
    seed: u64,
    /// The memory budget of the step's and evaluation's executables (`None`: what is
    /// available), see [`crate::budget`].
    memory_limit: Option<u64>,
}

impl Trainer {
    /// Compiles the training step of `lg` (freeze flags already applied) for batches of
    /// `batch` samples, if its memory (the executable and the optimizer state) fits in what
    /// is available ([`crate::budget`]).
    pub fn new(
        lg: &LayerGraph,
        weights: Weights,
        batch: usize,
        objective: impl Into<Objective>,
        optimizer: Optimizer,
        threads: usize,
    ) -> Result<Trainer, String> {
        Self::with_limit(lg, weights, batch, objective, optimizer, threads, None)
    }

    /// As [`Trainer::new`], with the memory budget `memory_limit` in bytes (`None`: what is
    /// available), checked before anything is allocated and again for each evaluation.
    pub fn with_limit(
        lg: &LayerGraph,
        weights: Weights,
        batch: usize,
        objective: impl Into<Objective>,
        optimizer: Optimizer,
        threads: usize,
        memory_limit: Option<u64>,
    ) -> Result<Trainer, String> {
        let objective = objective.into();
        crate::budget::check_layers(lg, batch, memory_limit)?;
        let tg = graph::build(lg, batch, &objective)?;
        let jit = crate::model::jit()?;
        let fused = crate::fuse::fuse_with(&tg.prims, &tg.variable);
        let budget = crate::runtime::Budget {
            limit: memory_limit,
            extra: crate::budget::optimizer_state(lg, &tg.grads, &optimizer),
            names: Some(lg),
        };
        let exe = Executable::with_budget(
            fused,
            &crate::model::params_f32(&weights),
            jit.clone(),
            threads,
            budget,
        )?;
        let sizes: Vec<usize> = tg
            .grads
            .iter()
            .map(|&(i, _)| lg.params[i].numel())
            .collect();
        // Batchnorms whose statistics the step updates count their batches too.
        let joint = crate::lower::joint_batchnorms(lg, crate::lower::Mode::Training);
        let tracked = lg
            .params
            .iter()
            .enumerate()
            .filter(|(_, p)| p.kind == ParamKind::NumBatchesTracked)
            .filter(|(_, p)| {
                let prefix = p.path.trim_end_matches("num_batches_tracked");
                tg.stats
                    .iter()
                    .any(|(s, _)| lg.params[*s].path.starts_with(prefix))
            })
            .map(|(i, _)| {
                // One update per application, except that the applications of a shared module
                // normalized together (`lower::joint_batchnorms`) update once.
                let mut updates: Vec<usize> = lg
                    .nodes
                    .iter()
                    .filter(|n| !n.frozen && n.params.contains(&i))
                    .map(|n| joint.get(&n.id).map_or(n.id, |group| group[0]))
                    .collect();
                updates.sort_unstable();
                updates.dedup();
                (i, updates.len() as i64)
            })
            .collect();
        // The executable holds the values that change; keeping a second copy here would
        // double the parameters' memory.
        let mut weights = weights;
        for (i, v) in tg.variable.iter().enumerate() {
            if *v {
                weights.values[i] = Value::F32(ArrayD::zeros(IxDyn(&[0])));
            }
        }
        Ok(Trainer {
            lg: lg.clone(),
            tg,
            exe,
            jit,
            optim: OptimState::new(optimizer, &sizes),
            batch,
            objective,
            base: weights,
            tracked,
            threads,
            targets: Vec::new(),
            seed: 0,
            memory_limit,
        })
    }

    /// Seeds the random masks of dropout layers (each step draws new ones from this seed and
    /// the step count, so a resumed run draws the same masks).
    pub fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn graph(&self) -> &TrainGraph {
        &self.tg
    }

    pub fn layer_graph(&self) -> &LayerGraph {
        &self.lg
    }

    /// The compiled training step (for profiling and inspection).
    pub fn executable(&mut self) -> &mut Executable {
        &mut self.exe
    }

    /// How many parameters (elements) get trained.
    pub fn trained_elements(&self) -> usize {
        self.tg
            .grads
            .iter()
            .map(|&(i, _)| self.lg.params[i].numel())
            .sum()
    }

    /// The training objective.
    pub fn objective(&self) -> &Objective {
        &self.objective
    }

    /// One step of a classifier trained with cross-entropy on its first output: `x` holds
    /// `batch` samples (row-major, the model input's shape), `labels` their classes. See
    /// [`Trainer::step_feed`].
    pub fn step(&mut self, x: &[f32], labels: &[i64], lr: f64) -> Result<StepStats, StepError> {
        let n = self.batch;
        if labels.len() != n {
            return Err(StepError::Other(format!(
                "{} labels for a batch of {n}",
                labels.len()
            )));
        }
        let targets = self
            .tg
            .target_inputs
            .first()
            .cloned()
            .ok_or_else(|| StepError::Other("the objective takes no class labels".into()))?;
        let classes = self.classes();
        let mut onehot = std::mem::take(&mut self.targets);
        task::one_hot_into(&mut onehot, labels, classes, "sample", 0).map_err(StepError::Other)?;
        let input = self.lg.inputs[0].name.clone();
        let result = self.step_feed(&[(input.as_str(), x), (targets.as_str(), &onehot)], lr);
        self.targets = onehot;
        let loss = result?;
        let correct = match self.tg.predictions.first() {
            Some(p) => count_correct(self.exe.output(p).unwrap_or(&[]), labels),
            None => 0,
        };
        Ok(StepStats { loss, correct })
    }

    /// One step: `feed` gives every input of the training graph by name (the model's inputs,
    /// `batch` samples each, and the objective's targets, see [`task::Task`]). Returns the
    /// loss. With a non-finite loss nothing is updated; an update that leaves a parameter NaN
    /// or infinite is an error too (the parameters are then those after it: a caller must
    /// not save them). The outputs of the step stay readable with [`Trainer::output`].
    pub fn step_feed(&mut self, feed: &[(&str, &[f32])], lr: f64) -> Result<f32, StepError> {
        // A new dropout mask every step, reproducible from the seed and the step count.
        self.exe.set_random_step(crate::reference::ops::splitmix64(
            self.seed,
            self.optim.step + 1,
        ));
        self.exe.run_in_place(feed).map_err(StepError::Other)?;
        let (mut params, outs) = self.exe.params_and_outputs().map_err(StepError::Other)?;
        let loss = outs["loss"][0];
        if !loss.is_finite() {
            let params = self.non_finite_params();
            return Err(StepError::NonFinite { loss, params });
        }
        // Parameters in the order of the optimizer's tensors (the gradient list).
        let mut by_index: Vec<Option<&mut [f32]>> =
            (0..self.lg.params.len()).map(|_| None).collect();
        for (i, p) in params.iter_mut() {
            by_index[*i] = Some(&mut **p);
        }
        // Running statistics first: they are outputs of this step, independent of the update.
        let mut bad = false;
        for (i, name) in &self.tg.stats {
            if let Some(p) = by_index[*i].as_deref_mut() {
                p.copy_from_slice(outs[name]);
                bad |= !p.iter().all(|v| v.is_finite());
            }
        }
        let mut ps: Vec<&mut [f32]> = Vec::with_capacity(self.tg.grads.len());
        let mut gs: Vec<&[f32]> = Vec::with_capacity(self.tg.grads.len());
        for (i, name) in &self.tg.grads {
            let p = by_index[*i]
                .take()
                .ok_or_else(|| StepError::Other(format!("parameter #{i} is not variable")))?;
            ps.push(p);
            gs.push(outs[name]);
        }
        bad |= self.optim.update(&mut ps, &gs, lr).is_some();
        if bad {
            let params = self.non_finite_params();
            return Err(StepError::NonFinite { loss, params });
        }
        for &(i, uses) in &self.tracked {
            if let Value::I64(a) = &mut self.base.values[i] {
                a.iter_mut().for_each(|v| *v += uses);
            }
        }
        Ok(loss)
    }

    /// The values of the parameters the step changes (trained ones, running statistics), by
    /// parameter index.
    pub fn param_values(&self) -> Vec<(usize, &[f32])> {
        self.exe.params()
    }

    /// The JIT the step was compiled with (for compiling more models of the same run).
    pub fn jit(&self) -> Arc<Mutex<Jit>> {
        self.jit.clone()
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The memory budget in bytes (`None`: what is available).
    pub fn memory_limit(&self) -> Option<u64> {
        self.memory_limit
    }

    /// An output of the last step: a model output (`predictions`), `loss`, a gradient.
    pub fn output(&self, name: &str) -> Option<&[f32]> {
        self.exe.output(name)
    }

    /// The paths of the parameters (and buffers) holding a NaN or an infinity.
    fn non_finite_params(&self) -> Vec<String> {
        let mut bad: Vec<usize> = self
            .exe
            .params()
            .into_iter()
            .filter(|(_, d)| !d.iter().all(|v| v.is_finite()))
            .map(|(i, _)| i)
            .collect();
        for (i, v) in self.base.values.iter().enumerate() {
            if let Value::F32(a) = v
                && !a.iter().all(|v| v.is_finite())
            {
                bad.push(i);
            }
        }
        bad.sort_unstable();
        bad.dedup();
        bad.into_iter()
            .map(|i| self.lg.params[i].path.clone())
            .collect()
    }

    /// The number of classes of the model's first output (`[N, classes]`).
    pub fn classes(&self) -> usize {
        classes_of(&self.lg)
    }

    /// The current parameters and buffers.
    pub fn weights(&self) -> Weights {
        let mut w = self.base.clone();
        for (i, data) in self.exe.params() {
            let shape = self.lg.params[i].shape.clone();
            w.values[i] = Value::F32(
                ArrayD::from_shape_vec(IxDyn(&shape), data.to_vec()).expect("parameter shape"),
            );
        }
        w
    }

    /// Evaluates the current weights in inference mode over every batch of `data` (an
    /// evaluation loader) fed as `task` says: the loss and metric sums.
    pub fn evaluate(&self, data: &Loader, task: &Task) -> Result<EpochSums, String> {
        evaluate(
            &self.lg,
            &self.weights(),
            &self.objective,
            task,
            data,
            self.threads,
            &self.jit,
            self.memory_limit,
        )
    }
}

/// Evaluates `weights` in inference mode (batchnorm folded, dropout gone) over one pass of
/// `data` fed as `task` says: the loss and metric sums. Compiles the model for the loader's
/// batch size, and once more for a shorter last batch, each within `memory_limit` (bytes;
/// `None`: what is available).
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    lg: &LayerGraph,
    weights: &Weights,
    objective: &Objective,
    task: &Task,
    data: &Loader,
    threads: usize,
    jit: &Arc<Mutex<Jit>>,
    memory_limit: Option<u64>,
) -> Result<EpochSums, String> {
    let params = crate::model::params_f32(weights);
    let compile = |b: usize| -> Result<Executable, String> {
        let mut g = crate::lower::lower(lg, b);
        let n_model = lg.outputs.len();
        graph::attach_loss(&mut g, objective, n_model)?;
        let budget = crate::runtime::Budget {
            limit: memory_limit,
            ..Default::default()
        };
        Executable::with_budget(crate::fuse::fuse(&g), &params, jit.clone(), threads, budget)
    };
    let mut exes: Vec<(usize, Executable)> = Vec::new();
    let mut sums = EpochSums::default();
    let mut bufs = Vec::new();
    let mut meter = task
        .detector()
        .cloned()
        .map(crate::detect::evaluate::MapMeter::new);
    for batch in data.epoch(0) {
        let len = batch.len;
        if !exes.iter().any(|(b, _)| *b == len) {
            exes.push((len, compile(len)?));
        }
        let (_, exe) = exes
            .iter_mut()
            .find(|(b, _)| *b == len)
            .expect("compiled above");
        task.fill(&batch, &mut bufs, "test sample", sums.seen as usize)?;
        exe.run_in_place(&task.feed(&bufs))?;
        let loss = exe.output("loss").ok_or("no loss output")?[0];
        task.measure(&batch, loss, |n| exe.output(n), &mut sums);
        if let Some(m) = meter.as_mut() {
            let out = &m.detector.output;
            let values = exe
                .output(out)
                .ok_or_else(|| format!("no output `{out}`"))?;
            m.add(values, &batch.objects)?;
        }
    }
    if let Some(m) = meter
        && let Some(v) = m.finish()?.map
    {
        sums.extra.insert(task::MAP50.to_string(), v);
    }
    Ok(sums)
}

/// The number of classes of a model's first output (`[N, classes]`).
/// The classes of the model's first output (`[K]` or `[K, 1, 1]`, see
/// [`crate::loss::class_count`]); its last size for any other shape.
pub fn classes_of(lg: &LayerGraph) -> usize {
    let (_, node) = &lg.outputs[0];
    let shape = &lg.nodes[*node].shape;
    crate::loss::class_count(shape).unwrap_or_else(|| shape.last().copied().unwrap_or(1))
}

/// How many rows of `logits` (`[N, K]`, row-major) have their largest value at the label
/// (the first largest, as `torch.argmax`).
pub fn count_correct(logits: &[f32], labels: &[i64]) -> usize {
    task::count_top(logits, labels).0
}
