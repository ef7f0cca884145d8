//! The `netc` binary: parses the command line and hands it to [`netc::cli::run`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    netc::cli::run(netc::cli::Cli::parse())
}
