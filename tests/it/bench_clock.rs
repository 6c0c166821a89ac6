//! The scale benchmark's time model (`benches/scale.rs`): storage requests through a proxy with
//! [`StorageTime::Modelled`] stop tokio's clock while the target answers and move it by the modelled
//! time instead. The benchmark's "longest sweep against its budget" rests on this.

use std::io::{Read, Write};
use std::time::Duration;

use support::counting_proxy::{StorageTime, start_proxy_with};

/// A target that answers after `delay` of real time, on threads of its own (an async server would
/// wait on the stopped clock).
fn slow_target(delay: Duration) -> url::Url {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            // A thread each: requests in flight together wait side by side, as on Table storage.
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut buf = [0u8; 1024];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    seen.extend_from_slice(&buf[..n]);
                }
                std::thread::sleep(delay);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            });
        }
    });
    format!("http://{addr}/").parse().unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn a_storage_request_stops_the_clock_while_it_waits_and_takes_the_modelled_time_instead() {
    let per_request = Duration::from_millis(100);
    let target = slow_target(Duration::from_millis(600));
    let proxy = start_proxy_with(&target, StorageTime::Modelled { per_request }).await;
    // A timeout shorter than the real wait, longer than the modelled one: were the clock to jump
    // to the next timer while the runtime idles on the target (tokio's auto-advance), it would fire.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let get = || async {
        let answer = client.get(&proxy.url).send().await.unwrap();
        assert_eq!(answer.text().await.unwrap(), "ok");
    };

    // One after the other: each takes the modelled time.
    let (clock, real, waited) = (
        tokio::time::Instant::now(),
        std::time::Instant::now(),
        proxy.waited(),
    );
    for _ in 0..3 {
        get().await;
    }
    let (on_clock, in_real, waited) = (clock.elapsed(), real.elapsed(), proxy.waited() - waited);
    assert!(waited >= Duration::from_millis(1800), "waited {waited:?}");
    assert!(on_clock >= per_request * 3, "clock {on_clock:?}");
    // The clock moved by the three modelled requests and the time outside storage, not by the
    // 1.8 s the target took.
    let outside = in_real.saturating_sub(waited);
    assert!(
        on_clock < per_request * 3 + outside + Duration::from_millis(50),
        "clock {on_clock:?}, real {in_real:?}, waited {waited:?}"
    );

    // Side by side: they overlap, as requests in flight together do.
    let (clock, real, waited) = (
        tokio::time::Instant::now(),
        std::time::Instant::now(),
        proxy.waited(),
    );
    tokio::join!(get(), get());
    let (on_clock, in_real, waited) = (clock.elapsed(), real.elapsed(), proxy.waited() - waited);
    assert!(on_clock >= per_request, "clock {on_clock:?}");
    let outside = in_real.saturating_sub(waited / 2);
    assert!(
        on_clock < per_request + outside + Duration::from_millis(50),
        "clock {on_clock:?}, real {in_real:?}, waited by both {waited:?}"
    );

    // The clock runs again once no request is in flight.
    let resumed = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(resumed.elapsed() >= Duration::from_millis(20));
}
