//! The store's suite, run against both backends it supports: SQLite in a temp
//! file and a real PostgreSQL server (started by scripts/test.sh; its URL comes in
//! `NETWATCH_TEST_POSTGRES`). Each PostgreSQL test gets a database of its own.

use netwatch_controller::store::{
    AgentCredentialRecord, Backend, CaptureRecord, CaptureStatus, Change, Claim, ClientTokenRecord, EnrollmentRecord,
    Guards, MODIFY_ATTEMPTS, OperationKind, OperationRecord, OperationStatus, StorageAccountRecord, Store, StoreError,
    TriggerRecord, VmRecord, WatcherRecord,
};

const SUB: &str = "00000000-0000-0000-0000-000000000000";

fn vm_id(name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/{name}")
}

fn watcher(location: &str) -> WatcherRecord {
    WatcherRecord {
        id: format!(
            "/subscriptions/{SUB}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_{location}"
        ),
        subscription: SUB.into(),
        location: location.into(),
        created_ms: 1,
    }
}

fn capture(w: &WatcherRecord, name: &str, target: &str) -> CaptureRecord {
    CaptureRecord {
        id: format!("{}/packetCaptures/{name}", w.id),
        watcher_id: w.id.clone(),
        target_id: target.into(),
        request_json: r#"{"properties":{}}"#.into(),
        status: CaptureStatus::NotStarted,
        stop_reason: None,
        errors_json: "[]".into(),
        started_ms: None,
        stats_json: "{}".into(),
        etag: "W/\"1\"".into(),
        version: 1,
        created_ms: 10,
        updated_ms: 10,
        parent_key: None,
        instance: None,
    }
}

async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    (store, dir)
}

/// A fresh database on the test PostgreSQL server.
async fn postgres(test: &str) -> Store {
    let server = std::env::var("NETWATCH_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "NETWATCH_TEST_POSTGRES is not set: the store's tests need a PostgreSQL server; \
             scripts/test.sh starts one and sets it (e.g. postgres://postgres@127.0.0.1:55432)"
        )
    });
    let db = format!("nw_{}_{}", std::process::id(), test);
    let admin = Store::open(&format!("{server}/postgres")).await.unwrap();
    let _ = admin
        .raw_execute_for_tests(&format!("DROP DATABASE IF EXISTS {db}"))
        .await;
    admin
        .raw_execute_for_tests(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    admin.close().await;
    let store = Store::open(&format!("{server}/{db}")).await.unwrap();
    assert_eq!(store.backend(), Backend::Postgres);
    store
}

/// Runs `$suite` on both backends.
macro_rules! both {
    ($name:ident, $suite:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let (store, _dir) = super::sqlite().await;
                super::$suite(&store).await;
            }
            #[tokio::test]
            async fn postgres() {
                let store = super::postgres(stringify!($name)).await;
                super::$suite(&store).await;
            }
        }
    };
}

both!(vms, vms_suite);
both!(captures, captures_suite);
both!(operations, operations_suite);
both!(enrollments, enrollments_suite);
both!(storage_accounts, storage_accounts_suite);
both!(silent_hosts, silent_hosts_suite);
both!(client_tokens, client_tokens_suite);
both!(modify_capture, modify_capture_suite);
both!(trigger_firings, trigger_firings_suite);

