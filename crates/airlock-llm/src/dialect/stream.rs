//! Streamed responses: SSE bytes from the upstream in, SSE bytes for the client out, with tokens
//! restored and usage read on the way.
//!
//! Each text that streams (a choice's content, a tool call's arguments, a content block) gets
//! its own [`airlock_inspect::StreamRestorer`], which holds back only a tail that could still
//! become a token. Held text is released before the event that ends its text (the finishing
//! chunk, `content_block_stop`), before the end of the stream (`[DONE]`, `message_stop`), and
//! when the upstream closes without either. How the upstream's bytes were split into chunks
//! changes only when output is released, never what it is.

use std::collections::{BTreeMap, HashMap};

use airlock_inspect::{RestoreMode, TokenLookup};

use super::{Dialect, Usage, WireError, anthropic, openai};
use crate::sse::{SseEvent, SseParser};

/// The restorers of one stream's texts, by key.
#[derive(Debug)]
pub(super) struct Restorers<K> {
    live: BTreeMap<K, airlock_inspect::StreamRestorer>,
    /// Tokens restored by restorers already finished, and outside any restorer.
    done: usize,
}

impl<K> Default for Restorers<K> {
    fn default() -> Self {
        Restorers { live: BTreeMap::new(), done: 0 }
    }
}

impl<K: Ord + Copy> Restorers<K> {
    /// Pushes `text` into the restorer of `key` (made in `mode` on first use); returns what it
    /// releases.
    pub(super) fn push(&mut self, key: K, mode: RestoreMode, text: &str, lookup: &dyn TokenLookup) -> String {
        self.live.entry(key).or_insert_with(|| airlock_inspect::StreamRestorer::new(mode)).push(text, lookup)
    }

    /// Ends the text of `key`; returns what its restorer held.
    pub(super) fn finish(&mut self, key: K, lookup: &dyn TokenLookup) -> String {
        match self.live.remove(&key) {
            Some(mut restorer) => {
                let held = restorer.finish(lookup);
                self.done += restorer.restored();
                held
            }
            None => String::new(),
        }
    }

    /// Ends every text whose key `which` selects; returns the non-empty held texts in key
    /// order.
    pub(super) fn finish_where(
        &mut self,
        which: impl Fn(&K) -> bool,
        lookup: &dyn TokenLookup,
    ) -> Vec<(K, String)> {
        let keys: Vec<K> = self.live.keys().filter(|k| which(k)).copied().collect();
        keys.into_iter().map(|k| (k, self.finish(k, lookup))).filter(|(_, held)| !held.is_empty()).collect()
    }

    /// Counts tokens restored outside the restorers (whole values in a block start).
    pub(super) fn add_restored(&mut self, n: usize) {
        self.done += n;
    }

    /// Tokens restored so far.
    pub(super) fn restored(&self) -> usize {
        self.done + self.live.values().map(airlock_inspect::StreamRestorer::restored).sum::<usize>()
    }
}

/// What the dialect handlers share: the lookup, and what the stream has told so far.
#[derive(Debug)]
pub(super) struct StreamCtx {
    pub(super) lookup: HashMap<String, String>,
    pub(super) forward_usage_chunk: bool,
    pub(super) usage: Option<Usage>,
    pub(super) finished_cleanly: bool,
    pub(super) malformed: usize,
}

#[derive(Debug)]
enum State {
    OpenAi(openai::Stream),
    Anthropic(anthropic::Stream),
}

/// Transforms a streamed response (SSE bytes as they arrive from the upstream, split anywhere)
/// into the SSE bytes to send to the client, restoring tokens and reading usage.
///
/// Events it does not understand, and data that is not JSON, are passed on unchanged (the
/// latter counted in [`malformed`](Self::malformed)). Output is re-framed: comments are
/// dropped and line endings become `\n`.
#[derive(Debug)]
pub struct StreamRestorer {
    parser: SseParser,
    ctx: StreamCtx,
    state: State,
    error: Option<WireError>,
    ended: bool,
}

