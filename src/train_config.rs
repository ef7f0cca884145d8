//! The checked `train { }` section of a model.
//!
//! In: built by `elab::train` from the AST. Out: typed settings used by `netc train` (with CLI
//! flags overriding them) and shown by `netc summary`. Defaults are PyTorch's.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrainConfig {
    pub loss: Option<Objective>,
    pub optimizer: Option<Optimizer>,
    pub schedule: Option<Schedule>,
    pub batch: Option<usize>,
    pub epochs: Option<usize>,
    pub data: Option<String>,
    pub augment: Vec<Augment>,
    /// Freeze selectors, already checked against the model's parameters.
    pub freeze: Vec<String>,
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Loss {
    CrossEntropy {
        label_smoothing: f64,
    },
    Mse,
    L1,
    BceWithLogits,
    Triplet {
        margin: f64,
    },
    Contrastive {
        margin: f64,
    },
    /// Gatys' style loss at one layer: the mean squared difference of the output's Gram
    /// matrices `[N, C, C]` from targets of that shape.
    Style,
    /// Gatys' content loss at one layer: the MSE of the output's features against targets.
    Content,
    /// An output that already is a loss (a `[1]` value the model body computes, e.g.
    /// `loss = triplet_loss(...)`), used as it is.
    Value,
    /// The YOLO (v2/v3) loss of a grid head `[A·(5+C), S_h, S_w]` against host-encoded
    /// targets of the same layout (definition in `loss_yolo`, encoding in `detect::encode`).
    Yolo(Yolo),
}

/// The settings of a YOLO loss term: `yolo(output=grid, anchors=[[w, h], ...], coord=5,
/// noobj=0.5)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Yolo {
    /// Anchor boxes `(w, h)` in pixels of the model's input (Darknet's convention).
    pub anchors: Vec<[f64; 2]>,
    /// The number of classes `C` (the head has `A·(5 + C)` channels).
    pub classes: usize,
    /// The weight of the box terms (YOLO's λ_coord).
    pub coord: f64,
    /// The weight of the objectness term of cells and anchors with no object (λ_noobj).
    pub noobj: f64,
}

/// What training minimizes: the sum of weighted loss terms, each on named model outputs
/// (`loss: cross_entropy(output=cls) + 5 * mse(output=box)` in a spec).
#[derive(Debug, Clone, PartialEq)]
pub struct Objective {
    pub terms: Vec<Term>,
}

/// One weighted loss of an [`Objective`].
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub weight: f64,
    pub loss: Loss,
    /// The model outputs it reads, in order; empty means the model's outputs in order (a
    /// spec's plain `loss: cross_entropy`).
    pub outputs: Vec<String>,
    /// Per-sample 0/1 values (`mse(output=box, mask=object)`) that select the samples the
    /// term counts: its per-sample losses are summed over the masked-in samples and divided
    /// by their number (at least 1). Only on the per-sample losses (cross-entropy, MSE, L1,
    /// binary cross-entropy).
    pub mask: Option<String>,
}

impl Term {
    /// The graph input holding this term's targets, if it takes any: `targets` for a term
    /// on the model's outputs in order, `targets:<output>` for a term on a named output,
    /// `same` for the contrastive loss's pair labels, `yolo:<output>` for the encoded grid
    /// targets of a YOLO term.
    pub fn target_input(&self) -> Option<String> {
        match self.loss {
            Loss::Triplet { .. } | Loss::Value => None,
            Loss::Contrastive { .. } => Some("same".into()),
            // Its own name: the grid targets are not the output's values, so they are never
            // shared with another term on the same output.
            Loss::Yolo(_) => Some(match self.outputs.first() {
                None => "yolo".into(),
                Some(o) => format!("yolo:{o}"),
            }),
            _ => Some(match self.outputs.first() {
                None => "targets".into(),
                Some(o) => format!("targets:{o}"),
            }),
        }
    }

    /// The graph input holding this term's mask, if it has one: `mask:<name>`, shape `[N]`.
    pub fn mask_input(&self) -> Option<String> {
        self.mask.as_ref().map(|m| format!("mask:{m}"))
    }

