//! The registry's REST API over HTTP: Confluent paths, JSON shapes and error codes, and the client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::sync::Arc;

use orderflow_registry::{Compatibility, MemoryStorage, RegistryClient, RegistryService, router};
use serde_json::{Value, json};

async fn serve() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = router(RegistryService::new(Arc::new(MemoryStorage::default())));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

const V1: &str = r#"{"type":"record","name":"E","fields":[{"name":"a","type":"long"}]}"#;
const V2_OK: &str = r#"{"type":"record","name":"E","fields":[{"name":"a","type":"long"},{"name":"b","type":"string","default":""}]}"#;
const V2_BAD: &str =
    r#"{"type":"record","name":"E","fields":[{"name":"a","type":"long"},{"name":"b","type":"string"}]}"#;

async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["content-type"],
        "application/vnd.schemaregistry.v1+json"
    );
    (status, response.json().await.expect("json"))
}

#[tokio::test]
async fn subjects_versions_and_ids_follow_the_confluent_api() {
    let base = serve().await;
    let client = RegistryClient::new(&base).expect("client");
    let id = client.register_schema("e-value", V1).await.expect("register");
    assert_eq!(
        client.register_schema("e-value", V1).await.expect("again"),
        id,
        "same schema, same id"
    );
    let (status, other) = call(
        reqwest::Method::POST,
        format!("{base}/subjects/other-value/versions"),
        Some(json!({"schema": V1})),
    )
    .await;
    assert_eq!(
        (status, other["id"].as_u64()),
        (200, Some(u64::from(id))),
        "ids are global"
    );
    let id2 = client
        .register_schema("e-value", V2_OK)
        .await
        .expect("compatible v2");
    assert_ne!(id, id2);
    assert_eq!(client.versions("e-value").await.expect("versions"), vec![1, 2]);

    let (status, latest) = call(
        reqwest::Method::GET,
        format!("{base}/subjects/e-value/versions/latest"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            latest["subject"].as_str(),
            latest["version"].as_u64(),
            latest["id"].as_u64()
        ),
        (Some("e-value"), Some(2), Some(u64::from(id2)))
    );
    let (_, by_id) = call(reqwest::Method::GET, format!("{base}/schemas/ids/{id}"), None).await;
    let schema: Value = serde_json::from_str(by_id["schema"].as_str().expect("schema")).expect("json schema");
    assert_eq!(schema["fields"][0]["name"], "a");
    let (status, found) = call(
        reqwest::Method::POST,
        format!("{base}/subjects/e-value"),
        Some(json!({"schema": V1})),
    )
    .await;
    assert_eq!((status, found["version"].as_u64()), (200, Some(1)));
    let (_, subjects) = call(reqwest::Method::GET, format!("{base}/subjects"), None).await;
    assert_eq!(subjects, json!(["e-value", "other-value"]));
}

#[tokio::test]
async fn incompatible_schemas_are_refused_with_the_field_and_rule() {
    let base = serve().await;
    let client = RegistryClient::new(&base).expect("client");
    client.register_schema("e-value", V1).await.expect("v1");
    let verdict = client.test_compatibility("e-value", V2_BAD).await.expect("asked");
    let reasons = verdict.expect_err("incompatible under BACKWARD");
    assert!(
        reasons[0].contains("BACKWARD rule broken") && reasons[0].contains("'b'"),
        "{reasons:?}"
    );
    assert_eq!(
        client.test_compatibility("e-value", V2_OK).await.expect("asked"),
        Ok(())
    );

    let (status, error) = call(
        reqwest::Method::POST,
        format!("{base}/subjects/e-value/versions"),
        Some(json!({"schema": V2_BAD})),
    )
    .await;
    assert_eq!((status, error["error_code"].as_u64()), (409, Some(409)));
    assert!(
        error["message"].as_str().is_some_and(|m| m.contains("'b'")),
        "{error}"
    );

    client
        .set_compatibility(Some("e-value"), Compatibility::None)
        .await
        .expect("config");
    let (_, level) = call(reqwest::Method::GET, format!("{base}/config/e-value"), None).await;
    assert_eq!(level["compatibilityLevel"], "NONE");
    assert!(
        client.register_schema("e-value", V2_BAD).await.is_ok(),
        "NONE checks nothing"
    );
}

#[tokio::test]
async fn errors_carry_confluent_codes() {
    let base = serve().await;
    let cases = [
        (reqwest::Method::GET, "/schemas/ids/77", None, 404, 40403),
        (reqwest::Method::GET, "/subjects/nope/versions", None, 404, 40401),
        (
            reqwest::Method::POST,
            "/subjects/x-value/versions",
            Some(json!({"schema": "{not json"})),
            422,
            42201,
        ),
        (
            reqwest::Method::POST,
            "/subjects/x-value/versions",
            Some(json!({"schema": r#"{"type":"record","name":"R"}"#})),
            422,
            42201,
        ),
        (
            reqwest::Method::PUT,
            "/config",
            Some(json!({"compatibility": "SIDEWAYS"})),
            422,
            42203,
        ),
        (reqwest::Method::GET, "/config/nope", None, 404, 40408),
    ];
    for (method, path, body, status, code) in cases {
        let (got, error) = call(method, format!("{base}{path}"), body).await;
        assert_eq!(
            (got, error["error_code"].as_u64()),
            (status, Some(code)),
            "{path}: {error}"
        );
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // A client error's message says why, the parser's error included.
    let (_, error) = call(
        reqwest::Method::POST,
        format!("{base}/subjects/x-value/versions"),
        Some(json!({"schema": "{not json"})),
    )
    .await;
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("invalid schema: not JSON: ")
            && message.len() > "invalid schema: not JSON: ".len(),
        "{message}"
    );
    call(
        reqwest::Method::POST,
        format!("{base}/subjects/x-value/versions"),
        Some(json!({"schema": V1})),
    )
    .await;
    let (status, error) = call(
        reqwest::Method::GET,
        format!("{base}/subjects/x-value/versions/9"),
        None,
    )
    .await;
    assert_eq!((status, error["error_code"].as_u64()), (404, Some(40402)));
    let (_, global) = call(reqwest::Method::GET, format!("{base}/config"), None).await;
    assert_eq!(global["compatibilityLevel"], "BACKWARD", "the default level");
}
