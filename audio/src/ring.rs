//! The real-time ring between a device callback and an ordinary thread.
//!
//! A device callback runs on the audio server's schedule; if it blocks,
//! allocates, takes a lock or logs, the device glitches. So the callback only
//! ever touches this ring: a preallocated lock-free single-producer /
//! single-consumer queue of `f32` samples (ringbuf's `HeapRb`), plus a few
//! atomic counters ([`RingStats`]) that say what went wrong without the
//! callback having to say it itself.
//!
//! Everything else (downmixing, resampling, framing, logging) happens on the
//! other side of the ring, on a thread that is allowed to be slow.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

/// Shared counters of a ring's health; cheap to clone, readable from any
/// thread while the callback keeps bumping them.
#[derive(Debug, Clone, Default)]
pub struct RingStats {
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    overruns: AtomicU64,
    underruns: AtomicU64,
    callbacks: AtomicU64,
}

/// A point-in-time copy of [`RingStats`], for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStatsSnapshot {
    pub overruns: u64,
    pub underruns: u64,
    pub callbacks: u64,
}

impl RingStats {
    /// Samples dropped because the ring was full when the producer pushed
    /// (capture: the DSP thread fell behind the device).
    pub fn overruns(&self) -> u64 {
        self.counters.overruns.load(Ordering::Relaxed)
    }

    /// Samples of silence substituted because the ring was empty when the
    /// consumer needed them (playback: the feeder fell behind the device).
    pub fn underruns(&self) -> u64 {
        self.counters.underruns.load(Ordering::Relaxed)
    }

