//! Source files, spans and rustc-style diagnostics.
//!
//! In: source texts registered in a [`SourceMap`], and [`Diagnostic`]s built by any front-end
//! stage. Out: rendered text such as
//!
//! ```text
//! error[E0201]: unknown layer `conw`
//!  --> specs/lenet5.net:4:10
//!   |
//! 4 |   conv1: conw(6, 5, pad=2)
//!   |          ^^^^ not a layer or block
//!   |
//!   = help: did you mean `conv`?
//! ```
//!
//! Spans are byte ranges into one registered file; line and column are computed on demand
//! (columns count characters, starting at 1).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Index of a file in a [`SourceMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FileId(pub u32);

/// A byte range in one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub file: FileId,
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(file: FileId, start: usize, end: usize) -> Span {
        Span {
            file,
            start: start as u32,
            end: end.max(start) as u32,
        }
    }
    /// The smallest span covering both (they must be in the same file; otherwise `self`).
    pub fn to(self, other: Span) -> Span {
        if self.file != other.file {
            return self;
        }
        Span {
            file: self.file,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// A source file as loaded.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    /// The name shown in diagnostics (the path as the user gave it).
    pub name: String,
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let col = self.text[start..floor_char_boundary(&self.text, offset)]
            .chars()
            .count();
        (line + 1, col + 1)
    }

    /// The text of a 1-based line, without its line terminator.
    pub fn line_text(&self, line: usize) -> &str {
        let start = self.line_starts[line - 1];
        let end = self
            .line_starts
            .get(line)
            .copied()
            .unwrap_or(self.text.len());
        self.text[start..end].trim_end_matches(['\n', '\r'])
    }

    /// Byte offset of a 1-based line and column (used by front ends that report positions).
    pub fn offset_of(&self, line: usize, col: usize) -> usize {
        let Some(&start) = self.line_starts.get(line.saturating_sub(1)) else {
            return self.text.len();
        };
        let line_text = &self.text[start..];
        let extra: usize = line_text
            .chars()
            .take(col.saturating_sub(1))
            .take_while(|&c| c != '\n')
            .map(char::len_utf8)
            .sum();
        start + extra
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// All files loaded while compiling one spec (the spec and its imports).
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn new() -> SourceMap {
        SourceMap::default()
    }

    pub fn add(&mut self, path: impl AsRef<Path>, name: impl Into<String>, text: String) -> FileId {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        self.files.push(SourceFile {
            path: path.as_ref().to_path_buf(),
            name: name.into(),
            text,
            line_starts,
        });
        FileId(self.files.len() as u32 - 1)
    }

    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    pub fn files(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files
            .iter()
            .enumerate()
            .map(|(i, f)| (FileId(i as u32), f))
    }

    /// `name:line:col` of the start of a span.
    pub fn location(&self, span: Span) -> String {
        let f = self.get(span.file);
        let (l, c) = f.line_col(span.start as usize);
        format!("{}:{l}:{c}", f.name)
    }

    /// The source text a span covers.
    pub fn snippet(&self, span: Span) -> &str {
        let f = self.get(span.file);
        let s = (span.start as usize).min(f.text.len());
        let e = (span.end as usize).min(f.text.len()).max(s);
        f.text.get(s..e).unwrap_or("")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// A labelled span: the primary one gets `^^^`, secondary ones `---`.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub span: Span,
    pub message: String,
}

/// A compiler message about the user's input. Boxed so that `Result<T, Diagnostic>` stays
/// small on the success path; fields are reached through `Deref`.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic(Box<DiagnosticData>);

impl std::ops::Deref for Diagnostic {
    type Target = DiagnosticData;
    fn deref(&self) -> &DiagnosticData {
        &self.0
    }
}

impl std::ops::DerefMut for Diagnostic {
    fn deref_mut(&mut self) -> &mut DiagnosticData {
        &mut self.0
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DiagnosticData {
    pub severity: Severity,
    /// Stable error code, e.g. `E0201`. Codes are listed in [`codes`].
    pub code: &'static str,
    pub message: String,
    pub primary: Option<Label>,
    pub secondary: Vec<Label>,
    pub notes: Vec<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic(Box::new(DiagnosticData {
            severity: Severity::Error,
            code,
            message: message.into(),
            primary: None,
            secondary: Vec::new(),
            notes: Vec::new(),
            help: None,
        }))
    }
    pub fn at(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.primary = Some(Label {
            span,
            message: label.into(),
        });
        self
    }
    pub fn also(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.secondary.push(Label {
            span,
            message: label.into(),
        });
        self
    }
    pub fn note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }
    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }
    pub fn with_help(mut self, help: Option<String>) -> Diagnostic {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    /// Renders the diagnostic in rustc's style (no colours).
    pub fn render(&self, sources: &SourceMap) -> String {
        let mut out = String::new();
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let _ = writeln!(
            out,
            "{sev}[{}]: {}",
            self.code,
            escape_controls(&self.message)
        );
        let labels: Vec<(&Label, bool)> = self
            .primary
            .iter()
            .map(|l| (l, true))
            .chain(self.secondary.iter().map(|l| (l, false)))
            .collect();
        // Width of the line-number gutter.
        let width = labels
            .iter()
            .map(|(l, _)| {
                let f = sources.get(l.span.file);
                f.line_col(l.span.start as usize).0.to_string().len()
            })
            .max()
            .unwrap_or(1);
        let pad = " ".repeat(width);
        let mut last_file = None;
        for (label, primary) in &labels {
            let f = sources.get(label.span.file);
            let (line, col) = f.line_col(label.span.start as usize);
            if last_file != Some(label.span.file) || *primary {
                let arrow = if last_file.is_none() { "-->" } else { ":::" };
                let _ = writeln!(
                    out,
                    "{pad}{arrow} {}:{line}:{col}",
                    escape_controls(&f.name)
                );
                last_file = Some(label.span.file);
            }
            let text = f.line_text(line);
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{line:>width$} | {}", show_source_line(text));
            // Underline: up to the end of the span or of the line, at least one character,
            // in the columns the characters take once shown (a tab takes four).
            let (end_line, end_col) = f.line_col(label.span.end as usize);
            let line_chars = text.chars().count();
            let end_col = if end_line == line {
                end_col
            } else {
                line_chars + 1
            };
            let chars: Vec<char> = text.chars().collect();
            let indent: usize = chars.iter().take(col - 1).map(|&c| shown_width(c)).sum();
            let len = chars
                .iter()
                .skip(col - 1)
                .take(end_col.saturating_sub(col))
                .map(|&c| shown_width(c))
                .sum::<usize>()
                .max(1);
            let mark = if *primary { "^" } else { "-" };
            let _ = writeln!(
                out,
                "{pad} | {}{} {}",
                " ".repeat(indent),
                mark.repeat(len),
                escape_controls(&label.message)
            );
        }
        if !labels.is_empty() && (self.help.is_some() || !self.notes.is_empty()) {
            let _ = writeln!(out, "{pad} |");
        }
        for n in &self.notes {
            let _ = writeln!(out, "{pad} = note: {}", escape_controls(n));
        }
        if let Some(h) = &self.help {
            let _ = writeln!(out, "{pad} = help: {}", escape_controls(h));
        }
        // Trailing spaces come from empty label messages.
        out.lines()
            .map(str::trim_end)
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    }
}

/// True for the characters a terminal may act on rather than show: C0 and C1 controls, DEL,
/// and the bidirectional overrides and isolates (which reorder the text around them).
fn is_terminal_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// User text (a name, a string, a path, a file's words) made safe to print in a message: every
/// control character but newline and tab is escaped as Rust writes it (`\u{1b}`, `\r`), so
/// nothing a spec, a file or a command line holds can move the cursor, recolor or rewrite the
/// terminal. Idempotent: escaped text has nothing left to escape. Every message netc prints
/// about user input goes through this one function (diagnostics, `IoError`, `DataError`, the
/// command line's errors).
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s
        .chars()
        .any(|c| is_terminal_control(c) && !matches!(c, '\n' | '\t'))
    {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_terminal_control(c) && !matches!(c, '\n' | '\t') {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A source line as shown in a snippet, as rustc shows it: a tab as four spaces, a C0 control
/// or DEL as its Unicode control picture (ESC as `␛`), other terminal controls as `�`; one
/// shown character per source character otherwise, so carets stay aligned ([`shown_width`]).
fn show_source_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\t' => out.push_str("    "),
            '\u{0}'..='\u{1f}' => out.push(char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}')),
            '\u{7f}' => out.push('\u{2421}'),
            c if is_terminal_control(c) => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// The columns a source character takes in [`show_source_line`].
fn shown_width(c: char) -> usize {
    if c == '\t' { 4 } else { 1 }
}

/// Renders several diagnostics, separated by blank lines.
pub fn render_all(diags: &[Diagnostic], sources: &SourceMap) -> String {
    diags
        .iter()
        .map(|d| d.render(sources))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The nearest candidate by edit distance, if it is close enough to be a likely typo.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    // The string metrics take time quadratic in the lengths: very long names get no hint.
    const MAX_LEN: usize = 100;
    if name.len() > MAX_LEN {
        return None;
    }
    let mut best: Option<(&str, f64)> = None;
    for c in candidates {
        if c.len() > MAX_LEN {
            continue;
        }
        let score = strsim::jaro_winkler(name, c);
        let dist = strsim::levenshtein(name, c);
        let close = dist <= 2.max(name.len() / 3) || score > 0.85;
        if close && best.is_none_or(|(_, s)| score > s) {
            best = Some((c, score));
        }
    }
    best.map(|(c, _)| c)
}

/// Error codes, grouped by stage. Each is used by exactly one kind of mistake, so users (and
/// snapshot tests) can recognize them.
pub mod codes {
    /// Syntax error in a `.net` file.
    pub const SYNTAX: &str = "E0001";
    /// Input nested too deeply to parse safely.
    pub const TOO_DEEP: &str = "E0002";
    /// Error in a YAML spec (syntax, unknown key, wrong type).
    pub const YAML: &str = "E0003";
    /// A file could not be read (missing, unreadable, not UTF-8).
    pub const FILE: &str = "E0101";
    /// An import cycle.
    pub const IMPORT_CYCLE: &str = "E0102";
    /// No model in the spec, or the one asked for is missing.
    pub const NO_MODEL: &str = "E0103";
    /// Unknown layer, block or function.
    pub const UNKNOWN_LAYER: &str = "E0201";
    /// Unknown name (parameter, value).
    pub const UNKNOWN_NAME: &str = "E0202";
    /// Wrong argument: unknown name, missing, duplicated or too many.
    pub const BAD_ARG: &str = "E0203";
    /// Wrong type of a value.
    pub const TYPE: &str = "E0204";
    /// Duplicate definition or name.
    pub const DUPLICATE: &str = "E0205";
    /// A block that instantiates itself.
    pub const RECURSION: &str = "E0206";
    /// A value out of range: zero or negative sizes, probabilities outside [0, 1], ...
    pub const RANGE: &str = "E0207";
    /// Too large: repeat counts, tensor sizes, graph size; or integer overflow.
    pub const TOO_LARGE: &str = "E0208";
    /// Incompatible shapes.
    pub const SHAPE: &str = "E0301";
    /// Misuse of a statement (input inside a block, output of nothing, ...).
    pub const STRUCTURE: &str = "E0302";
    /// An error in the `train` section.
    pub const TRAIN: &str = "E0401";
    /// An error in a `--set` override.
    pub const OVERRIDE: &str = "E0402";
}
