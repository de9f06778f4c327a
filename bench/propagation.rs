//! Propagation benchmark: how long from a write to the routes hash until
//! the proxy (or every one of several replicas) serves it, and what Redis
//! spends per change.
//!
//! The hash must already hold the background routes (`benchkit fill`) and
//! the proxies must be ready. Four kinds of change are measured:
//! - `change`: a plain `HSET` of an existing host to the other backend
//!   (every replica reads the whole hash), poll until the new backend
//!   answers;
//! - `logged`: the same change as a logged one (`MULTI HSET XADD EXEC`,
//!   README.md "Changing routes"): every replica reads the change log;
//! - `new`: `HSET` a brand-new host, poll until it answers 200 from its backend;
//! - `del`: `HDEL` those new hosts, poll until 404.
//!
//! `--only-logged` measures the logged changes alone (for tables so large
//! that the plain path is not the one to measure).
//!
//! The clock starts just before the write is sent (a controller's view).
//! After the first right answer every proxy is polled `--verify` more times:
//! any answer that is not the new one is a wrong answer (a flap back).
//!
//! Each `RESULT` also carries two references from the same run: the write's
//! own round trip to Redis (`write_*`), and the length of a verification
//! round (`poll_*`: one poll of every proxy, with no change in flight). A
//! propagation time cannot be shorter than a polling round, so when the
//! host is noisy the two show how much of a tail is the host's.
//!
//! Output: `RESULT key=value ...` lines (parsed by bench/run.sh) plus a
//! `COST` line with Redis commands and bytes per change per replica, taken
//! from `INFO commandstats` / `INFO stats` around the `change` phase.

#[path = "common.rs"]
mod common;

use clap::Parser;
use common::{command_calls, command_stat, info_field, quantile, Answer, Http, Redis};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Redis address (host:port) holding the routes hash.
    #[arg(long)]
    redis: String,
    /// The routes hash.
    #[arg(long, default_value = "routes")]
    key: String,
    /// Proxy listen address; repeat for several replicas.
    #[arg(long = "proxy", required = true)]
    proxies: Vec<String>,
    /// Two backends `ip:port` that identify themselves with `X-Backend: <port>`.
    #[arg(long, value_delimiter = ',', required = true)]
    backends: Vec<String>,
    /// Route changes (existing host, new backend).
    #[arg(long, default_value_t = 200)]
    changes: usize,
    /// Brand-new hosts (then deleted again: the `del` measurement).
    #[arg(long, default_value_t = 100)]
    new_hosts: usize,
    /// Polls of every proxy after the first right answer.
    #[arg(long, default_value_t = 20)]
    verify: usize,
    /// Give up on one change after this long.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Pause between changes, so that changes are not coalesced.
    #[arg(long, default_value_t = 5)]
    gap_ms: u64,
    /// Unmeasured changes made first. Freshly started processes on a VM
    /// that was idle answer their first seconds of changes several times
    /// slower (seen here: 3-9 ms for ~4 s, then 1-2 ms, same processes):
    /// the hypervisor wakes idle vCPUs slowly until its halt polling has
    /// adapted. Steady-state propagation is what is measured.
    #[arg(long, default_value_t = 3000)]
    warmup_ms: u64,
    /// Pause between polling rounds (µs). A tight loop would take a whole
    /// core from the proxies and Redis on a small machine; the pause bounds
    /// the measurement's resolution instead (plus the kernel's timer slack).
    #[arg(long, default_value_t = 100)]
    poll_interval_us: u64,
    /// Keep polling a proxy that already serves the change while the others
    /// catch up (checking it for a flap back earlier, at the cost of a
    /// request through it and the backend every round). By default it
    /// waits for the verification rounds: on a 2-core machine each round
    /// of three proxied requests takes CPU the last replica's sync needs.
    #[arg(long)]
    poll_served: bool,
    /// Print every measurement (time, each proxy's ms) to stderr.
    #[arg(long)]
    trace: bool,
    /// Measure only logged changes (no plain `change`, `new`, `del`).
    #[arg(long)]
    only_logged: bool,
    /// Label printed with every result line.
    #[arg(long, default_value = "")]
    label: String,
    /// Append every measurement (kind, label, replicas, ms; `inf` for a
    /// timeout) to this file, tab-separated, so that repeated runs can be
    /// pooled.
    #[arg(long)]
    samples: Option<std::path::PathBuf>,
}

