//! The memory budget: what running or training a model will need, from shapes alone, checked
//! before anything big is allocated.
//!
//! In: a layer graph (its parameters), a batch size and a thread count; for the pieces an
//! [`crate::runtime::Executable`] allocates, its fused graph and memory [`Plan`]. Out: an
//! [`Estimate`], a list of named [`Item`]s in bytes (a parameter by its path, `arena`, a
//! constant or a kernel's scratch by the layer it came from), and [`Estimate::check`] against
//! a budget: the memory available to the process ([`available`]: `MemAvailable`, or the
//! cgroup's limit when lower) unless the caller gives one (`--memory-limit`,
//! `CompileOptions::memory_limit`). A refusal is an error naming the total, the budget and the
//! five largest items, with the fix.
//!
//! What is counted is what the code allocates, copies included: the caller's weights, the
//! executable's own copies of parameters and folded constants (and the values folding goes
//! through), the arena, the Winograd-transformed constant weights, the pool threads' scratch
//! (im2col bands, slabs, tiles) and the weight-gradient partial sums; for training also the
//! optimizer state, the one-hot targets, the loader's batches in flight and the evaluation
//! model. Sizes are `u64` with saturating arithmetic: an overflowing size counts as more than
//! any budget, never as a wrapped small number. [`try_filled`] is the fallible allocation the
//! run path uses, so that an estimate that is ever wrong gives an error, not an abort.

use crate::fuse::kernel::{Contraction, ContractionKind};
use crate::fuse::{BufKind, FusedGraph, HostOp, KernelBody};
use crate::graph::ValueId;
use crate::layer_graph::LayerGraph;
use crate::plan::Plan;
use crate::train_config::{Objective, Optimizer};

/// One thing that takes memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub name: String,
    pub bytes: u64,
}

/// What a model needs, item by item.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Estimate {
    pub items: Vec<Item>,
}

/// Sizes at least this large are refused whatever the budget (no machine has 4 EiB; the
/// checks below then never see a size that overflowed).
const ABSURD: u64 = 1 << 62;

/// The number of elements of `shape` (saturating).
pub fn elements(shape: &[usize]) -> u64 {
    shape.iter().fold(1u64, |a, &d| a.saturating_mul(d as u64))
}

/// The bytes of `shape` as f32 (saturating).
pub fn f32_bytes(shape: &[usize]) -> u64 {
    elements(shape).saturating_mul(4)
}

