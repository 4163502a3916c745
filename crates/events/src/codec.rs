//! The Avro codec in the Confluent wire format: `0x00`, the writer schema's registry id (4 bytes, big
//! endian), then the Avro binary body.
//!
//! Encoding uses the latest committed schema of the event's topic, registered under `<topic>-value` when
//! the codec is built, so encoding needs no round trip. Decoding reads with the writer schema named by the
//! id (fetched once from the registry, then cached) resolved against the reader's own schema, so old and new
//! versions interoperate. Records written with the reader's own schema take a faster path.

use std::collections::HashMap;
use std::sync::{Arc, Once, RwLock};

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use orderflow_registry::{RegistryError, SchemaSource, value_subject};

use crate::{EncodedEvent, Event, SchemaSet, headers};

/// MIME type put in the `content-type` header.
pub const CONTENT_TYPE: &str = "application/vnd.orderflow.avro+confluent";

/// Largest allocation one decoded value may ask for; a corrupt length prefix must not claim gigabytes.
const MAX_ALLOCATION_BYTES: usize = 16 * 1024 * 1024;

/// Why the codec could not be built or an event encoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The registry refused or could not be reached.
    #[error("registering the event schemas")]
    Registry(#[from] RegistryError),
    /// A committed schema is invalid, or an event does not fit its schema.
    #[error("{context}")]
    Schema {
        /// Which schema or event, and what was wrong.
        context: String,
        /// The schema library's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
}

/// Any error, as the source of another.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl CodecError {
    fn schema(context: String, source: impl Into<BoxError>) -> Self {
        Self::Schema {
            context,
            source: Some(source.into()),
        }
    }
}

/// Why a record could not be decoded; every variant but [`DecodeError::RegistryUnavailable`] is permanent
/// (the record belongs in a dead-letter topic).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the 5-byte wire-format header.
    #[error("record of {0} bytes is too short for the Confluent wire format (at least 5)")]
    Truncated(usize),
    /// The first byte is not the wire format's magic byte 0.
    #[error("unknown magic byte {0:#04x} (expected 0x00)")]
    UnknownMagic(u8),
    /// The registry has no schema with this id.
    #[error("unknown schema id {0}")]
    UnknownSchemaId(u32),
    /// The registry could not be asked (transient: retry later).
    #[error("fetching a writer schema")]
    RegistryUnavailable(#[source] RegistryError),
    /// The registry's schema with this id is not a valid Avro schema.
    #[error("the registry's schema {id} does not parse")]
    UnreadableSchema {
        /// Writer schema id.
        id: u32,
        /// The parser's error.
        #[source]
        source: apache_avro::Error,
    },
    /// The writer schema cannot be resolved to this event's schema.
    #[error("schema {id} cannot be read as {event_type}")]
    WrongSchema {
        /// Writer schema id.
        id: u32,
        /// The event type expected.
        event_type: &'static str,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The body does not decode with its writer schema (truncated, corrupt, trailing bytes).
    #[error("corrupt {event_type} body (schema {id})")]
    Corrupt {
        /// Writer schema id.
        id: u32,
        /// The event type expected.
        event_type: &'static str,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The body decodes but holds values no valid event has.
    #[error("invalid {event_type}: {reason}")]
    Invalid {
        /// The event type.
        event_type: &'static str,
        /// What is wrong.
        reason: String,
        /// The parser's error, when a value failed to parse.
        #[source]
        source: Option<BoxError>,
    },
}

impl DecodeError {
    /// True when retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::RegistryUnavailable(_))
    }
}

struct TopicCodec {
    id: u32,
    writer: GenericDatumWriter<'static>,
    own_reader: GenericDatumReader<'static>,
    schema: &'static Schema,
}

/// Encodes and decodes every Orderflow event; build one per process and share it.
pub struct AvroCodec {
    source: Arc<dyn SchemaSource>,
    topics: HashMap<&'static str, TopicCodec>,
    writer_schemas: RwLock<HashMap<u32, Arc<Schema>>>,
}

impl std::fmt::Debug for AvroCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: HashMap<_, _> = self.topics.iter().map(|(t, c)| (*t, c.id)).collect();
        f.debug_struct("AvroCodec").field("schema_ids", &ids).finish()
    }
}