/// What a proxy must answer once a change is live.
#[derive(Clone, Copy)]
enum Want<'a> {
    Backend(&'a str),
    NotFound,
}

impl Want<'_> {
    fn matches(&self, a: &Answer) -> bool {
        match self {
            Want::Backend(port) => a.status == 200 && a.backend.as_deref() == Some(port),
            Want::NotFound => a.status == 404,
        }
    }
}

struct Outcome {
    /// Wall-clock time of the write (for --trace, to line up with logs).
    started_wall: std::time::SystemTime,
    /// Polling rounds until every proxy served the change: (start ms, end
    /// ms, proxies still wrong at the end), for --trace.
    rounds: Vec<(f64, f64, usize)>,
    /// The write's own round trip to Redis (ms).
    write_ms: f64,
    /// Length of each verification round (ms): one poll of every proxy
    /// with no change in flight, the same run's reference for what a
    /// polling round alone costs on this host.
    verify_rounds_ms: Vec<f64>,
    /// Time until every proxy served the change (ms), None on timeout.
    all_ms: Option<f64>,
    /// Time until each proxy first served it.
    per_proxy_ms: Vec<Option<f64>>,
    wrong: usize,
    errors: usize,
}

fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap_or(addr)
}

struct Bench {
    args: Args,
    redis: Redis,
    clients: Vec<Http>,
}

impl Bench {
    /// Applies `write` (one or more commands, pipelined) and polls every
    /// proxy until each serves `want`.
    /// Sends `write` (commands), untimed.
    fn send(&mut self, write: &[Vec<String>]) -> std::io::Result<()> {
        let mut encoded = Vec::new();
        for command in write {
            let args: Vec<&[u8]> = command.iter().map(|a| a.as_bytes()).collect();
            common::encode(&args, &mut encoded);
        }
        self.redis.pipeline(&encoded, write.len())
    }

