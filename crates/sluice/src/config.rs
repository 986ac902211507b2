//! sluice's configuration: defaults, then a YAML file, then environment
//! variables, then flags, then one validation.
//!
//! Every setting is one row of [`SETTINGS`]: its flag (Mimir's dotted name),
//! its YAML key, its default, its help, and how to apply a value. The YAML
//! file, `SLUICE_*` variables, flags and `-help` are all driven by that table,
//! so a setting cannot exist in one place and be missing in another, and the
//! documented default is the default actually used.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use sluice_api::params::parse_duration;

/// The roles one process can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Role {
    QueryFrontend,
    QueryScheduler,
    Querier,
    Store,
    Compactor,
}

impl Role {
    /// The role's `-target` name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::QueryFrontend => "query-frontend",
            Role::QueryScheduler => "query-scheduler",
            Role::Querier => "querier",
            Role::Store => "store",
            Role::Compactor => "compactor",
        }
    }

    fn parse_list(text: &str) -> Result<Vec<Role>, String> {
        let mut roles = Vec::new();
        for name in text
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            match name {
                "all" => roles.extend([
                    Role::QueryFrontend,
                    Role::Querier,
                    Role::Store,
                    Role::Compactor,
                ]),
                "query-frontend" => roles.push(Role::QueryFrontend),
                "query-scheduler" => roles.push(Role::QueryScheduler),
                "querier" => roles.push(Role::Querier),
                "store" => roles.push(Role::Store),
                "compactor" => roles.push(Role::Compactor),
                other => {
                    return Err(format!(
                        "unknown target {other:?}: expected all, query-frontend, query-scheduler, querier, store or compactor"
                    ));
                }
            }
        }
        roles.sort();
        roles.dedup();
        if roles.is_empty() {
            return Err("no target given".into());
        }
        Ok(roles)
    }
}

/// Everything a sluice process is told.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) targets: Vec<Role>,
    /// Whether `-target` said `all`, whose store is left out in front of a
    /// downstream (queries would not read it).
    pub(crate) target_all: bool,
    pub(crate) http_listen_address: String,
    pub(crate) http_listen_port: u16,
    pub(crate) grpc_listen_address: String,
    pub(crate) grpc_listen_port: u16,
    pub(crate) graceful_shutdown_timeout: Duration,
    /// Threads of the async runtime; 0 means automatic (see `main`).
    pub(crate) worker_threads: usize,
    pub(crate) log_level: String,
    pub(crate) log_format: String,
    pub(crate) frontend: sluice_frontend::FrontendConfig,
    pub(crate) querier_frontend_addresses: Vec<String>,
    pub(crate) querier_max_concurrent: usize,
    pub(crate) querier_min_concurrent: usize,
    pub(crate) querier_backend_probe_interval: Duration,
    pub(crate) querier_downstream_url: String,
    pub(crate) querier_id: String,
    pub(crate) querier_dns_lookup_period: Duration,
    pub(crate) querier_scheduler_addresses: Vec<String>,
    pub(crate) frontend_instance_address: String,
    pub(crate) scheduler: sluice_scheduler::SchedulerConfig,
    pub(crate) cache: CacheSettings,
    /// Where the blocks are; an empty filesystem dir with the filesystem
    /// backend means no bucket.
    pub(crate) blocks_storage: sluice_bucket::BucketConfig,
    pub(crate) bucket_sync_interval: Duration,
    /// Per-tenant overrides, re-read every reload period (none when empty).
    pub(crate) runtime_config_file: std::path::PathBuf,
    pub(crate) runtime_config_reload_period: Duration,
    pub(crate) querier_max_samples: usize,
    /// Defaults of the per-tenant fetch limits (0: none).
    pub(crate) querier_max_fetched_series: usize,
    pub(crate) querier_max_fetched_chunk_bytes: usize,
    /// `-query-frontend.parallelize-shardable-queries`: `None` is auto, on
    /// when this process's querier runs the embedded engine.
    pub(crate) parallelize_shardable_queries: Option<bool>,
    pub(crate) security: crate::security::Security,
    /// In-process caches of block postings and chunks, in bytes (0: off).
    pub(crate) postings_cache_bytes: u64,
    pub(crate) chunks_cache_bytes: u64,
    pub(crate) store: sluice_store::StoreConfig,
    pub(crate) head_compaction_interval: Duration,
    pub(crate) compactor: sluice_compactor::CompactorConfig,
    /// `-server.pprof-enabled`: serve `/debug/pprof/profile`.
    pub(crate) pprof_enabled: bool,
    /// `-self-scrape.enabled`: the store scrapes this process's `/metrics`.
    pub(crate) self_scrape_enabled: bool,
    pub(crate) self_scrape_interval: Duration,
}

/// The results cache as configured, turned into a backend in `validate`.
#[derive(Clone, Debug, Default)]
pub(crate) struct CacheSettings {
    pub(crate) enabled: bool,
    pub(crate) backend: String,
    pub(crate) memcached_addresses: Vec<String>,
    pub(crate) memcached_timeout: Duration,
    pub(crate) memcached_connect_timeout: Duration,
    pub(crate) memcached_max_item_size: usize,
    /// Everything but the password file, which `validate` reads into it.
    pub(crate) redis: sluice_cache::RedisConfig,
    pub(crate) redis_password_file: String,
    pub(crate) in_process_max_bytes: u64,
    pub(crate) compression: String,
}

type Apply = fn(&mut Config, &str) -> Result<(), String>;

/// One setting, everywhere it can be given.
pub(crate) struct Setting {
    /// The flag without dashes, e.g. `querier.max-concurrent`.
    pub(crate) flag: &'static str,
    /// The dotted YAML path, e.g. `querier.max_concurrent`.
    pub(crate) yaml: &'static str,
    pub(crate) default: &'static str,
    pub(crate) help: &'static str,
    pub(crate) is_bool: bool,
    apply: Apply,
}

fn parse_range_boundaries(text: &str) -> Result<sluice_frontend::RangeBoundaries, String> {
    match text {
        "left-open" => Ok(sluice_frontend::RangeBoundaries::LeftOpen),
        "closed" => Ok(sluice_frontend::RangeBoundaries::Closed),
        other => Err(format!(
            "invalid range selector boundaries {other:?}: left-open or closed"
        )),
    }
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok(true),
        "false" | "0" | "f" | "F" | "FALSE" | "False" => Ok(false),
        other => Err(format!("invalid boolean {other:?}")),
    }
}

fn parse_number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("invalid number {text:?}"))
}

fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let milliseconds =
        parse_duration(text).map_err(|error| format!("invalid duration: {error}"))?;
    if milliseconds < 0 {
        return Err(format!("invalid duration {text:?}: must not be negative"));
    }
    Ok(Duration::from_millis(milliseconds as u64))
}

fn parse_wal_sync(text: &str) -> Result<sluice_wal::SyncPolicy, String> {
    match text {
        "never" => Ok(sluice_wal::SyncPolicy::Never),
        "always" => Ok(sluice_wal::SyncPolicy::Always),
        other => Err(format!(
            "invalid WAL fsync policy {other:?}: never or always"
        )),
    }
}

fn positive_ms(text: &str) -> Result<i64, String> {
    match parse_go_duration(text)?.as_millis() as i64 {
        0 => Err("must be longer than 0".into()),
        milliseconds => Ok(milliseconds),
    }
}

fn parse_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

macro_rules! setting {
    ($flag:literal, $yaml:literal, $default:literal, $help:literal, |$config:ident, $value:ident| $body:expr) => {
        Setting {
            flag: $flag,
            yaml: $yaml,
            default: $default,
            help: $help,
            is_bool: false,
            apply: |$config: &mut Config, $value: &str| -> Result<(), String> {
                $body;
                Ok(())
            },
        }
    };
    (bool $flag:literal, $yaml:literal, $default:literal, $help:literal, |$config:ident, $value:ident| $body:expr) => {
        Setting {
            flag: $flag,
            yaml: $yaml,
            default: $default,
            help: $help,
            is_bool: true,
            apply: |$config: &mut Config, $value: &str| -> Result<(), String> {
                $body;
                Ok(())
            },
        }
    };
}

