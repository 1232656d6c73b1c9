//! A connection's bounded outbound queue, and the slow-consumer policies that keep it
//! bounded.
//!
//! Producers (publishers fanning out, replies, server pushes) never wait: [`OutQueue`]
//! takes the item or applies the room's policy at once. The connection's single writer
//! waits in [`OutQueue::next_batch`], takes *everything* queued in one go and writes it
//! before one flush — batching is what makes high fan-out cheap.
//!
//! Policies when the queue is full (PROTOCOL §5):
//! - `disconnect`: the connection is closed with 4008 and its queue dropped.
//! - `drop`: the oldest droppable room message is removed and remembered as a `gap`
//!   range, which the writer sends before anything still queued.
//! - `conflate`: an older queued message of the same room with the same `data.key` is
//!   replaced (whether or not the queue is full); otherwise as `drop`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use switchboard_protocol::{CloseCode, Encoding, ServerMessage};
use tokio::sync::Notify;

use crate::endpoint::SlowConsumer;
use crate::frame::{FrameCompressor, Outgoing, Payload};

/// A room message's place in its room, for the drop and conflate policies.
#[derive(Debug, Clone)]
pub struct RoomTag {
    /// The room the message belongs to.
    pub room: Arc<str>,
    /// Its offset in that room.
    pub offset: u64,
    /// Its `data.key`, when the room conflates.
    pub key: Option<Arc<str>>,
    /// The room's slow-consumer policy.
    pub policy: SlowConsumer,
}

#[derive(Debug)]
struct Entry {
    payload: Payload,
    tag: Option<RoomTag>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GapRange {
    from: u64,
    to: u64,
}

#[derive(Debug, Default)]
struct Inner {
    items: VecDeque<Entry>,
    gaps: Vec<(Arc<str>, GapRange)>,
    /// Close after everything queued before it was written.
    close: Option<(u16, String)>,
    /// Close now, dropping whatever is queued.
    abort: Option<(u16, String)>,
    /// The writer has taken the close; nothing more will be written.
    finished: bool,
}

/// The bounded outbound queue of one connection.
#[derive(Debug)]
pub struct OutQueue {
    inner: Mutex<Inner>,
    notify: Notify,
    bound: usize,
    dropped: AtomicU64,
}

/// What became of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued (possibly after dropping or conflating older messages).
    Queued,
    /// The connection is closing; the item was discarded.
    Closing,
    /// The queue was full under `disconnect`: the connection is now being closed with 4008.
    Overflowed,
}

impl OutQueue {
    /// An empty queue holding at most `bound` messages (at least 1).
    pub fn new(bound: usize) -> Self {
        OutQueue {
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
            bound: bound.max(1),
            dropped: AtomicU64::new(0),
        }
    }

    /// Messages dropped or conflated away so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Messages waiting to be written.
    pub fn len(&self) -> usize {
        self.inner.lock().items.len()
    }

    /// True when nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues a message that belongs to no room (a reply, a direct message, an event).
    /// When the queue is full it makes room by dropping a droppable room message, or
    /// closes the connection if there is none.
    pub fn push(&self, payload: Payload) -> Pushed {
        self.push_entry(Entry { payload, tag: None }, SlowConsumer::Drop)
    }

    /// Queues a room message, applying the room's slow-consumer policy if needed.
    pub fn push_room(&self, payload: Payload, tag: &RoomTag) -> Pushed {
        // Rooms that disconnect slow consumers never look at queued messages again, so
        // their entries carry no tag (one less shared counter touched per recipient).
        let entry = Entry {
            payload,
            tag: (tag.policy != SlowConsumer::Disconnect).then(|| tag.clone()),
        };
        self.push_entry(entry, tag.policy)
    }

