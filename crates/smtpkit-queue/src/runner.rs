//! The queue runner: claims due messages, delivers them through a [`Transport`] with a
//! per-domain concurrency limit, records the outcomes and queues notices to senders.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::dsn::{self, Action, Notice};
use crate::entry::{Entry, Kind, NewMessage, RecipientState, from_unix};
use crate::schedule::{Outcome, Plan, Policy, plan};
use crate::store::{QueueStore, StoreError};
use crate::transport::{Attempt, Transport};

/// Who holds a lease: `<instance>/<random nonce>`. The instance name is stable across
/// restarts (the host name, or a configured name per front end); the nonce is new each time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    instance: String,
    full: String,
}

impl Owner {
    /// An owner for this run of `instance`.
    #[must_use]
    pub fn new(instance: &str) -> Self {
        Self {
            instance: instance.to_owned(),
            full: format!("{instance}/{:016x}", fastrand::u64(..)),
        }
    }

    /// The lease owner string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// What every lease of any run of this instance starts with.
    #[must_use]
    pub fn instance_prefix(&self) -> String {
        format!("{}/", self.instance)
    }
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// Messages claimed.
    pub claimed: usize,
    /// Recipients delivered.
    pub delivered: usize,
    /// Recipients deferred (still pending).
    pub deferred: usize,
    /// Recipients failed for good.
    pub failed: usize,
    /// Notices queued (bounces and delay notices).
    pub notices: usize,
    /// Notices dropped because they could not be delivered.
    pub dropped_notices: usize,
}

/// Messages claimed per round: enough to keep every domain's slots busy.
pub const BATCH: usize = 256;

/// How often an idle runner looks for due messages (a new message wakes it at once).
pub const POLL: Duration = Duration::from_secs(5);

/// The queue runner.
#[derive(Debug)]
pub struct Runner<S, T> {
    shared: Arc<Shared<S>>,
    store: Arc<S>,
    transport: Arc<T>,
    policy: Policy,
    owner: Owner,
    domains: Mutex<HashMap<String, Arc<Semaphore>>>,
    rng: Mutex<fastrand::Rng>,
    wake: Arc<Notify>,
}

impl<S: QueueStore, T: Transport> Runner<S, T> {
    /// A runner delivering `store`'s messages through `transport` as `owner`; notices come from
    /// `MAILER-DAEMON@hostname`.
    pub fn new(
        store: Arc<S>,
        transport: Arc<T>,
        policy: Policy,
        owner: Owner,
        hostname: &str,
    ) -> Self {
        let wake = Arc::new(Notify::new());
        Self {
            shared: Arc::new(Shared {
                store: Arc::clone(&store),
                wake: Arc::clone(&wake),
                policy: policy.clone(),
                owner: owner.as_str().to_owned(),
                hostname: hostname.to_owned(),
            }),
            store,
            transport,
            policy,
            owner,
            domains: Mutex::new(HashMap::new()),
            rng: Mutex::new(fastrand::Rng::new()),
            wake,
        }
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// Seeds the jitter, for tests that check exact times.
    #[must_use]
    pub fn with_seed(self, seed: u64) -> Self {
        *self
            .rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fastrand::Rng::with_seed(seed);
        self
    }

    /// Wakes the runner (a message was queued).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// What wakes the runner, for whoever queues messages (a receiver on another task).
    #[must_use]
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Releases the leases an earlier run of this instance left (it died delivering): call
    /// once at start.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let store = Arc::clone(&self.store);
        let prefix = self.owner.instance_prefix();
        blocking(move || store.release_leases(&prefix)).await
    }

