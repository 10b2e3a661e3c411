//! Instances and accounts: reopening, concurrent creation, options.

use std::sync::{Arc, Barrier};
use std::thread;

use mnemo::backend::{Backend, MemoryBackend};
use mnemo::crypto::KdfParams;
use mnemo::instance::InstanceOptions;
use mnemo::{Error, Instance};

#[test]
fn reopening_keeps_identity_accounts_and_databases() {
    let backend = Arc::new(MemoryBackend::new());
    let (device, db_id) = {
        let inst = Instance::open(backend.clone()).unwrap();
        inst.create_user("alice", Some("pw")).unwrap();
        inst.create_user("bob", None).unwrap();
        let alice = inst.login("alice", Some("pw")).unwrap();
        let db = alice.create_db("notes").unwrap();
        db.set("s", "k", "\"v\"").unwrap();
        alice.add_private_key(Some("second")).unwrap();
        (inst.device_id(), db.id())
    };
    let inst = Instance::open(backend.clone() as Arc<dyn Backend>).unwrap();
    assert_eq!(inst.device_id(), device);
    assert_eq!(inst.list_users().unwrap(), vec!["alice", "bob"]);
    let alice = inst.login("alice", Some("pw")).unwrap();
    assert_eq!(alice.list_keys().unwrap().len(), 2);
    let db = alice.find_db("notes").unwrap();
    assert_eq!(db.id(), db_id);
    assert_eq!(db.get("s", "k").unwrap(), "\"v\"");
    db.set("s", "k", "\"w\"").unwrap();
    assert!(matches!(
        inst.login("alice", Some("nope")),
        Err(Error::AuthFailed)
    ));
    inst.login("bob", None).unwrap();
}

#[test]
fn argon2_options_are_fixed_at_creation() {
    let backend = Arc::new(MemoryBackend::new());
    let stronger = KdfParams {
        m_kib: 32 * 1024,
        t: 3,
        p: 1,
    };
    let inst = Instance::open_with(
        backend.clone(),
        InstanceOptions {
            kdf: Some(stronger),
        },
    )
    .unwrap();
    assert_eq!(inst.kdf_params(), stronger);
    drop(inst);
    // Reopened without options: the recorded parameters hold.
    assert_eq!(
        Instance::open(backend.clone()).unwrap().kdf_params(),
        stronger
    );
    // With other options: refused, not silently changed.
    let weaker = InstanceOptions {
        kdf: Some(KdfParams::MINIMUM),
    };
    assert!(matches!(
        Instance::open_with(backend, weaker),
        Err(Error::InvalidArgument(_))
    ));
    let too_weak = InstanceOptions {
        kdf: Some(KdfParams {
            m_kib: 1024,
            t: 1,
            p: 1,
        }),
    };
    assert!(Instance::open_with(Arc::new(MemoryBackend::new()), too_weak).is_err());
}

#[test]
fn concurrent_creations_of_one_name_have_one_winner() {
    let inst = Instance::open(Arc::new(MemoryBackend::new())).unwrap();
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let inst = inst.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                let mut won = Vec::new();
                for round in 0..10 {
                    won.push(inst.create_user(&format!("same{round}"), None).is_ok());
                    inst.create_user(&format!("own{t}-{round}"), None).unwrap();
                }
                won
            })
        })
        .collect();
    let results: Vec<Vec<bool>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for round in 0..10 {
        assert_eq!(
            results.iter().filter(|won| won[round]).count(),
            1,
            "round {round}"
        );
    }
    assert_eq!(inst.list_users().unwrap().len(), 10 + 80);
    for round in 0..10 {
        inst.login(&format!("same{round}"), None).unwrap();
    }
}

#[test]
fn the_first_user_is_the_admin() {
    let inst = Instance::open(Arc::new(MemoryBackend::new())).unwrap();
    inst.create_user("first", None).unwrap();
    inst.create_user("second", None).unwrap();
    let first = inst.login("first", None).unwrap();
    let second = inst.login("second", None).unwrap();
    assert_eq!(
        first
            .admin_list_users()
            .unwrap()
            .iter()
            .filter(|u| u.admin)
            .count(),
        1
    );
    assert!(matches!(
        second.admin_list_users(),
        Err(Error::PermissionDenied(_))
    ));
}
