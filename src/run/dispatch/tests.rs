//! Unit tests of the dispatcher loop.
