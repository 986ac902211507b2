//! gzip for answers, when the client asks for it.
//!
//! Grafana's data source client (Go's `net/http`) sends `Accept-Encoding:
//! gzip` on every request, and Prometheus honours it; a week-long range
//! answer is megabytes of JSON that compress about tenfold. Answers that
//! are kept (the answer memo) keep their compressed form too, so a repeat
//! costs neither encoding nor compression.

use http::{HeaderMap, HeaderValue, header};

/// Bodies smaller than this go as they are: below about one packet,
/// compressing saves nothing on the wire and costs CPU.
pub(crate) const MIN_COMPRESSED_LEN: usize = 1024;

/// Whether `Accept-Encoding` allows gzip: listed as `gzip` or `x-gzip`, or
/// covered by `*`, with a non-zero quality (RFC 9110, section 12.5.3).
pub(crate) fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut any = None;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or_default().trim();
            let quality = parts
                .filter_map(|parameter| {
                    let (name, value) = parameter.split_once('=')?;
                    name.trim()
                        .eq_ignore_ascii_case("q")
                        .then(|| value.trim().parse::<f32>().ok())?
                })
                .next()
                .unwrap_or(1.0);
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                gzip = Some(quality > 0.0);
            } else if coding == "*" {
                any = Some(quality > 0.0);
            }
        }
    }
    gzip.or(any).unwrap_or(false)
}

/// How hard to compress.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Effort {
    /// The fastest level, for answers compressed on the request path.
    Fast,
    /// zlib's default level, for answers compressed once and sent many
    /// times (about a quarter smaller than `Fast` on range answers).
    Small,
}

/// `body` as a gzip stream.
pub(crate) fn gzip(body: &[u8], effort: Effort) -> Vec<u8> {
    use std::io::Write;
    let level = match effort {
        Effort::Fast => flate2::Compression::fast(),
        Effort::Small => flate2::Compression::default(),
    };
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 8 + 64), level);
    encoder
        .write_all(body)
        .expect("writing to a Vec does not fail");
    encoder.finish().expect("writing to a Vec does not fail")
}

/// Marks `headers` as those of a gzip-compressed body. (`Vary` is set in
/// one place for every compressible answer, compressed or not.)
pub(crate) fn mark_gzip(headers: &mut HeaderMap) {
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(value: &str) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
        accepts_gzip(&headers)
    }

    #[test]
    fn accept_encoding_is_read_as_rfc_9110_says() {
        assert!(accepts("gzip"));
        assert!(accepts("deflate, gzip;q=0.5"));
        assert!(accepts("br, *"));
        assert!(accepts("X-GZIP"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts("*;q=0"));
        assert!(
            !accepts("*, gzip;q=0"),
            "an explicit refusal beats the wildcard"
        );
        assert!(!accepts("identity"));
        assert!(!accepts("br, deflate"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn gzip_round_trips() {
        let body =
            br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#.repeat(100);
        for effort in [Effort::Fast, Effort::Small] {
            let compressed = gzip(&body, effort);
            assert!(compressed.len() < body.len() / 10, "{}", compressed.len());
            assert_eq!(sluice_testkit::gunzip(&compressed), body);
        }
    }
}
