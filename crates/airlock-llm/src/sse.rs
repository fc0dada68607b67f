//! Server-sent events: an incremental parser for the streams model providers send, and the
//! writer for the streams Airlock sends on.
//!
//! [`SseParser`] follows the WHATWG event-stream grammar: `\n`, `\r\n` and `\r` line endings,
//! multi-line `data:`, `:` comments, a leading byte-order mark, and bytes arriving in chunks
//! split anywhere, inside a line ending or inside a UTF-8 character included. It never holds
//! more than one event: an event larger than its limit (8 MiB by default) is an error, not
//! unbounded memory. [`write_event`] writes an event so that any data, whatever its line
//! endings, reads back unchanged.

use crate::dialect::WireError;

/// The default bound on one event: its field lines, data and event name together.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` name; `None` for the default (`message`).
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The `id:` this event carried itself (not the sticky last event id of the spec, so that
    /// a proxy writes back only what the upstream wrote).
    pub id: Option<String>,
    /// A `retry:` reconnection time in milliseconds that came with this event.
    pub retry: Option<u64>,
}

impl SseEvent {
    /// An event with this name and data and no id.
    pub fn new(event: Option<&str>, data: impl Into<String>) -> Self {
        SseEvent { event: event.map(str::to_owned), data: data.into(), id: None, retry: None }
    }

    /// Writes the event, its id and retry included, in wire form.
    pub fn write(&self, out: &mut Vec<u8>) {
        if let Some(id) = &self.id {
            // An id cannot span lines; the parser never produces one that does.
            write_field(out, "id", first_line(id));
        }
        if let Some(retry) = self.retry {
            write_field(out, "retry", &retry.to_string());
        }
        write_event(self.event.as_deref(), &self.data, out);
    }
}

/// Writes one event: an optional `event:` line, one `data:` line per line of `data` (split at
/// `\n`, `\r\n` and `\r`), and the blank line that dispatches it.
pub fn write_event(event: Option<&str>, data: &str, out: &mut Vec<u8>) {
    if let Some(name) = event {
        write_field(out, "event", first_line(name));
    }
    let mut rest = data;
    loop {
        match rest.find(['\n', '\r']) {
            Some(at) => {
                write_field(out, "data", rest.get(..at).unwrap_or_default());
                let after = rest.get(at..).unwrap_or_default();
                let skip = if after.starts_with("\r\n") { 2 } else { 1 };
                rest = after.get(skip..).unwrap_or_default();
            }
            None => {
                write_field(out, "data", rest);
                break;
            }
        }
    }
    out.push(b'\n');
}

fn write_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

fn first_line(s: &str) -> &str {
    s.split(['\n', '\r']).next().unwrap_or_default()
}

