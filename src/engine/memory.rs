//! Engine stage, memory: every query's memory pool is a share of one pool for the whole
//! process, so many queries at once cannot together take more than the configured total.
//!
//! Guarantees: a query's memory-hungry operators reserve from its own pool (at most
//! `Limits::memory_bytes`) *and* from the global pool ([`set_global_limit`]); a
//! reservation that either refuses fails with DataFusion's `ResourcesExhausted`, which
//! the gateway reports as `resource_limit`, and nothing is reserved from the other (no
//! leak across a refusal). Without a global limit (command-line tools), only the
//! per-query pool applies.

use std::fmt;
use std::sync::{Arc, OnceLock};

use datafusion::common::Result;
use datafusion::execution::memory_pool::{
    FairSpillPool, GreedyMemoryPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

static GLOBAL: OnceLock<Arc<GreedyMemoryPool>> = OnceLock::new();

/// Set the memory of all queries of this process together (once, at server start; a
/// second call keeps the first limit). Returns the limit in force.
pub fn set_global_limit(bytes: usize) -> usize {
    let pool = GLOBAL.get_or_init(|| Arc::new(GreedyMemoryPool::new(bytes)));
    match pool.memory_limit() {
        MemoryLimit::Finite(n) => n,
        _ => bytes,
    }
}

/// Bytes reserved by all running queries together (0 without a global limit).
pub fn global_reserved() -> usize {
    GLOBAL.get().map(|p| p.reserved()).unwrap_or(0)
}

/// The pool of one query of at most `bytes`, drawing from the global pool if set.
pub fn query_pool(bytes: usize) -> Arc<dyn MemoryPool> {
    let own = FairSpillPool::new(bytes);
    match GLOBAL.get() {
        Some(global) => Arc::new(SharedPool {
            own,
            global: global.clone(),
        }),
        None => Arc::new(own),
    }
}

/// One query's pool inside the global one.
#[derive(Debug)]
struct SharedPool {
    own: FairSpillPool,
    global: Arc<GreedyMemoryPool>,
}

impl fmt::Display for SharedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "query pool within the global pool")
    }
}

impl MemoryPool for SharedPool {
    fn name(&self) -> &str {
        "kura_query_pool"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.own.register(consumer);
        self.global.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.own.unregister(consumer);
        self.global.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.own.grow(reservation, additional);
        self.global.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.own.shrink(reservation, shrink);
        self.global.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        self.own.try_grow(reservation, additional)?;
        if let Err(e) = self.global.try_grow(reservation, additional) {
            self.own.shrink(reservation, additional);
            return Err(e);
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.own.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.own.memory_limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_gets_neither_more_than_its_share_nor_more_than_is_left() {
        let global = Arc::new(GreedyMemoryPool::new(1000));
        let pool = |bytes| -> Arc<dyn MemoryPool> {
            Arc::new(SharedPool {
                own: FairSpillPool::new(bytes),
                global: global.clone(),
            })
        };
        let (a, b) = (pool(800), pool(800));
        let ra = MemoryConsumer::new("a").register(&a);
        let rb = MemoryConsumer::new("b").register(&b);
        assert!(ra.try_grow(900).is_err(), "over its own share");
        ra.try_grow(700).unwrap();
        // b's share has room, the global pool has 300 left: refused, nothing kept.
        let e = rb.try_grow(400).unwrap_err().to_string();
        assert!(e.contains("Resources exhausted"), "{e}");
        assert_eq!((b.reserved(), global.reserved()), (0, 700));
        rb.try_grow(300).unwrap();
        drop(ra);
        assert_eq!(
            global.reserved(),
            300,
            "a finished query gives its memory back"
        );
        // Control: without the global pool, b alone could take its whole share.
        let alone: Arc<dyn MemoryPool> = Arc::new(FairSpillPool::new(800));
        let r = MemoryConsumer::new("c").register(&alone);
        assert!(r.try_grow(800).is_ok());
    }
}
