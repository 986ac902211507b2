//! Starting real sluice processes for end-to-end tests.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use sluice_testkit::{ChildProcess, TempDir, free_port, http_get, http_request};

/// A sluice process and the ports it listens on.
pub struct SluiceProcess {
    pub process: ChildProcess,
    pub http_port: u16,
    pub grpc_port: u16,
    log_path: std::path::PathBuf,
    _logs: TempDir,
}

impl SluiceProcess {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// What the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// POSTs a remote-write 1.0 body (snappy protobuf) to `path`; the
    /// status and the answer's text.
    pub async fn push_to(&self, path: &str, body: Vec<u8>) -> (u16, String) {
        let headers = [
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "snappy"),
            ("X-Prometheus-Remote-Write-Version", "0.1.0"),
        ];
        let url = format!("{}{path}", self.url());
        let (status, _, answer) = http_request("POST", &url, &headers, body).await;
        (status, String::from_utf8_lossy(&answer).into_owned())
    }

    /// POSTs a remote-write body to `/api/v1/push`; it must be stored whole.
    pub async fn push(&self, body: Vec<u8>) {
        let (status, answer) = self.push_to("/api/v1/push", body).await;
        assert_eq!(status, 204, "{answer}");
    }

    pub fn grpc_address(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    /// The value of an unlabelled metric (or the sum over a labelled one).
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, _, body) = http_get(&format!("{}/metrics", self.url())).await;
        let text = String::from_utf8(body).expect("metrics are text");
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until no sub-query is running in this process's querier.
    pub async fn wait_querier_idle(&self) {
        self.wait_metric(
            "sluice_querier_inflight_requests",
            0.0,
            Duration::from_secs(5),
        )
        .await;
    }

    /// Polls `/metrics` until `name` reaches `value`.
    pub async fn wait_metric(&self, name: &str, value: f64, timeout: Duration) {
        self.wait_metric_until(
            name,
            |current| current == value,
            &format!("{value}"),
            timeout,
        )
        .await;
    }

    /// Polls `/metrics` until `name` reaches at least `value`.
    pub async fn wait_metric_at_least(&self, name: &str, value: f64, timeout: Duration) {
        let wanted = format!("at least {value}");
        self.wait_metric_until(name, |current| current >= value, &wanted, timeout)
            .await;
    }

    async fn wait_metric_until(
        &self,
        name: &str,
        reached: impl Fn(f64) -> bool,
        wanted: &str,
        timeout: Duration,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let current = self.metric(name).await;
            if reached(current) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "metric {name} is {current}, expected {wanted}; log:\n{}",
                    self.process.log_contents()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `POST /ingester/flush`: cuts the whole head into blocks now.
    pub async fn flush(&self) {
        let url = format!("{}/ingester/flush", self.url());
        let (status, _, body) = sluice_testkit::http_request("POST", &url, &[], Vec::new()).await;
        assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
    }

    pub async fn ready_status(&self) -> u16 {
        http_get(&format!("{}/ready", self.url())).await.0
    }

    pub async fn wait_ready_status(&self, status: u16, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let current = self.ready_status().await;
            if current == status {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "/ready is {current}, expected {status}; log:\n{}",
                    self.process.log_contents()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn sluice_binary() -> &'static str {
    env!("CARGO_BIN_EXE_sluice")
}

/// Starts a sluice process with `args` on fresh ports and waits until its
/// HTTP server answers `/metrics`.
pub async fn start_sluice(name: &str, args: &[String]) -> SluiceProcess {
    let http_port = free_port();
    let grpc_port = free_port();
    let logs = TempDir::new(&format!("sluice-e2e-{name}")).expect("temp dir");
    let mut all_args = vec![
        "-server.http-listen-address=127.0.0.1".to_owned(),
        format!("-server.http-listen-port={http_port}"),
        "-server.grpc-listen-address=127.0.0.1".to_owned(),
        format!("-server.grpc-listen-port={grpc_port}"),
        "-log.level=info".to_owned(),
        "-server.graceful-shutdown-timeout=10s".to_owned(),
        // Scripted downstreams count and hold every request they get, and
        // probes would be among them; a test that wants probes sets it.
        "-querier.backend-probe-interval=0".to_owned(),
        // Its own series would join every answer that counts series;
        // the tests of self-scraping turn it on.
        "-self-scrape.enabled=false".to_owned(),
        // Never the defaults under the working directory (./data): each
        // process has its own, removed with its logs; `args` may override.
        format!(
            "-blocks-storage.tsdb.dir={}",
            logs.path().join("tsdb").display()
        ),
        format!(
            "-blocks-storage.filesystem.dir={}",
            logs.path().join("blocks").display()
        ),
    ];
    all_args.extend_from_slice(args);
    let log_path = logs.path().join(format!("{name}.log"));
    let mut process = ChildProcess::start(sluice_binary(), &all_args, &[], log_path.clone())
        .expect("start sluice");
    process
        .wait_http_ok(
            &format!("http://127.0.0.1:{http_port}/metrics"),
            Duration::from_secs(30),
        )
        .await;
    SluiceProcess {
        process,
        http_port,
        grpc_port,
        log_path,
        _logs: logs,
    }
}

/// A query-frontend with no querier of its own.
pub async fn start_frontend(extra: &[&str]) -> SluiceProcess {
    let mut args = vec!["-target=query-frontend".to_owned()];
    args.extend(extra.iter().map(|arg| arg.to_string()));
    start_sluice("frontend", &args).await
}

/// A querier pulling from `frontend`, running sub-queries against `downstream`.
pub async fn start_querier(
    name: &str,
    frontend: &SluiceProcess,
    downstream: &str,
    extra: &[&str],
) -> SluiceProcess {
    let mut args = vec![
        "-target=querier".to_owned(),
        format!("-querier.frontend-address={}", frontend.grpc_address()),
        format!("-querier.downstream-url={downstream}"),
        format!("-querier.id={name}"),
    ];
    args.extend(extra.iter().map(|arg| arg.to_string()));
    let querier = start_sluice(name, &args).await;
    let mut querier = querier;
    let ready = format!("{}/ready", querier.url());
    querier
        .process
        .wait_http_ok(&ready, Duration::from_secs(30))
        .await;
    querier
}

/// A downstream that accepts connections and never answers, recording each
/// connection so a test can see a request arrive and see it abandoned.
pub struct BlackHole {
    pub port: u16,
    pub events: tokio::sync::mpsc::UnboundedReceiver<BlackHoleEvent>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum BlackHoleEvent {
    /// A request arrived (its first bytes were read).
    RequestReceived(String),
    /// The client closed a connection that had sent a request.
    Closed,
}

/// Which requests a [`BlackHole`] answers.
enum Answering {
    /// None: every request is held.
    None,
    /// The first one, with `answer`, once `after` requests have arrived;
    /// the rest are held.
    First { answer: Vec<u8>, after: usize },
    /// Every one, at once, with `answer`.
    All(Vec<u8>),
}

impl Answering {
    /// The answer for a request (`first` when it is the first to arrive),
    /// and how many requests must have arrived before it is sent; `None`
    /// when the request is held.
    fn reply(&self, first: bool) -> Option<(&[u8], usize)> {
        match self {
            Answering::None => None,
            Answering::First { answer, after } => first.then_some((answer, *after)),
            Answering::All(answer) => Some((answer, 0)),
        }
    }
}

/// Requests arrived at a [`BlackHole`], for answers that wait for a count.
#[derive(Default)]
struct Arrivals {
    count: std::sync::atomic::AtomicUsize,
    changed: tokio::sync::Notify,
}

impl Arrivals {
    /// Counts one arrival; the first gets `true`.
    fn arrive(&self) -> bool {
        let first = self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
        self.changed.notify_waiters();
        first
    }

    async fn wait_for(&self, count: usize) {
        loop {
            // Registered before the count is read, so no arrival can fall
            // between the two unnoticed.
            let changed = self.changed.notified();
            if self.count.load(std::sync::atomic::Ordering::SeqCst) >= count {
                return;
            }
            changed.await;
        }
    }
}

impl BlackHole {
    pub async fn start() -> BlackHole {
        BlackHole::start_with(Answering::None).await
    }

    /// A black hole that answers the first request it receives with
    /// `status` (e.g. `422 Unprocessable Entity`) and the JSON `body`, as
    /// Prometheus fails a query, once `requests` requests have arrived (so
    /// that what the answer sets off cannot overtake their arrival), and
    /// holds the rest.
    pub async fn answering_first(status: &str, body: &str, requests: usize) -> BlackHole {
        BlackHole::start_with(Answering::First {
            answer: Self::answer(status, body),
            after: requests,
        })
        .await
    }

    /// Not a black hole at all: a downstream that answers every request
    /// with `status` and the JSON `body`, still reporting each request.
    pub async fn answering_all(status: &str, body: &str) -> BlackHole {
        BlackHole::start_with(Answering::All(Self::answer(status, body))).await
    }

    fn answer(status: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    async fn start_with(answering: Answering) -> BlackHole {
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let answering = Arc::new(answering);
        let arrivals = Arc::new(Arrivals::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind black hole");
        let port = listener.local_addr().expect("local addr").port();
        let (sender, events) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((mut connection, _)) = listener.accept().await {
                let sender = sender.clone();
                let answering = answering.clone();
                let arrivals = arrivals.clone();
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 64 * 1024];
                    let mut saw_request = false;
                    loop {
                        match connection.read(&mut buffer).await {
                            Ok(0) | Err(_) => {
                                if saw_request {
                                    let _ = sender.send(BlackHoleEvent::Closed);
                                }
                                return;
                            }
                            Ok(read) => {
                                if !saw_request {
                                    saw_request = true;
                                    let head =
                                        String::from_utf8_lossy(&buffer[..read]).into_owned();
                                    let _ = sender.send(BlackHoleEvent::RequestReceived(head));
                                    let first = arrivals.arrive();
                                    if let Some((answer, after)) = answering.reply(first) {
                                        arrivals.wait_for(after).await;
                                        // Answered and closed: no further requests.
                                        // What the client still sends (a form body)
                                        // is read to its end, so that closing never
                                        // resets the connection under the answer.
                                        let _ = connection.write_all(answer).await;
                                        let _ = connection.shutdown().await;
                                        while matches!(connection.read(&mut buffer).await, Ok(read) if read > 0)
                                        {
                                        }
                                        return;
                                    }
                                }
                            }
                        }
                    }
                });
            }
        });
        BlackHole { port, events, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn next_event(&mut self, timeout: Duration) -> BlackHoleEvent {
        self.event_within(timeout)
            .await
            .expect("black hole event in time")
    }

    /// Waits for a request to arrive (10 s at most) and returns its head.
    pub async fn expect_request(&mut self) -> String {
        match self.next_event(Duration::from_secs(10)).await {
            BlackHoleEvent::RequestReceived(head) => head,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    /// Waits for a connection that sent a request to close (10 s at most).
    pub async fn expect_closed(&mut self) {
        assert_eq!(
            self.next_event(Duration::from_secs(10)).await,
            BlackHoleEvent::Closed
        );
    }

    /// The next event if one comes within `timeout`, for tests that show
    /// something does not happen.
    pub async fn event_within(&mut self, timeout: Duration) -> Option<BlackHoleEvent> {
        tokio::time::timeout(timeout, self.events.recv())
            .await
            .ok()
            .map(|event| event.expect("black hole alive"))
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP proxy that holds every request `delay` before passing it on to
/// `upstream` (each read from the client waits, so requests on a kept-alive
/// connection are slow too), so a test can catch a request while it is
/// running.
pub struct DelayProxy {
    pub port: u16,
    pub connections: tokio::sync::mpsc::UnboundedReceiver<()>,
    task: tokio::task::JoinHandle<()>,
}

impl DelayProxy {
    pub async fn start(upstream_port: u16, delay: Duration) -> DelayProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("local addr").port();
        let (sender, connections) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let _ = sender.send(());
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let Ok(upstream) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                    else {
                        return;
                    };
                    let (mut from_client, mut to_client) = client.split();
                    let (mut from_upstream, mut to_upstream) = upstream.into_split();
                    let requests = async {
                        let mut buffer = vec![0u8; 64 * 1024];
                        while let Ok(read) = from_client.read(&mut buffer).await {
                            if read == 0 {
                                break;
                            }
                            tokio::time::sleep(delay).await;
                            if to_upstream.write_all(&buffer[..read]).await.is_err() {
                                break;
                            }
                        }
                    };
                    let answers = tokio::io::copy(&mut from_upstream, &mut to_client);
                    // Either side closing ends the connection, as a proxy's would.
                    tokio::select! {
                        _ = requests => {}
                        _ = answers => {}
                    }
                });
            }
        });
        DelayProxy {
            port,
            connections,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
pub mod compare;

/// The bucket `blocks` of `moto`, as sluice's S3 backend reaches it.
pub fn moto_bucket_config(moto: &sluice_testkit::MotoServer) -> sluice_bucket::BucketConfig {
    sluice_bucket::BucketConfig::s3_plain_http(moto.endpoint(), "blocks", "test", "test")
}

/// The flags that point sluice at the bucket of [`moto_bucket_config`].
pub fn moto_flags(moto: &sluice_testkit::MotoServer) -> Vec<String> {
    vec![
        "-blocks-storage.backend=s3".to_owned(),
        format!("-blocks-storage.s3.endpoint={}", moto.endpoint()),
        "-blocks-storage.s3.bucket-name=blocks".to_owned(),
        "-blocks-storage.s3.access-key-id=test".to_owned(),
        "-blocks-storage.s3.secret-access-key=test".to_owned(),
        "-blocks-storage.s3.region=us-east-1".to_owned(),
        "-blocks-storage.s3.insecure=true".to_owned(),
    ]
}
pub mod families;
pub mod suite;