    /// Device callbacks seen so far; a counter that stops moving means the
    /// stream has stalled.
    pub fn callbacks(&self) -> u64 {
        self.counters.callbacks.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> RingStatsSnapshot {
        RingStatsSnapshot {
            overruns: self.overruns(),
            underruns: self.underruns(),
            callbacks: self.callbacks(),
        }
    }

    /// Called once at the top of every device callback.
    #[inline]
    pub fn count_callback(&self) {
        self.counters.callbacks.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    fn add_overruns(&self, samples: usize) {
        if samples > 0 {
            self.counters
                .overruns
                .fetch_add(samples as u64, Ordering::Relaxed);
        }
    }

    #[inline]
    fn add_underruns(&self, samples: usize) {
        if samples > 0 {
            self.counters
                .underruns
                .fetch_add(samples as u64, Ordering::Relaxed);
        }
    }
}

/// Creates a ring holding up to `capacity` samples; all memory is allocated
/// here, none later.
///
/// # Panics
/// If `capacity` is zero (a programming error: there is nothing to size a
/// zero ring for).
pub fn sample_ring(capacity: usize) -> (RingProducer, RingConsumer, RingStats) {
    assert!(capacity > 0, "a sample ring needs a non-zero capacity");
    let (producer, consumer) = HeapRb::<f32>::new(capacity).split();
    let stats = RingStats::default();
    (
        RingProducer {
            inner: producer,
            stats: stats.clone(),
        },
        RingConsumer {
            inner: consumer,
            stats: stats.clone(),
        },
        stats,
    )
}

/// The writing end. Every method is wait-free and allocation-free, so it may
/// live inside a device callback.
pub struct RingProducer {
    inner: HeapProd<f32>,
    stats: RingStats,
}

impl RingProducer {
    /// Pushes as many samples as fit and returns how many did; the rest are
    /// left to the caller (who may retry later). Counts nothing.
    #[inline]
    pub fn push(&mut self, samples: &[f32]) -> usize {
        self.inner.push_slice(samples)
    }

    /// Pushes as many whole frames of `frame_width` interleaved samples as
    /// fit and counts the rest as overruns: for a capture callback, which
    /// cannot wait and must drop. Never splitting a frame keeps channels
    /// aligned for the reader after a drop.
    #[inline]
    pub fn push_or_drop(&mut self, samples: &[f32], frame_width: usize) -> usize {
        let fit = self.whole_frames_that_fit(samples.len(), frame_width);
        let pushed = self.inner.push_slice(&samples[..fit]);
        self.stats.add_overruns(samples.len() - pushed);
        pushed
    }

    /// As [`push_or_drop`](Self::push_or_drop) for samples converted on the
    /// fly (an `i16` device, say), so no intermediate buffer is needed.
    #[inline]
    pub fn push_iter_or_drop<I>(&mut self, samples: I, frame_width: usize) -> usize
    where
        I: ExactSizeIterator<Item = f32>,
    {
        let offered = samples.len();
        let fit = self.whole_frames_that_fit(offered, frame_width);
        let pushed = self.inner.push_iter(samples.take(fit));
        self.stats.add_overruns(offered - pushed);
        pushed
    }

    /// Like [`push`](Self::push) but only whole frames of `frame_width`
    /// samples, for a feeder that retries the rest later.
    #[inline]
    pub fn push_frames(&mut self, samples: &[f32], frame_width: usize) -> usize {
        let fit = self.whole_frames_that_fit(samples.len(), frame_width);
        self.inner.push_slice(&samples[..fit])
    }

    #[inline]
    fn whole_frames_that_fit(&self, offered: usize, frame_width: usize) -> usize {
        let frame_width = frame_width.max(1);
        let vacant = self.inner.vacant_len();
        offered.min(vacant - vacant % frame_width)
    }

    /// Samples that can be pushed right now without dropping any.
    pub fn vacant_len(&self) -> usize {
        self.inner.vacant_len()
    }

    /// Samples waiting for the consumer.
    pub fn occupied_len(&self) -> usize {
        self.inner.occupied_len()
    }

    pub fn capacity(&self) -> usize {
        self.inner.capacity().get()
    }

    pub fn stats(&self) -> &RingStats {
        &self.stats
    }
}

/// The reading end. Like the producer, safe to use inside a callback.
pub struct RingConsumer {
    inner: HeapCons<f32>,
    stats: RingStats,
}

impl RingConsumer {
    /// Pops up to `out.len()` samples into `out`, returns how many.
    #[inline]
    pub fn pop(&mut self, out: &mut [f32]) -> usize {
        self.inner.pop_slice(out)
    }

    /// Fills all of `out`: what the ring holds, then silence. The silent
    /// samples count as underruns only when `count_underruns` is set, since a
    /// player that has nothing queued is idle rather than starved.
    #[inline]
    pub fn pop_or_silence(&mut self, out: &mut [f32], count_underruns: bool) -> usize {
        let popped = self.inner.pop_slice(out);
        out[popped..].fill(0.0);
        if count_underruns {
            self.stats.add_underruns(out.len() - popped);
        }
        popped
    }

    /// Discards up to `count` samples without reading them; returns how many
    /// were discarded.
    #[inline]
    pub fn skip(&mut self, count: usize) -> usize {
        self.inner.skip(count)
    }

    /// Samples waiting to be popped.
    pub fn occupied_len(&self) -> usize {
        self.inner.occupied_len()
    }

    pub fn capacity(&self) -> usize {
        self.inner.capacity().get()
    }

    pub fn stats(&self) -> &RingStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_then_pop_preserves_order() {
        let (mut producer, mut consumer, stats) = sample_ring(8);
        assert_eq!(producer.push(&[1.0, 2.0, 3.0]), 3);
        assert_eq!(consumer.occupied_len(), 3);
        let mut out = [0.0; 2];
        assert_eq!(consumer.pop(&mut out), 2);
        assert_eq!(out, [1.0, 2.0]);
        assert_eq!(producer.push(&[4.0]), 1);
        let mut rest = [0.0; 4];
        assert_eq!(consumer.pop(&mut rest), 2);
        assert_eq!(&rest[..2], &[3.0, 4.0]);
        assert_eq!(stats.snapshot(), RingStatsSnapshot::default());
    }

    #[test]
    fn full_ring_counts_dropped_samples_as_overruns() {
        let (mut producer, mut consumer, stats) = sample_ring(4);
        assert_eq!(producer.push_or_drop(&[1.0, 2.0, 3.0], 1), 3);
        assert_eq!(producer.push_or_drop(&[4.0, 5.0, 6.0], 1), 1);
        assert_eq!(stats.overruns(), 2);
        // Plain push never counts: the caller keeps what did not fit.
        assert_eq!(producer.push(&[7.0]), 0);
        assert_eq!(stats.overruns(), 2);
        // The oldest samples survive; the newest were the ones dropped.
        let mut out = [0.0; 4];
        assert_eq!(consumer.pop(&mut out), 4);
        assert_eq!(out, [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn converted_push_counts_overruns_too() {
        let (mut producer, mut consumer, stats) = sample_ring(3);
        let raw: [i16; 5] = [0, 16384, -16384, 1, 2];
        let pushed = producer.push_iter_or_drop(raw.iter().map(|&s| s as f32 / 32768.0), 1);
        assert_eq!(pushed, 3);
        assert_eq!(stats.overruns(), 2);
        let mut out = [9.0; 3];
        consumer.pop(&mut out);
        assert_eq!(out, [0.0, 0.5, -0.5]);
    }

    #[test]
    fn drops_never_split_a_frame() {
        let (mut producer, mut consumer, stats) = sample_ring(5);
        // Stereo: 5 free slots hold two whole frames, not two and a half.
        assert_eq!(
            producer.push_or_drop(&[1.0, -1.0, 2.0, -2.0, 3.0, -3.0], 2),
            4
        );
        assert_eq!(stats.overruns(), 2);
        assert_eq!(producer.push_iter_or_drop([4.0, -4.0].into_iter(), 2), 0);
        assert_eq!(stats.overruns(), 4);
        let mut out = [0.0; 2];
        consumer.pop(&mut out);
        assert_eq!(producer.push_frames(&[5.0, -5.0, 6.0, -6.0], 2), 2);
        let mut rest = [0.0; 4];
        assert_eq!(consumer.pop(&mut rest), 4);
        assert_eq!(rest, [2.0, -2.0, 5.0, -5.0]);
    }

    #[test]
    fn empty_ring_pads_with_silence_and_counts_underruns_when_asked() {
        let (mut producer, mut consumer, stats) = sample_ring(8);
        producer.push(&[0.5, 0.25]);
        let mut out = [9.0; 5];
        assert_eq!(consumer.pop_or_silence(&mut out, true), 2);
        assert_eq!(out, [0.5, 0.25, 0.0, 0.0, 0.0]);
        assert_eq!(stats.underruns(), 3);

        let mut idle = [9.0; 4];
        assert_eq!(consumer.pop_or_silence(&mut idle, false), 0);
        assert_eq!(idle, [0.0; 4]);
        assert_eq!(stats.underruns(), 3, "idle silence is not an underrun");
    }

    #[test]
    fn skip_discards_without_reading() {
        let (mut producer, mut consumer, _stats) = sample_ring(8);
        producer.push(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(consumer.skip(3), 3);
        assert_eq!(consumer.skip(10), 1);
        assert_eq!(consumer.occupied_len(), 0);
        assert_eq!(producer.vacant_len(), 8);
    }

    #[test]
    fn works_across_threads() {
        let (mut producer, mut consumer, stats) = sample_ring(64);
        let total = 10_000usize;
        let writer = std::thread::spawn(move || {
            let mut next = 0usize;
            while next < total {
                stats.count_callback();
                let chunk: Vec<f32> = (next..(next + 16).min(total)).map(|i| i as f32).collect();
                let pushed = producer.push(&chunk);
                next += pushed;
                if pushed == 0 {
                    std::thread::yield_now();
                }
            }
            stats
        });
        let mut expected = 0usize;
        let mut buf = [0.0f32; 32];
        while expected < total {
            let n = consumer.pop(&mut buf);
            for &s in &buf[..n] {
                assert_eq!(s, expected as f32);
                expected += 1;
            }
            if n == 0 {
                std::thread::yield_now();
            }
        }
        let stats = writer.join().unwrap();
        assert!(stats.callbacks() > 0);
        assert_eq!(stats.overruns(), 0);
    }
}
