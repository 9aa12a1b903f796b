//! Operations: how Herald reports on itself. Today: logging setup (`telemetry`). Metrics, the
//! delivery log and the dashboard arrive with issue #10.

pub mod telemetry;
