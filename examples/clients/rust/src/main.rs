//! The Rust client progenitor generates (default options) from the committed `openapi.yaml`, against a
//! live jobdock: submit -> poll -> 302 -> result, a 400 and a 404.
//!
//! Usage: `cargo run -p jobdock-client-check -- BASE_URL`

#[allow(clippy::all, clippy::pedantic, unused)]
mod generated {
    progenitor::generate_api!("../../../openapi.yaml");
}

use generated::{types, Client, Error};

fn fail(message: String) -> ! {
    eprintln!("rust client: FAILED: {message}");
    std::process::exit(1)
}

/// A submit body: only `kind` is required; everything else is left to the server's defaults.
fn submission(kind: &str, payload: Option<serde_json::Value>) -> types::SubmitJob {
    types::SubmitJob {
        kind: kind
            .parse()
            .unwrap_or_else(|err| fail(format!("the kind: {err}"))),
        payload,
        callback_url: None,
        max_attempts: None,
        priority: None,
        queue: None,
        run_at: None,
        timeout_secs: None,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    // Without redirects, so the 302 to the result is seen (progenitor reports it as an unexpected
    // response: only 2xx answers are typed).
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|err| fail(format!("cannot build the HTTP client: {err}")));
    let client = Client::new_with_client(&base, http);

    let body = submission("echo", Some(serde_json::json!({"hello": "rust"})));
    let submitted = client
        .submit_job(None, None, &body)
        .await
        .unwrap_or_else(|err| fail(format!("submit: {err}")));
    if submitted.status() != 202 {
        fail(format!("submit answered {}", submitted.status()));
    }
    let id = submitted.id;

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let location = loop {
        // A long poll: the answer comes when the monitor changes (or after 10 s).
        match client.get_job(&id, None, Some(10), None).await {
            Ok(monitor) if std::time::Instant::now() < deadline => {
                let _ = monitor.status;
            }
            Ok(_) => fail("the job did not finish within 30 s".to_owned()),
            Err(Error::UnexpectedResponse(response)) if response.status() == 302 => {
                break response
                    .headers()
                    .get("location")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
            }
            Err(err) => fail(format!("monitor: {err}")),
        }
    };
    if location != format!("/v1/jobs/{id}/result") {
        fail(format!("302 Location is {location}"));
    }
    let result = client
        .get_job_result(&id)
        .await
        .unwrap_or_else(|err| fail(format!("result: {err}")));
    let bytes: Vec<u8> = futures::TryStreamExt::try_fold(
        result.into_inner().into_inner(),
        Vec::new(),
        |mut all, chunk| async move {
            all.extend_from_slice(&chunk);
            Ok(all)
        },
    )
    .await
    .unwrap_or_else(|err| fail(format!("reading the result: {err}")));
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|err| fail(format!("the result is not JSON: {err}")));
    if value != serde_json::json!({"hello": "rust"}) {
        fail(format!("the result is {value}"));
    }

    let unknown = submission("no-such-kind", None);
    match client.submit_job(None, None, &unknown).await {
        Err(Error::ErrorResponse(response)) if response.status() == 400 => {}
        other => fail(format!(
            "an unknown kind answered {:?}",
            other.map(|r| r.status())
        )),
    }

    match client
        .get_job(&uuid::Uuid::new_v4(), None, None, None)
        .await
    {
        Err(Error::ErrorResponse(response)) if response.status() == 404 => {}
        other => fail(format!(
            "an unknown job answered {:?}",
            other.map(|r| r.status())
        )),
    }

    println!("rust client: ok (submit -> long poll -> 302 -> result, 400, 404)");
}
