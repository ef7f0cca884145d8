//! `netc run --sliding` and `netc bench --sliding`: a classifier run over a larger image as one
//! convolutional pass ([`crate::sliding`]).
//!
//! In: the classifier's spec (at its crop size), `netc run`'s arguments, the image size
//! (`--size`, else the input file's own size). Out: on stdout the windows, the stride and the
//! positions, then per sample (the first 3 of batches over 8) the top class of each window
//! (small maps) or the classes counted over the windows and the best windows (large maps); `--output` the raw score map
//! `[N, K, rows, cols]` (.npy, or .npz for several outputs); `--output-image` a heat map per
//! class (probabilities: the model's softmax, or a softmax over the classes at each position).
//! `bench`: the pass timed against the classifier run window by window (and on all windows as
//! one batch), on the same seeded weights and input.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ndarray::{ArrayD, Axis, IxDyn, s};

use crate::cli::fail;
use crate::cli_run::RunArgs;
use crate::model::{CompileOptions, compile, params_f32};
use crate::picture::{Normalize, Tile};
use crate::sliding::{ScoreMap, Sliding};
use crate::spec::Spec;

/// Maps of at most this many windows get one line per row of windows.
const EACH_UP_TO: usize = 64;
/// The best windows listed for larger maps.
const BEST: usize = 5;
/// Batches of more samples than this print the first few only.
const SAMPLES_UP_TO: usize = 8;
const FIRST_SAMPLES: usize = 3;

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("{}", crate::diag::escape_controls(&msg.to_string()));
    ExitCode::from(2)
}

/// `--size`: `HxW` or `N` (square).
pub fn parse_size(s: &str) -> Result<[usize; 2], String> {
    let dim = |t: &str| -> Result<usize, String> {
        match t.trim().parse::<usize>() {
            Ok(n) if (1..=crate::io::image::MAX_SIDE as usize).contains(&n) => Ok(n),
            _ => Err(format!(
                "expected a size as HxW or N (e.g. `112x96`, `112`), each from 1 to {}; got `{s}`",
                crate::io::image::MAX_SIDE
            )),
        }
    };
    match s.split_once(['x', 'X', '×']) {
        Some((h, w)) => Ok([dim(h)?, dim(w)?]),
        None => dim(s).map(|n| [n, n]),
    }
}

/// The sliding form of `spec` at `size`, or (without a size) at the size of the file
/// `--input` gives.
fn sliding(spec: &Spec, inputs: &[String], size: Option<[usize; 2]>) -> Result<Sliding, ExitCode> {
    let size = match size {
        Some(s) => s,
        None => {
            let sizes = crate::cli_run::native_sizes(spec, inputs).map_err(|(e, code)| {
                eprintln!("{}", crate::diag::escape_controls(&e));
                ExitCode::from(code)
            })?;
            match sizes.first() {
                Some(&(_, hw)) => hw,
                None => {
                    return Err(fail(format!(
                        "error: --sliding: model `{}` has no image input to slide over",
                        spec.graph.name
                    )));
                }
            }
        }
    };
    crate::sliding::convert(&spec.graph, size).map_err(|e| fail(format!("error: --sliding: {e}")))
}

