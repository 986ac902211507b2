//! The Prometheus HTTP API at sluice's edge.
//!
//! Everything that must behave exactly as Prometheus behaves lives here, so it
//! can be tested without a server: parsing and validating request parameters
//! ([`params`]), the error envelope ([`ApiError`]), encoding answers as JSON
//! byte-identical to Prometheus's ([`json::encode_response`]), and decoding a
//! downstream Prometheus's JSON into sluice's typed model ([`decode`]).

pub mod decode;
mod error;
pub mod json;
pub mod params;

pub use error::ApiError;
