//! What the integration tests share, one module for every layer of the pyramid (DESIGN.md §5):
//! seeded inputs, the tiny two-tower net, per-op and per-step device checks, running the binary,
//! and finding the shared data.
//!
//! Each test binary declares it `pub mod support;` and uses the parts it needs. Declared `pub`,
//! the module is part of that binary's interface, so the parts one binary leaves unused are not
//! reported as dead there; a private helper no part uses still is.

pub mod cli;
pub mod data;
pub mod inputs;
pub mod kernel_checks;
pub mod net;
pub mod step_checks;
