//! A shmport [`MessagePort`] whose peer lives on another host, bridged over
//! [Zenoh](https://zenoh.io) 1.x in peer mode.
//!
//! ```no_run
//! use std::time::Duration;
//! use shmport_zenoh::{Bridge, BridgeConfig};
//!
//! // Host A
//! let bridge = Bridge::open(BridgeConfig::new().listen("127.0.0.1:7447"))?;
//! let port = bridge.bind("jobs")?.accept()?;
//! let job = port.recv::<String>()?.data;
//!
//! // Host B
//! let bridge = Bridge::open(BridgeConfig::new().connect("127.0.0.1:7447"))?;
//! let port = bridge.connect("jobs", Duration::from_secs(5))?;
//! port.post_message(&String::from("resize 4k.png"), [])?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The port is an ordinary local `MessagePort`: `post_message`, `recv`, `PortSet`,
//! `recv_async` and `on_message` work on it unchanged. Its entangled end belongs to the
//! bridge, which forwards every message, undecoded ([`MessagePort::recv_raw`] /
//! [`MessagePort::post_raw`]), to the bridge on the other host, which posts it into the
//! far port. The final receiver validates and type-checks it as on one host.
//!
//! # Semantics across hosts
//!
//! - **Order, nothing lost, nothing duplicated.** Each direction of a channel is a
//!   stream of frames numbered from 0. A gap or a duplicate, a Zenoh transport torn down,
//!   or the peer bridge's liveliness token disappearing ends the channel: the local port
//!   receives what arrived intact, then `Disconnected`. A channel never resumes.
//! - **Backpressure end to end.** The receiving bridge grants credit (messages and body
//!   bytes) as its local ring accepts messages; a sender without credit leaves messages in
//!   its local ring, so a slow consumer makes the remote `post_message` wait. The bridge
//!   never makes Zenoh queue more than the receiver granted, so Zenoh neither drops
//!   (every publisher uses `CongestionControl::Block`) nor stalls its shared send queue,
//!   and one stalled channel does not delay another.
//! - **Transfers.** A transferred [`ArrayBuffer`](shmport::ArrayBuffer) travels as bytes,
//!   in chunks, and arrives as a shared-memory buffer, copied once on arrival (any size:
//!   more than Zenoh's 1 GiB message limit works). A transferred port stays with the
//!   sending bridge, which proxies it on a channel of its own: its queued messages follow,
//!   in order; relayed back and forth, it still works.
//! - **Close and death.** Closing or dropping a port: the far side receives everything
//!   posted before, then `Disconnected`. A killed remote process is noticed when its TCP
//!   connection drops (milliseconds); a silent one (stopped, cable pulled) after one Zenoh
//!   lease ([`BridgeConfig::lease`]).
//!
//! # Threads, not async
//!
//! Zenoh runs its own runtime for the network; the bridge adds one plain thread per
//! channel (a *pump*) and uses Zenoh's blocking API (`zenoh::Wait`). A pump's state (the
//! bridge-side port, sequence numbers, credit) sits behind a lock. The pump thread sends
//! (all but the answers below):
//! it waits with `poll(2)` on its port's [readiness
//! descriptor](shmport::MessagePort::readiness_fd) and a doorbell socket, without holding
//! the lock, and reads the port as credit allows. Samples from the peer up to 64 KiB are
//! handled by the Zenoh callback that delivers them, straight into the local port, when
//! the lock is free and nothing is queued before them; otherwise (the pump thread is busy,
//! the local ring is full, a frame transfers ports, which declares Zenoh keys, a larger
//! sample, whose copy is better overlapped with Zenoh's next read) they are queued and the
//! doorbell rung. A callback never waits for the local ring. After a callback delivered a
//! small message whole (and the pump thread has nothing to do for the sample), it watches
//! the port for up to 50 µs, yielding its core between looks, and sends up to 16 KiB of
//! small answers posted meanwhile itself, in one put, so the answer does not wait for the
//! pump thread to wake ([`Bridge::answers_from_callbacks`] counts them). It does not when
//! the bridge's previous sample was another channel's (a link's samples are handled one
//! after another: channels taking turns would wait for each other's answers), nor while
//! another put of the bridge is under way (Zenoh's send queue may be full, and that put
//! would wait on Zenoh's receiving thread), and ever more rarely while watches see no
//! answer; see `pump/answer.rs`. After one that had waited, the pump thread watches
//! instead. Threads because every operation on the
//! local side is a synchronous `MessagePort` call, because a channel blocked by its
//! consumer must not hold anything another channel needs, and because the bridge then
//! pulls no async runtime into programs that have none.
//!
//! # Security
//!
//! Nothing listens unless [`BridgeConfig::listen`] says so, and multicast scouting is
//! off. Every frame from the network is untrusted: lengths, counts, sequence numbers and
//! credit are checked ([`frame`]), and a violation ends that channel only. To restrict
//! who may connect, listen on a private interface and use Zenoh's TLS transport with
//! mutual authentication (the `tls` feature; `tls/host:port` endpoints, certificates in
//! `transport/link/tls` of a Zenoh config given to [`Bridge::from_session`]); a
//! [realm](BridgeConfig::realm) separates deployments that share a network, but is not
//! access control.
//!
//! # Stable type identity
//!
//! A message's type fingerprint hashes its Rust type name, so two separately built
//! programs can disagree about the same type. Declare a stable name for the type in the
//! core, on both sides, before its first message
//! ([`shmport::declare_stable_name`]`::<Job>("com.example.Job/1")`): the fingerprint then
//! hashes that name, so both programs put and expect the same one, and the bridge carries
//! it unchanged, as it carries every fingerprint. Types without a stable name travel with
//! their type name's fingerprint, which is right when both sides run the same build.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
pub mod frame;
mod pump;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use shmport::{MessageChannel, MessagePort};
use zenoh::Wait;
use zenoh::liveliness::LivelinessToken;
use zenoh::pubsub::Subscriber;
use zenoh::query::Query;
use zenoh::sample::SampleKind;

