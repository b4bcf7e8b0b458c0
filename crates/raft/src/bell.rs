//! How a node thread learns that there is work: every channel into it is a
//! [`Doorbell`], which rings the node's [`Bell`] after each send, and the node
//! thread waits on the bell alone (with the deadline of its next tick), inside
//! a tokio runtime it drives: the gRPC transport's when it lends its runtime
//! (so the node thread itself reads and writes its peers' streams, and a
//! message crosses from a socket to raft without waking another thread), a
//! runtime of its own otherwise.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, SendError, Sender};
use tokio::runtime::Runtime;
use tokio::sync::Notify;

/// A node thread's doorbell: rung by every sender into the node, awaited
/// by the node thread when it has nothing to do. A ring while the node is
/// busy is kept (one permit), so the next wait returns at once.
#[derive(Clone, Default)]
pub struct Bell(Arc<Notify>);

impl Bell {
    pub fn ring(&self) {
        self.0.notify_one();
    }

    /// Drives `runtime` until the bell rings or `deadline` passes. The tasks
    /// already queued on it run first (what the node just sent leaves before
    /// it waits), then those its I/O wakes. A bell that rang meanwhile ends
    /// the wait after one turn of the runtime (its tasks and a poll of its
    /// I/O, so that a busy node still serves its peers). `timer` keeps the
    /// deadline's timer registered from one wait to the next.
    pub fn wait(&self, runtime: &Runtime, deadline: Instant, timer: &mut Timer) {
        runtime.block_on(async {
            let notified = self.0.notified();
            tokio::pin!(notified);
            if notified.as_mut().enable() {
                tokio::task::yield_now().await;
                return;
            }
            let sleep = timer.until(deadline);
            tokio::select! {
                biased;
                () = notified => {}
                () = sleep => {}
            }
        });
    }
}

/// The timer of a node thread's waits, kept from one wait to the next and
/// moved only when the deadline does (once per tick). A timer registered
/// anew for every wait, earlier than the runtime's next wake, made the
/// runtime write its own eventfd, and the wait then returned once for
/// nothing: two system calls and a turn of the loop per wait.
#[derive(Default)]
pub struct Timer(Option<Pin<Box<tokio::time::Sleep>>>);

impl Timer {
    /// The timer, set to `deadline`; inside the runtime that drives it.
    fn until(&mut self, deadline: Instant) -> Pin<&mut tokio::time::Sleep> {
        let deadline = tokio::time::Instant::from_std(deadline);
        let sleep = self
            .0
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        sleep.as_mut()
    }
}

/// The sending end of a channel into a node thread: each send rings the
/// node's bell.
pub struct Doorbell<T> {
    tx: Sender<T>,
    bell: Bell,
}

impl<T> Clone for Doorbell<T> {
    fn clone(&self) -> Self {
        Doorbell {
            tx: self.tx.clone(),
            bell: self.bell.clone(),
        }
    }
}

impl<T> Doorbell<T> {
    pub fn send(&self, item: T) -> Result<(), SendError<T>> {
        let sent = self.tx.send(item);
        self.bell.ring();
        sent
    }
}

/// An unbounded channel into the node thread that waits on `bell`.
pub fn channel<T>(bell: &Bell) -> (Doorbell<T>, Receiver<T>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    (
        Doorbell {
            tx,
            bell: bell.clone(),
        },
        rx,
    )
}

/// Where a node's messages from its peers arrive, with the bell they ring
/// (the node's own: every other channel into the node rings it too).
pub struct Inbox {
    pub(crate) rx: Receiver<crate::transport::Inbound>,
    pub(crate) bell: Bell,
}

/// A new node's inbox and the sender its transport delivers with.
pub fn inbox() -> (Doorbell<crate::transport::Inbound>, Inbox) {
    let bell = Bell::default();
    let (tx, rx) = channel(&bell);
    (tx, Inbox { rx, bell })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn runtime() -> Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_ring_before_the_wait_ends_it_at_once() {
        let (rt, bell, mut timer) = (runtime(), Bell::default(), Timer::default());
        bell.ring();
        let start = Instant::now();
        bell.wait(&rt, start + Duration::from_secs(30), &mut timer);
        assert!(start.elapsed() < Duration::from_secs(10));
        // The ring was used up: the next wait lasts until its deadline.
        let deadline = Instant::now() + Duration::from_millis(30);
        bell.wait(&rt, deadline, &mut timer);
        assert!(Instant::now() >= deadline);
    }

    #[test]
    fn a_ring_from_another_thread_ends_the_wait() {
        let (rt, bell, mut timer) = (runtime(), Bell::default(), Timer::default());
        let ringer = {
            let bell = bell.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                bell.ring();
            })
        };
        let start = Instant::now();
        bell.wait(&rt, start + Duration::from_secs(30), &mut timer);
        assert!(start.elapsed() < Duration::from_secs(10));
        ringer.join().unwrap();
    }

    #[test]
    fn the_kept_timer_follows_each_new_deadline() {
        let (rt, bell, mut timer) = (runtime(), Bell::default(), Timer::default());
        let first = Instant::now() + Duration::from_millis(20);
        bell.wait(&rt, first, &mut timer);
        assert!(Instant::now() >= first);
        // Elapsed, the timer must not end the next wait before its own deadline.
        let second = Instant::now() + Duration::from_millis(40);
        bell.wait(&rt, second, &mut timer);
        assert!(Instant::now() >= second);
        // A wait that a ring ended early leaves its far deadline set: the
        // next, sooner deadline must still end the next wait.
        let ringer = {
            let bell = bell.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                bell.ring();
            })
        };
        bell.wait(&rt, Instant::now() + Duration::from_secs(60), &mut timer);
        ringer.join().unwrap();
        let sooner = Instant::now() + Duration::from_millis(20);
        bell.wait(&rt, sooner, &mut timer);
        let late = Instant::now().duration_since(sooner);
        assert!(late < Duration::from_secs(30), "{late:?} past its deadline");
    }
}
