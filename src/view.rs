//! (stub)

use std::path::Path;

use crate::exit::{Exit, Fatal};

pub fn status(_db: &Path, _json: bool) -> Result<Exit, Fatal> {
    Err(Fatal::new("not implemented yet"))
}

pub fn export(_db: &Path, _out: Option<&Path>) -> Result<Exit, Fatal> {
    Err(Fatal::new("not implemented yet"))
}
