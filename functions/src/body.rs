//! Reading request bodies under a per-router limit and a memory budget all bodies share. An
//! oversized body is still read, and dropped, up to a bound before the error is answered: a
//! server that answers and closes while the client is still sending makes most clients report a
//! reset connection instead of the error (what nginx's lingering close avoids).

use std::sync::Arc;

use axum::extract::Request;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The most a request body may be; set on each router by its layers.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

/// The bytes that all bodies, while read and while handled, may hold together; one budget is
/// shared by every route of a router. Without it, memory grew with every connection sending a
/// large body. A body's bytes hold their share until the last copy of them is dropped.
#[derive(Clone, Debug)]
pub struct BodyBudget(Arc<Semaphore>);

/// What a request refused for [`BodyError::Busy`] is told.
pub const BUSY: &str = "the server is holding as many request bodies as it can; retry in a moment";

/// How many bodies of the largest size the budget holds at once.
pub const BODIES_IN_MEMORY: usize = 8;

/// The first bytes of every body, taken from no budget, so that a crowd of large uploads never
/// stops the small requests (signing in, listing models) from being read.
const FREE_BYTES: usize = 64 << 10;

impl BodyBudget {
    /// Room for [`BODIES_IN_MEMORY`] bodies of `body_limit` bytes.
    pub fn for_limit(body_limit: usize) -> Self {
        Self::bytes(body_limit.saturating_mul(BODIES_IN_MEMORY))
    }

    /// Room for `n` bytes past each body's free ones.
    pub fn bytes(n: usize) -> Self {
        BodyBudget(Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS))))
    }

    /// Grows `held` to cover a body of `seen` bytes, or `Err(Busy)` when the budget is spent.
    fn cover(&self, held: &mut Option<OwnedSemaphorePermit>, seen: usize) -> Result<(), BodyError> {
        let have = held.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
        let want = seen.saturating_sub(FREE_BYTES).saturating_sub(have);
        if want == 0 {
            return Ok(());
        }
        let more = u32::try_from(want)
            .ok()
            .and_then(|n| self.0.clone().try_acquire_many_owned(n).ok())
            .ok_or(BodyError::Busy)?;
        match held {
            Some(permit) => permit.merge(more),
            None => *held = Some(more),
        }
        Ok(())
    }
}

/// A body's share of the [`BodyBudget`]: hold it as long as the body's bytes.
#[derive(Debug)]
pub struct Share {
    _permit: Option<OwnedSemaphorePermit>,
}

/// Where a body's frames go as they arrive, once the limit and the budget allow them.
pub trait Sink {
    fn take(&mut self, frame: Bytes);
}

impl Sink for BytesMut {
    fn take(&mut self, frame: Bytes) {
        self.extend_from_slice(&frame);
    }
}

/// A body's bytes with the share of the budget they hold.
struct Held {
    bytes: BytesMut,
    _share: Share,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// How far past the limit an oversized body is still drained before answering.
const DRAIN_PAST_LIMIT: usize = 16 << 20;

#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    Unreadable,
    /// The bodies already held use the whole [`BodyBudget`].
    Busy,
}

