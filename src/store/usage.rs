//! What the store holds, by key family (`keys`): the key and value bytes under each prefix of
//! the `herald` tree, and whatever sled's other trees hold. A diagnostic (`herald-load`'s
//! storage scenario, operators sizing a disk): it reads every entry once and changes nothing.
//!
//! These are logical bytes, what Herald handed sled. The files hold more: sled's node headers
//! and log framing, versions of pages not yet cleaned out of the log, free space in segments.
//! The caller compares with the directory's size to tell the engine's share.

use super::{keys, Result, Store};

/// The entries of one key family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Family {
    /// The prefix byte (`None`: sled's other trees, outside Herald's key layout).
    pub prefix: Option<u8>,
    /// What it holds (`keys::family`).
    pub name: &'static str,
    pub keys: u64,
    pub key_bytes: u64,
    pub value_bytes: u64,
}

impl Family {
    /// Counts one entry.
    fn add(&mut self, key: &[u8], value: &[u8]) {
        self.keys += 1;
        self.key_bytes += key.len() as u64;
        self.value_bytes += value.len() as u64;
    }

    pub fn bytes(&self) -> u64 {
        self.key_bytes + self.value_bytes
    }
}

/// Every non-empty family, in prefix order, then the other trees.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub families: Vec<Family>,
}

impl Usage {
    /// Key and value bytes of every entry.
    pub fn logical_bytes(&self) -> u64 {
        self.families.iter().map(Family::bytes).sum()
    }

    /// The family under `prefix`, if it holds anything.
    pub fn family(&self, prefix: u8) -> Option<&Family> {
        self.families.iter().find(|f| f.prefix == Some(prefix))
    }
}

impl Store {
    /// Key and value bytes by key family (see the module header). Reads the whole store.
    pub fn usage(&self) -> Result<Usage> {
        let mut by_prefix: std::collections::BTreeMap<u8, Family> = std::collections::BTreeMap::new();
        for item in self.tree.iter() {
            let (k, v) = item?;
            let Some(&prefix) = k.first() else { continue };
            by_prefix
                .entry(prefix)
                .or_insert_with(|| Family { prefix: Some(prefix), name: keys::family(prefix), ..Family::default() })
                .add(&k, &v);
        }
        let mut families: Vec<Family> = by_prefix.into_values().collect();
        let mut other = Family { prefix: None, name: "other sled trees", ..Family::default() };
        for name in self.db.tree_names() {
            if name.as_ref() == b"herald" {
                continue;
            }
            for item in self.db.open_tree(&name)?.iter() {
                let (k, v) = item?;
                other.add(&k, &v);
            }
        }
        if other.keys > 0 {
            families.push(other);
        }
        Ok(Usage { families })
    }
}
