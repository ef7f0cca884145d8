//! The YAML front end must produce the same AST as the `.net` parser (up to spans), point its
//! spans into the YAML text, report strict, located errors, and never panic.

use netc::diag::{Diagnostic, FileId, SourceMap, Span, codes};
use netc::syntax::ast::*;
use netc::syntax::parse_file;
use netc::yaml::parse_yaml;
use proptest::prelude::*;

// ---------------------------------------------------------------- helpers

/// Calls `f` on every span of the file; the second argument is the source text the span must
/// cover when it is the span of a name.
fn walk(file: &mut SourceFile, f: &mut dyn FnMut(&mut Span, Option<&str>)) {
    for item in &mut file.items {
        match item {
            Item::Import { span, .. } => f(span, None),
            Item::Block(d) | Item::Model(d) => {
                f(&mut d.span, None);
                ident(&mut d.name, f);
                for p in &mut d.params {
                    f(&mut p.span, None);
                    f(&mut p.ty_span, Some(p.ty.as_str()));
                    ident(&mut p.name, f);
                    if let Some(e) = &mut p.default {
                        expr(e, f);
                    }
                }
                body(&mut d.body, f);
                if let Some(t) = &mut d.train {
                    f(&mut t.span, None);
                    for e in &mut t.entries {
                        f(&mut e.span, None);
                        ident(&mut e.key, f);
                        expr(&mut e.value, f);
                    }
                }
            }
        }
    }
}

fn ident(i: &mut Ident, f: &mut dyn FnMut(&mut Span, Option<&str>)) {
    f(&mut i.span, Some(&i.name));
}

fn arg(a: &mut Arg, f: &mut dyn FnMut(&mut Span, Option<&str>)) {
    f(&mut a.span, None);
    if let Some(n) = &mut a.name {
        ident(n, f);
    }
    expr(&mut a.value, f);
}

fn expr(e: &mut Expr, f: &mut dyn FnMut(&mut Span, Option<&str>)) {
    match &mut e.kind {
        ExprKind::Ident(n) => f(&mut e.span, Some(n)),
        _ => f(&mut e.span, None),
    }
    match &mut e.kind {
        ExprKind::Int(_)
        | ExprKind::Float(_)
        | ExprKind::Bool(_)
        | ExprKind::Str(_)
        | ExprKind::Ident(_)
        | ExprKind::In => {}
        ExprKind::List(v) => v.iter_mut().for_each(|x| expr(x, f)),
        ExprKind::Unary(_, a) => expr(a, f),
        ExprKind::Binary(_, a, b) | ExprKind::Pipe(a, b) | ExprKind::Index(a, b) => {
            expr(a, f);
            expr(b, f);
        }
        ExprKind::Cond(a, b, c) => {
            expr(a, f);
            expr(b, f);
            expr(c, f);
        }
        ExprKind::Member(a, id) => {
            expr(a, f);
            ident(id, f);
        }
        ExprKind::Call { callee, args } => {
            ident(callee, f);
            args.iter_mut().for_each(|a| arg(a, f));
        }
        ExprKind::Seq(b) | ExprKind::Concat(b) => body(b, f),
        ExprKind::Repeat { count, body: b } => {
            expr(count, f);
            body(b, f);
        }
        ExprKind::Residual { body: b, shortcut } => {
            body(b, f);
            if let Some(s) = shortcut {
                f(&mut s.span, None);
                if let Some(c) = &mut s.cond {
                    expr(c, f);
                }
                body(&mut s.body, f);
            }
        }
    }
}

fn body(stmts: &mut [Stmt], f: &mut dyn FnMut(&mut Span, Option<&str>)) {
    for s in stmts {
        match s {
            Stmt::Input(i) => {
                f(&mut i.span, None);
                ident(&mut i.name, f);
                i.shape.iter_mut().for_each(|e| expr(e, f));
                i.attrs.iter_mut().for_each(|a| arg(a, f));
            }
            Stmt::Layer(l) => {
                f(&mut l.span, None);
                if let Some(n) = &mut l.name {
                    ident(n, f);
                }
                expr(&mut l.expr, f);
            }
            Stmt::Let(l) => {
                f(&mut l.span, None);
                ident(&mut l.name, f);
                expr(&mut l.value, f);
            }
            Stmt::Output { values, span } => {
                f(span, None);
                values.iter_mut().for_each(|e| expr(e, f));
            }
            Stmt::When(w) => {
                f(&mut w.span, None);
                expr(&mut w.cond, f);
                body(&mut w.then_body, f);
                if let Some(b) = &mut w.else_body {
                    body(b, f);
                }
            }
        }
    }
}

