//! One rendered diagnostic per class of mistake, snapshot-tested: the message, the
//! `--> file:line:col` line, the caret under the span, the second span where there is one, and
//! the `help:`.

use netc::{Options, load_file, load_str};

fn diag(src: &str) -> String {
    diag_with(src, &Options::default())
}

fn diag_with(src: &str, opts: &Options) -> String {
    match load_str("spec.net", src, opts) {
        Ok(_) => panic!("expected an error for:\n{src}"),
        Err(e) => e.to_string(),
    }
}

fn code(rendered: &str) -> &str {
    &rendered[6..11]
}

macro_rules! case {
    ($name:ident, $code:literal, $src:expr) => {
        #[test]
        fn $name() {
            let r = diag($src);
            assert_eq!(code(&r), $code, "{r}");
            insta::assert_snapshot!(stringify!($name), r);
        }
    };
}

case!(
    syntax_error,
    "E0001",
    "model m {\n  input x: [1, 28, 28]\n  conv(6, 5\n  relu\n}\n"
);
case!(
    syntax_keyword_as_name,
    "E0001",
    "model m {\n  input x: [1, 28, 28]\n  repeat: conv(6, 5)\n}\n"
);
case!(
    unknown_layer,
    "E0201",
    "model m {\n  input x: [1, 28, 28]\n  conv1: conw(6, 5)\n}\n"
);
case!(
    unknown_block,
    "E0201",
    "block basic(c: int) { conv(c, 3, pad=1); relu }\nmodel m {\n  input x: [3, 32, 32]\n  basci(16)\n}\n"
);
case!(
    unknown_argument,
    "E0203",
    "model m {\n  input x: [1, 28, 28]\n  conv(6, 5, strid=2)\n}\n"
);
case!(
    too_many_arguments,
    "E0203",
    "model m {\n  input x: [1, 28, 28]\n  maxpool(2, 2, 0, 1, false, 7)\n}\n"
);
case!(
    missing_argument,
    "E0203",
    "model m {\n  input x: [1, 28, 28]\n  conv(6)\n}\n"
);
case!(
    missing_block_argument,
    "E0203",
    "block stage(c: int, n: int) { repeat n { conv(c, 3, pad=1) } }\nmodel m {\n  input x: [3, 32, 32]\n  stage(16)\n}\n"
);
case!(
    wrong_argument_type,
    "E0204",
    "model m {\n  input x: [1, 28, 28]\n  conv(6.5, 5)\n}\n"
);
case!(
    wrong_block_argument_type,
    "E0204",
    "block stage(c: int) { conv(c, 3, pad=1) }\nmodel m {\n  input x: [3, 32, 32]\n  stage(true)\n}\n"
);
case!(
    float_division_for_channels,
    "E0204",
    "model m(width: int = 64) {\n  input x: [3, 32, 32]\n  conv(width / 3, 3)\n}\n"
);
case!(
    residual_shape_mismatch,
    "E0301",
    "model m {\n  input x: [16, 32, 32]\n  residual {\n    conv(32, 3, stride=2, pad=1)\n    relu\n  }\n}\n"
);
case!(
    concat_shape_mismatch,
    "E0301",
    "model m {\n  input x: [16, 32, 32]\n  concat {\n    a: conv(8, 1)\n    b: conv(8, 3)\n  }\n}\n"
);
case!(
    dense_without_flatten,
    "E0301",
    "model m {\n  input x: [1, 28, 28]\n  conv(6, 5)\n  dense(10)\n}\n"
);
case!(
    kernel_larger_than_input,
    "E0301",
    "model m {\n  input x: [1, 4, 4]\n  conv(6, 5)\n}\n"
);
case!(
    zero_size,
    "E0207",
    "model m {\n  input x: [1, 28, 28]\n  conv(0, 5)\n}\n"
);
case!(
    negative_size,
    "E0207",
    "model m(c: int = -4) {\n  input x: [1, 28, 28]\n  conv(c, 5)\n}\n"
);
case!(
    self_instantiation,
    "E0206",
    "block tower(c: int) {\n  conv(c, 3, pad=1)\n  tower(c)\n}\nmodel m {\n  input x: [3, 8, 8]\n  tower(4)\n}\n"
);
case!(
    repeat_too_large,
    "E0208",
    "model m {\n  input x: [3, 8, 8]\n  repeat 1000000 { relu }\n}\n"
);
case!(
    tensor_too_large,
    "E0208",
    "model m {\n  input x: [3, 8, 8]\n  conv(2000000000, 1)\n  conv(2000000000, 1)\n}\n"
);
case!(
    integer_overflow,
    "E0208",
    "model m(c: int = 9223372036854775807) {\n  input x: [3, 8, 8]\n  conv(c + 1, 1)\n}\n"
);
case!(
    duplicate_layer_names,
    "E0205",
    "model m {\n  input x: [3, 8, 8]\n  conv1: conv(4, 3)\n  relu\n  conv1: conv(4, 3)\n}\n"
);
case!(
    unknown_name,
    "E0202",
    "model m(classes: int = 10) {\n  input x: [8]\n  dense(clases)\n}\n"
);
case!(
    unknown_tensor_field,
    "E0202",
    "block b(c: int) { when in.chanels != c { conv(c, 1) } }\nmodel m {\n  input x: [3, 8, 8]\n  b(4)\n}\n"
);
case!(
    train_unknown_setting,
    "E0401",
    "model m {\n  input x: [8]\n  dense(2)\n  train {\n    optimiser: sgd(lr=0.1)\n  }\n}\n"
);
case!(
    train_unknown_optimizer,
    "E0401",
    "model m {\n  input x: [8]\n  dense(2)\n  train {\n    optimizer: adamm(lr=0.1)\n  }\n}\n"
);
case!(
    train_bad_freeze_selector,
    "E0401",
    "model m {\n  input x: [8]\n  fc1: dense(4)\n  fc2: dense(2)\n  train { freeze: [\"fc3\"] }\n}\n"
);
case!(no_model, "E0103", "block b(c: int) { conv(c, 1) }\n");
case!(
    no_input,
    "E0302",
    "model m {\n  output_layer: dense(3)\n}\n"
);

