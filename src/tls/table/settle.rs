//! The rules that settle a host: which of its fields counts, and what a
//! value that does not load leaves serving. Shared by the full build and
//! the patch, so both give the same table.

use super::*;

/// A field as `(is_wildcard, host or suffix)`, normalised.
pub(super) fn host_key(field: &[u8]) -> Result<HostKey, String> {
    let field = std::str::from_utf8(field).map_err(|_| "field is not UTF-8".to_owned())?;
    match parse_field(field).map_err(|e| format!("field: {e}"))? {
        FieldKey::Exact(host) => Ok((false, host.into())),
        FieldKey::Wildcard(suffix) => Ok((true, suffix.into())),
        FieldKey::Default => Err(
            "field: `*` names no host; the default certificate comes from --tls-cert".to_owned(),
        ),
    }
}

fn field_key(wildcard: bool, name: &str) -> FieldKey {
    if wildcard {
        FieldKey::Wildcard(name.to_owned())
    } else {
        FieldKey::Exact(name.to_owned())
    }
}

/// The one rule for a host, used by the full build and the patch alike:
/// given every field naming the host (with its value) and what the host
/// held before, what it holds now.
pub(super) fn settle(
    wildcard: bool,
    name: &str,
    mut fields: RawPairs<'_>,
    before: Option<&Arc<HostCert>>,
    ctx: LoadContext<'_>,
) -> Arc<HostCert> {
    // The field in normal form first, then the others by their bytes: the
    // same winner whatever order the hash was read in.
    if fields.len() > 1 {
        let normal = |field: &[u8]| {
            let bare = if wildcard {
                field.strip_prefix(b"*.")
            } else {
                Some(field)
            };
            bare == Some(name.as_bytes())
        };
        fields.sort_by(|a, b| (!normal(a.0), a.0).cmp(&(!normal(b.0), b.0)));
    }
    let (_, value) = fields[0];
    let in_time = |cert: &Arc<LoadedCert>| cert.info.check_time(ctx.now).is_ok();
    // The host's certificate from before, when it was loaded from this
    // very value: no need to parse it again.
    let reusable = before.filter(|b| b.problem.is_none() && b.value() == value);
    if let Some(before) = reusable {
        let same_fields = before.fields.len() == fields.len()
            && before
                .fields
                .iter()
                .zip(&fields)
                .all(|((f0, v0), (f1, v1))| &f0[..] == *f1 && &v0[..] == *v1);
        if same_fields && before.serving.as_ref().is_some_and(in_time) {
            return before.clone();
        }
    }
    let loaded = match reusable.and_then(|b| b.serving.clone()) {
        Some(cert) => cert.info.check_time(ctx.now).map(|()| cert),
        None => {
            certs::load(value, Some(&field_key(wildcard, name)), ctx.sealer, ctx.now).map(Arc::new)
        }
    };
    // Keep the bytes already held for unchanged fields: only new values
    // are copied out of the read.
    let held = |field: &[u8], value: &[u8]| {
        before.and_then(|b| {
            b.fields
                .iter()
                .find(|(f, v)| &f[..] == field && &v[..] == value)
                .cloned()
        })
    };
    let fields: Vec<(Bytes, Bytes)> = fields
        .into_iter()
        .map(|(f, v)| {
            held(f, v).unwrap_or_else(|| (Bytes::copy_from_slice(f), Bytes::copy_from_slice(v)))
        })
        .collect();
    let (serving, served_value, problem) = match loaded {
        Ok(cert) => (Some(cert), Some(fields[0].1.clone()), None),
        Err(problem) => match before.filter(|b| b.serving.as_ref().is_some_and(in_time)) {
            Some(b) => (b.serving.clone(), b.served_value.clone(), Some(problem)),
            None => (None, None, Some(problem)),
        },
    };
    Arc::new(HostCert {
        fields,
        serving,
        problem,
        served_value,
    })
}

/// A host as the admin view and the logs name it (`*.suffix` for a
/// wildcard).
pub(super) fn shown(wildcard: bool, name: &str) -> String {
    if wildcard {
        format!("*.{name}")
    } else {
        name.to_owned()
    }
}

/// Adds a host's change, if any, to `diff`.
pub(super) fn record(
    diff: &mut Diff,
    wildcard: bool,
    name: &str,
    before: Option<&Arc<HostCert>>,
    after: Option<&Arc<HostCert>>,
) {
    let shown = || shown(wildcard, name);
    match (before, after) {
        (None, Some(_)) => diff.added.push_with(shown),
        (Some(_), None) => diff.removed.push_with(shown),
        (Some(a), Some(b)) if !Arc::ptr_eq(a, b) && !same_host(a, b) => {
            diff.changed.push_with(shown)
        }
        _ => {}
    }
}

fn same_host(a: &HostCert, b: &HostCert) -> bool {
    fn leaf(h: &HostCert) -> Option<&[u8]> {
        h.serving.as_ref().map(|c| c.leaf())
    }
    a.fields == b.fields && leaf(a) == leaf(b) && a.problem == b.problem
}
