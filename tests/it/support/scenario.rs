//! The prologue most tests share, as one builder: a private Redis, named
//! echo backends, routes to them, and ready proxy replicas.
//!
//! ```ignore
//! let Scene { redis, proxy, backends: [blue, green], .. } = Scenario::new()
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
    /// (host, value) with backend names in the value, resolved at start.
    routes: Vec<(String, String)>,
    replicas: usize,
    config: Vec<Box<ConfigChange>>,
}

impl Scenario<0> {
    /// A plain Redis, no backend, no route, one proxy with [`test_config`].
    pub fn new() -> Scenario<0> {
        Scenario {
            redis: RedisServer::builder(),
            backends: [],
            routes: Vec::new(),
            replicas: 1,
            config: Vec::new(),
        }
    }
}

impl<const N: usize> Scenario<N> {
    /// Echo backends answering as these names, in this order in
    /// [`Scene::backends`].
    pub fn backends<const M: usize>(self, names: [&'static str; M]) -> Scenario<M> {
        Scenario {
            redis: self.redis,
            backends: names,
            routes: self.routes,
            replicas: self.replicas,
            config: self.config,
        }
    }

    /// The Redis to start instead of a plain one.
    pub fn redis(mut self, redis: RedisServerBuilder) -> Self {
        self.redis = redis;
        self
    }

    /// `HSET routes host value` before the proxies start, where `backends`
    /// names backends of the scenario, comma-separated (`"blue"`,
    /// `"blue,green"`).
    pub fn route(mut self, host: &str, backends: &str) -> Self {
        self.routes.push((host.to_owned(), backends.to_owned()));
        self
    }

    /// Changes every proxy's config (after [`test_config`]).
    pub fn config(mut self, change: impl Fn(&mut Config) + Send + Sync + 'static) -> Self {
        self.config.push(Box::new(change));
        self
    }

    /// Starts `n` proxies on the same Redis (replica ids `r1`..`rn`).
    pub fn replicas(mut self, n: usize) -> Self {
        assert!(n >= 1, "a scenario has at least one proxy");
        self.replicas = n;
        self
    }

    /// Starts everything; returns once every proxy is ready.
    pub async fn start(self) -> Scene<N> {
        let redis = self.redis.start();
        let mut backends = Vec::with_capacity(N);
        for name in self.backends {
            backends.push(Backend::echo(name).await);
        }
        let target = |name: &str| {
            let backend = backends.iter().find(|b| b.name == name.trim());
            backend.unwrap_or_else(|| panic!("no backend {name:?} in the scenario"))
        };
        if !self.routes.is_empty() {
            let mut hset = String::from("HSET routes");
            for (host, names) in &self.routes {
                let value: Vec<String> = names.split(',').map(|n| target(n).target()).collect();
                hset.push_str(&format!(" {host} {}", value.join(",")));
            }
            redis.pipe(&(hset + "\n"));
        }
        let mut proxies = Vec::with_capacity(self.replicas);
        for i in 1..=self.replicas {
            let mut config = test_config(&redis.url());
            config.sync.replica_id = format!("r{i}");
            for change in &self.config {
                change(&mut config);
            }
            proxies.push(ProxyHandle::start_ready(config).await);
        }
        let proxy = proxies.remove(0);
        Scene {
            redis,
            backends: backends
                .try_into()
                .unwrap_or_else(|_| unreachable!("one backend per name")),
            proxy,
            replicas: proxies,
        }
    }
}

/// A started [`Scenario`]; everything in it stops on drop.
pub struct Scene<const N: usize> {
    pub redis: RedisServer,
    pub backends: [Backend; N],
    /// The first proxy (the only one unless `replicas(n)`).
    pub proxy: ProxyHandle,
    /// The other proxies of `replicas(n)`.
    pub replicas: Vec<ProxyHandle>,
}

impl<const N: usize> Scene<N> {
    /// Every proxy of the scene: `proxy`, then `replicas`.
    pub fn proxies(&self) -> impl Iterator<Item = &ProxyHandle> {
        std::iter::once(&self.proxy).chain(&self.replicas)
    }
}
