//! Augmentation lists: `augment: [...]` of a `train` section, or the `--augment` flag's text.
//!
//! In: the list's expressions (parsed with the `.net` expression grammar) and, when known, the
//! model input's per-sample shape `[C, H, W]`. Out: checked [`Augment`]s, or a diagnostic at
//! the offending argument: unknown names, probabilities outside `[0, 1]`, negative angles or
//! sizes, ranges whose minimum exceeds their maximum, a crop larger than the padded input,
//! PCA lighting on an input without 3 channels. One definition serves the spec and the CLI
//! ([`augment_from_text`] renders its diagnostics against the flag's text, so they name the
//! flag and the column).

use std::collections::HashMap;

use super::layers::bind_args;
use super::value::{Value, as_f64};
use super::{Elab, R, Scope};
use crate::diag::{Diagnostic, SourceMap, Span, codes, suggest};
use crate::syntax::ast::{Arg, Expr, ExprKind, Ident};
use crate::train_config::Augment;

/// Every augmentation name (`color_jitter` is `color_shift`, torchvision's name).
pub const AUGMENTS: &[&str] = &[
    "mirror",
    "vflip",
    "random_crop",
    "random_resized_crop",
    "rotate",
    "affine",
    "color_shift",
    "color_jitter",
    "pca_lighting",
];

/// The help line of a malformed list.
const EXAMPLE: &str = "e.g. `augment: [mirror, random_crop(pad=4), rotate(10), color_shift(0.1)]`";

fn err(span: Span, msg: impl Into<String>) -> Diagnostic {
    Diagnostic::error(codes::TRAIN, msg).at(span, "here")
}

/// Splits `name` or `name(args)` into its parts.
fn callish(e: &Expr) -> Option<(Ident, &[Arg])> {
    match &e.kind {
        ExprKind::Ident(n) => Some((
            Ident {
                name: n.clone(),
                span: e.span,
            },
            &[],
        )),
        ExprKind::Call { callee, args } => Some((callee.clone(), args.as_slice())),
        _ => None,
    }
}

/// Parses and checks the `--augment` flag's `text` (`mirror, random_crop(pad=4)`, with or
/// without the brackets; empty for none) against the input `shape` when given. Errors are
/// rendered diagnostics pointing into the text under the name `--augment`.
pub fn augment_from_text(text: &str, shape: Option<&[usize]>) -> Result<Vec<Augment>, String> {
    let mut sources = SourceMap::new();
    let fid = sources.add("--augment", "--augment", text.to_string());
    let render = |d: Diagnostic| d.render(&sources);
    let t = text.trim();
    let items: Vec<Expr> = if t.starts_with('[') {
        match crate::syntax::parse_expr(fid, text, 0).map_err(render)? {
            Expr {
                kind: ExprKind::List(items),
                ..
            } => items,
            e => return Err(render(err(e.span, "`--augment` is a list").help(EXAMPLE))),
        }
    } else {
        let mut items = Vec::new();
        for (start, piece) in split_top_level(text) {
            if piece.trim().is_empty() {
                if t.is_empty() {
                    continue;
                }
                let span = Span::new(fid, start, start + piece.len());
                return Err(render(
                    err(span, "an empty item in the list").help("separate items with one comma"),
                ));
            }
            items.push(crate::syntax::parse_expr(fid, piece, start).map_err(render)?);
        }
        items
    };
    let blocks = HashMap::new();
    let mut el = Elab::new(&blocks, "");
    let scope = Scope::default();
    items
        .iter()
        .map(|it| el.augment(it, &scope, shape))
        .collect::<R<Vec<_>>>()
        .map_err(render)
}

