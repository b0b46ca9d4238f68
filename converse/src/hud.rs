//! The heads-up display feed: the user's words and Hark's reply cut into
//! pages that fit a small display (`[hud] columns`, `lines`; smart glasses
//! show about five lines of 40–45 characters), each page of the reply
//! sent when its first word is about to be spoken.
//!
//! Pure: [`HudFeed`] is told what the session did (a user turn, a clause's
//! text, its audio's length, its playback starting, an interruption) and
//! answers with the pages to show and how long after now to show each.
//! Words are laid out greedily, so a page never changes once the text
//! after it is known; the last page may grow as the model writes on, and
//! is then sent again, with the same number, when its new words are
//! about to be spoken. `pages` is the count known when a page is sent.

use hark_config::{check_range, doc, InvalidValue, KeyDoc, Section, Settings};
use serde::{Deserialize, Serialize};

/// The `[hud]` section: the display's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HudConfig {
    /// Characters per line.
    pub columns: usize,
    /// Lines per page.
    pub lines: usize,
}

impl Default for HudConfig {
    fn default() -> Self {
        Self {
            columns: 44,
            lines: 5,
        }
    }
}

impl Settings for HudConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        check_range("columns", self.columns, 8, 400)?;
        check_range("lines", self.lines, 1, 100)?;
        Ok(())
    }
}

impl Section for HudConfig {
    const DOC: &'static str =
        "The heads-up display feed (the HudPage D-Bus signal, `hark monitor --hud`).";
    const KEYS: &'static [KeyDoc] = &[
        doc(
            "columns",
            "Characters per line of the display (8 to 400); smart glasses show 40 to 45.",
        ),
        doc("lines", "Lines per page of the display (1 to 100)."),
    ];
}

/// One page for the display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HudPage {
    /// At most `lines` lines of at most `columns` characters, joined by
    /// newlines.
    pub text: String,
    /// 1-based.
    pub page: u32,
    /// Pages known when this one was sent.
    pub pages: u32,
}

/// A page laid out: its tokens (words, or pieces of a word too long for
/// a line) `[first, end)` and its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Laid {
    first: usize,
    end: usize,
    text: String,
}

/// `text`'s words, each cut into pieces of at most `columns` characters.
fn tokens(text: &str, columns: usize) -> Vec<String> {
    let mut out = Vec::new();
    for word in text.split_whitespace() {
        let chars: Vec<char> = word.chars().collect();
        for piece in chars.chunks(columns) {
            out.push(piece.iter().collect());
        }
    }
    out
}

