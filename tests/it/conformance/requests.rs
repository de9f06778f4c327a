//! Request cases: what a client may send, what it must never get through.
//! Issue 25 section 1 items are named `i<N>/...`; the rest follow RFC 9112
//! (message syntax and framing) and RFC 9110 (semantics).

use super::case::{case, either, steps, Case, Route, Step, Upstream, Want};
use super::recorder::{Reply, Then};

const HELLO_CHUNKED: &str = "5\r\nhello\r\n0\r\n\r\n";

/// `POST /` with `Transfer-Encoding: {te}` and a chunked `hello` body.
fn te(te: &str) -> String {
    format!("POST / HTTP/1.1\r\nHost: {{host}}\r\nTransfer-Encoding: {te}\r\n\r\n{HELLO_CHUNKED}")
}

/// `POST /` with these header lines (each ending CRLF) and body bytes.
fn post(headers: &str, body: &str) -> String {
    format!("POST / HTTP/1.1\r\nHost: {{host}}\r\n{headers}\r\n{body}")
}

/// `GET /` with these extra header lines.
fn get(headers: &str) -> String {
    format!("GET / HTTP/1.1\r\nHost: {{host}}\r\n{headers}\r\n")
}

/// A chunked `POST /` with this body (as framed) and nothing else.
fn chunked(framed: &str) -> String {
    post("Transfer-Encoding: chunked\r\n", framed)
}

const CANON_HELLO_CHUNKED: &str =
    "POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
const CANON_HELLO_LENGTH: &str =
    "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\r\nhello";

pub fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    v.extend(transfer_encoding());
    v.extend(content_length_and_chunks());
    v.extend(trailers());
    v.extend(targets_and_host());
    v.extend(underscores_and_forwarding());
    v.extend(hop_by_hop());
    v.extend(head_syntax());
    v.extend(connection_management());
    v.extend(expect_and_upgrade());
    v.extend(replay());
    v
}

/// Item 2: a request's transfer coding is exactly `chunked`, once.
fn transfer_encoding() -> Vec<Case> {
    const REFUSE: &[u16] = &[400, 501];
    let mut v = Vec::new();
    for (name, value) in [
        ("identity-chunked", "identity, chunked"),
        ("gzip-chunked", "gzip, chunked"),
        ("comma-chunked", ",chunked"),
        ("chunked-comma", "chunked,"),
        ("chunked-chunked", "chunked, chunked"),
        ("chunked-gzip", "chunked, gzip"),
        ("chunked-identity", "chunked, identity"),
        ("gzip", "gzip"),
        ("identity", "identity"),
        ("deflate-chunked", "deflate, chunked"),
        ("x-custom-chunked", "x-custom, chunked"),
        ("quoted", "\"chunked\""),
        ("chunked-param", "chunked;q=1"),
        ("chunk", "chunk"),
        ("chunkedx", "chunkedx"),
        ("chunked-space-gzip", "chunked gzip"),
        ("empty", ""),
        ("comma-only", ","),
        ("vertical-tab", "\x0bchunked"),
        ("nul", "chunked\x00"),
    ] {
        v.push(case(&format!("i2/te/{name}"), te(value)).refused_any(REFUSE));
    }
    v.push(
        case(
            "i2/te/two-headers-chunked",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                HELLO_CHUNKED,
            ),
        )
        .refused_any(REFUSE),
    );
    v.push(
        case(
            "i2/te/two-headers-gzip-then-chunked",
            post(
                "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                HELLO_CHUNKED,
            ),
        )
        .refused_any(REFUSE),
    );
    v.push(
        case(
            "i2/te/two-headers-chunked-then-identity",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
                HELLO_CHUNKED,
            ),
        )
        .refused_any(REFUSE),
    );
    // The smuggling shape: what a lax backend would read as a second
    // request must never reach it, and the connection must not go on.
    v.push(
        case(
            "i2/te/gzip-chunked-smuggles-a-get",
            post(
                "Transfer-Encoding: gzip, chunked\r\n",
                "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n",
            ),
        )
        .refused_any(REFUSE)
        .closes(),
    );
    v.push(
        case(
            "i2/te/identity-chunked-with-length-smuggles",
            post(
                "Transfer-Encoding: identity, chunked\r\nContent-Length: 48\r\n",
                "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n",
            ),
        )
        .refused_any(REFUSE)
        .closes(),
    );
    v.push(
        case(
            "i2/te/with-content-length",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                HELLO_CHUNKED,
            ),
        )
        .refused(400)
        .closes(),
    );
    v.push(
        case(
            "i2/te/with-content-length-zero",
            post(
                "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
                HELLO_CHUNKED,
            ),
        )
        .refused(400)
        .closes(),
    );
    v.push(
        case(
            "i2/te/http10",
            format!("POST / HTTP/1.0\r\nHost: {{host}}\r\nTransfer-Encoding: chunked\r\n\r\n{HELLO_CHUNKED}"),
        )
        .refused_any(&[400, 501])
        .closes(),
    );
    v.push(
        case(
            "i2/te/space-before-colon",
            post("Transfer-Encoding : chunked\r\n", HELLO_CHUNKED),
        )
        .refused(400)
        .closes(),
    );
    // Valid spellings: forwarded, with the proxy's own TE line.
    for (name, value) in [
        ("upper-case", "CHUNKED"),
        ("mixed-case", "Chunked"),
        ("tab-before", "\tchunked"),
        ("space-after", "chunked "),
    ] {
        v.push(
            case(&format!("i2/te/valid/{name}"), te(value))
                .forwarded_as(CANON_HELLO_CHUNKED)
                .h2(),
        );
    }
    v.push(case("i2/te/valid/plain", te("chunked")).forwarded().h2());
    v
}

