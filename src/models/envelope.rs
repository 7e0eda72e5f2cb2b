//! The versioned JSON envelope of every record mot produces, and the Kafka headers beside it.
//!
//! ```json
//! {"v": 1, "id": "8f0c...", "kind": "updated", "key": "test-us-east-1/a/checkout-web/checkout-web-1",
//!  "origin": "test-us-east-1", "time_us": 1764250000000000, "payload": {...}}
//! ```
//!
//! The record key is the entity's key (the same as `key`), so one entity stays in one partition
//! and its order holds. Headers carry the event type and the W3C trace context.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::topics::names::RegionName;

/// The envelope version this mot writes and reads.
pub const VERSION: u32 = 1;

/// Header holding `<payload type>.<kind>`, e.g. `InstanceInfo.updated`.
pub const HEADER_EVENT_TYPE: &str = "mot-event-type";
/// W3C trace context headers, carried from hop to hop.
pub const HEADER_TRACEPARENT: &str = "traceparent";
pub const HEADER_TRACESTATE: &str = "tracestate";

/// What happened to the entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The full current state of a group, as a poller saw it.
    Snapshot,
    /// First seen.
    Created,
    /// Changed since last published.
    Updated,
    /// Gone; the payload is the last state known.
    Deleted,
    /// A request (launch, traffic) made by a user.
    Requested,
    /// The outcome of a request.
    Completed,
}

impl Kind {
    /// The lowercase name used in headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Snapshot => "snapshot",
            Kind::Created => "created",
            Kind::Updated => "updated",
            Kind::Deleted => "deleted",
            Kind::Requested => "requested",
            Kind::Completed => "completed",
        }
    }
}

/// A record on a mot topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope<T> {
    /// Envelope version; records of another version are dead-lettered, not guessed at.
    pub v: u32,
    /// Unique id of this event.
    pub id: Uuid,
    /// What happened.
    pub kind: Kind,
    /// The entity's key; also the Kafka record key.
    pub key: String,
    /// The region the event happened in.
    pub origin: RegionName,
    /// When it happened, microseconds since the Unix epoch: the Cassandra write timestamp
    /// downstream, so replays and late duplicates converge.
    pub time_us: i64,
    /// The entity.
    pub payload: T,
}

impl<T> Envelope<T> {
    /// A new event with a fresh id.
    pub fn new(
        kind: Kind,
        key: impl Into<String>,
        origin: RegionName,
        time_us: i64,
        payload: T,
    ) -> Self {
        Self {
            v: VERSION,
            id: Uuid::new_v4(),
            kind,
            key: key.into(),
            origin,
            time_us,
            payload,
        }
    }
}

impl<T> Envelope<T> {
    /// An event derived from a cause: its id is a digest of its key, kind, time and `cause` (e.g.
    /// the id of the record that caused it), so the same cause derives the same event again,
    /// with the same identity, however often it is replayed.
    pub fn derived(
        kind: Kind,
        key: impl Into<String>,
        origin: RegionName,
        time_us: i64,
        cause: &str,
        payload: T,
    ) -> Self {
        use sha2::{Digest, Sha256};
        let key = key.into();
        let digest = Sha256::new()
            .chain_update(key.as_bytes())
            .chain_update([0])
            .chain_update(kind.as_str())
            .chain_update([0])
            .chain_update(time_us.to_be_bytes())
            .chain_update(cause.as_bytes())
            .finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self {
            v: VERSION,
            id: uuid::Builder::from_random_bytes(bytes).into_uuid(),
            kind,
            key,
            origin,
            time_us,
            payload,
        }
    }

    /// The same event with another payload (a parsed or a raw one).
    pub fn with_payload<U>(self, payload: U) -> Envelope<U> {
        Envelope {
            v: self.v,
            id: self.id,
            kind: self.kind,
            key: self.key,
            origin: self.origin,
            time_us: self.time_us,
            payload,
        }
    }
}

/// A payload that can say whether it makes sense beyond its JSON shape.
pub trait Validate {
    /// `Err(reason)` when the record must not be processed.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Why a record could not be decoded; the reason goes into the dead-letter headers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record has no value")]
    Empty,
    #[error("malformed json: {0}")]
    MalformedJson(String),
    #[error("unsupported envelope version {found:?} (this mot reads version {VERSION})")]
    UnsupportedVersion { found: Option<u64> },
    #[error("invalid envelope: {0}")]
    InvalidEnvelope(String),
    #[error("invalid payload: {0}")]
    InvalidPayload(String),
    #[error("record key {record:?} differs from envelope key {envelope:?}")]
    KeyMismatch {
        record: Option<String>,
        envelope: String,
    },
}

