//! `alexnet prepare`: a dataset's statistics, or a pack of it; and the read limits commands share.

use crate::data::open::{open_dataset, report_bad, splits, threads};
use crate::data::{PackOptions, pack::check_destination, pack_split, prepare_with};
use crate::progress::Progress;
use anyhow::{Result, ensure};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct PrepareArgs {
    /// The training set: a dataset root holding train/ (or train.tar), a class-folder tree, or a tar.
    #[arg(long)]
    pub data: PathBuf,
    /// Side of the base images (256 for ImageNet, 32 for CIFAR-10).
    #[arg(long, default_value_t = 256)]
    pub base: usize,
    /// Where to save the statistics [default: beside the training set].
    #[arg(long)]
    pub stats: Option<PathBuf>,
    /// Decoding threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub limits: ReadLimits,
    /// No progress bar (a line every few seconds instead), e.g. for logs.
    #[arg(long)]
    pub no_progress: bool,
    /// Also write the training and validation sets into this folder as a pack: every image cut
    /// once to its base×base centre (shorter side to base, then the central square), as JPEG in
    /// tar shards with an index (`<DIR>/train/`, `<DIR>/val/`); the statistics are taken in the
    /// same pass and saved beside it. Give `--data DIR` to train, eval or prepare from it. An
    /// interrupted pack resumes when run again.
    #[arg(long, value_name = "DIR")]
    pub pack: Option<PathBuf>,
    /// JPEG quality of the packed images.
    #[arg(long, default_value_t = 90, requires = "pack")]
    pub quality: u8,
    /// Images per pack shard.
    #[arg(long, default_value_t = 4096, requires = "pack")]
    pub shard_images: usize,
}

/// Bounds on what one file of a dataset may cost to read.
#[derive(Args, Clone, Copy, Debug)]
pub struct ReadLimits {
    /// Image files larger than this many MiB are skipped by name, unread (the default is far
    /// above any real photograph).
    #[arg(long, value_name = "MIB", default_value_t = crate::files::DEFAULT_MAX_IMAGE_BYTES >> 20)]
    pub max_image_mib: u64,
}

impl ReadLimits {
    pub fn max_image_bytes(&self) -> u64 {
        self.max_image_mib.saturating_mul(1 << 20)
    }
}

pub fn prepare(args: &PrepareArgs) -> Result<()> {
    if let Some(dir) = &args.pack {
        return pack(args, dir);
    }
    let splits = splits(&args.data)?;
    let train = open_dataset(&splits.train, None, args.limits.max_image_bytes())?;
    println!(
        "{}: {} images in {} classes",
        splits.train.display(),
        train.len(),
        train.classes().len()
    );
    let t = std::time::Instant::now();
    let progress = Progress::new(
        format!("statistics of {}", splits.train.display()),
        train.len() as u64,
        !args.no_progress,
    );
    let prepared = prepare_with(
        &train,
        args.base,
        threads(args.threads),
        args.stats.as_deref(),
        &progress,
    )?;
    report_bad(&train, &prepared.bad);
    let s = &prepared.stats;
    let path = prepared
        .path
        .as_ref()
        .map_or("(not saved)".into(), |p| p.display().to_string());
    println!(
        "{} {path} in {:.1} s: mean image {}x{}, RGB eigenvalues {:.1} {:.1} {:.1}, {} images ({} unreadable)",
        if prepared.reused { "reused" } else { "wrote" },
        t.elapsed().as_secs_f64(),
        s.base,
        s.base,
        s.eigenvalues[0],
        s.eigenvalues[1],
        s.eigenvalues[2],
        s.images,
        prepared.bad.len()
    );
    Ok(())
}

/// `prepare --pack`: packs the training set (with its statistics) and the validation set.
fn pack(args: &PrepareArgs, dir: &Path) -> Result<()> {
    let sp = splits(&args.data)?;
    let train = open_dataset(&sp.train, None, args.limits.max_image_bytes())?;
    let val = match &sp.val {
        Some(v) => Some(open_dataset(
            v,
            Some(train.classes().to_vec()),
            args.limits.max_image_bytes(),
        )?),
        None => None,
    };
    ensure!(
        !train.is_pack(),
        "{} is already a pack: give the folder it was made from",
        sp.train.display()
    );
    let options = PackOptions {
        base: args.base,
        quality: args.quality,
        shard_images: args.shard_images,
        threads: threads(args.threads),
    };
    let stats_path = match &args.stats {
        Some(p) => p.clone(),
        None => dir.join(format!("train.stats-{}.safetensors", args.base)),
    };
    let parts = [("train", Some(&train)), ("val", val.as_ref())];
    // Every split's folder is checked before anything of the pack is written.
    for (split, source) in parts {
        if let Some(source) = source {
            check_destination(source, &dir.join(split), &options)?;
        }
    }
    for (split, source) in parts {
        let Some(source) = source else { continue };
        let t = std::time::Instant::now();
        let progress = Progress::new(
            format!("packing {}", source.path().display()),
            source.len() as u64,
            !args.no_progress,
        )
        .interruptible(crate::train::run::interrupt_flag());
        let out = dir.join(split);
        let packed = pack_split(source, &out, &options, split == "train", &progress)?;
        report_bad(source, &packed.bad);
        let m = &packed.manifest;
        let bytes: u64 = m.shards.iter().map(|s| s.bytes).sum();
        let how = if packed.complete_before {
            "already packed".to_string()
        } else if packed.reused_shards > 0 {
            format!(
                "packed in {:.1} s, resuming ({} shards were complete)",
                t.elapsed().as_secs_f64(),
                packed.reused_shards
            )
        } else {
            format!("packed in {:.1} s", t.elapsed().as_secs_f64())
        };
        println!(
            "{}: {} images in {} shards, {:.1} MB ({} unreadable left out), {how}",
            out.display(),
            m.images,
            m.shards.len(),
            bytes as f64 / 1e6,
            m.skipped.len()
        );
        if let Some(stats) = packed.stats {
            stats.save(&stats_path)?;
            println!(
                "wrote {}: mean image {}x{}, RGB eigenvalues {:.1} {:.1} {:.1}, over the packed images",
                stats_path.display(),
                stats.base,
                stats.base,
                stats.eigenvalues[0],
                stats.eigenvalues[1],
                stats.eigenvalues[2]
            );
        }
    }
    Ok(())
}
