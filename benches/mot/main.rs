//! `dev/bench`: how fast mot is, side by side with what it is built on. Runs every benchmark
//! against the real Kafka clusters and Cassandra on loopback and writes `BENCHMARKS.md` and
//! `BENCHMARKS.json`. `--quick` runs every benchmark at a small size (CI runs it so the harness
//! cannot rot) and only checks that each produced its figures.
//!
//! Run through `dev/bench`, which starts the two Kafka clusters of the bench's own
//! (`bench-central`, `bench-region`) and removes them afterwards; `cargo test` only builds this.

mod alloc;
mod api;
mod archival;
mod cache;
mod cost;
mod e2e;
mod pipeline;
mod profile;
mod report;

use std::path::PathBuf;
use std::time::Duration;

use mot::config::Config;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// What every benchmark shares.
pub struct Env {
    pub quick: bool,
    /// Bootstrap address of the bench's central cluster.
    pub central: String,
    /// Bootstrap address of the bench's regional cluster (every bench region lives there).
    pub regional: String,
    /// The keyspace of this run (migrated at start, dropped at the end).
    pub keyspace: String,
    /// The `mot` binary (the cost benchmark runs it as a process).
    pub mot_bin: PathBuf,
    /// The benchmarks to run (all when `None`).
    pub only: Option<Vec<String>>,
    /// A tag unique to this run, for region names.
    pub run_id: String,
}

impl Env {
    /// Runs per figure.
    pub fn runs(&self) -> usize {
        if self.quick {
            1
        } else {
            3
        }
    }

    /// Picks the full or the quick size.
    pub fn size(&self, full: usize, quick: usize) -> usize {
        if self.quick {
            quick
        } else {
            full
        }
    }

    /// A region name unique to this run: `production-b<run><tag>`.
    pub fn region(&self, tag: &str) -> String {
        format!("production-b{}{tag}", self.run_id)
    }

    /// The bench topology: the central region on `bench-central`; each of `regions` on a
    /// cluster of its own name (`bench-r<i>`), all of them the one `bench-region` broker (one
    /// zone each, at an address that does not answer), routed to the central cluster by mot's
    /// localizers.
    pub fn config_text(&self, regions: &[String], roles: &str, listen: &str) -> String {
        // The dev Cassandra as dev/mot.toml reaches it (its login and TLS), in this run's keyspace.
        let mut cassandra = Config::load(std::path::Path::new("dev/mot.toml"))
            .expect("dev/mot.toml")
            .cassandra;
        cassandra.keyspace = self.keyspace.clone();
        cassandra.replication_factor = 1;
        let mut text = format!(
            "[node]\nroles = [{roles}]\n\n[web]\nlisten = \"{listen}\"\n\n{cassandra}\n\
             [kafka]\npartitions = 2\nreplication_factor = 1\n\n\
             [topology]\ncentral = \"production-us-east-1\"\n\n\
             [[clusters]]\nname = \"bench-central\"\nbootstrap = [\"{central}\"]\n\n\
             [[regions]]\nname = \"production-us-east-1\"\ncluster = \"bench-central\"\nzones = []\n",
            cassandra = cassandra.to_toml(),
            central = self.central,
        );
        for (i, region) in regions.iter().enumerate() {
            text.push_str(&format!(
                "\n[[clusters]]\nname = \"bench-r{i}\"\nbootstrap = [\"{regional}\"]\n\
                 \n[[regions]]\nname = \"{region}\"\ncluster = \"bench-r{i}\"\n\
                 zones = [{{ name = \"a\", marathon = \"http://127.0.0.1:1/a/marathon\", mesos = \"http://127.0.0.1:1/a/mesos\", consul = \"http://127.0.0.1:1/a/consul\" }}]\n\
                 \n[[routes]]\nfrom = \"bench-r{i}\"\nto = \"bench-central\"\n\
                 topics = [\"mot-deployment-complete-events\", \"mot-instance-state-change\", \"mot-deployment-state-change\"]\n\
                 carrier = \"mot\"\n",
                regional = self.regional,
            ));
        }
        text
    }

    pub fn config(&self, regions: &[String]) -> Config {
        let text = self.config_text(regions, "\"regional\", \"persistence\"", "127.0.0.1:0");
        Config::from_toml(std::path::Path::new("bench.toml"), &text).expect("bench topology")
    }
}

/// Starts `supervisor` on an arbiter (thread) of its own, so the bench's own polling and
/// profiling neither slow nor are starved by the agents it measures.
pub fn on_own_thread(
    supervisor: mot::actors::supervisor::RegionSupervisor,
) -> (
    actix::Addr<mot::actors::supervisor::RegionSupervisor>,
    actix::Arbiter,
) {
    use actix::Actor;
    let arbiter = actix::Arbiter::new();
    let address =
        mot::actors::supervisor::RegionSupervisor::start_in_arbiter(&arbiter.handle(), move |_| {
            supervisor
        });
    (address, arbiter)
}

