//! Chunk encodings (Prometheus `tsdb/chunkenc`). Float samples are XOR
//! encoded as in Facebook's Gorilla, with millisecond timestamps: a 2-byte
//! big-endian sample count, then a bit stream holding the first timestamp as a
//! varint and the first value as 64 raw bits, the second timestamp as a uvarint
//! delta, and from the third on delta-of-deltas in buckets of 14, 17, 20 or 64
//! bits; each value after the first is XORed with the previous one and only
//! the meaningful bits between the leading and trailing zeros are written.
//!
//! Histogram and float-histogram chunks are recognised by their encoding byte
//! and reported as such; this crate never decodes them as floats.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};

/// The encoding byte stored before each chunk's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// XOR-encoded float samples (byte 1).
    Xor,
    /// Native histograms with integer counts (byte 2).
    Histogram,
    /// Native histograms with float counts (byte 3).
    FloatHistogram,
}

impl Encoding {
    pub fn from_byte(byte: u8) -> Option<Encoding> {
        match byte {
            1 => Some(Encoding::Xor),
            2 => Some(Encoding::Histogram),
            3 => Some(Encoding::FloatHistogram),
            _ => None,
        }
    }

    pub fn as_byte(self) -> u8 {
        match self {
            Encoding::Xor => 1,
            Encoding::Histogram => 2,
            Encoding::FloatHistogram => 3,
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Encoding::Xor => "XOR",
            Encoding::Histogram => "histogram",
            Encoding::FloatHistogram => "float histogram",
        })
    }
}

/// One float sample: a millisecond timestamp and a value. Values are kept bit
/// for bit, so Prometheus's stale marker (a NaN with a particular payload)
/// survives a round trip.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub t: i64,
    pub v: f64,
}

impl PartialEq for Sample {
    /// Bit equality: NaN equals the same NaN, and a stale marker differs from
    /// an ordinary NaN.
    fn eq(&self, other: &Sample) -> bool {
        self.t == other.t && self.v.to_bits() == other.v.to_bits()
    }
}

/// Prometheus's stale marker, written when a series disappears from a scrape.
pub const STALE_NAN: f64 = f64::from_bits(0x7ff0_0000_0000_0002);

/// Where a chunk's bytes came from, for error messages.
#[derive(Clone, Debug)]
pub struct Origin {
    pub file: Arc<str>,
    /// Offset in `file` of the chunk's data (after length and encoding).
    pub offset: u64,
}

impl Origin {
    fn unknown() -> Origin {
        Origin {
            file: Arc::from("chunk"),
            offset: 0,
        }
    }
}

/// A chunk as stored: its encoding and its data.
#[derive(Clone, Debug)]
pub struct Chunk {
    encoding: Encoding,
    data: Bytes,
    origin: Origin,
}

impl Chunk {
    pub fn new(encoding: Encoding, data: Bytes, origin: Origin) -> Chunk {
        Chunk {
            encoding,
            data,
            origin,
        }
    }

    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The same chunk holding a copy of its own bytes, not a slice of a
    /// larger buffer that it would keep alive.
    pub(crate) fn detached(&self) -> Chunk {
        Chunk {
            encoding: self.encoding,
            data: Bytes::copy_from_slice(&self.data),
            origin: self.origin.clone(),
        }
    }

    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// Where the chunk's data lies, for errors.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The sample count from the 2-byte header all three encodings share.
    pub fn num_samples(&self) -> u16 {
        match self.data.get(..2) {
            Some(header) => u16::from_be_bytes([header[0], header[1]]),
            None => 0,
        }
    }

    /// Histogram chunks are an error where float samples are asked for.
    fn check_float(&self) -> Result<()> {
        if self.encoding == Encoding::Xor {
            return Ok(());
        }
        Err(Error::NotFloat {
            file: self.origin.file.to_string(),
            offset: self.origin.offset,
            encoding: self.encoding,
        })
    }

    /// An iterator over the float samples; histogram chunks are an error.
    pub fn float_samples(&self) -> Result<XorIterator> {
        self.check_float()?;
        XorIterator::located(self.data.clone(), self.origin.clone())
    }

