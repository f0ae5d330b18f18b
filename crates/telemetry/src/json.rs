//! The JSON log line, written without re-reading span fields.
//!
//! tracing-subscriber's JSON event format parses every enclosing span's stored fields back
//! into a `serde_json::Value` for each line it writes (twice per span: once for `span`, once
//! for `spans`). The api writes an access line per request inside the request span, and that
//! parsing made logging at `info` cost about a third of the api's CPU per request (measured in
//! docs/benchmarks.md). [`JsonLines`] writes the same document (same keys, same values; the
//! test below holds it to tracing-subscriber's own output) by copying each span's stored JSON
//! object, which [`AppendingJsonFields`] keeps well-formed.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

use crate::fields::AppendingJsonFields;

/// One JSON object per line: `timestamp`, `level`, the event's fields, `target`, `span` (the
/// current span's fields and `name`) and `spans` (every enclosing span, root first).
#[derive(Debug, Default)]
pub(crate) struct JsonLines;

impl<S> FormatEvent<S, AppendingJsonFields> for JsonLines
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, AppendingJsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut line = String::with_capacity(512);
        line.push_str("{\"timestamp\":\"");
        SystemTime.format_time(&mut Writer::new(&mut line))?;
        line.push_str("\",\"level\":");
        string(&mut line, meta.level().as_str());
        let mut fields = EventFields(&mut line);
        event.record(&mut fields);
        line.push_str(",\"target\":");
        string(&mut line, meta.target());
        let current = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = &current {
            line.push_str(",\"span\":");
            span_object(&mut line, span);
        }
        if current.is_some() {
            line.push_str(",\"spans\":[");
            if let Some(leaf) = ctx.lookup_current() {
                for (i, span) in leaf.scope().from_root().enumerate() {
                    if i > 0 {
                        line.push(',');
                    }
                    span_object(&mut line, &span);
                }
            }
            line.push(']');
        }
        line.push('}');
        writeln!(writer, "{line}")
    }
}

/// `{<the span's stored fields>,"name":"<its name>"}`.
fn span_object<S>(line: &mut String, span: &SpanRef<'_, S>)
where
    S: for<'lookup> LookupSpan<'lookup>,
{
    line.push('{');
    let extensions = span.extensions();
    let members = extensions
        .get::<FormattedFields<AppendingJsonFields>>()
        .map(|stored| stored.fields.trim())
        .and_then(|stored| stored.strip_prefix('{'))
        .and_then(|stored| stored.strip_suffix('}'))
        .map(str::trim)
        .unwrap_or_default();
    if !members.is_empty() {
        line.push_str(members);
        line.push(',');
    }
    line.push_str("\"name\":");
    string(line, span.metadata().name());
    line.push('}');
}

/// Appends `value` as a JSON string.
fn string(line: &mut String, value: &str) {
    // Writing JSON into a String cannot fail.
    let _ = serde_json::to_string(value).map(|quoted| line.push_str(&quoted));
}

/// Appends `,"name":value` for each field, as tracing-serde's map visitor writes them.
struct EventFields<'a>(&'a mut String);

impl EventFields<'_> {
    fn key(&mut self, field: &Field) {
        self.0.push(',');
        string(self.0, field.name());
        self.0.push(':');
    }

    fn number(&mut self, field: &Field, value: impl serde::Serialize) {
        self.key(field);
        let _ = serde_json::to_string(&value).map(|text| self.0.push_str(&text));
    }
}

impl Visit for EventFields<'_> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.number(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.number(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.number(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.number(field, value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        string(self.0, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        string(self.0, &text);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<serde_json::Value> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect()
        }
    }

    #[derive(Debug)]
    struct Oops;

    impl fmt::Display for Oops {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("it \"broke\"")
        }
    }

    impl std::error::Error for Oops {}

    /// Every kind of field, in nested spans with fields recorded late, and an event outside
    /// any span.
    fn emit() {
        let outer = tracing::info_span!("job", job_id = "j-1", attempt = 2u64);
        let _outer = outer.enter();
        let inner = tracing::info_span!(
            "request",
            request_id = "r-\u{1F600}\"\\",
            user_id = tracing::field::Empty,
            ok = true,
        );
        inner.record("user_id", "u-7");
        let _inner = inner.enter();
        let error = Oops;
        tracing::warn!(
            status = 503u16,
            delta = -4i64,
            ratio = 0.25f64,
            nan = f64::NAN,
            flag = false,
            route = "/api/v1/projects/{id}",
            debugged = ?vec!["a", "b"],
            error = &error as &(dyn std::error::Error + 'static),
            "request finished: {}",
            "slowly"
        );
        drop(_inner);
        drop(_outer);
        tracing::info!(answer = 42, "no span");
    }

    #[test]
    fn lines_match_tracing_subscribers_own_json_format() {
        let ours = Captured::default();
        let theirs = Captured::default();
        let (ours_writer, theirs_writer) = (ours.clone(), theirs.clone());
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(AppendingJsonFields::default())
                    .event_format(JsonLines)
                    .with_writer(move || ours_writer.clone()),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_writer(move || theirs_writer.clone()),
            );
        tracing::subscriber::with_default(subscriber, emit);
        let (mut ours, mut theirs) = (ours.lines(), theirs.lines());
        assert_eq!(ours.len(), 2);
        for line in ours.iter_mut().chain(theirs.iter_mut()) {
            let stamp = line["timestamp"].take();
            assert!(stamp.as_str().is_some_and(|s| s.ends_with('Z')), "{stamp}");
        }
        assert_eq!(ours, theirs);
        assert_eq!(ours[0]["span"]["user_id"], "u-7");
        assert_eq!(ours[0]["spans"][0]["name"], "job");
        assert_eq!(ours[0]["error"], "it \"broke\"");
        assert!(ours[1].get("span").is_none());
    }
}
