//! Sound devices through cpal (the ALSA host on Linux, which also reaches
//! PulseAudio/PipeWire through their ALSA plugins).
//!
//! Capture ([`DeviceSource`]) and playback ([`DevicePlayer`]) share one
//! shape:
//!
//! * the device callback only copies samples into (or out of) a preallocated
//!   [`ring`](crate::ring) and bumps atomic counters — no allocation, lock,
//!   log or blocking, because a callback that stalls makes the device glitch;
//! * a named thread owns the cpal stream for its whole life (so the public
//!   types stay `Send` whatever the backend's stream type is) and does the
//!   slow work: for capture, draining the ring, downmixing, resampling to
//!   16 kHz and framing;
//! * stream errors (a device unplugged) and stalls end the stream with a typed
//!   error instead of leaving a caller waiting forever.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample, SampleFormat, SizedSample, StreamConfig, SupportedBufferSize};

use crate::resample::{resample_mono, Framer, Resampler};
use crate::ring::{sample_ring, RingConsumer, RingProducer, RingStats};
use crate::{AudioError, Frame, FrameSource, SAMPLE_RATE};

/// ALSA's name for "whatever the user configured", usually the sound server.
const DEFAULT_DEVICE_NAME: &str = "default";

/// Capture callback period. cpal's default lets the backend choose, and some
/// (PipeWire's ALSA plugin) choose periods so long that the first audio
/// arrives seconds late; 20 ms keeps end-of-speech detection snappy.
const CAPTURE_PERIOD_MS: u32 = 20;

/// Playback callback period: longer than capture because a late playback
/// callback is an audible click, while a flush only needs to be quick enough
/// for barge-in.
const PLAYBACK_PERIOD_MS: u32 = 50;

/// How much device audio the capture ring holds before dropping: generous,
/// so a busy DSP thread (both cores running speech recognition) loses
/// nothing.
const CAPTURE_RING_SECONDS: usize = 2;

/// How far ahead of the device `play` may queue audio.
const PLAYBACK_RING_MS: usize = 500;
/// What was played stays this long in the tap for an echo canceller to read.
const PLAYED_TAP_MS: usize = 2000;

/// Frames queued between the capture thread and `next_frame` before the
/// capture thread waits (and the ring starts filling instead).
const FRAME_QUEUE_MS: usize = 2000;

/// How often the capture thread drains the ring / a feeder retries a full
/// ring. Far below the callback period, so the ring never holds much.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// A running stream whose callback count has not moved for this long is
/// treated as dead (some failures stall a stream without reporting an
/// error).
const STALL_TIMEOUT: Duration = Duration::from_secs(2);

/// ALSA prints its diagnostics straight to stderr: on a machine without a
/// sound card, dozens of lines before our own one-line error. While one of
/// these lives, ALSA calls made on this thread write to a buffer instead,
/// which is logged at debug level when it is dropped.
struct QuietAlsa {
    #[cfg(target_os = "linux")]
    buffer: Option<std::rc::Rc<std::cell::RefCell<alsa::Output>>>,
}

impl QuietAlsa {
    fn new() -> Self {
        Self {
            #[cfg(target_os = "linux")]
            buffer: alsa::Output::local_error_handler().ok(),
        }
    }
}

impl Drop for QuietAlsa {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some(buffer) = &self.buffer {
            let text = buffer.borrow().to_string();
            if !text.trim().is_empty() {
                tracing::debug!("ALSA diagnostics:\n{}", text.trim_end());
            }
        }
    }
}

/// Rate and channel count of a device stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamFormat {
    pub sample_rate: u32,
    pub channels: u16,
}

/// One entry of [`list_devices`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// What `--input`/`--output` (and [`DeviceSource::open`]) accept, e.g.
    /// `default`, `pulse`, `hw:CARD=PCH,DEV=0`.
    pub name: String,
    /// Human-readable description from the backend.
    pub description: String,
    pub supports_input: bool,
    pub supports_output: bool,
    pub is_default_input: bool,
    pub is_default_output: bool,
    /// The device's preferred capture format, when it could be opened.
    pub default_input: Option<StreamFormat>,
    /// The device's preferred playback format, when it could be opened.
    pub default_output: Option<StreamFormat>,
}

/// Lists the sound devices the host knows of.
///
/// Finding the default formats means briefly opening each device, so this is
/// for `hark devices`, not for a hot path.
pub fn list_devices() -> Result<Vec<DeviceInfo>, AudioError> {
    let _quiet = QuietAlsa::new();
    let host = cpal::default_host();
    let host_name = host.id().name();
    let devices = host.devices().map_err(|e| AudioError::Device {
        name: host_name.to_string(),
        message: format!("cannot enumerate devices: {e}"),
    })?;
    let default_input = host.default_input_device().map(|d| device_name(&d));
    let default_output = host.default_output_device().map(|d| device_name(&d));

    let mut infos: Vec<DeviceInfo> = devices
        .map(|device| describe_device(&device, &default_input, &default_output))
        .collect();
    // The default device is not always among the enumerated hints; it is
    // the one users most need to see.
    for default in [host.default_input_device(), host.default_output_device()]
        .into_iter()
        .flatten()
    {
        let name = device_name(&default);
        if !infos.iter().any(|info| info.name == name) {
            infos.insert(
                0,
                describe_device(&default, &default_input, &default_output),
            );
        }
    }
    Ok(infos)
}

fn describe_device(
    device: &cpal::Device,
    default_input: &Option<String>,
    default_output: &Option<String>,
) -> DeviceInfo {
    let name = device_name(device);
    let description = device
        .description()
        .map(|d| d.name().to_string())
        .unwrap_or_default();
    let as_format = |c: cpal::SupportedStreamConfig| StreamFormat {
        sample_rate: c.sample_rate(),
        channels: c.channels(),
    };
    // Opening these has side effects (the JACK plugin tries to start a JACK
    // server, OSS emulation pokes /dev/dsp) and they are rarely wanted.
    let probe = !["jack", "oss"].contains(&name.as_str());
    let input = probe
        .then(|| device.default_input_config().ok().map(as_format))
        .flatten();
    let output = probe
        .then(|| device.default_output_config().ok().map(as_format))
        .flatten();
    DeviceInfo {
        supports_input: input.is_some() || device.supports_input(),
        supports_output: output.is_some() || device.supports_output(),
        is_default_input: default_input.as_deref() == Some(name.as_str()),
        is_default_output: default_output.as_deref() == Some(name.as_str()),
        default_input: input,
        default_output: output,
        description,
        name,
    }
}

/// The backend's own identifier (the ALSA PCM name), which is what users pass
/// back to us.
fn device_name(device: &cpal::Device) -> String {
    device
        .id()
        .map(|id| id.id().to_string())
        .unwrap_or_else(|_| device.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Input,
    Output,
}

impl Direction {
    fn kind(self) -> &'static str {
        match self {
            Direction::Input => "input",
            Direction::Output => "output",
        }
    }
}

