//! The proxy under test, in-process ([`ProxyHandle`]: `switchyard::run` on
//! ephemeral ports, stopped on drop) or as the built binary
//! ([`ProxyProcess`], killed on drop), both asked through [`Endpoints`].

use super::backend::Backend;
use super::client::{HttpClient, HttpResponse};
use super::redis::RedisServer;
use super::{free_port, patience};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use switchyard::config::Config;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A test config: fast ping and backoff, periodic resync effectively off
/// (an hour) so that tests prove changes arrive by notification, and the
/// removal guard off (tests of other areas delete their last route; the
/// guard's own tests turn it on). Built without reading the process
/// environment (`Config::new`).
pub fn test_config(redis_url: &str) -> Config {
    let mut config = Config::new(redis_url).expect("valid config");
    config.sync.resync_interval = Duration::from_secs(3600);
    config.sync.max_removal_fraction = 1.0;
    let tuning = &mut config.sync.tuning;
    tuning.ping_interval = Duration::from_millis(200);
    tuning.backoff_min = Duration::from_millis(20);
    tuning.backoff_max = Duration::from_millis(200);
    tuning.command_timeout = Duration::from_secs(2);
    config.sync.status_interval = Duration::from_millis(500);
    config.sync.replica_id = format!("test-{}", free_port());
    config.proxy.access_log = false;
    config.server.shutdown_timeout = Duration::from_secs(5);
    config
}

/// The proxy's two addresses, and what a test asks them.
#[derive(Debug, Clone, Copy)]
pub struct Endpoints {
    /// Proxied traffic.
    pub addr: SocketAddr,
    /// `/readyz`, `/routes`, `/metrics`.
    pub admin: SocketAddr,
}

impl Endpoints {
    /// Passes both addresses to the binary as `SWITCHYARD_LISTEN` and
    /// `SWITCHYARD_ADMIN_LISTEN` (so process tests also exercise the
    /// environment).
    pub fn set_env(&self, cmd: &mut Command) {
        cmd.env("SWITCHYARD_LISTEN", self.addr.to_string())
            .env("SWITCHYARD_ADMIN_LISTEN", self.admin.to_string());
    }

    /// `GET path` with `Host: host` through the proxy; panics on a
    /// transport error.
    pub async fn get(&self, host: &str, path: &str) -> HttpResponse {
        super::http_get(self.addr, host, path).await
    }

    /// True when `host` is answered 200 by the echo backend called `backend`.
    pub async fn serves(&self, host: &str, backend: &str) -> bool {
        let r = self.get(host, "/").await;
        r.status == 200 && r.backend().as_deref() == Some(backend)
    }

    /// The echo backend that answered `GET /` for `host`, or the status if
    /// none did.
    pub async fn answered_by(&self, host: &str) -> Result<String, u16> {
        let r = self.get(host, "/").await;
        r.backend().ok_or(r.status)
    }

    /// `GET path` on the admin port; `Err` while it does not answer.
    pub async fn try_admin_get(&self, path: &str) -> Result<HttpResponse, String> {
        HttpClient::new(self.admin).try_get("localhost", path).await
    }

    /// `GET path` on the admin port; panics on a transport error.
    pub async fn admin_get(&self, path: &str) -> HttpResponse {
        let admin = self.admin;
        self.try_admin_get(path)
            .await
            .unwrap_or_else(|e| panic!("admin {admin} {path}: {e}"))
    }

    /// `/readyz`: status and JSON details; `(0, Null)` while the admin
    /// port does not answer (a process still starting, or gone).
    pub async fn readyz(&self) -> (u16, serde_json::Value) {
        match self.try_admin_get("/readyz").await {
            Ok(r) => (r.status, r.json()),
            Err(_) => (0, serde_json::Value::Null),
        }
    }

    /// `/readyz` says 200.
    pub async fn ready(&self) -> bool {
        self.readyz().await.0 == 200
    }

    /// Waits (within patience) until `/readyz` says 200.
    pub async fn wait_ready(&self) {
        assert_eventually!(
            self.ready().await,
            "proxy never became ready: {:?}",
            self.readyz().await
        );
    }

    /// `/routes` as JSON.
    pub async fn routes(&self) -> serde_json::Value {
        self.admin_get("/routes").await.json()
    }

    /// The value of a metric line (exact name with labels), 0 if absent.
    pub async fn metric(&self, name_with_labels: &str) -> f64 {
        let text = self.admin_get("/metrics").await.body;
        text.lines()
            .find_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                (name == name_with_labels).then(|| value.parse().ok())?
            })
            .unwrap_or(0.0)
    }
}

