//! The index file, format v2 (`tsdb/docs/format/index.md`): a symbol table,
//! series entries aligned to 16 bytes (a series' reference is its offset / 16),
//! label indices, postings lists, the label offset table, the postings offset
//! table and a table of contents, every section guarded by a CRC32C.
//!
//! The writer builds the whole file in memory from series sorted by labels.
//! The reader keeps only the "index header" in memory (symbols and the
//! postings offset table, as Thanos's index-header does) and reads postings
//! and series by byte range.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;

use crate::cache::{BlockCache, CacheKey};
use crate::chunks::ChunkRef;
use crate::encoding::{
    Decoder, check_crc, checked_section, crc32c, pad_to, put_be32, put_be64, put_uvarint,
    put_uvarint_bytes, put_varint,
};
use crate::error::{Error, Result};
use crate::labels::{Label, Labels};
use crate::matcher::Matcher;
use crate::meta::Ulid;
use crate::postings::{decode_postings, encode_postings, intersect, subtract, union};
use crate::read::{RangeRead, nearby_runs, or_alone};

pub const MAGIC_INDEX: u32 = 0xBAAA_D700;
const FORMAT_V2: u8 = 2;
/// Version 3 only announces a different postings encoder; the bytes this
/// crate reads are laid out as in v2.
const FORMAT_V3: u8 = 3;
const HEADER_LEN: u64 = 5;
const TOC_LEN: u64 = 6 * 8 + 4;
const SERIES_ALIGN: u64 = 16;
/// Bytes read at a series' offset before its length is known.
const SERIES_READ_WINDOW: u64 = 512;
/// Series entries this close together are read with one ranged read...
const SERIES_MERGE_GAP: u64 = 16 * 1024;
/// ... up to this many bytes a read.
const SERIES_MERGE_LIMIT: u64 = 8 * 1024 * 1024;
/// Postings lists closer than this are fetched with one read.
const POSTINGS_MERGE_GAP: u64 = 64 * 1024;
const FILE: &str = "index";

/// A series' reference in the index: its entry's offset divided by 16.
pub type SeriesRef = u32;

/// Time range and location of one chunk of a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkMeta {
    /// Timestamp of the first sample, inclusive.
    pub min_time: i64,
    /// Timestamp of the last sample, inclusive.
    pub max_time: i64,
    pub reference: ChunkRef,
}

/// One series entry: its labels and chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesEntry {
    pub labels: Labels,
    pub chunks: Vec<ChunkMeta>,
}

/// The table of contents: where each section starts (0 = absent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Toc {
    symbols: u64,
    series: u64,
    label_indices: u64,
    label_indices_table: u64,
    postings: u64,
    postings_table: u64,
}

impl Toc {
    fn sections(&self) -> [u64; 6] {
        [
            self.symbols,
            self.series,
            self.label_indices,
            self.label_indices_table,
            self.postings,
            self.postings_table,
        ]
    }
}

// ---------------------------------------------------------------- writer

/// Name → value → references of the series holding that pair.
type PostingsMap<'a> = BTreeMap<&'a str, BTreeMap<&'a str, Vec<SeriesRef>>>;

/// Encodes an index for `series`, which must be sorted by labels without
/// duplicates, each with chunks in time order. Returns the file's bytes and
/// each series' reference, in input order.
pub fn write_index(series: &[SeriesEntry]) -> Result<(Vec<u8>, Vec<SeriesRef>)> {
    check_series_order(series)?;
    let mut out = Vec::new();
    put_be32(&mut out, MAGIC_INDEX);
    out.push(FORMAT_V2);
    let symbols = collect_symbols(series);
    let symbol_refs: HashMap<&str, u32> = symbols
        .iter()
        .enumerate()
        .map(|(index, symbol)| (*symbol, index as u32))
        .collect();
    let mut toc = Toc {
        symbols: out.len() as u64,
        ..Toc::default()
    };
    write_symbols(&mut out, &symbols)?;
    toc.series = out.len() as u64;
    let mut postings: PostingsMap = BTreeMap::new();
    let mut references = Vec::with_capacity(series.len());
    for entry in series {
        let reference = write_series_entry(&mut out, entry, &symbol_refs)?;
        for label in entry.labels.iter() {
            let values = postings.entry(label.name.as_str()).or_default();
            values
                .entry(label.value.as_str())
                .or_default()
                .push(reference);
        }
        references.push(reference);
    }
    pad_to(&mut out, 0, 4);
    toc.label_indices = out.len() as u64;
    let label_index_offsets = write_label_indices(&mut out, &postings, &symbol_refs);
    toc.postings = out.len() as u64;
    let postings_offsets = write_postings_lists(&mut out, &postings, &references);
    toc.label_indices_table = out.len() as u64;
    write_offset_table(&mut out, 1, &label_index_offsets);
    toc.postings_table = out.len() as u64;
    write_offset_table(&mut out, 2, &postings_offsets);
    write_toc(&mut out, &toc);
    Ok((out, references))
}

