//! The directory store: durability, every crash point, the lock, and
//! encryption at rest.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use jwksd::clock::Clock;
use jwksd::keyring::Keyring;
use jwksd::keys::Alg;
use jwksd::lifecycle::{KeyState, plan, revoke};
use jwksd::store::fs::FsStore;
use jwksd::store::{KeyStore, MasterKey, StoreError};
use jwksd::time::Timestamp;

struct Fixed(Timestamp);
impl Clock for Fixed {
    fn now(&self) -> Timestamp {
        self.0
    }
}

const MASTER: &str = "q1XJtQ8e3k5m9r2Yb7vL0pZcW4sN6aHdF1gU8iT3oKE=";

use support::policy;

fn t(s: i64) -> Timestamp {
    Timestamp::from_millis(1_800_000_000_000 + s * 1000)
}

fn open(dir: &Path) -> FsStore {
    FsStore::open(dir, None).unwrap()
}

/// A store with an active and a next ES256 key.
fn bootstrap(dir: &Path, master: Option<MasterKey>) -> Keyring {
    let (mut ring, _) = Keyring::load(Box::new(FsStore::open(dir, master).unwrap())).unwrap();
    // The first keys, then the promises recorded for them.
    for _ in 0..2 {
        let p = plan(ring.state(), &policy(), t(0));
        ring.execute(&p.actions, &Fixed(t(0)))
            .into_result()
            .unwrap();
    }
    ring
}

fn problems(err: StoreError) -> String {
    match err {
        StoreError::Inconsistent(p) => p
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
        other => panic!("expected an inconsistency, got {other}"),
    }
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn keys_survive_a_restart_with_their_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let ring = bootstrap(&dir, None);
    let state = ring.state().clone();
    assert_eq!(state.published().count(), 2);
    drop(ring);

    assert_eq!(mode(&dir), 0o700);
    for k in &state.keys {
        let f = dir.join(format!("{}.key", k.kid));
        assert_eq!(mode(&f), 0o600);
        assert!(
            fs::read_to_string(&f)
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
    }
    assert_eq!(mode(&dir.join("state.json")), 0o600);

    let (ring, notes) = Keyring::load(Box::new(open(&dir))).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(ring.state(), &state);
    for k in &state.keys {
        assert_eq!(*ring.key(&k.kid).unwrap().kid(), k.kid);
    }
}

#[test]
fn leftover_temp_file_is_removed_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let ring = bootstrap(tmp.path(), None);
    let state = ring.state().clone();
    drop(ring);
    fs::write(tmp.path().join("state.json.tmp"), b"{\"half\": ").unwrap();
    let (ring, notes) = Keyring::load(Box::new(open(tmp.path()))).unwrap();
    assert_eq!(ring.state(), &state);
    assert!(
        notes
            .iter()
            .any(|n| n.contains("state.json.tmp") && n.contains("interrupted")),
        "{notes:?}"
    );
    assert!(!tmp.path().join("state.json.tmp").exists());
}

#[test]
fn staged_key_without_state_is_discarded_and_reported() {
    // Crash after the private key was staged, before the state that
    // publishes it was committed: the key was never published.
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let key = jwksd::keys::generate(Alg::ES256, 2048).unwrap();
    store.stage(&key).unwrap();
    drop(store);
    let pending = tmp.path().join(format!("{}.key.pending", key.kid));
    assert!(pending.exists());
    let (ring, notes) = Keyring::load(Box::new(open(tmp.path()))).unwrap();
    assert!(ring.state().is_empty());
    assert!(!pending.exists());
    assert!(
        notes
            .iter()
            .any(|n| n.contains(key.kid.as_str()) && n.contains("never published")),
        "{notes:?}"
    );
}

#[test]
fn commit_interrupted_before_rename_is_completed() {
    // Crash after state.json was committed, before `.pending` became `.key`.
    let tmp = tempfile::tempdir().unwrap();
    let ring = bootstrap(tmp.path(), None);
    let kid = ring.state().next_key(Alg::ES256).unwrap().kid.clone();
    drop(ring);
    let key = tmp.path().join(format!("{kid}.key"));
    fs::rename(&key, tmp.path().join(format!("{kid}.key.pending"))).unwrap();
    let (ring, notes) = Keyring::load(Box::new(open(tmp.path()))).unwrap();
    assert!(ring.key(&kid).is_some());
    assert!(key.exists());
    assert!(
        notes.iter().any(|n| n.contains("completed the commit")),
        "{notes:?}"
    );
}

