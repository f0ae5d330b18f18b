//! JSON span fields that a later `Span::record` appends to.
//!
//! tracing-subscriber's `JsonFields` keeps a span's fields as one JSON object and, on every
//! `record`, parses that object and writes it out again with the new field. The api records
//! four fields on each request's span after creating it (trace and span ids, the caller, the
//! credential), and that re-parsing cost 6 % of its CPU in the profile of
//! docs/benchmarks.md. Here a record formats only the new fields and splices them into the
//! object.

use std::fmt;

use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FormatFields, FormattedFields};

/// `JsonFields`, with appending records.
#[derive(Debug, Default)]
pub(crate) struct AppendingJsonFields(JsonFields);

impl<'writer> FormatFields<'writer> for AppendingJsonFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        self.0.format_fields(writer, fields)
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut added = String::new();
        self.0.format_fields(Writer::new(&mut added), fields)?;
        append(&mut current.fields, &added);
        Ok(())
    }
}

/// Splices the members of the JSON object `added` into the JSON object `current`. A field
/// recorded twice appears twice; whoever reads the object keeps the last.
fn append(current: &mut String, added: &str) {
    let members = added
        .trim()
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or_default();
    if members.trim().is_empty() {
        return;
    }
    let existing = current.trim_end();
    if existing.is_empty() || existing == "{}" || !existing.ends_with('}') {
        *current = format!("{{{members}}}");
        return;
    }
    current.truncate(existing.len() - 1);
    current.push(',');
    current.push_str(members);
    current.push('}');
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[test]
    fn members_are_spliced_into_the_object() {
        let mut fields = String::new();
        append(&mut fields, "{}");
        assert_eq!(fields, "");
        append(&mut fields, r#"{"a":1}"#);
        assert_eq!(fields, r#"{"a":1}"#);
        append(&mut fields, r#"{"b":"x,}y","c":[1,2]}"#);
        assert_eq!(fields, r#"{"a":1,"b":"x,}y","c":[1,2]}"#);
        let parsed: serde_json::Value = serde_json::from_str(&fields).unwrap();
        assert_eq!(parsed["b"], "x,}y");
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn fields_recorded_after_creation_reach_every_log_line_of_the_span() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(AppendingJsonFields::default())
                .event_format(crate::json::JsonLines)
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                request_id = "r-1",
                user_id = tracing::field::Empty,
                credential = tracing::field::Empty,
            );
            span.record("user_id", "u-\"7\"");
            span.record("credential", "session");
            let _entered = span.enter();
            tracing::info!(status = 200, "request finished");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["span"]["request_id"], "r-1");
        assert_eq!(line["span"]["user_id"], "u-\"7\"");
        assert_eq!(line["span"]["credential"], "session");
        assert_eq!(line["spans"][0]["user_id"], "u-\"7\"");
        assert_eq!(line["status"], 200);
        let _ = std::io::stdout().flush();
    }
}
