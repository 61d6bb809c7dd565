//! Where a node's master key comes from: the file `HOME/master.key` (made by `mpcd init`), or
//! a command named in `HOME/master_key_command` (`mpcd init --master-key-command`) that prints
//! it from a secret store (Vault, a cloud KMS, a hardware token), so that the key never lies
//! on the node's disk beside the store it opens.

use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use seqmpc_module::store::{MasterKey, StoreError};

/// The master key file in a node home.
pub const MASTER_KEY_FILE: &str = "master.key";
/// The file naming the master key command in a node home.
pub const MASTER_KEY_COMMAND_FILE: &str = "master_key_command";
/// Longest command accepted.
const MAX_COMMAND_BYTES: u64 = 4096;

/// A node's master key source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterKeySource {
    /// The key file `HOME/master.key`.
    File(PathBuf),
    /// A command (run with `sh -c`) that prints the key in hex.
    Command(String),
}

fn bad(why: String) -> StoreError {
    StoreError::MasterKey(why)
}

impl MasterKeySource {
    /// The source of the node in `home`: the command when `HOME/master_key_command` exists
    /// (which must then be mode 0600 or stricter, and alone: a `master.key` beside it is
    /// refused as ambiguous), else the key file.
    pub fn of_home(home: &Path) -> Result<MasterKeySource, StoreError> {
        let cmd_file = home.join(MASTER_KEY_COMMAND_FILE);
        let key_file = home.join(MASTER_KEY_FILE);
        let meta = match fs::metadata(&cmd_file) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(MasterKeySource::File(key_file))
            }
            Err(source) => {
                return Err(StoreError::Io {
                    op: "stat",
                    path: cmd_file,
                    source,
                })
            }
        };
        if key_file.exists() {
            return Err(bad(format!(
                "both {} and {} exist: keep one (the command's key, or the file's)",
                cmd_file.display(),
                key_file.display()
            )));
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(StoreError::MasterKeyPermissions {
                path: cmd_file,
                mode,
            });
        }
        if !meta.is_file() || meta.len() > MAX_COMMAND_BYTES {
            return Err(bad(format!(
                "{} is not a file of at most {MAX_COMMAND_BYTES} bytes",
                cmd_file.display()
            )));
        }
        let command = fs::read_to_string(&cmd_file).map_err(|source| StoreError::Io {
            op: "read",
            path: cmd_file.clone(),
            source,
        })?;
        let command = command.trim().to_owned();
        if command.is_empty() {
            return Err(bad(format!("{} is empty", cmd_file.display())));
        }
        Ok(MasterKeySource::Command(command))
    }

    /// Makes `home` take its master key from `command` (`mpcd init --master-key-command`):
    /// runs it once to check that it prints a key, then writes `HOME/master_key_command`
    /// (mode 0600, never over an existing file).
    pub fn init_command(home: &Path, command: &str) -> Result<MasterKeySource, StoreError> {
        let command = command.trim();
        if command.is_empty() || command.len() as u64 > MAX_COMMAND_BYTES {
            return Err(bad(format!(
                "a master key command has 1 to {MAX_COMMAND_BYTES} bytes"
            )));
        }
        drop(MasterKey::from_command(command)?);
        let path = home.join(MASTER_KEY_COMMAND_FILE);
        let io = |op| {
            let path = path.clone();
            move |source| StoreError::Io { op, path, source }
        };
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io("create"))?;
        std::io::Write::write_all(&mut f, format!("{command}\n").as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io("write"))?;
        Ok(MasterKeySource::Command(command.to_owned()))
    }

    /// Points `home` at `command` from now on: checks that it prints a key, then replaces
    /// `HOME/master_key_command` atomically and durably (a temporary file of mode 0600,
    /// fsynced, renamed over it, the directory fsynced). Returns the command's key.
    pub fn replace_command(home: &Path, command: &str) -> Result<MasterKey, StoreError> {
        let command = command.trim();
        if command.is_empty() || command.len() as u64 > MAX_COMMAND_BYTES {
            return Err(bad(format!(
                "a master key command has 1 to {MAX_COMMAND_BYTES} bytes"
            )));
        }
        let key = MasterKey::from_command(command)?;
        let path = home.join(MASTER_KEY_COMMAND_FILE);
        let tmp = home.join(format!("{MASTER_KEY_COMMAND_FILE}.new"));
        let io = |op, path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io { op, path, source }
        };
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("remove", &tmp)(e))
            }
            _ => {}
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        std::io::Write::write_all(&mut f, format!("{command}\n").as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        fs::File::open(home)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync", home))?;
        Ok(key)
    }

    /// The key.
    pub fn load(&self) -> Result<MasterKey, StoreError> {
        match self {
            MasterKeySource::File(path) => MasterKey::load(path),
            MasterKeySource::Command(command) => MasterKey::from_command(command),
        }
    }

    /// The key file a rotation replaces; `None` for a command's key, which is rotated in its
    /// secret store.
    pub fn key_file(&self) -> Option<&Path> {
        match self {
            MasterKeySource::File(path) => Some(path),
            MasterKeySource::Command(_) => None,
        }
    }

    /// What a restore of a backup made now needs, for the operator.
    pub fn describe(&self) -> String {
        match self {
            MasterKeySource::File(path) => path.display().to_string(),
            MasterKeySource::Command(_) => format!(
                "the key {MASTER_KEY_COMMAND_FILE} prints now (keep that secret's current \
                 version as long as this backup)"
            ),
        }
    }

    /// The refusal of an online rotation for a command's key.
    pub fn cannot_rotate() -> String {
        format!(
            "this node's master key comes from HOME/{MASTER_KEY_COMMAND_FILE}: put the next \
             key in your secret store, stop the node, then run `mpcd rotate-master-key \
             --new-master-key-command CMD` with the command that prints it"
        )
    }
}

