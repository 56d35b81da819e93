//! Diagnostics: with the `tracing` feature, an event (target `shmport`) for what happens
//! silently otherwise: a channel poisoned, a peer process found gone, the descriptor limit
//! raised, a doorbell dropped. Without the feature the macro compiles its arguments (so
//! they stay checked) into nothing.
//!
//! Below every layer: it names nothing of the crate, and every layer may use it.

/// `event!(level, "format", args...)`: `level` is one of tracing's macros (`warn`,
/// `info`, `debug`, ...).
macro_rules! event {
    ($level:ident, $($arg:tt)+) => {{
        #[cfg(feature = "tracing")]
        ::tracing::$level!(target: "shmport", $($arg)+);
        #[cfg(not(feature = "tracing"))]
        if false {
            let _ = format_args!($($arg)+);
        }
    }};
}
