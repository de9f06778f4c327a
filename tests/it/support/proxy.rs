//! The real proxy, in-process on ephemeral ports, stopped on drop.

use super::client::{http_get, HttpResponse};
use super::redis::RedisServer;
use std::net::SocketAddr;
use std::time::Duration;
use switchyard::config::Config;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub struct ProxyHandle {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A test config: fast ping and backoff, periodic resync effectively off
/// (an hour) so that tests prove changes arrive by notification, and the
/// removal guard off (tests of other areas delete their last route; the
/// guard's own tests turn it on).
pub fn test_config(redis_url: &str) -> Config {
    let mut config = Config::new(redis_url).expect("valid config");
    config.sync.resync_interval = Duration::from_secs(3600);
    config.sync.max_removal_fraction = 1.0;
    let tuning = &mut config.sync.tuning;
    tuning.ping_interval = Duration::from_millis(200);
    tuning.backoff_min = Duration::from_millis(20);
    tuning.backoff_max = Duration::from_millis(200);
    tuning.command_timeout = Duration::from_secs(2);
    tuning.status_interval = Duration::from_millis(500);
    config.sync.replica_id = format!("test-{}", super::free_port());
    config.proxy.access_log = false;
    config.server.shutdown_timeout = Duration::from_secs(5);
    config
}

pub async fn start_proxy(redis: &RedisServer) -> ProxyHandle {
    start_proxy_with(test_config(&redis.url())).await
}

pub async fn start_proxy_with(config: Config) -> ProxyHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(switchyard::run(config, listener, admin, async {
        let _ = rx.await;
    }));
    ProxyHandle {
        addr,
        admin: admin_addr,
        shutdown: Some(tx),
        task: Some(task),
    }
}

impl ProxyHandle {
    pub async fn get(&self, host: &str, path: &str) -> HttpResponse {
        http_get(self.addr, host, path).await
    }

    pub async fn admin_get(&self, path: &str) -> HttpResponse {
        http_get(self.admin, "localhost", path).await
    }

    pub async fn routes(&self) -> serde_json::Value {
        self.admin_get("/routes").await.json()
    }

    pub async fn ready(&self) -> bool {
        self.admin_get("/readyz").await.status == 200
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

    /// Sends the shutdown signal and waits for `run` to return.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("proxy did not stop")
                .unwrap();
        }
    }

    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

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
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