    fn measure(
        &mut self,
        host: &str,
        write: &[Vec<String>],
        want: Want,
    ) -> std::io::Result<Outcome> {
        let n = self.clients.len();
        let mut first: Vec<Option<f64>> = vec![None; n];
        let mut wrong = 0;
        let mut errors = 0;
        let timeout = Duration::from_millis(self.args.timeout_ms);
        let started = Instant::now();
        let started_wall = std::time::SystemTime::now();
        let mut encoded = Vec::new();
        for command in write {
            let args: Vec<&[u8]> = command.iter().map(|a| a.as_bytes()).collect();
            common::encode(&args, &mut encoded);
        }
        self.redis.pipeline(&encoded, write.len())?;
        let write_ms = started.elapsed().as_secs_f64() * 1e3;
        let mut remaining = n;
        let mut verifies = vec![0usize; n];
        // Every proxy still to serve the change is polled in each round, all
        // at once: the requests go out first, then the answers are read, so
        // that three replicas work in parallel and a round costs one round
        // trip, not three. Once all serve it, every proxy is polled
        // `verify` more times and checked.
        let mut sent = vec![false; n];
        let mut rounds = Vec::new();
        let mut verify_rounds_ms = Vec::new();
        'outer: loop {
            let round_started = started.elapsed();
            let verifying = remaining == 0;
            for (i, client) in self.clients.iter_mut().enumerate() {
                sent[i] = false;
                let served = first[i].is_some();
                let waiting_for_others = served && remaining > 0 && !self.args.poll_served;
                if waiting_for_others
                    || (served && remaining == 0 && verifies[i] >= self.args.verify)
                {
                    continue;
                }
                match client.send_get(host, "/") {
                    Ok(()) => sent[i] = true,
                    Err(_) => errors += 1,
                }
            }
            for (i, client) in self.clients.iter_mut().enumerate() {
                if !sent[i] {
                    continue;
                }
                let answer = match client.answer() {
                    Ok(a) => a,
                    Err(_) => {
                        errors += 1;
                        if first[i].is_some() && remaining == 0 {
                            verifies[i] += 1;
                        }
                        continue;
                    }
                };
                let elapsed = started.elapsed();
                let right = want.matches(&answer);
                match first[i] {
                    None if right => {
                        first[i] = Some(elapsed.as_secs_f64() * 1e3);
                        remaining -= 1;
                    }
                    None => {}
                    Some(_) => {
                        if !right {
                            wrong += 1;
                        }
                        if remaining == 0 {
                            verifies[i] += 1;
                        }
                    }
                }
            }
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            if verifying {
                verify_rounds_ms.push(ms(started.elapsed()) - ms(round_started));
            }
            if rounds.last().is_none_or(|&(_, _, left)| left > 0) {
                rounds.push((ms(round_started), ms(started.elapsed()), remaining));
            }
            if remaining == 0 && verifies.iter().all(|v| *v >= self.args.verify) {
                break 'outer;
            }
            if remaining > 0 && started.elapsed() > timeout {
                break 'outer;
            }
            if self.args.poll_interval_us > 0 {
                std::thread::sleep(Duration::from_micros(self.args.poll_interval_us));
            }
        }
        let all_ms = if remaining == 0 {
            first.iter().map(|f| f.unwrap()).reduce(f64::max)
        } else {
            None
        };
        Ok(Outcome {
            started_wall,
            write_ms,
            verify_rounds_ms,
            rounds,
            all_ms,
            per_proxy_ms: first,
            wrong,
            errors,
        })
    }

    /// Polls until `host` answers as wanted everywhere, untimed (setup).
    fn settle(&mut self, host: &str, want: Want) -> std::io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        for client in &mut self.clients {
            loop {
                if client.get(host, "/").is_ok_and(|a| want.matches(&a)) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(std::io::Error::other(format!("{host} never settled")));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(())
    }

    fn trace(&self, kind: &str, outcome: &Outcome) {
        if self.args.trace {
            let now = outcome
                .started_wall
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            // The rounds' start times and lengths show whether a slow
            // figure was the proxies or the poller (a late or slow round).
            let rounds: Vec<String> = outcome
                .rounds
                .iter()
                .map(|(start, end, _)| format!("{start:.3}+{:.3}", end - start))
                .collect();
            eprintln!(
                "SAMPLE {kind} {:.6} {:?} rounds {}",
                now.as_secs_f64(),
                outcome.per_proxy_ms,
                rounds.join(",")
            );
        }
    }

    fn gap(&self) {
        std::thread::sleep(Duration::from_millis(self.args.gap_ms));
    }
}

struct Series {
    all: Vec<f64>,
    /// Per-replica first-serve times, pooled.
    each: Vec<f64>,
    /// The writes' round trips and the verification rounds' lengths.
    writes: Vec<f64>,
    polls: Vec<f64>,
    wrong: usize,
    timeouts: usize,
    errors: usize,
}

impl Series {
    fn new() -> Series {
        Series {
            all: Vec::new(),
            each: Vec::new(),
            writes: Vec::new(),
            polls: Vec::new(),
            wrong: 0,
            timeouts: 0,
            errors: 0,
        }
    }

    fn push(&mut self, o: Outcome) {
        match o.all_ms {
            Some(ms) => self.all.push(ms),
            None => self.timeouts += 1,
        }
        self.each.extend(o.per_proxy_ms.into_iter().flatten());
        self.writes.push(o.write_ms);
        self.polls.extend(o.verify_rounds_ms);
        self.wrong += o.wrong;
        self.errors += o.errors;
    }