/// Every setting sluice has. Flag names follow Grafana Mimir's where Mimir has
/// the same setting, so operators' muscle memory works.
pub(crate) static SETTINGS: &[Setting] = &[
    setting!(
        "target",
        "target",
        "all",
        "Comma-separated roles to run: all, query-frontend, query-scheduler, querier, store, compactor. 'all' runs a frontend, a querier serving it and, unless -querier.downstream-url is set, the store (remote write, WAL, head) and the compactor in one process.",
        |config, value| {
            config.targets = Role::parse_list(value)?;
            config.target_all = value.split(',').any(|name| name.trim() == "all");
        }
    ),
    setting!(
        "server.http-listen-address",
        "server.http_listen_address",
        "0.0.0.0",
        "HTTP server listen address.",
        |config, value| config.http_listen_address = value.to_owned()
    ),
    setting!(
        "server.http-listen-port",
        "server.http_listen_port",
        "8080",
        "HTTP server listen port (the Prometheus API, /ready, /metrics).",
        |config, value| config.http_listen_port = parse_number(value)?
    ),
    setting!(
        "server.grpc-listen-address",
        "server.grpc_listen_address",
        "0.0.0.0",
        "gRPC server listen address.",
        |config, value| config.grpc_listen_address = value.to_owned()
    ),
    setting!(
        "server.grpc-listen-port",
        "server.grpc_listen_port",
        "9095",
        "gRPC server listen port (queriers connect here).",
        |config, value| config.grpc_listen_port = parse_number(value)?
    ),
    setting!(
        "server.pprof-enabled",
        "server.pprof_enabled",
        "false",
        "Serve a CPU profile of the process at /debug/pprof/profile?seconds=N (Go's pprof format). Off, the path is a 404: a profile costs CPU and shows the code's inner workings.",
        |config, value| config.pprof_enabled = parse_bool(value)?
    ),
    setting!(
        "server.http-max-header-bytes",
        "server.http_max_header_bytes",
        "1048576",
        "Longest request line and headers, in bytes; longer gets 431 (Go's and so Prometheus's limit).",
        |config, value| config.security.http_limits.max_header_bytes = parse_number(value)?
    ),
    setting!(
        "server.http-max-url-bytes",
        "server.http_max_url_bytes",
        "1048576",
        "Longest request URL (path and query string), in bytes; longer gets 414, and clients should POST the form instead.",
        |config, value| config.security.http_limits.max_url_bytes = parse_number(value)?
    ),
    setting!(
        "server.http-read-header-timeout",
        "server.http_read_header_timeout",
        "10s",
        "Time a client has to send a request's headers before it is disconnected, against slow clients holding connections; 0 waits for ever.",
        |config, value| config.security.http_limits.read_header_timeout = parse_go_duration(value)?
    ),
    setting!(
        "server.http-conn-limit",
        "server.http_conn_limit",
        "0",
        "Most HTTP connections open at once; past it a new connection is answered 503 with the error envelope and closed. 0: no limit.",
        |config, value| config.security.http_limits.max_connections = parse_number(value)?
    ),
    setting!(
        "server.grpc-tls-cert-path",
        "server.grpc_tls_cert_path",
        "",
        "Certificate (PEM) the gRPC server presents; set, the gRPC server speaks only TLS.",
        |config, value| config.security.grpc_server.cert_path = value.to_owned()
    ),
    setting!(
        "server.grpc-tls-key-path",
        "server.grpc_tls_key_path",
        "",
        "Private key (PEM) of -server.grpc-tls-cert-path.",
        |config, value| config.security.grpc_server.key_path = value.to_owned()
    ),
    setting!(
        "server.grpc-tls-ca-path",
        "server.grpc_tls_ca_path",
        "",
        "CA certificates (PEM) that client certificates of the gRPC server must chain to.",
        |config, value| config.security.grpc_server.ca_path = value.to_owned()
    ),
    setting!(
        "server.grpc-tls-client-auth",
        "server.grpc_tls_client_auth",
        "NoClientCert",
        "Client certificates the gRPC server asks for: NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert (mutual TLS: a peer without a certificate from -server.grpc-tls-ca-path cannot connect).",
        |config, value| config.security.grpc_server.client_auth = value.parse()?
    ),
    setting!(
        "server.http-tls-cert-path",
        "server.http_tls_cert_path",
        "",
        "Certificate (PEM) the HTTP server presents; set, the HTTP server speaks only TLS.",
        |config, value| config.security.http_server.cert_path = value.to_owned()
    ),
    setting!(
        "server.http-tls-key-path",
        "server.http_tls_key_path",
        "",
        "Private key (PEM) of -server.http-tls-cert-path.",
        |config, value| config.security.http_server.key_path = value.to_owned()
    ),
    setting!(
        "server.http-tls-ca-path",
        "server.http_tls_ca_path",
        "",
        "CA certificates (PEM) that client certificates of the HTTP server must chain to.",
        |config, value| config.security.http_server.ca_path = value.to_owned()
    ),
    setting!(
        "server.http-tls-client-auth",
        "server.http_tls_client_auth",
        "NoClientCert",
        "Client certificates the HTTP server asks for: NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert (mutual TLS: a peer without a certificate from -server.http-tls-ca-path cannot connect).",
        |config, value| config.security.http_server.client_auth = value.parse()?
    ),
    setting!(bool "querier.frontend-client.tls-enabled", "querier.frontend_client.tls_enabled", "false",
        "Use TLS for the querier's connections to query-frontends and query-schedulers, and its results to frontends.",
        |config, value| config.security.querier_client.enabled = parse_bool(value)?),
    setting!(
        "querier.frontend-client.tls-cert-path",
        "querier.frontend_client.tls_cert_path",
        "",
        "Client certificate (PEM) presented for the querier's connections to query-frontends and query-schedulers, and its results to frontends (mutual TLS).",
        |config, value| config.security.querier_client.cert_path = value.to_owned()
    ),
    setting!(
        "querier.frontend-client.tls-key-path",
        "querier.frontend_client.tls_key_path",
        "",
        "Private key (PEM) of -querier.frontend-client.tls-cert-path.",
        |config, value| config.security.querier_client.key_path = value.to_owned()
    ),
    setting!(
        "querier.frontend-client.tls-ca-path",
        "querier.frontend_client.tls_ca_path",
        "",
        "CA certificates (PEM) the servers must chain to; empty means the system's roots.",
        |config, value| config.security.querier_client.ca_path = value.to_owned()
    ),
    setting!(
        "querier.frontend-client.tls-server-name",
        "querier.frontend_client.tls_server_name",
        "",
        "Name the servers' certificates must carry; empty means the host of each address.",
        |config, value| config.security.querier_client.server_name = value.to_owned()
    ),
    setting!(bool "querier.frontend-client.tls-insecure-skip-verify", "querier.frontend_client.tls_insecure_skip_verify", "false",
        "Accept any server certificate (tests only).",
        |config, value| config.security.querier_client.insecure_skip_verify = parse_bool(value)?),
    setting!(bool "query-frontend.grpc-client-config.tls-enabled", "frontend.grpc_client_config.tls_enabled", "false",
        "Use TLS for the query-frontend's connections to query-schedulers.",
        |config, value| config.security.frontend_client.enabled = parse_bool(value)?),
    setting!(
        "query-frontend.grpc-client-config.tls-cert-path",
        "frontend.grpc_client_config.tls_cert_path",
        "",
        "Client certificate (PEM) presented for the query-frontend's connections to query-schedulers (mutual TLS).",
        |config, value| config.security.frontend_client.cert_path = value.to_owned()
    ),
    setting!(
        "query-frontend.grpc-client-config.tls-key-path",
        "frontend.grpc_client_config.tls_key_path",
        "",
        "Private key (PEM) of -query-frontend.grpc-client-config.tls-cert-path.",
        |config, value| config.security.frontend_client.key_path = value.to_owned()
    ),
    setting!(
        "query-frontend.grpc-client-config.tls-ca-path",
        "frontend.grpc_client_config.tls_ca_path",
        "",
        "CA certificates (PEM) the servers must chain to; empty means the system's roots.",
        |config, value| config.security.frontend_client.ca_path = value.to_owned()
    ),
    setting!(
        "query-frontend.grpc-client-config.tls-server-name",
        "frontend.grpc_client_config.tls_server_name",
        "",
        "Name the servers' certificates must carry; empty means the host of each address.",
        |config, value| config.security.frontend_client.server_name = value.to_owned()
    ),
    setting!(bool "query-frontend.grpc-client-config.tls-insecure-skip-verify", "frontend.grpc_client_config.tls_insecure_skip_verify", "false",
        "Accept any server certificate (tests only).",
        |config, value| config.security.frontend_client.insecure_skip_verify = parse_bool(value)?),
    setting!(bool "query-scheduler.grpc-client-config.tls-enabled", "query_scheduler.grpc_client_config.tls_enabled", "false",
        "Use TLS for the query-scheduler's reports to query-frontends.",
        |config, value| config.security.scheduler_client.enabled = parse_bool(value)?),
    setting!(
        "query-scheduler.grpc-client-config.tls-cert-path",
        "query_scheduler.grpc_client_config.tls_cert_path",
        "",
        "Client certificate (PEM) presented for the query-scheduler's reports to query-frontends (mutual TLS).",
        |config, value| config.security.scheduler_client.cert_path = value.to_owned()
    ),
    setting!(
        "query-scheduler.grpc-client-config.tls-key-path",
        "query_scheduler.grpc_client_config.tls_key_path",
        "",
        "Private key (PEM) of -query-scheduler.grpc-client-config.tls-cert-path.",
        |config, value| config.security.scheduler_client.key_path = value.to_owned()
    ),
    setting!(
        "query-scheduler.grpc-client-config.tls-ca-path",
        "query_scheduler.grpc_client_config.tls_ca_path",
        "",
        "CA certificates (PEM) the servers must chain to; empty means the system's roots.",
        |config, value| config.security.scheduler_client.ca_path = value.to_owned()
    ),
    setting!(
        "query-scheduler.grpc-client-config.tls-server-name",
        "query_scheduler.grpc_client_config.tls_server_name",
        "",
        "Name the servers' certificates must carry; empty means the host of each address.",
        |config, value| config.security.scheduler_client.server_name = value.to_owned()
    ),
    setting!(bool "query-scheduler.grpc-client-config.tls-insecure-skip-verify", "query_scheduler.grpc_client_config.tls_insecure_skip_verify", "false",
        "Accept any server certificate (tests only).",
        |config, value| config.security.scheduler_client.insecure_skip_verify = parse_bool(value)?),
    setting!(
        "server.graceful-shutdown-timeout",
        "server.graceful_shutdown_timeout",
        "30s",
        "How long shutdown waits for in-flight requests and running sub-queries.",
        |config, value| config.graceful_shutdown_timeout = parse_go_duration(value)?
    ),
    setting!(
        "server.worker-threads",
        "server.worker_threads",
        "0",
        "Threads that serve requests; 0 means one per core, or one on machines of two cores or fewer, where a second thread costs more in wake-ups than it adds. Compression and the embedded engine run on separate threads either way.",
        |config, value| config.worker_threads = parse_number(value)?
    ),
    setting!(
        "log.level",
        "server.log_level",
        "info",
        "Log level: error, warn, info, debug or trace.",
        |config, value| config.log_level = value.to_owned()
    ),
    setting!(
        "log.format",
        "server.log_format",
        "logfmt",
        "Log format: logfmt or json.",
        |config, value| config.log_format = value.to_owned()
    ),
    setting!(bool "auth.multitenancy-enabled", "auth.multitenancy_enabled", "false",
        "Require the X-Scope-OrgID header and keep tenants apart. When false every request belongs to tenant 'anonymous'.",
        |config, value| config.frontend.multitenancy_enabled = parse_bool(value)?),
    setting!(bool "tenant-federation.enabled", "tenant_federation.enabled", "false",
        "Whether a query may name several tenants in X-Scope-OrgID (a|b): it reads all of them and labels each series with __tenant_id__, as Mimir does. Writes always name one tenant.",
        |config, value| config.frontend.tenant_federation_enabled = parse_bool(value)?),
    setting!(
        "query-frontend.max-outstanding-requests-per-tenant",
        "frontend.max_outstanding_requests_per_tenant",
        "100",
        "Sub-queries queued per tenant before its clients get 429 too_many_requests.",
        |config, value| config.frontend.max_outstanding_per_tenant = parse_number(value)?
    ),
    setting!(
        "query-frontend.max-queriers-per-tenant",
        "frontend.max_queriers_per_tenant",
        "0",
        "Queriers a tenant's queries may run on (shuffle sharding); 0 means all.",
        |config, value| config.frontend.max_queriers_per_tenant = parse_number(value)?
    ),
    setting!(
        "query-frontend.reserved-querier-slots",
        "frontend.reserved_querier_slots",
        "1",
        "Idle querier slots a tenant already running sub-queries may not take, so another tenant finds one free at once instead of waiting behind a flood of slow work; 0 turns the reserve off.",
        |config, value| config.frontend.reserved_querier_slots = parse_number(value)?
    ),
    setting!(
        "query-frontend.max-retries-per-request",
        "frontend.max_retries",
        "5",
        "Tries per sub-query on 5xx or transport errors (4xx are never retried).",
        |config, value| config.frontend.max_retries = parse_number(value)?
    ),
    setting!(
        "query-frontend.log-queries-longer-than",
        "frontend.log_queries_longer_than",
        "0s",
        "Log the query stats line only for requests slower than this; 0 logs every request.",
        |config, value| config.frontend.log_queries_longer_than = parse_go_duration(value)?
    ),
    setting!(
        "query-frontend.log-query-max-bytes",
        "frontend.log_query_max_bytes",
        "4096",
        "Longest query text a log line carries, in bytes; longer ones are cut and say how many bytes were cut.",
        |config, value| config.frontend.log_query_max_bytes = parse_number(value)?
    ),
    setting!(
        "query-frontend.max-query-expression-size-bytes",
        "frontend.max_query_expression_size_bytes",
        "262144",
        "Longest query expression or match[] selector accepted, in bytes; longer ones get 400 before they are parsed. 0 = no limit.",
        |config, value| config.frontend.max_query_expression_bytes = parse_number(value)?
    ),
    setting!(
        "query-frontend.max-body-size",
        "frontend.max_body_size",
        "10485760",
        "Largest request body accepted, in bytes; larger ones get 413.",
        |config, value| config.frontend.max_body_bytes = parse_number(value)?
    ),
    setting!(
        "querier.timeout",
        "frontend.query_timeout",
        "2m",
        "The time a request may take end to end, queueing included; then 503 timeout.",
        |config, value| config.frontend.query_timeout = parse_go_duration(value)?
    ),
    setting!(
        "query-frontend.max-total-query-length",
        "limits.max_total_query_length",
        "0s",
        "Longest time range a range query may cover; 0 means no limit.",
        |config, value| config.frontend.max_query_length = parse_go_duration(value)?
    ),
    setting!(
        "querier.max-query-lookback",
        "limits.max_query_lookback",
        "0s",
        "Oldest data queries may read, as an age; older start times are clamped. 0 means no limit.",
        |config, value| config.frontend.max_query_lookback = parse_go_duration(value)?
    ),
    setting!(
        "querier.frontend-address",
        "querier.frontend_address",
        "",
        "Comma-separated host:port of query-frontends' gRPC servers to pull work from; names are re-resolved every -querier.dns-lookup-period.",
        |config, value| config.querier_frontend_addresses.extend(parse_list(value))
    ),
    setting!(
        "querier.scheduler-address",
        "querier.scheduler_address",
        "",
        "Comma-separated host:port of query-schedulers to pull work from (instead of frontends); names are re-resolved every -querier.dns-lookup-period.",
        |config, value| config.querier_scheduler_addresses.extend(parse_list(value))
    ),
    setting!(
        "query-frontend.scheduler-address",
        "frontend.scheduler_address",
        "",
        "Comma-separated host:port of query-schedulers to queue sub-queries through; empty means this frontend owns its queue.",
        |config, value| config
            .frontend
            .scheduler_addresses
            .extend(parse_list(value))
    ),
    setting!(
        "query-frontend.scheduler-dns-lookup-period",
        "frontend.scheduler_dns_lookup_period",
        "10s",
        "How often query-scheduler addresses are resolved again.",
        |config, value| config.frontend.scheduler_dns_refresh = parse_go_duration(value)?
    ),
    setting!(
        "query-frontend.instance-addr",
        "frontend.instance_addr",
        "",
        "The address queriers reach this frontend's gRPC server at; empty means the gRPC listen address, or this host's address when that listens on all interfaces.",
        |config, value| config.frontend_instance_address = value.to_owned()
    ),
    setting!(
        "query-scheduler.max-outstanding-requests-per-tenant",
        "scheduler.max_outstanding_requests_per_tenant",
        "100",
        "Sub-queries a query-scheduler queues per tenant before answering too-many-requests (429 at the frontend).",
        |config, value| config.scheduler.max_outstanding_per_tenant = parse_number(value)?
    ),
    setting!(
        "query-scheduler.max-queriers-per-tenant",
        "scheduler.max_queriers_per_tenant",
        "0",
        "Queriers a tenant's sub-queries may run on at a query-scheduler (shuffle sharding); 0 means all.",
        |config, value| config.scheduler.max_queriers_per_tenant = parse_number(value)?
    ),
    setting!(
        "query-scheduler.reserved-querier-slots",
        "scheduler.reserved_querier_slots",
        "1",
        "Idle querier slots a tenant already running sub-queries may not take at a query-scheduler, so another tenant finds one free at once; 0 turns the reserve off.",
        |config, value| config.scheduler.reserved_querier_slots = parse_number(value)?
    ),
    setting!(
        "query-scheduler.querier-forget-delay",
        "scheduler.querier_forget_delay",
        "0s",
        "How long a disconnected querier keeps its place in tenants' shuffle shards, so a restart does not reshuffle them.",
        |config, value| config.scheduler.querier_forget_delay = parse_go_duration(value)?
    ),
    setting!(
        "query-frontend.split-queries-by-interval",
        "frontend.split_queries_by_interval",
        "24h",
        "Split range queries at this interval (boundaries at UTC midnight for a day) and run the pieces in parallel; 0 turns splitting off.",
        |config, value| config.frontend.split_interval = parse_go_duration(value)?
    ),
    setting!(
        "query-frontend.split-instant-queries-by-interval",
        "frontend.split_instant_queries_by_interval",
        "0s",
        "Split instant queries whose range selector is longer than this into one sub-query per interval, where that is exact (sum, count, min and max over time, and their aggregations); 0 turns it off.",
        |config, value| config.frontend.split_instant_queries_by_interval =
            parse_go_duration(value)?
    ),
    setting!(
        "query-frontend.range-selectors",
        "frontend.range_selectors",
        "left-open",
        "Where the queriers' range selectors begin: left-open, (t-r, t], as Prometheus 3 and sluice's engine; or closed, [t-r, t], as Prometheus 2. Split instant queries must match it.",
        |config, value| config.frontend.range_selector_boundaries = parse_range_boundaries(value)?
    ),
    setting!(
        "query-frontend.parallelize-shardable-queries",
        "frontend.parallelize_shardable_queries",
        "false",
        "Shard sum, count, min, max, avg and group into legs that each read one shard of the series (a __query_shard__ matcher), re-aggregated at the frontend. Only for queriers that honour the matcher (sluice's engine, Mimir), never a plain Prometheus: auto turns it on when this process's querier runs the embedded engine (no -querier.downstream-url); true or false force it. Off by default, as in Mimir: on a machine of few cores the legs cost more than they gain (each reads the index again).",
        |config, value| config.parallelize_shardable_queries = match value {
            "auto" => None,
            other => Some(parse_bool(other)?),
        }
    ),
    setting!(
        "query-frontend.query-sharding-total-shards",
        "frontend.query_sharding_total_shards",
        "16",
        "Shards each shardable aggregation is split into; under 2 turns sharding off.",
        |config, value| config.frontend.query_sharding_total_shards = parse_number(value)?
    ),
    setting!(
        "query-frontend.query-sharding-max-sharded-queries",
        "frontend.query_sharding_max_sharded_queries",
        "128",
        "Most shard legs one query sends over all its pieces: the shard count is lowered to fit (pieces x aggregations x shards).",
        |config, value| config.frontend.query_sharding_max_sharded_queries = parse_number(value)?
    ),
    setting!(
        "query-frontend.query-sharding-target-series-per-shard",
        "frontend.query_sharding_target_series_per_shard",
        "0",
        "Series each shard should hold, to use fewer shards for small queries. Accepted for Mimir's configurations but not applied yet: sluice has no series estimates per query.",
        |config, value| config.frontend.query_sharding_target_series_per_shard =
            parse_number(value)?
    ),
    setting!(
        "querier.max-query-parallelism",
        "frontend.max_query_parallelism",
        "14",
        "Pieces of one query run at once.",
        |config, value| config.frontend.max_query_parallelism = parse_number(value)?
    ),
    setting!(
        bool "query-frontend.align-queries-with-step",
        "frontend.align_queries_with_step",
        "false",
        "Round range queries' start and end down to a multiple of the step: more cache hits, but answers differ from the backend's.",
        |config, value| config.frontend.align_queries_with_step = parse_bool(value)?
    ),
    setting!(
        bool "query-frontend.cache-results",
        "frontend.cache_results",
        "true",
        "Cache range query results per piece and compute only the time the cache does not cover.",
        |config, value| config.cache.enabled = parse_bool(value)?
    ),
    setting!(
        "query-frontend.results-cache.backend",
        "frontend.results_cache.backend",
        "inprocess",
        "Where results are cached: inprocess (bounded by -query-frontend.results-cache.inprocess.max-size-bytes), memcached or redis.",
        |config, value| config.cache.backend = value.to_owned()
    ),
    setting!(
        "query-frontend.results-cache.memcached.addresses",
        "frontend.results_cache.memcached.addresses",
        "",
        "Comma-separated host:port of memcached servers; keys are spread across them by consistent hashing.",
        |config, value| config.cache.memcached_addresses.extend(parse_list(value))
    ),
    setting!(
        "query-frontend.results-cache.memcached.timeout",
        "frontend.results_cache.memcached.timeout",
        "200ms",
        "Longest a memcached operation may take before it counts as a miss.",
        |config, value| config.cache.memcached_timeout = parse_go_duration(value)?
    ),
    setting!(
        "query-frontend.results-cache.memcached.connect-timeout",
        "frontend.results_cache.memcached.connect_timeout",
        "100ms",
        "Longest a connection to a memcached server may take to open; a server that fails is skipped for a second.",
        |config, value| config.cache.memcached_connect_timeout = parse_go_duration(value)?
    ),
    setting!(
        "query-frontend.results-cache.memcached.max-item-size",
        "frontend.results_cache.memcached.max_item_size",
        "1048576",
        "Largest item stored in memcached, in bytes, key and overhead included: set it to memcached's -I. An entry that would be larger loses its oldest extents, or is not stored.",
        |config, value| config.cache.memcached_max_item_size = parse_number(value)?
    ),
    setting!(
        "query-frontend.results-cache.redis.endpoint",
        "frontend.results_cache.redis.endpoint",
        "",
        "Redis server as host:port; a comma-separated list spreads keys across servers by consistent hashing.",
        |config, value| config.cache.redis.endpoints.extend(parse_list(value))
    ),
    setting!(
        "query-frontend.results-cache.redis.timeout",
        "frontend.results_cache.redis.timeout",
        "500ms",
        "Longest a Redis operation may take, waiting for a pooled connection included, before it counts as a miss.",
        |config, value| config.cache.redis.timeout = parse_go_duration(value)?
    ),
    setting!(
        "query-frontend.results-cache.redis.connect-timeout",
        "frontend.results_cache.redis.connect_timeout",
        "100ms",
        "Longest a connection to a Redis server may take to open; a server that fails is skipped for a second.",
        |config, value| config.cache.redis.connect_timeout = parse_go_duration(value)?
    ),
    setting!(
        "query-frontend.results-cache.redis.db",
        "frontend.results_cache.redis.db",
        "0",
        "Redis database to SELECT on every connection.",
        |config, value| config.cache.redis.db = parse_number(value)?
    ),
    setting!(
        "query-frontend.results-cache.redis.username",
        "frontend.results_cache.redis.username",
        "",
        "Redis ACL user to AUTH as; empty logs in with the password alone.",
        |config, value| config.cache.redis.username = value.to_owned()
    ),
    setting!(
        "query-frontend.results-cache.redis.password",
        "frontend.results_cache.redis.password",
        "",
        "Password to AUTH with (never logged); prefer the -file form, which keeps it out of process listings.",
        |config, value| config.cache.redis.password = value.to_owned()
    ),
    setting!(
        "query-frontend.results-cache.redis.password-file",
        "frontend.results_cache.redis.password_file",
        "",
        "File holding the Redis password (a trailing newline is ignored), read at startup.",
        |config, value| config.cache.redis_password_file = value.to_owned()
    ),
    setting!(
        "query-frontend.results-cache.redis.max-item-size",
        "frontend.results_cache.redis.max_item_size",
        "16777216",
        "Largest value stored in Redis, in bytes. An entry that would be larger loses its oldest extents, or is not stored.",
        |config, value| config.cache.redis.max_item_bytes = parse_number(value)?
    ),
    setting!(
        "query-frontend.results-cache.inprocess.max-size-bytes",
        "frontend.results_cache.inprocess.max_size_bytes",
        "536870912",
        "Bytes the in-process results cache may hold, a quarter of them for its newest entries kept decoded; least recently used entries go first.",
        |config, value| config.cache.in_process_max_bytes = parse_number(value)?
    ),
    setting!(
        "query-frontend.results-cache.compression",
        "frontend.results_cache.compression",
        "",
        "Compress cached results: empty for none, or lz4.",
        |config, value| config.cache.compression = value.to_owned()
    ),
    setting!(
        "query-frontend.results-cache-ttl",
        "frontend.results_cache.ttl",
        "7d",
        "How long cached results are kept.",
        |config, value| config.frontend.results_cache_ttl = parse_go_duration(value)?
    ),
    setting!(
        "query-frontend.max-cache-freshness",
        "frontend.max_cache_freshness",
        "10m",
        "Results newer than this are never cached: they may still change.",
        |config, value| config.frontend.max_cache_freshness = parse_go_duration(value)?
    ),
    setting!(
        "query-frontend.answer-memo-size-bytes",
        "frontend.answer_memo_size_bytes",
        "67108864",
        "Bytes of encoded answers kept in memory for exact repeats of range queries that can no longer change (older than -query-frontend.max-cache-freshness); 0 turns it off.",
        |config, value| config.frontend.answer_memo_bytes = parse_number(value)?
    ),
    setting!(
        "query-frontend.fragment-memo-size-bytes",
        "frontend.fragment_memo_size_bytes",
        "67108864",
        "Bytes of encoded pieces of range answers (JSON and gzip) kept in memory, so that a range moved forward re-encodes only its edges; 0 turns it off.",
        |config, value| config.frontend.fragment_memo_bytes = parse_number(value)?
    ),
    setting!(
        "query-frontend.results-cache-ttl-for-labels-query",
        "frontend.metadata_cache_ttl",
        "0s",
        "Cache labels, label values and series answers this long (in the results cache's backend); 0 turns it off. Mimir's name; sluice caches series answers under it too.",
        |config, value| config.frontend.metadata_cache_ttl = parse_go_duration(value)?
    ),
    setting!(
        "runtime-config.file",
        "runtime_config.file",
        "",
        "A YAML file of per-tenant limits in Mimir's shape (overrides: {tenant: {limit: value}}), re-read every -runtime-config.reload-period. A file that does not parse or validate is refused and the limits in force stay; at start-up it stops sluice. Shown at /runtime_config.",
        |config, value| config.runtime_config_file = value.into()
    ),
    setting!(
        "runtime-config.reload-period",
        "runtime_config.period",
        "10s",
        "How often the runtime configuration file is read again.",
        |config, value| config.runtime_config_reload_period = parse_go_duration(value)?
    ),
    setting!(
        "querier.max-concurrent",
        "querier.max_concurrent",
        "20",
        "Sub-queries this querier runs at once, in total, split across the frontends it pulls from.",
        |config, value| config.querier_max_concurrent = parse_number(value)?
    ),
    setting!(
        "querier.min-concurrent",
        "querier.min_concurrent",
        "2",
        "Floor of the querier's adaptive concurrency limit, which lowers how many sub-queries run at once (down to this) while the downstream's latency rises. Keep it above the reserved querier slots so a tenant beside a flood still finds one; equal to -querier.max-concurrent turns adaptation off.",
        |config, value| config.querier_min_concurrent = parse_number(value)?
    ),
    setting!(
        "querier.backend-probe-interval",
        "querier.backend_probe_interval",
        "100ms",
        "While sub-queries run, how often the querier sends its downstream a trivial query (query=1) whose latency steers the adaptive concurrency limit; 0 turns probing off (the limit then follows sub-query latencies alone).",
        |config, value| config.querier_backend_probe_interval = parse_go_duration(value)?
    ),
    setting!(
        "querier.downstream-url",
        "querier.downstream_url",
        "",
        "Prometheus-compatible API the querier runs sub-queries against, e.g. http://localhost:9090, or https://mimir.example/prometheus (see -querier.downstream-tls-*, -basic-auth-*, -bearer-token-file).",
        |config, value| config.querier_downstream_url = value.to_owned()
    ),
    setting!(
        "querier.downstream-tls-ca-path",
        "querier.downstream_tls_ca_path",
        "",
        "For an https:// downstream: CA certificates (PEM) its certificate must chain to; empty means the system's roots.",
        |config, value| config.security.downstream.tls.ca_path = value.to_owned()
    ),
    setting!(
        "querier.downstream-tls-cert-path",
        "querier.downstream_tls_cert_path",
        "",
        "Client certificate (PEM) presented to an https:// downstream.",
        |config, value| config.security.downstream.tls.cert_path = value.to_owned()
    ),
    setting!(
        "querier.downstream-tls-key-path",
        "querier.downstream_tls_key_path",
        "",
        "Private key (PEM) of -querier.downstream-tls-cert-path.",
        |config, value| config.security.downstream.tls.key_path = value.to_owned()
    ),
    setting!(
        "querier.downstream-tls-server-name",
        "querier.downstream_tls_server_name",
        "",
        "Name the downstream's certificate must carry; empty means the URL's host.",
        |config, value| config.security.downstream.tls.server_name = value.to_owned()
    ),
    setting!(bool "querier.downstream-tls-insecure-skip-verify", "querier.downstream_tls_insecure_skip_verify", "false",
        "Accept any downstream certificate (tests only).",
        |config, value| config.security.downstream.tls.insecure_skip_verify = parse_bool(value)?),
    setting!(
        "querier.downstream-basic-auth-username",
        "querier.downstream_basic_auth_username",
        "",
        "User name sent to the downstream with HTTP basic auth.",
        |config, value| config.security.downstream.basic_auth_username = value.to_owned()
    ),
    setting!(
        "querier.downstream-basic-auth-password",
        "querier.downstream_basic_auth_password",
        "",
        "Password for -querier.downstream-basic-auth-username; prefer the -file form, which keeps it out of process listings.",
        |config, value| config.security.downstream.basic_auth_password = value.to_owned()
    ),
    setting!(
        "querier.downstream-basic-auth-password-file",
        "querier.downstream_basic_auth_password_file",
        "",
        "File holding the downstream basic auth password, read again when it changes.",
        |config, value| config.security.downstream.basic_auth_password_file = value.to_owned()
    ),
    setting!(
        "querier.downstream-bearer-token-file",
        "querier.downstream_bearer_token_file",
        "",
        "File holding a bearer token sent to the downstream as Authorization, read again when it changes.",
        |config, value| config.security.downstream.bearer_token_file = value.to_owned()
    ),
    setting!(
        "querier.downstream-header",
        "querier.downstream_header",
        "",
        "Extra header sent with every downstream request, as Name: value; repeat or separate with commas. Values are never logged.",
        |config, value| config
            .security
            .downstream
            .headers
            .extend(crate::security::parse_headers(value)?)
    ),
    setting!(
        "query-frontend.forward-header",
        "frontend.forward_header",
        "",
        "Client request header to hand on to the downstream with each sub-query, as Thanos's --query-frontend.forward-header; repeat or separate with commas. Requests differing in these headers never share in-flight work, but the results cache and answer memo are per tenant: forward headers that change the answer only with a tenant of their own.",
        |config, value| config.frontend.forward_headers.extend(
            parse_list(value)
                .into_iter()
                .map(|name| name.to_ascii_lowercase())
        )
    ),
    setting!(
        "querier.id",
        "querier.id",
        "",
        "This querier's id as frontends see it; empty means the host name and process id.",
        |config, value| config.querier_id = value.to_owned()
    ),
    setting!(
        "querier.dns-lookup-period",
        "querier.dns_lookup_period",
        "10s",
        "How often frontend addresses are resolved again, to find new frontends.",
        |config, value| config.querier_dns_lookup_period = parse_go_duration(value)?
    ),
    setting!(
        "querier.max-samples",
        "querier.max_samples",
        "50000000",
        "The most samples the embedded engine holds at once for one sub-query; beyond it the query fails with an execution error. Prometheus's --query.max-samples.",
        |config, value| config.querier_max_samples = parse_number(value)?
    ),
    setting!(
        "querier.max-fetched-series-per-query",
        "limits.max_fetched_series_per_query",
        "0",
        "The most distinct series one sub-query of a tenant may read from the blocks and the head; beyond it the query fails (422, Mimir's message). 0 is no limit. Per tenant in the runtime configuration file.",
        |config, value| config.querier_max_fetched_series = parse_number(value)?
    ),
    setting!(
        "querier.max-fetched-chunk-bytes-per-query",
        "limits.max_fetched_chunk_bytes_per_query",
        "0",
        "The most bytes of chunks one sub-query of a tenant may read from the blocks and the head; beyond it the query fails (422, Mimir's message). 0 is no limit. Per tenant in the runtime configuration file.",
        |config, value| config.querier_max_fetched_chunk_bytes = parse_number(value)?
    ),
    setting!(
        "blocks-storage.backend",
        "blocks_storage.backend",
        "filesystem",
        "Where the blocks are: filesystem or s3.",
        |config, value| config.blocks_storage.backend = value.parse()?
    ),
    setting!(
        "blocks-storage.filesystem.dir",
        "blocks_storage.filesystem.dir",
        "./data/blocks",
        "Directory of blocks (<tenant>/<ULID>/ or ULIDs at its root, e.g. a Prometheus data directory, read as tenant 'anonymous'). With no -querier.downstream-url the querier evaluates queries over these blocks.",
        |config, value| config.blocks_storage.filesystem_dir = value.into()
    ),
    setting!(
        "blocks-storage.s3.endpoint",
        "blocks_storage.s3.endpoint",
        "",
        "S3 endpoint as host:port, without a scheme; empty means AWS.",
        |config, value| config.blocks_storage.s3.endpoint = value.to_owned()
    ),
    setting!(
        "blocks-storage.s3.bucket-name",
        "blocks_storage.s3.bucket_name",
        "",
        "S3 bucket name.",
        |config, value| config.blocks_storage.s3.bucket_name = value.to_owned()
    ),
    setting!(
        "blocks-storage.s3.access-key-id",
        "blocks_storage.s3.access_key_id",
        "",
        "S3 access key ID; empty means the AWS environment variables.",
        |config, value| config.blocks_storage.s3.access_key_id = value.to_owned()
    ),
    setting!(
        "blocks-storage.s3.secret-access-key",
        "blocks_storage.s3.secret_access_key",
        "",
        "S3 secret access key.",
        |config, value| config.blocks_storage.s3.secret_access_key = value.to_owned()
    ),
    setting!(
        "blocks-storage.s3.region",
        "blocks_storage.s3.region",
        "",
        "S3 region; empty means the AWS environment's, else us-east-1.",
        |config, value| config.blocks_storage.s3.region = value.to_owned()
    ),
    setting!(bool "blocks-storage.s3.insecure", "blocks_storage.s3.insecure", "false",
        "Reach S3 over plain HTTP. The default build has no TLS for S3 (no C crypto) and needs this; HTTPS needs a build with the s3-tls feature.",
        |config, value| config.blocks_storage.s3.insecure = parse_bool(value)?),
    setting!(
        "blocks-storage.bucket-store.sync-interval",
        "blocks_storage.bucket_store.sync_interval",
        "1m",
        "How often the bucket is listed again for new and deleted blocks. Shorter than Mimir's 15m: Prometheus deletes compacted blocks at once, and on a filesystem or with a bucket index a sync costs a listing or one GET.",
        |config, value| config.bucket_sync_interval = parse_go_duration(value)?
    ),
    setting!(
        "blocks-storage.bucket-store.index-cache.inmemory.max-size-bytes",
        "blocks_storage.bucket_store.index_cache.inmemory.max_size_bytes",
        "268435456",
        "Bytes of postings lists the querier keeps in memory across queries (Mimir's in-memory index cache); 0 turns it off.",
        |config, value| config.postings_cache_bytes = parse_number(value)?
    ),
    setting!(
        "blocks-storage.bucket-store.chunks-cache.inmemory.max-size-bytes",
        "blocks_storage.bucket_store.chunks_cache.inmemory.max_size_bytes",
        "268435456",
        "Bytes of chunks the querier keeps in memory across queries; 0 turns it off (and with it fetching a selection's chunks in batches).",
        |config, value| config.chunks_cache_bytes = parse_number(value)?
    ),
    setting!(
        "blocks-storage.tsdb.dir",
        "blocks_storage.tsdb.dir",
        "./data/tsdb",
        "The store's local directory: the write-ahead log is in wal/ under it.",
        |config, value| config.store.tsdb_dir = value.into()
    ),
    setting!(
        "blocks-storage.tsdb.wal-fsync",
        "blocks_storage.tsdb.wal_fsync",
        "never",
        "When the WAL is fsynced: never (at segment ends only, as Prometheus: a killed process loses nothing acknowledged, a power loss or kernel crash can lose the last ~30 s the kernel had not written back) or always (before every acknowledgement, group-committed: nothing acknowledged is lost, at an fsync per write).",
        |config, value| config.store.wal_sync = parse_wal_sync(value)?
    ),
    setting!(
        "blocks-storage.tsdb.block-ranges-period",
        "blocks_storage.tsdb.block_ranges_period",
        "2h",
        "Length of the head's blocks: chunks never cross its boundaries, and in-order samples more than half of it behind a tenant's newest are out of bounds.",
        |config, value| config.store.head.block_range_ms = positive_ms(value)?
    ),
    setting!(
        "blocks-storage.tsdb.head-compaction-interval",
        "blocks_storage.tsdb.head_compaction_interval",
        "1m",
        "How often the store checks whether a tenant's head spans more than one and a half block ranges, and then cuts its oldest range into a block uploaded to the bucket (a failed upload keeps the samples in the head until the next check).",
        |config, value| config.head_compaction_interval = parse_go_duration(value)?
    ),
    setting!(
        "compactor.block-ranges",
        "compactor.block_ranges",
        "2h,12h,24h",
        "Comma-separated ranges the compactor merges a tenant's blocks into, smallest first, each a multiple of the one before.",
        |config, value| config.compactor.block_ranges = parse_list(value)
            .iter()
            .map(|range| parse_go_duration(range))
            .collect::<Result<_, _>>()?
    ),
    setting!(
        "compactor.compaction-interval",
        "compactor.compaction_interval",
        "1h",
        "How often the compactor merges blocks, applies retention and deletes blocks marked for deletion (it also runs at start).",
        |config, value| config.compactor.interval = parse_go_duration(value)?
    ),
    setting!(
        "compactor.deletion-delay",
        "compactor.deletion_delay",
        "12h",
        "How long a block marked for deletion (merged into a larger one, or past retention) stays in the bucket before the compactor deletes it, so queriers that opened it finish reading it.",
        |config, value| config.compactor.deletion_delay = parse_go_duration(value)?
    ),
    setting!(
        "compactor.blocks-retention-period",
        "limits.compactor_blocks_retention_period",
        "0s",
        "Blocks whose newest sample is older than this are marked for deletion by the compactor; 0 keeps blocks forever.",
        |config, value| config.compactor.retention = parse_go_duration(value)?
    ),
    setting!(
        "compactor.partial-block-deletion-delay",
        "limits.compactor_partial_block_deletion_delay",
        "1d",
        "Block folders without meta.json (uploads a crash abandoned) whose ULID is older than this are marked for deletion by the compactor; 0 keeps them.",
        |config, value| config.compactor.partial_block_deletion_delay = parse_go_duration(value)?
    ),
    setting!(
        "compactor.data-dir",
        "compactor.data_dir",
        "./data/compactor",
        "Where the compactor writes merged blocks before uploading them to the bucket.",
        |config, value| config.compactor.data_dir = value.into()
    ),
    setting!(
        "self-scrape.enabled",
        "self_scrape.enabled",
        "true",
        "Where the store runs, scrape this process's own /metrics into it for the default tenant (job=\"sluice\", with up and scrape_* series as a Prometheus scrape gives), so sluice answers queries about itself.",
        |config, value| config.self_scrape_enabled = parse_bool(value)?
    ),
    setting!(
        "self-scrape.interval",
        "self_scrape.interval",
        "15s",
        "How often the store scrapes this process's own /metrics.",
        |config, value| config.self_scrape_interval = parse_go_duration(value)?
    ),
    setting!(
        "ingester.out-of-order-time-window",
        "limits.out_of_order_time_window",
        "0s",
        "How far behind a tenant's newest sample an out-of-order sample is still accepted; 0 refuses them, as Prometheus and Mimir do by default.",
        |config, value| config.store.head.out_of_order_window_ms =
            parse_go_duration(value)?.as_millis() as i64
    ),
    setting!(
        "distributor.max-recv-msg-size",
        "distributor.max_recv_msg_size",
        "10485760",
        "Largest remote-write body accepted, in bytes as sent (snappy-compressed); larger ones get 413. The decompressed message may be at most 8 times this.",
        |config, value| config.store.max_recv_msg_size = parse_number(value)?
    ),
    setting!(
        "distributor.ingestion-rate-limit",
        "limits.ingestion_rate",
        "10000",
        "Samples (and exemplars and metadata) per second a tenant may push; more get 429. 0 turns the limit off.",
        |config, value| config.store.ingestion_rate = parse_number(value)?
    ),
    setting!(
        "distributor.ingestion-burst-size",
        "limits.ingestion_burst_size",
        "200000",
        "Samples a tenant may push at once above its rate.",
        |config, value| config.store.ingestion_burst = parse_number(value)?
    ),
    setting!(
        "ingester.max-global-series-per-user",
        "limits.max_global_series_per_user",
        "150000",
        "The most series a tenant may have in the head; samples of new series beyond it are refused (400, counted as per_user_series_limit). 0 is no limit. Per tenant in the runtime configuration file.",
        |config, value| config.store.max_global_series_per_user = parse_number(value)?
    ),
    setting!(
        "validation.max-label-names-per-series",
        "limits.max_label_names_per_series",
        "30",
        "Most labels a series may have; series with more are refused.",
        |config, value| config.store.limits.max_label_names_per_series = parse_number(value)?
    ),
    setting!(
        "validation.max-length-label-name",
        "limits.max_label_name_length",
        "1024",
        "Longest label name accepted, in bytes.",
        |config, value| config.store.limits.max_label_name_length = parse_number(value)?
    ),
    setting!(
        "validation.max-length-label-value",
        "limits.max_label_value_length",
        "2048",
        "Longest label value accepted, in bytes.",
        |config, value| config.store.limits.max_label_value_length = parse_number(value)?
    ),
    setting!(
        "validation.create-grace-period",
        "limits.creation_grace_period",
        "10m",
        "How far in the future (by this machine's clock) a sample may be; later ones are refused.",
        |config, value| config.store.limits.creation_grace_period_ms =
            parse_go_duration(value)?.as_millis() as i64
    ),
];

