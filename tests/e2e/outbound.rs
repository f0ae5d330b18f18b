//! The outbound HTTP client against a real HTTP peer on loopback (an actix-web server these
//! tests start): time limits, retries, the circuit breaker, size limits, headers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use keel_config::{HttpClientSettings, Settings, Sources};
use keel_infrastructure::http_client::ReqwestHttpClient;
use keel_kernel::http::{HttpClient, Method, OutboundError, OutboundRequest};

/// What the peer saw: hits per path, and the last request's headers per path.
#[derive(Default)]
struct Seen {
    hits: HashMap<String, u32>,
    headers: HashMap<String, HashMap<String, String>>,
}

type Shared = Arc<Mutex<Seen>>;

/// Each path behaves as its first segment says:
/// `/ok`, `/fail-then-ok/{n}/…` (503 for the first n hits), `/down/…` (500), `/slow` (2 s),
/// `/busy` (429 with `Retry-After: 1`), `/big` (64 KiB).
async fn peer(request: HttpRequest, seen: web::Data<Shared>) -> HttpResponse {
    let path = request.path().to_owned();
    let hits = {
        let mut seen = seen.lock().unwrap();
        let hits = {
            let count = seen.hits.entry(path.clone()).or_default();
            *count += 1;
            *count
        };
        let headers = request
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        seen.headers.insert(path.clone(), headers);
        hits
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments[0] {
        "ok" => HttpResponse::Ok().body("fine"),
        "fail-then-ok" => {
            let failures: u32 = segments[1].parse().unwrap();
            if hits <= failures {
                HttpResponse::ServiceUnavailable().body("Traceback: upstream internals")
            } else {
                HttpResponse::Ok().body("recovered")
            }
        }
        "down" => HttpResponse::InternalServerError().body("boom"),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            HttpResponse::Ok().body("late")
        }
        "slow-down" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            HttpResponse::InternalServerError().body("still down")
        }
        "busy" => HttpResponse::TooManyRequests()
            .insert_header(("retry-after", "1"))
            .finish(),
        "big" => HttpResponse::Ok().body(vec![b'x'; 64 * 1024]),
        _ => HttpResponse::NotFound().finish(),
    }
}

struct Peer {
    base: String,
    seen: Shared,
    handle: actix_web::dev::ServerHandle,
}

