//! What a node hands the chain: result txs through its outbox (the real daemon one), into the
//! simulated mempool, confirmed or sent again as the chain answers.

use super::*;

impl World {
    pub(super) fn submit(&mut self, i: usize, msg: TxMsg) {
        self.submit_again(i, msg, 0);
    }

    /// Hands `msg` (sent `resends` times before) to node `i`'s submitter, which sends its txs
    /// one at a time, in order.
    pub(super) fn submit_again(&mut self, i: usize, msg: TxMsg, resends: u32) {
        let Some(n) = self.nodes.get(i) else {
            return;
        };
        let (last, inc) = (n.last_tx_at, n.incarnation);
        let t = (self.now + self.draw(SUBMIT_MS)).max(last);
        if let Some(n) = self.nodes.get_mut(i) {
            n.last_tx_at = t;
        }
        self.at(t, Ev::Tx(i, inc, msg, resends));
    }

    /// Node `i`'s submitter signs `msg` and broadcasts it, as `daemon::submit`'s worker does
    /// with the same [`Outbox`]; the mempool may lose it after CheckTx
    /// ([`Scenario::tx_loss_pct`]).
    pub(super) fn broadcast(&mut self, i: usize, inc: u64, msg: TxMsg, resends: u32) {
        let Some(n) = self.nodes.get_mut(i) else {
            return;
        };
        if n.incarnation != inc || n.manager.is_none() {
            return; // the process died with its queue
        }
        if n.partitioned {
            if !(matches!(msg, TxMsg::Heartbeat)
                && n.held.iter().any(|m| matches!(m, TxMsg::Heartbeat)))
            {
                n.held.push(msg);
            }
            return;
        }
        let signer = hex::encode(n.key.verifying_key().to_bytes());
        let honest = n.behaviour == Behaviour::Honest;
        let (chain, rng, stats, obs) = (
            &mut self.chain,
            &mut self.rng,
            &mut self.stats,
            &mut self.obs,
        );
        let (key, loss_pct) = (&n.key, self.sc.tx_loss_pct);
        let committed = chain.state.sequence(&signer);
        n.outbox.send(
            &msg,
            resends,
            self.now,
            || Some(committed),
            |seq| {
                let tx = sign_tx(key, "sim", seq, msg.clone());
                match chain.check(&tx) {
                    Ok(hash) => {
                        if let TxMsg::SignResult {
                            outcome: Outcome::Failed { culprits, .. },
                            ..
                        } = &msg
                        {
                            if honest && !culprits.is_empty() {
                                stats.sign_blames += 1;
                            }
                        }
                        if rng.gen_range(0..100u8) < loss_pct {
                            stats.lost_txs += 1;
                        } else {
                            chain.submit(tx);
                        }
                        Broadcast::Accepted(hash)
                    }
                    Err(TxError::Sequence { expected, .. }) => {
                        Broadcast::WrongSequence(Some(expected))
                    }
                    Err(e) => {
                        // The chain's refusal of a report's evidence (`chain::tx::blame`).
                        if honest && matches!(&e, TxError::Invalid(m) if m.starts_with("evidence:"))
                        {
                            obs.evidence_refused(i, e.to_string());
                        }
                        Broadcast::Refused
                    }
                }
            },
        );
    }

    /// Node `i`'s submitter checks its txs in flight, and sends again the lost ones.
    pub(super) fn confirm(&mut self, i: usize) {
        let now = self.now;
        let Some(n) = self.nodes.get_mut(i) else {
            return;
        };
        if !n.up() {
            return;
        }
        let mut again = Vec::new();
        for hash in n.outbox.due(now) {
            let inclusion = self
                .chain
                .delivered(&hash)
                .map_or(Inclusion::NotYet, Inclusion::Delivered);
            match n.outbox.checked(&hash, inclusion, now) {
                Ok(Some(resend)) => again.push(resend),
                Ok(None) => {}
                Err(_) => self.stats.given_up_txs += 1,
            }
        }
        for (msg, resends) in again {
            self.submit_again(i, msg, resends);
        }
    }
}
