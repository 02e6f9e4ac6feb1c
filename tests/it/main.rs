//! The integration suite: one binary, one module per area.

mod akool;
mod cli_check;
mod crash;
mod crash_points;
mod database;
mod faults;
mod hostile;
mod job;
mod journal;
mod manifest;
mod pressure;
mod recover;
mod run_pipeline;
mod security;
mod simulator;
mod store;
mod support;
mod view;
