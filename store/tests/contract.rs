//! One contract, two backends: every test here runs against the embedded store and against
//! the LocalStack-compatible endpoint named by `AWS_ENDPOINT_URL` (started by `localstack/up`).

use bytes::Bytes;
use maas_store::item::Item;
use maas_store::records::sgt::{Checkpoint, ClientData, SgtModel, SgtRepo};
use maas_store::records::tasks::{End, Held, Task, TaskRepo, TaskStatus};
use maas_store::records::training::{JobStatus, LeaseError, TrainJob};
use maas_store::{Cond, Key, Query, StoreError, Write};
use serde_json::json;

#[macro_use]
mod common;
use common::Backend;

fn item(pk: &str, sk: &str, ver: u64, extra: serde_json::Value) -> Item {
    let mut map = extra.as_object().cloned().unwrap_or_default();
    map.insert("pk".into(), pk.into());
    map.insert("sk".into(), sk.into());
    map.insert("ver".into(), ver.into());
    Item(map)
}

on_both_backends!(
    counters_add_atomically_under_concurrency,
    a_put_item_reads_back_with_its_attributes,
    not_exists_lets_exactly_one_of_eight_concurrent_writers_win,
    version_conditions_reject_stale_writers,
    a_failed_transaction_writes_nothing,
    queries_walk_one_partition_by_sort_key_prefix,
    a_cursor_pages_through_a_partition_both_ways,
    the_index_holds_only_items_with_index_keys,
    expired_items_are_invisible_and_count_as_absent,
    deletes_honour_their_conditions,
    blobs_round_trip_copy_list_and_delete,
    large_blobs_survive_multipart_upload,
    a_multipart_upload_joins_its_parts_and_refuses_bad_part_lists,
    a_clone_recovers_when_the_source_checkpoint_was_replaced_mid_copy,
    a_model_stored_with_string_client_data_reads_back_with_that_string,
    a_job_that_gives_way_waits_its_turn_and_new_data_joins_it,
    a_task_is_claimed_once_held_by_its_worker_and_ends_with_its_records_or_not_at_all,
);

async fn a_put_item_reads_back_with_its_attributes(b: Backend) {
    let t = &b.stores.table;
    let it = item(
        "P#1",
        "S#1",
        3,
        json!({"name": "x", "n": 42, "f": 0.5, "flag": true, "list": [1, 2], "nested": {"a": "b"}}),
    );
    t.put(it.clone(), Cond::Always).await.unwrap();
    let got = t.get(&Key::new("P#1", "S#1")).await.unwrap().unwrap();
    assert_eq!(got.version(), 3);
    for k in ["name", "flag", "list", "nested"] {
        assert_eq!(got.0[k], it.0[k], "attribute {k}");
    }
    assert_eq!(got.0["n"].as_f64(), Some(42.0));
    assert_eq!(got.0["f"].as_f64(), Some(0.5));
    assert!(t.get(&Key::new("P#1", "S#2")).await.unwrap().is_none());
}

async fn not_exists_lets_exactly_one_of_eight_concurrent_writers_win(b: Backend) {
    let t = b.stores.table.clone();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let t = t.clone();
            tokio::spawn(async move { t.put(item("RACE", "X", 0, json!({"writer": i})), Cond::NotExists).await })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => wins += 1,
            Err(StoreError::ConditionFailed) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(wins, 1);
}

async fn version_conditions_reject_stale_writers(b: Backend) {
    let t = &b.stores.table;
    t.put(item("V", "1", 1, json!({})), Cond::NotExists).await.unwrap();
    t.put(item("V", "1", 2, json!({"a": 1})), Cond::Version(1))
        .await
        .unwrap();
    let stale = t.put(item("V", "1", 2, json!({"a": 2})), Cond::Version(1)).await;
    assert!(matches!(stale, Err(StoreError::ConditionFailed)));
    let missing = t.put(item("V", "2", 1, json!({})), Cond::Version(0)).await;
    assert!(matches!(missing, Err(StoreError::ConditionFailed)));
    assert_eq!(t.get(&Key::new("V", "1")).await.unwrap().unwrap().0["a"], json!(1));
}

