//! The baseline of the PostgreSQL benchmark (`benches/pg_bench.c`): plain one-row `INSERT`
//! transactions on the same server, through the driver mnemo's backend uses (the
//! `postgres` crate), so the ratio measures mnemo and not a difference between clients.
//!
//! Run: `pg_baseline URL` (a `postgres://` URL the driver reads, e.g. with
//! `?sslmode=disable`). It creates table `mnemo_bench_plain (k TEXT PRIMARY KEY, v TEXT)` if
//! missing, then answers commands read from stdin, one line each, so that the benchmark can
//! alternate its batches with mnemo's in the same run:
//!
//! - `insert N`: N one-row `INSERT`s, each its own transaction (autocommit: one round trip,
//!   durable when it returns, as the server's `fsync` and `synchronous_commit` say). Answers
//!   `ns T1 T2 … TN`, each insert's time in nanoseconds.
//! - `run MS`: inserts as above for MS milliseconds. Answers `count C ELAPSED_NS`.
//!
//! It prints `ready` once connected, and exits at the end of stdin. Keys are
//! `<pid>-<n>`, so several copies can insert into one table at once.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls, Statement};

/// One inserter: the connection, its prepared `INSERT` and the next key number.
struct Inserter {
    client: Client,
    insert: Statement,
    next: u64,
    prefix: String,
}

impl Inserter {
    fn connect(url: &str) -> Result<Inserter, postgres::Error> {
        let mut client = Client::connect(url, NoTls)?;
        client.batch_execute(
            "CREATE TABLE IF NOT EXISTS mnemo_bench_plain (k TEXT PRIMARY KEY, v TEXT NOT NULL)",
        )?;
        let insert = client.prepare("INSERT INTO mnemo_bench_plain (k, v) VALUES ($1, $2)")?;
        Ok(Inserter {
            client,
            insert,
            next: 0,
            prefix: std::process::id().to_string(),
        })
    }

    /// One durable one-row insert; returns its time.
    fn insert_one(&mut self) -> Result<Duration, postgres::Error> {
        let key = format!("{}-{}", self.prefix, self.next);
        // About the size of the benchmark's mnemo values.
        let value = format!("{{\"n\":{},\"text\":\"the quick brown fox\"}}", self.next);
        self.next += 1;
        let started = Instant::now();
        self.client.execute(&self.insert, &[&key, &value])?;
        Ok(started.elapsed())
    }
}

fn main() {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: pg_baseline URL");
        std::process::exit(2);
    };
    if let Err(e) = serve(&url) {
        eprintln!("pg_baseline: {e}");
        std::process::exit(1);
    }
}

fn serve(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut inserter = Inserter::connect(url)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let (command, n) = line
            .split_once(' ')
            .ok_or_else(|| format!("bad command '{line}'"))?;
        let n: u64 = n.trim().parse()?;
        match command {
            "insert" => {
                let mut reply = String::from("ns");
                for _ in 0..n {
                    let took = inserter.insert_one()?;
                    reply.push_str(&format!(" {}", took.as_nanos()));
                }
                writeln!(out, "{reply}")?;
            }
            "run" => {
                let window = Duration::from_millis(n);
                let started = Instant::now();
                let mut count = 0u64;
                while started.elapsed() < window {
                    inserter.insert_one()?;
                    count += 1;
                }
                writeln!(out, "count {count} {}", started.elapsed().as_nanos())?;
            }
            _ => return Err(format!("unknown command '{command}'").into()),
        }
        out.flush()?;
    }
    Ok(())
}
