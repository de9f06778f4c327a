//! Response cases: what a backend may answer, and what a client must get
//! in its place. Issue 25 section 1 items are named `i<N>/...`.

use super::case::{case, either, steps, Case, Status, Step, Upstream, Want};
use super::recorder::{Reply, Then};

const GET: &str = "GET / HTTP/1.1\r\nHost: {host}\r\n\r\n";

/// A GET answered with `answer` (then the backend keeps the connection).
fn answered(name: &str, answer: impl AsRef<[u8]>) -> Case {
    case(name, GET).answers(answer).forwarded()
}

/// A GET answered with `answer`, then the backend closes.
fn answered_then_closed(name: &str, answer: impl AsRef<[u8]>) -> Case {
    case(name, GET)
        .reply(Reply::new(answer).then(Then::Close))
        .forwarded()
}

fn bad_gateway() -> Want {
    Want::generated(Status::Is(502))
}

pub fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    v.extend(statuses());
    v.extend(framing());
    v.extend(head_syntax());
    v.extend(interim());
    v.extend(unsolicited());
    v.extend(hop_by_hop_and_reuse());
    v
}

/// Item 8: a status is three digits from 100 to 999.
fn statuses() -> Vec<Case> {
    let mut v = Vec::new();
    for (name, line) in [
        ("099", "HTTP/1.1 099 Low"),
        ("000", "HTTP/1.1 000 Zero"),
        ("001", "HTTP/1.1 001 One"),
        ("four-digits", "HTTP/1.1 1000 Big"),
        ("two-digits", "HTTP/1.1 20 OK"),
        ("letters", "HTTP/1.1 abc OK"),
        ("negative", "HTTP/1.1 -20 OK"),
        ("http2-version", "HTTP/2.0 200 OK"),
        ("http12-version", "HTTP/1.2 200 OK"),
        ("icy", "ICY 200 OK"),
        ("double-space", "HTTP/1.1  200 OK"),
        ("lower-case-version", "http/1.1 200 OK"),
    ] {
        v.push(
            answered(
                &format!("i8/status/{name}"),
                format!("{line}\r\nContent-Length: 2\r\n\r\nhi"),
            )
            .wants(vec![bad_gateway()])
            .h2(),
        );
    }
    for (name, line, status) in [
        ("600", "HTTP/1.1 600 Custom", 600),
        ("999", "HTTP/1.1 999 Max", 999),
        ("418", "HTTP/1.1 418 I'm a teapot", 418),
        ("empty-reason", "HTTP/1.1 200 ", 200),
        ("http10-backend", "HTTP/1.0 200 OK", 200),
        ("reason-with-obs-text", "HTTP/1.1 200 Gr\u{fc}\u{df}e", 200),
    ] {
        v.push(
            answered(
                &format!("i8/status/relayed/{name}"),
                format!("{line}\r\nContent-Length: 2\r\n\r\nhi"),
            )
            .wants(vec![Want::status(status).body("hi")])
            .h2(),
        );
    }
    v.push(
        answered(
            "i8/status/no-reason-no-space",
            "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nhi",
        )
        .wants(vec![either(&[200, 502]).body("hi")])
        .h2(),
    );
    v
}

const EVIL: &str = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil";

