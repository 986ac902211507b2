use super::*;

fn scraper() -> Scraper {
    Scraper::new(SelfScrapeConfig {
        interval: Duration::from_secs(15),
        instance: "127.0.0.1:8080".to_owned(),
        job: "sluice".to_owned(),
    })
}

fn scraped(text: Option<&str>, started_ms: i64) -> Scraped {
    Scraped {
        outcome: text.map_or(Err("down".to_owned()), |text| Ok(parse(text).unwrap())),
        started_ms,
        duration: Duration::from_millis(250),
    }
}

/// `name{labels}` → (timestamp, value) for every stored series.
fn by_series(series: &[TimeSeries]) -> Vec<(String, i64, f64)> {
    let mut out: Vec<(String, i64, f64)> = series
        .iter()
        .map(|one| {
            let labels: Vec<String> = one
                .labels
                .iter()
                .map(|label| format!("{}={}", label.name, label.value))
                .collect();
            (
                labels.join(","),
                one.samples[0].timestamp,
                one.samples[0].value,
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn value_of(series: &[(String, i64, f64)], prefix: &str) -> f64 {
    series
        .iter()
        .find(|(labels, _, _)| labels.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {series:?}"))
        .2
}

#[test]
fn samples_get_target_labels_and_the_report_series() {
    let mut scraper = scraper();
    let stored = scraper.series(&scraped(
        Some("a_total{job=\"x\",path=\"/q\",empty=\"\"} 4\nb 2 1000\n"),
        5_000,
    ));
    let stored = by_series(&stored);
    assert_eq!(
        stored[0],
        (
            "__name__=a_total,exported_job=x,instance=127.0.0.1:8080,job=sluice,path=/q".to_owned(),
            5_000,
            4.0
        )
    );
    assert_eq!(
        stored[1],
        (
            "__name__=b,instance=127.0.0.1:8080,job=sluice".to_owned(),
            1_000,
            2.0
        )
    );
    assert_eq!(stored.len(), 7, "two samples and five report series");
    assert_eq!(value_of(&stored, "__name__=up,"), 1.0);
    assert_eq!(value_of(&stored, "__name__=scrape_duration_seconds,"), 0.25);
    assert_eq!(value_of(&stored, "__name__=scrape_samples_scraped,"), 2.0);
    assert_eq!(value_of(&stored, "__name__=scrape_series_added,"), 2.0);
}

#[test]
fn vanished_series_and_failed_scrapes_get_staleness_markers() {
    let mut scraper = scraper();
    scraper.series(&scraped(Some("a 1\nb 1\n"), 1_000));
    let second = by_series(&scraper.series(&scraped(Some("a 2\nc 1\n"), 2_000)));
    let b = second
        .iter()
        .find(|(labels, _, _)| labels.starts_with("__name__=b,"))
        .unwrap();
    assert_eq!((b.1, b.2.to_bits()), (2_000, STALE_NAN_BITS));
    assert_eq!(value_of(&second, "__name__=scrape_series_added,"), 1.0);
    let failed = by_series(&scraper.series(&scraped(None, 3_000)));
    assert_eq!(value_of(&failed, "__name__=up,"), 0.0);
    assert_eq!(value_of(&failed, "__name__=scrape_samples_scraped,"), 0.0);
    let stale: Vec<&str> = failed
        .iter()
        .filter(|(_, _, value)| value.to_bits() == STALE_NAN_BITS)
        .map(|(labels, _, _)| labels.split(',').next().unwrap())
        .collect();
    assert_eq!(stale, ["__name__=a", "__name__=c"]);
    // Back up: everything is new again, nothing is stale.
    let back = by_series(&scraper.series(&scraped(Some("a 3\n"), 4_000)));
    assert_eq!(value_of(&back, "__name__=scrape_series_added,"), 1.0);
    assert!(back.iter().all(|(_, _, value)| !value.is_nan()));
}
