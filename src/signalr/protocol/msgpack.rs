//! The MessagePack hub protocol: each message is `VarInt(length)` followed by a MessagePack
//! array (`[1, headers, invocationId|nil, target, [args], [streamIds]]`, `[6]`, …). Arguments
//! are carried as `serde_json::Value` on our side; binary values decode to base64 strings
//! (what .NET's JSON protocol does with `byte[]`), extension values to `null`.

use std::io::Cursor;

use rmpv::Value as Mp;
use serde_json::Value;

use super::{CompletionResult, Headers, HubMessage, ProtocolError};

/// The deepest MessagePack nesting decoded; deeper input is an error, never a stack overflow.
const MAX_DEPTH: usize = 64;

/// The largest message length a VarInt may announce (2 GB - 1, as ASP.NET Core).
const MAX_LENGTH: u64 = i32::MAX as u64;

/// Encode one message: VarInt length prefix + MessagePack array.
pub fn encode(message: &HubMessage) -> Result<Vec<u8>, ProtocolError> {
    let type_id = Mp::from(message.type_id());
    let array = match message {
        HubMessage::Invocation {
            headers,
            invocation_id,
            target,
            arguments,
            stream_ids,
        } => vec![
            type_id,
            headers_value(headers),
            opt_str(invocation_id.as_deref()),
            Mp::from(target.as_str()),
            Mp::Array(arguments.iter().map(json_to_value).collect()),
            strings(stream_ids),
        ],
        HubMessage::StreamItem {
            headers,
            invocation_id,
            item,
        } => vec![
            type_id,
            headers_value(headers),
            Mp::from(invocation_id.as_str()),
            json_to_value(item),
        ],
        HubMessage::Completion {
            headers,
            invocation_id,
            result,
        } => {
            let mut a = vec![
                type_id,
                headers_value(headers),
                Mp::from(invocation_id.as_str()),
            ];
            match result {
                CompletionResult::Error(e) => {
                    a.push(Mp::from(1u8));
                    a.push(Mp::from(e.as_str()));
                }
                CompletionResult::Void => a.push(Mp::from(2u8)),
                CompletionResult::Value(v) => {
                    a.push(Mp::from(3u8));
                    a.push(json_to_value(v));
                }
            }
            a
        }
        HubMessage::StreamInvocation {
            headers,
            invocation_id,
            target,
            arguments,
            stream_ids,
        } => vec![
            type_id,
            headers_value(headers),
            Mp::from(invocation_id.as_str()),
            Mp::from(target.as_str()),
            Mp::Array(arguments.iter().map(json_to_value).collect()),
            strings(stream_ids),
        ],
        HubMessage::CancelInvocation {
            headers,
            invocation_id,
        } => vec![
            type_id,
            headers_value(headers),
            Mp::from(invocation_id.as_str()),
        ],
        HubMessage::Ping => vec![type_id],
        HubMessage::Close {
            error,
            allow_reconnect,
        } => vec![
            type_id,
            opt_str(error.as_deref()),
            Mp::Boolean(*allow_reconnect),
        ],
        HubMessage::Ack { sequence_id } | HubMessage::Sequence { sequence_id } => {
            vec![type_id, Mp::from(*sequence_id)]
        }
    };
    let mut body = Vec::with_capacity(64);
    rmpv::encode::write_value(&mut body, &Mp::Array(array))
        .map_err(|e| ProtocolError::Encode(e.to_string()))?;
    if body.len() as u64 > MAX_LENGTH {
        return Err(ProtocolError::Encode(format!(
            "message of {} bytes is over 2 GB",
            body.len()
        )));
    }
    let mut out = Vec::with_capacity(body.len() + 5);
    write_varint(&mut out, body.len() as u64);
    out.extend(body);
    Ok(out)
}

fn headers_value(headers: &Headers) -> Mp {
    Mp::Map(
        headers
            .iter()
            .map(|(k, v)| (Mp::from(k.as_str()), Mp::from(v.as_str())))
            .collect(),
    )
}

