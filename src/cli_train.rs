//! `netc train`: the command-line face of [`crate::train::session`].
//!
//! In: a spec, flags (each overriding the spec's `train { }` section, which overrides the
//! defaults). Out: a progress bar on a terminal (plain lines otherwise) on stderr, per-epoch
//! validation lines, a checkpoint, a PNG of the loss and accuracy curves, and one JSON line of
//! final metrics on stdout (also to `--metrics-json`). Exit code 0 when training finished, 1
//! on errors (a NaN loss included), 130 after Ctrl-C (with a checkpoint saved to resume from).

use crate::cli::fail;
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use crate::data::Normalize;
use crate::io::weights::Weights;
use crate::plot::{History, Record, Unit, write_curves};
use crate::spec::Spec;
use crate::train::checkpoint::{self, EpochRecord};
use crate::train::session::{self, Event, Observer, Outcome, Settings};
use crate::train_config::{Loss, Optimizer, Schedule};

/// The flags of `netc train`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TrainArgs {
    /// `bundled` (a 10,000-image Fashion-MNIST subset inside netc), `fashion-mnist` (the
    /// full set from Debian's dataset-fashion-mnist), or a path: a directory of IDX files,
    /// CIFAR-10 binaries or class subfolders of images, or an .npz file.
    #[arg(long)]
    pub data: Option<String>,
    /// Epochs (default: the spec's, else 5). With --resume, the total to train to: more
    /// extends the training. The learning rate then never jumps back up: a cosine schedule
    /// continues from the rate where it stands and anneals to min_lr by the new last epoch (a
    /// finished one stays at min_lr; start a new training with --weights to train at a higher
    /// rate); constant and step schedules simply go on.
    #[arg(long, value_parser = crate::cli_values::epochs)]
    pub epochs: Option<usize>,
    /// Batch size (default: the spec's, else 64).
    #[arg(long, value_parser = crate::cli_values::batch)]
    pub batch: Option<usize>,
    /// Learning rate (the schedule scales it).
    #[arg(long, value_parser = crate::cli_values::lr)]
    pub lr: Option<f64>,
    /// The optimizer: the spec's settings when its `train` section names the same one,
    /// otherwise these defaults (SGD: lr 0.01, momentum 0.9; Adam: lr 1e-3; AdamW: lr 1e-3,
    /// weight decay 0.01).
    #[arg(long, value_parser = ["sgd", "adam", "adamw"])]
    pub optimizer: Option<String>,
    /// Seed of the initialization, the shuffle and the augmentation.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Initial weights (safetensors); seeded random initialization when absent.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Where to write the checkpoint. Without it: OUT/checkpoint.safetensors when --out is
    /// given, else the --resume file (updated in place), else runs/MODEL/checkpoint.safetensors.
    /// The header line `checkpoint: PATH` says which; the curves go beside it (curves.png
    /// beside a checkpoint.safetensors, else NAME.curves.png).
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Continue from a checkpoint exactly where it stopped (it is overwritten only when
    /// neither --save nor --out is given).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// With --weights: initialize these modules afresh instead of loading them, e.g. a new
    /// head with `--set classes=3 --reinit fc` (the file's tensors under them are not used;
    /// every other tensor must fit). Names are module paths as `netc summary` prints them;
    /// what was reinitialized is listed.
    #[arg(long, num_args = 1.., value_name = "NAME")]
    pub reinit: Vec<String>,
    /// Freeze parameters: names (`conv1`), prefixes (`layer1`), ranges (`features.0..7`), or
    /// `..N` for the first N layers as `netc summary` numbers them (its # column: the
    /// top-level modules with parameters; `..6` on ResNet-18 freezes all but `fc`). Freezing
    /// every trainable parameter is an error.
    #[arg(long, num_args = 1..)]
    pub freeze: Vec<String>,
    /// Require the frozen-prefix feature cache (an error when it cannot apply). By default it
    /// is used whenever it applies, with a note: when the first layers are frozen (no
    /// trainable parameter, no dropout, batchnorm frozen) and no augmentation is active, their
    /// outputs are computed once per image and the rest of the model trains from them (same
    /// results, much faster). See the README's "Transfer learning".
    #[arg(long, conflicts_with = "no_cache_features")]
    pub cache_features: bool,
    /// Never use the feature cache.
    #[arg(long)]
    pub no_cache_features: bool,
    /// The most memory the feature cache may take, e.g. `2G` (default 4G); a larger cache
    /// goes to a memory-mapped file in --cache-dir (deleted when training ends).
    #[arg(long, value_name = "SIZE", value_parser = crate::budget::parse_size)]
    pub cache_limit: Option<u64>,
    /// Where a feature cache larger than --cache-limit is kept (default: the system's
    /// temporary directory, $TMPDIR); refused when its disk lacks room (1 GiB, or a tenth of
    /// the free space, is kept free).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<std::path::PathBuf>,
    /// Worker threads (default: all cores; at most 4 × the cores, and 256).
    #[arg(long, default_value_t = crate::cli::default_threads(), value_parser = crate::cli_values::threads)]
    pub threads: usize,
    /// Also write the final metrics (one JSON object) to this file.
    #[arg(long)]
    pub metrics_json: Option<PathBuf>,
    /// Directory for the checkpoint and the curves (default: runs/MODEL).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Stop after this many steps (and save a checkpoint to resume from).
    #[arg(long, value_parser = crate::cli_values::steps)]
    pub max_steps: Option<u64>,
    /// Per-channel mean for normalization, e.g. `0.485,0.456,0.406` (default: the spec's).
    #[arg(long, value_delimiter = ',', value_parser = crate::cli_values::mean)]
    pub mean: Option<Vec<f64>>,
    /// Per-channel standard deviation (default: the spec's).
    #[arg(long, value_delimiter = ',', value_parser = crate::cli_values::std)]
    pub std: Option<Vec<f64>>,
    /// Verification models: which identities (labels) train and which are held out for the
    /// open-set evaluation, as TRAIN/EVAL lists or ranges, e.g. `0-6/7-9` (default: the
    /// first 70% train, 0-6/7-9 on the bundled data).
    #[arg(long, value_name = "TRAIN/EVAL", value_parser = crate::cli_values::identities)]
    pub identities: Option<crate::verify::IdentitySplit>,
    /// Triplet models: how each step's triplets are chosen: `batch-hard` (default: the
    /// hardest positive and negative of each anchor in a batch of P identities × K images),
    /// `semi-hard` (FaceNet's), or `random`.
    #[arg(long, value_parser = crate::cli_values::mining)]
    pub mining: Option<crate::verify::Mining>,
    /// Augmentations replacing the spec's `augment` list, in the same syntax, e.g.
    /// `"mirror, random_crop(pad=4), color_shift(0.2)"`; `none` for no augmentation.
    #[arg(long, value_parser = crate::cli_values::augment)]
    pub augment: Option<crate::cli_values::AugmentArg>,
    /// Only the final JSON line.
    #[arg(long, short)]
    pub quiet: bool,
    /// The most memory to use, e.g. `8G`, `512M` (default: the memory available, from
    /// /proc/meminfo or the cgroup's limit); training estimated to need more is refused
    /// before anything is allocated.
    #[arg(long, value_name = "SIZE", value_parser = crate::budget::parse_size)]
    pub memory_limit: Option<u64>,
}