    fn push_entry(&self, entry: Entry, policy: SlowConsumer) -> Pushed {
        let (outcome, wake) = {
            let mut q = self.inner.lock();
            // The writer only needs waking when the queue goes from empty to not empty:
            // otherwise it has a wake-up pending already or is about to drain. Under load
            // this turns one wake-up per message into one per batch.
            let was_empty = q.items.is_empty();
            if q.abort.is_some() || q.close.is_some() || q.finished {
                return Pushed::Closing;
            }
            if let Some(tag) = &entry.tag
                && tag.policy == SlowConsumer::Conflate
                && let Some(key) = &tag.key
            {
                let same = q.items.iter().position(|e| {
                    e.tag
                        .as_ref()
                        .is_some_and(|t| t.room == tag.room && t.key.as_deref() == Some(key))
                });
                if let Some(i) = same {
                    q.items.remove(i);
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Room for it, or made room by the policy (drop_oldest runs only when full).
            if q.items.len() < self.bound
                || (policy != SlowConsumer::Disconnect && self.drop_oldest(&mut q))
            {
                q.items.push_back(entry);
                (Pushed::Queued, was_empty)
            } else {
                q.items.clear();
                q.abort = Some((CloseCode::SLOW_CONSUMER.0, "slow consumer".into()));
                (Pushed::Overflowed, true)
            }
        };
        if wake {
            self.notify.notify_one();
        }
        outcome
    }

    /// Removes the oldest room message whose room tolerates loss, remembering the gap.
    fn drop_oldest(&self, q: &mut Inner) -> bool {
        let Some(i) = q.items.iter().position(|e| {
            e.tag
                .as_ref()
                .is_some_and(|t| t.policy != SlowConsumer::Disconnect)
        }) else {
            return false;
        };
        let Some(Entry { tag: Some(tag), .. }) = q.items.remove(i) else {
            return false;
        };
        self.dropped.fetch_add(1, Ordering::Relaxed);
        let off = tag.offset;
        // Extend the newest gap of this room when the dropped offset follows it.
        if let Some((_, g)) = q.gaps.iter_mut().rev().find(|(room, _)| *room == tag.room)
            && g.to + 1 == off
        {
            g.to = off;
            return true;
        }
        q.gaps.push((tag.room, GapRange { from: off, to: off }));
        true
    }

    /// Closes the connection once everything queued so far has been written.
    pub fn close(&self, code: u16, reason: impl Into<String>) {
        {
            let mut q = self.inner.lock();
            if q.close.is_none() && q.abort.is_none() {
                q.close = Some((code, reason.into()));
            }
        }
        self.notify.notify_one();
    }

    /// Closes the connection now, discarding whatever is queued.
    pub fn abort(&self, code: u16, reason: impl Into<String>) {
        {
            let mut q = self.inner.lock();
            if q.abort.is_none() {
                q.items.clear();
                q.gaps.clear();
                q.abort = Some((code, reason.into()));
            }
        }
        self.notify.notify_one();
    }

    /// True once a close or abort was asked for.
    pub fn is_closing(&self) -> bool {
        let q = self.inner.lock();
        q.close.is_some() || q.abort.is_some()
    }

    /// Moves everything queued into `out`, encoded for `encoding`, without waiting.
    /// Returns false once the close has been handed out (the writer should stop after
    /// writing `out`).
    pub fn drain_into(&self, out: &mut Vec<Outgoing>, encoding: Encoding) -> bool {
        self.drain_sampled(out, encoding, &mut None)
    }

    /// Like [`OutQueue::drain_into`]; also sets `sample` to the creation time of a
    /// latency-sampled frame in the batch, if this writer is the first to take it.
    pub fn drain_sampled(
        &self,
        out: &mut Vec<Outgoing>,
        encoding: Encoding,
        sample: &mut Option<std::time::Instant>,
    ) -> bool {
        self.drain_with(out, encoding, None, sample)
    }

    /// Like [`OutQueue::drain_sampled`], compressing messages with `compressor` (when
    /// given) for a transport that negotiated compression.
    pub fn drain_with(
        &self,
        out: &mut Vec<Outgoing>,
        encoding: Encoding,
        compressor: Option<&dyn FrameCompressor>,
        sample: &mut Option<std::time::Instant>,
    ) -> bool {
        let convert = |p: &Payload| match compressor {
            Some(c) => Outgoing::from_payload_compressed(p, encoding, c),
            None => Outgoing::from_payload(p, encoding),
        };
        let mut q = self.inner.lock();
        if q.finished {
            return false;
        }
        if let Some((code, reason)) = q.abort.take() {
            q.items.clear();
            q.finished = true;
            out.push(Outgoing::Close(code, reason));
            return false;
        }
        for (room, g) in q.gaps.drain(..) {
            let gap = ServerMessage::Gap {
                room: room.to_string(),
                from_offset: g.from,
                to_offset: g.to,
            };
            out.push(convert(&Payload::msg(gap)));
        }
        out.extend(q.items.drain(..).map(|e| {
            if let Payload::Msg(frame) = &e.payload
                && let Some(at) = frame.take_sample()
            {
                *sample = Some(at);
            }
            convert(&e.payload)
        }));
        // A burst can leave a large buffer behind; give it back so idle connections
        // stay small.
        if q.items.capacity() > 256 {
            q.items.shrink_to(16);
        }
        if let Some((code, reason)) = q.close.take() {
            q.finished = true;
            out.push(Outgoing::Close(code, reason));
            return false;
        }
        true
    }

    /// Waits until something is queued (or a close is asked for), then drains like
    /// [`OutQueue::drain_into`].
    pub async fn next_batch(
        &self,
        out: &mut Vec<Outgoing>,
        encoding: Encoding,
        sample: &mut Option<std::time::Instant>,
    ) -> bool {
        self.next_batch_with(out, encoding, None, sample).await
    }

    /// Like [`OutQueue::next_batch`], compressing with `compressor` when given.
    pub async fn next_batch_with(
        &self,
        out: &mut Vec<Outgoing>,
        encoding: Encoding,
        compressor: Option<&dyn FrameCompressor>,
        sample: &mut Option<std::time::Instant>,
    ) -> bool {
        loop {
            {
                let q = self.inner.lock();
                if q.finished {
                    return false;
                }
                let ready = !q.items.is_empty()
                    || !q.gaps.is_empty()
                    || q.close.is_some()
                    || q.abort.is_some();
                drop(q);
                if ready {
                    return self.drain_with(out, encoding, compressor, sample);
                }
            }
            self.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use switchboard_protocol::RoomMessage;

    fn room_msg(room: &str, offset: u64, key: Option<&str>) -> (Payload, RoomTag) {
        let msg = ServerMessage::Message(RoomMessage {
            room: room.into(),
            data: json!({"key": key, "n": offset}),
            from: "c".into(),
            connection_id: None,
            offset,
            ts: 0,
        });
        (
            Payload::msg(msg),
            RoomTag {
                room: room.into(),
                offset,
                key: key.map(Into::into),
                policy: SlowConsumer::Drop,
            },
        )
    }

    fn drain(q: &OutQueue) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        q.drain_into(&mut out, Encoding::Json);
        out.into_iter()
            .map(|o| match o {
                Outgoing::Text(b) => serde_json::from_slice(&b).unwrap(),
                Outgoing::Close(code, _) => json!({"close": code}),
                Outgoing::Binary(_) => json!("binary"),
                Outgoing::Compressed { .. } => json!("compressed"),
            })
            .collect()
    }

    /// Counts its calls; "compresses" by keeping every other byte.
    struct Halver {
        key: u64,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl crate::frame::FrameCompressor for Halver {
        fn key(&self) -> u64 {
            self.key
        }
        fn min_size(&self) -> usize {
            // Between the ~100-byte plain message and the one with a 200-byte key.
            160
        }
        fn compress(&self, payload: &[u8]) -> Option<bytes::Bytes> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            Some(payload.iter().step_by(2).copied().collect())
        }
    }

    #[test]
    fn a_broadcast_is_compressed_once_for_every_recipient_with_the_same_settings() {
        let (big, tag) = room_msg("r", 1, Some(&"k".repeat(200)));
        let (small, small_tag) = room_msg("r", 2, None);
        let queues: Vec<OutQueue> = (0..5).map(|_| OutQueue::new(16)).collect();
        for q in &queues {
            q.push_room(big.clone(), &tag);
            q.push_room(small.clone(), &small_tag);
        }
        let c = Halver {
            key: 1,
            calls: Default::default(),
        };
        let mut outs = Vec::new();
        for q in &queues {
            let mut out = Vec::new();
            q.drain_with(&mut out, Encoding::Json, Some(&c), &mut None);
            outs.push(out);
        }
        assert_eq!(c.calls.load(Ordering::Relaxed), 1, "compressed once");
        let first = match &outs[0][0] {
            Outgoing::Compressed {
                text: true,
                payload,
            } => payload.clone(),
            other => panic!("expected a compressed frame, got {other:?}"),
        };
        for out in &outs {
            // The same bytes, not a copy; the small message stays plain.
            assert!(
                matches!(&out[0], Outgoing::Compressed { payload, .. } if payload.as_ptr() == first.as_ptr())
            );
            assert!(matches!(&out[1], Outgoing::Text(_)));
        }
        // Other settings get their own compression, and do not replace the cached one.
        let other = Halver {
            key: 2,
            calls: Default::default(),
        };
        let q = OutQueue::new(4);
        q.push_room(big.clone(), &tag);
        let mut out = Vec::new();
        q.drain_with(&mut out, Encoding::Json, Some(&other), &mut None);
        assert_eq!(other.calls.load(Ordering::Relaxed), 1);
        assert!(matches!(&out[0], Outgoing::Compressed { .. }));
        let q = OutQueue::new(4);
        q.push_room(big, &tag);
        q.drain_with(&mut Vec::new(), Encoding::Json, Some(&c), &mut None);
        assert_eq!(c.calls.load(Ordering::Relaxed), 1, "still cached for key 1");
    }

    #[test]
    fn disconnect_policy_aborts_with_4008_when_full() {
        let q = OutQueue::new(2);
        for off in 1..=2 {
            let (p, mut t) = room_msg("r", off, None);
            t.policy = SlowConsumer::Disconnect;
            assert_eq!(q.push_room(p, &t), Pushed::Queued);
        }
        let (p, mut t) = room_msg("r", 3, None);
        t.policy = SlowConsumer::Disconnect;
        assert_eq!(q.push_room(p, &t), Pushed::Overflowed);
        assert_eq!(drain(&q), vec![json!({"close": 4008})]);
        assert_eq!(
            q.push(Payload::msg(ServerMessage::ack(None))),
            Pushed::Closing
        );
    }

    #[test]
    fn drop_policy_reports_contiguous_gaps_first() {
        let q = OutQueue::new(3);
        for off in 1..=6 {
            let (p, t) = room_msg("r", off, None);
            assert_eq!(q.push_room(p, &t), Pushed::Queued);
        }
        let got = drain(&q);
        assert_eq!(
            got[0],
            json!({"type":"gap","room":"r","from_offset":1,"to_offset":3})
        );
        let offsets: Vec<_> = got[1..]
            .iter()
            .map(|m| m["offset"].as_u64().unwrap())
            .collect();
        assert_eq!(offsets, vec![4, 5, 6]);
        assert_eq!(q.dropped(), 3);
    }

    #[test]
    fn conflate_keeps_the_newest_per_key() {
        let q = OutQueue::new(10);
        for (off, key) in [(1, "a"), (2, "b"), (3, "a"), (4, "a")] {
            let (p, mut t) = room_msg("r", off, Some(key));
            t.policy = SlowConsumer::Conflate;
            q.push_room(p, &t);
        }
        let offsets: Vec<_> = drain(&q)
            .iter()
            .map(|m| m["offset"].as_u64().unwrap())
            .collect();
        assert_eq!(offsets, vec![2, 4]);
    }

    #[test]
    fn close_comes_after_queued_messages_and_ends_the_queue() {
        let q = OutQueue::new(10);
        q.push(Payload::msg(ServerMessage::ack(Some(1.into()))));
        q.close(1000, "bye");
        let got = drain(&q);
        assert_eq!(
            got,
            vec![json!({"type":"ack","id":1}), json!({"close": 1000})]
        );
        let mut out = Vec::new();
        assert!(!q.drain_into(&mut out, Encoding::Json));
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn next_batch_wakes_on_push() {
        let q = Arc::new(OutQueue::new(4));
        let q2 = q.clone();
        let task = tokio::spawn(async move {
            let mut out = Vec::new();
            q2.next_batch(&mut out, Encoding::Json, &mut None).await;
            out.len()
        });
        tokio::task::yield_now().await;
        q.push(Payload::msg(ServerMessage::ack(None)));
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1);
    }
}
