//! Training targets from annotated objects: what a batch of detection data feeds the loss.
//!
//! In: each sample's [`Object`]s (YOLO-normalized boxes, see [`crate::detect`]). Out: dense
//! `f32` targets, sample after sample, for two kinds of models:
//!
//! - **Localization** (one object per image: a class head, a box head, landmarks), targets
//!   named after the outputs they feed ([`Derived`]): `object` `[1]` (1 when the image has an
//!   object, else 0), `box` `[4]` (`cx, cy, w, h` of the image's *first* object, fractions of
//!   the image; zeros without one), `landmarks` `[2L]` (its `L` points as `x, y` pairs, same
//!   unit), and the class of the first object as one-hot rows ([`one_hot_first`]; an all-zero
//!   row without an object). Images without an object are meant to be masked out of the box,
//!   landmark and class terms (`mse(output=box, mask=object)`).
//! - **YOLO** (a grid head `[A·(5+C), S_h, S_w]`): [`Grid::encode`] assigns each box to a cell
//!   and an anchor and writes the targets in the head's own channel layout (definition in
//!   [`crate::loss_yolo`]).
//!
//! Errors name the sample (`what` and its index) and the object: a class id beyond the model's
//! classes, a box of non-positive or non-finite size, landmarks of another count than the
//! model's output has.

use super::Object;

/// A localization target derived from a sample's objects, by the name of the output it feeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Derived {
    /// `object`: 1 when the sample has an object, else 0 (width 1).
    Object,
    /// `box`: `cx, cy, w, h` of the first object (width 4).
    Box,
    /// `landmarks`: the first object's `L` points, `x, y` each (width `2L`).
    Landmarks(usize),
}

/// The target names detection data provide (see [`Derived`]).
pub const DERIVED: [&str; 3] = ["object", "box", "landmarks"];

impl Derived {
    /// The target `name` of width `width` derived from objects, or `Err` with the width it
    /// must have (`None` for a name that is not derived).
    pub fn of(name: &str, width: usize) -> Option<Result<Derived, String>> {
        let (d, ok, want) = match name {
            "object" => (Derived::Object, width == 1, "1 value (0 or 1)"),
            "box" => (Derived::Box, width == 4, "4 values (cx, cy, w, h)"),
            "landmarks" => (
                Derived::Landmarks(width / 2),
                width > 0 && width.is_multiple_of(2),
                "2 values (x, y) per landmark",
            ),
            _ => return None,
        };
        Some(if ok { Ok(d) } else { Err(want.to_string()) })
    }

    /// Values per sample.
    pub fn width(self) -> usize {
        match self {
            Derived::Object => 1,
            Derived::Box => 4,
            Derived::Landmarks(l) => 2 * l,
        }
    }

    /// Appends this target for each sample of `objects` to `out`. `name(i)` names sample `i`
    /// of the batch in errors.
    pub fn fill(
        self,
        objects: &[Vec<Object>],
        out: &mut Vec<f32>,
        name: &dyn Fn(usize) -> String,
    ) -> Result<(), String> {
        for (i, objs) in objects.iter().enumerate() {
            let first = objs.first();
            match (self, first) {
                (Derived::Object, _) => out.push(if first.is_some() { 1.0 } else { 0.0 }),
                (Derived::Box, Some(o)) => out.extend([o.cx, o.cy, o.w, o.h]),
                (Derived::Landmarks(l), Some(o)) => {
                    if o.landmarks.len() != l {
                        return Err(format!(
                            "{}: its first object has {} landmark{}, but the model's output \
                             `landmarks` takes {l} ({} values)",
                            name(i),
                            o.landmarks.len(),
                            if o.landmarks.len() == 1 { "" } else { "s" },
                            2 * l
                        ));
                    }
                    out.extend(o.landmarks.iter().flatten());
                }
                (_, None) => out.extend(std::iter::repeat_n(0.0, self.width())),
            }
        }
        Ok(())
    }
}

/// One-hot rows (`classes` wide) of each sample's first object's class; an all-zero row for a
/// sample without objects (its cross-entropy is 0; mask it out with `mask=object`).
pub fn one_hot_first(
    objects: &[Vec<Object>],
    classes: usize,
    out: &mut Vec<f32>,
    name: &dyn Fn(usize) -> String,
) -> Result<(), String> {
    for (i, objs) in objects.iter().enumerate() {
        let start = out.len();
        out.extend(std::iter::repeat_n(0.0, classes));
        if let Some(o) = objs.first() {
            check_class(o, 0, classes, &name(i))?;
            out[start + o.class] = 1.0;
        }
    }
    Ok(())
}

fn check_class(o: &Object, j: usize, classes: usize, sample: &str) -> Result<(), String> {
    if o.class >= classes {
        return Err(format!(
            "{sample}: object {j} has class {}, but the model has {classes} class{} \
             (0..{})\n  help: fix the label, or give the model's head {} classes",
            o.class,
            if classes == 1 { "" } else { "es" },
            classes.saturating_sub(1),
            o.class + 1
        ));
    }
    Ok(())
}

