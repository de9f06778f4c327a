//! A private Redis-compatible server per test: any configuration a test
//! needs (password, TLS, ACL users, Sentinel, replica, a chosen server
//! binary, extra arguments) through one builder, on free loopback ports,
//! killed and its directory removed on drop. Also the list of server
//! binaries this machine has ([`server_binaries`]), for the compatibility
//! pass (`compat`).
//!
//! Commands go through the Debian `redis-cli`, which speaks to every server
//! of the matrix (RESP2).

use super::{free_port, patience};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A Redis or Valkey server binary and the version it reports.
#[derive(Debug, Clone)]
pub struct ServerBinary {
    pub path: PathBuf,
    /// `Redis 7.0.15`, `Valkey 9.1.2`: from `--version`.
    pub version: String,
}

impl ServerBinary {
    fn probe(path: PathBuf) -> Option<ServerBinary> {
        let out = Command::new(&path).arg("--version").output().ok()?;
        // "Redis server v=7.0.15 sha=..." / "Valkey server v=8.1.8 ...".
        let text = String::from_utf8_lossy(&out.stdout);
        let mut words = text.split_whitespace();
        let product = words.next()?.to_owned();
        let version = words.find_map(|w| w.strip_prefix("v="))?.to_owned();
        out.status.success().then(|| ServerBinary {
            path,
            version: format!("{product} {version}"),
        })
    }
}

/// The default server: `redis-server` from `PATH` (Debian's, in CI).
fn default_binary() -> PathBuf {
    PathBuf::from("redis-server")
}

/// Where `.ci/install-servers` puts one launcher per server of the matrix.
fn matrix_dir() -> Option<PathBuf> {
    std::env::var_os("SWITCHYARD_TEST_SERVERS")
        .map(PathBuf::from)
        .or_else(|| {
            let home = std::env::var_os("HOME")?;
            Some(PathBuf::from(home).join(".cache/switchyard/servers/bin"))
        })
}

/// Every server binary this machine has, one per version, oldest first:
/// `redis-server` from `PATH`, and each launcher in
/// `$SWITCHYARD_TEST_SERVERS` (default `~/.cache/switchyard/servers/bin`,
/// filled by `.ci/install-servers`).
pub fn server_binaries() -> &'static [ServerBinary] {
    static FOUND: OnceLock<Vec<ServerBinary>> = OnceLock::new();
    FOUND.get_or_init(|| {
        let mut paths = vec![default_binary()];
        if let Some(Ok(entries)) = matrix_dir().map(std::fs::read_dir) {
            let mut launchers: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            launchers.sort();
            paths.extend(launchers);
        }
        let mut found: Vec<ServerBinary> = Vec::new();
        for binary in paths.into_iter().filter_map(ServerBinary::probe) {
            if !found.iter().any(|f| f.version == binary.version) {
                found.push(binary);
            }
        }
        found.sort_by_key(|b| version_key(&b.version));
        assert!(
            !found.is_empty(),
            "redis-server must be installed (apt-get install redis-server)"
        );
        found
    })
}

/// `Valkey 9.1.2` -> (9, 1, 2): Valkey 8 and 9 come after Redis 7.
fn version_key(version: &str) -> Vec<u32> {
    let number = version.rsplit(' ').next().unwrap_or_default();
    number.split('.').filter_map(|n| n.parse().ok()).collect()
}

/// How to start a server; see [`RedisServer::builder`].
#[derive(Debug, Clone, Default)]
pub struct RedisServerBuilder {
    binary: Option<PathBuf>,
    args: Vec<String>,
    password: Option<String>,
    acl_users: Vec<(String, String)>,
    tls: bool,
    sentinel_of: Option<u16>,
}

impl RedisServerBuilder {
    /// Runs this binary instead of `redis-server` from `PATH`.
    pub fn binary(mut self, binary: &ServerBinary) -> Self {
        self.binary = Some(binary.path.clone());
        self
    }