    fn print(
        &mut self,
        kind: &str,
        label: &str,
        replicas: usize,
        samples: Option<&std::path::Path>,
    ) -> std::io::Result<()> {
        if let Some(path) = samples {
            use std::io::Write;
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            let timeouts = std::iter::repeat_n(f64::INFINITY, self.timeouts);
            for ms in self.all.iter().copied().chain(timeouts) {
                writeln!(out, "{kind}\t{label}\t{replicas}\t{ms:.3}")?;
            }
        }
        self.all.sort_by(f64::total_cmp);
        self.each.sort_by(f64::total_cmp);
        self.writes.sort_by(f64::total_cmp);
        self.polls.sort_by(f64::total_cmp);
        let n = self.all.len() + self.timeouts;
        println!(
            "RESULT kind={kind} label={label:?} replicas={replicas} n={n} timeouts={} \
             p50_ms={:.3} p99_ms={:.3} max_ms={:.3} each_p50_ms={:.3} each_p99_ms={:.3} \
             write_p50_ms={:.3} write_p99_ms={:.3} poll_p50_ms={:.3} poll_p99_ms={:.3} wrong={} errors={}",
            self.timeouts,
            quantile(&self.all, 0.50),
            quantile(&self.all, 0.99),
            self.all.last().copied().unwrap_or(f64::NAN),
            quantile(&self.each, 0.50),
            quantile(&self.each, 0.99),
            quantile(&self.writes, 0.50),
            quantile(&self.writes, 0.99),
            quantile(&self.polls, 0.50),
            quantile(&self.polls, 0.99),
            self.wrong,
            self.errors,
        );
        Ok(())
    }
}

/// What Redis has done so far: calls and CPU time (µs) per command, bytes
/// sent, and the length of the two INFO replies this snapshot cost.
struct Snapshot {
    calls: BTreeMap<String, u64>,
    usec: BTreeMap<String, u64>,
    out_bytes: u64,
    info_len: usize,
}

/// How much a per-command counter grew between two snapshots.
fn grown(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, cmd: &str) -> u64 {
    let at = |m: &BTreeMap<String, u64>| m.get(cmd).copied().unwrap_or(0);
    at(after).saturating_sub(at(before))
}

fn snapshot(redis: &mut Redis) -> std::io::Result<Snapshot> {
    let stats = redis.info("stats")?;
    let stats_reply_len = stats.len() + 16;
    let out_bytes = info_field(&stats, "total_net_output_bytes").unwrap_or(0);
    let cmds = redis.info("commandstats")?;
    let cmds_reply_len = cmds.len() + 16;
    Ok(Snapshot {
        calls: command_calls(&cmds).into_iter().collect(),
        usec: command_stat(&cmds, "usec").into_iter().collect(),
        out_bytes,
        info_len: stats_reply_len + cmds_reply_len,
    })
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    assert_eq!(args.backends.len(), 2, "--backends takes two addresses");
    // The kernel lets a sleep overrun by the thread's timer slack (50 µs
    // by default), which would stretch every polling pause by half.
    // SAFETY: PR_SET_TIMERSLACK takes one integer and touches no memory.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let redis = Redis::connect(&args.redis)?;
    let clients = args.proxies.iter().map(|p| Http::new(p)).collect();
    let mut bench = Bench {
        redis,
        clients,
        args,
    };
    let label = bench.args.label.clone();
    let samples = bench.args.samples.clone();
    let key = bench.args.key.clone();
    let replicas = bench.clients.len();
    let backends: Vec<String> = bench.args.backends.clone();
    let ports: Vec<&str> = backends.iter().map(|b| port_of(b)).collect();
    let nonce = std::process::id();

    // 1. Changes of an existing host's backend (after the warm-up ones):
    // plain, then logged.
    let host = format!("prop-{nonce}.bench.test");
    let kinds: &[Change] = if bench.args.only_logged {
        &[Change::Logged]
    } else {
        &[Change::Plain, Change::Logged]
    };
    for kind in kinds {
        change_phase(
            &mut bench,
            *kind,
            &host,
            &backends,
            &ports,
            &label,
            samples.as_deref(),
        )?;
    }
    bench.redis.cmd_str(&["HDEL", &key, &host])?;
    if bench.args.only_logged {
        return Ok(());
    }

    // 2. Brand-new hosts, then 3. deleting them.
    let hosts: Vec<String> = (0..bench.args.new_hosts)
        .map(|i| format!("new{i}-{nonce}.bench.test"))
        .collect();
    let mut new_series = Series::new();
    for (i, host) in hosts.iter().enumerate() {
        bench.settle(host, Want::NotFound)?;
        let to = i % 2;
        let outcome = bench.measure(
            host,
            &[hset(&key, host, &backends[to])],
            Want::Backend(ports[to]),
        )?;
        bench.trace("new", &outcome);
        new_series.push(outcome);
        bench.gap();
    }
    new_series.print("new", &label, replicas, samples.as_deref())?;
    let mut del_series = Series::new();
    for host in &hosts {
        let del = vec!["HDEL".to_owned(), key.clone(), host.clone()];
        let outcome = bench.measure(host, &[del], Want::NotFound)?;
        bench.trace("del", &outcome);
        del_series.push(outcome);
        bench.gap();
    }
    del_series.print("del", &label, replicas, samples.as_deref())?;
    Ok(())
}