/// What the command line asked for.
#[derive(Debug)]
pub(crate) enum Loaded {
    Run(Box<Config>),
    Help(String),
}

impl Config {
    /// Whether blocks to read were configured: an S3 bucket, or a directory.
    pub(crate) fn has_bucket(&self) -> bool {
        self.blocks_storage.backend == sluice_bucket::Backend::S3
            || !self.blocks_storage.filesystem_dir.as_os_str().is_empty()
    }
}

fn blank_config() -> Config {
    Config {
        targets: Vec::new(),
        target_all: false,
        http_listen_address: String::new(),
        http_listen_port: 0,
        grpc_listen_address: String::new(),
        grpc_listen_port: 0,
        graceful_shutdown_timeout: Duration::ZERO,
        worker_threads: 0,
        log_level: String::new(),
        log_format: String::new(),
        frontend: sluice_frontend::FrontendConfig::default(),
        querier_frontend_addresses: Vec::new(),
        querier_max_concurrent: 0,
        querier_min_concurrent: 0,
        querier_backend_probe_interval: Duration::ZERO,
        querier_downstream_url: String::new(),
        querier_id: String::new(),
        querier_dns_lookup_period: Duration::ZERO,
        querier_scheduler_addresses: Vec::new(),
        frontend_instance_address: String::new(),
        scheduler: sluice_scheduler::SchedulerConfig::default(),
        cache: CacheSettings::default(),
        blocks_storage: sluice_bucket::BucketConfig::default(),
        bucket_sync_interval: Duration::ZERO,
        querier_max_samples: 0,
        querier_max_fetched_series: 0,
        querier_max_fetched_chunk_bytes: 0,
        parallelize_shardable_queries: Some(false),
        runtime_config_file: std::path::PathBuf::new(),
        runtime_config_reload_period: Duration::ZERO,
        security: crate::security::Security::default(),
        postings_cache_bytes: 0,
        chunks_cache_bytes: 0,
        store: sluice_store::StoreConfig::new(""),
        head_compaction_interval: Duration::ZERO,
        compactor: sluice_compactor::CompactorConfig::new(""),
        pprof_enabled: false,
        self_scrape_enabled: false,
        self_scrape_interval: Duration::ZERO,
    }
}