pub use config::BridgeConfig;
pub use zenoh;

use frame::Hello;

/// The README's code blocks, compiled and run as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Why a bridge operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum BridgeError {
    /// Zenoh refused (opening the session, declaring a key, a query).
    Zenoh(zenoh::Error),
    /// shmport refused (a channel for the local port).
    Shmport(shmport::Error),
    /// A name or realm that cannot be part of a key expression.
    InvalidName(&'static str),
    /// Nobody answered in time (connect), or the peer was not seen alive in time.
    Timeout,
    /// The peer answered with something that is not a handshake of this version.
    Protocol(frame::FrameError),
    /// The operating system refused a resource of the bridge (a channel's doorbell socket).
    Io(std::io::Error),
}

impl fmt::Display for BridgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BridgeError::Zenoh(e) => write!(f, "zenoh: {e}"),
            BridgeError::Shmport(e) => write!(f, "shmport: {e}"),
            BridgeError::InvalidName(why) => write!(f, "invalid name: {why}"),
            BridgeError::Timeout => write!(f, "timed out"),
            BridgeError::Protocol(e) => write!(f, "protocol: {e}"),
            BridgeError::Io(e) => write!(f, "io: {e}"),
        }
    }
}

impl std::error::Error for BridgeError {}

impl From<shmport::Error> for BridgeError {
    fn from(e: shmport::Error) -> Self {
        BridgeError::Shmport(e)
    }
}

/// Which peer bridges are alive, and the channels to tell when one goes.
#[derive(Default)]
struct Peers {
    alive: HashSet<String>,
    gone: HashSet<String>,
    watchers: HashMap<String, Vec<Weak<pump::Shared>>>,
}

struct PeerTable {
    peers: Mutex<Peers>,
    changed: Condvar,
}

