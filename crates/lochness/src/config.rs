//! Global configuration: free-form string values under `lochness/config/<key>`, where a
//! key may itself contain `/`.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::keys;

impl Context {
    /// Global configuration value of `key`: [`Error::Invalid`] for an empty key,
    /// [`Error::NotFound`] when it is not set.
    pub async fn get_config(&self, key: &str) -> Result<String> {
        if key.is_empty() {
            return Err(Error::Invalid("empty config key".into()));
        }
        let rel = keys::config(key);
        match self.get(&rel).await? {
            Some(kv) => Ok(kv.text()),
            None => Err(Error::NotFound(rel)),
        }
    }

    /// Sets global configuration `key` to `value` (an empty value is stored, not deleted).
    pub async fn set_config(&self, key: &str, value: &str) -> Result<()> {
        if key.is_empty() {
            return Err(Error::Invalid("empty config key".into()));
        }
        self.kv()
            .put(self.abs(&keys::config(key)), value, None)
            .await?;
        Ok(())
    }

    /// Calls `f(key, value)` for every global configuration key (nested keys keep their
    /// inner `/`), in key order, after one ranged read; stops at the first error.
    pub async fn for_each_config<F>(&self, mut f: F) -> Result<()>
    where
        F: FnMut(&str, &str) -> Result<()>,
    {
        for kv in self.get_prefix(keys::CONFIG).await? {
            if let Some(key) = kv.key.strip_prefix(keys::CONFIG) {
                f(key, &kv.text())?;
            }
        }
        Ok(())
    }
}
