//! The integration suite: one binary, one module per area.

mod crash;
mod pressure;
mod run_pipeline;
mod support;
