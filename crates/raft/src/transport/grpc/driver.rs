//! Who drives the network's runtime. It is a current-thread runtime, driven
//! by the thread of the node running on it (which borrows it for its waits,
//! see [`crate::bell`]) and by a thread of its own while no node does: when
//! the node is stopped, before it starts, and after it is gone, peers'
//! streams are still answered, refused and timed out.
//!
//! Why: a message between two nodes on separate threads took six thread
//! wakeups per round trip (node, tokio worker, socket, tokio worker, node,
//! and back); on the node's own thread it takes one per direction.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::sync::Notify;

use crate::error::{Error, Result};

/// A network's runtime and its lending state.
pub(crate) struct NetDriver {
    runtime: Runtime,
    state: Mutex<State>,
    /// Signalled when the runtime comes back or the network stops.
    returned: Condvar,
    /// Wakes the runtime's own thread to give the runtime up.
    wanted: Notify,
}

#[derive(Default)]
struct State {
    /// The node thread driving the runtime now, if any.
    lent_to: Option<ThreadId>,
    stopped: bool,
}

impl NetDriver {
    /// Starts the runtime and the thread that drives it while it is not lent.
    pub(super) fn start(node_id: u64) -> Result<(Arc<NetDriver>, JoinHandle<()>)> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("cannot start the network runtime: {e}")))?;
        let driver = Arc::new(NetDriver {
            runtime,
            state: Mutex::new(State::default()),
            returned: Condvar::new(),
            wanted: Notify::new(),
        });
        let thread = std::thread::Builder::new()
            .name(format!("metastore-net-{node_id}"))
            .spawn({
                let driver = Arc::clone(&driver);
                move || driver.drive_while_not_lent()
            })
            .map_err(|e| Error::Internal(format!("cannot start the network thread: {e}")))?;
        Ok((driver, thread))
    }

    pub(super) fn handle(&self) -> tokio::runtime::Handle {
        self.runtime.handle().clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn drive_while_not_lent(&self) {
        loop {
            {
                let mut state = self.lock();
                while state.lent_to.is_some() && !state.stopped {
                    state = self.returned.wait(state).unwrap_or_else(|p| p.into_inner());
                }
                if state.stopped {
                    return;
                }
            }
            self.runtime.block_on(async {
                loop {
                    {
                        let state = self.lock();
                        if state.lent_to.is_some() || state.stopped {
                            return;
                        }
                    }
                    self.wanted.notified().await;
                }
            });
        }
    }

    /// Lends the runtime to the calling thread until the lease is dropped.
    pub(super) fn lend(self: &Arc<Self>) -> RuntimeLease {
        self.lock().lent_to = Some(std::thread::current().id());
        self.wanted.notify_one();
        RuntimeLease(Arc::clone(self))
    }

    /// Whether the calling thread holds the lease, and so may run the
    /// runtime's ready tasks itself.
    pub(super) fn driven_here(&self) -> bool {
        self.lock().lent_to == Some(std::thread::current().id())
    }

    /// Runs `f` inside the runtime, then the tasks that are ready (what `f`
    /// queued for the peers goes out), without waiting for anything.
    pub(super) fn run_now(&self, f: impl FnOnce()) {
        self.runtime.block_on(async {
            f();
            tokio::task::yield_now().await
        });
    }

    /// Stops the runtime's own thread; the runtime itself ends with the
    /// last holder (the network, or a node thread that still drives it).
    pub(super) fn stop(&self) {
        self.lock().stopped = true;
        self.wanted.notify_one();
        self.returned.notify_all();
    }

    /// Ends the runtime's tasks, if nobody else holds it.
    pub(super) fn shut_down(self: Arc<Self>) {
        if let Ok(driver) = Arc::try_unwrap(self) {
            driver.runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// The network's runtime, lent to a node thread; returned on drop.
pub struct RuntimeLease(Arc<NetDriver>);

impl RuntimeLease {
    pub fn runtime(&self) -> &Runtime {
        &self.0.runtime
    }
}

impl Drop for RuntimeLease {
    fn drop(&mut self) {
        self.0.lock().lent_to = None;
        self.0.returned.notify_all();
    }
}
