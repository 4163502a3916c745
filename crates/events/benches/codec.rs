//! Encode and decode of an `order.created` with 5 items (target: under 2 µs each) with the codec
//! (apache-avro), next to serde_avro_fast on the same schema and bytes: the measurement that decides whether
//! a second Avro library on the hot path pays for itself.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a benchmark fails by panicking

use std::hint::black_box;
use std::sync::Arc;

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use orderflow_domain::{NewOrder, Order};
use orderflow_events::{AvroCodec, OrderCreated, SchemaSet};
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
            codec
                .decode_cached::<OrderCreated>(black_box(&bytes))
                .expect("cached")
                .expect("decode")
        })
    });

    // The same body with serde_avro_fast, from the same schema text.
    let (_, text, _) = SchemaSet::get()
        .expect("schemas")
        .latest("order.created")
        .expect("order.created");
    let fast: serde_avro_fast::Schema = text.parse().expect("schema");
    let body = &bytes[5..];
    let mut config = serde_avro_fast::ser::SerializerConfig::new(&fast);
    assert_eq!(
        serde_avro_fast::to_datum_vec(&event, &mut config).expect("encode"),
        body,
        "same bytes"
    );
    assert_eq!(
        serde_avro_fast::from_datum_slice::<OrderCreated>(body, &fast).expect("decode"),
        event
    );
    c.bench_function("serde_avro_fast: encode order.created (5 items)", |b| {
        b.iter(|| serde_avro_fast::to_datum_vec(black_box(&event), &mut config).expect("encode"))
    });
    c.bench_function("serde_avro_fast: decode order.created (5 items)", |b| {
        b.iter(|| serde_avro_fast::from_datum_slice::<OrderCreated>(black_box(body), &fast).expect("decode"))
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
