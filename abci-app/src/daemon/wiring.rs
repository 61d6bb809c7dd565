//! Where a test build puts its faults (`SEQMPC_FAULTS`, `seqmpc_module::fault`) in front of
//! mpcd's parts, and the only place of mpcd that knows whether it is one: the daemon asks a
//! [`Wiring`] for each part it builds, and in the production build every method hands its
//! input back unchanged.
//!
//! | part | test build with faults |
//! |---|---|
//! | the p2p channel | `partition-file` cuts it ([`Wiring::p2p`]) |
//! | the submitter's RPC port | `faulty_rpc::FaultyRpc`: partition, `lose-result-txs` |
//! | the result sink | `withhold-signatures` (`seqmpc_module::fault::WithholdSignatures`) |
//! | the job stream | `sign-false-claim` (`seqmpc_module::fault::false_claims`) |
//! | the MPC runtime | transport faults, crash points, stub primes (`Node::with_faults`) |
//! | the ABCI server | behind a relay the partition cuts ([`Wiring::abci_bind`], [`Wiring::abci_relay`]) |

#[cfg(feature = "fault-injection")]
mod imp {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use anyhow::Context as _;
    use seqmpc_module::fault::{self, Faults, Partition};
    use seqmpc_module::job::{Job, SubmitResult};
    use seqmpc_module::node::Node;
    use seqmpc_module::p2p::P2pHandle;
    use seqmpc_module::store::StoreHandle;
    use seqmpc_proto::NodeId;
    use tokio::sync::mpsc;

    use crate::daemon::faulty_rpc::FaultyRpc;
    use crate::daemon::rpc::RpcClient;
    use crate::daemon::submit::ChainRpc;

    /// A test build's wiring: the faults of `SEQMPC_FAULTS` and its partition watcher.
    pub struct Wiring {
        faults: Faults,
        partition: Option<Partition>,
    }

    impl Wiring {
        /// Whether this is a test build (cargo feature `fault-injection`).
        pub const TEST_BUILD: bool = true;

        /// The faults `SEQMPC_FAULTS` names (none when unset).
        pub fn from_env() -> anyhow::Result<Self> {
            let faults = Faults::from_env().map_err(anyhow::Error::msg)?;
            let partition = faults
                .partition_file
                .clone()
                .map(Partition::watch)
                .transpose()
                .context("starting the partition watcher")?;
            if faults.any() {
                tracing::warn!(faults = ?faults, "FAULT INJECTION ACTIVE: this node misbehaves on purpose (test build)");
            }
            Ok(Wiring { faults, partition })
        }

        /// The p2p channel, cut while the partition is on.
        pub async fn p2p(&self, p2p: &P2pHandle) -> anyhow::Result<()> {
            if let Some(p) = &self.partition {
                p2p.cut_by(Arc::new(p.clone()))
                    .await
                    .context("partitioning p2p")?;
            }
            Ok(())
        }

        /// The result submitter's RPC port.
        pub fn chain_rpc(&self, rpc: RpcClient) -> impl ChainRpc {
            FaultyRpc::new(rpc, self.partition.clone(), &self.faults)
        }

        /// The sink the MPC runtime hands its results to.
        pub fn result_sink<S: SubmitResult>(&self, sink: Arc<S>) -> Arc<impl SubmitResult> {
            Arc::new(fault::WithholdSignatures {
                inner: sink,
                on: self.faults.withhold_signatures,
            })
        }

        /// The committed jobs the runtime takes (`sink`: where a false claim goes).
        pub fn jobs<S: SubmitResult + 'static>(
            &self,
            me: NodeId,
            sink: Arc<S>,
            jobs: mpsc::Receiver<Job>,
        ) -> mpsc::Receiver<Job> {
            fault::false_claims(me, &self.faults, sink, jobs)
        }

        /// The MPC runtime (call it inside the tokio runtime: a flood starts there).
        pub fn node<S: SubmitResult>(&self, node: Node<S>, store: &StoreHandle) -> Node<S> {
            node.with_faults(self.faults.clone(), store)
        }

        /// Where the ABCI server listens: behind the partition's relay, an address of its own.
        pub fn abci_bind<'a>(&self, listen: &'a str) -> &'a str {
            if self.partition.is_some() {
                "127.0.0.1:0"
            } else {
                listen
            }
        }

        /// With the partition, the relay on `listen` in front of the ABCI server at `server`.
        pub fn abci_relay(&self, listen: &str, server: &str) -> anyhow::Result<()> {
            let Some(p) = &self.partition else {
                return Ok(());
            };
            let at: SocketAddr = server.parse().context("the ABCI server's address")?;
            crate::daemon::partition::relay_abci(listen, at, p.clone())
                .with_context(|| format!("cannot serve ABCI on {listen}"))
        }
    }
}

#[cfg(not(feature = "fault-injection"))]
mod imp {
    use std::sync::Arc;

    use seqmpc_module::job::{Job, SubmitResult};
    use seqmpc_module::node::Node;
    use seqmpc_module::p2p::P2pHandle;
    use seqmpc_module::store::StoreHandle;
    use seqmpc_proto::NodeId;
    use tokio::sync::mpsc;

    use crate::daemon::rpc::RpcClient;
    use crate::daemon::submit::ChainRpc;

    /// The production build's wiring: every part as built.
    pub struct Wiring;

    impl Wiring {
        /// Whether this is a test build (cargo feature `fault-injection`).
        pub const TEST_BUILD: bool = false;

        /// No faults.
        pub fn from_env() -> anyhow::Result<Self> {
            Ok(Wiring)
        }

        /// The p2p channel as it is.
        pub async fn p2p(&self, _: &P2pHandle) -> anyhow::Result<()> {
            Ok(())
        }

        /// The RPC client as it is.
        pub fn chain_rpc(&self, rpc: RpcClient) -> impl ChainRpc {
            rpc
        }

        /// The sink as it is.
        pub fn result_sink<S: SubmitResult>(&self, sink: Arc<S>) -> Arc<S> {
            sink
        }

        /// The jobs as they come.
        pub fn jobs<S: SubmitResult + 'static>(
            &self,
            _: NodeId,
            _: Arc<S>,
            jobs: mpsc::Receiver<Job>,
        ) -> mpsc::Receiver<Job> {
            jobs
        }

        /// The runtime as it is.
        pub fn node<S: SubmitResult>(&self, node: Node<S>, _: &StoreHandle) -> Node<S> {
            node
        }

        /// The ABCI server listens where it is told.
        pub fn abci_bind<'a>(&self, listen: &'a str) -> &'a str {
            listen
        }

        /// No relay.
        pub fn abci_relay(&self, _: &str, _: &str) -> anyhow::Result<()> {
            Ok(())
        }
    }
}

pub use imp::Wiring;
