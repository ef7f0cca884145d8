//! The detection commands of the CLI: `netc detect` and `netc anchors`.
//!
//! In: a YOLO spec (a grid head and a `yolo` loss in its `train` section, which gives the
//! anchors and classes: [`Detector::of`]), its weights (a checkpoint or a safetensors file) and
//! images or a detection dataset. Out:
//!
//! - `netc detect --input IMG...`: each image's detections (decoded, score threshold,
//!   per-class NMS: [`crate::detect::decode`]) printed, written as JSON with boxes in the
//!   image's pixels (`--output`), and drawn on the image at its own size (`--draw`,
//!   [`crate::picture::write_detections`]). Images are stretched to the model's input, as
//!   Darknet does, so boxes (fractions of the image) map back to the original.
//! - `netc detect --data D`: mAP@0.5 (VOC, all-point) over D's test images, with each class's
//!   AP: printed, and the JSON line's `map50`.
//! - `netc anchors --data D --k K`: anchors by k-means on IoU distance over D's training
//!   boxes ([`crate::detect::anchors`]), in pixels of the spec's input, ready to paste into
//!   its `yolo(...)` term, with their mean IoU beside the spec's own anchors'.
//!
//! Exit codes as every command: 0 ok, 1 bad input, 2 usage.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::fail;
use crate::data::{Loader, LoaderOptions, Normalize};
use crate::detect::Detection;
use crate::detect::anchors::{kmeans_anchors, mean_best_iou};
use crate::detect::boxes::scale_box;
use crate::detect::decode::DecodeOptions;
use crate::detect::evaluate::{Detector, MapMeter};
use crate::io::weights::Weights;
use crate::model::{CompileOptions, compile, params_f32};
use crate::spec::Spec;

/// `netc detect`'s flags.
#[derive(clap::Args, Debug, Clone)]
pub struct DetectArgs {
    /// The trained weights: a checkpoint or a safetensors file (seeded random weights when
    /// absent, with a warning: for trying the command only).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Images to detect objects in (PNG/JPEG; repeatable).
    #[arg(long, num_args = 1.., required_unless_present = "data")]
    pub input: Vec<PathBuf>,
    /// Measure mAP@0.5 over a detection dataset's test images instead (a YOLO-format folder,
    /// or `detection` for the synthetic set).
    #[arg(long, conflicts_with_all = ["input", "output", "draw"])]
    pub data: Option<String>,
    /// Write the detections as JSON (boxes in the image's pixels: x1, y1, x2, y2).
    #[arg(long, value_name = "FILE.json")]
    pub output: Option<PathBuf>,
    /// Draw the detections on the image (one --input) and write it as PNG.
    #[arg(long, value_name = "FILE.png")]
    pub draw: Option<PathBuf>,
    /// Keep detections whose score (objectness × class probability) is above this.
    #[arg(long, default_value_t = 0.25, value_parser = unit_interval)]
    pub score: f32,
    /// Per-class NMS: drop a box whose IoU with a better box of its class is above this.
    #[arg(long, default_value_t = 0.45, value_parser = unit_interval)]
    pub iou: f32,
    /// At most this many detections per image.
    #[arg(long, default_value_t = 100)]
    pub max: usize,
    /// Class names, one per line (Darknet's obj.names / a YOLO folder's classes.txt). By
    /// default the names of the spec's `data:` when it has them.
    #[arg(long, value_name = "FILE")]
    pub names: Option<PathBuf>,
    #[arg(long, default_value_t = crate::cli::default_threads(), value_parser = crate::cli_values::threads)]
    pub threads: usize,
    /// The most memory to use, e.g. `8G`, `512M`.
    #[arg(long, value_name = "SIZE", value_parser = crate::budget::parse_size)]
    pub memory_limit: Option<u64>,
}

/// `netc anchors`' flags.
#[derive(clap::Args, Debug, Clone)]
pub struct AnchorsArgs {
    /// The detection data whose training boxes are clustered (default: the spec's `data:`).
    #[arg(long)]
    pub data: Option<String>,
    /// The number of anchors.
    #[arg(long, default_value_t = 5)]
    pub k: usize,
    /// The seed of k-means++'s first centres.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

fn unit_interval(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not in [0, 1]"))
    }
}

