//! The node's master key: 32 random bytes in a file of mode 0600, used only to wrap the store's
//! data key.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aes_gcm::{Aes256Gcm, KeyInit};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{parent_dir, sync_dir, StoreError};

/// Length of the master key file: the raw key, no encoding.
pub const MASTER_KEY_LEN: usize = 32;

/// How long [`MasterKey::from_command`] waits for its command.
pub const MASTER_KEY_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The most a master key command may print (64 hex digits and a newline fit well within).
const MAX_COMMAND_OUTPUT: usize = 256;

/// The node's master key (32 bytes).
///
/// Boxed so that moving it does not leave copies on the stack; zeroized on drop; `Debug` prints
/// `<redacted>`.
pub struct MasterKey(Box<[u8; MASTER_KEY_LEN]>);

impl Zeroize for MasterKey {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for MasterKey {}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("MasterKey")
            .field(&format_args!("<redacted>"))
            .finish()
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl MasterKey {
    /// A fresh key from the OS RNG.
    pub(super) fn generate() -> Result<MasterKey, StoreError> {
        let mut key = Box::new([0u8; MASTER_KEY_LEN]);
        super::seal::fill_random(key.as_mut_slice())?;
        Ok(MasterKey(key))
    }

    /// Creates a fresh key (OS RNG) and writes it to `path`, which must not exist.
    ///
    /// The key is written to a temporary file in the same directory (mode 0600, created with
    /// `O_EXCL`), fsynced, then hard-linked to `path` (which fails if `path` exists, so a key is
    /// never overwritten), the temporary name is removed and the directory fsynced. After a crash
    /// `path` either holds the whole key or does not exist. The filesystem must support hard
    /// links (ext4, xfs, btrfs and tmpfs do).
    ///
    /// Errors: [`StoreError::MasterKeyExists`] if `path` exists, [`StoreError::Io`] otherwise.
    pub fn create(path: &Path) -> Result<MasterKey, StoreError> {
        let key = MasterKey::generate()?;
        let dir = parent_dir(path);
        let name = path
            .file_name()
            .ok_or_else(|| StoreError::MasterKey(format!("{} names no file", path.display())))?;
        let mut suffix = [0u8; 8];
        super::seal::fill_random(&mut suffix)?;
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            hex::encode(suffix)
        ));

        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err("create", &tmp))?;
            f.write_all(key.0.as_slice())
                .map_err(io_err("write", &tmp))?;
            f.sync_all().map_err(io_err("fsync", &tmp))?;
            fs::hard_link(&tmp, path).map_err(|source| {
                if source.kind() == io::ErrorKind::AlreadyExists {
                    StoreError::MasterKeyExists {
                        path: path.to_path_buf(),
                    }
                } else {
                    io_err("link", path)(source)
                }
            })
        })();
        // The temporary name goes in every case; on success `path` keeps the inode.
        let removed = fs::remove_file(&tmp);
        written?;
        if let Err(e) = removed {
            tracing::warn!(path = %tmp.display(), error = %e,
                "could not remove the temporary master key file; delete it by hand");
        }
        sync_dir(dir).map_err(io_err("fsync dir", dir))?;
        tracing::info!(path = %path.display(), "created master key");
        Ok(key)
    }

    /// Loads the key from `path`.
    ///
    /// Refuses with [`StoreError::MasterKeyPermissions`] a file with any group or other
    /// permission bit (readable, writable or executable: mode must be `0600` or stricter), and
    /// with [`StoreError::MasterKey`] anything that is not a regular file of exactly 32 bytes.
    /// The checks run on the opened file descriptor, so a rename in between cannot fool them.
    pub fn load(path: &Path) -> Result<MasterKey, StoreError> {
        let mut f = File::open(path).map_err(io_err("open", path))?;
        let meta = f.metadata().map_err(io_err("stat", path))?;
        if !meta.is_file() {
            return Err(StoreError::MasterKey(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(StoreError::MasterKeyPermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        if meta.len() != MASTER_KEY_LEN as u64 {
            return Err(StoreError::MasterKey(format!(
                "{} has {} bytes, a master key has {MASTER_KEY_LEN}",
                path.display(),
                meta.len()
            )));
        }
        // Wrapped before reading, so the bytes are zeroized on every path.
        let mut key = MasterKey(Box::new([0u8; MASTER_KEY_LEN]));
        f.read_exact(key.0.as_mut_slice())
            .map_err(io_err("read", path))?;
        let mut extra = [0u8; 1];
        if f.read(&mut extra).map_err(io_err("read", path))? != 0 {
            return Err(StoreError::MasterKey(format!(
                "{} grew while being read",
                path.display()
            )));
        }
        Ok(key)
    }

    /// Runs `command` (with `sh -c`, no stdin, its stderr passed through) and reads the key
    /// from its standard output: 64 hex digits, optionally followed by a newline. This is how a
    /// key kept in a secret store (Vault, a cloud KMS, a hardware token) reaches the node
    /// without ever lying on its disk, e.g. `vault kv get -field=key secret/seqmpc/node0`.
    ///
    /// Refuses with [`StoreError::MasterKey`] a command that cannot start, exits non-zero,
    /// prints anything else, or does not finish within [`MASTER_KEY_COMMAND_TIMEOUT`]. Every
    /// buffer that held key bytes is zeroized.
    pub fn from_command(command: &str) -> Result<MasterKey, StoreError> {
        MasterKey::from_command_within(command, MASTER_KEY_COMMAND_TIMEOUT)
    }

    fn from_command_within(command: &str, timeout: Duration) -> Result<MasterKey, StoreError> {
        let bad = |why: String| StoreError::MasterKey(format!("--master-key-command: {why}"));
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own process group, so that a timeout kills whatever it started too.
            .process_group(0)
            .spawn()
            .map_err(|e| bad(format!("cannot start /bin/sh: {e}")))?;
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| bad("no standard output".into()))?;
        // Read on a thread, so a command that never ends is killed at the deadline.
        let reader = std::thread::spawn(move || {
            let mut out = Zeroizing::new(Vec::with_capacity(MAX_COMMAND_OUTPUT));
            let mut limited = (&mut stdout).take(MAX_COMMAND_OUTPUT as u64 + 1);
            limited.read_to_end(&mut out).map(|_| out)
        });
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    if let Ok(pid) = i32::try_from(child.id()) {
                        let group = nix::unistd::Pid::from_raw(pid);
                        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(bad(format!(
                        "did not finish within {} ms",
                        timeout.as_millis()
                    )));
                }
                Err(e) => return Err(bad(format!("wait: {e}"))),
            }
        };
        let out = reader
            .join()
            .map_err(|_| bad("reader thread panicked".into()))?
            .map_err(|e| bad(format!("read its output: {e}")))?;
        if !status.success() {
            return Err(bad(format!("exited with {status}")));
        }
        let text = out.strip_suffix(b"\n").unwrap_or(&out);
        if text.len() != 2 * MASTER_KEY_LEN {
            return Err(bad(format!(
                "printed {} bytes; expected {} hex digits (a 32-byte key)",
                out.len(),
                2 * MASTER_KEY_LEN
            )));
        }
        let mut key = MasterKey(Box::new([0u8; MASTER_KEY_LEN]));
        hex::decode_to_slice(text, key.0.as_mut_slice())
            .map_err(|_| bad("printed something that is not hex".into()))?;
        Ok(key)
    }

    /// The raw key, to write it to its file. Never log it.
    pub(super) fn expose(&self) -> &[u8; MASTER_KEY_LEN] {
        &self.0
    }

    /// An AES-256-GCM cipher under this key (wraps and unwraps the data key).
    pub(super) fn cipher(&self) -> Result<Aes256Gcm, StoreError> {
        Aes256Gcm::new_from_slice(self.0.as_slice())
            .map_err(|e| StoreError::Bug(format!("AES-256-GCM key: {e}")))
    }
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;

    #[test]
    fn master_key__should_create_with_mode_0600_and_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let created = MasterKey::create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = MasterKey::load(&path).unwrap();
        assert_eq!(created.0, loaded.0);
        // Only the key file remains: the temporary name was removed.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn master_key__should_refuse_to_overwrite_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let first = MasterKey::create(&path).unwrap();
        let err = MasterKey::create(&path).unwrap_err();
        assert!(matches!(err, StoreError::MasterKeyExists { .. }), "{err}");
        assert_eq!(MasterKey::load(&path).unwrap().0, first.0);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn master_key__should_refuse_mode_0644_and_0640() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        MasterKey::create(&path).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = MasterKey::load(&path).unwrap_err();
            assert!(
                matches!(err, StoreError::MasterKeyPermissions { mode: m, .. } if m == mode),
                "{mode:o}: {err}"
            );
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        MasterKey::load(&path).unwrap();
    }

    #[test]
    fn master_key__should_refuse_a_file_of_wrong_length() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 31, 33, 64] {
            let path = dir.path().join(format!("k{len}"));
            fs::write(&path, vec![1u8; len]).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            let err = MasterKey::load(&path).unwrap_err();
            assert!(matches!(err, StoreError::MasterKey(_)), "{len}: {err}");
        }
        let err = MasterKey::load(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::MasterKey(_)), "{err}");
        let err = MasterKey::load(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }), "{err}");
    }

    #[test]
    fn master_key__should_come_from_a_command_that_prints_it_in_hex() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let created = MasterKey::create(&path).unwrap();
        let hex_file = dir.path().join("key.hex");
        fs::write(
            &hex_file,
            format!("{}\n", hex::encode(created.0.as_slice())),
        )
        .unwrap();
        let from = MasterKey::from_command(&format!("cat {}", hex_file.display())).unwrap();
        assert_eq!(from.0, created.0);
        // Without the newline too.
        let cmd = format!("printf %s {}", hex::encode(created.0.as_slice()));
        assert_eq!(MasterKey::from_command(&cmd).unwrap().0, created.0);
    }

    #[test]
    fn master_key__should_refuse_a_command_that_fails_hangs_or_prints_anything_else() {
        let k = "ab".repeat(MASTER_KEY_LEN);
        let cases = [
            ("exit 3".to_owned(), "exited with"),
            (format!("echo {k}; exit 1"), "exited with"),
            ("echo".to_owned(), "expected 64 hex digits"),
            (format!("echo {k}ab"), "expected 64 hex digits"),
            (format!("printf '%s\\n\\n' {k}"), "expected 64 hex digits"),
            (format!("echo {}", "zz".repeat(MASTER_KEY_LEN)), "not hex"),
            ("head -c 100000 /dev/zero".to_owned(), "exited with"),
            ("/nonexistent/secret-tool".to_owned(), "exited with"),
        ];
        for (cmd, needle) in cases {
            let err = MasterKey::from_command(&cmd).unwrap_err();
            assert!(matches!(err, StoreError::MasterKey(_)), "{cmd}: {err}");
            assert!(err.to_string().contains(needle), "{cmd}: {err}");
            // Nothing of a key in the error.
            assert!(!err.to_string().contains(&k), "{cmd}: {err}");
        }
        let slow = Duration::from_millis(200);
        let err = MasterKey::from_command_within("sleep 5", slow).unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");
    }

    #[test]
    fn master_key__should_be_redacted_in_debug() {
        let key = MasterKey(Box::new([0xa7; MASTER_KEY_LEN]));
        let out = format!("{key:?} {key:#?}");
        assert!(out.contains("<redacted>"));
        assert!(!out.contains("a7a7") && !out.contains("A7A7") && !out.contains("167"));
    }
}