/// The optimizer the flags and the spec ask for: `--optimizer` picks the kind (keeping the
/// spec's settings when it names the same kind, PyTorch's defaults otherwise), `--lr` sets the
/// learning rate.
fn optimizer(spec: Option<&Optimizer>, kind: Option<&str>, lr: Option<f64>) -> Optimizer {
    let default_sgd = Optimizer::Sgd {
        lr: 0.01,
        momentum: 0.9,
        dampening: 0.0,
        nesterov: false,
        weight_decay: 0.0,
    };
    let mut o = match (kind, spec) {
        (None, Some(s)) => s.clone(),
        (None, None) => default_sgd,
        (Some(k), Some(s)) if kind_of(s) == k => s.clone(),
        (Some("adam"), _) => Optimizer::Adam {
            lr: 1e-3,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
        },
        (Some("adamw"), _) => Optimizer::AdamW {
            lr: 1e-3,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.01,
        },
        (Some(_), _) => default_sgd,
    };
    if let Some(v) = lr {
        match &mut o {
            Optimizer::Sgd { lr, .. }
            | Optimizer::Adam { lr, .. }
            | Optimizer::AdamW { lr, .. } => *lr = v,
        }
    }
    o
}

fn kind_of(o: &Optimizer) -> &'static str {
    match o {
        Optimizer::Sgd { .. } => "sgd",
        Optimizer::Adam { .. } => "adam",
        Optimizer::AdamW { .. } => "adamw",
    }
}

