//! Why a store could not be opened.
//!
//! Failures after opening are the hub's [`StoreError`](switchboard_hub::StoreError); these
//! are the start-up ones, each carrying the (password-redacted) URL so that the operator
//! sees which setting to fix.

use std::path::PathBuf;

/// A store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL names no backend this crate knows.
    #[error(
        "unsupported store URL `{url}`: expected `memory`, `sqlite://PATH`, \
         `sqlite:///ABSOLUTE/PATH`, `sqlite::memory:` or `postgres://USER@HOST/DB`"
    )]
    UnsupportedScheme { url: String },

    /// The URL names a backend but cannot be parsed for it.
    #[error("invalid {backend} store URL `{url}`: {reason}")]
    InvalidUrl {
        backend: &'static str,
        url: String,
        reason: String,
    },

    /// The directory for the SQLite file could not be created.
    #[error("cannot create the directory `{}` for the sqlite store `{url}`: {source}", path.display())]
    CreateDir {
        url: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The database did not answer, refused the login, or the file could not be opened.
    #[error("cannot open the {backend} store `{url}`: {source}")]
    Connect {
        backend: &'static str,
        url: String,
        #[source]
        source: sqlx::Error,
    },

    /// The schema migrations failed (or the database has newer ones than this build).
    #[error("cannot migrate the {backend} store `{url}`: {source}")]
    Migrate {
        backend: &'static str,
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

/// Replaces the password of `scheme://user:password@host/…` with `***`.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    // The authority ends at the first `/`, `?` or `#`; userinfo ends at its last `@`.
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:***{}",
        &url[..rest_start],
        &userinfo[..colon],
        &url[rest_start + at..]
    )
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_only_the_password() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact("sqlite://a:b@c.db"), "sqlite://a:***@c.db");
        assert_eq!(redact("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(redact("memory"), "memory");
        assert_eq!(redact("postgres://u:p%40ss@h/db"), "postgres://u:***@h/db");
    }
}