/// How a change is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    /// `HSET`: every replica reads the whole hash.
    Plain,
    /// `MULTI HSET XADD EXEC`: every replica reads the change log.
    Logged,
}

impl Change {
    fn kind(self) -> &'static str {
        match self {
            Change::Plain => "change",
            Change::Logged => "logged",
        }
    }

    /// The commands that set `host` to `backend` in `key`.
    fn write(self, key: &str, host: &str, backend: &str) -> Vec<Vec<String>> {
        match self {
            Change::Plain => vec![hset(key, host, backend)],
            Change::Logged => {
                let xadd =
                    format!("XADD {key}:log MAXLEN ~ 10000 * op set field {host} value {backend}");
                vec![
                    vec!["MULTI".to_owned()],
                    hset(key, host, backend),
                    xadd.split(' ').map(str::to_owned).collect(),
                    vec!["EXEC".to_owned()],
                ]
            }
        }
    }

    /// The writer's own commands, left out of the replicas' cost.
    fn writer_commands(self) -> &'static [&'static str] {
        match self {
            Change::Plain => &["hset", "info"],
            Change::Logged => &["hset", "xadd", "info"],
        }
    }
}

fn hset(key: &str, host: &str, backend: &str) -> Vec<String> {
    ["HSET", key, host, backend].map(str::to_owned).to_vec()
}

