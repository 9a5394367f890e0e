//! `alexnet eval`, `alexnet predict` and `alexnet filters`: using a trained checkpoint.

use super::data_args::ReadLimits;
use super::figures::Ranked;
use crate::data::open::{load_stats, open_dataset, splits, threads};
use crate::data::{EvalViews, Geometry, Loader, LoaderConfig, Stats};
use crate::device::Device;
use crate::dist::dispatch::{DeviceKind, Job, choose, dispatch};
use crate::engine::Network;
use crate::features::{Rendering, mean_over_views, render};
use crate::model::Plan;
use crate::model::init::NetParams;
use crate::ops::precision::Precision;
use crate::train::batches::LoaderEval;
use crate::train::checkpoint::{self, Checkpoint};
use crate::train::evaluate::{EvalResult, evaluate};
use crate::train::run::checkpoint_path;
use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct CheckpointArgs {
    /// A run folder or its checkpoint file.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The training set's statistics [default: those kept in the checkpoint; for checkpoints
    /// older than that, stats.safetensors beside it].
    #[arg(long)]
    pub stats: Option<PathBuf>,
    /// Side of the base images [default: the statistics'].
    #[arg(long)]
    pub base: Option<usize>,
    /// Score the paper's ten crops (corners, centre, and their mirrors), averaging the softmax.
    #[arg(long)]
    pub ten_crop: bool,
    /// Where the towers run [default: auto, the GPUs if usable, else the CPU].
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceKind,
    /// The GPUs for the towers with --device cuda or auto [default: 0,1, or 0 where there is
    /// one GPU].
    #[arg(long)]
    pub devices: Option<String>,
    /// The convolutions' and fc layers' products [default: the precision the checkpoint was
    /// trained at].
    #[arg(long, value_enum)]
    pub precision: Option<Precision>,
    #[command(flatten)]
    pub limits: ReadLimits,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub ck: CheckpointArgs,
    /// Labelled images: a dataset root (its val/ or test/ is used), or a class-folder tree or tar.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print one JSON object (errors, images, views, unreadable files) instead of the line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    pub ck: CheckpointArgs,
    /// A file of class descriptions, `<class> <description>` per line (ImageNet's synsets.txt);
    /// classes are named by their folder names otherwise.
    #[arg(long)]
    pub synsets: Option<PathBuf>,
    /// Images to classify (JPEG or PNG), or folders of them (searched through, in name order).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Classes to list per image, most likely first.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// Print one JSON object: per image its path and top classes (index, name, description,
    /// probability), and every file that could not be read, with why.
    #[arg(long)]
    pub json: bool,
    /// With --json, also each image's logits (averaged over the views).
    #[arg(long, requires = "json")]
    pub logits: bool,
    /// Also draw the paper's Figure 4 (left) to this PNG: each image with its top classes as
    /// bars, the true class (its class folder, or --labels) in red.
    #[arg(long)]
    pub figure: Option<PathBuf>,
    /// The images' true classes for the figure: `<file name> <class>` per line (the class by
    /// its folder name, as the network's classes are named) [default: each image's folder].
    #[arg(long)]
    pub labels: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct FiltersArgs {
    /// A run folder or its checkpoint file.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The PNG to write.
    #[arg(long, default_value = "filters.png")]
    pub out: PathBuf,
    /// Pixels per filter tap.
    #[arg(long, default_value_t = 4)]
    pub zoom: u32,
}

impl CheckpointArgs {
    /// How images become the network's input for this checkpoint: as evaluation renders them,
    /// centre crop or (`--ten-crop`) the ten, files past `--max-image-bytes` skipped.
    pub(super) fn rendering<'a>(
        &self,
        stats: &'a Stats,
        g: Geometry,
        ck: &Checkpoint,
    ) -> Rendering<'a> {
        Rendering {
            stats,
            geometry: g,
            views: EvalViews::from_ten_crop(self.ten_crop),
            augment: ck.spec.augment,
            max_image_bytes: self.limits.max_image_bytes(),
        }
    }
}

fn load_checkpoint(path: &Path) -> Result<(PathBuf, Checkpoint)> {
    let file = if path.is_dir() {
        checkpoint_path(path)
    } else {
        path.to_path_buf()
    };
    let ck = checkpoint::load(&file)?;
    if !ck.checksummed {
        eprintln!(
            "note: {} predates tensor checksums; its weights were checked only for being finite",
            file.display()
        );
    }
    Ok((file, ck))
}