    /// Appends the float samples, as `(timestamp, value)`, to `out` (see
    /// [`decode_xor_into`]); histogram chunks are an error.
    pub fn decode_floats_into(&self, out: &mut Vec<(i64, f64)>) -> Result<()> {
        self.check_float()?;
        decode_xor_into(&self.data, &self.origin, out)
    }

    /// A decoder for the float samples (see [`XorDecoder`]); histogram
    /// chunks are an error.
    pub fn xor_decoder(&self) -> Result<XorDecoder> {
        self.check_float()?;
        XorDecoder::new(&self.data, &self.origin)
    }

    /// Goes on decoding this chunk with `decoder` (from
    /// [`Chunk::xor_decoder`]) until a sample later than `until`.
    pub fn decode_floats_until(
        &self,
        decoder: &mut XorDecoder,
        until: i64,
        out: &mut Vec<(i64, f64)>,
    ) -> Result<()> {
        decoder.decode_until(&self.data, &self.origin, until, out)
    }
}

/// Writes bits most significant first, as Prometheus's `bstream` does.
#[derive(Clone, Debug, Default)]
struct BitWriter {
    bytes: Vec<u8>,
    /// How many low bits of the last byte are still free.
    free_bits: u8,
}

impl BitWriter {
    fn write_bit(&mut self, bit: bool) {
        if self.free_bits == 0 {
            self.bytes.push(0);
            self.free_bits = 8;
        }
        self.free_bits -= 1;
        if bit {
            let last = self.bytes.len() - 1;
            self.bytes[last] |= 1 << self.free_bits;
        }
    }

    fn write_byte(&mut self, byte: u8) {
        if self.free_bits == 0 {
            self.bytes.push(byte);
            return;
        }
        let last = self.bytes.len() - 1;
        self.bytes[last] |= byte >> (8 - self.free_bits);
        self.bytes.push(byte << self.free_bits);
    }

    /// Writes the low `count` bits of `value`.
    fn write_bits(&mut self, value: u64, count: u8) {
        debug_assert!(count <= 64);
        let mut remaining = count;
        let mut shifted = if count == 0 {
            0
        } else {
            value << (64 - u32::from(count))
        };
        while remaining >= 8 {
            self.write_byte((shifted >> 56) as u8);
            shifted <<= 8;
            remaining -= 8;
        }
        while remaining > 0 {
            self.write_bit(shifted >> 63 == 1);
            shifted <<= 1;
            remaining -= 1;
        }
    }
}

/// Whether `value` fits the signed `bits`-bit bucket of the delta-of-delta
/// encoding. The range is shifted by one (−(2^(n−1)−1) ..= 2^(n−1)) to match
/// Prometheus, whose decoder reads 2^(n−1) as positive.
fn fits_bits(value: i64, bits: u8) -> bool {
    let half = 1i64 << (bits - 1);
    -(half - 1) <= value && value <= half
}

/// Appends float samples to one XOR chunk.
#[derive(Clone, Debug)]
pub struct XorEncoder {
    stream: BitWriter,
    count: u16,
    last_t: i64,
    last_v: u64,
    last_t_delta: u64,
    leading: u8,
    trailing: u8,
}

impl Default for XorEncoder {
    fn default() -> XorEncoder {
        XorEncoder::new()
    }
}

impl XorEncoder {
    pub fn new() -> XorEncoder {
        XorEncoder {
            stream: BitWriter {
                bytes: vec![0, 0],
                free_bits: 0,
            },
            count: 0,
            last_t: 0,
            last_v: 0,
            last_t_delta: 0,
            // 0xff means "no window yet": the first XOR must write one.
            leading: 0xff,
            trailing: 0,
        }
    }

    pub fn num_samples(&self) -> u16 {
        self.count
    }

    /// The chunk's bytes so far (valid at any point, as in Prometheus).
    pub fn bytes(&self) -> &[u8] {
        &self.stream.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.stream.bytes
    }

