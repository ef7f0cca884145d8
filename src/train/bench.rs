//! `netc bench --train`: how fast the compiled training step runs.
//!
//! In: a spec file (with `--set` overrides), a batch size, a thread count and step counts. Out:
//! a [`TrainBenchReport`]: compile time, step times, images/s, memory (the executable's arena,
//! the parameters and optimizer state, peak RSS) and, with profiling, the time per kernel, per
//! kind of kernel, and outside the kernels (the optimizer update).
//!
//! The step is a whole [`Trainer::step`]: inputs copied into the arena, forward in training
//! mode, cross-entropy, backward, and an SGD update (momentum 0.9, lr 0.01, no weight decay,
//! whatever the spec's `train` section says, so that runs compare with PyTorch's
//! `torch.optim.SGD(momentum=0.9)`). Weights are `Weights::init(graph, seed)`, inputs uniform
//! in [-1, 1) and labels uniform over the classes, both from a fixed seed; the spec's freeze
//! selectors apply.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::data::rng::Rng;
use crate::fuse::kernel::ContractionKind;
use crate::fuse::{HostOp, KernelBody};
use crate::io::weights::Weights;
use crate::runtime::KernelProfile;
use crate::train::Trainer;
use crate::train_config::{Objective, Optimizer};

/// What to measure.
#[derive(Debug, Clone)]
pub struct TrainBenchOptions {
    pub batch: usize,
    pub threads: usize,
    /// Timed steps (at least one).
    pub steps: usize,
    /// Untimed steps first.
    pub warmup: usize,
    /// Time each kernel during the timed steps, and the optimizer update after them.
    pub profile: bool,
    /// Seed of the weights, inputs and labels.
    pub seed: u64,
    /// The memory budget in bytes (`None`: what is available), see [`crate::budget`].
    pub memory_limit: Option<u64>,
}

impl Default for TrainBenchOptions {
    fn default() -> Self {
        TrainBenchOptions {
            batch: 1,
            threads: 1,
            steps: 20,
            warmup: 3,
            profile: false,
            seed: 0,
            memory_limit: None,
        }
    }
}

/// Step-time statistics over the timed steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepTimes {
    pub median: Duration,
    pub mean: Duration,
    pub p90: Duration,
    pub min: Duration,
    pub max: Duration,
}

/// Time spent in one kind of kernel per step (see [`kernel_class`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassTime {
    pub class: &'static str,
    pub kernels: usize,
    /// Mean time per step.
    pub time: Duration,
    /// Floating-point operations per step (contractions count 2·M·N·K).
    pub flops: u64,
}

/// One kernel's share of the step.
#[derive(Debug, Clone)]
pub struct KernelRow {
    pub kernel: KernelProfile,
    pub class: &'static str,
    /// Mean time per step.
    pub per_step: Duration,
}

/// Where the time of a step goes (with `--profile`).
#[derive(Debug, Clone)]
pub struct TrainProfile {
    /// Kernels, slowest first.
    pub kernels: Vec<KernelRow>,
    /// By kind of kernel, slowest first.
    pub classes: Vec<ClassTime>,
    /// Mean time per step inside the executable's kernels.
    pub kernels_time: Duration,
    /// The optimizer update alone (median of replays on the step's parameters and gradients).
    pub optimizer_time: Duration,
    /// Mean step time minus the kernels and the optimizer: input copy, targets, bookkeeping.
    pub other_time: Duration,
    /// The matrix product's GFLOP/s measured in the same run ([`crate::runtime::Executable::gemm_peak`]).
    pub gemm_peak: f64,
}

