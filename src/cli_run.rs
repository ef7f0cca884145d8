//! The back-end commands of the CLI: `run`, `bench` and `compile`.
//!
//! In: parsed arguments. Out: text on stdout, errors on stderr, the exit code (0 ok, 1 bad
//! input, 2 usage).

use crate::cli::fail;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ndarray::{ArrayD, Axis, IxDyn};

use crate::io::weights::Weights;
use crate::model::{CompileOptions, compile, params_f32};
use crate::spec::Spec;

/// The weights from a file, or seeded initial values.
pub fn weights(spec: &Spec, path: Option<&Path>, seed: u64) -> Result<Weights, ExitCode> {
    match path {
        Some(p) => Weights::load(p, &spec.graph).map_err(fail),
        None => Ok(Weights::init(&spec.graph, seed)),
    }
}

/// Reads one input: `.npy` (CHW, or NCHW for a batch) or an image, shaped `[N, ...]`.
pub(crate) fn read_input(spec: &Spec, name: &str, path: &Path) -> Result<ArrayD<f32>, String> {
    let info = spec
        .graph
        .inputs
        .iter()
        .find(|i| i.name == name)
        .ok_or_else(|| format!("error: the model has no input `{name}`"))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let x = if ext == "npy" {
        crate::io::npy::read_f32(path).map_err(|e| e.to_string())?
    } else {
        crate::io::image::load_image(path, info).map_err(|e| e.to_string())?
    };
    let want = &info.shape;
    if x.shape() == want.as_slice() {
        return Ok(x.insert_axis(Axis(0)));
    }
    if x.ndim() == want.len() + 1 && &x.shape()[1..] == want.as_slice() && x.shape()[0] > 0 {
        return Ok(x);
    }
    Err(format!(
        "error: {}: shape {:?} does not fit input `{name}` {:?} (expected {:?} or [N, {}])",
        path.display(),
        x.shape(),
        want,
        want,
        want.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// What `netc run` was asked to do besides running.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunArgs<'a> {
    pub weights: Option<&'a Path>,
    /// `--input` values: `PATH`, or `NAME=PATH`.
    pub inputs: &'a [String],
    /// Every output as `.npy` (one) or `.npz` (several).
    pub output: Option<&'a Path>,
    /// A PNG grid of every channel of every feature-map output.
    pub output_image: Option<&'a Path>,
    /// Run up to this layer (a path as `netc summary` shows it) and take its value as the output.
    pub layer: Option<&'a str>,
    /// Draw 3-channel outputs as colour images.
    pub rgb: bool,
    pub threads: usize,
    pub seed: u64,
    pub memory_limit: Option<u64>,
}

/// The input names and files of `--input` values: `PATH` for a single-input model,
/// `NAME=PATH` otherwise; every input once. Errors carry their exit code.
pub fn input_paths(spec: &Spec, inputs: &[String]) -> Result<Vec<(String, PathBuf)>, (String, u8)> {
    let mut named: Vec<(String, PathBuf)> = Vec::new();
    for s in inputs {
        let (name, path) = match s.split_once('=') {
            Some((n, p)) if spec.graph.inputs.iter().any(|i| i.name == n) => (n.to_string(), p),
            _ if spec.graph.inputs.len() == 1 => (spec.graph.inputs[0].name.clone(), s.as_str()),
            _ => {
                return Err((
                    format!(
                        "error: the model has several inputs ({}): write `--input NAME=PATH`",
                        spec.graph
                            .inputs
                            .iter()
                            .map(|i| i.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    1,
                ));
            }
        };
        if named.iter().any(|(n, _)| *n == name) {
            return Err((
                format!(
                    "error: --input gives input `{name}` twice (the second is `{s}`): give each \
                     input once"
                ),
                2,
            ));
        }
        named.push((name, PathBuf::from(path)));
    }
    for i in &spec.graph.inputs {
        if !named.iter().any(|(n, _)| *n == i.name) {
            return Err((
                format!(
                    "error: no value for input `{}`: pass `--input {}=PATH`",
                    i.name, i.name
                ),
                1,
            ));
        }
    }
    Ok(named)
}

/// Heights and widths by input name.
pub type InputSizes = Vec<(String, [usize; 2])>;

/// `--native-size`: the height and width of each `[C, H, W]` input's file (an image's size, or
/// a `.npy`'s last two dimensions), for [`crate::spec::Options::input_sizes`].
pub fn native_sizes(spec: &Spec, inputs: &[String]) -> Result<InputSizes, (String, u8)> {
    let mut sizes = Vec::new();
    for (name, path) in input_paths(spec, inputs)? {
        let info = spec.graph.inputs.iter().find(|i| i.name == name);
        if info.is_some_and(|i| i.shape.len() != 3) {
            continue;
        }
        let is_npy = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
        let hw = if is_npy {
            let x = crate::io::npy::read_f32(&path).map_err(|e| (e.to_string(), 1))?;
            match x.shape() {
                [_, h, w] | [_, _, h, w] => [*h, *w],
                s => {
                    return Err((
                        format!(
                            "error: {}: shape {s:?} is not [C, H, W] or [N, C, H, W], so it has \
                             no size to give input `{name}` (--native-size)",
                            path.display()
                        ),
                        1,
                    ));
                }
            }
        } else {
            let (w, h) = crate::io::image::image_size(&path).map_err(|e| (e.to_string(), 1))?;
            [h as usize, w as usize]
        };
        sizes.push((name, hw));
    }
    Ok(sizes)
}

/// `netc run`
pub fn run(spec: &Spec, args: &RunArgs) -> ExitCode {
    let usage = |msg: String| {
        eprintln!("{}", crate::diag::escape_controls(&msg));
        ExitCode::from(2)
    };
    let layered;
    let graph = match args.layer {
        Some(path) => match crate::cli_outputs::select_layer(&spec.graph, path) {
            Ok(g) => {
                layered = g;
                &layered
            }
            Err(e) => return usage(e),
        },
        None => &spec.graph,
    };
    if let Err(e) =
        crate::cli_outputs::check_names(args.output, args.output_image, graph.outputs.len())
    {
        return usage(e);
    }
    if args.output_image.is_some()
        && let Err(e) = crate::cli_outputs::check_picture(graph)
    {
        return usage(e);
    }
    let paths = match input_paths(spec, args.inputs) {
        Ok(p) => p,
        Err((e, 2)) => return usage(e),
        Err((e, _)) => return fail(e),
    };
    let mut named: Vec<(String, ArrayD<f32>)> = Vec::new();
    for (name, path) in paths {
        match read_input(spec, &name, &path) {
            Ok(x) => named.push((name, x)),
            Err(e) => return fail(e),
        }
    }
    let batch = named[0].1.shape()[0];
    if let Some((n, x)) = named.iter().find(|(_, x)| x.shape()[0] != batch) {
        return fail(format!(
            "input `{n}` has batch {} but another has {batch}",
            x.shape()[0]
        ));
    }
    // Before the weights are read or made: everything must fit.
    if let Err(e) = crate::budget::check_inference(graph, batch, args.threads, args.memory_limit) {
        return fail(e);
    }
    let w = match weights(spec, args.weights, args.seed) {
        Ok(w) => w,
        Err(c) => return c,
    };
    let opts = CompileOptions {
        batch,
        threads: args.threads,
        memory_limit: args.memory_limit,
    };
    let run_spec = Spec {
        sources: spec.sources.clone(),
        graph: graph.clone(),
    };
    let mut exe = match compile(&run_spec, &params_f32(&w), opts) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let refs: Vec<(&str, &ArrayD<f32>)> = named.iter().map(|(n, x)| (n.as_str(), x)).collect();
    let outs = match exe.run(&refs) {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    crate::cli_outputs::print_outputs(graph, &outs);
    if let Some(path) = args.output {
        match crate::cli_outputs::write_arrays(path, &outs) {
            Ok(line) => println!("{line}"),
            Err(e) => return fail(e),
        }
    }
    if let Some(path) = args.output_image {
        match crate::cli_outputs::write_picture(path, &outs, args.rgb) {
            Ok(line) => println!("{line}"),
            Err(e) => return fail(e),
        }
    }
    ExitCode::SUCCESS
}

/// Peak resident memory of this process, in bytes (Linux), if known.
pub fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// How `netc bench` runs (inference).
pub struct BenchRun<'a> {
    pub batch: usize,
    pub threads: usize,
    pub iters: usize,
    pub warmup: usize,
    /// One JSON object on stdout instead of text.
    pub json: bool,
    /// Time each kernel.
    pub profile: bool,
    /// Also write the JSON report (with the profile) to this file.
    pub profile_json: Option<&'a std::path::Path>,
    /// The memory budget in bytes (`None`: what is available), see [`crate::budget`].
    pub memory_limit: Option<u64>,
}

/// `netc bench`
#[allow(clippy::too_many_arguments)]
pub fn bench(path: &PathBuf, opts: &crate::spec::Options, run: BenchRun) -> ExitCode {
    let BenchRun {
        batch,
        threads,
        iters,
        warmup,
        json,
        profile,
        profile_json,
        memory_limit,
    } = run;
    let t0 = Instant::now();
    let spec = match crate::spec::load_file(path, opts) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let t_front = t0.elapsed();
    // Before the weights are made: everything must fit.
    let estimate = match crate::budget::check_inference(&spec.graph, batch, threads, memory_limit) {
        Ok(e) => e.total(),
        Err(e) => return fail(e),
    };
    let w = Weights::init(&spec.graph, 0);
    let params = params_f32(&w);
    let t1 = Instant::now();
    let opts = CompileOptions {
        batch,
        threads,
        memory_limit,
    };
    let mut exe = match compile(&spec, &params, opts) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let t_compile = t1.elapsed();
    let inputs: Result<Vec<(String, ArrayD<f32>)>, String> = spec
        .graph
        .inputs
        .iter()
        .map(|i| {
            let mut shape = vec![batch];
            shape.extend(&i.shape);
            let n: usize = shape.iter().product();
            let values = (0..n).map(|k| ((k * 7919 % 1000) as f32) / 1000.0 - 0.5);
            let data = crate::budget::try_copy(values, &format!("input `{}`", i.name))?;
            let x = ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|e| e.to_string())?;
            Ok((i.name.clone(), x))
        })
        .collect();
    let inputs = match inputs {
        Ok(i) => i,
        Err(e) => return fail(e),
    };
    let refs: Vec<(&str, &ArrayD<f32>)> = inputs.iter().map(|(n, x)| (n.as_str(), x)).collect();
    for _ in 0..warmup {
        if let Err(e) = exe.run(&refs) {
            return fail(e);
        }
    }
    if profile {
        exe.enable_profiling();
    }
    let mut times: Vec<Duration> = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        let t = Instant::now();
        if let Err(e) = exe.run(&refs) {
            return fail(e);
        }
        times.push(t.elapsed());
    }
    times.sort();
    let q = |f: f64| times[((times.len() - 1) as f64 * f).round() as usize];
    let (median, p90, min, max) = (q(0.5), q(0.9), times[0], times[times.len() - 1]);
    let ips = batch as f64 / median.as_secs_f64();
    let flops: u64 = spec
        .graph
        .nodes
        .iter()
        .map(|n| spec.graph.flops(n))
        .fold(0, u64::saturating_add);
    let gflops = flops as f64 * batch as f64 / median.as_secs_f64() / 1e9;
    let st = &exe.stats;
    let rss = peak_rss();
    let rows = exe.profile();
    // The matrix product's speed now, for the profile's "% of GEMM peak" column.
    let peak = profile.then(|| exe.gemm_peak(Duration::from_millis(200)));
    let per_run =
        |r: &crate::runtime::KernelProfile| (r.time.as_secs_f64() / times.len() as f64).max(1e-12);
    let report = || {
        let mut v = serde_json::json!({
            "model": spec.graph.name, "batch": batch, "threads": threads, "iters": times.len(),
            "frontend_ms": t_front.as_secs_f64() * 1e3,
            "compile_ms": t_compile.as_secs_f64() * 1e3,
            "codegen_ms": st.codegen_time.as_secs_f64() * 1e3,
            "kernels": st.kernels, "functions": st.functions,
            "latency_ms": { "median": median.as_secs_f64() * 1e3, "p90": p90.as_secs_f64() * 1e3,
                             "min": min.as_secs_f64() * 1e3, "max": max.as_secs_f64() * 1e3 },
            "images_per_s": ips, "gflops_per_s": gflops,
            "arena_bytes": st.arena_bytes, "unshared_bytes": st.unshared_bytes, "const_bytes": st.const_bytes,
            "estimate_bytes": estimate, "peak_rss_bytes": rss,
        });
        if let Some(peak) = peak {
            v["profile"] = serde_json::json!({
                "gemm_peak_gflops_per_s": peak,
                "kernels": rows.iter().map(|r| serde_json::json!({
                    "kernel": r.index, "ops": r.ops, "algorithm": r.algorithm, "origin": r.origin, "shape": r.shape,
                    "ms": per_run(r) * 1e3,
                    "gflops_per_s": r.flops as f64 / per_run(r) / 1e9,
                    "peak_fraction": r.flops as f64 / per_run(r) / 1e9 / peak,
                    "bytes": r.bytes, "gb_per_s": r.bytes as f64 / per_run(r) / 1e9,
                })).collect::<Vec<_>>(),
            });
        }
        v
    };
    if let Some(f) = profile_json
        && let Err(e) = crate::io::write_atomic(f, |w| {
            use std::io::Write as _;
            writeln!(w, "{}", report())
        })
    {
        return fail(e);
    }
    if json {
        println!("{}", report());
    } else {
        println!("model {} batch {batch}, {threads} threads", spec.graph.name);
        println!(
            "compile: {:.1} ms (front end {:.1} ms, {} kernels, {} functions, codegen {:.1} ms)",
            (t_front + t_compile).as_secs_f64() * 1e3,
            t_front.as_secs_f64() * 1e3,
            st.kernels,
            st.functions,
            st.codegen_time.as_secs_f64() * 1e3
        );
        println!(
            "latency: median {:.3} ms, p90 {:.3} ms (min {:.3}, max {:.3}; {} runs)",
            median.as_secs_f64() * 1e3,
            p90.as_secs_f64() * 1e3,
            min.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
            times.len()
        );
        println!("throughput: {ips:.1} images/s, {gflops:.1} GFLOP/s");
        if let Some(peak) = peak {
            let total: f64 = rows.iter().map(|r| r.time.as_secs_f64()).sum();
            println!(
                "GEMM peak now ({threads} threads, 288×512 · 512×1024 per thread): {peak:.1} GFLOP/s"
            );
            println!(
                "{:>5}  {:>6}  {:>8}  {:>5}  {:>6}  {:<36} {:<22} origin",
                "kernel", "share", "GFLOP/s", "%peak", "GB/s", "ops", "shape"
            );
            for r in rows.iter().take(40) {
                let secs = (r.time.as_secs_f64() / times.len() as f64).max(1e-12);
                let gflops = r.flops as f64 / secs / 1e9;
                println!(
                    "{:>5}  {:>5.1}%  {:>8.1}  {:>4.0}%  {:>6.1}  {:<36} {:<22} {}",
                    format!("k{}", r.index),
                    100.0 * r.time.as_secs_f64() / total,
                    gflops,
                    100.0 * gflops / peak,
                    r.bytes as f64 / secs / 1e9,
                    if r.algorithm.is_empty() {
                        r.ops.clone()
                    } else {
                        format!("{} ({})", r.ops, r.algorithm)
                    },
                    format!("{:?}", r.shape),
                    r.origin
                );
            }
        }
        println!(
            "memory: arena {:.1} MiB (without reuse {:.1} MiB), constants {:.1} MiB, estimate {:.1} MiB, peak RSS {}",
            st.arena_bytes as f64 / 1048576.0,
            st.unshared_bytes as f64 / 1048576.0,
            st.const_bytes as f64 / 1048576.0,
            estimate as f64 / 1048576.0,
            rss.map_or("unknown".into(), |b| format!(
                "{:.1} MiB",
                b as f64 / 1048576.0
            ))
        );
    }
    ExitCode::SUCCESS
}

/// `netc compile`
///
/// With `train`, the training step `netc bench --train` times (forward in training mode,
/// cross-entropy, backward, ready for an SGD update) instead of inference.
pub fn compile_cmd(
    spec: &Spec,
    batch: usize,
    emit: Option<&str>,
    train: bool,
    memory_limit: Option<u64>,
) -> ExitCode {
    let t = Instant::now();
    if train {
        let (_, mut tr, _) =
            match crate::train::bench::bench_trainer(spec.graph.clone(), batch, 0, 1, memory_limit)
            {
                Ok(t) => t,
                Err(e) => return fail(e),
            };
        let total = t.elapsed();
        return print_kernels(tr.executable(), total, emit);
    }
    // Before the weights are made: everything must fit.
    if let Err(e) = crate::budget::check_inference(&spec.graph, batch, 1, memory_limit) {
        return fail(e);
    }
    let w = Weights::init(&spec.graph, 0);
    let opts = CompileOptions {
        batch,
        threads: 1,
        memory_limit,
    };
    let exe = match compile(spec, &params_f32(&w), opts) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    print_kernels(&exe, t.elapsed(), emit)
}

/// `netc compile`'s listing: each kernel, its compile time and (with `emit`) its code.
fn print_kernels(
    exe: &crate::runtime::Executable,
    total: std::time::Duration,
    emit: Option<&str>,
) -> ExitCode {
    for (i, (k, f)) in exe.fused().kernels.iter().zip(&exe.functions).enumerate() {
        let what = k.ops.join("+");
        match f {
            Some(c) => {
                println!(
                    "k{i} {what} ({}): {:.2} ms{}",
                    k.origin,
                    c.compile_time.as_secs_f64() * 1e3,
                    if c.vectorized { ", f32x4" } else { "" }
                );
                match emit {
                    Some("clif") => println!("{}", c.clif),
                    Some("asm") => println!("{}", c.asm.as_deref().unwrap_or("(no disassembly)")),
                    _ => {}
                }
            }
            None => println!(
                "k{i} {what} ({}): no generated code (a host kernel: GEMM core, pooling, copy)",
                k.origin
            ),
        }
    }
    let st = &exe.stats;
    println!(
        "total: {:.1} ms for {} kernels ({} distinct functions, Cranelift {:.1} ms)",
        total.as_secs_f64() * 1e3,
        st.kernels,
        st.functions,
        st.codegen_time.as_secs_f64() * 1e3
    );
    ExitCode::SUCCESS
}
