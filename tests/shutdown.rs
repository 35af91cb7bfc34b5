//! `serve` exits promptly at SIGTERM even while a key is being generated
//! (an RSA-4096 key takes seconds): the generation is abandoned before it
//! stages anything, and the next start generates the keys again.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::daemon::{Daemon, start_binary, write_config};

/// Generous for a loaded 2-core machine: the exit takes ~10 ms; before,
/// it waited for the generation (0.5 to 5 s for two RSA-4096 keys).
const EXIT_BOUND: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_key_generation_exits_at_once_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), "algorithms: [RS256]\nrsa_bits: 4096\n");
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut started = start_binary(&config, &[], log.clone());
    started
        .addrs
        .recv_timeout(Duration::from_secs(30))
        .expect("jwksd listens");
    // The first keys are being generated now.
    let term = Instant::now();
    // SAFETY: kill has no memory-safety preconditions; the pid is our child.
    unsafe { libc::kill(started.child.id() as libc::pid_t, libc::SIGTERM) };
    let status = loop {
        if let Some(s) = started.child.try_wait().unwrap() {
            break s;
        }
        if term.elapsed() > Duration::from_secs(30) {
            let _ = started.child.kill();
            panic!("no exit");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = term.elapsed();
    let text = log.lock().unwrap().join("\n");
    assert!(status.success(), "{status:?}\n{text}");
    assert!(took < EXIT_BOUND, "exit took {took:?}\n{text}");
    assert!(text.contains("\"stopped\""), "{text}");

    // The next start discards whatever was staged and makes the keys.
    let d = Daemon::start_with(tmp.path(), &config, &[]).await;
    let keys = d.keys().await;
    let states: Vec<&str> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["state"].as_str())
        .collect();
    assert!(
        states.contains(&"active") && states.contains(&"next"),
        "{keys}"
    );
}
