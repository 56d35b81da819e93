//! Names in the abstract socket namespace, where endpoints and broadcast slots meet.

use crate::sys;

/// The abstract socket address of `name` for this user: `shmport/<uid>/<name>`. Nothing is
/// named on disk; users do not meet each other's names.
pub(crate) fn address(name: &str) -> String {
    format!("shmport/{}/{name}", sys::user_id())
}
