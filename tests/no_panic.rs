//! The compiler never panics or hangs: random and mutated specs thrown at parse + elaborate
//! must give an error or a success, and every error must render.
//!
//! Three parts: random edits of the real specs in `specs/` (and of a YAML spec), specs
//! generated from the grammar with random (often absurd) arguments, and regression cases for
//! the limits (nesting depth, repeat counts, tensor sizes, recursion, YAML bombs).
//!
//! Each load must finish within [`limit`]: a hang guard, not a performance test. The work a
//! load may do is bounded by the elaborator itself (`elab::MAX_STEPS`, `MAX_NODES`,
//! `MAX_REPEAT`, `MAX_DEPTH`), which the regression cases check by their errors.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use netc::{Options, SpecError, load_file, load_str};
use proptest::prelude::*;
use proptest::sample::Index;

/// How long any single load may take before it counts as a hang: 60 s, or
/// `NETC_HANG_LIMIT_SECS`. Generous on purpose: the slowest loads here (`repeat`s stopped by
/// the step limit) took 1.8 s in a debug build on a shared 2-core machine at load average 13,
/// and the 2 s this used to be failed at 2.25 s under AddressSanitizer; valgrind is slower
/// still. A runaway elaboration is stopped by the step limit, long before this.
fn limit() -> Duration {
    static LIMIT: OnceLock<Duration> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        let secs = std::env::var("NETC_HANG_LIMIT_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60);
        Duration::from_secs(secs)
    })
}

// ---------------------------------------------------------------- helpers

/// Loads `text`, renders the error or the summaries of the graph, and checks the time taken.
/// Returns the rendered error, if any.
fn load_with(name: &str, text: &str, opts: &Options) -> Option<String> {
    let t = Instant::now();
    let r = load_str(name, text, opts);
    let out = match r {
        Ok(spec) => {
            // A success must be printable too.
            let _ = netc::show::summary(&spec.graph);
            let _ = netc::show::graph_text(&spec.graph);
            let _ = netc::show::graph_dot(&spec.graph);
            let _ = netc::show::graph_json(&spec.graph).to_string();
            let _ = netc::show::summary_json(&spec.graph).to_string();
            None
        }
        Err(e) => Some(render(&e)),
    };
    let dt = t.elapsed();
    assert!(
        dt < limit(),
        "loading took {dt:?} (limit {:?}) for {name}:\n{}",
        limit(),
        preview(text)
    );
    out
}

fn load(name: &str, text: &str) -> Option<String> {
    load_with(name, text, &Options::default())
}

fn render(e: &SpecError) -> String {
    let s = e.to_string();
    assert!(!s.is_empty(), "an error rendered as nothing");
    s
}

/// Loading must fail, with a message containing `needle`.
fn expect_err(name: &str, text: &str, needle: &str) {
    match load(name, text) {
        Some(msg) => assert!(
            msg.contains(needle),
            "expected an error mentioning {needle:?}, got:\n{msg}"
        ),
        None => panic!("expected an error for:\n{}", preview(text)),
    }
}

fn preview(text: &str) -> String {
    if text.len() <= 2000 {
        text.to_string()
    } else {
        let mut end = 2000;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... ({} bytes)", &text[..end], text.len())
    }
}

/// `cases` per property, or `PROPTEST_CASES` from the environment for a longer fuzzing run.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    }
}

/// The real specs, read once: (path relative to the crate root, text). The path keeps the
/// `specs/` directory so that imports between specs resolve.
fn specs() -> &'static [(String, String)] {
    static SPECS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    SPECS.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/specs");
        let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
            .expect("specs/ exists")
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "net"))
            .map(|p| {
                let text = std::fs::read_to_string(&p).expect("spec is UTF-8");
                (
                    format!("specs/{}", p.file_name().unwrap().to_string_lossy()),
                    text,
                )
            })
            .collect();
        v.sort();
        assert!(!v.is_empty(), "no specs in {dir}");
        v
    })
}

// ---------------------------------------------------------------- 1. mutations of real specs

/// Tokens the mutator inserts: the language's keywords, punctuation and layers, numbers at the
/// edges of every integer type, identifiers, and awkward characters for the renderer.
#[rustfmt::skip]
const VOCAB: &[&str] = &[
    // keywords
    "import", "block", "model", "input", "output", "when", "else", "train", "shared", "frozen",
    "seq", "repeat", "residual", "shortcut", "with", "true", "false", "if", "then", "in",
    "concat",
    // punctuation and operators
    "{", "}", "(", ")", "[", "]", ",", ";", ":", "=", ".", "|>", "||", "&&", "==", "!=", "<=",
    ">=", "<", ">", "+", "-", "*", "/", "//", "%", "!", "\"", "#", "/*", "*/", "\\", "\n", " ",
    "\t", "\r\n",
    // numbers
    "0", "1", "-1", "2", "3", "7", "64", "224", "65535", "2147483647", "2147483648",
    "4294967296", "1099511627776", "9223372036854775807", "9223372036854775808",
    "-9223372036854775808", "99999999999999999999", "1000000000", "1e9", "1e308", "1e309",
    "1.5", "0.0", "-0.5", "1e-400",
    // identifiers, layers, fields, types
    "x", "c", "size", "stride", "classes", "image", "in.channels", "in.height", "in.width",
    "in.features", "in.shape", "in.rank", "int", "float", "bool", "str", "conv", "dense",
    "maxpool", "avgpool", "global_avgpool", "adaptive_avgpool", "flatten", "relu", "batchnorm",
    "dropout", "lrn", "add", "sub", "mul", "triplet_loss", "gram", "softmax", "l2_normalize",
    "leaky_relu", "identity", "min", "max", "abs", "len", "pad=same", "stride=", "groups=",
    "dilation=", "bias=false", "weight=", "ceil=true", "loss", "optimizer", "sgd", "adam",
    "epochs", "lr", "batch", "data", "freeze",
    // awkward characters
    "é", "💥", "\u{feff}", "\u{0}", "\u{7f}", "ß", "日本",
];

