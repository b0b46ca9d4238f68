//! `hark devices`: what cpal can see.

use hark_audio::device::{DeviceInfo, StreamFormat};

pub fn run() -> anyhow::Result<()> {
    let devices = hark_audio::device::list_devices()?;
    if devices.is_empty() {
        println!(
            "no audio devices found (no sound card, and no PulseAudio/PipeWire server reachable)"
        );
        return Ok(());
    }
    println!(
        "{:<32} {:<14} {:<14} description",
        "name", "capture", "playback"
    );
    for d in &devices {
        println!(
            "{:<32} {:<14} {:<14} {}",
            d.name,
            column(
                d.supports_input,
                d.is_default_input,
                d.default_input.as_ref()
            ),
            column(
                d.supports_output,
                d.is_default_output,
                d.default_output.as_ref()
            ),
            d.description.lines().next().unwrap_or("")
        );
    }
    let default_of = |pick: fn(&DeviceInfo) -> bool| {
        devices
            .iter()
            .find(|d| pick(d))
            .map_or("none", |d| d.name.as_str())
    };
    println!(
        "\ndefault capture: {}   default playback: {}",
        default_of(|d| d.is_default_input),
        default_of(|d| d.is_default_output)
    );
    Ok(())
}

/// "48000 Hz 2ch*" (the star marks the default device), or "-" when the
/// device cannot do this direction.
fn column(supported: bool, is_default: bool, format: Option<&StreamFormat>) -> String {
    if !supported {
        return "-".into();
    }
    let star = if is_default { "*" } else { "" };
    match format {
        Some(f) => format!("{} Hz {}ch{star}", f.sample_rate, f.channels),
        None => format!("yes{star}"),
    }
}
