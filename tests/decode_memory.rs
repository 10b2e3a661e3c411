//! Decoding a received entry takes memory in proportion to its size, whatever its values
//! hold: a value of many small elements is not built into a tree to be checked; and entries
//! waiting for their parents hold no more than they are counted for. Their own binary,
//! since it counts every allocation of the process (one test at a time: [`ALONE`]).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use mnemo::backend::MemoryBackend;
use mnemo::crypto::PrivateKey;
use mnemo::entry::{Entry, EntryContent, EntryId, Op, Ops};
use mnemo::Instance;

/// Taken by each test: the counts are the whole process's.
static ALONE: Mutex<()> = Mutex::new(());

/// The system allocator, counting the bytes held now and the most held since a reset.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: passes the caller's layout to the system allocator unchanged.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let held = HELD.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(held, Ordering::SeqCst);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: `ptr` was allocated above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// An entry whose one value and one patch path are arrays of `n` zeros each.
fn entry_of_zeros(n: usize) -> Entry {
    let zeros = format!("[{}0]", "0,".repeat(n - 1));
    let mut ops = Ops::new();
    let store = ops.entry("s".into()).or_default();
    store.insert("set".into(), Op::Set(zeros.clone()));
    store.insert(
        "patch".into(),
        Op::Patch(BTreeMap::from([("/a".to_string(), zeros)])),
    );
    let key = PrivateKey::generate().unwrap();
    EntryContent {
        db: Some(EntryId::of_bytes(b"db")),
        parents: vec![EntryId::of_bytes(b"parent")],
        height: 1,
        ops,
        author: key.public_key(),
    }
    .sign(&key)
    .unwrap()
}

#[test]
fn decoding_takes_memory_in_proportion_to_the_entry_not_its_elements() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let bytes = entry_of_zeros(3 << 20).bytes().to_vec();
    assert!(bytes.len() > 12 << 20, "{}", bytes.len());
    let before = HELD.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let decoded = Entry::decode(&bytes).unwrap();
    let used = PEAK.load(Ordering::SeqCst) - before;
    // The entry keeps a copy of its bytes and its values: about twice its size.
    assert!(
        used < 3 * bytes.len(),
        "{used} bytes to decode {}",
        bytes.len()
    );
    drop(decoded);
}

/// Entries waiting for their parents (sent by a peer that never sends the parents) take no
/// more memory than the waiting area counts them for, so its limits bound what a peer can
/// make an instance hold. Before, each kept its decoded maps: about 5 times what it was
/// counted for.
#[test]
fn entries_waiting_for_parents_take_no_more_memory_than_they_are_counted_for() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let owner = Instance::open(Arc::new(MemoryBackend::new())).unwrap();
    owner.create_user("owner", None).unwrap();
    let db = owner.login("owner", None).unwrap().create_db("d").unwrap();
    let replica = Instance::open(Arc::new(MemoryBackend::new())).unwrap();
    replica
        .receive_entry(&db.entry_bytes(&db.id()).unwrap())
        .unwrap();
    let stranger = PrivateKey::generate().unwrap();
    let orphans: Vec<Vec<u8>> = (0..2001u32)
        .map(|i| {
            let mut ops = Ops::new();
            let store = ops.entry("s".into()).or_default();
            store.insert(format!("k{i}"), Op::Set(format!("{{\"n\":{i}}}")));
            EntryContent {
                db: Some(db.id()),
                parents: vec![EntryId::of_bytes(&i.to_be_bytes())],
                height: 7,
                ops,
                author: stranger.public_key(),
            }
            .sign(&stranger)
            .unwrap()
            .bytes()
            .to_vec()
        })
        .collect();
    // The first one loads what the database's checks keep (not counted as waiting).
    assert!(replica.receive_entry(&orphans[0]).unwrap().pending);
    let (held_before, counted_before) = (HELD.load(Ordering::SeqCst), replica.waiting_bytes());
    for orphan in &orphans[1..] {
        assert!(replica.receive_entry(orphan).unwrap().pending);
    }
    let held = HELD.load(Ordering::SeqCst).saturating_sub(held_before);
    let counted = replica.waiting_bytes() - counted_before;
    assert!(
        held <= counted,
        "{held} bytes held for 2,000 entries waiting, {counted} counted"
    );
}
