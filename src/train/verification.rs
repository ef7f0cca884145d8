//! Training verification models: triplets and pairs drawn from labelled data, online
//! mining, and open-set evaluation.
//!
//! In: a verification model (three inputs of one shape under a triplet loss — specs/triplet.net
//! — or two under a contrastive or binary cross-entropy loss — specs/siamese.net), its
//! objective, a labelled [`Split`] whose labels are identities, and an [`IdentitySplit`] (which
//! identities train, which are held out). Out: per step, the named feeds of the training graph
//! (anchor/positive/negative rows chosen by [`Mining`] among a P×K batch embedded with the
//! current weights, or pairs with their same/different targets); per epoch, the open-set
//! figures on the held-out identities: verification accuracy at the best threshold, ROC AUC,
//! and that threshold (a distance, or a learned similarity in [0, 1]).
//!
//! Mining embeds each P×K batch with the model's embedding ([`crate::verify::embedding_node`],
//! cut out with [`crate::cut::prefix`]) in inference mode, compiled once with the trained
//! parameters variable and refreshed from the trainer before each use; the step then trains on
//! the chosen rows of that same (augmented, normalized) batch.

use std::sync::{Arc, Mutex};

use crate::codegen::Jit;
use crate::data::{Batch, Dataset, Loader, LoaderOptions, Normalize, Split};
use crate::io::weights::Weights;
use crate::layer_graph::{LayerGraph, NodeId};
use crate::runtime::Executable;
use crate::train_config::{Augment, Loss, Objective};
use crate::verify::{self, IdentitySplit, Mining, PkSampler, Score, ScoreKind};

use super::Trainer;

/// How a verification model takes its samples.
#[derive(Debug, Clone, PartialEq)]
pub enum Form {
    /// Three inputs (anchor, positive, negative), triplets chosen by `mining`.
    Triplets { mining: Mining, margin: f64 },
    /// Two inputs and a same (1) / different (0) target in the graph input `target`.
    Pairs { target: String },
}

/// Evaluation pairs of each kind per held-out identity.
pub const EVAL_PAIRS_PER_IDENTITY: usize = 500;

/// Whether `lg` under `objective` is a verification model, and in which form: three inputs of
/// one shape with a triplet loss (in the body or the `train` section), or two inputs of one
/// shape with a contrastive loss or binary cross-entropy on a one-value output.
pub fn form_of(lg: &LayerGraph, objective: &Objective, mining: Mining) -> Option<Form> {
    let same_shapes = lg.inputs.windows(2).all(|w| w[0].shape == w[1].shape);
    if !same_shapes {
        return None;
    }
    let body_margin = lg.nodes.iter().find_map(|n| match n.op {
        crate::layer_graph::Op::TripletLoss { margin } => Some(margin),
        _ => None,
    });
    match lg.inputs.len() {
        3 => objective.terms.iter().find_map(|t| match t.loss {
            Loss::Triplet { margin } => Some(Form::Triplets { mining, margin }),
            Loss::Value => body_margin.map(|margin| Form::Triplets { mining, margin }),
            _ => None,
        }),
        2 => objective.terms.iter().find_map(|t| match t.loss {
            Loss::Contrastive { .. } | Loss::BceWithLogits => {
                let out = t.outputs.first().or(lg.outputs.first().map(|(n, _)| n))?;
                let node = lg.outputs.iter().find(|(n, _)| n == out)?.1;
                let one = lg.nodes[node].shape.iter().product::<usize>() == 1;
                (matches!(t.loss, Loss::Contrastive { .. }) || one).then(|| Form::Pairs {
                    target: t.target_input().unwrap_or_default(),
                })
            }
            _ => None,
        }),
        _ => None,
    }
}

/// A verification task over one data split.
pub struct Verification {
    pub form: Form,
    /// The model's inputs in role order (anchor, positive, negative / x1, x2).
    inputs: Vec<String>,
    embed_node: NodeId,
    pub kind: ScoreKind,
    pub train: Arc<Dataset>,
    pub eval: Arc<Dataset>,
    loader: Loader,
    eval_loader: Loader,
    sampler: Option<PkSampler>,
    /// Samples per step (triplets or pairs).
    pub batch: usize,
    seed: u64,
    /// The embedding model of the mining pass, compiled on first use.
    embedder: Option<Executable>,
    normalize: Normalize,
    augmenting: bool,
    /// With a frozen embedding: every training image's embedding, computed once, and the
    /// model after the embeddings (what trains on them), see [`Verification::cache_embeddings`].
    cache: Option<(Vec<f32>, usize)>,
    pub head: Option<LayerGraph>,
    /// The head's inputs (the embeddings of the pair), in role order.
    head_inputs: Vec<String>,
    /// The training samples of each identity (pairs draw partners from these).
    identities: std::collections::BTreeMap<i64, Vec<usize>>,
    /// The current epoch's draw, made once per epoch: per step, the samples it uses (a P×K
    /// batch, the anchors, positives and negatives of random triplets one triplet after
    /// another, or the first members of the pairs).
    drawn: Option<(u64, Vec<Vec<usize>>)>,
}

