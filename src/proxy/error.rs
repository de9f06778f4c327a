//! Every way a proxied request can fail, and the status each one answers.

use crate::metrics::UpstreamErrorKind;
use http::StatusCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("malformed request head")]
    BadRequest,
    #[error("request head too large")]
    HeadersTooLarge,
    #[error("HTTP version not supported")]
    BadVersion,
    #[error("malformed chunked request body")]
    BadChunking,
    #[error("missing or malformed Host")]
    BadHost,
    #[error("ambiguous request framing (Content-Length with Transfer-Encoding)")]
    BadFraming,
    #[error("transfer coding not implemented")]
    UnsupportedCoding,
    #[error("request body not received in time")]
    BodyTimeout,
    #[error("method not allowed: this is not a forward proxy")]
    ConnectRefused,
    #[error("no route for this host")]
    NoRoute,
    #[error("the route for this host is invalid")]
    InvalidRoute,
    #[error("no route table loaded yet")]
    NotReady,
    #[error("backend unavailable")]
    Upstream(UpstreamErrorKind),
    #[error("backend refused the protocol switch")]
    UpgradeMismatch,
    /// `--redirect-https`: a cleartext request for a host with a
    /// certificate (the `Location` is written beside it).
    #[error("this host is served over https")]
    RedirectHttps,
}

impl ProxyError {
    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::BadRequest
            | ProxyError::BadChunking
            | ProxyError::BadHost
            | ProxyError::BadFraming => StatusCode::BAD_REQUEST,
            ProxyError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::UnsupportedCoding => StatusCode::NOT_IMPLEMENTED,
            ProxyError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::BadVersion => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            ProxyError::ConnectRefused => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::InvalidRoute | ProxyError::UpgradeMismatch => StatusCode::BAD_GATEWAY,
            ProxyError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::RedirectHttps => StatusCode::PERMANENT_REDIRECT,
            ProxyError::Upstream(
                UpstreamErrorKind::ConnectTimeout | UpstreamErrorKind::ResponseTimeout,
            ) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// The short plain-text body sent to the client.
    pub fn body(self) -> &'static str {
        match self {
            ProxyError::BadRequest => "400 bad request: malformed request head\n",
            ProxyError::HeadersTooLarge => "431 request header fields too large\n",
            ProxyError::BadVersion => "505 HTTP version not supported\n",
            ProxyError::BadChunking => "400 bad request: malformed chunked body\n",
            ProxyError::BadHost => "400 bad request: missing or malformed Host\n",
            ProxyError::BadFraming => "400 bad request: ambiguous or malformed body framing\n",
            ProxyError::UnsupportedCoding => {
                "501 not implemented: the only transfer coding accepted is chunked\n"
            }
            ProxyError::BodyTimeout => "408 request timeout: request body not received in time\n",
            ProxyError::ConnectRefused => "405 method not allowed: CONNECT is not supported\n",
            ProxyError::NoRoute => "404 not found: no route for this host\n",
            ProxyError::InvalidRoute => "502 bad gateway: the route for this host is invalid\n",
            ProxyError::NotReady => "503 service unavailable: routes not loaded yet\n",
            ProxyError::RedirectHttps => "308 permanent redirect: this host is served over https\n",
            ProxyError::Upstream(UpstreamErrorKind::ConnectTimeout) => {
                "504 gateway timeout: backend did not accept the connection in time\n"
            }
            ProxyError::Upstream(UpstreamErrorKind::ResponseTimeout) => {
                "504 gateway timeout: backend did not answer in time\n"
            }
            ProxyError::Upstream(_) => "502 bad gateway: backend unavailable\n",
            ProxyError::UpgradeMismatch => {
                "502 bad gateway: backend did not switch to the requested protocol\n"
            }
        }
    }
}
