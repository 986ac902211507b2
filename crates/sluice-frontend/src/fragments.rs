//! Encoded fragments of range answers, kept for the next answer that
//! contains the same samples.
//!
//! A dashboard refreshed every few minutes asks for a range moved forward a
//! little: the results cache already spares the backend everything but the
//! new minutes, but a week of samples still had to be written as JSON and
//! compressed again, which cost far more than the new minutes themselves.
//! Here each series' samples are cut at fixed points in time (multiples of
//! `step × POINTS_PER_FRAGMENT`), and every piece that lies wholly inside
//! the answer is kept encoded: as JSON, and as a self-contained deflate
//! segment ending byte-aligned (a sync flush). The next answer containing
//! the same samples splices those bytes in, so only its edges are encoded
//! and compressed afresh.
//!
//! Fragments are found by their samples (a hash of timestamps and value
//! bits, then compared exactly), so a fragment can only ever stand in for
//! exactly the samples it encodes, whatever query or tenant it came from.
//! The memo is bounded by bytes with two generations: when the newer one
//! fills, the older one is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress};
use sluice_api::json::{self, SampleSink};
use sluice_proto::{Label, QueryData};
use zlib_rs::crc32::{crc32, crc32_combine_gen, crc32_combine_op};

/// Samples per fragment at the query's step: about 4 KiB of JSON, so that
/// an edge re-encoded afresh is cheap and a fragment still compresses well.
pub(crate) const POINTS_PER_FRAGMENT: i64 = 128;

/// The deflate level of segments. zlib-rs's level 1 is a quick mode with
/// fixed codes; level 2 is its fast matcher with fitted codes, which made a
/// week-long range answer 30% smaller (257 KB against 364 KB; zlib's level
/// 6 on the whole answer: 222 KB) in about the same time. Segments are
/// made once and sent many times, so size counts.
const SEGMENT_LEVEL: u32 = 2;

/// The level of JSON written for one answer alone (a series' edges): it is
/// sent once, so the quickest mode is the right one.
const FRESH_LEVEL: u32 = 1;

/// Fresh JSON shorter than this goes into the gzip stream uncompressed (a
/// stored block: five bytes and no compressor reset). Between kept
/// fragments, fresh JSON is a series' edges, a few kilobytes each: sent as
/// they are, they cost a few percent of a week-long answer's size, while
/// compressing each (a compressor reset apiece) cost more time than the
/// rest of a moved range's assembly. Longer stretches (series too short
/// for fragments, one after another) are compressed.
const MIN_DEFLATED_LEN: usize = 16 * 1024;

/// One run of samples inside a series, encoded with the comma that
/// separates it from the samples before it (a fragment never starts a
/// series), so consecutive fragments need nothing between them.
pub(crate) struct Fragment {
    timestamps_ms: Box<[i64]>,
    value_bits: Box<[u64]>,
    /// Shared by every answer body that sends it.
    json: Bytes,
    /// The JSON's CRC-32, and the operator that appends it to another
    /// CRC-32 (made once: it depends only on the JSON's length).
    crc: u32,
    crc_append: u32,
    /// Made the first time a client asks for gzip.
    deflate: OnceLock<Vec<u8>>,
    /// The fragment that followed this one in the last answer that had
    /// both. A refreshed range holds the same run of fragments as the
    /// answer before it, so the next one is tried first (checked like any
    /// other), and only the first of a series is looked up by hash. Weak:
    /// the memo alone decides what stays.
    next: Mutex<Weak<Fragment>>,
}

impl Fragment {
    fn new(timestamps_ms: &[i64], values: &[f64]) -> Fragment {
        let mut encoded = Vec::with_capacity(timestamps_ms.len() * 34 + 1);
        encoded.push(b',');
        json::write_samples(&mut encoded, timestamps_ms, values);
        Fragment {
            timestamps_ms: timestamps_ms.into(),
            value_bits: values.iter().map(|value| value.to_bits()).collect(),
            crc: crc32(0, &encoded),
            crc_append: crc32_combine_gen(encoded.len() as u64),
            json: encoded.into(),
            deflate: OnceLock::new(),
            next: Mutex::new(Weak::new()),
        }
    }

    fn holds(&self, timestamps_ms: &[i64], values: &[f64]) -> bool {
        same_samples(&self.timestamps_ms, &self.value_bits, timestamps_ms, values)
    }

    /// What the memo counts for this fragment: its samples, its JSON and
    /// room for its deflate form (about a quarter of the JSON).
    fn counted_len(&self) -> usize {
        self.timestamps_ms.len() * 16 + self.json.len() + self.json.len() / 4 + 64
    }
}

/// Whether samples are exactly those kept as `timestamps_ms` and `bits`.
fn same_samples(kept_ms: &[i64], bits: &[u64], timestamps_ms: &[i64], values: &[f64]) -> bool {
    kept_ms == timestamps_ms && same_bits(bits, values)
}

