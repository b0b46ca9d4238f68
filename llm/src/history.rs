//! Conversation history owned by the conversation core.
//!
//! The history only needs to stay roughly within the context window so it
//! cannot grow without bound over a long session; the exact fit, with the real
//! tokenizer and the system prompt, is done by `LanguageModel::generate`. A
//! conservative byte-based estimate keeps this type independent of the model.

use crate::{ChatMessage, Role};

/// Marker appended to a reply the user talked over, so the model knows the
/// rest was never heard.
pub const INTERRUPTED_MARKER: &str = " …";

/// User/assistant turns, oldest first, trimmed to a token budget.
#[derive(Debug, Clone)]
pub struct History {
    messages: Vec<ChatMessage>,
    interrupted: Vec<bool>,
    budget_tokens: usize,
}

impl History {
    /// `budget_tokens` is what the turns may take: usually the context size
    /// minus the system prompt and the reply budget.
    pub fn new(budget_tokens: usize) -> Self {
        Self {
            messages: Vec::new(),
            interrupted: Vec::new(),
            budget_tokens,
        }
    }

    pub fn push_user(&mut self, text: impl Into<String>) {
        self.push(ChatMessage::user(text), false);
    }

    /// Stores the reply as far as it was spoken; an interrupted one is marked.
    pub fn push_assistant(&mut self, text: impl Into<String>, interrupted: bool) {
        let mut text = text.into();
        if interrupted {
            text.push_str(INTERRUPTED_MARKER);
        }
        self.push(ChatMessage::assistant(text), interrupted);
    }

    pub fn messages(&self) -> &[ChatMessage] {
        &self.messages
    }

    /// Whether the message at `index` was an interrupted reply.
    pub fn is_interrupted(&self, index: usize) -> bool {
        self.interrupted.get(index).copied().unwrap_or(false)
    }

    pub fn clear(&mut self) {
        self.messages.clear();
        self.interrupted.clear();
    }

    fn push(&mut self, msg: ChatMessage, interrupted: bool) {
        self.messages.push(msg);
        self.interrupted.push(interrupted);
        self.trim();
    }

    /// Drops the oldest turns until the estimate fits, always keeping the
    /// newest message, and never starting on an assistant turn (a reply
    /// without its question confuses small models).
    fn trim(&mut self) {
        let mut total: usize = self.messages.iter().map(estimate_tokens).sum();
        let mut drop = 0;
        while drop + 1 < self.messages.len()
            && (total > self.budget_tokens || self.messages[drop].role == Role::Assistant)
        {
            total -= estimate_tokens(&self.messages[drop]);
            drop += 1;
        }
        self.messages.drain(..drop);
        self.interrupted.drain(..drop);
    }
}

/// Upper-bound-ish token estimate: English BPE averages ~4 bytes a token;
/// 3 plus a per-turn overhead for the template markers errs on the safe side.
fn estimate_tokens(m: &ChatMessage) -> usize {
    m.content.len().div_ceil(3) + 5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_newest_turns_within_budget() {
        let mut h = History::new(60);
        for i in 0..10 {
            h.push_user(format!("question number {i} about something"));
            h.push_assistant(format!("answer number {i} about something"), false);
        }
        let total: usize = h.messages().iter().map(estimate_tokens).sum();
        assert!(total <= 60, "{total}");
        assert_eq!(
            h.messages().last().unwrap().content,
            "answer number 9 about something"
        );
        assert_eq!(h.messages()[0].role, Role::User);
    }

    #[test]
    fn interrupted_reply_is_marked() {
        let mut h = History::new(1000);
        h.push_user("Tell me a story");
        h.push_assistant("Once upon a", true);
        assert_eq!(h.messages()[1].content, "Once upon a …");
        assert!(h.is_interrupted(1));
        assert!(!h.is_interrupted(0));
        h.clear();
        assert!(h.messages().is_empty());
    }

    #[test]
    fn oversized_single_message_is_kept() {
        let mut h = History::new(5);
        h.push_user("x".repeat(100));
        assert_eq!(h.messages().len(), 1);
    }
}
