//! `alexnet similar`: each query image's nearest gallery images by the Euclidean distance of a
//! layer's features (the paper's Figure 4, right), printed, as JSON, or drawn.

use super::eval::{CheckpointArgs, expand_images, open_model};
use super::figures;
use crate::dist::dispatch::{choose, dispatch};
use crate::features::file::{FeatureReader, Format};
use crate::features::search::default_block_rows;
use crate::features::similar::{Found, GallerySource, Similar, Watch};
use crate::features::{Extractor, class_folder, layer_index};
use crate::model::Plan;
use crate::train::run::interrupt_flag;
use anyhow::{Result, bail, ensure};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct SimilarArgs {
    #[command(flatten)]
    pub ck: CheckpointArgs,
    /// What to search: a features file `alexnet features` wrote (.npy or .safetensors, of the
    /// same network and layer), or images and folders of them (their features are extracted
    /// first; for a large gallery, extract once with `alexnet features` and search the file).
    /// Repeat for several image folders.
    #[arg(long, required = true)]
    pub gallery: Vec<PathBuf>,
    /// The layer whose features are compared [default: the gallery file's, else fc7].
    #[arg(long)]
    pub layer: Option<String>,
    /// Nearest images per query.
    #[arg(long, default_value_t = 6)]
    pub top: usize,
    /// Print one JSON object (per query its nearest rows: index, path, label, distance).
    #[arg(long)]
    pub json: bool,
    /// Also draw the paper's Figure 4 (right) to this PNG: each query, then its nearest images.
    #[arg(long)]
    pub figure: Option<PathBuf>,
    /// Gallery rows per product on the device [default: 64 MiB of features].
    #[arg(long)]
    pub block: Option<usize>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// No progress bar (plain lines).
    #[arg(long)]
    pub no_progress: bool,
    /// Query images (JPEG or PNG), or folders of them.
    #[arg(required = true)]
    pub queries: Vec<PathBuf>,
}

pub fn similar(args: SimilarArgs) -> Result<()> {
    ensure!(args.top > 0, "--top 0 asks for no images");
    if let Some(f) = &args.figure {
        figures::check_png_name(f)?;
    }
    let (plan, ck, stats, geometry) = open_model(&args.ck)?;
    let (gallery, layer_name) = open_gallery(&args, &stats.classes)?;
    if let GallerySource::File(reader) = &gallery {
        check_gallery_file(reader, &plan, &layer_name)?;
    }
    let layer = layer_index(&plan, &layer_name)?;
    let width = plan.layers[layer].output_total().len();
    let (queries, mut unreadable) = expand_images(&args.queries);
    let queries = queries
        .into_iter()
        .map(|p| {
            let label = class_folder(&p, &stats.classes);
            (p, label)
        })
        .collect();
    let render = args.ck.rendering(&stats, geometry, &ck);
    let job = Similar {
        plan: plan.clone(),
        params: ck.params,
        extractor: Extractor {
            layer,
            render,
            batch: args.batch,
        },
        queries,
        gallery,
        top: args.top,
        block_rows: args.block.unwrap_or_else(|| default_block_rows(width)),
        watch: Watch {
            bar: !args.no_progress,
            interrupt: interrupt_flag(),
        },
    };
    let (device, gpus) = choose(args.ck.device, args.ck.devices.as_deref(), plan.spec.towers)?;
    let t = std::time::Instant::now();
    let found = dispatch(device, plan.spec.towers, &gpus, job)?;
    let secs = t.elapsed().as_secs_f64();
    unreadable.extend(found.unreadable.iter().cloned());
    for (path, why) in &unreadable {
        eprintln!("skipped {}: {why}", path.display());
    }
    if let Some(png) = &args.figure {
        crate::viz::save_png(
            png,
            &figures::neighbours(&found, args.ck.limits.max_image_bytes()),
        )?;
        eprintln!("wrote {}", png.display());
    }
    if args.json {
        let out = report_json(&args, &layer_name, &found, &unreadable, secs);
        super::print_out(&format!("{}\n", serde_json::to_string_pretty(&out)?))
    } else {
        let n = found.queries.len();
        eprintln!(
            "searched {} rows of {layer_name} features for {n} quer{} in {secs:.1} s",
            found.gallery.len(),
            if n == 1 { "y" } else { "ies" }
        );
        super::print_out(&report_text(&found))
    }
}

