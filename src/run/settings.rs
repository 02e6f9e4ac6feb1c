//! What the dispatcher needs to know, already validated (`config` builds it from the command
//! line; the demo, tests and benchmarks build it directly).

use std::path::PathBuf;
use std::time::Duration;

use crate::job::MultiSubject;
use crate::run::policy::{OnAmbiguous, RetryPolicy};
use crate::run::poll::PollPolicy;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Where finished outputs go: this folder, unless `bucket` is set.
    pub out_dir: PathBuf,
    /// Object storage for the outputs (`--out s3://BUCKET/PREFIX/`), already probed.
    pub bucket: Option<std::sync::Arc<crate::objstore::ObjectStorage>>,
    pub db_path: PathBuf,
    /// Analyses + renders at the service at once.
    pub concurrency: usize,
    pub downloads: usize,
    /// API requests per second, all endpoints together, and the burst above it.
    pub rate: f64,
    pub burst: u32,
    /// How transient failures are retried.
    pub retry: RetryPolicy,
    pub multi_subject: MultiSubject,
    pub on_ambiguous: OnAmbiguous,
    /// Jobs asking for the very same render (video, faces, options) share one create.
    pub reuse_renders: bool,
    pub max_download_bytes: u64,
    pub analysis_poll: PollPolicy,
    pub render_poll: PollPolicy,
    /// Longest honoured Retry-After / throttling cool-down.
    pub cooldown_cap: Duration,
    pub stall_timeout: Duration,
    /// How often the status view and the progress display are refreshed.
    pub tick: Duration,
    /// A progress bar on stderr (a terminal, not opted out); log lines otherwise.
    pub interactive: bool,
    /// Off a terminal: how often the one-line summary is logged.
    pub summary_every: Duration,
    /// `--max-runtime`: no new work starts unless it can finish by then; at the end, stop.
    pub max_runtime: Option<Duration>,
    /// After a signal: how long requests in flight may take to finish before they are
    /// abandoned (their jobs stay resumable).
    pub grace: Duration,
}