    /// Appends a sample. Timestamps must increase; the caller checks that,
    /// as Prometheus's appender does. A full chunk (65535 samples) is an error.
    pub fn append(&mut self, t: i64, v: f64) -> Result<()> {
        if self.count == u16::MAX {
            return Err(Error::InvalidInput(
                "XOR chunk holds at most 65535 samples".into(),
            ));
        }
        let bits = v.to_bits();
        let t_delta = t.wrapping_sub(self.last_t) as u64;
        match self.count {
            0 => {
                let mut varint = Vec::with_capacity(10);
                crate::encoding::put_varint(&mut varint, t);
                varint.iter().for_each(|&byte| self.stream.write_byte(byte));
                self.stream.write_bits(bits, 64);
            }
            1 => {
                let mut uvarint = Vec::with_capacity(10);
                crate::encoding::put_uvarint(&mut uvarint, t_delta);
                uvarint
                    .iter()
                    .for_each(|&byte| self.stream.write_byte(byte));
                self.write_value(bits);
            }
            _ => {
                self.write_delta_of_delta(t_delta.wrapping_sub(self.last_t_delta) as i64);
                self.write_value(bits);
            }
        }
        self.last_t = t;
        self.last_v = bits;
        self.last_t_delta = t_delta;
        self.count += 1;
        self.stream.bytes[..2].copy_from_slice(&self.count.to_be_bytes());
        Ok(())
    }

    fn write_delta_of_delta(&mut self, delta_of_delta: i64) {
        let value = delta_of_delta as u64;
        if delta_of_delta == 0 {
            self.stream.write_bit(false);
        } else if fits_bits(delta_of_delta, 14) {
            self.stream.write_bits(0b10, 2);
            self.stream.write_bits(value, 14);
        } else if fits_bits(delta_of_delta, 17) {
            self.stream.write_bits(0b110, 3);
            self.stream.write_bits(value, 17);
        } else if fits_bits(delta_of_delta, 20) {
            self.stream.write_bits(0b1110, 4);
            self.stream.write_bits(value, 20);
        } else {
            self.stream.write_bits(0b1111, 4);
            self.stream.write_bits(value, 64);
        }
    }

    fn write_value(&mut self, bits: u64) {
        let xor = bits ^ self.last_v;
        if xor == 0 {
            self.stream.write_bit(false);
            return;
        }
        self.stream.write_bit(true);
        // Five bits hold the leading count, so it is clamped to 31.
        let leading = (xor.leading_zeros() as u8).min(31);
        let trailing = xor.trailing_zeros() as u8;
        if self.leading != 0xff && leading >= self.leading && trailing >= self.trailing {
            // The previous window still covers the meaningful bits: reuse it.
            self.stream.write_bit(false);
            let width = 64 - self.leading - self.trailing;
            self.stream.write_bits(xor >> self.trailing, width);
            return;
        }
        self.leading = leading;
        self.trailing = trailing;
        self.stream.write_bit(true);
        self.stream.write_bits(u64::from(leading), 5);
        let significant = 64 - leading - trailing;
        // 64 significant bits do not fit six bits; 0 stands for 64, since
        // zero significant bits is the xor == 0 case above.
        self.stream.write_bits(u64::from(significant % 64), 6);
        self.stream.write_bits(xor >> trailing, significant);
    }
}

/// Where decoding an XOR chunk stands: the samples read so far and the
/// position in its bit stream. It does not hold the chunk's bytes: each
/// call is given them again, so a decoder can wait between calls (a query
/// decodes a chunk as far as its windows reach, then on from there).
#[derive(Clone, Debug)]
pub struct XorDecoder {
    total: u16,
    read: u16,
    /// Where [`WordBits`] stopped, kept between calls.
    next: usize,
    word: u64,
    held: u32,
    state: XorState,
}

impl XorDecoder {
    /// A decoder at the start of XOR chunk `data`.
    pub fn new(data: &[u8], origin: &Origin) -> Result<XorDecoder> {
        Ok(XorDecoder {
            total: sample_count(data, origin)?,
            read: 0,
            next: 0,
            word: 0,
            held: 0,
            state: XorState::default(),
        })
    }

