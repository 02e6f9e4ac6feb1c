//! (stub)

use crate::cli::CheckArgs;
use crate::exit::{Exit, Fatal};

pub fn run(_args: &CheckArgs) -> Result<Exit, Fatal> {
    Err(Fatal::new("not implemented yet"))
}
