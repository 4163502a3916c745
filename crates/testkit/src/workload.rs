//! The mixed order workload of the lifecycle tests, placed over the HTTP API.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use crate::HarnessError;

/// One placed order: the API's answer to the POST, and whether its immediate cancel was accepted.
pub type Placed = (Value, bool);

/// The products the workload buys: (SKU, unit price in minor units, stock), with `scarce` units of `SCARCE`.
/// `PRICEY` costs more than the lifecycle tests let their payment provider accept (`decline_above_minor`
/// 40,000), so its orders are declined.
pub fn catalogue(scarce: i32) -> [(&'static str, i64, i32); 3] {
    [
        ("PLENTY", 1_000, 1_000_000),
        ("SCARCE", 2_500, scarce),
        ("PRICEY", 50_000, 1_000_000),
    ]
}

/// Places orders `first..first + count` against `base` over 8 connections, as the lifecycle tests want them:
/// every order buys 1 to 3 units of `PLENTY` (every 17th one `PRICEY` instead, which gets declined), every
/// 4th also one `SCARCE`, at the catalogue's prices ([`catalogue`]); customers `c-0` to `c-299`. Every 10th order is cancelled at once (a 409 is fine when its
/// payment already failed). Fails on any other answer. `client` carries the credentials, if any.
pub async fn place_orders(
    client: &reqwest::Client,
    base: &str,
    first: usize,
    count: usize,
) -> Result<Vec<Placed>, HarnessError> {
    place_all(client, base, first, count, None).await
}

/// Like [`place_orders`], as a client that rides out outages: a request answered `502`, `503` or `504`, or
/// not answered at all, is sent again after 200 ms until it is answered. A POST that may have reached the
/// server before it failed (anything but a refused connection or a `503`) may have placed an order the
/// result does not list; only orders answered `201` are returned. `interrupted` counts those sends: each is
/// a request cut off while the server held it.
pub async fn place_orders_through_outages(
    client: &reqwest::Client,
    base: &str,
    first: usize,
    count: usize,
    interrupted: Arc<AtomicUsize>,
) -> Result<Vec<Placed>, HarnessError> {
    place_all(client, base, first, count, Some(interrupted)).await
}

async fn place_all(
    client: &reqwest::Client,
    base: &str,
    first: usize,
    count: usize,
    patient: Option<Arc<AtomicUsize>>,
) -> Result<Vec<Placed>, HarnessError> {
    let next = Arc::new(AtomicUsize::new(first));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (client, base, next, patient) = (client.clone(), base.to_owned(), next.clone(), patient.clone());
        clients.spawn(async move {
            let mut placed = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= first + count {
                    return Ok::<_, HarnessError>(placed);
                }
                placed.push(place(&client, &base, i, patient.as_deref()).await?);
            }
        });
    }
    let mut placed = Vec::with_capacity(count);
    while let Some(done) = clients.join_next().await {
        placed.extend(done.map_err(|e| HarnessError::step("order client")(e.into()))??);
    }
    Ok(placed)
}

fn failed(what: &str) -> impl FnOnce(reqwest::Error) -> HarnessError + '_ {
    move |e| HarnessError::step(what)(e.into())
}

/// Sends `request` until it is answered other than `502`, `503` or `504`, or not at all (when `patient`,
/// counting the sends the server may have acted on in it), or once.
async fn send(
    request: impl Fn() -> reqwest::RequestBuilder,
    patient: Option<&AtomicUsize>,
    what: &str,
) -> Result<reqwest::Response, HarnessError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let outcome = request().send().await;
        let (again, reached) = match &outcome {
            Ok(response) => match response.status().as_u16() {
                503 => (true, false),
                502 | 504 => (true, true),
                _ => (false, false),
            },
            Err(e) if e.is_connect() => (true, false),
            Err(e) => (e.is_timeout() || e.is_request(), true),
        };
        let Some(interrupted) = patient else {
            return outcome.map_err(failed(what));
        };
        if !again || std::time::Instant::now() >= deadline {
            return outcome.map_err(failed(what));
        }
        if reached {
            interrupted.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Places order `i` (and cancels it when its number says so).
async fn place(
    client: &reqwest::Client,
    base: &str,
    i: usize,
    patient: Option<&AtomicUsize>,
) -> Result<Placed, HarnessError> {
    // Every other order quotes the catalogue's price, as a client showing prices would; the rest send none.
    let line = |sku: &str, quantity: usize| {
        let price = catalogue(0)
            .iter()
            .find(|(s, _, _)| *s == sku)
            .map_or(0, |(_, price, _)| *price);
        if i.is_multiple_of(2) {
            json!({"sku": sku, "quantity": quantity, "unit_price_minor": price})
        } else {
            json!({"sku": sku, "quantity": quantity})
        }
    };
    let mut items = if i.is_multiple_of(17) {
        vec![line("PRICEY", 1)]
    } else {
        vec![line("PLENTY", 1 + i % 3)]
    };
    if i.is_multiple_of(4) {
        items.push(line("SCARCE", 1));
    }
    let body = json!({"customer_id": format!("c-{}", i % 300), "currency": "EUR", "items": items});
    let response = send(
        || client.post(format!("{base}/v1/orders")).json(&body),
        patient,
        "POST /v1/orders",
    )
    .await?;
    if response.status().as_u16() != 201 {
        return Err(HarnessError::Failed(format!(
            "POST /v1/orders answered {}",
            response.status()
        )));
    }
    let created: Value = response.json().await.map_err(failed("the created order"))?;
    if i % 10 != 5 {
        return Ok((created, false));
    }
    let id = created["id"].as_str().unwrap_or_default();
    let status = send(
        || client.post(format!("{base}/v1/orders/{id}/cancel")),
        patient,
        "POST cancel",
    )
    .await?
    .status()
    .as_u16();
    match status {
        200 => Ok((created, true)),
        // Sent more than once, the cancel may have taken effect the first time: the order says.
        409 if patient.is_some() => {
            let order: Value = send(
                || client.get(format!("{base}/v1/orders/{id}")),
                patient,
                "GET order",
            )
            .await?
            .json()
            .await
            .map_err(failed("the order"))?;
            Ok((created, order["status"] == "CANCELLED"))
        }
        409 => Ok((created, false)),
        other => Err(HarnessError::Failed(format!("cancel answered {other}"))),
    }
}