#[derive(Debug, Clone)]
enum Mutation {
    Delete(Index, u8),
    Duplicate(Index, u8),
    Insert(Index, Vec<Index>),
    Swap(Index, Index, u8),
    Truncate(Index),
    ReplaceDigits(Index, &'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let num = prop::sample::select(
        &[
            "0",
            "-1",
            "99999999999999999999",
            "2147483648",
            "1099511627776",
            "9223372036854775807",
            "1e308",
            "1000000000",
            "10000",
        ][..],
    );
    prop_oneof![
        3 => (any::<Index>(), any::<u8>()).prop_map(|(i, n)| Mutation::Delete(i, n)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        4 => (any::<Index>(), prop::collection::vec(any::<Index>(), 1..4))
            .prop_map(|(i, t)| Mutation::Insert(i, t)),
        1 => (any::<Index>(), any::<Index>(), any::<u8>())
            .prop_map(|(a, b, n)| Mutation::Swap(a, b, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        3 => (any::<Index>(), num).prop_map(|(i, n)| Mutation::ReplaceDigits(i, n)),
    ]
}

fn apply(text: &str, muts: &[Mutation]) -> String {
    let mut b: Vec<u8> = text.as_bytes().to_vec();
    for m in muts {
        let len = b.len();
        let at = |i: &Index| if len == 0 { 0 } else { i.index(len + 1) };
        match m {
            Mutation::Delete(i, n) => {
                let s = at(i);
                let e = (s + *n as usize).min(len);
                b.drain(s..e);
            }
            Mutation::Duplicate(i, n) => {
                let s = at(i);
                let e = (s + *n as usize).min(len);
                let piece = b[s..e].to_vec();
                b.splice(e..e, piece);
            }
            Mutation::Insert(i, toks) => {
                let s = at(i);
                let mut piece = Vec::new();
                for t in toks {
                    piece.extend_from_slice(t.get::<&str>(VOCAB).as_bytes());
                    piece.push(b' ');
                }
                b.splice(s..s, piece);
            }
            Mutation::Swap(x, y, n) => {
                let (mut p, mut q) = (at(x), at(y));
                if p > q {
                    std::mem::swap(&mut p, &mut q);
                }
                let n = (*n as usize).min(q - p).min(len - q);
                if n > 0 {
                    let first = b[p..p + n].to_vec();
                    let second = b[q..q + n].to_vec();
                    b[p..p + n].copy_from_slice(&second);
                    b[q..q + n].copy_from_slice(&first);
                }
            }
            Mutation::Truncate(i) => b.truncate(at(i)),
            Mutation::ReplaceDigits(i, num) => {
                // Replace the next run of digits at or after the position by `num`.
                let mut s = at(i).min(len);
                while s < len && !b[s].is_ascii_digit() {
                    s += 1;
                }
                let mut e = s;
                while e < len && b[e].is_ascii_digit() {
                    e += 1;
                }
                b.splice(s..e, num.bytes());
            }
        }
    }
    // Byte edits may split a multi-byte character; the compiler takes `&str`.
    String::from_utf8_lossy(&b).into_owned()
}

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn mutated_specs_never_panic(
        file in any::<Index>(),
        muts in prop::collection::vec(mutation(), 1..6),
    ) {
        let specs = specs();
        let (name, text) = &specs[file.index(specs.len())];
        let mutated = apply(text, &muts);
        load(name, &mutated);
    }

    #[test]
    fn overrides_never_panic(
        file in any::<Index>(),
        key in prop::sample::select(&["size", "classes", "c", "width", "nope", ""][..]),
        value in prop::sample::select(VOCAB),
        value2 in prop::sample::select(VOCAB),
    ) {
        let specs = specs();
        let (name, text) = &specs[file.index(specs.len())];
        let v = format!("{value}{value2}");
        let opts = Options::with_sets(&[format!("{key}={v}")]).expect("has =");
        load_with(name, text, &opts);
    }
}

const YAML_SEED: &str = r#"
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

#[rustfmt::skip]
const YAML_VOCAB: &[&str] = &[
    "- ", ": ", "{", "}", "[", "]", ",", "\n", "\n  ", "\n    - ", "&a ", "*a", "<<: ", "!tag ",
    "---\n", "...\n", "|\n  ", ">\n  ", "\"", "'", "#", "? ", "%YAML 1.2\n", "models", "blocks",
    "body", "params", "repeat", "seq", "residual", "shortcut", "concat", "when", "then", "else",
    "let", "value", "input", "shape", "output", "train", "null", "~", "true", "yes", "0x10",
    "0o7", ".inf", ".nan", "1e400", "99999999999999999999", "-1", "0", "\t", "é", "💥",
];

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn mutated_yaml_never_panics(
        muts in prop::collection::vec(mutation(), 1..6),
        inserts in prop::collection::vec((any::<Index>(), any::<Index>()), 0..4),
    ) {
        let mut text = apply(YAML_SEED, &muts);
        for (at, tok) in inserts {
            let mut p = at.index(text.len() + 1);
            while !text.is_char_boundary(p) {
                p -= 1;
            }
            text.insert_str(p, tok.get::<&str>(YAML_VOCAB));
        }
        load("spec.yaml", &text);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let text = String::from_utf8_lossy(&bytes);
        load("spec.net", &text);
        load("spec.yaml", &text);
    }
}

// ---------------------------------------------------------------- 2. generated specs

fn int_lit() -> BoxedStrategy<String> {
    prop_oneof![
        40 => (1i64..10).prop_map(|i| i.to_string()),
        10 => (0i64..300).prop_map(|i| i.to_string()),
        1 => Just("0".to_string()),
        1 => Just("-1".to_string()),
        1 => Just("-7".to_string()),
        1 => Just("1000000000".to_string()),
        1 => Just("2147483648".to_string()),
        1 => Just("4294967296".to_string()),
        1 => Just("1099511627776".to_string()),
        1 => Just("9223372036854775807".to_string()),
        1 => any::<i64>().prop_map(|i| i.to_string()),
        // Literals that do not fit in 64 bits fail at parsing: rarely, so that most specs
        // get to elaboration.
        1 => prop::sample::select(&["-9223372036854775808", "99999999999999999999", "", "", "", "", "", "", "", ""][..])
            .prop_map(|s| if s.is_empty() { "5".to_string() } else { s.to_string() }),
    ]
    .boxed()
}

fn float_lit() -> BoxedStrategy<String> {
    prop_oneof![
        Just("0.5".to_string()),
        Just("0.0".to_string()),
        Just("-0.1".to_string()),
        Just("1e308".to_string()),
        Just("1e-5".to_string()),
        Just("1e9".to_string()),
        Just("2.5e300".to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
    ]
    .boxed()
}

/// Scalar expressions: literals, parameters, tensor fields, arithmetic, conditions.
fn scalar() -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        8 => int_lit(),
        1 => float_lit(),
        1 => prop::bool::ANY.prop_map(|b| b.to_string()),
        3 => prop::sample::select(&[
            "c", "size", "stride", "classes", "k", "in.channels", "in.height", "in.width",
            "in.features", "in.rank", "len(in.shape)", "in.shape[0]", "in.shape[-1]",
            "in.shape[99]", "x.channels", "\"str\"", "same", "image.channels",
        ][..])
        .prop_map(str::to_string),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            (
                inner.clone(),
                prop::sample::select(
                    &[
                        // (`//` starts a comment, so it is no operator here.)
                        "+", "-", "*", "/", "%", "==", "!=", "<", ">=", "&&", "||"
                    ][..]
                ),
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("{a} {op} {b}")),
            inner.clone().prop_map(|a| format!("({a})")),
            inner.clone().prop_map(|a| format!("-{a}")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(c, a, b)| format!("(if {c} then {a} else {b})")),
            (
                prop::sample::select(&["min", "max", "abs", "int", "float", "len"][..]),
                prop::collection::vec(inner.clone(), 0..3)
            )
                .prop_map(|(f, a)| format!("{f}({})", a.join(", "))),
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            (prop::collection::vec(inner.clone(), 1..4), inner)
                .prop_map(|(v, i)| format!("[{}][{i}]", v.join(", "))),
        ]
    })
    .boxed()
}

