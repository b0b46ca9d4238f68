//! A private PulseAudio server with a virtual microphone and speaker
//! (scripts/audio-rig), one per test, stopped on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::repo_root;

/// A running audio rig, stopped on drop.
pub struct AudioRig {
    dir: tempfile::TempDir,
}

impl AudioRig {
    pub fn start() -> AudioRig {
        let dir = tempfile::Builder::new()
            .prefix("hark-rig-")
            .tempdir()
            .unwrap();
        let rig = AudioRig { dir };
        rig.script(&["start"]);
        rig
    }

    /// Stops the audio server, as a crash would (the devices are gone).
    pub fn stop_server(&self) {
        self.script(&["stop"]);
    }

    /// Starts the audio server again, on the same socket and devices.
    pub fn start_server(&self) {
        self.script(&["start"]);
    }

    /// Runs `scripts/audio-rig ARGS` for this rig.
    fn script(&self, args: &[&str]) {
        let out = Command::new(repo_root().join("scripts/audio-rig"))
            .args(args)
            .env("HARK_RIG_DIR", self.dir.path())
            .output()
            .expect("run scripts/audio-rig (needs pulseaudio: run scripts/setup)");
        assert!(
            out.status.success(),
            "audio-rig {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn env(&self, cmd: &mut Command) {
        let d = self.dir.path();
        cmd.env("XDG_RUNTIME_DIR", d)
            .env("PULSE_RUNTIME_PATH", d)
            .env("PULSE_STATE_PATH", d)
            .env("PULSE_SERVER", format!("unix:{}/native", d.display()));
    }

    /// Loops the speaker into the microphone at `db` (a speaker the
    /// microphone hears, as on a laptop).
    pub fn echo(&self, db: f64) {
        self.script(&["echo", &format!("{db}")]);
    }

    /// Removes the default `device` ("speaker" or "mic"), as a headset
    /// pulled out: streams on it move to what is left.
    pub fn unplug(&self, device: &str) {
        self.script(&["unplug", device]);
    }

    /// Adds `device` back and makes it the default again.
    pub fn plug(&self, device: &str) {
        self.script(&["plug", device]);
    }

    pub fn play_into_mic(&self, wav: &Path) {
        let mut cmd = Command::new("paplay");
        cmd.args(["-d", "micfeed", "--latency-msec=200"]).arg(wav);
        self.env(&mut cmd);
        let status = cmd.status().expect("run paplay");
        assert!(status.success(), "paplay failed");
    }
}

impl Drop for AudioRig {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/audio-rig"))
            .arg("stop")
            .env("HARK_RIG_DIR", self.dir.path())
            .status();
    }
}

impl AudioRig {
    /// Starts recording what is played on the speaker (its monitor) as a
    /// 16 kHz mono WAV; stop by killing the child (parecord finalises the
    /// header on SIGINT/SIGTERM).
    pub fn record_speaker(&self, out: &Path) -> Child {
        let mut cmd = Command::new("parecord");
        cmd.args([
            "-d",
            "speaker.monitor",
            "--rate=16000",
            "--channels=1",
            "--format=s16le",
            "--file-format=wav",
        ])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        self.env(&mut cmd);
        cmd.spawn().expect("run parecord")
    }
}
