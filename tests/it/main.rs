//! The integration tests, in one binary to keep link times down.

mod akool;
mod simulator;
