//! The hand-off between an executor and the dispatcher: a succeeded job's result goes to the dispatcher,
//! which from then on owns it: it writes the result in its next batch (again after an outage), counts it,
//! and forgets the job in [`super::running::Running`] once the write is settled. The executor's task
//! ends at the hand-off: waiting for an answer cost every job a reply channel, a wake-up and a second
//! poll of its task, which was a tenth of a worker's CPU in a drain. A module of its own so the executor
//! and the dispatcher depend on it, not on each other.

use crate::store::leases::Completion;

/// A succeeded job's result, handed to the dispatcher by its executor.
pub(crate) struct Finished {
    pub completion: Completion,
    /// The job's kind, for its metrics.
    pub kind: String,
}
