//! Postings lists: sorted series references (`offset / 16` of each series
//! entry) for one label pair, stored as `len <4b> | #entries <4b> | ref <4b>
//! ... | CRC32`, and the set operations that answer label matchers.

use crate::encoding::{Decoder, check_crc, crc32c, put_be32};
use crate::error::{Error, Result};

/// Appends an encoded postings list to `out`.
pub(crate) fn encode_postings(out: &mut Vec<u8>, references: &[u32]) {
    put_be32(out, 4 + 4 * references.len() as u32);
    let body_start = out.len();
    put_be32(out, references.len() as u32);
    for &reference in references {
        put_be32(out, reference);
    }
    let crc = crc32c(&out[body_start..]);
    put_be32(out, crc);
}

/// Decodes the postings list at the start of `bytes`, which hold `file` from
/// `offset` on and may run past the list.
pub(crate) fn decode_postings(file: &str, bytes: &[u8], offset: u64) -> Result<Vec<u32>> {
    let mut decoder = Decoder::new(file, bytes, offset);
    let length = decoder.be32()? as usize;
    let body = decoder.bytes(length)?;
    check_crc(file, offset + 4, body, decoder.bytes(4)?)?;
    let mut body_decoder = Decoder::new(file, body, offset + 4);
    let count = body_decoder.be32()? as usize;
    if count.checked_mul(4) != Some(length.saturating_sub(4)) {
        return Err(Error::corrupt(
            file,
            offset + 4,
            format_args!("postings list of {count} entries in {length} bytes"),
        ));
    }
    let mut references = Vec::with_capacity(count);
    for _ in 0..count {
        let at = body_decoder.offset();
        let reference = body_decoder.be32()?;
        if references.last().is_some_and(|&last| last >= reference) {
            return Err(Error::corrupt(file, at, "postings not strictly increasing"));
        }
        references.push(reference);
    }
    Ok(references)
}

/// The references in both sorted lists.
pub(crate) fn intersect(left: &[u32], right: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(left.len().min(right.len()));
    let (mut left_index, mut right_index) = (0, 0);
    while left_index < left.len() && right_index < right.len() {
        match left[left_index].cmp(&right[right_index]) {
            std::cmp::Ordering::Less => left_index += 1,
            std::cmp::Ordering::Greater => right_index += 1,
            std::cmp::Ordering::Equal => {
                out.push(left[left_index]);
                left_index += 1;
                right_index += 1;
            }
        }
    }
    out
}

/// The references of `left` not in `right` (both sorted).
pub(crate) fn subtract(left: &[u32], right: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(left.len());
    let mut right_index = 0;
    for &reference in left {
        while right_index < right.len() && right[right_index] < reference {
            right_index += 1;
        }
        if right.get(right_index) != Some(&reference) {
            out.push(reference);
        }
    }
    out
}

/// The sorted union of sorted lists. Sorting the concatenation is simpler
/// than a heap merge and as fast for the few lists a matcher selects.
pub(crate) fn union(lists: Vec<Vec<u32>>) -> Vec<u32> {
    let mut out: Vec<u32> = lists.into_iter().flatten().collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn round_trips() {
        let mut bytes = Vec::new();
        encode_postings(&mut bytes, &[1, 5, 9]);
        bytes.extend_from_slice(b"trailing bytes of the next section");
        assert_eq!(decode_postings("index", &bytes, 0).unwrap(), vec![1, 5, 9]);
    }

    #[test]
    fn set_operations() {
        assert_eq!(intersect(&[1, 3, 5, 7], &[3, 4, 7]), vec![3, 7]);
        assert_eq!(subtract(&[1, 3, 5, 7], &[3, 4, 7]), vec![1, 5]);
        assert_eq!(
            union(vec![vec![1, 5], vec![2, 5, 9], vec![]]),
            vec![1, 2, 5, 9]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(sluice_testkit::fuzz_cases(256)))]

        #[test]
        fn mutated_postings_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_postings("index", &bytes, 0);
        }
    }
}
