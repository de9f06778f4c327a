//! The integration tests: one crate, a module per area, one support tree
//! (`support`). Every test starts its own redis-server on a free port, real
//! backends and the real proxy.

#[macro_use]
mod support;
mod tls_support;

mod access_log;
mod acme;
mod cli;
mod compat;
mod config;
mod faults;
mod http1;
mod proxy;
mod sync;
mod tls_admin;
mod tls_cli;