fn strip(mut file: SourceFile) -> SourceFile {
    walk(&mut file, &mut |s, _| *s = Span::default());
    file
}

const YAML_FILE: FileId = FileId(0);

fn yaml(text: &str) -> SourceFile {
    match parse_yaml(YAML_FILE, text) {
        Ok(f) => f,
        Err(d) => panic!("YAML did not parse:\n{}", render(text, &d)),
    }
}

/// Parses both texts and compares the ASTs without spans; also checks that the YAML spans
/// lie in the YAML text and that every name's span covers exactly that name.
#[track_caller]
fn same(yaml_text: &str, net_text: &str) {
    // The `.net` parser needs more stack than a test thread has in debug builds.
    big_stack(|| same_inner(yaml_text, net_text));
}

fn big_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn_scoped(s, f)
            .expect("spawn")
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

fn same_inner(yaml_text: &str, net_text: &str) {
    let mut y = yaml(yaml_text);
    let n = match parse_file(FileId(1), net_text) {
        Ok(f) => f,
        Err(d) => panic!("bad .net twin: {d:?}"),
    };
    walk(&mut y, &mut |s, name| {
        assert!(
            s.start <= s.end && s.end as usize <= yaml_text.len(),
            "span {s:?} out of range"
        );
        if let Some(name) = name {
            // (The `.net` parser lets some spans run over trailing blanks.)
            let covered = &yaml_text[s.start as usize..s.end as usize];
            assert_eq!(covered.trim_end(), name, "span of a name");
        }
    });
    let (y, n) = (strip(y), strip(n));
    if y != n {
        panic!("ASTs differ\n--- yaml:\n{y:#?}\n--- net:\n{n:#?}");
    }
}

fn render(text: &str, d: &Diagnostic) -> String {
    let mut sm = SourceMap::new();
    sm.add("spec.yaml", "spec.yaml", text.to_string());
    d.render(&sm)
}

/// Parses, expects an error, and returns (code, rendered).
#[track_caller]
fn error(text: &str) -> (&'static str, String) {
    match parse_yaml(YAML_FILE, text) {
        Ok(f) => panic!("expected an error, got {f:#?}"),
        Err(d) => (d.code, render(text, &d)),
    }
}

#[track_caller]
fn assert_error(text: &str, code: &str, parts: &[&str]) {
    let (c, r) = error(text);
    assert_eq!(c, code, "code of:\n{r}");
    for p in parts {
        assert!(r.contains(p), "expected `{p}` in:\n{r}");
    }
}

// ---------------------------------------------------------------- equivalence

const LENET_NET: &str = r#"
block conv_bn(c: int, k: int, pad: int = 0) {
  conv: conv(c, k, pad=pad, bias=false)
  bn: batchnorm(eps=0.001)
  relu
}
model lenet5(classes: int = 10) {
  input image: [1, 28, 28] with mean=[0.5], std=[0.5]
  conv1: conv(6, 5, pad=2)
  relu
  maxpool(2)
  features: seq { conv(16, 5); relu }
  layer1: repeat 2 { conv_bn(16, 3, pad=1) }
  res: residual { conv_bn(16, 3, pad=1) } shortcut when in.channels != 16 { proj: conv(16, 1) }
  when classes > 10 { dropout(0.5) } else { relu }
  flatten
  fc3: frozen dense(classes)
  train { loss: cross_entropy(label_smoothing=0.1); optimizer: sgd(lr=0.01, momentum=0.9); data: "fashion-mnist"; freeze: ["conv1"] ; batch: 64 }
}
"#;

const LENET_YAML: &str = r#"
blocks:
  conv_bn:
    params: {c: int, k: int, pad: "int = 0"}
    body:
      - conv: conv(c, k, pad=pad, bias=false)
      - bn: batchnorm(eps=0.001)
      - relu