/// Environment variable for a flag: `SLUICE_` and the flag in capitals with
/// dots and dashes as underscores.
pub(crate) fn env_name(flag: &str) -> String {
    let mut name = String::from("SLUICE_");
    for character in flag.chars() {
        name.push(if character.is_ascii_alphanumeric() {
            character.to_ascii_uppercase()
        } else {
            '_'
        });
    }
    name
}

fn setting_for_flag(flag: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|setting| setting.flag == flag)
}

/// One value given on the command line, in order.
struct FlagValue {
    setting: &'static Setting,
    value: String,
}

/// Parses flags the way Go's `flag` package does (`-name value`,
/// `-name=value`, booleans alone mean true), accepting one or two dashes.
fn parse_flags(args: &[String]) -> Result<(Vec<FlagValue>, Option<String>, bool), String> {
    let mut values = Vec::new();
    let mut config_file = None;
    let mut help = false;
    let mut index = 0;
    while index < args.len() {
        let argument = &args[index];
        index += 1;
        let Some(stripped) = argument
            .strip_prefix("--")
            .or_else(|| argument.strip_prefix('-'))
        else {
            return Err(format!(
                "unexpected argument {argument:?}: flags start with -"
            ));
        };
        let (name, inline_value) = match stripped.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (stripped, None),
        };
        if matches!(name, "help" | "h") {
            help = true;
            continue;
        }
        if name == "config.file" {
            let value = match inline_value {
                Some(value) => value,
                None => {
                    let value = args
                        .get(index)
                        .cloned()
                        .ok_or("flag -config.file needs a value")?;
                    index += 1;
                    value
                }
            };
            config_file = Some(value);
            continue;
        }
        let Some(setting) = setting_for_flag(name) else {
            return Err(format!(
                "flag provided but not defined: -{name} (see sluice -help)"
            ));
        };
        let value = match inline_value {
            Some(value) => value,
            None if setting.is_bool => "true".to_owned(),
            None => {
                let value = args
                    .get(index)
                    .cloned()
                    .ok_or_else(|| format!("flag -{name} needs a value"))?;
                index += 1;
                value
            }
        };
        values.push(FlagValue { setting, value });
    }
    Ok((values, config_file, help))
}

