//! Standalone mode's stand-in for the Functions host's timer trigger: each timer function fires at
//! the times its schedule (from `handlers/*/function.json`, built in) names, through the handler's
//! own `POST /{FunctionName}` route with the host's payload, so both run modes take the same path.
//!
//! As the host does, one function never runs twice at once: a run that overruns its next due time is
//! followed by one run marked `IsPastDue`, not by one per missed time; and no due time fires twice.
//! A function whose `function.json` says `runOnStartup` also runs once when the scheduler starts.
//! Times are read from the app's clock (tests and the local run use the simulator's), in steps of
//! at most a second, so a clock that runs faster than real time still fires on its own schedule.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::watch;

use super::INVOCATION_ID_HEADER;
use crate::clock::Clock;
use crate::domain::schedule::Schedule;

/// One timer function and when it runs.
#[derive(Debug, Clone)]
pub(crate) struct Timer {
    pub(crate) function: &'static str,
    pub(crate) binding: &'static str,
    pub(crate) schedule: Schedule,
    /// `runOnStartup`: one run when the scheduler starts, as the host does at start-up.
    pub(crate) run_on_startup: bool,
}

/// The next firing after the one due at `last` (or after `now` for the first): its due time, and
/// whether it is past due at `now`. Due times missed while a run overran collapse into the latest.
pub(crate) fn next_firing(
    schedule: &Schedule,
    last: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Option<(OffsetDateTime, bool)> {
    let mut due = schedule.next_after(last.unwrap_or(now))?;
    if due >= now {
        return Some((due, false));
    }
    // Missed while the previous run overran: fire once for the latest missed time.
    while let Some(later) = schedule.next_after(due).filter(|t| *t <= now) {
        due = later;
    }
    Some((due, true))
}

/// Runs every timer until `stop` turns true; a run in flight is finished first.
pub(crate) async fn run(
    timers: Vec<Timer>,
    handler: SocketAddr,
    clock: Arc<dyn Clock>,
    stop: watch::Receiver<bool>,
) {
    let client = reqwest::Client::new();
    let tasks = timers.into_iter().map(|timer| {
        let client = client.clone();
        let clock = Arc::clone(&clock);
        let mut stop = stop.clone();
        async move {
            let url = format!("http://{handler}/{}", timer.function);
            tracing::info!(function = timer.function, "timer scheduler started");
            let mut last = None;
            if timer.run_on_startup && !*stop.borrow() {
                fire(&client, &url, timer.binding, clock.now(), false).await;
            }
            while !*stop.borrow() {
                let Some((due, past_due)) = next_firing(&timer.schedule, last, clock.now()) else {
                    tracing::error!(
                        function = timer.function,
                        "the schedule names no further time"
                    );
                    return;
                };
                // Wait in steps: the clock may be the simulator's, faster than real time.
                while clock.now() < due && !*stop.borrow() {
                    let left = clock
                        .real_span(Duration::try_from(due - clock.now()).unwrap_or(Duration::ZERO));
                    tokio::select! {
                        () = tokio::time::sleep(left.min(Duration::from_secs(1))) => {}
                        _ = stop.changed() => {}
                    }
                }
                if *stop.borrow() {
                    break;
                }
                last = Some(due);
                fire(&client, &url, timer.binding, due, past_due).await;
            }
            tracing::info!(function = timer.function, "timer scheduler stopped");
        }
    });
    futures::future::join_all(tasks).await;
}

/// One run, as the host invokes a timer function: `Data.<binding>` is the `TimerInfo`.
async fn fire(
    client: &reqwest::Client,
    url: &str,
    binding: &str,
    due: OffsetDateTime,
    past_due: bool,
) {
    let payload = json!({
        "Data": { binding: { "Schedule": { "AdjustForDST": false }, "ScheduleStatus": null, "IsPastDue": past_due } },
        "Metadata": { "sys": { "MethodName": "timer", "UtcNow": due.to_string() } },
    });
    let invocation_id = crate::random::token();
    let answer = client
        .post(url)
        .header(INVOCATION_ID_HEADER, invocation_id)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(payload.to_string())
        .send()
        .await;
    match answer {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => tracing::warn!(status = r.status().as_u16(), %due, "timer run failed"),
        Err(e) => tracing::warn!(error = %e.without_url(), %due, "timer run failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn firings_follow_the_schedule_and_never_repeat_a_due_time() {
        let every_15 = Schedule::parse("0 */15 * * * *").unwrap();
        let now = datetime!(2026-11-28 10:07 UTC);
        let (first, late) = next_firing(&every_15, None, now).unwrap();
        assert_eq!((first, late), (datetime!(2026-11-28 10:15 UTC), false));
        // Asked again at the same instant after firing it: the next one, not the same.
        let (second, _) = next_firing(&every_15, Some(first), first).unwrap();
        assert_eq!(second, datetime!(2026-11-28 10:30 UTC));
    }

    #[test]
    fn a_run_that_overran_several_due_times_is_followed_by_one_past_due_run() {
        let every_15 = Schedule::parse("0 */15 * * * *").unwrap();
        let last = datetime!(2026-11-28 10:15 UTC);
        let now = datetime!(2026-11-28 11:02 UTC);
        assert_eq!(
            next_firing(&every_15, Some(last), now),
            Some((datetime!(2026-11-28 11:00 UTC), true))
        );
    }

    /// The real loop against a handler that records what it is sent: a schedule of every second,
    /// for three and a half seconds, fires three or four times, each for its own due time.
    #[tokio::test]
    async fn the_scheduler_posts_one_timer_invocation_per_due_time() {
        use std::sync::Mutex;
        let seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let record = Arc::clone(&seen);
        let handler = axum::Router::new().route(
            "/PullReports",
            axum::routing::post(move |body: axum::Json<serde_json::Value>| {
                let record = Arc::clone(&record);
                async move {
                    record.lock().unwrap().push(body.0);
                    "{}"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, handler).await });
        let (stop, stopped) = watch::channel(false);
        let timer = Timer {
            function: "PullReports",
            binding: "timer",
            schedule: Schedule::parse("* * * * * *").unwrap(),
            run_on_startup: false,
        };
        let running = tokio::spawn(run(
            vec![timer],
            addr,
            Arc::new(crate::clock::SystemClock),
            stopped,
        ));
        tokio::time::sleep(Duration::from_millis(3500)).await;
        stop.send(true).unwrap();
        running.await.unwrap();

        let seen = seen.lock().unwrap();
        assert!(
            (3..=4).contains(&seen.len()),
            "{} runs: {seen:?}",
            seen.len()
        );
        let due: std::collections::BTreeSet<String> = seen
            .iter()
            .map(|p| p["Metadata"]["sys"]["UtcNow"].to_string())
            .collect();
        assert_eq!(due.len(), seen.len(), "a due time fired twice: {seen:?}");
        assert!(
            seen.iter()
                .all(|p| p["Data"]["timer"]["IsPastDue"] == false)
        );
    }

    /// `runOnStartup`: one run at once, then the schedule (here: not before next year).
    #[tokio::test]
    async fn a_timer_that_runs_on_startup_fires_once_before_its_first_due_time() {
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&runs);
        let handler = axum::Router::new().route(
            "/MaintainSubscription",
            axum::routing::post(move || {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async { "{}" }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, handler).await });
        let (stop, stopped) = watch::channel(false);
        let timer = |run_on_startup| Timer {
            function: "MaintainSubscription",
            binding: "timer",
            schedule: Schedule::parse("0 0 0 1 1 *").unwrap(),
            run_on_startup,
        };
        let running = tokio::spawn(run(
            vec![timer(true), timer(false)],
            addr,
            Arc::new(crate::clock::SystemClock),
            stopped,
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.send(true).unwrap();
        running.await.unwrap();
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
