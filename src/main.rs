//! The `netc` binary: parses the command line and hands it to [`netc::cli::run`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match netc::cli::Cli::try_parse() {
        Ok(cli) => netc::cli::run(cli),
        // `--help` and `--version`, printed as clap prints them.
        Err(e) if !e.use_stderr() => e.exit(),
        // A usage error quotes the command line: without styling, its control characters
        // escaped, so an argument cannot write escape sequences to the terminal.
        Err(e) => {
            eprint!("{}", netc::diag::escape_controls(&e.render().to_string()));
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
        }
    }
}
