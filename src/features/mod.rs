//! A trained network's features: the activations of any named layer for a list of images,
//! streamed to a file other programs read (see `file`). What most users of a trained AlexNet
//! want from it (retrieval, transfer learning, the paper's Figure 4).
//!
//! Each image is decoded and rendered as evaluation renders it (the centre crop, or the paper's
//! ten crops), the network runs in evaluation (test-time dropout scaling), and the layer's output
//! for the image is the mean over its views.

pub mod file;
pub mod search;
pub mod similar;

use crate::data::{Augment, EvalViews, Geometry, Stats, image_views};
use crate::device::Device;
use crate::dist::dispatch::Job;
use crate::engine::Network;
use crate::model::Plan;
use crate::model::init::NetParams;
use crate::progress::Progress;
use anyhow::{Result, bail};
use file::FeatureWriter;
use rayon::prelude::*;
use std::path::PathBuf;

/// The index of the layer named `name`, or an error listing the names there are (or saying
/// where a fused convolution's output is).
pub fn layer_index(plan: &Plan, name: &str) -> Result<usize> {
    if let Some(l) = plan.layers.iter().position(|lp| lp.name() == name) {
        plan.check_output_kept(l)?;
        return Ok(l);
    }
    let names: Vec<&str> = plan.layers.iter().map(|lp| lp.name()).collect();
    bail!(
        "{} has no layer {name:?}; its layers: {}",
        plan.spec.name,
        names.join(", ")
    )
}

/// How images become the network's input: as evaluation renders them.
pub struct Rendering<'a> {
    pub stats: &'a Stats,
    pub geometry: Geometry,
    pub views: EvalViews,
    pub augment: Augment,
    /// Image files larger than this are skipped, unread.
    pub max_image_bytes: u64,
}

/// Where extracted rows go: a feature file, or memory.
pub trait RowSink {
    fn push(&mut self, row: &[f32], path: &str, label: &str) -> Result<()>;
}

impl RowSink for FeatureWriter {
    fn push(&mut self, row: &[f32], path: &str, label: &str) -> Result<()> {
        FeatureWriter::push(self, row, path, label)
    }
}

/// Rows kept in memory, with each row's path and label.
#[derive(Default)]
pub struct Collected {
    pub values: Vec<f32>,
    pub listed: Vec<(String, String)>,
}

impl RowSink for Collected {
    fn push(&mut self, row: &[f32], path: &str, label: &str) -> Result<()> {
        self.values.extend_from_slice(row);
        self.listed.push((path.to_string(), label.to_string()));
        Ok(())
    }
}

/// Layer `layer`'s features of images, `batch` images at a time.
pub struct Extractor<'a> {
    pub layer: usize,
    pub render: Rendering<'a>,
    pub batch: usize,
}

impl Extractor<'_> {
    /// Pushes the features of `images` (each with the label it is listed with) to `sink`, in
    /// order; returns the images that could not be read, with why. Stops, with an error, when
    /// `progress` is interrupted.
    pub fn extract<D: Device>(
        &self,
        net: &mut Network<D>,
        images: &[(PathBuf, String)],
        sink: &mut dyn RowSink,
        progress: &Progress,
    ) -> Result<Vec<(PathBuf, String)>> {
        let views = self.render.views.count();
        let mut unreadable = Vec::new();
        for chunk in images.chunks(self.batch.max(1)) {
            if progress.interrupted() {
                bail!("interrupted");
            }
            let inputs: Vec<_> = chunk
                .par_iter()
                .map(|(path, _)| render(path, &self.render))
                .collect();
            let mut kept = Vec::new();
            let mut pixels = Vec::new();
            for ((path, label), input) in chunk.iter().zip(inputs) {
                match input {
                    Ok(v) => {
                        pixels.extend_from_slice(&v);
                        kept.push((path, label));
                    }
                    Err(e) => unreadable.push((path.clone(), format!("{e:#}"))),
                }
            }
            if !kept.is_empty() {
                net.predict(&pixels, kept.len() * views)?;
                let out = net.layer_output(self.layer)?;
                let width = out.len() / (kept.len() * views);
                for (i, (path, label)) in kept.iter().enumerate() {
                    let row = mean_over_views(&out[i * views * width..][..views * width], width);
                    sink.push(&row, &path.display().to_string(), label)?;
                }
            }
            progress.inc_by(chunk.len() as u64);
        }
        progress.finish();
        Ok(unreadable)
    }
}

/// Extracts features of `images` into `writer` as a [`Job`] on the devices chosen.
pub struct Extraction<'a> {
    pub plan: Plan,
    pub params: NetParams,
    pub extractor: Extractor<'a>,
    pub images: Vec<(PathBuf, String)>,
    pub writer: FeatureWriter,
    pub progress: Progress,
}

/// What an extraction leaves: the writer (to finish) and the images it could not read, with why.
pub struct Extracted {
    pub writer: FeatureWriter,
    pub unreadable: Vec<(PathBuf, String)>,
}

impl Job for Extraction<'_> {
    type Output = Extracted;
    fn run<D: Device>(mut self, devices: Vec<D>) -> Result<Extracted> {
        let mut net = Network::new(&self.plan, devices, &self.params, 0)?;
        let unreadable =
            self.extractor
                .extract(&mut net, &self.images, &mut self.writer, &self.progress)?;
        Ok(Extracted {
            writer: self.writer,
            unreadable,
        })
    }
}

/// The class an image's folder names, where it is one of `classes`; else empty.
pub fn class_folder(path: &std::path::Path, classes: &[String]) -> String {
    path.parent()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| classes.contains(n))
        .unwrap_or_default()
}

/// One image's views, rendered for the network.
pub fn render(path: &std::path::Path, r: &Rendering) -> Result<Vec<f32>> {
    let bytes = crate::files::read_capped_unnamed(path, r.max_image_bytes)?;
    image_views(&bytes, r.stats, r.geometry, r.views, r.augment)
}

/// The mean of the `width`-wide rows of `rows` (one per view of an image), each row divided
/// by the count before it is added, in row order (as `predict` has always averaged).
pub fn mean_over_views(rows: &[f32], width: usize) -> Vec<f32> {
    let views = rows.len() / width;
    let mut mean = vec![0f32; width];
    for row in rows.chunks_exact(width) {
        mean.iter_mut()
            .zip(row)
            .for_each(|(m, v)| *m += v / views as f32);
    }
    mean
}
