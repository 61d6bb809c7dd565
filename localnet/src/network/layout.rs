//! Paths and ports of a localnet directory.
//!
//! Ports from the base port P (default 26600): RPC = P+57; node i: ABCI = P+100+10i,
//! p2p = P+101+10i, status = P+102+10i.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Default base port.
pub const DEFAULT_BASE_PORT: u16 = 26600;
/// Most nodes a localnet runs (ports are 10 apart).
pub const MAX_NODES: usize = 64;

/// Ports of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodePorts {
    /// ABCI server.
    pub abci: u16,
    /// libp2p.
    pub p2p: u16,
    /// Local status endpoint.
    pub status: u16,
}

impl NodePorts {
    /// `127.0.0.1:<abci>`.
    pub fn abci_addr(&self) -> String {
        format!("127.0.0.1:{}", self.abci)
    }
    /// `/ip4/127.0.0.1/tcp/<p2p>`.
    pub fn p2p_addr(&self) -> String {
        format!("/ip4/127.0.0.1/tcp/{}", self.p2p)
    }
    /// `127.0.0.1:<status>`.
    pub fn status_addr(&self) -> String {
        format!("127.0.0.1:{}", self.status)
    }
}

/// All ports of a localnet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ports {
    /// Base port.
    pub base: u16,
    /// Sequencer RPC.
    pub rpc: u16,
    /// Per node.
    pub nodes: Vec<NodePorts>,
}

impl Ports {
    /// The ports of `n` nodes from `base`.
    pub fn new(base: u16, n: usize) -> anyhow::Result<Ports> {
        if n == 0 || n > MAX_NODES {
            bail!("--nodes must be 1..={MAX_NODES}, got {n}");
        }
        let port = |off: usize| -> anyhow::Result<u16> {
            u16::try_from(usize::from(base) + off)
                .with_context(|| format!("base port {base} is too high for {n} nodes"))
        };
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            nodes.push(NodePorts {
                abci: port(100 + 10 * i)?,
                p2p: port(101 + 10 * i)?,
                status: port(102 + 10 * i)?,
            });
        }
        Ok(Ports {
            base,
            rpc: port(57)?,
            nodes,
        })
    }

    /// The base port a genesis was made with, from node 0's p2p address.
    pub fn base_from_p2p_addr(p2p: &str) -> Option<u16> {
        let port: u16 = p2p.rsplit('/').next()?.parse().ok()?;
        port.checked_sub(101)
    }

    /// Fails, naming them, if any port is taken on 127.0.0.1.
    pub fn check_free(&self) -> anyhow::Result<()> {
        let mut all = vec![("sequencer RPC".to_owned(), self.rpc)];
        for (i, n) in self.nodes.iter().enumerate() {
            all.push((format!("node{i} ABCI"), n.abci));
            all.push((format!("node{i} p2p"), n.p2p));
            all.push((format!("node{i} status"), n.status));
        }
        let busy: Vec<String> = all
            .into_iter()
            .filter(|(_, p)| TcpListener::bind(("127.0.0.1", *p)).is_err())
            .map(|(what, p)| format!("{p} ({what})"))
            .collect();
        if !busy.is_empty() {
            bail!(
                "port(s) already in use: {}. Is another localnet running? Stop it \
                 (`localnet stop --dir ...`) or pick other ports with --base-port",
                busy.join(", ")
            );
        }
        Ok(())
    }
}

/// Paths inside a localnet directory.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The directory (absolute).
    pub dir: PathBuf,
}

impl Layout {
    /// Layout of `dir` (made absolute).
    pub fn new(dir: &Path) -> anyhow::Result<Layout> {
        let dir = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            std::env::current_dir()?.join(dir)
        };
        Ok(Layout { dir })
    }
    /// `DIR/genesis.json`.
    pub fn genesis(&self) -> PathBuf {
        self.dir.join("genesis.json")
    }
    /// `DIR/localnet.json`.
    pub fn manifest(&self) -> PathBuf {
        self.dir.join(seqmpc_abci::manifest::FILE)
    }
    /// `DIR/node{i}`.
    pub fn node_home(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{i}"))
    }
    /// `DIR/node{i}/mpcd.log`.
    pub fn node_log(&self, i: usize) -> PathBuf {
        self.node_home(i).join("mpcd.log")
    }
    /// `DIR/client`.
    pub fn client_dir(&self) -> PathBuf {
        self.dir.join("client")
    }
    /// `DIR/client/account.key`.
    pub fn client_key(&self) -> PathBuf {
        self.client_dir().join("account.key")
    }
    /// `DIR/client/signer.key`.
    pub fn signer_key(&self) -> PathBuf {
        self.client_dir().join("signer.key")
    }
    /// `DIR/added-nodes.json`: ids of the nodes `localnet add-node` admitted.
    pub fn added_nodes(&self) -> PathBuf {
        self.dir.join("added-nodes.json")
    }
    /// `DIR/sequencer`.
    pub fn sequencer_dir(&self) -> PathBuf {
        self.dir.join("sequencer")
    }
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;

    #[test]
    fn ports__should_follow_the_documented_layout() {
        let p = Ports::new(DEFAULT_BASE_PORT, 3).unwrap();
        assert_eq!(p.rpc, 26657);
        assert_eq!(
            p.nodes[2],
            NodePorts {
                abci: 26720,
                p2p: 26721,
                status: 26722
            }
        );
        assert_eq!(p.nodes[0].p2p_addr(), "/ip4/127.0.0.1/tcp/26701");
        assert_eq!(
            Ports::base_from_p2p_addr("/ip4/127.0.0.1/tcp/26711"),
            Some(26610)
        );
        assert!(Ports::new(65500, 4).is_err());
    }
}
