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
    limit_malloc_arenas();
    let cli = headswap_batch::cli::Cli::parse();
    if let Err(usage) = headswap_batch::config::check_usage(&cli) {
        usage.exit();
    }
    headswap_batch::logging::init(cli.log_format, cli.quiet, cli.verbose);
    ExitCode::from(headswap_batch::app::execute(cli).code())
}

/// glibc gives every thread that allocates under contention an arena of its own, and memory
/// freed in one arena is not reused by another: with the runtime's threads, a 100,000-job run
/// peaked at 257 MB, and at 214 MB with two arenas (`BENCHMARKS.md`, section 3). The
/// dispatcher is one task and the rest waits on the network, so two arenas cost no speed.
/// `MALLOC_ARENA_MAX` in the environment still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before any other thread
        // exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
