//! Sliding windows as convolutions (OverFeat): a classifier trained on crops, run over a larger
//! image as one convolutional pass that yields a map of class scores, one per window position.
//!
//! In: a [`LayerGraph`] elaborated at its crop size (one image input `[C, h, w]`; outputs of one
//! position, `[K]` or `[K, 1, 1]`) and the size `[H, W]` of the image to scan. Out: a
//! [`Sliding`]: the same model as a layer graph over `[C, H, W]` whose outputs are maps
//! `[K, H', W']` of scores ([`ScoreMap`]: the window, the stride between windows, the input
//! area each score depends on), and the parameter shapes its weights take ([`Sliding::params`]).
//!
//! The transformation keeps node ids, paths and parameter indices, so the weights of the
//! classifier (a safetensors file made for it) load unchanged and are only reshaped:
//! - the input takes the size `[C, H, W]`; convolutions, pooling and pointwise layers stay as
//!   they are, their shapes recomputed with elaboration's rules ([`crate::elab::conv_out`]);
//! - `flatten` of a `[C, h, w]` map becomes an identity, and the `dense` that reads it a
//!   convolution whose `h × w` kernel covers the flattened map (weight `[out, C·h·w]` read as
//!   `[out, C, h, w]`: the same values in the same order, flatten being channel-major);
//! - every later `dense` becomes a 1×1 convolution (`[out, in]` as `[out, in, 1, 1]`), and the
//!   layers between act on each position: activations, dropout (nothing at inference),
//!   batchnorm per channel, and a final `softmax` over the vector, which is the channel axis
//!   of the map, so the classes at each position;
//! - `global_avgpool` over the classifier's `h × w` map becomes an `h × w` average pooling at
//!   stride 1 (each window's average); `adaptive_avgpool(o)` an identity where its input is
//!   already `o × o` at the crop size (AlexNet at 224), or an average pooling of kernel and
//!   stride `h / o` where that divides.
//!
//! Refused, with the layer's path and the reason: several inputs, a vector input, an image
//! smaller than the window, an `adaptive_avgpool` whose windows are uneven at the crop size,
//! a `batchnorm`, `softmax`, `lrn`, `l2_normalize` or `concat` on a flattened map of several
//! positions (they would mix the positions of a window: put them before `flatten` or after a
//! `dense`), `gram` and losses, and outputs that are not one position at the crop size.
//!
//! Geometry: window (i, j) is the crop of the image at rows `i·sy .. i·sy + h` and columns
//! `j·sx .. j·sx + w`, where the stride `(sy, sx)` is the product of the strides on the way to
//! the output. Its score is exactly the classifier's on that crop when no layer reads outside
//! the crop at the crop size ([`ScoreMap::exact`]). A layer that pads (LeNet-5's `conv1`,
//! `pad=2`) reads, over the image, the pixels around the window where the classifier read
//! zeros: then the score is the classifier's on the window in its context
//! ([`ScoreMap::field`], e.g. 32×32 around a 28×28 window), as in OverFeat. The last windows
//! may reach past the image by rows or columns the classifier never reads (a stride-2 layer
//! that drops its input's last column): their scores are still the classifier's.

use std::collections::HashMap;

use ndarray::{ArrayD, IxDyn};

use crate::layer_graph::{LayerGraph, Node, NodeId, Op, ParamId, show_shape};

/// The input pixels the scores of window (0, 0) read, relative to the window's corner:
/// rows `start[0]..end[0]`, columns `start[1]..end[1]` (negative or past the window where
/// the classifier pads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub start: [i64; 2],
    pub end: [i64; 2],
}

/// One output as a map of scores over the window positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreMap {
    pub name: String,
    pub node: NodeId,
    /// Channels of the map: the classifier's classes.
    pub classes: usize,
    /// Window positions `[rows, columns]`: the map's height and width.
    pub positions: [usize; 2],
    /// Pixels between neighbouring windows `[down, across]`.
    pub stride: [usize; 2],
    pub field: Field,
}

