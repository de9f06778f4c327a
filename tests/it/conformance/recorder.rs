//! A raw recording backend: a TCP listener that keeps every byte each
//! connection received and answers each request with scripted raw bytes
//! (any bytes: broken framing, half answers, unsolicited extras, closes).
//! What it received is judged afterwards with the strict reading of
//! `wire`, so the proxy's output is compared, not the recorder's guesses.

use super::wire::{parse_request, parse_request_head, Parsed};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// What the backend does after writing its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Reads the next request on the same connection.
    KeepOpen,
    /// Half-closes (FIN), then reads and records until the proxy closes.
    Close,
    /// Writes nothing more and never closes: a backend that stalls.
    Stall,
}

/// The answer to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Written as soon as the head has arrived, before the body is read
    /// (`100 Continue`, `103 Early Hints`).
    pub interim: Vec<u8>,
    /// Wait for the whole request body before answering.
    pub read_body: bool,
    pub bytes: Vec<u8>,
    pub then: Then,
}

impl Reply {
    pub fn new(bytes: impl AsRef<[u8]>) -> Reply {
        Reply {
            interim: Vec::new(),
            read_body: true,
            bytes: bytes.as_ref().to_vec(),
            then: Then::KeepOpen,
        }
    }

    /// `200 OK` with a `Content-Length` body of `body`.
    pub fn ok(body: &str) -> Reply {
        Reply::new(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    }

    pub fn then(mut self, then: Then) -> Reply {
        self.then = then;
        self
    }

    pub fn interim(mut self, bytes: impl AsRef<[u8]>) -> Reply {
        self.interim = bytes.as_ref().to_vec();
        self
    }

    /// Answer as soon as the head arrived (an early answer).
    pub fn early(mut self) -> Reply {
        self.read_body = false;
        self
    }
}

/// One connection the proxy opened.
#[derive(Debug, Clone, Default)]
pub struct ConnLog {
    pub received: Vec<u8>,
    /// The proxy closed it (EOF or reset).
    pub ended: bool,
    /// The backend closed its side (a scripted `Then::Close` was done).
    pub closed_by_backend: bool,
}

struct Shared {
    script: Vec<Reply>,
    default: Reply,
    /// Requests seen so far, over every connection: the index into `script`.
    next: AtomicUsize,
    conns: Mutex<Vec<ConnLog>>,
}

pub struct Recorder {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Recorder {
    /// A backend answering the n-th request (over all its connections)
    /// with `script[n]`, and `200 OK` "ok" past the script's end.
    pub async fn start(script: Vec<Reply>) -> Recorder {
        Recorder::start_with_default(script, Reply::ok("ok")).await
    }

    pub async fn start_with_default(script: Vec<Reply>, default: Reply) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            script,
            default,
            next: AtomicUsize::new(0),
            conns: Mutex::new(Vec::new()),
        });
        let stop = CancellationToken::new();
        {
            let shared = shared.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    let stream = tokio::select! {
                        _ = stop.cancelled() => return,
                        r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                    };
                    let index = {
                        let mut conns = shared.conns.lock().unwrap();
                        conns.push(ConnLog::default());
                        conns.len() - 1
                    };
                    let shared = shared.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = serve(stream, index, &shared) => {}
                            _ = stop.cancelled() => {}
                        }
                    });
                }
            });
        }
        Recorder { addr, shared, stop }
    }

    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    pub fn connections(&self) -> Vec<ConnLog> {
        self.shared.conns.lock().unwrap().clone()
    }

    /// Bytes received over every connection.
    pub fn total_received(&self) -> usize {
        self.connections().iter().map(|c| c.received.len()).sum()
    }
}

/// Reads into `buf`, logging what arrived; false at EOF or error.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, index: usize, shared: &Shared) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    let n = match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => 0,
        Ok(n) => n,
    };
    let mut conns = shared.conns.lock().unwrap();
    if n == 0 {
        conns[index].ended = true;
        return false;
    }
    conns[index].received.extend_from_slice(&chunk[..n]);
    buf.extend_from_slice(&chunk[..n]);
    true
}

/// Records everything until the proxy closes (bounded, so a proxy that
/// never closes cannot keep a task alive past the test).
async fn drain(stream: &mut TcpStream, buf: &mut Vec<u8>, index: usize, shared: &Shared) {
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while fill(stream, buf, index, shared).await {}
    })
    .await;
}

async fn serve(mut stream: TcpStream, index: usize, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        // The head.
        loop {
            match parse_request_head(&buf) {
                Ok(Parsed::Done(..)) => break,
                Ok(Parsed::Partial) => {
                    if !fill(&mut stream, &mut buf, index, shared).await {
                        return;
                    }
                }
                // Unreadable: keep recording, answer nothing.
                Err(_) => return drain(&mut stream, &mut buf, index, shared).await,
            }
        }
        let n = shared.next.fetch_add(1, Ordering::SeqCst);
        let reply = shared
            .script
            .get(n)
            .cloned()
            .unwrap_or_else(|| shared.default.clone());
        if !reply.interim.is_empty() && stream.write_all(&reply.interim).await.is_err() {
            return;
        }
        if reply.read_body {
            loop {
                match parse_request(&buf) {
                    Ok(Parsed::Done(_, used)) => {
                        buf.drain(..used);
                        break;
                    }
                    Ok(Parsed::Partial) => {
                        if !fill(&mut stream, &mut buf, index, shared).await {
                            return;
                        }
                    }
                    Err(_) => return drain(&mut stream, &mut buf, index, shared).await,
                }
            }
        } else {
            // Early answer: whatever follows is not read as a request.
            buf.clear();
        }
        if !reply.bytes.is_empty() && stream.write_all(&reply.bytes).await.is_err() {
            return;
        }
        match reply.then {
            Then::KeepOpen if reply.read_body => {}
            Then::KeepOpen | Then::Stall => {
                return drain(&mut stream, &mut buf, index, shared).await;
            }
            Then::Close => {
                let _ = stream.shutdown().await;
                shared.conns.lock().unwrap()[index].closed_by_backend = true;
                return drain(&mut stream, &mut buf, index, shared).await;
            }
        }
    }
}