/// `netc run --sliding`
pub fn run(spec: &Spec, args: &RunArgs, size: Option<[usize; 2]>) -> ExitCode {
    if let Err(e) =
        crate::cli_outputs::check_names(args.output, args.output_image, spec.graph.outputs.len())
    {
        return usage(e);
    }
    let sl = match sliding(spec, args.inputs, size) {
        Ok(s) => s,
        Err(c) => return c,
    };
    for line in sl.describe() {
        println!("{line}");
    }
    let big = Spec {
        sources: spec.sources.clone(),
        graph: sl.graph.clone(),
    };
    let paths = match crate::cli_run::input_paths(spec, args.inputs) {
        Ok(p) => p,
        Err((e, 2)) => return usage(e),
        Err((e, _)) => return fail(e),
    };
    let (name, path) = &paths[0];
    // Before the input is read at the image's size: one sample must fit (the batch of a
    // .npy is checked again below).
    if let Err(e) = crate::budget::check_inference(&sl.graph, 1, args.threads, args.memory_limit) {
        return fail(format!("error: {e}"));
    }
    let x = match crate::cli_run::read_input(&big, name, path) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let batch = x.shape()[0];
    if let Err(e) =
        crate::budget::check_inference(&sl.graph, batch, args.threads, args.memory_limit)
    {
        return fail(format!("error: {e}"));
    }
    // The weights are the classifier's (its shapes), then read in the pass's shapes.
    let w = match crate::cli_run::weights(spec, args.weights, args.seed) {
        Ok(w) => w,
        Err(c) => return c,
    };
    let params = match sl.params(params_f32(&w)) {
        Ok(p) => p,
        Err(e) => return fail(format!("error: {e}")),
    };
    let opts = CompileOptions {
        batch,
        threads: args.threads,
        memory_limit: args.memory_limit,
    };
    let mut exe = match compile(&big, &params, opts) {
        Ok(e) => e,
        Err(e) => return fail(format!("error: {e}")),
    };
    let outs = match exe.run(&[(name.as_str(), &x)]) {
        Ok(o) => o,
        Err(e) => return fail(format!("error: {e}")),
    };
    let mut tiles = Vec::new();
    for (m, (_, y)) in sl.maps.iter().zip(&outs) {
        let probabilities =
            crate::cli_outputs::classifier(&spec.graph, m.node).is_some_and(|(_, p)| p);
        let p = if probabilities {
            y.clone()
        } else {
            softmax_channels(y)
        };
        print!("{}", summary(m, &p, sl.window, sl.maps.len() > 1));
        tiles.extend(heat_tiles(m, &p, sl.maps.len() > 1));
    }
    if let Some(path) = args.output {
        match crate::cli_outputs::write_arrays(path, &outs) {
            Ok(line) => println!("{line}"),
            Err(e) => return fail(e),
        }
    }
    if let Some(path) = args.output_image {
        let k = sl.maps.iter().map(|m| m.classes).max().unwrap_or(1);
        let columns = if k <= 16 && (batch > 1 || sl.maps.len() > 1) {
            k
        } else {
            0
        };
        if let Err(e) = crate::picture::write_grid(path, &tiles, columns, Normalize::Heat) {
            return fail(e);
        }
        let shown = crate::diag::escape_controls(&path.display().to_string()).into_owned();
        println!(
            "wrote {shown} ({} heat maps: each class's probability per window, 0 black to 1 \
             pale yellow)",
            tiles.len()
        );
    }
    ExitCode::SUCCESS
}

/// A softmax over axis 1 (the classes) of `[N, K, rows, cols]` scores.
fn softmax_channels(y: &ArrayD<f32>) -> ArrayD<f32> {
    let mut p = y.clone();
    for mut sample in p.axis_iter_mut(Axis(0)) {
        let m = sample.fold_axis(Axis(0), f32::NEG_INFINITY, |a, &b| a.max(b));
        sample -= &m;
        sample.mapv_inplace(f32::exp);
        let z = sample.sum_axis(Axis(0));
        sample /= &z;
    }
    p
}

