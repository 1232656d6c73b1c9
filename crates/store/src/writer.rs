//! Group commit: one writer task per store, fed by a bounded queue.
//!
//! Every write (`append`, `save_room`, `delete_room`) becomes a `Write` sent with a
//! oneshot for its answer. The writer task takes the first waiting write, drains whatever
//! else is already queued (at most `max_batch`), applies them all in **one transaction**
//! and commits once, then answers every caller. Under load the cost of a commit — an
//! fsync for SQLite, a WAL flush and a round trip for PostgreSQL — is shared by the whole
//! batch; with a single caller it degenerates to one transaction per write, with no added
//! delay (the writer never waits for a batch to fill).
//!
//! Why one writer: SQLite allows one writer at a time anyway, and a single ordered stream
//! of writes means a `delete_room` can never be overtaken by an `append` queued before it.
//!
//! Failure rules:
//! - a batch that fails on a database error (a constraint, a bad value) is retried one
//!   write at a time, so one bad write fails only its own caller. Every write is an upsert
//!   or a delete, so replaying one is harmless even if the failed commit half-happened;
//! - a batch that fails on a connection error fails all its callers at once (retrying each
//!   would only wait for the same dead connection many times over);
//! - if the writer task is gone (it panicked, or its runtime shut down), callers get
//!   [`StoreError::Backend`] at once instead of waiting forever.
//!
//! A caller that stops waiting (its future is dropped) does not cancel its write: once
//! queued, it is applied.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use switchboard_hub::StoreError;
use tokio::sync::{mpsc, oneshot};

use crate::rows::{MessageRow, RoomRow};

/// One write, already encoded into rows.
#[derive(Debug)]
pub(crate) enum Write {
    SaveRoom(RoomRow),
    DeleteRoom(String),
    Append(Vec<MessageRow>),
}

/// What a backend executes inside the batch's transaction, in order.
///
/// Consecutive appends are merged into one [`Step::Append`]: their rows deduplicated by
/// `(room, offset)` (the later write wins, as an upsert would) and sorted, plus each
/// touched room's highest offset, so a backend inserts in bulk and trims each room once.
#[derive(Debug)]
pub(crate) enum Step<'a> {
    Save(&'a RoomRow),
    Delete(&'a str),
    Append {
        rows: Vec<&'a MessageRow>,
        /// Each touched room with the highest offset appended to it.
        rooms: Vec<(&'a str, i64)>,
    },
}

/// Turns a batch of writes into steps, keeping their order except that runs of appends
/// are merged.
pub(crate) fn plan<'a>(writes: impl IntoIterator<Item = &'a Write>) -> Vec<Step<'a>> {
    let mut steps = Vec::new();
    let mut rows: BTreeMap<(&'a str, i64), &'a MessageRow> = BTreeMap::new();

    fn flush<'a>(steps: &mut Vec<Step<'a>>, rows: &mut BTreeMap<(&'a str, i64), &'a MessageRow>) {
        if rows.is_empty() {
            return;
        }
        let mut rooms: Vec<(&'a str, i64)> = Vec::new();
        // Keys are sorted by (room, offset): the last key of each room is its highest.
        for &(room, offset) in rows.keys() {
            match rooms.last_mut() {
                Some((r, max)) if *r == room => *max = offset,
                _ => rooms.push((room, offset)),
            }
        }
        steps.push(Step::Append {
            rows: std::mem::take(rows).into_values().collect(),
            rooms,
        });
    }

    for write in writes {
        match write {
            Write::Append(messages) => {
                for m in messages {
                    rows.insert((m.room.as_str(), m.offset), m);
                }
            }
            Write::SaveRoom(room) => {
                flush(&mut steps, &mut rows);
                steps.push(Step::Save(room));
            }
            Write::DeleteRoom(id) => {
                flush(&mut steps, &mut rows);
                steps.push(Step::Delete(id));
            }
        }
    }
    flush(&mut steps, &mut rows);
    steps
}

/// A backend's write side: applies steps in one transaction and commits once.
#[async_trait]
pub(crate) trait Apply: Send + Sync + 'static {
    async fn apply(&self, steps: &[Step<'_>]) -> Result<(), sqlx::Error>;
}

/// How much batching the writer has done since the store opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed (or attempted).
    pub batches: u64,
    /// Writes received (`append`, `save_room`, `delete_room` calls).
    pub writes: u64,
    /// The most writes one transaction carried.
    pub largest_batch: u64,
}

#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    writes: AtomicU64,
    largest_batch: AtomicU64,
}

struct Request {
    write: Write,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The handle callers submit writes through; the task behind it owns the write connection.
#[derive(Debug)]
pub(crate) struct Writer {
    backend: &'static str,
    queue: mpsc::Sender<Request>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("write", &self.write)
            .finish()
    }
}

impl Writer {
    /// Spawns the writer task on the current tokio runtime. It ends when every handle is
    /// dropped, after applying what is still queued.
    pub fn spawn<A: Apply>(
        backend: &'static str,
        apply: A,
        queue_capacity: usize,
        max_batch: usize,
    ) -> Writer {
        let (queue, rx) = mpsc::channel(queue_capacity.max(1));
        let counters = Arc::new(Counters::default());
        tokio::spawn(run(backend, apply, rx, max_batch.max(1), counters.clone()));
        Writer {
            backend,
            queue,
            counters,
        }
    }

    /// Queues a write and waits until it is committed (or failed).
    pub async fn submit(&self, write: Write) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        self.queue
            .send(Request { write, done })
            .await
            .map_err(|_| self.stopped())?;
        answer.await.map_err(|_| self.stopped())?
    }

    /// Whether the writer task is still there to take writes.
    pub fn is_alive(&self) -> Result<(), StoreError> {
        if self.queue.is_closed() {
            Err(self.stopped())
        } else {
            Ok(())
        }
    }

    pub fn stats(&self) -> WriterStats {
        WriterStats {
            batches: self.counters.batches.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
            largest_batch: self.counters.largest_batch.load(Ordering::Relaxed),
        }
    }

    fn stopped(&self) -> StoreError {
        StoreError::Backend(format!(
            "{} store: the writer task has stopped",
            self.backend
        ))
    }
}