    /// Whether every sample has been decoded.
    pub fn finished(&self) -> bool {
        self.read == self.total
    }

    /// The time of the last sample decoded, if any.
    pub fn last_time(&self) -> Option<i64> {
        (self.read > 0).then_some(self.state.t)
    }

    /// Appends samples of chunk `data` (the same bytes each call) to `out`
    /// until it has appended one later than `until`, or the last one.
    /// After an error the decoder is not to be used again.
    pub fn decode_until(
        &mut self,
        data: &[u8],
        origin: &Origin,
        until: i64,
        out: &mut Vec<(i64, f64)>,
    ) -> Result<()> {
        let Some(stream) = data.get(2..) else {
            return Err(bad_sample(origin, 0, self.read, self.total));
        };
        let mut bits = WordBits {
            data: stream,
            next: self.next,
            word: self.word,
            held: self.held,
        };
        out.reserve(usize::from(self.total - self.read));
        let mut outcome = Ok(());
        while self.read < self.total {
            // `later` for all but the first two, without matching the index.
            let decoded = if self.read >= 2 {
                self.state.later(&mut bits)
            } else {
                self.state.read(self.read, &mut bits)
            };
            if decoded.is_none() {
                let byte = bits.byte_position();
                outcome = Err(bad_sample(origin, byte, self.read, self.total));
                break;
            }
            self.read += 1;
            out.push((self.state.t, f64::from_bits(self.state.v)));
            if self.state.t > until {
                break;
            }
        }
        (self.next, self.word, self.held) = (bits.next, bits.word, bits.held);
        outcome
    }
}

/// Iterates the samples of an XOR chunk. Malformed data ends the iteration
/// with an error naming the byte where decoding failed.
#[derive(Clone, Debug)]
pub struct XorIterator {
    data: Bytes,
    origin: Origin,
    decoder: XorDecoder,
    decoded: Vec<(i64, f64)>,
    failed: bool,
}

impl XorIterator {
    /// An iterator over chunk data of unknown origin (errors say "chunk").
    pub fn new(data: Bytes) -> Result<XorIterator> {
        XorIterator::located(data, Origin::unknown())
    }

    pub fn located(data: Bytes, origin: Origin) -> Result<XorIterator> {
        let decoder = XorDecoder::new(&data, &origin)?;
        Ok(XorIterator {
            data,
            origin,
            decoder,
            decoded: Vec::with_capacity(1),
            failed: false,
        })
    }

    /// Advances to the first sample at or after `t` and returns it.
    pub fn seek(&mut self, t: i64) -> Option<Result<Sample>> {
        loop {
            match self.next()? {
                Ok(sample) if sample.t < t => continue,
                other => return Some(other),
            }
        }
    }
}

impl Iterator for XorIterator {
    type Item = Result<Sample>;

    fn next(&mut self) -> Option<Result<Sample>> {
        if self.failed || self.decoder.finished() {
            return None;
        }
        self.decoded.clear();
        // Any time is past i64::MIN: one sample a call.
        let decoded =
            self.decoder
                .decode_until(&self.data, &self.origin, i64::MIN, &mut self.decoded);
        if let Err(error) = decoded {
            self.failed = true;
            return Some(Err(error));
        }
        let (t, v) = self.decoded[0];
        Some(Ok(Sample { t, v }))
    }
}

/// The sample count in an XOR chunk's 2-byte header.
fn sample_count(data: &[u8], origin: &Origin) -> Result<u16> {
    match data.get(..2) {
        Some(header) => Ok(u16::from_be_bytes([header[0], header[1]])),
        None => Err(Error::corrupt(
            &origin.file,
            origin.offset,
            "XOR chunk shorter than its 2-byte header",
        )),
    }
}

/// The error for sample `index` (from 0) of `total`, whose bits ran out or
/// made no sense at `byte` of the bit stream (after the header).
fn bad_sample(origin: &Origin, byte: usize, index: u16, total: u16) -> Error {
    Error::corrupt(
        &origin.file,
        origin.offset + 2 + byte as u64,
        format_args!(
            "XOR sample {} of {total}: bit stream ends or holds an impossible value window",
            u32::from(index) + 1
        ),
    )
}

