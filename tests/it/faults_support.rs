//! Helpers for `tests/faults.rs` and `tests/soak.rs` (kept out of
//! `tests/support/`, which other test binaries share): a pooled HTTP client
//! that reports failures instead of panicking, a load loop with per-phase
//! failure counts, any `redis-server` process a test needs (Sentinel, AUTH,
//! TLS, replicas), and the process RSS.
#![allow(dead_code)]

use crate::support::{free_port, patience};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Cap on one request: a hang is a failure, never a stuck test.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A keep-alive client to the proxy (one pool per client, like a real
/// load balancer in front of it).
#[derive(Clone)]
pub struct LoadClient {
    client: Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
}

/// What one request got: status and the `x-backend` header of the test
/// backend that answered (if one did).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub backend: Option<String>,
}

impl LoadClient {
    pub fn new(addr: SocketAddr) -> LoadClient {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(10))
            .build(http);
        LoadClient { client, addr }
    }

    /// `GET /` with `Host: host`; `Err` for a transport error or a timeout.
    pub async fn get(&self, host: &str) -> Result<Answer, String> {
        let req = http::Request::builder()
            .uri(format!("http://{}/", self.addr))
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .expect("request builds");
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| format!("{e:?}"))?;
        let status = resp.status().as_u16();
        let backend = resp
            .headers()
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Read the body to the end so the connection goes back to the pool.
        tokio::time::timeout(REQUEST_TIMEOUT, resp.into_body().collect())
            .await
            .map_err(|_| "body timed out".to_owned())?
            .map_err(|e| format!("body: {e}"))?;
        Ok(Answer { status, backend })
    }
}

/// Counters of a load run, split by phase (the test moves the phase on as
/// its scenario proceeds, e.g. before / during / after an outage).
pub struct LoadStats {
    phase: AtomicUsize,
    sent: [AtomicU64; 4],
    failed: [AtomicU64; 4],
    /// The first few failures, for the assertion message.
    samples: Mutex<Vec<String>>,
}

impl LoadStats {
    fn new() -> LoadStats {
        LoadStats {
            phase: AtomicUsize::new(0),
            sent: Default::default(),
            failed: Default::default(),
            samples: Mutex::new(Vec::new()),
        }
    }

    /// Moves every later request into phase `phase` (0..4).
    pub fn set_phase(&self, phase: usize) {
        self.phase.store(phase, Ordering::SeqCst);
    }

    pub fn sent(&self, phase: usize) -> u64 {
        self.sent[phase].load(Ordering::SeqCst)
    }

    pub fn failed(&self, phase: usize) -> u64 {
        self.failed[phase].load(Ordering::SeqCst)
    }

    pub fn total_sent(&self) -> u64 {
        (0..4).map(|p| self.sent(p)).sum()
    }

    pub fn total_failed(&self) -> u64 {
        (0..4).map(|p| self.failed(p)).sum()
    }

    pub fn samples(&self) -> Vec<String> {
        self.samples.lock().unwrap().clone()
    }

    fn record(&self, failure: Option<String>) {
        let phase = self.phase.load(Ordering::SeqCst);
        self.sent[phase].fetch_add(1, Ordering::SeqCst);
        if let Some(failure) = failure {
            self.failed[phase].fetch_add(1, Ordering::SeqCst);
            let mut samples = self.samples.lock().unwrap();
            if samples.len() < 10 {
                samples.push(format!("phase {phase}: {failure}"));
            }
        }
    }
}

/// A running load: `loops` tasks, each sending requests one after another
/// for `(host, expected backend)` pairs, every `pace`, until `stop()`, or
/// until `max_time` or `max_requests` (per loop) is reached: bounded
/// whatever the test does. Loopback only (the proxy listens on 127.0.0.1).
pub struct Load {
    pub stats: Arc<LoadStats>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(
        addr: SocketAddr,
        hosts: Vec<(String, String)>,
        loops: usize,
        pace: Duration,
        max_time: Duration,
        max_requests: u64,
    ) -> Load {
        let stats = Arc::new(LoadStats::new());
        let stop = CancellationToken::new();
        let hosts = Arc::new(hosts);
        let tasks = (0..loops)
            .map(|n| {
                let (stats, stop, hosts) = (stats.clone(), stop.clone(), hosts.clone());
                tokio::spawn(async move {
                    let client = LoadClient::new(addr);
                    let deadline = tokio::time::Instant::now() + max_time;
                    let mut tick = tokio::time::interval(pace);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    for i in 0..max_requests {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep_until(deadline) => return,
                            _ = tick.tick() => {}
                        }
                        let (host, expected) = &hosts[(i as usize + n) % hosts.len()];
                        let failure = match client.get(host).await {
                            Ok(a) if a.status == 200 && a.backend.as_deref() == Some(expected) => {
                                None
                            }
                            Ok(a) => Some(format!("{host}: {} from {:?}", a.status, a.backend)),
                            Err(e) => Some(format!("{host}: {e}")),
                        };
                        stats.record(failure);
                    }
                })
            })
            .collect();
        Load { stats, stop, tasks }
    }

    /// Stops the loops and waits for requests in flight.
    pub async fn stop(self) -> Arc<LoadStats> {
        self.stop.cancel();
        for task in self.tasks {
            task.await.expect("load loop panicked");
        }
        self.stats
    }
}

