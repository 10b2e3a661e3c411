//! Decoding many entries from elsewhere at once, their signatures checked on several cores.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::{Builder, Scope, ScopedJoinHandle};

use super::{Entry, EntryId};
use crate::crypto::KeyCache;
use crate::error::Error;

/// Most threads one batch is decoded on, the calling thread included (fewer on a machine
/// with fewer cores).
pub const MAX_DECODE_THREADS: usize = 4;
/// Batches shorter than this are decoded on the calling thread: starting a thread costs
/// about what a few signature checks do.
const PARALLEL_FROM: usize = 16;
/// Entries a thread takes at a time: threads that get less of a core (a busy machine)
/// simply take fewer chunks.
const CHUNK: usize = 8;

/// Most signature-check threads running at once in the whole process, over all batches
/// (a batch's calling thread not counted): past it, batches are checked on fewer threads,
/// on their calling threads at the least. Eight is two pushes' worth at full speed.
pub const MAX_VERIFY_THREADS: usize = 2 * MAX_DECODE_THREADS;

/// Signature-check threads running now (see [`MAX_VERIFY_THREADS`]).
static VERIFY_THREADS: AtomicUsize = AtomicUsize::new(0);

/// One of the [`MAX_VERIFY_THREADS`] places for a signature-check thread counted in
/// `threads` ([`VERIFY_THREADS`] but in tests), given back when dropped (once the thread is
/// joined, or with a thread that could not be started).
struct VerifySlot {
    threads: &'static AtomicUsize,
}

impl VerifySlot {
    /// A free place in `threads`, if there is one.
    fn take(threads: &'static AtomicUsize) -> Option<VerifySlot> {
        threads
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_VERIFY_THREADS).then_some(n + 1)
            })
            .ok()
            .map(|_| VerifySlot { threads })
    }
}

impl Drop for VerifySlot {
    fn drop(&mut self) {
        self.threads.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A signature-check thread and its [`VerifySlot`], which is given back only once the
/// thread is joined: a thread that has done its work but not yet ended still counts, so
/// threads ending and threads starting never add up past [`MAX_VERIFY_THREADS`]. Joined
/// when dropped, if not before.
struct Verifier<'scope, T> {
    thread: Option<ScopedJoinHandle<'scope, T>>,
    _slot: VerifySlot,
}

impl<T> Verifier<'_, T> {
    /// Waits for the thread to end: its result, or the panic that ended it.
    fn join(mut self) -> std::thread::Result<T> {
        let thread = self.thread.take().expect("a verifier is joined once");
        thread.join()
    }
}

impl<T> Drop for Verifier<'_, T> {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts `work` on a thread named `mnemo-verify` in `scope` if a [`VerifySlot`] is free and
/// the thread can be started; `None` otherwise.
fn spawn_verifier<'scope, T: Send + 'scope>(
    scope: &'scope Scope<'scope, '_>,
    work: impl FnOnce() -> T + Send + 'scope,
) -> Option<Verifier<'scope, T>> {
    spawn_counted(&VERIFY_THREADS, scope, work)
}

/// [`spawn_verifier`], counting the thread in `threads`.
fn spawn_counted<'scope, T: Send + 'scope>(
    threads: &'static AtomicUsize,
    scope: &'scope Scope<'scope, '_>,
    work: impl FnOnce() -> T + Send + 'scope,
) -> Option<Verifier<'scope, T>> {
    let slot = VerifySlot::take(threads)?;
    let thread = Builder::new()
        .name("mnemo-verify".into())
        .spawn_scoped(scope, work)
        .ok()?;
    Some(Verifier {
        thread: Some(thread),
        _slot: slot,
    })
}

/// How many threads a batch is decoded on: the cores (asked once), at most
/// [`MAX_DECODE_THREADS`].
fn decode_threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_DECODE_THREADS)
    })
}

/// An entry of a batch that failed its check: why, and the id of its bytes (`None` when the
/// thread checking it panicked, its bytes gone with it).
#[derive(Debug)]
pub struct Refused {
    pub id: Option<EntryId>,
    pub error: Error,
}

/// An entry of a batch, checked: the entry, or why it was refused.
pub type Checked = std::result::Result<Entry, Refused>;

/// The outcome of an entry whose check was lost with the thread that panicked doing it.
fn lost() -> Checked {
    Err(Refused {
        id: None,
        error: Error::Internal("a signature check panicked".into()),
    })
}

