//! `switchyard cert set|del|list` as a process against a real redis-server:
//! values checked with the proxy's own loader before anything is written,
//! keys sealed with `--certs-secret-file`, refusals with their exit codes.

use crate::cli::{assert_exit, stderr, stdout};
use crate::support::*;
use crate::tls_support::{display, Scratch, TestCa, DAY};
use std::process::{Command, Output};
use std::time::SystemTime;
use switchyard::routes::parse_field;
use switchyard::tls::certs;
use switchyard::tls::seal::{Purpose, Sealer, Secret};

fn switchyard(redis: &RedisServer, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .args(["--redis-url", &redis.url()])
        .env_remove("REDIS_URL")
        .env_remove("SWITCHYARD_CERTS_SECRET_FILE")
        .output()
        .unwrap()
}

/// The value in the certs hash for a field ("" when there is none).
fn stored(redis: &RedisServer, field: &str) -> String {
    let out = redis.cli(&["HGET", "routes:certs", field]);
    // redis-cli ends its answer with a newline of its own.
    out.strip_suffix('\n').unwrap_or(&out).to_owned()
}

#[test]
fn set_list_del_round_trip() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let dir = Scratch::new("cert-cli");
    let leaf = ca.leaf(&["app.cloud.com", "www.app.cloud.com"]);
    let cert = dir.write("fullchain.pem", &leaf.chain_pem);
    let key = dir.write("key.pem", &leaf.key_pem);

    let out = switchyard(
        &redis,
        &[
            "cert",
            "set",
            "App.Cloud.com",
            "--cert",
            &display(&cert),
            "--key",
            &display(&key),
        ],
    );
    assert_exit(&out, 0);
    assert!(
        stdout(&out).starts_with("app.cloud.com: app.cloud.com, www.app.cloud.com until 20"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("(key in plaintext)"));
    // Written under the normal field, in a form the proxy loads.
    let value = stored(&redis, "app.cloud.com");
    assert!(value.starts_with("-----BEGIN CERTIFICATE-----"), "{value}");
    assert!(value.contains("-----BEGIN PRIVATE KEY-----"));
    let loaded = certs::load(
        value.as_bytes(),
        Some(&parse_field("app.cloud.com").unwrap()),
        None,
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(loaded.info.chain_len, 2);

    // A bad value written by hand shows in the list with its reason.
    redis.cli(&["HSET", "routes:certs", "broken.cloud.com", "garbage"]);
    let out = switchyard(&redis, &["cert", "list"]);
    assert_exit(&out, 0);
    let list = stdout(&out);
    let lines: Vec<&str> = list.lines().collect();
    assert!(lines[0].starts_with("HOST"), "{list}");
    assert!(lines[1].starts_with("app.cloud.com "), "{list}");
    assert!(
        lines[1].contains("app.cloud.com,www.app.cloud.com"),
        "{list}"
    );
    assert!(lines[1].contains("CN=Switchyard Test CA"), "{list}");
    assert!(
        lines[1].contains("plaintext") && lines[1].ends_with("ok"),
        "{list}"
    );
    assert!(lines[2].starts_with("broken.cloud.com"), "{list}");
    assert!(
        lines[2].ends_with(
            "invalid: no certificate (expected the PEM chain, leaf first, then the private key)"
        ),
        "{list}"
    );
    assert_eq!(lines[3], "2 certificate(s)");

    let out = switchyard(&redis, &["cert", "del", "app.cloud.com"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "deleted the certificate of app.cloud.com\n");
    assert_eq!(stored(&redis, "app.cloud.com"), "");
    let out = switchyard(&redis, &["cert", "del", "app.cloud.com"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        "no certificate for app.cloud.com: nothing deleted\n"
    );
}

#[test]
fn nothing_is_written_when_the_pair_would_not_load() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let dir = Scratch::new("cert-cli-refused");
    let (a, b) = (ca.leaf(&["a.com"]), ca.leaf(&["b.com"]));
    let expired = ca.leaf_valid(&["a.com"], -9 * DAY, -DAY);
    let files = |name: &str, chain: &str, key: &str| {
        (
            display(&dir.write(&format!("{name}.crt"), chain)),
            display(&dir.write(&format!("{name}.key"), key)),
        )
    };
    let cases = [
        (
            "a.com",
            files("mismatch", &a.chain_pem, &b.key_pem),
            "the private key does not match the certificate",
        ),
        (
            "a.com",
            files("expired", &expired.chain_pem, &expired.key_pem),
            "expired at 20",
        ),
        (
            "b.com",
            files("othername", &a.chain_pem, &a.key_pem),
            "does not cover b.com (it names a.com)",
        ),
        (
            "a.com",
            files("nokey", &a.chain_pem, "no key here"),
            "no private key",
        ),
        (
            "a.com",
            files(
                "nocert",
                "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
                &a.key_pem,
            ),
            "PEM:",
        ),
        (
            "not a host",
            files("good", &a.chain_pem, &a.key_pem),
            "invalid host",
        ),
    ];
    for (host, (cert, key), reason) in cases {
        let out = switchyard(
            &redis,
            &["cert", "set", host, "--cert", &cert, "--key", &key],
        );
        assert_eq!(
            out.status.code(),
            Some(65),
            "{host} {cert}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains(reason), "{cert}: {}", stderr(&out));
    }
    let missing = display(&dir.path("missing.pem"));
    let out = switchyard(
        &redis,
        &[
            "cert", "set", "a.com", "--cert", &missing, "--key", &missing,
        ],
    );
    assert_exit(&out, 66);
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));
    assert_eq!(redis.cli(&["HLEN", "routes:certs"]).trim(), "0");
}

#[test]
fn keys_are_sealed_with_the_secret_and_bound_to_their_host() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let dir = Scratch::new("cert-cli-sealed");
    let leaf = ca.leaf(&["a.com", "b.com"]);
    let cert = display(&dir.write("a.crt", &leaf.chain_pem));
    let key = display(&dir.write("a.key", &leaf.key_pem));
    let secret = display(&dir.write("secret", [7u8; 32]));
    let other = display(&dir.write("other-secret", format!("{}\n", "ab".repeat(32))));

    let out = switchyard(
        &redis,
        &[
            "cert",
            "set",
            "a.com",
            "--cert",
            &cert,
            "--key",
            &key,
            "--certs-secret-file",
            &secret,
        ],
    );
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("(key sealed)"), "{}", stdout(&out));
    let value = stored(&redis, "a.com");
    assert!(
        value.contains("-----BEGIN SWITCHYARD SEALED KEY-----"),
        "{value}"
    );
    assert!(!value.contains("PRIVATE KEY-----"), "{value}");
    // A replica with the same secret opens it.
    let sealer = Sealer::new(&Secret::from_bytes(&[7u8; 32]).unwrap(), Purpose::CertKey);
    let a = parse_field("a.com").unwrap();
    assert!(
        certs::load(value.as_bytes(), Some(&a), Some(&sealer), SystemTime::now())
            .unwrap()
            .info
            .sealed
    );

    // Copied by hand to another host the certificate covers: refused there.
    redis.cli(&["HSET", "routes:certs", "b.com", &value]);
    let list = |extra: &[&str]| {
        let mut args = vec!["cert", "list"];
        args.extend(extra);
        let out = switchyard(&redis, &args);
        assert_exit(&out, 0);
        stdout(&out)
    };
    let with_secret = list(&["--certs-secret-file", &secret]);
    let lines: Vec<&str> = with_secret.lines().collect();
    assert!(
        lines[1].starts_with("a.com") && lines[1].contains("sealed") && lines[1].ends_with("ok"),
        "{with_secret}"
    );
    assert!(
        lines[2].starts_with("b.com")
            && lines[2]
                .ends_with("does not open for b.com: it was sealed for another host, or damaged"),
        "{with_secret}"
    );
    let without = list(&[]);
    assert!(
        without
            .lines()
            .nth(1)
            .unwrap()
            .ends_with("sealed: key not checked without --certs-secret-file"),
        "{without}"
    );
    let wrong = list(&["--certs-secret-file", &other]);
    assert!(
        wrong
            .lines()
            .nth(1)
            .unwrap()
            .ends_with("sealed with another secret than this process's --certs-secret-file"),
        "{wrong}"
    );

    // A secret file that is not 32 bytes is a usage error.
    let short = display(&dir.write("short", "not 32 bytes"));
    let out = switchyard(&redis, &["cert", "list", "--certs-secret-file", &short]);
    assert_exit(&out, 64);
    assert!(
        stderr(&out).contains("--certs-secret-file: must hold 32 random bytes"),
        "{}",
        stderr(&out)
    );
}
