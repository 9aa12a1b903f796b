//! Operations: how Herald reports on itself: logging setup (`telemetry`), Prometheus
//! metrics (`metrics`), the per-subscription delivery log (`delivery_log`) and the durable
//! audit trail (`audit`).

pub mod audit;
pub mod delivery_log;
pub mod metrics;
pub mod telemetry;
