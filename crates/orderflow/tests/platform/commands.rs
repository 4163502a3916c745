//! The operational commands: `schemas check`, `dlq list|show|replay`, `audit verify` and `reconcile`.

use std::time::Duration;

use orderflow_roles::{Platform, Role};
use orderflow_testkit::unique;
use serde_json::{Value, json};

use crate::support::*;

/// A schema folder holding the committed `order.created` v1 and the given v2 (edited from v1 by `edit`).
fn schema_dir_with_v2(edit: impl FnOnce(&mut Vec<Value>)) -> std::path::PathBuf {
    let v1_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../events/schemas/order.created/v1.avsc"
    );
    let v1 = std::fs::read_to_string(v1_path).expect("committed v1");
    let mut v2: Value = serde_json::from_str(&v1).expect("json");
    let mut fields = v2["fields"].as_array().expect("fields").clone();
    edit(&mut fields);
    v2["fields"] = Value::Array(fields);
    let dir = temp_dir().join("schemas");
    let topic = dir.join("order.created");
    std::fs::create_dir_all(&topic).expect("dir");
    std::fs::write(topic.join("v1.avsc"), v1).expect("v1");
    std::fs::write(topic.join("v2.avsc"), v2.to_string()).expect("v2");
    std::fs::write(topic.join("COMPATIBILITY"), "FULL_TRANSITIVE\n").expect("level");
    dir
}