/// Whether `values` are exactly `bits` (`-0` is not `0`; a NaN is its bits).
/// Every difference is folded in without stopping early, which the
/// compiler turns into wide compares: this runs over every sample an
/// answer takes from the memo.
fn same_bits(bits: &[u64], values: &[f64]) -> bool {
    bits.len() == values.len()
        && bits
            .iter()
            .zip(values)
            .fold(0, |differ, (bits, value)| differ | (bits ^ value.to_bits()))
            == 0
}

/// A hash of samples, for finding fragments (equality is checked after).
fn samples_hash(timestamps_ms: &[i64], values: &[f64]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    // Two independent chains, so the multiplications overlap: this runs
    // over every sample of every answer that uses the memo.
    let (mut times, mut bits) = (timestamps_ms.len() as u64, K);
    for (timestamp_ms, value) in timestamps_ms.iter().zip(values) {
        times = (times.rotate_left(5) ^ *timestamp_ms as u64).wrapping_mul(K);
        bits = (bits.rotate_left(5) ^ value.to_bits()).wrapping_mul(K);
    }
    (times ^ bits.rotate_left(32)).wrapping_mul(K)
}

#[derive(Default)]
struct Generations {
    current: HashMap<u64, Arc<Fragment>>,
    previous: HashMap<u64, Arc<Fragment>>,
    current_bytes: usize,
}

/// The kept fragments, bounded by bytes.
pub(crate) struct FragmentMemo {
    max_bytes: usize,
    state: Mutex<Generations>,
}

impl FragmentMemo {
    pub(crate) fn new(max_bytes: usize) -> FragmentMemo {
        FragmentMemo {
            max_bytes,
            state: Mutex::new(Generations::default()),
        }
    }

    /// The fragment for these samples, and whether it was kept from
    /// before (else it is new, and now kept).
    fn fragment(&self, timestamps_ms: &[i64], values: &[f64]) -> (Arc<Fragment>, bool) {
        let hash = samples_hash(timestamps_ms, values);
        {
            let mut state = self.state.lock().expect("fragment memo lock");
            if let Some(found) = state.current.get(&hash) {
                if found.holds(timestamps_ms, values) {
                    return (found.clone(), true);
                }
            } else if let Some(found) = state.previous.remove(&hash)
                && found.holds(timestamps_ms, values)
            {
                self.keep(&mut state, hash, found.clone());
                return (found, true);
            }
        }
        // Encoded outside the lock: other requests go on meanwhile.
        let made = Arc::new(Fragment::new(timestamps_ms, values));
        self.keep(
            &mut self.state.lock().expect("fragment memo lock"),
            hash,
            made.clone(),
        );
        (made, false)
    }

    /// [`FragmentMemo::fragment`], trying first the fragment that followed
    /// `previous` last time; counted in `tally`.
    fn fragment_after(
        &self,
        previous: Option<&Arc<Fragment>>,
        timestamps_ms: &[i64],
        values: &[f64],
        tally: &mut Tally,
    ) -> Arc<Fragment> {
        let followed = previous
            .and_then(|previous| previous.next.lock().expect("fragment chain lock").upgrade())
            .filter(|next| next.holds(timestamps_ms, values));
        let (fragment, kept) = match followed {
            Some(followed) => (followed, true),
            None => {
                let found = self.fragment(timestamps_ms, values);
                if let Some(previous) = previous {
                    *previous.next.lock().expect("fragment chain lock") = Arc::downgrade(&found.0);
                }
                found
            }
        };
        if kept {
            tally.kept += 1;
        } else {
            tally.made += 1;
        }
        fragment
    }

    /// Keeps `fragment` in the newer generation, first retiring that
    /// generation when it has no room left. Each generation holds at most
    /// half the bytes.
    fn keep(&self, state: &mut Generations, hash: u64, fragment: Arc<Fragment>) {
        let len = fragment.counted_len();
        if len > self.max_bytes / 2 {
            return;
        }
        if state.current_bytes + len > self.max_bytes / 2 {
            state.previous = std::mem::take(&mut state.current);
            state.current_bytes = 0;
        }
        state.current_bytes += len;
        // A hash collision replaces the older fragment; both stay correct.
        if let Some(replaced) = state.current.insert(hash, fragment) {
            state.current_bytes -= replaced.counted_len();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let state = self.state.lock().expect("fragment memo lock");
        state.current.len() + state.previous.len()
    }
}

/// One stretch of an answer.
enum Part {
    /// JSON written for this answer alone (shared, not copied, when the
    /// answer is sent as its parts).
    Fresh(Bytes),
    Kept(Arc<Fragment>),
    /// A series' leading samples, encoded before the answer was complete.
    Prefix(Arc<Prefix>),
}

impl Part {
    fn json_len(&self) -> usize {
        match self {
            Part::Fresh(json) => json.len(),
            Part::Kept(fragment) => fragment.json.len(),
            Part::Prefix(prefix) => prefix.json_len,
        }
    }