/// Lays `tokens` out in lines and pages of `config`'s size.
fn lay_out(tokens: &[String], config: HudConfig) -> Vec<Laid> {
    let mut pages = Vec::new();
    let (mut lines, mut line, mut first) = (Vec::<String>::new(), String::new(), 0);
    for (i, token) in tokens.iter().enumerate() {
        let width = line.chars().count();
        let fits = width == 0 || width + 1 + token.chars().count() <= config.columns;
        if !fits {
            lines.push(std::mem::take(&mut line));
            if lines.len() == config.lines {
                pages.push(Laid {
                    first,
                    end: i,
                    text: lines.join("\n"),
                });
                lines.clear();
                first = i;
            }
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(token);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    if !lines.is_empty() {
        pages.push(Laid {
            first,
            end: tokens.len(),
            text: lines.join("\n"),
        });
    }
    pages
}

/// `text` in pages of `config`'s size.
pub fn paginate(text: &str, config: HudConfig) -> Vec<HudPage> {
    let laid = lay_out(&tokens(text, config.columns), config);
    let pages = laid.len() as u32;
    laid.into_iter()
        .enumerate()
        .map(|(i, l)| HudPage {
            text: l.text,
            page: i as u32 + 1,
            pages,
        })
        .collect()
}

/// A clause of the reply: its tokens and its audio's length.
#[derive(Debug, Clone)]
struct ClauseSpan {
    clause: u64,
    first: usize,
    end: usize,
    audio_ms: Option<u64>,
}

/// Turns the session's progress into pages for the display.
#[derive(Debug, Clone, Default)]
pub struct HudFeed {
    config: HudConfig,
    /// The reply's tokens so far, in the order they will be spoken.
    reply: Vec<String>,
    clauses: Vec<ClauseSpan>,
    /// What each page showed when last sent.
    sent: Vec<String>,
}

impl HudFeed {
    pub fn new(config: HudConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// The user's words were accepted as a turn: they are shown (all of
    /// their pages, in order), and a new reply begins.
    pub fn user_turn(&mut self, text: &str) -> Vec<HudPage> {
        self.new_reply();
        paginate(text, self.config)
    }

    /// Forgets the reply (a new one begins, or a `Say`).
    pub fn new_reply(&mut self) {
        self.reply.clear();
        self.clauses.clear();
        self.sent.clear();
    }

    /// A clause of the reply, as it will be spoken.
    pub fn clause(&mut self, clause: u64, text: &str) {
        let first = self.reply.len();
        self.reply.extend(tokens(text, self.config.columns));
        self.clauses.push(ClauseSpan {
            clause,
            first,
            end: self.reply.len(),
            audio_ms: None,
        });
    }

    /// A clause's audio is this long.
    pub fn synthesized(&mut self, clause: u64, audio_ms: u64) {
        if let Some(c) = self.clauses.iter_mut().find(|c| c.clause == clause) {
            c.audio_ms = Some(audio_ms);
        }
    }

    /// A clause began to play: the pages whose first words are in it
    /// (or which it adds to), each with how many ms from now its first
    /// new word is spoken (the clause's audio shared by characters).
    pub fn playback_started(&mut self, clause: u64) -> Vec<(u64, HudPage)> {
        let Some(span) = self.clauses.iter().find(|c| c.clause == clause).cloned() else {
            return Vec::new();
        };
        let laid = lay_out(&self.reply, self.config);
        let pages = laid.len() as u32;
        let chars = |from: usize, to: usize| -> usize {
            self.reply[from..to]
                .iter()
                .map(|t| t.chars().count() + 1)
                .sum()
        };
        let clause_chars = chars(span.first, span.end).max(1);
        let mut due = Vec::new();
        for (i, page) in laid.iter().enumerate() {
            let (starts_here, grows_here) = (
                (span.first..span.end).contains(&page.first),
                page.first < span.first && page.end > span.first,
            );
            if !starts_here && !grows_here {
                continue;
            }
            if self.sent.get(i) == Some(&page.text) {
                continue;
            }
            let at = page.first.max(span.first);
            let delay = span.audio_ms.map_or(0, |ms| {
                ms * chars(span.first, at) as u64 / clause_chars as u64
            });
            if self.sent.len() <= i {
                self.sent.resize(i + 1, String::new());
            }
            self.sent[i] = page.text.clone();
            due.push((
                delay,
                HudPage {
                    text: page.text.clone(),
                    page: i as u32 + 1,
                    pages,
                },
            ));
        }
        due
    }

    /// Hark was talked over after saying `spoken_part`: the page that was
    /// being spoken, cut where Hark stopped.
    pub fn interrupted(&mut self, spoken_part: &str) -> Option<HudPage> {
        let spoken = tokens(spoken_part, self.config.columns).len();
        if spoken == 0 || self.reply.is_empty() {
            return None;
        }
        let heard = &self.reply[..spoken.min(self.reply.len())];
        let laid = lay_out(&self.reply, self.config);
        let (index, page) = laid
            .iter()
            .enumerate()
            .find(|(_, p)| p.first < heard.len() && heard.len() <= p.end)?;
        let cut = lay_out(&heard[page.first..], self.config);
        let text = cut.first().map(|l| l.text.clone()).unwrap_or_default();
        let pages = laid.len() as u32;
        self.new_reply();
        Some(HudPage {
            text,
            page: index as u32 + 1,
            pages,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLY: &str = "The moon is made mostly of rock. Its crust is rich in oxygen, \
        silicon, magnesium, iron, calcium and aluminium, and the dark plains you \
        can see are old lava flows that cooled billions of years ago. Supercalifragilisticexpialidocious-and-then-some words are cut.";

    fn fits(page: &HudPage, config: HudConfig) -> bool {
        let lines: Vec<&str> = page.text.split('\n').collect();
        lines.len() <= config.lines && lines.iter().all(|l| l.chars().count() <= config.columns)
    }

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn pages_fit_the_display_and_cover_the_text_in_order() {
        for config in [
            HudConfig::default(),
            HudConfig {
                columns: 12,
                lines: 2,
            },
            HudConfig {
                columns: 8,
                lines: 1,
            },
        ] {
            let pages = paginate(REPLY, config);
            assert!(pages.iter().all(|p| fits(p, config)), "{pages:?}");
            let joined: String = pages
                .iter()
                .map(|p| p.text.replace('\n', " "))
                .collect::<Vec<_>>()
                .join(" ");
            assert_eq!(
                joined.replace(' ', ""),
                REPLY.split_whitespace().collect::<String>(),
            );
            assert!(pages
                .iter()
                .enumerate()
                .all(|(i, p)| p.page == i as u32 + 1 && p.pages == pages.len() as u32));
        }
        assert!(paginate("  ", HudConfig::default()).is_empty());
    }

    /// The reply in three clauses, played in turn: the pages sent, last
    /// version of each, are the whole reply's pages; each is sent when its
    /// first new word is due.
    #[test]
    fn reply_pages_are_sent_as_their_words_are_spoken() {
        let config = HudConfig {
            columns: 20,
            lines: 2,
        };
        let mut feed = HudFeed::new(config);
        assert_eq!(feed.user_turn("What is the moon made of?").len(), 1);
        let clauses = [
            "The moon is made mostly of rock.",
            "Its crust is rich in oxygen, silicon, magnesium, iron, calcium and aluminium,",
            "and the dark plains are old lava.",
        ];
        let mut shown: Vec<HudPage> = Vec::new();
        for (id, text) in clauses.iter().enumerate() {
            feed.clause(id as u64, text);
            feed.synthesized(id as u64, 1000 * (id as u64 + 1));
        }
        for id in 0..clauses.len() as u64 {
            let due = feed.playback_started(id);
            let mut last = 0;
            for (delay, page) in due {
                assert!(delay >= last && delay <= 1000 * (id + 1), "{delay}");
                last = delay;
                assert!(fits(&page, config));
                shown.retain(|p| p.page != page.page);
                shown.push(page);
            }
        }
        let whole = paginate(&clauses.join(" "), config);
        assert_eq!(shown, whole);
    }

    #[test]
    fn a_page_written_on_after_it_was_shown_is_sent_again() {
        let config = HudConfig {
            columns: 40,
            lines: 2,
        };
        let mut feed = HudFeed::new(config);
        feed.clause(1, "Paris.");
        let first = feed.playback_started(1);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].1.text, "Paris.");
        feed.clause(2, "It is the capital of France.");
        feed.synthesized(2, 2000);
        let again = feed.playback_started(2);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].0, 0, "its new words start the clause");
        assert_eq!(again[0].1.text, "Paris. It is the capital of France.");
        assert_eq!(again[0].1.page, 1);
    }

    #[test]
    fn an_interruption_sends_the_page_being_spoken_cut_where_hark_stopped() {
        let config = HudConfig {
            columns: 20,
            lines: 2,
        };
        let mut feed = HudFeed::new(config);
        feed.clause(0, REPLY);
        let spoken = "The moon is made mostly of rock. Its crust is rich in oxygen, silicon,";
        let page = feed.interrupted(spoken).unwrap();
        assert!(fits(&page, config));
        let shown = words(&page.text);
        let heard = words(spoken);
        assert_eq!(heard[heard.len() - shown.len()..], shown[..], "{page:?}");
        let whole = paginate(REPLY, config);
        assert!(whole[page.page as usize - 1].text.starts_with(&page.text));
        assert_eq!(feed.interrupted("anything"), None, "the reply is over");
    }
}