    /// Extra server arguments (`--hash-max-listpack-entries 4096`, ...).
    pub fn args<const N: usize>(mut self, args: [&str; N]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// A replica of the server on `port`.
    pub fn replica_of(self, port: u16) -> Self {
        self.args(["--replicaof", "127.0.0.1", &port.to_string()])
    }

    /// Clients must authenticate with `password` (`requirepass`);
    /// [`RedisServer::cli`] does.
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// `ACL SETUSER name rules...` once the server is up (`rules` split on
    /// white space).
    pub fn acl_user(mut self, name: &str, rules: &str) -> Self {
        self.acl_users.push((name.to_owned(), rules.to_owned()));
        self
    }

    /// Also listens with TLS on [`RedisServer::tls_port`], with a private
    /// CA ([`RedisServer::tls_ca`]) and no client certificates.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// A Sentinel watching the master on `master_port` as `mymaster`
    /// (quorum 1, fast timeouts: a failover takes a second or two).
    pub fn sentinel_of(mut self, master_port: u16) -> Self {
        self.sentinel_of = Some(master_port);
        self
    }

    /// Starts the server and waits until it answers.
    pub fn start(self) -> RedisServer {
        let mut server = self.reserve();
        server.spawn();
        server
    }

    /// Chooses the port and prepares everything, but starts nothing (for
    /// "Redis appears later"): [`RedisServer::spawn`] starts it.
    pub fn reserve(self) -> RedisServer {
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix(&format!("switchyard-redis-{port}-"))
            .tempdir()
            .expect("a temp directory");
        let log = dir.path().join("redis.log");
        let mut args: Vec<String> = Vec::new();
        let mut tls = None;
        if let Some(master) = self.sentinel_of {
            // A Sentinel rewrites its config file, which must come first.
            let conf = dir.path().join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor mymaster 127.0.0.1 {master} 1\n\
                     sentinel down-after-milliseconds mymaster 500\n\
                     sentinel failover-timeout mymaster 2000\n",
                    dir = dir.path().display()
                ),
            )
            .unwrap();
            args.extend([conf.display().to_string(), "--sentinel".into()]);
        } else {
            args.extend(
                [
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    &dir.path().display().to_string(),
                    // Off: the proxy must turn notifications on itself.
                    "--notify-keyspace-events",
                    "",
                ]
                .map(String::from),
            );
        }
        args.extend(["--logfile".into(), log.display().to_string()]);
        if let Some(password) = &self.password {
            args.extend(["--requirepass".into(), password.clone()]);
        }
        if self.tls {
            let certs = TestCerts::make(dir.path());
            let tls_port = free_port();
            args.extend(
                [
                    "--tls-port",
                    &tls_port.to_string(),
                    "--tls-cert-file",
                    &certs.server_cert.display().to_string(),
                    "--tls-key-file",
                    &certs.server_key.display().to_string(),
                    "--tls-ca-cert-file",
                    &certs.ca.display().to_string(),
                    "--tls-auth-clients",
                    "no",
                ]
                .map(String::from),
            );
            tls = Some((tls_port, certs.ca));
        }
        args.extend(self.args);
        let cli_auth = match &self.password {
            Some(password) => vec!["-a".into(), password.clone(), "--no-auth-warning".into()],
            None => Vec::new(),
        };
        RedisServer {
            port,
            binary: self.binary.unwrap_or_else(default_binary),
            args,
            cli_auth,
            acl_users: self.acl_users,
            tls,
            child: None,
            dir,
        }
    }
}

/// A Redis-compatible server process of one test.
pub struct RedisServer {
    pub port: u16,
    binary: PathBuf,
    args: Vec<String>,
    /// Extra `redis-cli` arguments (`-a password`).
    cli_auth: Vec<String>,
    acl_users: Vec<(String, String)>,
    /// TLS port and the CA that signed the server's certificate.
    tls: Option<(u16, PathBuf)>,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// A plain server, notifications off (the proxy must turn them on).
    pub fn start() -> RedisServer {
        RedisServer::builder().start()
    }

