//! `/debug/pprof/profile?seconds=N`: a CPU profile of the whole process, in
//! the format Go's `net/http/pprof` serves (gzip-compressed protobuf
//! `Profile`), so `go tool pprof`, Grafana Pyroscope and anything else that
//! reads Go profiles read sluice's.
//!
//! Sampling is SIGPROF-driven (the `pprof` crate) at 100 Hz, Go's rate, for
//! N seconds (30 if not given, as Go; 1 to 300). A process has one profiling
//! timer, so one profile is taken at a time and a second request meanwhile
//! gets 409. A client that hangs up ends its profile early. The binary
//! mounts this router only when told to: a profile costs CPU and shows the
//! code's inner workings.

pub mod profile;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::RawQuery;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use sluice_proto::ErrorType;

use crate::profile::{FrameSymbol, ProfileBuilder, StackCount};

/// Where the profile is served, Go's path.
pub const PATH: &str = "/debug/pprof/profile";
/// Samples per second of CPU time, Go's default.
const FREQUENCY: u32 = 100;
const DEFAULT_SECONDS: u64 = 30;
const MAX_SECONDS: u64 = 300;
/// Libraries not unwound from a signal handler: unwinding through them
/// can deadlock or crash (the `pprof` crate's advice).
const BLOCKLIST: [&str; 4] = ["libc", "libgcc", "pthread", "vdso"];

/// Whether a profile is being taken: the timer and the sampler are one
/// per process, whatever number of routers exist.
static PROFILING: AtomicBool = AtomicBool::new(false);

/// The profile endpoint, to merge into a role's HTTP router.
pub fn router() -> axum::Router {
    axum::Router::new().route(PATH, axum::routing::get(handle))
}

async fn handle(RawQuery(query): RawQuery) -> Response {
    let seconds = match seconds_of(query.as_deref().unwrap_or("")) {
        Ok(seconds) => seconds,
        Err(message) => return error(StatusCode::BAD_REQUEST, ErrorType::BadData, &message),
    };
    let Some(slot) = Slot::take() else {
        return error(
            StatusCode::CONFLICT,
            ErrorType::Unavailable,
            "a CPU profile is already being taken; try again when it is done",
        );
    };
    // Dropped with this future when the client hangs up, which ends the
    // sampling at once.
    let (_hang_up, hung_up) = mpsc::channel::<()>();
    let duration = Duration::from_secs(seconds);
    tracing::info!(seconds, "CPU profile started");
    let sampled = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        sample(duration, &hung_up)
    })
    .await;
    match sampled {
        Ok(Ok(Some(body))) => profile_response(body),
        Ok(Ok(None)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::Canceled,
            "the profile was abandoned",
        ),
        Ok(Err(message)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::Internal,
            &message,
        ),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::Internal,
            "the profiling task failed",
        ),
    }
}

/// The `seconds` parameter: absent or empty means Go's 30.
fn seconds_of(query: &str) -> Result<u64, String> {
    let given = form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "seconds")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    if given.is_empty() {
        return Ok(DEFAULT_SECONDS);
    }
    match given.parse::<u64>() {
        Ok(seconds) if (1..=MAX_SECONDS).contains(&seconds) => Ok(seconds),
        _ => Err(format!(
            "invalid parameter \"seconds\": {given:?} is not a whole number of seconds from 1 to {MAX_SECONDS}"
        )),
    }
}

/// The right to profile, given back when dropped.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        PROFILING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        PROFILING.store(false, Ordering::Release);
    }
}

/// Samples the process for `duration` (less if `hung_up` disconnects:
/// then `None`) and returns the gzip-compressed profile.
fn sample(duration: Duration, hung_up: &mpsc::Receiver<()>) -> Result<Option<Vec<u8>>, String> {
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY as i32)
        .blocklist(&BLOCKLIST)
        .build()
        .map_err(|error| format!("cannot start the CPU profiler: {error}"))?;
    if let Err(mpsc::RecvTimeoutError::Disconnected) = hung_up.recv_timeout(duration) {
        return Ok(None);
    }
    let report = guard
        .report()
        .build()
        .map_err(|error| format!("cannot read the CPU profile: {error}"))?;
    drop(guard);
    let binary = std::env::current_exe()
        .map(|path| path.to_string_lossy().into_owned())
        .unwrap_or_default();
    let start = report.timing.start_time;
    let mut builder = ProfileBuilder::new(FREQUENCY, start, duration, &binary);
    for (frames, &count) in &report.data {
        builder.add(&stack_of(frames, count as i64));
    }
    let encoded = prost::Message::encode_to_vec(&builder.finish());
    gzip(&encoded).map(Some)
}