impl ScoreMap {
    /// Whether each score is exactly the classifier's on its window's crop: nothing it reads
    /// lies outside the window.
    pub fn exact(&self, window: [usize; 2]) -> bool {
        (0..2).all(|a| self.field.start[a] >= 0 && self.field.end[a] <= window[a] as i64)
    }

    /// Window `(row, col)` as `[y, x]` of its top-left corner in the image.
    pub fn corner(&self, row: usize, col: usize) -> [usize; 2] {
        [row * self.stride[0], col * self.stride[1]]
    }
}

/// A classifier turned into a convolutional pass over a larger image (module documentation).
#[derive(Debug, Clone)]
pub struct Sliding {
    /// The model over the larger input: same node ids, paths and parameter indices.
    pub graph: LayerGraph,
    /// The window: the classifier's input height and width.
    pub window: [usize; 2],
    /// The image's height and width.
    pub size: [usize; 2],
    /// One per model output, in the model's order.
    pub maps: Vec<ScoreMap>,
    /// What became what (`global_avgpool` → average pooling, ...), one line each.
    pub notes: Vec<String>,
    /// Layers that read padding (or past their input) at the crop size, by path.
    pub padded: Vec<String>,
}

/// How a node's value relates to the window positions.
#[derive(Debug, Clone, Copy)]
enum Dom {
    /// A feature map: `jump` input pixels between positions, position 0 reads `field`.
    Map { jump: [usize; 2], field: Field },
    /// A flattened `[c, h, w]` map (several positions) waiting for its `dense`.
    Flat {
        chw: [usize; 3],
        jump: [usize; 2],
        field: Field,
    },
    /// A vector per window position (a `dense` output), as channels of a map.
    Vector { jump: [usize; 2], field: Field },
}

impl Dom {
    fn geometry(self) -> ([usize; 2], Field) {
        match self {
            Dom::Map { jump, field }
            | Dom::Flat { jump, field, .. }
            | Dom::Vector { jump, field } => (jump, field),
        }
    }
}

fn who(node: &Node) -> String {
    if node.path.is_empty() {
        format!("the {} layer", node.op.name())
    } else {
        format!(
            "layer `{}` ({})",
            crate::diag::escape_controls(&node.path),
            node.op.name()
        )
    }
}

/// The field after a window of `kernel` taps (dilation `dil`, padding `pad` before) at
/// `stride`, over a map whose positions are `jump` pixels apart.
fn through(
    jump: [usize; 2],
    field: Field,
    kernel: [usize; 2],
    dil: [usize; 2],
    pad: [usize; 2],
) -> Field {
    let mut f = field;
    for a in 0..2 {
        let j = jump[a] as i64;
        f.start[a] -= pad[a] as i64 * j;
        f.end[a] += (dil[a] as i64 * (kernel[a] as i64 - 1) - pad[a] as i64) * j;
    }
    f
}

