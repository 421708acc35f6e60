//! When to claim: notifications and poll ticks say due jobs may be waiting, and name the tenants that have
//! them, so claims need not look for tenants each time (see `store::leases::queued_tenants`). The same
//! [`Dispatcher`]'s state, in a file of its own.

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
        let named = !notified.is_empty() && notified.iter().all(|tenant| !tenant.is_empty());
        match &self.tenants {
            Some((tenants, _)) if named => {
                let mut tenants = tenants.to_vec();
                for tenant in notified {
                    if !tenants.contains(&tenant) {
                        tenants.push(tenant);
                    }
                }
                // A search in flight may have looked before these jobs arrived: its answer is not kept.
                self.tenant_epoch += 1;
                self.tenants = Some((tenants.into(), self.tenant_epoch));
            }
            _ => self.forget_tenants(),
        }
        self.woken();
    }

    /// Makes the next claim look for the tenants with queued jobs again.
    pub(super) fn forget_tenants(&mut self) {
        self.tenants = None;
        self.tenant_epoch += 1;
    }
}