fn shape_text(shape: &[usize]) -> String {
    format!(
        "[{}]",
        shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

impl Estimate {
    /// Adds `bytes` under `name` (nothing for zero).
    pub fn add(&mut self, name: impl Into<String>, bytes: u64) {
        if bytes > 0 {
            self.items.push(Item {
                name: name.into(),
                bytes,
            });
        }
    }

    /// Adds every item of `other`, each name prefixed with `prefix`.
    pub fn extend(&mut self, prefix: &str, other: Estimate) {
        for it in other.items {
            self.add(format!("{prefix}{}", it.name), it.bytes);
        }
    }

    /// The sum of all items (saturating).
    pub fn total(&self) -> u64 {
        self.items
            .iter()
            .fold(0u64, |a, it| a.saturating_add(it.bytes))
    }

    /// The `n` largest items, largest first.
    pub fn largest(&self, n: usize) -> Vec<&Item> {
        let mut v: Vec<&Item> = self.items.iter().collect();
        v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
        v.truncate(n);
        v
    }

    /// Compares the total with `limit` (bytes), or with the memory available to the process
    /// when `None`. The error names the total, the budget and the five largest items.
    pub fn check(&self, limit: Option<u64>) -> Result<(), String> {
        let total = self.total();
        let (budget, what) = match limit {
            Some(b) => (b, "the memory limit".to_string()),
            None => match available() {
                Some((b, source)) => (b, format!("the memory available ({source})")),
                // Nothing to compare with (not Linux): only the absurd is refused.
                None => (ABSURD - 1, "any machine's memory".to_string()),
            },
        };
        if total <= budget && total < ABSURD {
            return Ok(());
        }
        let mut msg = format!(
            "this model needs {} of memory, more than {what}, {}\n  largest:",
            bytes_text(total),
            bytes_text(budget)
        );
        for it in self.largest(5) {
            msg.push_str(&format!("\n    {:>10}  {}", bytes_text(it.bytes), it.name));
        }
        msg.push_str(
            "\n  help: use a smaller batch (`--batch`) or smaller model sizes (`--set`); if more \
             memory is free than estimated, allow it with `--memory-limit SIZE` (e.g. 16G)",
        );
        Err(msg)
    }
}

/// `1.5 GiB`, `312.0 KiB`, `12 bytes`; saturated sizes read "more than 4 EiB".
pub fn bytes_text(b: u64) -> String {
    if b >= ABSURD {
        return "more than 4 EiB".into();
    }
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if b < 1024 {
        return format!("{b} bytes");
    }
    let mut v = b as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// Parses a memory size: a positive number with an optional unit `K`, `M`, `G`, `T` (powers
/// of 1024; `KiB`, `KB`, `k`... are the same), e.g. `8G`, `1.5GiB`, `512M`, `1000000`
/// (bytes). Zero, negative numbers, unknown units and overflow are errors.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let expected = "expected a size such as 8G, 512M, 1.5GiB or a number of bytes";
    if num.is_empty() {
        return Err(format!("`{s}` is not a memory size: {expected}"));
    }
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("`{s}` has an unknown unit `{unit}`: {expected}")),
    };
    let bytes = if let Ok(n) = num.parse::<u64>() {
        n.checked_mul(1u64 << shift)
            .ok_or_else(|| format!("`{s}` is too large"))?
    } else {
        let v: f64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a memory size: {expected}"))?;
        let b = (v * (1u64 << shift) as f64).floor();
        if !b.is_finite() || b >= u64::MAX as f64 {
            return Err(format!("`{s}` is too large"));
        }
        b as u64
    };
    if bytes == 0 {
        return Err(format!(
            "`{s}` is no memory: the limit must be more than 0 bytes"
        ));
    }
    Ok(bytes)
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// A cgroup memory limit file's value (`memory.max` or `memory.limit_in_bytes`): `None` for
/// `max` or the "unlimited" values near 2^63.
pub fn parse_cgroup_limit(text: &str) -> Option<u64> {
    let v: u64 = text.trim().parse().ok()?;
    (v < ABSURD).then_some(v)
}

/// The cgroup memory limit of this process, if any (v2 `memory.max`, v1
/// `memory.limit_in_bytes`; at the process's own cgroup, else at the mount's root, which is
/// the process's own cgroup inside a container).
fn cgroup_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut files: Vec<String> = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrl, path) = (parts.next(), parts.next(), parts.next());
        let (Some(ctrl), Some(path)) = (ctrl, path) else {
            continue;
        };
        if ctrl.is_empty() {
            files.push(format!("/sys/fs/cgroup{path}/memory.max"));
        } else if ctrl.split(',').any(|c| c == "memory") {
            files.push(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"));
        }
    }
    files.push("/sys/fs/cgroup/memory.max".into());
    files.push("/sys/fs/cgroup/memory/memory.limit_in_bytes".into());
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .filter_map(|t| parse_cgroup_limit(&t))
        .min()
}

/// The soft address-space limit (`ulimit -v`) of a `/proc/self/limits` text, in bytes.
pub fn parse_as_limit(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max address space"))?;
    let v: u64 = line
        .trim_start_matches("Max address space")
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    (v < ABSURD).then_some(v)
}

/// What the address-space limit (`ulimit -v`) leaves: the limit less the virtual memory this
/// process already has.
fn address_space_left() -> Option<u64> {
    let limit = parse_as_limit(&std::fs::read_to_string("/proc/self/limits").ok()?)?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmSize:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(limit.saturating_sub(kb.saturating_mul(1024)))
}