models:
  lenet5:
    params: {classes: int = 10}
    body:
      - input: image
        shape: [1, 28, 28]
        with: {mean: [0.5], std: [0.5]}
      - conv1: conv(6, 5, pad=2)
      - relu
      - maxpool(2)
      - features:
          seq:
            - conv(16, 5)
            - relu
      - layer1: {repeat: 2, body: ["conv_bn(16, 3, pad=1)"]}
      - name: res
        residual: ["conv_bn(16, 3, pad=1)"]
        shortcut_when: in.channels != 16
        shortcut:
          - proj: conv(16, 1)
      - when: classes > 10
        then: [dropout(0.5)]
        else: [relu]
      - flatten
      - {name: fc3, frozen: true, layer: dense(classes)}
    train:
      loss: cross_entropy(label_smoothing=0.1)
      optimizer: sgd(lr=0.01, momentum=0.9)
      data: fashion-mnist
      freeze: [conv1]
      batch: 64
"#;

#[test]
fn lenet5_matches_net() {
    same(LENET_YAML, LENET_NET);
}

/// A model named `m` with the given YAML body lines, and its `.net` twin.
#[track_caller]
fn same_body(yaml_body: &str, net_body: &str) {
    let y = format!("models:\n  m:\n    body:\n{yaml_body}");
    let n = format!("model m {{\n{net_body}\n}}");
    same(&y, &n);
}

#[test]
fn layer_statements() {
    same_body(
        "      - relu\n      - \"maxpool(2, stride=2)\"\n      - basic(64, stride=2)\n      - 'x |> conv(8, 3)'\n",
        "relu; maxpool(2, stride=2); basic(64, stride=2); x |> conv(8, 3)",
    );
    same_body(
        "      - conv1: conv(6, 5, pad=2)\n      - act: relu\n      - d: dense(c * 4 % 3 + -1)\n",
        "conv1: conv(6, 5, pad=2); act: relu; d: dense(c * 4 % 3 + -1)",
    );
    // Literals and lists as expressions.
    same_body(
        "      - 3\n      - -2.5\n      - true\n      - [1, \"a + 1\", [2]]\n",
        "3; -2.5; true; [1, a + 1, [2]]",
    );
    // `layer:` with name/frozen, and a named layer whose value is a layer map.
    same_body(
        "      - {layer: relu, frozen: true}\n      - {name: a, layer: 'conv(1, 1)'}\n      - fc: {layer: dense(10), frozen: true}\n      - b: {layer: relu}\n",
        "frozen relu; a: conv(1, 1); fc: frozen dense(10); b: relu",
    );
}

#[test]
fn input_output_when_let() {
    same_body(
        "      - {input: x, shape: [3, size, \"size * 2\"]}\n      - input: y\n        shape: '[1, 2]'\n        with: {mean: [0.1, 0.2], std: 0.5}\n",
        "input x: [3, size, size * 2]\n input y: [1, 2] with mean=[0.1, 0.2], std=0.5",
    );
    same_body(
        "      - output: logits\n      - output: [a, 'b[0]', in.channels]\n",
        "output logits\n output a, b[0], in.channels",
    );
    same_body(
        "      - when: c > 1 && !deep\n        then: [relu]\n      - when: c == 2\n        then: [relu, gelu]\n        else:\n          - when: c == 3\n            then: [tanh]\n            else: []\n",
        "when c > 1 && !deep { relu }\n when c == 2 { relu; gelu } else when c == 3 { tanh } else { }",
    );
    same_body(
        "      - {let: a, value: 'add(x, y)'}\n      - {let: enc, value: 'encoder(64)', shared: true}\n      - {let: f, value: 'conv(3, 3)', shared: true, frozen: true}\n      - let: s\n        value: {seq: [relu, 'conv(1, 1)']}\n      - {let: n, value: 3, shared: false}\n",
        "a = add(x, y)\n enc = shared encoder(64)\n f = shared frozen conv(3, 3)\n s = seq { relu; conv(1, 1) }\n n = 3",
    );
}

