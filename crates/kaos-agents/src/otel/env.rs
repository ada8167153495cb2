//! How the `OTEL_*` variables are read, as the SDK environment-variable specification asks:
//! an empty value is the same as an unset one, and a value that is not understood is warned
//! about and ignored (the default stays). A shared environment often carries settings meant
//! for another SDK (`OTEL_METRICS_EXPORTER=prometheus`, `OTEL_TRACES_EXPORTER=zipkin`): they
//! must not stop a turn. Also here: the resource every kaos signal is exported with.

use std::sync::OnceLock;

use opentelemetry::{Key, KeyValue};
use opentelemetry_sdk::Resource;

/// A variable lookup that treats an empty (or blank) value as unset.
pub(super) struct Vars<F>(pub(super) F);

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    /// The trimmed value of `name`, if it is set and not blank.
    pub(super) fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// The first of `names` that is set (a signal's own variable before the generic one).
    pub(super) fn first(&self, names: &[&str]) -> Option<(String, String)> {
        names
            .iter()
            .find_map(|name| self.get(name).map(|v| (name.to_string(), v)))
    }

    /// `name` as milliseconds, if it is set; a value that is not a positive whole number is
    /// warned about and ignored.
    pub(super) fn millis(&self, name: &str) -> Option<std::time::Duration> {
        let value = self.get(name)?;
        match value.parse::<u64>() {
            Ok(ms) if ms > 0 => Some(std::time::Duration::from_millis(ms)),
            _ => {
                ignored(name, &value, "expected a positive number of milliseconds");
                None
            }
        }
    }
}

/// Warns (once per process for each variable and value) that `name=value` is ignored.
pub(super) fn ignored(name: &str, value: &str, reason: &str) {
    crate::warn_once::warn_once(&format!(
        "ignoring {name}={value:?}: {reason}; the default applies"
    ));
}

/// The URL an OTLP exporter of one signal sends to, from a base endpoint: HTTP appends the
/// signal's path (`v1/traces`, `v1/metrics`), gRPC takes the base as it is; without a base,
/// the spec's local defaults (`:4318` for HTTP, `:4317` for gRPC).
pub(super) fn signal_url(protocol: super::Protocol, base: Option<&str>, path: &str) -> String {
    use super::Protocol;
    match (protocol, base) {
        (Protocol::HttpProtobuf, Some(base)) => format!("{}/{path}", base.trim_end_matches('/')),
        (Protocol::HttpProtobuf, None) => format!("http://localhost:4318/{path}"),
        (Protocol::Grpc, Some(base)) => base.to_string(),
        (Protocol::Grpc, None) => "http://localhost:4317".to_string(),
    }
}

/// The exporter a comma-separated list such as `OTEL_TRACES_EXPORTER` names: the first item
/// `parse` knows. Items it does not know are warned about; so are known items after the
/// first (kaos sends each signal to one place). `None` when no item is known.
pub(super) fn pick<T: Copy>(
    name: &str,
    value: &str,
    expected: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Option<T> {
    let mut chosen = None;
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        match (parse(item), chosen) {
            (Some(known), None) => chosen = Some(known),
            (Some(_), Some(_)) => ignored(
                name,
                item,
                "kaos exports each signal to one place; the first known value is used",
            ),
            (None, _) => ignored(name, item, expected),
        }
    }
    chosen
}

/// `service.instance.id` of this process: one random id shared by its traces and metrics,
/// so two processes of the same service are two series, not one.
fn instance_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| uuid::Uuid::new_v4().to_string())
}

/// The resource kaos exports with: the SDK's own detection (`OTEL_RESOURCE_ATTRIBUTES`,
/// `OTEL_SERVICE_NAME`, the SDK's name and version), then `service.name` = `explicit` when
/// given, else `kaos` when nothing named the service (`OTEL_SERVICE_NAME` first, then
/// `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, as the specification orders them), and a
/// `service.instance.id` unless one was given.
pub(super) fn resource(explicit: Option<&str>) -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&Key::from_static_str("service.name"))
        .is_some_and(|v| !v.as_str().starts_with("unknown_service"));
    let mut builder = Resource::builder();
    match explicit {
        Some(name) => builder = builder.with_service_name(name.to_string()),
        None if !named => builder = builder.with_service_name("kaos"),
        None => {}
    }
    if detected
        .get(&Key::from_static_str("service.instance.id"))
        .is_none()
    {
        builder = builder.with_attribute(KeyValue::new("service.instance.id", instance_id()));
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_values_are_unset_and_bad_numbers_are_ignored() {
        let vars = Vars(|k: &str| match k {
            "BLANK" => Some("  ".to_string()),
            "SET" => Some(" otlp ".to_string()),
            "BAD" => Some("-5".to_string()),
            "ZERO" => Some("0".to_string()),
            "MS" => Some("250".to_string()),
            _ => None,
        });
        assert_eq!(vars.get("BLANK"), None);
        assert_eq!(vars.get("SET").as_deref(), Some("otlp"));
        assert_eq!(
            vars.first(&["BLANK", "SET"]),
            Some(("SET".to_string(), "otlp".to_string()))
        );
        assert_eq!(vars.millis("BAD"), None);
        assert_eq!(vars.millis("ZERO"), None);
        assert_eq!(
            vars.millis("MS"),
            Some(std::time::Duration::from_millis(250))
        );
    }

    #[test]
    fn a_list_gives_its_first_known_item() {
        let parse = |s: &str| match s.to_ascii_lowercase().as_str() {
            "otlp" => Some(1),
            "console" => Some(2),
            _ => None,
        };
        assert_eq!(pick("X", "prometheus,console,otlp", "", parse), Some(2));
        assert_eq!(pick("X", "OTLP", "", parse), Some(1));
        assert_eq!(pick("X", "zipkin", "", parse), None);
        assert_eq!(pick("X", " , ", "", parse), None);
    }
}