/// The memory this process may still use, and where the figure comes from: `MemAvailable`
/// from `/proc/meminfo`, or the cgroup's limit, or what the address-space limit (`ulimit -v`)
/// leaves, whichever is lowest. `None` when none is known (not Linux).
pub fn available() -> Option<(u64, &'static str)> {
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_meminfo(&t));
    [
        (mem, "MemAvailable"),
        (cgroup_limit(), "the cgroup's memory limit"),
        (address_space_left(), "what `ulimit -v` leaves"),
    ]
    .into_iter()
    .filter_map(|(v, what)| v.map(|v| (v, what)))
    .min_by_key(|&(v, _)| v)
}

/// A vector of `len` copies of `value`, or an error naming `what` when the memory cannot be
/// had (instead of aborting the process).
pub fn try_filled<T: Clone>(len: usize, value: T, what: &str) -> Result<Vec<T>, String> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| {
        format!(
            "cannot allocate {} for {what}",
            bytes_text((len as u64).saturating_mul(std::mem::size_of::<T>() as u64))
        )
    })?;
    v.resize(len, value);
    Ok(v)
}

/// Whether `len` values of `T` can be allocated now (a trial allocation, released at once), for
/// code that allocates infallibly: the error names `what`.
pub fn try_reserve<T>(len: usize, what: &str) -> Result<(), String> {
    let mut v: Vec<T> = Vec::new();
    v.try_reserve_exact(len).map_err(|_| {
        format!(
            "cannot allocate {} for {what}",
            bytes_text((len as u64).saturating_mul(std::mem::size_of::<T>() as u64))
        )
    })
}

/// A copy of `src` made with [`try_filled`]'s fallible allocation.
pub fn try_copy<T: Copy>(
    src: impl ExactSizeIterator<Item = T>,
    what: &str,
) -> Result<Vec<T>, String> {
    let mut v = Vec::new();
    v.try_reserve_exact(src.len()).map_err(|_| {
        format!(
            "cannot allocate {} for {what}",
            bytes_text((src.len() as u64).saturating_mul(std::mem::size_of::<T>() as u64))
        )
    })?;
    v.extend(src);
    Ok(v)
}

/// One item per parameter of `lg` (`what` says which copy), by its path.
pub fn parameters(lg: &LayerGraph, what: &str) -> Estimate {
    let mut e = Estimate::default();
    for p in &lg.params {
        let width = match p.dtype {
            crate::layer_graph::DType::F32 => 4,
            crate::layer_graph::DType::I64 => 8,
        };
        let size = elements(&p.shape).saturating_mul(width);
        e.add(
            format!("{} {} ({what})", p.path, shape_text(&p.shape)),
            size,
        );
    }
    e
}

/// A lower bound from the layer graph alone, so that absurd sizes are refused before lowering
/// computes sizes that could overflow: one copy of the parameters, the input and the largest
/// activation at this batch size.
fn layer_bound(lg: &LayerGraph, batch: usize) -> Estimate {
    let mut e = parameters(lg, "the weights");
    let per_batch = |shape: &[usize]| {
        let mut s = vec![batch];
        s.extend_from_slice(shape);
        s
    };
    for i in &lg.inputs {
        let s = per_batch(&i.shape);
        e.add(
            format!("input `{}` {}", i.name, shape_text(&s)),
            f32_bytes(&s),
        );
    }
    if let Some(n) = lg.nodes.iter().max_by_key(|n| elements(&n.shape)) {
        let s = per_batch(&n.shape);
        e.add(
            format!("output of layer `{}` {}", n.path, shape_text(&s)),
            f32_bytes(&s),
        );
    }
    e
}

