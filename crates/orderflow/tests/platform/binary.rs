//! The `orderflow` binary: real servers when configured, the embedded default, SIGTERM, and clear one-line
//! errors for bad configuration and arguments.

use std::process::Command;

use orderflow_roles::Settings;
use orderflow_testkit::unique;
use serde_json::Value;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_uses_real_servers_when_configured() {
    let db = orderflow_testkit::postgres().fresh_database().expect("database");
    let kafka = orderflow_testkit::kafka().bootstrap_servers();
    let redis_url = orderflow_testkit::redis().url();
    let prefix = format!("{}.", unique("cli"));

    let migrated = run_binary(&["migrate", "--database-url", &db], &[]);
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&migrated.stdout).trim(),
        "migrations applied (postgresql)"
    );
    import_catalogue(&db);

    let topics = [
        "topics",
        "apply",
        "--kafka-bootstrap",
        &kafka,
        "--topic-prefix",
        &prefix,
    ];
    let first = run_binary(&topics, &[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let report = String::from_utf8_lossy(&first.stdout).into_owned();
    // The topic table, and the retry and dead-letter topics of every role.
    let mut prefixed = Settings::default();
    prefixed.kafka.topic_prefix = prefix.clone();
    let expected = orderflow_bus::topics::TOPICS.len() + orderflow_roles::routing_topics(&prefixed).len();
    assert_eq!(
        report.lines().filter(|l| l.ends_with("created")).count(),
        expected,
        "{report}"
    );
    let again = String::from_utf8_lossy(&run_binary(&topics, &[]).stdout).into_owned();
    assert_eq!(
        again.lines().filter(|l| l.ends_with(" ok")).count(),
        expected,
        "{again}"
    );

    let dir = temp_dir();
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
    ];
    let (child, base, banner) = spawn_binary(
        &[&args[..], &["--topic-prefix", &prefix, "--redis-url", &redis_url]].concat(),
        &dir,
    );
    let banner = banner.join("\n");
    assert!(banner.contains("roles:    orders"), "{banner}");
    assert!(
        banner.contains("database: postgresql (postgres://postgres@127.0.0.1:"),
        "{banner}"
    );
    assert!(banner.contains(&format!("kafka:    {kafka}")), "{banner}");
    assert!(banner.contains("cache:    redis (redis://127.0.0.1:"), "{banner}");

    let (status, _, created) = post(&base, "application/json", &order_body().to_string()).await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().expect("id");
    let fetched: Value = get_order(&base, id).await;
    assert_eq!(fetched, created);
    terminate(child).await;
    assert!(
        !dir.join("orderflow.db").exists(),
        "no SQLite file when PostgreSQL is configured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_embedded_and_stops_on_sigterm() {
    let dir = temp_dir();
    let (child, base, banner) = spawn_binary(&["up", "--listen", "127.0.0.1:0"], &dir);
    let banner = banner.join("\n");
    assert!(
        banner.contains(
            "roles:    gateway, orders, payments, enrichment, inventory, projector, analytics, audit"
        ),
        "{banner}"
    );
    assert!(banner.contains("gateway:  development API key"), "{banner}");
    let anonymous = reqwest::Client::new()
        .post(format!("{base}/v1/orders"))
        .header("content-type", "application/json")
        .body(order_body().to_string())
        .send()
        .await
        .expect("POST");
    assert_eq!(
        anonymous.status().as_u16(),
        401,
        "the gateway guards the API of `up`"
    );
    assert!(banner.contains("database: sqlite"), "{banner}");
    assert!(banner.contains("kafka:    embedded mock cluster"), "{banner}");
    assert!(banner.contains("cache:    in-process"), "{banner}");
    // The README's first order: the embedded default's demo catalogue has the stock to serve it.
    let readme = r#"{"customer_id":"c-1","currency":"EUR","items":[{"sku":"SKU-1","quantity":2}]}"#;
    let (status, _, created) = post(&base, "application/json", readme).await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().expect("id").to_owned();
    let fetched = http_get(format!("{base}/v1/orders/{id}")).await.expect("GET");
    assert_eq!(fetched.status().as_u16(), 200);
    eventually("the README's first order to be allocated", || {
        let (base, id) = (base.clone(), id.clone());
        async move { (get_order(&base, &id).await["status"] == "ALLOCATED").then_some(()) }
    })
    .await;
    terminate(child).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_configuration_and_arguments_fail_with_a_clear_message() {
    let run = run_binary;
    let out = run(&["migrate"], &[("ORDERFLOW_HTTP__LISTEN", "not-an-address")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: invalid configuration"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");

    let out = run(&["run", "--role", "nope"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'nope'"));

    let out = run(
        &[
            "migrate",
            "--database-url",
            "postgres://orderflow:s3cret@127.0.0.1:1/none",
        ],
        &[],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: connecting to postgres://orderflow:***@127.0.0.1:1/none"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "secrets are never printed: {stderr}");

    let out = run(&["topics", "apply"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a Kafka cluster"));
}

/// Logs written to a file carry no terminal escape codes; `--log-format json` writes one JSON object per
/// line; `orderflow completions <shell>` prints a completion script for the whole command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_suit_a_file_or_a_collector_and_completions_cover_the_commands() {
    for format in ["text", "json"] {
        let dir = temp_dir();
        std::fs::create_dir_all(&dir).expect("dir");
        let log = dir.join("stderr.log");
        let file = std::fs::File::create(&log).expect("log file");
        let (child, banner) = spawn_with_stderr(
            &["--log-format", format, "up", "--listen", "127.0.0.1:0"],
            &dir,
            &[],
            std::process::Stdio::from(file),
        );
        let base = banner
            .iter()
            .find_map(|l| l.strip_prefix("orderflow listening on "))
            .expect("the banner says where it listens")
            .trim()
            .to_owned();
        eventually("readiness", || async {
            let ready = reqwest::get(format!("{base}/readyz")).await.ok()?;
            (ready.status() == 200).then_some(())
        })
        .await;
        terminate(child).await;
        let text = std::fs::read_to_string(&log).expect("log");
        // The first start seeds the demo catalogue and says so.
        let seeded = text
            .lines()
            .find(|l| l.contains("seeded a demo catalogue"))
            .unwrap_or_else(|| panic!("{format}: no start-up line in {text}"));
        assert!(
            !text.contains('\u{1b}'),
            "{format}: escape codes in a file: {text}"
        );
        if format == "json" {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let event: Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert!(
                    event["level"].is_string() && event["timestamp"].is_string(),
                    "{line}"
                );
            }
            let event: Value = serde_json::from_str(seeded).expect("json");
            assert_eq!(event["level"], "INFO");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = run_binary(&["completions", shell], &[]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        for command in ["reconcile", "catalog", "migrate", "dlq", "consumers", "rebuild"] {
            assert!(script.contains(command), "{shell} completes {command}");
        }
    }
    let out = run_binary(&["completions", "tcsh"], &[]);
    assert!(!out.status.success());
    // Every operator command says what it takes.
    for (command, flags) in [
        (&["consumers"][..], &["--ops", "--json", "--all", "--role"][..]),
        (&["rebuild", "read-model"], &["--from", "kafka", "postgres"]),
        (&["rebuild", "analytics"], &[]),
        (
            &["dlq", "list"],
            &["--error-kind", "--since", "--json", "--group"],
        ),
        (
            &["dlq", "replay"],
            &["--dry-run", "--error-kind", "--since", "--group"],
        ),
        (&["completions"], &["bash", "zsh", "fish"]),
    ] {
        let out = run_binary(&[command, &["--help"]].concat(), &[]);
        assert!(out.status.success(), "{command:?} --help");
        let help = String::from_utf8_lossy(&out.stdout);
        for flag in flags {
            assert!(help.contains(flag), "{command:?} --help names {flag}: {help}");
        }
    }
    let out = run_binary(&["rebuild", "read-model", "--from", "memory"], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid value 'memory'"), "{stderr}");
}

/// The parts of the Dockerfile's runtime stage a test can check without a container runtime: it installs
/// the Debian packages of every shared library the binary links (this machine runs the same Debian
/// release), runs as an unprivileged user with a health check, and the binary starts with the image's
/// entrypoint, command and environment (only the data folder and the listen address moved to the test's)
/// and answers the health check's URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_images_runtime_stage_holds_what_the_binary_needs_and_starts_it() {
    let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Dockerfile"))
        .expect("Dockerfile");
    // Instructions, continuation lines joined.
    let joined = dockerfile
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let runtime: Vec<&str> = joined
        .lines()
        .skip_while(|l| !l.trim_end().ends_with("AS runtime"))
        .collect();
    assert!(runtime[0].starts_with("FROM debian:bookworm-slim"), "{runtime:?}");
    let instruction = |name: &str| -> Vec<&str> {
        runtime
            .iter()
            .filter_map(|l| l.trim().strip_prefix(name))
            .map(str::trim)
            .collect()
    };
    let packages: Vec<&str> = instruction("RUN ")
        .iter()
        .flat_map(|run| run.split("&&"))
        .filter_map(|command| command.split_once("--no-install-recommends"))
        .flat_map(|(_, list)| list.split_whitespace())
        .collect();
    let binary = env!("CARGO_BIN_EXE_orderflow");
    let ldd = Command::new("ldd").arg(binary).output().expect("ldd");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let Some((_, path)) = line.split_once("=>") else {
            continue;
        };
        let Some(path) = path.split_whitespace().next().filter(|p| p.starts_with('/')) else {
            continue;
        };
        // Debian 12 merged /lib into /usr/lib: packages own the /usr path.
        let owner = [path.to_owned(), format!("/usr{path}")]
            .iter()
            .map(|p| Command::new("dpkg").args(["-S", p]).output().expect("dpkg"))
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .find(|owner| !owner.trim().is_empty())
            .unwrap_or_default();
        let package = owner.split(':').next().unwrap_or_default().trim().to_owned();
        let package = package.as_str();
        // The C library and the GCC runtime are in every Debian image.
        let essential = ["libc6", "libgcc-s1"].contains(&package);
        assert!(
            essential || packages.contains(&package),
            "{path} comes from {package}, which the runtime stage does not install ({packages:?})"
        );
    }
    assert!(
        packages.contains(&"ca-certificates"),
        "TLS to the servers needs CA certificates"
    );
    let user = instruction("USER ");
    assert!(
        user.len() == 1 && !user[0].starts_with("root") && !user[0].starts_with("0"),
        "runs as root: {user:?}"
    );
    let healthcheck = instruction("HEALTHCHECK ");
    assert!(
        healthcheck.len() == 1 && healthcheck[0].contains("$HEALTHCHECK_URL"),
        "{healthcheck:?}"
    );
    let array = |name: &str| -> Vec<String> {
        let list = instruction(name);
        assert_eq!(list.len(), 1, "one {name}");
        serde_json::from_str(list[0]).expect("an exec-form array")
    };
    assert_eq!(array("ENTRYPOINT "), ["orderflow"]);
    let mut command = array("CMD ");
    let data = command
        .iter()
        .position(|a| a == "--data-dir")
        .expect("a data folder");
    command.drain(data..data + 2);
    let mut env: Vec<(String, String)> = instruction("ENV ")
        .iter()
        .flat_map(|e| e.split_whitespace())
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let port = orderflow_testkit::free_port().expect("a free port");
    for (key, value) in &mut env {
        if key == "ORDERFLOW_HTTP__LISTEN" {
            *value = format!("127.0.0.1:{port}");
        }
        *value = value.replace(":8080", &format!(":{port}"));
    }
    let health = env
        .iter()
        .find(|(k, _)| k == "HEALTHCHECK_URL")
        .map(|(_, v)| v.clone())
        .expect("the health check's URL");
    let dir = temp_dir();
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let args: Vec<&str> = command.iter().map(String::as_str).collect();
    let (child, _) = spawn_until_banner(&args, &dir, &env);
    let answer = eventually("the health check to pass", || {
        let health = health.clone();
        async move { reqwest::get(&health).await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    assert_eq!(answer.status(), 200);
    terminate(child).await;
    let _ = std::fs::remove_dir_all(dir);
}