async fn run<A: Apply>(
    backend: &'static str,
    apply: A,
    mut rx: mpsc::Receiver<Request>,
    max_batch: usize,
    counters: Arc<Counters>,
) {
    let mut batch: Vec<Request> = Vec::with_capacity(max_batch);
    // `recv_many` waits for the first write, then takes whatever else is already queued
    // without waiting for more: batches form only when callers are actually concurrent.
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        let size = batch.len() as u64;
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters.writes.fetch_add(size, Ordering::Relaxed);
        counters.largest_batch.fetch_max(size, Ordering::Relaxed);

        let result = apply.apply(&plan(batch.iter().map(|r| &r.write))).await;
        match result {
            Ok(()) => {
                for r in batch.drain(..) {
                    // A caller that stopped waiting has nothing to be told.
                    let _ = r.done.send(Ok(()));
                }
            }
            Err(sqlx::Error::Database(e)) if batch.len() > 1 => {
                tracing::warn!(
                    backend,
                    writes = batch.len(),
                    error = %e,
                    "group commit failed on a database error; retrying its writes one by one"
                );
                for r in batch.drain(..) {
                    let result = apply
                        .apply(&plan(std::iter::once(&r.write)))
                        .await
                        .map_err(|e| backend_error(backend, &e));
                    let _ = r.done.send(result);
                }
            }
            Err(e) => {
                tracing::warn!(backend, writes = batch.len(), error = %e, "store write failed");
                let message = format!("{backend} store: {e}");
                for r in batch.drain(..) {
                    let _ = r.done.send(Err(StoreError::Backend(message.clone())));
                }
            }
        }
    }
    tracing::debug!(backend, "store writer stopped: every handle was dropped");
}

