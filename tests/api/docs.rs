use serde_json::Value;

use crate::common::*;

fn committed_yaml() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml"))
        .expect("openapi.yaml is committed")
}

#[tokio::test]
async fn the_committed_openapi_yaml_is_what_the_binary_generates() {
    let generated = jobdock::api::document().yaml;
    assert!(
        generated == committed_yaml(),
        "openapi.yaml is stale: run `cargo run -- openapi > openapi.yaml` and commit it"
    );
}

#[tokio::test]
async fn the_served_documents_equal_the_committed_one() {
    let app = spawn_app().await;
    let yaml = app
        .client
        .get(app.url("/openapi.yaml"))
        .send()
        .await
        .unwrap();
    assert_eq!(yaml.status(), 200);
    assert_eq!(yaml.text().await.unwrap(), committed_yaml());
    let json: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let committed: Value = serde_yaml::from_str(&committed_yaml()).unwrap();
    assert_eq!(json, committed);
}

#[tokio::test]
async fn swagger_ui_is_served_from_the_binary() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert!(html.contains("SwaggerUIBundle"));
    assert!(!html.contains("cdn"), "no CDN: the UI must work offline");
    assert!(html.contains("submit_job"), "the UI embeds our document");
}

fn document() -> Value {
    serde_yaml::from_str(&committed_yaml()).unwrap()
}

fn header<'a>(response: &'a Value, name: &str) -> Option<&'a Value> {
    response["headers"]
        .as_object()?
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
}

#[test]
fn the_document_declares_the_async_request_reply_contract() {
    let doc = document();
    let submit = &doc["paths"]["/v1/jobs"]["post"]["responses"];
    assert!(
        header(&submit["202"], "Location").is_some(),
        "202 has Location"
    );
    assert!(
        header(&submit["202"], "Retry-After").is_some(),
        "202 has Retry-After"
    );
    assert!(
        submit["202"]["links"]["get_job"].is_object(),
        "202 links to the status monitor"
    );
    for status in ["400", "413", "415", "422", "503"] {
        assert!(
            submit[status]["content"]["application/problem+json"].is_object(),
            "submit {status}"
        );
    }
    let monitor = &doc["paths"]["/v1/jobs/{id}"]["get"]["responses"];
    assert!(monitor["200"].is_object());
    assert!(
        header(&monitor["302"], "Location").is_some(),
        "302 has Location"
    );
    assert!(monitor["404"]["content"]["application/problem+json"].is_object());
    let result = &doc["paths"]["/v1/jobs/{id}/result"]["get"]["responses"];
    assert!(result["200"].is_object() && result["409"].is_object() && result["404"].is_object());
}

#[test]
fn every_operation_has_a_verb_resource_id_a_tag_and_a_summary() {
    let doc = document();
    let mut ids = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(
                id.contains('_') && id == id.to_lowercase(),
                "{id} is not <verb>_<resource>"
            );
            assert!(
                operation["tags"].as_array().is_some_and(|t| !t.is_empty()),
                "{id} has no tag"
            );
            assert!(operation["summary"].is_string(), "{id} has no summary");
            ids.push(id.to_owned());
        }
    }
    for expected in [
        "submit_job",
        "get_job",
        "get_job_result",
        "cancel_job",
        "delete_job",
        "list_jobs",
        "submit_jobs_batch",
    ] {
        assert!(ids.iter().any(|id| id == expected), "missing {expected}");
    }
}

#[test]
fn request_schemas_say_unknown_fields_are_rejected() {
    let doc = document();
    for name in ["SubmitJob", "SubmitBatch"] {
        assert_eq!(
            doc["components"]["schemas"][name]["additionalProperties"], false,
            "{name}"
        );
    }
}

#[tokio::test]
async fn the_documents_example_submissions_are_accepted_as_they_stand() {
    // Swagger UI's "Try it out" starts from these examples: they must work out of the box.
    let app = spawn_app().await;
    let document: Value = serde_yaml::from_str(&committed_yaml()).unwrap();
    let single = document["components"]["schemas"]["SubmitJob"]["example"].clone();
    assert_eq!(single["kind"], "echo");
    assert_eq!(app.post_job(single).await.status(), 202);
    let batch = document["components"]["schemas"]["SubmitBatch"]["example"].clone();
    let response = app
        .client
        .post(app.url("/v1/jobs/batch"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
}
