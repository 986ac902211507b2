//! Validation of incoming series as Mimir's distributor does it, with its
//! limits' defaults and its messages (error ids included, so operators can
//! look them up), and the reasons `sluice_discarded_samples_total` counts.

use std::fmt::Write as _;

use crate::proto::Label;

/// Why samples were discarded: the `reason` label of
/// `sluice_discarded_samples_total`, named as Mimir names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    MissingMetricName,
    InvalidMetricName,
    MaxLabelNamesPerSeries,
    LabelInvalid,
    LabelNameTooLong,
    LabelValueTooLong,
    DuplicateLabelNames,
    LabelsNotSorted,
    TooFarInFuture,
    NativeHistogram,
    SampleOutOfOrder,
    SampleOutOfBounds,
    SampleTooOld,
    SampleDuplicateTimestamp,
    RateLimited,
    PerUserSeriesLimit,
}

impl Reason {
    pub const ALL: [Reason; 16] = [
        Reason::MissingMetricName,
        Reason::InvalidMetricName,
        Reason::MaxLabelNamesPerSeries,
        Reason::LabelInvalid,
        Reason::LabelNameTooLong,
        Reason::LabelValueTooLong,
        Reason::DuplicateLabelNames,
        Reason::LabelsNotSorted,
        Reason::TooFarInFuture,
        Reason::NativeHistogram,
        Reason::SampleOutOfOrder,
        Reason::SampleOutOfBounds,
        Reason::SampleTooOld,
        Reason::SampleDuplicateTimestamp,
        Reason::RateLimited,
        Reason::PerUserSeriesLimit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MissingMetricName => "missing_metric_name",
            Reason::InvalidMetricName => "metric_name_invalid",
            Reason::MaxLabelNamesPerSeries => "max_label_names_per_series",
            Reason::LabelInvalid => "label_invalid",
            Reason::LabelNameTooLong => "label_name_too_long",
            Reason::LabelValueTooLong => "label_value_too_long",
            Reason::DuplicateLabelNames => "duplicate_label_names",
            Reason::LabelsNotSorted => "labels_not_sorted",
            Reason::TooFarInFuture => "too_far_in_future",
            Reason::NativeHistogram => "native_histogram",
            Reason::SampleOutOfOrder => "sample_out_of_order",
            Reason::SampleOutOfBounds => "sample_out_of_bounds",
            Reason::SampleTooOld => "sample_too_old",
            Reason::SampleDuplicateTimestamp => "sample_duplicate_timestamp",
            Reason::RateLimited => "rate_limited",
            Reason::PerUserSeriesLimit => "per_user_series_limit",
        }
    }
}

/// A refused series or sample: why, and the message the sender gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
}

/// Mimir's per-tenant limits that apply to one series, with its defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `-validation.max-label-names-per-series`.
    pub max_label_names_per_series: usize,
    /// `-validation.max-length-label-name`.
    pub max_label_name_length: usize,
    /// `-validation.max-length-label-value`.
    pub max_label_value_length: usize,
    /// `-validation.create-grace-period`: how far ahead of the receiver's
    /// clock a sample may be.
    pub creation_grace_period_ms: i64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_label_names_per_series: 30,
            max_label_name_length: 1024,
            max_label_value_length: 2048,
            creation_grace_period_ms: 10 * 60 * 1000,
        }
    }
}

pub const METRIC_NAME: &str = "__name__";

/// At most 200 characters of `text`, as Go's `%.200s` prints it.
fn at_most_200(text: &str) -> &str {
    match text.char_indices().nth(200) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// `{__name__="up", job="api"}`, as Prometheus prints a label set.
pub fn series_text(labels: &[Label]) -> String {
    let mut text = String::from("{");
    for (index, label) in labels.iter().enumerate() {
        if index > 0 {
            text.push_str(", ");
        }
        let _ = write!(text, "{}={:?}", label.name, label.value);
    }
    text.push('}');
    text
}

fn is_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_' | b':'))
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b':')
}

fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_'))
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

fn refuse(reason: Reason, message: String) -> Result<(), Refusal> {
    Err(Refusal { reason, message })
}

fn per_tenant_hint(message: &str, id: &str, flag: &str) -> String {
    format!(
        "{message} (err-mimir-{id}). To adjust the related per-tenant limit, configure -{flag}, or contact your service administrator."
    )
}

