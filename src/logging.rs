//! Logging setup: tracing to stderr, text or JSON, `-q`/`-v`, with `RUST_LOG` overriding.
//! While a progress bar is on screen, log lines are written around it instead of through it.

use std::io::Write;
use std::sync::Mutex;

use indicatif::ProgressBar;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Log format on stderr (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Install the global subscriber. A second call (commands run in-process by tests) keeps the
/// first one.
pub fn init(format: LogFormat, quiet: bool, verbose: u8) {
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "headswap_batch=debug,info",
        (false, _) => "headswap_batch=trace,info",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(StderrAroundProgress)
        .with_target(false);
    let ansi = std::env::var_os("NO_COLOR").is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = match format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
}

static PROGRESS_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Route log lines around this bar (or straight to stderr with `None`).
pub fn set_progress_bar(bar: Option<ProgressBar>) {
    *PROGRESS_BAR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = bar;
}

/// Stderr that hides the progress bar while a log line is written.
struct StderrAroundProgress;

impl<'a> MakeWriter<'a> for StderrAroundProgress {
    type Writer = StderrAroundProgress;
    fn make_writer(&'a self) -> Self::Writer {
        StderrAroundProgress
    }
}

impl Write for StderrAroundProgress {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = PROGRESS_BAR
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        match bar {
            Some(bar) => bar
                .suspend(|| std::io::stderr().write_all(buf))
                .map(|()| buf.len()),
            None => std::io::stderr().write_all(buf).map(|()| buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