/// Whether a user-supplied name means the host's default device.
fn is_default_name(name: Option<&str>) -> bool {
    name.is_none_or(|n| n == DEFAULT_DEVICE_NAME || n == "alsa:default")
}

/// Resolves a user-supplied device name: `None`/`default` is the host
/// default; otherwise the backend id (with or without an `alsa:` prefix,
/// short forms like `hw:0,0` included) or, failing that, the description.
fn find_device(
    host: &cpal::Host,
    name: Option<&str>,
    direction: Direction,
) -> Result<cpal::Device, AudioError> {
    let host_prefix = format!("{}:", host.id().name().to_lowercase());
    let wanted = name.map(|n| n.strip_prefix(&host_prefix).unwrap_or(n));
    let Some(wanted) = wanted.filter(|n| *n != DEFAULT_DEVICE_NAME) else {
        let default = match direction {
            Direction::Input => host.default_input_device(),
            Direction::Output => host.default_output_device(),
        };
        return default.ok_or_else(|| AudioError::NoDevice {
            kind: direction.kind(),
            hint: no_device_hint(direction, None),
        });
    };
    let not_found = || AudioError::DeviceNotFound {
        kind: direction.kind(),
        name: wanted.to_string(),
    };
    let devices: Vec<cpal::Device> = host
        .devices()
        .map_err(|e| AudioError::Device {
            name: wanted.to_string(),
            message: format!("cannot enumerate devices: {e}"),
        })?
        .collect();
    if let Some(device) = devices.iter().find(|d| device_name(d) == wanted) {
        return Ok(device.clone());
    }
    if let Some(device) = host.device_by_id(&cpal::DeviceId::new(host.id(), wanted)) {
        return Ok(device);
    }
    let mut by_description = devices.iter().filter(|d| {
        d.description()
            .map(|desc| desc.name().eq_ignore_ascii_case(wanted))
            .unwrap_or(false)
    });
    match (by_description.next(), by_description.next()) {
        (Some(device), None) => Ok(device.clone()),
        _ => Err(not_found()),
    }
}

/// Whether the machine has any sound card at all (Linux only; elsewhere we
/// cannot tell and assume it does).
fn has_sound_card() -> bool {
    match std::fs::read_to_string("/proc/asound/cards") {
        Ok(cards) => !cards.contains("no soundcards") && !cards.trim().is_empty(),
        Err(_) => !cfg!(target_os = "linux"),
    }
}

fn no_device_hint(direction: Direction, cause: Option<&cpal::Error>) -> String {
    let advice = match direction {
        Direction::Input => "pass --input FILE to read a WAV instead",
        Direction::Output => "replies cannot be played",
    };
    if has_sound_card() {
        let cause = cause.map(|e| format!("{e}; ")).unwrap_or_default();
        format!(" ({cause}{advice})")
    } else {
        // The backend's own error adds nothing here: it is always some
        // variant of "not available".
        format!(" (no sound card and no PulseAudio/PipeWire server reachable; {advice})")
    }
}

/// Maps a failure to open or configure a device. The default device failing
/// on a machine without a working audio stack is the common case and gets
/// the actionable [`AudioError::NoDevice`]; anything else names the device.
fn open_error(
    error: cpal::Error,
    name: &str,
    direction: Direction,
    is_default: bool,
) -> AudioError {
    use cpal::ErrorKind::*;
    let no_audio_stack = matches!(
        error.kind(),
        DeviceNotAvailable | HostUnavailable | BackendError | Other | UnsupportedConfig
    );
    if is_default && no_audio_stack {
        AudioError::NoDevice {
            kind: direction.kind(),
            hint: no_device_hint(direction, Some(&error)),
        }
    } else {
        let message = match error.kind() {
            DeviceBusy => format!("device is busy (in use by another program?): {error}"),
            PermissionDenied => {
                format!("permission denied (are you in the 'audio' group?): {error}")
            }
            _ => format!("cannot open for {}: {error}", direction.kind()),
        };
        AudioError::Device {
            name: name.to_string(),
            message,
        }
    }
}

/// The stream configuration and sample type chosen for a device.
#[derive(Debug, Clone, Copy)]
struct ChosenConfig {
    config: StreamConfig,
    sample_format: SampleFormat,
}

/// Picks the device's preferred rate and channel count, in `f32` if the
/// device offers it (then `i16`, then whatever it prefers), with a fixed
/// callback period of about `period_ms` where the backend reports a range.
fn choose_config(
    device: &cpal::Device,
    direction: Direction,
    period_ms: u32,
) -> Result<ChosenConfig, cpal::Error> {
    let (default, ranges): (_, Vec<_>) = match direction {
        Direction::Input => (
            device.default_input_config()?,
            device.supported_input_configs()?.collect(),
        ),
        Direction::Output => (
            device.default_output_config()?,
            device.supported_output_configs()?.collect(),
        ),
    };
    let (rate, channels) = (default.sample_rate(), default.channels());
    let preferred = [SampleFormat::F32, SampleFormat::I16]
        .into_iter()
        .find_map(|format| {
            ranges.iter().find(|r| {
                r.sample_format() == format && r.channels() == channels && r.contains_rate(rate)
            })
        });
    let (sample_format, buffer_range) = match preferred {
        Some(range) => (range.sample_format(), *range.buffer_size()),
        None => (default.sample_format(), *default.buffer_size()),
    };
    let buffer_size = match buffer_range {
        SupportedBufferSize::Range { min, max } if max >= min => {
            cpal::BufferSize::Fixed((rate * period_ms / 1000).clamp(min.max(1), max))
        }
        _ => cpal::BufferSize::Default,
    };
    Ok(ChosenConfig {
        config: StreamConfig {
            channels,
            sample_rate: rate,
            buffer_size,
        },
        sample_format,
    })
}

/// Stream trouble as reported by cpal's error callback. That callback may
/// run on the audio thread itself, so reporting never blocks: a message slot
/// is only written if it is free right now.
///
/// Only errors after which the backend gives up on the stream are fatal.
/// Others are counted and logged: cpal keeps the stream running through
/// them, and one that has really died stops calling back, which the
/// [`StallWatch`] catches.
#[derive(Debug, Default)]
struct StreamFault {
    failed: AtomicBool,
    fatal_message: Mutex<Option<String>>,
    xruns: AtomicU64,
    transient_errors: AtomicU64,
    transient_message: Mutex<Option<String>>,
}

