//! `hark daemon`: the conversation on the configured devices, served on the
//! session bus, in the foreground (systemd runs it as `Type=notify`).
//!
//! ```text
//!  main thread: tokio (current thread) ── zbus: dev.hark.Hark1 ── commands ─┐
//!        ▲   signals, properties ◀── pump_signals ◀── Published ◀──┐       │
//!        │                                                          │       ▼
//!  "hark-core": run_session (the conversation core and its workers) ◀─ inbox
//! ```
//!
//! Start-up order: the configuration is checked, the object is served and
//! the bus name taken (so a second daemon fails at once), then the devices
//! open and the models load; READY=1 goes to systemd only when the core
//! runs. SIGTERM and SIGINT let the current reply finish, then stop.

use std::path::PathBuf;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context;
use clap::Args;
use hark_converse::turn::State;
use hark_models::store::ModelStore;

use crate::config::{self, HarkConfig, Mode};
use crate::converse::core::{Command, CoreInput, Published, StopRules};
use crate::converse::{self, Input, Models, Output, SessionSetup};
use crate::service::{pump_signals, HarkService, Mirror, BUS_NAME, OBJECT_PATH};
use crate::speak::{load_voice, OutputArgs};

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Configuration file (default: $XDG_CONFIG_HOME/hark/config.toml, then
    /// /etc/xdg/hark/config.toml, then built-in defaults).
    #[arg(long, value_name = "FILE", env = "HARK_CONFIG")]
    pub config: Option<PathBuf>,

    /// Also write every conversation event to this file (JSON lines).
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,

    /// Microphone to listen on (overrides audio.input_device).
    #[arg(long, value_name = "NAME")]
    pub input_device: Option<String>,

    /// Speaker to talk on (overrides audio.output_device).
    #[arg(long, value_name = "NAME")]
    pub output_device: Option<String>,

    /// When to listen: always, push-to-talk or off (overrides daemon.mode).
    #[arg(long, value_name = "MODE")]
    pub mode: Option<String>,

    /// Override any configuration key for this run, e.g.
    /// `--set conversation.barge_in.min_words=3` (repeatable; keys as in
    /// `hark config default`). Applied after the file and after the flags
    /// above; `Reload` keeps them.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub settings: Vec<config::Override>,
}

impl DaemonArgs {
    /// The flags as configuration overrides, in the order they apply.
    fn overrides(&self) -> Vec<config::Override> {
        let flags = [
            ("audio.input_device", &self.input_device),
            ("audio.output_device", &self.output_device),
            ("daemon.mode", &self.mode),
        ];
        flags
            .into_iter()
            .filter_map(|(key, value)| Some(config::Override::new(key, value.clone()?)))
            .chain(self.settings.iter().cloned())
            .collect()
    }
}

pub fn run(args: DaemonArgs, store: &ModelStore) -> anyhow::Result<()> {
    let loaded = config::load_with(args.config.as_deref(), &args.overrides())?;
    tracing::info!(config = %loaded.source, "configuration loaded");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(loaded.config, args, store.clone()))
}

fn model_names(config: &HarkConfig) -> Vec<String> {
    vec![
        format!("stt:{}", config.stt.model),
        format!("llm:{}", config.llm.model),
        format!("voice:{}", config.voice.voice),
    ]
}

