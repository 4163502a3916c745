//! `orderflow up` and `orderflow run --role R`: start roles, print the banner, stop on a signal.

use anyhow::Context;
use orderflow_roles::{Platform, Role, Settings, redact_url};

/// Runs `roles` in this process until a shutdown signal, printing the start-up banner.
pub async fn serve(settings: Settings, roles: &[Role]) -> anyhow::Result<()> {
    if roles == [Role::Gateway] {
        return serve_gateway(settings).await;
    }
    let database = redact_url(&settings.database_url());
    orderflow_api::metrics::install()?;
    let platform = Platform::start(settings.clone(), roles).await?;
    print_banner(&settings, &platform, roles, &database);

    let shutdown = platform.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; finishing in-flight work");
        shutdown.cancel();
    });
    platform.wait().await?;
    Ok(())
}

/// A standalone gateway: no database, no Kafka; Redis only for shared rate limits.
async fn serve_gateway(settings: Settings) -> anyhow::Result<()> {
    orderflow_api::metrics::install()?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = orderflow_roles::gateway::start_proxy(&settings, None, shutdown.clone()).await?;
    let ops = match settings.ops.listen {
        Some(listen) => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("ops listener on {listen}"))?;
            let addr = listener.local_addr()?;
            let app = orderflow_roles::ops::gateway_listener_routes(shutdown.clone());
            let stop = shutdown.clone();
            tokio::spawn(async move { orderflow_api::serve(listener, app, stop.cancelled_owned()).await });
            Some(addr)
        }
        None => None,
    };
    println!(
        "orderflow listening on {}://{}",
        settings.http.scheme(),
        running.addr
    );
    println!("  roles:    gateway");
    println!("  upstreams: {}", settings.gateway.upstreams.join(", "));
    print_gateway(&settings, running.shared_limits);
    if let Some(addr) = ops {
        println!("  ops:      http://{addr} (/metrics, /healthz, /readyz)");
    }
    match settings.cache.redis_url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => println!("  cache:    redis ({}), for rate limits only", redact_url(url)),
        None => println!("  cache:    none (rate limits in this process)"),
    }
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; finishing in-flight requests");
        shutdown.cancel();
    });
    running.serve.await?;
    Ok(())
}

fn print_gateway(settings: &Settings, shared_limits: bool) {
    let gateway = &settings.gateway;
    let credentials = if gateway.has_credentials() {
        format!(
            "{} API key(s){}",
            gateway.api_keys.len(),
            if gateway.jwt.is_configured() { ", JWT" } else { "" }
        )
    } else {
        format!(
            "development API key (every scope) in {}",
            orderflow_roles::gateway::dev_key_path(settings).display()
        )
    };
    let limits = if !gateway.rate_limit.enabled {
        "off".to_owned()
    } else {
        format!(
            "{}/s, burst {} per client ({})",
            gateway.rate_limit.requests_per_second,
            gateway.rate_limit.burst,
            if shared_limits {
                "shared in Redis"
            } else {
                "in this process"
            }
        )
    };
    println!("  gateway:  {credentials}; rate limits {limits}");
}

fn print_banner(settings: &Settings, platform: &Platform, roles: &[Role], database: &str) {
    let names: Vec<&str> = roles.iter().map(Role::name).collect();
    let backends = &platform.backends;
    if let Some(addr) = platform.http_addr {
        println!("orderflow listening on {}://{addr}", settings.http.scheme());
    }
    println!("  roles:    {}", names.join(", "));
    if roles.contains(&Role::Gateway) {
        print_gateway(settings, backends.redis.is_some());
    }
    println!("  database: {} ({database})", backends.store.backend().name());
    if backends.bus.is_embedded() {
        println!(
            "  kafka:    embedded mock cluster at {} (memory only: the log is lost on exit, no transactional isolation)",
            backends.bus.bootstrap_servers()
        );
    } else {
        println!("  kafka:    {}", backends.bus.bootstrap_servers());
    }
    if let (Some(addr), true) = (platform.http_addr, roles.contains(&Role::Orders)) {
        println!("  console:  {}://{addr}/", settings.http.scheme());
    }
    if let Some(addr) = platform.ops_addr {
        println!("  ops:      http://{addr} (/metrics, /healthz, /readyz)");
    }
    if let Some(endpoint) = settings
        .tracing
        .otlp_endpoint
        .as_deref()
        .filter(|e| !e.trim().is_empty())
    {
        println!("  traces:   OTLP/HTTP to {}", redact_url(endpoint));
    }
    // The cache line ends the banner.
    match settings.cache.redis_url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => println!("  cache:    redis ({})", redact_url(url)),
        None => println!("  cache:    {}", settings.cache.backend_name()),
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
