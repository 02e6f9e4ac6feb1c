//! The integration suite: one binary, one module per area.

mod akool;
mod crash;
mod pressure;
mod run_pipeline;
mod simulator;
mod support;
