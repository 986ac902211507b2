//! Chunk segment files (`chunks/000001`, `000002`, ...): an 8-byte header
//! (magic `0x85BD40DD`, version 1, three bytes of padding), then chunks, each
//! `len <uvarint> | encoding <1b> | data <len bytes> | CRC32C(encoding, data)`.
//! A chunk reference is `segment index << 32 | byte offset`, the segment index
//! counting from 0 for `000001`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::cache::{BlockCache, CacheKey};
use crate::chunkenc::{Chunk, Encoding, Origin};
use crate::encoding::{Decoder, check_crc, crc32c, put_uvarint};
use crate::error::{Error, Result};
use crate::meta::Ulid;
use crate::read::{RangeRead, nearby_runs, or_alone};

pub const MAGIC_CHUNKS: u32 = 0x85BD_40DD;
const FORMAT_V1: u8 = 1;
pub const SEGMENT_HEADER_LEN: u64 = 8;
/// Prometheus's default: segments are cut before they pass 512 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 512 * 1024 * 1024;
/// Bytes read at a chunk's offset before its length is known: a full
/// 120-sample XOR chunk is usually well under this.
const CHUNK_READ_WINDOW: u64 = 1024;
/// [`ChunkReader::chunks`] reads chunks this close together in one range:
/// reading the bytes between them costs less than another request.
const CHUNK_MERGE_GAP: u64 = 16 * 1024;
/// ... up to this many bytes a read.
const CHUNK_MERGE_LIMIT: u64 = 8 * 1024 * 1024;

/// Where a chunk lives: segment index in the high 32 bits, offset in the low.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkRef(pub u64);

impl ChunkRef {
    pub fn new(segment: u32, offset: u32) -> ChunkRef {
        ChunkRef(u64::from(segment) << 32 | u64::from(offset))
    }

    pub fn segment(self) -> u32 {
        (self.0 >> 32) as u32
    }

    pub fn offset(self) -> u32 {
        self.0 as u32
    }
}

/// The file name of segment `index` (0 → `chunks/000001`).
pub fn segment_file(index: u32) -> String {
    format!("chunks/{:06}", u64::from(index) + 1)
}

