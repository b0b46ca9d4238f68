//! The machinery on a small two-section configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::*;

/// Denies unknown keys itself, like most sections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Audio {
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<String>,
    tail_ms: u32,
    gain: f64,
}

impl Default for Audio {
    fn default() -> Self {
        Self {
            device: None,
            tail_ms: 400,
            gain: 0.5,
        }
    }
}

/// Does not deny unknown keys (like `TurnConfig`): `serde_ignored` must
/// catch them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
struct Turn {
    mode: Mode,
    inner: Inner,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    #[default]
    Always,
    PushToTalk,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
struct Inner {
    min_words: usize,
    words: Vec<String>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            min_words: 2,
            words: (0..20).map(|i| format!("word{i}")).collect(),
        }
    }
}

impl Default for Turn {
    fn default() -> Self {
        Self {
            mode: Mode::Always,
            inner: Inner::default(),
        }
    }
}

impl Settings for Audio {
    fn validate(&self) -> Result<(), InvalidValue> {
        check_range("tail_ms", self.tail_ms, 50, 2_000)?;
        check_range("gain", self.gain, 0.0, 1.0)
    }
}

impl Section for Audio {
    const DOC: &'static str = "Microphone and speaker.";
    const KEYS: &'static [KeyDoc] = &[
        unset("device", "Capture device.", "\"default\""),
        doc("tail_ms", "Echo tail in ms. 50 to 2000."),
        doc("gain", "Gain, 0.0 to 1.0."),
    ];
}

impl Settings for Turn {
    fn validate(&self) -> Result<(), InvalidValue> {
        check_range("inner.min_words", self.inner.min_words, 1, 20)
    }
}

impl Section for Turn {
    const DOC: &'static str = "Turn-taking.";
    const TABLES: &'static [(&'static str, &'static str)] = &[("inner", "The inner rules.")];
    const KEYS: &'static [KeyDoc] = &[
        doc("mode", "When to listen."),
        doc("inner.min_words", "Fewest words. 1 to 20."),
        doc("inner.words", "Some words."),
    ];
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct App {
    audio: Audio,
    turn: Turn,
}

impl Settings for App {
    fn validate(&self) -> Result<(), InvalidValue> {
        self.audio.validate().map_err(|e| e.within("audio"))?;
        self.turn.validate().map_err(|e| e.within("turn"))
    }
}

fn docs() -> Docs {
    Docs::new()
        .section::<Audio>("audio")
        .section::<Turn>("turn")
}

fn err(text: &str) -> String {
    parse::<App>(text, "/path/config.toml")
        .unwrap_err()
        .to_string()
}

#[test]
fn values_are_read_and_missing_keys_keep_their_defaults() {
    let app: App = parse(
        "[audio]\ndevice = \"pulse\"\n\n[turn.inner]\nwords = [\"mhm\"]\n",
        "t",
    )
    .unwrap();
    assert_eq!(app.audio.device.as_deref(), Some("pulse"));
    assert_eq!(app.audio.tail_ms, 400);
    assert_eq!(app.turn.inner.words, ["mhm"]);
    assert_eq!(app.turn.inner.min_words, 2);
    assert_eq!(parse::<App>("", "empty").unwrap(), App::default());
}

#[test]
fn an_unknown_key_is_named_with_its_section_line_and_the_real_keys() {
    let e = err("[audio]\ntail_ms = 300\ntial_ms = 2\n");
    assert!(
        e.starts_with("unknown key audio.tial_ms in /path/config.toml line 3"),
        "{e}"
    );
    assert!(e.contains("tail_ms"), "suggests the real keys: {e}");
    let e = err("[audio]\ngain = 0.1\n\n[adio]\ngain = 0.1\n");
    assert!(
        e.starts_with("unknown key adio in /path/config.toml line 4"),
        "{e}"
    );
}

#[test]
fn an_unknown_key_in_dotted_or_inline_form_is_named() {
    let e = err("audio.tial = 1\n");
    assert!(
        e.starts_with("unknown key audio.tial in /path/config.toml line 1"),
        "{e}"
    );
    let e = err("\n\naudio = { tial = 300 }\n");
    assert!(
        e.starts_with("unknown key audio.tial in /path/config.toml line 3"),
        "{e}"
    );
}