/// Refuses `lg` at `batch` when its tensors together reach 64 PiB, so that no size computed
/// while lowering, fusing or planning it (even for the training graph, a few times more
/// tensors) can overflow. For commands that only show the graph and allocate nothing big.
pub fn check_sizes(lg: &LayerGraph, batch: usize) -> Result<(), String> {
    const MAX: u64 = 1 << 56;
    let mut total = parameters(lg, "").total();
    let mut largest: Option<(u64, &str, Vec<usize>)> = None;
    for n in &lg.nodes {
        let mut s = vec![batch];
        s.extend_from_slice(&n.shape);
        let b = f32_bytes(&s);
        total = total.saturating_add(b);
        if largest.as_ref().is_none_or(|l| b > l.0) {
            largest = Some((b, &n.path, s));
        }
    }
    if total < MAX {
        return Ok(());
    }
    let (b, path, s) = largest.unwrap_or_default();
    Err(format!(
        "at batch {batch} this model's tensors come to {} (the largest, \
         `{path}` {}, {}): more than any size netc computes with\n  help: use a smaller \
         batch (`--batch`)",
        bytes_text(total),
        shape_text(&s),
        bytes_text(b)
    ))
}

/// Refuses `lg` at `batch` when the layer graph alone (one copy of the parameters, the input
/// and the largest activation) exceeds `limit`: a check cheap enough to run before lowering,
/// so that lowering never computes sizes that overflow.
pub fn check_layers(lg: &LayerGraph, batch: usize, limit: Option<u64>) -> Result<(), String> {
    layer_bound(lg, batch).check(limit)
}

/// What [`crate::runtime::Executable::new`] allocates for `fused` with `plan` on `threads`
/// threads (the caller's parameter values not included): the arena, its own copies of the
/// parameters and folded constants, the values folding goes through, Winograd-transformed
/// constant weights, and scratch. `lg` (when known) names the parameters by path.
pub fn executable(
    fused: &FusedGraph,
    plan: &Plan,
    threads: usize,
    lg: Option<&LayerGraph>,
) -> Estimate {
    let mut e = Estimate::default();
    let threads = threads.max(1) as u64;
    // The arena, named by its largest buffer.
    let largest = (0..fused.buffers.len())
        .filter(|&b| plan.offsets[b].is_some())
        .max_by_key(|&b| elements(&fused.buffers[b].shape));
    let origin = |b: usize| {
        fused
            .kernels
            .iter()
            .find(|k| k.output == b || k.more_outputs.contains(&b))
            .map(|k| k.origin.clone())
            .or_else(|| {
                fused
                    .inputs
                    .iter()
                    .find(|(_, i)| *i == b)
                    .map(|(n, _)| format!("input `{n}`"))
            })
            .unwrap_or_default()
    };
    e.add(
        match largest {
            Some(b) => format!(
                "arena (activations; largest: {} {})",
                origin(b),
                shape_text(&fused.buffers[b].shape)
            ),
            None => "arena (activations)".into(),
        },
        (plan.arena_len as u64).saturating_mul(4),
    );
    // Constants and variable parameters, copied into the executable.
    let mut wanted: Vec<ValueId> = Vec::new();
    for b in &fused.buffers {
        match &b.kind {
            BufKind::Const(v) => {
                wanted.push(*v);
                let node = &fused.prims.nodes[*v];
                e.add(
                    format!("constant {} {}", node.origin, shape_text(&b.shape)),
                    f32_bytes(&b.shape),
                );
            }
            BufKind::Param(i) => {
                let name = lg
                    .and_then(|g| g.params.get(*i))
                    .map_or(format!("parameter #{i}"), |p| p.path.clone());
                e.add(
                    format!("{name} {} (the executable's copy)", shape_text(&b.shape)),
                    f32_bytes(&b.shape),
                );
            }
            _ => {}
        }
    }
    // Folding evaluates every value the constants depend on (parameters copied in), all held
    // until the constants are made.
    let mut need = vec![false; fused.prims.nodes.len()];
    let mut stack = wanted;
    let mut folding = 0u64;
    while let Some(v) = stack.pop() {
        if !need[v] {
            need[v] = true;
            folding = folding.saturating_add(f32_bytes(&fused.prims.nodes[v].shape));
            stack.extend(&fused.prims.nodes[v].inputs);
        }
    }
    e.add("constant folding's values (while compiling)", folding);
    // Scratch: per kernel, what each pool thread's buffers grow to (they keep the largest
    // size), and what the calling thread allocates for the kernel.
    let mut per_thread = (0u64, String::new());
    let mut calling = (0u64, String::new());
    for k in &fused.kernels {
        let (t, c, wino) = kernel_scratch(&k.body, threads);
        if t > per_thread.0 {
            per_thread = (t, k.origin.clone());
        }
        if c > calling.0 {
            calling = (c, k.origin.clone());
        }
        let constant_weight = k.inputs.get(1).is_some_and(|&w| {
            matches!(
                fused.buffers[crate::plan::root_of(fused, w)].kind,
                BufKind::Const(_)
            )
        });
        if constant_weight && matches!(k.body, KernelBody::Contraction(_)) {
            e.add(
                format!("Winograd-transformed weight of {}", k.origin),
                wino.saturating_mul(4),
            );
        }
    }
    e.add(
        format!(
            "scratch of {threads} threads (im2col bands, slabs, tiles; largest for {})",
            per_thread.1
        ),
        per_thread.0.saturating_mul(threads).saturating_mul(4),
    );
    e.add(
        format!(
            "scratch of one pass (partial sums, transformed weights; largest for {})",
            calling.1
        ),
        calling.0.saturating_mul(4),
    );
    e
}