    /// Runs rounds until `shutdown` completes: a round at once when woken or when the last
    /// round was full, otherwise every [`POLL`].
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let full = match self.run_once(SystemTime::now()).await {
                Ok(round) => round.claimed >= BATCH,
                Err(e) => {
                    warn!(error = %e, "queue round failed");
                    false
                }
            };
            if full {
                continue;
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    fn domain_slots(&self, domain: &str) -> Arc<Semaphore> {
        let mut domains = self
            .domains
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(
            domains
                .entry(domain.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.policy.per_domain.max(1)))),
        )
    }

    fn sample(&self) -> f64 {
        self.rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .f64()
    }

    /// One round at `now`: claim what is due, deliver it, record the outcomes.
    pub async fn run_once(&self, now: SystemTime) -> Result<Round, StoreError> {
        let store = Arc::clone(&self.store);
        let owner = self.owner.as_str().to_owned();
        let lease = Duration::from_secs(self.policy.lease);
        let entries = blocking(move || store.claim(&owner, now, lease, BATCH)).await?;
        let mut round = Round {
            claimed: entries.len(),
            ..Round::default()
        };
        let mut attempts = JoinSet::new();
        for entry in entries {
            let store = Arc::clone(&self.store);
            let id = entry.id.clone();
            let content = match blocking(move || store.content(&id)).await {
                Ok(c) => Arc::new(c),
                Err(e) => {
                    warn!(id = %entry.id, error = %e, "queued message unreadable; left for the operator");
                    continue;
                }
            };
            let mut by_domain: HashMap<String, Vec<usize>> = HashMap::new();
            for (i, r) in entry.recipients.iter().enumerate() {
                if r.state == RecipientState::Pending {
                    by_domain.entry(r.domain()).or_default().push(i);
                }
            }
            let message = Arc::new(InFlight {
                entry,
                content,
                sample: self.sample(),
                progress: Mutex::new((by_domain.len(), Vec::new())),
            });
            for (domain, indexes) in by_domain {
                let slots = self.domain_slots(&domain);
                let transport = Arc::clone(&self.transport);
                let shared = Arc::clone(&self.shared);
                let message = Arc::clone(&message);
                attempts.spawn(async move {
                    // The slot is held until the attempt is recorded: what a crash can make us
                    // repeat is bounded by the per-domain limit.
                    let _slot = slots.acquire_owned().await;
                    let recipients: Vec<String> = indexes
                        .iter()
                        .map(|&i| message.entry.recipients[i].address.clone())
                        .collect();
                    let outcomes = transport
                        .deliver(Attempt {
                            domain: &domain,
                            sender: message.entry.sender.as_deref(),
                            recipients: &recipients,
                            content: &message.content,
                        })
                        .await;
                    let mut results: Vec<(usize, Outcome)> =
                        indexes.iter().copied().zip(outcomes).collect();
                    // A transport that answered for fewer recipients: the rest try again.
                    for &i in &indexes[results.len()..] {
                        results.push((
                            i,
                            Outcome::Temporary {
                                reply: "no result from the transport".to_owned(),
                                remote: None,
                            },
                        ));
                    }
                    // The last domain of a message to finish records the whole message.
                    let all = {
                        let mut progress = message
                            .progress
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        progress.0 -= 1;
                        progress.1.extend(results);
                        (progress.0 == 0).then(|| std::mem::take(&mut progress.1))
                    };
                    let mut round = Round::default();
                    if let Some(all) = all {
                        shared.record(&message, &all, now, &mut round).await;
                    }
                    round
                });
            }
        }
        while let Some(joined) = attempts.join_next().await {
            match joined {
                Ok(part) => round.add(&part),
                // A panicking transport: the message's lease lapses and it is tried again.
                Err(e) => warn!(error = %e, "delivery task failed"),
            }
        }
        Ok(round)
    }
}

/// What recording an attempt needs, shared by the delivery tasks.
#[derive(Debug)]
struct Shared<S> {
    store: Arc<S>,
    /// The runner's wake-up: a queued notice goes out in the next round, not after a poll.
    wake: Arc<Notify>,
    policy: Policy,
    owner: String,
    hostname: String,
}

/// A claimed message being delivered: its domains report into `progress` (domains left,
/// outcomes so far).
#[derive(Debug)]
struct InFlight {
    entry: Entry,
    content: Arc<Vec<u8>>,
    sample: f64,
    progress: Mutex<(usize, Vec<(usize, Outcome)>)>,
}

