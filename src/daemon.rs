//! `mot run`: the long-running process. Starts the roles the config names, then waits for
//! SIGINT or SIGTERM and stops them gracefully.

use std::net::TcpListener;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Config, Role};
use crate::web;

/// Runs until SIGINT or SIGTERM. Must be called inside an actix system.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let mut web_server = None;
    if config.runs(Role::Service) {
        let listener = TcpListener::bind(&config.web.listen)
            .with_context(|| format!("cannot listen on web.listen = {}", config.web.listen))?;
        let addr = listener.local_addr()?;
        let server = web::server(listener).context("cannot start the api")?;
        let handle = server.handle();
        let task = actix_web::rt::spawn(server);
        tracing::info!(%addr, "api listening");
        web_server = Some((handle, task));
    }
    tracing::info!(roles = ?config.node.roles, "mot running");

    let signal_name = wait_for_stop_signal().await?;
    tracing::info!(signal = signal_name, "stopping");
    let deadline = std::time::Duration::from_secs(config.node.shutdown_timeout_secs);
    let stop = async {
        if let Some((handle, task)) = web_server {
            handle.stop(true).await;
            let _ = task.await;
        }
    };
    if tokio::time::timeout(deadline, stop).await.is_err() {
        tracing::warn!(
            timeout_secs = deadline.as_secs(),
            "graceful stop took too long; exiting"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_stop_signal() -> anyhow::Result<&'static str> {
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
