//! Which network a command runs: a preset with its ablation switches, or a JSON spec file, and
//! the classifier's width.

use super::{Ablations, NetSpec, preset};
use anyhow::{Context, Result};
use std::path::PathBuf;

/// The network as a user names it; [`NetChoice::spec_or`] makes it.
#[derive(Clone, Debug, Default)]
pub struct NetChoice {
    /// A preset's name (`paper`, `one-tower`, `net145`, `cifar`); none for the command's default.
    pub preset: Option<String>,
    /// A JSON spec file, instead of a preset.
    pub spec: Option<PathBuf>,
    /// The preset's switches (a spec file has its own).
    pub ablations: Ablations,
    /// The classifier's classes, where given.
    pub classes: Option<usize>,
}

impl NetChoice {
    /// Whether the user chose a network at all (rather than leaving the default).
    pub fn chosen(&self) -> bool {
        self.preset.is_some() || self.spec.is_some()
    }

    /// Whether the network is a preset (whose classifier is sized to the data) rather than a
    /// spec file (which keeps its own).
    pub fn is_preset(&self) -> bool {
        self.spec.is_none()
    }

    /// The network, with `classes` applied; a note says if fc8 had to move to one tower.
    pub fn spec_or(&self, default_preset: &str) -> Result<NetSpec> {
        let spec = self.spec_as_given(default_preset)?;
        match self.classes {
            Some(n) => {
                let (spec, note) = spec.with_classes(n)?;
                if let Some(note) = note {
                    eprintln!("note: {note}");
                }
                Ok(spec)
            }
            None => Ok(spec),
        }
    }

    fn spec_as_given(&self, default_preset: &str) -> Result<NetSpec> {
        if let Some(path) = &self.spec {
            let text = crate::files::read_text(path).context("reading the spec")?;
            return NetSpec::from_json(&text)
                .with_context(|| format!("parsing spec {}", path.display()));
        }
        preset(
            self.preset.as_deref().unwrap_or(default_preset),
            &self.ablations,
        )
    }
}