fn check_series_order(series: &[SeriesEntry]) -> Result<()> {
    for pair in series.windows(2) {
        if pair[0].labels >= pair[1].labels {
            return Err(Error::InvalidInput(format!(
                "series {} comes after {}: series must be sorted and unique",
                pair[1].labels, pair[0].labels
            )));
        }
    }
    for entry in series {
        for (index, chunk) in entry.chunks.iter().enumerate() {
            let after_previous = index == 0 || chunk.min_time > entry.chunks[index - 1].max_time;
            if chunk.max_time < chunk.min_time || !after_previous {
                return Err(Error::InvalidInput(format!(
                    "chunks of {} overlap or run backwards",
                    entry.labels
                )));
            }
        }
    }
    Ok(())
}

fn collect_symbols(series: &[SeriesEntry]) -> Vec<&str> {
    let mut symbols = BTreeSet::new();
    for entry in series {
        for label in entry.labels.iter() {
            symbols.insert(label.name.as_str());
            symbols.insert(label.value.as_str());
        }
    }
    symbols.into_iter().collect()
}

fn write_symbols(out: &mut Vec<u8>, symbols: &[&str]) -> Result<()> {
    let mut body = Vec::new();
    put_be32(&mut body, symbols.len() as u32);
    for symbol in symbols {
        put_uvarint_bytes(&mut body, symbol.as_bytes());
    }
    let length = u32::try_from(body.len())
        .map_err(|_| Error::InvalidInput("symbol table exceeds 4 GiB".into()))?;
    put_be32(out, length);
    out.extend_from_slice(&body);
    put_be32(out, crc32c(&body));
    Ok(())
}

fn write_series_entry(
    out: &mut Vec<u8>,
    entry: &SeriesEntry,
    symbol_refs: &HashMap<&str, u32>,
) -> Result<SeriesRef> {
    pad_to(out, 0, SERIES_ALIGN);
    let reference = SeriesRef::try_from(out.len() as u64 / SERIES_ALIGN)
        .map_err(|_| Error::InvalidInput("series section exceeds 64 GiB".into()))?;
    let mut body = Vec::new();
    put_uvarint(&mut body, entry.labels.len() as u64);
    for label in entry.labels.iter() {
        put_uvarint(&mut body, u64::from(symbol_refs[label.name.as_str()]));
        put_uvarint(&mut body, u64::from(symbol_refs[label.value.as_str()]));
    }
    put_uvarint(&mut body, entry.chunks.len() as u64);
    let mut previous: Option<&ChunkMeta> = None;
    for chunk in &entry.chunks {
        match previous {
            None => {
                put_varint(&mut body, chunk.min_time);
                put_uvarint(
                    &mut body,
                    chunk.max_time.wrapping_sub(chunk.min_time) as u64,
                );
                put_uvarint(&mut body, chunk.reference.0);
            }
            Some(last) => {
                put_uvarint(&mut body, chunk.min_time.wrapping_sub(last.max_time) as u64);
                put_uvarint(
                    &mut body,
                    chunk.max_time.wrapping_sub(chunk.min_time) as u64,
                );
                put_varint(
                    &mut body,
                    chunk.reference.0.wrapping_sub(last.reference.0) as i64,
                );
            }
        }
        previous = Some(chunk);
    }
    put_uvarint(out, body.len() as u64);
    out.extend_from_slice(&body);
    put_be32(out, crc32c(&body));
    Ok(reference)
}

