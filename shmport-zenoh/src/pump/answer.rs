//! An answer sent from the Zenoh thread that delivered the request.
//!
//! A small message that a Zenoh callback posts straight into the local port (the fast
//! path of `inbound.rs`) is often a request whose user answers at once. Left to the pump
//! thread, the answer waits for that thread to be woken by the port's doorbell: one
//! thread wake-up per direction that raw Zenoh does not pay, measured as most of the
//! bridge's round-trip overhead (1.23-1.35x raw Zenoh's, 64-byte messages on loopback,
//! against 0.89-1.00x with the answer sent from the callback; `examples/bench.rs`,
//! README "Performance"). The pump thread is still woken (the answer's post rings the
//! doorbell its last empty look armed), but after the answer has left.
//! So the callback that delivered a message watches the port for a moment (yielding its
//! core between looks, so the answering thread can run on it) and, when an answer comes,
//! forwards it itself, as Zenoh's own ping-pong examples answer from the subscriber's
//! callback.
//!
//! Bounds: a callback watches only when the bridge's previous sample was for the same
//! channel (one channel in a request-response exchange, not several taking turns, whose
//! answers would otherwise wait for one another on Zenoh's one receiving thread per
//! link); the watch lasts at most [`WATCH`](super::WATCH); a watch that sees no answer
//! makes the channel skip the next 1, 3, 7, ... deliveries (up to [`MAX_SKIP`]) before it
//! watches again, so a one-way stream pays one watch per [`MAX_SKIP`] messages, and the
//! other channels of the link (whose samples wait behind this callback) are held up only
//! while this one answers quickly. There is no watch when the pump thread has work from
//! the sample (credit to send or take, messages waiting for ring room). From the
//! callback, only what can be sent at once goes: messages whole in the ring, transferring
//! nothing, [`ANSWER_MAX`] bytes in all (one batch, one put), within the peer's credit;
//! anything else is left to the pump thread, woken for it. And nothing while a put of any
//! of the bridge's pumps is under way (checked before the watch and again before the
//! put, whose batch is then left to the pump thread): Zenoh's send queue may be full
//! then, and a put that waited on the callback's thread would stop the link's receiving
//! (the peer's own answers included) until the queue drains. What is not covered: a queue
//! still full after the last put returned, and puts of other publishers on a session the
//! application shares with the bridge ([`Bridge::from_session`](crate::Bridge)); there
//! the put waits as Zenoh's own ping-pong examples' puts from a callback would, and Zenoh
//! closes the link after its `wait_before_close` (5 s by default) if it never drains.

use std::sync::atomic::Ordering;

use super::{Pump, watch};

/// The most archive bytes the callback forwards itself after one delivery.
const ANSWER_MAX: usize = 16 << 10;

/// Deliveries skipped at most between two watches after watches that saw no answer.
const MAX_SKIP: u32 = 1023;

/// Whether the deliveries of a channel are answered at once, as the watches found.
#[derive(Debug, Default)]
pub(super) struct AnswerWatch {
    /// Deliveries to let pass before the next watch.
    skip: u32,
    /// Watches in a row that saw no answer.
    misses: u32,
}

impl AnswerWatch {
    fn due(&mut self) -> bool {
        if self.skip == 0 {
            return true;
        }
        self.skip -= 1;
        false
    }

    fn answered(&mut self, yes: bool) {
        if yes {
            self.misses = 0;
        } else {
            self.misses = (self.misses + 1).min(MAX_SKIP.count_ones());
            self.skip = (1 << self.misses) - 1;
        }
    }
}

impl Pump {
    /// Called by the Zenoh callback whose sample delivered a message whole, when the pump
    /// thread has nothing to do for the sample and the bridge's sample before it was this
    /// channel's too (samples of the bridge's channels are handled one after another on
    /// Zenoh's receiving thread, so a watch holds up every other channel of the link: with
    /// several channels taking turns, a server answering many clients, their answers go
    /// from their pump threads, in parallel, instead of each waiting for the answers
    /// before it). When a watch is due, watches the bridge-side port for the user's
    /// answer and forwards it. True when the pump thread should be woken: for what the
    /// port holds and this thread did not send, a batch it left unsent, or the channel's
    /// end.
    pub(super) fn answer_from_callback(&mut self) -> bool {
        if !self.wants_port() {
            return false;
        }
        // A put of the bridge under way: Zenoh's send queue may be full, and a put that
        // waited here would hold up this link's receiving.
        if self.puts_under_way() || !self.answer_watch.due() {
            return false;
        }
        match self.watch_port() {
            Watched::Answer => {}
            Watched::Nothing => {
                self.answer_watch.answered(false);
                return false;
            }
            // The pump thread, woken for it, waits for the lock this thread holds.
            Watched::PumpHasNews => return false,
        }
        // What is whole in the ring goes, up to ANSWER_MAX bytes in all (one batch, sent
        // by one put); the rest may need more than this thread should do (the proxy of a
        // transferred port is declared on the session, a large body waits for credit).
        let (sent, mut budget) = (self.sent_msgs, ANSWER_MAX);
        self.forward_where(|port| {
            let fits = port.peek_inline_len().filter(|&len| len <= budget);
            budget -= fits.unwrap_or(0);
            fits.is_some()
        });
        let answered = self.sent_msgs > sent;
        self.answer_watch.answered(answered);
        if answered {
            self.core
                .answers_from_callbacks
                .fetch_add(1, Ordering::Relaxed);
        }
        // Checked again just before the put: a batch left unsent goes with the pump
        // thread's next flush, after nothing (it is the last thing framed).
        if self.puts_under_way() {
            return true;
        }
        self.flush();
        self.ended.is_some() || self.port().is_some_and(|p| !p.is_empty())
    }

    fn puts_under_way(&self) -> bool {
        self.core.puts_under_way.load(Ordering::Relaxed) > 0
    }

    /// Looks at the port until it holds something, for [`WATCH`](super::WATCH) at most,
    /// or until the pump thread has news (a sample queued for it meanwhile).
    fn watch_port(&self) -> Watched {
        watch(|| {
            if self.port().is_some_and(|p| !p.is_empty()) {
                Some(Watched::Answer)
            } else if self.shared.notified.load(Ordering::Acquire) {
                Some(Watched::PumpHasNews)
            } else {
                None
            }
        })
        .unwrap_or(Watched::Nothing)
    }
}

/// What a watch of the port saw.
enum Watched {
    Answer,
    Nothing,
    PumpHasNews,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_that_see_no_answer_space_out_the_next_ones() {
        let mut w = AnswerWatch::default();
        let mut watched_at = Vec::new();
        for delivery in 0..40 {
            if w.due() {
                watched_at.push(delivery);
                w.answered(false);
            }
        }
        assert_eq!(watched_at, [0, 2, 6, 14, 30]);
    }

    /// Lets deliveries pass until a watch is due, `misses` times, each watch seeing no
    /// answer.
    fn miss(w: &mut AnswerWatch, misses: usize) {
        for _ in 0..misses {
            while !w.due() {}
            w.answered(false);
        }
    }

    #[test]
    fn an_answer_makes_the_next_delivery_watched_again() {
        let mut w = AnswerWatch::default();
        miss(&mut w, 5);
        while !w.due() {}
        w.answered(true);
        assert!(w.due());
    }

    #[test]
    fn skips_stop_growing_at_the_cap() {
        let mut w = AnswerWatch::default();
        miss(&mut w, 100);
        assert_eq!(w.skip, MAX_SKIP);
    }
}
