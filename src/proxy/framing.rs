//! Raw-byte detection of a request head that carries both `Content-Length`
//! and `Transfer-Encoding`. hyper's HTTP/1 parser resolves that conflict
//! itself (chunked wins, Content-Length is dropped) before the request
//! reaches the proxy, so the headers alone can no longer show it; this
//! scanner reads the bytes as they arrive so that such a request can be
//! refused outright (request smuggling, RFC 9112 §6.3) instead of forwarded.

/// Longest header name prefix we compare, `transfer-encoding:`.
const NAME_PREFIX: usize = 18;

/// Watches a connection's incoming bytes, line by line, across reads.
#[derive(Debug, Default)]
pub struct FramingScanner {
    /// Lowercased start of the current line.
    line: [u8; NAME_PREFIX],
    line_len: usize,
    seen_content_length: bool,
    seen_transfer_encoding: bool,
}

impl FramingScanner {
    /// Feeds newly read bytes; true once some head had both headers.
    /// A blank line ends a head and starts the count again.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        let mut conflict = false;
        for &b in bytes {
            match b {
                b'\n' => {
                    if self.line_len == 0 {
                        self.seen_content_length = false;
                        self.seen_transfer_encoding = false;
                    }
                    self.line_len = 0;
                }
                b'\r' => {}
                _ => {
                    if self.line_len < NAME_PREFIX {
                        self.line[self.line_len] = b.to_ascii_lowercase();
                    }
                    self.line_len += 1;
                    match self.line_len {
                        15 if &self.line[..15] == b"content-length:" => {
                            self.seen_content_length = true
                        }
                        18 if &self.line[..18] == b"transfer-encoding:" => {
                            self.seen_transfer_encoding = true
                        }
                        _ => {}
                    }
                    conflict |= self.seen_content_length && self.seen_transfer_encoding;
                }
            }
        }
        conflict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_both_headers_in_one_head_across_reads() {
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        for split in 0..head.len() {
            let mut s = FramingScanner::default();
            let a = s.feed(&head[..split]);
            let b = s.feed(&head[split..]);
            assert!(a || b, "split at {split}");
        }
    }

    #[test]
    fn ignores_one_header_alone_and_headers_of_different_heads() {
        let mut s = FramingScanner::default();
        assert!(!s.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"));
        assert!(
            !s.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTRANSFER-ENCODING: chunked\r\n\r\n0\r\n\r\n")
        );
        assert!(
            !s.feed(b"GET / HTTP/1.1\r\nX-Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
        );
    }
}
