//! Turning sampled tokens into text a client can be sent: bytes become
//! UTF-8 only when complete, text that might be the start of a stop
//! sequence is held back until it is known not to be, and `<think>` blocks
//! are tracked so their tokens are counted as reasoning.
//!
//! Pure logic, tested without a model.

/// Accumulates token bytes and releases the longest complete UTF-8 prefix.
#[derive(Debug, Default)]
pub struct Utf8Buffer {
    pending: Vec<u8>,
}

impl Utf8Buffer {
    /// Adds bytes; returns the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            // An invalid sequence (not just an incomplete one): replace it.
            Err(_) => {
                let text = String::from_utf8_lossy(&self.pending).into_owned();
                self.pending.clear();
                return text;
            }
        };
        let rest = self.pending.split_off(valid);
        String::from_utf8(std::mem::replace(&mut self.pending, rest)).unwrap_or_default()
    }

    /// Whatever is left at the end (lossily decoded).
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// What [`StopMatcher::push`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// Text safe to send; generation goes on.
    Continue(String),
    /// A stop sequence was found: send this text (everything before it) and end.
    Stopped(String),
}

/// Finds stop sequences across token boundaries.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    /// A matcher for these stop sequences (none: everything passes at once).
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            held: String::new(),
        }
    }

    /// Adds text; returns what may be sent now.
    pub fn push(&mut self, text: &str) -> StopOutcome {
        self.held.push_str(text);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let out = self.held[..at].to_string();
            self.held.clear();
            return StopOutcome::Stopped(out);
        }
        // Hold back the longest suffix that is a proper prefix of a stop.
        let keep = self
            .stops
            .iter()
            .map(|stop| cocoon_engine::tools::partial_suffix(&self.held, stop))
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        StopOutcome::Continue(out)
    }

    /// Releases held text at the end of generation.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// Counts tokens inside `<think>…</think>` (the tags included).
#[derive(Debug, Default, Clone, Copy)]
pub struct ThinkTracker {
    inside: bool,
    /// Reasoning tokens so far.
    pub reasoning_tokens: u64,
}

impl ThinkTracker {
    /// Starts inside a think block when the prompt ends by opening one (templates of
    /// reasoning models often end the prompt with `<think>`). Only the end counts: a `<think>`
    /// the user wrote earlier in the conversation opens nothing.
    pub fn for_prompt(prompt: &str) -> Self {
        Self {
            inside: prompt.trim_end().ends_with("<think>"),
            reasoning_tokens: 0,
        }
    }

    /// Accounts for one generated token whose text is `piece`.
    pub fn token(&mut self, piece: &str) {
        if piece.contains("<think>") {
            self.inside = true;
        }
        if self.inside {
            self.reasoning_tokens += 1;
        }
        if piece.contains("</think>") {
            self.inside = false;
        }
    }

    /// Whether generation is inside a think block.
    pub fn inside(&self) -> bool {
        self.inside
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_released_only_when_complete() {
        let mut b = Utf8Buffer::default();
        let euro = "€".as_bytes();
        assert_eq!(b.push(&euro[..1]), "");
        assert_eq!(b.push(&euro[1..2]), "");
        assert_eq!(b.push(&euro[2..]), "€");
        assert_eq!(b.push(b"ab"), "ab");
        assert_eq!(b.push(&[0xff, b'c']), "\u{fffd}c");
        assert_eq!(b.push(&euro[..2]), "");
        assert_eq!(b.finish(), "\u{fffd}");
    }

    #[test]
    fn stop_sequences_are_found_across_pieces_and_held_back() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("hello E"), StopOutcome::Continue("hello ".into()));
        assert_eq!(m.push("N"), StopOutcome::Continue(String::new()));
        assert_eq!(m.push("D and more"), StopOutcome::Stopped("".into()));
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("E"), StopOutcome::Continue(String::new()));
        assert_eq!(m.push("x"), StopOutcome::Continue("Ex".into()));
        assert_eq!(m.push("EN"), StopOutcome::Continue(String::new()));
        assert_eq!(m.finish(), "EN");
        let mut none = StopMatcher::new(vec![]);
        assert_eq!(none.push("abc"), StopOutcome::Continue("abc".into()));
    }

    #[test]
    fn think_blocks_are_counted_as_reasoning() {
        let mut t = ThinkTracker::for_prompt("<|im_start|>assistant\n");
        for piece in ["<think>", "let", " me", " see", "</think>", "Paris", "."] {
            t.token(piece);
        }
        assert_eq!(t.reasoning_tokens, 5);
        assert!(!t.inside());
        // A template that opens the think block in the prompt.
        let mut t = ThinkTracker::for_prompt("<|im_start|>assistant\n<think>\n");
        for piece in ["hmm", "</think>", "ok"] {
            t.token(piece);
        }
        assert_eq!(t.reasoning_tokens, 2);
        // A closed block in the prompt does not count, nor one the user wrote.
        let t = ThinkTracker::for_prompt("<think>x</think> answer");
        assert!(!t.inside());
        let t = ThinkTracker::for_prompt("user: what does <think> mean?\nassistant:\n");
        assert!(!t.inside());
    }
}