/// Runs `netc train`.
pub fn train(spec: &Spec, args: &TrainArgs) -> ExitCode {
    // First of all, so that an early Ctrl-C is already a clean stop.
    let stop = install_ctrl_c();
    let mut lg = spec.graph.clone();
    let cfg = lg.train.clone().unwrap_or_default();
    // Freeze: the spec's selectors, then the command line's.
    let mut selectors = cfg.freeze.clone();
    selectors.extend(args.freeze.iter().cloned());
    let frozen = match crate::train::freeze(&mut lg, &selectors) {
        Ok(n) => n,
        Err(e) => return fail(e),
    };
    if let Err(e) = crate::cli_transfer::check_not_all_frozen(&lg, &cfg.freeze, &args.freeze) {
        return fail(e);
    }
    let objective = crate::train::graph::objective_of(&lg);
    let settings_opt = optimizer(cfg.optimizer.as_ref(), args.optimizer.as_deref(), args.lr);
    let source = args
        .data
        .clone()
        .or(cfg.data.clone())
        .unwrap_or_else(|| "bundled".to_string());
    let input = lg.inputs[0].clone();
    let normalize = match (&args.mean, &args.std) {
        (None, None) => Normalize::from_input(&input),
        (m, s) => {
            let c = input.shape.first().copied().unwrap_or(1);
            let m = m.clone().unwrap_or_else(|| input.mean.clone());
            let s = s.clone().unwrap_or_else(|| input.std.clone());
            if m.is_empty() != s.is_empty() {
                return fail("give both --mean and --std (or set both in the spec's input)");
            }
            if m.is_empty() {
                Ok(Normalize::none(c))
            } else {
                Normalize::new(&m, &s, c)
            }
        }
    };
    let normalize = match normalize {
        Ok(n) => n,
        Err(e) => return fail(e),
    };
    // The augmentations: --augment's, else the spec's.
    let augment = match &args.augment {
        Some(a) => match a.for_input(&input.shape) {
            Ok(list) => list,
            Err(e) => return fail(e.trim_end()),
        },
        None => cfg.augment.clone(),
    };
    let t_data = Instant::now();
    let data = match crate::data::open(&source, &input) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    // Each cross-entropy term's output must be class scores for the data's labels.
    let mut classifiers: Vec<(String, usize)> = Vec::new();
    for term in &objective.terms {
        if !matches!(term.loss, Loss::CrossEntropy { .. }) {
            continue;
        }
        let out_name = term
            .outputs
            .first()
            .cloned()
            .unwrap_or_else(|| lg.outputs[0].0.clone());
        let Some(&(_, node)) = lg.outputs.iter().find(|(n, _)| *n == out_name) else {
            continue;
        };
        let out_shape = &lg.nodes[node].shape;
        let Some(classes) = crate::loss::class_count(out_shape) else {
            return fail(format!(
                "the model's output `{out_name}` is {}; training with labels needs class scores \
                 [K] or [K, 1, 1]\n  help: end the model with `global_avgpool` (or `flatten`; \
                 `dense(K)`), or with a convolution that covers the whole remaining map",
                crate::io::show_shape(out_shape)
            ));
        };
        if let Err(e) = data.check_classes(classes, &out_name) {
            return fail(e);
        }
        classifiers.push((out_name, classes));
    }
    // A verification model trains on triplets or pairs (checked by the session); any other
    // on the data's batches, checked here before anything is compiled.
    let mining = args.mining.unwrap_or_default();
    let verification = crate::train::verification::form_of(&lg, &objective, mining);
    let classifies = match &verification {
        Some(_) => false,
        None => match crate::train::task::Task::new(&lg, &objective, &data.train) {
            Ok(t) => t.classifies(),
            Err(e) => return fail(e),
        },
    };
    let data_seconds = t_data.elapsed().as_secs_f64();
    // Before the weights are read or made: the whole training must fit.
    let batch = args.batch.or(cfg.batch).unwrap_or(64).max(1);
    if let Err(e) = crate::budget::check_training(
        &lg,
        (batch, batch.min(data.test.len())),
        args.threads.max(1),
        &objective,
        &settings_opt,
        args.memory_limit,
    ) {
        return fail(e);
    }
    // Once the training is known to fit (a refusal comes first and alone).
    let data_classes = data.train.classes.max(data.test.classes);
    for (out_name, classes) in classifiers.iter().filter(|(_, k)| *k > data_classes) {
        let fix = if lg.model_params.iter().any(|(k, _)| k == "classes") {
            format!(" (`--set classes={data_classes}`)")
        } else {
            String::new()
        };
        eprintln!(
            "warning: the model's output `{out_name}` has {classes} classes but the data have \
             {data_classes} (labels 0–{}): the other {} are never a target and only take \
             probability away; give the model {data_classes} outputs{fix}",
            data_classes.saturating_sub(1),
            classes - data_classes
        );
    }

    let run_dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&lg.name));
    // --save, else --out's, else the resumed file, else the default directory's.
    let ckpt_path = match (&args.save, &args.out, &args.resume) {
        (Some(p), _, _) => p.clone(),
        (None, Some(out), _) => out.join("checkpoint.safetensors"),
        (None, None, Some(r)) => r.clone(),
        (None, None, None) => run_dir.join("checkpoint.safetensors"),
    };
    // Beside the checkpoint: `curves.png` beside a `checkpoint.safetensors` (a run
    // directory's, resumed or not), else `NAME.curves.png` for a named file.
    let curves_path = if ckpt_path.file_name() == Some("checkpoint.safetensors".as_ref()) {
        ckpt_path.with_file_name("curves.png")
    } else {
        ckpt_path.with_extension("curves.png")
    };
    for p in [&ckpt_path, &curves_path] {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty())
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            return fail(format!("cannot create {}: {e}", dir.display()));
        }
    }
    // Temporary files of this run's outputs left by a killed run.
    let outputs = [
        Some(&ckpt_path),
        Some(&curves_path),
        args.metrics_json.as_ref(),
    ];
    for p in outputs.into_iter().flatten() {
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
        let dir = dir.unwrap_or(std::path::Path::new("."));
        let Some(name) = p.file_name() else { continue };
        for f in crate::io::stale::remove_stale_temps(dir, &[name]) {
            if !args.quiet {
                eprintln!("removed {}, left by an interrupted run", f.display());
            }
        }
    }

    let resume = match &args.resume {
        Some(p) => match checkpoint::load(p, &lg) {
            Ok(ck) if ck.progress.is_none() => {
                return fail(format!(
                    "{}: these are weights without training state; pass them with --weights to \
                     start a new training from them",
                    p.display()
                ));
            }
            Ok(ck) => Some(ck),
            Err(e) => return fail(e),
        },
        None => None,
    };
    let seed = args
        .seed
        .or(resume
            .as_ref()
            .and_then(|c| c.progress.as_ref().map(|p| p.seed)))
        .or(cfg.seed)
        .unwrap_or(0);
    if !args.reinit.is_empty() && (args.weights.is_none() || resume.is_some()) {
        return fail(
            "--reinit reinitializes parts of the weights given with --weights, and is only \
             for starting a new training\n  help: add --weights FILE (and drop --resume)",
        );
    }
    let weights = match (&args.weights, &resume) {
        (Some(p), None) if !args.reinit.is_empty() => {
            match crate::cli_transfer::load_reinit(p, &lg, &args.reinit, seed) {
                Ok(w) => w,
                Err(e) => return fail(e),
            }
        }
        (Some(p), None) => match Weights::load(p, &lg) {
            Ok(w) => w,
            Err(e) => return fail(e),
        },
        _ => Weights::init(&lg, seed),
    };
    // The frozen-prefix feature cache: the model to train, its data and what the loader does.
    let mut augment = augment;
    let mut normalize = normalize;
    let (train_lg, data, feature_cache) = if args.no_cache_features {
        (lg.clone(), data, None)
    } else {
        let start = resume.as_ref().map(|c| &c.weights).unwrap_or(&weights);
        match crate::cli_transfer::feature_cache(
            &lg,
            start,
            data,
            &mut augment,
            &mut normalize,
            batch,
            args,
        ) {
            Ok(v) => v,
            Err(e) => return fail(e),
        }
    };
    let settings = Settings {
        epochs: args.epochs.or(cfg.epochs).unwrap_or(5),
        batch,
        objective,
        optimizer: settings_opt.clone(),
        schedule: cfg
            .schedule
            .clone()
            .unwrap_or(Schedule::Constant { warmup: 0 }),
        seed,
        threads: args.threads,
        augment,
        normalize,
        checkpoint: Some(ckpt_path.clone()),
        max_steps: args.max_steps,
        memory_limit: args.memory_limit,
        identities: args.identities.clone(),
        mining,
        no_cache: args.no_cache_features,
    };
    if !args.quiet {
        eprintln!(
            "training {} on {} ({} train / {} test images, loaded in {:.1} s)",
            lg.name,
            data.train.name.trim_end_matches(" train"),
            crate::show::thousands(data.train.len() as u64),
            crate::show::thousands(data.test.len() as u64),
            data_seconds
        );
        eprintln!(
            "  {} epochs, batch {}, {}, {}, seed {}, {} threads{}",
            settings.epochs,
            settings.batch,
            settings.optimizer,
            settings.schedule,
            seed,
            settings.threads,
            if frozen > 0 {
                format!(", {frozen} parameters frozen")
            } else {
                String::new()
            }
        );
        if !settings.augment.is_empty() {
            let list: Vec<String> = settings.augment.iter().map(|a| a.to_string()).collect();
            eprintln!("  augment: {}", list.join(", "));
        }
        if let Some(c) = &resume
            && let Some(p) = &c.progress
        {
            eprintln!(
                "  resuming from {} at epoch {}, batch {} (step {})",
                c.source.display(),
                p.epoch + 1,
                p.batch,
                p.step
            );
            let batches = data.train.len() / settings.batch.max(1);
            if let Some(note) = session::horizon_note(p, &settings, batches) {
                eprintln!("  {note}");
            }
            if p.epoch == settings.epochs && p.batch == 0 {
                eprintln!(
                    "  nothing to train: all {} epochs are done (pass --epochs {} or more to \
                     train further)",
                    p.epoch,
                    p.epoch + 1
                );
            }
        }
        eprintln!("  loss: {}", settings.objective);
        eprintln!("  checkpoint: {}", ckpt_path.display());
    }

    let mut history = History::new(format!("{} on {source}", lg.name), Unit::Epoch);
    if let Some(p) = resume.as_ref().and_then(|c| c.progress.as_ref()) {
        for r in &p.history {
            history.push(record(r, classifies));
        }
    }
    let mut obs = Progress {
        bar: std::io::stderr().is_terminal() && !args.quiet,
        quiet: args.quiet,
        stop,
        last_draw: None,
        history,
        curves: curves_path.clone(),
        curve_error: None,
        curves_written: false,
        saved: false,
        classifies,
    };
    let report = match session::run(&train_lg, weights, resume, &data, &settings, &mut obs) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    obs.clear_line();
    let last = report.progress.history.last();
    let mut metrics = serde_json::json!({
        "model": lg.name,
        "data": source,
        "outcome": match &report.outcome {
            Outcome::Finished => "finished",
            Outcome::Stopped { .. } => "stopped",
            Outcome::NonFinite { .. } => "non_finite",
        },
        "epochs": report.progress.epoch,
        "steps": report.progress.step,
        "train_loss": last.map(|r| r.train_loss),
        "train_accuracy": last.filter(|_| classifies).map(|r| r.train_accuracy),
        "test_loss": last.and_then(|r| r.test_loss),
        "test_accuracy": last.and_then(|r| r.test_accuracy),
        "seconds": report.seconds,
        "images_per_second": if report.seconds > 0.0 {
            // Samples per step: the step's batch (P×K for mined triplets), not --batch.
            let per = report.progress.batch_size.unwrap_or(settings.batch);
            report.steps as f64 * per as f64 / report.seconds
        } else { 0.0 },
        // Only files that exist: written by this run, or the checkpoint resumed from and
        // left as it was.
        "checkpoint": (obs.saved || args.resume.as_ref() == Some(&ckpt_path))
            .then(|| ckpt_path.display().to_string()),
        "curves": obs.curves_written.then(|| curves_path.display().to_string()),
        // Where the frozen part's outputs were cached: `memory` or `mapped` (features of a
        // frozen prefix), `embeddings` (a verification head on a frozen embedding), or null.
        "feature_cache": feature_cache.or(report.embeddings_cached.then_some("embeddings")),
    });
    // The task's other metrics (top-5, MSE/MAE, verification), under their own names.
    if let (Some(r), Some(map)) = (last, metrics.as_object_mut()) {
        for (k, v) in &r.metrics {
            map.insert(k.clone(), serde_json::json!(v));
        }
    }
    let line = metrics.to_string();
    println!("{line}");
    let _ = std::io::stdout().flush();
    if let Some(p) = &args.metrics_json
        && let Err(e) = crate::io::write_atomic(p, |w| writeln!(w, "{line}"))
    {
        return fail(e);
    }
    if let Some(e) = &obs.curve_error {
        eprintln!(
            "warning: could not write the curves to {}: {e}",
            curves_path.display()
        );
    }
    match report.outcome {
        Outcome::Finished => ExitCode::SUCCESS,
        Outcome::Stopped { epoch, batch } => {
            if !args.quiet {
                eprintln!(
                    "stopped at epoch {}, batch {}; checkpoint saved to {} (continue with --resume {})",
                    epoch + 1,
                    batch,
                    ckpt_path.display(),
                    ckpt_path.display()
                );
            }
            if obs.stop.load(Ordering::SeqCst) {
                ExitCode::from(130)
            } else {
                ExitCode::SUCCESS
            }
        }
        Outcome::NonFinite {
            step,
            epoch,
            batch,
            loss,
            params,
        } => {
            // The last checkpoint: this run's, else the one it resumed from.
            let last = if obs.saved {
                Some(&ckpt_path)
            } else {
                args.resume.as_ref()
            };
            let kept = match last {
                None => "no checkpoint was written".to_string(),
                Some(p) => format!(
                    "the last good checkpoint (after epoch {}) is unchanged at {}",
                    report.progress.epoch,
                    p.display()
                ),
            };
            let names: Vec<String> = params.iter().take(5).map(|p| format!("`{p}`")).collect();
            let mut names = names.join(", ");
            if params.len() > 5 {
                names += &format!(" and {} more", params.len() - 5);
            }
            let (what, cause, before, help) = if loss.is_finite() {
                (
                    format!("the update made {names} NaN or infinite"),
                    String::new(),
                    "saving the weights",
                    "lower the learning rate (--lr)",
                )
            } else if params.is_empty() {
                (
                    format!("the loss became {loss}"),
                    String::new(),
                    "updating the weights",
                    "lower the learning rate (--lr), or check the data's normalization",
                )
            } else {
                (
                    format!("the loss became {loss}"),
                    format!(": NaN or infinite values in {names}"),
                    "updating the weights",
                    "check the weights training started from (--weights, --resume)",
                )
            };
            fail(format!(
                "{what} at step {step} (epoch {}, batch {batch}){cause}; training stopped \
                 before {before}, and {kept}\n  help: {help}",
                epoch + 1
            ))
        }
    }
}