impl StreamRestorer {
    /// A restorer for a `dialect` stream with the tokens of `lookup`. `forward_usage_chunk`
    /// says whether the client asked for OpenAI's usage chunk itself (see
    /// [`request_usage_chunk`](super::request_usage_chunk)); when it did not, that chunk is
    /// read and dropped.
    pub fn new(dialect: Dialect, lookup: HashMap<String, String>, forward_usage_chunk: bool) -> Self {
        Self::with_parser(dialect, lookup, forward_usage_chunk, SseParser::new())
    }

    /// Like [`new`](Self::new), with a parser of your own (another event size bound).
    pub fn with_parser(
        dialect: Dialect,
        lookup: HashMap<String, String>,
        forward_usage_chunk: bool,
        parser: SseParser,
    ) -> Self {
        let state = match dialect {
            Dialect::OpenAiChat => State::OpenAi(openai::Stream::default()),
            Dialect::AnthropicMessages => State::Anthropic(anthropic::Stream::default()),
        };
        StreamRestorer {
            parser,
            ctx: StreamCtx {
                lookup,
                forward_usage_chunk,
                usage: None,
                finished_cleanly: false,
                malformed: 0,
            },
            state,
            error: None,
            ended: false,
        }
    }

    /// Takes the next bytes from the upstream; returns the bytes to send on (complete SSE
    /// events only, possibly none).
    ///
    /// When an event exceeds the parser's bound, the held text is released, an error event
    /// in the dialect's format is written, and the stream ends: later calls return nothing,
    /// and [`error`](Self::error) says why (the caller should close the upstream).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        match self.parser.push(bytes) {
            Ok(events) => events.into_iter().for_each(|event| self.event(event, &mut out)),
            Err(e) => self.fail(e, &mut out),
        }
        out
    }

    /// Ends the stream: passes on an event the upstream left unterminated and releases any
    /// text still held (an upstream that closed without `[DONE]` or `message_stop`). Later
    /// calls return nothing.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        match self.parser.finish() {
            Ok(last) => {
                if let Some(event) = last {
                    self.event(event, &mut out);
                }
                self.release_all(&mut out);
            }
            Err(e) => self.fail(e, &mut out),
        }
        self.ended = true;
        out
    }

    fn event(&mut self, event: SseEvent, out: &mut Vec<u8>) {
        match &mut self.state {
            State::OpenAi(s) => s.event(event, &mut self.ctx, out),
            State::Anthropic(s) => s.event(event, &mut self.ctx, out),
        }
    }

    fn release_all(&mut self, out: &mut Vec<u8>) {
        match &mut self.state {
            State::OpenAi(s) => s.release_all(&self.ctx, out),
            State::Anthropic(s) => s.release_all(&self.ctx, out),
        }
    }

    fn fail(&mut self, error: WireError, out: &mut Vec<u8>) {
        self.release_all(out);
        let message = format!("airlock stopped the stream: {error}");
        match &self.state {
            State::OpenAi(_) => openai::Stream::error(&message, out),
            State::Anthropic(_) => anthropic::Stream::error(&message, out),
        }
        tracing::warn!(%error, "upstream stream failed");
        self.error = Some(error);
        self.ended = true;
    }

    /// The usage the upstream reported so far: OpenAI's usage chunk, or Anthropic's
    /// `message_start` input and latest `message_delta` output counts.
    pub fn usage(&self) -> Option<Usage> {
        self.ctx.usage
    }

    /// How many tokens have been restored so far.
    pub fn restored(&self) -> usize {
        match &self.state {
            State::OpenAi(s) => s.restored(),
            State::Anthropic(s) => s.restored(),
        }
    }

    /// Whether the upstream ended the stream properly: `data: [DONE]` (OpenAI) or
    /// `message_stop` (Anthropic).
    pub fn finished_cleanly(&self) -> bool {
        self.ctx.finished_cleanly && self.error.is_none()
    }

    /// How many events carried data that was not JSON (passed on unchanged).
    pub fn malformed(&self) -> usize {
        self.ctx.malformed
    }

    /// Why the stream was cut short, if it was.
    pub fn error(&self) -> Option<&WireError> {
        self.error.as_ref()
    }
}