/// A sampled stack without the sampler's own frames, which sit above the
/// interrupted code in every sample.
fn stack_of(frames: &pprof::Frames, count: i64) -> StackCount {
    let sampler = |symbols: &&Vec<pprof::Symbol>| {
        symbols.iter().all(|symbol| {
            let name = symbol.name();
            name.starts_with("backtrace::") || name.starts_with("<pprof::")
        })
    };
    StackCount {
        frames: frames
            .frames
            .iter()
            .skip_while(sampler)
            .map(|symbols| {
                symbols
                    .iter()
                    .map(|symbol| FrameSymbol {
                        name: symbol.name(),
                        system_name: symbol.sys_name().into_owned(),
                        file: symbol
                            .filename
                            .as_ref()
                            .map(|path| path.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        line: symbol.lineno.unwrap_or(0),
                    })
                    .collect()
            })
            .collect(),
        thread: frames.thread_name_or_id(),
        count,
    }
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(bytes)
        .and_then(|()| encoder.finish())
        .map_err(|error| format!("cannot compress the profile: {error}"))
}

fn profile_response(body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"profile\""),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn error(status: StatusCode, error_type: ErrorType, message: &str) -> Response {
    let mut response = Response::new(Body::from(sluice_api::json::encode_error(
        error_type, message,
    )));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_default_to_go_s_thirty_and_are_bounded() {
        assert_eq!(seconds_of(""), Ok(30));
        assert_eq!(seconds_of("seconds="), Ok(30));
        assert_eq!(seconds_of("seconds=1"), Ok(1));
        assert_eq!(seconds_of("debug=1&seconds=300"), Ok(300));
        for bad in [
            "seconds=0",
            "seconds=301",
            "seconds=-1",
            "seconds=1.5",
            "seconds=x",
        ] {
            let message = seconds_of(bad).unwrap_err();
            assert!(message.contains("from 1 to 300"), "{bad}: {message}");
        }
    }

    #[test]
    fn one_profile_at_a_time() {
        let first = Slot::take().expect("no profile is running");
        assert!(Slot::take().is_none());
        drop(first);
        assert!(Slot::take().is_some());
    }
}

#[cfg(test)]
mod sampling_tests {
    use super::*;

    #[test]
    fn a_busy_thread_is_sampled() {
        let (_hang_up, hung_up) = mpsc::channel::<()>();
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let stop = std::sync::Arc::clone(&done);
        let busy = std::thread::spawn(move || {
            let mut x = 0u64;
            while !stop.load(Ordering::Relaxed) {
                x = x.wrapping_mul(31).wrapping_add(7);
            }
            x
        });
        let body = sample(Duration::from_secs(1), &hung_up).unwrap().unwrap();
        done.store(true, Ordering::Relaxed);
        busy.join().unwrap();
        let profile = decode(&body);
        assert!(!profile.sample.is_empty(), "no samples");
        let function_names: Vec<&str> = profile
            .function
            .iter()
            .map(|function| profile.string_table[function.name as usize].as_str())
            .collect();
        assert!(
            function_names
                .iter()
                .any(|name| name.contains("a_busy_thread_is_sampled")),
            "{function_names:?}"
        );
        for sample in &profile.sample {
            let leaf = &profile.location[sample.location_id[0] as usize - 1];
            let leaf_function = &profile.function[leaf.line[0].function_id as usize - 1];
            let leaf_name = &profile.string_table[leaf_function.name as usize];
            assert!(!leaf_name.starts_with("backtrace::"), "{leaf_name}");
        }
    }

    fn decode(gzipped: &[u8]) -> profile::Profile {
        use std::io::Read;
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(gzipped)
            .read_to_end(&mut bytes)
            .unwrap();
        prost::Message::decode(bytes.as_slice()).unwrap()
    }
}