/// Reads a bit stream most significant bit first through a 64-bit
/// accumulator refilled a word at a time (the decoder's hot loop: reading
/// bit by bit took several times as long). Running out is `None`, never a
/// panic.
struct WordBits<'a> {
    data: &'a [u8],
    /// The next byte to load into `word`.
    next: usize,
    /// Unread bits, left-aligned; the bits below the first `held` are the
    /// stream's next bits too, or zero.
    word: u64,
    held: u32,
}

impl WordBits<'_> {
    fn refill(&mut self) {
        if let Some(bytes) = self.data.get(self.next..self.next + 8) {
            let mut load = [0u8; 8];
            load.copy_from_slice(bytes);
            self.word |= u64::from_be_bytes(load) >> self.held;
            let whole = (63 - self.held) / 8;
            self.next += whole as usize;
            self.held += whole * 8;
            return;
        }
        while self.held <= 56 && self.next < self.data.len() {
            self.word |= u64::from(self.data[self.next]) << (56 - self.held);
            self.next += 1;
            self.held += 8;
        }
    }

    /// The next `count` (1 to 56) bits.
    #[inline]
    fn read(&mut self, count: u32) -> Option<u64> {
        debug_assert!((1..=56).contains(&count));
        if self.held < count {
            self.refill();
            if self.held < count {
                return None;
            }
        }
        let value = self.word >> (64 - count);
        self.word <<= count;
        self.held -= count;
        Some(value)
    }

    /// The next `count` (0 to 64) bits.
    #[inline]
    fn read_wide(&mut self, count: u32) -> Option<u64> {
        match count {
            1..=56 => self.read(count),
            _ => self.read_wider(count),
        }
    }

    #[cold]
    fn read_wider(&mut self, count: u32) -> Option<u64> {
        if count == 0 {
            return Some(0);
        }
        // Fail before consuming anything, as a single read would.
        let left = u64::from(self.held) + (self.data.len() - self.next) as u64 * 8;
        if left < u64::from(count) {
            return None;
        }
        let high = self.read(count - 32)?;
        Some(high << 32 | self.read(32)?)
    }

    /// How many 1 bits come next, up to `max` (at most 4), consuming them
    /// and the 0 that ends them: the control prefixes of the XOR format,
    /// read at once rather than a bit at a time. Running out consumes the
    /// 1 bits there were, as reading bit by bit would.
    #[inline]
    fn ones(&mut self, max: u32) -> Option<u32> {
        if self.held <= max {
            self.refill();
        }
        let ones = (!self.word).leading_zeros().min(max);
        let needed = if ones < max { ones + 1 } else { max };
        if needed <= self.held {
            self.consume(needed);
            return Some(ones);
        }
        self.consume(self.held.min(ones));
        None
    }

    #[inline]
    fn consume(&mut self, count: u32) {
        self.word = self.word.checked_shl(count).unwrap_or(0);
        self.held -= count;
    }

    fn uvarint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for index in 0..10 {
            let byte = self.read(8)? as u8;
            if index == 9 && byte > 1 {
                return None;
            }
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte < 0x80 {
                return Some(value);
            }
        }
        None
    }

    /// The byte the next unread bit lies in.
    fn byte_position(&self) -> usize {
        self.next - (self.held as usize).div_ceil(8)
    }
}

/// Decodes every sample of XOR chunk `data` (header included) onto the end
/// of `samples`, as `(timestamp, value)`: what a query engine wants, without
/// an iterator's per-sample bookkeeping. On malformed data the samples
/// decoded before it stay and the error names the byte, counted from
/// `origin`.
pub fn decode_xor_into(data: &[u8], origin: &Origin, samples: &mut Vec<(i64, f64)>) -> Result<()> {
    XorDecoder::new(data, origin)?.decode_until(data, origin, i64::MAX, samples)
}

/// The running state of an XOR decoder: the last sample and the value
/// window.
#[derive(Clone, Debug, Default)]
struct XorState {
    t: i64,
    v: u64,
    t_delta: u64,
    leading: u32,
    trailing: u32,
}

