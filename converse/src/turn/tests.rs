//! Scripted timelines: each test feeds timed events and checks the actions,
//! the states passed through and the history.

use super::*;
use Event::*;

/// The default rule with the pause put off to 300 ms, so these timelines
/// can show the stages one by one; `pausing_at_onset` covers the default.
fn config() -> TurnConfig {
    let mut config = TurnConfig::default();
    config.barge_in.pause_after_ms = 300;
    config
}

fn t(at_ms: u64, event: Event) -> (u64, Event) {
    (at_ms, event)
}

fn heard(utterance: UtteranceId, text: &str) -> Event {
    Transcript {
        utterance,
        text: text.to_owned(),
    }
}

/// A partial transcript of the speech in progress.
fn so_far(text: &str) -> Event {
    PartialTranscript {
        text: text.to_owned(),
    }
}

fn token(reply: ReplyId, text: &str) -> Event {
    ReplyToken {
        reply,
        text: text.to_owned(),
    }
}

fn synthesized(clause: ClauseId) -> Event {
    ClauseSynthesized { clause }
}

fn started(clause: ClauseId) -> Event {
    PlaybackStarted { clause }
}

fn progress(clause: ClauseId, played_fraction: f32) -> Event {
    PlaybackProgress {
        clause,
        played_fraction,
    }
}

fn finished(clause: ClauseId) -> Event {
    PlaybackFinished { clause }
}

fn run(conv: &mut Conversation, script: impl IntoIterator<Item = (u64, Event)>) -> Vec<Action> {
    script
        .into_iter()
        .flat_map(|(at_ms, event)| conv.handle(at_ms, event))
        .collect()
}

/// The actions for the caller to carry out, without the notices.
fn commands(actions: &[Action]) -> Vec<Action> {
    actions
        .iter()
        .filter(|a| !matches!(a, Action::Emit(_)))
        .cloned()
        .collect()
}

fn notices(actions: &[Action]) -> Vec<Notice> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Emit(notice) => Some(notice.clone()),
            _ => None,
        })
        .collect()
}

/// The states entered, in order.
fn states(actions: &[Action]) -> Vec<State> {
    notices(actions)
        .into_iter()
        .filter_map(|n| match n {
            Notice::StateChanged { to, .. } => Some(to),
            _ => None,
        })
        .collect()
}

fn synth(clause: ClauseId, text: &str) -> Action {
    Action::Synthesize {
        clause,
        text: text.to_owned(),
    }
}

fn play(clause: ClauseId) -> Action {
    Action::Play { clause }
}

fn user(text: &str) -> (Role, String, bool) {
    (Role::User, text.to_owned(), false)
}

fn assistant(text: &str, interrupted: bool) -> (Role, String, bool) {
    (Role::Assistant, text.to_owned(), interrupted)
}

fn history(conv: &Conversation) -> Vec<(Role, String, bool)> {
    conv.history()
        .iter()
        .map(|turn| (turn.role, turn.text.clone(), turn.interrupted))
        .collect()
}

fn interruption(actions: &[Action]) -> Option<(String, InterruptCause)> {
    notices(actions).into_iter().find_map(|n| match n {
        Notice::Interrupted { spoken_part, cause } => Some((spoken_part, cause)),
        _ => None,
    })
}

fn turn_finished(actions: &[Action]) -> Option<(String, bool, TurnTimings)> {
    notices(actions).into_iter().find_map(|n| match n {
        Notice::TurnFinished {
            text,
            interrupted,
            timings,
            ..
        } => Some((text, interrupted, timings)),
        _ => None,
    })
}

/// The user asks for a story (utterance 1, 0–1200 ms); reply 1 starts at
/// 1500 and by 2300 clause 1 has been played and clause 2 is playing. Clause
/// 3 is cut but not synthesized and the generation is still running.
fn storytelling() -> Conversation {
    let mut conv = Conversation::new(config());
    run(
        &mut conv,
        [
            t(0, SpeechStarted),
            t(1200, SpeechEnded),
            t(1500, heard(1, "Tell me a story.")),
            t(
                1600,
                token(
                    1,
                    "Once upon a time, there was a fox. It lived in a forest. ",
                ),
            ),
            t(1700, synthesized(1)),
            t(1750, started(1)),
            t(1800, synthesized(2)),
            t(2300, finished(1)),
            t(2300, started(2)),
            t(2400, token(1, "Every day it ran to")),
        ],
    );
    assert_eq!(conv.state(), State::Speaking);
    conv
}