fn arg() -> BoxedStrategy<String> {
    prop_oneof![
        3 => scalar(),
        3 => (
            prop::sample::select(&[
                "stride", "pad", "groups", "dilation", "bias", "kernel", "ceil", "p", "eps",
                "momentum", "affine", "slope", "size", "alpha", "out", "margin",
                "count_include_pad", "c", "nope",
            ][..]),
            scalar()
        )
            .prop_map(|(k, v)| format!("{k}={v}")),
        1 => Just("pad=same".to_string()),
        1 => (1usize..5, 1usize..4)
            .prop_map(|(n, m)| {
                // A nested weight list, of a random (usually wrong) shape.
                let row = format!("[{}]", vec!["1"; m].join(", "));
                format!("weight=[{}]", vec![row; n].join(", "))
            }),
        1 => (0usize..4).prop_map(|n| format!("bias=[{}]", vec!["0.5"; n].join(", "))),
    ]
    .boxed()
}

/// Every built-in layer, plus the generated blocks and a name that is neither.
fn layers() -> Vec<&'static str> {
    let mut v = netc::elab::BUILTIN_LAYERS.to_vec();
    v.extend(["b0", "b1", "b2", "undefined_layer"]);
    v
}

fn call() -> BoxedStrategy<String> {
    prop_oneof![
        1 => prop::sample::select(layers()).prop_map(str::to_string),
        4 => (prop::sample::select(layers()), prop::collection::vec(arg(), 0..4))
            .prop_map(|(l, a)| format!("{l}({})", a.join(", "))),
        1 => prop::sample::select(&["in", "x", "y", "image", "f(in)", "f(x)", "add(x, in)"][..])
            .prop_map(str::to_string),
    ]
    .boxed()
}

/// A body: statements separated by newlines or semicolons.
fn body(stmt: BoxedStrategy<String>) -> BoxedStrategy<String> {
    (prop::collection::vec(stmt, 0..4), prop::bool::ANY)
        .prop_map(|(s, semi)| format!("{{ {} }}", s.join(if semi { "; " } else { "\n" })))
        .boxed()
}

