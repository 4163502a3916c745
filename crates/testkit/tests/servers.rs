//! The harness itself: each server starts, answers, and can be killed and restarted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::time::Duration;

use orderflow_testkit::{KafkaServer, PostgresServer, RedisServer};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

#[test]
fn postgres_starts_answers_and_restarts() {
    let pg = PostgresServer::start().expect("postgres starts");
    eprintln!("postgres started in {:?}", pg.startup);
    let url = pg.fresh_database().expect("database created");
    let db = url.rsplit('/').next().expect("db name");
    assert_eq!(pg.psql(db, "SELECT 40 + 2").expect("query"), "42");
    pg.kill();
    assert!(
        pg.psql(db, "SELECT 1").is_err(),
        "a killed server must not answer"
    );
    pg.restart().expect("restarts");
    assert_eq!(pg.psql(db, "SELECT 1").expect("query after restart"), "1");
}

#[test]
fn redis_starts_and_restarts() {
    let redis = RedisServer::start().expect("redis starts");
    eprintln!("redis-server started in {:?}", redis.startup);
    assert!(redis.url().starts_with("redis://127.0.0.1:"));
    redis.kill();
    redis.restart().expect("restarts");
}

#[test]
fn kafka_starts_and_serves_metadata() {
    let kafka = KafkaServer::start().expect("kafka starts");
    eprintln!(
        "kafka {} started in {:?}",
        orderflow_testkit::KAFKA_VERSION,
        kafka.startup
    );
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .create()
        .expect("client");
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(5))
        .expect("metadata");
    assert_eq!(metadata.brokers().len(), 1);
    assert!(metadata.topics().iter().any(|t| t.name() == "__testkit_ready"));
    kafka.kill();
    assert!(
        consumer.fetch_metadata(None, Duration::from_secs(1)).is_err(),
        "a killed broker must not answer"
    );
}

#[test]
fn kafka_formats_with_a_cluster_id_that_looks_like_an_option() {
    let libs = orderflow_testkit::kafka_jars().expect("jars");
    let dir = std::env::temp_dir().join(orderflow_testkit::unique("kraft-format"));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("server.properties");
    std::fs::write(
        &config,
        format!(
            "process.roles=broker,controller\nnode.id=1\ncontroller.quorum.voters=1@127.0.0.1:1\n\
             controller.listener.names=CONTROLLER\nlisteners=PLAINTEXT://127.0.0.1:2,CONTROLLER://127.0.0.1:1\n\
             log.dirs={}\n",
            dir.join("logs").display()
        ),
    )
    .expect("config");
    let out = std::process::Command::new("java")
        .arg("-cp")
        .arg(format!("{}/*", libs.display()))
        .args(["kafka.tools.StorageTool", "format", "--config"])
        .arg(&config)
        .arg("--cluster-id=-AAAAAAAAAAAAAAAAAAAAQ")
        .output()
        .expect("java runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// One round trip through `port`: sends PING in the Redis protocol and reads the answer.
fn ping(port: u16) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"PING\r\n")?;
    let mut answer = [0u8; 16];
    let n = stream.read(&mut answer)?;
    Ok(String::from_utf8_lossy(&answer[..n]).into_owned())
}

#[test]
fn the_proxy_passes_cuts_delays_and_restores_connections() {
    let redis = RedisServer::start().expect("redis starts");
    let proxy =
        orderflow_testkit::TcpProxy::start(([127, 0, 0, 1], redis.port()).into()).expect("proxy starts");
    assert_eq!(ping(proxy.port()).expect("through the proxy"), "+PONG\r\n");

    // An open connection is closed by a cut, and new ones get nothing until the proxy is restored.
    let open = std::net::TcpStream::connect(("127.0.0.1", proxy.port())).expect("connects");
    proxy.cut();
    open.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(
        std::io::Read::read(&mut &open, &mut byte).expect("closed, not timed out"),
        0
    );
    assert!(ping(proxy.port()).map_or(true, |answer| answer.is_empty()));
    proxy.restore();
    assert_eq!(ping(proxy.port()).expect("restored"), "+PONG\r\n");

    // A delay holds every chunk, each way.
    proxy.delay(Duration::from_millis(300));
    let started = std::time::Instant::now();
    assert_eq!(ping(proxy.port()).expect("delayed"), "+PONG\r\n");
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_three_node_kafka_cluster_elects_a_new_leader_when_one_is_killed() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let cluster = orderflow_testkit::KafkaCluster::start().expect("cluster starts");
    eprintln!("kafka cluster started in {:?}", cluster.startup);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create()
        .unwrap();
    let topic = NewTopic::new("replicated", 1, TopicReplication::Fixed(3));
    let created = futures::executor::block_on(admin.create_topics([&topic], &AdminOptions::new())).unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let wait_leader = |not: Option<usize>| {
        let started = std::time::Instant::now();
        loop {
            if let Ok(Some(leader)) = cluster.leader("replicated", 0)
                && Some(leader) != not
            {
                return leader;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "no new leader");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let leader = wait_leader(None);
    cluster.kill(leader);
    let next = wait_leader(Some(leader));
    assert_ne!(next, leader);
    cluster.restart(leader).expect("the killed node rejoins");
}