    /// Bytes that compressing this part would have to compress afresh.
    fn uncompressed_work(&self) -> usize {
        match self {
            Part::Fresh(json) => fresh_work(json),
            Part::Kept(fragment) if fragment.deflate.get().is_none() => fragment.json.len(),
            Part::Kept(_) => 0,
            Part::Prefix(prefix) => prefix.uncompressed_work(),
        }
    }
}

/// Fragments an answer took from the memo, and made for it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tally {
    pub(crate) kept: u64,
    pub(crate) made: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.kept += other.kept;
        self.made += other.made;
    }
}

/// The pieces of a series' samples from `from` on, as `(from, to)`.
fn pieces(
    span_ms: i64,
    timestamps_ms: &[i64],
    from: usize,
) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut from = from;
    std::iter::from_fn(move || {
        (from < timestamps_ms.len()).then(|| {
            let piece = (from, piece_end(span_ms, timestamps_ms, from));
            from = piece.1;
            piece
        })
    })
}

/// Where the piece of samples starting at `from` ends: at the first sample
/// at or after the next multiple of `span_ms`, and at least one sample on
/// (the boundary saturates at the end of time, and a backend's samples may
/// come out of order). Any cut gives the same JSON; only reuse depends on it.
fn piece_end(span_ms: i64, timestamps_ms: &[i64], from: usize) -> usize {
    let boundary = timestamps_ms[from]
        .div_euclid(span_ms)
        .saturating_add(1)
        .saturating_mul(span_ms);
    (from + timestamps_ms[from..].partition_point(|t| *t < boundary)).max(from + 1)
}

/// One series' leading samples, encoded ahead of the rest of its answer:
/// the series' first piece, written afresh, and the kept fragments after
/// it, up to (not including) the last piece, which later samples may join.
pub(crate) struct Prefix {
    /// The first piece's samples; the kept fragments hold their own, so
    /// together they are every sample this prefix stands for.
    first_timestamps_ms: Box<[i64]>,
    first_value_bits: Box<[u64]>,
    /// The first piece's JSON.
    first: Bytes,
    fragments: Vec<Arc<Fragment>>,
    samples: usize,
    json_len: usize,
    tally: Tally,
    /// Made once (with the fragments' segments): the first piece's deflate
    /// segment, the CRC-32 of the whole prefix's JSON and its append
    /// operator. The fragments' segments are copied from where they are.
    gzip: OnceLock<PrefixGzip>,
}

struct PrefixGzip {
    first_segment: Vec<u8>,
    crc: u32,
    crc_append: u32,
}

impl Prefix {
    /// Whether a series' samples begin with exactly this prefix's samples:
    /// checked sample by sample, or only at the prefix's two ends when the
    /// merge has `vouched` that the series begins with the data the prefix
    /// was made from (a week of samples is a megabyte to compare, read
    /// while the client waits).
    fn begins(&self, timestamps_ms: &[i64], values: &[f64], vouched: bool) -> bool {
        let first = self.first_timestamps_ms.len();
        if timestamps_ms.len() < self.samples || values.len() < self.samples {
            return false;
        }
        if vouched {
            let (last_ms, last_bits) = match self.fragments.last() {
                Some(fragment) => (&fragment.timestamps_ms, &fragment.value_bits),
                None => (&self.first_timestamps_ms, &self.first_value_bits),
            };
            let end = self.samples;
            return same_samples(
                &self.first_timestamps_ms[..1],
                &self.first_value_bits[..1],
                &timestamps_ms[..1],
                &values[..1],
            ) && same_samples(
                &last_ms[last_ms.len() - 1..],
                &last_bits[last_bits.len() - 1..],
                &timestamps_ms[end - 1..end],
                &values[end - 1..end],
            );
        }
        if !same_samples(
            &self.first_timestamps_ms,
            &self.first_value_bits,
            &timestamps_ms[..first],
            &values[..first],
        ) {
            return false;
        }
        let mut from = first;
        self.fragments.iter().all(|fragment| {
            let to = from + fragment.timestamps_ms.len();
            let holds = fragment.holds(&timestamps_ms[from..to], &values[from..to]);
            from = to;
            holds
        })
    }

    fn gzip(&self, compressors: &mut Compressors) -> &PrefixGzip {
        self.gzip.get_or_init(|| {
            let mut first_segment = Vec::with_capacity(self.first.len() + 64);
            write_fresh(&self.first, compressors, &mut first_segment);
            let mut crc = crc32(0, &self.first);
            for fragment in &self.fragments {
                segment_of(fragment, compressors);
                crc = crc32_combine_op(crc, fragment.crc, fragment.crc_append);
            }
            PrefixGzip {
                first_segment,
                crc,
                crc_append: crc32_combine_gen(self.json_len as u64),
            }
        })
    }

    /// Bytes that compressing this prefix would have to compress afresh.
    fn uncompressed_work(&self) -> usize {
        if self.gzip.get().is_some() {
            return 0;
        }
        let fragments: usize = self
            .fragments
            .iter()
            .filter(|fragment| fragment.deflate.get().is_none())
            .map(|fragment| fragment.json.len())
            .sum();
        fresh_work(&self.first) + fragments
    }
}

