//! A task: how a batch of data becomes the inputs of the training graph, and what is
//! measured (DESIGN §9: a task is data + targets + loss + metrics; there is one trainer).
//!
//! In: the model ([`LayerGraph`]), its [`Objective`] and the data's description (the
//! dataset's fields and classes). Out: per batch, the named buffers the compiled step (or the
//! evaluation model) takes — model inputs from the images or from fields named after them,
//! each loss term's targets from the labels (one-hot for cross-entropy) or from the field
//! named after the output it reads — and, per step, the metric sums that fit the objective:
//! top-1 (and top-5 when there are more than 5 classes) for a cross-entropy output, MSE and
//! MAE for a regression output.
//!
//! Detection data (a dataset with `objects`) also give targets derived from each image's
//! objects (`detect::encode`): `object`, `box`, `landmarks` and the class of the first object
//! for a localization model, and the dense grid targets of a `yolo` term. A term's mask
//! (`mask=object`) is the data's values of that name, `[N]`.

use std::collections::BTreeMap;

use crate::data::{Batch, Dataset};
use crate::detect::encode::{Derived, Grid, one_hot_first};
use crate::layer_graph::LayerGraph;
use crate::train::checkpoint::EpochSums;
use crate::train_config::{Loss, Objective};

/// Where one graph input's values come from.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    /// The batch's images.
    Images,
    /// The batch's field of that name.
    Field(String),
    /// One-hot rows of the labels, `classes` wide.
    OneHot(usize),
    /// The labels as 0/1 values (binary cross-entropy on a one-value output).
    Binary,
    /// A localization target derived from the batch's objects.
    Derived(Derived),
    /// One-hot rows, `classes` wide, of the class of each sample's first object.
    FirstClass(usize),
    /// A YOLO grid head's targets, encoded from the batch's objects.
    Grid(Grid),
}

/// What is measured on one model output.
#[derive(Debug, Clone, PartialEq)]
enum Metric {
    /// Class scores against the labels.
    Classes { output: String, classes: usize },
    /// A prediction against the field of targets.
    Regression { output: String, field: String },
    /// Class scores against the class of each sample's first object, over the samples with
    /// an object (detection data): `<output>_accuracy`.
    ObjectClasses { output: String },
    /// A presence logit against whether the sample has an object (detection data):
    /// `<output>_accuracy`, the logit's sign taken as the answer.
    Presence { output: String },
    /// A box `cx, cy, w, h` against the first object's, over the samples with an object
    /// (detection data): `<output>_iou`, the mean IoU.
    BoxIou { output: String },
}

/// How batches feed a model and what its steps measure.
#[derive(Debug, Clone)]
pub struct Task {
    feeds: Vec<(String, Source)>,
    metrics: Vec<Metric>,
    /// The data's name, for messages naming a sample.
    data: String,
    /// A YOLO model's detector: its detections are scored as mAP@0.5 on evaluation.
    detector: Option<crate::detect::evaluate::Detector>,
}

