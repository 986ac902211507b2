//! A selected series' samples as one selector reads them while evaluation
//! moves forward in time: decoded samples are read in place; chunks are
//! decoded into a buffer as the windows reach them, and dropped a chunk at a
//! time once the windows have passed them. A query's memory is then the
//! chunks it selected plus, per series and selector, about one window and
//! one chunk of decoded samples.
//!
//! Windows move back only inside subqueries (each outer step evaluates its
//! inner steps again from an earlier time); a selector under subqueries
//! keeps their span of samples behind its window (`keep_ms`), and a window
//! that still reaches before what is kept starts the buffer again there.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::EngineError;
use sluice_block::XorDecoder;

use crate::storage::{FloatChunks, SeriesSamples};

pub(crate) struct SeriesCursor {
    source: Source,
    /// The samples read: all of a decoded series, or the decoded samples
    /// of chunks `first..next`. Windows handed out share it; it is changed
    /// in place when they are gone (as they are, between steps).
    buffer: Arc<Vec<(i64, f64)>>,
    first: usize,
    next: usize,
    /// Where the samples of each chunk in `first..next` end in `buffer`.
    ends: VecDeque<usize>,
    /// Where the last searches for a window's end and start landed.
    end_hint: usize,
    start_hint: usize,
    keep_ms: i64,
    /// Where decoding the last chunk held (`next - 1`) stopped, when it
    /// stopped before the chunk's end: a window that ends inside a chunk
    /// (an instant query's) need not decode the rest of it.
    partial: Option<XorDecoder>,
    /// The time of the last sample that decoding reached.
    reached: i64,
}

enum Source {
    Decoded,
    Chunks(Arc<FloatChunks>),
}

impl SeriesCursor {
    pub(crate) fn new(samples: SeriesSamples, keep_ms: i64) -> SeriesCursor {
        let (source, buffer) = match samples {
            SeriesSamples::Decoded(decoded) => (Source::Decoded, decoded),
            SeriesSamples::Chunks(chunks) => (Source::Chunks(chunks), Arc::default()),
        };
        SeriesCursor {
            source,
            buffer,
            first: 0,
            next: 0,
            ends: VecDeque::new(),
            end_hint: 0,
            start_hint: 0,
            keep_ms: keep_ms.max(0),
            partial: None,
            reached: i64::MIN,
        }
    }

    /// The samples read so far (see [`SeriesCursor::load`]).
    pub(crate) fn samples(&self) -> &[(i64, f64)] {
        &self.buffer
    }

    /// The same samples, to share with a window handed out.
    pub(crate) fn shared(&self) -> &Arc<Vec<(i64, f64)>> {
        &self.buffer
    }

    /// Makes [`SeriesCursor::samples`] hold every sample in `[from, to]`.
    pub(crate) fn load(&mut self, from: i64, to: i64) -> Result<(), EngineError> {
        let Source::Chunks(chunks) = &self.source else {
            return Ok(());
        };
        // Most calls (one a series a step) find what they need held already.
        let list = &chunks.chunks;
        let floor = from.saturating_sub(self.keep_ms);
        let held_from = list
            .get(self.first)
            .map_or(i64::MAX, |chunk| chunk.min_time);
        let back = from < held_from && self.first > 0 && list[self.first - 1].max_time >= from;
        let ahead = match self.partial {
            Some(_) => to > self.reached,
            None => list
                .get(self.next)
                .is_some_and(|chunk| chunk.min_time <= to),
        };
        let passed = match list.get(self.first) {
            Some(first) if self.first < self.next => first.max_time < floor,
            _ => list
                .get(self.next)
                .is_some_and(|next| next.max_time < floor),
        };
        if back || ahead || passed {
            self.reload(from, to)?;
        }
        Ok(())
    }

    fn reload(&mut self, from: i64, to: i64) -> Result<(), EngineError> {
        let Source::Chunks(chunks) = &self.source else {
            return Ok(());
        };
        let chunks = Arc::clone(chunks);
        let list = &chunks.chunks;
        let floor = from.saturating_sub(self.keep_ms);
        let held_from = list
            .get(self.first)
            .map_or(i64::MAX, |chunk| chunk.min_time);
        if from < held_from && self.first > 0 && list[self.first - 1].max_time >= from {
            // Back before what is held: start again from there.
            self.restart(list.partition_point(|chunk| chunk.max_time < floor));
        }
        // Chunks wholly before what the windows may still read go; `ends`
        // counts from the buffer's start, so the last one popped says how
        // many samples went with them.
        let mut dropped = 0;
        while self.first < self.next && list[self.first].max_time < floor {
            dropped = self.ends.pop_front().unwrap_or(dropped);
            self.first += 1;
        }
        if self.first == self.next {
            let skip_to = list.partition_point(|chunk| chunk.max_time < floor);
            self.restart(skip_to.max(self.next));
        } else if dropped > 0 {
            self.drop_front(dropped);
        }
        if let Some(decoder) = &mut self.partial
            && to > self.reached
        {
            // Windows that come back for more are moving forward through
            // the chunk, a step at a time: decode the rest of it at once.
            let buffer = Arc::make_mut(&mut self.buffer);
            list[self.next - 1].decode_until(decoder, &chunks.deleted, i64::MAX, buffer)?;
            if let Some(last) = self.ends.back_mut() {
                *last = buffer.len();
            }
            self.reached = decoder.last_time().unwrap_or(i64::MIN);
            if decoder.finished() {
                self.partial = None;
            }
        }
        while self.partial.is_none() && self.next < list.len() && list[self.next].min_time <= to {
            let chunk = &list[self.next];
            let mut decoder = chunk.decoder()?;
            let buffer = Arc::make_mut(&mut self.buffer);
            chunk.decode_until(&mut decoder, &chunks.deleted, to, buffer)?;
            self.ends.push_back(buffer.len());
            self.next += 1;
            self.reached = decoder.last_time().unwrap_or(i64::MIN);
            if !decoder.finished() {
                self.partial = Some(decoder);
            }
        }
        Ok(())
    }

