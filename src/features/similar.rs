//! `alexnet similar`'s work on the devices: the queries' features, the gallery's (read from a
//! feature file, or extracted from images), and the search (see `search`).

use super::file::FeatureReader;
use super::search::{Gallery, Hit, Matrix, search};
use super::{Collected, Extractor};
use crate::device::Device;
use crate::dist::dispatch::Job;
use crate::engine::Network;
use crate::model::Plan;
use crate::model::init::NetParams;
use crate::progress::Progress;
use anyhow::{Result, bail};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Where the gallery's features come from.
pub enum GallerySource {
    /// A file `alexnet features` wrote (checked against the layer before it gets here).
    File(FeatureReader),
    /// Images, whose features are extracted first (each with its label).
    Images(Vec<(PathBuf, String)>),
}

/// How the work shows its progress and is interrupted.
pub struct Watch {
    pub bar: bool,
    pub interrupt: Arc<AtomicBool>,
}

impl Watch {
    fn progress(&self, label: &str, total: usize, unit: &'static str) -> Progress {
        Progress::new(label, total as u64, self.bar)
            .counting(unit)
            .interruptible(self.interrupt.clone())
    }
}

/// Finds each query image's nearest gallery rows, as a [`Job`].
pub struct Similar<'a> {
    pub plan: Plan,
    pub params: NetParams,
    pub extractor: Extractor<'a>,
    pub queries: Vec<(PathBuf, String)>,
    pub gallery: GallerySource,
    pub top: usize,
    pub block_rows: usize,
    pub watch: Watch,
}

/// What a search found: per query that could be read, its path and label and its nearest
/// rows; every gallery row's path and label (one per row); the images that could not be read,
/// with why.
pub struct Found {
    pub queries: Vec<(String, String)>,
    pub hits: Vec<Vec<Hit>>,
    pub gallery: Vec<(String, String)>,
    pub unreadable: Vec<(PathBuf, String)>,
}

impl Job for Similar<'_> {
    type Output = Found;
    fn run<D: Device>(self, devices: Vec<D>) -> Result<Found> {
        let mut net = Network::new(&self.plan, devices, &self.params, 0)?;
        let hidden = Progress::hidden().interruptible(self.watch.interrupt.clone());
        let mut queries = Collected::default();
        let mut unreadable =
            self.extractor
                .extract(&mut net, &self.queries, &mut queries, &hidden)?;
        if queries.listed.is_empty() {
            bail!("none of the {} queries could be read", self.queries.len());
        }
        let cols = queries.values.len() / queries.listed.len();
        let (mut gallery, listed): (Box<dyn Gallery>, Vec<(String, String)>) = match self.gallery {
            GallerySource::File(reader) => {
                let listed = reader.listed().to_vec();
                (Box::new(reader), listed)
            }
            GallerySource::Images(images) => {
                let progress = self
                    .watch
                    .progress("gallery features", images.len(), "images");
                let mut rows = Collected::default();
                let bad = self
                    .extractor
                    .extract(&mut net, &images, &mut rows, &progress)?;
                unreadable.extend(bad);
                if rows.listed.is_empty() {
                    bail!("none of the {} gallery images could be read", images.len());
                }
                let matrix = Matrix {
                    cols,
                    values: rows.values,
                };
                (Box::new(matrix), rows.listed)
            }
        };
        let progress = self.watch.progress("searching", gallery.rows(), "rows");
        let device = &net.devices()[0];
        let hits = search(
            device,
            &queries.values,
            gallery.as_mut(),
            self.top,
            self.block_rows,
            &progress,
        )?;
        Ok(Found {
            queries: queries.listed,
            hits,
            gallery: listed,
            unreadable,
        })
    }
}
