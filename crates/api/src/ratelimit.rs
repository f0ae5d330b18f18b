//! Per-client-IP rate limits on the sign-in and recovery endpoints, with `RateLimit-*` headers.
//!
//! Per-account limits (login backoff, reset mails per address) live in the identity domain;
//! this is the outer ring that stops one address from hammering every account.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{ResponseError, web};
use keel_kernel::DomainError;
use keel_kernel::throttle::{Allowance, Counters, Decision, Quota, check};

use crate::error::ApiError;
use crate::extract::client_ip;

/// The per-IP limit on authentication endpoints; registered as app data.
#[derive(Debug, Clone)]
pub struct AuthRateLimit {
    /// Where hits are counted (memory, or Redis across replicas).
    pub counters: Arc<dyn Counters>,
    /// Requests per window per IP.
    pub quota: Quota,
    /// Off switch (`rate_limit.enabled`).
    pub enabled: bool,
}

fn set_headers(headers: &mut HeaderMap, allowance: Allowance, window_secs: u64) {
    let pairs = [
        ("ratelimit-limit", allowance.limit.to_string()),
        ("ratelimit-remaining", allowance.remaining.to_string()),
        (
            "ratelimit-reset",
            allowance.reset_after.as_secs().max(1).to_string(),
        ),
        (
            "ratelimit-policy",
            format!("{};w={window_secs}", allowance.limit),
        ),
    ];
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

/// The bucket an address counts against: the address itself for IPv4, its /64 network for
/// IPv6, because one subscriber usually holds a whole /64 and could otherwise rotate through
/// 2^64 addresses, each with a fresh quota.
fn bucket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let network = Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{network}/64")
        }
    }
}

/// The bucket of a request's client (`unknown` without a peer address).
pub fn client_bucket(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "unknown".to_owned(), bucket)
}

/// Counts the request against its client IP; 429 problem with `Retry-After` when over.
pub async fn limit_by_ip<B>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error>
where
    B: MessageBody + 'static,
{
    let Some(limit) = req
        .app_data::<web::Data<AuthRateLimit>>()
        .cloned()
        .filter(|l| l.enabled)
    else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let ip = client_ip(req.request()).map_or_else(|| "unknown".to_owned(), bucket);
    let key = format!("rate:auth-ip:{ip}");
    let window = limit.quota.window.as_secs();
    match check(limit.counters.as_ref(), &key, limit.quota).await {
        Ok(Decision::Allowed(allowance)) => {
            let mut response = next.call(req).await?;
            set_headers(response.headers_mut(), allowance, window);
            Ok(response.map_into_left_body())
        }
        Ok(Decision::Limited(allowance)) => {
            tracing::warn!(%ip, "per-IP rate limit reached on an authentication endpoint");
            let error = ApiError::Domain(DomainError::RateLimited {
                retry_after: allowance.reset_after,
            });
            let mut response = error.error_response();
            set_headers(response.headers_mut(), allowance, window);
            Ok(req.into_response(response).map_into_right_body())
        }
        Err(error) => {
            // The limiter's store is down: serving beats refusing everyone.
            tracing::warn!(%error, "rate limiter unavailable; request allowed");
            Ok(next.call(req).await?.map_into_left_body())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_share_the_bucket_of_their_64() {
        let key = |raw: &str| bucket(raw.parse().unwrap());
        assert_eq!(key("203.0.113.7"), "203.0.113.7");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:ffff:1:2:3"), key("2001:db8:1:2::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }
}