#[test]
fn a_normal_turn_end_to_end() {
    let mut conv = Conversation::new(config());
    let actions = run(
        &mut conv,
        [
            t(0, SpeechStarted),
            t(1200, SpeechEnded),
            t(1500, heard(1, " What time is it?")),
            t(1600, token(1, "It is")),
            t(1650, token(1, " half past three, so")),
            t(1700, token(1, " you still have time. Enjoy")),
            // Synthesized out of order: playback still follows clause order.
            t(1800, synthesized(2)),
            t(1850, token(1, " your afternoon!")),
            t(1900, ReplyFinished { reply: 1 }),
            t(1950, synthesized(1)),
            t(2000, started(1)),
            t(2100, synthesized(3)),
            t(3000, finished(1)),
            t(3000, started(2)),
            t(4200, finished(2)),
            t(4200, started(3)),
            t(5000, finished(3)),
        ],
    );

    assert_eq!(
        states(&actions),
        [
            State::UserSpeaking,
            State::Thinking,
            State::Speaking,
            State::Listening
        ]
    );
    let expected = [
        Action::Transcribe { utterance: 1 },
        Action::StartGeneration {
            reply: 1,
            history: vec![Turn {
                role: Role::User,
                text: "What time is it?".into(),
                at_ms: 1500,
                interrupted: false,
            }],
        },
        synth(1, "It is half past three,"),
        synth(2, "so you still have time."),
        synth(3, "Enjoy your afternoon!"),
        play(1),
        play(2),
        play(3),
    ];
    assert_eq!(commands(&actions), expected);
    assert_eq!(
        history(&conv),
        [
            user("What time is it?"),
            assistant(
                "It is half past three, so you still have time. Enjoy your afternoon!",
                false
            )
        ]
    );

    let (text, interrupted, timings) = turn_finished(&actions).unwrap();
    assert_eq!(text, conv.history()[1].text);
    assert!(!interrupted);
    assert_eq!(
        timings,
        TurnTimings {
            speech_ended_ms: Some(1200),
            transcript_ms: Some(1500),
            generation_started_ms: Some(1500),
            first_token_ms: Some(1600),
            first_clause_ms: Some(1650),
            first_synthesized_ms: Some(1800),
            first_playback_ms: Some(2000),
            finished_ms: 5000,
        }
    );
    assert_eq!(timings.voice_to_voice_ms(), Some(800));
}

#[test]
fn synthesis_is_pipelined_with_playback() {
    let mut conv = Conversation::new(config());
    let actions = run(
        &mut conv,
        [
            t(
                0,
                Say {
                    text: "One two three, four. Five six.".into(),
                },
            ),
            t(100, synthesized(1)),
            t(150, started(1)),
        ],
    );
    // Clause 2 is being synthesized while clause 1 plays.
    assert_eq!(
        commands(&actions),
        [
            synth(1, "One two three,"),
            synth(2, "four."),
            synth(3, "Five six."),
            play(1)
        ]
    );
    let actions = run(&mut conv, [t(300, synthesized(3)), t(400, synthesized(2))]);
    assert_eq!(commands(&actions), [play(2), play(3)]);
}

