//! Operations: how Herald reports on itself: logging setup (`telemetry`), Prometheus
//! metrics (`metrics`) and the per-subscription delivery log (`delivery_log`).

pub mod delivery_log;
pub mod metrics;
pub mod telemetry;
