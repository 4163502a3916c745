//! Security: least-privilege Kafka credentials over TLS for every role, no secret in any log, HTTPS with
//! certificate reload, and TLS to PostgreSQL.

use std::process::Stdio;
use std::time::{Duration, Instant};

use orderflow_roles::{Platform, Role, Settings};
use orderflow_testkit::unique;
use serde_json::Value;

use crate::support::*;

/// The roles that talk to Kafka (all but the gateway), each of which gets its own Kafka user.
fn secured_roles() -> impl Iterator<Item = Role> {
    Role::ALL.iter().copied().filter(|r| *r != Role::Gateway)
}

/// The least-privilege ACLs of `role`: exactly what [`Role::kafka_access`] says it needs.
fn role_acls(role: Role, settings: &Settings) -> Vec<orderflow_testkit::Acl> {
    role.kafka_access(settings)
        .grants()
        .into_iter()
        .map(|grant| orderflow_testkit::Acl {
            principal: format!("User:{}", role.name()),
            resource: grant.resource,
            name: grant.name,
            prefixed: grant.prefixed,
            operation: grant.operation,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_runs_with_least_privilege_credentials_over_tls_and_no_secret_reaches_a_log() {
    let dir = temp_dir();
    std::fs::create_dir_all(&dir).expect("dir");
    let secret_file = |name: &str, secret: &str| {
        let path = dir.join(name);
        std::fs::write(&path, format!("{secret}\n")).expect("secret file");
        path.display().to_string()
    };
    // Every secret is random, so finding one in a log can only mean it was printed.
    let kafka_users: Vec<(String, String)> = secured_roles()
        .map(|r| (r.name().to_owned(), unique(&format!("kafka-pw-{}", r.name()))))
        .collect();
    let users = kafka_users.clone();
    let kafka = tokio::task::spawn_blocking(move || {
        let refs: Vec<(&str, &str)> = users.iter().map(|(u, p)| (u.as_str(), p.as_str())).collect();
        orderflow_testkit::KafkaServer::start_secured_tls(&refs)
    })
    .await
    .expect("task")
    .expect("secured kafka");
    let kafka_ca = kafka.ca_file().expect("TLS").display().to_string();
    let prefix = format!("{}.", unique("sec"));
    let key_prefix = format!("{}:", unique("sec"));
    let redis_password = unique("redis-pw");
    let redis = orderflow_testkit::RedisServer::start_with(&[
        "--user",
        "default",
        "off",
        "--user",
        "orderflow",
        "on",
        &format!(">{redis_password}"),
        &format!("~{key_prefix}*"),
        &format!("~{{{key_prefix}*"),
        &format!("&{key_prefix}*"),
        "+@all",
        "-@dangerous",
    ])
    .expect("redis with an ACL user");

    // PostgreSQL: a migration role owning the database, and the service's role with rows only.
    let pg = orderflow_testkit::postgres();
    let db_url = pg.fresh_database().expect("database");
    let db_name = db_url.rsplit('/').next().expect("name").to_owned();
    let (migrator_pw, app_pw) = (unique("migrator-pw"), unique("app-pw"));
    let (migrator, app) = (
        unique("migrator").replace('-', "_"),
        unique("app").replace('-', "_"),
    );
    for sql in [
        format!("CREATE ROLE {migrator} LOGIN PASSWORD '{migrator_pw}'"),
        format!("CREATE ROLE {app} LOGIN PASSWORD '{app_pw}'"),
        format!("ALTER DATABASE {db_name} OWNER TO {migrator}"),
    ] {
        pg.psql("postgres", &sql).expect("roles");
    }
    pg.psql(&db_name, &format!("ALTER SCHEMA public OWNER TO {migrator}"))
        .expect("schema owner");
    let role_url = |user: &str| format!("postgres://{user}@127.0.0.1:{}/{db_name}", pg.port());
    let migrated = run_binary(
        &["migrate", "--grant-to", &app],
        &[
            ("ORDERFLOW_DATABASE__URL", &role_url(&migrator)),
            (
                "ORDERFLOW_DATABASE__PASSWORD_FILE",
                &secret_file("migrator-pw", &migrator_pw),
            ),
        ],
    );
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );

    // The administrator (logging in with PLAIN, the roles with SCRAM) creates the topics and grants each
    // role exactly what it needs.
    let admin_env = [
        ("ORDERFLOW_KAFKA__SECURITY__PROTOCOL", "SASL_SSL"),
        ("ORDERFLOW_KAFKA__SECURITY__CA_FILE", kafka_ca.as_str()),
        ("ORDERFLOW_KAFKA__SECURITY__SASL_MECHANISM", "PLAIN"),
        (
            "ORDERFLOW_KAFKA__SECURITY__USERNAME",
            orderflow_testkit::KAFKA_ADMIN.0,
        ),
        (
            "ORDERFLOW_KAFKA__SECURITY__PASSWORD",
            orderflow_testkit::KAFKA_ADMIN.1,
        ),
    ];
    let applied = run_binary(
        &[
            "topics",
            "apply",
            "--kafka-bootstrap",
            &kafka.bootstrap_servers(),
            "--topic-prefix",
            &prefix,
        ],
        &admin_env,
    );
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let mut settings = Settings::default();
    settings.kafka.topic_prefix = prefix.clone();
    let acls: Vec<_> = secured_roles().flat_map(|r| role_acls(r, &settings)).collect();
    let broker = &kafka;
    tokio::task::block_in_place(|| broker.create_acls(&acls)).expect("acls");

    // Each role runs as its own process with its own Kafka user, the service's database role and the Redis
    // ACL user; every password comes from a file.
    let redis_pw_file = secret_file("redis-pw", &redis_password);
    let app_pw_file = secret_file("app-pw", &app_pw);
    let config = |role: &str, kafka_password_file: &str, extra: &str| {
        let path = dir.join(format!("{role}.toml"));
        std::fs::write(
            &path,
            format!(
                "[database]\nurl = \"{}\"\npassword_file = \"{app_pw_file}\"\nmigrate_on_start = false\n\n\
                 [kafka]\nbootstrap_servers = \"{}\"\ntopic_prefix = \"{prefix}\"\nmanage_topics = false\n\n\
                 [kafka.security]\nprotocol = \"SASL_SSL\"\nca_file = \"{kafka_ca}\"\nsasl_mechanism = \"SCRAM-SHA-512\"\n\
                 username = \"{role}\"\npassword_file = \"{kafka_password_file}\"\n\n\
                 [cache]\nredis_url = \"redis://orderflow@127.0.0.1:{}/\"\nredis_password_file = \"{redis_pw_file}\"\n\
                 key_prefix = \"{key_prefix}\"\n{extra}",
                role_url(&app),
                kafka.bootstrap_servers(),
                redis.port(),
            ),
        )
        .expect("config");
        path.display().to_string()
    };
    let mut processes = Vec::new();
    let mut orders_base = String::new();
    let mut logs = Vec::new();
    for (role, password) in &kafka_users {
        let file = secret_file(&format!("kafka-pw-{role}"), password);
        let config = config(role, &file, "");
        let log = dir.join(format!("{role}.log"));
        logs.push(log.clone());
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut args = vec![
            "run".to_owned(),
            "--role".to_owned(),
            role.clone(),
            "--config".to_owned(),
            config,
        ];
        if role == "orders" {
            args.extend(["--listen".to_owned(), "127.0.0.1:0".to_owned()]);
        }
        let data = dir.join(role);
        let (child, banner) = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            spawn_with_stderr(&refs, &data, &[], Stdio::from(stderr))
        })
        .await
        .expect("start");
        if role == "orders" {
            orders_base = banner
                .iter()
                .find_map(|l| l.strip_prefix("orderflow listening on "))
                .expect("listening")
                .trim()
                .to_owned();
        }
        logs.push(dir.join(format!("{role}.banner")));
        std::fs::write(dir.join(format!("{role}.banner")), banner.join("\n")).expect("banner");
        processes.push(Instance(Some(child)));
    }
    // The gateway in front: a shop key read from a file, rate limits shared in Redis as the ACL user.
    let shop_key = unique("shop-key");
    let shop_key_file = secret_file("shop-key", &shop_key);
    let gateway_config = dir.join("gateway.toml");
    std::fs::write(
        &gateway_config,
        format!(
            "[gateway]\nupstreams = [\"{orders_base}\"]\ndev_key = false\n\n\
             [[gateway.api_keys]]\nid = \"shop\"\nkey_file = \"{shop_key_file}\"\n\
             scopes = [\"orders:write\", \"orders:read\", \"analytics:read\"]\n\n\
             [cache]\nredis_url = \"redis://orderflow@127.0.0.1:{}/\"\nredis_password_file = \"{redis_pw_file}\"\n\
             key_prefix = \"{key_prefix}\"\n",
            redis.port()
        ),
    )
    .expect("gateway config");
    let gateway_log = dir.join("gateway.log");
    logs.push(gateway_log.clone());
    let stderr = std::fs::File::create(&gateway_log).expect("log");
    let (gateway_data, gateway_config) = (dir.join("gateway"), gateway_config.display().to_string());
    let (child, banner) = tokio::task::spawn_blocking(move || {
        spawn_with_stderr(
            &[
                "run",
                "--role",
                "gateway",
                "--config",
                &gateway_config,
                "--listen",
                "127.0.0.1:0",
            ],
            &gateway_data,
            &[],
            Stdio::from(stderr),
        )
    })
    .await
    .expect("gateway");
    assert!(banner.iter().any(|l| l.contains("shared in Redis")), "{banner:?}");
    let gateway = banner
        .iter()
        .find_map(|l| l.strip_prefix("orderflow listening on "))
        .expect("listening")
        .trim()
        .to_owned();
    processes.push(Instance(Some(child)));

    // Orders placed through the gateway all finish, with every role confined to its grants.
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-api-key", shop_key.parse().expect("header"));
    let shop = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client");
    let app_pool = sqlx::PgPool::connect(&db_url).await.expect("pg");
    for (sku, price, stock) in orderflow_testkit::workload::catalogue(10) {
        sqlx::query("INSERT INTO products (sku, name, price_minor, stock) VALUES ($1, $1, $2, $3)")
            .bind(sku)
            .bind(price)
            .bind(stock)
            .execute(&app_pool)
            .await
            .expect("product");
    }
    const ORDERS: usize = 120;
    let placed = orderflow_testkit::workload::place_orders(&shop, &gateway, 0, ORDERS)
        .await
        .expect("orders placed through the gateway");
    assert_eq!(placed.len(), ORDERS);
    let started = Instant::now();
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM orders WHERE status NOT IN ('PAYMENT_FAILED', 'ALLOCATED', 'REJECTED', 'CANCELLED')",
        )
        .fetch_one(&app_pool)
        .await
        .expect("count");
        let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
            .fetch_one(&app_pool)
            .await
            .expect("audit");
        if open == 0 && audited >= ORDERS as i64 * 3 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{open} orders still open, {audited} events audited; logs in {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Reads come back through the gateway from the Redis read model, and analytics counted every order.
    let id = placed[0].0["id"].as_str().expect("id");
    let order = shop
        .get(format!("{gateway}/v1/orders/{id}"))
        .send()
        .await
        .expect("GET");
    assert_eq!(order.status().as_u16(), 200);
    let funnel: Value = eventually("analytics counts every order", || {
        let (shop, url) = (shop.clone(), format!("{gateway}/v1/analytics/funnel"));
        async move {
            let funnel: Value = shop.get(url).send().await.ok()?.json().await.ok()?;
            (funnel["created"].as_u64()? == ORDERS as u64).then_some(funnel)
        }
    })
    .await;
    assert!(funnel["paid"].as_u64().expect("paid") > 0, "{funnel}");
    // The service's database role cannot change the schema or rewrite the audit trail.
    let app_only = sqlx::PgPool::connect(&format!(
        "postgres://{app}:{app_pw}@127.0.0.1:{}/{db_name}",
        pg.port()
    ))
    .await
    .expect("app pool");
    for forbidden in [
        "CREATE TABLE sneaky (id INT)",
        "DROP TABLE orders",
        "UPDATE audit_log SET topic = 'x'",
        "DELETE FROM audit_log",
    ] {
        let refused = sqlx::query(forbidden).execute(&app_only).await;
        assert!(refused.is_err(), "the service role may not: {forbidden}");
    }
    // Redis: the service user cannot touch keys outside its prefix.
    let client = redis::Client::open(format!(
        "redis://orderflow:{redis_password}@127.0.0.1:{}/",
        redis.port()
    ))
    .expect("redis client");
    let mut conn = client.get_multiplexed_async_connection().await.expect("redis");
    let outside: redis::RedisResult<()> = redis::cmd("SET")
        .arg("elsewhere")
        .arg("1")
        .query_async(&mut conn)
        .await;
    assert!(outside.is_err(), "keys outside the prefix are refused");
    for process in &mut processes {
        process.terminate().await;
    }

    // A wrong Kafka password fails at start, with one clear line, and the wrong password nowhere.
    let wrong = unique("wrong-pw");
    let wrong_file = secret_file("wrong-pw", &wrong);
    let wrong_config = config("payments", &wrong_file, "");
    let started = Instant::now();
    let out = run_binary(&["run", "--role", "payments", "--config", &wrong_config], &[]);
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "fails fast: {:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: kafka: Kafka at")
            && last.contains("user 'payments'")
            && last.contains("Authentication"),
        "{stderr}"
    );
    assert!(!stderr.contains(&wrong));

    // No secret reached any log or banner.
    let mut secrets: Vec<&str> = kafka_users.iter().map(|(_, p)| p.as_str()).collect();
    secrets.extend([
        redis_password.as_str(),
        migrator_pw.as_str(),
        app_pw.as_str(),
        shop_key.as_str(),
    ]);
    let mut scanned = 0;
    for log in &logs {
        let text = std::fs::read_to_string(log).expect("log");
        scanned += text.len();
        for secret in &secrets {
            assert!(!text.contains(secret), "a secret appears in {}", log.display());
        }
    }
    for output in [&migrated, &applied] {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for secret in &secrets {
            assert!(!text.contains(secret));
        }
    }
    assert!(scanned > 1_000, "the logs were written ({scanned} bytes)");
}