    /// Empties the buffer, to fill it from chunk `chunk` on.
    fn restart(&mut self, chunk: usize) {
        Arc::make_mut(&mut self.buffer).clear();
        self.ends.clear();
        self.first = chunk;
        self.next = chunk;
        self.end_hint = 0;
        self.start_hint = 0;
        self.partial = None;
    }

    /// Removes the first `count` samples, moving what remains down.
    fn drop_front(&mut self, count: usize) {
        Arc::make_mut(&mut self.buffer).drain(..count);
        for end in &mut self.ends {
            *end -= count;
        }
        self.end_hint = self.end_hint.saturating_sub(count);
        self.start_hint = self.start_hint.saturating_sub(count);
    }

    /// How many samples are at or before `bound`.
    pub(crate) fn count_through(&mut self, bound: i64) -> usize {
        seek(&self.buffer, &mut self.end_hint, bound)
    }

    /// How many samples are at or before `bound`, for window starts.
    pub(crate) fn count_through_start(&mut self, bound: i64) -> usize {
        seek(&self.buffer, &mut self.start_hint, bound)
    }
}

/// `samples.partition_point(|s| s.0 <= bound)`, found by galloping from
/// `hint` (or, for a fresh one, from a guess interpolated from the
/// series' time span), and left in `hint` for the next step. Both keep the
/// number of cache-missing probes small: steps move forward a little at a
/// time, and samples are usually evenly spaced.
pub(crate) fn seek(samples: &[(i64, f64)], hint: &mut usize, bound: i64) -> usize {
    let len = samples.len();
    let start = match *hint {
        0 => interpolate(samples, bound),
        previous => previous.min(len),
    };
    let answer = if start > 0 && samples[start - 1].0 > bound {
        // The answer lies before the start: gallop backwards. Invariant:
        // the answer is at most `high` and samples[high] is past the bound.
        let mut high = start - 1;
        let mut width = 1;
        loop {
            let low = high.saturating_sub(width);
            if low == 0 || samples[low - 1].0 <= bound {
                break low + samples[low..high].partition_point(|(t, _)| *t <= bound);
            }
            high = low - 1;
            width *= 2;
        }
    } else {
        // The answer is at or after the start: gallop forwards.
        let mut low = start;
        let mut width = 1;
        loop {
            let probe = low + width;
            if probe > len || samples[probe - 1].0 > bound {
                let high = probe.min(len);
                break low + samples[low..high].partition_point(|(t, _)| *t <= bound);
            }
            low = probe;
            width *= 2;
        }
    };
    *hint = answer;
    answer
}

/// Where `bound` would fall if the samples were evenly spaced in time.
fn interpolate(samples: &[(i64, f64)], bound: i64) -> usize {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return 0;
    };
    if bound < first.0 {
        return 0;
    }
    if bound >= last.0 || last.0 == first.0 {
        return samples.len();
    }
    let fraction = (bound - first.0) as f64 / (last.0 - first.0) as f64;
    ((fraction * (samples.len() - 1) as f64) as usize + 1).min(samples.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seek_matches_partition_point_in_any_order() {
        let samples: Vec<(i64, f64)> = (0..100).map(|i| (i * 10, 0.0)).collect();
        let mut hint = 0;
        for bound in [-5, 0, 5, 15, 995, 2000, 500, 499, 10, 990, 991, 3, 700] {
            let expected = samples.partition_point(|(t, _)| *t <= bound);
            assert_eq!(seek(&samples, &mut hint, bound), expected, "bound {bound}");
        }
        let uneven: Vec<(i64, f64)> = [0, 1, 2, 3, 500, 501, 502, 990]
            .iter()
            .map(|t| (*t, 0.0))
            .collect();
        for start in 0..=uneven.len() {
            for bound in -1..=1000 {
                let mut hint = start;
                let expected = uneven.partition_point(|(t, _)| *t <= bound);
                assert_eq!(
                    seek(&uneven, &mut hint, bound),
                    expected,
                    "start {start} bound {bound}"
                );
            }
        }
    }
}
