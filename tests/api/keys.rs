//! API keys and tenants (DESIGN §11): who may call, what each scope allows, and that a tenant sees only
//! its own jobs on every path.

use std::time::Duration;

use jobdock::config::{AuthMode, KeysAction};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::*;

const EXTERNAL: &str = r#"
[kinds.scan]
handler = "external"
"#;

/// Creates a key with `jobdock keys create` as a library call; returns the key.
async fn create_key(app: &TestApp, tenant: &str, scopes: &str) -> String {
    let printed = jobdock::keys::run(
        &app.pool,
        KeysAction::Create {
            tenant: tenant.to_owned(),
            name: format!("{tenant} test key"),
            scopes: scopes.to_owned(),
        },
    )
    .await
    .expect("create key");
    printed.trim().to_owned()
}

/// A server that runs the configured `scan` kind only through external workers (no in-process slots, so
/// jobs stay where the test puts them).
async fn app() -> TestApp {
    let file = jobdock::config::file::parse(std::path::Path::new("jobdock.toml"), EXTERNAL)
        .expect("valid config");
    spawn_app_with(move |settings| {
        settings.kinds = file.kinds;
        settings.workers = 0;
    })
    .await
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.client.request(method, app.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("request")
}

/// What a claim of `scan` jobs with `key` returns.
async fn claim_as(app: &TestApp, key: &str) -> Value {
    call(
        app,
        Method::POST,
        "/v1/worker/claim",
        Some(key),
        Some(json!({"worker_id": "w", "kinds": ["scan"], "wait_secs": 0})),
    )
    .await
    .json()
    .await
    .unwrap()
}

async fn submit_as(app: &TestApp, key: &str, body: Value) -> Uuid {
    let response = call(app, Method::POST, "/v1/jobs", Some(key), Some(body)).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let job: Value = response.json().await.unwrap();
    job["id"].as_str().unwrap().parse().unwrap()
}

/// Waits until every replica's key cache has seen a change (reloaded twice a second).
async fn until_status(app: &TestApp, key: Option<&str>, status: StatusCode) -> bool {
    eventually(Duration::from_secs(3), || async {
        call(app, Method::GET, "/v1/jobs", key, None).await.status() == status
    })
    .await
}

/// Waits until the server has loaded the keys just created: a call without a key is then refused.
async fn keys_in_force(app: &TestApp) -> bool {
    until_status(app, None, StatusCode::UNAUTHORIZED).await
}

#[tokio::test]
async fn the_server_runs_open_until_a_key_exists_and_then_asks_for_one() {
    let app = app().await;
    assert_eq!(
        call(&app, Method::GET, "/v1/jobs", None, None)
            .await
            .status(),
        StatusCode::OK
    );
    let key = create_key(&app, "acme", "submit,read").await;
    assert!(until_status(&app, None, StatusCode::UNAUTHORIZED).await);
    let response = call(&app, Method::GET, "/v1/jobs", None, None).await;
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"jobdock\""
    );
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], 401);
    assert_eq!(
        call(&app, Method::GET, "/v1/jobs", Some(&key), None)
            .await
            .status(),
        StatusCode::OK
    );
    // The probes, the document and Swagger UI stay open.
    for path in ["/healthz", "/readyz", "/openapi.json", "/docs"] {
        assert_eq!(
            call(&app, Method::GET, path, None, None).await.status(),
            StatusCode::OK,
            "{path}"
        );
    }
}

