//! A reverse proxy that counts the requests it forwards (the benchmarks count storage requests by
//! putting one in front of Azurite), can stand in for Table storage's time as well
//! ([`StorageTime`]), and can keep the bodies of the `POST`s its target accepted (the queue
//! messages sent through it: [`start_proxy_keeping_posts`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;

/// How long a storage request takes on tokio's clock.
#[derive(Debug, Clone, Copy)]
pub enum StorageTime {
    /// As long as Azurite takes.
    Real,
    /// The clock stops while Azurite answers; a request then takes `per_request` from its start,
    /// overlapping those in flight with it as Table storage's would. Azurite answers a
    /// `$filter` query by scanning its whole table (0.8 s at 270,000 rows), which Table storage
    /// does not; a benchmark of a large tenant would otherwise measure Azurite. Only on a
    /// current-thread runtime (tokio pauses its clock there alone), where every task then reads the
    /// stopped clock: the app's budgets and rate limiter, and the Graph simulator's windows alike.
    Modelled { per_request: Duration },
}

thread_local! {
    /// The storage requests in flight that stop the clock, shared by every proxy of the runtime:
    /// the clock runs while none is. Per thread, which on a current-thread runtime is per runtime
    /// (tokio pauses each runtime's clock apart), so tests running side by side on runtimes of
    /// their own do not share it; a `Cell`, so no panic can poison it.
    static IN_FLIGHT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Stops tokio's clock while it lives (the first of several stops it, the last restarts it).
struct Stopped {
    /// While a blocking task runs, a paused clock does not jump to the next timer when the runtime
    /// is idle (tokio's auto-advance); without it, waiting on Azurite would be idle time and every
    /// pending timeout would fire at once. Dropping the sender ends the task.
    _inhibit: std::sync::mpsc::Sender<()>,
    /// The (stopped) clock when the request started.
    started: tokio::time::Instant,
}

impl Stopped {
    fn new() -> Self {
        assert_eq!(
            tokio::runtime::Handle::current().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::CurrentThread,
            "StorageTime::Modelled needs a current-thread runtime (tokio pauses no other clock)"
        );
        let (inhibit, wait) = std::sync::mpsc::channel::<()>();
        tokio::task::spawn_blocking(move || while wait.recv().is_ok() {});
        let in_flight = IN_FLIGHT.get();
        if in_flight == 0 {
            tokio::time::pause();
        }
        IN_FLIGHT.set(in_flight + 1);
        Self {
            _inhibit: inhibit,
            started: tokio::time::Instant::now(),
        }
    }

    /// Moves the stopped clock to `span` after the request's start, unless requests in flight with
    /// it already have: 32 queue writes at once take `span`, not 32 times it.
    async fn charge(&self, span: Duration) {
        let (due, now) = (self.started + span, tokio::time::Instant::now());
        if due > now {
            tokio::time::advance(due - now).await;
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let in_flight = IN_FLIGHT.get().saturating_sub(1);
        IN_FLIGHT.set(in_flight);
        if in_flight == 0 {
            tokio::time::resume();
        }
    }
}

/// A reverse proxy in front of Azurite that counts the requests it forwards.
#[derive(Clone)]
struct CountingProxy {
    target: String,
    client: reqwest::Client,
    count: Arc<AtomicU64>,
    time: StorageTime,
    /// Real time spent waiting on Azurite, in microseconds.
    waited: Arc<AtomicU64>,
    /// The bodies of accepted `POST`s, when kept.
    posted: Option<Arc<Mutex<Vec<axum::body::Bytes>>>>,
}

async fn forward(State(proxy): State<CountingProxy>, request: Request) -> Response {
    proxy.count.fetch_add(1, Ordering::Relaxed);
    let stopped = match proxy.time {
        StorageTime::Real => None,
        StorageTime::Modelled { per_request } => Some((Stopped::new(), per_request)),
    };
    let started = std::time::Instant::now();
    let response = relay(&proxy, request).await;
    let waited = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    proxy.waited.fetch_add(waited, Ordering::Relaxed);
    if let Some((stopped, per_request)) = stopped {
        stopped.charge(per_request).await;
    }
    response
}

async fn relay(proxy: &CountingProxy, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let kept = proxy
        .posted
        .as_ref()
        .filter(|_| parts.method == axum::http::Method::POST);
    let url = format!(
        "{}{}",
        proxy.target,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let mut outgoing = proxy.client.request(parts.method, url).body(body.clone());
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
    // Only what the target took: a refused or retried send is not a message.
    if let Some(posted) = kept.filter(|_| status.is_success()) {
        posted.lock().unwrap().push(body);
    }
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
    let proxy = start_proxy_with(target, StorageTime::Real).await;
    (proxy.url, proxy.requests)
}

/// A started proxy: its URL (the target's path kept), the requests it forwarded, and the real time
/// they waited on the target.
pub struct Proxy {
    pub url: String,
    pub requests: Arc<AtomicU64>,
    waited: Arc<AtomicU64>,
    posted: Option<Arc<Mutex<Vec<axum::body::Bytes>>>>,
}

impl Proxy {
    #[must_use]
    pub fn waited(&self) -> Duration {
        Duration::from_micros(self.waited.load(Ordering::Relaxed))
    }

    /// The bodies of the `POST`s the target accepted since the last call, oldest first; empty
    /// unless started by [`start_proxy_keeping_posts`].
    pub fn take_posted(&self) -> Vec<axum::body::Bytes> {
        self.posted
            .as_ref()
            .map(|p| std::mem::take(&mut *p.lock().unwrap()))
            .unwrap_or_default()
    }
}

pub async fn start_proxy_with(target: &url::Url, time: StorageTime) -> Proxy {
    start(target, time, false).await
}

/// [`start_proxy_with`], keeping the bodies of the `POST`s its target accepts
/// ([`Proxy::take_posted`]). In front of a queue, they are the messages sent, read without asking
/// Azurite: a receive from a queue holding tens of thousands of hidden messages is slow there.
pub async fn start_proxy_keeping_posts(target: &url::Url, time: StorageTime) -> Proxy {
    start(target, time, true).await
}

async fn start(target: &url::Url, time: StorageTime, keep_posts: bool) -> Proxy {
    let origin = format!(
        "{}://{}:{}",
        target.scheme(),
        target.host_str().unwrap(),
        target.port().unwrap()
    );
    let count = Arc::new(AtomicU64::new(0));
    let waited = Arc::new(AtomicU64::new(0));
    let posted = keep_posts.then(Arc::default);
    let proxy = CountingProxy {
        target: origin,
        client: reqwest::Client::new(),
        count: count.clone(),
        time,
        waited: waited.clone(),
        posted: posted.clone(),
    };
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Proxy {
        url: format!("http://{addr}{}", target.path()),
        requests: count,
        waited,
        posted,
    }
}
