//! `--wait` benchmark, runnable alone (`cargo run --release --example
//! wait`; needs `redis-server` on the PATH): with three replicas, how long
//! after the last replica serves a change does `route set --wait` return
//! (its overshoot), and what does Redis spend while a wait waits.
//!
//! Everything runs here: a private redis-server on a free port, two
//! backends, three replicas (each on a thread and runtime of its own, as
//! separate processes would be) and the command itself, called in-process
//! (`switchyard::cli::route`, what the binary runs) so that process start
//! is not timed. A poller thread asks every replica in turn, with pauses
//! of `--poll-interval-us`, until each serves the new backend; the time
//! the last one first did is the reference. Overshoot = the wait's return
//! minus that time; it cannot be measured finer than one polling round
//! (printed as `poll_*`).
//!
//! Redis CPU (`INFO cpu`, user + sys) is measured over two equal windows:
//! idle (replicas only refresh their registry entries), and a wait that
//! cannot finish (a registry entry that never catches up) running
//! throughout; the difference is what the wait costs.
//!
//! Targets (issue 28): overshoot ≤ 5 ms; Redis CPU of a wait ≤ 1 %.

#[path = "common.rs"]
mod common;

use clap::Parser;
use common::{quantile, Http};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use switchyard::cli::{self, Context, Exit};
use switchyard::config::{Config, RedisArgs, RouteAction, WaitArgs};

#[derive(Parser)]
struct Args {
    /// Measured changes.
    #[arg(long, default_value_t = 200)]
    changes: usize,
    /// Unmeasured changes first (a freshly started VM is slow to wake).
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Pause between polling rounds (µs).
    #[arg(long, default_value_t = 100)]
    poll_interval_us: u64,
    /// Length of each Redis CPU window (s).
    #[arg(long, default_value_t = 5)]
    cpu_window_s: u64,
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A private redis-server, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl RedisServer {
    fn start() -> RedisServer {
        let port = free_addr().port();
        let dir = std::env::temp_dir().join(format!("switchyard-wait-bench-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--dir", dir.to_str().unwrap()])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be on the PATH");
        let server = RedisServer { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.redis().is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn redis(&self) -> std::io::Result<common::Redis> {
        common::Redis::connect(&format!("127.0.0.1:{}", self.port))
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn cmd(&self, args: &[&str]) -> String {
        self.redis().unwrap().cmd_str(args).unwrap().text()
    }

    /// Redis's CPU time so far (user + sys), in seconds.
    fn cpu_seconds(&self) -> f64 {
        let info = self.redis().unwrap().info("cpu").unwrap();
        ["used_cpu_user:", "used_cpu_sys:"]
            .iter()
            .filter_map(|k| {
                info.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .sum()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A keep-alive HTTP backend answering `200` with `X-Backend: <name>`.
fn start_backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = format!("HTTP/1.1 200 OK\r\nX-Backend: {name}\r\nContent-Length: 2\r\n\r\nok");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let answer = answer.clone();
            std::thread::spawn(move || serve_backend(stream, answer.as_bytes()));
        }
    });
    addr
}

fn serve_backend(stream: TcpStream, answer: &[u8]) {
    let _ = stream.set_nodelay(true);
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        // Requests without bodies: a head ends with an empty line.
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => {
                if writer.write_all(answer).is_err() {
                    return;
                }
            }
            Ok(_) => {}
        }
    }
}

/// A replica on a thread and current-thread runtime of its own.
fn start_replica(redis_url: &str, id: &str) -> SocketAddr {
    let mut config = Config::new(redis_url).unwrap();
    config.sync.replica_id = id.into();
    config.proxy.access_log = false;
    config.server.worker_threads = 1;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            admin.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let admin = tokio::net::TcpListener::from_std(admin).unwrap();
            switchyard::run(config, listener, admin, std::future::pending()).await;
        });
    });
    addr
}

/// Polls every replica until each serves `want`; returns when the last
/// one first did, and how long the polling rounds took.
fn poll_until_all_serve(
    clients: &mut [Http],
    want: &str,
    pause: Duration,
) -> (Instant, Vec<Duration>) {
    let mut served = vec![false; clients.len()];
    let mut rounds = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let round = Instant::now();
        for (c, done) in clients.iter_mut().zip(&served) {
            if !done {
                c.send_get("app.bench.test", "/").unwrap();
            }
        }
        for (c, done) in clients.iter_mut().zip(served.iter_mut()) {
            if !*done {
                let answer = c.answer().unwrap();
                *done = answer.backend.as_deref() == Some(want);
            }
        }
        let now = Instant::now();
        rounds.push(now - round);
        if served.iter().all(|d| *d) {
            return (now, rounds);
        }
        assert!(now < deadline, "replicas never served {want}");
        std::thread::sleep(pause);
    }
}

fn set_with_wait(host: &str, backend: &str, timeout: Duration) -> RouteAction {
    RouteAction::Set {
        host: host.into(),
        backends: backend.into(),
        wait: WaitArgs {
            wait: Some(timeout),
            timeout: None,
            allow_no_replicas: false,
        },
    }
}

fn ms(d: f64) -> String {
    format!("{:.2}", d * 1000.0)
}

