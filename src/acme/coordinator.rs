//! The ACME task of one replica: every tick it looks at the route table
//! and the certificate table, asks [`plan`](super::plan) which hosts need
//! an order, and runs the orders it can take a per-host lock and a
//! cluster-wide lease for. Each order keeps its lock and lease alive,
//! writes the result through the same validation and sealing as `cert
//! set`, records the outcome for every replica, and releases what it took
//! (README.md, "Automatic certificates").

use super::metrics::AcmeMetrics;
use super::order::{self, OrderError};
use super::plan::{self, Backoff, Decision, HostRecord, Need, ServedCert};
use super::store::{Keys, Store, Written};
use crate::config::{AcmeConfig, Config};
use crate::routes::{Entry, FieldKey};
use crate::state::SharedState;
use crate::tls::certs::{self, LoadedCert};
use crate::tls::seal::{self, Purpose, Sealer};
use crate::tls::table::{CertTable, LoadContext};
use fred::prelude::*;
use instant_acme::{Account, Key};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The sealing context of the account key.
const ACCOUNT_CONTEXT: &str = "acme-account";
/// Expired challenge tokens (a dead replica's) are swept this often.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn served(cert: &LoadedCert, exact: bool) -> ServedCert {
    ServedCert {
        leaf_sha256: sha256_hex(cert.leaf()),
        not_before: cert.info.not_before,
        not_after: cert.info.not_after,
        exact,
    }
}

/// What every order of this replica shares.
struct Shared {
    acme: AcmeConfig,
    store: Store,
    /// Seals certificate keys, as `cert set` does.
    cert_sealer: Option<Sealer>,
    account_sealer: Option<Sealer>,
    /// Names this replica's locks and leases.
    holder: String,
    backoff: Backoff,
    metrics: AcmeMetrics,
    account: tokio::sync::Mutex<Option<Account>>,
    /// Hosts this replica is ordering now.
    running: Mutex<HashSet<String>>,
}

/// Runs the ACME task until `stop`; orders in flight are abandoned at
/// `stop` and their locks and leases released. Does nothing when
/// `config.acme` is `None`.
pub async fn run(config: Config, state: Arc<SharedState>, stop: CancellationToken) {
    let Some(acme) = config.acme.clone() else {
        return;
    };
    let Some(client) = connect(&config, &stop).await else {
        return;
    };
    let secret = config.tls.secret.as_ref();
    let shared = Arc::new(Shared {
        store: Store {
            client: client.clone(),
            keys: Keys::new(&config.sync.routes_key, &config.tls.certs_key),
        },
        cert_sealer: secret.map(|s| Sealer::new(s, Purpose::CertKey)),
        account_sealer: secret.map(|s| Sealer::new(s, Purpose::AcmeAccountKey)),
        holder: format!("{}:{:016x}", config.sync.replica_id, rand::random::<u64>()),
        backoff: Backoff {
            min: acme.backoff_min,
            max: acme.backoff_max,
        },
        metrics: AcmeMetrics::register(state.metrics.registry()),
        account: tokio::sync::Mutex::new(None),
        running: Mutex::new(HashSet::new()),
        acme,
    });
    tracing::info!(
        directory = %shared.acme.directory,
        holder = %shared.holder,
        "automatic certificates: started"
    );
    let mut orders = JoinSet::new();
    let mut certs = CertTable::unloaded();
    let mut ticks = tokio::time::interval(shared.acme.tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sweep = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticks.tick() => {}
            Some(_) = orders.join_next(), if !orders.is_empty() => continue,
        }
        if let Err(e) = tick(&shared, &state, &mut certs, &mut orders, &stop).await {
            tracing::warn!(error = %e, "automatic certificates: Redis unavailable, retrying");
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = tokio::time::Instant::now();
            let _ = shared.store.sweep_challenges().await;
        }
    }
    // Orders see `stop` through their child tokens and release what they
    // hold before they return.
    while orders.join_next().await.is_some() {}
    let _ = tokio::time::timeout(Duration::from_secs(1), client.quit()).await;
    tracing::info!("automatic certificates: stopped");
}