/// A kernel's scratch in floats: (each pool thread's, the calling thread's, its constant
/// weight's Winograd transform).
fn kernel_scratch(body: &KernelBody, threads: u64) -> (u64, u64, u64) {
    let conv = |kind: &ContractionKind| -> (u64, u64, u64) {
        let ContractionKind::Conv2d {
            n,
            c,
            h,
            w,
            o,
            kernel,
            padding,
            groups,
            ..
        } = *kind
        else {
            return (0, 0, 0);
        };
        let (oh, ow) = crate::runtime::contraction_out_size(kind);
        let groups = groups.max(1) as u64;
        let (cg, og) = (c as u64 / groups, o as u64 / groups);
        let kdim = cg * kernel[0] as u64 * kernel[1] as u64;
        let npix = oh as u64 * ow as u64;
        // Bands of about 384 output pixels; small maps pack the images of a task side by side.
        let cols = if npix >= 384 {
            384u64.max(ow as u64)
        } else {
            let per_task = crate::runtime::conv_images_per_task(kind, n, threads as usize);
            npix.saturating_mul(per_task as u64)
        };
        let slab = cg
            .saturating_mul((h + padding[0] + padding[1]) as u64 + 8)
            .saturating_mul((w + padding[2] + padding[3]) as u64 + 8);
        let per = kdim
            .saturating_mul(cols)
            .saturating_add(og.saturating_mul(cols))
            .saturating_add(slab);
        let wino = crate::runtime::winograd_weight_len(kind).unwrap_or(0) as u64;
        (per, 0, wino)
    };
    match body {
        KernelBody::Contraction(Contraction { kind, .. }) => match kind {
            ContractionKind::Conv2d { .. } => conv(kind),
            ContractionKind::MatMul { .. } => (0, 0, 0),
        },
        KernelBody::Host(HostOp::Conv2dBackwardData(kind, _)) => {
            let (t, _, wino) = conv(kind);
            // The transposed weight is transformed on each pass.
            (t, wino + 16, 0)
        }
        KernelBody::Host(HostOp::Conv2dBackwardWeight(kind)) => {
            let (t, _, wino) = conv(kind);
            let ContractionKind::Conv2d {
                c,
                o,
                kernel,
                groups,
                ..
            } = *kind
            else {
                return (t, 0, 0);
            };
            let weight = (o as u64)
                .saturating_mul(c as u64 / groups.max(1) as u64)
                .saturating_mul(kernel[0] as u64 * kernel[1] as u64);
            // The partial sums of the gradient (of its Winograd transform), in chunks chosen
            // from the shapes (`runtime::split`), or one per thread if that is more.
            let len = weight.max(wino);
            let chunks = crate::runtime::split::most_partial_floats(len as usize) as u64;
            (t, chunks.max(threads.saturating_mul(len)), 0)
        }
        _ => (0, 0, 0),
    }
}