/// The real proxy, in-process on ephemeral ports, stopped on drop.
pub struct ProxyHandle {
    endpoints: Endpoints,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::ops::Deref for ProxyHandle {
    type Target = Endpoints;

    fn deref(&self) -> &Endpoints {
        &self.endpoints
    }
}

impl ProxyHandle {
    /// Starts `switchyard::run` with `config`; returns at once.
    pub async fn start(config: Config) -> ProxyHandle {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoints = Endpoints {
            addr: listener.local_addr().unwrap(),
            admin: admin.local_addr().unwrap(),
        };
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(switchyard::run(config, listener, admin, async {
            let _ = rx.await;
        }));
        ProxyHandle {
            endpoints,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Starts the proxy and waits until it is ready (its first table loaded).
    pub async fn start_ready(config: Config) -> ProxyHandle {
        let proxy = ProxyHandle::start(config).await;
        proxy.wait_ready().await;
        proxy
    }

    /// `HSET routes host backend` on `redis`, then a ready proxy with
    /// [`test_config`]: the prologue of a test about one backend's bytes.
    pub async fn start_routing(redis: &RedisServer, host: &str, backend: &Backend) -> ProxyHandle {
        redis.hset(host, &backend.target());
        ProxyHandle::start_ready(test_config(&redis.url())).await
    }

    /// Sends the shutdown signal and waits for `run` to return.
    pub async fn shutdown(mut self) {
        self.begin_shutdown();
        self.wait_stopped().await;
    }

    /// Sends the shutdown signal (new connections are refused from now on).
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits (30 s at most) for `run` to return.
    pub async fn wait_stopped(&mut self) {
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("proxy did not stop")
                .unwrap();
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

/// The built `switchyard` binary, with no `SWITCHYARD_*`, `REDIS_URL` or
/// `RUST_LOG` variable of the developer's environment: a test sets what it
/// means.
pub fn switchyard_binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    for (name, _) in std::env::vars_os() {
        let name_str = name.to_string_lossy();
        if name_str.starts_with("SWITCHYARD_") || name_str == "REDIS_URL" || name_str == "RUST_LOG"
        {
            cmd.env_remove(&name);
        }
    }
    cmd
}

/// The binary serving on free ports, its stdout lines on a channel (or its
/// log in a file); killed on drop.
pub struct ProxyProcess {
    endpoints: Endpoints,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl std::ops::Deref for ProxyProcess {
    type Target = Endpoints;

    fn deref(&self) -> &Endpoints {
        &self.endpoints
    }
}

impl ProxyProcess {
    /// Starts the binary with its addresses in `SWITCHYARD_LISTEN` and
    /// `SWITCHYARD_ADMIN_LISTEN` and its stdout lines on a channel;
    /// `configure` adds flags and environment (the Redis URL at least).
    pub fn start(configure: impl FnOnce(&mut Command)) -> ProxyProcess {
        ProxyProcess::start_with(Stdio::piped(), |cmd, at| {
            at.set_env(cmd);
            configure(cmd);
        })
    }

    /// Starts the binary with its stdout to `stdout` (`Stdio::piped()`: its
    /// lines on the channel); `configure` is given the two free addresses
    /// to pass as it likes (flags after `serve`, or [`Endpoints::set_env`]).
    pub fn start_with(
        stdout: Stdio,
        configure: impl FnOnce(&mut Command, Endpoints),
    ) -> ProxyProcess {
        let endpoints = Endpoints {
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
        };
        let mut cmd = switchyard_binary();
        cmd.stdout(stdout).stderr(Stdio::null());
        configure(&mut cmd, endpoints);
        let mut child = cmd.spawn().expect("the switchyard binary starts");
        let (tx, lines) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        ProxyProcess {
            endpoints,
            child,
            lines,
        }
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends signal `name` (`TERM`, `INT`) to the process.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Waits for the process to exit, within patience.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + patience();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "process did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The next stdout line that satisfies `pred`, within patience, and
    /// every line read up to and including it.
    pub fn wait_line(&self, pred: impl Fn(&str) -> bool) -> (Option<String>, Vec<String>) {
        let deadline = Instant::now() + patience();
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.lines.recv_timeout(left) else {
                break;
            };
            let found = pred(&line);
            seen.push(line);
            if found {
                return (seen.last().cloned(), seen);
            }
        }
        (None, seen)
    }

    /// [`ProxyProcess::wait_line`] for JSON lines: the first that satisfies
    /// `pred`, and every JSON line read up to and including it.
    pub fn wait_json_line(
        &self,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> (Option<serde_json::Value>, Vec<serde_json::Value>) {
        let json = |line: &str| serde_json::from_str::<serde_json::Value>(line).ok();
        let (found, seen) = self.wait_line(|line| json(line).is_some_and(|v| pred(&v)));
        (
            found.as_deref().and_then(json),
            seen.iter().filter_map(|line| json(line)).collect(),
        )
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
