//! [`BridgeConfig`]: how to open a [`Bridge`](crate::Bridge), and the Zenoh configuration
//! it makes.

use std::time::Duration;

use crate::{BridgeError, pump};

/// How to open a [`Bridge`](crate::Bridge).
#[derive(Clone, Debug)]
pub struct BridgeConfig {
    pub(crate) listen: Vec<String>,
    pub(crate) connect: Vec<String>,
    pub(crate) realm: String,
    pub(crate) lease: Duration,
    pub(crate) multicast_scouting: bool,
    pub(crate) window_messages: u64,
    pub(crate) window_bytes: u64,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl BridgeConfig {
    /// No endpoints, realm `shmport`, a 10 s lease, multicast scouting off, a window of
    /// 1,024 messages and 32 MiB per channel direction.
    pub fn new() -> Self {
        BridgeConfig {
            listen: Vec::new(),
            connect: Vec::new(),
            realm: "shmport".into(),
            lease: Duration::from_secs(10),
            multicast_scouting: false,
            window_messages: 1024,
            window_bytes: 32 << 20,
        }
    }

    /// Listens on `endpoint`: `host:port` (TCP) or a Zenoh locator such as
    /// `tcp/0.0.0.0:7447` or, with the `tls` feature, `tls/host:port`.
    pub fn listen(mut self, endpoint: &str) -> Self {
        self.listen.push(locator(endpoint));
        self
    }

    /// Connects to `endpoint` (as for [`listen`](Self::listen)); Zenoh retries until
    /// the peer is up.
    pub fn connect(mut self, endpoint: &str) -> Self {
        self.connect.push(locator(endpoint));
        self
    }

    /// The key-expression prefix of every key the bridge uses (default `shmport`): bridges
    /// of different realms on one network do not see each other's names.
    pub fn realm(mut self, realm: &str) -> Self {
        self.realm = realm.into();
        self
    }

    /// How long a silent peer (stopped, unreachable) is trusted: after one lease its
    /// channels end with `Disconnected`. Zenoh sends four keep-alives per lease.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Turns Zenoh's multicast scouting on (off by default: peers meet only at the
    /// configured endpoints).
    pub fn multicast_scouting(mut self, on: bool) -> Self {
        self.multicast_scouting = on;
        self
    }

    /// The credit this bridge grants per channel direction: at most `messages` messages
    /// and `bytes` body bytes in flight or waiting in the bridge beyond the local ring.
    /// `bytes` is raised to at least 4 MiB (two chunks).
    pub fn window(mut self, messages: u64, bytes: u64) -> Self {
        self.window_messages = messages.max(1);
        self.window_bytes = bytes.max(2 * pump::CHUNK as u64);
        self
    }

    /// The Zenoh configuration this config stands for: peer mode, the endpoints, the
    /// lease, scouting.
    ///
    /// # Errors
    ///
    /// [`BridgeError::Zenoh`] when Zenoh refuses a value (a malformed endpoint).
    pub fn zenoh_config(&self) -> Result<zenoh::Config, BridgeError> {
        let mut c = zenoh::Config::default();
        let json = |v: &[String]| {
            let items: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
            format!("[{}]", items.join(","))
        };
        let set = |c: &mut zenoh::Config, k: &str, v: &str| {
            c.insert_json5(k, v).map_err(BridgeError::Zenoh)
        };
        set(&mut c, "mode", "\"peer\"")?;
        set(&mut c, "listen/endpoints", &json(&self.listen))?;
        set(&mut c, "connect/endpoints", &json(&self.connect))?;
        let multicast = if self.multicast_scouting {
            "true"
        } else {
            "false"
        };
        set(&mut c, "scouting/multicast/enabled", multicast)?;
        let lease = self.lease.as_millis().max(10).to_string();
        set(&mut c, "transport/link/tx/lease", &lease)?;
        Ok(c)
    }
}

fn locator(endpoint: &str) -> String {
    if endpoint.contains('/') {
        endpoint.into()
    } else {
        format!("tcp/{endpoint}")
    }
}
