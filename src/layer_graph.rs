//! The layer graph: what `elab` produces from a spec and what later stages lower.
//!
//! In: built by `elab`. Out: a typed, named, shape-checked DAG of layers with their parameters,
//! plus the checked training settings. No spans of the source leak past this type except
//! [`Node::span`], kept only so that later errors can still point at the spec.
//!
//! Shapes are per sample (no batch dimension): `[C, H, W]` for images, `[F]` for flat vectors.

use crate::diag::Span;
use crate::train_config::TrainConfig;

pub type NodeId = usize;
pub type ParamId = usize;

/// A whole elaborated model.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerGraph {
    pub name: String,
    /// The model's parameters with their final values (defaults and `--set` applied).
    pub model_params: Vec<(String, String)>,
    pub inputs: Vec<InputInfo>,
    pub nodes: Vec<Node>,
    /// Parameters and buffers in creation order, which is PyTorch's `state_dict` order.
    pub params: Vec<ParamInfo>,
    pub outputs: Vec<(String, NodeId)>,
    pub train: Option<TrainConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InputInfo {
    pub name: String,
    pub node: NodeId,
    pub shape: Vec<usize>,
    /// Per-channel normalization applied to images on load (empty when not given).
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: NodeId,
    /// Dotted module path (`layer1.0.conv1`); the prefix of its parameters' paths.
    pub path: String,
    pub op: Op,
    pub inputs: Vec<NodeId>,
    pub shape: Vec<usize>,
    pub params: Vec<ParamId>,
    /// Frozen layers get no gradient and run batchnorm in inference mode.
    pub frozen: bool,
    /// Block instances this node is inside, outermost first, as (path, block name): used to
    /// cluster nodes in `dot` output.
    pub scopes: Vec<(String, String)>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    I64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    Weight,
    Bias,
    RunningMean,
    RunningVar,
    NumBatchesTracked,
}