impl XorState {
    /// Reads sample `index` (from 0) into the state.
    #[inline]
    fn read(&mut self, index: u16, bits: &mut WordBits<'_>) -> Option<()> {
        match index {
            0 => self.first(bits),
            1 => self.second(bits),
            _ => self.later(bits),
        }
    }

    fn first(&mut self, bits: &mut WordBits<'_>) -> Option<()> {
        let zigzag = bits.uvarint()?;
        self.t = ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64);
        self.v = bits.read_wide(64)?;
        Some(())
    }

    fn second(&mut self, bits: &mut WordBits<'_>) -> Option<()> {
        self.t_delta = bits.uvarint()?;
        self.t = self.t.wrapping_add(self.t_delta as i64);
        self.value(bits)
    }

    #[inline]
    fn later(&mut self, bits: &mut WordBits<'_>) -> Option<()> {
        // Regular scrapes make a zero delta of deltas, one 0 bit.
        let delta_of_delta = if bits.read(1)? == 0 {
            0
        } else {
            match bits.ones(3)? {
                0 => signed(bits.read(14)?, 14),
                1 => signed(bits.read(17)?, 17),
                2 => signed(bits.read(20)?, 20),
                _ => bits.read_wide(64)? as i64,
            }
        };
        self.t_delta = self.t_delta.wrapping_add(delta_of_delta as u64);
        self.t = self.t.wrapping_add(self.t_delta as i64);
        self.value(bits)
    }

    #[inline]
    fn value(&mut self, bits: &mut WordBits<'_>) -> Option<()> {
        let control = bits.ones(2)?;
        if control == 0 {
            return Some(());
        }
        if control == 2 {
            self.leading = bits.read(5)? as u32;
            let significant = match bits.read(6)? as u32 {
                0 => 64,
                other => other,
            };
            // A corrupt window wider than 64 bits must not underflow.
            self.trailing = 64u32.checked_sub(self.leading)?.checked_sub(significant)?;
        }
        let width = 64 - self.leading - self.trailing;
        let meaningful = bits.read_wide(width)?;
        self.v ^= meaningful.checked_shl(self.trailing).unwrap_or(0);
        Some(())
    }
}

