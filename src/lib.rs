//! netc: a compiler for declarative neural-network specs.
//!
//! The pipeline runs one way: text ([`syntax`] or [`yaml`]) → AST → [`elab`] → layer graph
//! ([`layer_graph`]) → ... [`spec`] drives the front half (files, imports, overrides);
//! [`show`] prints the layer graph. Each module's doc comment says what goes in and what comes
//! out; start at `ARCHITECTURE.md` for the map.

pub mod autodiff;
pub mod budget;
pub mod cli;
pub mod cli_augment;
pub mod cli_data;
pub mod cli_detect;
pub mod cli_features;
pub mod cli_outputs;
pub mod cli_run;
pub mod cli_sliding;
pub mod cli_train;
pub mod cli_transfer;
pub mod cli_values;
pub mod cli_verify;
pub mod codegen;
pub mod cut;
pub mod data;
pub mod detect;
pub mod diag;
pub mod elab;
pub mod features;
pub mod fuse;
pub mod graph;
pub mod io;
pub mod layer_graph;
pub mod loss;
pub mod loss_yolo;
pub mod lower;
pub mod model;
pub mod picture;
pub mod plan;
pub mod plot;
pub mod reference;
pub mod runtime;
pub mod show;
pub mod sliding;
pub mod spec;
pub mod syntax;
pub mod train;
pub mod train_config;
pub mod verify;
pub mod yaml;

pub use spec::{Options, Spec, SpecError, load_file, load_str};
