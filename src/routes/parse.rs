//! Route value parsing: `host:port[, host:port ...]` into backend addresses.
//! Pure and total: any bytes give either backends or a typed reason.

use super::route::BackendAddr;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A value longer than this is refused outright rather than parsed: no real
/// backend list comes near it, and a megabyte value must not cost a megabyte
/// of work per reload.
pub const MAX_VALUE_LEN: usize = 8 * 1024;
/// More backends than this in one route is a mistake, not a deployment.
pub const MAX_BACKENDS: usize = 256;

/// Why a route value was refused. Shown in logs and in the admin `/routes` view.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("empty value")]
    Empty,
    #[error("value is not UTF-8")]
    NotUtf8,
    #[error("value is longer than {MAX_VALUE_LEN} bytes")]
    TooLong,
    #[error("more than {MAX_BACKENDS} backends")]
    TooManyBackends,
    #[error("backend #{0} is empty")]
    EmptyBackend(usize),
    #[error("backend {0:?} has no port")]
    MissingPort(String),
    #[error("backend {0:?} has an invalid port")]
    BadPort(String),
    #[error("backend {0:?} has an invalid host")]
    BadHost(String),
}

/// Parses a route value from Redis bytes.
pub fn parse_backends_bytes(value: &[u8]) -> Result<Vec<BackendAddr>, RouteError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(RouteError::TooLong);
    }
    let value = std::str::from_utf8(value).map_err(|_| RouteError::NotUtf8)?;
    parse_backends(value)
}

/// Parses `host:port` items separated by commas; spaces around items are
/// ignored. Hosts are IPv4 addresses, bracketed IPv6 addresses or DNS names.
pub fn parse_backends(value: &str) -> Result<Vec<BackendAddr>, RouteError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(RouteError::TooLong);
    }
    if value.trim().is_empty() {
        return Err(RouteError::Empty);
    }
    let mut backends = Vec::new();
    for (index, item) in value.split(',').enumerate() {
        if backends.len() == MAX_BACKENDS {
            return Err(RouteError::TooManyBackends);
        }
        let item = item.trim();
        if item.is_empty() {
            return Err(RouteError::EmptyBackend(index + 1));
        }
        backends.push(parse_backend(item)?);
    }
    Ok(backends)
}

fn parse_backend(item: &str) -> Result<BackendAddr, RouteError> {
    let (host, port) = if let Some(rest) = item.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or_else(|| RouteError::BadHost(item.to_owned()))?;
        inner
            .parse::<Ipv6Addr>()
            .map_err(|_| RouteError::BadHost(item.to_owned()))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| RouteError::MissingPort(item.to_owned()))?;
        (&item[..inner.len() + 2], port)
    } else {
        let (host, port) = item
            .rsplit_once(':')
            .ok_or_else(|| RouteError::MissingPort(item.to_owned()))?;
        if !is_ipv4_or_dns_name(host) {
            return Err(RouteError::BadHost(item.to_owned()));
        }
        (host, port)
    };
    let port_ok = !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p != 0);
    if !port_ok {
        return Err(RouteError::BadPort(item.to_owned()));
    }
    // Both halves are validated: what is left is to lowercase the host.
    Ok(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        BackendAddr::validated(&format!("{}:{port}", host.to_ascii_lowercase()))
    } else {
        BackendAddr::validated(item)
    })
}

/// An IPv4 address, or a DNS name of letter-digit-hyphen labels. A name made
/// only of digits and dots must be a valid IPv4 address (`10.0.0.300` is a
/// typo, not a name).
fn is_ipv4_or_dns_name(host: &str) -> bool {
    if host.is_empty() || host.len() > 253 {
        return false;
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return host.parse::<Ipv4Addr>().is_ok();
    }
    host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parsed(value: &str) -> Vec<String> {
        parse_backends(value)
            .unwrap()
            .iter()
            .map(|a| a.to_string())
            .collect()
    }

    #[test]
    fn parses_every_documented_form() {
        assert_eq!(parsed("10.0.0.5:3000"), ["10.0.0.5:3000"]);
        assert_eq!(
            parsed("10.0.0.6:3000,10.0.0.7:3000"),
            ["10.0.0.6:3000", "10.0.0.7:3000"]
        );
        assert_eq!(
            parsed(" 10.0.0.6:3000 ,  [::1]:8080,worker-1.internal:80 "),
            ["10.0.0.6:3000", "[::1]:8080", "worker-1.internal:80"]
        );
        assert_eq!(parsed("[2001:db8::7]:443"), ["[2001:db8::7]:443"]);
        assert_eq!(parsed("Worker.Internal:80"), ["worker.internal:80"]);
    }

    #[test]
    fn refuses_bad_values_with_a_reason() {
        use RouteError::*;
        let cases: &[(&str, RouteError)] = &[
            ("", Empty),
            ("   ", Empty),
            ("10.0.0.5", MissingPort("10.0.0.5".into())),
            ("10.0.0.5:", BadPort("10.0.0.5:".into())),
            ("10.0.0.5:0", BadPort("10.0.0.5:0".into())),
            ("10.0.0.5:70000", BadPort("10.0.0.5:70000".into())),
            ("10.0.0.5:+80", BadPort("10.0.0.5:+80".into())),
            ("10.0.0.300:80", BadHost("10.0.0.300:80".into())),
            ("::1:80", BadHost("::1:80".into())),
            ("[::g]:80", BadHost("[::g]:80".into())),
            ("[::1]", MissingPort("[::1]".into())),
            ("a_b c:80", BadHost("a_b c:80".into())),
            ("-a.com:80", BadHost("-a.com:80".into())),
            ("a.com:80,", EmptyBackend(2)),
            ("http://a.com:80", BadHost("http://a.com:80".into())),
        ];
        for (value, want) in cases {
            assert_eq!(parse_backends(value).as_ref(), Err(want), "{value:?}");
        }
        assert_eq!(parse_backends_bytes(&[0xff, 0xfe]), Err(NotUtf8));
        assert_eq!(parse_backends_bytes(&vec![b'a'; 1 << 20]), Err(TooLong));
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_backends_bytes(&bytes);
        }

        #[test]
        fn never_panics_on_near_miss_strings(s in "[0-9a-z:\\[\\]., -]{0,60}") {
            let _ = parse_backends(&s);
        }

        #[test]
        fn round_trips_valid_lists(
            items in proptest::collection::vec(
                ("[a-z][a-z0-9]{0,10}(\\.[a-z][a-z0-9]{0,10}){0,3}", 1u16..=65535), 1..8),
        ) {
            let value = items.iter().map(|(h, p)| format!("{h}:{p}")).collect::<Vec<_>>().join(" , ");
            let parsed = parse_backends(&value).unwrap();
            prop_assert_eq!(parsed.len(), items.len());
            for (authority, (host, port)) in parsed.iter().zip(&items) {
                prop_assert_eq!(authority.host(), host.as_str());
                prop_assert_eq!(authority.port(), *port);
            }
        }
    }
}