impl StreamFault {
    fn report(&self, error: cpal::Error) {
        use cpal::ErrorKind::*;
        match error.kind() {
            DeviceNotAvailable | StreamInvalidated => {
                if let Ok(mut slot) = self.fatal_message.try_lock() {
                    slot.get_or_insert_with(|| error.to_string());
                }
                self.failed.store(true, Ordering::Release);
            }
            Xrun => {
                self.xruns.fetch_add(1, Ordering::Relaxed);
            }
            DeviceChanged | RealtimeDenied => {}
            _ => {
                // A broken backend may report the same error in a tight
                // loop; format it only when the logger has taken the last.
                if let Ok(mut slot) = self.transient_message.try_lock() {
                    if slot.is_none() {
                        *slot = Some(error.to_string());
                    }
                }
                self.transient_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Marks the stream dead from outside the callback (a stall).
    fn fail(&self, message: String) {
        if let Ok(mut slot) = self.fatal_message.lock() {
            slot.get_or_insert(message);
        }
        self.failed.store(true, Ordering::Release);
    }

    fn failure(&self) -> Option<String> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        let message = self.fatal_message.lock().ok().and_then(|slot| slot.clone());
        Some(message.unwrap_or_else(|| "the audio stream failed".to_string()))
    }

    fn take_transient_message(&self) -> String {
        self.transient_message
            .lock()
            .ok()
            .and_then(|mut slot| slot.take())
            .unwrap_or_default()
    }
}

/// Logs a stream's recoverable trouble from an ordinary thread, once per
/// change, since the callback itself must not log.
#[derive(Default)]
struct TroubleLog {
    xruns: u64,
    transient_errors: u64,
}

impl TroubleLog {
    fn report_new(&mut self, fault: &StreamFault, device: &str) {
        let xruns = fault.xruns.load(Ordering::Relaxed);
        if xruns != self.xruns {
            self.xruns = xruns;
            tracing::warn!(device, xruns, "device reported an xrun (audio glitch)");
        }
        let errors = fault.transient_errors.load(Ordering::Relaxed);
        if errors != self.transient_errors {
            self.transient_errors = errors;
            tracing::warn!(
                device,
                errors,
                last = %fault.take_transient_message(),
                "audio stream reported an error; continuing"
            );
        }
    }
}

/// Notices a stream whose callbacks have stopped coming.
struct StallWatch {
    last_count: u64,
    last_change: Instant,
}

impl StallWatch {
    fn new(stats: &RingStats) -> Self {
        Self {
            last_count: stats.callbacks(),
            last_change: Instant::now(),
        }
    }

    fn stalled(&mut self, stats: &RingStats) -> bool {
        let count = stats.callbacks();
        if count != self.last_count {
            self.last_count = count;
            self.last_change = Instant::now();
        }
        self.last_change.elapsed() >= STALL_TIMEOUT
    }
}

/// How long dropping a source or player waits for its thread. Some backends
/// wedge when their server dies (the PulseAudio ALSA plugin can block in
/// stream teardown forever); a drop must not hang the caller with them.
const THREAD_JOIN_TIMEOUT: Duration = Duration::from_secs(2);

/// A thread that owns a stream, joinable with a time limit.
struct StreamThread {
    handle: JoinHandle<()>,
    /// Disconnects when the thread's body has returned. (In a mutex only so
    /// that a shared [`DevicePlayer`] stays `Sync`.)
    finished: Mutex<Receiver<()>>,
}

impl StreamThread {
    fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> std::io::Result<StreamThread> {
        let (finished_tx, finished) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let _finished = finished_tx;
                body();
            })?;
        Ok(StreamThread {
            handle,
            finished: Mutex::new(finished),
        })
    }

    fn unpark(&self) {
        self.handle.thread().unpark();
    }

    /// Joins, unless the thread is stuck in the audio backend; then it is
    /// left behind (it holds nothing but the dead stream).
    fn join_or_abandon(self, device: &str) {
        let finished = self
            .finished
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match finished.recv_timeout(THREAD_JOIN_TIMEOUT) {
            Err(mpsc::RecvTimeoutError::Timeout) => tracing::warn!(
                device,
                "audio thread did not stop within {} s (backend stuck?); abandoning it",
                THREAD_JOIN_TIMEOUT.as_secs()
            ),
            _ => {
                let _ = self.handle.join();
            }
        }
    }
}

/// What a stream-owning thread reports once its stream is running.
struct Opened<End> {
    name: String,
    format: StreamFormat,
    sample_format: SampleFormat,
    period_frames: Option<u32>,
    ring_end: End,
    stats: RingStats,
}

/// Builds a stream of the chosen config; if a fixed period is refused, tries
/// again letting the backend choose, since a late first callback beats no
/// audio at all.
fn build_with_fallback<S>(
    chosen: ChosenConfig,
    mut build: impl FnMut(StreamConfig) -> Result<S, cpal::Error>,
    name: &str,
) -> Result<(S, StreamConfig), cpal::Error> {
    match build(chosen.config) {
        Ok(stream) => Ok((stream, chosen.config)),
        Err(error) if chosen.config.buffer_size != cpal::BufferSize::Default => {
            tracing::debug!(
                device = name,
                %error,
                "fixed buffer size refused; using the device default"
            );
            let config = StreamConfig {
                buffer_size: cpal::BufferSize::Default,
                ..chosen.config
            };
            build(config).map(|stream| (stream, config))
        }
        Err(error) => Err(error),
    }
}

// ---------------------------------------------------------------- capture --

/// Live 16 kHz mono frames from a capture device.
pub struct DeviceSource {
    name: String,
    format: StreamFormat,
    frame_len: usize,
    frames: Option<Receiver<Result<Frame, AudioError>>>,
    stop: Arc<AtomicBool>,
    thread: Option<StreamThread>,
    stats: RingStats,
    ended: bool,
}

impl std::fmt::Debug for DeviceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSource")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("frame_len", &self.frame_len)
            .field("stats", &self.stats.snapshot())
            .finish_non_exhaustive()
    }
}

impl DeviceSource {
    /// Opens `name` (or the default input when `None`) and starts capturing
    /// into `frame_len`-sample frames. Audio is buffered from this moment;
    /// call [`next_frame`](FrameSource::next_frame) promptly.
    ///
    /// # Panics
    /// If `frame_len` is zero.
    pub fn open(name: Option<&str>, frame_len: usize) -> Result<Self, AudioError> {
        assert!(frame_len > 0, "frames must hold at least one sample");
        let requested = name.map(str::to_string);
        let queue_len = (FRAME_QUEUE_MS * SAMPLE_RATE as usize / 1000 / frame_len).max(4);
        let (ready_tx, ready_rx) = mpsc::channel();
        let (frames_tx, frames_rx) = mpsc::sync_channel(queue_len);
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = StreamThread::spawn("hark-capture", move || {
            capture_thread(requested, frame_len, ready_tx, frames_tx, thread_stop)
        })
        .map_err(|e| AudioError::Device {
            name: name.unwrap_or(DEFAULT_DEVICE_NAME).to_string(),
            message: format!("cannot start the capture thread: {e}"),
        })?;
        let requested_name = name.unwrap_or(DEFAULT_DEVICE_NAME);
        let opened = match ready_rx.recv() {
            Ok(Ok(opened)) => opened,
            Ok(Err(error)) => {
                thread.join_or_abandon(requested_name);
                return Err(error);
            }
            Err(_) => {
                thread.join_or_abandon(requested_name);
                return Err(AudioError::Stopped(format!(
                    "capture thread for device '{requested_name}' exited during setup"
                )));
            }
        };
        let Opened {
            name,
            format,
            sample_format,
            period_frames,
            stats,
            ring_end: (),
        } = opened;
        tracing::info!(
            device = %name,
            rate = format.sample_rate,
            channels = format.channels,
            sample_format = %sample_format,
            period_frames,
            "capture started"
        );
        Ok(Self {
            name,
            format,
            frame_len,
            frames: Some(frames_rx),
            stop,
            thread: Some(thread),
            stats,
            ended: false,
        })
    }