/// Decodes and verifies every entry of `batch` as [`Entry::decode`] does, results in the
/// batch's order; each entry keeps its bytes (moved, not copied). Up to
/// [`MAX_DECODE_THREADS`] scoped threads, the calling thread included, take chunks of the
/// batch in turn until none is left; all are joined before it returns. A thread that
/// cannot be started (or finds the process's [`MAX_VERIFY_THREADS`] running) leaves its
/// share to the others. Each thread keeps the keys it decompressed (a [`KeyCache`]) while
/// it runs.
pub fn decode_all(batch: Vec<Vec<u8>>) -> Vec<Checked> {
    let len = batch.len();
    let threads = decode_threads();
    if threads < 2 || len < PARALLEL_FROM {
        let mut keys = KeyCache::new();
        return batch
            .into_iter()
            .map(|b| Entry::decode_owned(b, &mut keys))
            .collect();
    }
    // The chunks, each with the place of its first entry, taken in turn by the threads.
    let mut entries = batch.into_iter();
    let chunks: VecDeque<(usize, Vec<Vec<u8>>)> = (0..len)
        .step_by(CHUNK)
        .map(|at| (at, entries.by_ref().take(CHUNK).collect()))
        .collect();
    let chunks = Mutex::new(chunks);
    let work = || {
        let mut keys = KeyCache::new();
        let mut done = Vec::new();
        loop {
            let next = chunks.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
            let Some((at, chunk)) = next else {
                return done;
            };
            let decoded: Vec<Checked> = chunk
                .into_iter()
                .map(|b| Entry::decode_owned(b, &mut keys))
                .collect();
            done.push((at, decoded));
        }
    };
    let work = &work;
    let mut decoded = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| spawn_verifier(scope, work))
            .collect();
        let mut decoded = work();
        for helper in helpers {
            // A helper that panicked loses its chunks: they are refused below.
            decoded.extend(helper.join().unwrap_or_default());
        }
        decoded
    });
    decoded.sort_unstable_by_key(|(at, _)| *at);
    let mut out: Vec<Checked> = Vec::with_capacity(len);
    for (at, checked) in decoded {
        while out.len() < at {
            out.push(lost());
        }
        out.extend(checked);
    }
    while out.len() < len {
        out.push(lost());
    }
    out
}

/// A batch being decoded and verified ([`decode_all`]) on a thread of a scope while the
/// caller does something else, typically taking the previous batch's entries: checking
/// overlaps with storing instead of alternating with it. The entries keep their bytes: the
/// batch is not held beside them.
pub struct Checking<'scope> {
    work: Work<'scope>,
}

enum Work<'scope> {
    /// On a thread: the batch's length, for the outcomes a panic would lose.
    Started(Verifier<'scope, Vec<Checked>>, usize),
    /// Decoded on the calling thread (a short batch, or no thread could be started).
    Done(Vec<Checked>),
}

