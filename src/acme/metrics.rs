//! Metrics of automatic certificates: orders by outcome, renewals, orders
//! in flight on this replica (the sum over replicas is the cluster's).

use super::coordinator::Outcome;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct AcmeMetrics {
    orders: IntCounterVec,
    pub renewals: IntCounter,
    pub in_flight: IntGauge,
}

impl AcmeMetrics {
    /// Makes the metrics and registers them on `registry` (the proxy's,
    /// rendered by `/metrics`). A second registration on the same registry
    /// is refused by prometheus: the metrics then count without being
    /// rendered, which only a test running two tasks on one state does.
    pub fn register(registry: &Registry) -> AcmeMetrics {
        let orders = IntCounterVec::new(
            Opts::new(
                "acme_orders_total",
                "ACME orders by outcome (issued, failed, superseded, abandoned).",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let renewals = IntCounter::new(
            "acme_renewals_total",
            "Automatic certificates renewed (issued for a host that had one).",
        )
        .expect("valid metric");
        let in_flight = IntGauge::new(
            "acme_orders_in_flight",
            "ACME orders running on this replica.",
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(orders.clone()));
        let _ = registry.register(Box::new(renewals.clone()));
        let _ = registry.register(Box::new(in_flight.clone()));
        AcmeMetrics {
            orders,
            renewals,
            in_flight,
        }
    }

    pub fn order(&self, outcome: Outcome) {
        self.orders.with_label_values(&[outcome.as_str()]).inc();
    }

    pub fn orders(&self, outcome: Outcome) -> u64 {
        self.orders.with_label_values(&[outcome.as_str()]).get()
    }
}