fn declared_length(req: &Request) -> Option<usize> {
    req.headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The whole body, or why not. Without a [`BodyLimit`] and a [`BodyBudget`] on the router
/// nothing is accepted.
pub async fn read(req: Request) -> Result<Bytes, BodyError> {
    let (bytes, share) = read_into(req, BytesMut::with_capacity).await?;
    Ok(Bytes::from_owner(Held { bytes, _share: share }))
}

/// The body's frames given to the sink that `sink` makes for the length the body declares (0
/// when it does not), with the body's share of the budget; or why not. The budget is taken as
/// the bytes arrive, not as declared: a client that declares a large body and sends it slowly
/// holds only what it has sent.
pub async fn read_into<S: Sink>(req: Request, sink: impl FnOnce(usize) -> S) -> Result<(S, Share), BodyError> {
    let limit = req.extensions().get::<BodyLimit>().map_or(0, |l| l.0);
    let budget = req
        .extensions()
        .get::<BodyBudget>()
        .cloned()
        .ok_or(BodyError::TooLarge)?;
    let drain_to = limit.saturating_add(DRAIN_PAST_LIMIT);
    let declared = declared_length(&req);
    // Too large to be worth draining: answer at once.
    if declared.is_some_and(|n| n > drain_to) {
        return Err(BodyError::TooLarge);
    }
    let mut body = req.into_body();
    // Sized once from the declared length: pages the body never reaches are never touched.
    let mut sink = Ok(sink(declared.unwrap_or(0).min(limit)));
    let (mut seen, mut share) = (0usize, None);
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| BodyError::Unreadable)?.into_data() else {
            continue; // trailers
        };
        seen = seen.saturating_add(data.len());
        if let Ok(kept) = &mut sink {
            let room = if seen > limit {
                Err(BodyError::TooLarge)
            } else {
                budget.cover(&mut share, seen)
            };
            match room {
                Ok(()) => {
                    kept.take(data);
                    continue;
                }
                // Drained, not kept, so the client still reads the answer.
                Err(e) => (sink, share) = (Err(e), None),
            }
        }
        if seen > drain_to {
            break;
        }
    }
    Ok((sink?, Share { _permit: share }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn request(body: impl Into<Body>, limit: usize) -> Request {
        budgeted(body, limit, &BodyBudget::for_limit(limit))
    }

    fn budgeted(body: impl Into<Body>, limit: usize, budget: &BodyBudget) -> Request {
        let mut req = Request::new(body.into());
        req.extensions_mut().insert(BodyLimit(limit));
        req.extensions_mut().insert(budget.clone());
        req
    }

    #[tokio::test]
    async fn bodies_past_the_shared_budget_are_refused_as_busy_until_held_bytes_are_dropped() {
        let budget = BodyBudget::bytes(100 << 10);
        let big = || vec![b'x'; FREE_BYTES + (80 << 10)];
        let first = read(budgeted(big(), 1 << 20, &budget)).await.unwrap();
        let copy = first.slice(10..);
        assert_eq!(read(budgeted(big(), 1 << 20, &budget)).await, Err(BodyError::Busy));
        // Bodies within the free bytes are read whatever the budget holds.
        let small = vec![b'y'; FREE_BYTES];
        assert_eq!(read(budgeted(small.clone(), 1 << 20, &budget)).await.unwrap(), small);
        // The share is held while any copy of the bytes lives.
        drop(first);
        assert_eq!(read(budgeted(big(), 1 << 20, &budget)).await, Err(BodyError::Busy));
        drop(copy);
        let held = read(budgeted(big(), 1 << 20, &budget)).await.unwrap();
        // A body refused part-way gives back the share its first frames took (40 of the 100 KiB
        // budget, beside the 80 `held` has): another 20 KiB fit afterwards.
        let frames = [vec![b'z'; FREE_BYTES], vec![b'z'; 10 << 10], vec![b'z'; 20 << 10]];
        let stream = futures::stream::iter(frames.map(Ok::<_, std::convert::Infallible>));
        assert_eq!(
            read(budgeted(Body::from_stream(stream), 1 << 20, &budget)).await,
            Err(BodyError::Busy)
        );
        let fits = vec![b'w'; FREE_BYTES + (20 << 10)];
        assert_eq!(
            read(budgeted(fits, 1 << 20, &budget)).await.unwrap().len(),
            FREE_BYTES + (20 << 10)
        );
        drop(held);
    }

    #[tokio::test]
    async fn bodies_up_to_the_limit_are_read_whole_and_larger_ones_refused() {
        assert_eq!(read(request("12345", 5)).await.unwrap(), "12345");
        assert_eq!(read(request("123456", 5)).await, Err(BodyError::TooLarge));
        let huge = vec![b'x'; DRAIN_PAST_LIMIT + 10];
        assert_eq!(read(request(huge, 5)).await, Err(BodyError::TooLarge));
        assert_eq!(read(Request::new(Body::from("x"))).await, Err(BodyError::TooLarge));
        let mut unbudgeted = Request::new(Body::from("x"));
        unbudgeted.extensions_mut().insert(BodyLimit(5));
        assert_eq!(read(unbudgeted).await, Err(BodyError::TooLarge));
    }

    #[tokio::test]
    async fn a_declared_length_far_past_the_limit_is_refused_without_reading() {
        let mut req = request(Body::empty(), 5);
        req.headers_mut()
            .insert(http::header::CONTENT_LENGTH, (DRAIN_PAST_LIMIT + 100).into());
        assert_eq!(read(req).await, Err(BodyError::TooLarge));
    }
}