/// One label index per name: the sorted symbol references of its values.
/// Prometheus no longer reads them, but older readers do, so they are written.
fn write_label_indices<'a>(
    out: &mut Vec<u8>,
    postings: &PostingsMap<'a>,
    symbol_refs: &HashMap<&str, u32>,
) -> Vec<(&'a str, &'a str, u64)> {
    let mut offsets = Vec::with_capacity(postings.len());
    for (name, values) in postings {
        pad_to(out, 0, 4);
        offsets.push((*name, "", out.len() as u64));
        let mut body = Vec::with_capacity(8 + 4 * values.len());
        put_be32(&mut body, 1);
        put_be32(&mut body, values.len() as u32);
        for value in values.keys() {
            put_be32(&mut body, symbol_refs[value]);
        }
        put_be32(out, body.len() as u32);
        out.extend_from_slice(&body);
        put_be32(out, crc32c(&body));
    }
    offsets
}

/// The postings lists, each aligned to 4 bytes: first the list of all series
/// (the empty name and value), then one per label pair in order.
fn write_postings_lists<'a>(
    out: &mut Vec<u8>,
    postings: &PostingsMap<'a>,
    all: &[SeriesRef],
) -> Vec<(&'a str, &'a str, u64)> {
    let mut offsets = Vec::new();
    pad_to(out, 0, 4);
    offsets.push(("", "", out.len() as u64));
    encode_postings(out, all);
    for (name, values) in postings {
        for (value, references) in values {
            pad_to(out, 0, 4);
            offsets.push((*name, *value, out.len() as u64));
            encode_postings(out, references);
        }
    }
    offsets
}

/// The label offset table (`keys` = 1, the name) or the postings offset table
/// (`keys` = 2, name and value).
fn write_offset_table(out: &mut Vec<u8>, keys: u64, entries: &[(&str, &str, u64)]) {
    let mut body = Vec::new();
    put_be32(&mut body, entries.len() as u32);
    for (name, value, offset) in entries {
        put_uvarint(&mut body, keys);
        put_uvarint_bytes(&mut body, name.as_bytes());
        if keys == 2 {
            put_uvarint_bytes(&mut body, value.as_bytes());
        }
        put_uvarint(&mut body, *offset);
    }
    put_be32(out, body.len() as u32);
    out.extend_from_slice(&body);
    put_be32(out, crc32c(&body));
}

fn write_toc(out: &mut Vec<u8>, toc: &Toc) {
    let start = out.len();
    for section in toc.sections() {
        put_be64(out, section);
    }
    let crc = crc32c(&out[start..]);
    put_be32(out, crc);
}

// ---------------------------------------------------------------- reader

/// Where one postings list lies in the file.
#[derive(Clone, Debug)]
struct PostingsEntry {
    value: String,
    start: u64,
    /// Where the next thing in the file starts: the list ends before it.
    end: u64,
}

/// Reads an index through ranged reads, holding symbols and the postings
/// offset table in memory.
pub struct IndexReader {
    dir: Arc<dyn RangeRead>,
    file_len: u64,
    symbols: Vec<String>,
    postings: BTreeMap<String, Vec<PostingsEntry>>,
    /// Postings lists read before, shared by all blocks, keyed by this
    /// block and each list's offset.
    postings_cache: Option<(Arc<BlockCache<Bytes>>, Ulid)>,
}

impl IndexReader {
    /// Reads the header, TOC, symbol table and postings offset table.
    pub fn open(dir: Arc<dyn RangeRead>) -> Result<IndexReader> {
        let file_len = dir.file_len(FILE)?;
        if file_len < HEADER_LEN + TOC_LEN {
            return Err(Error::corrupt(
                FILE,
                0,
                format_args!("{file_len} bytes is too short for an index"),
            ));
        }
        check_header(&dir.read_range(FILE, 0..HEADER_LEN)?)?;
        let toc = read_toc(
            &dir.read_range(FILE, file_len - TOC_LEN..file_len)?,
            file_len,
        )?;
        let symbols = read_symbols(dir.as_ref(), toc.symbols, file_len - TOC_LEN)?;
        let table = read_section(dir.as_ref(), toc.postings_table, file_len - TOC_LEN)?;
        let mut postings = parse_postings_table(&table, toc.postings_table + 4)?;
        set_postings_ends(&mut postings, &toc, file_len - TOC_LEN);
        Ok(IndexReader {
            dir,
            file_len,
            symbols,
            postings,
            postings_cache: None,
        })
    }

