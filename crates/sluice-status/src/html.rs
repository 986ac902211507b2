//! The page's HTML. Everything that comes from outside (tenant ids above
//! all: any header value a client sent) is escaped.

use std::fmt::Write;

use crate::{PerTenant, Snapshot};

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:60em}\
h1{margin-bottom:0}.meta{color:#666;margin-top:.2em}\
section{margin-top:1.5em}h2{font-size:1.1em;border-bottom:1px solid #ccc;padding-bottom:.2em}\
table{border-collapse:collapse;min-width:24em}\
th,td{text-align:left;padding:.25em 1em .25em 0;border-bottom:1px solid #eee}\
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
.role{display:inline-block;background:#e8f0fe;border-radius:.3em;padding:.2em .6em;margin-right:.4em}\
.none{color:#888}";

/// The whole page for `snapshot`.
pub(crate) fn render(snapshot: &Snapshot) -> String {
    let mut page = String::with_capacity(4096);
    page.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    page.push_str("<meta http-equiv=\"refresh\" content=\"10\">");
    let _ = write!(
        page,
        "<title>sluice status</title><style>{STYLE}</style></head><body>\n<h1>sluice</h1>\n\
         <p class=\"meta\">version {} &middot; up {} &middot; refreshed every 10 s</p>\n",
        env!("CARGO_PKG_VERSION"),
        uptime(snapshot.uptime_seconds)
    );
    page.push_str("<section id=\"roles\"><h2>Roles</h2><p>");
    for role in &snapshot.roles {
        let _ = write!(page, "<span class=\"role\">{}</span>", escape(role));
    }
    page.push_str("</p></section>\n");
    named_counts(&mut page, "connected", "Connected", &snapshot.connected);
    named_counts(&mut page, "inflight", "In flight", &snapshot.inflight);
    let queue = Some(&snapshot.queue);
    tenant_counts(&mut page, "queue", "Queue per tenant", "queued", queue);
    cache(&mut page, snapshot);
    let head = snapshot.head_series.as_ref();
    tenant_counts(&mut page, "head", "Head series per tenant", "series", head);
    let blocks = snapshot.blocks.as_ref();
    tenant_counts(&mut page, "blocks", "Blocks per tenant", "blocks", blocks);
    page.push_str("</body></html>\n");
    page
}

/// A section of (what, count) rows, or nothing if this process has none.
fn named_counts(page: &mut String, id: &str, title: &str, rows: &[(&str, u64)]) {
    if rows.is_empty() {
        return;
    }
    let _ = write!(page, "<section id=\"{id}\"><h2>{title}</h2><table>");
    for (what, count) in rows {
        let what = escape(what);
        let _ = write!(
            page,
            "<tr><td>{what}</td><td class=\"n\" data-what=\"{what}\">{count}</td></tr>"
        );
    }
    page.push_str("</table></section>\n");
}

/// A table of counts per tenant; `None` means the role that keeps them
/// does not run here, so the section is left out.
fn tenant_counts(page: &mut String, id: &str, title: &str, unit: &str, rows: Option<&PerTenant>) {
    let Some(rows) = rows else {
        return;
    };
    let _ = write!(page, "<section id=\"{id}\"><h2>{title}</h2>");
    if rows.is_empty() {
        page.push_str("<p class=\"none\">none</p></section>\n");
        return;
    }
    let total: u64 = rows.iter().map(|(_, count)| count).sum();
    let _ = write!(
        page,
        "<table><tr><th>tenant</th><th class=\"n\">{unit}</th></tr>"
    );
    for (tenant, count) in rows {
        let tenant = escape(tenant);
        let _ = write!(
            page,
            "<tr><td class=\"tenant\">{tenant}</td><td class=\"n\" data-tenant=\"{tenant}\">{count}</td></tr>"
        );
    }
    let _ = writeln!(
        page,
        "<tr><th>total</th><td class=\"n\" data-total=\"{id}\">{total}</td></tr></table></section>"
    );
}

fn cache(page: &mut String, snapshot: &Snapshot) {
    page.push_str("<section id=\"cache\"><h2>Results cache</h2><p>hit ratio ");
    match snapshot.cache_hit_ratio() {
        Some(ratio) => {
            let _ = write!(
                page,
                "<strong id=\"cache-hit-ratio\">{:.1}%</strong> ({} hits, {} misses of day pieces looked up)",
                ratio * 100.0,
                snapshot.cache_hits,
                snapshot.cache_misses
            );
        }
        None => page.push_str("<strong id=\"cache-hit-ratio\">n/a</strong> (no lookups yet)"),
    }
    page.push_str("</p></section>\n");
}

fn uptime(seconds: u64) -> String {
    let (days, hours) = (seconds / 86_400, seconds / 3600 % 24);
    let (minutes, seconds) = (seconds / 60 % 60, seconds % 60);
    match days {
        0 => format!("{hours}h {minutes}m {seconds}s"),
        days => format!("{days}d {hours}h {minutes}m"),
    }
}

/// `text` safe inside an element or a quoted attribute.
pub(crate) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_cannot_inject_markup() {
        let hostile = "<script>alert('x')</script>\"&";
        let snapshot = Snapshot {
            roles: vec!["query-frontend"],
            queue: vec![(hostile.to_owned(), 4)],
            blocks: Some(vec![(hostile.to_owned(), 1)]),
            ..Snapshot::default()
        };
        let page = render(&snapshot);
        assert!(!page.contains("<script"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;&amp;"));
        assert!(page.contains("data-tenant=\"&lt;script&gt;"));
    }

    #[test]
    fn sections_follow_the_roles_that_run() {
        let snapshot = Snapshot {
            roles: vec!["querier", "store"],
            uptime_seconds: 3725,
            inflight: vec![("sub-queries on this querier", 2)],
            cache_hits: 1,
            cache_misses: 2,
            head_series: Some(vec![("anonymous".to_owned(), 7), ("b".to_owned(), 3)]),
            ..Snapshot::default()
        };
        let page = render(&snapshot);
        assert!(
            page.contains("<span class=\"role\">querier</span><span class=\"role\">store</span>")
        );
        assert!(page.contains("up 1h 2m 5s"));
        assert!(page.contains("data-what=\"sub-queries on this querier\">2<"));
        assert!(page.contains("<strong id=\"cache-hit-ratio\">33.3%</strong>"));
        assert!(page.contains("data-total=\"head\">10<"));
        assert!(
            !page.contains("id=\"blocks\""),
            "no metastore, no blocks section"
        );
        assert!(!page.contains("id=\"connected\""));
        assert!(
            page.contains("<section id=\"queue\"><h2>Queue per tenant</h2><p class=\"none\">none")
        );
    }

    #[test]
    fn uptime_reads_as_a_person_would_say_it() {
        assert_eq!(uptime(59), "0h 0m 59s");
        assert_eq!(uptime(90_061), "1d 1h 1m");
    }
}