/// A trigger's firings (issue 16): once per alert and host, then its
/// cooldown, concurrency and rate guards, each counted in the firing's
/// transaction; a capture that ends frees its place.
async fn trigger_firings_suite(store: &Store) {
    let w = store.ensure_watcher(&watcher("westus")).await.unwrap();
    let trigger = format!("{}/netwatchTriggers/t1", w.id);
    let record = TriggerRecord {
        id: trigger.clone(),
        spec_json: "{}".into(),
        created_ms: 1,
        updated_ms: 1,
    };
    assert!(store.put_trigger(&w.id, &record, Some("sha256:aa")).await.unwrap());
    let other = TriggerRecord {
        id: format!("{}/netwatchTriggers/t2", w.id),
        ..record.clone()
    };
    assert!(
        !store.put_trigger(&w.id, &other, Some("sha256:aa")).await.unwrap(),
        "a secret is one trigger's"
    );
    assert_eq!(store.trigger_by_secret("sha256:aa").await.unwrap().unwrap().id, trigger);
    let capture_of = |n: u32| format!("{}/packetCaptures/c{n}", w.id);
    let guards = Guards {
        cooldown_ms: 10_000,
        max_concurrent: 2,
        max_per_hour: 3,
    };
    let claim = |alert: &'static str, vm: &'static str, n: u32, now: i64| {
        let (trigger, capture) = (trigger.clone(), capture_of(n));
        async move {
            store
                .claim_firing(&trigger, alert, &vm_id(vm), &capture, now, now, guards)
                .await
                .unwrap()
        }
    };
    assert_eq!(claim("a1", "vm1", 1, 1_000).await, Claim::Claimed);
    assert!(matches!(claim("a1", "vm1", 9, 1_001).await, Claim::Duplicate { .. }));
    assert_eq!(claim("a2", "vm1", 2, 2_000).await, Claim::Cooldown { until_ms: 11_000 });
    assert_eq!(claim("a2", "vm2", 2, 2_000).await, Claim::Claimed);
    // Two captures claimed, not created yet: both count as running.
    assert_eq!(claim("a3", "vm3", 3, 3_000).await, Claim::Concurrency { running: 2 });
    // Capture 1 exists and has ended: its place is free.
    let mut ended = capture(&w, "c1", &vm_id("vm1"));
    ended.status = CaptureStatus::Stopped;
    store.insert_capture(&ended).await.unwrap();
    assert_eq!(claim("a3", "vm3", 3, 3_000).await, Claim::Claimed);
    let mut done = capture(&w, "c3", &vm_id("vm3"));
    done.status = CaptureStatus::Error;
    store.insert_capture(&done).await.unwrap();
    let mut stopped = capture(&w, "c2", &vm_id("vm2"));
    stopped.status = CaptureStatus::Stopped;
    store.insert_capture(&stopped).await.unwrap();
    // Three started within the hour: the rate limit; an hour on, free again.
    assert_eq!(claim("a4", "vm4", 4, 4_000).await, Claim::RateLimit { started: 3 });
    assert_eq!(claim("a4", "vm4", 4, 3_700_000).await, Claim::Claimed);
    // A firing whose capture could not be made is forgotten; so are a deleted trigger's.
    store.release_firing(&trigger, "a4", &vm_id("vm4")).await.unwrap();
    assert_eq!(store.firings_of(&trigger, "a4").await.unwrap(), Vec::<String>::new());
    assert_eq!(
        store.firings_of(&trigger, "a1").await.unwrap(),
        vec![capture_of(1).to_lowercase()]
    );
    assert!(store.delete_trigger(&trigger).await.unwrap());
    assert!(store.firings_of(&trigger, "a1").await.unwrap().is_empty());
    assert!(matches!(
        store
            .claim_firing(&trigger, "a5", &vm_id("vm1"), &capture_of(5), 1, 1, guards)
            .await,
        Err(StoreError::Stale(_))
    ));
}

async fn client_tokens_suite(store: &Store) {
    let token = |digest: &str, name: &str, role: &str| ClientTokenRecord {
        digest: digest.into(),
        name: name.into(),
        role: role.into(),
        created_ms: 7,
        revoked_ms: None,
    };
    store
        .insert_client_token(&token("sha256:a", "ci", "reader"))
        .await
        .unwrap();
    store
        .insert_client_token(&token("sha256:b", "Alpha", "admin"))
        .await
        .unwrap();
    let taken = store.insert_client_token(&token("sha256:c", "CI", "operator")).await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
    let names: Vec<String> = store
        .list_client_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["Alpha", "ci"]);
    assert!(store.revoke_client_token("CI", 9).await.unwrap());
    assert!(!store.revoke_client_token("ci", 10).await.unwrap(), "revoked once");
    let revoked = store.get_client_token("sha256:a").await.unwrap().unwrap();
    assert_eq!(revoked.revoked_ms, Some(9));
    // The name is free again, twice over: revoked rows do not hold it.
    store
        .insert_client_token(&token("sha256:d", "ci", "operator"))
        .await
        .unwrap();
    assert!(store.revoke_client_token("ci", 11).await.unwrap());
    store
        .insert_client_token(&token("sha256:e", "ci", "reader"))
        .await
        .unwrap();
    let names: Vec<String> = store
        .list_client_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["Alpha", "ci"]);
}

