//! The hash fields a table keeps beside its maps, and the one rule that
//! turns the fields naming a key into what the key serves.
//!
//! Nearly every key is *plain*: exactly one field names it, that field is
//! the key's normal spelling and its value is valid. The map's route then
//! spells the field back (key → field, route value → value), and nothing
//! else is stored. Every other field is kept here, raw: all the fields of
//! a key that is not plain (two spellings of one host, an invalid value),
//! and the fields that name no key at all. So a table always knows the
//! whole hash it was made from, and a patch that removes or changes one
//! spelling knows what the others say (ARCHITECTURE.md, `src/routes/`).

use super::field::{parse_field_bytes, spell, winner, Kind};
use super::parse::parse_backends_bytes;
use super::route::SharedRoute;
use super::{Held, InvalidEntry, Route};
use bytes::Bytes;
use compact_str::CompactString;
use std::collections::{BTreeMap, HashMap};

/// Fields of a key, sorted by field bytes.
pub(super) type Fields = Vec<(Bytes, Bytes)>;

type KeyedMap = HashMap<(Kind, CompactString), Fields, foldhash::fast::RandomState>;

#[derive(Debug, Clone, Default)]
pub(super) struct Spellings {
    /// Every field naming a key that is not plain.
    keyed: KeyedMap,
    /// Fields that name no key (not UTF-8, not a host), with their values.
    unnamed: BTreeMap<Bytes, Bytes>,
}

impl PartialEq for Spellings {
    fn eq(&self, other: &Self) -> bool {
        self.unnamed == other.unnamed && self.keyed == other.keyed
    }
}

/// What a key serves, given the fields that name it.
pub(super) struct Resolved {
    pub held: Held,
    /// One field, the normal spelling, a valid value: the map alone can
    /// give the field back.
    pub plain: bool,
}

/// The rule, for the full build and every patch: the [`winner`] among the
/// fields naming a key decides; a valid value serves (see [`route_for`]),
/// an invalid one keeps the previous valid route if there was one, else
/// marks the key invalid. `fields` is sorted and not empty.
pub(super) fn resolve(
    kind: Kind,
    name: &str,
    fields: &[(Bytes, Bytes)],
    previous: Option<&Held>,
) -> Resolved {
    let (win, normal) = winner(kind, name, fields);
    match route_for(&fields[win].1, previous) {
        Some(route) => Resolved {
            held: Held::Route(route),
            plain: normal && fields.len() == 1,
        },
        None => Resolved {
            held: previous.cloned().unwrap_or(Held::Invalid),
            plain: false,
        },
    }
}

/// The route a valid value gives a key: the `previous` route when its
/// value is the same (so health marks and the round-robin cursor carry
/// over), else a new one; `None` for an invalid value.
pub(super) fn route_for(value: &[u8], previous: Option<&Held>) -> Option<SharedRoute> {
    match previous {
        Some(Held::Route(route)) if route.value().as_bytes() == value => Some(route.clone()),
        _ => Route::parse(value).ok().map(SharedRoute::new),
    }
}

impl Spellings {
    /// Whether the key's fields are kept here (the key is not plain).
    pub fn names(&self, kind: Kind, name: &str) -> bool {
        !self.keyed.is_empty() && self.keyed.contains_key(&(kind, CompactString::from(name)))
    }

    /// The fields kept for a key, if it is not plain.
    pub fn fields(&self, kind: Kind, name: &str) -> Option<&Fields> {
        if self.keyed.is_empty() {
            return None;
        }
        self.keyed.get(&(kind, CompactString::from(name)))
    }

    /// Keeps `fields` for the key (none: the key is plain or gone).
    /// Returns whether anything changed.
    pub fn set(&mut self, kind: Kind, name: &str, fields: Option<Fields>) -> bool {
        let key = (kind, CompactString::from(name));
        match fields {
            Some(fields) => {
                if self.keyed.get(&key) == Some(&fields) {
                    return false;
                }
                self.keyed.insert(key, fields);
                true
            }
            None => self.keyed.remove(&key).is_some(),
        }
    }

    /// Sets (`Some`) or deletes a field that names no key. Returns whether
    /// anything changed.
    pub fn set_unnamed(&mut self, field: &[u8], value: Option<&[u8]>) -> bool {
        match value {
            Some(value) => {
                if self.unnamed.get(field).is_some_and(|v| v == value) {
                    return false;
                }
                self.unnamed
                    .insert(Bytes::copy_from_slice(field), Bytes::copy_from_slice(value));
                true
            }
            None => self.unnamed.remove(field).is_some(),
        }
    }

