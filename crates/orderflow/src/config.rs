//! Layered configuration: built-in defaults, then a TOML file, then `ORDERFLOW_*` environment variables,
//! then command-line flags (each layer overrides the previous one).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use orderflow_roles::Settings;

/// Flags that override configuration (the most common settings; everything else via file or environment).
#[derive(Debug, Default, Args)]
pub struct Overrides {
    /// HTTP listen address, e.g. 0.0.0.0:8080 [http.listen]
    #[arg(long, global = true, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Data directory of the embedded defaults [data_dir]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL; without it, SQLite under the data directory [database.url]
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Kafka bootstrap servers; without them, an in-process mock cluster [kafka.bootstrap_servers]
    #[arg(long, global = true, value_name = "HOSTS")]
    pub kafka_bootstrap: Option<String>,
    /// Prefix for every topic name [kafka.topic_prefix]
    #[arg(long, global = true, value_name = "PREFIX")]
    pub topic_prefix: Option<String>,
    /// Redis URL; without it, an in-process read model [cache.redis_url]
    #[arg(long, global = true, value_name = "URL")]
    pub redis_url: Option<String>,
}

/// Merges the layers and parses them into [`Settings`].
pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Settings> {
    let mut figment = Figment::from(Serialized::defaults(serde_json::json!({})));
    if let Some(path) = file {
        if !path.is_file() {
            bail!("configuration file {} does not exist", path.display());
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(
        Env::prefixed("ORDERFLOW_")
            .split("__")
            .ignore(&["config", "log", "log_format"]),
    );
    let flags: [(&str, Option<String>); 6] = [
        ("http.listen", overrides.listen.clone()),
        (
            "data_dir",
            overrides.data_dir.as_ref().map(|p| p.display().to_string()),
        ),
        ("database.url", overrides.database_url.clone()),
        ("kafka.bootstrap_servers", overrides.kafka_bootstrap.clone()),
        ("kafka.topic_prefix", overrides.topic_prefix.clone()),
        ("cache.redis_url", overrides.redis_url.clone()),
    ];
    for (key, value) in flags {
        if let Some(value) = value {
            figment = figment.merge(Serialized::default(key, value));
        }
    }
    let mut settings: Settings = figment.extract().context("invalid configuration")?;
    settings
        .kafka
        .check_durability()
        .context("invalid configuration")?;
    settings.read_secret_files().map_err(anyhow::Error::msg)?;
    Ok(settings)
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type
mod tests {
    use super::*;

    #[test]
    fn flags_override_environment_which_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "orderflow.toml",
                "[database]\nurl = \"postgres://file\"\n[http]\nlisten = \"127.0.0.1:1\"\n[kafka]\ntopic_prefix = \"file.\"\n",
            )?;
            jail.set_env("ORDERFLOW_DATABASE__URL", "postgres://env");
            jail.set_env("ORDERFLOW_KAFKA__TOPIC_PREFIX", "env.");
            let overrides = Overrides {
                topic_prefix: Some("flag.".into()),
                ..Overrides::default()
            };
            let settings = load(Some(Path::new("orderflow.toml")), &overrides).map_err(|e| e.to_string())?;
            assert_eq!(settings.http.listen.port(), 1, "file beats defaults");
            assert_eq!(
                settings.database.url.as_deref(),
                Some("postgres://env"),
                "environment beats file"
            );
            assert_eq!(settings.kafka.topic_prefix, "flag.", "flags beat environment");
            Ok(())
        });
    }

    #[test]
    fn producer_properties_that_weaken_durability_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            let refused = |jail: &mut figment::Jail, toml: &str| -> figment::error::Result<String> {
                jail.create_file("orderflow.toml", toml)?;
                Ok(load(Some(Path::new("orderflow.toml")), &Overrides::default())
                    .err()
                    .map(|e| format!("{e:#}"))
                    .unwrap_or_default())
            };
            for weak in [
                "acks = 1",
                "\"request.required.acks\" = \"0\"",
                "\"enable.idempotence\" = false",
                "\"max.in.flight.requests.per.connection\" = 20",
            ] {
                let error = refused(jail, &format!("[kafka.producer]\n{weak}\n"))?;
                assert!(
                    error.starts_with("invalid configuration: kafka.producer."),
                    "{weak}: {error}"
                );
                assert!(error.contains("would weaken durability"), "{weak}: {error}");
            }
            let fine = "[kafka.producer]\nacks = \"all\"\n\"enable.idempotence\" = true\n\"linger.ms\" = 5\n";
            assert_eq!(refused(jail, fine)?, "", "what Orderflow sets anyway is accepted");
            // The environment layer reads `1` as a number: it is refused all the same.
            jail.create_file("orderflow.toml", "")?;
            jail.set_env("ORDERFLOW_KAFKA__PRODUCER__ACKS", "1");
            let error = load(Some(Path::new("orderflow.toml")), &Overrides::default())
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default();
            assert!(
                error.contains("kafka.producer.acks = 1 would weaken durability"),
                "{error}"
            );
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_missing_files_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("ORDERFLOW_DATABSE__URL", "typo");
            assert!(load(None, &Overrides::default()).is_err());
            Ok(())
        });
        assert!(
            load(
                Some(Path::new("/nonexistent/orderflow.toml")),
                &Overrides::default()
            )
            .is_err()
        );
    }
}
