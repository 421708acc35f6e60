//! A 202 means the job is stored: a server killed in the middle of a burst of submissions has a row for
//! every job it acknowledged. (A job committed whose 202 was lost to the kill is fine, and not counted.)

use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::{stream, StreamExt};
use serde_json::json;
use uuid::Uuid;

use crate::common::{client, TestDatabase};
use crate::support::*;

const REQUESTS: usize = 400;
const CONCURRENCY: usize = 32;
/// The server is killed once this many submissions have been answered 202.
const KILL_AFTER: usize = 100;

#[tokio::test]
async fn every_job_answered_202_is_stored_even_when_the_server_is_killed_mid_burst() {
    let database = TestDatabase::create().await;
    let pool = test_pool(&database.url).await;
    let mut server = Jobdock::serve(
        "burst",
        &database.url,
        &["--workers", "0", "--db-max-connections", "8"],
    )
    .await;
    let http = client();
    let answered = AtomicUsize::new(0);

    let outcomes: Vec<Result<Uuid, String>> = stream::iter(0..REQUESTS)
        .map(|i| {
            let (http, server, answered) = (&http, &server, &answered);
            async move {
                let body = json!({ "kind": "echo", "payload": { "i": i } });
                let outcome = try_submit(http, server, &body).await;
                if outcome.is_ok() && answered.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER {
                    server.signal("KILL");
                }
                outcome
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    server.kill();

    let accepted: Vec<Uuid> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok())
        .copied()
        .collect();
    let failed = outcomes.iter().filter(|o| o.is_err()).count();
    assert!(
        accepted.len() >= KILL_AFTER,
        "the burst should get at least {KILL_AFTER} answers before the kill"
    );
    assert!(
        failed > 0,
        "the kill should interrupt the burst (all {REQUESTS} were answered 202)"
    );

    await_backends_gone(&pool, &server).await;
    let stored = count_jobs(&pool, &accepted, "true").await;
    let missing: Vec<Uuid> = {
        let present: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM jobs WHERE id = ANY($1)")
            .bind(&accepted)
            .fetch_all(&pool)
            .await
            .expect("stored ids");
        accepted
            .iter()
            .filter(|id| !present.contains(id))
            .copied()
            .collect()
    };
    assert!(
        missing.is_empty(),
        "{} of {} jobs answered 202 have no row: {missing:?}",
        missing.len(),
        accepted.len()
    );
    assert_eq!(stored, i64::try_from(accepted.len()).expect("count"));

    // Informational: rows committed whose 202 never arrived (allowed, see PITFALLS).
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&pool)
        .await
        .expect("count");
    eprintln!(
        "{} answered 202, {failed} failed or unanswered, {} committed without an answer",
        accepted.len(),
        total - stored
    );
}