#[test]
fn nested_forms() {
    let y = r#"      - seq:
          - repeat: n
            body:
              - residual:
                  - conv(c, 3)
                  - concat:
                      - relu
                      - {seq: [gelu, {repeat: 2, body: [tanh]}]}
                shortcut: ['conv(c, 1)']
              - residual: [relu]
                shortcut: []
          - name: inner
            frozen: true
            concat: [a, b]
          - when: in.channels != c
            then:
              - proj: {residual: [relu], shortcut_when: 'if deep then c > 1 else false', shortcut: [x]}
"#;
    let n = r#"
      seq {
        repeat n {
          residual { conv(c, 3); concat { relu; seq { gelu; repeat 2 { tanh } } } } shortcut { conv(c, 1) }
          residual { relu } shortcut { }
        }
        inner: frozen concat { a; b }
        when in.channels != c {
          proj: residual { relu } shortcut when if deep then c > 1 else false { x }
        }
      }"#;
    same_body(y, n);
}

#[test]
fn params_forms() {
    same(
        r#"
blocks:
  b:
    params:
      a: int
      b: "float = 0.5"
      c: {type: bool, default: true}
      d: {type: int, default: -3}
      e: str = "hi"
      f: {type: str, default: '"x"'}
      g: {type: float}
      h: ' int = 2 * 3 '
    body: [relu]
"#,
        r#"block b(a: int, b: float = 0.5, c: bool = true, d: int = -3, e: str = "hi", f: str = "x", g: float, h: int = 2 * 3) { relu }"#,
    );
}

#[test]
fn item_order_and_imports() {
    // Items keep their true source order across the `import`, `blocks` and `models` keys.
    same(
        "import: [\"a.net\", blocks.yaml]\nmodels:\n  m1: {body: [b1]}\nblocks:\n  b1: {body: [relu]}\n  b2: {params: {}, body: []}\n",
        "import \"a.net\" import \"blocks.yaml\" model m1 { b1 } block b1 { relu } block b2 { }",
    );
    same(
        "blocks:\n  b: {body: [relu]}\nimport: ['x.yaml']\n",
        "block b { relu } import \"x.yaml\"",
    );
}

#[test]
fn train_values() {
    same(
        r#"
models:
  m:
    body: [relu]
    train:
      data: "\"fashion-mnist\""
      freeze: [conv1, "layer1.0", '"x"']
      epochs: 3
      lr: 1e-3
      schedule: [cosine, 'step(10)', "not an expression!"]
      loss: cross_entropy
      note: hello world
      flag: false
"#,
        r#"model m { relu train {
            data: "fashion-mnist"; freeze: ["conv1", "layer1.0", "x"]; epochs: 3; lr: 1e-3
            schedule: [cosine, step(10), "not an expression!"]; loss: cross_entropy
            note: "hello world"; flag: false } }"#,
    );
}

#[test]
fn spans_point_into_yaml() {
    let text = "models:\n  m:\n    body:\n      - conv1: \"conv(6, k)\"\n      - 'in.channels'\n";
    let f = yaml(text);
    let Item::Model(d) = &f.items[0] else {
        panic!()
    };
    assert_eq!(
        &text[d.name.span.start as usize..d.name.span.end as usize],
        "m"
    );
    let Stmt::Layer(l) = &d.body[0] else { panic!() };
    let s = |sp: Span| &text[sp.start as usize..sp.end as usize];
    assert_eq!(s(l.expr.span), "conv(6, k)");
    assert_eq!(s(l.name.as_ref().unwrap().span), "conv1");
    assert_eq!(s(l.span), "conv1: \"conv(6, k)\"");
    let Stmt::Layer(l) = &d.body[1] else { panic!() };
    assert_eq!(s(l.expr.span), "in.channels");
    // Escapes, folding and block indentation: offsets are mapped back to the source.
    let text = "models:\n  m:\n    body:\n      - \"f(\\\"a\\\", bb)\"\n      - |\n        g(1,\n          cc)\n      - h(1,\n        dd)\n";
    let f = yaml(text);
    let s = |sp: Span| &text[sp.start as usize..sp.end as usize];
    let Item::Model(d) = &f.items[0] else {
        panic!()
    };
    let args = |i: usize| match &d.body[i] {
        Stmt::Layer(LayerStmt {
            expr:
                Expr {
                    kind: ExprKind::Call { args, .. },
                    ..
                },
            ..
        }) => args.clone(),
        s => panic!("{s:?}"),
    };
    let a = args(0);
    assert_eq!(a[0].value.kind, ExprKind::Str("a".into()));
    assert_eq!(s(a[0].value.span), "\\\"a\\\"");
    assert_eq!(s(a[1].value.span), "bb");
    assert_eq!(s(args(1)[1].value.span), "cc");
    assert_eq!(s(args(2)[1].value.span), "dd");
}

