//! `netc train`'s transfer-learning steps, apart from the training loop's flags: `--reinit`
//! (a partial load with a fresh head), the check that `--freeze` leaves something to train,
//! and the frozen-prefix feature cache's decision and construction.
//!
//! In: the layer graph (freeze flags applied), the train flags, the weights and data. Out: the
//! weights to start from, or the model to train (the suffix) and its data (the cached
//! features); messages on stderr; errors naming the flag and the fix.

use crate::cli_train::TrainArgs;
use crate::data::Normalize;
use crate::io::weights::Weights;

/// Decides on the frozen-prefix feature cache ([`crate::train::cache`]) and builds it: the
/// model to train (the suffix, or `lg` itself) and its data. With `--cache-features` a cache
/// that cannot apply is an error; otherwise it is used where it applies, with a note, and a
/// reason it does not is printed only when there is a frozen prefix to cache. The third value
/// says where the cache is (`memory`, `mapped`), `None` without one.
#[allow(clippy::too_many_arguments)]
pub(crate) fn feature_cache(
    lg: &crate::layer_graph::LayerGraph,
    weights: &Weights,
    data: crate::data::Split,
    augment: &mut Vec<crate::train_config::Augment>,
    normalize: &mut Normalize,
    batch: usize,
    args: &TrainArgs,
) -> Result<
    (
        crate::layer_graph::LayerGraph,
        crate::data::Split,
        Option<&'static str>,
    ),
    String,
> {
    use crate::train::cache;
    let limit = args.cache_limit.unwrap_or(cache::DEFAULT_LIMIT);
    let samples = data.train.len() + data.test.len();
    let tmp = std::env::temp_dir();
    let dir = args.cache_dir.as_deref().unwrap_or(&tmp);
    // Past the memory bound the cache goes to a memory-mapped file in `dir`, if it has room.
    let mut spill = None;
    let plan = cache::plan(lg, augment, samples).and_then(|p| {
        if p.bytes <= limit {
            return Ok(p);
        }
        let size = format!(
            "the cache would take {}B ({} samples of {}), more than --cache-limit {}B in memory",
            crate::show::human(p.bytes).trim(),
            crate::show::thousands(samples as u64),
            crate::io::show_shape(&p.shape),
            crate::show::human(limit).trim()
        );
        let free = crate::data::mapped::free_space(dir)
            .map_err(|e| format!("{size}, and --cache-dir {e}"))?;
        if !crate::data::mapped::fits(p.bytes, free) {
            return Err(format!(
                "{size}, and {} (--cache-dir) has only {}B free",
                dir.display(),
                crate::show::human(free).trim()
            ));
        }
        spill = Some(dir.to_path_buf());
        Ok(p)
    });
    let plan = match plan {
        Ok(p) => p,
        Err(why) if args.cache_features => {
            return Err(format!(
                "--cache-features: {why}\n  help: freeze the layers before the cut and drop \
                 augmentation, raise --cache-limit or point --cache-dir at a disk with room, or \
                 train without --cache-features"
            ));
        }
        Err(why) => {
            if !args.quiet && crate::cut::frozen_prefix_boundary(lg).is_some() {
                eprintln!("note: no feature cache: {why}");
            }
            return Ok((lg.clone(), data, None));
        }
    };
    let t0 = std::time::Instant::now();
    let (suffix, cached) = cache::build(
        lg,
        weights,
        &plan,
        &data,
        normalize,
        batch,
        args.threads,
        args.memory_limit,
        spill.as_deref(),
    )?;
    drop(data);
    augment.clear();
    *normalize = Normalize::none(plan.shape.first().copied().unwrap_or(1));
    if !args.quiet {
        eprintln!(
            "note: feature cache: layers 1-{} (`netc summary`'s #) are frozen; their output \
             (`{}`, {} {}) was computed once per image ({} images, {} values each, {}B{}, \
             {:.1} s) and the rest trains from it (same results; --no-cache-features to turn \
             off)",
            plan.layers,
            plan.path,
            lg.nodes[plan.node].op.name(),
            crate::io::show_shape(&plan.shape),
            crate::show::thousands(samples as u64),
            crate::show::thousands(plan.shape.iter().product::<usize>() as u64),
            crate::show::human(plan.bytes).trim(),
            match &spill {
                Some(d) => format!(
                    ", past --cache-limit: in a memory-mapped file in {}",
                    d.display()
                ),
                None => " in memory".to_string(),
            },
            t0.elapsed().as_secs_f64()
        );
    }
    let kind = if spill.is_some() { "mapped" } else { "memory" };
    Ok((suffix, cached, Some(kind)))
}

/// Freezing every trainable parameter leaves nothing to train (an evaluation is `netc run`'s
/// job, and features are `netc features`'): an error naming the selectors, with the largest
/// `..N` that still trains something.
pub(crate) fn check_not_all_frozen(
    lg: &crate::layer_graph::LayerGraph,
    spec: &[String],
    flags: &[String],
) -> Result<(), String> {
    let trainable = lg.params.iter().any(|p| p.trainable && !p.kind.is_buffer());
    let had = lg
        .params
        .iter()
        .any(|p| !p.kind.is_buffer() && p.fixed.is_none());
    if trainable || !had || (spec.is_empty() && flags.is_empty()) {
        return Ok(());
    }
    let layers = crate::elab::numbered_layers(lg);
    let mut by = Vec::new();
    if !flags.is_empty() {
        by.push(format!("--freeze {}", flags.join(" ")));
    }
    if !spec.is_empty() {
        by.push(format!("the spec's `freeze: [{}]`", spec.join(", ")));
    }
    Err(format!(
        "{} freezes every trainable parameter of `{}`: nothing would be trained\n  help: freeze \
         fewer layers, e.g. `--freeze ..{}` trains only `{}` (layers are numbered in `netc \
         summary`'s # column); to compute a layer's outputs, use `netc features`",
        by.join(" with "),
        lg.name,
        layers.len().saturating_sub(1),
        layers.last().copied().unwrap_or("")
    ))
}

/// `--weights FILE --reinit NAME...`: loads the file except the named modules, which are
/// initialized from `seed`, and lists them (and the file's tensors not used) on stderr.
pub(crate) fn load_reinit(
    path: &std::path::Path,
    lg: &crate::layer_graph::LayerGraph,
    names: &[String],
    seed: u64,
) -> Result<Weights, String> {
    let picked = crate::io::weights::select_reinit(lg, names)?;
    let (w, unused) = Weights::load_reinit(path, lg, &picked, seed).map_err(|e| e.to_string())?;
    let list: Vec<String> = picked
        .iter()
        .map(|&i| {
            let p = &lg.params[i];
            format!("{} {}", p.path, crate::io::show_shape(&p.shape))
        })
        .collect();
    eprintln!(
        "reinitialized {} tensor{} (--reinit {}): {}",
        list.len(),
        if list.len() == 1 { "" } else { "s" },
        names.join(" "),
        list.join(", ")
    );
    if !unused.is_empty() {
        let unused: Vec<String> = unused
            .iter()
            .map(|(n, s)| format!("{n} {}", crate::io::show_shape(s)))
            .collect();
        eprintln!(
            "  not loaded from {}: {}",
            crate::diag::escape_controls(&path.display().to_string()),
            crate::diag::escape_controls(&unused.join(", "))
        );
    }
    Ok(w)
}