async fn serve(config: HarkConfig, args: DaemonArgs, store: ModelStore) -> anyhow::Result<()> {
    let inbox: Arc<OnceLock<SyncSender<CoreInput>>> = Arc::new(OnceLock::new());
    let mirror = Arc::new(Mutex::new(Mirror {
        state: if config.daemon.mode == Mode::Always {
            State::Listening
        } else {
            State::Idle
        },
        mode: config.daemon.mode,
        muted: false,
        input_device: config
            .audio
            .input_device
            .clone()
            .unwrap_or_else(|| "default".into()),
        output_device: config
            .audio
            .output_device
            .clone()
            .unwrap_or_else(|| "default".into()),
        models: model_names(&config),
        last_turn_latency_ms: 0,
    }));

    // The object is served before the name is requested, so nobody who
    // sees the name can find the object missing.
    let service = HarkService::new(
        inbox.clone(),
        mirror.clone(),
        args.config.clone(),
        args.overrides(),
    );
    let connection = zbus::connection::Builder::session()
        .serve_at(OBJECT_PATH, service)
        .build()
        .await
        .context("cannot connect to the D-Bus session bus (is DBUS_SESSION_BUS_ADDRESS set?)")?;
    let reply = connection
        .request_name_with_flags(BUS_NAME, zbus::fdo::RequestNameFlags::DO_NOT_QUEUE)
        .await
        .with_context(|| format!("cannot request the name {BUS_NAME}"))?;
    if reply != zbus::fdo::RequestNameReply::PrimaryOwner {
        anyhow::bail!(
            "{BUS_NAME} is already taken on the session bus: another Hark daemon is running"
        );
    }
    tracing::info!(
        name = BUS_NAME,
        path = OBJECT_PATH,
        "serving on the session bus"
    );

    let (published_tx, published_rx) = tokio::sync::mpsc::unbounded_channel::<Published>();
    let pump = tokio::spawn(pump_signals(
        connection.clone(),
        mirror.clone(),
        published_rx,
    ));

    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let ready_inbox = inbox.clone();
    let setup = session_setup(&config, args.events, published_tx, move |sender| {
        let _ = ready_inbox.set(sender);
        let _ = ready_tx.send(());
    })?;
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    let load_config = config.clone();
    std::thread::Builder::new()
        .name("hark-core".into())
        .spawn(move || {
            let outcome = converse::run_session(setup, &store, |s| load_models(&load_config, s));
            let _ = done_tx.send(outcome.map(|_| ()));
        })
        .context("cannot start the conversation thread")?;

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    tokio::select! {
        ready = ready_rx => {
            if ready.is_ok() {
                tracing::info!("ready: listening");
                let _ = crate::notify::ready();
                let _ = crate::notify::status("listening");
            }
        }
        done = &mut done_rx => {
            return done.unwrap_or_else(|_| Err(anyhow::anyhow!("the conversation thread died")));
        }
    }

    let stop = |why: &str| {
        tracing::info!("{why}: finishing the current reply, then stopping");
        let _ = crate::notify::stopping();
        if let Some(inbox) = inbox.get() {
            let _ = inbox.try_send(CoreInput::Command(Command::Stop));
        }
    };
    let result = tokio::select! {
        done = &mut done_rx => done.unwrap_or_else(|_| Err(anyhow::anyhow!("the conversation thread died"))),
        _ = terminate.recv() => {
            stop("SIGTERM");
            done_rx.await.unwrap_or(Ok(()))
        }
        _ = tokio::signal::ctrl_c() => {
            stop("interrupted");
            done_rx.await.unwrap_or(Ok(()))
        }
    };
    pump.abort();
    result
}

/// The conversation as the configuration describes it, on devices.
fn session_setup(
    config: &HarkConfig,
    events: Option<PathBuf>,
    published: tokio::sync::mpsc::UnboundedSender<Published>,
    on_ready: impl FnOnce(SyncSender<CoreInput>) + Send + 'static,
) -> anyhow::Result<SessionSetup> {
    let vad = config.vad.to_vad_config();
    vad.validate().context("invalid [vad] configuration")?;
    Ok(SessionSetup {
        input: Input::Switched {
            microphone: config.audio.input_device.clone(),
            switch: Default::default(),
        },
        output: Output::Device(config.audio.output_device.clone()),
        events,
        vad,
        turn: config.conversation.clone(),
        echo_tail_ms: config
            .audio
            .echo_cancellation
            .then_some(config.audio.echo_tail_ms),
        partial_every_ms: (config.stt.partial_every_ms > 0).then_some(config.stt.partial_every_ms),
        rules: StopRules::default(),
        print_turns: false,
        mode: config.daemon.mode,
        publish: Some(Box::new(move |event: Published| {
            if let Published::State(state) = &event {
                let _ = crate::notify::status(crate::converse::core::state_name(*state));
            }
            let _ = published.send(event);
        })),
        on_ready: Some(Box::new(on_ready)),
    })
}

fn load_models(config: &HarkConfig, store: &ModelStore) -> anyhow::Result<Models> {
    // Loading takes seconds; on a slow disk more than systemd's default.
    let _ = crate::notify::extend_timeout(std::time::Duration::from_secs(120));
    let voice = OutputArgs {
        output: None,
        output_device: config.audio.output_device.clone(),
        voice: config.voice.voice.clone(),
    };
    Ok(Models {
        whisper: crate::stt_setup::load_whisper_with(
            &config.stt.model,
            config.stt.to_stt_config(),
            store,
        )?,
        llm: crate::ask::load_llm(&config.llm.model, config.llm.to_llm_config(), store)?,
        voice: load_voice(&voice, store)?,
    })
}
