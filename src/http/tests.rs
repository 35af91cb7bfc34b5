//! The connection limits and timeouts, against stuck and greedy peers.

use super::*;

/// A copy of the key never outlives what the daemon vouches for: whole
/// seconds, rounded down; none at all past the window.
#[test]
fn the_signing_key_max_age_rounds_down_and_none_is_no_store() {
    let h = |d: Option<Duration>| signing_key_cache_control(d);
    assert_eq!(h(Some(Duration::from_secs(60))), "private, max-age=60");
    assert_eq!(
        h(Some(Duration::from_millis(31_900))),
        "private, max-age=31"
    );
    assert_eq!(h(None), "no-store");
}

/// A write side that accepts everything from `ready_at` on, and nothing
/// before.
struct Stuck {
    ready_at: tokio::time::Instant,
    wake: Pin<Box<Sleep>>,
}

impl Stuck {
    fn until(ready_at: tokio::time::Instant) -> Stuck {
        Stuck {
            ready_at,
            wake: Box::pin(tokio::time::sleep_until(ready_at)),
        }
    }
}

impl hyper::rt::Write for Stuck {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if tokio::time::Instant::now() >= this.ready_at {
            return Poll::Ready(Ok(buf.len()));
        }
        this.wake.as_mut().reset(this.ready_at);
        let _ = this.wake.as_mut().poll(cx);
        Poll::Pending
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

async fn write(io: &mut WriteTimeout<Stuck>) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| hyper::rt::Write::poll_write(Pin::new(&mut *io), cx, b"x")).await
}

#[tokio::test(start_paused = true)]
async fn a_write_fails_after_no_progress_for_the_timeout_not_after_a_total() {
    let start = tokio::time::Instant::now();
    let secs = Duration::from_secs;
    let mut io = WriteTimeout::new(Stuck::until(start + secs(8)), secs(10));
    // Two stalls of 8 s each: 16 s in all, but progress within 10 s.
    assert_eq!(write(&mut io).await.unwrap(), 1);
    io.inner.ready_at = start + secs(16);
    assert_eq!(write(&mut io).await.unwrap(), 1);
    assert_eq!(start.elapsed(), secs(16));
    // A stall past the timeout fails, exactly when it runs out.
    io.inner.ready_at = start + secs(1000);
    let err = write(&mut io).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(start.elapsed(), secs(26));
}

#[test]
fn connections_are_capped_per_address_and_ipv6_prefix() {
    let clients = Arc::new(PerClient::new(2));
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let a1 = clients.try_take(ip("10.0.0.1")).unwrap();
    let _a2 = clients.try_take(ip("::ffff:10.0.0.1")).unwrap();
    assert!(clients.try_take(ip("10.0.0.1")).is_none());
    assert!(clients.try_take(ip("10.0.0.2")).is_some());
    drop(a1);
    assert!(clients.try_take(ip("10.0.0.1")).is_some());
    let _b1 = clients.try_take(ip("2001:db8::1")).unwrap();
    let _b2 = clients.try_take(ip("2001:db8::ffff:2")).unwrap();
    assert!(clients.try_take(ip("2001:db8::3")).is_none(), "same /64");
    assert!(clients.try_take(ip("2001:db8:0:1::1")).is_some());
    // Clients without open connections are forgotten.
    drop(_b1);
    drop(_b2);
    assert!(!clients.lock().contains_key(&ip("2001:db8::")));
}

#[test]
fn if_none_match_handles_lists_star_and_weak_tags() {
    let h = |s: &'static str| HeaderValue::from_static(s);
    let tag = "\"abc\"";
    assert!(if_none_match(Some(&h("\"abc\"")), tag));
    assert!(if_none_match(Some(&h("\"x\", \"abc\"")), tag));
    assert!(if_none_match(Some(&h("W/\"abc\"")), tag));
    assert!(if_none_match(Some(&h("*")), tag));
    assert!(!if_none_match(Some(&h("\"abcd\"")), tag));
    assert!(!if_none_match(Some(&h("abc")), tag));
    assert!(!if_none_match(None, tag));
}
