//! Faults the scenario injects at planned times (crashes, restarts, partitions, slow disks), and
//! the replay of the jobs a restarted node missed.

use super::*;

impl World {
    pub(super) fn fault(&mut self, f: FaultAt) {
        match f {
            FaultAt::Crash(_, i) => {
                if let Some(n) = self.nodes.get_mut(i) {
                    n.manager = None;
                    n.incarnation += 1;
                    n.primes.crash();
                    n.workers.clear();
                    self.obs.down(self.now, i);
                }
            }
            FaultAt::Restart(_, i) | FaultAt::RestartRolledBack(_, i) => {
                let Some(n) = self.nodes.get_mut(i) else {
                    return;
                };
                if n.manager.is_some() {
                    return;
                }
                n.store.restart();
                if matches!(f, FaultAt::RestartRolledBack(..)) {
                    n.store.roll_back();
                }
                let mut manager = Manager::new(config(&self.sc, n.id.clone()));
                // As mpcd's `Node::recover`: the READY CGGMP24 keys get presignature pools.
                for rec in n.store.records() {
                    manager.track_key(rec);
                }
                n.manager = Some(manager);
                // mpcd's submitter starts from the account's sequence on chain.
                let signer = hex::encode(n.key.verifying_key().to_bytes());
                n.outbox = Outbox::new(self.chain.state.sequence(&signer));
                if !n.partitioned {
                    self.obs.up(self.now, i);
                }
                self.replay_missed(i);
            }
            FaultAt::Partition(_, i) => {
                if let Some(n) = self.nodes.get_mut(i) {
                    n.partitioned = true;
                    self.obs.down(self.now, i);
                }
            }
            FaultAt::Heal(_) => {
                for i in 0..self.nodes.len() {
                    let Some(n) = self.nodes.get_mut(i) else {
                        continue;
                    };
                    if !n.partitioned {
                        continue;
                    }
                    n.partitioned = false;
                    let held = std::mem::take(&mut n.held);
                    if n.manager.is_some() {
                        self.obs.up(self.now, i);
                    }
                    for msg in held {
                        self.submit(i, msg);
                    }
                    self.replay_missed(i);
                }
            }
        }
    }

    pub(super) fn replay_missed(&mut self, i: usize) {
        let Some(n) = self.nodes.get_mut(i) else {
            return;
        };
        if !n.up() {
            return;
        }
        let jobs = std::mem::take(&mut n.missed);
        for job in jobs {
            self.job_to(i, job);
        }
    }
}
