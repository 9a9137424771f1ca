//! The runner over a real [`FileStore`] with a scripted transport and time passed in.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smtpkit_queue::{
    Attempt, FileStore, Kind, NewMessage, Outcome, Owner, Policy, QueueStore, Runner, Transport,
    from_unix,
};

/// One attempt as the transport saw it: domain, sender, recipients, content.
type Sent = (String, Option<String>, Vec<String>, Vec<u8>);

/// Answers by domain from a table the test changes; records what it was given.
#[derive(Default)]
struct Script {
    answers: Mutex<HashMap<String, Outcome>>,
    sent: Mutex<Vec<Sent>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Script {
    fn answer(&self, domain: &str, outcome: Outcome) {
        self.answers
            .lock()
            .unwrap()
            .insert(domain.to_owned(), outcome);
    }

    fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap().clone()
    }
}

impl Transport for Script {
    async fn deliver(&self, a: Attempt<'_>) -> Vec<Outcome> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        // Give other deliveries the chance to run alongside (bounded, no sleeping).
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let outcome = self
            .answers
            .lock()
            .unwrap()
            .get(a.domain)
            .cloned()
            .unwrap_or(Outcome::Delivered {
                reply: "250 2.0.0 Ok".into(),
                remote: Some(format!("mx.{}", a.domain)),
            });
        self.sent.lock().unwrap().push((
            a.domain.to_owned(),
            a.sender.map(str::to_owned),
            a.recipients.to_vec(),
            a.content.to_vec(),
        ));
        vec![outcome; a.recipients.len()]
    }
}

const T0: u64 = 1_800_000_000;

fn setup(policy: Policy) -> (tempfile::TempDir, Arc<Script>, Runner<FileStore, Script>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::open(dir.path()).unwrap());
    let script = Arc::new(Script::default());
    let runner = Runner::new(
        store,
        Arc::clone(&script),
        policy,
        Owner::new("a"),
        "mx.example.org",
    )
    .with_seed(1);
    (dir, script, runner)
}

fn enqueue(
    runner: &Runner<FileStore, Script>,
    sender: Option<&str>,
    to: &[&str],
    at: u64,
) -> smtpkit_queue::QueueId {
    let to: Vec<String> = to.iter().map(|s| (*s).to_owned()).collect();
    runner
        .store()
        .enqueue(
            NewMessage {
                kind: Kind::Message,
                sender,
                recipients: &to,
                content: b"From: alice@example.org\r\nSubject: test\r\n\r\nbody\r\n",
            },
            from_unix(at),
        )
        .unwrap()
}

fn temporary() -> Outcome {
    Outcome::Temporary {
        reply: "451 4.3.0 try later".into(),
        remote: Some("mx.down.test".into()),
    }
}

fn permanent() -> Outcome {
    Outcome::Permanent {
        reply: "550 5.1.1 no such user".into(),
        remote: Some("mx.bad.test".into()),
    }
}

#[tokio::test]
async fn delivered_messages_leave_the_queue_one_attempt_per_domain() {
    let (_dir, script, runner) = setup(Policy::default());
    enqueue(
        &runner,
        Some("alice@example.org"),
        &["b@one.test", "c@one.test", "d@two.test"],
        T0,
    );
    let round = runner.run_once(from_unix(T0)).await.unwrap();
    assert_eq!((round.claimed, round.delivered), (1, 3));
    let mut sent: Vec<_> = script.sent().into_iter().map(|s| (s.0, s.2)).collect();
    sent.sort();
    assert_eq!(
        sent,
        [
            (
                "one.test".to_owned(),
                vec!["b@one.test".to_owned(), "c@one.test".to_owned()]
            ),
            ("two.test".to_owned(), vec!["d@two.test".to_owned()])
        ]
    );
    assert!(runner.store().list().unwrap().is_empty());
    assert_eq!(
        runner
            .run_once(from_unix(T0 + 10_000))
            .await
            .unwrap()
            .claimed,
        0
    );
}