/// Encodings of series' leading samples, made while the rest of their
/// answer is being computed: for a range moved forward, all but the newest
/// minutes come from the results cache, so nearly the whole answer can be
/// written and compressed before the backend has answered. Each prefix is
/// used only for a series whose samples begin with exactly its samples.
#[derive(Default)]
pub(crate) struct Prefixes {
    by_labels: HashMap<Vec<Label>, Arc<Prefix>>,
    /// Whether the merge kept every series of the data these were made
    /// from as the beginning of the answer's series of the same labels.
    vouched: bool,
}

impl Prefixes {
    /// Prefixes of `data`'s series at `step_ms`, in their gzip form too
    /// when `gzip`.
    pub(crate) fn new(memo: &FragmentMemo, step_ms: i64, data: &QueryData, gzip: bool) -> Prefixes {
        let span_ms = step_ms.max(1).saturating_mul(POINTS_PER_FRAGMENT);
        let mut by_labels = HashMap::with_capacity(data.series.len());
        for series in &data.series {
            let (timestamps_ms, values) = (&series.timestamps_ms, &series.values);
            if timestamps_ms.len() != values.len() {
                continue;
            }
            let mut pieces = pieces(span_ms, timestamps_ms, 0);
            let Some((_, first_end)) = pieces.next() else {
                continue;
            };
            if first_end == timestamps_ms.len() {
                continue;
            }
            let mut first = Vec::with_capacity(first_end * 34);
            json::write_samples(
                &mut first,
                &timestamps_ms[..first_end],
                &values[..first_end],
            );
            let mut fragments: Vec<Arc<Fragment>> = Vec::new();
            let mut tally = Tally::default();
            for (from, to) in pieces {
                // The last piece stays open: later samples may join it.
                if to == timestamps_ms.len() {
                    break;
                }
                let fragment = memo.fragment_after(
                    fragments.last(),
                    &timestamps_ms[from..to],
                    &values[from..to],
                    &mut tally,
                );
                fragments.push(fragment);
            }
            let samples = first_end
                + fragments
                    .iter()
                    .map(|fragment| fragment.timestamps_ms.len())
                    .sum::<usize>();
            let json_len = first.len()
                + fragments
                    .iter()
                    .map(|fragment| fragment.json.len())
                    .sum::<usize>();
            let prefix = Prefix {
                first_timestamps_ms: timestamps_ms[..first_end].into(),
                first_value_bits: values[..first_end].iter().map(|v| v.to_bits()).collect(),
                first: first.into(),
                fragments,
                samples,
                json_len,
                tally,
                gzip: OnceLock::new(),
            };
            if gzip {
                COMPRESSORS.with_borrow_mut(|compressors| {
                    prefix.gzip(compressors);
                });
            }
            by_labels.insert(series.labels.clone(), Arc::new(prefix));
        }
        Prefixes {
            by_labels,
            vouched: false,
        }
    }

    /// These prefixes, for an answer whose merge `kept` each series of
    /// the data they were made from as the beginning of the answer's
    /// series of the same labels (see
    /// `sluice_plan::CachedPrefix::into_merged_keeping_prefix`): then a
    /// series is not compared with its prefix sample by sample.
    pub(crate) fn vouched(self, kept: bool) -> Prefixes {
        Prefixes {
            vouched: kept,
            ..self
        }
    }
}

/// Splits series' samples at fixed points in time and takes the pieces
/// wholly inside a series from the memo.
pub(crate) struct Assembler<'a> {
    memo: &'a FragmentMemo,
    prefixes: Option<&'a Prefixes>,
    span_ms: i64,
    parts: Vec<Part>,
    pub(crate) tally: Tally,
}

