//! What a transcript asks, when it asks one of the things a voice
//! assistant must get exactly right. The phrases are data
//! ([`PHRASES`]): a template of words with slots (`{duration}`,
//! `{label}`), matched against the transcript cleaned of punctuation, case,
//! contractions and politeness. Anything no phrase claims is `None`, and
//! goes to the model unchanged.

use crate::numbers::duration;

/// What the user asked.
#[derive(Debug, Clone, PartialEq)]
pub enum Intent {
    Time,
    Date,
    SetTimer {
        seconds: f64,
        label: Option<String>,
    },
    TimeLeft,
    /// Cancel the timer called `label`, or the only/latest one.
    CancelTimer {
        label: Option<String>,
    },
    /// Stop talking; say nothing; remember nothing.
    Stop,
    /// The last reply again.
    Repeat,
    Louder,
    Quieter,
}

/// Which intent a phrase means; slots fill in the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Time,
    Date,
    SetTimer,
    TimeLeft,
    CancelTimer,
    Stop,
    Repeat,
    Louder,
    Quieter,
}

/// The phrase table: templates of cleaned words. `{duration}` takes a
/// spoken duration; `{label}` one or more words.
const PHRASES: &[(&str, Kind)] = &[
    ("what time is it", Kind::Time),
    ("what is the time", Kind::Time),
    ("tell me the time", Kind::Time),
    ("do you know what time it is", Kind::Time),
    ("what is the time now", Kind::Time),
    ("what time is it now", Kind::Time),
    ("what is the date", Kind::Date),
    ("what is the date today", Kind::Date),
    ("what is today's date", Kind::Date),
    ("what is todays date", Kind::Date),
    ("what day is it", Kind::Date),
    ("what day is it today", Kind::Date),
    ("what is the day today", Kind::Date),
    ("what is today", Kind::Date),
    ("set a timer for {duration} called {label}", Kind::SetTimer),
    ("set a timer for {duration} named {label}", Kind::SetTimer),
    ("set a timer for {duration} for {label}", Kind::SetTimer),
    ("set a {label} timer for {duration}", Kind::SetTimer),
    ("set a timer for {duration}", Kind::SetTimer),
    ("set timer for {duration}", Kind::SetTimer),
    ("set a timer {duration}", Kind::SetTimer),
    ("start a timer for {duration}", Kind::SetTimer),
    ("start a {duration} timer", Kind::SetTimer),
    ("set a {duration} timer", Kind::SetTimer),
    ("set a {duration} timer called {label}", Kind::SetTimer),
    ("set a {duration} timer for {label}", Kind::SetTimer),
    ("a {duration} timer", Kind::SetTimer),
    ("timer for {duration}", Kind::SetTimer),
    ("timer {duration}", Kind::SetTimer),
    ("how much time is left", Kind::TimeLeft),
    ("how much time is left on the timer", Kind::TimeLeft),
    ("how much time is left on the {label} timer", Kind::TimeLeft),
    ("how long is left", Kind::TimeLeft),
    ("how long is left on the timer", Kind::TimeLeft),
    ("how long until the timer goes off", Kind::TimeLeft),
    ("how much longer", Kind::TimeLeft),
    ("how are my timers", Kind::TimeLeft),
    ("what timers are there", Kind::TimeLeft),
    ("cancel the timer", Kind::CancelTimer),
    ("cancel my timer", Kind::CancelTimer),
    ("cancel the {label} timer", Kind::CancelTimer),
    ("cancel timer", Kind::CancelTimer),
    ("stop the timer", Kind::CancelTimer),
    ("stop the {label} timer", Kind::CancelTimer),
    ("delete the timer", Kind::CancelTimer),
    ("stop", Kind::Stop),
    ("stop it", Kind::Stop),
    ("stop talking", Kind::Stop),
    ("cancel", Kind::Stop),
    ("cancel that", Kind::Stop),
    ("never mind", Kind::Stop),
    ("nevermind", Kind::Stop),
    ("forget it", Kind::Stop),
    ("be quiet", Kind::Stop),
    ("quiet", Kind::Stop),
    ("shush", Kind::Stop),
    ("enough", Kind::Stop),
    ("repeat that", Kind::Repeat),
    ("repeat", Kind::Repeat),
    ("say that again", Kind::Repeat),
    ("say it again", Kind::Repeat),
    ("what did you say", Kind::Repeat),
    ("come again", Kind::Repeat),
    ("pardon", Kind::Repeat),
    ("louder", Kind::Louder),
    ("speak up", Kind::Louder),
    ("speak louder", Kind::Louder),
    ("turn it up", Kind::Louder),
    ("volume up", Kind::Louder),
    ("quieter", Kind::Quieter),
    ("softer", Kind::Quieter),
    ("speak softer", Kind::Quieter),
    ("speak more quietly", Kind::Quieter),
    ("turn it down", Kind::Quieter),
    ("volume down", Kind::Quieter),
];