// ---------------------------------------------------------------- errors

#[test]
fn unknown_keys_suggest() {
    assert_error(
        "model:\n  m: {body: [relu]}\n",
        codes::YAML,
        &[
            "unknown key `model`",
            "--> spec.yaml:1:1",
            "did you mean `models`?",
        ],
    );
    assert_error(
        "blocks:\n  b:\n    parms: {c: int}\n    body: [relu]\n",
        codes::YAML,
        &[
            "unknown key `parms`",
            "--> spec.yaml:3:5",
            "did you mean `params`?",
        ],
    );
    assert_error(
        "models:\n  m:\n    body:\n      - {repeat: 2, bdy: [relu]}\n",
        codes::YAML,
        &[
            "unknown key `bdy`",
            "--> spec.yaml:4:21",
            "did you mean `body`?",
        ],
    );
    assert_error(
        "models:\n  m:\n    body:\n      - {repat: 2, body: [relu]}\n",
        codes::YAML,
        &["unknown key `repat`", "did you mean `repeat`?"],
    );
    assert_error(
        "models:\n  m:\n    body:\n      - input: x\n        shape: [1]\n        wiht: {mean: 0}\n",
        codes::YAML,
        &[
            "unknown key `wiht`",
            "--> spec.yaml:6:9",
            "did you mean `with`?",
        ],
    );
    assert_error(
        "blocks:\n  b:\n    params: {c: integer}\n    body: [relu]\n",
        codes::YAML,
        &[
            "unknown type `integer`",
            "--> spec.yaml:3:17",
            "did you mean `int`?",
        ],
    );
}

#[test]
fn reserved_and_misplaced_keys() {
    assert_error(
        "models:\n  m:\n    body:\n      - frozen: relu\n",
        codes::YAML,
        &["`frozen` is a reserved key", "--> spec.yaml:4:9", "`layer`"],
    );
    assert_error(
        "models:\n  m:\n    body:\n      - conv1: conv(1, 1)\n        relu2: relu\n",
        codes::YAML,
        &[
            "several named layers",
            "--> spec.yaml:5:9",
            "start each statement with `- `",
        ],
    );
    assert_error(
        "models:\n  m:\n    body:\n      - conv1: conv(1, 1)\n        frozen: true\n",
        codes::YAML,
        &[
            "cannot be combined with `frozen`",
            "{layer: ..., frozen: ...}",
        ],
    );
    assert_error(
        "models:\n  m:\n    body:\n      - {seq: [relu], concat: [relu]}\n",
        codes::YAML,
        &["found both `seq` and `concat`"],
    );
    assert_error(
        "models:\n  m:\n    body:\n      - {residual: [relu], shortcut_when: c > 1}\n",
        codes::YAML,
        &["`shortcut_when` without a `shortcut`", "--> spec.yaml:4:28"],
    );
    assert_error(
        "models:\n  m:\n    body:\n      - a: {name: b, seq: []}\n",
        codes::YAML,
        &["already named"],
    );
    assert_error(
        "blocks:\n  b:\n    body: [relu]\n    train: {epochs: 1}\n",
        codes::YAML,
        &["belongs in a model", "--> spec.yaml:4:5"],
    );
    assert_error(
        "blocks:\n  b: {params: {}}\n",
        codes::YAML,
        &["has no `body`"],
    );
    assert_error(
        "import: [a.net]\n",
        codes::YAML,
        &["no `blocks:` or `models:`"],
    );
}

