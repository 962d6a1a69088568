//! The long-polling transport: each GET waits up to `long_poll_timeout` for frames and
//! returns all that are queued (200; an empty 200 on timeout). The first poll returns at
//! once (clients wait for it before the handshake), a superseded poll and any poll after
//! the close was delivered get 204. Sends are POSTs; DELETE ends the connection.

use std::sync::Arc;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::service::Shared;
use crate::service::connection::{Connection, Frame, PollStart};
use crate::service::queue;

/// Stop adding queued frames to one poll response beyond this many bytes.
const MAX_POLL_BYTES: usize = 1024 * 1024;

pub(crate) async fn poll(shared: &Shared, connection: Arc<Connection>) -> Response {
    connection.touch();
    let superseded = match connection.start_poll() {
        PollStart::First => return ok(Vec::new()),
        PollStart::Finished => return StatusCode::NO_CONTENT.into_response(),
        PollStart::Wait(token) => token,
    };
    let outbound = connection.outbound.clone();
    let mut rx = tokio::select! {
        guard = outbound.lock_owned() => guard,
        () = superseded.cancelled() => return StatusCode::NO_CONTENT.into_response(),
    };
    let response = tokio::select! {
        biased;
        () = superseded.cancelled() => StatusCode::NO_CONTENT.into_response(),
        first = rx.recv() => match first {
            Some(first) => {
                let mut body = first.frame.as_bytes().to_vec();
                while body.len() < MAX_POLL_BYTES {
                    match rx.try_recv() {
                        Some(item) => body.extend_from_slice(item.frame.as_bytes()),
                        None => break,
                    }
                }
                ok(body)
            }
            // The queue answers `None` once the connection closes.
            None => last_poll(&connection, &mut rx),
        },
        () = connection.closed() => last_poll(&connection, &mut rx),
        () = tokio::time::sleep(shared.options.long_poll_timeout) => ok(Vec::new()),
    };
    connection.touch();
    response
}

/// The poll that finds the connection closed: what was left, then the `Close` message.
fn last_poll(connection: &Connection, rx: &mut queue::Receiver) -> Response {
    let frames: Vec<Frame> = connection.final_frames(rx);
    connection.mark_close_delivered();
    if frames.is_empty() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        ok(frames
            .iter()
            .flat_map(|f| f.as_bytes().iter().copied())
            .collect())
    }
}

fn ok(body: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        body,
    )
        .into_response()
}
