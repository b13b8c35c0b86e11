//! Reading request bodies under a per-router limit. An oversized body is still read, and
//! dropped, up to a bound before the error is answered: a server that answers and closes while
//! the client is still sending makes most clients report a reset connection instead of the
//! error (what nginx's lingering close avoids).

use axum::extract::Request;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

/// The most a request body may be; set on each router by its layers.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

/// How far past the limit an oversized body is still drained before answering.
const DRAIN_PAST_LIMIT: usize = 16 << 20;

#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    Unreadable,
}

fn declared_length(req: &Request) -> Option<usize> {
    req.headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The whole body, or why not. Without a [`BodyLimit`] on the router nothing is accepted.
pub async fn read(req: Request) -> Result<Bytes, BodyError> {
    let limit = req.extensions().get::<BodyLimit>().map_or(0, |l| l.0);
    let drain_to = limit.saturating_add(DRAIN_PAST_LIMIT);
    let declared = declared_length(&req);
    // Too large to be worth draining: answer at once.
    if declared.is_some_and(|n| n > drain_to) {
        return Err(BodyError::TooLarge);
    }
    let mut body = req.into_body();
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| BodyError::Unreadable)?.into_data() else {
            continue; // trailers
        };
        seen = seen.saturating_add(data.len());
        if seen <= limit {
            buf.extend_from_slice(&data);
        } else if seen > drain_to {
            break;
        }
    }
    if seen > limit {
        Err(BodyError::TooLarge)
    } else {
        Ok(buf.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn request(body: impl Into<Body>, limit: usize) -> Request {
        let mut req = Request::new(body.into());
        req.extensions_mut().insert(BodyLimit(limit));
        req
    }

    #[tokio::test]
    async fn bodies_up_to_the_limit_are_read_whole_and_larger_ones_refused() {
        assert_eq!(read(request("12345", 5)).await.unwrap(), "12345");
        assert_eq!(read(request("123456", 5)).await, Err(BodyError::TooLarge));
        let huge = vec![b'x'; DRAIN_PAST_LIMIT + 10];
        assert_eq!(read(request(huge, 5)).await, Err(BodyError::TooLarge));
        assert_eq!(read(Request::new(Body::from("x"))).await, Err(BodyError::TooLarge));
    }

    #[tokio::test]
    async fn a_declared_length_far_past_the_limit_is_refused_without_reading() {
        let mut req = request(Body::empty(), 5);
        req.headers_mut()
            .insert(http::header::CONTENT_LENGTH, (DRAIN_PAST_LIMIT + 100).into());
        assert_eq!(read(req).await, Err(BodyError::TooLarge));
    }
}
