//! Secrets that cannot reach a log by accident: [`Secret`] prints as `<hidden>` through
//! both `{}` and `{:?}`, and `redact_url` hides the password of a URL that is shown.
//!
//! This module owns how a secret looks when printed. It must never hand a secret's text
//! to anything but the code that uses it (a connection's credentials).

use std::borrow::Cow;

/// A password, or a URL that holds one. Only `Secret::expose` (crate-internal) gives the text.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret.
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The text, for the one place that needs it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}

/// Lets a command-line flag hold a secret (argh parses options through `FromStr`).
impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret::new(s))
    }
}

/// `url` with the password of its user information replaced by `***`
/// (`https://ann:pw@host/` → `https://ann:***@host/`), for logs and messages.
pub(crate) fn redact_url(url: &str) -> Cow<'_, str> {
    let Some(scheme_end) = url.find("://") else {
        return Cow::Borrowed(url);
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    // The last '@' of the authority ends the user information (a raw '@' in a password
    // is wrong, but must not leak the rest of it either).
    let Some(at) = rest[..authority_end].rfind('@') else {
        return Cow::Borrowed(url);
    };
    let user = rest[..at].split(':').next().unwrap_or("");
    Cow::Owned(format!(
        "{}://{user}:***@{}",
        &url[..scheme_end],
        &rest[at + 1..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(
            format!("{s} {s:?} {:?}", Some(&s)),
            "<hidden> <hidden> Some(<hidden>)"
        );
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn urls_lose_their_password_only() {
        assert_eq!(
            redact_url("https://ann:pw@a.example/x?y"),
            "https://ann:***@a.example/x?y"
        );
        assert_eq!(
            redact_url("https://ann@a.example/"),
            "https://ann:***@a.example/"
        );
        assert_eq!(
            redact_url("https://a.example/p@th"),
            "https://a.example/p@th"
        );
        assert_eq!(
            redact_url("postgres://u:p@ss@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