#[test]
fn an_unknown_key_in_a_type_that_does_not_deny_them_is_named() {
    let e = err("[turn.inner]\nmin_words = 3\nmin_wrds = 2\n");
    assert_eq!(
        e,
        "unknown key turn.inner.min_wrds in /path/config.toml line 3"
    );
    let e = err("[turn]\nmoed = \"always\"\n");
    assert_eq!(e, "unknown key turn.moed in /path/config.toml line 2");
}

#[test]
fn out_of_range_values_name_the_key_the_range_and_the_line() {
    let e = err("[audio]\n\ntail_ms = 5\n");
    assert_eq!(
        e,
        "audio.tail_ms = 5 is out of range: must be between 50 and 2000 in /path/config.toml line 3"
    );
    let e = err("turn.inner.min_words = 0\n");
    assert!(
        e.starts_with("turn.inner.min_words = 0 is out of range"),
        "{e}"
    );
    assert!(e.ends_with("line 1"), "{e}");
}

#[test]
fn wrong_types_and_variants_name_the_key_and_line() {
    let e = err("[turn]\n\nmode = \"sometimes\"\n");
    assert!(
        e.starts_with("turn.mode in /path/config.toml line 3: unknown variant `sometimes`"),
        "{e}"
    );
    assert!(e.contains("push-to-talk"), "{e}");
    let e = err("[audio]\ntail_ms = \"3\"\n");
    assert!(
        e.starts_with("audio.tail_ms in /path/config.toml line 2: invalid type"),
        "{e}"
    );
    let e = err("[audio]\ntail_ms = -7\n");
    assert!(
        e.starts_with("audio.tail_ms in /path/config.toml line 2"),
        "{e}"
    );
    let e = err("audio = 3\n");
    assert!(e.starts_with("audio in /path/config.toml line 1"), "{e}");
}

#[test]
fn broken_toml_names_the_line() {
    let e = err("[audio]\ntail_ms = \n");
    assert!(
        e.starts_with("invalid TOML in /path/config.toml line 2"),
        "{e}"
    );
}

#[test]
fn command_line_settings_override_and_are_checked_like_a_file() {
    let set = |items: &[&str]| -> Result<App, String> {
        let overrides: Vec<Override> = items.iter().map(|i| i.parse().unwrap()).collect();
        with_overrides(App::default(), &overrides).map_err(|e| e.to_string())
    };
    let app = set(&[
        "audio.device=glasses mic",
        "turn.inner.min_words = 3",
        "turn.mode=push-to-talk",
    ])
    .unwrap();
    assert_eq!(app.audio.device.as_deref(), Some("glasses mic"));
    assert_eq!(app.turn.inner.min_words, 3);
    assert_eq!(app.turn.mode, Mode::PushToTalk);
    assert_eq!(set(&[]).unwrap(), App::default());
    // Later settings win.
    assert_eq!(
        set(&["audio.tail_ms=100", "audio.tail_ms=200"])
            .unwrap()
            .audio
            .tail_ms,
        200
    );

    let unknown = set(&["audio.volume=11"]).unwrap_err();
    assert!(unknown.contains("unknown key audio.volume"), "{unknown}");
    assert!(
        unknown.contains("command line") && !unknown.contains("line 1"),
        "{unknown}"
    );
    let range = set(&["audio.tail_ms=5"]).unwrap_err();
    assert!(range.contains("audio.tail_ms = 5"), "{range}");
    let kind = set(&["turn.mode=loud"]).unwrap_err();
    assert!(kind.contains("turn.mode"), "{kind}");
    let nested = set(&["audio.tail_ms.x=1"]).unwrap_err();
    assert!(nested.contains("audio.tail_ms is a value"), "{nested}");
    assert!("audio".parse::<Override>().is_err());
    assert!("audio..x=1".parse::<Override>().is_err());
}

