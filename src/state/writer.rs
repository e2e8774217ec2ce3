//! Shell layer: the writer thread — the one owner of the [`Store`].
//!
//! The event loop hands it batches of [`Persist`] events ([`Writer::submit`]) and never waits
//! for them; the thread applies everything that has queued up as one transaction, in order,
//! and reports each result back, waking the loop through `notify` (the reactor's `Waker`).
//! When the store is unreachable ([`Store::retry_later`]: a shared database down), the
//! changes are held, coalesced to the latest per row, and tried again with a growing pause
//! (up to [`MAX_PAUSE`]) until the store is back; past `queue_limit` rows the newest rows'
//! changes are given up, counted in [`StoreStatus::lost`]. [`Writer::finish`] closes the queue
//! and waits until every batch is written (or, with the store unreachable, tried once more):
//! durable writes finish before the process exits. A store shared with other processes
//! ([`Store::shared_refresh`]) is read back when the thread is idle at that interval — all of
//! it the first time, then what changed since the previous read ([`Store::load_changed`]) —
//! and the state handed to the loop ([`Writer::take_shared`]; reads not taken yet add up).
//!
//! Leases (a shared store only): the loop queues [`Lease`] claims and releases
//! ([`Writer::lease`]); the thread runs a lease round at once when a claim comes, and every
//! [`LEASE_TICK`] renews every lease it holds. A claim refused for [`LEASE_PATIENCE`] (of
//! time, however many rounds other claims brought meanwhile), or a lease found taken on
//! renewal, is reported lost; a held user another process asked for is reported wanted
//! ([`Writer::take_lease_news`]). Each piece of news names the claim it answers (the core tells
//! an earlier session's news from the current one's). While the store is unreachable no round
//! decides anything: held stays held, pending stays pending, and the time it was away does not
//! count in a refused claim's patience (the holder could not renew or see it wanted either).

use super::{Changed, Lease, LeaseNews, Persist, Store, StoreStatus};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The first pause before trying an unreachable store again, and the longest.
pub const MIN_PAUSE: Duration = Duration::from_millis(250);
pub const MAX_PAUSE: Duration = Duration::from_secs(4);

/// How often held leases are renewed (well inside their time to live in the store).
pub const LEASE_TICK: Duration = Duration::from_secs(1);

/// How long a claim is refused, the store answering, before it is given up: longer than a
/// lease lives unrenewed (a holder that stopped renewing has expired by then) and than a
/// [`LEASE_TICK`] (a holder whose user's glasses left it sees the user wanted and lets go).
/// Time, not rounds: every claim brings a round, and a burst of sessions starting must not
/// use up a refused claim's patience.
pub const LEASE_PATIENCE: Duration = Duration::from_secs(7);

/// What the loop hands the thread.
enum Msg {
    Batch(Vec<Persist>),
    Lease(Vec<Lease>),
}

/// The thread's view of this process's leases: each user with the claim ([`Lease::Claim`]'s
/// `claim`) that asked for them, echoed in the news.
#[derive(Default)]
struct Leases {
    /// User → the claim that got the lease.
    held: BTreeMap<String, u32>,
    /// Claimed, not granted yet: user → (the claim, refused since).
    pending: HashMap<String, (u32, Option<Instant>)>,
    release: Vec<String>,
    /// A claim or a release came since the last round.
    asked: bool,
    /// Since when the rounds have failed, if they do (the first failure is logged, once).
    away_since: Option<Instant>,
}

impl Leases {
    fn take(&mut self, ops: Vec<Lease>) {
        for op in ops {
            match op {
                Lease::Claim { user, claim } => {
                    self.release.retain(|r| *r != user);
                    match self.held.get_mut(&user) {
                        Some(c) => *c = claim,
                        None => {
                            self.pending.insert(user, (claim, None));
                            self.asked = true;
                        }
                    }
                }
                Lease::Release(u) => {
                    self.held.remove(&u);
                    self.pending.remove(&u);
                    self.release.push(u);
                    // Let go at once: another process may be waiting for the user.
                    self.asked = true;
                }
            }
        }
    }

