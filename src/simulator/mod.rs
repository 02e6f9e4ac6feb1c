//! The local Akool simulator (stub; see issue for the full design).

use crate::exit::{Exit, Fatal};

/// Behaviour knobs of the simulator (flags of `simulate`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SimKnobs {}

pub fn run_cli(_listen: std::net::SocketAddr, _knobs: SimKnobs) -> Result<Exit, Fatal> {
    Err(Fatal::new("not implemented yet"))
}