    /// Keeps the postings lists this index reads in `cache`, as `block`'s.
    pub fn cache_postings(&mut self, cache: Arc<BlockCache<Bytes>>, block: Ulid) {
        self.postings_cache = Some((cache, block));
    }

    /// The symbol table: every label name and value, sorted.
    pub fn symbols(&self) -> &[String] {
        &self.symbols
    }

    /// Label names present in the index, sorted.
    pub fn label_names(&self) -> Vec<&str> {
        self.postings
            .keys()
            .filter(|name| !name.is_empty())
            .map(String::as_str)
            .collect()
    }

    /// The values of label `name`, sorted.
    pub fn label_values(&self, name: &str) -> Vec<&str> {
        match self.postings.get(name) {
            Some(entries) if !name.is_empty() => {
                entries.iter().map(|entry| entry.value.as_str()).collect()
            }
            _ => Vec::new(),
        }
    }

    /// References of the series with label `name="value"`.
    pub fn postings(&self, name: &str, value: &str) -> Result<Vec<SeriesRef>> {
        let Some(entries) = self.postings.get(name) else {
            return Ok(Vec::new());
        };
        match entries.binary_search_by(|entry| entry.value.as_str().cmp(value)) {
            Ok(index) => Ok(self
                .read_postings(&[&entries[index]])?
                .pop()
                .unwrap_or_default()),
            Err(_) => Ok(Vec::new()),
        }
    }

    /// References of every series, sorted (the series' order by labels).
    pub fn all_postings(&self) -> Result<Vec<SeriesRef>> {
        self.postings("", "")
    }

    /// The references of the series selected by all `matchers`, sorted.
    pub fn select(&self, matchers: &[Matcher]) -> Result<Vec<SeriesRef>> {
        let mut required: Vec<Vec<SeriesRef>> = Vec::new();
        let mut excluded: Vec<Vec<SeriesRef>> = Vec::new();
        for matcher in matchers {
            let entries = self
                .postings
                .get(&matcher.name)
                .filter(|_| !matcher.name.is_empty());
            let entries: &[PostingsEntry] = entries.map(Vec::as_slice).unwrap_or_default();
            if matcher.matches("") {
                // Accepts series without the label: all, less the values it rejects.
                let rejected: Vec<&PostingsEntry> = entries
                    .iter()
                    .filter(|entry| !matcher.matches(&entry.value))
                    .collect();
                excluded.push(union(self.read_postings(&rejected)?));
            } else {
                let accepted: Vec<&PostingsEntry> = entries
                    .iter()
                    .filter(|entry| matcher.matches(&entry.value))
                    .collect();
                required.push(union(self.read_postings(&accepted)?));
            }
        }
        required.sort_by_key(Vec::len);
        let mut selected = match required.split_first() {
            None => self.all_postings()?,
            Some((smallest, rest)) => rest
                .iter()
                .fold(smallest.clone(), |acc, list| intersect(&acc, list)),
        };
        for list in excluded {
            selected = subtract(&selected, &list);
        }
        Ok(selected)
    }