    /// The value of a field that names no key, if the hash has it.
    pub fn unnamed_value(&self, field: &[u8]) -> Option<&[u8]> {
        self.unnamed.get(field).map(|v| &v[..])
    }

    /// The value of a field kept here, if it is.
    pub fn value_of(&self, field: &[u8]) -> Option<&[u8]> {
        if let Some(value) = self.unnamed.get(field) {
            return Some(value);
        }
        if self.keyed.is_empty() {
            return None;
        }
        let key = parse_field_bytes(field).ok()?;
        let fields = self.fields(key.kind(), key.name())?;
        let at = fields.binary_search_by(|(f, _)| f[..].cmp(field)).ok()?;
        Some(&fields[at].1)
    }

    /// Number of fields kept here.
    pub fn field_count(&self) -> usize {
        self.unnamed.len() + self.keyed.values().map(Vec::len).sum::<usize>()
    }

    /// Number of keys kept here.
    pub fn key_count(&self) -> usize {
        self.keyed.len()
    }

    pub fn for_each_field(&self, mut visit: impl FnMut(&[u8], &[u8])) {
        for fields in self.keyed.values() {
            for (field, value) in fields {
                visit(field, value);
            }
        }
        for (field, value) in &self.unnamed {
            visit(field, value);
        }
    }

    /// Each key kept here with its winning field and that field's value.
    pub fn for_each_winner(&self, mut visit: impl FnMut(Kind, &str, &[u8], &[u8])) {
        for ((kind, name), fields) in &self.keyed {
            let (win, _) = winner(*kind, name, fields);
            visit(*kind, name, &fields[win].0, &fields[win].1);
        }
    }

    /// The entries that do not serve as written, sorted by field;
    /// `route_of` says what each key kept here serves.
    pub fn invalid_entries<'t>(
        &self,
        route_of: impl Fn(Kind, &str) -> Option<&'t Held>,
    ) -> Vec<InvalidEntry> {
        let mut out = Vec::new();
        for (field, value) in &self.unnamed {
            let reason = parse_field_bytes(field).err().unwrap_or_default();
            out.push(invalid_entry(field, value, reason, false));
        }
        for ((kind, name), fields) in &self.keyed {
            let (win, _) = winner(*kind, name, fields);
            let winning = String::from_utf8_lossy(&fields[win].0);
            for (at, (field, value)) in fields.iter().enumerate() {
                if at != win {
                    let reason = format!("another spelling of the same host, {winning:?}, wins");
                    out.push(invalid_entry(field, value, reason, false));
                } else if let Err(error) = parse_backends_bytes(value) {
                    let serving = matches!(route_of(*kind, name), Some(Held::Route(_)));
                    out.push(invalid_entry(field, value, error.to_string(), serving));
                }
            }
        }
        out.sort_by(|a, b| a.field.cmp(&b.field));
        out
    }
}

fn invalid_entry(field: &[u8], value: &[u8], reason: String, serving: bool) -> InvalidEntry {
    // Shown, not parsed again: a long value is cut.
    let mut shown = String::from_utf8_lossy(&value[..value.len().min(256)]).into_owned();
    if value.len() > 256 {
        shown.push('…');
    }
    InvalidEntry {
        field: String::from_utf8_lossy(field).into_owned(),
        value: shown,
        reason,
        serving_previous: serving,
    }
}

/// The fields naming a key as a table holds them: kept in `spellings`, or
/// the one plain field its route spells back (a key outside the
/// spellings holds a route), or none.
pub(super) fn fields_of(
    spellings: &Spellings,
    kind: Kind,
    name: &str,
    held: Option<&Held>,
) -> Fields {
    if let Some(fields) = spellings.fields(kind, name) {
        return fields.clone();
    }
    match held.and_then(Held::route) {
        Some(route) => {
            let mut field = Vec::new();
            spell(kind, name, &mut field);
            vec![(
                Bytes::from(field),
                Bytes::copy_from_slice(route.value().as_bytes()),
            )]
        }
        None => Vec::new(),
    }
}

/// Sets (`Some`) or deletes a field in a sorted list.
pub(super) fn set_field(fields: &mut Fields, field: &[u8], value: Option<&[u8]>) {
    match (fields.binary_search_by(|(f, _)| f[..].cmp(field)), value) {
        (Ok(at), Some(value)) => fields[at].1 = Bytes::copy_from_slice(value),
        (Ok(at), None) => {
            fields.remove(at);
        }
        (Err(at), Some(value)) => fields.insert(
            at,
            (Bytes::copy_from_slice(field), Bytes::copy_from_slice(value)),
        ),
        (Err(_), None) => {}
    }
}
