//! Tests of the port against a hostile or broken peer.

#[cfg(all(test, not(loom)))]
mod corrupt_ring {

    use crate::error::{MessageError, RecvError};

    use crate::wire::codec::KIND_MESSAGE;

    use crate::shm::segment::Side;
    use crate::sys::sync::Ordering;

    use crate::MessageChannel;

    use crate::wire::codec::fingerprint_of;

    #[test]
    fn corrupt_archive_bytes_with_the_right_fingerprint_are_a_message_error() {
        let ch = MessageChannel::new().unwrap();
        let fp = fingerprint_of::<Vec<String>>();
        assert!(
            ch.port1
                .tx
                .borrow_mut()
                .try_write(&[0xff; 64], KIND_MESSAGE, fp)
        );
        ch.port1
            .post_message(&vec![String::from("ok")], [])
            .unwrap();
        assert!(matches!(
            ch.port2.recv::<Vec<String>>(),
            Err(RecvError::MessageError(MessageError::Invalid(_)))
        ));
        assert_eq!(ch.port2.recv::<Vec<String>>().unwrap().data, ["ok"]);
    }

    #[test]
    fn an_unknown_record_kind_is_a_message_error_and_the_port_keeps_working() {
        let ch = MessageChannel::new().unwrap();
        assert!(ch.port1.tx.borrow_mut().try_write(&[0; 16], 77, 0));
        ch.port1.post_message(&1u8, []).unwrap();
        assert!(matches!(
            ch.port2.recv::<u8>(),
            Err(RecvError::MessageError(MessageError::UnknownKind(77)))
        ));
        assert_eq!(ch.port2.recv::<u8>().unwrap().data, 1);
    }

    #[test]
    fn impossible_ring_metadata_is_reported_once_then_disconnected() {
        let ch = MessageChannel::new().unwrap();
        ch.port1
            .seg
            .ring(Side::ZERO)
            .forge(0, 1, u32::MAX, KIND_MESSAGE);
        assert!(matches!(
            ch.port2.recv::<u8>(),
            Err(RecvError::MessageError(MessageError::Corrupt(_)))
        ));
        assert!(matches!(
            ch.port2.recv::<u8>(),
            Err(RecvError::Disconnected)
        ));
    }

    #[test]
    fn the_peer_of_a_poisoned_port_sees_disconnected() {
        let ch = MessageChannel::new().unwrap();
        ch.port1.seg.ring(Side::ZERO).forge(0, 1, 0, 0);
        assert!(ch.port2.try_recv::<u8>().is_err());
        assert!(
            ch.port1
                .post_message(&1u8, [])
                .unwrap_err()
                .is_disconnected()
        );
    }

    #[test]
    fn a_consumer_index_rewritten_by_the_peer_poisons_the_producer() {
        let ch = MessageChannel::builder().capacity(4096).build().unwrap();
        while ch.port1.try_post_message(&[0u8; 64], []).is_ok() {}
        ch.port1
            .seg
            .ring_ctrl(Side::ZERO)
            .head
            .store(1 << 40, Ordering::Relaxed);
        let err = ch.port1.post_message(&[0u8; 64], []).unwrap_err();
        assert!(err.is_disconnected(), "{err}");
    }
}

#[cfg(all(test, not(loom)))]
mod forged_transfers {
    //! Transfer records as a buggy or hostile peer could write them.

    use super::super::*;
    use crate::error::{MessageError, RecvError};
    use crate::shm::buffer::ArrayBuffer;

    use crate::sys;
    use crate::wire::transfer::{
        self, ITEM_BODY, ITEM_BUFFER, ITEM_PORT, ITEM_SLOT, Item, KIND_TRANSFER, SOCKET_MESSAGE,
        TransferHeader,
    };

    use crate::MessageChannel;
    use crate::port::readiness::DOORBELLS_PER_DRAIN;
    use crate::port::transfer_out::next_transfer_seq;
    use crate::shm::buffer::Wire;
    use crate::wire::codec::fingerprint_of;
    use rkyv::util::AlignedVec;
    use std::os::fd::{AsFd, BorrowedFd};