/// `text` cut at the commas outside brackets: (byte offset, piece).
fn split_top_level(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let (mut depth, mut start, mut quoted) = (0i64, 0, false);
    for (i, ch) in text.char_indices() {
        match ch {
            '"' => quoted = !quoted,
            '(' | '[' | '{' if !quoted => depth += 1,
            ')' | ']' | '}' if !quoted => depth -= 1,
            ',' if depth == 0 && !quoted => {
                out.push((start, &text[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push((start, &text[start..]));
    out
}

impl Elab<'_> {
    /// The `augment:` entry of a train section: a list of augmentations.
    pub(super) fn augment_list(
        &mut self,
        v: &Expr,
        scope: &Scope,
        shape: Option<&[usize]>,
    ) -> R<Vec<Augment>> {
        let ExprKind::List(items) = &v.kind else {
            return Err(err(v.span, "`augment` is a list").help(EXAMPLE));
        };
        items
            .iter()
            .map(|it| self.augment(it, scope, shape))
            .collect()
    }

    /// A number ≥ 0.
    fn non_negative(&mut self, a: &Arg, scope: &Scope, name: &str) -> R<f64> {
        let x = self.eval_f64(&a.value, scope)?;
        if x < 0.0 || !x.is_finite() {
            return Err(err(
                a.value.span,
                format!("`{name}` must be a finite number ≥ 0, found {x}"),
            ));
        }
        Ok(x)
    }

    /// A number, or a list of `n` numbers (each finite).
    fn numbers(&mut self, a: &Arg, scope: &Scope, name: &str, lens: &[usize]) -> R<Vec<f64>> {
        let v = self.eval(&a.value, scope)?;
        let xs: Option<Vec<f64>> = match &v {
            Value::List(l) => l.iter().map(as_f64).collect(),
            v => as_f64(v).map(|x| vec![x]),
        };
        match xs {
            Some(xs) if lens.contains(&xs.len()) && xs.iter().all(|x| x.is_finite()) => Ok(xs),
            _ => Err(err(
                a.value.span,
                format!(
                    "`{name}` is {}",
                    lens.iter()
                        .map(|n| match n {
                            1 => "a number".to_string(),
                            n => format!("a list of {n} numbers"),
                        })
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            )),
        }
    }

    /// A `[min, max]` range with `0 < min ≤ max ≤ hi`.
    fn range(&mut self, a: &Arg, scope: &Scope, name: &str, hi: f64) -> R<[f64; 2]> {
        let xs = self.numbers(a, scope, name, &[2])?;
        let (a0, a1) = (xs[0], xs[1]);
        if a0 > a1 {
            return Err(err(
                a.value.span,
                format!("`{name}` is [min, max], but its min {a0} is larger than its max {a1}"),
            )
            .help(format!("write `{name}=[{a1}, {a0}]`")));
        }
        if a0 <= 0.0 || a1 > hi {
            return Err(err(
                a.value.span,
                format!("`{name}` must lie in (0, {hi}], found [{a0}, {a1}]"),
            ));
        }
        Ok([a0, a1])
    }

    /// One augmentation, checked against the input `shape` when known.
    pub(super) fn augment(
        &mut self,
        v: &Expr,
        scope: &Scope,
        shape: Option<&[usize]>,
    ) -> R<Augment> {
        let Some((name, args)) = callish(v) else {
            return Err(err(v.span, "expected an augmentation such as `mirror`"));
        };
        let names: &[&str] = match name.name.as_str() {
            "mirror" | "vflip" => &["p"],
            "random_crop" => &["pad", "size"],
            "random_resized_crop" => &["scale", "ratio"],
            "rotate" => &["degrees"],
            "affine" => &["degrees", "translate", "scale", "shear"],
            "color_shift" | "color_jitter" => &["brightness", "contrast", "saturation", "hue"],
            "pca_lighting" => &["std"],
            _ => {
                let hint = suggest(&name.name, AUGMENTS.iter().copied());
                return Err(Diagnostic::error(
                    codes::TRAIN,
                    format!("unknown augmentation `{}`", name.name),
                )
                .at(name.span, "not a known augmentation")
                .help(match hint {
                    Some(h) => format!("did you mean `{h}`? choices: {}", AUGMENTS.join(", ")),
                    None => format!("choices: {}", AUGMENTS.join(", ")),
                }));
            }
        };
        let s = bind_args(&name, args, names, v.span, "augmentation")?;
        let channels = shape.and_then(|s| (s.len() == 3).then_some(s[0]));
        let hw = shape.and_then(|s| (s.len() == 3).then(|| [s[1], s[2]]));
        Ok(match name.name.as_str() {
            "mirror" | "vflip" => {
                let p = match s[0] {
                    Some(a) => self.non_negative(a, scope, "p")?,
                    None => 0.5,
                };
                if p > 1.0 {
                    let at = s[0].map(|a| a.value.span).unwrap_or(v.span);
                    return Err(err(
                        at,
                        format!("`p` is a probability in [0, 1], found {p}"),
                    ));
                }
                if name.name == "mirror" {
                    Augment::Mirror { p }
                } else {
                    Augment::VFlip { p }
                }
            }
            "random_crop" => {
                let pad = match s[0] {
                    Some(a) => {
                        let p = self.eval_int(&a.value, scope)?;
                        if !(0..=1024).contains(&p) {
                            return Err(err(
                                a.value.span,
                                format!("`pad` must be in 0..=1024, found {p}"),
                            ));
                        }
                        p as usize
                    }
                    None => 4,
                };
                let size = match s[1] {
                    Some(a) => {
                        let xs = self.numbers(a, scope, "size", &[1, 2])?;
                        let (h, w) = (xs[0], *xs.last().unwrap_or(&xs[0]));
                        let ok = |x: f64| x.fract() == 0.0 && (1.0..=65536.0).contains(&x);
                        if !ok(h) || !ok(w) {
                            return Err(err(
                                a.value.span,
                                "`size` is a whole number of pixels from 1 to 65536, or [height, width]",
                            ));
                        }
                        let size = [h as usize, w as usize];
                        if let Some([ih, iw]) = hw {
                            let (ph, pw) = (ih + 2 * pad, iw + 2 * pad);
                            if size[0] > ph || size[1] > pw {
                                return Err(err(
                                    a.value.span,
                                    format!(
                                        "a {}×{} crop does not fit the {ih}×{iw} input padded by {pad} ({ph}×{pw})",
                                        size[0], size[1]
                                    ),
                                )
                                .help("use a smaller size or more padding"));
                            }
                        }
                        // The input's own size is the default: store it as such.
                        (Some([size[0], size[1]]) != hw).then_some(size)
                    }
                    None => None,
                };
                Augment::RandomCrop { pad, size }
            }
            "random_resized_crop" => {
                let scale = match s[0] {
                    Some(a) => self.range(a, scope, "scale", 1.0)?,
                    None => [0.08, 1.0],
                };
                let ratio = match s[1] {
                    Some(a) => self.range(a, scope, "ratio", 1e6)?,
                    None => [3.0 / 4.0, 4.0 / 3.0],
                };
                Augment::RandomResizedCrop { scale, ratio }
            }
            "rotate" => Augment::Rotate {
                degrees: match s[0] {
                    Some(a) => self.degrees(a, scope)?,
                    None => 10.0,
                },
            },
            "affine" => {
                let degrees = match s[0] {
                    Some(a) => self.degrees(a, scope)?,
                    None => 0.0,
                };
                let translate = match s[1] {
                    Some(a) => {
                        let xs = self.numbers(a, scope, "translate", &[1, 2])?;
                        let t = [xs[0], *xs.last().unwrap_or(&xs[0])];
                        if t.iter().any(|x| !(0.0..=1.0).contains(x)) {
                            return Err(err(
                                a.value.span,
                                "`translate` is the largest shift as a fraction of the width and height, each in [0, 1]",
                            ));
                        }
                        t
                    }
                    None => [0.0; 2],
                };
                let scale = match s[2] {
                    Some(a) => self.range(a, scope, "scale", 100.0)?,
                    None => [1.0; 2],
                };
                let shear = match s[3] {
                    Some(a) => {
                        let xs = self.numbers(a, scope, "shear", &[1, 2, 4])?;
                        let sh = match xs.len() {
                            1 if xs[0] < 0.0 => {
                                return Err(err(
                                    a.value.span,
                                    format!("`shear` must not be negative, found {}", xs[0]),
                                )
                                .help("one number s means x shear in [-s, s]"));
                            }
                            1 => [-xs[0], xs[0], 0.0, 0.0],
                            2 => [xs[0], xs[1], 0.0, 0.0],
                            _ => [xs[0], xs[1], xs[2], xs[3]],
                        };
                        if sh[0] > sh[1] || sh[2] > sh[3] {
                            return Err(err(
                                a.value.span,
                                "`shear` ranges are [min, max] (x, then y), with min ≤ max",
                            ));
                        }
                        if sh.iter().any(|x| x.abs() >= 89.0) {
                            return Err(err(
                                a.value.span,
                                "shear angles must lie within (-89, 89) degrees",
                            ));
                        }
                        sh
                    }
                    None => [0.0; 4],
                };
                Augment::Affine {
                    degrees,
                    translate,
                    scale,
                    shear,
                }
            }
            "color_shift" | "color_jitter" => {
                let mut f = [0.2, 0.0, 0.0, 0.0];
                for (i, slot) in s.iter().enumerate() {
                    f[i] = match slot {
                        Some(a) => self.non_negative(a, scope, names[i])?,
                        // Contrast and saturation default to the brightness; hue to 0.
                        None if i == 1 || i == 2 => f[0],
                        None => f[i],
                    };
                }
                if f[3] > 0.5 {
                    let at = s[3].map(|a| a.value.span).unwrap_or(v.span);
                    return Err(err(
                        at,
                        format!("`hue` is a shift in turns, at most 0.5, found {}", f[3]),
                    ));
                }
                Augment::ColorShift {
                    brightness: f[0],
                    contrast: f[1],
                    saturation: f[2],
                    hue: f[3],
                }
            }
            _ => {
                let std = match s[0] {
                    Some(a) => self.non_negative(a, scope, "std")?,
                    None => 0.1,
                };
                if let Some(c) = channels
                    && c != 3
                {
                    return Err(Diagnostic::error(
                        codes::TRAIN,
                        format!(
                            "`pca_lighting` shifts colors along ImageNet's RGB eigenvectors, so it needs 3 channels; the input has {c}"
                        ),
                    )
                    .at(v.span, "needs an RGB input")
                    .help("use `color_shift(brightness=...)` on 1-channel images"));
                }
                Augment::PcaLighting { std }
            }
        })
    }

    /// Degrees of a rotation range `[-d, d]`: a number from 0 to 180.
    fn degrees(&mut self, a: &Arg, scope: &Scope) -> R<f64> {
        let d = self.non_negative(a, scope, "degrees")?;
        if d > 180.0 {
            return Err(err(
                a.value.span,
                format!("`degrees` is at most 180, found {d}"),
            ));
        }
        Ok(d)
    }
}
