//! The integration tests: one crate, a module per area, one support tree
//! (`support`). Every test starts its own redis-server on a free port, real
//! backends and the real proxy.

#[macro_use]
mod support;
mod tls_support;

mod access_log;
mod acme;
mod changelog;
mod cli;
mod compat;
mod config;
mod conformance;
mod faults;
mod followed;
mod forwarding;
mod framing_props;
mod guard;
mod h2_backends;
mod hardening;
mod http1;
mod proxy;
mod replicas;
mod routes_table;
mod run_demo;
mod sync;
mod tidy;
mod tls_admin;
mod tls_cli;
mod tls_listener;
mod tls_resumption;
mod tls_sync;