impl Peer {
    async fn start() -> Self {
        let seen: Shared = Arc::default();
        let data = web::Data::new(seen.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(peer))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            base: format!("http://127.0.0.1:{port}"),
            seen,
            handle,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn hits(&self, path: &str) -> u32 {
        self.seen
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    fn header(&self, path: &str, name: &str) -> Option<String> {
        self.seen
            .lock()
            .unwrap()
            .headers
            .get(path)?
            .get(name)
            .cloned()
    }
}

fn settings(change: impl FnOnce(&mut HttpClientSettings)) -> HttpClientSettings {
    let mut settings = Settings::load_from(&Sources::from_vars(Vec::<(String, String)>::new()))
        .unwrap()
        .http_client;
    settings.retry_min_delay = Duration::from_millis(10);
    settings.retry_max_delay = Duration::from_millis(50);
    change(&mut settings);
    settings
}

#[tokio::test]
async fn a_5xx_then_success_is_retried_for_a_get_and_the_caller_sees_only_the_success() {
    let peer = Peer::start().await;
    let client = ReqwestHttpClient::new(&settings(|s| s.retries = 2)).unwrap();
    let response = client
        .send(OutboundRequest::get(peer.url("/fail-then-ok/2/a")))
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"recovered");
    assert_eq!(
        peer.hits("/fail-then-ok/2/a"),
        3,
        "two failures, then the success"
    );

    // Retries run out: the last answer comes back, and as an error it carries no upstream text.
    let response = client
        .send(OutboundRequest::get(peer.url("/fail-then-ok/9/b")))
        .await
        .unwrap();
    assert_eq!(response.status, 503);
    assert_eq!(
        peer.hits("/fail-then-ok/9/b"),
        3,
        "one attempt plus two retries"
    );
    let error = response.error_for_status().unwrap_err();
    let problem: keel_kernel::DomainError = error.into();
    assert_eq!(problem.code(), "upstream_unavailable");
    assert!(!problem.to_string().contains("Traceback"));
}

#[tokio::test]
async fn a_post_is_not_retried_unless_it_carries_an_idempotency_key() {
    let peer = Peer::start().await;
    let client = ReqwestHttpClient::new(&settings(|s| s.retries = 3)).unwrap();
    let response = client
        .send(OutboundRequest::post(peer.url("/fail-then-ok/1/post")).body(b"{}".to_vec()))
        .await
        .unwrap();
    assert_eq!(response.status, 503);
    assert_eq!(peer.hits("/fail-then-ok/1/post"), 1, "a POST is sent once");
    let response = client
        .send(OutboundRequest::new(
            Method::Patch,
            peer.url("/fail-then-ok/1/patch"),
        ))
        .await
        .unwrap();
    assert_eq!(response.status, 503);
    assert_eq!(peer.hits("/fail-then-ok/1/patch"), 1, "so is a PATCH");

    let response = client
        .send(
            OutboundRequest::post(peer.url("/fail-then-ok/1/keyed"))
                .idempotency_key("order-42")
                .json(&serde_json::json!({"amount": 1}))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(
        peer.hits("/fail-then-ok/1/keyed"),
        2,
        "with a key it is retried"
    );
    assert_eq!(
        peer.header("/fail-then-ok/1/keyed", "idempotency-key")
            .as_deref(),
        Some("order-42"),
        "and the key goes along"
    );
    assert_eq!(
        peer.header("/fail-then-ok/1/keyed", "content-type")
            .as_deref(),
        Some("application/json")
    );
    assert_eq!(
        peer.header("/fail-then-ok/1/keyed", "user-agent")
            .as_deref(),
        Some("keel")
    );
}

#[tokio::test]
async fn a_slow_peer_times_out_per_attempt_and_in_total() {
    let peer = Peer::start().await;
    let client = ReqwestHttpClient::new(&settings(|s| {
        s.retries = 1;
        s.request_timeout = Duration::from_millis(200);
    }))
    .unwrap();
    let started = Instant::now();
    let error = client
        .send(OutboundRequest::get(peer.url("/slow")))
        .await
        .unwrap_err();
    assert!(matches!(error, OutboundError::Timeout { .. }), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "did not wait for the peer"
    );
    assert_eq!(peer.hits("/slow"), 2, "a timed-out GET is tried again");
    let problem: keel_kernel::DomainError = error.into();
    assert_eq!(problem.code(), "upstream_timeout");

    // The total limit bounds attempts and pauses together.
    let client = ReqwestHttpClient::new(&settings(|s| {
        s.retries = 10;
        s.request_timeout = Duration::from_secs(5);
        s.total_timeout = Duration::from_millis(300);
    }))
    .unwrap();
    let started = Instant::now();
    let error = client
        .send(OutboundRequest::get(peer.url("/slow")))
        .await
        .unwrap_err();
    assert!(matches!(error, OutboundError::Timeout { .. }), "{error:?}");
    assert!(started.elapsed() < Duration::from_millis(1500));

    // A per-request limit overrides the configured one.
    let error = ReqwestHttpClient::new(&settings(|s| s.retries = 0))
        .unwrap()
        .send(OutboundRequest::get(peer.url("/slow")).timeout(Duration::from_millis(100)))
        .await
        .unwrap_err();
    assert!(matches!(error, OutboundError::Timeout { .. }), "{error:?}");
}

#[tokio::test]
async fn the_circuit_opens_after_repeated_failures_then_half_opens_and_recovers() {
    let peer = Peer::start().await;
    let client = ReqwestHttpClient::new(&settings(|s| {
        s.retries = 0;
        s.circuit_failures = 3;
        s.circuit_open_for = Duration::from_millis(300);
    }))
    .unwrap();
    for _ in 0..3 {
        let response = client
            .send(OutboundRequest::get(peer.url("/down/x")))
            .await
            .unwrap();
        assert_eq!(response.status, 500);
    }
    // Open: refused at once, the peer not even asked, whatever the path on that host.
    let error = client
        .send(OutboundRequest::get(peer.url("/ok")))
        .await
        .unwrap_err();
    assert!(
        matches!(error, OutboundError::CircuitOpen { .. }),
        "{error:?}"
    );
    assert_eq!(peer.hits("/ok"), 0);
    let problem: keel_kernel::DomainError = error.into();
    assert_eq!(problem.code(), "upstream_unavailable");

    // Half open after the pause: a failing probe opens it again at once.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let response = client
        .send(OutboundRequest::get(peer.url("/down/x")))
        .await
        .unwrap();
    assert_eq!(response.status, 500);
    assert_eq!(peer.hits("/down/x"), 4);
    assert!(matches!(
        client.send(OutboundRequest::get(peer.url("/ok"))).await,
        Err(OutboundError::CircuitOpen { .. })
    ));

    // Half open, one call probes; the rest waiting at that moment are refused, not sent.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let attempts: Vec<_> = (0..5)
        .map(|_| client.send(OutboundRequest::get(peer.url("/slow-down"))))
        .collect();
    let results = futures_util::future::join_all(attempts).await;
    assert_eq!(peer.hits("/slow-down"), 1, "one probe reached the host");
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(OutboundError::CircuitOpen { .. })))
        .count();
    assert_eq!(refused, 4, "{results:?}");
    assert!(
        matches!(
            client.send(OutboundRequest::get(peer.url("/ok"))).await,
            Err(OutboundError::CircuitOpen { .. })
        ),
        "the failed probe opened it again"
    );

