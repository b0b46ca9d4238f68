//! `hark daemon`: the conversation on the configured devices, served on the
//! session bus, in the foreground (systemd runs it as `Type=notify`).
//!
//! ```text
//!  main thread: tokio (current thread) ── zbus: dev.hark.Hark1 ── commands ─┐
//!        ▲   signals, properties ◀── pump_signals ◀── SessionEvent ◀─┐     │
//!        │                                                          │       ▼
//!  "hark-core": run_session (the conversation core and its workers) ◀─ inbox
//! ```
//!
//! Beside it, on the same connection: `dev.hark.Speech.Provider`
//! (`speech_provider.rs`, desktop apps' speech, apart from the core) and,
//! with `[desktop] notify`, a task that shows timers and errors as desktop
//! notifications (`desktop.rs`).
//!
//! Start-up order: the configuration is checked, the object is served and
//! the bus name taken (so a second daemon fails at once), then the devices
//! open and the models load; READY=1 goes to systemd only when the core
//! runs. SIGTERM and SIGINT let the current reply finish, then stop.

use std::path::PathBuf;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Args;
use hark_config::Override;
use hark_converse::turn::State;
use hark_session::{
    run_session, Command, CoreInput, EventLog, Heartbeat, Input, ListenMode, Output, SessionEvent,
    SessionSetup,
};

use crate::args::SessionArgs;
use crate::config::HarkConfig;
use crate::lent::LentVoice;
use crate::service::{own_name, pump_signals, HarkService, Mirror, BUS_NAME, OBJECT_PATH};
use crate::speech_provider::{PROVIDER_NAME, PROVIDER_PATH};
use crate::Globals;

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Also write every conversation event to this file (JSON lines).
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,

    /// When to listen: always, push-to-talk or off (daemon.mode).
    #[arg(long, value_name = "MODE", value_parser = ListenMode::NAMES)]
    pub mode: Option<String>,

    #[command(flatten)]
    pub session: SessionArgs,
}

impl DaemonArgs {
    /// The flags as configuration overrides, applied after the `--set`s.
    fn overrides(&self) -> Vec<Override> {
        let mut overrides = self.session.overrides();
        overrides.extend(crate::args::mode_override(self.mode.as_deref()));
        overrides
    }
}

pub fn run(args: DaemonArgs, globals: &Globals) -> anyhow::Result<()> {
    let store = globals.store()?;
    // `Reload` applies the same command line again over the re-read file.
    let overrides = globals.overrides(&args.overrides());
    let loaded = crate::config::load(globals.config_file.as_deref(), &overrides)?;
    tracing::info!(config = %loaded.source, "configuration loaded");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let reload = Reload {
        config_file: globals.config_file.clone(),
        overrides,
        store: store.clone(),
        file_mode: Arc::new(Mutex::new(loaded.config.daemon.mode)),
    };
    runtime.block_on(serve(loaded.config, args.events, reload, store))
}

/// How `Reload` finds the configuration again.
#[derive(Debug, Clone)]
pub struct Reload {
    pub config_file: Option<PathBuf>,
    pub overrides: Vec<Override>,
    /// Where the model files it checks are.
    pub store: hark_models::store::ModelStore,
    /// The mode the file (and command line) said when last read: a mode
    /// chosen over D-Bus is kept by `Reload` unless the file's changed.
    pub file_mode: Arc<Mutex<ListenMode>>,
}

