//! Compile-time values and the evaluation of scalar expressions.
//!
//! In: an AST [`Expr`] and the names in scope. Out: a [`Value`] (int, float, bool, string,
//! list, or a reference to a tensor or shared module), or a diagnostic. Integer arithmetic is
//! checked: overflow is an error, never a wrap or a panic.

use super::{Elab, R, Scope};
use crate::diag::{Diagnostic, Span, codes, suggest};
use crate::layer_graph::NodeId;
use crate::syntax::ast::{BinOp, Expr, ExprKind, TypeName, UnOp};

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    List(Vec<Value>),
    /// A tensor produced by some node (a bound name, `in`).
    Tensor(NodeId),
    /// A shared module instance (`name = shared block(...)`).
    Module(usize),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Bool(_) => "bool",
            Value::Str(_) => "str",
            Value::List(_) => "list",
            Value::Tensor(_) => "tensor",
            Value::Module(_) => "shared module",
        }
    }

    /// Checks (and for int → float, converts) a value against a declared parameter type.
    pub fn coerce(self, ty: TypeName) -> Result<Value, Value> {
        match (ty, self) {
            (TypeName::Int, v @ Value::Int(_)) => Ok(v),
            (TypeName::Float, Value::Int(i)) => Ok(Value::Float(i as f64)),
            (TypeName::Float, v @ Value::Float(_)) => Ok(v),
            (TypeName::Bool, v @ Value::Bool(_)) => Ok(v),
            (TypeName::Str, v @ Value::Str(_)) => Ok(v),
            (_, v) => Err(v),
        }
    }

    /// How the value reads in messages and summaries.
    pub fn show(&self) -> String {
        match self {
            Value::Int(i) => i.to_string(),
            Value::Float(f) => {
                if f.fract() == 0.0 && f.abs() < 1e7 {
                    format!("{f:.1}")
                } else {
                    crate::layer_graph::fmt_f64(*f)
                }
            }
            Value::Bool(b) => b.to_string(),
            Value::Str(s) => format!("{s:?}"),
            Value::List(v) => format!(
                "[{}]",
                v.iter().map(Value::show).collect::<Vec<_>>().join(", ")
            ),
            Value::Tensor(n) => format!("tensor %{n}"),
            Value::Module(m) => format!("module #{m}"),
        }
    }
}

fn overflow(span: Span) -> Diagnostic {
    Diagnostic::error(codes::TOO_LARGE, "integer overflow")
        .at(span, "the result does not fit in 64 bits")
}

fn type_err(span: Span, expected: &str, got: &Value) -> Diagnostic {
    Diagnostic::error(
        codes::TYPE,
        format!(
            "expected {expected}, found {} `{}`",
            got.type_name(),
            got.show()
        ),
    )
    .at(span, format!("expected {expected}"))
}