#[test]
fn barge_in_one_second_into_a_long_reply_stops_and_keeps_only_the_played_part() {
    let mut conv = storytelling();
    // The user starts talking 1 s after Hark's voice started (1750 ms).
    let actions = run(&mut conv, [t(2750, SpeechStarted), t(2900, Tick)]);
    assert!(
        commands(&actions).is_empty(),
        "nothing happens before 300 ms"
    );

    let actions = run(&mut conv, [t(3050, Tick)]);
    assert_eq!(commands(&actions), [Action::PausePlayback]);
    assert_eq!(notices(&actions), [Notice::BargeInSuspected]);
    // The player reports where it paused: "there was| a fox."
    let actions = run(
        &mut conv,
        [
            t(3060, progress(2, 0.6)),
            t(3400, Tick),
            t(3600, so_far("Hold on,")),
        ],
    );
    assert!(actions.is_empty());

    let actions = run(&mut conv, [t(3750, Tick)]);
    assert_eq!(
        commands(&actions),
        [
            Action::FlushPlayback,
            Action::CancelSynthesis,
            Action::CancelGeneration { reply: 1 }
        ]
    );
    assert_eq!(
        interruption(&actions),
        Some((
            "Once upon a time, there was".into(),
            InterruptCause::SustainedSpeech
        ))
    );
    assert_eq!(states(&actions), [State::UserSpeaking]);
    let (text, interrupted, timings) = turn_finished(&actions).unwrap();
    assert_eq!(text, "Once upon a time, there was");
    assert!(interrupted);
    assert_eq!(timings.first_playback_ms, Some(1750));
    assert_eq!(
        history(&conv),
        [
            user("Tell me a story."),
            assistant("Once upon a time, there was", true)
        ]
    );

    // Late news from the cancelled jobs changes nothing.
    let late = run(
        &mut conv,
        [
            t(3760, finished(2)),
            t(3770, token(1, " the river.")),
            t(3780, synthesized(3)),
            t(3790, ReplyFinished { reply: 1 }),
        ],
    );
    assert!(late.is_empty());

    // The interrupting utterance is the next user turn.
    let actions = run(
        &mut conv,
        [
            t(4400, SpeechEnded),
            t(4700, heard(2, "Wait, make it about a cat.")),
        ],
    );
    assert_eq!(states(&actions), [State::Thinking]);
    let Action::StartGeneration { reply, history } = &commands(&actions)[1] else {
        panic!("{actions:?}");
    };
    assert_eq!(*reply, 2);
    assert_eq!(history.len(), 3);
    assert_eq!(history[2].text, "Wait, make it about a cat.");
    assert_eq!(history[1].text, "Once upon a time, there was");
    assert!(history[1].interrupted);
}

#[test]
fn a_short_utterance_with_real_words_interrupts_once_transcribed() {
    let mut conv = storytelling();
    let actions = run(
        &mut conv,
        [
            t(2750, SpeechStarted),
            t(3050, Tick),
            t(3060, progress(2, 0.2)),
            t(3350, SpeechEnded),
        ],
    );
    assert_eq!(
        commands(&actions),
        [Action::PausePlayback, Action::Transcribe { utterance: 2 }]
    );
    assert_eq!(conv.state(), State::Speaking, "held, not yet interrupted");

    let actions = run(&mut conv, [t(3600, heard(2, "No, stop that."))]);
    assert_eq!(
        commands(&actions),
        [
            Action::FlushPlayback,
            Action::CancelSynthesis,
            Action::CancelGeneration { reply: 1 },
            Action::StartGeneration {
                reply: 2,
                history: conv.history().to_vec()
            }
        ]
    );
    assert_eq!(
        interruption(&actions),
        Some(("Once upon a time,".into(), InterruptCause::Words))
    );
    assert_eq!(states(&actions), [State::Thinking]);
    assert_eq!(
        history(&conv),
        [
            user("Tell me a story."),
            assistant("Once upon a time,", true),
            user("No, stop that.")
        ]
    );
    let timings = run(&mut conv, [t(3700, Interrupt)]);
    assert_eq!(
        turn_finished(&timings).unwrap().2.speech_ended_ms,
        Some(3350)
    );
}

#[test]
fn a_cough_during_speaking_does_not_interrupt() {
    let mut conv = storytelling();
    let actions = run(
        &mut conv,
        [
            t(2750, SpeechStarted),
            t(2850, Tick),
            t(2950, SpeechEnded),
            // One the VAD itself throws away.
            t(3000, SpeechStarted),
            t(3100, SpeechDiscarded),
        ],
    );
    assert!(commands(&actions).is_empty());
    assert_eq!(
        notices(&actions),
        [
            Notice::BargeInDismissed {
                reason: Dismissal::TooShort { speech_ms: 200 }
            },
            Notice::BargeInDismissed {
                reason: Dismissal::TooShort { speech_ms: 100 }
            }
        ]
    );
    assert_eq!(conv.state(), State::Speaking);

    let actions = run(
        &mut conv,
        [
            t(3200, finished(2)),
            t(3300, ReplyFinished { reply: 1 }),
            t(3400, synthesized(3)),
            t(3500, synthesized(4)),
            t(4000, finished(3)),
            t(4500, finished(4)),
        ],
    );
    assert_eq!(
        commands(&actions),
        [synth(4, "Every day it ran to"), play(3), play(4)]
    );
    assert_eq!(interruption(&actions), None);
    assert_eq!(
        history(&conv),
        [
            user("Tell me a story."),
            assistant(
                "Once upon a time, there was a fox. It lived in a forest. Every day it ran to",
                false
            )
        ]
    );
    assert_eq!(conv.state(), State::Listening);
}