#[test]
fn unknown_override() {
    let opts = Options::with_sets(&["clases=3"]).unwrap();
    let r = diag_with(
        "model m(classes: int = 10) {\n  input x: [8]\n  dense(classes)\n}\n",
        &opts,
    );
    assert_eq!(code(&r), "E0402", "{r}");
    insta::assert_snapshot!("unknown_override", r);
}

#[test]
fn override_of_wrong_type() {
    let opts = Options::with_sets(&["classes=2.5"]).unwrap();
    let r = diag_with(
        "model m(classes: int = 10) {\n  input x: [8]\n  dense(classes)\n}\n",
        &opts,
    );
    assert_eq!(code(&r), "E0402", "{r}");
    insta::assert_snapshot!("override_of_wrong_type", r);
}

#[test]
fn import_cycle() {
    let r = load_file("tests/data/diag/cycle_a.net", &Options::default())
        .unwrap_err()
        .to_string();
    assert_eq!(code(&r), "E0102", "{r}");
    insta::assert_snapshot!("import_cycle", r);
}

#[test]
fn missing_import() {
    let r = load_file("tests/data/diag/missing_import.net", &Options::default())
        .unwrap_err()
        .to_string();
    assert_eq!(code(&r), "E0101", "{r}");
    insta::assert_snapshot!("missing_import", r);
}

#[test]
fn missing_spec_file() {
    let r = load_file("tests/data/diag/does_not_exist.net", &Options::default())
        .unwrap_err()
        .to_string();
    assert_eq!(code(&r), "E0101", "{r}");
    assert!(r.contains("does_not_exist.net"), "{r}");
}

#[test]
fn two_spans_are_shown_for_shape_errors() {
    let r = diag("model m {\n  input x: [1, 28, 28]\n  conv(6, 5)\n  dense(10)\n}\n");
    assert!(r.contains("spec.net:4:3"), "{r}");
    assert!(r.contains("3 |   conv(6, 5)"), "{r}");
    assert!(r.contains("help: insert `flatten`"), "{r}");
}

case!(
    duplicate_statement_names,
    "E0205",
    "model m {\n  input x: [3, 8, 8]\n  act: relu\n  act: sigmoid\n}\n"
);

// Control characters never reach the terminal: the snippet shows them as rustc does (control
// pictures, a tab as four spaces, carets aligned under them), messages escape them.
case!(
    control_characters_in_the_snippet,
    "E0001",
    "model m {\n  input x: [1, 28, 28]\n  relu \x1b[2J\x07\n}\n"
);
case!(
    tabs_keep_the_carets_aligned,
    "E0201",
    "model m {\n\tinput x: [1, 28, 28]\n\t\tconw(6, 5)\n}\n"
);
case!(
    control_characters_in_a_quoted_string,
    "E0204",
    "model m {\n  input x: [1, 28, 28]\n  flatten\n  dense(\"\x1b[31mred\t\x07\")\n}\n"
);