impl<'a> Assembler<'a> {
    /// For a range answer at `step_ms`.
    pub(crate) fn new(memo: &'a FragmentMemo, step_ms: i64) -> Assembler<'a> {
        Assembler {
            memo,
            prefixes: None,
            span_ms: step_ms.max(1).saturating_mul(POINTS_PER_FRAGMENT),
            parts: Vec::new(),
            tally: Tally::default(),
        }
    }

    /// Uses `prefixes` for the series whose samples begin with theirs.
    pub(crate) fn with_prefixes(mut self, prefixes: Option<&'a Prefixes>) -> Assembler<'a> {
        self.prefixes = prefixes;
        self
    }

    /// The whole answer, given the JSON written after the last samples.
    pub(crate) fn finish(mut self, tail: Vec<u8>) -> Assembled {
        if !tail.is_empty() {
            self.parts.push(Part::Fresh(tail.into()));
        }
        Assembled { parts: self.parts }
    }
}

impl SampleSink for Assembler<'_> {
    fn write_samples(
        &mut self,
        out: &mut Vec<u8>,
        labels: &[Label],
        timestamps_ms: &[i64],
        values: &[f64],
    ) {
        let count = timestamps_ms.len();
        let mut from = 0;
        if let Some(prefix) = self.prefixes.and_then(|prefixes| {
            let prefix = prefixes.by_labels.get(labels)?;
            prefix
                .begins(timestamps_ms, values, prefixes.vouched)
                .then_some(prefix)
        }) {
            self.tally.add(prefix.tally);
            self.parts.push(Part::Fresh(std::mem::take(out).into()));
            self.parts.push(Part::Prefix(prefix.clone()));
            from = prefix.samples;
        }
        for (from, to) in pieces(self.span_ms, timestamps_ms, from) {
            // A series' first and last pieces move with the query's range;
            // only the pieces between them recur in later answers.
            if from > 0 && to < count {
                let previous = match self.parts.last() {
                    Some(Part::Kept(previous)) => Some(previous),
                    Some(Part::Prefix(prefix)) => prefix.fragments.last(),
                    _ => None,
                };
                let fragment = self.memo.fragment_after(
                    previous,
                    &timestamps_ms[from..to],
                    &values[from..to],
                    &mut self.tally,
                );
                if !out.is_empty() {
                    self.parts.push(Part::Fresh(std::mem::take(out).into()));
                }
                self.parts.push(Part::Kept(fragment));
            } else {
                if from > 0 {
                    out.push(b',');
                }
                json::write_samples(out, &timestamps_ms[from..to], &values[from..to]);
            }
        }
    }
}

/// An answer made of fresh JSON and kept fragments.
pub(crate) struct Assembled {
    parts: Vec<Part>,
}

impl Assembled {
    /// The JSON length.
    pub(crate) fn len(&self) -> usize {
        self.parts.iter().map(Part::json_len).sum()
    }

    /// Bytes that [`Assembled::gzip`] would have to compress afresh.
    fn uncompressed_work(&self) -> usize {
        self.parts.iter().map(Part::uncompressed_work).sum()
    }

    /// Whether [`Assembled::gzip`] is mostly copying: under 192 KiB to
    /// compress afresh, well under a millisecond's work (a moved range's
    /// edges and new pieces). More (a first answer) belongs off the async
    /// workers.
    pub(crate) fn splices_quickly(&self) -> bool {
        self.uncompressed_work() <= 192 * 1024
    }

    /// The answer as JSON, in one buffer (for the memo, which keeps it).
    pub(crate) fn json(&self) -> Vec<u8> {
        self.json_chunks().concat()
    }

    /// The answer's JSON as the buffers it is made of, shared with the
    /// fragments and prefixes that hold them: nothing is copied.
    pub(crate) fn json_chunks(&self) -> Vec<Bytes> {
        let mut chunks = Vec::with_capacity(self.parts.len());
        for part in &self.parts {
            match part {
                Part::Fresh(json) => chunks.push(json.clone()),
                Part::Kept(fragment) => chunks.push(fragment.json.clone()),
                Part::Prefix(prefix) => {
                    chunks.push(prefix.first.clone());
                    chunks.extend(prefix.fragments.iter().map(|kept| kept.json.clone()));
                }
            }
        }
        chunks
    }

    /// The answer as a gzip stream: kept fragments' deflate segments as
    /// they are, fresh JSON compressed (or stored, when short) in between.
    pub(crate) fn gzip(&self) -> Vec<u8> {
        self.gzip_in(Vec::new())
    }

    /// [`Assembled::gzip`], written into `out` (empty, perhaps reused).
    pub(crate) fn gzip_in(&self, mut out: Vec<u8>) -> Vec<u8> {
        let expected: usize = self
            .parts
            .iter()
            .map(|part| match part {
                Part::Fresh(json) if json.len() < MIN_DEFLATED_LEN => json.len() + 5,
                Part::Fresh(json) => json.len() / 3 + 8,
                Part::Kept(fragment) => fragment
                    .deflate
                    .get()
                    .map_or(fragment.json.len() / 3, Vec::len),
                Part::Prefix(prefix) => prefix.json_len / 3,
            })
            .sum();
        // RFC 1952 header: deflate, no flags, no time, unknown OS.
        out.reserve(expected + 32);
        out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
        let crc = COMPRESSORS
            .with_borrow_mut(|compressors| write_deflate(&self.parts, compressors, &mut out));
        // The last block: empty, fixed Huffman codes, marked final; then the
        // CRC-32 and the length modulo 2^32 (RFC 1952).
        out.extend_from_slice(&[0x03, 0x00]);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&(self.len() as u32).to_le_bytes());
        out
    }
}

