//! Nested documents, path reads and a key's history.

use mnemo::database::{ChangeKind, Permission};
use mnemo::Database;

use crate::support::logged_in;

/// Two databases on two instances: `b` has write on `a`'s database and both start from the
/// same entries. Returns the handles and a function that sends every entry of one to the
/// other.
fn pair() -> (Vec<(mnemo::Instance, mnemo::User)>, Database, Database) {
    let (inst_a, user_a) = logged_in("a");
    let (inst_b, user_b) = logged_in("b");
    let a = user_a.create_db("doc").unwrap();
    a.grant(&user_b.default_key().unwrap(), Permission::Write)
        .unwrap();
    exchange(&a, &inst_b);
    let b = user_b.load_db(&a.id()).unwrap();
    (vec![(inst_a, user_a), (inst_b, user_b)], a, b)
}

/// Sends every entry `from` holds to `to`, parents first.
fn exchange(from: &Database, to: &mnemo::Instance) {
    let mut frontier = from.tips().unwrap();
    let mut all = Vec::new();
    let mut seen = std::collections::HashSet::new();
    while let Some(id) = frontier.pop() {
        if !seen.insert(id) {
            continue;
        }
        let bytes = from.entry_bytes(&id).unwrap();
        let entry = mnemo::entry::Entry::decode(&bytes).unwrap();
        frontier.extend(entry.content().parents.iter().copied());
        all.push((entry.content().height, bytes));
    }
    all.sort();
    for (_, bytes) in all {
        to.receive_entry(&bytes).unwrap();
    }
}

fn sync_both(people: &[(mnemo::Instance, mnemo::User)], a: &Database, b: &Database) {
    exchange(a, &people[1].0);
    exchange(b, &people[0].0);
}