async fn a_failed_transaction_writes_nothing(b: Backend) {
    let t = &b.stores.table;
    t.put(item("TX", "existing", 1, json!({"keep": true})), Cond::Always)
        .await
        .unwrap();
    let writes = vec![
        Write::Put {
            item: item("TX", "new", 0, json!({})),
            cond: Cond::NotExists,
        },
        Write::Delete {
            key: Key::new("TX", "existing"),
            cond: Cond::Always,
        },
        Write::Check {
            key: Key::new("TX", "absent"),
            cond: Cond::Exists,
        },
    ];
    assert!(matches!(t.write(writes).await, Err(StoreError::ConditionFailed)));
    assert!(t.get(&Key::new("TX", "new")).await.unwrap().is_none());
    assert!(t.get(&Key::new("TX", "existing")).await.unwrap().is_some());
    let ok = vec![
        Write::Put {
            item: item("TX", "new", 0, json!({})),
            cond: Cond::NotExists,
        },
        Write::Delete {
            key: Key::new("TX", "existing"),
            cond: Cond::Version(1),
        },
    ];
    t.write(ok).await.unwrap();
    assert!(t.get(&Key::new("TX", "new")).await.unwrap().is_some());
    assert!(t.get(&Key::new("TX", "existing")).await.unwrap().is_none());
}

async fn queries_walk_one_partition_by_sort_key_prefix(b: Backend) {
    let t = &b.stores.table;
    for sk in ["A#2", "A#1", "B#1", "A#10"] {
        t.put(item("Q", sk, 0, json!({})), Cond::Always).await.unwrap();
    }
    assert_eq!(
        t.query(&Query::primary("Q", "")).await.unwrap().len(),
        4,
        "an empty prefix is the whole partition"
    );
    t.put(item("Q2", "A#3", 0, json!({})), Cond::Always).await.unwrap();
    let got: Vec<String> = t
        .query(&Query::primary("Q", "A#"))
        .await
        .unwrap()
        .iter()
        .map(|i| i.key().unwrap().sk)
        .collect();
    assert_eq!(got, ["A#1", "A#10", "A#2"]);
    let mut limited = Query::primary("Q", "");
    limited.limit = Some(2);
    assert_eq!(t.query(&limited).await.unwrap().len(), 2);
}

async fn a_cursor_pages_through_a_partition_both_ways(b: Backend) {
    let t = &b.stores.table;
    for sk in ["I#3", "I#1", "I#2", "I#10", "I#4", "J#1"] {
        t.put(item("CUR", sk, 0, json!({})), Cond::Always).await.unwrap();
    }
    let walk = |descending: bool| async move {
        let (mut seen, mut after) = (Vec::new(), None);
        loop {
            let q = Query::primary("CUR", "I#").limit(2).after(after).descending(descending);
            let page: Vec<String> = t.query(&q).await.unwrap().iter().map(|i| i.key().unwrap().sk).collect();
            if page.is_empty() {
                return seen;
            }
            after = page.last().cloned();
            seen.extend(page);
        }
    };
    assert_eq!(walk(false).await, ["I#1", "I#10", "I#2", "I#3", "I#4"]);
    assert_eq!(walk(true).await, ["I#4", "I#3", "I#2", "I#10", "I#1"]);
    // A cursor need not name a stored item: it is a position.
    let q = Query::primary("CUR", "I#").after(Some("I#15".into()));
    assert_eq!(t.query(&q).await.unwrap().len(), 3);
    let outside = Query::primary("CUR", "I#").after(Some("J#0".into()));
    assert!(
        t.query(&outside).await.is_err(),
        "a cursor outside the prefix is refused"
    );
}

