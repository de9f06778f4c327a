//! Configs built in code never read the process environment: a developer's
//! exported `SWITCHYARD_*` variables must not change what a test runs
//! (`Config::new`, hence `test_config`). The binary still reads them (see
//! `cli::flags_and_switchyard_env_vars_configure_the_server`).

use crate::support::*;
use std::process::Command;
use std::time::Duration;
use switchyard::config::Config;

/// Set in the child process this test starts.
const CHILD: &str = "SWITCHYARD_TEST_CONFIG_CHILD";

/// Every variable a non-default value (one even an invalid value).
const EXPORTED: [(&str, &str); 9] = [
    ("SWITCHYARD_ROUTES_KEY", "someone-elses-routes"),
    ("SWITCHYARD_RESYNC_INTERVAL", "1h"),
    ("SWITCHYARD_ACCESS_LOG", "false"),
    ("SWITCHYARD_SNAPSHOT_FILE", "/nonexistent/routes.json"),
    ("SWITCHYARD_REPLICA_ID", "from-the-environment"),
    ("SWITCHYARD_MAX_CONNECTIONS", "7"),
    ("SWITCHYARD_CONNECT_TIMEOUT", "9s"),
    ("SWITCHYARD_LISTEN", "127.0.0.1:1"),
    ("SWITCHYARD_MAX_HEADER_SIZE", "10"),
];

fn assert_defaults(config: &Config) {
    assert_eq!(config.sync.routes_key, "routes");
    assert_eq!(config.sync.resync_interval, Duration::from_secs(30));
    assert!(config.proxy.access_log);
    assert_eq!(config.sync.snapshot_file, None);
    assert_ne!(config.sync.replica_id, "from-the-environment");
    assert_eq!(config.server.max_connections, 0);
    assert_eq!(config.proxy.connect_timeout, Duration::from_secs(3));
    assert_eq!(config.server.max_header_size, 32 * 1024);
}

/// Runs itself again as a child process with the variables exported: the
/// child builds `Config::new` and must see the defaults. (A child, because
/// setting variables in this process would race the tests beside it.)
#[test]
fn config_new_ignores_exported_switchyard_variables() {
    let config = Config::new("redis://127.0.0.1:1/0").expect("valid config");
    assert_defaults(&config);
    assert_eq!(
        test_config("redis://127.0.0.1:1/0").sync.routes_key,
        "routes"
    );
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "config::config_new_ignores_exported_switchyard_variables",
            "--exact",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .envs(EXPORTED)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "with {EXPORTED:?} exported:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