#[tokio::test]
async fn an_unknown_key_is_401_a_missing_scope_is_403_and_neither_changes_anything() {
    let app = app().await;
    let reader = create_key(&app, "acme", "read").await;
    let worker = create_key(&app, "acme", "work").await;
    assert!(until_status(&app, Some("jdk_not_a_key"), StatusCode::UNAUTHORIZED).await);
    let job = json!({"kind": "echo", "payload": {}});
    let response = call(
        &app,
        Method::POST,
        "/v1/jobs",
        Some(&reader),
        Some(job.clone()),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let problem: Value = response.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("`submit`"));
    let response = call(&app, Method::GET, "/v1/jobs", Some(&worker), None).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = call(
        &app,
        Method::POST,
        "/v1/worker/claim",
        Some(&reader),
        Some(json!({"worker_id": "w", "kinds": ["scan"], "wait_secs": 0})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    for bad in ["Bearer jdk_wrong", "Basic YWNtZTpzZWNyZXQ=", "Bearer"] {
        let response = app
            .client
            .post(app.url("/v1/jobs"))
            .header("authorization", bad)
            .json(&job)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{bad}");
    }
    assert_eq!(count(&app.pool, "SELECT count(*) FROM jobs").await, 0);
}

#[tokio::test]
async fn another_tenants_job_is_404_on_every_path_and_absent_from_lists() {
    let app = app().await;
    let acme = create_key(&app, "acme", "submit,read,work").await;
    let globex = create_key(&app, "globex", "submit,read,work").await;
    let admin = create_key(&app, "ops", "admin").await;
    assert!(keys_in_force(&app).await);
    let queued = submit_as(&app, &acme, json!({"kind": "scan", "payload": {}})).await;
    let done = submit_as(&app, &acme, json!({"kind": "echo", "payload": {}})).await;
    // Finish `done` by hand so the result and delete paths have something to find.
    sqlx::query(
        "WITH j AS (UPDATE jobs SET status = 'succeeded', finished_at = now() WHERE id = $1 RETURNING id) \
         INSERT INTO results (job_id, content_type, body) SELECT id, 'application/json', '{}' FROM j",
    )
    .bind(done)
    .execute(&app.pool)
    .await
    .unwrap();
    let token = Uuid::new_v4();
    let paths = [
        (Method::GET, format!("/v1/jobs/{queued}"), None),
        (Method::GET, format!("/v1/jobs/{done}/result"), None),
        (Method::POST, format!("/v1/jobs/{queued}/cancel"), None),
        (Method::DELETE, format!("/v1/jobs/{done}"), None),
        (
            Method::POST,
            format!("/v1/worker/jobs/{queued}/heartbeat"),
            Some(json!({"lease_token": token})),
        ),
        (
            Method::POST,
            format!("/v1/worker/jobs/{queued}/fail"),
            Some(json!({"lease_token": token, "error": {"title": "x"}})),
        ),
    ];
    for (method, path, body) in &paths {
        let response = call(&app, method.clone(), path, Some(&globex), body.clone()).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
    }
    let response = app
        .client
        .post(app.url(&format!("/v1/worker/jobs/{queued}/complete")))
        .bearer_auth(&globex)
        .header("lease-token", token.to_string())
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    // Nothing changed: still queued, still there.
    let monitor: Value = call(
        &app,
        Method::GET,
        &format!("/v1/jobs/{queued}"),
        Some(&acme),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(monitor["status"], "queued");
    assert_eq!(count(&app.pool, "SELECT count(*) FROM jobs").await, 2);
    let list: Value = call(&app, Method::GET, "/v1/jobs", Some(&globex), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["jobs"], json!([]));
    let claimed: Value = claim_as(&app, &globex).await;
    assert_eq!(claimed["jobs"], json!([]));
    // Its own tenant and an admin see it.
    let list: Value = call(&app, Method::GET, "/v1/jobs", Some(&acme), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["jobs"].as_array().unwrap().len(), 2);
    let response = call(
        &app,
        Method::GET,
        &format!("/v1/jobs/{done}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let claimed: Value = claim_as(&app, &acme).await;
    assert_eq!(claimed["jobs"][0]["id"], queued.to_string());
}

#[tokio::test]
async fn an_admin_key_claims_any_tenants_jobs() {
    let app = app().await;
    let acme = create_key(&app, "acme", "submit").await;
    let admin = create_key(&app, "ops", "admin").await;
    assert!(keys_in_force(&app).await);
    let id = submit_as(&app, &acme, json!({"kind": "scan", "payload": {}})).await;
    let claimed: Value = claim_as(&app, &admin).await;
    assert_eq!(claimed["jobs"][0]["id"], id.to_string());
    let tenant: String = sqlx::query_scalar("SELECT tenant FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(tenant, "acme");
}

#[tokio::test]
async fn idempotency_keys_are_scoped_per_tenant() {
    let app = app().await;
    let acme = create_key(&app, "acme", "submit,read").await;
    let globex = create_key(&app, "globex", "submit,read").await;
    assert!(keys_in_force(&app).await);
    let send = |key: String, payload: Value| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/v1/jobs"))
                .bearer_auth(key)
                .header("idempotency-key", "order-42")
                .json(&json!({"kind": "scan", "payload": payload}))
                .send()
                .await
                .unwrap()
        }
    };
    let first = send(acme.clone(), json!({"n": 1})).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    // Another tenant's use of the same key is its own job, with a different request and no 422.
    let other = send(globex.clone(), json!({"n": 2})).await;
    assert_eq!(other.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.unwrap();
    let other: Value = other.json().await.unwrap();
    assert_ne!(first["id"], other["id"]);
    // Within a tenant the key still means the same job.
    let again: Value = send(acme, json!({"n": 1})).await.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(send(globex, json!({"n": 3})).await.status(), 422);
}

#[tokio::test]
async fn a_revoked_key_is_refused_within_a_second() {
    let app = app().await;
    let key = create_key(&app, "acme", "read").await;
    assert!(keys_in_force(&app).await);
    let id: i64 = sqlx::query_scalar("SELECT id FROM api_keys")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let printed = jobdock::keys::run(&app.pool, KeysAction::Revoke { id })
        .await
        .unwrap();
    assert!(printed.contains("revoked"));
    let revoked_at = std::time::Instant::now();
    assert!(until_status(&app, Some(&key), StatusCode::UNAUTHORIZED).await);
    assert!(
        revoked_at.elapsed() <= Duration::from_millis(1_200),
        "took {:?}",
        revoked_at.elapsed()
    );
    // Revoking every key does not reopen the server.
    assert_eq!(
        call(&app, Method::GET, "/v1/jobs", None, None)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let missing = jobdock::keys::run(&app.pool, KeysAction::Revoke { id: id + 100 }).await;
    assert!(missing.is_err());
}

#[tokio::test]
async fn keys_list_shows_every_key_and_no_secret() {
    let app = app().await;
    let key = create_key(&app, "acme", "submit, read").await;
    assert!(key.starts_with("jdk_") && key.len() > 40);
    let stored: Vec<u8> = sqlx::query_scalar("SELECT key_sha256 FROM api_keys")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_ne!(stored, key.as_bytes());
    let table = jobdock::keys::run(&app.pool, KeysAction::List)
        .await
        .unwrap();
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .split("  ")
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header.iter().map(|c| c.trim()).collect::<Vec<_>>(),
        [
            "ID",
            "TENANT",
            "NAME",
            "SCOPES",
            "CREATED",
            "LAST USED",
            "REVOKED"
        ]
    );
    let row = lines.next().unwrap();
    assert!(row.contains("acme") && row.contains("submit,read"), "{row}");
    assert!(
        !table.contains(&key[4..12]),
        "the list shows part of the secret"
    );
    for bad in [
        ("bad tenant!", "read"),
        ("acme", "read,write"),
        ("acme", ""),
    ] {
        let created = jobdock::keys::run(
            &app.pool,
            KeysAction::Create {
                tenant: bad.0.to_owned(),
                name: "x".to_owned(),
                scopes: bad.1.to_owned(),
            },
        )
        .await;
        assert!(created.is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn auto_refuses_to_start_open_on_a_non_loopback_address() {
    let database = TestDatabase::create().await;
    let open_on_all = |auth: AuthMode| {
        let mut settings = test_settings(&database.url);
        settings.listen = "0.0.0.0:0".parse().unwrap();
        settings.auth = auth;
        settings
    };
    let refused =
        jobdock::Application::build(open_on_all(AuthMode::Auto), jobdock::Registry::builtin())
            .await
            .err()
            .expect("refused");
    let message = format!("{refused:#}");
    assert!(
        message.contains("jobdock keys create") && message.contains("--auth none"),
        "{message}"
    );
    assert!(
        jobdock::Application::build(open_on_all(AuthMode::None), jobdock::Registry::builtin())
            .await
            .is_ok()
    );
    // With a key it starts, and asks for keys.
    let pool = database.pool().await;
    jobdock::keys::run(
        &pool,
        KeysAction::Create {
            tenant: "acme".into(),
            name: "ci".into(),
            scopes: "read".into(),
        },
    )
    .await
    .unwrap();
    let app =
        jobdock::Application::build(open_on_all(AuthMode::Auto), jobdock::Registry::builtin())
            .await
            .expect("starts with a key");
    drop(app);
}

#[tokio::test]
async fn auth_keys_refuses_every_caller_until_a_key_exists() {
    let app = spawn_app_with(|settings| settings.auth = AuthMode::Keys).await;
    assert_eq!(
        call(&app, Method::GET, "/v1/jobs", None, None)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&app, Method::GET, "/healthz", None, None)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn concurrent_status_reads_of_two_tenants_each_see_only_their_own_jobs() {
    // Monitor reads that arrive together share one statement; the tenant check must still hold per read.
    let app = app().await;
    let acme = create_key(&app, "acme", "submit,read").await;
    let globex = create_key(&app, "globex", "submit,read").await;
    assert!(keys_in_force(&app).await);
    let mut jobs = Vec::new();
    for _ in 0..10 {
        jobs.push((
            "acme",
            submit_as(&app, &acme, json!({"kind": "scan", "payload": {}})).await,
        ));
        jobs.push((
            "globex",
            submit_as(&app, &globex, json!({"kind": "scan", "payload": {}})).await,
        ));
    }
    let reads = jobs.iter().flat_map(|&(owner, id)| {
        [(owner, id, &acme, "acme"), (owner, id, &globex, "globex")].map(
            |(owner, id, key, reader)| {
                let app = &app;
                async move {
                    let path = format!("/v1/jobs/{id}");
                    let response = call(app, Method::GET, &path, Some(key), None).await;
                    (
                        owner,
                        id,
                        reader,
                        response.status(),
                        response.text().await.unwrap(),
                    )
                }
            },
        )
    });
    let answers = futures_util::future::join_all(reads).await;
    assert_eq!(answers.len(), 40);
    for (owner, id, reader, status, body) in answers {
        if owner == reader {
            assert_eq!(
                status,
                StatusCode::OK,
                "{reader} reading its own {id}: {body}"
            );
            assert!(
                body.contains(&id.to_string()),
                "{reader} got another job: {body}"
            );
        } else {
            assert_eq!(
                status,
                StatusCode::NOT_FOUND,
                "{reader} reading {owner}'s {id}: {body}"
            );
        }
    }
}