    /// Reads postings lists: from the cache where it has them, the rest
    /// with one batch of ranged reads, one range for each run of nearby
    /// lists.
    fn read_postings(&self, entries: &[&PostingsEntry]) -> Result<Vec<Vec<SeriesRef>>> {
        let mut lists: Vec<Option<Vec<SeriesRef>>> = vec![None; entries.len()];
        let mut missing: Vec<usize> = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            match self.cached_postings(entry) {
                Some(bytes) => lists[index] = Some(decode_postings(FILE, &bytes, entry.start)?),
                None => missing.push(index),
            }
        }
        let runs = postings_runs(entries, &missing);
        let ranges: Vec<std::ops::Range<u64>> = runs
            .iter()
            .map(|run| entries[run[0]].start..entries[run[run.len() - 1]].end)
            .collect();
        if ranges.is_empty() {
            return Ok(lists.into_iter().map(Option::unwrap_or_default).collect());
        }
        let fetched = self.dir.read_ranges(FILE, &ranges)?;
        for (run, bytes) in runs.iter().zip(fetched) {
            let first = entries[run[0]].start;
            for &index in run {
                let entry = entries[index];
                let list = &bytes[(entry.start - first) as usize..(entry.end - first) as usize];
                lists[index] = Some(decode_postings(FILE, list, entry.start)?);
                self.cache_postings_bytes(entry, list);
            }
        }
        Ok(lists.into_iter().map(Option::unwrap_or_default).collect())
    }

    fn cached_postings(&self, entry: &PostingsEntry) -> Option<Bytes> {
        let (cache, block) = self.postings_cache.as_ref()?;
        cache.get(CacheKey {
            block: *block,
            offset: entry.start,
        })
    }

    fn cache_postings_bytes(&self, entry: &PostingsEntry, list: &[u8]) {
        if let Some((cache, block)) = &self.postings_cache {
            let key = CacheKey {
                block: *block,
                offset: entry.start,
            };
            // A copy: a slice would keep the whole read alive.
            cache.insert(key, Bytes::copy_from_slice(list));
        }
    }

    /// Reads the series entry with reference `reference`.
    pub fn series(&self, reference: SeriesRef) -> Result<SeriesEntry> {
        let offset = self.series_offset(reference)?;
        let limit = self.file_len - TOC_LEN;
        let bytes = self
            .dir
            .read_range(FILE, offset..(offset + SERIES_READ_WINDOW).min(limit))?;
        if let Some(entry) = self.parse_series(&bytes, offset)? {
            return Ok(entry);
        }
        // Longer than the window: its length is known now.
        let (length, needed) = self.series_extent(&bytes, offset)?;
        if offset.saturating_add(needed) > limit {
            return Err(Error::corrupt(
                FILE,
                offset,
                format_args!("series entry of {length} bytes runs past the index"),
            ));
        }
        let bytes = self.dir.read_range(FILE, offset..offset + needed)?;
        self.parse_series(&bytes, offset)?
            .ok_or_else(|| Error::corrupt(FILE, offset, "series entry runs past the index"))
    }

    /// The series entries of `references`, in their order. Entries near
    /// each other are read with one ranged read: a selection reads most
    /// series of a block, and asking for each one alone was the greater
    /// part of a query's time over many blocks.
    pub fn series_many(&self, references: &[SeriesRef]) -> Result<Vec<SeriesEntry>> {
        let positions: Vec<u64> = references
            .iter()
            .map(|reference| u64::from(*reference) * SERIES_ALIGN)
            .collect();
        let mut found: Vec<Option<SeriesEntry>> = vec![None; references.len()];
        let limit = self.file_len - TOC_LEN;
        let runs = nearby_runs(&positions, SERIES_MERGE_GAP, SERIES_MERGE_LIMIT);
        let mut ranges = Vec::with_capacity(runs.len());
        for run in &runs {
            let first = self.series_offset(references[run[0]])?;
            let last = positions[run[run.len() - 1]];
            ranges.push(first..(last + SERIES_READ_WINDOW).min(limit).max(first));
        }
        // One batch: an object store fetches the runs side by side.
        let fetched = self.dir.read_ranges(FILE, &ranges)?;
        for ((run, range), bytes) in runs.iter().zip(&ranges).zip(&fetched) {
            for &index in run {
                let offset = self.series_offset(references[index])?;
                let position = ((offset - range.start) as usize).min(bytes.len());
                found[index] = self.parse_series(&bytes[position..], offset)?;
            }
        }
        or_alone(found, references, |reference| self.series(reference))
    }

    /// Where the entry of `reference` starts, checked to lie in the index.
    fn series_offset(&self, reference: SeriesRef) -> Result<u64> {
        let offset = u64::from(reference) * SERIES_ALIGN;
        if offset < HEADER_LEN || offset >= self.file_len - TOC_LEN {
            return Err(Error::corrupt(
                FILE,
                offset,
                format_args!("series reference {reference} outside the index"),
            ));
        }
        Ok(offset)
    }

    /// The length of the entry at the start of `bytes` (at `offset` in the
    /// file), and the bytes it takes with its length prefix and checksum.
    fn series_extent(&self, bytes: &[u8], offset: u64) -> Result<(u64, u64)> {
        let mut decoder = Decoder::new(FILE, bytes, offset);
        let length = decoder.uvarint()?;
        let prefix = bytes.len() - decoder.remaining();
        Ok((
            length,
            (prefix as u64).saturating_add(length).saturating_add(4),
        ))
    }

    /// The entry at the start of `bytes` (at `offset` in the file), or
    /// `None` when `bytes` end before it does.
    fn parse_series(&self, bytes: &[u8], offset: u64) -> Result<Option<SeriesEntry>> {
        let mut decoder = Decoder::new(FILE, bytes, offset);
        let length = match decoder.uvarint() {
            Ok(length) => length,
            Err(_) if decoder.remaining() < 10 => return Ok(None),
            Err(error) => return Err(error),
        };
        let prefix = bytes.len() - decoder.remaining();
        let needed = (prefix as u64).saturating_add(length).saturating_add(4);
        if needed > bytes.len() as u64 {
            return Ok(None);
        }
        let body = &bytes[prefix..prefix + length as usize];
        check_crc(
            FILE,
            offset + prefix as u64,
            body,
            &bytes[prefix + length as usize..needed as usize],
        )?;
        self.decode_series(body, offset + prefix as u64).map(Some)
    }

    fn decode_series(&self, body: &[u8], offset: u64) -> Result<SeriesEntry> {
        let mut decoder = Decoder::new(FILE, body, offset);
        let label_count = decoder.uvarint_len()?;
        let mut labels = Vec::with_capacity(label_count);
        for _ in 0..label_count {
            let name = self.symbol(&mut decoder)?;
            let value = self.symbol(&mut decoder)?;
            labels.push(Label { name, value });
        }
        let chunk_count = decoder.uvarint_len()?;
        let mut chunks: Vec<ChunkMeta> = Vec::with_capacity(chunk_count);
        for _ in 0..chunk_count {
            let chunk = match chunks.last() {
                None => {
                    let min_time = decoder.varint()?;
                    let max_time = min_time.wrapping_add(decoder.uvarint()? as i64);
                    ChunkMeta {
                        min_time,
                        max_time,
                        reference: ChunkRef(decoder.uvarint()?),
                    }
                }
                Some(last) => {
                    let min_time = last.max_time.wrapping_add(decoder.uvarint()? as i64);
                    let max_time = min_time.wrapping_add(decoder.uvarint()? as i64);
                    let reference =
                        ChunkRef(last.reference.0.wrapping_add(decoder.varint()? as u64));
                    ChunkMeta {
                        min_time,
                        max_time,
                        reference,
                    }
                }
            };
            chunks.push(chunk);
        }
        Ok(SeriesEntry {
            labels: Labels::from_sorted(labels),
            chunks,
        })
    }

    fn symbol(&self, decoder: &mut Decoder<'_>) -> Result<String> {
        let offset = decoder.offset();
        let reference = decoder.uvarint32()?;
        self.symbols
            .get(reference as usize)
            .cloned()
            .ok_or_else(|| {
                Error::corrupt(
                    FILE,
                    offset,
                    format_args!("symbol {reference} of {}", self.symbols.len()),
                )
            })
    }
}

