//! YAML text → a small tree of [`Node`]s with byte spans.
//!
//! This is the strict layer: it reads the event stream of `granit_parser` (the YAML parser
//! under `serde-saphyr`, re-exported by it) and rejects everything the spec format does not
//! use — tags, anchors, aliases, merge keys, non-scalar keys, duplicate keys, several
//! documents — as well as nesting deeper than [`MAX_DEPTH`]. The tree is built recursively,
//! but only after the depth check, so the recursion is bounded.

use serde_saphyr::granit_parser::{Event, Options, Parser, ScalarStyle, ScanError, Span as YSpan};

use crate::diag::{Diagnostic, FileId, Span, codes};

/// Deepest nesting of YAML lists and maps accepted (real specs use fewer than 20).
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub kind: NodeKind,
    /// The whole node as written (quotes included).
    pub span: Span,
}

#[derive(Debug, Clone)]
pub(crate) enum NodeKind {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Debug, Clone)]
pub(crate) struct Scalar {
    /// The value after YAML unescaping and folding.
    pub value: String,
    pub style: ScalarStyle,
    /// Byte offset of the first content character (after an opening quote).
    pub content_start: usize,
    /// Whether `value` is byte-for-byte the source text at `content_start`, so that offsets
    /// into `value` are offsets into the file (false after escapes or line folding).
    pub exact: bool,
    /// Whether a `,` follows (a plain scalar in a flow collection, cut at a comma).
    pub before_comma: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub key: Key,
    pub value: Node,
}

impl Entry {
    /// From the key to the end of the value.
    pub fn span(&self) -> Span {
        self.key.span.to(self.value.span)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Key {
    pub name: String,
    /// The key's text (inside the quotes, if quoted and exact).
    pub span: Span,
}

/// Builds the tree for the one document of `text`; `Ok(None)` for an empty stream.
pub(crate) fn read(file: FileId, text: &str) -> Result<Option<Node>, Diagnostic> {
    let mut options = Options::default();
    options.emit_anchor_events = true;
    options.set_emit_comments(false);
    let mut r = Reader {
        parser: Parser::new_from_str_with_options(text, options),
        file,
        text,
    };
    let mut root = None;
    loop {
        let (ev, span) = r.next()?;
        match ev {
            Event::StreamStart | Event::DocumentEnd => {}
            Event::StreamEnd => return Ok(root),
            Event::DocumentStart(..) => {
                if root.is_some() {
                    return Err(yaml_err(
                        r.span(&span),
                        "a second YAML document",
                        "only one document (`---`) is allowed per file",
                    )
                    .help("put every block and model in one document, or split the file"));
                }
                let (ev, span) = r.next()?;
                root = Some(r.node(ev, span, 0)?);
            }
            _ => return Err(r.unexpected(&span)),
        }
    }
}

pub(crate) fn yaml_err(span: Span, msg: impl Into<String>, label: impl Into<String>) -> Diagnostic {
    Diagnostic::error(codes::YAML, msg).at(span, label)
}

struct Reader<'a> {
    parser: Parser<'a, serde_saphyr::granit_parser::StrInput<'a>>,
    file: FileId,
    text: &'a str,
}

impl<'a> Reader<'a> {
    fn next(&mut self) -> Result<(Event<'a>, YSpan), Diagnostic> {
        match self.parser.next_event() {
            Some(Ok(x)) => Ok(x),
            Some(Err(e)) => Err(self.scan_error(&e)),
            None => {
                let end = self.text.len();
                Err(yaml_err(
                    Span::new(self.file, end, end),
                    "unexpected end of the YAML text",
                    "here",
                ))
            }
        }
    }

