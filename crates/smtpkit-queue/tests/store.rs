//! The file store against a model: random sequences of store operations (enqueue, claim by two
//! owners, finish, hold, release of leases, retry, time passing) keep the store and the model
//! in step. What must hold: a held or leased entry is never claimed, a claim takes every due
//! entry up to its limit, only the lease's owner can record results, an entry whose recipients
//! are all final is gone, and nothing else ever disappears.
//!
//! Two handles on the directory stand for two processes (each has its own in-memory due
//! index): owner 0 works through one, owner 1 and the operator's commands (hold, retry)
//! through the other, so each handle's index must notice what the other changed.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use smtpkit_queue::{
    FileStore, Kind, NewMessage, QueueId, QueueStore, RecipientState, StoreError, Update, from_unix,
};

#[derive(Debug, Clone)]
enum Op {
    Enqueue(usize),
    Claim {
        owner: usize,
        max: usize,
    },
    Finish {
        owner: usize,
        pick: usize,
        states: Vec<u8>,
        delay: u64,
    },
    Hold {
        pick: usize,
        held: bool,
    },
    Release(usize),
    Retry,
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..4).prop_map(Op::Enqueue),
        (0usize..2, 1usize..4).prop_map(|(owner, max)| Op::Claim { owner, max }),
        (
            0usize..2,
            any::<usize>(),
            proptest::collection::vec(0u8..3, 3),
            0u64..100
        )
            .prop_map(|(owner, pick, states, delay)| Op::Finish {
                owner,
                pick,
                states,
                delay
            }),
        (any::<usize>(), any::<bool>()).prop_map(|(pick, held)| Op::Hold { pick, held }),
        (0usize..2).prop_map(Op::Release),
        Just(Op::Retry),
        (0u64..200).prop_map(Op::Wait),
    ]
}

#[derive(Debug, Clone)]
struct Model {
    rcpts: usize,
    held: bool,
    lease: Option<(usize, u64)>,
    next: u64,
}

const OWNERS: [&str; 2] = ["a/1", "b/1"];
const LEASE: u64 = 60;

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_file_store_follows_the_model(ops in proptest::collection::vec(op(), 1..25)) {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let other = FileStore::open(dir.path()).unwrap();
        let stores = [&store, &other];
        let mut model: BTreeMap<QueueId, Model> = BTreeMap::new();
        let mut now = 1_800_000_000u64;
        for op in ops {
            match op {
                Op::Enqueue(n) => {
                    let to: Vec<String> = (0..n).map(|i| format!("r{i}@example.com")).collect();
                    let id = stores[n % 2].enqueue(NewMessage { kind: Kind::Message, sender: Some("s@example.org"), recipients: &to, content: b"x\r\n" }, from_unix(now)).unwrap();
                    model.insert(id, Model { rcpts: n, held: false, lease: None, next: now });
                }
                Op::Claim { owner, max } => {
                    let claimed = stores[owner].claim(OWNERS[owner], from_unix(now), Duration::from_secs(LEASE), max).unwrap();
                    let due: Vec<QueueId> = model.iter().filter(|(_, m)| !m.held && m.next <= now && m.lease.is_none_or(|(_, exp)| exp <= now)).map(|(id, _)| id.clone()).collect();
                    prop_assert_eq!(claimed.len(), due.len().min(max));
                    for e in &claimed {
                        prop_assert!(due.contains(&e.id), "claimed {} which was not due", e.id);
                        prop_assert_eq!(e.lease.as_ref().map(|l| l.owner.as_str()), Some(OWNERS[owner]));
                        model.get_mut(&e.id).unwrap().lease = Some((owner, now + LEASE));
                    }
                }
                Op::Finish { owner, pick, states, delay } => {
                    let Some(id) = model.keys().nth(pick % model.len().max(1)).cloned() else { continue };
                    let m = model[&id].clone();
                    let mut entry = store.show(&id).unwrap();
                    for (r, s) in entry.recipients.iter_mut().zip(states.iter().cycle()) {
                        r.state = [RecipientState::Pending, RecipientState::Delivered, RecipientState::Failed][*s as usize];
                    }
                    let done = entry.recipients.iter().all(|r| r.state != RecipientState::Pending);
                    let update = Update { id: id.clone(), recipients: entry.recipients, attempts: 1, next_attempt: now + delay, delay_notified: false };
                    let result = stores[owner].finish(OWNERS[owner], &update);
                    // The lease on disk is the last claim's, lapsed or not: only its owner records.
                    if m.lease.is_some_and(|(o, _)| o == owner) {
                        prop_assert!(result.is_ok(), "{:?}", result);
                        if done {
                            model.remove(&id);
                        } else {
                            let m = model.get_mut(&id).unwrap();
                            m.lease = None;
                            m.next = now + delay;
                        }
                    } else {
                        prop_assert!(matches!(result, Err(StoreError::LeaseLost(_))), "{:?}", result);
                    }
                }
                Op::Hold { pick, held } => {
                    let Some(id) = model.keys().nth(pick % model.len().max(1)).cloned() else { continue };
                    other.set_held(&id, held).unwrap();
                    model.get_mut(&id).unwrap().held = held;
                }
                Op::Release(owner) => {
                    let prefix = &OWNERS[owner][..2];
                    let n = stores[owner].release_leases(prefix).unwrap();
                    let mut expected = 0;
                    for m in model.values_mut() {
                        if m.lease.is_some_and(|(o, _)| o == owner) {
                            m.lease = None;
                            expected += 1;
                        }
                    }
                    prop_assert_eq!(n, expected);
                }
                Op::Retry => {
                    other.retry(None, from_unix(now)).unwrap();
                    for m in model.values_mut().filter(|m| !m.held) {
                        m.next = m.next.min(now);
                    }
                }
                Op::Wait(secs) => now += secs,
            }
            let listed: Vec<QueueId> = store.list().unwrap().into_iter().map(|e| e.id).collect();
            let mut listed_sorted = listed.clone();
            listed_sorted.sort();
            prop_assert_eq!(listed_sorted, model.keys().cloned().collect::<Vec<_>>());
            for (id, m) in &model {
                let e = store.show(id).unwrap();
                prop_assert_eq!(e.recipients.len(), m.rcpts);
                prop_assert_eq!(e.held, m.held);
            }
        }
    }
}
