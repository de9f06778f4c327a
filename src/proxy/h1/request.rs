//! A request head: parsed in place, judged ([`head::inspect_request`]),
//! answered by the proxy itself (a refusal, a redirect, an ACME challenge)
//! or routed, with the backend's head written into `Conn::out`
//! ([`Prepared`]).

use super::head::{self, Forwarding, Framing, HeadError, MAX_HEADERS};
use super::{Conn, Dialer, Socket};
use crate::proxy::policy::{self, Access};
use crate::proxy::{ProxyError, REPLAY_BUFFER_LIMIT};
use crate::routes::SharedRoute;
use bytes::Bytes;
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::time::Instant;

/// A request ready to go: its upstream head is in `Conn::out`.
pub(super) struct Prepared {
    pub(super) head_len: usize,
    pub(super) route: SharedRoute,
    pub(super) framing: Framing,
    pub(super) keep_alive: bool,
    pub(super) http10: bool,
    pub(super) is_head: bool,
    pub(super) idempotent: bool,
    pub(super) upgrade: Option<Box<[u8]>>,
    pub(super) expect_continue: bool,
    /// The body is read whole before it is sent, so that it can be sent
    /// again to another backend.
    pub(super) buffer_body: bool,
    pub(super) request_id: RequestId,
    pub(super) started: Instant,
    /// When the request starts going upstream: `started`, or later when
    /// its body was read whole first. The response header timeout counts
    /// from here.
    pub(super) sent_at: Instant,
    pub(super) access: Option<Access>,
    /// `Strict-Transport-Security` for the answer (TLS, `--hsts`).
    pub(super) hsts: Option<Arc<[u8]>>,
}

/// The request id sent upstream and back: the client's, or a fresh one.
pub(super) enum RequestId {
    Generated([u8; 32]),
    Client(Box<[u8]>),
}

impl RequestId {
    pub(super) fn new(client: Option<&[u8]>) -> RequestId {
        match client {
            Some(id) => RequestId::Client(id.into()),
            None => RequestId::Generated(crate::proxy::headers::request_id_hex()),
        }
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        match self {
            RequestId::Generated(b) => b,
            RequestId::Client(b) => b,
        }
    }
}

/// A request head that will not be forwarded.
pub(super) struct Refusal {
    pub(super) error: ProxyError,
    pub(super) access: Option<Access>,
    /// Where the refused request ends, when the rest of the connection can
    /// still be read (a routing refusal of a body-less request).
    pub(super) head_len: Option<usize>,
    pub(super) request_id: RequestId,
    pub(super) started: Instant,
    /// `Location` of a redirect.
    pub(super) location: Option<Box<[u8]>>,
}

/// The key authorization of an ACME HTTP-01 challenge, answered from
/// memory ([`policy::acme_challenge`]).
pub(super) struct ChallengeReply {
    pub(super) key_authorization: Bytes,
    pub(super) access: Option<Access>,
    /// Where the request ends, when the connection can go on.
    pub(super) head_len: Option<usize>,
    pub(super) request_id: RequestId,
    pub(super) started: Instant,
}

pub(super) enum Step {
    Ready(Box<Prepared>),
    Partial,
    Refuse(Box<Refusal>),
    Challenge(Box<ChallengeReply>),
}

impl<'a, C: Socket, D: Dialer> Conn<'a, C, D> {
    /// `--redirect-https`: where a cleartext request for a host that has
    /// a certificate goes instead (same path and query), unless it is an
    /// ACME HTTP-01 challenge, which must be answered over cleartext.
    pub(super) fn https_redirect(&self, facts: &head::RequestFacts<'_>) -> Option<Box<[u8]>> {
        let port = self.proxy.config.redirect_https?;
        if self.info.tls || facts.path.starts_with(crate::acme::challenges::PATH_PREFIX) {
            return None;
        }
        let authority = http::uri::Authority::try_from(facts.host.as_ref()).ok()?;
        let host = authority.host();
        if !self.proxy.state.certs.has_certificate_for(host) {
            return None;
        }
        let path = if facts.path.starts_with('/') {
            facts.path
        } else {
            "/"
        };
        let location = if port == 443 {
            format!("https://{host}{path}")
        } else {
            format!("https://{host}:{port}{path}")
        };
        Some(location.into_bytes().into_boxed_slice())
    }

    /// A refusal of a head that could not be read: only the client is
    /// known.
    pub(super) fn refusal(&self, error: ProxyError, started: Instant) -> Box<Refusal> {
        Box::new(Refusal {
            error,
            access: self
                .proxy
                .config
                .access_log
                .then(|| Access::unreadable(self.client_ip())),
            head_len: None,
            request_id: RequestId::new(None),
            started,
            location: None,
        })
    }