impl Verification {
    /// The task for `lg` (a verification model in `form`) on `split`, open-set by `ids`, with
    /// steps of about `batch` samples (P×K for batch-hard and semi-hard mining: see
    /// [`PkSampler::shape_for`]; [`Verification::batch`] is what it chose).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        lg: &LayerGraph,
        form: Form,
        split: &Split,
        ids: &IdentitySplit,
        batch: usize,
        seed: u64,
        normalize: Normalize,
        augment: Vec<Augment>,
    ) -> Result<Verification, String> {
        let (embed_node, kind) = (verify::embedding_node(lg)?, verify::score_kind(lg)?);
        let (train, eval) = verify::open_set(split, ids).map_err(|e| e.to_string())?;
        let (sampler, batch) = match &form {
            Form::Triplets {
                mining: Mining::BatchHard | Mining::SemiHard,
                ..
            } => {
                let usable = train.class_counts().iter().filter(|&&c| c >= 2).count();
                let (p, k) = PkSampler::shape_for(batch, usable);
                let s = PkSampler::new(&train, p, k, seed).map_err(|e| e.to_string())?;
                (Some(s), p * k)
            }
            _ => (None, batch),
        };
        // Checks the data can give triplets / pairs at all, with the module's messages.
        verify::random_triplets(&train, seed, 0).map_err(|e| e.to_string())?;
        verify::eval_pairs(&eval, 1, seed).map_err(|e| e.to_string())?;
        let (train, eval) = (Arc::new(train), Arc::new(eval));
        let augmenting = !augment.is_empty();
        let opts = LoaderOptions {
            prefetch: false,
            ..LoaderOptions::train(batch, seed, augment)
        };
        let loader =
            Loader::new(train.clone(), normalize.clone(), opts).map_err(|e| e.to_string())?;
        let eval_loader = Loader::new(eval.clone(), normalize.clone(), LoaderOptions::eval(batch))
            .map_err(|e| e.to_string())?;
        let mut identities = std::collections::BTreeMap::<i64, Vec<usize>>::new();
        for (i, &l) in train.labels.iter().enumerate() {
            identities.entry(l).or_default().push(i);
        }
        Ok(Verification {
            form,
            inputs: lg.inputs.iter().map(|i| i.name.clone()).collect(),
            embed_node,
            kind,
            train,
            eval,
            loader,
            eval_loader,
            sampler,
            batch,
            seed,
            embedder: None,
            normalize,
            augmenting,
            cache: None,
            head: None,
            head_inputs: Vec::new(),
            identities,
            drawn: None,
        })
    }

    /// One line for the train header: what a step trains on and how the identities split,
    /// e.g. `verification: triplets by batch-hard mining, 8 identities × 8 images a step;
    /// identities 0-6 train (7,000 images), 7-9 evaluate (3,000 images)`.
    pub fn describe(&self, ids: &IdentitySplit) -> String {
        let step = match (&self.form, &self.sampler) {
            (Form::Triplets { mining, margin }, Some(s)) => {
                let (p, k) = s.shape();
                format!(
                    "triplets (margin {margin}) by {mining} mining, {p} identities × {k} images \
                     a step"
                )
            }
            (Form::Triplets { margin, .. }, None) => {
                format!("random triplets (margin {margin}), {} a step", self.batch)
            }
            (Form::Pairs { .. }, _) => format!(
                "pairs (x1, x2, same or not), {} a step, half of them same",
                self.batch
            ),
        };
        let (train, eval) = ids.sides();
        format!(
            "verification: {step}; identities {train} train ({} images), {eval} evaluate, \
             never seen in training ({} images; {} same and {} different pairs per identity)",
            crate::show::thousands(self.train.len() as u64),
            crate::show::thousands(self.eval.len() as u64),
            EVAL_PAIRS_PER_IDENTITY,
            EVAL_PAIRS_PER_IDENTITY
        )
    }

    /// The course's speed-up for a learned similarity: when the embedding is frozen (no
    /// trainable parameter and no dropout before it, its batchnorm frozen) and nothing
    /// augments the images, every training image is embedded once (inference mode: what the
    /// frozen layers compute in training too) and only the head after the embeddings trains,
    /// on pairs of those vectors ([`Verification::head`], a `cut::suffix`). The results are
    /// those of training the whole model. Returns a note saying so, or `None` (nothing
    /// changes) when it does not apply.
    pub fn cache_embeddings(
        &mut self,
        lg: &LayerGraph,
        weights: &Weights,
        threads: usize,
        memory_limit: Option<u64>,
    ) -> Result<Option<String>, String> {
        if !matches!(self.form, Form::Pairs { .. }) || self.augmenting || !frozen_embedding(lg)? {
            return Ok(None);
        }
        let nodes = verify::embedding_nodes(lg)?;
        if nodes.len() != self.inputs.len() {
            return Ok(None);
        }
        let boundary: Vec<(String, NodeId)> = self
            .inputs
            .iter()
            .zip(&nodes)
            .map(|(i, &n)| (format!("{i}.embedding"), n))
            .collect();
        let head = crate::cut::suffix(lg, &boundary)?;
        if head.inputs.len() != boundary.len() {
            return Ok(None);
        }
        let mut ex = crate::features::Extractor::new(lg, weights, nodes[0], threads, memory_limit)?;
        let dim = ex.sample_len();
        let mut values = Vec::new();
        values
            .try_reserve_exact(self.train.len().saturating_mul(dim))
            .map_err(|_| "cannot allocate the embedding cache".to_string())?;
        ex.run(&self.train, &self.normalize, self.batch, |v, _| {
            values.extend_from_slice(v);
            Ok(())
        })?;
        let note = format!(
            "note: the embedding is frozen: {} training images embedded once ({} values each); \
             only the head after `{}` trains",
            self.train.len(),
            dim,
            lg.nodes[nodes[0]].path
        );
        self.head_inputs = head.inputs.iter().map(|i| i.name.clone()).collect();
        self.cache = Some((values, dim));
        self.head = Some(head);
        Ok(Some(note))
    }

    /// Steps per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        match &self.sampler {
            Some(s) => s.batches_per_epoch(),
            None => (self.train.len() / self.batch).max(1),
        }
    }

    /// The training-graph feeds of step `b` of `epoch` (`trainer` embeds the batch for
    /// mining), as (input name, values) into `bufs`.
    pub fn feeds(
        &mut self,
        trainer: &Trainer,
        epoch: u64,
        b: usize,
        bufs: &mut Vec<(String, Vec<f32>)>,
    ) -> Result<(), String> {
        bufs.clear();
        match self.form.clone() {
            Form::Triplets { mining, margin } => {
                let step = self.step(epoch, b)?;
                let (batch, triplets) = match &self.sampler {
                    Some(_) => {
                        let batch = self.loader.gather(epoch, step);
                        let emb = self.embed(trainer, &batch)?;
                        let mine_seed =
                            crate::reference::ops::splitmix64(self.seed, epoch << 32 | b as u64);
                        let t = verify::mine(&emb, &batch.labels, mining, margin, mine_seed)?;
                        (batch, t)
                    }
                    None => {
                        let chunk: Vec<[usize; 3]> =
                            step.chunks_exact(3).map(|t| [t[0], t[1], t[2]]).collect();
                        // One batch of the distinct samples, then rows by position.
                        let mut indices = step;
                        indices.sort_unstable();
                        indices.dedup();
                        let batch = self.loader.gather(epoch, indices.clone());
                        let at = |i: usize| indices.binary_search(&i).expect("gathered");
                        let t = chunk.iter().map(|t| t.map(at)).collect();
                        (batch, t)
                    }
                };
                if triplets.len() != self.batch {
                    return Err(format!(
                        "mining gave {} triplets for a step of {}",
                        triplets.len(),
                        self.batch
                    ));
                }
                for (role, name) in self.inputs.iter().enumerate() {
                    bufs.push((name.clone(), rows(&batch, triplets.iter().map(|t| t[role]))));
                }
            }
            Form::Pairs { target } if self.cache.is_some() => {
                let pairs = self.pairs(epoch, b)?;
                let (cache, dim) = self.cache.as_ref().expect("checked");
                let row = |i: usize| &cache[i * dim..(i + 1) * dim];
                let a: Vec<f32> = pairs.iter().flat_map(|p| row(p.0)).copied().collect();
                let c: Vec<f32> = pairs.iter().flat_map(|p| row(p.1)).copied().collect();
                bufs.push((self.head_inputs[0].clone(), a));
                bufs.push((self.head_inputs[1].clone(), c));
                bufs.push((
                    target,
                    pairs.iter().map(|p| f32::from(u8::from(p.2))).collect(),
                ));
            }
            Form::Pairs { target } => {
                let pairs = self.pairs(epoch, b)?;
                let mut indices: Vec<usize> = pairs.iter().flat_map(|&(i, j, _)| [i, j]).collect();
                indices.sort_unstable();
                indices.dedup();
                let batch = self.loader.gather(epoch, indices.clone());
                let at = |i: usize| indices.binary_search(&i).expect("gathered");
                bufs.push((
                    self.inputs[0].clone(),
                    rows(&batch, pairs.iter().map(|p| at(p.0))),
                ));
                bufs.push((
                    self.inputs[1].clone(),
                    rows(&batch, pairs.iter().map(|p| at(p.1))),
                ));
                bufs.push((
                    target,
                    pairs.iter().map(|p| f32::from(u8::from(p.2))).collect(),
                ));
            }
        }
        Ok(())
    }

    /// The pairs of step `b` of `epoch`: each sample of the epoch's shuffled order with a
    /// partner of its identity (even positions) or of another one (odd positions), so half
    /// the pairs are the same identity.
    fn pairs(&mut self, epoch: u64, b: usize) -> Result<Vec<(usize, usize, bool)>, String> {
        let firsts = self.step(epoch, b)?;
        let mut rng = crate::data::rng::Rng::from_words(&[self.seed, 0x5041_4952, epoch, b as u64]);
        let n = self.train.len();
        let by_id = &self.identities;
        Ok(firsts
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let mine = &by_id[&self.train.labels[i]];
                if k % 2 == 0 && mine.len() > 1 {
                    let mut j = mine[rng.below(mine.len() as u64) as usize];
                    while j == i {
                        j = mine[rng.below(mine.len() as u64) as usize];
                    }
                    (i, j, true)
                } else {
                    loop {
                        let j = rng.below(n as u64) as usize;
                        if self.train.labels[j] != self.train.labels[i] {
                            break (i, j, false);
                        }
                    }
                }
            })
            .collect())
    }

    /// The samples step `b` of `epoch` uses (see `drawn`), drawing the epoch once.
    fn step(&mut self, epoch: u64, b: usize) -> Result<Vec<usize>, String> {
        if self.drawn.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let steps: Vec<Vec<usize>> = match (&self.form, &self.sampler) {
                (Form::Triplets { .. }, Some(s)) => s.epoch(epoch),
                (Form::Triplets { .. }, None) => {
                    verify::random_triplets(&self.train, self.seed, epoch)
                        .map_err(|e| e.to_string())?
                        .chunks_exact(self.batch)
                        .map(|c| c.iter().flatten().copied().collect())
                        .collect()
                }
                (Form::Pairs { .. }, _) => self
                    .loader
                    .order(epoch)
                    .chunks_exact(self.batch)
                    .map(<[usize]>::to_vec)
                    .collect(),
            };
            self.drawn = Some((epoch, steps));
        }
        let (_, steps) = self.drawn.as_ref().expect("drawn above");
        steps
            .get(b)
            .cloned()
            .ok_or_else(|| "no such batch".to_string())
    }

    /// The embeddings of `batch` (`batch.len` rows) with the trainer's current parameters.
    fn embed(&mut self, trainer: &Trainer, batch: &Batch) -> Result<Vec<f32>, String> {
        if self.embedder.is_none() {
            let lg = trainer.layer_graph();
            let cut = crate::cut::prefix(lg, &[("embedding".into(), self.embed_node)])?;
            let g = crate::lower::lower(&cut, batch.len);
            let fused = crate::fuse::fuse_with(&g, &trainer.graph().variable);
            let exe = Executable::with_budget(
                fused,
                &crate::model::params_f32(&trainer.weights()),
                trainer.jit(),
                trainer.threads(),
                crate::runtime::Budget {
                    limit: trainer.memory_limit(),
                    ..Default::default()
                },
            )?;
            self.embedder = Some(exe);
        }
        let exe = self.embedder.as_mut().expect("compiled above");
        let (mut dst, _) = exe.params_and_outputs()?;
        for (i, src) in trainer.param_values() {
            if let Some((_, d)) = dst.iter_mut().find(|(j, _)| *j == i) {
                d.copy_from_slice(src);
            }
        }
        let input = self.inputs[0].clone();
        exe.run_in_place(&[(input.as_str(), &batch.x)])?;
        Ok(exe
            .output("embedding")
            .ok_or("no embedding output")?
            .to_vec())
    }

    /// Open-set evaluation of `weights` on the held-out identities' fixed pairs: the scores
    /// (distances between embeddings, or the learned similarity) and their figures.
    pub fn evaluate(
        &self,
        lg: &LayerGraph,
        weights: &Weights,
        threads: usize,
        jit: &Arc<Mutex<Jit>>,
        memory_limit: Option<u64>,
    ) -> Result<Figures, String> {
        let pairs = verify::eval_pairs(&self.eval, EVAL_PAIRS_PER_IDENTITY, self.seed)
            .map_err(|e| e.to_string())?;
        let same: Vec<bool> = pairs.iter().map(|p| p.2).collect();
        let params = crate::model::params_f32(weights);
        let budget = || crate::runtime::Budget {
            limit: memory_limit,
            ..Default::default()
        };
        let mut compiled: Vec<(usize, Executable)> = Vec::new();
        let compile = |compiled: &mut Vec<(usize, Executable)>,
                       g: &LayerGraph,
                       n: usize|
         -> Result<usize, String> {
            if let Some(i) = compiled.iter().position(|(b, _)| *b == n) {
                return Ok(i);
            }
            let fused = crate::fuse::fuse(&crate::lower::lower(g, n));
            let exe = Executable::with_budget(fused, &params, jit.clone(), threads, budget())?;
            compiled.push((n, exe));
            Ok(compiled.len() - 1)
        };
        let score = match self.kind {
            ScoreKind::Distance => {
                // Every held-out image embedded once, then the pairs' distances.
                let cut = crate::cut::prefix(lg, &[("embedding".into(), self.embed_node)])?;
                let mut emb: Vec<f32> = Vec::new();
                for batch in self.eval_loader.epoch(0) {
                    let i = compile(&mut compiled, &cut, batch.len)?;
                    let exe = &mut compiled[i].1;
                    exe.run_in_place(&[(self.inputs[0].as_str(), &batch.x)])?;
                    emb.extend_from_slice(exe.output("embedding").ok_or("no embedding")?);
                }
                let d = emb.len() / self.eval.len().max(1);
                let row = |i: usize| &emb[i * d..(i + 1) * d];
                Score::Distance(
                    pairs
                        .iter()
                        .map(|&(i, j, _)| verify::pairwise_distance(row(i), row(j)))
                        .collect(),
                )
            }
            ScoreKind::Similarity => {
                let out = lg
                    .outputs
                    .first()
                    .map(|(n, _)| n.clone())
                    .ok_or("no output")?;
                let mut sims = Vec::with_capacity(pairs.len());
                for chunk in pairs.chunks(self.batch) {
                    let a = self
                        .eval_loader
                        .gather(0, chunk.iter().map(|p| p.0).collect());
                    let b = self
                        .eval_loader
                        .gather(0, chunk.iter().map(|p| p.1).collect());
                    let i = compile(&mut compiled, lg, chunk.len())?;
                    let exe = &mut compiled[i].1;
                    exe.run_in_place(&[
                        (self.inputs[0].as_str(), &a.x),
                        (self.inputs[1].as_str(), &b.x),
                    ])?;
                    let logits = exe.output(&out).ok_or("no output")?;
                    sims.extend(logits.iter().map(|&z| 1.0 / (1.0 + (-(z as f64)).exp())));
                }
                Score::Similarity(sims)
            }
        };
        let best = score.best_threshold(&same)?;
        let auc = score.roc_auc(&same)?;
        Ok(Figures {
            accuracy: best.accuracy,
            auc,
            threshold: best.threshold,
            pairs: pairs.len(),
        })
    }
}

/// The open-set figures of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// Verification accuracy at the best threshold.
    pub accuracy: f64,
    pub auc: f64,
    /// The best threshold: a distance (same below it) or a similarity (same at or above it).
    pub threshold: f64,
    pub pairs: usize,
}

/// Whether nothing before the first input's embedding trains or draws random numbers: every
/// layer with parameters frozen (batchnorm then in inference mode), no dropout.
fn frozen_embedding(lg: &LayerGraph) -> Result<bool, String> {
    let node = verify::embedding_node(lg)?;
    let prefix = crate::cut::prefix(lg, &[("embedding".into(), node)])?;
    Ok(prefix.nodes.iter().all(|n| {
        !matches!(n.op, crate::layer_graph::Op::Dropout { .. })
            && (n.params.is_empty() || n.frozen)
            && n.params.iter().all(|&p| !prefix.params[p].trainable)
    }))
}

/// The rows `which` of `batch.x`, one after another.
fn rows(batch: &Batch, which: impl Iterator<Item = usize>) -> Vec<f32> {
    let n: usize = batch.sample_shape.iter().product();
    which
        .flat_map(|i| batch.x[i * n..(i + 1) * n].iter().copied())
        .collect()
}
