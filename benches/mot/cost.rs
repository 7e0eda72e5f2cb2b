//! Benchmark 6: Cost as the topology grows: a `mot run` process with the persistence role serving 1, 10,
//! 50 and 100 regions (generated topologies on the bench's clusters): threads, resident memory,
//! CPU at idle and under a fixed event rate, Kafka connections.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use uuid::Uuid;

use mot::topics::catalog;
use mot::topics::names::RegionName;
use mot::topics::topology::Topology;

use crate::report::{Figure, Section};
use crate::Env;

/// Records per second produced for the "under load" figure, spread over the regions.
const EVENT_RATE: u64 = 200;

fn status_field(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// CPU seconds the process has used (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command.
    (ticks(11) + ticks(12)) / 100.0
}

/// Established TCP connections of `pid` to any of `ports`.
fn connections(pid: u32, ports: &[u16]) -> f64 {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("socket:[")?
                        .strip_suffix(']')
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(remote), Some(state), Some(inode)) = (f.get(2), f.get(3), f.get(9)) else {
                return false;
            };
            let port = remote
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                .unwrap_or(0);
            *state == "01" && ports.contains(&port) && inodes.contains(*inode)
        })
        .count() as f64
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Sample {
    ready_s: f64,
    threads: f64,
    rss_mib: f64,
    idle_cpu: Vec<f64>,
    loaded_cpu: Vec<f64>,
    connections: f64,
}

async fn measure(env: &Env, n: usize) -> Sample {
    let regions: Vec<String> = (0..n).map(|i| env.region(&format!("c{n}x{i}"))).collect();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = env.config_text(&regions, "\"persistence\"", &format!("127.0.0.1:{port}"));
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), &text).unwrap();
    let config = mot::config::Config::load(file.path()).expect("generated topology");
    let topology = Topology::checked(&config).expect("generated topology");
    let started = Instant::now();
    let process = Process(
        Command::new(&env.mot_bin)
            .args(["run", "--config"])
            .arg(file.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mot run"),
    );
    let pid = process.0.id();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let ready = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "mot run with {n} regions never became ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready_s = started.elapsed().as_secs_f64();
    // Settle: consumer groups join and rebalance after the agents start.
    tokio::time::sleep(Duration::from_secs(if env.quick { 2 } else { 30 })).await;
    let window = Duration::from_secs(if env.quick { 2 } else { 10 });
    let cpu_percent =
        |from: f64, elapsed: Duration| (cpu_seconds(pid) - from) / elapsed.as_secs_f64() * 100.0;
    let mut idle_cpu = Vec::new();
    for _ in 0..env.runs() {
        let (from, t) = (cpu_seconds(pid), Instant::now());
        tokio::time::sleep(window).await;
        idle_cpu.push(cpu_percent(from, t.elapsed()));
    }
    let threads = status_field(pid, "Threads:");
    let rss_mib = status_field(pid, "VmRSS:") / 1024.0;
    let ports: Vec<u16> = [&env.central, &env.regional]
        .iter()
        .filter_map(|b| b.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
        .collect();
    let connections = connections(pid, &ports);

    // Under a fixed event rate: instance updates on the regions' suffixed topics, round robin.
    let central = topology.central_home();
    let producer = central.producer().unwrap();
    let topics: Vec<(RegionName, String)> = regions
        .iter()
        .map(|r| {
            let name = RegionName::parse(r).unwrap();
            let topic = topology.archived_topic(
                config.region(&name).unwrap(),
                &catalog::INSTANCE_STATE_CHANGE,
            );
            (name, topic.as_str().to_owned())
        })
        .collect();
    let mut loaded_cpu = Vec::new();
    let mut sent = 0usize;
    for _ in 0..env.runs() {
        let (from, t) = (cpu_seconds(pid), Instant::now());
        let mut tick = tokio::time::interval(Duration::from_millis(1000 / EVENT_RATE));
        while t.elapsed() < window {
            tick.tick().await;
            let (region, topic) = &topics[sent % topics.len()];
            let update = crate::archival::updates(region, Uuid::nil(), 1).remove(0);
            let _ = producer.inner.send_result(
                rdkafka::producer::FutureRecord::to(topic)
                    .key(&update.key)
                    .payload(&serde_json::to_vec(&update).unwrap()),
            );
            sent += 1;
        }
        loaded_cpu.push(cpu_percent(from, t.elapsed()));
    }
    producer.flush_blocking();
    drop(process);
    Sample {
        ready_s,
        threads,
        rss_mib,
        idle_cpu,
        loaded_cpu,
        connections,
    }
}

pub async fn run(env: &Env) -> Section {
    let sizes: Vec<usize> = if env.quick {
        vec![1, 3]
    } else {
        vec![1, 10, 50, 100]
    };
    let mut section = Section::new(
        "cost",
        "Cost as the topology grows",
        &format!(
            "`mot run` with the persistence role only, serving generated topologies of {sizes:?} \
             regions (every region on the bench's regional cluster, routed to its central cluster): \
             per region three archival agents and three localizers, each its own actor; with \
             `node.shared_consumers` (the default) each kind of archival agent reads every region \
             through one consumer, and the localizers one per source cluster. Measured \
             once the process is ready (`/readyz`: every agent running) and settled: threads and \
             resident memory (/proc), CPU (user + system, % of one core) over {} windows at idle and \
             while {EVENT_RATE} instance updates per second arrive spread over the regions, and \
             established TCP connections to the two Kafka clusters.",
            env.runs()
        ),
    );
    let mut samples = Vec::new();
    for n in sizes.iter().copied() {
        println!("dev/bench:   {n} regions");
        let s = measure(env, n).await;
        section.figure(Figure::new(
            format!("{n} regions: time to ready"),
            "s",
            vec![s.ready_s],
        ));
        section.figure(Figure::new(
            format!("{n} regions: threads"),
            "threads",
            vec![s.threads],
        ));
        section.figure(Figure::new(
            format!("{n} regions: resident memory"),
            "MiB",
            vec![s.rss_mib],
        ));
        section.figure(Figure::new(
            format!("{n} regions: CPU idle"),
            "% of a core",
            s.idle_cpu.clone(),
        ));
        section.figure(Figure::new(
            format!("{n} regions: CPU at {EVENT_RATE} events/s"),
            "% of a core",
            s.loaded_cpu.clone(),
        ));
        section.figure(Figure::new(
            format!("{n} regions: Kafka connections"),
            "connections",
            vec![s.connections],
        ));
        samples.push((n, s));
    }
    if let (Some((n0, first)), Some((n1, last))) = (samples.first(), samples.last()) {
        let per = |a: f64, b: f64| (b - a) / (*n1 as f64 - *n0 as f64);
        section.note(format!(
            "growth per added region ({n0} -> {n1}): {:.1} threads, {:.1} MiB resident, {:.1} Kafka connections, {:.2} % of a core at idle",
            per(first.threads, last.threads),
            per(first.rss_mib, last.rss_mib),
            per(first.connections, last.connections),
            per(crate::report::median(&first.idle_cpu), crate::report::median(&last.idle_cpu)),
        ));
        section.ratio(
            format!("threads, {n1} regions / {n0}"),
            last.threads,
            first.threads,
        );
        section.ratio(
            format!("resident memory, {n1} regions / {n0}"),
            last.rss_mib,
            first.rss_mib,
        );
        section.ratio(
            format!("Kafka connections, {n1} regions / {n0}"),
            last.connections,
            first.connections,
        );
    }
    section
}
