//! The `.net` front end: text → AST.
//!
//! In: `.net` source text. Out: [`ast::SourceFile`] with spans (see `grammar/net.pest`).
//! Nothing here knows about layers or shapes; that is `elab`'s job.

pub mod ast;
pub mod parse;

pub use parse::{parse_expr, parse_file};
