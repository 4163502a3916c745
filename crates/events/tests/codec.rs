//! The Avro codec against an in-memory registry: round trips, schema evolution both ways, the wire format,
//! and bad input that must give typed errors, never panics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::sync::Arc;

use chrono::Utc;
use orderflow_domain::{NewOrder, Order};
use orderflow_events::{AvroCodec, DecodeError, Event, EventItem, OrderCancelled, OrderCreated, SchemaSet};
use orderflow_registry::{MemoryStorage, RegistryService, SchemaSource};
use serde::{Deserialize, Serialize};

fn registry() -> Arc<dyn SchemaSource> {
    Arc::new(RegistryService::new(Arc::new(MemoryStorage::default())))
}

fn order(lines: usize) -> Order {
    let items: Vec<_> = (0..lines)
        .map(|i| serde_json::json!({"sku": format!("SKU-{i}"), "quantity": i + 1, "unit_price_minor": 250 * (i + 1)}))
        .collect();
    let doc = serde_json::json!({"customer_id": "cust-7", "currency": "EUR", "items": items});
    Order::create(NewOrder::parse(&doc).expect("valid"), Utc::now())
}

#[tokio::test]
async fn events_round_trip_in_the_confluent_wire_format() {
    let codec = AvroCodec::connect(registry(), "").await.expect("codec");
    let order = order(5);
    let event = OrderCreated::from_order(&order);
    let encoded = codec
        .encode(
            &event,
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        )
        .expect("encode");
    assert_eq!(encoded.payload[0], 0, "magic byte");
    let id = codec.schema_id::<OrderCreated>().expect("registered");
    assert_eq!(
        u32::from_be_bytes(encoded.payload[1..5].try_into().expect("4 bytes")),
        id
    );
    assert_eq!(encoded.key, order.id.to_string());
    let header = |name: &str| {
        encoded
            .headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(header("event-id"), Some(event.event_id.clone()));
    assert_eq!(header("event-type").as_deref(), Some("order.created"));
    assert_eq!(header("schema-id"), Some(id.to_string()));
    assert!(header("traceparent").is_some());

    let decoded: OrderCreated = codec.decode(&encoded.payload).await.expect("decode");
    assert_eq!(decoded, event);
    assert_eq!(decoded.to_order().expect("valid order"), order);

    let cancelled = OrderCancelled {
        event_id: uuid::Uuid::now_v7().to_string(),
        event_type: "order.cancelled".into(),
        order_id: order.id.to_string(),
        order_version: 2,
        occurred_at: Utc::now().timestamp_micros(),
        previous_status: "CREATED".into(),
        reason: None,
    };
    let bytes = codec.encode(&cancelled, None).expect("encode").payload;
    assert_eq!(
        codec.decode::<OrderCancelled>(&bytes).await.expect("decode"),
        cancelled
    );
}

/// `order.created` v2: v1 plus a `channel` field with a default.
const V2: &str = r#"{"type":"record","name":"OrderCreated","namespace":"dev.orderflow.events","fields":[
  {"name":"event_id","type":{"type":"string","logicalType":"uuid"}},
  {"name":"event_type","type":"string"},
  {"name":"order_id","type":{"type":"string","logicalType":"uuid"}},
  {"name":"order_version","type":"long"},
  {"name":"occurred_at","type":{"type":"long","logicalType":"timestamp-micros"}},
  {"name":"customer_id","type":"string"},
  {"name":"currency","type":"string"},
  {"name":"items","type":{"type":"array","items":{"type":"record","name":"EventItem","fields":[
    {"name":"sku","type":"string"},{"name":"quantity","type":"int"},{"name":"unit_price_minor","type":"long"}]}}},
  {"name":"total_minor","type":"long"},
  {"name":"channel","type":"string","default":"web"}]}"#;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "OrderCreated")]
struct OrderCreatedV2 {
    event_id: String,
    event_type: String,
    order_id: String,
    order_version: i64,
    occurred_at: i64,
    customer_id: String,
    currency: String,
    items: Vec<EventItem>,
    total_minor: i64,
    channel: String,
}

