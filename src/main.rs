//! The `alexnet` command line; see `alexnet::cli`.

fn main() -> anyhow::Result<()> {
    alexnet::cli::main()
}
