//! A stand-alone processor on the consumer runtime, run as a separate process by the crash and shutdown
//! tests, and a small example of the API.
//!
//! `processor <bootstrap> <prefix> <mode> <input> <group> <instance> [output|database-url]`
//! - `copy`: copies every input record to the output topic inside Kafka transactions;
//! - `ledger`: appends (event id, partition, offset) of every input record to the `ledger` table of a
//!   PostgreSQL database, exactly once, committing offsets after.
//!
//! SIGTERM or SIGINT stops it gracefully; the exit code is 0 after a clean drain.

use std::time::Duration;

use anyhow::{Context, bail};
use orderflow_bus::{Bus, KafkaSettings};
use orderflow_consumer::effects::{DbEffects, DbHandler, db_error};
use orderflow_consumer::{
    ConsumerRuntime, ConsumerSettings, Delivery, Handler, HandlerError, Output, Record,
};
use sqlx::{PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;

/// Copies records to another topic, pausing a little per batch so a kill lands mid-batch.
struct Copy {
    output: String,
    delay: Duration,
}

impl Handler for Copy {
    async fn handle(&self, batch: &[Record]) -> Result<Vec<Output>, HandlerError> {
        tokio::time::sleep(self.delay).await;
        Ok(batch
            .iter()
            .map(|r| {
                Output::new(
                    self.output.clone(),
                    r.key.clone().unwrap_or_default(),
                    r.payload.clone().unwrap_or_default(),
                )
            })
            .collect())
    }
}

/// Appends where each record came from.
struct Ledger {
    delay: Duration,
}

impl DbHandler<Postgres> for Ledger {
    async fn apply(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        records: &[&Record],
    ) -> Result<(), HandlerError> {
        tokio::time::sleep(self.delay).await;
        let ids: Vec<String> = records.iter().map(|r| r.event_id()).collect();
        let partitions: Vec<i32> = records.iter().map(|r| r.partition).collect();
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        sqlx::query(
            "INSERT INTO ledger (event_id, partition, record_offset)
             SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[])",
        )
        .bind(&ids)
        .bind(&partitions)
        .bind(&offsets)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bootstrap, prefix, mode, input, group, instance, target] = args.as_slice() else {
        bail!(
            "usage: processor <bootstrap> <prefix> <copy|ledger> <input> <group> <instance> <output|database-url>"
        );
    };
    let bus = Bus::connect(KafkaSettings {
        bootstrap_servers: Some(bootstrap.clone()),
        topic_prefix: prefix.clone(),
        ..KafkaSettings::default()
    })?;
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            shutdown.cancel();
        }
    });
    // Time each batch takes, so a test can stop the process while batches are in flight.
    let delay = Duration::from_millis(
        std::env::var("PROCESSOR_BATCH_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2),
    );
    let delivery = if mode == "copy" {
        Delivery::Transactional
    } else {
        Delivery::AtLeastOnce
    };
    let mut settings = ConsumerSettings::new(group.clone(), vec![input.clone()], delivery);
    settings.instance_id = Some(instance.clone());
    // A restarted instance takes its partitions straight back instead of waiting out the session timeout.
    settings.static_membership = true;
    settings.max_batch = 50;
    settings.drain_timeout = Duration::from_secs(5);
    match mode.as_str() {
        "copy" => {
            let runtime = ConsumerRuntime::new(
                bus,
                settings,
                Copy {
                    output: target.clone(),
                    delay,
                },
            );
            runtime.run(shutdown).await?;
        }
        "ledger" => {
            let pool = PgPool::connect(target)
                .await
                .context("connecting to PostgreSQL")?;
            let effects = DbEffects::new(pool, group.clone(), Ledger { delay });
            effects.ensure_schema().await?;
            let runtime = ConsumerRuntime::new(bus, settings, effects);
            runtime.run(shutdown).await?;
        }
        other => bail!("unknown mode {other}"),
    }
    Ok(())
}
