//! The `switchyard` binary: parse the command line, set up logging and
//! signals, bind, and hand over to the library (or run a command).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use switchyard::cli::{self, Context, Exit};
use switchyard::config::{Cli, Command, Config, LogFormat, ServeArgs};
use switchyard::reload::Reload;
use tracing_subscriber::{reload, EnvFilter, Registry};

fn main() -> ExitCode {
    let cli = match Cli::parse_checked() {
        Ok(cli) => cli,
        Err(e) => {
            let exit = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Success // --help, --version
            };
            let _ = e.print();
            return exit.into();
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
    let result = match cli.command {
        None | Some(Command::Serve(_)) => return serve_main(&runtime, &cli, &redis_url),
        Some(Command::Route { action }) => runtime.block_on(async {
            let ctx = Context::new(&redis_url, &cli.redis)?;
            cli::route(&ctx, action, &mut std::io::stdout()).await
        }),
        Some(Command::Status { json }) => runtime.block_on(async {
            let ctx = Context::new(&redis_url, &cli.redis)?;
            cli::status(&ctx, json, &mut std::io::stdout()).await
        }),
        Some(Command::Cert { action }) => runtime.block_on(async {
            let ctx = Context::new(&redis_url, &cli.redis)?;
            switchyard::tls::cli::cert(&ctx, &cli.tls, action, &mut std::io::stdout()).await
        }),
    };
    match result {
        Ok(()) => Exit::Success.into(),
        Err(e) => {
            eprintln!("switchyard: {}", e.message);
            e.exit.into()
        }
    }
}

fn serve_main(runtime: &tokio::runtime::Runtime, cli: &Cli, redis_url: &str) -> ExitCode {
    let args = cli.serve_args();
    let config = match Config::from_cli(redis_url, cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("switchyard: {e}");
            return Exit::Usage.into();
        }
    };
    let log_filter = match LogFilter::initial(args.log_filter_file.as_deref()) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("switchyard: {e}");
            return Exit::Usage.into();
        }
    };
    let (_log_guard, log_filter) = init_logging(args.log_format, log_filter);
    runtime.block_on(serve(config, args, log_filter))
}

/// The log filter and where it comes from: the `--log-filter-file` (read
/// again on SIGHUP) or `RUST_LOG` (read at start only: a running process's
/// environment cannot change).
struct LogFilter {
    file: Option<PathBuf>,
    filter: EnvFilter,
    handle: Option<reload::Handle<EnvFilter, Registry>>,
}

impl LogFilter {
    fn initial(file: Option<&Path>) -> Result<LogFilter, String> {
        let filter = match file {
            Some(path) => read_filter_file(path)?,
            None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        };
        Ok(LogFilter {
            file: file.map(Path::to_owned),
            filter,
            handle: None,
        })
    }

    /// Re-reads the file, if there is one; a bad file keeps the filter in use.
    fn reload(&self) {
        let (Some(path), Some(handle)) = (&self.file, &self.handle) else {
            return;
        };
        match read_filter_file(path) {
            Ok(filter) => {
                let shown = filter.to_string();
                match handle.reload(filter) {
                    Ok(()) => {
                        tracing::info!(filter = %shown, file = %path.display(), "log filter reloaded")
                    }
                    Err(e) => tracing::error!(error = %e, "log filter not reloaded"),
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "log filter not reloaded; keeping the current one")
            }
        }
    }
}

fn read_filter_file(path: &Path) -> Result<EnvFilter, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --log-filter-file {}: {e}", path.display()))?;
    // One directive list; lines and `#` comments are allowed for people.
    let directives: Vec<&str> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect();
    EnvFilter::builder()
        .parse(directives.join(","))
        .map_err(|e| format!("invalid log filter in {}: {e}", path.display()))
}

fn init_logging(
    format: LogFormat,
    mut log_filter: LogFilter,
) -> (tracing_appender::non_blocking::WorkerGuard, LogFilter) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    // Logging never blocks a worker thread: lines go through a channel.
    // Its default depth (128,000 lines, allocated up front) costs ~4 MiB of
    // RSS; 8,192 lines absorb any burst this proxy logs (a full channel
    // drops lines rather than blocking).
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(8192)
        .finish(std::io::stdout());
    let filter = std::mem::replace(&mut log_filter.filter, EnvFilter::new("off"));
    let (filter, handle) = reload::Layer::new(filter);
    log_filter.handle = Some(handle);
    // Colours only for a person at a terminal: a file, a pipe or a log
    // collector gets plain text (tracing-subscriber colours by default).
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_writer(writer);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    tracing_subscriber::registry().with(filter).with(fmt).init();
    (guard, log_filter)
}

async fn serve(config: Config, args: &ServeArgs, log_filter: LogFilter) -> ExitCode {
    // Signals first: from here on SIGHUP reloads instead of killing.
    let reload = Reload::new();
    let shutdown = match Signals::install(reload.clone(), log_filter) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("switchyard: cannot install signal handlers: {e}");
            return Exit::Failure.into();
        }
    };
    let proxy = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("switchyard: cannot listen on {}: {e}", args.listen);
            return Exit::Failure.into();
        }
    };
    let admin = match tokio::net::TcpListener::bind(args.admin_listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "switchyard: cannot listen on {} (admin): {e}",
                args.admin_listen
            );
            return Exit::Failure.into();
        }
    };
    let tls = match args.tls_listen {
        None => None,
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("switchyard: cannot listen on {addr} (TLS): {e}");
                return Exit::Failure.into();
            }
        },
    };
    tracing::info!(
        tls_listen = ?args.tls_listen,
        listen = %proxy.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        admin = %admin.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        redis = %config.sync.redis_url,
        routes_key = %config.sync.routes_key,
        replica_id = %config.sync.replica_id,
        "switchyard starting"
    );
    let listeners = switchyard::Listeners { proxy, admin, tls };
    switchyard::run_with(config, listeners, shutdown.stopped(), reload).await;
    tracing::info!("switchyard stopped");
    Exit::Success.into()
}

/// The process's signals: SIGTERM and SIGINT stop (gracefully), SIGHUP
/// re-reads what can be re-read and never stops anything.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install(reload: Reload, log_filter: LogFilter) -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate())?;
        let int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        // For the life of the process, draining included: tokio never
        // gives a signal back to its default action once it handled it.
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let generation = reload.request();
                tracing::info!(generation, "SIGHUP: reloading the log filter and TLS files");
                log_filter.reload();
            }
        });
        Ok(Signals { term, int })
    }

    /// Resolves at the first SIGTERM or SIGINT.
    async fn stopped(mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = self.int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
}