fn check_output(dir: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let dir = dir.display().to_string();
    let out = run_binary(&[&["schemas", "check", "--dir", &dir][..], extra].concat(), &[]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_check_rejects_breaking_changes_naming_the_field_and_rule() {
    let (ok, text) = check_output(
        &schema_dir_with_v2(|f| f.push(json!({"name": "channel", "type": "string", "default": "web"}))),
        &[],
    );
    assert!(ok, "adding a field with a default is compatible: {text}");
    assert!(
        text.contains("order.created") && text.contains("v2") && text.contains("ok"),
        "{text}"
    );

    let removed = schema_dir_with_v2(|f| f.retain(|field| field["name"] != "currency"));
    let (ok, text) = check_output(&removed, &[]);
    assert!(!ok, "removing a field without default must fail: {text}");
    assert!(
        text.contains("FORWARD rule broken") && text.contains("'currency'"),
        "{text}"
    );

    let retyped = schema_dir_with_v2(|f| {
        for field in f.iter_mut().filter(|field| field["name"] == "total_minor") {
            field["type"] = json!("string");
        }
    });
    let (ok, text) = check_output(&retyped, &[]);
    assert!(!ok, "an incompatible type change must fail: {text}");
    assert!(
        text.contains("BACKWARD rule broken") && text.contains("'total_minor'"),
        "{text}"
    );

    let added = schema_dir_with_v2(|f| f.push(json!({"name": "channel", "type": "string"})));
    let (ok, text) = check_output(&added, &[]);
    assert!(
        !ok && text.contains("BACKWARD rule broken") && text.contains("'channel'"),
        "{text}"
    );

    // The registry's compatibility endpoint (the embedded one, served by the orders role) says the same.
    let platform = Platform::start(embedded_settings(&temp_dir()), &[Role::Orders])
        .await
        .expect("platform");
    let registry = format!("http://{}/registry", platform.http_addr.expect("http"));
    let only_registry = schema_dir_with_v2(|f| f.retain(|field| field["name"] != "currency"));
    std::fs::remove_file(only_registry.join("order.created/v1.avsc")).expect("leave only v2 locally");
    let (ok, text) =
        tokio::task::spawn_blocking(move || check_output(&only_registry, &["--registry", &registry]))
            .await
            .expect("check");
    assert!(!ok, "{text}");
    assert!(
        text.contains("registry order.created-value") && text.contains("'currency'"),
        "{text}"
    );
    platform.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_commands_list_show_and_replay_dead_letters() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let kafka = orderflow_testkit::kafka().bootstrap_servers();
    let prefix = format!("{}.", unique("dlq"));
    let cluster = ["--kafka-bootstrap", &kafka, "--topic-prefix", &prefix];
    let applied = run_binary(&[&["topics", "apply"][..], &cluster].concat(), &[]);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );

    // A dead letter as the consumer runtime writes it, in the payments group's dead-letter topic of
    // order.created, which `topics apply` created.
    let created = format!("{prefix}order.created");
    let dead = format!("{created}.orderflow-payments.dlq");
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka)
        .create()
        .expect("producer");
    let letter = |event: &str, kind: &str, message: &str| {
        [
            ("event-id", event),
            ("original-topic", created.as_str()),
            ("original-partition", "2"),
            ("original-offset", "17"),
            ("original-timestamp", "1700000000000"),
            ("consumer-group", "payments"),
            ("error-kind", kind),
            ("error-message", message),
            ("attempts", "1"),
        ]
        .iter()
        .fold(OwnedHeaders::new(), |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            })
        })
    };
    for (key, payload, headers) in [
        (
            "order-1",
            "not avro",
            letter("ev-1", "permanent", "cannot decode"),
        ),
        ("order-2", "later", letter("ev-2", "transient", "timed out")),
    ] {
        producer
            .send(
                FutureRecord::to(&dead)
                    .partition(0)
                    .key(key)
                    .payload(payload)
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }

    // Every dead-letter topic, every group's of order.created, and the group's own list the same letter
    // (the permanent one; the transient one is filtered out by kind).
    for args in [
        &["dlq", "list", "--error-kind", "permanent"][..],
        &["dlq", "list", "order.created", "--error-kind", "permanent"],
        &[
            "dlq",
            "list",
            "--group",
            "orderflow-payments",
            "--error-kind",
            "permanent",
        ],
    ] {
        let listed = run_binary(&[args, &cluster].concat(), &[]);
        assert!(
            listed.status.success(),
            "{}",
            String::from_utf8_lossy(&listed.stderr)
        );
        let text = String::from_utf8_lossy(&listed.stdout).into_owned();
        assert_eq!(text.lines().count(), 1, "{args:?}: {text}");
        assert!(
            text.contains(&format!(
                "{dead} 0:0 from {created}/2/17 group=payments kind=permanent attempts=1 error=\"cannot decode\""
            )),
            "{text}"
        );
    }
    // JSON lines, filtered by age: both letters are minutes old, none is from the future.
    let json = run_binary(
        &[&["dlq", "list", "--json", "--since", "1h"][..], &cluster].concat(),
        &[],
    );
    assert!(json.status.success(), "{}", String::from_utf8_lossy(&json.stderr));
    let letters: Vec<Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON object per line"))
        .collect();
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!(letters[1]["key"], "order-2");
    assert_eq!(letters[1]["headers"]["error-kind"], "transient");
    assert_eq!(letters[1]["value_base64"], "bGF0ZXI=");
    assert!(
        letters[1]["timestamp"]
            .as_str()
            .is_some_and(|t| t.starts_with("20"))
    );
    let future = run_binary(
        &[&["dlq", "list", "--since", "2999-01-01T00:00:00Z"][..], &cluster].concat(),
        &[],
    );
    assert!(future.status.success());
    assert_eq!(String::from_utf8_lossy(&future.stdout).trim(), "");
    let bad = run_binary(
        &[&["dlq", "list", "--since", "lately"][..], &cluster].concat(),
        &[],
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("neither an RFC 3339 time nor an age"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // A dry run counts what a replay would send, over every dead-letter topic of the group, and sends
    // nothing.
    let dry = run_binary(
        &[
            &[
                "dlq",
                "replay",
                "--group",
                "orderflow-payments",
                "--error-kind",
                "permanent",
                "--dry-run",
            ][..],
            &cluster,
        ]
        .concat(),
        &[],
    );
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    assert!(
        String::from_utf8_lossy(&dry.stdout).starts_with("would replay 1 dead letter(s) of 2 read in "),
        "{}",
        String::from_utf8_lossy(&dry.stdout)
    );

    let other = run_binary(
        &[
            &["dlq", "list", "order.created", "--group", "orderflow-audit"][..],
            &cluster,
        ]
        .concat(),
        &[],
    );
    assert!(other.status.success());
    assert_eq!(String::from_utf8_lossy(&other.stdout).trim(), "");

    // A topic without its group is ambiguous: a one-line error.
    let ambiguous = run_binary(
        &[&["dlq", "show", "order.created", "0", "0"][..], &cluster].concat(),
        &[],
    );
    assert!(!ambiguous.status.success());
    let stderr = String::from_utf8_lossy(&ambiguous.stderr);
    assert!(stderr.contains("is not a dead-letter topic"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let shown = run_binary(
        &[
            &[
                "dlq",
                "show",
                "order.created",
                "0",
                "0",
                "--group",
                "orderflow-payments",
            ][..],
            &cluster,
        ]
        .concat(),
        &[],
    );
    let text = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert!(text.contains("key: order-1"), "{text}");
    assert!(text.contains("header error-message: cannot decode"), "{text}");
    assert!(text.contains("value: not avro"), "{text}");

    let missing = run_binary(
        &[
            &["dlq", "show", "order.created.orderflow-payments.dlq", "0", "5"][..],
            &cluster,
        ]
        .concat(),
        &[],
    );
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("no dead letter at"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let replayed = run_binary(
        &[
            &[
                "dlq",
                "replay",
                "order.created.orderflow-payments.dlq",
                "--error-kind",
                "permanent",
            ][..],
            &cluster,
        ]
        .concat(),
        &[],
    );
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&replayed.stdout).trim(),
        "replayed 1 dead letter(s)"
    );
    // Replayed to the payments group's first retry topic: no other group sees it again.
    let retry = format!("{created}.orderflow-payments.retry.1");
    let back = orderflow_testkit::read_topic(&kafka, &retry, 1, Duration::from_secs(30)).expect("read");
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].key, "order-1");
    assert_eq!(back[0].payload, b"not avro");
    assert_eq!(back[0].headers.get("event-id").map(String::as_str), Some("ev-1"));
    assert_eq!(
        back[0].headers.get("original-topic").map(String::as_str),
        Some(created.as_str()),
        "the record keeps its source"
    );
    for dropped in ["error-kind", "attempts", "consumer-group"] {
        assert!(!back[0].headers.contains_key(dropped), "{dropped} is dropped");
    }

    let out = run_binary(&["dlq", "list"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("dead letters live in a Kafka cluster"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_passes_on_an_intact_trail_and_names_the_tampered_row() {
    let db = orderflow_testkit::postgres().fresh_database().expect("database");
    let verify = || run_binary(&["audit", "verify", "--database-url", &db], &[]);
    assert!(
        run_binary(&["migrate", "--database-url", &db], &[])
            .status
            .success()
    );
    let out = verify();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "audit trail intact: 0 rows"
    );

    let store = orderflow_store::Store::connect(&db, 2).await.expect("store");
    let orderflow_store::Store::Postgres(pg) = &store else {
        panic!("postgres")
    };
    let entries: Vec<orderflow_store::AuditEntry> = (0..3)
        .map(|i| orderflow_store::AuditEntry {
            event_id: uuid::Uuid::now_v7().to_string(),
            topic: "order.created".into(),
            key: Some(format!("order-{i}")),
            payload: vec![i; 8],
        })
        .collect();
    let mut tx = pg.pool().begin().await.expect("tx");
    orderflow_store::PgStore::append_audit(&mut tx, &entries, chrono::Utc::now())
        .await
        .expect("append");
    tx.commit().await.expect("commit");
    let out = verify();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "audit trail intact: 3 rows"
    );

    let pool = sqlx::PgPool::connect(&db).await.expect("pg");
    sqlx::query("UPDATE audit_log SET msg_key = 'order-x' WHERE seq = 2")
        .execute(&pool)
        .await
        .expect("tamper");
    let out = verify();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("audit trail broken at row 2"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_passes_on_a_settled_deployment_and_names_each_mismatch() {
    let settings = real_server_settings("reconcile", 2);
    let platform = Platform::start(settings.clone(), Role::ALL)
        .await
        .expect("platform starts");
    stock_products(&platform.backends.store).await;
    let base = format!("http://{}", platform.http_addr.expect("http"));
    for _ in 0..10 {
        let (status, _, body) = post(&base, "application/json", &order_body().to_string()).await;
        assert_eq!(status, 201, "{body}");
    }
    // Settled: every check passes once the pipeline has caught up.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        // While the pipeline settles, a topic created a moment ago may not answer yet: try again.
        let checks =
            orderflow_roles::reconcile::reconcile(&platform.backends, Duration::from_secs(600)).await;
        if let Ok(checks) = &checks
            && checks.iter().all(|c| c.result == "ok")
            && checks[0].detail.contains("10 ALLOCATED")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the deployment did not reconcile: {checks:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    platform.stop().await.expect("stop");

    let url = settings.database.url.clone().expect("url");
    let flags = [
        "--database-url",
        url.as_str(),
        "--kafka-bootstrap",
        settings.kafka.bootstrap_servers.as_deref().expect("kafka"),
        "--topic-prefix",
        settings.kafka.topic_prefix.as_str(),
        "--redis-url",
        settings.cache.redis_url.as_deref().expect("redis"),
    ];
    let env = [("ORDERFLOW_CACHE__KEY_PREFIX", settings.cache.key_prefix.as_str())];
    let out = run_binary(&[&["reconcile"][..], &flags].concat(), &env);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for check in [
        "orders terminal",
        "charges",
        "stock ledger",
        "analytics revenue",
        "read model",
        "order.state",
        "audit chain",
        "dead letters",
    ] {
        let line = table
            .lines()
            .find(|l| l.starts_with(check))
            .unwrap_or_else(|| panic!("no {check} row: {table}"));
        assert!(line.contains(" ok "), "{line}");
    }

    // Stock that appears from nowhere and a read model entry Redis lost are both named.
    let pool = sqlx::PgPool::connect(&url).await.expect("pg");
    sqlx::query("UPDATE products SET stock = stock + 1 WHERE sku = 'SKU-1'")
        .execute(&pool)
        .await
        .expect("tamper");
    let (id,): (uuid::Uuid,) = sqlx::query_as("SELECT id FROM orders LIMIT 1")
        .fetch_one(&pool)
        .await
        .expect("an order");
    let mut redis = redis::Client::open(orderflow_testkit::redis().url())
        .expect("redis")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    redis::cmd("DEL")
        .arg(format!("{}rm:{{{id}}}", settings.cache.key_prefix))
        .query_async::<()>(&mut redis)
        .await
        .expect("del");
    let out = run_binary(&[&["reconcile", "--json"][..], &flags].concat(), &env);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim().lines().last(),
        Some("error: reconcile found 2 mismatch(es)"),
        "{stderr}"
    );
    let checks: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
    let result = |name: &str| {
        checks
            .iter()
            .find(|c| c["check"] == name)
            .map(|c| {
                (
                    c["result"].as_str().unwrap_or_default().to_owned(),
                    c["detail"].to_string(),
                )
            })
            .expect("check")
    };
    let (stock, detail) = result("stock ledger");
    assert_eq!(stock, "mismatch");
    assert!(detail.contains("SKU-1"), "{detail}");
    let (model, detail) = result("read model");
    assert_eq!(model, "mismatch");
    assert!(detail.contains("1 missing"), "{detail}");
    assert_eq!(result("charges").0, "ok");

    // `orderflow rebuild` repairs what Redis lost without noticing (its intact-markers kept): the read
    // model from the database or from the topics, the analytics aggregates from the database; a second
    // rebuild changes nothing.
    let check = |name: &'static str| {
        let out = run_binary(&[&["reconcile", "--json"][..], &flags].concat(), &env);
        let checks: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
        checks
            .iter()
            .find(|c| c["check"] == name)
            .map(|c| c["result"].as_str().unwrap_or_default().to_owned())
            .expect("check")
    };
    let rebuild = |args: &[&str]| {
        let out = run_binary(&[&["rebuild"][..], args, &flags].concat(), &env);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let said = rebuild(&["read-model", "--from", "postgres"]);
    assert!(said.starts_with("read model rebuilt: "), "{said}");
    assert_eq!(check("read model"), "ok");
    let wipe = |pattern: String| {
        let redis = redis.clone();
        async move {
            let mut redis = redis;
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut redis)
                .await
                .expect("keys");
            let keys: Vec<String> = keys.into_iter().filter(|k| !k.ends_with(":epoch")).collect();
            assert!(!keys.is_empty(), "{pattern}");
            redis::cmd("DEL")
                .arg(&keys)
                .query_async::<()>(&mut redis)
                .await
                .expect("del");
        }
    };
    let prefix = settings.cache.key_prefix.clone();
    wipe(format!("{prefix}rm:{{*")).await;
    assert_eq!(check("read model"), "mismatch");
    let said = rebuild(&["read-model"]);
    assert!(said.starts_with("read model rebuilt: "), "{said}");
    assert_eq!(check("read model"), "ok");

    assert_eq!(check("analytics revenue"), "ok");
    let said = rebuild(&["analytics"]);
    assert!(
        said.starts_with("analytics rebuilt: 0 fact(s) newly applied"),
        "{said}"
    );
    wipe(format!("{{{prefix}analytics}}:*")).await;
    assert_eq!(check("analytics revenue"), "mismatch");
    let said = rebuild(&["analytics"]);
    assert!(!said.starts_with("analytics rebuilt: 0 "), "{said}");
    assert_eq!(check("analytics revenue"), "ok");
    let said = rebuild(&["analytics"]);
    assert!(
        said.starts_with("analytics rebuilt: 0 fact(s) newly applied"),
        "{said}"
    );
}

/// A Redis flush while orders keep flowing, then `orderflow rebuild read-model` while they still flow: the
/// rebuild waits for the projector's own (which found its marker gone) when that runs first, and at the end
/// every order's read model agrees with the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_read_model_after_a_redis_flush_restores_every_order_while_orders_flow() {
    let settings = real_server_settings("flush", 2);
    let platform = Platform::start(settings.clone(), Role::ALL)
        .await
        .expect("platform starts");
    stock_products(&platform.backends.store).await;
    let base = format!("http://{}", platform.http_addr.expect("http"));
    let flowing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let load = tokio::spawn({
        let (base, flowing) = (base.clone(), flowing.clone());
        async move {
            let mut placed = 0;
            while flowing.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, _, body) = post(&base, "application/json", &order_body().to_string()).await;
                assert_eq!(status, 201, "{body}");
                placed += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            placed
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Every key of the deployment goes: the orders' entries and the model's intact-marker.
    let prefix = settings.cache.key_prefix.clone();
    let mut redis = redis::Client::open(orderflow_testkit::redis().url())
        .expect("redis")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let mut flushed = 0;
    for pattern in [format!("{prefix}*"), format!("{{{prefix}*")] {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut redis)
            .await
            .expect("keys");
        flushed += keys.len();
        if !keys.is_empty() {
            redis::cmd("DEL")
                .arg(&keys)
                .query_async::<()>(&mut redis)
                .await
                .expect("del");
        }
    }
    assert!(flushed > 0, "the deployment had keys in Redis");

    let flags = [
        "--database-url".to_owned(),
        settings.database.url.clone().expect("url"),
        "--kafka-bootstrap".to_owned(),
        settings.kafka.bootstrap_servers.clone().expect("kafka"),
        "--topic-prefix".to_owned(),
        settings.kafka.topic_prefix.clone(),
        "--redis-url".to_owned(),
        settings.cache.redis_url.clone().expect("redis"),
    ];
    let rebuilt = tokio::task::spawn_blocking(move || {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        run_binary(
            &[&["rebuild", "read-model"][..], &flags].concat(),
            &[("ORDERFLOW_CACHE__KEY_PREFIX", prefix.as_str())],
        )
    })
    .await
    .expect("task");
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    let said = String::from_utf8_lossy(&rebuilt.stdout).into_owned();
    assert!(said.starts_with("read model rebuilt: "), "{said}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    flowing.store(false, std::sync::atomic::Ordering::Relaxed);
    let placed = load.await.expect("load");
    assert!(placed > 50, "orders kept flowing: {placed}");

    // Settled: every order's read model agrees with the database.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let checks =
            orderflow_roles::reconcile::reconcile(&platform.backends, Duration::from_secs(600)).await;
        let model = checks
            .as_ref()
            .ok()
            .and_then(|checks| checks.iter().find(|c| c.check == "read model").cloned());
        if model.as_ref().is_some_and(|c| c.result == "ok") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the read model did not come back: {model:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    platform.stop().await.expect("stop");
}