    /// Posts a transfer record with these items and descriptors, and an archive of `0u8`
    /// (inline, unless the last item is a body).
    fn post_raw(port: &MessagePort, items: &[Item], fds: &[BorrowedFd<'_>], with_note: bool) {
        let mut archive = rkyv::to_bytes::<rkyv::rancor::Error>(&0u8).unwrap();
        if items.last().is_some_and(|i| i.kind == ITEM_BODY) {
            archive.clear();
        }
        let seq = next_transfer_seq();
        let header = TransferHeader {
            seq,
            items: items.len() as u32,
            fds: fds.len() as u32,
            inline_len: archive.len() as u32,
            reserved: 0,
        };
        let mut payload = AlignedVec::<16>::new();
        payload.extend_from_slice(bytemuck::bytes_of(&header));
        payload.extend_from_slice(bytemuck::cast_slice(items));
        payload.resize(transfer::archive_offset(items.len()), 0);
        payload.extend_from_slice(&archive);
        if with_note {
            let mut note = [0u8; SOCKET_MESSAGE];
            note[..8].copy_from_slice(&seq.to_le_bytes());
            sys::send_with_fds(port.socket().unwrap(), &note, fds, true).unwrap();
        }
        assert!(
            port.tx
                .borrow_mut()
                .try_write(&payload, KIND_TRANSFER, fingerprint_of::<u8>())
        );
    }

    fn item(kind: u32, side: u32, len: u64, reserved: u64) -> Item {
        Item {
            kind,
            side,
            len,
            reserved,
        }
    }

    /// Posts a pooled buffer from port1 to port2: its slot, generation, and the event.
    fn deliver_a_pooled_buffer(ch: &MessageChannel) -> (u32, u32, MessageEvent<u8>) {
        let buf = ArrayBuffer::new(100).unwrap();
        let Wire::Slot {
            slot, generation, ..
        } = buf.wire()
        else {
            panic!("a 100-byte buffer is pooled")
        };
        ch.port1.post_message(&0u8, [buf.into()]).unwrap();
        (slot, generation, ch.port2.recv::<u8>().unwrap())
    }

    /// A buffer larger than the largest pooled class: it has a region (and descriptor) of
    /// its own.
    fn own_region() -> ArrayBuffer {
        ArrayBuffer::new((64 << 20) + 4096).unwrap()
    }

    fn own_fd(region: &ArrayBuffer) -> BorrowedFd<'_> {
        let Wire::Own(fd) = region.wire() else {
            panic!("a buffer over 64 MiB has a region of its own")
        };
        fd
    }

    fn transfer_error(r: Result<MessageEvent<u8>, RecvError>) -> bool {
        matches!(r, Err(RecvError::MessageError(MessageError::Transfer(_))))
    }

    #[test]
    fn a_replayed_pooled_buffer_descriptor_is_a_message_error() {
        let ch = MessageChannel::new().unwrap();
        let (slot, generation, first) = deliver_a_pooled_buffer(&ch);
        // Replay the same descriptor: the slot is owned by the receiver now, not in transit.
        let (heap, ..) = crate::shm::heap::allocate(0).unwrap().unwrap();
        post_raw(
            &ch.port1,
            &[item(ITEM_SLOT, slot, 100, generation.into())],
            &[heap.fd()],
            true,
        );
        assert!(transfer_error(ch.port2.recv::<u8>()));
        drop(first);
        ch.port1.post_message(&7u8, []).unwrap();
        assert_eq!(ch.port2.recv::<u8>().unwrap().data, 7);
    }