/// An incremental event-stream parser.
#[derive(Debug)]
pub struct SseParser {
    max_event_bytes: usize,
    /// The line being read (bytes: a chunk may end inside a UTF-8 character).
    line: Vec<u8>,
    /// The previous chunk ended with `\r`, so a `\n` starting this one ends nothing.
    after_cr: bool,
    /// No line has been completed yet (a byte-order mark may lead the first one).
    first_line: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    id: Option<String>,
    retry: Option<u64>,
    /// An event went over the limit; the rest of the stream cannot be framed reliably.
    failed: bool,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    /// A parser with the default event bound ([`DEFAULT_MAX_EVENT_BYTES`]).
    pub fn new() -> Self {
        Self::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A parser that refuses events larger than `max_event_bytes`.
    pub fn with_max_event_bytes(max_event_bytes: usize) -> Self {
        SseParser {
            max_event_bytes,
            line: Vec::new(),
            after_cr: false,
            first_line: true,
            event: None,
            data: String::new(),
            has_data: false,
            id: None,
            retry: None,
            failed: false,
        }
    }

    /// Takes the next bytes of the stream; returns the events they complete.
    ///
    /// Once an event has gone over the limit every call fails: the stream cannot be trusted to
    /// be framed where the parser would resume.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, WireError> {
        if self.failed {
            return Err(self.too_large());
        }
        let mut events = Vec::new();
        let mut rest = bytes;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if let Some(tail) = rest.strip_prefix(b"\n") {
                rest = tail;
            }
        }
        loop {
            match rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
                None => {
                    self.extend_line(rest)?;
                    break;
                }
                Some(at) => {
                    let (line, tail) = rest.split_at(at);
                    self.extend_line(line)?;
                    let (terminator, tail) = tail.split_first().map_or((b'\n', tail), |(t, r)| (*t, r));
                    rest = tail;
                    if terminator == b'\r' {
                        if let Some(tail) = rest.strip_prefix(b"\n") {
                            rest = tail;
                        } else if rest.is_empty() {
                            self.after_cr = true;
                        }
                    }
                    if let Some(event) = self.end_line() {
                        events.push(event);
                    }
                }
            }
        }
        Ok(events)
    }

    /// Ends the stream. Unlike a browser, which drops an event the stream ended inside, this
    /// dispatches it when it has data, its last line even without a line ending: a proxy
    /// should pass on what an upstream that closed early did send.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, WireError> {
        if self.failed {
            return Err(self.too_large());
        }
        if !self.line.is_empty() {
            // The last line, unterminated; a blank line after it dispatches what it adds.
            if let Some(event) = self.end_line() {
                return Ok(Some(event));
            }
        }
        Ok(self.dispatch())
    }

    fn too_large(&self) -> WireError {
        WireError::EventTooLarge { limit: self.max_event_bytes }
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        let size =
            self.line.len() + bytes.len() + self.data.len() + self.event.as_ref().map_or(0, String::len);
        if size > self.max_event_bytes {
            self.failed = true;
            self.line = Vec::new();
            self.data = String::new();
            return Err(self.too_large());
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    /// Interprets the completed line; returns an event when it was the blank line ending one.
    fn end_line(&mut self) -> Option<SseEvent> {
        let mut raw = std::mem::take(&mut self.line);
        if self.first_line {
            self.first_line = false;
            if raw.starts_with("\u{feff}".as_bytes()) {
                raw.drain(..3);
            }
        }
        if raw.is_empty() {
            return self.dispatch();
        }
        let line = String::from_utf8_lossy(&raw);
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_owned()).filter(|v| !v.is_empty()),
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok();
            }
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        let id = self.id.take();
        let retry = self.retry.take();
        if !std::mem::take(&mut self.has_data) {
            return None;
        }
        Some(SseEvent { event, data: std::mem::take(&mut self.data), id, retry })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use proptest::prelude::*;

    use super::*;

    fn parse_all(bytes: &[u8]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut events = p.push(bytes).unwrap();
        events.extend(p.finish().unwrap());
        events
    }

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent::new(event, data)
    }

    #[test]
    fn reads_the_three_line_endings_alike() {
        for nl in ["\n", "\r\n", "\r"] {
            let text = format!(
                "event: message_start{nl}data: {{\"a\":1}}{nl}{nl}: keep-alive{nl}data: x{nl}data:y{nl}data{nl}{nl}"
            );
            assert_eq!(
                parse_all(text.as_bytes()),
                vec![ev(Some("message_start"), "{\"a\":1}"), ev(None, "x\ny\n")],
                "line ending {nl:?}"
            );
        }
    }

    #[test]
    fn a_crlf_split_between_chunks_ends_one_line() {
        let mut p = SseParser::new();
        assert!(p.push(b"data: a\r").unwrap().is_empty());
        assert!(p.push(b"\n").unwrap().is_empty());
        assert_eq!(p.push(b"\r\n").unwrap(), vec![ev(None, "a")]);
        // A lone `\r` followed later by another line: two lines, not one.
        assert!(p.push(b"data: b\r").unwrap().is_empty());
        assert!(p.push(b"").unwrap().is_empty());
        assert_eq!(p.push(b"data: c\r\r").unwrap(), vec![ev(None, "b\nc")]);
    }

    #[test]
    fn keeps_utf8_split_across_chunks() {
        let text = "data: héllo 🦀 wörld\n\n".as_bytes();
        for cut in 0..=text.len() {
            let mut p = SseParser::new();
            let mut events = p.push(&text[..cut]).unwrap();
            events.extend(p.push(&text[cut..]).unwrap());
            assert_eq!(events, vec![ev(None, "héllo 🦀 wörld")], "cut at {cut}");
        }
    }

    #[test]
    fn follows_the_field_rules() {
        let events = parse_all(
            "\u{feff}data:  two spaces\nid: 7\nretry: 1500\nevent:\nbogus: x\n\nevent: lonely\n\ndata\n\nid: a\0b\nretry: 1x\ndata: z\n\n"
                .as_bytes(),
        );
        assert_eq!(
            events,
            vec![
                SseEvent { event: None, data: " two spaces".into(), id: Some("7".into()), retry: Some(1500) },
                // An event with no data line is not dispatched, and its name does not leak on.
                ev(None, ""),
                ev(None, "z"),
            ]
        );
    }

    #[test]
    fn finish_passes_on_an_unterminated_last_event() {
        let mut p = SseParser::new();
        assert!(p.push(b"data: [DONE]").unwrap().is_empty());
        assert_eq!(p.finish().unwrap(), Some(ev(None, "[DONE]")));
        let mut p = SseParser::new();
        assert!(p.push(b"data: a\n").unwrap().is_empty());
        assert_eq!(p.finish().unwrap(), Some(ev(None, "a")));
        let mut p = SseParser::new();
        assert!(p.push(b"event: x\n").unwrap().is_empty());
        assert_eq!(p.finish().unwrap(), None);
    }

    #[test]
    fn an_oversized_event_is_an_error_and_the_stream_stays_failed() {
        let mut p = SseParser::with_max_event_bytes(64);
        assert_eq!(p.push(b"data: small\n\n").unwrap(), vec![ev(None, "small")]);
        // Many short data lines add up, as does one long line with no ending in sight.
        let many = "data: 0123456789\n".repeat(8);
        assert_eq!(p.push(many.as_bytes()), Err(WireError::EventTooLarge { limit: 64 }));
        assert!(p.push(b"\n\ndata: after\n\n").is_err());
        assert!(p.finish().is_err());
        let mut p = SseParser::with_max_event_bytes(64);
        for _ in 0..6 {
            assert!(p.push(&[b'x'; 10]).is_ok());
        }
        assert_eq!(
            p.push(&[b'x'; 10]).unwrap_err().to_string(),
            "a server-sent event is larger than the limit of 64 bytes"
        );
    }

    #[test]
    fn the_default_bound_is_eight_mebibytes() {
        let mut p = SseParser::new();
        let big = vec![b'a'; 1024 * 1024];
        p.push(b"data: ").unwrap();
        for _ in 0..7 {
            p.push(&big).unwrap();
        }
        assert!(p.push(&big).is_err());
    }

    #[test]
    fn written_events_read_back() {
        let mut out = Vec::new();
        write_event(Some("content_block_delta"), "{\"a\":1}", &mut out);
        write_event(None, "line one\r\nline two\rthree\n", &mut out);
        SseEvent { event: None, data: " x".into(), id: Some("9".into()), retry: Some(10) }.write(&mut out);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "event: content_block_delta\ndata: {\"a\":1}\n\ndata: line one\ndata: line two\ndata: three\ndata: \n\nid: 9\nretry: 10\ndata:  x\n\n"
        );
        assert_eq!(
            parse_all(&out),
            vec![
                ev(Some("content_block_delta"), "{\"a\":1}"),
                ev(None, "line one\nline two\nthree\n"),
                SseEvent { event: None, data: " x".into(), id: Some("9".into()), retry: Some(10) },
            ]
        );
    }

    fn event_strategy() -> impl Strategy<Value = (Option<String>, String)> {
        (proptest::option::of("[a-z_]{1,12}"), "[ -~é🦀\n]{0,40}")
    }

    proptest! {
        #[test]
        fn any_chunking_and_line_ending_reads_the_same(
            events in proptest::collection::vec(event_strategy(), 0..6),
            cuts in proptest::collection::vec(0usize..2000, 0..10),
            ending in 0usize..3,
        ) {
            let mut wire = Vec::new();
            for (name, data) in &events {
                write_event(name.as_deref(), data, &mut wire);
            }
            let nl = ["\n", "\r\n", "\r"][ending];
            let wire = String::from_utf8(wire).unwrap().replace('\n', nl).into_bytes();
            let whole = parse_all(&wire);
            let expected: Vec<SseEvent> = events.iter().map(|(n, d)| ev(n.as_deref(), d)).collect();
            prop_assert_eq!(&whole, &expected);
            let mut bounds: Vec<usize> = cuts.into_iter().map(|c| c % (wire.len() + 1)).collect();
            bounds.sort_unstable();
            let mut p = SseParser::new();
            let mut got = Vec::new();
            let mut last = 0;
            for b in bounds {
                got.extend(p.push(&wire[last..b]).unwrap());
                last = b;
            }
            got.extend(p.push(&wire[last..]).unwrap());
            got.extend(p.finish().unwrap());
            prop_assert_eq!(got, expected);
        }
    }
}
