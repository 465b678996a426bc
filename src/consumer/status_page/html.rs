//! What every page of the status page shares: the document around it (one self-contained
//! page: inline CSS and SVG, no font or script fetched from elsewhere), and how data
//! becomes text.
//!
//! Every text from the data goes through [`escape`]: a URL holding `<script>` or quotes is
//! shown as text, never run.

use chrono::{DateTime, Datelike, Timelike, Utc};

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:80rem;padding:.6rem 1rem;color:#1b1b1b;background:#fafafa}\
h1{font-size:1.3rem;margin:.2rem 0}h2{font-size:1.05rem;margin:.8rem 0 .3rem}a{color:#0d47a1}\
.summary{margin:.2rem 0}.search{margin:.4rem 0}.search input{font-size:1rem;padding:.2rem .4rem;width:min(24rem,70vw)}\
table{border-collapse:collapse;width:100%;background:#fff}th,td{text-align:left;padding:.15rem .4rem;border-bottom:1px solid #e3e3e3;font-size:.9rem;white-space:nowrap}\
th{font-size:.8rem;color:#444;font-weight:600}td.url{white-space:normal;word-break:break-all;max-width:30rem}\
.badge{display:inline-block;min-width:5.6rem;font-weight:700;font-size:.8rem;padding:0 .3rem;border-radius:.2rem;color:#fff}\
.up .badge{background:#2e7d32}.down .badge{background:#c62828}.degraded .badge{background:#e65100}.nodata .badge,.waiting .badge,.stale .badge{background:#757575}.maint .badge{background:#1565c0}\
.dot{font-size:1rem;line-height:1}.dot.up{color:#2e7d32}.dot.down{color:#c62828}.dot.stale{color:#9e9e9e}\
svg{display:block}.strip rect{height:16px}.g{fill:#2e7d32}.y{fill:#9ccc65}.o{fill:#f9a825}.r{fill:#c62828}.n{fill:#ddd}\
tr.group th{font-size:.95rem;color:#1b1b1b;padding-top:.7rem;background:#fafafa}.shown-url{color:#666;font-size:.8rem}\
.pager{margin:.5rem 0;line-height:1.8}.pager a,.pager b{padding:0 .25rem}.warn{color:#8a4b00;font-weight:600}\
.error{color:#8e0000;word-break:break-word;white-space:normal}.axis{stroke:#888;stroke-width:1}.grid{stroke:#e0e0e0;stroke-width:1}\
.tick{font-size:10px;fill:#555}.p50{stroke:#1565c0}.p95{stroke:#8e24aa;stroke-dasharray:3 2}polyline{fill:none;stroke-width:1.5;stroke-linecap:round}\
figure{margin:.4rem 0}figcaption{font-size:.8rem;color:#555}.charts{display:flex;flex-wrap:wrap;gap:1rem}\
@media (max-width:700px){thead{display:none}table,tbody{display:block}\
tr{display:flex;flex-wrap:wrap;align-items:center;gap:.1rem .6rem;padding:.3rem 0;border-bottom:1px solid #ccc}\
td{display:block;border:0;padding:0}td.url{flex:1 1 55%}td.bar{flex-basis:100%}td.bar svg{width:100%;height:10px}\
td[data-label]::before{content:attr(data-label) \" \";color:#666;font-size:.75rem}}";

/// The document's head and the page's heading; `refresh` reloads it every 30 s.
pub(crate) fn open(out: &mut String, title: &str, refresh: bool) {
    out.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">");
    if refresh {
        out.push_str("<meta http-equiv=\"refresh\" content=\"30\">");
    }
    out.push_str("<title>");
    out.push_str(&escape(title));
    out.push_str("</title><style>");
    out.push_str(STYLE);
    out.push_str("</style></head><body>");
}

/// The end of the document.
pub(crate) fn close(out: &mut String) {
    out.push_str("</body></html>\n");
}

/// `&`, `<`, `>`, `"` and `'` as entities: safe in text and in quoted attributes.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` for a URL's query: every byte but letters, digits and `-._~` percent-encoded.
pub(crate) fn query_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `2026-11-29 23:03:55 UTC`. By hand: chrono's `format` brings its whole strftime
/// machinery into the binary.
pub(crate) fn time(t: &DateTime<Utc>) -> String {
    format!(
        "{} {:02}:{:02}:{:02} UTC",
        date(t),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `2026-11-29`.
pub(crate) fn date(t: &DateTime<Utc>) -> String {
    format!("{:04}-{:02}-{:02}", t.year(), t.month(), t.day())
}

/// An uptime in percent, or "no checks".
pub(crate) fn percent(v: Option<f64>) -> String {
    v.map_or("no checks".into(), |v| format!("{v:.2} %"))
}

/// Milliseconds, or a dash.
pub(crate) fn ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.0} ms"))
}

/// The value of `name` in a query string (`a=1&q=shop`), percent-decoded; `+` is a space.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let raw = query?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))?;
    let plus = raw.replace('+', " ");
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(&plus).collect();
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped_and_queries_round_trip() {
        assert_eq!(
            escape("<a href='x'>\"&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&quot;&amp;&quot;&lt;/a&gt;"
        );
        let url = "https://a.example/?x=1&y=<b>";
        let q = format!("page=2&url={}", query_value(url));
        assert_eq!(query_param(Some(&q), "url").as_deref(), Some(url));
        assert_eq!(
            query_param(Some("q=shop+eu"), "q").as_deref(),
            Some("shop eu")
        );
        assert_eq!(query_param(Some("qq=1"), "q"), None);
        assert_eq!(query_param(None, "q"), None);
    }
}