#[test]
fn committed_private_key_without_state_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ring = bootstrap(tmp.path(), None);
    drop(ring);
    let stray = jwksd::keys::generate(Alg::ES256, 2048).unwrap();
    let path = tmp.path().join(format!("{}.key", stray.kid));
    fs::write(&path, stray.pkcs8_pem().unwrap().as_bytes()).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let msg = problems(Keyring::load(Box::new(open(tmp.path()))).err().unwrap());
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("state.json does not know"), "{msg}");
    // Nothing was deleted.
    assert!(path.exists());
}

#[test]
fn state_without_private_key_is_refused_for_signing_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let ring = bootstrap(tmp.path(), None);
    let active = ring.state().active(Alg::ES256).unwrap().kid.clone();
    drop(ring);
    let path = tmp.path().join(format!("{active}.key"));
    fs::remove_file(&path).unwrap();
    let msg = problems(Keyring::load(Box::new(open(tmp.path()))).err().unwrap());
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("missing"),
        "{msg}"
    );
    assert!(msg.contains("backup"), "{msg}");
}

#[test]
fn missing_private_key_of_a_retiring_key_is_only_noted() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ring = bootstrap(tmp.path(), None);
    let p = plan(ring.state(), &policy(), t(10));
    ring.execute(&p.actions, &Fixed(t(10)))
        .into_result()
        .unwrap();
    let retiring = ring
        .state()
        .in_state(Alg::ES256, KeyState::Retiring)
        .next()
        .unwrap()
        .kid
        .clone();
    drop(ring);
    fs::remove_file(tmp.path().join(format!("{retiring}.key"))).unwrap();
    let (ring, notes) = Keyring::load(Box::new(open(tmp.path()))).unwrap();
    assert!(ring.state().find(&retiring).is_some());
    assert!(
        notes.iter().any(|n| n.contains(retiring.as_str())),
        "{notes:?}"
    );
}

#[test]
fn retired_and_revoked_private_keys_are_destroyed() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ring = bootstrap(tmp.path(), None);
    let first = ring.state().active(Alg::ES256).unwrap().kid.clone();
    let p = plan(ring.state(), &policy(), t(10));
    ring.execute(&p.actions, &Fixed(t(10)))
        .into_result()
        .unwrap();
    assert!(tmp.path().join(format!("{first}.key")).exists());
    let p = plan(ring.state(), &policy(), t(20));
    ring.execute(&p.actions, &Fixed(t(20)))
        .into_result()
        .unwrap();
    assert_eq!(ring.state().find(&first).unwrap().state, KeyState::Retired);
    assert!(!tmp.path().join(format!("{first}.key")).exists());
    assert!(ring.key(&first).is_none());

    let next = ring.state().next_key(Alg::ES256).unwrap().kid.clone();
    let actions = revoke(ring.state(), &policy(), t(21), &next).unwrap();
    ring.execute(&actions, &Fixed(t(21))).into_result().unwrap();
    assert!(!tmp.path().join(format!("{next}.key")).exists());
    // The audit history keeps the public facts.
    assert_eq!(ring.state().find(&next).unwrap().state, KeyState::Revoked);
}

#[test]
fn a_second_process_on_the_same_directory_is_refused_with_the_holders_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let first = open(tmp.path());
    let err = FsStore::open(tmp.path(), None).err().unwrap();
    match &err {
        StoreError::Locked { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
        other => panic!("{other}"),
    }
    assert!(
        err.to_string()
            .contains(&format!("pid {}", std::process::id()))
    );
    drop(first);
    assert!(FsStore::open(tmp.path(), None).is_ok());
}

#[test]
fn commit_on_a_stale_version_is_a_conflict() {
    let tmp = tempfile::tempdir().unwrap();
    let ring = bootstrap(tmp.path(), None);
    let mut state = ring.state().clone();
    drop(ring);
    let store = open(tmp.path());
    store.load().unwrap();
    state.version += 5;
    assert!(matches!(
        store.commit(&state, &[]),
        Err(StoreError::Conflict { .. })
    ));
}