/// Flattens a YAML document into `dotted.key → value` pairs; lists become
/// comma-separated values.
fn flatten_yaml(
    prefix: &str,
    value: &serde_yaml::Value,
    out: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    use serde_yaml::Value;
    match value {
        Value::Mapping(mapping) => {
            for (key, inner) in mapping {
                let Some(key) = key.as_str() else {
                    return Err(format!("non-string key under {prefix:?}"));
                };
                let path = if prefix.is_empty() {
                    key.to_owned()
                } else {
                    format!("{prefix}.{key}")
                };
                if SETTINGS.iter().any(|setting| setting.yaml == path) {
                    out.insert(path, scalar_text(inner, key)?);
                } else {
                    flatten_yaml(&path, inner, out)?;
                }
            }
            Ok(())
        }
        Value::Null if prefix.is_empty() => Ok(()),
        _ => Err(format!("unknown config key {prefix:?}")),
    }
}

fn scalar_text(value: &serde_yaml::Value, key: &str) -> Result<String, String> {
    use serde_yaml::Value;
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Bool(flag) => Ok(flag.to_string()),
        Value::Number(number) => Ok(number.to_string()),
        Value::Null => Ok(String::new()),
        Value::Sequence(items) => items
            .iter()
            .map(|item| scalar_text(item, key))
            .collect::<Result<Vec<_>, _>>()
            .map(|items| items.join(",")),
        _ => Err(format!("config key {key:?} must be a scalar or a list")),
    }
}

