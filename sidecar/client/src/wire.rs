//! What travels between the API functions and the sidecar.
//!
//! A run request is binary, because SGT clients send 1024 x 2048 numbers: a little-endian u32
//! header length, the JSON [`RunHeader`], then the rows as little-endian f32. The response is
//! the outputs as little-endian f32.

use serde::{Deserialize, Serialize};

/// The model types the platform serves; the first is the default.
pub const MODEL_TYPES: &[&str] = &["std"];

/// Header carrying the shared secret on every sidecar request but `/health`.
pub const SECRET_HEADER: &str = "x-maas-sidecar-secret";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CheckpointRef {
    pub blob: String,
    pub version: u64,
}

/// Everything the sidecar needs to find or build a model's weights.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelRef {
    pub model_id: String,
    pub model_type: String,
    pub in_size: u32,
    pub out_size: u32,
    pub seed: u64,
    pub checkpoint: Option<CheckpointRef>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunHeader {
    pub model: ModelRef,
    pub rows: u32,
}

pub fn encode_run(header: &RunHeader, rows: &[f32]) -> Vec<u8> {
    let json = serde_json::to_vec(header).expect("header serialises");
    let mut out = Vec::with_capacity(4 + json.len() + rows.len() * 4);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend(rows.iter().flat_map(|v| v.to_le_bytes()));
    out
}

/// Splits a run request into its header and rows, checking that the sizes agree.
pub fn decode_run(body: &[u8]) -> Result<(RunHeader, Vec<f32>), String> {
    let len_bytes: [u8; 4] = body
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or("truncated header length")?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    let json = body.get(4..4 + len).ok_or("truncated header")?;
    let header: RunHeader = serde_json::from_slice(json).map_err(|e| format!("bad header: {e}"))?;
    let rows = decode_f32(&body[4 + len..])?;
    let expected = header.rows as usize * header.model.in_size as usize;
    if rows.len() != expected {
        return Err(format!("expected {expected} values, got {}", rows.len()));
    }
    Ok((header, rows))
}

pub fn encode_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub fn decode_f32(bytes: &[u8]) -> Result<Vec<f32>, String> {
    if !bytes.len().is_multiple_of(4) {
        return Err("f32 payload is not a multiple of 4 bytes".into());
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Generation events from a body of one JSON event a line, as they arrive. A broken
/// connection or a garbled line ends the stream with `Failed`.
pub fn event_lines<S, E>(body: S) -> crate::EventStream
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
    E: std::fmt::Display,
{
    use futures::StreamExt;
    let state = (Box::pin(body), Vec::<u8>::new(), false);
    futures::stream::unfold(state, |(mut body, mut buf, mut ended)| async move {
        loop {
            if ended {
                return None;
            }
            if let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let event = serde_json::from_slice::<crate::llm::GenerateEvent>(&line[..nl]).unwrap_or_else(|e| {
                    crate::llm::GenerateEvent::Failed {
                        message: format!("bad event from the sidecar: {e}"),
                    }
                });
                ended = !matches!(event, crate::llm::GenerateEvent::Token { .. });
                return Some((event, (body, buf, ended)));
            }
            match body.next().await {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    let failed = crate::llm::GenerateEvent::Failed {
                        message: format!("the sidecar connection broke: {e}"),
                    };
                    return Some((failed, (body, buf, true)));
                }
                None => {
                    let failed = crate::llm::GenerateEvent::Failed {
                        message: "the sidecar ended the stream early".into(),
                    };
                    return Some((failed, (body, buf, true)));
                }
            }
        }
    })
    .boxed()
}

/// One event as a line of the generate stream.
pub fn event_line(event: &crate::llm::GenerateEvent) -> Vec<u8> {
    let mut line = serde_json::to_vec(event).expect("events serialise");
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(rows: u32) -> RunHeader {
        RunHeader {
            model: ModelRef {
                model_id: "m".into(),
                model_type: "std".into(),
                in_size: 3,
                out_size: 1,
                seed: 7,
                checkpoint: Some(CheckpointRef {
                    blob: "b".into(),
                    version: 2,
                }),
            },
            rows,
        }
    }

    #[test]
    fn a_run_request_round_trips() {
        let rows = [1.0, -2.5, 3.25, 0.0, f32::MIN_POSITIVE, 1e30];
        let (h, r) = decode_run(&encode_run(&header(2), &rows)).unwrap();
        assert_eq!(h, header(2));
        assert_eq!(r, rows);
    }

    #[test]
    fn mismatched_or_truncated_requests_are_refused() {
        assert!(decode_run(&encode_run(&header(3), &[1.0; 6])).is_err());
        assert!(decode_run(&[1, 0]).is_err());
        assert!(decode_run(&[200, 0, 0, 0, b'{']).is_err());
        assert!(decode_f32(&[0, 0, 0]).is_err());
    }

    #[tokio::test]
    async fn events_split_anywhere_across_chunks_come_out_whole_and_a_cut_stream_fails() {
        use crate::llm::{FinishReason, GenerateEvent};
        use futures::StreamExt;
        let events = vec![
            GenerateEvent::Token {
                text: "Pa".into(),
                logprob: None,
                top_logprobs: vec![],
            },
            GenerateEvent::Token {
                text: "ris ✓".into(),
                logprob: None,
                top_logprobs: vec![],
            },
            GenerateEvent::Done {
                finish_reason: FinishReason::Stop,
                prompt_tokens: 3,
                completion_tokens: 2,
                time_to_first_token_ms: 1.0,
            },
        ];
        let bytes: Vec<u8> = events.iter().flat_map(super::event_line).collect();
        for cut in [1, 7, 13] {
            let chunks: Vec<Result<bytes::Bytes, String>> = bytes
                .chunks(cut)
                .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
                .collect();
            let got: Vec<_> = super::event_lines(futures::stream::iter(chunks)).collect().await;
            assert_eq!(got, events, "chunks of {cut}");
        }
        let cut_short = vec![Ok::<_, String>(bytes::Bytes::copy_from_slice(&bytes[..20]))];
        let got: Vec<_> = super::event_lines(futures::stream::iter(cut_short)).collect().await;
        assert!(matches!(got.last(), Some(GenerateEvent::Failed { .. })), "{got:?}");
    }
}