/// Decodes and validates a record value; `record_key` is the Kafka key, which must match.
pub fn decode<T: DeserializeOwned + Validate>(
    record_key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<Envelope<T>, DecodeError> {
    let value = value.ok_or(DecodeError::Empty)?;
    // The common case in one pass over the bytes: the envelope with its payload left raw, then
    // the payload straight into `T`. A record that does not fit is decoded again below, slowly,
    // only to say exactly why it is refused.
    if let Ok(envelope) =
        serde_json::from_slice::<Envelope<Box<serde_json::value::RawValue>>>(value)
    {
        if envelope.v == VERSION && record_key == Some(envelope.key.as_bytes()) {
            if let Ok(payload) = serde_json::from_str::<T>(envelope.payload.get()) {
                payload.validate().map_err(DecodeError::InvalidPayload)?;
                return Ok(envelope.with_payload(payload));
            }
        }
    }
    let json: serde_json::Value =
        serde_json::from_slice(value).map_err(|e| DecodeError::MalformedJson(e.to_string()))?;
    let version = json.get("v").and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(VERSION)) {
        return Err(DecodeError::UnsupportedVersion { found: version });
    }
    let mut envelope: Envelope<serde_json::Value> =
        serde_json::from_value(json).map_err(|e| DecodeError::InvalidEnvelope(e.to_string()))?;
    let record_key = record_key.map(|k| String::from_utf8_lossy(k).into_owned());
    if record_key.as_deref() != Some(envelope.key.as_str()) {
        return Err(DecodeError::KeyMismatch {
            record: record_key,
            envelope: envelope.key,
        });
    }
    let payload: T = serde_json::from_value(std::mem::take(&mut envelope.payload))
        .map_err(|e| DecodeError::InvalidPayload(e.to_string()))?;
    payload.validate().map_err(DecodeError::InvalidPayload)?;
    Ok(envelope.with_payload(payload))
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Thing {
        n: u32,
    }
    impl Validate for Thing {
        fn validate(&self) -> Result<(), String> {
            if self.n == 0 {
                Err("n must be positive".into())
            } else {
                Ok(())
            }
        }
    }

    fn encoded(n: u32) -> Vec<u8> {
        let env = Envelope::new(
            Kind::Created,
            "k",
            RegionName::parse("test-us-east-1").unwrap(),
            1,
            Thing { n },
        );
        serde_json::to_vec(&env).unwrap()
    }

    #[test]
    fn a_derived_event_has_the_same_identity_every_time() {
        let region = RegionName::parse("test-us-east-1").unwrap();
        let a = Envelope::derived(Kind::Completed, "k", region.clone(), 7, "cause", ());
        let b = Envelope::derived(Kind::Completed, "k", region.clone(), 7, "cause", ());
        let c = Envelope::derived(Kind::Completed, "k", region, 8, "cause", ());
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
    }

    #[test]
    fn round_trip() {
        let env: Envelope<Thing> = decode(Some(b"k"), Some(&encoded(3))).unwrap();
        assert_eq!(env.payload, Thing { n: 3 });
        assert_eq!(env.kind, Kind::Created);
    }

    #[test]
    fn each_bad_record_says_why() {
        assert_eq!(
            decode::<Thing>(Some(b"k"), None).unwrap_err(),
            DecodeError::Empty
        );
        assert!(matches!(
            decode::<Thing>(Some(b"k"), Some(b"{not json")),
            Err(DecodeError::MalformedJson(_))
        ));
        let v2 = String::from_utf8(encoded(3))
            .unwrap()
            .replace("\"v\":1", "\"v\":2");
        assert_eq!(
            decode::<Thing>(Some(b"k"), Some(v2.as_bytes()))
                .unwrap_err()
                .to_string(),
            "unsupported envelope version Some(2) (this mot reads version 1)"
        );
        assert!(matches!(
            decode::<Thing>(Some(b"other"), Some(&encoded(3))),
            Err(DecodeError::KeyMismatch { .. })
        ));
        assert_eq!(
            decode::<Thing>(Some(b"k"), Some(&encoded(0)))
                .unwrap_err()
                .to_string(),
            "invalid payload: n must be positive"
        );
    }
}
