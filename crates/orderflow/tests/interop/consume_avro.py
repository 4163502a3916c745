"""Independent client: consumes Orderflow's order.created records with confluent-kafka's own Avro
deserializer, fetching writer schemas from Orderflow's embedded schema registry over its REST API.

usage: consume_avro.py BOOTSTRAP TOPIC REGISTRY_URL ORDER_ID
Prints the decoded record as JSON and exits 0, or exits 1 if the order's record is not found in 30 s.
"""
import json
import sys
import time
import uuid

from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

bootstrap, topic, registry_url, order_id = sys.argv[1:5]
deserializer = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))
consumer = Consumer({
    "bootstrap.servers": bootstrap,
    "group.id": f"interop-{uuid.uuid4()}",
    "auto.offset.reset": "earliest",
    "isolation.level": "read_committed",
})
consumer.subscribe([topic])
deadline = time.time() + 30
try:
    while time.time() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        if message.key().decode() != order_id:
            continue
        value = deserializer(message.value(), SerializationContext(topic, MessageField.VALUE))
        headers = {k: v.decode() for k, v in (message.headers() or [])}
        print(json.dumps({"value": value, "headers": headers}, default=str))
        sys.exit(0)
finally:
    consumer.close()
print(f"no record for order {order_id} on {topic}", file=sys.stderr)
sys.exit(1)