/// The spec's detector, or an error saying how a spec becomes one.
fn detector(spec: &Spec) -> Result<Detector, String> {
    let lg = &spec.graph;
    let objective = crate::train::graph::objective_of(lg);
    match Detector::of(lg, &objective) {
        Some(d) => d,
        None => Err(format!(
            "`{}` has no `yolo` loss, which says how its output is read (the grid head, its \
             anchors and classes)\n  help: add e.g. `loss: yolo(output=grid, anchors=[[14, \
             14], [24, 30]])` to its train section (see specs/yolo_tiny.net)",
            lg.name
        )),
    }
}

/// The data source: the flag, else the spec's `data:`.
fn source(spec: &Spec, flag: &Option<String>) -> Result<String, String> {
    flag.clone()
        .or_else(|| spec.graph.train.as_ref().and_then(|t| t.data.clone()))
        .ok_or_else(|| {
            "no detection data: pass --data DIR (a YOLO-format folder) or --data detection"
                .to_string()
        })
}

fn show(p: &Path) -> String {
    crate::diag::escape_controls(&p.display().to_string()).into_owned()
}

/// `netc anchors SPEC [--data D] [--k K]`
pub fn anchors_cmd(spec: &Spec, args: &AnchorsArgs) -> ExitCode {
    let det = match detector(spec) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let source = match source(spec, &args.data) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let data = match crate::data::open(&source, &spec.graph.inputs[0]) {
        Ok(d) => d.train,
        Err(e) => return fail(e),
    };
    let [w, h] = det.input_size;
    let sizes: Vec<[f32; 2]> = data
        .objects
        .iter()
        .flatten()
        .map(|o| [o.w * w as f32, o.h * h as f32])
        .collect();
    if sizes.is_empty() {
        return fail(format!(
            "{} has no annotated boxes to cluster\n  help: give a YOLO-format folder (images \
             with .txt labels beside them) or --data detection",
            data.name
        ));
    }
    let fit = match kmeans_anchors(&sizes, args.k, args.seed) {
        Ok(f) => f,
        Err(e) => return fail(format!("--k {}: {e}", args.k)),
    };
    let list: Vec<String> = fit
        .anchors
        .iter()
        .map(|[a, b]| format!("[{}, {}]", a.round(), b.round()))
        .collect();
    println!(
        "{} anchors from {} boxes of {} ({w}×{h} input; k-means on 1 − IoU, {} iterations{}):",
        fit.anchors.len(),
        crate::show::thousands(sizes.len() as u64),
        data.name,
        fit.iterations,
        if fit.converged { "" } else { ", not converged" }
    );
    println!("  anchors=[{}]", list.join(", "));
    println!(
        "  mean IoU of each box with its best anchor: {:.3} (the spec's {} anchors: {:.3})",
        fit.mean_iou,
        det.anchors.len(),
        mean_best_iou(&sizes, &det.anchors)
    );
    if fit.anchors.len() != det.anchors.len() {
        println!(
            "  note: the spec's head has {} anchors; with {} it needs {} channels ({} × (5 + {}))",
            det.anchors.len(),
            fit.anchors.len(),
            fit.anchors.len() * (5 + det.classes),
            fit.anchors.len(),
            det.classes
        );
    }
    ExitCode::SUCCESS
}

/// The weights of `--weights` (a checkpoint or a weights file), or seeded ones with a warning.
fn weights(spec: &Spec, path: Option<&Path>) -> Result<Weights, String> {
    match path {
        Some(p) => crate::train::checkpoint::load(p, &spec.graph)
            .map(|c| c.weights)
            .map_err(|e| e.to_string()),
        None => {
            eprintln!("warning: no --weights: detections of randomly initialized weights (seed 0)");
            Ok(Weights::init(&spec.graph, 0))
        }
    }
}

/// Class names: `--names`, else the names of the spec's data when it has them.
fn class_names(spec: &Spec, args: &DetectArgs, classes: usize) -> Result<Vec<String>, String> {
    if let Some(p) = &args.names {
        return match crate::data::yolo::read_classes(p).map_err(|e| e.to_string())? {
            Some(n) => Ok(n),
            None => Err(format!("--names {}: no such file", show(p))),
        };
    }
    let data = spec.graph.train.as_ref().and_then(|t| t.data.clone());
    Ok(match data.as_deref() {
        Some("detection") => crate::data::bundled::CLASS_NAMES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        Some(dir) => crate::data::yolo::read_classes(&Path::new(dir).join("classes.txt"))
            .ok()
            .flatten()
            .unwrap_or_default(),
        None => Vec::new(),
    }
    .into_iter()
    .chain((0..classes).map(|c| c.to_string()))
    .take(classes.max(1))
    .collect())
}

