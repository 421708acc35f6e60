//! The hand-off between an executor and the dispatcher: a succeeded job's result goes to the dispatcher,
//! which writes it in its next batch and answers whether it applied. A module of its own so the executor
//! and the dispatcher depend on it, not on each other.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::store::leases::Completion;

/// Whether a completion applied (false: the lease was lost), or the error its statement hit.
pub type Completed = Result<bool, Arc<crate::store::Error>>;

/// A succeeded job's result, handed to the dispatcher by its executor, which waits for the answer.
pub(crate) struct Finished {
    pub completion: Completion,
    pub reply: oneshot::Sender<Completed>,
}