#[cfg(test)]
#[allow(non_snake_case, clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn source__should_be_the_file_unless_a_command_is_named_and_refuse_both() {
        let home = tempfile::tempdir().unwrap();
        assert_eq!(
            MasterKeySource::of_home(home.path()).unwrap(),
            MasterKeySource::File(home.path().join(MASTER_KEY_FILE))
        );
        let hex_file = home.path().join("k.hex");
        fs::write(&hex_file, "cd".repeat(32)).unwrap();
        let cmd = format!("cat {}", hex_file.display());
        let src = MasterKeySource::init_command(home.path(), &cmd).unwrap();
        assert_eq!(MasterKeySource::of_home(home.path()).unwrap(), src);
        assert!(src.key_file().is_none());
        src.load().unwrap();
        // Never over an existing command file.
        assert!(MasterKeySource::init_command(home.path(), &cmd).is_err());
        // A command file others can write is refused.
        let cmd_file = home.path().join(MASTER_KEY_COMMAND_FILE);
        fs::set_permissions(&cmd_file, fs::Permissions::from_mode(0o622)).unwrap();
        let err = MasterKeySource::of_home(home.path()).unwrap_err();
        assert!(
            matches!(err, StoreError::MasterKeyPermissions { .. }),
            "{err}"
        );
        fs::set_permissions(&cmd_file, fs::Permissions::from_mode(0o600)).unwrap();
        // Both sources: ambiguous.
        MasterKey::create(&home.path().join(MASTER_KEY_FILE)).unwrap();
        let err = MasterKeySource::of_home(home.path()).unwrap_err();
        assert!(err.to_string().contains("keep one"), "{err}");
    }

    #[test]
    fn init_command__should_refuse_a_command_that_prints_no_key_and_write_nothing() {
        let home = tempfile::tempdir().unwrap();
        let err = MasterKeySource::init_command(home.path(), "echo nope").unwrap_err();
        assert!(err.to_string().contains("hex digits"), "{err}");
        assert!(!home.path().join(MASTER_KEY_COMMAND_FILE).exists());
    }
}
