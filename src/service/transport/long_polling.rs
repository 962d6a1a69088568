//! The long-polling transport: each GET waits up to `long_poll_timeout` for frames and
//! returns all that are queued (200; an empty 200 on timeout). The first poll returns at
//! once (clients wait for it before the handshake), a superseded poll and any poll after
//! the close was delivered get 204. Sends are POSTs; DELETE ends the connection.

use std::sync::Arc;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::service::Shared;
use crate::service::connection::{Connection, Frame, PollStart};

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
        frame = rx.recv() => match frame {
            Some(first) => {
                let mut body = first.frame.as_bytes().to_vec();
                while body.len() < MAX_POLL_BYTES {
                    match rx.try_recv() {
                        Ok(item) => body.extend_from_slice(item.frame.as_bytes()),
                        Err(_) => break,
                    }
                }
                ok(body)
            }
            None => StatusCode::NO_CONTENT.into_response(),
        },
        () = connection.closed() => {
            let frames: Vec<Frame> = connection.final_frames(&mut rx);
            connection.mark_close_delivered();
            if frames.is_empty() {
                StatusCode::NO_CONTENT.into_response()
            } else {
                ok(frames.iter().flat_map(|f| f.as_bytes().iter().copied()).collect())
            }
        }
        () = tokio::time::sleep(shared.options.long_poll_timeout) => ok(Vec::new()),
    };
    connection.touch();
    response
}

fn ok(body: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        body,
    )
        .into_response()
}