/// `lg` (a classifier at its crop size) as one convolutional pass over an image of `size`
/// `[H, W]`; an error names the layer that cannot be converted and why.
pub fn convert(lg: &LayerGraph, size: [usize; 2]) -> Result<Sliding, String> {
    let input = match lg.inputs.as_slice() {
        [i] => i,
        many => {
            return Err(format!(
                "model `{}` has {} inputs; sliding windows run a classifier of one image input",
                lg.name,
                many.len()
            ));
        }
    };
    let &[c, h, w] = input.shape.as_slice() else {
        return Err(format!(
            "input `{}` is {}, not an image [C, H, W]: there is no window to slide",
            input.name,
            show_shape(&input.shape)
        ));
    };
    if size[0] < h || size[1] < w {
        return Err(format!(
            "the image is {}×{}, smaller than the classifier's {h}×{w} window: give an image (or \
             --size) of at least {h}×{w}",
            size[0], size[1]
        ));
    }
    let mut g = lg.clone();
    let mut dom: Vec<Option<Dom>> = vec![None; lg.nodes.len()];
    let mut notes = Vec::new();
    let mut padded = Vec::new();
    let mut reshaped: HashMap<ParamId, Vec<usize>> = HashMap::new();
    for node in &lg.nodes {
        let id = node.id;
        let ins: Vec<Dom> = node
            .inputs
            .iter()
            .map(|&i| dom[i].ok_or_else(|| format!("{}: its input comes later", who(node))))
            .collect::<Result<_, _>>()?;
        // The input's shape over the image, and at the crop size.
        let big = |k: usize| g.nodes[node.inputs[k]].shape.clone();
        let crop = |k: usize| lg.nodes[node.inputs[k]].shape.clone();
        let refuse = |why: String| Err(format!("{} cannot slide: {why}", who(node)));
        let spatial = |s: &[usize]| -> Result<(usize, usize, usize), String> {
            match *s {
                [c, h, w] => Ok((c, h, w)),
                _ => Err(format!(
                    "{} cannot slide: its input {} is not a feature map",
                    who(node),
                    show_shape(s)
                )),
            }
        };
        let (op, shape, d) = match &node.op {
            Op::Input { .. } => {
                let field = Field {
                    start: [0, 0],
                    end: [1, 1],
                };
                (
                    node.op.clone(),
                    vec![c, size[0], size[1]],
                    Dom::Map {
                        jump: [1, 1],
                        field,
                    },
                )
            }
            Op::Conv2d {
                out_channels,
                kernel,
                stride,
                padding,
                dilation,
                ..
            } => {
                let Dom::Map { jump, field } = ins[0] else {
                    return refuse("it reads a vector, not a feature map".into());
                };
                let (_, hh, ww) = spatial(&big(0))?;
                let oh = crate::elab::conv_out(
                    hh,
                    padding[0] + padding[1],
                    kernel[0],
                    stride[0],
                    dilation[0],
                );
                let ow = crate::elab::conv_out(
                    ww,
                    padding[2] + padding[3],
                    kernel[1],
                    stride[1],
                    dilation[1],
                );
                let (Some(oh), Some(ow)) = (oh, ow) else {
                    return refuse(format!("its kernel does not fit the {hh}×{ww} map"));
                };
                if padding.iter().any(|&p| p > 0) {
                    padded.push(node.path.clone());
                }
                let field = through(jump, field, *kernel, *dilation, [padding[0], padding[2]]);
                let jump = [jump[0] * stride[0], jump[1] * stride[1]];
                (
                    node.op.clone(),
                    vec![*out_channels, oh, ow],
                    Dom::Map { jump, field },
                )
            }
            Op::MaxPool2d {
                kernel,
                stride,
                padding,
                ceil_mode,
                ..
            }
            | Op::AvgPool2d {
                kernel,
                stride,
                padding,
                ceil_mode,
                ..
            } => {
                let Dom::Map { jump, field } = ins[0] else {
                    return refuse("it reads a vector, not a feature map".into());
                };
                let dil = match &node.op {
                    Op::MaxPool2d { dilation, .. } => *dilation,
                    _ => [1, 1],
                };
                let (ch, hh, ww) = spatial(&big(0))?;
                let out = |n: usize, a: usize, ceil: bool| {
                    crate::elab::pool_out(n, padding[a], kernel[a], stride[a], dil[a], ceil)
                };
                let (Some(oh), Some(ow)) = (out(hh, 0, *ceil_mode), out(ww, 1, *ceil_mode)) else {
                    return refuse(format!("its window does not fit the {hh}×{ww} map"));
                };
                let (_, ch_, cw_) = spatial(&crop(0))?;
                let overhang = *ceil_mode
                    && (out(ch_, 0, true) != out(ch_, 0, false)
                        || out(cw_, 1, true) != out(cw_, 1, false));
                if padding.iter().any(|&p| p > 0) || overhang {
                    padded.push(node.path.clone());
                }
                // An overhanging last window shows in the field of the later layers that read it.
                let field = through(jump, field, *kernel, dil, *padding);
                let jump = [jump[0] * stride[0], jump[1] * stride[1]];
                (node.op.clone(), vec![ch, oh, ow], Dom::Map { jump, field })
            }
            Op::GlobalAvgPool | Op::AdaptiveAvgPool2d { .. } => {
                let Dom::Map { jump, field } = ins[0] else {
                    return refuse("it reads a vector, not a feature map".into());
                };
                let (_, kh, kw) = spatial(&crop(0))?;
                let (ch, hh, ww) = spatial(&big(0))?;
                let (kernel, stride) = match node.op {
                    Op::AdaptiveAvgPool2d { output: [oh, ow] } if oh == kh && ow == kw => {
                        notes.push(format!(
                            "{}: the classifier's map is already {kh}×{kw}, so it passes the \
                             map through",
                            who(node)
                        ));
                        ([1, 1], [1, 1])
                    }
                    Op::AdaptiveAvgPool2d { output: [oh, ow] } => {
                        if kh % oh != 0 || kw % ow != 0 {
                            return refuse(format!(
                                "at the classifier's size it pools a {kh}×{kw} map to {oh}×{ow}, \
                                 in windows that are no fixed kernel and stride, so nothing \
                                 says what it is over a larger image (it slides when the crop \
                                 size makes the map {oh}×{ow} or a multiple of it)"
                            ));
                        }
                        let k = [kh / oh, kw / ow];
                        notes.push(format!(
                            "{}: pools {kh}×{kw} to {oh}×{ow} at the classifier's size, so it \
                             becomes an average pooling of {}×{} at stride {}×{}",
                            who(node),
                            k[0],
                            k[1],
                            k[0],
                            k[1]
                        ));
                        (k, k)
                    }
                    _ => {
                        notes.push(format!(
                            "{}: averages the classifier's {kh}×{kw} map, so over the image it \
                             averages each {kh}×{kw} window at stride 1",
                            who(node)
                        ));
                        ([kh, kw], [1, 1])
                    }
                };
                let op = if kernel == [1, 1] {
                    Op::Identity
                } else {
                    Op::AvgPool2d {
                        kernel,
                        stride,
                        padding: [0, 0],
                        ceil_mode: false,
                        count_include_pad: true,
                    }
                };
                if hh < kernel[0] || ww < kernel[1] {
                    return refuse(format!(
                        "its {}×{} window does not fit the {hh}×{ww} map",
                        kernel[0], kernel[1]
                    ));
                }
                let oh = (hh - kernel[0]) / stride[0] + 1;
                let ow = (ww - kernel[1]) / stride[1] + 1;
                let field = through(jump, field, kernel, [1, 1], [0, 0]);
                let jump = [jump[0] * stride[0], jump[1] * stride[1]];
                (op, vec![ch, oh, ow], Dom::Map { jump, field })
            }
            Op::Flatten => {
                let d = match ins[0] {
                    Dom::Map { jump, field } => {
                        let (ch, kh, kw) = spatial(&crop(0))?;
                        if kh * kw == 1 {
                            Dom::Vector { jump, field }
                        } else {
                            Dom::Flat {
                                chw: [ch, kh, kw],
                                jump,
                                field,
                            }
                        }
                    }
                    other => other,
                };
                (Op::Identity, big(0), d)
            }
            Op::Dense { out_features, bias } => {
                let (jump, field, kernel, cin) = match ins[0] {
                    Dom::Flat {
                        chw: [ch, kh, kw],
                        jump,
                        field,
                    } => (jump, field, [kh, kw], ch),
                    Dom::Vector { jump, field } => (jump, field, [1, 1], crop(0)[0]),
                    Dom::Map { .. } => {
                        return refuse(
                            "it reads a feature map that no `flatten` made a vector".into(),
                        );
                    }
                };
                let (_, hh, ww) = spatial(&big(0))?;
                if hh < kernel[0] || ww < kernel[1] {
                    return refuse(format!(
                        "its {}×{} window does not fit the {hh}×{ww} map",
                        kernel[0], kernel[1]
                    ));
                }
                let wshape = vec![*out_features, cin, kernel[0], kernel[1]];
                let p = node.params[0];
                if let Some(prev) = reshaped.insert(p, wshape.clone())
                    && prev != wshape
                {
                    return refuse(format!(
                        "its weight `{}` is shared with a dense layer that reads another shape \
                         ({} and {})",
                        lg.params[p].path,
                        show_shape(&prev),
                        show_shape(&wshape)
                    ));
                }
                if kernel != [1, 1] {
                    notes.push(format!(
                        "{}: reads the flattened {cin}×{}×{} map, so it becomes a {}×{} \
                         convolution (weight {} as {})",
                        who(node),
                        kernel[0],
                        kernel[1],
                        kernel[0],
                        kernel[1],
                        show_shape(&lg.params[p].shape),
                        show_shape(&wshape)
                    ));
                }
                let field = through(jump, field, kernel, [1, 1], [0, 0]);
                (
                    Op::Conv2d {
                        out_channels: *out_features,
                        kernel,
                        stride: [1, 1],
                        padding: [0; 4],
                        dilation: [1, 1],
                        groups: 1,
                        bias: *bias,
                    },
                    vec![*out_features, hh - kernel[0] + 1, ww - kernel[1] + 1],
                    Dom::Vector { jump, field },
                )
            }
            Op::Relu
            | Op::LeakyRelu { .. }
            | Op::Sigmoid
            | Op::Tanh
            | Op::Abs
            | Op::Dropout { .. }
            | Op::Identity => (node.op.clone(), big(0), ins[0]),
            Op::BatchNorm { .. } | Op::Softmax | Op::Lrn { .. } | Op::L2Normalize { .. } => {
                if let Dom::Flat {
                    chw: [ch, kh, kw], ..
                } = ins[0]
                {
                    return refuse(format!(
                        "it acts on the flattened {ch}×{kh}×{kw} map as {} separate features, \
                         each a channel at one position of the window, which a convolutional \
                         pass cannot tell apart: put it before `flatten` or after a `dense`",
                        ch * kh * kw
                    ));
                }
                (node.op.clone(), big(0), ins[0])
            }
            Op::Add | Op::Sub | Op::Mul | Op::Concat => {
                let (jump, mut field) = ins[0].geometry();
                for (k, d) in ins.iter().enumerate() {
                    let (j, f) = d.geometry();
                    let same_kind = std::mem::discriminant(d) == std::mem::discriminant(&ins[0]);
                    if !same_kind || j != jump || big(k)[1..] != big(0)[1..] {
                        return refuse(format!(
                            "its inputs do not line up over the image ({} and {})",
                            show_shape(&big(0)),
                            show_shape(&big(k))
                        ));
                    }
                    for a in 0..2 {
                        field.start[a] = field.start[a].min(f.start[a]);
                        field.end[a] = field.end[a].max(f.end[a]);
                    }
                }
                let mut shape = big(0);
                let d = match ins[0] {
                    Dom::Flat { chw, .. } => {
                        if matches!(node.op, Op::Concat) {
                            return refuse(
                                "it joins flattened maps, whose dense weights would have to be \
                                 split: concatenate the maps before `flatten`"
                                    .into(),
                            );
                        }
                        Dom::Flat { chw, jump, field }
                    }
                    Dom::Map { .. } => Dom::Map { jump, field },
                    Dom::Vector { .. } => Dom::Vector { jump, field },
                };
                if matches!(node.op, Op::Concat) {
                    shape[0] = (0..ins.len()).map(|k| big(k)[0]).sum();
                }
                (node.op.clone(), shape, d)
            }
            Op::Gram | Op::TripletLoss { .. } => {
                return refuse("it is not computed per window position".into());
            }
        };
        g.nodes[id].op = op;
        g.nodes[id].shape = shape;
        dom[id] = Some(d);
    }
    g.inputs[0].shape = vec![c, size[0], size[1]];
    for (p, shape) in reshaped {
        g.params[p].shape = shape;
    }
    let mut maps = Vec::new();
    for (name, n) in &lg.outputs {
        let crop_shape = &lg.nodes[*n].shape;
        let one_position = crate::loss::class_count(crop_shape).is_some();
        let Some(Dom::Map { jump, field } | Dom::Vector { jump, field }) = dom[*n] else {
            return Err(format!(
                "output `{name}` is a flattened feature map {}, not scores: end the classifier \
                 with a `dense` layer",
                show_shape(crop_shape)
            ));
        };
        if !one_position {
            return Err(format!(
                "output `{name}` is {} at the classifier's size, not one score per class: a \
                 model whose output is already a feature map runs on a larger image with \
                 `--native-size`",
                show_shape(crop_shape)
            ));
        }
        let shape = &g.nodes[*n].shape;
        maps.push(ScoreMap {
            name: name.clone(),
            node: *n,
            classes: shape[0],
            positions: [shape[1], shape[2]],
            stride: jump,
            field,
        });
    }
    Ok(Sliding {
        graph: g,
        window: [h, w],
        size,
        maps,
        notes,
        padded,
    })
}

