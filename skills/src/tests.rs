//! Skills on a fixed clock and time zone.

use super::*;

/// 2026-12-03 15:45:00 UTC.
const NOW: u64 = 1_796_312_700_000;

fn skills() -> Skills {
    let (mut skills, problem) = Skills::new(SkillsConfig::default(), None);
    assert!(problem.is_none());
    skills.set_time_zone(jiff::tz::TimeZone::UTC);
    skills
}

fn say(skills: &mut Skills, text: &str) -> Option<String> {
    skills
        .answer(text, NOW, Some("Paris is the capital of France."))
        .and_then(|a| a.say)
}

#[test]
fn time_and_date_are_told_exactly() {
    let mut s = skills();
    assert_eq!(
        say(&mut s, "What time is it?").as_deref(),
        Some("It's 3:45 PM.")
    );
    assert_eq!(
        say(&mut s, "What's the date today?").as_deref(),
        Some("Today is Thursday, December 3, 2026.")
    );
    assert_eq!(s.answer("What is the capital of France?", NOW, None), None);
}

#[test]
fn timers_are_set_listed_and_cancelled_by_voice() {
    let mut s = skills();
    assert_eq!(
        say(&mut s, "Set a timer for five minutes.").as_deref(),
        Some("Timer set for 5 minutes.")
    );
    let answer = s
        .answer("Set a timer for 90 seconds called tea", NOW, None)
        .unwrap();
    assert_eq!(
        answer.say.as_deref(),
        Some("Tea timer set for 1 minute and 30 seconds.")
    );
    assert!(answer.timers_changed);
    assert_eq!(s.timers().len(), 2);
    assert_eq!(s.timers()[0].label, "tea", "sorted by when they go off");
    let later = NOW + 30_000;
    assert_eq!(
        s.answer("How much time is left?", later, None)
            .unwrap()
            .say
            .as_deref(),
        Some("1 minute left on the tea timer, and 4 minutes and 30 seconds left on the timer.")
    );
    assert_eq!(
        say(&mut s, "Cancel the tea timer.").as_deref(),
        Some("The tea timer is cancelled.")
    );
    assert_eq!(
        say(&mut s, "Cancel the tea timer.").as_deref(),
        Some("There is no tea timer.")
    );
    assert_eq!(
        say(&mut s, "Cancel the timer.").as_deref(),
        Some("The timer is cancelled.")
    );
    assert_eq!(
        say(&mut s, "Cancel the timer").as_deref(),
        Some("There are no timers.")
    );
}

#[test]
fn absurd_timers_are_refused_with_a_reason() {
    let mut s = skills();
    assert_eq!(
        say(&mut s, "Set a timer for a million years.").as_deref(),
        Some("I can only set timers of up to 1 day.")
    );
    assert_eq!(
        say(&mut s, "Set a timer for zero seconds.").as_deref(),
        Some("A timer needs a length of at least a second, like five minutes.")
    );
    assert!(s.set_timer(-5.0, "x", NOW).is_err());
    assert!(s.set_timer(f64::NAN, "x", NOW).is_err());
    for _ in 0..MAX_TIMERS {
        s.set_timer(60.0, "", NOW).unwrap();
    }
    assert!(s
        .set_timer(60.0, "", NOW)
        .unwrap_err()
        .contains("already 20 timers"));
    assert!(s.timers().len() == MAX_TIMERS);
}

#[test]
fn due_timers_fire_once_and_say_their_label() {
    let mut s = skills();
    let tea = s.set_timer(90.0, "tea", NOW).unwrap();
    let eggs = s.set_timer(300.0, "", NOW).unwrap();
    assert!(s.due(NOW + 89_000).is_empty());
    assert_eq!(s.due(NOW + 90_000), [tea.clone()]);
    assert!(s.due(NOW + 91_000).is_empty(), "fired once");
    assert_eq!(timer_done(&tea), "Your tea timer is done.");
    assert_eq!(timer_done(&eggs), "Your 5 minutes timer is done.");
    assert_eq!(s.cancel_timer(&eggs.id).unwrap(), eggs);
    assert!(s.cancel_timer("t99").is_err());
}

#[test]
fn stop_repeat_and_volume() {
    let mut s = skills();
    let stop = s.answer("Never mind.", NOW, Some("x")).unwrap();
    assert_eq!(stop.say, None, "stop says nothing");
    assert_eq!(
        say(&mut s, "Repeat that.").as_deref(),
        Some("Paris is the capital of France.")
    );
    assert_eq!(
        s.answer("Say that again", NOW, None)
            .unwrap()
            .say
            .as_deref(),
        Some("I haven't said anything yet.")
    );
    let louder = s.answer("Louder", NOW, None).unwrap();
    assert!(louder.gain.unwrap() > 1.0);
    s.answer("louder", NOW, None);
    let at_max = s.answer("louder", NOW, None).unwrap();
    assert_eq!(at_max.say.as_deref(), Some("That's as loud as I go."));
    assert_eq!(at_max.gain, None);
    assert!((s.output_gain() - MAX_GAIN).abs() < 1e-3);
    for _ in 0..6 {
        s.answer("quieter", NOW, None);
    }
    assert!((s.output_gain() - MIN_GAIN).abs() < 1e-3);
}

#[test]
fn disabled_skills_claim_nothing() {
    let (mut s, _) = Skills::new(
        SkillsConfig {
            enabled: false,
            ..SkillsConfig::default()
        },
        None,
    );
    assert_eq!(s.answer("What time is it?", NOW, None), None);
}

#[test]
fn timers_and_gain_survive_a_restart_in_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hark/state.json");
    let (mut s, _) = Skills::new(SkillsConfig::default(), Some(path.clone()));
    let tea = s.set_timer(90.0, "tea", NOW).unwrap();
    s.answer("quieter", NOW, None);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);

    let (mut again, problem) = Skills::new(SkillsConfig::default(), Some(path.clone()));
    assert!(problem.is_none());
    assert_eq!(again.timers(), [tea]);
    assert!(again.output_gain() < 1.0);
    // New ids never repeat old ones.
    let next = again.set_timer(60.0, "", NOW).unwrap();
    assert_eq!(next.id, "t2");

    std::fs::write(&path, "{ not json").unwrap();
    let (fresh, problem) = Skills::new(SkillsConfig::default(), Some(path.clone()));
    assert!(problem.unwrap().to_string().contains("is not valid"));
    assert!(fresh.timers().is_empty());
}
