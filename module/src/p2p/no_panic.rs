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