#[test]
fn a_backchannel_pauses_briefly_then_hark_carries_on() {
    let mut conv = storytelling();
    let actions = run(
        &mut conv,
        [
            t(2750, SpeechStarted),
            t(3050, Tick),
            t(3250, SpeechEnded),
            t(3300, synthesized(3)), // arrives while holding: not played yet
            t(3400, heard(2, "Mhm.")),
        ],
    );
    assert_eq!(
        commands(&actions),
        [
            Action::PausePlayback,
            Action::Transcribe { utterance: 2 },
            Action::ResumePlayback,
            play(3)
        ]
    );
    assert!(notices(&actions).contains(&Notice::BargeInDismissed {
        reason: Dismissal::NotAnInterruption {
            transcript: "Mhm.".into()
        }
    }));
    assert_eq!(interruption(&actions), None);
    assert!(states(&actions).is_empty());

    run(
        &mut conv,
        [
            t(3500, finished(2)),
            t(3600, ReplyFinished { reply: 1 }),
            t(3700, synthesized(4)),
            t(4000, finished(3)),
            t(4500, finished(4)),
        ],
    );
    let history = history(&conv);
    assert_eq!(history.len(), 2, "no user turn for \"Mhm\": {history:?}");
    assert_eq!(history[1].0, Role::Assistant);
    assert!(!history[1].2);
}

#[test]
fn the_words_rule() {
    let rule = BargeInRule::default();
    for not_an_interruption in [
        "Mhm.",
        "Okay, okay.",
        "Uh-huh, yeah.",
        "I see.",
        "No.",
        "",
        "[BLANK_AUDIO]",
        "(coughs) yeah",
        // A few words trailing off: Whisper's reading of a noise or a "mhm".
        "and then,",
        "the term,",
        "and they can...",
    ] {
        assert!(
            !rule.transcript_interrupts(not_an_interruption),
            "{not_an_interruption:?}"
        );
    }
    for interruption in [
        "No, stop.",
        "Okay, but what about cats?",
        "Wait a second",
        "but that people asked to...",
    ] {
        assert!(rule.transcript_interrupts(interruption), "{interruption:?}");
    }
}

#[test]
fn explicit_interrupt_always_stops() {
    let mut conv = storytelling();
    let actions = run(&mut conv, [t(2500, progress(2, 1.0)), t(2600, Interrupt)]);
    assert_eq!(
        commands(&actions),
        [
            Action::FlushPlayback,
            Action::CancelSynthesis,
            Action::CancelGeneration { reply: 1 }
        ]
    );
    assert_eq!(
        interruption(&actions),
        Some((
            "Once upon a time, there was a fox.".into(),
            InterruptCause::Command
        ))
    );
    assert_eq!(states(&actions), [State::Listening]);
    assert_eq!(
        history(&conv)[1],
        assistant("Once upon a time, there was a fox.", true)
    );
    assert!(
        run(&mut conv, [t(2700, Interrupt)]).is_empty(),
        "nothing left to stop"
    );
}

#[test]
fn a_backchannel_whose_turn_end_is_pending_is_not_sustained_speech() {
    let mut conv = storytelling();
    // "mhm" from 2750 to 3400 ms; the end of its turn is still being
    // decided (Smart Turn) 1 s after it started.
    let actions = run(
        &mut conv,
        [
            t(2750, SpeechStarted),
            t(3400, SpeechPaused),
            t(3750, Tick),
            t(3900, Tick),
        ],
    );
    assert_eq!(interruption(&actions), None, "{actions:?}");
    // Its words decide: a backchannel, and Hark goes on.
    let actions = run(&mut conv, [t(4000, SpeechEnded)]);
    assert_eq!(commands(&actions), [Action::Transcribe { utterance: 2 }]);
    let actions = run(&mut conv, [t(4100, heard(2, "Mhm."))]);
    assert_eq!(commands(&actions), [Action::ResumePlayback]);
    assert_eq!(interruption(&actions), None);

    // Speech that goes on after its pause is sustained again.
    let actions = run(
        &mut conv,
        [
            t(5000, SpeechStarted),
            t(5400, SpeechPaused),
            t(5800, SpeechResumed),
            t(5900, so_far("Well, actually")),
            t(6050, Tick),
        ],
    );
    assert_eq!(
        interruption(&actions).map(|(_, cause)| cause),
        Some(InterruptCause::SustainedSpeech)
    );
}

