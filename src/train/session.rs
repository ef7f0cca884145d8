//! A training session: epochs over a dataset with validation, checkpoints and callbacks.
//!
//! In: a layer graph (freeze flags applied), initial weights or a checkpoint, a data [`Split`]
//! and [`Settings`]. Out: a [`Report`] (the outcome, the per-epoch history, the final weights),
//! with every step and epoch reported to an [`Observer`] on the way (the CLI draws its
//! progress bar from these; a library user can log or stop early).
//!
//! Every epoch ends with an evaluation on the test set in inference mode and, when a checkpoint
//! path is set, an atomic checkpoint. An interrupt (the observer's `stop_requested`) saves a
//! checkpoint at the current batch, from which `resume` continues exactly: the shuffle and the
//! augmentation of each epoch depend only on (seed, epoch), so the resumed run sees the same
//! batches in the same order, and the epoch's running sums are restored, so its figures are
//! those of a run straight through. A checkpoint's progress is first checked against the
//! settings and the data ([`checkpoint::check_progress`]). A NaN or infinite loss stops
//! training before the parameters are touched, and so does an update that leaves a parameter
//! NaN or infinite (the optimizer's pass notes it): the last checkpoint stays as it was, never
//! overwritten by NaN.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::data::{Loader, LoaderOptions, Normalize, Split};
use crate::io::weights::Weights;
use crate::layer_graph::LayerGraph;
use crate::train_config::{Augment, Objective, Optimizer, Schedule};

use super::checkpoint::{self, Checkpoint, EpochRecord, Progress, RunShape};
use super::task::Task;
use super::verification::{self, Verification};
use super::{Horizon, StepError, Trainer, learning_rate_in};
use crate::verify::{IdentitySplit, Mining};

/// How to train.
#[derive(Debug, Clone)]
pub struct Settings {
    pub epochs: usize,
    pub batch: usize,
    pub objective: Objective,
    pub optimizer: Optimizer,
    pub schedule: Schedule,
    pub seed: u64,
    pub threads: usize,
    pub augment: Vec<Augment>,
    pub normalize: Normalize,
    /// Where to write checkpoints (after every epoch, and on interrupt).
    pub checkpoint: Option<PathBuf>,
    /// Stop after this many steps in all (quick runs and tests).
    pub max_steps: Option<u64>,
    /// The memory budget in bytes (`None`: what is available), see [`crate::budget`].
    pub memory_limit: Option<u64>,
    /// For verification models: which identities train and which are held out (`None`: the
    /// first 70% train, [`IdentitySplit::default_for`]).
    pub identities: Option<IdentitySplit>,
    /// For triplet models: how triplets are chosen.
    pub mining: Mining,
    /// Never compute a frozen part once and train the rest from its values (`--no-cache-features`).
    pub no_cache: bool,
}

