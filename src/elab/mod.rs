//! Elaboration: AST → layer graph.
//!
//! In: the parsed files of a spec (the root and its imports) and the chosen model with its
//! parameter values. Out: a [`LayerGraph`]: blocks instantiated, `repeat` unrolled, `when`
//! decided, every shape inferred and checked, every parameter given its PyTorch-style dotted
//! path, the `train` section checked.
//!
//! Naming follows `nn.Module` trees: a named statement is named by its name, an unnamed one by
//! its index in its sequence. `seq`, `repeat` and block instances open a new level; an unnamed
//! `residual` or `concat` puts its named statements in the enclosing level (as torchvision's
//! BasicBlock and Inception modules name theirs) and its unnamed ones under its own index.

mod augment;
mod layers;
mod objective;
mod train;

pub use augment::{AUGMENTS, augment_from_text};
pub use train::numbered_layers;
pub use train::select as select_params;
pub mod value;

use std::collections::HashMap;
use std::rc::Rc;

use crate::diag::{Diagnostic, Span, codes, suggest};
use crate::layer_graph::{DType, LayerGraph, Node, NodeId, Op, ParamId, ParamInfo, ParamKind};
use crate::syntax::ast::{Arg, Def, Expr, ExprKind, Ident, Stmt};
use value::{Value, show_shape};

pub(crate) type R<T> = Result<T, Diagnostic>;

/// Largest `repeat` count.
pub const MAX_REPEAT: i64 = 10_000;
/// Largest number of layer nodes in one model.
pub const MAX_NODES: usize = 200_000;
/// Largest number of elements in one tensor (per sample) or one parameter.
pub const MAX_ELEMENTS: usize = 1 << 40;
/// Deepest nesting of block instances.
pub const MAX_DEPTH: usize = 100;
/// Most elaboration steps (statements, layer expressions, `repeat` copies, evaluated
/// expressions; a step inside nested block instances weighs one more per level, as its scope
/// is that much larger to copy) for one model: bounds the work of bodies that `repeat` or
/// block calls multiply without adding layers, which [`MAX_NODES`] cannot stop.
pub const MAX_STEPS: usize = 500_000;
/// Longest module path (`layer4.1.downsample.0`).
pub const MAX_PATH_LEN: usize = 256;

/// The names in scope at one point of a body.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope {
    /// Shared between the copies of a scope (cloned per statement) until one changes.
    pub vars: Rc<HashMap<String, Value>>,
    /// The value flowing into the current body (`in`).
    pub input: Option<NodeId>,
    pub frozen: bool,
    pub in_model: bool,
    /// Enclosing block instances (path, block name), for graph clustering.
    pub scopes: Vec<(String, String)>,
}

/// Where a layer statement's module goes in the module tree.
#[derive(Debug, Clone)]
struct Naming {
    /// The enclosing module path ("" at the top).
    prefix: String,
    /// This statement's own name: its given name or its index.
    local: String,
    /// Whether the name was written by the user (unnamed `residual`/`concat` are transparent).
    named: bool,
}

impl Naming {
    fn path(&self) -> String {
        join(&self.prefix, &self.local)
    }
    /// The prefix for the contents of a transparent structure.
    fn inner_prefix(&self) -> String {
        if self.named {
            self.path()
        } else {
            self.prefix.clone()
        }
    }
}

fn join(prefix: &str, local: &str) -> String {
    if prefix.is_empty() {
        local.to_string()
    } else if local.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}.{local}")
    }
}

/// Numbers the unnamed statements of one sequence (`when` bodies continue their parent's).
struct Counter {
    /// Where unnamed statements go: the sequence's own path, or for a transparent `residual`,
    /// the residual's own index path.
    unnamed_prefix: String,
    next: usize,
}

impl Counter {
    fn new(unnamed_prefix: &str) -> Counter {
        Counter {
            unnamed_prefix: unnamed_prefix.to_string(),
            next: 0,
        }
    }
}

/// A `name = shared ...` module: elaborated at each application, with its parameters created
/// on the first and reused on the others.
#[derive(Debug, Clone)]
struct SharedModule {
    expr: Expr,
    scope: Scope,
    path: String,
    frozen: bool,
    applied: bool,
}

/// What every stage of elaboration can see.
pub(crate) struct Elab<'a> {
    blocks: &'a HashMap<String, &'a Def>,
    pub(crate) g: LayerGraph,
    param_index: HashMap<String, (ParamId, Span)>,
    stack: Vec<(String, Span)>,
    shared: Vec<SharedModule>,
    /// While re-applying a shared module: parameters under this path prefix are reused.
    reuse: Option<String>,
    /// Elaboration steps taken so far (see [`MAX_STEPS`]).
    steps: usize,
    /// The outermost statement that produced each value, for "this gives ..." labels: a
    /// block's output is shown at the block call, not at the block's last line.
    stmt_of: HashMap<NodeId, Span>,
    /// Module paths the user named, with where (duplicate names are errors).
    named_paths: HashMap<String, Span>,
    /// Height and width replacing the declared ones, by input name.
    input_sizes: Vec<(String, [usize; 2])>,
}