impl Sliding {
    /// The classifier's parameter values (indexed like its `params`, e.g. from
    /// [`crate::model::params_f32`]) in the shapes this graph's layers read: the dense weights
    /// reshaped, nothing copied. Empty arrays (integer buffers) pass as they are.
    pub fn params(&self, values: Vec<ArrayD<f32>>) -> Result<Vec<ArrayD<f32>>, String> {
        values
            .into_iter()
            .zip(&self.graph.params)
            .map(|(v, p)| {
                if v.shape() == p.shape.as_slice() || v.is_empty() {
                    return Ok(v);
                }
                let from = v.shape().to_vec();
                v.into_shape_with_order(IxDyn(&p.shape)).map_err(|_| {
                    format!(
                        "parameter `{}` is {}, which does not reshape to {}",
                        p.path,
                        show_shape(&from),
                        show_shape(&p.shape)
                    )
                })
            })
            .collect()
    }

    /// What the pass computes, a line each: the windows, the stride and positions of every
    /// output, what was converted, and where the scores are not the bare crop's.
    pub fn describe(&self) -> Vec<String> {
        let [h, w] = self.window;
        let mut lines = Vec::new();
        for m in &self.maps {
            lines.push(format!(
                "sliding `{}` over {}×{}: windows of {h}×{w} every {}×{} pixels, {}×{} positions \
                 (output `{}`: {} scores each)",
                self.graph.name,
                self.size[0],
                self.size[1],
                m.stride[0],
                m.stride[1],
                m.positions[0],
                m.positions[1],
                m.name,
                m.classes
            ));
            if !m.exact(self.window) {
                let f = m.field;
                lines.push(format!(
                    "note: {} at the classifier's size; over the image each window's scores \
                     read rows {}..{} and columns {}..{} around its corner, the image where the \
                     classifier read padding ({}×{} in context, not the bare {h}×{w} crop)",
                    match self.padded.as_slice() {
                        [one] => format!("`{}` pads", crate::diag::escape_controls(one)),
                        many => format!(
                            "{} pad",
                            many.iter()
                                .map(|p| format!("`{}`", crate::diag::escape_controls(p)))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    },
                    f.start[0],
                    f.end[0],
                    f.start[1],
                    f.end[1],
                    f.end[0] - f.start[0],
                    f.end[1] - f.start[1]
                ));
            }
        }
        lines.extend(self.notes.iter().map(|n| format!("note: {n}")));
        lines
    }
}