/// Checks a series' labels in Mimir's order: metric name, label count,
/// then each label's name, lengths, duplicates and order.
pub fn validate_labels(labels: &[Label], limits: &Limits) -> Result<(), Refusal> {
    let name = labels
        .iter()
        .find(|label| label.name == METRIC_NAME)
        .map(|label| label.value.as_str())
        .unwrap_or_default();
    if name.is_empty() {
        let message = "received series has no metric name (err-mimir-missing-metric-name)";
        return refuse(Reason::MissingMetricName, message.to_owned());
    }
    if !is_metric_name(name) {
        let message = format!(
            "received a series with invalid metric name: '{}' (err-mimir-metric-name-invalid)",
            at_most_200(name)
        );
        return refuse(Reason::InvalidMetricName, message);
    }
    if labels.len() > limits.max_label_names_per_series {
        let text = series_text(labels);
        let ellipsis = if text.chars().count() > 200 {
            "…"
        } else {
            ""
        };
        let message = format!(
            "received a series whose number of labels exceeds the limit (actual: {}, limit: {}) series: '{}{ellipsis}'",
            labels.len(),
            limits.max_label_names_per_series,
            at_most_200(&text)
        );
        let message = per_tenant_hint(
            &message,
            "max-label-names-per-series",
            "validation.max-label-names-per-series",
        );
        return refuse(Reason::MaxLabelNamesPerSeries, message);
    }
    validate_each_label(labels, limits)
}

fn validate_each_label(labels: &[Label], limits: &Limits) -> Result<(), Refusal> {
    let mut previous: Option<&str> = None;
    for label in labels {
        let series = || series_text(labels);
        if !is_label_name(&label.name) {
            let message = format!(
                "received a series with an invalid label: '{}' series: '{}' (err-mimir-label-invalid)",
                at_most_200(&label.name),
                at_most_200(&series())
            );
            return refuse(Reason::LabelInvalid, message);
        }
        if label.name.len() > limits.max_label_name_length {
            let message = format!(
                "received a series whose label name length exceeds the limit, label: '{}' series: '{}'",
                at_most_200(&label.name),
                at_most_200(&series())
            );
            let message = per_tenant_hint(
                &message,
                "label-name-too-long",
                "validation.max-length-label-name",
            );
            return refuse(Reason::LabelNameTooLong, message);
        }
        if label.value.len() > limits.max_label_value_length {
            let message = format!(
                "received a series whose label value length exceeds the limit, label: '{}', value: '{}' (truncated) series: '{}'",
                label.name,
                at_most_200(&label.value),
                at_most_200(&series())
            );
            let message = per_tenant_hint(
                &message,
                "label-value-too-long",
                "validation.max-length-label-value",
            );
            return refuse(Reason::LabelValueTooLong, message);
        }
        match previous {
            Some(last) if last == label.name => {
                let message = format!(
                    "received a series with duplicate label name, label: '{}' series: '{}' (err-mimir-duplicate-label-names)",
                    at_most_200(&label.name),
                    at_most_200(&series())
                );
                return refuse(Reason::DuplicateLabelNames, message);
            }
            Some(last) if last > label.name.as_str() => {
                let message = format!(
                    "received a series where the label names are not sorted, label: '{}' series: '{}' (err-mimir-labels-not-sorted)",
                    at_most_200(&label.name),
                    at_most_200(&series())
                );
                return refuse(Reason::LabelsNotSorted, message);
            }
            _ => {}
        }
        previous = Some(&label.name);
    }
    Ok(())
}

/// Refuses a sample more than the creation grace period ahead of `now_ms`.
pub fn validate_timestamp(
    labels: &[Label],
    timestamp_ms: i64,
    now_ms: i64,
    limits: &Limits,
) -> Result<(), Refusal> {
    if timestamp_ms <= now_ms.saturating_add(limits.creation_grace_period_ms) {
        return Ok(());
    }
    let name = labels
        .iter()
        .find(|label| label.name == METRIC_NAME)
        .map(|label| label.value.as_str())
        .unwrap_or_default();
    let message = format!(
        "received a sample whose timestamp is too far in the future, timestamp: {timestamp_ms} series: '{}'",
        at_most_200(name)
    );
    let message = per_tenant_hint(
        &message,
        "too-far-in-future",
        "validation.create-grace-period",
    );
    refuse(Reason::TooFarInFuture, message)
}

/// Refuses a native-histogram sample: sluice stores float samples only.
pub fn refuse_histogram(labels: &[Label], timestamp_ms: i64) -> Refusal {
    Refusal {
        reason: Reason::NativeHistogram,
        message: format!(
            "native histograms are not supported: sample at timestamp {timestamp_ms} of series '{}' refused",
            at_most_200(&series_text(labels))
        ),
    }
}
