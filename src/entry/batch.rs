//! Decoding many entries from elsewhere at once, their signatures checked on several cores.

use super::Entry;
use crate::error::{Error, Result};

/// Most threads one batch is decoded on, the calling thread included (fewer on a machine
/// with fewer cores).
pub const MAX_DECODE_THREADS: usize = 4;
/// Batches shorter than this are decoded on the calling thread: starting a thread costs
/// about what a few signature checks do.
const PARALLEL_FROM: usize = 16;

/// Decodes and verifies every entry of `batch` as [`Entry::decode`] does, results in the
/// batch's order. The work is split into contiguous parts over up to
/// [`MAX_DECODE_THREADS`] scoped threads, all joined before it returns; if a thread cannot
/// be started, its part is decoded on the calling thread.
pub fn decode_all(batch: &[Vec<u8>]) -> Vec<Result<Entry>> {
    let decode_part = |part: &[Vec<u8>]| part.iter().map(|b| Entry::decode(b)).collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_DECODE_THREADS);
    if threads < 2 || batch.len() < PARALLEL_FROM {
        return decode_part(batch);
    }
    let size = batch.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let mut parts = batch.chunks(size);
        let mine = parts.next().unwrap_or_default();
        let started: Vec<_> = parts
            .map(|part| {
                let thread = std::thread::Builder::new()
                    .name("mnemo-verify".into())
                    .spawn_scoped(scope, move || decode_part(part));
                (part, thread)
            })
            .collect();
        let mut out: Vec<Result<Entry>> = decode_part(mine);
        for (part, thread) in started {
            match thread {
                Ok(handle) => match handle.join() {
                    Ok(decoded) => out.extend(decoded),
                    Err(_) => out.extend(
                        part.iter()
                            .map(|_| Err(Error::Internal("a signature check panicked".into()))),
                    ),
                },
                Err(_) => out.extend(decode_part(part)),
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::PrivateKey;
    use crate::entry::{EntryContent, EntryId, Op, Ops};

    #[test]
    fn a_batch_decodes_in_order_and_each_bad_entry_fails_alone() {
        let key = PrivateKey::generate().unwrap();
        let mut batch: Vec<Vec<u8>> = (0..40u64)
            .map(|i| {
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
                content.sign(&key).unwrap().bytes().to_vec()
            })
            .collect();
        let last = batch.len() - 1;
        batch[7][20] ^= 1;
        batch[last].truncate(10);
        let decoded = decode_all(&batch);
        assert_eq!(decoded.len(), batch.len());
        for (i, (bytes, result)) in batch.iter().zip(&decoded).enumerate() {
            match result {
                Ok(entry) => assert_eq!(entry.bytes(), &bytes[..], "entry {i} out of order"),
                Err(_) => assert!(i == 7 || i == last, "entry {i} refused"),
            }
        }
        assert!(decoded[7].is_err() && decoded[last].is_err());
    }
}
