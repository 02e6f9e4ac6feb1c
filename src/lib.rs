//! headswap-batch: drive a CSV manifest of source videos and reference faces through Akool's
//! head-swap API until every rendered video is on disk, durably and exactly once.
//!
//! See ARCHITECTURE.md for the map of modules and their invariants.

pub mod akool;
pub mod check;
pub mod cli;
pub mod exit;
pub mod job;
pub mod logging;
pub mod manifest;
pub mod secret;
pub mod simulator;
pub mod store;
pub mod view;
