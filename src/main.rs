//! The `alexnet` command line.

use alexnet::model::{Ablations, Activation, NetSpec, Plan, preset};
use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "alexnet",
    version,
    about = "Train and run the 2012 two-tower ImageNet network"
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
}

/// Chooses the network: a preset with ablation switches, or a JSON spec file.
#[derive(Args, Clone, Debug)]
struct NetArgs {
    /// paper, one-tower, net145 or cifar.
    #[arg(long, default_value = "paper", conflicts_with = "spec")]
    preset: String,
    /// A JSON spec file (see `alexnet model --json` for the format).
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Ablation: drop the local response normalisation layers.
    #[arg(long)]
    no_lrn: bool,
    /// Ablation: divide LRN's alpha by n (cuda-convnet's convention): true or false.
    #[arg(long)]
    lrn_alpha_over_n: Option<bool>,
    /// Ablation: pooling window, 3 (overlapping) or 2; the stride stays 2.
    #[arg(long, default_value_t = 3)]
    pool: usize,
    /// Ablation: tanh instead of ReLU.
    #[arg(long)]
    tanh: bool,
    /// Ablation: no dropout.
    #[arg(long)]
    no_dropout: bool,
}

impl NetArgs {
    fn spec(&self) -> Result<NetSpec> {
        if let Some(path) = &self.spec {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading spec {}", path.display()))?;
            return NetSpec::from_json(&text)
                .with_context(|| format!("parsing spec {}", path.display()));
        }
        let ab = Ablations {
            lrn: !self.no_lrn,
            alpha_over_n: self.lrn_alpha_over_n,
            pool_size: self.pool,
            activation: if self.tanh {
                Activation::Tanh
            } else {
                Activation::Relu
            },
            dropout: !self.no_dropout,
        };
        preset(&self.preset, &ab)
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Model { net, json } => {
            let spec = net.spec()?;
            let plan = Plan::new(&spec).context("the network spec does not make sense")?;
            if json {
                println!("{}", spec.to_json());
            } else {
                print!("{}", plan.table());
            }
        }
    }
    Ok(())
}
