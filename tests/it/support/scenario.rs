//! The prologue most tests share, as one builder: a private Redis, named
//! echo backends, routes to them, and ready proxy replicas.
//!
//! ```ignore
//! let (redis, proxy, [blue, green]) = Scenario::new()
//!     .backends(["blue", "green"])
//!     .route("app.cloud.com", "blue")
//!     .config(|c| c.sync.resync_interval = Duration::from_millis(500))
//!     .start()
//!     .await;
//! ```

use super::backend::Backend;
use super::proxy::{test_config, ProxyHandle};
use super::redis::{RedisServer, RedisServerBuilder};
use switchyard::config::Config;

/// A change to every proxy's config.
type ConfigChange = dyn Fn(&mut Config) + Send + Sync;

/// What to start; see the module doc.
pub struct Scenario<const N: usize> {
    redis: RedisServerBuilder,
    backends: [&'static str; N],
    /// (host, value) in the order given, backend names not yet resolved.
    routes: Vec<(String, String)>,
    config: Vec<Box<ConfigChange>>,
}

impl Scenario<0> {
    /// A plain Redis, no backend, no route, proxies with [`test_config`].
    pub fn new() -> Scenario<0> {
        Scenario {
            redis: RedisServer::builder(),
            backends: [],
            routes: Vec::new(),
            config: Vec::new(),
        }
    }
}

impl<const N: usize> Scenario<N> {
    /// Echo backends answering as these names, returned in this order.
    pub fn backends<const M: usize>(self, names: [&'static str; M]) -> Scenario<M> {
        Scenario {
            redis: self.redis,
            backends: names,
            routes: self.routes,
            config: self.config,
        }
    }

    /// The Redis to start instead of a plain one.
    pub fn redis(mut self, redis: RedisServerBuilder) -> Self {
        self.redis = redis;
        self
    }

    /// `HSET routes host value` before the proxies start. In `value`, each
    /// comma-separated part that names a backend of the scenario becomes its
    /// address (`"blue"`, `"blue, green"`); any other part is kept as
    /// written (another backend's target, an invalid value).
    pub fn route(mut self, host: &str, value: &str) -> Self {
        self.routes.push((host.to_owned(), value.to_owned()));
        self
    }

    /// Changes every proxy's config (after [`test_config`]).
    pub fn config(mut self, change: impl Fn(&mut Config) + Send + Sync + 'static) -> Self {
        self.config.push(Box::new(change));
        self
    }

    /// Starts everything; returns once the proxy is ready. Bind every part
    /// (`_redis`, not `_`): a part not bound is dropped at once.
    pub async fn start(self) -> (RedisServer, ProxyHandle, [Backend; N]) {
        let (redis, mut proxies, backends) = self.start_replicas(1).await;
        (redis, proxies.remove(0), backends)
    }

    /// Starts `n` proxies on the same Redis (replica ids `r1`..`rn`);
    /// returns once every one is ready.
    pub async fn start_replicas(self, n: usize) -> (RedisServer, Vec<ProxyHandle>, [Backend; N]) {
        let redis = self.redis.start();
        let mut backends = Vec::with_capacity(N);
        for name in self.backends {
            backends.push(Backend::echo(name).await);
        }
        let resolve = |part: &str| match backends.iter().find(|b| b.name == part.trim()) {
            Some(backend) => part.replace(part.trim(), &backend.target()),
            None => part.to_owned(),
        };
        let mut hset = vec!["HSET".to_owned(), "routes".to_owned()];
        for (host, value) in &self.routes {
            let parts: Vec<String> = value.split(',').map(resolve).collect();
            hset.extend([host.clone(), parts.join(",")]);
        }
        if hset.len() > 2 {
            let args: Vec<&str> = hset.iter().map(String::as_str).collect();
            redis.cli(&args);
        }
        let mut proxies = Vec::with_capacity(n);
        for i in 1..=n {
            let mut config = test_config(&redis.url());
            config.sync.replica_id = format!("r{i}");
            for change in &self.config {
                change(&mut config);
            }
            proxies.push(ProxyHandle::start_ready(config).await);
        }
        let backends = backends.try_into();
        (redis, proxies, backends.unwrap_or_else(|_| unreachable!()))
    }
}
