//! The simulated network: what a message suffers on its way (delay, reorder, drop, duplicate,
//! partition) and what a malicious sender does to it.

use super::*;

impl World {
    pub(super) fn send(&mut self, i: usize, session: SessionId, to: NodeId, mut payload: Payload) {
        let Some(from) = self.nodes.get(i) else {
            return;
        };
        let signing = matches!(payload, Payload::SignRound1(_) | Payload::SignRound2(_));
        let to_other = from.id != to;
        if from.behaviour == Behaviour::Mute && signing && to_other {
            return;
        }
        if from.behaviour == Behaviour::Framer && signing && from.framed.get(&session) == Some(&to)
        {
            return;
        }
        if matches!(
            from.behaviour,
            Behaviour::BadShare | Behaviour::UnsignedBadShare
        ) {
            let share = match &mut payload {
                Payload::SignRound2(r) => Some(&mut r.share),
                // As `reshare-bad-deal-to`: a deal that fails its Feldman check.
                Payload::ReshareDeal(d) if to_other => Some(&mut d.share),
                _ => None,
            };
            if let Some(b) = share.and_then(|s| s.last_mut()) {
                *b ^= 0x01;
            }
        } else {
            self.obs.sent(i, &session, &payload);
        }
        self.stats.messages += 1;
        let Some(j) = self.nodes.iter().position(|n| n.id == to) else {
            return;
        };
        let cut = from.partitioned || self.nodes.get(j).is_some_and(|n| n.partitioned);
        if cut || self.rng.gen_range(0..100u8) < self.sc.drop_pct {
            return;
        }
        let Some(from) = self.nodes.get(i) else {
            return;
        };
        // Signed as the p2p layer signs every message, so a quoted one is evidence.
        let quoted = (codec::is_evidence(&payload) && i != j).then(|| {
            let envelope = codec::encode(&session, payload.clone());
            let digest = wire::p2p_signing_digest(from.id.as_str(), to.as_str(), &envelope);
            Quote {
                message: SignedMessage {
                    from: from.id.clone(),
                    to: to.clone(),
                    envelope,
                    signature: if from.behaviour == Behaviour::UnsignedBadShare {
                        SigningKey::from_bytes(&[0xee; 32]).sign(&digest).to_bytes()
                    } else {
                        from.key.sign(&digest).to_bytes()
                    },
                },
                sender_key: from.key.verifying_key().to_bytes(),
            }
        });
        let msg = Msg {
            from: from.id.clone(),
            session,
            payload,
            quoted,
        };
        let copies = if self.rng.gen_range(0..100u8) < self.sc.dup_pct {
            2
        } else {
            1
        };
        let inc = self.nodes.get(j).map(|n| n.incarnation).unwrap_or_default();
        for _ in 0..copies {
            let t = self.now
                + if i == j {
                    0
                } else {
                    self.draw(self.sc.delay_ms)
                };
            self.at(t, Ev::Input(j, inc, Input::Msg(msg.clone())));
        }
    }
}
