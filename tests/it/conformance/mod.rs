//! The conformance suite (issue 25): a few hundred request and response
//! cases as data (`requests`, `responses`), each run against the real
//! proxy with a raw recording backend (`recorder`) and judged by a strict
//! reading of the bytes on both sides (`wire`, `case`); the same cases
//! over HTTP/2 where they apply (`runner`). Cases run concurrently, so the
//! whole suite takes seconds; `SWITCHYARD_CONFORMANCE_CASE=<part of a
//! name>` runs the matching ones only, and every failure is listed with
//! its case name and what differed.
//!
//! Beside the table: replays on pooled connections (`replay`) and the
//! deadlines of bodies and tunnels (`deadlines`), which need timing a
//! table cannot express.

pub mod case;
pub mod deadlines;
pub mod recorder;
pub mod replay;
mod requests;
mod responses;
pub mod runner;
pub mod wire;

use runner::{run_suite, Transport};

fn all_cases() -> Vec<case::Case> {
    let mut cases = requests::cases();
    cases.extend(responses::cases());
    cases
}

#[test]
fn the_suite_holds_at_least_200_cases_and_covers_every_item_of_issue_25() {
    let cases = all_cases();
    assert!(cases.len() >= 200, "only {} cases", cases.len());
    for item in [1, 2, 3, 6, 7, 8, 9, 10, 11, 12] {
        assert!(
            cases
                .iter()
                .any(|c| c.name.starts_with(&format!("i{item}/"))),
            "no case for item {item}"
        );
    }
    assert!(cases.iter().filter(|c| c.h2).count() >= 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_cases() {
    run_suite(all_cases(), Transport::H1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cases() {
    run_suite(all_cases(), Transport::H2c).await;
}
