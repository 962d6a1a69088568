//! The Server-Sent Events transport: a `text/event-stream` response carrying each frame as
//! `data:` lines; the client sends by POST to the same URL. JSON only (SSE is text). The
//! stream ends when the connection closes (so graceful shutdown is not held open), and a
//! dropped response (client gone) closes the connection.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use tokio::sync::OwnedMutexGuard;

use crate::service::connection::{ActiveGuard, Connection, Frame};
use crate::service::queue;

struct Stream {
    rx: OwnedMutexGuard<queue::Receiver>,
    connection: Arc<Connection>,
    _active: ActiveGuard,
    done: bool,
}

impl Stream {
    /// The last event: what was left, then the `Close` message; the stream ends after it.
    fn last(mut self) -> (Result<Bytes, Infallible>, Stream) {
        let frames = self.connection.final_frames(&mut self.rx);
        self.done = true;
        (Ok(event(&frames)), self)
    }
}

pub(crate) async fn open(connection: Arc<Connection>) -> Response {
    let active = ActiveGuard(connection.clone());
    let rx = connection.outbound.clone().lock_owned().await;
    let state = Stream {
        rx,
        connection,
        _active: active,
        done: false,
    };
    // A comment first: some browsers fire `open` only once data arrives.
    let hello = stream::once(async { Ok::<Bytes, Infallible>(Bytes::from_static(b":\r\n")) });
    let events = stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        tokio::select! {
            biased;
            item = s.rx.recv() => match item {
                Some(item) => Some((Ok(event(&[item.frame])), s)),
                // The queue answers `None` once the connection closes.
                None => Some(s.last()),
            },
            () = s.connection.closed() => Some(s.last()),
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(hello.chain(events)),
    )
        .into_response()
}

/// Frames as SSE events: every line as `data: <line>\r\n`, then an empty line.
fn event(frames: &[Frame]) -> Bytes {
    let mut out = Vec::new();
    for frame in frames {
        for line in frame.as_bytes().split(|b| *b == b'\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_data_lines() {
        let f = Frame::new(None, b"{\"type\":6}\x1e".to_vec());
        assert_eq!(
            &event(&[f])[..],
            b"data: {\"type\":6}\x1e\r\n\r\n".as_slice()
        );
        let f = Frame::new(None, b"a\nb".to_vec());
        assert_eq!(&event(&[f])[..], b"data: a\r\ndata: b\r\n\r\n".as_slice());
    }
}
