//! The integration tests: one crate, a module per area, one support tree.
//! Every test starts its own redis-server on a free port, real backends
//! and the real proxy (see `support`).

#[macro_use]
mod support;
mod faults_support;
mod support_proxy;

mod access_log;
mod changelog;
mod cli;
mod faults;
mod followed;
mod guard;
mod http1;
mod proxy;
mod sync;
mod tidy;