impl AvroCodec {
    /// Registers the latest schema of every topic (subjects `<prefix><topic>-value`) and builds the codec.
    pub async fn connect(source: Arc<dyn SchemaSource>, topic_prefix: &str) -> Result<Self, CodecError> {
        Self::connect_with(
            source,
            topic_prefix,
            SchemaSet::get()
                .map_err(|e| CodecError::schema("the committed event schemas".to_owned(), e.as_str()))?,
        )
        .await
    }

    /// Like [`AvroCodec::connect`] with another schema set (a tool or test writing a schema's next version).
    pub async fn connect_with(
        source: Arc<dyn SchemaSource>,
        topic_prefix: &str,
        set: &'static SchemaSet,
    ) -> Result<Self, CodecError> {
        static LIMIT: Once = Once::new();
        LIMIT.call_once(|| {
            apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
        });
        let mut topics = HashMap::new();
        for topic in set.topics() {
            let Some((version, text, schema)) = set.latest(topic) else {
                continue;
            };
            let subject = value_subject(&format!("{topic_prefix}{topic}"));
            // The subject enforces the rule the repository's schema check applies.
            source.set_level(&subject, set.level(topic)).await?;
            let id = source.register(&subject, text).await?;
            let bad = |e: apache_avro::Error| CodecError::schema(format!("schema {topic} v{version}"), e);
            let writer = GenericDatumWriter::builder(schema).build().map_err(bad)?;
            let own_reader = GenericDatumReader::builder(schema).build().map_err(bad)?;
            topics.insert(
                topic,
                TopicCodec {
                    id,
                    writer,
                    own_reader,
                    schema,
                },
            );
        }
        Ok(Self {
            source,
            topics,
            writer_schemas: RwLock::default(),
        })
    }

    fn topic<E: Event>(&self) -> Result<&TopicCodec, CodecError> {
        self.topics.get(E::TOPIC).ok_or_else(|| CodecError::Schema {
            context: format!("no schema for topic {}", E::TOPIC),
            source: None,
        })
    }

    /// The registry id of the schema this codec writes `E` with.
    pub fn schema_id<E: Event>(&self) -> Option<u32> {
        self.topics.get(E::TOPIC).map(|t| t.id)
    }

    /// Encodes `event` for the outbox: wire-format body, key = order id, and the standard headers (plus
    /// `traceparent` when given).
    pub fn encode<E: Event>(&self, event: &E, traceparent: Option<&str>) -> Result<EncodedEvent, CodecError> {
        let topic = self.topic::<E>()?;
        let mut payload = Vec::with_capacity(256);
        payload.push(0);
        payload.extend_from_slice(&topic.id.to_be_bytes());
        topic
            .writer
            .write_ser(&mut payload, event)
            .map_err(|e| CodecError::schema(format!("{} does not fit its schema", E::TYPE), e))?;
        let event_id = uuid::Uuid::parse_str(event.event_id())
            .map_err(|e| CodecError::schema(format!("event id {} is not a UUID", event.event_id()), e))?;
        let mut headers = vec![
            (headers::EVENT_ID, event.event_id().as_bytes().to_vec()),
            (headers::EVENT_TYPE, E::TYPE.as_bytes().to_vec()),
            (headers::CONTENT_TYPE, CONTENT_TYPE.as_bytes().to_vec()),
            (headers::SCHEMA_ID, topic.id.to_string().into_bytes()),
        ];
        if let Some(tp) = traceparent {
            headers.push((headers::TRACEPARENT, tp.as_bytes().to_vec()));
        }
        Ok(EncodedEvent {
            event_id,
            topic: E::TOPIC,
            key: event.order_id().to_owned(),
            event_type: E::TYPE,
            payload,
            headers,
        })
    }