#[test]
fn wrong_types() {
    assert_error(
        "models:\n  m:\n    body:\n      - {repeat: [1], body: [relu]}\n",
        codes::YAML,
        &[
            "expected a repeat count, found a list",
            "--> spec.yaml:4:18",
        ],
    );
    assert_error(
        "blocks:\n  b:\n    params: 3\n    body: [relu]\n",
        codes::YAML,
        &["found a number", "--> spec.yaml:3:13"],
    );
    assert_error(
        "models:\n  m:\n    body: relu\n",
        codes::YAML,
        &[
            "expected a list of statements, found a string",
            "--> spec.yaml:3:11",
        ],
    );
    assert_error(
        "models:\n  m:\n    body:\n      - {layer: relu, frozen: yes}\n",
        codes::YAML,
        &["expected `true` or `false`, found a string"],
    );
    assert_error(
        "models:\n  m:\n    body:\n      - {input: 3, shape: [1]}\n",
        codes::YAML,
        &["expected an input name, found a number"],
    );
    assert_error(
        "models:\n  m:\n    body:\n      - conv1:\n",
        codes::YAML,
        &["missing value", "--> spec.yaml:4:9"],
    );
    assert_error(
        "- a\n- b\n",
        codes::YAML,
        &["expected a map at the top level"],
    );
    assert_error("", codes::YAML, &["empty YAML file"]);
    assert_error(
        "models: {m: {body: [relu]}}\n---\nmodels: {}\n",
        codes::YAML,
        &["second YAML document", "--> spec.yaml:2:1"],
    );
    assert_error(
        "models:\n  m:\n    body: [99999999999999999999]\n",
        codes::TOO_LARGE,
        &["--> spec.yaml:3:12"],
    );
}

#[test]
fn tags_anchors_aliases_merges() {
    assert_error(
        "models:\n  m:\n    body: [!foo relu]\n",
        codes::YAML,
        &[
            "YAML tags such as `!foo` are not supported",
            "--> spec.yaml:3:12",
        ],
    );
    assert_error(
        "models: !!map\n  m: {body: [relu]}\n",
        codes::YAML,
        &["tags", "--> spec.yaml:1:9"],
    );
    assert_error(
        "models:\n  m:\n    body: &b [relu]\n  n:\n    body: *b\n",
        codes::YAML,
        &["anchors", "--> spec.yaml:3:11"],
    );
    assert_error(
        "models:\n  m:\n    <<: {body: [relu]}\n",
        codes::YAML,
        &["merge keys", "--> spec.yaml:3:5"],
    );
    assert_error(
        "models:\n  m:\n    ? [a]\n    : relu\n",
        codes::YAML,
        &["map keys must be names"],
    );
}

#[test]
fn duplicate_keys() {
    let (code, r) = error("models:\n  m:\n    body: [relu]\n    body: [gelu]\n");
    assert_eq!(code, codes::YAML);
    assert!(r.contains("duplicate key `body`"), "{r}");
    assert!(r.contains("--> spec.yaml:4:5"), "{r}");
    assert!(r.contains("first defined here"), "{r}");
    assert_error(
        "models:\n  m: {body: [relu]}\n  m: {body: [relu]}\n",
        codes::YAML,
        &["duplicate key `m`", "--> spec.yaml:3:3"],
    );
}

#[test]
fn bad_expressions_point_into_yaml() {
    // Plain scalar: `)` of `pad=)` is at line 4, column 27.
    assert_error(
        "models:\n  m:\n    body:\n      - conv1: conv(6, 5, pad=)\n",
        codes::YAML,
        &[
            "syntax error",
            "--> spec.yaml:4:31",
            "read as a `.net` expression",
        ],
    );
    // Double-quoted: the opening quote shifts the offset by one.
    assert_error(
        "models:\n  m:\n    body:\n      - \"conv(6,, 5)\"\n",
        codes::YAML,
        &["syntax error", "--> spec.yaml:4:17"],
    );
    // In a condition, a parameter default, a train value that is not a string.
    assert_error(
        "models:\n  m:\n    body:\n      - {when: 'a >', then: []}\n",
        codes::YAML,
        &["--> spec.yaml:4:20"],
    );
    assert_error(
        "blocks:\n  b:\n    params: {c: int = 1 +}\n    body: [relu]\n",
        codes::YAML,
        &["--> spec.yaml:3:26"],
    );
    assert_error(
        "models:\n  m:\n    body:\n      - [conv(6, 5), relu]\n",
        codes::YAML,
        &["--> spec.yaml:4:16", "quote the expression"],
    );
    // Escapes in a double-quoted string: the error still points at the right character.
    assert_error(
        "models:\n  m:\n    body:\n      - \"conv(\\\"a\\\" 5)\"\n",
        codes::YAML,
        &["--> spec.yaml:4:21"],
    );
    assert_error(
        "models:\n  m:\n    body:\n      - x = add(a, b)\n",
        codes::YAML,
        &["--> spec.yaml:4:", "{let: NAME, value: EXPR}"],
    );
}

