//! Engine stage, runtime: queries execute on their own tokio runtime, apart from the one
//! that serves HTTP, logins and the audit log.
//!
//! Guarantees: a query's planning and execution (CPU-heavy DataFusion work) run on the
//! query runtime's threads, so however many heavy queries run, the HTTP runtime's
//! workers stay free to answer other requests; dropping the returned future (a request
//! timeout, a client gone) aborts the query task, so no query runs on unobserved; a query
//! that panics becomes an internal error of that query only.

use std::future::Future;
use std::sync::OnceLock;

use crate::query::QueryError;

/// Stack of each query thread: planning recurses over expression trees (measured against
/// the bounds of `sql::depth` and `sql::size`, as for the main runtime).
const STACK_BYTES: usize = 8 << 20;

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
static THREADS: OnceLock<usize> = OnceLock::new();

/// Set the number of query threads (once, before the first query; 0 = one per core).
pub fn configure(threads: usize) {
    let _ = THREADS.set(threads);
}

fn runtime() -> &'static tokio::runtime::Runtime {
    RUNTIME.get_or_init(|| {
        let threads = THREADS
            .get()
            .copied()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("kura-query")
            .thread_stack_size(STACK_BYTES)
            .enable_all()
            .build()
            .expect("the query runtime must start")
    })
}

/// Aborts the task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Run `work` on the query runtime and wait for it here.
pub async fn run<T: Send + 'static>(
    work: impl Future<Output = Result<T, QueryError>> + Send + 'static,
) -> Result<T, QueryError> {
    // The caller's span (the query's) stays the parent of the work's stage spans.
    let work = tracing::Instrument::in_current_span(work);
    let mut task = AbortOnDrop(runtime().spawn(work));
    match (&mut task.0).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => Err(QueryError::internal(
            "query runtime",
            "the query panicked; please report the reference id",
        )),
        Err(e) => Err(QueryError::internal("query runtime", e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_query_threads_and_panics_stay_there() {
        let name = run(async { Ok(std::thread::current().name().map(str::to_string)) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("kura-query"));
        let e = run::<()>(async { panic!("boom") }).await.unwrap_err();
        assert_eq!(e.code(), "internal");
    }

    #[tokio::test]
    async fn dropping_the_caller_aborts_the_query() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let waiting = run(async move {
            // Holds `tx` until aborted: the receiver sees the drop.
            let _keep = tx;
            std::future::pending::<()>().await;
            Ok(())
        });
        let _ = tokio::time::timeout(std::time::Duration::from_millis(50), waiting).await;
        assert!(rx.await.is_err(), "the aborted task dropped its sender");
    }
}