/// Appends one chunk record (length, encoding, data, CRC) to `out`.
pub fn encode_chunk(out: &mut Vec<u8>, encoding: Encoding, data: &[u8]) {
    put_uvarint(out, data.len() as u64);
    let start = out.len();
    out.push(encoding.as_byte());
    out.extend_from_slice(data);
    let crc = crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

fn segment_header() -> [u8; 8] {
    let mut header = [0u8; 8];
    header[..4].copy_from_slice(&MAGIC_CHUNKS.to_be_bytes());
    header[4] = FORMAT_V1;
    header
}

/// Decodes the chunk record at `position` of `bytes`, which hold `file` from
/// byte `base` on. Returns the chunk and the position after its CRC; `None`
/// when `bytes` end before the record does (the caller reads more).
fn decode_chunk(
    file: &Arc<str>,
    bytes: &Bytes,
    base: u64,
    position: usize,
) -> Result<Option<(Chunk, usize)>> {
    let mut decoder = Decoder::new(file, &bytes[position..], base + position as u64);
    let data_len = match decoder.uvarint() {
        Ok(length) => length,
        Err(_) if decoder.remaining() < 10 => return Ok(None),
        Err(error) => return Err(error),
    };
    let header_len = bytes.len() - position - decoder.remaining();
    let record_len = (header_len as u64)
        .saturating_add(data_len)
        .saturating_add(5);
    if record_len > (bytes.len() - position) as u64 {
        return Ok(None);
    }
    let encoding_offset = decoder.offset();
    let encoding_byte = decoder.byte()?;
    let data = decoder.bytes(data_len as usize)?;
    let stored = decoder.bytes(4)?;
    let checked = &bytes[position + header_len..position + header_len + 1 + data.len()];
    check_crc(file, encoding_offset, checked, stored)?;
    let encoding = Encoding::from_byte(encoding_byte).ok_or_else(|| {
        Error::corrupt(
            file,
            encoding_offset,
            format_args!("unknown chunk encoding {encoding_byte}"),
        )
    })?;
    let data_start = position + header_len + 1;
    let origin = Origin {
        file: file.clone(),
        offset: base + data_start as u64,
    };
    let chunk = Chunk::new(
        encoding,
        bytes.slice(data_start..data_start + data.len()),
        origin,
    );
    Ok(Some((chunk, position + record_len as usize)))
}

/// Writes chunks into numbered segment files under `<block>/chunks/`.
pub struct ChunkWriter {
    dir: PathBuf,
    segment_size: u64,
    segment: Option<BufWriter<File>>,
    segment_index: u32,
    position: u64,
    record: Vec<u8>,
}

impl ChunkWriter {
    /// Creates `<block_dir>/chunks`; `segment_size` bounds each file.
    pub fn new(block_dir: &Path, segment_size: u64) -> Result<ChunkWriter> {
        let dir = block_dir.join("chunks");
        std::fs::create_dir_all(&dir).map_err(|source| Error::io("chunks", "create", source))?;
        Ok(ChunkWriter {
            dir,
            segment_size: segment_size.clamp(SEGMENT_HEADER_LEN + 1, u64::from(u32::MAX)),
            segment: None,
            segment_index: 0,
            position: 0,
            record: Vec::new(),
        })
    }

    /// Writes one chunk and returns its reference.
    pub fn write(&mut self, encoding: Encoding, data: &[u8]) -> Result<ChunkRef> {
        self.record.clear();
        encode_chunk(&mut self.record, encoding, data);
        let record_len = self.record.len() as u64;
        let needs_new_segment = match self.segment {
            None => true,
            Some(_) => self.position + record_len > self.segment_size,
        };
        if needs_new_segment {
            self.cut()?;
        }
        let reference = ChunkRef::new(self.segment_index, self.position as u32);
        let file = segment_file(self.segment_index);
        let Some(segment) = self.segment.as_mut() else {
            return Err(Error::InvalidInput("no open chunk segment".into()));
        };
        segment
            .write_all(&self.record)
            .map_err(|source| Error::io(&file, "write", source))?;
        self.position += record_len;
        Ok(reference)
    }

    fn cut(&mut self) -> Result<()> {
        if self.segment.is_some() {
            self.finish_segment()?;
            self.segment_index += 1;
        }
        let file = segment_file(self.segment_index);
        let path = self.dir.join(&file["chunks/".len()..]);
        let handle = File::create(&path).map_err(|source| Error::io(&file, "create", source))?;
        let mut writer = BufWriter::new(handle);
        writer
            .write_all(&segment_header())
            .map_err(|source| Error::io(&file, "write", source))?;
        self.segment = Some(writer);
        self.position = SEGMENT_HEADER_LEN;
        Ok(())
    }

    fn finish_segment(&mut self) -> Result<()> {
        let file = segment_file(self.segment_index);
        if let Some(writer) = self.segment.take() {
            let handle = writer
                .into_inner()
                .map_err(|error| Error::io(&file, "flush", error.into_error()))?;
            handle
                .sync_all()
                .map_err(|source| Error::io(&file, "sync", source))?;
        }
        Ok(())
    }

    /// Flushes and syncs the last segment. A block without chunks still gets
    /// an empty `chunks/` directory, as Prometheus leaves it.
    pub fn finish(mut self) -> Result<()> {
        self.finish_segment()
    }
}

/// Reads chunks by reference from a block's segment files.
pub struct ChunkReader {
    dir: Arc<dyn RangeRead>,
    /// Name and length of each segment, in segment-index order.
    segments: Vec<(Arc<str>, u64)>,
    /// Chunks read before, shared by all blocks, keyed by this block and
    /// each chunk's reference.
    cache: Option<(Arc<BlockCache<Chunk>>, Ulid)>,
}

impl ChunkReader {
    /// Lists `chunks/` and checks each segment's header.
    pub fn open(dir: Arc<dyn RangeRead>) -> Result<ChunkReader> {
        let names = if dir.exists("chunks")? {
            dir.list("chunks")?
        } else {
            Vec::new()
        };
        let mut segments = Vec::new();
        for (index, name) in names.iter().enumerate() {
            let file = segment_file(index as u32);
            if format!("chunks/{name}") != file {
                return Err(Error::corrupt(
                    &file,
                    0,
                    format_args!("segment {name} out of sequence"),
                ));
            }
            let length = dir.file_len(&file)?;
            let header = dir.read_range(&file, 0..SEGMENT_HEADER_LEN.min(length))?;
            check_segment_header(&file, &header)?;
            segments.push((Arc::from(file), length));
        }
        Ok(ChunkReader {
            dir,
            segments,
            cache: None,
        })
    }

    /// Keeps the chunks this reader reads in `cache`, as `block`'s.
    pub fn cache_chunks(&mut self, cache: Arc<BlockCache<Chunk>>, block: Ulid) {
        self.cache = Some((cache, block));
    }

    fn cache_key(&self, reference: ChunkRef) -> Option<(&BlockCache<Chunk>, CacheKey)> {
        let (cache, block) = self.cache.as_ref()?;
        let key = CacheKey {
            block: *block,
            offset: reference.0,
        };
        Some((cache.as_ref(), key))
    }

    fn remember(&self, reference: ChunkRef, chunk: &Chunk, prefetched: bool) {
        if let Some((cache, key)) = self.cache_key(reference) {
            // A copy: a slice would keep the whole read alive.
            let data = Bytes::copy_from_slice(chunk.data());
            let copy = Chunk::new(chunk.encoding(), data, chunk.origin().clone());
            match prefetched {
                true => cache.insert_prefetched(key, copy),
                false => cache.insert(key, copy),
            }
        }
    }

    /// Fetches the chunks at `references` that the cache lacks, with one
    /// batch of ranged reads per segment, into the cache (nothing without
    /// a cache). A chunk that does not decode is left for [`Self::chunk`]
    /// to report when it is read.
    pub fn prefetch(&self, references: &[ChunkRef]) -> Result<()> {
        let mut missing: Vec<ChunkRef> = references
            .iter()
            .copied()
            .filter(|reference| {
                self.cache_key(*reference)
                    .is_some_and(|(cache, key)| !cache.contains(key))
            })
            .collect();
        missing.sort_unstable();
        missing.dedup();
        for same_segment in missing.chunk_by(|a, b| a.segment() == b.segment()) {
            self.prefetch_segment(same_segment)?;
        }
        Ok(())
    }

    fn prefetch_segment(&self, references: &[ChunkRef]) -> Result<()> {
        let Some((file, length)) = self.segments.get(references[0].segment() as usize) else {
            return Ok(());
        };
        let starts: Vec<u64> = references
            .iter()
            .map(|reference| u64::from(reference.offset()))
            .filter(|start| *start >= SEGMENT_HEADER_LEN && start < length)
            .collect();
        // Overlapping windows become one range.
        let mut windows: Vec<std::ops::Range<u64>> = Vec::new();
        for &start in &starts {
            let end = (start + CHUNK_READ_WINDOW).min(*length);
            match windows.last_mut() {
                Some(last) if start <= last.end => last.end = last.end.max(end),
                _ => windows.push(start..end),
            }
        }
        let fetched = self.dir.read_ranges(file, &windows)?;
        for start in starts {
            let window = windows.partition_point(|window| window.start <= start) - 1;
            let base = windows[window].start;
            let position = (start - base) as usize;
            if let Ok(Some((chunk, _))) = decode_chunk(file, &fetched[window], base, position) {
                let reference = ChunkRef::new(references[0].segment(), start as u32);
                self.remember(reference, &chunk, true);
            }
        }
        Ok(())
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The chunk at `reference`, from the cache when it has it.
    pub fn chunk(&self, reference: ChunkRef) -> Result<Chunk> {
        if let Some((cache, key)) = self.cache_key(reference)
            && let Some(chunk) = cache.get(key)
        {
            return Ok(chunk);
        }
        let chunk = self.read_chunk(reference)?;
        self.remember(reference, &chunk, false);
        Ok(chunk)
    }

    /// Reads the chunk at `reference` from its segment.
    fn read_chunk(&self, reference: ChunkRef) -> Result<Chunk> {
        let Some((file, length)) = self.segments.get(reference.segment() as usize) else {
            return Err(Error::corrupt(
                "chunks",
                u64::from(reference.offset()),
                format_args!(
                    "chunk reference {:#x} names segment {} of {}",
                    reference.0,
                    reference.segment(),
                    self.segments.len()
                ),
            ));
        };
        let start = u64::from(reference.offset());
        if start < SEGMENT_HEADER_LEN || start >= *length {
            return Err(Error::corrupt(
                file,
                start,
                "chunk reference outside the segment's chunks",
            ));
        }
        let window = self
            .dir
            .read_range(file, start..(start + CHUNK_READ_WINDOW).min(*length))?;
        if let Some((chunk, _)) = decode_chunk(file, &window, start, 0)? {
            return Ok(chunk);
        }
        // Longer than the window: the record's length is now known.
        let whole = self.dir.read_range(file, start..*length)?;
        match decode_chunk(file, &whole, start, 0)? {
            Some((chunk, _)) => Ok(chunk),
            None => Err(Error::corrupt(
                file,
                start,
                "chunk runs past the end of the segment",
            )),
        }
    }
}

impl ChunkReader {
    /// The chunks at `references`, in their order: from the cache where it
    /// has them, the rest read in runs of chunks near each other in a
    /// segment (a query wants most chunks of a block, and they lie in
    /// series order), all runs in one batch of ranged reads. Each chunk's
    /// bytes are copied out of its run, so that a chunk kept holds only its
    /// own.
    pub fn chunks(&self, references: &[ChunkRef]) -> Result<Vec<Chunk>> {
        let mut found: Vec<Option<Chunk>> = references
            .iter()
            .map(|reference| {
                let (cache, key) = self.cache_key(*reference)?;
                cache.get(key)
            })
            .collect();
        let missing: Vec<usize> = (0..references.len())
            .filter(|index| found[*index].is_none())
            .collect();
        // A reference's bits order chunks by segment, then offset; segments
        // are far apart in that order, so no run crosses from one to another.
        let positions: Vec<u64> = missing.iter().map(|index| references[*index].0).collect();
        let runs: Vec<Vec<usize>> = nearby_runs(&positions, CHUNK_MERGE_GAP, CHUNK_MERGE_LIMIT)
            .into_iter()
            .map(|run| run.into_iter().map(|at| missing[at]).collect())
            .collect();
        for (index, chunk) in self.read_runs(references, &runs)? {
            self.remember(references[index], &chunk, false);
            found[index] = Some(chunk);
        }
        or_alone(found, references, |reference| self.chunk(reference))
    }

    /// Reads the chunks of `runs` (each indices into `references`, by
    /// offset, in one segment), one range a run, all in one batch; a chunk
    /// that runs past its range is left out, for the caller to read alone.
    fn read_runs(
        &self,
        references: &[ChunkRef],
        runs: &[Vec<usize>],
    ) -> Result<Vec<(usize, Chunk)>> {
        let mut out = Vec::new();
        for same_segment in
            runs.chunk_by(|a, b| references[a[0]].segment() == references[b[0]].segment())
        {
            let segment = references[same_segment[0][0]].segment();
            let Some((file, length)) = self.segments.get(segment as usize) else {
                continue;
            };
            let ranges: Vec<std::ops::Range<u64>> = same_segment
                .iter()
                .map(|run| {
                    let start = u64::from(references[run[0]].offset());
                    let last = u64::from(references[run[run.len() - 1]].offset());
                    start..(last + CHUNK_READ_WINDOW).min(*length).max(start)
                })
                .collect();
            let valid: Vec<bool> = ranges
                .iter()
                .map(|range| range.start >= SEGMENT_HEADER_LEN && range.start < range.end)
                .collect();
            let wanted: Vec<std::ops::Range<u64>> = ranges
                .iter()
                .zip(&valid)
                .filter(|(_, ok)| **ok)
                .map(|(range, _)| range.clone())
                .collect();
            let mut fetched = self.dir.read_ranges(file, &wanted)?.into_iter();
            for ((run, range), ok) in same_segment.iter().zip(&ranges).zip(valid) {
                if !ok {
                    continue;
                }
                let bytes = fetched.next().unwrap_or_default();
                for &index in run {
                    let position = (u64::from(references[index].offset()) - range.start) as usize;
                    if position >= bytes.len() {
                        continue;
                    }
                    if let Some((chunk, _)) = decode_chunk(file, &bytes, range.start, position)? {
                        out.push((index, chunk.detached()));
                    }
                }
            }
        }
        Ok(out)
    }
}

fn check_segment_header(file: &str, header: &[u8]) -> Result<()> {
    let mut decoder = Decoder::new(file, header, 0);
    let magic = decoder.be32()?;
    if magic != MAGIC_CHUNKS {
        return Err(Error::corrupt(
            file,
            0,
            format_args!("magic {magic:#010x}, want {MAGIC_CHUNKS:#010x}"),
        ));
    }
    let version = decoder.byte()?;
    if version != FORMAT_V1 {
        return Err(Error::corrupt(
            file,
            4,
            format_args!("unknown chunks format version {version}"),
        ));
    }
    Ok(())
}

/// Decodes every chunk of a whole segment held in memory (tests, tools).
pub fn decode_segment(file: &str, bytes: Bytes) -> Result<Vec<(ChunkRef, Chunk)>> {
    check_segment_header(file, &bytes)?;
    let name: Arc<str> = Arc::from(file);
    let mut position = SEGMENT_HEADER_LEN as usize;
    let mut chunks = Vec::new();
    while position < bytes.len() {
        match decode_chunk(&name, &bytes, 0, position)? {
            Some((chunk, next)) => {
                chunks.push((ChunkRef::new(0, position as u32), chunk));
                position = next;
            }
            None => return Err(Error::corrupt(file, position as u64, "truncated chunk")),
        }
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::chunkenc::XorEncoder;
    use crate::read::MemDir;

    fn segment_of(chunks: &[(Encoding, Vec<u8>)]) -> Vec<u8> {
        let mut bytes = segment_header().to_vec();
        for (encoding, data) in chunks {
            encode_chunk(&mut bytes, *encoding, data);
        }
        bytes
    }

    fn xor_chunk(count: i64) -> Vec<u8> {
        let mut encoder = XorEncoder::new();
        for index in 0..count {
            encoder.append(index * 15_000, index as f64 * 0.5).unwrap();
        }
        encoder.into_bytes()
    }

    #[test]
    fn reads_prometheus_segment_bytes() {
        // A whole segment promtool 2.42 wrote: one XOR chunk of three samples.
        let bytes: &[u8] = &[
            0x85, 0xbd, 0x40, 0xdd, 0x01, 0, 0, 0, 0x12, 0x01, 0x00, 0x03, 0xd0, 0x0f, 0x3f, 0xf0,
            0, 0, 0, 0, 0, 0, 0xe8, 0x07, 0x30, 0x97, 0xff, 0xc0, 0x79, 0x61, 0x73, 0x68,
        ];
        let chunks = decode_segment("chunks/000001", Bytes::from_static(bytes)).unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].0, ChunkRef::new(0, 8));
        assert_eq!(chunks[0].1.num_samples(), 3);
        assert_eq!(
            segment_of(&[(Encoding::Xor, chunks[0].1.data().to_vec())]),
            bytes
        );
    }

    #[test]
    fn reader_finds_chunks_by_reference_across_segments() {
        let dir = std::env::temp_dir().join(format!("sluice-block-chunks-{}", std::process::id()));
        let mut writer = ChunkWriter::new(&dir, 600).unwrap();
        let big = xor_chunk(400);
        let written: Vec<(ChunkRef, Vec<u8>)> = [xor_chunk(3), big.clone(), xor_chunk(120), big]
            .into_iter()
            .map(|data| (writer.write(Encoding::Xor, &data).unwrap(), data))
            .collect();
        writer.finish().unwrap();
        let reader = ChunkReader::open(Arc::new(crate::read::LocalDir::new(&dir))).unwrap();
        assert!(reader.segment_count() >= 2);
        for (reference, data) in &written {
            assert_eq!(
                reader.chunk(*reference).unwrap().data().as_ref(),
                data.as_slice()
            );
        }
        // In batches too: any order, repeats, chunks longer than a read's
        // window (the 400-sample ones) and across segments.
        let order = [3, 0, 2, 0, 1, 2, 3];
        let references: Vec<ChunkRef> = order.iter().map(|index| written[*index].0).collect();
        let batch = reader.chunks(&references).unwrap();
        for (chunk, index) in batch.iter().zip(order) {
            assert_eq!(chunk.data().as_ref(), written[index].1.as_slice());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_flipped_bit_is_a_checksum_error_naming_the_segment() {
        let mut bytes = segment_of(&[(Encoding::Xor, xor_chunk(10))]);
        bytes[12] ^= 1;
        let mut dir = MemDir::new();
        dir.insert("chunks/000001", bytes);
        let reader = ChunkReader::open(Arc::new(dir)).unwrap();
        let error = reader.chunk(ChunkRef::new(0, 8)).unwrap_err().to_string();
        assert!(
            error.starts_with("chunks/000001: checksum mismatch for bytes 9.."),
            "{error}"
        );
        let batch_error = reader.chunks(&[ChunkRef::new(0, 8)]).unwrap_err();
        assert_eq!(batch_error.to_string(), error);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(sluice_testkit::fuzz_cases(256)))]

        #[test]
        fn mutated_segments_never_panic(
            sizes in prop::collection::vec(0i64..300, 1..5),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
            cut in any::<prop::sample::Index>(),
            reference in any::<u64>(),
        ) {
            let chunks: Vec<(Encoding, Vec<u8>)> = sizes.iter().map(|&size| (Encoding::Xor, xor_chunk(size))).collect();
            let mut bytes = segment_of(&chunks);
            for (index, byte) in flips {
                let position = index.index(bytes.len());
                bytes[position] ^= byte;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            let _ = decode_segment("chunks/000001", Bytes::from(bytes.clone()));
            let mut dir = MemDir::new();
            dir.insert("chunks/000001", bytes);
            if let Ok(reader) = ChunkReader::open(Arc::new(dir)) {
                let _ = reader.chunk(ChunkRef(reference % 4096));
                let _ = reader.chunks(&[ChunkRef(reference % 4096), ChunkRef::new(0, 8), ChunkRef(reference >> 52)]);
                if let Ok(samples) = reader.chunk(ChunkRef::new(0, 8)).and_then(|chunk| chunk.float_samples()) {
                    samples.for_each(drop);
                }
            }
        }
    }
}