/// The dev admin's API token (dev/tokens.env, which dev/infra makes).
pub fn admin_token() -> String {
    let text = std::fs::read_to_string("dev/tokens.env")
        .expect("dev/tokens.env: run dev/infra tokens (dev/bench does)");
    text.lines()
        .find_map(|l| l.strip_prefix("MOT_TOKEN_ADMIN="))
        .expect("dev/tokens.env has MOT_TOKEN_ADMIN")
        .trim()
        .to_owned()
}

/// Waits until `done` holds, polling every millisecond; `None` after `timeout`.
pub async fn until(timeout: Duration, mut done: impl FnMut() -> bool) -> Option<()> {
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        if std::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Some(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--only pipeline,cache,...`: run some benchmarks (while working on one); no report check.
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').map(str::to_owned).collect());
    if !quick && !args.iter().any(|a| a == "--bench") {
        println!("mot benchmarks: run them with dev/bench (or dev/bench --quick)");
        return;
    }
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set; run through dev/bench"))
    };
    let env = Env {
        quick,
        central: var("MOT_BENCH_CENTRAL"),
        regional: var("MOT_BENCH_REGIONAL"),
        keyspace: format!("mot_bench_{}", std::process::id()),
        mot_bin: PathBuf::from(var("MOT_BENCH_MOT_BIN")),
        only: only.clone(),
        run_id: format!(
            "{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                % 1_000_000
        ),
    };
    let out = PathBuf::from(var("MOT_BENCH_OUT"));
    if std::env::var("RUST_LOG").is_err() {
        std::env::set_var("RUST_LOG", "warn,librdkafka=error");
    }
    let telemetry = mot::telemetry::init(
        &mot::config::TelemetryConfig {
            otlp_endpoint: Some("http://127.0.0.1:4318".into()),
            service_name: Some("mot-bench".into()),
            ..Default::default()
        },
        &Default::default(),
    )
    .expect("telemetry");
    let machine = report::Machine::detect(quick);
    let (sections, profile) = actix_web::rt::System::new().block_on(run(&env));
    telemetry.shutdown();
    report::write(&out, &machine, &sections, &profile).expect("writing the report");
    println!("dev/bench: wrote {}", out.join("BENCHMARKS.md").display());
    let missing: Vec<String> = sections
        .iter()
        .flat_map(|s| {
            let empty = s
                .figures
                .is_empty()
                .then(|| format!("{}: no figure", s.title));
            s.figures
                .iter()
                .filter(|f| !f.measured())
                .map(move |f| format!("{}: {}", s.title, f.name))
                .chain(empty)
        })
        .collect();
    if (only.is_none() && sections.len() != 6) || !missing.is_empty() {
        eprintln!(
            "dev/bench: {} sections; not measured: {missing:?}",
            sections.len()
        );
        std::process::exit(1);
    }
}

async fn run(env: &Env) -> (Vec<report::Section>, String) {
    let config = env.config(&[]);
    let session = mot::store::connect(&config.cassandra)
        .await
        .expect("cassandra");
    let migrations = mot::store::migrate::Migration::embedded().unwrap();
    mot::store::migrate::migrate(&session, &config.cassandra, &migrations)
        .await
        .expect("migrating the bench keyspace");
    let mut profiles = String::new();
    let mut sections = Vec::new();
    let wanted = |id: &str| env.only.as_ref().is_none_or(|o| o.iter().any(|w| w == id));
    // Cost first, while the bench's regional topics are empty: its localizers read them from the
    // start, and the other benchmarks leave hundreds of thousands of records there.
    let mut cost_section = None;
    if wanted("cost") {
        println!("dev/bench: cost as the topology grows");
        cost_section = Some(cost::run(env).await);
    }
    if wanted("pipeline") {
        println!("dev/bench: agent pipeline vs bare rdkafka");
        sections.push(pipeline::run(env, &mut profiles).await);
    }
    if wanted("cache") {
        println!("dev/bench: last-record cache vs HashMap");
        sections.push(cache::run(env));
    }
    if wanted("archival") {
        println!("dev/bench: archival vs the raw driver");
        sections.push(archival::run(env, &session, &mut profiles).await);
    }
    if wanted("api") || wanted("e2e") {
        println!("dev/bench: end to end, then API reads");
        let (e2e, deployment, api_url, projections) = e2e::run(env, &session).await;
        sections.push(api::run(env, &api_url, deployment, &projections).await);
        sections.push(e2e);
    }
    sections.extend(cost_section);
    let _ = session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", env.keyspace), ())
        .await;
    (sections, profiles)
}