/// The checkpoint, its plan and the statistics it was trained with.
pub(super) fn open_model(args: &CheckpointArgs) -> Result<(Plan, Checkpoint, Stats, Geometry)> {
    let (file, ck) = load_checkpoint(&args.checkpoint)?;
    let mut spec = ck.spec.clone();
    if let Some(p) = args.precision.filter(|&p| p != spec.precision) {
        eprintln!(
            "note: scoring at {p} as --precision asks (the network was trained at {})",
            spec.precision
        );
        spec.precision = p;
    }
    let plan = Plan::new(&spec)?;
    // --stats, else the statistics kept in the checkpoint, else (older checkpoints) the run
    // folder's stats.safetensors.
    let stats = match (&args.stats, &ck.stats) {
        (Some(path), _) => load_stats(path)?,
        (None, Some(kept)) => kept.clone(),
        (None, None) => {
            let beside = file
                .parent()
                .unwrap_or(Path::new("."))
                .join("stats.safetensors");
            load_stats(&beside).context(
                "this checkpoint predates keeping its statistics: pass --stats with the training set's (alexnet prepare)",
            )?
        }
    };
    let base = args.base.unwrap_or(stats.base);
    let geometry = Geometry::new(base, ck.spec.input.size)?;
    ensure!(
        stats.classes.is_empty() || stats.classes.len() == plan.classes,
        "the statistics are of a dataset with {} classes, the network has {}",
        stats.classes.len(),
        plan.classes
    );
    Ok((plan, ck, stats, geometry))
}

/// Scores with a network on whatever device was chosen.
struct Scoring<F> {
    plan: Plan,
    params: NetParams,
    work: F,
}

/// Scores `n` images' views: their probabilities and logits, `[n, classes]` each.
type Predict<'a> = dyn FnMut(&[f32], usize) -> Result<(Vec<f32>, Vec<f32>)> + 'a;

impl<T, F: FnOnce(&mut Predict) -> Result<T>> Job for Scoring<F> {
    type Output = T;
    fn run<D: Device>(self, devices: Vec<D>) -> Result<T> {
        let mut net = Network::new(&self.plan, devices, &self.params, 0)?;
        let mut predict = |images: &[f32], n: usize| {
            let probs = net.predict(images, n)?;
            Ok((probs, net.logits()?))
        };
        (self.work)(&mut predict)
    }
}

struct EvalJob {
    plan: Plan,
    params: NetParams,
    data: LoaderEval,
}

impl Job for EvalJob {
    type Output = (EvalResult, Vec<crate::data::BadSample>);
    fn run<D: Device>(mut self, devices: Vec<D>) -> Result<Self::Output> {
        let mut net = Network::new(&self.plan, devices, &self.params, 0)?;
        let result = evaluate(&mut net, &mut self.data)?;
        Ok((result, self.data.loader.bad_samples()))
    }
}

pub fn eval(args: EvalArgs) -> Result<()> {
    let (plan, ck, stats, geometry) = open_model(&args.ck)?;
    let sp = splits(&args.data)?;
    let path = sp.val.unwrap_or(sp.train);
    let classes = (!stats.classes.is_empty()).then(|| stats.classes.clone());
    let data = open_dataset(&path, classes, args.ck.limits.max_image_bytes())?;
    let views = EvalViews::from_ten_crop(args.ck.ten_crop);
    let loader = Loader::new(
        data.clone(),
        Arc::new(stats),
        LoaderConfig {
            threads: threads(args.threads),
            augment: ck.spec.augment,
            ..LoaderConfig::eval(geometry, args.batch, views)
        },
    )?;
    eprintln!(
        "evaluating {} on {} ({} images, {})",
        ck.spec.name,
        path.display(),
        data.len(),
        if args.ck.ten_crop {
            "ten crops"
        } else {
            "centre crop"
        }
    );
    let t = std::time::Instant::now();
    let job = EvalJob {
        plan: plan.clone(),
        params: ck.params,
        data: LoaderEval::new(loader, views.count()),
    };
    let (device, gpus) = choose(args.ck.device, args.ck.devices.as_deref(), plan.spec.towers)?;
    let (r, bad) = dispatch(device, plan.spec.towers, &gpus, job)?;
    if args.json {
        let out = serde_json::json!({
            "checkpoint": args.ck.checkpoint.display().to_string(),
            "data": path.display().to_string(),
            "views": views.count(),
            "precision": plan.spec.precision.to_string(),
            "images": r.images,
            "top1_error": r.top1_error,
            "top5_error": r.top5_error,
            "loss": r.loss,
            "seconds": t.elapsed().as_secs_f64(),
            "unreadable": bad.iter().map(|b| serde_json::json!({"path": b.path, "error": b.error})).collect::<Vec<_>>(),
        });
        super::print_out(&format!("{}\n", serde_json::to_string_pretty(&out)?))?;
        return Ok(());
    }
    println!(
        "top-1 error {:.2}%, top-5 error {:.2}% over {} images ({:.1} s)",
        100.0 * r.top1_error,
        100.0 * r.top5_error,
        r.images,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The images named on the command line: files as given, folders searched through for `.jpg`,
/// `.jpeg` and `.png` files (any case) in name order; what cannot be listed is returned as
/// (path, why).
pub(super) fn expand_images(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>, bad: &mut Vec<(PathBuf, String)>) {
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(list) => list.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => return bad.push((dir.to_path_buf(), format!("cannot be listed: {e}"))),
        };
        entries.sort();
        for p in entries {
            let hidden = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if hidden {
                continue;
            }
            if p.is_dir() {
                walk(&p, out, bad);
            } else if p.extension().is_some_and(|e| {
                ["jpg", "jpeg", "png"].contains(&e.to_string_lossy().to_lowercase().as_str())
            }) {
                out.push(p);
            }
        }
    }
    let (mut files, mut bad) = (Vec::new(), Vec::new());
    for p in paths {
        if p.is_dir() {
            let before = files.len();
            walk(p, &mut files, &mut bad);
            if files.len() == before {
                bad.push((
                    p.clone(),
                    "a folder with no .jpg, .jpeg or .png file".into(),
                ));
            }
        } else {
            files.push(p.clone());
        }
    }
    (files, bad)
}

