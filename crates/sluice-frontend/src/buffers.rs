//! Reused buffers for response bodies that are sent once and dropped.
//!
//! A range moved forward, asked for with gzip, is answered by splicing
//! kept deflate segments into one body of a few hundred kilobytes, sent
//! once. (Its JSON form goes out as the fragments' own buffers, see
//! `chunks`; deflate segments are about a kilobyte each, and sent as
//! hundreds of buffers they did no better than the copy.) A fresh
//! allocation of that size is fresh memory: the allocator hands back
//! pages freed since the last refresh to the kernel within milliseconds,
//! and a dashboard refreshes every few minutes, so each body's first write
//! faulted its pages in again. On the virtual machines we measured, that
//! cost about 0.15 ms per answer with 4 KiB pages, and a 0.5 ms stall
//! whenever a 2 MiB transparent huge page was zeroed, against 0.08 ms for
//! the copy itself.
//! A buffer that goes back to a small pool when its body has been sent
//! keeps its pages, as Prometheus's and Mimir's byte pools do.

use std::sync::Mutex;

use bytes::Bytes;

/// Buffers larger than this are not kept: one huge answer must not pin
/// its memory for good.
const MAX_KEPT_CAPACITY: usize = 8 << 20;

/// Buffers kept at most: enough for the bodies of the refreshes in flight
/// at once on a small frontend; more are allocated as needed.
const MAX_KEPT_BUFFERS: usize = 8;

/// Free buffers, taken by [`BufferPool::take`] and given back when a body
/// made by [`BufferPool::body`] is dropped.
pub(crate) struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
}

/// The pool of response bodies assembled from kept fragments.
pub(crate) static BODIES: BufferPool = BufferPool::new();

impl BufferPool {
    pub(crate) const fn new() -> BufferPool {
        BufferPool {
            free: Mutex::new(Vec::new()),
        }
    }

    /// A body written by `write` into a buffer from this pool (empty; the
    /// writer reserves what it needs), which comes back here when the last
    /// handle on the body is dropped, once it has been sent.
    pub(crate) fn written(&'static self, write: impl FnOnce(Vec<u8>) -> Vec<u8>) -> Bytes {
        self.body(write(self.take()))
    }

    /// An empty buffer, reused when one is free.
    fn take(&self) -> Vec<u8> {
        self.free
            .lock()
            .expect("buffer pool lock")
            .pop()
            .unwrap_or_default()
    }

    /// `buffer` as a body; its memory comes back here when the last handle
    /// on the body is dropped.
    fn body(&'static self, buffer: Vec<u8>) -> Bytes {
        Bytes::from_owner(Returned { buffer, pool: self })
    }

    fn give_back(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() > MAX_KEPT_CAPACITY {
            return;
        }
        buffer.clear();
        let mut free = self.free.lock().expect("buffer pool lock");
        if free.len() < MAX_KEPT_BUFFERS {
            free.push(buffer);
        }
    }
}

/// Owns a pooled buffer while it is a body.
struct Returned {
    buffer: Vec<u8>,
    pool: &'static BufferPool,
}

impl AsRef<[u8]> for Returned {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Returned {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buffer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(pool: &BufferPool) -> Vec<(usize, *const u8)> {
        let free = pool.free.lock().expect("buffer pool lock");
        free.iter()
            .map(|buffer| (buffer.capacity(), buffer.as_ptr()))
            .collect()
    }

    #[test]
    fn a_body_returns_its_memory_once_every_handle_is_dropped() {
        static POOL: BufferPool = BufferPool::new();
        let mut buffer = POOL.take();
        buffer.reserve(1000);
        buffer.extend_from_slice(b"first body");
        let address = buffer.as_ptr();
        let body = POOL.body(buffer);
        assert_eq!(&body[..], b"first body");
        let sent = body.clone();
        drop(body);
        assert!(kept(&POOL).is_empty(), "a clone still holds the body");
        drop(sent);
        assert_eq!(kept(&POOL).len(), 1);
        let reused = POOL.take();
        assert_eq!(reused.as_ptr(), address, "the same memory, reused");
        assert!(reused.is_empty() && reused.capacity() >= 1000);
        assert!(kept(&POOL).is_empty());
    }

    #[test]
    fn huge_buffers_and_buffers_beyond_the_bound_are_freed() {
        static POOL: BufferPool = BufferPool::new();
        let mut huge = POOL.take();
        huge.reserve(MAX_KEPT_CAPACITY + 1);
        huge.push(1);
        drop(POOL.body(huge));
        assert!(kept(&POOL).is_empty());
        let bodies: Vec<Bytes> = (0..MAX_KEPT_BUFFERS + 3)
            .map(|_| POOL.body(vec![0; 64]))
            .collect();
        drop(bodies);
        assert_eq!(kept(&POOL).len(), MAX_KEPT_BUFFERS);
    }
}