impl Round {
    fn add(&mut self, other: &Self) {
        self.delivered += other.delivered;
        self.deferred += other.deferred;
        self.failed += other.failed;
        self.notices += other.notices;
        self.dropped_notices += other.dropped_notices;
    }
}

impl<S: QueueStore> Shared<S> {
    /// Plans the next step of one message from its attempt, queues its notices and records it.
    async fn record(
        &self,
        message: &InFlight,
        results: &[(usize, Outcome)],
        now: SystemTime,
        round: &mut Round,
    ) {
        let entry = &message.entry;
        let content = &message.content[..];
        let plan = plan(entry, results, now, &self.policy, message.sample);
        self.account(entry, results, &plan, round);
        self.notify(entry, &plan, content, now, round).await;
        let store = Arc::clone(&self.store);
        let owner = self.owner.clone();
        let update = plan.update;
        if let Err(e) = blocking(move || store.finish(&owner, &update)).await {
            warn!(id = %entry.id, error = %e, "could not record a delivery attempt; it will be repeated");
        }
    }

    fn account(&self, entry: &Entry, results: &[(usize, Outcome)], plan: &Plan, round: &mut Round) {
        for (i, outcome) in results {
            let address = entry.recipients.get(*i).map_or("", |r| r.address.as_str());
            match outcome {
                Outcome::Delivered { reply, remote } => {
                    round.delivered += 1;
                    info!(id = %entry.id, to = address, relay = remote.as_deref().unwrap_or(""), reply = reply.as_str(), outcome = "sent", "delivery");
                }
                Outcome::Temporary { reply, remote } => {
                    round.deferred += 1;
                    info!(id = %entry.id, to = address, relay = remote.as_deref().unwrap_or(""), reply = reply.as_str(), outcome = "deferred", "delivery");
                }
                Outcome::Permanent { reply, remote } => {
                    info!(id = %entry.id, to = address, relay = remote.as_deref().unwrap_or(""), reply = reply.as_str(), outcome = "bounced", "delivery");
                }
            }
        }
        round.failed += plan.failed.len();
    }

    /// Queues the bounce and the delay notice a plan calls for. Queued before the attempt is
    /// recorded: a crash in between repeats a notice rather than losing it.
    async fn notify(
        &self,
        entry: &Entry,
        plan: &Plan,
        content: &[u8],
        now: SystemTime,
        round: &mut Round,
    ) {
        if !plan.notify {
            if !plan.failed.is_empty() {
                if entry.kind == Kind::Notice {
                    round.dropped_notices += 1;
                    warn!(id = %entry.id, to = entry.recipients.first().map_or("", |r| r.address.as_str()), "dropping a delivery notice that could not be delivered");
                } else {
                    info!(id = %entry.id, "not notifying the null sender of a failure");
                }
            }
            return;
        }
        let retry_until = from_unix(entry.created.saturating_add(self.policy.expiry));
        for (recipients, action) in [
            (&plan.failed, Action::Failed),
            (&plan.delayed, Action::Delayed),
        ] {
            if recipients.is_empty() {
                continue;
            }
            let notice = dsn::build(&Notice {
                reporting_mta: &self.hostname,
                entry,
                recipients: recipients.as_slice(),
                action,
                original: content,
                now,
                retry_until,
            });
            let Some(sender) = entry.sender.clone() else {
                return;
            };
            let store = Arc::clone(&self.store);
            let queued = blocking(move || {
                store.enqueue(
                    NewMessage {
                        kind: Kind::Notice,
                        sender: None,
                        recipients: &[sender],
                        content: &notice,
                    },
                    now,
                )
            })
            .await;
            match queued {
                Ok(id) => {
                    round.notices += 1;
                    self.wake.notify_one();
                    info!(id = %entry.id, notice = %id, action = ?action, "delivery notice queued");
                }
                Err(e) => warn!(id = %entry.id, error = %e, "could not queue a delivery notice"),
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?
}
