//! What a mio [`Token`] of the loop means: which chardev, and which of its sources.
//!
//! Each chardev on a loop owns [`SOURCES_PER_CHARDEV`] consecutive tokens from its slab key
//! on: the first ones for its backend's sources (a listener, its connections, input, output),
//! the last for the loop's own writability watch. Tokens are only numbers: a wide stride costs
//! nothing, and lets a server register one source per client (`clients=N`). One token, the last of all, is the loop's
//! waker. [`SourceToken`] is the one place that turns these into numbers and back.

use mio::Token;

/// Tokens per chardev: a backend may register sources `0..SOURCES_PER_CHARDEV - 1` (listener,
/// connections, input, output); the last one is the loop's own, for writability watches.
pub const SOURCES_PER_CHARDEV: usize = 256;

/// The source index the loop uses to watch a backend's output fd for a frontend.
const WRITE_WATCH: usize = SOURCES_PER_CHARDEV - 1;

/// The token of the loop's [`mio::Waker`]: requests from other threads.
pub(crate) const WAKER: Token = Token(usize::MAX);

/// Source number `source` of the chardev with slab key `key`, as one mio token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SourceToken {
    /// The chardev's slab key on its loop.
    pub(crate) key: usize,
    /// Which of its sources, below [`SOURCES_PER_CHARDEV`].
    pub(crate) source: usize,
}

impl SourceToken {
    /// A backend's source `source` (taken modulo [`SOURCES_PER_CHARDEV`], so that a wrong
    /// number cannot reach another chardev's tokens).
    pub(crate) fn new(key: usize, source: usize) -> SourceToken {
        debug_assert!(source < WRITE_WATCH, "source {WRITE_WATCH} is the loop's own");
        SourceToken { key, source: source % SOURCES_PER_CHARDEV }
    }

    /// The loop's writability watch on the backend of `key`.
    pub(crate) fn write_watch(key: usize) -> SourceToken {
        SourceToken { key, source: WRITE_WATCH }
    }

    /// What a token from the poll names; `None` for the waker.
    pub(crate) fn of(token: Token) -> Option<SourceToken> {
        (token != WAKER).then_some(SourceToken {
            key: token.0 / SOURCES_PER_CHARDEV,
            source: token.0 % SOURCES_PER_CHARDEV,
        })
    }

    /// Whether this is the loop's writability watch rather than a backend's source.
    pub(crate) fn is_write_watch(self) -> bool {
        self.source == WRITE_WATCH
    }
}

impl From<SourceToken> for Token {
    fn from(t: SourceToken) -> Token {
        Token(t.key * SOURCES_PER_CHARDEV + t.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_the_waker_is_no_source() {
        let t = SourceToken::new(7, 2);
        assert_eq!(Token::from(t), Token(7 * 256 + 2));
        assert_eq!(SourceToken::of(Token(7 * 256 + 2)), Some(t));
        let last = SourceToken::new(7, SOURCES_PER_CHARDEV - 2);
        assert_eq!(SourceToken::of(Token::from(last)), Some(last));
        let w = SourceToken::write_watch(7);
        assert!(w.is_write_watch() && !t.is_write_watch());
        assert_eq!(SourceToken::of(Token::from(w)), Some(w));
        assert_eq!(SourceToken::of(WAKER), None);
    }
}