    /// Byte offset of a parser marker (always present for string input; computed from the
    /// line and column otherwise).
    fn offset(&self, m: &serde_saphyr::granit_parser::Marker) -> usize {
        if let Some(b) = m.byte_offset() {
            return b.min(self.text.len());
        }
        let line_start: usize = self
            .text
            .split_inclusive('\n')
            .take(m.line().saturating_sub(1))
            .map(str::len)
            .sum();
        let rest = &self.text[line_start.min(self.text.len())..];
        line_start
            + rest
                .chars()
                .take(m.col())
                .take_while(|&c| c != '\n')
                .map(char::len_utf8)
                .sum::<usize>()
    }

    fn span(&self, s: &YSpan) -> Span {
        Span::new(self.file, self.offset(&s.start), self.offset(&s.end))
    }

    fn scan_error(&self, e: &ScanError) -> Diagnostic {
        let pos = self.offset(e.marker());
        let len = self.text[pos..].chars().next().map_or(0, char::len_utf8);
        let info = e.info();
        let mut d = yaml_err(
            Span::new(self.file, pos, pos + len),
            format!("invalid YAML: {info}"),
            "here",
        );
        let lower = info.to_lowercase();
        if lower.contains("anchor") || lower.contains("alias") {
            d = d.help("YAML anchors and aliases are not supported: write the value out in full");
        } else if lower.contains("mapping values") || lower.contains("expected key") {
            d = d.help(
                "check the indentation, and quote values that contain `: ` or ` #` \
                 (for example `- \"conv(6, 5)\"`)",
            );
        } else if lower.contains("tab") {
            d = d.help("indent YAML with spaces, not tabs");
        } else if lower.contains("flow") || lower.contains("','") {
            d = d.help("inside `[...]` and `{...}`, quote values that contain commas");
        }
        d
    }

    fn unexpected(&self, span: &YSpan) -> Diagnostic {
        yaml_err(self.span(span), "unexpected YAML structure", "here")
    }

    /// Rejects tags and anchors on a node.
    fn check_props(
        &mut self,
        anchor: usize,
        has_tag: bool,
        span: &YSpan,
    ) -> Result<(), Diagnostic> {
        if has_tag {
            let tspan = span.tag_span().unwrap_or(*span);
            let tag = tspan.slice(self.text).unwrap_or("!");
            return Err(yaml_err(
                self.span(&tspan),
                format!("YAML tags such as `{tag}` are not supported"),
                "tag",
            )
            .help("remove the tag; to make a value a string, quote it instead"));
        }
        if anchor != 0 {
            // With `emit_anchor_events`, the anchor's own span follows the node event.
            let mut aspan = *span;
            if let Some(Ok((Event::Anchor(..), s))) = self.parser.peek() {
                aspan = *s;
            }
            return Err(yaml_err(
                self.span(&aspan),
                "YAML anchors (`&name`) are not supported",
                "anchor",
            )
            .help("write the value out in full; to reuse layers, define a block"));
        }
        Ok(())
    }