fn main() {
    let args = Args::parse();
    let redis = RedisServer::start();
    let url = redis.url();
    let backends = [
        ("blue", start_backend("blue")),
        ("green", start_backend("green")),
    ];
    redis.cmd(&[
        "HSET",
        "routes",
        "app.bench.test",
        &backends[0].1.to_string(),
    ]);
    let replicas: Vec<SocketAddr> = ["r1", "r2", "r3"]
        .iter()
        .map(|id| start_replica(&url, id))
        .collect();
    let mut clients: Vec<Http> = replicas.iter().map(|a| Http::new(&a.to_string())).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ctx = Context::new(
        &url,
        &RedisArgs {
            redis_url: None,
            routes_key: "routes".into(),
        },
    )
    .unwrap();
    // Ready: every replica registered and serving.
    let deadline = Instant::now() + Duration::from_secs(30);
    while redis.cmd(&["HLEN", "routes:replicas"]) != "3"
        || !clients
            .iter_mut()
            .all(|c| c.get("app.bench.test", "/").is_ok_and(|a| a.status == 200))
    {
        assert!(Instant::now() < deadline, "replicas never ready");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Overshoot: the poller thread watches while this thread waits.
    let (to_poller, poller_rx) = mpsc::channel::<&'static str>();
    let (poller_tx, from_poller) = mpsc::channel::<(Instant, Vec<Duration>)>();
    let pause = Duration::from_micros(args.poll_interval_us);
    std::thread::spawn(move || {
        for want in poller_rx {
            poller_tx
                .send(poll_until_all_serve(&mut clients, want, pause))
                .unwrap();
        }
    });
    let mut overshoot = Vec::new();
    let mut wait_took = Vec::new();
    let mut rounds = Vec::new();
    for i in 0..args.warmup + args.changes {
        let (name, addr) = backends[(i + 1) % 2];
        to_poller.send(name).unwrap();
        let started = Instant::now();
        let action = set_with_wait("app.bench.test", &addr.to_string(), Duration::from_secs(10));
        let mut out = Vec::new();
        runtime
            .block_on(cli::route(&ctx, action, &mut out))
            .unwrap_or_else(|e| panic!("change {i}: {}", e.message));
        let returned = Instant::now();
        let (last_served, polled) = from_poller.recv().unwrap();
        assert!(String::from_utf8_lossy(&out).contains("live on 3 replica(s)"));
        if i >= args.warmup {
            overshoot.push((returned - last_served).as_secs_f64());
            wait_took.push((returned - started).as_secs_f64());
            rounds.extend(polled.iter().map(Duration::as_secs_f64));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for v in [&mut overshoot, &mut wait_took, &mut rounds] {
        v.sort_by(f64::total_cmp);
    }
    // A wait can return before the poller saw the last replica serve
    // (the poller's round was under way): negative overshoots are kept.
    println!(
        "RESULT kind=wait_overshoot replicas=3 n={} p50_ms={} p90_ms={} p99_ms={} max_ms={} \
         command_p50_ms={} command_p99_ms={} poll_p50_ms={} poll_p99_ms={}",
        overshoot.len(),
        ms(quantile(&overshoot, 0.5)),
        ms(quantile(&overshoot, 0.9)),
        ms(quantile(&overshoot, 0.99)),
        ms(*overshoot.last().unwrap()),
        ms(quantile(&wait_took, 0.5)),
        ms(quantile(&wait_took, 0.99)),
        ms(quantile(&rounds, 0.5)),
        ms(quantile(&rounds, 0.99)),
    );

    // Redis CPU: idle, then with a wait that cannot finish.
    let window = Duration::from_secs(args.cpu_window_s);
    let cpu_over = |f: &mut dyn FnMut()| {
        let (cpu, wall) = (redis.cpu_seconds(), Instant::now());
        f();
        (redis.cpu_seconds() - cpu) / wall.elapsed().as_secs_f64()
    };
    let idle = cpu_over(&mut || std::thread::sleep(window));
    let time: Vec<u64> = redis
        .cmd(&["TIME"])
        .split(' ')
        .map(|p| p.parse().unwrap())
        .collect();
    let far = (time[0] + 3600) * 1_000_000;
    let ghost = format!(
        r#"{{"id":"ghost","table_version":1,"watermark":1,"routes":1,"invalid":0,"last_sync_ms":null,"notifications":"keyspace","redis":"connected","source":"redis","expires_us":{far}}}"#
    );
    redis.cmd(&["HSET", "routes:replicas", "ghost", &ghost]);
    let mut exit = None;
    let waiting = cpu_over(&mut || {
        let action = set_with_wait("app.bench.test", &backends[0].1.to_string(), window);
        exit = runtime
            .block_on(cli::route(&ctx, action, &mut std::io::sink()))
            .err()
            .map(|e| e.exit);
    });
    assert_eq!(exit, Some(Exit::Lagging), "the ghost was not waited for");
    println!(
        "RESULT kind=wait_redis_cpu window_s={} idle_pct={:.3} waiting_pct={:.3} wait_pct={:.3}",
        args.cpu_window_s,
        idle * 100.0,
        waiting * 100.0,
        (waiting - idle) * 100.0
    );
}
