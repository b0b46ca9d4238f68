//! Numbers and durations as people say them (and as Whisper writes them):
//! "five", "ninety", "twenty five", "a hundred and twenty", "90", "1.5",
//! "two and a half", "an hour and a half", "half an hour", "1 hour 30
//! minutes", "ninety seconds".

use std::time::Duration;

const UNITS: &[(&str, u64)] = &[
    ("zero", 0),
    ("one", 1),
    ("two", 2),
    ("three", 3),
    ("four", 4),
    ("five", 5),
    ("six", 6),
    ("seven", 7),
    ("eight", 8),
    ("nine", 9),
    ("ten", 10),
    ("eleven", 11),
    ("twelve", 12),
    ("thirteen", 13),
    ("fourteen", 14),
    ("fifteen", 15),
    ("sixteen", 16),
    ("seventeen", 17),
    ("eighteen", 18),
    ("nineteen", 19),
    ("twenty", 20),
    ("thirty", 30),
    ("forty", 40),
    ("fifty", 50),
    ("sixty", 60),
    ("seventy", 70),
    ("eighty", 80),
    ("ninety", 90),
];

const SCALES: &[(&str, u64)] = &[
    ("hundred", 100),
    ("thousand", 1_000),
    ("million", 1_000_000),
    ("billion", 1_000_000_000),
];

/// Seconds in each unit of time, by the words for it.
const TIME_UNITS: &[(&[&str], f64)] = &[
    (&["second", "seconds", "sec", "secs", "s"], 1.0),
    (&["minute", "minutes", "min", "mins"], 60.0),
    (&["hour", "hours", "hr", "hrs", "h"], 3600.0),
    (&["day", "days"], 86_400.0),
    (&["week", "weeks"], 604_800.0),
    (&["month", "months"], 2_629_800.0),
    (&["year", "years"], 31_557_600.0),
];

/// A number starting at `words[0]`: its value and how many words it took.
pub fn number(words: &[&str]) -> Option<(f64, usize)> {
    let first = *words.first()?;
    if let Ok(value) = first.parse::<f64>() {
        if value.is_finite() {
            // "2 and a half"
            return Some(with_half(value, 1, words));
        }
    }
    if matches!(first, "a" | "an") {
        // "a hundred", "a minute" (one), "a half"
        return match words.get(1) {
            Some(&"half") => Some((0.5, 2)),
            Some(w) if SCALES.iter().any(|(s, _)| s == w) => {
                let (value, used) = spelled(&words[1..], 1)?;
                Some(with_half(value, used + 1, words))
            }
            _ => Some((1.0, 1)),
        };
    }
    if first == "half" {
        return Some((0.5, 1));
    }
    let (value, used) = spelled(words, 0)?;
    Some(with_half(value, used, words))
}

/// `value` plus "and a half" if that follows at `used`.
fn with_half(value: f64, used: usize, words: &[&str]) -> (f64, usize) {
    if words.get(used..used + 3) == Some(&["and", "a", "half"]) {
        (value + 0.5, used + 3)
    } else {
        (value, used)
    }
}

/// A number in words: "twenty five", "one hundred and twenty", "three
/// thousand". `implied`: a leading value already given ("a" in "a
/// hundred").
fn spelled(words: &[&str], implied: u64) -> Option<(f64, usize)> {
    let mut total = 0u64;
    let mut current = implied;
    let mut used = 0;
    let mut any = implied > 0;
    while let Some(&word) = words.get(used) {
        let word = word.trim_end_matches('-');
        if let Some((_, n)) = UNITS.iter().find(|(w, _)| *w == word) {
            current += n;
        } else if let Some((_, scale)) = SCALES.iter().find(|(w, _)| *w == word) {
            current = current.max(1) * scale;
            if *scale >= 1000 {
                total += current;
                current = 0;
            }
        } else if let Some((tens, unit)) = word.split_once('-') {
            // "twenty-five"
            let tens = UNITS.iter().find(|(w, _)| *w == tens)?.1;
            let unit = UNITS.iter().find(|(w, _)| *w == unit)?.1;
            current += tens + unit;
        } else if word == "and" && any && words.get(used + 1).is_some_and(|w| is_number_word(w)) {
            // "one hundred and twenty"
        } else {
            break;
        }
        any = true;
        used += 1;
    }
    (any && used > 0).then_some(((total + current) as f64, used))
}

fn is_number_word(word: &str) -> bool {
    UNITS.iter().any(|(w, _)| *w == word) || word.contains('-')
}

fn time_unit(word: &str) -> Option<f64> {
    TIME_UNITS
        .iter()
        .find(|(names, _)| names.contains(&word))
        .map(|(_, secs)| *secs)
}

