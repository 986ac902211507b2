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

    /// An iterator over the float samples; histogram chunks are an error.
    pub fn float_samples(&self) -> Result<XorIterator> {
        if self.encoding != Encoding::Xor {
            return Err(Error::NotFloat {
                file: self.origin.file.to_string(),
                offset: self.origin.offset,
                encoding: self.encoding,
            });
        }
        XorIterator::located(self.data.clone(), self.origin.clone())
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

/// Reads bits most significant first; running out is an error, not a panic.
#[derive(Clone, Debug)]
struct BitReader {
    bytes: Bytes,
    bit_position: usize,
}

impl BitReader {
    fn read_bits(&mut self, count: u8) -> Option<u64> {
        let mut remaining = u32::from(count);
        if self.bit_position + remaining as usize > self.bytes.len() * 8 {
            return None;
        }
        let mut value = 0u64;
        while remaining > 0 {
            let byte = self.bytes[self.bit_position / 8];
            let available = 8 - (self.bit_position % 8) as u32;
            let take = available.min(remaining);
            let bits = (u64::from(byte) >> (available - take)) & ((1u64 << take) - 1);
            value = (value << take) | bits;
            self.bit_position += take as usize;
            remaining -= take;
        }
        Some(value)
    }

    fn read_bit(&mut self) -> Option<bool> {
        self.read_bits(1).map(|bit| bit == 1)
    }

    /// Go's `binary.ReadUvarint` over the bit stream's bytes.
    fn read_uvarint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for index in 0..10 {
            let byte = self.read_bits(8)? as u8;
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

    fn read_varint(&mut self) -> Option<i64> {
        let zigzag = self.read_uvarint()?;
        Some(((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64))
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

/// Iterates the samples of an XOR chunk. Malformed data ends the iteration
/// with an error naming the byte where decoding failed.
#[derive(Clone, Debug)]
pub struct XorIterator {
    reader: BitReader,
    origin: Origin,
    total: u16,
    read: u16,
    t: i64,
    v: u64,
    t_delta: u64,
    leading: u8,
    trailing: u8,
    failed: bool,
}

impl XorIterator {
    /// An iterator over chunk data of unknown origin (errors say "chunk").
    pub fn new(data: Bytes) -> Result<XorIterator> {
        XorIterator::located(data, Origin::unknown())
    }

    pub fn located(data: Bytes, origin: Origin) -> Result<XorIterator> {
        if data.len() < 2 {
            return Err(Error::corrupt(
                &origin.file,
                origin.offset,
                "XOR chunk shorter than its 2-byte header",
            ));
        }
        let total = u16::from_be_bytes([data[0], data[1]]);
        Ok(XorIterator {
            reader: BitReader {
                bytes: data,
                bit_position: 16,
            },
            origin,
            total,
            read: 0,
            t: 0,
            v: 0,
            t_delta: 0,
            leading: 0,
            trailing: 0,
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

    fn fail(&mut self, reason: &str) -> Option<Result<Sample>> {
        self.failed = true;
        let byte = (self.reader.bit_position / 8) as u64;
        Some(Err(Error::corrupt(
            &self.origin.file,
            self.origin.offset + byte,
            format_args!("XOR sample {} of {}: {reason}", self.read + 1, self.total),
        )))
    }

    fn read_first(&mut self) -> Option<()> {
        self.t = self.reader.read_varint()?;
        self.v = self.reader.read_bits(64)?;
        Some(())
    }

    fn read_second(&mut self) -> Option<()> {
        self.t_delta = self.reader.read_uvarint()?;
        self.t = self.t.wrapping_add(self.t_delta as i64);
        self.read_value()
    }

    fn read_later(&mut self) -> Option<()> {
        let mut prefix = 0u8;
        for _ in 0..4 {
            prefix <<= 1;
            if !self.reader.read_bit()? {
                break;
            }
            prefix |= 1;
        }
        let delta_of_delta = match prefix {
            0b0 => 0,
            0b10 => self.read_signed(14)?,
            0b110 => self.read_signed(17)?,
            0b1110 => self.read_signed(20)?,
            _ => self.reader.read_bits(64)? as i64,
        };
        self.t_delta = self.t_delta.wrapping_add(delta_of_delta as u64);
        self.t = self.t.wrapping_add(self.t_delta as i64);
        self.read_value()
    }

    fn read_signed(&mut self, bits: u8) -> Option<i64> {
        let raw = self.reader.read_bits(bits)?;
        // Values above 2^(bits-1) are negative (see `fits_bits`).
        if raw > 1 << (bits - 1) {
            Some(raw as i64 - (1i64 << bits))
        } else {
            Some(raw as i64)
        }
    }

    fn read_value(&mut self) -> Option<()> {
        if !self.reader.read_bit()? {
            return Some(());
        }
        if self.reader.read_bit()? {
            self.leading = self.reader.read_bits(5)? as u8;
            let significant = match self.reader.read_bits(6)? as u8 {
                0 => 64,
                other => other,
            };
            // A corrupt window wider than 64 bits must not underflow.
            self.trailing = 64u8.checked_sub(self.leading)?.checked_sub(significant)?;
        }
        let width = 64 - self.leading - self.trailing;
        let meaningful = self.reader.read_bits(width)?;
        let shifted = if self.trailing >= 64 {
            0
        } else {
            meaningful << self.trailing
        };
        self.v ^= shifted;
        Some(())
    }
}

impl Iterator for XorIterator {
    type Item = Result<Sample>;

    fn next(&mut self) -> Option<Result<Sample>> {
        if self.failed || self.read == self.total {
            return None;
        }
        let decoded = match self.read {
            0 => self.read_first(),
            1 => self.read_second(),
            _ => self.read_later(),
        };
        if decoded.is_none() {
            return self.fail("bit stream ends or holds an impossible value window");
        }
        self.read += 1;
        Some(Ok(Sample {
            t: self.t,
            v: f64::from_bits(self.v),
        }))
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
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_samples_round_trip(samples in arbitrary_samples()) {
            prop_assert_eq!(decode(encode(&samples)), samples);
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
            if let Ok(iterator) = XorIterator::new(Bytes::from(bytes)) {
                for sample in iterator {
                    if sample.is_err() { break; }
                }
            }
        }
    }
}
