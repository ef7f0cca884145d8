//! Loading a spec: files → parsed ASTs → chosen model → layer graph.
//!
//! In: a path (`.net`, `.yaml` or `.yml`) or a string, plus [`Options`] (`--set` overrides and
//! the model to pick). Out: a [`Spec`] holding the [`SourceMap`] and the elaborated
//! [`LayerGraph`], or a [`SpecError`] that renders its diagnostics in rustc's style.
//!
//! Imports are resolved relative to the importing file (or absolute), transitively; cycles and
//! missing files are errors at the `import` statement. Blocks of all loaded files share one
//! namespace.
//!
//! What may be read: an import must name a regular file whose name, and whose real path once
//! symbolic links are resolved, end in `.net`, `.yaml` or `.yml`; anything else is refused at
//! the import, without being opened. Every spec file (the root too, whatever its name) is
//! read through [`crate::io::read_limited`] (regular files only, at most
//! [`crate::io::Kind::Spec`]'s size, never blocking on a FIFO or device) and must be UTF-8 with
//! no control characters but tab, CR and LF; a file that is not is reported by position,
//! without echoing any of its bytes. The "did you mean" hint for a missing import names only
//! spec files.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::diag::{Diagnostic, FileId, SourceMap, Span, codes, render_all, suggest};
use crate::elab::{self, value::Value};
use crate::layer_graph::LayerGraph;
use crate::syntax::ast::{Def, Item, SourceFile};

/// How to elaborate a spec.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--set name=value` overrides of model parameters, in order.
    pub overrides: Vec<(String, String)>,
    /// Which model to elaborate when the file defines several.
    pub model: Option<String>,
    /// Height and width for named `[C, H, W]` inputs, replacing the spec's (`netc run
    /// --native-size`: the input takes the size of the image it is given); every layer after
    /// is shape-checked at that size.
    pub input_sizes: Vec<(String, [usize; 2])>,
}

impl Options {
    /// Parses `name=value` strings as given on the command line.
    pub fn with_sets<S: AsRef<str>>(sets: &[S]) -> Result<Options, String> {
        let mut o = Options::default();
        for s in sets {
            let s = s.as_ref();
            let Some((k, v)) = s.split_once('=') else {
                return Err(format!(
                    "`--set {s}`: expected name=value, e.g. `--set classes=10`"
                ));
            };
            o.overrides
                .push((k.trim().to_string(), v.trim().to_string()));
        }
        Ok(o)
    }
}

/// An elaborated spec.
#[derive(Debug, Clone)]
pub struct Spec {
    pub sources: SourceMap,
    pub graph: LayerGraph,
}

/// Why a spec could not be elaborated, with the sources needed to render the diagnostics.
#[derive(Debug, Clone)]
pub struct SpecError {
    pub sources: SourceMap,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&render_all(&self.diagnostics, &self.sources))
    }
}

impl std::error::Error for SpecError {}

/// Stack for the thread that runs the front end. Parsing and elaboration recurse once per
/// nesting level (bounded: see `syntax::parse::MAX_NESTING`, `elab::MAX_DEPTH`), and pest's
/// recursive descent uses a few hundred KB of stack per bracket level in debug builds: more than
/// a default 2 MB thread has. The memory is reserved, not committed, until used.
const FRONTEND_STACK: usize = 256 << 20;

/// Runs `f` on a thread with [`FRONTEND_STACK`] of stack (or here, if no thread can be made).
fn on_big_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let slot = std::sync::Mutex::new(Some(f));
    let take = || slot.lock().ok().and_then(|mut g| g.take());
    std::thread::scope(|s| {
        let spawned = std::thread::Builder::new()
            .name("netc-frontend".into())
            .stack_size(FRONTEND_STACK)
            .spawn_scoped(s, || take().map(|f| f()));
        match spawned.ok().map(|h| h.join()) {
            Some(Ok(Some(v))) => v,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            _ => take().map(|f| f()).expect("front end ran nowhere"),
        }
    })
}

/// Loads and elaborates a spec file.
pub fn load_file(path: impl AsRef<Path>, opts: &Options) -> Result<Spec, SpecError> {
    let path = path.as_ref();
    on_big_stack(|| load_file_here(path, opts))
}

