//! Which hosts need a certificate ordered, and when: pure decisions over
//! the route table, the certificate table and the per-host records, so
//! every rule is unit-tested without Redis or a CA (README.md,
//! "Automatic certificates").
//!
//! A host is ordered when it has an exact route, matches `--acme-domains`
//! and has no valid certificate, or has one this module issued (its leaf
//! is the one recorded) past two thirds of its lifetime. A valid
//! certificate set by hand always wins. Failures back off exponentially
//! per host; nothing here ever removes a certificate.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::Duration;

/// `--acme-domains`: `*.suffix` (any host below the suffix, at any depth)
/// or an exact host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainPatterns {
    exact: Vec<String>,
    /// Suffixes with their leading dot: `.cloud.com`.
    suffixes: Vec<String>,
}

/// A pattern `--acme-domains` refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

impl DomainPatterns {
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<DomainPatterns, PatternError> {
        let mut out = DomainPatterns::default();
        for raw in patterns {
            let raw = raw.as_ref().trim();
            if raw.is_empty() {
                continue;
            }
            let error = |reason: &str| PatternError {
                pattern: raw.to_owned(),
                reason: reason.to_owned(),
            };
            let (wildcard, name) = match raw.strip_prefix("*.") {
                Some(suffix) => (true, suffix),
                None => (false, raw),
            };
            let name = crate::routes::normalize_host(name)
                .map_err(|e| error(&e.to_string()))?
                .into_owned();
            if !is_dns_name(&name) {
                return Err(error("must be a DNS name (ACME HTTP-01 does not cover IP addresses or wildcards inside a name)"));
            }
            if wildcard {
                out.suffixes.push(format!(".{name}"));
            } else {
                out.exact.push(name);
            }
        }
        if out.exact.is_empty() && out.suffixes.is_empty() {
            return Err(PatternError {
                pattern: String::new(),
                reason: "no pattern given".into(),
            });
        }
        Ok(out)
    }

    /// Does a (normalised) host match one of the patterns?
    pub fn matches(&self, host: &str) -> bool {
        is_dns_name(host)
            && (self.exact.iter().any(|e| e == host)
                || self
                    .suffixes
                    .iter()
                    .any(|s| host.len() > s.len() && host.ends_with(s.as_str())))
    }
}

/// A name a CA can validate with HTTP-01: labels of letters, digits and
/// hyphens, at least two of them, not an IP address.
fn is_dns_name(name: &str) -> bool {
    name.parse::<IpAddr>().is_err()
        && name.contains('.')
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// What this module remembers about a host, kept in the hosts hash
/// (`<routes-key>:acme:hosts`, one JSON value per host) so that every
/// replica knows which certificates are automatic and when to retry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// SHA-256 (hex) of the leaf this module last wrote for the host: a
    /// certificate in the certs hash is automatic iff its leaf is this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_sha256: Option<String>,
    /// Unix seconds of the issued certificate's validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<i64>,
    /// Failed orders since the last success.
    #[serde(default)]
    pub failures: u32,
    /// Unix milliseconds before which no replica orders again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl HostRecord {
    /// The record after a failed order at `now_ms`.
    pub fn failed(&self, error: String, now_ms: i64, backoff: &Backoff) -> HostRecord {
        let failures = self.failures.saturating_add(1);
        HostRecord {
            failures,
            retry_at_ms: Some(now_ms.saturating_add(backoff.delay(failures).as_millis() as i64)),
            last_error: Some(error),
            ..self.clone()
        }
    }
}

/// The certificate the certs table serves for a host, as far as planning
/// cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedCert {
    pub leaf_sha256: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// Stored under the host's own field (not a wildcard's).
    pub exact: bool,
}

/// Why a host is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// No valid certificate.
    Issue,
    /// Ours, past two thirds of its lifetime.
    Renew,
}

/// What to do about one host now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Order(Need),
    /// A valid certificate set by hand (or a wildcard's): left alone.
    Manual,
    /// Ours and fresh: renewed from `renew_at` (unix seconds).
    Fresh {
        renew_at: i64,
    },
    /// Failed lately: no order before `until_ms` (unix milliseconds).
    BackingOff {
        until_ms: i64,
    },
}

