//! Endpoints that subscribe to Keel's events, the deliveries made to them, and which targets
//! a delivery may reach.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use keel_kernel::UserId;
use keel_kernel::validation::FieldErrors;
use serde::{Deserialize, Serialize};

keel_kernel::define_id!(
    /// Identifies an endpoint.
    EndpointId
);

keel_kernel::define_id!(
    /// Identifies an event: a re-run fan-out finds the deliveries it already made by it.
    EventId
);

keel_kernel::define_id!(
    /// Identifies a delivery (its `webhook-id` is `msg_<id>`, the same on every attempt).
    DeliveryId
);

/// Longest endpoint URL accepted.
pub const URL_MAX_CHARS: usize = 2048;
/// Most event types one endpoint may follow.
pub const EVENTS_MAX: usize = 50;
/// Longest description.
pub const DESCRIPTION_MAX_CHARS: usize = 500;

/// Something that happened in Keel, as endpoints receive it: the activity entry of a change,
/// without who asked from where (no IP, no user agent).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboundEvent {
    /// Its id.
    pub id: EventId,
    /// `resource.verb`, such as `project.created`.
    pub event_type: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// `{resource, id, subject, actor, changes}`.
    pub data: serde_json::Value,
}

/// A subscribed endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Identity.
    pub id: EndpointId,
    /// Where deliveries go (`http` or `https`).
    pub url: String,
    /// The event types it follows; `*` follows all.
    pub events: Vec<String>,
    /// What it is for.
    pub description: Option<String>,
    /// Which pepper derives its signing secret.
    pub pepper_id: String,
    /// The random seed its signing secret is derived from (the secret is never stored).
    pub seed: String,
    /// Who created it.
    pub created_by: Option<UserId>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl Endpoint {
    /// Whether it follows `event_type`.
    pub fn follows(&self, event_type: &str) -> bool {
        self.events.iter().any(|e| e == "*" || e == event_type)
    }
}

/// What a caller asks for when subscribing an endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct NewEndpoint {
    /// Where deliveries go.
    pub url: String,
    /// The event types to follow (`project.created`, or `*`).
    pub events: Vec<String>,
    /// What it is for.
    #[serde(default)]
    pub description: Option<String>,
}

impl NewEndpoint {
    /// Checks the input; `allow_private` lets an address literal name a private network.
    /// A host name is checked where it is resolved, at each delivery.
    pub fn validate(&self, allow_private: bool) -> Result<(), keel_kernel::DomainError> {
        let mut errors = FieldErrors::new();
        match url::Url::parse(&self.url) {
            _ if self.url.chars().count() > URL_MAX_CHARS => errors.add(
                "url",
                "length",
                format!("must be at most {URL_MAX_CHARS} characters long"),
            ),
            Ok(url) if !matches!(url.scheme(), "http" | "https") => {
                errors.add("url", "format", "must be an http or https URL");
            }
            Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                errors.add("url", "format", "must not carry credentials");
            }
            Ok(url) => match url.host() {
                None => errors.add("url", "format", "must name a host"),
                Some(url::Host::Ipv4(ip)) if !allow_private && !is_public(IpAddr::V4(ip)) => {
                    errors.add("url", "private_target", PRIVATE_TARGET);
                }
                Some(url::Host::Ipv6(ip)) if !allow_private && !is_public(IpAddr::V6(ip)) => {
                    errors.add("url", "private_target", PRIVATE_TARGET);
                }
                Some(url::Host::Domain(host))
                    if !allow_private && {
                        let host = host.trim_end_matches('.');
                        host == "localhost" || host.ends_with(".localhost")
                    } =>
                {
                    errors.add("url", "private_target", PRIVATE_TARGET);
                }
                Some(_) => {}
            },
            Err(e) => errors.add("url", "format", format!("is not a URL: {e}")),
        }
        if self.events.is_empty() || self.events.len() > EVENTS_MAX {
            errors.add(
                "events",
                "length",
                format!("must list 1 to {EVENTS_MAX} event types"),
            );
        }
        for (i, event) in self.events.iter().enumerate() {
            if event.starts_with("auth.") || event.starts_with("webhook_") {
                errors.add(
                    format!("events[{i}]"),
                    "never_published",
                    "sign-in (`auth.*`) and webhook (`webhook_*`) events are never sent",
                );
            } else if !is_event_type(event) {
                errors.add(
                    format!("events[{i}]"),
                    "format",
                    "must be `*` or `resource.verb` in lowercase (`project.created`)",
                );
            }
        }
        errors.optional_line(
            "description",
            self.description.as_deref(),
            DESCRIPTION_MAX_CHARS,
        );
        errors.into_result()
    }
}

