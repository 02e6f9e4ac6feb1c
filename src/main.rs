use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A file-size limit (`ulimit -f`) must end a write with an error (EFBIG) the run reports
    // and resumes from, not kill the process with SIGXFSZ.
    // SAFETY: called first thing in `main`, before any other thread exists, with a valid
    // signal number and the `SIG_IGN` disposition, which installs no handler code.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let cli = headswap_batch::cli::Cli::parse();
    if let Err(usage) = headswap_batch::config::check_usage(&cli) {
        usage.exit();
    }
    headswap_batch::logging::init(cli.log_format, cli.quiet, cli.verbose);
    ExitCode::from(headswap_batch::app::execute(cli).code())
}