fn record(r: &EpochRecord, classifies: bool) -> Record {
    Record {
        x: r.epoch as f64,
        train_loss: Some(r.train_loss),
        train_accuracy: classifies.then_some(r.train_accuracy),
        val_loss: r.test_loss,
        val_accuracy: r.test_accuracy,
    }
}

/// Ctrl-C sets the flag (training then saves a checkpoint and stops); a second Ctrl-C exits at
/// once (checkpoints are written atomically, so even that loses nothing already saved).
fn install_ctrl_c() -> Arc<AtomicBool> {
    static PRESSES: AtomicUsize = AtomicUsize::new(0);
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let _ = ctrlc::set_handler(move || {
        if PRESSES.fetch_add(1, Ordering::SeqCst) > 0 {
            std::process::exit(130);
        }
        f.store(true, Ordering::SeqCst);
    });
    flag
}

/// Draws progress and collects the curves.
struct Progress {
    bar: bool,
    quiet: bool,
    stop: Arc<AtomicBool>,
    last_draw: Option<Instant>,
    history: History,
    curves: PathBuf,
    curve_error: Option<String>,
    /// Whether the curves and a checkpoint were written in this run.
    curves_written: bool,
    saved: bool,
    /// Whether the task measures accuracy (else no accuracy is shown).
    classifies: bool,
}

