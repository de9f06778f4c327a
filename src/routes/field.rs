//! Hash fields: what key of the table a field of the routes hash names,
//! and which spelling is the normal one.
//!
//! Several fields can name one key (`App.example.com`, `app.example.com.`
//! and `app.example.com:8080` all name `app.example.com`); exactly one
//! spelling of a key is its normal form (the key itself, `*.` + suffix for
//! a wildcard, `*` for the default route). Which field wins when several
//! name one key is decided by [`winner`], for the full build and every
//! patch alike.

use super::host::{normalize_host, HostError};
use std::borrow::Cow;

/// Which of a table's maps a key lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Kind {
    /// A host, matched exactly.
    Exact,
    /// `*.suffix`, keyed by the suffix: any host under it.
    Wildcard,
    /// `*`, keyed by "": any host with no other route.
    Default,
}

/// A hash field after normalisation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldKey {
    Exact(String),
    Wildcard(String),
    /// The bare `*`: the fallback for hosts with no route of their own.
    Default,
}

impl FieldKey {
    /// The key's normal spelling as a hash field: `host`, `*.suffix`, `*`.
    pub fn display(&self) -> String {
        match self {
            FieldKey::Exact(h) => h.clone(),
            FieldKey::Wildcard(s) => format!("*.{s}"),
            FieldKey::Default => "*".to_owned(),
        }
    }

    pub(super) fn of(kind: Kind, name: &str) -> FieldKey {
        match kind {
            Kind::Exact => FieldKey::Exact(name.to_owned()),
            Kind::Wildcard => FieldKey::Wildcard(name.to_owned()),
            Kind::Default => FieldKey::Default,
        }
    }

    pub(super) fn kind(&self) -> Kind {
        match self {
            FieldKey::Exact(_) => Kind::Exact,
            FieldKey::Wildcard(_) => Kind::Wildcard,
            FieldKey::Default => Kind::Default,
        }
    }

    /// The name the key is stored under in its map.
    pub(super) fn name(&self) -> &str {
        match self {
            FieldKey::Exact(name) | FieldKey::Wildcard(name) => name,
            FieldKey::Default => "",
        }
    }
}

/// Parses a hash field: a host (normalised like a request's host),
/// `*.suffix` for a wildcard, or `*` for the default route.
pub fn parse_field(field: &str) -> Result<FieldKey, HostError> {
    if field == "*" {
        return Ok(FieldKey::Default);
    }
    match field.strip_prefix("*.") {
        Some(suffix) => Ok(FieldKey::Wildcard(normalize_host(suffix)?.into_owned())),
        None => Ok(FieldKey::Exact(normalize_host(field)?.into_owned())),
    }
}

/// A field's key when the field is the key's normal spelling, borrowed
/// from the field: the fast path of builds and patches, which handle
/// every other field through [`parse_field_bytes`].
pub(super) fn normal_key(field: &[u8]) -> Option<(Kind, &str)> {
    let (kind, host) = split_field(field)?;
    if kind == Kind::Default {
        return Some((kind, host));
    }
    match normalize_host(host).ok()? {
        Cow::Borrowed(key) if key.len() == host.len() => Some((kind, key)),
        _ => None,
    }
}

/// A field's map and name as written, not normalised (so a key of a
/// table only when it is in normal form).
pub(super) fn split_field(field: &[u8]) -> Option<(Kind, &str)> {
    let field = std::str::from_utf8(field).ok()?;
    Some(match field.strip_prefix("*.") {
        Some(suffix) => (Kind::Wildcard, suffix),
        None if field == "*" => (Kind::Default, ""),
        None => (Kind::Exact, field),
    })
}

/// [`parse_field`] of raw bytes, with the reason shown for a field that
/// names no key.
pub(super) fn parse_field_bytes(field: &[u8]) -> Result<FieldKey, String> {
    let field = std::str::from_utf8(field).map_err(|_| "field is not UTF-8".to_owned())?;
    parse_field(field).map_err(|e| format!("field: {e}"))
}

/// Writes the normal spelling of a key into `out` (cleared first).
pub(super) fn spell(kind: Kind, name: &str, out: &mut Vec<u8>) {
    out.clear();
    match kind {
        Kind::Exact => {}
        Kind::Wildcard => out.extend_from_slice(b"*."),
        Kind::Default => out.push(b'*'),
    }
    out.extend_from_slice(name.as_bytes());
}

/// The normal spelling of a key.
pub(super) fn spelled(kind: Kind, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    spell(kind, name, &mut out);
    out
}

/// How a key is shown in logs and diffs: its normal spelling.
pub(super) fn shown(kind: Kind, name: &str) -> String {
    let mut out = Vec::new();
    spell(kind, name, &mut out);
    String::from_utf8(out).expect("keys are text")
}

/// Which of the fields naming one key wins, and whether it is the normal
/// spelling: the one in normal form if there is one, else the smallest by
/// bytes. A rule of the fields alone (not of their values, not of the
/// order Redis lists them in), so every replica and every path (full
/// build, patch) picks the same one. `fields` is sorted by field bytes and
/// not empty.
pub(super) fn winner<V>(kind: Kind, name: &str, fields: &[(bytes::Bytes, V)]) -> (usize, bool) {
    let mut normal = Vec::new();
    spell(kind, name, &mut normal);
    match fields.binary_search_by(|(field, _)| field[..].cmp(&normal[..])) {
        Ok(at) => (at, true),
        Err(_) => (0, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn fields_name_keys() {
        assert_eq!(parse_field("*"), Ok(FieldKey::Default));
        assert_eq!(
            parse_field("*.Wild.example.com"),
            Ok(FieldKey::Wildcard("wild.example.com".into()))
        );
        assert_eq!(
            parse_field("App.example.com.:8080"),
            Ok(FieldKey::Exact("app.example.com".into()))
        );
        for bad in ["", "*.", "**", "*.*", "a b", "*x"] {
            assert!(parse_field(bad).is_err(), "{bad:?}");
        }
        assert_eq!(FieldKey::Default.display(), "*");
        assert_eq!(FieldKey::Wildcard("w.com".into()).display(), "*.w.com");
    }

    #[test]
    fn only_the_normal_spelling_is_normal() {
        assert_eq!(normal_key(b"a.com"), Some((Kind::Exact, "a.com")));
        assert_eq!(normal_key(b"*.a.com"), Some((Kind::Wildcard, "a.com")));
        assert_eq!(normal_key(b"*"), Some((Kind::Default, "")));
        for other in [
            &b"A.com"[..],
            b"a.com.",
            b"a.com:80",
            b"*.A.com",
            b"\xff",
            b"",
        ] {
            assert_eq!(normal_key(other), None, "{other:?}");
        }
    }

    #[test]
    fn the_normal_field_wins_else_the_smallest() {
        let fields = |names: &[&str]| -> Vec<(Bytes, ())> {
            let mut v: Vec<_> = names
                .iter()
                .map(|n| (Bytes::copy_from_slice(n.as_bytes()), ()))
                .collect();
            v.sort();
            v
        };
        let f = fields(&["App.com", "app.com", "app.com."]);
        assert_eq!(winner(Kind::Exact, "app.com", &f), (1, true));
        let f = fields(&["app.com.", "App.com", "app.com:80"]);
        assert_eq!(winner(Kind::Exact, "app.com", &f), (0, false));
        assert_eq!(&f[0].0[..], b"App.com");
        let f = fields(&["*.W.com", "*.w.com"]);
        assert_eq!(winner(Kind::Wildcard, "w.com", &f), (1, true));
    }
}