async fn the_index_holds_only_items_with_index_keys(b: Backend) {
    let t = &b.stores.table;
    t.put(item("I", "1", 0, json!({"gsi1pk": "PUB", "gsi1sk": "b"})), Cond::Always)
        .await
        .unwrap();
    t.put(item("I", "2", 0, json!({"gsi1pk": "PUB", "gsi1sk": "a"})), Cond::Always)
        .await
        .unwrap();
    t.put(item("I", "3", 0, json!({})), Cond::Always).await.unwrap();
    let sks = |items: Vec<Item>| items.iter().map(|i| i.key().unwrap().sk).collect::<Vec<_>>();
    assert_eq!(sks(t.query(&Query::gsi1("PUB", "")).await.unwrap()), ["2", "1"]);
    // Dropping the index keys removes the item from the index.
    t.put(item("I", "2", 1, json!({})), Cond::Always).await.unwrap();
    assert_eq!(sks(t.query(&Query::gsi1("PUB", "")).await.unwrap()), ["1"]);
    t.delete(Key::new("I", "1"), Cond::Always).await.unwrap();
    assert!(t.query(&Query::gsi1("PUB", "")).await.unwrap().is_empty());
}

async fn expired_items_are_invisible_and_count_as_absent(b: Backend) {
    let t = &b.stores.table;
    let past = maas_store::now_secs() - 10;
    t.put(item("T", "old", 0, json!({"ttl": past})), Cond::Always)
        .await
        .unwrap();
    assert!(t.get(&Key::new("T", "old")).await.unwrap().is_none());
    assert!(t.query(&Query::primary("T", "")).await.unwrap().is_empty());
    t.put(item("T", "old", 0, json!({"ttl": past + 3600})), Cond::NotExists)
        .await
        .unwrap();
    assert!(t.get(&Key::new("T", "old")).await.unwrap().is_some());
}

async fn deletes_honour_their_conditions(b: Backend) {
    let t = &b.stores.table;
    t.put(item("D", "1", 5, json!({})), Cond::Always).await.unwrap();
    assert!(matches!(
        t.delete(Key::new("D", "1"), Cond::Version(4)).await,
        Err(StoreError::ConditionFailed)
    ));
    assert!(matches!(
        t.delete(Key::new("D", "2"), Cond::Exists).await,
        Err(StoreError::ConditionFailed)
    ));
    t.delete(Key::new("D", "1"), Cond::Version(5)).await.unwrap();
    assert!(t.get(&Key::new("D", "1")).await.unwrap().is_none());
    t.delete(Key::new("D", "1"), Cond::Always).await.unwrap();
}