/// Groups the `missing` entries (indices into `entries`, in file order)
/// into runs close enough to fetch with one range each.
fn postings_runs(entries: &[&PostingsEntry], missing: &[usize]) -> Vec<Vec<usize>> {
    let mut runs: Vec<Vec<usize>> = Vec::new();
    for &index in missing {
        let entry = entries[index];
        match runs.last_mut() {
            Some(run) => {
                let previous = entries[run[run.len() - 1]];
                if entry.start >= previous.end && entry.start - previous.end < POSTINGS_MERGE_GAP {
                    run.push(index);
                } else {
                    runs.push(vec![index]);
                }
            }
            None => runs.push(vec![index]),
        }
    }
    runs
}

fn check_header(header: &[u8]) -> Result<()> {
    let mut decoder = Decoder::new(FILE, header, 0);
    let magic = decoder.be32()?;
    if magic != MAGIC_INDEX {
        return Err(Error::corrupt(
            FILE,
            0,
            format_args!("magic {magic:#010x}, want {MAGIC_INDEX:#010x}"),
        ));
    }
    match decoder.byte()? {
        FORMAT_V2 | FORMAT_V3 => Ok(()),
        version => Err(Error::corrupt(
            FILE,
            4,
            format_args!("index format version {version} is not supported (2 and 3 are)"),
        )),
    }
}

