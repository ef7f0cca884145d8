//! A walk over every [`Span`] of an expression (used to map the spans of an expression parsed
//! from an unescaped or folded YAML string back into the YAML text).

use crate::diag::Span;
use crate::syntax::ast::*;

/// Calls `f` on every span in `e`, including those of nested statements.
pub(crate) fn visit_expr(e: &mut Expr, f: &mut dyn FnMut(&mut Span)) {
    f(&mut e.span);
    match &mut e.kind {
        ExprKind::Int(_)
        | ExprKind::Float(_)
        | ExprKind::Bool(_)
        | ExprKind::Str(_)
        | ExprKind::Ident(_)
        | ExprKind::In => {}
        ExprKind::List(v) => v.iter_mut().for_each(|x| visit_expr(x, f)),
        ExprKind::Unary(_, a) => visit_expr(a, f),
        ExprKind::Binary(_, a, b) | ExprKind::Pipe(a, b) | ExprKind::Index(a, b) => {
            visit_expr(a, f);
            visit_expr(b, f);
        }
        ExprKind::Cond(a, b, c) => {
            visit_expr(a, f);
            visit_expr(b, f);
            visit_expr(c, f);
        }
        ExprKind::Member(a, id) => {
            visit_expr(a, f);
            f(&mut id.span);
        }
        ExprKind::Call { callee, args } => {
            f(&mut callee.span);
            args.iter_mut().for_each(|a| visit_arg(a, f));
        }
        ExprKind::Seq(body) | ExprKind::Concat(body) => visit_body(body, f),
        ExprKind::Repeat { count, body } => {
            visit_expr(count, f);
            visit_body(body, f);
        }
        ExprKind::Residual { body, shortcut } => {
            visit_body(body, f);
            if let Some(s) = shortcut {
                f(&mut s.span);
                if let Some(c) = &mut s.cond {
                    visit_expr(c, f);
                }
                visit_body(&mut s.body, f);
            }
        }
    }
}

fn visit_arg(a: &mut Arg, f: &mut dyn FnMut(&mut Span)) {
    f(&mut a.span);
    if let Some(n) = &mut a.name {
        f(&mut n.span);
    }
    visit_expr(&mut a.value, f);
}

fn visit_body(body: &mut [Stmt], f: &mut dyn FnMut(&mut Span)) {
    for s in body {
        match s {
            Stmt::Input(i) => {
                f(&mut i.span);
                f(&mut i.name.span);
                i.shape.iter_mut().for_each(|e| visit_expr(e, f));
                i.attrs.iter_mut().for_each(|a| visit_arg(a, f));
            }
            Stmt::Layer(l) => {
                f(&mut l.span);
                if let Some(n) = &mut l.name {
                    f(&mut n.span);
                }
                visit_expr(&mut l.expr, f);
            }
            Stmt::Let(l) => {
                f(&mut l.span);
                f(&mut l.name.span);
                visit_expr(&mut l.value, f);
            }
            Stmt::Output { values, span } => {
                f(span);
                values.iter_mut().for_each(|e| visit_expr(e, f));
            }
            Stmt::When(w) => {
                f(&mut w.span);
                visit_expr(&mut w.cond, f);
                visit_body(&mut w.then_body, f);
                if let Some(b) = &mut w.else_body {
                    visit_body(b, f);
                }
            }
        }
    }
}

/// Moves a span into `bounds` (start and end clamped).
pub(crate) fn clamp(s: &mut Span, bounds: Span) {
    s.start = s.start.clamp(bounds.start, bounds.end);
    s.end = s.end.clamp(s.start, bounds.end);
}
