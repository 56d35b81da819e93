//! Busy-waiting that gives up: a receiver that spins on shared memory has no other way to
//! learn that its peer died or stopped, so after [`GIVE_UP`] without progress it fails the
//! measurement instead of spinning forever.

use std::time::{Duration, Instant};

use crate::Result;

/// How long a spinning wait may see nothing before it fails.
pub const GIVE_UP: Duration = Duration::from_secs(10);

/// Polls between two looks at the clock.
const POLLS_PER_CLOCK: u32 = 1 << 16;

/// Calls `poll` until it returns a value, spinning in between.
pub fn until<T>(mut poll: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let mut polls = 0u32;
    let mut since: Option<Instant> = None;
    loop {
        if let Some(v) = poll()? {
            return Ok(v);
        }
        polls = polls.wrapping_add(1);
        if polls.is_multiple_of(POLLS_PER_CLOCK) {
            let start = *since.get_or_insert_with(Instant::now);
            if start.elapsed() > GIVE_UP {
                return Err(format!(
                    "nothing arrived for {} s: the peer is gone or stuck",
                    GIVE_UP.as_secs()
                )
                .into());
            }
        }
        std::hint::spin_loop();
    }
}
