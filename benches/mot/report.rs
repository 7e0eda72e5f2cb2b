//! Figures, their medians, and the two reports (`BENCHMARKS.md`, `BENCHMARKS.json`).

use serde::Serialize;

/// One measured quantity over several runs.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub unit: String,
    pub runs: Vec<f64>,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Figure {
    pub fn new(name: impl Into<String>, unit: impl Into<String>, runs: Vec<f64>) -> Self {
        let mut sorted = runs.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let median = median(&sorted);
        Self {
            name: name.into(),
            unit: unit.into(),
            median,
            min: sorted.first().copied().unwrap_or(f64::NAN),
            max: sorted.last().copied().unwrap_or(f64::NAN),
            runs,
        }
    }

    /// Whether it holds a measurement.
    pub fn measured(&self) -> bool {
        !self.runs.is_empty() && self.runs.iter().all(|v| v.is_finite())
    }
}

/// The value at `p` (0.0-1.0) of `values` (nearest rank); NaN when there is none.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    match sorted.len() {
        0 => f64::NAN,
        n => sorted[((n as f64 - 1.0) * p).round() as usize],
    }
}

/// The median of `values` (the mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// A ratio of two figures' medians, measured in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub name: String,
    pub value: f64,
}

/// One benchmark's results.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Section {
    pub id: String,
    pub title: String,
    pub method: String,
    pub figures: Vec<Figure>,
    pub ratios: Vec<Ratio>,
    pub notes: Vec<String>,
}

impl Section {
    pub fn new(id: &str, title: &str, method: &str) -> Self {
        Self {
            id: id.into(),
            title: title.into(),
            method: method.into(),
            ..Default::default()
        }
    }

    pub fn figure(&mut self, figure: Figure) -> f64 {
        let median = figure.median;
        self.figures.push(figure);
        median
    }

    pub fn ratio(&mut self, name: impl Into<String>, numerator: f64, denominator: f64) {
        self.ratios.push(Ratio {
            name: name.into(),
            value: numerator / denominator,
        });
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }
}

/// The machine the figures were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_gib: f64,
    pub cpu: String,
    pub kernel: String,
    pub rustc: String,
    pub kafka: String,
    pub cassandra: String,
    pub profile: String,
    pub mode: String,
    pub date: String,
}

impl Machine {
    pub fn detect(quick: bool) -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let meminfo = read("/proc/meminfo");
        let mem_kib: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or("")
            .trim()
            .to_owned();
        let output = |cmd: &str, args: &[&str]| {
            std::process::Command::new(cmd)
                .args(args)
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default()
        };
        // The version a pom pins: its first `<x.version>` property.
        let pom_version = |kind: &str| {
            let pom = read(&format!("dev/maven/{kind}/pom.xml"));
            pom.split(&format!("<{kind}.version>"))
                .nth(1)
                .and_then(|rest| rest.split('<').next())
                .unwrap_or("?")
                .to_owned()
        };
        Self {
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            cpu,
            kernel: output("uname", &["-r"]),
            rustc: output("rustc", &["--version"]),
            kafka: pom_version("kafka"),
            cassandra: pom_version("cassandra"),
            profile: if cfg!(debug_assertions) {
                "dev (unoptimised)".into()
            } else {
                "release".into()
            },
            mode: if quick { "quick".into() } else { "full".into() },
            date: output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        }
    }
}

#[derive(Serialize)]
struct Json<'a> {
    machine: &'a Machine,
    sections: &'a [Section],
    profile: &'a str,
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    if a >= 1000.0 {
        let s = format!("{:.0}", v);
        // thousands separators
        let (sign, digits) = s.split_at(if v < 0.0 { 1 } else { 0 });
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Writes the Markdown report and its JSON twin.
pub fn write(
    dir: &std::path::Path,
    machine: &Machine,
    sections: &[Section],
    profile: &str,
) -> std::io::Result<()> {
    let mut md = String::new();
    md.push_str("# mot benchmarks\n\n");
    md.push_str(
        "Written by `dev/bench` (do not edit by hand); `BENCHMARKS.json` holds the same figures.\n",
    );
    md.push_str(
        "Every figure is the median of its runs, with min and max; every ratio compares medians\n",
    );
    md.push_str("measured in the same run against real Kafka and Cassandra on this machine.\n\n");
    md.push_str("## Machine\n\n");
    md.push_str(&format!(
        "| cores | memory | cpu | kernel | rustc | Kafka | Cassandra | build | mode | date |\n\
         |---|---|---|---|---|---|---|---|---|---|\n\
         | {} | {} GiB | {} | {} | {} | {} | {} | {} | {} | {} |\n\n",
        machine.cores,
        machine.memory_gib,
        machine.cpu,
        machine.kernel,
        machine.rustc,
        machine.kafka,
        machine.cassandra,
        machine.profile,
        machine.mode,
        machine.date
    ));
    md.push_str(
        "Kafka (single-node KRaft clusters, 384 MiB heap) and Cassandra (one node, 768 MiB heap)\n",
    );
    md.push_str(
        "share the two cores with mot and with the load generators: figures are for comparison\n",
    );
    md.push_str("within a run, not capacity planning.\n\n");
    for (n, s) in sections.iter().enumerate() {
        md.push_str(&format!("## {}. {}\n\n{}\n\n", n + 1, s.title, s.method));
        md.push_str(
            "| figure | median | min | max | unit | runs |\n|---|---:|---:|---:|---|---:|\n",
        );
        for f in &s.figures {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                f.name,
                fmt(f.median),
                fmt(f.min),
                fmt(f.max),
                f.unit,
                f.runs.len()
            ));
        }
        if !s.ratios.is_empty() {
            md.push_str("\n| ratio | value |\n|---|---:|\n");
            for r in &s.ratios {
                md.push_str(&format!("| {} | {:.2} |\n", r.name, r.value));
            }
        }
        if !s.notes.is_empty() {
            md.push('\n');
            for note in &s.notes {
                md.push_str(&format!("- {note}\n"));
            }
        }
        md.push('\n');
    }
    if !profile.is_empty() {
        md.push_str("## Profile\n\n");
        md.push_str(profile);
        md.push('\n');
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("BENCHMARKS.md"), md)?;
    let json = serde_json::to_string_pretty(&Json {
        machine,
        sections,
        profile,
    })
    .map_err(std::io::Error::other)?;
    std::fs::write(dir.join("BENCHMARKS.json"), json + "\n")
}
