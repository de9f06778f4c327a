//! The `switchyard` binary: parse the command line, set up logging, bind,
//! and hand over to the library.

use clap::Parser;

use std::process::ExitCode;
use switchyard::config::{Cli, Command, Config, LogFormat, EXIT_USAGE};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    let redis_url = cli.redis_url(std::env::var("REDIS_URL").ok().filter(|s| !s.is_empty()));
    // A single-threaded runtime: it runs sync, admin and the accept loop
    // (and every connection with --worker-threads 1); more worker threads
    // bring their own runtimes (see `switchyard::server`). Table builds go
    // to the blocking pool, so they never stall accepting.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match cli.command {
        None | Some(Command::Serve) => {
            let config = match Config::from_cli(&redis_url, &cli) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("switchyard: {e}");
                    return ExitCode::from(EXIT_USAGE as u8);
                }
            };
            let _log_guard = init_logging(cli.serve.log_format);
            runtime.block_on(serve(config, &cli.serve))
        }
        Some(Command::Route { action }) => finish(runtime.block_on(switchyard::cli::route(
            &redis_url,
            &cli.redis.routes_key,
            action,
        ))),
        Some(Command::Status) => {
            finish(runtime.block_on(switchyard::cli::status(&redis_url, &cli.redis.routes_key)))
        }
        Some(Command::Cert { action }) => {
            finish(runtime.block_on(switchyard::tls::cli::cert(&redis_url, &cli.tls, action)))
        }
    }
}

fn finish(result: Result<String, switchyard::cli::CliError>) -> ExitCode {
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchyard: {}", e.message);
            ExitCode::from(e.code as u8)
        }
    }
}

fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    // Logging never blocks a worker thread: lines go through a channel.
    // Its default depth (128,000 lines, allocated up front) costs ~4 MiB of
    // RSS; 8,192 lines absorb any burst this proxy logs (a full channel
    // drops lines rather than blocking).
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(8192)
        .finish(std::io::stdout());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal: a file, a pipe or a log
    // collector gets plain text (tracing-subscriber colours by default).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    guard
}

async fn serve(config: Config, args: &switchyard::config::ServeArgs) -> ExitCode {
    let proxy = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("switchyard: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(1);
        }
    };
    let admin = match tokio::net::TcpListener::bind(args.admin_listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "switchyard: cannot listen on {} (admin): {e}",
                args.admin_listen
            );
            return ExitCode::from(1);
        }
    };
    tracing::info!(
        listen = %proxy.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        admin = %admin.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        redis = %config.sync.redis_url,
        routes_key = %config.sync.routes_key,
        "switchyard starting"
    );
    switchyard::run(config, proxy, admin, shutdown_signal()).await;
    tracing::info!("switchyard stopped");
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
