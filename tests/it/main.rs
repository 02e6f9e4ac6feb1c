//! The integration tests: one binary, one module per area.

mod cli_check;
mod job;
mod manifest;
mod store;
mod support;
mod view;