#[test]
fn damaged_or_future_state_is_refused_with_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    drop(bootstrap(tmp.path(), None));
    let state_path = tmp.path().join("state.json");
    let good = fs::read_to_string(&state_path).unwrap();

    fs::write(&state_path, &good[..good.len() / 2]).unwrap();
    let msg = problems(Keyring::load(Box::new(open(tmp.path()))).err().unwrap());
    assert!(
        msg.contains("state.json") && msg.contains("damaged") || msg.contains("not a jwksd state"),
        "{msg}"
    );

    fs::write(
        &state_path,
        good.replacen("\"format\": 4", "\"format\": 99", 1),
    )
    .unwrap();
    let msg = problems(Keyring::load(Box::new(open(tmp.path()))).err().unwrap());
    assert!(msg.contains("format 99 is not supported"), "{msg}");
}

#[test]
fn swapped_key_file_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let ring = bootstrap(tmp.path(), None);
    let a = ring.state().active(Alg::ES256).unwrap().kid.clone();
    let n = ring.state().next_key(Alg::ES256).unwrap().kid.clone();
    drop(ring);
    let pa = tmp.path().join(format!("{a}.key"));
    let pn = tmp.path().join(format!("{n}.key"));
    let ka = fs::read(&pa).unwrap();
    fs::write(&pa, fs::read(&pn).unwrap()).unwrap();
    fs::write(&pn, ka).unwrap();
    let msg = problems(Keyring::load(Box::new(open(tmp.path()))).err().unwrap());
    assert!(msg.contains("swapped"), "{msg}");
}

#[test]
fn sealed_keys_need_the_right_master_key() {
    let tmp = tempfile::tempdir().unwrap();
    let ring = bootstrap(tmp.path(), Some(MasterKey::from_encoded(MASTER).unwrap()));
    let a = ring.state().active(Alg::ES256).unwrap().kid.clone();
    drop(ring);
    let file = fs::read_to_string(tmp.path().join(format!("{a}.key"))).unwrap();
    assert!(file.contains("jwksd-sealed-v1") && !file.contains("PRIVATE KEY"));

    let (ring, notes) = Keyring::load(Box::new(
        FsStore::open(tmp.path(), Some(MasterKey::from_encoded(MASTER).unwrap())).unwrap(),
    ))
    .unwrap();
    assert!(ring.key(&a).is_some());
    assert!(notes.is_empty(), "{notes:?}");
    drop(ring);

    let msg = problems(Keyring::load(Box::new(open(tmp.path()))).err().unwrap());
    assert!(msg.contains("sealed and no master key"), "{msg}");

    let wrong = MasterKey::from_encoded(&"77".repeat(32)).unwrap();
    let msg = problems(
        Keyring::load(Box::new(FsStore::open(tmp.path(), Some(wrong)).unwrap()))
            .err()
            .unwrap(),
    );
    assert!(msg.contains("master key"), "{msg}");
    // Never regenerated: the same files are still there.
    assert!(tmp.path().join(format!("{a}.key")).exists());
}

#[test]
fn clear_keys_under_a_master_key_are_noted() {
    let tmp = tempfile::tempdir().unwrap();
    drop(bootstrap(tmp.path(), None));
    let (_, notes) = Keyring::load(Box::new(
        FsStore::open(tmp.path(), Some(MasterKey::from_encoded(MASTER).unwrap())).unwrap(),
    ))
    .unwrap();
    assert!(notes.iter().any(|n| n.contains("jwksd rekey")), "{notes:?}");
}

#[test]
fn open_directory_is_tightened_when_empty_and_refused_when_holding_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let (ring, notes) = Keyring::load(Box::new(open(&dir))).unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert!(notes.iter().any(|n| n.contains("755")), "{notes:?}");
    drop(ring);
    drop(bootstrap(&dir, None));
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
    let err = FsStore::open(&dir, None).err().unwrap();
    assert!(err.to_string().contains("chmod 700"), "{err}");
}

#[test]
fn group_readable_key_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ring = bootstrap(tmp.path(), None);
    let a = ring.state().active(Alg::ES256).unwrap().kid.clone();
    drop(ring);
    let p = tmp.path().join(format!("{a}.key"));
    fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
    let msg = problems(Keyring::load(Box::new(open(tmp.path()))).err().unwrap());
    assert!(msg.contains("chmod 600"), "{msg}");
}