impl Elab<'_> {
    /// Evaluates an expression to a value.
    pub(super) fn eval(&mut self, e: &Expr, scope: &Scope) -> R<Value> {
        let span = e.span;
        self.step(span)?;
        Ok(match &e.kind {
            ExprKind::Int(i) => Value::Int(*i),
            ExprKind::Float(f) => Value::Float(*f),
            ExprKind::Bool(b) => Value::Bool(*b),
            ExprKind::Str(s) => Value::Str(s.clone()),
            ExprKind::Ident(name) => match scope.vars.get(name) {
                Some(v) => v.clone(),
                None => return Err(self.unknown_name(name, span, scope)),
            },
            ExprKind::In => match scope.input {
                Some(n) => Value::Tensor(n),
                None => {
                    return Err(Diagnostic::error(
                        codes::UNKNOWN_NAME,
                        "`in` has no value here",
                    )
                    .at(span, "nothing flows into this point")
                    .help("`in` is the value entering a block; in a model, refer to an input by its name"));
                }
            },
            ExprKind::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for it in items {
                    out.push(self.eval(it, scope)?);
                }
                Value::List(out)
            }
            ExprKind::Unary(op, a) => {
                let v = self.eval(a, scope)?;
                match (op, v) {
                    (UnOp::Neg, Value::Int(i)) => {
                        Value::Int(i.checked_neg().ok_or_else(|| overflow(span))?)
                    }
                    (UnOp::Neg, Value::Float(f)) => Value::Float(-f),
                    (UnOp::Not, Value::Bool(b)) => Value::Bool(!b),
                    (UnOp::Neg, v) => return Err(type_err(a.span, "a number", &v)),
                    (UnOp::Not, v) => return Err(type_err(a.span, "a bool", &v)),
                }
            }
            ExprKind::Binary(op, a, b) => self.binary(*op, a, b, span, scope)?,
            ExprKind::Cond(c, t, f) => {
                if self.eval_bool(c, scope)? {
                    self.eval(t, scope)?
                } else {
                    self.eval(f, scope)?
                }
            }
            ExprKind::Member(base, field) => {
                let v = self.eval(base, scope)?;
                let Value::Tensor(n) = v else {
                    return Err(Diagnostic::error(
                        codes::TYPE,
                        format!("`.{}` needs a tensor, found {}", field.name, v.type_name()),
                    )
                    .at(base.span, "not a tensor"));
                };
                self.tensor_member(n, field, scope)?
            }
            ExprKind::Index(base, idx) => {
                let v = self.eval(base, scope)?;
                let i = self.eval_int(idx, scope)?;
                let Value::List(items) = v else {
                    return Err(type_err(base.span, "a list", &v));
                };
                let len = items.len() as i64;
                let j = if i < 0 { i + len } else { i };
                if j < 0 || j >= len {
                    return Err(Diagnostic::error(
                        codes::RANGE,
                        format!("index {i} out of range for a list of {len}"),
                    )
                    .at(idx.span, "out of range"));
                }
                items[j as usize].clone()
            }
            ExprKind::Call { callee, args } => {
                if let Some(v) = self.builtin_fn(callee, args, span, scope)? {
                    v
                } else {
                    return Err(self.not_a_value(e));
                }
            }
            ExprKind::Pipe(..)
            | ExprKind::Seq(_)
            | ExprKind::Repeat { .. }
            | ExprKind::Residual { .. }
            | ExprKind::Concat(_) => return Err(self.not_a_value(e)),
        })
    }

    fn not_a_value(&self, e: &Expr) -> Diagnostic {
        Diagnostic::error(codes::TYPE, "expected a value, found a layer")
            .at(e.span, "this builds a layer")
            .help("layers go in statements or after `|>`; values are numbers, bools, strings and lists")
    }

    pub(super) fn unknown_name(&self, name: &str, span: Span, scope: &Scope) -> Diagnostic {
        if self.is_layer_or_block(name) {
            return Diagnostic::error(codes::TYPE, format!("`{name}` is a layer, not a value"))
                .at(span, "expected a value here");
        }
        let hint = suggest(name, scope.vars.keys().map(String::as_str));
        Diagnostic::error(codes::UNKNOWN_NAME, format!("unknown name `{name}`"))
            .at(span, "not defined here")
            .with_help(hint.map(|h| format!("did you mean `{h}`?")))
    }

    fn tensor_member(
        &mut self,
        n: NodeId,
        field: &crate::syntax::ast::Ident,
        _scope: &Scope,
    ) -> R<Value> {
        let shape = &self.g.nodes[n].shape;
        let dim = |i: usize, what: &str| -> R<Value> {
            if shape.len() == 3 {
                Ok(Value::Int(shape[i] as i64))
            } else {
                Err(Diagnostic::error(
                    codes::SHAPE,
                    format!(
                        "`.{what}` needs an image-shaped tensor [C, H, W], this one is {}",
                        show_shape(shape)
                    ),
                )
                .at(field.span, "no such dimension"))
            }
        };
        Ok(match field.name.as_str() {
            "channels" => {
                if shape.len() == 1 {
                    Value::Int(shape[0] as i64)
                } else {
                    dim(0, "channels")?
                }
            }
            "height" => dim(1, "height")?,
            "width" => dim(2, "width")?,
            "features" => Value::Int(shape.iter().product::<usize>() as i64),
            "rank" => Value::Int(shape.len() as i64),
            "shape" => Value::List(shape.iter().map(|&d| Value::Int(d as i64)).collect()),
            other => {
                let hint = suggest(
                    other,
                    ["channels", "height", "width", "features", "rank", "shape"],
                );
                return Err(Diagnostic::error(
                    codes::UNKNOWN_NAME,
                    format!("tensors have no field `{other}`"),
                )
                .at(field.span, "unknown field")
                .help(match hint {
                    Some(h) => format!(
                        "did you mean `{h}`? fields are channels, height, width, features, rank, shape"
                    ),
                    None => "fields are channels, height, width, features, rank, shape".into(),
                }));
            }
        })
    }

    fn builtin_fn(
        &mut self,
        callee: &crate::syntax::ast::Ident,
        args: &[crate::syntax::ast::Arg],
        span: Span,
        scope: &Scope,
    ) -> R<Option<Value>> {
        let name = callee.name.as_str();
        if !matches!(
            name,
            "min" | "max" | "abs" | "int" | "floor" | "ceil" | "round" | "float" | "len"
        ) {
            return Ok(None);
        }
        if let Some(a) = args.iter().find(|a| a.name.is_some()) {
            return Err(Diagnostic::error(
                codes::BAD_ARG,
                format!("`{name}` takes no named arguments"),
            )
            .at(a.span, "named argument"));
        }
        let mut vals = Vec::new();
        for a in args {
            vals.push((self.eval(&a.value, scope)?, a.value.span));
        }
        let arity = |n: usize| -> R<()> {
            if vals.len() == n {
                Ok(())
            } else {
                Err(Diagnostic::error(
                    codes::BAD_ARG,
                    format!("`{name}` takes {n} argument(s), got {}", vals.len()),
                )
                .at(span, "wrong number of arguments"))
            }
        };
        let v = match name {
            "min" | "max" => {
                if vals.len() < 2 {
                    arity(2)?;
                }
                let mut acc = vals[0].0.clone();
                for (v, s) in &vals[1..] {
                    let take_new = match (&acc, v) {
                        (Value::Int(a), Value::Int(b)) => (name == "min") == (b < a),
                        (a, b) => {
                            let fa = as_f64(a).ok_or_else(|| type_err(*s, "a number", a))?;
                            let fb = as_f64(b).ok_or_else(|| type_err(*s, "a number", b))?;
                            (name == "min") == (fb < fa)
                        }
                    };
                    if take_new {
                        acc = v.clone();
                    }
                }
                if as_f64(&acc).is_none() {
                    return Err(type_err(vals[0].1, "a number", &acc));
                }
                acc
            }
            "abs" => {
                arity(1)?;
                match &vals[0].0 {
                    Value::Int(i) => Value::Int(i.checked_abs().ok_or_else(|| overflow(span))?),
                    Value::Float(f) => Value::Float(f.abs()),
                    v => return Err(type_err(vals[0].1, "a number", v)),
                }
            }
            "int" | "floor" | "ceil" | "round" => {
                arity(1)?;
                match &vals[0].0 {
                    Value::Int(i) => Value::Int(*i),
                    Value::Float(f) => {
                        // `int` truncates toward zero, like Python's.
                        let t = match name {
                            "floor" => f.floor(),
                            "ceil" => f.ceil(),
                            "round" => f.round(),
                            _ => f.trunc(),
                        };
                        if !(-9.2e18..9.2e18).contains(&t) {
                            return Err(overflow(span));
                        }
                        Value::Int(t as i64)
                    }
                    v => return Err(type_err(vals[0].1, "a number", v)),
                }
            }
            "float" => {
                arity(1)?;
                match &vals[0].0 {
                    v @ (Value::Int(_) | Value::Float(_)) => Value::Float(as_f64(v).unwrap_or(0.0)),
                    v => return Err(type_err(vals[0].1, "a number", v)),
                }
            }
            "len" => {
                arity(1)?;
                match &vals[0].0 {
                    Value::List(l) => Value::Int(l.len() as i64),
                    Value::Str(s) => Value::Int(s.chars().count() as i64),
                    v => return Err(type_err(vals[0].1, "a list or string", v)),
                }
            }
            _ => unreachable!(),
        };
        Ok(Some(v))
    }

    fn binary(&mut self, op: BinOp, a: &Expr, b: &Expr, span: Span, scope: &Scope) -> R<Value> {
        if matches!(op, BinOp::And | BinOp::Or) {
            let l = self.eval_bool(a, scope)?;
            if (op == BinOp::And && !l) || (op == BinOp::Or && l) {
                return Ok(Value::Bool(l));
            }
            return Ok(Value::Bool(self.eval_bool(b, scope)?));
        }
        let l = self.eval(a, scope)?;
        let r = self.eval(b, scope)?;
        use BinOp::*;
        match op {
            Eq | Ne => {
                let eq = match (&l, &r) {
                    (Value::Int(x), Value::Int(y)) => x == y,
                    (Value::Str(x), Value::Str(y)) => x == y,
                    (Value::Bool(x), Value::Bool(y)) => x == y,
                    (x, y) => match (as_f64(x), as_f64(y)) {
                        (Some(p), Some(q)) => p == q,
                        _ => {
                            return Err(Diagnostic::error(
                                codes::TYPE,
                                format!("cannot compare {} with {}", l.type_name(), r.type_name()),
                            )
                            .at(span, "incomparable"));
                        }
                    },
                };
                return Ok(Value::Bool(eq == (op == Eq)));
            }
            _ => {}
        }
        let num = |v: &Value, s: Span| -> R<()> {
            match v {
                Value::Int(_) | Value::Float(_) => Ok(()),
                _ => Err(type_err(s, &format!("a number for `{}`", op.as_str()), v)),
            }
        };
        num(&l, a.span)?;
        num(&r, b.span)?;
        if let (Value::Int(x), Value::Int(y)) = (&l, &r) {
            let (x, y) = (*x, *y);
            let zero =
                || Diagnostic::error(codes::RANGE, "division by zero").at(b.span, "this is zero");
            return Ok(match op {
                Add => Value::Int(x.checked_add(y).ok_or_else(|| overflow(span))?),
                Sub => Value::Int(x.checked_sub(y).ok_or_else(|| overflow(span))?),
                Mul => Value::Int(x.checked_mul(y).ok_or_else(|| overflow(span))?),
                Div => {
                    if y == 0 {
                        return Err(zero());
                    }
                    // Exact quotients stay ints, so `c / 4` can size a layer; `7 / 2` is 3.5.
                    match (x.checked_rem(y), x.checked_div(y)) {
                        (Some(0), Some(q)) => Value::Int(q),
                        _ => Value::Float(x as f64 / y as f64),
                    }
                }
                Rem => {
                    if y == 0 {
                        return Err(zero());
                    }
                    Value::Int(x.checked_rem_euclid(y).ok_or_else(|| overflow(span))?)
                }
                Lt => Value::Bool(x < y),
                Le => Value::Bool(x <= y),
                Gt => Value::Bool(x > y),
                Ge => Value::Bool(x >= y),
                And | Or | Eq | Ne => unreachable!(),
            });
        }
        let x = as_f64(&l).unwrap_or(0.0);
        let y = as_f64(&r).unwrap_or(0.0);
        let v = match op {
            Add => Value::Float(x + y),
            Sub => Value::Float(x - y),
            Mul => Value::Float(x * y),
            Div | Rem if y == 0.0 => {
                return Err(
                    Diagnostic::error(codes::RANGE, "division by zero").at(b.span, "this is zero")
                );
            }
            Div => Value::Float(x / y),
            Rem => Value::Float(x.rem_euclid(y)),
            Lt => Value::Bool(x < y),
            Le => Value::Bool(x <= y),
            Gt => Value::Bool(x > y),
            Ge => Value::Bool(x >= y),
            And | Or | Eq | Ne => unreachable!(),
        };
        if let Value::Float(f) = v
            && !f.is_finite()
        {
            return Err(Diagnostic::error(codes::TOO_LARGE, "float overflow")
                .at(span, "the result is not a finite number"));
        }
        Ok(v)
    }

    pub(super) fn eval_bool(&mut self, e: &Expr, scope: &Scope) -> R<bool> {
        match self.eval(e, scope)? {
            Value::Bool(b) => Ok(b),
            v => Err(type_err(e.span, "a bool", &v)),
        }
    }

    pub(super) fn eval_int(&mut self, e: &Expr, scope: &Scope) -> R<i64> {
        match self.eval(e, scope)? {
            Value::Int(i) => Ok(i),
            v @ Value::Float(_) => Err(type_err(e.span, "an int", &v)
                .help("round it with `floor(...)`, `ceil(...)` or `round(...)`")),
            v => Err(type_err(e.span, "an int", &v)),
        }
    }

    pub(super) fn eval_f64(&mut self, e: &Expr, scope: &Scope) -> R<f64> {
        let v = self.eval(e, scope)?;
        as_f64(&v).ok_or_else(|| type_err(e.span, "a number", &v))
    }
}

pub fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

pub use crate::layer_graph::show_shape;
