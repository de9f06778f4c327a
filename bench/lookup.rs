//! Criterion micro-benchmark of a route lookup (placeholder).
fn main() {}