#[test]
fn rekey_interrupted_half_way_leaves_every_key_openable_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let old = || MasterKey::from_encoded(MASTER).unwrap();
    let new = || MasterKey::from_encoded(&"5a".repeat(32)).unwrap();
    // Three live keys: active, next and one retiring.
    let mut ring = bootstrap(tmp.path(), Some(old()));
    for s in [10, 20] {
        let p = plan(ring.state(), &policy(), t(s));
        ring.execute(&p.actions, &Fixed(t(s)))
            .into_result()
            .unwrap();
    }
    let kids: Vec<_> = ring.state().keys.iter().map(|k| k.kid.clone()).collect();
    assert_eq!(kids.len(), 3);
    drop(ring);

    // Interrupted after two files.
    let store = FsStore::open(tmp.path(), Some(new()))
        .unwrap()
        .with_previous_master(Some(old()));
    let mut n = 0;
    let r = store
        .rekey(&mut |_| {
            n += 1;
            n <= 2
        })
        .unwrap();
    assert_eq!((r.rewritten, r.complete), (2, false));
    drop(store);
    // Every key opens with the old or the new master key.
    let by_new = kids.iter().filter(|k| {
        let bytes = fs::read(tmp.path().join(format!("{k}.key"))).unwrap();
        let env: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let key = if env["master_key_id"] == new().id() {
            new()
        } else {
            old()
        };
        let alg = if env["alg"] == "ES256" {
            Alg::ES256
        } else {
            Alg::RS256
        };
        key.open(k, alg, &bytes).unwrap();
        env["master_key_id"] == new().id()
    });
    assert_eq!(by_new.count(), 2);
    // Neither key alone opens the store now; both together do.
    assert!(Keyring::load(Box::new(FsStore::open(tmp.path(), Some(new())).unwrap())).is_err());
    let (_, notes) = Keyring::load(Box::new(
        FsStore::open(tmp.path(), Some(new()))
            .unwrap()
            .with_previous_master(Some(old())),
    ))
    .unwrap();
    assert!(
        notes.iter().any(|n| n.contains("previous master key")),
        "{notes:?}"
    );

    // A second run completes; then the new key alone opens everything.
    let store = FsStore::open(tmp.path(), Some(new()))
        .unwrap()
        .with_previous_master(Some(old()));
    let r = store.rekey(&mut |_| true).unwrap();
    assert_eq!((r.rewritten, r.already, r.complete), (1, 2, true));
    drop(store);
    let (ring, notes) =
        Keyring::load(Box::new(FsStore::open(tmp.path(), Some(new())).unwrap())).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(ring.state().keys.len(), 3);
    drop(ring);
    assert!(Keyring::load(Box::new(FsStore::open(tmp.path(), Some(old())).unwrap())).is_err());
}

#[test]
fn rekey_seals_keys_kept_in_the_clear() {
    let tmp = tempfile::tempdir().unwrap();
    drop(bootstrap(tmp.path(), None));
    let mk = || MasterKey::from_encoded(MASTER).unwrap();
    let store = FsStore::open(tmp.path(), Some(mk())).unwrap();
    let r = store.rekey(&mut |_| true).unwrap();
    assert_eq!((r.rewritten, r.complete), (2, true));
    drop(store);
    for e in fs::read_dir(tmp.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "key") {
            let text = fs::read_to_string(&p).unwrap();
            assert!(text.contains("jwksd-sealed-v1") && !text.contains("PRIVATE KEY"));
            assert_eq!(mode(&p), 0o600);
        }
    }
    let (_, notes) =
        Keyring::load(Box::new(FsStore::open(tmp.path(), Some(mk())).unwrap())).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
}

#[test]
fn a_retire_only_step_reports_its_transition() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ring = bootstrap(tmp.path(), None);
    let p = plan(ring.state(), &policy(), t(10));
    ring.execute(&p.actions, &Fixed(t(10)))
        .into_result()
        .unwrap();
    let retiring = ring
        .state()
        .in_state(Alg::ES256, KeyState::Retiring)
        .next()
        .unwrap()
        .kid
        .clone();
    // At t=16 the only action is the retirement: no key is generated.
    let p = plan(ring.state(), &policy(), t(16));
    assert!(
        p.actions.iter().all(|a| !a.is_generate()),
        "{:?}",
        p.actions
    );
    let version = ring.state().version;
    let events = ring
        .execute(&p.actions, &Fixed(t(16)))
        .into_result()
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (&events[0].kid, events[0].to),
        (&retiring, KeyState::Retired)
    );
    assert_eq!(ring.state().version, version + 1);
}