/// Inference at `batch` on `threads` threads, from the layer graph to the outputs: the caller's
/// weights and their f32 copy (`model::params_f32`), the executable, the inputs and the
/// outputs. Refused against `limit` (see
/// [`Estimate::check`]) before lowering when the layer graph alone is too large.
pub fn check_inference(
    lg: &LayerGraph,
    batch: usize,
    threads: usize,
    limit: Option<u64>,
) -> Result<Estimate, String> {
    layer_bound(lg, batch).check(limit)?;
    let prims = crate::lower::lower(lg, batch);
    let fused = crate::fuse::fuse(&prims);
    let plan = crate::plan::plan(&fused);
    let mut e = parameters(lg, "the weights");
    e.extend("", parameters(lg, "their f32 copy for compiling"));
    e.extend("", executable(&fused, &plan, threads, Some(lg)));
    for (name, b) in fused.inputs.iter().chain(&fused.outputs) {
        let s = &fused.buffers[*b].shape;
        e.add(
            format!("`{name}` {} (the caller's copy)", shape_text(s)),
            f32_bytes(s),
        );
    }
    e.check(limit)?;
    Ok(e)
}

/// One training step at `batch` on `threads` threads (`lg` with its freeze flags): the
/// caller's weights and their copy made for compiling, the step's executable, the optimizer
/// state, a batch of inputs with its labels and one-hot targets. Not checked.
fn training_step(
    lg: &LayerGraph,
    batch: usize,
    threads: usize,
    objective: &Objective,
    optimizer: &Optimizer,
) -> Result<Estimate, String> {
    let tg = crate::train::build(lg, batch, objective)?;
    let fused = crate::fuse::fuse_with(&tg.prims, &tg.variable);
    let plan = crate::plan::plan(&fused);
    let mut e = parameters(lg, "the weights");
    e.extend("", parameters(lg, "their copy for compiling"));
    e.extend("", executable(&fused, &plan, threads, Some(lg)));
    e.extend("", optimizer_state(lg, &tg.grads, optimizer));
    for name in &tg.target_inputs {
        if let Some(&(_, v)) = tg.prims.inputs.iter().find(|(n, _)| n == name) {
            let shape = tg.prims.shape(v);
            e.add(
                format!("targets `{name}` {}", shape_text(shape)),
                f32_bytes(shape),
            );
        }
    }
    if let Some(i) = lg.inputs.first() {
        let mut s = vec![batch];
        s.extend_from_slice(&i.shape);
        e.add(
            format!("a batch of inputs {} and labels", shape_text(&s)),
            f32_bytes(&s).saturating_add(8u64.saturating_mul(batch as u64)),
        );
    }
    Ok(e)
}

/// A training step as [`Trainer::new`](crate::train::Trainer::new) compiles it and `netc
/// bench --train` runs it (see `training_step`), checked against `limit`; refused before
/// lowering when the layer graph alone is too large.
pub fn check_training_step(
    lg: &LayerGraph,
    batch: usize,
    threads: usize,
    objective: &Objective,
    optimizer: &Optimizer,
    limit: Option<u64>,
) -> Result<Estimate, String> {
    layer_bound(lg, batch).check(limit)?;
    let e = training_step(lg, batch, threads, objective, optimizer)?;
    e.check(limit)?;
    Ok(e)
}

/// Training as `netc train` runs it: a step (see `training_step`), the loader's further
/// batches in flight, and evaluation at `eval_batch` (its model, and the two more copies of
/// the weights it makes), checked against `limit`; refused before lowering when the layer
/// graph alone is too large.
pub fn check_training(
    lg: &LayerGraph,
    (batch, eval_batch): (usize, usize),
    threads: usize,
    objective: &Objective,
    optimizer: &Optimizer,
    limit: Option<u64>,
) -> Result<Estimate, String> {
    layer_bound(lg, batch).check(limit)?;
    let mut e = training_step(lg, batch, threads, objective, optimizer)?;
    if let Some(i) = lg.inputs.first() {
        let mut s = vec![batch];
        s.extend_from_slice(&i.shape);
        let more = crate::data::loader::PREFETCH as u64 + 1;
        e.add(
            format!(
                "the loader's batches {} ({more} more in flight)",
                shape_text(&s)
            ),
            f32_bytes(&s)
                .saturating_add(8u64.saturating_mul(batch as u64))
                .saturating_mul(more),
        );
    }
    // Evaluation: the inference graph with the loss, at the evaluation batch.
    let mut g = crate::lower::lower(lg, eval_batch.max(1));
    crate::train::graph::attach_loss(&mut g, objective, lg.outputs.len())?;
    let fused = crate::fuse::fuse(&g);
    let plan = crate::plan::plan(&fused);
    let mut two = parameters(lg, "two copies while evaluating");
    for it in &mut two.items {
        it.bytes = it.bytes.saturating_mul(2);
    }
    e.extend("", two);
    e.extend("evaluation: ", executable(&fused, &plan, threads, Some(lg)));
    e.check(limit)?;
    Ok(e)
}

