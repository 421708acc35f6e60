//! Hints for whoever waits in this process for jobs to arrive, beside the dispatcher: the HTTP claims of
//! external workers (and later long polls). The listener bumps a counter at each notification; a waiter
//! holds a receiver and wakes when the counter moves. A `watch` channel, not a `Notify`: any number of
//! waiters wake from one notification, and none of them holds a database connection while it waits.

use tokio::sync::watch;

/// The sending side, kept by the listener.
#[derive(Debug)]
pub struct SignalSender(watch::Sender<u64>);

/// A handle to wait for the next "jobs are due" hint. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Signals(watch::Receiver<u64>);

impl SignalSender {
    /// Tells every waiter that jobs may be due.
    pub fn jobs_available(&self) {
        self.0.send_modify(|count| *count = count.wrapping_add(1));
    }
}

impl Signals {
    pub fn new() -> (SignalSender, Signals) {
        let (sender, receiver) = watch::channel(0);
        (SignalSender(sender), Signals(receiver))
    }

    /// Signals that never fire (for a process without a listener, such as `jobdock openapi`).
    pub fn none() -> Signals {
        let (_sender, signals) = Signals::new();
        signals
    }

    /// Marks every hint so far as seen: call before looking, so a hint that arrives while looking wakes
    /// the next [`Signals::changed`].
    pub fn mark_seen(&mut self) {
        self.0.borrow_and_update();
    }

    /// Completes at the next hint after [`Signals::mark_seen`]; never, once the listener is gone.
    pub async fn changed(&mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
