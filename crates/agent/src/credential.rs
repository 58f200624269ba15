//! The agent's own credential, handed out once by the controller when the
//! agent enrolled with a one-time token or joined a scale set, kept in
//! `DATA_DIR/credential` (0600); and the host's id, `DATA_DIR/host-id`, made
//! once at random, which tells the controller this is the same host when it
//! joins a scale set again (it keeps its instance id).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::AgentError;

/// The file's name in the data directory.
pub(crate) const FILE: &str = "credential";

/// The file naming the enrollment token this agent has used (its SHA-256 in
/// hex, never the token): given again, it is spent, and the saved credential
/// is used; any other token is a new enrollment, which wins.
pub(crate) const USED_TOKEN_FILE: &str = "enrollment-token.sha256";

/// The SHA-256 of `token`, in hex.
pub(crate) fn token_digest(token: &str) -> String {
    use sha2::Digest as _;
    crate::spool::hex(&sha2::Sha256::digest(token.as_bytes()))
}

/// The host id file's name in the data directory.
pub(crate) const HOST_ID_FILE: &str = "host-id";

/// The host's id: the one saved at `path`, or a new random one (32 hex
/// digits) saved there first.
pub(crate) fn host_id(path: &Path) -> Result<String, AgentError> {
    if let Some(id) = load(path)? {
        return Ok(id);
    }
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|err| AgentError::Credential {
        what: "make a random host id for",
        path: path.to_owned(),
        source: std::io::Error::other(err.to_string()),
    })?;
    let id = crate::spool::hex(&bytes);
    save(path, &id)?;
    tracing::info!(file = %path.display(), "this host's id made");
    Ok(id)
}

/// The saved credential, if there is one.
pub(crate) fn load(path: &Path) -> Result<Option<String>, AgentError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_owned()).filter(|token| !token.is_empty())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AgentError::Credential {
            what: "read",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Saves `credential`, durably (temporary file, fsync, rename), readable by
/// the agent's user only.
pub(crate) fn save(path: &Path, credential: &str) -> Result<(), AgentError> {
    let error = |source| AgentError::Credential {
        what: "write",
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(error)?;
    }
    let temporary = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(error)?;
    file.write_all(credential.as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)?;
    std::fs::rename(&temporary, path).map_err(error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_credential_loads_back_and_none_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(FILE);
        assert_eq!(load(&path).unwrap(), None);
        save(&path, "abc123").unwrap();
        assert_eq!(load(&path).unwrap().as_deref(), Some("abc123"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