#[test]
fn yaml_syntax_errors_are_located() {
    let (code, r) = error("models:\n  m:\n    body: [relu\n");
    assert_eq!(code, codes::YAML);
    assert!(r.contains("invalid YAML"), "{r}");
    assert!(r.contains("--> spec.yaml:"), "{r}");
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    // Nested statements.
    let mut body = String::from("relu");
    for _ in 0..200 {
        body = format!("{{seq: [{body}]}}");
    }
    let text = format!("models:\n  m:\n    body: [{body}]\n");
    let (code, r) = error(&text);
    assert!(code == codes::TOO_DEEP || code == codes::YAML, "{r}");
    // Nested lists as an expression, deeper than the YAML parser's own limits.
    let text = format!(
        "models:\n  m:\n    body: [{}1{}]\n",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let (code, r) = error(&text);
    assert!(code == codes::TOO_DEEP || code == codes::YAML, "{r}");
    // Block-style nesting.
    let mut text = String::from("models:\n  m:\n    body:\n");
    for i in 0..300 {
        text += &format!("{}- seq:\n", " ".repeat(6 + 4 * i));
    }
    let (code, _) = error(&text);
    assert!(code == codes::TOO_DEEP || code == codes::YAML);
    // Deep brackets inside an expression string.
    let text = format!(
        "models:\n  m:\n    body: ['{}1{}']\n",
        "(".repeat(500),
        ")".repeat(500)
    );
    let (code, r) = error(&text);
    assert_eq!(code, codes::TOO_DEEP, "{r}");
    // Just under the limit is fine.
    let mut body = String::from("relu");
    for _ in 0..20 {
        body = format!("{{seq: [{body}]}}");
    }
    yaml(&format!("models:\n  m:\n    body: [{body}]\n"));
}

// ---------------------------------------------------------------- never panic

fn check_no_panic(text: &str) {
    if let Err(d) = parse_yaml(YAML_FILE, text) {
        // Rendering exercises the spans (in range, on char boundaries).
        let r = render(text, &d);
        assert!(r.starts_with("error["));
        if let Some(l) = &d.primary {
            assert!(l.span.start <= l.span.end && l.span.end as usize <= text.len());
        }
    }
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, String),
    Delete(usize, usize),
    Replace(usize, char),
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let n = chars.len().max(1);
        match e {
            Edit::Insert(i, s) => {
                let i = i % (chars.len() + 1);
                chars.splice(i..i, s.chars());
            }
            Edit::Delete(i, len) => {
                let i = i % n;
                let end = (i + len).min(chars.len());
                if i < end {
                    chars.drain(i..end);
                }
            }
            Edit::Replace(i, c) => {
                if !chars.is_empty() {
                    let i = i % n;
                    chars[i] = *c;
                }
            }
        }
    }
    chars.into_iter().collect()
}

fn edit() -> impl Strategy<Value = Edit> {
    let piece = prop::sample::select(vec![
        "- ",
        ": ",
        "{",
        "}",
        "[",
        "]",
        ",",
        "!",
        "&a",
        "*a",
        "<<",
        "\"",
        "'",
        "\n",
        "  ",
        "#",
        "seq",
        "repeat",
        "residual",
        "shortcut_when",
        "name",
        "frozen",
        "layer",
        "let",
        "value",
        "when",
        "then",
        "else",
        "input",
        "shape",
        "with",
        "output",
        "body",
        "params",
        "train",
        "int = ",
        "(",
        ")",
        "é",
        "\t",
        "---",
        "|",
        ">",
        "?",
        "~",
        "1e999",
        "-",
        "0x",
    ]);
    prop_oneof![
        (any::<usize>(), piece).prop_map(|(i, s)| Edit::Insert(i, s.to_string())),
        (any::<usize>(), 1usize..20).prop_map(|(i, l)| Edit::Delete(i, l)),
        (any::<usize>(), any::<char>()).prop_map(|(i, c)| Edit::Replace(i, c)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_specs_never_panic(edits in prop::collection::vec(edit(), 1..6)) {
        check_no_panic(&apply(LENET_YAML, &edits));
    }

    #[test]
    fn random_yamlish_text_never_panics(s in "[-:\\[\\]{}, \n\"'!&*a-z0-9#|>?.]{0,120}") {
        check_no_panic(&s);
    }
}
