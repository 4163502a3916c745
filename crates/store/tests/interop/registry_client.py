"""Confluent's own SchemaRegistryClient against Orderflow's registry, calling every endpoint as a user's
tooling would: schema types, schemas by id (their subjects and versions), references, compatibility tests
against one version and against all, subject-level config removal, soft and permanent deletes of versions
and subjects, and modes. Every refusal is checked for Confluent's error code.

usage: registry_client.py REGISTRY_URL
Prints "ok" and exits 0, or fails with the first assertion that does not hold.
"""
import sys

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

client = SchemaRegistryClient({"url": sys.argv[1]})

V1 = '{"type":"record","name":"E","fields":[{"name":"a","type":"long"}]}'
V2 = ('{"type":"record","name":"E","fields":[{"name":"a","type":"long"},'
      '{"name":"b","type":"string","default":""}]}')
V3 = ('{"type":"record","name":"E","fields":[{"name":"a","type":"long"},'
      '{"name":"c","type":"int","default":0}]}')
# A field without a default that the latest version lacks: readers with BAD cannot read its data.
BAD = ('{"type":"record","name":"E","fields":[{"name":"a","type":"long"},'
       '{"name":"b","type":"string","default":""},{"name":"z","type":"int"}]}')


def avro(text):
    return Schema(text, "AVRO")


def error_code(call):
    """The Confluent error code `call` fails with."""
    try:
        call()
    except SchemaRegistryError as error:
        return error.error_code
    raise AssertionError("expected the registry to refuse")


def expect(actual, wanted, what):
    assert actual == wanted, f"{what}: got {actual!r}, expected {wanted!r}"


expect(client.get_schema_types(), ["AVRO"], "schema types")

# Schemas by id: the subjects and versions holding them.
id1 = client.register_schema("e-value", avro(V1))
id2 = client.register_schema("e-value", avro(V2))
expect(client.register_schema("f-value", avro(V1)), id1, "one schema, one id across subjects")
expect(client.get_versions("e-value"), [1, 2], "versions")
expect(sorted(client.get_subjects_by_schema_id(id1)), ["e-value", "f-value"], "subjects of a schema")
expect(sorted((v.subject, v.version) for v in client.get_schema_versions(id1)),
       [("e-value", 1), ("f-value", 1)], "versions of a schema")
expect(client.get_subjects_by_schema_id(id2), ["e-value"], "subjects of the second schema")
expect(error_code(lambda: client.get_subjects_by_schema_id(99999)), 40403, "unknown schema id")

# References: none can exist (the registry takes self-contained schemas), but the version must.
expect(client.get_referenced_by("e-value", 1), [], "referenced by")
expect(error_code(lambda: client.get_referenced_by("e-value", 7)), 40402, "referenced by, unknown version")
expect(error_code(lambda: client.get_referenced_by("nobody-value", 1)), 40401, "referenced by, unknown subject")

# Compatibility against one version and against all the subject's level names.
assert client.test_compatibility("e-value", avro(V3), version=2), "V3 after V2"
assert not client.test_compatibility("e-value", avro(BAD)), "a field without default breaks BACKWARD"
assert client.test_compatibility_all_versions("e-value", avro(V3)), "V3 against all"
assert not client.test_compatibility_all_versions("e-value", avro(BAD)), "BAD against all"
assert client.test_compatibility_all_versions("new-value", avro(BAD)), "a new subject accepts anything"
expect(error_code(lambda: client.test_compatibility("e-value", avro(V3), version="x")), 42202, "bad version")

# A subject's own compatibility level can be removed; it then follows the global one.
expect(client.set_compatibility("e-value", "FULL"), {"compatibility": "FULL"}, "set level")
expect(client.get_compatibility("e-value"), "FULL", "own level")
expect(client.delete_config("e-value").compatibility_level.value, "FULL", "level removed")
expect(error_code(lambda: client.get_config("e-value")), 40408, "no own level any more")
expect(error_code(lambda: client.delete_config("e-value")), 40401, "nothing to remove")

# Versions: soft delete first, then permanent; numbering goes on past deleted versions.
expect(error_code(lambda: client.delete_version("e-value", 1, permanent=True)), 40407, "not soft-deleted")
expect(client.delete_version("e-value", 1), 1, "soft delete")
client.clear_caches()
expect(client.get_versions("e-value"), [2], "live versions")
expect(client.get_versions("e-value", deleted=True), [1, 2], "with soft-deleted ones")
expect(client.get_version("e-value", 1, deleted=True).version, 1, "a soft-deleted version, asked for")
client.clear_caches()  # the client keeps versions it read
expect(error_code(lambda: client.get_version("e-value", 1)), 40402, "a soft-deleted version is hidden")
expect(error_code(lambda: client.delete_version("e-value", 1)), 40406, "soft-deleted twice")
expect(client.delete_version("e-value", 1, permanent=True), 1, "permanent delete")
client.clear_caches()
expect(client.get_versions("e-value", deleted=True), [2], "gone for good")
expect(error_code(lambda: client.delete_version("e-value", 9)), 40402, "unknown version")
expect(client.register_schema_full_response("e-value", avro(V3)).version, 3, "numbering goes on")

# Subjects: the same two steps.
expect(error_code(lambda: client.delete_subject("f-value", permanent=True)), 40405, "subject not soft-deleted")
expect(client.delete_subject("f-value"), [1], "soft-deleted subject")
client.clear_caches()
assert "f-value" not in client.get_subjects(), "hidden from the subject list"
assert "f-value" in client.get_subjects(deleted=True), "listed with deleted=true"
expect(error_code(lambda: client.get_versions("f-value")), 40401, "a soft-deleted subject is not found")
expect(error_code(lambda: client.delete_subject("f-value")), 40404, "soft-deleted twice")
expect(client.delete_subject("f-value", permanent=True), [1], "permanent delete")
expect(error_code(lambda: client.get_versions("f-value", deleted=True)), 40401, "gone for good")
expect(error_code(lambda: client.delete_subject("nobody-value")), 40401, "unknown subject")
expect(client.get_subjects_by_schema_id(id1), [], "no live subject holds the first schema")

# Modes: a read-only subject refuses registrations and deletes; unknown modes are refused.
expect(client.get_global_mode(), "READWRITE", "global mode")
expect(error_code(lambda: client.get_mode("e-value")), 40409, "no own mode")
expect(client.update_mode("e-value", "READONLY"), "READONLY", "set mode")
expect(client.get_mode("e-value"), "READONLY", "own mode")
V4 = V3.replace('"c"', '"d"')
expect(error_code(lambda: client.register_schema("e-value", avro(V4))), 42205, "read-only subject")
expect(error_code(lambda: client.delete_version("e-value", 2)), 42205, "read-only delete")
expect(client.delete_mode("e-value"), "READONLY", "mode removed")
expect(error_code(lambda: client.update_global_mode("IMPORT")), 42204, "unsupported mode")
expect(client.update_global_mode("READONLY"), "READONLY", "global read-only")
expect(error_code(lambda: client.register_schema("g-value", avro(V1))), 42205, "read-only registry")
expect(client.update_global_mode("READWRITE"), "READWRITE", "writable again")
expect(client.update_mode("g-value", "READWRITE"), "READWRITE", "a subject's own mode")
expect(client.update_global_mode("READONLY_OVERRIDE"), "READONLY_OVERRIDE", "override")
expect(error_code(lambda: client.register_schema("g-value", avro(V2))), 42205, "the override wins")
expect(client.update_global_mode("READWRITE"), "READWRITE", "writable again")
client.register_schema("g-value", avro(V1))

print("ok")