#[tokio::test]
async fn a_deferred_message_waits_for_its_backoff_then_goes() {
    let (_dir, script, runner) = setup(Policy::default());
    script.answer("down.test", temporary());
    let id = enqueue(&runner, Some("alice@example.org"), &["b@down.test"], T0);
    let round = runner.run_once(from_unix(T0)).await.unwrap();
    assert_eq!(round.deferred, 1);
    let entry = runner.store().show(&id).unwrap();
    assert_eq!(entry.attempts, 1);
    assert!(entry.lease.is_none());
    assert_eq!(
        entry.recipients[0].last_reply.as_deref(),
        Some("451 4.3.0 try later")
    );
    // Between 240 and 360 s later (300 s with 20% jitter).
    assert!(
        (T0 + 240..=T0 + 360).contains(&entry.next_attempt),
        "{}",
        entry.next_attempt
    );
    assert_eq!(
        runner.run_once(from_unix(T0 + 200)).await.unwrap().claimed,
        0
    );
    script.answer(
        "down.test",
        Outcome::Delivered {
            reply: "250 ok".into(),
            remote: None,
        },
    );
    let round = runner
        .run_once(from_unix(entry.next_attempt))
        .await
        .unwrap();
    assert_eq!(round.delivered, 1);
    assert!(runner.store().list().unwrap().is_empty());
}

#[tokio::test]
async fn a_refusal_bounces_to_the_sender_with_a_dsn_and_the_bounce_is_delivered() {
    let (_dir, script, runner) = setup(Policy::default());
    script.answer("bad.test", permanent());
    enqueue(
        &runner,
        Some("alice@example.org"),
        &["x@bad.test", "ok@good.test"],
        T0,
    );
    let round = runner.run_once(from_unix(T0)).await.unwrap();
    assert_eq!((round.delivered, round.failed, round.notices), (1, 1, 1));
    let queue = runner.store().list().unwrap();
    assert_eq!(queue.len(), 1);
    let notice = &queue[0];
    assert_eq!(notice.kind, Kind::Notice);
    assert_eq!(notice.sender, None);
    assert_eq!(notice.recipients[0].address, "alice@example.org");
    let content = String::from_utf8(runner.store().content(&notice.id).unwrap()).unwrap();
    assert!(
        content
            .contains("Final-Recipient: rfc822; x@bad.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"),
        "{content}"
    );
    assert!(!content.contains("ok@good.test"), "{content}");
    // The notice goes out with the null sender.
    let round = runner.run_once(from_unix(T0 + 1)).await.unwrap();
    assert_eq!(round.delivered, 1);
    let last = script.sent().pop().unwrap();
    assert_eq!((last.0.as_str(), last.1), ("example.org", None));
    assert!(runner.store().list().unwrap().is_empty());
}

#[tokio::test]
async fn nothing_goes_to_the_null_sender_and_a_failed_notice_is_dropped() {
    let (_dir, script, runner) = setup(Policy::default());
    script.answer("bad.test", permanent());
    enqueue(&runner, None, &["x@bad.test"], T0);
    let round = runner.run_once(from_unix(T0)).await.unwrap();
    assert_eq!((round.failed, round.notices), (1, 0));
    assert!(runner.store().list().unwrap().is_empty());
    // A bounce whose own delivery fails: dropped, no bounce of the bounce.
    script.answer("example.org", permanent());
    enqueue(&runner, Some("alice@example.org"), &["y@bad.test"], T0);
    let round = runner.run_once(from_unix(T0)).await.unwrap();
    assert_eq!(round.notices, 1);
    let round = runner.run_once(from_unix(T0 + 1)).await.unwrap();
    assert_eq!(
        (round.failed, round.notices, round.dropped_notices),
        (1, 0, 1)
    );
    assert!(runner.store().list().unwrap().is_empty());
}

