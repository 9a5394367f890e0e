//! `alexnet features`: a trained network's activations of one layer for files and folders of
//! images, written as `.npy` (with a `.rows.tsv` beside it) or `.safetensors`.

use super::eval::{CheckpointArgs, expand_images, open_model};
use crate::dist::dispatch::{choose, dispatch};
use crate::features::file::FeatureWriter;
use crate::features::{Extraction, Extractor, class_folder, layer_index};
use crate::progress::Progress;
use crate::train::run::interrupt_flag;
use anyhow::{Result, bail};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct FeaturesArgs {
    #[command(flatten)]
    pub ck: CheckpointArgs,
    /// The layer whose output is written, by its name in `alexnet model` (fc6, fc7, relu7, the
    /// fc8 logits, a conv layer's relu or pool, flattened per image).
    #[arg(long, default_value = "fc7")]
    pub layer: String,
    /// The file to write: NAME.npy (a NumPy matrix, one row per image, with NAME.rows.tsv
    /// listing each row's path and label) or NAME.safetensors (the list in its metadata).
    #[arg(long)]
    pub out: PathBuf,
    /// Write f16 values instead of f32.
    #[arg(long)]
    pub half: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// No progress bar (plain lines).
    #[arg(long)]
    pub no_progress: bool,
    /// Images (JPEG or PNG), or folders of them (searched through, in name order; an image in
    /// a folder named after one of the network's classes is labelled with it).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

pub fn features(args: FeaturesArgs) -> Result<()> {
    let (plan, ck, stats, geometry) = open_model(&args.ck)?;
    let layer = layer_index(&plan, &args.layer)?;
    let width = plan.layers[layer].output_total().len();
    let (images, unlisted) = expand_images(&args.images);
    let labelled: Vec<(PathBuf, String)> = images
        .into_iter()
        .map(|p| {
            let label = class_folder(&p, &stats.classes);
            (p, label)
        })
        .collect();
    let render = args.ck.rendering(&stats, geometry, &ck);
    let views = render.views;
    let about = vec![
        ("layer".to_string(), args.layer.clone()),
        ("network".to_string(), plan.spec.name.clone()),
        ("views".to_string(), views.count().to_string()),
        (
            "checkpoint".to_string(),
            args.ck.checkpoint.display().to_string(),
        ),
    ];
    let writer = FeatureWriter::create(&args.out, width, args.half, about)?;
    let total = labelled.len();
    let progress = Progress::new(
        format!("{} features", args.layer),
        total as u64,
        !args.no_progress,
    )
    .counting("images")
    .interruptible(interrupt_flag());
    let (device, gpus) = choose(args.ck.device, args.ck.devices.as_deref(), plan.spec.towers)?;
    let t = std::time::Instant::now();
    let job = Extraction {
        plan: plan.clone(),
        params: ck.params,
        extractor: Extractor {
            layer,
            render,
            batch: args.batch,
        },
        images: labelled,
        writer,
        progress,
    };
    let done = dispatch(device, plan.spec.towers, &gpus, job)
        .map_err(|e| e.context("no features file was written"))?;
    let mut unreadable = unlisted;
    unreadable.extend(done.unreadable);
    for (path, why) in &unreadable {
        eprintln!("skipped {}: {why}", path.display());
    }
    let rows = done.writer.rows();
    if rows == 0 {
        bail!(
            "none of the {} images could be read: no features file was written",
            total
        );
    }
    let path = done.writer.finish()?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "wrote {}: {rows} rows of {width} {} values ({} layer, {} view{}) in {secs:.1} s, {:.1} images/s{}",
        path.display(),
        if args.half { "f16" } else { "f32" },
        args.layer,
        views.count(),
        if views.count() > 1 { "s averaged" } else { "" },
        rows as f64 / secs.max(1e-9),
        if unreadable.is_empty() {
            String::new()
        } else {
            format!("; {} unreadable, skipped", unreadable.len())
        }
    );
    Ok(())
}