/// A `count`-bit delta-of-delta bucket as a signed value (see `fits_bits`).
fn signed(raw: u64, count: u8) -> i64 {
    if raw > 1 << (count - 1) {
        raw as i64 - (1i64 << count)
    } else {
        raw as i64
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn encode(samples: &[Sample]) -> Vec<u8> {
        let mut encoder = XorEncoder::new();
        for sample in samples {
            encoder.append(sample.t, sample.v).unwrap();
        }
        encoder.into_bytes()
    }

    fn decode(bytes: Vec<u8>) -> Vec<Sample> {
        XorIterator::new(Bytes::from(bytes))
            .unwrap()
            .collect::<Result<Vec<_>>>()
            .unwrap()
    }

    #[test]
    fn round_trips_every_delta_bucket_and_special_values() {
        let deltas = [
            15_000i64,
            15_000,
            15_001,
            7_000,
            80_000,
            600_000,
            10_000_000_000,
            1,
            1,
        ];
        let values = [
            0.0,
            1.0,
            -1.0,
            f64::NAN,
            STALE_NAN,
            f64::INFINITY,
            1e300,
            -0.0,
            42.5,
            42.5,
        ];
        let mut t = -5_000i64;
        let mut samples = vec![Sample { t, v: values[0] }];
        for (index, delta) in deltas.iter().enumerate() {
            t += delta;
            samples.push(Sample {
                t,
                v: values[index + 1],
            });
        }
        assert_eq!(decode(encode(&samples)), samples);
    }

    #[test]
    fn matches_bytes_prometheus_writes() {
        // The data of the chunk promtool 2.42 wrote for `m 1 1`, `m 1 2`,
        // `m 2 3` (seconds) with `tsdb create-blocks-from openmetrics`.
        let prometheus_bytes = [
            0x00, 0x03, 0xd0, 0x0f, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0, 0xe8, 0x07, 0x30, 0x97, 0xff,
            0xc0,
        ];
        let samples = [
            Sample { t: 1000, v: 1.0 },
            Sample { t: 2000, v: 1.0 },
            Sample { t: 3000, v: 2.0 },
        ];
        assert_eq!(encode(&samples), prometheus_bytes);
        assert_eq!(decode(prometheus_bytes.to_vec()), samples);
    }

    #[test]
    fn seek_finds_the_first_sample_at_or_after() {
        let samples: Vec<Sample> = (0..100)
            .map(|index| Sample {
                t: index * 10,
                v: index as f64,
            })
            .collect();
        let mut iterator = XorIterator::new(Bytes::from(encode(&samples))).unwrap();
        assert_eq!(iterator.seek(305).unwrap().unwrap(), samples[31]);
        assert_eq!(iterator.next().unwrap().unwrap(), samples[32]);
        assert!(iterator.seek(10_000).is_none());
    }

    #[test]
    fn histogram_chunks_are_reported_not_decoded() {
        let chunk = Chunk::new(
            Encoding::Histogram,
            Bytes::from_static(&[0, 1, 0]),
            Origin::unknown(),
        );
        let error = chunk.float_samples().unwrap_err().to_string();
        assert_eq!(
            error,
            "chunk: chunk at byte 0 is histogram, not float samples"
        );
        assert_eq!(chunk.num_samples(), 1);
    }

    fn arbitrary_samples() -> impl Strategy<Value = Vec<Sample>> {
        (
            any::<i64>(),
            prop::collection::vec((0i64..1 << 40, any::<u64>()), 0..200),
        )
            .prop_map(|(start, steps)| {
                let mut t = start / 2;
                steps
                    .into_iter()
                    .map(|(delta, bits)| {
                        t = t.saturating_add(delta);
                        Sample {
                            t,
                            v: f64::from_bits(bits),
                        }
                    })
                    .collect()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(sluice_testkit::fuzz_cases(256)))]

        #[test]
        fn any_samples_round_trip(samples in arbitrary_samples()) {
            let bytes = encode(&samples);
            let mut batch = Vec::new();
            decode_xor_into(&bytes, &Origin::unknown(), &mut batch).unwrap();
            let batch: Vec<Sample> = batch.into_iter().map(|(t, v)| Sample { t, v }).collect();
            prop_assert_eq!(&batch, &samples);
            prop_assert_eq!(decode(bytes), samples);
        }

        #[test]
        fn decoding_in_stretches_decodes_it_all(
            samples in arbitrary_samples(),
            until in any::<prop::sample::Index>(),
        ) {
            let bytes = encode(&samples);
            let origin = Origin::unknown();
            let until = samples.get(until.index(samples.len() + 1)).map_or(i64::MAX, |s| s.t);
            let mut decoder = XorDecoder::new(&bytes, &origin).unwrap();
            let mut out = Vec::new();
            decoder.decode_until(&bytes, &origin, until, &mut out).unwrap();
            // Everything up to `until`, and at most one sample past it.
            let through = samples.iter().filter(|s| s.t <= until).count();
            prop_assert!(out.len() == through || out.len() == through + 1);
            prop_assert_eq!(decoder.finished(), out.len() == samples.len());
            decoder.decode_until(&bytes, &origin, i64::MAX, &mut out).unwrap();
            let out: Vec<Sample> = out.into_iter().map(|(t, v)| Sample { t, v }).collect();
            prop_assert_eq!(out, samples);
        }

        #[test]
        fn mutated_chunks_never_panic(
            samples in arbitrary_samples(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = encode(&samples);
            for (index, byte) in flips {
                let position = index.index(bytes.len());
                bytes[position] ^= byte;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            let _ = decode_xor_into(&bytes, &Origin::unknown(), &mut Vec::new());
            if let Ok(iterator) = XorIterator::new(Bytes::from(bytes)) {
                for sample in iterator {
                    if sample.is_err() { break; }
                }
            }
        }
    }
}