impl PeerTable {
    fn on_sample(&self, prefix: &str, key: &str, kind: SampleKind) {
        let Some(id) = key.strip_prefix(prefix) else {
            return;
        };
        let mut p = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        match kind {
            SampleKind::Put => {
                p.alive.insert(id.to_string());
            }
            SampleKind::Delete => {
                p.alive.remove(id);
                p.gone.insert(id.to_string());
                for w in p.watchers.remove(id).unwrap_or_default() {
                    if let Some(shared) = w.upgrade() {
                        shared.peer_gone();
                    }
                }
            }
        }
        drop(p);
        self.changed.notify_all();
    }

    /// Tells `shared` when `peer` goes (at once if it already went).
    fn watch(&self, peer: &str, shared: &Arc<pump::Shared>) {
        let mut p = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if p.gone.contains(peer) {
            drop(p);
            shared.peer_gone();
            return;
        }
        let list = p.watchers.entry(peer.to_string()).or_default();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(shared));
    }

    /// Waits until `peer`'s token is seen (true) or it went or the deadline passed.
    fn wait_alive(&self, peer: &str, deadline: Instant) -> bool {
        let mut p = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if p.alive.contains(peer) {
                return true;
            }
            if p.gone.contains(peer) {
                return false;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            p = self
                .changed
                .wait_timeout(p, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// What every channel of a bridge shares.
pub(crate) struct Core {
    session: zenoh::Session,
    realm: String,
    id: String,
    window_messages: u64,
    window_bytes: u64,
    peers: Arc<PeerTable>,
    pumps: Mutex<usize>,
    pumps_done: Condvar,
    /// Puts of this bridge's pumps under way: while any is, Zenoh's send queue may be
    /// full, and a Zenoh callback sends no answer itself (`pump/answer.rs`).
    puts_under_way: AtomicUsize,
    /// Deliveries whose answer a Zenoh callback sent itself (`pump/answer.rs`).
    answers_from_callbacks: AtomicU64,
    /// The channel whose sample a Zenoh callback of this bridge handled last (the address
    /// of its shared state; `pump/answer.rs`).
    last_sample: Arc<AtomicUsize>,
    _token: LivelinessToken,
    _live: Subscriber<()>,
}

impl Core {
    fn hello(&self, channel: u64) -> Hello {
        Hello {
            channel,
            bridge: self.id.clone(),
        }
    }

    fn channel_key(&self, channel: u64, to_origin: bool) -> String {
        let end = if to_origin { "o" } else { "r" };
        format!("{}/ch/{channel:016x}/{end}", self.realm)
    }
}

/// A bridge: one Zenoh session, and the channels it carries.
///
/// Dropping it does not end its channels (each holds what it needs); [`close`](Self::close)
/// waits for them.
pub struct Bridge {
    core: Arc<Core>,
}

impl fmt::Debug for Bridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bridge")
            .field("id", &self.core.id)
            .field("realm", &self.core.realm)
            .finish_non_exhaustive()
    }
}

impl Bridge {
    /// Opens a Zenoh session as `config` says and a bridge on it.
    ///
    /// # Errors
    ///
    /// [`BridgeError::Zenoh`] when the session cannot open (an endpoint that cannot be
    /// bound), [`BridgeError::InvalidName`] for a realm with wildcards.
    pub fn open(config: BridgeConfig) -> Result<Bridge, BridgeError> {
        let session = zenoh::open(config.zenoh_config()?)
            .wait()
            .map_err(BridgeError::Zenoh)?;
        Bridge::from_session(session, config)
    }

    /// A bridge on an existing session (its endpoints, lease and scouting are the
    /// session's; `config`'s realm and window apply).
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn from_session(
        session: zenoh::Session,
        config: BridgeConfig,
    ) -> Result<Bridge, BridgeError> {
        check_key_part(&config.realm, true)?;
        let id = format!("{}-{:016x}", session.zid(), pump::random_u64());
        let prefix = format!("{}/live/", config.realm);
        let peers = Arc::new(PeerTable {
            peers: Mutex::new(Peers::default()),
            changed: Condvar::new(),
        });
        let table = peers.clone();
        let cb_prefix = prefix.clone();
        let live = session
            .liveliness()
            .declare_subscriber(format!("{prefix}*"))
            .history(true)
            .callback(move |s| table.on_sample(&cb_prefix, s.key_expr().as_str(), s.kind()))
            .wait()
            .map_err(BridgeError::Zenoh)?;
        let token = session
            .liveliness()
            .declare_token(format!("{prefix}{id}"))
            .wait()
            .map_err(BridgeError::Zenoh)?;
        Ok(Bridge {
            core: Arc::new(Core {
                session,
                realm: config.realm,
                id,
                window_messages: config.window_messages,
                window_bytes: config.window_bytes,
                peers,
                pumps: Mutex::new(0),
                pumps_done: Condvar::new(),
                puts_under_way: AtomicUsize::new(0),
                answers_from_callbacks: AtomicU64::new(0),
                last_sample: Arc::default(),
                _token: token,
                _live: live,
            }),
        })
    }

    /// This bridge's id: its liveliness token is `<realm>/live/<id>`.
    pub fn id(&self) -> &str {
        &self.core.id
    }

    /// How many times one of this bridge's Zenoh callbacks, having posted a message into
    /// its local port, sent the answer the port's user posted at once itself rather than
    /// leaving it to the channel's pump thread (see Threads in the crate docs): a count
    /// for tests and for judging whether a workload is request-response.
    pub fn answers_from_callbacks(&self) -> u64 {
        self.core.answers_from_callbacks.load(Ordering::Relaxed)
    }

    /// The Zenoh session.
    pub fn session(&self) -> &zenoh::Session {
        &self.core.session
    }

    /// Offers `name` to remote [`connect`](Self::connect)s.
    ///
    /// # Errors
    ///
    /// [`BridgeError::InvalidName`] for a name with `/` or wildcards,
    /// [`BridgeError::Zenoh`] if the name cannot be declared.
    pub fn bind(&self, name: &str) -> Result<Listener, BridgeError> {
        check_key_part(name, false)?;
        let queryable = self
            .core
            .session
            .declare_queryable(format!("{}/svc/{name}", self.core.realm))
            .wait()
            .map_err(BridgeError::Zenoh)?;
        Ok(Listener {
            core: self.core.clone(),
            queryable,
        })
    }

    /// Connects to the remote listener of `name`, waiting at most `timeout` for it to
    /// answer (the session may still be connecting), and returns the local end.
    ///
    /// # Errors
    ///
    /// [`BridgeError::Timeout`] when nobody answered, [`BridgeError::Protocol`] for an
    /// answer that is not a handshake, [`BridgeError::Shmport`] when the local channel
    /// cannot be made, [`BridgeError::Zenoh`] when a key cannot be declared.
    pub fn connect(&self, name: &str, timeout: Duration) -> Result<MessagePort, BridgeError> {
        check_key_part(name, false)?;
        let deadline = Instant::now() + timeout;
        let core = &self.core;
        let channel = pump::random_u64();
        let ch = MessageChannel::new()?;
        let end = pump::End::declare(core, channel, true)?;
        let hello = core.hello(channel).encode();
        let key = format!("{}/svc/{name}", core.realm);
        let answer = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(BridgeError::Timeout);
            }
            let replies = core
                .session
                .get(&key)
                .payload(hello.clone())
                .timeout(left)
                .wait()
                .map_err(BridgeError::Zenoh)?;
            let mut got = None;
            while let Ok(reply) = replies.recv() {
                if let Ok(sample) = reply.result() {
                    got = Some(Hello::decode(&sample.payload().to_bytes()));
                    break;
                }
            }
            match got {
                Some(Ok(h)) if h.channel == channel => break h,
                Some(Ok(_)) => {
                    return Err(BridgeError::Protocol(frame::FrameError("wrong channel")));
                }
                Some(Err(e)) => return Err(BridgeError::Protocol(e)),
                // No listener known yet (the session may still be connecting): ask again.
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        if !core.peers.wait_alive(&answer.bridge, deadline) {
            end.abandon();
            return Err(BridgeError::Timeout);
        }
        end.start(core, answer.bridge, ch.port1);
        Ok(ch.port2)
    }

    /// Waits until every channel of this bridge has ended (both ports closed, or the
    /// peer gone) or `timeout` passed, then closes the session: what a program does
    /// before it exits, so that what it posted last leaves the host. True when every
    /// channel had ended.
    pub fn close(self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut n = self.core.pumps.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            n = self
                .core
                .pumps_done
                .wait_timeout(n, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let all = *n == 0;
        drop(n);
        let _ = self.core.session.close().wait();
        all
    }
}

/// A name offered by [`Bridge::bind`]; [`accept`](Self::accept) takes the next connection.
pub struct Listener {
    core: Arc<Core>,
    queryable: zenoh::query::Queryable<zenoh::handlers::FifoChannelHandler<Query>>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener").finish_non_exhaustive()
    }
}

impl Listener {
    /// Waits for the next remote `connect` and returns the local end of its channel.
    ///
    /// # Errors
    ///
    /// [`BridgeError::Zenoh`] when the session closed, [`BridgeError::Shmport`] when the
    /// local channel cannot be made.
    pub fn accept(&self) -> Result<MessagePort, BridgeError> {
        loop {
            let query = self.queryable.recv().map_err(BridgeError::Zenoh)?;
            if let Some(port) = self.answer(query)? {
                return Ok(port);
            }
        }
    }

    /// As [`accept`](Self::accept), giving up after `timeout` with `Ok(None)`.
    ///
    /// # Errors
    ///
    /// As [`accept`](Self::accept).
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Option<MessagePort>, BridgeError> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(query) = self
                .queryable
                .recv_deadline(deadline)
                .map_err(BridgeError::Zenoh)?
            else {
                return Ok(None);
            };
            if let Some(port) = self.answer(query)? {
                return Ok(Some(port));
            }
        }
    }

    /// Answers one connect: `None` when it was not a valid handshake (it is refused and
    /// the listener goes on).
    fn answer(&self, query: Query) -> Result<Option<MessagePort>, BridgeError> {
        let core = &self.core;
        let hello = match query.payload().map(|p| Hello::decode(&p.to_bytes())) {
            Some(Ok(h)) => h,
            _ => {
                let _ = query.reply_err("not a shmport-zenoh handshake").wait();
                return Ok(None);
            }
        };
        let ch = MessageChannel::new()?;
        let end = pump::End::declare(core, hello.channel, false)?;
        query
            .reply(query.key_expr().clone(), core.hello(hello.channel).encode())
            .wait()
            .map_err(BridgeError::Zenoh)?;
        drop(query);
        if !core
            .peers
            .wait_alive(&hello.bridge, Instant::now() + PEER_SEEN_WITHIN)
        {
            // The connector went (or never announced itself): nothing to accept.
            end.abandon();
            return Ok(None);
        }
        end.start(core, hello.bridge, ch.port1);
        Ok(Some(ch.port2))
    }
}

/// How long `accept` waits to see a connector's liveliness token (normally there long
/// before its handshake: it is declared when its bridge opens).
const PEER_SEEN_WITHIN: Duration = Duration::from_secs(10);

/// Checks that `s` can be part of a key expression: no wildcards, and no `/` unless
/// `chunks` (a realm may have several).
fn check_key_part(s: &str, chunks: bool) -> Result<(), BridgeError> {
    if s.is_empty() {
        return Err(BridgeError::InvalidName("empty"));
    }
    if s.contains(['*', '$', '?', '#']) {
        return Err(BridgeError::InvalidName("wildcard characters (* $ ? #)"));
    }
    if !chunks && s.contains('/') {
        return Err(BridgeError::InvalidName("a name is one key chunk: no '/'"));
    }
    if s.starts_with('/') || s.ends_with('/') || s.contains("//") {
        return Err(BridgeError::InvalidName("empty key chunk"));
    }
    Ok(())
}