/// The optimizer's state for the trained parameters `grads`: SGD's momentum buffer (when
/// momentum is on), Adam's two moments.
pub fn optimizer_state(lg: &LayerGraph, grads: &[(usize, String)], opt: &Optimizer) -> Estimate {
    let copies = match opt {
        Optimizer::Sgd { momentum, .. } if *momentum != 0.0 => 1,
        Optimizer::Sgd { .. } => 0,
        Optimizer::Adam { .. } | Optimizer::AdamW { .. } => 2,
    };
    let mut e = Estimate::default();
    for &(i, _) in grads {
        let p = &lg.params[i];
        e.add(
            format!("{} {} (optimizer state)", p.path, shape_text(&p.shape)),
            f32_bytes(&p.shape).saturating_mul(copies),
        );
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size(" 512m "), Ok(512 << 20));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        for bad in [
            "0",
            "0G",
            "",
            "G",
            "-1G",
            "8X",
            "8 G B",
            "1.2.3",
            "99999999999T",
            "nan",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn proc_and_cgroup_files_parse() {
        let meminfo = "MemTotal:       24683772 kB\nMemFree: 1 kB\nMemAvailable:   23932252 kB\n";
        assert_eq!(parse_meminfo(meminfo), Some(23932252 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 5 kB\n"), None);
        assert_eq!(parse_cgroup_limit("max\n"), None);
        assert_eq!(parse_cgroup_limit("9223372036854771712\n"), None);
        assert_eq!(parse_cgroup_limit("8589934592\n"), Some(8 << 30));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max address space         4096000000           unlimited            bytes\n";
        assert_eq!(parse_as_limit(limits), Some(4096000000));
        let unlimited =
            "Max address space         unlimited            unlimited            bytes\n";
        assert_eq!(parse_as_limit(unlimited), None);
    }

    #[test]
    fn refusal_names_total_budget_and_largest_items() {
        let mut e = Estimate::default();
        for (i, mb) in [5u64, 300, 1, 40, 700, 20, 9].into_iter().enumerate() {
            e.add(format!("item{i}"), mb << 20);
        }
        assert_eq!(e.total(), 1075 << 20);
        assert!(e.check(Some(2 << 30)).is_ok());
        let err = e.check(Some(1 << 30)).unwrap_err();
        assert!(err.contains("needs 1.0 GiB") && err.contains("the memory limit, 1.0 GiB"));
        let listed: Vec<&str> = err
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .filter(|w| w.starts_with("item"))
            .collect();
        assert_eq!(listed, ["item4", "item1", "item3", "item5", "item6"]);
        assert!(err.contains("--memory-limit"));
        // A saturated size is refused whatever the limit.
        let mut huge = Estimate::default();
        huge.add("x", u64::MAX);
        huge.add("y", 5);
        assert_eq!(huge.total(), u64::MAX);
        assert!(huge.check(Some(u64::MAX)).is_err());
    }

    #[test]
    fn fallible_allocation_reports_instead_of_aborting() {
        let err = try_filled(usize::MAX / 2, 0f32, "the arena").unwrap_err();
        assert!(err.contains("the arena"), "{err}");
        assert_eq!(try_filled(3, 1.5f32, "x").unwrap(), vec![1.5; 3]);
    }
}