/// A client trusting only the CA in `ca_file`.
fn trusting(ca_file: &std::path::Path) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca_file).expect("ca")).expect("pem");
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_certificate_reload_on_the_listener_and_tls_to_postgres_by_sslmode() {
    let dir = temp_dir();
    let (first, second) = (dir.join("ca-1"), dir.join("ca-2"));
    for folder in [&first, &second] {
        std::fs::create_dir_all(folder).expect("dir");
        orderflow_testkit::make_certificates(folder).expect("certificates");
    }
    let (cert, key) = (dir.join("live.crt"), dir.join("live.key"));
    std::fs::copy(first.join("server.crt"), &cert).expect("cert");
    std::fs::copy(first.join("server.key"), &key).expect("key");
    let mut settings = embedded_settings(&dir);
    settings.http.tls = Some(orderflow_api::TlsSettings {
        cert_file: cert.clone(),
        key_file: key.clone(),
        reload_secs: 1,
    });
    let platform = Platform::start(settings, &[Role::Orders])
        .await
        .expect("platform");
    let addr = platform.http_addr.expect("addr");
    let url = format!("https://127.0.0.1:{}/healthz", addr.port());
    let answer = trusting(&first.join("ca.crt"))
        .get(&url)
        .send()
        .await
        .expect("https");
    assert_eq!(answer.status().as_u16(), 200);
    let plain = reqwest::get(format!("http://127.0.0.1:{}/healthz", addr.port())).await;
    assert!(
        plain.is_err() || plain.is_ok_and(|r| r.status().as_u16() != 200),
        "plain HTTP is not served"
    );

    // A renewed certificate (from another CA) replaces the files: new connections get it, no restart.
    std::fs::copy(second.join("server.key"), &key).expect("key");
    std::fs::copy(second.join("server.crt"), &cert).expect("cert");
    let renewed = trusting(&second.join("ca.crt"));
    eventually("the renewed certificate", || {
        let (renewed, url) = (renewed.clone(), url.clone());
        async move {
            renewed
                .get(url)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        }
    })
    .await;
    assert!(
        trusting(&first.join("ca.crt")).get(&url).send().await.is_err(),
        "the old certificate is no longer served"
    );
    platform.stop().await.expect("stop");

    // PostgreSQL over TLS: the mode is the URL's `sslmode`, the CA its `sslrootcert`.
    let pg = tokio::task::spawn_blocking(orderflow_testkit::PostgresServer::start_tls)
        .await
        .expect("task")
        .expect("postgres with TLS");
    let db = pg.fresh_database().expect("database");
    let verified = format!("{db}?sslmode=verify-full&sslrootcert={}", pg.ca_file().display());
    let store = orderflow_store::Store::connect(&verified, 1)
        .await
        .expect("verified TLS");
    store.migrate().await.expect("migrations over TLS");
    let wrong_ca = format!(
        "{db}?sslmode=verify-full&sslrootcert={}",
        second.join("ca.crt").display()
    );
    assert!(
        orderflow_store::Store::connect(&wrong_ca, 1).await.is_err(),
        "a server certificate from another CA is refused"
    );
    let plain = orderflow_testkit::postgres().fresh_database().expect("database");
    assert!(
        orderflow_store::Store::connect(&format!("{plain}?sslmode=require"), 1)
            .await
            .is_err(),
        "sslmode=require refuses a server without TLS"
    );
}