/// Builds the configuration from the command line, a YAML file it names, and
/// the environment given as `env` (so tests need not touch the process's).
pub(crate) fn load(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, String> {
    let (flags, config_file, help) = parse_flags(args)?;
    if help {
        return Ok(Loaded::Help(help_text()));
    }
    let mut config = blank_config();
    let mut layers: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for setting in SETTINGS {
        layers
            .entry(setting.flag)
            .or_default()
            .push(setting.default.to_owned());
    }
    let config_file = config_file.or_else(|| env("SLUICE_CONFIG_FILE"));
    if let Some(path) = &config_file {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("reading config file {path}: {error}"))?;
        for (key, value) in
            parse_yaml(&text).map_err(|error| format!("config file {path}: {error}"))?
        {
            let setting = SETTINGS
                .iter()
                .find(|setting| setting.yaml == key)
                .expect("flatten_yaml only returns known keys");
            layers.insert(setting.flag, vec![value]);
        }
    }
    for setting in SETTINGS {
        if let Some(value) = env(&env_name(setting.flag)) {
            layers.insert(setting.flag, vec![value]);
        }
    }
    // A flag given several times adds up for lists and overrides otherwise;
    // flags as a whole replace what the file and environment said.
    let mut from_flags: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for flag in flags {
        from_flags
            .entry(flag.setting.flag)
            .or_default()
            .push(flag.value);
    }
    layers.extend(from_flags);
    for setting in SETTINGS {
        for value in &layers[setting.flag] {
            (setting.apply)(&mut config, value)
                .map_err(|error| format!("-{}: {error}", setting.flag))?;
        }
    }
    validate(&mut config)?;
    Ok(Loaded::Run(Box::new(config)))
}

/// Parses a config file's text into known settings; unknown keys are errors.
pub(crate) fn parse_yaml(text: &str) -> Result<BTreeMap<String, String>, String> {
    let document: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|error| format!("invalid YAML: {error}"))?;
    let mut values = BTreeMap::new();
    flatten_yaml("", &document, &mut values)?;
    Ok(values)
}

/// The Redis backend as configured, its password read from the password
/// file if one is named. Errors never include the password.
fn redis_config(cache: &CacheSettings) -> Result<sluice_cache::RedisConfig, String> {
    if cache.redis.endpoints.is_empty() {
        return Err("-query-frontend.results-cache.backend=redis needs -query-frontend.results-cache.redis.endpoint".into());
    }
    let mut redis = cache.redis.clone();
    if !cache.redis_password_file.is_empty() {
        if !redis.password.is_empty() {
            return Err(
                "set -query-frontend.results-cache.redis.password or its -file form, not both"
                    .into(),
            );
        }
        let text = std::fs::read_to_string(&cache.redis_password_file).map_err(|error| {
            format!(
                "reading -query-frontend.results-cache.redis.password-file {:?}: {error}",
                cache.redis_password_file
            )
        })?;
        redis.password = text.trim_end_matches(['\r', '\n']).to_owned();
    }
    Ok(redis)
}

