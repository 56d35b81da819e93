//! A hostile peer that speaks the handshake, then sends frames that break the protocol:
//! each ends its own channel (after what arrived intact), and another channel of the same
//! bridge keeps working.

mod common;

use std::time::Duration;

use common::*;
use shmport::{MessagePort, RawMessage, RecvTimeoutError};
use shmport_zenoh::frame::{self, Hello, MsgHeader};
use shmport_zenoh::zenoh;
use shmport_zenoh::{Bridge, BridgeConfig};
use zenoh::Wait;

/// A peer that follows the protocol only as far as the handshake.
struct Hostile {
    session: zenoh::Session,
    realm: String,
    _token: zenoh::liveliness::LivelinessToken,
    id: String,
}

impl Hostile {
    fn new(realm: &str, endpoint: &str) -> Hostile {
        let mut c = BridgeConfig::new()
            .connect(endpoint)
            .zenoh_config()
            .unwrap();
        c.insert_json5("scouting/multicast/enabled", "false")
            .unwrap();
        let session = zenoh::open(c).wait().unwrap();
        let id = "hostile".to_string();
        let token = session
            .liveliness()
            .declare_token(format!("{realm}/live/{id}"))
            .wait()
            .unwrap();
        Hostile {
            session,
            realm: realm.into(),
            _token: token,
            id,
        }
    }

    /// Connects to `name` as channel `channel`, waits for the acceptor's first credit,
    /// then publishes `frames` as one sample.
    fn attack(
        &self,
        listener: &shmport_zenoh::Listener,
        channel: u64,
        frames: Vec<u8>,
    ) -> MessagePort {
        let base = format!("{}/ch/{channel:016x}", self.realm);
        let inbox = self
            .session
            .declare_subscriber(format!("{base}/o"))
            .wait()
            .unwrap();
        let hello = Hello {
            channel,
            bridge: self.id.clone(),
        };
        let session = self.session.clone();
        let key = format!("{}/svc/h", self.realm);
        let asker = std::thread::spawn(move || {
            loop {
                let replies = session.get(&key).payload(hello.encode()).wait().unwrap();
                if replies.recv().is_ok_and(|r| r.result().is_ok()) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20)); // session still connecting
            }
        });
        let port = listener.accept().unwrap();
        asker.join().unwrap();
        // The acceptor's first frame is its credit grant.
        let first = inbox.recv().unwrap();
        let bytes = first.payload().to_bytes();
        let (got, err) = frame::decode_all(&bytes);
        assert!(err.is_none() && matches!(got[0], frame::Frame::Credit { .. }));
        self.session
            .put(format!("{base}/r"), frames)
            .wait()
            .unwrap();
        port
    }
}

fn msg(seq: u64, value: u32) -> Vec<u8> {
    let raw = RawMessage::encode(&value).unwrap();
    let mut out = Vec::new();
    frame::put_msg(
        &mut out,
        &MsgHeader {
            seq,
            fingerprint: raw.fingerprint,
            archive_len: raw.archive.len() as u32,
            ports: Vec::new(),
            buffers: Vec::new(),
            inline: (&raw.archive[..]).into(),
        },
    );
    out
}

fn ends_after(port: &MessagePort, intact: &[u32]) {
    for &v in intact {
        assert_eq!(port.recv_timeout::<u32>(PATIENCE).unwrap().data, v);
    }
    assert!(matches!(
        port.recv_timeout::<u32>(PATIENCE),
        Err(RecvTimeoutError::Disconnected)
    ));
}

#[test]
fn hostile_frames_end_only_their_own_channel() {
    let realm = realm("hostile");
    let (bridge, endpoint) = listening_bridge(&realm, BridgeConfig::new().window(4, 1 << 20));
    let listener = bridge.bind("h").unwrap();
    let good_l = bridge.bind("good").unwrap();
    let good_side = Bridge::open(BridgeConfig::new().realm(&realm).connect(&endpoint)).unwrap();
    let good = std::thread::scope(|s| {
        let connecting = s.spawn(|| good_side.connect("good", PATIENCE).unwrap());
        let far = good_l.accept().unwrap();
        (connecting.join().unwrap(), far)
    });
    let (good, good_far) = good;
    let hostile = Hostile::new(&realm, &endpoint);

    let cases: Vec<(&str, Vec<u8>, Vec<u32>)> = vec![
        ("garbage", vec![0xff; 64], vec![]),
        ("a gap", msg(1, 5), vec![]),
        ("a duplicate", [msg(0, 5), msg(0, 6)].concat(), vec![5]),
        (
            "more messages than granted",
            (0..5).flat_map(|i| msg(i, i as u32)).collect(),
            vec![0, 1, 2, 3],
        ),
        (
            "a chunk outside a message",
            {
                let mut f = Vec::new();
                frame::put_chunk_header(&mut f, 0, 3);
                f.extend_from_slice(b"abc");
                f
            },
            vec![],
        ),
        ("a truncated frame", msg(0, 5)[..10].to_vec(), vec![]),
        (
            "frames after close",
            {
                let mut f = msg(0, 5);
                frame::put_close(&mut f, 1);
                f.extend(msg(2, 6));
                f
            },
            vec![5],
        ),
    ];
    for (i, (what, frames, intact)) in cases.into_iter().enumerate() {
        eprintln!("hostile: {what}");
        let port = hostile.attack(&listener, 0x4000 + i as u64, frames);
        ends_after(&port, &intact);
        // The well-behaved channel of the same bridge is untouched.
        good.post_message(&(i as u32), []).unwrap();
        assert_eq!(
            good_far.recv_timeout::<u32>(PATIENCE).unwrap().data,
            i as u32
        );
    }
}
