//! Demo backend (placeholder).
fn main() {}
