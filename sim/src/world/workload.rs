//! The client's workload: the keygens, signings, resharings and deletions a scenario sends, at
//! drawn times.

use sha2::{Digest, Sha256};

use super::*;

impl World {
    /// The workload and the faults, all drawn up front.
    pub(super) fn plan(&mut self) {
        self.at(self.sc.block_ms, Ev::Block);
        for i in 0..self.nodes.len() {
            let t = self.draw((0, TICK_MS));
            self.at(t, Ev::Tick(i));
            let t = self.draw((0, HEARTBEAT_MS));
            self.at(t, Ev::Heartbeat(i));
        }
        let parties: Vec<NodeId> = (0..self.sc.nodes).map(nid).collect();
        let threshold = self.sc.threshold;
        let keygen = |key: String, i: usize| TxMsg::KeyGen {
            key_id: KeyId::new(key).unwrap_or_else(|_| unreachable!()),
            scheme: Scheme::FROST[i % Scheme::FROST.len()],
            threshold,
            parties: parties.clone(),
        };
        for k in 0..self.sc.keys + self.sc.deletes {
            self.at(KEYGEN_AT, Ev::Client(keygen(format!("key{k}"), k)));
        }
        let committee: Vec<NodeId> = parties.iter().take(4).cloned().collect();
        for k in 0..self.sc.ecdsa_keygens {
            let tx = TxMsg::KeyGen {
                key_id: KeyId::new(format!("ecdsa{k}")).unwrap_or_else(|_| unreachable!()),
                scheme: Scheme::Cggmp24Secp256k1,
                threshold,
                parties: committee.clone(),
            };
            self.at(KEYGEN_AT, Ev::Client(tx));
        }
        if self.sc.ecdsa_keygens > 0 {
            let mut t = KEYGEN_AT + 2_000;
            while t < self.sc.load_ms {
                self.at(t, Ev::RetryEcdsa);
                t += 2_000;
            }
        }
        for b in 0..self.sc.burst_keygens {
            self.at(BURST_AT, Ev::Client(keygen(format!("burst{b}"), b)));
        }
        for r in 0..self.sc.signs {
            let t = self.draw((SIGN_FROM, self.sc.load_ms.max(SIGN_FROM)));
            let key = self.rng.gen_range(0..self.sc.keys.max(1));
            let tx = TxMsg::KeySign {
                key_id: KeyId::new(format!("key{key}")).unwrap_or_else(|_| unreachable!()),
                request_id: RequestId::new(format!("req{r}")).unwrap_or_else(|_| unreachable!()),
                message: format!("message {r}").into_bytes(),
                prehashed: false,
            };
            self.at(t, Ev::Client(tx));
        }
        for r in 0..self.sc.ecdsa_signs {
            let t = self.draw((SIGN_FROM, self.sc.load_ms.max(SIGN_FROM)));
            let key = r % self.sc.ecdsa_keygens.max(1);
            let message = format!("ecdsa message {r}").into_bytes();
            let prehashed = r % 2 == 1;
            let message = if prehashed {
                Sha256::digest(&message).to_vec()
            } else {
                message
            };
            let tx = TxMsg::KeySign {
                key_id: KeyId::new(format!("ecdsa{key}")).unwrap_or_else(|_| unreachable!()),
                request_id: RequestId::new(format!("ecdsa-req{r}"))
                    .unwrap_or_else(|_| unreachable!()),
                message,
                prehashed,
            };
            self.at(t, Ev::Client(tx));
        }
        for r in 0..self.sc.refreshes {
            let t = self.draw((SIGN_FROM, self.sc.load_ms.max(SIGN_FROM)));
            let key = r % self.sc.keys.max(1);
            let tx = TxMsg::KeyReshare {
                key_id: KeyId::new(format!("key{key}")).unwrap_or_else(|_| unreachable!()),
                parties: parties.clone(),
                threshold,
            };
            self.at(t, Ev::Client(tx));
        }
        for d in 0..self.sc.deletes {
            let key_id =
                KeyId::new(format!("key{}", self.sc.keys + d)).unwrap_or_else(|_| unreachable!());
            self.at(self.sc.load_ms, Ev::Client(TxMsg::KeyDelete { key_id }));
        }
        for f in self.sc.faults.clone() {
            let t = match f {
                FaultAt::Crash(t, _)
                | FaultAt::Restart(t, _)
                | FaultAt::RestartRolledBack(t, _)
                | FaultAt::Partition(t, _)
                | FaultAt::Heal(t) => t,
            };
            self.at(t, Ev::Fault(f));
        }
        // Random faults: one node at a time goes down (crash or partition) and comes back.
        let n = self.sc.nodes;
        let tolerated = n.saturating_sub(self.sc.threshold as usize).max(1);
        let mut t = 2_000;
        for _ in 0..self.sc.random_faults {
            t += self.draw((500, 4_000));
            let node = self.rng.gen_range(0..n);
            let down_for = self.draw((300, 6_000));
            if self.rng.gen_bool(0.5) && tolerated >= 1 {
                self.at(t, Ev::Fault(FaultAt::Crash(t, node)));
                self.at(
                    t + down_for,
                    Ev::Fault(FaultAt::Restart(t + down_for, node)),
                );
            } else {
                self.at(t, Ev::Fault(FaultAt::Partition(t, node)));
                self.at(t + down_for, Ev::Fault(FaultAt::Heal(t + down_for)));
            }
            t += down_for;
        }
    }
}
