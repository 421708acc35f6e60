use serde_json::Value;

use crate::common::*;

#[tokio::test]
async fn healthz_and_readyz_are_200_on_a_migrated_database() {
    let app = spawn_app().await;
    let live = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "ready");
}

#[tokio::test]
async fn readyz_is_503_when_migrations_are_missing() {
    let app = spawn_app().await;
    sqlx::query("DELETE FROM _sqlx_migrations")
        .execute(&app.pool)
        .await
        .unwrap();
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problem_details() {
    let app = spawn_app().await;
    let missing = app.client.get(app.url("/v2/nothing")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    let wrong_method = app.client.put(app.url("/v1/jobs")).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(
        wrong_method.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(wrong_method.headers()["allow"], "GET, HEAD, POST");
    assert_eq!(wrong_method.headers()["cache-control"], "no-store");
    let on_a_job = app
        .client
        .patch(app.url(&format!("/v1/jobs/{}", uuid::Uuid::now_v7())))
        .send()
        .await
        .unwrap();
    assert_eq!(on_a_job.status(), 405);
    assert_eq!(on_a_job.headers()["allow"], "DELETE, GET, HEAD");
    let on_batch = app
        .client
        .get(app.url("/v1/jobs/batch"))
        .send()
        .await
        .unwrap();
    assert_eq!(on_batch.status(), 405);
    assert_eq!(on_batch.headers()["allow"], "POST");
}