#[test]
fn sustained_sound_over_hark_without_words_is_judged_when_it_ends() {
    let mut conv = storytelling();
    // A second and a half of hiss, which the VAD takes for speech: Hark
    // holds at its onset, and Whisper finds no words in it (a bracketed
    // annotation, or backchannels only, are no words).
    let actions = run(
        &mut conv,
        [
            t(2750, SpeechStarted),
            t(3600, so_far("(static)")),
            t(3750, Tick),
            t(4200, so_far("Mhm, yeah.")),
            t(4250, Tick),
        ],
    );
    assert_eq!(commands(&actions), [Action::PausePlayback]);
    assert_eq!(interruption(&actions), None, "{actions:?}");
    // It ends, is transcribed like a short utterance, and Hark goes on.
    let actions = run(&mut conv, [t(4300, SpeechEnded), t(4400, heard(2, ""))]);
    assert_eq!(
        commands(&actions),
        [Action::Transcribe { utterance: 2 }, Action::ResumePlayback]
    );
    assert_eq!(interruption(&actions), None);

    // Words of an earlier speech do not carry over to the next sound...
    let actions = run(
        &mut conv,
        [
            t(5000, SpeechStarted),
            t(5900, so_far("Wait a")),
            t(6000, SpeechEnded),
            t(6100, heard(3, "Bang.")),
            t(6500, SpeechStarted),
            t(7600, Tick),
        ],
    );
    assert_eq!(interruption(&actions), None, "{actions:?}");
    // ...and one that goes on long enough interrupts even without words.
    let actions = run(&mut conv, [t(9400, Tick), t(9500, Tick)]);
    assert_eq!(
        interruption(&actions).map(|(_, cause)| cause),
        Some(InterruptCause::SustainedSpeech)
    );
}

#[test]
fn words_are_not_needed_when_commit_without_words_is_at_most_commit_speech() {
    let mut config = config();
    config.barge_in.commit_without_words_ms = 0;
    let mut conv = Conversation::new(config);
    let actions = run(
        &mut conv,
        [
            t(0, SpeechStarted),
            t(800, SpeechEnded),
            t(1000, heard(1, "Tell me a joke")),
            t(1100, token(1, "Why did the chicken")),
            t(1200, SpeechStarted),
            t(2200, Tick),
        ],
    );
    assert_eq!(
        interruption(&actions),
        Some((String::new(), InterruptCause::SustainedSpeech))
    );
}

#[test]
fn barge_in_before_anything_is_played_joins_the_users_words() {
    let mut conv = Conversation::new(config());
    let actions = run(
        &mut conv,
        [
            t(0, SpeechStarted),
            t(800, SpeechEnded),
            t(1000, heard(1, "Tell me a joke")),
            t(1100, SpeechStarted),
            t(1100, token(1, "Why did the chicken")),
            t(2000, so_far("About")),
            t(2100, Tick),
        ],
    );
    assert_eq!(
        commands(&actions)[2..],
        [Action::CancelGeneration { reply: 1 }]
    );
    assert_eq!(
        interruption(&actions),
        Some((String::new(), InterruptCause::SustainedSpeech))
    );

    let actions = run(
        &mut conv,
        [t(2500, SpeechEnded), t(2800, heard(2, "about cats."))],
    );
    assert!(matches!(
        &commands(&actions)[1],
        Action::StartGeneration { reply: 2, .. }
    ));
    // Nothing was said, so no assistant turn; roles still alternate.
    assert_eq!(history(&conv), [user("Tell me a joke about cats.")]);
}