fn read_toc(bytes: &[u8], file_len: u64) -> Result<Toc> {
    let start = file_len - TOC_LEN;
    let mut decoder = Decoder::new(FILE, bytes, start);
    let mut sections = [0u64; 6];
    for section in &mut sections {
        let at = decoder.offset();
        *section = decoder.be64()?;
        if *section >= start {
            return Err(Error::corrupt(
                FILE,
                at,
                format_args!("section offset {section} beyond the TOC at {start}"),
            ));
        }
    }
    check_crc(FILE, start, &bytes[..48], decoder.bytes(4)?)?;
    let [
        symbols,
        series,
        label_indices,
        label_indices_table,
        postings,
        postings_table,
    ] = sections;
    Ok(Toc {
        symbols,
        series,
        label_indices,
        label_indices_table,
        postings,
        postings_table,
    })
}

/// Reads a `len <4b> | body | CRC32` section at `offset`, before `limit`.
fn read_section(dir: &dyn RangeRead, offset: u64, limit: u64) -> Result<Vec<u8>> {
    if offset < HEADER_LEN || offset + 8 > limit {
        return Err(Error::corrupt(
            FILE,
            offset,
            "section offset outside the index",
        ));
    }
    let length_bytes = dir.read_range(FILE, offset..offset + 4)?;
    let length = u64::from(u32::from_be_bytes([
        length_bytes[0],
        length_bytes[1],
        length_bytes[2],
        length_bytes[3],
    ]));
    if offset + 8 + length > limit {
        return Err(Error::corrupt(
            FILE,
            offset,
            format_args!("section of {length} bytes runs past the TOC"),
        ));
    }
    let bytes = dir.read_range(FILE, offset..offset + 8 + length)?;
    Ok(checked_section(FILE, &bytes, offset)?.to_vec())
}

fn read_symbols(dir: &dyn RangeRead, offset: u64, limit: u64) -> Result<Vec<String>> {
    let body = read_section(dir, offset, limit)?;
    let mut decoder = Decoder::new(FILE, &body, offset + 4);
    let count = decoder.be32()? as usize;
    // Each symbol takes at least one byte: a corrupt count cannot make us allocate.
    let mut symbols = Vec::with_capacity(count.min(decoder.remaining()));
    for _ in 0..count {
        symbols.push(decoder.uvarint_str()?.to_owned());
    }
    Ok(symbols)
}

fn parse_postings_table(body: &[u8], offset: u64) -> Result<BTreeMap<String, Vec<PostingsEntry>>> {
    let mut decoder = Decoder::new(FILE, body, offset);
    let count = decoder.be32()?;
    let mut table: BTreeMap<String, Vec<PostingsEntry>> = BTreeMap::new();
    for _ in 0..count {
        let at = decoder.offset();
        let keys = decoder.uvarint()?;
        if keys != 2 {
            return Err(Error::corrupt(
                FILE,
                at,
                format_args!("postings offset entry with {keys} keys, want 2"),
            ));
        }
        let name = decoder.uvarint_str()?.to_owned();
        let value = decoder.uvarint_str()?.to_owned();
        let start = decoder.uvarint()?;
        let values = table.entry(name).or_default();
        if values.last().is_some_and(|last| last.value >= value) {
            return Err(Error::corrupt(FILE, at, "postings offset table not sorted"));
        }
        values.push(PostingsEntry {
            value,
            start,
            end: start,
        });
    }
    Ok(table)
}

/// Each list ends where the next list or section starts; knowing the end
/// lets one read fetch a list whole.
fn set_postings_ends(table: &mut BTreeMap<String, Vec<PostingsEntry>>, toc: &Toc, limit: u64) {
    let mut boundaries: Vec<u64> = table.values().flatten().map(|entry| entry.start).collect();
    boundaries.extend(toc.sections());
    boundaries.push(limit);
    boundaries.sort_unstable();
    for entry in table.values_mut().flatten() {
        let next = boundaries.partition_point(|&boundary| boundary <= entry.start);
        // Never before the start, even for a corrupt offset past the limit:
        // slicing relies on start <= end.
        entry.end = boundaries
            .get(next)
            .copied()
            .unwrap_or(limit)
            .min(limit)
            .max(entry.start);
    }
}

#[cfg(test)]
mod tests;
