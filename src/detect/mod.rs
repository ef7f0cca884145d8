//! Object detection's host code: the annotated objects of a detection dataset and the
//! conventions every detection piece shares (box coordinates, the grid head's layout).
//!
//! In: model outputs and annotations. Out: boxes, scores and metrics. Post-processing here is
//! plain Rust over the outputs, not graph ops (DESIGN §9).
//!
//! Conventions, one definition for all of netc:
//! - An annotated [`Object`] has YOLO's coordinates: box centre and size as fractions of the
//!   image's width and height (`0..=1`), the class an index into the spec's classes.
//! - A detection box is corners `[x1, y1, x2, y2]` ([`Xyxy`]), in the unit of its context
//!   (fractions of the image inside netc; pixels in what `netc detect` writes).
//! - A YOLO grid head is an output of shape `[A × (5 + C), S_h, S_w]`: for anchor `a`, channels
//!   `a·(5+C) + k` hold `k = 0, 1`: `tx, ty` (centre offset in the cell, through a sigmoid);
//!   `k = 2, 3`: `tw, th` (log size relative to the anchor); `k = 4`: the objectness logit;
//!   `k = 5..5+C`: class logits (softmax over classes). A box decodes as
//!   `cx = (col + σ(tx)) / S_w`, `cy = (row + σ(ty)) / S_h`, `w = anchor_w · e^tw`,
//!   `h = anchor_h · e^th`, score of class `c` = `σ(t_obj) · softmax(t_cls)[c]`.
//! - Anchors are `(w, h)` in pixels of the model's input (Darknet's convention), converted to
//!   fractions of the image by dividing by the input's width and height.
//!
//! Post-processing: [`boxes`] (conversion, IoU, NMS as torchvision), [`decode`] (a grid
//! head's output to detections), [`map`] (VOC mAP), [`anchors`] (k-means on IoU distance);
//! drawing detections is in [`crate::picture`].

pub mod anchors;
pub mod boxes;
pub mod decode;
pub mod map;

pub mod encode;
pub mod evaluate;

/// A box as corners `[x1, y1, x2, y2]` with `x1 ≤ x2`, `y1 ≤ y2`.
pub type Xyxy = [f32; 4];

/// One annotated object: a class and a box (centre and size as fractions of the image), and
/// optionally landmarks (points as fractions of the image).
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub class: usize,
    pub cx: f32,
    pub cy: f32,
    pub w: f32,
    pub h: f32,
    pub landmarks: Vec<[f32; 2]>,
}

impl Object {
    /// The box as corners, in fractions of the image.
    pub fn xyxy(&self) -> Xyxy {
        boxes::cxcywh_to_xyxy([self.cx, self.cy, self.w, self.h])
    }
}

/// One detection: a class, its score and its box.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub class: usize,
    pub score: f32,
    pub bbox: Xyxy,
}
