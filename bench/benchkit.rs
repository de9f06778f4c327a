//! Helpers for bench/run.sh:
//! - `free-ports N`: N distinct free TCP ports on 127.0.0.1;
//! - `fill`: (re)writes a routes hash with N hosts `h<i>.<domain>` spread
//!   over the given backends, pipelined (a million routes in seconds);
//!   `--listpack` makes it one listpack however large (see [`fill`]);
//! - `startup`: starts a command, times it until a probe URL answers 200,
//!   then reports the RSS and PSS of its whole process tree and stops it;
//! - `stalls`: spins threads that only read the clock and reports the gaps
//!   between two readings, i.e. the time each thread was kept off its CPU
//!   (by the guest's scheduler or by the host), with no proxy involved.

#[path = "common.rs"]
mod common;

use clap::{Parser, Subcommand};
use common::{encode, Http, Redis, Resp};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    FreePorts {
        n: usize,
    },
    Fill {
        #[arg(long)]
        redis: String,
        #[arg(long)]
        key: String,
        #[arg(long)]
        count: usize,
        #[arg(long, value_delimiter = ',')]
        backends: Vec<String>,
        #[arg(long, default_value = "bench.test")]
        domain: String,
        /// Leave the hash in listpack encoding (Redis must allow it:
        /// `hash-max-listpack-entries` at least `count`).
        #[arg(long)]
        listpack: bool,
    },
    Startup {
        /// host:port answering the probe once ready.
        #[arg(long)]
        probe: String,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long, default_value = "localhost")]
        host: String,
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
        /// Idle time after ready before memory is read.
        #[arg(long, default_value_t = 1000)]
        settle_ms: u64,
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    Stalls {
        /// Spinning threads (one per vCPU saturates the VM).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
}

fn main() -> std::io::Result<()> {
    match Cli::parse().cmd {
        Cmd::FreePorts { n } => {
            // Hold all of them at once so that they are distinct.
            let listeners: Vec<_> = (0..n)
                .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
                .collect::<Result<_, _>>()?;
            let ports: Vec<String> = listeners
                .iter()
                .map(|l| l.local_addr().map(|a| a.port().to_string()))
                .collect::<Result<_, _>>()?;
            println!("{}", ports.join(" "));
        }
        Cmd::Fill {
            redis,
            key,
            count,
            backends,
            domain,
            listpack,
        } => fill(&redis, &key, count, &backends, &domain, listpack)?,
        Cmd::Startup {
            probe,
            path,
            host,
            timeout_s,
            settle_ms,
            command,
        } => startup(&probe, &path, &host, timeout_s, settle_ms, &command)?,
        Cmd::Stalls { threads, seconds } => stalls(threads, Duration::from_secs_f64(seconds)),
    }
    Ok(())
}

/// With `listpack`, the hash is filled as a dict under a temporary name and
/// then `RESTORE`d from its `DUMP` under `key`: HSET into a listpack of
/// 100,000 fields scans it (~2.5 ms per field, a fill of minutes), while
/// RESTORE builds the listpack by appending (0.08 s). This is also
/// how an operator converts an existing routes hash (bench/README.md).
fn fill(
    addr: &str,
    key: &str,
    count: usize,
    backends: &[String],
    domain: &str,
    listpack: bool,
) -> std::io::Result<()> {
    let mut redis = Redis::connect(addr)?;
    redis.cmd_str(&["DEL", key])?;
    if listpack {
        let staging = format!("{key}:fill");
        let limit = redis
            .cmd_str(&["CONFIG", "GET", "hash-max-listpack-entries"])?
            .text();
        let limit = limit.split_whitespace().nth(1).unwrap_or("128").to_owned();
        redis.cmd_str(&["CONFIG", "SET", "hash-max-listpack-entries", "128"])?;
        let filled = fill(addr, &staging, count, backends, domain, false);
        redis.cmd_str(&["CONFIG", "SET", "hash-max-listpack-entries", &limit])?;
        filled?;
        let started = Instant::now();
        let Resp::Bulk(Some(payload)) = redis.cmd_str(&["DUMP", &staging])? else {
            return Err(std::io::Error::other("DUMP of the staging hash failed"));
        };
        redis.cmd(&[b"RESTORE", key.as_bytes(), b"0", &payload, b"REPLACE"])?;
        redis.cmd_str(&["DEL", &staging])?;
        let encoding = redis.cmd_str(&["OBJECT", "ENCODING", key])?.text();
        eprintln!("restored {key} as a {encoding} in {:?}", started.elapsed());
        return Ok(());
    }
    const BATCH: usize = 1000;
    const IN_FLIGHT: usize = 16;
    let started = Instant::now();
    let mut encoded = Vec::new();
    let mut pending = 0;
    let mut i = 0;
    while i < count {
        let end = (i + BATCH).min(count);
        let fields: Vec<(String, &str)> = (i..end)
            .map(|j| {
                (
                    format!("h{j}.{domain}"),
                    backends[j % backends.len()].as_str(),
                )
            })
            .collect();
        let mut args: Vec<&[u8]> = vec![b"HSET", key.as_bytes()];
        for (f, v) in &fields {
            args.push(f.as_bytes());
            args.push(v.as_bytes());
        }
        encode(&args, &mut encoded);
        pending += 1;
        if pending == IN_FLIGHT {
            redis.pipeline(&encoded, pending)?;
            encoded.clear();
            pending = 0;
        }
        i = end;
    }
    if pending > 0 {
        redis.pipeline(&encoded, pending)?;
    }
    let len = redis.cmd_str(&["HLEN", key])?.text();
    eprintln!("filled {key} with {len} routes in {:?}", started.elapsed());
    Ok(())
}

