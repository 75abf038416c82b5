//! The thread count is the caller's: each call runs on a rayon pool of the
//! size it asks for, kept for later calls of the same size so that a
//! single query does not pay for starting threads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use pyo3::PyResult;
use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::errors::value_error;

/// Pools by thread count, created on first use.
static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();

/// Most threads a call may ask for; more is surely a mistake.
const MAX_THREADS: usize = 1024;

/// The pool for `num_threads`, as the original LEMUR reads it: `-1` means
/// every core (rayon's global pool, `None`), anything else at least one.
fn pool(num_threads: i64) -> PyResult<Option<Arc<ThreadPool>>> {
    if num_threads == -1 {
        return Ok(None);
    }
    let threads = num_threads.max(1) as usize;
    if threads > MAX_THREADS {
        return Err(value_error(format!(
            "num_threads must be at most {MAX_THREADS} (got {num_threads})"
        )));
    }
    let pools = POOLS.get_or_init(Default::default);
    let mut pools = pools.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(pool) = pools.get(&threads) {
        return Ok(Some(pool.clone()));
    }
    let pool = ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("lemur-rs-{i}"))
        .build()
        .map_err(|error| value_error(format!("cannot start {threads} threads: {error}")))?;
    let pool = Arc::new(pool);
    pools.insert(threads, pool.clone());
    Ok(Some(pool))
}

/// Runs `work` with `num_threads` threads for its parallel parts.
pub(crate) fn run<R: Send>(num_threads: i64, work: impl FnOnce() -> R + Send) -> PyResult<R> {
    Ok(match pool(num_threads)? {
        Some(pool) => pool.install(work),
        None => work(),
    })
}
