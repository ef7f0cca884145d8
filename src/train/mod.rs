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
pub mod graph;
pub mod optim;

use std::sync::{Arc, Mutex};

use ndarray::{ArrayD, IxDyn};

use crate::codegen::Jit;
use crate::io::weights::{Value, Weights};
use crate::layer_graph::{LayerGraph, ParamKind};
use crate::runtime::Executable;
use crate::train_config::{Loss, Optimizer};

pub use graph::{TrainGraph, build, freeze};
pub use optim::{OptimState, learning_rate};

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
    /// The loss was NaN or infinite: the parameters were not updated.
    NonFinite {
        loss: f32,
    },
    Other(String),
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::NonFinite { loss } => write!(f, "the loss is {loss}"),
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
    loss: Loss,
    /// The values of parameters that do not change (frozen, fixed, integer buffers): the
    /// executable holds the variable ones.
    base: Weights,
    /// `num_batches_tracked` of every batchnorm in training mode, incremented per step.
    tracked: Vec<usize>,
    input_name: String,
    threads: usize,
    targets: Vec<f32>,
}

impl Trainer {
    /// Compiles the training step of `lg` (freeze flags already applied) for batches of
    /// `batch` samples.
    pub fn new(
        lg: &LayerGraph,
        weights: Weights,
        batch: usize,
        loss: Loss,
        optimizer: Optimizer,
        threads: usize,
    ) -> Result<Trainer, String> {
        if lg.inputs.len() != 1 {
            return Err(format!(
                "training takes models with one input; this one has {}",
                lg.inputs.len()
            ));
        }
        let tg = graph::build(lg, batch, &loss)?;
        let jit = crate::model::jit()?;
        let fused = crate::fuse::fuse_with(&tg.prims, &tg.variable);
        let exe = Executable::new(
            fused,
            &crate::model::params_f32(&weights),
            jit.clone(),
            threads,
        )?;
        let sizes: Vec<usize> = tg
            .grads
            .iter()
            .map(|&(i, _)| lg.params[i].numel())
            .collect();
        // Batchnorms whose statistics the step updates count their batches too.
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
            .map(|(i, _)| i)
            .collect();
        Ok(Trainer {
            input_name: lg.inputs[0].name.clone(),
            lg: lg.clone(),
            tg,
            exe,
            jit,
            optim: OptimState::new(optimizer, &sizes),
            batch,
            loss,
            base: weights,
            tracked,
            threads,
            targets: Vec::new(),
        })
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

    /// One step on a batch: `x` holds `batch` samples (row-major, the model input's shape),
    /// `labels` their classes. With a non-finite loss nothing is updated.
    pub fn step(&mut self, x: &[f32], labels: &[i64], lr: f64) -> Result<StepStats, StepError> {
        let n = self.batch;
        if labels.len() != n {
            return Err(StepError::Other(format!(
                "{} labels for a batch of {n}",
                labels.len()
            )));
        }
        self.fill_targets(labels)?;
        let input = self.input_name.clone();
        let mut feed: Vec<(&str, &[f32])> = vec![(input.as_str(), x)];
        if let Some(t) = self.tg.target_inputs.first() {
            feed.push((t.as_str(), &self.targets));
        }
        self.exe.run_in_place(&feed).map_err(StepError::Other)?;
        let (mut params, outs) = self.exe.params_and_outputs().map_err(StepError::Other)?;
        let loss = outs["loss"][0];
        if !loss.is_finite() {
            return Err(StepError::NonFinite { loss });
        }
        let correct = match self.tg.predictions.first() {
            Some(p) => count_correct(outs[p], labels),
            None => 0,
        };
        // Parameters in the order of the optimizer's tensors (the gradient list).
        let mut by_index: Vec<Option<&mut [f32]>> =
            (0..self.lg.params.len()).map(|_| None).collect();
        for (i, p) in params.iter_mut() {
            by_index[*i] = Some(&mut **p);
        }
        // Running statistics first: they are outputs of this step, independent of the update.
        for (i, name) in &self.tg.stats {
            if let Some(p) = by_index[*i].as_deref_mut() {
                p.copy_from_slice(outs[name]);
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
        self.optim.update(&mut ps, &gs, lr);
        for &i in &self.tracked {
            if let Value::I64(a) = &mut self.base.values[i] {
                a.iter_mut().for_each(|v| *v += 1);
            }
        }
        Ok(StepStats { loss, correct })
    }

    fn fill_targets(&mut self, labels: &[i64]) -> Result<(), StepError> {
        match &self.loss {
            Loss::CrossEntropy { .. } => {
                let classes = self.classes();
                self.targets.clear();
                self.targets.resize(labels.len() * classes, 0.0);
                for (i, &l) in labels.iter().enumerate() {
                    if l < 0 || l as usize >= classes {
                        return Err(StepError::Other(format!(
                            "label {l} of sample {i} is not a class of this model (0..{classes})"
                        )));
                    }
                    self.targets[i * classes + l as usize] = 1.0;
                }
                Ok(())
            }
            other => Err(StepError::Other(format!(
                "training with `{other}` needs targets netc cannot build from labels yet"
            ))),
        }
    }

    /// The number of classes of the model's first output (`[N, classes]`).
    pub fn classes(&self) -> usize {
        let (_, node) = &self.lg.outputs[0];
        self.lg.nodes[*node].shape.last().copied().unwrap_or(1)
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

    /// Evaluates the current weights in inference mode on `n` samples: mean loss and the
    /// number of correct predictions. `x` holds the samples, `labels` their classes; the
    /// samples are run in batches of the training batch size (the last one shorter).
    pub fn evaluate(&self, x: &[f32], labels: &[i64]) -> Result<(f64, usize), String> {
        evaluate(
            &self.lg,
            &self.weights(),
            &self.loss,
            x,
            labels,
            self.batch,
            self.threads,
            &self.jit,
        )
    }
}

/// Evaluates `weights` in inference mode: mean loss and the number of correct predictions
/// over all samples of `x` (row-major, the model input's shape per sample).
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    lg: &LayerGraph,
    weights: &Weights,
    loss: &Loss,
    x: &[f32],
    labels: &[i64],
    batch: usize,
    threads: usize,
    jit: &Arc<Mutex<Jit>>,
) -> Result<(f64, usize), String> {
    let n = labels.len();
    if n == 0 {
        return Ok((0.0, 0));
    }
    let per_sample = x.len() / n;
    let params = crate::model::params_f32(weights);
    let input = lg.inputs[0].name.clone();
    let compile = |b: usize| -> Result<(Executable, String), String> {
        let mut g = crate::lower::lower(lg, b);
        let n_model = lg.outputs.len();
        graph::attach_loss(&mut g, loss, n_model)?;
        let targets = g.inputs.last().map(|(n, _)| n.clone()).unwrap_or_default();
        let exe = Executable::new(crate::fuse::fuse(&g), &params, jit.clone(), threads)?;
        Ok((exe, targets))
    };
    let classes = {
        let (_, node) = &lg.outputs[0];
        lg.nodes[*node].shape.last().copied().unwrap_or(1)
    };
    let b = batch.min(n);
    let (mut full, targets_name) = compile(b)?;
    let rest = n % b;
    let mut tail = if rest > 0 {
        Some(compile(rest)?.0)
    } else {
        None
    };
    let pred_name = lg.outputs[0].0.clone();
    let mut total_loss = 0.0f64;
    let mut correct = 0;
    let mut start = 0;
    let mut onehot = Vec::new();
    while start < n {
        let len = (n - start).min(b);
        let exe = if len == b {
            &mut full
        } else {
            tail.as_mut().expect("a tail executable")
        };
        let lab = &labels[start..start + len];
        onehot.clear();
        onehot.resize(len * classes, 0.0f32);
        for (i, &l) in lab.iter().enumerate() {
            if l < 0 || l as usize >= classes {
                return Err(format!(
                    "label {l} of sample {} is not a class of this model (0..{classes})",
                    start + i
                ));
            }
            onehot[i * classes + l as usize] = 1.0;
        }
        let xs = &x[start * per_sample..(start + len) * per_sample];
        exe.run_in_place(&[(input.as_str(), xs), (targets_name.as_str(), &onehot)])?;
        total_loss += exe.output("loss").ok_or("no loss output")?[0] as f64 * len as f64;
        correct += count_correct(exe.output(&pred_name).ok_or("no prediction")?, lab);
        start += len;
    }
    Ok((total_loss / n as f64, correct))
}

/// How many rows of `logits` (`[N, K]`, row-major) have their largest value at the label
/// (the first largest, as `torch.argmax`).
pub fn count_correct(logits: &[f32], labels: &[i64]) -> usize {
    if labels.is_empty() {
        return 0;
    }
    let k = logits.len() / labels.len();
    labels
        .iter()
        .enumerate()
        .filter(|&(i, &l)| {
            let row = &logits[i * k..(i + 1) * k];
            let mut best = 0;
            for (j, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = j;
                }
            }
            best as i64 == l
        })
        .count()
}