    /// The device's name as the backend knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the device delivers, before conversion to 16 kHz mono.
    pub fn device_format(&self) -> StreamFormat {
        self.format
    }

    /// Live counters of the capture ring (overruns are device samples lost
    /// because the DSP side fell behind).
    pub fn stats(&self) -> RingStats {
        self.stats.clone()
    }

    pub fn overruns(&self) -> u64 {
        self.stats.overruns()
    }
}

impl FrameSource for DeviceSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, AudioError> {
        if self.ended {
            return Ok(None);
        }
        let Some(frames) = &self.frames else {
            return Ok(None);
        };
        match frames.recv() {
            Ok(Ok(frame)) => Ok(Some(frame)),
            Ok(Err(error)) => {
                self.ended = true;
                Err(error)
            }
            Err(_) => {
                self.ended = true;
                Err(AudioError::Stopped(format!(
                    "capture from device '{}' ended unexpectedly",
                    self.name
                )))
            }
        }
    }

    fn frame_len(&self) -> usize {
        self.frame_len
    }

    fn describe(&self) -> String {
        format!(
            "device '{}' ({} Hz, {} ch)",
            self.name, self.format.sample_rate, self.format.channels
        )
    }
}

impl Drop for DeviceSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Dropping the receiver unblocks a capture thread waiting to send.
        self.frames.take();
        if let Some(thread) = self.thread.take() {
            thread.join_or_abandon(&self.name);
        }
    }
}

