//! The hyper-based HTTP/1.1 client of the tests: [`send`] and [`http_get`]
//! open a fresh connection per call (no pooling surprises), an
//! [`HttpClient`] keeps a keep-alive pool (load loops, many requests).
//! Every exchange is capped by [`CALL_TIMEOUT`]: a hang is a failure,
//! never a stuck test.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::time::Duration;

/// Cap on one exchange (head and body) of every client here.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl HttpResponse {
    /// The echo backend that answered (its `x-backend` header), if one did.
    pub fn backend(&self) -> Option<String> {
        let name = self.headers.get("x-backend")?.to_str().ok()?;
        Some(name.to_owned())
    }

    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A request with `Host: host`, the given extra headers and body; its URI
/// is the path alone (the client fills in the address it talks to).
pub fn request(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(body.into())).unwrap()
}

/// A keep-alive HTTP/1.1 client to one address (one pool per client, like
/// a load balancer in front of the proxy).
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
}

impl HttpClient {
    pub fn new(addr: SocketAddr) -> HttpClient {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(10))
            .build(http);
        HttpClient { client, addr }
    }

    /// Sends `req` (see [`request`]); `Err` for a transport error, a
    /// failed body or a timeout. The body is read to the end, so the
    /// connection goes back to the pool.
    pub async fn try_send(&self, req: Request<Full<Bytes>>) -> Result<HttpResponse, String> {
        let (mut parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = format!("http://{}{path}", self.addr).parse().unwrap();
        let call = async {
            let resp = self
                .client
                .request(Request::from_parts(parts, body))
                .await
                .map_err(|e| format!("request failed: {e:?}"))?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body failed: {e:?}"))?
                .to_bytes();
            Ok(HttpResponse {
                status,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| "timed out".to_owned())?
    }

    /// `GET path` with `Host: host`; `Err` as for [`HttpClient::try_send`].
    pub async fn try_get(&self, host: &str, path: &str) -> Result<HttpResponse, String> {
        self.try_send(request("GET", host, path, &[], "")).await
    }
}

/// Sends `req` to `addr` on a fresh connection; `Err` for a transport
/// error, a failed body or a timeout.
pub async fn try_send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Result<HttpResponse, String> {
    HttpClient::new(addr).try_send(req).await
}

/// Sends `req` to `addr` on a fresh connection; panics on any failure.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> HttpResponse {
    let shown = format!(
        "{} {} {:?}",
        req.method(),
        req.uri(),
        req.headers().get("host")
    );
    try_send(addr, req)
        .await
        .unwrap_or_else(|e| panic!("{shown} to {addr}: {e}"))
}

/// `GET path` with `Host: host` on a fresh connection; panics on any failure.
pub async fn http_get(addr: SocketAddr, host: &str, path: &str) -> HttpResponse {
    send(addr, request("GET", host, path, &[], "")).await
}