/// Writes the deflate stream of `parts` and gives the CRC-32 of the JSON
/// it encodes.
fn write_deflate(parts: &[Part], compressors: &mut Compressors, out: &mut Vec<u8>) -> u32 {
    let mut crc = 0;
    for part in parts {
        match part {
            Part::Fresh(json) if json.is_empty() => {}
            Part::Fresh(json) => {
                crc = crc32(crc, json);
                write_fresh(json, compressors, out);
            }
            Part::Kept(fragment) => {
                crc = crc32_combine_op(crc, fragment.crc, fragment.crc_append);
                out.extend_from_slice(segment_of(fragment, compressors));
            }
            Part::Prefix(prefix) => {
                let gzip = prefix.gzip(compressors);
                crc = crc32_combine_op(crc, gzip.crc, gzip.crc_append);
                out.extend_from_slice(&gzip.first_segment);
                for fragment in &prefix.fragments {
                    out.extend_from_slice(segment_of(fragment, compressors));
                }
            }
        }
    }
    crc
}

/// Bytes [`write_fresh`] compresses of `json`.
fn fresh_work(json: &[u8]) -> usize {
    if json.len() < MIN_DEFLATED_LEN {
        0
    } else {
        json.len()
    }
}

/// JSON written for one answer: stored when shorter than
/// [`MIN_DEFLATED_LEN`], else compressed at the quick level.
fn write_fresh(json: &[u8], compressors: &mut Compressors, out: &mut Vec<u8>) {
    if json.len() < MIN_DEFLATED_LEN {
        write_stored(out, json);
    } else {
        deflate_segment(&mut compressors.fresh, FRESH_LEVEL, json, out);
    }
}

/// A kept fragment's deflate segment, made the first time it is needed.
fn segment_of<'a>(fragment: &'a Fragment, compressors: &mut Compressors) -> &'a [u8] {
    fragment.deflate.get_or_init(|| {
        let mut segment = Vec::with_capacity(fragment.json.len() / 3 + 64);
        deflate_segment(
            &mut compressors.kept,
            SEGMENT_LEVEL,
            &fragment.json,
            &mut segment,
        );
        segment
    })
}

thread_local! {
    /// Compressors per thread, reset between segments: making one
    /// allocates and clears a few hundred kilobytes.
    static COMPRESSORS: std::cell::RefCell<Compressors> =
        const { std::cell::RefCell::new(Compressors { fresh: None, kept: None }) };
}

/// One compressor for each level in use.
struct Compressors {
    fresh: Option<Compress>,
    kept: Option<Compress>,
}