/// Body of "hark-capture": owns the stream from creation to drop.
fn capture_thread(
    name: Option<String>,
    frame_len: usize,
    ready: mpsc::Sender<Result<Opened<()>, AudioError>>,
    frames: SyncSender<Result<Frame, AudioError>>,
    stop: Arc<AtomicBool>,
) {
    let fault = Arc::new(StreamFault::default());
    let (stream, opened) = match open_capture_stream(name.as_deref(), fault.clone()) {
        Ok(running) => running,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    let Opened {
        name,
        format,
        sample_format,
        period_frames,
        ring_end: consumer,
        stats,
    } = opened;
    let resampler = match Resampler::new(format.sample_rate, format.channels) {
        Ok(resampler) => resampler,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    if let Err(error) = stream.play() {
        let _ = ready.send(Err(AudioError::Device {
            name,
            message: format!("cannot start capture: {error}"),
        }));
        return;
    }
    let reported = ready.send(Ok(Opened {
        name: name.clone(),
        format,
        sample_format,
        period_frames,
        ring_end: (),
        stats: stats.clone(),
    }));
    if reported.is_err() {
        return;
    }
    let mut pump = CapturePump {
        name,
        consumer,
        stats,
        fault,
        resampler,
        framer: Framer::new(frame_len),
        frames,
        stop,
    };
    let outcome = pump.run();
    // Report first: tearing down a stream whose server died can block
    // forever inside the backend, and the reader must not wait on that.
    if let Err(error) = outcome {
        tracing::warn!(device = %pump.name, %error, "capture ended");
        let _ = pump.frames.send(Err(error));
    }
    drop(stream);
}

fn open_capture_stream(
    name: Option<&str>,
    fault: Arc<StreamFault>,
) -> Result<(cpal::Stream, Opened<RingConsumer>), AudioError> {
    let _quiet = QuietAlsa::new();
    let host = cpal::default_host();
    let device = find_device(&host, name, Direction::Input)?;
    let device_name = device_name(&device);
    let is_default = is_default_name(name);
    let chosen = choose_config(&device, Direction::Input, CAPTURE_PERIOD_MS)
        .map_err(|e| open_error(e, &device_name, Direction::Input, is_default))?;
    let capacity =
        chosen.config.sample_rate as usize * chosen.config.channels as usize * CAPTURE_RING_SECONDS;
    let mut consumer_slot = None;
    let build = |config: StreamConfig| {
        let (producer, consumer, _) = sample_ring(capacity);
        let stream = build_capture_stream(&device, config, chosen.sample_format, producer, &fault)?;
        consumer_slot = Some(consumer);
        Ok(stream)
    };
    let (stream, config) = build_with_fallback(chosen, build, &device_name)
        .map_err(|e| open_error(e, &device_name, Direction::Input, is_default))?;
    let consumer = consumer_slot.expect("a built stream has its ring");
    let stats = consumer.stats().clone();
    let opened = Opened {
        period_frames: stream.buffer_size().ok(),
        name: device_name,
        format: StreamFormat {
            sample_rate: config.sample_rate,
            channels: config.channels,
        },
        sample_format: chosen.sample_format,
        ring_end: consumer,
        stats,
    };
    Ok((stream, opened))
}

fn build_capture_stream(
    device: &cpal::Device,
    config: StreamConfig,
    sample_format: SampleFormat,
    producer: RingProducer,
    fault: &Arc<StreamFault>,
) -> Result<cpal::Stream, cpal::Error> {
    match sample_format {
        SampleFormat::F32 => build_capture::<f32>(device, config, producer, fault),
        SampleFormat::I16 => build_capture::<i16>(device, config, producer, fault),
        SampleFormat::I32 => build_capture::<i32>(device, config, producer, fault),
        SampleFormat::U16 => build_capture::<u16>(device, config, producer, fault),
        SampleFormat::U8 => build_capture::<u8>(device, config, producer, fault),
        SampleFormat::I8 => build_capture::<i8>(device, config, producer, fault),
        SampleFormat::F64 => build_capture::<f64>(device, config, producer, fault),
        other => Err(cpal::Error::with_message(
            cpal::ErrorKind::UnsupportedConfig,
            format!("sample format {other} is not supported by hark"),
        )),
    }
}

fn build_capture<T>(
    device: &cpal::Device,
    config: StreamConfig,
    mut producer: RingProducer,
    fault: &Arc<StreamFault>,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample,
    f32: FromSample<T>,
{
    let frame_width = config.channels as usize;
    let stats = producer.stats().clone();
    // Real-time context: copy into the ring and count, nothing else.
    let on_data = move |data: &[T], _: &cpal::InputCallbackInfo| {
        stats.count_callback();
        producer.push_iter_or_drop(data.iter().map(|&s| s.to_sample::<f32>()), frame_width);
    };
    let fault = fault.clone();
    let on_error = move |error: cpal::Error| fault.report(error);
    device.build_input_stream::<T, _, _>(config, on_data, on_error, Some(STALL_TIMEOUT / 4))
}

/// Device samples every capture stream of this process has lost to
/// overruns (the reader fell behind and the ring was full), for benchmarks
/// that must show none were lost under load.
static CAPTURE_SAMPLES_LOST: AtomicU64 = AtomicU64::new(0);

/// See [`CAPTURE_SAMPLES_LOST`]: a total since the process started, at
/// each device's own rate.
pub fn capture_samples_lost() -> u64 {
    CAPTURE_SAMPLES_LOST.load(Ordering::Relaxed)
}

/// The capture thread's loop: ring → downmix/resample → frames → channel.
struct CapturePump {
    name: String,
    consumer: RingConsumer,
    stats: RingStats,
    fault: Arc<StreamFault>,
    resampler: Resampler,
    framer: Framer,
    frames: SyncSender<Result<Frame, AudioError>>,
    stop: Arc<AtomicBool>,
}

impl CapturePump {
    fn run(&mut self) -> Result<(), AudioError> {
        // Large enough to empty a full ring at once (see the overrun fill).
        let mut drained = vec![0.0f32; self.consumer.capacity()];
        let mut resampled = Vec::new();
        let mut framed = Vec::new();
        let mut watch = StallWatch::new(&self.stats);
        let mut overruns_filled = 0u64;
        let mut overruns_logged_at: Option<Instant> = None;
        let mut trouble = TroubleLog::default();
        while !self.stop.load(Ordering::Acquire) {
            if let Some(message) = self.fault.failure() {
                return Err(AudioError::Device {
                    name: self.name.clone(),
                    message: format!("stream failed: {message}"),
                });
            }
            // Read before popping: every drop counted here happened while the
            // ring was full with exactly what we are about to pop, so the lost
            // audio belongs right after it.
            let overruns = self.stats.overruns();
            let popped = self.consumer.pop(&mut drained);
            if popped == 0 {
                if watch.stalled(&self.stats) {
                    return Err(AudioError::Stopped(format!(
                        "device '{}' delivered no audio for {} s",
                        self.name,
                        STALL_TIMEOUT.as_secs()
                    )));
                }
                std::thread::sleep(POLL_INTERVAL);
                continue;
            }
            resampled.clear();
            self.resampler.process(&drained[..popped], &mut resampled)?;
            if overruns > overruns_filled {
                // Silence in place of the lost audio keeps frame timestamps
                // on the wall clock.
                let lost = (overruns - overruns_filled) as usize;
                CAPTURE_SAMPLES_LOST.fetch_add(lost as u64, Ordering::Relaxed);
                self.resampler.process(&vec![0.0; lost], &mut resampled)?;
                overruns_filled = overruns;
                if overruns_logged_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                    overruns_logged_at = Some(Instant::now());
                    tracing::warn!(
                        device = %self.name,
                        total_lost_samples = overruns,
                        "capture overrun: audio was dropped because processing fell behind"
                    );
                }
            }
            trouble.report_new(&self.fault, &self.name);
            self.framer.push(&resampled, &mut framed);
            for frame in framed.drain(..) {
                if self.frames.send(Ok(frame)).is_err() {
                    return Ok(()); // the source was dropped
                }
            }
        }
        Ok(())
    }
}

// --------------------------------------------------------------- playback --

/// What a [`DevicePlayer`]'s device played, read as it plays: every sample
/// its callback handed over, silence included, in order.
pub struct PlayedAudio {
    ring: RingConsumer,
    rate: u32,
}

impl PlayedAudio {
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Appends everything played since the last call to `out`; returns how
    /// many samples that was.
    pub fn read(&mut self, out: &mut Vec<f32>) -> usize {
        let start = out.len();
        out.resize(start + self.ring.occupied_len(), 0.0);
        let got = self.ring.pop(&mut out[start..]);
        out.truncate(start + got);
        got
    }

    /// Samples lost because nobody read them in time (then the stream has a
    /// gap the reader cannot see). Monotonic.
    pub fn lost(&self) -> u64 {
        self.ring.stats().overruns()
    }

    fn skip_backlog(&mut self) {
        let backlog = self.ring.occupied_len();
        self.ring.skip(backlog);
    }
}

/// Whether [`DevicePlayer::play`] queued all of its audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayOutcome {
    /// All samples are queued for the device.
    Queued,
    /// A [`flush`](DevicePlayer::flush) interrupted the call; the rest was
    /// discarded.
    Flushed,
}

/// State shared by the player and its output callback.
#[derive(Debug, Default)]
struct PlaybackShared {
    /// Samples ever pushed into the ring; only changed under the producer
    /// lock, so a flush reads an exact value.
    pushed_total: AtomicU64,
    /// The callback discards everything up to this many samples ever pushed:
    /// how a flush empties a ring whose consuming end it does not own.
    flush_target: AtomicU64,
    /// Bumped by every flush so an in-progress `play` stops feeding.
    flush_generation: AtomicU64,
    /// `play` calls currently feeding; silence is an underrun only then.
    feeders: AtomicUsize,
    /// Samples of silence the callback ever played because the ring was
    /// empty, underrun or not: with it a caller that keeps its own timeline
    /// of what is heard (echo cancellation) can account for every gap.
    silence_played: AtomicU64,
    fault: StreamFault,
}

/// Plays mono audio on an output device.
///
/// All methods take `&self`, so a player can be shared (e.g. in an `Arc`)
/// and [`flush`](Self::flush)ed from one thread while another is blocked in
/// [`play`](Self::play). One thread should feed at a time.
pub struct DevicePlayer {
    name: String,
    format: StreamFormat,
    period_frames: Option<u32>,
    producer: Mutex<RingProducer>,
    /// Until someone takes it: what the device played.
    played: Mutex<Option<RingConsumer>>,
    shared: Arc<PlaybackShared>,
    stats: RingStats,
    stop: Arc<AtomicBool>,
    thread: Option<StreamThread>,
}

impl std::fmt::Debug for DevicePlayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevicePlayer")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("stats", &self.stats.snapshot())
            .finish_non_exhaustive()
    }
}

