//! One ACME order, for one host, with HTTP-01: the talk with the CA
//! (RFC 8555 through `instant-acme`), the challenge tokens published in
//! Redis for whichever replica the CA reaches (validation is asked for
//! once every live replica follows the token into memory), a fresh ECDSA P-256 key and
//! its CSR (`rcgen`). Locks, leases and writing the result are the
//! caller's ([`super::coordinator`]).

use super::store::Store;
use crate::replicas::wait::Progress;
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, Problem,
    RetryPolicy,
};
use std::time::Duration;

/// How long an order waits for every replica to hold its HTTP-01 token
/// before the CA is told to validate.
const REPLICAS_CATCH_UP: Duration = Duration::from_secs(10);

/// Why an order did not give a certificate.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// The CA said no; the text holds its problem document(s).
    #[error("the CA refused: {0}")]
    Refused(String),
    /// Talking to the CA failed (network, protocol, timeout).
    #[error("ACME: {0}")]
    Acme(instant_acme::Error),
    #[error("Redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("certificate key or CSR: {0}")]
    Key(#[from] rcgen::Error),
    #[error("the issued certificate does not load: {0}")]
    Unusable(String),
    #[error("the order took longer than {0:?}")]
    Timeout(Duration),
    #[error("the order lock was lost (Redis unreachable or too slow): order abandoned")]
    LockLost,
}

/// A problem document, in one line: type, detail, status, subproblems.
pub fn describe_problem(p: &Problem) -> String {
    let mut out = format!(
        "{} ({}",
        p.detail.as_deref().unwrap_or("no detail"),
        p.r#type.as_deref().unwrap_or("no type")
    );
    if let Some(status) = p.status {
        out.push_str(&format!(", HTTP {status}"));
    }
    out.push(')');
    for sub in &p.subproblems {
        out.push_str(&format!("; {sub}"));
    }
    out
}

impl From<instant_acme::Error> for OrderError {
    /// A problem document from the CA is a refusal, whatever step it came
    /// from (new order, challenge, polling, finalisation).
    fn from(e: instant_acme::Error) -> OrderError {
        match e {
            instant_acme::Error::Api(p) => OrderError::Refused(describe_problem(&p)),
            other => OrderError::Acme(other),
        }
    }
}

/// An issued certificate: the chain as the CA sent it, and its key.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

/// How long orders are polled: quickly at first (a test CA answers in
/// milliseconds), then backing off towards the CA's pace.
fn polling(timeout: Duration) -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(100))
        .backoff(1.5)
        .timeout(timeout)
}

/// Orders a certificate for `host`; every challenge token written is
/// pushed to `tokens` (for the caller to delete, whatever the outcome).
pub async fn order(
    account: &Account,
    host: &str,
    store: &Store,
    challenge_ttl: Duration,
    timeout: Duration,
    tokens: &mut Vec<String>,
) -> Result<Issued, OrderError> {
    let identifiers = [Identifier::Dns(host.to_owned())];
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;

    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => {
                return Err(OrderError::Refused(format!(
                    "authorization for {host} is {other:?}"
                )))
            }
        }
        let mut challenge = authz.challenge(ChallengeType::Http01).ok_or_else(|| {
            OrderError::Refused(format!("the CA offers no http-01 challenge for {host}"))
        })?;
        let token = challenge.token.clone();
        let written_at = store
            .put_challenge(
                &token,
                challenge.key_authorization().as_str(),
                challenge_ttl,
            )
            .await?;
        tokens.push(token);
        // The CA may reach any replica: tell it to validate once every
        // live replica holds the token in memory (or a replica lags: then
        // after a while all the same, as the CA may reach another one).
        match store
            .replicas_caught_up(written_at, REPLICAS_CATCH_UP)
            .await?
        {
            Progress::Live | Progress::NoReplicas => {}
            Progress::Waiting => tracing::warn!(
                host,
                "automatic certificates: not every replica has the HTTP-01 token after {:?}; \
                 asking the CA to validate anyway",
                REPLICAS_CATCH_UP
            ),
        }
        challenge.set_ready().await?;
    }

    let status = order.poll_ready(&polling(timeout)).await?;
    if status != OrderStatus::Ready {
        return Err(OrderError::Refused(why_invalid(&mut order, host).await));
    }

    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key)?;
    order.finalize_csr(csr.der()).await?;
    let chain_pem = order.poll_certificate(&polling(timeout)).await?;
    Ok(Issued {
        chain_pem,
        key_pem: key.serialize_pem(),
    })
}

/// The problem documents of an invalid order: its own, and its
/// challenges'.
async fn why_invalid(order: &mut instant_acme::Order, host: &str) -> String {
    let mut problems = Vec::new();
    if let Some(p) = &order.state().error {
        problems.push(describe_problem(p));
    }
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        if authz.refresh().await.is_err() {
            continue;
        }
        for challenge in &authz.challenges {
            if let Some(p) = &challenge.error {
                problems.push(describe_problem(p));
            }
        }
    }
    if problems.is_empty() {
        format!("the order for {host} became invalid (no problem document)")
    } else {
        problems.join("; ")
    }
}