    fn idle(&self) -> bool {
        self.held.is_empty() && self.pending.is_empty() && self.release.is_empty()
    }

    /// One round against `store` at `now`: what to tell the loop (`None` when the store is
    /// away).
    fn round(&mut self, store: &mut dyn Store, now: Instant) -> Option<LeaseNews> {
        self.asked = false;
        let mut claim: Vec<String> = self.pending.keys().cloned().collect();
        claim.sort();
        let renew: Vec<String> = self.held.keys().cloned().collect();
        let answer = match store.lease(&claim, &renew, &self.release) {
            Ok(a) => a,
            Err(e) => {
                if self.away_since.is_none() {
                    log::warn!("leases: the store did not answer ({e}); leases kept as they were");
                }
                self.away_since.get_or_insert(now);
                return None;
            }
        };
        // The store back: the time it was away is not counted in any claim's patience.
        if let Some(away) = self.away_since.take() {
            let gap = now.saturating_duration_since(away);
            for since in self.pending.values_mut().filter_map(|(_, s)| s.as_mut()) {
                *since += gap;
            }
        }
        self.release.clear();
        let now_held: BTreeSet<String> = answer.held.into_iter().collect();
        let mut news = LeaseNews::default();
        for u in renew {
            if !now_held.contains(&u) {
                if let Some(c) = self.held.remove(&u) {
                    news.lost.push((u, c));
                }
            }
        }
        for u in claim {
            let Some((c, since)) = self.pending.get_mut(&u) else {
                continue;
            };
            let c = *c;
            if now_held.contains(&u) {
                self.pending.remove(&u);
                self.held.insert(u, c);
            } else if now.saturating_duration_since(*since.get_or_insert(now)) >= LEASE_PATIENCE {
                self.pending.remove(&u);
                news.lost.push((u, c));
            }
        }
        // Held in the store and not wanted here (a release that did not get through).
        for u in now_held {
            if !self.held.contains_key(&u) {
                self.release.push(u);
            }
        }
        news.wanted = answer
            .wanted
            .into_iter()
            .filter_map(|u| self.held.get(&u).map(|&c| (u, c)))
            .collect();
        Some(news)
    }
}

/// What the thread reports after each attempt.
struct Report {
    /// Changes written (0 when the attempt failed).
    written: usize,
    result: Result<(), String>,
    /// Changes held for a later attempt.
    queued: usize,
    /// Changes given up in this attempt.
    lost: u64,
}

/// What the thread tells the loop: an attempt's report, or a shared store's state read back.
enum Told {
    Report(Report),
    Shared(Box<Changed>),
    Lease(LeaseNews),
}

impl Report {
    /// A read of the store, nothing written.
    fn read(result: Result<(), String>) -> Report {
        Report {
            written: 0,
            result,
            queued: 0,
            lost: 0,
        }
    }
}

pub struct Writer {
    tx: Option<mpsc::Sender<Msg>>,
    results: mpsc::Receiver<Told>,
    thread: Option<JoinHandle<()>>,
    status: StoreStatus,
    /// The shared state read back, not taken yet.
    shared: Option<Changed>,
    /// Lease news not taken yet.
    lease_news: LeaseNews,
}

/// The row a change writes: later changes of the same row replace earlier ones.
fn row(p: &Persist) -> (u8, &str, &str, &str) {
    match p {
        Persist::Running { user, package, .. } => (0, user, package, ""),
        Persist::Setting {
            user, package, key, ..
        } => (1, user, package, key),
        Persist::Storage {
            user, package, key, ..
        } => (2, user, package, key),
        Persist::Registration(r) => (3, &r.id, "", ""),
        Persist::RegistrationGone(id) => (3, id, "", ""),
        Persist::Device(d) => (4, &d.name, "", ""),
        Persist::Follow { user, .. } => (5, user, "", ""),
    }
}