fn opt_str(s: Option<&str>) -> Mp {
    s.map_or(Mp::Nil, Mp::from)
}

fn strings(items: &[String]) -> Mp {
    Mp::Array(items.iter().map(|s| Mp::from(s.as_str())).collect())
}

/// Append the VarInt encoding of `n`: 7 bits per byte, least significant group first.
pub fn write_varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// Read a VarInt from the start of `buf`: `Ok(None)` if `buf` ends inside it, otherwise the
/// value and the bytes it used. More than 5 bytes or a value over 2 GB is an error.
pub fn read_varint(buf: &[u8]) -> Result<Option<(u64, usize)>, ProtocolError> {
    let mut value: u64 = 0;
    for (i, byte) in buf.iter().enumerate().take(5) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if value > MAX_LENGTH {
                return Err(ProtocolError::LengthPrefix);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 5 {
        Err(ProtocolError::LengthPrefix)
    } else {
        Ok(None)
    }
}

/// Decode every message of one complete frame. A partial trailing message is an error;
/// messages of unknown type are skipped.
pub fn decode_frame(frame: &[u8]) -> Result<Vec<HubMessage>, ProtocolError> {
    Ok(decode_frame_raw(frame)?
        .into_iter()
        .map(|raw| raw.message)
        .collect())
}

/// [`decode_frame`], each message with its body's bytes (without the VarInt prefix).
pub fn decode_frame_raw(frame: &[u8]) -> Result<Vec<super::RawMessage<'_>>, ProtocolError> {
    let mut messages = Vec::new();
    let mut rest = frame;
    while !rest.is_empty() {
        let (len, used) = read_varint(rest)?.ok_or(ProtocolError::Truncated)?;
        let len = usize::try_from(len).map_err(|_| ProtocolError::LengthPrefix)?;
        let body = rest
            .get(used..used.saturating_add(len))
            .ok_or(ProtocolError::Truncated)?;
        if let Some(message) = decode_body(body)? {
            messages.push(super::RawMessage {
                message,
                bytes: body,
            });
        }
        rest = &rest[used + len..];
    }
    Ok(messages)
}

