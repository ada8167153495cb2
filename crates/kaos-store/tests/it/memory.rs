//! The conformance suite on the in-memory store.

use std::sync::Arc;

use kaos_store::InMemoryStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_store_conforms() {
    super::conformance::run_all(Arc::new(InMemoryStore::new()), "mem").await;
}

#[tokio::test]
async fn memory_url_opens_the_in_memory_store() {
    let store = kaos_store::open("memory:", kaos_store::StoreOptions::default())
        .await
        .unwrap();
    super::conformance::run_all(store, "mem-url").await;
}