/// Warm-up, then `--changes` measured changes of `host` between the two
/// backends, written as `kind`; prints the RESULT and COST lines.
fn change_phase(
    bench: &mut Bench,
    kind: Change,
    host: &str,
    backends: &[String],
    ports: &[&str],
    label: &str,
    samples: Option<&std::path::Path>,
) -> std::io::Result<()> {
    let key = bench.args.key.clone();
    let replicas = bench.clients.len();
    // Setup writes go the way the measured ones do: a plain HSET before
    // logged changes makes every replica read the whole hash (at 1,000,000
    // routes an HSCAN of seconds), which settle() does not wait for when
    // the value was already there, and which then overlaps the measured
    // changes.
    bench.send(&kind.write(&key, host, &backends[0]))?;
    bench.settle(host, Want::Backend(ports[0]))?;
    let warmup = Instant::now();
    for i in 0.. {
        if warmup.elapsed() >= Duration::from_millis(bench.args.warmup_ms) {
            break;
        }
        let to = (i + 1) % 2;
        bench.measure(
            host,
            &kind.write(&key, host, &backends[to]),
            Want::Backend(ports[to]),
        )?;
        bench.gap();
    }
    bench.send(&kind.write(&key, host, &backends[0]))?;
    bench.settle(host, Want::Backend(ports[0]))?;
    let before = snapshot(&mut bench.redis)?;
    let mut series = Series::new();
    for i in 0..bench.args.changes {
        let to = (i + 1) % 2;
        let outcome = bench.measure(
            host,
            &kind.write(&key, host, &backends[to]),
            Want::Backend(ports[to]),
        )?;
        bench.trace(kind.kind(), &outcome);
        series.push(outcome);
        bench.gap();
    }
    let after = snapshot(&mut bench.redis)?;
    series.print(kind.kind(), label, replicas, samples)?;

    // Redis cost of the phase, per change and per replica. Our own
    // commands (the write, INFO) and the proxies' timer PINGs are left
    // out; the status SET each replica writes after a read is part of
    // the cost. MULTI/EXEC calls of a logged write are the writer's too:
    // one each per change.
    let n = bench.args.changes.max(1) as f64;
    let mut per_change = BTreeMap::new();
    let mut pings = 0u64;
    let mut read_usec = 0u64;
    // Whole reads (and what comes with them) that the safety net makes
    // whatever the writes: a periodic resync falling in the phase costs
    // ~30 ms of Redis at 100,000 routes, which says nothing of what one
    // change costs. `log_read_us` leaves them out; `read_us` has all.
    const WHOLE_READ: [&str; 6] = [
        "dump",
        "hgetall",
        "hscan",
        "hlen",
        "xrevrange",
        "config|get",
    ];
    let mut whole_read_usec = 0u64;
    let own = kind.writer_commands();
    for cmd in after.calls.keys() {
        let mut calls = grown(&before.calls, &after.calls, cmd);
        if kind == Change::Logged && (cmd == "multi" || cmd == "exec") {
            calls = calls.saturating_sub(bench.args.changes as u64);
        }
        match cmd.as_str() {
            c if own.contains(&c) => {}
            "ping" => pings = calls,
            _ if calls > 0 => {
                per_change.insert(cmd.clone(), calls as f64 / n / replicas as f64);
                // EXEC's time already holds that of the commands it ran.
                if cmd != "exec" {
                    let usec = grown(&before.usec, &after.usec, cmd);
                    read_usec += usec;
                    if WHOLE_READ.contains(&cmd.as_str()) {
                        whole_read_usec += usec;
                    }
                }
            }
            _ => {}
        }
    }
    // Bytes Redis sent: minus our INFO and write replies and the PONGs.
    let write_reply_bytes = match kind {
        Change::Plain => 4,
        Change::Logged => 5 + 8 + 8 + 4 + 24,
    };
    let own_bytes =
        before.info_len as u64 + write_reply_bytes * bench.args.changes as u64 + 7 * pings;
    let bytes =
        (after.out_bytes - before.out_bytes).saturating_sub(own_bytes) as f64 / n / replicas as f64;
    let total: f64 = per_change.values().sum();
    let detail = per_change
        .iter()
        .map(|(k, v)| format!("{k}:{v:.2}"))
        .collect::<Vec<_>>()
        .join(",");
    // Redis's CPU time (INFO commandstats `usec`) for the write and for the
    // replicas' reads, per change (the read also per replica).
    let write_us = own
        .iter()
        .filter(|c| **c != "info")
        .map(|c| grown(&before.usec, &after.usec, c))
        .sum::<u64>() as f64
        / n;
    let read_us = read_usec as f64 / n / replicas as f64;
    let log_read_us = (read_usec - whole_read_usec) as f64 / n / replicas as f64;
    println!(
        "COST kind={} label={label:?} replicas={replicas} per_change_cmds={total:.2} per_change_bytes={bytes:.0} write_us={write_us:.0} read_us={read_us:.0} log_read_us={log_read_us:.0} detail={detail} timer_pings={pings}",
        kind.kind()
    );
    Ok(())
}