/// Every process whose parent chain leads to `root`, root included.
fn tree(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(after) = stat.rsplit_once(") ").map(|(_, a)| a) else {
                continue;
            };
            let ppid: u32 = after
                .split(' ')
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            parents.push((pid, ppid));
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

fn kb_field(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let rest = l.strip_prefix(field)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse().ok()
            })
        })
        .unwrap_or(0)
}

fn startup(
    probe: &str,
    path: &str,
    host: &str,
    timeout_s: u64,
    settle_ms: u64,
    command: &[String],
) -> std::io::Result<()> {
    let started = Instant::now();
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let deadline = started + Duration::from_secs(timeout_s);
    let mut ready = None;
    while Instant::now() < deadline {
        // A fresh connection per probe: the listener may not exist yet.
        let mut http = Http::new(probe);
        if http.get(host, path).is_ok_and(|a| a.status == 200) {
            ready = Some(started.elapsed());
            break;
        }
        if let Some(status) = child.try_wait()? {
            eprintln!("startup: {} exited early: {status}", command[0]);
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(settle_ms));
    let pids = tree(pid);
    let rss: u64 = pids
        .iter()
        .map(|p| kb_field(&format!("/proc/{p}/status"), "VmRSS"))
        .sum();
    let pss: u64 = pids
        .iter()
        .map(|p| kb_field(&format!("/proc/{p}/smaps_rollup"), "Pss"))
        .sum();
    let hwm: u64 = pids
        .iter()
        .map(|p| kb_field(&format!("/proc/{p}/status"), "VmHWM"))
        .sum();
    match ready {
        Some(t) => println!(
            "STARTUP ready_ms={:.1} rss_kb={rss} pss_kb={pss} hwm_kb={hwm} procs={}",
            t.as_secs_f64() * 1e3,
            pids.len()
        ),
        None => println!(
            "STARTUP ready_ms=timeout rss_kb={rss} pss_kb={pss} hwm_kb={hwm} procs={}",
            pids.len()
        ),
    }
    // Stop it: SIGTERM to the root (nginx's master takes its workers down),
    // then SIGKILL whatever of the tree is left.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let stop_deadline = Instant::now() + Duration::from_secs(10);
    let mut exited = false;
    while Instant::now() < stop_deadline {
        if child.try_wait()?.is_some() {
            exited = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if !exited {
        for p in pids.iter().rev() {
            let _ = Command::new("kill")
                .args(["-KILL", &p.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = child.wait();
    }
    Ok(())
}

/// Gaps of at least this long between two clock readings are counted.
const STALL_MIN: Duration = Duration::from_millis(1);

/// Spins `threads` threads for `length`, each reading the clock in a tight
/// loop, and prints one line over all of them: the gaps of at least
/// [`STALL_MIN`] (count, total, longest). Nothing else runs in them, so a
/// gap is time the thread was runnable but off its CPU.
fn stalls(threads: usize, length: Duration) {
    let spinners: Vec<_> = (0..threads.max(1))
        .map(|_| {
            std::thread::spawn(move || {
                let start = Instant::now();
                let (mut last, mut gaps) = (start, Vec::new());
                while last - start < length {
                    let now = Instant::now();
                    if now - last >= STALL_MIN {
                        gaps.push(now - last);
                    }
                    last = now;
                }
                gaps
            })
        })
        .collect();
    let gaps: Vec<Duration> = spinners
        .into_iter()
        .flat_map(|t| t.join().unwrap_or_default())
        .collect();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "STALLS threads={} seconds={:.1} gaps={} total_ms={:.1} max_ms={:.1}",
        threads.max(1),
        length.as_secs_f64(),
        gaps.len(),
        ms(gaps.iter().sum()),
        ms(gaps.iter().max().copied().unwrap_or_default()),
    );
}
