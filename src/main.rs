//! The `mot` command: one binary, roles chosen by config.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use mot::config::Config;
use mot::store::{self, migrate};

#[derive(Parser)]
#[command(
    name = "mot",
    version,
    about = "Ministry of Truth: deploy to many datacenters with one call, see what runs where"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the roles the config names (service, regional, persistence) until SIGINT/SIGTERM.
    Run {
        /// The configuration file (see dev/mot.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Apply the numbered CQL migrations to the keyspace the config names.
    Migrate {
        #[arg(long, short)]
        config: PathBuf,
        /// Read migrations from this folder instead of those built into the binary.
        #[arg(long)]
        migrations: Option<PathBuf>,
    },
    /// Inspect and check the topology.
    Topology {
        #[command(subcommand)]
        command: TopologyCommand,
    },
}

#[derive(Subcommand)]
enum TopologyCommand {
    /// Exit 0 when the configuration and its topology are valid; otherwise name each problem.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,scylla=warn,actix_server=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mot: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => {
            let config = Config::load(&config)?;
            actix::System::new().block_on(mot::daemon::run(config))
        }
        Command::Migrate { config, migrations } => {
            let config = Config::load(&config)?;
            let migrations = match migrations {
                Some(dir) => migrate::Migration::load_dir(&dir)?,
                None => migrate::Migration::embedded()?,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let report = runtime.block_on(async {
                let session = store::connect(&config.cassandra).await?;
                migrate::migrate(&session, &config.cassandra, &migrations)
                    .await
                    .with_context(|| format!("keyspace {}", config.cassandra.keyspace))
            })?;
            println!(
                "keyspace {}: applied {} migration(s){}, {} already applied",
                config.cassandra.keyspace,
                report.applied.len(),
                if report.applied.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", report.applied.join(", "))
                },
                report.already_applied.len()
            );
            Ok(())
        }
        Command::Topology {
            command: TopologyCommand::Check { config },
        } => {
            let config = Config::load(&config)?;
            println!(
                "topology ok: {} clusters, {} regions, central {}, {} routes",
                config.clusters.len(),
                config.regions.len(),
                config.topology.central,
                config.routes.len()
            );
            Ok(())
        }
    }
}