impl Event for OrderCreatedV2 {
    const TOPIC: &'static str = "order.created";
    const TYPE: &'static str = "order.created";
    fn event_id(&self) -> &str {
        &self.event_id
    }
    fn order_id(&self) -> &str {
        &self.order_id
    }
    fn order_version(&self) -> i64 {
        self.order_version
    }
    fn occurred_at(&self) -> i64 {
        self.occurred_at
    }
}

#[tokio::test]
async fn v1_and_v2_readers_each_decode_the_other_versions_records() {
    let registry = registry();
    let v1 = AvroCodec::connect(registry.clone(), "").await.expect("v1 codec");
    let v2_set: &'static SchemaSet = Box::leak(Box::new(
        SchemaSet::parse([("order.created", 2, V2)]).expect("v2"),
    ));
    let v2 = AvroCodec::connect_with(registry, "", v2_set)
        .await
        .expect("v2 registers: the new field has a default");
    assert_ne!(v1.schema_id::<OrderCreated>(), v2.schema_id::<OrderCreatedV2>());

    let old = OrderCreated::from_order(&order(2));
    let old_bytes = v1.encode(&old, None).expect("encode v1").payload;
    let upgraded: OrderCreatedV2 = v2.decode(&old_bytes).await.expect("v2 reads v1");
    assert_eq!(upgraded.channel, "web", "the default fills the missing field");
    assert_eq!(upgraded.order_id, old.order_id);

    let new = OrderCreatedV2 {
        channel: "mobile".into(),
        ..upgraded
    };
    let new_bytes = v2.encode(&new, None).expect("encode v2").payload;
    let downgraded: OrderCreated = v1.decode(&new_bytes).await.expect("v1 reads v2");
    assert_eq!(downgraded, old, "v1 ignores the field it does not know");
}

#[tokio::test]
async fn bad_records_give_typed_errors() {
    let codec = AvroCodec::connect(registry(), "").await.expect("codec");
    let good = codec
        .encode(&OrderCreated::from_order(&order(3)), None)
        .expect("encode")
        .payload;

    assert!(matches!(
        codec.decode::<OrderCreated>(&[]).await,
        Err(DecodeError::Truncated(0))
    ));
    assert!(matches!(
        codec.decode::<OrderCreated>(&good[..4]).await,
        Err(DecodeError::Truncated(4))
    ));
    let mut magic = good.clone();
    magic[0] = 7;
    assert!(matches!(
        codec.decode::<OrderCreated>(&magic).await,
        Err(DecodeError::UnknownMagic(7))
    ));
    let mut unknown = good.clone();
    unknown[1..5].copy_from_slice(&9999u32.to_be_bytes());
    assert!(matches!(
        codec.decode::<OrderCreated>(&unknown).await,
        Err(DecodeError::UnknownSchemaId(9999))
    ));
    for cut in [6, good.len() / 2, good.len() - 1] {
        let result = codec.decode::<OrderCreated>(&good[..cut]).await;
        assert!(
            matches!(result, Err(DecodeError::Corrupt { .. })),
            "cut at {cut}: {result:?}"
        );
    }
    let mut trailing = good.clone();
    trailing.push(42);
    assert!(matches!(
        codec.decode::<OrderCreated>(&trailing).await,
        Err(DecodeError::Corrupt { .. })
    ));
    let mut huge = good[..5].to_vec();
    huge.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]); // a string of ~2^62 bytes
    assert!(codec.decode::<OrderCreated>(&huge).await.is_err());
    // An order.created record read as an order.cancelled: the writer schema does not resolve.
    let wrong = codec.decode::<OrderCancelled>(&good).await;
    assert!(matches!(wrong, Err(DecodeError::WrongSchema { .. })), "{wrong:?}");
    assert!(wrong.is_err_and(|e| !e.is_transient()));
}