impl ParamKind {
    /// Buffers are state, not parameters: not counted, not optimized.
    pub fn is_buffer(self) -> bool {
        matches!(
            self,
            ParamKind::RunningMean | ParamKind::RunningVar | ParamKind::NumBatchesTracked
        )
    }
    pub fn suffix(self) -> &'static str {
        match self {
            ParamKind::Weight => "weight",
            ParamKind::Bias => "bias",
            ParamKind::RunningMean => "running_mean",
            ParamKind::RunningVar => "running_var",
            ParamKind::NumBatchesTracked => "num_batches_tracked",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParamInfo {
    /// Full dotted path, e.g. `layer1.0.bn1.running_mean`: the safetensors / state_dict key.
    pub path: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub kind: ParamKind,
    /// False for frozen layers and fixed (inline) weights.
    pub trainable: bool,
    /// Values given inline in the spec (e.g. Sobel filters); these are never trained.
    pub fixed: Option<Vec<f32>>,
}

impl ParamInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A layer. Sizes are resolved: no expressions remain.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Input {
        name: String,
    },
    Conv2d {
        out_channels: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        /// [top, bottom, left, right]
        padding: [usize; 4],
        dilation: [usize; 2],
        groups: usize,
        bias: bool,
    },
    MaxPool2d {
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        ceil_mode: bool,
    },
    AvgPool2d {
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        ceil_mode: bool,
        count_include_pad: bool,
    },
    GlobalAvgPool,
    AdaptiveAvgPool2d {
        output: [usize; 2],
    },
    Dense {
        out_features: usize,
        bias: bool,
    },
    Flatten,
    Relu,
    LeakyRelu {
        slope: f64,
    },
    Sigmoid,
    Tanh,
    Abs,
    /// Softmax over the channel (first) axis.
    Softmax,
    BatchNorm {
        eps: f64,
        momentum: f64,
        affine: bool,
    },
    /// Local response normalization across channels (AlexNet, GoogLeNet v1 papers).
    Lrn {
        size: usize,
        alpha: f64,
        beta: f64,
        k: f64,
    },
    Dropout {
        p: f64,
    },
    /// `x / max(||x||_2, eps)` over the channel axis (face embeddings).
    L2Normalize {
        eps: f64,
    },
    /// Gram matrix `F Fᵀ / (C H W)` of a `[C, H, W]` feature map (style transfer).
    Gram,
    Identity,
    Add,
    Sub,
    Mul,
    /// Joins inputs along the channel axis.
    Concat,
    /// `max(d(a,p) - d(a,n) + margin, 0)` per sample.
    TripletLoss {
        margin: f64,
    },
}

/// A shape as `[3, 224, 224]`, in every message and printout.
pub fn show_shape(s: &[usize]) -> String {
    format!(
        "[{}]",
        s.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// A float as people write it: `0.1`, `1e-5`, `0.001`, `2`.
pub fn fmt_f64(f: f64) -> String {
    if f == 0.0 || !f.is_finite() {
        return format!("{f}");
    }
    let a = f.abs();
    if !(1e-4..1e7).contains(&a) {
        format!("{f:e}")
    } else {
        format!("{f}")
    }
}

impl Op {
    /// Whether the layer computes a loss (its value is one number per sample to minimize).
    pub fn is_loss(&self) -> bool {
        matches!(self, Op::TripletLoss { .. })
    }

    /// The short name shown in summaries and graphs.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Conv2d { .. } => "conv2d",
            Op::MaxPool2d { .. } => "maxpool2d",
            Op::AvgPool2d { .. } => "avgpool2d",
            Op::GlobalAvgPool => "global_avgpool",
            Op::AdaptiveAvgPool2d { .. } => "adaptive_avgpool2d",
            Op::Dense { .. } => "dense",
            Op::Flatten => "flatten",
            Op::Relu => "relu",
            Op::LeakyRelu { .. } => "leaky_relu",
            Op::Sigmoid => "sigmoid",
            Op::Tanh => "tanh",
            Op::Abs => "abs",
            Op::Softmax => "softmax",
            Op::BatchNorm { .. } => "batchnorm",
            Op::Lrn { .. } => "lrn",
            Op::Dropout { .. } => "dropout",
            Op::L2Normalize { .. } => "l2_normalize",
            Op::Gram => "gram",
            Op::Identity => "identity",
            Op::Add => "add",
            Op::Sub => "sub",
            Op::Mul => "mul",
            Op::Concat => "concat",
            Op::TripletLoss { .. } => "triplet_loss",
        }
    }

    /// The op with its attributes, e.g. `conv2d(6, k=5, s=1, p=2)`.
    pub fn describe(&self) -> String {
        fn pair(v: [usize; 2]) -> String {
            if v[0] == v[1] {
                v[0].to_string()
            } else {
                format!("{}x{}", v[0], v[1])
            }
        }
        match self {
            Op::Input { name } => format!("input {name}"),
            Op::Conv2d {
                out_channels,
                kernel,
                stride,
                padding,
                dilation,
                groups,
                bias,
            } => {
                let mut s = format!("conv2d({out_channels}, k={}", pair(*kernel));
                if *stride != [1, 1] {
                    s += &format!(", s={}", pair(*stride));
                }
                if padding.iter().any(|&p| p != 0) {
                    if padding.iter().all(|&p| p == padding[0]) {
                        s += &format!(", p={}", padding[0]);
                    } else {
                        s += &format!(
                            ", p=[{},{},{},{}]",
                            padding[0], padding[1], padding[2], padding[3]
                        );
                    }
                }
                if *dilation != [1, 1] {
                    s += &format!(", d={}", pair(*dilation));
                }
                if *groups != 1 {
                    s += &format!(", g={groups}");
                }
                if !bias {
                    s += ", nobias";
                }
                s + ")"
            }
            Op::MaxPool2d {
                kernel,
                stride,
                padding,
                dilation,
                ceil_mode,
            } => {
                let mut s = format!("maxpool2d(k={}, s={}", pair(*kernel), pair(*stride));
                if *padding != [0, 0] {
                    s += &format!(", p={}", pair(*padding));
                }
                if *dilation != [1, 1] {
                    s += &format!(", d={}", pair(*dilation));
                }
                if *ceil_mode {
                    s += ", ceil";
                }
                s + ")"
            }
            Op::AvgPool2d {
                kernel,
                stride,
                padding,
                ceil_mode,
                count_include_pad,
            } => {
                let mut s = format!("avgpool2d(k={}, s={}", pair(*kernel), pair(*stride));
                if *padding != [0, 0] {
                    s += &format!(", p={}", pair(*padding));
                }
                if *ceil_mode {
                    s += ", ceil";
                }
                if !count_include_pad {
                    s += ", exclude_pad";
                }
                s + ")"
            }
            Op::AdaptiveAvgPool2d { output } => format!("adaptive_avgpool2d({})", pair(*output)),
            Op::Dense { out_features, bias } => {
                format!(
                    "dense({out_features}{})",
                    if *bias { "" } else { ", nobias" }
                )
            }
            Op::LeakyRelu { slope } => format!("leaky_relu({})", fmt_f64(*slope)),
            Op::BatchNorm {
                eps,
                momentum,
                affine,
            } => format!(
                "batchnorm(eps={}, momentum={}{})",
                fmt_f64(*eps),
                fmt_f64(*momentum),
                if *affine { "" } else { ", noaffine" }
            ),
            Op::Lrn {
                size,
                alpha,
                beta,
                k,
            } => format!(
                "lrn({size}, alpha={}, beta={}, k={})",
                fmt_f64(*alpha),
                fmt_f64(*beta),
                fmt_f64(*k)
            ),
            Op::Dropout { p } => format!("dropout({})", fmt_f64(*p)),
            Op::L2Normalize { eps } => format!("l2_normalize(eps={})", fmt_f64(*eps)),
            Op::TripletLoss { margin } => format!("triplet_loss(margin={})", fmt_f64(*margin)),
            other => other.name().to_string(),
        }
    }
}

impl LayerGraph {
    /// Number of trainable-or-frozen parameters (buffers excluded), like
    /// `sum(p.numel() for p in model.parameters())`.
    pub fn num_parameters(&self) -> usize {
        self.params
            .iter()
            .filter(|p| !p.kind.is_buffer())
            .map(ParamInfo::numel)
            .sum()
    }