#[tokio::test]
async fn expiry_bounces_and_the_delay_notice_goes_once() {
    let policy = Policy {
        delay_notice: 3600,
        expiry: 86_400,
        ..Policy::default()
    };
    let (_dir, script, runner) = setup(policy);
    script.answer("down.test", temporary());
    let id = enqueue(&runner, Some("alice@example.org"), &["b@down.test"], T0);
    assert_eq!(runner.run_once(from_unix(T0)).await.unwrap().notices, 0);
    // Past the delay-notice time: one notice.
    let round = runner.run_once(from_unix(T0 + 4000)).await.unwrap();
    assert_eq!(round.notices, 1);
    assert!(runner.store().show(&id).unwrap().delay_notified);
    let delayed = runner
        .store()
        .list()
        .unwrap()
        .into_iter()
        .find(|e| e.kind == Kind::Notice)
        .unwrap();
    let text = String::from_utf8(runner.store().content(&delayed.id).unwrap()).unwrap();
    assert!(
        text.contains("Action: delayed\r\nStatus: 4.3.0\r\n"),
        "{text}"
    );
    assert!(text.contains("Will-Retry-Until: "), "{text}");
    runner.store().delete(&delayed.id).unwrap();
    // Later attempts: no second delay notice.
    let round = runner.run_once(from_unix(T0 + 20_000)).await.unwrap();
    assert_eq!((round.claimed, round.notices), (1, 0));
    // Past expiry: a bounce, and the message is gone.
    let round = runner.run_once(from_unix(T0 + 86_400)).await.unwrap();
    assert_eq!((round.failed, round.notices), (1, 1));
    let left = runner.store().list().unwrap();
    assert_eq!(left.len(), 1);
    let text = String::from_utf8(runner.store().content(&left[0].id).unwrap()).unwrap();
    assert!(text.contains("Action: failed"), "{text}");
    assert!(text.contains("expired"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_to_one_domain_stay_within_its_limit() {
    let policy = Policy {
        per_domain: 2,
        ..Policy::default()
    };
    let (_dir, script, runner) = setup(policy);
    for i in 0..12 {
        enqueue(
            &runner,
            Some("alice@example.org"),
            &[&format!("u{i}@busy.test")],
            T0,
        );
    }
    let round = runner.run_once(from_unix(T0)).await.unwrap();
    assert_eq!(round.delivered, 12);
    let max = script.max_in_flight.load(Ordering::SeqCst);
    assert!((1..=2).contains(&max), "{max} at once");
}

#[tokio::test]
async fn held_messages_wait_and_a_dead_owners_lease_is_released_on_restart() {
    let (dir, _script, runner) = setup(Policy::default());
    let held = enqueue(&runner, Some("alice@example.org"), &["b@one.test"], T0);
    runner.store().set_held(&held, true).unwrap();
    assert_eq!(runner.run_once(from_unix(T0)).await.unwrap().claimed, 0);
    runner.store().set_held(&held, false).unwrap();
    // An earlier run of instance "a" claimed it and died.
    let claimed = runner
        .store()
        .claim("a/dead", from_unix(T0), Duration::from_secs(1800), 10)
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(runner.run_once(from_unix(T0 + 1)).await.unwrap().claimed, 0);
    // Another instance's lease is not ours to release.
    let store = Arc::new(FileStore::open(dir.path()).unwrap());
    let other = Runner::new(
        Arc::clone(&store),
        Arc::new(Script::default()),
        Policy::default(),
        Owner::new("b"),
        "x",
    );
    assert_eq!(other.recover().await.unwrap(), 0);
    assert_eq!(runner.recover().await.unwrap(), 1);
    assert_eq!(
        runner.run_once(from_unix(T0 + 2)).await.unwrap().delivered,
        1
    );
    // The dead owner's late result is not recorded.
    assert!(store.list().unwrap().is_empty());
}