fn load_file_here(path: &Path, opts: &Options) -> Result<Spec, SpecError> {
    let mut loader = Loader::default();
    let root = match read_spec(path) {
        Ok(text) => loader.add_file(path, &path.display().to_string(), text),
        Err(why) => {
            return Err(loader.fail(Diagnostic::error(
                codes::FILE,
                format!("cannot read {}: {why}", path.display()),
            )));
        }
    };
    loader.finish(root, opts)
}

/// Loads and elaborates spec text (`.net` syntax, or YAML when `name` ends in `.yaml`/`.yml`).
/// Imports are resolved relative to the current directory.
pub fn load_str(name: &str, text: &str, opts: &Options) -> Result<Spec, SpecError> {
    on_big_stack(|| {
        let mut loader = Loader::default();
        let root = loader.add_file(Path::new(name), name, text.to_string());
        loader.finish(root, opts)
    })
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => crate::io::os_reason(e),
    }
}

/// The extensions a spec file may have to be imported.
const SPEC_EXTENSIONS: [&str; 3] = ["net", "yaml", "yml"];

/// True when the file name ends in `.net`, `.yaml` or `.yml`.
fn has_spec_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| SPEC_EXTENSIONS.contains(&e))
}

/// Reads a spec file: a regular file within the spec size limit
/// ([`crate::io::Kind::Spec`]; never blocks on a FIFO or device) holding spec text (see
/// [`spec_text`]). The error says why in words and never quotes the file's contents.
fn read_spec(path: &Path) -> Result<String, String> {
    let bytes = crate::io::read_limited(path, crate::io::Kind::Spec).map_err(|e| {
        e.message
            .strip_prefix("cannot read: ")
            .map(str::to_string)
            .unwrap_or(e.message)
    })?;
    spec_text(bytes)
}

/// The text of a spec: UTF-8 without control characters other than tab, CR and LF. The error
/// gives the position of the first offending byte or character, never the bytes themselves:
/// a file that is not spec text may hold anything (`/proc/self/environ`).
fn spec_text(bytes: Vec<u8>) -> Result<String, String> {
    let line_col = |text: &str| {
        let line = text.matches('\n').count() + 1;
        let col = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("line {line}, column {col}")
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let before = std::str::from_utf8(&e.as_bytes()[..valid]).unwrap_or("");
            return Err(format!(
                "not spec text: it is not UTF-8 (an invalid byte at {})",
                line_col(before)
            ));
        }
    };
    if let Some((i, c)) = text
        .char_indices()
        .find(|&(_, c)| c.is_control() && !matches!(c, '\t' | '\r' | '\n'))
    {
        return Err(format!(
            "not spec text: it holds the control character U+{:04X} at {}",
            c as u32,
            line_col(&text[..i])
        ));
    }
    Ok(text)
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

#[derive(Default)]
struct Loader {
    sources: SourceMap,
    parsed: Vec<(FileId, SourceFile)>,
    /// Canonical path → file, so each file is parsed once.
    seen: HashMap<PathBuf, FileId>,
}

impl Loader {
    fn add_file(&mut self, path: &Path, name: &str, text: String) -> FileId {
        let id = self.sources.add(path, name, text);
        if let Ok(c) = path.canonicalize() {
            self.seen.insert(c, id);
        }
        id
    }

    fn fail(self, d: Diagnostic) -> SpecError {
        SpecError {
            sources: self.sources,
            diagnostics: vec![d],
        }
    }

    fn parse(&self, id: FileId) -> Result<SourceFile, Diagnostic> {
        let f = self.sources.get(id);
        if is_yaml(&f.path) {
            crate::yaml::parse_yaml(id, &f.text)
        } else {
            crate::syntax::parse_file(id, &f.text)
        }
    }

