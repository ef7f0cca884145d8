//! What `netc run` does with a model's outputs: print them, write them as arrays, draw them.
//!
//! In: the layer graph being run and its outputs (`[N, ...]` arrays by output name), plus the
//! run's flags. Out: lines on stdout, files (`.npy`/`.npz` through [`crate::io::npy`], PNG
//! grids through [`crate::picture`]), or a message for the caller to print with its exit code.
//!
//! - Printing ([`print_outputs`]): a *classifier output* (`[K]` or `[K, 1, 1]` per sample,
//!   K ≥ 2, made by a dense layer, a convolution, global pooling or a softmax; see
//!   [`classifier`]) gets its top-5 classes per sample with probabilities: a softmax of the
//!   scores, or the values themselves when the model already ends in a softmax. Batches of
//!   more than [`EACH_UP_TO`] samples get the first few lines, then a count of the top-1
//!   classes. Any other output gets its shape and first values.
//! - Arrays ([`write_arrays`]): every output; one output as `.npy`, several as an `.npz` keyed
//!   by output name. A `.npy` name for several outputs, or any other extension, is a usage
//!   error checked before anything runs ([`check_names`]).
//! - Pictures ([`write_picture`]): every channel of every `[C, H, W]` output, min-max
//!   normalized to gray, one labelled tile each (label: the channel; with several samples
//!   `sample:channel`, with several outputs the output's name first). With `rgb`, a
//!   3-channel output is one colour tile per sample instead.
//! - Layers ([`select_layer`]): `--layer PATH` (a path as `netc summary` prints it) makes that
//!   layer's value the model's output; a layer of a shared module applied several times gives
//!   one output per application, `PATH#1`, `PATH#2`, ...

use std::path::Path;

use ndarray::{ArrayD, ArrayView2, Axis};

use crate::layer_graph::{LayerGraph, NodeId, Op};
use crate::picture::{Normalize, Tile};

/// Batches up to this many samples get one top-5 line per sample.
pub const EACH_UP_TO: usize = 8;
/// Larger batches show this many lines before the counts.
const FIRST_LINES: usize = 3;

/// The extension of `path`, lower case.
fn ext(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Usage errors in the file names of `--output` (arrays) and `--output-image` (a picture),
/// for a model with `outputs` outputs: checked before anything is loaded or run.
pub fn check_names(
    output: Option<&Path>,
    output_image: Option<&Path>,
    outputs: usize,
) -> Result<(), String> {
    let show = |p: &Path| crate::diag::escape_controls(&p.display().to_string()).into_owned();
    if let Some(p) = output {
        match ext(p).as_str() {
            "npy" if outputs > 1 => {
                return Err(format!(
                    "error: --output {}: the model has {outputs} outputs; write them to an .npz \
                     (one array per output name), e.g. `--output {}`",
                    show(p),
                    show(&p.with_extension("npz"))
                ));
            }
            "npy" | "npz" => {}
            "png" => {
                return Err(format!(
                    "error: --output {}: --output writes arrays (.npy, or .npz for several \
                     outputs); for a picture of the output use `--output-image {}`",
                    show(p),
                    show(p)
                ));
            }
            _ => {
                return Err(format!(
                    "error: --output {}: expected a .npy file (one output) or .npz (several, \
                     keyed by output name)",
                    show(p)
                ));
            }
        }
    }
    if let Some(p) = output_image
        && ext(p) != "png"
    {
        return Err(format!(
            "error: --output-image {}: pictures are written as PNG: name it `{}`",
            show(p),
            show(&p.with_extension("png"))
        ));
    }
    Ok(())
}

/// `lg` with the layer `path` as its output (the layers it does not need are still in the
/// graph; lowering skips nothing, but fusion keeps only what the outputs need, so they cost
/// nothing when run). Unknown paths are an error naming the nearest one.
// TODO(transfer): use `crate::cut::prefix` (the graph cut of part 3) once it is merged; this is
// the minimal local version of it.
pub fn select_layer(lg: &LayerGraph, path: &str) -> Result<LayerGraph, String> {
    let hits: Vec<NodeId> = lg
        .nodes
        .iter()
        .filter(|n| n.path == path)
        .map(|n| n.id)
        .collect();
    if hits.is_empty() {
        let esc = crate::diag::escape_controls;
        let paths = || lg.nodes.iter().map(|n| n.path.as_str());
        // A likely typo first; otherwise the nearest by edit distance.
        let nearest = crate::diag::suggest(path, paths()).or_else(|| {
            paths()
                .filter(|p| p.len() <= 100 && path.len() <= 100)
                .min_by_key(|p| strsim::levenshtein(path, p))
        });
        let hint = match nearest {
            Some(h) => format!("did you mean `{}`? ", esc(h)),
            None => String::new(),
        };
        return Err(format!(
            "error: --layer {}: model {} has no layer of that path; {hint}`netc summary` lists \
             the layers by path",
            esc(path),
            lg.name
        ));
    }
    let mut g = lg.clone();
    g.outputs = if hits.len() == 1 {
        vec![(path.to_string(), hits[0])]
    } else {
        hits.iter()
            .enumerate()
            .map(|(i, &n)| (format!("{path}#{}", i + 1), n))
            .collect()
    };
    Ok(g)
}

/// The layer that makes node `n`'s values, looking through layers that only move or pass
/// values (flatten, identity, dropout).
fn maker(lg: &LayerGraph, mut n: NodeId) -> &Op {
    loop {
        let node = &lg.nodes[n];
        match (&node.op, node.inputs.as_slice()) {
            (Op::Flatten | Op::Identity | Op::Dropout { .. }, &[i]) => n = i,
            (op, _) => return op,
        }
    }
}

/// How an output is a classifier: its class count, and whether it holds probabilities already
/// (the model ends in a softmax). `None` for an output that is not a classifier's.
pub fn classifier(lg: &LayerGraph, node: NodeId) -> Option<(usize, bool)> {
    let k = crate::loss::class_count(&lg.nodes[node].shape)?;
    if k < 2 {
        return None;
    }
    match maker(lg, node) {
        Op::Softmax => Some((k, true)),
        Op::Dense { .. } | Op::Conv2d { .. } | Op::GlobalAvgPool | Op::AdaptiveAvgPool2d { .. } => {
            Some((k, false))
        }
        _ => None,
    }
}

/// Prints every output: top-5 classes for classifier outputs, shape and first values for the
/// others.
pub fn print_outputs(lg: &LayerGraph, outs: &[(String, ArrayD<f32>)]) {
    for (name, y) in outs {
        let node = lg
            .outputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, id)| id);
        match node.and_then(|id| classifier(lg, id)) {
            Some((k, probabilities)) if y.ndim() >= 2 && y.len() == y.shape()[0] * k => {
                if let Ok(rows) = y.to_shape((y.shape()[0], k)) {
                    print!("{}", top5(name, rows.view(), probabilities));
                }
            }
            _ => println!("{name}: shape {:?}, values {}", y.shape(), preview(y)),
        }
    }
}