#[test]
fn the_rendered_defaults_are_commented_and_parse_back() {
    let header = "# An app.\n";
    let text = render(&App::default(), header, &docs());
    assert!(text.starts_with(header));
    assert_eq!(parse::<App>(&text, "rendered").unwrap(), App::default());
    let written: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(written, toml::Table::try_from(App::default()).unwrap());
    assert!(
        text.contains("# Microphone and speaker.\n[audio]\n"),
        "{text}"
    );
    assert!(
        text.contains("# Capture device.\n# device = \"default\"\n"),
        "{text}"
    );
    assert!(
        text.contains("# The inner rules.\n[turn.inner]\n"),
        "{text}"
    );
    assert!(text.contains("gain = 0.5\n"), "{text}");
    for line in text.lines() {
        assert!(line.len() <= 80, "line too long: {line}");
    }
    assert_eq!(undocumented(&App::default(), &docs()), Vec::<String>::new());
}

#[test]
fn missing_and_stale_comments_are_reported() {
    let partial = Docs::new().section::<Audio>("audio");
    let problems = undocumented(&App::default(), &partial);
    assert!(
        problems.contains(&"key turn.mode has no comment".to_owned()),
        "{problems:?}"
    );
    assert!(
        problems.contains(&"table [turn.inner] has no comment".to_owned()),
        "{problems:?}"
    );
    let misplaced = Docs::new()
        .section::<Audio>("turn")
        .section::<Turn>("audio");
    let problems = undocumented(&App::default(), &misplaced);
    assert!(
        problems.contains(&"turn.gain is documented but is not a key".to_owned()),
        "{problems:?}"
    );
}

#[test]
fn search_order_follows_xdg() {
    let name = "app/config.toml";
    let paths = search_paths_from(
        name,
        Some("/x/conf".into()),
        Some("/home/u".into()),
        Some("/a:relative:/b".into()),
    );
    assert_eq!(
        paths,
        [
            PathBuf::from("/x/conf/app/config.toml"),
            PathBuf::from("/a/app/config.toml"),
            PathBuf::from("/b/app/config.toml"),
        ]
    );
    let paths = search_paths_from(name, Some("".into()), Some("/home/u".into()), None);
    assert_eq!(
        paths,
        [
            PathBuf::from("/home/u/.config/app/config.toml"),
            PathBuf::from("/etc/xdg/app/config.toml"),
        ]
    );
    let paths = search_paths_from(name, Some("rel".into()), None, None);
    assert_eq!(paths, [PathBuf::from("/etc/xdg/app/config.toml")]);
}

#[test]
fn loading_takes_the_explicit_file_else_the_first_that_exists() {
    let dir = tempfile::tempdir().unwrap();
    let user = dir.path().join("user/config.toml");
    let system = dir.path().join("system/config.toml");
    std::fs::create_dir_all(system.parent().unwrap()).unwrap();
    std::fs::write(&system, "[audio]\ndevice = \"system\"\n").unwrap();
    let searched = [user.clone(), system.clone()];
    let device = |loaded: Loaded<App>| loaded.config.audio.device.unwrap_or_default();

    let loaded = load::<App>(None, &searched).unwrap();
    assert_eq!(loaded.source, ConfigSource::File(system.clone()));
    assert_eq!(device(loaded), "system");

    std::fs::create_dir_all(user.parent().unwrap()).unwrap();
    std::fs::write(&user, "[audio]\ndevice = \"user\"\n").unwrap();
    assert_eq!(device(load(None, &searched).unwrap()), "user");

    let explicit = dir.path().join("explicit.toml");
    std::fs::write(&explicit, "[audio]\ndevice = \"explicit\"\n").unwrap();
    assert_eq!(
        device(load(Some(&explicit), &searched).unwrap()),
        "explicit"
    );

    let loaded = load::<App>(None, &[dir.path().join("none.toml")]).unwrap();
    assert_eq!(loaded.config, App::default());
    assert!(matches!(loaded.source, ConfigSource::Defaults { .. }));
    assert_eq!(loaded.source.to_string(), "built-in defaults");

    let missing = dir.path().join("nope.toml");
    let e = load::<App>(Some(&missing), &[]).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("cannot read config file {}", missing.display())),
        "{e}"
    );
    std::fs::write(&explicit, "[audio]\ntial_ms = 2\n").unwrap();
    let e = load::<App>(Some(&explicit), &[]).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "unknown key audio.tial_ms in {} line 2",
            explicit.display()
        )),
        "{e}"
    );
}
