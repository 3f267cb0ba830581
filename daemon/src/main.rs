//! `voxperfd`: parse the configuration, set up logging, build the state, serve until SIGINT or
//! SIGTERM. Everything else lives in the library (`voxperfd::run`).

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;
use voxperfd::config::{Config, LogFormat};
use voxperfd::{AppState, run};

/// voxperf's companion daemon: a two-level cache (L1 in process, L2 Redis) invalidated by
/// Postgres NOTIFY, with health and resilience APIs.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Validate the configuration from the environment, print a summary and exit: status 0 when
    /// valid, 1 when not.
    #[arg(long)]
    check_config: bool,
}

fn main() -> std::process::ExitCode {
    let command = Cli::command().after_help(Config::environment_help());
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("voxperfd: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if cli.check_config {
        println!("{}", config.summary());
        if config.gateway.enabled() {
            match voxperfd::gateway::check(&config.gateway, &config.breaker) {
                Ok(table) => print!("gateway:\n{table}"),
                Err(e) => {
                    eprintln!("voxperfd: invalid gateway routes: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            }
        }
        println!("configuration OK");
        return std::process::ExitCode::SUCCESS;
    }
    init_tracing(&config);
    match serve(config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("voxperfd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(config: &Config) {
    // The filter was validated with the configuration.
    let filter = EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn serve(config: Config) -> anyhow::Result<()> {
    tracing::info!("configuration:\n{}", config.summary());
    // The `metrics` facade's recorder, before anything records (the cache does from the start).
    voxperfd::monitor::prometheus::recorder();
    let addr = config.http.listen;
    let state = AppState::new(config).context("building the application state")?;
    let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr} (VOXPERF_LISTEN)"))?;
    tracing::info!("voxperfd listening on http://{addr}/ (API docs: http://{addr}/api/openapi.json)");
    if let Some(gateway) = &state.gateway {
        tracing::info!("gateway: every other path is proxied to the application; routes:\n{}", gateway.describe());
    }
    run(listener, state, shutdown_signal()).await.context("serving HTTP")?;
    tracing::info!("voxperfd stopped");
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