fn preview(y: &ArrayD<f32>) -> String {
    let v: Vec<String> = y.iter().take(8).map(|x| format!("{x:.4}")).collect();
    format!(
        "[{}{}]",
        v.join(", "),
        if y.len() > 8 { ", ..." } else { "" }
    )
}

/// The top-5 lines of `[N, K]` scores (or probabilities), as printed.
pub fn top5(name: &str, y: ArrayView2<'_, f32>, probabilities: bool) -> String {
    let n = y.nrows();
    let mut s = String::new();
    let mut counts = vec![0usize; y.ncols()];
    for (i, row) in y.axis_iter(Axis(0)).enumerate() {
        let p: Vec<f32> = if probabilities {
            row.to_vec()
        } else {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let z: f32 = row.iter().map(|v| (v - m).exp()).sum();
            row.iter().map(|v| (v - m).exp() / z).collect()
        };
        let mut idx: Vec<usize> = (0..p.len()).collect();
        // By score; NaN last.
        idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        idx.sort_by_key(|&a| row[a].is_nan());
        if let Some(&best) = idx.first() {
            counts[best] += 1;
        }
        if n <= EACH_UP_TO || i < FIRST_LINES {
            let top: Vec<String> = idx
                .iter()
                .take(5)
                .map(|&c| format!("{c} ({:.1}%)", 100.0 * p[c]))
                .collect();
            s += &format!("{name}[{i}] top-5: {}\n", top.join(", "));
        }
    }
    if n > EACH_UP_TO {
        s += &format!("... ({} more samples)\n", n - FIRST_LINES);
        s += &format!(
            "{name}: top-1 class counts over {n} samples, class (count): {}\n",
            class_counts(&counts)
        );
    }
    s
}