/// Item 10 and RFC 9112 §6-7: lengths and chunk sizes.
fn content_length_and_chunks() -> Vec<Case> {
    let mut v = Vec::new();
    for (name, value) in [
        ("huge", "9999999999999999999"),
        ("u64-overflow", "18446744073709551616"),
        ("very-huge", "99999999999999999999999"),
        ("negative", "-1"),
        ("plus", "+5"),
        ("hex", "0x5"),
        ("decimal-point", "5.0"),
        ("empty", ""),
        ("trailing-comma", "5,"),
        ("leading-comma", ",5"),
        ("letters", "five"),
        ("differing-list", "5, 6"),
        ("space-inside", "5 5"),
    ] {
        v.push(
            case(
                &format!("i10/cl/{name}"),
                post(&format!("Content-Length: {value}\r\n"), "hello"),
            )
            .refused(400)
            .closes(),
        );
    }
    v.push(
        case(
            "i10/cl/two-headers-differing",
            post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
        )
        .refused(400)
        .closes(),
    );
    // Same value repeated: RFC 9110 §8.6 lets a recipient take it as one.
    v.push(
        case("i3/cl/list-same", post("Content-Length: 5, 5\r\n", "hello"))
            .refused_or_forwarded_as(&[400], CANON_HELLO_LENGTH),
    );
    v.push(
        case(
            "i3/cl/two-headers-same",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
        )
        .refused_or_forwarded_as(&[400], CANON_HELLO_LENGTH),
    );
    for (name, value) in [("plain", "5"), ("leading-zeros", "005"), ("ows", " 5 ")] {
        v.push(
            case(
                &format!("rfc9112/cl/valid/{name}"),
                post(&format!("Content-Length: {value}\r\n"), "hello"),
            )
            .forwarded_as(CANON_HELLO_LENGTH),
        );
    }
    v.push(
        case("rfc9112/cl/zero", post("Content-Length: 0\r\n", ""))
            .forwarded()
            .h2(),
    );
    v.push(
        case("rfc9112/cl/none-on-post", post("", ""))
            .forwarded()
            .h2(),
    );
    v.push(
        case(
            "rfc9112/cl/get-with-body",
            "GET / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\r\nhello",
        )
        .forwarded()
        .h2(),
    );
    let big = "x".repeat(100_000);
    v.push(
        case(
            "rfc9112/cl/100k-body",
            post("Content-Length: 100000\r\n", &big),
        )
        .forwarded()
        .h2(),
    );

    // Chunk sizes: refused before anything reaches the backend when the
    // fault is in the bytes that came with the head.
    for (name, size) in [
        ("fffffffffffffff0", "fffffffffffffff0"),
        ("18-fs", "ffffffffffffffffff"),
        ("2-to-the-64", "10000000000000000"),
        ("negative", "-5"),
        ("0x-prefix", "0x5"),
        ("plus", "+5"),
        ("empty", ""),
        ("letters", "zz"),
        ("space-inside", "5 5"),
    ] {
        v.push(
            case(
                &format!("i10/chunk-size/{name}"),
                chunked(&format!("{size}\r\nhello\r\n0\r\n\r\n")),
            )
            .refused_late(&[400])
            .closes(),
        );
    }
    for (name, body) in [
        ("bare-lf-after-size", "5\nhello\r\n0\r\n\r\n"),
        ("bare-lf-after-data", "5\r\nhello\n0\r\n\r\n"),
        ("bare-cr-after-size", "5\rhello\r\n0\r\n\r\n"),
        ("data-longer-than-size", "5\r\nhelloXX\r\n0\r\n\r\n"),
        ("data-shorter-than-size", "6\r\nhello\r\n0\r\n\r\n"),
        ("no-crlf-after-data", "5\r\nhello0\r\n\r\n"),
        ("control-in-extension", "5;a=\x01\r\nhello\r\n0\r\n\r\n"),
        ("lf-in-extension", "5;a\nb\r\nhello\r\n0\r\n\r\n"),
        (
            "smuggle-in-bad-size",
            "5\r\nhello\r\nfffffffffffffff0\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
    ] {
        v.push(
            case(&format!("rfc9112/chunked/bad/{name}"), chunked(body))
                .refused_late(&[400])
                .closes(),
        );
    }
    for (name, body, canonical_body) in [
        ("extension", "5;name=value\r\nhello\r\n0\r\n\r\n", None),
        ("extension-no-value", "5;flag\r\nhello\r\n0\r\n\r\n", None),
        (
            "extension-quoted",
            "5;a=\"b c\"\r\nhello\r\n0\r\n\r\n",
            None,
        ),
        ("extension-on-last", "5\r\nhello\r\n0;last=1\r\n\r\n", None),
        ("upper-hex", "A\r\nhelloworld\r\n0\r\n\r\n", None),
        ("leading-zeros", "0005\r\nhello\r\n0000\r\n\r\n", None),
        (
            "one-byte-chunks",
            "1\r\nh\r\n1\r\ne\r\n1\r\nl\r\n1\r\nl\r\n1\r\no\r\n0\r\n\r\n",
            None,
        ),
        ("empty-body", "0\r\n\r\n", None),
        ("many-chunks", "", Some(())),
    ] {
        let body = if canonical_body.is_some() {
            let mut s = String::new();
            for i in 0..300 {
                s.push_str(&format!("3\r\n{:03}\r\n", i));
            }
            s.push_str("0\r\n\r\n");
            s
        } else {
            body.to_owned()
        };
        v.push(case(&format!("rfc9112/chunked/valid/{name}"), chunked(&body)).forwarded());
    }
    // BWS before a chunk extension is allowed (RFC 9112 §7.1.1); a
    // careful proxy may still refuse it.
    v.push(
        case(
            "rfc9112/chunked/bws-before-extension",
            chunked("5 ;a=b\r\nhello\r\n0\r\n\r\n"),
        )
        .refused_or_forwarded_as(&[400], CANON_HELLO_CHUNKED),
    );
    v
}

/// Item 11: trailers are checked and filtered.
fn trailers() -> Vec<Case> {
    let mut v = Vec::new();
    for (name, trailer) in [
        ("obs-fold", "X-T: a\r\n b\r\n"),
        ("request-line", "GET /smuggled HTTP/1.1\r\n"),
        ("space-before-colon", "X-T : 1\r\n"),
        ("space-in-name", "X T: 1\r\n"),
        ("no-colon", "garbage\r\n"),
        ("bare-lf", "X-T: 1\n"),
        ("nul-in-value", "X-T: a\x00b\r\n"),
    ] {
        v.push(
            case(
                &format!("i11/request-trailer/bad/{name}"),
                chunked(&format!("5\r\nhello\r\n0\r\n{trailer}\r\n")),
            )
            .refused_late(&[400])
            .closes(),
        );
    }
    let huge = "X-Pad: ".to_owned() + &"p".repeat(1000) + "\r\n";
    v.push(
        case(
            "i11/request-trailer/endless",
            chunked(&format!("5\r\nhello\r\n0\r\n{}\r\n", huge.repeat(100))),
        )
        .refused_late(&[400, 431])
        .closes(),
    );
    // Fields not allowed in trailers are dropped, the request goes on.
    for (name, field) in [
        ("content-length", "Content-Length"),
        ("transfer-encoding", "Transfer-Encoding"),
        ("host", "Host"),
        ("connection", "Connection"),
        ("authorization", "Authorization"),
        ("content-type", "Content-Type"),
    ] {
        v.push(
            case(
                &format!("i11/request-trailer/dropped/{name}"),
                chunked(&format!("5\r\nhello\r\n0\r\n{field}: evil\r\n\r\n")),
            )
            .forwarded()
            .trailer_dropped(field),
        );
    }
    v.push(
        case(
            "i11/request-trailer/allowed",
            chunked("5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n"),
        )
        .forwarded(),
    );
    v
}

/// Item 9 and RFC 9112 §3.2: the target and Host decide the route.
fn targets_and_host() -> Vec<Case> {
    let mut v = Vec::new();
    for (name, line) in [
        (
            "fragment-at",
            "GET http://{other}#@{host}/x HTTP/1.1\r\nHost: {host}\r\n\r\n",
        ),
        (
            "userinfo",
            "GET http://user:pass@{host}/x HTTP/1.1\r\nHost: {host}\r\n\r\n",
        ),
        (
            "userinfo-user-only",
            "GET http://user@{host}/x HTTP/1.1\r\nHost: {host}\r\n\r\n",
        ),
        (
            "userinfo-empty",
            "GET http://@{host}/x HTTP/1.1\r\nHost: {host}\r\n\r\n",
        ),
        (
            "port-plus",
            "GET http://{host}:+80/x HTTP/1.1\r\nHost: {host}\r\n\r\n",
        ),
        (
            "port-minus",
            "GET http://{host}:-80/x HTTP/1.1\r\nHost: {host}\r\n\r\n",
        ),
        (
            "port-letters",
            "GET http://{host}:80a/x HTTP/1.1\r\nHost: {host}\r\n\r\n",
        ),
        (
            "port-too-big",
            "GET http://{host}:99999/x HTTP/1.1\r\nHost: {host}\r\n\r\n",
        ),
        ("no-host-http11", "GET http://{host}/x HTTP/1.1\r\n\r\n"),
        (
            "two-different-hosts",
            "GET http://{host}/x HTTP/1.1\r\nHost: {host}\r\nHost: {other}\r\n\r\n",
        ),
        (
            "two-same-hosts",
            "GET http://{host}/x HTTP/1.1\r\nHost: {host}\r\nHost: {host}\r\n\r\n",
        ),
        (
            "host-with-space",
            "GET http://{host}/x HTTP/1.1\r\nHost: a b\r\n\r\n",
        ),
        (
            "empty-authority",
            "GET http:///x HTTP/1.1\r\nHost: {host}\r\n\r\n",
        ),
        (
            "no-scheme-separator",
            "GET http:{host}/x HTTP/1.1\r\nHost: {host}\r\n\r\n",
        ),
    ] {
        v.push(case(&format!("i9/absolute/{name}"), line).refused(400));
    }
    for (name, host_lines) in [
        ("no-host", ""),
        ("empty-host", "Host: \r\n"),
        ("two-hosts-same", "Host: {host}\r\nHost: {host}\r\n"),
        ("two-hosts-different", "Host: {host}\r\nHost: {other}\r\n"),
        ("host-list", "Host: {host}, {host}\r\n"),
        ("host-with-space", "Host: a b\r\n"),
        ("host-port-plus", "Host: {host}:+80\r\n"),
        ("host-port-letters", "Host: {host}:8o\r\n"),
        ("host-userinfo", "Host: user@{host}\r\n"),
        ("host-path", "Host: {host}/x\r\n"),
        ("host-nul", "Host: {host}\x00\r\n"),
    ] {
        v.push(
            case(
                &format!("i9/origin/{name}"),
                format!("GET /x HTTP/1.1\r\n{host_lines}\r\n"),
            )
            .refused(400),
        );
    }
    v.push(case("i9/origin/http10-no-host", "GET /x HTTP/1.0\r\n\r\n").refused_any(&[400, 404]));
    // The authority of an absolute-form target routes and replaces Host.
    for (name, line) in [
        (
            "matching-host",
            "GET http://{host}/x?y=1 HTTP/1.1\r\nHost: {host}\r\n\r\n",
        ),
        (
            "other-host-header",
            "GET http://{host}/x HTTP/1.1\r\nHost: {other}\r\n\r\n",
        ),
        (
            "no-path",
            "GET http://{host} HTTP/1.1\r\nHost: {host}\r\n\r\n",
        ),
        ("http10-no-host", "GET http://{host}/x HTTP/1.0\r\n\r\n"),
        (
            "upper-case-scheme",
            "GET HTTP://{host}/x HTTP/1.1\r\nHost: {host}\r\n\r\n",
        ),
        (
            "port",
            "GET http://{host}:80/x HTTP/1.1\r\nHost: {host}:80\r\n\r\n",
        ),
    ] {
        v.push(case(&format!("i9/absolute/routed/{name}"), line).forwarded());
    }
    v.push(
        case(
            "i9/absolute/routed/query-without-path",
            "GET http://{host}?q=1 HTTP/1.1\r\nHost: {host}\r\n\r\n",
        )
        .refused_or_forwarded_as(&[400], "GET /?q=1 HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    );
    v.push(
        case(
            "i9/absolute/query-names-routed-host",
            "GET http://{other}?@{host}/x HTTP/1.1\r\nHost: {host}\r\n\r\n",
        )
        .refused_any(&[400, 404]),
    );
    v.push(
        case(
            "i9/absolute/https-scheme",
            "GET https://{host}/x HTTP/1.1\r\nHost: {host}\r\n\r\n",
        )
        .refused_or_forwarded_as(&[400], "GET /x HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    );
    v.push(
        case(
            "i9/absolute/unrouted-authority",
            "GET http://{other}/x HTTP/1.1\r\nHost: {host}\r\n\r\n",
        )
        .refused(404),
    );
    for (name, line) in [
        ("port", "GET /x HTTP/1.1\r\nHost: {host}:80\r\n\r\n"),
        ("trailing-dot", "GET /x HTTP/1.1\r\nHost: {host}.\r\n\r\n"),
        ("ows", "GET /x HTTP/1.1\r\nHost:   {host}  \r\n\r\n"),
        (
            "double-slash-path",
            "GET //{other}/x HTTP/1.1\r\nHost: {host}\r\n\r\n",
        ),
        (
            "query",
            "GET /a/b?c=d&e=%20f HTTP/1.1\r\nHost: {host}\r\n\r\n",
        ),
        (
            "encoded-slash",
            "GET /a%2Fb/../c HTTP/1.1\r\nHost: {host}\r\n\r\n",
        ),
    ] {
        v.push(case(&format!("rfc9112/host/{name}"), line).forwarded().h2());
    }
    v.push(
        case(
            "rfc9112/host/options-star",
            "OPTIONS * HTTP/1.1\r\nHost: {host}\r\n\r\n",
        )
        .forwarded(),
    );
    v.push(
        case(
            "rfc9110/unknown-host-404",
            "GET / HTTP/1.1\r\nHost: {other}\r\n\r\n",
        )
        .refused(404)
        .h2(),
    );
    v.push(
        case("rfc9110/no-route-404", get(""))
            .route(Route::Missing)
            .refused(404)
            .h2(),
    );
    v.push(
        case("rfc9110/dead-backend-502", get(""))
            .route(Route::Dead)
            .refused(502)
            .h2(),
    );
    v.push(
        case(
            "rfc9110/connect-405",
            "CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n",
        )
        .refused(405),
    );
    for (name, line) in [
        (
            "del-in-target",
            "GET /a\x7fb HTTP/1.1\r\nHost: {host}\r\n\r\n",
        ),
        (
            "nul-in-target",
            "GET /a\x00b HTTP/1.1\r\nHost: {host}\r\n\r\n",
        ),
        ("empty-target", "GET  HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        (
            "relative-target",
            "GET a/b HTTP/1.1\r\nHost: {host}\r\n\r\n",
        ),
    ] {
        v.push(case(&format!("rfc9112/target/{name}"), line).refused(400));
    }
    // A parser may read `b HTTP/1.1` as the version: 505 is fair too.
    v.push(
        case(
            "rfc9112/target/space-in-target",
            "GET /a b HTTP/1.1\r\nHost: {host}\r\n\r\n",
        )
        .refused_any(&[400, 505]),
    );
    v
}

/// Item 6 and forwarding headers: what the backend may believe.
fn underscores_and_forwarding() -> Vec<Case> {
    let mut v = Vec::new();
    for (name, header) in [
        ("x-forwarded-host", "X_Forwarded_Host: evil.test"),
        ("x-forwarded-proto", "X_Forwarded_Proto: https"),
        ("x-forwarded-for", "X_Forwarded_For: 6.6.6.6"),
        ("x-real-ip", "X_Real_IP: 6.6.6.6"),
        ("custom", "Foo_Bar: 1"),
        ("leading", "_Foo: 1"),
        ("only-underscore", "_: 1"),
    ] {
        v.push(
            case(
                &format!("i6/underscore/{name}"),
                get(&format!("{header}\r\n")),
            )
            .forwarded()
            .h2(),
        );
    }
    v.push(case("i6/underscore/content-length", get("Content_Length: 5\r\n")).forwarded());
    v.push(
        case(
            "i6/underscore/transfer-encoding-beside-length",
            post(
                "Transfer_Encoding: chunked\r\nContent-Length: 5\r\n",
                "hello",
            ),
        )
        .forwarded(),
    );
    // No trusted proxies: the client's own claims are replaced or dropped.
    for (name, header) in [
        ("x-forwarded-for", "X-Forwarded-For: 6.6.6.6"),
        (
            "x-forwarded-for-two",
            "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7",
        ),
        ("x-forwarded-for-lower", "x-forwarded-for: 6.6.6.6"),
        ("x-forwarded-host", "X-Forwarded-Host: evil.test"),
        ("x-forwarded-proto", "X-Forwarded-Proto: https"),
        ("x-real-ip", "X-Real-IP: 6.6.6.6"),
        ("forwarded", "Forwarded: for=6.6.6.6;proto=https"),
    ] {
        v.push(
            case(
                &format!("xff/untrusted/{name}"),
                get(&format!("{header}\r\n")),
            )
            .forwarded()
            .h2(),
        );
    }
    v.push(
        case("xff/request-id/passed", get("X-Request-Id: abc-123\r\n"))
            .forwarded()
            .wants(vec![Want::status(200).eq("x-request-id", "abc-123")])
            .h2(),
    );
    v.push(
        case("xff/request-id/generated", get(""))
            .forwarded()
            .wants(vec![Want::status(200).has("x-request-id")])
            .h2(),
    );
    v
}

/// RFC 9110 §7.6.1: hop-by-hop fields end at the proxy.
fn hop_by_hop() -> Vec<Case> {
    let mut v = Vec::new();
    for (name, headers, h2) in [
        (
            "keep-alive",
            "Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n",
            false,
        ),
        (
            "proxy-connection",
            "Proxy-Connection: keep-alive\r\n",
            false,
        ),
        ("te-trailers", "TE: trailers\r\n", false),
        ("te-gzip", "TE: gzip\r\n", false),
        ("trailer", "Trailer: X-Checksum\r\n", true),
        ("upgrade-without-connection", "Upgrade: foo\r\n", false),
        (
            "connection-named",
            "Connection: X-Custom\r\nX-Custom: 1\r\n",
            false,
        ),
        (
            "connection-two-names",
            "Connection: x-a, x-b\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\n",
            false,
        ),
        (
            "connection-two-headers",
            "Connection: x-a\r\nConnection: x-b\r\nX-A: 1\r\nX-B: 2\r\n",
            false,
        ),
        (
            "connection-names-cookie",
            "Connection: Cookie\r\nCookie: a=1\r\n",
            false,
        ),
        ("connection-names-host", "Connection: host\r\n", false),
        (
            "connection-names-xff",
            "Connection: X-Forwarded-For\r\nX-Forwarded-For: 6.6.6.6\r\n",
            false,
        ),
        (
            "connection-names-request-id",
            "Connection: X-Request-Id\r\nX-Request-Id: abc\r\n",
            false,
        ),
        (
            "connection-case",
            "CONNECTION: X-Custom\r\nx-custom: 1\r\n",
            false,
        ),
        ("proxy-authenticate", "Proxy-Authenticate: Basic\r\n", true),
        (
            "end-to-end-kept",
            "Cookie: a=1\r\nAuthorization: Bearer t\r\nAccept: */*\r\nAccept: text/html\r\n",
            true,
        ),
    ] {
        let mut c = case(&format!("rfc9110/hop-by-hop/{name}"), get(headers)).forwarded();
        if h2 {
            c = c.h2();
        }
        v.push(c);
    }
    v.push(
        case(
            "rfc9110/hop-by-hop/connection-names-content-length",
            post(
                "Connection: Content-Length\r\nContent-Length: 5\r\n",
                "hello",
            ),
        )
        .forwarded(),
    );
    v.push(
        case(
            "rfc9110/hop-by-hop/connection-names-transfer-encoding",
            post(
                "Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n",
                HELLO_CHUNKED,
            ),
        )
        .forwarded(),
    );
    v
}

/// RFC 9112 §2-5: message syntax.
fn head_syntax() -> Vec<Case> {
    let mut v = Vec::new();
    for (name, head) in [
        (
            "space-before-colon",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX-Foo : 1\r\n\r\n",
        ),
        (
            "tab-before-colon",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX-Foo\t: 1\r\n\r\n",
        ),
        (
            "host-space-before-colon",
            "GET / HTTP/1.1\r\nHost : {host}\r\n\r\n",
        ),
        (
            "space-in-name",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX Foo: 1\r\n\r\n",
        ),
        (
            "paren-in-name",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX(Foo): 1\r\n\r\n",
        ),
        (
            "quote-in-name",
            "GET / HTTP/1.1\r\nHost: {host}\r\n\"X\": 1\r\n\r\n",
        ),
        (
            "slash-in-name",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX/Y: 1\r\n\r\n",
        ),
        (
            "nul-in-name",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX\x00Y: 1\r\n\r\n",
        ),
        (
            "del-in-name",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX\x7fY: 1\r\n\r\n",
        ),
        (
            "non-ascii-name",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX\u{e9}: 1\r\n\r\n",
        ),
        (
            "empty-name",
            "GET / HTTP/1.1\r\nHost: {host}\r\n: 1\r\n\r\n",
        ),
        (
            "no-colon",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX-Foo\r\n\r\n",
        ),
        (
            "nul-in-value",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX-Foo: a\x00b\r\n\r\n",
        ),
        (
            "bare-cr-in-value",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX-Foo: a\rb\r\n\r\n",
        ),
        (
            "leading-space-first-field",
            "GET / HTTP/1.1\r\n Host: {host}\r\n\r\n",
        ),
        (
            "double-space-request-line",
            "GET  / HTTP/1.1\r\nHost: {host}\r\n\r\n",
        ),
        (
            "tab-request-line",
            "GET\t/\tHTTP/1.1\r\nHost: {host}\r\n\r\n",
        ),
        (
            "trailing-space-request-line",
            "GET / HTTP/1.1 \r\nHost: {host}\r\n\r\n",
        ),
        ("no-version", "GET /\r\nHost: {host}\r\n\r\n"),
        ("bad-method-char", "GE(T / HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        ("empty-method", " / HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        (
            "garbage",
            "\x16\x03\x01\x00\x05\x01\x00\x00\x01\x03\x03\r\n\r\n",
        ),
    ] {
        v.push(
            case(&format!("rfc9112/syntax/{name}"), head)
                .refused(400)
                .closes(),
        );
    }
    // obs-fold and bare LF: refused, or repaired before forwarding.
    v.push(
        case(
            "rfc9112/syntax/obs-fold",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX-Foo: a\r\n b\r\n\r\n",
        )
        .refused_or_forwarded_as(
            &[400],
            "GET / HTTP/1.1\r\nHost: {host}\r\nX-Foo: a b\r\n\r\n",
        ),
    );
    v.push(
        case(
            "rfc9112/syntax/bare-lf-head",
            "GET / HTTP/1.1\nHost: {host}\nX-Foo: 1\n\n",
        )
        .refused_or_forwarded_as(&[400], "GET / HTTP/1.1\r\nHost: {host}\r\nX-Foo: 1\r\n\r\n"),
    );
    v.push(
        case(
            "rfc9112/syntax/leading-empty-lines",
            "\r\n\r\nGET / HTTP/1.1\r\nHost: {host}\r\n\r\n",
        )
        .refused_or_forwarded_as(&[400], "GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    );
    for (name, version, statuses) in [
        ("http12", "HTTP/1.2", &[505u16] as &'static [u16]),
        ("http20", "HTTP/2.0", &[505]),
        ("http30", "HTTP/3.0", &[505]),
        ("http09", "HTTP/0.9", &[400, 505]),
        ("http1", "HTTP/1", &[400, 505]),
        ("http110", "HTTP/1.10", &[400, 505]),
        ("lower-case", "http/1.1", &[400, 505]),
    ] {
        v.push(
            case(
                &format!("rfc9112/version/{name}"),
                format!("GET / {version}\r\nHost: {{host}}\r\n\r\n"),
            )
            .refused_any(statuses)
            .closes(),
        );
    }
    let long_value = "v".repeat(40 * 1024);
    v.push(
        case(
            "rfc9112/limits/head-over-max",
            get(&format!("X-Big: {long_value}\r\n")),
        )
        .refused(431)
        .closes(),
    );
    let long_target = format!("/{}", "a".repeat(40 * 1024));
    v.push(
        case(
            "rfc9112/limits/target-over-max",
            format!("GET {long_target} HTTP/1.1\r\nHost: {{host}}\r\n\r\n"),
        )
        .refused_any(&[414, 431])
        .closes(),
    );
    let many: String = (0..200).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    v.push(
        case("rfc9112/limits/too-many-headers", get(&many))
            .refused_any(&[431, 400])
            .closes(),
    );
    let fine_value = "v".repeat(16 * 1024);
    v.push(
        case(
            "rfc9112/limits/16k-header-forwarded",
            get(&format!("X-Big: {fine_value}\r\n")),
        )
        .forwarded()
        .h2(),
    );
    let fifty: String = (0..50).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    v.push(
        case("rfc9112/limits/50-headers-forwarded", get(&fifty))
            .forwarded()
            .h2(),
    );
    for (name, head) in [
        (
            "lower-case-method",
            "get / HTTP/1.1\r\nHost: {host}\r\n\r\n",
        ),
        (
            "extension-method",
            "PURGE /x HTTP/1.1\r\nHost: {host}\r\n\r\n",
        ),
        (
            "empty-value",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX-Empty:\r\n\r\n",
        ),
        (
            "obs-text-value",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX-Cafe: caf\u{e9}\r\n\r\n",
        ),
        (
            "tab-in-value",
            "GET / HTTP/1.1\r\nHost: {host}\r\nX-Foo: a\tb\r\n\r\n",
        ),
        (
            "no-space-after-colon",
            "GET / HTTP/1.1\r\nHost:{host}\r\nX-Foo:1\r\n\r\n",
        ),
        ("trace", "TRACE / HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        (
            "delete-with-body",
            "DELETE /x HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\n\r\nabc",
        ),
        (
            "header-order-and-case",
            "GET / HTTP/1.1\r\nhost: {host}\r\nx-b: 2\r\nX-A: 1\r\nX-b: 3\r\n\r\n",
        ),
    ] {
        let c = case(&format!("rfc9112/syntax/valid/{name}"), head).forwarded();
        // `X-Café-Free` is no header name: not this case over HTTP/2.
        v.push(if name == "obs-text-value" || name == "lower-case-method" {
            c
        } else {
            c.h2()
        });
    }
    v
}

/// RFC 9112 §9: keep-alive, close, pipelining, HTTP/1.0.
fn connection_management() -> Vec<Case> {
    let mut v = Vec::new();
    let one = "GET /1 HTTP/1.1\r\nHost: {host}\r\n\r\n";
    let two = "GET /2 HTTP/1.1\r\nHost: {host}\r\n\r\n";
    let three = "GET /3 HTTP/1.1\r\nHost: {host}\r\n\r\n";
    let replies = |c: Case| {
        c.reply(Reply::ok("one"))
            .reply(Reply::ok("two"))
            .reply(Reply::ok("three"))
    };
    v.push(
        replies(case(
            "rfc9112/pipeline/three-gets",
            format!("{one}{two}{three}"),
        ))
        .forwarded()
        .wants(vec![
            Want::status(200).body("one"),
            Want::status(200).body("two"),
            Want::status(200).body("three"),
        ])
        .stays_open(),
    );
    v.push(
        replies(case(
            "rfc9112/pipeline/post-then-get",
            format!("{}{two}", post("Content-Length: 5\r\n", "hello")),
        ))
        .forwarded()
        .wants(vec![
            Want::status(200).body("one"),
            Want::status(200).body("two"),
        ]),
    );
    v.push(
        replies(case(
            "rfc9112/pipeline/chunked-then-get",
            format!("{}{two}", chunked(HELLO_CHUNKED)),
        ))
        .forwarded()
        .wants(vec![
            Want::status(200).body("one"),
            Want::status(200).body("two"),
        ]),
    );
    v.push(
        case(
            "rfc9112/pipeline/head-in-the-middle",
            format!("{one}HEAD /h HTTP/1.1\r\nHost: {{host}}\r\n\r\n{three}"),
        )
        .reply(Reply::ok("one"))
        .reply(Reply::new("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"))
        .reply(Reply::ok("three"))
        .forwarded()
        .wants(vec![
            Want::status(200).body("one"),
            Want::status(200).head().eq("content-length", "3").body(""),
            Want::status(200).body("three"),
        ]),
    );
    v.push(
        replies(case(
            "rfc9112/pipeline/close-stops-the-rest",
            format!("GET /1 HTTP/1.1\r\nHost: {{host}}\r\nConnection: close\r\n\r\n{two}"),
        ))
        .forwarded_as(one)
        .wants(vec![Want::status(200).body("one")])
        .closes(),
    );
    v.push(
        replies(case(
            "rfc9112/pipeline/bad-second-request",
            format!("{one}GET /2 HTTP/1.1\r\nHost: {{host}}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{three}"),
        ))
        .forwarded_as(one)
        .wants(vec![
            Want::status(200).body("one"),
            Want::generated(super::case::Status::OneOf(&[400, 501])),
        ])
        .closes(),
    );
    v.push(
        replies(steps(
            "rfc9112/keep-alive/sequential",
            vec![
                Step::Send(one.into()),
                Step::Read(1),
                Step::Send(two.into()),
            ],
        ))
        .forwarded()
        .wants(vec![
            Want::status(200).body("one"),
            Want::status(200).body("two"),
        ])
        .backend_connections(1)
        .stays_open(),
    );
    for (name, value) in [
        ("close", "close"),
        ("close-upper", "Close"),
        ("close-in-list", "keep-alive, close"),
    ] {
        v.push(
            case(
                &format!("rfc9112/close/{name}"),
                get(&format!("Connection: {value}\r\n")),
            )
            .forwarded()
            .closes(),
        );
    }
    v.push(
        case(
            "rfc9112/http10/no-keep-alive",
            "GET / HTTP/1.0\r\nHost: {host}\r\n\r\n",
        )
        .forwarded()
        .closes(),
    );
    v.push(
        case(
            "rfc9112/http10/keep-alive",
            "GET / HTTP/1.0\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n",
        )
        .forwarded()
        .wants(vec![Want::status(200).body("ok").has("content-length")])
        .stays_open(),
    );
    v.push(
        case(
            "rfc9112/http10/post",
            "POST / HTTP/1.0\r\nHost: {host}\r\nContent-Length: 5\r\n\r\nhello",
        )
        .forwarded()
        .closes(),
    );
    v.push(
        case(
            "rfc9112/http10/chunked-answer-unchunked",
            "GET / HTTP/1.0\r\nHost: {host}\r\n\r\n",
        )
        .answers("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        .forwarded()
        .wants(vec![Want::status(200)
            .body("hello")
            .lacks("transfer-encoding")])
        .closes(),
    );
    v.push(
        case("rfc9112/http10/no-1xx-relayed", "GET / HTTP/1.0\r\nHost: {host}\r\n\r\n")
            .reply(Reply::new("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"))
            .forwarded()
            .wants(vec![Want::status(200).body("hi")])
            .closes(),
    );
    v
}

/// RFC 9110 §10.1.1 and §7.8: `Expect: 100-continue` and upgrades.
fn expect_and_upgrade() -> Vec<Case> {
    let mut v = Vec::new();
    let head =
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
    v.push(
        steps(
            "rfc9110/expect/continue-then-body",
            vec![
                Step::Send(head.into()),
                Step::Read(1),
                Step::Send(b"hello".to_vec()),
            ],
        )
        .reply(Reply::ok("ok").interim("HTTP/1.1 100 Continue\r\n\r\n"))
        .forwarded()
        .wants(vec![Want::status(100), Want::status(200).body("ok")]),
    );
    v.push(
        steps("rfc9110/expect/early-417", vec![Step::Send(head.into())])
            .reply(
                Reply::new("HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n").early(),
            )
            .upstream(Upstream::Any)
            .wants(vec![Want::status(417)]),
    );
    v.push(
        case(
            "rfc9110/expect/early-413-with-body",
            post("Content-Length: 100000\r\n", &"x".repeat(100_000)),
        )
        .reply(
            Reply::new(
                "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .early()
            .then(Then::Close),
        )
        .upstream(Upstream::Any)
        .wants(vec![Want::status(413)]),
    );
    let ws = "GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    v.push(
        case("rfc9110/upgrade/websocket-handshake", ws)
            .reply(Reply::new("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n").then(Then::Stall))
            .forwarded()
            .up_eq("upgrade", "websocket")
            .wants(vec![Want::status(101).eq("upgrade", "websocket").has("sec-websocket-accept")]),
    );
    v.push(
        case("rfc9110/upgrade/refused-by-backend", ws)
            .forwarded()
            .stays_open(),
    );
    v.push(
        case(
            "rfc9110/upgrade/http10-is-no-upgrade",
            "GET /ws HTTP/1.0\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .forwarded()
        .up_lacks("upgrade"),
    );
    v.push(
        case("rfc9110/upgrade/unasked-101-is-502", get(""))
            .answers("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            .upstream(Upstream::Any)
            .wants(vec![Want::generated(super::case::Status::Is(502))]),
    );
    v
}

/// Item 1: a request that may have reached a backend is replayed only if
/// idempotent, and never after an answer byte.
fn replay() -> Vec<Case> {
    let mut v = Vec::new();
    let warm = "GET /warm HTTP/1.1\r\nHost: {host}\r\n\r\n";
    let pay = "POST /pay HTTP/1.1\r\nHost: {host}\r\nContent-Length: 10\r\n\r\namount=100";
    for (name, answer) in [("half-status-line", "HTTP/1.1 2"), ("nothing", "")] {
        v.push(
            steps(
                &format!("i1/post-on-pooled-connection/{name}"),
                vec![
                    Step::Send(warm.into()),
                    Step::Read(1),
                    Step::Send(pay.into()),
                ],
            )
            .reply(Reply::ok("warm"))
            .reply(Reply::new(answer).then(Then::Close))
            .forwarded()
            .wants(vec![
                Want::status(200).body("warm"),
                Want::generated(super::case::Status::Is(502)),
            ]),
        );
    }
    let get = "GET /again HTTP/1.1\r\nHost: {host}\r\n\r\n";
    v.push(
        steps(
            "i1/get-on-pooled-connection/nothing-is-retried",
            vec![
                Step::Send(warm.into()),
                Step::Read(1),
                Step::Send(get.into()),
            ],
        )
        .reply(Reply::ok("warm"))
        .reply(Reply::new("").then(Then::Close))
        .forwarded_as(format!("{warm}{get}{get}"))
        .wants(vec![
            Want::status(200).body("warm"),
            Want::status(200).body("ok"),
        ]),
    );
    v.push(
        steps(
            "i1/get-on-pooled-connection/half-answer-is-not-retried",
            vec![
                Step::Send(warm.into()),
                Step::Read(1),
                Step::Send(get.into()),
            ],
        )
        .reply(Reply::ok("warm"))
        .reply(Reply::new("HTTP/1.1 2").then(Then::Close))
        .forwarded()
        .wants(vec![
            Want::status(200).body("warm"),
            Want::generated(super::case::Status::Is(502)),
        ]),
    );
    v.push(
        case("i1/post-fresh-connection-nothing", pay)
            .reply(Reply::new("").then(Then::Close))
            .forwarded()
            .wants(vec![Want::generated(super::case::Status::Is(502))]),
    );
    v.push(
        case(
            "i1/put-half-answer-not-retried",
            "PUT /x HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\n\r\nhi",
        )
        .reply(Reply::new("HTTP/1.1 200 OK\r\nContent-Len").then(Then::Close))
        .forwarded()
        .wants(vec![Want::generated(super::case::Status::Is(502))]),
    );
    v.push(either_case());
    v
}

/// A fresh connection closed with no answer to a GET: retrying is
/// allowed (idempotent, no answer byte), a 502 too.
fn either_case() -> Case {
    case("i1/get-fresh-connection-nothing", get(""))
        .reply(Reply::new("").then(Then::Close))
        .upstream(Upstream::Any)
        .wants(vec![either(&[200, 502]).body("ok")])
}