async fn silent_hosts_suite(store: &Store) {
    let host = |name: &str, last_seen_ms: Option<i64>| VmRecord {
        id: vm_id(name),
        subscription: SUB.into(),
        location: "westus".into(),
        agent_json: "{}".into(),
        last_seen_ms,
        created_ms: 50,
        tags_json: "{}".to_owned(),
    };
    for vm in [host("heard", Some(500)), host("quiet", Some(100)), host("never", None)] {
        store.upsert_vm(&vm).await.unwrap();
    }
    let w = store.ensure_watcher(&watcher("westus")).await.unwrap();
    for (name, target, status) in [
        ("on-heard", "heard", CaptureStatus::Running),
        ("on-quiet", "quiet", CaptureStatus::Running),
        ("waiting", "never", CaptureStatus::NotStarted),
        ("done", "quiet", CaptureStatus::Stopped),
    ] {
        let mut c = capture(&w, name, &vm_id(target));
        c.status = status;
        store.insert_capture(&c).await.unwrap();
    }
    let silent = |before: i64| async move {
        let found = store.captures_of_silent_hosts(before).await.unwrap();
        found
            .into_iter()
            .map(|c| c.id.rsplit('/').next().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(silent(40).await, Vec::<String>::new());
    assert_eq!(
        silent(101).await,
        ["on-quiet", "waiting"],
        "never heard: since it registered"
    );
    assert_eq!(silent(501).await, ["on-heard", "on-quiet", "waiting"]);
}

async fn storage_accounts_suite(store: &Store) {
    let account = |name: &str, version: i64, config: &str| StorageAccountRecord {
        name: name.into(),
        resource_group: "Storage-RG".into(),
        location: "westus".into(),
        tags_json: r#"{"team":"net"}"#.into(),
        config_json: config.into(),
        version,
        created_ms: 5,
        updated_ms: 5 + version,
    };
    let first = account("acct1", 1, r#"{"kind":"local"}"#);
    assert!(store.put_storage_account(&first, None).await.unwrap());
    assert_eq!(store.get_storage_account("ACCT1").await.unwrap(), Some(first.clone()));
    // A second make of a taken name, in any case, is a conflict.
    let taken = store.put_storage_account(&account("Acct1", 1, "{}"), None).await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
    // A change applies over the version it read, once.
    let second = account("acct1", 2, r#"{"kind":"s3"}"#);
    assert!(store.put_storage_account(&second, Some(1)).await.unwrap());
    assert!(
        !store
            .put_storage_account(&account("acct1", 2, "{}"), Some(1))
            .await
            .unwrap()
    );
    assert_eq!(store.get_storage_account("acct1").await.unwrap(), Some(second.clone()));
    assert!(
        store
            .put_storage_account(&account("acct0", 1, "{}"), None)
            .await
            .unwrap()
    );
    let names: Vec<String> = store
        .list_storage_accounts()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["acct0", "acct1"]);
    // A delete of a version since changed does nothing.
    assert!(!store.delete_storage_account("acct1", 1).await.unwrap());
    assert!(store.delete_storage_account("acct1", 2).await.unwrap());
    assert_eq!(store.get_storage_account("acct1").await.unwrap(), None);

    // Captures storing to an account, found by its id in their request.
    let w = store.ensure_watcher(&watcher("westus")).await.unwrap();
    let to = |name: &str, account: &str| {
        let mut c = capture(&w, name, &vm_id("vm1"));
        c.request_json = format!(
            r#"{{"properties":{{"storageLocation":{{"storageId":"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/StorageAccounts/{account}"}}}}}}"#
        );
        c
    };
    for capture in [
        to("a", "acct0"),
        to("b", "acct01"),
        to("c", "ACCT0"),
        capture(&w, "d", &vm_id("vm1")),
    ] {
        store.insert_capture(&capture).await.unwrap();
    }
    let storing: Vec<String> = store
        .captures_storing_to("acct0")
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id.rsplit('/').next().unwrap().to_owned())
        .collect();
    assert_eq!(storing, ["a", "c"], "not acct01, not a capture without storage");
}

async fn enrollments_suite(store: &Store) {
    let enrollment = EnrollmentRecord {
        digest: "sha256:e1".into(),
        vm_id: vm_id("New1"),
        location: "westus".into(),
        created_ms: 10,
        expires_ms: 1_000,
        used_ms: None,
    };
    store.insert_enrollment(&enrollment).await.unwrap();
    assert_eq!(
        store.get_enrollment("sha256:e1").await.unwrap(),
        Some(enrollment.clone())
    );
    assert_eq!(store.get_enrollment("sha256:nope").await.unwrap(), None);
    let credential = |digest: &str| AgentCredentialRecord {
        digest: digest.into(),
        vm_id: vm_id("New1"),
        created_ms: 20,
        revoked_ms: None,
    };
    // An expired enrollment is not redeemed, and nothing is written.
    assert!(
        !store
            .redeem_enrollment("sha256:e1", &credential("sha256:c0"), 1_000)
            .await
            .unwrap()
    );
    assert_eq!(store.get_agent_credential("sha256:c0").await.unwrap(), None);
    // Redeemed once...
    assert!(
        store
            .redeem_enrollment("sha256:e1", &credential("sha256:c1"), 20)
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_enrollment("sha256:e1").await.unwrap().unwrap().used_ms,
        Some(20)
    );
    assert_eq!(
        store.get_agent_credential("sha256:c1").await.unwrap(),
        Some(credential("sha256:c1"))
    );
    // ...and never again.
    assert!(
        !store
            .redeem_enrollment("sha256:e1", &credential("sha256:c2"), 30)
            .await
            .unwrap()
    );
    assert_eq!(store.get_agent_credential("sha256:c2").await.unwrap(), None);
}

async fn vms_suite(store: &Store) {
    let vm = VmRecord {
        id: vm_id("Web1"),
        subscription: SUB.into(),
        location: "westus2".into(),
        agent_json: r#"{"version":"0.1.0"}"#.into(),
        last_seen_ms: None,
        created_ms: 5,
        tags_json: "{}".to_owned(),
    };
    store.upsert_vm(&vm).await.unwrap();
    // ids are found whatever their case, and kept as first written
    let got = store.get_vm(&vm_id("WEB1").to_lowercase()).await.unwrap().unwrap();
    assert_eq!(got, vm);
    // registering again updates the facts, not the identity
    let again = VmRecord {
        agent_json: r#"{"version":"0.2.0"}"#.into(),
        id: vm_id("web1"),
        ..vm.clone()
    };
    store.upsert_vm(&again).await.unwrap();
    let got = store.get_vm(&vm.id).await.unwrap().unwrap();
    assert_eq!(got.id, vm.id);
    assert_eq!(got.agent_json, again.agent_json);
    assert!(store.touch_vm(&vm.id, 99).await.unwrap());
    assert_eq!(store.get_vm(&vm.id).await.unwrap().unwrap().last_seen_ms, Some(99));
    assert!(!store.touch_vm(&vm_id("nope"), 1).await.unwrap());
    assert_eq!(store.list_vms(&SUB.to_uppercase()).await.unwrap().len(), 1);
    assert!(
        store
            .list_vms("11111111-0000-0000-0000-000000000000")
            .await
            .unwrap()
            .is_empty()
    );
}

async fn captures_suite(store: &Store) {
    let w = store.ensure_watcher(&watcher("westus2")).await.unwrap();
    // a second ensure keeps the first
    let again = store
        .ensure_watcher(&WatcherRecord {
            created_ms: 999,
            ..watcher("westus2")
        })
        .await
        .unwrap();
    assert_eq!(again.created_ms, 1);
    store.ensure_watcher(&watcher("eastus")).await.unwrap();
    assert_eq!(store.list_watchers(SUB).await.unwrap().len(), 2);

    let c = capture(&w, "pc1", &vm_id("web1"));
    store.insert_capture(&c).await.unwrap();
    let dup = CaptureRecord {
        id: c.id.to_uppercase(),
        ..c.clone()
    };
    let err = store.insert_capture(&dup).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.get_capture(&c.id.to_uppercase()).await.unwrap().unwrap(), c);
    store.insert_capture(&capture(&w, "pc2", &vm_id("web2"))).await.unwrap();
    let names: Vec<_> = store
        .list_captures(&w.id)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names[0].ends_with("pc1") && names[1].ends_with("pc2"));
    assert_eq!(store.captures_for_target(&vm_id("WEB1")).await.unwrap().len(), 1);

    // optimistic concurrency: the version read is the one that may write
    let running = CaptureRecord {
        status: CaptureStatus::Running,
        started_ms: Some(20),
        ..c.clone()
    };
    let v2 = store.update_capture(&running).await.unwrap();
    assert_eq!(v2, 2);
    let stale = CaptureRecord {
        status: CaptureStatus::Stopped,
        ..c.clone()
    };
    assert!(matches!(
        store.update_capture(&stale).await.unwrap_err(),
        StoreError::Stale(_)
    ));
    let stored = store.get_capture(&c.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status.as_str(), stored.version, stored.started_ms),
        ("Running", 2, Some(20))
    );
    let stopped = CaptureRecord {
        status: CaptureStatus::Stopped,
        stop_reason: Some("ManualStop".into()),
        ..stored
    };
    assert_eq!(store.update_capture(&stopped).await.unwrap(), 3);

    // a finished capture is replaced in one step, only as it was read
    let stopped = store.get_capture(&c.id).await.unwrap().unwrap();
    let fresh = CaptureRecord {
        status: CaptureStatus::NotStarted,
        stop_reason: None,
        version: 1,
        created_ms: 99,
        ..stopped.clone()
    };
    let stale = CaptureRecord {
        version: 2,
        ..stopped.clone()
    };
    assert!(matches!(
        store.replace_capture(&stale, &fresh).await.unwrap_err(),
        StoreError::Stale(_)
    ));
    assert_eq!(store.get_capture(&c.id).await.unwrap().unwrap(), stopped);
    store.replace_capture(&stopped, &fresh).await.unwrap();
    let replaced = store.get_capture(&c.id).await.unwrap().unwrap();
    assert_eq!(
        (replaced.status.as_str(), replaced.created_ms, replaced.version),
        ("NotStarted", 99, 1)
    );

    assert!(store.delete_capture(&c.id).await.unwrap());
    assert!(!store.delete_capture(&c.id).await.unwrap());
    assert!(store.get_capture(&c.id).await.unwrap().is_none());

    // a watcher goes with its captures, in one transaction
    let left = store.list_captures(&w.id).await.unwrap();
    assert_eq!(left.len(), 1);
    assert!(store.delete_watcher(&w.id.to_uppercase()).await.unwrap());
    assert!(store.get_watcher(&w.id).await.unwrap().is_none());
    assert!(store.get_capture(&left[0].id).await.unwrap().is_none());
    assert!(!store.delete_watcher(&w.id).await.unwrap());
}

