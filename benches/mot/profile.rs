//! A CPU profile of the bench process while one benchmark runs: `perf record` sampling this
//! process, then the symbols with the most samples (self time). Full runs only; when perf is
//! missing or not permitted the report says so.

use std::process::{Child, Command, Stdio};

pub struct Profile {
    label: String,
    data: std::path::PathBuf,
    child: Option<Child>,
}

impl Profile {
    /// Starts sampling this process (nothing in quick mode).
    pub fn start(label: &str, quick: bool) -> Self {
        let data = std::env::temp_dir().join(format!(
            "mot-bench-{}-{}.perf",
            std::process::id(),
            label.replace(' ', "-")
        ));
        let child = (!quick)
            .then(|| {
                Command::new("perf")
                    .args(["record", "-F", "1999", "-p"])
                    .arg(std::process::id().to_string())
                    .arg("-o")
                    .arg(&data)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .ok()
            })
            .flatten();
        // perf needs a moment to attach.
        std::thread::sleep(std::time::Duration::from_millis(300));
        Self {
            label: label.into(),
            data,
            child,
        }
    }

    /// Stops sampling; appends the top symbols to `out` (Markdown).
    pub fn finish(mut self, out: &mut String) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let _ = child.wait();
        let report = Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "--sort",
                "dso,symbol",
                "--percent-limit",
                "1.5",
                "-i",
            ])
            .arg(&self.data)
            .stderr(Stdio::null())
            .output();
        let _ = std::fs::remove_file(&self.data);
        out.push_str(&format!("### {}\n\n", self.label));
        match report {
            Ok(r) if r.status.success() => {
                let text = String::from_utf8_lossy(&r.stdout);
                let lines: Vec<&str> = text
                    .lines()
                    .filter(|l| {
                        !l.trim().is_empty() && (!l.starts_with('#') || l.contains("Samples"))
                    })
                    .take(30)
                    .collect();
                out.push_str("```\n");
                out.push_str(&lines.join("\n"));
                out.push_str("\n```\n\n");
            }
            _ => out.push_str("perf could not record here (not installed or not permitted).\n\n"),
        }
    }
}