impl Progress {
    fn clear_line(&self) {
        if self.bar {
            eprint!("\r\x1b[2K");
        }
    }
}

fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

impl Observer for Progress {
    fn event(&mut self, e: &Event<'_>) {
        match e {
            Event::Step {
                epoch,
                epochs,
                batch,
                batches,
                loss,
                accuracy,
                images_per_second,
                eta,
                ..
            } => {
                if !self.bar {
                    return;
                }
                let now = Instant::now();
                if self
                    .last_draw
                    .is_some_and(|t| now.duration_since(t).as_millis() < 100)
                    && batch + 1 < *batches
                {
                    return;
                }
                self.last_draw = Some(now);
                let width = 24;
                let filled = (batch + 1) * width / batches.max(&1);
                eprint!(
                    "\r\x1b[2Kepoch {}/{} [{}{}] {}/{}  loss {:.4}{}  {:.0} img/s  ETA {}",
                    epoch + 1,
                    epochs,
                    "=".repeat(filled),
                    " ".repeat(width - filled),
                    batch + 1,
                    batches,
                    loss,
                    accuracy
                        .map(|a| format!("  acc {:.1}%", a * 100.0))
                        .unwrap_or_default(),
                    images_per_second,
                    duration(*eta)
                );
                let _ = std::io::stderr().flush();
            }
            Event::Epoch(r) => {
                self.clear_line();
                if !self.quiet {
                    let mut test = match (r.test_loss, r.test_accuracy) {
                        (Some(l), Some(a)) => {
                            format!("  test loss {l:.4}  test acc {:.2}%", a * 100.0)
                        }
                        (Some(l), None) => format!("  test loss {l:.4}"),
                        _ => String::new(),
                    };
                    for (k, v) in r.metrics.iter().filter(|(k, _)| !k.starts_with("train_")) {
                        let name = k.strip_prefix("test_").unwrap_or(k).replace('_', " ");
                        if k.contains("accuracy") {
                            test += &format!("  {name} {:.2}%", v * 100.0);
                        } else {
                            test += &format!("  {name} {v:.4}");
                        }
                    }
                    let acc = if self.classifies {
                        format!("  acc {:.2}%", r.train_accuracy * 100.0)
                    } else {
                        String::new()
                    };
                    eprintln!(
                        "epoch {:>3}  loss {:.4}{acc}{test}  lr {:.3e}  {:.0} img/s  {}",
                        r.epoch,
                        r.train_loss,
                        r.lr,
                        r.images_per_second,
                        duration(r.seconds)
                    );
                }
                self.history.push(record(r, self.classifies));
                match write_curves(&self.curves, &self.history) {
                    Ok(()) => self.curves_written = true,
                    Err(e) => self.curve_error = Some(e.to_string()),
                }
            }
            Event::Saved(_) => self.saved = true,
            Event::Note(n) => {
                self.clear_line();
                if !self.quiet {
                    eprintln!("{n}");
                }
            }
        }
    }

    fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}
