//! `DIR/localnet.json`: what a running localnet tells its clients (mpcctl, tests, scripts).
//! It exists while the localnet runs and is removed when it stops. `localnet` writes it and
//! `mpcctl` reads it, both through these types.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Its file name in the localnet directory.
pub const FILE: &str = "localnet.json";

/// The manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Chain id.
    pub chain_id: String,
    /// Sequencer RPC URL, `http://127.0.0.1:<port>`.
    pub rpc: String,
    /// Absolute localnet directory.
    pub dir: String,
    /// Pid of the `localnet start` process.
    pub pid: u32,
    /// Threshold clients use when they are not told one.
    pub default_threshold: u32,
    /// Absolute path of the client account key (keygen, sign, delete).
    pub client_key: String,
    /// Absolute path of the sign-only account key.
    pub signer_key: String,
    /// Absolute path of the genesis file.
    pub genesis: String,
    /// Block interval in milliseconds.
    pub block_ms: u64,
    /// The secret the dev sequencer's `dev_add_app` RPC needs (`localnet add-node` sends it).
    /// The file is written mode 0600 for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_token: Option<String>,
    /// The nodes.
    pub nodes: Vec<ManifestNode>,
}

/// One node of the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestNode {
    /// Node id, e.g. `node0`.
    pub id: String,
    /// Pid of its `mpcd` (as started by localnet).
    pub pid: u32,
    /// Node home.
    pub home: String,
    /// ABCI address (`127.0.0.1:<port>`).
    pub abci: String,
    /// libp2p multiaddr.
    pub p2p: String,
    /// Status endpoint URL, `http://127.0.0.1:<port>`.
    pub status: String,
    /// Log file (stdout and stderr of mpcd, appended).
    pub log: String,
    /// argv that restarts this node with its data (the sequencer reconnects to the same ABCI
    /// address and catches it up).
    pub cmd: Vec<String>,
}

impl Manifest {
    /// Reads a manifest.
    pub fn read(path: &Path) -> anyhow::Result<Manifest> {
        let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    }

    /// Reads `dir`'s manifest; `None` if there is none (no localnet runs there).
    pub fn load(dir: &Path) -> anyhow::Result<Option<Manifest>> {
        let path = dir.join(FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("parsing {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// The node `id`, if the manifest lists it.
    pub fn node(&self, id: &str) -> Option<&ManifestNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Writes the manifest atomically.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        write_atomic(path, &bytes)
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename,
/// fsync of the directory. (`localnet` writes its other files with it too.)
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    {
        // Owner only: the files written here hold paths to keys and secrets (a token).
        let mut f = {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?
        };
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
#[allow(non_snake_case, clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn write_atomic__should_leave_a_file_only_its_owner_can_read_even_over_a_readable_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("localnet.json");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&path, b"{\"dev_token\":\"secret\"}").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{\"dev_token\":\"secret\"}");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
        // No temporary file is left beside it.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