    #[test]
    fn a_slot_rewritten_to_in_transit_cannot_give_this_process_a_second_buffer_on_it() {
        let ch = MessageChannel::new().unwrap();
        let (slot, generation, _held) = deliver_a_pooled_buffer(&ch);
        // A hostile peer flips the slot back to "in transit" and replays the descriptor.
        let (heap, ..) = crate::shm::heap::allocate(0).unwrap().unwrap();
        let state = heap_state_word(&heap, slot);
        state.store(
            u64::from((generation << 2) | 2),
            std::sync::atomic::Ordering::Relaxed,
        );
        post_raw(
            &ch.port1,
            &[item(ITEM_SLOT, slot, 100, generation.into())],
            &[heap.fd()],
            true,
        );
        assert!(transfer_error(ch.port2.recv::<u8>()));
    }

    #[test]
    fn a_slot_we_hold_that_a_peer_marks_free_is_never_allocated_again() {
        let a = ArrayBuffer::new(100).unwrap();
        let Wire::Slot { slot, .. } = a.wire() else {
            panic!("pooled")
        };
        let (heap, ..) = crate::shm::heap::allocate(0).unwrap().unwrap();
        heap_state_word(&heap, slot).store(0, std::sync::atomic::Ordering::Relaxed);
        let others: Vec<ArrayBuffer> = (0..600).map(|_| ArrayBuffer::new(100).unwrap()).collect();
        assert!(others.iter().all(|b| b.as_ptr() != a.as_ptr()));
    }

    #[test]
    fn a_slot_we_hold_that_a_peer_marks_free_is_not_trimmed() {
        let mut a = ArrayBuffer::new_unzeroed(256 << 10).unwrap();
        a.fill(7);
        let Wire::Slot { heap, slot, .. } = a.wire() else {
            panic!("pooled")
        };
        heap_state_word(heap, slot).store(0, std::sync::atomic::Ordering::Relaxed);
        ArrayBuffer::trim_pool();
        assert!(a.iter().all(|&b| b == 7));
    }

    fn heap_state_word(heap: &crate::shm::heap::Heap, slot: u32) -> &std::sync::atomic::AtomicU64 {
        heap.state_for_tests(slot)
    }

    #[test]
    fn a_buffer_naming_a_heap_the_channel_never_carried_is_a_message_error() {
        use crate::wire::transfer::{ITEM_SLOT_KNOWN, SlotRef};
        let ch = MessageChannel::new().unwrap();
        let named = SlotRef {
            generation: 1,
            index: 3,
        };
        post_raw(
            &ch.port1,
            &[item(ITEM_SLOT_KNOWN, 0, 16, named.pack())],
            &[],
            false,
        );
        assert!(transfer_error(ch.port2.recv::<u8>()));
        ch.port1.post_message(&1u8, []).unwrap();
        assert_eq!(ch.port2.recv::<u8>().unwrap().data, 1);
    }

    #[test]
    fn a_heap_registered_out_of_order_is_a_message_error_and_names_nothing() {
        use crate::wire::transfer::{ITEM_SLOT_KNOWN, SlotRef};
        let ch = MessageChannel::new().unwrap();
        let (heap, slot, generation) = crate::shm::heap::allocate(0).unwrap().unwrap();
        heap.send(slot, generation);
        let skipping = SlotRef {
            generation,
            index: 5, // the table is empty: only index 0 may come next
        };
        let fd = [heap.fd()];
        post_raw(
            &ch.port1,
            &[item(ITEM_SLOT, slot, 16, skipping.pack())],
            &fd,
            true,
        );
        assert!(transfer_error(ch.port2.recv::<u8>()));
        post_raw(
            &ch.port1,
            &[item(ITEM_SLOT_KNOWN, slot, 16, skipping.pack())],
            &[],
            false,
        );
        assert!(transfer_error(ch.port2.recv::<u8>()));
    }

    #[test]
    fn a_pooled_buffer_descriptor_out_of_the_heap_is_a_message_error() {
        let ch = MessageChannel::new().unwrap();
        let (heap, slot, generation) = crate::shm::heap::allocate(0).unwrap().unwrap();
        heap.send(slot, generation);
        post_raw(
            &ch.port1,
            &[item(ITEM_SLOT, 1 << 20, 16, generation.into())],
            &[heap.fd()],
            true,
        );
        assert!(transfer_error(ch.port2.recv::<u8>()));
        post_raw(
            &ch.port1,
            &[item(ITEM_SLOT, slot, 1 << 40, generation.into())],
            &[heap.fd()],
            true,
        );
        assert!(transfer_error(ch.port2.recv::<u8>()));
    }

