//! The workers connected to this proxy, grouped by model, how one is chosen for a request, and
//! the queue a request waits in while every worker for its model is busy.
//!
//! The queue is first come, first served per model: a freed slot goes to the oldest waiter that
//! can use it (one that accepts the worker's coefficient), handed over directly so no newcomer
//! can take it in between. A waiter that gave up (deadline, client gone) is skipped and its slot
//! goes to the next.

use std::collections::{HashMap, VecDeque};

use tokio::sync::oneshot;

use cocoon_chain::Address;
use cocoon_engine::Features;

/// One connected worker.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerSlot {
    /// Connection id (unique per connection).
    pub id: u64,
    /// The worker owner's address (who is paid).
    pub owner: Address,
    /// Model identity `name@sha256`.
    pub model: String,
    /// Price coefficient, thousandths.
    pub coefficient: u32,
    /// Most concurrent requests.
    pub max_active: u32,
    /// Requests running now.
    pub active: u32,
    /// Whether it accepts requests.
    pub enabled: bool,
    /// Mean latency of finished requests, milliseconds (exponential moving average).
    pub mean_latency_ms: f64,
    /// Requests finished.
    pub served: u64,
    /// Recent failures the worker caused: +1 each, halved by each success. Each doubles the
    /// score, so a worker that fails every request stops winning the idle ones.
    pub failures: f64,
    /// Whether it announced our protocol version 3 and so understands `proxy.cancelQuery`
    /// (a reference worker does not: it is never sent one).
    pub understands_cancel: bool,
    /// What it announced beyond plain text; a request needing more never goes to it.
    pub features: Features,
}

/// How a request on a worker ended, for its standing in the pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Finished {
    /// Answered, after this many milliseconds.
    Served(f64),
    /// The worker failed it (an engine error, a timeout, a disconnect, an overrun).
    Failed,
    /// The client went away or cancelled: nothing said about the worker.
    Abandoned,
}

/// Why no worker was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoWorker {
    /// No worker serves this model at all.
    UnknownModel,
    /// Workers exist, enabled, but all at their limit.
    AllBusy,
    /// Workers exist but none accepts requests now (each switched itself off).
    AllDisabled,
    /// Workers exist but each costs more than the client accepts; the cheapest coefficient.
    TooExpensive(u32),
    /// Every worker is busy and this many requests already wait for the model.
    QueueFull(usize),
    /// Workers exist, but none announced what the request needs (tool calling, say).
    Unsupported(Features),
}

/// A request's place: a worker now, or a turn in the model's queue.
#[derive(Debug)]
pub enum Place {
    /// A worker was free: it is marked busy for this request.
    Now(WorkerSlot),
    /// Every worker is busy: the slot arrives here when one frees (already marked busy), or
    /// why none will (the model's workers left or switched off). Drop the receiver to leave
    /// the queue.
    Queued(oneshot::Receiver<Result<WorkerSlot, NoWorker>>),
}

struct Waiter {
    max_coefficient: u32,
    needs: Features,
    tx: oneshot::Sender<Result<WorkerSlot, NoWorker>>,
}

/// All connected workers, and the requests waiting for one.
#[derive(Default)]
pub struct Pool {
    workers: HashMap<u64, WorkerSlot>,
    /// Waiting requests per requested model name, oldest first.
    waiting: HashMap<String, VecDeque<Waiter>>,
}

impl Pool {
    /// Adds a worker (its slots go to waiting requests first).
    pub fn insert(&mut self, w: WorkerSlot) {
        self.workers.insert(w.id, w);
        self.dispatch();
    }

    /// Removes a worker (its connection ended); requests waiting only for it are told.
    pub fn remove(&mut self, id: u64) -> Option<WorkerSlot> {
        let gone = self.workers.remove(&id);
        self.dispatch();
        gone
    }