/// `data` as deflate stored blocks (the stream is byte-aligned here).
fn write_stored(out: &mut Vec<u8>, data: &[u8]) {
    for block in data.chunks(usize::from(u16::MAX)) {
        let len = block.len() as u16;
        out.push(0); // not final, stored; the rest of the byte is padding
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
}

/// `data` as a self-contained deflate segment (no reference to anything
/// before it) ending byte-aligned, so segments can be laid end to end.
fn deflate_segment(compressor: &mut Option<Compress>, level: u32, data: &[u8], out: &mut Vec<u8>) {
    let compressor = match compressor {
        Some(compressor) => {
            compressor.reset();
            compressor
        }
        None => compressor.insert(Compress::new(Compression::new(level), false)),
    };
    let before = compressor.total_in();
    loop {
        let consumed = (compressor.total_in() - before) as usize;
        out.reserve((data.len() - consumed) / 2 + 64);
        compressor
            .compress_vec(&data[consumed..], out, FlushCompress::Sync)
            .expect("deflate into memory does not fail");
        // A sync flush is complete once all input is in and room is left over.
        if (compressor.total_in() - before) as usize == data.len() && out.len() < out.capacity() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::{ApiResponse, Label, QueryData, ResponseData, ResultType, Series};
    use sluice_testkit::gunzip;

    fn answer(start_ms: i64, points: i64, step_ms: i64) -> ApiResponse {
        let series = ["api", "web", "db"]
            .into_iter()
            .enumerate()
            .map(|(index, job)| {
                let mut series = Series {
                    labels: vec![Label {
                        name: "job".into(),
                        value: job.into(),
                    }],
                    ..Series::default()
                };
                for point in 0..points {
                    let t = start_ms + point * step_ms;
                    // Some gaps, so pieces are not all the same length.
                    if (t / step_ms) % 97 != 13 {
                        series.push(t, (t / step_ms) as f64 * 0.25 + index as f64);
                    }
                }
                series
            })
            .collect();
        ApiResponse::success(ResponseData::Query(QueryData {
            result_type: ResultType::Matrix as i32,
            series,
            ..QueryData::default()
        }))
    }

    fn assembled(memo: &FragmentMemo, response: &ApiResponse, step_ms: i64) -> Assembled {
        let mut assembler = Assembler::new(memo, step_ms);
        let tail = json::encode_response_with(response, &mut assembler);
        assembler.finish(tail)
    }

    #[test]
    fn assembled_answers_are_the_plain_encoding_in_both_forms() {
        let memo = FragmentMemo::new(64 << 20);
        let step = 60_000;
        for (start, points) in [(0, 1000), (300_000, 1000), (7_680_000, 3), (60_000, 129)] {
            let response = answer(1_767_000_000_000 + start, points, step);
            let plain = json::encode_response(&response);
            // Twice: once making the fragments, once reusing them.
            for _ in 0..2 {
                let assembled = assembled(&memo, &response, step);
                assert_eq!(assembled.len(), plain.len());
                assert_eq!(assembled.json(), plain);
                assert_eq!(assembled.json_chunks().concat(), plain);
                assert_eq!(gunzip(&assembled.gzip()), plain);
            }
        }
    }

    #[test]
    fn a_moved_range_reuses_the_pieces_it_shares() {
        let memo = FragmentMemo::new(64 << 20);
        let step = 60_000;
        let first = assembled(&memo, &answer(1_767_000_000_000, 2000, step), step);
        let _ = first.gzip();
        let kept = memo.len();
        assert!(kept > 3 * 10, "{kept} fragments");
        // Moved forward five steps: nothing new in the middle.
        let mut assembler = Assembler::new(&memo, step);
        let tail =
            json::encode_response_with(&answer(1_767_000_300_000, 2000, step), &mut assembler);
        assert!(
            assembler.tally.kept >= 3 * 10,
            "{} kept",
            assembler.tally.kept
        );
        assert!(assembler.tally.made <= 3, "{} made", assembler.tally.made);
        let moved = assembler.finish(tail);
        assert!(memo.len() <= kept + 3, "{} after {kept}", memo.len());
        let work = moved.uncompressed_work();
        assert!(
            work * 5 < moved.len(),
            "only the edges are compressed afresh: {work} of {}",
            moved.len()
        );
        let plain = json::encode_response(&answer(1_767_000_300_000, 2000, step));
        assert_eq!(gunzip(&moved.gzip()), plain);
        // Sent as its parts, the JSON shares the kept fragments' buffers.
        let chunks = moved.json_chunks();
        assert!(chunks.len() > 3 * 10, "{} chunks", chunks.len());
        assert_eq!(chunks.concat(), plain);
    }

    fn query_data(response: &ApiResponse) -> &QueryData {
        match &response.data {
            Some(ResponseData::Query(data)) => data,
            _ => unreachable!("answer() makes query data"),
        }
    }

    #[test]
    fn prefixes_made_ahead_give_the_plain_encoding() {
        let step = 60_000;
        let start = 1_767_000_000_000;
        // The cached part ends five steps before the answer does.
        let whole = answer(start, 2000, step);
        let cached = answer(start, 1995, step);
        let plain = json::encode_response(&whole);
        for (gzip, vouched) in [(true, false), (false, false), (true, true), (false, true)] {
            let memo = FragmentMemo::new(64 << 20);
            let prefixes = Prefixes::new(&memo, step, query_data(&cached), gzip).vouched(vouched);
            assert_eq!(prefixes.by_labels.len(), 3);
            let made = memo.len();
            let mut assembler = Assembler::new(&memo, step).with_prefixes(Some(&prefixes));
            let tail = json::encode_response_with(&whole, &mut assembler);
            // Every interior piece came with the prefixes: none made now.
            assert_eq!(memo.len(), made);
            assert_eq!(assembler.tally.made as usize, made);
            let assembled = assembler.finish(tail);
            assert_eq!(assembled.json(), plain);
            assert_eq!(assembled.json_chunks().concat(), plain);
            assert_eq!(gunzip(&assembled.gzip()), plain);
            // With the gzip form made ahead, only the edges are left.
            if gzip {
                let work = assembled.uncompressed_work();
                assert!(work * 20 < assembled.len(), "{work} of {}", assembled.len());
            }
        }
    }

    #[test]
    fn a_fragment_followed_before_is_used_only_for_its_own_samples() {
        let memo = FragmentMemo::new(64 << 20);
        let step = 60_000;
        let original = answer(1_767_000_000_000, 2000, step);
        let mut changed = original.clone();
        if let Some(ResponseData::Query(data)) = &mut changed.data {
            data.series[1].values[1000] = 7.0;
        }
        // The changed answer differs in one fragment: the one that followed
        // its predecessor before does not hold it, so one is made. The
        // original again finds all of its own, the first by hash.
        for (response, made) in [(&original, None), (&changed, Some(1)), (&original, Some(0))] {
            let mut assembler = Assembler::new(&memo, step);
            let tail = json::encode_response_with(response, &mut assembler);
            if let Some(made) = made {
                assert_eq!(assembler.tally.made, made);
            }
            let assembled = assembler.finish(tail);
            let plain = json::encode_response(response);
            assert_eq!(assembled.json(), plain);
            assert_eq!(gunzip(&assembled.gzip()), plain);
        }
    }

    #[test]
    fn a_prefix_stands_only_for_its_own_samples() {
        let step = 60_000;
        let start = 1_767_000_000_000;
        let memo = FragmentMemo::new(64 << 20);
        let cached = answer(start, 1995, step);
        let prefixes = Prefixes::new(&memo, step, query_data(&cached), true);
        // The same series with one sample changed in the middle, one with
        // its first sample changed, and one shorter than the prefix.
        let mut changed = answer(start, 2000, step);
        if let Some(ResponseData::Query(data)) = &mut changed.data {
            data.series[0].values[1000] = -0.0;
            data.series[1].values[0] = 1e9;
            data.series[2].timestamps_ms.truncate(500);
            data.series[2].values.truncate(500);
        }
        let mut assembler = Assembler::new(&memo, step).with_prefixes(Some(&prefixes));
        let tail = json::encode_response_with(&changed, &mut assembler);
        let assembled = assembler.finish(tail);
        assert!(
            assembled
                .parts
                .iter()
                .all(|part| !matches!(part, Part::Prefix(_)))
        );
        let plain = json::encode_response(&changed);
        assert_eq!(assembled.json(), plain);
        assert_eq!(gunzip(&assembled.gzip()), plain);
        // Vouched for by the merge, a prefix is checked only at its ends
        // (and for length): the middle change is taken on trust, which is
        // what vouching is for; the other two are still turned down.
        let prefixes = prefixes.vouched(true);
        let mut assembler = Assembler::new(&memo, step).with_prefixes(Some(&prefixes));
        let tail = json::encode_response_with(&changed, &mut assembler);
        let used = assembler
            .finish(tail)
            .parts
            .iter()
            .filter(|part| matches!(part, Part::Prefix(_)))
            .count();
        assert_eq!(used, 1);
    }

    #[test]
    fn odd_timestamps_still_encode_exactly() {
        let memo = FragmentMemo::new(1 << 20);
        let series = |timestamps: &[i64]| {
            let mut series = Series::default();
            for (index, t) in timestamps.iter().enumerate() {
                series.push(*t, index as f64);
            }
            series
        };
        for (step, timestamps) in [
            (60_000, vec![0, i64::MAX - 1, i64::MAX, i64::MAX]),
            (i64::MAX / 2, vec![i64::MIN, -1, 0, i64::MAX]),
            (1, (0..2000).rev().collect::<Vec<_>>()),
            (60_000, vec![5, 3, 9_000_000, 1, 7_700_000, 2]),
        ] {
            let response = ApiResponse::success(ResponseData::Query(QueryData {
                result_type: ResultType::Matrix as i32,
                series: vec![series(&timestamps)],
                ..QueryData::default()
            }));
            let assembled = assembled(&memo, &response, step);
            let plain = json::encode_response(&response);
            assert_eq!(assembled.json(), plain, "{timestamps:?}");
            assert_eq!(gunzip(&assembled.gzip()), plain);
        }
    }

    #[test]
    fn a_fragment_stands_only_for_its_own_samples() {
        let memo = FragmentMemo::new(64 << 20);
        let (a, kept) = memo.fragment(&[1, 2], &[1.0, 2.0]);
        assert!(!kept);
        let (again, kept) = memo.fragment(&[1, 2], &[1.0, 2.0]);
        assert!(kept && Arc::ptr_eq(&a, &again));
        let (b, kept) = memo.fragment(&[1, 2], &[1.0, -2.0]);
        assert!(!kept && !Arc::ptr_eq(&a, &b));
        assert_eq!(&b.json[..], br#",[0.001,"1"],[0.002,"-2"]"#);
        let (nan, _) = memo.fragment(&[1], &[f64::NAN]);
        assert!(Arc::ptr_eq(&nan, &memo.fragment(&[1], &[f64::NAN]).0));
        assert!(!memo.fragment(&[1], &[0.0]).0.holds(&[1], &[-0.0]));
    }

    #[test]
    fn the_memo_is_bounded() {
        let memo = FragmentMemo::new(64 * 1024);
        for start in 0..2000 {
            memo.fragment(&[start, start + 1], &[1.0, 2.0]);
        }
        let state = memo.state.lock().unwrap();
        let bytes: usize = state
            .current
            .values()
            .chain(state.previous.values())
            .map(|fragment| fragment.counted_len())
            .sum();
        assert!(bytes <= 64 * 1024, "{bytes}");
        assert!(!state.previous.is_empty());
    }

    #[test]
    fn stored_blocks_and_segments_make_a_valid_stream() {
        let long = vec![b'x'; 70_000];
        let assembled = Assembled {
            parts: vec![
                Part::Fresh(Bytes::from_static(b"{")),
                Part::Fresh(long.clone().into()),
                Part::Kept(Arc::new(Fragment::new(&[1000], &[1.5]))),
                Part::Fresh(Bytes::new()),
                Part::Fresh(Bytes::from_static(b"}")),
            ],
        };
        let mut want = b"{".to_vec();
        want.extend_from_slice(&long);
        want.extend_from_slice(br#",[1,"1.5"]}"#);
        assert_eq!(gunzip(&assembled.gzip()), want);
        let mut stored = Vec::new();
        write_stored(&mut stored, &long);
        assert_eq!(stored.len(), long.len() + 10, "two stored blocks");
    }
}