/// The figures of one `netc bench --train` run.
#[derive(Debug, Clone)]
pub struct TrainBenchReport {
    pub model: String,
    pub batch: usize,
    pub threads: usize,
    pub steps: usize,
    pub warmup: usize,
    /// Parsing and elaborating the spec.
    pub frontend_time: Duration,
    /// Building the trainer: training graph (lower, loss, autodiff), fusion, plan, codegen.
    pub compile_time: Duration,
    /// Of which Cranelift.
    pub codegen_time: Duration,
    pub kernels: usize,
    pub functions: usize,
    pub step: StepTimes,
    /// `batch / median step time`.
    pub images_per_s: f64,
    /// Forward FLOPs of one step (the layer graph's count times the batch); a training step
    /// does about three times as many.
    pub forward_flops: u64,
    pub trained_elements: usize,
    pub arena_bytes: usize,
    pub unshared_bytes: usize,
    /// The variable parameters the executable holds (outside the arena).
    pub param_bytes: usize,
    /// Other constants (folded values, fixed parameters), outside the arena.
    pub const_bytes: usize,
    /// The optimizer's state (momentum buffers).
    pub optimizer_bytes: usize,
    /// Peak resident memory of the process after the timed steps (VmHWM), if known.
    pub peak_rss_bytes: Option<u64>,
    /// What [`crate::budget`] estimated the step needs, checked before compiling.
    pub estimate_bytes: u64,
    /// Loss of the first and last step.
    pub first_loss: f32,
    pub last_loss: f32,
    pub profile: Option<TrainProfile>,
}

/// Peak resident memory of this process, in bytes (Linux), if known.
pub fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The kind of a fused kernel, for grouping a profile.
pub fn kernel_class(body: &KernelBody) -> &'static str {
    if crate::runtime::winograd_runs(body) {
        return match body {
            KernelBody::Host(HostOp::Conv2dBackwardData(..)) => "conv backward data (winograd)",
            KernelBody::Host(HostOp::Conv2dBackwardWeight(_)) => "conv backward weight (winograd)",
            _ => "conv forward (winograd)",
        };
    }
    match body {
        KernelBody::Contraction(c) => match c.kind {
            ContractionKind::Conv2d { .. } => "conv forward (gemm)",
            ContractionKind::MatMul { .. } => "matmul (gemm)",
        },
        KernelBody::Host(h) => match h {
            HostOp::Conv2dBackwardData(..) => "conv backward data (host)",
            HostOp::Conv2dBackwardWeight(_) => "conv backward weight (host)",
            HostOp::PoolBackward { .. } => "pool backward (host)",
            HostOp::MaxPool(_) => "max pool (host)",
            HostOp::AdaptiveAvgPoolBackward => "adaptive pool backward (host)",
            HostOp::AdaptiveAvgPool { .. } => "adaptive pool (host)",
            HostOp::Permute { .. } => "permute (host)",
            HostOp::Concat { .. } | HostOp::Slice { .. } | HostOp::Pad { .. } => {
                "concat/slice/pad (host)"
            }
            HostOp::RandomMask { .. } => "random mask (host)",
        },
        KernelBody::Loop(k) if k.window.is_some() => "pool window (loop)",
        KernelBody::Loop(k) if k.reduction.is_some() => "reduction (loop)",
        KernelBody::Loop(_) => "elementwise (loop)",
    }
}

/// FLOPs of one run of a kernel: the conv backward passes count as much as their forward
/// convolution (2·M·N·K); loop kernels count the points they evaluate (reductions their
/// inputs, windows every tap); others keep the profile's count (`fallback`: 2·M·N·K for
/// contractions, one per output element for host ops).
fn kernel_flops(body: &KernelBody, fallback: u64) -> u64 {
    let conv = |k: &ContractionKind| match *k {
        ContractionKind::Conv2d {
            n,
            c,
            h,
            w,
            o,
            kernel,
            stride,
            padding,
            dilation,
            groups,
        } => {
            let span = |i: usize, len: usize| {
                let eff = dilation[i] * (kernel[i] - 1) + 1;
                (len + padding[i] + padding[i + 2]).saturating_sub(eff) / stride[i] + 1
            };
            let (oh, ow) = (span(0, h), span(1, w));
            2 * (n * o * oh * ow) as u64 * (c / groups.max(1) * kernel[0] * kernel[1]) as u64
        }
        ContractionKind::MatMul { batch, m, k, n, .. } => 2 * (batch * m * k * n) as u64,
    };
    match body {
        KernelBody::Host(HostOp::Conv2dBackwardData(k, _) | HostOp::Conv2dBackwardWeight(k)) => {
            conv(k)
        }
        KernelBody::Host(HostOp::MaxPool(w)) => fallback * (w.kernel[0] * w.kernel[1]) as u64,
        // Points evaluated: a reduction's whole iteration space, a window's every tap.
        KernelBody::Loop(k) => {
            let points = k.shape.iter().product::<usize>() as u64;
            let taps = k.window.as_ref().map_or(1, |w| w.kernel[0] * w.kernel[1]) as u64;
            points * taps
        }
        _ => fallback,
    }
}

