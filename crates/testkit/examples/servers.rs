//! Starts the harness's PostgreSQL (with production durability: fsync and synchronous commit on),
//! redis-server and Kafka on 127.0.0.1, prints how to reach them, and keeps them until Enter or end of input:
//! real servers for `orderflow bench` or a manual run, without docker.
//!
//! `cargo run --release -p orderflow-testkit --example servers`

fn main() {
    let postgres = match orderflow_testkit::PostgresServer::start_durable() {
        Ok(server) => server,
        Err(e) => {
            eprintln!("error: cannot start PostgreSQL: {:#}", anyhow::Error::new(e));
            std::process::exit(1);
        }
    };
    let database = match postgres.fresh_database() {
        Ok(url) => url,
        Err(e) => {
            eprintln!("error: cannot create a database: {:#}", anyhow::Error::new(e));
            std::process::exit(1);
        }
    };
    println!("--database-url {database}");
    println!(
        "--kafka-bootstrap {}",
        orderflow_testkit::kafka().bootstrap_servers()
    );
    println!("--redis-url {}", orderflow_testkit::redis().url());
    println!("(Enter stops the servers)");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}
