//! What one WAL record holds: the samples of one accepted write of one
//! tenant, and the series that write created. A series' labels are written
//! once, when it is created, and referred to by a number afterwards (as
//! Prometheus's WAL does), so a steady stream of samples costs about 12 to
//! 20 bytes a sample, not its labels again.
//!
//! Layout: a version byte (1); the tenant (uvarint length, bytes); the new
//! series (uvarint count; each a uvarint reference and a uvarint count of
//! label pairs, each name and value length-prefixed); the samples (uvarint
//! count; each a uvarint reference, a zigzag varint timestamp and the
//! value's 8 bytes, little-endian, bit for bit).

use crate::WalError;

const VERSION: u8 = 1;

/// One write, decoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Entry {
    pub tenant: String,
    /// Series created by this write: their reference and labels.
    pub series: Vec<(u64, Vec<(String, String)>)>,
    /// (series reference, timestamp ms, value).
    pub samples: Vec<(u64, i64, f64)>,
}

fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_uvarint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

impl Entry {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.samples.len() * 16);
        out.push(VERSION);
        put_bytes(&mut out, self.tenant.as_bytes());
        put_uvarint(&mut out, self.series.len() as u64);
        for (reference, labels) in &self.series {
            put_uvarint(&mut out, *reference);
            put_uvarint(&mut out, labels.len() as u64);
            for (name, value) in labels {
                put_bytes(&mut out, name.as_bytes());
                put_bytes(&mut out, value.as_bytes());
            }
        }
        put_uvarint(&mut out, self.samples.len() as u64);
        for (reference, t, v) in &self.samples {
            put_uvarint(&mut out, *reference);
            put_uvarint(&mut out, ((*t << 1) ^ (*t >> 63)) as u64);
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        out
    }

    /// Decodes a record; any malformation is an error naming its offset.
    pub fn decode(bytes: &[u8]) -> Result<Entry, WalError> {
        let mut reader = Reader { bytes, offset: 0 };
        let version = reader.byte()?;
        if version != VERSION {
            return Err(reader.fail(format!("unknown record version {version}")));
        }
        let tenant = reader.string()?;
        let series_count = reader.count(2)?;
        let mut series = Vec::with_capacity(series_count);
        for _ in 0..series_count {
            let reference = reader.uvarint()?;
            let label_count = reader.count(2)?;
            let mut labels = Vec::with_capacity(label_count);
            for _ in 0..label_count {
                labels.push((reader.string()?, reader.string()?));
            }
            series.push((reference, labels));
        }
        let sample_count = reader.count(10)?;
        let mut samples = Vec::with_capacity(sample_count);
        for _ in 0..sample_count {
            let reference = reader.uvarint()?;
            let zigzag = reader.uvarint()?;
            let t = ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64);
            let v = f64::from_bits(u64::from_le_bytes(
                reader.take(8)?.try_into().unwrap_or_default(),
            ));
            samples.push((reference, t, v));
        }
        if reader.offset != bytes.len() {
            return Err(reader.fail("trailing bytes after the samples".into()));
        }
        Ok(Entry {
            tenant,
            series,
            samples,
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl Reader<'_> {
    fn fail(&self, reason: String) -> WalError {
        WalError::Record {
            offset: self.offset,
            reason,
        }
    }

    fn take(&mut self, length: usize) -> Result<&[u8], WalError> {
        let end = self
            .offset
            .checked_add(length)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| self.fail(format!("{length} bytes needed, record ends")))?;
        let slice = &self.bytes[self.offset..end];
        self.offset = end;
        Ok(slice)
    }

    fn byte(&mut self) -> Result<u8, WalError> {
        Ok(self.take(1)?[0])
    }

    fn uvarint(&mut self) -> Result<u64, WalError> {
        let mut value = 0u64;
        for index in 0..10 {
            let byte = self.byte()?;
            if index == 9 && byte > 1 {
                break;
            }
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(self.fail("varint overflows 64 bits".into()))
    }

    /// A count of items each at least `min_bytes` long, so a corrupt count
    /// cannot make the decoder reserve more than the record could hold.
    fn count(&mut self, min_bytes: usize) -> Result<usize, WalError> {
        let count = self.uvarint()?;
        let left = (self.bytes.len() - self.offset) as u64;
        if count.saturating_mul(min_bytes as u64) > left {
            return Err(self.fail(format!("count {count} exceeds what the record holds")));
        }
        Ok(count as usize)
    }

    fn string(&mut self) -> Result<String, WalError> {
        let length = self.uvarint()?;
        let length = usize::try_from(length).map_err(|_| self.fail("length overflows".into()))?;
        let bytes = self.take(length)?.to_vec();
        String::from_utf8(bytes).map_err(|_| self.fail("string is not UTF-8".into()))
    }
}