/// The text summary of one output's probabilities `[N, K, rows, cols]`.
fn summary(m: &ScoreMap, p: &ArrayD<f32>, window: [usize; 2], named: bool) -> String {
    let [rows, cols] = m.positions;
    let mut out = String::new();
    let show = |c: usize, v: f32| format!("{c} ({:.0}%)", 100.0 * v);
    let samples = p.shape()[0];
    for (n, sample) in p.axis_iter(Axis(0)).enumerate() {
        if samples > SAMPLES_UP_TO && n == FIRST_SAMPLES {
            out += &format!(
                "... ({} more samples: --output has every map)\n",
                samples - FIRST_SAMPLES
            );
            break;
        }
        let head = match (named, p.shape()[0] > 1) {
            (false, false) => String::new(),
            (false, true) => format!("[{n}] "),
            (true, false) => format!("{} ", m.name),
            (true, true) => format!("{}[{n}] ", m.name),
        };
        // The top class and its probability at each window.
        let top: Vec<(usize, f32)> = (0..rows * cols)
            .map(|q| {
                let col = sample.slice(s![.., q / cols, q % cols]);
                col.iter()
                    .copied()
                    .enumerate()
                    .fold((0, f32::NAN), |best, (c, v)| {
                        // The largest; NaN only when every class is NaN.
                        if v > best.1 || (best.1.is_nan() && !v.is_nan()) {
                            (c, v)
                        } else {
                            best
                        }
                    })
            })
            .collect();
        if rows * cols <= EACH_UP_TO {
            out += &format!("{head}top class per window (probability), by row of windows:\n");
            for r in 0..rows {
                let line: Vec<String> = (0..cols)
                    .map(|c| show(top[r * cols + c].0, top[r * cols + c].1))
                    .collect();
                out += &format!("  y {:>4}: {}\n", m.corner(r, 0)[0], line.join("  "));
            }
            continue;
        }
        let mut counts = vec![0usize; m.classes];
        for &(c, _) in &top {
            counts[c] += 1;
        }
        out += &format!(
            "{head}top class per window, counted over {} windows, class (windows): {}\n",
            rows * cols,
            crate::cli_outputs::class_counts(&counts)
        );
        let mut order: Vec<usize> = (0..top.len()).filter(|&q| !top[q].1.is_nan()).collect();
        order.sort_by(|&a, &b| top[b].1.total_cmp(&top[a].1).then(a.cmp(&b)));
        let best: Vec<String> = order
            .iter()
            .take(BEST)
            .map(|&q| {
                let [y, x] = m.corner(q / cols, q % cols);
                format!(
                    "{} at x {x}..{}, y {y}..{}",
                    show(top[q].0, top[q].1),
                    x + window[1],
                    y + window[0]
                )
            })
            .collect();
        out += &format!("{head}best windows: {}\n", best.join("; "));
    }
    out
}

/// One heat-map tile per sample and class: the class's probability at each window.
fn heat_tiles(m: &ScoreMap, p: &ArrayD<f32>, named: bool) -> Vec<Tile> {
    let [rows, cols] = m.positions;
    let several = p.shape()[0] > 1;
    let mut tiles = Vec::new();
    for (n, sample) in p.axis_iter(Axis(0)).enumerate() {
        for (c, plane) in sample.axis_iter(Axis(0)).enumerate() {
            let mut label = format!("class {c}");
            if several {
                label = format!("{n}: {label}");
            }
            if named {
                label = format!("{} {label}", m.name);
            }
            tiles.push(Tile {
                pixels: plane.iter().copied().collect(),
                channels: 1,
                height: rows,
                width: cols,
                label,
            });
        }
    }
    tiles
}

/// How `netc bench --sliding` runs.
pub struct BenchSliding {
    pub size: [usize; 2],
    pub threads: usize,
    pub iters: usize,
    pub warmup: usize,
    pub json: bool,
    pub memory_limit: Option<u64>,
}