    /// Decodes a wire-format record into `E`, resolving its writer schema against `E`'s schema (fetched from
    /// the registry the first time an id is seen).
    pub async fn decode<E: Event>(&self, bytes: &[u8]) -> Result<E, DecodeError> {
        if let Some(decoded) = self.decode_cached(bytes) {
            return decoded;
        }
        let (id, _) = split_header(bytes)?;
        self.writer_schema(id).await?;
        self.decode_cached(bytes)
            .unwrap_or(Err(DecodeError::UnknownSchemaId(id)))
    }

    /// Decodes without any I/O; `None` when the record's writer schema has not been fetched yet (then use
    /// [`AvroCodec::decode`]).
    pub fn decode_cached<E: Event>(&self, bytes: &[u8]) -> Option<Result<E, DecodeError>> {
        let (id, mut body) = match split_header(bytes) {
            Ok(parts) => parts,
            Err(e) => return Some(Err(e)),
        };
        let Some(own) = self.topics.get(E::TOPIC) else {
            return Some(Err(DecodeError::Invalid {
                event_type: E::TYPE,
                reason: "no schema for this event type".into(),
                source: None,
            }));
        };
        let corrupt = |source: BoxError| DecodeError::Corrupt {
            id,
            event_type: E::TYPE,
            source,
        };
        let decoded = if id == own.id {
            own.own_reader
                .read_deser::<E>(&mut body)
                .map_err(|e| corrupt(e.into()))
        } else {
            let writer = self
                .writer_schemas
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
                .cloned()?;
            let wrong = |source: BoxError| DecodeError::WrongSchema {
                id,
                event_type: E::TYPE,
                source,
            };
            orderflow_registry::compat::can_read(&writer, own.schema)
                .map_err(|reason| wrong(reason.into()))
                .and_then(|()| {
                    let reader = GenericDatumReader::builder(&writer)
                        .reader_schema(own.schema)
                        .build()
                        .map_err(|e| wrong(e.into()))?;
                    let value = reader.read_value(&mut body).map_err(|e| corrupt(e.into()))?;
                    apache_avro::from_value::<E>(&value).map_err(|e| DecodeError::Invalid {
                        event_type: E::TYPE,
                        reason: "the record does not map to the event".into(),
                        source: Some(e.into()),
                    })
                })
        };
        Some(decoded.and_then(|event| {
            if body.is_empty() {
                Ok(event)
            } else {
                Err(corrupt(
                    format!("{} trailing bytes after the record", body.len()).into(),
                ))
            }
        }))
    }

    /// The writer schema with `id`: from the cache, else from the registry (then cached forever: ids are
    /// immutable).
    async fn writer_schema(&self, id: u32) -> Result<Arc<Schema>, DecodeError> {
        if let Some(schema) = self
            .writer_schemas
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            return Ok(schema.clone());
        }
        let text = self.source.schema_by_id(id).await.map_err(|e| match e {
            RegistryError::SchemaNotFound(_) => DecodeError::UnknownSchemaId(id),
            RegistryError::Other {
                error_code: 40403, ..
            } => DecodeError::UnknownSchemaId(id),
            other => DecodeError::RegistryUnavailable(other),
        })?;
        let schema = Arc::new(
            Schema::parse_str(&text).map_err(|source| DecodeError::UnreadableSchema { id, source })?,
        );
        self.writer_schemas
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, schema.clone());
        Ok(schema)
    }
}

/// Splits a wire-format record into its schema id and body.
pub(crate) fn split_header(bytes: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    match bytes {
        [0, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        [magic, _, _, _, _, ..] => Err(DecodeError::UnknownMagic(*magic)),
        short => Err(DecodeError::Truncated(short.len())),
    }
}
