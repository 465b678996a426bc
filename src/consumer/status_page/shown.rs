//! What the public sees of a target: its name where it has one, otherwise its URL with
//! the user information removed and every query value and the fragment replaced by `…`
//! (`CK_STATUS_URLS=full`: the URL whole, a password still masked); a stable id to link
//! and key on instead of the URL; and error texts with the URLs in them shown the same way.
//!
//! Everything the page, the site page, the badges and `/api/status` print of a URL goes
//! through here. It never reads anything.

/// How much of a URL is shown (`CK_STATUS_URLS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UrlShowing {
    /// User information removed, query values and fragment replaced by `…` (the default).
    #[default]
    Redacted,
    /// Whole, but a password masked (`user:***@`).
    Full,
}

impl UrlShowing {
    /// `CK_STATUS_URLS`: `redacted` (default) or `full`.
    pub(crate) fn from_settings(
        s: &crate::settings::Settings,
    ) -> Result<UrlShowing, crate::settings::ConfigError> {
        match s.get("CK_STATUS_URLS") {
            None | Some("redacted") => Ok(UrlShowing::Redacted),
            Some("full") => Ok(UrlShowing::Full),
            Some(other) => crate::settings::err(format!(
                "CK_STATUS_URLS={other:?}: give redacted (the default: query values and user information hidden) or full"
            )),
        }
    }
}

/// A stable id of the target `url` (16 hex digits of its SHA-256): what the site page,
/// the badges and API users can name a target by without its URL.
pub(crate) fn target_id(url: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, url.as_bytes());
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `url` as the public sees it.
pub(crate) fn shown_url(url: &str, showing: UrlShowing) -> String {
    if showing == UrlShowing::Full {
        return crate::secret::redact_url(url).into_owned();
    }
    let Ok(parsed) = url::Url::parse(url) else {
        // Not a URL we can take apart: nothing of it is shown.
        return "…".into();
    };
    let mut bare = parsed.clone();
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    bare.set_query(None);
    bare.set_fragment(None);
    let mut out = bare.to_string();
    if let Some(query) = parsed.query() {
        // A key stays (it says what the value is); a value, or an item without a key
        // (which may be a token itself), does not.
        let items: Vec<String> = query
            .split('&')
            .map(|item| match item.split_once('=') {
                Some((key, _)) => format!("{key}=…"),
                None => "…".into(),
            })
            .collect();
        out.push('?');
        out.push_str(&items.join("&"));
    }
    if parsed.fragment().is_some() {
        out.push_str("#…");
    }
    out
}

/// `text` (an error message) with every http(s) URL in it shown as [`shown_url`] does.
/// (A hand-made scan, not a regex: the consumer carries no regex engine.)
pub(crate) fn scrub(text: &str, showing: UrlShowing) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = next_url(rest) {
        out.push_str(&rest[..at]);
        let url_len = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>'))
            .unwrap_or(rest.len() - at);
        out.push_str(&shown_url(&rest[at..at + url_len], showing));
        rest = &rest[at + url_len..];
    }
    out.push_str(rest);
    out
}

/// Where the next `http://` or `https://` starts in `text`.
fn next_url(text: &str) -> Option<usize> {
    [text.find("http://"), text.find("https://")]
        .into_iter()
        .flatten()
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_user_information_and_fragments_are_hidden() {
        let r = UrlShowing::Redacted;
        let cases = [
            (
                "https://api.internal.example/health?token=3f9a&x=1",
                "https://api.internal.example/health?token=…&x=…",
            ),
            ("https://user:pw@a.example/p", "https://a.example/p"),
            ("https://a.example/p#secret", "https://a.example/p#…"),
            ("https://a.example/p?k=v#frag", "https://a.example/p?k=…#…"),
            ("https://a.example/p?3f9a", "https://a.example/p?…"),
            ("https://a.example/", "https://a.example/"),
            ("not a url", "…"),
        ];
        for (url, want) in cases {
            assert_eq!(shown_url(url, r), want, "{url}");
        }
        assert_eq!(
            shown_url("https://u:pw@a.example/h?token=1", UrlShowing::Full),
            "https://u:***@a.example/h?token=1"
        );
    }

    #[test]
    fn urls_in_errors_are_hidden_too() {
        assert_eq!(
            scrub(
                "redirect to https://sso.example/login?ticket=abc failed",
                UrlShowing::Redacted
            ),
            "redirect to https://sso.example/login?ticket=… failed"
        );
        assert_eq!(
            scrub(
                "from http://a/?k=1 to \"https://b/#x\"",
                UrlShowing::Redacted
            ),
            "from http://a/?k=… to \"https://b/#…\""
        );
        assert_eq!(scrub("no URL here", UrlShowing::Redacted), "no URL here");
    }

    #[test]
    fn ids_are_stable_and_differ() {
        assert_eq!(
            target_id("https://a.example/"),
            target_id("https://a.example/")
        );
        assert_ne!(
            target_id("https://a.example/"),
            target_id("https://b.example/")
        );
        assert_eq!(target_id("https://a.example/").len(), 16);
    }
}
