//! headswap-batch: drive a CSV manifest of source videos and reference faces through Akool's
//! head-swap API until every rendered video is on disk, durably and exactly once.
//!
//! See ARCHITECTURE.md for the map of modules and their invariants.

pub mod akool;
pub mod app;
pub mod check;
pub mod cli;
pub mod config;
pub mod crash;
pub mod demo;
pub mod download;
pub mod exit;
pub mod flags;
pub mod ingest;
pub mod job;
pub mod journal;
pub mod logging;
pub mod manifest;
pub mod objstore;
pub mod preflight;
pub mod recover;
pub mod report;
pub mod retry;
pub mod run;
pub mod secret;
pub mod simulator;
pub mod store;
pub mod timings;
pub mod view;

/// Milliseconds since the Unix epoch: the timestamps stored in job records.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
