//! Decoding a received entry takes memory in proportion to its size, whatever its values
//! hold: a value of many small elements is not built into a tree to be checked. Its own
//! binary, since it counts every allocation of the process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use mnemo::crypto::PrivateKey;
use mnemo::entry::{Entry, EntryContent, EntryId, Op, Ops};

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