/// Elaborates `model` with the given parameter values (already type-checked).
pub fn elaborate_model(
    blocks: &HashMap<String, &Def>,
    model: &Def,
    params: Vec<(String, Value)>,
) -> Result<LayerGraph, Diagnostic> {
    elaborate_model_sized(blocks, model, params, &[])
}

/// [`elaborate_model`] with the height and width of some `[C, H, W]` inputs replaced
/// (`spec::Options::input_sizes`); naming an input the model does not have, or a vector input,
/// is an error.
pub fn elaborate_model_sized(
    blocks: &HashMap<String, &Def>,
    model: &Def,
    params: Vec<(String, Value)>,
    input_sizes: &[(String, [usize; 2])],
) -> Result<LayerGraph, Diagnostic> {
    let mut e = Elab::new(blocks, &model.name.name);
    e.input_sizes = input_sizes.to_vec();
    e.g.model_params = params.iter().map(|(k, v)| (k.clone(), v.show())).collect();
    let mut scope = Scope {
        vars: Rc::new(params.into_iter().collect()),
        in_model: true,
        ..Scope::default()
    };
    let mut counter = Counter::new("");
    let last = e.seq(&model.body, &mut scope, "", None, &mut counter)?;
    if e.g.outputs.is_empty() {
        match last {
            Some(n) if !matches!(e.g.nodes[n].op, Op::Input { .. }) || e.g.nodes.len() == 1 => {
                e.g.outputs.push(("output".into(), n))
            }
            _ => {
                return Err(
                    Diagnostic::error(codes::STRUCTURE, "the model computes nothing")
                        .at(model.name.span, "no layers after the inputs")
                        .help("add layers after `input`, or name the results with `output`"),
                );
            }
        }
    }
    if let Some((name, _)) = input_sizes
        .iter()
        .find(|(n, _)| !e.g.inputs.iter().any(|i| i.name == *n))
    {
        return Err(Diagnostic::error(
            codes::STRUCTURE,
            format!("the model has no input `{name}` to give a size to"),
        )
        .at(model.name.span, "in this model")
        .help(format!(
            "its inputs: {}",
            e.g.inputs
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if e.g.inputs.is_empty() {
        return Err(
            Diagnostic::error(codes::STRUCTURE, "the model declares no input")
                .at(model.name.span, "no `input` statement")
                .help("start the body with e.g. `input image: [3, 224, 224]`"),
        );
    }
    if let Some(t) = &model.train {
        let cfg = e.train_section(t, &scope)?;
        e.g.train = Some(cfg);
    }
    Ok(e.g)
}

impl<'a> Elab<'a> {
    /// An elaborator with an empty graph for model `name`.
    fn new(blocks: &'a HashMap<String, &'a Def>, name: &str) -> Elab<'a> {
        Elab {
            blocks,
            g: LayerGraph {
                name: name.to_string(),
                model_params: vec![],
                inputs: vec![],
                nodes: vec![],
                params: vec![],
                outputs: vec![],
                train: None,
            },
            param_index: HashMap::new(),
            stack: vec![],
            shared: vec![],
            reuse: None,
            steps: 0,
            stmt_of: HashMap::new(),
            named_paths: HashMap::new(),
            input_sizes: Vec::new(),
        }
    }

    pub(crate) fn is_layer_or_block(&self, name: &str) -> bool {
        self.blocks.contains_key(name) || layers::is_builtin(name)
    }

    /// Elaborates a sequence of statements; returns the last value.
    fn seq(
        &mut self,
        stmts: &[Stmt],
        scope: &mut Scope,
        prefix: &str,
        mut cur: Option<NodeId>,
        counter: &mut Counter,
    ) -> R<Option<NodeId>> {
        for s in stmts {
            self.step(s.span())?;
            match s {
                Stmt::Input(decl) => {
                    if !scope.in_model || !prefix.is_empty() {
                        return Err(Diagnostic::error(
                            codes::STRUCTURE,
                            "`input` belongs at the top level of a model",
                        )
                        .at(decl.span, "inside a block or nested body")
                        .help("a block takes its input from the statement before it; use `in` to refer to it"));
                    }
                    let n = self.input(decl, scope)?;
                    Rc::make_mut(&mut scope.vars).insert(decl.name.name.clone(), Value::Tensor(n));
                    cur = Some(n);
                }
                Stmt::Layer(l) => {
                    let naming = match &l.name {
                        Some(n) => {
                            self.claim_name(&join(prefix, &n.name), n)?;
                            Naming {
                                prefix: prefix.to_string(),
                                local: n.name.clone(),
                                named: true,
                            }
                        }
                        None => Naming {
                            prefix: counter.unnamed_prefix.clone(),
                            local: counter.next.to_string(),
                            named: false,
                        },
                    };
                    counter.next += 1;
                    let mut inner = scope.clone();
                    inner.frozen |= l.frozen;
                    let out = self.layer(&l.expr, &mut inner, &naming, cur, l.span)?;
                    drop(inner); // so that `scope.vars` is no longer shared and need not be copied
                    if let Some(n) = &l.name {
                        Rc::make_mut(&mut scope.vars).insert(n.name.clone(), Value::Tensor(out));
                    }
                    self.stmt_of.insert(out, l.span);
                    cur = Some(out);
                }
                Stmt::Let(l) => {
                    self.check_rebind(&l.name, scope)?;
                    self.claim_name(&join(prefix, &l.name.name), &l.name)?;
                    if l.shared {
                        let id = self.shared.len();
                        let mut sscope = scope.clone();
                        sscope.frozen |= l.frozen;
                        self.shared.push(SharedModule {
                            expr: l.value.clone(),
                            scope: sscope,
                            path: join(prefix, &l.name.name),
                            frozen: l.frozen,
                            applied: false,
                        });
                        Rc::make_mut(&mut scope.vars)
                            .insert(l.name.name.clone(), Value::Module(id));
                        continue;
                    }
                    let naming = Naming {
                        prefix: prefix.to_string(),
                        local: l.name.name.clone(),
                        named: true,
                    };
                    let mut inner = scope.clone();
                    inner.frozen |= l.frozen;
                    let out = self.tensor(&l.value, &mut inner, &naming, cur, l.span)?;
                    drop(inner);
                    Rc::make_mut(&mut scope.vars).insert(l.name.name.clone(), Value::Tensor(out));
                    self.stmt_of.insert(out, l.span);
                    cur = Some(out);
                }
                Stmt::Output { values, span } => {
                    if !scope.in_model || !prefix.is_empty() {
                        return Err(Diagnostic::error(
                            codes::STRUCTURE,
                            "`output` belongs at the top level of a model",
                        )
                        .at(*span, "inside a block or nested body")
                        .help("a block's result is its last statement"));
                    }
                    for v in values {
                        let name = match &v.kind {
                            ExprKind::Ident(n) => n.clone(),
                            _ => format!("output{}", self.g.outputs.len()),
                        };
                        let n = match self.eval(v, scope)? {
                            Value::Tensor(n) => n,
                            other => {
                                return Err(Diagnostic::error(
                                    codes::TYPE,
                                    format!("`output` needs a tensor, found {}", other.type_name()),
                                )
                                .at(v.span, "not a tensor"));
                            }
                        };
                        if let Some((_, prev)) = self.g.outputs.iter().find(|(k, _)| *k == name) {
                            let prev_span = self.g.nodes[*prev].span;
                            return Err(Diagnostic::error(
                                codes::DUPLICATE,
                                format!("output `{name}` is declared twice"),
                            )
                            .at(v.span, "second time")
                            .also(prev_span, "first output"));
                        }
                        self.g.outputs.push((name, n));
                    }
                }
                Stmt::When(w) => {
                    if self.eval_bool(&w.cond, scope)? {
                        cur = self.seq(&w.then_body, scope, prefix, cur, counter)?;
                    } else if let Some(b) = &w.else_body {
                        cur = self.seq(b, scope, prefix, cur, counter)?;
                    }
                }
            }
        }
        Ok(cur)
    }

    /// Records a user-given module path; the same path named twice is an error (except while
    /// re-applying a shared module, which elaborates the same statements again).
    fn claim_name(&mut self, path: &str, name: &Ident) -> R<()> {
        if self
            .reuse
            .as_ref()
            .is_some_and(|r| path == r || path.starts_with(&format!("{r}.")))
        {
            return Ok(());
        }
        if let Some(prev) = self.named_paths.insert(path.to_string(), name.span) {
            // Statements elaborated again for another shared application keep their name.
            if prev == name.span {
                return Ok(());
            }
            return Err(Diagnostic::error(
                codes::DUPLICATE,
                format!("the name `{}` is used twice here (`{path}`)", name.name),
            )
            .at(name.span, "second use")
            .also(prev, "first use")
            .help("give each statement of a body its own name"));
        }
        Ok(())
    }

    /// Where the value `n` was produced, as seen from the statements that use it.
    pub(crate) fn producer_span(&self, n: NodeId) -> Span {
        self.stmt_of
            .get(&n)
            .copied()
            .unwrap_or(self.g.nodes[n].span)
    }

    fn check_rebind(&self, name: &Ident, scope: &Scope) -> R<()> {
        if let Some(Value::Module(_)) = scope.vars.get(&name.name) {
            return Err(Diagnostic::error(
                codes::DUPLICATE,
                format!("`{}` is already a shared module", name.name),
            )
            .at(name.span, "rebound here")
            .help("choose another name"));
        }
        if self.is_layer_or_block(&name.name) {
            return Err(Diagnostic::error(
                codes::DUPLICATE,
                format!("`{}` is the name of a layer or block", name.name),
            )
            .at(name.span, "would hide the layer")
            .help(format!("choose another name, e.g. `{}_out`", name.name)));
        }
        Ok(())
    }

    fn input(&mut self, decl: &crate::syntax::ast::InputDecl, scope: &Scope) -> R<NodeId> {
        if let Some(prev) = self.g.inputs.iter().find(|i| i.name == decl.name.name) {
            let prev_span = self.g.nodes[prev.node].span;
            return Err(Diagnostic::error(
                codes::DUPLICATE,
                format!("input `{}` is declared twice", decl.name.name),
            )
            .at(decl.name.span, "second declaration")
            .also(prev_span, "first declaration"));
        }
        if decl.shape.is_empty() {
            return Err(Diagnostic::error(codes::SHAPE, "an input needs a shape")
                .at(decl.span, "empty shape")
                .help("write e.g. `[3, 224, 224]` (channels, height, width) or `[features]`"));
        }
        if decl.shape.len() != 1 && decl.shape.len() != 3 {
            return Err(Diagnostic::error(
                codes::SHAPE,
                format!(
                    "inputs are [channels, height, width] or [features], this has {} dimensions",
                    decl.shape.len()
                ),
            )
            .at(decl.span, "unsupported rank"));
        }
        let mut shape = Vec::new();
        for d in &decl.shape {
            shape.push(self.size(d, scope, "an input dimension")?);
        }
        if let Some((_, [h, w])) = self.input_sizes.iter().find(|(n, _)| *n == decl.name.name) {
            if shape.len() != 3 {
                return Err(Diagnostic::error(
                    codes::SHAPE,
                    format!(
                        "input `{}` is a vector {}: only an image input [C, H, W] can take an \
                         image's size",
                        decl.name.name,
                        crate::layer_graph::show_shape(&shape)
                    ),
                )
                .at(decl.span, "not an image"));
            }
            (shape[1], shape[2]) = (*h, *w);
        }
        self.check_numel(&shape, decl.span)?;
        let mut mean = Vec::new();
        let mut std = Vec::new();
        for a in &decl.attrs {
            let Some(name) = &a.name else {
                return Err(
                    Diagnostic::error(codes::BAD_ARG, "input attributes are named")
                        .at(a.span, "unnamed")
                        .help("write `with mean=[...], std=[...]`"),
                );
            };
            let target = match name.name.as_str() {
                "mean" => &mut mean,
                "std" => &mut std,
                other => {
                    let hint = suggest(other, ["mean", "std"]);
                    return Err(Diagnostic::error(
                        codes::BAD_ARG,
                        format!("unknown input attribute `{other}`"),
                    )
                    .at(name.span, "unknown")
                    .help(match hint {
                        Some(h) => format!("did you mean `{h}`? inputs take `mean` and `std`"),
                        None => "inputs take `mean` and `std`".into(),
                    }));
                }
            };
            let v = self.eval(&a.value, scope)?;
            let items = match v {
                Value::List(items) => items,
                v => vec![v],
            };
            for it in items {
                target.push(value::as_f64(&it).ok_or_else(|| {
                    Diagnostic::error(codes::TYPE, "`mean` and `std` are lists of numbers")
                        .at(a.value.span, "not a number list")
                })?);
            }
            let c = shape[0];
            if target.len() != c && target.len() != 1 {
                return Err(Diagnostic::error(
                    codes::SHAPE,
                    format!(
                        "`{}` has {} values but the input has {c} channels",
                        name.name,
                        target.len()
                    ),
                )
                .at(a.value.span, format!("expected {c} values (or 1)")));
            }
        }
        if std.iter().any(|&s| s <= 0.0) {
            return Err(
                Diagnostic::error(codes::RANGE, "`std` values must be positive")
                    .at(decl.span, "in this input"),
            );
        }
        let node = self.node(
            decl.name.name.clone(),
            Op::Input {
                name: decl.name.name.clone(),
            },
            vec![],
            shape.clone(),
            vec![],
            scope,
            decl.span,
        )?;
        self.g.inputs.push(crate::layer_graph::InputInfo {
            name: decl.name.name.clone(),
            node,
            shape,
            mean,
            std,
        });
        Ok(node)
    }

    /// Elaborates a layer expression applied to `cur`.
    fn layer(
        &mut self,
        e: &Expr,
        scope: &mut Scope,
        naming: &Naming,
        cur: Option<NodeId>,
        stmt_span: Span,
    ) -> R<NodeId> {
        self.step(e.span)?;
        if naming.prefix.len() + naming.local.len() > MAX_PATH_LEN {
            // Every node keeps the paths of its enclosing blocks: long paths cost memory.
            return Err(Diagnostic::error(
                codes::TOO_LARGE,
                format!("module path longer than {MAX_PATH_LEN} characters"),
            )
            .at(e.span, "nested too deep")
            .help("flatten the nesting or use shorter names"));
        }
        match &e.kind {
            ExprKind::Ident(name) => match scope.vars.get(name).cloned() {
                Some(Value::Tensor(n)) => Ok(n),
                Some(Value::Module(m)) => {
                    let input = self.need_input(cur, e.span)?;
                    self.apply_shared(m, input)
                }
                Some(v) => Err(Diagnostic::error(
                    codes::TYPE,
                    format!("expected a layer, found {} `{name}`", v.type_name()),
                )
                .at(e.span, "not a layer")),
                None => self.call(
                    &Ident {
                        name: name.clone(),
                        span: e.span,
                    },
                    &[],
                    e.span,
                    scope,
                    naming,
                    cur,
                    stmt_span,
                ),
            },
            ExprKind::Call { callee, args } => {
                self.call(callee, args, e.span, scope, naming, cur, stmt_span)
            }
            ExprKind::In => self.need_input(scope.input, e.span),
            ExprKind::Pipe(..) => self.tensor(e, scope, naming, cur, stmt_span),
            ExprKind::Cond(c, t, f) => {
                if self.eval_bool(c, scope)? {
                    self.layer(t, scope, naming, cur, stmt_span)
                } else {
                    self.layer(f, scope, naming, cur, stmt_span)
                }
            }
            ExprKind::Seq(body) => {
                let input = self.need_input(cur, e.span)?;
                let mut inner = scope.clone();
                inner.input = Some(input);
                let mut counter = Counter::new(&naming.path());
                let out = self.seq(body, &mut inner, &naming.path(), Some(input), &mut counter)?;
                Ok(out.unwrap_or(input))
            }
            ExprKind::Repeat { count, body } => {
                let input = self.need_input(cur, e.span)?;
                let n = self.eval_int(count, scope)?;
                if n < 0 {
                    return Err(Diagnostic::error(
                        codes::RANGE,
                        format!("a repeat count must not be negative, found {n}"),
                    )
                    .at(count.span, "negative"));
                }
                if n > MAX_REPEAT {
                    return Err(Diagnostic::error(
                        codes::TOO_LARGE,
                        format!("repeat count {n} is larger than the limit of {MAX_REPEAT}"),
                    )
                    .at(count.span, "too many copies"));
                }
                let path = naming.path();
                let mut x = input;
                for k in 0..n {
                    self.step(e.span)?;
                    let copy = Naming {
                        prefix: path.clone(),
                        local: k.to_string(),
                        named: true,
                    };
                    let mut inner = scope.clone();
                    inner.input = Some(x);
                    // A copy made of one unnamed statement *is* that statement (`layer1.0`).
                    x = match body.as_slice() {
                        [Stmt::Layer(l)] if l.name.is_none() => {
                            inner.frozen |= l.frozen;
                            self.layer(&l.expr, &mut inner, &copy, Some(x), l.span)?
                        }
                        _ => {
                            let mut counter = Counter::new(&copy.path());
                            self.seq(body, &mut inner, &copy.path(), Some(x), &mut counter)?
                                .unwrap_or(x)
                        }
                    };
                }
                Ok(x)
            }
            ExprKind::Residual { body, shortcut } => {
                let input = self.need_input(cur, e.span)?;
                let prefix = naming.inner_prefix();
                let mut inner = scope.clone();
                inner.input = Some(input);
                // Named statements land in the enclosing level (torchvision's BasicBlock);
                // unnamed ones under the residual's own index, so they cannot collide.
                let mut counter = Counter::new(&naming.path());
                let main = self
                    .seq(body, &mut inner, &prefix, Some(input), &mut counter)?
                    .unwrap_or(input);
                let mut sc = input;
                let mut sc_span = e.span;
                if let Some(s) = shortcut {
                    let take = match &s.cond {
                        Some(c) => self.eval_bool(c, &inner)?,
                        None => true,
                    };
                    if take {
                        let mut sinner = scope.clone();
                        sinner.input = Some(input);
                        let mut counter = Counter::new(&join(&naming.path(), "shortcut"));
                        sc = self
                            .seq(&s.body, &mut sinner, &prefix, Some(input), &mut counter)?
                            .unwrap_or(input);
                        sc_span = s.span;
                    }
                }
                let (ms, ss) = (&self.g.nodes[main].shape, &self.g.nodes[sc].shape);
                if ms != ss {
                    let identity = sc == input;
                    let msg = format!(
                        "residual shapes differ: the body gives {} but the shortcut gives {}",
                        show_shape(ms),
                        show_shape(ss)
                    );
                    let main_span = self.producer_span(main);
                    let mut d = Diagnostic::error(codes::SHAPE, msg)
                        .at(main_span, format!("body ends with {}", show_shape(ms)))
                        .also(
                            sc_span,
                            if identity {
                                format!("identity shortcut carries {}", show_shape(ss))
                            } else {
                                format!("shortcut gives {}", show_shape(ss))
                            },
                        );
                    if identity {
                        d = d.help("add a projection: `shortcut when stride != 1 || in.channels != c { downsample: seq { conv(c, 1, stride=stride, bias=false); batchnorm } }`");
                    }
                    return Err(d);
                }
                let shape = ms.clone();
                self.node(
                    naming.path(),
                    Op::Add,
                    vec![main, sc],
                    shape,
                    vec![],
                    scope,
                    stmt_span,
                )
            }
            ExprKind::Concat(branches) => {
                let input = self.need_input(cur, e.span)?;
                let prefix = naming.inner_prefix();
                let mut outs = Vec::new();
                let own = naming.path();
                for (counter, b) in branches.iter().enumerate() {
                    let Stmt::Layer(l) = b else {
                        return Err(Diagnostic::error(
                            codes::STRUCTURE,
                            "each statement of `concat { }` is a branch: a layer, block or `seq`",
                        )
                        .at(b.span(), "not a branch"));
                    };
                    // As in `residual`: named branches in the enclosing level, unnamed ones
                    // under the concat's own index.
                    let bn = match &l.name {
                        Some(n) => {
                            self.claim_name(&join(&prefix, &n.name), n)?;
                            Naming {
                                prefix: prefix.clone(),
                                local: n.name.clone(),
                                named: true,
                            }
                        }
                        None => Naming {
                            prefix: own.clone(),
                            local: counter.to_string(),
                            named: false,
                        },
                    };
                    let mut inner = scope.clone();
                    inner.input = Some(input);
                    inner.frozen |= l.frozen;
                    let out = self.layer(&l.expr, &mut inner, &bn, Some(input), l.span)?;
                    outs.push((out, l.span));
                }
                if outs.is_empty() {
                    return Err(Diagnostic::error(codes::STRUCTURE, "`concat { }` has no branches")
                        .at(e.span, "empty"));
                }
                self.concat_node(naming.path(), outs, scope, stmt_span)
            }
            ExprKind::Int(_)
            | ExprKind::Float(_)
            | ExprKind::Bool(_)
            | ExprKind::Str(_)
            | ExprKind::List(_)
            | ExprKind::Unary(..)
            | ExprKind::Binary(..)
            | ExprKind::Member(..)
            | ExprKind::Index(..) => Err(Diagnostic::error(
                codes::TYPE,
                "expected a layer, found a value",
            )
            .at(e.span, "not a layer")
            .help("a statement is a layer (`conv(16, 3)`), a block call, or a structure (`seq`, `repeat`, `residual`, `concat`)")),
        }
    }

    /// Joins tensors along channels (both spans shown when spatial sizes differ).
    fn concat_node(
        &mut self,
        path: String,
        parts: Vec<(NodeId, Span)>,
        scope: &Scope,
        span: Span,
    ) -> R<NodeId> {
        let (first, first_span) = parts[0];
        let fs = self.g.nodes[first].shape.clone();
        let mut channels = 0usize;
        for &(n, s) in &parts {
            let sh = &self.g.nodes[n].shape;
            if sh.len() != fs.len() || sh.get(1..) != fs.get(1..) {
                return Err(Diagnostic::error(
                    codes::SHAPE,
                    format!(
                        "concat needs equal sizes except channels: {} and {}",
                        show_shape(&fs),
                        show_shape(sh)
                    ),
                )
                .at(s, format!("gives {}", show_shape(sh)))
                .also(first_span, format!("gives {}", show_shape(&fs)))
                .help("make the branches keep the same height and width (check stride and padding, e.g. `pad=same`)"));
            }
            channels = channels.checked_add(sh[0]).ok_or_else(|| {
                Diagnostic::error(codes::TOO_LARGE, "too many channels").at(s, "overflow")
            })?;
        }
        let mut shape = fs;
        shape[0] = channels;
        self.check_numel(&shape, span)?;
        let inputs = parts.iter().map(|p| p.0).collect();
        self.node(path, Op::Concat, inputs, shape, vec![], scope, span)
    }

    /// Elaborates an expression that yields a tensor (the value of `name = ...`).
    fn tensor(
        &mut self,
        e: &Expr,
        scope: &mut Scope,
        naming: &Naming,
        cur: Option<NodeId>,
        stmt_span: Span,
    ) -> R<NodeId> {
        match &e.kind {
            ExprKind::Pipe(..) => {
                // Flatten `x |> a |> b` into x, [a, b].
                let mut stages = Vec::new();
                let mut head = e;
                while let ExprKind::Pipe(l, r) = &head.kind {
                    stages.push(&**r);
                    head = l;
                }
                stages.reverse();
                let mut x = self.tensor(head, scope, naming, cur, stmt_span)?;
                let many = stages.len() > 1;
                for (i, st) in stages.into_iter().enumerate() {
                    let n = if many {
                        Naming {
                            prefix: naming.path(),
                            local: i.to_string(),
                            named: true,
                        }
                    } else {
                        naming.clone()
                    };
                    let mut inner = scope.clone();
                    inner.input = Some(x);
                    x = self.layer(st, &mut inner, &n, Some(x), stmt_span)?;
                }
                Ok(x)
            }
            ExprKind::Ident(name) => match scope.vars.get(name) {
                Some(Value::Tensor(n)) => Ok(*n),
                _ => self.layer(e, scope, naming, cur, stmt_span),
            },
            ExprKind::In => self.need_input(scope.input, e.span),
            _ => self.layer(e, scope, naming, cur, stmt_span),
        }
    }

    fn need_input(&self, cur: Option<NodeId>, span: Span) -> R<NodeId> {
        cur.ok_or_else(|| {
            Diagnostic::error(codes::STRUCTURE, "this layer has no input")
                .at(span, "nothing flows into it")
                .help("declare an input first, e.g. `input image: [3, 224, 224]`")
        })
    }

    /// A call in layer position: a shared module, a block or a built-in layer.
    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        callee: &Ident,
        args: &[Arg],
        span: Span,
        scope: &mut Scope,
        naming: &Naming,
        cur: Option<NodeId>,
        stmt_span: Span,
    ) -> R<NodeId> {
        if let Some(v) = scope.vars.get(&callee.name).cloned() {
            return match v {
                Value::Module(m) => {
                    let input = match args {
                        [] => self.need_input(cur, span)?,
                        [a] if a.name.is_none() => {
                            let mut inner = scope.clone();
                            self.tensor(&a.value, &mut inner, naming, cur, stmt_span)?
                        }
                        _ => {
                            return Err(Diagnostic::error(
                                codes::BAD_ARG,
                                format!(
                                    "shared module `{}` takes one tensor argument",
                                    callee.name
                                ),
                            )
                            .at(span, "wrong arguments")
                            .help(format!(
                                "write `{}(x)` or `x |> {}`",
                                callee.name, callee.name
                            )));
                        }
                    };
                    self.apply_shared(m, input)
                }
                other => Err(Diagnostic::error(
                    codes::TYPE,
                    format!("`{}` is a {}, not a layer", callee.name, other.type_name()),
                )
                .at(callee.span, "cannot be called")),
            };
        }
        if let Some(def) = self.blocks.get(callee.name.as_str()).copied() {
            let input = self.need_input(cur, span)?;
            return self.instantiate(def, callee, args, span, scope, naming, input);
        }
        if layers::is_builtin(&callee.name) {
            return self.builtin_layer(callee, args, span, scope, naming, cur, stmt_span);
        }
        let mut candidates: Vec<&str> = self.blocks.keys().map(String::as_str).collect();
        candidates.extend(layers::BUILTINS.iter().copied());
        let hint = suggest(&callee.name, candidates);
        Err(Diagnostic::error(
            codes::UNKNOWN_LAYER,
            format!("unknown layer or block `{}`", callee.name),
        )
        .at(callee.span, "not a layer or block")
        .help(match hint {
            Some(h) => format!("did you mean `{h}`?"),
            None => {
                "define it with `block name(...) { ... }`, or `import` the file that does".into()
            }
        }))
    }

    #[allow(clippy::too_many_arguments)]
    fn instantiate(
        &mut self,
        def: &Def,
        callee: &Ident,
        args: &[Arg],
        span: Span,
        caller: &Scope,
        naming: &Naming,
        input: NodeId,
    ) -> R<NodeId> {
        if let Some((_, first)) = self.stack.iter().find(|(n, _)| *n == def.name.name) {
            return Err(Diagnostic::error(
                codes::RECURSION,
                format!("block `{}` instantiates itself", def.name.name),
            )
            .at(span, "recursive instantiation")
            .also(*first, "first instantiated here")
            .note(format!(
                "instantiation chain: {}",
                self.stack
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .chain([def.name.name.as_str()])
                    .collect::<Vec<_>>()
                    .join(" -> ")
            ))
            .help("blocks cannot contain themselves; use `repeat` for repetition"));
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(Diagnostic::error(
                codes::TOO_LARGE,
                format!("blocks nested more than {MAX_DEPTH} deep"),
            )
            .at(span, "too deep"));
        }
        // Bind arguments to parameters.
        let names: Vec<&str> = def.params.iter().map(|p| p.name.name.as_str()).collect();
        let slots = layers::bind_args(callee, args, &names, span, "block")?;
        let path = naming.path();
        let mut scope = Scope {
            vars: Rc::default(),
            input: Some(input),
            frozen: caller.frozen,
            in_model: false,
            scopes: caller.scopes.clone(),
        };
        scope.scopes.push((path.clone(), def.name.name.clone()));
        for (p, slot) in def.params.iter().zip(slots) {
            let (v, vspan) = match slot {
                Some(a) => (self.eval(&a.value, caller)?, a.value.span),
                None => match &p.default {
                    Some(d) => (self.eval(d, &scope)?, d.span),
                    None => {
                        return Err(Diagnostic::error(
                            codes::BAD_ARG,
                            format!(
                                "missing argument `{}` of block `{}`",
                                p.name.name, def.name.name
                            ),
                        )
                        .at(span, format!("`{}` not given", p.name.name))
                        .also(p.span, "declared here")
                        .help(format!(
                            "pass it: `{}(..., {}=...)`",
                            def.name.name, p.name.name
                        )));
                    }
                },
            };
            let v = v.coerce(p.ty).map_err(|v| {
                Diagnostic::error(
                    codes::TYPE,
                    format!(
                        "argument `{}` of `{}` is {}, found {} `{}`",
                        p.name.name,
                        def.name.name,
                        p.ty.as_str(),
                        v.type_name(),
                        v.show()
                    ),
                )
                .at(vspan, format!("expected {}", p.ty.as_str()))
                .also(p.ty_span, "declared here")
            })?;
            Rc::make_mut(&mut scope.vars).insert(p.name.name.clone(), v);
        }
        self.stack.push((def.name.name.clone(), span));
        let mut counter = Counter::new(&path);
        let out = self.seq(&def.body, &mut scope, &path, Some(input), &mut counter);
        self.stack.pop();
        Ok(out?.unwrap_or(input))
    }

    fn apply_shared(&mut self, m: usize, input: NodeId) -> R<NodeId> {
        let sm = self.shared[m].clone();
        let naming = Naming {
            prefix: String::new(),
            local: sm.path.clone(),
            named: true,
        };
        let mut scope = sm.scope.clone();
        scope.input = Some(input);
        scope.frozen |= sm.frozen;
        let saved = self.reuse.take();
        if sm.applied {
            self.reuse = Some(sm.path.clone());
        }
        let r = self.tensor(&sm.expr, &mut scope, &naming, Some(input), sm.expr.span);
        self.reuse = saved;
        self.shared[m].applied = true;
        r
    }

    /// Counts one elaboration step; an error once the model takes more than [`MAX_STEPS`].
    pub(crate) fn step(&mut self, span: Span) -> R<()> {
        self.steps += 1 + self.stack.len();
        if self.steps > MAX_STEPS {
            return Err(Diagnostic::error(
                codes::TOO_LARGE,
                format!("elaborating the model takes more than {MAX_STEPS} steps"),
            )
            .at(span, "limit reached here")
            .help("check `repeat` counts and blocks that call other blocks many times"));
        }
        Ok(())
    }

    /// Adds a node to the graph.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn node(
        &mut self,
        path: String,
        op: Op,
        inputs: Vec<NodeId>,
        shape: Vec<usize>,
        params: Vec<ParamId>,
        scope: &Scope,
        span: Span,
    ) -> R<NodeId> {
        if self.g.nodes.len() >= MAX_NODES {
            return Err(Diagnostic::error(
                codes::TOO_LARGE,
                format!("the model has more than {MAX_NODES} layers"),
            )
            .at(span, "limit reached here")
            .help("check `repeat` counts"));
        }
        let id = self.g.nodes.len();
        self.g.nodes.push(Node {
            id,
            path,
            op,
            inputs,
            shape,
            params,
            frozen: scope.frozen,
            scopes: scope.scopes.clone(),
            span,
        });
        Ok(id)
    }

    /// Creates (or, inside a re-applied shared module, finds) a parameter.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn param(
        &mut self,
        path: String,
        shape: Vec<usize>,
        kind: ParamKind,
        scope: &Scope,
        fixed: Option<Vec<f32>>,
        span: Span,
    ) -> R<ParamId> {
        self.check_numel(&shape, span)?;
        if let Some(&(id, prev_span)) = self.param_index.get(&path) {
            let reusing = self
                .reuse
                .as_ref()
                .is_some_and(|r| path == *r || path.starts_with(&format!("{r}.")));
            if reusing {
                if self.g.params[id].shape != shape {
                    return Err(Diagnostic::error(
                        codes::SHAPE,
                        format!(
                            "shared module applied to an input of another shape: `{path}` would be {} here but is {}",
                            show_shape(&shape),
                            show_shape(&self.g.params[id].shape)
                        ),
                    )
                    .at(span, "this application")
                    .also(prev_span, "first application"));
                }
                return Ok(id);
            }
            return Err(Diagnostic::error(
                codes::DUPLICATE,
                format!("two layers define the parameter `{path}`"),
            )
            .at(span, "second definition")
            .also(prev_span, "first definition")
            .help("give one of the statements a different name"));
        }
        let id = self.g.params.len();
        let dtype = if kind == ParamKind::NumBatchesTracked {
            DType::I64
        } else {
            DType::F32
        };
        let trainable = !kind.is_buffer() && !scope.frozen && fixed.is_none();
        self.g.params.push(ParamInfo {
            path: path.clone(),
            shape,
            dtype,
            kind,
            trainable,
            fixed,
        });
        self.param_index.insert(path, (id, span));
        Ok(id)
    }

    pub(crate) fn check_numel(&self, shape: &[usize], span: Span) -> R<()> {
        let mut n: usize = 1;
        for &d in shape {
            n = n
                .checked_mul(d)
                .filter(|&n| n <= MAX_ELEMENTS)
                .ok_or_else(|| {
                    Diagnostic::error(
                        codes::TOO_LARGE,
                        format!("tensor {} has more than 2^40 elements", show_shape(shape)),
                    )
                    .at(span, "too large")
                })?;
        }
        Ok(())
    }

    /// Evaluates a positive size (channels, kernel, count...).
    pub(crate) fn size(&mut self, e: &Expr, scope: &Scope, what: &str) -> R<usize> {
        let v = self.eval_int(e, scope)?;
        if v <= 0 {
            return Err(Diagnostic::error(
                codes::RANGE,
                format!("{what} must be positive, found {v}"),
            )
            .at(e.span, "not positive"));
        }
        if v > (1 << 31) {
            return Err(Diagnostic::error(
                codes::TOO_LARGE,
                format!("{what} {v} is larger than the limit of 2^31"),
            )
            .at(e.span, "too large"));
        }
        Ok(v as usize)
    }
}

/// Every built-in layer and tensor operation.
pub use layers::BUILTINS as BUILTIN_LAYERS;
/// PyTorch's output-size rules (convolution; pooling with ceil mode), for graph transformations
/// that change an input's size ([`crate::sliding`]).
pub(crate) use layers::{conv_out, pool_out};

/// Whether `name` is a built-in layer (blocks may not take these names).
pub fn is_builtin_layer(name: &str) -> bool {
    layers::is_builtin(name)
}

/// Evaluates a constant expression (a model parameter's default or `--set` value), with the
/// earlier parameters in scope.
pub fn eval_const(e: &Expr, vars: Vec<(String, Value)>) -> Result<Value, Diagnostic> {
    let blocks = HashMap::new();
    let mut el = Elab::new(&blocks, "");
    let scope = Scope {
        vars: Rc::new(vars.into_iter().collect()),
        ..Scope::default()
    };
    el.eval(e, &scope)
}