    pub(super) fn client_ip(&self) -> std::net::IpAddr {
        crate::proxy::headers::client_ip(self.info.peer.ip())
    }

    /// Parses the head at the start of `inbuf` and, when it can be
    /// forwarded, routes it and writes the backend's head into `out`.
    pub(super) fn prepare(&mut self) -> Step {
        let started = Instant::now();
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let head_len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut req,
            &self.inbuf,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Step::Partial,
            Err(e) => {
                let error = match HeadError::from(e) {
                    HeadError::TooLarge => ProxyError::HeadersTooLarge,
                    HeadError::Version => ProxyError::BadVersion,
                    HeadError::Malformed | HeadError::Framing => ProxyError::BadRequest,
                };
                return Step::Refuse(self.refusal(error, started));
            }
        };
        let logging = self.proxy.config.access_log;
        let access = |host: &str, path: &str, user_agent: Option<&[u8]>| {
            logging.then(|| Access {
                client: crate::proxy::headers::client_ip(self.info.peer.ip()),
                method: req.method.unwrap_or("-").to_owned(),
                host: host.to_owned(),
                path: path.to_owned(),
                version: if req.version == Some(0) {
                    http::Version::HTTP_10
                } else {
                    http::Version::HTTP_11
                },
                user_agent: user_agent.map_or_else(
                    || "-".to_owned(),
                    |ua| String::from_utf8_lossy(ua).into_owned(),
                ),
                backend: None,
                backend_time: None,
            })
        };
        let facts = match head::inspect_request(&req) {
            Ok(facts) => facts,
            Err(error) => {
                let request_id = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("x-request-id"))
                    .map(|h| h.value);
                return Step::Refuse(Box::new(Refusal {
                    error,
                    access: access("-", req.path.unwrap_or("-"), None),
                    head_len: None,
                    request_id: RequestId::new(request_id),
                    started,
                    location: None,
                }));
            }
        };
        let access = access(&facts.host, facts.path, facts.user_agent);
        let request_id = RequestId::new(facts.request_id);
        if facts.framing == Framing::Empty {
            let method = req.method.unwrap_or_default();
            if let Some(key_authorization) = policy::acme_challenge(
                &self.proxy.state.challenges,
                self.info.tls,
                method,
                facts.path,
            ) {
                return Step::Challenge(Box::new(ChallengeReply {
                    key_authorization,
                    access,
                    head_len: facts.keep_alive.then_some(head_len),
                    request_id,
                    started,
                }));
            }
        }
        if let Some(location) = self.https_redirect(&facts) {
            let resumable =
                (facts.framing == Framing::Empty && facts.keep_alive).then_some(head_len);
            return Step::Refuse(Box::new(Refusal {
                error: ProxyError::RedirectHttps,
                access,
                head_len: resumable,
                request_id,
                started,
                location: Some(location),
            }));
        }
        let route = match policy::route(&self.proxy.state, &facts.host) {
            Ok(route) => route,
            Err(error) => {
                // A refusal of a request without a body leaves the
                // connection in step: the next request can be read.
                let resumable =
                    (facts.framing == Framing::Empty && facts.keep_alive).then_some(head_len);
                return Step::Refuse(Box::new(Refusal {
                    error,
                    access,
                    head_len: resumable,
                    request_id,
                    started,
                    location: None,
                }));
            }
        };
        let buffer_body = match facts.framing {
            Framing::Length(n) => {
                n <= REPLAY_BUFFER_LIMIT
                    && (route.backends.len() > 1 || self.inbuf.len() - head_len >= n as usize)
            }
            _ => false,
        };
        self.out.clear();
        head::write_request_head(
            &mut self.out,
            &req,
            &facts,
            &Forwarding {
                client: &self.client_text,
                proto: self.proto,
                trusted: self.trusted,
                request_id: request_id.as_bytes(),
                drop_expect: buffer_body,
            },
        );
        Step::Ready(Box::new(Prepared {
            head_len,
            route,
            framing: facts.framing,
            keep_alive: facts.keep_alive,
            http10: facts.http10,
            is_head: facts.is_head,
            idempotent: facts.idempotent,
            upgrade: facts.upgrade.map(Into::into),
            expect_continue: facts.expect_continue,
            buffer_body,
            request_id,
            started,
            sent_at: started,
            access,
            hsts: self.hsts.clone(),
        }))
    }
}
