//! Minimal blocking clients shared by the bench tools (`propagation`,
//! `benchkit`): a RESP client for Redis and an HTTP/1.1 keep-alive client.
//! Both are deliberately raw: no runtime, no pooling, no retries we do not
//! see, so what is timed is the proxy and Redis, not a client library.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A RESP reply.
#[derive(Debug, Clone)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    pub fn text(&self) -> String {
        match self {
            Resp::Simple(s) | Resp::Error(s) => s.clone(),
            Resp::Int(i) => i.to_string(),
            Resp::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Resp::Bulk(None) | Resp::Array(None) => String::new(),
            Resp::Array(Some(items)) => {
                items.iter().map(|r| r.text()).collect::<Vec<_>>().join(" ")
            }
        }
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// A blocking Redis connection speaking RESP2.
pub struct Redis {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    out: Vec<u8>,
}

pub fn encode(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

impl Redis {
    pub fn connect(addr: &str) -> io::Result<Redis> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Redis {
            reader: BufReader::with_capacity(1 << 16, stream.try_clone()?),
            writer: stream,
            out: Vec::with_capacity(1 << 12),
        })
    }

    /// Sends one command and reads its reply; an error reply is an `Err`.
    pub fn cmd(&mut self, args: &[&[u8]]) -> io::Result<Resp> {
        self.out.clear();
        encode(args, &mut self.out);
        self.writer.write_all(&self.out)?;
        match self.read()? {
            Resp::Error(e) => Err(bad(format!("redis: {e}"))),
            r => Ok(r),
        }
    }

    pub fn cmd_str(&mut self, args: &[&str]) -> io::Result<Resp> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.cmd(&args)
    }

    /// Writes pre-encoded commands and reads `n` replies.
    pub fn pipeline(&mut self, encoded: &[u8], n: usize) -> io::Result<()> {
        self.writer.write_all(encoded)?;
        for _ in 0..n {
            if let Resp::Error(e) = self.read()? {
                return Err(bad(format!("redis: {e}")));
            }
        }
        Ok(())
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        while line.ends_with('\n') || line.ends_with('\r') {
            line.pop();
        }
        Ok(line)
    }

    pub fn read(&mut self) -> io::Result<Resp> {
        let line = self.line()?;
        let (kind, rest) = line.split_at(1.min(line.len()));
        let num = || {
            rest.parse::<i64>()
                .map_err(|_| bad(format!("bad RESP line {line:?}")))
        };
        Ok(match kind {
            "+" => Resp::Simple(rest.to_owned()),
            "-" => Resp::Error(rest.to_owned()),
            ":" => Resp::Int(num()?),
            "$" => {
                let n = num()?;
                if n < 0 {
                    Resp::Bulk(None)
                } else {
                    let mut buf = vec![0; n as usize + 2];
                    self.reader.read_exact(&mut buf)?;
                    buf.truncate(n as usize);
                    Resp::Bulk(Some(buf))
                }
            }
            "*" => {
                let n = num()?;
                if n < 0 {
                    Resp::Array(None)
                } else {
                    let mut items = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        items.push(self.read()?);
                    }
                    Resp::Array(Some(items))
                }
            }
            _ => return Err(bad(format!("bad RESP line {line:?}"))),
        })
    }

    /// `INFO section` as text.
    pub fn info(&mut self, section: &str) -> io::Result<String> {
        Ok(self.cmd_str(&["INFO", section])?.text())
    }
}

/// `cmdstat_<name>:calls=N,...` lines of `INFO commandstats` as (name, calls).
pub fn command_calls(info: &str) -> Vec<(String, u64)> {
    command_stat(info, "calls")
}

/// One statistic (`calls`, `usec`, ...) of every `cmdstat_<name>:` line of
/// `INFO commandstats`, as (name, value).
pub fn command_stat(info: &str, stat: &str) -> Vec<(String, u64)> {
    info.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("cmdstat_")?;
            let (name, stats) = rest.split_once(':')?;
            let value = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix(stat)?.strip_prefix('='))?
                .parse()
                .ok()?;
            Some((name.to_owned(), value))
        })
        .collect()
}

/// One `field:value` of an INFO section.
pub fn info_field(info: &str, field: &str) -> Option<u64> {
    info.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == field).then(|| v.trim().parse().ok()).flatten()
    })
}

/// What a proxied answer was: its status and which backend (the demo
/// nginx backends add `X-Backend: <port>`) produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub backend: Option<String>,
}

/// An HTTP/1.1 keep-alive client on one connection, reconnecting when the
/// server closes.
pub struct Http {
    addr: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    req: Vec<u8>,
}

impl Http {
    pub fn new(addr: &str) -> Http {
        Http {
            addr: addr.to_owned(),
            stream: None,
            buf: Vec::with_capacity(8192),
            req: Vec::with_capacity(256),
        }
    }

    fn connect(&mut self) -> io::Result<&mut TcpStream> {
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.addr)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            self.stream = Some(s);
            self.buf.clear();
        }
        Ok(self.stream.as_mut().unwrap())
    }

    /// GET `path` with `Host: host`; one retry on a fresh connection when a
    /// kept-alive one turns out closed.
    pub fn get(&mut self, host: &str, path: &str) -> io::Result<Answer> {
        match self.try_get(host, path) {
            Ok(a) => Ok(a),
            Err(_) => {
                self.stream = None;
                self.try_get(host, path)
            }
        }
    }

    fn try_get(&mut self, host: &str, path: &str) -> io::Result<Answer> {
        let result = self.send_get(host, path).and_then(|()| self.answer());
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    /// Writes a GET without waiting for its answer (see [`Http::answer`]):
    /// several proxies can then work on theirs at the same time.
    pub fn send_get(&mut self, host: &str, path: &str) -> io::Result<()> {
        self.req.clear();
        write!(
            self.req,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: switchyard-bench\r\n\r\n"
        )?;
        let req = std::mem::take(&mut self.req);
        let result = self.connect().and_then(|s| s.write_all(&req));
        self.req = req;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    /// Reads the answer to the request [`Http::send_get`] wrote; on error
    /// the connection is dropped (the next request opens a new one).
    pub fn answer(&mut self) -> io::Result<Answer> {
        let result = self.read_answer();
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    fn read_answer(&mut self) -> io::Result<Answer> {
        // Read the head.
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill()?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(|_| bad("head not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
        let mut length = 0usize;
        let mut close = false;
        let mut backend = None;
        let mut chunked = false;
        for l in lines {
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                length = v.parse().map_err(|_| bad("bad content-length"))?;
            } else if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
                close = true;
            } else if k.eq_ignore_ascii_case("x-backend") {
                backend = Some(v.to_owned());
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                chunked = true;
            }
        }
        if chunked {
            return Err(bad("chunked responses are not expected here"));
        }
        while self.buf.len() < head_end + length {
            self.fill()?;
        }
        self.buf.drain(..head_end + length);
        if close {
            self.stream = None;
        }
        Ok(Answer { status, backend })
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 8192];
        let stream = self.stream.as_mut().ok_or_else(|| bad("not connected"))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Value at quantile `q` (0..=1) of sorted samples, nearest-rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}
