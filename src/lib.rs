//! netc: a compiler for declarative neural-network specs.
//!
//! The pipeline runs one way: text ([`syntax`] or [`yaml`]) → AST → [`elab`] → layer graph
//! ([`graph`]) → ... Each module's doc comment says what goes in and what comes out; start at
//! `ARCHITECTURE.md` for the map.

pub mod diag;
pub mod syntax;