fn stmt() -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        6 => call(),
        2 => (prop::sample::select(&["x", "y", "conv1", "fc"][..]), call())
            .prop_map(|(n, c)| format!("{n}: {c}")),
        1 => (prop::sample::select(&["x", "y"][..]), call()).prop_map(|(n, c)| format!("{n} = {c}")),
        1 => call().prop_map(|c| format!("f = shared {c}")),
        1 => (call(), call()).prop_map(|(a, b)| format!("x = in |> {a} |> {b}")),
        1 => prop::sample::select(&["output x", "output image", "output x, y", "output 1"][..])
            .prop_map(str::to_string),
        1 => call().prop_map(|c| format!("frozen {c}")),
    ];
    leaf.prop_recursive(4, 40, 4, |inner| {
        let b = body(inner.clone().boxed());
        prop_oneof![
            b.clone().prop_map(|b| format!("seq {b}")),
            (
                prop_oneof![
                    3 => (0i64..5).prop_map(|i| i.to_string()),
                    1 => Just("10000".to_string()),
                    1 => Just("1e9".to_string()),
                    1 => Just("1000000000".to_string()),
                    1 => Just("99999999999".to_string()),
                    1 => Just("-3".to_string()),
                    1 => scalar(),
                ],
                b.clone()
            )
                .prop_map(|(n, b)| format!("repeat {n} {b}")),
            (
                b.clone(),
                prop::option::of((prop::option::of(scalar()), b.clone()))
            )
                .prop_map(|(b, sc)| match sc {
                    None => format!("residual {b}"),
                    Some((None, s)) => format!("residual {b} shortcut {s}"),
                    Some((Some(c), s)) => format!("residual {b} shortcut when {c} {s}"),
                }),
            b.clone().prop_map(|b| format!("concat {b}")),
            (scalar(), b.clone(), prop::option::of(b.clone())).prop_map(|(c, t, e)| match e {
                None => format!("when {c} {t}"),
                Some(e) => format!("when {c} {t} else {e}"),
            }),
            (prop::sample::select(&["x", "blk", "layer1"][..]), b.clone())
                .prop_map(|(n, b)| format!("{n}: seq {b}")),
            b.prop_map(|b| format!("f = shared seq {b}")),
        ]
    })
    .boxed()
}

fn params() -> BoxedStrategy<String> {
    prop::collection::vec(
        (
            prop::sample::select(&["c", "size", "stride", "classes", "k", "c"][..]),
            prop::sample::select(
                &[
                    "int", "int", "int", "int", "int", "int", "float", "bool", "str", "int", "int",
                    "int", "int", "int", "int", "int", "int", "int", "int", "int", "tensor",
                ][..],
            ),
            prop::option::weighted(0.8, scalar()),
        )
            .prop_map(|(n, t, d)| match d {
                None => format!("{n}: {t}"),
                Some(d) => format!("{n}: {t} = {d}"),
            }),
        0..4,
    )
    .prop_map(|p| format!("({})", p.join(", ")))
    .boxed()
}

fn shape() -> BoxedStrategy<String> {
    prop_oneof![
        4 => Just("[3, 32, 32]".to_string()),
        4 => Just("[1, 28, 28]".to_string()),
        4 => Just("[16]".to_string()),
        4 => Just("[c, size, size]".to_string()),
        1 => Just("[1000000, 1000000, 1000000]".to_string()),
        1 => Just("[]".to_string()),
        2 => prop::collection::vec(scalar(), 0..5).prop_map(|v| format!("[{}]", v.join(", "))),
    ]
    .boxed()
}

fn train() -> BoxedStrategy<String> {
    prop::collection::vec(
        (
            prop::sample::select(
                &[
                    "loss",
                    "optimizer",
                    "epochs",
                    "batch",
                    "lr",
                    "data",
                    "freeze",
                    "schedule",
                    "weight_decay",
                    "nope",
                ][..],
            ),
            prop_oneof![
                scalar(),
                Just("cross_entropy(label_smoothing=0.1)".to_string()),
                Just("sgd(lr=0.01, momentum=0.9)".to_string()),
                Just("adam(lr=1e308)".to_string()),
                Just("[\"conv1\", \"nope\"]".to_string()),
                Just("\"mnist\"".to_string()),
            ],
        )
            .prop_map(|(k, v)| format!("{k}: {v}")),
        0..4,
    )
    .prop_map(|e| format!("train {{ {} }}", e.join("; ")))
    .boxed()
}