/// `modify_capture`: the change sees what is stored, a write lost to another
/// writer is tried again on a fresh read, and text no status names is refused.
async fn modify_capture_suite(store: &Store) {
    let w = store.ensure_watcher(&watcher("westus")).await.unwrap();
    let c = capture(&w, "modified", &vm_id("web1"));
    store.insert_capture(&c).await.unwrap();

    // Another writer gets in between the first read and its write: the
    // change runs again on the record as that writer left it.
    let mut calls = Vec::new();
    let done = store
        .modify_capture(&c.id, |record| {
            calls.push(record.version);
            if calls.len() == 1 {
                record.version += 100; // as if read before another write
            }
            record.status = CaptureStatus::Running;
            Change::Write(calls.len())
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(calls, [1, 1], "read again after the lost write");
    assert_eq!((done.value, done.written, done.record.version), (2, true, 2));
    let stored = store.get_capture(&c.id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.version), (CaptureStatus::Running, 2));

    // Keep writes nothing.
    let kept = store
        .modify_capture(&c.id, |record| {
            record.status = CaptureStatus::Error;
            Change::Keep(())
        })
        .await
        .unwrap()
        .unwrap();
    assert!(!kept.written);
    assert_eq!(store.get_capture(&c.id).await.unwrap().unwrap(), stored);

    // Always behind another writer: given up after MODIFY_ATTEMPTS reads.
    let mut attempts = 0;
    let stale = store
        .modify_capture(&c.id, |record| {
            attempts += 1;
            record.version = 0;
            Change::Write(())
        })
        .await;
    assert!(matches!(stale, Err(StoreError::Stale(_))), "{stale:?}");
    assert_eq!(attempts, MODIFY_ATTEMPTS);
    assert!(
        store
            .modify_capture("/no/such/capture", |_| Change::Write(()))
            .await
            .unwrap()
            .is_none()
    );

    // A status no version of netwatch wrote is refused where it is read.
    store
        .raw_execute_for_tests("UPDATE packet_captures SET status = 'Paused'")
        .await
        .unwrap();
    let error = store.get_capture(&c.id).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::Query(sqlx::Error::ColumnDecode { index, .. }) if index == "\"status\"" || index == "status"),
        "{error:?}"
    );
}

