//! The decoder and the payload diff against payloads built byte by byte
//! as Redis writes them.

use super::diff::{common_prefix, common_suffix};
use super::reader::backlen_len;
use super::*;

#[test]
fn common_prefix_and_suffix_at_every_position() {
    let base: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
    for at in [0, 1, 255, 256, 257, 511, 512, 999] {
        let mut other = base.clone();
        other[at] ^= 0xff;
        assert_eq!(common_prefix(&base, &other), at, "prefix, change at {at}");
        assert_eq!(
            common_suffix(&base, &other),
            999 - at,
            "suffix, change at {at}"
        );
    }
    assert_eq!(common_prefix(&base, &base), 1000);
    assert_eq!(common_suffix(&base, &base), 1000);
    assert_eq!(common_prefix(&base[..300], &base), 300);
    assert_eq!(common_suffix(&base[700..], &base), 300);
    assert_eq!(common_prefix(&[], &base), 0);
}

/// A payload as Redis would write it: type, body, then version + CRC
/// (not checked here, so zeros).
fn payload(body: &[u8]) -> Vec<u8> {
    let mut out = vec![RDB_TYPE_HASH];
    out.extend_from_slice(body);
    out.extend_from_slice(&[10, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out
}

fn text(entries: &[DumpedEntry]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|(f, v)| {
            (
                String::from_utf8_lossy(f).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

#[test]
fn decodes_raw_integer_and_compressed_strings() {
    let long = "a".repeat(300);
    let mut compressed = vec![0; long.len()];
    let n = lzf_rust::compress(long.as_bytes(), &mut compressed).unwrap();
    compressed.truncate(n);
    let mut body = vec![4]; // four entries
    body.extend_from_slice(&[5]);
    body.extend_from_slice(b"a.com");
    body.extend_from_slice(&[11]);
    body.extend_from_slice(b"10.0.0.1:80");
    // INT8 -5 as field, INT16 1234 as value.
    body.extend_from_slice(&[0xc0, 0xfb, 0xc1, 0xd2, 0x04]);
    // INT32 100000 as field, a 14-bit length value.
    body.extend_from_slice(&[0xc2, 0xa0, 0x86, 0x01, 0x00]);
    body.extend_from_slice(&[0x41, 0x2c]);
    body.extend_from_slice(long.as_bytes()[..300].as_ref());
    // LZF-compressed field, empty value.
    body.push(0xc3);
    body.extend_from_slice(&[0x40 | (compressed.len() >> 8) as u8, compressed.len() as u8]);
    body.extend_from_slice(&[0x41, 0x2c]);
    body.extend_from_slice(&compressed);
    body.push(0);
    let payload = payload(&body);
    let entries = decode_hash(&payload).unwrap();
    assert_eq!(
        text(&entries),
        [
            ("a.com".into(), "10.0.0.1:80".into()),
            ("-5".into(), "1234".into()),
            ("100000".into(), long.clone()),
            (long, String::new()),
        ]
    );
}

#[test]
fn other_encodings_and_damage_are_errors_not_panics() {
    const ZIPLIST: [u8; 14] = [13, 1, 2, 3, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let ziplist = ZIPLIST;
    assert_eq!(decode_hash(&ziplist), Err(DumpError::Unsupported(13)));
    assert_eq!(
        prepare(Bytes::from_static(&ZIPLIST)),
        Err(DumpError::Unsupported(13))
    );
    // A listpack payload is read only once prepared.
    let raw = Bytes::from(hex(REDIS_LISTPACK_DUMP));
    assert_eq!(decode_hash(&raw), Err(DumpError::Unsupported(16)));
    for body in [
        &[2, 1, b'a'][..],                   // second entry missing
        &[1, 9, b'a'],                       // string longer than the payload
        &[1, 0xc3, 5, 10, 1, 2, 3, 4, 5, 0], // bad LZF
        &[0, 0],                             // trailing bytes
        &[0x80],                             // truncated 32-bit length
    ] {
        assert!(
            matches!(decode_hash(&payload(body)), Err(DumpError::Malformed(_))),
            "{body:?}"
        );
    }
    assert!(decode_hash(b"\x04").is_err());
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// What Redis 7.0.15 answered to `DUMP` of a listpack hash set with
/// `HSET k a.com 10.0.0.1:80 5 -5 1234 -100000 100000000 1099511627776
/// <70 x "a"> "" b.com 127 -4096 4095` (`hash-max-listpack-value 128`):
/// every integer width, short and 12-bit strings, an empty one. Once
/// with `rdbcompression no`, once with the default (LZF).
const REDIS_LISTPACK_DUMP: &str = "104092920000000e0085612e636f6d068b31302e302e302e313a38300c0501dffb02c4d202f26079fe04f300e1f50505f4000000000001000009e0466161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616148800185622e636f6d067f01d00002cfff02ff0a00b5f8062052c4b375";
const REDIS_LISTPACK_DUMP_LZF: &str = "10c3404f409210920000000e0085612e636f6d068b31302e400118313a38300c0501dffb02c4d202f26079fe04f300e1f50505f4202c08000001000009e04661e03c00044880018562607b087f01d00002cfff02ff0a00d3d315f16e758611";

#[test]
fn decodes_listpacks_that_redis_dumped() {
    let long = "a".repeat(70);
    let want: Vec<(String, String)> = [
        ("a.com", "10.0.0.1:80"),
        ("5", "-5"),
        ("1234", "-100000"),
        ("100000000", "1099511627776"),
        (long.as_str(), ""),
        ("b.com", "127"),
        ("-4096", "4095"),
    ]
    .iter()
    .map(|(f, v)| (f.to_string(), v.to_string()))
    .collect();
    for dump in [REDIS_LISTPACK_DUMP, REDIS_LISTPACK_DUMP_LZF] {
        let raw = hex(dump);
        let prepared = prepare(Bytes::from(raw.clone())).unwrap();
        assert_eq!(text(&decode_hash(&prepared).unwrap()), want);
        // The footer (and so the CRC that names the content) is kept.
        assert_eq!(prepared[prepared.len() - 10..], raw[raw.len() - 10..]);
    }
}

/// A listpack of `elements` as `listpack.c` encodes them: integers for
/// strings that are canonical integers, else the narrowest string.
fn listpack(elements: &[&str]) -> Vec<u8> {
    fn backlen(out: &mut Vec<u8>, l: usize) {
        let len = backlen_len(l);
        for i in (0..len).rev() {
            let group = ((l >> (7 * i)) & 0x7f) as u8;
            out.push(if i + 1 == len { group } else { group | 0x80 });
        }
    }
    let mut body = Vec::new();
    for element in elements {
        let mut enc = Vec::new();
        match element.parse::<i64>() {
            Ok(n) if n.to_string() == *element => match n {
                0..=127 => enc.push(n as u8),
                -4096..=4095 => {
                    let u = (n as u64) & 0x1fff;
                    enc.extend_from_slice(&[0xc0 | (u >> 8) as u8, u as u8]);
                }
                -32_768..=32_767 => {
                    enc.push(0xf1);
                    enc.extend_from_slice(&(n as i16).to_le_bytes());
                }
                -8_388_608..=8_388_607 => {
                    enc.push(0xf2);
                    enc.extend_from_slice(&(n as i32).to_le_bytes()[..3]);
                }
                -2_147_483_648..=2_147_483_647 => {
                    enc.push(0xf3);
                    enc.extend_from_slice(&(n as i32).to_le_bytes());
                }
                _ => {
                    enc.push(0xf4);
                    enc.extend_from_slice(&n.to_le_bytes());
                }
            },
            _ => {
                let n = element.len();
                if n < 64 {
                    enc.push(0x80 | n as u8);
                } else if n < 4096 {
                    enc.extend_from_slice(&[0xe0 | (n >> 8) as u8, n as u8]);
                } else {
                    enc.push(0xf0);
                    enc.extend_from_slice(&(n as u32).to_le_bytes());
                }
                enc.extend_from_slice(element.as_bytes());
            }
        }
        let size = enc.len();
        body.extend_from_slice(&enc);
        backlen(&mut body, size);
    }
    let count = u16::try_from(elements.len()).unwrap_or(u16::MAX);
    let total = (LISTPACK_HEADER_LEN + body.len() + 1) as u32;
    let mut out = total.to_le_bytes().to_vec();
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&body);
    out.push(LISTPACK_END);
    out
}

/// A prepared listpack payload of `entries`.
fn encode_listpack(entries: &[(String, String)]) -> Vec<u8> {
    let elements: Vec<&str> = entries
        .iter()
        .flat_map(|(f, v)| [f.as_str(), v.as_str()])
        .collect();
    let raw = listpack_payload(&listpack(&elements));
    prepare(Bytes::from(raw)).unwrap().to_vec()
}

/// A listpack as Redis DUMPs it: an RDB string (raw here), then footer.
fn listpack_payload(listpack: &[u8]) -> Vec<u8> {
    let mut raw = vec![RDB_TYPE_HASH_LISTPACK, RDB_32BITLEN];
    raw.extend_from_slice(&(listpack.len() as u32).to_be_bytes());
    raw.extend_from_slice(listpack);
    raw.extend_from_slice(&[10, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    raw
}

#[test]
fn decodes_long_listpack_strings_and_backlens() {
    // 200 bytes: a two-byte backlen; 5,000: a 32-bit length.
    let entries = vec![
        ("x".repeat(200), "y".repeat(5000)),
        ("-9000000000".to_string(), "-70000".to_string()),
    ];
    let payload = encode_listpack(&entries);
    assert_eq!(text(&decode_hash(&payload).unwrap()), entries);
    // An element count of "unknown" (65535) is read to the end mark.
    let mut lp = listpack(&["a", "b"]);
    lp[4..6].copy_from_slice(&u16::MAX.to_le_bytes());
    let payload = prepare(Bytes::from(listpack_payload(&lp))).unwrap();
    assert_eq!(decode_hash(&payload).unwrap().len(), 1);
}

/// A listpack as Redis DUMPs one that shrinks: an LZF-compressed RDB
/// string stating `stated_len` as its inflated length.
fn lzf_listpack_payload(listpack: &[u8], stated_len: usize) -> Vec<u8> {
    let mut compressed = vec![0; listpack.len() + 64];
    let n = lzf_rust::compress(listpack, &mut compressed).unwrap();
    let mut raw = vec![RDB_TYPE_HASH_LISTPACK, 0xc0 | RDB_ENC_LZF, RDB_32BITLEN];
    raw.extend_from_slice(&(n as u32).to_be_bytes());
    raw.push(RDB_32BITLEN);
    raw.extend_from_slice(&(stated_len as u32).to_be_bytes());
    raw.extend_from_slice(&compressed[..n]);
    raw.extend_from_slice(&[10, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    raw
}

#[test]
fn compressed_listpacks_inflate_in_place_and_bad_lengths_are_errors() {
    let entries: Vec<(String, String)> = (0..2_000)
        .map(|i| {
            (
                format!("h{i}.bench.test"),
                format!("127.0.0.1:{}", 19_000 + i % 4),
            )
        })
        .collect();
    let elements: Vec<&str> = entries
        .iter()
        .flat_map(|(f, v)| [f.as_str(), v.as_str()])
        .collect();
    let lp = listpack(&elements);
    let compressed = prepare(Bytes::from(lzf_listpack_payload(&lp, lp.len()))).unwrap();
    // The same prepared bytes as the listpack stored plainly.
    assert_eq!(
        compressed,
        prepare(Bytes::from(listpack_payload(&lp))).unwrap()
    );
    assert_eq!(text(&decode_hash(&compressed).unwrap()), entries);
    for (stated, error) in [
        (lp.len() + 1, "LZF length mismatch"),
        (lp.len() - 1, "bad LZF data"),
        (usize::MAX >> 33, "LZF length out of range"),
    ] {
        assert_eq!(
            prepare(Bytes::from(lzf_listpack_payload(&lp, stated))),
            Err(DumpError::Malformed(error)),
            "stated length {stated}"
        );
    }
}

#[test]
fn damaged_listpacks_are_errors_not_panics() {
    let good = listpack(&["a.com", "10.0.0.1:80"]);
    let mut wrong_size = good.clone();
    wrong_size[0] += 1;
    let mut no_end = good.clone();
    *no_end.last_mut().unwrap() = 0;
    let mut odd = good.clone();
    odd[4] = 1;
    let mut bad_backlen = good.clone();
    bad_backlen[6 + 6] = 7; // "a.com" is 6 bytes encoded
    let mut wrong_count = good.clone();
    wrong_count[4] = 4;
    for lp in [
        wrong_size,
        no_end,
        odd,
        bad_backlen,
        wrong_count,
        vec![7, 0, 0, 0],
    ] {
        let result = prepare(Bytes::from(listpack_payload(&lp)))
            .and_then(|payload| decode_hash(&payload).map(|_| ()));
        assert!(matches!(result, Err(DumpError::Malformed(_))), "{lp:?}");
    }
}

/// A payload of `entries` in raw string encoding.
fn encode(entries: &[(String, String)]) -> Vec<u8> {
    fn length(out: &mut Vec<u8>, n: usize) {
        if n < 64 {
            out.push(n as u8);
        } else if n < 16384 {
            out.extend_from_slice(&[0x40 | (n >> 8) as u8, n as u8]);
        } else {
            out.push(RDB_32BITLEN);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
    let mut body = Vec::new();
    length(&mut body, entries.len());
    for (f, v) in entries {
        length(&mut body, f.len());
        body.extend_from_slice(f.as_bytes());
        length(&mut body, v.len());
        body.extend_from_slice(v.as_bytes());
    }
    payload(&body)
}

/// `old` with the payload diff applied, as a sorted map.
fn patched(old: &[(String, String)], diff: &PayloadDiff) -> Vec<(String, String)> {
    let mut map: std::collections::BTreeMap<String, String> = old.iter().cloned().collect();
    for f in &diff.removed {
        assert!(
            map.remove(&*String::from_utf8_lossy(f)).is_some(),
            "removed twice"
        );
    }
    for (f, v) in text(&diff.upserts) {
        map.insert(f, v);
    }
    map.into_iter().collect()
}

fn sorted(entries: &[(String, String)]) -> Vec<(String, String)> {
    let mut out = entries.to_vec();
    out.sort();
    out
}

#[test]
fn payload_diff_finds_a_change_an_insert_and_a_delete() {
    let old: Vec<(String, String)> = (0..100)
        .map(|i| (format!("h{i}.com"), format!("10.0.0.{i}:80")))
        .collect();
    let mut changed = old.clone();
    changed[40].1 = "10.9.9.9:80".into();
    let mut inserted = old.clone();
    inserted.insert(70, ("new.com".into(), "10.1.1.1:80".into()));
    let mut deleted = old.clone();
    deleted.remove(0);
    for encoder in [encode, encode_listpack] {
        for new in [&old, &changed, &inserted, &deleted] {
            let (a, b) = (encoder(&old), encoder(new));
            let diff = diff_payloads(&a, &b).unwrap();
            assert!(diff.upserts.len() + diff.removed.len() <= 1, "{diff:?}");
            assert_eq!(patched(&old, &diff), sorted(new));
        }
    }
    // Redis converted the hash between two reads: no diff.
    assert_eq!(
        diff_payloads(&encode(&old), &encode_listpack(&old)),
        Err(DumpError::EncodingChanged)
    );
    // Everything reordered (a rehash): the same entries, no change; and
    // a change inside the reordering is found.
    let mut reversed = old.clone();
    reversed.reverse();
    let (a, b) = (encode(&old), encode(&reversed));
    assert_eq!(diff_payloads(&a, &b).unwrap(), PayloadDiff::default());
    reversed[10].1 = "10.7.7.7:80".into();
    reversed.remove(50);
    let b = encode(&reversed);
    let diff = diff_payloads(&a, &b).unwrap();
    assert_eq!((diff.upserts.len(), diff.removed.len()), (1, 1), "{diff:?}");
    assert_eq!(patched(&old, &diff), sorted(&reversed));
}

proptest::proptest! {
    /// Any edits of a payload, with its entries moved around as a
    /// rehash moves them: the diff applied to the old entries gives the
    /// new ones.
    #[test]
    fn payload_diff_applied_gives_the_new_entries(
        n in 0usize..120,
        edits in proptest::collection::vec((0u8..4, 0usize..200, 0u32..1000), 0..6),
    ) {
        let old: Vec<(String, String)> = (0..n).map(|i| (format!("h{i}.com"), format!("v{i}"))).collect();
        let mut new = old.clone();
        let mut fresh = 0;
        for (kind, at, value) in edits {
            match kind {
                0 if !new.is_empty() => { let i = at % new.len(); new[i].1 = format!("x{value}"); }
                1 => { fresh += 1; let i = at % (new.len() + 1); new.insert(i, (format!("n{fresh}.com"), format!("y{value}"))); }
                2 if !new.is_empty() => { let i = at % new.len(); new.remove(i); }
                3 if !new.is_empty() => { let i = at % new.len(); let moved = new.remove(i); new.insert((at * 7) % (new.len() + 1), moved); }
                _ => {}
            }
        }
        for encoder in [encode, encode_listpack] {
            let (a, b) = (encoder(&old), encoder(&new));
            let diff = diff_payloads(&a, &b).unwrap();
            proptest::prop_assert_eq!(patched(&old, &diff), sorted(&new));
        }
    }

    #[test]
    fn arbitrary_payloads_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
        for kind in [RDB_TYPE_HASH, PREPARED_LISTPACK] {
            let mut with_type = vec![kind];
            with_type.extend(&bytes);
            let _ = decode_hash(&with_type);
        }
        let mut raw = vec![RDB_TYPE_HASH_LISTPACK];
        raw.extend(bytes);
        let _ = prepare(Bytes::from(raw)).map(|payload| decode_hash(&payload).map(|_| ()));
    }

    /// Arbitrary elements, listpack-encoded, come back as they went in.
    #[test]
    fn listpacks_round_trip(
        entries in proptest::collection::vec(("-?[0-9a-z.]{0,12}", "-?[0-9:.]{0,300}"), 0..40),
    ) {
        let entries: Vec<(String, String)> = entries;
        let payload = encode_listpack(&entries);
        proptest::prop_assert_eq!(text(&decode_hash(&payload).unwrap()), entries);
    }
}
