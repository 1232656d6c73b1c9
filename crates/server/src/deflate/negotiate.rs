//! Choosing permessage-deflate parameters from a client's offers (RFC 7692 §5, §7.1).
//!
//! A client may send several offers, in order of preference, across one or more
//! `Sec-WebSocket-Extensions` headers. The first permessage-deflate offer we can honour
//! wins. An offer with an unknown, repeated or malformed parameter, or one asking for
//! something we cannot do (an 8-bit server window, which zlib cannot produce), is
//! declined — never the handshake: the connection then simply runs uncompressed.

use axum::http::{HeaderMap, HeaderValue, header};

use super::DeflateConfig;

/// The parameters both sides agreed on, and the response header that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    /// The server compresses every message on its own.
    pub server_no_context_takeover: bool,
    /// The client compresses every message on its own.
    pub client_no_context_takeover: bool,
    /// The window the server compresses with (9 to 15).
    pub server_max_window_bits: u8,
    /// The largest window the client may compress with (the inflater's size).
    pub client_max_window_bits: u8,
    /// The `Sec-WebSocket-Extensions` response value.
    pub response: HeaderValue,
}

/// The parameters of one offer, checked.
#[derive(Debug, Default)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: offered without a value (the client accepts a limit).
    client_max_window_bits: Option<Option<u8>>,
}

/// The agreement for the first acceptable permessage-deflate offer in `headers`.
pub fn negotiate(headers: &HeaderMap, config: &DeflateConfig) -> Option<Agreement> {
    headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|offer| {
            let mut parts = offer.split(';');
            let name = parts.next()?.trim();
            if !name.eq_ignore_ascii_case("permessage-deflate") {
                return None;
            }
            let offer = parse_params(parts)?;
            accept(&offer, config)
        })
}

/// `server_max_window_bits` and `client_max_window_bits` values: 8 to 15, plain digits,
/// optionally quoted (RFC 7692 §7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    let v = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    if v.is_empty() || v.len() > 2 || !v.bytes().all(|b| b.is_ascii_digit()) || v.starts_with('0') {
        return None;
    }
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

fn parse_params<'a>(params: impl Iterator<Item = &'a str>) -> Option<Offer> {
    let mut o = Offer::default();
    let mut seen = [false; 4];
    for p in params {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (p.trim(), None),
        };
        let i = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => {
                o.server_no_context_takeover = true;
                0
            }
            "client_no_context_takeover" if value.is_none() => {
                o.client_no_context_takeover = true;
                1
            }
            "server_max_window_bits" => {
                o.server_max_window_bits = Some(window_bits(value?)?);
                2
            }
            "client_max_window_bits" => {
                o.client_max_window_bits = Some(match value {
                    None => None,
                    Some(v) => Some(window_bits(v)?),
                });
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[i], true) {
            return None;
        }
    }
    Some(o)
}

