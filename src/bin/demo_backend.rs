//! A tiny demo backend for `make run`, docker-compose and benchmarks:
//! answers every request with 200 and `hello from NAME (HOST PATH)`.
//!
//! It doubles as the benchmark backend, so it does as little as possible per
//! request: no logging, no allocation beyond the body, TCP_NODELAY set.
//! SIGTERM and SIGINT stop it at once (it may run as PID 1 in a container,
//! where the kernel gives no default action to a signal left unhandled).

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser)]
#[command(about = "Answers every request with `hello from NAME (HOST PATH)`.")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3001")]
    listen: SocketAddr,
    /// Name to answer with.
    #[arg(long, default_value = "demo")]
    name: String,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("demo backend {:?} listening on {}", args.name, args.listen);
    // Lives as long as the process; leaking it lets every connection task
    // borrow it without an Arc clone per connection.
    let name: &'static str = Box::leak(args.name.into_boxed_str());
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        let accepted = tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // Out of file descriptors (benchmarks open many connections):
            // back off briefly instead of spinning on the error.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| async move {
                let host = req
                    .headers()
                    .get(HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("-");
                let body = format!("hello from {name} ({host} {})\n", req.uri().path());
                let mut response = Response::new(Full::new(Bytes::from(body)));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                Ok::<_, std::convert::Infallible>(response)
            });
            // HTTP/1.1, plus HTTP/2 with prior knowledge (h2c) for benchmarks.
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