/// The IoU of two boxes of sizes `(w, h)` and `(aw, ah)` centred at one point: how well an
/// anchor's shape fits a box, whatever their positions.
pub fn shape_iou(w: f32, h: f32, aw: f32, ah: f32) -> f32 {
    let inter = w.min(aw) * h.min(ah);
    let union = w * h + aw * ah - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// A YOLO grid head's geometry: its anchors (fractions of the image) and classes, and the
/// grid's size.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// Anchor `(w, h)` as fractions of the image's width and height.
    pub anchors: Vec<[f32; 2]>,
    pub classes: usize,
    /// Rows and columns `[S_h, S_w]`.
    pub cells: [usize; 2],
}

impl Grid {
    /// The grid of a head of `cells` `[S_h, S_w]` for an input of `input` `[H, W]` pixels,
    /// with anchors in pixels (Darknet's convention, divided by the input's size here).
    pub fn new(
        anchors_px: &[[f64; 2]],
        input: [usize; 2],
        classes: usize,
        cells: [usize; 2],
    ) -> Grid {
        let anchors = anchors_px
            .iter()
            .map(|&[w, h]| [(w / input[1] as f64) as f32, (h / input[0] as f64) as f32])
            .collect();
        Grid {
            anchors,
            classes,
            cells,
        }
    }

    /// Channels per cell: `A·(5 + C)`.
    pub fn channels(&self) -> usize {
        self.anchors.len() * (5 + self.classes)
    }

    /// The anchor of largest [`shape_iou`] with a box of size `(w, h)` (the first on ties).
    pub fn best_anchor(&self, w: f32, h: f32) -> usize {
        let mut best = (0, f32::NEG_INFINITY);
        for (a, &[aw, ah]) in self.anchors.iter().enumerate() {
            let iou = shape_iou(w, h, aw, ah);
            if iou > best.1 {
                best = (a, iou);
            }
        }
        best.0
    }

    /// The cell `(row, col)` holding the centre `(cx, cy)`: `floor(c·S)`, clamped to the grid
    /// (a centre on the right or bottom edge, `cx = 1`, belongs to the last cell).
    pub fn cell(&self, cx: f32, cy: f32) -> (usize, usize) {
        let [sh, sw] = self.cells;
        let at =
            |c: f32, s: usize| ((c * s as f32).floor().max(0.0) as usize).min(s.saturating_sub(1));
        (at(cy, sh), at(cx, sw))
    }