/// The median of `iters` timed calls of `f` after `warmup` untimed ones.
fn median(
    warmup: usize,
    iters: usize,
    mut f: impl FnMut() -> Result<(), String>,
) -> Result<Duration, String> {
    for _ in 0..warmup {
        f()?;
    }
    let mut times = Vec::with_capacity(iters.max(1));
    for _ in 0..iters.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// `netc bench --sliding`: the convolutional pass over a `size` input against the classifier
/// on each window (one run per window, each crop copied out first, as a loop would), and on
/// all windows as one batch; seeded weights and input.
pub fn bench(spec: &Spec, b: &BenchSliding) -> ExitCode {
    let sl = match crate::sliding::convert(&spec.graph, b.size) {
        Ok(s) => s,
        Err(e) => return fail(format!("error: --sliding: {e}")),
    };
    let m = &sl.maps[0];
    let windows = m.positions[0] * m.positions[1];
    for (g, batch) in [(&sl.graph, 1), (&spec.graph, windows)] {
        if let Err(e) = crate::budget::check_inference(g, batch, b.threads, b.memory_limit) {
            return fail(format!("error: {e}"));
        }
    }
    let w = crate::io::weights::Weights::init(&spec.graph, 0);
    let crop_params = params_f32(&w);
    let params = match sl.params(crop_params.clone()) {
        Ok(p) => p,
        Err(e) => return fail(format!("error: {e}")),
    };
    let opts = |batch| CompileOptions {
        batch,
        threads: b.threads,
        memory_limit: b.memory_limit,
    };
    let big = Spec {
        sources: spec.sources.clone(),
        graph: sl.graph.clone(),
    };
    let exes = compile(&big, &params, opts(1)).and_then(|pass| {
        let one = compile(spec, &crop_params, opts(1))?;
        let all = compile(spec, &crop_params, opts(windows))?;
        Ok((pass, one, all))
    });
    let (mut pass, mut one, mut all) = match exes {
        Ok(e) => e,
        Err(e) => return fail(format!("error: {e}")),
    };
    let info = &sl.graph.inputs[0];
    let name = info.name.as_str();
    let c = info.shape[0];
    let n = info.shape.iter().product::<usize>();
    let values: Vec<f32> = (0..n)
        .map(|k| ((k * 7919 % 1000) as f32) / 1000.0 - 0.5)
        .collect();
    let Ok(x) = ArrayD::from_shape_vec(IxDyn(&[1, c, b.size[0], b.size[1]]), values) else {
        return fail("error: the input does not fit its shape");
    };
    let [wh, ww] = sl.window;
    let crop = |q: usize| {
        let [y, xx] = m.corner(q / m.positions[1], q % m.positions[1]);
        let (y, xx) = (y.min(b.size[0]), xx.min(b.size[1]));
        // A window reaching past the image (pixels the classifier never reads) is cut short
        // and padded with zeros.
        let mut out = ArrayD::<f32>::zeros(IxDyn(&[1, c, wh, ww]));
        let (y1, x1) = ((y + wh).min(b.size[0]), (xx + ww).min(b.size[1]));
        out.slice_mut(s![0, .., ..y1 - y, ..x1 - xx])
            .assign(&x.slice(s![0, .., y..y1, xx..x1]));
        out
    };
    let t_pass = median(b.warmup, b.iters, || pass.run(&[(name, &x)]).map(|_| ()));
    let t_loop = median(b.warmup.min(1), b.iters, || {
        for q in 0..windows {
            one.run(&[(name, &crop(q))])?;
        }
        Ok(())
    });
    let t_batch = median(b.warmup.min(1), b.iters, || {
        let crops: Vec<ArrayD<f32>> = (0..windows).map(crop).collect();
        let views: Vec<_> = crops.iter().map(|a| a.view()).collect();
        let batch = ndarray::concatenate(Axis(0), &views).map_err(|e| e.to_string())?;
        all.run(&[(name, &batch)]).map(|_| ())
    });
    let (t_pass, t_loop, t_batch) = match (t_pass, t_loop, t_batch) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return fail(format!("error: {e}")),
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    if b.json {
        println!(
            "{}",
            serde_json::json!({
                "model": spec.graph.name, "size": b.size, "window": sl.window,
                "stride": m.stride, "positions": m.positions, "windows": windows,
                "threads": b.threads, "iters": b.iters,
                "pass_ms": ms(t_pass), "window_loop_ms": ms(t_loop),
                "windows_batched_ms": ms(t_batch),
                "speedup_vs_loop": ms(t_loop) / ms(t_pass),
                "speedup_vs_batch": ms(t_batch) / ms(t_pass),
            })
        );
        return ExitCode::SUCCESS;
    }
    for line in sl.describe() {
        println!("{line}");
    }
    println!(
        "convolutional pass: median {:.3} ms ({} threads, {} runs)",
        ms(t_pass),
        b.threads,
        b.iters.max(1)
    );
    println!(
        "classifier window by window: median {:.3} ms for {windows} windows ({:.1}× the pass)",
        ms(t_loop),
        ms(t_loop) / ms(t_pass)
    );
    println!(
        "classifier on all windows as one batch: median {:.3} ms ({:.1}× the pass)",
        ms(t_batch),
        ms(t_batch) / ms(t_pass)
    );
    ExitCode::SUCCESS
}
