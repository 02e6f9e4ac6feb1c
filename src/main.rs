use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = headswap_batch::cli::Cli::parse();
    headswap_batch::logging::init(cli.log_format, cli.quiet, cli.verbose);
    ExitCode::from(headswap_batch::cli::execute(cli).code())
}