#[test]
fn speaking_again_before_the_transcript_arrives_continues_the_turn() {
    let mut conv = Conversation::new(config());
    let actions = run(
        &mut conv,
        [
            t(0, SpeechStarted),
            t(800, SpeechEnded),
            t(1000, SpeechStarted),
            t(1100, heard(1, "What's the weather")),
            t(1900, SpeechEnded),
            t(2200, heard(2, "in Paris tomorrow?")),
        ],
    );
    assert_eq!(
        states(&actions),
        [
            State::UserSpeaking,
            State::Thinking,
            State::UserSpeaking,
            State::Thinking
        ]
    );
    assert!(notices(&actions).contains(&Notice::UserTurn {
        text: "What's the weather in Paris tomorrow?".into()
    }));
    assert_eq!(
        commands(&actions).len(),
        3,
        "two transcriptions, one generation"
    );
}

#[test]
fn say_speaks_without_the_llm_and_is_recorded() {
    let mut conv = Conversation::new(config());
    let actions = run(
        &mut conv,
        [
            t(
                0,
                Say {
                    text: "Your timer is done. The tea is ready.".into(),
                },
            ),
            t(200, synthesized(1)),
            t(250, synthesized(2)),
            t(1500, finished(1)),
            t(2500, finished(2)),
        ],
    );
    assert_eq!(
        commands(&actions),
        [
            synth(1, "Your timer is done."),
            synth(2, "The tea is ready."),
            play(1),
            play(2)
        ]
    );
    assert_eq!(
        states(&actions),
        [State::Thinking, State::Speaking, State::Listening]
    );
    assert_eq!(
        history(&conv),
        [assistant("Your timer is done. The tea is ready.", false)]
    );
    let timings = turn_finished(&actions).unwrap().2;
    assert_eq!(timings.generation_started_ms, None);
    assert_eq!(timings.voice_to_voice_ms(), None);
}

#[test]
fn say_replaces_a_reply_in_progress() {
    let mut conv = storytelling();
    let actions = run(
        &mut conv,
        [t(
            2500,
            Say {
                text: "Timer done.".into(),
            },
        )],
    );
    assert_eq!(
        commands(&actions),
        [
            Action::FlushPlayback,
            Action::CancelSynthesis,
            Action::CancelGeneration { reply: 1 },
            synth(4, "Timer done.")
        ]
    );
    assert_eq!(interruption(&actions).unwrap().1, InterruptCause::Command);
}

#[test]
fn ask_answers_text_as_if_spoken() {
    let mut conv = Conversation::new(config());
    let actions = run(
        &mut conv,
        [t(
            10,
            Ask {
                text: "What is 2+2?".into(),
            },
        )],
    );
    assert_eq!(
        commands(&actions),
        [Action::StartGeneration {
            reply: 1,
            history: conv.history().to_vec()
        }]
    );
    assert_eq!(history(&conv), [user("What is 2+2?")]);
    assert_eq!(conv.state(), State::Thinking);
}

#[test]
fn an_empty_transcript_returns_to_listening() {
    let mut conv = Conversation::new(config());
    for (utterance, text) in [(1, ""), (2, " [BLANK_AUDIO] ")] {
        let at = utterance * 10_000;
        let actions = run(
            &mut conv,
            [
                t(at, SpeechStarted),
                t(at + 700, SpeechEnded),
                t(at + 900, heard(utterance, text)),
            ],
        );
        assert_eq!(commands(&actions), [Action::Transcribe { utterance }]);
        assert!(notices(&actions).contains(&Notice::NothingHeard));
        assert_eq!(
            states(&actions),
            [State::UserSpeaking, State::Thinking, State::Listening]
        );
    }
    assert!(history(&conv).is_empty());
}

#[test]
fn muted_ignores_speech() {
    let mut conv = Conversation::new(config());
    let actions = run(
        &mut conv,
        [
            t(0, SpeechStarted),
            t(100, SetMuted(true)),
            t(500, SpeechEnded),
            t(600, SpeechStarted),
            t(1600, SpeechEnded),
            t(1700, heard(1, "late transcript")),
        ],
    );
    assert!(commands(&actions).is_empty());
    assert_eq!(states(&actions), [State::UserSpeaking, State::Idle]);

    let actions = run(
        &mut conv,
        [
            t(2000, SetMuted(false)),
            t(2100, SpeechEnded), // its start was never heard
            t(3000, SpeechStarted),
            t(3500, SpeechEnded),
        ],
    );
    assert_eq!(commands(&actions), [Action::Transcribe { utterance: 1 }]);
    assert_eq!(
        states(&actions),
        [State::Listening, State::UserSpeaking, State::Thinking]
    );
}

