//! Id-order paging costs what the page reads: the candidates one page examines do not grow
//! with the number of matches, on page 1 or deep in the result.

use serde_json::json;

use super::context::StoreContext;
use super::plan::Limits;
use super::walk::{self, Page};
use crate::fhir::search::query::Query;
use crate::fhir::search::SearchParams;
use crate::store::index::Position;
use crate::store::{records, Commit, Store, VersionRecord};

const BASE: &str = "http://herald.test/fhir";
const LIMITS: Limits = Limits { max_scan: 100_000, max_include: 1000, cheap_total: 1000, max_total: 10_000, max_params: 64 };

/// A store of `n` Tasks, every one `requested`; `rare` of them owned by `Organization/rare`.
fn store(n: usize, rare: usize) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut c = Commit::new();
    for i in 0..n {
        let id = format!("t-{i:06}");
        let owner = if i % (n / rare.max(1)).max(1) == 0 { "Organization/rare" } else { "Organization/lab" };
        let record = VersionRecord {
            v: records::FORMAT,
            resource_type: "Task".into(),
            id: id.clone(),
            seq: 1,
            version_id: "1".into(),
            last_updated: 1,
            method: "PUT".into(),
            deleted: false,
            resource: Some(json!({ "resourceType": "Task", "id": id, "status": "requested", "intent": "order",
                "owner": { "reference": owner } })),
            full_url: None,
        };
        c.put_version(&record).unwrap();
        c.index_version(&store, &record, BASE).unwrap();
    }
    store.apply(c).unwrap();
    (dir, store)
}

fn page(store: &Store, query: &str, after: Option<&str>) -> Page {
    let (q, errors) = Query::parse("Task", query, SearchParams::current().unwrap());
    assert!(errors.is_empty(), "{errors:?}");
    let ctx = StoreContext::new(store, BASE);
    let walk = walk::plan(&ctx, &q, &LIMITS).unwrap();
    walk.page(&ctx, Position { after, back: false }, 10, LIMITS.max_scan, &mut 0).unwrap()
}

#[test]
fn a_page_examines_the_same_candidates_for_200_or_20000_matches() {
    for n in [200, 20_000] {
        let (_dir, store) = store(n, 20);
        let first = page(&store, "status=requested", None);
        assert_eq!((first.rows.len(), first.more, first.examined), (10, true, 11), "{n} matches, page 1");
        let deep = format!("t-{:06}", n - 50);
        let late = page(&store, "status=requested", Some(&deep));
        assert_eq!((late.rows.len(), late.examined), (10, 11), "{n} matches, a page deep in the result");
        assert_eq!(late.rows.first().map(|r| r.1.as_str()), Some(format!("t-{:06}", n - 49).as_str()));
        // Two clauses: the smaller (20 owners) drives, the large one filters by key lookups.
        let both = page(&store, "status=requested&owner=Organization/rare", None);
        assert_eq!((both.rows.len(), both.examined), (10, 11), "{n} matches, two clauses");
    }
}

#[test]
fn the_smaller_clause_drives_whatever_the_parameter_order() {
    let (_dir, store) = store(20_000, 20);
    let (q, _) = Query::parse("Task", "status=requested&owner=Organization/rare", SearchParams::current().unwrap());
    let ctx = StoreContext::new(&store, BASE);
    let walk = walk::plan(&ctx, &q, &LIMITS).unwrap();
    assert_eq!(walk.driver, super::plan::Driver::Index("owner".into()), "the smaller clause drives");
}
