//! A YOLO model's detector (its grid head, anchors and classes, read from the spec's `yolo`
//! loss) and the mAP of its detections over a dataset: what `netc train` reports after each
//! epoch (`map50`) and what `netc detect` decodes and `netc detect --data` measures.
//!
//! In: a layer graph and its objective (for [`Detector::of`]); per batch, the head's values
//! `[N, A·(5+C), S_h, S_w]` and the images' annotated objects (for [`MapMeter`]). Out:
//! detections per image (boxes as fractions of the image), and the mean average precision at
//! IoU 0.5 (VOC, all-point interpolation: [`super::map`]) with each class's AP.

use super::decode::{DecodeOptions, GridHead, check_head, decode};
use super::map::{MAP50_IOU, MeanAp, mean_average_precision};
use super::{Detection, Object};
use crate::layer_graph::LayerGraph;
use crate::train_config::{Loss, Objective};

/// How to read a model's grid head: the output, its shape, the anchors and classes of the
/// spec's `yolo` loss, and the input's size.
#[derive(Debug, Clone, PartialEq)]
pub struct Detector {
    /// The grid head's output name.
    pub output: String,
    /// `[A·(5+C), S_h, S_w]`.
    pub shape: [usize; 3],
    /// Anchor `(w, h)` in pixels of the model's input.
    pub anchors: Vec<[f32; 2]>,
    pub classes: usize,
    /// The model input's `[width, height]`.
    pub input_size: [usize; 2],
}

impl Detector {
    /// The detector of `lg` trained with `objective`: from its (first) `yolo` term. `None`
    /// when the objective has none; an error when the head or input does not fit it.
    pub fn of(lg: &LayerGraph, objective: &Objective) -> Option<Result<Detector, String>> {
        let (term, y) = objective.terms.iter().find_map(|t| match &t.loss {
            Loss::Yolo(y) => Some((t, y)),
            _ => None,
        })?;
        Some((|| {
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
            let input = lg.inputs.first().ok_or("the model has no inputs")?;
            let (&[c, sh, sw], &[_, h, w]) =
                (lg.nodes[node].shape.as_slice(), input.shape.as_slice())
            else {
                return Err(format!(
                    "the `{term}` loss needs an image input [C, H, W] and a grid head \
                     [A·(5+C), S_h, S_w]; the model has {} and {}",
                    crate::io::show_shape(&input.shape),
                    crate::io::show_shape(&lg.nodes[node].shape)
                ));
            };
            check_head(c, y.anchors.len(), y.classes)?;
            Ok(Detector {
                output,
                shape: [c, sh, sw],
                anchors: y
                    .anchors
                    .iter()
                    .map(|&[a, b]| [a as f32, b as f32])
                    .collect(),
                classes: y.classes,
                input_size: [w, h],
            })
        })())
    }

    /// Values per image of the head.
    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The detections of every image of a batch of head values (`n × image_len()` values).
    pub fn decode_batch(
        &self,
        values: &[f32],
        options: &DecodeOptions,
    ) -> Result<Vec<Vec<Detection>>, String> {
        let len = self.image_len();
        if len == 0 || !values.len().is_multiple_of(len) {
            return Err(format!(
                "the head `{}` gave {} values, not a multiple of {}",
                self.output,
                values.len(),
                len
            ));
        }
        values
            .chunks(len)
            .map(|v| {
                decode(
                    &GridHead {
                        values: v,
                        shape: self.shape,
                        anchors: &self.anchors,
                        num_classes: self.classes,
                        input_size: self.input_size,
                    },
                    options,
                )
            })
            .collect()
    }
}

/// Detections and ground truth gathered batch by batch, then scored as mAP@0.5.
#[derive(Debug, Clone)]
pub struct MapMeter {
    pub detector: Detector,
    detections: Vec<Vec<Detection>>,
    truth: Vec<Vec<Object>>,
}

impl MapMeter {
    pub fn new(detector: Detector) -> MapMeter {
        MapMeter {
            detector,
            detections: Vec::new(),
            truth: Vec::new(),
        }
    }

    /// Adds a batch: the head's values for its images and their objects (one list per image).
    /// Detections are decoded with [`DecodeOptions::for_map`] (a low score threshold, as
    /// mAP is measured), at most 100 per image.
    pub fn add(&mut self, values: &[f32], objects: &[Vec<Object>]) -> Result<(), String> {
        let found = self
            .detector
            .decode_batch(values, &DecodeOptions::for_map())?;
        if found.len() != objects.len() {
            return Err(format!(
                "{} images of head values but {} of annotations",
                found.len(),
                objects.len()
            ));
        }
        self.detections.extend(found);
        self.truth.extend(objects.iter().cloned());
        Ok(())
    }

    /// Images added so far.
    pub fn images(&self) -> usize {
        self.truth.len()
    }

    /// mAP@0.5 of everything added.
    pub fn finish(&self) -> Result<MeanAp, String> {
        mean_average_precision(
            &self.detections,
            &self.truth,
            self.detector.classes,
            MAP50_IOU,
        )
    }
}
