//! The whole store, key by key (snapshots, replay comparisons).

use super::{Result, Store, StoreError};

impl Store {
    /// Calls `f` with every key and value in key order (but those whose first byte is in
    /// `except`) without collecting them; `f` returning `false` stops early.
    pub fn for_each_entry<E: From<StoreError>>(
        &self,
        except: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> std::result::Result<bool, E>,
    ) -> std::result::Result<(), E> {
        for item in self.tree.iter() {
            let (k, v) = item.map_err(StoreError::from)?;
            if k.first().is_some_and(|p| except.contains(p)) {
                continue;
            }
            if !f(&k, &v)? {
                break;
            }
        }
        Ok(())
    }

    /// Every key and value in key order, except under the namespace prefixes `except` (the
    /// replay tests compare two stores with it; `keys` names the prefixes).
    pub fn contents(&self, except: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.for_each_entry(except, |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok::<_, StoreError>(true)
        })?;
        Ok(out)
    }
}