/// Any redis-server process a test needs beyond `support::RedisServer`:
/// a replica, a Sentinel, a server with a password or TLS. Listens on
/// 127.0.0.1 only; killed and its directory removed on drop.
pub struct RedisProc {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
    /// Arguments after the port ones, kept for `respawn`.
    args: Vec<String>,
    config_file: Option<PathBuf>,
    /// Extra `redis-cli` arguments (`-a password`).
    cli_auth: Vec<String>,
}

fn proc_dir(port: u16) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-faults-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl RedisProc {
    /// A data server with notifications off and no persistence, plus `args`.
    pub fn start(args: &[&str]) -> RedisProc {
        let port = free_port();
        let mut proc = RedisProc {
            port,
            dir: proc_dir(port),
            child: None,
            args: args.iter().map(|s| s.to_string()).collect(),
            config_file: None,
            cli_auth: Vec::new(),
        };
        proc.spawn();
        proc
    }

    /// A data server whose clients must authenticate with `password`.
    pub fn start_with_password(password: &str, args: &[&str]) -> RedisProc {
        let port = free_port();
        let mut all = vec!["--requirepass", password];
        all.extend_from_slice(args);
        let mut proc = RedisProc {
            port,
            dir: proc_dir(port),
            child: None,
            args: all.iter().map(|s| s.to_string()).collect(),
            config_file: None,
            cli_auth: vec!["-a".into(), password.into(), "--no-auth-warning".into()],
        };
        proc.spawn();
        proc
    }

    /// A Sentinel watching `master_port` as `mymaster` (quorum 1), fast
    /// timeouts so a failover takes about a second or two.
    pub fn sentinel(master_port: u16) -> RedisProc {
        let port = free_port();
        let dir = proc_dir(port);
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor mymaster 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds mymaster 500\n\
                 sentinel failover-timeout mymaster 2000\n",
                dir = dir.display()
            ),
        )
        .unwrap();
        let mut proc = RedisProc {
            port,
            dir,
            child: None,
            args: Vec::new(),
            config_file: Some(conf),
            cli_auth: Vec::new(),
        };
        proc.spawn();
        proc
    }

    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = Command::new("redis-server");
        let log = self.dir.join("redis.log");
        if let Some(conf) = &self.config_file {
            // A Sentinel rewrites its config file; it must come first.
            cmd.arg(conf)
                .arg("--sentinel")
                .args(["--logfile", log.to_str().unwrap()]);
        } else {
            cmd.args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir.to_str().unwrap(),
                "--logfile",
                log.to_str().unwrap(),
                "--notify-keyspace-events",
                "",
            ])
            .args(&self.args);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        self.child = Some(cmd.spawn().expect("redis-server must be installed"));
        let deadline = Instant::now() + patience();
        while Instant::now() < deadline {
            if self.try_cli(&["PING"]).is_some_and(|o| o.trim() == "PONG") {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "redis-server on port {} did not start; log:\n{}",
            self.port,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// SIGKILL, like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(&self.cli_auth)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// One redis-cli command; its raw output.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed on port {}", self.port))
    }

    /// One redis-cli command whose last argument is read from `data`
    /// (`redis-cli -x`): any bytes, any size.
    pub fn cli_stdin(&self, args: &[&str], data: &[u8]) -> String {
        cli_stdin(self.port, &self.cli_auth, args, data)
    }

    pub fn hset(&self, host: &str, value: &str) {
        let out = self.cli(&["HSET", "routes", host, value]);
        assert!(out.trim().parse::<u64>().is_ok(), "HSET failed: {out}");
    }

    /// Raw log of the server, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-cli -x ARGS < data` against `port`.
pub fn cli_stdin(port: u16, auth: &[String], args: &[&str], data: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(auth)
        .arg("-x")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "redis-cli -x {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A private CA and a server certificate for 127.0.0.1 (and localhost),
/// made with the `openssl` command in `dir`: (ca.crt, server.crt, server.key).
pub fn make_test_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl must be installed");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca = vec!["req", "-x509", "-nodes", "-days", "2"];
    ca.extend_from_slice(&ec);
    ca.extend_from_slice(&[
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=switchyard test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&ca);
    let mut csr = vec!["req", "-new", "-nodes"];
    csr.extend_from_slice(&ec);
    csr.extend_from_slice(&[
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&csr);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ]);
    (
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    )
}

/// Resident set size of this process (the proxy runs in-process), in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A counter shared with spawned tasks.
pub fn counter() -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(0))
}