impl Task {
    /// The task of training `lg` on `objective` with batches of `data` (its fields and
    /// classes; the samples are not read). Errors say which input or target has no data and
    /// how to give it.
    pub fn new(lg: &LayerGraph, objective: &Objective, data: &Dataset) -> Result<Task, String> {
        let mut feeds = Vec::new();
        let field = |name: &str| data.fields.iter().find(|f| f.name == name);
        let mut images_used = false;
        for input in &lg.inputs {
            let size: usize = input.shape.iter().product();
            if let Some(f) = field(&input.name) {
                if f.width() != size {
                    return Err(format!(
                        "{}: `{}` holds {} values per sample, but the model's input `{}` is {}",
                        f.source,
                        f.name,
                        f.width(),
                        input.name,
                        crate::io::show_shape(&input.shape)
                    ));
                }
                feeds.push((input.name.clone(), Source::Field(input.name.clone())));
            } else if !images_used {
                images_used = true;
                feeds.push((input.name.clone(), Source::Images));
            } else {
                return Err(format!(
                    "the model's input `{}` has no data: {} feeds only the first input \
                     without an array of its own\n  help: give the .npz an array `{}` of shape \
                     [N, {}]",
                    input.name,
                    data.name,
                    input.name,
                    input
                        .shape
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        let mut metrics = Vec::new();
        let detection = !data.objects.is_empty();
        for term in &objective.terms {
            let Some(target) = term.target_input() else {
                continue;
            };
            let output = term
                .outputs
                .first()
                .cloned()
                .or_else(|| lg.outputs.first().map(|(n, _)| n.clone()))
                .ok_or("the model has no outputs")?;
            let node = lg
                .outputs
                .iter()
                .find(|(n, _)| *n == output)
                .map(|(_, v)| *v)
                .ok_or_else(|| format!("the model has no output `{output}`"))?;
            let shape = &lg.nodes[node].shape;
            let width: usize = shape.iter().product();
            let source = match &term.loss {
                Loss::CrossEntropy { .. } if detection && field(&output).is_none() => {
                    let k = crate::loss::class_count(shape).unwrap_or(width);
                    metrics.push(Metric::ObjectClasses {
                        output: output.clone(),
                    });
                    Source::FirstClass(k)
                }
                Loss::Yolo(y) => {
                    if !detection {
                        return Err(format!(
                            "the `{term}` loss needs object annotations (boxes), and {} has \
                             none\n  help: train on detection data: a YOLO-format folder or \
                             `data: \"detection\"`",
                            data.name
                        ));
                    }
                    let input = lg.inputs.first().ok_or("the model has no inputs")?;
                    let (&[_, h, w], &[_, sh, sw]) = (input.shape.as_slice(), shape.as_slice())
                    else {
                        return Err(format!(
                            "the `{term}` loss needs an image input [C, H, W] and a grid head \
                             [A·(5+C), S_h, S_w]; the model has {} and {}",
                            crate::io::show_shape(&input.shape),
                            crate::io::show_shape(shape)
                        ));
                    };
                    let grid = Grid::new(&y.anchors, [h, w], y.classes, [sh, sw]);
                    if grid.channels() != width / (sh * sw).max(1) {
                        return Err(format!(
                            "the `{term}` loss reads {} channels; the output `{output}` is {}",
                            grid.channels(),
                            crate::io::show_shape(shape)
                        ));
                    }
                    Source::Grid(grid)
                }
                Loss::CrossEntropy { .. } => {
                    let k = crate::loss::class_count(shape).unwrap_or(width);
                    if data.classes == 0 {
                        return Err(format!(
                            "the `{term}` loss needs class labels, and {} has none\n  help: \
                             give the .npz an array `y` of class numbers",
                            data.name
                        ));
                    }
                    metrics.push(Metric::Classes {
                        output: output.clone(),
                        classes: k,
                    });
                    Source::OneHot(k)
                }
                Loss::Contrastive { .. } => {
                    return Err(format!(
                        "the `{term}` loss needs pairs of samples, and this model is not \
                         trained on pairs (a pair model has two inputs of one shape)"
                    ));
                }
                _ => match field(&output) {
                    Some(f) => {
                        let want = match term.loss {
                            Loss::Style => shape.first().map_or(0, |c| c * c),
                            _ => width,
                        };
                        if f.width() != want {
                            return Err(format!(
                                "{}: `{}` holds {} values per sample, but the `{term}` loss \
                                 compares the output `{output}` ({}) with {want}\n  help: \
                                 give `{}` the shape [N, {}]",
                                f.source,
                                f.name,
                                f.width(),
                                crate::io::show_shape(shape),
                                f.name,
                                if matches!(term.loss, Loss::Style) {
                                    format!("{c}, {c}", c = shape[0])
                                } else {
                                    shape
                                        .iter()
                                        .map(|d| d.to_string())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                }
                            ));
                        }
                        if matches!(term.loss, Loss::Mse | Loss::L1) {
                            metrics.push(Metric::Regression {
                                output: output.clone(),
                                field: f.name.clone(),
                            });
                        }
                        Source::Field(f.name.clone())
                    }
                    None if detection && Derived::of(&output, width).is_some() => {
                        match Derived::of(&output, width).expect("checked") {
                            Ok(d) => {
                                let output = output.clone();
                                let m = match d {
                                    Derived::Object => Some(Metric::Presence { output }),
                                    Derived::Box => Some(Metric::BoxIou { output }),
                                    Derived::Landmarks(_) => None,
                                };
                                metrics.extend(m.filter(|m| !metrics.contains(m)));
                                Source::Derived(d)
                            }
                            Err(want) => {
                                return Err(format!(
                                    "the `{term}` loss compares the output `{output}` ({}) with \
                                     the targets detection data derive for `{output}`, which \
                                     are {want} per sample",
                                    crate::io::show_shape(shape)
                                ));
                            }
                        }
                    }
                    None if term.loss == Loss::BceWithLogits && width == 1 && data.classes > 0 => {
                        Source::Binary
                    }
                    None => {
                        let have: Vec<String> = data
                            .fields
                            .iter()
                            .map(|f| format!("`{}`", f.name))
                            .collect();
                        return Err(format!(
                            "the `{term}` loss needs targets for the output `{output}` ({}), \
                             and {} has no values named `{output}`{}\n  help: give the data \
                             an array `{output}` of shape [N, {}] (an .npz key; for an image \
                             folder a column of its targets.csv)",
                            crate::io::show_shape(shape),
                            data.name,
                            if have.is_empty() {
                                String::new()
                            } else {
                                format!(" (it has {})", have.join(", "))
                            },
                            shape
                                .iter()
                                .map(|d| d.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                },
            };
            if !feeds.iter().any(|(n, _)| *n == target) {
                feeds.push((target, source));
            }
            if let (Some(input), Some(m)) = (term.mask_input(), &term.mask) {
                let source = match field(m) {
                    Some(f) if f.width() == 1 => Source::Field(f.name.clone()),
                    Some(f) => {
                        return Err(format!(
                            "{}: `{m}` holds {} values per sample, but the mask of the \
                             `{term}` loss is one value (0 or 1) per sample",
                            f.source,
                            f.width()
                        ));
                    }
                    None if detection && m == "object" => Source::Derived(Derived::Object),
                    None => {
                        return Err(format!(
                            "the `{term}` loss is masked by `{m}`, and {} has no values named \
                             `{m}`\n  help: give the data an array `{m}` of shape [N] with 0/1 \
                             values (detection data derive `object`: 1 where an image has an \
                             object)",
                            data.name
                        ));
                    }
                };
                if !feeds.iter().any(|(n, _)| *n == input) {
                    feeds.push((input, source));
                }
            }
        }
        let detector = crate::detect::evaluate::Detector::of(lg, objective).transpose()?;
        Ok(Task {
            feeds,
            metrics,
            data: data.name.clone(),
            detector,
        })
    }

    /// The graph inputs this task fills, in order.
    pub fn inputs(&self) -> impl Iterator<Item = &str> {
        self.feeds.iter().map(|(n, _)| n.as_str())
    }

    /// The detector of a YOLO model, whose detections evaluation scores as `map50`.
    pub fn detector(&self) -> Option<&crate::detect::evaluate::Detector> {
        self.detector.as_ref()
    }

    /// Whether the task measures classification accuracy.
    pub fn classifies(&self) -> bool {
        self.metrics
            .iter()
            .any(|m| matches!(m, Metric::Classes { .. }))
    }

    /// Fills `bufs` (one per [`Task::inputs`], reused between batches) from `batch`. A label
    /// outside the classes is an error naming the sample (`what` and its index from `first`).
    pub fn fill(
        &self,
        batch: &Batch,
        bufs: &mut Vec<Vec<f32>>,
        what: &str,
        first: usize,
    ) -> Result<(), String> {
        bufs.resize_with(self.feeds.len(), Vec::new);
        let name = |i: usize| match batch.indices.get(i) {
            Some(&k) => format!("{}: sample {k}", self.data),
            None => format!("{what} {}", first + i),
        };
        let objects = || {
            if batch.objects.len() == batch.len {
                Ok(&batch.objects)
            } else {
                Err(format!(
                    "{}: the batch has no object annotations for its {} samples",
                    self.data, batch.len
                ))
            }
        };
        for ((_, source), buf) in self.feeds.iter().zip(bufs.iter_mut()) {
            buf.clear();
            match source {
                Source::Images => buf.extend_from_slice(&batch.x),
                Source::Field(f) => buf.extend_from_slice(
                    batch
                        .field(f)
                        .ok_or_else(|| format!("the batch has no values `{f}`"))?,
                ),
                Source::OneHot(k) => one_hot_into(buf, &batch.labels, *k, what, first)?,
                Source::Binary => {
                    for (i, &l) in batch.labels.iter().enumerate() {
                        if !(0..=1).contains(&l) {
                            return Err(format!(
                                "label {l} of {what} {}: binary cross-entropy on one value \
                                 takes labels 0 and 1",
                                first + i
                            ));
                        }
                        buf.push(l as f32);
                    }
                }
                Source::Derived(d) => d.fill(objects()?, buf, &name)?,
                Source::FirstClass(k) => one_hot_first(objects()?, *k, buf, &name)?,
                Source::Grid(grid) => grid.encode(objects()?, buf, &name)?,
            }
        }
        Ok(())
    }

    /// The feeds for a compiled model: `(input name, values)` pairs over `bufs`.
    pub fn feed<'a>(&'a self, bufs: &'a [Vec<f32>]) -> Vec<(&'a str, &'a [f32])> {
        self.feeds
            .iter()
            .zip(bufs)
            .map(|((n, _), b)| (n.as_str(), b.as_slice()))
            .collect()
    }

    /// Adds a step's figures to `sums`: `loss` (the batch mean) and each metric of the
    /// outputs `output(name)` against `batch`.
    pub fn measure<'o>(
        &self,
        batch: &Batch,
        loss: f32,
        output: impl Fn(&str) -> Option<&'o [f32]>,
        sums: &mut EpochSums,
    ) {
        let n = batch.len;
        sums.loss_sum += loss as f64 * n as f64;
        sums.seen += n as u64;
        for m in &self.metrics {
            let several = self.several(m);
            match m {
                Metric::Classes { output: o, classes } => {
                    let Some(scores) = output(o) else { continue };
                    let (top1, top5) = count_top(scores, &batch.labels);
                    if several {
                        *sums.extra.entry(format!("{o}_correct")).or_default() += top1 as f64;
                    } else {
                        sums.correct += top1 as u64;
                    }
                    if *classes > 5 {
                        let key = prefixed(several, o, "correct5");
                        *sums.extra.entry(key).or_default() += top5 as f64;
                    }
                }
                Metric::Regression { output: o, field } => {
                    let (Some(pred), Some(target)) = (output(o), batch.field(field)) else {
                        continue;
                    };
                    let (mut sq, mut abs) = (0f64, 0f64);
                    for (&p, &t) in pred.iter().zip(target) {
                        let d = (p - t) as f64;
                        sq += d * d;
                        abs += d.abs();
                    }
                    *sums
                        .extra
                        .entry(prefixed(several, o, "sq_err"))
                        .or_default() += sq;
                    *sums
                        .extra
                        .entry(prefixed(several, o, "abs_err"))
                        .or_default() += abs;
                    *sums.extra.entry(prefixed(several, o, "elems")).or_default() +=
                        pred.len() as f64;
                }
                Metric::Presence { output: o } => {
                    let Some(logits) = output(o) else { continue };
                    for (objs, &l) in batch.objects.iter().zip(logits) {
                        let right = (l > 0.0) != objs.is_empty();
                        *sums.extra.entry(format!("{o}_right")).or_default() +=
                            f64::from(u8::from(right));
                        *sums.extra.entry(format!("{o}_images")).or_default() += 1.0;
                    }
                }
                Metric::BoxIou { output: o } => {
                    let Some(boxes) = output(o) else { continue };
                    for (objs, b) in batch.objects.iter().zip(boxes.chunks(4)) {
                        let (Some(t), [cx, cy, w, h]) = (objs.first(), b) else {
                            continue;
                        };
                        let p = crate::detect::boxes::cxcywh_to_xyxy([*cx, *cy, *w, *h]);
                        let iou = crate::detect::boxes::iou(&p, &t.xyxy());
                        let iou = if iou.is_finite() { iou.max(0.0) } else { 0.0 };
                        *sums.extra.entry(format!("{o}_iou_sum")).or_default() += f64::from(iou);
                        *sums.extra.entry(format!("{o}_objects")).or_default() += 1.0;
                    }
                }
                Metric::ObjectClasses { output: o } => {
                    let Some(scores) = output(o) else { continue };
                    let k = scores.len() / n.max(1);
                    for (i, objs) in batch.objects.iter().enumerate().take(n) {
                        let Some(first) = objs.first() else { continue };
                        let row = &scores[i * k..(i + 1) * k];
                        let (top1, _) = count_top(row, &[first.class as i64]);
                        *sums.extra.entry(format!("{o}_object_correct")).or_default() +=
                            top1 as f64;
                        *sums.extra.entry(format!("{o}_objects")).or_default() += 1.0;
                    }
                }
            }
        }
    }

    /// Whether another output is measured the same way as `m`'s (its metric names then
    /// start with its output's name).
    fn several(&self, m: &Metric) -> bool {
        let same = |a: &Metric| std::mem::discriminant(a) == std::mem::discriminant(m);
        self.metrics.iter().filter(|a| same(a)).count() > 1
    }

    /// The metrics of `sums` by name: `accuracy`, `top5_accuracy`, `mse`, `mae` (each
    /// prefixed by the output's name and `_` when several outputs are measured the same way:
    /// `cls_accuracy`); on detection data, `<output>_accuracy` of a class head over the images
    /// with an object.
    pub fn summarize(&self, sums: &EpochSums) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        let seen = sums.seen.max(1) as f64;
        let get = |k: &str| sums.extra.get(k).copied().unwrap_or(0.0);
        for m in &self.metrics {
            let several = self.several(m);
            match m {
                Metric::Classes { output: o, classes } => {
                    let top1 = if several {
                        get(&format!("{o}_correct"))
                    } else {
                        sums.correct as f64
                    };
                    out.insert(prefixed(several, o, "accuracy"), top1 / seen);
                    if *classes > 5 {
                        out.insert(
                            prefixed(several, o, "top5_accuracy"),
                            get(&prefixed(several, o, "correct5")) / seen,
                        );
                    }
                }
                Metric::Presence { output: o } => {
                    let images = get(&format!("{o}_images")).max(1.0);
                    out.insert(format!("{o}_accuracy"), get(&format!("{o}_right")) / images);
                }
                Metric::BoxIou { output: o } => {
                    let objects = get(&format!("{o}_objects")).max(1.0);
                    out.insert(format!("{o}_iou"), get(&format!("{o}_iou_sum")) / objects);
                }
                Metric::ObjectClasses { output: o } => {
                    let objects = get(&format!("{o}_objects")).max(1.0);
                    out.insert(
                        format!("{o}_accuracy"),
                        get(&format!("{o}_object_correct")) / objects,
                    );
                }
                Metric::Regression { output: o, .. } => {
                    let elems = get(&prefixed(several, o, "elems")).max(1.0);
                    out.insert(
                        prefixed(several, o, "mse"),
                        get(&prefixed(several, o, "sq_err")) / elems,
                    );
                    out.insert(
                        prefixed(several, o, "mae"),
                        get(&prefixed(several, o, "abs_err")) / elems,
                    );
                }
            }
        }
        // Set by an evaluation pass only (see `train::evaluate`): mAP is not a sum over steps.
        if self.detector.is_some()
            && let Some(&v) = sums.extra.get(MAP50)
        {
            out.insert(MAP50.to_string(), v);
        }
        out
    }
}

/// The key of a detector's mAP@0.5 (VOC) in the metrics: `map50` in the JSON line.
pub const MAP50: &str = "map50";

fn prefixed(several: bool, output: &str, key: &str) -> String {
    if several {
        format!("{output}_{key}")
    } else {
        key.to_string()
    }
}

/// Fills `out` with one-hot rows (`labels.len() × classes`) for cross-entropy; a label outside
/// the classes is an error naming the sample (`what` and its index counted from `first`).
pub(crate) fn one_hot_into(
    out: &mut Vec<f32>,
    labels: &[i64],
    classes: usize,
    what: &str,
    first: usize,
) -> Result<(), String> {
    out.clear();
    out.resize(labels.len() * classes, 0.0);
    for (i, &l) in labels.iter().enumerate() {
        if l < 0 || l as usize >= classes {
            return Err(format!(
                "label {l} of {what} {} is not a class of this model (0..{classes})",
                first + i
            ));
        }
        out[i * classes + l as usize] = 1.0;
    }
    Ok(())
}

/// How many rows of `scores` (`[N, K]`, row-major) have their label as the largest value
/// (the first largest, as `torch.argmax`), and how many among their 5 largest (ties counted
/// as `torch.topk` breaks them: the lower index first).
pub fn count_top(scores: &[f32], labels: &[i64]) -> (usize, usize) {
    if labels.is_empty() {
        return (0, 0);
    }
    let k = scores.len() / labels.len();
    let (mut top1, mut top5) = (0, 0);
    for (i, &l) in labels.iter().enumerate() {
        let row = &scores[i * k..(i + 1) * k];
        let Some(&mine) = usize::try_from(l).ok().and_then(|l| row.get(l)) else {
            continue;
        };
        // Classes ranked above the label: larger scores, or equal scores at lower indices.
        let above = row
            .iter()
            .enumerate()
            .filter(|&(j, &v)| v > mine || (v == mine && (j as i64) < l))
            .count();
        if above == 0 {
            top1 += 1;
        }
        if above < 5 {
            top5 += 1;
        }
    }
    (top1, top5)
}
