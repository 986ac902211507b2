//! A response body sent as the buffers it is made of, without joining
//! them into one first.
//!
//! A range answer assembled from kept fragments is a few hundred shared
//! buffers. Joining them before sending copied a week's answer (1.3 MB of
//! JSON) while the client waited, and sent nothing until the copy was
//! done; handed to hyper as they are, they go out in vectored writes, the
//! first while the rest are still queued. The length is known, so the
//! answer still carries a `Content-Length`.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// A body of buffers sent in order.
pub(crate) struct Chunks {
    chunks: std::vec::IntoIter<Bytes>,
    remaining: u64,
}

impl Chunks {
    /// A body of `chunks`, in order (empty ones are left out).
    pub(crate) fn new(mut chunks: Vec<Bytes>) -> Chunks {
        chunks.retain(|chunk| !chunk.is_empty());
        let remaining = chunks.iter().map(|chunk| chunk.len() as u64).sum();
        Chunks {
            chunks: chunks.into_iter(),
            remaining,
        }
    }
}

impl From<Chunks> for axum::body::Body {
    fn from(chunks: Chunks) -> axum::body::Body {
        axum::body::Body::new(chunks)
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        Poll::Ready(this.chunks.next().map(|chunk| {
            this.remaining -= chunk.len() as u64;
            Ok(Frame::data(chunk))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.len() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn the_chunks_arrive_in_order_with_their_exact_length() {
        let mut body = Chunks::new(vec![
            Bytes::from_static(b"{\"a\":"),
            Bytes::new(),
            Bytes::from_static(b"[1,2]"),
            Bytes::from_static(b"}"),
        ]);
        assert_eq!(body.size_hint().exact(), Some(11));
        assert!(!body.is_end_stream());
        let mut frames = 0;
        let mut joined = Vec::new();
        while let Some(frame) = body.frame().await {
            joined.extend_from_slice(&frame.expect("infallible").into_data().expect("data"));
            frames += 1;
            assert_eq!(body.size_hint().exact(), Some(11 - joined.len() as u64));
        }
        assert_eq!(joined, b"{\"a\":[1,2]}");
        assert_eq!(frames, 3, "the empty chunk is left out");
        assert!(body.is_end_stream());
    }
}
