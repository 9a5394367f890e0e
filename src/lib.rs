//! alexnet: Krizhevsky, Sutskever & Hinton's 2012 ImageNet network, trained the way the paper ran
//! it: two towers, one per device, exchanging activations only at the paper's cross connections.
//! See DESIGN.md for the model, the recipe, the crate layout and the test pyramid.

pub mod cli;
pub mod cuda;
pub mod data;
pub mod device;
pub mod dist;
pub mod emu;
pub mod engine;
pub mod fatbins;
pub mod features;
pub mod files;
pub mod model;
pub mod ops;
pub mod planted;
pub mod progress;
pub mod recipe;
pub mod tensor;
pub mod train;
pub mod viz;
