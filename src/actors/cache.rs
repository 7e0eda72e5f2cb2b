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

use super::pipeline::{self, AgentContext, Outgoing, PipelineError};
use crate::models::envelope::{self, Kind, Validate};
use crate::topics::names::TopicName;

/// One key's last published record.
#[derive(Debug, Clone)]
struct Entry {
    group: Arc<str>,
    json: Arc<[u8]>,
    /// When the record happened (its envelope's time), 0 when not told.
    time_us: i64,
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
    /// Its time, from [`LastRecordCache::diff_group_at`]: the time asked, or just after the key's
    /// previous record when that one is later, so that a key's records never go back in time.
    pub time_us: i64,
}

impl Change {
    /// The records that publish this change: `record`, and after a deletion a tombstone for its
    /// key, so that compaction drops the key from the topic once `min.compaction.lag.ms` has
    /// passed (every consumer nearer than that reads the deletion itself; see
    /// [`crate::config::KafkaConfig::compacted_topic_config`]). Consumers pass tombstones over
    /// ([`super::pipeline::Incoming::decode`]); a rebuild that meets one has either read the
    /// deletion before it or nothing of the key at all, so it cannot revive it.
    pub fn published_as(&self, record: Outgoing) -> Vec<Outgoing> {
        match self.kind {
            Kind::Deleted => {
                let tombstone = record.tombstone();
                vec![record, tombstone]
            }
            _ => vec![record],
        }
    }
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
        self.diff_group_at(group, current, 0)
    }

    /// [`Self::diff_group`] for records that happened at `time_us`: each change carries that
    /// time, or 1 µs after the time of the key's previous record if that is not earlier (an input
    /// joined from several sources can be stamped earlier than one already published).
    pub fn diff_group_at(
        &self,
        group: &str,
        current: Vec<(String, Vec<u8>)>,
        time_us: i64,
    ) -> Vec<Change> {
        let group: Arc<str> = Arc::from(group);
        let after = |previous: i64| {
            if previous >= time_us {
                previous + 1
            } else {
                time_us
            }
        };
        let current: BTreeMap<String, Vec<u8>> = current.into_iter().collect();
        let mut changes = Vec::new();
        for (key, json) in current.iter() {
            let (kind, time_us) = match self.records.get(key.as_str()) {
                None => (Kind::Created, time_us),
                Some(entry) if *entry.json == json[..] => continue,
                Some(entry) => (Kind::Updated, after(entry.time_us)),
            };
            let json: Arc<[u8]> = Arc::from(json.as_slice());
            self.put(&group, key, json.clone(), time_us);
            changes.push(Change {
                kind,
                key: key.clone(),
                json,
                time_us,
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
                    time_us: after(entry.time_us),
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

    /// Records `key` as last published with `json` at `time_us` (rebuilding from the output
    /// topic).
    pub fn remember(&self, group: &str, key: &str, json: &[u8], time_us: i64) {
        self.put(&Arc::from(group), key, Arc::from(json), time_us);
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
                        cache.remember(&group(&env.payload), &env.key, &json, env.time_us);
                    }
                }
            }
        })
        .await?;
        tracing::info!(agent, region = %region, read, keys = cache.len(), "cache rebuilt");
        Ok(cache)
    }

    fn put(&self, group: &Arc<str>, key: &str, json: Arc<[u8]>, time_us: i64) {
        let key: Arc<str> = Arc::from(key);
        let previous = self.records.insert(
            key.clone(),
            Entry {
                group: group.clone(),
                json,
                time_us,
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

/// One key's newest input: when it happened, and the record (`None`: deleted).
#[derive(Debug)]
struct Seen<T> {
    time_us: i64,
    group: Arc<str>,
    record: Option<Arc<T>>,
}

/// The newest record of each key of an input topic, for an agent that joins several inputs:
/// rebuilt from the topic on start, then kept by the records the agent consumes. A record older
/// than the one held for its key (a replay from the last committed offset, after the rebuild read
/// further) changes nothing, so the join never steps back in time. Keys are grouped (e.g. every
/// task of one deployment in one zone) to find what belongs together.
#[derive(Debug)]
pub struct Latest<T> {
    records: DashMap<Arc<str>, Seen<T>>,
    groups: DashMap<Arc<str>, BTreeSet<Arc<str>>>,
    group_of: fn(&T) -> String,
    /// Deletions are kept (a replayed older record must not revive the key) for this long after
    /// the newest record, then forgotten.
    newest_us: std::sync::atomic::AtomicI64,
    applied: std::sync::atomic::AtomicU64,
}

/// How long a deletion is remembered against replays.
const TOMBSTONE_US: i64 = 3_600_000_000;

impl<T> Latest<T> {
    pub fn new(group_of: fn(&T) -> String) -> Self {
        Self {
            records: DashMap::new(),
            groups: DashMap::new(),
            group_of,
            newest_us: Default::default(),
            applied: Default::default(),
        }
    }

    /// Rebuilds from `topic` on `ctx`'s home cluster: the newest record of each key this region
    /// published.
    pub async fn rebuild(
        agent: &str,
        ctx: &AgentContext,
        topic: &TopicName,
        group_of: fn(&T) -> String,
    ) -> Result<Self, PipelineError>
    where
        T: DeserializeOwned + Validate,
    {
        let latest = Self::new(group_of);
        let region = &ctx.region.name;
        let reader = format!("{}-rebuild-{}", pipeline::consumer_group(agent, ctx), topic);
        let read = pipeline::read_to_end(&ctx.home, topic, &reader, |msg| {
            use rdkafka::Message;
            if let Ok(env) = envelope::decode::<T>(msg.key(), msg.payload()) {
                if &env.origin == region {
                    latest.apply(env);
                }
            }
        })
        .await?;
        tracing::info!(agent, region = %region, %topic, read, keys = latest.len(), "input rebuilt");
        Ok(latest)
    }

    /// Live keys held.
    pub fn len(&self) -> usize {
        self.records.iter().filter(|r| r.record.is_some()).count()
    }

    /// Whether no live key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes `env` if it is not older than what is held for its key; false when it is (it changes
    /// nothing).
    pub fn apply(&self, env: envelope::Envelope<T>) -> bool {
        use std::sync::atomic::Ordering;
        let key: Arc<str> = Arc::from(env.key.as_str());
        if let Some(held) = self.records.get(&key) {
            if held.time_us > env.time_us {
                return false;
            }
        }
        let group: Arc<str> = Arc::from((self.group_of)(&env.payload).as_str());
        let record = (env.kind != Kind::Deleted).then(|| Arc::new(env.payload));
        if let Some(previous) = self.records.insert(
            key.clone(),
            Seen {
                time_us: env.time_us,
                group: group.clone(),
                record: record.clone(),
            },
        ) {
            if previous.group != group {
                self.ungroup(&previous.group, &key);
            }
        }
        if record.is_some() {
            self.groups.entry(group).or_default().insert(key);
        } else {
            self.ungroup(&group, &key);
        }
        self.newest_us.fetch_max(env.time_us, Ordering::Relaxed);
        if self.applied.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            let horizon = self.newest_us.load(Ordering::Relaxed) - TOMBSTONE_US;
            self.records
                .retain(|_, seen| seen.record.is_some() || seen.time_us >= horizon);
        }
        true
    }

    fn ungroup(&self, group: &Arc<str>, key: &Arc<str>) {
        if let Some(mut keys) = self.groups.get_mut(group) {
            keys.remove(key);
        }
        self.groups.remove_if(group, |_, keys| keys.is_empty());
    }

    /// The live record of `key`.
    pub fn get(&self, key: &str) -> Option<Arc<T>> {
        self.records.get(key).and_then(|seen| seen.record.clone())
    }

    /// The live records of `group`, in key order.
    pub fn group(&self, group: &str) -> Vec<Arc<T>> {
        self.groups
            .get(group)
            .map(|keys| keys.iter().filter_map(|k| self.get(k)).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    /// Every deletion among `records` is followed at once by its key's tombstone, and every
    /// tombstone follows its key's deletion.
    pub(crate) fn assert_deletions_tombstoned(records: &[super::Outgoing]) {
        for (i, record) in records.iter().enumerate() {
            let deletion = record.headers.iter().any(|(k, v)| {
                k == crate::models::envelope::HEADER_EVENT_TYPE && v.ends_with(b".deleted")
            });
            if deletion {
                assert_eq!(
                    records.get(i + 1),
                    Some(&record.tombstone()),
                    "tombstone after {i}"
                );
            }
            if record.value.is_none() {
                assert!(
                    i > 0 && records[i - 1].tombstone() == *record,
                    "stray tombstone {i}"
                );
            }
        }
    }

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

    fn env(kind: Kind, key: &str, time_us: i64, payload: &str) -> envelope::Envelope<String> {
        let origin = crate::topics::names::RegionName::parse("test-us-east-1").unwrap();
        envelope::Envelope::new(kind, key.to_owned(), origin, time_us, payload.to_owned())
    }

    #[test]
    fn a_keys_records_never_go_back_in_time() {
        let cache = LastRecordCache::new();
        let first = cache.diff_group_at("g", snapshot(&[("a", "1")]), 100);
        assert_eq!(first[0].time_us, 100);
        let earlier = cache.diff_group_at("g", snapshot(&[("a", "2")]), 90);
        assert_eq!(
            earlier[0].time_us, 101,
            "stamped just after the previous record"
        );
        let later = cache.diff_group_at("g", snapshot(&[("a", "3")]), 200);
        assert_eq!(later[0].time_us, 200);
        let gone = cache.diff_group_at("g", vec![], 150);
        assert_eq!((gone[0].kind, gone[0].time_us), (Kind::Deleted, 201));
    }

    #[test]
    fn latest_keeps_the_newest_record_and_ignores_older_replays() {
        let latest: Latest<String> = Latest::new(|p| p[..1].to_owned());
        assert!(latest.apply(env(Kind::Created, "k1", 10, "a1")));
        assert!(latest.apply(env(Kind::Created, "k2", 10, "a2")));
        assert!(latest.apply(env(Kind::Updated, "k1", 20, "a3")));
        assert!(!latest.apply(env(Kind::Updated, "k1", 15, "a0")), "older");
        assert_eq!(latest.get("k1").as_deref().map(String::as_str), Some("a3"));
        assert_eq!(latest.group("a").len(), 2);
        assert!(latest.apply(env(Kind::Deleted, "k2", 30, "a2")));
        assert!(
            !latest.apply(env(Kind::Updated, "k2", 25, "a2")),
            "a replay does not revive a deleted key"
        );
        assert_eq!(latest.get("k2"), None);
        assert_eq!(latest.group("a").len(), 1);
        assert!(latest.apply(env(Kind::Updated, "k1", 40, "b1")));
        assert!(latest.group("a").is_empty(), "moved to its new group");
        assert_eq!(latest.group("b").len(), 1);
        assert_eq!(latest.len(), 1);
    }

    #[test]
    fn rebuilt_cache_suppresses_unchanged_and_finds_deletions() {
        let cache = LastRecordCache::new();
        cache.remember("g", "a", b"1", 0);
        cache.remember("g", "b", b"1", 0);
        cache.remember("g", "c", b"1", 0);
        cache.forget("c");
        let changes = cache.diff_group("g", snapshot(&[("a", "1")]));
        assert_eq!(kinds(&changes), [(Kind::Deleted, "b")]);
    }
}