impl DevicePlayer {
    /// Opens `name` (or the default output when `None`) and starts its
    /// stream, playing silence until something is queued.
    pub fn open(name: Option<&str>) -> Result<Self, AudioError> {
        let requested = name.map(str::to_string);
        let (ready_tx, ready_rx) = mpsc::channel();
        let shared = Arc::new(PlaybackShared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_shared, thread_stop) = (shared.clone(), stop.clone());
        let thread = StreamThread::spawn("hark-playback", move || {
            playback_thread(requested, thread_shared, ready_tx, thread_stop)
        })
        .map_err(|e| AudioError::Device {
            name: name.unwrap_or(DEFAULT_DEVICE_NAME).to_string(),
            message: format!("cannot start the playback thread: {e}"),
        })?;
        let requested_name = name.unwrap_or(DEFAULT_DEVICE_NAME);
        let opened = match ready_rx.recv() {
            Ok(Ok(opened)) => opened,
            Ok(Err(error)) => {
                thread.join_or_abandon(requested_name);
                return Err(error);
            }
            Err(_) => {
                thread.join_or_abandon(requested_name);
                return Err(AudioError::Stopped(format!(
                    "playback thread for device '{requested_name}' exited during setup"
                )));
            }
        };
        tracing::info!(
            device = %opened.name,
            rate = opened.format.sample_rate,
            channels = opened.format.channels,
            sample_format = %opened.sample_format,
            period_frames = opened.period_frames,
            "playback started"
        );
        Ok(Self {
            name: opened.name,
            format: opened.format,
            period_frames: opened.period_frames,
            producer: Mutex::new(opened.ring_end.producer),
            played: Mutex::new(Some(opened.ring_end.played)),
            shared,
            stats: opened.stats,
            stop,
            thread: Some(thread),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device's own rate and channel count (audio is converted to it).
    pub fn device_format(&self) -> StreamFormat {
        self.format
    }

    /// Live counters of the playback ring (underruns are samples of silence
    /// played because `play` could not keep the ring filled).
    pub fn stats(&self) -> RingStats {
        self.stats.clone()
    }

    /// Queues mono `samples` at `sample_rate` for playback, converting to the
    /// device's rate and channel count. Returns once everything is queued
    /// (not played; see [`drain`](Self::drain)), waiting while the queue is
    /// full, or early with [`PlayOutcome::Flushed`] if a flush intervenes.
    pub fn play(&self, samples: &[f32], sample_rate: u32) -> Result<PlayOutcome, AudioError> {
        let generation = self.shared.flush_generation.load(Ordering::Acquire);
        let at_device_rate = resample_mono(samples, sample_rate, self.format.sample_rate)?;
        let channels = self.format.channels as usize;
        let interleaved: Vec<f32> = at_device_rate
            .iter()
            .flat_map(|&s| std::iter::repeat_n(s, channels))
            .collect();

        let mut feeding: Option<FeederGuard<'_>> = None;
        let mut watch = StallWatch::new(&self.stats);
        let mut offset = 0;
        while offset < interleaved.len() {
            self.check_fault()?;
            {
                let mut producer = self.lock_producer();
                if self.shared.flush_generation.load(Ordering::Acquire) != generation {
                    return Ok(PlayOutcome::Flushed);
                }
                let pushed = producer.push_frames(&interleaved[offset..], channels);
                self.shared
                    .pushed_total
                    .fetch_add(pushed as u64, Ordering::AcqRel);
                offset += pushed;
            }
            if feeding.is_none() {
                // Counted from the first push: before it, silence is not
                // anyone's fault.
                feeding = Some(FeederGuard::new(&self.shared.feeders));
            }
            if offset < interleaved.len() {
                if watch.stalled(&self.stats) {
                    return Err(self.stalled_error());
                }
                std::thread::sleep(POLL_INTERVAL);
            }
        }
        Ok(PlayOutcome::Queued)
    }

    /// The stream of what the device plays from now on (channel 0, at the
    /// device rate, silence included): the reference an echo canceller
    /// needs. There is one; later calls get `None`.
    pub fn take_played(&self) -> Option<PlayedAudio> {
        let ring = self
            .played
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        let mut played = PlayedAudio {
            ring,
            rate: self.format.sample_rate,
        };
        // Whatever piled up before anyone listened is old.
        played.skip_backlog();
        Some(played)
    }

    /// Frames queued and not yet handed to the device.
    pub fn queued_frames(&self) -> usize {
        self.lock_producer().occupied_len() / self.format.channels.max(1) as usize
    }

    /// Frames of silence the device has played so far because nothing was
    /// queued (including before the first `play` and after a flush).
    pub fn silence_played_frames(&self) -> u64 {
        self.shared.silence_played.load(Ordering::Relaxed) / u64::from(self.format.channels.max(1))
    }

    /// Discards everything queued and makes a concurrent `play` return
    /// [`PlayOutcome::Flushed`]: for barge-in. At most one device period
    /// that is already in the hardware still plays.
    pub fn flush(&self) {
        self.shared.flush_generation.fetch_add(1, Ordering::AcqRel);
        // Under the lock no push is half done, so the total is exact.
        let _producer = self.lock_producer();
        let pushed = self.shared.pushed_total.load(Ordering::Acquire);
        self.shared.flush_target.store(pushed, Ordering::Release);
    }

    /// Waits until everything queued has been played.
    pub fn drain(&self) -> Result<(), AudioError> {
        let mut watch = StallWatch::new(&self.stats);
        loop {
            self.check_fault()?;
            if self.lock_producer().occupied_len() == 0 {
                break;
            }
            if watch.stalled(&self.stats) {
                return Err(self.stalled_error());
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        // The ring is empty, but the last periods are still in the device's
        // own buffer (two periods with a fixed buffer size).
        let period = self
            .period_frames
            .unwrap_or(self.format.sample_rate * PLAYBACK_PERIOD_MS / 1000);
        std::thread::sleep(Duration::from_secs_f64(
            2.0 * period as f64 / self.format.sample_rate as f64,
        ));
        self.check_fault()
    }

    fn lock_producer(&self) -> MutexGuard<'_, RingProducer> {
        // A panic elsewhere cannot leave the ring inconsistent; keep going.
        self.producer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the stream still plays: an error once it has failed or
    /// stopped calling back (the audio server went away).
    pub fn health(&self) -> Result<(), AudioError> {
        self.check_fault()
    }

    fn check_fault(&self) -> Result<(), AudioError> {
        match self.shared.fault.failure() {
            None => Ok(()),
            Some(message) => Err(AudioError::Device {
                name: self.name.clone(),
                message: format!("stream failed: {message}"),
            }),
        }
    }

    fn stalled_error(&self) -> AudioError {
        AudioError::Stopped(format!(
            "device '{}' stopped consuming audio for {} s",
            self.name,
            STALL_TIMEOUT.as_secs()
        ))
    }
}

impl Drop for DevicePlayer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.unpark();
            thread.join_or_abandon(&self.name);
        }
    }
}

/// Marks a `play` call as feeding for as long as it lives.
struct FeederGuard<'a>(&'a AtomicUsize);

impl<'a> FeederGuard<'a> {
    fn new(feeders: &'a AtomicUsize) -> Self {
        feeders.fetch_add(1, Ordering::AcqRel);
        Self(feeders)
    }
}

impl Drop for FeederGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Body of "hark-playback": owns the stream and keeps it alive until the
/// player is dropped.
/// The player's ends of its two rings: audio in, and what was played out.
struct PlaybackEnds {
    producer: RingProducer,
    played: RingConsumer,
}

fn playback_thread(
    name: Option<String>,
    shared: Arc<PlaybackShared>,
    ready: mpsc::Sender<Result<Opened<PlaybackEnds>, AudioError>>,
    stop: Arc<AtomicBool>,
) {
    let (stream, opened) = match open_playback_stream(name.as_deref(), &shared) {
        Ok(running) => running,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    if let Err(error) = stream.play() {
        let _ = ready.send(Err(AudioError::Device {
            name: opened.name,
            message: format!("cannot start playback: {error}"),
        }));
        return;
    }
    let device = opened.name.clone();
    let stats = opened.stats.clone();
    if ready.send(Ok(opened)).is_err() {
        return;
    }
    let mut trouble = TroubleLog::default();
    let mut watch = StallWatch::new(&stats);
    while !stop.load(Ordering::Acquire) {
        std::thread::park_timeout(Duration::from_millis(100));
        trouble.report_new(&shared.fault, &device);
        // The callback runs even when idle (it plays silence), so a stopped
        // count means a dead stream; fail it so `play` reports that at once.
        if shared.fault.failure().is_none() && watch.stalled(&stats) {
            shared.fault.fail(format!(
                "no playback callbacks for {} s",
                STALL_TIMEOUT.as_secs()
            ));
        }
        if let Some(message) = shared.fault.failure() {
            tracing::warn!(device, %message, "playback stream ended");
            break;
        }
    }
    drop(stream);
}

fn open_playback_stream(
    name: Option<&str>,
    shared: &Arc<PlaybackShared>,
) -> Result<(cpal::Stream, Opened<PlaybackEnds>), AudioError> {
    let _quiet = QuietAlsa::new();
    let host = cpal::default_host();
    let device = find_device(&host, name, Direction::Output)?;
    let device_name = device_name(&device);
    let is_default = is_default_name(name);
    let chosen = choose_config(&device, Direction::Output, PLAYBACK_PERIOD_MS)
        .map_err(|e| open_error(e, &device_name, Direction::Output, is_default))?;
    let capacity =
        chosen.config.sample_rate as usize * chosen.config.channels as usize * PLAYBACK_RING_MS
            / 1000;
    let mut ends_slot = None;
    let build = |config: StreamConfig| {
        let (producer, consumer, _) = sample_ring(capacity);
        let (tap, played, _) = sample_ring(config.sample_rate as usize * PLAYED_TAP_MS / 1000);
        let stream = build_playback_stream(
            &device,
            config,
            chosen.sample_format,
            PlaybackCallbackEnds { consumer, tap },
            shared,
        )?;
        ends_slot = Some(PlaybackEnds { producer, played });
        Ok(stream)
    };
    let (stream, config) = build_with_fallback(chosen, build, &device_name)
        .map_err(|e| open_error(e, &device_name, Direction::Output, is_default))?;
    let ends = ends_slot.expect("a built stream has its rings");
    let stats = ends.producer.stats().clone();
    let opened = Opened {
        period_frames: stream.buffer_size().ok(),
        name: device_name,
        format: StreamFormat {
            sample_rate: config.sample_rate,
            channels: config.channels,
        },
        sample_format: chosen.sample_format,
        ring_end: ends,
        stats,
    };
    Ok((stream, opened))
}

/// The callback's ends: audio to play, and a copy of what it played
/// (channel 0) for an echo canceller.
struct PlaybackCallbackEnds {
    consumer: RingConsumer,
    tap: RingProducer,
}

fn build_playback_stream(
    device: &cpal::Device,
    config: StreamConfig,
    sample_format: SampleFormat,
    ends: PlaybackCallbackEnds,
    shared: &Arc<PlaybackShared>,
) -> Result<cpal::Stream, cpal::Error> {
    match sample_format {
        SampleFormat::F32 => build_playback::<f32>(device, config, ends, shared),
        SampleFormat::I16 => build_playback::<i16>(device, config, ends, shared),
        SampleFormat::I32 => build_playback::<i32>(device, config, ends, shared),
        SampleFormat::U16 => build_playback::<u16>(device, config, ends, shared),
        SampleFormat::U8 => build_playback::<u8>(device, config, ends, shared),
        SampleFormat::I8 => build_playback::<i8>(device, config, ends, shared),
        SampleFormat::F64 => build_playback::<f64>(device, config, ends, shared),
        other => Err(cpal::Error::with_message(
            cpal::ErrorKind::UnsupportedConfig,
            format!("sample format {other} is not supported by hark"),
        )),
    }
}

/// Samples converted per step in the output callback; a fixed stack buffer
/// so the callback never allocates.
const PLAYBACK_SCRATCH: usize = 512;

fn build_playback<T>(
    device: &cpal::Device,
    config: StreamConfig,
    ends: PlaybackCallbackEnds,
    shared: &Arc<PlaybackShared>,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample + FromSample<f32>,
{
    let PlaybackCallbackEnds {
        mut consumer,
        mut tap,
    } = ends;
    let channels = (config.channels as usize).max(1);
    let callback_shared = shared.clone();
    let stats = consumer.stats().clone();
    let mut popped_total = 0u64;
    let mut scratch = [0.0f32; PLAYBACK_SCRATCH];
    // Real-time context: skip flushed audio, copy out of the ring, count.
    let on_data = move |data: &mut [T], _: &cpal::OutputCallbackInfo| {
        stats.count_callback();
        let flush_target = callback_shared.flush_target.load(Ordering::Acquire);
        if popped_total < flush_target {
            popped_total += consumer.skip((flush_target - popped_total) as usize) as u64;
        }
        // Silence is an underrun only while a `play` is still feeding audio
        // that was not flushed (a flush empties the ring on purpose).
        let count_underruns = callback_shared.feeders.load(Ordering::Acquire) > 0
            && callback_shared.pushed_total.load(Ordering::Acquire) > flush_target;
        let mut silence = 0;
        for chunk in data.chunks_mut(PLAYBACK_SCRATCH / channels * channels) {
            let scratch = &mut scratch[..chunk.len()];
            let popped = consumer.pop_or_silence(scratch, count_underruns);
            popped_total += popped as u64;
            silence += (chunk.len() - popped) as u64;
            // Nobody reading the tap just means it fills and drops.
            tap.push_iter_or_drop(scratch.iter().step_by(channels).copied(), 1);
            for (out, &sample) in chunk.iter_mut().zip(scratch.iter()) {
                *out = sample.to_sample::<T>();
            }
        }
        if silence > 0 {
            callback_shared
                .silence_played
                .fetch_add(silence, Ordering::Relaxed);
        }
    };
    let fault_shared = shared.clone();
    let on_error = move |error: cpal::Error| fault_shared.fault.report(error);
    device.build_output_stream::<T, _, _>(config, on_data, on_error, Some(STALL_TIMEOUT / 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_device_name_is_reported_by_name() {
        let error = DeviceSource::open(Some("hark-test-no-such-device"), 320)
            .expect_err("a made-up device cannot open");
        match &error {
            AudioError::DeviceNotFound { kind, name } => {
                assert_eq!(*kind, "input");
                assert_eq!(name, "hark-test-no-such-device");
            }
            other => panic!("unexpected error: {other:?}"),
        }
        assert!(error.to_string().contains("hark-test-no-such-device"));
        let error = DevicePlayer::open(Some("hark-test-no-such-device"))
            .expect_err("a made-up device cannot open");
        assert!(matches!(
            error,
            AudioError::DeviceNotFound { kind: "output", .. }
        ));
    }

    /// Passes everywhere: with a working audio stack the default device
    /// opens (and delivers frames); without one the failure must be the
    /// actionable `NoDevice` (or name the device), never a panic or hang.
    #[test]
    fn default_input_opens_or_explains_why_not() {
        match DeviceSource::open(None, 320) {
            Ok(mut source) => {
                assert!(source.describe().contains(source.name()));
                let frame = source.next_frame().unwrap().unwrap();
                assert_eq!(frame.samples.len(), 320);
                assert_eq!(frame.start_sample, 0);
            }
            Err(AudioError::NoDevice { kind, hint }) => {
                println!(
                    "{}",
                    AudioError::NoDevice {
                        kind,
                        hint: hint.clone()
                    }
                );
                assert_eq!(kind, "input");
                assert!(hint.contains("--input FILE"), "{hint}");
            }
            Err(AudioError::Device { name, .. }) => assert!(!name.is_empty()),
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }

    #[test]
    fn listing_devices_does_not_fail_without_a_sound_card() {
        let devices = list_devices().unwrap();
        for device in &devices {
            assert!(!device.name.is_empty());
        }
    }

    #[test]
    fn stream_fault_keeps_the_first_fatal_message() {
        let fault = StreamFault::default();
        fault.report(cpal::Error::new(cpal::ErrorKind::Xrun));
        assert!(fault.failure().is_none(), "an xrun is recovered from");
        assert_eq!(fault.xruns.load(Ordering::Relaxed), 1);
        // cpal keeps a stream running through backend hiccups (an EIO from
        // the PulseAudio plugin at start-up, say), so they are not fatal.
        fault.report(cpal::Error::with_message(
            cpal::ErrorKind::BackendError,
            "I/O error",
        ));
        assert!(fault.failure().is_none());
        assert_eq!(fault.transient_errors.load(Ordering::Relaxed), 1);
        assert_eq!(fault.take_transient_message(), "I/O error");
        fault.report(cpal::Error::with_message(
            cpal::ErrorKind::DeviceNotAvailable,
            "unplugged",
        ));
        fault.report(cpal::Error::with_message(
            cpal::ErrorKind::StreamInvalidated,
            "later",
        ));
        assert_eq!(fault.failure().as_deref(), Some("unplugged"));
    }

    fn rms(samples: &[f32]) -> f32 {
        (samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32).sqrt()
    }

    /// Needs a running audio server behind ALSA's `default` device, such as
    /// a PulseAudio null-sink rig. With `HARK_AUDIO_FEED_SINK` naming a sink
    /// that feeds the default source, it also checks that a tone played
    /// into it (with `paplay`) arrives in the captured frames.
    ///
    /// `cargo test -p hark-audio --release -- --ignored --nocapture live_`
    #[test]
    #[ignore = "needs a live audio server"]
    fn live_capture_and_playback() {
        let mut source = DeviceSource::open(None, 320).expect("default input opens");
        println!("capturing from {}", source.describe());
        let started = Instant::now();
        let first = source.next_frame().unwrap().unwrap();
        let first_latency = started.elapsed();
        println!("first frame after {first_latency:?}");
        assert!(first_latency < Duration::from_millis(500));

        let feeder = std::env::var("HARK_AUDIO_FEED_SINK").ok().map(|sink| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("tone.wav");
            let tone = crate::resample::tests::sine(440.0, 16_000, 1.0, 0.5, 1);
            let mut sink_file =
                crate::wav::WavSink::create(&path, 16_000, crate::wav::WavSampleFormat::Int16)
                    .unwrap();
            sink_file.write(&tone).unwrap();
            sink_file.finalize().unwrap();
            let child = std::process::Command::new("paplay")
                .args(["-d", &sink, "--latency-msec=20"])
                .arg(&path)
                .spawn()
                .expect("paplay runs");
            (dir, child)
        });

        let mut expected_start = first.end_sample();
        let mut loud_frames = 0;
        let reading = Instant::now();
        for _ in 0..100 {
            let frame = source.next_frame().unwrap().unwrap();
            assert_eq!(frame.start_sample, expected_start, "frames are contiguous");
            expected_start = frame.end_sample();
            if rms(&frame.samples) > 0.1 {
                loud_frames += 1;
            }
        }
        let read_time = reading.elapsed();
        println!(
            "100 frames (2 s of audio) took {read_time:?}; {loud_frames} loud; stats {:?}",
            source.stats().snapshot()
        );
        // Frames come at the device's pace, not faster, give or take what
        // was buffered before reading started.
        assert!(read_time > Duration::from_millis(1500), "{read_time:?}");
        assert_eq!(source.overruns(), 0);
        if let Some((_dir, mut child)) = feeder {
            child.wait().unwrap();
            assert!(loud_frames >= 40, "the 1 s tone should fill ~50 frames");
        }
        drop(source);

        let player = DevicePlayer::open(None).expect("default output opens");
        println!("playing on {player:?}");
        let tone = crate::resample::tests::sine(440.0, 16_000, 0.5, 0.3, 1);
        let started = Instant::now();
        assert_eq!(player.play(&tone, 16_000).unwrap(), PlayOutcome::Queued);
        player.drain().unwrap();
        let played_in = started.elapsed();
        println!(
            "0.5 s played and drained in {played_in:?}; {:?}",
            player.stats().snapshot()
        );
        assert!(played_in >= Duration::from_millis(450), "{played_in:?}");
        assert!(played_in < Duration::from_millis(1500), "{played_in:?}");

        // Barge-in: a flush from another thread cuts a long play short.
        let long = crate::resample::tests::sine(440.0, 16_000, 5.0, 0.3, 1);
        let started = Instant::now();
        let outcome = std::thread::scope(|scope| {
            let playing = scope.spawn(|| player.play(&long, 16_000).unwrap());
            std::thread::sleep(Duration::from_millis(300));
            player.flush();
            playing.join().unwrap()
        });
        assert_eq!(outcome, PlayOutcome::Flushed);
        player.drain().unwrap();
        let flushed_in = started.elapsed();
        println!("5 s reply flushed after {flushed_in:?}");
        assert!(flushed_in < Duration::from_millis(1000), "{flushed_in:?}");
        assert_eq!(player.stats().underruns(), 0);
    }

    #[test]
    fn sources_and_players_can_move_between_threads() {
        fn assert_send<T: Send>() {}
        fn assert_sync<T: Sync>() {}
        assert_send::<DeviceSource>();
        assert_send::<DevicePlayer>();
        assert_sync::<DevicePlayer>();
    }
}