async fn blobs_round_trip_copy_list_and_delete(b: Backend) {
    let s = &b.stores.blobs;
    s.put("m/1/a.bin", Bytes::from_static(b"hello")).await.unwrap();
    s.put("m/1/b.bin", Bytes::from_static(b"")).await.unwrap();
    s.put("m/2/a.bin", Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(s.get("m/1/a.bin").await.unwrap().unwrap(), Bytes::from_static(b"hello"));
    assert!(s.get("m/1/none").await.unwrap().is_none());
    s.copy("m/1/a.bin", "m/3/c.bin").await.unwrap();
    assert_eq!(s.get("m/3/c.bin").await.unwrap().unwrap(), Bytes::from_static(b"hello"));
    assert_eq!(s.list("m/1/").await.unwrap(), ["m/1/a.bin", "m/1/b.bin"]);
    s.put("m/1/a.bin", Bytes::from_static(b"replaced")).await.unwrap();
    assert_eq!(
        s.get("m/1/a.bin").await.unwrap().unwrap(),
        Bytes::from_static(b"replaced")
    );
    s.delete("m/1/a.bin").await.unwrap();
    s.delete("m/1/a.bin").await.unwrap();
    assert_eq!(s.list("m/1/").await.unwrap(), ["m/1/b.bin"]);
}

async fn large_blobs_survive_multipart_upload(b: Backend) {
    let data: Vec<u8> = (0..(40 * 1024 * 1024 + 123))
        .map(|i: usize| (i * 31 % 251) as u8)
        .collect();
    let data = Bytes::from(data);
    b.stores.blobs.put("big/object", data.clone()).await.unwrap();
    assert_eq!(b.stores.blobs.get("big/object").await.unwrap().unwrap(), data);
}

async fn a_multipart_upload_joins_its_parts_and_refuses_bad_part_lists(b: Backend) {
    use maas_store::blobs::{Part, MIN_PART};
    let blobs = &b.stores.blobs;
    let key = "uploads/big.bin";
    let up = blobs.create_upload(key).await.unwrap();
    let first = Bytes::from(vec![7u8; MIN_PART as usize]);
    let tail = Bytes::from_static(b"the end");
    let e1 = blobs.put_part(key, &up, 1, first.clone()).await.unwrap();
    let e2 = blobs.put_part(key, &up, 2, tail.clone()).await.unwrap();
    let e3 = blobs.put_part(key, &up, 3, tail.clone()).await.unwrap();
    let part = |number, etag: &String| Part {
        number,
        etag: etag.clone(),
        size: 0,
    };
    let upload = up.as_str();
    let refused = |parts: Vec<Part>| async move {
        matches!(
            blobs.complete_upload(key, upload, &parts).await,
            Err(StoreError::Upload(_))
        )
    };
    assert!(refused(vec![part(1, &e1), part(4, &e2)]).await, "a part never uploaded");
    assert!(refused(vec![part(1, &e2), part(2, &e2)]).await, "another part's ETag");
    assert!(
        refused(vec![part(2, &e2), part(3, &e3)]).await,
        "a small part that is not the last"
    );
    assert!(refused(vec![part(2, &e2), part(1, &e1)]).await, "out of order");
    assert!(
        blobs.get(key).await.unwrap().is_none(),
        "nothing written by a refused completion"
    );
    blobs
        .complete_upload(key, &up, &[part(1, &e1), part(2, &e2)])
        .await
        .unwrap();
    let whole = blobs.get(key).await.unwrap().unwrap();
    assert_eq!(
        (whole.len() as u64, &whole[whole.len() - 7..]),
        (MIN_PART + 7, &b"the end"[..])
    );
    assert_eq!(blobs.size(key).await.unwrap(), Some(MIN_PART + 7));
    let range = blobs.get_range(key, MIN_PART - 1, 4).await.unwrap().unwrap();
    assert_eq!(&range[..], &[7, b't', b'h', b'e']);
    assert_eq!(blobs.size("uploads/none").await.unwrap(), None);

    let up = blobs.create_upload("uploads/dropped.bin").await.unwrap();
    blobs
        .put_part("uploads/dropped.bin", &up, 1, tail.clone())
        .await
        .unwrap();
    blobs.abort_upload("uploads/dropped.bin", &up).await.unwrap();
    blobs.abort_upload("uploads/dropped.bin", &up).await.unwrap();
    let p1 = Part {
        number: 1,
        etag: String::new(),
        size: 0,
    };
    assert!(
        blobs.complete_upload("uploads/dropped.bin", &up, &[p1]).await.is_err(),
        "an aborted upload is gone"
    );
    assert_eq!(
        blobs.list("uploads/").await.unwrap(),
        ["uploads/big.bin"],
        "parts are not objects"
    );
}

#[tokio::test]
async fn blob_keys_that_escape_the_store_are_refused() {
    let b = common::embedded().await;
    for key in ["../x", "a/../../x", "/etc/passwd", "", "a//b", ".tmp/x"] {
        assert!(
            b.stores.blobs.put(key, Bytes::from_static(b"x")).await.is_err(),
            "{key}"
        );
    }
}

async fn a_clone_recovers_when_the_source_checkpoint_was_replaced_mid_copy(b: Backend) {
    let repo = SgtRepo::new(&b.stores);
    let checkpoint = |blob: &str, version| {
        Some(Checkpoint {
            blob: blob.into(),
            step: version * 10,
            loss: 0.1,
            version,
        })
    };
    let mut source = SgtModel {
        model_id: "src".into(),
        owner: "alice".into(),
        app_name: "a".into(),
        name: "m".into(),
        model_type: "std".into(),
        client_data: ClientData::from_json(r#"{"k":[1.0,null,""]}"#.into()).unwrap(),
        in_size: 2,
        out_size: 1,
        is_public: true,
        seed: 1,
        created_at: 0,
        checkpoint: checkpoint("sgt/src/ckpt/new.safetensors", 2),
        data_version: 1,
        samples: 5,
        ver: 0,
    };
    b.stores
        .blobs
        .put("sgt/src/ckpt/new.safetensors", Bytes::from_static(b"weights v2"))
        .await
        .unwrap();
    repo.create_model(&source).await.unwrap();
    // The caller read the record before training replaced checkpoint v1, whose blob is gone.
    source.checkpoint = checkpoint("sgt/src/ckpt/old.safetensors", 1);
    let copy = repo.clone_model(&source, "bob", "mine", "dst".into()).await.unwrap();
    let ck = copy.checkpoint.unwrap();
    assert_eq!(ck.version, 2);
    assert_eq!(
        b.stores.blobs.get(&ck.blob).await.unwrap().unwrap(),
        Bytes::from_static(b"weights v2")
    );
    let stored = repo.get_model("bob", "a", "mine").await.unwrap().unwrap();
    assert_eq!(
        (stored.samples, stored.data_version, stored.client_data.json().get()),
        (0, 0, r#"{"k":[1.0,null,""]}"#)
    );
    // A source that did not change but whose blob is missing is an error, not a loop.
    b.stores.blobs.delete("sgt/src/ckpt/new.safetensors").await.unwrap();
    let fresh = repo.get_model("alice", "a", "m").await.unwrap().unwrap();
    assert!(repo.clone_model(&fresh, "bob", "other", "dst2".into()).await.is_err());
    assert!(
        repo.get_model("bob", "a", "other").await.unwrap().is_none(),
        "nothing half-cloned"
    );
}

async fn counters_add_atomically_under_concurrency(b: Backend) {
    let key = Key::new("RATE#u1", "W#1");
    let ttl = Some(maas_store::now_secs() + 3600);
    let adds = (0..8).map(|_| b.stores.table.add(&key, "n", 1, ttl));
    let mut seen: Vec<i64> = futures::future::join_all(adds)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    seen.sort();
    assert_eq!(seen, (1..=8).collect::<Vec<_>>(), "every add sees a distinct value");
    assert_eq!(b.stores.table.add(&key, "n", -3, None).await.unwrap(), 5);
    let stored = b.stores.table.get(&key).await.unwrap().unwrap();
    assert_eq!(stored.ttl(), ttl, "the first add's ttl is kept");
    assert_eq!(
        b.stores
            .table
            .add(&Key::new("RATE#u1", "other"), "n", 2, None)
            .await
            .unwrap(),
        2
    );
}

async fn a_model_stored_with_string_client_data_reads_back_with_that_string(b: Backend) {
    let key = SgtModel::key_for("alice", "a", "old");
    // The item as it was written before client_data could be any JSON value.
    let legacy = item(
        &key.pk,
        &key.sk,
        0,
        json!({"model_id": "old", "owner": "alice", "app_name": "a", "name": "old", "model_type": "std",
               "client_data": "{\"k\": 1}", "in_size": 2, "out_size": 1, "is_public": false, "seed": 1, "created_at": 0}),
    );
    b.stores.table.put(legacy, Cond::NotExists).await.unwrap();
    let repo = SgtRepo::new(&b.stores);
    let model = repo.get_model("alice", "a", "old").await.unwrap().unwrap();
    assert_eq!(model.client_data, ClientData::string("{\"k\": 1}"));
    // Any later write stores the new form, with the same value.
    repo.update_model(&key, |m| m.is_public = true).await.unwrap();
    let model = repo.get_model("alice", "a", "old").await.unwrap().unwrap();
    assert_eq!(model.client_data.json().get(), r#""{\"k\": 1}""#);
}

fn model(owner: &str, name: &str) -> SgtModel {
    SgtModel::new(&format!("{owner}-{name}"), (owner, "a", name), 1, 1)
}

async fn a_job_that_gives_way_waits_its_turn_and_new_data_joins_it(b: Backend) {
    let repo = SgtRepo::new(&b.stores);
    let sample = || Bytes::from([0.5f32, 0.25].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>());
    for name in ["first", "second"] {
        repo.create_model(&model("u", name)).await.unwrap();
        repo.append_train_data("u", "a", name, 1, sample()).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let order = |jobs: Vec<TrainJob>| jobs.into_iter().map(|j| j.model_id).collect::<Vec<_>>();
    assert_eq!(
        order(repo.claimable_jobs().await.unwrap()),
        ["u-first", "u-second"],
        "longest waiting first"
    );

    let first = repo.claimable_jobs().await.unwrap().remove(0);
    let held = repo.claim_job(&first, "w1", 60_000).await.unwrap().unwrap();
    assert!(repo.others_waiting(&held, 0).await.unwrap(), "the second job waits");
    assert!(
        !repo.others_waiting(&held, 60_000).await.unwrap(),
        "but not for a minute yet"
    );
    let (held, _) = repo.heartbeat(&held, "w1", 60_000, (40, 0.5), None).await.unwrap();
    assert!(
        matches!(repo.yield_job(&held, "w2").await, Err(LeaseError::Lost)),
        "only the holder gives way"
    );
    repo.yield_job(&held, "w1").await.unwrap();
    assert_eq!(
        order(repo.claimable_jobs().await.unwrap()),
        ["u-second", "u-first"],
        "it goes to the back"
    );

    // Data for the waiting job joins it: one job, at the new data version, with its progress.
    repo.append_train_data("u", "a", "first", 1, sample()).await.unwrap();
    let jobs: Vec<TrainJob> = repo
        .claimable_jobs()
        .await
        .unwrap()
        .into_iter()
        .filter(|j| j.model_id == "u-first")
        .collect();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].status, jobs[0].data_version, jobs[0].step),
        (JobStatus::Pending, 2, 40)
    );
    assert_eq!(
        order(repo.claimable_jobs().await.unwrap()),
        ["u-second", "u-first"],
        "and keeps its place"
    );
    let again = repo.claim_job(&jobs[0], "w2", 60_000).await.unwrap();
    assert!(again.is_some(), "a job that gave way can be claimed again");
}

async fn a_task_is_claimed_once_held_by_its_worker_and_ends_with_its_records_or_not_at_all(b: Backend) {
    let repo = TaskRepo::new(&b.stores);
    let t = Task::new("owner", "dataset_validation", "check", json!({"dataset_id": "d1"}));
    repo.create(&t).await.unwrap();
    let queued = repo.claimable().await.unwrap();
    assert_eq!(
        queued.iter().map(|t| t.task_id.as_str()).collect::<Vec<_>>(),
        [t.task_id.as_str()]
    );

    let (a, b2) = tokio::join!(
        repo.claim(&queued[0], "w1", 60_000),
        repo.claim(&queued[0], "w2", 60_000)
    );
    let claims = [a.unwrap(), b2.unwrap()];
    assert_eq!(
        claims.iter().filter(|c| c.is_some()).count(),
        1,
        "exactly one worker wins"
    );
    let held = claims.into_iter().flatten().next().unwrap();
    let worker = held.lease_owner.clone().unwrap();
    assert_eq!((held.status, held.attempts), (TaskStatus::Running, 1));
    assert!(
        repo.claimable().await.unwrap().is_empty(),
        "a held task is nobody else's"
    );
    assert!(matches!(repo.held(&held, "someone-else").await.unwrap(), Held::Lost));
    let Held::Yes(held) = repo.heartbeat(&held, &worker, 60_000, 42.0, 2).await.unwrap() else {
        panic!("the holder extends its lease")
    };
    assert_eq!((held.progress, held.log_lines), (42.0, 2));

    // The owner asks to cancel: the worker learns it at its next heartbeat.
    let stored = repo.get("owner", &t.task_id).await.unwrap().unwrap();
    let mut cancel = stored.clone();
    cancel.cancel_requested = true;
    repo.update(&stored, cancel).await.unwrap();
    let Held::CancelRequested(held) = repo.heartbeat(&held, &worker, 60_000, 50.0, 2).await.unwrap() else {
        panic!("the cancel is seen")
    };
    let end = |status| End {
        status,
        result: None,
        error: None,
        log_lines: 2,
    };
    assert!(
        matches!(
            repo.finish(&held, &worker, end(TaskStatus::Completed), vec![])
                .await
                .unwrap(),
            Held::CancelRequested(_)
        ),
        "a task asked to cancel does not complete"
    );

    // Ending writes the task and its records in one transaction: a record that cannot be
    // written leaves the task running.
    let record = item("REC#1", "R", 0, json!({}));
    b.stores.table.put(record.clone(), Cond::Always).await.unwrap();
    let clash = Write::Put {
        item: record,
        cond: Cond::NotExists,
    };
    assert!(repo
        .finish(&held, &worker, end(TaskStatus::Canceled), vec![clash])
        .await
        .is_err());
    assert_eq!(
        repo.get("owner", &t.task_id).await.unwrap().unwrap().status,
        TaskStatus::Running
    );
    let fresh = Write::Put {
        item: item("REC#2", "R", 0, json!({})),
        cond: Cond::NotExists,
    };
    let Held::Yes(done) = repo
        .finish(&held, &worker, end(TaskStatus::Canceled), vec![fresh])
        .await
        .unwrap()
    else {
        panic!("the task ends")
    };
    assert_eq!(done.status, TaskStatus::Canceled);
    assert!(b.stores.table.get(&Key::new("REC#2", "R")).await.unwrap().is_some());
    assert!(
        repo.claimable().await.unwrap().is_empty(),
        "a finished task leaves the queue"
    );

    for seq in 1..=5 {
        repo.log(&t.task_id, seq, "info", &format!("line {seq}")).await.unwrap();
    }
    let page: Vec<u64> = repo
        .logs(&t.task_id, 2, 2)
        .await
        .unwrap()
        .iter()
        .map(|l| l.seq)
        .collect();
    assert_eq!(page, [3, 4]);
    repo.delete(&done).await.unwrap();
    assert!(repo.get("owner", &t.task_id).await.unwrap().is_none());
    assert!(
        repo.logs(&t.task_id, 0, 10).await.unwrap().is_empty(),
        "its log goes with it"
    );

    // A worker that dies leaves its lease to run out; then the task is claimable again.
    let t2 = Task::new("owner", "dataset_validation", "check", json!({}));
    repo.create(&t2).await.unwrap();
    let first = repo.claim(&t2, "w1", 1).await.unwrap().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let again = repo.claimable().await.unwrap();
    assert_eq!(again.len(), 1, "its lease ran out");
    let second = repo.claim(&again[0], "w2", 60_000).await.unwrap().unwrap();
    assert_eq!(second.attempts, 2);
    assert!(
        matches!(repo.heartbeat(&first, "w1", 60_000, 0.0, 0).await.unwrap(), Held::Lost),
        "the first worker lost it"
    );
}