    /// Appends the targets of each sample of `objects` to `out`, `[A·(5+C), S_h, S_w]` per
    /// sample in the head's layout: at the (row, col, anchor) responsible for a box, channels
    /// `a·(5+C) + k` hold `k = 0..4`: `tx* = cx·S_w − col`, `ty* = cy·S_h − row`,
    /// `tw* = ln(w / aw)`, `th* = ln(h / ah)`; `k = 4`: 1; `k = 5 + class`: 1. Everything else
    /// is 0. A later box taking the same (row, col, anchor) replaces the earlier one.
    pub fn encode(
        &self,
        objects: &[Vec<Object>],
        out: &mut Vec<f32>,
        name: &dyn Fn(usize) -> String,
    ) -> Result<(), String> {
        let [sh, sw] = self.cells;
        let per = 5 + self.classes;
        let plane = sh * sw;
        for (i, objs) in objects.iter().enumerate() {
            let start = out.len();
            out.extend(std::iter::repeat_n(0.0, self.channels() * plane));
            let t = &mut out[start..];
            for (j, o) in objs.iter().enumerate() {
                check_class(o, j, self.classes, &name(i))?;
                let finite = [o.cx, o.cy, o.w, o.h].iter().all(|v| v.is_finite());
                if !finite || o.w <= 0.0 || o.h <= 0.0 {
                    return Err(format!(
                        "{}: object {j} has the box (cx {}, cy {}, w {}, h {}); a box needs \
                         finite coordinates and a positive width and height",
                        name(i),
                        o.cx,
                        o.cy,
                        o.w,
                        o.h
                    ));
                }
                let (row, col) = self.cell(o.cx, o.cy);
                let a = self.best_anchor(o.w, o.h);
                let [aw, ah] = self.anchors[a];
                let base = a * per;
                let at = |k: usize| (base + k) * plane + row * sw + col;
                // Replace whatever an earlier box wrote here (its class included).
                for k in 0..per {
                    t[at(k)] = 0.0;
                }
                t[at(0)] = o.cx * sw as f32 - col as f32;
                t[at(1)] = o.cy * sh as f32 - row as f32;
                t[at(2)] = (o.w / aw).ln();
                t[at(3)] = (o.h / ah).ln();
                t[at(4)] = 1.0;
                t[at(5 + o.class)] = 1.0;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(class: usize, cx: f32, cy: f32, w: f32, h: f32) -> Object {
        Object {
            class,
            cx,
            cy,
            w,
            h,
            landmarks: vec![],
        }
    }

    #[test]
    fn boxes_go_to_their_cell_and_best_anchor_later_ones_replacing_earlier() {
        // 96×96 input, 4×4 grid (24 px cells), a wide and a tall anchor.
        let g = Grid::new(&[[48.0, 24.0], [24.0, 48.0]], [96, 96], 3, [4, 4]);
        assert_eq!(g.anchors, [[0.5, 0.25], [0.25, 0.5]]);
        assert_eq!(
            g.cell(0.5, 0.25),
            (1, 2),
            "a centre on a cell border: the cell after"
        );
        assert_eq!(g.cell(1.0, 0.0), (0, 3), "the right edge: the last column");
        assert_eq!(g.best_anchor(0.4, 0.2), 0);
        assert_eq!(g.best_anchor(0.2, 0.4), 1);
        let boxes = vec![
            obj(2, 0.3, 0.3, 0.4, 0.2),
            obj(1, 0.3, 0.3, 0.2, 0.45),
            obj(0, 0.3, 0.3, 0.5, 0.25),
        ];
        let mut out = Vec::new();
        g.encode(&[boxes], &mut out, &|i| format!("sample {i}"))
            .unwrap();
        let at = |a: usize, k: usize| out[(a * 8 + k) * 16 + 4 + 1];
        // Anchor 0 holds the third box (it replaced the first), anchor 1 the second.
        assert_eq!(at(0, 4), 1.0);
        assert_eq!([at(0, 5), at(0, 6), at(0, 7)], [1.0, 0.0, 0.0]);
        assert!((at(0, 0) - 0.2).abs() < 1e-6 && (at(0, 1) - 0.2).abs() < 1e-6);
        assert!(at(0, 2).abs() < 1e-6 && at(0, 3).abs() < 1e-6);
        assert_eq!([at(1, 5), at(1, 6), at(1, 7)], [0.0, 1.0, 0.0]);
        assert!((at(1, 2) - (0.2f32 / 0.25).ln()).abs() < 1e-6);
        assert_eq!(out.iter().filter(|&&v| v == 1.0).count(), 4);
    }

    #[test]
    fn a_class_beyond_the_head_names_the_sample_and_object() {
        let g = Grid::new(&[[10.0, 10.0]], [96, 96], 3, [2, 2]);
        let err = g
            .encode(
                &[vec![obj(0, 0.5, 0.5, 0.1, 0.1), obj(3, 0.2, 0.2, 0.1, 0.1)]],
                &mut Vec::new(),
                &|i| format!("sample {}", 7 + i),
            )
            .unwrap_err();
        assert!(
            err.starts_with("sample 7: object 1 has class 3, but the model has 3 classes (0..2)"),
            "{err}"
        );
        let err = g
            .encode(
                &[vec![obj(0, 0.5, 0.5, 0.0, 0.1)]],
                &mut Vec::new(),
                &|_| "x".into(),
            )
            .unwrap_err();
        assert!(err.contains("positive width and height"), "{err}");
    }

    #[test]
    fn localization_targets_come_from_the_first_object() {
        let mut a = obj(4, 0.1, 0.2, 0.3, 0.4);
        a.landmarks = vec![[0.1, 0.2], [0.3, 0.4]];
        let objects = vec![vec![a, obj(1, 0.5, 0.5, 0.5, 0.5)], vec![]];
        let name = |i: usize| format!("sample {i}");
        let mut out = Vec::new();
        Derived::Object.fill(&objects, &mut out, &name).unwrap();
        assert_eq!(out, [1.0, 0.0]);
        out.clear();
        Derived::Box.fill(&objects, &mut out, &name).unwrap();
        assert_eq!(out, [0.1, 0.2, 0.3, 0.4, 0.0, 0.0, 0.0, 0.0]);
        out.clear();
        Derived::Landmarks(2)
            .fill(&objects, &mut out, &name)
            .unwrap();
        assert_eq!(out, [0.1, 0.2, 0.3, 0.4, 0.0, 0.0, 0.0, 0.0]);
        let err = Derived::Landmarks(3)
            .fill(&objects, &mut Vec::new(), &name)
            .unwrap_err();
        assert!(
            err.starts_with("sample 0: its first object has 2 landmarks"),
            "{err}"
        );
        out.clear();
        one_hot_first(&objects, 5, &mut out, &name).unwrap();
        assert_eq!(out, [0., 0., 0., 0., 1., 0., 0., 0., 0., 0.]);
        assert!(one_hot_first(&objects, 4, &mut out, &name).is_err());
    }
}
