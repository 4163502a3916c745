#!/usr/bin/env bash
# Soak: runs every fault test of the platform suite in turn with many orders (100,000 by default,
# SOAK_ORDERS to change it), release build, one at a time, and prints what each fault cost:
#
#   fault | orders in flight | lost | stranded | duplicated effects | time to recover
#
# (time to recover: from the fault to the last moment an order waited more than 10 s in a non-terminal status)
#
# Each server-fault test runs on servers of its own (PostgreSQL with production durability, Redis or a Redis
# Cluster, the harness's Kafka or a three-node cluster) with two platform processes; the role-kill test runs
# every role as two processes behind a gateway and kills eight of them mid-batch. Each fails on any loss,
# strand or mismatch that `orderflow reconcile` finds. Prerequisites as for ./scripts/test.sh (run that once first).
set -euo pipefail
cd "$(dirname "$0")/.."

orders="${SOAK_ORDERS:-100000}"
table="$(mktemp)"
trap 'rm -f "$table"' EXIT
export SERVER_FAULT_ORDERS="$orders" KILL_TEST_ORDERS="$orders" KILL_TEST_PROCESSES=2 FAULT_TABLE="$table"
echo "soak: $orders orders per fault kind (release build)"
status=0
cargo test --release --locked -p orderflow --test platform -- --test-threads 1 \
  faults::a_redis_loss_and_a_postgresql_crash \
  faults::a_redis_cluster_failover \
  faults::a_network_cut \
  faults::killing_the_kafka_partition_leader \
  faults::killing_any_role_process || status=$?
echo
echo "| fault | orders in flight | lost | stranded | duplicated effects | time to recover |"
echo "|---|---|---|---|---|---|"
cat "$table"
exit "$status"
