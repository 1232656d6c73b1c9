//! Origin allow-lists: exact origins, or `scheme://*.domain` for any subdomain at any
//! depth (never the bare domain).

/// True when `origin` is allowed by `patterns` (an empty list allows any origin).
pub fn allowed(origin: &str, patterns: &[String]) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| matches(origin, p))
}

fn matches(origin: &str, pattern: &str) -> bool {
    let origin = origin.to_ascii_lowercase();
    let pattern = pattern.to_ascii_lowercase();
    match pattern.split_once("://*.") {
        Some((scheme, domain)) => origin
            .strip_prefix(scheme)
            .and_then(|rest| rest.strip_prefix("://"))
            .is_some_and(|host| {
                host.len() > domain.len() + 1
                    && host.ends_with(domain)
                    && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
            }),
        None => origin == pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn wildcards_match_subdomains_only() {
        let p = vec![
            "https://*.example.com".to_owned(),
            "http://localhost:3000".to_owned(),
        ];
        assert!(allowed("https://a.example.com", &p));
        assert!(allowed("https://a.b.example.com", &p));
        assert!(!allowed("https://example.com", &p));
        assert!(!allowed("https://evilexample.com", &p));
        assert!(!allowed("http://a.example.com", &p));
        assert!(allowed("http://localhost:3000", &p));
        assert!(!allowed("http://localhost:3001", &p));
        assert!(allowed("https://anything", &[]));
    }
}
