//! No byte stream from a peer may panic the node (issue 5, "Fuzzing"): the length-prefixed
//! request codec and its ack, on arbitrary streams and on mutated valid frames. Harness and
//! mutators: `crate::no_panic`.

use std::sync::Arc;

use futures::io::Cursor;
use libp2p::request_response::Codec as _;
use proptest::collection::vec;
use proptest::prelude::*;

use super::codec::{MpcCodec, PROTOCOL};
use crate::no_panic::{apply, check, mutations};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

#[test]
fn codec_read__should_not_panic_on_arbitrary_or_mutated_streams() {
    let strategy = (
        vec(any::<u8>(), 0..600),
        prop_oneof![Just(0usize), Just(4), 0..700usize, Just(u32::MAX as usize)],
        vec(any::<u8>(), 0..300),
        mutations(),
    );
    check("p2p codec", 2000, strategy, |(raw, max, payload, muts)| {
        let mut c = MpcCodec::new(max);
        if let Ok(got) = block_on(c.read_request(&PROTOCOL, &mut Cursor::new(raw.clone()))) {
            prop_assert!(got.len() <= max && got.len() + 4 <= raw.len());
        }
        let _ = block_on(c.read_response(&PROTOCOL, &mut Cursor::new(raw)));

        let mut wire = Cursor::new(Vec::new());
        let written = block_on(c.write_request(&PROTOCOL, &mut wire, Arc::new(payload.clone())));
        prop_assert_eq!(written.is_ok(), payload.len() <= max);
        let mut frame = wire.into_inner();
        if written.is_ok() {
            let got = block_on(c.read_request(&PROTOCOL, &mut Cursor::new(frame.clone())));
            prop_assert_eq!(got.ok().map(|g| g.to_vec()), Some(payload));
        }
        apply(&mut frame, &muts);
        if let Ok(got) = block_on(c.read_request(&PROTOCOL, &mut Cursor::new(frame.clone()))) {
            prop_assert!(got.len() <= max && got.len() + 4 <= frame.len());
        }
        Ok(())
    });
}

#[test]
fn split_batch__should_not_panic_and_should_give_back_what_was_packed() {
    use super::event_loop::{split_batch, BATCH_HEADER};
    use super::SIGNATURE_LEN;
    let strategy = (
        vec(vec(any::<u8>(), SIGNATURE_LEN..SIGNATURE_LEN + 40), 1..6),
        vec(any::<u8>(), 0..300),
        mutations(),
    );
    check("p2p batch", 2000, strategy, |(messages, raw, muts)| {
        let _ = split_batch(&raw);
        let mut packed = Vec::new();
        for m in &messages {
            packed.extend_from_slice(&(m.len() as u32).to_be_bytes());
            packed.extend_from_slice(m);
        }
        let got = split_batch(&packed).expect("a well-formed batch");
        prop_assert_eq!(got.len(), messages.len());
        for ((bytes, sig), m) in got.iter().zip(&messages) {
            let at = m.len() - SIGNATURE_LEN;
            prop_assert_eq!(bytes.as_slice(), &m[..at]);
            prop_assert_eq!(sig.as_slice(), &m[at..]);
        }
        // Cut short, a batch is refused whole.
        prop_assert!(split_batch(&packed[..packed.len() - 1]).is_none());
        prop_assert!(split_batch(&packed[..BATCH_HEADER - 1]).is_none());
        apply(&mut packed, &muts);
        let _ = split_batch(&packed);
        Ok(())
    });
    // Empty, a message shorter than its signature, and more messages than a sender packs, are
    // refused.
    assert!(split_batch(&[]).is_none());
    assert!(split_batch(&[0, 0, 0, 3, 1, 2, 3]).is_none());
    let one = [
        &(SIGNATURE_LEN as u32).to_be_bytes()[..],
        &[0; SIGNATURE_LEN],
    ]
    .concat();
    assert_eq!(split_batch(&one.repeat(64)).map(|m| m.len()), Some(64));
    assert!(split_batch(&one.repeat(65)).is_none());
}
