//! What the tests of this binary share: request helpers, the test API key, settings for both backends, and
//! spawning, waiting for and stopping the `orderflow` binary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orderflow_roles::Settings;
use orderflow_testkit::unique;
use serde_json::{Value, json};

pub fn order_body() -> Value {
    json!({"customer_id": "cust-1", "currency": "EUR",
        "items": [{"sku": "SKU-1", "quantity": 2, "unit_price_minor": 1250}, {"sku": "SKU-2", "quantity": 1}]})
}

pub fn temp_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(unique("orderflow-e2e"))
}

/// The API key every test calls with: written as the development key of each data dir, so the gateway of
/// `up` (and of `Platform` with every role) accepts it.
pub const TEST_KEY: &str = "ofk_platform-tests";

pub fn write_test_key(data_dir: &std::path::Path) {
    std::fs::create_dir_all(data_dir).expect("data dir");
    std::fs::write(data_dir.join("api-key"), TEST_KEY).expect("api key");
}

/// A client sending [`TEST_KEY`].
pub fn client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-api-key", reqwest::header::HeaderValue::from_static(TEST_KEY));
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

/// `GET url` with [`TEST_KEY`].
pub async fn http_get(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::Response> {
    client().get(url).send().await
}

pub fn embedded_settings(data_dir: &std::path::Path) -> Settings {
    write_test_key(data_dir);
    let mut settings = Settings {
        data_dir: Some(data_dir.to_owned()),
        ..Settings::default()
    };
    settings.http.listen = "127.0.0.1:0".parse().expect("addr");
    settings
}

pub async fn post(base: &str, content_type: &str, body: &str) -> (u16, String, Value) {
    let response = client()
        .post(format!("{base}/v1/orders"))
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .expect("POST");
    answer(response).await
}

/// Status, content type and JSON body (null when not JSON) of a response.
pub async fn answer(response: reqwest::Response) -> (u16, String, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, content_type, response.json().await.unwrap_or(Value::Null))
}

/// `GET /v1/orders/{id}` as JSON.
pub async fn get_order(base: &str, id: &str) -> Value {
    http_get(format!("{base}/v1/orders/{id}"))
        .await
        .expect("GET")
        .json()
        .await
        .expect("json")
}

/// Puts the products of [`order_body`] in the catalogue at the prices its total (2,599) assumes, in stock, so
/// orders for them can be allocated.
pub async fn stock_products(store: &orderflow_store::Store) {
    for (sku, price_minor) in [("SKU-1", 1_250), ("SKU-2", 99)] {
        let product = orderflow_store::Product {
            sku: sku.into(),
            name: sku.into(),
            price_minor,
            stock: 100,
        };
        store.put_product(&product).await.expect("product");
    }
}

/// Waits up to 30 s (this binary's patience) for `check` to return a value; see
/// [`orderflow_testkit::checks::eventually`].
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    check: impl FnMut() -> F,
) -> T {
    orderflow_testkit::checks::eventually(what, Duration::from_secs(30), check).await
}

/// Settings on the harness's PostgreSQL (a fresh database), Kafka and Redis, with topic and key prefixes of
/// their own (`name` and a unique suffix) and `partitions` per topic.
pub fn real_server_settings(name: &str, partitions: i32) -> Settings {
    let (pg, kafka, redis_server) = (
        orderflow_testkit::postgres(),
        orderflow_testkit::kafka(),
        orderflow_testkit::redis(),
    );
    let mut settings = embedded_settings(&temp_dir());
    settings.database.url = Some(pg.fresh_database().expect("database"));
    settings.kafka.bootstrap_servers = Some(kafka.bootstrap_servers());
    settings.kafka.topic_prefix = format!("{}.", unique(name));
    settings.kafka.partitions = Some(partitions);
    settings.cache.redis_url = Some(redis_server.url());
    settings.cache.key_prefix = format!("{}:", unique(name));
    settings
}

/// Starts the real binary; returns it with the base URL and the start-up banner it printed.
pub fn spawn_binary(args: &[&str], data_dir: &std::path::Path) -> (std::process::Child, String, Vec<String>) {
    spawn_binary_with(args, data_dir, &[])
}

