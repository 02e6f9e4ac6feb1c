//! The integration suite: one binary, one module per area.

mod akool;
mod crash;
mod crash_points;
mod database;
mod faults;
mod hostile;
mod pressure;
mod run_pipeline;
mod security;
mod simulator;
mod support;