impl<'scope> Checking<'scope> {
    /// Starts decoding `batch` on a thread named `mnemo-verify` in `scope` (which joins it
    /// at the latest when it ends), or decodes it now if it is short or no thread can be
    /// started (none free of [`MAX_VERIFY_THREADS`], or the system refuses one).
    pub fn start<'env>(scope: &'scope Scope<'scope, 'env>, batch: Vec<Vec<u8>>) -> Self {
        let len = batch.len();
        if len < PARALLEL_FROM {
            return Checking {
                work: Work::Done(decode_all(batch)),
            };
        }
        // The batch is sent to the thread once it runs: one that cannot start would drop it.
        let (tx, rx) = std::sync::mpsc::channel::<Vec<Vec<u8>>>();
        let thread = spawn_verifier(scope, move || {
            rx.recv().map_or_else(|_| Vec::new(), decode_all)
        });
        let work = match thread {
            Some(handle) => {
                let _ = tx.send(batch);
                Work::Started(handle, len)
            }
            None => Work::Done(decode_all(batch)),
        };
        Checking { work }
    }

    /// Waits for the batch: each entry's outcome, in the batch's order.
    pub fn finish(self) -> Vec<Checked> {
        match self.work {
            Work::Done(decoded) => decoded,
            Work::Started(handle, len) => {
                let mut checked = handle.join().unwrap_or_default();
                // Lost with a panicking thread (or never handed over): refused.
                checked.resize_with(len, lost);
                checked
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::PrivateKey;
    use crate::entry::{EntryContent, EntryId, Op, Ops};

    fn signed_batch(len: u64) -> Vec<Vec<u8>> {
        let keys = [
            PrivateKey::generate().unwrap(),
            PrivateKey::generate().unwrap(),
        ];
        (0..len)
            .map(|i| {
                let key = &keys[(i % 3 == 0) as usize];
                let mut ops = Ops::new();
                ops.entry("s".into())
                    .or_default()
                    .insert(format!("k{i}"), Op::Set(i.to_string()));
                let content = EntryContent {
                    db: Some(EntryId::of_bytes(b"db")),
                    parents: vec![EntryId::of_bytes(b"p")],
                    height: 1,
                    ops,
                    author: key.public_key(),
                };
                content.sign(key).unwrap().bytes().to_vec()
            })
            .collect()
    }

    #[test]
    fn a_batch_decodes_in_order_and_each_bad_entry_fails_alone() {
        for len in [5, 40, 203] {
            let mut batch = signed_batch(len);
            let last = batch.len() - 1;
            batch[3][20] ^= 1;
            batch[last].truncate(10);
            let decoded = decode_all(batch.clone());
            assert_eq!(decoded.len(), batch.len());
            for (i, (bytes, result)) in batch.iter().zip(&decoded).enumerate() {
                match result {
                    Ok(entry) => assert_eq!(entry.bytes(), &bytes[..], "entry {i} out of order"),
                    Err(refused) => {
                        assert!(i == 3 || i == last, "entry {i} refused");
                        assert_eq!(refused.id, Some(EntryId::of_bytes(bytes)), "entry {i}");
                    }
                }
            }
            assert!(decoded[3].is_err() && decoded[last].is_err());
        }
    }

    /// However many batches are checked at once, at most [`MAX_VERIFY_THREADS`] threads
    /// check signatures, and every batch still comes back whole.
    #[test]
    fn signature_check_threads_are_bounded_across_batches() {
        let batch = signed_batch(96);
        let done = std::sync::atomic::AtomicBool::new(false);
        let most = std::thread::scope(|scope| {
            let watcher = scope.spawn(|| {
                let mut most = 0;
                while !done.load(Ordering::Acquire) {
                    most = most.max(VERIFY_THREADS.load(Ordering::Acquire));
                    std::thread::yield_now();
                }
                most
            });
            let checkers: Vec<_> = (0..16)
                .map(|_| {
                    scope.spawn(|| {
                        std::thread::scope(|inner| {
                            let parts = [Checking::start(inner, batch.clone())];
                            parts.map(|p| p.finish().iter().all(Result::is_ok))
                        })
                    })
                })
                .collect();
            for checker in checkers {
                assert_eq!(checker.join().unwrap(), [true]);
            }
            done.store(true, Ordering::Release);
            watcher.join().unwrap()
        });
        assert!(most <= MAX_VERIFY_THREADS, "{most} threads");
        assert!(most > 0);
    }

    /// A verify thread keeps its place until it is joined, not only until its work returns:
    /// a thread that has done its work but not yet ended still counts, so threads ending and
    /// starting never add up past the bound. (Before, the place was given back as the work
    /// returned: 12 to 17 `mnemo-verify` threads were seen under a stream of pushes.)
    #[test]
    fn a_verify_threads_place_is_given_back_once_it_is_joined() {
        static THREADS: AtomicUsize = AtomicUsize::new(0);
        let worked = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let verifier = spawn_counted(&THREADS, scope, || worked.store(true, Ordering::Release))
                .expect("a thread");
            while !worked.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            std::thread::sleep(std::time::Duration::from_millis(20)); // the work has returned
            assert_eq!(
                THREADS.load(Ordering::Acquire),
                1,
                "given back before the join"
            );
            verifier.join().unwrap();
            assert_eq!(THREADS.load(Ordering::Acquire), 0);
            // Dropped without a join: joined then, and given back.
            drop(spawn_counted(&THREADS, scope, || ()).expect("a thread"));
            assert_eq!(THREADS.load(Ordering::Acquire), 0);
        });
    }

    #[test]
    fn batches_checked_meanwhile_come_back_whole_and_in_order() {
        let mut batches = [signed_batch(3), signed_batch(70), signed_batch(33)];
        batches[1][69][5] ^= 1; // a bad signature or form in the middle of a good batch
        std::thread::scope(|scope| {
            let checking: Vec<_> = batches
                .iter()
                .map(|b| Checking::start(scope, b.clone()))
                .collect();
            for (batch, checking) in batches.iter().zip(checking) {
                let done = checking.finish();
                assert_eq!(done.len(), batch.len());
                for (i, (result, sent)) in done.iter().zip(batch).enumerate() {
                    match result {
                        Ok(entry) => assert_eq!(entry.bytes(), &sent[..]),
                        Err(refused) => {
                            assert_eq!((batch.len(), i), (70, 69));
                            assert_eq!(refused.id, Some(EntryId::of_bytes(sent)));
                        }
                    }
                }
            }
        });
    }
}