/// What happens during training, as it happens.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// After each step: running means over the epoch so far.
    Step {
        epoch: usize,
        epochs: usize,
        batch: usize,
        batches: usize,
        loss: f64,
        /// Top-1 accuracy so far, when the task classifies.
        accuracy: Option<f64>,
        images_per_second: f64,
        lr: f64,
        /// Seconds left in this epoch at the current speed.
        eta: f64,
    },
    /// After each epoch's evaluation.
    Epoch(&'a EpochRecord),
    /// A checkpoint was written.
    Saved(&'a std::path::Path),
    /// Something the user should know about how training runs (one line).
    Note(&'a str),
}

/// Receives events; can ask training to stop (it then saves a checkpoint and returns).
pub trait Observer {
    fn event(&mut self, event: &Event<'_>);
    fn stop_requested(&self) -> bool {
        false
    }
}

/// An observer that ignores everything.
pub struct Quiet;

impl Observer for Quiet {
    fn event(&mut self, _: &Event<'_>) {}
}

/// How training ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Finished,
    /// Stopped on request (Ctrl-C) or by `max_steps`; resumable from the checkpoint.
    Stopped {
        epoch: usize,
        batch: usize,
    },
    /// The loss was NaN or infinite at this step (parameters are those before it), or the
    /// step's update left a parameter NaN or infinite (the loss is finite; the parameters are
    /// those after it). Either way nothing was saved from this step. `params` names the
    /// parameters holding a NaN or an infinity.
    NonFinite {
        step: u64,
        epoch: usize,
        batch: usize,
        loss: f32,
        params: Vec<String>,
    },
}

pub struct Report {
    pub outcome: Outcome,
    pub progress: Progress,
    pub weights: Weights,
    /// Seconds spent in this run (not counting earlier runs of a resumed training).
    pub seconds: f64,
    pub steps: u64,
    /// Whether a verification head trained on embeddings computed once (a frozen embedding).
    pub embeddings_cached: bool,
}

/// Trains `lg` on `data`. With `resume`, continues from the checkpoint's weights, optimizer
/// state and progress; otherwise starts from `weights`.
pub fn run(
    lg: &LayerGraph,
    weights: Weights,
    resume: Option<Checkpoint>,
    data: &Split,
    settings: &Settings,
    observer: &mut dyn Observer,
) -> Result<Report, String> {
    let (weights, progress) = match &resume {
        Some(ck) => (ck.weights.clone(), ck.progress.clone().unwrap_or_default()),
        None => (
            weights,
            Progress {
                seed: settings.seed,
                optimizer: settings.optimizer.to_string(),
                ..Progress::default()
            },
        ),
    };
    let mut progress = progress;
    // A verification model trains on triplets or pairs of the training identities and is
    // evaluated on the held-out ones; any other on the data's batches as they are.
    let mut verify = match verification::form_of(lg, &settings.objective, settings.mining) {
        Some(form) => {
            let ids = match &settings.identities {
                Some(ids) => ids.clone(),
                None => IdentitySplit::default_for(data.train.classes.max(data.test.classes))?,
            };
            let v = Verification::new(
                lg,
                form,
                data,
                &ids,
                settings.batch,
                progress.seed,
                settings.normalize.clone(),
                settings.augment.clone(),
            )?;
            observer.event(&Event::Note(&format!("  {}", v.describe(&ids))));
            Some(v)
        }
        None => None,
    };
    let step_batch = verify.as_ref().map_or(settings.batch, |v| v.batch);
    progress.batch_size = Some(step_batch);
    // A frozen embedding is computed once; only the head after it trains.
    if let Some(v) = verify.as_mut().filter(|_| !settings.no_cache)
        && let Some(note) =
            v.cache_embeddings(lg, &weights, settings.threads, settings.memory_limit)?
    {
        observer.event(&Event::Note(&note));
    }
    let embeddings_cached = verify.as_ref().is_some_and(|v| v.head.is_some());
    let head = verify.as_ref().and_then(|v| v.head.clone());
    let mut trainer = Trainer::with_limit(
        head.as_ref().unwrap_or(lg),
        weights,
        step_batch,
        settings.objective.clone(),
        settings.optimizer.clone(),
        settings.threads,
        settings.memory_limit,
    )?;
    trainer.set_seed(progress.seed);
    let tensors: Vec<usize> = trainer.graph().grads.iter().map(|&(i, _)| i).collect();
    if let Some(ck) = &resume
        && ck.progress.is_some()
    {
        checkpoint::restore_optimizer(&mut trainer.optim, lg, &tensors, ck, progress.step)?;
    }
    let seed = progress.seed;
    // The plain task: its feeds and the loaders of both halves.
    let plain = match &verify {
        Some(_) => None,
        None => {
            let task = Task::new(lg, &settings.objective, &data.train)?;
            let train = Loader::new(
                Arc::new(data.train.clone()),
                settings.normalize.clone(),
                LoaderOptions::train(settings.batch, seed, settings.augment.clone()),
            )
            .map_err(|e| e.to_string())?;
            let test = Loader::new(
                Arc::new(data.test.clone()),
                settings.normalize.clone(),
                LoaderOptions::eval(settings.batch),
            )
            .map_err(|e| e.to_string())?;
            Some((task, train, test))
        }
    };
    let (batches, samples) = match (&verify, &plain) {
        (Some(v), _) => (v.batches_per_epoch(), v.train.len()),
        (None, Some((_, train, _))) => (train.batches_per_epoch(), data.train.len()),
        (None, None) => unreachable!("one of the two"),
    };
    if batches == 0 {
        return Err(format!(
            "the training set has {} samples, fewer than one batch of {}",
            data.train.len(),
            settings.batch
        ));
    }
    let classifies = plain.as_ref().is_some_and(|(t, _, _)| t.classifies());
    // The checkpoint's progress as saved (`progress` now holds this run's batch size).
    if let Some(ck) = &resume
        && let Some(saved) = &ck.progress
    {
        let run = RunShape {
            epochs: settings.epochs,
            batches,
            batch_size: step_batch,
            samples,
        };
        checkpoint::check_progress(saved, &run, &ck.source)?;
    }
    // The cosine's horizon: the checkpoint's (this run's epochs for one without), moved to
    // this run's epochs from where training stands, so the learning rate does not jump when
    // `--epochs` changes on resume.
    let now = progress.epoch as f64 + progress.batch as f64 / batches as f64;
    let horizon = progress
        .horizon
        .unwrap_or_else(|| Horizon::new(&settings.schedule, settings.epochs))
        .extend(&settings.schedule, now, settings.epochs);
    progress.horizon = Some(horizon);
    let base_lr = trainer.optim.base_lr();
    let start = Instant::now();
    let mut steps_this_run = 0u64;
    let save = |trainer: &Trainer, progress: &Progress, observer: &mut dyn Observer| {
        if let Some(path) = &settings.checkpoint {
            checkpoint::save(
                path,
                lg,
                &trainer.weights(),
                &trainer.optim,
                &tensors,
                progress,
            )
            .map_err(|e| e.to_string())?;
            observer.event(&Event::Saved(path));
        }
        Ok::<(), String>(())
    };
    while progress.epoch < settings.epochs {
        let epoch = progress.epoch;
        let t0 = Instant::now();
        // The running sums: restored when the epoch was stopped midway, so the epoch's
        // figures are those of a run straight through.
        let mut sums = progress.epoch_sums.take().unwrap_or_default();
        let mut bufs = Vec::new();
        let mut named: Vec<(String, Vec<f32>)> = Vec::new();
        // Samples of this epoch in this run (for the speed).
        let mut seen_here = 0u64;
        let first = progress.batch;
        let mut lr = base_lr;
        let mut plain_batches = plain
            .as_ref()
            .map(|(_, train, _)| train.epoch(epoch as u64).skip(first));
        for b in first..batches {
            let stop = observer.stop_requested()
                || settings.max_steps.is_some_and(|m| steps_this_run >= m);
            if stop {
                progress.batch = b;
                progress.epoch_sums = (b > 0).then_some(sums);
                save(&trainer, &progress, observer)?;
                return Ok(Report {
                    outcome: Outcome::Stopped { epoch, batch: b },
                    weights: trainer.weights(),
                    progress,
                    seconds: start.elapsed().as_secs_f64(),
                    steps: steps_this_run,
                    embeddings_cached,
                });
            }
            lr = learning_rate_in(
                &settings.schedule,
                base_lr,
                &horizon,
                epoch,
                b as f64 / batches as f64,
            );
            let result = match (&mut verify, &plain, &mut plain_batches) {
                (Some(v), _, _) => {
                    v.feeds(&trainer, epoch as u64, b, &mut named)?;
                    let feed: Vec<(&str, &[f32])> = named
                        .iter()
                        .map(|(n, x)| (n.as_str(), x.as_slice()))
                        .collect();
                    trainer.step_feed(&feed, lr).map(|loss| {
                        sums.loss_sum += loss as f64 * step_batch as f64;
                        sums.seen += step_batch as u64;
                    })
                }
                (None, Some((task, _, _)), Some(it)) => {
                    let batch = it.next().ok_or("the loader ran out of batches")?;
                    task.fill(&batch, &mut bufs, "sample", b * settings.batch)?;
                    trainer
                        .step_feed(&task.feed(&bufs), lr)
                        .map(|loss| task.measure(&batch, loss, |n| trainer.output(n), &mut sums))
                }
                _ => unreachable!("one of the two"),
            };
            match result {
                Ok(()) => seen_here += step_batch as u64,
                Err(StepError::NonFinite { loss, params }) => {
                    return Ok(Report {
                        outcome: Outcome::NonFinite {
                            step: progress.step + 1,
                            epoch,
                            batch: b,
                            loss,
                            params,
                        },
                        weights: trainer.weights(),
                        progress,
                        seconds: start.elapsed().as_secs_f64(),
                        steps: steps_this_run,
                        embeddings_cached,
                    });
                }
                Err(StepError::Other(m)) => return Err(m),
            }
            progress.step += 1;
            steps_this_run += 1;
            let elapsed = t0.elapsed().as_secs_f64().max(1e-9);
            let done = b + 1 - first;
            observer.event(&Event::Step {
                epoch,
                epochs: settings.epochs,
                batch: b,
                batches,
                loss: sums.loss_sum / sums.seen.max(1) as f64,
                accuracy: classifies.then(|| sums.correct as f64 / sums.seen.max(1) as f64),
                images_per_second: seen_here as f64 / elapsed,
                lr,
                eta: elapsed / done as f64 * (batches - b - 1) as f64,
            });
        }
        let train_seconds = t0.elapsed().as_secs_f64();
        let t_eval = Instant::now();
        let mut metrics = std::collections::BTreeMap::new();
        let mut train_accuracy = 0.0;
        let mut test_accuracy = None;
        let mut test_sums = None;
        match (&verify, &plain) {
            (Some(v), _) => {
                let f = v.evaluate(
                    lg,
                    &trainer.weights(),
                    trainer.threads(),
                    &trainer.jit(),
                    settings.memory_limit,
                )?;
                metrics.insert("verification_accuracy".to_string(), f.accuracy);
                metrics.insert("auc".to_string(), f.auc);
                metrics.insert("threshold".to_string(), f.threshold);
                progress.threshold = Some(f.threshold);
            }
            (None, Some((task, _, test))) => {
                if !data.test.is_empty() {
                    test_sums = Some(trainer.evaluate(test, task)?);
                }
                let mut train_metrics = task.summarize(&sums);
                train_accuracy = train_metrics.remove("accuracy").unwrap_or(0.0);
                for (k, v) in train_metrics {
                    metrics.insert(format!("train_{k}"), v);
                }
                if let Some(t) = &test_sums {
                    let mut m = task.summarize(t);
                    test_accuracy = m.remove("accuracy");
                    // mAP is measured on the held-out images only: `map50`, not `test_map50`.
                    if let Some(v) = m.remove(super::task::MAP50) {
                        metrics.insert(super::task::MAP50.to_string(), v);
                    }
                    for (k, v) in m {
                        metrics.insert(format!("test_{k}"), v);
                    }
                }
            }
            (None, None) => unreachable!("one of the two"),
        }
        let eval_seconds = t_eval.elapsed().as_secs_f64();
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss: sums.loss_sum / sums.seen.max(1) as f64,
            train_accuracy,
            test_loss: test_sums
                .as_ref()
                .map(|t| t.loss_sum / t.seen.max(1) as f64),
            test_accuracy,
            lr,
            metrics,
            seconds: epoch_seconds(train_seconds, eval_seconds, batches, first),
            images_per_second: seen_here as f64 / train_seconds.max(1e-9),
        };
        progress.history.push(record);
        progress.epoch += 1;
        progress.batch = 0;
        observer.event(&Event::Epoch(progress.history.last().expect("just pushed")));
        save(&trainer, &progress, observer)?;
    }
    Ok(Report {
        outcome: Outcome::Finished,
        weights: trainer.weights(),
        progress,
        seconds: start.elapsed().as_secs_f64(),
        steps: steps_this_run,
        embeddings_cached,
    })
}

/// An epoch's seconds: its training time and its evaluation. When it was resumed at batch
/// `first` of `batches`, this run trained only the rest, and the earlier part's time is not in
/// the checkpoint: the training time is then the whole epoch's at this run's speed.
pub fn epoch_seconds(train_seconds: f64, eval_seconds: f64, batches: usize, first: usize) -> f64 {
    let done_here = batches.saturating_sub(first).max(1);
    train_seconds * batches as f64 / done_here as f64 + eval_seconds
}

/// What resuming from `p` with `settings` does to a cosine schedule whose number of epochs
/// changes, in words for the CLI (`None` otherwise). `batches` is an epoch's batch count.
pub fn horizon_note(p: &Progress, settings: &Settings, batches: usize) -> Option<String> {
    let Schedule::Cosine { min_lr, .. } = settings.schedule else {
        return None;
    };
    let old = p.horizon?;
    if old.epochs == settings.epochs {
        return None;
    }
    let now = p.epoch as f64 + p.batch as f64 / batches.max(1) as f64;
    let new = old.extend(&settings.schedule, now, settings.epochs);
    let base = match settings.optimizer {
        Optimizer::Sgd { lr, .. } | Optimizer::Adam { lr, .. } | Optimizer::AdamW { lr, .. } => lr,
    };
    let frac = p.batch as f64 / batches.max(1) as f64;
    let lr = learning_rate_in(&settings.schedule, base, &new, p.epoch, frac);
    let mut note = format!(
        "the cosine schedule planned for {} epochs continues from lr {lr:.3e} and now reaches \
         min_lr ({min_lr:e}) at the end of epoch {} (on resume the learning rate never jumps \
         back up)",
        old.epochs, settings.epochs
    );
    if old.progress_at(now) >= 1.0 && settings.epochs > old.epochs {
        note += "; it had already reached min_lr, so the added epochs train at min_lr: to \
                 train further at a higher rate, start a new training from these weights \
                 (--weights)";
    }
    Some(note)
}
