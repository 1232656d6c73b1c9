//! RFC 6455 framing for the deflate transport: parsing client frame headers with every
//! check §5 asks for, unmasking, and writing server frames (RSV1 set on compressed
//! messages, RFC 7692 §6).

use switchboard_hub::TransportError;

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// A client frame's header, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    /// "Per-message compressed" on the first frame of a data message (RFC 7692 §6).
    pub rsv1: bool,
    pub opcode: u8,
    pub mask: [u8; 4],
    /// Payload length.
    pub len: usize,
    /// Bytes before the payload.
    pub header_len: usize,
}

impl Header {
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

fn protocol(what: &str) -> TransportError {
    TransportError::Protocol(what.into())
}

/// Parses the header at the start of `buf`: `Ok(None)` until all of it has arrived.
/// A data frame longer than `max_data` is refused (1009) before its payload is read.
pub fn parse_header(buf: &[u8], max_data: usize) -> Result<Option<Header>, TransportError> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    let rsv1 = b0 & 0x40 != 0;
    let opcode = b0 & 0x0f;
    if b0 & 0x30 != 0 {
        return Err(protocol("reserved bits RSV2/RSV3 set"));
    }
    if !matches!(
        opcode,
        OP_CONT | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(protocol("unknown opcode"));
    }
    let control = opcode & 0x8 != 0;
    if rsv1 && (control || opcode == OP_CONT) {
        // RFC 7692 §6.1: only the first frame of a data message may carry RSV1.
        return Err(protocol("RSV1 set on a control or continuation frame"));
    }
    if b1 & 0x80 == 0 {
        return Err(protocol("unmasked client frame"));
    }
    let len7 = b1 & 0x7f;
    if control && (!fin || len7 > 125) {
        return Err(protocol("fragmented or oversized control frame"));
    }
    let (len, at) = match len7 {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                let n = u64::from_be_bytes(a);
                if n >> 63 != 0 {
                    return Err(protocol("payload length with its top bit set"));
                }
                (n, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let len = usize::try_from(len).map_err(|_| TransportError::TooBig)?;
    if !control && len > max_data {
        return Err(TransportError::TooBig);
    }
    let Some(m) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        rsv1,
        opcode,
        mask: [m[0], m[1], m[2], m[3]],
        len,
        header_len: at + 4,
    }))
}

/// XORs `data` with the masking key (RFC 6455 §5.3), eight bytes at a time.
pub fn unmask(data: &mut [u8], key: [u8; 4]) {
    let k = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(a) ^ k).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the key lines up again.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// Appends one final, unmasked server frame to `out`.
pub fn write_frame(out: &mut Vec<u8>, opcode: u8, compressed: bool, payload: &[u8]) {
    out.push(0x80 | if compressed { 0x40 } else { 0 } | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// Appends a close frame; the reason is cut to fit a control frame (123 bytes).
pub fn write_close(out: &mut Vec<u8>, code: Option<u16>, reason: &str) {
    let mut payload = Vec::with_capacity(125);
    if let Some(code) = code {
        payload.extend_from_slice(&code.to_be_bytes());
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        payload.extend_from_slice(&reason.as_bytes()[..end]);
    }
    write_frame(out, OP_CLOSE, false, &payload);
}

/// Checks a received close frame's payload (RFC 6455 §5.5.1, §7.4): its code, if any.
pub fn parse_close(payload: &[u8]) -> Result<Option<u16>, TransportError> {
    match payload {
        [] => Ok(None),
        [_] => Err(protocol("close frame with a one-byte payload")),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(protocol("invalid close code"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(TransportError::InvalidUtf8);
            }
            Ok(Some(code))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
        let key = [1, 2, 3, 4];
        let mut out = vec![b0];
        let n = payload.len();
        if n < 126 {
            out.push(0x80 | n as u8);
        } else if n < 65536 {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
        out.extend_from_slice(&key);
        let mut p = payload.to_vec();
        unmask(&mut p, key);
        out.extend_from_slice(&p);
        out
    }

    #[test]
    fn headers_of_every_length_form() {
        for n in [0, 125, 126, 65535, 65536] {
            let f = masked(0xC1, &vec![b'a'; n]);
            let h = parse_header(&f, 1 << 20).unwrap().unwrap();
            assert_eq!((h.fin, h.rsv1, h.opcode, h.len), (true, true, OP_TEXT, n));
            assert_eq!(h.header_len + n, f.len());
            // Every strict prefix of the header is incomplete, not an error.
            for cut in 0..h.header_len {
                assert_eq!(parse_header(&f[..cut], 1 << 20), Ok(None), "{n} cut {cut}");
            }
        }
    }

    #[test]
    fn violations() {
        let bad = |b0: u8, payload: &[u8]| parse_header(&masked(b0, payload), 100);
        assert!(matches!(bad(0xA1, b"x"), Err(TransportError::Protocol(_)))); // RSV2
        assert!(matches!(bad(0x83, b"x"), Err(TransportError::Protocol(_)))); // opcode 3
        assert!(matches!(bad(0xC9, b"x"), Err(TransportError::Protocol(_)))); // RSV1 ping
        assert!(matches!(bad(0xC0, b"x"), Err(TransportError::Protocol(_)))); // RSV1 cont
        assert!(matches!(bad(0x09, b"x"), Err(TransportError::Protocol(_)))); // fragmented ping
        assert!(matches!(
            bad(0x89, &[0; 126]),
            Err(TransportError::Protocol(_))
        ));
        assert_eq!(bad(0x82, &[0; 101]), Err(TransportError::TooBig));
        assert!(parse_header(&[0x81, 0x01, b'x'], 100).is_err()); // unmasked
        let mut huge = vec![0x82, 0xFF];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(
            parse_header(&huge, 100),
            Err(TransportError::Protocol(_))
        ));
    }

    #[test]
    fn unmask_is_its_own_inverse_at_any_length() {
        for n in 0..40 {
            let orig: Vec<u8> = (0..n as u8).collect();
            let mut d = orig.clone();
            unmask(&mut d, [9, 8, 7, 6]);
            for (i, (a, b)) in d.iter().zip(&orig).enumerate() {
                assert_eq!(*a, b ^ [9, 8, 7, 6][i % 4]);
            }
            unmask(&mut d, [9, 8, 7, 6]);
            assert_eq!(d, orig);
        }
    }

    #[test]
    fn close_payloads() {
        assert_eq!(parse_close(&[]), Ok(None));
        assert!(parse_close(&[3]).is_err());
        assert_eq!(parse_close(&[0x03, 0xE8, b'o', b'k']), Ok(Some(1000)));
        for code in [999u16, 1004, 1005, 1006, 1015, 2000, 5000] {
            assert!(parse_close(&code.to_be_bytes()).is_err(), "{code}");
        }
        assert_eq!(
            parse_close(&[0x03, 0xE8, 0xff]),
            Err(TransportError::InvalidUtf8)
        );
    }
}