/// Words around a request that do not change it.
const POLITE_STARTS: &[&str] = &[
    "hey hark",
    "hark",
    "ok hark",
    "okay hark",
    "please",
    "can you",
    "could you",
    "would you",
    "can you please",
    "could you please",
    "i want you to",
    "i'd like you to",
    "would you please",
    "hey",
    "ok",
    "okay",
    "um",
    "uh",
    "so",
];

const POLITE_ENDS: &[&str] = &[
    "please",
    "for me",
    "hark",
    "now please",
    "thanks",
    "thank you",
];

/// Contractions Whisper writes, spelled out as the phrases are.
const CONTRACTIONS: &[(&str, &str)] = &[
    ("what's", "what is"),
    ("whats", "what is"),
    ("how's", "how is"),
    ("it's", "it is"),
    ("there's", "there is"),
    ("i'd", "i'd"),
];

/// The transcript as the phrases are written: lower case, words only.
fn clean(text: &str) -> Vec<String> {
    let lowered: String = text
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' || c == '.' || c == '-' {
                c
            } else {
                ' '
            }
        })
        .collect();
    let mut words = Vec::new();
    for word in lowered.split_whitespace() {
        let word = word.trim_matches(['.', '\'', '-']);
        if word.is_empty() {
            continue;
        }
        match CONTRACTIONS.iter().find(|(c, _)| *c == word) {
            Some((_, full)) => words.extend(full.split(' ').map(String::from)),
            None => words.push(word.to_owned()),
        }
    }
    strip_polite(words)
}

fn strip_polite(mut words: Vec<String>) -> Vec<String> {
    let mut changed = true;
    while changed {
        changed = false;
        for start in POLITE_STARTS {
            let n = start.split(' ').count();
            if words.len() > n && words[..n].join(" ") == *start {
                words.drain(..n);
                changed = true;
            }
        }
        for end in POLITE_ENDS {
            let n = end.split(' ').count();
            if words.len() > n && words[words.len() - n..].join(" ") == *end {
                words.truncate(words.len() - n);
                changed = true;
            }
        }
    }
    words
}

/// Matches `template` against all of `words`; the slots it filled.
fn matches(template: &str, words: &[&str]) -> Option<(Option<f64>, Option<String>)> {
    let parts: Vec<&str> = template.split(' ').collect();
    let mut seconds = None;
    let mut label = None;
    if fill(&parts, words, &mut seconds, &mut label) {
        Some((seconds, label))
    } else {
        None
    }
}

fn fill(
    parts: &[&str],
    words: &[&str],
    seconds: &mut Option<f64>,
    label: &mut Option<String>,
) -> bool {
    let Some((&part, rest)) = parts.split_first() else {
        return words.is_empty();
    };
    match part {
        "{duration}" => {
            let Some((secs, used)) = duration(words) else {
                return false;
            };
            // The duration may be followed by more of the template.
            if fill(rest, &words[used..], seconds, label) {
                *seconds = Some(secs);
                return true;
            }
            false
        }
        "{label}" => {
            // One or more words, as few as lets the rest match.
            for end in 1..=words.len() {
                if fill(rest, &words[end..], seconds, label) {
                    *label = Some(words[..end].join(" "));
                    return true;
                }
            }
            false
        }
        word => words.first() == Some(&word) && fill(rest, &words[1..], seconds, label),
    }
}

/// The intent `transcript` expresses, if a phrase claims it.
pub fn understand(transcript: &str) -> Option<Intent> {
    let words = clean(transcript);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    if words.is_empty() || words.len() > 16 {
        return None;
    }
    let found = PHRASES
        .iter()
        .find_map(|(template, kind)| Some((matches(template, &words)?, *kind)))
        .or_else(|| one_word_heard_loosely(&words).map(|kind| ((None, None), kind)));
    if let Some(((seconds, label), kind)) = found {
        let label: Option<String> = label
            .map(|l| {
                let l = l
                    .strip_prefix("the ")
                    .or_else(|| l.strip_prefix("my "))
                    .unwrap_or(&l);
                l.to_owned()
            })
            .filter(|l| !matches!(l.as_str(), "the" | "a" | "my"));
        return Some(match kind {
            Kind::Time => Intent::Time,
            Kind::Date => Intent::Date,
            Kind::SetTimer => Intent::SetTimer {
                seconds: seconds.unwrap_or(0.0),
                label,
            },
            Kind::TimeLeft => Intent::TimeLeft,
            Kind::CancelTimer => Intent::CancelTimer { label },
            Kind::Stop => Intent::Stop,
            Kind::Repeat => Intent::Repeat,
            Kind::Louder => Intent::Louder,
            Kind::Quieter => Intent::Quieter,
        });
    }
    None
}

