//! The last-record cache: for each key, the record an agent last published, so it publishes on
//! creation, update and deletion only.
//!
//! Records are kept as their serialized JSON: serialization is deterministic, so equal bytes mean
//! an unchanged record, and a deletion can be published with the last state known. Keys are
//! grouped (e.g. every instance of one service in one zone) so that a snapshot of a group reveals
//! which keys disappeared. The cache is rebuilt from the agent's own compacted output topic on
//! start, so a restart neither re-announces unchanged keys nor misses a deletion.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use dashmap::DashMap;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::pipeline::{self, AgentContext, PipelineError};
use crate::models::envelope::{self, Kind, Validate};
use crate::topics::names::TopicName;

/// One key's last published record.
#[derive(Debug, Clone)]
struct Entry {
    group: Arc<str>,
    json: Arc<[u8]>,
}

/// What changed for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Created, updated or deleted.
    pub kind: Kind,
    /// The entity's key.
    pub key: String,
    /// The record to publish: the new state, or for a deletion the last state known.
    pub json: Arc<[u8]>,
}

/// Last published record per key, grouped.
#[derive(Debug, Default)]
pub struct LastRecordCache {
    records: DashMap<Arc<str>, Entry>,
    groups: DashMap<Arc<str>, BTreeSet<Arc<str>>>,
}

impl LastRecordCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Compares the complete current records of `group` with those last published, records the
    /// new state, and returns the changes: creations and updates in key order, then deletions of
    /// keys the group no longer has.
    pub fn diff_group(&self, group: &str, current: Vec<(String, Vec<u8>)>) -> Vec<Change> {
        let group: Arc<str> = Arc::from(group);
        let current: BTreeMap<String, Vec<u8>> = current.into_iter().collect();
        let mut changes = Vec::new();
        for (key, json) in current.iter() {
            let kind = match self.records.get(key.as_str()) {
                None => Kind::Created,
                Some(entry) if *entry.json == json[..] => continue,
                Some(_) => Kind::Updated,
            };
            let json: Arc<[u8]> = Arc::from(json.as_slice());
            self.put(&group, key, json.clone());
            changes.push(Change {
                kind,
                key: key.clone(),
                json,
            });
        }
        let gone: Vec<Arc<str>> = self
            .groups
            .get(&group)
            .map(|keys| {
                keys.iter()
                    .filter(|k| !current.contains_key(&***k))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for key in gone {
            if let Some((_, entry)) = self.records.remove(&key) {
                changes.push(Change {
                    kind: Kind::Deleted,
                    key: key.to_string(),
                    json: entry.json,
                });
            }
            if let Some(mut keys) = self.groups.get_mut(&group) {
                keys.remove(&key);
            }
        }
        self.groups.remove_if(&group, |_, keys| keys.is_empty());
        changes
    }

    /// The record last published for `key`, if it is still live.
    pub fn last(&self, key: &str) -> Option<Arc<[u8]>> {
        self.records.get(key).map(|entry| entry.json.clone())
    }

    /// Records `key` as last published with `json` (rebuilding from the output topic).
    pub fn remember(&self, group: &str, key: &str, json: &[u8]) {
        self.put(&Arc::from(group), key, Arc::from(json));
    }

    /// Forgets `key` (a deletion read while rebuilding).
    pub fn forget(&self, key: &str) {
        if let Some((key, entry)) = self.records.remove(key) {
            if let Some(mut keys) = self.groups.get_mut(&entry.group) {
                keys.remove(&key);
            }
            self.groups
                .remove_if(&entry.group, |_, keys| keys.is_empty());
        }
    }

    /// Rebuilds the cache of `agent` in `ctx`'s region from its own output `topic`: the last
    /// record of each key this region published, minus the deleted ones. `group` names the group
    /// a record belongs to.
    pub async fn rebuild<T: DeserializeOwned + Serialize + Validate>(
        agent: &str,
        ctx: &AgentContext,
        topic: &TopicName,
        group: impl Fn(&T) -> String,
    ) -> Result<Self, PipelineError> {
        let cache = Self::new();
        let region = &ctx.region.name;
        let reader = format!("{}-rebuild", pipeline::consumer_group(agent, ctx));
        let read = pipeline::read_to_end(&ctx.home, topic, &reader, |msg| {
            use rdkafka::Message;
            let Ok(env) = envelope::decode::<T>(msg.key(), msg.payload()) else {
                return;
            };
            if &env.origin != region {
                return;
            }
            match env.kind {
                Kind::Deleted => cache.forget(&env.key),
                _ => {
                    if let Ok(json) = serde_json::to_vec(&env.payload) {
                        cache.remember(&group(&env.payload), &env.key, &json);
                    }
                }
            }
        })
        .await?;
        tracing::info!(agent, region = %region, read, keys = cache.len(), "cache rebuilt");
        Ok(cache)
    }

    fn put(&self, group: &Arc<str>, key: &str, json: Arc<[u8]>) {
        let key: Arc<str> = Arc::from(key);
        let previous = self.records.insert(
            key.clone(),
            Entry {
                group: group.clone(),
                json,
            },
        );
        if let Some(previous) = previous {
            if previous.group != *group {
                if let Some(mut keys) = self.groups.get_mut(&previous.group) {
                    keys.remove(&key);
                }
            }
        }
        self.groups.entry(group.clone()).or_default().insert(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(items: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn kinds(changes: &[Change]) -> Vec<(Kind, &str)> {
        changes.iter().map(|c| (c.kind, c.key.as_str())).collect()
    }

    #[test]
    fn creation_then_nothing_then_update_then_deletion() {
        let cache = LastRecordCache::new();
        let first = cache.diff_group("g", snapshot(&[("a", "1"), ("b", "1"), ("c", "1")]));
        assert_eq!(
            kinds(&first),
            [
                (Kind::Created, "a"),
                (Kind::Created, "b"),
                (Kind::Created, "c")
            ]
        );
        assert!(cache
            .diff_group("g", snapshot(&[("a", "1"), ("b", "1"), ("c", "1")]))
            .is_empty());
        let update = cache.diff_group("g", snapshot(&[("a", "1"), ("b", "2"), ("c", "1")]));
        assert_eq!(kinds(&update), [(Kind::Updated, "b")]);
        let deletion = cache.diff_group("g", snapshot(&[("a", "1"), ("b", "2")]));
        assert_eq!(kinds(&deletion), [(Kind::Deleted, "c")]);
        assert_eq!(
            &*deletion[0].json, b"1",
            "a deletion carries the last state known"
        );
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn an_empty_snapshot_deletes_the_whole_group_and_leaves_others() {
        let cache = LastRecordCache::new();
        cache.diff_group("g", snapshot(&[("a", "1"), ("b", "1")]));
        cache.diff_group("h", snapshot(&[("x", "1")]));
        let gone = cache.diff_group("g", vec![]);
        assert_eq!(kinds(&gone), [(Kind::Deleted, "a"), (Kind::Deleted, "b")]);
        assert!(cache.diff_group("h", snapshot(&[("x", "1")])).is_empty());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn rebuilt_cache_suppresses_unchanged_and_finds_deletions() {
        let cache = LastRecordCache::new();
        cache.remember("g", "a", b"1");
        cache.remember("g", "b", b"1");
        cache.remember("g", "c", b"1");
        cache.forget("c");
        let changes = cache.diff_group("g", snapshot(&[("a", "1")]));
        assert_eq!(kinds(&changes), [(Kind::Deleted, "b")]);
    }
}