/// Decode one message body (after its length prefix). `Ok(None)` for an unknown type.
pub fn decode_body(body: &[u8]) -> Result<Option<HubMessage>, ProtocolError> {
    if body.is_empty() {
        return Err(ProtocolError::Empty);
    }
    let mut cursor = Cursor::new(body);
    let value = rmpv::decode::read_value_with_max_depth(&mut cursor, MAX_DEPTH)
        .map_err(|e| ProtocolError::MessagePack(e.to_string()))?;
    let trailing = body.len() as u64 - cursor.position();
    if trailing > 0 {
        return Err(ProtocolError::TrailingData(trailing as usize));
    }
    let Mp::Array(items) = value else {
        return Err(ProtocolError::NotAnArray);
    };
    let mut items = items.into_iter();
    let type_id = match items.next() {
        Some(Mp::Integer(i)) => i.as_i64().ok_or(ProtocolError::WrongType {
            field: "type",
            expected: "an integer",
        })?,
        Some(_) => {
            return Err(ProtocolError::WrongType {
                field: "type",
                expected: "an integer",
            });
        }
        None => return Err(ProtocolError::Missing("type")),
    };
    let mut next = |field: &'static str| items.next().ok_or(ProtocolError::Missing(field));
    let message = match type_id {
        1 => HubMessage::Invocation {
            headers: headers(next("headers")?)?,
            invocation_id: opt_string(next("invocationId")?, "invocationId")?,
            target: string(next("target")?, "target")?,
            arguments: arguments(next("arguments")?)?,
            stream_ids: match next("streamIds") {
                Ok(v) => string_array(v)?,
                Err(_) => Vec::new(),
            },
        },
        2 => HubMessage::StreamItem {
            headers: headers(next("headers")?)?,
            invocation_id: string(next("invocationId")?, "invocationId")?,
            item: value_to_json(next("item")?),
        },
        3 => {
            let headers = headers(next("headers")?)?;
            let invocation_id = string(next("invocationId")?, "invocationId")?;
            let kind = match next("resultKind")? {
                Mp::Integer(i) => i.as_u64().ok_or(ProtocolError::ResultKind(0))?,
                _ => {
                    return Err(ProtocolError::WrongType {
                        field: "resultKind",
                        expected: "an integer",
                    });
                }
            };
            let result = match kind {
                1 => CompletionResult::Error(string(next("error")?, "error")?),
                2 => CompletionResult::Void,
                3 => CompletionResult::Value(value_to_json(next("result")?)),
                other => return Err(ProtocolError::ResultKind(other)),
            };
            HubMessage::Completion {
                headers,
                invocation_id,
                result,
            }
        }
        4 => HubMessage::StreamInvocation {
            headers: headers(next("headers")?)?,
            invocation_id: string(next("invocationId")?, "invocationId")?,
            target: string(next("target")?, "target")?,
            arguments: arguments(next("arguments")?)?,
            stream_ids: match next("streamIds") {
                Ok(v) => string_array(v)?,
                Err(_) => Vec::new(),
            },
        },
        5 => HubMessage::CancelInvocation {
            headers: headers(next("headers")?)?,
            invocation_id: string(next("invocationId")?, "invocationId")?,
        },
        6 => HubMessage::Ping,
        7 => HubMessage::Close {
            error: opt_string(next("error")?, "error")?,
            allow_reconnect: match next("allowReconnect") {
                Err(_) | Ok(Mp::Nil) => false,
                Ok(Mp::Boolean(b)) => b,
                Ok(_) => {
                    return Err(ProtocolError::WrongType {
                        field: "allowReconnect",
                        expected: "a boolean",
                    });
                }
            },
        },
        8 => HubMessage::Ack {
            sequence_id: sequence_id(next("sequenceId")?)?,
        },
        9 => HubMessage::Sequence {
            sequence_id: sequence_id(next("sequenceId")?)?,
        },
        _ => return Ok(None),
    };
    Ok(Some(message))
}

fn string(v: Mp, field: &'static str) -> Result<String, ProtocolError> {
    opt_string(v, field)?.ok_or(ProtocolError::Missing(field))
}

fn opt_string(v: Mp, field: &'static str) -> Result<Option<String>, ProtocolError> {
    match v {
        Mp::Nil => Ok(None),
        Mp::String(s) => s.into_str().map(Some).ok_or(ProtocolError::WrongType {
            field,
            expected: "valid UTF-8",
        }),
        _ => Err(ProtocolError::WrongType {
            field,
            expected: "a string",
        }),
    }
}

fn string_array(v: Mp) -> Result<Vec<String>, ProtocolError> {
    match v {
        Mp::Nil => Ok(Vec::new()),
        Mp::Array(a) => a.into_iter().map(|s| string(s, "streamIds")).collect(),
        _ => Err(ProtocolError::WrongType {
            field: "streamIds",
            expected: "an array of strings",
        }),
    }
}

fn arguments(v: Mp) -> Result<Vec<Value>, ProtocolError> {
    match v {
        Mp::Array(a) => Ok(a.into_iter().map(value_to_json).collect()),
        _ => Err(ProtocolError::WrongType {
            field: "arguments",
            expected: "an array",
        }),
    }
}

fn headers(v: Mp) -> Result<Headers, ProtocolError> {
    match v {
        Mp::Nil => Ok(Headers::new()),
        Mp::Map(entries) => entries
            .into_iter()
            .map(|(k, v)| Ok((string(k, "headers")?, string(v, "headers")?)))
            .collect(),
        _ => Err(ProtocolError::WrongType {
            field: "headers",
            expected: "a map of strings",
        }),
    }
}

