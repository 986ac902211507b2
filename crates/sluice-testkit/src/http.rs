//! A deliberately raw HTTP client for tests: no redirects followed, no
//! decompression, no proxies, status/headers/body handed back as they came.
//!
//! Transport errors panic (with the URL), since for a test they mean the
//! server under test is broken; use `reqwest` directly to test those.

use std::time::Duration;

use reqwest::{Client, Method, redirect};

/// `(status, headers in wire order with lower-case names, body)`.
pub type HttpResponse = (u16, Vec<(String, String)>, Vec<u8>);

/// Bounds every request so a hung server fails the test instead of hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A fresh client per call: a pooled `reqwest::Client` is tied to the tokio
/// runtime that opened its connections, and every `#[tokio::test]` has its own.
pub(crate) fn http_client() -> Client {
    Client::builder()
        .no_proxy()
        .no_gzip()
        .no_brotli()
        .no_deflate()
        .no_zstd()
        .redirect(redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("building the test HTTP client")
}

/// `GET url`.
pub async fn http_get(url: &str) -> HttpResponse {
    http_request("GET", url, &[], Vec::new()).await
}

/// `GET url` with extra request headers.
pub async fn http_get_with_headers(url: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http_request("GET", url, headers, Vec::new()).await
}

/// `POST url` with an `application/x-www-form-urlencoded` body.
pub async fn http_post_form(url: &str, form: &[(&str, &str)]) -> HttpResponse {
    http_post_form_with_headers(url, form, &[]).await
}

/// `POST url` with a form body and extra request headers (a `Content-Type`
/// among them replaces the form one).
pub async fn http_post_form_with_headers(
    url: &str,
    form: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> HttpResponse {
    let body = form_urlencode(form);
    let mut all: Vec<(&str, &str)> = Vec::with_capacity(headers.len() + 1);
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        all.push(("content-type", "application/x-www-form-urlencoded"));
    }
    all.extend_from_slice(headers);
    http_request("POST", url, &all, body.into_bytes()).await
}

/// Any method, headers and body.
pub async fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> HttpResponse {
    let method = Method::from_bytes(method.as_bytes())
        .unwrap_or_else(|e| panic!("invalid HTTP method {method:?}: {e}"));
    let mut req = http_client().request(method.clone(), url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if !body.is_empty() {
        req = req.body(body);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = resp
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: reading body: {e}"))
        .to_vec();
    (status, headers, body)
}

/// A gzip body decoded; panics when it is not one (tests check bodies).
pub fn gunzip(body: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut decoded)
        .expect("a gzip body");
    decoded
}

/// The first value of header `name` (case-insensitive).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `k1=v1&k2=v2` with form encoding (spaces as `+`), for query strings too.
pub fn form_urlencode(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}