    // A succeeding probe closes it: calls flow again.
    tokio::time::sleep(Duration::from_millis(350)).await;
    for _ in 0..3 {
        let response = client
            .send(OutboundRequest::get(peer.url("/ok")))
            .await
            .unwrap();
        assert_eq!(response.status, 200);
    }
    assert_eq!(peer.hits("/ok"), 3);

    // Another host's circuit is its own: a second peer is reachable while this one fails.
    let other = Peer::start().await;
    for _ in 0..3 {
        let _ = client.send(OutboundRequest::get(peer.url("/down/y"))).await;
    }
    assert!(matches!(
        client.send(OutboundRequest::get(peer.url("/ok"))).await,
        Err(OutboundError::CircuitOpen { .. })
    ));
    assert_eq!(
        client
            .send(OutboundRequest::get(other.url("/ok")))
            .await
            .unwrap()
            .status,
        200
    );
    peer.handle.stop(false).await;
    other.handle.stop(false).await;
}

#[tokio::test]
async fn an_unreachable_host_is_unavailable_and_a_4xx_is_an_answer() {
    let peer = Peer::start().await;
    let client = ReqwestHttpClient::new(&settings(|s| s.retries = 1)).unwrap();
    let response = client
        .send(OutboundRequest::get(peer.url("/nothing-here")))
        .await
        .unwrap();
    assert_eq!(response.status, 404, "a 4xx is the caller's to handle");
    assert_eq!(peer.hits("/nothing-here"), 1, "and is not retried");

    // 429 is retried after the Retry-After the peer asked for (capped by retry_max_delay).
    let response = client
        .send(OutboundRequest::get(peer.url("/busy")))
        .await
        .unwrap();
    assert_eq!(response.status, 429);
    assert_eq!(peer.hits("/busy"), 2);

    // A port nobody listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let error = client
        .send(OutboundRequest::get(format!("http://127.0.0.1:{closed}/")))
        .await
        .unwrap_err();
    assert!(
        matches!(error, OutboundError::Unavailable { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn oversized_answers_and_malformed_requests_are_refused() {
    let peer = Peer::start().await;
    let client = ReqwestHttpClient::new(&settings(|s| s.max_response_bytes = 4096)).unwrap();
    let error = client
        .send(OutboundRequest::get(peer.url("/big")))
        .await
        .unwrap_err();
    assert!(
        matches!(error, OutboundError::TooLarge { limit: 4096, .. }),
        "{error:?}"
    );
    assert_eq!(peer.hits("/big"), 1, "a too-large answer is not retried");

    for url in [
        "not a url",
        "ftp://127.0.0.1/file",
        "file:///etc/passwd",
        "http://",
    ] {
        let error = client.send(OutboundRequest::get(url)).await.unwrap_err();
        assert!(
            matches!(error, OutboundError::Invalid(_)),
            "{url}: {error:?}"
        );
    }
    let error = client
        .send(OutboundRequest::get(peer.url("/ok")).header("bad\nname", "v"))
        .await
        .unwrap_err();
    assert!(matches!(error, OutboundError::Invalid(_)), "{error:?}");
    assert_eq!(peer.hits("/ok"), 0, "nothing was sent");
}
