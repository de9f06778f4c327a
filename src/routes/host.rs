//! Host normalisation: the single definition of what a "host" is, shared by
//! the request path (Host header, `:authority`, absolute-form targets) and the
//! route loader (hash fields), so both sides always agree on a key.

use std::borrow::Cow;

/// The longest host name DNS allows; anything longer is not a name we route.
const MAX_HOST_LEN: usize = 253;

/// Why a host could not be normalised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("empty host")]
    Empty,
    #[error("malformed host")]
    Malformed,
}

/// Normalises a host as it arrives in a `Host` header or authority:
/// drops the port, drops one trailing dot, lowercases ASCII letters, and
/// rejects anything that is not a DNS name, an IPv4 address or a bracketed
/// IPv6 address. Borrows when the input is already normal (the common case
/// on the request path), so a lookup does not allocate.
pub fn normalize_host(raw: &str) -> Result<Cow<'_, str>, HostError> {
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    let host = strip_port(raw)?;
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err(HostError::Empty);
    }
    if host.len() > MAX_HOST_LEN {
        return Err(HostError::Malformed);
    }
    if host.starts_with('[') {
        validate_ipv6_literal(host)?;
    } else {
        validate_name(host)?;
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Ok(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Ok(Cow::Borrowed(host))
    }
}

/// Splits `host[:port]` (or `[v6][:port]`) and checks the port is digits.
fn strip_port(raw: &str) -> Result<&str, HostError> {
    let (host, port) = if raw.starts_with('[') {
        let end = raw.find(']').ok_or(HostError::Malformed)?;
        let (host, rest) = raw.split_at(end + 1);
        match rest.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if rest.is_empty() => (host, None),
            None => return Err(HostError::Malformed),
        }
    } else {
        match raw.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (raw, None),
        }
    };
    if let Some(port) = port {
        // An empty port is allowed by RFC 3986 (`host:`); anything else must
        // be a plain number that fits in a u16.
        if !port.is_empty() && port.parse::<u16>().is_err() {
            return Err(HostError::Malformed);
        }
    }
    Ok(host)
}

/// A DNS name or IPv4 address: letters, digits, `-`, `_`, non-empty labels.
fn validate_name(host: &str) -> Result<(), HostError> {
    for label in host.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(HostError::Malformed);
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(HostError::Malformed);
        }
    }
    Ok(())
}

fn validate_ipv6_literal(host: &str) -> Result<(), HostError> {
    let inner = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .ok_or(HostError::Malformed)?;
    inner
        .parse::<std::net::Ipv6Addr>()
        .map(|_| ())
        .map_err(|_| HostError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalises_case_port_and_trailing_dot() {
        assert_eq!(normalize_host("App1.Cloud.COM").unwrap(), "app1.cloud.com");
        assert_eq!(
            normalize_host("app1.cloud.com:8080").unwrap(),
            "app1.cloud.com"
        );
        assert_eq!(normalize_host("app1.cloud.com.").unwrap(), "app1.cloud.com");
        assert_eq!(
            normalize_host("app1.cloud.com.:80").unwrap(),
            "app1.cloud.com"
        );
        assert_eq!(normalize_host("app1.cloud.com:").unwrap(), "app1.cloud.com");
        assert_eq!(normalize_host("10.0.0.5:3000").unwrap(), "10.0.0.5");
        assert_eq!(normalize_host("[::1]:8080").unwrap(), "[::1]");
        assert_eq!(normalize_host("[2001:DB8::1]").unwrap(), "[2001:db8::1]");
    }

    #[test]
    fn borrows_when_already_normal() {
        assert!(matches!(
            normalize_host("a.cloud.com").unwrap(),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            normalize_host("a.cloud.com:80").unwrap(),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn rejects_malformed_hosts() {
        for bad in [
            "",
            ".",
            ":80",
            "a..b",
            "a b",
            "a/b",
            "a:b:c",
            "::1",
            "[::1",
            "[zz::1]",
            "a.com:99999",
            "a.com:x",
            "[::1]x",
            "é.com",
            "a@b",
        ] {
            assert!(normalize_host(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(normalize_host(""), Err(HostError::Empty));
        assert!(normalize_host(&"a".repeat(300)).is_err());
    }

    proptest! {
        #[test]
        fn never_panics(s in any::<String>()) {
            let _ = normalize_host(&s);
        }

        #[test]
        fn idempotent_and_lowercase(s in "[A-Za-z0-9-]{1,20}(\\.[A-Za-z0-9-]{1,20}){0,4}\\.?(:[0-9]{1,5})?") {
            if let Ok(once) = normalize_host(&s) {
                let twice = normalize_host(&once).unwrap();
                prop_assert_eq!(&once, &twice);
                prop_assert!(!once.bytes().any(|b| b.is_ascii_uppercase()));
                prop_assert!(!once.contains(':'));
                prop_assert!(!once.ends_with('.'));
            }
        }
    }
}
