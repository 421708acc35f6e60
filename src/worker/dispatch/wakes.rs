//! When to claim: notifications and poll ticks say due jobs may be waiting, and name the tenants that have
//! them, so claims need not look for tenants each time (see `store::leases::queued_tenants`). The same
//! [`Dispatcher`]'s state, in a file of its own.

use std::sync::Arc;

use super::Dispatcher;

impl Dispatcher {
    pub(super) fn woken(&mut self) {
        self.wakes += 1;
        self.want_jobs = true;
    }

    /// Jobs were submitted or requeued. A notification names the tenant whose jobs were submitted: it
    /// joins the list (it has queued jobs now), so a busy queue does not pay a search per submission. One
    /// without a name (a requeue, a rescue) makes the next claim search again.
    pub(super) fn notified(&mut self) {
        let notified = match self.shared.notified.lock() {
            Ok(mut notified) => std::mem::take(&mut *notified),
            Err(_) => Vec::new(),
        };
        // Empty: what woke us was taken by an earlier look already.
        if notified.iter().any(|tenant| tenant.is_empty()) {
            self.forget_tenants();
        } else if let Some(tenants) = &self.tenants {
            if let Some(joined) = joined(tenants, &notified) {
                self.tenants = Some(joined);
            }
        } else {
            // A search may be in flight that looked before these jobs arrived: its answer is completed
            // with these names (see `found_tenants`).
            for tenant in notified {
                if !self.named_meanwhile.contains(&tenant) {
                    self.named_meanwhile.push(tenant);
                }
            }
        }
        self.woken();
    }

    /// A search for tenants answered. Kept unless something made the list stale since it was sent (an
    /// unnamed notification, a poll tick), together with what is known already: the list may hold a
    /// tenant whose jobs are gone (its claims find nothing until the next poll tick forgets it), never
    /// miss one that notified.
    pub(super) fn found_tenants(&mut self, found: Arc<[String]>, epoch: u64) {
        if epoch != self.tenant_epoch {
            return;
        }
        let mut tenants = found;
        if let Some(known) = &self.tenants {
            if let Some(joined) = joined(&tenants, known) {
                tenants = joined;
            }
        }
        let meanwhile = std::mem::take(&mut self.named_meanwhile);
        if let Some(joined) = joined(&tenants, &meanwhile) {
            tenants = joined;
        }
        self.tenants = Some(tenants);
    }

    /// Makes the next claim look for the tenants with queued jobs again.
    pub(super) fn forget_tenants(&mut self) {
        self.tenants = None;
        self.named_meanwhile.clear();
        self.tenant_epoch += 1;
    }
}

/// `list` with the names of `more` it lacks, or `None` when it lacks none.
fn joined(list: &Arc<[String]>, more: &[String]) -> Option<Arc<[String]>> {
    let missing: Vec<&String> = more
        .iter()
        .filter(|tenant| !list.contains(tenant))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let mut list = list.to_vec();
    for tenant in missing {
        if !list.contains(tenant) {
            list.push(tenant.clone());
        }
    }
    Some(list.into())
}