#[test]
fn a_refused_store_is_left_as_it_was_found() {
    let tmp = tempfile::tempdir().unwrap();
    let ring = bootstrap(tmp.path(), None);
    let active = ring.state().active(Alg::ES256).unwrap().kid.clone();
    drop(ring);
    fs::remove_file(tmp.path().join(format!("{active}.key"))).unwrap();
    let tmpfile = tmp.path().join("state.json.tmp");
    fs::write(&tmpfile, b"partial").unwrap();
    let before: Vec<_> = {
        let mut v: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let msg = problems(Keyring::load(Box::new(open(tmp.path()))).err().unwrap());
    assert!(msg.contains("missing"), "{msg}");
    let mut after: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    after.sort();
    assert_eq!(before, after);
    assert!(tmpfile.exists());
}

#[test]
fn a_state_whose_public_key_does_not_match_its_kid_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    drop(bootstrap(tmp.path(), None));
    let path = tmp.path().join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    // Someone puts another public key under an existing kid.
    let other = jwksd::keys::generate(Alg::ES256, 2048).unwrap();
    state["keys"][0]["public"] = serde_json::to_value(&other.public).unwrap();
    fs::write(&path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
    let msg = problems(Keyring::load(Box::new(open(tmp.path()))).err().unwrap());
    assert!(msg.contains("not its thumbprint"), "{msg}");
}

#[test]
fn a_failure_after_the_commit_point_is_not_reported_as_uncommitted() {
    // The rename of a staged key fails after state.json was renamed into
    // place: the commit stands (callers must not discard the key), and the
    // next load completes it.
    let tmp = tempfile::tempdir().unwrap();
    let (mut ring, _) = Keyring::load(Box::new(open(tmp.path()))).unwrap();
    let p = plan(ring.state(), &policy(), t(0));
    let store = ring.store();
    let made = jwksd::keyring::generate_staged(&*store, &p.actions).unwrap();
    // Something in the way of the rename (a non-empty directory).
    let blocker = tmp.path().join(format!("{}.key", made[0].1.kid()));
    fs::create_dir(&blocker).unwrap();
    fs::write(blocker.join("x"), b"x").unwrap();
    let executed = ring.commit_generated(made, &Fixed(t(0)));
    assert!(executed.error.is_none(), "{:?}", executed.error);
    assert_eq!(ring.state().published().count(), 2);
    // Every staged key is still there: none was discarded.
    for k in ring.state().keys.iter() {
        let staged = tmp.path().join(format!("{}.key.pending", k.kid));
        let done = tmp.path().join(format!("{}.key", k.kid));
        assert!(staged.exists() || done.is_file(), "{} lost", k.kid);
    }
    drop(ring);
    drop(store);
    fs::remove_dir_all(&blocker).unwrap();
    let (ring, notes) = Keyring::load(Box::new(open(tmp.path()))).unwrap();
    assert_eq!(ring.state().published().count(), 2);
    assert!(
        notes.iter().any(|n| n.contains("completed the commit")),
        "{notes:?}"
    );
}

#[test]
fn a_closed_staging_gate_stages_nothing() {
    // Shutdown closes the gate: a generation that finishes afterwards
    // writes nothing (the process may be gone before it would finish).
    use jwksd::keyring::{Maker, StagingGate, generate_staged_gated};
    let tmp = tempfile::tempdir().unwrap();
    let (ring, _) = Keyring::load(Box::new(open(tmp.path()))).unwrap();
    let p = plan(ring.state(), &policy(), t(0));
    let store = ring.store();
    let gate = StagingGate::default();
    gate.close();
    let e = generate_staged_gated(&Maker::store(&*store), &p.actions, &gate)
        .err()
        .unwrap();
    assert!(e.to_string().contains("shutting down"), "{e}");
    let staged: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".key.pending") || n.ends_with(".key"))
        .collect();
    assert!(staged.is_empty(), "{staged:?}");
    // Open, it stages as before.
    let made =
        generate_staged_gated(&Maker::store(&*store), &p.actions, &StagingGate::default()).unwrap();
    assert_eq!(made.len(), p.actions.len());
}
