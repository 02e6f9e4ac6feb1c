//! The integration suite: one binary, one module per area.

mod akool;
mod architecture;
mod browser;
mod cli_check;
mod crash;
mod crash_points;
mod database;
mod faults;
mod hostile;
mod job;
mod live;
mod manifest;
mod objstore;
mod operator;
mod preflight;
mod preflight_run;
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
