//! Body encoding of events.

use serde::{Serialize, de::DeserializeOwned};

use crate::{EncodedEvent, OrderCreated, headers, topics};

/// Why a record body could not be turned back into an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body is not a well-formed event of the expected type.
    #[error("malformed {event_type} body: {source}")]
    Malformed {
        /// The type that was expected.
        event_type: &'static str,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
    /// The body parses but holds values no valid event has.
    #[error("invalid {event_type}: {reason}")]
    Invalid {
        /// The event type.
        event_type: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Encodes and decodes event bodies; one implementation per wire format.
pub trait EventCodec {
    /// MIME type put in the `content-type` header.
    const CONTENT_TYPE: &'static str;

    /// Encodes an `order.created` for the outbox.
    fn encode_order_created(event: &OrderCreated) -> EncodedEvent;

    /// Decodes an `order.created` body.
    fn decode_order_created(body: &[u8]) -> Result<OrderCreated, DecodeError>;
}

/// Provisional JSON encoding (one JSON object per record).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

impl JsonCodec {
    fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        // Serializing these plain structs cannot fail: every field is a string, number or list of them.
        serde_json::to_vec(value).unwrap_or_default()
    }

    fn decode<T: DeserializeOwned>(event_type: &'static str, body: &[u8]) -> Result<T, DecodeError> {
        serde_json::from_slice(body).map_err(|source| DecodeError::Malformed { event_type, source })
    }
}

impl EventCodec for JsonCodec {
    const CONTENT_TYPE: &'static str = "application/json";

    fn encode_order_created(event: &OrderCreated) -> EncodedEvent {
        EncodedEvent {
            event_id: event.event_id,
            topic: topics::ORDER_CREATED,
            key: event.order_id.hyphenated().to_string(),
            event_type: OrderCreated::TYPE,
            payload: Self::encode(event),
            headers: vec![
                (
                    headers::EVENT_ID.to_owned(),
                    event.event_id.hyphenated().to_string().into_bytes(),
                ),
                (
                    headers::EVENT_TYPE.to_owned(),
                    OrderCreated::TYPE.as_bytes().to_vec(),
                ),
                (
                    headers::CONTENT_TYPE.to_owned(),
                    Self::CONTENT_TYPE.as_bytes().to_vec(),
                ),
            ],
        }
    }

    fn decode_order_created(body: &[u8]) -> Result<OrderCreated, DecodeError> {
        Self::decode(OrderCreated::TYPE, body)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use orderflow_domain::{NewOrder, Order};

    use super::*;

    #[test]
    fn order_created_round_trips_with_key_and_headers() {
        let new = NewOrder::parse(&serde_json::json!({"customer_id": "c", "currency": "EUR",
            "items": [{"sku": "A", "quantity": 2, "unit_price_minor": 10}]}))
        .expect("valid");
        let order = Order::create(new, Utc::now());
        let event = OrderCreated::from_order(&order);
        let encoded = JsonCodec::encode_order_created(&event);
        assert_eq!(encoded.key, order.id.to_string());
        assert_eq!(encoded.topic, "order.created");
        assert!(
            encoded
                .headers
                .iter()
                .any(|(k, v)| k == "event-id" && v == event.event_id.to_string().as_bytes())
        );
        let decoded = JsonCodec::decode_order_created(&encoded.payload).expect("decodes");
        assert_eq!(decoded, event);
        assert_eq!(decoded.to_order().expect("valid order"), order);
        assert!(JsonCodec::decode_order_created(b"{not json").is_err());
    }
}
