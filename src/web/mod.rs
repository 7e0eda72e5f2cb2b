//! The service layer's HTTP API (actix-web): one file per route.

mod health;

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};

/// Builds the API server on an already bound listener (port 0 in tests). Signals are handled by
/// the daemon, which stops the server gracefully through its handle.
pub fn server(listener: TcpListener) -> std::io::Result<Server> {
    let server = HttpServer::new(|| App::new().route("/healthz", web::get().to(health::healthz)))
        .workers(2)
        .disable_signals()
        .shutdown_timeout(10)
        .listen(listener)?
        .run();
    Ok(server)
}
