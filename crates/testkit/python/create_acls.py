"""Creates Kafka ACLs with the administrator's SCRAM credentials (the harness's ACL tool).

Reads JSON from stdin: {"bootstrap": ..., "username": ..., "password": ...,
"acls": [{"principal": "User:x", "resource": "TOPIC|GROUP|TRANSACTIONAL_ID", "name": ...,
"pattern": "LITERAL|PREFIXED", "operation": "READ|WRITE|DESCRIBE|..."}]}; exits non-zero naming the
first ACL the broker refused.
"""
import json
import sys

from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                   ResourcePatternType, ResourceType)

spec = json.load(sys.stdin)
config = {
    "bootstrap.servers": spec["bootstrap"],
    "security.protocol": spec["protocol"],
    "sasl.mechanisms": "SCRAM-SHA-512",
    "sasl.username": spec["username"],
    "sasl.password": spec["password"],
}
if spec.get("ca_file"):
    config["ssl.ca.location"] = spec["ca_file"]
admin = AdminClient(config)
bindings = [
    AclBinding(ResourceType[acl["resource"]], acl["name"], ResourcePatternType[acl["pattern"]],
               acl["principal"], "*", AclOperation[acl["operation"]], AclPermissionType.ALLOW)
    for acl in spec["acls"]
]
for binding, future in admin.create_acls(bindings, request_timeout=30).items():
    try:
        future.result()
    except Exception as error:  # the broker's reason, for the test's failure message
        sys.exit(f"ACL {binding} refused: {error}")
# The controller accepted them; wait until the broker's authorizer holds them too.
import time
everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                              AclOperation.ANY, AclPermissionType.ANY)
deadline = time.monotonic() + 30
while len(admin.describe_acls(everything, request_timeout=10).result()) < len(bindings):
    if time.monotonic() > deadline:
        sys.exit("the ACLs did not become visible within 30 s")
    time.sleep(0.2)
print(len(bindings))