/// Item 3 and RFC 9112 §6.3: the client reads the answer the way the
/// proxy framed it, and exactly that.
fn framing() -> Vec<Case> {
    let mut v = Vec::new();
    v.push(
        answered_then_closed(
            "i3/te-gzip-with-length-then-more",
            format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello{EVIL}"),
        )
        .wants(vec![either(&[200, 502]).body(format!("hello{EVIL}"))]),
    );
    v.push(
        answered(
            "i3/te-chunked-beats-length",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .wants(vec![either(&[200, 502]).body("hello")])
        .h2(),
    );
    v.push(
        answered(
            "i3/length-list-same",
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
        )
        .wants(vec![either(&[200, 502]).body("hello")])
        .h2(),
    );
    v.push(
        answered(
            "i3/length-two-headers-same",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        )
        .wants(vec![either(&[200, 502]).body("hello")])
        .h2(),
    );
    for (name, headers) in [
        (
            "length-two-headers-differing",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
        ),
        ("length-list-differing", "Content-Length: 5, 6\r\n"),
        ("length-huge", "Content-Length: 9999999999999999999\r\n"),
        ("length-negative", "Content-Length: -5\r\n"),
        ("length-plus", "Content-Length: +5\r\n"),
        ("length-letters", "Content-Length: five\r\n"),
    ] {
        v.push(
            answered_then_closed(
                &format!("i3/{name}"),
                format!("HTTP/1.1 200 OK\r\n{headers}\r\nhello"),
            )
            .wants(vec![bad_gateway()])
            .h2(),
        );
    }
    v.push(
        answered_then_closed(
            "i3/te-chunked-then-gzip",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nhello",
        )
        .wants(vec![either(&[200, 502]).body("hello")]),
    );
    v.push(
        answered(
            "i3/te-gzip-then-chunked",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .wants(vec![either(&[200, 502]).body("hello")]),
    );
    v.push(
        answered(
            "i3/te-two-headers-chunked",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .wants(vec![either(&[502])]),
    );
    v.push(
        answered_then_closed(
            "i3/te-identity",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nhello",
        )
        .wants(vec![either(&[200, 502]).body("hello")]),
    );
    for (name, body) in [
        ("letters", "zz\r\nhello\r\n0\r\n\r\n"),
        ("fffffffffffffff0", "fffffffffffffff0\r\nhello\r\n0\r\n\r\n"),
        ("bare-lf", "5\nhello\r\n0\r\n\r\n"),
        ("data-longer-than-size", "5\r\nhelloXX\r\n0\r\n\r\n"),
        ("truncated", "5\r\nhel"),
    ] {
        v.push(
            answered_then_closed(
                &format!("rfc9112/response-chunked/bad/{name}"),
                format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{body}"),
            )
            .wants(vec![either(&[502]).may_break()])
            .closes(),
        );
    }
    v.push(
        answered_then_closed(
            "rfc9112/response-length/truncated",
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
        )
        .wants(vec![either(&[502]).may_break()])
        .closes(),
    );
    v.push(
        answered_then_closed(
            "rfc9112/response-until-close",
            "HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nuntil close",
        )
        .wants(vec![Want::status(200).body("until close")])
        .h2(),
    );
    v.push(
        answered(
            "rfc9112/response-chunked/extensions",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0;c\r\n\r\n",
        )
        .wants(vec![Want::status(200).body("hello")])
        .h2(),
    );
    let mut many = String::from("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    let mut body = String::new();
    for i in 0..300 {
        many.push_str(&format!("3\r\n{i:03}\r\n"));
        body.push_str(&format!("{i:03}"));
    }
    many.push_str("0\r\n\r\n");
    v.push(
        answered("rfc9112/response-chunked/300-chunks", many)
            .wants(vec![Want::status(200).body(body)])
            .h2(),
    );
    let big = "b".repeat(1 << 20);
    v.push(
        answered(
            "rfc9112/response-length/1mib",
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{big}",
                big.len()
            ),
        )
        .wants(vec![Want::status(200).body(big)])
        .h2(),
    );
    v.push(
        answered(
            "rfc9112/response-length/zero",
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        )
        .wants(vec![Want::status(200).body("")])
        .h2(),
    );
    // Item 11 on the way back: trailers are filtered.
    v.push(
        answered(
            "i11/response-trailer/dropped",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: abc\r\nContent-Length: 99\r\nSet-Cookie: a=1\r\nTransfer-Encoding: chunked\r\nHost: evil\r\n\r\n",
        )
        .wants(vec![Want::status(200).body("hello")]),
    );
    for (name, trailer) in [
        ("obs-fold", "X-T: a\r\n b\r\n"),
        ("status-line", "HTTP/1.1 200 OK\r\n"),
        ("space-before-colon", "X-T : 1\r\n"),
    ] {
        v.push(
            answered_then_closed(
                &format!("i11/response-trailer/bad/{name}"),
                format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n{trailer}\r\n"),
            )
            .wants(vec![either(&[200, 502]).may_break().body("hello")]),
        );
    }
    v
}

/// RFC 9112 §5: response head syntax.
fn head_syntax() -> Vec<Case> {
    let mut v = Vec::new();
    for (name, header) in [
        ("nul-in-value", "X-Foo: a\x00b\r\n"),
        ("space-in-name", "X Foo: 1\r\n"),
        ("paren-in-name", "X(Y): 1\r\n"),
        ("no-colon", "X-Foo\r\n"),
        ("empty-name", ": 1\r\n"),
    ] {
        v.push(
            answered(
                &format!("rfc9112/response-syntax/{name}"),
                format!("HTTP/1.1 200 OK\r\n{header}Content-Length: 2\r\n\r\nhi"),
            )
            .wants(vec![bad_gateway()])
            .h2(),
        );
    }
    // A proxy repairs these or refuses them (RFC 9112 §5.1, §5.2, §2.2).
    for (name, answer) in [
        (
            "obs-fold",
            "HTTP/1.1 200 OK\r\nX-Foo: a\r\n b\r\nContent-Length: 2\r\n\r\nhi",
        ),
        (
            "space-before-colon",
            "HTTP/1.1 200 OK\r\nX-Foo : 1\r\nContent-Length: 2\r\n\r\nhi",
        ),
        (
            "bare-lf",
            "HTTP/1.1 200 OK\nX-Foo: 1\nContent-Length: 2\n\nhi",
        ),
    ] {
        v.push(
            answered(&format!("rfc9112/response-syntax/repaired/{name}"), answer)
                .wants(vec![either(&[200, 502]).body("hi")])
                .h2(),
        );
    }
    let many: String = (0..200).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    v.push(
        answered(
            "rfc9112/response-syntax/too-many-headers",
            format!("HTTP/1.1 200 OK\r\n{many}Content-Length: 2\r\n\r\nhi"),
        )
        .wants(vec![bad_gateway()])
        .h2(),
    );
    let huge = "v".repeat(100 * 1024);
    v.push(
        answered(
            "rfc9112/response-syntax/huge-head",
            format!("HTTP/1.1 200 OK\r\nX-Big: {huge}\r\nContent-Length: 2\r\n\r\nhi"),
        )
        .wants(vec![bad_gateway()])
        .h2(),
    );
    v.push(
        answered(
            "rfc9112/response-syntax/set-cookie-twice",
            "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n\r\nhi",
        )
        .wants(vec![Want::status(200).has("set-cookie").body("hi")])
        .h2(),
    );
    v.push(
        answered(
            "rfc9112/response-syntax/request-id-returned",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        )
        .wants(vec![Want::status(200).has("x-request-id").body("hi")])
        .h2(),
    );
    v
}

/// Item 7: interim answers are parsed, cleaned and re-serialized.
fn interim() -> Vec<Case> {
    let mut v = Vec::new();
    const FINAL: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
    v.push(
        answered(
            "i7/103-bare-lf-and-hop-by-hop",
            format!("HTTP/1.1 103 Early Hints\nLink: </a>; rel=preload\nConnection: x-hop\nX-Hop: 1\nKeep-Alive: timeout=5\n\n{FINAL}"),
        )
        .wants(vec![
            Want::status(103).has("link").lacks("x-hop").lacks("keep-alive").lacks("connection"),
            Want::status(200).body("hi"),
        ])
        .h2(),
    );
    v.push(
        answered(
            "i7/103-proxy-connection",
            format!("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\nProxy-Connection: keep-alive\r\n\r\n{FINAL}"),
        )
        .wants(vec![
            Want::status(103).has("link").lacks("proxy-connection"),
            Want::status(200).body("hi"),
        ]),
    );
    v.push(
        answered(
            "i7/unsolicited-100",
            format!("HTTP/1.1 100 Continue\r\n\r\n{FINAL}"),
        )
        .wants(vec![Want::status(100), Want::status(200).body("hi")])
        .h2(),
    );
    v.push(
        answered(
            "i7/two-103s",
            format!("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </b>\r\n\r\n{FINAL}"),
        )
        .wants(vec![
            Want::status(103).eq("link", "</a>"),
            Want::status(103).eq("link", "</b>"),
            Want::status(200).body("hi"),
        ])
        .h2(),
    );
    v.push(
        answered("i7/102", format!("HTTP/1.1 102 Processing\r\n\r\n{FINAL}"))
            .wants(vec![Want::status(102), Want::status(200).body("hi")])
            .h2(),
    );
    v.push(
        answered_then_closed(
            "i7/103-then-close",
            "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
        )
        .wants(vec![Want::status(103), bad_gateway()]),
    );
    v.push(
        answered(
            "i7/103-bad-header",
            format!("HTTP/1.1 103 Early Hints\r\nX Bad: 1\r\n\r\n{FINAL}"),
        )
        .wants(vec![bad_gateway()]),
    );
    v
}

/// Item 12: bytes a backend sends past a complete answer never reach a
/// client: that connection is not used again.
fn unsolicited() -> Vec<Case> {
    let mut v = Vec::new();
    let second = "GET /2 HTTP/1.1\r\nHost: {host}\r\n\r\n";
    for (name, first, answer, to_head) in [
        (
            "after-204",
            GET,
            format!("HTTP/1.1 204 No Content\r\n\r\n{EVIL}"),
            false,
        ),
        (
            "after-304",
            GET,
            format!("HTTP/1.1 304 Not Modified\r\nContent-Length: 4\r\n\r\n{EVIL}"),
            false,
        ),
        (
            "body-on-head",
            "HEAD / HTTP/1.1\r\nHost: {host}\r\n\r\n",
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{EVIL}",
                EVIL.len()
            ),
            true,
        ),
        (
            "after-length-body",
            GET,
            format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi{EVIL}"),
            false,
        ),
        (
            "after-chunked-body",
            GET,
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n{EVIL}"
            ),
            false,
        ),
        (
            "garbage-after-204",
            GET,
            "HTTP/1.1 204 No Content\r\n\r\nxyz".to_owned(),
            false,
        ),
    ] {
        let mut first_want = Want::status(if name.contains("204") {
            204
        } else if name.contains("304") {
            304
        } else {
            200
        });
        if to_head {
            first_want = first_want.head();
        } else if name.contains("body") {
            first_want = first_want.body("hi");
        }
        v.push(
            steps(
                &format!("i12/{name}"),
                vec![
                    Step::Send(first.into()),
                    Step::Read(1),
                    Step::Send(second.into()),
                ],
            )
            .reply(Reply::new(answer))
            .reply(Reply::ok("good"))
            .upstream(Upstream::AsSent(None))
            .wants(vec![first_want, Want::status(200).body("good")])
            .backend_connections(2),
        );
    }
    v
}

/// RFC 9110 §7.6.1 on answers, and when a backend connection may be
/// used again.
fn hop_by_hop_and_reuse() -> Vec<Case> {
    let mut v = Vec::new();
    v.push(
        answered(
            "rfc9110/response-hop-by-hop",
            "HTTP/1.1 200 OK\r\nConnection: x-hop, keep-alive\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nX-End: 1\r\nContent-Length: 2\r\n\r\nhi",
        )
        .wants(vec![Want::status(200)
            .lacks("x-hop")
            .lacks("keep-alive")
            .lacks("proxy-connection")
            .lacks("upgrade")
            .has("x-end")
            .body("hi")])
        .h2(),
    );
    let first = "GET /1 HTTP/1.1\r\nHost: {host}\r\n\r\n";
    let second = "GET /2 HTTP/1.1\r\nHost: {host}\r\n\r\n";
    let two = |name: &str, answer: &str, reused: bool, to_head_first: bool| {
        let first = if to_head_first {
            "HEAD /1 HTTP/1.1\r\nHost: {host}\r\n\r\n"
        } else {
            first
        };
        let status = answer[9..12].parse().unwrap();
        let mut w = Want::status(status);
        if to_head_first {
            w = w.head();
        }
        steps(
            name,
            vec![
                Step::Send(first.into()),
                Step::Read(1),
                Step::Send(second.into()),
            ],
        )
        .reply(Reply::new(answer))
        .reply(Reply::ok("good"))
        .forwarded()
        .wants(vec![w, Want::status(200).body("good")])
        .backend_connections(if reused { 1 } else { 2 })
    };
    v.push(two(
        "rfc9112/reuse/after-length",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        true,
        false,
    ));
    v.push(two(
        "rfc9112/reuse/after-chunked",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        true,
        false,
    ));
    v.push(two(
        "rfc9112/reuse/after-204",
        "HTTP/1.1 204 No Content\r\n\r\n",
        true,
        false,
    ));
    // Issue 25, item 12: an answer that may have no body but announces
    // one (a length or a coding on a 304, a HEAD answer, a 204) is not
    // followed by another exchange on its connection: a sloppy backend may
    // send that body at any time, and the proxy could not tell it from the
    // next answer. The bodiless answer itself is relayed as usual.
    v.push(two(
        "rfc9112/reuse/not-after-304-with-length",
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        false,
        false,
    ));
    v.push(two(
        "rfc9112/reuse/not-after-head-with-length",
        "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
        false,
        true,
    ));
    v.push(two(
        "rfc9112/reuse/not-after-head-with-chunked",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        false,
        true,
    ));
    v.push(two(
        "rfc9112/reuse/not-after-connection-close",
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi",
        false,
        false,
    ));
    v.push(two(
        "rfc9112/reuse/not-after-http10",
        "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        false,
        false,
    ));
    v.push(
        two(
            "rfc9110/response-204-with-transfer-encoding",
            "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
            false,
        )
        .wants(vec![
            Want::status(204).lacks("transfer-encoding"),
            Want::status(200).body("good"),
        ]),
    );
    v
}
