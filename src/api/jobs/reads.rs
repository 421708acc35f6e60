//! Group reads for the status monitor: concurrent `GET /v1/jobs/{id}` requests share one `SELECT ... WHERE
//! id = ANY(...)` (one round trip, one wake-up of a backend) instead of paying for one each, on a kept
//! connection ([`crate::store::lanes`]). Each answer is still read after its request arrived. See
//! [`crate::batch`] for how groups form: a lone read goes at once.

use std::sync::Arc;

use uuid::Uuid;

use crate::batch::Batcher;
use crate::job::Job;
use crate::store::{self, lanes::Lanes};

/// The most jobs one statement reads.
const MAX_GROUP: usize = 64;
/// Statements in flight at once.
const FLUSHERS: usize = 3;

/// What a reader gets back: the job if the caller may see it, or why it could not be read.
pub type Read = Result<Option<Job>, Arc<store::Error>>;

/// The reading side. Cheap to clone.
#[derive(Clone)]
pub struct ReadGroups {
    batcher: Batcher<(Uuid, Option<String>), Read>,
}

impl ReadGroups {
    /// Starts the flusher tasks; they stop when every `ReadGroups` clone is dropped.
    pub fn start(lanes: Lanes) -> ReadGroups {
        let batcher = Batcher::start(MAX_GROUP, FLUSHERS, move |wanted| {
            read_group(lanes.clone(), wanted)
        });
        ReadGroups { batcher }
    }

    /// Job `id` as `tenant` (`None`: any tenant) may see it, read possibly together with concurrent reads.
    pub async fn get(&self, id: Uuid, tenant: Option<&str>) -> Read {
        self.batcher
            .submit((id, tenant.map(str::to_owned)))
            .await
            .unwrap_or_else(|| Err(Arc::new(store::Error::Unavailable(sqlx::Error::PoolClosed))))
    }
}

async fn read_group(lanes: Lanes, wanted: Vec<(Uuid, Option<String>)>) -> Vec<Read> {
    let read = async {
        let mut lane = lanes.get().await?;
        let read = store::jobs::get_each(lane.conn(), &wanted).await;
        lane.settle(&read);
        read
    };
    match read.await {
        Ok(jobs) => jobs.into_iter().map(Ok).collect(),
        Err(err) => {
            let err = Arc::new(err);
            wanted.iter().map(|_| Err(err.clone())).collect()
        }
    }
}