    /// A worker by connection id.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut WorkerSlot> {
        self.workers.get_mut(&id)
    }

    /// All workers.
    pub fn all(&self) -> impl Iterator<Item = &WorkerSlot> {
        self.workers.values()
    }

    /// Chooses a worker for `model` costing at most `max_coefficient` and offering what the
    /// request `needs`: enabled, below its limit, lowest `(running + 1) × mean latency` (ties:
    /// lower coefficient, then id), and marks it busy. The model matches by full identity or by
    /// its name before `@`.
    pub fn choose(
        &mut self,
        model: &str,
        max_coefficient: u32,
        needs: Features,
    ) -> Result<WorkerSlot, NoWorker> {
        let matches = |w: &WorkerSlot| {
            w.model == model || cocoon_engine::model::ModelIdentity::name_of(&w.model) == model
        };
        let mut serving = self.workers.values().filter(|w| matches(w)).peekable();
        if serving.peek().is_none() {
            return Err(NoWorker::UnknownModel);
        }
        let candidates: Vec<&WorkerSlot> = serving.filter(|w| w.features.covers(needs)).collect();
        if candidates.is_empty() {
            return Err(NoWorker::Unsupported(needs));
        }
        let affordable: Vec<&&WorkerSlot> = candidates
            .iter()
            .filter(|w| w.coefficient <= max_coefficient)
            .collect();
        if affordable.is_empty() {
            let cheapest = candidates.iter().map(|w| w.coefficient).min().unwrap_or(0);
            return Err(NoWorker::TooExpensive(cheapest));
        }
        if !affordable.iter().any(|w| w.enabled) {
            return Err(NoWorker::AllDisabled);
        }
        let best = affordable
            .iter()
            .filter(|w| w.enabled && w.active < w.max_active)
            .min_by(|a, b| {
                let score = |w: &WorkerSlot| {
                    // Each recent failure doubles the score.
                    (w.active as f64 + 1.0)
                        * w.mean_latency_ms.max(1.0)
                        * 2f64.powf(w.failures.min(30.0))
                };
                score(a)
                    .partial_cmp(&score(b))
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(a.coefficient.cmp(&b.coefficient))
                    // Equal otherwise: the one that served least, so a newcomer gets its first
                    // requests and idle load spreads instead of always landing on the oldest.
                    .then(a.served.cmp(&b.served))
                    .then(a.id.cmp(&b.id))
            })
            .map(|w| w.id)
            .ok_or(NoWorker::AllBusy)?;
        let w = self.workers.get_mut(&best).ok_or(NoWorker::AllBusy)?;
        w.active += 1;
        Ok(w.clone())
    }

    /// A worker for `model` now, or a place in its queue when every worker is busy and fewer
    /// than `limit` requests wait already (else [`NoWorker::QueueFull`]). Errors other than
    /// busy are returned at once: waiting cannot mend them.
    pub fn choose_or_wait(
        &mut self,
        model: &str,
        max_coefficient: u32,
        needs: Features,
        limit: usize,
    ) -> Result<Place, NoWorker> {
        match self.choose(model, max_coefficient, needs) {
            Ok(slot) => Ok(Place::Now(slot)),
            Err(NoWorker::AllBusy) => {
                let queue = self.waiting.entry(model.to_string()).or_default();
                if queue.len() >= limit {
                    queue.retain(|w| !w.tx.is_closed());
                }
                if queue.len() >= limit {
                    return Err(NoWorker::QueueFull(queue.len()));
                }
                let (tx, rx) = oneshot::channel();
                queue.push_back(Waiter {
                    max_coefficient,
                    needs,
                    tx,
                });
                Ok(Place::Queued(rx))
            }
            Err(e) => Err(e),
        }
    }

    /// Requests waiting now (those that gave up included until their turn comes).
    pub fn waiting(&self) -> usize {
        self.waiting.values().map(VecDeque::len).sum()
    }

    /// Hands free slots to waiting requests, oldest first per model; call after anything that
    /// may free or add a slot (a request finished, a worker joined, was enabled or repriced).
    pub fn dispatch(&mut self) {
        let models: Vec<String> = self.waiting.keys().cloned().collect();
        for model in models {
            let Some(mut queue) = self.waiting.remove(&model) else {
                continue;
            };
            let mut kept = VecDeque::with_capacity(queue.len());
            // A waiter found every affordable worker busy at this coefficient: one with the
            // same needs accepting no more would find them busy too (slots only get fewer in
            // this pass).
            let mut busy_up_to: Vec<(Features, u32)> = Vec::new();
            while let Some(w) = queue.pop_front() {
                if w.tx.is_closed() {
                    continue;
                }
                if busy_up_to
                    .iter()
                    .any(|(n, c)| *n == w.needs && w.max_coefficient <= *c)
                {
                    kept.push_back(w);
                    continue;
                }
                match self.choose(&model, w.max_coefficient, w.needs) {
                    Ok(slot) => {
                        if let Err(Ok(slot)) = w.tx.send(Ok(slot)) {
                            // It gave up just now: the slot is free again.
                            self.release(slot.id);
                        }
                    }
                    Err(NoWorker::AllBusy) => {
                        match busy_up_to.iter_mut().find(|(n, _)| *n == w.needs) {
                            Some((_, c)) => *c = (*c).max(w.max_coefficient),
                            None => busy_up_to.push((w.needs, w.max_coefficient)),
                        }
                        kept.push_back(w);
                    }
                    // No longer servable (its workers left, switched off or repriced): told
                    // now rather than at its deadline.
                    Err(e) => {
                        let _ = w.tx.send(Err(e));
                    }
                }
            }
            if !kept.is_empty() {
                self.waiting.insert(model, kept);
            }
        }
    }

    /// Frees a slot taken for a request that never ran, saying nothing about the worker.
    fn release(&mut self, id: u64) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.active = w.active.saturating_sub(1);
        }
    }

    /// Marks a request on worker `id` finished.
    pub fn finish(&mut self, id: u64, how: Finished) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.active = w.active.saturating_sub(1);
            match how {
                Finished::Served(ms) => {
                    w.mean_latency_ms = if w.served == 0 {
                        ms
                    } else {
                        0.8 * w.mean_latency_ms + 0.2 * ms
                    };
                    w.served += 1;
                    w.failures /= 2.0;
                }
                Finished::Failed => w.failures += 1.0,
                Finished::Abandoned => {}
            }
        }
        self.dispatch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Features = Features {
        tools: false,
        structured_output: false,
    };

    fn w(id: u64, model: &str, coefficient: u32, max_active: u32, latency: f64) -> WorkerSlot {
        WorkerSlot {
            understands_cancel: true,
            id,
            owner: Address::new([id as u8; 32]),
            model: model.into(),
            coefficient,
            max_active,
            active: 0,
            enabled: true,
            mean_latency_ms: latency,
            served: 1,
            failures: 0.0,
            features: PLAIN,
        }
    }

    /// A tool request goes only to a worker that announced tools; with none, it is refused as
    /// unsupported (not queued), while plain requests still use every worker.
    #[test]
    fn tool_requests_go_only_to_workers_that_announced_tools() {
        let tools = Features {
            tools: true,
            structured_output: false,
        };
        let mut p = Pool::default();
        p.insert(w(1, "m@1", 1000, 1, 1.0));
        assert_eq!(
            p.choose("m", 1000, tools),
            Err(NoWorker::Unsupported(tools))
        );
        assert!(matches!(
            p.choose_or_wait("m", 1000, tools, 8),
            Err(NoWorker::Unsupported(_))
        ));
        let mut ours = w(2, "m@1", 1000, 1, 50.0);
        ours.features = Features::ALL;
        p.insert(ours);
        // The faster worker 1 cannot serve it.
        assert_eq!(p.choose("m", 1000, tools).unwrap().id, 2);
        // Busy: a tool request waits for worker 2, and worker 1 freeing does not serve it.
        let Ok(Place::Queued(mut rx)) = p.choose_or_wait("m", 1000, tools, 8) else {
            panic!("queued")
        };
        assert_eq!(p.choose("m", 1000, PLAIN).unwrap().id, 1);
        p.finish(1, Finished::Served(1.0));
        assert!(rx.try_recv().is_err(), "worker 1 does not take it");
        p.finish(2, Finished::Served(1.0));
        assert_eq!(rx.try_recv().unwrap().unwrap().id, 2);
    }

    #[test]
    fn chooses_same_model_affordable_least_loaded() {
        let mut p = Pool::default();
        p.insert(w(1, "qwen@aa", 1000, 2, 100.0));
        p.insert(w(2, "qwen@aa", 1500, 2, 10.0));
        p.insert(w(3, "llama@bb", 500, 2, 10.0));
        // Worker 2 is faster but too dear for 1200; worker 3 is another model.
        assert_eq!(p.choose("qwen@aa", 1200, PLAIN).unwrap().id, 1);
        // By name without the hash, and the faster worker when affordable.
        assert_eq!(p.choose("qwen", 2000, PLAIN).unwrap().id, 2);
        assert_eq!(
            p.choose("qwen", 900, PLAIN),
            Err(NoWorker::TooExpensive(1000))
        );
        assert_eq!(
            p.choose("mistral", 9999, PLAIN),
            Err(NoWorker::UnknownModel)
        );
    }

    #[test]
    fn ties_go_to_the_worker_that_served_least() {
        let mut p = Pool::default();
        let mut old = w(1, "m@1", 1000, 4, 0.4);
        old.served = 50;
        p.insert(old);
        // A newcomer (no latency yet) and a sub-millisecond incumbent score the same.
        let mut new = w(2, "m@1", 1000, 4, 0.0);
        new.served = 0;
        p.insert(new);
        let first = p.choose("m", 1000, PLAIN).unwrap().id;
        assert_eq!(first, 2);
        p.finish(first, Finished::Served(0.5));
        p.workers.get_mut(&2).unwrap().served = 50;
        // Served as much, same score: the older id, deterministic.
        let second = p.choose("m", 1000, PLAIN).unwrap().id;
        assert_eq!(second, 1);
    }

    #[test]
    fn a_worker_that_keeps_failing_stops_winning_and_comes_back_by_serving() {
        let mut p = Pool::default();
        p.insert(w(1, "m@1", 1000, 4, 30.0));
        // A newcomer scores best (no latency yet) but fails whatever it gets.
        let mut bad = w(2, "m@1", 1000, 4, 0.0);
        bad.served = 0;
        p.insert(bad);
        assert_eq!(p.choose("m", 1000, PLAIN).unwrap().id, 2);
        p.finish(2, Finished::Failed);
        // Each failure doubles its score (2, 4, … < 30); five of them and the healthy one wins.
        let mut chosen = Vec::new();
        for _ in 0..6 {
            let id = p.choose("m", 1000, PLAIN).unwrap().id;
            chosen.push(id);
            p.finish(
                id,
                if id == 2 {
                    Finished::Failed
                } else {
                    Finished::Served(30.0)
                },
            );
        }
        assert_eq!(chosen.last(), Some(&1), "{chosen:?}");
        assert!(p.get_mut(2).unwrap().failures >= 4.0);
        // A client that goes away says nothing about the worker.
        let before = p.get_mut(1).unwrap().clone();
        p.choose("m", 1000, PLAIN).unwrap();
        p.finish(1, Finished::Abandoned);
        let after = p.get_mut(1).unwrap().clone();
        assert_eq!(
            (after.served, after.failures),
            (before.served, before.failures)
        );
        // Successes halve the record: it gets requests again.
        let w2 = p.get_mut(2).unwrap();
        w2.active = 1;
        for _ in 0..8 {
            p.finish(2, Finished::Served(5.0));
            p.get_mut(2).unwrap().active = 1;
        }
        p.get_mut(2).unwrap().active = 0;
        assert!(p.get_mut(2).unwrap().failures < 0.1);
        assert_eq!(p.choose("m", 1000, PLAIN).unwrap().id, 2);
    }

    #[test]
    fn load_and_limits_and_disabled_workers_are_respected() {
        let mut p = Pool::default();
        p.insert(w(1, "m@1", 1000, 1, 10.0));
        p.insert(w(2, "m@1", 1000, 1, 10.0));
        let a = p.choose("m", 1000, PLAIN).unwrap().id;
        let b = p.choose("m", 1000, PLAIN).unwrap().id;
        assert_ne!(a, b, "the busy worker is skipped");
        assert_eq!(p.choose("m", 1000, PLAIN), Err(NoWorker::AllBusy));
        p.finish(a, Finished::Served(50.0));
        assert_eq!(p.choose("m", 1000, PLAIN).unwrap().id, a);
        p.finish(a, Finished::Abandoned);
        p.get_mut(a).unwrap().enabled = false;
        p.finish(b, Finished::Abandoned);
        assert_eq!(
            p.choose("m", 1000, PLAIN).unwrap().id,
            b,
            "a disabled worker is never chosen"
        );
    }

    fn queued(p: Place) -> oneshot::Receiver<Result<WorkerSlot, NoWorker>> {
        match p {
            Place::Queued(rx) => rx,
            Place::Now(slot) => panic!("expected to wait, got worker {}", slot.id),
        }
    }

    #[test]
    fn a_busy_model_queues_first_come_first_served_up_to_its_limit() {
        let mut p = Pool::default();
        p.insert(w(1, "m@1", 1000, 1, 10.0));
        assert!(matches!(
            p.choose_or_wait("m", 1000, PLAIN, 2),
            Ok(Place::Now(_))
        ));
        let mut first = queued(p.choose_or_wait("m", 1000, PLAIN, 2).unwrap());
        let mut second = queued(p.choose_or_wait("m", 1000, PLAIN, 2).unwrap());
        assert_eq!(p.waiting(), 2);
        assert!(matches!(
            p.choose_or_wait("m", 1000, PLAIN, 2),
            Err(NoWorker::QueueFull(2))
        ));
        // The freed slot goes to the oldest waiter, already marked busy; the next still waits.
        p.finish(1, Finished::Served(5.0));
        assert_eq!(first.try_recv().unwrap().unwrap().id, 1);
        assert!(second.try_recv().is_err());
        assert_eq!(p.get_mut(1).unwrap().active, 1);
        assert!(matches!(
            p.choose_or_wait("m", 1000, PLAIN, 2),
            Ok(Place::Queued(_))
        ));
    }

    #[test]
    fn a_waiter_that_gave_up_is_skipped_and_frees_its_place() {
        let mut p = Pool::default();
        p.insert(w(1, "m@1", 1000, 1, 10.0));
        p.choose("m", 1000, PLAIN).unwrap();
        let gone = queued(p.choose_or_wait("m", 1000, PLAIN, 1).unwrap());
        drop(gone);
        // Full by count, but the one waiting gave up: its place is taken.
        let mut next = queued(p.choose_or_wait("m", 1000, PLAIN, 1).unwrap());
        p.finish(1, Finished::Served(5.0));
        assert_eq!(next.try_recv().unwrap().unwrap().id, 1);
        assert_eq!(p.waiting(), 0);
        // A slot handed to a waiter that closed in between comes back free.
        let mut late = queued(p.choose_or_wait("m", 1000, PLAIN, 1).unwrap());
        late.close();
        p.finish(1, Finished::Served(5.0));
        assert_eq!(p.get_mut(1).unwrap().active, 0);
    }

    #[test]
    fn a_waiter_is_served_only_by_a_worker_it_can_afford() {
        let mut p = Pool::default();
        p.insert(w(1, "m@1", 1000, 1, 10.0));
        p.insert(w(2, "m@1", 2000, 1, 10.0));
        p.choose("m", 2000, PLAIN).unwrap();
        p.choose("m", 2000, PLAIN).unwrap();
        let mut cheap = queued(p.choose_or_wait("m", 1000, PLAIN, 8).unwrap());
        let mut dear = queued(p.choose_or_wait("m", 2000, PLAIN, 8).unwrap());
        // The dear worker frees: the older waiter cannot pay it, the younger gets it.
        p.finish(2, Finished::Served(5.0));
        assert!(cheap.try_recv().is_err());
        assert_eq!(dear.try_recv().unwrap().unwrap().id, 2);
        p.finish(1, Finished::Served(5.0));
        assert_eq!(cheap.try_recv().unwrap().unwrap().id, 1);
    }

    #[test]
    fn waiters_are_told_when_their_workers_leave_or_switch_off() {
        let mut p = Pool::default();
        p.insert(w(1, "m@1", 1000, 1, 10.0));
        p.choose("m", 1000, PLAIN).unwrap();
        let mut a = queued(p.choose_or_wait("m", 1000, PLAIN, 8).unwrap());
        p.get_mut(1).unwrap().enabled = false;
        p.dispatch();
        assert_eq!(a.try_recv().unwrap(), Err(NoWorker::AllDisabled));
        // Switched off, nothing waits: refused at once.
        assert!(matches!(
            p.choose_or_wait("m", 1000, PLAIN, 8),
            Err(NoWorker::AllDisabled)
        ));
        p.get_mut(1).unwrap().enabled = true;
        let mut b = queued(p.choose_or_wait("m", 1000, PLAIN, 8).unwrap());
        p.remove(1);
        assert_eq!(b.try_recv().unwrap(), Err(NoWorker::UnknownModel));
    }
}