    /// Parses `id` and, depth first, everything it imports.
    fn load(&mut self, id: FileId, stack: &mut Vec<FileId>) -> Result<(), Diagnostic> {
        let ast = self.parse(id)?;
        stack.push(id);
        let imports: Vec<(String, Span)> = ast
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Import { path, span } => Some((path.clone(), *span)),
                _ => None,
            })
            .collect();
        self.parsed.push((id, ast));
        for (rel, span) in imports {
            let base = self
                .sources
                .get(id)
                .path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let full = base.join(&rel);
            let not_spec = |why: &str| {
                Diagnostic::error(
                    codes::FILE,
                    format!(
                        "`{rel}` is not a spec file: imports must name `.net`, `.yaml` or `.yml` \
                         files{why}"
                    ),
                )
                .at(span, "imported here")
            };
            if !has_spec_extension(&full) {
                return Err(not_spec(""));
            }
            let canon = match full.canonicalize() {
                Ok(c) => c,
                Err(e) => {
                    let mut d = Diagnostic::error(
                        codes::FILE,
                        format!("cannot import `{rel}`: {}", io_reason(&e)),
                    )
                    .at(span, format!("looked for {}", full.display()));
                    if let Some(h) = nearby_file(&full) {
                        d = d.help(format!("did you mean `{h}`?"));
                    } else {
                        d = d.help("import paths are relative to the importing file");
                    }
                    return Err(d);
                }
            };
            // A link named like a spec must lead to one too.
            if !has_spec_extension(&canon) {
                return Err(not_spec(", and this one is a link to a file that is not"));
            }
            if let Some(&existing) = self.seen.get(&canon) {
                if stack.contains(&existing) {
                    let chain: Vec<String> = stack
                        .iter()
                        .chain([&existing])
                        .map(|f| self.sources.get(*f).name.clone())
                        .collect();
                    return Err(Diagnostic::error(
                        codes::IMPORT_CYCLE,
                        format!("import cycle: {}", chain.join(" -> ")),
                    )
                    .at(span, "this import closes the cycle")
                    .help("move the shared blocks into a third file that both import"));
                }
                continue; // already loaded through another path
            }
            let text = read_spec(&canon).map_err(|why| {
                Diagnostic::error(codes::FILE, format!("cannot import `{rel}`: {why}"))
                    .at(span, "imported here")
            })?;
            let new = self.add_file(&full, &full.display().to_string(), text);
            self.load(new, stack)?;
        }
        stack.pop();
        Ok(())
    }

    fn finish(mut self, root: FileId, opts: &Options) -> Result<Spec, SpecError> {
        let mut stack = Vec::new();
        if let Err(d) = self.load(root, &mut stack) {
            return Err(self.fail(d));
        }
        match self.elaborate(root, opts) {
            Ok(graph) => Ok(Spec {
                sources: self.sources,
                graph,
            }),
            Err(d) => Err(self.fail(d)),
        }
    }

    fn elaborate(&mut self, root: FileId, opts: &Options) -> Result<LayerGraph, Diagnostic> {
        let parsed = std::mem::take(&mut self.parsed);
        let mut blocks: HashMap<String, &Def> = HashMap::new();
        let mut models: Vec<&Def> = Vec::new();
        for (fid, ast) in &parsed {
            for item in &ast.items {
                let (def, is_model) = match item {
                    Item::Block(d) => (d, false),
                    Item::Model(d) => (d, true),
                    Item::Import { .. } => continue,
                };
                if is_model {
                    if *fid == root {
                        models.push(def);
                    }
                    continue;
                }
                if crate::elab::is_builtin_layer(&def.name.name) {
                    return Err(Diagnostic::error(
                        codes::DUPLICATE,
                        format!("block `{}` has the name of a built-in layer", def.name.name),
                    )
                    .at(def.name.span, "shadows the built-in")
                    .help(format!("rename it, e.g. `my_{}`", def.name.name)));
                }
                if let Some(prev) = blocks.get(&def.name.name) {
                    return Err(Diagnostic::error(
                        codes::DUPLICATE,
                        format!("block `{}` is defined twice", def.name.name),
                    )
                    .at(def.name.span, "second definition")
                    .also(prev.name.span, "first definition"));
                }
                blocks.insert(def.name.name.clone(), def);
            }
        }
        let model = self.pick_model(root, &models, opts)?;
        let params = self.model_params(model, opts)?;
        let g = elab::elaborate_model_sized(&blocks, model, params, &opts.input_sizes);
        self.parsed = parsed;
        g
    }

    fn pick_model<'d>(
        &self,
        root: FileId,
        models: &[&'d Def],
        opts: &Options,
    ) -> Result<&'d Def, Diagnostic> {
        let file = self.sources.get(root);
        let whole = Span::new(root, 0, 0);
        if let Some(want) = &opts.model {
            return models
                .iter()
                .find(|m| m.name.name == *want)
                .copied()
                .ok_or_else(|| {
                    let hint = suggest(want, models.iter().map(|m| m.name.name.as_str()));
                    Diagnostic::error(
                        codes::NO_MODEL,
                        format!("{} has no model `{want}`", file.name),
                    )
                    .with_help(Some(match hint {
                        Some(h) => format!("did you mean `{h}`?"),
                        None => format!(
                            "models here: {}",
                            models
                                .iter()
                                .map(|m| m.name.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    }))
                });
        }
        match models {
            [] => Err(Diagnostic::error(
                codes::NO_MODEL,
                format!("{} defines no model", file.name),
            )
            .at(whole, "expected `model name { ... }`")
            .help("a spec needs one `model`; files with only blocks are meant to be imported")),
            [m] => Ok(m),
            many => {
                let stem = file.path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                many.iter()
                    .find(|m| m.name.name == stem)
                    .copied()
                    .ok_or_else(|| {
                        Diagnostic::error(
                            codes::NO_MODEL,
                            format!("{} defines several models", file.name),
                        )
                        .at(many[1].name.span, "which one?")
                        .help(format!(
                            "choose one with `--model NAME`: {}",
                            many.iter()
                                .map(|m| m.name.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })
            }
        }
    }

    /// The model's parameter values: defaults, overridden by `--set`.
    fn model_params(
        &mut self,
        model: &Def,
        opts: &Options,
    ) -> Result<Vec<(String, Value)>, Diagnostic> {
        let mut given: HashMap<&str, (FileId, &str)> = HashMap::new();
        for (k, v) in &opts.overrides {
            if !model.params.iter().any(|p| p.name.name == *k) {
                let hint = suggest(k, model.params.iter().map(|p| p.name.name.as_str()));
                let known = model
                    .params
                    .iter()
                    .map(|p| p.name.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Diagnostic::error(
                    codes::OVERRIDE,
                    format!(
                        "`--set {k}=...`: model `{}` has no parameter `{k}`",
                        model.name.name
                    ),
                )
                .at(model.name.span, "this model")
                .help(match hint {
                    Some(h) => format!("did you mean `{h}`?"),
                    None if known.is_empty() => "this model takes no parameters".into(),
                    None => format!("its parameters are: {known}"),
                }));
            }
            let fid = self
                .sources
                .add(format!("--set {k}"), format!("--set {k}"), v.clone());
            given.insert(k, (fid, v));
        }
        let mut out: Vec<(String, Value)> = Vec::new();
        for p in &model.params {
            let scope_vals = out.clone();
            let (expr, from_cli) = match given.get(p.name.name.as_str()) {
                Some((fid, text)) => (crate::syntax::parse_expr(*fid, text, 0)?, true),
                None => match &p.default {
                    Some(d) => (d.clone(), false),
                    None => {
                        return Err(Diagnostic::error(
                            codes::OVERRIDE,
                            format!("model parameter `{}` has no default", p.name.name),
                        )
                        .at(p.span, "needs a value")
                        .help(format!("pass it with `--set {}=...`", p.name.name)));
                    }
                },
            };
            let v = elab::eval_const(&expr, scope_vals)?;
            let v = v.coerce(p.ty).map_err(|v| {
                Diagnostic::error(
                    if from_cli {
                        codes::OVERRIDE
                    } else {
                        codes::TYPE
                    },
                    format!(
                        "parameter `{}` is {}, found {} `{}`",
                        p.name.name,
                        p.ty.as_str(),
                        v.type_name(),
                        v.show()
                    ),
                )
                .at(expr.span, format!("expected {}", p.ty.as_str()))
                .also(p.ty_span, "declared here")
            })?;
            out.push((p.name.name.clone(), v));
        }
        Ok(out)
    }
}

/// A spec file (by its extension) in the same directory whose name is close to the missing
/// one. Other files are never named: the hint must not list a directory's contents.
fn nearby_file(missing: &Path) -> Option<String> {
    let dir = missing.parent()?;
    let name = missing.file_name()?.to_str()?;
    let entries: Vec<String> = std::fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    })
    .ok()?
    .filter_map(|e| e.ok()?.file_name().into_string().ok())
    .filter(|n| has_spec_extension(Path::new(n)))
    .collect();
    suggest(name, entries.iter().map(String::as_str)).map(str::to_string)
}