    fn node(&mut self, ev: Event<'a>, yspan: YSpan, depth: usize) -> Result<Node, Diagnostic> {
        let span = self.span(&yspan);
        match ev {
            Event::Scalar(value, style, anchor, tag) => {
                self.check_props(anchor, tag.is_some(), &yspan)?;
                Ok(self.scalar(value.into_owned(), style, span))
            }
            Event::SequenceStart(_, anchor, tag) => {
                self.check_props(anchor, tag.is_some(), &yspan)?;
                self.check_depth(span, depth)?;
                let mut items: Vec<Node> = Vec::new();
                loop {
                    let (ev, s) = self.next()?;
                    if let Event::SequenceEnd = ev {
                        let end = self.span(&s);
                        return Ok(Node {
                            span: self.cover(span, items.iter().map(|n| n.span), end),
                            kind: NodeKind::Seq(items),
                        });
                    }
                    items.push(self.node(ev, s, depth + 1)?);
                }
            }
            Event::MappingStart(_, anchor, tag) => {
                self.check_props(anchor, tag.is_some(), &yspan)?;
                self.check_depth(span, depth)?;
                let mut entries: Vec<Entry> = Vec::new();
                loop {
                    let (ev, s) = self.next()?;
                    if let Event::MappingEnd = ev {
                        let end = self.span(&s);
                        let spans = entries.iter().map(Entry::span);
                        return Ok(Node {
                            span: self.cover(span, spans, end),
                            kind: NodeKind::Map(entries),
                        });
                    }
                    let key = self.key(ev, s, depth + 1)?;
                    if let Some(prev) = entries.iter().find(|e| e.key.name == key.name) {
                        return Err(yaml_err(
                            key.span,
                            format!("duplicate key `{}`", key.name),
                            "second definition",
                        )
                        .also(prev.key.span, "first defined here")
                        .help("each key may appear only once in a map; remove or rename one"));
                    }
                    let (ev, s) = self.next()?;
                    let mut value = self.node(ev, s, depth + 1)?;
                    if value.span.start == value.span.end {
                        // An empty value (`key:`): point at the key instead.
                        value.span = key.span;
                    }
                    entries.push(Entry { key, value });
                }
            }
            Event::Alias(_) | Event::UnresolvedAlias(_) => {
                Err(
                    yaml_err(span, "YAML aliases (`*name`) are not supported", "alias")
                        .help("write the value out in full; to reuse layers, define a block"),
                )
            }
            _ => Err(self.unexpected(&yspan)),
        }
    }

    fn key(&mut self, ev: Event<'a>, yspan: YSpan, depth: usize) -> Result<Key, Diagnostic> {
        let node = self.node(ev, yspan, depth)?;
        match node.kind {
            NodeKind::Scalar(s) => {
                if s.style == ScalarStyle::Plain && s.value == "<<" {
                    return Err(yaml_err(
                        node.span,
                        "YAML merge keys (`<<`) are not supported",
                        "merge key",
                    )
                    .help("write the keys out in full"));
                }
                if s.style == ScalarStyle::Plain && (s.value == "~" || s.value.is_empty()) {
                    return Err(yaml_err(node.span, "empty map key", "expected a name here"));
                }
                let span = if s.exact {
                    Span::new(self.file, s.content_start, s.content_start + s.value.len())
                } else {
                    node.span
                };
                Ok(Key {
                    name: s.value,
                    span,
                })
            }
            _ => Err(yaml_err(
                node.span,
                "map keys must be names, not lists or maps",
                "complex key",
            )),
        }
    }

    fn scalar(&self, value: String, style: ScalarStyle, span: Span) -> Node {
        let start = span.start as usize;
        let content_start = match style {
            ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => start + 1,
            _ => start,
        };
        let exact = self.text.get(content_start..content_start + value.len()) == Some(&value);
        let before_comma = self
            .text
            .get(span.end as usize..)
            .is_some_and(|t| t.trim_start_matches([' ', '\t']).starts_with(','));
        Node {
            kind: NodeKind::Scalar(Scalar {
                value,
                style,
                content_start,
                exact,
                before_comma,
            }),
            span,
        }
    }

    fn check_depth(&self, span: Span, depth: usize) -> Result<(), Diagnostic> {
        if depth >= MAX_DEPTH {
            return Err(Diagnostic::error(
                codes::TOO_DEEP,
                format!("YAML nested more than {MAX_DEPTH} levels deep"),
            )
            .at(span, "too deep here")
            .help("move deeply nested layers into named blocks"));
        }
        Ok(())
    }

    /// The span of a collection: its start event, its children and (for flow collections)
    /// its closing bracket. Block collections' start and end events are empty markers.
    fn cover(&self, start: Span, children: impl Iterator<Item = Span>, end: Span) -> Span {
        let mut s = start;
        let mut any = false;
        for c in children {
            s = if any || start.start != start.end {
                s.to(c)
            } else {
                c
            };
            any = true;
        }
        if end.start != end.end {
            s = s.to(end);
        }
        s
    }
}