/// A duration at the start of `words` ("an hour and a half", "5 minutes
/// and 30 seconds", "half an hour", "90 seconds"): its seconds and how many
/// words it took.
pub fn duration(words: &[&str]) -> Option<(f64, usize)> {
    let mut total = 0.0;
    let mut used = 0;
    loop {
        let rest = &words[used..];
        // "half an hour"
        let part = if rest.first() == Some(&"half") && matches!(rest.get(1), Some(&"an" | &"a")) {
            time_unit(rest.get(2)?).map(|secs| (secs / 2.0, 3))
        } else {
            number(rest).and_then(|(value, n)| {
                let secs = time_unit(rest.get(n)?)?;
                // "an hour and a half": the half comes after the unit.
                let half = rest.get(n + 1..n + 4) == Some(&["and", "a", "half"]);
                let value = if half { value + 0.5 } else { value };
                Some((value * secs, n + 1 + if half { 3 } else { 0 }))
            })
        };
        let Some((secs, n)) = part else { break };
        total += secs;
        used += n;
        // "5 minutes and 30 seconds", "1 hour 30 minutes"
        if words.get(used) == Some(&"and") && duration(&words[used + 1..]).is_some() {
            used += 1;
        }
    }
    (used > 0).then_some((total, used))
}

/// `secs` as words for speech: "5 minutes", "1 hour and 30 minutes",
/// "1 minute and 5 seconds".
pub fn say_duration(duration: Duration) -> String {
    let mut secs = duration.as_secs() + u64::from(duration.subsec_millis() >= 500);
    let mut parts = Vec::new();
    for (name, size) in [
        ("day", 86_400),
        ("hour", 3600),
        ("minute", 60),
        ("second", 1),
    ] {
        let n = secs / size;
        secs %= size;
        if n > 0 {
            parts.push(format!("{n} {name}{}", if n == 1 { "" } else { "s" }));
        }
    }
    match parts.len() {
        0 => "0 seconds".into(),
        1 => parts.remove(0),
        _ => {
            let last = parts.pop().unwrap_or_default();
            format!("{} and {last}", parts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<&str> {
        text.split_whitespace().collect()
    }

    #[test]
    fn numbers_in_words_and_digits() {
        for (text, value, used) in [
            ("five minutes", 5.0, 1),
            ("ninety seconds", 90.0, 1),
            ("twenty five", 25.0, 2),
            ("twenty-five", 25.0, 1),
            ("one hundred and twenty", 120.0, 4),
            ("a hundred", 100.0, 2),
            ("three thousand two hundred", 3200.0, 4),
            ("a million years", 1_000_000.0, 2),
            ("90", 90.0, 1),
            ("1.5 hours", 1.5, 1),
            ("two and a half", 2.5, 4),
            ("an hour", 1.0, 1),
            ("half", 0.5, 1),
        ] {
            assert_eq!(number(&words(text)), Some((value, used)), "{text}");
        }
        assert_eq!(number(&words("tea")), None);
        assert_eq!(number(&words("and five")), None);
    }

    #[test]
    fn durations_as_people_say_them() {
        for (text, secs, used) in [
            ("five minutes", 300.0, 2),
            ("90 seconds called tea", 90.0, 2),
            ("an hour and a half", 5400.0, 5),
            ("half an hour", 1800.0, 3),
            ("one and a half minutes", 90.0, 5),
            ("5 minutes and 30 seconds", 330.0, 5),
            ("1 hour 30 minutes", 5400.0, 4),
            ("a minute", 60.0, 2),
            ("two hours", 7200.0, 2),
            ("10 min", 600.0, 2),
            ("a million years", 31_557_600_000_000.0, 3),
        ] {
            assert_eq!(duration(&words(text)), Some((secs, used)), "{text}");
        }
        assert_eq!(duration(&words("five")), None, "a number without a unit");
        assert_eq!(duration(&words("the tea")), None);
    }

    #[test]
    fn durations_are_spoken_back() {
        assert_eq!(say_duration(Duration::from_secs(300)), "5 minutes");
        assert_eq!(
            say_duration(Duration::from_secs(90)),
            "1 minute and 30 seconds"
        );
        assert_eq!(
            say_duration(Duration::from_secs(5400)),
            "1 hour and 30 minutes"
        );
        assert_eq!(
            say_duration(Duration::from_secs(3661)),
            "1 hour, 1 minute and 1 second"
        );
        assert_eq!(say_duration(Duration::from_millis(400)), "0 seconds");
        assert_eq!(say_duration(Duration::from_millis(59_600)), "1 minute");
    }
}
