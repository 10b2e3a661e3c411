//! Shared helpers: a seeded random generator and quick fixtures.

use mnemo::backend::MemoryBackend;
use mnemo::{Database, Instance, User};
use std::sync::Arc;

/// xorshift64*: small, seeded, reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// A fresh in-memory instance.
pub fn instance() -> Instance {
    Instance::open(Arc::new(MemoryBackend::new())).unwrap()
}

/// A fresh instance with a passwordless user logged in.
pub fn logged_in(name: &str) -> (Instance, User) {
    let inst = instance();
    inst.create_user(name, None).unwrap();
    let user = inst.login(name, None).unwrap();
    (inst, user)
}

/// Every live key of `store`, as (key, json) pairs.
pub fn state(db: &Database, store: &str) -> Vec<(String, String)> {
    db.get_all(store).unwrap()
}