fn stats(times: &mut [Duration]) -> StepTimes {
    times.sort();
    let q = |f: f64| times[((times.len() - 1) as f64 * f).round() as usize];
    StepTimes {
        median: q(0.5),
        mean: times.iter().sum::<Duration>() / times.len() as u32,
        p90: q(0.9),
        min: times[0],
        max: times[times.len() - 1],
    }
}

/// The training step that `netc bench --train` times and `netc compile --train` shows: the
/// model's `freeze` selectors applied, weights initialized from `seed`, cross-entropy, SGD
/// (lr 0.01, momentum 0.9), batches of `batch`. Returns the (frozen) graph and the trainer.
pub fn bench_trainer(
    mut lg: crate::layer_graph::LayerGraph,
    batch: usize,
    seed: u64,
    threads: usize,
    memory_limit: Option<u64>,
) -> Result<
    (
        crate::layer_graph::LayerGraph,
        Trainer,
        crate::budget::Estimate,
    ),
    String,
> {
    if let Some(cfg) = &lg.train {
        let sel = cfg.freeze.clone();
        crate::train::freeze(&mut lg, &sel)?;
    }
    let loss = Objective::classification();
    let optimizer = Optimizer::Sgd {
        lr: 0.01,
        momentum: 0.9,
        dampening: 0.0,
        nesterov: false,
        weight_decay: 0.0,
    };
    // Before the weights are made: the step (its executable, the weights and their copy,
    // the optimizer state, the random batch) must fit.
    let est =
        crate::budget::check_training_step(&lg, batch, threads, &loss, &optimizer, memory_limit)?;
    let weights = Weights::init(&lg, seed);
    let tr = Trainer::with_limit(&lg, weights, batch, loss, optimizer, threads, memory_limit)?;
    Ok((lg, tr, est))
}

/// Loads `path` (with `opts`' overrides), compiles its training step and times it.
pub fn bench_train(
    path: &Path,
    opts: &crate::spec::Options,
    o: &TrainBenchOptions,
) -> Result<TrainBenchReport, String> {
    let batch = o.batch.max(1);
    let t0 = Instant::now();
    let spec = crate::spec::load_file(path, opts).map_err(|e| e.to_string())?;
    let frontend_time = t0.elapsed();
    let t1 = Instant::now();
    let (lg, mut tr, estimate) =
        bench_trainer(spec.graph, batch, o.seed, o.threads.max(1), o.memory_limit)?;
    let compile_time = t1.elapsed();

    let classes = tr.classes();
    let per_sample: usize = lg.inputs[0].shape.iter().product();
    let mut rng = Rng::new(o.seed ^ 0x6265_6e63_6874_7261); // "benchtra"
    let x: Vec<f32> = (0..batch * per_sample)
        .map(|_| rng.uniform_in(-1.0, 1.0) as f32)
        .collect();
    let labels: Vec<i64> = (0..batch)
        .map(|_| rng.below(classes as u64) as i64)
        .collect();
    let lr = 0.01;
    let step = |tr: &mut Trainer| -> Result<f32, String> {
        tr.step(&x, &labels, lr)
            .map(|s| s.loss)
            .map_err(|e| format!("training step failed: {e}"))
    };

    let mut first_loss = f32::NAN;
    for i in 0..o.warmup {
        let l = step(&mut tr)?;
        if i == 0 {
            first_loss = l;
        }
    }
    if o.profile {
        tr.executable().enable_profiling();
    }
    let steps = o.steps.max(1);
    let mut times = Vec::with_capacity(steps);
    let mut last_loss = f32::NAN;
    for i in 0..steps {
        let t = Instant::now();
        last_loss = step(&mut tr)?;
        times.push(t.elapsed());
        if i == 0 && o.warmup == 0 {
            first_loss = last_loss;
        }
    }
    // Before anything below allocates.
    let peak_rss_bytes = peak_rss();
    let step_times = stats(&mut times);

    let trained_elements = tr.trained_elements();
    let optimizer_bytes = tr
        .optim
        .m
        .iter()
        .chain(&tr.optim.v)
        .map(|v| v.len() * 4)
        .sum();
    let profile = if o.profile {
        Some(profile(&mut tr, steps, step_times.mean, lr)?)
    } else {
        None
    };
    let exe = tr.executable();
    let st = exe.stats.clone();
    let param_bytes = exe.params().iter().map(|(_, p)| p.len() * 4).sum();
    let forward_flops = lg
        .nodes
        .iter()
        .map(|n| lg.flops(n))
        .fold(0u64, u64::saturating_add)
        .saturating_mul(batch as u64);
    Ok(TrainBenchReport {
        model: lg.name.clone(),
        batch,
        threads: o.threads.max(1),
        steps,
        warmup: o.warmup,
        frontend_time,
        compile_time,
        codegen_time: st.codegen_time,
        kernels: st.kernels,
        functions: st.functions,
        step: step_times,
        images_per_s: batch as f64 / step_times.median.as_secs_f64(),
        forward_flops,
        trained_elements,
        arena_bytes: st.arena_bytes,
        unshared_bytes: st.unshared_bytes,
        param_bytes,
        const_bytes: st.const_bytes,
        optimizer_bytes,
        peak_rss_bytes,
        estimate_bytes: estimate.total(),
        first_loss,
        last_loss,
        profile,
    })
}