/// When a certificate valid from `not_before` to `not_after` is renewed:
/// once two thirds of its lifetime has passed (Let's Encrypt's 90 days:
/// at day 60, leaving 30 days for retries).
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    let lifetime = not_after.saturating_sub(not_before).max(0);
    not_before.saturating_add(lifetime / 3 * 2 + (lifetime % 3) * 2 / 3)
}

/// The decision for one host that has a route and matches the patterns.
pub fn decide(served: Option<&ServedCert>, record: Option<&HostRecord>, now_ms: i64) -> Decision {
    let now = now_ms.div_euclid(1000);
    let need = match served {
        Some(cert) if now <= cert.not_after => {
            let ours = cert.exact
                && record.and_then(|r| r.leaf_sha256.as_deref()) == Some(cert.leaf_sha256.as_str());
            if !ours {
                return Decision::Manual;
            }
            let renew_at = renew_at(cert.not_before, cert.not_after);
            if now < renew_at {
                return Decision::Fresh { renew_at };
            }
            Need::Renew
        }
        _ => Need::Issue,
    };
    match record.and_then(|r| r.retry_at_ms) {
        Some(until_ms) if until_ms > now_ms => Decision::BackingOff { until_ms },
        _ => Decision::Order(need),
    }
}

/// Exponential backoff after failures: `min` after the first, doubled
/// after each further one, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(32);
        self.min
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// The hosts to order now, in a stable order (renewals of soonest-expiring
/// first would need more state; new hosts and renewals are both urgent).
pub fn plan<'a, I, C, R>(hosts: I, served: C, record: R, now_ms: i64) -> Vec<(String, Need)>
where
    I: IntoIterator<Item = &'a str>,
    C: Fn(&str) -> Option<ServedCert>,
    R: Fn(&str) -> Option<&'a HostRecord>,
{
    let mut out: Vec<(String, Need)> = hosts
        .into_iter()
        .filter_map(
            |host| match decide(served(host).as_ref(), record(host), now_ms) {
                Decision::Order(need) => Some((host.to_owned(), need)),
                _ => None,
            },
        )
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const DAY: i64 = 86_400;

    fn patterns(p: &[&str]) -> DomainPatterns {
        DomainPatterns::parse(p).unwrap()
    }

    #[test]
    fn patterns_match_suffixes_at_any_depth_and_exact_hosts() {
        let p = patterns(&["*.cloud.com", "Shop.Example.org"]);
        assert!(p.matches("app.cloud.com"));
        assert!(p.matches("a.b.cloud.com"));
        assert!(p.matches("shop.example.org"));
        assert!(!p.matches("cloud.com"), "the suffix itself is not below it");
        assert!(!p.matches("xcloud.com"));
        assert!(!p.matches("www.shop.example.org"));
        assert!(!p.matches("127.0.0.1"));
    }

    #[test]
    fn patterns_refuse_what_a_ca_cannot_validate() {
        for bad in [
            &["127.0.0.1"][..],
            &["*.10.0.0.1"],
            &["a.*.com"],
            &["localhost"],
            &[""],
            &[],
        ] {
            assert!(DomainPatterns::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn cert(not_before: i64, not_after: i64, leaf: &str) -> ServedCert {
        ServedCert {
            leaf_sha256: leaf.into(),
            not_before,
            not_after,
            exact: true,
        }
    }

    fn ours(leaf: &str) -> HostRecord {
        HostRecord {
            leaf_sha256: Some(leaf.into()),
            ..HostRecord::default()
        }
    }

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_lifetime() {
        assert_eq!(renew_at(0, 90 * DAY), 60 * DAY);
        assert_eq!(renew_at(1000, 1090), 1060);
        assert_eq!(renew_at(0, 10), 6);
        let c = cert(0, 90 * DAY, "a");
        let r = ours("a");
        let ms = |s: i64| s * 1000;
        assert_eq!(
            decide(Some(&c), Some(&r), ms(60 * DAY - 1)),
            Decision::Fresh { renew_at: 60 * DAY }
        );
        assert_eq!(
            decide(Some(&c), Some(&r), ms(60 * DAY)),
            Decision::Order(Need::Renew)
        );
    }

    #[test]
    fn a_host_without_a_valid_certificate_is_issued() {
        assert_eq!(decide(None, None, 0), Decision::Order(Need::Issue));
        let expired = cert(0, 100, "a");
        assert_eq!(
            decide(Some(&expired), Some(&ours("a")), 101_000),
            Decision::Order(Need::Issue)
        );
        // Expired and set by hand: useless, so replaced.
        assert_eq!(
            decide(Some(&expired), None, 101_000),
            Decision::Order(Need::Issue)
        );
    }

    #[test]
    fn a_valid_certificate_set_by_hand_always_wins() {
        // Another leaf than the one recorded: someone ran `cert set`.
        let manual = cert(0, 90 * DAY, "by-hand");
        assert_eq!(
            decide(Some(&manual), Some(&ours("ours")), 89 * DAY * 1000),
            Decision::Manual
        );
        assert_eq!(
            decide(Some(&manual), None, 89 * DAY * 1000),
            Decision::Manual
        );
        // A wildcard's certificate covering the host, even with our leaf.
        let wildcard = ServedCert {
            exact: false,
            ..cert(0, 90 * DAY, "ours")
        };
        assert_eq!(
            decide(Some(&wildcard), Some(&ours("ours")), 89 * DAY * 1000),
            Decision::Manual
        );
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap() {
        let b = Backoff {
            min: Duration::from_secs(60),
            max: Duration::from_secs(3600),
        };
        let delays: Vec<u64> = (1..=8).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(delays, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(b.delay(u32::MAX), b.max);

        let first = HostRecord::default().failed("boom".into(), 1_000, &b);
        assert_eq!(first.failures, 1);
        assert_eq!(first.retry_at_ms, Some(61_000));
        let second = first.failed("boom".into(), 61_000, &b);
        assert_eq!(second.retry_at_ms, Some(181_000));
        assert_eq!(
            decide(None, Some(&second), 180_999),
            Decision::BackingOff { until_ms: 181_000 }
        );
        assert_eq!(
            decide(None, Some(&second), 181_000),
            Decision::Order(Need::Issue)
        );
    }

    #[test]
    fn backing_off_never_drops_a_valid_certificate() {
        // A renewal failed: the old certificate stays, renewal waits.
        let b = Backoff {
            min: Duration::from_secs(60),
            max: Duration::from_secs(3600),
        };
        let c = cert(0, 90 * DAY, "a");
        let failed = ours("a").failed("rate limited".into(), 61 * DAY * 1000, &b);
        assert_eq!(failed.leaf_sha256.as_deref(), Some("a"));
        assert_eq!(
            decide(Some(&c), Some(&failed), 61 * DAY * 1000 + 1),
            Decision::BackingOff {
                until_ms: 61 * DAY * 1000 + 60_000
            }
        );
    }

    #[test]
    fn the_plan_orders_only_hosts_that_need_it_and_routes_decide_which() {
        let records: HashMap<&str, HostRecord> =
            [("fresh.cloud.com", ours("f")), ("due.cloud.com", ours("d"))].into();
        let certs: HashMap<&str, ServedCert> = [
            ("fresh.cloud.com", cert(0, 90 * DAY, "f")),
            ("due.cloud.com", cert(0, 60 * DAY, "d")),
            ("manual.cloud.com", cert(0, 90 * DAY, "m")),
        ]
        .into();
        let hosts = [
            "new.cloud.com",
            "fresh.cloud.com",
            "due.cloud.com",
            "manual.cloud.com",
        ];
        let plan = plan(
            hosts,
            |h| certs.get(h).cloned(),
            |h| records.get(h),
            50 * DAY * 1000,
        );
        assert_eq!(
            plan,
            [
                ("due.cloud.com".to_owned(), Need::Renew),
                ("new.cloud.com".to_owned(), Need::Issue)
            ]
        );
        // A route removed: the host is not in the plan's input any more,
        // so it is neither issued nor renewed.
        let plan = super::plan(
            ["fresh.cloud.com"],
            |h| certs.get(h).cloned(),
            |h| records.get(h),
            50 * DAY * 1000,
        );
        assert!(plan.is_empty());
    }
}
