//! Fuzzes the event decoder: arbitrary bytes must give an event or a typed error, never a panic, a hang or
//! an unbounded allocation. Half the inputs get a valid wire-format header so the Avro body decoder is
//! exercised, not just the header checks.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use orderflow_events::{AvroCodec, OrderCancelled, OrderCreated, OrderReadModel};
use orderflow_registry::{MemoryStorage, RegistryService};

struct Harness {
    runtime: tokio::runtime::Runtime,
    codec: AvroCodec,
    created_id: u32,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let registry = Arc::new(RegistryService::new(Arc::new(MemoryStorage::default())));
        let codec = runtime.block_on(AvroCodec::connect(registry, "")).expect("codec");
        let created_id = codec.schema_id::<OrderCreated>().expect("registered");
        Harness { runtime, codec, created_id }
    })
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let input: Vec<u8> = match data.split_first() {
        Some((mode, rest)) if mode % 2 == 1 => {
            let mut framed = vec![0];
            framed.extend_from_slice(&h.created_id.to_be_bytes());
            framed.extend_from_slice(rest);
            framed
        }
        _ => data.to_vec(),
    };
    h.runtime.block_on(async {
        let _ = h.codec.decode::<OrderCreated>(&input).await;
        let _ = h.codec.decode::<OrderCancelled>(&input).await;
        let _ = h.codec.decode::<OrderReadModel>(&input).await;
    });
});