/// The gallery: one features file, or images. Also the layer to compare: `--layer`, else the
/// file's, else fc7.
fn open_gallery(args: &SimilarArgs, classes: &[String]) -> Result<(GallerySource, String)> {
    let is_file = |p: &PathBuf| p.is_file() && Format::of(p).is_ok();
    if let [one] = &args.gallery[..]
        && is_file(one)
    {
        let reader = FeatureReader::open(one)?;
        let layer = args
            .layer
            .clone()
            .or_else(|| reader.about("layer").map(str::to_string))
            .unwrap_or_else(|| "fc7".into());
        return Ok((GallerySource::File(reader), layer));
    }
    if let Some(f) = args.gallery.iter().find(|p| is_file(p)) {
        bail!(
            "{}: a features file is searched alone, not beside images or other files",
            f.display()
        );
    }
    let (images, unlisted) = expand_images(&args.gallery);
    if let Some((path, why)) = unlisted.first() {
        bail!("gallery {}: {why}", path.display());
    }
    let labelled = images
        .into_iter()
        .map(|p| {
            let label = class_folder(&p, classes);
            (p, label)
        })
        .collect();
    let layer = args.layer.clone().unwrap_or_else(|| "fc7".into());
    Ok((GallerySource::Images(labelled), layer))
}

/// Refuses a features file of another network, layer or width, naming what it holds.
fn check_gallery_file(reader: &FeatureReader, plan: &Plan, layer: &str) -> Result<()> {
    let path = reader.path().display();
    if let Some(theirs) = reader.about("network")
        && theirs != plan.spec.name
    {
        bail!(
            "{path} holds features of the network {theirs:?}; this checkpoint is {:?}",
            plan.spec.name
        );
    }
    if let Some(theirs) = reader.about("layer")
        && theirs != layer
    {
        bail!("{path} holds {theirs} features; the queries' would be {layer}'s (--layer)");
    }
    let width = plan.layers[layer_index(plan, layer)?].output_total().len();
    ensure!(
        reader.cols() == width,
        "{path} holds rows of {} values; {layer} of {} gives {width}",
        reader.cols(),
        plan.spec.name
    );
    Ok(())
}

fn report_text(found: &Found) -> String {
    let mut text = String::new();
    for ((path, label), hits) in found.queries.iter().zip(&found.hits) {
        text += &format!("{path}{}\n", labelled(label));
        for (rank, hit) in hits.iter().enumerate() {
            let (p, l) = &found.gallery[hit.index];
            text += &format!(
                "  {:>2}  {:10.4}  {p}{}\n",
                rank + 1,
                hit.distance,
                labelled(l)
            );
        }
    }
    text
}

fn labelled(label: &str) -> String {
    if label.is_empty() {
        String::new()
    } else {
        format!("  ({label})")
    }
}

fn report_json(
    args: &SimilarArgs,
    layer: &str,
    found: &Found,
    unreadable: &[(PathBuf, String)],
    secs: f64,
) -> serde_json::Value {
    let queries: Vec<_> = found
        .queries
        .iter()
        .zip(&found.hits)
        .map(|((path, label), hits)| {
            let nearest: Vec<_> = hits
                .iter()
                .map(|h| {
                    let (p, l) = &found.gallery[h.index];
                    serde_json::json!({"index": h.index, "path": p, "label": l, "distance": h.distance})
                })
                .collect();
            serde_json::json!({"path": path, "label": label, "nearest": nearest})
        })
        .collect();
    serde_json::json!({
        "checkpoint": args.ck.checkpoint.display().to_string(),
        "layer": layer,
        "gallery_rows": found.gallery.len(),
        "seconds": secs,
        "queries": queries,
        "unreadable": unreadable.iter().map(|(p, e)| serde_json::json!({"path": p.display().to_string(), "error": e})).collect::<Vec<_>>(),
    })
}
