//! Shared copies of the short attribute values that repeat from span to span (provider,
//! model, purpose, tool name, finish reason): a span gets a reference-counted copy, not a new
//! string of its own (an allocation here, a free on the exporter's thread).

use std::sync::Arc;

use opentelemetry::StringValue;

/// How many values one table keeps (a value seen after it is full is copied as before).
const KEPT: usize = 64;

/// Values longer than this are not kept (they are not the kind that repeats).
const LONGEST: usize = 96;

/// A small table of attribute values, one per shard (searched under the shard's lock).
#[derive(Default)]
pub(super) struct Interned {
    values: Vec<Arc<str>>,
}

impl Interned {
    /// `text` as an attribute value: the kept copy when there is one, else a new one (kept
    /// while the table has room).
    pub(super) fn value(&mut self, text: &str) -> StringValue {
        if let Some(kept) = self
            .values
            .iter()
            // Length and first byte before the text: most kept values differ there.
            .find(|v| {
                v.len() == text.len()
                    && v.as_bytes().first() == text.as_bytes().first()
                    && &***v == text
            })
        {
            return StringValue::from(kept.clone());
        }
        if text.len() > LONGEST || self.values.len() >= KEPT {
            return StringValue::from(text.to_string());
        }
        let kept: Arc<str> = Arc::from(text);
        self.values.push(kept.clone());
        StringValue::from(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_value_is_one_shared_copy() {
        let mut table = Interned::default();
        let a = table.value("offline");
        let b = table.value("offline");
        assert_eq!(a.as_str(), "offline");
        assert_eq!(b.as_str(), "offline");
        assert_eq!(table.values.len(), 1);
        assert_eq!(Arc::strong_count(&table.values[0]), 3);
        assert_eq!(table.value("respond").as_str(), "respond");
        assert_eq!(table.values.len(), 2);
    }

    #[test]
    fn a_full_table_or_a_long_value_still_gives_the_value() {
        let mut table = Interned::default();
        for i in 0..KEPT + 5 {
            assert_eq!(
                table.value(&format!("model-{i}")).as_str(),
                format!("model-{i}")
            );
        }
        assert_eq!(table.values.len(), KEPT);
        let long = "x".repeat(LONGEST + 1);
        assert_eq!(table.value(&long).as_str(), long);
        assert_eq!(table.values.len(), KEPT);
    }
}
