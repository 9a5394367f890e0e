//! The network as data: spec, presets, plan (shapes and checks) and parameter initialisation.

pub mod choice;
pub mod geometry;
pub mod grouped;
pub mod init;
pub mod plan;
pub mod presets;
pub mod spec;

pub use plan::{LayerPlan, Plan, Shape};
pub use presets::{Ablations, Activation, preset};
pub use spec::NetSpec;