#[test]
fn an_empty_reply_is_answered_with_the_fallback() {
    let mut conv = Conversation::new(config());
    let actions = run(
        &mut conv,
        [
            t(0, Ask { text: "Hm?".into() }),
            t(100, token(1, " ** ")),
            t(200, ReplyFinished { reply: 1 }),
            t(300, synthesized(1)),
            t(350, synthesized(2)),
            t(1500, finished(1)),
            t(2500, finished(2)),
        ],
    );
    assert!(notices(&actions).contains(&Notice::FallbackReply));
    assert_eq!(
        commands(&actions)[1..],
        [
            synth(1, "Sorry, I have no"),
            synth(2, "answer to that."),
            play(1),
            play(2)
        ]
    );
    assert_eq!(
        history(&conv),
        [
            user("Hm?"),
            assistant("Sorry, I have no answer to that.", false)
        ]
    );

    let mut silent = Conversation::new(TurnConfig {
        fallback_reply: String::new(),
        ..config()
    });
    let actions = run(
        &mut silent,
        [
            t(0, Ask { text: "Hm?".into() }),
            t(200, ReplyFinished { reply: 1 }),
        ],
    );
    assert_eq!(commands(&actions).len(), 1);
    assert_eq!(silent.state(), State::Listening);
}

#[test]
fn a_clause_that_fails_to_synthesize_is_skipped() {
    let mut conv = Conversation::new(config());
    let actions = run(
        &mut conv,
        [
            t(
                0,
                Say {
                    text: "First one. Second one. Third one.".into(),
                },
            ),
            t(100, synthesized(1)),
            t(150, SynthesisFailed { clause: 2 }),
            t(200, synthesized(3)),
            t(1000, finished(1)),
            t(2000, finished(3)),
        ],
    );
    assert_eq!(commands(&actions)[3..], [play(1), play(3)]);
    assert_eq!(history(&conv), [assistant("First one. Third one.", false)]);
}

#[test]
fn barge_in_can_be_switched_off() {
    let mut conv = Conversation::new(TurnConfig {
        barge_in: BargeInRule {
            enabled: false,
            ..config().barge_in
        },
        ..config()
    });
    run(
        &mut conv,
        [
            t(
                0,
                Say {
                    text: "A long announcement.".into(),
                },
            ),
            t(10, synthesized(1)),
        ],
    );
    let actions = run(
        &mut conv,
        [
            t(100, SpeechStarted),
            t(2000, Tick),
            t(2500, SpeechEnded),
            t(2600, Tick),
        ],
    );
    assert!(actions.is_empty());
    assert_eq!(conv.state(), State::Speaking);
}

#[test]
fn heard_prefix_keeps_whole_words_only() {
    let text = "there was a fox.";
    assert_eq!(heard_prefix(text, 0.0), "");
    assert_eq!(heard_prefix(text, 0.2), "");
    assert_eq!(heard_prefix(text, 0.32), "there");
    assert_eq!(heard_prefix(text, 0.5), "there");
    assert_eq!(heard_prefix(text, 0.6), "there was");
    assert_eq!(heard_prefix(text, 0.99), "there was a");
    assert_eq!(heard_prefix(text, 1.0), text);
    assert_eq!(heard_prefix("día también", 0.5), "día");
}

#[test]
fn pausing_at_onset_silences_hark_at_once_and_a_cough_only_pauses() {
    let mut conv = storytelling();
    conv.config.barge_in.pause_after_ms = 0;
    let actions = run(&mut conv, [t(2750, SpeechStarted)]);
    assert_eq!(commands(&actions), [Action::PausePlayback]);
    assert_eq!(notices(&actions), [Notice::BargeInSuspected]);

    // A 150 ms cough: dismissed, never transcribed, Hark carries on.
    let actions = run(&mut conv, [t(2900, SpeechEnded)]);
    assert_eq!(commands(&actions), [Action::ResumePlayback]);
    assert_eq!(
        notices(&actions),
        [Notice::BargeInDismissed {
            reason: Dismissal::TooShort { speech_ms: 150 }
        }]
    );
    assert_eq!(conv.state(), State::Speaking);
}

