//! Stateful reconnect bookkeeping for one connection (signalr-facts §3.4): the bounded replay
//! buffer of trackable frames written but not yet acknowledged by the client, and the
//! sequence numbers of what the client sent us (duplicates dropped, our own Acks). Pure
//! state: the WebSocket writer and `Connection::receive` drive it under a std `Mutex`.
//!
//! Rules, as ASP.NET Core's `MessageBuffer`:
//! - Sequence ids start at 1 and rise by 1 per trackable message, separately per direction,
//!   and are never reset by a reconnect.
//! - A frame gets its id when it is written to a socket, and stays buffered until an `Ack`
//!   with an id ≥ its own. When the buffered bytes exceed the limit, the writer takes no more
//!   from the connection's queue until an `Ack` frees room (ASP.NET's sender waits); fan-out
//!   keeps using `try_send`, so a client that never acknowledges ends as a slow consumer.
//! - On resume the server writes `Sequence{first buffered id}` (or the next id when nothing
//!   is buffered), then the buffer in order, and ignores the client's messages until the
//!   client's own `Sequence` arrives.
//! - Inbound trackable messages with an id ≤ the highest processed are duplicates; an Ack
//!   for the highest processed id is due (sent by the writer about once a second).

use std::collections::VecDeque;

use super::connection::Frame;
use crate::signalr::protocol::HubMessage;

/// The client's `Sequence` named an id beyond what it ever sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Sequence ID {got} is greater than the {expected} messages received")]
pub(crate) struct SequenceError {
    got: u64,
    expected: u64,
}

/// One connection's replay buffer and sequence state.
#[derive(Debug)]
pub(crate) struct Replay {
    /// Most buffered bytes before the writer waits for an Ack.
    limit: usize,
    /// Trackable frames written so far (the last id given out).
    written: u64,
    /// Written, unacknowledged frames with their ids, oldest first.
    buffer: VecDeque<(u64, Frame)>,
    /// Sum of the buffered frames' lengths.
    bytes: usize,
    /// The id the next inbound trackable message will have.
    next_receiving: u64,
    /// Highest inbound id processed (0: none).
    latest_received: u64,
    /// Highest inbound id we acknowledged (0: none).
    last_acked: u64,
    /// After a resume: drop the client's messages until its `Sequence`.
    wait_for_sequence: bool,
}

impl Replay {
    pub(crate) fn new(limit: usize) -> Self {
        Replay {
            limit,
            written: 0,
            buffer: VecDeque::new(),
            bytes: 0,
            next_receiving: 1,
            latest_received: 0,
            last_acked: 0,
            wait_for_sequence: false,
        }
    }

    /// Whether the writer must wait for an Ack before taking another frame.
    pub(crate) fn is_full(&self) -> bool {
        self.bytes > self.limit
    }