#[test]
fn concurrent_edits_of_different_fields_both_survive() {
    let (people, a, b) = pair();
    a.set(
        "people",
        "p1",
        r#"{"name":"Ann","address":{"city":"Bergen","zip":"5003"}}"#,
    )
    .unwrap();
    sync_both(&people, &a, &b);
    a.set_path("people", "p1", "/address/city", r#""Oslo""#)
        .unwrap();
    b.set_path("people", "p1", "/name", r#""Anne""#).unwrap();
    sync_both(&people, &a, &b);
    let expected = r#"{"address":{"city":"Oslo","zip":"5003"},"name":"Anne"}"#;
    assert_eq!(a.get("people", "p1").unwrap(), expected);
    assert_eq!(b.get("people", "p1").unwrap(), expected);
    a.verify().unwrap();
    b.verify().unwrap();
}

#[test]
fn concurrent_edits_of_one_field_converge_to_one_value() {
    let (people, a, b) = pair();
    let ea = a.set_path("people", "p1", "/name", r#""from a""#).unwrap();
    let eb = b.set_path("people", "p1", "/name", r#""from b""#).unwrap();
    sync_both(&people, &a, &b);
    let winner = if ea > eb { "from a" } else { "from b" };
    for db in [&a, &b] {
        assert_eq!(
            db.get("people", "p1").unwrap(),
            format!(r#"{{"name":"{winner}"}}"#)
        );
    }
}

#[test]
fn a_whole_value_set_replaces_older_paths_and_keeps_newer_ones() {
    let (people, a, b) = pair();
    a.set("people", "p1", r#"{"n":1}"#).unwrap();
    sync_both(&people, &a, &b);
    // Concurrent: a writes a path at height 2, b replaces the whole value at height 2.
    a.set_path("people", "p1", "/x", "1").unwrap();
    b.set("people", "p1", r#"{"n":2}"#).unwrap();
    // Then a writes another path at height 3, on top of both.
    sync_both(&people, &a, &b);
    a.set_path("people", "p1", "/y", "2").unwrap();
    sync_both(&people, &a, &b);
    let value_a = a.get("people", "p1").unwrap();
    assert_eq!(value_a, b.get("people", "p1").unwrap());
    assert!(value_a.contains(r#""n":2"#), "{value_a}");
    assert!(value_a.contains(r#""y":2"#), "{value_a}");
    a.verify().unwrap();
    b.verify().unwrap();
}

#[test]
fn paths_read_write_and_refuse_bad_pointers() {
    let (_inst, user) = logged_in("p");
    let db = user.create_db("p").unwrap();
    db.set_path("s", "k", "/a/b~1c/0", "[1,2]").unwrap();
    assert_eq!(db.get("s", "k").unwrap(), r#"{"a":{"b/c":{"0":[1,2]}}}"#);
    assert_eq!(db.get_path("s", "k", "/a/b~1c/0/1").unwrap(), "2");
    assert_eq!(
        db.get_path("s", "k", "").unwrap(),
        db.get("s", "k").unwrap()
    );
    assert!(db.get_path("s", "k", "/nope").unwrap_err().is_not_found());
    assert!(db.get_path("s", "absent", "/a").unwrap_err().is_not_found());
    for bad in ["a", "/~2", "/x~"] {
        let e = db.set_path("s", "k", bad, "1").unwrap_err();
        assert!(matches!(e, mnemo::Error::InvalidArgument(_)), "{bad}: {e}");
        let e = db.get_path("s", "k", bad).unwrap_err();
        assert!(matches!(e, mnemo::Error::InvalidArgument(_)), "{bad}: {e}");
    }
    let deep = format!("{}1{}", "[".repeat(99), "]".repeat(99));
    db.set_path("s", "k", "/a", &deep).unwrap();
    assert!(db.set_path("s", "k", "/a/b", &deep).is_err());
    // "" is the whole value.
    db.set_path("s", "k", "", "7").unwrap();
    assert_eq!(db.get("s", "k").unwrap(), "7");
    // A path into a scalar makes an object of it.
    db.set_path("s", "k", "/z", "true").unwrap();
    assert_eq!(db.get("s", "k").unwrap(), r#"{"z":true}"#);
    db.verify().unwrap();
}

#[test]
fn a_transaction_builds_paths_on_its_own_operations() {
    let (_inst, user) = logged_in("t");
    let db = user.create_db("t").unwrap();
    let mut txn = db.begin();
    txn.set_path("s", "k", "/a/x", "1").unwrap();
    txn.set_path("s", "k", "/a", r#"{"y":2}"#).unwrap();
    txn.set_path("s", "k", "/a/z", "3").unwrap();
    txn.set("s", "w", r#"{"keep":true}"#).unwrap();
    txn.set_path("s", "w", "/more", "1").unwrap();
    txn.commit().unwrap();
    assert_eq!(db.get("s", "k").unwrap(), r#"{"a":{"y":2,"z":3}}"#);
    assert_eq!(db.get("s", "w").unwrap(), r#"{"keep":true,"more":1}"#);
}

#[test]
fn history_lists_every_change_newest_first() {
    let (people, a, b) = pair();
    let e1 = a.set("s", "k", "1").unwrap();
    let e2 = a.set_path("s", "k", "/x", "2").unwrap();
    let e3 = a.delete("s", "k").unwrap();
    let e4 = a.set("s", "k", r#""back""#).unwrap();
    a.set("s", "other", "0").unwrap();
    let history = a.history("s", "k", 0).unwrap();
    let ids: Vec<_> = history.iter().map(|c| c.entry).collect();
    assert_eq!(ids, vec![e4, e3, e2, e1]);
    assert_eq!(history[0].kind, ChangeKind::Set(r#""back""#.into()));
    assert_eq!(history[1].kind, ChangeKind::Delete);
    assert!(matches!(&history[2].kind, ChangeKind::Patch(p) if p["/x"] == "2"));
    assert_eq!(history[3].height + 3, history[0].height);
    assert_eq!(a.history("s", "k", 2).unwrap().len(), 2);
    assert!(a.history("s", "never", 0).unwrap().is_empty());

    // A change that lost a merge is still listed.
    sync_both(&people, &a, &b);
    let la = a.set("s", "k", r#""a""#).unwrap();
    let lb = b.set("s", "k", r#""b""#).unwrap();
    sync_both(&people, &a, &b);
    let listed: Vec<_> = b
        .history("s", "k", 0)
        .unwrap()
        .iter()
        .map(|c| c.entry)
        .collect();
    assert!(listed.contains(&la) && listed.contains(&lb));
    assert_eq!(listed.len(), 6);
    let author = b.history("s", "k", 1).unwrap()[0].author;
    let expected = if la > lb { a.author() } else { b.author() };
    assert_eq!(author, expected);
}

#[test]
fn documents_keep_merging_after_the_instance_reopens() {
    for storage in crate::support::storages() {
        let name = storage.name();
        let id = {
            let inst = mnemo::Instance::open(storage.open()).unwrap();
            inst.create_user("r", None).unwrap();
            let user = inst.login("r", None).unwrap();
            let db = user.create_db("r").unwrap();
            db.set_path("s", "k", "/a", "1").unwrap();
            db.id()
        };
        let inst = mnemo::Instance::open(storage.open()).unwrap();
        let user = inst.login("r", None).unwrap();
        let db = user.load_db(&id).unwrap();
        // The whole-value set must also become the document's base, or verify (which
        // derives every hidden row from the entries) finds the difference.
        db.set("s", "k", r#"{"b":2}"#).unwrap();
        db.set_path("s", "k", "/c", "3").unwrap();
        assert_eq!(db.get("s", "k").unwrap(), r#"{"b":2,"c":3}"#, "{name}");
        db.verify().unwrap();
        assert_eq!(db.history("s", "k", 0).unwrap().len(), 3, "{name}");
    }
}

/// A database with a writer's key and three readers' copies, for path writes made by hand
/// (as a writer that does not write whole arrays makes them: an older mnemo, another
/// implementation) and taken by each copy in its own order.
struct HandWritten {
    _owner: (mnemo::Instance, mnemo::User),
    db: Database,
    writer: mnemo::crypto::PrivateKey,
    readers: Vec<(mnemo::Instance, mnemo::User)>,
    /// The entries every copy takes first; the last sets `s/k` to the starting value.
    shared: Vec<mnemo::entry::EntryId>,
}

impl HandWritten {
    fn new(start: &str) -> HandWritten {
        let (inst, owner) = logged_in("owner");
        let db = owner.create_db("d").unwrap();
        let writer = mnemo::crypto::PrivateKey::generate().unwrap();
        let mut shared = vec![db.id()];
        shared.push(db.grant(&writer.public_key(), Permission::Write).unwrap());
        let readers: Vec<_> = (0..3).map(|i| logged_in(&format!("r{i}"))).collect();
        for (_, user) in &readers {
            let key = user.default_key().unwrap();
            shared.push(db.grant(&key, Permission::Read).unwrap());
        }
        shared.push(db.set("s", "k", start).unwrap());
        HandWritten {
            _owner: (inst, owner),
            db,
            writer,
            readers,
            shared,
        }
    }

    /// The last shared entry, which set the starting value, and its height.
    fn start(&self) -> (mnemo::entry::EntryId, u64) {
        let id = *self.shared.last().unwrap();
        let bytes = self.db.entry_bytes(&id).unwrap();
        (
            id,
            mnemo::entry::Entry::decode(&bytes)
                .unwrap()
                .content()
                .height,
        )
    }

    /// A write of `json` at `pointer` of `s/k` on `parent` (at height `below`).
    fn patch(
        &self,
        parent: mnemo::entry::EntryId,
        below: u64,
        pointer: &str,
        json: &str,
    ) -> mnemo::entry::Entry {
        use mnemo::entry::{EntryContent, Op, Ops};
        use std::collections::BTreeMap;

        let paths = BTreeMap::from([(pointer.to_string(), json.to_string())]);
        let mut ops = Ops::new();
        ops.insert(
            "s".to_string(),
            BTreeMap::from([("k".to_string(), Op::Patch(paths))]),
        );
        EntryContent {
            db: Some(self.db.id()),
            parents: vec![parent],
            height: below + 1,
            ops,
            author: self.writer.public_key(),
        }
        .sign(&self.writer)
        .unwrap()
    }

    /// The value of `s/k` each copy shows after taking the entries in its order.
    fn values(&self, orders: [Vec<&mnemo::entry::Entry>; 3]) -> Vec<String> {
        let mut values = Vec::new();
        for ((inst, user), order) in self.readers.iter().zip(orders) {
            for id in &self.shared {
                inst.receive_entry(&self.db.entry_bytes(id).unwrap())
                    .unwrap();
            }
            for entry in order {
                inst.receive_entry(entry.bytes()).unwrap();
            }
            let copy = user.load_db(&self.db.id()).unwrap();
            copy.verify().unwrap();
            values.push(copy.get("s", "k").unwrap());
        }
        values
    }
}

/// Two appends one on the other, and a write by index beside them, taken in three orders:
/// all copies show the same value. Before, a copy that applied an append on top of its value
/// kept what the older append of that path had added, where a copy that replayed the paths
/// (the rule) dropped it (which copy did depends on the entries' ids: eight rounds with new
/// keys).
#[test]
fn path_writes_into_arrays_from_elsewhere_converge_whatever_their_order() {
    for _ in 0..8 {
        let hand = HandWritten::new(r#"{"l":["a"]}"#);
        let (start, h) = hand.start();
        let first = hand.patch(start, h, "/l/-", "1");
        let second = hand.patch(first.id(), h + 1, "/l/-", "2");
        let beside = hand.patch(start, h, "/l/1", "3");
        let values = hand.values([
            vec![&first, &second, &beside],
            vec![&beside, &first, &second],
            vec![&first, &beside, &second],
        ]);
        assert_eq!(values[0], values[1], "{values:?}");
        assert_eq!(values[0], values[2], "{values:?}");
    }
}

/// A write that replaces an older write of its path applied before other writes is
/// replayed, not applied on top, when an array was on that path: the older one may have
/// shaped what came after. Here it made the array an object (an index past the end), into
/// which the next write went, where the replay without it appends to the array (a
/// reviewer's case: the copies differed). The array is in the value set whole, then in a
/// path write above.
#[test]
fn a_path_write_replacing_one_that_shaped_later_ones_converges() {
    let hand = HandWritten::new(r#"{"l":[]}"#);
    let (start, h) = hand.start();
    replacing_one_that_shaped_later_ones(&hand, start, h, Vec::new());
    let hand = HandWritten::new(r#"{"x":1}"#);
    let (start, h) = hand.start();
    let array = hand.patch(start, h, "/l", "[]");
    replacing_one_that_shaped_later_ones(&hand, array.id(), h + 1, vec![&array]);
}

/// [`a_path_write_replacing_one_that_shaped_later_ones_converges`] on `start` (at height
/// `h`), after `before`.
fn replacing_one_that_shaped_later_ones(
    hand: &HandWritten,
    start: mnemo::entry::EntryId,
    h: u64,
    before: Vec<&mnemo::entry::Entry>,
) {
    let turned = hand.patch(start, h, "/l/3", r#""a""#);
    let into = hand.patch(turned.id(), h + 1, "/l/0", r#""q""#);
    let again = hand.patch(into.id(), h + 2, "/l/3", r#""w""#);
    // Beside the last, and ordered after it.
    let beside = (0..)
        .map(|i| hand.patch(into.id(), h + 2, "/z", &i.to_string()))
        .find(|e| e.id() > again.id())
        .unwrap();
    let mut orders = [before.clone(), before.clone(), before];
    for (order, last) in
        orders
            .iter_mut()
            .zip([[&again, &beside], [&beside, &again], [&again, &beside]])
    {
        order.extend([&turned, &into]);
        order.extend(last);
    }
    let values = hand.values(orders);
    assert_eq!(values[0], values[1], "{values:?}");
}
