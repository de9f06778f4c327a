//! The file format: a header line (`switchyard-snapshot 2 crc32=…
//! length=…`) then a JSON body (`{"keys": {KEY: {"version", "watermark",
//! "entries", "last_valid"}}}`; bytes that are not UTF-8 are arrays of
//! numbers). [`encode`] writes a file from the tables' own images, no copy
//! of the entries; [`decode`] checks the length and checksum and reads the
//! body back (format 1, a JSON object of valid routes, is still read).

use super::{HashImage, Snapshot, SnapshotSource};
use bytes::Bytes;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Seek, Write};
use std::sync::Arc;

/// The format written. Format 1 (a JSON object of valid routes, no
/// header) is still read.
const FORMAT: u32 = 2;
const MAGIC: &str = "switchyard-snapshot";

pub(super) fn decode(bytes: &[u8]) -> Result<Snapshot, String> {
    if bytes.starts_with(b"{") {
        return parse_format_1(bytes);
    }
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| "header is not text")?;
    let body = &bytes[newline + 1..];
    let (crc, length) = parse_header(header)?;
    if body.len() as u64 != length {
        return Err(format!(
            "{} bytes where the header says {length} (cut short?)",
            body.len()
        ));
    }
    if crc32fast::hash(body) != crc {
        return Err("checksum mismatch".into());
    }
    let body: BodyIn = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    Ok(Snapshot {
        images: body
            .keys
            .into_iter()
            .map(|(key, image)| {
                let pairs =
                    |list: Vec<(Raw, Raw)>| list.into_iter().map(|(f, v)| (f.0, v.0)).collect();
                let image = HashImage {
                    version: image.version,
                    watermark: image.watermark,
                    entries: pairs(image.entries),
                    last_valid: pairs(image.last_valid),
                };
                (key, image)
            })
            .collect(),
    })
}

/// `switchyard-snapshot 2 crc32=0a1b2c3d length=0000000000001234`.
fn parse_header(header: &str) -> Result<(u32, u64), String> {
    let mut words = header.split(' ');
    if words.next() != Some(MAGIC) {
        return Err("not a switchyard snapshot".into());
    }
    let format = words.next().unwrap_or_default();
    if format != FORMAT.to_string() {
        return Err(format!("unknown format {format:?}"));
    }
    let mut field = |name: &str| {
        words
            .next()
            .and_then(|w| w.strip_prefix(name))
            .ok_or_else(|| format!("header has no {name}"))
    };
    let crc = u32::from_str_radix(field("crc32=")?, 16).map_err(|e| e.to_string())?;
    let length = field("length=")?
        .parse()
        .map_err(|e: std::num::ParseIntError| e.to_string())?;
    Ok((crc, length))
}

fn header(crc: u32, length: u64) -> String {
    format!("{MAGIC} {FORMAT} crc32={crc:08x} length={length:016}\n")
}

/// Format 1: the valid routes only, under their normal spelling.
fn parse_format_1(bytes: &[u8]) -> Result<Snapshot, String> {
    #[derive(Deserialize)]
    struct Format1 {
        format: u32,
        version: u64,
        watermark: Option<u64>,
        routes: Vec<(String, String)>,
    }
    let file: Format1 = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.format != 1 {
        return Err(format!("unknown format {}", file.format));
    }
    let image = HashImage {
        version: file.version,
        watermark: file.watermark,
        entries: file
            .routes
            .into_iter()
            .map(|(f, v)| (f.into_bytes().into(), v.into_bytes().into()))
            .collect(),
        last_valid: Vec::new(),
    };
    Ok(Snapshot {
        images: BTreeMap::from([(String::new(), image)]),
    })
}

#[derive(Deserialize)]
struct BodyIn {
    keys: BTreeMap<String, ImageIn>,
}

#[derive(Deserialize)]
struct ImageIn {
    version: u64,
    watermark: Option<u64>,
    entries: Vec<(Raw, Raw)>,
    last_valid: Vec<(Raw, Raw)>,
}

/// Bytes as the body holds them: a string, or an array of byte values
/// for bytes that are not UTF-8.
struct Raw(Bytes);

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RawVisitor;
        impl<'de> Visitor<'de> for RawVisitor {
            type Value = Raw;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
                Ok(Raw(Bytes::copy_from_slice(v.as_bytes())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
                let mut bytes = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    bytes.push(b);
                }
                Ok(Raw(bytes.into()))
            }
        }
        deserializer.deserialize_any(RawVisitor)
    }
}

/// Bytes for the body (see [`Raw`]).
struct RawOut<'a>(&'a [u8]);

impl Serialize for RawOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => serializer.collect_seq(self.0),
        }
    }
}

/// The body, written straight from the tables (no copy of the entries).
struct BodyOut<'a>(&'a BTreeMap<String, Arc<dyn SnapshotSource>>);

impl Serialize for BodyOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Body<'a> {
            keys: BTreeMap<&'a str, ImageOut<'a>>,
        }
        #[derive(Serialize)]
        struct ImageOut<'a> {
            version: u64,
            watermark: Option<u64>,
            entries: Pairs<'a>,
            last_valid: Pairs<'a>,
        }
        let keys = self
            .0
            .iter()
            .map(|(key, source)| {
                let image = ImageOut {
                    version: source.version(),
                    watermark: source.watermark(),
                    entries: Pairs(&**source, false),
                    last_valid: Pairs(&**source, true),
                };
                (key.as_str(), image)
            })
            .collect();
        Body { keys }.serialize(serializer)
    }
}

/// A source's entries (or last valid values) as a JSON array of pairs.
struct Pairs<'a>(&'a dyn SnapshotSource, bool);

impl Serialize for Pairs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(None)?;
        let mut result = Ok(());
        let mut pair = |field: &[u8], value: &[u8]| {
            if result.is_ok() {
                result = seq.serialize_element(&(RawOut(field), RawOut(value)));
            }
        };
        if self.1 {
            self.0.for_each_last_valid(&mut pair);
        } else {
            self.0.for_each_field(&mut pair);
        }
        result?;
        seq.end()
    }
}

/// A writer that checksums and counts what goes through it.
struct Summing<W> {
    inner: W,
    crc: crc32fast::Hasher,
    length: u64,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.length += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the header line and the body of `tables` to `file`, from its
/// start; the header's fields have a fixed width, so a placeholder holds
/// their room until the body is summed.
pub(super) fn encode(
    file: std::fs::File,
    tables: &BTreeMap<String, Arc<dyn SnapshotSource>>,
) -> std::io::Result<std::fs::File> {
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, file);
    let placeholder = header(0, 0);
    out.write_all(placeholder.as_bytes())?;
    let mut body = Summing {
        inner: out,
        crc: crc32fast::Hasher::new(),
        length: 0,
    };
    serde_json::to_writer(&mut body, &BodyOut(tables))?;
    let (crc, length) = (body.crc.finalize(), body.length);
    let mut file = body.inner.into_inner().map_err(|e| e.into_error())?;
    file.rewind()?;
    file.write_all(header(crc, length).as_bytes())?;
    Ok(file)
}
