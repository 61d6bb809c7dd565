//! Key files: hex ed25519 seeds, mode 0600.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context};
use ed25519_dalek::SigningKey;
use zeroize::Zeroizing;

/// Creates a new key file (fails if it exists) holding a fresh random seed.
pub fn create_key_file(path: &Path) -> anyhow::Result<SigningKey> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let hex_seed = Zeroizing::new(hex::encode(key.to_bytes()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(hex_seed.as_bytes())?;
    f.sync_all()?;
    Ok(key)
}

/// Loads a key file; refuses one readable by group or others.
pub fn load_key_file(path: &Path) -> anyhow::Result<SigningKey> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "{} is readable by group or others: chmod 600 it",
            path.display()
        );
    }
    let text = Zeroizing::new(std::fs::read_to_string(path)?);
    let bytes = Zeroizing::new(
        hex::decode(text.trim()).with_context(|| format!("{} is not hex", path.display()))?,
    );
    let seed: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("{} must hold a 32-byte hex seed", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}
