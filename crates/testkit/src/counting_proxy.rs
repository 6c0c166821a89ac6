//! A reverse proxy that counts the requests it forwards (the benchmarks count storage requests by
//! putting one in front of Azurite).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;

/// A reverse proxy in front of Azurite that counts the requests it forwards.
#[derive(Clone)]
struct CountingProxy {
    target: String,
    client: reqwest::Client,
    count: Arc<AtomicU64>,
}

async fn forward(State(proxy): State<CountingProxy>, request: Request) -> Response {
    proxy.count.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = request.into_parts();
    let url = format!(
        "{}{}",
        proxy.target,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let mut outgoing = proxy.client.request(parts.method, url).body(body);
    let own = |name: &axum::http::HeaderName| {
        matches!(
            name.as_str(),
            "host" | "connection" | "keep-alive" | "content-length" | "transfer-encoding"
        )
    };
    for (name, value) in &parts.headers {
        if !own(name) {
            outgoing = outgoing.header(name, value);
        }
    }
    // Azurite closed a pooled connection under us: the client sees a failed request and retries.
    let Ok(answer) = outgoing.send().await else {
        return Response::builder()
            .status(axum::http::StatusCode::BAD_GATEWAY)
            .body(Body::empty())
            .unwrap();
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let Ok(body) = answer.bytes().await else {
        return Response::builder()
            .status(axum::http::StatusCode::BAD_GATEWAY)
            .body(Body::empty())
            .unwrap();
    };
    let mut response = Response::builder().status(status);
    for (name, value) in &headers {
        if !own(name) {
            response = response.header(name, value);
        }
    }
    response.body(Body::from(body)).unwrap()
}

pub async fn start_proxy(target: &url::Url) -> (String, Arc<AtomicU64>) {
    let origin = format!(
        "{}://{}:{}",
        target.scheme(),
        target.host_str().unwrap(),
        target.port().unwrap()
    );
    let count = Arc::new(AtomicU64::new(0));
    let proxy = CountingProxy {
        target: origin,
        client: reqwest::Client::new(),
        count: count.clone(),
    };
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}{}", target.path()), count)
}