fn spec() -> BoxedStrategy<String> {
    let block = (prop::option::of(params()), body(stmt()))
        .prop_map(|(p, b)| format!("{} {b}", p.unwrap_or_default()));
    let blocks = (prop::collection::vec(block, 0..4), 0u8..20).prop_map(|(bs, name_mode)| {
        bs.iter()
            .enumerate()
            .map(|(i, b)| match name_mode {
                // Now and then a duplicate or a block that shadows a built-in.
                0 => format!("block b0{b}"),
                1 => format!("block relu{b}"),
                _ => format!("block b{i}{b}"),
            })
            .collect::<Vec<_>>()
    });
    let model = (
        prop::option::of(params()),
        shape(),
        prop::option::weighted(
            0.2,
            prop::sample::select(
                &[
                    " with mean=[0.5], std=[0.5]",
                    " with mean=[0.1, 0.2, 0.3], std=[0.0]",
                    " with std=[-1]",
                    " with nope=1",
                ][..],
            ),
        ),
        prop::collection::vec(stmt(), 0..6),
        prop::option::of(train()),
    )
        .prop_map(|(p, sh, w, s, t)| {
            format!(
                "model m(c: int = 4, size: int = 8{}) {{\n  input image: {sh}{}\n  {}\n  {}\n}}",
                p.map(|p| format!(", {}", &p[1..p.len() - 1]))
                    .unwrap_or_default(),
                w.unwrap_or_default(),
                s.join("\n  "),
                t.unwrap_or_default()
            )
        });
    let extra = prop::sample::select(&[None, None, None, Some("model n { relu }")][..]);
    (blocks, model, extra)
        .prop_map(|(bs, m, extra)| {
            let mut out = bs.join("\n");
            out.push('\n');
            out.push_str(&m);
            if let Some(e) = extra {
                out.push('\n');
                out.push_str(e);
            }
            out
        })
        .boxed()
}

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn generated_specs_never_panic(text in spec()) {
        load("m.net", &text);
    }

    #[test]
    fn generated_expressions_never_panic(e in scalar()) {
        // As a model parameter default, as an override, and as a layer argument.
        load("e.net", &format!("model m(size: int = {e}) {{ input x: [size] ; relu }}"));
        if let Ok(o) = Options::with_sets(&[format!("size={e}")]) {
            load_with("e.net", "model m(size: int = 3) { input x: [size] ; relu }", &o);
        }
        load("e.net", &format!("model m {{ input x: [3, 8, 8] ; conv({e}, {e}, stride={e}) }}"));
    }
}

// ---------------------------------------------------------------- 3. regression cases

#[test]
fn empty_input() {
    expect_err("empty.net", "", "defines no model");
    expect_err("empty.yaml", "", "empty");
}

#[test]
fn whitespace_and_comments_only() {
    for text in [
        " ",
        "\n\n\n",
        "\t\t",
        "\r\n",
        "\u{feff}",
        "// comment",
        "# c\n",
        "/* open",
    ] {
        assert!(
            load("ws.net", text).is_some(),
            "{text:?} should be an error"
        );
        assert!(
            load("ws.yaml", text).is_some(),
            "{text:?} should be an error"
        );
    }
}

#[test]
fn renderer_handles_awkward_positions() {
    // Errors at the very end of the file, after multi-byte characters, after tabs, on lines
    // with CR LF endings, and in files without a final newline.
    for text in [
        "model m {",
        "model m { input x: [3] ; relu",
        "model é { input x: [3] ; relu }",
        "model m { input x: [3] ; \t\tconw }",
        "model m { input x: [3] ;\r\n\t💥 }",
        "model m {\r\n  input x: [3]\r\n  unknown_layer\r\n}",
        "model m { input x: [3] ; dense(\"日本\") }",
        "model m { input x: [1, 2, 3] ; conv(é) }",
        "💥",
        "\u{feff}model",
        "model m { input x: [3]\u{0} }",
        "model m { input \"x\": [3] }",
        "import \"nonexistent_日本.net\"",
        "import \"\"",
        "import \"specs\"",
    ] {
        assert!(load("r.net", text).is_some(), "{text:?} should be an error");
    }
}