/// Whisper hears a lone command word loosely ("quiter", "latter, louder"):
/// in an utterance of at most three words, a word one letter away from a
/// one-word phrase of five letters or more counts as that phrase.
fn one_word_heard_loosely(words: &[&str]) -> Option<Kind> {
    if words.len() > 3 {
        return None;
    }
    PHRASES
        .iter()
        .filter(|(template, _)| template.len() >= 5 && !template.contains(' '))
        .find(|(template, _)| words.iter().any(|w| edit_distance(w, template) <= 1))
        .map(|(_, kind)| *kind)
}

/// Levenshtein distance between two short words.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Whether `transcript`, said over Hark, means "stop talking" (so it
/// interrupts however short it is).
pub fn is_stop(transcript: &str) -> bool {
    matches!(understand(transcript), Some(Intent::Stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer(seconds: f64, label: Option<&str>) -> Option<Intent> {
        Some(Intent::SetTimer {
            seconds,
            label: label.map(String::from),
        })
    }

    #[test]
    fn everyday_requests_are_understood() {
        let cases = [
            ("What time is it?", Some(Intent::Time)),
            ("what's the time", Some(Intent::Time)),
            ("Hey Hark, what time is it now, please?", Some(Intent::Time)),
            ("What's the date today?", Some(Intent::Date)),
            ("What day is it?", Some(Intent::Date)),
            ("Set a timer for five minutes.", timer(300.0, None)),
            (
                "Set a timer for 90 seconds called tea.",
                timer(90.0, Some("tea")),
            ),
            ("Set a timer for an hour and a half.", timer(5400.0, None)),
            (
                "Could you set a pasta timer for ten minutes?",
                timer(600.0, Some("pasta")),
            ),
            (
                "Set a 3 minute timer for the eggs.",
                timer(180.0, Some("eggs")),
            ),
            ("Timer for half an hour", timer(1800.0, None)),
            ("How much time is left?", Some(Intent::TimeLeft)),
            (
                "Cancel the timer.",
                Some(Intent::CancelTimer { label: None }),
            ),
            (
                "Cancel the tea timer.",
                Some(Intent::CancelTimer {
                    label: Some("tea".into()),
                }),
            ),
            ("Stop.", Some(Intent::Stop)),
            ("Never mind.", Some(Intent::Stop)),
            ("Cancel!", Some(Intent::Stop)),
            ("Repeat that, please.", Some(Intent::Repeat)),
            ("Say that again?", Some(Intent::Repeat)),
            ("Louder.", Some(Intent::Louder)),
            ("Speak up!", Some(Intent::Louder)),
            ("Quieter, please.", Some(Intent::Quieter)),
            // Whisper on a lone word.
            ("Latter, louder.", Some(Intent::Louder)),
            ("Quiter. Qu", Some(Intent::Quieter)),
            ("Repeet", Some(Intent::Repeat)),
        ];
        for (said, intent) in cases {
            assert_eq!(understand(said), intent, "{said:?}");
        }
    }

    #[test]
    fn everything_else_goes_to_the_model() {
        for said in [
            "What is the capital of France?",
            "Tell me a story about a timer.",
            "Stop the war in my novel, how would you end it?",
            "What time does the bakery open?",
            "Set the table for five people.",
            "I need to stop smoking, any advice?",
            "",
            "...",
        ] {
            assert_eq!(understand(said), None, "{said:?}");
        }
    }

    #[test]
    fn absurd_and_empty_timers_are_still_understood_as_timers() {
        // The skill refuses them with a reason; they must not reach the model.
        assert_eq!(
            understand("Set a timer for a million years."),
            timer(31_557_600_000_000.0, None)
        );
        assert_eq!(understand("Set a timer for zero seconds"), timer(0.0, None));
    }

    #[test]
    fn stop_is_recognised_for_barge_in() {
        assert!(is_stop("Stop!"));
        assert!(is_stop("okay never mind"));
        assert!(!is_stop("stop and tell me about the sea"));
    }
}