/// Why a target was refused.
pub const PRIVATE_TARGET: &str = "is a private, loopback or link-local address; deliveries go to public addresses only (webhooks.outbound.allow_private_targets)";

fn is_event_type(event: &str) -> bool {
    event == "*"
        || (event.len() <= 128
            && event.split_once('.').is_some_and(|(resource, verb)| {
                let part = |s: &str| {
                    !s.is_empty()
                        && s.bytes().all(|b| {
                            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.'
                        })
                };
                part(resource) && part(verb)
            }))
}

/// Whether `ip` is an address on the public internet: not loopback, private (RFC 1918, unique
/// local), link-local, shared (CGNAT), unspecified, broadcast, multicast, documentation,
/// benchmarking or reserved, also when an IPv6 address embeds an IPv4 one.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
                // IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96), documentation (2001:db8::/32),
                // 6to4 (2002::/16) and Teredo (2001::/32) can all reach an IPv4 address.
                || v6.segments()[..6] == [0; 6]
                || (first == 0x64 && v6.segments()[1] == 0xff9b)
                || (first == 0x2001 && v6.segments()[1] == 0xdb8)
                || first == 0x2002
                || (first == 0x2001 && v6.segments()[1] == 0))
        }
    }
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its (next) attempt.
    Pending,
    /// The endpoint answered 2xx.
    Succeeded,
    /// Out of attempts, or refused (a private target): an admin may redeliver it.
    Failed,
    /// The endpoint was deleted before it succeeded.
    Cancelled,
}

impl DeliveryState {
    /// The stored and wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Succeeded,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// One event sent (or to be sent) to one endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// Identity.
    pub id: DeliveryId,
    /// To whom.
    pub endpoint_id: EndpointId,
    /// The event.
    pub event: OutboundEvent,
    /// Where it stands.
    pub state: DeliveryState,
    /// Attempts made.
    pub attempts: Vec<DeliveryAttempt>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl Delivery {
    /// Its `webhook-id`: the same on every attempt, so the receiver can deduplicate.
    pub fn webhook_id(&self) -> String {
        format!("msg_{}", self.id)
    }
}

/// One attempt at a delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeliveryAttempt {
    /// 1-based, across redeliveries.
    pub attempt: u32,
    /// The endpoint's status code, when it answered.
    pub status: Option<u16>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// How long it took.
    pub latency_ms: u64,
    /// When it was made.
    pub at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
            "2002:7f00:1::",
            "2001::1",
            "ff02::1",
        ] {
            assert!(
                !is_public(private.parse().unwrap()),
                "{private} is not public"
            );
        }
        for public in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public} is public");
        }
    }

    fn endpoint(url: &str, events: &[&str]) -> NewEndpoint {
        NewEndpoint {
            url: url.to_owned(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            description: None,
        }
    }

    fn fields(result: Result<(), keel_kernel::DomainError>) -> Vec<(String, String)> {
        match result {
            Err(keel_kernel::DomainError::Validation(errors)) => {
                errors.into_iter().map(|e| (e.field, e.code)).collect()
            }
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn targets_and_event_types_are_checked() {
        assert!(
            endpoint("https://hooks.example.com/x?t=1", &["project.created", "*"])
                .validate(false)
                .is_ok()
        );
        for url in [
            "http://127.0.0.1:9000/",
            "http://[::1]/",
            "http://10.0.0.7/",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost:8080/",
            "http://LOCALHOST./",
            "http://api.localhost/",
            "http://[::ffff:7f00:1]/",
            "http://0x7f000001/",
            "http://2130706433/",
        ] {
            assert_eq!(
                fields(endpoint(url, &["*"]).validate(false)),
                [("url".to_owned(), "private_target".to_owned())],
                "{url}"
            );
            assert!(
                endpoint(url, &["*"]).validate(true).is_ok(),
                "{url} when allowed"
            );
        }
        for url in [
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "not a url",
            "file:///etc/passwd",
        ] {
            assert_eq!(
                fields(endpoint(url, &["*"]).validate(false))[0].0,
                "url",
                "{url}"
            );
        }
        assert_eq!(
            fields(endpoint("https://example.com", &[]).validate(false))[0].0,
            "events"
        );
        assert_eq!(
            fields(
                endpoint(
                    "https://example.com",
                    &["project.created", "Project Created"]
                )
                .validate(false)
            )[0]
            .0,
            "events[1]"
        );
        assert_eq!(
            fields(
                endpoint(
                    "https://example.com",
                    &["auth.login", "webhook_endpoint.created"]
                )
                .validate(false)
            ),
            [
                ("events[0]".to_owned(), "never_published".to_owned()),
                ("events[1]".to_owned(), "never_published".to_owned())
            ]
        );
    }
}