    #[test]
    fn a_buffer_descriptor_longer_than_its_region_is_a_message_error() {
        let ch = MessageChannel::new().unwrap();
        let region = own_region();
        post_raw(
            &ch.port1,
            &[item(ITEM_BUFFER, 0, 128 << 20, 0)],
            &[own_fd(&region)],
            true,
        );
        assert!(transfer_error(ch.port2.recv::<u8>()));
    }

    #[test]
    fn a_message_body_larger_than_an_archive_may_be_is_a_message_error() {
        let ch = MessageChannel::new().unwrap();
        // Zero pages: the region costs address space, and the receiver must not copy it.
        let body = ArrayBuffer::new(crate::wire::codec::MAX_ARCHIVE_LEN + 4096).unwrap();
        let len = body.len() as u64;
        post_raw(
            &ch.port1,
            &[item(ITEM_BODY, 0, len, 0)],
            &[own_fd(&body)],
            true,
        );
        assert!(transfer_error(ch.port2.recv::<u8>()));
        ch.port1.post_message(&1u8, []).unwrap();
        assert_eq!(ch.port2.recv::<u8>().unwrap().data, 1);
    }

    #[test]
    fn a_port_descriptor_that_is_not_a_segment_is_a_message_error() {
        let ch = MessageChannel::new().unwrap();
        let region = own_region();
        let fd = own_fd(&region);
        let (a, _b) = sys::socket_pair().unwrap();
        post_raw(
            &ch.port1,
            &[item(ITEM_PORT, 0, 0, 0)],
            &[fd, a.as_fd()],
            true,
        );
        assert!(transfer_error(ch.port2.recv::<u8>()));
    }

    #[test]
    fn fewer_descriptors_than_items_is_a_message_error() {
        let ch = MessageChannel::new().unwrap();
        post_raw(&ch.port1, &[item(ITEM_BUFFER, 0, 10, 0)], &[], true);
        assert!(transfer_error(ch.port2.recv::<u8>()));
        ch.port1.post_message(&1u8, []).unwrap();
        assert_eq!(ch.port2.recv::<u8>().unwrap().data, 1);
    }

    #[test]
    fn a_transfer_record_without_its_descriptors_poisons_the_channel() {
        let ch = MessageChannel::new().unwrap();
        ch.port2.socket().unwrap(); // the pair exists, but nothing is sent on it
        // The record says one descriptor comes with it (a record needing none has no
        // note), and the note never comes.
        let region = own_region();
        post_raw(
            &ch.port1,
            &[item(ITEM_BUFFER, 0, 10, 0)],
            &[own_fd(&region)],
            false,
        );
        assert!(matches!(
            ch.port2.recv::<u8>(),
            Err(RecvError::MessageError(MessageError::Corrupt(_)))
        ));
        assert!(matches!(
            ch.port2.recv::<u8>(),
            Err(RecvError::Disconnected)
        ));
    }

    #[test]
    fn a_flood_of_doorbells_is_drained_in_bounded_steps_and_harms_nothing() {
        let ch = MessageChannel::new().unwrap();
        ch.port2.news_fd().unwrap();
        let sock = ch.port1.socket().unwrap();
        for _ in 0..2 * DOORBELLS_PER_DRAIN {
            crate::wire::doorbell::ring(sock); // the socket buffer may refuse some
        }
        let mut steps = 0;
        while ch.port2.drain_doorbells() {
            steps += 1;
            assert!(steps < 100, "the drain never ends");
        }
        assert!(steps >= 1, "a drain took more than its bound at once");
        ch.port1.post_message(&5u8, []).unwrap();
        assert_eq!(ch.port2.try_recv::<u8>().unwrap().data, 5);
    }