#[test]
fn hark_hearing_its_own_words_is_not_an_interruption() {
    let mut conv = storytelling();
    let actions = run(
        &mut conv,
        [
            t(2750, SpeechStarted),
            t(3050, Tick),
            t(3250, SpeechEnded),
            // Echo that got past the canceller: Hark's own words.
            t(3400, heard(2, "there was a fox")),
        ],
    );
    assert_eq!(interruption(&actions), None);
    assert!(notices(&actions).contains(&Notice::BargeInDismissed {
        reason: Dismissal::Echo {
            transcript: "there was a fox".into()
        }
    }));
    assert!(commands(&actions).contains(&Action::ResumePlayback));

    // A real interruption that repeats one of Hark's words still counts.
    let actions = run(
        &mut conv,
        [
            t(3500, SpeechStarted),
            t(3850, Tick),
            t(4050, SpeechEnded),
            t(4200, heard(3, "No, not a fox, a wolf please")),
        ],
    );
    assert!(interruption(&actions).is_some());
}

#[test]
fn the_echo_rule() {
    let rule = BargeInRule::default();
    let reply = "The capital of France is Paris.";
    assert!(rule.is_echo("Paris.", reply));
    assert!(rule.is_echo("the capital,", reply));
    assert!(rule.is_echo("capital of France is", reply));
    assert!(!rule.is_echo("what about Spain then", reply));
    // Words like "the" and "an" are in every reply: they alone are no echo.
    let story = "The history of the city is an old tale. It begins on the river.";
    assert!(!rule.is_echo("the Anjo instead. The An", story));
    assert!(rule.is_echo("the history of the city", story));
    assert!(rule.is_echo("It is an", story));
    assert!(rule.is_echo("the sky is blew", "The sky is blue."));
    assert!(!rule.is_echo("", reply));
    let off = BargeInRule {
        echo_overlap_percent: 101,
        ..BargeInRule::default()
    };
    assert!(!off.is_echo("the capital of France", reply));
}

#[test]
fn clearing_history_keeps_the_reply_in_progress() {
    let mut conv = storytelling();
    conv.clear_history();
    assert!(conv.history().is_empty());
    run(&mut conv, [t(2500, Interrupt)]);
    assert_eq!(history(&conv), [assistant("Once upon a time,", true)]);
}

#[test]
fn a_withdrawn_reply_says_nothing_and_history_forgets_the_request() {
    let mut conv = storytelling();
    // Talked over with "never mind": stopped, then the words become a turn
    // whose reply is withdrawn.
    run(&mut conv, [t(2500, Interrupt)]);
    let actions = run(
        &mut conv,
        [
            t(2600, SpeechStarted),
            t(3100, SpeechEnded),
            t(3300, heard(2, "Never mind.")),
        ],
    );
    let reply = actions
        .iter()
        .find_map(|a| match a {
            Action::StartGeneration { reply, .. } => Some(*reply),
            _ => None,
        })
        .expect("the words are a turn");
    assert_eq!(history(&conv).last(), Some(&user("Never mind.")));
    let actions = run(&mut conv, [t(3310, Withdraw { reply })]);
    assert!(commands(&actions).contains(&Action::CancelGeneration { reply }));
    assert_eq!(
        turn_finished(&actions).map(|(text, i, _)| (text, i)),
        Some((String::new(), false))
    );
    assert!(!notices(&actions)
        .iter()
        .any(|n| matches!(n, Notice::FallbackReply)));
    assert_eq!(
        history(&conv),
        [
            user("Tell me a story."),
            assistant("Once upon a time,", true),
        ]
    );
    assert_eq!(conv.state(), State::Listening);
    // A stale withdraw is ignored.
    assert!(run(&mut conv, [t(3400, Withdraw { reply })]).is_empty());
}

#[test]
fn withdrawing_a_turn_joined_to_an_unanswered_one_keeps_the_first_part() {
    let mut conv = Conversation::new(config());
    run(
        &mut conv,
        [
            t(0, SpeechStarted),
            t(800, SpeechEnded),
            t(900, heard(1, "Tell me")),
            t(1000, ReplyFinished { reply: 1 }),
        ],
    );
    let before = history(&conv);
    let actions = run(
        &mut conv,
        [t(
            5000,
            Ask {
                text: "stop".into(),
            },
        )],
    );
    let reply = actions
        .iter()
        .find_map(|a| match a {
            Action::StartGeneration { reply, .. } => Some(*reply),
            _ => None,
        })
        .unwrap();
    run(&mut conv, [t(5001, Withdraw { reply })]);
    assert_eq!(history(&conv), before);
}