/// `<class> <description>` lines.
fn read_synsets(path: &Path) -> Result<std::collections::HashMap<String, String>> {
    let text = crate::files::read_text(path)?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(char::is_whitespace))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

/// Each image's true class, by file name, from a `<file name> <class>` list.
fn read_labels(path: &Path) -> Result<std::collections::HashMap<String, String>> {
    let text = crate::files::read_text(path)?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut f = l.split_whitespace();
            match (f.next(), f.next()) {
                (Some(name), Some(class)) => Ok((name.to_string(), class.to_string())),
                _ => bail!("{}: {l:?} is not `<file name> <class>`", path.display()),
            }
        })
        .collect()
}

/// The paper's Figure 4 (left) to `png`: each image with its top classes' bars, named by
/// `described`, its true class (`truth`: a class folder, or any name) marked.
fn draw_predictions(
    png: &Path,
    ranked: &[Scored],
    classes: &[String],
    described: &dyn Fn(usize) -> (String, Option<String>),
    truth: &dyn Fn(&Path) -> Option<String>,
    max_bytes: u64,
) -> Result<()> {
    let short = |c: usize| short_name(described(c));
    let cells = ranked
        .iter()
        .map(|(path, best)| {
            let top = best.iter().map(|&(c, p)| (short(c), p)).collect();
            let truth = truth(path).map(|f| match classes.iter().position(|c| *c == f) {
                Some(c) => short(c),
                None => f,
            });
            Ranked {
                path: path.as_path(),
                top,
                truth,
            }
        })
        .collect::<Vec<_>>();
    crate::viz::save_png(png, &super::figures::predictions(cells, max_bytes))?;
    eprintln!("wrote {}", png.display());
    Ok(())
}

/// A class's name for a figure: its synset's first name ("tiger shark" of "tiger shark,
/// Galeocerdo cuvieri"), else its folder's.
fn short_name((folder, description): (String, Option<String>)) -> String {
    description.map_or(folder, |d| {
        d.split(',').next().unwrap_or(&d).trim().to_string()
    })
}

/// One image's `best` classes as `predict --json` lists them, with their mean probabilities.
fn image_json(
    path: &Path,
    best: &[usize],
    mean: &[f32],
    described: &dyn Fn(usize) -> (String, Option<String>),
) -> serde_json::Value {
    let top = best.iter().map(|&c| {
        let (name, desc) = described(c);
        serde_json::json!({"class": c, "name": name, "description": desc, "probability": mean[c]})
    });
    serde_json::json!({"path": path.display().to_string(), "top": top.collect::<Vec<_>>()})
}

/// One image's `best` classes as `predict` prints them: the path, then a line per class.
fn image_text(
    path: &Path,
    best: &[usize],
    mean: &[f32],
    described: &dyn Fn(usize) -> (String, Option<String>),
) -> String {
    let mut lines = format!("{}\n", path.display());
    for &c in best {
        let (name, desc) = described(c);
        let name = desc.map_or(name.clone(), |d| format!("{name} {d}"));
        lines += &format!("  {:6.2}%  {name}\n", 100.0 * mean[c]);
    }
    lines
}

/// An image's true class for the figure: from `--labels` by its file name, else its class
/// folder (none where it lies in no folder of the net's classes).
fn true_class(
    path: &Path,
    labels: Option<&std::collections::HashMap<String, String>>,
    classes: &[String],
) -> Option<String> {
    match labels {
        Some(t) => path
            .file_name()
            .and_then(|n| t.get(n.to_string_lossy().as_ref()))
            .cloned(),
        None => Some(crate::features::class_folder(path, classes)).filter(|c| !c.is_empty()),
    }
}

