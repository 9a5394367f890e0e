//! The `alexnet` command line: argument parsing and the commands, each in its own file.

mod data_args;
mod devices;
mod eval;
mod features;
mod figures;
mod rendezvous_check;
mod similar;
mod train;

use crate::model::choice::NetChoice;
use crate::model::{Ablations, Activation, Plan};
use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

pub use crate::dist::dispatch::DeviceKind;

#[derive(Parser)]
#[command(
    name = "alexnet",
    version,
    about = "Train and run the 2012 two-tower ImageNet network (Krizhevsky, Sutskever & Hinton)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the per-layer table of a network: shapes, parameters, multiply-adds, exchanges.
    Model {
        #[command(flatten)]
        net: NetArgs,
        /// Print the spec as JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Compute a training set's mean image and colour PCA (saved beside it, or at --stats); with
    /// --pack, write the dataset once as 256x256 JPEG shards that load several times faster.
    Prepare(data_args::PrepareArgs),
    /// Train a network (with no --data: the cifar preset on a built-in synthetic set, for about a
    /// minute, to show the engine working).
    Train(Box<train::TrainArgs>),
    /// Top-1 and top-5 error of a checkpoint on a labelled image set (centre crop or ten crops).
    Eval(eval::EvalArgs),
    /// The five most likely classes of each image, with probabilities.
    Predict(eval::PredictArgs),
    /// A layer's activations (fc7 by default) for images, as a .npy or .safetensors matrix,
    /// for retrieval or transfer learning.
    Features(features::FeaturesArgs),
    /// Each query image's nearest images in a gallery by a layer's features (fc7 by default),
    /// as text, JSON or a picture (the paper's Figure 4, right).
    Similar(similar::SimilarArgs),
    /// The first layer's kernels as one PNG grid (the paper's Figure 3).
    Filters(eval::FiltersArgs),
    /// Redraw a run's loss and error curves from its metrics log; with several runs, compare
    /// their training error per epoch (the paper's Figure 1).
    Plot {
        /// Run folders (holding metrics.jsonl).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// The PNG to write [default: curves.png in the run folder; figure.png for several].
        #[arg(long)]
        out: Option<PathBuf>,
        /// The goal line of a comparison, as a training error fraction.
        #[arg(long, default_value_t = 0.25)]
        goal: f64,
        /// Draw one run's loss on a log scale.
        #[arg(long)]
        log_loss: bool,
    },
    /// The GPUs this machine has, their peer access, whether kernels were embedded, and NCCL.
    Devices,
    /// Checks a multi-process launch without training (started by a launcher, with WORLD_SIZE,
    /// RANK, MASTER_ADDR, MASTER_PORT or Slurm's variables): the ranks meet, rank 0 hands out
    /// the id, each prints the id and the images of an epoch its shard holds, then they check
    /// each other's liveness a number of times.
    #[command(hide = true)]
    RendezvousCheck(rendezvous_check::Args),
}

/// Chooses the network: a preset with ablation switches, or a JSON spec file.
#[derive(Args, Clone, Debug, Default)]
pub struct NetArgs {
    /// paper, one-tower, net145 or cifar [default: paper, or cifar for synthetic training].
    #[arg(long, conflicts_with = "spec")]
    pub preset: Option<String>,
    /// A JSON spec file (`alexnet model --json` prints one to start from).
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// Ablation: drop the local response normalisation layers.
    #[arg(long)]
    pub no_lrn: bool,
    /// Ablation: divide LRN's alpha by n (cuda-convnet's convention): true or false.
    #[arg(long)]
    pub lrn_alpha_over_n: Option<bool>,
    /// Ablation: pooling window, 3 (overlapping) or 2; the stride stays 2.
    #[arg(long, default_value_t = 3)]
    pub pool: usize,
    /// Ablation: tanh instead of ReLU.
    #[arg(long)]
    pub tanh: bool,
    /// Ablation: no dropout.
    #[arg(long)]
    pub no_dropout: bool,
    /// Classes of the classifier [default for presets: the training set's, or 1000 where there
    /// is none (`model`); a spec file keeps its own]. fc8 is split across the towers when they
    /// divide it, else it sits on the first tower.
    #[arg(long)]
    pub classes: Option<usize>,
}

impl NetArgs {
    /// The network these arguments name.
    pub fn choice(&self) -> NetChoice {
        NetChoice {
            preset: self.preset.clone(),
            spec: self.spec.clone(),
            ablations: Ablations {
                lrn: !self.no_lrn,
                alpha_over_n: self.lrn_alpha_over_n,
                pool_size: self.pool,
                activation: if self.tanh {
                    Activation::Tanh
                } else {
                    Activation::Relu
                },
                dropout: !self.no_dropout,
            },
            classes: self.classes,
        }
    }
}

/// `error: <what failed>` and a `caused by:` line for each cause under it.
pub fn error_report(e: &anyhow::Error) -> String {
    let mut text = format!("error: {e}");
    for cause in e.chain().skip(1) {
        text += &format!("\n  caused by: {cause}");
    }
    text
}

/// Writes a command's output to standard output. A reader that has closed the pipe (`alexnet
/// model --json | head`) has taken what it wanted, so that is not an error; `print!` would
/// panic on it.
fn print_out(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("writing to standard output")
        }
        _ => Ok(()),
    }
}

pub fn main() -> Result<()> {
    let cli = Cli::parse();
    // A bad ALEXNET_CPU_ISA is refused before any work (the kernels would only warn).
    crate::ops::simd::Isa::requested().map_err(anyhow::Error::msg)?;
    match cli.command {
        Command::Model { net, json } => {
            let spec = net.choice().spec_or("paper")?;
            let plan = Plan::new(&spec).context("the network spec does not make sense")?;
            if json {
                print_out(&format!("{}\n", spec.to_json()))
            } else {
                print_out(&plan.table())
            }
        }
        Command::Prepare(args) => data_args::prepare(&args),
        Command::Train(args) => train::run(*args),
        Command::Eval(args) => eval::eval(args),
        Command::Predict(args) => eval::predict(args),
        Command::Features(args) => features::features(args),
        Command::Similar(args) => similar::similar(args),
        Command::Filters(args) => eval::filters(args),
        Command::Plot {
            runs,
            out,
            goal,
            log_loss,
        } => {
            let png = match (&runs[..], out) {
                ([run], out) => {
                    let png = out.unwrap_or_else(|| run.join("curves.png"));
                    crate::train::plot::plot_metrics(&run.join("metrics.jsonl"), &png, log_loss)?;
                    png
                }
                (runs, out) => {
                    let labelled: Vec<(String, PathBuf)> = runs
                        .iter()
                        .map(|r| {
                            (
                                r.file_name()
                                    .map_or("run".into(), |n| n.to_string_lossy().into_owned()),
                                r.join("metrics.jsonl"),
                            )
                        })
                        .collect();
                    let png = out.unwrap_or_else(|| PathBuf::from("figure.png"));
                    crate::train::plot::plot_training_error(&labelled, goal, &png)?;
                    png
                }
            };
            println!("wrote {}", png.display());
            Ok(())
        }
        Command::Devices => print_out(&devices::report()),
        Command::RendezvousCheck(args) => rendezvous_check::run(&args),
    }
}