/// [`spawn_binary`] with extra environment variables (configuration layered over the defaults).
pub fn spawn_binary_with(
    args: &[&str],
    data_dir: &std::path::Path,
    env: &[(&str, String)],
) -> (std::process::Child, String, Vec<String>) {
    let (child, banner) = spawn_until_banner(args, data_dir, env);
    let url = banner
        .iter()
        .find_map(|l| l.strip_prefix("orderflow listening on "))
        .expect("the banner says where it listens")
        .trim()
        .to_owned();
    (child, url, banner)
}

/// Starts the real binary and waits for its start-up banner (which ends with the cache line).
pub fn spawn_until_banner(
    args: &[&str],
    data_dir: &std::path::Path,
    env: &[(&str, String)],
) -> (std::process::Child, Vec<String>) {
    spawn_with_stderr(args, data_dir, env, Stdio::null())
}

/// [`spawn_until_banner`] with the process's log (stderr) going to `stderr`.
pub fn spawn_with_stderr(
    args: &[&str],
    data_dir: &std::path::Path,
    env: &[(&str, String)],
    stderr: Stdio,
) -> (std::process::Child, Vec<String>) {
    write_test_key(data_dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("ORDERFLOW_CONFIG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut banner = Vec::new();
    while !banner
        .iter()
        .any(|l: &String| l.trim_start().starts_with("cache:"))
    {
        banner.push(
            rx.recv_timeout(Duration::from_secs(60))
                .expect("the binary prints its start-up banner"),
        );
    }
    (child, banner)
}

/// Sends SIGTERM and expects a clean exit within the shutdown deadline.
pub async fn terminate(mut child: std::process::Child) {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let start = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            start.elapsed() < Duration::from_secs(25),
            "did not stop within the shutdown deadline"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "exit status {exit}");
}

pub fn run_binary(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orderflow"));
    cmd.args(args).env_remove("ORDERFLOW_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("runs")
}

/// A spawned orderflow process, killed if a failing test leaves it running.
pub struct Instance(pub Option<std::process::Child>);

impl Instance {
    /// Stops it with SIGTERM and expects a clean exit.
    pub async fn terminate(&mut self) {
        if let Some(child) = self.0.take() {
            terminate(child).await;
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Two `orderflow run --role orders` processes sharing a fresh database and the Redis server, with cache keys
/// under `<prefix>:` and `env` layered over their configuration; returns them, their base URLs and the
/// database URL.
/// Puts the products of [`order_body`] in database `db`'s catalogue (as [`stock_products`] does) with
/// `orderflow catalog import`, as an operator would.
pub fn import_catalogue(db: &str) {
    let file = temp_dir().with_extension("csv");
    std::fs::write(
        &file,
        "sku,name,price_minor,stock\nSKU-1,SKU-1,1250,100\nSKU-2,SKU-2,99,100\n",
    )
    .expect("csv");
    let imported = run_binary(
        &[
            "catalog",
            "import",
            file.to_str().expect("path"),
            "--database-url",
            db,
        ],
        &[],
    );
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let _ = std::fs::remove_file(file);
}

pub fn orders_instances(prefix: &str, env: &[(&str, String)]) -> (Vec<Instance>, Vec<String>, String) {
    let db = orderflow_testkit::postgres().fresh_database().expect("database");
    let kafka = orderflow_testkit::kafka().bootstrap_servers();
    let redis_url = orderflow_testkit::redis().url();
    let migrated = run_binary(&["migrate", "--database-url", &db], &[]);
    assert!(migrated.status.success());
    import_catalogue(&db);
    let mut env = env.to_vec();
    env.push(("ORDERFLOW_CACHE__KEY_PREFIX", format!("{prefix}:")));
    let topic_prefix = format!("{prefix}.");
    let (mut children, mut bases) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let args = [
            "run",
            "--role",
            "orders",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db,
            "--kafka-bootstrap",
            &kafka,
            "--topic-prefix",
            &topic_prefix,
            "--redis-url",
            &redis_url,
        ];
        let (child, base, _) = spawn_binary_with(&args, &temp_dir(), &env);
        children.push(Instance(Some(child)));
        bases.push(base);
    }
    (children, bases, db)
}