    #[test]
    fn a_few_doorbells_before_a_transfer_note_are_skipped() {
        let ch = MessageChannel::new().unwrap();
        ch.port2.news_fd().unwrap();
        for _ in 0..3 {
            crate::wire::doorbell::ring(ch.port1.socket().unwrap());
        }
        let buf = ArrayBuffer::new(16).unwrap();
        ch.port1
            .post_message(&9u8, [Transferable::Buffer(buf)])
            .unwrap();
        let ev = ch.port2.recv::<u8>().unwrap();
        assert_eq!((ev.data, ev.buffers.len()), (9, 1));
    }
}

mod received_segments {
    use crate::port::MessagePort;
    use crate::shm::segment::tests::{segment_from_bytes, valid_image};
    use crate::sys;

    #[test]
    fn impossible_ring_indices_in_a_received_segment_refuse_to_attach() {
        let mut img = valid_image(8192);
        // ring 0 head (offset 256 + 128) ahead of its tail
        img[384..392].copy_from_slice(&64u64.to_le_bytes());
        let seg = segment_from_bytes(&img).unwrap();
        let (s, _peer) = sys::socket_pair().unwrap();
        assert!(
            MessagePort::attach(
                std::sync::Arc::new(seg),
                crate::shm::segment::Side::ONE,
                Some(s),
                Default::default()
            )
            .is_err()
        );
    }
}

mod heap_tables {
    use crate::port::MessageChannel;
    use crate::shm::buffer::ArrayBuffer;
    use crate::sys;

    /// Posts a pooled buffer of `len` bytes filled with `fill` from `ch.port1`.
    fn post_filled(ch: &MessageChannel, len: usize, fill: u8) {
        let mut buf = ArrayBuffer::new_unzeroed(len).unwrap();
        buf.fill(fill);
        ch.port1
            .post_message(&u64::from(fill), [buf.into()])
            .unwrap();
    }

    /// A size of a pool class no other test of this binary uses: the heaps are shared by
    /// every test, and another test's buffers could make this one's come from a new heap.
    const ALONE_IN_ITS_CLASS: usize = 8 << 10;

    #[test]
    fn a_heap_crosses_a_channel_with_its_descriptor_once() {
        const LEN: usize = ALONE_IN_ITS_CLASS;
        let ch = MessageChannel::new().unwrap();
        post_filled(&ch, LEN, 1);
        let socket = ch.port2.socket().unwrap();
        assert!(
            sys::readable_now(socket),
            "the first buffer of a heap has a note"
        );
        assert_eq!(ch.port2.recv::<u64>().unwrap().buffers[0][LEN - 1], 1);
        for fill in 2..50 {
            post_filled(&ch, LEN, fill);
            assert!(!sys::readable_now(socket), "no note once the heap is known");
            let ev = ch.port2.recv::<u64>().unwrap();
            assert!(ev.buffers[0].iter().all(|&b| b == fill));
        }
    }

    #[test]
    fn a_message_too_large_for_the_ring_reuses_its_heap_without_a_descriptor() {
        let ch = MessageChannel::builder()
            .capacity(64 << 10)
            .build()
            .unwrap();
        let big = vec![7u8; 1 << 20];
        ch.port1.post_message(&big, []).unwrap();
        assert_eq!(ch.port2.recv::<Vec<u8>>().unwrap().data, big);
        let socket = ch.port2.socket().unwrap();
        ch.port1.post_message(&big, []).unwrap();
        assert!(!sys::readable_now(socket), "the body's heap is known");
        assert_eq!(ch.port2.recv::<Vec<u8>>().unwrap().data, big);
    }

    #[test]
    fn buffers_queued_for_a_port_that_moves_arrive_by_heap_index() {
        let ch = MessageChannel::new().unwrap();
        let carrier = MessageChannel::new().unwrap();
        post_filled(&ch, 4096, 1);
        assert_eq!(ch.port2.recv::<u64>().unwrap().data, 1); // the heap is registered
        post_filled(&ch, 4096, 2); // queued, naming the heap by index
        carrier.port1.post_message(&0u8, [ch.port2.into()]).unwrap();
        let moved = carrier.port2.recv::<u8>().unwrap().ports.remove(0);
        let ev = moved.recv::<u64>().unwrap();
        assert!(ev.buffers[0].iter().all(|&b| b == 2));
    }

