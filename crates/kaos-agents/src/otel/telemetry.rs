//! Telemetry.
/// x
pub struct Exporter;
/// x
pub struct Protocol;
/// x
pub struct Telemetry;
/// x
pub struct TelemetryBuilder;
/// x
pub struct TelemetryError;
/// x
pub struct TelemetryStats;