#[test]
fn deeply_nested_parens() {
    let text = format!(
        "model m(a: int = {}1{}) {{ input x: [a] }}",
        "(".repeat(10_000),
        ")".repeat(10_000)
    );
    expect_err("deep.net", &text, "nested");
    let text = format!("model m {{ input x: [3] ; relu({}) }}", "(".repeat(10_000));
    expect_err("deep.net", &text, "nested");
    let text = format!(
        "model m {{ input x: [3] ; dense({}1{}) }}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    expect_err("deep.net", &text, "nested");
}

#[test]
fn deeply_nested_seq() {
    let text = format!(
        "model m {{ input x: [3] ; {} relu {} }}",
        "seq { ".repeat(10_000),
        "} ".repeat(10_000)
    );
    expect_err("deep.net", &text, "nested");
    // Just under the bracket limit: nested bodies, each with a long pipe chain whose head is
    // the next nested body, so the expression trees stack up across the bodies.
    let depth = netc::syntax::parse::MAX_NESTING - 2;
    let mut inner = "relu".to_string();
    for _ in 0..depth {
        inner = format!("seq {{ x = {inner}{} }}", " |> relu".repeat(150));
    }
    let text = format!("model m {{ input x: [3]\n{inner} }}");
    load("deep.net", &text);
}

#[test]
fn deepest_blocks_of_deepest_bodies() {
    // Every limit at once: a chain of blocks as long as allowed, each wrapping the call of the
    // next in bodies nested as deep as allowed.
    let depth = netc::syntax::parse::MAX_NESTING - 3;
    let mut text = String::from("block b0 { relu }\n");
    for i in 1..netc::elab::MAX_DEPTH {
        text += &format!(
            "block b{i} {{ {}b{}{} }}\n",
            "seq { ".repeat(depth),
            i - 1,
            " }".repeat(depth)
        );
    }
    text += &format!(
        "model m {{ input x: [3] ; b{} }}",
        netc::elab::MAX_DEPTH - 1
    );
    load("deep.net", &text);
    // Many layers deep inside: each node records its enclosing blocks.
    let text = text.replace("block b0 { relu }", "block b0 { repeat 10000 { relu } }");
    load("deep.net", &text);
    let text = text.replace("seq { ", "").replace(" }", "}");
    load("deep.net", &text);
    let long = "a".repeat(200);
    let text = text.replace("{ b", &format!("{{ {long}: b"));
    load("deep.net", &text);
}

#[test]
fn nested_expressions_below_limit_elaborate() {
    // The deepest expressions the parser accepts must not exhaust the stack when evaluated.
    for op in ["+", "-", "*", "&&", "|>", "=="] {
        let text = format!(
            "model m(a: int = {}) {{ input x: [3] ; relu }}",
            vec!["1"; 190].join(op)
        );
        load("deep.net", &text);
    }
    let text = format!(
        "model m(a: int = {}1) {{ input x: [3] ; relu }}",
        "-".repeat(199)
    );
    load("deep.net", &text);
    let text = format!(
        "model m(a: bool = {}true) {{ input x: [3] ; relu }}",
        "!".repeat(199)
    );
    load("deep.net", &text);
    let text = format!(
        "model m(a: int = {}) {{ input x: [3] ; relu }}",
        "if true then ".repeat(60) + "1" + &" else 0".repeat(60)
    );
    load("deep.net", &text);
    let text = format!(
        "model m {{ input x: [3, 8, 8] ; relu{} }}",
        ".channels".repeat(199)
    );
    load("deep.net", &text);
    let text = format!(
        "model m(a: int = [1]{}) {{ input x: [3] ; relu }}",
        "[0]".repeat(199)
    );
    load("deep.net", &text);
    let mut e = "1".to_string();
    for _ in 0..60 {
        e = format!("[{e}]");
    }
    load(
        "deep.net",
        &format!("model m(a: int = {e}) {{ input x: [3] ; relu }}"),
    );
}

#[test]
fn long_operator_chain() {
    let text = format!(
        "model m(a: int = {}) {{ input x: [a] ; relu }}",
        vec!["1"; 100_000].join("+")
    );
    expect_err("chain.net", &text, "nested");
    let text = format!(
        "model m {{ input x: [3] ; x = in{} }}",
        " |> relu".repeat(20_000)
    );
    load("chain.net", &text);
    let text = format!(
        "model m(a: int = {}1) {{ input x: [a] }}",
        "-".repeat(100_000)
    );
    expect_err("chain.net", &text, "nested");
}

#[test]
fn huge_identifier() {
    let name = "a".repeat(1_000_000);
    let text = format!("model m {{ input x: [3] ; {name} }}");
    expect_err("ident.net", &text, "unknown layer");
    let text = format!("model {name} {{ input x: [3] ; relu }}");
    assert!(load("ident.net", &text).is_none());
    // A typo in a long name: no quadratic search for a suggestion.
    let text = format!("block {name} {{ relu }}\nmodel m {{ input x: [3] ; {name}b }}");
    expect_err("ident.net", &text, "unknown layer");
    let text = format!("model m({name}: int = 1) {{ input x: [{name}b] }}");
    expect_err("ident.net", &text, "unknown name");
}

#[test]
fn many_statements() {
    // Wide rather than deep: many layers, many names in scope.
    let body: String = (0..5000).map(|i| format!("l{i}: relu\n")).collect();
    let text = format!("model m {{ input x: [3]\n{body} }}");
    assert!(load("wide.net", &text).is_none());
    let body: String = (0..5000).map(|i| format!("b{i}\n")).collect();
    let blocks: String = (0..5000)
        .map(|i| format!("block b{i} {{ relu }}\n"))
        .collect();
    let text = format!("{blocks}model m {{ input x: [3]\n{body} }}");
    assert!(load("wide.net", &text).is_none());
}

#[test]
fn huge_repeat_counts() {
    expect_err(
        "r.net",
        "model m { input x: [3] ; repeat 99999999999 { relu } }",
        "repeat count",
    );
    expect_err(
        "r.net",
        "model m { input x: [3] ; repeat 99999999999999999999 { relu } }",
        "too large",
    );
    expect_err(
        "r.net",
        "model m { input x: [3] ; repeat -1 { relu } }",
        "negative",
    );
    expect_err(
        "r.net",
        "model m { input x: [3] ; repeat 1e9 { relu } }",
        "",
    );
    expect_err(
        "r.net",
        "model m { input x: [3] ; repeat 10000 { repeat 10000 { relu } } }",
        "layers",
    );
    // Stopped by the node limit or the step limit, both "too large" errors.
    expect_err(
        "r.net",
        "model m { input x: [3] ; repeat 10000 { repeat 10000 { relu ; relu } } }",
        "E0208",
    );
}

#[test]
fn repeats_that_make_no_layers_terminate() {
    // Bodies that add no nodes cannot be stopped by the node limit.
    for body in [
        "in",
        "seq { }",
        "when false { relu }",
        "",
        "x = in",
        "f = shared relu",
    ] {
        let text = format!(
            "model m {{ input x: [3] ; repeat 10000 {{ repeat 10000 {{ repeat 10000 {{ {body} }} }} }} ; relu }}"
        );
        load("r.net", &text);
    }
}

#[test]
fn exponential_block_instantiation_terminates() {
    // Each block calls the previous one twice: 2^60 instantiations if nothing stops it.
    for leaf in ["", "in", "relu"] {
        let mut text = format!("block b0 {{ {leaf} }}\n");
        for i in 1..60 {
            text += &format!("block b{i} {{ b{0} ; b{0} }}\n", i - 1);
        }
        text += "model m { input x: [3] ; b59 ; relu }";
        load("exp.net", &text);
    }
    let text = "block b { repeat 10000 { in } }
        model m { input x: [3] ; repeat 10000 { b } ; relu }";
    load("exp.net", text);
    let text = "model m { input x: [3] ; f = shared seq { repeat 10000 { in } } ; repeat 10000 { f } ; relu }";
    load("exp.net", text);
}

#[test]
fn huge_tensors() {
    let two40 = 1u64 << 40;
    for text in [
        format!("model m {{ input x: [3, 8, 8] ; conv({two40}, 3) }}"),
        "model m { input x: [3, 8, 8] ; conv(2147483648, 3) }".to_string(),
        "model m { input x: [3, 8, 8] ; conv(2147483647, 1) }".to_string(),
        "model m { input x: [1000000, 1000000, 1000000] ; relu }".to_string(),
        "model m { input x: [2147483647, 2147483647, 2147483647] ; relu }".to_string(),
        "model m { input x: [1048576] ; dense(1048576) }".to_string(),
        "model m { input x: [1048576] ; dense(1048577) }".to_string(),
        "model m { input x: [3] ; dense(9223372036854775807) }".to_string(),
        "model m { input x: [3] ; dense(-9223372036854775808) }".to_string(),
        "model m { input x: [3] ; dense(0) }".to_string(),
        "model m { input x: [3, 8, 8] ; conv(8, 9223372036854775807) }".to_string(),
        "model m { input x: [3, 8, 8] ; conv(8, 3, stride=9223372036854775807) }".to_string(),
        "model m { input x: [3, 8, 8] ; conv(8, 3, pad=9223372036854775807) }".to_string(),
        "model m { input x: [3, 8, 8] ; conv(8, 3, pad=2147483647) }".to_string(),
        "model m { input x: [3, 8, 8] ; conv(8, 3, dilation=2147483647) }".to_string(),
        "model m { input x: [3, 8, 8] ; conv(9, 3, groups=3) }".to_string(),
        "model m { input x: [3, 8, 8] ; conv(8, 3, groups=0) }".to_string(),
        "model m { input x: [3, 8, 8] ; maxpool(2147483647, pad=1073741823) }".to_string(),
        "model m { input x: [3, 8, 8] ; maxpool(3, stride=1, pad=1, dilation=2147483647) }"
            .to_string(),
        "model m { input x: [3, 8, 8] ; avgpool(3, stride=2147483647, ceil=true) }".to_string(),
        "model m { input x: [3, 2147483647, 2147483647] ; maxpool(3, pad=1, ceil=true) }"
            .to_string(),
        "model m { input x: [3, 8, 8] ; adaptive_avgpool(2147483647) }".to_string(),
        "model m { input x: [3, 8, 8] ; adaptive_avgpool([2147483647, 2147483647]) }".to_string(),
        "model m { input x: [1, 1048576, 1048576] ; flatten ; dense(1048576) }".to_string(),
        "model m { input x: [1048576, 1, 1] ; gram }".to_string(),
        "model m { input x: [3] ; concat { repeat 10000 { dense(2147483647) } } }".to_string(),
        "model m { input x: [3, 8, 8] ; lrn(2147483647) }".to_string(),
        // Legal sizes whose operation counts do not fit in 64 bits.
        "model m { input x: [1, 1048576, 1048576] ; lrn(2147483647) }".to_string(),
        "model m { input x: [1048576, 1, 1] ; conv(1, 1024, pad=524000) }".to_string(),
        "model m { input x: [1, 1048576, 1048576] ; maxpool(524288, stride=1, pad=262144) }"
            .to_string(),
        "model m { input x: [1, 1048576, 1048576] ; repeat 10000 { relu } }".to_string(),
        "model m { input x: [1, 1048576, 1048576] ; repeat 10000 { lrn(1000000) } }".to_string(),
        "model m(s: int = 9223372036854775807 + 1) { input x: [s] }".to_string(),
        "model m(s: int = -9223372036854775807 - 2) { input x: [s] }".to_string(),
        "model m(s: int = 9223372036854775807 * 2) { input x: [s] }".to_string(),
        "model m(s: int = -9223372036854775807 - 1) { input x: [-s] }".to_string(),
        "model m(s: int = (-9223372036854775807 - 1) / -1) { input x: [s] }".to_string(),
        "model m(s: int = (-9223372036854775807 - 1) // -1) { input x: [s] }".to_string(),
        "model m(s: int = (-9223372036854775807 - 1) % -1) { input x: [s] }".to_string(),
        "model m(s: int = 1 / 0) { input x: [s] }".to_string(),
        "model m(s: int = 1 // 0) { input x: [s] }".to_string(),
        "model m(s: int = 1 % 0) { input x: [s] }".to_string(),
        "model m(s: float = 1.0 / 0) { input x: [3] ; dropout(s) }".to_string(),
        "model m(s: float = 1e308 * 10) { input x: [3] ; dropout(s) }".to_string(),
        "model m(s: int = int(1e300)) { input x: [s] }".to_string(),
        "model m(s: int = abs(-9223372036854775807 - 1)) { input x: [s] }".to_string(),
        "model m(s: int = [1, 2][-9223372036854775807 - 1]) { input x: [s] }".to_string(),
        "model m(s: int = [1, 2][9223372036854775807]) { input x: [s] }".to_string(),
    ] {
        load("big.net", &text);
    }
}

#[test]
fn kernel_larger_than_input() {
    expect_err(
        "k.net",
        "model m { input x: [3, 4, 4] ; conv(8, 5) }",
        "kernel",
    );
    expect_err(
        "k.net",
        "model m { input x: [3, 4, 4] ; maxpool(5) }",
        "window",
    );
    load(
        "k.net",
        "model m { input x: [3, 1, 1] ; avgpool(1, stride=1) }",
    );
}

#[test]
fn recursive_blocks() {
    expect_err(
        "rec.net",
        "block a { a }\nmodel m { input x: [3] ; a }",
        "instantiates itself",
    );
    expect_err(
        "rec.net",
        "block a { b }\nblock b { a }\nmodel m { input x: [3] ; a }",
        "instantiates itself",
    );
    expect_err(
        "rec.net",
        "block a(n: int) { when n > 0 { a(n - 1) } }\nmodel m { input x: [3] ; a(5) }",
        "instantiates itself",
    );
    // A long chain of distinct blocks hits the depth limit.
    let mut text = String::new();
    for i in 0..500 {
        text += &format!("block b{i} {{ b{} }}\n", i + 1);
    }
    text += "block b500 { relu }\nmodel m { input x: [3] ; b0 }";
    expect_err("rec.net", &text, "deep");
    // Shared modules that refer to themselves.
    load(
        "rec.net",
        "model m { input x: [3] ; f = shared seq { f } ; f }",
    );
    load("rec.net", "model m { input x: [3] ; f = shared f ; f }");
    load(
        "rec.net",
        "model m { input x: [3] ; f = shared seq { g } ; g = shared f ; f }",
    );
}

#[test]
fn import_cycles_and_self_import() {
    let dir = std::env::temp_dir().join(format!("netc-no-panic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = dir.join("a.net");
    let b = dir.join("b.net");
    std::fs::write(&a, "import \"b.net\"\nmodel m { input x: [3] ; relu }").unwrap();
    std::fs::write(&b, "import \"a.net\"\nblock q { relu }").unwrap();
    let t = Instant::now();
    let r = load_file(&a, &Options::default());
    assert!(t.elapsed() < limit());
    assert!(render(&r.unwrap_err()).contains("cycle"));
    std::fs::write(&a, "import \"a.net\"\nmodel m { input x: [3] ; relu }").unwrap();
    let r = load_file(&a, &Options::default());
    assert!(render(&r.unwrap_err()).contains("cycle"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn invalid_utf8_file() {
    let dir = std::env::temp_dir().join(format!("netc-no-panic-utf8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in [
        ("bad.net", &b"model m { input x: [3] ; \xff\xfe relu }"[..]),
        ("bad.yaml", &b"models:\n  m:\n    body: [\xc3\x28]\n"[..]),
        ("bad2.net", &b"\xf0\x28\x8c\x28"[..]),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        let r = load_file(&p, &Options::default());
        assert!(render(&r.unwrap_err()).contains("UTF-8"));
    }
    // An imported file that is not UTF-8.
    std::fs::write(dir.join("lib.net"), b"block q { \xff }").unwrap();
    let main = dir.join("main.net");
    std::fs::write(&main, "import \"lib.net\"\nmodel m { input x: [3] ; q }").unwrap();
    let r = load_file(&main, &Options::default());
    assert!(render(&r.unwrap_err()).contains("UTF-8"));
    // A directory and a missing file.
    assert!(load_file(&dir, &Options::default()).is_err());
    assert!(load_file(dir.join("missing.net"), &Options::default()).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn yaml_random_and_deep() {
    for text in [
        "\u{0}\u{1}\u{2}",
        "\u{feff}",
        "- - - -",
        ": : :",
        "{",
        "[",
        "models: {m: {body: [relu, {seq: [relu]}]}}\n\u{0}",
        "models:\n  m:\n    body:\n\t- relu\n",
        "%YAML 1.2\n---\nmodels: {}\n...\n---\n",
        "models: !!map {}",
        "models: {m: {body: \"",
        "models: {m: {body: ['((((']}}",
        "models: {m: {params: {a: 'int = 99999999999999999999'}, body: [relu]}}",
        "models: {m: {body: [{repeat: 99999999999, body: [relu]}]}}",
        "models: {m: {body: [{input: x, shape: [1000000, 1000000, 1000000]}, relu]}}",
    ] {
        assert!(
            load("y.yaml", text).is_some(),
            "{text:?} should be an error"
        );
    }
    for n in [100, 10_000, 100_000] {
        expect_err("deep.yaml", &"[".repeat(n), "");
        expect_err(
            "deep.yaml",
            &format!("{}1{}", "[".repeat(n), "]".repeat(n)),
            "deep",
        );
        expect_err("deep.yaml", &"{a: ".repeat(n), "");
        let mut block = String::new();
        for i in 0..n.min(2000) {
            block += &" ".repeat(i);
            block += "a:\n";
        }
        expect_err("deep.yaml", &block, "");
        expect_err("deep.yaml", &"- ".repeat(n.min(20_000)), "");
    }
}

#[test]
fn yaml_alias_bombs() {
    // Billion laughs: each level refers to the previous one ten times.
    let mut text = String::from("a0: &a0 [lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        text += &format!("a{i}: &a{i} [{refs}]\n");
    }
    text += "models: {m: {body: *a9}}\n";
    expect_err("bomb.yaml", &text, "");
    let text = "models: &m {m: {body: [relu]}, x: *m}\n";
    expect_err("bomb.yaml", text, "");
    let text = "models:\n  m: &b\n    body: [relu]\n  n: *b\n";
    expect_err("bomb.yaml", text, "");
    let text = "base: &b {body: [relu]}\nmodels: {m: {<<: *b}}\n";
    expect_err("bomb.yaml", text, "");
}