    /// Whether the loss is computed per sample (and so can take a mask).
    pub fn per_sample(loss: &Loss) -> bool {
        matches!(
            loss,
            Loss::CrossEntropy { .. } | Loss::Mse | Loss::L1 | Loss::BceWithLogits
        )
    }
}

impl From<Loss> for Objective {
    /// One term of weight 1 on the model's outputs in order.
    fn from(loss: Loss) -> Objective {
        Objective {
            terms: vec![Term {
                weight: 1.0,
                loss,
                outputs: vec![],
                mask: None,
            }],
        }
    }
}

impl Objective {
    /// The cross-entropy on the model's first output, netc's default.
    pub fn classification() -> Objective {
        Loss::CrossEntropy {
            label_smoothing: 0.0,
        }
        .into()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Optimizer {
    Sgd {
        lr: f64,
        momentum: f64,
        dampening: f64,
        nesterov: bool,
        weight_decay: f64,
    },
    Adam {
        lr: f64,
        betas: [f64; 2],
        eps: f64,
        weight_decay: f64,
    },
    AdamW {
        lr: f64,
        betas: [f64; 2],
        eps: f64,
        weight_decay: f64,
    },
}

/// Learning-rate schedule per epoch, each with an optional linear warmup (in epochs).
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    Constant {
        warmup: usize,
    },
    Step {
        step_size: usize,
        gamma: f64,
        warmup: usize,
    },
    Cosine {
        min_lr: f64,
        warmup: usize,
    },
}

/// One random augmentation of the `augment: [...]` list (or `--augment`). Each keeps the
/// sample's shape `[C, H, W]` (the model input's); semantics and torchvision equivalents in
/// `data::augment`.
#[derive(Debug, Clone, PartialEq)]
pub enum Augment {
    /// Horizontal flip with probability `p` (`RandomHorizontalFlip`).
    Mirror { p: f64 },
    /// Vertical flip with probability `p` (`RandomVerticalFlip`).
    VFlip { p: f64 },
    /// Zero-pad by `pad` on each side, crop `size` (`[H, W]`; the input size when absent) at a
    /// random offset (`RandomCrop(size, padding)`), then resize back to the input size when
    /// `size` differs from it.
    RandomCrop {
        pad: usize,
        size: Option<[usize; 2]>,
    },
    /// `RandomResizedCrop(input size, scale, ratio)`, bilinear, antialiased.
    RandomResizedCrop { scale: [f64; 2], ratio: [f64; 2] },
    /// Rotate by a uniform random angle in `[-degrees, degrees]` (`RandomRotation`).
    Rotate { degrees: f64 },
    /// `RandomAffine(degrees, translate, scale, shear)`: angle in `[-degrees, degrees]`,
    /// translation fractions of the width and height, a scale range, shear ranges in degrees
    /// (x: `shear[0..2]`, y: `shear[2..4]`).
    Affine {
        degrees: f64,
        translate: [f64; 2],
        scale: [f64; 2],
        shear: [f64; 4],
    },
    /// `ColorJitter(brightness, contrast, saturation, hue)` (fractions as torchvision's).
    ColorShift {
        brightness: f64,
        contrast: f64,
        saturation: f64,
        hue: f64,
    },
    /// AlexNet's PCA lighting noise, `alpha ~ N(0, std)` per eigenvector (3 channels).
    PcaLighting { std: f64 },
}

/// Floats shown as people write them (`0.1`, `5e-4`).
struct F(f64);

impl fmt::Display for F {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::layer_graph::fmt_f64(self.0))
    }
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loss::CrossEntropy { label_smoothing } => {
                write!(f, "cross_entropy(label_smoothing={})", F(*label_smoothing))
            }
            Loss::Mse => write!(f, "mse"),
            Loss::L1 => write!(f, "l1"),
            Loss::BceWithLogits => write!(f, "bce_with_logits"),
            Loss::Triplet { margin } => write!(f, "triplet(margin={})", F(*margin)),
            Loss::Contrastive { margin } => write!(f, "contrastive(margin={})", F(*margin)),
            Loss::Style => write!(f, "style"),
            Loss::Content => write!(f, "content"),
            Loss::Value => write!(f, "value"),
            Loss::Yolo(y) => {
                let anchors: Vec<String> = y
                    .anchors
                    .iter()
                    .map(|[w, h]| format!("[{}, {}]", F(*w), F(*h)))
                    .collect();
                write!(
                    f,
                    "yolo(anchors=[{}], classes={}, coord={}, noobj={})",
                    anchors.join(", "),
                    y.classes,
                    F(y.coord),
                    F(y.noobj)
                )
            }
        }
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.weight != 1.0 {
            write!(f, "{} * ", F(self.weight))?;
        }
        let loss = self.loss.to_string();
        let mut outputs = match self.outputs.as_slice() {
            [] if self.mask.is_none() => return f.write_str(&loss),
            [] => String::new(),
            [o] if self.loss == Loss::Value => return f.write_str(o),
            [o] => format!("output={o}"),
            many => format!("outputs=[{}]", many.join(", ")),
        };
        if let Some(m) = &self.mask {
            if !outputs.is_empty() {
                outputs += ", ";
            }
            outputs += &format!("mask={m}");
        }
        match loss.split_once('(') {
            Some((name, rest)) => write!(f, "{name}({outputs}, {rest}"),
            None => write!(f, "{loss}({outputs})"),
        }
    }
}

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(" + ")?;
            }
            write!(f, "{t}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Optimizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Optimizer::Sgd {
                lr,
                momentum,
                dampening,
                nesterov,
                weight_decay,
            } => write!(
                f,
                "sgd(lr={}, momentum={}, dampening={}, nesterov={nesterov}, weight_decay={})",
                F(*lr),
                F(*momentum),
                F(*dampening),
                F(*weight_decay)
            ),
            Optimizer::Adam {
                lr,
                betas,
                eps,
                weight_decay,
            }
            | Optimizer::AdamW {
                lr,
                betas,
                eps,
                weight_decay,
            } => write!(
                f,
                "{}(lr={}, betas=[{}, {}], eps={}, weight_decay={})",
                if matches!(self, Optimizer::Adam { .. }) {
                    "adam"
                } else {
                    "adamw"
                },
                F(*lr),
                F(betas[0]),
                F(betas[1]),
                F(*eps),
                F(*weight_decay)
            ),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Constant { warmup } => write!(f, "constant(warmup={warmup})"),
            Schedule::Step {
                step_size,
                gamma,
                warmup,
            } => write!(
                f,
                "step(step_size={step_size}, gamma={}, warmup={warmup})",
                F(*gamma)
            ),
            Schedule::Cosine { min_lr, warmup } => {
                write!(f, "cosine(min_lr={}, warmup={warmup})", F(*min_lr))
            }
        }
    }
}