    pub fn num_trainable(&self) -> usize {
        self.params
            .iter()
            .filter(|p| !p.kind.is_buffer() && p.trainable)
            .map(ParamInfo::numel)
            .sum()
    }

    /// Floating-point operations of one node for one sample (a multiply-add counts as 2),
    /// saturating at `u64::MAX` (legal sizes can exceed it).
    pub fn flops(&self, node: &Node) -> u64 {
        let out: u64 = node.shape.iter().map(|&d| d as u64).product();
        let in_shape = |i: usize| -> &[usize] {
            node.inputs
                .get(i)
                .map(|&n| self.nodes[n].shape.as_slice())
                .unwrap_or(&[])
        };
        let in_elems: u64 = in_shape(0).iter().map(|&d| d as u64).product();
        match &node.op {
            Op::Conv2d {
                kernel,
                groups,
                bias,
                ..
            } => {
                let cin = in_shape(0).first().copied().unwrap_or(0) as u64;
                let per = (cin / (*groups as u64).max(1))
                    .saturating_mul(kernel[0] as u64)
                    .saturating_mul(kernel[1] as u64);
                out.saturating_mul(per.saturating_mul(2).saturating_add(u64::from(*bias)))
            }
            Op::Dense { bias, .. } => out.saturating_mul(2 * in_elems + u64::from(*bias)),
            Op::MaxPool2d { kernel, .. } | Op::AvgPool2d { kernel, .. } => out
                .saturating_mul(kernel[0] as u64)
                .saturating_mul(kernel[1] as u64),
            Op::GlobalAvgPool | Op::AdaptiveAvgPool2d { .. } => in_elems,
            Op::BatchNorm { .. } => 2 * out,
            Op::Softmax | Op::L2Normalize { .. } => 3 * in_elems,
            Op::Lrn { size, .. } => out.saturating_mul(*size as u64 + 3),
            Op::Gram => {
                let s = in_shape(0);
                let c = s.first().copied().unwrap_or(0) as u64;
                let hw: u64 = s.iter().skip(1).map(|&d| d as u64).product();
                (2 * c).saturating_mul(c).saturating_mul(hw)
            }
            Op::Relu
            | Op::LeakyRelu { .. }
            | Op::Sigmoid
            | Op::Tanh
            | Op::Abs
            | Op::Add
            | Op::Sub
            | Op::Mul => out,
            Op::TripletLoss { .. } => 6 * in_elems,
            Op::Input { .. } | Op::Flatten | Op::Dropout { .. } | Op::Identity | Op::Concat => 0,
        }
    }

    /// Module paths that own parameters, in order (for suggestions and selectors).
    pub fn module_paths(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in &self.params {
            let m = p.path.rsplit_once('.').map(|(m, _)| m).unwrap_or("");
            if out.last().map(String::as_str) != Some(m) {
                out.push(m.to_string());
            }
        }
        out
    }
}
