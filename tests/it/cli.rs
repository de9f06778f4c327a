//! The built binary as a process: the command line (usage errors, help,
//! exit codes, `serve` flags), signals (SIGTERM/SIGINT drain, SIGHUP
//! reloads and never kills), and the `route` commands with their messages.
//! The replica registry and `--wait` are in `replicas`.

use crate::support::*;
use std::process::{Output, Stdio};
use std::time::Duration;

pub fn switchyard(args: &[&str]) -> Output {
    switchyard_binary().args(args).output().unwrap()
}

/// [`switchyard`] off the async runtime.
pub async fn switchyard_async(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        switchyard(&args)
    })
    .await
    .unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts that a command exited with `code`; the message is its stderr.
#[track_caller]
pub fn assert_exit(o: &Output, code: i32) {
    assert_eq!(o.status.code(), Some(code), "{}", stderr(o));
}

/// Asserts that `text` (a command's output) contains `part`; the message
/// is the whole text.
#[track_caller]
pub fn assert_contains(text: &str, part: &str) {
    assert!(text.contains(part), "no {part:?} in:\n{text}");
}

#[test]
fn usage_errors_exit_64_with_a_clear_message() {
    for args in [
        &["--resync-interval", "soon"][..],
        &["--listen", "nowhere"],
        &["--no-such-flag"],
        &["--redis-url", "http://x"],
        &["--max-header-size", "10"],
        &["--routes-key", ""],
        &["serve", "--routes-key", ""],
        &["route", "list", "--routes-key", ""],
        &["status", "--routes-key", ""],
        &["route", "set", "a.com", "10.0.0.1:80", "--routes-key", ""],
        &["route", "list", "--redis-url", "http://x"],
        &["--listen", "127.0.0.1:1", "status"],
        &["route", "set", "a.com", "10.0.0.1:80", "--timeout", "3s"],
        &["route", "set", "a.com", "10.0.0.1:80", "--wait=soon"],
    ] {
        let out = switchyard(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
        let text = stderr(&out);
        assert!(!text.trim().is_empty(), "{args:?} printed no reason");
        assert!(
            !text.contains("Error {"),
            "{args:?} printed debug text: {text}"
        );
    }
    assert!(stderr(&switchyard(&["--redis-url", "http://x"])).contains("redis-url"));
    // An empty routes key is refused before anything talks to Redis (the
    // URL points nowhere: 69 would mean it tried).
    let out = switchyard(&[
        "route",
        "del",
        "a.com",
        "--routes-key",
        "",
        "--redis-url",
        "redis://127.0.0.1:1/0",
    ]);
    assert_exit(&out, 64);
    assert!(stderr(&out).contains("--routes-key"), "{}", stderr(&out));
}

#[test]
fn help_shows_every_serve_flag_and_the_exit_codes() {
    let top = switchyard(&["--help"]);
    assert_eq!(top.status.code(), Some(0));
    let serve = switchyard(&["serve", "--help"]);
    assert_eq!(serve.status.code(), Some(0));
    let (top, serve) = (stdout(&top), stdout(&serve));
    // The flag that starts each option line of a help text.
    let flags = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.trim_start().trim_start_matches("-h, ").strip_prefix("--"))
            .map(|l| format!("--{}", l.split([' ', '=', '[', '<']).next().unwrap()))
            .filter(|f| f != "--version")
            .collect()
    };
    let serve_flags = flags(&serve);
    for flag in [
        "--listen",
        "--admin-listen",
        "--resync-interval",
        "--snapshot-file",
        "--worker-threads",
        "--log-filter-file",
        "--redis-url",
        "--routes-key",
    ] {
        assert!(
            serve_flags.contains(&flag.to_owned()),
            "serve --help lacks {flag}:\n{serve}"
        );
    }
    for flag in flags(&top) {
        assert!(serve_flags.contains(&flag), "serve --help lacks {flag}");
    }
    for text in [
        &top,
        &serve,
        &stdout(&switchyard(&["route", "set", "--help"])),
    ] {
        for code in [
            "  0 ", " 64 ", " 65 ", " 68 ", " 69 ", " 75 ", " 77 ", "  1 ",
        ] {
            assert!(text.contains(code), "help lacks exit code {code}:\n{text}");
        }
    }
}

/// A backend that answers after `delay`, to have a response in flight.
pub async fn slow_backend(delay: Duration) -> Backend {
    Backend::scripted(move |_req| async move {
        tokio::time::sleep(delay).await;
        hyper::Response::new(full_body("slow and done"))
    })
    .await
}