/// One image's most likely classes, most likely first: (class, probability).
type Scored = (PathBuf, Vec<(usize, f32)>);

/// What predict's work gives: each image's JSON (with --json), its ranked classes, and the
/// images that could not be read, with why.
type Predicted = (Vec<serde_json::Value>, Vec<Scored>, Vec<(PathBuf, String)>);

pub fn predict(args: PredictArgs) -> Result<()> {
    if let Some(f) = &args.figure {
        super::figures::check_png_name(f)?;
    }
    let (plan, ck, stats, geometry) = open_model(&args.ck)?;
    let names = match &args.synsets {
        Some(p) => Some(read_synsets(p)?),
        None => None,
    };
    let truths = match &args.labels {
        Some(p) => Some(read_labels(p)?),
        None => None,
    };
    let classes = plan.classes;
    let (images, unlisted) = expand_images(&args.images);
    let rendering = args.ck.rendering(&stats, geometry, &ck);
    let views = rendering.views;
    let top = args.top.clamp(1, classes);
    let described = |c: usize| -> (String, Option<String>) {
        let folder = stats
            .classes
            .get(c)
            .cloned()
            .unwrap_or_else(|| format!("class {c}"));
        let desc = names.as_ref().and_then(|m| m.get(&folder)).cloned();
        (folder, desc)
    };
    let (json, with_logits) = (args.json, args.logits);
    let work = |predict: &mut Predict| -> Result<Predicted> {
        let (mut scored, mut ranked, mut failed) = (Vec::new(), Vec::new(), unlisted.clone());
        for path in &images {
            let input = match render(path, &rendering) {
                Ok(v) => v,
                Err(e) => {
                    failed.push((path.clone(), format!("{e:#}")));
                    continue;
                }
            };
            let (probs, logits) = predict(&input, views.count())?;
            let mean = mean_over_views(&probs, classes);
            let best = crate::ops::softmax::top_k(&mean, top);
            ranked.push((path.clone(), best.iter().map(|&c| (c, mean[c])).collect()));
            if json {
                let mut item = image_json(path, &best, &mean, &described);
                if with_logits {
                    item["logits"] = serde_json::json!(mean_over_views(&logits, classes));
                }
                scored.push(item);
            } else {
                super::print_out(&image_text(path, &best, &mean, &described))?;
            }
        }
        Ok((scored, ranked, failed))
    };
    let (device, gpus) = choose(args.ck.device, args.ck.devices.as_deref(), plan.spec.towers)?;
    let (scored, ranked, failed) = dispatch(
        device,
        plan.spec.towers,
        &gpus,
        Scoring {
            plan: plan.clone(),
            params: ck.params,
            work,
        },
    )?;
    for (path, why) in &failed {
        eprintln!("skipped {}: {why}", path.display());
    }
    if let Some(png) = &args.figure {
        let truth = |path: &Path| true_class(path, truths.as_ref(), &stats.classes);
        let max_bytes = args.ck.limits.max_image_bytes();
        draw_predictions(png, &ranked, &stats.classes, &described, &truth, max_bytes)?;
    }
    if args.json {
        let out = serde_json::json!({
            "checkpoint": args.ck.checkpoint.display().to_string(),
            "views": views.count(),
            "precision": plan.spec.precision.to_string(),
            "images": scored,
            "unreadable": failed.iter().map(|(p, e)| serde_json::json!({"path": p.display().to_string(), "error": e})).collect::<Vec<_>>(),
        });
        super::print_out(&format!("{}\n", serde_json::to_string_pretty(&out)?))?;
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} images could not be read",
            failed.len(),
            images.len() + unlisted.len()
        );
    }
    Ok(())
}

pub fn filters(args: FiltersArgs) -> Result<()> {
    let (_, ck) = load_checkpoint(&args.checkpoint)?;
    let plan = Plan::new(&ck.spec)?;
    let first = plan.layers.first().context("the network has no layers")?;
    let shape = first
        .weight_shape()
        .context("the first layer has no weights")?;
    ensure!(
        shape[1] == 3,
        "the first layer reads {} channels, not an RGB image",
        shape[1]
    );
    // Tower A's kernels, then tower B's, as the paper's Figure 3 shows them.
    let weights: Vec<f32> = ck.params[0]
        .iter()
        .flat_map(|t| t.weight.data.iter().copied())
        .collect();
    let count = shape[0] * ck.params[0].len();
    let columns = if shape[0] % 16 == 0 {
        16
    } else {
        shape[0].min(16)
    };
    let img = crate::viz::filters::filter_grid(&weights, count, shape[2], columns, args.zoom);
    img.save(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} ({} kernels of {}x{}x3)",
        args.out.display(),
        count,
        shape[2],
        shape[3]
    );
    Ok(())
}