/// Writes every output to `path`: `.npy` for one, `.npz` keyed by output name.
pub fn write_arrays(path: &Path, outs: &[(String, ArrayD<f32>)]) -> Result<String, String> {
    let shown = crate::diag::escape_controls(&path.display().to_string()).into_owned();
    if ext(path) == "npz" {
        let owned: Vec<(Vec<usize>, Vec<f32>)> = outs
            .iter()
            .map(|(_, y)| (y.shape().to_vec(), y.iter().copied().collect()))
            .collect();
        let members: Vec<(&str, crate::io::npy::NpzArray<'_>)> = outs
            .iter()
            .zip(&owned)
            .map(|((n, _), (shape, v))| (n.as_str(), crate::io::npy::NpzArray::F32(shape, v)))
            .collect();
        crate::io::npy::write_arrays(path, &members).map_err(|e| e.to_string())?;
        let list: Vec<String> = outs
            .iter()
            .map(|(n, y)| format!("{n} {:?}", y.shape()))
            .collect();
        Ok(format!("wrote {shown} ({})", list.join(", ")))
    } else {
        let y = &outs[0].1;
        crate::io::npy::write_f32(path, y).map_err(|e| e.to_string())?;
        Ok(format!("wrote {shown} ({:?})", y.shape()))
    }
}

/// The outputs `--output-image` can draw (`[C, H, W]` per sample), or the usage error for a
/// model that has none: checked before anything runs.
pub fn check_picture(lg: &LayerGraph) -> Result<(), String> {
    if lg
        .outputs
        .iter()
        .any(|&(_, n)| lg.nodes[n].shape.len() == 3)
    {
        return Ok(());
    }
    let maps: Vec<&str> = lg
        .nodes
        .iter()
        .filter(|n| n.shape.len() == 3 && !matches!(n.op, Op::Input { .. }))
        .map(|n| n.path.as_str())
        .collect();
    let outs: Vec<String> = lg
        .outputs
        .iter()
        .map(|(name, n)| {
            format!(
                "`{name}` {}",
                crate::layer_graph::show_shape(&lg.nodes[*n].shape)
            )
        })
        .collect();
    Err(format!(
        "error: --output-image draws feature maps [C, H, W], and the outputs here are not ({}); {}",
        outs.join(", "),
        match maps.last() {
            Some(l) => format!("choose a layer that makes one with --layer, e.g. `--layer {l}`"),
            None => "this model has no layer that makes one".into(),
        }
    ))
}

/// Draws every `[N, C, H, W]` output as a grid (see the module documentation). Returns the
/// line to print.
pub fn write_picture(
    path: &Path,
    outs: &[(String, ArrayD<f32>)],
    rgb: bool,
) -> Result<String, String> {
    let maps: Vec<&(String, ArrayD<f32>)> = outs.iter().filter(|(_, y)| y.ndim() == 4).collect();
    let several = maps.len() > 1;
    let mut tiles = Vec::new();
    let mut per_row = 0;
    let mut rows = 0;
    for (name, y) in &maps {
        let [n, c, h, w] = [y.shape()[0], y.shape()[1], y.shape()[2], y.shape()[3]];
        let prefix = |i: usize| match (several, n > 1) {
            (false, false) => String::new(),
            (false, true) => format!("{i}:"),
            (true, false) => format!("{name} "),
            (true, true) => format!("{name}[{i}] "),
        };
        for (i, sample) in y.axis_iter(Axis(0)).enumerate() {
            rows += 1;
            if rgb && c == 3 {
                per_row = per_row.max(1);
                let label = prefix(i).trim_end_matches([':', ' ']).to_string();
                tiles.push(Tile {
                    pixels: sample.iter().copied().collect(),
                    channels: 3,
                    height: h,
                    width: w,
                    label,
                });
                continue;
            }
            per_row = per_row.max(c);
            for (ch, plane) in sample.axis_iter(Axis(0)).enumerate() {
                tiles.push(Tile {
                    pixels: plane.iter().copied().collect(),
                    channels: 1,
                    height: h,
                    width: w,
                    label: format!("{}{ch}", prefix(i)),
                });
            }
        }
    }
    // One row per sample and output when the rows are short; a near-square grid otherwise.
    let columns = if rows > 1 && per_row <= 16 && !(rgb && per_row == 1) {
        per_row
    } else {
        0
    };
    crate::picture::write_grid(path, &tiles, columns, Normalize::MinMaxPerTile)
        .map_err(|e| e.to_string())?;
    let shown = crate::diag::escape_controls(&path.display().to_string()).into_owned();
    let skipped: Vec<String> = outs
        .iter()
        .filter(|(_, y)| y.ndim() != 4)
        .map(|(n, y)| format!("`{n}` {:?}", &y.shape()[1..]))
        .collect();
    let note = if skipped.is_empty() {
        String::new()
    } else {
        format!("; not feature maps, not drawn: {}", skipped.join(", "))
    };
    Ok(format!("wrote {shown} ({} tiles{note})", tiles.len()))
}

/// Classes by how often they were counted, most first (ties by class), as `3 (12), 0 (7)`:
/// the first ten, then `, and N more classes`.
pub(crate) fn class_counts(counts: &[usize]) -> String {
    let mut by: Vec<(usize, usize)> = counts
        .iter()
        .copied()
        .enumerate()
        .filter(|&(_, c)| c > 0)
        .collect();
    by.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let shown: Vec<String> = by
        .iter()
        .take(10)
        .map(|(c, k)| format!("{c} ({k})"))
        .collect();
    let rest = by.len().saturating_sub(10);
    format!(
        "{}{}",
        shown.join(", "),
        if rest > 0 {
            format!(", and {rest} more classes")
        } else {
            String::new()
        }
    )
}