fn validate(config: &mut Config) -> Result<(), String> {
    if config.target_all && !config.querier_downstream_url.is_empty() {
        // In front of another Prometheus the querier forwards every query,
        // so a store here would take writes no query reads, and its
        // compactor would have no blocks of its own.
        config
            .targets
            .retain(|role| !matches!(role, Role::Store | Role::Compactor));
    }
    if config.targets.contains(&Role::Compactor) {
        if !config.has_bucket() {
            return Err("the compactor needs a bucket (-blocks-storage.filesystem.dir, or -blocks-storage.backend=s3)".into());
        }
        config.compactor.validate()?;
    }
    let runs_querier = config.targets.contains(&Role::Querier);
    let runs_frontend = config.targets.contains(&Role::QueryFrontend);
    let engine_querier = runs_querier && config.querier_downstream_url.is_empty();
    config.frontend.query_sharding_enabled = config
        .parallelize_shardable_queries
        .unwrap_or(engine_querier);
    if runs_querier {
        if config.querier_downstream_url.is_empty() && !config.has_bucket() {
            return Err(
                "the querier needs -querier.downstream-url (a Prometheus-compatible API, e.g. http://localhost:9090) or blocks to read (-blocks-storage.filesystem.dir, or -blocks-storage.backend=s3)"
                    .into(),
            );
        }
        if config.querier_max_samples == 0 {
            return Err("-querier.max-samples must be at least 1".into());
        }
        if !runs_frontend
            && config.querier_frontend_addresses.is_empty()
            && config.querier_scheduler_addresses.is_empty()
        {
            return Err(
                "-target=querier needs -querier.frontend-address or -querier.scheduler-address (where to pull work from)"
                    .into(),
            );
        }
        if config.querier_max_concurrent == 0 {
            return Err("-querier.max-concurrent must be at least 1".into());
        }
    }
    if config.targets.contains(&Role::Store) && config.head_compaction_interval.is_zero() {
        return Err("-blocks-storage.tsdb.head-compaction-interval must be longer than 0".into());
    }
    if config.self_scrape_enabled && config.self_scrape_interval.is_zero() {
        return Err("-self-scrape.interval must be longer than 0".into());
    }
    if runs_frontend && config.targets.contains(&Role::QueryScheduler) {
        return Err(
            "run query-scheduler in its own process: a frontend beside it would own a second queue"
                .into(),
        );
    }
    if config.frontend.max_retries == 0 {
        return Err("-query-frontend.max-retries-per-request must be at least 1".into());
    }
    if !matches!(config.log_format.as_str(), "logfmt" | "json") {
        return Err(format!(
            "-log.format must be logfmt or json, not {:?}",
            config.log_format
        ));
    }
    config.frontend.results_cache = if config.cache.enabled
        || !config.frontend.metadata_cache_ttl.is_zero()
    {
        let compression = match config.cache.compression.as_str() {
            "" | "none" => sluice_cache::Compression::None,
            "lz4" => sluice_cache::Compression::Lz4,
            other => {
                return Err(format!(
                    "-query-frontend.results-cache.compression must be empty or lz4, not {other:?}"
                ));
            }
        };
        let backend = match config.cache.backend.as_str() {
            "inprocess" => sluice_cache::BackendConfig::InProcess(
                sluice_cache::InProcessConfig::with_max_bytes(config.cache.in_process_max_bytes),
            ),
            "memcached" => {
                if config.cache.memcached_addresses.is_empty() {
                    return Err("-query-frontend.results-cache.backend=memcached needs -query-frontend.results-cache.memcached.addresses".into());
                }
                let mut memcached =
                    sluice_cache::MemcachedConfig::new(config.cache.memcached_addresses.clone());
                memcached.timeout = config.cache.memcached_timeout;
                memcached.connect_timeout = config.cache.memcached_connect_timeout;
                memcached.max_item_bytes = config.cache.memcached_max_item_size;
                sluice_cache::BackendConfig::Memcached(memcached)
            }
            "redis" => sluice_cache::BackendConfig::Redis(redis_config(&config.cache)?),
            other => {
                return Err(format!(
                    "-query-frontend.results-cache.backend must be inprocess, memcached or redis, not {other:?}"
                ));
            }
        };
        Some(sluice_cache::CacheConfig {
            name: "results".to_owned(),
            backend,
            compression,
        })
    } else {
        None
    };
    if !config.cache.enabled {
        // Metadata caching alone still needs the backend, but range queries
        // must then skip it: a zero freshness window is not "off", so mark it.
        config.frontend.cache_range_results = false;
    }
    config
        .security
        .validate(&mut config.frontend, &mut config.scheduler)?;
    if config.querier_id.is_empty() {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "querier".into());
        config.querier_id = format!("{host}-{}", std::process::id());
    }
    Ok(())
}

