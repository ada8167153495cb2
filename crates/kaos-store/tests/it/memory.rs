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

/// `parse_url` names the store without opening it; an unknown form lists the accepted ones
/// and never shows a password.
#[test]
fn store_urls_parse_without_opening() {
    use kaos_store::{StoreUrl, parse_url};
    use std::path::Path;
    assert_eq!(parse_url(" memory: ").unwrap(), StoreUrl::Memory);
    assert_eq!(
        parse_url("sqlite:state/kaos.db").unwrap(),
        StoreUrl::Sqlite(Path::new("state/kaos.db"))
    );
    assert_eq!(
        parse_url("sqlite:///var/kaos.db").unwrap(),
        StoreUrl::Sqlite(Path::new("/var/kaos.db"))
    );
    assert_eq!(
        parse_url("postgresql://kaos@db/kaos").unwrap(),
        StoreUrl::Postgres("postgresql://kaos@db/kaos")
    );
    assert!(parse_url("sqlite:").is_err());
    let e = parse_url("mysql://kaos:hunter2@db/kaos").unwrap_err();
    assert!(
        e.message.contains("sqlite:PATH") && e.message.contains("memory:"),
        "{e}"
    );
    assert!(!e.message.contains("hunter2"), "{e}");
}