/// The kernel profile of the timed steps, grouped, and the optimizer update timed on its own
/// (replayed on the executable's parameters and the last step's gradients with a copy of the
/// optimizer's state, so the trainer's own state is untouched; its parameters do move).
fn profile(
    tr: &mut Trainer,
    steps: usize,
    mean_step: Duration,
    lr: f64,
) -> Result<TrainProfile, String> {
    let grads = tr.graph().grads.clone();
    let mut optim = tr.optim.clone();
    let exe = tr.executable();
    let fused = exe.fused();
    let mut kernels: Vec<KernelRow> = exe
        .profile()
        .into_iter()
        .map(|mut k| {
            let fk = &fused.kernels[k.index];
            k.flops = kernel_flops(&fk.body, k.flops);
            KernelRow {
                class: kernel_class(&fk.body),
                per_step: k.time / steps as u32,
                kernel: k,
            }
        })
        .collect();
    kernels.sort_by_key(|r| std::cmp::Reverse(r.per_step));
    let mut classes: Vec<ClassTime> = Vec::new();
    for r in &kernels {
        match classes.iter_mut().find(|c| c.class == r.class) {
            Some(c) => {
                c.kernels += 1;
                c.time += r.per_step;
                c.flops += r.kernel.flops;
            }
            None => classes.push(ClassTime {
                class: r.class,
                kernels: 1,
                time: r.per_step,
                flops: r.kernel.flops,
            }),
        }
    }
    classes.sort_by_key(|c| std::cmp::Reverse(c.time));
    let kernels_time: Duration = kernels.iter().map(|r| r.per_step).sum();
    let gemm_peak = exe.gemm_peak(Duration::from_millis(200));

    let (mut params, outs) = exe.params_and_outputs()?;
    let mut by_index: Vec<Option<&mut [f32]>> = Vec::new();
    for (i, p) in params.iter_mut() {
        if by_index.len() <= *i {
            by_index.resize_with(*i + 1, || None);
        }
        by_index[*i] = Some(&mut **p);
    }
    let mut ps: Vec<&mut [f32]> = Vec::with_capacity(grads.len());
    let mut gs: Vec<&[f32]> = Vec::with_capacity(grads.len());
    for (i, name) in &grads {
        let p = by_index
            .get_mut(*i)
            .and_then(Option::take)
            .ok_or_else(|| format!("parameter #{i} is not variable"))?;
        ps.push(p);
        gs.push(outs.get(name.as_str()).ok_or("missing gradient output")?);
    }
    let mut ut = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        // (Timing only: a non-finite result is the step's business, not the benchmark's.)
        let _ = optim.update(&mut ps, &gs, lr);
        ut.push(t.elapsed());
    }
    let optimizer_time = stats(&mut ut).median;
    Ok(TrainProfile {
        kernels,
        classes,
        kernels_time,
        optimizer_time,
        other_time: mean_step.saturating_sub(kernels_time + optimizer_time),
        gemm_peak,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(b: usize) -> f64 {
    b as f64 / 1048576.0
}

impl TrainBenchReport {
    /// The report as one JSON object (the shape of `netc bench --json`, with `step_ms` for
    /// `latency_ms`).
    pub fn to_json(&self) -> serde_json::Value {
        let s = &self.step;
        let mut v = json!({
            "mode": "train", "model": self.model, "batch": self.batch, "threads": self.threads,
            "steps": self.steps, "warmup": self.warmup,
            "optimizer": "sgd(lr=0.01, momentum=0.9)", "loss": "cross_entropy",
            "frontend_ms": ms(self.frontend_time), "compile_ms": ms(self.compile_time),
            "codegen_ms": ms(self.codegen_time),
            "kernels": self.kernels, "functions": self.functions,
            "step_ms": { "median": ms(s.median), "mean": ms(s.mean), "p90": ms(s.p90),
                          "min": ms(s.min), "max": ms(s.max) },
            "images_per_s": self.images_per_s,
            "images_per_s_mean": self.batch as f64 / s.mean.as_secs_f64(),
            "forward_gflop_per_step": self.forward_flops as f64 / 1e9,
            "trained_elements": self.trained_elements,
            "arena_bytes": self.arena_bytes, "unshared_bytes": self.unshared_bytes,
            "param_bytes": self.param_bytes, "const_bytes": self.const_bytes, "optimizer_bytes": self.optimizer_bytes,
            "peak_rss_bytes": self.peak_rss_bytes, "estimate_bytes": self.estimate_bytes,
            "first_loss": self.first_loss, "last_loss": self.last_loss,
        });
        if let Some(p) = &self.profile {
            v["profile"] = json!({
                "kernels_ms": ms(p.kernels_time), "optimizer_ms": ms(p.optimizer_time),
                "other_ms": ms(p.other_time),
                "gemm_peak_gflops_per_s": p.gemm_peak,
                "classes": p.classes.iter().map(|c| json!({
                    "class": c.class, "kernels": c.kernels, "ms": ms(c.time),
                    "gflops_per_s": c.flops as f64 / c.time.as_secs_f64().max(1e-12) / 1e9,
                })).collect::<Vec<_>>(),
                "kernels": p.kernels.iter().map(|r| json!({
                    "kernel": r.kernel.index, "class": r.class, "ops": r.kernel.ops,
                    "origin": r.kernel.origin, "shape": r.kernel.shape, "ms": ms(r.per_step),
                    "gflops_per_s": r.kernel.flops as f64 / r.per_step.as_secs_f64().max(1e-12) / 1e9,
                    "peak_fraction": r.kernel.flops as f64 / r.per_step.as_secs_f64().max(1e-12) / 1e9 / p.gemm_peak,
                    "bytes": r.kernel.bytes,
                    "gb_per_s": r.kernel.bytes as f64 / r.per_step.as_secs_f64().max(1e-12) / 1e9,
                })).collect::<Vec<_>>(),
            });
        }
        v
    }

    /// The report as text, like `netc bench`'s.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        let s = &self.step;
        let _ = writeln!(
            o,
            "model {} training step, batch {}, {} threads (cross-entropy, SGD lr 0.01 momentum 0.9)",
            self.model, self.batch, self.threads
        );
        let _ = writeln!(
            o,
            "compile: {:.1} ms (front end {:.1} ms, training graph + fusion + codegen {:.1} ms; {} kernels, {} functions, Cranelift {:.1} ms)",
            ms(self.frontend_time + self.compile_time),
            ms(self.frontend_time),
            ms(self.compile_time),
            self.kernels,
            self.functions,
            ms(self.codegen_time)
        );
        let _ = writeln!(
            o,
            "step: median {:.3} ms, mean {:.3} ms, p90 {:.3} ms (min {:.3}, max {:.3}; {} steps after {} warm-up)",
            ms(s.median),
            ms(s.mean),
            ms(s.p90),
            ms(s.min),
            ms(s.max),
            self.steps,
            self.warmup
        );
        let _ = writeln!(
            o,
            "throughput: {:.1} images/s (forward {:.2} GFLOP per step, about 3× that per training step)",
            self.images_per_s,
            self.forward_flops as f64 / 1e9
        );
        let _ = writeln!(o, "loss: {} -> {}", self.first_loss, self.last_loss);
        if let Some(p) = &self.profile {
            let _ = writeln!(
                o,
                "per step: kernels {:.3} ms, optimizer update {:.3} ms, other {:.3} ms",
                ms(p.kernels_time),
                ms(p.optimizer_time),
                ms(p.other_time)
            );
            let total = ms(p.kernels_time + p.optimizer_time + p.other_time).max(1e-12);
            let _ = writeln!(
                o,
                "{:<30} {:>7} {:>10} {:>6} {:>8}",
                "kind", "kernels", "ms/step", "share", "GFLOP/s"
            );
            for c in &p.classes {
                let _ = writeln!(
                    o,
                    "{:<30} {:>7} {:>10.3} {:>5.1}% {:>8.1}",
                    c.class,
                    c.kernels,
                    ms(c.time),
                    100.0 * ms(c.time) / total,
                    c.flops as f64 / c.time.as_secs_f64().max(1e-12) / 1e9
                );
            }
            for (what, d) in [
                ("optimizer update (outside)", p.optimizer_time),
                ("other (outside)", p.other_time),
            ] {
                let _ = writeln!(
                    o,
                    "{:<30} {:>7} {:>10.3} {:>5.1}%",
                    what,
                    "",
                    ms(d),
                    100.0 * ms(d) / total
                );
            }
            let _ = writeln!(
                o,
                "GEMM peak now ({} threads, 288×512 · 512×1024 per thread): {:.1} GFLOP/s",
                self.threads, p.gemm_peak
            );
            let _ = writeln!(
                o,
                "{:>6}  {:>6}  {:>8}  {:>8}  {:>5}  {:>6}  {:<28} {:<36} {:<22} origin",
                "kernel", "share", "ms/step", "GFLOP/s", "%peak", "GB/s", "kind", "ops", "shape"
            );
            for r in p.kernels.iter().take(40) {
                let secs = r.per_step.as_secs_f64().max(1e-12);
                let gflops = r.kernel.flops as f64 / secs / 1e9;
                let _ = writeln!(
                    o,
                    "{:>6}  {:>5.1}%  {:>8.3}  {:>8.1}  {:>4.0}%  {:>6.1}  {:<28} {:<36} {:<22} {}",
                    format!("k{}", r.kernel.index),
                    100.0 * ms(r.per_step) / total,
                    ms(r.per_step),
                    gflops,
                    100.0 * gflops / p.gemm_peak,
                    r.kernel.bytes as f64 / secs / 1e9,
                    r.class,
                    r.kernel.ops,
                    format!("{:?}", r.kernel.shape),
                    r.kernel.origin
                );
            }
        }
        let _ = writeln!(
            o,
            "memory: arena {:.1} MiB (without reuse {:.1} MiB), parameters {:.1} MiB, constants {:.1} MiB, optimizer state {:.1} MiB, estimate {:.1} MiB, peak RSS {}",
            mib(self.arena_bytes),
            mib(self.unshared_bytes),
            mib(self.param_bytes),
            mib(self.const_bytes),
            mib(self.optimizer_bytes),
            self.estimate_bytes as f64 / 1048576.0,
            self.peak_rss_bytes.map_or("unknown".into(), |b| format!(
                "{:.1} MiB",
                b as f64 / 1048576.0
            ))
        );
        o
    }
}

/// `netc bench SPEC --train ...`: runs [`bench_train`] and prints its report (JSON or text).
pub fn cli(
    path: &Path,
    opts: &crate::spec::Options,
    o: &TrainBenchOptions,
    json: bool,
    profile_json: Option<&Path>,
) -> u8 {
    match bench_train(path, opts, o) {
        Ok(r) => {
            if json {
                println!("{}", r.to_json());
            } else {
                print!("{}", r.to_text());
            }
            if let Some(f) = profile_json
                && let Err(e) = crate::io::write_atomic(f, |w| {
                    use std::io::Write as _;
                    writeln!(w, "{}", r.to_json())
                })
            {
                eprintln!("error: {}", crate::diag::escape_controls(&e.to_string()));
                return 1;
            }
            0
        }
        Err(e) if e.starts_with("error") => {
            eprintln!("{}", crate::diag::escape_controls(e.trim_end()));
            1
        }
        Err(e) => {
            eprintln!("error: {}", crate::diag::escape_controls(e.trim_end()));
            1
        }
    }
}
