//! The longest pause of growing the signer's replay index: fills maps of the
//! index's shape (uid → [`Issued`], CSR hash → uid, serials) one issuance
//! at a time, as `Sign` does under the state lock, and reports the slowest
//! single issuance after 100,000 entries: once for one `std` `HashMap` per
//! map (what the index was), once for [`ShardedMap`] (what it is).
//!
//! ```sh
//! cargo run --release -p certsign-signer --example index_growth
//! ```
//!
//! A measurement, not a test: it asserts nothing and never runs in CI.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use certsign_signer::journal::{Issued, LineAt, ShardedMap};

/// Entries per run: past the doublings at 114,688 and 229,376.
const N: u64 = 300_000;

/// A map the index could be made of.
trait Map<K, V>: Default {
    fn put(&mut self, key: K, value: V);
}

impl<K: Hash + Eq, V> Map<K, V> for HashMap<K, V> {
    fn put(&mut self, key: K, value: V) {
        self.insert(key, value);
    }
}

impl<K: Hash + Eq, V> Map<K, V> for ShardedMap<K, V> {
    fn put(&mut self, key: K, value: V) {
        self.insert(key, value);
    }
}

/// The three maps of the index (uid → issuance, CSR hash → uid, serials),
/// of one kind.
#[derive(Default)]
struct Maps<A, B, C>(A, B, C);

/// Recording one issuance, as `Index::record` does.
trait Record: Default {
    fn record(&mut self, uid: String, issued: Issued, csr: String, serial: String);
}

impl<A, B, C> Record for Maps<A, B, C>
where
    A: Map<String, Issued>,
    B: Map<String, String>,
    C: Map<String, ()>,
{
    fn record(&mut self, uid: String, issued: Issued, csr: String, serial: String) {
        self.0.put(uid.clone(), issued);
        self.1.put(csr, uid);
        self.2.put(serial, ());
    }
}

/// What the index was: one `std` map each.
type Plain = Maps<HashMap<String, Issued>, HashMap<String, String>, HashMap<String, ()>>;
/// What it is: 64 shards each.
type Sharded = Maps<ShardedMap<String, Issued>, ShardedMap<String, String>, ShardedMap<String, ()>>;

/// The slowest single issuance after 100,000 entries, and where.
fn slowest<M: Record>() -> (Duration, u64) {
    let mut maps = M::default();
    let (mut worst, mut at) = (Duration::ZERO, 0);
    for i in 0..N {
        let uid = format!("0192f0a8-{:04x}-7000-8000-{i:012x}", i % 65_536);
        let csr = format!("{:064x}", i.wrapping_mul(7_919));
        let serial = format!("{:032x}", i.wrapping_mul(104_729));
        let issued = Issued {
            csr_sha256: csr.clone(),
            line: LineAt {
                seq: i + 1,
                offset: i * 1_800,
                len: 1_799,
                sha256: [0; 32],
            },
        };
        let t = Instant::now();
        maps.record(uid, issued, csr, serial);
        let took = t.elapsed();
        if i > 100_000 && took > worst {
            (worst, at) = (took, i + 1);
        }
    }
    (worst, at)
}

fn main() {
    for round in 1..=2 {
        let (plain, plain_at) = slowest::<Plain>();
        let (sharded, sharded_at) = slowest::<Sharded>();
        println!(
            "round {round}: one map each: {:.1} ms (at entry {plain_at}); 64 shards: {:.2} ms (at entry {sharded_at})",
            plain.as_secs_f64() * 1e3,
            sharded.as_secs_f64() * 1e3,
        );
    }
}