async fn connect(config: &Config, stop: &CancellationToken) -> Option<Client> {
    let mut delay = Duration::from_millis(100);
    loop {
        let client = Builder::from_config(config.sync.redis.clone())
            .with_connection_config(|c| c.connection_timeout = config.sync.tuning.command_timeout)
            .with_performance_config(|p| {
                p.default_command_timeout = config.sync.tuning.command_timeout
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build();
        match client {
            Ok(client) => match client.init().await {
                Ok(_) => return Some(client),
                Err(e) => {
                    tracing::warn!(error = %e, "automatic certificates: cannot reach Redis");
                    let _ = client.quit().await;
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "automatic certificates: bad Redis configuration");
                return None;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// One look at the tables: starts the orders that are due and can be
/// taken.
async fn tick(
    shared: &Arc<Shared>,
    state: &Arc<SharedState>,
    own_certs: &mut CertTable,
    orders: &mut JoinSet<()>,
    stop: &CancellationToken,
) -> Result<(), fred::error::Error> {
    let routes = state.table_full();
    if !routes.is_loaded() {
        return Ok(());
    }
    let hosts: Vec<String> = routes
        .entries()
        .into_iter()
        .filter(|(host, entry)| {
            matches!(entry, Entry::Valid(_))
                && !host.starts_with("*.")
                && shared.acme.domains.matches(host)
        })
        .map(|(host, _)| host)
        .collect();
    if hosts.is_empty() {
        return Ok(());
    }
    // The replica's own certificate table once its sync loop follows the
    // certs hash; until then, a table of our own from a read of the hash
    // (unchanged values are carried over, not parsed again).
    let followed: Option<Arc<CertTable>> = {
        let table = state.certs.table();
        table.is_loaded().then(|| Arc::clone(&table))
    };
    let certs: &CertTable = match &followed {
        Some(table) => table,
        None => {
            let raw = shared.store.cert_entries().await?;
            let ctx = LoadContext {
                sealer: shared.cert_sealer.as_ref(),
                now: SystemTime::now(),
            };
            *own_certs = CertTable::build(&raw, own_certs, ctx).0;
            own_certs
        }
    };
    let records = shared.store.records().await?;
    let now = now_ms();
    let due = plan::plan(
        hosts.iter().map(String::as_str),
        |host| {
            certs
                .exact(host)
                .map(|c| served(c, true))
                .or_else(|| certs.lookup(host).map(|c| served(c, false)))
        },
        |host| records.get(host),
        now,
    );
    for (host, need) in due {
        if shared.running.lock().expect("not poisoned").len() >= shared.acme.max_concurrent {
            break;
        }
        if shared.running.lock().expect("not poisoned").contains(&host) {
            continue;
        }
        if !shared
            .store
            .lock(&host, &shared.holder, shared.acme.lock_ttl)
            .await?
        {
            continue;
        }
        let member = format!("{}|{host}", shared.holder);
        let leased = shared
            .store
            .lease(&member, shared.acme.max_concurrent, shared.acme.lock_ttl)
            .await;
        if !matches!(leased, Ok(true)) {
            shared.store.release(&host, &shared.holder, &member).await?;
            leased?;
            break; // The cluster is at its cap: later ticks take the rest.
        }
        shared
            .running
            .lock()
            .expect("not poisoned")
            .insert(host.clone());
        shared.metrics.in_flight.inc();
        let order = Held {
            shared: shared.clone(),
            host,
            member,
            need,
        };
        orders.spawn(order.run(stop.child_token()));
    }
    Ok(())
}

/// An order whose lock and lease are held.
struct Held {
    shared: Arc<Shared>,
    host: String,
    member: String,
    need: Need,
}

/// How an order ended, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Issued,
    Failed,
    /// Nothing to do once the lock was held: another replica had just
    /// issued, or someone set a certificate by hand.
    Superseded,
    /// The lock was lost (Redis unreachable) or the replica stopped.
    Abandoned,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Issued => "issued",
            Outcome::Failed => "failed",
            Outcome::Superseded => "superseded",
            Outcome::Abandoned => "abandoned",
        }
    }
}

impl Held {
    async fn run(self, stop: CancellationToken) {
        let shared = self.shared.clone();
        let mut tokens = Vec::new();
        let outcome = tokio::select! {
            outcome = self.order(&mut tokens) => outcome,
            lost = self.keep_alive() => {
                tracing::warn!(host = %self.host, error = %lost, "automatic certificates: order abandoned");
                Outcome::Abandoned
            }
            _ = stop.cancelled() => Outcome::Abandoned,
        };
        let store = &shared.store;
        let _ = store.del_challenges(&tokens).await;
        if let Err(e) = store
            .release(&self.host, &shared.holder, &self.member)
            .await
        {
            tracing::warn!(host = %self.host, error = %e, "automatic certificates: lock not released (it expires)");
        }
        shared.metrics.order(outcome);
        if outcome == Outcome::Issued && self.need == Need::Renew {
            shared.metrics.renewals.inc();
        }
        shared.metrics.in_flight.dec();
        shared
            .running
            .lock()
            .expect("not poisoned")
            .remove(&self.host);
    }

    /// Extends the lock and lease every third of their life; returns only
    /// when they were lost.
    async fn keep_alive(&self) -> OrderError {
        let shared = &self.shared;
        let every = shared.acme.lock_ttl / 3;
        loop {
            tokio::time::sleep(every).await;
            match shared
                .store
                .keep(
                    &self.host,
                    &shared.holder,
                    &self.member,
                    shared.acme.lock_ttl,
                )
                .await
            {
                Ok(true) => {}
                Ok(false) => return OrderError::LockLost,
                // One failed extension is survivable: the lock lives on
                // for two more thirds; a second in a row is not.
                Err(e) => {
                    tracing::warn!(host = %self.host, error = %e, "automatic certificates: lock not extended");
                    tokio::time::sleep(every).await;
                    match shared
                        .store
                        .keep(
                            &self.host,
                            &shared.holder,
                            &self.member,
                            shared.acme.lock_ttl,
                        )
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => return OrderError::LockLost,
                        Err(e) => return OrderError::Redis(e),
                    }
                }
            }
        }
    }

    async fn order(&self, tokens: &mut Vec<String>) -> Outcome {
        let shared = &self.shared;
        let host = self.host.as_str();
        // Under the lock, the hash and the record are the authority: the
        // tables that started this order may be a moment old.
        let (previous, record) =
            match tokio::try_join!(shared.store.cert_value(host), shared.store.record(host)) {
                Ok(read) => read,
                Err(e) => {
                    tracing::warn!(host, error = %e, "automatic certificates: Redis unavailable");
                    return Outcome::Abandoned;
                }
            };
        let field = FieldKey::Exact(host.to_owned());
        let current = previous.as_deref().and_then(|v| {
            certs::load(
                v,
                Some(&field),
                shared.cert_sealer.as_ref(),
                SystemTime::now(),
            )
            .ok()
        });
        let decision = plan::decide(
            current.as_ref().map(|c| served(c, true)).as_ref(),
            record.as_ref(),
            now_ms(),
        );
        if !matches!(decision, Decision::Order(_)) {
            return Outcome::Superseded;
        }
        let record = record.unwrap_or_default();
        tracing::info!(host, need = ?self.need, "automatic certificates: ordering");
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(shared.acme.order_timeout, async {
            let account = self.account().await?;
            let issued = order::order(
                &account,
                host,
                &shared.store,
                shared.acme.challenge_ttl,
                shared.acme.order_timeout,
                tokens,
            )
            .await?;
            self.write(previous.as_deref(), issued, &field).await
        })
        .await
        {
            Ok(result) => result,
            Err(_) => Err(OrderError::Timeout(shared.acme.order_timeout)),
        };
        match result {
            Ok(Written::Yes) => {
                tracing::info!(
                    host,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "automatic certificates: issued"
                );
                Outcome::Issued
            }
            Ok(Written::FieldChanged) => {
                tracing::info!(host, "automatic certificates: a certificate was set meanwhile; the issued one is dropped");
                Outcome::Superseded
            }
            Ok(Written::LockLost) | Err(OrderError::LockLost) => {
                tracing::warn!(host, "automatic certificates: the lock expired before the certificate was written; dropped");
                Outcome::Abandoned
            }
            Err(e) => {
                let failed = record.failed(e.to_string(), now_ms(), &shared.backoff);
                tracing::warn!(
                    host,
                    error = %e,
                    failures = failed.failures,
                    retry_in_ms = failed.retry_at_ms.unwrap_or_default() - now_ms(),
                    "automatic certificates: order failed"
                );
                if let Err(e) = shared.store.put_record(host, &failed).await {
                    tracing::warn!(host, error = %e, "automatic certificates: failure not recorded");
                }
                Outcome::Failed
            }
        }
    }

    /// Checks, seals and writes the certificate with `cert set`'s code.
    async fn write(
        &self,
        previous: Option<&[u8]>,
        issued: order::Issued,
        field: &FieldKey,
    ) -> Result<Written, OrderError> {
        let shared = &self.shared;
        let value = crate::tls::cli::value_for(
            field,
            issued.chain_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            shared.cert_sealer.as_ref(),
        )
        .map_err(|e| OrderError::Unusable(e.message))?;
        let leaf = CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| OrderError::Unusable("no certificate in the chain".into()))?;
        let record = HostRecord {
            leaf_sha256: Some(sha256_hex(&leaf)),
            not_before: Some(value.info.not_before),
            not_after: Some(value.info.not_after),
            ..HostRecord::default()
        };
        Ok(shared
            .store
            .write_cert(&self.host, &shared.holder, previous, &value.text, &record)
            .await?)
    }

    /// The replica's account, made once from the key in Redis.
    async fn account(&self) -> Result<Account, OrderError> {
        let shared = &self.shared;
        let mut slot = shared.account.lock().await;
        if let Some(account) = slot.as_ref() {
            return Ok(account.clone());
        }
        let stored = shared
            .store
            .account_key(|| {
                let (_, der) = Key::generate_pkcs8().expect("ring generates P-256 keys");
                let pem = certs::pem_block("PRIVATE KEY", der.secret_pkcs8_der());
                match &shared.account_sealer {
                    Some(sealer) => sealer.seal(ACCOUNT_CONTEXT, pem.as_bytes()),
                    None => pem,
                }
            })
            .await?;
        let pem = match seal::find_block(&stored) {
            Some(body) => {
                let body = body.map_err(|e| OrderError::Unusable(format!("account key: {e}")))?;
                let sealer = shared.account_sealer.as_ref().ok_or_else(|| {
                    OrderError::Unusable(
                        "the account key is sealed and this replica has no --certs-secret-file"
                            .into(),
                    )
                })?;
                sealer
                    .open(ACCOUNT_CONTEXT, body)
                    .map_err(|e| OrderError::Unusable(format!("account key: {e}")))?
            }
            None => stored.to_vec(),
        };
        let der = PrivatePkcs8KeyDer::from_pem_slice(&pem)
            .map_err(|e| OrderError::Unusable(format!("account key: {e}")))?;
        let key = Key::from_pkcs8_der(der.clone_key())?;
        let builder = match &shared.acme.ca_file {
            Some(path) => Account::builder_with_root(path)?,
            None => Account::builder()?,
        };
        let (account, _) = builder
            .create_from_key(
                (key, PrivateKeyDer::Pkcs8(der)),
                shared.acme.directory.clone(),
            )
            .await?;
        if let Some(email) = &shared.acme.email {
            let contact = format!("mailto:{email}");
            account.update_contacts(&[contact.as_str()]).await?;
        }
        *slot = Some(account.clone());
        Ok(account)
    }
}
