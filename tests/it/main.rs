//! The integration suite: one binary, one module per area.

mod akool;
mod architecture;
mod browser;
mod cli_check;
mod crash;
mod crash_points;
mod database;
mod fault_space;
mod faults;
mod hostile;
mod job;
mod manifest;
mod objstore;
mod preflight;
mod pressure;
mod report;
mod resilience;
mod run_pipeline;
mod s3_server;
mod security;
mod simulator;
mod store;
mod support;
mod view;
