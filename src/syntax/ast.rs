//! The abstract syntax tree shared by both front ends.
//!
//! In: nothing (plain data). Out: the tree that `syntax::parse` (from `.net` text) and `yaml`
//! (from YAML) both produce and that `elab` consumes. Every node carries a [`Span`] so that
//! later stages can point diagnostics back at the source, whichever front end it came from.
//!
//! The tree is deliberately generic: a layer, a block instantiation, a tensor operation and a
//! scalar expression are all [`Expr`]s. Whether `foo(3)` builds a layer or computes a value is
//! decided by the elaborator, which knows what `foo` is.

use crate::diag::Span;

/// A name as written in the source.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// One source file: its imports, blocks and models in source order.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceFile {
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// `import "path.net"`: the path is relative to the importing file.
    Import { path: String, span: Span },
    /// `block name(params) { body }`: a reusable, parameterized piece of network.
    Block(Def),
    /// `model name(params) { body train { ... } }`: a whole network.
    Model(Def),
}

/// A block or model definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Def {
    pub name: Ident,
    pub params: Vec<Param>,
    pub body: Vec<Stmt>,
    /// Only models have a training section.
    pub train: Option<TrainSection>,
    pub span: Span,
}

/// A formal parameter: `c: int`, `rate: float = 0.5`.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: Ident,
    pub ty: TypeName,
    pub ty_span: Span,
    pub default: Option<Expr>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeName {
    Int,
    Float,
    Bool,
    Str,
}

impl TypeName {
    pub fn as_str(self) -> &'static str {
        match self {
            TypeName::Int => "int",
            TypeName::Float => "float",
            TypeName::Bool => "bool",
            TypeName::Str => "str",
        }
    }
    pub fn from_name(s: &str) -> Option<TypeName> {
        Some(match s {
            "int" => TypeName::Int,
            "float" => TypeName::Float,
            "bool" => TypeName::Bool,
            "str" => TypeName::Str,
            _ => return None,
        })
    }
}

/// A statement of a body. A body is a sequence: each layer statement takes the previous
/// statement's output, like PyTorch's `nn.Sequential`.
#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    /// `input image: [3, 224, 224] with mean=[...], std=[...]`
    Input(InputDecl),
    /// `[name:] [frozen] layer` — applies a layer or block to the current value.
    Layer(LayerStmt),
    /// `name = expr` binds a tensor (a layer applied to the current value, a tensor operation
    /// such as `add(a, b)`, or a pipe `x |> conv(8, 3)`); `name = shared block(...)` binds a
    /// module instance whose weights are shared by every application `name(x)`.
    Let(LetStmt),
    /// `output a, b`: the model's outputs (by default, the last value).
    Output { values: Vec<Expr>, span: Span },
    /// `when cond { ... } else { ... }`: statements that exist only when `cond` holds. The
    /// chosen statements are spliced into the enclosing sequence.
    When(WhenStmt),
}

impl Stmt {
    pub fn span(&self) -> Span {
        match self {
            Stmt::Input(s) => s.span,
            Stmt::Layer(s) => s.span,
            Stmt::Let(s) => s.span,
            Stmt::Output { span, .. } => *span,
            Stmt::When(s) => s.span,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct InputDecl {
    pub name: Ident,
    /// Per-sample shape (no batch dimension), e.g. `[3, size, size]`.
    pub shape: Vec<Expr>,
    /// Attributes after `with`: `mean`, `std`.
    pub attrs: Vec<Arg>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LayerStmt {
    pub name: Option<Ident>,
    pub frozen: bool,
    pub expr: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LetStmt {
    pub name: Ident,
    pub shared: bool,
    pub frozen: bool,
    pub value: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WhenStmt {
    pub cond: Expr,
    pub then_body: Vec<Stmt>,
    pub else_body: Option<Vec<Stmt>>,
    pub span: Span,
}

/// `train { key: value ... }`: parsed and checked by the elaborator, used by training.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSection {
    pub entries: Vec<TrainEntry>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainEntry {
    pub key: Ident,
    pub value: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    /// A name: a parameter, a bound tensor or module, or a layer used without arguments.
    Ident(String),
    /// `in`: the shape of the value flowing into the current block.
    In,
    List(Vec<Expr>),
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `if c then a else b`
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `e.name`, e.g. `in.channels`
    Member(Box<Expr>, Ident),
    /// `e[i]`
    Index(Box<Expr>, Box<Expr>),
    /// `callee(args)`: a layer, block, tensor operation, builtin function or shared module.
    Call {
        callee: Ident,
        args: Vec<Arg>,
    },
    /// `x |> layer`: applies a layer to a tensor.
    Pipe(Box<Expr>, Box<Expr>),
    /// `seq { ... }`: a nested sequence (a module whose children are named by index).
    Seq(Vec<Stmt>),
    /// `repeat n { ... }`: n copies named `0..n`.
    Repeat {
        count: Box<Expr>,
        body: Vec<Stmt>,
    },
    /// `residual { body } [shortcut [when cond] { ... }]`: `body(x) + shortcut(x)`.
    Residual {
        body: Vec<Stmt>,
        shortcut: Option<Box<Shortcut>>,
    },
    /// `concat { ... }`: each statement is a branch on the same input; outputs are joined
    /// along channels.
    Concat(Vec<Stmt>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Shortcut {
    /// When absent the projection is always used; when false the shortcut is the identity.
    pub cond: Option<Expr>,
    pub body: Vec<Stmt>,
    pub span: Span,
}

/// A call argument, positional (`3`) or named (`stride=2`).
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Not,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    /// `/`: an int when two ints divide exactly (`c / 4`), a float otherwise.
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl BinOp {
    pub fn as_str(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }
}
