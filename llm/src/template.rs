//! Chat prompt formatting.
//!
//! GGUF files carry a Jinja chat template; rather than embed a Jinja engine,
//! the template is recognised by its marker tokens and rendered by one of a
//! few hand-written formats. Unknown templates fall back to ChatML, which most
//! small instruct models understand well enough.

use crate::{ChatMessage, Role};

/// The prompt formats Hark can render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatTemplate {
    /// `<|im_start|>role\n...<|im_end|>` (SmolLM, Qwen). `no_think` appends an
    /// empty `<think>` block, which is how Qwen3 templates switch reasoning off
    /// — a voice assistant cannot afford to speak (or wait for) a monologue.
    ChatMl { no_think: bool },
    /// `<start_of_turn>user\n...<end_of_turn>` (Gemma). Gemma has no system
    /// role, so the system prompt is folded into the first user turn.
    Gemma,
    /// `<|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>` (Llama 3).
    Llama3,
}

impl ChatTemplate {
    /// Picks the format from the GGUF `tokenizer.chat_template` text.
    pub fn detect(jinja: Option<&str>) -> Self {
        let t = jinja.unwrap_or("");
        if t.contains("<start_of_turn>") {
            Self::Gemma
        } else if t.contains("<|start_header_id|>") {
            Self::Llama3
        } else {
            Self::ChatMl {
                no_think: t.contains("<think>"),
            }
        }
    }

    /// Token strings that end an assistant turn.
    pub fn end_of_turn_tokens(&self) -> &'static [&'static str] {
        match self {
            Self::ChatMl { .. } => &["<|im_end|>", "<|endoftext|>"],
            Self::Gemma => &["<end_of_turn>", "<eos>"],
            Self::Llama3 => &["<|eot_id|>", "<|end_of_text|>"],
        }
    }

    /// Renders the conversation and opens the assistant's turn.
    pub fn render(&self, messages: &[ChatMessage]) -> String {
        let mut out = String::new();
        match self {
            Self::ChatMl { no_think } => {
                for m in messages {
                    let role = match m.role {
                        Role::System => "system",
                        Role::User => "user",
                        Role::Assistant => "assistant",
                    };
                    out += &format!("<|im_start|>{role}\n{}<|im_end|>\n", m.content);
                }
                out += "<|im_start|>assistant\n";
                if *no_think {
                    out += "<think>\n\n</think>\n\n";
                }
            }
            Self::Gemma => {
                out += "<bos>";
                let mut system: Option<&str> = None;
                for m in messages {
                    match m.role {
                        Role::System => system = Some(&m.content),
                        Role::User => {
                            out += "<start_of_turn>user\n";
                            if let Some(s) = system.take() {
                                out += &format!("{s}\n\n");
                            }
                            out += &format!("{}<end_of_turn>\n", m.content);
                        }
                        Role::Assistant => {
                            out += &format!("<start_of_turn>model\n{}<end_of_turn>\n", m.content)
                        }
                    }
                }
                out += "<start_of_turn>model\n";
            }
            Self::Llama3 => {
                out += "<|begin_of_text|>";
                for m in messages {
                    let role = match m.role {
                        Role::System => "system",
                        Role::User => "user",
                        Role::Assistant => "assistant",
                    };
                    out += &format!(
                        "<|start_header_id|>{role}<|end_header_id|>\n\n{}<|eot_id|>",
                        m.content.trim()
                    );
                }
                out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convo(with_system: bool) -> Vec<ChatMessage> {
        let mut v = Vec::new();
        if with_system {
            v.push(ChatMessage::system("Be brief."));
        }
        v.push(ChatMessage::user("Hi"));
        v.push(ChatMessage::assistant("Hello!"));
        v.push(ChatMessage::user("Time?"));
        v
    }

    #[test]
    fn detects_templates() {
        let smol = "{{'<|im_start|>' + message['role'] + '\\n'}}";
        assert_eq!(
            ChatTemplate::detect(Some(smol)),
            ChatTemplate::ChatMl { no_think: false }
        );
        assert_eq!(
            ChatTemplate::detect(Some("<|im_start|>...<think>")),
            ChatTemplate::ChatMl { no_think: true }
        );
        assert_eq!(
            ChatTemplate::detect(Some("{{ '<start_of_turn>' + role }}")),
            ChatTemplate::Gemma
        );
        assert_eq!(
            ChatTemplate::detect(Some("<|start_header_id|>")),
            ChatTemplate::Llama3
        );
        assert_eq!(
            ChatTemplate::detect(None),
            ChatTemplate::ChatMl { no_think: false }
        );
    }

    #[test]
    fn chatml_with_and_without_system() {
        let t = ChatTemplate::ChatMl { no_think: false };
        assert_eq!(
            t.render(&convo(true)),
            "<|im_start|>system\nBe brief.<|im_end|>\n\
             <|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\nHello!<|im_end|>\n\
             <|im_start|>user\nTime?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        assert_eq!(
            t.render(&convo(false)),
            "<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\nHello!<|im_end|>\n\
             <|im_start|>user\nTime?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        let q = ChatTemplate::ChatMl { no_think: true };
        assert!(q
            .render(&convo(false))
            .ends_with("<|im_start|>assistant\n<think>\n\n</think>\n\n"));
    }

    #[test]
    fn gemma_folds_system_into_first_user_turn() {
        let t = ChatTemplate::Gemma;
        assert_eq!(
            t.render(&convo(true)),
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n\
             <start_of_turn>model\nHello!<end_of_turn>\n\
             <start_of_turn>user\nTime?<end_of_turn>\n\
             <start_of_turn>model\n"
        );
        assert_eq!(
            t.render(&convo(false)),
            "<bos><start_of_turn>user\nHi<end_of_turn>\n\
             <start_of_turn>model\nHello!<end_of_turn>\n\
             <start_of_turn>user\nTime?<end_of_turn>\n\
             <start_of_turn>model\n"
        );
    }

    #[test]
    fn llama3_with_and_without_system() {
        let t = ChatTemplate::Llama3;
        assert_eq!(
            t.render(&convo(true)),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nTime?<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        assert!(t
            .render(&convo(false))
            .starts_with("<|begin_of_text|><|start_header_id|>user"));
    }
}