    /// A port chosen now, with no server on it yet (for "Redis appears
    /// later"); [`RedisServer::spawn`] starts it.
    pub fn reserved() -> RedisServer {
        RedisServer::builder().reserve()
    }

    /// Starts the process (again, after [`RedisServer::kill`]: same port,
    /// same directory, so a `SAVE`d dump.rdb is loaded) and waits for PONG.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(&self.binary)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", self.binary.display()));
        self.child = Some(child);
        let deadline = Instant::now() + patience();
        while self.try_cli(&["PING"]).is_none_or(|o| o.trim() != "PONG") {
            assert!(
                Instant::now() < deadline,
                "{} on port {} did not start; log:\n{}",
                self.binary.display(),
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        for (name, rules) in &self.acl_users {
            let mut args = vec!["ACL", "SETUSER", name];
            args.extend(rules.split_whitespace());
            assert_eq!(self.cli(&args).trim(), "OK", "ACL SETUSER {name}");
        }
    }

    /// `redis://127.0.0.1:port/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The TLS port of a server built with [`RedisServerBuilder::tls`].
    pub fn tls_port(&self) -> u16 {
        self.tls.as_ref().expect("built with .tls()").0
    }

    /// The CA certificate that signed the TLS server's certificate.
    pub fn tls_ca(&self) -> &Path {
        &self.tls.as_ref().expect("built with .tls()").1
    }

    /// Kills the server abruptly (SIGKILL), like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    fn cli_command(&self) -> Command {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(&self.cli_auth);
        cmd
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = self.cli_command().args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs one redis-cli command and returns its raw output.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed on port {}", self.port))
    }

    /// One redis-cli command whose last argument is `data` (`redis-cli
    /// -x`): any bytes, any size.
    pub fn cli_stdin(&self, args: &[&str], data: &[u8]) -> String {
        let mut child = self
            .cli_command()
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

    /// Pipes many commands (one per line) through one `redis-cli`.
    pub fn pipe(&self, commands: &str) {
        let mut child = self
            .cli_command()
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(commands.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    }

    /// `HSET routes host value`.
    pub fn hset(&self, host: &str, value: &str) {
        let out = self.cli(&["HSET", "routes", host, value]);
        assert!(out.trim().parse::<u64>().is_ok(), "HSET failed: {out}");
    }

    /// `HDEL routes host`.
    pub fn hdel(&self, host: &str) {
        self.cli(&["HDEL", "routes", host]);
    }

    /// `HSET routes host value` in one transaction with `CLIENT KILL TYPE
    /// pubsub`: the write certainly happens while no subscriber exists, so
    /// its keyspace event is lost for good.
    pub fn hset_while_subscribers_are_killed(&self, host: &str, value: &str) {
        self.pipe(&format!(
            "MULTI\nCLIENT KILL TYPE pubsub\nHSET routes {host} {value}\nEXEC\n"
        ));
    }

    /// `INFO commandstats` as (command, calls) pairs.
    pub fn command_calls(&self) -> std::collections::BTreeMap<String, u64> {
        self.cli(&["INFO", "commandstats"])
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))?
                    .parse()
                    .ok()?;
                Some((name.to_owned(), calls))
            })
            .collect()
    }

    /// The calls of one command so far (0 if never called).
    pub fn calls(&self, command: &str) -> u64 {
        self.command_calls().get(command).copied().unwrap_or(0)
    }

    /// `CONFIG GET notify-keyspace-events`: the flags alone.
    pub fn notify_flags(&self) -> String {
        self.cli(&["CONFIG", "GET", "notify-keyspace-events"])
            .lines()
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private CA and a server certificate for 127.0.0.1 and localhost, made
/// with the `openssl` command.
struct TestCerts {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl TestCerts {
    fn make(dir: &Path) -> TestCerts {
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
        run(&[
            &["req", "-x509", "-nodes", "-days", "2"][..],
            &ec,
            &[
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
            ],
        ]
        .concat());
        run(&[
            &["req", "-new", "-nodes"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat());
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
        TestCerts {
            ca: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
        }
    }
}
