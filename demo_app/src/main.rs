//! `voxlink-demo`: read the configuration from the environment, set up logging, serve until
//! SIGINT or SIGTERM. Everything else lives in the library (`voxlink_demo::serve`).

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;
use voxlink_demo::db::Db;
use voxlink_demo::{AppState, serve};

/// Where the API listens when `VOXLINK_LISTEN` is not set: loopback, the port of the
/// development servers the demo is usually compared with.
const DEFAULT_LISTEN: &str = "127.0.0.1:3000";

#[derive(Debug)]
struct Config {
    /// `DATABASE_URL` (required), e.g. `postgres://postgres@127.0.0.1:28815/voxperf`.
    database: tokio_postgres::Config,
    /// `VOXLINK_LISTEN`.
    listen: SocketAddr,
}

impl Config {
    fn from_env() -> anyhow::Result<Self> {
        let url = std::env::var("DATABASE_URL")
            .context("DATABASE_URL is not set (e.g. postgres://postgres@127.0.0.1:28815/voxperf)")?;
        let database = url.parse().context("DATABASE_URL is not a valid Postgres connection string")?;
        let listen = std::env::var("VOXLINK_LISTEN").unwrap_or_else(|_| DEFAULT_LISTEN.to_owned());
        let listen = listen.parse().with_context(|| format!("VOXLINK_LISTEN={listen:?} is not an ADDRESS:PORT"))?;
        Ok(Self { database, listen })
    }
}

fn main() -> std::process::ExitCode {
    // Logs go to stderr: stdout carries only the "listening" line, which scripts wait for.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    match Config::from_env().and_then(run) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("voxlink-demo: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run(config: Config) -> anyhow::Result<()> {
    let state = AppState::new(Db::new(config.database).context("setting up the Postgres pool")?);
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {} (VOXLINK_LISTEN)", config.listen))?;
    // The bound address, not the configured one: they differ with port 0.
    println!("voxlink-demo listening on http://{}", listener.local_addr()?);
    serve(listener, state, shutdown_signal()).await.context("serving HTTP")?;
    tracing::info!("voxlink-demo stopped");
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
