//! Ordered scans, cursors and generated keys through `Database` (issue 16).

use std::sync::atomic::Ordering;

use mnemo::database::{Permission, CURSOR_PAGE, CURSOR_PAGE_BYTES};
use mnemo::Error;

use crate::support::{logged_in, watched_logged_in};

fn numbered(from: usize, to: usize) -> Vec<(String, String)> {
    (from..to)
        .map(|i| (format!("k{i:03}"), format!(r#"{{"n":{i}}}"#)))
        .collect()
}

/// Sets k000..k<n-1> to {"n": i}, in a scrambled order, in one commit.
fn set_numbered(db: &mnemo::Database, n: usize) {
    let mut txn = db.begin();
    for j in 0..n {
        let i = (j * 7) % n;
        txn.set("s", &format!("k{i:03}"), &format!(r#"{{"n": {i}}}"#))
            .unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn pages_through_250_keys_in_order_with_after() {
    let (_inst, user) = logged_in("u");
    let db = user.create_db("d").unwrap();
    set_numbered(&db, 250);
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut sizes = Vec::new();
    loop {
        let page = db.scan("s", "", after.as_deref(), 100).unwrap();
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        sizes.push(page.len());
        seen.extend(page);
    }
    assert_eq!(sizes, vec![100, 100, 50]);
    assert_eq!(seen, numbered(0, 250));
    assert_eq!(db.scan("s", "", None, 0).unwrap(), numbered(0, 250));
    // Deleted keys are skipped and do not count towards the limit.
    db.delete("s", "k001").unwrap();
    assert_eq!(
        db.scan("s", "", None, 2).unwrap(),
        vec![numbered(0, 1)[0].clone(), numbered(2, 3)[0].clone()]
    );
}

#[test]
fn prefixes_are_isolated() {
    let (_inst, user) = logged_in("u");
    let db = user.create_db("d").unwrap();
    for (i, key) in [
        "users", "user0", "user/b", "user", "user/a", "usea", "user/",
    ]
    .iter()
    .enumerate()
    {
        db.set("s", key, &i.to_string()).unwrap();
    }
    db.set("other", "user/c", "9").unwrap();
    let keys = |prefix: &str, after: Option<&str>| -> Vec<String> {
        db.scan("s", prefix, after, 0)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    };
    assert_eq!(keys("user/", None), vec!["user/", "user/a", "user/b"]);
    assert_eq!(keys("users", None), vec!["users"]);
    assert_eq!(keys("user0", None), vec!["user0"]);
    assert_eq!(keys("user/", Some("user/")), vec!["user/a", "user/b"]);
    assert_eq!(
        keys("", None),
        vec!["usea", "user", "user/", "user/a", "user/b", "user0", "users"]
    );
    assert_eq!(
        db.scan("other", "user", None, 0).unwrap(),
        vec![("user/c".to_string(), "9".to_string())]
    );
}

#[test]
fn arguments_are_checked_like_other_reads() {
    let (_inst, user) = logged_in("u");
    let db = user.create_db("d").unwrap();
    set_numbered(&db, 3);
    let invalid =
        |r: mnemo::Result<Vec<(String, String)>>| matches!(r, Err(Error::InvalidArgument(_)));
    assert!(invalid(db.scan("", "", None, 0)));
    assert!(invalid(db.scan("s", &"k".repeat(4097), None, 0)));
    assert!(invalid(db.scan("s", "a\0", None, 0)));
    assert!(invalid(db.scan("s", "", Some(""), 0)));
    assert!(invalid(db.scan("s", "", Some(&"k".repeat(4097)), 0)));
    assert!(db.cursor("s", &"k".repeat(5000), None).is_err());
    assert_eq!(db.scan("s", &"k".repeat(4096), None, 0).unwrap(), vec![]);
    assert_eq!(db.scan("s", "", Some("\u{10FFFF}"), 0).unwrap(), vec![]);
    assert_eq!(db.scan("s", "", None, usize::MAX).unwrap(), numbered(0, 3));
    assert_eq!(
        db.scan("_settings", "name", None, 0).unwrap(),
        vec![("name".to_string(), "\"d\"".to_string())]
    );
}

#[test]
fn the_cursor_pages_by_itself_and_sees_later_keys_ahead() {
    let (_inst, user) = logged_in("u");
    let db = user.create_db("d").unwrap();
    let n = CURSOR_PAGE * 2 + 10;
    let mut txn = db.begin();
    for i in 0..n {
        txn.set("s", &format!("k{i:04}"), &i.to_string()).unwrap();
    }
    txn.commit().unwrap();
    let mut cursor = db.cursor("s", "", None).unwrap();
    let first = cursor.next_cell().unwrap().unwrap();
    assert_eq!(first, ("k0000".to_string(), "0".to_string()));
    // A key committed ahead of the cursor is seen; one behind it is not.
    db.set("s", "k9999", "\"late\"").unwrap();
    db.set("s", "a", "\"behind\"").unwrap();
    let rest: Vec<(String, String)> = cursor.by_ref().map(Result::unwrap).collect();
    assert_eq!(rest.len(), n);
    assert_eq!(rest[0].0, "k0001");
    assert_eq!(rest[n - 2], (format!("k{:04}", n - 1), (n - 1).to_string()));
    assert_eq!(rest[n - 1], ("k9999".to_string(), "\"late\"".to_string()));
    assert!(cursor.next_cell().unwrap().is_none());
    assert!(cursor.next_cell().unwrap().is_none());
    // After, and an empty store.
    let tail: Vec<_> = db
        .cursor("s", "", Some("k0510"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(tail.len(), n - 511 + 1);
    assert!(db.cursor("empty", "", None).unwrap().next().is_none());
}

#[test]
fn the_cursor_reads_a_bounded_number_of_bytes_at_a_time_and_still_returns_every_key() {
    let (backend, _inst, user) = watched_logged_in("u");
    let db = user.create_db("d").unwrap();
    // Cells of exactly 512 KiB (a 3-byte key and its JSON string): 8 fill a page's bytes
    // exactly, so the page after them is read and found empty; 9 run over by one.
    let value = |i: usize| {
        format!(
            "\"{}\"",
            char::from(b'a' + (i % 26) as u8)
                .to_string()
                .repeat((512 << 10) - 5)
        )
    };
    for n in [8, 9, 40] {
        let store = format!("s{n}");
        for i in 0..n {
            db.set(&store, &format!("k{i:02}"), &value(i)).unwrap();
        }
        backend
            .most_range_bytes
            .store(0, std::sync::atomic::Ordering::SeqCst);
        let read: Vec<(String, String)> = db
            .cursor(&store, "", None)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(read.len(), n);
        for (i, (key, found)) in read.iter().enumerate() {
            assert_eq!(key, &format!("k{i:02}"));
            assert!(found == &value(i), "the value of {key}");
        }
        let most = backend.most_range_bytes.load(Ordering::SeqCst);
        assert!(
            most <= CURSOR_PAGE_BYTES,
            "one read of the cursor took {most} bytes ({n} cells of 512 KiB)"
        );
    }
}

#[test]
fn scans_stop_when_read_is_revoked() {
    let (inst, owner) = logged_in("owner");
    inst.create_user("guest", None).unwrap();
    let guest = inst.login("guest", None).unwrap();
    let db = owner.create_db("d").unwrap();
    db.set("s", "k", "1").unwrap();
    let key = guest.default_key().unwrap();
    db.grant(&key, Permission::Read).unwrap();
    let theirs = guest.load_db(&db.id()).unwrap();
    assert_eq!(theirs.scan("s", "", None, 0).unwrap().len(), 1);
    let mut cursor = theirs.cursor("s", "", None).unwrap();
    db.revoke(&key).unwrap();
    assert!(matches!(
        theirs.scan("s", "", None, 0),
        Err(Error::PermissionDenied(_))
    ));
    assert!(matches!(
        cursor.next_cell(),
        Err(Error::PermissionDenied(_))
    ));
}

#[test]
fn fifty_inserts_give_unique_keys_in_insertion_order() {
    let (_inst, user) = logged_in("u");
    let db = user.create_db("d").unwrap();
    let keys: Vec<String> = (0..50)
        .map(|i| db.insert("log", &i.to_string()).unwrap().0)
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
    assert!(keys.iter().all(|k| k.len() == 32
        && k.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())));
    let scanned = db.scan("log", "", None, 0).unwrap();
    assert_eq!(
        scanned,
        keys.iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), i.to_string()))
            .collect::<Vec<_>>()
    );
    // Inserts from several threads are unique too.
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let db = db.clone();
            std::thread::spawn(move || {
                (0..25)
                    .map(|_| db.insert("many", "0").unwrap().0)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 100);
    assert_eq!(db.scan("many", "", None, 0).unwrap().len(), 100);
    assert!(matches!(
        db.insert("log", "{bad"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        db.insert("_settings", "1"),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(db.scan("log", "", None, 0).unwrap().len(), 50);
}