    /// Buffered bytes.
    #[cfg(test)]
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.bytes
    }

    /// A trackable frame is about to be written: give it the next id and keep it.
    pub(crate) fn record(&mut self, frame: &Frame) -> u64 {
        self.written += 1;
        self.bytes += frame.as_bytes().len();
        self.buffer.push_back((self.written, frame.clone()));
        self.written
    }

    /// The client processed everything up to `sequence_id`: drop those frames. Returns
    /// whether room was freed.
    pub(crate) fn ack(&mut self, sequence_id: u64) -> bool {
        let mut freed = false;
        while let Some((id, frame)) = self.buffer.front() {
            if *id > sequence_id {
                break;
            }
            self.bytes -= frame.as_bytes().len();
            self.buffer.pop_front();
            freed = true;
        }
        freed
    }

    /// A new transport took over: the `Sequence` id to send first and the frames to write
    /// again, in order. Inbound messages are ignored until the client's `Sequence`.
    pub(crate) fn resume(&mut self) -> (u64, Vec<Frame>) {
        self.wait_for_sequence = true;
        let first = self.buffer.front().map_or(self.written + 1, |(id, _)| *id);
        (first, self.buffer.iter().map(|(_, f)| f.clone()).collect())
    }

    /// Whether an inbound message is to be processed (`false`: a duplicate, or a message
    /// before the client's `Sequence` after a resume). A `Sequence` resets the receiving id.
    pub(crate) fn inbound(&mut self, message: &HubMessage) -> Result<bool, SequenceError> {
        if let HubMessage::Sequence { sequence_id } = message {
            self.wait_for_sequence = false;
            if *sequence_id > self.next_receiving {
                return Err(SequenceError {
                    got: *sequence_id,
                    expected: self.next_receiving,
                });
            }
            self.next_receiving = *sequence_id;
            return Ok(true);
        }
        if self.wait_for_sequence {
            return Ok(false);
        }
        if !message.is_trackable() {
            return Ok(true);
        }
        let id = self.next_receiving;
        self.next_receiving += 1;
        if id <= self.latest_received {
            return Ok(false);
        }
        self.latest_received = id;
        Ok(true)
    }

    /// The id to acknowledge now, if anything new was received since the last Ack.
    pub(crate) fn ack_due(&mut self) -> Option<u64> {
        (self.latest_received > self.last_acked).then(|| {
            self.last_acked = self.latest_received;
            self.latest_received
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signalr::protocol::Protocol;

    fn frame(text: &str) -> Frame {
        Frame::new(Some(Protocol::Json), text.as_bytes().to_vec())
    }

    fn texts(frames: &[Frame]) -> Vec<String> {
        frames
            .iter()
            .map(|f| String::from_utf8_lossy(f.as_bytes()).into_owned())
            .collect()
    }

    #[test]
    fn ids_start_at_1_and_acks_trim_the_front() {
        let mut r = Replay::new(1000);
        assert_eq!(r.record(&frame("a")), 1);
        assert_eq!(r.record(&frame("bb")), 2);
        assert_eq!(r.record(&frame("ccc")), 3);
        assert_eq!(r.buffered_bytes(), 6);
        assert!(!r.ack(0), "nothing acknowledged yet");
        assert!(r.ack(2));
        assert_eq!(r.buffered_bytes(), 3);
        assert!(!r.ack(2), "a repeated Ack frees nothing");
        let (first, frames) = r.resume();
        assert_eq!((first, texts(&frames)), (3, vec!["ccc".to_string()]));
        // An Ack beyond what was written empties the buffer and no more.
        assert!(r.ack(99));
        assert_eq!(r.buffered_bytes(), 0);
        assert_eq!(r.record(&frame("d")), 4, "ids continue after acks");
    }

    #[test]
    fn resume_replays_in_order_and_sequence_names_the_next_id_when_empty() {
        let mut r = Replay::new(1000);
        let (first, frames) = r.resume();
        assert_eq!((first, frames.len()), (1, 0));
        for t in ["1", "2", "3", "4"] {
            r.record(&frame(t));
        }
        r.ack(1);
        let (first, frames) = r.resume();
        assert_eq!(first, 2);
        assert_eq!(texts(&frames), ["2", "3", "4"]);
        // A second resume with no Ack in between replays the same frames, not more.
        let (again, frames) = r.resume();
        assert_eq!(
            (again, texts(&frames)),
            (2, vec!["2".into(), "3".into(), "4".into()])
        );
        r.ack(4);
        let (first, frames) = r.resume();
        assert_eq!((first, frames.len()), (5, 0));
    }

    #[test]
    fn the_buffer_is_full_past_its_limit_until_an_ack() {
        let mut r = Replay::new(10);
        r.record(&frame("12345"));
        r.record(&frame("12345"));
        assert!(!r.is_full(), "exactly at the limit is not past it");
        r.record(&frame("x"));
        assert!(r.is_full());
        r.ack(1);
        assert!(!r.is_full());
    }

    #[test]
    fn inbound_duplicates_are_dropped_and_acks_fall_due() {
        let invocation = HubMessage::invocation("t", vec![]);
        let mut r = Replay::new(10);
        assert_eq!(r.ack_due(), None);
        assert_eq!(r.inbound(&HubMessage::Ping), Ok(true));
        assert_eq!(r.inbound(&invocation), Ok(true));
        assert_eq!(r.inbound(&invocation), Ok(true));
        assert_eq!(r.ack_due(), Some(2));
        assert_eq!(r.ack_due(), None, "acknowledged once");
        // The client reconnected and replays from 2: 2 is a duplicate, 3 is new.
        r.resume();
        assert_eq!(r.inbound(&invocation), Ok(false), "before its Sequence");
        assert_eq!(
            r.inbound(&HubMessage::Sequence { sequence_id: 2 }),
            Ok(true)
        );
        assert_eq!(r.inbound(&invocation), Ok(false), "2 again");
        assert_eq!(r.inbound(&invocation), Ok(true), "3");
        assert_eq!(r.ack_due(), Some(3));
        assert_eq!(
            r.inbound(&HubMessage::Sequence { sequence_id: 9 }),
            Err(SequenceError {
                got: 9,
                expected: 4
            })
        );
    }
}