async fn operations_suite(store: &Store) {
    let op = OperationRecord {
        id: "0195f0f0-0000-7000-8000-000000000001".into(),
        resource_id:
            "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Network/networkWatchers/nw/packetCaptures/pc".into(),
        kind: OperationKind::Create,
        status: OperationStatus::InProgress,
        error_json: None,
        created_ms: 1,
        updated_ms: 1,
    };
    store.insert_operation(&op).await.unwrap();
    assert_eq!(
        store.get_operation(&op.id).await.unwrap().unwrap().status,
        OperationStatus::InProgress
    );
    assert!(
        store
            .finish_operation(&op.id, OperationStatus::Failed, Some(r#"{"code":"CaptureFailed"}"#), 7)
            .await
            .unwrap()
    );
    // an operation ends once
    assert!(
        !store
            .finish_operation(&op.id, OperationStatus::Succeeded, None, 8)
            .await
            .unwrap()
    );
    let got = store.get_operation(&op.id).await.unwrap().unwrap();
    assert_eq!(
        (got.status.as_str(), got.error_json.as_deref(), got.updated_ms),
        ("Failed", Some(r#"{"code":"CaptureFailed"}"#), 7)
    );
    assert!(store.get_operation("nope").await.unwrap().is_none());

    // agent reports settle every open operation of a kind on a resource
    for (id, kind) in [
        ("op-a", OperationKind::Stop),
        ("op-b", OperationKind::Stop),
        ("op-c", OperationKind::Create),
    ] {
        let open = OperationRecord {
            id: id.into(),
            kind,
            ..op.clone()
        };
        store.insert_operation(&open).await.unwrap();
    }
    let settled = store
        .finish_operations_of(
            &op.resource_id.to_uppercase(),
            OperationKind::Stop,
            OperationStatus::Succeeded,
            None,
            9,
        )
        .await
        .unwrap();
    assert_eq!(settled, 2);
    assert_eq!(
        store.get_operation("op-b").await.unwrap().unwrap().status,
        OperationStatus::Succeeded
    );
    assert_eq!(
        store.get_operation("op-c").await.unwrap().unwrap().status,
        OperationStatus::InProgress
    );
}

#[tokio::test]
async fn a_url_of_another_kind_is_refused() {
    let err = Store::open("mysql://localhost/x").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "database URL \"mysql://localhost/x\" is neither sqlite:// nor postgres://"
    );
}

#[tokio::test]
async fn a_postgresql_that_is_not_there_is_named_with_the_cause_and_no_password() {
    // Nothing listens on port 1.
    let err = Store::open("postgres://netwatch:s3cret@127.0.0.1:1/state")
        .await
        .unwrap_err();
    let text = netwatch_api::error::error_chain(&err);
    assert!(
        text.starts_with("connect to the Postgres database postgres://netwatch:***@127.0.0.1:1/state: "),
        "{text}"
    );
    assert!(text.to_lowercase().contains("refused"), "the cause is shown: {text}");
    assert!(!text.contains("s3cret"), "{text}");
}

#[tokio::test]
async fn sqlite_state_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    let store = Store::open(&url).await.unwrap();
    let w = store.ensure_watcher(&watcher("westus2")).await.unwrap();
    store.insert_capture(&capture(&w, "pc1", &vm_id("web1"))).await.unwrap();
    store.close().await;
    let reopened = Store::open(&url).await.unwrap();
    assert_eq!(reopened.list_captures(&w.id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_second_controller_on_one_sqlite_file_is_refused_with_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    let first = Store::open(&url).await.unwrap();
    let err = Store::open(&url).await.unwrap_err();
    assert!(matches!(err, StoreError::SqliteInUse { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("another netwatch controller uses the SQLite file") && text.contains("postgres://"),
        "{text}"
    );
    // Free again once the first is closed (or its process ended).
    first.close().await;
    Store::open(&url).await.unwrap().close().await;
}

#[tokio::test]
async fn a_new_sqlite_file_is_its_owners_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let (store, dir) = sqlite().await;
    store.ping().await.unwrap();
    for name in ["state.db", "state.db-wal"] {
        let mode = std::fs::metadata(dir.path().join(name)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{name}: it holds storage account secrets");
    }
}
