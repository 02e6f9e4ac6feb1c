use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A file-size limit (`ulimit -f`) must end a write with an error (EFBIG) the run reports
    // and resumes from, not kill the process with SIGXFSZ.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let cli = headswap_batch::cli::Cli::parse();
    headswap_batch::logging::init(cli.log_format, cli.quiet, cli.verbose);
    ExitCode::from(headswap_batch::cli::execute(cli).code())
}