async fn serve(
    config: HarkConfig,
    events: Option<PathBuf>,
    reload: Reload,
    store: hark_models::store::ModelStore,
) -> anyhow::Result<()> {
    // Calls made while the models load wait on this for the core's inbox.
    let (inbox_tx, inbox) = tokio::sync::watch::channel::<Option<SyncSender<CoreInput>>>(None);
    let first_state = if config.daemon.mode == ListenMode::Always {
        State::Listening
    } else {
        State::Idle
    };
    let mirror = Arc::new(Mutex::new(Mirror {
        state: None,
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
        models: config.model_names(),
        last_turn_latency_ms: 0,
        timers: Vec::new(),
    }));

    // The object is served before the name is requested, so nobody who
    // sees the name can find the object missing.
    let service = HarkService::new(inbox.clone(), mirror.clone(), reload);
    let connection = zbus::connection::Builder::session()
        .serve_at(OBJECT_PATH, service)
        .build()
        .await
        .context("cannot connect to the D-Bus session bus (is DBUS_SESSION_BUS_ADDRESS set?)")?;
    if !own_name(&connection, BUS_NAME).await? {
        anyhow::bail!(
            "{BUS_NAME} is already taken on the session bus: another Hark daemon is running"
        );
    }
    tracing::info!(
        name = BUS_NAME,
        path = OBJECT_PATH,
        "serving on the session bus"
    );
    // Hark's voice for other programs: one copy, loaded when first asked.
    let lent = Arc::new(LentVoice::new(&config.voice, &store));
    if config.desktop.speech_provider {
        match crate::speech_provider::serve(&connection, lent.clone()).await {
            Ok(()) => tracing::info!(
                name = PROVIDER_NAME,
                path = PROVIDER_PATH,
                "lending Hark's voice to desktop apps (speech provider)"
            ),
            // Another provider by that name (`hark speech-provider`): the
            // daemon runs on without.
            Err(e) => tracing::error!("no speech provider: {e:#}"),
        }
    }
    // Home Assistant's way in; a port that cannot be had is logged, and
    // the daemon serves D-Bus all the same.
    let _wyoming = config.wyoming.listen.as_deref().and_then(|listen| {
        crate::wyoming::start(listen, &config, &store, lent, Some(inbox.clone()))
            .map_err(|e| tracing::error!("{e:#}"))
            .ok()
    });
    // Desktop notifications read the same events as the signals, on a
    // task of their own.
    let notes_tx = config.desktop.notify.then(|| {
        let (notes_tx, notes_rx) = tokio::sync::mpsc::unbounded_channel::<SessionEvent>();
        tokio::spawn(crate::desktop::notify_events(connection.clone(), notes_rx));
        notes_tx
    });

    let (published_tx, published_rx) = tokio::sync::mpsc::unbounded_channel::<SessionEvent>();
    let pump = tokio::spawn(pump_signals(
        connection.clone(),
        mirror.clone(),
        published_rx,
        config.hud,
    ));

    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let ready_mirror = mirror.clone();
    let mut setup = SessionSetup::new(
        config.session(),
        Input::Switched(Default::default()),
        Output::Speaker,
    );
    // Timers and the volume outlive the daemon.
    let state_file = crate::config::state_file();
    tracing::info!(state = ?state_file, "skills state");
    setup.skills = Some(config.skills(state_file));
    setup.tools = config.tools.clone();
    // Tests make the engines panic on chosen calls (see the README).
    if let Some(spec) = std::env::var_os("HARK_INJECT_PANIC") {
        setup.faults = hark_session::guard::Faults::parse(&spec.to_string_lossy())
            .map_err(|e| anyhow::anyhow!("HARK_INJECT_PANIC: {e}"))?;
    }
    // The D-Bus signals and systemd's status line follow the events; the
    // pump runs on the async runtime, so the core only queues for it.
    setup
        .subscribers
        .push(Box::new(move |_: u64, event: &SessionEvent| {
            if let SessionEvent::State { to, .. } = event {
                let _ = crate::notify::status(hark_session::events::state_name(*to));
            }
            if crate::service::is_published(event) {
                let _ = published_tx.send(event.clone());
            }
            if let Some(notes) = &notes_tx {
                if crate::desktop::is_notified(event) {
                    let _ = notes.send(event.clone());
                }
            }
        }));
    if let Some(path) = &events {
        setup.subscribers.push(Box::new(EventLog::create(path)?));
    }
    setup.heartbeat = crate::notify::watchdog_interval().map(|every| Heartbeat {
        every,
        beat: Box::new(|| {
            let _ = crate::notify::watchdog();
        }),
    });
    setup.on_ready = Some(Box::new(move |sender| {
        // Before the core runs, so no state it reports can be overwritten.
        ready_mirror.lock().unwrap_or_else(|p| p.into_inner()).state = Some(first_state);
        inbox_tx.send_replace(Some(sender));
        let _ = ready_tx.send(());
    }));
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("hark-core".into())
        .spawn(move || {
            let outcome = run_session(setup, || {
                // Loading takes seconds; on a slow disk more than systemd's
                // default.
                let _ = crate::notify::extend_timeout(std::time::Duration::from_secs(120));
                Ok(crate::models::session(&config, &store)?)
            });
            let _ = done_tx.send(outcome.map(|_| ()).map_err(anyhow::Error::from));
        })
        .context("cannot start the conversation thread")?;

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    tokio::select! {
        ready = ready_rx => {
            if ready.is_ok() {
                tracing::info!("ready: listening");
                crate::service::announce_ready(&connection).await;
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
        if let Some(inbox) = inbox.borrow().as_ref() {
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