/// `sluice -help`: every flag with its default, YAML key and variable.
pub(crate) fn help_text() -> String {
    let mut text = String::from(
        "Usage: sluice [flags]\n\nA horizontally scalable query frontend for Prometheus-compatible metrics.\n\
         Settings come from defaults, then -config.file (YAML), then SLUICE_* environment\n\
         variables, then flags. Flags take one or two dashes.\n\n",
    );
    text.push_str("  -config.file string\n    \tYAML file with settings (keys shown as 'yaml:' below). [env SLUICE_CONFIG_FILE]\n");
    text.push_str("  -help\n    \tPrint this help and exit.\n");
    for setting in SETTINGS {
        let kind = if setting.is_bool { "" } else { " value" };
        let _ = writeln!(text, "  -{}{kind}", setting.flag);
        let _ = writeln!(
            text,
            "    \t{} (default {:?}) [yaml: {}] [env {}]",
            setting.help,
            setting.default,
            setting.yaml,
            env_name(setting.flag)
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|arg| arg.to_string()).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn run(loaded: Result<Loaded, String>) -> Config {
        match loaded.unwrap() {
            Loaded::Run(config) => *config,
            Loaded::Help(_) => panic!("expected a config"),
        }
    }

    const DOWNSTREAM: &str = "-querier.downstream-url=http://localhost:9090";

    #[test]
    fn defaults_match_the_documented_ones() {
        let config = run(load(&args(&[DOWNSTREAM]), &no_env));
        assert_eq!(config.targets, vec![Role::QueryFrontend, Role::Querier]);
        assert_eq!(config.http_listen_port, 8080);
        assert_eq!(config.grpc_listen_port, 9095);
        assert_eq!(config.querier_max_concurrent, 20);
        assert_eq!(config.frontend.max_outstanding_per_tenant, 100);
        assert_eq!(config.frontend.max_retries, 5);
        assert_eq!(config.frontend.query_timeout, Duration::from_secs(120));
        assert!(!config.frontend.multitenancy_enabled);
        assert_eq!(config.querier_dns_lookup_period, Duration::from_secs(10));
        let frontend = &config.frontend;
        assert_eq!(frontend.split_interval, Duration::from_secs(86_400));
        assert_eq!(frontend.max_query_parallelism, 14);
        assert!(!frontend.align_queries_with_step);
        assert_eq!(frontend.max_cache_freshness, Duration::from_secs(600));
        assert_eq!(frontend.results_cache_ttl, Duration::from_secs(7 * 86_400));
        assert!(frontend.metadata_cache_ttl.is_zero());
        assert!(matches!(
            frontend.results_cache.as_ref().map(|cache| &cache.backend),
            Some(sluice_cache::BackendConfig::InProcess(in_process)) if in_process.max_bytes == 512 << 20
        ));
    }

    fn memcached_of(config: &Config) -> &sluice_cache::MemcachedConfig {
        match config
            .frontend
            .results_cache
            .as_ref()
            .map(|cache| &cache.backend)
        {
            Some(sluice_cache::BackendConfig::Memcached(memcached)) => memcached,
            other => panic!("a memcached backend, not {other:?}"),
        }
    }

    #[test]
    fn memcached_settings_reach_the_backend() {
        let config = run(load(
            &args(&[
                DOWNSTREAM,
                "-query-frontend.results-cache.backend=memcached",
                "-query-frontend.results-cache.memcached.addresses=a:11211,b:11211",
                "-query-frontend.results-cache.memcached.timeout=300ms",
                "-query-frontend.results-cache.memcached.connect-timeout=50ms",
                "-query-frontend.results-cache.memcached.max-item-size=4194304",
            ]),
            &no_env,
        ));
        let memcached = memcached_of(&config);
        assert_eq!(memcached.servers, vec!["a:11211", "b:11211"]);
        assert_eq!(memcached.timeout, Duration::from_millis(300));
        assert_eq!(memcached.connect_timeout, Duration::from_millis(50));
        assert_eq!(memcached.max_item_bytes, 4 << 20);
        let defaults = run(load(
            &args(&[
                DOWNSTREAM,
                "-query-frontend.results-cache.backend=memcached",
                "-query-frontend.results-cache.memcached.addresses=a:11211",
            ]),
            &no_env,
        ));
        let memcached = memcached_of(&defaults);
        assert_eq!(memcached.timeout, Duration::from_millis(200));
        assert_eq!(memcached.connect_timeout, Duration::from_millis(100));
        assert_eq!(memcached.max_item_bytes, 1 << 20);
    }

    fn redis_of(config: &Config) -> &sluice_cache::RedisConfig {
        match config
            .frontend
            .results_cache
            .as_ref()
            .map(|cache| &cache.backend)
        {
            Some(sluice_cache::BackendConfig::Redis(redis)) => redis,
            other => panic!("a redis backend, not {other:?}"),
        }
    }

    #[test]
    fn redis_settings_reach_the_backend_and_the_password_file_is_read() {
        let dir = std::env::temp_dir().join(format!("sluice-redis-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let password_file = dir.join("password");
        std::fs::write(&password_file, "from file\n").unwrap();
        let file_flag = format!(
            "-query-frontend.results-cache.redis.password-file={}",
            password_file.display()
        );
        let config = run(load(
            &args(&[
                DOWNSTREAM,
                "-query-frontend.results-cache.backend=redis",
                "-query-frontend.results-cache.redis.endpoint=r1:6379, r2:6379",
                "-query-frontend.results-cache.redis.timeout=300ms",
                "-query-frontend.results-cache.redis.connect-timeout=50ms",
                "-query-frontend.results-cache.redis.db=2",
                "-query-frontend.results-cache.redis.username=sluice",
                &file_flag,
                "-query-frontend.results-cache.redis.max-item-size=1048576",
            ]),
            &no_env,
        ));
        let redis = redis_of(&config);
        assert_eq!(redis.endpoints, vec!["r1:6379", "r2:6379"]);
        assert_eq!(redis.timeout, Duration::from_millis(300));
        assert_eq!(redis.connect_timeout, Duration::from_millis(50));
        assert_eq!((redis.db, redis.username.as_str()), (2, "sluice"));
        assert_eq!(redis.password, "from file");
        assert_eq!(redis.max_item_bytes, 1 << 20);
        let defaults = run(load(
            &args(&[
                DOWNSTREAM,
                "-query-frontend.results-cache.backend=redis",
                "-query-frontend.results-cache.redis.endpoint=r:6379",
                "-query-frontend.results-cache.redis.password=inline",
            ]),
            &no_env,
        ));
        let redis = redis_of(&defaults);
        assert_eq!(redis.timeout, Duration::from_millis(500));
        assert_eq!(redis.connect_timeout, Duration::from_millis(100));
        assert_eq!((redis.db, redis.password.as_str()), (0, "inline"));
        assert_eq!(redis.max_item_bytes, 16 << 20);
        assert!(!format!("{redis:?}").contains("inline"), "never shown");

        let refusals = [
            vec!["-query-frontend.results-cache.backend=redis"],
            vec![
                "-query-frontend.results-cache.backend=redis",
                "-query-frontend.results-cache.redis.endpoint=r:6379",
                "-query-frontend.results-cache.redis.password=inline",
                &file_flag,
            ],
            vec![
                "-query-frontend.results-cache.backend=redis",
                "-query-frontend.results-cache.redis.endpoint=r:6379",
                "-query-frontend.results-cache.redis.password-file=/nonexistent/redis-password",
            ],
            vec!["-query-frontend.results-cache.backend=redis-cluster"],
        ];
        for refused in refusals {
            let mut flags = vec![DOWNSTREAM];
            flags.extend(refused.iter().copied());
            let error = load(&args(&flags), &no_env).unwrap_err();
            assert!(error.contains("redis"), "{error}");
            assert!(
                !error.contains("inline") && !error.contains("from file"),
                "{error}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn blocks_storage_takes_mimirs_flags() {
        let config = run(load(
            &args(&[
                DOWNSTREAM,
                "-blocks-storage.backend=s3",
                "-blocks-storage.s3.endpoint=minio:9000",
                "-blocks-storage.s3.bucket-name=blocks",
                "-blocks-storage.s3.access-key-id=id",
                "-blocks-storage.s3.secret-access-key=secret",
                "-blocks-storage.s3.region=eu-west-1",
                "-blocks-storage.s3.insecure=true",
                "-blocks-storage.bucket-store.sync-interval=30s",
                "-querier.max-samples=1000",
                "-blocks-storage.bucket-store.index-cache.inmemory.max-size-bytes=1024",
                "-blocks-storage.bucket-store.chunks-cache.inmemory.max-size-bytes=0",
            ]),
            &no_env,
        ));
        let expected = sluice_bucket::S3Config {
            endpoint: "minio:9000".into(),
            bucket_name: "blocks".into(),
            access_key_id: "id".into(),
            secret_access_key: "secret".into(),
            region: "eu-west-1".into(),
            insecure: true,
        };
        assert_eq!(config.blocks_storage.backend, sluice_bucket::Backend::S3);
        assert_eq!(config.blocks_storage.s3, expected);
        assert_eq!(config.bucket_sync_interval, Duration::from_secs(30));
        assert_eq!(config.querier_max_samples, 1000);
        assert_eq!(
            (config.postings_cache_bytes, config.chunks_cache_bytes),
            (1024, 0)
        );
        let defaults = run(load(&args(&[DOWNSTREAM]), &no_env));
        assert_eq!(defaults.postings_cache_bytes, 256 << 20);
        assert_eq!(defaults.chunks_cache_bytes, 256 << 20);
        assert_eq!(defaults.bucket_sync_interval, Duration::from_secs(60));
        assert_eq!(defaults.querier_max_samples, 50_000_000);
        let refused = load(&args(&[DOWNSTREAM, "-blocks-storage.backend=gcs"]), &no_env);
        assert!(refused.unwrap_err().contains("gcs"));
        // A directory of blocks is enough for a querier: the engine reads it.
        let engine = run(load(
            &args(&["-blocks-storage.filesystem.dir=/prom"]),
            &no_env,
        ));
        assert!(engine.querier_downstream_url.is_empty() && engine.has_bucket());
    }

    #[test]
    fn sharding_is_off_by_default_and_auto_only_over_the_embedded_engine() {
        let default = run(load(&args(&[]), &no_env));
        assert!(!default.frontend.query_sharding_enabled);
        const AUTO: &str = "-query-frontend.parallelize-shardable-queries=auto";
        let engine = run(load(&args(&[AUTO]), &no_env));
        assert!(engine.frontend.query_sharding_enabled);
        assert_eq!(engine.frontend.query_sharding_total_shards, 16);
        assert_eq!(engine.frontend.query_sharding_max_sharded_queries, 128);
        let prometheus = run(load(&args(&[DOWNSTREAM, AUTO]), &no_env));
        assert!(!prometheus.frontend.query_sharding_enabled);
        let mimir = run(load(
            &args(&[
                DOWNSTREAM,
                "-query-frontend.parallelize-shardable-queries=true",
                "-query-frontend.query-sharding-total-shards=4",
                "-query-frontend.query-sharding-max-sharded-queries=32",
                "-query-frontend.query-sharding-target-series-per-shard=2500",
            ]),
            &no_env,
        ));
        assert!(mimir.frontend.query_sharding_enabled);
        assert_eq!(mimir.frontend.query_sharding_total_shards, 4);
        assert_eq!(mimir.frontend.query_sharding_max_sharded_queries, 32);
        assert_eq!(mimir.frontend.query_sharding_target_series_per_shard, 2500);
        let off = run(load(
            &args(&["-query-frontend.parallelize-shardable-queries=false"]),
            &no_env,
        ));
        assert!(!off.frontend.query_sharding_enabled);
        let refused = load(
            &args(&["-query-frontend.parallelize-shardable-queries=sometimes"]),
            &no_env,
        );
        assert!(refused.unwrap_err().contains("sometimes"));
    }

    #[test]
    fn no_flags_run_every_role_with_the_store_under_data() {
        let config = run(load(&args(&[]), &no_env));
        assert_eq!(
            config.targets,
            vec![
                Role::QueryFrontend,
                Role::Querier,
                Role::Store,
                Role::Compactor
            ]
        );
        let hour = std::time::Duration::from_secs(3600);
        let compactor = &config.compactor;
        assert_eq!(compactor.block_ranges, [2 * hour, 12 * hour, 24 * hour]);
        assert_eq!(
            (
                compactor.interval,
                compactor.deletion_delay,
                compactor.retention
            ),
            (hour, 12 * hour, Duration::ZERO)
        );
        assert_eq!(compactor.partial_block_deletion_delay, 24 * hour);
        assert_eq!(
            compactor.data_dir,
            std::path::PathBuf::from("./data/compactor")
        );
        assert_eq!(
            config.blocks_storage.filesystem_dir,
            std::path::PathBuf::from("./data/blocks")
        );
        let store = &config.store;
        assert_eq!(store.tsdb_dir, std::path::PathBuf::from("./data/tsdb"));
        assert_eq!(store.wal_sync, sluice_wal::SyncPolicy::Never);
        assert_eq!(store.head.out_of_order_window_ms, 0);
        assert_eq!(store.head.block_range_ms, 2 * 3_600_000);
        assert_eq!(store.max_recv_msg_size, 10 << 20);
        assert_eq!(
            (store.ingestion_rate, store.ingestion_burst),
            (10_000.0, 200_000)
        );
        assert_eq!(store.limits, sluice_remotewrite::Limits::default());
        assert_eq!(
            (config.http_listen_port, config.grpc_listen_port),
            (8080, 9095)
        );
        // In front of a downstream, `all` leaves the store out; asked for
        // by name, it runs.
        let forwarding = run(load(&args(&[DOWNSTREAM]), &no_env));
        assert!(!forwarding.targets.contains(&Role::Store));
        assert!(!forwarding.targets.contains(&Role::Compactor));
        let error = load(&args(&["-compactor.block-ranges=2h,3h"]), &no_env).unwrap_err();
        assert!(error.contains("not a larger multiple"), "{error}");
        let named = run(load(
            &args(&[DOWNSTREAM, "-target=query-frontend,querier,store"]),
            &no_env,
        ));
        assert!(named.targets.contains(&Role::Store));
        let tuned = run(load(
            &args(&[
                "-blocks-storage.tsdb.wal-fsync=always",
                "-ingester.out-of-order-time-window=30m",
                "-blocks-storage.tsdb.dir=/var/sluice",
            ]),
            &no_env,
        ));
        assert_eq!(tuned.store.wal_sync, sluice_wal::SyncPolicy::Always);
        assert_eq!(tuned.store.head.out_of_order_window_ms, 1_800_000);
        assert!(
            load(
                &args(&["-blocks-storage.tsdb.wal-fsync=sometimes"]),
                &no_env
            )
            .is_err()
        );
    }

    #[test]
    fn cache_ttls_take_mimirs_flags() {
        let config = run(load(
            &args(&[
                DOWNSTREAM,
                "-query-frontend.results-cache-ttl=6h",
                "-query-frontend.results-cache-ttl-for-labels-query=30s",
            ]),
            &no_env,
        ));
        assert_eq!(
            config.frontend.results_cache_ttl,
            Duration::from_secs(6 * 3600)
        );
        assert_eq!(config.frontend.metadata_cache_ttl, Duration::from_secs(30));
    }

    #[test]
    fn one_or_two_dashes_and_both_value_styles() {
        let config = run(load(
            &args(&[
                "--querier.max-concurrent",
                "7",
                "-server.http-listen-port=9000",
                "-auth.multitenancy-enabled",
                "--querier.frontend-address=a:1,b:2",
                "-querier.frontend-address",
                "c:3",
                DOWNSTREAM,
            ]),
            &no_env,
        ));
        assert_eq!(config.querier_max_concurrent, 7);
        assert_eq!(config.http_listen_port, 9000);
        assert!(config.frontend.multitenancy_enabled);
        assert_eq!(config.querier_frontend_addresses, vec!["a:1", "b:2", "c:3"]);
    }

    #[test]
    fn flags_override_env_which_overrides_the_file() {
        let directory = std::env::temp_dir().join(format!("sluice-config-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("config.yaml");
        std::fs::write(
            &path,
            "querier:\n  max_concurrent: 3\n  downstream_url: http://file:9090\nserver:\n  http_listen_port: 1111\n  grpc_listen_port: 2222\n",
        )
        .unwrap();
        let env = |name: &str| match name {
            "SLUICE_SERVER_HTTP_LISTEN_PORT" => Some("3333".to_owned()),
            "SLUICE_SERVER_GRPC_LISTEN_PORT" => Some("4444".to_owned()),
            _ => None,
        };
        let config = run(load(
            &args(&[
                "-config.file",
                path.to_str().unwrap(),
                "-server.grpc-listen-port=5555",
            ]),
            &env,
        ));
        assert_eq!(config.querier_max_concurrent, 3, "from the file");
        assert_eq!(config.querier_downstream_url, "http://file:9090");
        assert_eq!(config.http_listen_port, 3333, "env beats the file");
        assert_eq!(config.grpc_listen_port, 5555, "flags beat env");
        std::fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn unknown_keys_and_flags_are_errors() {
        let error = parse_yaml("querier:\n  max_concurrnet: 3\n").unwrap_err();
        assert!(error.contains("querier.max_concurrnet"), "{error}");
        assert!(parse_yaml("nonsense: 1\n").is_err());
        let error = load(&args(&["-querier.max-concurent=3", DOWNSTREAM]), &no_env).unwrap_err();
        assert!(error.contains("not defined"), "{error}");
        let error = load(
            &args(&["-querier.max-concurrent=lots", DOWNSTREAM]),
            &no_env,
        )
        .unwrap_err();
        assert!(error.contains("querier.max-concurrent"), "{error}");
        let error = load(&args(&["-target=querier", DOWNSTREAM]), &no_env).unwrap_err();
        assert!(error.contains("frontend-address"), "{error}");
    }

    #[test]
    fn the_example_config_parses_and_loads() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sluice.example.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        let values = parse_yaml(&text).unwrap();
        assert!(values.len() >= 10, "the example shows most settings");
        let config = run(load(&args(&["-config.file", path]), &no_env));
        assert_eq!(config.querier_downstream_url, "http://localhost:9090");
    }

    #[test]
    fn help_documents_every_flag_with_its_default() {
        let Loaded::Help(text) = load(&args(&["-help"]), &no_env).unwrap() else {
            panic!("expected help");
        };
        for setting in SETTINGS {
            assert!(
                text.contains(&format!("-{}", setting.flag)),
                "{}",
                setting.flag
            );
            assert!(text.contains(&format!("(default {:?})", setting.default)));
        }
        assert!(matches!(
            load(&args(&["--help"]), &no_env),
            Ok(Loaded::Help(_))
        ));
    }
}