    #[test]
    fn more_heaps_than_a_table_holds_still_travel_with_their_descriptors() {
        use crate::wire::transfer::MAX_HEAPS_PER_CHANNEL;
        let ch = MessageChannel::new().unwrap();
        // Each buffer kept here keeps its slot taken, so new heaps keep being made: 256 KiB
        // slots, 16 to a heap, so 20 heaps in all.
        let mut held = Vec::new();
        for i in 0..(MAX_HEAPS_PER_CHANNEL + 4) * 16 {
            post_filled(&ch, 256 << 10, i as u8);
            let mut ev = ch.port2.recv::<u64>().unwrap();
            assert_eq!(ev.buffers[0][(256 << 10) - 1], i as u8);
            held.push(ev.buffers.remove(0));
        }
    }
}

/// `shm/polling.rs`: a busy-polling reader lets its writer leave out the fence, and takes
/// that back before it sleeps or arms a doorbell.
#[cfg(all(test, not(loom)))]
mod busy_polling {
    use std::time::Duration;

    use crate::error::RecvTimeoutError;
    use crate::port::{MessageChannel, MessagePort};
    use crate::shm::polling;
    use crate::shm::wake::WaitStrategy;
    use crate::sys::sync::Ordering;

    /// The flag in the control block of the ring `port` reads.
    fn polls(port: &MessagePort) -> u32 {
        port.seg
            .ring_ctrl(port.side.peer())
            .reader_polls
            .load(Ordering::Relaxed)
    }

    /// A channel whose `port2` has waited once with `BusyPoll`, finding nothing.
    fn after_a_busy_poll() -> MessageChannel {
        let ch = MessageChannel::new().unwrap();
        ch.port2.set_wait_strategy(WaitStrategy::BusyPoll);
        let r = ch.port2.recv_timeout::<u64>(Duration::from_millis(1));
        assert!(matches!(r, Err(RecvTimeoutError::Timeout)));
        ch
    }

    #[test]
    fn a_busy_polling_receive_tells_the_writer_it_polls() {
        let ch = after_a_busy_poll();
        // Set where the process can take part in remote barriers (the kernel's
        // membarrier), as on any Linux since 4.16; never set where it cannot.
        assert_eq!(polls(&ch.port2), u32::from(polling::registered()));
    }

    #[test]
    fn a_receive_that_may_sleep_clears_the_flag_first() {
        let ch = after_a_busy_poll();
        ch.port2.set_wait_strategy(WaitStrategy::Block);
        let r = ch.port2.recv_timeout::<u64>(Duration::from_millis(1));
        assert!(matches!(r, Err(RecvTimeoutError::Timeout)));
        assert_eq!(polls(&ch.port2), 0);
    }

    #[test]
    fn arming_a_doorbell_clears_the_flag_first() {
        let ch = after_a_busy_poll();
        ch.port2.arm_for_data();
        assert_eq!(polls(&ch.port2), 0);
    }

    #[test]
    fn a_reader_switching_between_polling_and_sleeping_gets_every_message_in_order() {
        const MESSAGES: u64 = 20_000;
        let ch = MessageChannel::new().unwrap();
        let (tx, rx) = (ch.port1, ch.port2);
        let writer = std::thread::spawn(move || {
            for n in 0..MESSAGES {
                tx.post_message(&n, []).unwrap();
            }
            tx
        });
        for n in 0..MESSAGES {
            if n % 100 == 0 {
                let busy = (n / 100) % 2 == 0;
                rx.set_wait_strategy(if busy {
                    WaitStrategy::BusyPoll
                } else {
                    WaitStrategy::Block
                });
            }
            assert_eq!(rx.recv::<u64>().unwrap().data, n);
        }
        drop(writer.join().unwrap());
    }
}