/// `netc detect SPEC ...`
pub fn detect_cmd(spec: &Spec, args: &DetectArgs) -> ExitCode {
    let det = match detector(spec) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let w = match weights(spec, args.weights.as_deref()) {
        Ok(w) => w,
        Err(e) => return fail(e),
    };
    if args.data.is_some() {
        return match evaluate(spec, &det, &w, args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        };
    }
    if args.draw.is_some() && args.input.len() != 1 {
        eprintln!("error: --draw draws one image: give one --input");
        return ExitCode::from(2);
    }
    let names = match class_names(spec, args, det.classes) {
        Ok(n) => n,
        Err(e) => return fail(e),
    };
    match detect_images(spec, &det, &w, args, &names) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn detect_images(
    spec: &Spec,
    det: &Detector,
    weights: &Weights,
    args: &DetectArgs,
    names: &[String],
) -> Result<(), String> {
    let input = &spec.graph.inputs[0];
    let mut exe = compile(
        spec,
        &params_f32(weights),
        CompileOptions {
            batch: 1,
            threads: args.threads,
            memory_limit: args.memory_limit,
        },
    )?;
    let options = DecodeOptions {
        score_threshold: args.score,
        iou_threshold: args.iou,
        max_detections: Some(args.max),
        clip: true,
    };
    let mut all = Vec::new();
    for path in &args.input {
        let x = crate::io::image::load_image_stretched(path, input).map_err(|e| e.to_string())?;
        let (iw, ih) = crate::io::image::image_size(path).map_err(|e| e.to_string())?;
        let x: Vec<f32> = x.iter().copied().collect();
        exe.run_in_place(&[(input.name.as_str(), &x)])?;
        let values = exe
            .output(&det.output)
            .ok_or_else(|| format!("no output `{}`", det.output))?;
        let found = det
            .decode_batch(values, &options)?
            .pop()
            .unwrap_or_default();
        println!("{}: {}", show(path), summary(&found, names, iw, ih));
        if let Some(out) = &args.draw {
            draw(path, out, &found, names, iw, ih)?;
            println!("wrote {}", show(out));
        }
        all.push(serde_json::json!({
            "image": path.display().to_string(),
            "width": iw,
            "height": ih,
            "detections": found.iter().map(|d| serde_json::json!({
                "class": d.class,
                "name": names.get(d.class).cloned().unwrap_or_else(|| d.class.to_string()),
                "score": d.score,
                "box": scale_box(d.bbox, iw as f32, ih as f32),
            })).collect::<Vec<_>>(),
        }));
    }
    if let Some(out) = &args.output {
        let value = if all.len() == 1 {
            all.pop().unwrap_or_default()
        } else {
            serde_json::Value::Array(all)
        };
        crate::io::write_atomic(out, |f| {
            serde_json::to_writer_pretty(&mut *f, &value).map_err(std::io::Error::other)?;
            writeln!(f)
        })
        .map_err(|e| e.to_string())?;
        println!("wrote {}", show(out));
    }
    Ok(())
}

/// `3 objects: Trouser 0.91 at (12, 40)–(50, 88), ...`
fn summary(found: &[Detection], names: &[String], w: u32, h: u32) -> String {
    if found.is_empty() {
        return "no objects above the score threshold".to_string();
    }
    let items: Vec<String> = found
        .iter()
        .map(|d| {
            let [x1, y1, x2, y2] = scale_box(d.bbox, w as f32, h as f32);
            format!(
                "{} {:.2} at ({:.0}, {:.0})–({:.0}, {:.0})",
                names.get(d.class).map(String::as_str).unwrap_or("?"),
                d.score,
                x1,
                y1,
                x2,
                y2
            )
        })
        .collect();
    format!(
        "{} object{}: {}",
        found.len(),
        if found.len() == 1 { "" } else { "s" },
        items.join(", ")
    )
}

/// Draws `found` on the image at `path`, at its own size, into the PNG `out`.
fn draw(
    path: &Path,
    out: &Path,
    found: &[Detection],
    names: &[String],
    w: u32,
    h: u32,
) -> Result<(), String> {
    let info = crate::layer_graph::InputInfo {
        name: "image".into(),
        node: 0,
        shape: vec![3, h as usize, w as usize],
        mean: Vec::new(),
        std: Vec::new(),
    };
    let x = crate::io::image::load_image_stretched(path, &info).map_err(|e| e.to_string())?;
    let tile = crate::picture::Tile {
        pixels: x.iter().copied().collect(),
        channels: 3,
        height: h as usize,
        width: w as usize,
        label: String::new(),
    };
    crate::picture::write_detections(out, &tile, crate::picture::Normalize::Clamp01, found, names)
        .map_err(|e| e.to_string())
}

/// `netc detect --data D`: mAP@0.5 over D's test images.
fn evaluate(
    spec: &Spec,
    det: &Detector,
    weights: &Weights,
    args: &DetectArgs,
) -> Result<(), String> {
    let input = &spec.graph.inputs[0];
    let source = source(spec, &args.data)?;
    let data = crate::data::open(&source, input)
        .map_err(|e| e.to_string())?
        .test;
    if data.objects.is_empty() {
        return Err(format!(
            "{} has no annotated boxes to measure against\n  help: give a YOLO-format folder \
             (images with .txt labels beside them) or --data detection",
            data.name
        ));
    }
    if let Some((i, o)) = data
        .objects
        .iter()
        .enumerate()
        .find_map(|(i, objs)| objs.iter().find(|o| o.class >= det.classes).map(|o| (i, o)))
    {
        let name = data
            .class_names
            .get(o.class)
            .map_or(String::new(), |n| format!(" ({n})"));
        return Err(format!(
            "{} image {i}: class {}{name} is beyond the model's {} classes\n  help: measure a \
             model trained on this data's classes (e.g. --set classes={})",
            data.name,
            o.class,
            det.classes,
            data.classes.max(o.class + 1)
        ));
    }
    let names = if data.class_names.is_empty() {
        class_names(spec, args, det.classes)?
    } else {
        data.class_names.clone()
    };
    let batch = 32.min(data.len()).max(1);
    let loader = Loader::new(
        Arc::new(data),
        Normalize::from_input(input).map_err(|e| e.to_string())?,
        LoaderOptions::eval(batch),
    )
    .map_err(|e| e.to_string())?;
    let params = params_f32(weights);
    let mut exes: Vec<(usize, crate::runtime::Executable)> = Vec::new();
    let mut meter = MapMeter::new(det.clone());
    let t0 = std::time::Instant::now();
    for b in loader.epoch(0) {
        if !exes.iter().any(|(n, _)| *n == b.len) {
            let opts = CompileOptions {
                batch: b.len,
                threads: args.threads,
                memory_limit: args.memory_limit,
            };
            exes.push((b.len, compile(spec, &params, opts)?));
        }
        let (_, exe) = exes
            .iter_mut()
            .find(|(n, _)| *n == b.len)
            .ok_or("compiled above")?;
        exe.run_in_place(&[(input.name.as_str(), &b.x)])?;
        let values = exe
            .output(&det.output)
            .ok_or_else(|| format!("no output `{}`", det.output))?;
        meter.add(values, &b.objects)?;
    }
    let result = meter.finish()?;
    println!(
        "mAP@0.5 over {} test images ({:.1} s): {}",
        crate::show::thousands(meter.images() as u64),
        t0.elapsed().as_secs_f64(),
        result
            .map
            .map_or("- (no ground-truth boxes)".to_string(), |m| format!(
                "{m:.4}"
            ))
    );
    let mut per_class = serde_json::Map::new();
    for (c, ap) in result.per_class.iter().enumerate() {
        let name = names.get(c).cloned().unwrap_or_else(|| c.to_string());
        match ap {
            Some(ap) => {
                println!(
                    "  {name:<14} AP {ap:.4}  ({} boxes)",
                    result.ground_truth[c]
                );
                per_class.insert(name, serde_json::json!(ap));
            }
            None => println!("  {name:<14} -       (no boxes)"),
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "map50": result.map,
            "images": meter.images(),
            "per_class": per_class,
        })
    );
    Ok(())
}
