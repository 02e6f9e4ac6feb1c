//! Named crash points for durability tests: with `HEADSWAP_CRASH_AT=<point>[:<n>]` in the
//! environment, the process kills itself with SIGKILL the n-th time (default: first) it reaches
//! that point. Without the variable each point costs one atomic load.
//!
//! The points sit on the boundaries of a job's life where a crash is most likely to lose or
//! repeat work; tests kill the real binary at each of them and check that the rerun finishes
//! with nothing lost and nothing created twice except in the flagged window.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every crash point, in the order a job meets them.
pub const POINTS: &[&str] = &[
    ANALYZE_INTENT_FLUSHED,
    ANALYZE_ANSWERED,
    CREATE_INTENT_FLUSHED,
    CREATE_ANSWERED,
    CREATE_STORED,
    RENDER_STORED,
    DOWNLOAD_MIDWAY,
    DOWNLOAD_RENAMED,
    DONE_STORED,
];

/// The analysis intent is durable; the analyze request has not left yet.
pub const ANALYZE_INTENT_FLUSHED: &str = "analyze-intent-flushed";
/// The analyze answer arrived; its id is not stored yet.
pub const ANALYZE_ANSWERED: &str = "analyze-answered";
/// The create intent (`submitting`) is durable; the create has not left yet.
pub const CREATE_INTENT_FLUSHED: &str = "create-intent-flushed";
/// The create was sent and answered; the task id is not stored yet (the ambiguous window).
pub const CREATE_ANSWERED: &str = "create-answered";
/// The task id is durable.
pub const CREATE_STORED: &str = "create-stored";
/// The render finished and `downloading` is durable.
pub const RENDER_STORED: &str = "render-stored";
/// Part of the output is in the part file.
pub const DOWNLOAD_MIDWAY: &str = "download-midway";
/// The output was renamed into place; `done` is not stored yet.
pub const DOWNLOAD_RENAMED: &str = "download-renamed";
/// `done` is durable.
pub const DONE_STORED: &str = "done-stored";

struct Target {
    point: String,
    nth: u64,
    seen: AtomicU64,
}

static TARGET: OnceLock<Option<Target>> = OnceLock::new();

/// Die here if the environment asks for it.
pub fn point(name: &str) {
    let target = TARGET.get_or_init(|| {
        let spec = std::env::var("HEADSWAP_CRASH_AT").ok()?;
        let (point, nth) = match spec.split_once(':') {
            Some((point, nth)) => (point.to_string(), nth.parse().unwrap_or(1)),
            None => (spec, 1),
        };
        Some(Target {
            point,
            nth,
            seen: AtomicU64::new(0),
        })
    });
    if let Some(target) = target {
        if target.point == name && target.seen.fetch_add(1, Ordering::SeqCst) + 1 == target.nth {
            // SIGKILL, like a power cut: no destructor, no flush, no unwinding.
            // SAFETY: kill(2) on this process's own pid; no memory is passed.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
}
