//! The `mot` command: one binary, roles chosen by config.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use mot::config::Config;
use mot::store::{self, migrate};
use mot::topics::topology::Topology;
use mot::topics::{clients, mm2};

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
    /// Dev tool: simulate one region's Marathon and Mesos per zone on the address its zones'
    /// URLs name, registering the tasks in the zones' real Consul.
    PlatformSim {
        #[arg(long, short)]
        config: PathBuf,
        /// The region to simulate.
        #[arg(long)]
        region: String,
        /// Milliseconds from a task's start until its health checks pass.
        #[arg(long, default_value_t = 2000)]
        health_delay_ms: u64,
    },
    /// Manage the Kafka topics the topology needs.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Make static API tokens (for bots and CI).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Make keys that seal `secret_env` values.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Print a new keyring entry `<id>=<base64 key>`: put it first in the keyring to seal with
    /// it (the entries after it still open what they sealed).
    NewKey {
        /// The key's id (letters, digits, - and _), e.g. the date it was made.
        #[arg(long)]
        id: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new random token on stdout, and append its entry (its SHA-256, never the token)
    /// to the tokens file, or print the entry on stderr without `--tokens-file`. The running
    /// API accepts it after a reload (SIGHUP).
    New {
        /// Who the token stands for (shown in the audit log and as `requested_by`).
        #[arg(long)]
        principal: String,
        /// A team it acts for (repeat for several; the first gets the new apps it deploys).
        #[arg(long = "team")]
        teams: Vec<String>,
        /// viewer, deployer or admin (repeat for several).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// An environment whose regions it may change (repeat; `*` for all).
        #[arg(long = "environment")]
        environments: Vec<String>,
        /// The tokens file to append the entry to (auth.tokens_file).
        #[arg(long)]
        tokens_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TopologyCommand {
    /// Exit 0 when the topology keeps the three rules of Kafka etiquette and is complete;
    /// otherwise print each problem with the rule it breaks and how to fix it.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print every agent with the cluster and topic it reads and writes, and every route.
    Plan {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Print MirrorMaker 2 properties for the routes carried by mirrormaker2.
    Mm2 {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Create on every cluster the topics the plan needs (partitions, replication, cleanup
    /// policy from the config); safe to run twice.
    Ensure {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print each record's value on a topic, one per line, as it arrives (e.g. `mot-cdevents`
    /// for the CDEvents of every deployment); Ctrl-C stops.
    Tail {
        #[arg(long, short)]
        config: PathBuf,
        /// The cluster to read (default: the central one).
        #[arg(long)]
        cluster: Option<String>,
        /// Start from the oldest record kept rather than from now.
        #[arg(long)]
        from_beginning: bool,
        topic: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

/// Loads the config and refuses a topology that breaks the etiquette or is incomplete.
fn checked_topology(path: &std::path::Path) -> anyhow::Result<Topology> {
    let config = Config::load(path)?;
    Topology::checked(&config).with_context(|| path.display().to_string())
}

fn run_platform_sim(
    config: &std::path::Path,
    region: &str,
    health_delay_ms: u64,
) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let name = mot::topics::names::RegionName::parse(region)?;
    let region = config
        .region(&name)
        .with_context(|| format!("region {name} is not in the config"))?
        .clone();
    let address = mot::platform::sim::listen_address(&region).map_err(anyhow::Error::msg)?;
    let listener = std::net::TcpListener::bind(&address)
        .with_context(|| format!("cannot listen on {address}"))?;
    let options = mot::platform::sim::SimOptions {
        health_delay: std::time::Duration::from_millis(health_delay_ms),
    };
    actix::System::new().block_on(async move {
        let server = mot::platform::sim::Platform::new(&region, options).server(listener)?;
        let handle = server.handle();
        let task = actix_web::rt::spawn(server);
        let zones: Vec<&str> = region.zones.iter().map(|z| z.name.as_str()).collect();
        println!(
            "platform-sim: {} on http://{address} (zones {})",
            region.name,
            zones.join(", ")
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        handle.stop(true).await;
        let _ = task.await;
        Ok(())
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `mot run` logs as its config says and exports spans (see `run`); the others log text.
    if !matches!(cli.command, Command::Run { .. }) {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info,scylla=warn,actix_server=warn".into()),
            )
            .with_writer(std::io::stderr)
            .init();
    }
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mot: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `mot run`: telemetry from the config (set up before any async runtime exists: the exporter's
/// blocking client is built there), the daemon, then the spans flushed.
fn run(config: &std::path::Path) -> anyhow::Result<()> {
    let loaded = Config::load(config)?;
    let telemetry = mot::telemetry::init(&loaded.telemetry, &loaded.tls).context("telemetry")?;
    let result = actix::System::new().block_on(mot::daemon::run(loaded, config));
    telemetry.shutdown();
    result
}

/// `mot token new`.
fn new_token(
    principal: String,
    teams: Vec<String>,
    roles: Vec<String>,
    environments: Vec<String>,
    tokens_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    use mot::auth::{tokens, Principal, Role};
    let roles = roles
        .iter()
        .map(|r| {
            Role::parse(r).with_context(|| format!("--role {r}: not viewer, deployer or admin"))
        })
        .collect::<anyhow::Result<_>>()?;
    let principal = Principal {
        name: principal,
        teams,
        roles,
        environments: environments.into_iter().collect(),
    };
    let token = tokens::generate()?;
    let entry = tokens::entry(&token, &principal);
    // The entry must read back as the principal it was made for.
    anyhow::ensure!(
        tokens::Tokens::parse(&entry)?.principal(&token).as_ref() == Some(&principal),
        "the entry does not read back"
    );
    match tokens_file {
        Some(path) => {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            writeln!(file, "\n{entry}")?;
            tokens::Tokens::load(&path)?;
        }
        None => eprint!("{entry}"),
    }
    println!("{token}");
    Ok(())
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => run(&config),
        Command::Token {
            command:
                TokenCommand::New {
                    principal,
                    teams,
                    roles,
                    environments,
                    tokens_file,
                },
        } => new_token(principal, teams, roles, environments, tokens_file),
        Command::Secrets {
            command: SecretsCommand::NewKey { id },
        } => {
            let entry = mot::secrets::Keyring::new_entry(&id)?;
            mot::secrets::Keyring::parse(&entry)?;
            println!("{entry}");
            Ok(())
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
            let topology = checked_topology(&config)?;
            let config = topology.config();
            println!(
                "topology ok: {} clusters, {} regions, central {}, {} routes ({} hops); the three rules hold",
                config.clusters.len(),
                config.regions.len(),
                config.topology.central,
                config.routes.len(),
                topology.routes().len()
            );
            Ok(())
        }
        Command::Topology {
            command: TopologyCommand::Plan { config, format },
        } => {
            let topology = checked_topology(&config)?;
            let plan = topology.plan();
            match format {
                Format::Table => print!("{}", plan.to_table()),
                Format::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
            }
            Ok(())
        }
        Command::Topology {
            command: TopologyCommand::Mm2 { config },
        } => {
            let topology = checked_topology(&config)?;
            match mm2::properties(&topology) {
                Some(text) => print!("{text}"),
                None => eprintln!(
                    "no route of {} is carried by mirrormaker2",
                    config.display()
                ),
            }
            Ok(())
        }
        Command::PlatformSim {
            config,
            region,
            health_delay_ms,
        } => run_platform_sim(&config, &region, health_delay_ms),
        Command::Topics {
            command: TopicsCommand::Ensure { config },
        } => {
            let topology = checked_topology(&config)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                for cluster in &topology.config().clusters {
                    let admin = topology
                        .cluster_admin(&cluster.name)
                        .expect("a cluster of this config");
                    let report = clients::ensure_topics(&topology, &admin)
                        .await
                        .with_context(|| format!("cluster {}", cluster.name))?;
                    println!(
                        "{}: created {}, {} already there{}",
                        cluster.name,
                        report.created.len(),
                        report.existing.len(),
                        if report.created.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", report.created.join(", "))
                        }
                    );
                }
                Ok::<_, anyhow::Error>(())
            })
        }
        Command::Topics {
            command:
                TopicsCommand::Tail {
                    config,
                    cluster,
                    from_beginning,
                    topic,
                },
        } => {
            let topology = checked_topology(&config)?;
            let name = cluster.unwrap_or_else(|| topology.central_region().cluster.to_string());
            let cluster = topology
                .config()
                .clusters
                .iter()
                .find(|c| c.name.as_str() == name)
                .with_context(|| format!("no cluster `{name}` in {}", config.display()))?
                .clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(clients::tail(&cluster, &topic, from_beginning))?;
            Ok(())
        }
    }
}
