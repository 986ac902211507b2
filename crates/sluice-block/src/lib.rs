//! Reader and writer of the Prometheus TSDB block format, written from the
//! specification (`tsdb/docs/format`): XOR chunks, chunk segment files, the
//! index (format v2), `meta.json` and tombstones. sluice stores its data as
//! ordinary Prometheus blocks so that a Prometheus data directory, a Thanos or
//! Mimir bucket and sluice's own store are one thing; this crate is the bytes
//! of that contract. Readers go through [`RangeRead`], so they fetch only the
//! ranges a query needs: the index header (symbols and postings offsets) once,
//! then postings, series and chunks by byte range.
//!
//! Every decoder of outside bytes returns an [`Error`] naming the file and the
//! offset where the bytes went wrong, and never panics (property tests feed
//! them mutated input).

pub mod block;
pub mod cache;
pub mod chunkenc;
pub mod chunks;
mod encoding;
pub mod error;
pub mod index;
pub mod labels;
pub mod matcher;
pub mod meta;
mod postings;
pub mod read;
pub mod tombstones;
pub mod writer;

pub use block::{Block, BlockSeries, SeriesSamples, Shard};
pub use cache::{BlockCache, BlockCaches, CacheKey, CacheStats};
pub use chunkenc::{
    Chunk, Encoding, Origin, STALE_NAN, Sample, XorDecoder, XorEncoder, XorIterator,
    decode_xor_into,
};
pub use chunks::{ChunkReader, ChunkRef, ChunkWriter};
pub use encoding::crc32c;
pub use error::{Error, Result};
pub use index::{ChunkMeta, IndexReader, SeriesEntry, SeriesRef};
pub use labels::{Label, Labels};
pub use matcher::{MatchOp, Matcher};
pub use meta::{BlockMeta, BlockStats, Compaction, Ulid};
pub use read::{LocalDir, MemDir, RangeRead};
pub use tombstones::{Interval, Tombstones};
pub use writer::{BlockWriter, SAMPLES_PER_CHUNK};