fn sequence_id(v: Mp) -> Result<u64, ProtocolError> {
    match v {
        Mp::Integer(i) => i.as_u64(),
        _ => None,
    }
    .ok_or(ProtocolError::WrongType {
        field: "sequenceId",
        expected: "a non-negative integer",
    })
}

/// A JSON value as MessagePack: integers stay integers, objects become string-keyed maps.
pub fn json_to_value(v: &Value) -> Mp {
    match v {
        Value::Null => Mp::Nil,
        Value::Bool(b) => Mp::Boolean(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Mp::from(u)
            } else if let Some(i) = n.as_i64() {
                Mp::from(i)
            } else {
                Mp::F64(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => Mp::from(s.as_str()),
        Value::Array(a) => Mp::Array(a.iter().map(json_to_value).collect()),
        Value::Object(o) => Mp::Map(
            o.iter()
                .map(|(k, v)| (Mp::from(k.as_str()), json_to_value(v)))
                .collect(),
        ),
    }
}

/// A MessagePack value as JSON: binary → base64 string, non-string map keys → their JSON
/// text, NaN/infinite floats and extension values → `null`, invalid UTF-8 → lossy text.
pub fn value_to_json(v: Mp) -> Value {
    use base64::Engine;
    match v {
        Mp::Nil | Mp::Ext(..) => Value::Null,
        Mp::Boolean(b) => Value::Bool(b),
        Mp::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => Value::from(u),
            (None, Some(s)) => Value::from(s),
            (None, None) => Value::Null,
        },
        Mp::F32(f) => float(f64::from(f)),
        Mp::F64(f) => float(f),
        Mp::String(s) => Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Mp::Binary(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Mp::Array(a) => Value::Array(a.into_iter().map(value_to_json).collect()),
        Mp::Map(entries) => Value::Object(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Mp::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                        other => value_to_json(other).to_string(),
                    };
                    (key, value_to_json(v))
                })
                .collect(),
        ),
    }
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn exact_bytes() {
        assert_eq!(encode(&HubMessage::Ping).unwrap(), vec![0x02, 0x91, 0x06]);
        // [1, {}, nil, "a", [1], []]
        assert_eq!(
            encode(&HubMessage::invocation("a", vec![json!(1)])).unwrap(),
            vec![0x09, 0x96, 0x01, 0x80, 0xc0, 0xa1, b'a', 0x91, 0x01, 0x90]
        );
        // [7, nil, true]
        assert_eq!(
            encode(&HubMessage::Close {
                error: None,
                allow_reconnect: true
            })
            .unwrap(),
            vec![0x04, 0x93, 0x07, 0xc0, 0xc3]
        );
        // [3, {}, "1", 2]
        assert_eq!(
            encode(&HubMessage::Completion {
                headers: Headers::new(),
                invocation_id: "1".into(),
                result: CompletionResult::Void
            })
            .unwrap(),
            vec![0x06, 0x94, 0x03, 0x80, 0xa1, b'1', 0x02]
        );
    }

    #[test]
    fn varint() {
        for n in [0u64, 1, 127, 128, 300, 16_384, MAX_LENGTH] {
            let mut out = Vec::new();
            write_varint(&mut out, n);
            assert_eq!(read_varint(&out).unwrap(), Some((n, out.len())));
        }
        let mut out = Vec::new();
        write_varint(&mut out, 300);
        assert_eq!(out, vec![0xac, 0x02]);
        assert_eq!(read_varint(&[0x80]).unwrap(), None);
        assert!(read_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
        assert!(read_varint(&[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }

    #[test]
    fn round_trip_in_one_frame() {
        let mut headers = Headers::new();
        headers.insert("k".into(), "v".into());
        let messages = vec![
            HubMessage::invocation(
                "t",
                vec![
                    json!("s"),
                    json!(-3),
                    json!(1.5),
                    json!({"a": [null, true]}),
                ],
            ),
            HubMessage::Invocation {
                headers: headers.clone(),
                invocation_id: Some("9".into()),
                target: "t".into(),
                arguments: vec![],
                stream_ids: vec!["x".into()],
            },
            HubMessage::StreamItem {
                headers: Headers::new(),
                invocation_id: "1".into(),
                item: json!([1, 2]),
            },
            HubMessage::Completion {
                headers: Headers::new(),
                invocation_id: "1".into(),
                result: CompletionResult::Value(json!("r")),
            },
            HubMessage::completion_error("2", "bad"),
            HubMessage::StreamInvocation {
                headers,
                invocation_id: "3".into(),
                target: "s".into(),
                arguments: vec![json!(5)],
                stream_ids: vec![],
            },
            HubMessage::CancelInvocation {
                headers: Headers::new(),
                invocation_id: "3".into(),
            },
            HubMessage::Ping,
            HubMessage::Close {
                error: Some("e".into()),
                allow_reconnect: false,
            },
            HubMessage::Ack { sequence_id: 5 },
            HubMessage::Sequence {
                sequence_id: u64::MAX,
            },
        ];
        let mut frame = Vec::new();
        for m in &messages {
            frame.extend(encode(m).unwrap());
        }
        assert_eq!(decode_frame(&frame).unwrap(), messages);
    }

    #[test]
    fn lenient_shapes() {
        // Older clients omit streamIds; unknown types are skipped; Close without allowReconnect.
        let mut frame = vec![0x07, 0x95, 0x01, 0x80, 0xc0, 0xa1, b'a', 0x90];
        frame.extend([0x02, 0x91, 0x63]);
        frame.extend([0x03, 0x92, 0x07, 0xc0]);
        assert_eq!(
            decode_frame(&frame).unwrap(),
            vec![
                HubMessage::invocation("a", vec![]),
                HubMessage::Close {
                    error: None,
                    allow_reconnect: false
                }
            ]
        );
        // Binary arguments become base64 strings.
        let frame = [
            0x0b, 0x96, 0x01, 0x80, 0xc0, 0xa1, b'a', 0x91, 0xc4, 0x01, 0xff, 0x90,
        ];
        assert_eq!(
            decode_frame(&frame).unwrap(),
            vec![HubMessage::invocation("a", vec![json!("/w==")])]
        );
    }

    #[test]
    fn malformed_input_is_an_error() {
        let cases: &[&[u8]] = &[
            &[0x02, 0x91],                               // truncated body
            &[0x80],                                     // truncated varint
            &[0x00],                                     // empty body
            &[0x01, 0x06],                               // not an array
            &[0x01, 0x90],                               // empty array
            &[0x02, 0x91, 0xa1],                         // type is a string (and truncated)
            &[0x03, 0x91, 0x06, 0x06],                   // trailing data inside the body
            &[0x03, 0x92, 0x08, 0xff],                   // negative sequence id
            &[0x02, 0x91, 0x01],                         // invocation without fields
            &[0x05, 0x94, 0x03, 0x80, 0xa1, b'1', 0x09], // bad result kind (truncated)
            &[0x05, 0x94, 0x03, 0x80, 0xa1, b'1'],       // missing result kind
            &[0x03, 0x92, 0x07, 0x05],                   // close with error = int
            &[0x02, 0xdd, 0xff],                         // array32 header cut short
            &[0x06, 0xdd, 0xff, 0xff, 0xff, 0xff, 0x06], // huge array claim
            &[0xff, 0xff, 0xff, 0xff, 0x7f],             // over 2 GB
        ];
        for case in cases {
            assert!(decode_frame(case).is_err(), "{case:02x?}");
        }
        // Deep nesting is refused by the depth limit.
        let mut body = vec![0x92, 0x06];
        body.extend(std::iter::repeat_n(0x91u8, 10_000));
        body.push(0xc0);
        let mut frame = Vec::new();
        write_varint(&mut frame, body.len() as u64);
        frame.extend(body);
        assert!(decode_frame(&frame).is_err());
    }
}