impl fmt::Display for Augment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Augment::Mirror { p } => write!(f, "mirror(p={})", F(*p)),
            Augment::VFlip { p } => write!(f, "vflip(p={})", F(*p)),
            Augment::RandomCrop { pad, size } => match size {
                Some([h, w]) => write!(f, "random_crop(size=[{h}, {w}], pad={pad})"),
                None => write!(f, "random_crop(pad={pad})"),
            },
            Augment::RandomResizedCrop { scale, ratio } => write!(
                f,
                "random_resized_crop(scale=[{}, {}], ratio=[{}, {}])",
                F(scale[0]),
                F(scale[1]),
                F(ratio[0]),
                F(ratio[1])
            ),
            Augment::Rotate { degrees } => write!(f, "rotate({})", F(*degrees)),
            Augment::Affine {
                degrees,
                translate,
                scale,
                shear,
            } => write!(
                f,
                "affine(degrees={}, translate=[{}, {}], scale=[{}, {}], shear=[{}, {}, {}, {}])",
                F(*degrees),
                F(translate[0]),
                F(translate[1]),
                F(scale[0]),
                F(scale[1]),
                F(shear[0]),
                F(shear[1]),
                F(shear[2]),
                F(shear[3])
            ),
            Augment::ColorShift {
                brightness,
                contrast,
                saturation,
                hue,
            } => write!(
                f,
                "color_shift(brightness={}, contrast={}, saturation={}, hue={})",
                F(*brightness),
                F(*contrast),
                F(*saturation),
                F(*hue)
            ),
            Augment::PcaLighting { std } => write!(f, "pca_lighting(std={})", F(*std)),
        }
    }
}