pub(crate) fn backend_error(backend: &str, e: &sqlx::Error) -> StoreError {
    StoreError::Backend(format!("{backend} store: {e}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    fn row(room: &str, offset: i64) -> MessageRow {
        MessageRow {
            room: room.into(),
            offset,
            data: "null".into(),
            from: "t".into(),
            connection_id: None,
            ts: 0,
        }
    }

    #[test]
    fn plan_merges_runs_of_appends_and_keeps_order_around_other_writes() {
        let writes = [
            Write::Append(vec![row("b", 2), row("a", 1)]),
            Write::Append(vec![row("a", 2), row("b", 1), row("a", 1)]),
            Write::DeleteRoom("a".into()),
            Write::Append(vec![row("a", 1)]),
        ];
        let steps = plan(writes.iter());
        assert_eq!(steps.len(), 3);
        match &steps[0] {
            Step::Append { rows, rooms } => {
                let keys: Vec<_> = rows.iter().map(|r| (r.room.as_str(), r.offset)).collect();
                assert_eq!(keys, [("a", 1), ("a", 2), ("b", 1), ("b", 2)]);
                assert_eq!(rooms, &[("a", 2), ("b", 2)]);
            }
            other => panic!("expected an append, got {other:?}"),
        }
        assert!(matches!(steps[1], Step::Delete("a")));
        assert!(matches!(&steps[2], Step::Append { rows, .. } if rows.len() == 1));
    }

    /// Records the size of every batch; fails batches that contain a poisoned write.
    #[derive(Default)]
    struct Fake {
        batches: Arc<Mutex<Vec<usize>>>,
        delay: Duration,
    }

    #[async_trait]
    impl Apply for Fake {
        async fn apply(&self, steps: &[Step<'_>]) -> Result<(), sqlx::Error> {
            tokio::time::sleep(self.delay).await;
            let mut n = 0;
            for s in steps {
                match s {
                    Step::Append { rows, .. } => n += rows.len(),
                    Step::Delete("poison") => {
                        return Err(sqlx::Error::Protocol("poisoned".into()));
                    }
                    Step::Delete("bad-value") => {
                        return Err(sqlx::Error::Database(Box::new(BadValue)));
                    }
                    Step::Delete("panic") => panic!("writer task dies"),
                    _ => n += 1,
                }
            }
            self.batches.lock().unwrap().push(n);
            Ok(())
        }
    }

    #[tokio::test]
    async fn concurrent_writes_share_a_commit() {
        let fake = Fake {
            delay: Duration::from_millis(20),
            ..Fake::default()
        };
        let seen = fake.batches.clone();
        let writer = Arc::new(Writer::spawn("fake", fake, 64, 16));
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let w = writer.clone();
                tokio::spawn(async move { w.submit(Write::Append(vec![row("r", i)])).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let batches = seen.lock().unwrap().clone();
        assert_eq!(batches.iter().sum::<usize>(), 40);
        assert!(batches.iter().all(|&n| n <= 16), "{batches:?}");
        let stats = writer.stats();
        assert_eq!(stats.writes, 40);
        assert!(stats.batches < 40, "no batching happened: {stats:?}");
        assert!(stats.largest_batch > 1 && stats.largest_batch <= 16);
    }

    /// A database error (as a constraint violation would be).
    #[derive(Debug)]
    struct BadValue;

    impl std::fmt::Display for BadValue {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("bad value")
        }
    }

    impl std::error::Error for BadValue {}

    impl sqlx::error::DatabaseError for BadValue {
        fn message(&self) -> &str {
            "bad value"
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::CheckViolation
        }
    }

    #[tokio::test]
    async fn a_bad_write_fails_only_its_own_caller() {
        let fake = Fake {
            delay: Duration::from_millis(20),
            ..Fake::default()
        };
        let seen = fake.batches.clone();
        let writer = Arc::new(Writer::spawn("fake", fake, 64, 64));
        // Hold the writer busy so the next writes queue up behind this one and batch.
        let busy = {
            let w = writer.clone();
            tokio::spawn(async move { w.submit(Write::DeleteRoom("first".into())).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let w = writer.clone();
                let write = if i == 4 {
                    Write::DeleteRoom("bad-value".into())
                } else {
                    Write::Append(vec![row("r", i)])
                };
                tokio::spawn(async move { (i, w.submit(write).await) })
            })
            .collect();
        busy.await.unwrap().unwrap();
        for t in tasks {
            let (i, result) = t.await.unwrap();
            if i == 4 {
                assert!(result.unwrap_err().to_string().contains("bad value"));
            } else {
                result.unwrap();
            }
        }
        // The failed batch was replayed write by write: 9 good writes kept, once each.
        let batches = seen.lock().unwrap().clone();
        assert_eq!(batches.iter().sum::<usize>(), 1 + 9, "{batches:?}");
        assert!(writer.stats().largest_batch > 1, "{:?}", writer.stats());
    }

    #[tokio::test]
    async fn connection_errors_fail_the_whole_batch() {
        let writer = Writer::spawn("fake", Fake::default(), 8, 8);
        let err = writer
            .submit(Write::DeleteRoom("poison".into()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("poisoned"), "{err}");
        // The writer goes on after a failed batch.
        writer.submit(Write::DeleteRoom("ok".into())).await.unwrap();
    }

    #[tokio::test]
    async fn a_dead_writer_fails_callers_instead_of_hanging() {
        let writer = Writer::spawn("fake", Fake::default(), 8, 8);
        let first = tokio::time::timeout(
            Duration::from_secs(5),
            writer.submit(Write::DeleteRoom("panic".into())),
        )
        .await
        .expect("the caller of the write that killed the writer hung");
        assert!(first.is_err());
        let next = tokio::time::timeout(
            Duration::from_secs(5),
            writer.submit(Write::DeleteRoom("ok".into())),
        )
        .await
        .expect("a caller after the writer died hung");
        let err = next.unwrap_err();
        assert!(err.to_string().contains("writer task has stopped"), "{err}");
        assert!(writer.is_alive().is_err());
    }
}
