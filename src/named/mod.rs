//! Meeting other processes: by birth (`spawn`, `parent_port`), by an endpoint name, and
//! by a broadcast name.

pub(crate) mod broadcast;
pub(crate) mod endpoint;
pub(crate) mod process;