/// The latest change of each row, in the order the rows were first changed.
fn coalesce(changes: Vec<Persist>) -> Vec<Persist> {
    let mut at: HashMap<(u8, String, String, String), usize> = HashMap::new();
    let mut out: Vec<Persist> = Vec::with_capacity(changes.len());
    for p in changes {
        let (t, a, b, c) = row(&p);
        let k = (t, a.to_string(), b.to_string(), c.to_string());
        match at.get(&k) {
            Some(&i) => out[i] = p,
            None => {
                at.insert(k, out.len());
                out.push(p);
            }
        }
    }
    out
}

impl Writer {
    /// Start the thread; `notify` is called after each attempt (written, failed or held).
    /// While the store is unreachable at most `queue_limit` rows' changes are held.
    pub fn start(
        mut store: Box<dyn Store>,
        status: StoreStatus,
        queue_limit: usize,
        notify: Box<dyn Fn() + Send>,
    ) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let (tell, results) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || {
                let mut held: Vec<Persist> = Vec::new();
                let mut pause = MIN_PAUSE;
                let refresh = store.shared_refresh();
                let mut next_refresh = refresh.map(|r| Instant::now() + r);
                let mut leases = Leases::default();
                let mut next_lease = Instant::now() + LEASE_TICK;
                // The store's time of the last read-back: the next takes what changed since.
                let mut since: Option<String> = None;
                loop {
                    let mut closing = false;
                    let lease_at = (refresh.is_some() && !leases.idle()).then_some(next_lease);
                    let tick = match (next_refresh, lease_at) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    let wait = match (held.is_empty(), tick) {
                        (false, _) => Some(pause),
                        (true, Some(at)) => Some(at.saturating_duration_since(Instant::now())),
                        (true, None) => None,
                    };
                    let first = match wait {
                        None => match rx.recv() {
                            Ok(b) => Some(b),
                            Err(_) => return,
                        },
                        Some(wait) => match rx.recv_timeout(wait) {
                            Ok(b) => Some(b),
                            Err(mpsc::RecvTimeoutError::Timeout) => None,
                            Err(mpsc::RecvTimeoutError::Disconnected) => {
                                if held.is_empty() {
                                    return;
                                }
                                closing = true;
                                None
                            }
                        },
                    };
                    let mut batch = std::mem::take(&mut held);
                    for msg in first.into_iter().chain(std::iter::from_fn(|| rx.try_recv().ok())) {
                        match msg {
                            Msg::Batch(b) => batch.extend(b),
                            Msg::Lease(ops) if refresh.is_some() => leases.take(ops),
                            Msg::Lease(_) => {}
                        }
                    }
                    if !batch.is_empty() {
                        let n = batch.len();
                        let result = store.apply(&batch);
                        let mut lost = 0;
                        match &result {
                            Ok(()) => pause = MIN_PAUSE,
                            Err(e) if store.retry_later() && !closing => {
                                held = coalesce(batch);
                                if held.len() > queue_limit {
                                    lost = (held.len() - queue_limit) as u64;
                                    held.truncate(queue_limit);
                                }
                                if lost > 0 {
                                    log::error!("durable state: the store is unreachable ({e}); {lost} change(s) past the queue's bound of {queue_limit} given up");
                                } else if pause == MIN_PAUSE {
                                    log::warn!("durable state: the store is unreachable ({e}); holding {} change(s)", held.len());
                                }
                                pause = (pause * 2).min(MAX_PAUSE);
                            }
                            Err(e) => {
                                if store.retry_later() {
                                    lost = n as u64;
                                }
                                log::error!("durable state: a batch of {n} changes failed: {e}");
                            }
                        }
                        let report = Report {
                            written: if result.is_ok() { n } else { 0 },
                            result,
                            queued: held.len(),
                            lost,
                        };
                        if tell.send(Told::Report(report)).is_err() {
                            return;
                        }
                        notify();
                    }
                    let lease_due = lease_at.is_some_and(|at| Instant::now() >= at);
                    if !closing && (leases.asked || lease_due) {
                        next_lease = Instant::now() + LEASE_TICK;
                        if let Some(news) = leases.round(store.as_mut(), Instant::now()) {
                            if !news.lost.is_empty() || !news.wanted.is_empty() {
                                if tell.send(Told::Lease(news)).is_err() {
                                    return;
                                }
                                notify();
                            }
                        }
                    }
                    let due = next_refresh.is_some_and(|at| Instant::now() >= at);
                    if let (true, Some(r), true) = (due, refresh, held.is_empty()) {
                        next_refresh = Some(Instant::now() + r);
                        // Reading back also tells whether the store is there while nothing is
                        // written.
                        let told = match store.load_changed(since.as_deref()) {
                            Ok(changed) => {
                                since = Some(changed.read_at.clone()).filter(|t| !t.is_empty());
                                vec![
                                    Told::Report(Report::read(Ok(()))),
                                    Told::Shared(Box::new(changed)),
                                ]
                            }
                            Err(e) => vec![Told::Report(Report::read(Err(e)))],
                        };
                        for t in told {
                            if tell.send(t).is_err() {
                                return;
                            }
                        }
                        notify();
                    }
                    if closing {
                        return;
                    }
                }
            })?;
        Ok(Writer {
            tx: Some(tx),
            results,
            thread: Some(thread),
            status,
            shared: None,
            lease_news: LeaseNews::default(),
        })
    }

    /// Queue a batch; it is written in the order submitted.
    pub fn submit(&self, batch: Vec<Persist>) {
        if batch.is_empty() {
            return;
        }
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Batch(batch));
        }
    }

    /// Queue lease claims and releases (ignored unless the store is shared).
    pub fn lease(&self, ops: Vec<Lease>) {
        if ops.is_empty() {
            return;
        }
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Lease(ops));
        }
    }

    /// Lease news reported since the last call (call after [`Writer::poll_status`]).
    pub fn take_lease_news(&mut self) -> Option<LeaseNews> {
        let n = std::mem::take(&mut self.lease_news);
        (!n.lost.is_empty() || !n.wanted.is_empty()).then_some(n)
    }

    /// Take in the results reported since the last call; the status if it changed.
    pub fn poll_status(&mut self) -> Option<StoreStatus> {
        let mut changed = false;
        while let Ok(told) = self.results.try_recv() {
            let r = match told {
                Told::Report(r) => r,
                Told::Shared(changed) => {
                    self.shared = Some(match self.shared.take() {
                        Some(older) => older.then(*changed),
                        None => *changed,
                    });
                    continue;
                }
                Told::Lease(news) => {
                    self.lease_news.lost.extend(news.lost);
                    self.lease_news.wanted.extend(news.wanted);
                    continue;
                }
            };
            changed = true;
            if r.result.is_ok() && r.written > 0 {
                self.status.batches += 1;
                self.status.changes += r.written as u64;
            }
            self.status.error = r.result.err();
            self.status.queued = r.queued;
            self.status.lost += r.lost;
        }
        changed.then(|| self.status.clone())
    }

    /// The latest state a shared store read back (call after [`Writer::poll_status`]).
    pub fn take_shared(&mut self) -> Option<Changed> {
        self.shared.take()
    }

    pub fn status(&self) -> &StoreStatus {
        &self.status
    }

    /// Close the queue and wait for every batch to be written.
    pub fn finish(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.poll_status();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::super::LeaseAnswer;
    use super::*;
    use std::sync::{Arc, Mutex};

    const LEASE_PATIENCE_ROUNDS: u32 = 7;

    /// A store that is unreachable while `down` is set, and records what it wrote.
    struct Flaky {
        down: Arc<Mutex<bool>>,
        wrote: Arc<Mutex<Vec<Persist>>>,
    }

    impl Store for Flaky {
        fn load(&mut self) -> Result<super::super::Snapshot, String> {
            Ok(Default::default())
        }
        fn apply(&mut self, batch: &[Persist]) -> Result<(), String> {
            if *self.down.lock().unwrap() {
                return Err("unreachable".into());
            }
            self.wrote.lock().unwrap().extend_from_slice(batch);
            Ok(())
        }
        fn retry_later(&self) -> bool {
            *self.down.lock().unwrap()
        }
    }

    fn running(user: &str, running: bool) -> Persist {
        Persist::Running {
            user: user.into(),
            package: "p".into(),
            running,
        }
    }

    /// A shared store's lease arbiter: users in `elsewhere` are held by another process,
    /// every other claim is granted; `down` fails every round; `rounds` counts the answered.
    #[derive(Default, Clone)]
    struct Arbiter {
        elsewhere: Arc<Mutex<Vec<String>>>,
        wanted: Arc<Mutex<Vec<String>>>,
        down: Arc<Mutex<bool>>,
        rounds: Arc<Mutex<usize>>,
        /// Every user let go, in order.
        released: Arc<Mutex<Vec<String>>>,
    }

    impl Store for Arbiter {
        fn load(&mut self) -> Result<super::super::Snapshot, String> {
            Ok(Default::default())
        }
        fn apply(&mut self, _: &[Persist]) -> Result<(), String> {
            Ok(())
        }
        fn shared_refresh(&self) -> Option<Duration> {
            Some(Duration::from_secs(3600))
        }
        fn lease(
            &mut self,
            claim: &[String],
            renew: &[String],
            release: &[String],
        ) -> Result<LeaseAnswer, String> {
            if *self.down.lock().unwrap() {
                return Err("unreachable".into());
            }
            self.released.lock().unwrap().extend_from_slice(release);
            *self.rounds.lock().unwrap() += 1;
            let elsewhere = self.elsewhere.lock().unwrap();
            Ok(LeaseAnswer {
                held: claim
                    .iter()
                    .chain(renew)
                    .filter(|u| !elsewhere.contains(u))
                    .cloned()
                    .collect(),
                wanted: std::mem::take(&mut *self.wanted.lock().unwrap()),
            })
        }
    }

    fn claim(user: &str, claim: u32) -> Lease {
        Lease::Claim {
            user: user.into(),
            claim,
        }
    }

    /// Many sessions starting at once (each claim a round) must not use up a refused claim's
    /// patience: the holder has not had its second to see that the user is wanted.
    #[test]
    fn other_users_claims_do_not_use_up_a_refused_claims_patience() {
        let store = Arbiter::default();
        store.elsewhere.lock().unwrap().push("ada".into());
        let rounds = store.rounds.clone();
        let mut w =
            Writer::start(Box::new(store), StoreStatus::memory(), 10, Box::new(|| {})).unwrap();
        w.lease(vec![claim("ada", 1)]);
        let deadline = Instant::now() + Duration::from_secs(10);
        let others = 2 * LEASE_PATIENCE_ROUNDS;
        assert!(
            LEASE_PATIENCE > Duration::from_secs(2),
            "the burst fits in the patience"
        );
        for i in 0..others {
            // One at a time, as sessions start: each its own round.
            let before = *rounds.lock().unwrap();
            w.lease(vec![claim(&format!("u{i}"), 1)]);
            while *rounds.lock().unwrap() == before {
                assert!(Instant::now() < deadline, "no round for claim {i}");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        w.poll_status();
        assert_eq!(
            w.take_lease_news(),
            None,
            "ada given up after a burst of claims"
        );
    }

    /// A round of `leases` against `store` at `t` seconds after `t0`.
    fn at(leases: &mut Leases, store: &mut Arbiter, t0: Instant, t: f64) -> Option<LeaseNews> {
        leases.round(store, t0 + Duration::from_secs_f64(t))
    }

    #[test]
    fn a_refused_claim_is_given_up_after_its_patience_of_answered_time_naming_its_claim() {
        let mut store = Arbiter::default();
        store.elsewhere.lock().unwrap().push("ada".into());
        let mut leases = Leases::default();
        let t0 = Instant::now();
        let quiet = Some(LeaseNews::default());
        leases.take(vec![claim("ada", 1)]);
        assert_eq!(at(&mut leases, &mut store, t0, 0.0), quiet);
        // The session ends and another starts: a new claim, a new patience.
        leases.take(vec![Lease::Release("ada".into()), claim("ada", 2)]);
        assert_eq!(at(&mut leases, &mut store, t0, 5.0), quiet);
        // The store away for 2 s: not counted.
        *store.down.lock().unwrap() = true;
        assert_eq!(at(&mut leases, &mut store, t0, 8.0), None);
        assert_eq!(at(&mut leases, &mut store, t0, 9.5), None);
        *store.down.lock().unwrap() = false;
        assert_eq!(at(&mut leases, &mut store, t0, 10.0), quiet);
        assert_eq!(at(&mut leases, &mut store, t0, 13.9), quiet);
        let lost = at(&mut leases, &mut store, t0, 14.0).unwrap();
        assert_eq!(lost.lost, vec![("ada".to_string(), 2)]);
        // Granted, then wanted and taken: the news names the claim that got it.
        store.elsewhere.lock().unwrap().clear();
        leases.take(vec![claim("ada", 3)]);
        assert_eq!(at(&mut leases, &mut store, t0, 21.0), quiet);
        store.wanted.lock().unwrap().push("ada".into());
        let wanted = at(&mut leases, &mut store, t0, 22.0).unwrap();
        assert_eq!(wanted.wanted, vec![("ada".to_string(), 3)]);
        store.elsewhere.lock().unwrap().push("ada".into());
        let taken = at(&mut leases, &mut store, t0, 23.0).unwrap();
        assert_eq!(taken.lost, vec![("ada".to_string(), 3)]);
    }

    /// A session ends and the user's next one starts before the round: the lease is not let go
    /// (another process could take it in between), and the news names the new claim.
    #[test]
    fn a_release_followed_by_a_claim_of_the_same_user_keeps_the_lease_for_the_new_claim() {
        let mut store = Arbiter::default();
        let mut leases = Leases::default();
        let t0 = Instant::now();
        leases.take(vec![claim("ada", 1)]);
        at(&mut leases, &mut store, t0, 0.0);
        leases.take(vec![Lease::Release("ada".into()), claim("ada", 2)]);
        store.wanted.lock().unwrap().push("ada".into());
        let news = at(&mut leases, &mut store, t0, 0.5).unwrap();
        assert_eq!(news.wanted, vec![("ada".to_string(), 2)]);
        assert_eq!(*store.released.lock().unwrap(), Vec::<String>::new());
        // Let go for good: released once.
        leases.take(vec![Lease::Release("ada".into())]);
        at(&mut leases, &mut store, t0, 1.0);
        at(&mut leases, &mut store, t0, 2.0);
        assert_eq!(*store.released.lock().unwrap(), vec!["ada".to_string()]);
        assert!(leases.idle());
    }

    #[test]
    fn an_unreachable_store_holds_changes_to_a_bound_and_catches_up() {
        let down = Arc::new(Mutex::new(true));
        let wrote = Arc::new(Mutex::new(Vec::new()));
        let store = Flaky {
            down: down.clone(),
            wrote: wrote.clone(),
        };
        let mut w =
            Writer::start(Box::new(store), StoreStatus::memory(), 3, Box::new(|| {})).unwrap();
        // a flips three times (one row), then b, c, d: four rows against a bound of three.
        w.submit(vec![running("a", true), running("a", false)]);
        w.submit(vec![running("b", true), running("a", true)]);
        w.submit(vec![running("c", true), running("d", true)]);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut st = w.status().clone();
        while st.lost == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            st = w.poll_status().unwrap_or(st);
        }
        assert!(st.error.is_some());
        assert_eq!((st.queued, st.lost), (3, 1));
        *down.lock().unwrap() = false;
        while st.queued > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            st = w.poll_status().unwrap_or(st);
        }
        assert_eq!(st.error, None);
        assert_eq!(
            *wrote.lock().unwrap(),
            vec![running("a", true), running("b", true), running("c", true)]
        );
    }
}