fn accept(offer: &Offer, config: &DeflateConfig) -> Option<Agreement> {
    let server_bits = match offer.server_max_window_bits {
        // zlib cannot compress with a 256-byte window (it silently uses 512), so a client
        // that can only hold 256 bytes is declined rather than sent what it cannot read.
        Some(8) => return None,
        Some(b) => b.min(config.server_max_window_bits),
        None => config.server_max_window_bits,
    };
    let server_no_ctx = offer.server_no_context_takeover || config.server_no_context_takeover;
    let client_no_ctx = offer.client_no_context_takeover || config.client_no_context_takeover;
    let mut response = String::from("permessage-deflate");
    if server_no_ctx {
        response.push_str("; server_no_context_takeover");
    }
    if client_no_ctx {
        response.push_str("; client_no_context_takeover");
    }
    if offer.server_max_window_bits.is_some() || server_bits < 15 {
        response.push_str(&format!("; server_max_window_bits={server_bits}"));
    }
    // The client's window can only be limited when it said it accepts a limit.
    let client_bits = match offer.client_max_window_bits {
        Some(offered) => {
            let offered = offered.unwrap_or(15);
            let bits = offered.min(config.client_max_window_bits);
            if bits < offered || offered < 15 {
                response.push_str(&format!("; client_max_window_bits={bits}"));
            }
            bits
        }
        None => 15,
    };
    let response = HeaderValue::from_str(&response).ok()?;
    Some(Agreement {
        server_no_context_takeover: server_no_ctx,
        client_no_context_takeover: client_no_ctx,
        server_max_window_bits: server_bits,
        client_max_window_bits: client_bits,
        response,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn offers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                header::SEC_WEBSOCKET_EXTENSIONS,
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn agree(values: &[&str], config: DeflateConfig) -> Option<Agreement> {
        negotiate(&offers(values), &config)
    }

    fn response(values: &[&str]) -> Option<String> {
        agree(values, DeflateConfig::default()).map(|a| a.response.to_str().unwrap().to_owned())
    }

    #[test]
    fn no_offer_no_agreement() {
        assert_eq!(response(&[]), None);
        assert_eq!(response(&["x-webkit-deflate-frame"]), None);
    }

    #[test]
    fn the_defaults_turn_off_context_takeover_both_ways() {
        let a = agree(
            &["permessage-deflate; client_max_window_bits"],
            DeflateConfig::default(),
        )
        .unwrap();
        assert_eq!(
            a.response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert!(a.server_no_context_takeover && a.client_no_context_takeover);
        assert_eq!(
            (a.server_max_window_bits, a.client_max_window_bits),
            (15, 15)
        );
    }

    #[test]
    fn server_context_takeover_when_configured_and_not_refused_by_the_client() {
        let config = DeflateConfig {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            ..DeflateConfig::default()
        };
        let a = agree(&["permessage-deflate"], config).unwrap();
        assert_eq!(a.response, "permessage-deflate");
        assert!(!a.server_no_context_takeover && !a.client_no_context_takeover);
        let a = agree(&["permessage-deflate; server_no_context_takeover"], config).unwrap();
        assert!(a.server_no_context_takeover);
        assert_eq!(a.response, "permessage-deflate; server_no_context_takeover");
    }

    #[test]
    fn window_bits_are_honoured_or_limited() {
        let a = agree(
            &["permessage-deflate; server_max_window_bits=10; client_max_window_bits=12"],
            DeflateConfig::default(),
        )
        .unwrap();
        assert_eq!(
            (a.server_max_window_bits, a.client_max_window_bits),
            (10, 12)
        );
        let r = a.response.to_str().unwrap();
        assert!(r.contains("server_max_window_bits=10"));
        assert!(r.contains("client_max_window_bits=12"));
        let config = DeflateConfig {
            server_max_window_bits: 11,
            client_max_window_bits: 10,
            ..DeflateConfig::default()
        };
        let a = agree(&["permessage-deflate; client_max_window_bits"], config).unwrap();
        assert_eq!(
            (a.server_max_window_bits, a.client_max_window_bits),
            (11, 10)
        );
        assert!(
            a.response
                .to_str()
                .unwrap()
                .ends_with("server_max_window_bits=11; client_max_window_bits=10")
        );
        // Without `client_max_window_bits` in the offer the client's window cannot be limited.
        let a = agree(&["permessage-deflate"], config).unwrap();
        assert_eq!(a.client_max_window_bits, 15);
        assert!(
            !a.response
                .to_str()
                .unwrap()
                .contains("client_max_window_bits")
        );
        // Quoted values are values too.
        let a = agree(
            &["permessage-deflate; server_max_window_bits=\"12\""],
            DeflateConfig::default(),
        )
        .unwrap();
        assert_eq!(a.server_max_window_bits, 12);
    }

    #[test]
    fn invalid_offers_are_declined_and_the_next_one_is_tried() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; unknown_param",
        ] {
            assert_eq!(response(&[bad]), None, "{bad}");
        }
        let a = agree(
            &[
                "permessage-deflate; bogus, permessage-deflate; server_max_window_bits=9",
                "permessage-deflate",
            ],
            DeflateConfig::default(),
        )
        .unwrap();
        assert_eq!(a.server_max_window_bits, 9);
        let a = agree(
            &[
                "permessage-deflate; bogus",
                "PerMessage-Deflate ; client_max_window_bits=15",
            ],
            DeflateConfig::default(),
        )
        .unwrap();
        assert_eq!(a.client_max_window_bits, 15);
    }
}