/// Starts a request through `proxy` to the slow host and returns once the
/// proxy counts its connection (the request is then in flight).
async fn request_in_flight(
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
) -> tokio::task::JoinHandle<(u16, String)> {
    let in_flight = tokio::spawn(async move {
        let r = http_get(listen, "slow.cloud.com", "/").await;
        (r.status, r.body)
    });
    assert_eventually!(
        http_get(admin, "localhost", "/metrics")
            .await
            .body
            .contains("switchyard_client_connections 1"),
        "request never reached the proxy"
    );
    in_flight
}

async fn shutdown_with_request_in_flight(signal: &str) {
    let redis = RedisServer::start();
    let backend = slow_backend(Duration::from_millis(500)).await;
    redis.hset("slow.cloud.com", &backend.target());
    // Configured through the environment (REDIS_URL fallback included).
    let mut proxy = ProxyProcess::start(|cmd| {
        cmd.env("REDIS_URL", redis.url());
    });
    proxy.wait_ready().await;
    let in_flight = request_in_flight(proxy.addr, proxy.admin).await;
    proxy.signal(signal);
    let response = in_flight.await.unwrap();
    assert_eq!(response, (200, "slow and done".to_owned()));
    let status = proxy.wait_exit();
    assert_eq!(status.code(), Some(0), "exit status after {signal}");
    assert!(
        tokio::net::TcpStream::connect(proxy.addr).await.is_err(),
        "still accepting after exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    shutdown_with_request_in_flight("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_lets_the_request_in_flight_finish_then_exits_0() {
    shutdown_with_request_in_flight("INT").await;
}

/// The log of a process, written to a file the test reads as it grows.
struct LogFile(std::path::PathBuf);

impl LogFile {
    fn new(name: &str) -> LogFile {
        let path = std::env::temp_dir().join(format!(
            "switchyard-{name}-{}-{}.log",
            std::process::id(),
            free_port()
        ));
        std::fs::write(&path, "").unwrap();
        LogFile(path)
    }

    fn stdio(&self) -> Stdio {
        std::fs::OpenOptions::new()
            .append(true)
            .open(&self.0)
            .unwrap()
            .into()
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.0).unwrap_or_default()
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_log_filter_and_never_kills() {
    let redis = RedisServer::start();
    let backend = slow_backend(Duration::from_millis(500)).await;
    redis.hset("slow.cloud.com", &backend.target());
    let filter = LogFile::new("filter");
    std::fs::write(&filter.0, "# only errors for now\nerror\n").unwrap();
    let log = LogFile::new("hup");
    let mut proxy = ProxyProcess::start_with(log.stdio(), |cmd, at| {
        at.set_env(cmd);
        cmd.args(["serve", "--redis-url", &redis.url()])
            .args(["--access-log", "false"])
            .arg("--log-filter-file")
            .arg(&filter.0);
    });
    proxy.wait_ready().await;
    assert!(
        !log.text().contains("switchyard starting"),
        "the filter file's `error` was not applied:\n{}",
        log.text()
    );

    // A reload while a request is in flight: the request finishes, the
    // process stays, and the new filter applies from then on.
    let in_flight = request_in_flight(proxy.addr, proxy.admin).await;
    std::fs::write(&filter.0, "info").unwrap();
    proxy.signal("HUP");
    let response = in_flight.await.unwrap();
    assert_eq!(response, (200, "slow and done".to_owned()));
    assert_eventually!(
        log.text().contains("log filter reloaded"),
        "no reload logged:\n{}",
        log.text()
    );
    assert!(proxy.is_running(), "SIGHUP killed the proxy");
    assert_eq!(
        http_get(proxy.admin, "localhost", "/healthz").await.status,
        200
    );

    // A bad filter is refused and the old one kept; HUP again: still up.
    std::fs::write(&filter.0, "info,[=nonsense").unwrap();
    proxy.signal("HUP");
    assert_eventually!(
        log.text().contains("log filter not reloaded"),
        "bad filter not reported:\n{}",
        log.text()
    );
    proxy.signal("HUP");
    assert_eq!(
        http_get(proxy.addr, "slow.cloud.com", "/").await.status,
        200
    );
    assert!(proxy.is_running(), "SIGHUP killed the proxy");

    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit().code(), Some(0));
}

#[test]
fn an_unreadable_log_filter_file_is_a_usage_error() {
    let out = switchyard(&["--log-filter-file", "/nonexistent/filter"]);
    assert_exit(&out, 64);
    assert!(
        stderr(&out).contains("/nonexistent/filter"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_and_switchyard_env_vars_configure_the_server() {
    let redis = RedisServer::start();
    let backend = Backend::echo("blue").await;
    redis.cli(&["HSET", "apps", "app.cloud.com", &backend.target()]);
    let proxy = ProxyProcess::start(|cmd| {
        cmd.env("SWITCHYARD_REDIS_URL", redis.url())
            .env("REDIS_URL", "redis://127.0.0.1:1/0") // the specific variable wins
            .args(["--routes-key", "apps"]);
    });
    proxy.wait_ready().await;
    assert!(proxy.serves("app.cloud.com", "blue").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_every_serve_flag_after_the_command() {
    let redis = RedisServer::start();
    let backend = Backend::echo("blue").await;
    redis.cli(&["HSET", "apps", "app.cloud.com", &backend.target()]);
    let proxy = ProxyProcess::start_with(Stdio::null(), |cmd, at| {
        cmd.args(["serve", "--listen", &at.addr.to_string()])
            .args(["--admin-listen", &at.admin.to_string()])
            .args(["--redis-url", &redis.url(), "--routes-key", "apps"])
            .args(["--worker-threads", "1", "--access-log", "false"]);
    });
    proxy.wait_ready().await;
    assert!(proxy.serves("app.cloud.com", "blue").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_commands_validate_write_list_and_delete() {
    let redis = RedisServer::start();
    let url = redis.url();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--redis-url", &url]);
        switchyard(&all)
    };
    let ok = run(&[
        "route",
        "set",
        "App.Cloud.com.",
        "10.0.0.5:3000, 10.0.0.6:3000",
    ]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_eq!(
        stdout(&ok),
        "app.cloud.com -> 10.0.0.5:3000, 10.0.0.6:3000 (new)\n"
    );
    assert_eq!(
        redis.cli(&["HGET", "routes", "app.cloud.com"]).trim(),
        "10.0.0.5:3000, 10.0.0.6:3000"
    );
    let same = run(&[
        "route",
        "set",
        "app.cloud.com",
        "10.0.0.5:3000, 10.0.0.6:3000",
    ]);
    assert_eq!(
        stdout(&same),
        "app.cloud.com -> 10.0.0.5:3000, 10.0.0.6:3000 (unchanged)\n"
    );
    let moved = run(&["route", "set", "app.cloud.com", "10.0.0.7:3000"]);
    assert_eq!(
        stdout(&moved),
        "app.cloud.com -> 10.0.0.7:3000 (was 10.0.0.5:3000, 10.0.0.6:3000)\n"
    );

    for bad in ["nonsense", "10.0.0.1", "a:99999", ""] {
        let out = run(&["route", "set", "bad.cloud.com", bad]);
        assert_eq!(out.status.code(), Some(65), "{bad:?} accepted");
        assert!(stderr(&out).contains("refusing"), "{}", stderr(&out));
    }
    let out = run(&["route", "set", "bad host", "10.0.0.1:80"]);
    assert_eq!(out.status.code(), Some(65));
    assert_eq!(
        redis.cli(&["HLEN", "routes"]).trim(),
        "1",
        "an invalid route was written"
    );

    redis.hset("hand.cloud.com", "oops");
    let list = run(&["route", "list"]);
    assert!(list.status.success());
    let text = stdout(&list);
    assert!(text.contains("app.cloud.com\t10.0.0.7:3000\n"), "{text}");
    assert!(text.contains("hand.cloud.com\toops\t# invalid"), "{text}");

    let del = run(&["route", "del", "app.cloud.com"]);
    assert!(del.status.success());
    assert_eq!(stdout(&del), "deleted app.cloud.com (was 10.0.0.7:3000)\n");
    assert_eq!(
        redis.cli(&["HEXISTS", "routes", "app.cloud.com"]).trim(),
        "0"
    );
    // Deleting what is not there is said so, never "deleted".
    let again = run(&["route", "del", "app.cloud.com"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(
        stdout(&again),
        "no route for app.cloud.com: nothing deleted\n"
    );
}

#[test]
fn redis_failures_are_reported_in_words_with_their_exit_code() {
    let down = switchyard(&["route", "list", "--redis-url", "redis://127.0.0.1:1/0"]);
    assert_eq!(down.status.code(), Some(69), "{}", stderr(&down));
    assert_eq!(
        stderr(&down),
        "switchyard: cannot reach Redis at redis://127.0.0.1:1/0: connection refused\n"
    );

    let redis = RedisServer::builder().password("right").start();
    let wrong = format!("redis://:wrong@127.0.0.1:{}/0", redis.port);
    let out = switchyard(&["status", "--redis-url", &wrong]);
    assert_exit(&out, 77);
    assert!(
        stderr(&out).contains("refused the credentials"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("wrong"),
        "password shown: {}",
        stderr(&out)
    );

    // A user the ACL lets read but not write.
    redis.cli(&[
        "ACL", "SETUSER", "reader", "on", ">pw", "~*", "&*", "+@all", "-hset", "-hdel",
    ]);
    let reader = format!("redis://reader:pw@127.0.0.1:{}/0", redis.port);
    let out = switchyard(&[
        "route",
        "set",
        "a.cloud.com",
        "10.0.0.1:80",
        "--redis-url",
        &reader,
    ]);
    assert_exit(&out, 77);
    assert!(stderr(&out).contains("(ACL)"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("Error {"), "{}", stderr(&out));
    let out = switchyard(&["route", "list", "--redis-url", &reader]);
    assert_exit(&out, 0);
}

/// The `ACL SETUSER <user>` line of README.md (its first occurrence), as
/// arguments, with `PASSWORD` replaced by `pw`.
pub(crate) fn readme_acl(user: &str) -> Vec<String> {
    let readme = include_str!("../../README.md");
    let start = readme
        .find(&format!("ACL SETUSER {user} "))
        .unwrap_or_else(|| panic!("README has no ACL line for {user}"));
    let mut line = String::new();
    for part in readme[start..].lines() {
        match part.trim_end().strip_suffix('\\') {
            Some(continued) => line.push_str(continued),
            None => {
                line.push_str(part);
                break;
            }
        }
    }
    line.split_whitespace()
        .map(|w| w.replace(">PASSWORD", ">pw"))
        .collect()
}

/// The README's ACL lines, as written: a replica and a controller do all
/// they do (register, announce, leave; set, delete, wait, list, status,
/// accept a removal) and Redis denies them nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_acl_lines_for_replicas_and_controllers_deny_nothing() {
    let redis = RedisServer::start();
    for user in ["switchyard", "controller"] {
        let acl = readme_acl(user);
        let args: Vec<&str> = acl.iter().map(String::as_str).collect();
        assert_eq!(redis.cli(&args).trim(), "OK", "{acl:?}");
    }
    redis.cli(&["ACL", "LOG", "RESET"]);
    let url = |user: &str| format!("redis://{user}:pw@127.0.0.1:{}/0", redis.port);
    let mut config = test_config(&url("switchyard"));
    config.sync.replica_id = "acl-replica".into();
    let replica = ProxyHandle::start(config).await;
    assert_eventually!(
        redis
            .cli(&["HEXISTS", "routes:replicas", "acl-replica"])
            .trim()
            == "1",
        "the replica never registered"
    );
    let controller = url("controller");
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--redis-url", &controller]);
        switchyard(&all)
    };
    for args in [
        &["route", "set", "--wait", "a.cloud.com", "10.0.0.1:80"][..],
        &["route", "del", "--wait", "a.cloud.com"],
        &["route", "del", "--wait", "a.cloud.com"],
        &["route", "list"],
        &["status"],
        &["route", "accept-removal"],
    ] {
        let out = tokio::task::block_in_place(|| run(args));
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    }
    replica.shutdown().await;
    assert_eq!(
        redis
            .cli(&["HEXISTS", "routes:replicas", "acl-replica"])
            .trim(),
        "0",
        "the replica did not leave"
    );
    let log = redis.cli(&["ACL", "LOG"]);
    assert!(log.trim().is_empty(), "denied: {log}");
}

/// What SIGHUP does inside the library: a reload request loads the
/// default certificate's files again, changed or not (their own polling,
/// an hour here, would not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_request_reads_the_default_certificate_again() {
    use crate::tls_support::{Scratch, TestCa};
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let dir = Scratch::new("reload-tls");
    let leaf = ca.leaf(&["*.cloud.com"]);
    let mut config = test_config(&redis.url());
    config.tls.default_files = Some(switchyard::config::CertFilePaths {
        cert: dir.write("cert.pem", &leaf.chain_pem),
        key: dir.write("key.pem", &leaf.key_pem),
    });
    config.tls.file_poll_interval = Duration::from_secs(3600);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let reload = switchyard::reload::Reload::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(switchyard::run_reloadable(
        config,
        listener,
        admin,
        async {
            let _ = stopped.await;
        },
        reload.clone(),
    ));
    let loads = || async {
        let metrics = http_get(admin_addr, "localhost", "/metrics").await.body;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("switchyard_tls_file_loads_total{outcome=\"ok\"} "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert_eventually!(loads().await == 1.0, "the files were never loaded");
    reload.request();
    assert_eventually!(loads().await == 2.0, "a reload request did not reload");
    reload.request();
    assert_eventually!(
        loads().await == 3.0,
        "a second reload request did not reload"
    );
    let _ = stop.send(());
    task.await.unwrap();
}
